/* test_alarms.c — the alarm table (src/edge/alarms.c) of a gateway loaded
 * from YAML, with the runtime reduced to what fb_publish needs and one sink
 * queue that collects what is published: events per transition, the flood
 * bound and its summary event, summary refreshes for silenced transitions,
 * commands and their JSON answers, NE107 counters, external alarms, and the
 * state across a restart of the table (the journal). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/runtime_state.h"
#include "core/thread.h"
#include "edge/alarms.h"

#define S 1000000000LL

static const char *yaml = "gateway: {id: g}\n"
                          "alarms: {flood: {events: 3, window: 10s}, max_shelve: 1h}\n"
                          "devices:\n"
                          "  - name: d\n"
                          "    url: \"sim://d\"\n"
                          "    tags:\n"
                          "      - {name: t, addr: \"const:1\", alarms: {hi: {limit: 10, ne107: failure}, lo: 0}}\n"
                          "      - {for: {i: \"0..9\"}, name: \"x{i}\", addr: \"const:1\", alarms: {hi: 5}}\n"
                          "  - name: e\n"
                          "    url: \"sim://e\"\n"
                          "    tags:\n"
                          "      - {name: u, addr: \"const:1\", alarms: {bad_quality: true}}\n";

static struct fb_gateway *gw;
/* Times in the tests are seconds after the table started, on the clocks the
 * table itself reads for commands (which happen at about second 0). */
static int64_t base_mono, base_wall;
#define M(t) (base_mono + (int64_t)((t)*S))
#define W(t) (base_wall + (int64_t)((t)*S))
static struct fb_sink_inst sink, *model_sinks;
static struct fb_sink_rt sq;
static char dir[128];

static struct fb_gateway *load(void)
{
    char path[] = "/tmp/fb_alarms_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    struct fb_gateway *g = NULL;
    FILE *devnull = fopen("/dev/null", "w");
    struct fb_config_opts o = {.strict = false, .diag = devnull};
    assert_int_equal(fb_config_load(path, &o, &g), 0);
    fclose(devnull);
    unlink(path);
    return g;
}

/* The runtime as far as fb_publish and the alarm table need it. */
static void start(bool with_dir)
{
    gw->rt = calloc(1, sizeof *gw->rt);
    pthread_mutex_init(&gw->rt->fan_mu, NULL);
    memset(&sink, 0, sizeof sink);
    memset(&sq, 0, sizeof sq);
    pthread_mutex_init(&sq.mu, NULL);
    fb_cond_init_mono(&sq.cv);
    sink.rt = &sq;
    sink.name = (char *)"collect";
    model_sinks = gw->sinks; /* the model's (empty) array, given back in stop() */
    gw->sinks = &sink;
    gw->nsinks = 1;
    struct fb_err err = {0};
    base_mono = fb_mono_ns();
    base_wall = fb_now_ns();
    assert_int_equal(fb_alarms_start(gw, with_dir ? dir : NULL, &err), 0);
    assert_non_null(gw->rt->alarms);
}

static void stop(void)
{
    fb_alarms_free(gw->rt->alarms);
    while (sq.head) {
        struct fb_qnode *n = sq.head;
        sq.head = n->next;
        fb_batch_unref(n->b);
        free(n);
    }
    while (sq.free) {
        struct fb_qnode *n = sq.free;
        sq.free = n->next;
        free(n);
    }
    sq.tail = NULL;
    pthread_mutex_destroy(&sq.mu);
    pthread_cond_destroy(&sq.cv);
    pthread_mutex_destroy(&gw->rt->fan_mu);
    free(gw->rt);
    gw->rt = NULL;
    gw->sinks = model_sinks; /* ours is not the model's: fb_gateway_free must not see it */
    gw->nsinks = 0;
}

/* The alarm batches published since the last call (caller frees with drop()). */
static int take(struct fb_batch **out, int max)
{
    int n = 0;
    while (sq.head && n < max) {
        struct fb_qnode *q = sq.head;
        sq.head = q->next;
        if (!sq.head) sq.tail = NULL;
        out[n++] = q->b;
        free(q);
    }
    return n;
}

