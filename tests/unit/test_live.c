/* test_live.c — thread liveness (core/live.c): the stall rule on made-up
 * records, the registry with real threads (one blocked on a lock the test
 * holds, as a deadlock would), and the runtime's own threads: a sink whose
 * send() never returns is found stalled after stall_timeout, while a sink
 * thread idling, connection threads held by back-pressure and a device that
 * polls are not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fb.h"
#include "core/live.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/runtime.h"
#include "core/sdwatch.h"

#define MS 1000000LL

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_overdue_rule(void **st)
{
    (void)st;
    struct fb_live l;
    memset(&l, 0, sizeof l);
    l.limit_ns = 100 * MS;
    /* busy since t=1000 ms */
    atomic_store(&l.at, 1000 * MS);
    atomic_store(&l.until, 0);
    assert_int_equal(fb_live_overdue(&l, 1050 * MS), 0);
    assert_int_equal(fb_live_overdue(&l, 1100 * MS), 0);
    assert_int_equal(fb_live_overdue(&l, 1130 * MS), 30 * MS);
    /* asleep until t=5000 ms (a poll deadline): fine until 5000 + limit */
    atomic_store(&l.until, 5000 * MS);
    assert_int_equal(fb_live_overdue(&l, 4000 * MS), 0);
    assert_int_equal(fb_live_overdue(&l, 5100 * MS), 0);
    assert_int_equal(fb_live_overdue(&l, 5101 * MS), 1 * MS);
    /* waiting for another watched thread: never stalled itself */
    atomic_store(&l.until, FB_LIVE_WAITING);
    assert_int_equal(fb_live_overdue(&l, INT64_MAX / 2), 0);
    /* a wake-up time already past at the last beat counts from the beat */
    atomic_store(&l.at, 9000 * MS);
    atomic_store(&l.until, 8000 * MS);
    assert_int_equal(fb_live_overdue(&l, 9100 * MS), 0);
    assert_int_equal(fb_live_overdue(&l, 9150 * MS), 50 * MS);
}

/* ---- real threads ---- */
static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool done;
static pthread_mutex_t wmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wcv = PTHREAD_COND_INITIALIZER;

static void *beating(void *arg)
{
    struct fb_live *l = arg;
    fb_live_enter(l, "beating", 100 * MS);
    while (!atomic_load(&done)) {
        fb_live_beat(0);
        fb_live_idle(fb_mono_ns() + 5 * MS);
        sleep_ms(5);
    }
    fb_live_leave();
    return NULL;
}

static void *locking(void *arg)
{
    struct fb_live *l = arg;
    fb_live_enter(l, "locking", 100 * MS);
    while (!atomic_load(&done)) {
        fb_live_beat(0);
        pthread_mutex_lock(&gate); /* the test holds it: this thread is stuck */
        pthread_mutex_unlock(&gate);
        sleep_ms(5);
    }
    fb_live_leave();
    return NULL;
}

static void *waiting(void *arg)
{
    struct fb_live *l = arg;
    fb_live_enter(l, "waiting", 100 * MS);
    pthread_mutex_lock(&wmu);
    while (!atomic_load(&done)) {
        fb_live_idle(FB_LIVE_WAITING);
        pthread_cond_wait(&wcv, &wmu);
        fb_live_beat(0);
    }
    pthread_mutex_unlock(&wmu);
    fb_live_leave();
    return NULL;
}

static void test_registry_threads(void **st)
{
    (void)st;
    static struct fb_live la, lb, lc;
    pthread_t a, b, c;
    atomic_store(&done, false);
    pthread_mutex_lock(&gate);
    assert_int_equal(pthread_create(&a, NULL, beating, &la), 0);
    assert_int_equal(pthread_create(&b, NULL, locking, &lb), 0);
    assert_int_equal(pthread_create(&c, NULL, waiting, &lc), 0);
    sleep_ms(50);
    assert_int_equal(fb_live_check(fb_mono_ns(), NULL, 0, NULL), 0);
    sleep_ms(200);
    char who[96] = "";
    int64_t silent = 0;
    assert_int_equal(fb_live_check(fb_mono_ns(), who, sizeof who, &silent), 1);
    assert_string_equal(who, "locking");
    assert_true(silent >= 200 * MS && silent < 5000 * MS);
    /* the lock comes free: alive again at its next beat */
    pthread_mutex_unlock(&gate);
    sleep_ms(30);
    assert_int_equal(fb_live_check(fb_mono_ns(), NULL, 0, NULL), 0);
    atomic_store(&done, true);
    pthread_mutex_lock(&wmu);
    pthread_cond_broadcast(&wcv);
    pthread_mutex_unlock(&wmu);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    pthread_join(c, NULL);
    /* left the registry: a record that is never beaten again does not count */
    sleep_ms(150);
    assert_int_equal(fb_live_check(fb_mono_ns(), NULL, 0, NULL), 0);
}

