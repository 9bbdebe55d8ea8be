/* alarm_journal.c — persisted alarm state (alarm_journal.h).
 *
 * Why a journal and not a snapshot file rewritten on every change: a plant
 * may have thousands of alarms and an alarm flood many changes a second;
 * appending the one changed record costs one small write, and the group of
 * changes of one evaluation costs one fdatasync.  The file is compacted
 * (rewritten with one record per alarm that is not normal) when it holds
 * four times more records than alarms.
 *
 * Layout, little-endian:
 *   header (16 bytes): "FBALARM1" u32 version (1) u32 record size (48)
 *   record (48 bytes): u32 crc32c(bytes 4..47)  u32 reserved (0)
 *                      u64 key  u8 flags  u8[7] 0  i64 since  i64 until  f64 value
 * A record is valid when its CRC matches.  Replay stops at the first record
 * that is not (a write torn by a crash can only be the last one) and the
 * file is cut there, so the next append follows intact data.
 */
#include "edge/alarm_journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"

static const char k_magic[8] = {'F', 'B', 'A', 'L', 'A', 'R', 'M', '1'};

struct fb_alarm_journal {
    char dir[512];
    char path[600];
    int fd;
    uint64_t records;
};

uint64_t fb_alarm_key(const char *path)
{
    uint64_t h = 14695981039346656037ULL;
    for (const char *p = path; p && *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    return h;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

void fb_journal_encode(uint8_t out[FB_JOURNAL_REC], const struct fb_journal_rec *r)
{
    memset(out, 0, FB_JOURNAL_REC);
    put_u64(out + 8, r->key);
    out[16] = r->flags;
    put_u64(out + 24, (uint64_t)r->since);
    put_u64(out + 32, (uint64_t)r->until);
    uint64_t u;
    memcpy(&u, &r->value, 8);
    put_u64(out + 40, u);
    put_u32(out, fb_crc32c(0, out + 4, FB_JOURNAL_REC - 4));
}

int fb_journal_decode(const uint8_t in[FB_JOURNAL_REC], struct fb_journal_rec *r)
{
    if (get_u32(in) != fb_crc32c(0, in + 4, FB_JOURNAL_REC - 4)) return FB_EPROTO;
    r->key = get_u64(in + 8);
    r->flags = in[16];
    r->since = (int64_t)get_u64(in + 24);
    r->until = (int64_t)get_u64(in + 32);
    uint64_t u = get_u64(in + 40);
    memcpy(&r->value, &u, 8);
    return 0;
}

static void header(uint8_t h[FB_JOURNAL_HEADER])
{
    memcpy(h, k_magic, 8);
    put_u32(h + 8, 1);
    put_u32(h + 12, FB_JOURNAL_REC);
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void sync_dir(const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return;
    (void)fsync(dfd);
    close(dfd);
}

int fb_alarm_journal_open(struct fb_alarm_journal **out, const char *dir,
                          void (*load)(void *ctx, const struct fb_journal_rec *r), void *ctx, uint64_t *cut,
                          struct fb_err *err)
{
    *out = NULL;
    if (cut) *cut = 0;
    struct fb_alarm_journal *j = calloc(1, sizeof *j);
    if (!j) return fb_err_set(err, FB_ENOMEM, "out of memory");
    snprintf(j->dir, sizeof j->dir, "%s", dir);
    snprintf(j->path, sizeof j->path, "%s/%s", dir, FB_JOURNAL_FILE);
    j->fd = open(j->path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (j->fd < 0) {
        int e = errno;
        free(j);
        return fb_err_set(err, FB_EIO, "%s/%s: %s", dir, FB_JOURNAL_FILE, strerror(e));
    }
    struct stat st;
    if (fstat(j->fd, &st) < 0) goto io;
    uint8_t h[FB_JOURNAL_HEADER], want[FB_JOURNAL_HEADER];
    header(want);
    if (st.st_size < FB_JOURNAL_HEADER) {
        /* new, or torn before its header was whole: nothing in it can be state */
        if (ftruncate(j->fd, 0) < 0 || lseek(j->fd, 0, SEEK_SET) < 0 || write_all(j->fd, want, sizeof want) < 0 ||
            fdatasync(j->fd) < 0)
            goto io;
        sync_dir(j->dir);
        *out = j;
        return 0;
    }
    if (pread(j->fd, h, sizeof h, 0) != (ssize_t)sizeof h) goto io;
    if (memcmp(h, want, sizeof h)) {
        close(j->fd);
        free(j);
        return fb_err_set(err, FB_EPROTO, "%s/%s is not an alarm journal of this version (left untouched)", dir,
                          FB_JOURNAL_FILE);
    }
    off_t off = FB_JOURNAL_HEADER;
    uint8_t rec[FB_JOURNAL_REC];
    for (;;) {
        ssize_t n = pread(j->fd, rec, sizeof rec, off);
        if (n < 0) goto io;
        if (n != (ssize_t)sizeof rec) break;
        struct fb_journal_rec r;
        if (fb_journal_decode(rec, &r) < 0) break;
        if (load) load(ctx, &r);
        j->records++;
        off += FB_JOURNAL_REC;
    }
    if (off < st.st_size) {
        if (cut) *cut = (uint64_t)(st.st_size - off);
        if (ftruncate(j->fd, off) < 0 || fdatasync(j->fd) < 0) goto io;
    }
    if (lseek(j->fd, off, SEEK_SET) < 0) goto io;
    *out = j;
    return 0;
io : {
    int e = errno;
    close(j->fd);
    free(j);
    return fb_err_set(err, FB_EIO, "%s/%s: %s", dir, FB_JOURNAL_FILE, strerror(e));
}
}

int fb_alarm_journal_append(struct fb_alarm_journal *j, const struct fb_journal_rec *r)
{
    uint8_t rec[FB_JOURNAL_REC];
    fb_journal_encode(rec, r);
    if (write_all(j->fd, rec, sizeof rec) < 0) return FB_EIO;
    j->records++;
    return 0;
}

int fb_alarm_journal_sync(struct fb_alarm_journal *j) { return fdatasync(j->fd) < 0 ? FB_EIO : 0; }

uint64_t fb_alarm_journal_records(const struct fb_alarm_journal *j) { return j ? j->records : 0; }

int fb_alarm_journal_compact(struct fb_alarm_journal *j, const struct fb_journal_rec *recs, size_t n)
{
    char tmp[640];
    snprintf(tmp, sizeof tmp, "%s.tmp", j->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return FB_EIO;
    uint8_t h[FB_JOURNAL_HEADER];
    header(h);
    bool ok = write_all(fd, h, sizeof h) == 0;
    uint8_t rec[FB_JOURNAL_REC];
    for (size_t i = 0; ok && i < n; i++) {
        fb_journal_encode(rec, &recs[i]);
        ok = write_all(fd, rec, sizeof rec) == 0;
    }
    ok = ok && fsync(fd) == 0;
    if (!ok || rename(tmp, j->path) < 0) {
        close(fd);
        unlink(tmp);
        return FB_EIO;
    }
    sync_dir(j->dir);
    /* the new file is the journal now: appends go to its end */
    close(j->fd);
    j->fd = fd;
    int rfd = open(j->path, O_RDWR | O_CLOEXEC);
    if (rfd >= 0) {
        close(fd);
        j->fd = rfd;
    }
    lseek(j->fd, 0, SEEK_END);
    j->records = n;
    return 0;
}

void fb_alarm_journal_close(struct fb_alarm_journal *j)
{
    if (!j) return;
    close(j->fd);
    free(j);
}
