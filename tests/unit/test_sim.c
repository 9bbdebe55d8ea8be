/* test_sim.c — the simulator: generator values at known times, fault rates
 * with fixed seeds, writes read back, address errors, and the driver glue
 * (URL options, connection key, types, one sample per tag). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/driver.h"
#include "core/fb.h"
#include "south/sim/sim.h"
#include "south/sim/sim_gen.h"

#define S(x) ((int64_t)((x)*1e9))
/* a whole number of minutes: every period used below divides it */
#define T0 ((int64_t)1700000400 * 1000000000LL)

static void parse_ok(const char *spec, struct fb_sim_gen *g)
{
    struct fb_err err = {0};
    int rc = fb_sim_gen_parse(spec, g, &err);
    if (rc) fprintf(stderr, "%s: %s\n", spec, err.msg);
    assert_int_equal(rc, 0);
}

static double read1(struct fb_sim_gen *g, int64_t t)
{
    struct fb_sim_out o;
    fb_sim_gen_read(g, t, &o);
    assert_int_equal(o.quality, FB_Q_GOOD);
    return o.d;
}

static void test_sine(void **st)
{
    (void)st;
    struct fb_sim_gen g;
    parse_ok("sine:amp=10,period=60s,offset=20,phase=0", &g);
    assert_true(fabs(read1(&g, T0) - 20) < 1e-9);
    assert_true(fabs(read1(&g, T0 + S(15)) - 30) < 1e-9);
    assert_true(fabs(read1(&g, T0 + S(30)) - 20) < 1e-9);
    assert_true(fabs(read1(&g, T0 + S(45)) - 10) < 1e-9);
    assert_true(fabs(read1(&g, T0 + S(60 * 1000 + 15)) - 30) < 1e-9); /* periodic */
    fb_sim_gen_free(&g);
    parse_ok("sine:amp=2,period=4,phase=90", &g); /* bare number = seconds, phase in degrees */
    assert_true(fabs(read1(&g, T0) - 2) < 1e-9);
    assert_true(fabs(read1(&g, T0 + S(2)) + 2) < 1e-9);
    fb_sim_gen_free(&g);
    parse_ok("sine", &g); /* defaults: amp 1, period 60 s */
    assert_true(fabs(read1(&g, T0 + S(15)) - 1) < 1e-9);
    fb_sim_gen_free(&g);
}

static void test_square_ramp(void **st)
{
    (void)st;
    struct fb_sim_gen g;
    parse_ok("square:low=0,high=1,period=10s,duty=0.3", &g);
    assert_true(read1(&g, T0) == 1);
    assert_true(read1(&g, T0 + S(2.9)) == 1);
    assert_true(read1(&g, T0 + S(3)) == 0);
    assert_true(read1(&g, T0 + S(9.99)) == 0);
    assert_true(read1(&g, T0 + S(10)) == 1);
    fb_sim_gen_free(&g);
    parse_ok("square:low=-5,high=5,period=500ms", &g);
    assert_true(read1(&g, T0 + S(0.1)) == 5);
    assert_true(read1(&g, T0 + S(0.3)) == -5);
    fb_sim_gen_free(&g);

    parse_ok("ramp:min=0,max=100,period=10s", &g);
    assert_true(fabs(read1(&g, T0) - 0) < 1e-9);
    assert_true(fabs(read1(&g, T0 + S(2.5)) - 25) < 1e-9);
    assert_true(fabs(read1(&g, T0 + S(9.9)) - 99) < 1e-9);
    assert_true(fabs(read1(&g, T0 + S(12)) - 20) < 1e-9);
    fb_sim_gen_free(&g);
}

static void test_walk_noise(void **st)
{
    (void)st;
    struct fb_sim_gen a, b, c;
    parse_ok("walk:start=50,step=0.5,min=0,max=100", &a);
    parse_ok("walk:start=50,step=0.5,min=0,max=100", &b);
    parse_ok("walk:start=50,step=0.5,min=0,max=100", &c);
    fb_sim_gen_seed(&a, 42, 3);
    fb_sim_gen_seed(&b, 42, 3);
    fb_sim_gen_seed(&c, 43, 3);
    double prev = 50, differs = 0;
    for (int i = 0; i < 10000; i++) {
        double va = read1(&a, T0), vb = read1(&b, T0), vc = read1(&c, T0);
        assert_true(va == vb); /* same seed, same sequence */
        if (va != vc) differs++;
        assert_true(fabs(va - prev) <= 0.5 + 1e-12);
        assert_true(va >= 0 && va <= 100);
        prev = va;
    }
    assert_true(differs > 9000);

    struct fb_sim_gen n;
    parse_ok("noise:mean=5,stddev=2", &n);
    fb_sim_gen_seed(&n, 7, 0);
    double sum = 0, sq = 0;
    const int N = 50000;
    for (int i = 0; i < N; i++) {
        double v = read1(&n, T0);
        sum += v;
        sq += v * v;
    }
    double mean = sum / N, sd = sqrt(sq / N - mean * mean);
    assert_true(fabs(mean - 5) < 0.05);
    assert_true(fabs(sd - 2) < 0.05);
    fb_sim_gen_free(&a);
    fb_sim_gen_free(&b);
    fb_sim_gen_free(&c);
    fb_sim_gen_free(&n);
}

