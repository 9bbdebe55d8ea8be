/* test_mqtt.c — the MQTT sink's pure parts: topic templates, the telemetry
 * and device-status JSON, and the in-flight window (window.h).  Payloads are parsed back with jansson (an
 * independent JSON parser) and checked field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "north/mqtt/mqtt.h"
#include "north/mqtt/telemetry.h"
#include "north/mqtt/topic.h"
#include "north/mqtt/window.h"

/* ------------------------------------------------------------- fixtures */
static struct fb_tag tags[8];
static struct fb_device devs[2];
static struct fb_gateway gw;

static void setup_gw(void)
{
    memset(&gw, 0, sizeof gw);
    memset(devs, 0, sizeof devs);
    memset(tags, 0, sizeof tags);
    gw.id = "edge-01";
    gw.site = "munich";
    devs[0].idx = 0;
    devs[0].name = "press-01";
    devs[0].area = "assembly";
    devs[0].line = "01";
    devs[1].idx = 1;
    devs[1].name = "dev+x#y";
    devs[1].area = "";
    devs[1].line = NULL;
    gw.devs = devs;
    gw.ndevs = 2;
    static char *names[8] = {"temperature", "count", "big", "label", "nan", "pressure", "speed", "unc"};
    for (uint32_t i = 0; i < 8; i++) {
        tags[i].id = i;
        tags[i].name = names[i];
    }
    gw.tags = tags;
    gw.ntags = 8;
}

static int render(char *dst, size_t n, const char *tmpl, const struct fb_device *d, const char *kind)
{
    struct fb_buf b;
    fb_buf_init(&b);
    int rc = fb_topic_render(&b, tmpl, &gw, d, kind);
    snprintf(dst, n, "%s", rc == 0 ? fb_buf_cstr(&b) : "");
    fb_buf_free(&b);
    return rc;
}

/* ---------------------------------------------------------------- topics */
static void test_topic_all_placeholders(void **st)
{
    (void)st;
    setup_gw();
    char t[256];
    assert_int_equal(render(t, sizeof t, "{gateway}/{site}/{area}/{line}/{device}/{kind}", &devs[0], FB_KIND_TELEMETRY),
                     0);
    assert_string_equal(t, "edge-01/munich/assembly/01/press-01/telemetry");
    assert_int_equal(render(t, sizeof t, "factory/{site}/area/{area}/line/{line}/device/{device}/{kind}", &devs[0],
                            FB_KIND_RESPONSE),
                     0);
    assert_string_equal(t, "factory/munich/area/assembly/line/01/device/press-01/command/response");
    /* placeholders inside a level */
    assert_int_equal(render(t, sizeof t, "plant-{site}/l{line}-{device}/{kind}", &devs[0], "status"), 0);
    assert_string_equal(t, "plant-munich/l01-press-01/status");
}

static void test_topic_gateway_and_empty(void **st)
{
    (void)st;
    setup_gw();
    char t[256];
    /* gateway's own topic: device = gateway id, area/line "_" */
    assert_int_equal(render(t, sizeof t, "{site}/{area}/{line}/{device}/{kind}", NULL, FB_KIND_STATUS), 0);
    assert_string_equal(t, "munich/_/_/edge-01/status");
    /* empty and NULL levels become "_", wildcards and '/' in values become '_' */
    assert_int_equal(render(t, sizeof t, "{site}/{area}/{line}/{device}/{kind}", &devs[1], FB_KIND_COMMAND), 0);
    assert_string_equal(t, "munich/_/_/dev_x_y/command");
    gw.site = "a/b+c#";
    assert_int_equal(render(t, sizeof t, "{site}/{device}/{kind}", &devs[0], "telemetry"), 0);
    assert_string_equal(t, "a_b_c_/press-01/telemetry");
    gw.site = "";
    assert_int_equal(render(t, sizeof t, "{site}/{device}/{kind}", &devs[0], NULL), 0);
    assert_string_equal(t, "_/press-01/_");
}

static void test_topic_render_errors(void **st)
{
    (void)st;
    setup_gw();
    char t[256];
    assert_int_equal(render(t, sizeof t, "{site}/{plant}/{device}/{kind}", &devs[0], "x"), FB_EINVAL);
    assert_int_equal(render(t, sizeof t, "{site}/{device/{kind}", &devs[0], "x"), FB_EINVAL);
    assert_int_equal(render(t, sizeof t, "{site", &devs[0], "x"), FB_EINVAL);
    assert_int_equal(render(t, sizeof t, "a/+/{device}/{kind}", &devs[0], "x"), FB_EINVAL);
    assert_int_equal(render(t, sizeof t, "a/#", &devs[0], "x"), FB_EINVAL);
}

