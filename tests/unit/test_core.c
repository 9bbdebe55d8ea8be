/* test_core.c — the shared vocabulary (durations, sizes, time stamps, quality
 * names, value conversion), batches and pools, and the command validator
 * (fb_cmd_convert): types, ranges, scaling, strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include "core/fb.h"
#include "core/net.h"
#include "core/router.h"

static void test_duration(void **st)
{
    (void)st;
    int64_t ns;
    assert_int_equal(fb_parse_duration("100ms", &ns), 0);
    assert_int_equal(ns, 100000000);
    assert_int_equal(fb_parse_duration("1.5s", &ns), 0);
    assert_int_equal(ns, 1500000000);
    assert_int_equal(fb_parse_duration("7d", &ns), 0);
    assert_int_equal(ns, 7LL * 86400 * 1000000000LL);
    assert_int_equal(fb_parse_duration("250us", &ns), 0);
    assert_int_equal(ns, 250000);
    assert_int_equal(fb_parse_duration("2", &ns), 0);
    assert_int_equal(ns, 2000000000);
    assert_int_equal(fb_parse_duration("2m", &ns), 0);
    assert_int_equal(ns, 120000000000LL);
    assert_int_equal(fb_parse_duration("10 parsecs", &ns), FB_EINVAL);
    assert_int_equal(fb_parse_duration("-1s", &ns), FB_EINVAL);
    assert_int_equal(fb_parse_duration("", &ns), FB_EINVAL);
    assert_int_equal(fb_parse_duration("s", &ns), FB_EINVAL);
    assert_int_equal(fb_parse_duration("1e30d", &ns), FB_ERANGE);
}

static void test_size(void **st)
{
    (void)st;
    uint64_t b;
    assert_int_equal(fb_parse_size("512MiB", &b), 0);
    assert_int_equal(b, 512ULL << 20);
    assert_int_equal(fb_parse_size("10MB", &b), 0);
    assert_int_equal(b, 10000000ULL);
    assert_int_equal(fb_parse_size("4096", &b), 0);
    assert_int_equal(b, 4096);
    assert_int_equal(fb_parse_size("64KiB", &b), 0);
    assert_int_equal(b, 65536);
    assert_int_equal(fb_parse_size("12 furlongs", &b), FB_EINVAL);
}

static void test_time_format(void **st)
{
    (void)st;
    char buf[32];
    assert_int_equal(fb_fmt_time(buf, 0), 24);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    /* 2026-11-28T10:00:00.123Z */
    assert_int_equal(fb_fmt_time(buf, 1795860000123000000LL), 24);
    assert_string_equal(buf, "2026-11-28T10:00:00.123Z");
    /* leap day */
    fb_fmt_time(buf, 951782400000000000LL);
    assert_string_equal(buf, "2000-02-29T00:00:00.000Z");
    /* past 2038 (where a 32-bit time_t, armhf, ends; fb_fmt_time does not use it) */
    fb_fmt_time(buf, 4102444799LL * 1000000000LL);
    assert_string_equal(buf, "2099-12-31T23:59:59.000Z");
    fb_fmt_time(buf, 2147483648LL * 1000000000LL);
    assert_string_equal(buf, "2038-01-19T03:14:08.000Z");
    /* compare with gmtime for a spread of instants (those a time_t holds) */
    for (int64_t s = 0; s < 4102444800LL; s += 86400 * 37 + 3671) {
        struct tm tm;
        time_t t = (time_t)s;
        if ((int64_t)t != s) break;
        gmtime_r(&t, &tm);
        char want[32];
        strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
        fb_fmt_time(buf, s * 1000000000LL);
        assert_string_equal(buf, want);
        /* and back */
        int64_t ns = 0;
        assert_true(fb_parse_time(buf, strlen(buf), &ns));
        assert_true(ns == s * 1000000000LL);
    }
    int64_t ns = 0;
    assert_true(fb_parse_time("2026-11-28T10:00:00.123Z", 24, &ns));
    assert_true(ns == 1795860000123000000LL);
    assert_true(fb_parse_time("2026-11-28T10:00:00Z", 20, &ns));
    assert_true(ns == 1795860000000000000LL);
    assert_true(fb_parse_time("2026-11-28T10:00:00.123456789Z", 30, &ns));
    assert_true(ns == 1795860000123456789LL);
    assert_true(fb_parse_time("2000-02-29T00:00:00.000Z", 24, &ns));
    assert_true(ns == 951782400000000000LL);
    assert_true(fb_parse_time("1678-01-01T00:00:00Z", 20, &ns)); /* the ends of int64 nanoseconds */
    assert_true(fb_parse_time("2262-01-01T00:00:00Z", 20, &ns));
    static const char *const bad[] = {"2026-13-01T00:00:00Z",
                                      "2026-11-28 10:00:00Z",
                                      "2026-11-28T10:00:00",
                                      "2026-11-28T10:00:00.Z",
                                      "2026-11-28T10:00:00.1234567890Z",
                                      "",
                                      "2026-11-28T10:00:00+01:00",
                                      "2026-11-32T10:00:00Z",
                                      "x026-11-28T10:00:00Z",
                                      "0000-01-01T00:00:00Z", /* outside int64 nanoseconds */
                                      "9999-12-31T23:59:59Z",
                                      "1677-01-01T00:00:00Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_false(fb_parse_time(bad[i], strlen(bad[i]), &ns));
}

