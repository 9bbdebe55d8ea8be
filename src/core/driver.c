/* driver.c — the static table of south drivers, looked up by URL scheme.
 * Adding a protocol means one line here and one struct fb_driver in its file.
 * Drivers still being written are declared weak: the table skips them until
 * their file is part of the build, so the list never has to lag the code. */
#include <string.h>

#include "fb.h"
#include "south/revpi/revpi.h"
#include "south/ads/ads.h"
#include "south/s7/s7.h"

extern const struct fb_driver fb_driver_opcua __attribute__((weak));

static const struct fb_driver *const drivers[] = {
    &fb_driver_modbus, &fb_driver_sim, &fb_driver_revpi, &fb_driver_s7, &fb_driver_opcua, &fb_driver_ads,
};

const struct fb_driver *fb_driver_for_scheme(const char *scheme)
{
    if (!scheme) return NULL;
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++) {
        if (!drivers[i]) continue; /* weak and not linked in */
        for (const char *const *s = drivers[i]->schemes; s && *s; s++)
            if (strcmp(*s, scheme) == 0) return drivers[i];
    }
    return NULL;
}
