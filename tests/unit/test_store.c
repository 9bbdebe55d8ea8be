/* test_store.c — the persistent queue (src/store): order, out-of-order acks,
 * rewind, reopen, kill -9 (fork + _exit), truncated and bit-flipped segments,
 * byte and age bounds with exact drop counts, disk failures (injected, and a
 * real full tmpfs when running as root), the sequence counter, and one
 * producer + one consumer thread.  Every test works in its own temp dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "store/store.h"

static char g_dir[256];

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int setup(void **st)
{
    (void)st;
    snprintf(g_dir, sizeof g_dir, "/tmp/fb_store_test.XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static struct fb_store_cfg cfg_default(void)
{
    struct fb_store_cfg c = {
        .dir = g_dir, .max_bytes = 64u << 20, .sync = FB_SYNC_BATCH, .ack_interval_ns = 1, .name = "test"};
    return c;
}

static struct fb_store *open_ok(const struct fb_store_cfg *c)
{
    struct fb_err e;
    struct fb_store *s = fb_store_open(c, &e);
    assert_non_null(s);
    assert_int_equal(e.code, 0);
    return s;
}

/* payload of record n: "rec-<n>-" padded to len with n's low byte */
static uint32_t mkpay(char *b, uint64_t n, uint32_t len)
{
    int k = snprintf(b, len, "rec-%llu-", (unsigned long long)n);
    for (uint32_t i = (uint32_t)k; i < len; i++) b[i] = (char)(n & 0xff);
    return len;
}

static void append_n(struct fb_store *s, uint64_t from, uint64_t n, uint32_t len)
{
    char b[4096];
    for (uint64_t i = from; i < from + n; i++) {
        uint64_t id;
        mkpay(b, i, len);
        assert_int_equal(fb_store_append(s, b, len, fb_now_ns(), &id), 0);
    }
    assert_int_equal(fb_store_flush(s), 0);
}

/* Reads one record and checks its payload is record `n`. */
static uint64_t expect_next(struct fb_store *s, uint64_t n, uint32_t len)
{
    uint64_t id;
    const void *p;
    uint32_t l;
    int64_t ts;
    assert_int_equal(fb_store_next(s, &id, &p, &l, &ts), 0);
    char b[4096];
    mkpay(b, n, len);
    assert_int_equal(l, len);
    assert_memory_equal(p, b, len);
    return id;
}

static void expect_empty(struct fb_store *s)
{
    uint64_t id;
    const void *p;
    uint32_t l;
    int64_t ts;
    assert_int_equal(fb_store_next(s, &id, &p, &l, &ts), FB_ENOENT);
}

static uint64_t dir_seg_bytes(void)
{
    DIR *d = opendir(g_dir);
    uint64_t sum = 0;
    struct dirent *de;
    char p[512];
    struct stat st;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".seg")) {
            snprintf(p, sizeof p, "%s/%s", g_dir, de->d_name);
            if (stat(p, &st) == 0) sum += (uint64_t)st.st_size;
        }
    closedir(d);
    return sum;
}

/* The first (by name) segment file's path. */
static void first_seg(char *out, size_t n)
{
    DIR *d = opendir(g_dir);
    struct dirent *de;
    char best[256] = "";
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".seg") && (!best[0] || strcmp(de->d_name, best) < 0))
            snprintf(best, sizeof best, "%s", de->d_name);
    closedir(d);
    assert_true(best[0]);
    snprintf(out, n, "%s/%s", g_dir, best);
}

