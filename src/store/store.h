/* store.h — the persistent per-sink queue (store-and-forward).
 *
 * A store is a directory holding a segmented append-only log of opaque
 * records (the sink decides what a record is: typically one MQTT message,
 * topic and payload).  The store knows nothing about MQTT.  Guarantees:
 *   - records are delivered by fb_store_next() in append order (id order);
 *   - a record leaves the store only when fb_store_ack() was called for it
 *     (or when a configured bound drops it — counted in the stats);
 *   - after kill -9 or power loss, every record that was synced (per the
 *     sync policy) and not yet durably acked is delivered again: duplicates
 *     are possible, loss of synced data is not;
 *   - a torn or corrupt tail is cut at open, logged, and the rest delivered;
 *     corruption found later, while reading, is cut, logged and counted too;
 *   - records missing altogether (a segment file deleted behind the store's
 *     back, before or while it runs) are logged with their id range and
 *     counted in `lost`;
 *   - disk use (segment files, headers and record overhead included) never
 *     exceeds max_bytes;
 *   - disk trouble (ENOSPC, EROFS, EIO, an unwritable directory) never makes
 *     the store fail: it continues on memory (bounded by the same max_bytes,
 *     oldest dropped) and reports `degraded` in its stats until the disk
 *     works again.
 * File format and design: see the essay at the top of store.c and
 * docs/store-and-forward.md.
 *
 * Threads: one producer (append, flush) and one consumer (next, ack, rewind)
 * may call concurrently; stats may be called from any thread.  Calls from
 * more threads than that must be serialised by the caller.
 */
#ifndef FB_STORE_H
#define FB_STORE_H

#include <stdint.h>

#include "core/fb.h"

enum fb_store_sync {
    FB_SYNC_BATCH = 0,    /* fb_store_flush() fdatasyncs: durable at the end of each batch */
    FB_SYNC_INTERVAL = 1, /* fb_store_flush() fdatasyncs at most every sync_interval_ns */
    FB_SYNC_OS = 2,       /* never fdatasync: the kernel writes back (survives kill -9, not power loss) */
};
enum fb_store_full {
    FB_FULL_DROP_OLDEST = 0, /* default: delete the oldest segment, count its records */
    FB_FULL_BLOCK = 1,       /* fb_store_append() returns FB_EAGAIN: the producer slows down */
};

struct fb_store_cfg {
    const char *dir;          /* created (one level) if missing; NULL = memory only (no disk, not crash-safe) */
    uint64_t max_bytes;       /* bound on disk (and on memory when degraded); 0 = 64 MiB */
    int64_t max_age_ns;       /* records older than this (by their ts) are dropped; 0 = no limit */
    int sync;                 /* enum fb_store_sync */
    int64_t sync_interval_ns; /* FB_SYNC_INTERVAL; 0 = 1 s */
    int full_policy;          /* enum fb_store_full */
    uint64_t segment_bytes;   /* 0 = 8 MiB; clamped to [4 KiB, max_bytes / 4] */
    uint32_t max_inflight;    /* records handed out by next() and not yet acked; 0 = 65536 */
    uint32_t max_records;     /* with FB_FULL_DROP_OLDEST: at most this many records are kept (the
                               * oldest segments are dropped); 0 = no bound but max_bytes */
    uint32_t max_record;      /* largest record the caller will append; 0 = 1 MiB - 32.  Larger
                               * values grow the write buffer and the segments to fit it. */
    int64_t ack_interval_ns;  /* the durable head is persisted at most this often; 0 = 1 s */
    int64_t disk_retry_ns;    /* when degraded, retry the disk this often; 0 = 10 s */
    const char *name;         /* for log lines (e.g. the sink name); NULL = dir */
};

struct fb_store;

/* Opens (creating if needed) and recovers the store in c->dir: scans all
 * segments, verifies every record's CRC, cuts torn or corrupt regions
 * (logged with fb_warn: file, offset, bytes), skips records already durably
 * acked, and continues appending into a new segment.  If the directory is
 * unusable the store still opens, in memory (degraded): *err then carries
 * the reason (err->code != 0) while the return value is non-NULL.  Returns
 * NULL only for a bad configuration or out of memory (err says which). */
struct fb_store *fb_store_open(const struct fb_store_cfg *c, struct fb_err *err);

/* Appends one record (copied; p may be reused at once).  ts is the caller's
 * time stamp (ns, UTC), used for max_age.  On success *id (may be NULL) is
 * the record's id: monotonic, unique for the store's lifetime.  The record is
 * buffered: it becomes durable at the next fb_store_flush() per the sync
 * policy.  Returns 0; FB_EAGAIN when full with FB_FULL_BLOCK; FB_ERANGE when
 * len exceeds fb_store_max_record(); FB_EINVAL for bad arguments.  Disk
 * errors do not fail the append: the store degrades to memory. */
int fb_store_append(struct fb_store *s, const void *p, uint32_t len, int64_t ts, uint64_t *id);
/* Largest payload fb_store_append() accepts for this store. */
uint32_t fb_store_max_record(const struct fb_store *s);
/* Records accepted and neither acked nor dropped (cheap; any thread). */
uint64_t fb_store_live(struct fb_store *s);

