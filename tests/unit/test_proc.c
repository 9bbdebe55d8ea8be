/* test_proc.c — per-tag processing (src/proc): scaling, plausibility,
 * deadband, sliding windows and the whole chain over a hand-built gateway. */
#include <malloc.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "proc/proc.h"

#define S (1000000000LL)
#define MS (1000000LL)

static struct fb_value fv(double x) { return (struct fb_value){.type = FB_T_FLOAT64, .f = x}; }

static void test_scale(void **state)
{
    (void)state;
    struct fb_tag_proc p = {.scaled = true, .k = 100.0 / 27648.0, .d = 0};
    struct fb_value v = {.type = FB_T_INT16, .i = 27648};
    fb_scale_in(&p, &v);
    assert_int_equal(v.type, FB_T_FLOAT64);
    assert_true(fabs(v.f - 100.0) < 1e-12);
    assert_true(fabs(fb_scale_out(&p, 50.0) - 13824.0) < 1e-9);

    p = (struct fb_tag_proc){.scaled = true, .k = 0.1, .d = -40};
    v = (struct fb_value){.type = FB_T_UINT16, .u = 650};
    fb_scale_in(&p, &v);
    assert_true(fabs(v.f - 25.0) < 1e-12);
    for (double e = -40; e < 100; e += 7.3) { /* inverse */
        struct fb_value r = {.type = FB_T_FLOAT64, .f = fb_scale_out(&p, e)};
        fb_scale_in(&p, &r);
        assert_true(fabs(r.f - e) < 1e-9);
    }
    v = (struct fb_value){.type = FB_T_FLOAT32, .f = 10.0};
    fb_scale_in(&p, &v);
    assert_int_equal(v.type, FB_T_FLOAT64);
    assert_true(fabs(v.f - (-39.0)) < 1e-12);
    v = (struct fb_value){.type = FB_T_INT64, .i = -100};
    fb_scale_in(&p, &v);
    assert_true(fabs(v.f - (-50.0)) < 1e-12);

    /* bools and strings pass through; unscaled tags are untouched */
    v = (struct fb_value){.type = FB_T_BOOL, .b = true};
    fb_scale_in(&p, &v);
    assert_int_equal(v.type, FB_T_BOOL);
    v = (struct fb_value){.type = FB_T_STRING, .s = {"x", 1}};
    fb_scale_in(&p, &v);
    assert_int_equal(v.type, FB_T_STRING);
    struct fb_tag_proc off = {0};
    v = (struct fb_value){.type = FB_T_INT16, .i = 7};
    fb_scale_in(&off, &v);
    assert_int_equal(v.type, FB_T_INT16);
    assert_int_equal(v.i, 7);
    assert_true(fb_scale_out(&off, 3.5) == 3.5);
}

/* The double nearest to the exact decimal n / 10^p (n whole), via strtod. */
static double dec(int64_t n, int p)
{
    char t[64];
    uint64_t a = n < 0 ? (uint64_t)-n : (uint64_t)n, pw = 1;
    for (int i = 0; i < p; i++) pw *= 10;
    int len = snprintf(t, sizeof t, "%s%llu.%0*llu", n < 0 ? "-" : "", (unsigned long long)(a / pw), p > 0 ? p : 1,
                       (unsigned long long)(p > 0 ? a % pw : 0));
    assert_true(len > 0 && (size_t)len < sizeof t);
    return strtod(t, NULL);
}

static const char *json_of(double x)
{
    static struct fb_buf b;
    fb_buf_clear(&b);
    fb_json_double(&b, x);
    return fb_buf_cstr(&b);
}

/* Issue 12: factor 0.01 made 777 into 7.7700000000000005 (777 × 0.01 in
 * binary); decimal factors must give the double nearest to the decimal. */
static void test_scale_decimal(void **state)
{
    (void)state;
    struct fb_tag_proc p = {0};
    fb_scale_set_factor(&p, 0.01, 0);
    struct fb_value v = {.type = FB_T_INT16, .i = 777};
    fb_scale_in(&p, &v);
    assert_true(v.f == 7.77);
    assert_string_equal(json_of(v.f), "7.77");
    assert_true(fb_scale_out(&p, 7.77) - 777 < 1e-9);

    /* random decimal factors and offsets against the exact decimal result */
    uint64_t r = 0x243F6A8885A308D3ull;
    for (int i = 0; i < 200000; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        int pk = (int)(r % 5), pd = (int)((r >> 3) % 4);
        int64_t mk = (int64_t)((r >> 8) % 199999) - 99999, md = (int64_t)((r >> 26) % 20001) - 10000;
        int64_t raw = (int64_t)((r >> 40) % 98304) - 32768;
        if (mk == 0) mk = 1;
        int pm = pk > pd ? pk : pd;
        int64_t tk = mk, td = md;
        for (int k = pk; k < pm; k++) tk *= 10;
        for (int k = pd; k < pm; k++) td *= 10;
        fb_scale_set_factor(&p, dec(mk, pk), dec(md, pd));
        v = (struct fb_value){.type = FB_T_INT32, .i = raw};
        fb_scale_in(&p, &v);
        double want = dec(raw * tk + td, pm);
        if (v.f != want) {
            fprintf(stderr, "raw %lld × %.17g + %.17g = %.17g, want %.17g\n", (long long)raw, p.k, p.d, v.f, want);
            fail();
        }
    }

    /* two points: whole results stay whole, decimal ones decimal */
    fb_scale_set_points(&p, 0, 27648, 0, 100);
    v = (struct fb_value){.type = FB_T_UINT16, .u = 13824};
    fb_scale_in(&p, &v);
    assert_true(v.f == 50.0);
    fb_scale_set_points(&p, 4000, 20000, -40, 150);
    v = (struct fb_value){.type = FB_T_UINT16, .u = 12000};
    fb_scale_in(&p, &v);
    assert_true(v.f == 55.0);
    fb_scale_set_points(&p, 0, 1000, 0, 0.5);
    v = (struct fb_value){.type = FB_T_INT16, .i = 777};
    fb_scale_in(&p, &v);
    assert_true(v.f == 0.3885);
    fb_scale_set_points(&p, 20000, 4000, 150, -40); /* reversed points: the same line */
    v = (struct fb_value){.type = FB_T_UINT16, .u = 12000};
    fb_scale_in(&p, &v);
    assert_true(v.f == 55.0);

    /* float32 readings count as their shortest decimal */
    assert_true(fb_float_widen(7.77f) == 7.77);
    assert_true(fb_float_widen(0.1f) == 0.1);
    assert_true(isnan(fb_float_widen(NAN)));
    fb_scale_set_factor(&p, 1, 0);
    v = (struct fb_value){.type = FB_T_FLOAT32, .f = (double)7.77f};
    fb_scale_in(&p, &v);
    assert_string_equal(json_of(v.f), "7.77");

    /* beyond 2^53 the exact form cannot hold: raw × k + d, still sane */
    fb_scale_set_factor(&p, 0.5, 0);
    v = (struct fb_value){.type = FB_T_UINT64, .u = UINT64_MAX};
    fb_scale_in(&p, &v);
    assert_true(v.f == 9223372036854775808.0);
    /* factors that are not short decimals fall back too */
    fb_scale_set_factor(&p, 1.0 / 3.0, 0);
    assert_true(p.sc == 0);
    v = (struct fb_value){.type = FB_T_INT16, .i = 3};
    fb_scale_in(&p, &v);
    assert_true(v.f == 1.0);
}

