/* alarms.c — the alarm table of a running gateway (alarms.h).
 *
 * One mutex guards every alarm's state.  The edge thread takes it once per
 * batch it evaluates (begin … commit), the router once per command, a
 * script or feature monitor once per fb_alarm_set; sinks take it for a
 * moment to render a summary.  Each group of changes ends in commit, which
 * first makes the changes durable (journal records, one fdatasync) and
 * only then publishes their events, so an event a consumer has seen is
 * never undone by a crash: after kill -9 the table comes back as it was
 * announced — an active alarm stays active, an acknowledged one is not
 * raised again (its condition still holding just keeps it active).
 *
 * What is announced.  Every transition becomes an FB_BATCH_ALARM batch with
 * a sequence number, through fb_publish like telemetry, so sinks buffer and
 * deliver alarm events in order with the data and the MQTT sink follows
 * each with the device's retained summary.  Raise and clear of a shelved or
 * suppressed alarm change its state but are not announced as events:
 * shelving exists to silence an alarm.  Its device's summary is refreshed
 * instead, by a batch with event FB_AE_NONE (at most one per device and
 * second), on which sinks publish the summary and nothing else.  Floods are bounded per
 * device: at most alarms.flood.events raise/clear/suppression/message
 * events per window; the rest are counted and announced once as a "flood"
 * event when the window ends (operator actions always pass).
 *
 * NE107: each alarm that is active and neither shelved nor suppressed
 * counts in its device's live counters (struct fb_dev_metrics), per
 * category, which the status (metrics.c) turns into the device's NE107.
 */
#include "edge/alarms.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch_codec.h"
#include "core/log.h"
#include "core/publish.h"
#include "core/runtime_state.h"
#include "edge/alarm.h"
#include "edge/alarm_journal.h"

struct dev_flood {
    int64_t start; /* monotonic start of the current window, 0 = none */
    uint32_t count, held;
    bool refresh;         /* a silenced transition changed the summary */
    int64_t refreshed_ns; /* monotonic time of the last summary refresh */
};

#define REFRESH_MIN_NS 1000000000LL

struct pend_ev {
    uint32_t dev;
    int64_t ts;
    bool exempt; /* an operator action: not flood-limited */
    struct fb_alarm_ev ev;
    char text[FB_REASON_LEN];
};

struct fb_alarms {
    struct fb_gateway *gw;
    pthread_mutex_t mu;
    struct fb_alarm_st *st;
    uint8_t *dirty;
    uint32_t *dirty_list, ndirty;
    uint32_t *dev_first, *dev_idx; /* the alarms of device d: dev_idx[dev_first[d] .. dev_first[d+1]) */
    struct dev_flood *flood;
    struct pend_ev *pend;
    uint32_t npend, cap_pend;
    struct fb_alarm_journal *journal;
    int64_t now, wall; /* the current group's times */
    int64_t next_due;  /* monotonic: earliest delay, shelve expiry or flood window end (0 = none) */
    struct fb_ratelimit rl_io;
};

static struct fb_alarms *table(struct fb_gateway *gw) { return gw && gw->rt ? gw->rt->alarms : NULL; }

/* ------------------------------------------------------------ the model */
uint32_t fb_alarm_add(struct fb_gateway *gw, uint32_t device, uint32_t tag, int kind, const char *name)
{
    uint32_t n = gw->nalarms;
    if (n >= UINT32_MAX / 2) return UINT32_MAX;
    if ((n & (n - 1)) == 0) { /* 0, 1, 2, 4, …: double */
        struct fb_alarm *na = realloc(gw->alarms, (size_t)(n ? n * 2 : 1) * sizeof *na);
        if (!na) return UINT32_MAX;
        gw->alarms = na;
    }
    struct fb_alarm *a = &gw->alarms[n];
    memset(a, 0, sizeof *a);
    a->id = n;
    a->device = device;
    a->tag = tag;
    a->kind = (uint8_t)kind;
    a->setpoint = UINT32_MAX;
    a->priority = FB_AP_MEDIUM;
    a->severity = fb_alarm_prio_severity(FB_AP_MEDIUM);
    a->when = 1;
    a->name = strdup(name ? name : "?");
    const char *dn = device < gw->ndevs && gw->devs[device].name ? gw->devs[device].name : "?";
    size_t len = strlen(dn) + strlen(a->name) + 2;
    a->path = malloc(len);
    if (!a->name || !a->path) {
        free(a->name);
        free(a->path);
        return UINT32_MAX;
    }
    snprintf(a->path, len, "%s/%s", dn, a->name);
    gw->nalarms = n + 1;
    return n;
}

uint32_t fb_alarm_find(const struct fb_gateway *gw, uint32_t dev, const char *name, size_t len)
{
    for (uint32_t i = 0; i < gw->nalarms; i++) {
        const struct fb_alarm *a = &gw->alarms[i];
        if (a->device == dev && strlen(a->name) == len && !memcmp(a->name, name, len)) return i;
    }
    return UINT32_MAX;
}

