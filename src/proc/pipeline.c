/* pipeline.c — the per-tag chain for whole batches (fb_proc_batch).
 *
 * For each raw sample of a device batch:
 *   scale (numeric → float64 engineering units) → plausibility (quality) →
 *   window add (Good numeric samples only) → deadband → append to `out`.
 * State is allocated by fb_proc_new, so the hot path never allocates, and
 * only where a tag needs it: every tag has one byte of flags (its stages and
 * the NE107 class of its last published quality); a tag with a deadband has a
 * struct fb_last (12 bytes, 8 more with a heartbeat), one with plausibility rules or a window a struct
 * fb_tag_state and its ring, found by the tag's rank among the tags with
 * that kind of state (struct rank: a bit per tag).  A tag with no processing configured — the
 * common case — takes a short path: convert to float64 if its type says so,
 * NaN/±Inf → Bad, append.  Timestamps: plausibility and windows use the sample's
 * Samples of waveform tags are skipped: the runtime hands their blocks to
 * the vibration analysis (src/vib), whose features come back as batches of
 * their own.
 * source time (ts_src, or the batch time if the driver left it 0); deadband
 * and heartbeat use the batch's gateway time (in->ts).  Every published
 * sample keeps ts_src and quality and gets ts_gw = in->ts; a tag with a
 * window gets FB_SF_STATS and its stats appended to out->stats (when the
 * window holds at least one Good sample and out has room).
 *
 * Window capacity: window / poll period × 1.25 + 4 samples (1024 when the
 * period is unknown), clamped to [4, 1<<20]; a tag sampled faster than
 * that keeps only the newest `cap` samples in its window. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "proc/proc.h"

/* Per-tag flags: which stages a tag needs (from its settings, fixed at
 * start), and the NE107 class of its last published quality (the device's
 * out-of-spec and Bad counters move when it changes). */
enum {
    PF_SCALE = 1u << 0, /* scaled: fb_scale_in and float64 out */
    PF_F64 = 1u << 1,   /* float64 out: other numeric types are converted */
    PF_PL = 1u << 2,    /* plausibility rules (range, rate, stuck): struct fb_tag_state */
    PF_DB = 1u << 3,    /* deadband: struct fb_last (in fb_tag_state when it has one) */
    PF_WIN = 1u << 4,   /* window statistics: struct fb_tag_state */
    PF_PUB = 1u << 5,   /* NE107: a value was published, */
    PF_BAD = 1u << 6,   /* … it was Bad, */
    PF_OOS = 1u << 7,   /* … it was out of range */
};
#define PF_NE (PF_PUB | PF_BAD | PF_OOS)

/* A deadband's state is one of these per tag: keep it at 12 bytes. */
_Static_assert(sizeof(struct fb_last) == 12, "struct fb_last grew: one per tag with a deadband");

static bool out_of_spec(uint32_t q);

/* The tags with state of one kind, and each one's index among them (its
 * rank): a bit per tag and a count per 64 tags rather than a 4-byte index
 * per tag (issue 15: memory per tag). */
struct rank {
    uint64_t *bits;
    uint32_t *base; /* base[w]: bits set in bits[0 .. w-1] */
};

static uint32_t rank_of(const struct rank *r, uint32_t i)
{
    uint32_t w = i >> 6;
    return r->base[w] + (uint32_t)__builtin_popcountll(r->bits[w] & ((UINT64_C(1) << (i & 63)) - 1));
}

struct fb_proc {
    const struct fb_gateway *gw;
    uint32_t ntags;
    uint8_t *flags;            /* per tag */
    struct rank rfull, rlast;  /* index into full[] (PF_PL, PF_WIN) or last[] (PF_DB only); NULL bits if none */
    struct fb_tag_state *full; /* tags with plausibility rules or a window */
    struct fb_last *last;      /* tags with only a deadband */
    int64_t *last_ns;          /* beside last[]: when published, if any such tag has a heartbeat */
    uint32_t nfull, nlast;
    size_t win_bytes;
    struct fb_latest **latest; /* per tag, made at the first fb_proc_latest; NULL when none was asked for */
    bool has_wave;             /* some tag is a waveform (src/vib): its samples are skipped */
};

