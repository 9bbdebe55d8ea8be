/* store.c — the persistent per-sink queue: a segmented append-only log.
 *
 * Why a segmented log and not SQLite (WAL): the queue only ever appends at
 * one end and deletes at the other.  A log does exactly that with one
 * sequential write per batch, byte-exact size accounting (the bound is the
 * sum of file sizes, nothing hidden in free pages or a B-tree), one
 * fdatasync per batch, deletion of a whole segment with one unlink, and a
 * recovery that is a linear CRC scan anyone can read.  SQLite would add a
 * B-tree page per few records, a WAL that must be checkpointed, and a size
 * that is only known after VACUUM.
 *
 * Directory layout (DIR = cfg.dir):
 *   DIR/<first-id as 16 hex digits>.seg   segments, in id order
 *   DIR/ack                               the durable head (see below)
 *   DIR/seq                               the sequence counter (fb_store_seq_*)
 *
 * Segment file, all integers little-endian:
 *   0  "FBSG"  magic
 *   4  u16     version (1)
 *   6  u16     header length (16)
 *   8  u64     id of the first record
 *   16 records, back to back:
 *      0  u32  record magic 0x31524246 ("FBR1")
 *      4  u32  payload length
 *      8  u64  id (strictly increasing through the whole store)
 *      16 i64  time stamp (ns, UTC; the caller's)
 *      24 u32  flags (0; reserved)
 *      28 u32  CRC-32C of bytes 0..27 and the payload
 *      32 payload
 * Overhead: 32 bytes per record plus 16 per segment.  A segment is at most
 * segment_bytes long; only the newest (the tail) is written to, and each run
 * of the process starts a new tail, so a segment that existed at open is
 * never written again.
 *
 * Ids are below 2^62 (larger ones are treated as corrupt).
 *
 * Ack file (24 bytes): "FBAK", u32 version 1, u64 H, u32 CRC-32C of bytes
 * 0..15, u32 0.  Every record with id <= H was acknowledged.  It is rewritten
 * (tmp file + rename) at most every ack_interval_ns, without fsync: losing it
 * only re-delivers records (duplicates), never loses them.  Segments whose
 * records are all acked are unlinked at once.
 *
 * Recovery (fb_store_open): read the ack file, then scan every segment in
 * name order, verify magic, length, CRC and id order of every record.  A bad
 * record starts a resync: the scan looks for the next offset holding a valid
 * record (magic + CRC + increasing id); the bytes in between are cut (counted
 * in corrupt_cut and logged with file and offset).  Garbage at the end of a
 * file (a torn write) is truncated away.  Empty and fully acked segments are
 * deleted.  Appending then continues with ids after the highest one seen.
 * Ids are consecutive, so the scan also finds records that are missing
 * altogether: every id between the durable head (or the previous record) and
 * a record is either that record's predecessor or lost — a segment file that
 * was deleted, records that lived only in memory when the process died, or
 * records inside a cut region.  Each gap is logged with its id range and
 * counted in `lost` (fb_store_stats), as is a segment file that vanishes
 * while the store runs.  The cut regions of each recovered segment are
 * remembered, so the read cursor skips exactly those silently (counted once,
 * at open) and logs and counts every other cut it makes, whenever it finds
 * it.  For the head gap to be meaningful the ack file is written at open
 * when missing, and before any segment file is deleted (so a deleted segment
 * is always below the persisted head when the deletion was ours).
 *
 * Delivery: a sequential read cursor walks the segments; every record handed
 * out enters the in-flight ring (id, segment, offset, acked flag), sorted by
 * id.  Acks mark entries (binary search), the contiguous acked prefix is
 * popped and becomes the durable head H.  Rewind replays the ring's un-acked
 * entries from their segment offsets before the cursor continues.
 *
 * Bounds: before an append the store makes room: while the segments' total
 * size plus the new record would exceed max_bytes, the oldest segment is
 * deleted (its not-yet-acked records counted in dropped_full) or, with
 * FB_FULL_BLOCK, the append returns FB_EAGAIN.  segment_bytes <= max_bytes/4
 * keeps this always possible.  max_records bounds the records kept the same
 * way (the oldest segments are dropped; a tail holding all of them is closed
 * first), used by the memory queue of a sink without a buffer (`queue:`).  max_age drops whole segments whose newest
 * record is too old, and single records at delivery time.
 *
 * Disk trouble: any failed create, write or sync freezes the disk tail at
 * its last whole record and continues in memory segments (same format, same
 * accounting, malloc'd), flagged `degraded`.  Every disk_retry_ns a new disk
 * segment is tried; when that works the store leaves degraded mode.  Memory
 * segments live until drained; they do not survive a crash.
 *
 * System calls: every one that touches the files goes through the table in
 * store_io.h (libc in production), so that tests can fail, crash or record
 * each of them (tests/unit/test_store_crash.c).
 *
 * Locking: one mutex around all state.  The producer's fdatasync runs
 * outside it (the consumer keeps working during a sync); the segment being
 * synced is pinned (never deleted) meanwhile.
 */
#include "store/store.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/log.h"
#include "store/store_io.h"

/* every system call that touches the files goes through the table (store_io.h) */
#define SYS fb_store_sys

#define SEG_MAGIC "FBSG"
#define SEG_VERSION 1
#define SEG_HDR 16u
#define REC_MAGIC 0x31524246u
#define REC_HDR 32u
#define ACK_MAGIC "FBAK"
#define SEQ_MAGIC "FBSQ"
#define WBUF_MAX (1u << 20)
#define RBUF_MIN (256u << 10)
#define FILE_MAX ((uint64_t)1 << 31) /* bigger "segments" are not ours */
#define ID_MAX ((uint64_t)1 << 62)   /* ids beyond are corrupt (2^62 records never happen) */
#define READ_RETRY_NS 60000000000LL  /* a failing read is retried this long before its bytes count as lost */

/* ------------------------------------------------------------------ CRC-32C */
static uint32_t crc_tab[8][256];
#if defined(__x86_64__)
static bool crc_hw; /* SSE 4.2's crc32 instruction (other architectures: the tables) */
#endif
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2") && !getenv("FB_CRC_SOFT");
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_x86(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}
#endif

uint32_t fb_crc32c(uint32_t crc, const void *buf, size_t n)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = buf;
#if defined(__x86_64__)
    if (crc_hw) return crc_x86(crc, p, n);
#endif
    crc = ~crc;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = crc_tab[7][w & 0xff] ^ crc_tab[6][(w >> 8) & 0xff] ^ crc_tab[5][(w >> 16) & 0xff] ^
              crc_tab[4][(w >> 24) & 0xff] ^ crc_tab[3][(w >> 32) & 0xff] ^ crc_tab[2][(w >> 40) & 0xff] ^
              crc_tab[1][(w >> 48) & 0xff] ^ crc_tab[0][w >> 56];
        p += 8;
        n -= 8;
    }
#endif
    while (n--) crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

/* -------------------------------------------------------------- byte order */
static void put16(uint8_t *b, uint16_t v)
{
    v = htole16(v);
    memcpy(b, &v, 2);
}
static void put32(uint8_t *b, uint32_t v)
{
    v = htole32(v);
    memcpy(b, &v, 4);
}
static void put64(uint8_t *b, uint64_t v)
{
    v = htole64(v);
    memcpy(b, &v, 8);
}
static uint16_t get16(const uint8_t *b)
{
    uint16_t v;
    memcpy(&v, b, 2);
    return le16toh(v);
}
static uint32_t get32(const uint8_t *b)
{
    uint32_t v;
    memcpy(&v, b, 4);
    return le32toh(v);
}
static uint64_t get64(const uint8_t *b)
{
    uint64_t v;
    memcpy(&v, b, 8);
    return le64toh(v);
}

/* ------------------------------------------------------------------- types */
struct seg {
    struct seg *next;
    uint64_t first_id, last_id; /* last_id 0: empty */
    uint64_t len;               /* logical bytes: header + records (incl. the write buffer) */
    uint64_t written;           /* disk: bytes in the file */
    uint64_t synced;            /* disk: bytes known durable */
    uint64_t nrec, nacked, nseen;
    int64_t min_ts, max_ts;
    int fd;       /* disk tail only: write fd */
    uint8_t *mem; /* memory segment: its bytes (cap = segment_bytes) */
    bool recovered;
    struct cut {
        uint64_t off, len;
    } * cuts; /* regions cut at open (already counted) */
    uint32_t ncuts;
    char name[24];
};

struct ring_ent {
    uint64_t id;
    struct seg *seg;
    uint64_t off;
    uint32_t len;
    int64_t ts;
    bool acked;
};

struct fb_store {
    pthread_mutex_t mu;
    struct fb_store_cfg cfg;
    char dir[512], name[64];
    bool mem_only; /* opened without a directory: memory segments by design */
    int dirfd;
    uint32_t max_rec;

    struct seg *head, *tail;
    uint64_t nsegs, bytes, mem_bytes;
    uint8_t *wbuf; /* pending records of the disk tail */
    size_t wlen, wcap;
    uint64_t next_id;

