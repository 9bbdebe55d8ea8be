/* test_runtime.c — the running gateway without sockets: a sim device polled by
 * its connection thread, batches through the pipeline to a recording sink,
 * commands through the router to the device and back, device state events,
 * and a clean shutdown that drains everything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/model.h"
#include "core/plugin.h"
#include "core/router.h"
#include "core/runtime.h"

/* ---- a sink that records what it is given ---- */
static pthread_mutex_t rec_mu = PTHREAD_MUTEX_INITIALIZER;
static int rec_batches, rec_states, rec_online, rec_offline, rec_closed;
static double rec_last_sp = -1;
static uint64_t rec_last_seq;
static bool rec_seq_monotonic = true;

static int rec_open(struct fb_sink_inst *s, struct fb_err *err)
{
    (void)s;
    (void)err;
    return 0;
}

static int rec_send(struct fb_sink_inst *s, const struct fb_batch *b, uint64_t id)
{
    pthread_mutex_lock(&rec_mu);
    /* telemetry leaves the (memory) queue in sequence order; device states go past it */
    if (b->kind == FB_BATCH_DATA) {
        if (b->seq <= rec_last_seq) rec_seq_monotonic = false;
        rec_last_seq = b->seq;
    }
    if (b->kind == FB_BATCH_DEVSTATE) {
        rec_states++;
        if (b->dev_state == FB_DEV_ONLINE) rec_online++;
        if (b->dev_state == FB_DEV_OFFLINE) rec_offline++;
    } else {
        rec_batches++;
        for (uint32_t i = 0; i < b->n; i++) {
            const struct fb_tag *t = &s->gw->tags[b->s[i].tag];
            if (!strcmp(t->name, "sp")) fb_value_to_double(&b->s[i].v, &rec_last_sp);
        }
    }
    pthread_mutex_unlock(&rec_mu);
    fb_sink_done(s, id, FB_SENT);
    return 0;
}

static void rec_close(struct fb_sink_inst *s)
{
    (void)s;
    rec_closed++;
}

static const struct fb_sink rec_sink = {.name = "rec", .open = rec_open, .send = rec_send, .close = rec_close};

static const char *cfg_text = "gateway: {id: t1, site: s}\n"
                              "commands: {max_age: 10s}\n"
                              "devices:\n"
                              "  - name: d1\n"
                              "    url: \"sim://x?seed=1\"\n"
                              "    poll: 20ms\n"
                              "    tags:\n"
                              "      - {name: temp, addr: \"sine:amp=10,period=10s\"}\n"
                              "      - {name: sp, addr: \"memory:initial=5\", access: rw, range: [0, 100]}\n"
                              "      - {name: ro, addr: \"const:1\"}\n"
                              "  - name: d2\n"
                              "    url: \"sim://y?seed=1\"\n"
                              "    poll: 20ms\n"
                              "    tags:\n"
                              "      - {name: hot, addr: \"memory:initial=500\", access: rw, range: [0, 100]}\n";