/* ---- the runtime's threads: a sink that wedges ---- */
static pthread_mutex_t sink_gate = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool sink_wedged;
static atomic_int sink_sent;

static int wedge_open(struct fb_sink_inst *s, struct fb_err *err)
{
    (void)s;
    (void)err;
    return 0;
}

static int wedge_send(struct fb_sink_inst *s, const struct fb_batch *b, uint64_t id)
{
    (void)b;
    if (atomic_load(&sink_wedged)) { /* the test holds the gate: send never returns */
        pthread_mutex_lock(&sink_gate);
        pthread_mutex_unlock(&sink_gate);
    }
    atomic_fetch_add(&sink_sent, 1);
    fb_sink_done(s, id, FB_SENT);
    return 0;
}

static void wedge_close(struct fb_sink_inst *s) { (void)s; }

static const struct fb_sink wedge_sink = {
    .name = "wedge", .open = wedge_open, .send = wedge_send, .close = wedge_close};

static void test_runtime_sink_wedge(void **st)
{
    (void)st;
    static const char *text = "gateway: {id: t1, site: s}\n"
                              "stall_timeout: 300ms\n"
                              "devices:\n"
                              "  - name: d1\n"
                              "    url: \"sim://x?seed=1\"\n"
                              "    poll: 10ms\n"
                              "    tags:\n"
                              "      - {name: temp, addr: \"ramp:min=0,max=100,period=1s\"}\n";
    char path[] = "/tmp/fb_live_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct fb_gateway *gw = NULL;
    struct fb_config_opts o = {.strict = false, .diag = stderr};
    assert_int_equal(fb_config_load(path, &o, &gw), 0);
    unlink(path);
    assert_int_equal(gw->stall_timeout_ns, 300 * MS);
    fb_log_init(FB_LOG_ERROR, FB_LOG_TEXT);

    struct fb_sink_inst *saved = gw->sinks;
    uint32_t nsaved = gw->nsinks;
    struct fb_sink_inst sink;
    memset(&sink, 0, sizeof sink);
    sink.sink = &wedge_sink;
    sink.name = (char *)"wedge";
    gw->sinks = &sink;
    gw->nsinks = 1;
    atomic_store(&sink_wedged, false);

    struct fb_err err = {0};
    assert_int_equal(fb_runtime_start(gw, &err), 0);
    sleep_ms(500); /* polling at 10 ms, the sink idle in between: longer than stall_timeout */
    assert_true(atomic_load(&sink_sent) > 10);
    char who[96] = "";
    assert_int_equal(fb_live_check(fb_mono_ns(), who, sizeof who, NULL), 0);
    char status[256];
    fb_sdwatch_status(gw, status, sizeof status);
    assert_string_equal(status, "1/1 devices connected, buffer 0 records");

    /* the sink's send() stops returning: whoever called it stalls — the sink
     * thread, or the connection thread when it handed the batch over itself
     * (publish.c, queue empty and sink ready); the other one then waits for the
     * sink's call lock, stalled as well, or runs into back-pressure (waiting) */
    pthread_mutex_lock(&sink_gate);
    atomic_store(&sink_wedged, true);
    sleep_ms(150);
    assert_int_equal(fb_live_check(fb_mono_ns(), NULL, 0, NULL), 0); /* not yet past the limit */
    sleep_ms(450);
    int64_t silent = 0;
    int stalled = fb_live_check(fb_mono_ns(), who, sizeof who, &silent);
    assert_true(stalled >= 1 && stalled <= 2);
    assert_true(!strcmp(who, "sink wedge") || !strncmp(who, "connection ", 11));
    assert_true(silent >= 300 * MS);

    /* it returns again: alive */
    atomic_store(&sink_wedged, false);
    pthread_mutex_unlock(&sink_gate);
    sleep_ms(200);
    assert_int_equal(fb_live_check(fb_mono_ns(), NULL, 0, NULL), 0);

    fb_runtime_request_stop(gw);
    fb_runtime_wait(gw);
    assert_int_equal(fb_live_check(fb_mono_ns() + 3600 * 1000 * MS, NULL, 0, NULL), 0); /* all left */
    gw->sinks = saved;
    gw->nsinks = nsaved;
    fb_gateway_free(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overdue_rule),
        cmocka_unit_test(test_registry_threads),
        cmocka_unit_test(test_runtime_sink_wedge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
