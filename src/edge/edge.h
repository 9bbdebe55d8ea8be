/* edge.h — the edge thread (edge.c): computed tags, alarms and scripts of
 * a running gateway.  Started by the runtime only when the config has any
 * of them; otherwise nothing of it exists and publishing costs one pointer
 * test per batch.  See docs/architecture.md. */
#ifndef FB_EDGE_H
#define FB_EDGE_H
#include "core/model.h"

/* Start the alarm table (persisted in dir; NULL: memory only) and the edge
 * thread, when configured.  Call after the sinks are open and before the
 * connection threads start (the thread's queue must exist before the first
 * batch is published). */
int fb_edge_start(struct fb_gateway *gw, const char *dir, struct fb_err *err);
/* After the connection threads stopped: the thread takes what is queued,
 * publishes its virtual devices offline and ends. */
void fb_edge_stop(struct fb_gateway *gw);
/* After the router stopped (commands reach the alarm table until then). */
void fb_edge_free(struct fb_gateway *gw);
#endif
