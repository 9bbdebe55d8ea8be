/* provision.h — first boot with a claim certificate (provision.c;
 * docs/fleet.md#provisioning): the gateway makes its own key pair, sends a
 * certificate signing request over MQTT, stores the certificate it is
 * given and reconnects with it. */
#ifndef FB_PROVISION_H
#define FB_PROVISION_H
#include <stdbool.h>
#include <stddef.h>

#include "core/model.h"
#include "core/router.h"

struct fb_prov;

/* Whether the gateway starts in the provisioning state (fleet.provisioning
 * without the device's own certificate yet). */
bool fb_prov_needed(const struct fb_gateway *gw);
/* Once the runtime runs: while provisioning, the key pair is made (or the
 * kept one used) and the CSR sent every 30 s until a certificate comes.
 * NULL when there is nothing to do. */
struct fb_prov *fb_prov_start(struct fb_gateway *gw);
void fb_prov_stop(struct fb_prov *p);
void fb_prov_free(struct fb_prov *p);
/* The gateway command handler for provision/cert (router thread); the
 * result goes out on provision/result, so *resp is NULL. */
void fb_prov_command(struct fb_prov *p, struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *len);
#endif