/* Writes buffered records and syncs per the policy (call it at the end of
 * each producer batch).  Also drops segments past max_age.  Returns 0 when
 * every record appended before and not yet acked is on disk and synced per
 * the policy, or FB_EIO while the store is degraded or while records it
 * accepted when it was (a write or sync failed) still wait in memory: they
 * are not durable; nothing accepted is lost while the process lives. */
int fb_store_flush(struct fb_store *s);

/* Hands out the next pending record, in id order.  *p points into a buffer
 * owned by the store and stays valid until the next fb_store_next(),
 * fb_store_rewind() or fb_store_close().  The record is now in flight.
 * Returns 0; FB_ENOENT when nothing is pending; FB_EAGAIN when max_inflight
 * records are in flight (ack some first).  Records past max_age are skipped
 * here and counted as dropped_age. */
int fb_store_next(struct fb_store *s, uint64_t *id, const void **p, uint32_t *len, int64_t *ts);

/* Marks an in-flight record delivered.  Acks may arrive in any order; the
 * durable head advances over the contiguous acked prefix, is persisted at
 * most every ack_interval_ns, and fully acked segments are deleted.
 * Returns 0, or FB_ENOENT if id is not in flight (already acked, dropped,
 * or never handed out) — harmless. */
int fb_store_ack(struct fb_store *s, uint64_t id);

/* The connection was lost: every in-flight record not acked becomes pending
 * again and will be handed out again, in order, before newer records.
 * Records acked out of order are not handed out again. */
void fb_store_rewind(struct fb_store *s);

struct fb_store_stats {
    uint64_t records;   /* accepted, not yet acked or dropped (pending + in flight) */
    uint64_t bytes;     /* disk + memory bytes held (headers and overhead included) */
    uint64_t mem_bytes; /* of which in memory (degraded mode) */
    uint64_t inflight;  /* handed out, not yet acked */
    uint64_t segments;
    uint64_t appended;              /* records appended since open */
    uint64_t acked;                 /* records acked since open */
    uint64_t dropped_full;          /* records dropped because the store was full */
    uint64_t dropped_age;           /* records dropped because older than max_age */
    uint64_t corrupt_cut;           /* bytes cut as torn or corrupt (at open and while reading) */
    uint64_t recovered;             /* records found pending at open */
    uint64_t lost;                  /* records found missing: a deleted segment file, records held in memory
                            * when the process died, ids inside a cut region (logged with their range) */
    uint64_t lost_first, lost_last; /* the ids of the latest such loss (0 if none) */
    int64_t oldest_ts;              /* ts of the oldest pending record (segment granularity); 0 if none */
    int degraded;                   /* 1 while new records go to memory only (not crash-safe) */
    int last_errno;                 /* the errno that caused the last degradation; 0 if none */
};
void fb_store_stats(struct fb_store *s, struct fb_store_stats *out);

/* Flushes and syncs, persists the durable head, frees everything.  Records
 * held only in memory (degraded mode) are lost: their count is logged.
 * NULL is ignored. */
void fb_store_close(struct fb_store *s);

/* ---- fault injection for tests: every following operation of the kinds in
 * `ops` fails with `errno_val` (0 clears).  Works in all builds. */
enum { FB_STORE_FAULT_OPEN = 1, FB_STORE_FAULT_WRITE = 2, FB_STORE_FAULT_SYNC = 4 };
void fb_store_inject_fault(struct fb_store *s, int ops, int errno_val);

/* ---- a persisted monotonic counter (per-gateway message sequence numbers).
 * The file DIR/seq holds a limit L: every number handed out so far is < L.
 * Numbers are reserved in blocks (the file is rewritten with rename and
 * fsync once per block), so after kill -9 or power loss the counter resumes
 * at L: some numbers are skipped, none is ever reused, it never goes back.
 * Without a usable file (missing or corrupt) it starts from the clock in µs,
 * or above the newest modification time in DIR when the clock is behind. */
struct fb_store_seq {
    char dir[512];
    uint64_t next;  /* the next number to hand out */
    uint64_t limit; /* persisted reservation: numbers < limit are safe to use */
    uint64_t block; /* reservation size */
    int failed;     /* the last reservation could not be persisted */
};
/* Reads DIR/seq into *next (0 if the file does not exist; a corrupt file is
 * an error: FB_EPROTO, never silently reset). */
int fb_store_seq_load(const char *dir, uint64_t *next, struct fb_err *err);
/* Durably records that numbers below `limit` may have been used. */
int fb_store_seq_reserve(const char *dir, uint64_t limit, struct fb_err *err);
/* Load + reserve the first block (block 0 = 65536); a missing or corrupt
 * file restarts at a time-derived number (above).  On a disk error the
 * counter still works in memory (q->failed, the error in err) and the
 * return value is the error. */
int fb_store_seq_open(struct fb_store_seq *q, const char *dir, uint64_t block, struct fb_err *err);
/* Next number (never 0).  Returns 0, or FB_EIO when a new block could not be
 * persisted (the number is still valid and monotonic within this process). */
int fb_store_seq_next(struct fb_store_seq *q, uint64_t *seq);

/* CRC-32C (Castagnoli), table-driven slicing-by-8 (hardware on x86 with
 * SSE4.2).  Start with crc = 0. */
uint32_t fb_crc32c(uint32_t crc, const void *p, size_t n);

#endif