static char *resp_of(struct fb_gateway *gw, const char *payload, int qos)
{
    struct fb_cmd c;
    memset(&c, 0, sizeof c);
    c.device = 0;
    c.qos = qos;
    c.payload = (char *)payload;
    c.len = strlen(payload);
    snprintf(c.source, sizeof c.source, "test");
    char *resp = NULL;
    size_t len = 0;
    fb_cmd_process(gw, &c, &resp, &len);
    return resp;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_run_poll_command_stop(void **st)
{
    (void)st;
    char path[] = "/tmp/fb_rt_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, cfg_text, strlen(cfg_text)), (ssize_t)strlen(cfg_text));
    close(fd);
    struct fb_gateway *gw = NULL;
    struct fb_config_opts o = {.strict = false, .diag = stderr};
    assert_int_equal(fb_config_load(path, &o, &gw), 0);
    unlink(path);
    fb_log_init(FB_LOG_ERROR, FB_LOG_TEXT);

    /* swap in the recording sink */
    struct fb_sink_inst *saved = gw->sinks;
    uint32_t nsaved = gw->nsinks;
    struct fb_sink_inst sink;
    memset(&sink, 0, sizeof sink);
    sink.sink = &rec_sink;
    sink.name = (char *)"rec";
    gw->sinks = &sink;
    gw->nsinks = 1;

    struct fb_err err = {0};
    assert_int_equal(fb_runtime_start(gw, &err), 0);
    sleep_ms(200);
    pthread_mutex_lock(&rec_mu);
    int batches = rec_batches;
    pthread_mutex_unlock(&rec_mu);
    assert_true(batches >= 5);       /* 20 ms polling for 200 ms */
    assert_int_equal(rec_online, 2); /* both devices */
    /* a sink that takes every batch at once: nothing waits for its thread
     * (between two polls at the latest), so a window that opens wakes nobody */
    bool idle = false;
    for (int i = 0; i < 100 && !idle; i++) {
        idle = !fb_sink_waiting(&sink);
        if (!idle) sleep_ms(10);
    }
    assert_true(idle);

    /* NE107: d2's tag is outside its range → Out of specification, until it is back */
    struct fb_buf sj;
    fb_buf_init(&sj);
    fb_status_json(gw, &sj, true);
    assert_non_null(strstr(fb_buf_cstr(&sj), "\"d2\":{\"state\":\"online\",\"ne107\":\"Out of specification\""));
    assert_non_null(strstr(fb_buf_cstr(&sj), "\"d1\":{\"state\":\"online\",\"ne107\":\"OK\""));
    assert_int_equal(atomic_load(&gw->devs[1].m.tags_bad), 1); /* BadOutOfRange is Bad too */
    assert_int_equal(atomic_load(&gw->devs[0].m.tags_bad), 0);
    struct fb_cmd c2;
    memset(&c2, 0, sizeof c2);
    c2.device = 1;
    c2.qos = 1;
    c2.payload = (char *)"{\"id\":\"h\",\"write\":{\"hot\":50}}";
    c2.len = strlen(c2.payload);
    char *r2 = NULL;
    size_t l2 = 0;
    fb_cmd_process(gw, &c2, &r2, &l2);
    assert_non_null(strstr(r2, "\"ok\":true"));
    free(r2);
    sleep_ms(100);
    fb_buf_clear(&sj);
    fb_status_json(gw, &sj, true);
    assert_non_null(strstr(fb_buf_cstr(&sj), "\"d2\":{\"state\":\"online\",\"ne107\":\"OK\""));
    assert_int_equal(atomic_load(&gw->devs[1].m.tags_bad), 0);
    fb_buf_free(&sj);

    /* an accepted write, read back through the pipeline */
    char *r = resp_of(gw, "{\"id\":\"c1\",\"write\":{\"sp\":42}}", 1);
    assert_string_equal(r, "{\"id\":\"c1\",\"ok\":true,\"results\":{\"sp\":{\"ok\":true}}}");
    free(r);
    sleep_ms(100);
    pthread_mutex_lock(&rec_mu);
    assert_true(rec_last_sp == 42.0);
    pthread_mutex_unlock(&rec_mu);

    /* refusals, each with its reason */
    r = resp_of(gw, "{\"id\":\"c2\",\"write\":{\"sp\":420}}", 1);
    assert_non_null(strstr(r, "\"error\":\"above maximum 100\""));
    free(r);
    r = resp_of(gw, "{\"id\":\"c3\",\"write\":{\"ro\":3}}", 1);
    assert_non_null(strstr(r, "\"error\":\"tag is read-only\""));
    free(r);
    r = resp_of(gw, "{\"id\":\"c4\",\"write\":{\"nope\":3}}", 1);
    assert_non_null(strstr(r, "\"error\":\"no such tag\""));
    free(r);
    r = resp_of(gw, "{\"id\":\"c5\",\"write\":{\"sp\":3}}", 0);
    assert_string_equal(r, "{\"id\":\"c5\",\"ok\":false,\"error\":\"commands must be sent with QoS 1 or 2\"}");
    free(r);
    r = resp_of(gw, "{\"id\":\"c6\",\"ts\":\"2020-01-01T00:00:00Z\",\"write\":{\"sp\":3}}", 1);
    assert_non_null(strstr(r, "request too old"));
    free(r);
    r = resp_of(gw, "{\"id\":\"c7\",\"write\":{\"sp\":\"high\"}}", 1);
    assert_non_null(strstr(r, "expected a number"));
    free(r);
    r = resp_of(gw, "not json", 1);
    assert_non_null(strstr(r, "invalid JSON"));
    free(r);
    r = resp_of(gw, "{\"id\":\"c8\",\"wrte\":{\"sp\":3}}", 1);
    assert_non_null(strstr(r, "unknown key 'wrte'"));
    free(r);
    r = resp_of(gw, "[1,2]", 1);
    assert_non_null(strstr(r, "expected a JSON object"));
    free(r);
    /* the refused writes changed nothing */
    sleep_ms(60);
    pthread_mutex_lock(&rec_mu);
    assert_true(rec_last_sp == 42.0);
    pthread_mutex_unlock(&rec_mu);

    fb_runtime_request_stop(gw);
    fb_runtime_wait(gw);
    assert_int_equal(rec_closed, 1);
    assert_int_equal(rec_offline, 2); /* the devices reported offline on the way out */
    assert_true(rec_seq_monotonic);
    assert_true(atomic_load(&sink.m.sent) >= (uint64_t)batches);

    gw->sinks = saved;
    gw->nsinks = nsaved;
    fb_gateway_free(gw);
}

/* ---- store-and-forward: a sink that is "down", then fails, then delivers ---- */
static atomic_bool fl_ready;
static atomic_int fl_fail; /* report this many sends as FB_RETRY */
static pthread_mutex_t fl_mu = PTHREAD_MUTEX_INITIALIZER;
static double fl_vals[20000];
static int fl_n;

static int fl_open(struct fb_sink_inst *s, struct fb_err *err)
{
    (void)s;
    (void)err;
    return 0;
}
static bool fl_is_ready(struct fb_sink_inst *s, bool pace)
{
    (void)s;
    (void)pace;
    return atomic_load(&fl_ready);
}
static int fl_send(struct fb_sink_inst *s, const struct fb_batch *b, uint64_t id)
{
    if (b->kind == FB_BATCH_DATA) {
        if (atomic_load(&fl_fail) > 0) {
            atomic_fetch_sub(&fl_fail, 1);
            fb_sink_done(s, id, FB_RETRY);
            return 0;
        }
        pthread_mutex_lock(&fl_mu);
        for (uint32_t i = 0; i < b->n && fl_n < 20000; i++) fb_value_to_double(&b->s[i].v, &fl_vals[fl_n++]);
        pthread_mutex_unlock(&fl_mu);
    }
    fb_sink_done(s, id, FB_SENT);
    return 0;
}
static void fl_close(struct fb_sink_inst *s) { (void)s; }
static const struct fb_sink fl_sink = {
    .name = "flaky", .open = fl_open, .send = fl_send, .ready = fl_is_ready, .close = fl_close};

static void test_store_forward(void **st)
{
    (void)st;
    char dir[] = "/tmp/fb_sf_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "gateway: {id: t2, site: s}\n"
             "buffer: {path: %s, max_size: 1MiB}\n"
             "devices:\n"
             "  - name: d1\n"
             "    url: \"sim://x?seed=1\"\n"
             "    poll: 10ms\n"
             "    tags:\n"
             "      - {name: c, addr: \"counter:step=1\"}\n",
             dir);
    char path[] = "/tmp/fb_sfc_XXXXXX";
    int fd = mkstemp(path);
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    struct fb_gateway *gw = NULL;
    struct fb_config_opts o = {.strict = false, .diag = stderr};
    assert_int_equal(fb_config_load(path, &o, &gw), 0);
    unlink(path);
    fb_log_init(FB_LOG_ERROR, FB_LOG_TEXT);

    struct fb_sink_inst *saved = gw->sinks;
    uint32_t nsaved = gw->nsinks;
    struct fb_sink_inst sink;
    memset(&sink, 0, sizeof sink);
    sink.sink = &fl_sink;
    sink.name = (char *)"flaky";
    sink.buffer = gw->buffer; /* borrowed: restored before free */
    gw->sinks = &sink;
    gw->nsinks = 1;

    atomic_store(&fl_ready, false);
    atomic_store(&fl_fail, 5);
    struct fb_err err = {0};
    assert_false(fb_sink_waiting(&sink)); /* not running */
    assert_int_equal(fb_runtime_start(gw, &err), 0);
    sleep_ms(300); /* "broker down": everything goes to the store */
    pthread_mutex_lock(&fl_mu);
    assert_int_equal(fl_n, 0);
    pthread_mutex_unlock(&fl_mu);
    assert_true(fb_sink_waiting(&sink)); /* the store holds them: a window that opens wakes the thread */
    atomic_store(&fl_ready, true); /* back: the first 5 deliveries fail, then all flow */
    sleep_ms(400);
    fb_runtime_request_stop(gw);
    fb_runtime_wait(gw);

    /* every counter value exactly once... or at least once, in order, no gaps */
    pthread_mutex_lock(&fl_mu);
    assert_true(fl_n >= 40);
    int dups = 0;
    for (int i = 1; i < fl_n; i++) {
        if (fl_vals[i] == fl_vals[i - 1]) {
            dups++;
            continue;
        }
        assert_true(fl_vals[i] > fl_vals[i - 1]);
        if (fl_vals[i] != fl_vals[i - 1] + 1) fail_msg("gap between %g and %g at %d", fl_vals[i - 1], fl_vals[i], i);
    }
    pthread_mutex_unlock(&fl_mu);
    assert_true(atomic_load(&sink.m.retries) >= 5);

    gw->sinks = saved;
    gw->nsinks = nsaved;
    fb_gateway_free(gw);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_poll_command_stop),
        cmocka_unit_test(test_store_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
