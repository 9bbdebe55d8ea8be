/* test_vib.c — vibration monitoring above the DSP: waveform blocks and their
 * references in batches; the baseline's learning (exact mean and variance),
 * the z-score alarm's hysteresis and minimum duration, the trend; the ISO
 * zone alarms exactly at their limits and with the deadband; the motor
 * model (orders, defect lines in the envelope at BPFO/BPFI, growth,
 * continuity across blocks); and detection with the gateway's own feature
 * code on the simulator's motor: a healthy motor for 24 hours of blocks
 * raises nothing, an outer-race defect is reported within 10 blocks of its
 * onset.  The channel settings come from a YAML config through the loader. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/batch.h"
#include "core/block.h"
#include "core/config.h"
#include "south/sim/sim_gen.h"
#include "vib/anomaly.h"
#include "vib/dsp.h"
#include "vib/features.h"
#include "vib/vib_cfg.h"

/* ------------------------------------------------------------ blocks */
static void test_block_refs(void **st)
{
    (void)st;
    struct fb_block_pool *p = fb_block_pool_new(2, 1024);
    assert_non_null(p);
    struct fb_block *a = fb_block_pool_tryget(p), *b = fb_block_pool_tryget(p);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(fb_block_pool_tryget(p)); /* both in use: none, and no waiting */
    assert_int_equal(fb_block_pool_in_use(p), 2);
    /* a batch holds its own reference: the driver's unref does not free the block */
    struct fb_batch *raw = fb_batch_new(4, 0, 0);
    struct fb_value v = {.type = FB_T_BLOCK, .blk = a};
    assert_non_null(fb_batch_add(raw, 0, FB_Q_GOOD, 1, &v));
    fb_block_unref(a);
    assert_int_equal(fb_block_pool_in_use(p), 2);
    /* another holder (the analysis' queue) */
    fb_block_ref(a);
    fb_batch_reset(raw); /* the batch lets go */
    assert_int_equal(fb_block_pool_in_use(p), 2);
    assert_int_equal(raw->blocks, 0);
    fb_block_unref(a); /* the last one: back to the pool */
    assert_int_equal(fb_block_pool_in_use(p), 1);
    /* a pooled batch returns its blocks when its last reference goes */
    struct fb_batch_pool *bp = fb_batch_pool_new(1, 4, 0, 0);
    struct fb_batch *pb = fb_batch_pool_get(bp);
    v.blk = b;
    fb_batch_add(pb, 0, FB_Q_GOOD, 1, &v);
    fb_block_unref(b);
    assert_int_equal(fb_block_pool_in_use(p), 1);
    fb_batch_unref(pb);
    assert_int_equal(fb_block_pool_in_use(p), 0);
    fb_batch_pool_free(bp);
    fb_batch_free(raw);
    fb_block_pool_free(p);
}

/* ----------------------------------------------------------- anomaly */
static void test_anomaly_learning(void **st)
{
    (void)st;
    struct fb_anom_cfg cfg = {.learn_blocks = 5, .z_on = 4, .z_off = 3, .min_blocks = 2, .min_sigma = 0};
    struct fb_anom a;
    assert_int_equal(fb_anom_init(&a, &cfg, 2), 0);
    const double x[5] = {1, 2, 4, 7, 11}, y[5] = {10, 10, 10, 10, 10};
    struct fb_anom_out o;
    for (int i = 0; i < 5; i++) {
        double v[2] = {x[i], y[i]};
        fb_anom_update(&a, v, &o);
        assert_true(o.learning);
        assert_int_equal(o.z_event, 0);
    }
    /* mean 5, sample variance ((16+9+1+4+36)/4) = 16.5 */
    assert_true(fabs(a.base[0].mean - 5.0) < 1e-12);
    assert_true(fabs(fb_anom_sigma(&a, 0) - sqrt(16.5)) < 1e-12);
    /* a feature that never moved: any change is an anomaly (σ floor 1e-12) */
    assert_true(fb_anom_sigma(&a, 1) <= 1e-12);
    /* with the relative floor: σ >= 5 % of the mean */
    cfg.min_sigma = 0.05;
    assert_true(fabs(fb_anom_sigma(&a, 1) - 0.5) < 1e-12);
    /* frozen: a block after learning does not move the baseline */
    double v[2] = {100, 10};
    fb_anom_update(&a, v, &o);
    assert_false(o.learning);
    assert_true(fabs(a.base[0].mean - 5.0) < 1e-12);
    assert_true(fabs(o.zmax - 95.0 / sqrt(16.5)) < 1e-9);
    assert_int_equal(o.zfeat, 0);
    /* NaN values are left out */
    fb_anom_reset(&a);
    for (int i = 0; i < 5; i++) {
        double w[2] = {i == 2 ? NAN : x[i], y[i]};
        fb_anom_update(&a, w, &o);
    }
    assert_true(a.base[0].n == 4 && a.base[1].n == 5);
    fb_anom_free(&a);
}

