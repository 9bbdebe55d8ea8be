/* test_config.c — the config loader: a valid file builds the expected model,
 * each error class is reported at the right line:col with the right message,
 * ${ENV}, secret files, for: repetition, durations, URLs and placeholders.
 * Fixtures live in tests/unit/data/config/ (found via $FB_SOURCE_DIR); small
 * error cases are written to a temporary directory so their positions sit
 * next to the assertions that check them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tmpdir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/router.h"
#include "core/config_tmpl.h"
#include "core/driver.h"
#include "core/env.h"
#include "core/url.h"
#include "north/http/http.h"
#include "north/mqtt/mqtt.h"
#include "north/mqtt/topic.h"
#include "south/modbus/modbus.h"
#include "south/sim/sim.h"


static char *fixture(const char *name)
{
    const char *src = getenv("FB_SOURCE_DIR");
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/tests/unit/data/config/%s", src ? src : ".", name);
    return buf;
}

/* Load a file; *diag receives everything printed (caller frees). */
static int load_file(const char *path, bool strict, char **diag, struct fb_gateway **gw)
{
    size_t len;
    FILE *f = open_memstream(diag, &len);
    struct fb_config_opts o = {strict, f};
    int rc = fb_config_load(path, &o, gw);
    fclose(f);
    return rc;
}

static const char *write_tmp(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int load_text(const char *yaml, bool strict, char **diag, struct fb_gateway **gw)
{
    return load_file(write_tmp("cfg.yaml", yaml), strict, diag, gw);
}

/* "line:col:" of the first occurrence of needle on 1-based line `line`. */
static const char *pos(const char *yaml, int line, const char *needle)
{
    static char buf[64];
    const char *p = yaml;
    for (int l = 1; l < line; l++) {
        p = strchr(p, '\n');
        assert_non_null(p);
        p++;
    }
    const char *eol = strchr(p, '\n');
    const char *h = strstr(p, needle);
    assert_non_null(h);
    assert_true(!eol || h < eol);
    snprintf(buf, sizeof buf, ":%d:%d: ", line, (int)(h - p) + 1);
    return buf;
}

static void expect_diag(const char *diag, const char *where, const char *msg)
{
    char want[512];
    snprintf(want, sizeof want, "%s%s", where, msg);
    if (!strstr(diag, want)) {
        fprintf(stderr, "missing diagnostic: %s\n--- got:\n%s---\n", want, diag);
        fail();
    }
}

/* ------------------------------------------------------------ valid model */

static void test_valid_model(void **state)
{
    (void)state;
    setenv("FB_TEST_MQTT_PASSWORD", "s3cret", 1);
    unsetenv("FB_TEST_GW_ID");
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    int rc = load_file(fixture("valid.yaml"), false, &diag, &gw);
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    assert_non_null(gw);
    free(diag);

    assert_string_equal(gw->id, "edge-07");
    assert_string_equal(gw->site, "munich");
    assert_int_equal(gw->log_level, 3);
    assert_int_equal(gw->log_format, FB_LOG_JSON);
    assert_int_equal(gw->nservices, 1);
    assert_ptr_equal(gw->services[0].svc, &fb_service_http);
    assert_string_equal(*(char *const *)gw->services[0].cfg, "127.0.0.1:9100"); /* listen comes first */
    assert_int_equal(gw->status_interval_ns, 10000000000LL);
    assert_int_equal(gw->cmd_max_age_ns, 30000000000LL);
    assert_true(gw->cmd_allow_qos0);

    /* sink */
    assert_int_equal(gw->nsinks, 1);
    assert_ptr_equal(gw->sinks[0].sink, &fb_sink_mqtt);
    assert_string_equal(gw->sinks[0].name, "mqtt");
    const struct fb_mqtt_cfg *q = gw->sinks[0].cfg;
    assert_string_equal(q->broker.servers[0].host, "127.0.0.1");
    assert_int_equal(q->broker.servers[0].port, 1884);
    assert_false(q->broker.tls);
    assert_int_equal(q->broker.version, 3);
    assert_string_equal(q->broker.client_id, "fieldbridge-edge-07");
    assert_string_equal(q->broker.username, "edge-07");
    assert_string_equal(q->broker.password, "s3cret");
    assert_int_equal(q->broker.keepalive_ns, 20000000000LL);
    assert_string_equal(q->topic, "factory/{site}/{area}/{line}/{device}/{kind}");
    assert_int_equal(q->qos_telemetry, 0);
    assert_int_equal(q->qos_status, 1);
    assert_int_equal(q->qos_command, 2);
    assert_int_equal(q->broker.reconnect_min_ns, 500000000LL);
    assert_int_equal(q->broker.reconnect_max_ns, 60000000000LL);
    assert_int_equal(q->max_inflight, 100);
    assert_int_equal(gw->sinks[0].queue_len, 64);

    /* devices, tags */
    assert_int_equal(gw->ndevs, 3);
    assert_int_equal(gw->ntags, 10);
    for (uint32_t i = 0; i < gw->ntags; i++) {
        assert_int_equal(gw->tags[i].id, i);
        assert_non_null(gw->tags[i].addr);
    }
    struct fb_device *sim = &gw->devs[0], *p1 = &gw->devs[1], *p2 = &gw->devs[2];
    assert_string_equal(sim->name, "sim-01");
    assert_ptr_equal(sim->drv, &fb_driver_sim);
    assert_string_equal(sim->area, "assembly");
    assert_string_equal(sim->line, "01");
    assert_int_equal(sim->first_tag, 0);
    assert_int_equal(sim->ntags, 2);
    assert_int_equal(sim->timeout_ns, 1000000000LL);
    assert_ptr_equal(sim->gw, gw);

    const struct fb_tag *temp = &gw->tags[0], *level = &gw->tags[1];
    assert_string_equal(temp->name, "temp");
    assert_string_equal(fb_tag_unit(temp), "°C"); /* from the <<: *tpl merge */
    assert_true(temp->proc->db_pct == 2.0);
    assert_int_equal(temp->access, FB_ACC_READ);
    assert_true(level->proc->scaled);
    assert_true(level->proc->k == 0.1);
    assert_true(level->proc->d == 0.0);
    assert_true(level->proc->has_min && level->proc->has_max);
    assert_true(level->proc->min == 0 && level->proc->max == 10);
    assert_true(level->proc->max_rate == 5);
    assert_int_equal(level->proc->stuck_ns, 600000000000LL);
    assert_int_equal(level->proc->heartbeat_ns, 60000000000LL);
    assert_int_equal(level->proc->window_ns, 60000000000LL);
    assert_int_equal(fb_tag_out_type(level), FB_T_FLOAT64);

    /* groups: sim has 100 ms (level) and 500 ms (temp), sorted by period */
    assert_int_equal(sim->ngroups, 2);
    assert_int_equal(sim->groups[0].period_ns, 100000000LL);
    assert_int_equal(sim->groups[0].ntags, 1);
    assert_int_equal(fb_group_tag(&sim->groups[0], 0), 1);
    assert_int_equal(sim->groups[1].period_ns, 500000000LL);
    assert_int_equal(level->group, 0);
    assert_int_equal(temp->group, 1);

    /* modbus device */
    assert_ptr_equal(p1->drv, &fb_driver_modbus);
    assert_int_equal(p1->timeout_ns, 2000000000LL);
    assert_int_equal(p1->delay_ns, 5000000LL);
    assert_string_equal(fb_url_get(&p1->url, "max_gap"), "4");
    assert_string_equal(fb_url_get(&p1->url, "unit"), "1");
    assert_int_equal(p1->ntags, 7);
    struct fb_tag *t = fb_gw_tag(gw, p1, "temperature");
    assert_non_null(t);
    assert_int_equal(t->type, FB_T_FLOAT32);
    assert_string_equal(fb_tag_order(t), "CDAB");
    assert_true(t->proc->db_abs == 0.5);
    assert_int_equal(fb_tag_out_type(t), FB_T_FLOAT32);
    for (int i = 0; i < 4; i++) {
        char n[16];
        snprintf(n, sizeof n, "temps[%d]", i);
        t = fb_gw_tag(gw, p1, n);
        assert_non_null(t);
        assert_int_equal(t->index, (uint32_t)i);
        char ab[FB_ATEXT_MAX];
        assert_string_equal(fb_tag_addr_text(gw, t, ab), "ir:10:int16");
        assert_true(t->proc->scaled && t->proc->k == 0.1 && t->proc->d == -40);
        /* elements of one entry share their settings (arena) */
        if (i) assert_ptr_equal(t->proc, t[-1].proc);
    }
    t = fb_gw_tag(gw, p1, "motor_on");
    assert_int_equal(t->access, FB_ACC_RW);
    assert_int_equal(t->type, FB_T_BOOL);
    t = fb_gw_tag(gw, p1, "setpoint");
    assert_int_equal(t->access, FB_ACC_RW);
    assert_true(t->proc->has_max && t->proc->max == 40);
    assert_int_equal(p1->ngroups, 2);
    assert_int_equal(p1->groups[1].period_ns, 5000000000LL);
    assert_int_equal(p1->groups[1].ntags, 1);
    assert_int_equal(fb_gw_tag(gw, p2, "count")->type, FB_T_INT16);
    assert_null(fb_gw_tag(gw, p2, "nope"));
    assert_ptr_equal(fb_gw_device(gw, "press-02"), p2);
    assert_null(fb_gw_device(gw, "press-03"));

    /* connections: the two units behind one TCP endpoint share one */
    assert_int_equal(gw->nconns, 2);
    assert_ptr_equal(p1->conn, p2->conn);
    assert_int_equal(p1->conn->ndevs, 2);
    assert_ptr_equal(p1->conn->devs[1], p2);
    assert_true(sim->conn != p1->conn);
    assert_int_equal(sim->conn->ndevs, 1);

    /* summary */
    char *sum = NULL;
    size_t len;
    FILE *f = open_memstream(&sum, &len);
    fb_config_summary(gw, f);
    fclose(f);
    assert_non_null(strstr(sum, "gateway edge-07 (site munich)"));
    assert_non_null(strstr(sum, "3 devices, 2 connections, 10 tags, 5 poll groups, 1 sink"));
    assert_non_null(strstr(sum, "device press-01  modbus-tcp://127.0.0.1:5020?unit=1"));
    assert_non_null(strstr(sum, "groups: 100ms(1) 500ms(1)"));
    assert_non_null(strstr(sum, "sink mqtt  mqtt://127.0.0.1:1884  MQTT 3.1.1"));
    free(sum);
    fb_gateway_free(gw);

    /* the env default yields to the variable */
    setenv("FB_TEST_GW_ID", "edge-99", 1);
    assert_int_equal(load_file(fixture("valid.yaml"), false, &diag, &gw), 0);
    free(diag);
    assert_string_equal(gw->id, "edge-99");
    fb_gateway_free(gw);
    unsetenv("FB_TEST_GW_ID");
}

/* ------------------------------------------------------------ errors */

/* A poll group whose tags are one contiguous run of ids keeps no id array
 * (issue 15: 4 bytes per tag); one whose tags interleave with another
 * group's keeps them in an array.  fb_group_tag reads both. */
static void test_group_ranges(void **state)
{
    (void)state;
    static const char y[] = "gateway: {id: gw}\n"
                            "devices:\n"
                            "  - name: d\n"
                            "    url: \"sim://d\"\n"
                            "    poll: 1s\n"
                            "    tags:\n"
                            "      - {name: a, addr: \"sine\"}\n"
                            "      - {name: b, addr: \"sine\", poll: 2s}\n"
                            "      - {name: c, addr: \"sine\"}\n"
                            "      - {for: {i: \"0..2\"}, name: \"r{i}\", addr: \"sine\", poll: 5s}\n";
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    assert_int_equal(load_text(y, true, &diag, &gw), 0);
    free(diag);
    const struct fb_device *d = &gw->devs[0];
    assert_int_equal(d->ngroups, 3);
    const struct fb_group *g1 = &d->groups[0], *g2 = &d->groups[1], *g5 = &d->groups[2];
    assert_int_equal(g1->ntags, 2); /* a, c: interleaved with b */
    assert_non_null(g1->ids);
    assert_int_equal(fb_group_tag(g1, 0), 0);
    assert_int_equal(fb_group_tag(g1, 1), 2);
    assert_int_equal(g2->ntags, 1);
    assert_null(g2->ids);
    assert_int_equal(fb_group_tag(g2, 0), 1);
    assert_int_equal(g5->ntags, 3); /* r0..r2: one run */
    assert_null(g5->ids);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(fb_group_tag(g5, i), 3 + i);
        assert_int_equal(gw->tags[fb_group_tag(g5, i)].group, 2);
    }
    fb_gateway_free(gw);
}

