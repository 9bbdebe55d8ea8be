/* hwatch.h — the health check of a new configuration or a new software
 * version (core/fleet.c's remote configuration, fleet/ota.c), watched over
 * its whole window instead of looked at once at its end (hwatch.c).
 *
 * The rule (docs/fleet.md): every device online and every sink connected
 * before the change is watched.  One the change restarted has until it is
 * healthy again (at most the window) to come back; from then on it is
 * sampled every second and fails the check as soon as it is found unhealthy
 * in FB_HWATCH_DOWN_SAMPLES consecutive samples (down for longer than about
 * a second: a grace for a single missed poll) or in FB_HWATCH_FLAP_SAMPLES
 * samples in all (it flaps).  At the end, every one must be healthy.  A
 * device or sink the new configuration removed does not count. */
#ifndef FB_HWATCH_H
#define FB_HWATCH_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

#define FB_HWATCH_DOWN_SAMPLES 2
#define FB_HWATCH_FLAP_SAMPLES 3

struct fb_hwatch;

struct fb_hwatch *fb_hwatch_new(void);
void fb_hwatch_free(struct fb_hwatch *w);
/* Watch a device (sink false) or a sink by name.  False when out of memory. */
bool fb_hwatch_add(struct fb_hwatch *w, bool sink, const char *name);
/* One sample of the running model (the caller holds the model's read
 * lock), at most one a second (the caller's tick: the counts are in samples).  True, with the reason in why ("device press-02 was offline during
 * the check (2 samples in a row, a second apart)"), when the check has
 * failed; it stays failed. */
bool fb_hwatch_sample(struct fb_hwatch *w, struct fb_gateway *gw, char *why, size_t n);
/* The window's end (model read lock held): a sample, and every watched one
 * must be healthy now.  True with the reason when the check failed. */
bool fb_hwatch_final(struct fb_hwatch *w, struct fb_gateway *gw, char *why, size_t n);
#endif
