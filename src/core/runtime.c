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
 * Memory is bounded by construction: each connection owns one raw batch and
 * all groups share a few processed batches, sized at start-up.  A slow sink
 * makes pool_get block, which slows polling (back-pressure) instead of
 * growing queues.
 *
 * Shutdown order: services that act on the devices quiesce (control loops
 * write their safe values while the devices still take writes), stop
 * polling (connection threads finish their cycle and close their devices),
 * stop the router, let the sinks publish what is queued and their offline
 * status, stop the services.
 */
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/runtime.h"

#include "core/plugin.h"
#include "core/publish.h"

#include "core/batch_codec.h"
#include "core/buf.h"
#include "core/certs.h"
#include "core/live.h"
#include "core/log.h"
#include "core/router.h"
#include "core/runtime_state.h"
#include "core/thread.h"
#include "edge/edge.h"
#include "proc/proc.h"
#include "store/store.h"
#include "vib/vib.h"

/* A connection thread reads a group and runs it through the pipeline before
 * it reads the next, so one raw batch per connection is enough (sized for
 * its largest group: not one per group, that was ~56 bytes per tag). */
#define FB_RAW_BATCHES_PER_CONN 1
/* Processed batches are shared by all groups; sinks take them quickly, so a
 * few suffice however many devices there are. */
#define FB_OUT_BATCHES 8
/* Without a buffer: how much undelivered data a sink holds in memory. */
#define FB_MEMORY_QUEUE_BYTES (8u << 20)

static int64_t store_deliver(struct fb_sink_inst *s, struct fb_sink_rt *q);

/* Put one processed batch into the store.  With the block policy a full
 * store holds the sink thread here, the sink queue and then the group pools
 * fill, and the connection threads slow their polling: back-pressure.  While
 * it waits, this thread keeps delivering (it is the store's only consumer:
 * without that, a full store could never drain), and a stop request ends the
 * wait (the batch is then dropped and counted: the pipeline cannot finish
 * while this thread holds its batches). */