static void test_topic_check(void **st)
{
    (void)st;
    struct fb_err e;
    assert_int_equal(fb_topic_check("{site}/{area}/{line}/{device}/{kind}", &e), 0);
    assert_int_equal(fb_topic_check("factory/{site}/area/{area}/line/{line}/device/{device}/{kind}", &e), 0);
    assert_int_equal(fb_topic_check("{gateway}/{device}-{kind}", &e), 0);

    memset(&e, 0, sizeof e);
    assert_int_equal(fb_topic_check("{site}/{plant}/{device}/{kind}", &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "{plant}"));
    assert_int_equal(fb_topic_check("{site}/+/{device}/{kind}", &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "'+'"));
    assert_int_equal(fb_topic_check("{site}/{device}/{kind}/#", &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "'#'"));
    assert_int_equal(fb_topic_check("{site}//{device}/{kind}", &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "empty"));
    assert_int_equal(fb_topic_check("/{device}/{kind}", &e), FB_EINVAL);
    assert_int_equal(fb_topic_check("{device}/{kind}/", &e), FB_EINVAL);
    assert_int_equal(fb_topic_check("{site}/{device", &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "unterminated"));
    assert_int_equal(fb_topic_check("{site}/{kind}", &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "{device}"));
    assert_int_equal(fb_topic_check("{site}/{device}", &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "{kind}"));
    assert_int_equal(fb_topic_check("", &e), FB_EINVAL);
    assert_int_equal(fb_topic_check(NULL, &e), FB_EINVAL);
    assert_int_equal(fb_topic_check("$SYS/{device}/{kind}", &e), FB_EINVAL);
    assert_int_equal(fb_topic_check("a}/{device}/{kind}", &e), FB_EINVAL);
}

/* ------------------------------------------------------------- telemetry */
#define T0 1795860000123000000LL /* 2026-11-28T10:00:00.123Z */

static json_t *parse(struct fb_buf *b)
{
    json_error_t je;
    json_t *j = json_loadb(b->p, b->len, 0, &je);
    if (!j) fail_msg("bad JSON (%s): %.*s", je.text, (int)b->len, b->p);
    return j;
}

static void add(struct fb_batch *b, uint32_t tag, uint32_t q, int64_t ts, struct fb_value v)
{
    struct fb_sample *s = &b->s[b->n++];
    memset(s, 0, sizeof *s);
    s->tag = tag;
    s->quality = q;
    s->ts_src = ts;
    s->ts_gw = ts;
    s->v = v;
}

