/* ads.h — the Beckhoff TwinCAT ADS south driver, scheme "ads" (registered
 * weakly in src/core/driver.c), plus its two command-line helpers. */
#ifndef FB_ADS_H
#define FB_ADS_H
#include <stdio.h>

#include "core/model.h"

extern const struct fb_driver fb_driver_ads;

/* `fieldbridge browse ads://…`: connect, upload the symbol table and print
 * one line per symbol (name, PLC type, fieldbridge type, size).  0 or a
 * negative status with err set (FB_EINVAL: bad URL). */
int fb_ads_browse(const char *url, FILE *out, struct fb_err *err);

/* `fieldbridge ads add-route PLC_HOST --net-id ID --user U ...`: argv holds
 * the arguments after "add-route".  Returns the process exit code (0 added,
 * 1 refused / no answer, 2 usage). */
int fb_ads_add_route(int argc, char **argv);
#endif