    struct seg *cur;                       /* read cursor */
    uint64_t cur_off, last_read_id, floor; /* ids <= floor were acked before open */
    uint8_t *rbuf;                         /* consumer's read window */
    size_t rcap, rlen;
    struct seg *rseg;
    uint64_t roff;
    int rfd;
    struct seg *rfd_seg;

    struct ring_ent *ring;
    uint64_t rmask, rlo, rhi, replay;
    /* Records dropped (store full / too old) while in flight: they were handed
     * to the sink and may still be delivered.  Counted as dropped; an ack that
     * arrives later takes them off the count again, so drops stay exact. */
    struct limbo {
        uint64_t id;
        bool age;
    } * limbo;
    uint32_t nlimbo, caplimbo;
    uint64_t acked_hi, acked_hi_saved;
    int64_t last_ack_save;

    struct seg *sync_seg; /* pinned while the producer syncs outside the lock */
    int64_t last_sync;

    bool degraded;
    int last_errno;
    int64_t read_err_since; /* a read has been failing since (mono ns; 0: reads work) */
    bool dir_busy_logged;   /* the directory holds records this run did not recover (logged) */
    bool frozen;            /* a segment could not be read at open: this run reads the directory but never
                  * changes it (no new segment, ack, lost file or deletion), see recover_segment */
    int64_t last_retry;
    int fault_ops, fault_errno;

    uint64_t live, appended, acked, dropped_full, dropped_age, corrupt_cut, recovered;
    uint64_t lost, lost_first, lost_last; /* records missing (see the top); the latest range */
    bool scan_cut;                        /* recovery: the last scanned file ended in a cut */
    struct lrange {
        uint64_t first, last;
    } * lr; /* losses already reported (DIR/lost), sorted */
    uint32_t nlr;
    struct fb_ratelimit drop_rl;
    uint64_t drop_burst;
};

static const char *sname(const struct fb_store *s) { return s->name; }

