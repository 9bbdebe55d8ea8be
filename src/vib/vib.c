/* vib.c — the vibration analysis while the gateway runs (vib.h).
 *
 * Path of a block.  A driver takes an empty block from its waveform tag's
 * pool (VIB_BLOCKS blocks, allocated here at start), fills it and puts it
 * into its raw batch as one FB_T_BLOCK sample.  Before the pipeline, the
 * connection thread hands the sample to the channel's analysis thread
 * (fb_vib_take: a reference and four words into a ring allocated at start;
 * nothing is copied).  The analysis thread computes the features
 * (vib/dsp.c), updates the baseline and its alarms (vib/anomaly.c), and
 * publishes the features as an ordinary batch of the device's feature tags
 * through the pipeline stages and fb_publish — so every sink publishes them
 * like any tag, and the edge thread can use them in expressions, alarms and
 * scripts (their batches carry group FB_GROUP_FEATURES, which it takes).
 * Then the block goes back to its pool.
 *
 * Why threads of their own.  One block of 25,600 samples costs about 0.4 ms
 * of CPU with every feature (BENCHMARKS.md), more on a slow ARM core; on a
 * connection thread that is poll jitter per waveform tag for every other
 * device on the line, and on the edge thread the same delay for every
 * expression and alarm of the gateway.  So the analysis has
 * `vibration.threads` threads (default 1), each owning a fixed share of the
 * channels (channel i → thread i mod threads), so one channel's blocks are
 * analysed in order and its state needs no lock, and each with its own FFT
 * plans and buffers (kissfft's real plans keep scratch space: not shareable
 * between threads), shared by its channels of the same block shape.
 *
 * Overload.  A channel has VIB_BLOCKS blocks.  When the analysis falls
 * behind they are all in use, the driver gets none, and the acquisition is
 * dropped and counted (status: "dropped") — the poll loop never waits.
 *
 * Alarms.  The ISO zone alarms (C, D) and the anomaly and trend alarms are
 * external alarms of the alarm table (edge/alarms.h), so they get the
 * ISA-18.2 states, acknowledge and shelve, the journal and publication on
 * every sink; fb_alarm_set is called on transitions only (it fsyncs the
 * journal).  A zone alarm clears below its limit minus the deadband.
 */
#include "vib/vib.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/block.h"
#include "core/log.h"
#include "core/publish.h"
#include "core/runtime_state.h"
#include "core/thread.h"
#include "edge/alarms.h"
#include "proc/proc.h"
#include "vib/anomaly.h"
#include "vib/baseline.h"
#include "vib/dsp.h"
#include "vib/features.h"
#include "vib/vib_cfg.h"

#define VIB_BLOCKS 4      /* per channel: filling, queued, being analysed, one spare */
#define VIB_OUT_BATCHES 4 /* per thread: feature batches on their way to the sinks */

struct item {
    uint32_t chan, q;
    int64_t ts;
    struct fb_block *blk; /* NULL: a sample without a block (the device failed) */
};

struct worker {
    struct fb_vib_rt *v;
    uint32_t idx;
    pthread_t thr;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct item *ring; /* under mu */
    uint32_t cap, head, len;
    bool stop;
    struct fb_dsp **dsp; /* one per distinct block shape of its channels */
    uint32_t *shape;     /* 2 per dsp: n, env_m */
    uint32_t ndsp;
    struct fb_batch *raw;
    struct fb_batch_pool *pool;
};

struct chan {
    struct fb_vib_chan *c;
    struct fb_tag *t;
    struct fb_wave *w; /* t's (gw->waves) */
    struct worker *wk;
    struct fb_dsp *dsp;
    struct fb_anom anom;
    bool has_anom;
    bool iso_c, iso_d;           /* the zone alarms as last set */
    _Atomic uint64_t speed_bits; /* double Hz from the speed tag (NaN: none) */
    _Atomic uint32_t speed_q;
    const char **names;        /* monitored features' names, for the baseline file */
    struct fb_anom_base *snap; /* the baseline as last learnt (under snap_mu) */
    uint32_t snap_learned;
    char by[160];         /* "vibration:conveyor/accel" */
    char path[128];       /* "conveyor/accel": logs and the baseline file */
    char speed_path[128]; /* its speed tag's "device/name" ("": none): a reload carries the speed by it */
    bool carried;         /* its baseline came from the running analysis (a reload), not from the file */
};

