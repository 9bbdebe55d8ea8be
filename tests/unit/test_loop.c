/* test_loop.c — one control loop's cycle (src/control/loop.c) with made-up
 * inputs: the start-up grace, a stale measurement → fallback in the very
 * cycle it passes the limit (hold, safe, manual), communication loss → safe
 * value, interlocks (safe value, commands refused, back in manual), bumpless
 * auto ↔ manual, commands (manual-only output, the mode strings, tuning),
 * the set-point ramp and limits, the watchdog trip and the command source. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "control/loop.h"

#define MS 1000000LL

static struct fb_loop_cfg lc;
static struct fb_loop L;

static void setup_loop(int fallback)
{
    memset(&lc, 0, sizeof lc);
    lc.name = "tic";
    lc.pid = (struct fb_pid_cfg){.kp = 2, .ti = 4, .n = 10, .b = 1, .aw = FB_AW_CLAMP, .lo = 0, .hi = 100};
    lc.cycle_ns = 100 * MS;
    lc.mode0 = FB_MODE_AUTO;
    lc.sp0 = 50;
    lc.safe = 0;
    lc.out0 = 0;
    lc.stale_cycles = 3;
    lc.fallback = fallback;
    lc.on_north_loss = FB_ACT_SAFE;
    fb_loop_init(&L, &lc);
}

static struct fb_loop_in good(double pv, int64_t age)
{
    return (struct fb_loop_in){.h = 0.1, .have_pv = true, .pv = pv, .pv_q = FB_Q_GOOD, .pv_age = age};
}

static double cycle(const struct fb_loop_in *in, bool *force)
{
    bool f;
    double u = fb_loop_cycle(&L, in, force ? force : &f);
    return u;
}

static int cmd_num(int field, double v)
{
    struct fb_value x = {.type = FB_T_FLOAT64, .f = v};
    struct fb_err err = {0};
    return fb_loop_command(&L, field, &x, &err);
}

static int cmd_mode(const char *m, char *why)
{
    struct fb_value x = {.type = FB_T_STRING, .s = {m, (uint32_t)strlen(m)}};
    struct fb_err err = {0};
    int rc = fb_loop_command(&L, FB_LF_MODE, &x, &err);
    if (why) strcpy(why, err.msg);
    return rc;
}

/* Nothing is written until the first measurement, which has `stale` cycles to come. */
static void test_startup(void **st)
{
    (void)st;
    setup_loop(FB_ACT_SAFE);
    struct fb_loop_in none = {.h = 0.1};
    bool force = true;
    cycle(&none, &force);
    assert_int_equal(L.state, FB_LS_INIT);
    assert_false(force);
    cycle(&none, &force);
    cycle(&none, &force);
    assert_int_equal(L.state, FB_LS_INIT);
    cycle(&none, &force); /* the fourth cycle without a value: stale */
    assert_int_equal(L.state, FB_LS_STALE);
    assert_true(force);
    setup_loop(FB_ACT_HOLD);
    struct fb_loop_in in = good(50, 10 * MS);
    assert_true(cycle(&in, &force) == 0); /* the first output: out0, bumpless, and written */
    assert_true(force);
    assert_int_equal(L.state, FB_LS_OK);
}

/* Older than 3 cycles (300 ms): fallback in the cycle that sees it. */
static void test_stale_fallback(void **st)
{
    (void)st;
    int acts[] = {FB_ACT_HOLD, FB_ACT_SAFE, FB_ACT_MANUAL};
    for (int a = 0; a < 3; a++) {
        setup_loop(acts[a]);
        lc.safe = 5;
        struct fb_loop_in in = good(40, 0);
        for (int i = 0; i < 10; i++) cycle(&in, NULL);
        double u = L.out;
        assert_true(u > 4);   /* pv below sp: the output rose (0.5 per cycle) */
        in.pv_age = 300 * MS; /* exactly the limit: still good */
        cycle(&in, NULL);
        assert_int_equal(L.state, FB_LS_OK);
        u = L.out;
        in.pv_age = 300 * MS + 1;
        bool force;
        double v = cycle(&in, &force);
        assert_int_equal(L.state, FB_LS_STALE);
        if (acts[a] == FB_ACT_HOLD) {
            assert_true(v == u);
            assert_int_equal(L.mode, FB_MODE_AUTO);
        } else if (acts[a] == FB_ACT_SAFE) {
            assert_true(v == 5);
            assert_true(force);
        } else {
            assert_true(v == u);
            assert_int_equal(L.mode, FB_MODE_MANUAL);
        }
        /* a Bad quality is stale too, whatever the age */
        in = good(40, 0);
        in.pv_q = FB_Q_BAD_SENSOR_FAILURE;
        cycle(&in, NULL);
        assert_int_equal(L.state, FB_LS_STALE);
        /* fresh again: back to normal, bumpless from where it stood */
        in = good(40, 0);
        double before = L.out;
        v = cycle(&in, NULL);
        assert_int_equal(L.state, FB_LS_OK);
        assert_true(fabs(v - before) < 2 * 0.1 / 4 * 10 + 1e-9); /* one integral step at most */
        assert_int_equal(L.mode, acts[a] == FB_ACT_MANUAL ? FB_MODE_MANUAL : FB_MODE_AUTO);
    }
}

