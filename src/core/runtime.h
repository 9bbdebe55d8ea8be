/* runtime.h — threads of a running gateway: one per connection (polling and
 * writes), one pipeline thread, one per sink, the command router and the
 * optional metrics endpoint.  See docs/architecture.md. */
#ifndef FB_RUNTIME_H
#define FB_RUNTIME_H
#include "fb.h"

/* Start everything; returns when all threads run (sinks connect in the background). */
int fb_runtime_start(struct fb_gateway *gw, struct fb_err *err);
/* Ask to stop (signal-safe: only sets a flag and wakes the threads). */
void fb_runtime_request_stop(struct fb_gateway *gw);
/* Block until stop is requested, then shut down in order: devices, pipeline
 * drain, sinks (offline status, flush), router. */
void fb_runtime_wait(struct fb_gateway *gw);

/* A driver reports the state of one device while its connection stays up
 * (a Modbus unit behind a gateway that stops or resumes answering): the
 * status message and NE107 follow it.  Connection thread only; without a
 * running gateway (the one-shot CLI) it only sets d->state. */
void fb_device_set_state(struct fb_device *d, int state, const char *reason);

/* Queue a write to the connection owning tag t and wait for the result
 * (timeout_ns bounds the wait). */
int fb_conn_write(struct fb_gateway *gw, const struct fb_tag *t, const struct fb_value *raw,
                  int64_t timeout_ns, struct fb_err *err);
/* Prometheus text exposition of every metric (src/core/metrics.c). */
struct fb_buf;
void fb_metrics_render(struct fb_gateway *gw, struct fb_buf *out);
/* Process CPU seconds and RSS bytes (from /proc/self). */
void fb_proc_usage(double *cpu_s, uint64_t *rss_bytes);
/* Gateway status JSON (online/offline, devices with NE107, sinks, cpu, rss). */
void fb_status_json(struct fb_gateway *gw, struct fb_buf *out, bool online);
/* Metrics HTTP endpoint (src/north/http): GET /metrics, /status. */
int fb_http_start(struct fb_gateway *gw, struct fb_err *err);
void fb_http_stop(void);
#endif