static void drop(struct fb_batch **b, int n)
{
    for (int i = 0; i < n; i++) fb_batch_unref(b[i]);
}

static uint32_t id_of(const char *dev, const char *name)
{
    const struct fb_device *d = fb_gw_device(gw, dev);
    return fb_alarm_find(gw, d->idx, name, strlen(name));
}

/* A value of tag `tag` of device 0 at time t (seconds): one group begin … commit. */
static void value(const char *alarm, double v, uint32_t q, int64_t t)
{
    struct fb_alarms *a = gw->rt->alarms;
    fb_alarms_begin(a, M(t), W(t));
    fb_alarms_value(a, id_of("d", alarm), v, q, W(t), NAN, FB_Q_BAD);
    fb_alarms_timers(a);
    fb_alarms_commit(a);
}

static char *command(const char *json)
{
    json_error_t je;
    json_t *root = json_loads(json, 0, &je);
    assert_non_null(root);
    struct fb_buf res;
    fb_buf_init(&res);
    fb_buf_putc(&res, '{');
    bool first = true, ok = true;
    fb_alarms_command(gw, 0, root, "test:cmd", &res, &first, &ok);
    fb_buf_putc(&res, '}');
    json_decref(root);
    char *out = strdup(fb_buf_cstr(&res));
    fb_buf_free(&res);
    return out;
}

static int setup(void **state)
{
    (void)state;
    fb_log_init(-1, FB_LOG_TEXT);
    snprintf(dir, sizeof dir, "/tmp/fb_alarms_dir_XXXXXX");
    assert_non_null(mkdtemp(dir));
    gw = load();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (gw->rt) stop(); /* a failed test left it running */
    fb_gateway_free(gw);
    char p[200];
    snprintf(p, sizeof p, "%s/alarms", dir);
    unlink(p);
    rmdir(dir);
    return 0;
}