static uint32_t window_cap(const struct fb_gateway *gw, const struct fb_tag *t)
{
    int64_t period = 0;
    if (t->device < gw->ndevs && gw->devs) {
        const struct fb_device *d = &gw->devs[t->device];
        if (d->groups && t->group < d->ngroups) period = d->groups[t->group].period_ns;
    }
    uint64_t cap = 1024;
    if (period > 0) cap = (uint64_t)(fb_tproc(t)->window_ns / period) * 5 / 4 + 4;
    if (cap < 4) cap = 4;
    if (cap > (1u << 20)) cap = 1u << 20;
    return (uint32_t)cap;
}

static uint8_t tag_flags(const struct fb_tag *t)
{
    const struct fb_tag_proc *pr = fb_tproc(t);
    uint8_t f = 0;
    if (pr->scaled) f |= PF_SCALE;
    if (fb_tag_out_type(t) == FB_T_FLOAT64) f |= PF_F64;
    if (pr->has_min || pr->has_max || pr->max_rate > 0 || pr->stuck_ns > 0) f |= PF_PL;
    if (pr->db_abs > 0 || pr->db_pct > 0) f |= PF_DB;
    if (pr->window_ns > 0) f |= PF_WIN;
    return f;
}

struct fb_proc *fb_proc_new(const struct fb_gateway *gw)
{
    struct fb_proc *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->gw = gw;
    p->ntags = gw->ntags;
    p->flags = calloc(gw->ntags ? gw->ntags : 1, 1);
    if (!p->flags) goto fail;
    for (uint32_t i = 0; i < gw->ntags; i++) {
        if (fb_tag_is_wave(&gw->tags[i])) p->has_wave = true;
        uint8_t f = tag_flags(&gw->tags[i]);
        p->flags[i] = f;
        if (f & (PF_PL | PF_WIN))
            p->nfull++;
        else if (f & PF_DB)
            p->nlast++;
    }
    if (p->nfull + p->nlast) {
        size_t nw = (gw->ntags + 63) / 64;
        p->rfull.bits = calloc(nw, sizeof *p->rfull.bits);
        p->rlast.bits = calloc(nw, sizeof *p->rlast.bits);
        p->rfull.base = calloc(nw, sizeof *p->rfull.base);
        p->rlast.base = calloc(nw, sizeof *p->rlast.base);
        p->full = p->nfull ? calloc(p->nfull, sizeof *p->full) : NULL;
        p->last = p->nlast ? calloc(p->nlast, sizeof *p->last) : NULL;
        bool hb = false;
        for (uint32_t i = 0; i < gw->ntags && !hb; i++)
            hb = (p->flags[i] & (PF_PL | PF_WIN | PF_DB)) == PF_DB && fb_tproc(&gw->tags[i])->heartbeat_ns > 0;
        p->last_ns = hb ? calloc(p->nlast, sizeof *p->last_ns) : NULL;
        if (!p->rfull.bits || !p->rlast.bits || !p->rfull.base || !p->rlast.base || (p->nfull && !p->full) ||
            (p->nlast && !p->last) || (hb && !p->last_ns))
            goto fail;
        uint32_t nf = 0;
        for (uint32_t i = 0; i < gw->ntags; i++) {
            uint8_t f = p->flags[i];
            if (f & (PF_PL | PF_WIN)) {
                p->rfull.bits[i >> 6] |= UINT64_C(1) << (i & 63);
                const struct fb_tag *t = &gw->tags[i];
                uint32_t cap = window_cap(gw, t);
                if ((f & PF_WIN) && fb_window_init(&p->full[nf].win, cap) != 0) goto fail;
                if (f & PF_WIN) p->win_bytes += (size_t)cap * 24;
                nf++;
            } else if (f & PF_DB) {
                p->rlast.bits[i >> 6] |= UINT64_C(1) << (i & 63);
            }
        }
        for (size_t w = 1; w < nw; w++) {
            p->rfull.base[w] = p->rfull.base[w - 1] + (uint32_t)__builtin_popcountll(p->rfull.bits[w - 1]);
            p->rlast.base[w] = p->rlast.base[w - 1] + (uint32_t)__builtin_popcountll(p->rlast.bits[w - 1]);
        }
    }
    return p;
fail:
    fb_proc_free(p);
    return NULL;
}

void fb_proc_set_model(struct fb_proc *p, const struct fb_gateway *gw)
{
    if (p) p->gw = gw;
}