static void test_const_counter_memory(void **st)
{
    (void)st;
    struct fb_sim_gen g;
    struct fb_sim_out o;
    struct fb_err err = {0};
    parse_ok("const:42", &g);
    assert_true(read1(&g, T0) == 42);
    fb_sim_gen_free(&g);
    parse_ok("const:value=-1.5", &g);
    assert_true(read1(&g, T0) == -1.5);
    fb_sim_gen_free(&g);
    parse_ok("const:\"hello, \\\"world\\\"\"", &g);
    fb_sim_gen_read(&g, T0, &o);
    assert_true(o.is_string);
    assert_int_equal(o.slen, 14);
    assert_memory_equal(o.s, "hello, \"world\"", 14);
    fb_sim_gen_free(&g);

    parse_ok("counter:step=2", &g);
    assert_true(read1(&g, T0) == 0);
    assert_true(read1(&g, T0) == 2);
    assert_true(read1(&g, T0) == 4);
    assert_int_equal(fb_sim_gen_write_num(&g, 100, &err), 0);
    assert_true(read1(&g, T0) == 100);
    assert_true(read1(&g, T0) == 102);
    fb_sim_gen_free(&g);

    parse_ok("memory", &g);
    assert_true(read1(&g, T0) == 0);
    assert_int_equal(fb_sim_gen_write_num(&g, 12.25, &err), 0);
    assert_true(read1(&g, T0) == 12.25);
    assert_true(read1(&g, T0 + S(100)) == 12.25);
    assert_int_not_equal(fb_sim_gen_write_num(&g, NAN, &err), 0);
    fb_sim_gen_free(&g);
    parse_ok("memory:initial=5", &g);
    assert_true(read1(&g, T0) == 5);
    fb_sim_gen_free(&g);
    parse_ok("memory:initial=\"abc\"", &g);
    assert_int_equal(fb_sim_gen_write_str(&g, "xyz12", 5, &err), 0);
    fb_sim_gen_read(&g, T0, &o);
    assert_true(o.is_string);
    assert_int_equal(o.slen, 5);
    assert_memory_equal(o.s, "xyz12", 5);
    assert_int_equal(fb_sim_gen_write_num(&g, 1, &err), FB_EINVAL);
    fb_sim_gen_free(&g);

    /* writes re-centre periodic signals and move walks */
    parse_ok("sine:amp=10,offset=20", &g);
    assert_int_equal(fb_sim_gen_write_num(&g, 100, &err), 0);
    assert_true(fabs(read1(&g, T0) - 100) < 1e-9);
    assert_true(fabs(read1(&g, T0 + S(15)) - 110) < 1e-9);
    fb_sim_gen_free(&g);
    parse_ok("square:low=0,high=1", &g);
    assert_int_equal(fb_sim_gen_write_num(&g, 10, &err), 0);
    assert_true(read1(&g, T0) == 10.5);
    assert_int_equal(fb_sim_gen_write_str(&g, "x", 1, &err), FB_EINVAL);
    fb_sim_gen_free(&g);
    parse_ok("walk:step=0", &g);
    assert_int_equal(fb_sim_gen_write_num(&g, 77, &err), 0);
    assert_true(read1(&g, T0) == 77);
    fb_sim_gen_free(&g);
}

/* Counts reads, over N, that satisfy a predicate. */
static double rate(const char *spec, uint64_t seed, int n, int (*pred)(const struct fb_sim_out *))
{
    struct fb_sim_gen g;
    parse_ok(spec, &g);
    fb_sim_gen_seed(&g, seed, 0);
    int hits = 0;
    for (int i = 0; i < n; i++) {
        struct fb_sim_out o;
        fb_sim_gen_read(&g, T0 + (int64_t)i * 1000, &o);
        hits += pred(&o);
    }
    fb_sim_gen_free(&g);
    return (double)hits / n;
}
static int is_bad(const struct fb_sim_out *o) { return o->quality == FB_Q_BAD_COMM; }
static int is_spike(const struct fb_sim_out *o) { return fabs(fabs(o->d) - 50) < 1e-9; }
static int is_oor(const struct fb_sim_out *o) { return o->d == 999; }

