/* vib.h — vibration condition monitoring while the gateway runs (vib.c):
 * the analysis threads, the blocks' pools, feature publication, ISO and
 * anomaly alarms, the persisted baselines.  Started by the runtime only when
 * the config has waveform tags.  See docs/vibration.md and the "Vibration
 * analysis" part of docs/architecture.md. */
#ifndef FB_VIB_H
#define FB_VIB_H
#include "core/model.h"

struct fb_vib_chan;
struct fb_vib_rt;

/* After the alarm table and the edge thread, before the connection threads:
 * allocates every block pool (fb_tag_wave(gw, tag)->pool), restores the baselines
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

/* Reload (core/reload.c).  The analysis always restarts on the new model;
 * what a channel learnt carries over by its waveform tag's path.
 * fb_vib_detach: with every connection that feeds it stopped or parked and
 * before the edge thread parks — the threads take what is queued (their
 * features and alarms still go out), the baselines are saved, and the
 * analysis is taken off the runtime (NULL: there was none).
 * fb_vib_restart: fb_vib_start on gw's (new) model, taking over from prev
 * (may be NULL) for every channel of the same path: the blocks/dropped/CPU
 * counters, the last speed, and — when fb_vib_baseline_carries — the whole
 * anomaly state (baseline, alarm runs, trend buckets); other channels start
 * as at start-up (baseline from the file, or learning).  On an error the
 * caller calls fb_vib_free.
 * fb_vib_release: frees a detached analysis and its block pools, once every
 * block is back (no connection of the old model runs; the model it was
 * started on is still allocated). */
struct fb_vib_rt *fb_vib_detach(struct fb_gateway *gw);
/* A reload undone after fb_vib_stop: the threads start again, on the state they had. */
int fb_vib_resume(struct fb_gateway *gw, struct fb_err *err);
int fb_vib_restart(struct fb_gateway *gw, const char *dir, struct fb_vib_rt *prev, struct fb_err *err);
void fb_vib_release(struct fb_vib_rt *v);
/* Whether two channels (of two models) are configured identically. */
bool fb_vib_chan_same(const struct fb_vib_chan *a, const struct fb_vib_chan *b);
/* Whether channel a's learnt baseline (model og) is valid for channel b (model ng). */
bool fb_vib_baseline_carries(const struct fb_gateway *og, const struct fb_vib_chan *a, const struct fb_gateway *ng,
                             const struct fb_vib_chan *b);
#endif