static void test_plausibility_range(void **state)
{
    (void)state;
    struct fb_tag_proc p = {.has_min = true, .has_max = true, .min = -40, .max = 150};
    struct fb_tag_state st = {0};
    struct fb_value v = fv(20);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 0), FB_Q_GOOD);
    v = fv(150);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, S), FB_Q_GOOD);
    v = fv(150.001);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 2 * S), FB_Q_BAD_OUT_OF_RANGE);
    v = fv(-41);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_UNCERTAIN, 3 * S), FB_Q_BAD_OUT_OF_RANGE);
    /* already bad: untouched */
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_BAD_COMM, 4 * S), FB_Q_BAD_COMM);
    /* only a max */
    struct fb_tag_proc pm = {.has_max = true, .max = 10};
    struct fb_tag_state st2 = {0};
    v = fv(-1e9);
    assert_int_equal(fb_plausibility(&pm, &st2, &v, FB_Q_GOOD, 0), FB_Q_GOOD);
    v = (struct fb_value){.type = FB_T_INT32, .i = 11};
    assert_int_equal(fb_plausibility(&pm, &st2, &v, FB_Q_GOOD, 0), FB_Q_BAD_OUT_OF_RANGE);
    /* NaN / Inf always downgraded, even without rules */
    struct fb_tag_proc none = {0};
    v = fv(NAN);
    assert_int_equal(fb_plausibility(&none, &st2, &v, FB_Q_GOOD, 0), FB_Q_BAD_SENSOR_FAILURE);
    v = fv(-INFINITY);
    assert_int_equal(fb_plausibility(&none, &st2, &v, FB_Q_GOOD, 0), FB_Q_BAD_OUT_OF_RANGE);
    /* strings are not checked */
    v = (struct fb_value){.type = FB_T_STRING, .s = {"999", 3}};
    assert_int_equal(fb_plausibility(&pm, &st2, &v, FB_Q_GOOD, 0), FB_Q_GOOD);
}

static void test_plausibility_rate(void **state)
{
    (void)state;
    struct fb_tag_proc p = {.max_rate = 5}; /* 5 units per second */
    struct fb_tag_state st = {0};
    struct fb_value v = fv(10);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 0), FB_Q_GOOD);
    v = fv(14);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, S), FB_Q_GOOD); /* 4/s */
    v = fv(100);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 2 * S), FB_Q_BAD_SENSOR_FAILURE);
    /* the spike did not become the reference: 15 vs 14 one step later is fine */
    v = fv(15);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 3 * S), FB_Q_GOOD);
    /* a fast change within 100 ms */
    v = fv(16);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 3 * S + 100 * MS), FB_Q_BAD_SENSOR_FAILURE);
    v = fv(15.4);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 3 * S + 100 * MS), FB_Q_GOOD);
    /* a genuine step of 40 heals once 40 / 5 = 8 s have passed since the reference */
    int64_t t0 = 3 * S + 100 * MS, t;
    uint32_t q = 0;
    for (t = t0 + S; t <= t0 + 10 * S; t += S) {
        v = fv(55.4);
        q = fb_plausibility(&p, &st, &v, FB_Q_GOOD, t);
        if (q == FB_Q_GOOD) break;
        assert_int_equal(q, FB_Q_BAD_SENSOR_FAILURE);
    }
    assert_int_equal(q, FB_Q_GOOD);
    assert_int_equal(t, t0 + 8 * S);
    /* bad input leaves the reference alone */
    v = fv(1000);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_BAD_TIMEOUT, t + S), FB_Q_BAD_TIMEOUT);
    v = fv(56);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, t + 2 * S), FB_Q_GOOD);
}

static void test_plausibility_stuck(void **state)
{
    (void)state;
    struct fb_tag_proc p = {.stuck_ns = 5 * S};
    struct fb_tag_state st = {0};
    struct fb_value v = fv(7);
    for (int64_t t = 0; t < 5 * S; t += S) assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, t), FB_Q_GOOD);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 5 * S), FB_Q_UNC_NOT_ACCURATE);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 9 * S), FB_Q_UNC_NOT_ACCURATE);
    v = fv(7.0001); /* any change resets */
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 10 * S), FB_Q_GOOD);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 14 * S), FB_Q_GOOD);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 15 * S), FB_Q_UNC_NOT_ACCURATE);
    /* integers too */
    struct fb_tag_state s2 = {0};
    struct fb_value iv = {.type = FB_T_UINT16, .u = 3};
    assert_int_equal(fb_plausibility(&p, &s2, &iv, FB_Q_GOOD, 0), FB_Q_GOOD);
    assert_int_equal(fb_plausibility(&p, &s2, &iv, FB_Q_GOOD, 6 * S), FB_Q_UNC_NOT_ACCURATE);
}

/* Issue 12: a real step held Bad for minutes (until max_rate × time covered
 * it); with spike_accept N it is accepted at the N-th sample that agrees. */
static void test_plausibility_step_accept(void **state)
{
    (void)state;
    struct fb_tag_proc p = {.max_rate = 1, .spike_accept = 3}; /* 1 unit/s */
    struct fb_tag_state st = {0};
    struct fb_value v = fv(10);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 0), FB_Q_GOOD);
    /* a step 10 → 100, samples 1 s apart, noisy but within max_rate of each other */
    const double step[] = {100, 100.5, 100.2, 100.9, 101.3};
    const uint32_t want[] = {FB_Q_BAD_SENSOR_FAILURE, FB_Q_BAD_SENSOR_FAILURE, FB_Q_GOOD, FB_Q_GOOD, FB_Q_GOOD};
    for (int i = 0; i < 5; i++) {
        v = fv(step[i]);
        assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, (i + 1) * S), want[i]);
    }
    assert_true(st.prev == 101.3); /* the new level is the reference */
    /* a single spike is still refused, and the next normal reading is good */
    v = fv(500);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 6 * S), FB_Q_BAD_SENSOR_FAILURE);
    v = fv(101.5);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 7 * S), FB_Q_GOOD);
    /* ... and a spike after that starts counting afresh: 2 wild readings are not enough */
    v = fv(500);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 8 * S), FB_Q_BAD_SENSOR_FAILURE);
    v = fv(500.5);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 9 * S), FB_Q_BAD_SENSOR_FAILURE);
    v = fv(101.6);
    assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, 10 * S), FB_Q_GOOD);
    /* wild readings that do not agree with each other are never a new level */
    for (int i = 0; i < 10; i++) {
        v = fv(i % 2 ? 400 : -400);
        assert_int_equal(fb_plausibility(&p, &st, &v, FB_Q_GOOD, (11 + i) * S), FB_Q_BAD_SENSOR_FAILURE);
    }
    /* communication errors in between neither count nor reset */
    struct fb_tag_state s2 = {0};
    v = fv(0);
    assert_int_equal(fb_plausibility(&p, &s2, &v, FB_Q_GOOD, 0), FB_Q_GOOD);
    v = fv(50);
    assert_int_equal(fb_plausibility(&p, &s2, &v, FB_Q_GOOD, S), FB_Q_BAD_SENSOR_FAILURE);
    assert_int_equal(fb_plausibility(&p, &s2, &v, FB_Q_BAD_COMM, 2 * S), FB_Q_BAD_COMM);
    assert_int_equal(fb_plausibility(&p, &s2, &v, FB_Q_GOOD, 3 * S), FB_Q_BAD_SENSOR_FAILURE);
    assert_int_equal(fb_plausibility(&p, &s2, &v, FB_Q_GOOD, 4 * S), FB_Q_GOOD);
    /* spike_accept 0: only time heals (the behaviour before spike_accept) */
    struct fb_tag_proc p0 = {.max_rate = 1};
    struct fb_tag_state s0 = {0};
    v = fv(10);
    fb_plausibility(&p0, &s0, &v, FB_Q_GOOD, 0);
    v = fv(100);
    for (int i = 1; i < 90; i++)
        assert_int_equal(fb_plausibility(&p0, &s0, &v, FB_Q_GOOD, i * S), FB_Q_BAD_SENSOR_FAILURE);
    assert_int_equal(fb_plausibility(&p0, &s0, &v, FB_Q_GOOD, 90 * S), FB_Q_GOOD);
}

