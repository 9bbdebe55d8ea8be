/* test_influx.c — the InfluxDB sink's pure parts: line protocol escaping and
 * values (lp.c), the `influx:` section with its errors, templates and map
 * rules (schema.c), and health points from status documents.  Expected
 * strings follow InfluxDB's line-protocol rules; the same encodings are
 * written to and read back from a real InfluxDB 1.6 in
 * tests/system/test_influx.py. */
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
#include "north/influx/influx.h"
#include "north/influx/lp.h"
#include "north/influx/schema.h"


static const char *name(enum fb_lp_elem e, const char *s)
{
    static struct fb_buf b;
    fb_buf_free(&b);
    fb_buf_init(&b);
    if (!fb_lp_name(&b, e, s, strlen(s))) return NULL;
    return fb_buf_cstr(&b);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(name(FB_LP_MEASUREMENT, "press-01"), "press-01");
    assert_string_equal(name(FB_LP_MEASUREMENT, "a b,c=d"), "a\\ b\\,c=d");
    assert_string_equal(name(FB_LP_KEY, "a b,c=d"), "a\\ b\\,c\\=d");
    /* newline (would end the line) and other control characters */
    assert_string_equal(name(FB_LP_KEY, "x\ny\tz\r"), "x_y_z_");
    /* backslashes: kept unless they would pair with our escape or the separator */
    assert_string_equal(name(FB_LP_KEY, "a\\b"), "a\\b");
    assert_string_equal(name(FB_LP_KEY, "a\\"), "a_");
    assert_string_equal(name(FB_LP_KEY, "a\\\\"), "a\\\\");
    assert_string_equal(name(FB_LP_KEY, "a\\,b"), "a_\\,b");
    assert_string_equal(name(FB_LP_KEY, "a\\\\,b"), "a\\\\\\,b");
    assert_string_equal(name(FB_LP_KEY, "a\\=b"), "a_\\=b");
    assert_string_equal(name(FB_LP_MEASUREMENT, "a\\=b"), "a\\=b"); /* = is plain in a measurement */
    assert_string_equal(name(FB_LP_KEY, "Temperatur °C"), "Temperatur\\ °C");
    assert_null(name(FB_LP_KEY, ""));
}

static const char *str(const char *s)
{
    static struct fb_buf b;
    fb_buf_free(&b);
    fb_buf_init(&b);
    fb_lp_str(&b, s, strlen(s));
    return fb_buf_cstr(&b);
}

