/* test_metrics.c — Prometheus rendering of a hand-built gateway (values,
 * HELP/TYPE structure, label escaping), /proc usage, the status JSON with
 * its NE107 derivation, the store-and-forward buffer families and status
 * (records, bytes, age, drops, drain rate, degraded health) over a real
 * store in a temporary directory, listen-address parsing, and the HTTP endpoint over
 * a real loopback socket with a plain socket client. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/fb.h"
#include "core/metrics.h"
#include "core/model.h"
#include "core/runtime.h"
#include "core/runtime_state.h"
#include "north/http/http.h"
#include "south/modbus/modbus.h"
#include "south/sim/sim.h"
#include "store/store.h"

struct model {
    struct fb_gateway gw;
    struct fb_device devs[2];
    struct fb_sink_inst sinks[1];
    struct fb_tag tags[3];
    struct fb_rt rt; /* the runtime state status and /metrics read */
    struct fb_sink_rt sink_rt;
};

static void model_init(struct model *m)
{
    memset(m, 0, sizeof *m);
    m->gw.id = (char *)"edge-01";
    m->gw.devs = m->devs;
    m->gw.ndevs = 2;
    m->gw.tags = m->tags;
    m->gw.ntags = 3;
    m->gw.sinks = m->sinks;
    m->gw.nsinks = 1;
    m->gw.rt = &m->rt;
    pthread_mutex_init(&m->rt.status_mu, NULL); /* the status memory starts empty, as at start-up */
    m->rt.started_ns = fb_now_ns() - 5000000000LL;
    m->sinks[0].rt = &m->sink_rt;
    m->gw.status_interval_ns = 10000000000LL;
    m->devs[0].name = (char *)"press-01";
    m->devs[0].drv = &fb_driver_sim;
    m->devs[1].name = (char *)"we\"ird\\dev\nx";
    m->devs[1].drv = &fb_driver_modbus;
    atomic_store(&m->devs[0].state, FB_DEV_ONLINE);
    atomic_store(&m->devs[1].state, FB_DEV_OFFLINE);
    atomic_store(&m->devs[0].m.requests, 17);
    atomic_store(&m->devs[0].m.errors, 2);
    atomic_store(&m->devs[0].m.timeouts, 1);
    atomic_store(&m->devs[0].m.reconnects, 3);
    atomic_store(&m->devs[0].m.writes, 4);
    atomic_store(&m->devs[0].m.write_errors, 1);
    atomic_store(&m->devs[0].m.rtt_ns_sum, 1500000000ull);
    atomic_store(&m->devs[0].m.rtt_count, 15);
    atomic_store(&m->devs[0].m.rtt_ns_last, 250000ull);
    atomic_store(&m->devs[0].m.last_success_ns, 1700000000123000000LL);
    m->sinks[0].name = (char *)"mqtt";
    atomic_store(&m->sinks[0].m.queued, 10);
    atomic_store(&m->sinks[0].m.sent, 8);
    atomic_store(&m->sinks[0].m.dropped, 1);
    atomic_store(&m->sinks[0].m.retries, 5);
    atomic_store(&m->sinks[0].m.errors, 6);
    atomic_store(&m->sinks[0].m.connected, 1);
}

/* What the status code remembered (fb_status_json sizes it on first use);
 * the runtime frees it in a running gateway. */
static void model_free(struct model *m)
{
    free(m->rt.seen);
    free(m->rt.drain);
    pthread_mutex_destroy(&m->rt.status_mu);
}

/* The value of the sample line that starts with `series ` (exact series). */
static bool sample(const char *text, const char *series, double *v)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        if (!strncmp(p, series, n) && p[n] == ' ') {
            *v = strtod(p + n + 1, NULL);
            return true;
        }
        p = eol ? eol + 1 : NULL;
    }
    return false;
}

static double val(const char *text, const char *series)
{
    double v = -1;
    if (!sample(text, series, &v)) fprintf(stderr, "missing series: %s\n", series);
    assert_true(sample(text, series, &v));
    return v;
}

/* Structure of a Prometheus text: every line is a comment or a sample; every
 * sample's family has HELP then TYPE before it; no family declared twice; no
 * raw newline inside a label (each line parses as name{...} value).
 * Returns the number of families. */