static void test_fault_rates(void **st)
{
    (void)st;
    const int N = 200000;
    double r = rate("const:0,dropout=0.05", 42, N, is_bad);
    assert_true(r > 0.045 && r < 0.055);
    r = rate("const:0,spike=0.01,spike_amp=50", 42, N, is_spike);
    assert_true(r > 0.008 && r < 0.012);
    r = rate("const:0,oor=0.02,oor_value=999", 1, N, is_oor);
    assert_true(r > 0.017 && r < 0.023);
    /* faults together keep their own rates */
    r = rate("const:0,dropout=0.1,oor=0.02,oor_value=999", 5, N, is_bad);
    assert_true(r > 0.095 && r < 0.105);
    /* same seed, same faults */
    assert_true(rate("noise:dropout=0.3", 9, 1000, is_bad) == rate("noise:dropout=0.3", 9, 1000, is_bad));
    /* default spike amplitude of a sine: 10 × amp */
    struct fb_sim_gen g;
    parse_ok("sine:amp=3,spike=1", &g);
    struct fb_sim_out o;
    fb_sim_gen_read(&g, T0, &o);
    assert_true(fabs(fabs(o.d) - 30) < 1e-9);
    fb_sim_gen_free(&g);
}

static void test_stuck(void **st)
{
    (void)st;
    struct fb_sim_gen g;
    parse_ok("ramp:min=0,max=100,period=100s,stuck=1,stuck_for=30s", &g);
    assert_true(read1(&g, T0) == 0); /* freezes at once (p = 1) */
    assert_true(read1(&g, T0 + S(10)) == 0);
    assert_true(read1(&g, T0 + S(29)) == 0);
    assert_true(fabs(read1(&g, T0 + S(31)) - 31) < 1e-9); /* released, frozen again */
    assert_true(fabs(read1(&g, T0 + S(50)) - 31) < 1e-9);
    fb_sim_gen_free(&g);

    /* a rare stuck fault: the value holds for stuck_for then moves again */
    parse_ok("ramp:min=0,max=1000,period=1000s,stuck=0.01,stuck_for=5s", &g);
    fb_sim_gen_seed(&g, 1, 0);
    int frozen = 0;
    double prev = -1;
    for (int i = 0; i < 10000; i++) { /* 100 ms per read */
        double v = read1(&g, T0 + (int64_t)i * 100000000LL);
        if (v == prev) frozen++;
        prev = v;
    }
    /* ~1 start per 100 reads, each freezing ~50 reads: most reads are frozen */
    assert_true(frozen > 2000 && frozen < 9900);
    fb_sim_gen_free(&g);
}

static void parse_err(const char *spec, const char *needle)
{
    struct fb_sim_gen g;
    struct fb_err err = {0};
    int rc = fb_sim_gen_parse(spec, &g, &err);
    if (rc == 0 || !strstr(err.msg, needle))
        fprintf(stderr, "spec %s: rc %d msg '%s' (wanted '%s')\n", spec, rc, err.msg, needle);
    assert_int_equal(rc, FB_EINVAL);
    assert_non_null(strstr(err.msg, needle));
}

static void test_address_errors(void **st)
{
    (void)st;
    parse_err("bogus:1", "valid: sine, square, ramp, walk, noise, const, counter, memory");
    parse_err("", "unknown generator");
    parse_err("sine:foo=1", "unknown key 'foo' for sine (valid: amp, period, offset, phase, spike");
    parse_err("sine:amp=x", "not a number");
    parse_err("sine:period=0", "positive duration");
    parse_err("sine:period=-1s", "positive duration");
    parse_err("square:duty=1.5", "between 0 and 1");
    parse_err("sine:dropout=2", "between 0 and 1");
    parse_err("walk:min=10,max=0", "min must not exceed max");
    parse_err("walk:start=500", "start must lie");
    parse_err("noise:stddev=-1", "stddev");
    parse_err("const:hello", "quote strings");
    parse_err("const:\"abc", "unterminated");
    parse_err("const:1,2", "not KEY=VALUE");
    parse_err("sine:5", "not KEY=VALUE");
    parse_err("sine:amp=\"x\"", "takes a number");
    parse_err("counter:amp=1", "unknown key 'amp' for counter (valid: start, step,");
}