static void test_anomaly_hysteresis(void **st)
{
    (void)st;
    /* σ = 1 around 0: z is the value itself; raise at 4 for 3 blocks, clear below 2 for 3 blocks */
    struct fb_anom_cfg cfg = {.learn_blocks = 2, .z_on = 4, .z_off = 2, .min_blocks = 3};
    struct fb_anom a;
    assert_int_equal(fb_anom_init(&a, &cfg, 1), 0);
    struct fb_anom_out o;
    double l1 = -M_SQRT1_2, l2 = M_SQRT1_2; /* mean 0, sample σ 1 */
    fb_anom_update(&a, &l1, &o);
    fb_anom_update(&a, &l2, &o);
    assert_true(fabs(fb_anom_sigma(&a, 0) - 1) < 1e-12);
    const double z[] = {5, 5, 1, 5, 5, 5, 3, 1, 1, 3, 1, 1, 1, 4, 4, 4};
    const int want[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, -1, 0, 0, 1};
    /* 5 5 then 1: the run breaks; 5 5 5: raised on the third; 3 is between z_clear and z: the
     * alarm stays; 1 1 then 3: the clearing run breaks; 1 1 1: cleared on the third; 4 4 4: raised
     * (exactly z counts) */
    for (size_t i = 0; i < sizeof z / sizeof z[0]; i++) {
        fb_anom_update(&a, &z[i], &o);
        if (o.z_event != want[i]) fprintf(stderr, "block %zu: z %g → event %d, want %d\n", i, z[i], o.z_event, want[i]);
        assert_int_equal(o.z_event, want[i]);
    }
    assert_true(a.z_active);
    fb_anom_free(&a);
}

static void test_anomaly_trend(void **st)
{
    (void)st;
    /* window 64 blocks = 32 buckets of 2; a feature of level 10 (σ 0.5 with the 5 % floor)
     * rising by 1 % of its level per block: across the window's buckets (31 × 2 blocks) it rises
     * 6.2, less 2σ = 1.0 is 5.2, 52 % of its level: over the 25 % limit.  Flat: no trend. */
    struct fb_anom_cfg cfg = {.learn_blocks = 4,
                              .z_on = 1e9,
                              .z_off = 1e9,
                              .min_blocks = 2,
                              .min_sigma = 0.05,
                              .trend_blocks = 64,
                              .trend_limit = 0.25};
    struct fb_anom a;
    assert_int_equal(fb_anom_init(&a, &cfg, 2), 0);
    struct fb_anom_out o;
    for (int i = 0; i < 4; i++) {
        double v[2] = {10.0 + (i % 2 ? 0.01 : -0.01), 5};
        fb_anom_update(&a, v, &o);
    }
    int raised_at = -1;
    double last = NAN;
    for (int i = 0; i < 200; i++) {
        double v[2] = {10.0 * (1 + 0.01 * i), 5 + (i % 2 ? 0.01 : -0.01)};
        fb_anom_update(&a, v, &o);
        if (o.t_event == 1 && raised_at < 0) raised_at = i;
        if (!isnan(o.trend)) last = o.trend;
        if (o.t_event) assert_int_equal(o.tfeat, 0);
    }
    assert_true(raised_at >= 0);
    assert_true(fabs(last - 0.52) < 1e-9);
    /* no trend before 8 buckets, and the rise must exceed 2σ + 25 %: 19 buckets, 38 blocks */
    assert_true(raised_at >= 37 && raised_at <= 40);
    fb_anom_free(&a);
}