static int check_structure(const char *t)
{
    char fams[64][96];
    int nf = 0;
    const char *p = t;
    while (*p) {
        const char *eol = strchr(p, '\n');
        assert_non_null(eol); /* the text ends with a newline */
        size_t len = (size_t)(eol - p);
        char line[512];
        assert_true(len < sizeof line);
        memcpy(line, p, len);
        line[len] = 0;
        if (!strncmp(line, "# HELP ", 7)) {
            char name[96];
            assert_int_equal(sscanf(line + 7, "%95s", name), 1);
            for (int i = 0; i < nf; i++) assert_string_not_equal(fams[i], name);
            assert_true(nf < 64);
            strcpy(fams[nf++], name);
        } else if (!strncmp(line, "# TYPE ", 7)) {
            char name[96], type[32];
            assert_int_equal(sscanf(line + 7, "%95s %31s", name, type), 2);
            assert_string_equal(name, fams[nf - 1]);
            assert_true(!strcmp(type, "counter") || !strcmp(type, "gauge") || !strcmp(type, "summary"));
        } else {
            assert_true(nf > 0);
            size_t fl = strlen(fams[nf - 1]);
            assert_memory_equal(line, fams[nf - 1], fl);
            const char *rest = line + fl;
            if (!strncmp(rest, "_sum", 4))
                rest += 4;
            else if (!strncmp(rest, "_count", 6))
                rest += 6;
            assert_true(*rest == '{' || *rest == ' ');
            const char *sp = strrchr(line, ' ');
            char *end;
            strtod(sp + 1, &end);
            if (*end) fprintf(stderr, "bad sample line: %s\n", line);
            assert_true(*end == 0);
        }
        p = eol + 1;
    }
    return nf;
}

#define DEV0 "{device=\"press-01\",driver=\"sim\"}"

static void test_render(void **st)
{
    (void)st;
    struct model m;
    model_init(&m);
    struct fb_buf b;
    fb_buf_init(&b);
    fb_metrics_render(&m.gw, &b);
    const char *t = fb_buf_cstr(&b);

    assert_true(val(t, "fieldbridge_device_requests_total" DEV0) == 17);
    assert_true(val(t, "fieldbridge_device_errors_total" DEV0) == 2);
    assert_true(val(t, "fieldbridge_device_timeouts_total" DEV0) == 1);
    assert_true(val(t, "fieldbridge_device_reconnects_total" DEV0) == 3);
    assert_true(val(t, "fieldbridge_device_writes_total" DEV0) == 4);
    assert_true(val(t, "fieldbridge_device_write_errors_total" DEV0) == 1);
    assert_true(val(t, "fieldbridge_device_rtt_seconds_sum" DEV0) == 1.5);
    assert_true(val(t, "fieldbridge_device_rtt_seconds_count" DEV0) == 15);
    assert_true(val(t, "fieldbridge_device_last_rtt_seconds" DEV0) == 0.00025);
    assert_true(val(t, "fieldbridge_device_last_success_timestamp_seconds" DEV0) == 1700000000.123);
    assert_true(val(t, "fieldbridge_device_connected" DEV0) == 1);
    assert_true(val(t, "fieldbridge_device_bad_tags" DEV0) == 0);
    /* escaped label values: \" \\ \n */
    assert_true(val(t, "fieldbridge_device_connected{device=\"we\\\"ird\\\\dev\\nx\",driver=\"modbus\"}") == 0);
    assert_true(
        val(t,
            "fieldbridge_device_last_success_timestamp_seconds{device=\"we\\\"ird\\\\dev\\nx\",driver=\"modbus\"}") ==
        0);

    assert_true(val(t, "fieldbridge_sink_queued_total{sink=\"mqtt\"}") == 10);
    assert_true(val(t, "fieldbridge_sink_sent_total{sink=\"mqtt\"}") == 8);
    assert_true(val(t, "fieldbridge_sink_dropped_total{sink=\"mqtt\"}") == 1);
    assert_true(val(t, "fieldbridge_sink_retries_total{sink=\"mqtt\"}") == 5);
    assert_true(val(t, "fieldbridge_sink_errors_total{sink=\"mqtt\"}") == 6);
    assert_true(val(t, "fieldbridge_sink_connected{sink=\"mqtt\"}") == 1);

    assert_true(val(t, "fieldbridge_tags") == 3);
    double up = val(t, "fieldbridge_uptime_seconds");
    assert_true(up >= 4.9 && up < 60);
    assert_true(val(t, "fieldbridge_process_cpu_seconds_total") >= 0);
    assert_true(val(t, "fieldbridge_process_resident_memory_bytes") > 100000);
    char bi[128];
    snprintf(bi, sizeof bi, "fieldbridge_build_info{version=\"%s\"}", FB_VERSION);
    assert_true(val(t, bi) == 1);

    assert_true(check_structure(t) >= 20);
    assert_null(strstr(t, "fieldbridge_buffer_")); /* no buffer: no buffer families */
    fb_buf_free(&b);
    model_free(&m);
}

