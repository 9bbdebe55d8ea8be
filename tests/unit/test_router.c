/* test_router.c — the command router's request checks that need no device:
 * the "ts" field (strict RFC 3339 / epoch milliseconds, range-checked, never
 * an integer overflow — issue 14, defect 1).  The gateway is built by hand
 * with one read-only tag, so a request that passes the age check is answered
 * "tag is read-only" and one that does not is answered "bad ts". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fb.h"
#include "core/log.h"
#include "core/router.h"

static struct fb_tag tag;
static struct fb_device dev;
static struct fb_gateway gw;

static void setup_gw(int64_t max_age_ns)
{
    memset(&tag, 0, sizeof tag);
    memset(&dev, 0, sizeof dev);
    memset(&gw, 0, sizeof gw);
    tag.type = FB_T_INT16;
    tag.access = FB_ACC_READ;
    tag.name = (char *)"ro";
    dev.name = (char *)"d";
    dev.ntags = 1;
    dev.gw = &gw;
    gw.devs = &dev;
    gw.ndevs = 1;
    gw.tags = &tag;
    gw.ntags = 1;
    gw.cmd_max_age_ns = max_age_ns;
}

/* The response to {"id":1,"ts":<ts_json>,"write":{"ro":1}} (malloc'd). */
static char *answer(const char *ts_json)
{
    char payload[512];
    snprintf(payload, sizeof payload, "{\"id\":1,\"ts\":%s,\"write\":{\"ro\":1}}", ts_json);
    struct fb_cmd c;
    memset(&c, 0, sizeof c);
    c.payload = payload;
    c.len = strlen(payload);
    c.qos = 1;
    snprintf(c.source, sizeof c.source, "test");
    char *resp = NULL;
    size_t len = 0;
    fb_cmd_process(&gw, &c, &resp, &len);
    return resp;
}

static void expect_bad_ts(const char *ts_json)
{
    char *r = answer(ts_json);
    if (!strstr(r, "bad \\\"ts\\\"")) fail_msg("ts %s was accepted: %s", ts_json, r);
    free(r);
}

static void expect_ts_ok(const char *ts_json)
{
    char *r = answer(ts_json);
    if (!strstr(r, "tag is read-only")) fail_msg("ts %s was refused: %s", ts_json, r);
    free(r);
}

/* Refused whatever max_age says: not a time, out of range, or a number that
 * overflowed int64 nanoseconds (a UBSan abort before the fix). */
static void test_ts_refused(void **st)
{
    (void)st;
    static const char *const bad[] = {
        "9223372036854775807",
        "-9223372036854775807",
        "-1",
        "9223372036854775",
        "7258118400000",
        "\"2026-01-01T00:00:1e300Z\"",
        "\"2026-13-45T99:99:99Z\"",
        "\"2026-02-30T00:00:00Z\"",
        "\"2025-02-29T00:00:00Z\"",
        "\"2026-01-01T24:00:00Z\"",
        "\"2026-01-01T00:60:00Z\"",
        "\"2026-01-01T00:00:61Z\"",
        "\"2026-00-10T00:00:00Z\"",
        "\"2026-01-00T00:00:00Z\"",
        "\"2026-01-01T00:00:00\"", /* no offset */
        "\"2026-01-01T00:00:00+24:00\"",
        "\"2026-01-01T00:00:00+01:60\"",
        "\"2026-01-01T00:00:00+1:00\"",
        "\"2026-01-01T00:00:00.Z\"",
        "\"2026-01-01T00:00:00ZZ\"",
        "\"2026-1-01T00:00:00Z\"",
        "\"2026-01-01 00:00:00Z\"",
        "\"+2026-01-01T00:00:00Z\"",
        "\"1969-12-31T23:59:59Z\"",
        "\"2200-01-01T00:00:00Z\"",
        "\"9999-12-31T23:59:59Z\"",
        "\"0000-01-01T00:00:00Z\"",
        "\"1970-01-01T00:00:00+00:01\"",
        "\"\"",
        "1.5e12",
        "true",
        "null",
        "[]",
        "{}",
    };
    setup_gw(0); /* no max_age: only the time stamp itself decides */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) expect_bad_ts(bad[i]);
    setup_gw(30000000000LL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) expect_bad_ts(bad[i]);
}

static void test_ts_accepted(void **st)
{
    (void)st;
    setup_gw(0);
    expect_ts_ok("\"2026-11-28T10:00:00Z\"");
    expect_ts_ok("\"2026-11-28t10:00:00.123456789123z\"");
    expect_ts_ok("\"2024-02-29T23:59:60+05:30\"");
    expect_ts_ok("\"1970-01-01T00:00:00Z\"");
    expect_ts_ok("\"2199-12-31T23:59:59.999Z\"");
    expect_ts_ok("0");
    expect_ts_ok("1795860000000");
    expect_ts_ok("7258118399999");
    /* with max_age, an old but valid time stamp is "too old", not "bad" */
    setup_gw(30000000000LL);
    char *r = answer("\"2020-01-01T00:00:00Z\"");
    assert_non_null(strstr(r, "request too old"));
    free(r);
    char now[64];
    snprintf(now, sizeof now, "%lld", (long long)(fb_now_ns() / 1000000));
    expect_ts_ok(now);
}

static void test_ts_values(void **st)
{
    (void)st;
    static const struct {
        const char *json;
        int64_t ns;
    } cases[] = {
        {"\"1970-01-01T00:00:00Z\"", 0},
        {"\"1970-01-01T01:00:00+01:00\"", 0},
        {"\"1969-12-31T23:00:00-01:00\"", 0},
        {"\"2026-11-28T10:00:00.123Z\"", 1795860000123000000LL},
        {"\"2026-11-28T10:00:00.000000001Z\"", 1795860000000000001LL},
        {"\"2000-03-01T00:00:00Z\"", 951868800000000000LL},
        {"\"2199-12-31T23:59:59Z\"", 7258118399000000000LL},
        {"1795860000123", 1795860000123000000LL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_error_t je;
        json_t *j = json_loads(cases[i].json, JSON_DECODE_ANY, &je);
        assert_non_null(j);
        int64_t ns = -1;
        assert_int_equal(fb_cmd_parse_ts(j, &ns), 0);
        if (ns != cases[i].ns)
            fail_msg("%s: %lld, expected %lld", cases[i].json, (long long)ns, (long long)cases[i].ns);
        json_decref(j);
    }
}

int main(void)
{
    fb_log_init(-1, FB_LOG_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ts_refused),
        cmocka_unit_test(test_ts_accepted),
        cmocka_unit_test(test_ts_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
