/* ads.h — the Beckhoff TwinCAT ADS south driver, scheme "ads" (registered
 * in src/core/driver.c), browse, and the route registration the CLI uses. */
#ifndef FB_ADS_H
#define FB_ADS_H
#include <stdio.h>

#include <stdint.h>
#include "core/model.h"

extern const struct fb_driver fb_driver_ads;

/* `fieldbridge browse ads://…`: connect, upload the symbol table, put each
 * symbol into list (read-only: writing is a decision per tag) and, when out
 * is not NULL, print one line per symbol (name, PLC type, fieldbridge type,
 * size).  0 or a negative status with err set (FB_EINVAL: bad URL). */
int fb_ads_browse(const char *url, struct fb_browse *list, FILE *out, struct fb_err *err);

/* Register a static route on a TwinCAT PLC (UDP 48899) so that it accepts
 * ADS connections from net_id at address (NULL: the address the PLC sees us
 * at).  user/password are the PLC's operating-system login.  Returns 0 with
 * the PLC's AmsNetId in plc_netid; FB_EACCES refused (wrong login),
 * FB_ETIMEDOUT no answer, FB_EINVAL bad arguments, FB_EIO socket errors;
 * err says which.  The CLI is src/cli/ads_route.c. */
struct fb_ads_route {
    const char *host;   /* the PLC */
    int port;           /* 0: 48899 */
    const char *net_id; /* ours, e.g. 192.168.0.5.1.1 */
    const char *user, *password;
    const char *address;   /* ours as the PLC should use it, NULL: automatic */
    const char *name;      /* the route's name, NULL: the address */
    int64_t timeout_ns;    /* 0: 3 s */
    char address_used[64]; /* out: the address registered */
};
int fb_ads_add_route(struct fb_ads_route *r, char *plc_netid, size_t len, struct fb_err *err);
#endif
