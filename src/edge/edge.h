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

/* A configuration reload (core/reload.c) that leaves the edge configuration
 * as it is keeps the edge running, its state moved to the new model's ids:
 *   1. fb_edge_prepare(nw, map): what the new model's ids index, allocated
 *      before anything changes (NULL: out of memory);
 *   2. fb_edge_park, once no connection publishes: the thread empties its
 *      queue and waits at the top of its loop (false: not by the deadline;
 *      fb_edge_unpark undoes it);
 *   3. fb_edge_adopt, with gw already holding the new model, old the old
 *      one, under the model lock: values, alarm table, Lua states and
 *      virtual devices' state move over (x stays the caller's to free);
 *   4. fb_edge_unpark. */
struct fb_model_map;
struct fb_edge_next;
struct fb_edge_next *fb_edge_prepare(struct fb_gateway *nw, const struct fb_model_map *map);
void fb_edge_next_free(struct fb_edge_next *x);
bool fb_edge_park(struct fb_gateway *gw, int64_t deadline);
void fb_edge_unpark(struct fb_gateway *gw);
void fb_edge_adopt(struct fb_gateway *gw, struct fb_gateway *old, struct fb_edge_next *x,
                   const struct fb_model_map *map);
#endif