static void test_errors_collected(void **state)
{
    (void)state;
    static const char y[] = "gateway: {id: gw}\n"                                                     /* 1 */
                            "mqtt:\n"                                                                 /* 2 */
                            "  url: mqtt://127.0.0.1\n"                                               /* 3 */
                            "  password: plain\n"                                                     /* 4 */
                            "devices:\n"                                                              /* 5 */
                            "  - name: a\n"                                                           /* 6 */
                            "    url: \"sim://x\"\n"                                                  /* 7 */
                            "    pol: 1s\n"                                                           /* 8 */
                            "    tags:\n"                                                             /* 9 */
                            "      - {name: t1, addr: \"sine\"}\n"                                    /* 10 */
                            "      - {name: t1, addr: \"sine\"}\n"                                    /* 11 */
                            "      - {name: t2, addr: \"bogus:1\"}\n"                                 /* 12 */
                            "      - {name: t3, addr: \"sine\", poll: fast}\n"                        /* 13 */
                            "      - {name: t4, addr: \"sine\", range: [10, 1], access: w}\n"         /* 14 */
                            "      - {name: t5, addr: \"sine\", scale: {raw: [5, 5], eng: [0, 1]}}\n" /* 15 */
                            "      - {name: t6, addr: \"sine\", max_rate: fast, unti: x}\n"           /* 16 */
                            "  - name: a\n"                                                           /* 17 */
                            "    url: \"modbus-tcp://127.0.0.1:5020\"\n"                              /* 18 */
                            "    tags:\n"                                                             /* 19 */
                            "      - {name: x, addr: \"hr:70000\"}\n"                                 /* 20 */
                            "      - {name: y, addr: \"hr:0\", count: 0}\n"                           /* 21 */
                            "      - {name: 'bad name', addr: \"hr:0\"}\n"                            /* 22 */
                            "      - {name: z, addr: [1, 2]}\n"                                       /* 23 */
                            "  - name: c\n"                                                           /* 24 */
                            "    url: \"modbus-tpc://127.0.0.1\"\n"                                   /* 25 */
                            "    poll: -1s\n";                                                        /* 26 */
    char *diag = NULL;
    struct fb_gateway *gw = (void *)1;
    assert_int_equal(load_text(y, false, &diag, &gw), FB_EINVAL);
    assert_null(gw);
    expect_diag(diag, pos(y, 4, "plain"), "mqtt.password: a literal password is not allowed");
    expect_diag(diag, pos(y, 8, "pol"), "unknown key 'pol' in device (did you mean 'poll'?)");
    expect_diag(diag, pos(y, 11, "t1"), "duplicate tag name 't1' in device 'a' (first at line 10)");
    expect_diag(diag, pos(y, 12, "\"bogus"), "sim address 'bogus:1': unknown generator 'bogus'");
    expect_diag(diag, pos(y, 13, "fast"), "poll: bad duration 'fast'");
    expect_diag(diag, pos(y, 14, "[10"), "range: min 10 is greater than max 1 (no value could be written)");
    expect_diag(diag, pos(y, 15, "[5, 5]"), "scale.raw: low and high are equal");
    expect_diag(diag, pos(y, 16, "fast"), "max_rate: expected a number, got 'fast'");
    expect_diag(diag, pos(y, 16, "unti"), "unknown key 'unti' in tag (did you mean 'unit'?)");
    expect_diag(diag, pos(y, 17, "a\n"), "duplicate device name 'a' (first at line 6)");
    expect_diag(diag, pos(y, 20, "\"hr:70000"), "");
    expect_diag(diag, pos(y, 21, "0}"), "count: 0 is out of range (1..65536)");
    expect_diag(diag, pos(y, 22, "'bad"), "tag name 'bad name' may only contain");
    expect_diag(diag, pos(y, 23, "[1"), "addr must be a single value, got a list");
    expect_diag(diag, pos(y, 25, "\"modbus-tpc"),
                "url: no driver for scheme 'modbus-tpc://' (did you mean 'modbus-tcp'?)");
    expect_diag(diag, pos(y, 26, "-1s"), "poll: bad duration '-1s'");
    /* in file order */
    assert_true(strstr(diag, ":4:") < strstr(diag, ":8:"));
    assert_true(strstr(diag, ":20:") < strstr(diag, ":25:"));
    free(diag);
}