static int fault(struct fb_store *s, int op)
{
    if (s->fault_ops & op) {
        errno = s->fault_errno;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- records */
/* Whether b[0..avail) starts with a valid record with id > min_id. */
static bool rec_valid(const uint8_t *b, uint64_t avail, uint64_t min_id, uint32_t *plen, uint64_t *pid, int64_t *pts)
{
    if (avail < REC_HDR || get32(b) != REC_MAGIC) return false;
    uint32_t len = get32(b + 4);
    if (len > FILE_MAX || (uint64_t)len + REC_HDR > avail) return false;
    uint64_t id = get64(b + 8);
    if (id <= min_id || id >= ID_MAX) return false;
    uint32_t crc = fb_crc32c(fb_crc32c(0, b, 28), b + REC_HDR, len);
    if (crc != get32(b + 28)) return false;
    *plen = len;
    *pid = id;
    *pts = (int64_t)get64(b + 16);
    return true;
}

/* The offset of the next valid record in b[from..n), or n. */
static uint64_t resync(const uint8_t *b, uint64_t n, uint64_t from, uint64_t min_id)
{
    uint8_t m[4];
    put32(m, REC_MAGIC);
    for (uint64_t o = from; o + REC_HDR <= n; o++) {
        const uint8_t *q = memchr(b + o, m[0], n - o - REC_HDR + 1);
        if (!q) break;
        o = (uint64_t)(q - b);
        uint32_t l;
        uint64_t id;
        int64_t ts;
        if (memcmp(q, m, 4) == 0 && rec_valid(q, n - o, min_id, &l, &id, &ts)) return o;
    }
    return n;
}

static void rec_fill_hdr(uint8_t *h, const void *p, uint32_t len, uint64_t id, int64_t ts)
{
    put32(h, REC_MAGIC);
    put32(h + 4, len);
    put64(h + 8, id);
    put64(h + 16, (uint64_t)ts);
    put32(h + 24, 0);
    put32(h + 28, fb_crc32c(fb_crc32c(0, h, 28), p, len));
}

/* ------------------------------------------------------------- small files */
/* Writes DIR/name atomically: name.tmp, optional fdatasync, rename, dir fsync. */
static int small_file_write(int dirfd, const char *name, const uint8_t *b, size_t n, bool sync)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int fd = SYS->openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    ssize_t w = SYS->write(fd, b, n);
    int e = w == (ssize_t)n ? 0 : (w < 0 ? errno : ENOSPC);
    if (!e && sync && SYS->fdatasync(fd) != 0) e = errno;
    close(fd);
    if (!e && SYS->renameat(dirfd, tmp, dirfd, name) != 0) e = errno;
    if (e) {
        SYS->unlinkat(dirfd, tmp, 0);
        errno = e;
        return -1;
    }
    if (sync) SYS->fsync(dirfd);
    return 0;
}

/* Reads a 24-byte small file: 0 ok, 1 missing, -1 corrupt/unreadable. */
static int small_file_read(int dirfd, const char *name, const char *magic, uint64_t *v)
{
    uint8_t b[25];
    ssize_t n = -1;
    for (int tries = 0; n < 0 && tries < 3; tries++) { /* an I/O error is tried again twice */
        int fd = SYS->openat(dirfd, name, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0 && errno == ENOENT) return 1;
        if (fd < 0) continue;
        n = SYS->read(fd, b, sizeof b);
        close(fd);
    }
    if (n != 24 || memcmp(b, magic, 4) != 0 || get32(b + 4) != 1 || get32(b + 16) != fb_crc32c(0, b, 16)) return -1;
    *v = get64(b + 8);
    return 0;
}

static void small_file_fill(uint8_t b[24], const char *magic, uint64_t v)
{
    memcpy(b, magic, 4);
    put32(b + 4, 1);
    put64(b + 8, v);
    put32(b + 16, fb_crc32c(0, b, 16));
    put32(b + 20, 0);
}

static void ack_save(struct fb_store *s, bool force)
{
    if (s->dirfd < 0 || s->frozen || s->acked_hi == s->acked_hi_saved) return;
    int64_t now = fb_mono_ns();
    if (!force && now - s->last_ack_save < s->cfg.ack_interval_ns) return;
    uint8_t b[24];
    small_file_fill(b, ACK_MAGIC, s->acked_hi);
    s->last_ack_save = now;
    if (small_file_write(s->dirfd, "ack", b, sizeof b, false) == 0)
        s->acked_hi_saved = s->acked_hi;
    else
        fb_debug(sname(s), NULL, "store: writing the ack file failed: %s", strerror(errno));
}

/* --------------------------------------------------------------- segments */
static void seg_name(char *buf, uint64_t first_id) { snprintf(buf, 24, "%016" PRIx64 ".seg", first_id); }

static struct seg *seg_new(uint64_t first_id)
{
    struct seg *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->first_id = first_id;
    g->fd = -1;
    g->min_ts = INT64_MAX;
    g->max_ts = INT64_MIN;
    seg_name(g->name, first_id);
    return g;
}

static void seg_link(struct fb_store *s, struct seg *g)
{
    if (s->tail)
        s->tail->next = g;
    else
        s->head = g;
    s->tail = g;
    s->nsegs++;
    s->bytes += g->len;
    if (g->mem) s->mem_bytes += g->len;
}

/* Removes the head segment from the list and from disk.  Its ids are done
 * with (acked, dropped or lost): the head moves past them and, for a disk
 * segment, is persisted first, so that a later open does not take the
 * missing file for a lost one. */
static void seg_unlink_head(struct fb_store *s)
{
    struct seg *g = s->head;
    if (g->nrec && g->last_id > s->acked_hi) s->acked_hi = g->last_id;
    if (!g->mem && s->dirfd >= 0 && s->acked_hi_saved < s->acked_hi) ack_save(s, true);
    s->head = g->next;
    if (s->tail == g) s->tail = NULL;
    s->nsegs--;
    s->bytes -= g->len;
    if (g->mem) s->mem_bytes -= g->len;
    if (s->cur == g) {
        s->cur = g->next;
        s->cur_off = SEG_HDR;
    }
    if (s->rseg == g) s->rseg = NULL, s->rlen = 0;
    if (s->rfd_seg == g) {
        close(s->rfd);
        s->rfd = -1;
        s->rfd_seg = NULL;
    }
    if (g->fd >= 0) close(g->fd);
    if (g->mem)
        free(g->mem);
    else if (s->dirfd >= 0 && !s->frozen && SYS->unlinkat(s->dirfd, g->name, 0) != 0 && errno != ENOENT)
        fb_warn(sname(s), NULL, "store: cannot delete %s/%s: %s", s->dir, g->name, strerror(errno));
    free(g->cuts);
    free(g);
}

/* DIR/lost: the id ranges already reported as lost, so that a loss found at
 * open is reported once, not again at every start until the head passes it.
 * "FBLS", u32 version 1, u32 count, count x (u64 first, u64 last), u32
 * CRC-32C of all that.  Ranges at or below the durable head are dropped. */
#define LOST_MAGIC "FBLS"
#define LOST_MAX 1024u

static void lost_load(struct fb_store *s)
{
    int fd = SYS->openat(s->dirfd, "lost", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return;
    uint8_t b[12 + LOST_MAX * 16 + 4];
    ssize_t n = SYS->read(fd, b, sizeof b);
    close(fd);
    if (n < 16 || memcmp(b, LOST_MAGIC, 4) != 0 || get32(b + 4) != 1) return;
    uint32_t cnt = get32(b + 8);
    if (cnt > LOST_MAX || (size_t)n != 12 + (size_t)cnt * 16 + 4 ||
        get32(b + 12 + cnt * 16) != fb_crc32c(0, b, 12 + (size_t)cnt * 16))
        return;
    s->lr = malloc((cnt ? cnt : 1) * sizeof *s->lr);
    if (!s->lr) return;
    for (uint32_t i = 0; i < cnt; i++) {
        uint64_t f = get64(b + 12 + i * 16), l = get64(b + 20 + i * 16);
        if (f <= l && l > s->floor && (!s->nlr || f > s->lr[s->nlr - 1].last)) s->lr[s->nlr++] = (struct lrange){f, l};
    }
}

static void lost_save(struct fb_store *s)
{
    if (s->dirfd < 0 || s->frozen) return;
    uint8_t b[12 + LOST_MAX * 16 + 4];
    uint32_t cnt = s->nlr;
    memcpy(b, LOST_MAGIC, 4);
    put32(b + 4, 1);
    put32(b + 8, cnt);
    for (uint32_t i = 0; i < cnt; i++) {
        put64(b + 12 + i * 16, s->lr[i].first);
        put64(b + 20 + i * 16, s->lr[i].last);
    }
    put32(b + 12 + cnt * 16, fb_crc32c(0, b, 12 + (size_t)cnt * 16));
    if (small_file_write(s->dirfd, "lost", b, 12 + (size_t)cnt * 16 + 4, false) != 0)
        fb_debug(sname(s), NULL, "store: writing the lost file failed: %s", strerror(errno));
}

/* Adds [f, l] to the sorted, disjoint list (merging); drops the oldest past LOST_MAX. */
static void lost_remember(struct fb_store *s, uint64_t f, uint64_t l)
{
    struct lrange *v = realloc(s->lr, (s->nlr + 1) * sizeof *v);
    if (!v) return;
    s->lr = v;
    uint32_t i = 0, k = 0;
    struct lrange *out = v; /* in place: merged ranges never outnumber the inputs */
    struct lrange add = {f, l};
    bool placed = false;
    uint32_t n = s->nlr;
    struct lrange *tmp = malloc((n + 1) * sizeof *tmp);
    if (!tmp) return;
    for (i = 0; i < n; i++) {
        if (!placed && add.first < v[i].first) tmp[k++] = add, placed = true;
        tmp[k++] = v[i];
    }
    if (!placed) tmp[k++] = add;
    uint32_t m = 0;
    for (i = 0; i < k; i++) {
        if (m && tmp[i].first <= out[m - 1].last + 1) {
            if (tmp[i].last > out[m - 1].last) out[m - 1].last = tmp[i].last;
        } else {
            out[m++] = tmp[i];
        }
    }
    free(tmp);
    if (m > LOST_MAX) {
        memmove(out, out + (m - LOST_MAX), LOST_MAX * sizeof *out);
        m = LOST_MAX;
    }
    s->nlr = m;
}

/* Records [first, last] are gone for good: each part not reported before
 * (by this or an earlier run) is logged and counted. */
static void lost_report(struct fb_store *s, uint64_t first, uint64_t last, const char *why, const char *file)
{
    uint64_t cur = first;
    bool any = false;
    for (uint32_t i = 0; i <= s->nlr && cur <= last; i++) {
        uint64_t stop = i < s->nlr ? s->lr[i].first : UINT64_MAX; /* report [cur, stop-1] ∩ [.., last] */
        if (i < s->nlr && s->lr[i].last < cur) continue;
        if (stop > cur) {
            uint64_t e = stop - 1 < last ? stop - 1 : last;
            uint64_t n = e - cur + 1;
            s->lost += n;
            s->lost_first = cur;
            s->lost_last = e;
            any = true;
            fb_warn(sname(s), NULL, "store %s: %" PRIu64 " records lost (ids %" PRIu64 "..%" PRIu64 "): %s %s/%s",
                    s->dir, n, cur, e, why, s->dir, file);
        }
        if (i < s->nlr)
            cur = s->lr[i].last == UINT64_MAX ? UINT64_MAX : s->lr[i].last + 1;
        else
            break;
    }
    if (any) {
        lost_remember(s, first, last);
        lost_save(s);
    }
}

/* Deletes leading segments that are read and fully acked. */
static void seg_gc(struct fb_store *s)
{
    while (s->head && s->head != s->tail && s->head != s->cur && s->head != s->sync_seg &&
           (s->rlo == s->rhi || s->ring[s->rlo & s->rmask].seg != s->head))
        seg_unlink_head(s);
}

static void drop_log(struct fb_store *s, const char *why, uint64_t n)
{
    s->drop_burst += n;
    if (fb_ratelimit_ok(&s->drop_rl, fb_mono_ns())) {
        fb_warn(sname(s), NULL, "store: dropped %" PRIu64 " records (%s); totals: full %" PRIu64 ", age %" PRIu64,
                s->drop_burst, why, s->dropped_full, s->dropped_age);
        s->drop_burst = 0;
    }
}

/* Drops the head segment (not the tail): its un-acked records are lost. */
static void seg_drop_head(struct fb_store *s, bool age)
{
    struct seg *g = s->head;
    uint64_t d = g->nrec - g->nacked;
    while (s->rlo < s->rhi && s->ring[s->rlo & s->rmask].seg == g) {
        struct ring_ent *e = &s->ring[s->rlo & s->rmask];
        if (!e->acked && s->rlo < s->replay) { /* handed out, not yet acked */
            if (s->nlimbo == s->caplimbo) {
                uint32_t nc = s->caplimbo ? s->caplimbo * 2 : 64;
                struct limbo *l = realloc(s->limbo, nc * sizeof *l);
                if (l) {
                    s->limbo = l;
                    s->caplimbo = nc;
                }
            }
            if (s->nlimbo < s->caplimbo) s->limbo[s->nlimbo++] = (struct limbo){e->id, age};
        }
        s->rlo++;
    }
    if (s->replay < s->rlo) s->replay = s->rlo;
    if (g->last_id > s->acked_hi) s->acked_hi = g->last_id;
    s->live -= d;
    if (age)
        s->dropped_age += d;
    else
        s->dropped_full += d;
    seg_unlink_head(s);
    if (d) drop_log(s, age ? "older than max_age" : "store full", d);
}

/* Pops the contiguous acked prefix of the in-flight ring; true if it moved. */
static bool ring_pop(struct fb_store *s)
{
    bool moved = false;
    while (s->rlo < s->rhi && s->ring[s->rlo & s->rmask].acked) {
        s->acked_hi = s->ring[s->rlo++ & s->rmask].id;
        moved = true;
    }
    if (s->replay < s->rlo) s->replay = s->rlo;
    return moved;
}

static void age_gc(struct fb_store *s)
{
    if (s->cfg.max_age_ns <= 0) return;
    int64_t cutoff = fb_now_ns() - s->cfg.max_age_ns;
    while (s->head && s->head != s->tail && s->head != s->sync_seg && s->head->max_ts < cutoff) seg_drop_head(s, true);
}

static void degrade(struct fb_store *s, int e, const char *what)
{
    s->last_errno = e;
    s->last_retry = fb_mono_ns();
    if (!s->degraded)
        fb_error(sname(s), NULL, "store %s: %s failed: %s; continuing in memory (not crash-safe)", s->dir, what,
                 strerror(e));
    s->degraded = true;
}

static bool is_seg_name(const char *n);

/* Whether a directory the store could not recover at open holds nothing of
 * a store (no segment or ack file): only then may this run write into it. */
static bool dir_is_free(int dfd)
{
    DIR *d = fdopendir(dup(dfd));
    if (!d) return false;
    bool free_ = true;
    struct dirent *de;
    while (free_ && (de = readdir(d))) free_ = !is_seg_name(de->d_name) && strcmp(de->d_name, "ack") != 0;
    closedir(d);
    return free_;
}

/* A new disk segment file with its header, or NULL (errno set). */
static struct seg *seg_create_disk(struct fb_store *s, uint64_t first_id)
{
    if (s->mem_only) {
        errno = EROFS;
        return NULL;
    }
    if (s->frozen) {
        errno = EBUSY;
        return NULL;
    }
    if (s->dirfd < 0) {
        if (fault(s, FB_STORE_FAULT_OPEN)) return NULL;
        if (SYS->mkdir(s->dir, 0750) != 0 && errno != EEXIST) return NULL;
        int dfd = SYS->openat(AT_FDCWD, s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (dfd < 0) return NULL;
        if (!dir_is_free(dfd)) {
            /* records this run could not recover at open: writing beside them
             * (ids from 1, O_TRUNC on a file of the same name, an ack file
             * above their ids) would destroy them; they wait for a restart */
            if (!s->dir_busy_logged)
                fb_warn(sname(s), NULL,
                        "store %s: the directory can be used again, but holds records this run could not "
                        "read at start-up; they are left for the next start, this run stays in memory",
                        s->dir);
            s->dir_busy_logged = true;
            close(dfd);
            errno = EBUSY;
            return NULL;
        }
        s->dirfd = dfd;
    }
    struct seg *g = seg_new(first_id);
    if (!g) return NULL;
    uint8_t h[SEG_HDR];
    memcpy(h, SEG_MAGIC, 4);
    put16(h + 4, SEG_VERSION);
    put16(h + 6, SEG_HDR);
    put64(h + 8, first_id);
    int e = 0;
    if (fault(s, FB_STORE_FAULT_OPEN))
        e = errno;
    else {
        g->fd = SYS->openat(s->dirfd, g->name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (g->fd < 0) e = errno;
    }
    if (!e) {
        ssize_t w = fault(s, FB_STORE_FAULT_WRITE) ? -1 : SYS->pwrite(g->fd, h, SEG_HDR, 0);
        if (w != SEG_HDR) e = w < 0 ? errno : ENOSPC;
    }
    if (!e && s->cfg.sync != FB_SYNC_OS && SYS->fsync(s->dirfd) != 0) e = errno;
    if (e) {
        if (g->fd >= 0) {
            close(g->fd);
            SYS->unlinkat(s->dirfd, g->name, 0);
        }
        free(g);
        errno = e;
        return NULL;
    }
    g->len = g->written = SEG_HDR;
    return g;
}

static struct seg *seg_create_mem(struct fb_store *s, uint64_t first_id)
{
    struct seg *g = seg_new(first_id);
    if (!g) return NULL;
    g->mem = malloc(s->cfg.segment_bytes);
    if (!g->mem) {
        free(g);
        return NULL;
    }
    memcpy(g->mem, SEG_MAGIC, 4);
    put16(g->mem + 4, SEG_VERSION);
    put16(g->mem + 6, SEG_HDR);
    put64(g->mem + 8, first_id);
    g->len = SEG_HDR;
    return g;
}

static int wbuf_write(struct fb_store *s);

/* Closes the disk tail's write fd (unless the producer is syncing it). */
static void tail_freeze(struct fb_store *s)
{
    struct seg *t = s->tail;
    if (t && t->fd >= 0 && t != s->sync_seg) {
        close(t->fd);
        t->fd = -1;
    }
}

/* Starts a new tail: on disk unless degraded (and not yet time to retry). */
static int tail_new(struct fb_store *s)
{
    struct seg *g = NULL;
    if (s->tail && !s->tail->mem && s->wlen) wbuf_write(s);
    int64_t now = fb_mono_ns();
    if (!s->degraded || now - s->last_retry >= s->cfg.disk_retry_ns) {
        g = seg_create_disk(s, s->next_id);
        if (g && s->degraded) {
            fb_info(sname(s), NULL, "store %s: the disk works again; leaving memory mode", s->dir);
            s->degraded = false;
        } else if (!g) {
            degrade(s, errno, "creating a segment");
        }
    }
    if (!g) g = seg_create_mem(s, s->next_id);
    if (!g) return FB_ENOMEM;
    tail_freeze(s);
    seg_link(s, g);
    return 0;
}

/* Writes the write buffer to the disk tail.  On failure the tail is cut at
 * its last whole record and the rest moves to a memory tail. */
static int wbuf_write(struct fb_store *s)
{
    struct seg *t = s->tail;
    if (!s->wlen || !t || t->mem) return 0;
    size_t done = 0;
    int e = 0;
    while (done < s->wlen) {
        ssize_t n = fault(s, FB_STORE_FAULT_WRITE)
                        ? -1
                        : SYS->pwrite(t->fd, s->wbuf + done, s->wlen - done, (off_t)(t->written + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            e = n < 0 ? errno : ENOSPC;
            break;
        }
        done += (size_t)n;
    }
    if (!e) {
        t->written += done;
        s->wlen = 0;
        return 0;
    }
    /* keep the whole records that reached the file */
    size_t keep = 0, nkeep = 0;
    uint64_t last_kept = get64(s->wbuf + 8) - 1;
    while (keep + REC_HDR <= s->wlen) {
        size_t rl = REC_HDR + get32(s->wbuf + keep + 4);
        if (keep + rl > done) break;
        last_kept = get64(s->wbuf + keep + 8);
        keep += rl;
        nkeep++;
    }
    uint64_t nbuf = 0;
    for (size_t o = 0; o < s->wlen; o += REC_HDR + get32(s->wbuf + o + 4)) nbuf++;
    t->written += keep;
    if (SYS->ftruncate(t->fd, (off_t)t->written) != 0) { /* the torn bytes are cut at the next open */
    }
    uint64_t moved_recs = nbuf - nkeep, moved_bytes = s->wlen - keep;
    t->nrec -= moved_recs;
    t->len -= moved_bytes;
    s->bytes -= moved_bytes;
    t->last_id = t->nrec ? last_kept : 0;
    degrade(s, e, "writing a segment");
    s->last_retry = fb_mono_ns();
    struct seg *m = seg_create_mem(s, s->wlen > keep ? get64(s->wbuf + keep + 8) : s->next_id);
    if (!m) { /* out of memory too: these records are lost, counted */
        s->live -= moved_recs;
        s->dropped_full += moved_recs;
        s->wlen = 0;
        return FB_EIO;
    }
    for (size_t o = keep; o < s->wlen; o += REC_HDR + get32(s->wbuf + o + 4)) {
        int64_t ts = (int64_t)get64(s->wbuf + o + 16);
        m->last_id = get64(s->wbuf + o + 8);
        if (ts < m->min_ts) m->min_ts = ts;
        if (ts > m->max_ts) m->max_ts = ts;
        m->nrec++;
    }
    memcpy(m->mem + SEG_HDR, s->wbuf + keep, moved_bytes);
    m->len += moved_bytes;
    s->wlen = 0;
    tail_freeze(s);
    seg_link(s, m);
    return FB_EIO;
}

/* ------------------------------------------------------------------- open */
static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool is_seg_name(const char *n)
{
    if (strlen(n) != 20 || strcmp(n + 16, ".seg") != 0) return false;
    for (int i = 0; i < 16; i++)
        if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f'))) return false;
    return true;
}

static bool cut_add(struct seg *g, uint64_t off, uint64_t len)
{
    if ((g->ncuts & (g->ncuts - 1)) == 0) { /* 0, 1, 2, 4, …: grow */
        struct cut *c = realloc(g->cuts, (g->ncuts ? g->ncuts * 2 : 1) * sizeof *c);
        if (!c) return false;
        g->cuts = c;
    }
    g->cuts[g->ncuts++] = (struct cut){off, len};
    return true;
}

/* A segment file cannot be read at open (after retries): its records are
 * neither delivered nor lost — they wait for a start with a working disk.
 * Until then this run must not change the directory: new ids could collide
 * with the unread ones, an ack file above them or the deletion of a
 * neighbour would make the next start take them for acked or lost.  New
 * records go to memory (degraded). */
static void freeze(struct fb_store *s, const char *name, int e)
{
    if (!s->frozen)
        fb_error(sname(s), NULL,
                 "store %s/%s: cannot read it: %s; its records are left for the next start, and this run "
                 "keeps new records in memory without changing the directory",
                 s->dir, name, strerror(e));
    s->frozen = true;
}

/* Scans one segment file; links it if it holds un-acked records.  *prev_id
 * is the last valid id before it; *known whether ids up to there are
 * accounted for (the ack file was read, or a record was seen). */
static void recover_segment(struct fb_store *s, const char *name, uint64_t *prev_id, bool *known)
{
    /* a read error is tried again twice: a disk that hiccups at start-up must
     * not turn a whole segment into lost records */
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 3; tries++) {
        fd = SYS->openat(s->dirfd, name, O_RDWR | O_CLOEXEC, 0);
        if (fd < 0) fd = SYS->openat(s->dirfd, name, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0 && errno == ENOENT) break;
    }
    if (fd < 0) {
        if (errno != ENOENT) {
            freeze(s, name, errno);
            *known = false; /* the ids after it are not lost */
            return;
        }
        fb_warn(sname(s), NULL, "store: cannot open %s/%s: %s; skipped", s->dir, name, strerror(errno));
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size > FILE_MAX) {
        fb_warn(sname(s), NULL, "store: %s/%s: not a segment (size); skipped", s->dir, name);
        close(fd);
        return;
    }
    uint64_t n = (uint64_t)st.st_size;
    uint8_t *b = malloc(n ? n : 1);
    uint64_t got = 0;
    for (int fails = 0; b && got < n;) {
        ssize_t r = SYS->pread(fd, b + got, n - got, (off_t)got);
        if (r < 0 && (errno == EINTR || ++fails < 3)) continue;
        if (r <= 0) break;
        got += (uint64_t)r;
    }
    if (!b || got < n) {
        int e = b ? errno : ENOMEM;
        free(b);
        close(fd);
        freeze(s, name, e);
        *known = false;
        return;
    }
    if (n < SEG_HDR) { /* crashed while creating it */
        if (n) {
            fb_warn(sname(s), NULL, "store: %s/%s: torn header (%" PRIu64 " bytes); cut", s->dir, name, n);
            s->corrupt_cut += n;
        }
        free(b);
        close(fd);
        SYS->unlinkat(s->dirfd, name, 0);
        return;
    }
    if (memcmp(b, SEG_MAGIC, 4) != 0 || get16(b + 6) != SEG_HDR) {
        fb_warn(sname(s), NULL, "store: %s/%s: bad segment header; scanning for records", s->dir, name);
    } else if (get16(b + 4) != SEG_VERSION) {
        fb_error(sname(s), NULL, "store: %s/%s: unsupported version %u; left alone", s->dir, name, get16(b + 4));
        free(b);
        close(fd);
        return;
    }
    struct seg *g = seg_new(0);
    if (!g) {
        free(b);
        close(fd);
        return;
    }
    snprintf(g->name, sizeof g->name, "%s", name);
    uint64_t name_id = strtoull(name, NULL, 16);
    uint64_t off = SEG_HDR, end = SEG_HDR;
    bool cut_before = s->scan_cut; /* the previous file ended in a cut */
    while (off < n) {
        uint32_t len;
        uint64_t id;
        int64_t ts;
        if (rec_valid(b + off, n - off, *prev_id, &len, &id, &ts)) {
            uint64_t exp = (*prev_id > s->floor ? *prev_id : s->floor) + 1;
            if (*known && id > exp) {
                if (!g->nrec && !cut_before && id == name_id) /* the ids before this file's first */
                    lost_report(s, exp, id - 1,
                                "no segment file holds them (deleted, or held in memory when "
                                "the process died); the next file is",
                                name);
                else
                    lost_report(s, exp, id - 1, "cut as corrupt in", name);
            }
            *known = true;
            cut_before = false;
            if (!g->nrec) g->first_id = id;
            g->last_id = id;
            g->nrec++;
            if (id <= s->floor) g->nacked++;
            if (ts < g->min_ts) g->min_ts = ts;
            if (ts > g->max_ts) g->max_ts = ts;
            *prev_id = id;
            off += REC_HDR + len;
            end = off;
            continue;
        }
        uint64_t nx = resync(b, n, off + 1, *prev_id);
        s->corrupt_cut += nx - off;
        cut_add(g, off, nx - off); /* the reader skips it silently (if it is not truncated below) */
        cut_before = true;
        if (nx < n)
            fb_warn(sname(s), NULL,
                    "store: %s/%s: corrupt record at offset %" PRIu64 "; cut %" PRIu64
                    " bytes, resuming at offset %" PRIu64,
                    s->dir, name, off, nx - off, nx);
        else
            fb_warn(sname(s), NULL, "store: %s/%s: torn or corrupt tail at offset %" PRIu64 "; cut %" PRIu64 " bytes",
                    s->dir, name, off, nx - off);
        off = nx;
    }
    free(b);
    s->scan_cut = cut_before;
    if (end < n && SYS->ftruncate(fd, (off_t)end) != 0) end = n; /* read-only: the reader skips it again */
    close(fd);
    if (g->nrec == 0 || g->last_id <= s->floor) {
        SYS->unlinkat(s->dirfd, name, 0);
        free(g->cuts);
        free(g);
        return;
    }
    g->len = g->written = g->synced = end;
    g->recovered = true;
    s->live += g->nrec - g->nacked;
    s->recovered += g->nrec - g->nacked;
    seg_link(s, g);
}

static int recover(struct fb_store *s)
{
    uint64_t floor = 0;
    int r = small_file_read(s->dirfd, "ack", ACK_MAGIC, &floor);
    if (r < 0 || floor >= ID_MAX) {
        fb_warn(sname(s), NULL, "store %s: ack file unreadable; delivering everything stored again", s->dir);
        floor = 0;
    }
    s->floor = s->acked_hi = s->acked_hi_saved = floor;
    bool known = r == 0; /* ids up to the head are accounted for */
    lost_load(s);
    DIR *d = fdopendir(dup(s->dirfd));
    if (!d) return -1;
    char **names = NULL;
    size_t nn = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".tmp") == 0) {
            SYS->unlinkat(s->dirfd, de->d_name, 0);
            continue;
        }
        if (!is_seg_name(de->d_name)) continue;
        if (nn == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(names, cap * sizeof *nv);
            if (!nv) break;
            names = nv;
        }
        if (!(names[nn] = strdup(de->d_name))) break;
        nn++;
    }
    closedir(d);
    if (nn) qsort(names, nn, sizeof *names, cmp_names);
    uint64_t prev = 0;
    if (r == 1 && nn)
        fb_warn(sname(s), NULL,
                "store %s: the ack file is missing; records lost before the first segment "
                "cannot be detected",
                s->dir);
    for (size_t i = 0; i < nn; i++) {
        recover_segment(s, names[i], &prev, &known);
        free(names[i]);
    }
    free(names);
    if (r != 0 && !s->frozen) { /* (re)create it, so that the next open knows the head */
        uint8_t b[24];
        small_file_fill(b, ACK_MAGIC, floor);
        if (small_file_write(s->dirfd, "ack", b, sizeof b, false) != 0)
            fb_debug(sname(s), NULL, "store: writing the ack file failed: %s", strerror(errno));
    }
    s->next_id = (prev > floor ? prev : floor) + 1;
    s->last_read_id = 0;
    if (s->recovered)
        fb_info(sname(s), NULL, "store %s: %" PRIu64 " records pending in %" PRIu64 " segments (%" PRIu64 " bytes)",
                s->dir, s->recovered, s->nsegs, s->bytes);
    return 0;
}

static struct fb_store *open_impl(const struct fb_store_cfg *c, bool mem_only, struct fb_err *err);

/* Creates (one level) and opens the store's directory; an error is tried
 * again twice, so that one hiccup at start-up does not cost the run its disk
 * (a directory not recovered at open is never written into). */
static int open_dir(const char *dir)
{
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 3; tries++) {
        if (SYS->mkdir(dir, 0750) != 0 && errno != EEXIST) continue;
        fd = SYS->openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    }
    return fd;
}