static int64_t db_ns; /* the heartbeat's clock of the tag under test */
static bool db(const struct fb_tag_proc *p, struct fb_last *st, double x, uint32_t q, int64_t ts, bool *hb)
{
    struct fb_value v = fv(x);
    return fb_deadband_pass(p, st, &db_ns, FB_T_FLOAT64, &v, q, ts, hb);
}

static void test_deadband_abs(void **state)
{
    (void)state;
    struct fb_tag_proc p = {.db_abs = 0.5};
    struct fb_last st = {0};
    bool hb = true;
    assert_true(db(&p, &st, 10, FB_Q_GOOD, 0, &hb)); /* first */
    assert_false(hb);
    assert_false(db(&p, &st, 10.3, FB_Q_GOOD, 1, &hb));
    assert_false(db(&p, &st, 9.6, FB_Q_GOOD, 2, &hb));
    assert_false(db(&p, &st, 10.5, FB_Q_GOOD, 3, &hb)); /* exactly the deadband: not more */
    assert_true(db(&p, &st, 10.6, FB_Q_GOOD, 4, &hb));
    /* slow drift is measured against the last PUBLISHED value */
    assert_false(db(&p, &st, 10.8, FB_Q_GOOD, 5, &hb));
    assert_false(db(&p, &st, 11.0, FB_Q_GOOD, 6, &hb));
    assert_true(db(&p, &st, 11.2, FB_Q_GOOD, 7, &hb));
    /* quality change passes in both directions, even with the same value */
    assert_true(db(&p, &st, 11.2, FB_Q_BAD_COMM, 8, &hb));
    assert_false(db(&p, &st, 0, FB_Q_BAD_COMM, 9, &hb)); /* same bad code again */
    assert_true(db(&p, &st, 11.2, FB_Q_GOOD, 10, &hb));
    assert_true(db(&p, &st, 11.2, FB_Q_UNC_NOT_ACCURATE, 11, &hb));
    /* NaN to number */
    assert_true(db(&p, &st, NAN, FB_Q_UNC_NOT_ACCURATE, 12, &hb));
    assert_false(db(&p, &st, NAN, FB_Q_UNC_NOT_ACCURATE, 13, &hb));
    assert_true(db(&p, &st, 1, FB_Q_UNC_NOT_ACCURATE, 14, &hb));
}

static void test_deadband_pct_heartbeat(void **state)
{
    (void)state;
    struct fb_tag_proc p = {.db_pct = 2, .heartbeat_ns = 60 * S};
    struct fb_last st = {0};
    bool hb;
    assert_true(db(&p, &st, 100, FB_Q_GOOD, 0, &hb));
    assert_false(db(&p, &st, 101.9, FB_Q_GOOD, S, &hb));
    assert_false(db(&p, &st, 98.1, FB_Q_GOOD, 2 * S, &hb));
    assert_true(db(&p, &st, 102.1, FB_Q_GOOD, 3 * S, &hb));
    assert_false(hb);
    /* 2 % of 102.1 = 2.042 */
    assert_false(db(&p, &st, 104.1, FB_Q_GOOD, 4 * S, &hb));
    assert_true(db(&p, &st, 104.2, FB_Q_GOOD, 5 * S, &hb));
    /* heartbeat: nothing changed for 60 s */
    assert_false(db(&p, &st, 104.2, FB_Q_GOOD, 64 * S, &hb));
    assert_true(db(&p, &st, 104.2, FB_Q_GOOD, 65 * S, &hb));
    assert_true(hb);
    assert_false(db(&p, &st, 104.2, FB_Q_GOOD, 66 * S, &hb));
    assert_false(hb);
    assert_true(db(&p, &st, 104.2, FB_Q_GOOD, 125 * S, &hb));
    assert_true(hb);
    /* percent of zero: any change passes */
    struct fb_last z = {0};
    assert_true(db(&p, &z, 0, FB_Q_GOOD, 0, &hb));
    assert_false(db(&p, &z, 0, FB_Q_GOOD, 1, &hb));
    assert_true(db(&p, &z, 1e-9, FB_Q_GOOD, 2, &hb));
}