static void test_events_commands_ne107(void **state)
{
    (void)state;
    start(false);
    struct fb_batch *b[64];
    const struct fb_dev_metrics *m = &gw->devs[0].m;
    value("t/hi", 12, FB_Q_GOOD, 1);
    int n = take(b, 64);
    assert_int_equal(n, 1);
    assert_int_equal(b[0]->kind, FB_BATCH_ALARM);
    assert_int_equal(b[0]->ev.event, FB_AE_RAISED);
    assert_int_equal(b[0]->ev.alarm, id_of("d", "t/hi"));
    assert_int_equal(b[0]->ev.flags, FB_AS_ACTIVE | FB_AS_UNACKED);
    assert_true(b[0]->ev.value == 12 && b[0]->ts == W(1) && b[0]->seq > 0);
    drop(b, n);
    assert_int_equal(atomic_load(&m->alarms_active), 1);
    assert_int_equal(atomic_load(&m->alarms_unacked), 1);
    assert_int_equal(atomic_load(&m->alarms_ne107[FB_NE107_FAILURE]), 1);

    /* the summary lists it */
    struct fb_buf j;
    fb_buf_init(&j);
    fb_alarm_summary_json(&j, gw, 0);
    assert_non_null(strstr(j.p, "\"active\":1,\"unacked\":1,\"shelved\":0"));
    assert_non_null(strstr(j.p, "\"alarm\":\"t/hi\""));
    fb_buf_free(&j);

    /* commands: answers per alarm, events with the source and comment */
    char *r = command("{\"ack\":[\"t/hi\",\"t/lo\",\"nope/hi\"],\"comment\":\"line\\nbreak\"}");
    assert_string_equal(r, "{\"t/hi\":{\"ok\":true},\"t/lo\":{\"ok\":false,\"error\":\"not unacknowledged\"},"
                           "\"nope/hi\":{\"ok\":false,\"error\":\"no such alarm\"}}");
    free(r);
    n = take(b, 64);
    assert_int_equal(n, 1);
    assert_int_equal(b[0]->ev.event, FB_AE_ACKED);
    assert_string_equal(b[0]->reason, "test:cmd\nline break"); /* the comment made one line */
    drop(b, n);
    assert_int_equal(atomic_load(&m->alarms_unacked), 0);
    assert_int_equal(atomic_load(&m->alarms_active), 1);

    r = command("{\"shelve\":{\"t/hi\":\"2h\",\"t/lo\":\"30m\"}}");
    assert_non_null(strstr(r, "\"t/hi\":{\"ok\":false,\"error\":\"longer than alarms.max_shelve (3600 s)\"}"));
    assert_non_null(strstr(r, "\"t/lo\":{\"ok\":true}"));
    free(r);
    r = command("{\"ack\":{\"x\":1},\"unshelve\":\"all\"}");
    assert_non_null(strstr(r, "\"ack\":{\"ok\":false,\"error\":\"expected \\\"all\\\""));
    assert_non_null(strstr(r, "\"t/lo\":{\"ok\":true}")); /* unshelved by "all" */
    free(r);
    n = take(b, 64);
    assert_int_equal(n, 2); /* shelved, unshelved */
    assert_int_equal(b[0]->ev.event, FB_AE_SHELVED);
    assert_true(b[0]->ev.until > 0);
    assert_int_equal(b[1]->ev.event, FB_AE_UNSHELVED);
    drop(b, n);

    /* cleared: normal; NE107 back */
    value("t/hi", 3, FB_Q_GOOD, 2);
    n = take(b, 64);
    assert_int_equal(n, 1);
    assert_int_equal(b[0]->ev.event, FB_AE_CLEARED);
    assert_int_equal(b[0]->ev.flags, 0);
    drop(b, n);
    assert_int_equal(atomic_load(&m->alarms_active), 0);
    assert_int_equal(atomic_load(&m->alarms_ne107[FB_NE107_FAILURE]), 0);

    /* external alarms only through fb_alarm_set */
    assert_int_equal(fb_alarm_set(gw, id_of("d", "t/hi"), true, 1, "x"), FB_EINVAL);
    assert_int_equal(fb_alarm_set(gw, 9999, true, 1, "x"), FB_ENOENT);
    stop();
}

