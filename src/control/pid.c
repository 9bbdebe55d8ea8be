/* pid.c — the discrete PID controller of pid.h: the equations there, in the
 * order there (output from the previous integral, then the integral update:
 * a forward difference, as in the textbook code). */
#include "control/pid.h"

#include <math.h>

static double clampd(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

static double sign(const struct fb_pid_cfg *c) { return c->action == FB_PID_DIRECT ? -1.0 : 1.0; }

void fb_pid_reset(const struct fb_pid_cfg *c, struct fb_pid *s, double u0)
{
    s->i = clampd(u0, c->lo, c->hi);
    s->d = 0;
    s->y_prev = 0;
    s->u = s->i;
    s->p = 0;
    s->v = s->u;
    s->sat = 0;
    s->started = false;
}

/* The derivative term for this sample (filtered, on the measurement). */
static double deriv(const struct fb_pid_cfg *c, const struct fb_pid *s, double y, double h)
{
    if (c->td <= 0 || !s->started) return 0;
    double tf = c->n > 0 ? c->td / c->n : 0;
    return tf / (tf + h) * s->d - c->kp * c->td / (tf + h) * sign(c) * (y - s->y_prev);
}

double fb_pid_step(const struct fb_pid_cfg *c, struct fb_pid *s, double r, double y, double h)
{
    double sg = sign(c);
    if (!s->started) { /* the first sample: the integral holds the start value, no derivative history */
        s->i -= c->kp * sg * (c->b * r - y);
        s->y_prev = y;
        s->started = true;
    }
    double p = c->kp * sg * (c->b * r - y);
    double d = deriv(c, s, y, h);
    double v = p + s->i + d;
    double lo = c->lo, hi = c->hi;
    if (c->rate > 0) {
        if (s->u - c->rate * h > lo) lo = s->u - c->rate * h;
        if (s->u + c->rate * h < hi) hi = s->u + c->rate * h;
    }
    double u = clampd(v, lo, hi);
    double inc = c->ti > 0 ? c->kp * h / c->ti * sg * (r - y) : 0;
    switch (c->aw) {
        case FB_AW_BACKCALC: {
            double tt = c->tt > 0 ? c->tt : c->td > 0 ? sqrt(c->ti * c->td) : c->ti / 2;
            double br = tt > 0 ? h / tt : 1;
            if (br > 1) br = 1; /* h > Tt would overshoot the correction */
            s->i += inc + (c->ti > 0 ? br * (u - v) : 0);
            break;
        }
        case FB_AW_CLAMP:
            if (!((v > hi && inc > 0) || (v < lo && inc < 0))) s->i += inc;
            break;
        default: s->i += inc; break;
    }
    s->p = p;
    s->d = d;
    s->v = v;
    s->sat = v > hi ? 1 : v < lo ? -1 : 0;
    s->y_prev = y;
    s->u = u;
    return u;
}

double fb_pid_track(const struct fb_pid_cfg *c, struct fb_pid *s, double r, double y, double u, double h)
{
    u = clampd(u, c->lo, c->hi);
    double p = c->kp * sign(c) * (c->b * r - y);
    double d = deriv(c, s, y, h);
    s->p = p;
    s->d = d;
    s->i = u - p - d;
    s->v = u;
    s->sat = 0;
    s->y_prev = y;
    s->u = u;
    s->started = true;
    return u;
}

void fb_pid_retune(const struct fb_pid_cfg *old, const struct fb_pid_cfg *nw, struct fb_pid *s, double r, double y)
{
    if (!s->started) return;
    s->i += old->kp * sign(old) * (old->b * r - y) - nw->kp * sign(nw) * (nw->b * r - y);
    /* the derivative term is scaled by K·Td: keep its value, so nothing jumps */
}