/* The caller moves only tags with equal settings, so both chains keep the
 * same kind of state for it (the same stage flags): the NE107 class of its
 * last published quality, and its fb_tag_state or fb_last (with the time of
 * its last publication when it has a heartbeat). */
void fb_proc_move(struct fb_proc *to, uint32_t to_id, struct fb_proc *from, uint32_t from_id)
{
    if (!to || !from || to_id >= to->ntags || from_id >= from->ntags) return;
    uint8_t ft = to->flags[to_id], ff = from->flags[from_id];
    if ((ft & ~PF_NE) != (ff & ~PF_NE)) return; /* not the same stages: nothing to carry over */
    to->flags[to_id] = (uint8_t)((ft & ~PF_NE) | (ff & PF_NE));
    from->flags[from_id] = (uint8_t)((ff & ~PF_NE) | (ft & PF_NE));
    if (ft & (PF_PL | PF_WIN)) {
        uint32_t a = rank_of(&to->rfull, to_id), b = rank_of(&from->rfull, from_id);
        struct fb_tag_state tmp = to->full[a];
        to->full[a] = from->full[b];
        from->full[b] = tmp;
    } else if (ft & PF_DB) {
        uint32_t a = rank_of(&to->rlast, to_id), b = rank_of(&from->rlast, from_id);
        struct fb_last tmp = to->last[a];
        to->last[a] = from->last[b];
        from->last[b] = tmp;
        if (to->last_ns && from->last_ns) {
            int64_t t = to->last_ns[a];
            to->last_ns[a] = from->last_ns[b];
            from->last_ns[b] = t;
        }
    }
}

void fb_proc_quality_counts(const struct fb_proc *p, uint32_t first, uint32_t n, uint32_t *oos, uint32_t *bad)
{
    *oos = *bad = 0;
    for (uint32_t i = first; p && i < first + n && i < p->ntags; i++) {
        uint8_t f = p->flags[i];
        if (!(f & PF_PUB)) continue;
        if (f & PF_OOS) (*oos)++;
        if (f & PF_BAD) (*bad)++;
    }
}

const struct fb_latest *fb_proc_latest(struct fb_proc *p, uint32_t tag)
{
    if (!p || tag >= p->ntags) return NULL;
    if (!p->latest) p->latest = calloc(p->ntags, sizeof *p->latest);
    if (!p->latest) return NULL;
    if (!p->latest[tag]) p->latest[tag] = calloc(1, sizeof *p->latest[tag]);
    return p->latest[tag];
}

void fb_proc_free(struct fb_proc *p)
{
    if (!p) return;
    for (uint32_t i = 0; p->full && i < p->nfull; i++) fb_window_free(&p->full[i].win);
    free(p->full);
    free(p->last);
    free(p->last_ns);
    free(p->rfull.bits);
    free(p->rlast.bits);
    free(p->rfull.base);
    free(p->rlast.base);
    free(p->flags);
    for (uint32_t i = 0; p->latest && i < p->ntags; i++) free(p->latest[i]);
    free(p->latest);
    free(p);
}

size_t fb_proc_bytes(const struct fb_proc *p)
{
    if (!p) return 0;
    size_t nw = p->rfull.bits ? (p->ntags + 63) / 64 : 0;
    return sizeof *p + p->ntags + nw * 2 * (sizeof *p->rfull.bits + sizeof *p->rfull.base) + p->nfull * sizeof *p->full +
           p->nlast * sizeof *p->last + (p->last_ns ? p->nlast * sizeof *p->last_ns : 0) + p->win_bytes +
           (p->latest ? p->ntags * sizeof *p->latest : 0);
}

/* A float32 counts as its shortest decimal (7.77f → 7.77), so window
 * statistics of a float32 tag print as the device's values do. */
static bool to_double(const struct fb_value *v, double *x)
{
    if (v->type == FB_T_FLOAT32) {
        *x = fb_float_widen((float)v->f);
        return true;
    }
    return fb_value_to_double(v, x);
}

static bool out_of_spec(uint32_t q)
{
    uint32_t k = q & 0xFFFF0000u;
    return k == FB_Q_BAD_OUT_OF_RANGE || k == FB_Q_UNC_EU_EXCEEDED;
}

/* The device's NE107 counters follow the class of each tag's last published
 * quality (out of range, Bad). */