static void test_quality(void **st)
{
    (void)st;
    char b[16];
    assert_string_equal(fb_q_name(FB_Q_BAD_COMM, b), "BadCommunicationError");
    assert_string_equal(fb_q_name(FB_Q_BAD_OUT_OF_RANGE, b), "BadOutOfRange");
    assert_string_equal(fb_q_name(FB_Q_UNC_LAST_USABLE, b), "UncertainLastUsableValue");
    assert_string_equal(fb_q_name(FB_Q_GOOD, b), "Good");
    assert_string_equal(fb_q_name(0x80AB0000u, b), "0x80AB0000");
    assert_string_equal(fb_q_severity(FB_Q_BAD_TIMEOUT), "bad");
    assert_string_equal(fb_q_severity(FB_Q_UNC_NOT_ACCURATE), "uncertain");
    assert_string_equal(fb_q_severity(FB_Q_GOOD), "good");
    assert_true(fb_q_good(0));
    assert_false(fb_q_good(FB_Q_UNCERTAIN));
    /* names back to codes */
    uint32_t q = 1;
    assert_true(fb_q_parse("BadCommunicationError", 21, &q));
    assert_int_equal(q, FB_Q_BAD_COMM);
    assert_true(fb_q_parse("Good", 4, &q));
    assert_int_equal(q, FB_Q_GOOD);
    assert_true(fb_q_parse("0x80AB0000", 10, &q));
    assert_int_equal(q, 0x80AB0000u);
    assert_false(fb_q_parse("BadNothing", 10, &q));
    assert_false(fb_q_parse("0x80AB000G", 10, &q));
    assert_false(fb_q_parse("Bad", 2, &q));
}

