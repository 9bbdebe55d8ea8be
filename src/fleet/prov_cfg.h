/* prov_cfg.h — the `fleet.provisioning:` section (prov_cfg.c;
 * docs/fleet.md#provisioning): the claim certificate a new box connects
 * with, and where the identity it is given is kept.  Apart from
 * provision.c so that the config loader and the MQTT sink need not depend
 * on the runtime. */
#ifndef FB_PROV_CFG_H
#define FB_PROV_CFG_H
#include <stdbool.h>

#include "core/cfg.h"

struct fb_prov_cfg {
    char *claim_cert, *claim_key; /* the fleet-wide claim identity (must exist) */
    char *cert, *key;             /* the device's own: made on the box, kept here */
};

struct fb_prov_cfg *fb_prov_cfg_load(struct fb_cfg *r, const struct fb_cfg_node *n);
void fb_prov_cfg_free(struct fb_prov_cfg *c);
bool fb_prov_cfg_equal(const struct fb_prov_cfg *a, const struct fb_prov_cfg *b);
/* Whether the device has its own certificate and key (else: provisioning). */
bool fb_prov_have_identity(const struct fb_prov_cfg *c);
extern const char *const fb_prov_cfg_keys[];
#endif