static void test_telemetry_json(void **st)
{
    (void)st;
    setup_gw();
    struct fb_sample samples[8];
    struct fb_stats stats[1] = {
        {.mean = 12.25, .stddev = 0.5, .min = 11.5, .max = 13, .count = 60, .window_ns = 60000000000LL}};
    struct fb_batch b;
    memset(&b, 0, sizeof b);
    b.s = samples;
    b.cap = 8;
    b.stats = stats;
    b.nstats = 1;
    b.kind = FB_BATCH_DATA;
    b.device = 0;
    b.ts = T0;
    b.seq = 1234;
    const char *label = "he said \"hi\"\\\n\t\x01";

    add(&b, 0, FB_Q_GOOD, T0, (struct fb_value){.type = FB_T_FLOAT64, .f = 21.5});
    add(&b, 1, FB_Q_GOOD, T0 + 999999, (struct fb_value){.type = FB_T_INT64, .i = 9007199254740993LL});
    add(&b, 2, FB_Q_GOOD, T0, (struct fb_value){.type = FB_T_UINT64, .u = UINT64_MAX});
    add(&b, 3, FB_Q_GOOD, T0, (struct fb_value){.type = FB_T_STRING, .s = {label, (uint32_t)strlen(label)}});
    add(&b, 4, FB_Q_GOOD, T0, (struct fb_value){.type = FB_T_FLOAT32, .f = NAN});
    add(&b, 5, FB_Q_BAD_COMM, T0, (struct fb_value){.type = FB_T_FLOAT32, .f = 1.0});
    add(&b, 6, FB_Q_GOOD, T0 - 23000000, (struct fb_value){.type = FB_T_FLOAT64, .f = 12.5});
    b.s[6].flags = FB_SF_STATS | FB_SF_HEARTBEAT;
    b.s[6].stats = 0;
    add(&b, 7, FB_Q_UNC_LAST_USABLE, T0, (struct fb_value){.type = FB_T_INT16, .i = -5});

    struct fb_buf out;
    fb_buf_init(&out);
    /* the copy-the-names variant writes the same bytes (these names are plain) */
    for (uint32_t i = 0; i < gw.ntags; i++) assert_true(fb_json_plain(gw.tags[i].name));
    assert_false(fb_json_plain("a\"b"));
    assert_false(fb_json_plain("a\\b"));
    assert_false(fb_json_plain("tab\tx"));
    assert_false(fb_json_plain("\xc3\xa9"));
    fb_telemetry_json_plain(&out, &gw, &b);
    char *plain = strdup(fb_buf_cstr(&out));
    fb_buf_clear(&out);
    fb_telemetry_json(&out, &gw, &b);
    assert_string_equal(fb_buf_cstr(&out), plain);
    free(plain);
    /* uint64 max is beyond jansson's json_int_t: check the exact text */
    assert_non_null(strstr(fb_buf_cstr(&out), "\"big\":{\"v\":18446744073709551615,"));
    /* replace it by 0 so jansson can parse the rest */
    char *p = strstr(out.p, "18446744073709551615");
    memset(p, ' ', 20);
    p[0] = '1';
    json_t *j = parse(&out);

    assert_string_equal(json_string_value(json_object_get(j, "ts")), "2026-11-28T10:00:00.123Z");
    assert_int_equal(json_integer_value(json_object_get(j, "seq")), 1234);
    assert_string_equal(json_string_value(json_object_get(j, "device")), "press-01");
    json_t *vals = json_object_get(j, "values");
    assert_int_equal(json_object_size(vals), 8);
    assert_int_equal(json_object_size(j), 4);

    json_t *v = json_object_get(vals, "temperature");
    assert_true(json_is_real(json_object_get(v, "v")));
    assert_true(json_real_value(json_object_get(v, "v")) == 21.5);
    assert_string_equal(json_string_value(json_object_get(v, "q")), "good");
    assert_null(json_object_get(v, "reason"));
    assert_null(json_object_get(v, "ts"));
    assert_int_equal(json_object_size(v), 2);

    v = json_object_get(vals, "count"); /* 2^53 + 1 exact; ts within 1 ms → not shown */
    assert_true(json_is_integer(json_object_get(v, "v")));
    assert_true(json_integer_value(json_object_get(v, "v")) == 9007199254740993LL);
    assert_null(json_object_get(v, "ts"));

    v = json_object_get(vals, "label");
    assert_string_equal(json_string_value(json_object_get(v, "v")), label);

    v = json_object_get(vals, "nan"); /* NaN with good quality → null, bad */
    assert_true(json_is_null(json_object_get(v, "v")));
    assert_string_equal(json_string_value(json_object_get(v, "q")), "bad");
    assert_string_equal(json_string_value(json_object_get(v, "reason")), "BadOutOfRange");

    v = json_object_get(vals, "pressure"); /* bad: null with the reason, even with bits */
    assert_true(json_is_null(json_object_get(v, "v")));
    assert_string_equal(json_string_value(json_object_get(v, "q")), "bad");
    assert_string_equal(json_string_value(json_object_get(v, "reason")), "BadCommunicationError");

    v = json_object_get(vals, "speed"); /* own ts, stats, no heartbeat flag */
    assert_true(json_real_value(json_object_get(v, "v")) == 12.5);
    assert_string_equal(json_string_value(json_object_get(v, "ts")), "2026-11-28T10:00:00.100Z");
    assert_null(json_object_get(v, "heartbeat"));
    json_t *s = json_object_get(v, "stats");
    assert_non_null(s);
    assert_true(json_number_value(json_object_get(s, "mean")) == 12.25);
    assert_true(json_number_value(json_object_get(s, "stddev")) == 0.5);
    assert_true(json_number_value(json_object_get(s, "min")) == 11.5);
    assert_true(json_number_value(json_object_get(s, "max")) == 13);
    assert_int_equal(json_integer_value(json_object_get(s, "count")), 60);
    assert_string_equal(json_string_value(json_object_get(s, "window")), "60s");

    v = json_object_get(vals, "unc"); /* uncertain keeps its value and says why */
    assert_int_equal(json_integer_value(json_object_get(v, "v")), -5);
    assert_string_equal(json_string_value(json_object_get(v, "q")), "uncertain");
    assert_string_equal(json_string_value(json_object_get(v, "reason")), "UncertainLastUsableValue");

    json_decref(j);
    fb_buf_free(&out);
}