struct fb_vib_rt {
    struct fb_gateway *gw;
    struct fb_vib *cfg;
    struct chan *ch;
    struct worker *wk;
    uint32_t nwk;
    uint8_t *dev_watch; /* per device: it has a waveform or a speed tag */
    uint8_t *speed_tag; /* per tag: it is some channel's speed */
    char file[1100];
    bool persist;
    pthread_mutex_t snap_mu; /* snapshots, dirty, the file */
    bool dirty;
    int64_t last_save;
    struct fb_baseline_rec *recs;
    struct fb_ratelimit rl_save;
};

static double load_d(_Atomic uint64_t *a)
{
    uint64_t b = atomic_load(a);
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static void store_d(_Atomic uint64_t *a, double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    atomic_store(a, b);
}

/* ---------------------------------------------------------- the input */
static void enqueue(struct fb_vib_rt *v, struct fb_wave *w, const struct fb_sample *s, int64_t ts)
{
    struct chan *ch = &v->ch[w->chan];
    struct worker *wk = ch->wk;
    struct fb_block *blk = s->v.type == FB_T_BLOCK ? s->v.blk : NULL;
    pthread_mutex_lock(&wk->mu);
    if (wk->len == wk->cap || wk->stop) {
        pthread_mutex_unlock(&wk->mu);
        if (blk) atomic_fetch_add(&w->dropped, 1);
        return;
    }
    if (blk) fb_block_ref(blk);
    wk->ring[(wk->head + wk->len) % wk->cap] =
        (struct item){w->chan, s->quality, s->ts_src ? s->ts_src : ts, blk};
    wk->len++;
    pthread_cond_signal(&wk->cv);
    pthread_mutex_unlock(&wk->mu);
}

static void note_speed(struct fb_vib_rt *v, const struct fb_tag *t, const struct fb_sample *s)
{
    struct fb_value val = s->v;
    double x = NAN;
    if (val.type != FB_T_NONE && val.type != FB_T_STRING) {
        fb_scale_in(fb_tproc(t), &val);
        if (!fb_value_to_double(&val, &x)) x = NAN;
    }
    for (uint32_t i = 0; i < v->cfg->nch; i++) {
        struct chan *ch = &v->ch[i];
        if (ch->c->speed_tag != t->id) continue;
        store_d(&ch->speed_bits, isfinite(x) && x > 0 ? x * ch->c->speed_k : NAN);
        atomic_store(&ch->speed_q, isfinite(x) ? s->quality : FB_Q_BAD_OUT_OF_RANGE);
    }
}

void fb_vib_take(struct fb_gateway *gw, const struct fb_batch *in)
{
    struct fb_vib_rt *v = gw->rt ? gw->rt->vib : NULL;
    if (!v || in->kind != FB_BATCH_DATA || in->device >= gw->ndevs || !v->dev_watch[in->device]) return;
    for (uint32_t i = 0; i < in->n; i++) {
        const struct fb_sample *s = &in->s[i];
        if (s->tag >= gw->ntags) continue;
        const struct fb_tag *t = &gw->tags[s->tag];
        struct fb_wave *w = fb_tag_wave(gw, t);
        if (w)
            enqueue(v, w, s, in->ts);
        else if (v->speed_tag[s->tag])
            note_speed(v, t, s);
    }
}

/* ------------------------------------------------------------ saving */
/* The baseline file, when it changed (only while learning: then it is
 * frozen) and save_ns passed since the last write, or when forced. */
static void save(struct fb_vib_rt *v, bool force)
{
    if (!v->persist) return;
    pthread_mutex_lock(&v->snap_mu);
    int64_t now = fb_mono_ns();
    if (!v->dirty || (!force && now - v->last_save < v->cfg->save_ns)) {
        pthread_mutex_unlock(&v->snap_mu);
        return;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < v->cfg->nch; i++) {
        struct chan *ch = &v->ch[i];
        if (!ch->has_anom) continue;
        v->recs[n++] =
            (struct fb_baseline_rec){ch->path, ch->c->fingerprint, ch->snap_learned, ch->c->nmon, ch->names, ch->snap};
    }
    struct fb_err e = {0};
    if (fb_baseline_write(v->file, v->recs, n, &e) < 0) {
        if (fb_ratelimit_ok(&v->rl_save, now)) fb_warn(NULL, NULL, "vibration: baseline not saved: %s", e.msg);
    } else {
        v->dirty = false;
    }
    v->last_save = now;
    pthread_mutex_unlock(&v->snap_mu);
}

static void restored(void *ctx, const struct fb_baseline_rec *r)
{
    struct fb_vib_rt *v = ctx;
    for (uint32_t i = 0; i < v->cfg->nch; i++) {
        struct chan *ch = &v->ch[i];
        if (!ch->has_anom || strcmp(ch->path, r->tag)) continue;
        if (ch->carried) return; /* a reload took the running one over: newer than the file */
        bool same = r->fingerprint == ch->c->fingerprint && r->nf == ch->c->nmon;
        for (uint32_t k = 0; same && k < r->nf; k++) same = !strcmp(r->names[k], ch->names[k]);
        if (!same) {
            fb_warn(ch->path, NULL,
                    "vibration: the saved baseline was learnt with other analysis settings: learning again (%u blocks)",
                    ch->c->acfg.learn_blocks);
            v->dirty = true; /* the old one is replaced at the first save */
            return;
        }
        memcpy(ch->anom.base, r->base, r->nf * sizeof *r->base);
        ch->anom.learned = r->learned < ch->c->acfg.learn_blocks ? r->learned : ch->c->acfg.learn_blocks;
        memcpy(ch->snap, r->base, r->nf * sizeof *r->base);
        ch->snap_learned = ch->anom.learned;
        atomic_store(&ch->w->learned, ch->anom.learned);
        fb_info(ch->path, NULL, "vibration: baseline restored (%u of %u blocks learnt)", ch->anom.learned,
                ch->c->acfg.learn_blocks);
        return;
    }
}

/* ---------------------------------------------------------- analysing */
static void publish_raw(struct worker *wk)
{
    struct fb_gateway *gw = wk->v->gw;
    struct fb_batch *out = fb_batch_pool_get(wk->pool);
    if (!out) return;
    out->kind = FB_BATCH_DATA;
    out->device = wk->raw->device;
    out->ts = wk->raw->ts;
    fb_proc_batch(gw->rt->proc, wk->raw, out);
    out->group = FB_GROUP_FEATURES;
    if (out->n) fb_publish(gw, out);
    fb_batch_unref(out);
}

static void add_num(struct fb_batch *raw, uint32_t tag, double x, uint32_t q, int64_t ts)
{
    if (!isfinite(x) && !fb_q_bad(q)) q = FB_Q_BAD_OUT_OF_RANGE;
    if (fb_q_bad(q)) {
        fb_batch_add(raw, tag, q, ts, NULL);
        return;
    }
    struct fb_value v = {.type = FB_T_FLOAT64, .f = x};
    fb_batch_add(raw, tag, q, ts, &v);
}

static void set_alarm(struct fb_vib_rt *v, uint32_t id, bool on, double value, const char *by)
{
    if (id == UINT32_MAX) return;
    int rc = fb_alarm_set(v->gw, id, on, value, by);
    if (rc < 0) fb_warn(NULL, NULL, "vibration: alarm %s: %s", v->gw->alarms[id].path, fb_strerror(rc));
}

static void analyse(struct worker *wk, const struct item *it)
{
    struct fb_vib_rt *v = wk->v;
    struct chan *ch = &v->ch[it->chan];
    const struct fb_vib_chan *c = ch->c;
    struct fb_tag *t = ch->t;
    struct fb_wave *w = ch->w;
    struct timespec c0, c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    struct fb_batch *raw = wk->raw;
    fb_batch_reset(raw);
    raw->device = t->device;
    raw->ts = fb_now_ns();
    int64_t ts = it->blk && it->blk->ts ? it->blk->ts : it->ts ? it->ts : raw->ts;
    uint32_t first = w->first_feature;
    if (!it->blk || fb_q_bad(it->q) || it->blk->n != c->n) {
        /* no signal: every feature carries the reason (the device's quality) */
        uint32_t q = fb_q_bad(it->q) ? it->q : FB_Q_BAD_INTERNAL;
        for (uint32_t k = 0; k < c->nout; k++) fb_batch_add(raw, first + k, q, ts, NULL);
        publish_raw(wk);
        return;
    }
    const struct fb_tag_proc *tp = fb_tproc(t);
    double kk = tp->scaled ? tp->k : 1.0, dd = tp->scaled ? tp->d : 0.0;
    double fr = load_d(&ch->speed_bits); /* from the speed tag, if the channel has one */
    uint32_t fq = atomic_load(&ch->speed_q);
    double vals[FB_VIB_MAX_OUT];
    uint32_t quals[FB_VIB_MAX_OUT];
    double vel = fb_vib_features(c, ch->dsp, it->blk->x, kk, dd, fr, fq, vals, quals);
    /* anomaly and trend */
    struct fb_anom_out ao = {.zmax = NAN, .trend = NAN, .learning = true};
    if (ch->has_anom) {
        double mv[FB_VIB_MAX_OUT];
        for (uint32_t m = 0; m < c->nmon; m++) mv[m] = vals[c->mon[m]];
        uint32_t before = ch->anom.learned;
        fb_anom_update(&ch->anom, mv, &ao);
        atomic_store(&w->learned, ch->anom.learned);
        if (ch->anom.learned != before) {
            pthread_mutex_lock(&v->snap_mu);
            memcpy(ch->snap, ch->anom.base, c->nmon * sizeof *ch->snap);
            ch->snap_learned = ch->anom.learned;
            v->dirty = true;
            pthread_mutex_unlock(&v->snap_mu);
            if (ch->anom.learned == c->acfg.learn_blocks) {
                fb_info(ch->path, NULL, "vibration: baseline learnt from %u blocks", ch->anom.learned);
                save(v, true);
            }
        }
        if (ao.z_event) {
            char by[200];
            snprintf(by, sizeof by, "%s (%s z=%.1f)", ch->by, ch->names[ao.zfeat], ao.zmax);
            set_alarm(v, c->alarm_z, ao.z_event > 0, ao.zmax, by);
        }
        if (ao.t_event) {
            char by[200];
            snprintf(by, sizeof by, "%s (%s %+.0f%% per window)", ch->by, ch->names[ao.tfeat], ao.trend * 100);
            set_alarm(v, c->alarm_trend, ao.t_event > 0, ao.trend * 100, by);
        }
    }
    /* ISO zone alarms, with the deadband below each limit */
    if (c->iso && isfinite(vel)) {
        bool was_c = ch->iso_c, was_d = ch->iso_d;
        if (fb_vib_iso_alarms(c->iso_limits, c->iso_deadband, vel, &ch->iso_c, &ch->iso_d)) {
            if (ch->iso_c != was_c) set_alarm(v, c->alarm_c, ch->iso_c, vel, ch->by);
            if (ch->iso_d != was_d) set_alarm(v, c->alarm_d, ch->iso_d, vel, ch->by);
        }
    }
    for (uint32_t k = 0; k < c->nout; k++) {
        const struct fb_vib_out *o = &c->out[k];
        uint32_t tag = first + k;
        switch (o->kind) {
            case FB_VO_ISO:
                if (!fb_q_bad(quals[k])) {
                    const char *z = fb_vib_zone_names[(int)vals[k]];
                    struct fb_value zv = {.type = FB_T_STRING, .s = {z, 1}};
                    fb_batch_add(raw, tag, FB_Q_GOOD, ts, &zv);
                } else {
                    fb_batch_add(raw, tag, quals[k], ts, NULL);
                }
                break;
            case FB_VO_ANOM: add_num(raw, tag, ao.zmax, ao.learning ? FB_Q_BAD_WAITING : FB_Q_GOOD, ts); break;
            case FB_VO_TREND:
                add_num(raw, tag, ao.trend * 100, ao.learning || isnan(ao.trend) ? FB_Q_BAD_WAITING : FB_Q_GOOD, ts);
                break;
            default: add_num(raw, tag, vals[k], quals[k], ts); break;
        }
    }
    publish_raw(wk);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    atomic_fetch_add(&w->blocks, 1);
    atomic_fetch_add(&w->cpu_ns, (uint64_t)((c1.tv_sec - c0.tv_sec) * 1000000000LL + (c1.tv_nsec - c0.tv_nsec)));
}

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    for (;;) {
        pthread_mutex_lock(&wk->mu);
        while (!wk->len && !wk->stop) pthread_cond_wait(&wk->cv, &wk->mu);
        if (!wk->len) { /* stopping, and everything queued is done */
            pthread_mutex_unlock(&wk->mu);
            break;
        }
        struct item it = wk->ring[wk->head];
        wk->head = (wk->head + 1) % wk->cap;
        wk->len--;
        pthread_mutex_unlock(&wk->mu);
        analyse(wk, &it);
        if (it.blk) fb_block_unref(it.blk);
        save(wk->v, false);
    }
    return NULL;
}