static void test_iso_alarms(void **st)
{
    (void)st;
    const double g2r[3] = {1.4, 2.8, 4.5};
    bool c = false, d = false;
    assert_false(fb_vib_iso_alarms(g2r, 0.05, nextafter(2.8, 0), &c, &d));
    assert_true(fb_vib_iso_alarms(g2r, 0.05, 2.8, &c, &d)); /* exactly the B/C limit: zone C */
    assert_true(c && !d);
    /* inside the deadband (2.66 .. 2.8) it stays */
    assert_false(fb_vib_iso_alarms(g2r, 0.05, 2.7, &c, &d));
    assert_false(fb_vib_iso_alarms(g2r, 0.05, 2.8 * 0.95, &c, &d));
    assert_true(c);
    assert_true(fb_vib_iso_alarms(g2r, 0.05, nextafter(2.8 * 0.95, 0), &c, &d));
    assert_false(c);
    assert_true(fb_vib_iso_alarms(g2r, 0.05, 4.5, &c, &d)); /* exactly C/D: both */
    assert_true(c && d);
    assert_true(fb_vib_iso_alarms(g2r, 0.05, 3.0, &c, &d)); /* below 4.275: D clears, C stays */
    assert_true(c && !d);
}

/* ------------------------------------------------------------- motor */
static void motor(const char *spec, struct fb_sim_gen *g)
{
    struct fb_err e = {0};
    int rc = fb_sim_gen_parse(spec, g, &e);
    if (rc) fprintf(stderr, "%s: %s\n", spec, e.msg);
    assert_int_equal(rc, 0);
    fb_sim_gen_seed(g, 7, 0);
}

