/* runtime.c — the threads of a running gateway and how data moves between them.
 *
 *   connection threads: read → pipeline (scale, plausibility, deadband, windows)
 *          │             → sequence number → every sink's queue ──▶ sink threads ──▶ north
 *          ▲                                                                │
 *          └──── writes (fb_conn_write) ◀── router thread ◀── commands ◀─────┘
 *
 * Connection thread: one per TCP connection / serial line.  All poll groups of
 * all devices on it share one earliest-deadline schedule; between reads the
 * thread sleeps on a condition variable with an absolute monotonic deadline,
 * woken early only by a write request or shutdown — it never spins.  It runs
 * the pipeline itself on what it read: a device's tags belong to exactly one
 * connection, so their processing state is touched by one thread only, and
 * the wake-up of a separate pipeline thread per poll (which profiling showed
 * to dominate CPU per value) is saved.
 *
 * Sink thread: one per sink; with a buffer it appends to the store and
 * delivers from it (store-and-forward), otherwise it hands batches straight
 * to the sink.
 *
 * Memory is bounded by construction: each poll group owns one raw batch and
 * all groups share a few processed batches, sized at start-up.  A slow sink
 * makes pool_get block, which slows polling (back-pressure) instead of
 * growing queues.
 *
 * Shutdown order: stop polling (connection threads finish their cycle and
 * close their devices), stop the router, let the sinks publish what is
 * queued and their offline status.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../proc/proc.h"
#include "../store/store.h"
#include "batch_codec.h"
#include "buf.h"
#include "log.h"
#include "router.h"
#include "runtime.h"

/* A connection thread reads a group and runs it through the pipeline before
 * it reads the next, so one raw batch per group is enough. */
#define FB_RAW_BATCHES_PER_GROUP 1
/* Processed batches are shared by all groups; sinks take them quickly, so a
 * few suffice however many devices there are. */
#define FB_OUT_BATCHES 8
/* Without a buffer: how much undelivered data a sink holds in memory. */
#define FB_MEMORY_QUEUE_BYTES (8u << 20)

/* The runtime's shared state (gw->bus). */
struct fb_bus {
    pthread_mutex_t fan_mu; /* sequence numbers and sink queues advance together */
    struct fb_proc *proc;
    bool http;
    bool router;
    atomic_bool sinks_stop;
    bool seq_persisted; /* seq comes from a counter file that survives kill -9 */
    struct fb_batch_pool *out_pool; /* processed batches: pipeline → sinks */
    struct fb_store_seq seq;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
};

