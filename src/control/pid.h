/* pid.h — one discrete PID controller, the math only (pid.c).
 *
 * The textbook computer implementation (Åström & Hägglund, "Advanced PID
 * Control", 2006, §3.7 and §13; Åström & Murray, "Feedback Systems", §10.5)
 * of the standard (ISA) form with set-point weighting
 *
 *     u = K·( b·r − y  +  1/Ti ∫(r − y) dt  −  Td·dy_f/dt )
 *
 * where y_f is the measurement through a first-order filter of time constant
 * Tf = Td/N.  Per sample of length h:
 *
 *     P = K·s·(b·r − y)                                  proportional
 *     D = Tf/(Tf+h)·D − K·Td/(Tf+h)·s·(y − y_prev)        derivative on the measurement
 *     v = P + I + D                                      (unlimited output)
 *     u = clamp(v, max(lo, u_prev − R·h), min(hi, u_prev + R·h))   limits and rate limit
 *     I = I + K·h/Ti·s·(r − y)  [+ h/Tt·(u − v) with back-calculation]
 *
 * s = +1 for reverse action (the output rises when the measurement falls
 * below the set point: heating), −1 for direct action (cooling).
 * b = 1 is "proportional on error", b = 0 "proportional on measurement":
 * then a set-point step moves the output only through the integral.  The
 * derivative never sees the set point, so a set-point step gives no
 * derivative kick.
 *
 * Anti-windup (Åström & Hägglund §3.5):
 *   clamp  (conditional integration) the integral does not move in the
 *          direction that drives a limited output further into its limit;
 *   back_calculation  the integral is pulled back by (u − v)·h/Tt, Tt the
 *          tracking time (default √(Ti·Td), Ti/2 without derivative);
 *   none   for comparison only.
 * The limits include the rate limit, so a rate-limited output winds up no
 * more than a saturated one.
 *
 * Manual and every fallback use fb_pid_track: the output is given and the
 * integral is set so that v equals it (I = u − P − D), which makes the next
 * automatic step start exactly there — bumpless transfer both ways.
 * fb_pid_retune keeps the output continuous across a change of K or b.
 *
 * Nothing here allocates, reads a clock or logs: the unit tests check it
 * against hand-computed sequences (tests/unit/test_pid.c).
 */
#ifndef FB_PID_H
#define FB_PID_H
#include <stdbool.h>

enum fb_pid_aw { FB_AW_CLAMP = 0, FB_AW_BACKCALC = 1, FB_AW_NONE = 2 };
enum fb_pid_action { FB_PID_REVERSE = 0, FB_PID_DIRECT = 1 };

struct fb_pid_cfg {
    double kp;     /* K: output units per measurement unit */
    double ti;     /* integral time, s; 0 = no integral action (I stays a manual reset) */
    double td;     /* derivative time, s; 0 = none */
    double n;      /* derivative filter: Tf = Td/N (typically 5..20) */
    double b;      /* set-point weight of P: 1 on error, 0 on measurement */
    double tt;     /* back-calculation tracking time, s; 0 = the default above */
    int aw;        /* enum fb_pid_aw */
    int action;    /* enum fb_pid_action */
    double lo, hi; /* output limits */
    double rate;   /* max |du/dt| in output units per second; 0 = none */
};

struct fb_pid {
    double i;      /* integral term, output units */
    double d;      /* filtered derivative term, output units */
    double y_prev; /* measurement of the previous sample */
    double u;      /* output of the previous sample (after the limits) */
    bool started;  /* y_prev and u are valid */
    /* what the last step did, for status and telemetry */
    double p, v; /* proportional term, unlimited output */
    int sat;     /* +1 held at the high limit (or rising rate), −1 low, 0 free */
};

/* The state before the first sample: the output starts at u0 (clamped). */
void fb_pid_reset(const struct fb_pid_cfg *c, struct fb_pid *s, double u0);
/* One automatic sample of length h seconds with set point r and measurement
 * y; returns the output. */
double fb_pid_step(const struct fb_pid_cfg *c, struct fb_pid *s, double r, double y, double h);
/* One sample whose output is imposed (manual, fallback, safe value): u is
 * clamped to the limits (not rate-limited) and returned; the state follows so
 * that an automatic step from here starts without a bump. */
double fb_pid_track(const struct fb_pid_cfg *c, struct fb_pid *s, double r, double y, double u, double h);
/* The tuning changes from `old` to `nw` between samples: the integral absorbs
 * the jump of the proportional term, so the output does not move.  r and y
 * are the current set point and measurement. */
void fb_pid_retune(const struct fb_pid_cfg *old, const struct fb_pid_cfg *nw, struct fb_pid *s, double r, double y);
#endif