/* ------------------------------------------------------------- set-up */
static void rt_stop(struct fb_vib_rt *v)
{
    bool any = false;
    for (uint32_t i = 0; v->wk && i < v->nwk; i++) {
        struct worker *wk = &v->wk[i];
        pthread_mutex_lock(&wk->mu);
        wk->stop = true;
        pthread_cond_broadcast(&wk->cv);
        pthread_mutex_unlock(&wk->mu);
        if (wk->started) {
            pthread_join(wk->thr, NULL);
            wk->started = false;
            any = true;
        }
    }
    if (any) save(v, true);
}

/* Stopped first.  The channels' tags (ch->t: their block pools) and v->cfg
 * are those of the model v was started on, which must still be there. */
static void rt_free(struct fb_vib_rt *v)
{
    rt_stop(v);
    for (uint32_t i = 0; v->wk && i < v->nwk; i++) {
        struct worker *wk = &v->wk[i];
        while (wk->len) { /* never analysed (the thread did not start) */
            if (wk->ring[wk->head].blk) fb_block_unref(wk->ring[wk->head].blk);
            wk->head = (wk->head + 1) % wk->cap;
            wk->len--;
        }
        for (uint32_t k = 0; k < wk->ndsp; k++) fb_dsp_free(wk->dsp[k]);
        free(wk->dsp);
        free(wk->shape);
        free(wk->ring);
        fb_batch_free(wk->raw);
        fb_batch_pool_free(wk->pool);
        pthread_mutex_destroy(&wk->mu);
        pthread_cond_destroy(&wk->cv);
    }
    free(v->wk);
    for (uint32_t i = 0; v->ch && i < v->cfg->nch; i++) {
        struct chan *ch = &v->ch[i];
        if (ch->has_anom) fb_anom_free(&ch->anom);
        free(ch->names);
        free(ch->snap);
        if (ch->w) {
            fb_block_pool_free(ch->w->pool);
            ch->w->pool = NULL;
        }
    }
    free(v->ch);
    free(v->recs);
    free(v->dev_watch);
    free(v->speed_tag);
    pthread_mutex_destroy(&v->snap_mu);
    free(v);
}