/* ------------------------------------------------------------ time helpers */
static void abs_deadline(struct timespec *ts, int64_t mono_ns)
{
    ts->tv_sec = mono_ns / 1000000000LL;
    ts->tv_nsec = mono_ns % 1000000000LL;
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* ------------------------------------------------------------------ sinks */
/* Ids of batches sent past the store (device state) carry this bit, so their
 * delivery reports never touch the store's records. */
#define DIRECT_ID (1ULL << 63)

/* Batches can be in several sink queues at once, so queues hold small nodes. */
struct qnode {
    struct qnode *next;
    struct fb_batch *b;
};

/* The runtime's private state of one sink (kept in s->q_head). */
struct sink_rt {
    struct qnode *head, *tail, *free;
    /* store-and-forward */
    struct fb_buf enc;          /* record being appended */
    struct fb_batch *scratch;   /* record being delivered */
    uint32_t fp;                /* this config's model fingerprint */
    struct fb_model_map *map;   /* for records of another config */
    uint32_t map_fp;
    char dir[1024];
    uint32_t drain_rate;        /* messages/s, 0 = unlimited */
    bool mem_only;              /* no buffer: configured.  Nothing waiting and the sink
                                 * ready → hand batches straight over (no crash safety is
                                 * promised, so the queue is only for when it is needed) */
    double tokens;              /* drain-rate bucket */
    int64_t tokens_ns;
    struct fb_ratelimit rl_drop, rl_full;
    uint64_t undecodable;
};

void fb_sink_done(struct fb_sink_inst *s, uint64_t batch_id, enum fb_delivery d)
{
    switch (d) {
    case FB_SENT: atomic_fetch_add(&s->m.sent, 1); break;
    /* only the store retries: without one (or for a batch sent past it) the batch is lost */
    case FB_RETRY: atomic_fetch_add(s->store && !(batch_id & DIRECT_ID) ? &s->m.retries : &s->m.dropped, 1); break;
    case FB_DROP: atomic_fetch_add(&s->m.dropped, 1); break;
    }
    if (!s->store || (batch_id & DIRECT_ID)) return;
    if (d == FB_RETRY) {
        atomic_store(&s->rewind, true);
    } else {
        /* delivered, or refused for good (counted above): either way it leaves the queue */
        fb_store_ack(s->store, batch_id);
    }
    /* room in flight again: wake the sink thread */
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void sink_push(struct fb_sink_inst *s, struct fb_batch *b)
{
    struct sink_rt *q = (struct sink_rt *)s->q_head;
    fb_batch_ref(b);
    pthread_mutex_lock(&s->mu);
    struct qnode *n = q->free;
    if (n)
        q->free = n->next;
    else
        n = malloc(sizeof *n); /* grows to the number of batches in flight, then reused */
    if (!n) {
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add(&s->m.dropped, 1);
        fb_batch_unref(b);
        return;
    }
    n->b = b;
    n->next = NULL;
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    s->q_len++;
    atomic_fetch_add(&s->m.queued, 1);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int64_t store_deliver(struct fb_sink_inst *s, struct sink_rt *q);

/* Put one processed batch into the store.  With the block policy a full
 * store holds the sink thread here, the sink queue and then the group pools
 * fill, and the connection threads slow their polling: back-pressure.  While
 * it waits, this thread keeps delivering (it is the store's only consumer:
 * without that, a full store could never drain), and a stop request ends the
 * wait (the batch is then dropped and counted: the pipeline cannot finish
 * while this thread holds its batches). */
static void store_append(struct fb_sink_inst *s, struct sink_rt *q, const struct fb_batch *b)
{
    fb_buf_clear(&q->enc);
    fb_batch_encode(&q->enc, b, q->fp);
    uint64_t id;
    for (;;) {
        int rc = fb_store_append(s->store, q->enc.p, (uint32_t)q->enc.len, b->ts, &id);
        if (rc == 0) return;
        if (rc == FB_EAGAIN && !atomic_load(&s->gw->stop) && !atomic_load(&s->gw->bus->sinks_stop)) {
            if (fb_ratelimit_ok(&q->rl_full, fb_mono_ns()))
                fb_warn(NULL, NULL, "%s: buffer full, holding the producers back (policy block)", s->name);
            fb_store_flush(s->store); /* what is buffered must be readable to be delivered */
            store_deliver(s, q);
            struct timespec ts = {0, 10000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        atomic_fetch_add(&s->m.dropped, 1);
        if (fb_ratelimit_ok(&q->rl_drop, fb_mono_ns()))
            fb_warn(NULL, NULL, "%s: cannot buffer a batch of %u values (%s); dropped", s->name, b->n,
                    fb_strerror(rc));
        return;
    }
}

/* Records of another config are translated by name (model-<fp> files).
 * Returns 0 with *map NULL for this config's records, 0 with a map for
 * another config's, FB_ENOENT when that config's names are unknown. */
static int store_map(struct fb_sink_inst *s, struct sink_rt *q, const void *p, uint32_t len,
                     const struct fb_model_map **map)
{
    *map = NULL;
    if (len < 8) return FB_EPROTO;
    const uint8_t *b = p;
    uint32_t fp = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
    if (fp == q->fp) return 0;
    if (!q->map || q->map_fp != fp) {
        fb_model_map_free(q->map);
        q->map = fb_model_map_load(s->gw, q->dir, fp);
        q->map_fp = fp;
    }
    *map = q->map;
    return q->map ? 0 : FB_ENOENT;
}

/* Hand buffered records to the sink while it can take them and the drain
 * rate allows.  Returns the time to wait before trying again (ns), or -1 to
 * wait for a wake-up (new data, a delivery report) or the next tick. */
static int64_t store_deliver(struct fb_sink_inst *s, struct sink_rt *q)
{
    if (atomic_exchange(&s->rewind, false)) fb_store_rewind(s->store);
    uint32_t rate = q->drain_rate;
    for (;;) {
        /* a failed delivery stops the stream: the next round starts again from it, in order */
        if (atomic_load(&s->rewind)) return 1000000;
        if (s->sink->ready && !s->sink->ready(s)) return -1;
        if (rate) {
            int64_t now = fb_mono_ns();
            q->tokens += (double)(now - q->tokens_ns) * rate / 1e9;
            q->tokens_ns = now;
            double cap = rate < 10 ? 1.0 : rate / 10.0; /* at most a tenth of a second in a burst */
            if (q->tokens > cap) q->tokens = cap;
            if (q->tokens < 1.0) return (int64_t)((1.0 - q->tokens) * 1e9 / rate) + 1000;
        }
        uint64_t id;
        const void *p;
        uint32_t len;
        int64_t ts;
        int rc = fb_store_next(s->store, &id, &p, &len, &ts);
        if (rc != 0) return -1; /* nothing pending, or the in-flight window is full */
        if (rate) q->tokens -= 1.0;
        const struct fb_model_map *map;
        rc = store_map(s, q, p, len, &map);
        if (rc == 0) rc = fb_batch_decode(p, len, s->gw, map, &q->scratch, NULL);
        if (rc < 0) {
            /* written by another config whose names are lost, or damaged past
             * its CRC: it can never be delivered, so it leaves the queue counted */
            q->undecodable++;
            atomic_fetch_add(&s->m.dropped, 1);
            if (fb_ratelimit_ok(&q->rl_drop, fb_mono_ns()))
                fb_warn(NULL, NULL, "%s: buffered record %llu cannot be decoded (%s); dropped", s->name,
                        (unsigned long long)id, fb_strerror(rc));
            fb_store_ack(s->store, id);
            continue;
        }
        if (s->sink->send(s, q->scratch, id) < 0) atomic_fetch_add(&s->m.errors, 1);
    }
}

static void *sink_thread(void *arg)
{
    struct fb_sink_inst *s = arg;
    struct fb_gateway *gw = s->gw;
    struct sink_rt *q = (struct sink_rt *)s->q_head;
    uint32_t unflushed = 0;
    int64_t wait_ns = -1;
    int64_t stop_deadline = 0;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool stopping = atomic_load(&gw->bus->sinks_stop);
        if (!q->head && !stopping) {
            struct timespec ts;
            int64_t w = wait_ns >= 0 && wait_ns < 100000000LL ? wait_ns : 100000000LL;
            abs_deadline(&ts, fb_mono_ns() + w);
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        struct qnode *n = q->head;
        if (n) {
            q->head = n->next;
            if (!q->head) q->tail = NULL;
            s->q_len--;
        }
        bool queue_empty = !q->head;
        stopping = atomic_load(&gw->bus->sinks_stop);
        pthread_mutex_unlock(&s->mu);
        if (n) {
            struct fb_batch *b = n->b;
            if (s->store && b->kind == FB_BATCH_DATA && !(q->mem_only && fb_store_live(s->store) == 0 &&
                                                           (!s->sink->ready || s->sink->ready(s)))) {
                store_append(s, q, b);
                unflushed++;
            } else if (s->sink->send(s, b, s->store ? b->seq | DIRECT_ID : b->seq) < 0) {
                atomic_fetch_add(&s->m.errors, 1);
            }
            fb_batch_unref(b);
            pthread_mutex_lock(&s->mu);
            n->next = q->free;
            q->free = n;
            pthread_mutex_unlock(&s->mu);
        }
        if (s->store) {
            /* group commit: one sync for everything that arrived together */
            if (unflushed && (queue_empty || unflushed >= 256)) {
                fb_store_flush(s->store);
                unflushed = 0;
            }
            wait_ns = store_deliver(s, q);
        }
        if (s->sink->tick) s->sink->tick(s);
        if (stopping && queue_empty && !n) {
            /* the pipeline has finished: deliver what the sink still takes, for a bounded time */
            if (!s->store) break;
            if (!stop_deadline) stop_deadline = fb_mono_ns() + 2000000000LL;
            struct fb_store_stats st;
            fb_store_stats(s->store, &st);
            if (st.records == 0 || fb_mono_ns() >= stop_deadline || (s->sink->ready && !s->sink->ready(s)))
                break;
            if (wait_ns < 0) wait_ns = 10000000LL;
            struct timespec ts = {0, (long)(wait_ns < 100000000LL ? wait_ns : 100000000LL)};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* The largest record a batch of this config can encode to (batch_codec.c:
 * 37 bytes of header plus the reason (< FB_REASON_LEN), per sample at most 41
 * bytes plus its string, 44 per stats entry), so the store never refuses one. */
static uint32_t max_record_bytes(const struct fb_gateway *gw)
{
    uint64_t best = 0;
    for (uint32_t i = 0; i < gw->ndevs; i++)
        for (uint32_t k = 0; k < gw->devs[i].ngroups; k++) {
            const struct fb_group *g = &gw->devs[i].groups[k];
            uint64_t n = 64 + FB_REASON_LEN + (uint64_t)g->ntags * (41 + 44);
            for (uint32_t t = 0; t < g->ntags; t++) {
                const struct fb_tag *tag = &gw->tags[g->tags[t]];
                if (tag->type == FB_T_STRING) n += tag->str_len ? tag->str_len : 256;
            }
            if (n > best) best = n;
        }
    return best > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)best;
}

/* Open the sink's store (if it has a buffer) and the persisted sequence. */
static int sink_store_open(struct fb_gateway *gw, struct fb_sink_inst *s, struct fb_err *err)
{
    struct sink_rt *q = (struct sink_rt *)s->q_head;
    q->rl_drop.interval_ns = 10000000000LL;
    q->rl_full.interval_ns = 10000000000LL;
    fb_buf_init(&q->enc);
    q->tokens_ns = fb_mono_ns();
    if (!s->buffer) {
        /* No buffer configured: the same queue in memory (bounded, lost on a
         * crash), so a broker that is late at start-up or away for a moment
         * costs nothing — the deadband would otherwise hold back a value whose
         * only publication went nowhere. */
        struct fb_store_cfg mc = {.dir = NULL, .max_bytes = FB_MEMORY_QUEUE_BYTES,
                                  .segment_bytes = 256 * 1024, .max_record = max_record_bytes(gw),
                                  .name = s->name};
        struct fb_err e = {0};
        s->store = fb_store_open(&mc, &e);
        if (!s->store) return fb_err_set(err, e.code ? e.code : FB_ENOMEM, "%s: memory queue: %s", s->name, e.msg);
        q->mem_only = true;
        return 0;
    }
    q->drain_rate = s->buffer->drain_rate;
    if (mkdir(s->buffer->path, 0750) < 0 && errno != EEXIST)
        fb_warn(NULL, NULL, "%s: cannot create buffer directory %s: %s", s->name, s->buffer->path, strerror(errno));
    snprintf(q->dir, sizeof q->dir, "%s/%s", s->buffer->path, s->name);
    struct fb_store_cfg c = {
        .dir = q->dir,
        .max_bytes = s->buffer->max_bytes,
        .max_age_ns = s->buffer->max_age_ns,
        .sync = s->buffer->sync,
        .sync_interval_ns = s->buffer->sync_interval_ns,
        .full_policy = s->buffer->full_policy,
        .max_record = max_record_bytes(gw),
        .name = s->name,
    };
    struct fb_err e = {0};
    s->store = fb_store_open(&c, &e);
    if (!s->store) return fb_err_set(err, e.code ? e.code : FB_ENOMEM, "%s: buffer: %s", s->name, e.msg);
    if (e.code)
        fb_error(NULL, NULL, "%s: buffer %s unusable (%s): running on memory only, not crash-safe", s->name,
                 q->dir, e.msg);
    q->fp = fb_model_fingerprint(gw);
    if (fb_model_save(gw, q->dir, q->fp) < 0)
        fb_warn(NULL, NULL, "%s: cannot save the tag names of this config in %s", s->name, q->dir);
    struct fb_store_stats st;
    fb_store_stats(s->store, &st);
    if (st.records)
        fb_info(NULL, NULL, "%s: %llu buffered records (%.1f MiB) to deliver first", s->name,
                (unsigned long long)st.records, st.bytes / 1048576.0);
    return 0;
}

static void sink_rt_free(struct fb_sink_inst *s)
{
    struct sink_rt *q = (struct sink_rt *)s->q_head;
    if (!q) return;
    if (s->store) {
        fb_store_flush(s->store);
        fb_store_close(s->store);
        s->store = NULL;
    }
    while (q->free) {
        struct qnode *n = q->free;
        q->free = n->next;
        free(n);
    }
    fb_buf_free(&q->enc);
    fb_batch_free(q->scratch);
    fb_model_map_free(q->map);
    free(q);
    s->q_head = NULL;
}

/* --------------------------------------------------------------- pipeline */
static void fan_out(struct fb_gateway *gw, struct fb_batch *b)
{
    for (uint32_t i = 0; i < gw->nsinks; i++) sink_push(&gw->sinks[i], b);
}

/* Per-gateway message sequence.  With a buffer directory it is persisted in
 * reserved blocks (src/store), so it never goes back, even after kill -9;
 * without one it starts from the clock in microseconds, which also keeps it
 * increasing across restarts as long as the clock does. */
static uint64_t next_seq(struct fb_gateway *gw)
{
    struct fb_bus *bus = gw->bus;
    if (bus->seq_persisted) {
        uint64_t v;
        if (fb_store_seq_next(&bus->seq, &v) < 0) {
            static struct fb_ratelimit rl = {.interval_ns = 60000000000LL};
            if (fb_ratelimit_ok(&rl, fb_mono_ns()))
                fb_warn(NULL, NULL, "cannot persist the sequence counter in %s: numbers may repeat after a crash",
                        bus->seq.dir);
        }
        atomic_store(&gw->seq, v);
        return v;
    }
    return atomic_fetch_add(&gw->seq, 1) + 1;
}

/* Number a batch and queue it to every sink, atomically with respect to other
 * connection threads, so every sink sees batches in sequence order. */
static void publish(struct fb_gateway *gw, struct fb_batch *b)
{
    pthread_mutex_lock(&gw->bus->fan_mu);
    b->seq = next_seq(gw);
    fan_out(gw, b);
    pthread_mutex_unlock(&gw->bus->fan_mu);
}

/* The pipeline, run by the connection thread that read the batch: the tags
 * of a device belong to one connection, so their processing state is only
 * ever touched by that thread and no hand-off to another thread is needed
 * (each hand-off costs a wake-up, which dominated the CPU per value).
 * Takes ownership of `in`. */
static void pipeline(struct fb_gateway *gw, struct fb_batch *in)
{
    struct fb_bus *bus = gw->bus;
    struct fb_batch *out = fb_batch_pool_get(bus->out_pool);
    if (!out) {
        fb_batch_unref(in);
        return;
    }
    out->kind = FB_BATCH_DATA;
    out->device = in->device;
    out->group = in->group;
    out->ts = in->ts;
    fb_proc_batch(bus->proc, in, out);
    fb_batch_unref(in);
    if (out->n) publish(gw, out);
    fb_batch_unref(out);
}

/* ------------------------------------------------------------ connections */
static void emit_state(struct fb_gateway *gw, struct fb_device *d, int state, const char *reason)
{
    int old = atomic_exchange(&d->state, state);
    if (old == state) return;
    struct fb_batch *b = fb_batch_new(0, 0, 0);
    if (!b) return;
    b->kind = FB_BATCH_DEVSTATE;
    b->dev_state = (uint8_t)state;
    b->device = d->idx;
    b->ts = fb_now_ns();
    /* whole driver messages fit; anything longer is cut at a word, with "…" */
    fb_text_cut(b->reason, sizeof b->reason, reason);
    publish(gw, b);
    fb_batch_unref(b);
}

void fb_device_set_state(struct fb_device *d, int state, const char *reason)
{
    if (!d->gw || !d->gw->bus) {
        atomic_store(&d->state, state);
        return;
    }
    emit_state(d->gw, d, state, reason);
}

/* All tags of a group with one bad quality, e.g. when the connection is down. */
static void emit_bad_group(struct fb_gateway *gw, struct fb_device *d, struct fb_group *g,
                           uint32_t q)
{
    struct fb_batch *b = fb_batch_pool_get(g->pool);
    if (!b) return;
    b->device = d->idx;
    b->group = (uint16_t)(g - d->groups);
    b->ts = fb_now_ns();
    for (uint32_t i = 0; i < g->ntags; i++) fb_batch_add(b, g->tags[i], q, b->ts, NULL);
    pipeline(gw, b);
}

static void fail_writes(struct fb_conn *c, const char *why);
static void conn_lost(struct fb_gateway *gw, struct fb_conn *c, const char *reason);
#define BACKOFF_MIN_NS 500000000LL
#define BACKOFF_MAX_NS 30000000000LL

static void finish_write(struct fb_write_req *r, int rc, const struct fb_err *err)
{
    pthread_mutex_lock(&r->mu);
    r->rc = rc;
    if (err) r->err = *err;
    r->done = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (atomic_fetch_sub(&r->refs, 1) == 1) {
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r);
    }
}

static void do_writes(struct fb_gateway *gw, struct fb_conn *c)
{
    for (;;) {
        pthread_mutex_lock(&c->mu);
        struct fb_write_req *r = c->wq_head;
        if (r) {
            c->wq_head = r->next;
            if (!c->wq_head) c->wq_tail = NULL;
        }
        pthread_mutex_unlock(&c->mu);
        if (!r) return;
        struct fb_tag *t = &gw->tags[r->tag];
        struct fb_device *d = &gw->devs[t->device];
        struct fb_err err = {0};
        int rc;
        if (!c->connected) {
            rc = fb_err_set(&err, FB_EIO, "device %s is not connected", d->name);
        } else {
            rc = c->drv->write(d, t, &r->raw, &err);
            atomic_fetch_add(&d->m.writes, 1);
            if (rc < 0) atomic_fetch_add(&d->m.write_errors, 1);
            /* read the new value back soon, so the change shows up at once */
            if (rc == 0) d->groups[t->group].next_due = fb_mono_ns();
        }
        if (rc < 0 && !err.msg[0]) fb_err_set(&err, rc, "%s", fb_strerror(rc));
        if (rc == FB_EIO || rc == FB_EPROTO) { /* the link itself broke: same as a failed read */
            finish_write(r, rc, &err);
            fb_warn(d->name, t->name, "connection lost during write (%s), reconnecting", err.msg);
            conn_lost(gw, c, err.msg);
            c->next_try = fb_mono_ns() + BACKOFF_MIN_NS;
            fail_writes(c, "connection lost");
            return;
        }
        if (rc < 0 && !err.msg[0]) fb_err_set(&err, rc, "%s", fb_strerror(rc));
        finish_write(r, rc, &err);
    }
}

static void fail_writes(struct fb_conn *c, const char *why)
{
    for (;;) {
        pthread_mutex_lock(&c->mu);
        struct fb_write_req *r = c->wq_head;
        if (r) {
            c->wq_head = r->next;
            if (!c->wq_head) c->wq_tail = NULL;
        }
        pthread_mutex_unlock(&c->mu);
        if (!r) return;
        struct fb_err err;
        fb_err_set(&err, FB_ECLOSED, "%s", why);
        finish_write(r, FB_ECLOSED, &err);
    }
}

static void conn_lost(struct fb_gateway *gw, struct fb_conn *c, const char *reason)
{
    c->drv->close(c);
    c->connected = false;
    for (uint32_t i = 0; i < c->ndevs; i++) {
        struct fb_device *d = c->devs[i];
        atomic_fetch_add(&d->m.reconnects, 1);
        emit_state(gw, d, FB_DEV_OFFLINE, reason);
        for (uint32_t k = 0; k < d->ngroups; k++) emit_bad_group(gw, d, &d->groups[k], FB_Q_BAD_COMM);
    }
}

static void *conn_thread(void *arg)
{
    struct fb_conn *c = arg;
    struct fb_gateway *gw = c->devs[0]->gw;
    struct fb_backoff bo;
    fb_backoff_init(&bo, BACKOFF_MIN_NS, BACKOFF_MAX_NS);
    struct fb_ratelimit rl = {.interval_ns = 60000000000LL};
    bool ever_failed = false;
    uint32_t failed_q = 0; /* the quality the tags were last given for a failed connect */
    c->next_try = 0;
    int64_t now = fb_mono_ns();
    for (uint32_t i = 0; i < c->ndevs; i++)
        for (uint32_t k = 0; k < c->devs[i]->ngroups; k++) c->devs[i]->groups[k].next_due = now;

    while (!atomic_load(&gw->stop)) {
        now = fb_mono_ns();
        if (!c->connected && now >= c->next_try) {
            struct fb_err err = {0};
            c->fail_q = 0;
            c->fail_retry_ns = 0;
            if (c->drv->open(c, &err) == 0) {
                c->connected = true;
                fb_backoff_reset(&bo);
                if (ever_failed) fb_info(c->devs[0]->name, NULL, "connected (%s)", c->key);
                else fb_debug(c->devs[0]->name, NULL, "connected (%s)", c->key);
                ever_failed = false;
                failed_q = 0;
                rl.last_ns = 0;
                for (uint32_t i = 0; i < c->ndevs; i++) emit_state(gw, c->devs[i], FB_DEV_ONLINE, NULL);
            } else {
                /* the tags get the failure's quality (a driver may name it, e.g. a refused login) */
                uint32_t fq = c->fail_q ? c->fail_q : FB_Q_BAD_COMM;
                if (!ever_failed || fq != failed_q) {
                    for (uint32_t i = 0; i < c->ndevs; i++) {
                        emit_state(gw, c->devs[i], FB_DEV_OFFLINE, err.msg);
                        if (atomic_load(&c->devs[i]->state) == FB_DEV_OFFLINE)
                            for (uint32_t k = 0; k < c->devs[i]->ngroups; k++)
                                emit_bad_group(gw, c->devs[i], &c->devs[i]->groups[k], fq);
                    }
                    failed_q = fq;
                }
                int64_t delay = fb_backoff_next(&bo); /* exponential, with jitter */
                if (c->fail_retry_ns > delay) delay = c->fail_retry_ns; /* e.g. not to lock an account */
                if (fb_ratelimit_ok(&rl, now) || !ever_failed)
                    fb_warn(c->devs[0]->name, NULL, "connect failed: %s (retry in %.1fs)", err.msg, delay / 1e9);
                ever_failed = true;
                c->next_try = now + delay;
                fail_writes(c, "device is not connected");
            }
        }
        if (c->connected) do_writes(gw, c);

        /* earliest due group */
        struct fb_device *due_dev = NULL;
        struct fb_group *due = NULL;
        for (uint32_t i = 0; i < c->ndevs; i++)
            for (uint32_t k = 0; k < c->devs[i]->ngroups; k++) {
                struct fb_group *g = &c->devs[i]->groups[k];
                if (!due || g->next_due < due->next_due) {
                    due = g;
                    due_dev = c->devs[i];
                }
            }
        now = fb_mono_ns();
        if (c->connected && due && due->next_due <= now) {
            struct fb_batch *b = fb_batch_pool_get(due->pool);
            if (!b) break;
            b->device = due_dev->idx;
            b->group = (uint16_t)(due - due_dev->groups);
            b->ts = fb_now_ns();
            int rc = c->drv->read(due_dev, due, b);
            due->next_due += due->period_ns;
            int64_t after = fb_mono_ns();
            if (due->next_due <= after) { /* fell behind: skip missed cycles, no burst */
                atomic_fetch_add(&due->overruns, 1);
                due->next_due = after + due->period_ns;
            }
            if (rc < 0) {
                fb_batch_unref(b);
                char reason[96];
                snprintf(reason, sizeof reason, "%s", fb_strerror(rc));
                fb_warn(due_dev->name, NULL, "connection lost (%s), reconnecting", reason);
                conn_lost(gw, c, reason);
                ever_failed = true;
                failed_q = FB_Q_BAD_COMM; /* what conn_lost gave the tags */
                c->next_try = fb_mono_ns() + BACKOFF_MIN_NS;
                fail_writes(c, "connection lost");
                continue;
            }
            pipeline(gw, b);
            continue;
        }
        /* sleep until the next deadline, a write, or stop */
        int64_t wake = INT64_MAX;
        if (c->connected && due) wake = due->next_due;
        if (!c->connected) wake = c->next_try;
        pthread_mutex_lock(&c->mu);
        if (!c->wq_head && !atomic_load(&gw->stop)) {
            if (wake == INT64_MAX) {
                pthread_cond_wait(&c->cv, &c->mu);
            } else {
                struct timespec ts;
                abs_deadline(&ts, wake);
                pthread_cond_timedwait(&c->cv, &c->mu, &ts);
            }
        }
        pthread_mutex_unlock(&c->mu);
    }
    fail_writes(c, "gateway is shutting down");
    if (c->connected) {
        c->drv->close(c);
        c->connected = false;
    }
    for (uint32_t i = 0; i < c->ndevs; i++) emit_state(gw, c->devs[i], FB_DEV_OFFLINE, "gateway stopped");
    return NULL;
}

int fb_conn_write(struct fb_gateway *gw, const struct fb_tag *t, const struct fb_value *raw,
                  int64_t timeout_ns, struct fb_err *err)
{
    struct fb_conn *c = gw->devs[t->device].conn;
    struct fb_write_req *r = calloc(1, sizeof *r);
    if (!r) return fb_err_set(err, FB_ENOMEM, "out of memory");
    r->tag = t->id;
    r->raw = *raw;
    if (raw->type == FB_T_STRING) {
        uint32_t n = raw->s.len < sizeof r->sbuf ? raw->s.len : (uint32_t)sizeof r->sbuf;
        memcpy(r->sbuf, raw->s.p, n);
        r->raw.s.p = r->sbuf;
        r->raw.s.len = n;
    }
    atomic_init(&r->refs, 2);
    pthread_mutex_init(&r->mu, NULL);
    cond_init_mono(&r->cv);
    pthread_mutex_lock(&c->mu);
    if (c->wq_tail)
        c->wq_tail->next = r;
    else
        c->wq_head = r;
    c->wq_tail = r;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);

    struct timespec ts;
    abs_deadline(&ts, fb_mono_ns() + timeout_ns);
    pthread_mutex_lock(&r->mu);
    while (!r->done)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT) break;
    int rc = r->done ? r->rc : FB_ETIMEDOUT;
    if (r->done && rc < 0 && err) *err = r->err;
    pthread_mutex_unlock(&r->mu);
    if (rc == FB_ETIMEDOUT && !r->done)
        fb_err_set(err, FB_ETIMEDOUT, "write timed out after %.1fs", timeout_ns / 1e9);
    if (atomic_fetch_sub(&r->refs, 1) == 1) {
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r);
    }
    return rc;
}

/* ------------------------------------------------------------- start/stop */
static uint32_t group_arena(const struct fb_gateway *gw, const struct fb_group *g)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->ntags; i++) {
        const struct fb_tag *t = &gw->tags[g->tags[i]];
        if (t->type == FB_T_STRING) n += t->str_len ? t->str_len : 256;
    }
    return n;
}

static uint32_t group_windows(const struct fb_gateway *gw, const struct fb_group *g)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->ntags; i++)
        if (gw->tags[g->tags[i]].proc.window_ns) n++;
    return n;
}