static void test_flood_and_refresh(void **state)
{
    (void)state;
    start(false);
    struct fb_alarms *a = gw->rt->alarms;
    struct fb_batch *b[64];
    /* ten alarms raised at once: three events pass, seven are held */
    fb_alarms_begin(a, M(100), W(100));
    for (int i = 0; i < 10; i++) {
        char name[16];
        snprintf(name, sizeof name, "x%d/hi", i);
        fb_alarms_value(a, id_of("d", name), 9, FB_Q_GOOD, W(100), NAN, FB_Q_BAD);
    }
    int64_t due = fb_alarms_commit(a);
    int n = take(b, 64);
    assert_int_equal(n, 3);
    drop(b, n);
    assert_true(due == M(110));                                      /* the end of the window */
    assert_int_equal(atomic_load(&gw->devs[0].m.alarms_active), 10); /* the state is whole */
    /* another device has its own window */
    fb_alarms_begin(a, M(101), W(101));
    fb_alarms_value(a, id_of("e", "u/bad_quality"), NAN, FB_Q_BAD_COMM, W(101), NAN, FB_Q_BAD);
    fb_alarms_commit(a);
    n = take(b, 64);
    assert_int_equal(n, 1);
    assert_int_equal(b[0]->device, 1);
    drop(b, n);
    /* operator actions pass during a flood */
    char *r = command("{\"ack\":\"all\"}");
    free(r);
    n = take(b, 64);
    assert_int_equal(n, 10);
    drop(b, n);
    /* the window ends: one flood event with the count */
    fb_alarms_begin(a, M(109), W(109));
    fb_alarms_timers(a);
    fb_alarms_commit(a);
    assert_int_equal(take(b, 64), 0);
    fb_alarms_begin(a, M(110), W(110));
    fb_alarms_timers(a);
    fb_alarms_commit(a);
    n = take(b, 64);
    assert_int_equal(n, 1);
    assert_int_equal(b[0]->ev.event, FB_AE_FLOOD);
    assert_int_equal(b[0]->ev.alarm, FB_ALARM_NONE);
    assert_int_equal(b[0]->ev.count, 7);
    assert_true(b[0]->ev.until == 10 * S);
    drop(b, n);
    /* a shelved alarm's clear is not an event: a summary refresh (event none), at most one a second */
    r = command("{\"shelve\":{\"x0/hi\":600,\"x1/hi\":600}}");
    free(r);
    n = take(b, 64);
    drop(b, n);
    fb_alarms_begin(a, M(200), W(200));
    fb_alarms_value(a, id_of("d", "x0/hi"), 1, FB_Q_GOOD, W(200), NAN, FB_Q_BAD);
    fb_alarms_value(a, id_of("d", "x1/hi"), 1, FB_Q_GOOD, W(200), NAN, FB_Q_BAD);
    fb_alarms_commit(a);
    n = take(b, 64);
    assert_int_equal(n, 1);
    assert_int_equal(b[0]->ev.event, FB_AE_NONE);
    drop(b, n);
    fb_alarms_begin(a, M(200.5), W(200.5));
    fb_alarms_value(a, id_of("d", "x0/hi"), 9, FB_Q_GOOD, W(200.5), NAN, FB_Q_BAD);
    due = fb_alarms_commit(a);
    assert_int_equal(take(b, 64), 0); /* within the second: later */
    assert_true(due == M(201));
    fb_alarms_begin(a, M(201), W(201));
    fb_alarms_timers(a);
    fb_alarms_commit(a);
    n = take(b, 64);
    assert_int_equal(n, 1);
    assert_int_equal(b[0]->ev.event, FB_AE_NONE);
    drop(b, n);
    stop();
}

static void test_restart_keeps_state(void **state)
{
    (void)state;
    start(true);
    struct fb_batch *b[64];
    value("t/hi", 12, FB_Q_GOOD, 1);
    value("t/lo", -5, FB_Q_GOOD, 1);
    char *r = command("{\"ack\":[\"t/hi\"]}");
    free(r);
    r = command("{\"shelve\":{\"x3/hi\":\"10m\"}}");
    free(r);
    int n = take(b, 64);
    drop(b, n);
    stop();

    /* a new table on the same directory: what was announced is what comes back */
    start(true);
    uint8_t f;
    assert_true(fb_alarm_flags(gw, id_of("d", "t/hi"), &f));
    assert_int_equal(f, FB_AS_ACTIVE);
    assert_true(fb_alarm_flags(gw, id_of("d", "t/lo"), &f));
    assert_int_equal(f, FB_AS_ACTIVE | FB_AS_UNACKED);
    assert_true(fb_alarm_flags(gw, id_of("d", "x3/hi"), &f));
    assert_int_equal(f, FB_AS_SHELVED);
    assert_true(fb_alarm_flags(gw, id_of("d", "x4/hi"), &f));
    assert_int_equal(f, 0);
    assert_int_equal(atomic_load(&gw->devs[0].m.alarms_active), 2);
    assert_int_equal(atomic_load(&gw->devs[0].m.alarms_unacked), 1);
    assert_int_equal(take(b, 64), 0); /* restoring publishes nothing */
    /* the condition still holds: no new event; it went away: cleared, still unacknowledged */
    value("t/hi", 15, FB_Q_GOOD, 2);
    assert_int_equal(take(b, 64), 0);
    value("t/lo", 3, FB_Q_GOOD, 2);
    n = take(b, 64);
    assert_int_equal(n, 1);
    assert_int_equal(b[0]->ev.event, FB_AE_CLEARED);
    assert_int_equal(b[0]->ev.flags, FB_AS_UNACKED);
    drop(b, n);
    stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_events_commands_ne107, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flood_and_refresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_state, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
