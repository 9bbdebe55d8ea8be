/* plugin.h — what drivers, sinks and the command router may ask of the
 * running gateway (plugin.c).  Everything here is safe to call from any
 * thread, and also when the gateway is not running (the one-shot CLI). */
#ifndef FB_PLUGIN_H
#define FB_PLUGIN_H
#include "core/model.h"

/* Delivery report from a sink (any thread) for a batch given to send(). */
void fb_sink_done(struct fb_sink_inst *s, uint64_t batch_id, enum fb_delivery d);
/* Wake the sink's thread (e.g. its connection state changed), so ready()
 * and tick() run again soon. */
void fb_sink_wake(struct fb_sink_inst *s);
/* Whether batches wait for the sink's thread: in its queue or its store
 * (records not yet acknowledged count too).  A sink whose window opens again
 * wakes the thread only then: with nothing waiting it would wake for nothing
 * (the connection threads hand their batches straight over). */
bool fb_sink_waiting(struct fb_sink_inst *s);

/* A driver reports the state of one device while its connection stays up
 * (a Modbus unit behind a gateway that stops or resumes answering): the
 * status message and NE107 follow it.  Connection thread only; without a
 * running gateway (the one-shot CLI) it only sets d->state. */
void fb_device_set_state(struct fb_device *d, int state, const char *reason);
/* From a failing open(): the quality the connection's tags get (0 =
 * BadCommunicationError) and the least delay before the next attempt (0 =
 * the usual back-off) — a refused login is BadUserAccessDenied and retried
 * after minutes, so a wrong password does not lock the account. */
void fb_conn_failed(struct fb_conn *c, uint32_t quality, int64_t retry_ns);

/* For a driver's adopt (model.h, a config reload keeps a connection): swap
 * what the driver keeps per device (FB_ADOPT_DEV: drv_dev), per tag
 * (FB_ADOPT_ADDR: addr) and per poll group (FB_ADOPT_PLAN: plan) between
 * c's devices and old's (same order, same tags), so the running transport's
 * state stays with the running model and each model frees what it holds.
 * Tag ids kept inside those objects are the driver's to move on: device k's
 * tags moved by fb_adopt_tag_shift(c, old, k). */
enum { FB_ADOPT_DEV = 1, FB_ADOPT_ADDR = 2, FB_ADOPT_PLAN = 4 };
void fb_adopt_swap(struct fb_conn *c, struct fb_conn *old, unsigned what);
static inline int64_t fb_adopt_tag_shift(const struct fb_conn *c, const struct fb_conn *old, uint32_t k)
{
    return (int64_t)c->devs[k]->first_tag - (int64_t)old->devs[k]->first_tag;
}

/* ---------------------------------------------------------------- sources */
/* Hand a named batch (batch.h) a source made to every sink, numbered like
 * polled data (b->seq is set).  The sinks take references; the caller keeps
 * its own and drops it when done (fb_batch_unref), so batches can come from
 * the source's own pool. */
void fb_source_submit(struct fb_gateway *gw, struct fb_batch *b);
/* Wait until every sink with a `buffer:` has its batches up to seq in its
 * on-disk store (flushed per the sync policy) — what a source waits for
 * before it acknowledges what it received.  True at once when no sink has a
 * buffer; false after timeout_ns or when the gateway stops. */
bool fb_source_wait_stored(struct fb_gateway *gw, uint64_t seq, int64_t timeout_ns);

/* Whether the gateway is running (between start and the end of wait). */
bool fb_runtime_running(const struct fb_gateway *gw);
/* Whether a stop was requested (also true when not running). */
bool fb_runtime_stopping(const struct fb_gateway *gw);
/* A sink accepted a remote reboot: the process stops as on SIGTERM, and
 * main re-executes itself once everything is closed. */
void fb_runtime_request_reboot(struct fb_gateway *gw);
bool fb_runtime_reboot_requested(const struct fb_gateway *gw);

