/* bearing.h — the defect frequencies of a rolling-element bearing from its
 * geometry (bearing.c).  Shared by the analysis (where to look in the
 * envelope spectrum) and the simulator's motor model (where to put the
 * impacts), so both use the same formulas:
 *
 *   r    = (d / D) · cos φ              d ball, D pitch diameter, φ contact angle
 *   FTF  = f/2 · (1 − r)                cage (fundamental train)
 *   BPFO = n/2 · f · (1 − r)            ball pass, outer race
 *   BPFI = n/2 · f · (1 + r)            ball pass, inner race
 *   BSF  = D/(2d) · f · (1 − r²)        ball spin
 *
 * with f the shaft's rotation frequency (Hz) and n the number of balls. */
#ifndef FB_VIB_BEARING_H
#define FB_VIB_BEARING_H
#include <stdbool.h>

struct fb_bearing {
    int balls;            /* n */
    double ball_d;        /* d (any length unit, the same as pitch_d) */
    double pitch_d;       /* D */
    double contact_angle; /* φ, degrees */
};

enum { FB_BPFO = 0, FB_BPFI, FB_BSF, FB_FTF, FB_BEARING__COUNT };
extern const char *const fb_bearing_names[FB_BEARING__COUNT]; /* "bpfo", "bpfi", "bsf", "ftf" */

/* Whether the geometry is physical; *why names what is not. */
bool fb_bearing_valid(const struct fb_bearing *b, const char **why);
/* The four frequencies, as multiples of the shaft frequency (orders). */
void fb_bearing_orders(const struct fb_bearing *b, double out[FB_BEARING__COUNT]);
#endif
