/* reload.h — apply a new configuration to the running gateway, restarting
 * only what changed (reload.c; docs/architecture.md, "Start-up, reload and
 * shutdown").  The fleet component (fleet.c) loads and validates the new
 * config and calls this on the router thread. */
#ifndef FB_RELOAD_H
#define FB_RELOAD_H
#include "core/buf.h"
#include "core/model.h"

/* Make the running gateway gw run model nw (loaded and validated with
 * fb_config_load, not started).  Devices, connections, sinks and services
 * that did not change keep running (no reconnect, no gap in polling);
 * removed ones stop, new and changed ones start; buffers, sequence numbers
 * and the pipeline state of unchanged tags are kept.  On return nw holds
 * what the gateway no longer uses (on success the old model, on failure the
 * new one): the caller frees it with fb_gateway_free.  `report` (may be
 * NULL) receives a JSON object of what was done:
 *   {"devices":{"added":[…],"removed":[…],"changed":[…],"kept":N},
 *    "sinks":{"added":[…],"removed":[…],"restarted":[…],"kept":[…]},"services":{"restarted":[…]}}
 * Returns 0, or an error when nothing could be changed (the gateway runs on
 * as before: e.g. a connection that did not pause in time).  Problems after
 * the switch (a new sink that cannot open) are logged and reported in
 * "errors" in the report; the new model runs then. */
int fb_reload_apply(struct fb_gateway *gw, struct fb_gateway *nw, struct fb_buf *report, struct fb_err *err);

/* Whether device o (old model) and n (new) are polled identically: URL and
 * options, driver, timing, groups and every tag's address and type (tag
 * processing, units, area and line may differ).  For the plan and tests. */
bool fb_reload_dev_same(const struct fb_gateway *og, const struct fb_device *o, const struct fb_gateway *ng,
                        const struct fb_device *n);
#endif
