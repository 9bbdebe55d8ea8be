/* outbox.h — messages the fleet extensions (device shadow) send on the
 * gateway's own topics, outside a command's answer: the MQTT sink, which owns
 * the session, drains them on its thread (outbox.c; docs/fleet.md).
 *
 * Why a queue and not a call into the MQTT sink: the shadow runs on the
 * router thread and on its own sink thread, and the MQTT sink may be
 * restarting (a reload) or disconnected; the outbox holds a bounded number
 * of messages until the session can take them, oldest dropped first. */
#ifndef FB_OUTBOX_H
#define FB_OUTBOX_H
#include <stddef.h>
#include <stdint.h>

struct fb_outbox;

struct fb_outbox *fb_outbox_new(size_t max_msgs);
void fb_outbox_free(struct fb_outbox *o);
/* Queue a copy of json (len bytes) for the gateway topic with `suffix` as
 * its kind ("shadow/update/accepted").  When full, the oldest message is
 * dropped (counted).  Any thread; a NULL outbox does nothing. */
void fb_outbox_put(struct fb_outbox *o, const char *suffix, const char *json, size_t len);
/* Hand every queued message to fn, in order, and forget it (fn returns 0),
 * or stop at the first that fn cannot take now (non-zero: kept for the next
 * drain).  Returns how many were taken. */
typedef int (*fb_outbox_fn)(void *arg, const char *suffix, const char *json, size_t len);
size_t fb_outbox_drain(struct fb_outbox *o, fb_outbox_fn fn, void *arg);
/* Messages dropped because the outbox was full. */
uint64_t fb_outbox_dropped(struct fb_outbox *o);
#endif