/* ------------------------------------------------------------------ tests */
static void test_crc32c(void **st)
{
    (void)st;
    /* the software path, in a child before anything initialised the CRC */
    pid_t pid = fork();
    if (pid == 0) {
        setenv("FB_CRC_SOFT", "1", 1);
        uint8_t big[1000];
        for (int i = 0; i < 1000; i++) big[i] = (uint8_t)(i * 7);
        uint32_t a = fb_crc32c(0, big, 1000), b2 = fb_crc32c(fb_crc32c(0, big, 333), big + 333, 667);
        _exit(fb_crc32c(0, "123456789", 9) == 0xE3069283u && a == b2 ? 0 : 1);
    }
    int ws;
    waitpid(pid, &ws, 0);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    assert_int_equal(fb_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(fb_crc32c(0, "", 0), 0);
    uint8_t z[32] = {0};
    assert_int_equal(fb_crc32c(0, z, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
}

static void test_in_order(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    struct fb_store *s = open_ok(&c);
    append_n(s, 0, 500, 200);
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    assert_int_equal(ss.records, 500);
    assert_int_equal(ss.bytes, 16 + 500 * (32 + 200)); /* exact: header + 32 bytes per record */
    uint64_t prev = 0;
    for (int i = 0; i < 500; i++) {
        uint64_t id = expect_next(s, (uint64_t)i, 200);
        assert_true(id > prev);
        prev = id;
        assert_int_equal(fb_store_ack(s, id), 0);
    }
    expect_empty(s);
    assert_int_equal(fb_store_ack(s, prev), FB_ENOENT); /* twice */
    assert_int_equal(fb_store_ack(s, 999999), FB_ENOENT);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.records, 0);
    assert_int_equal(ss.acked, 500);
    assert_int_equal(fb_store_append(s, "x", fb_store_max_record(s) + 1, 0, NULL), FB_ERANGE);
    assert_int_equal(fb_store_append(s, "", 0, 0, NULL), 0); /* empty records are fine */
    fb_store_close(s);
}

static void test_out_of_order_acks(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    struct fb_store *s = open_ok(&c);
    append_n(s, 0, 10, 50);
    uint64_t ids[10];
    for (int i = 0; i < 10; i++) ids[i] = expect_next(s, (uint64_t)i, 50);
    for (int i = 9; i >= 1; i--) assert_int_equal(fb_store_ack(s, ids[i]), 0); /* all but the first */
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    assert_int_equal(ss.records, 1);
    assert_int_equal(ss.inflight, 1);
    fb_store_close(s); /* the head could not advance: after reopen all 10 come again (duplicates, no loss) */
    s = open_ok(&c);
    for (int i = 0; i < 10; i++) ids[i] = expect_next(s, (uint64_t)i, 50);
    expect_empty(s);
    assert_int_equal(fb_store_ack(s, ids[0]), 0);
    for (int i = 1; i < 10; i++) assert_int_equal(fb_store_ack(s, ids[i]), 0);
    fb_store_close(s);
    s = open_ok(&c);
    expect_empty(s);
    fb_store_close(s);
}

static void test_rewind(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    struct fb_store *s = open_ok(&c);
    append_n(s, 1, 5, 40);
    uint64_t ids[6];
    for (int i = 1; i <= 5; i++) ids[i] = expect_next(s, (uint64_t)i, 40);
    assert_int_equal(fb_store_ack(s, ids[2]), 0);
    assert_int_equal(fb_store_ack(s, ids[4]), 0);
    fb_store_rewind(s);
    assert_int_equal(expect_next(s, 1, 40), ids[1]);
    assert_int_equal(expect_next(s, 3, 40), ids[3]);
    append_n(s, 6, 1, 40);
    assert_int_equal(expect_next(s, 5, 40), ids[5]); /* old before new */
    uint64_t id6 = expect_next(s, 6, 40);
    expect_empty(s);
    fb_store_rewind(s); /* twice, with nothing acked in between */
    assert_int_equal(expect_next(s, 1, 40), ids[1]);
    assert_int_equal(expect_next(s, 3, 40), ids[3]);
    assert_int_equal(expect_next(s, 5, 40), ids[5]);
    assert_int_equal(expect_next(s, 6, 40), id6);
    expect_empty(s);
    fb_store_close(s);
}

static void test_reopen_exact(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    c.segment_bytes = 4096; /* many segments */
    struct fb_store *s = open_ok(&c);
    append_n(s, 0, 300, 100);
    for (int i = 0; i < 120; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    for (int i = 120; i < 130; i++) expect_next(s, (uint64_t)i, 100); /* in flight, not acked */
    fb_store_close(s);
    s = open_ok(&c);
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    assert_int_equal(ss.recovered, 180);
    assert_int_equal(ss.records, 180);
    for (int i = 120; i < 300; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    expect_empty(s);
    /* new ids continue after the old ones */
    uint64_t id;
    assert_int_equal(fb_store_append(s, "z", 1, 0, &id), 0);
    assert_true(id > 300);
    fb_store_close(s);
    assert_true(dir_seg_bytes() <= 16 + 33); /* acked segments deleted */
}

static void test_kill9(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    c.segment_bytes = 64 << 10;
    pid_t pid = fork();
    if (pid == 0) {
        struct fb_store *s = fb_store_open(&c, NULL);
        char b[256];
        for (int i = 0; i < 5000; i++) {
            mkpay(b, (uint64_t)i, 200);
            if (fb_store_append(s, b, 200, fb_now_ns(), NULL)) _exit(2);
            if (i % 100 == 99) fb_store_flush(s);
        }
        /* deliver and ack the first 1000, one more in flight */
        uint64_t id;
        const void *p;
        uint32_t l;
        int64_t ts;
        for (int i = 0; i < 1000; i++) {
            if (fb_store_next(s, &id, &p, &l, &ts)) _exit(3);
            fb_store_ack(s, id);
        }
        fb_store_next(s, &id, &p, &l, &ts);
        _exit(0); /* no close: like kill -9 */
    }
    int ws;
    waitpid(pid, &ws, 0);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    struct fb_store *s = open_ok(&c);
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    assert_int_equal(ss.corrupt_cut, 0);
    assert_int_equal(ss.records, 4000); /* ack_interval is 1 ns here: exactly the un-acked */
    for (int i = 1000; i < 5000; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 200)), 0);
    expect_empty(s);
    fb_store_close(s);

    /* a real SIGKILL in the middle of appending: everything flushed is there, in order */
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        struct fb_store *s2 = fb_store_open(&c, NULL);
        char b[256];
        for (uint32_t i = 0;; i++) {
            mkpay(b, 10000 + i, 200);
            fb_store_append(s2, b, 200, fb_now_ns(), NULL);
            if (i % 50 == 49) {
                fb_store_flush(s2);
                if (write(pfd[1], &i, 4) != 4) _exit(1); /* i+1 records are durable */
            }
        }
    }
    close(pfd[1]);
    uint32_t last = 0, v;
    for (int k = 0; k < 100 && read(pfd[0], &v, 4) == 4; k++) last = v;
    kill(pid, SIGKILL);
    waitpid(pid, &ws, 0);
    while (read(pfd[0], &v, 4) == 4) last = v;
    close(pfd[0]);
    s = open_ok(&c);
    uint64_t n = 0, id;
    const void *p;
    uint32_t l;
    int64_t ts;
    while (fb_store_next(s, &id, &p, &l, &ts) == 0) {
        char b[256];
        mkpay(b, 10000 + n, 200);
        assert_int_equal(l, 200);
        assert_memory_equal(p, b, 200);
        n++;
        fb_store_ack(s, id);
    }
    assert_true(n >= (uint64_t)last + 1);
    fb_store_close(s);
}

static void test_truncated_and_flipped(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    struct fb_store *s = open_ok(&c);
    append_n(s, 0, 100, 100);
    fb_store_close(s);
    char path[512];
    first_seg(path, sizeof path);
    /* flip one byte inside record 50's payload */
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    off_t off = 16 + 50 * 132 + 32 + 10;
    uint8_t x;
    assert_int_equal(pread(fd, &x, 1, off), 1);
    x ^= 0x40;
    assert_int_equal(pwrite(fd, &x, 1, off), 1);
    /* cut the last record in the middle */
    struct stat sb;
    fstat(fd, &sb);
    assert_int_equal(ftruncate(fd, sb.st_size - 60), 0);
    close(fd);
    fb_log_init(FB_LOG_ERROR, 0); /* the expected warnings stay quiet */
    s = open_ok(&c);
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    assert_int_equal(ss.corrupt_cut, 132 + 72);
    assert_int_equal(ss.records, 98);
    for (int i = 0; i < 99; i++) {
        if (i == 50) continue;
        assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    }
    expect_empty(s);
    append_n(s, 200, 3, 100); /* appending continues */
    for (int i = 200; i < 203; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    fb_store_close(s);
    /* the torn tail was truncated: a second open finds nothing to cut */
    s = open_ok(&c);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.corrupt_cut, 0);
    expect_empty(s);
    fb_store_close(s);

    /* a corrupt length field in the first of several segments: the rest is delivered */
    c.segment_bytes = 4096;
    s = open_ok(&c);
    append_n(s, 0, 100, 100); /* ~30 records per segment */
    fb_store_close(s);
    first_seg(path, sizeof path);
    fd = open(path, O_RDWR);
    uint8_t junk[4] = {0xff, 0xff, 0xff, 0x7f};
    assert_int_equal(pwrite(fd, junk, 4, 16 + 3 * 132 + 4), 4); /* record 3's length */
    close(fd);
    s = open_ok(&c);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.corrupt_cut, 132);
    assert_int_equal(ss.records, 99);
    for (int i = 0; i < 100; i++) {
        if (i == 3) continue;
        assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    }
    expect_empty(s);
    fb_store_close(s);

    /* garbage and empty files named like segments */
    char p2[512];
    snprintf(p2, sizeof p2, "%s/00000000000000aa.seg", g_dir);
    fd = open(p2, O_CREAT | O_WRONLY, 0644);
    assert_int_equal(write(fd, "FBSG\x01\x00\x10\x00garbagegarbagegarbagegarbagegarbage", 42), 42);
    close(fd);
    snprintf(p2, sizeof p2, "%s/00000000000000ab.seg", g_dir);
    close(open(p2, O_CREAT | O_WRONLY, 0644));
    s = open_ok(&c);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.corrupt_cut, 26);
    assert_int_equal(ss.records, 0);
    expect_empty(s);
    fb_store_close(s);
    fb_log_init(FB_LOG_WARN, 0);
}

