/* runtime.h — the running gateway (runtime.c): one thread per connection
 * (polling, pipeline, writes), one per sink, the command router and the
 * optional HTTP endpoint; and what drivers and sinks may ask of it.  See
 * docs/architecture.md. */
#ifndef FB_RUNTIME_H
#define FB_RUNTIME_H
#include "core/model.h"

/* Start everything; returns when all threads run (sinks connect in the background). */
int fb_runtime_start(struct fb_gateway *gw, struct fb_err *err);
/* Ask to stop (signal-safe: only sets a flag and wakes the threads). */
void fb_runtime_request_stop(struct fb_gateway *gw);
/* Block until stop is requested, then shut down in order: devices, router,
 * sinks (offline status, flush), HTTP endpoint; frees the runtime state. */
void fb_runtime_wait(struct fb_gateway *gw);
/* Whether the gateway is running (between start and the end of wait). */
bool fb_runtime_running(const struct fb_gateway *gw);
/* Whether a stop was requested (also true when not running). */
bool fb_runtime_stopping(const struct fb_gateway *gw);
/* A sink accepted a remote reboot: the process stops as on SIGTERM and
 * main re-executes itself afterwards. */
void fb_runtime_request_reboot(struct fb_gateway *gw);
bool fb_runtime_reboot_requested(const struct fb_gateway *gw);

/* Queue a write to the connection owning tag t and wait for the result
 * (timeout_ns bounds the wait). */
int fb_conn_write(struct fb_gateway *gw, const struct fb_tag *t, const struct fb_value *raw, int64_t timeout_ns,
                  struct fb_err *err);

/* Delivery report from a sink (any thread) for a batch given to send(). */
void fb_sink_done(struct fb_sink_inst *s, uint64_t batch_id, enum fb_delivery d);
/* Wake the sink's thread (e.g. its connection state changed), so ready()
 * and tick() run again soon. */
void fb_sink_wake(struct fb_sink_inst *s);
#endif
