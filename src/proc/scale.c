/* scale.c — linear scaling between raw device values and engineering units.
 *
 * eng = raw * k + d (k, d from `scale: {factor, offset}` or the two-point
 * form `{raw: [r0, r1], eng: [e0, e1]}`, which config turns into k and d).
 * A scaled value is always published as float64: an int16 ADC count times
 * 0.1 is not an integer any more.  Strings, bools and unscaled tags pass
 * through untouched.  The inverse is used by the command router to turn a
 * requested engineering value into the raw value to write. */
#include "proc/proc.h"

void fb_scale_in(const struct fb_tag_proc *p, struct fb_value *v)
{
    if (!p || !p->scaled) return;
    double x;
    switch (v->type) {
    case FB_T_INT8: case FB_T_INT16: case FB_T_INT32: case FB_T_INT64: x = (double)v->i; break;
    case FB_T_UINT8: case FB_T_UINT16: case FB_T_UINT32: case FB_T_UINT64: x = (double)v->u; break;
    case FB_T_FLOAT32: case FB_T_FLOAT64: x = v->f; break;
    default: return; /* bool, string, none */
    }
    v->type = FB_T_FLOAT64;
    v->f = x * p->k + p->d;
}

double fb_scale_out(const struct fb_tag_proc *p, double eng)
{
    if (!p || !p->scaled || p->k == 0) return eng; /* k == 0 is refused by config */
    return (eng - p->d) / p->k;
}