static void test_max_bytes(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    c.max_bytes = 64 << 10;
    c.segment_bytes = 16 << 10;
    fb_log_init(FB_LOG_ERROR, 0);
    struct fb_store *s = open_ok(&c);
    char b[256];
    uint64_t ids[10000];
    struct fb_store_stats ss;
    for (uint64_t i = 0; i < 10000; i++) {
        mkpay(b, i, 100);
        assert_int_equal(fb_store_append(s, b, 100, fb_now_ns(), &ids[i]), 0);
        if (i % 10 == 9) {
            assert_int_equal(fb_store_flush(s), 0);
            fb_store_stats(s, &ss);
            assert_true(ss.bytes <= c.max_bytes);
            assert_true(dir_seg_bytes() <= c.max_bytes);
        }
    }
    fb_store_stats(s, &ss);
    assert_int_equal(ss.records + ss.dropped_full, 10000); /* every drop counted, exactly */
    assert_true(ss.dropped_full > 9000);
    uint64_t kept = ss.records, first = 10000 - kept;
    for (uint64_t i = first; i < 10000; i++) assert_int_equal(expect_next(s, i, 100), ids[i]); /* the newest survive */
    expect_empty(s);
    fb_store_close(s);
    /* FB_FULL_BLOCK: the append refuses, nothing is dropped, acks make room */
    nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(g_dir, 0700);
    c.full_policy = FB_FULL_BLOCK;
    s = open_ok(&c);
    uint64_t n = 0;
    int rc;
    while ((rc = fb_store_append(s, b, 100, fb_now_ns(), NULL)) == 0) n++;
    assert_int_equal(rc, FB_EAGAIN);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.dropped_full, 0);
    assert_int_equal(ss.records, n);
    uint64_t id;
    const void *p;
    uint32_t l;
    int64_t ts;
    for (int i = 0; i < 200; i++) {
        assert_int_equal(fb_store_next(s, &id, &p, &l, &ts), 0);
        fb_store_ack(s, id);
    }
    assert_int_equal(fb_store_append(s, b, 100, fb_now_ns(), NULL), 0);
    fb_store_close(s);
    fb_log_init(FB_LOG_WARN, 0);
}

