/* alarm_journal.h — the alarm table's persistent state (alarm_journal.c):
 * an append-only journal of fixed-size records next to the buffer, so that
 * a restart (also kill -9 or a power cut) neither loses an active alarm nor
 * raises again one an operator acknowledged.  No I/O happens elsewhere for
 * alarms; the caller decides when to sync (once per group of changes). */
#ifndef FB_ALARM_JOURNAL_H
#define FB_ALARM_JOURNAL_H
#include <stddef.h>
#include <stdint.h>

#include "core/fb.h"

/* One alarm's persisted state; the last record of a key wins. */
struct fb_journal_rec {
    uint64_t key;  /* fb_alarm_key(path) */
    uint8_t flags; /* FB_AS_* (ACTIVE, UNACKED, SHELVED) */
    int64_t since; /* UTC ns */
    int64_t until; /* shelved until, UTC ns */
    double value;
};

#define FB_JOURNAL_FILE "alarms"
#define FB_JOURNAL_HEADER 16
#define FB_JOURNAL_REC 48

struct fb_alarm_journal;

/* The key of an alarm: FNV-1a 64 of its path ("press-01/temperature/hi"). */
uint64_t fb_alarm_key(const char *path);

/* Open (create) DIR/alarms and replay it: load(ctx, rec) for every intact
 * record in file order.  A torn or corrupt tail (a crash during a write) is
 * cut off at the last intact record; *cut (may be NULL) gets the bytes cut.
 * A file that is not a journal is an error (FB_EPROTO), never overwritten. */
int fb_alarm_journal_open(struct fb_alarm_journal **out, const char *dir,
                          void (*load)(void *ctx, const struct fb_journal_rec *r), void *ctx, uint64_t *cut,
                          struct fb_err *err);
/* Write a record (into the page cache). */
int fb_alarm_journal_append(struct fb_alarm_journal *j, const struct fb_journal_rec *r);
/* fdatasync what was appended. */
int fb_alarm_journal_sync(struct fb_alarm_journal *j);
/* Records in the file (the replayed ones and the appended ones). */
uint64_t fb_alarm_journal_records(const struct fb_alarm_journal *j);
/* Replace the file by one holding only recs (tmp file, fsync, rename, dir
 * fsync), when the journal has grown past what it describes. */
int fb_alarm_journal_compact(struct fb_alarm_journal *j, const struct fb_journal_rec *recs, size_t n);
void fb_alarm_journal_close(struct fb_alarm_journal *j);

/* The record codec (for tests and tools). */
void fb_journal_encode(uint8_t out[FB_JOURNAL_REC], const struct fb_journal_rec *r);
/* 0, or FB_EPROTO when the CRC does not match. */
int fb_journal_decode(const uint8_t in[FB_JOURNAL_REC], struct fb_journal_rec *r);
#endif