static void store_append(struct fb_sink_inst *s, struct fb_sink_rt *q, const struct fb_batch *b)
{
    fb_buf_clear(&q->enc);
    fb_batch_encode(&q->enc, b, q->fp);
    uint64_t id;
    for (;;) {
        int rc = fb_store_append(s->rt->store, q->enc.p, (uint32_t)q->enc.len, b->ts, &id);
        if (rc == 0) return;
        /* a detached sink (reload) cannot deliver, so it cannot wait for room either */
        if (rc == FB_EAGAIN && !atomic_load(&s->gw->rt->stop) && !atomic_load(&s->gw->rt->sinks_stop) && !q->detached) {
            if (fb_ratelimit_ok(&q->rl_full, fb_mono_ns()))
                fb_warn(NULL, NULL, "%s: buffer full, holding the producers back (policy block)", s->name);
            fb_store_flush(s->rt->store); /* what is buffered must be readable to be delivered */
            store_deliver(s, q);
            fb_live_beat(0); /* holding back is not a stall: it keeps delivering */
            struct timespec ts = {0, 10000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        atomic_fetch_add(&s->m.dropped, 1);
        if (fb_ratelimit_ok(&q->rl_drop, fb_mono_ns()))
            fb_warn(NULL, NULL, "%s: cannot buffer a batch of %u values (%s); dropped", s->name, b->n, fb_strerror(rc));
        return;
    }
}

/* Records of another config are translated by name (model-<fp> files).
 * Returns 0 with *map NULL for this config's records, 0 with a map for
 * another config's, FB_ENOENT when that config's names are unknown. */
static int store_map(struct fb_sink_inst *s, struct fb_sink_rt *q, const void *p, uint32_t len,
                     const struct fb_model_map **map)
{
    *map = NULL;
    if (len < 8) return FB_EPROTO;
    const uint8_t *b = p;
    if (b[1] >= FB_BATCH_NAMED) return 0; /* named records carry their names: no model needed */
    uint32_t fp = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
    if (fp == q->fp) return 0;
    for (uint32_t i = q->nfpmaps; i-- > 0;) /* a reload's translations, kept in memory */
        if (q->fpmaps[i].fp == fp) {
            *map = q->fpmaps[i].map;
            return 0;
        }
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
static int64_t store_deliver(struct fb_sink_inst *s, struct fb_sink_rt *q)
{
    if (atomic_exchange(&s->rt->rewind, false)) fb_store_rewind(s->rt->store);
    uint32_t rate = q->drain_rate;
    for (;;) {
        /* a failed delivery stops the stream: the next round starts again from it, in order */
        if (atomic_load(&s->rt->rewind)) return 1000000;
        if (s->sink->ready && !s->sink->ready(s, false)) return -1;
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
        int rc = fb_store_next(s->rt->store, &id, &p, &len, &ts);
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
                fb_warn(NULL, NULL, "%s: buffered record %llu %s; dropped", s->name, (unsigned long long)id,
                        rc == FB_ENOENT && map ? "belongs to a device that is no longer configured"
                        : rc == FB_ENOENT      ? "was made under a config whose names are lost"
                                               : "cannot be decoded");
            fb_store_ack(s->rt->store, id);
            continue;
        }
        if (s->sink->send(s, q->scratch, id) < 0) atomic_fetch_add(&s->m.errors, 1);
    }
}

/* Reload (reload.c): with `park` set, the thread empties its queue and
 * holds still here until it is cleared; the slot it serves may have moved
 * meanwhile.  mu held. */
static struct fb_sink_inst *sink_park_point(struct fb_sink_rt *q, struct fb_sink_inst *s)
{
    if (!q->park || q->head) return s;
    q->parked = true;
    pthread_cond_broadcast(&q->park_cv);
    while (q->park) pthread_cond_wait(&q->cv, &q->mu);
    q->parked = false;
    return q->inst;
}

/* Everything this sink took up to taken_seq is in its store (flushed per
 * the sync policy) or was handed over: tell a source waiting for that
 * (fb_source_wait_stored).  The lock is taken only while someone waits; the
 * waiter counts itself before it checks, so no wake-up is lost (both sides
 * use sequentially consistent atomics). */
static void stored_advance(struct fb_gateway *gw, struct fb_sink_rt *q)
{
    atomic_store(&q->stored_seq, q->taken_seq);
    struct fb_rt *rt = gw->rt;
    if (atomic_load(&rt->stored_waiters) > 0) {
        pthread_mutex_lock(&rt->stored_mu);
        pthread_cond_broadcast(&rt->stored_cv);
        pthread_mutex_unlock(&rt->stored_mu);
    }
}

static void *sink_thread(void *arg)
{
    struct fb_sink_rt *q = arg;
    struct fb_sink_inst *s = q->inst;
    struct fb_gateway *gw = s->gw;
    fb_thread_name("sink", s->name);
    uint32_t unflushed = 0;
    int64_t wait_ns = -1;
    int64_t stop_deadline = 0;
    char live_name[96];
    snprintf(live_name, sizeof live_name, "sink %s", s->name);
    fb_live_enter(&q->live, live_name, gw->stall_timeout_ns);
    for (;;) {
        fb_live_beat(0);
        pthread_mutex_lock(&q->mu);
        s = sink_park_point(q, s);
        bool stopping = atomic_load(&gw->rt->sinks_stop) || atomic_load(&q->stop);
        if (!q->head && !stopping && !q->park) {
            int64_t w = wait_ns >= 0 && wait_ns < 100000000LL ? wait_ns : 100000000LL;
            int64_t until = fb_mono_ns() + w;
            fb_live_idle(until);
            fb_cond_wait_until(&q->cv, &q->mu, until);
        }
        pthread_mutex_unlock(&q->mu);
        /* inside the sink from taking the head to the end of its delivery, so
         * that a connection thread's direct send (publish.c) cannot overtake it */
        pthread_mutex_lock(&q->call_mu);
        pthread_mutex_lock(&q->mu);
        struct fb_qnode *n = q->head;
        if (n) {
            q->head = n->next;
            if (!q->head) q->tail = NULL;
            q->len--;
        }
        bool queue_empty = !q->head;
        bool detached = q->detached;
        stopping = atomic_load(&gw->rt->sinks_stop) || atomic_load(&q->stop);
        pthread_mutex_unlock(&q->mu);
        if (n) {
            struct fb_batch *b = n->b;
            if (detached) {
                /* the sink is closed for a moment (reload): keep the data and alarm
                 * events, in order; device states are published again when it opens
                 * (a live view has no store: what it misses meanwhile is gone for it) */
                if (b->kind != FB_BATCH_DEVSTATE && s->rt->store) {
                    store_append(s, q, b);
                    unflushed++;
                }
            } else if (s->rt->store && b->kind != FB_BATCH_DEVSTATE &&
                       !(q->mem_only && (!s->sink->ready || s->sink->ready(s, false)) && fb_store_live(s->rt->store) == 0)) {
                /* data and alarm events are buffered; device states are not (every connect republishes them).
                 * ready() before the memory queue's count: it may take in acknowledgements */
                store_append(s, q, b);
                unflushed++;
            } else {
                /* a data batch past the memory queue: back into it if the send finds the connection gone */
                bool past = s->rt->store && b->kind != FB_BATCH_DEVSTATE;
                fb_direct_send = (struct fb_direct_send){past ? b->seq | FB_DIRECT_ID : 0, false};
                if (s->sink->send(s, b, s->rt->store ? b->seq | FB_DIRECT_ID : b->seq) < 0)
                    atomic_fetch_add(&s->m.errors, 1);
                if (fb_direct_send.retry) {
                    store_append(s, q, b);
                    unflushed++;
                }
                fb_direct_send.id = 0;
            }
            q->taken_seq = b->seq;
            fb_batch_unref(b);
            pthread_mutex_lock(&q->mu);
            n->next = q->free;
            q->free = n;
            pthread_mutex_unlock(&q->mu);
        }
        if (s->rt->store) {
            /* group commit: one sync for everything that arrived together */
            if (unflushed && (queue_empty || unflushed >= 256)) {
                fb_store_flush(s->rt->store);
                unflushed = 0;
            }
            if (!detached) wait_ns = store_deliver(s, q);
        }
        if (!unflushed && q->taken_seq != atomic_load(&q->stored_seq)) stored_advance(gw, q);
        if (!detached && s->sink->tick) s->sink->tick(s);
        pthread_mutex_unlock(&q->call_mu);
        if (stopping && queue_empty && !n) {
            /* the pipeline has finished: deliver what the sink still takes, for a bounded time */
            if (!s->rt->store || detached) break;
            if (!stop_deadline) stop_deadline = fb_mono_ns() + 2000000000LL;
            struct fb_store_stats st;
            fb_store_stats(s->rt->store, &st);
            pthread_mutex_lock(&q->call_mu);
            bool ready = !s->sink->ready || s->sink->ready(s, false);
            pthread_mutex_unlock(&q->call_mu);
            if (st.records == 0 || fb_mono_ns() >= stop_deadline || !ready) break;
            if (wait_ns < 0) wait_ns = 10000000LL;
            struct timespec ts = {0, (long)(wait_ns < 100000000LL ? wait_ns : 100000000LL)};
            nanosleep(&ts, NULL);
        }
    }
    fb_live_leave();
    return NULL;
}

/* The largest record a batch of this config can encode to (batch_codec.c:
 * 37 bytes of header plus the reason (< FB_REASON_LEN), per sample at most 41
 * bytes plus its string, 44 per stats entry; an alarm event 45 bytes more
 * than the header), so the store never refuses one. */
static uint32_t max_record_bytes(const struct fb_gateway *gw)
{
    uint64_t best = 0;
    for (uint32_t i = 0; i < gw->ndevs; i++)
        for (uint32_t k = 0; k < gw->devs[i].ngroups; k++) {
            const struct fb_group *g = &gw->devs[i].groups[k];
            uint64_t n = 64 + FB_REASON_LEN + (uint64_t)g->ntags * (41 + 44);
            for (uint32_t t = 0; t < g->ntags; t++) {
                const struct fb_tag *tag = &gw->tags[fb_group_tag(g, t)];
                if (tag->type == FB_T_STRING) n += tag->str_len ? tag->str_len : 256;
            }
            if (n > best) best = n;
        }
    /* computed tags (src/edge) travel in batches of their own, per device */
    for (uint32_t i = 0; i < gw->ndevs; i++) {
        uint64_t n = 64 + FB_REASON_LEN;
        for (uint32_t t = 0; t < gw->devs[i].ntags; t++) {
            const struct fb_tag *tag = &gw->tags[gw->devs[i].first_tag + t];
            if (tag->src == FB_TAG_READ) continue;
            n += 41 + 44 + (tag->type == FB_T_STRING ? (tag->str_len ? tag->str_len : 256) : 0);
        }
        if (n > best) best = n;
    }
    return best > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)best;
}

/* Open the sink's store (if it has a buffer) and the persisted sequence. */
static int sink_store_open(struct fb_gateway *gw, struct fb_sink_inst *s, struct fb_err *err)
{
    struct fb_sink_rt *q = s->rt;
    q->rl_drop.interval_ns = 10000000000LL;
    q->rl_full.interval_ns = 10000000000LL;
    fb_buf_init(&q->enc);
    q->tokens_ns = fb_mono_ns();
    if (!s->buffer) {
        /* No buffer configured: the same queue in memory (bounded, lost on a
         * crash), so a broker that is late at start-up or away for a moment
         * costs nothing — the deadband would otherwise hold back a value whose
         * only publication went nowhere.  `queue:` bounds it in batches (the
         * oldest are dropped, counted), 8 MiB in bytes; what is in flight
         * is part of it, so the in-flight ring needs no more slots. */
        struct fb_store_cfg mc = {.dir = NULL,
                                  .max_bytes = FB_MEMORY_QUEUE_BYTES,
                                  .max_records = s->queue_len,
                                  .max_inflight = s->queue_len,
                                  .segment_bytes = 256 * 1024,
                                  .max_record = max_record_bytes(gw),
                                  .name = s->name};
        struct fb_err e = {0};
        s->rt->store = fb_store_open(&mc, &e);
        if (!s->rt->store) return fb_err_set(err, e.code ? e.code : FB_ENOMEM, "%s: memory queue: %s", s->name, e.msg);
        q->mem_only = true;
        q->fp = fb_model_fingerprint(gw); /* a reload translates the records of the config before */
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
    s->rt->store = fb_store_open(&c, &e);
    if (!s->rt->store) return fb_err_set(err, e.code ? e.code : FB_ENOMEM, "%s: buffer: %s", s->name, e.msg);
    if (e.code)
        fb_error(NULL, NULL, "%s: buffer %s unusable (%s): running on memory only, not crash-safe", s->name, q->dir,
                 e.msg);
    q->fp = fb_model_fingerprint(gw);
    if (fb_model_save(gw, q->dir, q->fp) < 0)
        fb_warn(NULL, NULL, "%s: cannot save the tag names of this config in %s", s->name, q->dir);
    struct fb_store_stats st;
    fb_store_stats(s->rt->store, &st);
    if (st.records)
        fb_info(NULL, NULL, "%s: %llu buffered records (%.1f MiB) to deliver first", s->name,
                (unsigned long long)st.records, st.bytes / 1048576.0);
    return 0;
}

/* A sink's runtime state, allocated alone so that a reload can keep it
 * while the model around it changes. */
static struct fb_sink_rt *sink_rt_new(struct fb_sink_inst *s)
{
    struct fb_sink_rt *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    pthread_mutex_init(&q->call_mu, NULL);
    pthread_mutex_init(&q->mu, NULL);
    fb_cond_init_mono(&q->cv);
    pthread_cond_init(&q->park_cv, NULL);
    q->inst = s;
    s->rt = q;
    return q;
}

static void sink_store_close(struct fb_sink_rt *q)
{
    if (q->store) {
        fb_store_flush(q->store);
        fb_store_close(q->store);
        q->store = NULL;
    }
    fb_buf_free(&q->enc);
    fb_model_map_free(q->map);
    q->map = NULL;
    q->map_fp = 0;
}

static void sink_rt_free(struct fb_sink_inst *s)
{
    struct fb_sink_rt *q = s->rt;
    if (!q) return;
    sink_store_close(q);
    while (q->free) {
        struct fb_qnode *n = q->free;
        q->free = n->next;
        free(n);
    }
    while (q->head) { /* batches the sink thread never took (it did not start) */
        struct fb_qnode *n = q->head;
        q->head = n->next;
        fb_batch_unref(n->b);
        free(n);
    }
    fb_batch_free(q->scratch);
    for (uint32_t i = 0; i < q->nfpmaps; i++) fb_model_map_free(q->fpmaps[i].map);
    free(q->fpmaps);
    pthread_mutex_destroy(&q->call_mu);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    pthread_cond_destroy(&q->park_cv);
    free(q);
    s->rt = NULL;
}

/* --------------------------------------------------------------- pipeline */

/* The pipeline, run by the connection thread that read the batch: the tags
 * of a device belong to one connection, so their processing state is only
 * ever touched by that thread and no hand-off to another thread is needed
 * (each hand-off costs a wake-up, which dominated the CPU per value).
 * Takes ownership of `in`. */
static void pipeline(struct fb_gateway *gw, struct fb_batch *in)
{
    struct fb_rt *rt = gw->rt;
    const struct fb_device *d = in->device < gw->ndevs ? &gw->devs[in->device] : NULL;
    if (d && in->group < d->ngroups && d->groups[in->group].rt->plain) {
        /* nothing to filter or transform: published as read, no copy */
        fb_proc_inplace(rt->proc, in);
        if (in->n) fb_publish(gw, in);
        fb_batch_unref(in);
        return;
    }
    struct fb_batch *out = fb_batch_pool_tryget(rt->out_pool);
    if (!out) { /* back-pressure: waiting for the sink threads, which are watched themselves */
        fb_live_idle(FB_LIVE_WAITING);
        out = fb_batch_pool_get(rt->out_pool);
        fb_live_beat(0);
    }
    if (!out) {
        fb_batch_unref(in);
        return;
    }
    out->kind = FB_BATCH_DATA;
    out->device = in->device;
    out->group = in->group;
    out->ts = in->ts;
    if (rt->vib) fb_vib_take(gw, in); /* waveform blocks to the analysis (the pipeline skips them) */
    fb_proc_batch(rt->proc, in, out);
    fb_batch_unref(in);
    if (out->n) fb_publish(gw, out);
    fb_batch_unref(out);
}

/* ------------------------------------------------------------ connections */

/* A raw batch of the connection's pool; waiting for one (the sinks still hold
 * them all) is back-pressure, not a stall, for the watchdog: the sink threads
 * are watched themselves. */
static struct fb_batch *raw_get(struct fb_batch_pool *p)
{
    struct fb_batch *b = fb_batch_pool_tryget(p);
    if (!b) {
        fb_live_idle(FB_LIVE_WAITING);
        b = fb_batch_pool_get(p);
        fb_live_beat(0);
    }
    return b;
}

/* All tags of a group with one bad quality, e.g. when the connection is down. */
static void emit_bad_group(struct fb_gateway *gw, struct fb_device *d, struct fb_group *g, uint32_t q)
{
    struct fb_batch *b = raw_get(g->rt->pool);
    if (!b) return;
    b->device = d->idx;
    b->group = (uint16_t)(g - d->groups);
    b->ts = fb_now_ns();
    for (uint32_t i = 0; i < g->ntags; i++) fb_batch_add(b, fb_group_tag(g, i), q, b->ts, NULL);
    pipeline(gw, b);
}

static void fail_writes(struct fb_conn *c, const char *why);
static void conn_lost(struct fb_gateway *gw, struct fb_conn *c, const char *reason);
#define BACKOFF_MIN_NS 500000000LL
#define BACKOFF_MAX_NS 30000000000LL

static void finish_write(struct fb_write_req *r, int rc, const struct fb_err *err)
{
    if (r->on_done) { /* asynchronous: its maker owns it */
        r->on_done(r->done_ctx, rc, err);
        atomic_store_explicit(&r->busy, false, memory_order_release);
        return;
    }
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
        pthread_mutex_lock(&c->rt->mu);
        struct fb_write_req *r = c->rt->wq_head;
        if (r) {
            c->rt->wq_head = r->next;
            if (!c->rt->wq_head) c->rt->wq_tail = NULL;
        }
        pthread_mutex_unlock(&c->rt->mu);
        if (!r) return;
        struct fb_tag *t = &gw->tags[r->tag];
        struct fb_device *d = &gw->devs[t->device];
        struct fb_err err = {0};
        int rc;
        if (!c->rt->connected) {
            rc = fb_err_set(&err, FB_EIO, "device %s is not connected", d->name);
        } else {
            rc = c->drv->write(d, t, &r->raw, &err);
            atomic_fetch_add(&d->m.writes, 1);
            if (rc < 0) atomic_fetch_add(&d->m.write_errors, 1);
            /* read the new value back soon, so the change shows up at once */
            if (rc == 0 && !r->quiet) d->groups[t->group].rt->next_due = fb_mono_ns();
        }
        if (rc < 0 && !err.msg[0]) fb_err_set(&err, rc, "%s", fb_strerror(rc));
        if (rc == FB_EIO || rc == FB_EPROTO) { /* the link itself broke: same as a failed read */
            finish_write(r, rc, &err);
            fb_warn(d->name, t->name, "connection lost during write (%s), reconnecting", err.msg);
            conn_lost(gw, c, err.msg);
            c->rt->next_try = fb_mono_ns() + BACKOFF_MIN_NS;
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
        pthread_mutex_lock(&c->rt->mu);
        struct fb_write_req *r = c->rt->wq_head;
        if (r) {
            c->rt->wq_head = r->next;
            if (!c->rt->wq_head) c->rt->wq_tail = NULL;
        }
        pthread_mutex_unlock(&c->rt->mu);
        if (!r) return;
        struct fb_err err;
        fb_err_set(&err, FB_ECLOSED, "%s", why);
        finish_write(r, FB_ECLOSED, &err);
    }
}

static void conn_lost(struct fb_gateway *gw, struct fb_conn *c, const char *reason)
{
    c->drv->close(c);
    c->rt->connected = false;
    for (uint32_t i = 0; i < c->ndevs; i++) {
        struct fb_device *d = c->devs[i];
        atomic_fetch_add(&d->m.reconnects, 1);
        fb_publish_state(gw, d, FB_DEV_OFFLINE, reason);
        for (uint32_t k = 0; k < d->ngroups; k++) emit_bad_group(gw, d, &d->groups[k], FB_Q_BAD_COMM);
    }
}

/* Reload (reload.c): with `park` set, the thread fails its pending writes
 * (their tag ids belong to the config being replaced), says so and holds
 * still until park is cleared; a reload that keeps the connection has then
 * moved it to the new model's element.  True after a park. */
static bool conn_park_point(struct fb_conn_rt *crt, struct fb_conn *c)
{
    if (!atomic_load_explicit(&crt->park, memory_order_acquire)) return false;
    fail_writes(c, "the configuration is being reloaded");
    pthread_mutex_lock(&crt->mu);
    crt->parked = true;
    pthread_cond_broadcast(&crt->park_cv);
    while (atomic_load(&crt->park)) pthread_cond_wait(&crt->cv, &crt->mu);
    crt->parked = false;
    pthread_mutex_unlock(&crt->mu);
    return true;
}

static void *conn_thread(void *arg)
{
    struct fb_conn_rt *crt = arg;
    struct fb_conn *c = crt->conn;
    struct fb_gateway *gw = c->devs[0]->gw;
    fb_thread_name("conn", c->devs[0]->name);
    struct fb_backoff bo;
    fb_backoff_init(&bo, BACKOFF_MIN_NS, BACKOFF_MAX_NS);
    struct fb_ratelimit rl = {.interval_ns = 60000000000LL};
    bool ever_failed = false;
    uint32_t failed_q = 0; /* the quality the tags were last given for a failed connect */
    c->rt->next_try = 0;
    char live_name[96];
    snprintf(live_name, sizeof live_name, "connection %s", c->key);
    fb_live_enter(&c->rt->live, live_name, gw->stall_timeout_ns);
    int64_t now = fb_mono_ns();
    for (uint32_t i = 0; i < c->ndevs; i++)
        for (uint32_t k = 0; k < c->devs[i]->ngroups; k++) c->devs[i]->groups[k].rt->next_due = now;

    while (!atomic_load(&gw->rt->conns_stop) && !atomic_load(&crt->stop)) {
        if (conn_park_point(crt, c)) {
            c = crt->conn;
            fail_writes(c, "the configuration was reloaded");
            continue;
        }
        now = fb_mono_ns();
        fb_live_beat(now);
        if (!c->rt->connected && now >= c->rt->next_try) {
            struct fb_err err = {0};
            c->rt->fail_q = 0;
            c->rt->fail_retry_ns = 0;
            if (c->drv->open(c, &err) == 0) {
                c->rt->connected = true;
                fb_backoff_reset(&bo);
                if (ever_failed)
                    fb_info(c->devs[0]->name, NULL, "connected (%s)", c->key);
                else
                    fb_debug(c->devs[0]->name, NULL, "connected (%s)", c->key);
                ever_failed = false;
                failed_q = 0;
                rl.last_ns = 0;
                for (uint32_t i = 0; i < c->ndevs; i++) fb_publish_state(gw, c->devs[i], FB_DEV_ONLINE, NULL);
            } else {
                /* the tags get the failure's quality (a driver may name it, e.g. a refused login) */
                uint32_t fq = c->rt->fail_q ? c->rt->fail_q : FB_Q_BAD_COMM;
                if (!ever_failed || fq != failed_q) {
                    for (uint32_t i = 0; i < c->ndevs; i++) {
                        fb_publish_state(gw, c->devs[i], FB_DEV_OFFLINE, err.msg);
                        if (atomic_load(&c->devs[i]->state) == FB_DEV_OFFLINE)
                            for (uint32_t k = 0; k < c->devs[i]->ngroups; k++)
                                emit_bad_group(gw, c->devs[i], &c->devs[i]->groups[k], fq);
                    }
                    failed_q = fq;
                }
                int64_t delay = fb_backoff_next(&bo);                           /* exponential, with jitter */
                if (c->rt->fail_retry_ns > delay) delay = c->rt->fail_retry_ns; /* e.g. not to lock an account */
                if (fb_ratelimit_ok(&rl, now) || !ever_failed)
                    fb_warn(c->devs[0]->name, NULL, "connect failed: %s (retry in %.1fs)", err.msg, delay / 1e9);
                ever_failed = true;
                c->rt->next_try = now + delay;
                fail_writes(c, "device is not connected");
            }
        }
        if (c->rt->connected)
            do_writes(gw, c);
        else /* answered now: queued until the next attempt they would keep this thread from sleeping */
            fail_writes(c, "device is not connected");

        /* earliest due group */
        struct fb_device *due_dev = NULL;
        struct fb_group *due = NULL;
        for (uint32_t i = 0; i < c->ndevs; i++)
            for (uint32_t k = 0; k < c->devs[i]->ngroups; k++) {
                struct fb_group *g = &c->devs[i]->groups[k];
                if (!due || g->rt->next_due < due->rt->next_due) {
                    due = g;
                    due_dev = c->devs[i];
                }
            }
        now = fb_mono_ns();
        if (c->rt->connected && due && due->rt->next_due <= now) {
            struct fb_batch *b = raw_get(due->rt->pool);
            if (!b) break;
            b->device = due_dev->idx;
            b->group = (uint16_t)(due - due_dev->groups);
            b->ts = fb_now_ns();
            int rc = c->drv->read(due_dev, due, b);
            due->rt->next_due += due->period_ns;
            int64_t after = fb_mono_ns();
            if (due->rt->next_due <= after) { /* fell behind: skip missed cycles, no burst */
                atomic_fetch_add(&due->rt->overruns, 1);
                due->rt->next_due = after + due->period_ns;
            }
            if (rc < 0) {
                fb_batch_unref(b);
                char reason[96];
                snprintf(reason, sizeof reason, "%s", fb_strerror(rc));
                fb_warn(due_dev->name, NULL, "connection lost (%s), reconnecting", reason);
                conn_lost(gw, c, reason);
                ever_failed = true;
                failed_q = FB_Q_BAD_COMM; /* what conn_lost gave the tags */
                c->rt->next_try = fb_mono_ns() + BACKOFF_MIN_NS;
                fail_writes(c, "connection lost");
                continue;
            }
            pipeline(gw, b);
            continue;
        }
        /* sleep until the next deadline, a write, or stop */
        int64_t wake = INT64_MAX;
        if (c->rt->connected && due) wake = due->rt->next_due;
        if (!c->rt->connected) wake = c->rt->next_try;
        pthread_mutex_lock(&c->rt->mu);
        if (!c->rt->wq_head && !atomic_load(&gw->rt->conns_stop) && !atomic_load(&crt->stop) &&
            !atomic_load(&crt->park)) {
            fb_live_idle(wake == INT64_MAX ? FB_LIVE_WAITING : wake);
            if (wake == INT64_MAX) {
                pthread_cond_wait(&c->rt->cv, &c->rt->mu);
            } else {
                fb_cond_wait_until(&c->rt->cv, &c->rt->mu, wake);
            }
        }
        pthread_mutex_unlock(&c->rt->mu);
    }
    bool alone = atomic_load(&crt->stop) && !atomic_load(&gw->rt->stop);
    fail_writes(c, alone ? crt->stop_reason : "gateway is shutting down");
    if (c->rt->connected) {
        c->drv->close(c);
        c->rt->connected = false;
    }
    for (uint32_t i = 0; i < c->ndevs; i++)
        fb_publish_state(gw, c->devs[i], FB_DEV_OFFLINE, alone ? crt->stop_reason : "gateway stopped");
    fb_live_leave();
    return NULL;
}

/* ------------------------------------------------------------- start/stop */
static uint32_t group_arena(const struct fb_gateway *gw, const struct fb_group *g)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->ntags; i++) {
        const struct fb_tag *t = &gw->tags[fb_group_tag(g, i)];
        if (t->type == FB_T_STRING) n += t->str_len ? t->str_len : 256;
    }
    return n;
}

