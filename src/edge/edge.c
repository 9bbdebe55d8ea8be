/* edge.c — the edge thread: computed tags, alarms and user scripts.
 *
 * Why a thread of its own: an expression may combine tags of devices that
 * live on different connection threads, an alarm may compare a tag with a
 * setpoint read elsewhere, and a script may take seconds of budget — none
 * of that belongs on a connection thread's poll loop.  So the edge is a
 * consumer of processed batches like a sink: fb_publish queues it the data
 * batches of the devices it watches (edge_q), and it keeps the latest value
 * and quality of every tag in a table of its own.  What it computes goes out
 * as batches of its own, per device, through the same pipeline stages
 * (range, deadband, heartbeat, windows: fb_proc_batch) and fb_publish, so
 * computed tags look like any other tag to every sink.  Their batches carry
 * group FB_GROUP_NONE and are not queued back to the edge.
 *
 * One batch in, in this order:
 *   1. its samples update the value table; what depends on a changed tag
 *      is marked: expression tags (evaluated on change), alarms (the tag's
 *      own, deviation setpoints, suppression conditions);
 *   2. marked expression tags are evaluated in dependency order (inputs
 *      first, fixed at load), each result updating the table and marking
 *      what depends on it;
 *   3. scripts whose devices include the batch's run on_batch; outputs they
 *      set count only if the call succeeds (else every output goes Bad);
 *      then expressions that depend on them (step 2 again);
 *   4. the computed samples are published, per device;
 *   5. marked alarms are evaluated under the alarm table's lock; its commit
 *      persists and publishes the transitions.
 * Timers — expression tags with a `period:`, script timers, alarm delays,
 * shelve expiry, flood windows — wake the thread at the earliest deadline;
 * it never polls.
 *
 * Quality (docs/computed.md): "worst" — the worst input quality wins; a Bad
 * input makes the result Bad with that input's code, an uncertain one makes
 * it uncertain; "last_usable" — a Bad input counts with its last good value
 * and the result is UncertainLastUsableValue.  No value yet in an input:
 * BadWaitingForInitialData.  A result that is not a finite number, or does
 * not fit the tag's type: BadOutOfRange.
 */
#include "edge/edge.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch_codec.h"
#include "core/log.h"
#include "core/publish.h"
#include "core/runtime_state.h"
#include "core/thread.h"
#include "edge/alarms.h"
#include "edge/expr.h"
#include "edge/script.h"
#include "proc/proc.h"

#define EDGE_POOL_BATCHES 4

struct val {
    struct fb_value v; /* strings point into sbuf */
    uint32_t q;
    int64_t ts;
    double num;  /* numeric view (NaN: none) */
    double good; /* the last good/uncertain numeric value (last_usable) */
    bool have, have_good;
    char *sbuf;
    uint32_t scap;
};

struct staged { /* an output a script set during the current call */
    uint32_t tag, q;
    struct fb_value v;
    uint32_t soff; /* string bytes in stage_arena */
};

struct fb_edge {
    struct fb_gateway *gw;
    struct fb_edge_q q;
    uint8_t *want;
    pthread_t thr;
    bool started;
    atomic_bool stop;
    struct val *vals;
    /* per tag: the expression tags (on change) and the alarms it feeds */
    uint32_t *cdep_first, *cdep, *adep_first, *adep;
    uint8_t *calc_dirty;
    bool calcs_pending;
    int64_t *calc_next; /* periodic expression tags: next evaluation (monotonic) */
    uint8_t *alarm_dirty;
    uint32_t *alarm_list, nalarm_dirty;
    /* computed samples, per device, until published */
    struct fb_batch **raw;
    int32_t *raw_pos; /* per tag: index in its device's raw batch, -1 = none */
    uint32_t *raw_list, nraw;
    struct fb_batch_pool *pool;
    /* scripts */
    struct fb_lua **lua;
    int64_t *script_next;
    bool *script_failed;
    struct fb_ratelimit *script_rl;
    struct staged *stage;
    uint32_t nstage, cap_stage;
    char *stage_arena;
    uint32_t arena_len, arena_cap;
    int64_t alarm_due;
    bool has_timers;   /* periodic expressions or script timers exist */
    int64_t timer_due; /* monotonic: the earliest of them */
    double vars[256];
    /* a reload that keeps the edge (fb_edge_park … fb_edge_unpark), under q.mu */
    bool park, parked;
    pthread_cond_t park_cv;
    uint32_t *lua_devmap, lua_ndevs; /* old device ids → new: the Lua states' device tables, re-keyed on resume */
};

/* ---------------------------------------------------------- the values */
static double num_of(const struct fb_value *v)
{
    double d;
    if (v->type == FB_T_STRING || v->type == FB_T_NONE || !fb_value_to_double(v, &d)) return NAN;
    if (v->type == FB_T_FLOAT32) d = fb_float_widen((float)d);
    return d;
}

static void mark_tag(struct fb_edge *e, uint32_t tag)
{
    for (uint32_t k = e->cdep_first[tag]; k < e->cdep_first[tag + 1]; k++) {
        e->calc_dirty[e->cdep[k]] = 1;
        e->calcs_pending = true;
    }
    for (uint32_t k = e->adep_first[tag]; k < e->adep_first[tag + 1]; k++) {
        uint32_t a = e->adep[k];
        if (!e->alarm_dirty[a]) {
            e->alarm_dirty[a] = 1;
            e->alarm_list[e->nalarm_dirty++] = a;
        }
    }
}

