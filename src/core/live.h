/* live.h — thread liveness (live.c): what "the gateway is alive" means for
 * the systemd watchdog (sdwatch.c) and for /metrics.
 *
 * A gateway is alive when every thread that moves data comes around its loop:
 * the connection threads (poll, pipeline, writes) and the sink threads
 * (queue, store, delivery).  Each such thread registers a `struct fb_live`
 * and stamps it every time around its loop (fb_live_beat).  Before it
 * sleeps it says until when at the latest it will be back by itself
 * (fb_live_idle: a poll deadline, a reconnect time), or that it waits for
 * another thread that is itself watched (FB_LIVE_WAITING: a full batch pool
 * under back-pressure, a condition variable only a write request wakes).
 *
 * A thread is stalled when it has been busy in one step (a driver call, a
 * store write, a lock) for longer than its limit, or has not come back for
 * its limit past the time it promised: a deadlock, a system call that never
 * returns (a hung device driver or file system), an endless loop that skips
 * the loop head.  A device that is offline, a broker that is away or a full
 * buffer are NOT stalls: the threads keep coming around, and store-and-
 * forward is how those are handled; restarting the gateway would not help.
 *
 * Cheap: a beat is two relaxed-enough atomic stores of a time the thread
 * already read; no allocation, no lock on the thread's path.  The registry
 * (a list under one mutex) changes only when threads start and end.
 */
#ifndef FB_LIVE_H
#define FB_LIVE_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* fb_live_idle(): waiting for another (watched) thread, no deadline of its own */
#define FB_LIVE_WAITING INT64_MAX

struct fb_live {
    char name[96];         /* "conn tcp:127.0.0.1:502", "sink mqtt" */
    int64_t limit_ns;      /* how long one step may take */
    _Atomic int64_t at;    /* monotonic ns of the last beat */
    _Atomic int64_t until; /* 0 busy; else back by itself at this time (FB_LIVE_WAITING: no deadline) */
    struct fb_live *next;  /* registry, under its mutex */
    int registered;
};

/* Register `l` (a beat at once) and make it this thread's (fb_live_beat and
 * fb_live_idle without an argument act on it).  limit_ns <= 0: 60 s. */
void fb_live_enter(struct fb_live *l, const char *name, int64_t limit_ns);
/* Unregister this thread's record (at thread exit); safe if never entered. */
void fb_live_leave(void);
/* This thread came around its loop (now: fb_mono_ns(), or 0 to read it). */
void fb_live_beat(int64_t now);
/* This thread goes to sleep until `until` (monotonic ns) at the latest, or
 * FB_LIVE_WAITING; the next fb_live_beat ends it. */
void fb_live_idle(int64_t until);

/* How long `l` has been stalled at `now` (ns past its limit), 0 if it is not. */
int64_t fb_live_overdue(const struct fb_live *l, int64_t now);
/* Checks every registered thread: returns how many are stalled; the most
 * overdue one's name and how long it has been silent go to who/silent_ns
 * (either may be NULL). */
int fb_live_check(int64_t now, char *who, size_t wholen, int64_t *silent_ns);
#endif