static void test_proc_usage(void **st)
{
    (void)st;
    double cpu0, cpu1;
    uint64_t rss;
    fb_proc_usage(&cpu0, &rss);
    assert_true(cpu0 >= 0 && cpu0 < 3600);
    assert_true(rss > 100 * 1024 && rss < 8ull << 30);
    /* burn 0.3 s of CPU (measured by the kernel's own clock, so a loaded
     * machine does not matter): the counter moves by about that much */
    volatile double x = 0;
    struct timespec a, now;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    do {
        for (int i = 0; i < 100000; i++) x += i * 0.5;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    } while ((now.tv_sec - a.tv_sec) * 1e9 + (now.tv_nsec - a.tv_nsec) < 3e8);
    (void)x; /* clang: set but not used (it is only there to burn CPU) */
    fb_proc_usage(&cpu1, NULL);
    assert_true(cpu1 - cpu0 >= 0.25 && cpu1 - cpu0 < 1.0);
    fb_proc_usage(NULL, NULL); /* both optional */
}

static json_t *status(struct model *m, bool online)
{
    struct fb_buf b;
    fb_buf_init(&b);
    fb_status_json(&m->gw, &b, online);
    json_error_t je;
    json_t *j = json_loads(fb_buf_cstr(&b), 0, &je);
    if (!j) fprintf(stderr, "bad json: %s\n%s\n", je.text, fb_buf_cstr(&b));
    assert_non_null(j);
    fb_buf_free(&b);
    return j;
}

static const char *dev_str(json_t *j, const char *dev, const char *k)
{
    json_t *d = json_object_get(json_object_get(j, "devices"), dev);
    assert_non_null(d);
    return json_string_value(json_object_get(d, k));
}