/* A tag's new value into the table. */
static void set_val(struct fb_edge *e, uint32_t tag, const struct fb_value *v, uint32_t q, int64_t ts)
{
    struct val *x = &e->vals[tag];
    x->q = q;
    x->ts = ts;
    x->have = true;
    if (!v || v->type == FB_T_NONE) {
        x->v.type = FB_T_NONE;
        x->num = NAN;
    } else if (v->type == FB_T_STRING) {
        if (v->s.len + 1 > x->scap) {
            uint32_t nc = v->s.len + 1 < 64 ? 64 : v->s.len + 1;
            char *nb = realloc(x->sbuf, nc);
            if (!nb) {
                x->v.type = FB_T_NONE;
                x->num = NAN;
                mark_tag(e, tag);
                return;
            }
            x->sbuf = nb;
            x->scap = nc;
        }
        if (v->s.len) memcpy(x->sbuf, v->s.p, v->s.len);
        x->sbuf[v->s.len] = 0;
        x->v = *v;
        x->v.s.p = x->sbuf;
        x->num = NAN;
    } else {
        x->v = *v;
        x->num = num_of(v);
    }
    if (!fb_q_bad(q) && isfinite(x->num)) {
        x->good = x->num;
        x->have_good = true;
    }
    mark_tag(e, tag);
}

/* A computed sample: into the table and its device's batch (replacing one
 * the same tag got earlier in this round). */
static void emit(struct fb_edge *e, uint32_t tag, const struct fb_value *v, uint32_t q, int64_t ts)
{
    set_val(e, tag, v, q, ts);
    uint32_t dev = e->gw->tags[tag].device;
    struct fb_batch *b = e->raw[dev];
    if (!b) return;
    if (e->raw_pos[tag] >= 0) {
        struct fb_sample *s = &b->s[e->raw_pos[tag]];
        s->quality = q;
        s->ts_src = s->ts_gw = ts;
        if (v && v->type != FB_T_NONE) {
            s->v = *v;
            if (v->type == FB_T_STRING) {
                const char *p = fb_batch_strdup(b, v->s.p, v->s.len);
                s->v.s.p = p ? p : "";
                if (!p) s->v.s.len = 0;
            }
        } else {
            memset(&s->v, 0, sizeof s->v);
        }
        return;
    }
    if (b->n == 0) e->raw_list[e->nraw++] = dev;
    e->raw_pos[tag] = (int32_t)b->n;
    fb_batch_add(b, tag, q, ts, v && v->type != FB_T_NONE ? v : NULL);
}

/* --------------------------------------------------------- expressions */
static uint32_t worse(uint32_t a, uint32_t b)
{
    uint32_t sa = a >> 30, sb = b >> 30; /* 0 good, 1 uncertain, 2/3 bad */
    return sb > sa ? b : a;
}

static void eval_calc(struct fb_edge *e, uint32_t i, int64_t wall)
{
    const struct fb_calc *c = &e->gw->calcs[i];
    const struct fb_tag *t = &e->gw->tags[c->tag];
    uint32_t q = FB_Q_GOOD;
    int64_t ts = 0;
    for (uint32_t k = 0; k < c->nin; k++) {
        const struct val *x = &e->vals[c->in[k]];
        if (!x->have) {
            q = FB_Q_BAD_WAITING;
            break;
        }
        if (x->ts > ts) ts = x->ts;
        bool usable = !fb_q_bad(x->q) && isfinite(x->num);
        if (usable) {
            e->vars[k] = x->num;
            q = worse(q, x->q);
        } else if (c->quality == FB_CALCQ_LAST_USABLE && x->have_good) {
            e->vars[k] = x->good;
            q = worse(q, FB_Q_UNC_LAST_USABLE);
        } else {
            q = fb_q_bad(x->q) ? x->q : FB_Q_BAD_WAITING;
            if (c->quality == FB_CALCQ_LAST_USABLE && !fb_q_bad(q)) q = FB_Q_BAD_WAITING;
            break;
        }
    }
    if (c->period_ns > 0 || !ts) ts = wall;
    if (fb_q_bad(q)) {
        emit(e, c->tag, NULL, q, ts);
        return;
    }
    double r = fb_expr_eval(c->expr, e->vars);
    struct fb_value v;
    if (!isfinite(r)) {
        emit(e, c->tag, NULL, FB_Q_BAD_OUT_OF_RANGE, ts);
        return;
    }
    if (t->type == FB_T_BOOL) {
        v.type = FB_T_BOOL;
        v.b = r != 0;
    } else if (fb_value_from_double((enum fb_type)t->type, r, &v) < 0) {
        emit(e, c->tag, NULL, FB_Q_BAD_OUT_OF_RANGE, ts);
        return;
    }
    emit(e, c->tag, &v, q, ts);
}

static void run_calcs(struct fb_edge *e, int64_t wall)
{
    if (!e->calcs_pending) return;
    e->calcs_pending = false;
    /* topological order: an expression marked by an earlier one comes later in this pass */
    for (uint32_t i = 0; i < e->gw->ncalcs; i++) {
        if (!e->calc_dirty[i]) continue;
        e->calc_dirty[i] = 0;
        eval_calc(e, i, wall);
    }
}

/* ------------------------------------------------------------- scripts */
static bool env_get(void *edge, uint32_t tag, struct fb_value *v, uint32_t *q, int64_t *ts)
{
    struct fb_edge *e = edge;
    if (tag >= e->gw->ntags || !e->vals[tag].have) return false;
    *v = e->vals[tag].v;
    *q = e->vals[tag].q;
    *ts = e->vals[tag].ts;
    return true;
}

