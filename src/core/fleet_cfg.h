/* fleet_cfg.h — the `fleet:` section: how the gateway behaves as a member of
 * a fleet (fleet_cfg.c reads it; fleet.c acts on it; docs/fleet.md).  Kept
 * apart from fleet.c so that the config loader does not depend on the
 * runtime the fleet component drives. */
#ifndef FB_FLEET_CFG_H
#define FB_FLEET_CFG_H
#include <stdbool.h>
#include <stdint.h>

#include "core/cfg.h"
#include "fleet/ota_cfg.h"
#include "fleet/prov_cfg.h"

struct fb_fleet_cfg {
    char *state_dir; /* remote configurations, maintenance and decommission flags; NULL = none */
    /* remote configuration (`remote_config:`; off when absent) */
    bool remote_config;
    int64_t health_check_ns;   /* how long a new version is watched before it is kept (60 s) */
    uint64_t max_config_bytes; /* largest configuration accepted (1 MiB) */
    int64_t fetch_timeout_ns;  /* a download by URL (30 s) */
    char *fetch_ca;            /* CA file for https:// downloads, NULL = the system's */
    /* health thresholds (`health:`) */
    double disk_min_free_pct;   /* the buffer's filesystem below this: degraded (5) */
    double memory_min_free_pct; /* available memory below this: degraded (5) */
    double temperature_max_c;   /* a thermal zone at or above this: degraded (0 = off) */
    int64_t error_after_ns;     /* no sink connected, or every device offline, this long: error (5 min) */
    char *procfs, *sysfs;       /* where the host's /proc and /sys are (a container); NULL = there */
    struct fb_ota_cfg *ota;     /* `ota:` (src/fleet/ota_cfg.h), NULL = no software updates */
    struct fb_prov_cfg *prov;   /* `provisioning:` (src/fleet/prov_cfg.h), NULL = none */
};

/* The gateway's own topics (docs/fleet.md): an MQTT sink that carries them
 * subscribes to the gateway's topic with each of these as the {kind}
 * (site/_/_/<id>/command) and hands what arrives to the command router as a
 * gateway command (struct fb_cmd.topic = the suffix); the answer goes to the
 * MQTT 5 response topic or to <that topic>/response.  A fleet extension
 * (device shadow, OTA) adds its suffix here and its handler to fleet.c. */
extern const char *const fb_fleet_topics[];

/* Defaults when the section is absent. */
void fb_fleet_cfg_defaults(struct fb_fleet_cfg *f);
/* Read `fleet:` (node n, may be NULL: the defaults) into a new object
 * (gw->fleet); errors go to the reader.  NULL only when out of memory. */
struct fb_fleet_cfg *fb_fleet_cfg_load(struct fb_cfg *r, const struct fb_cfg_node *n);
void fb_fleet_cfg_free(struct fb_fleet_cfg *f);
/* Equal settings (a reload keeps the fleet component's state). */
bool fb_fleet_cfg_equal(const struct fb_fleet_cfg *a, const struct fb_fleet_cfg *b);
/* The section's key tables, for the docs check: fills out, returns how many. */
size_t fb_fleet_cfg_key_tables(struct fb_config_keys *out, size_t max);
#endif