static void test_value_from_double(void **st)
{
    (void)st;
    struct fb_value v;
    assert_int_equal(fb_value_from_double(FB_T_INT16, -5, &v), 0);
    assert_int_equal(v.i, -5);
    assert_int_equal(fb_value_from_double(FB_T_INT16, 32768, &v), FB_ERANGE);
    assert_int_equal(fb_value_from_double(FB_T_UINT16, -1, &v), FB_ERANGE);
    assert_int_equal(fb_value_from_double(FB_T_UINT16, 65535.4, &v), 0);
    assert_int_equal(v.u, 65535);
    assert_int_equal(fb_value_from_double(FB_T_INT64, 9.3e18, &v), FB_ERANGE);
    assert_int_equal(fb_value_from_double(FB_T_BOOL, 1, &v), 0);
    assert_true(v.b);
    assert_int_equal(fb_value_from_double(FB_T_BOOL, 2, &v), FB_ERANGE);
    assert_int_equal(fb_value_from_double(FB_T_FLOAT32, 1e39, &v), FB_ERANGE);
    assert_int_equal(fb_value_from_double(FB_T_FLOAT32, 0.1, &v), 0);
    assert_true(v.f == (double)0.1f);
    assert_int_equal(fb_value_from_double(FB_T_INT32, NAN, &v), FB_ERANGE);
    assert_int_equal(fb_type_parse("FLOAT32"), FB_T_FLOAT32);
    assert_int_equal(fb_type_parse("real"), FB_T_FLOAT32);
    assert_int_equal(fb_type_parse("bogus"), FB_T_NONE);
}

static void test_batch_and_pool(void **st)
{
    (void)st;
    struct fb_batch_pool *p = fb_batch_pool_new(2, 3, 0, 8);
    assert_non_null(p);
    struct fb_batch *a = fb_batch_pool_get(p), *b = fb_batch_pool_get(p);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(fb_batch_pool_tryget(p)); /* bounded */
    struct fb_value s = {.type = FB_T_STRING, .s = {"hello world", 11}};
    struct fb_sample *sm = fb_batch_add(a, 7, FB_Q_GOOD, 1, &s);
    assert_non_null(sm);
    assert_int_equal(sm->v.s.len, 8); /* truncated to the arena, never overflowing it */
    assert_memory_equal(sm->v.s.p, "hello wo", 8);
    assert_non_null(fb_batch_add(a, 1, 0, 1, NULL));
    assert_non_null(fb_batch_add(a, 2, 0, 1, NULL));
    assert_null(fb_batch_add(a, 3, 0, 1, NULL)); /* full */
    fb_batch_ref(a);
    fb_batch_unref(a);
    assert_null(fb_batch_pool_tryget(p)); /* still referenced once */
    fb_batch_unref(a);
    struct fb_batch *c = fb_batch_pool_tryget(p);
    assert_ptr_equal(c, a);
    assert_int_equal(c->n, 0); /* reset on reuse */
    fb_batch_pool_close(p);
    assert_null(fb_batch_pool_get(p)); /* closed: never blocks */
    fb_batch_unref(b);
    fb_batch_unref(c);
    fb_batch_pool_free(p);
}

/* ---- fb_cmd_convert: the validator behind every command and CLI write ---- */
static struct fb_tag mk_tag(enum fb_type t)
{
    struct fb_tag tag;
    memset(&tag, 0, sizeof tag);
    tag.type = (uint8_t)t;
    tag.access = FB_ACC_RW;
    tag.name = (char *)"x";
    return tag;
}

static int conv(const struct fb_tag *t, const char *json, struct fb_value *v, char *why)
{
    json_error_t je;
    json_t *j = json_loads(json, JSON_DECODE_ANY, &je);
    assert_non_null(j);
    char sbuf[64];
    struct fb_err err = {0};
    int rc = fb_cmd_convert(t, j, v, sbuf, sizeof sbuf, &err);
    if (why) strcpy(why, err.msg);
    json_decref(j);
    return rc;
}

