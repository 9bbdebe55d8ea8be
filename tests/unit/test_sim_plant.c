/* test_sim_plant.c — the simulated processes against their analytic
 * solutions: a first-order step with dead time, the heater's steady state
 * and time constant, the tank's equilibrium level, the valve's travel time,
 * input history across the dead time, and spec errors.  And the sim driver
 * glue: a plant tag follows writes to its input tag. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/fb.h"
#include "south/sim/sim_plant.h"

#define S(x) ((int64_t)((x)*1e9))
#define T0 S(1000)

static struct fb_plant *parse_ok(const char *spec)
{
    static struct fb_plant p;
    struct fb_err err = {0};
    int rc = fb_plant_parse(spec, &p, &err);
    if (rc) fprintf(stderr, "%s: %s\n", spec, err.msg);
    assert_int_equal(rc, 0);
    return &p;
}

/* y(t) = y0 + k·u·(1 − e^(−(t−L)/tau)) after a step of u at 0, dead time L. */
static void test_fopdt_step(void **st)
{
    (void)st;
    struct fb_plant *p = parse_ok("fopdt:k=2,tau=4s,dead=800ms,y0=20");
    assert_true(fabs(fb_plant_advance(p, T0) - 20) < 1e-12);
    fb_plant_input(p, T0, 5);
    /* nothing moves during the dead time */
    assert_true(fabs(fb_plant_advance(p, T0 + S(0.5)) - 20) < 1e-12);
    assert_true(fabs(fb_plant_advance(p, T0 + S(0.8)) - 20) < 1e-12);
    for (double t = 1.0; t <= 20.0; t += 0.7) {
        double want = 20 + 2 * 5 * (1 - exp(-(t - 0.8) / 4));
        double y = fb_plant_advance(p, T0 + S(t));
        assert_true(fabs(y - want) < 1e-7); /* S(t) truncates to whole ns */
    }
    /* a second step, back to 0, arrives dead-time later too */
    int64_t t1 = T0 + S(20);
    double y1 = fb_plant_advance(p, t1);
    fb_plant_input(p, t1, 0);
    double y2 = fb_plant_advance(p, t1 + S(0.79));
    assert_true(y2 > y1); /* still rising towards 30 */
    double y3 = fb_plant_advance(p, t1 + S(0.8) + S(4));
    double yd = 20 + 10 * (1 - exp(-(20 - 0.8) / 4)); /* at t1 */
    yd = 30 - (30 - yd) * exp(-0.8 / 4);              /* at t1 + dead: still rising until then */
    double want = 20 + (yd - 20) * exp(-1.0);         /* then towards 20, one time constant */
    assert_true(fabs(y3 - want) < 1e-7);
}

/* The answer does not depend on how often the plant is advanced. */
static void test_fopdt_steps_independent(void **st)
{
    (void)st;
    struct fb_plant a, b;
    struct fb_err err = {0};
    assert_int_equal(fb_plant_parse("fopdt:k=1.5,tau=2s,dead=300ms", &a, &err), 0);
    assert_int_equal(fb_plant_parse("fopdt:k=1.5,tau=2s,dead=300ms", &b, &err), 0);
    fb_plant_advance(&a, T0);
    fb_plant_advance(&b, T0);
    for (int i = 0; i < 50; i++) { /* inputs change every 100 ms */
        int64_t t = T0 + S(0.1 * i);
        double u = (i % 7) * 1.5 - 3;
        fb_plant_advance(&a, t);
        fb_plant_input(&a, t, u);
        for (int k = 0; k < 10; k++) fb_plant_advance(&b, t - S(0.1) + S(0.01 * (k + 1))); /* b: every 10 ms */
        fb_plant_advance(&b, t);
        fb_plant_input(&b, t, u);
    }
    double ya = fb_plant_advance(&a, T0 + S(7)), yb = fb_plant_advance(&b, T0 + S(7));
    assert_true(fabs(ya - yb) < 1e-9);
}

static void test_heater(void **st)
{
    (void)st;
    /* steady state ambient + p_max·u/100/ua = 20 + 2000·0.5/20 = 70; tau = c/ua = 1000 s */
    struct fb_plant *p = parse_ok("heater:p_max=2000,c=20000,ua=20,ambient=20");
    fb_plant_advance(p, T0);
    fb_plant_input(p, T0, 50);
    double y = fb_plant_advance(p, T0 + S(1000));
    assert_true(fabs(y - (70 - 50 * exp(-1.0))) < 1e-9);
    y = fb_plant_advance(p, T0 + S(20000));
    assert_true(fabs(y - 70) < 1e-6);
}

static void test_tank(void **st)
{
    (void)st;
    /* equilibrium: q_max·u/100 = k_out·√h → h = (0.01·0.5/0.005)² = 1 */
    struct fb_plant *p = parse_ok("tank:area=1,q_max=0.01,k_out=0.005,height=2,initial=0");
    fb_plant_advance(p, T0);
    fb_plant_input(p, T0, 50);
    double y = fb_plant_advance(p, T0 + S(4000));
    assert_true(fabs(y - 1.0) < 1e-3);
    /* full inflow, no outflow: it fills to its height and stays */
    p = parse_ok("tank:area=1,q_max=0.01,k_out=0,height=2");
    fb_plant_advance(p, T0);
    fb_plant_input(p, T0, 100);
    assert_true(fabs(fb_plant_advance(p, T0 + S(100)) - 1.0) < 1e-6);
    assert_true(fabs(fb_plant_advance(p, T0 + S(1000)) - 2.0) < 1e-12);
}