void fb_vib_free(struct fb_gateway *gw)
{
    struct fb_vib_rt *v = gw->rt ? gw->rt->vib : NULL;
    if (!v) return;
    rt_free(v);
    gw->rt->vib = NULL;
}

void fb_vib_stop(struct fb_gateway *gw)
{
    struct fb_vib_rt *v = gw->rt ? gw->rt->vib : NULL;
    if (v) rt_stop(v);
}

struct fb_vib_rt *fb_vib_detach(struct fb_gateway *gw)
{
    struct fb_vib_rt *v = gw->rt ? gw->rt->vib : NULL;
    if (!v) return NULL;
    rt_stop(v);
    gw->rt->vib = NULL;
    return v;
}

void fb_vib_release(struct fb_vib_rt *v)
{
    if (v) rt_free(v);
}

/* ------------------------------------------------------------- reload */
static bool num_eq(double a, double b) { return a == b || (a != a && b != b); }

bool fb_vib_chan_same(const struct fb_vib_chan *a, const struct fb_vib_chan *b)
{
    if (a->fingerprint != b->fingerprint || a->n != b->n || !num_eq(a->fs, b->fs) || a->nout != b->nout ||
        memcmp(a->out, b->out, a->nout * sizeof *a->out) || a->iso != b->iso || a->iso_group != b->iso_group ||
        a->iso_flexible != b->iso_flexible || a->iso_alarms != b->iso_alarms ||
        !num_eq(a->iso_deadband, b->iso_deadband) || a->anomaly != b->anomaly || a->anom_alarms != b->anom_alarms ||
        a->nmon != b->nmon || memcmp(a->mon, b->mon, a->nmon) || !num_eq(a->speed_k, b->speed_k) ||
        a->nbands != b->nbands)
        return false;
    for (int k = 0; k < 3; k++)
        if (!num_eq(a->iso_limits[k], b->iso_limits[k])) return false;
    for (uint32_t k = 0; k < a->nbands; k++)
        if (strcmp(a->band_name[k] ? a->band_name[k] : "", b->band_name[k] ? b->band_name[k] : "")) return false;
    const struct fb_anom_cfg *x = &a->acfg, *y = &b->acfg;
    return !a->anomaly ||
           (x->learn_blocks == y->learn_blocks && num_eq(x->z_on, y->z_on) && num_eq(x->z_off, y->z_off) &&
            x->min_blocks == y->min_blocks && num_eq(x->min_sigma, y->min_sigma) &&
            x->trend_blocks == y->trend_blocks && num_eq(x->trend_limit, y->trend_limit));
}