/* No directory: the same queue in memory segments only — bounded by
 * max_bytes, oldest dropped, lost on a crash.  Used when no buffer: is
 * configured, so a broker that is late at start-up or away for a moment
 * costs no data. */
static struct fb_store *open_memory(const struct fb_store_cfg *c, struct fb_err *err)
{
    struct fb_store_cfg m = *c;
    m.dir = "(memory)";
    return open_impl(&m, true, err);
}

struct fb_store *fb_store_open(const struct fb_store_cfg *c, struct fb_err *err)
{
    if (err) err->code = 0, err->msg[0] = 0;
    if (c && !c->dir) return open_memory(c, err);
    return open_impl(c, false, err);
}

static struct fb_store *open_impl(const struct fb_store_cfg *c, bool mem_only, struct fb_err *err)
{
    if (!c || !c->dir || !c->dir[0] || strlen(c->dir) >= sizeof((struct fb_store *)0)->dir) {
        fb_err_set(err, FB_EINVAL, "store: a directory is required (at most 511 bytes)");
        return NULL;
    }
    if (c->sync < FB_SYNC_BATCH || c->sync > FB_SYNC_OS || c->full_policy < FB_FULL_DROP_OLDEST ||
        c->full_policy > FB_FULL_BLOCK || c->max_age_ns < 0) {
        fb_err_set(err, FB_EINVAL, "store %s: bad sync or full policy", c->dir);
        return NULL;
    }
    struct fb_store *s = calloc(1, sizeof *s);
    if (!s) {
        fb_err_set(err, FB_ENOMEM, "store: out of memory");
        return NULL;
    }
    s->cfg = *c;
    snprintf(s->dir, sizeof s->dir, "%s", c->dir);
    snprintf(s->name, sizeof s->name, "%s", c->name ? c->name : c->dir);
    s->cfg.dir = s->dir;
    s->cfg.name = s->name;
    if (!s->cfg.max_bytes) s->cfg.max_bytes = 64u << 20;
    if (s->cfg.max_bytes < 16384) s->cfg.max_bytes = 16384;
    if (!s->cfg.segment_bytes) s->cfg.segment_bytes = 8u << 20;
    if (s->cfg.segment_bytes > s->cfg.max_bytes / 4) s->cfg.segment_bytes = s->cfg.max_bytes / 4;
    if (s->cfg.segment_bytes < 4096) s->cfg.segment_bytes = 4096;
    if (!s->cfg.sync_interval_ns) s->cfg.sync_interval_ns = 1000000000;
    if (!s->cfg.max_inflight) s->cfg.max_inflight = 65536;
    if (!s->cfg.ack_interval_ns) s->cfg.ack_interval_ns = 1000000000;
    if (!s->cfg.disk_retry_ns) s->cfg.disk_retry_ns = 10000000000LL;
    s->wcap = s->cfg.segment_bytes - SEG_HDR;
    if (s->wcap > WBUF_MAX) s->wcap = WBUF_MAX;
    if (s->cfg.max_record && s->wcap < (uint64_t)s->cfg.max_record + REC_HDR) {
        /* one record must fit the write buffer and a segment */
        s->wcap = (uint64_t)s->cfg.max_record + REC_HDR;
        if (s->cfg.segment_bytes < s->wcap + SEG_HDR) s->cfg.segment_bytes = s->wcap + SEG_HDR;
    }
    s->max_rec = (uint32_t)(s->wcap - REC_HDR);
    /* a window never spans two segments: more than a segment is never filled
     * (a bigger record grows it), so small segments get a small window */
    s->rcap = s->cfg.segment_bytes < RBUF_MIN ? s->cfg.segment_bytes : RBUF_MIN;
    uint64_t rc = 1;
    while (rc < s->cfg.max_inflight) rc <<= 1;
    s->rmask = rc - 1;
    s->wbuf = malloc(s->wcap);
    s->rbuf = malloc(s->rcap);
    s->ring = malloc(rc * sizeof *s->ring);
    s->dirfd = s->rfd = -1;
    s->drop_rl.interval_ns = 10000000000LL;
    if (!s->wbuf || !s->rbuf || !s->ring || pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s->wbuf), free(s->rbuf), free(s->ring), free(s);
        fb_err_set(err, FB_ENOMEM, "store: out of memory");
        return NULL;
    }
    s->next_id = 1;
    int oe = 0;
    s->mem_only = mem_only;
    if (mem_only) {
        /* never touch the disk: memory segments from the start, no retries */
        s->degraded = true;
        s->last_retry = INT64_MAX / 2;
        s->cfg.disk_retry_ns = INT64_MAX / 4;
    } else if ((s->dirfd = open_dir(s->dir)) < 0) {
        oe = errno;
        fb_err_set(err, FB_EIO, "store %s: cannot open the directory: %s; running in memory", s->dir, strerror(oe));
    } else if (recover(s) != 0) {
        oe = errno;
        fb_err_set(err, FB_EIO, "store %s: cannot list the directory: %s; running in memory", s->dir, strerror(oe));
        close(s->dirfd); /* unrecovered: never written into (see seg_create_disk) */
        s->dirfd = -1;
    }
    if (s->dirfd < 0 && !mem_only) degrade(s, oe ? oe : EIO, "opening the directory");
    if (!mem_only) s->last_retry = fb_mono_ns() - s->cfg.disk_retry_ns; /* try the disk for the first tail */
    if (tail_new(s) != 0) {
        fb_store_close(s);
        fb_err_set(err, FB_ENOMEM, "store: out of memory");
        return NULL;
    }
    if (s->degraded && !mem_only && err && !err->code)
        fb_err_set(err, FB_EIO, "store %s: cannot write a segment: %s; running in memory", s->dir,
                   strerror(s->last_errno));
    s->cur = s->head;
    s->cur_off = SEG_HDR;
    if (s->cfg.full_policy == FB_FULL_DROP_OLDEST)
        while (s->bytes > s->cfg.max_bytes && s->head != s->tail) seg_drop_head(s, false);
    age_gc(s);
    s->last_sync = fb_mono_ns();
    return s;
}