int fb_runtime_start(struct fb_gateway *gw, struct fb_err *err)
{
    struct fb_bus *bus = calloc(1, sizeof *bus);
    if (!bus) return fb_err_set(err, FB_ENOMEM, "out of memory");
    pthread_mutex_init(&bus->fan_mu, NULL);
    pthread_mutex_init(&bus->stop_mu, NULL);
    pthread_cond_init(&bus->stop_cv, NULL);
    gw->bus = bus;
    gw->started_ns = fb_now_ns();
    atomic_store(&gw->stop, false);

    const char *seq_dir = gw->buffer ? gw->buffer->path : NULL;
    for (uint32_t i = 0; !seq_dir && i < gw->nsinks; i++)
        if (gw->sinks[i].buffer) seq_dir = gw->sinks[i].buffer->path;
    if (seq_dir) {
        struct fb_err e = {0};
        if (mkdir(seq_dir, 0750) < 0 && errno != EEXIST)
            fb_warn(NULL, NULL, "cannot create buffer directory %s: %s", seq_dir, strerror(errno));
        if (fb_store_seq_open(&bus->seq, seq_dir, 65536, &e) < 0)
            fb_warn(NULL, NULL, "sequence counter in %s: %s (numbers may repeat after a crash)", seq_dir, e.msg);
        bus->seq_persisted = true;
    } else {
        atomic_store(&gw->seq, (uint64_t)(fb_now_ns() / 1000));
    }
    bus->proc = fb_proc_new(gw);
    if (!bus->proc) return fb_err_set(err, FB_ENOMEM, "cannot allocate pipeline state");

    uint32_t max_tags = 1, max_win = 0, max_arena = 0;
    for (uint32_t i = 0; i < gw->ndevs; i++) {
        struct fb_device *d = &gw->devs[i];
        d->gw = gw;
        atomic_store(&d->state, FB_DEV_CONNECTING);
        for (uint32_t k = 0; k < d->ngroups; k++) {
            struct fb_group *g = &d->groups[k];
            uint32_t arena = group_arena(gw, g), nwin = group_windows(gw, g);
            g->pool = fb_batch_pool_new(FB_RAW_BATCHES_PER_GROUP, g->ntags, 0, arena);
            if (!g->pool) return fb_err_set(err, FB_ENOMEM, "cannot allocate batches");
            if (g->ntags > max_tags) max_tags = g->ntags;
            if (nwin > max_win) max_win = nwin;
            if (arena > max_arena) max_arena = arena;
        }
    }
    bus->out_pool = fb_batch_pool_new(FB_OUT_BATCHES, max_tags, max_win, max_arena);
    if (!bus->out_pool) return fb_err_set(err, FB_ENOMEM, "cannot allocate batches");
    /* the router first: a sink may deliver a command as soon as it connects */
    if (fb_router_start(gw) < 0) return fb_err_set(err, FB_ENOMEM, "cannot start command router");
    bus->router = true;
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_sink_inst *s = &gw->sinks[i];
        s->gw = gw; /* its mutex and (monotonic) condition variable come from the config */
        s->q_head = calloc(1, sizeof(struct sink_rt));
        if (!s->q_head) return fb_err_set(err, FB_ENOMEM, "out of memory");
        if (sink_store_open(gw, s, err) < 0) return err ? err->code : FB_EIO;
        if (s->sink->open(s, err) < 0) return err ? err->code : FB_EIO;
        if (pthread_create(&s->thr, NULL, sink_thread, s) != 0)
            return fb_err_set(err, FB_ENOMEM, "cannot start sink thread");
        s->started = true;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024); /* small stacks: hundreds of devices */
    for (uint32_t i = 0; i < gw->nconns; i++) {
        struct fb_conn *c = &gw->conns[i];
        if (pthread_create(&c->thr, &attr, conn_thread, c) != 0) {
            pthread_attr_destroy(&attr);
            return fb_err_set(err, FB_ENOMEM, "cannot start connection thread");
        }
        c->started = true;
    }
    pthread_attr_destroy(&attr);
    if (gw->metrics_listen) {
        if (fb_http_start(gw, err) < 0) return err ? err->code : FB_EIO;
        bus->http = true;
    }
    fb_info(NULL, NULL, "started: %u devices, %u connections, %u tags, %u sinks", gw->ndevs,
            gw->nconns, gw->ntags, gw->nsinks);
    return 0;
}

