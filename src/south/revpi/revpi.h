/* revpi.h — the Revolution Pi piControl driver ("revpi://") and its browse
 * helper.  The declaration of fb_driver_revpi moves to core/fb.h once the
 * driver is registered in src/core/driver.c. */
#ifndef FB_REVPI_H
#define FB_REVPI_H
#include <stdio.h>

#include "core/model.h"

extern const struct fb_driver fb_driver_revpi;

/* `fieldbridge browse revpi:///dev/piControl0?config=/etc/revpi/config.rsc`:
 * every PiCtory variable into list (outputs read-write, inputs and memory
 * read-only) and, when out is not NULL, the devices and their variables
 * (name, inp/out/mem, raw address, default type, current value when the
 * image is readable) on out.
 * Returns 0, or a negative fb_status with err set (bad URL: FB_EINVAL;
 * unreadable configuration: FB_ENOENT / FB_EINVAL). */
int fb_revpi_browse(const char *url_text, struct fb_browse *list, FILE *out, struct fb_err *err);
#endif