static void env_set(void *edge, uint32_t tag, const struct fb_value *v, uint32_t q)
{
    struct fb_edge *e = edge;
    for (uint32_t i = 0; i < e->nstage; i++) /* set twice in one call: the last one counts */
        if (e->stage[i].tag == tag) {
            e->stage[i].tag = UINT32_MAX;
            break;
        }
    if (e->nstage == e->cap_stage) {
        uint32_t nc = e->cap_stage ? e->cap_stage * 2 : 16;
        struct staged *ns = realloc(e->stage, nc * sizeof *ns);
        if (!ns) return;
        e->stage = ns;
        e->cap_stage = nc;
    }
    struct staged *s = &e->stage[e->nstage++];
    s->tag = tag;
    s->q = q;
    s->v = *v;
    if (v->type == FB_T_STRING) {
        uint32_t max = e->gw->tags[tag].str_len ? e->gw->tags[tag].str_len : 256;
        uint32_t len = v->s.len < max ? v->s.len : max;
        if (e->arena_len + len > e->arena_cap) {
            uint32_t nc = (e->arena_cap ? e->arena_cap * 2 : 1024) + len;
            char *na = realloc(e->stage_arena, nc);
            if (!na) {
                e->nstage--;
                return;
            }
            e->stage_arena = na;
            e->arena_cap = nc;
        }
        memcpy(e->stage_arena + e->arena_len, v->s.p, len);
        s->soff = e->arena_len;
        s->v.s.len = len;
        e->arena_len += len;
    }
}

static void script_result(struct fb_edge *e, uint32_t si, int rc, const char *why, int64_t wall)
{
    struct fb_gateway *gw = e->gw;
    struct fb_script *s = &gw->scripts[si];
    if (rc == 0) {
        for (uint32_t i = 0; i < e->nstage; i++) {
            struct staged *st = &e->stage[i];
            if (st->tag == UINT32_MAX) continue;
            if (st->v.type == FB_T_STRING) st->v.s.p = e->stage_arena + st->soff;
            emit(e, st->tag, &st->v, st->q, wall);
        }
        if (e->script_failed[si])
            fb_info(s->device < gw->ndevs ? gw->devs[s->device].name : NULL, NULL, "lua:%s runs again", s->name);
        e->script_failed[si] = false;
    } else {
        /* a failed call: nothing it set counts, and every output goes Bad */
        for (uint32_t k = 0; k < s->nout; k++) emit(e, s->outputs[k], NULL, FB_Q_BAD_INTERNAL, wall);
        const char *dn = s->device < gw->ndevs ? gw->devs[s->device].name : NULL;
        if (!e->script_failed[si] || fb_ratelimit_ok(&e->script_rl[si], fb_mono_ns()))
            fb_warn(dn, NULL, "lua:%s failed: %s", s->name, why ? why : "?");
        if (!e->script_failed[si] && s->device < gw->ndevs) {
            char text[FB_REASON_LEN];
            snprintf(text, sizeof text, "script %s failed: %s", s->name, why ? why : "?");
            fb_alarm_message(gw, s->device, text, "edge");
        }
        e->script_failed[si] = true;
    }
    e->nstage = 0;
    e->arena_len = 0;
}

static bool script_wants(const struct fb_script *s, uint32_t dev)
{
    if (s->all_devices) return true;
    for (uint32_t i = 0; i < s->ndevs; i++)
        if (s->devices[i] == dev) return true;
    return false;
}

static void run_scripts_batch(struct fb_edge *e, const struct fb_batch *b, int64_t wall)
{
    for (uint32_t i = 0; i < e->gw->nscripts; i++) {
        if (!e->lua[i] || !fb_lua_has_batch(e->lua[i]) || !script_wants(&e->gw->scripts[i], b->device)) continue;
        const char *why = NULL;
        int rc = fb_lua_batch(e->lua[i], b, &why);
        script_result(e, i, rc, why, wall);
    }
}

/* --------------------------------------------------------------- alarms */
static void run_alarms(struct fb_edge *e, int64_t now, int64_t wall)
{
    struct fb_alarms *a = e->gw->rt->alarms;
    if (!a) return;
    if (!e->nalarm_dirty && (!e->alarm_due || now < e->alarm_due)) return;
    fb_alarms_begin(a, now, wall);
    for (uint32_t k = 0; k < e->nalarm_dirty; k++) {
        uint32_t id = e->alarm_list[k];
        e->alarm_dirty[id] = 0;
        const struct fb_alarm *al = &e->gw->alarms[id];
        if (al->suppress) {
            bool known = true;
            for (uint32_t i = 0; i < al->nsup_in; i++) {
                const struct val *x = &e->vals[al->sup_in[i]];
                if (!x->have || fb_q_bad(x->q) || !isfinite(x->num)) {
                    known = false; /* an input without a usable value: the suppression stays as it is */
                    break;
                }
                e->vars[i] = x->num;
            }
            if (known) fb_alarms_suppress(a, id, fb_expr_eval(al->suppress, e->vars) != 0);
        }
        if (al->tag >= e->gw->ntags) continue;
        const struct val *x = &e->vals[al->tag];
        if (!x->have) continue;
        double sp = NAN;
        uint32_t sp_q = FB_Q_BAD_WAITING;
        if (al->setpoint < e->gw->ntags && e->vals[al->setpoint].have) {
            sp = e->vals[al->setpoint].num;
            sp_q = e->vals[al->setpoint].q;
        }
        fb_alarms_value(a, id, x->num, x->q, x->ts, sp, sp_q);
    }
    e->nalarm_dirty = 0;
    fb_alarms_timers(a);
    e->alarm_due = fb_alarms_commit(a);
}