static void test_motor(void **st)
{
    (void)st;
    const uint32_t n = 25600;
    const double fs = 25600;
    float *x = malloc(n * sizeof *x), *y = malloc(2 * n * sizeof *y);
    struct fb_sim_gen g;
    /* healthy, no noise: the 1× and 2× lines carry the unbalance and misalignment amplitudes */
    motor("motor:rpm=1500,unbalance=0.4,misalign=0.1,noise=0", &g);
    fb_motor_block(&g.motor, x, n, fs, 0);
    struct fb_dsp *d = fb_dsp_new(n, fb_dsp_env_size(n, fs, 2000, 6000));
    fb_dsp_spectrum(d, x, 1, 0, 0, fs);
    assert_true(fabs(fb_dsp_line(d, 25.0, 0.01) - 0.4) < 0.004);
    assert_true(fabs(fb_dsp_line(d, 50.0, 0.01) - 0.1) < 0.002);
    assert_true(fb_dsp_band_rms(d, 2000, 6000) < 1e-3);
    fb_sim_gen_free(&g);
    /* the same signal in one block of 2n as in two blocks of n: continuous, impacts included */
    motor("motor:outer=5,onset=0,growth=0", &g);
    fb_motor_block(&g.motor, y, 2 * n, fs, 100);
    fb_sim_gen_seed(&g, 7, 0);
    fb_motor_block(&g.motor, x, n, fs, 100);
    for (uint32_t i = 0; i < n; i++) assert_true(fabs(x[i] - y[i]) < 1e-4);
    fb_motor_block(&g.motor, x, n, fs, 100);
    for (uint32_t i = 0; i < n; i++) assert_true(fabs(x[i] - y[n + i]) < 1e-4);
    fb_sim_gen_free(&g);
    /* growth: absent before the onset, linear to full over growth */
    motor("motor:outer=5,onset=2h,growth=4h", &g);
    assert_true(fb_motor_severity(&g.motor, 7199) == 0);
    assert_true(fabs(fb_motor_severity(&g.motor, 7200 + 3600) - 0.25) < 1e-12);
    assert_true(fb_motor_severity(&g.motor, 1e6) == 1);
    fb_sim_gen_free(&g);
    /* an outer-race defect: the envelope spectrum has its line at BPFO (6205-size, 1480 rpm:
     * 88.42 Hz), an inner-race defect at BPFI (133.6 Hz) with sidebands at ±1× */
    struct fb_bearing b = {9, 7.94, 39.04, 0};
    double o[FB_BEARING__COUNT];
    fb_bearing_orders(&b, o);
    double fr = 1480 / 60.0;
    const char *specs[2] = {"motor:outer=3,onset=0,growth=0", "motor:inner=3,onset=0,growth=0"};
    for (int k = 0; k < 2; k++) {
        motor(specs[k], &g);
        fb_motor_block(&g.motor, x, n, fs, 0);
        struct fb_dsp_stats s;
        fb_dsp_stats(x, n, 1, 0, &s);
        assert_true(s.kurtosis > 4); /* impacts: peaky */
        fb_dsp_spectrum(d, x, 1, 0, s.mean, fs);
        assert_int_equal(fb_dsp_envelope(d, 2000, 6000), 0);
        double bpfo = fb_dsp_env_line(d, o[FB_BPFO] * fr, 0.02), bpfi = fb_dsp_env_line(d, o[FB_BPFI] * fr, 0.02);
        if (k == 0) assert_true(bpfo > 10 * bpfi);
        if (k == 1) {
            assert_true(bpfi > 10 * bpfo);
            assert_true(fb_dsp_env_line(d, o[FB_BPFI] * fr - fr, 0.01) > 0.2 * bpfi); /* the 1× sideband */
        }
        fb_sim_gen_free(&g);
    }
    /* errors */
    struct fb_err e = {0};
    assert_int_equal(fb_sim_gen_parse("motor:pitch_d=5,ball_d=7", &g, &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "pitch_diameter"));
    assert_int_equal(fb_sim_gen_parse("motor:spike=0.1", &g, &e), FB_EINVAL); /* faults are per value */
    assert_int_equal(fb_sim_gen_parse("motor:damping=1", &g, &e), FB_EINVAL);
    fb_dsp_free(d);
    free(x);
    free(y);
}

/* --------------------------------------------------------- detection */
static char tmpdir[256];