/* max_records (the memory queue's `queue:`): never more records than that,
 * the oldest dropped and counted exactly, the newest delivered in order —
 * also when one segment could hold them all, and with records in flight. */
static void test_max_records(void **st)
{
    (void)st;
    fb_log_init(FB_LOG_ERROR, 0);
    struct fb_store_cfg c = {.dir = NULL,
                             .max_bytes = 8 << 20,
                             .segment_bytes = 256 << 10,
                             .max_records = 10,
                             .max_inflight = 10,
                             .name = "memq"};
    struct fb_err e = {0};
    struct fb_store *s = fb_store_open(&c, &e);
    assert_non_null(s);
    char b[128];
    uint64_t ids[1000];
    struct fb_store_stats ss;
    for (uint64_t i = 0; i < 1000; i++) {
        mkpay(b, i, 100);
        assert_int_equal(fb_store_append(s, b, 100, fb_now_ns(), &ids[i]), 0);
        fb_store_stats(s, &ss);
        assert_true(ss.records <= 10);
        assert_true(ss.records >= 1);
        if (i == 505) /* what is there goes in flight while the oldest segments go */
            for (uint64_t k = i + 1 - ss.records; k <= i; k++) assert_int_equal(expect_next(s, k, 100), ids[k]);
    }
    fb_store_stats(s, &ss);
    assert_int_equal(ss.records + ss.dropped_full, 1000); /* every drop counted, exactly */
    uint64_t kept = ss.records, first = 1000 - kept;
    for (uint64_t i = first; i < 1000; i++) { /* the newest, in order */
        assert_int_equal(expect_next(s, i, 100), ids[i]);
        fb_store_ack(s, ids[i]);
    }
    expect_empty(s);
    fb_store_close(s);
    fb_log_init(FB_LOG_WARN, 0);
}

/* Records dropped for room while in flight are counted, and taken off the
 * count again when their ack arrives after all: drops stay exact. */
static void test_drop_in_flight_exact(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    c.max_bytes = 64 << 10;
    c.segment_bytes = 16 << 10;
    fb_log_init(FB_LOG_ERROR, 0);
    struct fb_store *s = open_ok(&c);
    char b[256];
    mkpay(b, 0, 100);
    uint64_t first[20];
    for (int i = 0; i < 20; i++) assert_int_equal(fb_store_append(s, b, 100, fb_now_ns(), NULL), 0);
    fb_store_flush(s);
    const void *p;
    uint32_t l;
    int64_t ts;
    for (int i = 0; i < 20; i++) assert_int_equal(fb_store_next(s, &first[i], &p, &l, &ts), 0); /* in flight */
    /* fill far past max_bytes: the head segment with the 20 in-flight records goes */
    for (int i = 0; i < 2000; i++) assert_int_equal(fb_store_append(s, b, 100, fb_now_ns(), NULL), 0);
    fb_store_flush(s);
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    uint64_t dropped = ss.dropped_full;
    assert_true(dropped >= 20);
    /* 15 of the 20 were delivered after all: not drops */
    for (int i = 0; i < 15; i++) assert_int_equal(fb_store_ack(s, first[i]), 0);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.dropped_full, dropped - 15);
    /* the connection dropped: the other 5 are lost for good and stay counted */
    fb_store_rewind(s);
    assert_int_equal(fb_store_ack(s, first[19]), FB_ENOENT);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.dropped_full, dropped - 15);
    assert_int_equal(ss.records + ss.dropped_full + ss.acked, 2020);
    fb_store_close(s);
    fb_log_init(FB_LOG_WARN, 0);
}

