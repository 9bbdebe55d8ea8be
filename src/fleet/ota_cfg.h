/* ota_cfg.h — the `fleet.ota:` section (ota_cfg.c; docs/fleet.md#ota):
 * where software updates are installed, the key they must be signed with,
 * and how a new version is checked.  Apart from ota.c so that the config
 * loader does not depend on the runtime. */
#ifndef FB_OTA_CFG_H
#define FB_OTA_CFG_H
#include <stdbool.h>
#include <stdint.h>

#include "core/cfg.h"

struct fb_ota_cfg {
    char *public_key;         /* PEM file with the Ed25519 public key packages are signed with */
    char *install_dir;        /* versions/<v>/fieldbridge, current -> versions/<v> */
    uint64_t max_bytes;       /* the largest package (64 MiB) */
    int64_t fetch_timeout_ns; /* one download attempt (10 min) */
    char *ca;                 /* CA file for https://, NULL = the system's */
    int64_t health_check_ns;  /* how long a new version runs before it is kept (60 s) */
};

/* Read the node (a mapping) into a new object; errors to r.  NULL only when
 * out of memory. */
struct fb_ota_cfg *fb_ota_cfg_load(struct fb_cfg *r, const struct fb_cfg_node *n);
void fb_ota_cfg_free(struct fb_ota_cfg *c);
bool fb_ota_cfg_equal(const struct fb_ota_cfg *a, const struct fb_ota_cfg *b);
extern const char *const fb_ota_cfg_keys[];
#endif
