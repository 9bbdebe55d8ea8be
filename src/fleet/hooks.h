/* hooks.h — what the fleet extensions (src/fleet/: device shadow) use of
 * the fleet component, defined in core/fleet.c.  A header of its own so that
 * the MQTT sink and the extensions need not include core/fleet.h (which
 * depends on the sinks: an include cycle). */
#ifndef FB_FLEET_HOOKS_H
#define FB_FLEET_HOOKS_H
#include <stddef.h>

#include "core/fb.h"
#include "core/model.h"

struct fb_outbox;
/* The messages the extensions publish on the gateway's topics (drained by
 * the MQTT sink); NULL when the fleet component does not run. */
struct fb_outbox *fb_fleet_outbox(struct fb_gateway *gw);
/* A file written whole or not at all: temporary file, fsync, rename, fsync
 * of the directory.  0 or an error. */
int fb_fleet_write_atomic(const char *path, const void *p, size_t len, struct fb_err *err);
#endif