/* --------------------------------------------------------- bookkeeping */
/* The device's live counters follow a flags change. */
static void account(struct fb_alarms *a, uint32_t id, uint8_t before, uint8_t after)
{
    const struct fb_alarm *al = &a->gw->alarms[id];
    if (al->device >= a->gw->ndevs) return;
    struct fb_dev_metrics *m = &a->gw->devs[al->device].m;
    bool c0 = fb_alarm_counts(before), c1 = fb_alarm_counts(after);
    if (c0 != c1) {
        if (c1) {
            atomic_fetch_add(&m->alarms_active, 1);
            atomic_fetch_add(&m->alarms_ne107[al->ne107 & 3], 1);
        } else {
            atomic_fetch_sub(&m->alarms_active, 1);
            atomic_fetch_sub(&m->alarms_ne107[al->ne107 & 3], 1);
        }
    }
    bool u0 = (before & FB_AS_UNACKED) && !(before & (FB_AS_SHELVED | FB_AS_SUPPRESSED));
    bool u1 = (after & FB_AS_UNACKED) && !(after & (FB_AS_SHELVED | FB_AS_SUPPRESSED));
    if (u0 != u1) {
        if (u1)
            atomic_fetch_add(&m->alarms_unacked, 1);
        else
            atomic_fetch_sub(&m->alarms_unacked, 1);
    }
}

static void mark_dirty(struct fb_alarms *a, uint32_t id)
{
    if (a->dirty[id]) return;
    a->dirty[id] = 1;
    a->dirty_list[a->ndirty++] = id;
}

static void due_at(struct fb_alarms *a, int64_t t)
{
    if (t > 0 && (!a->next_due || t < a->next_due)) a->next_due = t;
}

/* An event to publish at commit.  by/comment may be NULL. */
static void queue_ev(struct fb_alarms *a, uint32_t dev, uint32_t id, int event, uint32_t count, const char *by,
                     const char *comment)
{
    if (a->npend == a->cap_pend) {
        uint32_t nc = a->cap_pend ? a->cap_pend * 2 : 16;
        struct pend_ev *np = realloc(a->pend, nc * sizeof *np);
        if (!np) {
            fb_warn(a->gw->devs[dev].name, NULL, "alarm event not published: out of memory");
            return;
        }
        a->pend = np;
        a->cap_pend = nc;
    }
    struct pend_ev *p = &a->pend[a->npend++];
    memset(p, 0, sizeof *p);
    p->dev = dev;
    p->ts = a->wall;
    p->ev.alarm = id;
    p->ev.event = (uint8_t)event;
    p->ev.count = count;
    p->ev.value = NAN;
    p->exempt = event == FB_AE_ACKED || event == FB_AE_SHELVED || event == FB_AE_UNSHELVED;
    if (id != FB_ALARM_NONE) {
        const struct fb_alarm_st *st = &a->st[id];
        p->ev.flags = st->flags;
        p->ev.value = st->value;
        p->ev.since = st->since;
        if (event == FB_AE_SHELVED) p->ev.until = st->shelved_until;
    }
    if (event == FB_AE_FLOOD) p->ev.until = a->gw->alarm_opts.flood_window_ns;
    char text[FB_REASON_LEN];
    snprintf(text, sizeof text, "%s%s%s", by ? by : "", comment && *comment ? "\n" : "",
             comment && *comment ? comment : "");
    fb_text_cut(p->text, sizeof p->text, text);
}

/* A transition of alarm id: counters, persistence, the event. */
static void transitioned(struct fb_alarms *a, uint32_t id, uint8_t before, int event, const char *by,
                         const char *comment)
{
    if (event <= FB_AE_NONE) return;
    struct fb_alarm_st *st = &a->st[id];
    const struct fb_alarm *al = &a->gw->alarms[id];
    account(a, id, before, st->flags);
    if (event != FB_AE_SUPPRESSED && event != FB_AE_UNSUPPRESSED) mark_dirty(a, id);
    /* raise and clear of a silenced alarm change its state, not what is announced */
    bool silenced = (st->flags & (FB_AS_SHELVED | FB_AS_SUPPRESSED)) != 0;
    if ((event == FB_AE_RAISED || event == FB_AE_CLEARED) && silenced) {
        if (al->device < a->gw->ndevs) a->flood[al->device].refresh = true; /* the summary changed */
        return;
    }
    if (event == FB_AE_RAISED || event == FB_AE_CLEARED) {
        char v[40] = "";
        if (isfinite(st->value)) snprintf(v, sizeof v, " (value %g)", st->value);
        if (event == FB_AE_RAISED)
            fb_info(a->gw->devs[al->device].name, al->name, "alarm raised%s", v);
        else
            fb_info(a->gw->devs[al->device].name, al->name, "alarm cleared%s", v);
    }
    queue_ev(a, al->device, id, event, 0, by, comment);
}

/* ------------------------------------------------------------ publish */
static void publish(struct fb_alarms *a, const struct pend_ev *p)
{
    if (!a->gw->rt) return;
    struct fb_batch *b = fb_batch_new(0, 0, 0);
    if (!b) return;
    b->kind = FB_BATCH_ALARM;
    b->device = p->dev;
    b->ts = p->ts;
    b->ev = p->ev;
    memcpy(b->reason, p->text, sizeof b->reason);
    fb_publish(a->gw, b);
    fb_batch_unref(b);
}

/* The device's flood window ended: announce what it held back. */
static void flood_flush(struct fb_alarms *a, uint32_t dev)
{
    struct dev_flood *f = &a->flood[dev];
    if (!f->held) return;
    struct pend_ev p;
    memset(&p, 0, sizeof p);
    p.dev = dev;
    p.ts = a->wall;
    p.ev.alarm = FB_ALARM_NONE;
    p.ev.event = FB_AE_FLOOD;
    p.ev.count = f->held;
    p.ev.value = NAN;
    p.ev.until = a->gw->alarm_opts.flood_window_ns;
    fb_warn(a->gw->devs[dev].name, NULL, "alarm flood: %u events held back in %.0f s (alarms.flood)", f->held,
            a->gw->alarm_opts.flood_window_ns / 1e9);
    publish(a, &p);
    f->held = 0;
}

