/* metrics.h — the gateway's counters as Prometheus text and as the status
 * JSON (metrics.c; docs/metrics.md). */
#ifndef FB_METRICS_H
#define FB_METRICS_H
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/model.h"

/* Prometheus text exposition of every metric. */
void fb_metrics_render(struct fb_gateway *gw, struct fb_buf *out);
/* Process CPU seconds and RSS bytes (from /proc/self). */
void fb_proc_usage(double *cpu_s, uint64_t *rss_bytes);
/* The NAMUR NE107 status of device i ("OK", "Failure", "Function check",
 * "Out of specification", "Maintenance required"), as in the status JSON. */
const char *fb_device_ne107(struct fb_gateway *gw, uint32_t i);
/* Gateway status JSON (online/offline, lifecycle state, health, identity,
 * config, devices with NE107, sinks and queues, the box: docs/fleet.md). */
void fb_status_json(struct fb_gateway *gw, struct fb_buf *out, bool online);
/* The health level the status reports (its reasons are in the status). */
enum { FB_HEALTH_OK = 0, FB_HEALTH_DEGRADED = 1, FB_HEALTH_ERROR = 2 };
int fb_status_health(struct fb_gateway *gw);
#endif