static uint32_t group_windows(const struct fb_gateway *gw, const struct fb_group *g)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->ntags; i++)
        if (fb_tproc(&gw->tags[fb_group_tag(g, i)])->window_ns) n++;
    return n;
}

/* The size processed batches need for every group of model gw that is not
 * processed in place (proc: the pipeline state made for gw). */
static void out_dims(const struct fb_gateway *gw, const struct fb_proc *proc, uint32_t *tags, uint32_t *win,
                     uint32_t *arena)
{
    *tags = 1, *win = 0, *arena = 0;
    for (uint32_t i = 0; i < gw->ndevs; i++)
        for (uint32_t k = 0; k < gw->devs[i].ngroups; k++) {
            const struct fb_group *g = &gw->devs[i].groups[k];
            if (fb_proc_plain(proc, g)) continue; /* processed in place: no processed batch needed */
            uint32_t a = group_arena(gw, g), w = group_windows(gw, g);
            if (g->ntags > *tags) *tags = g->ntags;
            if (w > *win) *win = w;
            if (a > *arena) *arena = a;
        }
}

/* Runtime state of device d's poll groups (model gw).  Their raw batches are
 * their connection's (conn_pool_new), so a group's pool is set there. */
int fb_rt_groups_new(const struct fb_gateway *gw, struct fb_device *d, struct fb_err *err)
{
    (void)gw;
    for (uint32_t k = 0; k < d->ngroups; k++) {
        struct fb_group *g = &d->groups[k];
        if (!g->rt) g->rt = calloc(1, sizeof *g->rt);
        if (!g->rt) return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    return 0;
}

void fb_rt_groups_free(struct fb_device *d)
{
    for (uint32_t k = 0; k < d->ngroups; k++) {
        struct fb_group *g = &d->groups[k];
        free(g->rt); /* its pool is its connection's */
        g->rt = NULL;
    }
}

/* Whether group g of the running gateway goes through the pipeline in place
 * (from the pipeline state: a reload that changes a kept device's processing
 * sets it again, fb_rt_conn_unpark). */
static void groups_plain(const struct fb_gateway *gw, struct fb_conn *c)
{
    for (uint32_t j = 0; j < c->ndevs; j++)
        for (uint32_t k = 0; k < c->devs[j]->ngroups; k++) {
            struct fb_group *g = &c->devs[j]->groups[k];
            g->rt->plain = fb_proc_plain(gw->rt->proc, g);
        }
}

/* One raw batch pool per connection, sized for its largest group, shared by
 * its groups (a connection reads one group at a time).  A reload that keeps
 * the connection keeps the pool: its devices are polled identically
 * (fb_reload_dev_same: same groups, tags, types and string lengths). */
static int conn_pool_new(const struct fb_gateway *gw, struct fb_conn *c, struct fb_err *err)
{
    if (!c->rt->pool) {
        uint32_t n = 1, arena = 0;
        for (uint32_t j = 0; j < c->ndevs; j++)
            for (uint32_t k = 0; k < c->devs[j]->ngroups; k++) {
                const struct fb_group *g = &c->devs[j]->groups[k];
                uint32_t a = group_arena(gw, g);
                if (g->ntags > n) n = g->ntags;
                if (a > arena) arena = a;
            }
        c->rt->pool = fb_batch_pool_new(FB_RAW_BATCHES_PER_CONN, n, 0, arena);
        if (!c->rt->pool) return fb_err_set(err, FB_ENOMEM, "cannot allocate batches");
    }
    for (uint32_t j = 0; j < c->ndevs; j++)
        for (uint32_t k = 0; k < c->devs[j]->ngroups; k++) c->devs[j]->groups[k].rt->pool = c->rt->pool;
    return 0;
}

/* A stopped connection's pool: a batch of a group processed in place may
 * still wait in a sink's queue, so a pool with batches out is kept until
 * they are back (freed at a later stop, or with the runtime). */
static void conn_pool_release(struct fb_rt *rt, struct fb_batch_pool *p)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < rt->nretired_raw; i++) {
        if (fb_batch_pool_idle(rt->retired_raw[i]))
            fb_batch_pool_free(rt->retired_raw[i]);
        else
            rt->retired_raw[k++] = rt->retired_raw[i];
    }
    rt->nretired_raw = k;
    if (!p) return;
    if (fb_batch_pool_idle(p)) {
        fb_batch_pool_free(p);
        return;
    }
    struct fb_batch_pool **r = realloc(rt->retired_raw, (rt->nretired_raw + 1) * sizeof *r);
    if (!r) return; /* leaked rather than freed under a batch still out */
    rt->retired_raw = r;
    rt->retired_raw[rt->nretired_raw++] = p;
}