static void test_telemetry_edge_cases(void **st)
{
    (void)st;
    setup_gw();
    struct fb_sample samples[5];
    struct fb_stats stats[1] = {
        {.mean = NAN, .stddev = INFINITY, .min = 1, .max = 2, .count = 0, .window_ns = 250000000LL}};
    struct fb_batch b;
    memset(&b, 0, sizeof b);
    b.s = samples;
    b.stats = stats;
    b.nstats = 1;
    b.ts = T0;
    b.seq = UINT64_C(9007199254740993);
    /* empty batch */
    struct fb_buf out;
    fb_buf_init(&out);
    fb_telemetry_json(&out, &gw, &b);
    json_t *j = parse(&out);
    assert_int_equal(json_object_size(json_object_get(j, "values")), 0);
    assert_true(json_integer_value(json_object_get(j, "seq")) == 9007199254740993LL);
    json_decref(j);

    /* an unknown tag id is skipped, an infinite float64 is null/bad, stats NaN → null,
     * a stats index out of range is ignored */
    add(&b, 99, FB_Q_GOOD, T0, (struct fb_value){.type = FB_T_FLOAT64, .f = 1});
    add(&b, 0, FB_Q_GOOD, T0, (struct fb_value){.type = FB_T_FLOAT64, .f = -INFINITY});
    add(&b, 1, FB_Q_GOOD, T0, (struct fb_value){.type = FB_T_BOOL, .b = true});
    b.s[2].flags = FB_SF_STATS;
    b.s[2].stats = 0;
    add(&b, 2, FB_Q_GOOD, T0, (struct fb_value){.type = FB_T_INT32, .i = 3});
    b.s[3].flags = FB_SF_STATS;
    b.s[3].stats = 7;
    add(&b, 3, FB_Q_GOOD, T0, (struct fb_value){.type = FB_T_NONE});
    fb_buf_clear(&out);
    fb_telemetry_json(&out, &gw, &b);
    j = parse(&out);
    json_t *vals = json_object_get(j, "values");
    assert_int_equal(json_object_size(vals), 4);
    json_t *v = json_object_get(vals, "label"); /* no value at all: null, bad */
    assert_true(json_is_null(json_object_get(v, "v")));
    assert_string_equal(json_string_value(json_object_get(v, "reason")), "BadWaitingForInitialData");
    v = json_object_get(vals, "temperature");
    assert_true(json_is_null(json_object_get(v, "v")));
    assert_string_equal(json_string_value(json_object_get(v, "q")), "bad");
    v = json_object_get(vals, "count");
    assert_true(json_is_true(json_object_get(v, "v")));
    json_t *s = json_object_get(v, "stats");
    assert_true(json_is_null(json_object_get(s, "mean")));
    assert_true(json_is_null(json_object_get(s, "stddev")));
    assert_string_equal(json_string_value(json_object_get(s, "window")), "250ms");
    assert_int_equal(json_integer_value(json_object_get(s, "count")), 0);
    assert_null(json_object_get(json_object_get(vals, "big"), "stats"));
    json_decref(j);
    fb_buf_free(&out);
}

static void test_devstatus_json(void **st)
{
    (void)st;
    setup_gw();
    struct fb_batch b;
    memset(&b, 0, sizeof b);
    b.kind = FB_BATCH_DEVSTATE;
    b.device = 0;
    b.ts = T0;
    b.dev_state = FB_DEV_OFFLINE;
    snprintf(b.reason, sizeof b.reason, "connect: \"Connection refused\"");
    struct fb_buf out;
    fb_buf_init(&out);
    fb_devstatus_json(&out, &gw, &b);
    json_t *j = parse(&out);
    assert_string_equal(json_string_value(json_object_get(j, "device")), "press-01");
    assert_string_equal(json_string_value(json_object_get(j, "state")), "offline");
    assert_string_equal(json_string_value(json_object_get(j, "ts")), "2026-11-28T10:00:00.123Z");
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "connect: \"Connection refused\"");
    json_decref(j);

    b.dev_state = FB_DEV_ONLINE;
    b.reason[0] = 0;
    fb_buf_clear(&out);
    fb_devstatus_json(&out, &gw, &b);
    j = parse(&out);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "online");
    assert_null(json_object_get(j, "reason"));
    assert_int_equal(json_object_size(j), 3);
    json_decref(j);

    b.dev_state = FB_DEV_CONNECTING;
    memset(b.reason, 'x', sizeof b.reason); /* not NUL-terminated: bounded */
    fb_buf_clear(&out);
    fb_devstatus_json(&out, &gw, &b);
    j = parse(&out);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "connecting");
    assert_int_equal(strlen(json_string_value(json_object_get(j, "reason"))), sizeof b.reason);
    json_decref(j);
    fb_buf_free(&out);
}

