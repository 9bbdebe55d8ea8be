/* fuzz_store_recover.c — libFuzzer harness for the store's recovery
 * (src/store/store.c): the input is written as the only segment file of a
 * fresh store directory (optionally preceded by an ack file, when the input
 * starts with "ACK" + 8 bytes), the store is opened, everything pending is
 * drained and acked, one record is appended, and the store is closed and
 * opened once more.  Any crash, sanitizer report, a delivered record that is
 * not in increasing id order, or a record count that disagrees with the
 * stats is a bug.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_store_recover /tmp/c tests/fuzz/corpus/store
 */
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void put_file(const char *dir, const char *name, const uint8_t *b, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) abort();
    if (n && write(fd, b, n) != (ssize_t)n) abort();
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[64];
    if (!dir[0]) {
        /* tmpfs when there is one: recovery is what is fuzzed, not the disk */
        struct stat sb;
        snprintf(dir, sizeof dir, "%s/fuzz_store.%d", stat("/dev/shm", &sb) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
        fb_log_init(-1, 0);
    }
    nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    mkdir(dir, 0700);
    if (size >= 11 && memcmp(data, "ACK", 3) == 0) {
        uint8_t ack[24] = {'F', 'B', 'A', 'K', 1, 0, 0, 0};
        memcpy(ack + 8, data + 3, 8);
        uint32_t crc = fb_crc32c(0, ack, 16);
        memcpy(ack + 16, &crc, 4); /* little-endian hosts */
        put_file(dir, "ack", ack, sizeof ack);
        data += 11, size -= 11;
    }
    put_file(dir, "0000000000000001.seg", data, size);
    /* no fsync (FB_SYNC_OS): the same recovery code, ~10x the executions.
     * max_inflight 8: at most one record is in flight here (each is acked at
     * once), and the default (65536) makes every open allocate a 3 MB ring,
     * which under ASan costs a 384 KB shadow memset and page faults on each
     * malloc and free: 70 % of the time of an input (perf, 155 inputs per
     * CPU-second).  A small ring also wraps, which the default never did. */
    struct fb_store_cfg c = {.dir = dir,
                             .max_bytes = 1 << 20,
                             .segment_bytes = 64 << 10,
                             .sync = FB_SYNC_OS,
                             .max_inflight = 8,
                             .name = "fuzz"};
    for (int round = 0; round < 2; round++) {
        struct fb_store *s = fb_store_open(&c, NULL);
        if (!s) abort();
        struct fb_store_stats st;
        fb_store_stats(s, &st);
        uint64_t id, prev = 0, n = 0;
        const void *p;
        uint32_t l;
        int64_t ts;
        while (fb_store_next(s, &id, &p, &l, &ts) == 0) {
            if (id <= prev) abort();
            prev = id;
            volatile uint8_t sink = 0;
            for (uint32_t i = 0; i < l; i++) sink ^= ((const uint8_t *)p)[i];
            (void)sink;
            if (fb_store_ack(s, id) != 0) abort();
            n++;
        }
        if (n + st.dropped_full + st.dropped_age != st.records) abort();
        if (round == 0 && fb_store_append(s, "x", 1, 0, &id) != 0) abort();
        if (round == 0 && id <= prev) abort();
        fb_store_close(s);
    }
    return 0;
}