static struct fb_conn_rt *conn_rt_new(struct fb_conn *c)
{
    struct fb_conn_rt *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_mutex_init(&r->mu, NULL);
    fb_cond_init_mono(&r->cv);
    pthread_cond_init(&r->park_cv, NULL);
    r->conn = c;
    c->rt = r;
    return r;
}

static void conn_rt_free(struct fb_rt *rt, struct fb_conn *c)
{
    struct fb_conn_rt *r = c->rt;
    if (!r) return;
    conn_pool_release(rt, r->pool);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->park_cv);
    free(r);
    c->rt = NULL;
}

static int conn_thread_start(struct fb_conn *c, struct fb_err *err)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024); /* small stacks: hundreds of devices */
    int rc = pthread_create(&c->rt->thr, &attr, conn_thread, c->rt);
    pthread_attr_destroy(&attr);
    if (rc != 0) return fb_err_set(err, FB_ENOMEM, "cannot start connection thread");
    c->rt->started = true;
    return 0;
}

int fb_rt_conn_start(struct fb_gateway *gw, struct fb_conn *c, struct fb_err *err)
{
    if (!c->rt && !conn_rt_new(c)) return fb_err_set(err, FB_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < c->ndevs; i++) {
        struct fb_device *d = c->devs[i];
        d->gw = gw;
        atomic_store(&d->state, FB_DEV_CONNECTING);
        if (!(d->ngroups && d->groups[0].rt) && fb_rt_groups_new(gw, d, err) < 0) return err ? err->code : FB_ENOMEM;
    }
    if (conn_pool_new(gw, c, err) < 0) return err ? err->code : FB_ENOMEM;
    groups_plain(gw, c);
    return conn_thread_start(c, err);
}