static __attribute__((noinline)) void ne107_moved(struct fb_proc *p, uint32_t tag, uint8_t f, uint8_t now)
{
    p->flags[tag] = (uint8_t)((f & ~PF_NE) | now);
    const struct fb_tag *tag_ = &p->gw->tags[tag];
    if (tag_->device >= p->gw->ndevs) return;
    struct fb_dev_metrics *dm = (struct fb_dev_metrics *)&p->gw->devs[tag_->device].m;
    if ((f ^ now) & PF_OOS) {
        if (now & PF_OOS)
            atomic_fetch_add(&dm->tags_out_of_spec, 1);
        else
            atomic_fetch_sub(&dm->tags_out_of_spec, 1);
    }
    if ((f ^ now) & PF_BAD) {
        if (now & PF_BAD)
            atomic_fetch_add(&dm->tags_bad, 1);
        else
            atomic_fetch_sub(&dm->tags_bad, 1);
    }
}

static inline void ne107(struct fb_proc *p, uint32_t tag, uint32_t q)
{
    uint8_t f = p->flags[tag];
    uint8_t now = PF_PUB | (fb_q_bad(q) ? PF_BAD : 0) | (out_of_spec(q) ? PF_OOS : 0);
    if ((f & PF_NE) != now) ne107_moved(p, tag, f, now);
}

/* A NaN is BadSensorFailure and ±Inf BadOutOfRange (JSON carries them as
 * null), with or without rules — what fb_plausibility does first. */
static uint32_t finite_q(const struct fb_value *v, uint32_t q)
{
    if (fb_q_bad(q) || !fb_type_is_float((enum fb_type)v->type) || isfinite(v->f)) return q;
    return isnan(v->f) ? FB_Q_BAD_SENSOR_FAILURE : FB_Q_BAD_OUT_OF_RANGE;
}

/* A control loop reads this tag: every sample, after plausibility and
 * before the deadband (which decides what is published, not what is true). */
static void latest_put(struct fb_proc *p, uint32_t tag, const struct fb_value *v, uint32_t q, int64_t *mono)
{
    struct fb_latest *l = p->latest[tag];
    if (!l) return;
    if (!*mono) *mono = fb_mono_ns();
    double lv = NAN;
    if (v->type == FB_T_STRING || !to_double(v, &lv)) lv = NAN;
    fb_latest_put(l, lv, q, *mono);
}

bool fb_proc_plain(const struct fb_proc *p, const struct fb_group *g)
{
    for (uint32_t i = 0; i < g->ntags; i++)
        if (fb_group_tag(g, i) >= p->ntags || (p->flags[fb_group_tag(g, i)] & (PF_SCALE | PF_PL | PF_DB | PF_WIN)) ||
            fb_tag_is_wave(&p->gw->tags[fb_group_tag(g, i)]))
            return false; /* a waveform's blocks are not published: fb_proc_batch skips them */
    return true;
}

uint32_t fb_proc_inplace(struct fb_proc *p, struct fb_batch *b)
{
    if (!p || !b || b->kind != FB_BATCH_DATA) return 0;
    uint32_t k = 0;
    double x;
    int64_t mono = 0; /* read once per batch, only when a sample has a latest-value slot */
    for (uint32_t i = 0; i < b->n; i++) {
        struct fb_sample *s = &b->s[i];
        if (s->tag >= p->ntags) continue; /* not ours: dropped, as fb_proc_batch does */
        uint8_t f = p->flags[s->tag];
        if ((f & PF_F64) && s->v.type != FB_T_FLOAT64 && s->v.type != FB_T_STRING && to_double(&s->v, &x)) {
            s->v.type = FB_T_FLOAT64;
            s->v.f = x;
        }
        s->quality = finite_q(&s->v, s->quality);
        if (p->latest) latest_put(p, s->tag, &s->v, s->quality, &mono);
        s->ts_gw = b->ts;
        s->flags &= FB_SF_HISTORICAL;
        s->stats = 0;
        ne107(p, s->tag, s->quality);
        if (k != i) b->s[k] = *s;
        k++;
    }
    b->n = k;
    b->nstats = 0;
    return k;
}