static struct fb_gateway *load_yaml(const char *yaml)
{
    char path[512];
    snprintf(path, sizeof path, "%s/vib.yaml", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(yaml, f);
    fclose(f);
    char *diag = NULL;
    size_t len;
    FILE *df = open_memstream(&diag, &len);
    struct fb_config_opts opt = {false, df};
    struct fb_gateway *gw = NULL;
    int rc = fb_config_load(path, &opt, &gw);
    fclose(df);
    if (rc) fprintf(stderr, "%s", diag);
    free(diag);
    assert_int_equal(rc, 0);
    return gw;
}

/* A conveyor motor, one block of 1 s every minute of operation (a usual
 * condition-monitoring cadence), the anomaly baseline learnt over the first
 * hour.  Runs `blocks` blocks; returns the block of the first anomaly alarm
 * (-1: none), and counts every alarm transition (anomaly, trend, ISO). */
static int run_motor(const char *addr, int blocks, int *transitions)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "gateway: {id: t}\n"
             "devices:\n"
             "  - name: conveyor\n"
             "    url: \"sim://c?seed=11\"\n"
             "    poll: 60s\n"
             "    tags:\n"
             "      - name: accel\n"
             "        addr: \"%s\"\n"
             "        vibration:\n"
             "          fs: 25600\n"
             "          speed: 1480rpm\n"
             "          bands: {low: [10, 1000], high: [1000, 12000]}\n"
             "          bearing: {balls: 9, ball_diameter: 7.94, pitch_diameter: 39.04}\n"
             "          envelope: {band: [2000, 6000]}\n"
             "          iso: {group: 2, mounting: rigid}\n"
             "          anomaly: {learn: 1h, trend: {window: 6h, limit: 25%%}}\n",
             addr);
    struct fb_gateway *gw = load_yaml(yaml);
    assert_non_null(gw->vib);
    assert_int_equal(gw->vib->nch, 1);
    const struct fb_vib_chan *c = &gw->vib->ch[0];
    assert_int_equal(c->acfg.learn_blocks, 60);
    assert_int_equal(c->acfg.trend_blocks, 360);
    struct fb_sim_gen g;
    motor(addr, &g);
    struct fb_dsp *d = fb_dsp_new(c->n, c->env_m);
    struct fb_anom a;
    assert_int_equal(fb_anom_init(&a, &c->acfg, c->nmon), 0);
    float *x = malloc(c->n * sizeof *x);
    double vals[FB_VIB_MAX_OUT], mv[FB_VIB_MAX_OUT];
    uint32_t q[FB_VIB_MAX_OUT];
    bool iso_c = false, iso_d = false;
    int first = -1;
    *transitions = 0;
    for (int b = 0; b < blocks; b++) {
        double t_op = b * 60.0;
        fb_motor_block(&g.motor, x, c->n, c->fs, t_op);
        double vel = fb_vib_features(c, d, x, 1, 0, NAN, FB_Q_GOOD, vals, q);
        for (uint32_t i = 0; i < c->nout; i++)
            if (c->out[i].kind < FB_VO_ANOM) assert_false(fb_q_bad(q[i]));
        for (uint32_t m = 0; m < c->nmon; m++) mv[m] = vals[c->mon[m]];
        struct fb_anom_out o;
        fb_anom_update(&a, mv, &o);
        if (o.z_event || o.t_event) {
            (*transitions)++;
            fprintf(stderr, "  block %d (%.2f h): %s %s (%s, z %.1f, trend %.2f)\n", b, t_op / 3600,
                    o.z_event ? "anomaly" : "trend", (o.z_event ? o.z_event : o.t_event) > 0 ? "raised" : "cleared",
                    gw->tags[fb_tag_wave(gw, &gw->tags[c->tag])->first_feature + c->mon[o.z_event ? o.zfeat : o.tfeat]].name, o.zmax,
                    o.trend);
        }
        if (o.z_event > 0 && first < 0) first = b;
        if (fb_vib_iso_alarms(c->iso_limits, c->iso_deadband, vel, &iso_c, &iso_d)) (*transitions)++;
    }
    free(x);
    fb_anom_free(&a);
    fb_dsp_free(d);
    fb_sim_gen_free(&g);
    fb_gateway_free(gw);
    return first;
}

static void test_healthy_day(void **st)
{
    (void)st;
    /* 24 h of a healthy motor (1440 blocks): not one alarm transition */
    int tr;
    int first = run_motor("motor:rpm=1480", 24 * 60, &tr);
    assert_int_equal(first, -1);
    assert_int_equal(tr, 0);
}

static void test_defect_detected(void **st)
{
    (void)st;
    /* an outer-race defect appears after 2 h of operation and grows to impacts of 20 m/s² over
     * 6 h: the anomaly alarm comes within 10 blocks (10 minutes) of the onset */
    int tr;
    int first = run_motor("motor:rpm=1480,outer=20,onset=2h,growth=6h", 2 * 60 + 60, &tr);
    fprintf(stderr, "  defect onset at block 120, anomaly alarm at block %d\n", first);
    assert_true(first > 120);
    assert_true(first <= 130);
}

static int setup(void **st)
{
    (void)st;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fb-test-vib-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    char p[600];
    snprintf(p, sizeof p, "%s/vib.yaml", tmpdir);
    unlink(p);
    rmdir(tmpdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_refs),         cmocka_unit_test(test_anomaly_learning),
        cmocka_unit_test(test_anomaly_hysteresis), cmocka_unit_test(test_anomaly_trend),
        cmocka_unit_test(test_iso_alarms),         cmocka_unit_test(test_motor),
        cmocka_unit_test(test_healthy_day),        cmocka_unit_test(test_defect_detected),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
