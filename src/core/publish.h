/* publish.h — numbering and fan-out of processed batches to every sink
 * (publish.c).  The runtime's own: drivers reach it through plugin.h. */
#ifndef FB_PUBLISH_H
#define FB_PUBLISH_H
#include "core/model.h"

/* Number a processed batch and queue it to every sink (which take their
 * own references); the caller keeps its reference. */
void fb_publish(struct fb_gateway *gw, struct fb_batch *b);
/* Wake the edge thread (edge/edge.c), if there is one, to look at its
 * timers: another thread set an alarm delay or a shelve. */
void fb_publish_wake_edge(struct fb_gateway *gw);
/* A device's connection state changed: a DEVSTATE batch to every sink, if
 * the state is new.  reason may be NULL. */
void fb_publish_state(struct fb_gateway *gw, struct fb_device *d, int state, const char *reason);
#endif