static bool flood_admit(struct fb_alarms *a, uint32_t dev)
{
    const struct fb_alarm_opts *o = &a->gw->alarm_opts;
    if (!o->flood_events || dev >= a->gw->ndevs) return true;
    struct dev_flood *f = &a->flood[dev];
    if (!f->start || a->now - f->start >= o->flood_window_ns) {
        flood_flush(a, dev);
        f->start = a->now;
        f->count = 0;
    }
    if (f->count < o->flood_events) {
        f->count++;
        return true;
    }
    f->held++;
    due_at(a, f->start + o->flood_window_ns);
    return false;
}

/* ---------------------------------------------------------- persistence */
static void journal_rec(const struct fb_alarms *a, uint32_t id, struct fb_journal_rec *r)
{
    const struct fb_alarm_st *st = &a->st[id];
    r->key = fb_alarm_key(a->gw->alarms[id].path);
    r->flags = st->flags & (FB_AS_ACTIVE | FB_AS_UNACKED | FB_AS_SHELVED);
    r->since = st->since;
    r->until = st->shelved_until;
    r->value = st->value;
}

static void persist(struct fb_alarms *a)
{
    if (!a->ndirty) return;
    if (a->journal) {
        int rc = 0;
        for (uint32_t i = 0; i < a->ndirty && rc == 0; i++) {
            struct fb_journal_rec r;
            journal_rec(a, a->dirty_list[i], &r);
            rc = fb_alarm_journal_append(a->journal, &r);
        }
        if (rc == 0) rc = fb_alarm_journal_sync(a->journal);
        if (rc < 0 && fb_ratelimit_ok(&a->rl_io, a->now))
            fb_warn(NULL, NULL, "alarms: cannot persist the alarm state: a restart may lose or repeat alarms");
        /* grown to four times what it describes: rewrite it with one record per alarm that is not normal */
        uint64_t nrec = fb_alarm_journal_records(a->journal);
        if (rc == 0 && nrec > 4ULL * a->gw->nalarms + 64) {
            struct fb_journal_rec *recs = malloc(a->gw->nalarms * sizeof *recs);
            size_t n = 0;
            for (uint32_t i = 0; recs && i < a->gw->nalarms; i++)
                if (a->st[i].flags & (FB_AS_ACTIVE | FB_AS_UNACKED | FB_AS_SHELVED)) journal_rec(a, i, &recs[n++]);
            if (recs && fb_alarm_journal_compact(a->journal, recs, n) < 0 && fb_ratelimit_ok(&a->rl_io, a->now))
                fb_warn(NULL, NULL, "alarms: cannot compact the alarm journal");
            free(recs);
        }
    }
    for (uint32_t i = 0; i < a->ndirty; i++) a->dirty[a->dirty_list[i]] = 0;
    a->ndirty = 0;
}

struct key_idx {
    uint64_t key;
    uint32_t id;
};

static int key_cmp(const void *x, const void *y)
{
    const struct key_idx *a = x, *b = y;
    return a->key < b->key ? -1 : a->key > b->key;
}

struct replay {
    struct fb_alarms *a;
    struct key_idx *keys; /* sorted by key */
};

/* A journal record: the state of the alarm with its key (records of alarms
 * no longer configured are skipped, and dropped at the next compaction). */
static void replay_one(void *ctx, const struct fb_journal_rec *r)
{
    struct replay *rp = ctx;
    struct key_idx k = {r->key, 0};
    const struct key_idx *hit = bsearch(&k, rp->keys, rp->a->gw->nalarms, sizeof k, key_cmp);
    if (!hit) return;
    uint8_t fl = r->flags & (FB_AS_ACTIVE | FB_AS_UNACKED | FB_AS_SHELVED);
    fb_alarm_st_init(&rp->a->st[hit->id], fl, r->since, r->until, r->value);
}

/* ----------------------------------------------------------- lifecycle */
void fb_alarms_free(struct fb_alarms *a)
{
    if (!a) return;
    fb_alarm_journal_close(a->journal);
    pthread_mutex_destroy(&a->mu);
    free(a->st);
    free(a->dirty);
    free(a->dirty_list);
    free(a->dev_first);
    free(a->dev_idx);
    free(a->flood);
    free(a->pend);
    free(a);
}