/* ----------------------------------------------------------- publishing */
static void flush(struct fb_edge *e)
{
    struct fb_gateway *gw = e->gw;
    for (uint32_t k = 0; k < e->nraw; k++) {
        uint32_t dev = e->raw_list[k];
        struct fb_batch *raw = e->raw[dev];
        for (uint32_t i = 0; i < raw->n; i++) e->raw_pos[raw->s[i].tag] = -1;
        struct fb_batch *out = fb_batch_pool_get(e->pool);
        if (out) {
            out->kind = FB_BATCH_DATA;
            out->device = dev;
            out->group = FB_GROUP_NONE;
            out->ts = raw->ts = fb_now_ns();
            raw->device = dev;
            fb_proc_batch(gw->rt->proc, raw, out);
            out->group = FB_GROUP_NONE;
            if (out->n) fb_publish(gw, out);
            fb_batch_unref(out);
        }
        fb_batch_reset(raw);
    }
    e->nraw = 0;
}

/* ---------------------------------------------------------------- timers */
static int64_t timers(struct fb_edge *e, int64_t now, int64_t wall)
{
    struct fb_gateway *gw = e->gw;
    int64_t next = 0;
#define NEXT(t) (next = (!next || (t) < next) ? (t) : next)
    /* nothing periodic is due: no scan (this runs once per batch) */
    if (!e->has_timers || now < e->timer_due) {
        if (e->has_timers) NEXT(e->timer_due);
        if (e->alarm_due) NEXT(e->alarm_due);
        return next;
    }
    for (uint32_t i = 0; i < gw->ncalcs; i++) {
        const struct fb_calc *c = &gw->calcs[i];
        if (c->period_ns <= 0) continue;
        if (now >= e->calc_next[i]) {
            e->calc_dirty[i] = 1;
            e->calcs_pending = true;
            e->calc_next[i] += c->period_ns;
            if (e->calc_next[i] <= now) e->calc_next[i] = now + c->period_ns; /* behind: no burst */
        }
        NEXT(e->calc_next[i]);
    }
    run_calcs(e, wall);
    for (uint32_t i = 0; i < gw->nscripts; i++) {
        const struct fb_script *s = &gw->scripts[i];
        if (!e->lua[i] || !s->timer_ns || !fb_lua_has_timer(e->lua[i])) continue;
        if (now >= e->script_next[i]) {
            const char *why = NULL;
            int rc = fb_lua_timer(e->lua[i], wall, &why);
            script_result(e, i, rc, why, wall);
            run_calcs(e, wall);
            e->script_next[i] += s->timer_ns;
            int64_t after = fb_mono_ns();
            if (e->script_next[i] <= after) e->script_next[i] = after + s->timer_ns;
        }
        NEXT(e->script_next[i]);
    }
    e->timer_due = next;
    if (e->alarm_due) NEXT(e->alarm_due);
#undef NEXT
    return next;
}

/* Script i's Lua state (made anew): a script that cannot load is reported
 * and its outputs go Bad; the gateway runs. */
static void script_load(struct fb_edge *e, uint32_t i)
{
    struct fb_gateway *gw = e->gw;
    struct fb_script *s = &gw->scripts[i];
    struct fb_script_env env = {.gw = gw, .edge = e, .get = env_get, .set = env_set};
    struct fb_err le = {0};
    e->lua[i] = fb_lua_new(s, &env, &le);
    if (!e->lua[i]) {
        fb_error(s->device < gw->ndevs ? gw->devs[s->device].name : NULL, NULL,
                 "lua:%s (%s) cannot run: %s; its outputs are Bad", s->name, s->file, le.msg);
        e->script_failed[i] = true;
        for (uint32_t k = 0; k < s->nout; k++) emit(e, s->outputs[k], NULL, FB_Q_BAD_INTERNAL, fb_now_ns());
    } else if (s->timer_ns && !fb_lua_has_timer(e->lua[i])) {
        fb_warn(NULL, NULL, "lua:%s has timer: %.3gs but no on_timer(now)", s->name, s->timer_ns / 1e9);
    }
}

/* After a reload kept the edge: the Lua states' per-device tables follow the
 * devices' new ids (their globals and timers carry on).  A state without the
 * memory for that is loaded afresh, which is said. */
static void resume_scripts(struct fb_edge *e, const uint32_t *devmap, uint32_t n)
{
    struct fb_gateway *gw = e->gw;
    for (uint32_t i = 0; i < gw->nscripts; i++) {
        if (!e->lua[i]) continue;
        const char *why = NULL;
        if (fb_lua_remap_devices(e->lua[i], devmap, n, &why) == 0) continue;
        struct fb_script *s = &gw->scripts[i];
        fb_warn(s->device < gw->ndevs ? gw->devs[s->device].name : NULL, NULL,
                "lua:%s is loaded afresh after the reload (its state could not follow the new device ids: %s)",
                s->name, why ? why : "?");
        fb_lua_free(e->lua[i]);
        e->lua[i] = NULL;
        script_load(e, i);
    }
}

