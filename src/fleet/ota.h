/* ota.h — signed software updates over the air (ota.c; docs/fleet.md#ota):
 * notify → download (resumable) → verify (SHA-256, Ed25519 signature) →
 * stage → switch (atomic symlink swap) → restart (exec) → health check →
 * commit, or roll back.  Driven by <gateway>/ota/notify; progress and the
 * result on <gateway>/ota/progress and …/ota/complete. */
#ifndef FB_OTA_H
#define FB_OTA_H
#include <stddef.h>

#include "core/model.h"
#include "core/router.h"

struct fb_ota;

/* Once the runtime runs (the fleet component's start): an update that was
 * switched to before this process started is health-checked (or rolled
 * back), a result from before the restart is published.  NULL when
 * fleet.ota is off. */
struct fb_ota *fb_ota_start(struct fb_gateway *gw);
/* Before the router stops: a download or a health check in progress ends. */
void fb_ota_stop(struct fb_ota *o);
void fb_ota_free(struct fb_ota *o);
/* The gateway command handler for ota/notify (router thread); answers go
 * out on ota/complete (rejections) and ota/progress, so *resp is NULL. */
void fb_ota_command(struct fb_ota *o, struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *len);
/* What main executes when the gateway restarts after a switch or a roll-back
 * (install_dir/current/fieldbridge); NULL: itself (/proc/self/exe). */
const char *fb_ota_exec_path(void);
#endif