/* ------------------------------------------------------------ the driver */
struct rig {
    struct fb_gateway gw;
    struct fb_device dev;
    struct fb_tag tags[8];
    const char *atext[8]; /* the tags' address texts (gw.atext) */
    uint32_t ids[8];
    struct fb_group grp;
    struct fb_url_kv kv[2];
};

static int rig_tag(struct rig *r, uint32_t i, const char *addr, enum fb_type type, int access, struct fb_err *err)
{
    struct fb_tag *t = &r->tags[i];
    memset(t, 0, sizeof *t);
    t->id = i;
    t->device = 0;
    t->name = (char *)"t";
    r->atext[i] = addr;
    if (r->gw.ntags <= i) r->gw.ntags = i + 1;
    t->type = (uint8_t)type;
    t->access = (uint8_t)access;
    r->ids[i] = i;
    return fb_driver_sim.parse_address(&r->dev, t, err);
}

/* Parse a tag outside the rig's model (id 0 of a one-tag model with address text). */
static int parse_bad(struct rig *r, struct fb_tag *bad, const char *text, struct fb_err *err)
{
    const char **keep = r->gw.atext, *one[1] = {text};
    uint32_t n = r->gw.ntags;
    r->gw.atext = one;
    r->gw.ntags = 1;
    bad->id = 0;
    int rc = fb_driver_sim.parse_address(&r->dev, bad, err);
    r->gw.atext = keep;
    r->gw.ntags = n;
    return rc;
}

static void rig_init(struct rig *r, const char *k, const char *v, char **key, struct fb_err *err, int *rc)
{
    memset(r, 0, sizeof *r);
    r->dev.name = (char *)"press-01";
    r->dev.gw = &r->gw;
    r->dev.drv = &fb_driver_sim;
    r->gw.tags = r->tags;
    r->gw.atext = r->atext;
    r->gw.devs = &r->dev;
    r->gw.ndevs = 1;
    if (k) {
        r->kv[0].k = (char *)k;
        r->kv[0].v = (char *)v;
        r->dev.url.q = r->kv;
        r->dev.url.nq = 1;
    }
    *rc = fb_driver_sim.device_init(&r->dev, key, err);
}