uint32_t fb_proc_batch(struct fb_proc *p, const struct fb_batch *in, struct fb_batch *out)
{
    if (!p || !in || !out || in->kind != FB_BATCH_DATA) return 0;
    out->kind = FB_BATCH_DATA;
    out->device = in->device;
    out->ts = in->ts;
    uint32_t added = 0;
    int64_t mono = 0; /* read once per batch, only when a sample has a latest-value slot */
    for (uint32_t i = 0; i < in->n; i++) {
        const struct fb_sample *s = &in->s[i];
        if (s->tag >= p->ntags) continue; /* not ours: never index out of bounds */
        uint8_t f = p->flags[s->tag];
        if (p->has_wave && fb_tag_is_wave(&p->gw->tags[s->tag])) continue; /* blocks go to the analysis (src/vib) */
        struct fb_value v = s->v;
        uint32_t q = s->quality;
        double x;
        if (!(f & (PF_SCALE | PF_PL | PF_DB | PF_WIN))) {
            /* the common case: no processing configured — convert, check, publish */
            if ((f & PF_F64) && v.type != FB_T_FLOAT64 && v.type != FB_T_STRING && to_double(&v, &x)) {
                v.type = FB_T_FLOAT64;
                v.f = x;
            }
            q = finite_q(&v, q);
            if (p->latest) latest_put(p, s->tag, &v, q, &mono);
            struct fb_sample *o;
            if (v.type == FB_T_STRING) {
                o = fb_batch_add(out, s->tag, q, s->ts_src, &v); /* copies the bytes into out's arena */
            } else {
                o = out->n < out->cap ? &out->s[out->n++] : NULL;
                if (o) *o = (struct fb_sample){.tag = s->tag, .quality = q, .ts_src = s->ts_src, .v = v};
            }
            if (!o) break; /* out is sized for a whole device batch: an invariant */
            o->ts_gw = in->ts;
            o->flags = s->flags & FB_SF_HISTORICAL;
            ne107(p, s->tag, q);
            added++;
            continue;
        }
        const struct fb_tag *tag = &p->gw->tags[s->tag];
        const struct fb_tag_proc *pr = fb_tproc(tag);
        struct fb_tag_state *st = (f & (PF_PL | PF_WIN)) ? &p->full[rank_of(&p->rfull, s->tag)] : NULL;
        uint32_t li = !st && (f & PF_DB) ? rank_of(&p->rlast, s->tag) : 0;
        struct fb_last *last = st ? &st->last : (f & PF_DB) ? &p->last[li] : NULL;
        int64_t *last_ns = st ? &st->last_ns : (f & PF_DB) && p->last_ns ? &p->last_ns[li] : NULL;
        int64_t ts = s->ts_src ? s->ts_src : in->ts;

        fb_scale_in(pr, &v);
        if ((f & PF_F64) && v.type != FB_T_FLOAT64 && v.type != FB_T_STRING && to_double(&v, &x)) {
            v.type = FB_T_FLOAT64;
            v.f = x;
        }
        uint32_t q_in = q;
        q = (f & PF_PL) ? fb_plausibility(pr, st, &v, q, ts) : finite_q(&v, q);
        if (p->latest) latest_put(p, s->tag, &v, q, &mono);
        /* refused by the checks, not by the device: keep the reading as "raw" */
        bool refused = !fb_q_bad(q_in) && fb_q_bad(q) && v.type != FB_T_STRING && to_double(&v, &x) && isfinite(x);
        bool win = (f & PF_WIN) && st->win.t;
        if (win && fb_q_good(q) && v.type != FB_T_STRING && to_double(&v, &x))
            fb_window_add(&st->win, ts, x, pr->window_ns);
        bool hb = false;
        if ((f & PF_DB) && !fb_deadband_pass(pr, last, last_ns, fb_tag_out_type(tag), &v, q, in->ts, &hb)) continue;

        struct fb_sample *o = fb_batch_add(out, s->tag, q, s->ts_src, &v);
        if (!o) break; /* out is sized for a whole device batch: an invariant */
        o->ts_gw = in->ts;
        o->flags = (s->flags & FB_SF_HISTORICAL) | (hb ? FB_SF_HEARTBEAT : 0) | (refused ? FB_SF_RAW : 0);
        if (win && out->nstats < out->cap_stats) {
            struct fb_stats *stt = &out->stats[out->nstats];
            fb_window_stats(&st->win, ts, pr->window_ns, stt);
            if (stt->count) {
                o->flags |= FB_SF_STATS;
                o->stats = out->nstats++;
            }
        }
        ne107(p, s->tag, q);
        added++;
    }
    return added;
}
