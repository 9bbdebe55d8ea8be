/* test_ingest.c — what ingest reads (north/ingest/decode.c): topic templates,
 * the JSON telemetry reader checked against the MQTT sink's own writer
 * (telemetry.c: every value type, qualities, time stamps, statistics), hand-
 * written edge cases (escapes, exact integers, members in any order, unknown
 * members), every truncation of a message, and the `ingest:` section's
 * errors (config.c's rules for sources). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tmpdir.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "north/ingest/decode.h"
#include "north/ingest/ingest.h"
#include "north/mqtt/telemetry.h"

#define T0 1795860000123000000LL

/* ------------------------------------------------------------ templates */
static void test_templates(void **st)
{
    (void)st;
    struct fb_ig_tmpl t;
    struct fb_err e = {0};
    assert_int_equal(fb_ig_tmpl_parse("{site}/{area}/{line}/{device}/{kind}", &t, &e), 0);
    char *f = fb_ig_tmpl_filter(&t, "telemetry");
    assert_string_equal(f, "+/+/+/+/telemetry");
    free(f);
    char buf[256];
    const char *v[FB_BN__N], *kind;
    assert_true(fb_ig_tmpl_match(&t, "munich/assembly/01/press-01/telemetry", buf, sizeof buf, v, &kind));
    assert_string_equal(v[FB_BN_SITE], "munich");
    assert_string_equal(v[FB_BN_AREA], "assembly");
    assert_string_equal(v[FB_BN_LINE], "01");
    assert_string_equal(v[FB_BN_DEVICE], "press-01");
    assert_string_equal(v[FB_BN_GATEWAY], "");
    assert_string_equal(kind, "telemetry");
    assert_false(fb_ig_tmpl_match(&t, "munich/assembly/01/press-01", buf, sizeof buf, v, &kind));
    assert_false(fb_ig_tmpl_match(&t, "munich/assembly/01/press-01/telemetry/x", buf, sizeof buf, v, &kind));
    assert_false(fb_ig_tmpl_match(&t, "munich/assembly/01/press-01/telemetry", buf, 8, v, &kind)); /* no room */
    fb_ig_tmpl_free(&t);

    assert_int_equal(fb_ig_tmpl_parse("factory/{site}/gw-{gateway}/line-{line}/{device}/x{kind}", &t, &e), 0);
    f = fb_ig_tmpl_filter(&t, "status");
    assert_string_equal(f, "factory/+/+/+/+/xstatus");
    free(f);
    assert_true(fb_ig_tmpl_match(&t, "factory/s1/gw-edge 1/line-07/d/xtelemetry", buf, sizeof buf, v, &kind));
    assert_string_equal(v[FB_BN_GATEWAY], "edge 1");
    assert_string_equal(v[FB_BN_LINE], "07");
    assert_string_equal(kind, "telemetry");
    assert_false(fb_ig_tmpl_match(&t, "factory/s1/gw-/line-07/d/xtelemetry", buf, sizeof buf, v, &kind)); /* empty */
    assert_false(fb_ig_tmpl_match(&t, "plant/s1/gw-e/line-07/d/xtelemetry", buf, sizeof buf, v, &kind));
    fb_ig_tmpl_free(&t);

    assert_int_equal(fb_ig_tmpl_parse("{site}/{device}", &t, &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "must contain {device} and {kind}"));
    assert_int_equal(fb_ig_tmpl_parse("{site}/{area}-{line}/{device}/{kind}", &t, &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "two placeholders"));
    assert_int_equal(fb_ig_tmpl_parse("{plant}/{device}/{kind}", &t, &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "unknown placeholder {plant}"));
    assert_int_equal(fb_ig_tmpl_parse("a//{device}/{kind}", &t, &e), FB_EINVAL);
    assert_int_equal(fb_ig_tmpl_parse("+/{device}/{kind}", &t, &e), FB_EINVAL);
}

/* --------------------------------------------------------- JSON reader */
static struct fb_batch *named(void)
{
    struct fb_batch *b = fb_batch_new(64, 64, 4096);
    const char *v[FB_BN__N] = {"", "munich", "assembly", "01", "press-01"};
    assert_int_equal(fb_ig_batch_begin(b, v, 0), 0);
    return b;
}

static const struct fb_sample *find(const struct fb_batch *b, const char *tag)
{
    for (uint32_t i = 0; i < b->n; i++)
        if (!strcmp(fb_batch_str(b, b->s[i].tag), tag)) return &b->s[i];
    fail_msg("no sample %s", tag);
    return NULL;
}