static void test_comm_loss(void **st)
{
    (void)st;
    setup_loop(FB_ACT_HOLD);
    lc.safe = 7;
    struct fb_loop_in in = good(40, 0);
    for (int i = 0; i < 5; i++) cycle(&in, NULL);
    in.pv_lost = true;
    in.pv_q = FB_Q_BAD_COMM;
    bool force;
    assert_true(cycle(&in, &force) == 7);
    assert_true(force);
    assert_int_equal(L.state, FB_LS_COMM_LOSS);
    cycle(&in, &force);
    assert_false(force); /* forced once, on entry */
    in = good(40, 0);
    double v = cycle(&in, NULL);
    assert_int_equal(L.state, FB_LS_OK);
    assert_true(fabs(v - 7) < 1); /* resumes from the safe value */
}

static void test_interlock(void **st)
{
    (void)st;
    setup_loop(FB_ACT_HOLD);
    lc.safe = 3;
    struct fb_loop_in in = good(40, 0);
    for (int i = 0; i < 5; i++) cycle(&in, NULL);
    in.interlock = "overtemp";
    in.interlock_manual = true;
    bool force;
    assert_true(cycle(&in, &force) == 3);
    assert_true(force);
    assert_int_equal(L.state, FB_LS_INTERLOCK);
    /* commands are refused while it holds */
    struct fb_value x = {.type = FB_T_FLOAT64, .f = 60};
    struct fb_err err = {0};
    assert_int_equal(fb_loop_command(&L, FB_LF_SP, &x, &err), FB_EACCES);
    assert_non_null(strstr(err.msg, "interlock overtemp is active"));
    char why[256];
    assert_int_equal(cmd_mode("manual", why), FB_EACCES);
    /* released: manual at the safe value */
    in.interlock = NULL;
    assert_true(cycle(&in, NULL) == 3);
    assert_int_equal(L.state, FB_LS_OK);
    assert_int_equal(L.mode, FB_MODE_MANUAL);
    assert_int_equal(cmd_num(FB_LF_SP, 60), 0);
}

/* auto → manual keeps the output; manual → auto starts from the manual output. */
static void test_bumpless_transfer(void **st)
{
    (void)st;
    setup_loop(FB_ACT_HOLD);
    struct fb_loop_in in = good(45, 0);
    for (int i = 0; i < 20; i++) cycle(&in, NULL);
    double u = L.out;
    assert_int_equal(cmd_mode("manual", NULL), 0);
    assert_true(cycle(&in, NULL) == u);
    assert_int_equal(L.mode, FB_MODE_MANUAL);
    /* out is written in manual only */
    assert_int_equal(cmd_num(FB_LF_OUT, 33), 0);
    assert_true(cycle(&in, NULL) == 33);
    assert_true(cycle(&in, NULL) == 33);
    assert_int_equal(cmd_mode("AUTO", NULL), 0);
    double v = cycle(&in, NULL);
    assert_true(fabs(v - 33) < 1e-9); /* the first automatic output is the manual one */
    v = cycle(&in, NULL);
    assert_true(fabs(v - (33 + 2 * 0.1 / 4 * 5)) < 1e-9); /* then one integral step (e = 5) */
    struct fb_value x = {.type = FB_T_FLOAT64, .f = 10};
    struct fb_err err = {0};
    assert_int_equal(fb_loop_command(&L, FB_LF_OUT, &x, &err), FB_EACCES);
    assert_non_null(strstr(err.msg, "manual mode only"));
    /* mode then out in one command: the out sees the queued mode */
    assert_int_equal(cmd_mode("manual", NULL), 0);
    assert_int_equal(fb_loop_command(&L, FB_LF_OUT, &x, &err), 0);
    assert_true(cycle(&in, NULL) == 10);
    char why[256];
    assert_int_equal(cmd_mode("cascade", why), FB_EINVAL);
    assert_non_null(strstr(why, "expected \"auto\" or \"manual\""));
}

static void test_rate_limited_manual(void **st)
{
    (void)st;
    setup_loop(FB_ACT_HOLD);
    lc.pid.rate = 10; /* 1 per 100 ms cycle */
    fb_loop_init(&L, &lc);
    struct fb_loop_in in = good(50, 0);
    cycle(&in, NULL);
    assert_int_equal(cmd_mode("manual", NULL), 0);
    cycle(&in, NULL);
    assert_int_equal(cmd_num(FB_LF_OUT, 5), 0);
    assert_true(fabs(cycle(&in, NULL) - 1) < 1e-9);
    assert_true(fabs(cycle(&in, NULL) - 2) < 1e-9);
}

