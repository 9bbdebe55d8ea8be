/* bearing.c — bearing defect frequencies from geometry (bearing.h). */
#include "vib/bearing.h"

#include <math.h>
#include <stddef.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

const char *const fb_bearing_names[FB_BEARING__COUNT] = {"bpfo", "bpfi", "bsf", "ftf"};

bool fb_bearing_valid(const struct fb_bearing *b, const char **why)
{
    const char *w = NULL;
    if (b->balls < 3 || b->balls > 200)
        w = "balls must be a whole number from 3 to 200";
    else if (!(b->ball_d > 0))
        w = "ball_diameter must be greater than 0";
    else if (!(b->pitch_d > b->ball_d))
        w = "pitch_diameter must be greater than ball_diameter (it is the diameter of the circle through the balls' "
            "centres)";
    else if (!(b->contact_angle >= 0 && b->contact_angle < 90))
        w = "contact_angle must be at least 0 and less than 90 degrees";
    if (why) *why = w;
    return w == NULL;
}

void fb_bearing_orders(const struct fb_bearing *b, double out[FB_BEARING__COUNT])
{
    double r = b->ball_d / b->pitch_d * cos(b->contact_angle * M_PI / 180.0);
    out[FB_FTF] = 0.5 * (1.0 - r);
    out[FB_BPFO] = 0.5 * b->balls * (1.0 - r);
    out[FB_BPFI] = 0.5 * b->balls * (1.0 + r);
    out[FB_BSF] = b->pitch_d / (2.0 * b->ball_d) * (1.0 - r * r);
}