static int decode(struct fb_batch *b, const char *json, const struct fb_ig_types *types)
{
    const char *v[FB_BN__N] = {"", "munich", "assembly", "01", "press-01"};
    fb_ig_batch_begin(b, v, 0);
    struct fb_err e = {0};
    int rc = fb_ig_telemetry(b, json, strlen(json), types, 42, &e);
    if (rc < 0 && getenv("FB_TEST_VERBOSE")) fprintf(stderr, "%s\n", e.msg);
    return rc;
}

/* What the MQTT sink writes is what ingest reads back. */
static void test_round_trip_with_mqtt_writer(void **st)
{
    (void)st;
    static struct fb_tag tags[9];
    static struct fb_device dev = {.name = "press-01"};
    static struct fb_gateway gw = {.id = "edge-01", .site = "munich"};
    const char *names[9] = {"temperature", "count", "big", "label", "flag", "lost", "speed", "unc", "f32"};
    for (int i = 0; i < 9; i++) {
        tags[i].id = (uint32_t)i;
        tags[i].name = (char *)names[i];
    }
    gw.tags = tags;
    gw.ntags = 9;
    gw.devs = &dev;
    gw.ndevs = 1;
    struct fb_batch *in = fb_batch_new(16, 2, 256);
    in->ts = T0;
    in->seq = 7;
    struct fb_value v = {.type = FB_T_FLOAT64};
    v.f = 21.5;
    fb_batch_add(in, 0, FB_Q_GOOD, T0, &v);
    v.type = FB_T_INT64;
    v.i = INT64_MIN;
    fb_batch_add(in, 1, FB_Q_GOOD, T0 + 5000000, &v); /* its own ts: 5 ms later */
    v.type = FB_T_UINT64;
    v.u = UINT64_MAX;
    fb_batch_add(in, 2, FB_Q_GOOD, T0, &v);
    v.type = FB_T_STRING;
    v.s.p = "say \"hi\"\\\n\xc3\xa9\xf0\x9f\x98\x80";
    v.s.len = (uint32_t)strlen(v.s.p);
    fb_batch_add(in, 3, FB_Q_GOOD, T0, &v);
    v.type = FB_T_BOOL;
    v.b = true;
    fb_batch_add(in, 4, FB_Q_GOOD, T0, &v);
    fb_batch_add(in, 5, FB_Q_BAD_COMM, T0, NULL);
    v.type = FB_T_FLOAT64;
    v.f = 12.5;
    struct fb_sample *s = fb_batch_add(in, 6, FB_Q_GOOD, T0, &v);
    s->flags = FB_SF_STATS;
    s->stats = 0;
    in->stats[0] = (struct fb_stats){
        .mean = 12.25, .stddev = 0.5, .min = 11.5, .max = 13, .count = 60, .window_ns = 60000000000LL};
    in->nstats = 1;
    v.type = FB_T_INT16;
    v.i = -5;
    fb_batch_add(in, 7, FB_Q_UNC_LAST_USABLE, T0, &v);
    v.type = FB_T_FLOAT32;
    v.f = (double)0.1f;
    fb_batch_add(in, 8, FB_Q_GOOD, T0, &v);
    struct fb_buf js;
    fb_buf_init(&js);
    fb_telemetry_json(&js, &gw, in);

    struct fb_ig_type_rule rules[] = {
        {NULL, "count", FB_T_INT64}, {"press-*", "big", FB_T_UINT64}, {NULL, "unc", FB_T_INT16}};
    struct fb_ig_types types = {rules, 3};
    struct fb_batch *b = named();
    assert_int_equal(decode(b, fb_buf_cstr(&js), &types), 0);
    assert_int_equal(b->n, 9);
    assert_true(b->ts == T0);
    const struct fb_sample *x = find(b, "temperature");
    assert_int_equal(x->v.type, FB_T_FLOAT64);
    assert_true(x->v.f == 21.5 && x->quality == FB_Q_GOOD && x->ts_src == T0);
    x = find(b, "count");
    assert_int_equal(x->v.type, FB_T_INT64);
    assert_true(x->v.i == INT64_MIN && x->ts_src == T0 + 5000000);
    x = find(b, "big");
    assert_int_equal(x->v.type, FB_T_UINT64);
    assert_true(x->v.u == UINT64_MAX);
    x = find(b, "label");
    assert_int_equal(x->v.type, FB_T_STRING);
    assert_int_equal(x->v.s.len, in->s[3].v.s.len);
    assert_memory_equal(x->v.s.p, in->s[3].v.s.p, x->v.s.len);
    x = find(b, "flag");
    assert_true(x->v.type == FB_T_BOOL && x->v.b);
    x = find(b, "lost");
    assert_int_equal(x->quality, FB_Q_BAD_COMM);
    assert_int_equal(x->v.type, FB_T_NONE);
    x = find(b, "speed");
    assert_true(x->flags & FB_SF_STATS);
    assert_true(b->stats[x->stats].mean == 12.25 && b->stats[x->stats].count == 60 &&
                b->stats[x->stats].window_ns == 60000000000LL && b->stats[x->stats].max == 13);
    x = find(b, "unc");
    assert_int_equal(x->quality, FB_Q_UNC_LAST_USABLE);
    assert_true(x->v.type == FB_T_INT16 && x->v.i == -5);
    x = find(b, "f32");
    assert_true(x->v.type == FB_T_FLOAT64 && x->v.f == 0.1); /* a number: float64 without a rule */

    /* every truncation is refused, never read past the end */
    for (size_t cut = 0; cut < js.len; cut++) {
        char *p = malloc(cut ? cut : 1);
        memcpy(p, js.p, cut);
        const char *nm[FB_BN__N] = {"", "s", "", "", "d"};
        fb_ig_batch_begin(b, nm, 0);
        struct fb_err e = {0};
        assert_int_not_equal(fb_ig_telemetry(b, p, cut, &types, 0, &e), 0);
        assert_true(e.msg[0]);
        free(p);
    }
    fb_buf_free(&js);
    fb_batch_free(in);
    fb_batch_free(b);
}

