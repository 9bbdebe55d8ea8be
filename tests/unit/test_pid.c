/* test_pid.c — the PID math (src/control/pid.c) against sequences computed
 * by hand from the textbook equations in pid.h: PI, derivative on the
 * measurement with its filter (no kick on a set-point step), proportional on
 * the measurement, clamping and back-calculation anti-windup against none,
 * the rate limit, direct action, bumpless start, tracking and retuning. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "control/pid.h"

#define EPS 1e-12
#define near(a, b) assert_true(fabs((a) - (b)) < EPS)

static struct fb_pid_cfg cfg(double kp, double ti, double td)
{
    return (struct fb_pid_cfg){.kp = kp,
                               .ti = ti,
                               .td = td,
                               .n = 10,
                               .b = 1,
                               .aw = FB_AW_NONE,
                               .action = FB_PID_REVERSE,
                               .lo = -1000,
                               .hi = 1000};
}

/* PI, forward-difference integral: u_k = P_k + I_k, then I += K·h/Ti·e. */
static void test_pi_sequence(void **st)
{
    (void)st;
    struct fb_pid_cfg c = cfg(2, 4, 0);
    struct fb_pid s;
    fb_pid_reset(&c, &s, 0);
    near(fb_pid_step(&c, &s, 0, 0, 0.5), 0);
    near(fb_pid_step(&c, &s, 1, 0, 0.5), 2);      /* P = 2·1, I = 0 */
    near(s.i, 0.25);                              /* 2·0.5/4·1 */
    near(fb_pid_step(&c, &s, 1, 0.5, 0.5), 1.25); /* P = 1, I = 0.25 */
    near(fb_pid_step(&c, &s, 1, 1, 0.5), 0.375);  /* P = 0, I = 0.375 */
    near(fb_pid_step(&c, &s, 1, 1, 0.5), 0.375);  /* no error: nothing moves */
}

/* Derivative on the measurement, Tf = Td/N = 0.1, h = 0.1: ad = 0.5, bd =
 * K·Td/(Tf+h) = 5.  The set-point step gives P only: no derivative kick. */
static void test_derivative_no_kick(void **st)
{
    (void)st;
    struct fb_pid_cfg c = cfg(1, 0, 1);
    struct fb_pid s;
    fb_pid_reset(&c, &s, 0);
    near(fb_pid_step(&c, &s, 0, 0, 0.1), 0);
    near(fb_pid_step(&c, &s, 1, 0, 0.1), 1); /* the step: P = 1, D = 0 */
    near(s.d, 0);
    near(fb_pid_step(&c, &s, 1, 0.2, 0.1), 0.8 - 1.0); /* D = 0.5·0 − 5·0.2 = −1 */
    near(s.d, -1);
    near(fb_pid_step(&c, &s, 1, 0.3, 0.1), 0.7 - 1.0); /* D = 0.5·(−1) − 5·0.1 = −1 */
    near(s.d, -1);
    near(fb_pid_step(&c, &s, 1, 0.3, 0.1), 0.7 - 0.5); /* D decays: 0.5·(−1) */
    /* a set-point step of 10 at a constant measurement: the output moves by K·Δr only */
    near(fb_pid_step(&c, &s, 1, 0.3, 0.1), 0.7 - 0.25);    /* D = −0.25 */
    near(fb_pid_step(&c, &s, 11, 0.3, 0.1), 10.7 - 0.125); /* ΔP = 10; D only keeps decaying */
}

/* b = 0 (proportional on measurement): the set-point step moves the output
 * through the integral only. */
static void test_p_on_measurement(void **st)
{
    (void)st;
    struct fb_pid_cfg c = cfg(2, 1, 0);
    c.b = 0;
    struct fb_pid s;
    fb_pid_reset(&c, &s, 0);
    near(fb_pid_step(&c, &s, 0, 0, 0.5), 0);
    near(fb_pid_step(&c, &s, 1, 0, 0.5), 0); /* no jump; I += 2·0.5/1·1 = 1 */
    near(fb_pid_step(&c, &s, 1, 0, 0.5), 1);
    near(fb_pid_step(&c, &s, 1, 0.5, 0.5), -1 + 2); /* P = −2·0.5, I = 2 */
    near(s.i, 2.5);
}