/* A learnt baseline is valid for the same analysis of the same signal: the
 * fingerprint (vib_cfg.c) and the monitored features' names. */
static bool baseline_carries(const struct fb_vib_chan *a, const char *const *an, const struct fb_vib_chan *b,
                             const char *const *bn)
{
    if (!a->anomaly || !b->anomaly || a->fingerprint != b->fingerprint || a->nmon != b->nmon) return false;
    for (uint32_t k = 0; k < a->nmon; k++)
        if (strcmp(an[k], bn[k])) return false;
    return true;
}

/* The names of channel c's monitored features in model gw (as the baseline file has them). */
static void mon_names(const struct fb_gateway *gw, const struct fb_vib_chan *c, const char **out)
{
    const struct fb_tag *t = &gw->tags[c->tag];
    size_t pre = strlen(t->name) + 1;
    for (uint32_t k = 0; k < c->nmon; k++) out[k] = gw->tags[fb_tag_wave(gw, t)->first_feature + c->mon[k]].name + pre;
}

bool fb_vib_baseline_carries(const struct fb_gateway *og, const struct fb_vib_chan *a, const struct fb_gateway *ng,
                             const struct fb_vib_chan *b)
{
    const char *an[FB_VIB_MAX_OUT], *bn[FB_VIB_MAX_OUT];
    if (!a->anomaly || !b->anomaly || a->nmon != b->nmon) return false;
    mon_names(og, a, an);
    mon_names(ng, b, bn);
    return baseline_carries(a, an, b, bn);
}