static void test_edge_cases(void **st)
{
    (void)st;
    struct fb_batch *b = named();
    /* members in any order: values before ts; unknown members skipped at any depth */
    assert_int_equal(decode(b,
                            "{\"values\":{\"a\":{\"x\":[1,{\"y\":[true,null]}],\"v\":1.5,\"q\":\"good\"}},"
                            "\"extra\":{\"k\":[1,2,3]},\"ts\":\"2026-11-28T10:00:00.123Z\",\"seq\":5}",
                            NULL),
                     0);
    assert_int_equal(b->n, 1);
    assert_true(b->s[0].ts_src == T0 && b->s[0].v.f == 1.5);
    /* no ts: the receive time */
    assert_int_equal(decode(b, "{\"values\":{\"a\":{\"v\":2,\"q\":\"good\"}}}", NULL), 0);
    assert_true(b->s[0].ts_src == 42);
    /* escapes in names, surrogate pairs */
    assert_int_equal(decode(b, "{\"values\":{\"t\\u00e9mp\\ud83d\\ude00\\\"x\":{\"v\":1,\"q\":\"good\"}}}", NULL), 0);
    assert_string_equal(fb_batch_str(b, b->s[0].tag), "t\xc3\xa9mp\xf0\x9f\x98\x80\"x");
    /* a NUL in a name is refused (names are NUL-terminated); in a string value it is kept */
    assert_int_equal(decode(b, "{\"values\":{\"a\\u0000b\":{\"v\":1,\"q\":\"good\"}}}", NULL), FB_EPROTO);
    assert_int_equal(decode(b, "{\"values\":{\"a\":{\"v\":\"x\\u0000y\",\"q\":\"good\"}}}", NULL), 0);
    assert_int_equal(b->s[0].v.s.len, 3);
    /* lone surrogate, bad escape */
    assert_int_equal(decode(b, "{\"values\":{\"a\\ud800\":{\"v\":1,\"q\":\"good\"}}}", NULL), FB_EPROTO);
    assert_int_equal(decode(b, "{\"values\":{\"a\\q\":{\"v\":1,\"q\":\"good\"}}}", NULL), FB_EPROTO);
    /* integer rules: exact, range-checked; a fraction for an integer tag is out of range */
    struct fb_ig_type_rule r[] = {{NULL, "i8", FB_T_INT8}, {NULL, "u64", FB_T_UINT64}, {NULL, "f32", FB_T_FLOAT32}};
    struct fb_ig_types ty = {r, 3};
    assert_int_equal(decode(b,
                            "{\"values\":{\"i8\":{\"v\":-128,\"q\":\"good\"},\"u64\":{\"v\":18446744073709551615,"
                            "\"q\":\"good\"},\"f32\":{\"v\":0.1,\"q\":\"good\"}}}",
                            &ty),
                     0);
    assert_true(find(b, "i8")->v.type == FB_T_INT8 && find(b, "i8")->v.i == -128);
    assert_true(find(b, "u64")->v.u == UINT64_MAX);
    assert_true(find(b, "f32")->v.type == FB_T_FLOAT32 && find(b, "f32")->v.f == (double)0.1f);
    assert_int_equal(decode(b,
                            "{\"values\":{\"i8\":{\"v\":128,\"q\":\"good\"},\"u64\":{\"v\":-1,\"q\":\"good\"},"
                            "\"f32\":{\"v\":1e300,\"q\":\"good\"}}}",
                            &ty),
                     0);
    assert_int_equal(find(b, "i8")->quality, FB_Q_BAD_OUT_OF_RANGE);
    assert_int_equal(find(b, "i8")->v.type, FB_T_NONE);
    assert_int_equal(find(b, "u64")->quality, FB_Q_BAD_OUT_OF_RANGE);
    assert_int_equal(find(b, "f32")->quality, FB_Q_BAD_OUT_OF_RANGE);
    assert_int_equal(decode(b, "{\"values\":{\"i8\":{\"v\":1.5,\"q\":\"good\"}}}", &ty), 0);
    assert_int_equal(find(b, "i8")->quality, FB_Q_BAD_TYPE_MISMATCH);
    /* quality: reason when it agrees with q, else the generic code; null is never good */
    assert_int_equal(decode(b,
                            "{\"values\":{\"a\":{\"v\":null,\"q\":\"bad\",\"reason\":\"BadTimeout\"},"
                            "\"b\":{\"v\":1,\"q\":\"uncertain\",\"reason\":\"BadTimeout\"},"
                            "\"c\":{\"v\":null,\"q\":\"good\"},\"d\":{\"v\":2}}}",
                            NULL),
                     0);
    assert_int_equal(find(b, "a")->quality, FB_Q_BAD_TIMEOUT);
    assert_int_equal(find(b, "b")->quality, FB_Q_UNCERTAIN);
    assert_int_equal(find(b, "c")->quality, FB_Q_BAD_WAITING);
    assert_int_equal(find(b, "d")->quality, FB_Q_GOOD);
    /* not telemetry */
    static const char *const bad[] = {"[]",
                                      "{}",
                                      "{\"values\":[]}",
                                      "{\"values\":{\"a\":1}}",
                                      "{\"values\":{\"a\":{\"v\":[1]}}}",
                                      "{\"values\":{\"\":{\"v\":1}}}",
                                      "{\"values\":{}} x",
                                      "{\"ts\":\"yesterday\",\"values\":{}}",
                                      "{\"values\":{\"a\":{\"q\":\"fine\"}}}",
                                      "{\"values\":{\"a\":{\"v\":01}}}",
                                      "{\"values\":{\"a\":{\"v\":1.}}}",
                                      "{\"values\":{\"a\":{\"v\":-}}}",
                                      "{\"values\":{\"a\":{\"v\":tru}}}",
                                      "{\"values\":{\"a\":{\"v\":\"x\n\"}}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (decode(b, bad[i], NULL) != FB_EPROTO) fail_msg("accepted: %s", bad[i]);
    }
    /* deep nesting is bounded */
    char deep[400] = "{\"values\":{},\"x\":";
    for (int i = 0; i < 100; i++) strcat(deep, "[");
    assert_int_equal(decode(b, deep, NULL), FB_EPROTO);
    /* more values than the batch holds */
    struct fb_batch *small = fb_batch_new(1, 1, 256);
    const char *nm[FB_BN__N] = {"", "s", "", "", "d"};
    fb_ig_batch_begin(small, nm, 0);
    struct fb_err e = {0};
    const char *two = "{\"values\":{\"a\":{\"v\":1,\"q\":\"good\"},\"b\":{\"v\":2,\"q\":\"good\"}}}";
    assert_int_equal(fb_ig_telemetry(small, two, strlen(two), NULL, 0, &e), FB_ERANGE);
    fb_batch_free(small);
    fb_batch_free(b);
}

