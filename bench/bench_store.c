/* bench_store.c — the store-and-forward queue (src/store) on this machine:
 * sustained append rate of ~200-byte records in producer batches under each
 * sync policy (batch = fdatasync per batch, interval, OS), the drain rate
 * (next + ack), recovery time at open, and the bytes on disk per record.
 *
 * Usage: bench_store [DIR] [RECORDS] [BATCH]
 *   DIR defaults to /tmp/fb_bench_store (use the disk you will deploy on),
 *   RECORDS to 1000000, BATCH (records per flush) to 1000. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"
#include "store/store.h"

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static double secs(int64_t a, int64_t b) { return (double)(b - a) / 1e9; }

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp/fb_bench_store";
    uint64_t n = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000;
    uint64_t batch = argc > 3 ? strtoull(argv[3], NULL, 10) : 1000;
    if (!n || !batch) return 2;
    fb_log_init(FB_LOG_WARN, 0);
    const int pols[] = {FB_SYNC_BATCH, FB_SYNC_INTERVAL, FB_SYNC_OS};
    const char *pname[] = {"batch", "interval(100ms)", "os"};
    char pay[200];
    for (int i = 0; i < 200; i++) pay[i] = (char)('a' + i % 26);
    printf("store bench: %llu records of %zu bytes, %llu per flush, dir %s\n", (unsigned long long)n, sizeof pay,
           (unsigned long long)batch, dir);
    for (int k = 0; k < 3; k++) {
        nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        struct fb_store_cfg c = {
            .dir = dir, .max_bytes = 4ULL << 30, .sync = pols[k], .sync_interval_ns = 100000000, .name = "bench"};
        struct fb_err e;
        struct fb_store *s = fb_store_open(&c, &e);
        if (!s || e.code) {
            fprintf(stderr, "open: %s\n", e.msg);
            return 1;
        }
        int64_t t0 = fb_mono_ns();
        for (uint64_t i = 0; i < n; i++) {
            if (fb_store_append(s, pay, sizeof pay, fb_now_ns(), NULL)) {
                fprintf(stderr, "append failed\n");
                return 1;
            }
            if (i % batch == batch - 1) fb_store_flush(s);
        }
        fb_store_flush(s);
        int64_t t1 = fb_mono_ns();
        struct fb_store_stats st;
        fb_store_stats(s, &st);
        printf("  append, sync=%-16s %10.0f records/s  %7.1f MB/s  (%.2f s)\n", pname[k], n / secs(t0, t1),
               (double)st.bytes / 1e6 / secs(t0, t1), secs(t0, t1));
        if (k == 0) {
            printf("  disk bytes per record: %.2f (payload %zu; %llu bytes in %llu segments)\n",
                   (double)st.bytes / (double)n, sizeof pay, (unsigned long long)st.bytes,
                   (unsigned long long)st.segments);
            fb_store_close(s);
            int64_t t2 = fb_mono_ns();
            s = fb_store_open(&c, &e);
            int64_t t3 = fb_mono_ns();
            fb_store_stats(s, &st);
            printf("  recovery at open: %llu records verified in %.3f s (%.0f records/s)\n",
                   (unsigned long long)st.recovered, secs(t2, t3), st.recovered / secs(t2, t3));
            /* drain: next + ack, 100 in flight like a QoS 1 window */
            uint64_t win[100], nw = 0, got = 0, id;
            const void *p;
            uint32_t l;
            int64_t ts;
            t2 = fb_mono_ns();
            for (;;) {
                int rc = fb_store_next(s, &id, &p, &l, &ts);
                if (rc == 0) {
                    win[nw++] = id;
                    got++;
                }
                if (rc != 0 || nw == 100) {
                    for (uint64_t i = 0; i < nw; i++) fb_store_ack(s, win[i]);
                    nw = 0;
                    if (rc == FB_ENOENT) break;
                }
            }
            t3 = fb_mono_ns();
            printf("  drain (next+ack, 100 in flight): %10.0f records/s (%llu records, %.2f s)\n", got / secs(t2, t3),
                   (unsigned long long)got, secs(t2, t3));
        }
        fb_store_close(s);
    }
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
