/* scale.c — linear scaling between raw device values and engineering units.
 *
 * eng = raw * k + d (k, d from `scale: {factor, offset}` or the two-point
 * form `{raw: [r0, r1], eng: [e0, e1]}`).  A scaled value is always
 * published as float64: an int16 ADC count times 0.1 is not an integer any
 * more.  Strings, bools and unscaled tags pass through untouched.  The
 * inverse is used by the command router to turn a requested engineering
 * value into the raw value to write.
 *
 * Decimal results.  raw * k with k = 0.01 is not the decimal the user means:
 * 0.01 has no exact binary form, and 777 * 0.01 rounds to the double
 * 7.7700000000000005, a different number from the double nearest to 7.77
 * (which prints as "7.77").  The JSON writer is not at fault — it prints
 * the shortest text of the double it is given.  So when the factors are
 * decimals (k, d, r0, r1, e0, e1 = whole numbers × 10^-p, p <= 15), the
 * scale is kept as whole numbers: eng = (raw * sa + sb) / sc, e.g. 0.01 →
 * (raw * 1 + 0) / 100.  For an integer raw value every step before the
 * division is exact (checked: |values| < 2^53), and the one division is
 * correctly rounded, so the result is the double nearest to the exact
 * decimal: 777 → 7.77, and {raw: [0, 27648], eng: [0, 100]} turns 13824
 * into exactly 50.  Other raw values (floats, beyond 2^53) use raw * k + d.
 * A float32 raw value is widened through its shortest decimal form first
 * (fb_float_widen), so a float32 7.77 counts as 7.77. */
#include <math.h>
#include <stdint.h>

#include "core/buf.h"
#include "proc/proc.h"

#define EXACT_MAX 9007199254740992.0 /* 2^53: every whole number below it is a double */

/* x as M × 10^-p with the smallest p (0..15) that reproduces x exactly. */
static bool decimal_of(double x, int64_t *m, int *p)
{
    double scale = 1;
    for (int i = 0; i <= 15; i++, scale *= 10) {
        double y = nearbyint(x * scale);
        if (fabs(y) < EXACT_MAX && y / scale == x) {
            *m = (int64_t)y;
            *p = i;
            return true;
        }
    }
    return false;
}

static int64_t pow10i(int p)
{
    int64_t r = 1;
    while (p-- > 0) r *= 10;
    return r;
}

static int64_t gcd64(int64_t a, int64_t b)
{
    if (a < 0) a = -a;
    if (b < 0) b = -b;
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* eng = (raw * a + b) / c with a, b, c whole: keep them when they are small
 * enough to stay exact, reduced by their common divisor. */
static void set_exact(struct fb_tag_proc *p, int64_t a, int64_t b, int64_t c)
{
    p->sa = p->sb = p->sc = 0;
    if (c == 0 || a == INT64_MIN || b == INT64_MIN || c == INT64_MIN) return; /* INT64_MIN: cannot be negated */
    if (c < 0) {
        a = -a;
        b = -b;
        c = -c;
    }
    int64_t g = gcd64(gcd64(a, b), c);
    if (g > 1) {
        a /= g;
        b /= g;
        c /= g;
    }
    const int64_t lim = (int64_t)1 << 53;
    if (a <= -lim || a >= lim || b <= -lim || b >= lim || c >= lim) return;
    p->sa = (double)a;
    p->sb = (double)b;
    p->sc = (double)c;
}

void fb_scale_set_factor(struct fb_tag_proc *p, double k, double d)
{
    p->scaled = true;
    p->k = k;
    p->d = d;
    p->sa = p->sb = p->sc = 0;
    int64_t mk, md;
    int pk, pd;
    if (!decimal_of(k, &mk, &pk) || !decimal_of(d, &md, &pd)) return;
    int pm = pk > pd ? pk : pd;
    int64_t a, b;
    if (__builtin_mul_overflow(mk, pow10i(pm - pk), &a) || __builtin_mul_overflow(md, pow10i(pm - pd), &b)) return;
    set_exact(p, a, b, pow10i(pm));
}

void fb_scale_set_points(struct fb_tag_proc *p, double r0, double r1, double e0, double e1)
{
    p->scaled = true;
    p->k = (e1 - e0) / (r1 - r0);
    p->d = e0 - r0 * p->k;
    p->sa = p->sb = p->sc = 0;
    int64_t m[4];
    int q[4], pm = 0;
    const double x[4] = {r0, r1, e0, e1};
    for (int i = 0; i < 4; i++) {
        if (!decimal_of(x[i], &m[i], &q[i])) return;
        if (q[i] > pm) pm = q[i];
    }
    int64_t w[4]; /* all four × 10^pm */
    for (int i = 0; i < 4; i++)
        if (__builtin_mul_overflow(m[i], pow10i(pm - q[i]), &w[i])) return;
    /* eng = e0 + (raw - r0)(e1 - e0)/(r1 - r0); with R, E = r, e × 10^pm:
     * eng = (raw·10^pm·(E1-E0) + E0·(R1-R0) - R0·(E1-E0)) / ((R1-R0)·10^pm) */
    int64_t de, dr, a, b1, b2, b, c;
    if (__builtin_sub_overflow(w[3], w[2], &de) || __builtin_sub_overflow(w[1], w[0], &dr) ||
        __builtin_mul_overflow(de, pow10i(pm), &a) || __builtin_mul_overflow(w[2], dr, &b1) ||
        __builtin_mul_overflow(w[0], de, &b2) || __builtin_sub_overflow(b1, b2, &b) ||
        __builtin_mul_overflow(dr, pow10i(pm), &c))
        return;
    set_exact(p, a, b, c);
}

void fb_scale_in(const struct fb_tag_proc *p, struct fb_value *v)
{
    if (!p || !p->scaled) return;
    double x;
    switch (v->type) {
        case FB_T_INT8:
        case FB_T_INT16:
        case FB_T_INT32:
        case FB_T_INT64: x = (double)v->i; break;
        case FB_T_UINT8:
        case FB_T_UINT16:
        case FB_T_UINT32:
        case FB_T_UINT64: x = (double)v->u; break;
        case FB_T_FLOAT32: x = fb_float_widen((float)v->f); break;
        case FB_T_FLOAT64: x = v->f; break;
        default: return; /* bool, string, none */
    }
    v->type = FB_T_FLOAT64;
    if (p->sc != 0 && fabs(x) < EXACT_MAX && x == nearbyint(x)) {
        /* whole numbers below 2^53 all the way: only the division rounds */
        double n = x * p->sa;
        if (fabs(n) < EXACT_MAX) {
            n += p->sb;
            if (fabs(n) < EXACT_MAX) {
                v->f = n / p->sc;
                return;
            }
        }
    }
    v->f = x * p->k + p->d;
}

double fb_scale_out(const struct fb_tag_proc *p, double eng)
{
    if (!p || !p->scaled || p->k == 0) return eng; /* k == 0 is refused by config */
    return (eng - p->d) / p->k;
}