static void test_number_types(void **st)
{
    (void)st;
    struct fb_ig_type_rule r[] = {{"press-*", "count*", FB_T_INT64}, {NULL, "count*", FB_T_UINT32}};
    struct fb_ig_types t = {r, 2};
    assert_int_equal(fb_ig_number_type(&t, "press-01", "count_a"), FB_T_INT64);
    assert_int_equal(fb_ig_number_type(&t, "oven", "count_a"), FB_T_UINT32);
    assert_int_equal(fb_ig_number_type(&t, "oven", "temp"), FB_T_FLOAT64);
    assert_int_equal(fb_ig_number_type(NULL, "oven", "temp"), FB_T_FLOAT64);
}

/* ----------------------------------------------------------------- config */

static int load(const char *yaml, char **diag, struct fb_gateway **gw)
{
    char path[300];
    snprintf(path, sizeof path, "%s/c.yaml", tmpdir);
    FILE *f = fopen(path, "w");
    fputs(yaml, f);
    fclose(f);
    size_t len;
    FILE *d = open_memstream(diag, &len);
    struct fb_config_opts o = {false, d};
    int rc = fb_config_load(path, &o, gw);
    fclose(d);
    return rc;
}

static void expect(const char *yaml, const char *msg)
{
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    int rc = load(yaml, &diag, &gw);
    if (rc == 0 || !strstr(diag, msg)) {
        fprintf(stderr, "want error: %s\n--- got (rc %d):\n%s---\n", msg, rc, diag);
        fail();
    }
    free(diag);
    fb_gateway_free(gw);
}