static void test_status(void **st)
{
    (void)st;
    struct model m;
    model_init(&m);
    json_t *j = status(&m, true);
    assert_string_equal(json_string_value(json_object_get(j, "gateway")), "edge-01");
    assert_true(json_is_true(json_object_get(j, "online")));
    assert_string_equal(json_string_value(json_object_get(j, "version")), FB_VERSION);
    const char *ts = json_string_value(json_object_get(j, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24);
    assert_true(json_integer_value(json_object_get(j, "uptime_s")) >= 4);
    assert_true(json_is_boolean(json_object_get(j, "clock_synced")));
    assert_true(json_is_true(json_object_get(j, "clock_synced")) == fb_clock_synced());
    assert_true(json_is_number(json_object_get(j, "cpu_s")));
    assert_true(json_integer_value(json_object_get(j, "rss_bytes")) > 100000);
    assert_string_equal(dev_str(j, "press-01", "state"), "online");
    /* errors seen for the first time → Maintenance required */
    assert_string_equal(dev_str(j, "press-01", "ne107"), "Maintenance required");
    json_t *d = json_object_get(json_object_get(j, "devices"), "press-01");
    assert_int_equal(json_integer_value(json_object_get(d, "requests")), 17);
    assert_int_equal(json_integer_value(json_object_get(d, "errors")), 2);
    assert_true(json_real_value(json_object_get(d, "rtt_ms")) == 0.25);
    assert_string_equal(dev_str(j, "we\"ird\\dev\nx", "state"), "offline");
    assert_string_equal(dev_str(j, "we\"ird\\dev\nx", "ne107"), "Failure");
    json_t *s = json_object_get(json_object_get(j, "sinks"), "mqtt");
    assert_true(json_is_true(json_object_get(s, "connected")));
    assert_int_equal(json_integer_value(json_object_get(s, "sent")), 8);
    assert_int_equal(json_integer_value(json_object_get(s, "queued")), 10);
    assert_int_equal(json_integer_value(json_object_get(s, "dropped")), 1);
    assert_null(json_object_get(s, "buffer")); /* no buffer configured */
    assert_string_equal(json_string_value(json_object_get(j, "health")), "ok");
    json_decref(j);

    /* no new errors, but still within the interval: stays Maintenance required */
    j = status(&m, false);
    assert_true(json_is_false(json_object_get(j, "online")));
    assert_string_equal(dev_str(j, "press-01", "ne107"), "Maintenance required");
    json_decref(j);
    /* a short interval that has passed: OK again */
    m.gw.status_interval_ns = 1000000; /* 1 ms */
    usleep(5000);
    j = status(&m, true);
    assert_string_equal(dev_str(j, "press-01", "ne107"), "OK");
    json_decref(j);
    /* errors grow again → Maintenance required; connecting → Function check */
    m.gw.status_interval_ns = 10000000000LL;
    atomic_fetch_add(&m.devs[0].m.errors, 1);
    atomic_store(&m.devs[1].state, FB_DEV_CONNECTING);
    j = status(&m, true);
    assert_string_equal(dev_str(j, "press-01", "ne107"), "Maintenance required");
    assert_string_equal(dev_str(j, "we\"ird\\dev\nx", "ne107"), "Function check");
    json_decref(j);
    /* the same for every driver: a tag last published Bad (the device refuses
     * it although the connection is up) keeps Maintenance required after the
     * error counter stopped growing, until the tag is good again */
    m.gw.status_interval_ns = 1000000; /* errors "seen to grow" expire at once */
    usleep(5000);
    j = status(&m, true);
    assert_string_equal(dev_str(j, "press-01", "ne107"), "OK");
    json_decref(j);
    atomic_store(&m.devs[0].m.tags_bad, 1);
    usleep(5000);
    j = status(&m, true);
    assert_string_equal(dev_str(j, "press-01", "ne107"), "Maintenance required");
    json_decref(j);
    struct fb_buf b;
    fb_buf_init(&b);
    fb_metrics_render(&m.gw, &b);
    assert_true(val(fb_buf_cstr(&b), "fieldbridge_device_bad_tags" DEV0) == 1);
    fb_buf_free(&b);
    /* out of range wins over Bad; offline (Failure) wins over both */
    atomic_store(&m.devs[0].m.tags_out_of_spec, 1);
    j = status(&m, true);
    assert_string_equal(dev_str(j, "press-01", "ne107"), "Out of specification");
    json_decref(j);
    atomic_store(&m.devs[0].state, FB_DEV_OFFLINE);
    j = status(&m, true);
    assert_string_equal(dev_str(j, "press-01", "ne107"), "Failure");
    json_decref(j);
    atomic_store(&m.devs[0].state, FB_DEV_ONLINE);
    atomic_store(&m.devs[0].m.tags_out_of_spec, 0);
    atomic_store(&m.devs[0].m.tags_bad, 0);
    j = status(&m, true);
    assert_string_equal(dev_str(j, "press-01", "ne107"), "OK");
    json_decref(j);
    model_free(&m);
}

/* ------------------------------------------------------------ buffers */
static void rm_dir(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static json_t *sink_buffer(json_t *j)
{
    json_t *s = json_object_get(json_object_get(j, "sinks"), "mqtt");
    assert_non_null(s);
    return json_object_get(s, "buffer");
}

static void test_buffer(void **st)
{
    (void)st;
    struct model m;
    model_init(&m);
    char dir[] = "/tmp/fb-test-metrics-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct fb_store_cfg c = {.dir = dir, .max_bytes = 1 << 20, .name = "mqtt"};
    struct fb_err err = {0};
    struct fb_store *store = fb_store_open(&c, &err);
    assert_non_null(store);
    assert_int_equal(err.code, 0);
    char rec[100];
    memset(rec, 'x', sizeof rec);
    int64_t t0 = fb_now_ns() - 3000000000LL; /* three seconds old */
    for (int i = 0; i < 6; i++) assert_int_equal(fb_store_append(store, rec, sizeof rec, t0, NULL), 0);
    assert_int_equal(fb_store_flush(store), 0);
    /* two delivered */
    for (int i = 0; i < 2; i++) {
        uint64_t id;
        const void *p;
        uint32_t len;
        int64_t ts;
        assert_int_equal(fb_store_next(store, &id, &p, &len, &ts), 0);
        assert_int_equal(fb_store_ack(store, id), 0);
    }
    struct fb_store_stats ss;
    fb_store_stats(store, &ss);
    assert_int_equal(ss.records, 4);
    m.sinks[0].rt->store = store;

    struct fb_buf b;
    fb_buf_init(&b);
    fb_metrics_render(&m.gw, &b);
    const char *t = fb_buf_cstr(&b);
    assert_true(val(t, "fieldbridge_buffer_records{sink=\"mqtt\"}") == 4);
    assert_true(val(t, "fieldbridge_buffer_bytes{sink=\"mqtt\"}") == (double)ss.bytes);
    assert_true(ss.bytes >= 4 * (100 + 32));
    double age = val(t, "fieldbridge_buffer_oldest_age_seconds{sink=\"mqtt\"}");
    assert_true(age >= 2.9 && age < 60);
    assert_true(val(t, "fieldbridge_buffer_dropped_full_total{sink=\"mqtt\"}") == 0);
    assert_true(val(t, "fieldbridge_buffer_dropped_age_total{sink=\"mqtt\"}") == 0);
    assert_true(val(t, "fieldbridge_buffer_acked_total{sink=\"mqtt\"}") == 2);
    assert_true(val(t, "fieldbridge_buffer_corrupt_cut_bytes_total{sink=\"mqtt\"}") == 0);
    assert_true(val(t, "fieldbridge_buffer_degraded{sink=\"mqtt\"}") == 0);
    assert_true(check_structure(t) >= 28);
    assert_non_null(strstr(t, "# TYPE fieldbridge_buffer_acked_total counter\n"));
    assert_non_null(strstr(t, "# TYPE fieldbridge_buffer_records gauge\n"));

    /* status: first measurement of the drain rate is 0 */
    json_t *j = status(&m, true);
    assert_string_equal(json_string_value(json_object_get(j, "health")), "ok");
    json_t *bj = sink_buffer(j);
    assert_non_null(bj);
    assert_int_equal(json_integer_value(json_object_get(bj, "records")), 4);
    assert_int_equal(json_integer_value(json_object_get(bj, "bytes")), (json_int_t)ss.bytes);
    assert_int_equal(json_integer_value(json_object_get(bj, "dropped")), 0);
    assert_true(json_number_value(json_object_get(bj, "oldest_age_s")) >= 2.9);
    assert_true(json_number_value(json_object_get(bj, "drain_rate")) == 0);
    assert_true(json_is_false(json_object_get(bj, "degraded")));
    assert_null(json_object_get(bj, "error"));
    json_decref(j);

    /* three more acked over ~1.2 s: the rate is acked delta / time */
    for (int i = 0; i < 3; i++) {
        uint64_t id;
        const void *p;
        uint32_t len;
        int64_t ts;
        assert_int_equal(fb_store_next(store, &id, &p, &len, &ts), 0);
        assert_int_equal(fb_store_ack(store, id), 0);
    }
    j = status(&m, true);
    /* asked again within a second: still the previous rate, not 0/0 */
    assert_true(json_number_value(json_object_get(sink_buffer(j), "drain_rate")) == 0);
    json_decref(j);
    usleep(1200000);
    j = status(&m, true);
    double rate = json_number_value(json_object_get(sink_buffer(j), "drain_rate"));
    assert_true(rate > 3 / 1.6 && rate <= 3 / 1.2 + 0.01);
    assert_int_equal(json_integer_value(json_object_get(sink_buffer(j), "records")), 1);
    json_decref(j);
    j = status(&m, true); /* within a second again: the same rate is kept */
    assert_true(json_number_value(json_object_get(sink_buffer(j), "drain_rate")) == rate);
    json_decref(j);

    /* the disk fails: degraded in metrics, the status and the gateway's health */
    fb_store_inject_fault(store, FB_STORE_FAULT_WRITE | FB_STORE_FAULT_SYNC | FB_STORE_FAULT_OPEN, ENOSPC);
    assert_int_equal(fb_store_append(store, rec, sizeof rec, fb_now_ns(), NULL), 0);
    assert_int_equal(fb_store_flush(store), FB_EIO);
    fb_buf_clear(&b);
    fb_metrics_render(&m.gw, &b);
    t = fb_buf_cstr(&b);
    assert_true(val(t, "fieldbridge_buffer_degraded{sink=\"mqtt\"}") == 1);
    assert_true(val(t, "fieldbridge_buffer_records{sink=\"mqtt\"}") == 2);
    j = status(&m, true);
    assert_string_equal(json_string_value(json_object_get(j, "health")), "degraded");
    assert_true(json_is_true(json_object_get(sink_buffer(j), "degraded")));
    assert_string_equal(json_string_value(json_object_get(sink_buffer(j), "error")), strerror(ENOSPC));
    json_decref(j);
    /* the disk works again: the store retries (disk_retry_ns) — here it is
     * enough that clearing the fault and closing does not crash */
    fb_store_inject_fault(store, 0, 0);
    m.sinks[0].rt->store = NULL;
    fb_store_close(store);
    rm_dir(dir);

    /* records past max_age are dropped at delivery and counted */
    strcpy(dir, "/tmp/fb-test-metrics-XXXXXX");
    assert_non_null(mkdtemp(dir));
    c.max_age_ns = 1000000000LL;
    store = fb_store_open(&c, &err);
    assert_non_null(store);
    for (int i = 0; i < 5; i++)
        assert_int_equal(fb_store_append(store, rec, sizeof rec, fb_now_ns() - 10000000000LL, NULL), 0);
    assert_int_equal(fb_store_flush(store), 0);
    {
        uint64_t id;
        const void *p;
        uint32_t len;
        int64_t ts;
        assert_int_equal(fb_store_next(store, &id, &p, &len, &ts), FB_ENOENT);
    }
    m.sinks[0].rt->store = store;
    fb_buf_clear(&b);
    fb_metrics_render(&m.gw, &b);
    t = fb_buf_cstr(&b);
    assert_true(val(t, "fieldbridge_buffer_dropped_age_total{sink=\"mqtt\"}") == 5);
    assert_true(val(t, "fieldbridge_buffer_records{sink=\"mqtt\"}") == 0);
    assert_true(val(t, "fieldbridge_buffer_oldest_age_seconds{sink=\"mqtt\"}") == 0);
    j = status(&m, true);
    assert_string_equal(json_string_value(json_object_get(j, "health")), "ok");
    assert_int_equal(json_integer_value(json_object_get(sink_buffer(j), "dropped")), 5);
    /* a new store in the same slot starts a new drain measurement */
    assert_true(json_number_value(json_object_get(sink_buffer(j), "drain_rate")) == 0);
    json_decref(j);
    m.sinks[0].rt->store = NULL;
    fb_store_close(store);
    rm_dir(dir);
    fb_buf_free(&b);
    model_free(&m);
}

static void test_parse_listen(void **st)
{
    (void)st;
    char h[64];
    uint16_t port;
    struct fb_err err = {0};
    assert_int_equal(fb_http_parse_listen("127.0.0.1:9100", h, sizeof h, &port, &err), 0);
    assert_string_equal(h, "127.0.0.1");
    assert_int_equal(port, 9100);
    assert_int_equal(fb_http_parse_listen("[::1]:9200", h, sizeof h, &port, &err), 0);
    assert_string_equal(h, "::1");
    assert_int_equal(port, 9200);
    assert_int_equal(fb_http_parse_listen(":9300", h, sizeof h, &port, &err), 0);
    assert_string_equal(h, "0.0.0.0");
    assert_int_equal(fb_http_parse_listen("9400", h, sizeof h, &port, &err), 0);
    assert_string_equal(h, "127.0.0.1");
    assert_int_equal(port, 9400);
    assert_int_equal(fb_http_parse_listen("localhost:0", h, sizeof h, &port, &err), 0);
    assert_int_equal(port, 0);
    assert_int_equal(fb_http_parse_listen("::1:9100", h, sizeof h, &port, &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "[addr]:port"));
    assert_int_equal(fb_http_parse_listen("127.0.0.1:", h, sizeof h, &port, &err), FB_EINVAL);
    assert_int_equal(fb_http_parse_listen("127.0.0.1:70000", h, sizeof h, &port, &err), FB_EINVAL);
    assert_int_equal(fb_http_parse_listen("127.0.0.1:9x", h, sizeof h, &port, &err), FB_EINVAL);
    assert_int_equal(fb_http_parse_listen("[::1]9100", h, sizeof h, &port, &err), FB_EINVAL);
    assert_int_equal(fb_http_parse_listen("", h, sizeof h, &port, &err), FB_EINVAL);
    assert_int_equal(fb_http_parse_listen(NULL, h, sizeof h, &port, &err), FB_EINVAL);
}

/* One HTTP/1.0 exchange with a plain socket; returns the whole response. */
static char *http(uint16_t port, const char *req)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    size_t rl = strlen(req);
    assert_int_equal(write(fd, req, rl), (ssize_t)rl);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 1 == cap) buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    buf[n] = 0;
    close(fd);
    return buf;
}