void fb_runtime_request_stop(struct fb_gateway *gw)
{
    atomic_store(&gw->stop, true);
    if (!gw->bus) return;
    pthread_mutex_lock(&gw->bus->stop_mu);
    pthread_cond_broadcast(&gw->bus->stop_cv);
    pthread_mutex_unlock(&gw->bus->stop_mu);
}

void fb_runtime_wait(struct fb_gateway *gw)
{
    struct fb_bus *bus = gw->bus;
    pthread_mutex_lock(&bus->stop_mu);
    while (!atomic_load(&gw->stop)) pthread_cond_wait(&bus->stop_cv, &bus->stop_mu);
    pthread_mutex_unlock(&bus->stop_mu);
    fb_info(NULL, NULL, "stopping");
    /* 1. connections: wake them; pools closed so nothing blocks in pool_get */
    for (uint32_t i = 0; i < gw->nconns; i++) {
        struct fb_conn *c = &gw->conns[i];
        pthread_mutex_lock(&c->mu);
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    for (uint32_t i = 0; i < gw->ndevs; i++)
        for (uint32_t k = 0; k < gw->devs[i].ngroups; k++) fb_batch_pool_close(gw->devs[i].groups[k].pool);
    for (uint32_t i = 0; i < gw->nconns; i++)
        if (gw->conns[i].started) pthread_join(gw->conns[i].thr, NULL);
    /* commands can no longer reach a device; stop the router before the sinks it answers through */
    if (bus->router) fb_router_stop(gw);
    bus->router = false;
    /* 2. sinks drain their queues and close (offline status).  The stores
     * are freed only after every sink has closed and the HTTP endpoint has
     * stopped: the status JSON (any sink's tick, close, GET /status) reads
     * every sink's store. */
    atomic_store(&bus->sinks_stop, true);
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_sink_inst *s = &gw->sinks[i];
        if (!s->started) continue;
        pthread_mutex_lock(&s->mu);
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thr, NULL);
    }
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (gw->sinks[i].started) gw->sinks[i].sink->close(&gw->sinks[i]);
    if (bus->router) fb_router_stop(gw);
    if (bus->http) fb_http_stop();
    bus->http = false;
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (gw->sinks[i].started) sink_rt_free(&gw->sinks[i]);
    for (uint32_t i = 0; i < gw->ndevs; i++)
        for (uint32_t k = 0; k < gw->devs[i].ngroups; k++) {
            struct fb_group *g = &gw->devs[i].groups[k];
            fb_batch_pool_free(g->pool);
            g->pool = NULL;
        }
    fb_batch_pool_free(bus->out_pool);
    fb_proc_free(bus->proc);
    pthread_mutex_destroy(&bus->fan_mu);
    pthread_mutex_destroy(&bus->stop_mu);
    pthread_cond_destroy(&bus->stop_cv);
    free(bus);
    gw->bus = NULL;
    fb_info(NULL, NULL, "stopped");
}