#define IX "influx: {url: \"http://h:8086\", db: x}\n"

static void test_config(void **st)
{
    (void)st;
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    int rc =
        load("gateway: {id: ig1}\n" IX "ingest:\n  url: mqtt://127.0.0.1:1883\n  share: writers\n  session_expiry: 2h\n"
             "  telemetry: {topic: \"f/{site}/{device}/{kind}\"}\n  sparkplug: {group: plant}\n"
             "  types: [{tag: \"count*\", type: uint32}]\n",
             &diag, &gw);
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    free(diag);
    assert_int_equal(gw->nsources, 1);
    const struct fb_ingest_cfg *c = gw->sources[0].cfg;
    assert_string_equal(c->broker.client_id, "fieldbridge-ingest-ig1");
    assert_string_equal(c->share, "writers");
    assert_true(c->persistent && c->expiry_s == 7200 && c->qos == 1);
    assert_true(c->json && c->spb && c->status && c->rebirth);
    assert_string_equal(c->spb_group, "plant");
    assert_int_equal(c->types.n, 1);
    assert_int_equal(c->types.r[0].type, FB_T_UINT32);
    fb_gateway_free(gw);

#define GW "gateway: {id: ig1}\n"
    expect(GW IX "ingest: {url: \"mqtt://h\"}\n", "ingest: give telemetry:");
    expect(GW IX "ingest: {url: \"mqtt://h\", telemetry: true, share: \"a/b\"}\n", "ingest.share");
    expect(GW IX "ingest: {url: \"mqtt://h\", telemetry: {topic: \"{site}/{device}\"}}\n",
           "ingest.telemetry.topic: topic template \"{site}/{device}\" must contain {device} and {kind}");
    expect(GW IX "ingest: {url: \"mqtt://h\", telemetry: true, version: 3}\n", "ingest needs MQTT 5");
    expect(GW IX "ingest: {url: \"mqtt://h\", telemetry: true, types: [{tag: a, type: bool}]}\n", "a number type");
    expect(GW IX "ingest: {url: \"mqtt://h\", telemetry: true, types: [{tag: a}]}\n",
           "ingest.types[0].type is required");
    expect(GW IX "ingest: {url: \"mqtt://h\", sparkplug: {group: \"a/b\"}}\n", "ingest.sparkplug.group");
    expect(GW "ingest: {url: \"mqtt://h\", telemetry: true}\n", "ingest: needs a sink to write to");
    expect(GW IX "mqtt: {url: \"mqtt://h\"}\ningest: {url: \"mqtt://h\", telemetry: true}\n",
           "mqtt: cannot take what ingest: receives");
    expect(GW IX "ingest: {url: \"mqtt://h\", telemetry: true}\ndevices: []\n",
           "devices: and ingest: do not go together");
    expect(GW IX "ingest: {url: \"mqtt://h\", telemetry: true, sesion: clean}\n", "did you mean 'session'");
#undef GW
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_templates),  cmocka_unit_test(test_round_trip_with_mqtt_writer),
        cmocka_unit_test(test_edge_cases), cmocka_unit_test(test_number_types),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