static void test_valve_motor(void **st)
{
    (void)st;
    struct fb_plant *p = parse_ok("valve:travel=10s");
    fb_plant_advance(p, T0);
    fb_plant_input(p, T0, 100);
    assert_true(fabs(fb_plant_advance(p, T0 + S(2.5)) - 25) < 1e-9);
    assert_true(fabs(fb_plant_advance(p, T0 + S(10)) - 100) < 1e-9);
    assert_true(fabs(fb_plant_advance(p, T0 + S(30)) - 100) < 1e-12);
    fb_plant_input(p, T0 + S(30), 40);
    assert_true(fabs(fb_plant_advance(p, T0 + S(33)) - 70) < 1e-9);
    assert_true(fabs(fb_plant_advance(p, T0 + S(40)) - 40) < 1e-12);
    p = parse_ok("motor:travel=5s");
    assert_true(p->hi == 1500);
    fb_plant_advance(p, T0);
    fb_plant_input(p, T0, 3000); /* beyond max: goes to max */
    assert_true(fabs(fb_plant_advance(p, T0 + S(1)) - 300) < 1e-9);
    assert_true(fabs(fb_plant_advance(p, T0 + S(60)) - 1500) < 1e-9);
}

static void test_parse_errors(void **st)
{
    (void)st;
    struct fb_plant p;
    struct fb_err err = {0};
    assert_true(fb_plant_is_spec("heater:ua=3"));
    assert_true(fb_plant_is_spec("valve"));
    assert_false(fb_plant_is_spec("heaters:ua=3"));
    assert_false(fb_plant_is_spec("memory:initial=3"));
    assert_int_equal(fb_plant_parse("boiler:x=1", &p, &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "unknown plant"));
    assert_int_equal(fb_plant_parse("fopdt:taux=3s", &p, &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "valid: k, tau, y0, dead, initial, input"));
    assert_int_equal(fb_plant_parse("fopdt:tau=0", &p, &err), FB_EINVAL);
    assert_int_equal(fb_plant_parse("heater:ua=-1", &p, &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "greater than 0"));
    assert_int_equal(fb_plant_parse("valve:min=5,max=5", &p, &err), FB_EINVAL);
    assert_int_equal(fb_plant_parse("tank:initial=3,height=2", &p, &err), FB_EINVAL);
    assert_int_equal(fb_plant_parse("fopdt:k=abc", &p, &err), FB_EINVAL);
    assert_int_equal(fb_plant_parse("fopdt:dead=forever", &p, &err), FB_EINVAL);
    assert_int_equal(fb_plant_parse("fopdt:k", &p, &err), FB_EINVAL);
    assert_int_equal(fb_plant_parse("fopdt:input=", &p, &err), FB_EINVAL);
}

/* The sim driver: the plant's input is another tag; writes reach it at once,
 * and bad references are config errors with the position. */
static const char *cfg_text(const char *body)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "gateway: {id: g}\ndevices:\n  - name: d\n    url: sim://d\n    tags:\n%s", body);
    return buf;
}

static struct fb_gateway *load(const char *text, int *errs)
{
    char path[] = "/tmp/fb-test-plant-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    char diag[4096] = "";
    FILE *df = fmemopen(diag, sizeof diag - 1, "w");
    struct fb_config_opts o = {.diag = df};
    struct fb_gateway *gw = NULL;
    *errs = fb_config_load(path, &o, &gw) < 0;
    fclose(df);
    if (*errs) fprintf(stderr, "%s", diag);
    unlink(path);
    return gw;
}

static void test_driver_glue(void **st)
{
    (void)st;
    int errs;
    struct fb_gateway *gw = load(cfg_text("      - {name: u, addr: \"memory:initial=0\", access: rw}\n"
                                          "      - {name: v, addr: \"valve:travel=100ms,input=u\"}\n"
                                          "      - {name: y, addr: \"fopdt:k=1,tau=50ms,input=v\"}\n"),
                                 &errs);
    assert_false(errs);
    assert_non_null(gw);
    const struct fb_device *d = &gw->devs[0];
    struct fb_batch *b = fb_batch_new(8, 0, 0);
    assert_int_equal(d->drv->read((struct fb_device *)d, &d->groups[0], b), 0);
    assert_int_equal(b->n, 3);
    assert_true(b->s[1].v.f == 0 && b->s[2].v.f == 0);
    struct fb_value v = {.type = FB_T_FLOAT64, .f = 100};
    struct fb_err err = {0};
    assert_int_equal(d->drv->write((struct fb_device *)d, &gw->tags[0], &v, &err), 0);
    /* a plant is not writable */
    assert_int_equal(d->drv->write((struct fb_device *)d, &gw->tags[2], &v, &err), FB_EACCES);
    struct timespec ts = {0, 400000000L};
    nanosleep(&ts, NULL);
    fb_batch_reset(b);
    assert_int_equal(d->drv->read((struct fb_device *)d, &d->groups[0], b), 0);
    assert_true(fabs(b->s[1].v.f - 100) < 1e-9); /* the valve travelled in 100 ms */
    assert_true(b->s[2].v.f > 99);               /* and the process followed it (chained plants) */
    fb_batch_free(b);
    fb_gateway_free(gw);

    gw = load(cfg_text("      - {name: y, addr: \"fopdt:input=nope\"}\n"), &errs);
    assert_true(errs);
    gw = load(cfg_text("      - {name: a, addr: \"fopdt:input=b\"}\n      - {name: b, addr: \"fopdt:input=a\"}\n"),
              &errs);
    assert_true(errs);
    gw = load(cfg_text("      - {name: y, addr: \"fopdt:k=1\", access: rw}\n"), &errs);
    assert_true(errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fopdt_step),  cmocka_unit_test(test_fopdt_steps_independent),
        cmocka_unit_test(test_heater),      cmocka_unit_test(test_tank),
        cmocka_unit_test(test_valve_motor), cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_driver_glue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