void fb_rt_conn_stop(struct fb_gateway *gw, struct fb_conn *c, const char *reason)
{
    struct fb_conn_rt *r = c->rt;
    if (!r) return;
    if (r->started) {
        if (reason || !r->stop_reason[0])
            snprintf(r->stop_reason, sizeof r->stop_reason, "%s", reason ? reason : "stopped");
        pthread_mutex_lock(&r->mu);
        atomic_store(&r->stop, true);
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        /* a thread waiting for its raw batch (still in a sink's queue) ends too */
        if (r->pool) fb_batch_pool_close(r->pool);
        pthread_join(r->thr, NULL);
        r->started = false;
    }
    for (uint32_t i = 0; i < c->ndevs; i++) fb_rt_groups_free(c->devs[i]);
    conn_rt_free(gw->rt, c);
}

bool fb_rt_conn_park(struct fb_conn *c, int64_t deadline)
{
    struct fb_conn_rt *r = c->rt;
    struct fb_rt *rt = c->devs[0]->gw->rt;
    pthread_mutex_lock(&r->mu);
    atomic_store_explicit(&r->park, true, memory_order_release);
    pthread_cond_broadcast(&r->cv);
    while (!r->parked && r->started && !atomic_load(&rt->stop)) { /* a stopping gateway: give up */
        int64_t now = fb_mono_ns();
        if (now >= deadline) break;
        fb_cond_wait_until(&r->park_cv, &r->mu, now + 100000000LL < deadline ? now + 100000000LL : deadline);
    }
    bool ok = r->parked || !r->started;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

void fb_rt_conn_unpark(struct fb_conn *c)
{
    struct fb_conn_rt *r = c->rt;
    pthread_mutex_lock(&r->mu);
    /* a kept connection's groups: the new processing settings may take them
     * out of (or into) the in-place path; the thread is parked, so it reads
     * this when it goes on */
    if (r->parked) groups_plain(c->devs[0]->gw, c);
    atomic_store(&r->park, false);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ------------------------------------------------------------------ sinks */
/* Sink s of model `model`: runtime state with its store (the model sizes
 * the records and names the records' config). */
int fb_rt_sink_prepare(const struct fb_gateway *model, struct fb_sink_inst *s, struct fb_err *err)
{
    if (!s->rt && !sink_rt_new(s)) return fb_err_set(err, FB_ENOMEM, "out of memory");
    return s->sink->live ? 0 : sink_store_open((struct fb_gateway *)model, s, err); /* a live view has no store */
}

/* Open the sink and start its thread (the model is the running one). */
int fb_rt_sink_run(struct fb_sink_inst *s, struct fb_err *err)
{
    if (s->sink->open(s, err) < 0) return err ? err->code : FB_EIO;
    if (pthread_create(&s->rt->thr, NULL, sink_thread, s->rt) != 0)
        return fb_err_set(err, FB_ENOMEM, "cannot start sink thread");
    s->rt->started = true;
    return 0;
}

bool fb_rt_sink_park(struct fb_sink_inst *s, int64_t deadline)
{
    struct fb_sink_rt *q = s->rt;
    pthread_mutex_lock(&q->mu);
    q->park = true;
    pthread_cond_broadcast(&q->cv);
    while (!q->parked && q->started && !atomic_load(&s->gw->rt->stop)) {
        int64_t now = fb_mono_ns();
        if (now >= deadline) break;
        fb_cond_wait_until(&q->park_cv, &q->mu, now + 100000000LL < deadline ? now + 100000000LL : deadline);
    }
    bool ok = q->parked || !q->started;
    pthread_mutex_unlock(&q->mu);
    /* a connection thread that saw the sink unparked before park was set may
     * still be inside send() (publish.c, sink_direct): wait for it; every later
     * one sees park (or detached) and queues.  The parked sink thread holds no
     * call_mu, and a direct send does not wait (the sink was ready).  Not
     * parked by the deadline: the reload is undone, nothing is closed. */
    if (ok) {
        pthread_mutex_lock(&q->call_mu);
        pthread_mutex_unlock(&q->call_mu);
    }
    return ok;
}

void fb_rt_sink_unpark(struct fb_sink_inst *s)
{
    struct fb_sink_rt *q = s->rt;
    pthread_mutex_lock(&q->mu);
    q->park = false;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

void fb_rt_sink_set_detached(struct fb_sink_inst *s, bool detached)
{
    struct fb_sink_rt *q = s->rt;
    pthread_mutex_lock(&q->mu);
    atomic_store(&q->detached, detached);
    pthread_mutex_unlock(&q->mu);
}

/* Stop a (detached) sink's thread alone and free its runtime state and store. */
void fb_rt_sink_stop(struct fb_sink_inst *s)
{
    struct fb_sink_rt *q = s->rt;
    if (!q) return;
    if (q->started) {
        pthread_mutex_lock(&q->mu);
        atomic_store(&q->stop, true);
        q->park = false;
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thr, NULL);
        q->started = false;
    }
    sink_rt_free(s);
}

/* Close and open the store again for model `model` (new buffer settings, or
 * records that no longer fit): what the old store holds moves over. */
int fb_rt_sink_store_reopen(const struct fb_gateway *model, struct fb_sink_inst *s, struct fb_err *err)
{
    struct fb_sink_rt *q = s->rt;
    struct fb_store *old = q->store;
    char old_dir[sizeof q->dir];
    memcpy(old_dir, q->dir, sizeof old_dir);
    q->store = NULL;
    fb_store_flush(old);
    char want[sizeof q->dir] = "";
    if (s->buffer) snprintf(want, sizeof want, "%s/%s", s->buffer->path, s->name);
    bool same_dir = s->buffer && old_dir[0] && !strcmp(old_dir, want);
    if (same_dir) fb_store_close(old); /* the new store reads the same directory */
    fb_buf_free(&q->enc);
    fb_model_map_free(q->map);
    q->map = NULL;
    q->mem_only = false;
    q->dir[0] = 0;
    int rc = sink_store_open((struct fb_gateway *)model, s, err);
    if (same_dir) return rc;
    if (rc < 0) {
        q->store = old; /* keep what we had */
        return rc;
    }
    /* another directory, or memory: move the records across, oldest first */
    uint64_t moved = 0, id;
    const void *p;
    uint32_t len;
    int64_t ts;
    fb_store_rewind(old);
    while (fb_store_next(old, &id, &p, &len, &ts) == 0) {
        if (fb_store_append(q->store, p, len, ts, NULL) == 0) moved++;
        fb_store_ack(old, id);
    }
    fb_store_flush(q->store);
    /* the names of the configs those records were made under */
    if (old_dir[0] && q->dir[0]) fb_model_copy_all(old_dir, q->dir);
    fb_store_close(old);
    if (moved)
        fb_info(NULL, NULL, "%s: %llu buffered records moved to the new buffer", s->name, (unsigned long long)moved);
    return 0;
}

/* ------------------------------------------------------------------ start */
static void rt_free(struct fb_gateway *gw, struct fb_rt *rt)
{
    /* the sinks first: a queue they never emptied may hold a connection's raw batch */
    for (uint32_t i = 0; i < gw->nsinks; i++) sink_rt_free(&gw->sinks[i]);
    for (uint32_t i = 0; i < gw->ndevs; i++) fb_rt_groups_free(&gw->devs[i]);
    for (uint32_t i = 0; i < gw->nconns; i++) conn_rt_free(rt, &gw->conns[i]);
    for (uint32_t i = 0; i < rt->nretired_raw; i++) fb_batch_pool_free(rt->retired_raw[i]);
    free(rt->retired_raw);
    free(rt->svc_state);
    free(rt->config_json);
    free(rt->caps_json);
    free(rt->seen);
    free(rt->drain);
    pthread_mutex_destroy(&rt->status_mu);
    pthread_rwlock_destroy(&rt->model_lock);
    pthread_mutex_destroy(&rt->gw_cmd_mu);
    fb_vib_free(gw);  /* after the raw batches (above): every block is back in its pool */
    fb_edge_free(gw); /* the edge thread's state and the alarm table */
    fb_router_free(rt->router);
    fb_batch_pool_free(rt->out_pool);
    for (uint32_t i = 0; i < rt->nretired; i++) fb_batch_pool_free(rt->retired[i]);
    free(rt->retired);
    fb_proc_free(rt->proc);
    pthread_mutex_destroy(&rt->fan_mu);
    pthread_mutex_destroy(&rt->stop_mu);
    pthread_cond_destroy(&rt->stop_cv);
    pthread_mutex_destroy(&rt->stored_mu);
    pthread_cond_destroy(&rt->stored_cv);
    free(rt);
    gw->rt = NULL;
}

/* Whether s's store takes the largest record of model `model`. */
bool fb_rt_sink_store_fits(const struct fb_gateway *model, const struct fb_sink_inst *s)
{
    return !s->rt || !s->rt->store || max_record_bytes(model) <= fb_store_max_record(s->rt->store);
}

/* A processed-batch pool big enough for model gw. */
struct fb_batch_pool *fb_rt_out_pool_new(const struct fb_gateway *gw, const struct fb_proc *proc)
{
    uint32_t max_tags, max_win, max_arena;
    out_dims(gw, proc, &max_tags, &max_win, &max_arena);
    return fb_batch_pool_new(FB_OUT_BATCHES, max_tags, max_win, max_arena);
}

/* Whether the running processed-batch pool fits model gw (a reload that
 * grows a group needs a new one). */
bool fb_rt_out_pool_fits(const struct fb_gateway *running, const struct fb_gateway *gw, const struct fb_proc *proc)
{
    uint32_t t0, w0, a0, t1, w1, a1;
    out_dims(running, running->rt->proc, &t0, &w0, &a0);
    out_dims(gw, proc, &t1, &w1, &a1);
    return t1 <= t0 && w1 <= w0 && a1 <= a0;
}

const char *fb_rt_state_dir(const struct fb_gateway *gw)
{
    const char *dir = gw->buffer ? gw->buffer->path : NULL;
    for (uint32_t i = 0; !dir && i < gw->nsinks; i++)
        if (gw->sinks[i].buffer) dir = gw->sinks[i].buffer->path;
    return dir;
}

int fb_runtime_start(struct fb_gateway *gw, struct fb_err *err) { return fb_runtime_start_ext(gw, NULL, err); }

int fb_runtime_start_ext(struct fb_gateway *gw, const struct fb_runtime_ext *ext, struct fb_err *err)
{
    struct fb_rt *rt = calloc(1, sizeof *rt);
    if (!rt) return fb_err_set(err, FB_ENOMEM, "out of memory");
    pthread_mutex_init(&rt->fan_mu, NULL);
    pthread_mutex_init(&rt->status_mu, NULL);
    pthread_mutex_init(&rt->stop_mu, NULL);
    pthread_cond_init(&rt->stop_cv, NULL);
    pthread_rwlock_init(&rt->model_lock, NULL);
    pthread_mutex_init(&rt->gw_cmd_mu, NULL);
    pthread_mutex_init(&rt->stored_mu, NULL);
    fb_cond_init_mono(&rt->stored_cv);
    rt->rl_seq.interval_ns = 60000000000LL;
    rt->gw_state = FB_GW_ONLINE;
    if (ext) {
        rt->gw_cmd = ext->gw_cmd;
        rt->fleet = ext->fleet;
        if (ext->state >= 0) rt->gw_state = ext->state;
    }
    gw->rt = rt;
    rt->started_ns = fb_now_ns();
    for (uint32_t i = 0; i < gw->nconns; i++)
        if (!conn_rt_new(&gw->conns[i])) return fb_err_set(err, FB_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (!sink_rt_new(&gw->sinks[i])) return fb_err_set(err, FB_ENOMEM, "out of memory");
    if (ext && ext->status_init) ext->status_init(ext->fleet); /* the first status already carries them */

    const char *seq_dir = fb_rt_state_dir(gw);
    if (seq_dir) {
        struct fb_err e = {0};
        if (mkdir(seq_dir, 0750) < 0 && errno != EEXIST)
            fb_warn(NULL, NULL, "cannot create buffer directory %s: %s", seq_dir, strerror(errno));
        if (fb_store_seq_open(&rt->store_seq, seq_dir, 65536, &e) < 0)
            fb_warn(NULL, NULL, "sequence counter in %s: %s (numbers may repeat after a crash)", seq_dir, e.msg);
        rt->seq_persisted = true;
    } else {
        atomic_store(&rt->seq, (uint64_t)(fb_now_ns() / 1000));
    }
    rt->proc = fb_proc_new(gw);
    if (!rt->proc) return fb_err_set(err, FB_ENOMEM, "cannot allocate pipeline state");

    for (uint32_t i = 0; i < gw->ndevs; i++) {
        struct fb_device *d = &gw->devs[i];
        d->gw = gw;
        atomic_store(&d->state, FB_DEV_CONNECTING);
        if (fb_rt_groups_new(gw, d, err) < 0) return err ? err->code : FB_ENOMEM;
    }
    for (uint32_t i = 0; i < gw->nconns; i++) {
        if (conn_pool_new(gw, &gw->conns[i], err) < 0) return err ? err->code : FB_ENOMEM;
        groups_plain(gw, &gw->conns[i]);
    }
    rt->out_pool = fb_rt_out_pool_new(gw, rt->proc);
    if (!rt->out_pool) return fb_err_set(err, FB_ENOMEM, "cannot allocate batches");
    fb_certs_start(gw); /* the first look at every certificate, logged before anything connects */
    /* the router first: a sink may deliver a command as soon as it connects */
    if (fb_router_start(gw) < 0) return fb_err_set(err, FB_ENOMEM, "cannot start command router");
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_sink_inst *s = &gw->sinks[i];
        s->gw = gw;
        if (!s->sink->live && sink_store_open(gw, s, err) < 0) return err ? err->code : FB_EIO;
        if (fb_rt_sink_run(s, err) < 0) return err ? err->code : FB_EIO;
    }
    /* services that act on the devices (a quiesce hook: control loops) start
     * before the connection threads, the others after them; before the edge thread,
     * whose pipeline reads the latest-value slots they ask for */
    rt->svc_state = calloc(gw->nservices ? gw->nservices : 1, sizeof *rt->svc_state);
    if (!rt->svc_state) return fb_err_set(err, FB_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < gw->nservices; i++) {
        const struct fb_service_inst *si = &gw->services[i];
        if (si->svc->quiesce && !(rt->svc_state[i] = si->svc->start(gw, si->cfg, err))) return err ? err->code : FB_EIO;
    }
    /* computed tags, alarms, scripts: only when configured; before the first batch is read */
    if (fb_edge_start(gw, seq_dir, err) < 0) return err ? err->code : FB_ENOMEM;
    /* vibration analysis: after the alarm table (its alarms), before the first block is read */
    if (fb_vib_start(gw, seq_dir, err) < 0) return err ? err->code : FB_ENOMEM;
    /* a gateway being provisioned or taken out of service polls nothing (docs/fleet.md) */
    int state = atomic_load(&rt->gw_state);
    bool idle = state == FB_GW_PROVISIONING || state == FB_GW_DECOMMISSIONED;
    for (uint32_t i = 0; i < gw->ndevs && idle; i++)
        fb_publish_state(gw, &gw->devs[i], FB_DEV_OFFLINE,
                         state == FB_GW_DECOMMISSIONED ? "gateway decommissioned" : "gateway not provisioned");
    for (uint32_t i = 0; i < gw->nconns && !idle; i++)
        if (conn_thread_start(&gw->conns[i], err) < 0) return err ? err->code : FB_ENOMEM;
    for (uint32_t i = 0; i < gw->nservices; i++) {
        const struct fb_service_inst *si = &gw->services[i];
        if (!si->svc->quiesce && !(rt->svc_state[i] = si->svc->start(gw, si->cfg, err)))
            return err ? err->code : FB_EIO;
    }
    /* sources last: everything they feed runs */
    for (uint32_t i = 0; i < gw->nsources; i++) {
        struct fb_source_inst *si = &gw->sources[i];
        si->gw = gw;
        if (si->src->start(si, err) < 0) return err ? err->code : FB_EIO;
        rt->sources_started = i + 1;
    }
    fb_info(NULL, NULL, "started: %u devices, %u connections, %u tags, %u sinks%s", gw->ndevs, gw->nconns, gw->ntags,
            gw->nsinks, gw->nsources ? ", receiving (ingest)" : "");
#ifdef __GLIBC__
    /* what the config load used and freed (the parsed document, the loader's
     * side tables) goes back to the system instead of staying in the heap */
    malloc_trim(0);
#endif
    return 0;
}

void fb_runtime_request_stop(struct fb_gateway *gw)
{
    struct fb_rt *rt = gw->rt;
    if (!rt) return;
    atomic_store(&rt->stop, true);
    pthread_mutex_lock(&rt->stop_mu);
    pthread_cond_broadcast(&rt->stop_cv);
    pthread_mutex_unlock(&rt->stop_mu);
}

void fb_runtime_wait(struct fb_gateway *gw)
{
    struct fb_rt *rt = gw->rt;
    if (!rt) return;
    pthread_mutex_lock(&rt->stop_mu);
    while (!atomic_load(&rt->stop)) pthread_cond_wait(&rt->stop_cv, &rt->stop_mu);
    pthread_mutex_unlock(&rt->stop_mu);
    fb_info(NULL, NULL, "stopping");
    /* 0. a gateway command running on the router thread (a reload, a
     * recommission) finishes first: it changes what these steps walk, and
     * none starts once rt->stop is set.  The router itself runs on until the
     * connections have stopped, so a write waiting for a device is answered
     * at once (refused: the connection stops) instead of timing out.
     * Then the sources stop, and the services that act on the devices
     * (control loops) stop acting and write their safe values while the
     * connections still take writes */
    pthread_mutex_lock(&rt->gw_cmd_mu);
    pthread_mutex_unlock(&rt->gw_cmd_mu);
    /* then sources: take nothing more; what they accepted is already queued */
    for (uint32_t i = rt->sources_started; i-- > 0;) gw->sources[i].src->stop(&gw->sources[i]);
    for (uint32_t i = 0; i < gw->nservices && rt->svc_state; i++)
        if (rt->svc_state[i] && gw->services[i].svc->quiesce) gw->services[i].svc->quiesce(rt->svc_state[i]);
    atomic_store(&rt->conns_stop, true);
    /* 1. connections: wake them; pools closed so nothing blocks in pool_get */
    for (uint32_t i = 0; i < gw->nconns; i++) {
        struct fb_conn_rt *c = gw->conns[i].rt;
        if (!c) continue;
        pthread_mutex_lock(&c->mu);
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    for (uint32_t i = 0; i < gw->nconns; i++)
        if (gw->conns[i].rt && gw->conns[i].rt->pool) fb_batch_pool_close(gw->conns[i].rt->pool);
    for (uint32_t i = 0; i < gw->nconns; i++)
        if (gw->conns[i].rt && gw->conns[i].rt->started) pthread_join(gw->conns[i].rt->thr, NULL);
    /* the analysis takes the last blocks (its features and alarms go to the edge and the sinks) */
    fb_vib_stop(gw);
    /* the edge thread takes the last batches and publishes its virtual devices offline */
    fb_edge_stop(gw);
    /* commands can no longer reach a device; the router is stopped before the sinks it answers through */
    fb_router_stop(gw);
    /* 2. sinks drain their queues and close (offline status).  The stores
     * are freed only after every sink has closed and the HTTP endpoint has
     * stopped: the status JSON (any sink's tick, close, GET /status) reads
     * every sink's store. */
    atomic_store(&rt->sinks_stop, true);
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_sink_rt *q = gw->sinks[i].rt;
        if (!q || !q->started) continue;
        pthread_mutex_lock(&q->mu);
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thr, NULL);
    }
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (gw->sinks[i].rt && gw->sinks[i].rt->started) gw->sinks[i].sink->close(&gw->sinks[i]);
    /* the services that started first stop last: the metrics endpoint may
     * still render a control service's status until it stops */
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < gw->nservices && rt->svc_state; i++)
            if (rt->svc_state[i] && (gw->services[i].svc->quiesce != NULL) == (pass == 1))
                gw->services[i].svc->stop(rt->svc_state[i]);
    fb_certs_stop(gw);
    uint32_t nsrc = rt->sources_started;
    rt_free(gw, rt);
    /* no sink queue holds a batch now: the sources' pools can go */
    for (uint32_t i = nsrc; i-- > 0;)
        if (gw->sources[i].src->release) gw->sources[i].src->release(&gw->sources[i]);
    fb_info(NULL, NULL, "stopped");
}
