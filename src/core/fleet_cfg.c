/* fleet_cfg.c — reads the `fleet:` section (fleet_cfg.h, docs/fleet.md):
 *
 *   fleet:
 *     state_dir: /var/lib/fieldbridge/fleet
 *     remote_config: {health_check: 60s, max_size: 1MiB, fetch_timeout: 30s, ca: ca.pem}
 *     health: {disk_min_free: 5, memory_min_free: 5, temperature_max: 85, error_after: 5m}
 *
 * Remote configuration needs a state directory: a new version is staged and
 * kept there, and a restart runs the kept one.
 */
#include "core/fleet_cfg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const fb_fleet_topics[] = {"command", "shadow/update", "shadow/get", "ota/notify", "provision/cert", NULL};

static const char *const k_fleet[] = {"state_dir", "remote_config", "health", "ota", "provisioning", NULL};
static const char *const k_remote[] = {"health_check", "max_size", "fetch_timeout", "ca", NULL};
static const char *const k_health[] = {
    "disk_min_free", "memory_min_free", "temperature_max", "error_after", "procfs", "sysfs", NULL};

void fb_fleet_cfg_defaults(struct fb_fleet_cfg *f)
{
    memset(f, 0, sizeof *f);
    f->health_check_ns = 60000000000LL;
    f->max_config_bytes = 1u << 20;
    f->fetch_timeout_ns = 30000000000LL;
    f->disk_min_free_pct = 5;
    f->memory_min_free_pct = 5;
    f->error_after_ns = 300000000000LL;
}

void fb_fleet_cfg_free(struct fb_fleet_cfg *f)
{
    if (!f) return;
    free(f->state_dir);
    free(f->fetch_ca);
    free(f->procfs);
    free(f->sysfs);
    fb_ota_cfg_free(f->ota);
    fb_prov_cfg_free(f->prov);
    free(f);
}

static void pct(struct fb_cfg *r, const struct fb_cfg_map *m, const char *key, double *out)
{
    struct fb_cfg_node *n = fb_cfg_get(m, key);
    char what[64];
    snprintf(what, sizeof what, "fleet.health.%s", key);
    double v;
    if (n && fb_cfg_num(r, NULL, n, what, &v)) {
        if (v < 0 || v > 100)
            fb_cfg_error(r, n, "%s: a percentage from 0 to 100, got %g", what, v);
        else
            *out = v;
    }
}

struct fb_fleet_cfg *fb_fleet_cfg_load(struct fb_cfg *r, const struct fb_cfg_node *n)
{
    struct fb_fleet_cfg *f = calloc(1, sizeof *f);
    if (!f) {
        fb_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    fb_fleet_cfg_defaults(f);
    struct fb_cfg_map m = {0};
    if (!n || !fb_cfg_map_load(r, n, "fleet", &m)) return f;
    fb_cfg_map_check(r, &m, k_fleet, "fleet", false);
    struct fb_cfg_node *x;
    if ((x = fb_cfg_get(&m, "state_dir"))) {
        char *v = fb_cfg_str(r, NULL, x, "fleet.state_dir");
        if (v) f->state_dir = fb_cfg_path(r, v);
        free(v);
    }
    struct fb_cfg_map t = {0};
    struct fb_cfg_node *rn = fb_cfg_get(&m, "remote_config");
    if (rn && fb_cfg_map_load(r, rn, "fleet.remote_config", &t)) {
        f->remote_config = true;
        fb_cfg_map_check(r, &t, k_remote, "fleet.remote_config", false);
        if ((x = fb_cfg_get(&t, "health_check")))
            fb_cfg_dur(r, NULL, x, "fleet.remote_config.health_check", false, &f->health_check_ns);
        if ((x = fb_cfg_get(&t, "max_size")))
            fb_cfg_size(r, x, "fleet.remote_config.max_size", 1024, &f->max_config_bytes);
        if ((x = fb_cfg_get(&t, "fetch_timeout")))
            fb_cfg_dur(r, NULL, x, "fleet.remote_config.fetch_timeout", true, &f->fetch_timeout_ns);
        if ((x = fb_cfg_get(&t, "ca")))
            f->fetch_ca = fb_cfg_file_ref(r, x, "fleet.remote_config.ca", FB_OPT_CERT, NULL);
        if (!f->state_dir)
            fb_cfg_error(r, rn,
                         "fleet.remote_config needs fleet.state_dir (a writable directory where new versions are "
                         "staged and kept)");
        fb_cfg_map_free(&t);
    }
    struct fb_cfg_node *hn = fb_cfg_get(&m, "health");
    if (hn && fb_cfg_map_load(r, hn, "fleet.health", &t)) {
        fb_cfg_map_check(r, &t, k_health, "fleet.health", false);
        pct(r, &t, "disk_min_free", &f->disk_min_free_pct);
        pct(r, &t, "memory_min_free", &f->memory_min_free_pct);
        if ((x = fb_cfg_get(&t, "temperature_max")))
            fb_cfg_num(r, NULL, x, "fleet.health.temperature_max", &f->temperature_max_c);
        if ((x = fb_cfg_get(&t, "error_after")))
            fb_cfg_dur(r, NULL, x, "fleet.health.error_after", true, &f->error_after_ns);
        if ((x = fb_cfg_get(&t, "procfs"))) f->procfs = fb_cfg_file_ref(r, x, "fleet.health.procfs", FB_OPT_DIR, NULL);
        if ((x = fb_cfg_get(&t, "sysfs"))) f->sysfs = fb_cfg_file_ref(r, x, "fleet.health.sysfs", FB_OPT_DIR, NULL);
        fb_cfg_map_free(&t);
    }
    if ((x = fb_cfg_get(&m, "ota"))) { /* software updates (src/fleet/ota_cfg.c) */
        f->ota = fb_ota_cfg_load(r, x);
        if (!f->state_dir) fb_cfg_error(r, x, "fleet.ota needs fleet.state_dir (where an update's progress is kept)");
    }
    if ((x = fb_cfg_get(&m, "provisioning"))) f->prov = fb_prov_cfg_load(r, x); /* src/fleet/prov_cfg.c */
    fb_cfg_map_free(&m);
    return f;
}

static bool str_eq(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

bool fb_fleet_cfg_equal(const struct fb_fleet_cfg *a, const struct fb_fleet_cfg *b)
{
    if (!a || !b) return a == b;
    return str_eq(a->state_dir, b->state_dir) && a->remote_config == b->remote_config &&
           a->health_check_ns == b->health_check_ns && a->max_config_bytes == b->max_config_bytes &&
           a->fetch_timeout_ns == b->fetch_timeout_ns && str_eq(a->fetch_ca, b->fetch_ca) &&
           a->disk_min_free_pct == b->disk_min_free_pct && a->memory_min_free_pct == b->memory_min_free_pct &&
           a->temperature_max_c == b->temperature_max_c && a->error_after_ns == b->error_after_ns &&
           str_eq(a->procfs, b->procfs) && str_eq(a->sysfs, b->sysfs) && fb_ota_cfg_equal(a->ota, b->ota) &&
           fb_prov_cfg_equal(a->prov, b->prov);
}

size_t fb_fleet_cfg_key_tables(struct fb_config_keys *out, size_t max)
{
    const struct fb_config_keys t[] = {{"fleet", k_fleet},
                                       {"fleet.remote_config", k_remote},
                                       {"fleet.health", k_health},
                                       {"fleet.ota", fb_ota_cfg_keys},
                                       {"fleet.provisioning", fb_prov_cfg_keys}};
    size_t n = 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0] && n < max; i++) out[n++] = t[i];
    return n;
}
