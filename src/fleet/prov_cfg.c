/* prov_cfg.c — reads `fleet.provisioning:` (prov_cfg.h):
 *
 *   fleet:
 *     provisioning: {claim_cert: claim.pem, claim_key: claim.key,
 *                    cert: /var/lib/fieldbridge/device.pem, key: /var/lib/fieldbridge/device.key}
 */
#include "fleet/prov_cfg.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const fb_prov_cfg_keys[] = {"claim_cert", "claim_key", "cert", "key", NULL};

void fb_prov_cfg_free(struct fb_prov_cfg *c)
{
    if (!c) return;
    free(c->claim_cert);
    free(c->claim_key);
    free(c->cert);
    free(c->key);
    free(c);
}

static char *path(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_cfg_node *n, const char *key)
{
    struct fb_cfg_node *x = fb_cfg_get(m, key);
    char what[64];
    snprintf(what, sizeof what, "fleet.provisioning.%s", key);
    if (!x) {
        fb_cfg_error(r, n, "%s: missing", what);
        return NULL;
    }
    char *v = fb_cfg_str(r, NULL, x, what), *p = v ? fb_cfg_path(r, v) : NULL;
    free(v);
    return p;
}

struct fb_prov_cfg *fb_prov_cfg_load(struct fb_cfg *r, const struct fb_cfg_node *n)
{
    struct fb_prov_cfg *c = calloc(1, sizeof *c);
    if (!c) {
        fb_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    struct fb_cfg_map m = {0};
    if (!fb_cfg_map_load(r, n, "fleet.provisioning", &m)) return c;
    fb_cfg_map_check(r, &m, fb_prov_cfg_keys, "fleet.provisioning", false);
    struct fb_cfg_node *x;
    if ((x = fb_cfg_get(&m, "claim_cert")))
        c->claim_cert = fb_cfg_file_ref(r, x, "fleet.provisioning.claim_cert", FB_OPT_CERT, NULL);
    else
        fb_cfg_error(r, n, "fleet.provisioning.claim_cert: missing (the fleet's claim certificate)");
    if ((x = fb_cfg_get(&m, "claim_key")))
        c->claim_key = fb_cfg_file_ref(r, x, "fleet.provisioning.claim_key", FB_OPT_CERT, NULL);
    else
        fb_cfg_error(r, n, "fleet.provisioning.claim_key: missing (the claim certificate's key)");
    c->cert = path(r, &m, n, "cert");
    c->key = path(r, &m, n, "key");
    fb_cfg_map_free(&m);
    return c;
}

static bool eq(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

bool fb_prov_cfg_equal(const struct fb_prov_cfg *a, const struct fb_prov_cfg *b)
{
    if (!a || !b) return a == b;
    return eq(a->claim_cert, b->claim_cert) && eq(a->claim_key, b->claim_key) && eq(a->cert, b->cert) &&
           eq(a->key, b->key);
}

bool fb_prov_have_identity(const struct fb_prov_cfg *c)
{
    return c && c->cert && c->key && access(c->cert, R_OK) == 0 && access(c->key, R_OK) == 0;
}