static void test_cmd_convert(void **st)
{
    (void)st;
    struct fb_value v;
    char why[256];
    struct fb_tag t = mk_tag(FB_T_INT16);
    assert_int_equal(conv(&t, "-5", &v, why), 0);
    assert_int_equal(v.i, -5);
    assert_int_equal(conv(&t, "40000", &v, why), FB_ERANGE);
    assert_string_equal(why, "40000 is out of range for int16");
    assert_int_equal(conv(&t, "1.5", &v, why), FB_EINVAL);
    assert_int_equal(conv(&t, "\"12\"", &v, why), FB_EINVAL);
    assert_string_equal(why, "expected a number for int16 tag");
    assert_int_equal(conv(&t, "true", &v, why), 0); /* 0/1 into a register */
    assert_int_equal(v.i, 1);

    struct fb_tag_proc range = {.has_max = true, .max = 40, .has_min = true, .min = -10};
    t.proc = &range;
    assert_int_equal(conv(&t, "42.5", &v, why), FB_ERANGE);
    assert_string_equal(why, "above maximum 40");
    assert_int_equal(conv(&t, "-11", &v, why), FB_ERANGE);
    assert_string_equal(why, "below minimum -10");

    /* scaled: eng 25.0 °C with raw = eng * 10 → 250 */
    struct fb_tag s = mk_tag(FB_T_INT16);
    struct fb_tag_proc scale = {.scaled = true, .k = 0.1, .d = 0};
    s.proc = &scale;
    assert_int_equal(conv(&s, "25.0", &v, why), 0);
    assert_int_equal(v.type, FB_T_INT16);
    assert_int_equal(v.i, 250);
    assert_int_equal(conv(&s, "4000", &v, why), FB_ERANGE); /* raw 40000 does not fit */

    struct fb_tag u64 = mk_tag(FB_T_UINT64);
    assert_int_equal(conv(&u64, "9007199254740993", &v, why), 0); /* 2^53 + 1, exact */
    assert_true(v.u == 9007199254740993ULL);
    assert_int_equal(conv(&u64, "-1", &v, why), FB_ERANGE);

    struct fb_tag b = mk_tag(FB_T_BOOL);
    assert_int_equal(conv(&b, "false", &v, why), 0);
    assert_false(v.b);
    assert_int_equal(conv(&b, "2", &v, why), FB_EINVAL);

    struct fb_tag f = mk_tag(FB_T_FLOAT32);
    assert_int_equal(conv(&f, "1e39", &v, why), FB_ERANGE);
    assert_int_equal(conv(&f, "21.5", &v, why), 0);
    assert_true(v.f == 21.5);

    struct fb_tag str = mk_tag(FB_T_STRING);
    str.str_len = 4;
    assert_int_equal(conv(&str, "\"abcd\"", &v, why), 0);
    assert_int_equal(v.s.len, 4);
    assert_int_equal(conv(&str, "\"abcde\"", &v, why), FB_ERANGE);
    assert_int_equal(conv(&str, "5", &v, why), FB_EINVAL);
}

static void test_net(void **st)
{
    (void)st;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    assert_int_equal(listen(ls, 1), 0);
    int port = ntohs(a.sin_port);
    struct fb_err err = {0};
    int fd = -1;
    assert_int_equal(fb_tcp_connect("127.0.0.1", port, 1000000000LL, "test peer", &fd, &err), 0);
    int peer = accept(ls, NULL, NULL);
    assert_true(peer >= 0);
    assert_int_equal(fb_net_send_all(fd, "hello", 5, fb_mono_ns() + 1000000000LL), 0);
    char buf[8];
    assert_int_equal(fb_net_recv_all(peer, buf, 5, fb_mono_ns() + 1000000000LL), 0);
    assert_memory_equal(buf, "hello", 5);
    /* a silent peer costs the deadline, not forever */
    int64_t t0 = fb_mono_ns();
    assert_int_equal(fb_net_recv_all(fd, buf, 1, t0 + 50000000LL), FB_ETIMEDOUT);
    assert_true(fb_mono_ns() - t0 >= 50000000LL);
    close(peer); /* a closed peer is an I/O error */
    assert_int_equal(fb_net_recv_all(fd, buf, 1, fb_mono_ns() + 1000000000LL), FB_EIO);
    close(fd);
    close(ls);
    /* nobody listening: a clear message naming the peer */
    assert_int_equal(fb_tcp_connect("127.0.0.1", port, 1000000000LL, "127.0.0.1:x", &fd, &err), FB_EIO);
    assert_non_null(strstr(err.msg, "connect to 127.0.0.1:x failed: Connection refused"));
    assert_int_equal(fb_tcp_connect("no-such-host.invalid", 1, 1000000000LL, "x", &fd, &err), FB_EIO);
    assert_non_null(strstr(err.msg, "cannot resolve no-such-host.invalid"));
}