int fb_alarms_start(struct fb_gateway *gw, const char *dir, struct fb_err *err)
{
    if (!gw->nalarms || !gw->rt) return 0;
    struct fb_alarms *a = calloc(1, sizeof *a);
    if (!a) return fb_err_set(err, FB_ENOMEM, "out of memory");
    a->gw = gw;
    pthread_mutex_init(&a->mu, NULL);
    a->rl_io.interval_ns = 60000000000LL;
    uint32_t n = gw->nalarms;
    a->st = calloc(n, sizeof *a->st);
    a->dirty = calloc(n, 1);
    a->dirty_list = calloc(n, sizeof *a->dirty_list);
    a->dev_first = calloc(gw->ndevs + 1, sizeof *a->dev_first);
    a->dev_idx = calloc(n, sizeof *a->dev_idx);
    a->flood = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *a->flood);
    struct key_idx *keys = calloc(n, sizeof *keys);
    if (!a->st || !a->dirty || !a->dirty_list || !a->dev_first || !a->dev_idx || !a->flood || !keys) {
        free(keys);
        fb_alarms_free(a);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < n; i++) {
        fb_alarm_st_init(&a->st[i], 0, 0, 0, NAN);
        keys[i] = (struct key_idx){fb_alarm_key(gw->alarms[i].path), i};
        a->dev_first[gw->alarms[i].device + 1]++;
    }
    for (uint32_t d = 0; d < gw->ndevs; d++) a->dev_first[d + 1] += a->dev_first[d];
    uint32_t *fill = calloc(gw->ndevs + 1, sizeof *fill);
    if (!fill) {
        free(keys);
        fb_alarms_free(a);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t d = gw->alarms[i].device;
        a->dev_idx[a->dev_first[d] + fill[d]++] = i;
    }
    free(fill);
    qsort(keys, n, sizeof *keys, key_cmp);
    if (dir) {
        struct replay rp = {a, keys};
        uint64_t cut = 0;
        struct fb_err e = {0};
        if (fb_alarm_journal_open(&a->journal, dir, replay_one, &rp, &cut, &e) < 0) {
            fb_error(NULL, NULL, "alarms: %s: alarm state kept in memory only (lost on restart)", e.msg);
            for (uint32_t i = 0; i < n; i++) fb_alarm_st_init(&a->st[i], 0, 0, 0, NAN);
        } else {
            if (cut)
                fb_warn(NULL, NULL, "alarms: cut %llu bytes of a torn record from %s/alarms", (unsigned long long)cut,
                        dir);
            uint32_t restored = 0;
            for (uint32_t i = 0; i < n; i++) restored += a->st[i].flags != 0;
            if (restored)
                fb_info(NULL, NULL, "alarms: %u alarms restored from %s/alarms (active, unacknowledged or shelved)",
                        restored, dir);
        }
    } else {
        fb_info(NULL, NULL, "alarms: no buffer directory: alarm state is kept in memory only");
    }
    free(keys);
    int64_t now = fb_mono_ns(), wall = fb_now_ns();
    /* the table is the counters' only writer: a runtime started again in this process starts them afresh */
    for (uint32_t d = 0; d < gw->ndevs; d++) {
        struct fb_dev_metrics *m = &gw->devs[d].m;
        atomic_store(&m->alarms_active, 0);
        atomic_store(&m->alarms_unacked, 0);
        for (int k = 0; k < 4; k++) atomic_store(&m->alarms_ne107[k], 0);
    }
    for (uint32_t i = 0; i < n; i++) {
        account(a, i, 0, a->st[i].flags);
        if (a->st[i].flags & FB_AS_SHELVED) due_at(a, now + (a->st[i].shelved_until - wall));
    }
    /* a journal that grew long in earlier runs is compacted at its first commit */
    if (a->journal && fb_alarm_journal_records(a->journal) > 4ULL * n + 64) {
        a->wall = wall;
        a->now = now;
        for (uint32_t i = 0; i < n; i++)
            if (a->st[i].flags) mark_dirty(a, i);
        if (!a->ndirty) mark_dirty(a, 0);
        persist(a);
    }
    gw->rt->alarms = a;
    return 0;
}

/* ---------------------------------------------------------------- reload */
struct fb_alarms_move {
    uint32_t *dev_first, *dev_idx;
    struct dev_flood *flood;
};

void fb_alarms_move_free(struct fb_alarms_move *m)
{
    if (!m) return;
    free(m->dev_first);
    free(m->dev_idx);
    free(m->flood);
    free(m);
}

struct fb_alarms_move *fb_alarms_move_prepare(const struct fb_gateway *nw)
{
    struct fb_alarms_move *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->dev_first = calloc(nw->ndevs + 1, sizeof *m->dev_first);
    m->dev_idx = calloc(nw->nalarms ? nw->nalarms : 1, sizeof *m->dev_idx);
    m->flood = calloc(nw->ndevs ? nw->ndevs : 1, sizeof *m->flood);
    if (!m->dev_first || !m->dev_idx || !m->flood) {
        fb_alarms_move_free(m);
        return NULL;
    }
    return m;
}

void fb_alarms_move(struct fb_alarms *a, struct fb_alarms_move *m, const struct fb_model_map *map)
{
    struct fb_gateway *gw = a->gw; /* the new model */
    pthread_mutex_lock(&a->mu);
    /* the alarms of each device, by the new device ids (counted, then filled in id order) */
    for (uint32_t i = 0; i < gw->nalarms; i++) m->dev_first[gw->alarms[i].device + 1]++;
    for (uint32_t d = 0; d < gw->ndevs; d++) m->dev_first[d + 1] += m->dev_first[d];
    for (uint32_t i = 0; i < gw->nalarms; i++) {
        uint32_t d = gw->alarms[i].device;
        m->dev_idx[m->dev_first[d]++] = i;
    }
    for (uint32_t d = gw->ndevs; d > 0; d--) m->dev_first[d] = m->dev_first[d - 1];
    m->dev_first[0] = 0;
    /* the flood windows follow their device */
    for (uint32_t d = 0; d < map->ndevs; d++)
        if (map->dev[d] < gw->ndevs) m->flood[map->dev[d]] = a->flood[d];
    uint32_t *t = a->dev_first;
    a->dev_first = m->dev_first;
    m->dev_first = t;
    t = a->dev_idx;
    a->dev_idx = m->dev_idx;
    m->dev_idx = t;
    struct dev_flood *f = a->flood;
    a->flood = m->flood;
    m->flood = f;
    /* the devices' live counters: the new model's start at zero, counted from the table */
    for (uint32_t d = 0; d < gw->ndevs; d++) {
        struct fb_dev_metrics *dm = &gw->devs[d].m;
        atomic_store(&dm->alarms_active, 0);
        atomic_store(&dm->alarms_unacked, 0);
        for (int k = 0; k < 4; k++) atomic_store(&dm->alarms_ne107[k], 0);
    }
    for (uint32_t i = 0; i < gw->nalarms; i++) account(a, i, 0, a->st[i].flags);
    pthread_mutex_unlock(&a->mu);
}