static void test_max_age(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    c.max_age_ns = 3600LL * 1000000000;
    c.segment_bytes = 4096;
    fb_log_init(FB_LOG_ERROR, 0);
    struct fb_store *s = open_ok(&c);
    int64_t now = fb_now_ns(), old = now - 2 * c.max_age_ns;
    char b[128];
    for (int i = 0; i < 100; i++) { /* ~3 old segments */
        mkpay(b, (uint64_t)i, 100);
        assert_int_equal(fb_store_append(s, b, 100, old, NULL), 0);
    }
    for (int i = 100; i < 110; i++) {
        mkpay(b, (uint64_t)i, 100);
        assert_int_equal(fb_store_append(s, b, 100, i % 2 ? old : now, NULL), 0);
    }
    assert_int_equal(fb_store_flush(s), 0);
    for (int i = 100; i < 110; i += 2) fb_store_ack(s, expect_next(s, (uint64_t)i, 100));
    expect_empty(s);
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    assert_int_equal(ss.dropped_age, 105);
    assert_int_equal(ss.records, 0);
    assert_int_equal(ss.dropped_full, 0);
    fb_store_close(s);
    fb_log_init(FB_LOG_WARN, 0);
}

static void test_inflight_limit(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    c.max_inflight = 8;
    struct fb_store *s = open_ok(&c);
    append_n(s, 0, 20, 10);
    uint64_t first = expect_next(s, 0, 10);
    for (int i = 1; i < 8; i++) expect_next(s, (uint64_t)i, 10);
    uint64_t id;
    const void *p;
    uint32_t l;
    int64_t ts;
    assert_int_equal(fb_store_next(s, &id, &p, &l, &ts), FB_EAGAIN);
    assert_int_equal(fb_store_ack(s, first + 5), 0); /* not the oldest: still full */
    assert_int_equal(fb_store_next(s, &id, &p, &l, &ts), FB_EAGAIN);
    assert_int_equal(fb_store_ack(s, first), 0);
    expect_next(s, 8, 10);
    fb_store_close(s);
}