/* ------------------------------------------------------------------ the thread */
static void take_batch(struct fb_edge *e, struct fb_batch *b, int64_t wall)
{
    for (uint32_t i = 0; i < b->n; i++) {
        const struct fb_sample *s = &b->s[i];
        if (s->tag >= e->gw->ntags) continue;
        set_val(e, s->tag, s->v.type ? &s->v : NULL, s->quality, s->ts_src ? s->ts_src : b->ts);
    }
    run_calcs(e, wall);
    if (e->gw->nscripts) {
        run_scripts_batch(e, b, wall);
        run_calcs(e, wall);
    }
}

static void *edge_thread(void *arg)
{
    struct fb_edge *e = arg;
    struct fb_gateway *gw = e->gw;
    /* virtual devices (no url, no connection) are up while the edge runs */
    for (uint32_t i = 0; i < gw->ndevs; i++)
        if (!gw->devs[i].conn) fb_publish_state(gw, &gw->devs[i], FB_DEV_ONLINE, NULL);
    int64_t next = 0;
    for (;;) {
        pthread_mutex_lock(&e->q.mu);
        while (!e->q.head && !e->q.wake && !atomic_load(&e->stop)) {
            if (e->park) { /* a reload: here, with the queue empty and nothing half done, until it is over */
                e->parked = true;
                pthread_cond_broadcast(&e->park_cv);
                while (e->park && !atomic_load(&e->stop)) pthread_cond_wait(&e->q.cv, &e->q.mu);
                e->parked = false;
                uint32_t *devmap = e->lua_devmap, ndm = e->lua_ndevs;
                e->lua_devmap = NULL;
                e->lua_ndevs = 0;
                if (devmap) {
                    pthread_mutex_unlock(&e->q.mu);
                    resume_scripts(e, devmap, ndm);
                    free(devmap);
                    pthread_mutex_lock(&e->q.mu);
                }
                next = fb_mono_ns(); /* the timers: what fell due meanwhile runs now */
                continue;
            }
            if (!next) {
                pthread_cond_wait(&e->q.cv, &e->q.mu);
            } else if (!fb_cond_wait_until(&e->q.cv, &e->q.mu, next)) {
                break; /* a timer is due */
            }
        }
        struct fb_qnode *n = e->q.head;
        if (n) {
            e->q.head = n->next;
            if (!e->q.head) e->q.tail = NULL;
            e->q.len--;
        }
        bool woken = e->q.wake;
        e->q.wake = false;
        bool stopping = atomic_load(&e->stop);
        pthread_mutex_unlock(&e->q.mu);
        int64_t now = fb_mono_ns(), wall = fb_now_ns();
        if (woken) e->alarm_due = now; /* another thread set an alarm timer: look at them */
        if (n) {
            take_batch(e, n->b, wall);
            fb_batch_unref(n->b);
            pthread_mutex_lock(&e->q.mu);
            n->next = e->q.free;
            e->q.free = n;
            pthread_mutex_unlock(&e->q.mu);
        }
        next = timers(e, now, wall);
        flush(e);
        run_alarms(e, now, wall);
        if (e->alarm_due && (!next || e->alarm_due < next)) next = e->alarm_due;
        if (stopping && !n) break;
    }
    for (uint32_t i = 0; i < gw->ndevs; i++)
        if (!gw->devs[i].conn) fb_publish_state(gw, &gw->devs[i], FB_DEV_OFFLINE, "gateway stopped");
    return NULL;
}

/* ------------------------------------------------------------- set-up */
/* CSR of tag → dependants: count[tag] entries, then filled. */
static bool csr(uint32_t ntags, uint32_t **first, uint32_t **idx, uint32_t total)
{
    *first = calloc(ntags + 1, sizeof **first);
    *idx = calloc(total ? total : 1, sizeof **idx);
    return *first && *idx;
}

static void csr_close(uint32_t *first, uint32_t ntags)
{
    for (uint32_t t = 0; t < ntags; t++) first[t + 1] += first[t];
}

