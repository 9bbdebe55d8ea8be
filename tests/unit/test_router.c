/* test_router.c — the command router's request checks that need no device:
 * the "ts" field (strict RFC 3339 / epoch milliseconds, range-checked, never
 * an integer overflow — issue 14, defect 1).  The gateway is built by hand
 * with one read-only tag, so a request that passes the age check is answered
 * "tag is read-only" and one that does not is answered "bad ts".
 * Also who may command: commands.allow and a tag's write_roles, matched
 * against the sender (via, role) of each command. */
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

/* The response to {"id":1,"write":{<tag>:<value>}} from sender via[:role]. */
static char *answer_from(const char *via, const char *role, const char *tagname, const char *value)
{
    char payload[512];
    snprintf(payload, sizeof payload, "{\"id\":1,\"write\":{\"%s\":%s}}", tagname, value);
    struct fb_cmd c;
    memset(&c, 0, sizeof c);
    c.payload = payload;
    c.len = strlen(payload);
    c.qos = 1;
    snprintf(c.source, sizeof c.source, "%s:test", via);
    snprintf(c.via, sizeof c.via, "%s", via);
    snprintf(c.role, sizeof c.role, "%s", role);
    char *resp = NULL;
    size_t len = 0;
    fb_cmd_process(&gw, &c, &resp, &len);
    return resp;
}

static uint16_t acl(const char *const *pats)
{
    uint32_t n = 0;
    while (pats[n]) n++;
    char **p = calloc(n ? n : 1, sizeof *p);
    for (uint32_t i = 0; i < n; i++) p[i] = strdup(pats[i]);
    return fb_gw_acl_add(&gw, p, n);
}

static void acls_free(void)
{
    for (uint32_t i = 0; i < gw.nacls; i++) {
        for (uint32_t k = 0; k < gw.acls[i].n; k++) free(gw.acls[i].pat[k]);
        free(gw.acls[i].pat);
    }
    free(gw.acls);
    gw.acls = NULL;
    gw.nacls = 0;
}

static void expect_in(char *resp, const char *want)
{
    if (!strstr(resp, want)) fail_msg("expected '%s' in %s", want, resp);
    free(resp);
}

/* The entry forms and how they match (via, role). */
static void test_sender_patterns(void **st)
{
    (void)st;
    char why[200];
    assert_int_equal(fb_cmd_pattern_check("mqtt", why, sizeof why), 0);
    assert_int_equal(fb_cmd_pattern_check("sparkplug", why, sizeof why), 0);
    assert_int_equal(fb_cmd_pattern_check("http:operator", why, sizeof why), 0);
    assert_int_equal(fb_cmd_pattern_check("*:operator", why, sizeof why), 0);
    assert_int_equal(fb_cmd_pattern_check("mqt", why, sizeof why), -1);
    assert_non_null(strstr(why, "unknown command source 'mqt'"));
    assert_int_equal(fb_cmd_pattern_check("*", why, sizeof why), -1);
    assert_int_equal(fb_cmd_pattern_check("http:", why, sizeof why), -1);
    assert_int_equal(fb_cmd_pattern_check("http:Op erator", why, sizeof why), -1);
    assert_non_null(strstr(why, "role"));

    char *pats[] = {(char *)"mqtt", (char *)"http:operator", (char *)"*:admin"};
    struct fb_acl a = {pats, 3};
    assert_true(fb_cmd_acl_allows(&a, "mqtt", ""));
    assert_true(fb_cmd_acl_allows(&a, "mqtt", "viewer")); /* a bare source: any role */
    assert_false(fb_cmd_acl_allows(&a, "sparkplug", ""));
    assert_true(fb_cmd_acl_allows(&a, "http", "operator"));
    assert_false(fb_cmd_acl_allows(&a, "http", "viewer"));
    assert_false(fb_cmd_acl_allows(&a, "http", ""));
    assert_true(fb_cmd_acl_allows(&a, "lua", "admin"));
    assert_false(fb_cmd_acl_allows(&a, "", "")); /* a source that did not say what it is */
    struct fb_acl none = {NULL, 0};
    assert_false(fb_cmd_acl_allows(&none, "mqtt", ""));
}

/* commands.allow refuses a whole command from an unlisted sender, with the
 * reason; write_roles refuses one tag; identical lists are stored once. */
static void test_allow_and_write_roles(void **st)
{
    (void)st;
    setup_gw(0);
    static struct fb_tag tags[2];
    memset(tags, 0, sizeof tags);
    tags[0].type = FB_T_INT16, tags[0].access = FB_ACC_RW, tags[0].name = (char *)"sp";
    static struct fb_tag_proc pr = {.has_max = true, .max = 10}; /* 99 fails the range check after the role check */
    tags[0].proc = &pr;
    tags[1] = tags[0];
    tags[1].name = (char *)"free";
    tags[1].id = 1;
    dev.ntags = 2;
    gw.tags = tags;
    gw.ntags = 2;

    /* no lists: every sender reaches the range check */
    expect_in(answer_from("mqtt", "", "sp", "99"), "above maximum 10");

    static const char *const allow[] = {"sparkplug", "http:operator", NULL};
    gw.cmd_allow = acl(allow);
    assert_int_equal(acl(allow), gw.cmd_allow); /* stored once */
    assert_int_equal(gw.nacls, 1);
    expect_in(answer_from("mqtt", "", "sp", "99"),
              "\"ok\":false,\"error\":\"commands from mqtt are not allowed (commands.allow: [sparkplug, "
              "http:operator])\"");
    expect_in(answer_from("http", "viewer", "sp", "99"), "commands from http:viewer are not allowed");
    expect_in(answer_from("", "", "sp", "99"), "commands from (unknown source) are not allowed");
    expect_in(answer_from("http", "operator", "sp", "99"), "above maximum 10");
    expect_in(answer_from("sparkplug", "", "sp", "99"), "above maximum 10");

    static const char *const roles[] = {"http:operator", NULL};
    static struct fb_tag_proc pr_roles; /* tag 1 keeps pr: no write_roles */
    pr_roles = pr;
    pr_roles.write_roles = acl(roles);
    tags[0].proc = &pr_roles;
    char *r = answer_from("sparkplug", "", "sp", "99");
    expect_in(strdup(r),
              "\"sp\":{\"ok\":false,\"error\":\"not allowed for sparkplug (write_roles: [http:operator])\"}");
    free(r);
    /* the other tag of the same command is not restricted */
    r = answer_from("sparkplug", "", "free", "99");
    expect_in(r, "above maximum 10");
    expect_in(answer_from("http", "operator", "sp", "99"), "above maximum 10");

    static const char *const nobody[] = {NULL};
    gw.cmd_allow = acl(nobody); /* allow: [] — commands off */
    expect_in(answer_from("sparkplug", "", "sp", "1"), "commands from sparkplug are not allowed (commands.allow: [])");
    acls_free();
    gw.cmd_allow = 0;
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
        cmocka_unit_test(test_sender_patterns),
        cmocka_unit_test(test_allow_and_write_roles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
