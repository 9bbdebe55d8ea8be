/* outbox.h — messages the fleet extensions (device shadow, OTA,
 * provisioning) send on the gateway's own topics, outside a command's
 * answer: the MQTT sink, which owns the session, drains them on its thread
 * (outbox.c; docs/fleet.md).
 *
 * Why a queue and not a call into the MQTT sink: the shadow runs on the
 * router thread and on its own sink thread, and the MQTT sink may be
 * restarting (a reload) or disconnected; the outbox holds a bounded number
 * of messages until the session can take them, oldest dropped first.
 *
 * Acknowledged messages (fb_outbox_put_acked): a message whose delivery
 * matters beyond this process (an OTA result, kept on disk until it went
 * out) is reported to its owner only once the broker acknowledged it (QoS 1
 * PUBACK), not when it was handed to the session.  Until then the outbox
 * keeps it: the session resends it after a reconnect, and if the session
 * closes first (a reload restarting the sink, the gateway stopping) it goes
 * back to the front of the queue for the next one. */
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
/* The broker acknowledged message `token` (put with fb_outbox_put_acked).
 * Called once, on the thread that read the acknowledgement, with no lock of
 * the outbox's queue held (the callback may put messages). */
typedef void (*fb_outbox_ack_fn)(void *arg, uint64_t token);
/* fb_outbox_put, and ack(arg, token) once the broker acknowledged it; the
 * token (never 0), or 0 when it could not be queued (no outbox, no memory). */
uint64_t fb_outbox_put_acked(struct fb_outbox *o, const char *suffix, const char *json, size_t len,
                             fb_outbox_ack_fn ack, void *arg);
/* No more callbacks for `arg` (its owner goes away); waits for one that runs.
 * Its messages are still sent. */
void fb_outbox_forget(struct fb_outbox *o, void *arg);
/* Hand every queued message to fn, in order, and forget it (fn returns 0),
 * or stop at the first that fn cannot take now (non-zero: kept for the next
 * drain).  token: 0, or the message waits for fb_outbox_settle(token) (fn
 * must publish it so that its acknowledgement is reported).  Returns how
 * many were taken. */
typedef int (*fb_outbox_fn)(void *arg, const char *suffix, const char *json, size_t len, uint64_t token);
size_t fb_outbox_drain(struct fb_outbox *o, fb_outbox_fn fn, void *arg);
/* What became of a message fn took with a token: FB_SENT (acknowledged: its
 * ack callback runs), FB_RETRY (not acknowledged and the session is gone:
 * back to the front of the queue), FB_DROP (the broker refused it: forgotten,
 * its owner is not told).  enum fb_delivery of core/model.h; any thread. */
void fb_outbox_settle(struct fb_outbox *o, uint64_t token, int outcome);
/* Messages dropped because the outbox was full. */
uint64_t fb_outbox_dropped(struct fb_outbox *o);
#endif
