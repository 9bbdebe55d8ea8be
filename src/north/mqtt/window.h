/* window.h — how many tracked publications an MQTT session lets wait for
 * their acknowledgement at once (session.c, "Window").
 *
 * `max_inflight` is the most a session may have in flight, sized for a slow
 * link (1,000 by default).  Keeping that many in flight when the link does
 * not need them only builds a queue at the broker: acknowledgements come back
 * later, more memory is held, and libmosquitto 2.0 walks its whole list of
 * outgoing messages on every publish and every PUBACK — a quarter of the
 * gateway's CPU per value at 1,000 in flight (BENCHMARKS.md).  So the window
 * follows the link: twice the messages acknowledged per least round-trip time
 * (the bandwidth-delay product), plus a floor, up to max_inflight.  While the
 * window limits the rate and the round trips stay near the least, that target
 * is twice the window, so it doubles every interval until the link (or the
 * broker) is the limit; when the broker falls behind, its queue lengthens the
 * round trips and not the least one, and the window shrinks back to what the
 * link carries.  The least round-trip time is taken over the last 10 to 20 s,
 * so a route that became slower is followed.  An MQTT 5 broker's Receive
 * Maximum caps it as well.  Pure functions: no clock, no
 * locks (the session holds its lock).
 */
#ifndef FB_MQTT_WINDOW_H
#define FB_MQTT_WINDOW_H

#include <stdint.h>

#define FB_WIN_FLOOR 32u                   /* never fewer in flight than this (or max_inflight) */
#define FB_WIN_EPOCH_NS 10000000000LL      /* the least RTT is that of the last 10-20 s */
#define FB_WIN_INTERVAL_MIN_NS 20000000LL  /* the rate is measured over at least 20 ms ... */
#define FB_WIN_INTERVAL_RTTS 4             /* ... and at least 4 least round trips */

struct fb_win {
    uint32_t win, floor, max; /* the window now; its bounds */
    int64_t rtt_min;          /* ns: the least round trip of this epoch and the last (INT64_MAX: none yet) */
    int64_t rtt_epoch;        /* ns: the least round trip of this epoch so far */
    int64_t epoch_end, interval_start;
    uint32_t acks; /* acknowledgements since interval_start */
};

/* A window of at most max (>= 1) messages, starting at its floor. */
void fb_win_init(struct fb_win *w, uint32_t max, int64_t now_ns);
/* The most it may reach from now on (the broker's Receive Maximum, >= 1). */
void fb_win_cap(struct fb_win *w, uint32_t max);
/* A tracked publication was acknowledged rtt_ns after it was published. */
void fb_win_ack(struct fb_win *w, int64_t rtt_ns, int64_t now_ns);
/* The fill below which a full window takes publications again (hysteresis:
 * one wake-up per quarter window, not one per acknowledgement). */
static inline uint32_t fb_win_low(const struct fb_win *w) { return w->win - (w->win >= 4 ? w->win / 4 : 1); }

#endif
