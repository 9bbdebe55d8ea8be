/* vib.h — vibration condition monitoring while the gateway runs (vib.c):
 * the analysis threads, the blocks' pools, feature publication, ISO and
 * anomaly alarms, the persisted baselines.  Started by the runtime only when
 * the config has waveform tags.  See docs/vibration.md and the "Vibration
 * analysis" part of docs/architecture.md. */
#ifndef FB_VIB_H
#define FB_VIB_H
#include "core/model.h"

/* After the alarm table and the edge thread, before the connection threads:
 * allocates every block pool (tag->wave->pool), restores the baselines
 * from dir (NULL: memory only) and starts the analysis threads. */
int fb_vib_start(struct fb_gateway *gw, const char *dir, struct fb_err *err);
/* A connection thread's raw batch, before the pipeline: its waveform
 * samples (a reference to each block) go to their channel's analysis
 * thread, and the speed tags' values are noted.  Never blocks: a full
 * queue drops the block (counted). */
void fb_vib_take(struct fb_gateway *gw, const struct fb_batch *in);
/* After the connection threads stopped: the analysis threads take what is
 * queued, the baselines are saved, the threads end. */
void fb_vib_stop(struct fb_gateway *gw);
/* After every raw batch was released (the blocks are back): the pools and
 * the rest.  Stops first if still running. */
void fb_vib_free(struct fb_gateway *gw);
#endif