static void test_error_classes(void **state)
{
    (void)state;
    char *diag = NULL;
    struct fb_gateway *gw = NULL;

    /* YAML syntax error */
    static const char y1[] = "gateway: {id: gw}\ndevices:\n  - name: a\n   url: x\n";
    assert_int_equal(load_text(y1, false, &diag, &gw), FB_EINVAL);
    assert_non_null(strstr(diag, ":4:"));
    assert_non_null(strstr(diag, "YAML syntax error"));
    free(diag);

    /* missing gateway id, unknown top-level key, wrong kinds */
    static const char y2[] = "gateway: {site: x}\n"
                             "devics: []\n"
                             "log: {level: loud}\n"
                             "status_interval: [1]\n"
                             "commands: {allow_qos0: maybe}\n";
    assert_int_equal(load_text(y2, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, ":1:10: ", "gateway.id is required");
    expect_diag(diag, ":2:1: ", "unknown key 'devics' in the config file (did you mean 'devices'?)");
    expect_diag(diag, pos(y2, 3, "loud"), "log.level: unknown level 'loud'");
    expect_diag(diag, pos(y2, 4, "[1]"), "status_interval must be a single value, got a list");
    expect_diag(diag, pos(y2, 5, "maybe"), "commands.allow_qos0: expected true or false, got 'maybe'");
    free(diag);

    /* mqtt errors */
    static const char y3[] = "gateway: {id: gw}\n"
                             "mqtt:\n"
                             "  url: http://127.0.0.1\n"
                             "  version: 4.0\n"
                             "  qos: {telemetry: 3}\n"
                             "  topic: \"{site}/{nope}/#\"\n"
                             "  reconnect: {min: 10s, max: 1s}\n";
    assert_int_equal(load_text(y3, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(y3, 3, "http"), "mqtt.url: scheme must be mqtt:// or mqtts://");
    expect_diag(diag, pos(y3, 4, "4.0"), "mqtt.version: expected 5 or 3.1.1, got '4.0'");
    expect_diag(diag, pos(y3, 5, "3}"), "mqtt.qos.telemetry: 3 is out of range (0..2)");
    expect_diag(diag, pos(y3, 6, "\"{"), "mqtt.topic: ");
    expect_diag(diag, pos(y3, 7, "{min"), "mqtt.reconnect: min is larger than max");
    free(diag);

    /* duplicate keys, writable tag on a string type with scale */
    static const char y4[] = "gateway: {id: gw, id: again}\n"
                             "devices:\n"
                             "  - name: d\n"
                             "    url: sim://x\n"
                             "    options: {seed: 1}\n"
                             "    tags:\n"
                             "      - {name: s, addr: \"const:\\\"hi\\\"\", type: string, scale: {factor: 2}}\n";
    assert_int_equal(load_text(y4, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(y4, 1, "id: again"), "duplicate key 'id' in gateway (first at line 1)");
    expect_diag(diag, pos(y4, 7, "scale"), "tag 's' is of type string: scale, range, deadband");
    free(diag);

    /* options that clash with the URL */
    static const char y5[] = "gateway: {id: gw}\n"
                             "devices:\n"
                             "  - name: d\n"
                             "    url: \"modbus-tcp://127.0.0.1?unit=1\"\n"
                             "    options: {unit: 2, baud: x}\n"
                             "    timeout: 1s\n"
                             "    tags: [{name: a, addr: \"hr:0\"}]\n";
    assert_int_equal(load_text(y5, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(y5, 5, "unit"), "option 'unit' is also given in the device URL");
    free(diag);

    /* types, password with a literal default, open range ends */
    static const char y6[] = "gateway: {id: gw}\n"
                             "mqtt: {url: \"mqtt://h\", password: \"${FB_T_PW:-literal}\"}\n"
                             "devices:\n"
                             "  - name: d\n"
                             "    url: \"modbus-tcp://127.0.0.1?unit=1\"\n"
                             "    tags:\n"
                             "      - {name: a, addr: \"hr:0\", type: flaot32}\n"
                             "      - {name: b, addr: \"hr:2\", type: \"string[0]\"}\n"
                             "      - {name: c, addr: \"hr:4\", range: [~, 5], deadband: \"x%\"}\n";
    assert_int_equal(load_text(y6, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(y6, 2, "\"${"), "mqtt.password: a literal password is not allowed");
    expect_diag(diag, pos(y6, 7, "flaot32"), "type: unknown type 'flaot32'");
    expect_diag(diag, pos(y6, 8, "\"string"), "type: 'string[0]' needs a length");
    expect_diag(diag, pos(y6, 9, "\"x%"), "deadband: expected a number >= 0 or a percentage");
    assert_null(strstr(diag, ":9:32:")); /* [~, 5] is fine */
    free(diag);

    /* an array and a scalar with the same name clash; array elements do not */
    static const char y7[] = "gateway: {id: gw}\n"
                             "devices:\n"
                             "  - name: d\n"
                             "    url: \"sim://x\"\n"
                             "    tags:\n"
                             "      - {name: v, addr: sine, count: 3}\n"
                             "      - {name: w, addr: sine}\n"
                             "      - {name: v, addr: sine}\n";
    assert_int_equal(load_text(y7, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(y7, 8, "v,"), "duplicate tag name 'v' in device 'd' (first at line 6)");
    assert_null(strstr(diag, ":6:"));
    free(diag);
}

/* ------------------------------------------------------------ env */

static void test_env_expand(void **state)
{
    (void)state;
    struct fb_err e = {0};
    char *out = NULL;
    setenv("FB_T_A", "alpha", 1);
    unsetenv("FB_T_UNSET");
    assert_int_equal(fb_env_expand("x-${FB_T_A}-y", &out, &e), 0);
    assert_string_equal(out, "x-alpha-y");
    free(out);
    assert_int_equal(fb_env_expand("${FB_T_UNSET:-dflt}/${FB_T_A:-no}", &out, &e), 0);
    assert_string_equal(out, "dflt/alpha");
    free(out);
    assert_int_equal(fb_env_expand("$${FB_T_A} costs $5 {x}", &out, &e), 0);
    assert_string_equal(out, "${FB_T_A} costs $5 {x}");
    free(out);
    assert_int_equal(fb_env_expand("a${FB_T_UNSET}b", &out, &e), FB_ENOENT);
    assert_null(out);
    assert_non_null(strstr(e.msg, "FB_T_UNSET is not set"));
    assert_true(fb_env_expand("${FB_T_A", &out, &e) < 0);
    assert_true(fb_env_expand("${1X}", &out, &e) < 0);
    assert_true(fb_env_expand("${A B}", &out, &e) < 0);

    /* in a config: the error sits at the scalar */
    static const char y[] = "gateway:\n  id: \"${FB_T_UNSET}\"\n  site: \"${FB_T_UNSET:-s1}\"\n";
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    assert_int_equal(load_text(y, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(y, 2, "\"$"), "gateway.id: environment variable FB_T_UNSET is not set");
    assert_null(strstr(diag, ":3:"));
    free(diag);
}

/* ------------------------------------------------------------ secrets */

static void test_secret_files(void **state)
{
    (void)state;
    const char *p = write_tmp("mqtt.pass", "hunter2\n");
    char path[512];
    snprintf(path, sizeof path, "%s", p);
    struct fb_err e = {0};
    char *out = NULL;
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(fb_read_secret_file(path, &out, &e), FB_EACCES);
    assert_null(out);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "chmod 600"));
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(fb_read_secret_file(path, &out, &e), 0);
    assert_string_equal(out, "hunter2");
    free(out);
    assert_int_equal(fb_read_secret_file("/nonexistent/fb/secret", &out, &e), FB_ENOENT);

    /* from a config, relative to the config file's directory */
    static const char y[] = "gateway: {id: gw}\n"
                            "mqtt:\n"
                            "  url: mqtts://127.0.0.1\n"
                            "  username: u\n"
                            "  password_file: mqtt.pass\n"
                            "  tls: {ca: ca.pem, cert: gw.pem, key: gw.key}\n";
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    assert_int_equal(load_text(y, false, &diag, &gw), 0);
    const struct fb_mqtt_cfg *q = gw->sinks[0].cfg;
    assert_string_equal(q->broker.password, "hunter2");
    assert_true(q->broker.tls);
    assert_int_equal(q->broker.servers[0].port, 8883);
    /* missing files: warnings */
    expect_diag(diag, pos(y, 6, "ca.pem"), "warning: mqtt.tls.ca: ");
    expect_diag(diag, pos(y, 6, "gw.key"), "warning: mqtt.tls.key: ");
    free(diag);
    fb_gateway_free(gw);
    /* ... errors with --strict */
    assert_int_equal(load_text(y, true, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(y, 6, "ca.pem"), "mqtt.tls.ca: ");
    assert_null(strstr(diag, "warning: mqtt.tls.ca"));
    free(diag);

    /* group-readable password file and key: refused */
    chmod(path, 0640);
    write_tmp("ca.pem", "x");
    write_tmp("gw.pem", "x");
    char kp[512];
    snprintf(kp, sizeof kp, "%s", write_tmp("gw.key", "k"));
    chmod(kp, 0644);
    assert_int_equal(load_text(y, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(y, 5, "mqtt.pass"), "mqtt.password_file: secret file ");
    assert_non_null(strstr(diag, "chmod 600"));
    expect_diag(diag, pos(y, 6, "gw.key"), "mqtt.tls.key: private key ");
    free(diag);
    chmod(path, 0600);
    chmod(kp, 0600);
    assert_int_equal(load_text(y, true, &diag, &gw), 0);
    free(diag);
    fb_gateway_free(gw);
}

/* ------------------------------------------------------------ for: */

static void test_for_expansion(void **state)
{
    (void)state;
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    int rc = load_file(fixture("factory.yaml"), false, &diag, &gw);
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    free(diag);
    assert_int_equal(gw->ndevs, 3);
    assert_int_equal(gw->ntags, 150);
    assert_int_equal(gw->nconns, 1); /* three unit ids behind one TCP endpoint */
    assert_int_equal(gw->conns[0].ndevs, 3);
    for (int l = 1; l <= 3; l++) {
        struct fb_device *d = &gw->devs[l - 1];
        char buf[64];
        snprintf(buf, sizeof buf, "line%d-plc", l);
        assert_string_equal(d->name, buf);
        snprintf(buf, sizeof buf, "%02d", l);
        assert_string_equal(d->line, buf);
        snprintf(buf, sizeof buf, "%d", l);
        assert_string_equal(fb_url_get(&d->url, "unit"), buf);
        assert_int_equal(d->ntags, 50);
        assert_int_equal(d->first_tag, (uint32_t)(l - 1) * 50);
        for (int i = 1; i <= 50; i++) {
            const struct fb_tag *t = &gw->tags[d->first_tag + (uint32_t)i - 1];
            snprintf(buf, sizeof buf, "sensor%02d", i);
            assert_string_equal(t->name, buf);
            snprintf(buf, sizeof buf, "hr:%d:float32", (i - 1) * 2);
            char ab[FB_ATEXT_MAX];
            assert_string_equal(fb_tag_addr_text(gw, t, ab), buf);
            assert_int_equal(t->type, FB_T_FLOAT32);
            assert_string_equal(fb_tag_unit(t), "{unknown} stays");
        }
    }
    fb_gateway_free(gw);

    /* unknown variable in an expression; lists; cartesian product */
    static const char y[] = "gateway: {id: gw}\n"
                            "devices:\n"
                            "  - for: {a: [x, y], n: [1, 2, 3]}\n"
                            "    name: \"d-{a}-{n}\"\n"
                            "    url: sim://s\n"
                            "    tags:\n"
                            "      - for: {i: \"0..1\"}\n"
                            "        name: \"t{n*10+i}\"\n"
                            "        addr: \"const:{i+j}\"\n";
    assert_int_equal(load_text(y, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(y, 9, "\"const"), "addr: unknown loop variable 'j' in expression");
    free(diag);
    static const char y2[] = "gateway: {id: gw}\n"
                             "devices:\n"
                             "  - for: {a: [x, y], n: [1, 2, 3]}\n"
                             "    name: \"d-{a}-{n}\"\n"
                             "    url: sim://s\n"
                             "    tags:\n"
                             "      - for: {i: \"0..1\"}\n"
                             "        name: \"t{n*10+i}\"\n"
                             "        addr: \"const:{(i+1)*-2}\"\n";
    assert_int_equal(load_text(y2, false, &diag, &gw), 0);
    free(diag);
    assert_int_equal(gw->ndevs, 6);
    assert_string_equal(gw->devs[0].name, "d-x-1");
    assert_string_equal(gw->devs[5].name, "d-y-3");
    assert_int_equal(gw->ntags, 12);
    assert_string_equal(gw->tags[11].name, "t31");
    char ab[FB_ATEXT_MAX];
    assert_string_equal(fb_tag_addr_text(gw, &gw->tags[11], ab), "const:-4");
    assert_int_equal(gw->nconns, 6);
    fb_gateway_free(gw);
}

static void test_tmpl(void **state)
{
    (void)state;
    struct fb_tvar v[] = {{"i", "7", true, 7}, {"line", "3", true, 3}, {"s", "ab", false, 0}};
    struct fb_tvars vs = {NULL, v, 3};
    struct fb_err e = {0};
    char *o = NULL;
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"x{i}", "x7"},
        {"{i:03}", "007"},
        {"{i:3}", "  7"},
        {"{(i-1)*2}", "12"},
        {"{line*100 + i}", "307"},
        {"{i/2}-{i%4}", "3-3"},
        {"{s}{s:4}", "ab  ab"},
        {"{site}/{x+1}/{}", "{site}/{x+1}/{}"},
        {"{i-10:03}", "-03"},
        {"{", "{"},
    };
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
        assert_int_equal(fb_tmpl_subst(&vs, ok[k].in, &o, &e), 0);
        assert_string_equal(o, ok[k].out);
        free(o);
    }
    assert_int_equal(fb_tmpl_subst(&vs, "{i/0}", &o, &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "division by zero"));
    assert_int_equal(fb_tmpl_subst(&vs, "{i+k}", &o, &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "'k'"));
    assert_int_equal(fb_tmpl_subst(&vs, "{s*2}", &o, &e), FB_EINVAL);
    assert_int_equal(fb_tmpl_subst(&vs, "{(i}", &o, &e), FB_EINVAL);
    assert_int_equal(fb_tmpl_subst(&vs, "{9223372036854775807*i}", &o, &e), FB_EINVAL);
    assert_int_equal(fb_tmpl_subst(NULL, "{i}", &o, &e), 0);
    assert_string_equal(o, "{i}");
    free(o);
    int64_t lo, hi;
    assert_int_equal(fb_tmpl_range("1..50", &lo, &hi), 0);
    assert_true(lo == 1 && hi == 50);
    assert_int_equal(fb_tmpl_range("-3..-1", &lo, &hi), 0);
    assert_true(lo == -3 && hi == -1);
    assert_true(fb_tmpl_range("1..x", &lo, &hi) < 0);
    assert_true(fb_tmpl_range("15", &lo, &hi) < 0);
}

/* Deep expressions are bounded (issue 14: 50,000 parentheses overflowed the
 * stack of the recursive-descent evaluator). */
static char *nested(int depth, const char *open, const char *inner, const char *close)
{
    size_t lo = strlen(open), lc = strlen(close), n = (size_t)depth * (lo + lc) + strlen(inner) + 3;
    char *s = malloc(n), *p = s;
    assert_non_null(s);
    *p++ = '{';
    for (int i = 0; i < depth; i++, p += lo) memcpy(p, open, lo);
    p += sprintf(p, "%s", inner);
    for (int i = 0; i < depth; i++, p += lc) memcpy(p, close, lc);
    *p++ = '}';
    *p = 0;
    return s;
}

static void test_tmpl_depth(void **state)
{
    (void)state;
    struct fb_tvar v[] = {{"i", "7", true, 7}};
    struct fb_tvars vs = {NULL, v, 1};
    struct fb_err e = {0};
    char *o = NULL;
    char *s = nested(FB_TMPL_MAX_DEPTH, "(", "i", ")"); /* at the limit: fine */
    assert_int_equal(fb_tmpl_subst(&vs, s, &o, &e), 0);
    assert_string_equal(o, "7");
    free(o);
    free(s);
    s = nested(FB_TMPL_MAX_DEPTH, "-", "i", ""); /* 64 minus signs: +7 */
    assert_int_equal(fb_tmpl_subst(&vs, s, &o, &e), 0);
    assert_string_equal(o, "7");
    free(o);
    free(s);
    static const int depths[] = {FB_TMPL_MAX_DEPTH + 1, 50000, 2000000};
    for (size_t k = 0; k < 3; k++) {
        s = nested(depths[k], "(", "i", ")");
        assert_int_equal(fb_tmpl_subst(&vs, s, &o, &e), FB_EINVAL);
        assert_non_null(strstr(e.msg, "nested too deeply (more than 64"));
        free(s);
        s = nested(depths[k], "-(", "i", ")");
        assert_int_equal(fb_tmpl_subst(&vs, s, &o, &e), FB_EINVAL);
        assert_non_null(strstr(e.msg, "nested too deeply"));
        free(s);
    }
    /* through the loader: an error at the scalar, file:line:col */
    s = nested(50000, "(", "d", ")");
    size_t n = strlen(s) + 256;
    char *y = malloc(n);
    snprintf(y, n,
             "gateway: {id: gw}\n"
             "devices:\n"
             "  - for: {d: \"1..2\"}\n"
             "    name: \"d%s\"\n"
             "    url: sim://s\n"
             "    tags: [{name: t, addr: \"const:1\"}]\n",
             s);
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    assert_int_equal(load_text(y, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, ":4:11: ", "device name: expression nested too deeply (more than 64 parentheses or signs)");
    free(diag);
    free(y);
    free(s);
}

/* ------------------------------------------------------------ hostile YAML */

/* The time bounds below catch a loader gone quadratic (minutes, not
 * seconds); the sanitizer build runs it 3-5 times slower, so there they are
 * scaled by SLOW instead of failing on a busy machine. */
#if defined(__SANITIZE_ADDRESS__)
#define SLOW 5.0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLOW 5.0
#endif
#endif
#ifndef SLOW
#define SLOW 1.0
#endif

/* load_text, and the time it took (s) */
static double load_timed(const char *yaml, char **diag, int *rc)
{
    int64_t t0 = fb_mono_ns();
    struct fb_gateway *gw = NULL;
    *rc = load_text(yaml, false, diag, &gw);
    fb_gateway_free(gw);
    return (double)(fb_mono_ns() - t0) / 1e9;
}

/* A diagnostic "file:LINE:COL: msg" with the given line (any column). */
static void expect_on_line(const char *diag, int line, const char *msg)
{
    char want[32];
    snprintf(want, sizeof want, ":%d:", line);
    for (const char *p = diag; (p = strstr(p, want)); p++) {
        const char *eol = strchr(p, '\n'), *c = strchr(p + strlen(want), ':');
        const char *h = strstr(p, msg);
        if (c && h && (!eol || h < eol) && c < h) return;
    }
    fprintf(stderr, "missing diagnostic on line %d: %s\n--- got:\n%s---\n", line, msg, diag);
    fail();
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 64;
    while (c < n) c *= 2;
    return c;
}

/* Appends add to s (length *len); the buffer doubles (a realloc per append
 * made the 100000-alias case quadratic under ASan). */
static char *grow_cat(char *s, size_t *len, const char *add)
{
    size_t n = strlen(add);
    if (!s || pow2_at_least(*len + n + 1) != pow2_at_least(*len + 1)) s = realloc(s, pow2_at_least(*len + n + 1));
    assert_non_null(s);
    memcpy(s + *len, add, n + 1);
    *len += n;
    return s;
}

/* Issue 14: alias and merge-key bombs hung `check`; deep nesting was
 * quadratic (a 100,000-deep list took 20 s) — now each is refused at once,
 * at its line:col, with the limit. */
static void test_yaml_bombs(void **state)
{
    (void)state;
    char *diag = NULL, *y = NULL, buf[512];
    size_t len = 0;
    int rc;
    /* 1. merge keys fanning out 20 ways over 8 levels (20^8 merges before) */
    y = grow_cat(y, &len, "m0: &m0 {k: v}\n");
    for (int i = 1; i <= 8; i++) {
        int k = snprintf(buf, sizeof buf, "m%d: &m%d {<<: [", i, i);
        for (int j = 0; j < 20; j++) k += snprintf(buf + k, sizeof buf - (size_t)k, "%s*m%d", j ? ", " : "", i - 1);
        snprintf(buf + k, sizeof buf - (size_t)k, "], k%d: v}\n", i);
        y = grow_cat(y, &len, buf);
    }
    y = grow_cat(y, &len, "gateway: {id: gw, <<: *m8}\n");
    double t = load_timed(y, &diag, &rc);
    assert_int_equal(rc, FB_EINVAL);
    expect_on_line(diag, 6, "aliases expand to more than 1000000 nodes (at *m4)");
    assert_true(t < 2.0 * SLOW);
    free(diag);
    free(y);
    /* 2. lists of lists of aliases in a merge (9 short lines: 20^7 merges before) */
    y = NULL, len = 0;
    y = grow_cat(y, &len, "gateway: {id: gw}\na0: &a0 {k: v}\n");
    for (int i = 1; i <= 7; i++) {
        int k = snprintf(buf, sizeof buf, "a%d: &a%d [", i, i);
        for (int j = 0; j < 20; j++) k += snprintf(buf + k, sizeof buf - (size_t)k, "%s*a%d", j ? ", " : "", i - 1);
        snprintf(buf + k, sizeof buf - (size_t)k, "]\n");
        y = grow_cat(y, &len, buf);
    }
    y = grow_cat(y, &len, "devices: [{name: d, url: \"sim://x\", tags: [{name: t, addr: \"const:1\", <<: *a7}]}]\n");
    t = load_timed(y, &diag, &rc);
    assert_int_equal(rc, FB_EINVAL);
    expect_on_line(diag, 7, "aliases expand to more than 1000000 nodes (at *a4)");
    assert_true(t < 2.0 * SLOW);
    free(diag);
    free(y);
    /* 3. a list inside a merge list is not YAML's merge key: refused, not walked */
    static const char y3[] =
        "gateway: {id: gw}\n"
        "a: &a {unit: x}\n"
        "devices: [{name: d, url: \"sim://x\", tags: [{name: t, addr: \"const:1\", <<: [[*a]]}]}]\n";
    assert_int_equal(load_timed(y3, &diag, &rc) < 2.0 * SLOW, 1);
    assert_int_equal(rc, FB_EINVAL);
    expect_diag(diag, pos(y3, 3, "[*a]"), "'<<' needs a mapping or a list of mappings, got a list inside the list");
    free(diag);
    /* 4. too many aliases */
    y = NULL, len = 0;
    y = grow_cat(y, &len, "gateway: {id: gw}\ns: &s x\nl: [*s");
    for (int i = 0; i < 100000; i++) y = grow_cat(y, &len, ",*s");
    y = grow_cat(y, &len, "]\n");
    assert_true(load_timed(y, &diag, &rc) < 2.0 * SLOW);
    assert_int_equal(rc, FB_EINVAL);
    expect_on_line(diag, 3, "more than 100000 aliases (*name) in one file");
    free(diag);
    free(y);
    /* 5. an alias inside the node it names */
    static const char y5[] = "gateway: {id: gw, <<: &a {x: *a}}\n";
    load_timed(y5, &diag, &rc);
    assert_int_equal(rc, FB_EINVAL);
    expect_diag(diag, pos(y5, 1, "*a"), "alias *a refers to the node that contains it");
    free(diag);
    /* 6. deep nesting: flow and block style */
    for (int style = 0; style < 2; style++) {
        int n = style ? 3000 : 100000;
        y = NULL, len = 0;
        y = grow_cat(y, &len, style ? "gateway: {id: gw}\nx:" : "gateway: {id: gw}\nx: ");
        for (int i = 0; i < n; i++) {
            if (style) {
                snprintf(buf, sizeof buf, "\n%*s-", i, "");
                y = grow_cat(y, &len, buf);
            } else {
                y = grow_cat(y, &len, "[");
            }
        }
        for (int i = 0; !style && i < n; i++) y = grow_cat(y, &len, "]");
        y = grow_cat(y, &len, "\n");
        t = load_timed(y, &diag, &rc);
        assert_int_equal(rc, FB_EINVAL);
        expect_on_line(diag, style ? 66 : 2, "lists and mappings nested deeper than 64 levels");
        assert_true(t < 2.0 * SLOW);
        free(diag);
        free(y);
    }
    /* 64 levels are fine (the error is about the key, not the depth) */
    y = NULL, len = 0;
    y = grow_cat(y, &len, "gateway: {id: gw}\nx: ");
    for (int i = 0; i < 63; i++) y = grow_cat(y, &len, "[");
    for (int i = 0; i < 63; i++) y = grow_cat(y, &len, "]");
    y = grow_cat(y, &len, "\n");
    load_timed(y, &diag, &rc);
    assert_null(strstr(diag, "nested deeper"));
    assert_non_null(strstr(diag, "unknown key 'x'"));
    free(diag);
    free(y);
    /* 7. a legitimate template merged into many tags still loads */
    y = NULL, len = 0;
    y = grow_cat(y, &len,
                 "gateway: {id: gw}\nx-s: &s {type: float32, unit: C, deadband: 0.5}\n"
                 "devices:\n  - name: d\n    url: \"sim://x\"\n    tags:\n");
    for (int i = 0; i < 2000; i++) {
        snprintf(buf, sizeof buf, "      - {name: t%d, addr: \"const:1\", <<: *s}\n", i);
        y = grow_cat(y, &len, buf);
    }
    struct fb_gateway *gw = NULL;
    rc = load_text(y, false, &diag, &gw);
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    assert_int_equal(gw->ntags, 2000);
    assert_string_equal(fb_tag_unit(&gw->tags[1999]), "C");
    free(diag);
    free(y);
    fb_gateway_free(gw);
}

/* Issue 14: nested for: products were expanded before any limit applied
 * (100000 x 100000 hung check; the 2 M-tag cap was hit after 1.2 GB).  The
 * count comes first, and the error names the limit. */
static void test_for_product_limit(void **state)
{
    (void)state;
    char *diag = NULL;
    int rc;
    static const char y1[] = "gateway: {id: gw}\n"
                             "devices:\n"
                             "  - for: {d: \"1..100000\"}\n"
                             "    name: \"d{d}\"\n"
                             "    url: \"sim://x{d}\"\n"
                             "    tags:\n"
                             "      - for: {i: \"1..100000\"}\n"
                             "        name: \"t{i}\"\n"
                             "        addr: \"const:1\"\n";
    double t = load_timed(y1, &diag, &rc);
    assert_int_equal(rc, FB_EINVAL);
    expect_diag(
        diag, pos(y1, 3, "{d:"),
        "for: 100000 devices with 100000 tags each (the first) make 10000000000 tags; the limit is 2000000 tags");
    assert_true(t < 2.0 * SLOW);
    free(diag);
    /* tags x count: 3 x 1000 x 1000 */
    static const char y2[] = "gateway: {id: gw}\n"
                             "devices:\n"
                             "  - for: {d: [a, b, c]}\n"
                             "    name: \"d{d}\"\n"
                             "    url: \"sim://x{d}\"\n"
                             "    tags:\n"
                             "      - for: {i: \"1..1000\"}\n"
                             "        name: \"t{i}\"\n"
                             "        addr: \"const:1\"\n"
                             "        count: 1000\n";
    t = load_timed(y2, &diag, &rc);
    assert_int_equal(rc, FB_EINVAL);
    expect_diag(diag, pos(y2, 3, "{d:"), "for: 3 devices with 1000000 tags each (the first) make 3000000 tags");
    assert_true(t < 2.0 * SLOW);
    free(diag);
    /* devices without for: adding up past the limit */
    char *y = NULL;
    size_t len = 0;
    y = grow_cat(y, &len, "gateway: {id: gw}\ndevices:\n");
    for (int d = 0; d < 25; d++) {
        char b[200];
        snprintf(b, sizeof b,
                 "  - name: d%d\n    url: \"sim://x%d\"\n    tags:\n      - for: {i: \"1..100000\"}\n"
                 "        name: \"t{i}\"\n        addr: \"const:1\"\n",
                 d, d);
        y = grow_cat(y, &len, b);
    }
    t = load_timed(y, &diag, &rc);
    assert_int_equal(rc, FB_EINVAL);
    expect_on_line(diag, 6 * 20 + 6, "these tags bring the gateway to more than the limit of 2000000 tags");
    assert_true(t < 5.0 * SLOW);
    free(diag);
    free(y);
}

/* fuzz_config (issue 14): a `for:` may make 100000 devices, and each was
 * compared with every earlier one (duplicate names, connection keys), as
 * was each message with every earlier message: this 1 KB file kept `check`
 * busy for minutes.  Now it is sorted and hashed: linear time. */
/* fb_config_load_mem with struct fb_config_opts.max_expand (what
 * tests/fuzz/fuzz_config.c sets); *diag receives the messages. */
static int load_mem_lim(const char *yaml, uint32_t max_expand, char **diag, struct fb_gateway **gw)
{
    size_t len;
    FILE *f = open_memstream(diag, &len);
    struct fb_config_opts o = {.strict = false, .diag = f, .max_expand = max_expand};
    int rc = fb_config_load_mem("lim.yaml", yaml, strlen(yaml), &o, gw);
    fclose(f);
    return rc;
}

/* max_expand lowers the `for:`, device and tag limits, with their usual
 * messages (tests/fuzz/fuzz_config.c runs at 500); 0 keeps the defaults. */
static void test_max_expand(void **state)
{
    (void)state;
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    /* one for: of 100,000 tags: the default accepts it, 2,000 refuses it */
    static const char big[] = "gateway: {id: gw}\ndevices:\n"
                              "  - name: d\n"
                              "    url: sim://d\n"
                              "    tags:\n"
                              "      - {for: {i: \"1..100000\"}, name: \"t{i}\", addr: \"sine\"}\n";
    int rc = load_mem_lim(big, 0, &diag, &gw);
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    assert_int_equal(gw->ntags, 100000);
    fb_gateway_free(gw);
    free(diag);
    gw = NULL;
    rc = load_mem_lim(big, 2000, &diag, &gw);
    assert_int_equal(rc, FB_EINVAL);
    assert_null(gw);
    expect_diag(diag, pos(big, 6, "- {for"), "these tags bring the gateway to more than the limit of 2000 tags");
    free(diag);
    /* a range longer than the limit */
    static const char range[] = "gateway: {id: gw}\ndevices:\n"
                                "  - for: {i: \"1..2001\"}\n"
                                "    name: \"d{i}\"\n"
                                "    url: \"sim://d{i}\"\n";
    rc = load_mem_lim(range, 2000, &diag, &gw);
    assert_int_equal(rc, FB_EINVAL);
    expect_diag(diag, pos(range, 3, "\"1..2001\""), "loop variable 'i': range '1..2001' is too long (max 2000 values)");
    free(diag);
    /* the limit itself is allowed: 2,000 entries */
    static const char at[] = "gateway: {id: gw}\ndevices:\n"
                             "  - name: d\n"
                             "    url: sim://d\n"
                             "    tags:\n"
                             "      - {for: {i: \"1..2000\"}, name: \"t{i}\", addr: \"sine\"}\n";
    rc = load_mem_lim(at, 2000, &diag, &gw);
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    assert_int_equal(gw->ntags, 2000);
    fb_gateway_free(gw);
    free(diag);
    gw = NULL;
    /* the product of two variables */
    static const char prod[] = "gateway: {id: gw}\ndevices:\n"
                               "  - for: {a: \"1..50\", b: \"1..41\"}\n"
                               "    name: \"d{a}-{b}\"\n"
                               "    url: \"sim://d{a}-{b}\"\n";
    rc = load_mem_lim(prod, 2000, &diag, &gw);
    assert_int_equal(rc, FB_EINVAL);
    expect_diag(diag, pos(prod, 3, "{a:"), "for: expands to more than 2000 entries");
    free(diag);
    /* devices: two loops of 1,500 each */
    static const char devs[] = "gateway: {id: gw}\ndevices:\n"
                               "  - for: {i: \"1..1500\"}\n"
                               "    name: \"a{i}\"\n"
                               "    url: \"sim://a{i}\"\n"
                               "    tags: [{name: t, addr: sine}]\n"
                               "  - for: {i: \"1..1500\"}\n"
                               "    name: \"b{i}\"\n"
                               "    url: \"sim://b{i}\"\n";
    rc = load_mem_lim(devs, 2000, &diag, &gw);
    assert_int_equal(rc, FB_EINVAL);
    expect_diag(diag, pos(devs, 7, "for"), "too many devices (max 2000) or out of memory");
    free(diag);
    rc = load_mem_lim(devs, 0, &diag, &gw); /* warnings only: the b devices have no tags */
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    assert_int_equal(gw->ndevs, 3000);
    fb_gateway_free(gw);
    free(diag);
    gw = NULL;
    /* tags: 1,500 + 1,500 across two devices */
    static const char tags[] = "gateway: {id: gw}\ndevices:\n"
                               "  - name: a\n"
                               "    url: sim://a\n"
                               "    tags: [{for: {i: \"1..1500\"}, name: \"t{i}\", addr: sine}]\n"
                               "  - name: b\n"
                               "    url: sim://b\n"
                               "    tags: [{for: {i: \"1..1500\"}, name: \"t{i}\", addr: sine}]\n";
    rc = load_mem_lim(tags, 2000, &diag, &gw);
    assert_int_equal(rc, FB_EINVAL);
    expect_diag(diag, pos(tags, 8, "[{for"), "these tags bring the gateway to more than the limit of 2000 tags");
    free(diag);
    rc = load_mem_lim(tags, 0, &diag, &gw);
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    assert_int_equal(gw->ntags, 3000);
    fb_gateway_free(gw);
    free(diag);    gw = NULL;
    /* the first waveform tag's feature tags fill the limit, so the second
     * waveform tag is not made: it has no vibration channel (one was added
     * for the tag past the array, fuzz_config's heap overflow) */
    static const char wave[] = "gateway: {id: gw}\ndevices:\n"
                               "  - name: m\n"
                               "    url: \"sim://m\"\n"
                               "    tags:\n"
                               "      - {name: a, addr: \"motor:rpm=1480\", vibration: {fs: 25600, block: 4096}}\n"
                               "      - {name: b, addr: \"motor:rpm=1480\", vibration: {fs: 25600, block: 4096}}\n";
    rc = load_mem_lim(wave, 4, &diag, &gw);
    assert_int_equal(rc, FB_EINVAL);
    assert_null(gw);
    expect_diag(diag, pos(wave, 7, "{name: b"), "too many tags (max 4) or out of memory");
    free(diag);
    rc = load_mem_lim(wave, 0, &diag, &gw);
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    fb_gateway_free(gw);
    free(diag);
}

/* One misspelt key in every entry of a `for:` and in two kinds of mapping:
 * each message keeps its own table's suggestion (fb_cfg_map_check caches
 * them per key text and table). */
static void test_unknown_key_suggestions(void **state)
{
    (void)state;
    static const char y[] = "gateway: {id: gw}\ndevices:\n"
                            "  - for: {i: \"1..3\"}\n"
                            "    name: \"d{i}\"\n"
                            "    url: \"sim://d{i}\"\n"
                            "    adr: x\n"
                            "    pol: 1s\n"
                            "    tags:\n"
                            "      - {name: t, addr: sine, adr: x, pol: 1s}\n";
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    int rc = load_text(y, false, &diag, &gw);
    assert_int_equal(rc, FB_EINVAL);
    expect_diag(diag, pos(y, 6, "adr"), "unknown key 'adr' in device\n");
    expect_diag(diag, pos(y, 7, "pol"), "unknown key 'pol' in device (did you mean 'poll'?)");
    expect_diag(diag, pos(y, 9, "adr"), "unknown key 'adr' in tag (did you mean 'addr'?)");
    expect_diag(diag, pos(y, 9, "pol"), "unknown key 'pol' in tag (did you mean 'poll'?)");
    free(diag);
}

static void test_many_devices(void **state)
{
    (void)state;
    /* a CPU-time bound: meaningless under valgrind (scripts/valgrind.sh sets FB_VALGRIND),
     * where the other cases check the loader's memory */
    if (getenv("FB_VALGRIND")) skip();
    /* and on an emulated machine (scripts/cross-system.sh sets FB_EMULATED): the
     * guest's CPU clock runs on while the busy host runs something else, and the
     * emulation itself is many times slower; only the bounds are left out there */
    const bool timed = !getenv("FB_EMULATED");
    static const char y[] =
        "gateway: {id: gw}\n"
        "devices:\n"
        "  - for: {i: \"1..19999\"}\n"
        "    name: \"a{i}\"\n"
        "    url: \"sim://a{i}\"\n"
        "  - for: {i: \"1..19999\"}\n"
        "    name: \"b{i}\"\n"
        "    url: \"modbus-tcp://127.0.0.1:5020?unit={i % 200 + 1}\"\n"
        "  - {name: a7, url: \"sim://z\"}\n"
        "  - {name: b9, url: \"modbus-tcp://127.0.0.1:5021\"}\n"
        "  - {name: c, url: \"modbus-tcp://127.0.0.1:5020?unit=3\", tags: [{name: t, addr: \"hr:1\"}]}\n";
    char *diag = NULL;
    int rc;
    clock_t c0 = clock(); /* CPU time: the machine may be busy */
    load_timed(y, &diag, &rc);
    double t = (double)(clock() - c0) / CLOCKS_PER_SEC;
    assert_int_equal(rc, FB_EINVAL);
    expect_diag(diag, pos(y, 9, "a7"), "duplicate device name 'a7' (first at line 3)");
    expect_diag(diag, pos(y, 10, "b9"), "duplicate device name 'b9' (first at line 6)");
    assert_null(strstr(diag, "duplicate device name 'c'"));
    expect_on_line(diag, 3, "device 'a19999' has no tags");
    if (timed) assert_true(t < 5.0 * SLOW);
    free(diag);
    /* the same without the duplicates: devices share a connection by key */
    char *y2 = strdup(y);
    assert_non_null(y2);
    *strstr(y2, "  - {name: a7") = 0;
    strcat(y2, "  - {name: c, url: \"modbus-tcp://127.0.0.1:5020?unit=3\", tags: [{name: t, addr: \"hr:1\"}]}\n");
    struct fb_gateway *gw = NULL;
    c0 = clock();
    rc = load_text(y2, false, &diag, &gw);
    t = (double)(clock() - c0) / CLOCKS_PER_SEC;
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    assert_int_equal(gw->ndevs, 2 * 19999 + 1);
    /* a sim device is a connection of its own (its key is its name); the Modbus units share one */
    assert_int_equal(gw->nconns, 19999 + 1);
    const struct fb_device *c = &gw->devs[gw->ndevs - 1], *b1 = &gw->devs[19999];
    assert_string_equal(b1->name, "b1");
    assert_ptr_equal(c->conn, b1->conn);
    assert_ptr_equal(gw->devs[4].conn, &gw->conns[4]);
    assert_ptr_equal(b1->conn, &gw->conns[19999]);
    assert_int_equal(b1->conn->ndevs, 19999 + 1);
    assert_ptr_equal(b1->conn->devs[19999], c);
    assert_string_equal(b1->conn->key, "tcp:127.0.0.1:5020");
    if (timed) assert_true(t < 5.0 * SLOW);
    free(diag);
    free(y2);
    fb_gateway_free(gw);
}

/* ------------------------------------------------------------ durations */

static void test_durations_sizes(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t ns;
    } d[] = {{"250us", 250000},       {"100ms", 100000000},      {"1.5s", 1500000000}, {"2m", 120000000000LL},
             {"1h", 3600000000000LL}, {"7d", 604800000000000LL}, {"5", 5000000000LL}};
    char y[256], *diag = NULL;
    struct fb_gateway *gw = NULL;
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        snprintf(y, sizeof y, "gateway: {id: g}\nstatus_interval: %s\n", d[i].s);
        assert_int_equal(load_text(y, false, &diag, &gw), 0);
        free(diag);
        assert_int_equal(gw->status_interval_ns, d[i].ns);
        fb_gateway_free(gw);
    }
    static const char *const bad[] = {"10 parsecs", "fast", "-1s", "0", "1.5.5s", "\"\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(y, sizeof y, "gateway: {id: g}\nstatus_interval: %s\n", bad[i]);
        assert_int_equal(load_text(y, false, &diag, &gw), FB_EINVAL);
        assert_non_null(strstr(diag, ":2:18: status_interval"));
        free(diag);
    }
    uint64_t b;
    assert_int_equal(fb_parse_size("512MiB", &b), 0);
    assert_true(b == 512ull * 1024 * 1024);
    assert_int_equal(fb_parse_size("10MB", &b), 0);
    assert_true(b == 10000000ull);
    assert_int_equal(fb_parse_size("64KiB", &b), 0);
    assert_true(b == 65536);
    assert_int_equal(fb_parse_size("4096", &b), 0);
    assert_true(b == 4096);
    assert_true(fb_parse_size("12 apples", &b) < 0);
}

/* ------------------------------------------------------------ urls */

static void test_url_parse(void **state)
{
    (void)state;
    struct fb_url u;
    struct fb_err e = {0};
    assert_int_equal(fb_url_parse("modbus-rtu:///dev/ttyUSB0?baud=19200&parity=E&unit=3", &u, &e), 0);
    assert_string_equal(u.scheme, "modbus-rtu");
    assert_string_equal(u.host, "");
    assert_string_equal(u.path, "/dev/ttyUSB0");
    assert_int_equal(u.port, 0);
    assert_int_equal(u.nq, 3);
    assert_string_equal(fb_url_get(&u, "baud"), "19200");
    assert_string_equal(fb_url_get(&u, "parity"), "E");
    assert_null(fb_url_get(&u, "stop"));
    fb_url_free(&u);

    assert_int_equal(fb_url_parse("MODBUS-TCP://10.0.1.100:502?unit=1&timeout=1s", &u, &e), 0);
    assert_string_equal(u.scheme, "modbus-tcp");
    assert_string_equal(u.host, "10.0.1.100");
    assert_int_equal(u.port, 502);
    assert_string_equal(u.path, "");
    assert_string_equal(fb_url_get(&u, "timeout"), "1s");
    fb_url_free(&u);

    assert_int_equal(fb_url_parse("modbus-tcp://[::1]:5020", &u, &e), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 5020);
    fb_url_free(&u);

    assert_int_equal(fb_url_parse("opc.tcp://host:4840/a%20b?x=%2Fy&flag", &u, &e), 0);
    assert_string_equal(u.scheme, "opc.tcp");
    assert_string_equal(u.path, "/a b");
    assert_string_equal(fb_url_get(&u, "x"), "/y");
    assert_string_equal(fb_url_get(&u, "flag"), "");
    fb_url_free(&u);

    assert_int_equal(fb_url_parse("sim://anything", &u, &e), 0);
    assert_string_equal(u.host, "anything");
    fb_url_free(&u);

    static const char *const bad[] = {
        "",
        "nourl",
        "://x",
        "1x://h",
        "modbus-tcp://h:0",
        "modbus-tcp://h:65536",
        "modbus-tcp://h:",
        "modbus-tcp://h:12a",
        "mqtt://user:pw@h",
        "x://[::1",
        "x://h?a=1&a=2",
        "x://h/%zz",
        "x://h/%0",
        "x://h#frag",
        "x://h /p",
        "x://h?%00=1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&u, 0xab, sizeof u);
        if (fb_url_parse(bad[i], &u, &e) == 0) {
            fprintf(stderr, "accepted bad URL '%s'\n", bad[i]);
            fail();
        }
        assert_null(u.scheme);
    }
    assert_int_equal(fb_url_parse("mqtt://user:pw@h", &u, &e), FB_EINVAL);
    assert_non_null(strstr(e.msg, "credentials"));
    fb_url_free(&u); /* safe after a failed parse */
}

/* ------------------------------------------------ the one driver table */

/* A URL the scheme's driver accepts, without `skip` among its query keys. */
static void base_url(char *buf, size_t len, const char *scheme, const char *skip)
{
    if (!strcmp(scheme, "modbus-tcp"))
        snprintf(buf, len, "modbus-tcp://127.0.0.1:1");
    else if (!strcmp(scheme, "modbus-rtu"))
        snprintf(buf, len, "modbus-rtu:///dev/ttyUSB0");
    else if (!strcmp(scheme, "opc.tcp"))
        snprintf(buf, len, "opc.tcp://127.0.0.1:1");
    else if (!strcmp(scheme, "s7"))
        snprintf(buf, len, "s7://127.0.0.1");
    else if (!strcmp(scheme, "ads"))
        snprintf(buf, len, "ads://127.0.0.1%s", strcmp(skip, "net_id") ? "?net_id=1.2.3.4.1.1" : "");
    else if (!strcmp(scheme, "revpi"))
        snprintf(buf, len, "revpi:///dev/null%s", strcmp(skip, "config") ? "?config=none" : "");
    else
        snprintf(buf, len, "%s://x", scheme);
}

/* device_init on a throw-away device; 0 or the driver's error. */
static int try_device(const char *url, struct fb_err *err)
{
    static struct fb_gateway gw;
    struct fb_device d;
    memset(&d, 0, sizeof d);
    memset(err, 0, sizeof *err);
    gw.cfg_path = (char *)"/nonexistent/cfg.yaml";
    d.name = (char *)"dev";
    d.url_text = (char *)url;
    d.gw = &gw;
    d.timeout_ns = 1000000000LL;
    int rc = fb_url_parse(url, &d.url, err);
    if (rc < 0) return rc;
    d.drv = fb_driver_for_scheme(d.url.scheme);
    assert_non_null(d.drv);
    char *key = NULL;
    rc = d.drv->device_init(&d, &key, err);
    if (rc == 0 && d.drv->device_free) d.drv->device_free(&d);
    free(key);
    fb_url_free(&d.url);
    return rc;
}

static bool mentions_unknown(const char *msg)
{
    for (const char *p = msg; *p; p++)
        if (!strncasecmp(p, "unknown", 7)) return true;
    return false;
}

/* Every scheme row belongs to a driver that serves it (and the reverse);
 * every option of the table is accepted by its driver; every option the
 * driver lists in its own "unknown option" message is in the table. */
static void test_driver_table(void **state)
{
    (void)state;
    size_t n;
    const struct fb_scheme_info *si = fb_schemes(&n);
    assert_true(n >= 7);
    for (size_t i = 0; i < n; i++) {
        bool served = false;
        for (const char *const *sc = si[i].drv->schemes; sc && *sc; sc++) {
            if (!strcmp(*sc, si[i].scheme)) served = true;
            assert_non_null(fb_scheme_info(*sc));
        }
        assert_true(served);
        assert_ptr_equal(fb_driver_for_scheme(si[i].scheme), si[i].drv);
        char url[512], base[256];
        struct fb_err e;
        for (const struct fb_drv_opt *o = si[i].opts; o->key; o++) {
            base_url(base, sizeof base, si[i].scheme, o->key);
            snprintf(url, sizeof url, "%s%c%s=%s", base, strchr(base, '?') ? '&' : '?', o->key, o->example);
            if (try_device(url, &e) < 0 && mentions_unknown(e.msg)) {
                fprintf(stderr, "%s: option %s refused as unknown: %s\n", si[i].scheme, o->key, e.msg);
                fail();
            }
        }
        base_url(base, sizeof base, si[i].scheme, "");
        snprintf(url, sizeof url, "%s%czz_bogus=1", base, strchr(base, '?') ? '&' : '?');
        assert_true(try_device(url, &e) < 0);
        const char *open = strrchr(e.msg, '('), *close = open ? strchr(open, ')') : NULL;
        if (!open || !close) {
            fprintf(stderr, "%s: the unknown-option message lists no options: %s\n", si[i].scheme, e.msg);
            fail();
        }
        char list[512];
        snprintf(list, sizeof list, "%.*s", (int)(close - open - 1), open + 1);
        char *p = list;
        if (!strncmp(p, "expected ", 9)) p += 9;
        if (!strncmp(p, "valid: ", 7)) p += 7;
        int listed = 0;
        for (char *tok = strtok(p, ", "); tok; tok = strtok(NULL, ", ")) {
            listed++;
            if (!fb_scheme_opt(si[i].scheme, tok)) {
                fprintf(stderr, "%s: the driver accepts '%s', the table (src/core/driver.c) does not list it\n",
                        si[i].scheme, tok);
                fail();
            }
        }
        int table = 0;
        for (const struct fb_drv_opt *o = si[i].opts; o->key; o++) {
            if (o->unlisted) continue;
            table++;
            char want[64];
            snprintf(want, sizeof want, "%s", o->key);
            bool found = false;
            snprintf(list, sizeof list, "%.*s", (int)(close - open - 1), open + 1);
            for (char *tok = strtok(list, "(), :"); tok; tok = strtok(NULL, "(), :"))
                if (!strcmp(tok, want)) found = true;
            if (!found) {
                fprintf(stderr, "%s: option '%s' is in the table but not in the driver's list: %s\n", si[i].scheme,
                        o->key, e.msg);
                fail();
            }
        }
        assert_int_equal(listed, table);
    }
}

/* The text of the doc section that starts with the line `heading`, up to the
 * next heading of the same or a higher level (static buffer). */
static const char *doc_section(const char *doc, const char *heading)
{
    static char buf[65536];
    size_t hl = strlen(heading);
    const char *p = doc;
    while ((p = strstr(p, heading))) {
        if ((p == doc || p[-1] == '\n') && (p[hl] == '\n' || p[hl] == ' ')) break;
        p += hl;
    }
    if (!p) return NULL;
    int level = (int)strspn(heading, "#");
    const char *e = p + hl;
    for (;;) {
        e = strchr(e, '\n');
        if (!e) {
            e = p + strlen(p);
            break;
        }
        e++;
        int l = (int)strspn(e, "#");
        if (l > 0 && l <= level && e[l] == ' ') break;
    }
    snprintf(buf, sizeof buf, "%.*s", (int)(e - p), p);
    return buf;
}

static char *read_doc(const char *rel)
{
    char path[1024];
    const char *src = getenv("FB_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/%s", src ? src : ".", rel);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char doc[400000];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = 0;
    return doc;
}

/* docs/configuration.md documents every key the loader accepts (a table row
 * "| `key` |" in the key's section) and every device URL option. */
static void test_docs_list_every_key(void **state)
{
    (void)state;
    const char *doc = read_doc("docs/configuration.md");
    assert_null(strstr(doc, "DESIGN.md"));
    static const char *const where[][2] = {
        {"gateway", "## `gateway`"},
        {"log", "## `log`"},
        {"metrics", "## `metrics`"},
        {"commands", "## `commands`"},
        {"buffer", "## `buffer`"},
        {"mqtt", "## `mqtt`"},
        {"tls", "## `mqtt`"},
        {"qos", "## `mqtt`"},
        {"reconnect", "## `mqtt`"},
        {"sparkplug", "## `sparkplug`"},
        {"device", "## `devices`"},
        {"tag", "## Tags"},
        {"scale", "## Tags"},
        {"fleet.remote_config", "### `fleet.remote_config`"},
        {"fleet.health", "### `fleet.health`"},
        {"fleet.ota", "### `fleet.ota`"},
        {"fleet.provisioning", "### `fleet.provisioning`"},
        {"http.tls", "## `http`"},
        {"flood", "## `alarms`"},
        {"alarm", "## `alarms`"},
        {"script", "## `scripts`"},
        {"metrics.tls", "## `metrics`"},
        {"loop", "## `control`"},
        {"interlock", "## `control`"},
        {"influx.batch", "## `influx`"},
        {"influx.retry", "## `influx`"},
        {"influx.map", "## `influx`"},
        {"ingest.telemetry", "## `ingest`"},
        {"ingest.sparkplug", "## `ingest`"},
        {"ingest.types", "## `ingest`"},
    };
    struct fb_config_keys kt[128];
    size_t n = fb_config_key_tables(kt, 128);
    assert_true(n < 128);
    int missing = 0;
    for (size_t i = 0; i < n; i++) {
        for (const char *const *k = kt[i].keys; *k; k++) {
            char want[128];
            if (!strcmp(kt[i].section, "top")) { /* every top-level key has its own heading */
                snprintf(want, sizeof want, "## `%s`", *k);
                if (!doc_section(doc, want)) {
                    fprintf(stderr, "docs/configuration.md: no section '%s'\n", want);
                    missing++;
                }
                continue;
            }
            const char *heading = NULL;
            char own[80]; /* a sink's section: its own heading */
            snprintf(own, sizeof own, "## `%s`", kt[i].section);
            for (size_t w = 0; w < sizeof where / sizeof where[0]; w++)
                if (!strcmp(where[w][0], kt[i].section)) heading = where[w][1];
            if (!heading) heading = own;
            const char *sec = doc_section(doc, heading);
            snprintf(want, sizeof want, "| `%s` |", *k);
            if (!sec || !strstr(sec, want)) {
                fprintf(stderr, "docs/configuration.md: key %s.%s has no row '%s' under '%s'\n", kt[i].section, *k,
                        want, heading);
                missing++;
            }
        }
    }
    const char *urls = doc_section(doc, "### Device URLs");
    assert_non_null(urls);
    static char ubuf[65536];
    snprintf(ubuf, sizeof ubuf, "%s", urls);
    const struct fb_scheme_info *si = fb_schemes(&n);
    for (size_t i = 0; i < n; i++) {
        char want[128];
        snprintf(want, sizeof want, "`%s://", si[i].scheme);
        /* the scheme's own subsection: "#### `modbus-tcp://…` …" */
        const char *h = ubuf, *sub = NULL;
        while ((h = strstr(h, "\n#### "))) {
            const char *eol = strchr(h + 1, '\n');
            if (eol && memmem(h, (size_t)(eol - h), want, strlen(want))) {
                char head[512];
                snprintf(head, sizeof head, "%.*s", (int)(eol - h - 1), h + 1);
                sub = doc_section(ubuf, head);
                break;
            }
            h += 5;
        }
        if (!sub) {
            fprintf(stderr, "docs/configuration.md: no '#### ...%s...' under Device URLs\n", want);
            missing++;
            continue;
        }
        for (const struct fb_drv_opt *o = si[i].opts; o->key; o++) {
            snprintf(want, sizeof want, "| `%s` |", o->key);
            if (!o->unlisted && !strstr(sub, want)) {
                fprintf(stderr, "docs/configuration.md: %s option %s has no row\n", si[i].scheme, o->key);
                missing++;
            }
        }
    }
    assert_int_equal(missing, 0);
}

/* Secrets are noted and no output path prints them (env.h): the redaction
 * itself, a log line, the config diagnostics and a ${ENV} secret. */
static void test_secret_redaction(void **state)
{
    (void)state;
    fb_secret_forget_all();
    char out[256];
    assert_false(fb_secret_any());
    fb_secret_redact("hunter2 x", 9, out, sizeof out);
    assert_string_equal(out, "hunter2 x");

    fb_secret_note("abc"); /* too short to mask */
    assert_false(fb_secret_any());
    fb_secret_note("hunter2");
    fb_secret_note("hunter2-long");
    fb_secret_note("pa\"ss\\wd");
    assert_true(fb_secret_any());
    const char *in = "a hunter2 b hunter2-long c hunter c {\"p\":\"pa\\\"ss\\\\wd\"} pa\"ss\\wd";
    fb_secret_redact(in, strlen(in), out, sizeof out);
    assert_string_equal(out, "a [secret] b [secret] c hunter c {\"p\":\"[secret]\"} [secret]");
    /* truncation keeps the NUL and never a part of the secret's text */
    size_t n = fb_secret_redact("xx hunter2", 10, out, 6);
    assert_int_equal(n, 5);
    assert_string_equal(out, "xx [s");
    size_t dl = 0;
    char *d = fb_secret_redact_dup("hunter2hunter2", 14, &dl);
    assert_string_equal(d, "[secret][secret]");
    assert_int_equal(dl, 16);
    free(d);

    /* a log line */
    char logpath[512];
    snprintf(logpath, sizeof logpath, "%s/log.txt", tmpdir);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    FILE *lf = fopen(logpath, "w+");
    assert_non_null(lf);
    dup2(fileno(lf), STDERR_FILENO);
    fb_log_init(FB_LOG_INFO, FB_LOG_TEXT);
    fb_info("dev", NULL, "login with %s refused", "hunter2");
    fb_log_init(FB_LOG_INFO, FB_LOG_JSON);
    fb_info("dev", NULL, "login with %s refused", "pa\"ss\\wd");
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    fb_log_init(FB_LOG_WARN, FB_LOG_TEXT);
    char text[1024] = "";
    rewind(lf);
    size_t got = fread(text, 1, sizeof text - 1, lf);
    text[got] = 0;
    fclose(lf);
    assert_non_null(strstr(text, "login with [secret] refused"));
    assert_null(strstr(text, "hunter2"));
    assert_null(strstr(text, "ss\\"));
    fb_secret_forget_all();
    assert_false(fb_secret_any());

    /* a ${ENV} secret is noted by the loader, and a diagnostic that quotes
     * the same value (here a mistyped key) is redacted */
    setenv("FB_TEST_SECRET_PW", "s3cr3t-Pw", 1);
    static const char y[] = "gateway: {id: gw}\n"
                            "mqtt:\n"
                            "  url: mqtt://127.0.0.1\n"
                            "  username: u\n"
                            "  password: \"${FB_TEST_SECRET_PW}\"\n"
                            "  keepalive: \"${FB_TEST_SECRET_PW}\"\n";
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    assert_int_equal(load_text(y, false, &diag, &gw), FB_EINVAL);
    assert_non_null(strstr(diag, "mqtt.keepalive"));
    assert_non_null(strstr(diag, "[secret]"));
    assert_null(strstr(diag, "s3cr3t-Pw"));
    free(diag);
    assert_true(fb_secret_any());
    fb_secret_forget_all();
    unsetenv("FB_TEST_SECRET_PW");
}

/* commands.allow and write_roles: parsed, checked with positions, shared
 * between the tags a for: loop makes. */
/* Issue 15: a tag does not keep its address text when its driver writes
 * the parsed address back as the same text; every other text is kept, as
 * written, and every tag still gives its own (messages, `check`, the API). */
static void test_address_texts(void **state)
{
    (void)state;
    const char *y = "gateway: {id: gw}\n"
                    "devices:\n"
                    "  - name: m\n"
                    "    url: \"modbus-tcp://127.0.0.1:1502\"\n"
                    "    tags:\n"
                    "      - {name: a, addr: \"hr:0:int16\"}\n"
                    "      - {name: b, addr: \"40002\"}\n"
                    "      - {name: c, addr: \"HR:3:int16\"}\n"
                    "      - {name: d, addr: \"hr:4:float32:CDAB\"}\n"
                    "      - {name: e, addr: \"ir:10:int16\", count: 3}\n"
                    "      - {name: f, addr: \"hr:6:float32\", order: CDAB}\n"
                    "  - name: s\n"
                    "    url: \"sim://x\"\n"
                    "    tags:\n"
                    "      - {name: g, addr: \"const:1\"}\n";
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    int rc = load_text(y, false, &diag, &gw);
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    static const char *const want[] = {"hr:0:int16",  "40002",       "HR:3:int16",   "hr:4:float32:CDAB", "ir:10:int16",
                                       "ir:10:int16", "ir:10:int16", "hr:6:float32", "const:1"};
    assert_int_equal(gw->ntags, 9);
    for (uint32_t i = 0; i < gw->ntags; i++) {
        char ab[FB_ATEXT_MAX];
        assert_string_equal(fb_tag_addr_text(gw, &gw->tags[i], ab), want[i]);
    }
    assert_null(gw->atext); /* only the table is left */
    /* kept: 40002, HR:3:int16, hr:4:float32:CDAB (written back hr:4:float32/CDAB), e[1..2] (one run),
     * hr:6:float32 (its order is apart), const:1 (the sim driver writes none back) */
    assert_int_equal(gw->natext_runs, 6);
    assert_int_equal(gw->atext_runs[3].first, 5);
    assert_int_equal(gw->atext_runs[3].n, 2);
    free(diag);
    fb_gateway_free(gw);
}

static void test_command_senders(void **state)
{
    (void)state;
    static const char ok[] = "gateway: {id: gw}\n"
                             "commands: {allow: [mqtt, \"http:operator\", \"*:admin\"]}\n"
                             "devices:\n"
                             "  - name: d\n"
                             "    url: sim://d\n"
                             "    tags:\n"
                             "      - {for: {i: \"1..3\"}, name: \"w{i}\", addr: \"memory\", access: rw,\n"
                             "         write_roles: [sparkplug]}\n"
                             "      - {name: free, addr: \"memory\", access: rw}\n";
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    assert_int_equal(load_text(ok, false, &diag, &gw), 0);
    free(diag);
    assert_int_equal(gw->nacls, 2);
    assert_int_equal(gw->cmd_allow, 1);
    assert_int_equal(gw->acls[0].n, 3);
    assert_string_equal(gw->acls[0].pat[1], "http:operator");
    assert_int_equal(fb_tag_write_roles(&gw->tags[0]), 2);
    assert_int_equal(fb_tag_write_roles(&gw->tags[2]), 2);
    assert_int_equal(fb_tag_write_roles(&gw->tags[3]), 0);
    assert_string_equal(gw->acls[1].pat[0], "sparkplug");
    fb_gateway_free(gw);

    static const char bad[] = "gateway: {id: gw}\n"
                              "commands: {allow: [mqtt, mqt, \"http:\"]}\n"
                              "devices:\n"
                              "  - name: d\n"
                              "    url: sim://d\n"
                              "    tags:\n"
                              "      - {name: a, addr: \"memory\", access: rw, write_roles: operator}\n"
                              "      - {name: b, addr: \"memory\", write_roles: [mqtt]}\n";
    assert_int_equal(load_text(bad, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(bad, 2, "mqt,"), "commands.allow: 'mqt': unknown command source 'mqt'");
    expect_diag(diag, pos(bad, 2, "\"http:\""), "commands.allow: 'http:': the role after ':'");
    expect_diag(diag, pos(bad, 7, "operator"), "write_roles must be a list of command senders");
    expect_diag(diag, pos(bad, 8, "[mqtt]"), "warning: write_roles on a read-only tag has no effect");
    free(diag);
}

/* commands.gateway: a sender list per gateway command (docs/security.md). */
static void test_gateway_command_senders(void **state)
{
    (void)state;
    static const char ok[] = "gateway: {id: gw}\n"
                             "commands: {allow: [mqtt, sparkplug], gateway: {reload: [mqtt], decommission: [],\n"
                             "           ota: [mqtt]}}\n"
                             "devices: [{name: d, url: sim://d, tags: [{name: a, addr: memory}]}]\n";
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    assert_int_equal(load_text(ok, false, &diag, &gw), 0);
    free(diag);
    int reload = -1, decom = -1, ota = -1, cfg = -1;
    for (int k = 0; fb_gw_cmd_names[k]; k++) {
        if (!strcmp(fb_gw_cmd_names[k], "reload")) reload = k;
        if (!strcmp(fb_gw_cmd_names[k], "decommission")) decom = k;
        if (!strcmp(fb_gw_cmd_names[k], "ota")) ota = k;
        if (!strcmp(fb_gw_cmd_names[k], "config")) cfg = k;
    }
    assert_true(reload >= 0 && decom >= 0 && ota >= 0 && cfg >= 0);
    assert_int_equal(gw->gw_cmd_allow[cfg], 0); /* no own list: commands.allow alone */
    assert_int_equal(gw->gw_cmd_allow[reload], gw->gw_cmd_allow[ota]); /* [mqtt] stored once */
    assert_int_equal(gw->acls[gw->gw_cmd_allow[reload] - 1].n, 1);
    assert_int_equal(gw->acls[gw->gw_cmd_allow[decom] - 1].n, 0);
    assert_false(fb_cmd_acl_allows(&gw->acls[gw->gw_cmd_allow[decom] - 1], "mqtt", ""));
    fb_gateway_free(gw);

    static const char bad[] = "gateway: {id: gw}\n"
                              "commands: {allow: [sparkplug], gateway: {reboot: [mqtt], ota: mqtt}}\n"
                              "fleet: {state_dir: /tmp, provisioning: {claim_cert: c.pem, claim_key: c.key,\n"
                              "        cert: d.pem, key: d.key}}\n"
                              "devices: [{name: d, url: sim://d, tags: [{name: a, addr: memory}]}]\n";
    assert_int_equal(load_text(bad, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(bad, 2, "reboot"), "unknown key 'reboot' in commands.gateway");
    expect_diag(diag, pos(bad, 2, "mqtt}}"), "commands.gateway.ota must be a list of command senders");
    assert_non_null(strstr(diag, "commands.allow does not let mqtt in, but fleet.provisioning receives its certificate"));
    free(diag);
}

/* Computed tags, alarms and scripts (issue 18): a valid config builds the
 * model the edge thread runs; every mistake is reported where it is. */
static void test_edge_config(void **state)
{
    (void)state;
    char *diag = NULL;
    struct fb_gateway *gw = NULL;
    write_tmp("ok.lua", "function on_timer(now) fb.set('n', 1) end\n");
    static const char ok[] =
        "gateway: {id: gw}\n"
        "alarms: {flood: {events: 5, window: 2s}, max_shelve: 1h}\n"
        "scripts:\n"
        "  - {name: s1, file: ok.lua, device: plant, timer: 1s, alarms: {long_run: {priority: "
        "urgent, on_delay: 3s}}}\n"
        "devices:\n"
        "  - name: boiler\n"
        "    url: \"sim://b\"\n"
        "    tags:\n"
        "      - {name: t_in, addr: \"const:70\", alarms: {hi: {limit: 80, deadband: 2, on_delay: "
        "5s, message: hot}, hihi: 95, roc: {limit: 3}, deviation: {setpoint: sp, limit: 4}, "
        "bad_quality: true}}\n"
        "      - {name: t_out, addr: \"const:40\"}\n"
        "      - {name: sp, addr: \"memory:initial=70\", access: rw}\n"
        "      - {name: run, addr: \"const:1\", type: bool, alarms: {digital: {when: false, ne107: "
        "failure}}}\n"
        "      - {name: dt, expr: \"t_in - t_out\", alarms: {lo: {limit: 5, suppress: \"not "
        "run\"}}}\n"
        "  - name: plant\n"
        "    tags:\n"
        "      - {name: heat, expr: \"'boiler/dt' * 4.186\", deadband: 0.1, unit: kW}\n"
        "      - {name: ok, expr: \"'boiler/t_in' < 90 and 'boiler/run'\", type: bool, period: 5s, "
        "quality: last_usable}\n"
        "      - {name: n, script: s1}\n";
    int rc = load_text(ok, true, &diag, &gw);
    if (rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, 0);
    free(diag);
    assert_int_equal(gw->ncalcs, 3);
    assert_int_equal(gw->nscripts, 1);
    assert_int_equal(gw->nalarms, 8); /* 5 on t_in, 1 on run, 1 on dt, 1 of the script */
    assert_true(gw->alarm_opts.flood_events == 5 && gw->alarm_opts.flood_window_ns == 2000000000LL);
    assert_true(gw->alarm_opts.max_shelve_ns == 3600000000000LL);
    /* expression tags are in dependency order: boiler/dt before plant/heat */
    uint32_t dt = 4, heat = 5;
    assert_int_equal(gw->tags[dt].src, FB_TAG_EXPR);
    assert_true(gw->tags[dt].calc < gw->tags[heat].calc);
    assert_int_equal(gw->tags[dt].group, FB_GROUP_NONE);
    assert_int_equal(gw->tags[dt].type, FB_T_FLOAT64);
    assert_int_equal(gw->tags[6].type, FB_T_BOOL);
    assert_int_equal(gw->calcs[gw->tags[6].calc].period_ns, 5000000000LL);
    assert_int_equal(gw->calcs[gw->tags[6].calc].quality, FB_CALCQ_LAST_USABLE);
    assert_int_equal(gw->devs[0].ngroups, 1);
    assert_int_equal(gw->devs[0].groups[0].ntags, 4); /* the computed tag is in no poll group */
    assert_null(gw->devs[1].conn);                    /* virtual: no connection */
    assert_int_equal(gw->devs[1].ngroups, 0);
    const struct fb_alarm *hi = &gw->alarms[0];
    assert_string_equal(hi->name, "t_in/hi");
    assert_string_equal(hi->path, "boiler/t_in/hi");
    assert_true(hi->limit == 80 && hi->deadband == 2 && hi->on_delay_ns == 5000000000LL);
    assert_string_equal(hi->message, "hot");
    assert_int_equal(hi->priority, FB_AP_MEDIUM);
    assert_int_equal(gw->alarms[1].priority, FB_AP_HIGH); /* hihi */
    assert_int_equal(gw->alarms[3].kind, FB_AK_DEVIATION);
    assert_int_equal(gw->alarms[3].setpoint, 2);
    assert_int_equal(gw->alarms[4].priority, FB_AP_LOW); /* bad_quality */
    assert_int_equal(gw->alarms[5].ne107, FB_NE107_FAILURE);
    assert_true(gw->alarms[5].when == 0);
    assert_non_null(gw->alarms[6].suppress);
    assert_int_equal(gw->alarms[6].nsup_in, 1);
    const struct fb_alarm *ext = &gw->alarms[7];
    assert_string_equal(ext->path, "plant/s1/long_run");
    assert_int_equal(ext->kind, FB_AK_EXTERNAL);
    assert_int_equal(ext->priority, FB_AP_URGENT);
    assert_int_equal(gw->scripts[0].nout, 1);
    assert_int_equal(gw->scripts[0].outputs[0], 7);
    assert_int_equal(gw->scripts[0].first_alarm, 7);
    assert_int_equal(gw->scripts[0].ndevs, 1);
    fb_gateway_free(gw);

    /* mistakes, each at its place */
    write_tmp("bad.lua", "function on_timer(\n  x = \n");
    static const char bad[] =
        "gateway: {id: gw}\n"
        "scripts:\n"
        "  - {name: s1, file: bad.lua, libraries: [debug]}\n"
        "  - {name: s2, file: nope.lua, alarms: {a: {limit: 3}}}\n"
        "devices:\n"
        "  - name: d\n"
        "    url: \"sim://d\"\n"
        "    tags:\n"
        "      - {name: a, addr: \"const:1\", alarms: {high: 5, hi: {deadband: 1}, deviation: {limit: "
        "3}, digital: {limit: 1}}}\n"
        "      - {name: b, expr: \"a +\", addr: \"const:1\"}\n"
        "      - {name: c, expr: \"'x/y' * 2\"}\n"
        "      - {name: e, expr: \"f + 1\"}\n"
        "      - {name: f, expr: \"e * 2\"}\n"
        "      - {name: g, script: nosuch, access: rw}\n"
        "      - {name: h, addr: \"const:1\", period: 1s}\n"
        "      - {name: s, addr: \"const:\\\"x\\\"\", alarms: {hi: 1}}\n"
        "  - name: v\n"
        "    tags:\n"
        "      - {name: r, addr: \"const:1\"}\n";
    assert_int_equal(load_text(bad, false, &diag, &gw), FB_EINVAL);
    expect_diag(diag, pos(bad, 3, "bad.lua"), "script s1: bad.lua:2: ')' expected near '='");
    expect_diag(diag, pos(bad, 3, "debug"), "libraries: 'debug' cannot be enabled");
    expect_diag(diag, pos(bad, 4, "nope.lua"), "script file ");
    expect_diag(diag, pos(bad, 4, "limit"),
                "alarms.a: a script's alarm is raised by the script (fb.alarm): limit: has no meaning");
    expect_diag(diag, pos(bad, 9, "high"),
                "unknown alarm 'high' (hihi, hi, lo, lolo, roc, deviation, digital, bad_quality)");
    expect_diag(diag, pos(bad, 9, "{deadband"), "alarms.hi: limit: is required");
    expect_diag(diag, pos(bad, 9, "{limit: 3}"), "alarms.deviation: setpoint: is required");
    expect_diag(diag, pos(bad, 9, "limit: 1"), "alarms.digital has no limit");
    expect_diag(diag, pos(bad, 10, "addr"), "a computed tag (expr:) takes no addr:");
    expect_diag(diag, pos(bad, 10, "\"a +"), "expr: at column 4: the expression ends where a value is expected");
    expect_diag(diag, pos(bad, 11, "\"'x"), "expr: at column 1: no tag 'x/y'");
    expect_diag(diag, "", "expression tags depend on each other in a circle: d/e → d/f → d/e");
    expect_diag(diag, pos(bad, 14, "access"), "a computed tag is read-only");
    expect_diag(diag, pos(bad, 14, "nosuch"), "script: no script 'nosuch' in the scripts: section");
    expect_diag(diag, pos(bad, 15, "period"), "period: is the evaluation period of an expr: tag");
    expect_diag(diag, pos(bad, 16, "hi:"), "tag 's' is a string: it can only have a bad_quality alarm");
    expect_diag(diag, "", "device 'v': 'url' is required");
    expect_diag(diag, "", "a device without url is virtual");
    expect_diag(diag, pos(bad, 4, "{name: s2"), "script 's2' has alarms: give it a device:");
    free(diag);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_model),
        cmocka_unit_test(test_errors_collected),
        cmocka_unit_test(test_error_classes),
        cmocka_unit_test(test_env_expand),
        cmocka_unit_test(test_secret_files),
        cmocka_unit_test(test_for_expansion),
        cmocka_unit_test(test_tmpl),
        cmocka_unit_test(test_tmpl_depth),
        cmocka_unit_test(test_yaml_bombs),
        cmocka_unit_test(test_for_product_limit),
        cmocka_unit_test(test_many_devices),
        cmocka_unit_test(test_max_expand),
        cmocka_unit_test(test_unknown_key_suggestions),
        cmocka_unit_test(test_group_ranges),
        cmocka_unit_test(test_durations_sizes),
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_driver_table),
        cmocka_unit_test(test_docs_list_every_key),
        cmocka_unit_test(test_secret_redaction),
        cmocka_unit_test(test_address_texts),
        cmocka_unit_test(test_command_senders),
        cmocka_unit_test(test_gateway_command_senders),
        cmocka_unit_test(test_edge_config),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
