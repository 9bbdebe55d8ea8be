/* proc.h — per-tag edge processing, run by the pipeline thread:
 *   convert/scale → plausibility → deadband/report-by-exception → windows.
 * Each stage is a plain function over a tag's settings and state so it can be
 * unit-tested alone; fb_proc_batch chains them for a whole batch without
 * allocating. */
#ifndef FB_PROC_H
#define FB_PROC_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "core/model.h"

/* Ring of (t, value) for sliding-window statistics. */
struct fb_window {
    int64_t *t;
    double *v;
    uint32_t cap, head, n;
    double sum, sumsq; /* recomputed on eviction drift: see window.c */
};

/* The latest processed value of a tag, for readers outside the pipeline (a
 * control loop's input): written by the one connection thread that owns the
 * tag for every sample after scaling and plausibility — before the deadband,
 * which decides what is published, not what is true — and read by anyone
 * without a lock (a sequence lock: the writer makes seq odd while it writes;
 * a reader retries when it saw an odd or changed seq).  Only tags someone
 * asked for (fb_proc_latest) have one, so the pipeline pays a NULL test per
 * sample for the others. */
struct fb_latest {
    _Atomic uint32_t seq;    /* even: stable; counts updates × 2 */
    _Atomic uint64_t bits;   /* the value in engineering units (a double's bits; NaN when not numeric) */
    _Atomic uint32_t q;      /* its quality after plausibility */
    _Atomic int64_t mono_ns; /* when the pipeline took it (CLOCK_MONOTONIC) */
};

struct fb_latest_val {
    double v;
    uint32_t q;
    int64_t mono_ns; /* 0 = no value yet */
    uint32_t updates;
};

/* The writer (the pipeline; one thread per tag). */
static inline void fb_latest_put(struct fb_latest *l, double v, uint32_t q, int64_t mono_ns)
{
    uint32_t s = atomic_load_explicit(&l->seq, memory_order_relaxed);
    atomic_store_explicit(&l->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    atomic_store_explicit(&l->bits, bits, memory_order_relaxed);
    atomic_store_explicit(&l->q, q, memory_order_relaxed);
    atomic_store_explicit(&l->mono_ns, mono_ns, memory_order_relaxed);
    atomic_store_explicit(&l->seq, s + 2, memory_order_release);
}

/* Any reader: a consistent copy (retries while the writer is inside). */
static inline void fb_latest_get(const struct fb_latest *l, struct fb_latest_val *out)
{
    struct fb_latest *m = (struct fb_latest *)l;
    for (;;) {
        uint32_t s1 = atomic_load_explicit(&m->seq, memory_order_acquire);
        if (s1 & 1) continue;
        uint64_t bits = atomic_load_explicit(&m->bits, memory_order_relaxed);
        uint32_t q = atomic_load_explicit(&m->q, memory_order_relaxed);
        int64_t t = atomic_load_explicit(&m->mono_ns, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&m->seq, memory_order_relaxed) != s1) continue;
        memcpy(&out->v, &bits, sizeof bits);
        out->q = q;
        out->mono_ns = t;
        out->updates = s1 / 2;
        return;
    }
}

/* What the deadband remembers of a tag's last published sample: 12 bytes,
 * 4-byte aligned (issue 15: one per tag with a deadband).  `v` holds 64 bits
 * (read and written with memcpy): a value of the tag's own type (what
 * fb_deadband_pass is given as `type`) as the double the comparison uses
 * (bools 0/1, every NaN as one NaN), or a string's 64-bit hash — never a
 * pointer into a batch that is recycled (deadband.c).  Anything else is a
 * NaN that no value is stored as: "nothing published yet", "no value"
 * (FB_T_NONE), or "a value of another type T" (whose value is not kept: the
 * next sample of type T counts as changed).  The bits are stored XOR that
 * "nothing published" NaN, so a zeroed struct fb_last means nothing was
 * published.  The time it was published is kept apart, only for tags with a
 * heartbeat. */
struct fb_last {
    uint32_t v[2];
    uint32_t q; /* the quality of the last published sample */
};

/* The state of a tag with plausibility rules or a window (pipeline.c keeps
 * it only for those; a tag with just a deadband has only a struct fb_last). */
