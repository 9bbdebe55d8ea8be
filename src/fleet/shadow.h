/* shadow.h — the device shadow / digital twin (shadow.c; docs/fleet.md#device-shadow).
 *
 * A `shadow:` section makes the gateway keep a shadow document of chosen
 * tags and its own settings: reported (what the gateway sees), desired
 * (what the cloud wants), delta (desired minus reported), versioned with
 * optimistic locking and client tokens, over <gateway topic>/shadow/… .  A
 * desired value for a writable tag becomes a validated write through the
 * command router.  It is a live sink (it sees every processed value) plus a
 * gateway command handler (the router thread). */
#ifndef FB_SHADOW_H
#define FB_SHADOW_H
#include <stddef.h>

#include "core/cfg.h"
#include "core/model.h"
#include "core/router.h"

extern const struct fb_sink fb_sink_shadow;

/* Config loader hook, once the devices are read: every tag the shadow names
 * exists (file:line:col errors to r). */
void fb_shadow_cfg_check(struct fb_cfg *r, struct fb_gateway *gw);
/* The gateway command handler for the topics shadow/update, shadow/get (and
 * the internal shadow/sync): router thread.  Answers go out through the
 * fleet outbox on …/accepted and …/rejected, so *resp is NULL. */
void fb_shadow_command(struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *len);
#endif