static int build_deps(struct fb_edge *e)
{
    struct fb_gateway *gw = e->gw;
    uint32_t nt = gw->ntags, total = 0;
    for (uint32_t i = 0; i < gw->ncalcs; i++)
        if (!gw->calcs[i].period_ns) total += gw->calcs[i].nin;
    if (!csr(nt, &e->cdep_first, &e->cdep, total)) return FB_ENOMEM;
    for (uint32_t i = 0; i < gw->ncalcs; i++)
        if (!gw->calcs[i].period_ns)
            for (uint32_t k = 0; k < gw->calcs[i].nin; k++) e->cdep_first[gw->calcs[i].in[k] + 1]++;
    csr_close(e->cdep_first, nt);
    uint32_t *fill = calloc(nt + 1, sizeof *fill);
    if (!fill) return FB_ENOMEM;
    for (uint32_t i = 0; i < gw->ncalcs; i++)
        if (!gw->calcs[i].period_ns)
            for (uint32_t k = 0; k < gw->calcs[i].nin; k++) {
                uint32_t t = gw->calcs[i].in[k];
                e->cdep[e->cdep_first[t] + fill[t]++] = i;
            }
    /* alarms: the tag, the setpoint, the suppression inputs */
    total = 0;
    for (uint32_t i = 0; i < gw->nalarms; i++) {
        const struct fb_alarm *a = &gw->alarms[i];
        total += (a->tag < nt) + (a->setpoint < nt) + a->nsup_in;
    }
    if (!csr(nt, &e->adep_first, &e->adep, total)) {
        free(fill);
        return FB_ENOMEM;
    }
    for (uint32_t i = 0; i < gw->nalarms; i++) {
        const struct fb_alarm *a = &gw->alarms[i];
        if (a->tag < nt) e->adep_first[a->tag + 1]++;
        if (a->setpoint < nt) e->adep_first[a->setpoint + 1]++;
        for (uint32_t k = 0; k < a->nsup_in; k++) e->adep_first[a->sup_in[k] + 1]++;
    }
    csr_close(e->adep_first, nt);
    memset(fill, 0, (nt + 1) * sizeof *fill);
    for (uint32_t i = 0; i < gw->nalarms; i++) {
        const struct fb_alarm *a = &gw->alarms[i];
        if (a->tag < nt) e->adep[e->adep_first[a->tag] + fill[a->tag]++] = i;
        if (a->setpoint < nt) e->adep[e->adep_first[a->setpoint] + fill[a->setpoint]++] = i;
        for (uint32_t k = 0; k < a->nsup_in; k++) e->adep[e->adep_first[a->sup_in[k]] + fill[a->sup_in[k]]++] = i;
    }
    free(fill);
    /* which devices' batches the edge needs: every one when a script runs (fb.get reads any tag) */
    for (uint32_t t = 0; t < nt; t++)
        if (e->cdep_first[t + 1] > e->cdep_first[t] || e->adep_first[t + 1] > e->adep_first[t])
            e->want[gw->tags[t].device] = 1;
    for (uint32_t i = 0; i < gw->ncalcs; i++) /* periodic expressions read their inputs' latest values */
        for (uint32_t k = 0; k < gw->calcs[i].nin; k++) e->want[gw->tags[gw->calcs[i].in[k]].device] = 1;
    if (gw->nscripts) memset(e->want, 1, gw->ndevs);
    return 0;
}

static int build_outputs(struct fb_edge *e, bool with_pool)
{
    struct fb_gateway *gw = e->gw;
    uint32_t max_n = 1, max_win = 0, max_arena = 0;
    for (uint32_t d = 0; d < gw->ndevs; d++) {
        const struct fb_device *dev = &gw->devs[d];
        uint32_t n = 0, win = 0, arena = 0;
        for (uint32_t i = 0; i < dev->ntags; i++) {
            const struct fb_tag *t = &gw->tags[dev->first_tag + i];
            if (t->src != FB_TAG_EXPR && t->src != FB_TAG_SCRIPT) continue;
            n++;
            if (fb_tproc(t)->window_ns) win++;
            if (t->type == FB_T_STRING) arena += 2 * (t->str_len ? t->str_len : 256);
        }
        if (!n) continue;
        e->raw[d] = fb_batch_new(n, 0, arena);
        if (!e->raw[d]) return FB_ENOMEM;
        if (n > max_n) max_n = n;
        if (win > max_win) max_win = win;
        if (arena > max_arena) max_arena = arena;
    }
    if (!with_pool) return 0; /* a kept edge keeps its pool: the same computed tags */
    e->pool = fb_batch_pool_new(EDGE_POOL_BATCHES, max_n, max_win, max_arena);
    return e->pool ? 0 : FB_ENOMEM;
}

static void edge_free(struct fb_edge *e)
{
    if (!e) return;
    struct fb_gateway *gw = e->gw;
    if (e->lua)
        for (uint32_t i = 0; i < gw->nscripts; i++) fb_lua_free(e->lua[i]);
    free(e->lua);
    free(e->script_next);
    free(e->script_failed);
    free(e->script_rl);
    free(e->stage);
    free(e->stage_arena);
    if (e->vals)
        for (uint32_t i = 0; i < gw->ntags; i++) free(e->vals[i].sbuf);
    free(e->vals);
    free(e->cdep_first);
    free(e->cdep);
    free(e->adep_first);
    free(e->adep);
    free(e->calc_dirty);
    free(e->calc_next);
    free(e->alarm_dirty);
    free(e->alarm_list);
    if (e->raw)
        for (uint32_t d = 0; d < gw->ndevs; d++) fb_batch_free(e->raw[d]);
    free(e->raw);
    free(e->raw_pos);
    free(e->raw_list);
    while (e->q.free) {
        struct fb_qnode *n = e->q.free;
        e->q.free = n->next;
        free(n);
    }
    while (e->q.head) {
        struct fb_qnode *n = e->q.head;
        e->q.head = n->next;
        fb_batch_unref(n->b);
        free(n);
    }
    fb_batch_pool_free(e->pool);
    pthread_mutex_destroy(&e->q.mu);
    pthread_cond_destroy(&e->q.cv);
    pthread_cond_destroy(&e->park_cv);
    free(e->lua_devmap);
    free(e->want);
    free(e);
}

/* The edge's state for gw; model_only: only what is sized or indexed by the
 * model's devices and tags (the value table, the dependencies, the output
 * batches) — what a kept edge takes over in a reload (fb_edge_prepare). */
