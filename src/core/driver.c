/* driver.c — the static table of south drivers, looked up by URL scheme.
 * Adding a protocol means one line here and one struct fb_driver in its
 * folder; everything that lists drivers or schemes (config errors, help)
 * reads this table. */
#include "core/driver.h"

#include <string.h>

#include "south/ads/ads.h"
#include "south/modbus/modbus.h"
#include "south/opcua/opcua.h"
#include "south/revpi/revpi.h"
#include "south/s7/s7.h"
#include "south/sim/sim.h"

static const struct fb_driver *const drivers[] = {
    &fb_driver_modbus, &fb_driver_sim, &fb_driver_revpi, &fb_driver_s7, &fb_driver_opcua, &fb_driver_ads,
};
#define NDRIVERS (sizeof drivers / sizeof drivers[0])

const struct fb_driver *const *fb_drivers(size_t *n)
{
    *n = NDRIVERS;
    return drivers;
}

const struct fb_driver *fb_driver_for_scheme(const char *scheme)
{
    if (!scheme) return NULL;
    for (size_t i = 0; i < NDRIVERS; i++)
        for (const char *const *s = drivers[i]->schemes; s && *s; s++)
            if (strcmp(*s, scheme) == 0) return drivers[i];
    return NULL;
}

size_t fb_driver_schemes(const char **names, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < NDRIVERS; i++)
        for (const char *const *s = drivers[i]->schemes; s && *s && n < max; s++) names[n++] = *s;
    return n;
}