/* The model can change while the gateway runs (a config reload: the
 * gateway struct stays, its devices, tags and sinks are replaced).  A thread
 * of a plug-in that looks at the model outside the calls the runtime makes
 * to it (a status reader, an HTTP handler) holds this read lock meanwhile,
 * and keeps no pointer into the model after releasing it.  Without a running
 * gateway they do nothing.  fb_model_generation counts applied reloads. */
void fb_model_rdlock(struct fb_gateway *gw);
void fb_model_unlock(struct fb_gateway *gw);
uint32_t fb_model_generation(const struct fb_gateway *gw);

/* The gateway status changed in a way worth telling at once (lifecycle
 * state, health, a reload's result): the generation goes up, and a sink that
 * publishes the status (MQTT) does so within a tick. */
void fb_status_changed(struct fb_gateway *gw);
uint32_t fb_status_generation(const struct fb_gateway *gw);

/* An empty block to fill for waveform tag t of gw (core/block.h: set n, fs, ts,
 * put it into the batch with fb_batch_add as an FB_T_BLOCK value, then
 * fb_block_unref it).  NULL when t is no waveform tag, the gateway does not
 * run, or every block of the tag is still being analysed — then the
 * acquisition is counted as dropped (docs/vibration.md) and the driver
 * adds no sample for t.  Connection thread. */
struct fb_block *fb_block_get(const struct fb_gateway *gw, const struct fb_tag *t);

/* Queue a write to the connection owning tag t and wait for the result
 * (timeout_ns bounds the wait).  The router's, after validation. */
int fb_conn_write(struct fb_gateway *gw, const struct fb_tag *t, const struct fb_value *raw, int64_t timeout_ns,
                  struct fb_err *err);

/* Writes that never wait for the device (a control loop's output: its
 * thread must not block on I/O).  A request is made once and reused; the
 * owning connection thread performs it between reads, without re-polling
 * the tag's group, and calls on_done(ctx, rc, err) on its own thread (err
 * NULL when rc is 0).  Free a request only when it is idle and no
 * connection thread can still hold it (after the connection threads
 * stopped, or once fb_write_req_busy said false). */
struct fb_write_req;
struct fb_write_req *fb_write_req_new(void (*on_done)(void *ctx, int rc, const struct fb_err *err), void *ctx);
void fb_write_req_free(struct fb_write_req *r);
bool fb_write_req_busy(const struct fb_write_req *r);
/* Queue r for tag t with the raw value (validated, converted: the router's
 * fb_cmd_convert_num).  FB_EAGAIN while r is still queued or being written. */
int fb_conn_write_async(struct fb_gateway *gw, struct fb_write_req *r, const struct fb_tag *t,
                        const struct fb_value *raw);

/* The router asks fn before every command write to a tag (after "exists"
 * and "writable"): 0 lets it pass, an error (with err set) refuses it with
 * that reason — a control loop owns its output, an interlock holds a tag.
 * One guard per gateway; g (owned by the caller) must stay valid until the
 * router has stopped; NULL removes it. */
struct fb_write_guard {
    int (*fn)(void *ctx, const struct fb_tag *t, struct fb_err *err);
    void *ctx;
};
void fb_write_guard_set(struct fb_gateway *gw, const struct fb_write_guard *g);
int fb_write_guard_check(struct fb_gateway *gw, const struct fb_tag *t, struct fb_err *err);

/* The latest processed value of tag `tag` (after scaling and plausibility,
 * every sample, before the deadband), read without a lock (proc/proc.h,
 * fb_latest_get).  Call only before the connection threads start — from the
 * start of a service with a quiesce hook.  NULL when not running. */
struct fb_latest;
const struct fb_latest *fb_tag_latest(struct fb_gateway *gw, uint32_t tag);
/* For a service's handover (model.h): whether tag a of model ga and tag b of
 * model gb are the same input or output — same name, their devices polled
 * identically, the same type, period and processing (so a reload moves its
 * latest value along). */
bool fb_tag_same(const struct fb_gateway *ga, const struct fb_tag *a, const struct fb_gateway *gb,
                 const struct fb_tag *b);
#endif