/* ------------------------------------------------------- in-flight window */
#define MS 1000000LL

/* A link that carries one window per round trip (nothing queued anywhere):
 * feed `rounds` round trips of rtt, each acknowledging the whole window. */
static int64_t window_limited(struct fb_win *w, int64_t now, int64_t rtt, int rounds)
{
    for (int r = 0; r < rounds; r++) {
        uint32_t n = w->win;
        now += rtt;
        for (uint32_t i = 0; i < n; i++) fb_win_ack(w, rtt, now);
    }
    return now;
}

static void test_window(void **st)
{
    (void)st;
    struct fb_win w;
    int64_t now = 1000 * MS;

    /* starts at its floor; a small max_inflight is the floor */
    fb_win_init(&w, 1000, now);
    assert_int_equal(w.win, FB_WIN_FLOOR);
    struct fb_win small;
    fb_win_init(&small, 10, now);
    assert_int_equal(small.win, 10);
    assert_int_equal(fb_win_low(&small), 8);
    fb_win_init(&small, 1, now);
    assert_int_equal(small.win, 1);
    assert_int_equal(fb_win_low(&small), 0);

    /* a 50 ms link the window limits: it grows (about doubling per measured
     * interval) until max_inflight, within a few seconds */
    uint32_t before = w.win;
    now = window_limited(&w, now, 50 * MS, 4);
    assert_true(w.win > before + before / 2);
    now = window_limited(&w, now, 50 * MS, 40);
    assert_int_equal(w.win, 1000);
    assert_int_equal(fb_win_low(&w), 750);

    /* a fast link (round trips of 100 us) grows the window too; then the
     * broker falls behind: it still takes 10,000 messages/s, but a queue makes
     * every round trip 20 ms.  The window shrinks to what the link holds
     * (2 x 10,000/s x 100 us + floor = 34), not the 200 the queue would hold. */
    fb_win_init(&w, 1000, now);
    now = window_limited(&w, now, 100000, 2000);
    assert_int_equal(w.win, 1000);
    for (int i = 0; i < 10000; i++) { /* 1 s at 10,000/s, each 20 ms in flight */
        now += 100000;
        fb_win_ack(&w, 20 * MS, now);
    }
    assert_true(w.win <= FB_WIN_FLOOR + 3);
    assert_true(w.win >= FB_WIN_FLOOR);

    /* the least RTT is that of the last 10-20 s: after a route became slower
     * (every round trip 40 ms now), the window again covers the new link */
    for (int i = 0; i < 3000; i++) { /* 30 s at 100/s */
        now += 10 * MS;
        fb_win_ack(&w, 40 * MS, now);
    }
    assert_int_equal(w.rtt_min, 40 * MS);
    /* 100/s x 40 ms x 2 + 32 = 40 */
    assert_true(w.win >= 39 && w.win <= 41);

    /* a broker's Receive Maximum caps it; a later connection without one
     * gives it max_inflight and the floor back */
    now = window_limited(&w, now, 40 * MS, 40);
    assert_int_equal(w.win, 1000);
    fb_win_cap(&w, 20);
    assert_int_equal(w.win, 20);
    assert_int_equal(w.floor, 20);
    now = window_limited(&w, now, 40 * MS, 20);
    assert_int_equal(w.win, 20);
    fb_win_cap(&w, 1000);
    assert_int_equal(w.floor, FB_WIN_FLOOR);
    now = window_limited(&w, now, 40 * MS, 40);
    assert_int_equal(w.win, 1000);

    /* clock oddities (0 or negative RTT) do not break it */
    fb_win_ack(&w, 0, now);
    fb_win_ack(&w, -5, now + 30 * MS);
    assert_true(w.win >= FB_WIN_FLOOR && w.win <= 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_all_placeholders), cmocka_unit_test(test_topic_gateway_and_empty),
        cmocka_unit_test(test_topic_render_errors),    cmocka_unit_test(test_topic_check),
        cmocka_unit_test(test_telemetry_json),         cmocka_unit_test(test_telemetry_edge_cases),
        cmocka_unit_test(test_devstatus_json),         cmocka_unit_test(test_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