static void test_setpoint(void **st)
{
    (void)st;
    setup_loop(FB_ACT_HOLD);
    lc.sp_rate = 2; /* 0.2 per 100 ms */
    lc.has_sp_min = lc.has_sp_max = true;
    lc.sp_min = 0;
    lc.sp_max = 80;
    fb_loop_init(&L, &lc);
    struct fb_loop_in in = good(50, 0);
    cycle(&in, NULL);
    assert_int_equal(cmd_num(FB_LF_SP, 51), 0);
    cycle(&in, NULL);
    assert_true(fabs(L.sp - 50.2) < 1e-9);
    assert_true(L.sp_target == 51);
    for (int i = 0; i < 10; i++) cycle(&in, NULL);
    assert_true(L.sp == 51);
    /* a remote set point is clamped to the limits */
    lc.has_sp_tag = true;
    lc.sp_name = "x/y";
    lc.sp_rate = 0;
    in.have_sp = true;
    in.sp_in = 95;
    cycle(&in, NULL);
    assert_true(L.sp == 80);
    struct fb_value x = {.type = FB_T_FLOAT64, .f = 60};
    struct fb_err err = {0};
    assert_int_equal(fb_loop_command(&L, FB_LF_SP, &x, &err), FB_EACCES);
    assert_non_null(strstr(err.msg, "comes from x/y"));
    /* set-point tracking in manual */
    setup_loop(FB_ACT_HOLD);
    lc.sp_track = true;
    fb_loop_init(&L, &lc);
    in = good(42, 0);
    cycle(&in, NULL);
    assert_int_equal(cmd_mode("manual", NULL), 0);
    cycle(&in, NULL);
    assert_true(L.sp == 42);
}

static void test_tuning_command(void **st)
{
    (void)st;
    setup_loop(FB_ACT_HOLD);
    struct fb_loop_in in = good(45, 0);
    for (int i = 0; i < 5; i++) cycle(&in, NULL);
    double u = L.out;
    assert_int_equal(cmd_num(FB_LF_KP, 4), 0);
    assert_int_equal(cmd_num(FB_LF_TI, 8), 0);
    double v = cycle(&in, NULL);
    assert_true(L.pid.kp == 4 && L.pid.ti == 8);
    assert_true(fabs(v - (u + 2 * 0.1 / 4 * 5)) < 1e-9); /* bumpless: only the old integral step */
    struct fb_loop_snap s;
    fb_loop_snapshot(&L, &s);
    assert_true(s.kp == 4 && s.ti == 8 && s.td == 0);
    struct fb_value x = {.type = FB_T_FLOAT64, .f = 1};
    struct fb_err err = {0};
    assert_int_equal(fb_loop_command(&L, FB_LF_STATE, &x, &err), FB_EACCES);
}

static void test_watchdog_and_north(void **st)
{
    (void)st;
    setup_loop(FB_ACT_HOLD);
    lc.safe = 2;
    struct fb_loop_in in = good(45, 0);
    for (int i = 0; i < 5; i++) cycle(&in, NULL);
    in.watchdog_trip = true;
    assert_true(cycle(&in, NULL) == 2);
    assert_int_equal(L.mode, FB_MODE_MANUAL);
    in.watchdog_trip = false;
    assert_true(cycle(&in, NULL) == 2);
    /* command source lost: on_north_loss (safe) */
    setup_loop(FB_ACT_HOLD);
    lc.safe = 1;
    in = good(45, 0);
    for (int i = 0; i < 5; i++) cycle(&in, NULL);
    in.north_lost = true;
    bool force;
    assert_true(cycle(&in, &force) == 1);
    assert_true(force);
    assert_int_equal(L.state, FB_LS_NORTH_LOSS);
    lc.on_north_loss = FB_ACT_NONE;
    cycle(&in, NULL);
    assert_int_equal(L.state, FB_LS_OK);
    /* the output's device offline: hold */
    in.out_lost = true;
    double u = L.out;
    assert_true(cycle(&in, NULL) == u);
    assert_int_equal(L.state, FB_LS_OUTPUT_LOST);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_startup),
        cmocka_unit_test(test_stale_fallback),
        cmocka_unit_test(test_comm_loss),
        cmocka_unit_test(test_interlock),
        cmocka_unit_test(test_bumpless_transfer),
        cmocka_unit_test(test_rate_limited_manual),
        cmocka_unit_test(test_setpoint),
        cmocka_unit_test(test_tuning_command),
        cmocka_unit_test(test_watchdog_and_north),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
