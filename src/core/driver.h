/* driver.h — the table of south drivers (driver.c), looked up by URL scheme. */
#ifndef FB_DRIVER_H
#define FB_DRIVER_H
#include <stddef.h>

#include "core/model.h"

/* The driver serving a URL scheme ("modbus-tcp"), NULL if none does. */
const struct fb_driver *fb_driver_for_scheme(const char *scheme);
/* Every scheme of every driver, in table order: fills names[0..max), returns the count. */
size_t fb_driver_schemes(const char **names, size_t max);
/* The drivers, in table order (for help texts). */
const struct fb_driver *const *fb_drivers(size_t *n);
#endif