static void test_http(void **st)
{
    (void)st;
    struct model m;
    model_init(&m);
    struct fb_err err = {0};
    struct fb_http *h = NULL, *h2 = NULL;
    assert_int_equal(fb_http_start(&m.gw, "127.0.0.1:0", NULL, NULL, &h, &err), 0);
    uint16_t port = fb_http_port(h);
    assert_true(port > 0);
    /* a second endpoint on the same address cannot listen */
    char same[32];
    snprintf(same, sizeof same, "127.0.0.1:%u", (unsigned)port);
    assert_int_not_equal(fb_http_start(&m.gw, same, NULL, NULL, &h2, &err), 0);
    assert_null(h2);

    char *r = http(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_non_null(strstr(r, "HTTP/1.0 200") ? r : strstr(r, "HTTP/1.1 200"));
    assert_non_null(strstr(r, "text/plain; version=0.0.4"));
    assert_non_null(strstr(r, "\r\n\r\n# HELP fieldbridge_device_requests_total "));
    assert_non_null(strstr(r, "fieldbridge_device_requests_total" DEV0 " 17\n"));
    free(r);

    r = http(port, "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(r, " 200 "));
    assert_non_null(strstr(r, "application/json"));
    assert_non_null(strstr(r, "\"gateway\":\"edge-01\""));
    free(r);

    r = http(port, "GET /nope HTTP/1.0\r\n\r\n");
    assert_non_null(strstr(r, " 404 "));
    free(r);
    r = http(port, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    assert_non_null(strstr(r, " 405 "));
    assert_non_null(strstr(r, "GET, HEAD"));
    free(r);
    fb_http_stop(h);
    assert_int_equal(fb_http_port(NULL), 0);
    fb_http_stop(NULL); /* nothing to stop */

    /* bad address: a clear error, nothing started */
    assert_int_not_equal(fb_http_start(&m.gw, "nonsense", NULL, NULL, &h2, &err), 0);
    assert_null(h2);
    assert_non_null(strstr(err.msg, "nonsense"));
    /* port in use */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 1), 0);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    char lst[32];
    snprintf(lst, sizeof lst, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    assert_int_equal(fb_http_start(&m.gw, lst, NULL, NULL, &h2, &err), FB_EIO);
    assert_null(h2);
    close(fd);
    model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render), cmocka_unit_test(test_proc_usage),   cmocka_unit_test(test_status),
        cmocka_unit_test(test_buffer), cmocka_unit_test(test_parse_listen), cmocka_unit_test(test_http),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