static void test_deadband_other_types(void **state)
{
    (void)state;
    struct fb_tag_proc none = {0}, p = {.db_abs = 1};
    struct fb_last st = {0};
    bool hb;
    /* no deadband: every sample */
    for (int i = 0; i < 3; i++) assert_true(db(&none, &st, 5, FB_Q_GOOD, i, &hb));
    /* strings: value change (content, not pointer) */
    struct fb_last ss = {0};
    char a[] = "open", b2[] = "open";
    struct fb_value v = {.type = FB_T_STRING, .s = {a, 4}};
    assert_true(fb_deadband_pass(&p, &ss, NULL, FB_T_STRING, &v, FB_Q_GOOD, 0, &hb));
    v.s.p = b2;
    assert_false(fb_deadband_pass(&p, &ss, NULL, FB_T_STRING, &v, FB_Q_GOOD, 1, &hb));
    b2[0] = 'O';
    assert_true(fb_deadband_pass(&p, &ss, NULL, FB_T_STRING, &v, FB_Q_GOOD, 2, &hb));
    v.s.len = 3;
    assert_true(fb_deadband_pass(&p, &ss, NULL, FB_T_STRING, &v, FB_Q_GOOD, 3, &hb));
    /* bools: any change, regardless of the numeric deadband */
    struct fb_last bs = {0};
    struct fb_value bv = {.type = FB_T_BOOL, .b = false};
    assert_true(fb_deadband_pass(&p, &bs, NULL, FB_T_BOOL, &bv, FB_Q_GOOD, 0, &hb));
    assert_false(fb_deadband_pass(&p, &bs, NULL, FB_T_BOOL, &bv, FB_Q_GOOD, 1, &hb));
    bv.b = true;
    assert_true(fb_deadband_pass(&p, &bs, NULL, FB_T_BOOL, &bv, FB_Q_GOOD, 2, &hb));
    /* integers */
    struct fb_last is = {0};
    struct fb_value iv = {.type = FB_T_INT32, .i = 100};
    assert_true(fb_deadband_pass(&p, &is, NULL, FB_T_INT32, &iv, FB_Q_GOOD, 0, &hb));
    iv.i = 101;
    assert_false(fb_deadband_pass(&p, &is, NULL, FB_T_INT32, &iv, FB_Q_GOOD, 1, &hb));
    iv.i = 98;
    assert_true(fb_deadband_pass(&p, &is, NULL, FB_T_INT32, &iv, FB_Q_GOOD, 2, &hb));
    /* the state is 12 bytes and does not store the type (the tag's): no
     * value (FB_T_NONE) and a value of another type are still told apart */
    assert_int_equal(sizeof(struct fb_last), 12);
    struct fb_value nv = {.type = FB_T_NONE};
    assert_true(fb_deadband_pass(&p, &is, NULL, FB_T_INT32, &nv, FB_Q_GOOD, 3, &hb)); /* 98 → no value */
    assert_false(fb_deadband_pass(&p, &is, NULL, FB_T_INT32, &nv, FB_Q_GOOD, 4, &hb));
    iv.i = 0;
    assert_true(fb_deadband_pass(&p, &is, NULL, FB_T_INT32, &iv, FB_Q_GOOD, 5, &hb)); /* no value → 0 */
    assert_true(fb_deadband_pass(&p, &is, NULL, FB_T_INT32, &nv, FB_Q_GOOD, 6, &hb)); /* 0 → no value */
    struct fb_value fv0 = {.type = FB_T_FLOAT64, .f = 0};
    assert_true(fb_deadband_pass(&p, &is, NULL, FB_T_INT32, &fv0, FB_Q_GOOD, 7, &hb)); /* another type */
    assert_true(fb_deadband_pass(&p, &is, NULL, FB_T_INT32, &iv, FB_Q_GOOD, 8, &hb));  /* back: int32 0 */
    assert_false(fb_deadband_pass(&p, &is, NULL, FB_T_INT32, &iv, FB_Q_GOOD, 9, &hb));
    /* every NaN is one NaN; a NaN is not "nothing published" */
    struct fb_last ns = {0};
    uint64_t nan1 = UINT64_C(0x7FF4F2B000000100), nan2 = UINT64_C(0xFFF8000000000001); /* odd payloads */
    struct fb_value x1 = {.type = FB_T_FLOAT64}, x2 = {.type = FB_T_FLOAT64};
    memcpy(&x1.f, &nan1, sizeof nan1);
    memcpy(&x2.f, &nan2, sizeof nan2);
    assert_true(fb_deadband_pass(&p, &ns, NULL, FB_T_FLOAT64, &x1, FB_Q_UNC_NOT_ACCURATE, 0, &hb));
    assert_false(fb_deadband_pass(&p, &ns, NULL, FB_T_FLOAT64, &x1, FB_Q_UNC_NOT_ACCURATE, 1, &hb));
    assert_false(fb_deadband_pass(&p, &ns, NULL, FB_T_FLOAT64, &x2, FB_Q_UNC_NOT_ACCURATE, 2, &hb));
    assert_true(fb_deadband_pass(&p, &ns, NULL, FB_T_FLOAT64, &fv0, FB_Q_UNC_NOT_ACCURATE, 3, &hb));
    /* a zero value is a value: 0.0 then 0.0 is not published again */
    struct fb_last zs = {0};
    assert_true(fb_deadband_pass(&p, &zs, NULL, FB_T_FLOAT64, &fv0, FB_Q_GOOD, 0, &hb));
    assert_false(fb_deadband_pass(&p, &zs, NULL, FB_T_FLOAT64, &fv0, FB_Q_GOOD, 1, &hb));
}