uint32_t fb_store_max_record(const struct fb_store *s) { return s ? s->max_rec : 0; }

uint64_t fb_store_live(struct fb_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->live;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ----------------------------------------------------------------- append */
int fb_store_append(struct fb_store *s, const void *p, uint32_t len, int64_t ts, uint64_t *id)
{
    if (!s || (!p && len)) return FB_EINVAL;
    if (len > s->max_rec) return FB_ERANGE;
    uint64_t rl = REC_HDR + (uint64_t)len;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    struct seg *t = s->tail;
    for (int tries = 0; tries < 3 && t->nrec &&
                        (t->len + rl > s->cfg.segment_bytes ||
                         (s->degraded && t->mem && fb_mono_ns() - s->last_retry >= s->cfg.disk_retry_ns));
         tries++) {
        if (!t->mem) {
            wbuf_write(s);
            t = s->tail;
        }
        if (t->nrec) {
            if (!t->mem && s->cfg.sync != FB_SYNC_OS && t->synced < t->written && t != s->sync_seg) {
                if (fault(s, FB_STORE_FAULT_SYNC) || SYS->fdatasync(t->fd) != 0)
                    degrade(s, errno, "fdatasync");
                else
                    t->synced = t->written;
            }
            if ((rc = tail_new(s)) != 0) goto out;
            age_gc(s);
        }
        t = s->tail;
    }
    while (s->bytes + rl > s->cfg.max_bytes && s->head != s->tail) {
        if (s->cfg.full_policy == FB_FULL_BLOCK) {
            rc = FB_EAGAIN;
            goto out;
        }
        if (s->head == s->sync_seg) { /* pinned for a moment by the producer: cannot happen here */
            rc = FB_EAGAIN;
            goto out;
        }
        seg_drop_head(s, false);
    }
    if (s->bytes + rl > s->cfg.max_bytes) {
        rc = s->cfg.full_policy == FB_FULL_BLOCK ? FB_EAGAIN : FB_ERANGE;
        goto out;
    }
    /* a bound in records (the memory queue's `queue:`): the oldest segments
     * go; a tail that holds them all is closed first so that one can go */
    while (s->cfg.max_records && s->live >= s->cfg.max_records && s->cfg.full_policy == FB_FULL_DROP_OLDEST) {
        if (s->head == s->tail) {
            if (!t->nrec || tail_new(s) != 0) break;
            t = s->tail;
        }
        if (s->head == s->sync_seg) break;
        seg_drop_head(s, false);
    }
    uint64_t rid = s->next_id++;
    uint8_t *dst;
    if (t->mem) {
        dst = t->mem + t->len;
        s->mem_bytes += rl;
    } else {
        if (s->wlen + rl > s->wcap) {
            wbuf_write(s);
            t = s->tail;
            if (t->mem) { /* degraded just now */
                dst = t->mem + t->len;
                s->mem_bytes += rl;
                goto copy;
            }
        }
        dst = s->wbuf + s->wlen;
        s->wlen += rl;
    }
copy:
    rec_fill_hdr(dst, p, len, rid, ts);
    if (len) memcpy(dst + REC_HDR, p, len);
    if (!t->nrec) t->first_id = rid;
    t->last_id = rid;
    t->nrec++;
    t->len += rl;
    if (ts < t->min_ts) t->min_ts = ts;
    if (ts > t->max_ts) t->max_ts = ts;
    s->bytes += rl;
    s->live++;
    s->appended++;
    if (id) *id = rid;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int fb_store_flush(struct fb_store *s)
{
    if (!s) return FB_EINVAL;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->degraded && fb_mono_ns() - s->last_retry >= s->cfg.disk_retry_ns) {
        if (s->tail->nrec)
            tail_new(s);
        else
            s->last_retry = fb_mono_ns();
    }
    age_gc(s);
    seg_gc(s);
    ack_save(s, false);
    if (wbuf_write(s) != 0) rc = FB_EIO;
    struct seg *t = s->tail;
    int64_t now = fb_mono_ns();
    bool need = !t->mem && t->fd >= 0 && t->synced < t->written &&
                (s->cfg.sync == FB_SYNC_BATCH ||
                 (s->cfg.sync == FB_SYNC_INTERVAL && now - s->last_sync >= s->cfg.sync_interval_ns));
    if (need) {
        uint64_t w = t->written;
        int fd = t->fd;
        s->sync_seg = t;
        int failed = fault(s, FB_STORE_FAULT_SYNC) ? errno : 0;
        pthread_mutex_unlock(&s->mu);
        if (!failed && SYS->fdatasync(fd) != 0) failed = errno;
        pthread_mutex_lock(&s->mu);
        s->sync_seg = NULL;
        s->last_sync = now;
        if (failed) {
            degrade(s, failed, "fdatasync");
            if (s->tail == t) tail_new(s); /* stop writing where durability is unknown */
            rc = FB_EIO;
        } else if (t->synced < w) {
            t->synced = w;
        }
        if (t != s->tail && t->fd >= 0) { /* frozen while we synced */
            close(t->fd);
            t->fd = -1;
        }
        seg_gc(s);
    }
    /* accepted, but not durable: degraded, or back on disk while records
     * from the time it was not still wait in memory */
    if (s->degraded) rc = FB_EIO;
    for (struct seg *g = s->mem_bytes && !s->mem_only ? s->head : NULL; g && !rc; g = g->next)
        if (g->mem && g->nacked < g->nrec) rc = FB_EIO;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ------------------------------------------------------------------- read */
/* A read of g failed with an I/O error (not missing bytes): FB_EAGAIN, the
 * caller tries again later (a disk that hiccups loses nothing), until reads
 * have failed for READ_RETRY_NS; then FB_EIO, and the bytes are given up as
 * unreadable (cut or lost, logged and counted) so that a bad sector cannot
 * hold up delivery for ever. */
static int read_failed(struct fb_store *s, const struct seg *g, int e)
{
    int64_t now = fb_mono_ns();
    if (!s->read_err_since) {
        s->read_err_since = now;
        fb_warn(sname(s), NULL, "store %s/%s: reading failed: %s; retrying for up to %d s", s->dir, g->name,
                strerror(e), (int)(READ_RETRY_NS / 1000000000));
    }
    return now - s->read_err_since < READ_RETRY_NS ? FB_EAGAIN : FB_EIO;
}

/* Makes bytes [off, off+need) of g readable in the read window.  0, FB_EIO
 * (the bytes are not there or unreadable for good), FB_EAGAIN (a read error:
 * try again later) or FB_ENOMEM. */
static int window(struct fb_store *s, struct seg *g, uint64_t off, uint64_t need, const uint8_t **out)
{
    if (s->rseg == g && off >= s->roff && off + need <= s->roff + s->rlen) {
        *out = s->rbuf + (off - s->roff);
        return 0;
    }
    if (need > s->rcap) {
        uint8_t *nb = realloc(s->rbuf, need);
        if (!nb) return FB_ENOMEM;
        s->rbuf = nb;
        s->rcap = need;
    }
    uint64_t lim = g->mem ? g->len : (g->written < g->len ? g->written : g->len);
    if (off + need > lim) return FB_EIO;
    uint64_t n = lim - off < s->rcap ? lim - off : s->rcap;
    if (g->mem) {
        memcpy(s->rbuf, g->mem + off, n);
    } else {
        if (s->rfd_seg != g) {
            if (s->rfd >= 0) close(s->rfd);
            s->rfd_seg = NULL;
            s->rfd = SYS->openat(s->dirfd, g->name, O_RDONLY | O_CLOEXEC, 0);
            if (s->rfd < 0) return errno == ENOENT ? FB_EIO : read_failed(s, g, errno);
            s->rfd_seg = g;
        }
        uint64_t got = 0;
        while (got < n) {
            ssize_t r = SYS->pread(s->rfd, s->rbuf + got, n - got, (off_t)(off + got));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 && got < need) {
                s->rseg = NULL;
                return read_failed(s, g, errno);
            }
            if (r <= 0) break;
            got += (uint64_t)r;
        }
        if (got < need) {
            s->rseg = NULL;
            return FB_EIO;
        }
        n = got;
        if (s->read_err_since) {
            fb_info(sname(s), NULL, "store %s: reading works again", s->dir);
            s->read_err_since = 0;
        }
    }
    s->rseg = g;
    s->roff = off;
    s->rlen = n;
    *out = s->rbuf;
    return 0;
}

/* The cursor hit bad bytes at cur_off: skip to the next valid record or the
 * end of the readable part of the segment.  A region that recovery cut at
 * open is skipped silently (it was counted and logged then); every other cut
 * is counted and logged now, whatever the segment's age.  A segment whose
 * file has vanished is reported as lost records, not as corruption. */
static int cursor_resync(struct fb_store *s, struct seg *g, uint64_t lim)
{
    for (uint32_t i = 0; i < g->ncuts; i++)
        if (g->cuts[i].off == s->cur_off && g->cuts[i].len <= lim - s->cur_off) {
            s->cur_off += g->cuts[i].len;
            return 0;
        }
    if (!g->mem && s->rfd_seg != g && s->dirfd >= 0 && faccessat(s->dirfd, g->name, F_OK, 0) != 0 && errno == ENOENT) {
        uint64_t first = (s->last_read_id > s->floor ? s->last_read_id : s->floor) + 1;
        if (first < g->first_id) first = g->first_id;
        if (g->nrec && g->last_id >= first && g->nseen < g->nrec)
            lost_report(s, first, g->last_id, "segment file deleted while queued:", g->name);
        s->cur_off = lim;
        return 0;
    }
    uint64_t n = lim - s->cur_off, nx = n;
    uint8_t *b = malloc(n ? n : 1);
    if (b) {
        uint64_t got = 0;
        if (g->mem) {
            memcpy(b, g->mem + s->cur_off, n);
            got = n;
        } else {
            int wr = s->rfd_seg == g ? 0 : window(s, g, s->cur_off, 0, &(const uint8_t *){0});
            while (wr == 0 && got < n) {
                ssize_t r = SYS->pread(s->rfd, b + got, n - got, (off_t)(s->cur_off + got));
                if (r < 0 && errno == EINTR) continue;
                if (r < 0) wr = read_failed(s, g, errno);
                if (r <= 0) break;
                got += (uint64_t)r;
            }
            if (wr == FB_EAGAIN) {
                free(b);
                return FB_EAGAIN;
            }
        }
        nx = resync(b, got, 1, s->last_read_id);
        if (nx == got) nx = n;
        free(b);
    }
    s->corrupt_cut += nx;
    fb_warn(sname(s), NULL, "store: %s/%s: corrupt record at offset %" PRIu64 " while reading; cut %" PRIu64 " bytes",
            s->dir, g->name, s->cur_off, nx);
    s->cur_off += nx;
    return 0;
}

static void cursor_leave(struct fb_store *s, struct seg *g)
{
    if (g->nseen < g->nrec) { /* records lost to corruption while running */
        uint64_t lost = g->nrec - g->nseen;
        uint64_t unacked = g->nrec - g->nacked;
        if (lost > unacked) lost = unacked;
        s->live -= lost;
        g->nrec -= lost;
    }
    s->cur = g->next;
    s->cur_off = SEG_HDR;
}

int fb_store_next(struct fb_store *s, uint64_t *id, const void **p, uint32_t *len, int64_t *ts)
{
    if (!s) return FB_EINVAL;
    pthread_mutex_lock(&s->mu);
    int rc = FB_ENOENT;
    int64_t cutoff = s->cfg.max_age_ns > 0 ? fb_now_ns() - s->cfg.max_age_ns : INT64_MIN;
    /* 1. replay after a rewind */
    while (s->replay < s->rhi) {
        struct ring_ent *e = &s->ring[s->replay++ & s->rmask];
        if (e->acked) continue;
        const uint8_t *b;
        int wr = window(s, e->seg, e->off, REC_HDR + (uint64_t)e->len, &b);
        if (wr == FB_EAGAIN) { /* a read error: again later, from this record */
            s->replay--;
            rc = FB_EAGAIN;
            goto out;
        }
        if (wr != 0) {
            /* unreadable now (disk error, file deleted): lost, treat as done */
            e->acked = true;
            e->seg->nacked++;
            s->live--;
            s->corrupt_cut += REC_HDR + e->len;
            if (s->lost && e->id == s->lost_last + 1) /* the same run: one log line for it */
                s->lost++, s->lost_last = e->id;
            else
                lost_report(s, e->id, e->id, "unreadable when sent again from", e->seg->name);
            ring_pop(s);
            continue;
        }
        *id = e->id, *p = b + REC_HDR, *len = e->len, *ts = e->ts;
        rc = 0;
        goto out;
    }
    /* 2. new records */
    for (;;) {
        if (s->rhi - s->rlo > s->cfg.max_inflight - 1) {
            rc = FB_EAGAIN;
            break;
        }
        struct seg *g = s->cur;
        if (!g) break;
        if (g == s->tail && !g->mem && s->wlen && s->cur_off >= g->written) wbuf_write(s);
        uint64_t lim = g->mem ? g->len : (g->written < g->len ? g->written : g->len);
        if (s->cur_off >= lim) {
            if (g == s->tail) break;
            cursor_leave(s, g);
            continue;
        }
        const uint8_t *b;
        uint32_t l;
        uint64_t rid;
        int64_t rts;
        int wr = window(s, g, s->cur_off, lim - s->cur_off < REC_HDR ? lim - s->cur_off : REC_HDR, &b);
        bool bad = wr != 0 || lim - s->cur_off < REC_HDR || get32(b) != REC_MAGIC ||
                   (uint64_t)get32(b + 4) + REC_HDR > lim - s->cur_off;
        if (!bad) {
            wr = window(s, g, s->cur_off, REC_HDR + (uint64_t)get32(b + 4), &b);
            bad = wr != 0 || !rec_valid(b, REC_HDR + (uint64_t)get32(b + 4), s->last_read_id, &l, &rid, &rts);
        }
        if (wr == FB_EAGAIN || (bad && cursor_resync(s, g, lim) == FB_EAGAIN)) {
            rc = FB_EAGAIN; /* a read error: nothing now, the same record next time */
            break;
        }
        if (bad) continue;
        uint64_t off = s->cur_off;
        s->cur_off += REC_HDR + l;
        s->last_read_id = rid;
        g->nseen++;
        if (rid <= s->floor) continue; /* acked before the last shutdown or crash */
        struct ring_ent *e = &s->ring[s->rhi & s->rmask];
        *e = (struct ring_ent){.id = rid, .seg = g, .off = off, .len = l, .ts = rts};
        s->rhi++;
        s->replay = s->rhi;
        if (rts < cutoff) { /* too old to deliver */
            e->acked = true;
            g->nacked++;
            s->live--;
            s->dropped_age++;
            drop_log(s, "older than max_age", 1);
            ring_pop(s);
            continue;
        }
        *id = rid, *p = b + REC_HDR, *len = l, *ts = rts;
        rc = 0;
        break;
    }
out:
    seg_gc(s);
    ack_save(s, false);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int fb_store_ack(struct fb_store *s, uint64_t id)
{
    if (!s) return FB_EINVAL;
    pthread_mutex_lock(&s->mu);
    int rc = FB_ENOENT;
    uint64_t lo = s->rlo, hi = s->rhi;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        uint64_t mv = s->ring[mid & s->rmask].id;
        if (mv < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo >= s->rhi || s->ring[lo & s->rmask].id != id) {
        /* dropped while in flight, delivered after all: not a drop */
        for (uint32_t i = 0; i < s->nlimbo; i++)
            if (s->limbo[i].id == id) {
                if (s->limbo[i].age)
                    s->dropped_age--;
                else
                    s->dropped_full--;
                s->limbo[i] = s->limbo[--s->nlimbo];
                s->acked++;
                rc = 0;
                break;
            }
    } else if (lo < s->rhi) {
        struct ring_ent *e = &s->ring[lo & s->rmask];
        if (e->id == id && !e->acked) {
            e->acked = true;
            e->seg->nacked++;
            s->live--;
            s->acked++;
            rc = 0;
            if (ring_pop(s)) {
                seg_gc(s);
                ack_save(s, false);
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void fb_store_rewind(struct fb_store *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->replay = s->rlo;
    s->nlimbo = 0; /* their delivery failed and their segment is gone: dropped for good */
    pthread_mutex_unlock(&s->mu);
}

void fb_store_stats(struct fb_store *s, struct fb_store_stats *o)
{
    memset(o, 0, sizeof *o);
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    o->records = s->live;
    o->bytes = s->bytes;
    o->mem_bytes = s->mem_bytes;
    o->inflight = 0;
    for (uint64_t i = s->rlo; i < s->replay; i++) o->inflight += !s->ring[i & s->rmask].acked;
    o->segments = s->nsegs;
    o->appended = s->appended;
    o->acked = s->acked;
    o->dropped_full = s->dropped_full;
    o->dropped_age = s->dropped_age;
    o->corrupt_cut = s->corrupt_cut;
    o->recovered = s->recovered;
    o->lost = s->lost;
    o->lost_first = s->lost_first;
    o->lost_last = s->lost_last;
    for (struct seg *g = s->head; g; g = g->next)
        if (g->nacked < g->nrec) {
            o->oldest_ts = g->min_ts;
            break;
        }
    o->degraded = s->degraded && !s->mem_only; /* memory by choice is not a fault */
    o->last_errno = s->last_errno;
    pthread_mutex_unlock(&s->mu);
}

void fb_store_inject_fault(struct fb_store *s, int ops, int errno_val)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->fault_ops = errno_val ? ops : 0;
    s->fault_errno = errno_val;
    pthread_mutex_unlock(&s->mu);
}

void fb_store_close(struct fb_store *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    if (s->tail && !s->tail->mem) {
        wbuf_write(s);
        struct seg *t = s->tail;
        if (!t->mem && t->fd >= 0 && s->cfg.sync != FB_SYNC_OS && t->synced < t->written && SYS->fdatasync(t->fd) != 0)
            fb_error(sname(s), NULL, "store %s: fdatasync at close failed: %s", s->dir, strerror(errno));
    }
    ack_save(s, true);
    uint64_t lost = 0;
    for (struct seg *g = s->head; g; g = g->next)
        if (g->mem) lost += g->nrec - g->nacked;
    if (lost && !s->mem_only)
        fb_warn(sname(s), NULL, "store %s: %" PRIu64 " records held only in memory are lost at close", s->dir, lost);
    else if (lost)
        fb_warn(sname(s), NULL, "%" PRIu64 " undelivered messages dropped at exit (no buffer: configured)", lost);
    while (s->head) {
        struct seg *g = s->head;
        s->head = g->next;
        if (g->fd >= 0) close(g->fd);
        /* a segment whose records were all acked is deleted; the tail too when empty */
        if (!g->mem && s->dirfd >= 0 && !s->frozen && ((g->nrec && g->last_id <= s->acked_hi_saved) || !g->nrec))
            SYS->unlinkat(s->dirfd, g->name, 0);
        free(g->mem);
        free(g->cuts);
        free(g);
    }
    if (s->rfd >= 0) close(s->rfd);
    if (s->dirfd >= 0) close(s->dirfd);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_destroy(&s->mu);
    free(s->wbuf);
    free(s->rbuf);
    free(s->ring);
    free(s->limbo);
    free(s->lr);
    free(s);
}

/* --------------------------------------------------------- sequence numbers */
int fb_store_seq_load(const char *dir, uint64_t *next, struct fb_err *err)
{
    *next = 0;
    int dfd = SYS->openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0) {
        if (errno == ENOENT) return 0;
        return fb_err_set(err, FB_EIO, "seq %s: %s", dir, strerror(errno));
    }
    int r = small_file_read(dfd, "seq", SEQ_MAGIC, next);
    close(dfd);
    if (r < 0) return fb_err_set(err, FB_EPROTO, "seq %s/seq: unreadable or corrupt", dir);
    return 0;
}

int fb_store_seq_reserve(const char *dir, uint64_t limit, struct fb_err *err)
{
    if (SYS->mkdir(dir, 0750) != 0 && errno != EEXIST)
        return fb_err_set(err, FB_EIO, "seq %s: %s", dir, strerror(errno));
    int dfd = SYS->openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0) return fb_err_set(err, FB_EIO, "seq %s: %s", dir, strerror(errno));
    uint8_t b[24];
    small_file_fill(b, SEQ_MAGIC, limit);
    int r = small_file_write(dfd, "seq", b, sizeof b, true);
    int e = errno;
    close(dfd);
    if (r != 0) return fb_err_set(err, FB_EIO, "seq %s/seq: cannot write: %s", dir, strerror(e));
    return 0;
}

/* Newest modification time (µs since the epoch) of DIR, its entries and the
 * entries of its subdirectories (the sinks' queues): a lower bound for the
 * clock at the last write, used when the clock has gone back. */
static uint64_t newest_mtime_us(const char *dir, int depth)
{
    uint64_t best = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    char p[1024];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) != 0) continue;
        uint64_t t =
            st.st_mtim.tv_sec > 0 ? (uint64_t)st.st_mtim.tv_sec * 1000000u + (uint64_t)st.st_mtim.tv_nsec / 1000u : 0;
        if (t > best) best = t;
        if (depth > 0 && S_ISDIR(st.st_mode) && strcmp(de->d_name, ".") != 0) {
            uint64_t u = newest_mtime_us(p, depth - 1);
            if (u > best) best = u;
        }
    }
    closedir(d);
    return best;
}