static struct fb_edge *edge_new(struct fb_gateway *gw, bool model_only)
{
    struct fb_edge *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->gw = gw;
    pthread_mutex_init(&e->q.mu, NULL);
    fb_cond_init_mono(&e->q.cv);
    fb_cond_init_mono(&e->park_cv);
    uint32_t nt = gw->ntags, nd = gw->ndevs;
    e->want = calloc(nd ? nd : 1, 1);
    e->vals = calloc(nt ? nt : 1, sizeof *e->vals);
    e->raw = calloc(nd ? nd : 1, sizeof *e->raw);
    e->raw_pos = malloc((nt ? nt : 1) * sizeof *e->raw_pos);
    e->raw_list = calloc(nd ? nd : 1, sizeof *e->raw_list);
    if (!e->want || !e->vals || !e->raw || !e->raw_pos || !e->raw_list || build_deps(e) < 0 ||
        build_outputs(e, !model_only) < 0) {
        edge_free(e);
        return NULL;
    }
    for (uint32_t i = 0; i < nt; i++) {
        e->raw_pos[i] = -1;
        e->vals[i].num = NAN;
    }
    if (model_only) return e;
    e->calc_dirty = calloc(gw->ncalcs ? gw->ncalcs : 1, 1);
    e->calc_next = calloc(gw->ncalcs ? gw->ncalcs : 1, sizeof *e->calc_next);
    e->alarm_dirty = calloc(gw->nalarms ? gw->nalarms : 1, 1);
    e->alarm_list = calloc(gw->nalarms ? gw->nalarms : 1, sizeof *e->alarm_list);
    e->lua = calloc(gw->nscripts ? gw->nscripts : 1, sizeof *e->lua);
    e->script_next = calloc(gw->nscripts ? gw->nscripts : 1, sizeof *e->script_next);
    e->script_failed = calloc(gw->nscripts ? gw->nscripts : 1, sizeof *e->script_failed);
    e->script_rl = calloc(gw->nscripts ? gw->nscripts : 1, sizeof *e->script_rl);
    if (!e->calc_dirty || !e->calc_next || !e->alarm_dirty || !e->alarm_list || !e->lua || !e->script_next ||
        !e->script_failed || !e->script_rl) {
        edge_free(e);
        return NULL;
    }
    return e;
}

int fb_edge_start(struct fb_gateway *gw, const char *dir, struct fb_err *err)
{
    struct fb_rt *rt = gw->rt;
    if (!gw->ncalcs && !gw->nalarms && !gw->nscripts) return 0; /* nothing configured: nothing runs */
    if (fb_alarms_start(gw, dir, err) < 0) return err ? err->code : FB_ENOMEM;
    struct fb_edge *e = edge_new(gw, false);
    if (!e) return fb_err_set(err, FB_ENOMEM, "cannot allocate the edge state");
    int64_t now = fb_mono_ns();
    for (uint32_t i = 0; i < gw->ncalcs; i++) {
        e->calc_next[i] = now + gw->calcs[i].period_ns;
        if (gw->calcs[i].period_ns > 0) e->has_timers = true;
        if (!gw->calcs[i].nin) { /* a constant: once at start */
            e->calc_dirty[i] = 1;
            e->calcs_pending = true;
        }
    }
    /* scripts: a script that cannot load is reported and its outputs stay Bad; the gateway runs */
    for (uint32_t i = 0; i < gw->nscripts; i++) {
        e->script_rl[i].interval_ns = 60000000000LL;
        e->script_next[i] = now + gw->scripts[i].timer_ns;
        if (gw->scripts[i].timer_ns) e->has_timers = true;
        script_load(e, i);
    }
    e->q.want = e->want;
    rt->edge = e;
    rt->edge_q = &e->q;
    if (pthread_create(&e->thr, NULL, edge_thread, e) != 0) {
        rt->edge = NULL;
        rt->edge_q = NULL;
        edge_free(e);
        return fb_err_set(err, FB_ENOMEM, "cannot start the edge thread");
    }
    e->started = true;
    pthread_setname_np(e->thr, "fb-edge"); /* top -H, and bench/bench_edge.c measures its CPU time */
    fb_info(NULL, NULL, "edge: %u expression tags, %u alarms, %u scripts", gw->ncalcs, gw->nalarms, gw->nscripts);
    return 0;
}

void fb_edge_stop(struct fb_gateway *gw)
{
    struct fb_edge *e = gw->rt ? gw->rt->edge : NULL;
    if (!e || !e->started) return;
    pthread_mutex_lock(&e->q.mu);
    atomic_store(&e->stop, true);
    pthread_cond_broadcast(&e->q.cv);
    pthread_mutex_unlock(&e->q.mu);
    pthread_join(e->thr, NULL);
    e->started = false;
    /* nothing is queued to it any more (fan_out reads edge_q under fan_mu) */
    pthread_mutex_lock(&gw->rt->fan_mu);
    gw->rt->edge_q = NULL;
    pthread_mutex_unlock(&gw->rt->fan_mu);
}

void fb_edge_free(struct fb_gateway *gw)
{
    if (!gw->rt) return;
    fb_edge_stop(gw);
    edge_free(gw->rt->edge);
    gw->rt->edge = NULL;
    fb_alarms_free(gw->rt->alarms);
    gw->rt->alarms = NULL;
}

/* ---------------------------------------------------------------- reload */
/* A reload whose edge configuration did not change keeps the thread and all
 * it holds — the value table, the alarm table, the Lua states with their
 * globals and timers, the timers of periodic expressions — and moves what
 * is indexed by device or tag id to the new model's ids (core/reload.c):
 * what is sized by the new model is made beforehand (fb_edge_prepare), the
 * thread parks with its queue empty (fb_edge_park), and with the model lock
 * held the state is moved over (fb_edge_adopt).  The computed tags are the
 * same ones, so the output pool stays. */