/* A reload: what the running analysis (prev, stopped) learnt and counted
 * carries over to the channel of the same waveform tag path. */
static void carry(struct fb_vib_rt *v, struct fb_vib_rt *prev)
{
    for (uint32_t i = 0; i < v->cfg->nch; i++) {
        struct chan *ch = &v->ch[i];
        struct chan *o = NULL;
        for (uint32_t k = 0; k < prev->cfg->nch && !o; k++)
            if (!strcmp(prev->ch[k].path, ch->path)) o = &prev->ch[k];
        if (!o) continue;
        struct fb_wave *w = ch->w, *ow = o->w;
        atomic_store(&w->blocks, atomic_load(&ow->blocks));
        atomic_store(&w->dropped, atomic_load(&ow->dropped));
        atomic_store(&w->cpu_ns, atomic_load(&ow->cpu_ns));
        if (ch->speed_path[0] && !strcmp(ch->speed_path, o->speed_path) && ch->c->speed_k == o->c->speed_k) {
            atomic_store(&ch->speed_bits, atomic_load(&o->speed_bits));
            atomic_store(&ch->speed_q, atomic_load(&o->speed_q));
        }
        if (!ch->has_anom) continue;
        if (!o->has_anom || !baseline_carries(o->c, o->names, ch->c, ch->names)) {
            if (o->has_anom && !v->persist) /* with a file, restoring from it says so */
                fb_warn(ch->path, NULL,
                        "vibration: the analysis settings changed: learning the baseline again (%u blocks)",
                        ch->c->acfg.learn_blocks);
            continue;
        }
        /* the whole state: baseline, alarm runs, trend buckets */
        struct fb_anom tmp = ch->anom;
        ch->anom = o->anom;
        o->anom = tmp;
        ch->anom.cfg = &ch->c->acfg;
        uint32_t bb = ch->c->acfg.trend_blocks / FB_ANOM_BUCKETS;
        if (bb < 1) bb = 1;
        if (bb != ch->anom.bucket_blocks) { /* another trend window: its buckets start again */
            ch->anom.bucket_blocks = bb;
            memset(ch->anom.acc, 0, ch->anom.nf * sizeof *ch->anom.acc);
            memset(ch->anom.cnt, 0, ch->anom.nf * sizeof *ch->anom.cnt);
            for (uint32_t k = 0; k < ch->anom.nf * FB_ANOM_BUCKETS; k++) ch->anom.ring[k] = NAN;
            ch->anom.in_bucket = ch->anom.nbuckets = ch->anom.head = 0;
            ch->anom.t_run = 0;
        }
        memcpy(ch->snap, o->snap, ch->c->nmon * sizeof *ch->snap);
        ch->snap_learned = o->snap_learned;
        atomic_store(&w->learned, ch->anom.learned);
        ch->carried = true;
    }
}

