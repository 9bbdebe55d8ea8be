/* pipeline.c — the per-tag chain for whole batches (fb_proc_batch).
 *
 * For each raw sample of a device batch:
 *   scale (numeric → float64 engineering units) → plausibility (quality) →
 *   window add (Good numeric samples only) → deadband → append to `out`.
 * Samples of waveform tags are skipped: the runtime hands their blocks to
 * the vibration analysis (src/vib), whose features come back as batches of
 * their own.
 * All state lives in one array of struct fb_tag_state indexed by tag id and
 * allocated by fb_proc_new together with the window rings, so the hot path
 * never allocates.  Timestamps: plausibility and windows use the sample's
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

static bool out_of_spec(uint32_t q);

struct fb_proc {
    const struct fb_gateway *gw;
    uint32_t ntags;
    struct fb_tag_state *st;
};

static uint32_t window_cap(const struct fb_gateway *gw, const struct fb_tag *t)
{
    int64_t period = 0;
    if (t->device < gw->ndevs && gw->devs) {
        const struct fb_device *d = &gw->devs[t->device];
        if (d->groups && t->group < d->ngroups) period = d->groups[t->group].period_ns;
    }
    uint64_t cap = 1024;
    if (period > 0) cap = (uint64_t)(t->proc.window_ns / period) * 5 / 4 + 4;
    if (cap < 4) cap = 4;
    if (cap > (1u << 20)) cap = 1u << 20;
    return (uint32_t)cap;
}

struct fb_proc *fb_proc_new(const struct fb_gateway *gw)
{
    struct fb_proc *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->gw = gw;
    p->ntags = gw->ntags;
    p->st = gw->ntags ? calloc(gw->ntags, sizeof *p->st) : NULL;
    if (gw->ntags && !p->st) goto fail;
    for (uint32_t i = 0; i < gw->ntags; i++) {
        const struct fb_tag *t = &gw->tags[i];
        if (t->proc.window_ns > 0 && fb_window_init(&p->st[i].win, window_cap(gw, t)) != 0) goto fail;
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

void fb_proc_move(struct fb_proc *to, uint32_t to_id, struct fb_proc *from, uint32_t from_id)
{
    if (!to || !from || to_id >= to->ntags || from_id >= from->ntags) return;
    struct fb_tag_state tmp = to->st[to_id];
    to->st[to_id] = from->st[from_id];
    from->st[from_id] = tmp;
}

void fb_proc_quality_counts(const struct fb_proc *p, uint32_t first, uint32_t n, uint32_t *oos, uint32_t *bad)
{
    *oos = *bad = 0;
    for (uint32_t i = first; p && i < first + n && i < p->ntags; i++) {
        const struct fb_tag_state *st = &p->st[i];
        if (!st->have_last) continue;
        if (out_of_spec(st->last_pub_q)) (*oos)++;
        if (fb_q_bad(st->last_pub_q)) (*bad)++;
    }
}

const struct fb_latest *fb_proc_latest(struct fb_proc *p, uint32_t tag)
{
    if (!p || tag >= p->ntags) return NULL;
    struct fb_tag_state *st = &p->st[tag];
    if (!st->latest) st->latest = calloc(1, sizeof *st->latest);
    return st->latest;
}

void fb_proc_free(struct fb_proc *p)
{
    if (!p) return;
    if (p->st)
        for (uint32_t i = 0; i < p->ntags; i++) {
            fb_window_free(&p->st[i].win);
            free(p->st[i].latest);
        }
    free(p->st);
    free(p);
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
        const struct fb_tag *tag = &p->gw->tags[s->tag];
        if (tag->wave) continue; /* a waveform's blocks go to the analysis (src/vib), its features come back */
        const struct fb_tag_proc *pr = &tag->proc;
        struct fb_tag_state *st = &p->st[s->tag];
        struct fb_value v = s->v;
        int64_t ts = s->ts_src ? s->ts_src : in->ts;
        uint32_t q = s->quality;
        double x;

        fb_scale_in(pr, &v);
        if (pr->out_type == FB_T_FLOAT64 && v.type != FB_T_FLOAT64 && v.type != FB_T_STRING && to_double(&v, &x)) {
            v.type = FB_T_FLOAT64;
            v.f = x;
        }
        uint32_t q_in = q;
        q = fb_plausibility(pr, st, &v, q, ts);
        if (st->latest) { /* a control loop reads this tag: every sample, before the deadband */
            if (!mono) mono = fb_mono_ns();
            double lv = NAN;
            if (v.type != FB_T_STRING && !to_double(&v, &lv)) lv = NAN;
            fb_latest_put(st->latest, v.type == FB_T_STRING ? NAN : lv, q, mono);
        }
        /* refused by the checks, not by the device: keep the reading as "raw" */
        bool refused = !fb_q_bad(q_in) && fb_q_bad(q) && v.type != FB_T_STRING && to_double(&v, &x) && isfinite(x);
        bool win = pr->window_ns > 0 && st->win.t;
        if (win && fb_q_good(q) && v.type != FB_T_STRING && to_double(&v, &x))
            fb_window_add(&st->win, ts, x, pr->window_ns);
        bool hb;
        bool was_oos = st->have_last && out_of_spec(st->last_pub_q);
        bool was_bad = st->have_last && fb_q_bad(st->last_pub_q);
        if (!fb_deadband_pass(pr, st, &v, q, in->ts, &hb)) continue;
        /* NE107: how many tags of the device are outside their range, and how many are Bad */
        bool is_oos = out_of_spec(q), is_bad = fb_q_bad(q);
        if ((is_oos != was_oos || is_bad != was_bad) && tag->device < p->gw->ndevs) {
            struct fb_dev_metrics *dm = (struct fb_dev_metrics *)&p->gw->devs[tag->device].m;
            if (is_oos != was_oos) {
                if (is_oos)
                    atomic_fetch_add(&dm->tags_out_of_spec, 1);
                else
                    atomic_fetch_sub(&dm->tags_out_of_spec, 1);
            }
            if (is_bad != was_bad) {
                if (is_bad)
                    atomic_fetch_add(&dm->tags_bad, 1);
                else
                    atomic_fetch_sub(&dm->tags_bad, 1);
            }
        }

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
        added++;
    }
    return added;
}