/* Output limits [0, 1] held for a long time, then the error reverses. */
static void test_anti_windup(void **st)
{
    (void)st;
    struct fb_pid_cfg c = cfg(1, 1, 0);
    c.lo = 0;
    c.hi = 1;
    struct fb_pid s;
    /* clamping: the integral does not grow into the limit */
    c.aw = FB_AW_CLAMP;
    fb_pid_reset(&c, &s, 0);
    near(fb_pid_step(&c, &s, 0, 0, 1), 0);
    for (int i = 0; i < 20; i++) {
        near(fb_pid_step(&c, &s, 5, 0, 1), 1);
        assert_int_equal(s.sat, 1);
    }
    near(s.i, 0);
    near(fb_pid_step(&c, &s, 0.5, 0, 1), 0.5); /* recovers at once */
    near(s.i, 0.5);
    assert_int_equal(s.sat, 0);
    /* back-calculation, Tt = 2 s: I += e + (u − v)·h/Tt */
    c.aw = FB_AW_BACKCALC;
    c.tt = 2;
    fb_pid_reset(&c, &s, 0);
    near(fb_pid_step(&c, &s, 0, 0, 1), 0);
    near(fb_pid_step(&c, &s, 5, 0, 1), 1);
    near(s.i, 3); /* 0 + 5 + 0.5·(1 − 5) */
    near(fb_pid_step(&c, &s, 5, 0, 1), 1);
    near(s.i, 4.5); /* 3 + 5 + 0.5·(1 − 8) */
    near(fb_pid_step(&c, &s, 5, 0, 1), 1);
    near(s.i, 5.25);
    for (int i = 0; i < 60; i++) fb_pid_step(&c, &s, 5, 0, 1);
    assert_true(fabs(s.i - 6) < 1e-9); /* bounded: 5 + 0.5·(1 − 5 − I) = 0 */
    /* none: the integral winds up, and the output stays at the limit long after */
    c.aw = FB_AW_NONE;
    fb_pid_reset(&c, &s, 0);
    near(fb_pid_step(&c, &s, 0, 0, 1), 0);
    for (int i = 0; i < 20; i++) fb_pid_step(&c, &s, 5, 0, 1);
    near(s.i, 100);
    near(fb_pid_step(&c, &s, 0.5, 0, 1), 1); /* still saturated: windup */
}

static void test_rate_limit(void **st)
{
    (void)st;
    struct fb_pid_cfg c = cfg(10, 0, 0);
    c.rate = 2; /* 2 units/s, h = 0.5 s: 1 per sample */
    c.aw = FB_AW_CLAMP;
    struct fb_pid s;
    fb_pid_reset(&c, &s, 0);
    near(fb_pid_step(&c, &s, 0, 0, 0.5), 0);
    near(fb_pid_step(&c, &s, 1, 0, 0.5), 1);
    assert_int_equal(s.sat, 1);
    near(fb_pid_step(&c, &s, 1, 0, 0.5), 2);
    near(fb_pid_step(&c, &s, 1, 0, 0.5), 3);
    near(fb_pid_step(&c, &s, 0, 0, 0.5), 2); /* down at the same rate */
    near(fb_pid_step(&c, &s, 0, 0, 0.5), 1);
    near(fb_pid_step(&c, &s, 0, 0, 0.5), 0);
    assert_int_equal(s.sat, 0);
}

static void test_direct_action(void **st)
{
    (void)st;
    struct fb_pid_cfg c = cfg(2, 4, 0);
    c.action = FB_PID_DIRECT;
    struct fb_pid s;
    fb_pid_reset(&c, &s, 0);
    near(fb_pid_step(&c, &s, 0, 0, 0.5), 0);
    near(fb_pid_step(&c, &s, 0, 1, 0.5), 2); /* measurement above the set point: output rises (cooling) */
    near(s.i, 0.25);
    near(fb_pid_step(&c, &s, 0, 1, 0.5), 2.25);
}

/* Start, manual and retuning without a bump. */
static void test_bumpless(void **st)
{
    (void)st;
    struct fb_pid_cfg c = cfg(2, 4, 0);
    struct fb_pid s;
    fb_pid_reset(&c, &s, 30);
    near(fb_pid_step(&c, &s, 50, 20, 0.5), 30); /* a loop started with an error starts at u0 */
    near(s.i, 30 - 60 + 2 * 0.5 / 4 * 30);
    /* manual at 5, then automatic: the first automatic output is 5 */
    fb_pid_reset(&c, &s, 0);
    near(fb_pid_track(&c, &s, 1, 0, 5, 0.5), 5);
    near(s.i, 3);
    near(fb_pid_step(&c, &s, 1, 0, 0.5), 5);
    near(s.i, 3.25);
    /* retune K 2 → 4: the integral absorbs ΔP, the output goes on from 5 + 0.25 */
    struct fb_pid_cfg c2 = c;
    c2.kp = 4;
    fb_pid_retune(&c, &c2, &s, 1, 0);
    near(s.i, 1.25);
    near(fb_pid_step(&c2, &s, 1, 0, 0.5), 5.25);
    near(s.i, 1.75);
    /* tracking clamps to the limits */
    c2.lo = 0;
    c2.hi = 10;
    near(fb_pid_track(&c2, &s, 1, 0, 50, 0.5), 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pi_sequence),      cmocka_unit_test(test_derivative_no_kick),
        cmocka_unit_test(test_p_on_measurement), cmocka_unit_test(test_anti_windup),
        cmocka_unit_test(test_rate_limit),       cmocka_unit_test(test_direct_action),
        cmocka_unit_test(test_bumpless),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