/* ---------------------------------------------------------- edge thread */
void fb_alarms_begin(struct fb_alarms *a, int64_t now, int64_t wall)
{
    pthread_mutex_lock(&a->mu);
    a->now = now;
    a->wall = wall;
}

void fb_alarms_value(struct fb_alarms *a, uint32_t id, double v, uint32_t q, int64_t ts, double sp, uint32_t sp_q)
{
    const struct fb_alarm *al = &a->gw->alarms[id];
    struct fb_alarm_st *st = &a->st[id];
    if (al->kind == FB_AK_EXTERNAL) return;
    uint8_t before = st->flags;
    int c = fb_alarm_cond(al, st, v, q, ts, sp, sp_q);
    int ev = fb_alarm_apply(al, st, c, a->now, a->wall);
    due_at(a, fb_alarm_deadline(al, st));
    transitioned(a, id, before, ev, NULL, NULL);
}

void fb_alarms_suppress(struct fb_alarms *a, uint32_t id, bool on)
{
    struct fb_alarm_st *st = &a->st[id];
    uint8_t before = st->flags;
    transitioned(a, id, before, fb_alarm_suppress(st, on), NULL, NULL);
}

void fb_alarms_timers(struct fb_alarms *a)
{
    if (!a->next_due || a->now < a->next_due) return;
    a->next_due = 0;
    const struct fb_alarm_opts *o = &a->gw->alarm_opts;
    for (uint32_t i = 0; i < a->gw->nalarms; i++) {
        const struct fb_alarm *al = &a->gw->alarms[i];
        struct fb_alarm_st *st = &a->st[i];
        for (int k = 0; k < 3; k++) {
            uint8_t before = st->flags;
            int ev = fb_alarm_due(al, st, a->now, a->wall);
            if (ev == FB_AE_NONE) break;
            transitioned(a, i, before, ev, ev == FB_AE_UNSHELVED ? "expired" : NULL, NULL);
            if (ev == FB_AE_UNSHELVED) fb_info(a->gw->devs[al->device].name, al->name, "shelve expired");
        }
        due_at(a, fb_alarm_deadline(al, st));
        if (st->flags & FB_AS_SHELVED) due_at(a, a->now + (st->shelved_until - a->wall));
    }
    for (uint32_t d = 0; d < a->gw->ndevs; d++) {
        struct dev_flood *f = &a->flood[d];
        if (!f->held) continue;
        if (a->now - f->start >= o->flood_window_ns) {
            flood_flush(a, d);
            f->start = 0;
            f->count = 0;
        } else {
            due_at(a, f->start + o->flood_window_ns);
        }
    }
}

/* Summaries changed by silenced transitions: one refresh per device and second. */
static void refresh_summaries(struct fb_alarms *a)
{
    for (uint32_t d = 0; d < a->gw->ndevs; d++) {
        struct dev_flood *f = &a->flood[d];
        if (!f->refresh) continue;
        if (f->refreshed_ns && a->now - f->refreshed_ns < REFRESH_MIN_NS) {
            due_at(a, f->refreshed_ns + REFRESH_MIN_NS);
            continue;
        }
        struct pend_ev p;
        memset(&p, 0, sizeof p);
        p.dev = d;
        p.ts = a->wall;
        p.ev.alarm = FB_ALARM_NONE;
        p.ev.event = FB_AE_NONE;
        p.ev.value = NAN;
        publish(a, &p);
        f->refresh = false;
        f->refreshed_ns = a->now;
    }
}

int64_t fb_alarms_commit(struct fb_alarms *a)
{
    persist(a);
    for (uint32_t i = 0; i < a->npend; i++) {
        struct pend_ev *p = &a->pend[i];
        bool published = p->exempt || flood_admit(a, p->dev);
        if (published) publish(a, p);
        if (published && p->dev < a->gw->ndevs) { /* the sinks publish the summary with it */
            a->flood[p->dev].refresh = false;
            a->flood[p->dev].refreshed_ns = a->now;
        }
    }
    a->npend = 0;
    refresh_summaries(a);
    int64_t due = a->next_due;
    pthread_mutex_unlock(&a->mu);
    return due;
}

/* ---------------------------------------------------------- any thread */
int fb_alarm_set(struct fb_gateway *gw, uint32_t id, bool active, double value, const char *by)
{
    struct fb_alarms *a = table(gw);
    if (!a) return FB_ECLOSED;
    if (id >= gw->nalarms) return FB_ENOENT;
    const struct fb_alarm *al = &gw->alarms[id];
    if (al->kind != FB_AK_EXTERNAL) return FB_EINVAL;
    fb_alarms_begin(a, fb_mono_ns(), fb_now_ns());
    struct fb_alarm_st *st = &a->st[id];
    uint8_t before = st->flags;
    st->value = value;
    int ev = fb_alarm_apply(al, st, active ? 1 : 0, a->now, a->wall);
    due_at(a, fb_alarm_deadline(al, st));
    transitioned(a, id, before, ev, by, NULL);
    fb_alarms_commit(a);
    /* a delay started: the edge thread's timer must see it */
    if (st->pend_ns) fb_publish_wake_edge(gw);
    return 0;
}