static int threads_start(struct fb_vib_rt *v, struct fb_err *err)
{
    for (uint32_t i = 0; i < v->nwk; i++) {
        struct worker *wk = &v->wk[i];
        if (wk->started) continue;
        pthread_mutex_lock(&wk->mu);
        wk->stop = false;
        pthread_mutex_unlock(&wk->mu);
        if (pthread_create(&wk->thr, NULL, worker_main, wk) != 0)
            return fb_err_set(err, FB_ENOMEM, "cannot start the vibration analysis thread");
        wk->started = true;
        char name[16];
        snprintf(name, sizeof name, "fb-vib-%u", i % 64u);
        pthread_setname_np(wk->thr, name);
    }
    return 0;
}

int fb_vib_resume(struct fb_gateway *gw, struct fb_err *err)
{
    struct fb_vib_rt *v = gw->rt ? gw->rt->vib : NULL;
    return v ? threads_start(v, err) : 0;
}

static int start(struct fb_gateway *gw, const char *dir, struct fb_vib_rt *prev, struct fb_err *err)
{
    struct fb_vib *cfg = gw->vib;
    if (!cfg || !cfg->nch) return 0;
    struct fb_vib_rt *v = calloc(1, sizeof *v);
    if (!v) return fb_err_set(err, FB_ENOMEM, "out of memory");
    v->gw = gw;
    v->cfg = cfg;
    pthread_mutex_init(&v->snap_mu, NULL);
    v->rl_save.interval_ns = 600000000000LL;
    gw->rt->vib = v;
    v->nwk = cfg->threads ? cfg->threads : 1;
    if (v->nwk > cfg->nch) v->nwk = cfg->nch;
    v->ch = calloc(cfg->nch, sizeof *v->ch);
    v->wk = calloc(v->nwk, sizeof *v->wk);
    v->recs = calloc(cfg->nch, sizeof *v->recs);
    v->dev_watch = calloc(gw->ndevs ? gw->ndevs : 1, 1);
    v->speed_tag = calloc(gw->ntags ? gw->ntags : 1, 1);
    if (!v->ch || !v->wk || !v->recs || !v->dev_watch || !v->speed_tag) goto oom;
    uint32_t max_out = 1;
    for (uint32_t i = 0; i < v->nwk; i++) {
        struct worker *wk = &v->wk[i];
        wk->v = v;
        wk->idx = i;
        pthread_mutex_init(&wk->mu, NULL);
        pthread_cond_init(&wk->cv, NULL);
        wk->dsp = calloc(cfg->nch, sizeof *wk->dsp);
        wk->shape = calloc(2 * (size_t)cfg->nch, sizeof *wk->shape);
        if (!wk->dsp || !wk->shape) goto oom;
    }
    for (uint32_t i = 0; i < cfg->nch; i++) {
        struct chan *ch = &v->ch[i];
        struct fb_vib_chan *c = &cfg->ch[i];
        ch->c = c;
        ch->t = &gw->tags[c->tag];
        ch->w = fb_tag_wave(gw, ch->t);
        ch->wk = &v->wk[i % v->nwk];
        store_d(&ch->speed_bits, NAN);
        atomic_store(&ch->speed_q, FB_Q_BAD_WAITING);
        snprintf(ch->path, sizeof ch->path, "%s", fb_tag_path(gw, ch->t));
        snprintf(ch->by, sizeof ch->by, "vibration:%s", ch->path);
        v->dev_watch[ch->t->device] = 1;
        if (c->speed_tag != UINT32_MAX) {
            v->speed_tag[c->speed_tag] = 1;
            v->dev_watch[gw->tags[c->speed_tag].device] = 1;
            snprintf(ch->speed_path, sizeof ch->speed_path, "%s", fb_tag_path(gw, &gw->tags[c->speed_tag]));
        }
        if (c->nout > max_out) max_out = c->nout;
        ch->w->pool = fb_block_pool_new(VIB_BLOCKS, c->n);
        /* the ring fits every block of its channels and as many block-less samples */
        ch->wk->cap += 2 * VIB_BLOCKS;
        if (!ch->w->pool) goto oom;
        struct worker *wk = ch->wk;
        /* one plan per block shape and thread */
        ch->dsp = NULL;
        for (uint32_t k = 0; k < wk->ndsp; k++)
            if (wk->shape[2 * k] == c->n && wk->shape[2 * k + 1] == c->env_m) ch->dsp = wk->dsp[k];
        if (!ch->dsp) {
            ch->dsp = fb_dsp_new(c->n, c->env_m);
            if (!ch->dsp) goto oom;
            wk->shape[2 * wk->ndsp] = c->n;
            wk->shape[2 * wk->ndsp + 1] = c->env_m;
            wk->dsp[wk->ndsp++] = ch->dsp;
        }
        if (c->anomaly) {
            if (fb_anom_init(&ch->anom, &c->acfg, c->nmon) < 0) goto oom;
            ch->has_anom = true;
            ch->names = calloc(c->nmon ? c->nmon : 1, sizeof *ch->names);
            ch->snap = calloc(c->nmon ? c->nmon : 1, sizeof *ch->snap);
            if (!ch->names || !ch->snap) goto oom;
            size_t pre = strlen(ch->t->name) + 1;
            for (uint32_t k = 0; k < c->nmon; k++)
                ch->names[k] = gw->tags[ch->w->first_feature + c->mon[k]].name + pre;
        }
    }
    for (uint32_t i = 0; i < v->nwk; i++) {
        struct worker *wk = &v->wk[i];
        wk->ring = calloc(wk->cap ? wk->cap : 1, sizeof *wk->ring);
        wk->raw = fb_batch_new(max_out, 0, 64);
        wk->pool = fb_batch_pool_new(VIB_OUT_BATCHES, max_out, 0, 64);
        if (!wk->ring || !wk->raw || !wk->pool) goto oom;
    }
    /* the baselines: carried from the running analysis (a reload), else from the file */
    bool anomaly = false;
    for (uint32_t i = 0; i < cfg->nch; i++) anomaly |= v->ch[i].has_anom;
    if (anomaly && dir) {
        snprintf(v->file, sizeof v->file, "%s/%s", dir, FB_BASELINE_FILE);
        v->persist = true;
    }
    if (prev) carry(v, prev);
    if (anomaly && dir) {
        mkdir(dir, 0750);
        struct fb_err e = {0};
        int rc = fb_baseline_read(v->file, restored, v, &e);
        if (rc < 0 && rc != FB_ENOENT) {
            fb_warn(NULL, NULL, "vibration: %s; the baselines are learnt again", e.msg);
            v->dirty = true;
        }
    } else if (anomaly && !prev) {
        fb_warn(NULL, NULL,
                "vibration: no buffer directory: the anomaly baselines are kept in memory and learnt again after a "
                "restart");
    }
    /* the baseline state is known from here on: the status may show it */
    for (uint32_t i = 0; i < cfg->nch; i++)
        if (v->ch[i].has_anom) atomic_store(&v->ch[i].w->learn_of, v->ch[i].c->acfg.learn_blocks);
    /* the alarms as the alarm table kept them (its journal survives restarts) */
    for (uint32_t i = 0; i < cfg->nch; i++) {
        struct chan *ch = &v->ch[i];
        uint8_t f;
        if (ch->c->alarm_c != UINT32_MAX && fb_alarm_flags(gw, ch->c->alarm_c, &f)) ch->iso_c = f & FB_AS_ACTIVE;
        if (ch->c->alarm_d != UINT32_MAX && fb_alarm_flags(gw, ch->c->alarm_d, &f)) ch->iso_d = f & FB_AS_ACTIVE;
        if (ch->has_anom && ch->c->alarm_z != UINT32_MAX && fb_alarm_flags(gw, ch->c->alarm_z, &f))
            ch->anom.z_active = f & FB_AS_ACTIVE;
        if (ch->has_anom && ch->c->alarm_trend != UINT32_MAX && fb_alarm_flags(gw, ch->c->alarm_trend, &f))
            ch->anom.t_active = f & FB_AS_ACTIVE;
    }
    int rc = threads_start(v, err);
    if (rc < 0) return rc;
    fb_info(NULL, NULL, "vibration: %u channels on %u analysis thread%s%s%s", cfg->nch, v->nwk, v->nwk == 1 ? "" : "s",
            v->persist ? ", baselines in " : "", v->persist ? v->file : "");
    return 0;
oom:
    return fb_err_set(err, FB_ENOMEM, "cannot allocate the vibration analysis (blocks, FFT plans)");
}

int fb_vib_start(struct fb_gateway *gw, const char *dir, struct fb_err *err) { return start(gw, dir, NULL, err); }

int fb_vib_restart(struct fb_gateway *gw, const char *dir, struct fb_vib_rt *prev, struct fb_err *err)
{
    return start(gw, dir, prev, err);
}