/* Where a counter without a trustworthy file restarts: the clock in µs (as
 * without a buffer), and above the newest write in the directory if the
 * clock is behind it.  Numbers are handed out far slower than one per µs, so
 * this is above every number a previous run handed out, whether it started
 * from 1 (an old store) or from its own clock. */
static uint64_t seq_restart(const char *dir)
{
    uint64_t now = (uint64_t)fb_now_ns() / 1000, m = newest_mtime_us(dir, 1);
    return m >= now ? m + 1 : now;
}

int fb_store_seq_open(struct fb_store_seq *q, const char *dir, uint64_t block, struct fb_err *err)
{
    memset(q, 0, sizeof *q);
    snprintf(q->dir, sizeof q->dir, "%s", dir);
    q->block = block ? block : 65536;
    uint64_t l = 0;
    int rc = fb_store_seq_load(dir, &l, err);
    if (rc == FB_EPROTO) {
        /* never reuse a number: jump beyond anything handed out before */
        l = seq_restart(dir);
        fb_error(NULL, NULL, "seq %s/seq corrupt: restarting at the time-derived number %" PRIu64, dir, l);
    } else if (rc == 0 && l == 0) {
        /* No file.  The queue (or a consumer) may hold numbers from a run
         * whose file is gone — deleted, a restored backup, a wiped buffer —
         * and starting at 1 would reuse them.  The store cannot read them
         * back (records are the sinks' opaque bytes), so restart as for a
         * corrupt file. */
        l = seq_restart(dir);
        fb_info(NULL, NULL, "seq %s/seq missing: starting at the time-derived number %" PRIu64, dir, l);
    }
    q->next = l ? l : 1;
    q->limit = q->next;
    int r2 = fb_store_seq_reserve(dir, q->next + q->block, err);
    if (r2 == 0)
        q->limit = q->next + q->block;
    else
        q->failed = 1;
    return r2 ? r2 : (rc == FB_EPROTO ? 0 : rc);
}

int fb_store_seq_next(struct fb_store_seq *q, uint64_t *seq)
{
    int rc = 0;
    if (q->next >= q->limit) {
        struct fb_err e;
        if (fb_store_seq_reserve(q->dir, q->next + q->block, &e) == 0) {
            q->limit = q->next + q->block;
            q->failed = 0;
        } else {
            q->failed = 1;
            rc = FB_EIO;
        }
    }
    *seq = q->next++;
    return rc;
}