int fb_alarm_message(struct fb_gateway *gw, uint32_t dev, const char *text, const char *by)
{
    if (!gw || !gw->rt) return FB_ECLOSED;
    if (dev >= gw->ndevs) return FB_ENOENT;
    struct fb_alarms *a = table(gw);
    struct pend_ev p;
    memset(&p, 0, sizeof p);
    p.dev = dev;
    p.ts = fb_now_ns();
    p.ev.alarm = FB_ALARM_NONE;
    p.ev.event = FB_AE_MESSAGE;
    p.ev.value = NAN;
    char t[FB_REASON_LEN];
    snprintf(t, sizeof t, "%s\n%s", by ? by : "", text ? text : "");
    fb_text_cut(p.text, sizeof p.text, t);
    if (!a) { /* no alarms configured: no flood bookkeeping either */
        struct fb_alarms tmp = {.gw = gw};
        publish(&tmp, &p);
        return 0;
    }
    fb_alarms_begin(a, fb_mono_ns(), p.ts);
    bool ok = flood_admit(a, dev);
    if (ok) publish(a, &p);
    fb_alarms_commit(a);
    return ok ? 0 : FB_EAGAIN;
}

bool fb_alarm_flags(struct fb_gateway *gw, uint32_t id, uint8_t *flags)
{
    struct fb_alarms *a = table(gw);
    if (!a || id >= gw->nalarms) return false;
    pthread_mutex_lock(&a->mu);
    *flags = a->st[id].flags;
    pthread_mutex_unlock(&a->mu);
    return true;
}

/* ------------------------------------------------------------ commands */
bool fb_alarms_is_command(const void *root)
{
    return json_object_get(root, "ack") || json_object_get(root, "shelve") || json_object_get(root, "unshelve");
}

static void result(struct fb_buf *res, bool *first, bool *all_ok, const char *name, size_t len, const char *error)
{
    if (!*first) fb_buf_putc(res, ',');
    *first = false;
    fb_json_str(res, name, len);
    if (!error) {
        fb_buf_puts(res, ":{\"ok\":true}");
        return;
    }
    *all_ok = false;
    fb_buf_puts(res, ":{\"ok\":false,\"error\":");
    fb_json_cstr(res, error);
    fb_buf_putc(res, '}');
}

enum act { ACT_ACK, ACT_UNSHELVE };

/* "all", one name, or a list of names: ack or unshelve each. */
static void names_action(struct fb_alarms *a, struct fb_gateway *gw, uint32_t dev, const json_t *v, enum act act,
                         const char *source, const char *comment, struct fb_buf *res, bool *first, bool *all_ok)
{
    const char *key = act == ACT_ACK ? "ack" : "unshelve";
    const char *dname = gw->devs[dev].name;
    if (json_is_string(v) && !strcmp(json_string_value(v), "all")) {
        if (!a) return;
        for (uint32_t k = a->dev_first[dev]; k < a->dev_first[dev + 1]; k++) {
            uint32_t id = a->dev_idx[k];
            struct fb_alarm_st *st = &a->st[id];
            uint8_t need = act == ACT_ACK ? FB_AS_UNACKED : FB_AS_SHELVED;
            if (!(st->flags & need)) continue;
            uint8_t before = st->flags;
            int ev = act == ACT_ACK ? fb_alarm_ack(st, NULL) : fb_alarm_unshelve(st, NULL);
            transitioned(a, id, before, ev, source, comment);
            fb_info(dname, gw->alarms[id].name, "alarm %s by %s%s%s", act == ACT_ACK ? "acknowledged" : "unshelved",
                    source, comment ? ": " : "", comment ? comment : "");
            result(res, first, all_ok, gw->alarms[id].name, strlen(gw->alarms[id].name), NULL);
        }
        return;
    }
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_string(v) && !json_is_array(v)) n = 0;
    if (n == 0) {
        fb_warn(dname, NULL, "alarm command refused from %s: bad \"%s\"", source, key);
        result(res, first, all_ok, key, strlen(key), "expected \"all\", an alarm name or a list of alarm names");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_string(s)) {
            result(res, first, all_ok, key, strlen(key), "expected alarm names (strings)");
            continue;
        }
        const char *name = json_string_value(s);
        size_t len = json_string_length(s);
        uint32_t id = a ? fb_alarm_find(gw, dev, name, len) : UINT32_MAX;
        if (id == UINT32_MAX || len > 200) {
            fb_warn(dname, NULL, "%s of alarm '%.*s' from %s refused: no such alarm", key, (int)(len > 80 ? 80 : len),
                    name, source);
            result(res, first, all_ok, name, len, "no such alarm");
            continue;
        }
        struct fb_alarm_st *st = &a->st[id];
        uint8_t before = st->flags;
        const char *why = NULL;
        int ev = act == ACT_ACK ? fb_alarm_ack(st, &why) : fb_alarm_unshelve(st, &why);
        if (ev < 0) {
            fb_warn(dname, gw->alarms[id].name, "%s from %s refused: %s", key, source, why);
            result(res, first, all_ok, name, len, why);
            continue;
        }
        transitioned(a, id, before, ev, source, comment);
        fb_info(dname, gw->alarms[id].name, "alarm %s by %s%s%s", act == ACT_ACK ? "acknowledged" : "unshelved", source,
                comment ? ": " : "", comment ? comment : "");
        result(res, first, all_ok, name, len, NULL);
    }
}