static void test_disk_fault_injected(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    c.segment_bytes = 8192;
    c.disk_retry_ns = 1000000; /* 1 ms */
    fb_log_init(-1, 0);
    struct fb_store *s = open_ok(&c);
    append_n(s, 0, 100, 100);
    fb_store_inject_fault(s, FB_STORE_FAULT_WRITE | FB_STORE_FAULT_OPEN, ENOSPC);
    char b[128];
    for (int i = 100; i < 200; i++) {
        mkpay(b, (uint64_t)i, 100);
        assert_int_equal(fb_store_append(s, b, 100, fb_now_ns(), NULL), 0);
    }
    assert_int_equal(fb_store_flush(s), FB_EIO);
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    assert_int_equal(ss.degraded, 1);
    assert_int_equal(ss.last_errno, ENOSPC);
    assert_true(ss.mem_bytes > 0);
    assert_int_equal(ss.records, 200);
    for (int i = 0; i < 150; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    /* the disk comes back: the store leaves memory mode */
    fb_store_inject_fault(s, 0, 0);
    usleep(2000);
    for (int i = 200; i < 300; i++) {
        mkpay(b, (uint64_t)i, 100);
        assert_int_equal(fb_store_append(s, b, 100, fb_now_ns(), NULL), 0);
    }
    /* back on disk, but 150..199 were accepted in memory: not durable yet */
    assert_int_equal(fb_store_flush(s), FB_EIO);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.degraded, 0);
    for (int i = 150; i < 250; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    /* a failing fdatasync degrades too */
    fb_store_inject_fault(s, FB_STORE_FAULT_SYNC, EIO);
    mkpay(b, 300, 100);
    assert_int_equal(fb_store_append(s, b, 100, fb_now_ns(), NULL), 0);
    assert_int_equal(fb_store_flush(s), FB_EIO);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.degraded, 1);
    fb_store_inject_fault(s, 0, 0);
    for (int i = 250; i < 301; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    expect_empty(s);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.records, 0);
    assert_int_equal(ss.dropped_full, 0);
    fb_store_close(s);

    /* an unusable directory: the store opens in memory and says why */
    char bad[512];
    snprintf(bad, sizeof bad, "%s/afile", g_dir);
    close(open(bad, O_CREAT | O_WRONLY, 0644));
    snprintf(bad, sizeof bad, "%s/afile/store", g_dir);
    c.dir = bad;
    struct fb_err e;
    s = fb_store_open(&c, &e);
    assert_non_null(s);
    assert_int_equal(e.code, FB_EIO);
    assert_non_null(strstr(e.msg, "memory"));
    fb_store_stats(s, &ss);
    assert_int_equal(ss.degraded, 1);
    c.dir = g_dir;
    for (int i = 0; i < 10; i++) {
        mkpay(b, (uint64_t)i, 100);
        assert_int_equal(fb_store_append(s, b, 100, fb_now_ns(), NULL), 0);
    }
    assert_int_equal(fb_store_flush(s), FB_EIO); /* not durable */
    for (int i = 0; i < 10; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    fb_store_close(s);
    fb_log_init(FB_LOG_WARN, 0);
}

static void test_tmpfs_full(void **st)
{
    (void)st;
    char mnt[300];
    snprintf(mnt, sizeof mnt, "%s/tmpfs", g_dir);
    mkdir(mnt, 0700);
    int e = geteuid() != 0 ? EPERM : mount("tmpfs", mnt, "tmpfs", 0, "size=128k") != 0 ? errno : 0;
    if (e) {
        /* skipped only when turned off on purpose (as the system tests do) */
        const char *off = getenv("FB_TEST_SKIP");
        if (off && strstr(off, "tmpfs")) {
            printf("[  SKIP    ] test_tmpfs_full: turned off by FB_TEST_SKIP=%s\n", off);
            skip();
        }
        fail_msg("test_tmpfs_full needs root and a tmpfs mount (%s); FB_TEST_SKIP=tmpfs leaves it out", strerror(e));
    }
    struct fb_store_cfg c = cfg_default();
    c.dir = mnt;
    c.segment_bytes = 32 << 10;
    c.max_bytes = 4 << 20;
    fb_log_init(-1, 0);
    struct fb_store *s = open_ok(&c);
    char b[256];
    for (int i = 0; i < 4000; i++) { /* ~900 KiB into 128 KiB */
        mkpay(b, (uint64_t)i, 200);
        assert_int_equal(fb_store_append(s, b, 200, fb_now_ns(), NULL), 0);
        if (i % 20 == 19) fb_store_flush(s);
    }
    fb_store_flush(s);
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    assert_int_equal(ss.degraded, 1);
    assert_int_equal(ss.last_errno, ENOSPC);
    assert_int_equal(ss.records, 4000);
    for (int i = 0; i < 4000; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 200)), 0);
    expect_empty(s);
    fb_store_close(s);
    /* what reached the disk is intact */
    s = open_ok(&c);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.corrupt_cut, 0);
    fb_store_close(s);
    umount(mnt);
    fb_log_init(FB_LOG_WARN, 0);
}

static void test_seq(void **st)
{
    (void)st;
    char d[300];
    snprintf(d, sizeof d, "%s/seq", g_dir);
    struct fb_store_seq q;
    struct fb_err e;
    uint64_t t0 = (uint64_t)fb_now_ns() / 1000;
    fb_log_init(FB_LOG_WARN, 0);
    assert_int_equal(fb_store_seq_open(&q, d, 10, &e), 0);
    uint64_t v, last = 0, first = 0;
    for (int i = 0; i < 25; i++) {
        assert_int_equal(fb_store_seq_next(&q, &v), 0);
        assert_true(v > last);
        if (!first) first = v;
        last = v;
    }
    /* no file: a time-derived start (a wiped buffer must not restart at 1) */
    assert_true(first >= t0);
    assert_int_equal(last, first + 24);
    /* simulated crash: no close; a new process continues above */
    for (int round = 0; round < 3; round++) {
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        pid_t pid = fork();
        if (pid == 0) {
            struct fb_store_seq q2;
            if (fb_store_seq_open(&q2, d, 10, NULL)) _exit(1);
            uint64_t x = 0;
            for (int i = 0; i < 7; i++) fb_store_seq_next(&q2, &x);
            if (write(pfd[1], &x, 8) != 8) _exit(1);
            _exit(0);
        }
        close(pfd[1]);
        uint64_t x = 0;
        assert_int_equal(read(pfd[0], &x, 8), 8);
        close(pfd[0]);
        int ws;
        waitpid(pid, &ws, 0);
        assert_true(x > last);
        last = x;
    }
    assert_int_equal(fb_store_seq_open(&q, d, 10, &e), 0);
    assert_int_equal(fb_store_seq_next(&q, &v), 0);
    assert_true(v > last);
    /* a corrupt file: load reports it; open never goes back */
    char f[400];
    snprintf(f, sizeof f, "%s/seq", d);
    FILE *fp = fopen(f, "w");
    fputs("garbage", fp);
    fclose(fp);
    assert_int_equal(fb_store_seq_load(d, &v, &e), FB_EPROTO);
    fb_log_init(-1, 0);
    assert_int_equal(fb_store_seq_open(&q, d, 10, &e), 0);
    fb_log_init(FB_LOG_WARN, 0);
    assert_int_equal(fb_store_seq_next(&q, &v), 0);
    assert_true(v > last);
    last = v;

    /* issue 14: a MISSING file restarted at 1 while queued records carried
     * higher numbers; it must resume above everything handed out */
    assert_int_equal(unlink(f), 0);
    assert_int_equal(fb_store_seq_open(&q, d, 10, &e), 0);
    assert_int_equal(fb_store_seq_next(&q, &v), 0);
    assert_true(v > last);
    last = v;
    /* … also when the clock is behind the last write (no RTC, before NTP):
     * a queue file written "in 2100" lifts the restart above that time.  A
     * 32-bit time_t (armhf) ends in 2038: 2100 would wrap to 1963, so there
     * the file is dated 2038-01-01 (still years ahead of the clock). */
    const time_t later = sizeof(time_t) > 4 ? (time_t)4102444800 : (time_t)2145916800;
    char qd[400], qf[500];
    snprintf(qd, sizeof qd, "%s/mqtt", d);
    assert_int_equal(mkdir(qd, 0750), 0);
    snprintf(qf, sizeof qf, "%s/0000000000000001.seg", qd);
    close(open(qf, O_CREAT | O_WRONLY, 0644));
    struct timespec tt[2] = {{later, 0}, {later, 0}};
    assert_int_equal(utimensat(AT_FDCWD, qf, tt, 0), 0);
    assert_int_equal(unlink(f), 0);
    assert_int_equal(fb_store_seq_open(&q, d, 10, &e), 0);
    assert_int_equal(fb_store_seq_next(&q, &v), 0);
    assert_true(v > (uint64_t)later * 1000000u);
}