struct fb_edge_next {
    struct fb_edge *m;       /* what is indexed by the new model's ids (edge_new, model_only) */
    uint32_t *devmap, ndevs; /* old device ids → new, for the Lua states' device tables */
    struct fb_alarms_move *am;
};

void fb_edge_next_free(struct fb_edge_next *x)
{
    if (!x) return;
    edge_free(x->m);
    free(x->devmap);
    fb_alarms_move_free(x->am);
    free(x);
}

struct fb_edge_next *fb_edge_prepare(struct fb_gateway *nw, const struct fb_model_map *map)
{
    struct fb_edge_next *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->m = edge_new(nw, true);
    x->devmap = malloc((map->ndevs ? map->ndevs : 1) * sizeof *x->devmap);
    x->ndevs = map->ndevs;
    x->am = nw->nalarms ? fb_alarms_move_prepare(nw) : NULL;
    if (!x->m || !x->devmap || (nw->nalarms && !x->am)) {
        fb_edge_next_free(x);
        return NULL;
    }
    if (map->ndevs) memcpy(x->devmap, map->dev, map->ndevs * sizeof *x->devmap);
    return x;
}

bool fb_edge_park(struct fb_gateway *gw, int64_t deadline)
{
    struct fb_edge *e = gw->rt ? gw->rt->edge : NULL;
    if (!e || !e->started) return true;
    pthread_mutex_lock(&e->q.mu);
    e->park = true;
    pthread_cond_broadcast(&e->q.cv);
    while (!e->parked && fb_cond_wait_until(&e->park_cv, &e->q.mu, deadline)) {
    }
    bool ok = e->parked;
    pthread_mutex_unlock(&e->q.mu);
    return ok;
}

void fb_edge_unpark(struct fb_gateway *gw)
{
    struct fb_edge *e = gw->rt ? gw->rt->edge : NULL;
    if (!e) return;
    pthread_mutex_lock(&e->q.mu);
    e->park = false;
    pthread_cond_broadcast(&e->q.cv);
    pthread_mutex_unlock(&e->q.mu);
}

static void swap_ptr(void *a, void *b, size_t n)
{
    char t[sizeof(void *)];
    FB_ASSERT(n <= sizeof t);
    memcpy(t, a, n);
    memcpy(a, b, n);
    memcpy(b, t, n);
}
#define SWAP_FIELD(f) swap_ptr(&e->f, &m->f, sizeof e->f)

void fb_edge_adopt(struct fb_gateway *gw, struct fb_gateway *old, struct fb_edge_next *x,
                   const struct fb_model_map *map)
{
    struct fb_edge *e = gw->rt->edge, *m = x->m;
    /* the latest values follow their tags; one whose type changed has none until it is read again */
    for (uint32_t i = 0; i < old->ntags && i < map->ntags; i++) {
        uint32_t j = map->tag[i];
        if (j >= gw->ntags || old->tags[i].type != gw->tags[j].type ||
            fb_tag_out_type(&old->tags[i]) != fb_tag_out_type(&gw->tags[j]))
            continue;
        free(m->vals[j].sbuf);
        m->vals[j] = e->vals[i];
        e->vals[i].sbuf = NULL;
        e->vals[i].scap = 0;
    }
    /* what is indexed by the model's ids: the new ones in, the old ones freed with m (sized by old) */
    SWAP_FIELD(vals);
    SWAP_FIELD(cdep_first);
    SWAP_FIELD(cdep);
    SWAP_FIELD(adep_first);
    SWAP_FIELD(adep);
    SWAP_FIELD(raw);
    SWAP_FIELD(raw_pos);
    SWAP_FIELD(raw_list);
    SWAP_FIELD(want);
    e->nraw = 0; /* parked after a flush: nothing was pending */
    m->gw = old;
    pthread_mutex_lock(&gw->rt->fan_mu); /* publishers read the edge's device filter under it */
    e->q.want = e->want;
    pthread_mutex_unlock(&gw->rt->fan_mu);
    edge_free(m);
    x->m = NULL;
    /* virtual devices stay as they were (online): their state is the edge's */
    for (uint32_t i = 0; i < old->ndevs && i < map->ndevs; i++) {
        uint32_t j = map->dev[i];
        if (!old->devs[i].conn && j < gw->ndevs && !gw->devs[j].conn)
            atomic_store(&gw->devs[j].state, atomic_load(&old->devs[i].state));
    }
    /* the Lua states: the same scripts (same order), now in the new model; their counters go on */
    for (uint32_t i = 0; i < gw->nscripts && i < old->nscripts; i++) {
        struct fb_script *s = &gw->scripts[i], *o = &old->scripts[i];
        if (e->lua[i]) fb_lua_rebind(e->lua[i], s);
        atomic_store(&s->runs, atomic_load(&o->runs));
        atomic_store(&s->errors, atomic_load(&o->errors));
        atomic_store(&s->overruns, atomic_load(&o->overruns));
        atomic_store(&s->writes, atomic_load(&o->writes));
    }
    if (gw->nscripts) { /* their device tables are re-keyed by the thread when it resumes */
        pthread_mutex_lock(&e->q.mu);
        free(e->lua_devmap);
        e->lua_devmap = x->devmap;
        e->lua_ndevs = x->ndevs;
        x->devmap = NULL;
        pthread_mutex_unlock(&e->q.mu);
    }
    if (gw->rt->alarms && x->am) {
        fb_alarms_move(gw->rt->alarms, x->am, map);
    }
}
