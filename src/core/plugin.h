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

/* Whether the gateway is running (between start and the end of wait). */
bool fb_runtime_running(const struct fb_gateway *gw);
/* Whether a stop was requested (also true when not running). */
bool fb_runtime_stopping(const struct fb_gateway *gw);
/* A sink accepted a remote reboot: the process stops as on SIGTERM, and
 * main re-executes itself once everything is closed. */
void fb_runtime_request_reboot(struct fb_gateway *gw);
bool fb_runtime_reboot_requested(const struct fb_gateway *gw);

/* An empty block to fill for waveform tag t (core/block.h: set n, fs, ts,
 * put it into the batch with fb_batch_add as an FB_T_BLOCK value, then
 * fb_block_unref it).  NULL when t is no waveform tag, the gateway does not
 * run, or every block of the tag is still being analysed — then the
 * acquisition is counted as dropped (docs/vibration.md) and the driver
 * adds no sample for t.  Connection thread. */
struct fb_block *fb_block_get(const struct fb_tag *t);

/* Queue a write to the connection owning tag t and wait for the result
 * (timeout_ns bounds the wait).  The router's, after validation. */
int fb_conn_write(struct fb_gateway *gw, const struct fb_tag *t, const struct fb_value *raw, int64_t timeout_ns,
                  struct fb_err *err);
#endif