static void shelve_action(struct fb_alarms *a, struct fb_gateway *gw, uint32_t dev, const json_t *v, const char *source,
                          const char *comment, struct fb_buf *res, bool *first, bool *all_ok)
{
    const char *dname = gw->devs[dev].name;
    if (!json_is_object(v) || json_object_size(v) == 0) {
        fb_warn(dname, NULL, "alarm command refused from %s: bad \"shelve\"", source);
        result(res, first, all_ok, "shelve", 6, "expected \"shelve\": {\"alarm\": \"1h\", …}");
        return;
    }
    const char *name;
    json_t *d;
    json_object_foreach((json_t *)v, name, d)
    {
        size_t len = strlen(name);
        uint32_t id = a ? fb_alarm_find(gw, dev, name, len) : UINT32_MAX;
        if (id == UINT32_MAX) {
            fb_warn(dname, NULL, "shelve of alarm '%.80s' from %s refused: no such alarm", name, source);
            result(res, first, all_ok, name, len, "no such alarm");
            continue;
        }
        int64_t ns = -1;
        if (json_is_string(d)) {
            if (fb_parse_duration(json_string_value(d), &ns) < 0) ns = -1;
        } else if (json_is_number(d)) {
            double s = json_number_value(d);
            ns = isfinite(s) && s > 0 && s < 1e9 ? (int64_t)(s * 1e9) : -1;
        }
        int64_t max = gw->alarm_opts.max_shelve_ns;
        char why[120];
        if (ns <= 0) {
            snprintf(why, sizeof why, "expected a duration such as \"30m\" or seconds");
        } else if (max > 0 && ns > max) {
            snprintf(why, sizeof why, "longer than alarms.max_shelve (%.0f s)", max / 1e9);
        } else {
            why[0] = 0;
        }
        if (why[0]) {
            fb_warn(dname, gw->alarms[id].name, "shelve from %s refused: %s", source, why);
            result(res, first, all_ok, name, len, why);
            continue;
        }
        struct fb_alarm_st *st = &a->st[id];
        uint8_t before = st->flags;
        int ev = fb_alarm_shelve(st, a->wall + ns);
        due_at(a, a->now + ns);
        transitioned(a, id, before, ev, source, comment);
        fb_info(dname, gw->alarms[id].name, "alarm shelved for %.0f s by %s%s%s", ns / 1e9, source, comment ? ": " : "",
                comment ? comment : "");
        result(res, first, all_ok, name, len, NULL);
    }
}

void fb_alarms_command(struct fb_gateway *gw, uint32_t dev, const void *rootv, const char *source, struct fb_buf *res,
                       bool *first, bool *all_ok)
{
    const json_t *root = rootv;
    struct fb_alarms *a = table(gw);
    const json_t *c = json_object_get(root, "comment");
    char comment[200] = "";
    if (c && !json_is_string(c)) {
        result(res, first, all_ok, "comment", 7, "expected a string");
        return;
    }
    if (c) { /* one line: it travels in the event's text after the source */
        snprintf(comment, sizeof comment, "%s", json_string_value(c));
        for (char *p = comment; *p; p++)
            if ((unsigned char)*p < 0x20) *p = ' ';
    }
    const char *cm = comment[0] ? comment : NULL;
    char src[96];
    snprintf(src, sizeof src, "%s", source ? source : "?");
    for (char *p = src; *p; p++)
        if ((unsigned char)*p < 0x20) *p = ' ';
    if (a) fb_alarms_begin(a, fb_mono_ns(), fb_now_ns());
    const json_t *v;
    if ((v = json_object_get(root, "ack"))) names_action(a, gw, dev, v, ACT_ACK, src, cm, res, first, all_ok);
    if ((v = json_object_get(root, "shelve"))) shelve_action(a, gw, dev, v, src, cm, res, first, all_ok);
    if ((v = json_object_get(root, "unshelve"))) names_action(a, gw, dev, v, ACT_UNSHELVE, src, cm, res, first, all_ok);
    if (a) {
        fb_alarms_commit(a);
        fb_publish_wake_edge(gw); /* a shelve's expiry is a new timer */
    }
}

/* --------------------------------------------------------------- views */
/* The fields an alarm's event and its summary entry share. */
static void alarm_fields(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_alarm *al, uint8_t flags,
                         double value, int64_t since)
{
    fb_buf_puts(out, "\"alarm\":");
    fb_json_cstr(out, al->name);
    if (al->tag < gw->ntags) {
        fb_buf_puts(out, ",\"tag\":");
        fb_json_cstr(out, gw->tags[al->tag].name);
    }
    fb_buf_puts(out, ",\"kind\":\"");
    fb_buf_puts(out, fb_alarm_kind_name(al->kind));
    fb_buf_puts(out, "\",\"state\":\"");
    fb_buf_puts(out, fb_alarm_state_name(flags));
    fb_buf_puts(out, (flags & FB_AS_ACTIVE) ? "\",\"active\":true" : "\",\"active\":false");
    fb_buf_puts(out, (flags & FB_AS_UNACKED) ? ",\"acked\":false" : ",\"acked\":true");
    fb_buf_puts(out, (flags & FB_AS_SHELVED) ? ",\"shelved\":true" : ",\"shelved\":false");
    fb_buf_puts(out, (flags & FB_AS_SUPPRESSED) ? ",\"suppressed\":true" : ",\"suppressed\":false");
    fb_buf_puts(out, ",\"priority\":\"");
    fb_buf_puts(out, fb_alarm_prio_name(al->priority));
    fb_buf_puts(out, "\",\"severity\":");
    fb_json_u64(out, al->severity);
    fb_buf_puts(out, ",\"value\":");
    fb_json_double(out, value);
    switch (al->kind) {
        case FB_AK_HIHI:
        case FB_AK_HI:
        case FB_AK_LO:
        case FB_AK_LOLO:
        case FB_AK_ROC:
        case FB_AK_DEVIATION:
            fb_buf_puts(out, ",\"limit\":");
            fb_json_double(out, al->limit);
            if (al->kind == FB_AK_DEVIATION && al->setpoint < gw->ntags) {
                fb_buf_puts(out, ",\"setpoint\":");
                fb_json_cstr(out, fb_tag_path(gw, &gw->tags[al->setpoint]));
            }
            break;
        case FB_AK_DIGITAL:
            fb_buf_puts(out, ",\"when\":");
            fb_json_double(out, al->when);
            break;
        default: break;
    }
    if (since > 0) {
        fb_buf_puts(out, ",\"since\":");
        fb_json_time(out, since);
    }
    if (al->message) {
        fb_buf_puts(out, ",\"message\":");
        fb_json_cstr(out, al->message);
    }
}

