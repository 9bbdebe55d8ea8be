/* ota_cfg.c — reads `fleet.ota:` (ota_cfg.h):
 *
 *   fleet:
 *     state_dir: /var/lib/fieldbridge/fleet
 *     ota: {public_key: ota-signing.pub, install_dir: /opt/fieldbridge, health_check: 60s}
 *
 * The public key must be an Ed25519 key (PEM): checked here, so that a
 * gateway never runs with an update path that can only refuse. */
#include "fleet/ota_cfg.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const fb_ota_cfg_keys[] = {"public_key", "install_dir",  "max_size", "fetch_timeout",
                                       "ca",         "health_check", NULL};

void fb_ota_cfg_free(struct fb_ota_cfg *c)
{
    if (!c) return;
    free(c->public_key);
    free(c->install_dir);
    free(c->ca);
    free(c);
}

struct fb_ota_cfg *fb_ota_cfg_load(struct fb_cfg *r, const struct fb_cfg_node *n)
{
    struct fb_ota_cfg *c = calloc(1, sizeof *c);
    if (!c) {
        fb_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    c->max_bytes = 64u << 20;
    c->fetch_timeout_ns = 600000000000LL;
    c->health_check_ns = 60000000000LL;
    struct fb_cfg_map m = {0};
    if (!fb_cfg_map_load(r, n, "fleet.ota", &m)) return c;
    fb_cfg_map_check(r, &m, fb_ota_cfg_keys, "fleet.ota", false);
    struct fb_cfg_node *x;
    if ((x = fb_cfg_get(&m, "public_key"))) {
        c->public_key = fb_cfg_file_ref(r, x, "fleet.ota.public_key", FB_OPT_CERT, NULL);
        FILE *f = c->public_key ? fopen(c->public_key, "r") : NULL;
        if (f) {
            EVP_PKEY *k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
            fclose(f);
            if (!k || EVP_PKEY_id(k) != EVP_PKEY_ED25519)
                fb_cfg_error(r, x, "fleet.ota.public_key: %s is not an Ed25519 public key in PEM", c->public_key);
            EVP_PKEY_free(k);
        }
    } else {
        fb_cfg_error(r, n, "fleet.ota.public_key: missing (the Ed25519 public key packages are signed with)");
    }
    if ((x = fb_cfg_get(&m, "install_dir"))) {
        char *v = fb_cfg_str(r, NULL, x, "fleet.ota.install_dir");
        if (v) c->install_dir = fb_cfg_path(r, v);
        free(v);
    } else {
        fb_cfg_error(r, n, "fleet.ota.install_dir: missing (where versions are installed, e.g. /opt/fieldbridge)");
    }
    if ((x = fb_cfg_get(&m, "max_size"))) fb_cfg_size(r, x, "fleet.ota.max_size", 1024, &c->max_bytes);
    if ((x = fb_cfg_get(&m, "fetch_timeout")))
        fb_cfg_dur(r, NULL, x, "fleet.ota.fetch_timeout", true, &c->fetch_timeout_ns);
    if ((x = fb_cfg_get(&m, "ca"))) c->ca = fb_cfg_file_ref(r, x, "fleet.ota.ca", FB_OPT_CERT, NULL);
    if ((x = fb_cfg_get(&m, "health_check")))
        fb_cfg_dur(r, NULL, x, "fleet.ota.health_check", false, &c->health_check_ns);
    fb_cfg_map_free(&m);
    return c;
}

static bool eq(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

bool fb_ota_cfg_equal(const struct fb_ota_cfg *a, const struct fb_ota_cfg *b)
{
    if (!a || !b) return a == b;
    return eq(a->public_key, b->public_key) && eq(a->install_dir, b->install_dir) && a->max_bytes == b->max_bytes &&
           a->fetch_timeout_ns == b->fetch_timeout_ns && eq(a->ca, b->ca) && a->health_check_ns == b->health_check_ns;
}