struct fb_tag_state {
    struct fb_last last;
    int64_t last_ns; /* when last was published (heartbeat) */
    bool have_prev;  /* previous sample seen (for rate / stuck) */
    double prev;
    int64_t prev_ns;
    double cand; /* the last sample refused as a spike: a new level? */
    int64_t cand_ns;
    uint32_t cand_n; /* consecutive refused samples that agree with each other */
    int64_t unchanged_since_ns;
    struct fb_window win;
};

/* 1. scaling: raw numeric → engineering (float64).  Strings/bools pass through. */
void fb_scale_in(const struct fb_tag_proc *p, struct fb_value *v);
/* Set up p's scale from `factor`/`offset` or from two points (raw r0, r1 ↔
 * eng e0, e1; r0 != r1, e0 != e1), including the exact whole-number form. */
void fb_scale_set_factor(struct fb_tag_proc *p, double k, double d);
void fb_scale_set_points(struct fb_tag_proc *p, double r0, double r1, double e0, double e1);
/* inverse, for writes: engineering → raw double */
double fb_scale_out(const struct fb_tag_proc *p, double eng);

/* 2. plausibility: returns the quality to use (q unchanged when plausible). */
uint32_t fb_plausibility(const struct fb_tag_proc *p, struct fb_tag_state *st, const struct fb_value *v, uint32_t q,
                         int64_t ts);

/* 3. deadband: true if the sample must be published (changed enough, quality
 * changed, first value, or heartbeat due).  Updates the state when true;
 * last_ns (when it was published) is needed, and kept, only with a
 * heartbeat (may be NULL without one).  `type` is the tag's type as its
 * samples reach the deadband (fb_tag_out_type): values of that type are
 * remembered exactly (struct fb_last). */
bool fb_deadband_pass(const struct fb_tag_proc *p, struct fb_last *st, int64_t *last_ns, enum fb_type type,
                      const struct fb_value *v, uint32_t q, int64_t ts, bool *heartbeat);

/* 4. windows */
int fb_window_init(struct fb_window *w, uint32_t cap);
void fb_window_free(struct fb_window *w);
void fb_window_add(struct fb_window *w, int64_t ts, double v, int64_t window_ns);
void fb_window_stats(const struct fb_window *w, int64_t now, int64_t window_ns, struct fb_stats *out);

/* The whole chain for the gateway's tags.  State is kept only for the tags
 * that need it: a struct fb_last for a deadband, a struct fb_tag_state for
 * plausibility rules or a window; every tag has one byte of flags. */
struct fb_proc;
struct fb_proc *fb_proc_new(const struct fb_gateway *gw);
/* Bytes of pipeline state (for the memory accounting in BENCHMARKS.md). */
size_t fb_proc_bytes(const struct fb_proc *p);
void fb_proc_free(struct fb_proc *p);
/* Config reload (core/reload.c): the chain made for the new model (built
 * from a gateway object that is then swapped into the running one) reads
 * the running one; a tag whose settings did not change keeps its state
 * (deadband memory, window, plausibility history) — swapped, so each chain
 * still frees what it holds. */
void fb_proc_set_model(struct fb_proc *p, const struct fb_gateway *gw);
void fb_proc_move(struct fb_proc *to, uint32_t to_id, struct fb_proc *from, uint32_t from_id);
/* How many of tags first .. first+n-1 were last published out of
 * specification and Bad (the device's NE107 counters, recounted after a move). */
void fb_proc_quality_counts(const struct fb_proc *p, uint32_t first, uint32_t n, uint32_t *oos, uint32_t *bad);
/* The latest-value slot of a tag (made on the first call, owned by p).  Only
 * before the connection threads run: the pipeline reads the slot pointer
 * without a lock.  NULL for an unknown tag or when out of memory. */
const struct fb_latest *fb_proc_latest(struct fb_proc *p, uint32_t tag);
/* Process `in` (raw samples of one device) into `out` (what to publish).
 * Returns the number of samples appended to out. */
uint32_t fb_proc_batch(struct fb_proc *p, const struct fb_batch *in, struct fb_batch *out);
/* True when no tag of the group has processing configured (no scaling,
 * rules, deadband or window): its batches can then go through the pipeline
 * in place, without being copied into another batch. */
bool fb_proc_plain(const struct fb_proc *p, const struct fb_group *g);
/* fb_proc_batch for such a batch, in place: b then holds what fb_proc_batch
 * would have appended to an empty out.  Returns b->n. */
uint32_t fb_proc_inplace(struct fb_proc *p, struct fb_batch *b);
#endif