/* The ids of the records in segment file `path` (appended by append_n with
 * 100-byte payloads: 132 bytes each), *n of them. */
static void seg_ids(const char *path, uint64_t *first, uint64_t *n)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    *n = ((uint64_t)sb.st_size - 16) / 132;
    *first = strtoull(strrchr(path, '/') + 1, NULL, 16);
}

/* The k-th segment file by name (0-based). */
static void nth_seg(int k, char *out, size_t n)
{
    struct dirent **list;
    int cnt = scandir(g_dir, &list, NULL, alphasort), found = 0;
    assert_true(cnt >= 0);
    for (int i = 0; i < cnt; i++) {
        if (strstr(list[i]->d_name, ".seg") && found++ == k) snprintf(out, n, "%s/%s", g_dir, list[i]->d_name);
        free(list[i]);
    }
    free(list);
    assert_true(found > k);
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t x;
    assert_int_equal(pread(fd, &x, 1, off), 1);
    x ^= 0x40;
    assert_int_equal(pwrite(fd, &x, 1, off), 1);
    close(fd);
}

/* Issue 14: a record damaged AFTER start-up, in a segment that existed at
 * start-up, was cut without a log line or a count.  And a region already cut
 * at open is not counted twice when the reader meets it. */
static void test_corrupt_while_reading(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    c.segment_bytes = 4096;
    struct fb_store *s = open_ok(&c);
    append_n(s, 0, 100, 100); /* 30 records per segment */
    fb_store_close(s);
    fb_log_init(FB_LOG_ERROR, 0);
    char path[512];
    nth_seg(0, path, sizeof path);
    flip_byte(path, 16 + 5 * 132 + 40); /* record 5: cut at open */
    s = open_ok(&c);
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    assert_int_equal(ss.corrupt_cut, 132);
    /* now damage record 40 (second segment, recovered) while the store runs */
    nth_seg(1, path, sizeof path);
    flip_byte(path, 16 + 10 * 132 + 40);
    for (int i = 0; i < 100; i++) {
        if (i == 5 || i == 40) continue;
        assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    }
    expect_empty(s);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.corrupt_cut, 132 + 132); /* record 5 once, record 40 found while reading */
    assert_int_equal(ss.records, 0);
    fb_store_close(s);
    fb_log_init(FB_LOG_WARN, 0);
}

/* Issue 14: a deleted segment file vanished without a word.  Gaps in the ids
 * are reported with their range (log, stats → metrics and status). */