/* ---------------------------------------------------------------- windows */
static uint64_t rng = 12345;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static double urand(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

static void naive(const int64_t *t, const double *v, int n, int64_t now, int64_t w, uint32_t cap, struct fb_stats *o)
{
    memset(o, 0, sizeof *o);
    int first = n - (int)cap > 0 ? n - (int)cap : 0;
    double s = 0, mn = INFINITY, mx = -INFINITY;
    int c = 0;
    for (int i = first; i < n; i++) {
        if (t[i] <= now - w) continue;
        c++;
        s += v[i];
        if (v[i] < mn) mn = v[i];
        if (v[i] > mx) mx = v[i];
    }
    o->count = (uint32_t)c;
    if (!c) return;
    o->mean = s / c;
    double ss = 0;
    for (int i = first; i < n; i++)
        if (t[i] > now - w) ss += (v[i] - o->mean) * (v[i] - o->mean);
    o->stddev = c > 1 ? sqrt(ss / (c - 1)) : 0;
    o->min = mn;
    o->max = mx;
}

static void close_to(double a, double b, double tol)
{
    if (!(fabs(a - b) <= tol * (1 + fabs(b)))) fail_msg("%.17g != %.17g", a, b);
}

static void window_run(uint32_t cap, int64_t w, double base, double spread, int n)
{
    struct fb_window win;
    assert_int_equal(fb_window_init(&win, cap), 0);
    int64_t *t = malloc(sizeof *t * (size_t)n);
    double *v = malloc(sizeof *v * (size_t)n);
    int64_t now = 1000 * S;
    for (int i = 0; i < n; i++) {
        now += (int64_t)(rnd() % (uint64_t)(200 * MS)) + 1;
        t[i] = now;
        /* random walks, plateaus and monotone runs (the worst case for deques) */
        int mode = (int)(i / 500 % 3);
        v[i] = mode == 0   ? base + spread * urand()
               : mode == 1 ? base + spread * (double)(i % 7)
                           : base - spread * i * 1e-3;
        fb_window_add(&win, t[i], v[i], w);
        struct fb_stats got, want;
        fb_window_stats(&win, now, w, &got);
        naive(t, v, i + 1, now, w, cap, &want);
        assert_int_equal(got.count, want.count);
        assert_true(got.min == want.min);
        assert_true(got.max == want.max);
        close_to(got.mean, want.mean, 1e-12);
        close_to(got.stddev, want.stddev, 1e-6 * (want.stddev > 0 ? 1 : 0) + 1e-9);
        assert_int_equal(got.window_ns, w);
        if (i % 97 == 0) { /* stats later than the last add: stale samples skipped */
            int64_t later = now + (int64_t)(rnd() % (uint64_t)(2 * w));
            fb_window_stats(&win, later, w, &got);
            naive(t, v, i + 1, later, w, cap, &want);
            assert_int_equal(got.count, want.count);
            if (want.count) {
                assert_true(got.min == want.min && got.max == want.max);
                close_to(got.mean, want.mean, 1e-12);
                close_to(got.stddev, want.stddev, 1e-6);
            }
        }
    }
    free(t);
    free(v);
    fb_window_free(&win);
}

static void test_window_random(void **state)
{
    (void)state;
    window_run(1000, 10 * S, 0, 100, 6000);  /* time-limited */
    window_run(16, 60 * S, 50, 10, 3000);    /* capacity-limited: only the newest 16 */
    window_run(500, 5 * S, 1e6, 0.01, 4000); /* large offset, tiny variance */
    /* odd capacities (window 10s at poll 100ms gives 129): the control block
     * must stay aligned — the UBSan build aborted here before (issue 14) */
    window_run(129, 10 * S, 20, 5, 1500);
    window_run(17, 60 * S, 50, 10, 500);
    for (uint32_t cap = 1; cap <= 9; cap += 2) window_run(cap, 60 * S, 0, 1, 50);
}

static void test_window_edges(void **state)
{
    (void)state;
    struct fb_window w;
    struct fb_stats st;
    assert_int_equal(fb_window_init(&w, 0), FB_EINVAL);
    assert_int_equal(fb_window_init(&w, 8), 0);
    fb_window_stats(&w, 0, S, &st);
    assert_int_equal(st.count, 0);
    fb_window_add(&w, 0, 5, S);
    fb_window_stats(&w, 0, S, &st);
    assert_int_equal(st.count, 1);
    assert_true(st.mean == 5 && st.stddev == 0 && st.min == 5 && st.max == 5);
    fb_window_add(&w, 1, NAN, S); /* ignored */
    fb_window_add(&w, 500 * MS, 7, S);
    fb_window_stats(&w, 500 * MS, S, &st);
    assert_int_equal(st.count, 2);
    assert_true(st.mean == 6 && st.min == 5 && st.max == 7);
    close_to(st.stddev, sqrt(2.0), 1e-12);
    fb_window_add(&w, S, 1, S); /* evicts the sample at t = 0 (t <= now - window) */
    fb_window_stats(&w, S, S, &st);
    assert_int_equal(st.count, 2);
    assert_true(st.min == 1 && st.max == 7);
    fb_window_add(&w, 10 * S, 3, S); /* all old ones gone */
    fb_window_stats(&w, 10 * S, S, &st);
    assert_int_equal(st.count, 1);
    assert_true(st.min == 3 && st.max == 3 && st.mean == 3);
    fb_window_stats(&w, 20 * S, S, &st);
    assert_int_equal(st.count, 0);
    fb_window_free(&w);
}

/* Tags with nothing configured take the pipeline's short path: it must do
 * what the full chain does for them — float64 conversion by type, NaN →
 * BadSensorFailure, ±Inf → BadOutOfRange, NE107 counters — and keep no
 * per-tag state beyond a byte. */
static void test_proc_plain(void **state)
{
    (void)state;
    struct fb_tag tags[3];
    memset(tags, 0, sizeof tags);
    for (uint32_t i = 0; i < 3; i++) {
        tags[i].id = i;
        tags[i].name = "x";
    }
    tags[0].type = FB_T_FLOAT64; /* gets NaN, Inf, then an int16 reading: converted */
    tags[1].type = FB_T_FLOAT32;
    tags[2].type = FB_T_INT16;
    uint32_t gtags[3] = {0, 1, 2};
    struct fb_group grp = {.period_ns = S, .ids = gtags, .ntags = 3};
    struct fb_device dev = {.idx = 0, .name = "d", .ntags = 3, .groups = &grp, .ngroups = 1};
    struct fb_gateway gw = {.id = "gw", .tags = tags, .ntags = 3, .devs = &dev, .ndevs = 1};
    struct fb_proc *p = fb_proc_new(&gw);
    assert_non_null(p);
    assert_true(fb_proc_bytes(p) < 256); /* flags only: no state for these */
    struct fb_batch *in = fb_batch_new(4, 0, 0), *out = fb_batch_new(4, 0, 0);
    struct fb_value v;
    const double f64[] = {NAN, INFINITY, 0, 2.5};
    const uint32_t want0[] = {FB_Q_BAD_SENSOR_FAILURE, FB_Q_BAD_OUT_OF_RANGE, FB_Q_GOOD, FB_Q_GOOD};
    for (int c = 0; c < 4; c++) {
        fb_batch_reset(in);
        fb_batch_reset(out);
        in->ts = (c + 1) * S;
        v = c == 2 ? (struct fb_value){.type = FB_T_INT16, .i = -7} : fv(f64[c]);
        fb_batch_add(in, 0, FB_Q_GOOD, 0, &v);
        v = (struct fb_value){.type = FB_T_FLOAT32, .f = c == 1 ? -INFINITY : 1.5};
        fb_batch_add(in, 1, FB_Q_GOOD, 0, &v);
        v = (struct fb_value){.type = FB_T_INT16, .i = c};
        fb_batch_add(in, 2, c == 3 ? FB_Q_BAD_COMM : FB_Q_GOOD, 0, &v);
        assert_int_equal(fb_proc_batch(p, in, out), 3);
        assert_int_equal(out->s[0].quality, want0[c]);
        assert_int_equal(out->s[0].v.type, FB_T_FLOAT64);
        if (c == 2) assert_true(out->s[0].v.f == -7.0);
        assert_false(out->s[0].flags & FB_SF_RAW); /* NaN/Inf: nothing to show as "raw" */
        assert_int_equal(out->s[1].quality, c == 1 ? FB_Q_BAD_OUT_OF_RANGE : FB_Q_GOOD);
        assert_int_equal(out->s[1].v.type, FB_T_FLOAT32);
        assert_int_equal(out->s[2].v.type, FB_T_INT16);
        assert_int_equal(out->s[2].v.i, c);
        assert_int_equal(out->s[2].ts_gw, in->ts);
        /* NE107: how many tags were last published Bad / out of range */
        uint32_t bad = atomic_load(&dev.m.tags_bad), oos = atomic_load(&dev.m.tags_out_of_spec);
        const uint32_t want_bad[] = {1, 2, 0, 1}, want_oos[] = {0, 2, 0, 0};
        assert_int_equal(bad, want_bad[c]);
        assert_int_equal(oos, want_oos[c]);
    }
    fb_batch_free(in);
    fb_batch_free(out);
    fb_proc_free(p);
}

/* The in-place path (groups without processing) gives what fb_proc_batch
 * gives, NE107 counters included. */
static void test_proc_inplace_matches(void **state)
{
    (void)state;
    struct fb_tag tags[2][3];
    struct fb_device dev[2];
    struct fb_gateway gw[2];
    struct fb_group grp[2];
    uint32_t gtags[3] = {0, 1, 2};
    struct fb_proc *p[2];
    for (int k = 0; k < 2; k++) {
        memset(tags[k], 0, sizeof tags[k]);
        for (uint32_t i = 0; i < 3; i++) {
            tags[k][i].id = i;
            tags[k][i].name = "x";
        }
        tags[k][0].type = FB_T_FLOAT64;
        tags[k][1].type = FB_T_STRING;
        tags[k][2].type = FB_T_INT16;
        grp[k] = (struct fb_group){.period_ns = S, .ids = gtags, .ntags = 3};
        dev[k] = (struct fb_device){.idx = 0, .name = "d", .ntags = 3, .groups = &grp[k], .ngroups = 1};
        gw[k] = (struct fb_gateway){.id = "gw", .tags = tags[k], .ntags = 3, .devs = &dev[k], .ndevs = 1};
        p[k] = fb_proc_new(&gw[k]);
        assert_non_null(p[k]);
        assert_true(fb_proc_plain(p[k], &grp[k]));
    }
    struct fb_batch *a = fb_batch_new(4, 0, 64), *b = fb_batch_new(4, 0, 64), *out = fb_batch_new(4, 0, 64);
    const double f[] = {1.5, NAN, INFINITY, -2};
    for (int c = 0; c < 4; c++) {
        struct fb_batch *in[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            fb_batch_reset(in[k]);
            in[k]->ts = (c + 10) * S;
            struct fb_value v = c == 3 ? (struct fb_value){.type = FB_T_INT32, .i = -2} : fv(f[c]);
            fb_batch_add(in[k], 0, FB_Q_GOOD, c * S, &v);
            v = (struct fb_value){.type = FB_T_STRING, .s = {"abc", (uint32_t)c}};
            fb_batch_add(in[k], 1, c == 2 ? FB_Q_BAD_TIMEOUT : FB_Q_GOOD, 0, &v);
            v = (struct fb_value){.type = FB_T_INT16, .i = c};
            fb_batch_add(in[k], 999, FB_Q_GOOD, 0, &v); /* not ours: dropped by both */
            fb_batch_add(in[k], 2, FB_Q_GOOD, 0, &v);
        }
        fb_batch_reset(out);
        uint32_t n = fb_proc_batch(p[0], a, out);
        assert_int_equal(fb_proc_inplace(p[1], b), n);
        assert_int_equal(b->n, out->n);
        for (uint32_t i = 0; i < n; i++) {
            const struct fb_sample *x = &out->s[i], *y = &b->s[i];
            assert_int_equal(x->tag, y->tag);
            assert_int_equal(x->quality, y->quality);
            assert_int_equal(x->flags, y->flags);
            assert_int_equal(x->ts_src, y->ts_src);
            assert_int_equal(x->ts_gw, y->ts_gw);
            assert_int_equal(x->v.type, y->v.type);
            if (x->v.type == FB_T_STRING)
                assert_memory_equal(x->v.s.p, y->v.s.p, x->v.s.len);
            else
                assert_memory_equal(&x->v.u, &y->v.u, sizeof x->v.u);
        }
        assert_int_equal(atomic_load(&dev[0].m.tags_bad), atomic_load(&dev[1].m.tags_bad));
        assert_int_equal(atomic_load(&dev[0].m.tags_out_of_spec), atomic_load(&dev[1].m.tags_out_of_spec));
    }
    fb_batch_free(a);
    fb_batch_free(b);
    fb_batch_free(out);
    fb_proc_free(p[0]);
    fb_proc_free(p[1]);
}

/* Pipeline state exists only for tags that need it: measured on the heap,
 * 10,000 tags of which 100 have a deadband and 10 a window. */
static void test_proc_state_only_where_needed(void **state)
{
    (void)state;
    enum { N = 10000 };
    struct fb_tag *tags = calloc(N, sizeof *tags);
    uint32_t *gtags = calloc(N, sizeof *gtags);
    assert_non_null(tags);
    assert_non_null(gtags);
    struct fb_tag_proc db = {.db_abs = 1}, win = {.window_ns = 10 * S};
    for (uint32_t i = 0; i < N; i++) {
        tags[i].id = i;
        tags[i].name = "x";
        tags[i].type = FB_T_INT16;
        if (i % 100 == 0) tags[i].proc = &db;
        if (i % 1000 == 1) tags[i].proc = &win;
        gtags[i] = i;
    }
    struct fb_group grp = {.period_ns = S, .ids = gtags, .ntags = N};
    struct fb_device dev = {.idx = 0, .name = "d", .ntags = N, .groups = &grp, .ngroups = 1};
    struct fb_gateway gw = {.id = "gw", .tags = tags, .ntags = N, .devs = &dev, .ndevs = 1};
    struct mallinfo2 m0 = mallinfo2();
    struct fb_proc *p = fb_proc_new(&gw);
    struct mallinfo2 m1 = mallinfo2();
    assert_non_null(p);
    size_t used = (m1.uordblks + m1.hblkhd) - (m0.uordblks + m0.hblkhd); /* heap and mmap blocks */
    /* a byte of flags per tag and two bits with their counts (the ranks, no
     * 4-byte slot: issue 15), 12 bytes per deadband, the windows (10 s at 1 s:
     * 16 samples) and their state; not ~150 bytes a tag */
    print_message("pipeline state for %d tags: %zu bytes (fb_proc_bytes %zu)\n", N, used, fb_proc_bytes(p));
    assert_true(used < (size_t)N * 2 + 100 * 40 + 10 * 1024 + 4096);
    fb_proc_free(p);
    free(tags);
    free(gtags);
}

/* Each tag with state finds its own (by its rank among the tags with that
 * kind of state), across 64-tag words and with both kinds mixed: 300 tags,
 * every third without state, every seventh with a window too; each gets its
 * own value, then a step inside and one outside the deadband. */
static void test_proc_state_per_tag(void **state)
{
    (void)state;
    enum { N = 300 };
    struct fb_tag *tags = calloc(N, sizeof *tags);
    uint32_t *gtags = calloc(N, sizeof *gtags);
    assert_non_null(tags);
    assert_non_null(gtags);
    static const struct fb_tag_proc db = {.db_abs = 1}, dbw = {.db_abs = 1, .window_ns = 10 * S};
    for (uint32_t i = 0; i < N; i++) {
        tags[i].id = i;
        tags[i].name = "x";
        tags[i].type = FB_T_FLOAT64;
        tags[i].proc = i % 3 == 0 ? NULL : i % 7 == 0 ? &dbw : &db;
        gtags[i] = i;
    }
    struct fb_group grp = {.period_ns = S, .ids = gtags, .ntags = N};
    struct fb_device dev = {.idx = 0, .name = "d", .ntags = N, .groups = &grp, .ngroups = 1};
    struct fb_gateway gw = {.id = "gw", .tags = tags, .ntags = N, .devs = &dev, .ndevs = 1};
    struct fb_proc *p = fb_proc_new(&gw);
    assert_non_null(p);
    struct fb_batch *in = fb_batch_new(N, 0, 256), *out = fb_batch_new(N, N, 256);
    assert_non_null(in);
    assert_non_null(out);
    static const double step[3] = {0, 0.5, 2.5}; /* first value, inside, outside the deadband */
    for (int cycle = 0; cycle < 3; cycle++) {
        int64_t now = 1700000000 * S + cycle * S;
        fb_batch_reset(in);
        fb_batch_reset(out);
        in->device = 0;
        in->ts = now;
        for (uint32_t i = 0; i < N; i++) {
            struct fb_value v = fv(10.0 * i + step[cycle]);
            assert_non_null(fb_batch_add(in, i, FB_Q_GOOD, now, &v));
        }
        fb_proc_batch(p, in, out);
        bool seen[N] = {0};
        for (uint32_t k = 0; k < out->n; k++) {
            assert_true(out->s[k].tag < N);
            seen[out->s[k].tag] = true;
            close_to(out->s[k].v.f, 10.0 * out->s[k].tag + step[cycle], 1e-12);
        }
        for (uint32_t i = 0; i < N; i++) {
            if (seen[i] != (cycle != 1 || i % 3 == 0)) fail_msg("cycle %d: tag %u published: %d", cycle, i, seen[i]);
        }
    }
    fb_batch_free(in);
    fb_batch_free(out);
    fb_proc_free(p);
    free(tags);
    free(gtags);
}

/* ------------------------------------------------------- the whole chain */
enum { T_SCALED, T_DB_WIN, T_STR, T_BOOL, T_RATE, NT };

static void test_proc_batch(void **state)
{
    (void)state;
    static char *names[NT] = {"raw", "temp", "state", "on", "level"};
    struct fb_tag tags[NT];
    memset(tags, 0, sizeof tags);
    for (uint32_t i = 0; i < NT; i++) {
        tags[i].id = i;
        tags[i].device = 0;
        tags[i].name = names[i];
    }
    tags[T_SCALED].type = FB_T_INT16;
    static const struct fb_tag_proc scaled = {
        .scaled = true, .k = 0.1, .d = 0, .has_min = true, .has_max = true, .min = 0, .max = 100};
    static const struct fb_tag_proc db_win = {.db_abs = 1, .heartbeat_ns = 10 * S, .window_ns = 5 * S};
    static const struct fb_tag_proc rate = {.max_rate = 1};
    tags[T_SCALED].proc = &scaled;
    tags[T_DB_WIN].type = FB_T_FLOAT64;
    tags[T_DB_WIN].proc = &db_win;
    tags[T_STR].type = FB_T_STRING;
    tags[T_BOOL].type = FB_T_BOOL;
    tags[T_RATE].type = FB_T_FLOAT32;
    tags[T_RATE].proc = &rate;
    uint32_t gtags[NT] = {0, 1, 2, 3, 4};
    struct fb_group grp = {.period_ns = S, .ids = gtags, .ntags = NT};
    struct fb_device dev = {.idx = 0, .name = "press-01", .first_tag = 0, .ntags = NT, .groups = &grp, .ngroups = 1};
    struct fb_gateway gw = {.id = "gw", .site = "site", .tags = tags, .ntags = NT, .devs = &dev, .ndevs = 1};

    struct fb_proc *p = fb_proc_new(&gw);
    assert_non_null(p);
    struct fb_batch *in = fb_batch_new(16, 0, 256), *out = fb_batch_new(16, 16, 256);
    assert_non_null(in);
    assert_non_null(out);
    struct fb_value v;
    char sbuf[8];

    for (int cycle = 0; cycle < 18; cycle++) {
        int64_t now = 1700000000 * S + cycle * S;
        fb_batch_reset(in);
        fb_batch_reset(out);
        in->device = 0;
        in->ts = now;
        v = (struct fb_value){.type = FB_T_INT16, .i = cycle == 3 ? 1001 : 215}; /* 21.5, once 100.1 */
        assert_non_null(fb_batch_add(in, T_SCALED, FB_Q_GOOD, now - 5 * MS, &v));
        v = fv(cycle < 4 ? 20.0 + cycle * 0.3 : 30.0); /* within deadband for 3 cycles, then a jump */
        assert_non_null(fb_batch_add(in, T_DB_WIN, cycle == 6 ? FB_Q_BAD_COMM : FB_Q_GOOD, now - 5 * MS, &v));
        memcpy(sbuf, cycle < 2 ? "idle" : "run!", 4);
        v = (struct fb_value){.type = FB_T_STRING, .s = {sbuf, 4}};
        assert_non_null(fb_batch_add(in, T_STR, FB_Q_GOOD, now - 5 * MS, &v));
        v = (struct fb_value){.type = FB_T_BOOL, .b = cycle % 2};
        assert_non_null(fb_batch_add(in, T_BOOL, FB_Q_GOOD, now - 5 * MS, &v));
        v = (struct fb_value){.type = FB_T_FLOAT32, .f = cycle == 5 ? 50.0 : 1.0 + cycle * 0.5};
        assert_non_null(fb_batch_add(in, T_RATE, FB_Q_GOOD, now - 5 * MS, &v));
        v = fv(1);
        assert_non_null(fb_batch_add(in, 999, FB_Q_GOOD, now, &v)); /* unknown tag: ignored */

        uint32_t n = fb_proc_batch(p, in, out);
        assert_int_equal(n, out->n);
        assert_int_equal(out->device, 0);
        assert_int_equal(out->ts, now);
        bool seen[NT] = {0};
        for (uint32_t i = 0; i < out->n; i++) {
            const struct fb_sample *s = &out->s[i];
            assert_true(s->tag < NT);
            seen[s->tag] = true;
            assert_int_equal(s->ts_gw, now);
            assert_int_equal(s->ts_src, now - 5 * MS);
            switch (s->tag) {
                case T_SCALED:
                    assert_int_equal(s->v.type, FB_T_FLOAT64);
                    if (cycle == 3) {
                        assert_int_equal(s->quality, FB_Q_BAD_OUT_OF_RANGE);
                        /* refused by range: the reading stays, flagged for "raw" */
                        assert_true(s->flags & FB_SF_RAW);
                        assert_true(fabs(s->v.f - 100.1) < 1e-12);
                    } else {
                        assert_false(s->flags & FB_SF_RAW);
                        assert_int_equal(s->quality, FB_Q_GOOD);
                        assert_true(fabs(s->v.f - 21.5) < 1e-12);
                    }
                    assert_false(s->flags & FB_SF_STATS);
                    break;
                case T_DB_WIN: {
                    assert_true(s->flags & FB_SF_STATS);
                    assert_true(s->stats < out->nstats);
                    const struct fb_stats *st = &out->stats[s->stats];
                    assert_int_equal(st->window_ns, 5 * S);
                    assert_true(st->count >= 1 && st->count <= 5);
                    assert_true(st->min <= st->mean && st->mean <= st->max);
                    if (cycle == 4) { /* window holds cycles 0..4: 20, 20.3, 20.6, 20.9, 30 */
                        assert_int_equal(st->count, 5);
                        assert_true(st->min == 20.0 && st->max == 30.0);
                        close_to(st->mean, (20 + 20.3 + 20.6 + 20.9 + 30) / 5, 1e-12);
                    }
                    if (cycle == 6) {
                        assert_int_equal(s->quality, FB_Q_BAD_COMM);
                        assert_false(s->flags & FB_SF_RAW); /* the device said bad: no raw reading */
                    }
                    if (cycle == 7) assert_int_equal(st->count, 4); /* the bad sample was not added */
                    break;
                }
                case T_STR:
                    assert_int_equal(s->v.type, FB_T_STRING);
                    assert_int_equal(s->v.s.len, 4);
                    assert_ptr_not_equal(s->v.s.p, sbuf); /* copied into out's arena */
                    assert_memory_equal(s->v.s.p, cycle < 2 ? "idle" : "run!", 4);
                    break;
                case T_BOOL:
                    assert_int_equal(s->v.type, FB_T_BOOL);
                    assert_int_equal(s->v.b, cycle % 2);
                    break;
                case T_RATE:
                    assert_int_equal(s->v.type, FB_T_FLOAT32);
                    assert_int_equal(s->quality, cycle == 5 ? FB_Q_BAD_SENSOR_FAILURE : FB_Q_GOOD);
                    assert_int_equal(!!(s->flags & FB_SF_RAW), cycle == 5);
                    break;
            }
        }
        /* which tags were published when */
        assert_true(seen[T_SCALED] && seen[T_BOOL] && seen[T_RATE]); /* no deadband */
        assert_true(seen[T_STR]);                                    /* no deadband */
        bool want_db = cycle == 0 || cycle == 4 || cycle == 6 || cycle == 7 ||
                       cycle == 17; /* first, jump, bad, recovered, heartbeat 10 s later */
        if (seen[T_DB_WIN] != want_db) fail_msg("cycle %d: deadband tag published=%d", cycle, seen[T_DB_WIN]);
        if (cycle == 17) {
            for (uint32_t i = 0; i < out->n; i++)
                if (out->s[i].tag == T_DB_WIN) assert_true(out->s[i].flags & FB_SF_HEARTBEAT);
        }
    }
    /* a device-state batch yields nothing */
    fb_batch_reset(in);
    fb_batch_reset(out);
    in->kind = FB_BATCH_DEVSTATE;
    assert_int_equal(fb_proc_batch(p, in, out), 0);
    fb_batch_free(in);
    fb_batch_free(out);
    fb_proc_free(p);
}

/* Latest-value slots (control loops' inputs): every sample, after scaling
 * and plausibility, before the deadband; only for the tags asked for. */
static void test_latest_slots(void **state)
{
    (void)state;
    struct fb_tag tags[2];
    memset(tags, 0, sizeof tags);
    static char *names[2] = {"a", "b"};
    for (uint32_t i = 0; i < 2; i++) {
        tags[i].id = i;
        tags[i].name = names[i];
        tags[i].type = FB_T_INT16;
    }
    /* a: scaled, range 0..50, deadband 5: most samples are not published */
    static const struct fb_tag_proc pa = {
        .scaled = true, .k = 0.5, .has_min = true, .has_max = true, .min = 0, .max = 50, .db_abs = 5};
    tags[0].proc = &pa; /* b: no processing (the pipeline's short path) */
    uint32_t gt[2] = {0, 1};
    struct fb_group grp = {.period_ns = S, .ids = gt, .ntags = 2};
    struct fb_device dev = {.name = "d", .ntags = 2, .groups = &grp, .ngroups = 1};
    struct fb_gateway gw = {.tags = tags, .ntags = 2, .devs = &dev, .ndevs = 1};
    struct fb_proc *p = fb_proc_new(&gw);
    assert_non_null(p);
    const struct fb_latest *la = fb_proc_latest(p, 0);
    assert_non_null(la);
    assert_ptr_equal(fb_proc_latest(p, 0), la); /* one slot per tag */
    const struct fb_latest *lb = fb_proc_latest(p, 1);
    assert_non_null(lb);
    assert_null(fb_proc_latest(p, 7));
    struct fb_latest_val v;
    fb_latest_get(la, &v);
    assert_int_equal(v.mono_ns, 0); /* no value yet */
    struct fb_batch *in = fb_batch_new(4, 0, 0), *out = fb_batch_new(4, 0, 0);
    static const int16_t raw[] = {40, 42, 44, 200, 46};
    for (int i = 0; i < 5; i++) {
        fb_batch_reset(in);
        fb_batch_reset(out);
        in->ts = 1700000000 * S + i * S;
        struct fb_value x = {.type = FB_T_INT16, .i = raw[i]};
        fb_batch_add(in, 0, FB_Q_GOOD, 0, &x);
        fb_batch_add(in, 1, FB_Q_GOOD, 0, &x);
        int64_t before = fb_mono_ns();
        fb_proc_batch(p, in, out);
        fb_latest_get(la, &v);
        assert_int_equal(v.updates, i + 1);
        assert_true(v.mono_ns >= before && v.mono_ns <= fb_mono_ns());
        assert_true(fabs(v.v - raw[i] * 0.5) < 1e-12);
        /* 200 → 100 is outside 0..50: the slot says BadOutOfRange like the published sample */
        assert_int_equal(v.q, raw[i] == 200 ? FB_Q_BAD_OUT_OF_RANGE : FB_Q_GOOD);
        fb_latest_get(lb, &v); /* b: its raw value, through the short path */
        assert_int_equal(v.updates, i + 1);
        assert_true(v.v == raw[i] && v.q == FB_Q_GOOD);
    }
    /* a group processed in place (no tag has processing) updates b's slot too */
    struct fb_group plain = {.period_ns = S, .ids = &gt[1], .ntags = 1};
    assert_true(fb_proc_plain(p, &plain));
    fb_batch_reset(in);
    in->ts = 1700000100 * S;
    struct fb_value y = {.type = FB_T_INT16, .i = 7};
    fb_batch_add(in, 1, FB_Q_GOOD, 0, &y);
    fb_proc_inplace(p, in);
    fb_latest_get(lb, &v);
    assert_int_equal(v.updates, 6);
    assert_true(v.v == 7 && v.q == FB_Q_GOOD);
    fb_batch_free(in);
    fb_batch_free(out);
    fb_proc_free(p);
}

/* A config reload (core/reload.c) carries a tag's state to its id in the new
 * chain when its settings are equal: the deadband's last value (fb_last) and
 * the NE107 class of its last published quality (in the flags), which the
 * device's counters are recounted from; the old chain gets the new one's
 * fresh state in exchange. */
static void test_proc_move(void **state)
{
    (void)state;
    static const struct fb_tag_proc db = {.db_abs = 1.0};
    struct fb_tag ot[2], nt[2];
    memset(ot, 0, sizeof ot);
    memset(nt, 0, sizeof nt);
    /* old: 0 = deadband "a", 1 = plain "b"; new: the same two, in the other order */
    ot[0] = (struct fb_tag){.id = 0, .name = "a", .type = FB_T_FLOAT64, .proc = &db};
    ot[1] = (struct fb_tag){.id = 1, .name = "b", .type = FB_T_INT16};
    nt[0] = (struct fb_tag){.id = 0, .name = "b", .type = FB_T_INT16};
    nt[1] = (struct fb_tag){.id = 1, .name = "a", .type = FB_T_FLOAT64, .proc = &db};
    uint32_t og[2] = {0, 1}, ng[2] = {0, 1};
    struct fb_group ogrp = {.period_ns = S, .ids = og, .ntags = 2}, ngrp = {.period_ns = S, .ids = ng, .ntags = 2};
    struct fb_device od = {.idx = 0, .name = "d", .ntags = 2, .groups = &ogrp, .ngroups = 1};
    struct fb_device nd = {.idx = 0, .name = "d", .ntags = 2, .groups = &ngrp, .ngroups = 1};
    struct fb_gateway ogw = {.id = "gw", .tags = ot, .ntags = 2, .devs = &od, .ndevs = 1};
    struct fb_gateway ngw = {.id = "gw", .tags = nt, .ntags = 2, .devs = &nd, .ndevs = 1};
    struct fb_proc *op = fb_proc_new(&ogw), *np = fb_proc_new(&ngw);
    assert_non_null(op);
    assert_non_null(np);
    struct fb_batch *in = fb_batch_new(4, 0, 0), *out = fb_batch_new(4, 0, 0);
    struct fb_value v = fv(10.0), bv = {.type = FB_T_INT16, .i = 1};
    in->ts = S;
    fb_batch_add(in, 0, FB_Q_GOOD, 0, &v);
    fb_batch_add(in, 1, FB_Q_BAD_COMM, 0, &bv);
    assert_int_equal(fb_proc_batch(op, in, out), 2);
    uint32_t oos, bad;
    fb_proc_quality_counts(op, 0, 2, &oos, &bad);
    assert_int_equal(bad, 1);
    fb_proc_move(np, 1, op, 0); /* "a" */
    fb_proc_move(np, 0, op, 1); /* "b" */
    fb_proc_quality_counts(np, 0, 2, &oos, &bad);
    assert_int_equal(bad, 1); /* "b" was last published Bad */
    assert_int_equal(oos, 0);
    fb_proc_quality_counts(op, 0, 2, &oos, &bad);
    assert_int_equal(bad, 0);
    /* 10.5 is inside the deadband of the 10 that "a" last published: the new chain knows it */
    v = fv(10.5);
    fb_batch_reset(in);
    fb_batch_reset(out);
    in->ts = 2 * S;
    fb_batch_add(in, 1, FB_Q_GOOD, 0, &v);
    assert_int_equal(fb_proc_batch(np, in, out), 0);
    /* the old chain has the new one's fresh state now: its first value passes */
    fb_batch_reset(in);
    fb_batch_reset(out);
    in->ts = 2 * S;
    fb_batch_add(in, 0, FB_Q_GOOD, 0, &v);
    assert_int_equal(fb_proc_batch(op, in, out), 1);
    fb_batch_free(in);
    fb_batch_free(out);
    fb_proc_free(op);
    fb_proc_free(np);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_scale_decimal),
        cmocka_unit_test(test_plausibility_range),
        cmocka_unit_test(test_plausibility_rate),
        cmocka_unit_test(test_plausibility_stuck),
        cmocka_unit_test(test_plausibility_step_accept),
        cmocka_unit_test(test_deadband_abs),
        cmocka_unit_test(test_deadband_pct_heartbeat),
        cmocka_unit_test(test_deadband_other_types),
        cmocka_unit_test(test_window_random),
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_proc_batch),
        cmocka_unit_test(test_proc_plain),
        cmocka_unit_test(test_proc_inplace_matches),
        cmocka_unit_test(test_proc_state_only_where_needed),
        cmocka_unit_test(test_proc_state_per_tag),
        cmocka_unit_test(test_latest_slots),
        cmocka_unit_test(test_proc_move),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
