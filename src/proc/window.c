/* window.c — time-based sliding-window statistics in O(1) amortised time.
 *
 * A ring of (t, v) holds the samples of the last window_ns (or the last cap
 * samples if more arrive: cap is sized at start-up from the poll period, so
 * this only bites when a tag is sampled faster than configured).  A sample
 * belongs to the window ending at `now` when t > now - window_ns.
 *
 * count/mean/stddev come from running sums.  To avoid catastrophic
 * cancellation (values like 1e6 ± 0.01) the sums are of (v - ref) where ref
 * is a recent value, and they are recomputed exactly from the ring after every
 * cap evictions, which bounds floating-point drift at O(1) amortised cost.
 * stddev is the SAMPLE standard deviation (n - 1 denominator; 0 for n = 1).
 *
 * min/max use two monotonic deques of ring positions (the min deque
 * holds increasing values, the max deque decreasing ones): each sample enters
 * and leaves each deque once, and the front is always the extreme of the live
 * samples, so min/max stay exact after eviction.
 *
 * Memory: one allocation per window, made by fb_window_init; w->t points to
 * it and it holds, in order: t[cap], v[cap] (8-byte aligned for any cap), the
 * control block (aligned as its type needs), minq[cap], maxq[cap] (uint32).
 * The control block comes before the uint32 deques so that an odd cap cannot
 * misalign its double (it used to follow them: 4 bytes off for odd caps,
 * undefined behaviour and a trap or a slow path on ARM).  fb_window_stats is read-only; if `now` is later than the newest
 * add, stale samples at the front are skipped by a rescan (O(n), off the
 * normal path where stats follow an add). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proc/proc.h"

struct wctl {
    uint32_t minh, minn; /* min deque: ring head and length */
    uint32_t maxh, maxn; /* max deque */
    double ref;          /* shift for the running sums */
    uint32_t evictions;  /* since the last exact recomputation */
};

/* Deques hold ring positions (unique among live samples); no '%' on the
 * hot path, indices wrap by comparison. */
#define CTL_ALIGN (_Alignof(struct wctl) > _Alignof(double) ? _Alignof(struct wctl) : _Alignof(double))
/* Byte offset of the control block: after t[cap] and v[cap], rounded up. */
static inline size_t ctl_off(uint32_t cap) { return ((size_t)cap * 16 + CTL_ALIGN - 1) / CTL_ALIGN * CTL_ALIGN; }
static inline struct wctl *ctl(const struct fb_window *w)
{
    return (struct wctl *)(void *)((char *)w->t + ctl_off(w->cap));
}
static inline uint32_t *minq(const struct fb_window *w) { return (uint32_t *)(void *)(ctl(w) + 1); }
static inline uint32_t *maxq(const struct fb_window *w) { return minq(w) + w->cap; }
static inline uint32_t at(const struct fb_window *w, uint32_t h, uint32_t k) /* (h + k) mod cap, k <= cap */
{
    uint32_t i = h + k;
    return i >= w->cap ? i - w->cap : i;
}

int fb_window_init(struct fb_window *w, uint32_t cap)
{
    memset(w, 0, sizeof *w);
    if (cap == 0 || cap > (1u << 24)) return FB_EINVAL;
    size_t sz = ctl_off(cap) + sizeof(struct wctl) + (size_t)cap * 2 * sizeof(uint32_t);
    void *blk = calloc(1, sz);
    if (!blk) return FB_ENOMEM;
    w->t = blk;
    w->v = (double *)(w->t + cap);
    w->cap = cap;
    return 0;
}

void fb_window_free(struct fb_window *w)
{
    free(w->t);
    memset(w, 0, sizeof *w);
}

static void recompute(struct fb_window *w)
{
    struct wctl *c = ctl(w);
    double s = 0, ss = 0;
    if (w->n) c->ref = w->v[at(w, w->head, w->n - 1)];
    for (uint32_t i = 0; i < w->n; i++) {
        double d = w->v[at(w, w->head, i)] - c->ref;
        s += d;
        ss += d * d;
    }
    w->sum = s;
    w->sumsq = ss;
    c->evictions = 0;
}

static void evict_oldest(struct fb_window *w, struct wctl *c)
{
    uint32_t h = w->head;
    double d = w->v[h] - c->ref;
    w->sum -= d;
    w->sumsq -= d * d;
    if (c->minn && minq(w)[c->minh] == h) {
        c->minh = at(w, c->minh, 1);
        c->minn--;
    }
    if (c->maxn && maxq(w)[c->maxh] == h) {
        c->maxh = at(w, c->maxh, 1);
        c->maxn--;
    }
    w->head = at(w, h, 1);
    w->n--;
    c->evictions++;
}

void fb_window_add(struct fb_window *w, int64_t ts, double v, int64_t window_ns)
{
    if (!w->t || !isfinite(v)) return;
    struct wctl *c = ctl(w);
    while (w->n && window_ns > 0 && w->t[w->head] <= ts - window_ns) evict_oldest(w, c);
    if (w->n == w->cap) evict_oldest(w, c);
    if (w->n == 0) { /* empty: restart the sums exactly around this value */
        w->sum = w->sumsq = 0;
        c->ref = v;
        c->evictions = 0;
        c->minn = c->maxn = 0;
    }
    uint32_t pos = at(w, w->head, w->n);
    w->t[pos] = ts;
    w->v[pos] = v;
    w->n++;
    double d = v - c->ref;
    w->sum += d;
    w->sumsq += d * d;
    uint32_t *mq = minq(w), *xq = maxq(w);
    while (c->minn && w->v[mq[at(w, c->minh, c->minn - 1)]] >= v) c->minn--;
    mq[at(w, c->minh, c->minn)] = pos;
    c->minn++;
    while (c->maxn && w->v[xq[at(w, c->maxh, c->maxn - 1)]] <= v) c->maxn--;
    xq[at(w, c->maxh, c->maxn)] = pos;
    c->maxn++;
    if (c->evictions >= w->cap) recompute(w);
}

void fb_window_stats(const struct fb_window *w, int64_t now, int64_t window_ns, struct fb_stats *out)
{
    memset(out, 0, sizeof *out);
    out->window_ns = window_ns;
    if (!w->t || !w->n) return;
    const struct wctl *c = ctl(w);
    uint32_t stale = 0;
    if (window_ns > 0)
        while (stale < w->n && w->t[at(w, w->head, stale)] <= now - window_ns) stale++;
    uint32_t n = w->n - stale;
    if (n == 0) return;
    out->count = n;
    if (stale == 0) {
        double mean = w->sum / n;
        out->mean = c->ref + mean;
        double var = n > 1 ? (w->sumsq - w->sum * mean) / (n - 1) : 0;
        out->stddev = var > 0 ? sqrt(var) : 0;
        out->min = w->v[minq(w)[c->minh]];
        out->max = w->v[maxq(w)[c->maxh]];
        return;
    }
    /* rescan the live part (two-pass for accuracy) */
    double s = 0, mn = INFINITY, mx = -INFINITY;
    for (uint32_t i = stale; i < w->n; i++) {
        double x = w->v[at(w, w->head, i)];
        s += x;
        if (x < mn) mn = x;
        if (x > mx) mx = x;
    }
    double mean = s / n, ss = 0;
    for (uint32_t i = stale; i < w->n; i++) {
        double d = w->v[at(w, w->head, i)] - mean;
        ss += d * d;
    }
    out->mean = mean;
    out->stddev = n > 1 ? sqrt(ss / (n - 1)) : 0;
    out->min = mn;
    out->max = mx;
}