static void test_deleted_segment(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    c.segment_bytes = 4096;
    struct fb_store *s = open_ok(&c);
    append_n(s, 0, 150, 100); /* 5 segments of 30 */
    fb_store_close(s);
    fb_log_init(FB_LOG_ERROR, 0);
    char path[512];
    uint64_t first, n;
    /* 1. a middle segment deleted while the gateway was stopped */
    nth_seg(2, path, sizeof path);
    seg_ids(path, &first, &n);
    assert_int_equal(n, 30);
    assert_int_equal(unlink(path), 0);
    s = open_ok(&c);
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    assert_int_equal(ss.lost, 30);
    assert_int_equal(ss.lost_first, first);
    assert_int_equal(ss.lost_last, first + 29);
    assert_int_equal(ss.records, 120);
    assert_int_equal(ss.corrupt_cut, 0);
    for (int i = 0; i < 20; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    fb_store_close(s);
    /* 2. the oldest segment file deleted (the head gap: the ack file tells) */
    nth_seg(0, path, sizeof path);
    seg_ids(path, &first, &n);
    assert_int_equal(unlink(path), 0);
    s = open_ok(&c);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.lost, 10);       /* records 20..29 were not acked */
    assert_int_equal(ss.lost_first, 21); /* ids start at 1 */
    assert_int_equal(ss.lost_last, 30);
    assert_int_equal(ss.records, 90);
    /* 3. a segment deleted while the store runs, before the reader gets there */
    for (int i = 30; i < 60; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    nth_seg(1, path, sizeof path); /* the one after the segment being read */
    seg_ids(path, &first, &n);
    assert_int_equal(unlink(path), 0);
    /* payloads 90..119 (ids 91..120) are gone; 120..149 follow */
    for (int i = 120; i < 150; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    expect_empty(s);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.lost, 10 + 30);
    assert_int_equal(ss.lost_first, first);
    assert_int_equal(ss.lost_last, first + 29);
    assert_int_equal(ss.records, 0);
    fb_store_close(s);
    /* a clean reopen finds nothing new missing: our own deletions are not losses */
    s = open_ok(&c);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.lost, 0);
    append_n(s, 500, 100, 100);
    for (int i = 500; i < 600; i++) assert_int_equal(fb_store_ack(s, expect_next(s, (uint64_t)i, 100)), 0);
    fb_store_close(s);
    s = open_ok(&c);
    fb_store_stats(s, &ss);
    assert_int_equal(ss.lost, 0);
    expect_empty(s);
    fb_store_close(s);
    fb_log_init(FB_LOG_WARN, 0);
}

struct pc {
    struct fb_store *s;
    uint64_t n;
};

static void *producer(void *arg)
{
    struct pc *x = arg;
    char b[256];
    for (uint64_t i = 0; i < x->n; i++) {
        mkpay(b, i, 120);
        while (fb_store_append(x->s, b, 120, fb_now_ns(), NULL) == FB_EAGAIN) usleep(100);
        if (i % 64 == 63) fb_store_flush(x->s);
    }
    fb_store_flush(x->s);
    return NULL;
}

static void test_threads(void **st)
{
    (void)st;
    struct fb_store_cfg c = cfg_default();
    c.sync = FB_SYNC_INTERVAL;
    c.sync_interval_ns = 20000000;
    c.segment_bytes = 256 << 10;
    c.max_bytes = 8 << 20;
    c.full_policy = FB_FULL_BLOCK;
    c.max_inflight = 100;
    struct fb_store *s = open_ok(&c);
    struct pc x = {s, 100000};
    pthread_t th;
    pthread_create(&th, NULL, producer, &x);
    uint64_t got = 0, pend[100], np = 0, rewinds = 0, expect = 0;
    char b[256];
    while (got < x.n) {
        uint64_t id;
        const void *p;
        uint32_t l;
        int64_t ts;
        int rc = fb_store_next(s, &id, &p, &l, &ts);
        if (rc == 0) {
            if (!memcmp(p, "rec-", 4)) {
                uint64_t n = strtoull((const char *)p + 4, NULL, 10);
                if (n == expect) { /* first delivery, in order */
                    mkpay(b, n, 120);
                    assert_memory_equal(p, b, 120);
                    expect++;
                } else {
                    assert_true(n < expect); /* a replay after rewind */
                }
            }
            pend[np++] = id;
        }
        if (rc == FB_EAGAIN || np == 100 || (rc == FB_ENOENT && np)) {
            /* ack in reverse order, sometimes drop the connection first */
            if (rewinds < 20 && (got % 5000) < 100 && np > 3) {
                if (fb_store_ack(s, pend[1]) == 0) got++;
                fb_store_rewind(s);
                rewinds++;
                np = 0;
                continue;
            }
            for (uint64_t i = np; i-- > 0;)
                if (fb_store_ack(s, pend[i]) == 0) got++;
            np = 0;
        }
        if (rc == FB_ENOENT) usleep(50);
    }
    pthread_join(th, NULL);
    assert_int_equal(expect, x.n);
    struct fb_store_stats ss;
    fb_store_stats(s, &ss);
    assert_int_equal(ss.records, 0);
    assert_int_equal(ss.dropped_full + ss.dropped_age + ss.corrupt_cut, 0);
    fb_store_close(s);
}

int main(void)
{
    fb_log_init(FB_LOG_WARN, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test_setup_teardown(test_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_order_acks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rewind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_and_flipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_bytes, setup, teardown),
        cmocka_unit_test(test_max_records),
        cmocka_unit_test_setup_teardown(test_drop_in_flight_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inflight_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_fault_injected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tmpfs_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_while_reading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
