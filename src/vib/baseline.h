/* baseline.h — the learned baselines of the vibration channels on disk
 * (baseline.c), next to the buffer and the alarm journal, so that a restart
 * (also kill -9 or a power cut) neither forgets a learned baseline nor
 * starts learning again from a machine that may by now be faulty.
 *
 * The file is JSON, readable by a maintenance engineer who wants to know
 * what "normal" was learnt as:
 *
 *   {"format":"fieldbridge vibration baseline","version":1,"saved":"2026-…Z",
 *    "channels":[{"tag":"conveyor/accel","fingerprint":"9a3c…","learned":600,
 *                 "features":[{"name":"rms","n":600,"mean":0.47,"m2":0.012},…]}]}
 *
 * It is replaced whole: written to FILE.tmp, fsync'd, renamed over FILE,
 * and the directory fsync'd — a crash leaves the old file or the new one,
 * never half of one.  A channel is restored only when its fingerprint (the
 * analysis settings its features depend on, vib_cfg.c) is unchanged;
 * otherwise it learns again, and says so in the log. */
#ifndef FB_VIB_BASELINE_H
#define FB_VIB_BASELINE_H
#include <stdint.h>

#include "core/fb.h"
#include "vib/anomaly.h"

#define FB_BASELINE_FILE "vibration-baseline.json"

struct fb_baseline_rec {
    const char *tag; /* "device/tag" */
    uint64_t fingerprint;
    uint32_t learned; /* blocks learnt */
    uint32_t nf;
    const char *const *names;        /* nf feature names */
    const struct fb_anom_base *base; /* nf */
};

/* Replace `file` by the n records (crash-safe, see above). */
int fb_baseline_write(const char *file, const struct fb_baseline_rec *recs, uint32_t n, struct fb_err *err);
/* Read `file`: found(ctx, rec) for every channel in it.  FB_ENOENT when
 * there is no file; FB_EPROTO (with a message) when it is not a baseline
 * file — the caller learns again rather than trusting it. */
int fb_baseline_read(const char *file, void (*found)(void *ctx, const struct fb_baseline_rec *r), void *ctx,
                     struct fb_err *err);
#endif
