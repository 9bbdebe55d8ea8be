/* runtime.h — the running gateway (runtime.c): one thread per connection
 * (polling, pipeline, writes), one per sink, the command router and the
 * north services.  What plug-ins may ask of it is plugin.h.  See
 * docs/architecture.md. */
#ifndef FB_RUNTIME_H
#define FB_RUNTIME_H
#include "core/model.h"

/* Start everything; returns when all threads run (sinks connect in the background). */
int fb_runtime_start(struct fb_gateway *gw, struct fb_err *err);
/* Ask to stop (signal-safe: only sets a flag and wakes the threads). */
void fb_runtime_request_stop(struct fb_gateway *gw);
/* Block until stop is requested, then shut down in order: devices, router,
 * sinks (offline status, flush), services; frees the runtime state. */
void fb_runtime_wait(struct fb_gateway *gw);
#endif