static void test_driver(void **st)
{
    (void)st;
    struct rig r;
    struct fb_err err = {0};
    char *key = NULL;
    int rc;
    assert_ptr_equal(fb_driver_for_scheme("sim"), &fb_driver_sim);
    rig_init(&r, "colour", "red", &key, &err, &rc);
    assert_int_equal(rc, FB_EINVAL);
    assert_non_null(strstr(err.msg, "unknown sim option 'colour' (valid: seed)"));
    rig_init(&r, "seed", "x1", &key, &err, &rc);
    assert_int_equal(rc, FB_EINVAL);
    rig_init(&r, "seed", "42", &key, &err, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(key, "sim:press-01");
    free(key);

    assert_int_equal(rig_tag(&r, 0, "sine:amp=10,offset=20", FB_T_NONE, FB_ACC_READ, &err), 0);
    assert_int_equal(r.tags[0].type, FB_T_FLOAT64);
    assert_int_equal(rig_tag(&r, 1, "const:100000", FB_T_INT16, FB_ACC_READ, &err), 0);
    assert_int_equal(rig_tag(&r, 2, "memory", FB_T_NONE, FB_ACC_RW, &err), 0);
    assert_int_equal(rig_tag(&r, 3, "const:\"hi\"", FB_T_NONE, FB_ACC_READ, &err), 0);
    assert_int_equal(r.tags[3].type, FB_T_STRING);
    assert_int_equal(rig_tag(&r, 4, "square:low=0,high=1:bool", FB_T_NONE, FB_ACC_READ, &err), 0);
    assert_int_equal(r.tags[4].type, FB_T_BOOL);
    assert_int_equal(rig_tag(&r, 5, "const:-2.6", FB_T_UINT8, FB_ACC_RW, &err), 0);
    assert_int_equal(rig_tag(&r, 6, "const:2.5", FB_T_FLOAT32, FB_ACC_READ, &err), 0);
    assert_int_equal(rig_tag(&r, 7, "memory:initial=3", FB_T_STRING, FB_ACC_RW, &err), 0);
    /* errors */
    struct fb_tag bad = {0};
    bad.type = FB_T_INT16;
    assert_int_equal(parse_bad(&r, &bad, "const:\"x\"", &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "needs type string"));
    bad.type = FB_T_FLOAT32;
    assert_int_equal(parse_bad(&r, &bad, "memory:int16", &err), FB_EINVAL);
    assert_int_equal(parse_bad(&r, &bad, "wave:1", &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "valid: sine"));

    r.dev.ntags = 8;
    r.gw.ntags = 8;
    r.grp.ids = r.ids;
    r.grp.ntags = 8;
    assert_int_equal(fb_driver_sim.plan(&r.dev, &r.grp, &err), 0);
    assert_int_equal(fb_driver_sim.open(NULL, &err), 0);

    struct fb_batch *b = fb_batch_new(16, 0, 1024);
    assert_non_null(b);
    assert_int_equal(fb_driver_sim.read(&r.dev, &r.grp, b), 0);
    assert_int_equal(b->n, 8);
    assert_int_equal(atomic_load(&r.dev.m.requests), 1);
    assert_true(atomic_load(&r.dev.m.last_success_ns) > 0);
    assert_int_equal(b->s[0].v.type, FB_T_FLOAT64);
    assert_true(b->s[0].v.f >= 10 && b->s[0].v.f <= 30);
    assert_true(b->s[0].ts_src > 0);
    assert_int_equal(b->s[1].v.type, FB_T_INT16);
    assert_int_equal(b->s[1].v.i, 32767); /* saturated like a register */
    assert_int_equal(b->s[3].v.type, FB_T_STRING);
    assert_int_equal(b->s[3].v.s.len, 2);
    assert_memory_equal(b->s[3].v.s.p, "hi", 2);
    assert_int_equal(b->s[4].v.type, FB_T_BOOL);
    assert_int_equal(b->s[5].v.u, 0);
    assert_int_equal(b->s[6].v.type, FB_T_FLOAT32);
    assert_true(b->s[6].v.f == 2.5);
    assert_int_equal(b->s[7].v.s.len, 1);
    assert_memory_equal(b->s[7].v.s.p, "3", 1);

    /* writes */
    struct fb_value v = {.type = FB_T_FLOAT64, .f = 12.5};
    assert_int_equal(fb_driver_sim.write(&r.dev, &r.tags[2], &v, &err), 0);
    assert_int_equal(fb_driver_sim.write(&r.dev, &r.tags[0], &v, &err), FB_EACCES);
    struct fb_value u = {.type = FB_T_UINT8, .u = 200};
    assert_int_equal(fb_driver_sim.write(&r.dev, &r.tags[5], &u, &err), 0);
    struct fb_value s = {.type = FB_T_STRING, .s = {"set", 3}};
    assert_int_equal(fb_driver_sim.write(&r.dev, &r.tags[7], &s, &err), 0);
    assert_int_equal(fb_driver_sim.write(&r.dev, &r.tags[2], &s, &err), FB_EINVAL);
    fb_batch_reset(b);
    assert_int_equal(fb_driver_sim.read(&r.dev, &r.grp, b), 0);
    assert_true(b->s[2].v.f == 12.5);
    assert_int_equal(b->s[5].v.u, 200);
    assert_int_equal(b->s[7].v.s.len, 3);
    assert_memory_equal(b->s[7].v.s.p, "set", 3);
    fb_batch_free(b);

    /* dropout marks the sample bad and counts an error per Bad item, like a
     * real device's refusals (two dropping tags: two errors per read) */
    for (int i = 0; i < 8; i++) fb_driver_sim.free_address(&r.tags[i]);
    assert_int_equal(rig_tag(&r, 0, "const:1,dropout=1", FB_T_NONE, FB_ACC_READ, &err), 0);
    assert_int_equal(rig_tag(&r, 1, "const:2,dropout=1", FB_T_NONE, FB_ACC_READ, &err), 0);
    assert_int_equal(rig_tag(&r, 2, "const:3", FB_T_NONE, FB_ACC_READ, &err), 0);
    r.grp.ntags = 3;
    b = fb_batch_new(4, 0, 64);
    assert_int_equal(fb_driver_sim.read(&r.dev, &r.grp, b), 0);
    assert_int_equal(b->s[0].quality, FB_Q_BAD_COMM);
    assert_int_equal(b->s[1].quality, FB_Q_BAD_COMM);
    assert_int_equal(b->s[2].quality, FB_Q_GOOD);
    assert_int_equal(atomic_load(&r.dev.m.errors), 2);
    fb_batch_free(b);
    for (int i = 0; i < 3; i++) fb_driver_sim.free_address(&r.tags[i]);
    fb_driver_sim.close(NULL);
    fb_driver_sim.device_free(&r.dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sine),           cmocka_unit_test(test_square_ramp),
        cmocka_unit_test(test_walk_noise),     cmocka_unit_test(test_const_counter_memory),
        cmocka_unit_test(test_fault_rates),    cmocka_unit_test(test_stuck),
        cmocka_unit_test(test_address_errors), cmocka_unit_test(test_driver),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
