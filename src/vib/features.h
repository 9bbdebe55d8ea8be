/* features.h — one block of a vibration channel to the values of its
 * feature tags (features.c): the part of the analysis between the block and
 * the baseline, without threads, publication or alarms, so that tests and
 * the benchmark run exactly what the gateway runs. */
#ifndef FB_VIB_FEATURES_H
#define FB_VIB_FEATURES_H
#include <stdbool.h>
#include <stdint.h>

#include "vib/dsp.h"
#include "vib/vib_cfg.h"

/* The features of channel c (c->out) from the block x of c->n samples,
 * scaled y = x·k + d, with dsp made for (c->n, c->env_m), at running speed
 * fr Hz from the speed tag (NaN: unknown, quality fq; a fixed c->speed_hz
 * is used instead when there is one).  vals[i]/quals[i] per c->out[i]: NaN and
 * a Bad quality when a value cannot be had (no speed: the speed's quality;
 * a flat block's crest factor: BadSensorFailure).  FB_VO_ISO gets the zone
 * index (0 = A … 3 = D); FB_VO_ANOM/TREND are left NaN (the baseline's).
 * Returns the velocity RMS in mm/s (NaN when the channel has none). */
double fb_vib_features(const struct fb_vib_chan *c, struct fb_dsp *dsp, const float *x, double k, double d, double fr,
                       uint32_t fq, double *vals, uint32_t *quals);

/* The ISO zone alarms' states after one block's velocity v: C from the B/C
 * limit, D from the C/D limit; an active one clears below its limit minus
 * deadband × limit.  Returns whether either changed. */
bool fb_vib_iso_alarms(const double limits[3], double deadband, double v, bool *c_on, bool *d_on);
#endif