static void test_backoff(void **st)
{
    (void)st;
    struct fb_backoff b;
    fb_backoff_init(&b, 1000, 8000);
    int64_t want[] = {1000, 2000, 4000, 8000, 8000, 8000};
    for (int i = 0; i < 6; i++) {
        int64_t d = fb_backoff_next(&b);
        assert_true(d >= want[i] / 2 && d <= want[i]); /* equal jitter: the upper half */
    }
    fb_backoff_reset(&b);
    int64_t d = fb_backoff_next(&b);
    assert_true(d >= 500 && d <= 1000);
    /* jitter really varies */
    int64_t first = -1;
    bool varied = false;
    for (int i = 0; i < 50; i++) {
        fb_backoff_reset(&b);
        int64_t x = fb_backoff_next(&b);
        if (first < 0)
            first = x;
        else if (x != first)
            varied = true;
    }
    assert_true(varied);
}

/* The numeric twin for control outputs: the same range and conversion
 * checks, rounding to the nearest whole number instead of refusing. */
static void test_cmd_convert_num(void **st)
{
    (void)st;
    struct fb_value v;
    struct fb_err err = {0};
    struct fb_tag t = mk_tag(FB_T_INT16);
    assert_int_equal(fb_cmd_convert_num(&t, 12.4, &v, &err), 0);
    assert_int_equal(v.type, FB_T_INT16);
    assert_int_equal(v.i, 12);
    assert_int_equal(fb_cmd_convert_num(&t, -12.6, &v, &err), 0);
    assert_int_equal(v.i, -13);
    assert_int_equal(fb_cmd_convert_num(&t, 40000, &v, &err), FB_ERANGE);
    assert_string_equal(err.msg, "40000 is out of range for int16");
    assert_int_equal(fb_cmd_convert_num(&t, NAN, &v, &err), FB_EINVAL);
    struct fb_tag_proc tp = fb_tag_proc_none;
    tp.has_max = true;
    tp.max = 100;
    t.proc = &tp;
    assert_int_equal(fb_cmd_convert_num(&t, 100.5, &v, &err), FB_ERANGE);
    assert_string_equal(err.msg, "above maximum 100");
    struct fb_tag s = mk_tag(FB_T_UINT16); /* 0..100 % as 0..1000 per mille */
    struct fb_tag_proc sp = fb_tag_proc_none;
    sp.scaled = true;
    sp.k = 0.1;
    s.proc = &sp;
    assert_int_equal(fb_cmd_convert_num(&s, 42.37, &v, &err), 0);
    assert_int_equal(v.u, 424);
    struct fb_tag f = mk_tag(FB_T_FLOAT32);
    assert_int_equal(fb_cmd_convert_num(&f, 1.25, &v, &err), 0);
    assert_true(v.type == FB_T_FLOAT32 && v.f == 1.25);
    struct fb_tag b = mk_tag(FB_T_BOOL);
    assert_int_equal(fb_cmd_convert_num(&b, 0.7, &v, &err), 0);
    assert_true(v.type == FB_T_BOOL && v.b);
    assert_int_equal(fb_cmd_convert_num(&b, 0.2, &v, &err), 0);
    assert_false(v.b);
    struct fb_tag str = mk_tag(FB_T_STRING);
    assert_int_equal(fb_cmd_convert_num(&str, 1, &v, &err), FB_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_quality),
        cmocka_unit_test(test_value_from_double),
        cmocka_unit_test(test_batch_and_pool),
        cmocka_unit_test(test_cmd_convert),
        cmocka_unit_test(test_cmd_convert_num),
        cmocka_unit_test(test_net),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