static void test_strings(void **state)
{
    (void)state;
    assert_string_equal(str("PX-200"), "\"PX-200\"");
    assert_string_equal(str("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_string_equal(str("line1\nline2, x=y"), "\"line1\nline2, x=y\"");
    assert_string_equal(str(""), "\"\"");
}

static int val(enum fb_lp_type t, struct fb_value v, char *out, size_t n)
{
    struct fb_buf b;
    fb_buf_init(&b);
    fb_buf_puts(&b, "x"); /* something before: a refusal must leave it as it was */
    int rc = fb_lp_value(&b, t, &v);
    assert_int_equal(rc, fb_lp_check(t, &v));
    if (rc < 0) assert_int_equal(b.len, 1);
    snprintf(out, n, "%s", fb_buf_cstr(&b) + 1);
    fb_buf_free(&b);
    return rc;
}

static struct fb_value V(enum fb_type t) {
    struct fb_value v;
    memset(&v, 0, sizeof v);
    v.type = (uint8_t)t;
    return v;
}

static void
test_values(void **state)
{
    (void)state;
    char o[64];
    struct fb_value v = V(FB_T_FLOAT64);
    v.f = 21.5;
    assert_int_equal(val(FB_LP_FLOAT, v, o, sizeof o), 0);
    assert_string_equal(o, "21.5");
    v.f = 21;
    val(FB_LP_FLOAT, v, o, sizeof o);
    assert_string_equal(o, "21"); /* a float field: no i */
    v.f = 1e21;
    val(FB_LP_FLOAT, v, o, sizeof o);
    assert_string_equal(o, "1e+21");
    v.f = NAN;
    assert_int_equal(val(FB_LP_FLOAT, v, o, sizeof o), FB_ERANGE);
    v.f = INFINITY;
    assert_int_equal(val(FB_LP_FLOAT, v, o, sizeof o), FB_ERANGE);
    /* float32: the shortest text of the float, not of its double widening */
    v = V(FB_T_FLOAT32);
    v.f = (double)0.1f;
    val(FB_LP_FLOAT32, v, o, sizeof o);
    assert_string_equal(o, "0.1");
    /* integers */
    v = V(FB_T_INT64);
    v.i = INT64_MIN;
    val(FB_LP_INT, v, o, sizeof o);
    assert_string_equal(o, "-9223372036854775808i");
    v = V(FB_T_UINT64);
    v.u = UINT64_MAX;
    assert_int_equal(val(FB_LP_INT, v, o, sizeof o), FB_ERANGE);
    assert_int_equal(val(FB_LP_UINT, v, o, sizeof o), 0);
    assert_string_equal(o, "18446744073709551615u");
    v.u = 42;
    val(FB_LP_INT, v, o, sizeof o);
    assert_string_equal(o, "42i");
    v = V(FB_T_INT16);
    v.i = -5;
    assert_int_equal(val(FB_LP_UINT, v, o, sizeof o), FB_ERANGE);
    val(FB_LP_FLOAT, v, o, sizeof o); /* an integer into a float series */
    assert_string_equal(o, "-5");
    /* a float into an integer series only when integral and in range */
    v = V(FB_T_FLOAT64);
    v.f = 7;
    val(FB_LP_INT, v, o, sizeof o);
    assert_string_equal(o, "7i");
    v.f = 7.5;
    assert_int_equal(val(FB_LP_INT, v, o, sizeof o), FB_ERANGE);
    v.f = 9223372036854775808.0;
    assert_int_equal(val(FB_LP_INT, v, o, sizeof o), FB_ERANGE);
    /* bools and strings only as themselves */
    v = V(FB_T_BOOL);
    v.b = true;
    val(FB_LP_BOOL, v, o, sizeof o);
    assert_string_equal(o, "true");
    assert_int_equal(val(FB_LP_FLOAT, v, o, sizeof o), FB_EINVAL);
    assert_int_equal(val(FB_LP_INT, v, o, sizeof o), FB_EINVAL);
    v = V(FB_T_STRING);
    v.s.p = "a\"b";
    v.s.len = 3;
    val(FB_LP_STRING, v, o, sizeof o);
    assert_string_equal(o, "\"a\\\"b\"");
    assert_int_equal(val(FB_LP_FLOAT, v, o, sizeof o), FB_EINVAL);
    v = V(FB_T_INT32);
    assert_int_equal(val(FB_LP_STRING, v, o, sizeof o), FB_EINVAL);
    assert_int_equal(val(FB_LP_BOOL, v, o, sizeof o), FB_EINVAL);
}

static void test_types_and_time(void **state)
{
    (void)state;
    assert_int_equal(fb_lp_type_of(FB_T_BOOL, false), FB_LP_BOOL);
    assert_int_equal(fb_lp_type_of(FB_T_UINT32, false), FB_LP_INT);
    assert_int_equal(fb_lp_type_of(FB_T_UINT64, false), FB_LP_INT);
    assert_int_equal(fb_lp_type_of(FB_T_UINT64, true), FB_LP_UINT);
    assert_int_equal(fb_lp_type_of(FB_T_FLOAT32, false), FB_LP_FLOAT32);
    assert_int_equal(fb_lp_type_of(FB_T_FLOAT64, false), FB_LP_FLOAT);
    assert_int_equal(fb_lp_type_of(FB_T_STRING, false), FB_LP_STRING);
    struct fb_buf b;
    fb_buf_init(&b);
    fb_lp_time(&b, 1700000000123456789LL, FB_LP_NS);
    fb_buf_putc(&b, ' ');
    fb_lp_time(&b, 1700000000123456789LL, FB_LP_US);
    fb_buf_putc(&b, ' ');
    fb_lp_time(&b, 1700000000123456789LL, FB_LP_MS);
    fb_buf_putc(&b, ' ');
    fb_lp_time(&b, 1700000000123456789LL, FB_LP_S);
    fb_buf_putc(&b, ' ');
    fb_lp_time(&b, -1, FB_LP_MS); /* floor, never rounded towards the future */
    assert_string_equal(fb_buf_cstr(&b), "1700000000123456789 1700000000123456 1700000000123 1700000000 -1");
    fb_buf_free(&b);
    assert_string_equal(fb_lp_precision_param(FB_LP_US, false), "u"); /* 1.x takes "us" as ns */
    assert_string_equal(fb_lp_precision_param(FB_LP_US, true), "us");
    assert_string_equal(fb_lp_precision_param(FB_LP_MS, false), "ms");
}

/* ----------------------------------------------------------------- config */
static const char *write_tmp(const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/cfg.yaml", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int load(const char *yaml, char **diag, struct fb_gateway **gw)
{
    size_t len;
    FILE *f = open_memstream(diag, &len);
    struct fb_config_opts o = {false, f};
    int rc = fb_config_load(write_tmp(yaml), &o, gw);
    fclose(f);
    return rc;
}

#define DEVS                                                                                                           \
    "devices:\n"                                                                                                       \
    "  - name: press-01\n    url: \"sim://a\"\n    area: assembly\n    line: \"01\"\n    tags:\n"                      \
    "      - {name: temperature, addr: \"const:1\"}\n      - {name: count, addr: \"counter\", type: uint32}\n"         \
    "  - name: oven\n    url: \"sim://b\"\n    tags:\n      - {name: zone.1, addr: \"const:1\"}\n"

static const struct fb_influx_cfg *load_ok(const char *yaml, struct fb_gateway **gw)
{
    char *diag = NULL;
    int rc = load(yaml, &diag, gw);
    if (rc) fprintf(stderr, "%s", diag);
    free(diag);
    assert_int_equal(rc, 0);
    assert_int_equal((*gw)->nsinks, 1);
    return (*gw)->sinks[0].cfg;
}

static void resolve(const struct fb_influx_cfg *c, const struct fb_gateway *gw, uint32_t dev, const char *tag,
                    const char *want_series, const char *want_field)
{
    const struct fb_device *d = &gw->devs[dev];
    struct fb_ix_names n = {{gw->id, gw->site, d->area, d->line, d->name, tag}};
    struct fb_buf s, f;
    fb_buf_init(&s);
    fb_buf_init(&f);
    bool ok = fb_ix_resolve(c, &n, &s, &f);
    if (!want_series) {
        assert_false(ok);
    } else {
        assert_true(ok);
        assert_string_equal(fb_buf_cstr(&s), want_series);
        assert_string_equal(fb_buf_cstr(&f), want_field);
    }
    fb_buf_free(&s);
    fb_buf_free(&f);
}

static void test_cfg_defaults(void **state)
{
    (void)state;
    struct fb_gateway *gw = NULL;
    const struct fb_influx_cfg *c =
        load_ok("gateway: {id: gw1, site: munich}\ninflux: {url: \"http://127.0.0.1:8086/\", db: plant}\n" DEVS, &gw);
    assert_false(c->api2);
    assert_string_equal(c->write_url, "http://127.0.0.1:8086/write?db=plant&precision=ns");
    assert_int_equal(c->batch_lines, 5000);
    assert_int_equal(c->gzip_level, 1);
    assert_int_equal(c->max_inflight, 1);
    assert_int_equal(c->quality, FB_IXQ_FIELD);
    assert_true(c->stats);
    /* measurement = device, tags gateway/site/area/line/device sorted, field = tag; empty tags left out */
    resolve(c, gw, 0, "temperature", "press-01,area=assembly,device=press-01,gateway=gw1,line=01,site=munich",
            "temperature");
    resolve(c, gw, 1, "zone.1", "oven,device=oven,gateway=gw1,site=munich", "zone.1");
    resolve(c, gw, 0, "time", "press-01,area=assembly,device=press-01,gateway=gw1,line=01,site=munich", "time_");
    fb_gateway_free(gw);
}

static void test_cfg_v2_and_rules(void **state)
{
    (void)state;
    setenv("FB_TEST_INFLUX_TOKEN", "tok en", 1);
    struct fb_gateway *gw = NULL;
    const struct fb_influx_cfg *c =
        load_ok("gateway: {id: gw1, site: munich}\n"
                "influx:\n"
                "  url: https://influx.example:8443/prefix\n"
                "  org: acme & co\n"
                "  bucket: plant/raw\n"
                "  token: \"${FB_TEST_INFLUX_TOKEN}\"\n"
                "  precision: us\n"
                "  measurement: \"{site}_{device}\"\n"
                "  tags: {gw: \"{gateway}\", device: \"{device}\"}\n"
                "  map:\n"
                "    - {device: \"press-*\", measurement: presses, tags: {line: \"{line}\", gw: ~}}\n"
                "    - {device: press-01, tag: count, field: \"n_{tag}\"}\n"
                "    - {device: oven, skip: true}\n" DEVS,
                &gw);
    assert_true(c->api2);
    assert_string_equal(
        c->write_url,
        "https://influx.example:8443/prefix/api/v2/write?org=acme%20%26%20co&bucket=plant%2Fraw&precision=us");
    assert_string_equal(c->token, "tok en");
    resolve(c, gw, 0, "temperature", "presses,device=press-01,line=01", "temperature");
    resolve(c, gw, 0, "count", "presses,device=press-01,line=01", "n_count");
    resolve(c, gw, 1, "zone.1", NULL, NULL);
    fb_gateway_free(gw);
    unsetenv("FB_TEST_INFLUX_TOKEN");
}

/* A config reload keeps the sink only when every setting of its section is
 * the same (fb_ix_cfg_equal); the devices do not count. */
static void test_cfg_equal(void **state)
{
    (void)state;
#define IXS "gateway: {id: gw1, site: munich}\ninflux:\n  url: \"http://127.0.0.1:8086/\"\n  db: plant\n"
    static const char *const variants[] = {
        IXS "  batch: {size: 100}\n",
        IXS "  batch: {interval: 2s}\n",
        IXS "  precision: ms\n",
        IXS "  quality: tag\n",
        IXS "  measurement: \"{site}\"\n",
        IXS "  tags: {dev: \"{device}\"}\n",
        IXS "  map: [{device: oven, skip: true}]\n",
        IXS "  map: [{device: oven, field: \"x_{tag}\"}]\n",
        IXS "  retry: {max: 5s}\n",
        IXS "  gzip: 0\n",
        IXS "  stats: false\n",
        IXS "  rp: autogen\n",
        "gateway: {id: gw1, site: munich}\ninflux: {url: \"http://127.0.0.1:8087/\", db: plant}\n",
    };
    struct fb_gateway *ga = NULL, *gb = NULL;
    const struct fb_influx_cfg *a = load_ok(IXS DEVS, &ga);
    /* the same section, other devices: equal */
    const struct fb_influx_cfg *b =
        load_ok(IXS "devices:\n  - name: x\n    url: \"sim://x\"\n    tags: [{name: t, addr: \"const:1\"}]\n", &gb);
    assert_true(fb_ix_cfg_equal(a, b));
    assert_true(fb_ix_cfg_equal(b, a));
    fb_gateway_free(gb);
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        char yaml[1024];
        snprintf(yaml, sizeof yaml, "%s%s", variants[i], DEVS);
        b = load_ok(yaml, &gb);
        if (fb_ix_cfg_equal(a, b) || fb_ix_cfg_equal(b, a)) fail_msg("equal although changed: %s", variants[i]);
        fb_gateway_free(gb);
    }
    fb_gateway_free(ga);
#undef IXS
}

static void expect(const char *yaml, const char *msg)
{
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    int rc = load(yaml, &diag, &gw);
    if (rc == 0 || !strstr(diag, msg)) {
        fprintf(stderr, "want error containing: %s\n--- got (rc %d):\n%s---\n", msg, rc, diag);
        fail();
    }
    free(diag);
    fb_gateway_free(gw);
}

static void test_cfg_errors(void **state)
{
    (void)state;
#define GW "gateway: {id: gw1}\n"
    expect(GW "influx: {db: x}\n", "influx.url is required");
    expect(GW "influx: {url: \"mqtt://h\", db: x}\n", "cfg.yaml:2:15: influx.url: scheme must be http:// or https://");
    expect(GW "influx: {url: \"http://h\"}\n", "give db: (InfluxDB 1.x) or org: and bucket: (2.x)");
    expect(GW "influx: {url: \"http://h\", db: x, bucket: y, org: o}\n", "not both");
    expect(GW "influx: {url: \"http://h\", bucket: y}\n", "influx.org is required");
    expect(GW "influx: {url: \"http://h\", db: x, token: abc}\n", "a literal token is not allowed");
    setenv("FB_TEST_INFLUX_PW", "pw", 1);
    expect(GW "influx: {url: \"http://h\", db: x, password: \"${FB_TEST_INFLUX_PW}\"}\n", "needs influx.username");
    expect(GW "influx: {url: \"http://h\", db: x, measurement: \"{plant}\"}\n",
           "cfg.yaml:2:47: influx.measurement: template \"{plant}\": unknown placeholder {plant}");
    expect(GW "influx: {url: \"http://h\", db: x, precision: n}\n", "influx.precision");
    expect(GW "influx: {url: \"http://h\", db: x, quality: maybe}\n", "influx.quality");
    expect(GW "influx: {url: \"http://h\", db: x, tls: {ca: /x}}\n", "influx.tls needs an https:// url");
    expect(GW "influx: {url: \"http://h\", db: x, tags: {time: \"{site}\"}}\n", "'time' cannot be a tag key");
    expect(GW "influx: {url: \"http://h\", db: x, batch: {size: 0}}\n", "influx.batch.size");
    expect(GW "influx: {url: \"http://h\", db: x, gzip: 12}\n", "influx.gzip");
    expect(GW "influx: {url: \"http://h\", db: x, map: {device: a}}\n", "influx.map must be a list");
    expect(GW "influx: {url: \"http://h\", db: x, map: [{device: a, mesurement: b}]}\n",
           "unknown key 'mesurement' in influx.map[0] (did you mean 'measurement'?)");
    expect(GW "influx: {url: \"http://h\", db: x, create_databse: true}\n", "did you mean 'create_database'");
    expect(GW "influx: {url: \"http://h\", bucket: b, org: o, create_database: true}\n", "for the 1.x API");
    expect(GW "influx: {url: \"http://h\", db: x, retry: {min: 10s, max: 1s}}\n", "min is larger than max");
#undef GW
}

/* ----------------------------------------------------------------- health */
static void test_health(void **state)
{
    (void)state;
    const char *doc =
        "{\"gateway\":\"gw 1\",\"online\":true,\"health\":\"ok\",\"ts\":\"2026-11-28T10:00:00.123Z\","
        "\"version\":\"0.1.0\",\"uptime_s\":3600,\"clock_synced\":true,\"cpu_s\":1,\"rss_bytes\":7524352,"
        "\"devices\":{\"press-01\":{\"state\":\"online\",\"ne107\":\"OK\",\"requests\":3600,\"errors\":0,"
        "\"rtt_ms\":0},\"oven\":{\"state\":\"offline\",\"ne107\":\"Failure\",\"requests\":1,\"errors\":1,"
        "\"rtt_ms\":0.5}},\"sinks\":{\"influx\":{\"connected\":true,\"sent\":5,\"queued\":6,\"dropped\":0,"
        "\"buffer\":{\"records\":3,\"bytes\":100,\"oldest_age_s\":0,\"dropped\":0,\"drain_rate\":2,"
        "\"degraded\":false}}}}";
    struct fb_buf b;
    fb_buf_init(&b);
    int n = fb_ix_health_lines(&b, doc, strlen(doc), "munich", "fieldbridge_", 5, FB_LP_MS);
    assert_int_equal(n, 4);
    const char *want =
        "fieldbridge_gateway,gateway=gw\\ 1,site=munich online=true,health=\"ok\",uptime_s=3600i,cpu_s=1,"
        "rss_bytes=7524352i,clock_synced=true,version=\"0.1.0\",devices=2i,devices_online=1i 1795860000123\n"
        "fieldbridge_device,gateway=gw\\ 1,site=munich,device=press-01 state=\"online\",ne107=\"OK\","
        "requests=3600i,errors=0i,rtt_ms=0,online=true 1795860000123\n"
        "fieldbridge_device,gateway=gw\\ 1,site=munich,device=oven state=\"offline\",ne107=\"Failure\","
        "requests=1i,errors=1i,rtt_ms=0.5,online=false 1795860000123\n"
        "fieldbridge_sink,gateway=gw\\ 1,site=munich,sink=influx connected=true,sent=5i,queued=6i,dropped=0i,"
        "buffer_records=3i,buffer_bytes=100i,buffer_oldest_age_s=0,buffer_dropped=0i,buffer_drain_rate=2,"
        "buffer_degraded=false 1795860000123\n";
    assert_string_equal(fb_buf_cstr(&b), want);
    /* the will: no ts (the receive time is used), no devices */
    fb_buf_clear(&b);
    const char *will = "{\"gateway\":\"edge-01\",\"online\":false,\"ts\":null,\"reason\":\"connection lost\"}";
    assert_int_equal(fb_ix_health_lines(&b, will, strlen(will), NULL, "fieldbridge_", 42000000, FB_LP_MS), 1);
    assert_string_equal(fb_buf_cstr(&b),
                        "fieldbridge_gateway,gateway=edge-01 online=false,reason=\"connection lost\" 42\n");
    /* wrong types are left out, not written with another type */
    fb_buf_clear(&b);
    const char *odd = "{\"gateway\":\"g\",\"online\":true,\"uptime_s\":1.5,\"rss_bytes\":\"big\"}";
    assert_int_equal(fb_ix_health_lines(&b, odd, strlen(odd), "s", "p_", 0, FB_LP_S), 1);
    assert_string_equal(fb_buf_cstr(&b), "p_gateway,gateway=g,site=s online=true 0\n");
    /* not a status document */
    assert_int_equal(fb_ix_health_lines(&b, "{\"device\":\"x\"}", 14, "s", "p_", 0, FB_LP_S), FB_EPROTO);
    assert_int_equal(fb_ix_health_lines(&b, "[1,", 3, "s", "p_", 0, FB_LP_S), FB_EPROTO);
    fb_buf_clear(&b);
    fb_ix_devstate_line(&b, "fieldbridge_", "gw1", "munich", "press-01", FB_DEV_OFFLINE, "connect: refused", 7000,
                        FB_LP_US);
    assert_string_equal(fb_buf_cstr(&b), "fieldbridge_device,gateway=gw1,site=munich,device=press-01 "
                                         "state=\"offline\",online=false,reason=\"connect: refused\" 7\n");
    fb_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_values),       cmocka_unit_test(test_types_and_time),
        cmocka_unit_test(test_cfg_defaults), cmocka_unit_test(test_cfg_v2_and_rules),
        cmocka_unit_test(test_cfg_errors),   cmocka_unit_test(test_health),
        cmocka_unit_test(test_cfg_equal),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