static void put_window(struct fb_buf *out, int64_t ns)
{
    char t[32];
    if (ns % 1000000000LL == 0)
        snprintf(t, sizeof t, "\"%llds\"", (long long)(ns / 1000000000LL));
    else
        snprintf(t, sizeof t, "\"%lldms\"", (long long)(ns / 1000000LL));
    fb_buf_puts(out, t);
}

void fb_alarm_event_json(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_batch *b)
{
    const struct fb_alarm_ev *ev = &b->ev;
    const char *dname = b->device < gw->ndevs ? gw->devs[b->device].name : "?";
    const char *type = ev->event == FB_AE_FLOOD ? "flood" : ev->event == FB_AE_MESSAGE ? "message" : "event";
    if (ev->event == FB_AE_NONE) type = "update"; /* a summary refresh: sinks publish no event for it */
    fb_buf_puts(out, "{\"type\":\"");
    fb_buf_puts(out, type);
    fb_buf_puts(out, "\",\"ts\":");
    fb_json_time(out, b->ts);
    fb_buf_puts(out, ",\"seq\":");
    fb_json_u64(out, b->seq);
    fb_buf_puts(out, ",\"device\":");
    fb_json_cstr(out, dname);
    /* the text: "by\ncomment" */
    const char *text = b->reason;
    size_t tl = strnlen(text, sizeof b->reason);
    const char *nl = memchr(text, '\n', tl);
    size_t bl = nl ? (size_t)(nl - text) : tl;
    if (ev->event == FB_AE_FLOOD) {
        fb_buf_puts(out, ",\"held\":");
        fb_json_u64(out, ev->count);
        fb_buf_puts(out, ",\"window\":");
        put_window(out, ev->until);
    } else if (ev->event == FB_AE_MESSAGE) {
        fb_buf_puts(out, ",\"text\":");
        if (nl)
            fb_json_str(out, nl + 1, tl - bl - 1);
        else
            fb_buf_puts(out, "\"\"");
    } else if (ev->alarm < gw->nalarms) {
        fb_buf_puts(out, ",\"event\":\"");
        fb_buf_puts(out, fb_alarm_event_name(ev->event));
        fb_buf_puts(out, "\",");
        alarm_fields(out, gw, &gw->alarms[ev->alarm], ev->flags, ev->value, ev->since);
        if (ev->event == FB_AE_SHELVED && ev->until > 0) {
            fb_buf_puts(out, ",\"until\":");
            fb_json_time(out, ev->until);
        }
    }
    if (bl) {
        fb_buf_puts(out, ",\"by\":");
        fb_json_str(out, text, bl);
    }
    if (nl && ev->event != FB_AE_MESSAGE && tl > bl + 1) {
        fb_buf_puts(out, ",\"comment\":");
        fb_json_str(out, nl + 1, tl - bl - 1);
    }
    fb_buf_putc(out, '}');
    fb_buf_cstr(out);
}

void fb_alarm_summary_json(struct fb_buf *out, struct fb_gateway *gw, uint32_t dev)
{
    struct fb_alarms *a = table(gw);
    fb_buf_puts(out, "{\"type\":\"summary\",\"ts\":");
    fb_json_time(out, fb_now_ns());
    fb_buf_puts(out, ",\"device\":");
    fb_json_cstr(out, dev < gw->ndevs ? gw->devs[dev].name : "?");
    if (!a || dev >= gw->ndevs) {
        fb_buf_puts(out, ",\"active\":0,\"unacked\":0,\"shelved\":0,\"alarms\":[]}");
        fb_buf_cstr(out);
        return;
    }
    pthread_mutex_lock(&a->mu);
    uint32_t act = 0, un = 0, sh = 0;
    for (uint32_t k = a->dev_first[dev]; k < a->dev_first[dev + 1]; k++) {
        uint8_t f = a->st[a->dev_idx[k]].flags;
        act += fb_alarm_counts(f);
        un += (f & FB_AS_UNACKED) && !(f & (FB_AS_SHELVED | FB_AS_SUPPRESSED));
        sh += (f & FB_AS_SHELVED) != 0;
    }
    fb_buf_puts(out, ",\"active\":");
    fb_json_u64(out, act);
    fb_buf_puts(out, ",\"unacked\":");
    fb_json_u64(out, un);
    fb_buf_puts(out, ",\"shelved\":");
    fb_json_u64(out, sh);
    fb_buf_puts(out, ",\"alarms\":[");
    bool first = true;
    for (uint32_t k = a->dev_first[dev]; k < a->dev_first[dev + 1]; k++) {
        uint32_t id = a->dev_idx[k];
        const struct fb_alarm_st *st = &a->st[id];
        if (!(st->flags & (FB_AS_ACTIVE | FB_AS_UNACKED | FB_AS_SHELVED))) continue;
        if (!first) fb_buf_putc(out, ',');
        first = false;
        fb_buf_putc(out, '{');
        alarm_fields(out, gw, &gw->alarms[id], st->flags, st->value, st->since);
        if ((st->flags & FB_AS_SHELVED) && st->shelved_until > 0) {
            fb_buf_puts(out, ",\"until\":");
            fb_json_time(out, st->shelved_until);
        }
        fb_buf_putc(out, '}');
    }
    pthread_mutex_unlock(&a->mu);
    fb_buf_puts(out, "]}");
    fb_buf_cstr(out);
}
