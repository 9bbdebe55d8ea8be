/* driver.c — the static table of south drivers, looked up by URL scheme.
 * Adding a protocol means one line here and one struct fb_driver in its file. */
#include <string.h>

#include "fb.h"
#include "south/ads/ads.h"
#include "south/opcua/opcua.h"
#include "south/revpi/revpi.h"
#include "south/s7/s7.h"

static const struct fb_driver *const drivers[] = {
    &fb_driver_modbus, &fb_driver_sim, &fb_driver_revpi, &fb_driver_s7, &fb_driver_opcua, &fb_driver_ads,
};

const struct fb_driver *fb_driver_for_scheme(const char *scheme)
{
    if (!scheme) return NULL;
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        for (const char *const *s = drivers[i]->schemes; s && *s; s++)
            if (strcmp(*s, scheme) == 0) return drivers[i];
    return NULL;
}
