/* sdwatch.h — the gateway's side of a systemd Type=notify service
 * (sdwatch.c): READY=1 once everything runs, STATUS= lines, WATCHDOG=1 only
 * while every watched thread is alive (core/live.h), STOPPING=1.
 * Without $NOTIFY_SOCKET (not started by systemd) it does nothing. */
#ifndef FB_SDWATCH_H
#define FB_SDWATCH_H
#include "core/model.h"

struct fb_sdwatch;

/* After fb_runtime_start: READY=1, the first STATUS= and, when the unit has
 * WatchdogSec=, the thread that sends WATCHDOG=1 every WATCHDOG_USEC/2.
 * NULL when systemd does not listen (nothing to stop then). */
struct fb_sdwatch *fb_sdwatch_start(struct fb_gateway *gw);
/* STOPPING=1 and the end of the thread; before fb_runtime_request_stop (the
 * threads it watches end then).  NULL is fine. */
void fb_sdwatch_stop(struct fb_sdwatch *w);
/* The STATUS= text: "2/3 devices connected, buffer 120 records" (tested). */
void fb_sdwatch_status(struct fb_gateway *gw, char *out, size_t len);
#endif
