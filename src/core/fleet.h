/* fleet.h — the gateway as a member of a fleet (fleet.c; docs/fleet.md):
 * configuration reload (SIGHUP, `systemctl reload`, the reload command),
 * remote configuration with a health check and roll-back, identity and
 * lifecycle state, and the health sampling behind the status and /metrics.
 * Commands reach it on the gateway's own topic through the command router. */
#ifndef FB_FLEET_H
#define FB_FLEET_H
#include <stdio.h>

#include "core/model.h"
#include "core/runtime.h"

struct fb_fleet;

struct fb_fleet_opts {
    int log_level, log_format; /* the command line's, which a reload keeps; -1 = the config's */
};

/* Load what `run -c path` runs: the local config, or the remote
 * configuration kept in its fleet.state_dir when there is one (the local
 * file stays the fallback: a kept version that no longer loads is logged and
 * the local file runs).  Errors in the local file go to diag; returns 0 with
 * *gw and *f, or FB_EINVAL (exit code 2). */
int fb_fleet_load(const char *path, const struct fb_fleet_opts *o, FILE *diag, struct fb_gateway **gw,
                  struct fb_fleet **f);
/* What fb_runtime_start_ext needs from the fleet component. */
void fb_fleet_runtime_ext(struct fb_fleet *f, struct fb_runtime_ext *ext);
/* Once the runtime runs: the fleet thread (health samples, status on change,
 * the lifecycle's error state, the end of a remote configuration's check). */
int fb_fleet_start(struct fb_fleet *f, struct fb_err *err);
/* Ask for a reload of the configuration the gateway runs from (SIGHUP);
 * `source` names who asked, for the log ("signal:SIGHUP"). */
void fb_fleet_request_reload(struct fb_fleet *f, const char *source);
/* After fb_runtime_request_stop, before fb_runtime_wait: the fleet thread
 * stops (no reload starts after the stop request; fb_runtime_wait waits for
 * one in flight). */
void fb_fleet_stop(struct fb_fleet *f);
/* After fb_runtime_wait. */
void fb_fleet_free(struct fb_fleet *f);

/* The gateway command handler (router thread): reload, config, maintenance,
 * decommission, recommission, status; its JSON answer in *resp. */
void fb_fleet_command(struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *len);
#endif
