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
        if (rc == FB_EAGAIN && !atomic_load(&s->gw->rt->stop) && !atomic_load(&s->gw->rt->sinks_stop)) {
            if (fb_ratelimit_ok(&q->rl_full, fb_mono_ns()))
                fb_warn(NULL, NULL, "%s: buffer full, holding the producers back (policy block)", s->name);
            fb_store_flush(s->rt->store); /* what is buffered must be readable to be delivered */
            store_deliver(s, q);
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
                fb_warn(NULL, NULL, "%s: buffered record %llu cannot be decoded (%s); dropped", s->name,
                        (unsigned long long)id, fb_strerror(rc));
            fb_store_ack(s->rt->store, id);
            continue;
        }
        if (s->sink->send(s, q->scratch, id) < 0) atomic_fetch_add(&s->m.errors, 1);
    }
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
    struct fb_sink_inst *s = arg;
    struct fb_gateway *gw = s->gw;
    struct fb_sink_rt *q = s->rt;
    fb_thread_name("sink", s->name);
    uint32_t unflushed = 0;
    int64_t wait_ns = -1;
    int64_t stop_deadline = 0;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        bool stopping = atomic_load(&gw->rt->sinks_stop);
        if (!q->head && !stopping) {
            int64_t w = wait_ns >= 0 && wait_ns < 100000000LL ? wait_ns : 100000000LL;
            fb_cond_wait_until(&q->cv, &q->mu, fb_mono_ns() + w);
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
        stopping = atomic_load(&gw->rt->sinks_stop);
        pthread_mutex_unlock(&q->mu);
        if (n) {
            struct fb_batch *b = n->b;
            /* data and alarm events are buffered; device states are not (every connect republishes them).
             * ready() before the memory queue's count: it may take in acknowledgements */
            if (s->rt->store && b->kind != FB_BATCH_DEVSTATE &&
                !(q->mem_only && (!s->sink->ready || s->sink->ready(s)) && fb_store_live(s->rt->store) == 0)) {
                store_append(s, q, b);
                unflushed++;
            } else if (s->sink->send(s, b, s->rt->store ? b->seq | FB_DIRECT_ID : b->seq) < 0) {
                atomic_fetch_add(&s->m.errors, 1);
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
            wait_ns = store_deliver(s, q);
        }
        if (!unflushed && q->taken_seq != atomic_load(&q->stored_seq)) stored_advance(gw, q);
        if (s->sink->tick) s->sink->tick(s);
        pthread_mutex_unlock(&q->call_mu);
        if (stopping && queue_empty && !n) {
            /* the pipeline has finished: deliver what the sink still takes, for a bounded time */
            if (!s->rt->store) break;
            if (!stop_deadline) stop_deadline = fb_mono_ns() + 2000000000LL;
            struct fb_store_stats st;
            fb_store_stats(s->rt->store, &st);
            pthread_mutex_lock(&q->call_mu);
            bool ready = !s->sink->ready || s->sink->ready(s);
            pthread_mutex_unlock(&q->call_mu);
            if (st.records == 0 || fb_mono_ns() >= stop_deadline || !ready) break;
            if (wait_ns < 0) wait_ns = 10000000LL;
            struct timespec ts = {0, (long)(wait_ns < 100000000LL ? wait_ns : 100000000LL)};
            nanosleep(&ts, NULL);
        }
    }
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
                const struct fb_tag *tag = &gw->tags[g->tags[t]];
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

static void sink_rt_free(struct fb_sink_inst *s)
{
    struct fb_sink_rt *q = s->rt;
    if (!q) return;
    if (q->store) {
        fb_store_flush(q->store);
        fb_store_close(q->store);
        q->store = NULL;
    }
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
    fb_buf_free(&q->enc);
    fb_batch_free(q->scratch);
    fb_model_map_free(q->map);
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
    struct fb_batch *out = fb_batch_pool_get(rt->out_pool);
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

/* All tags of a group with one bad quality, e.g. when the connection is down. */
static void emit_bad_group(struct fb_gateway *gw, struct fb_device *d, struct fb_group *g, uint32_t q)
{
    struct fb_batch *b = fb_batch_pool_get(g->rt->pool);
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

static void *conn_thread(void *arg)
{
    struct fb_conn *c = arg;
    struct fb_gateway *gw = c->devs[0]->gw;
    fb_thread_name("conn", c->devs[0]->name);
    struct fb_backoff bo;
    fb_backoff_init(&bo, BACKOFF_MIN_NS, BACKOFF_MAX_NS);
    struct fb_ratelimit rl = {.interval_ns = 60000000000LL};
    bool ever_failed = false;
    uint32_t failed_q = 0; /* the quality the tags were last given for a failed connect */
    c->rt->next_try = 0;
    int64_t now = fb_mono_ns();
    for (uint32_t i = 0; i < c->ndevs; i++)
        for (uint32_t k = 0; k < c->devs[i]->ngroups; k++) c->devs[i]->groups[k].rt->next_due = now;

    while (!atomic_load(&gw->rt->conns_stop)) {
        now = fb_mono_ns();
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
            struct fb_batch *b = fb_batch_pool_get(due->rt->pool);
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
        if (!c->rt->wq_head && !atomic_load(&gw->rt->conns_stop)) {
            if (wake == INT64_MAX) {
                pthread_cond_wait(&c->rt->cv, &c->rt->mu);
            } else {
                fb_cond_wait_until(&c->rt->cv, &c->rt->mu, wake);
            }
        }
        pthread_mutex_unlock(&c->rt->mu);
    }
    fail_writes(c, "gateway is shutting down");
    if (c->rt->connected) {
        c->drv->close(c);
        c->rt->connected = false;
    }
    for (uint32_t i = 0; i < c->ndevs; i++) fb_publish_state(gw, c->devs[i], FB_DEV_OFFLINE, "gateway stopped");
    return NULL;
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
        if (fb_tproc(&gw->tags[g->tags[i]])->window_ns) n++;
    return n;
}

/* The runtime state of every group, connection and sink, in three arrays
 * hung off the model's rt pointers. */
static int rt_alloc(struct fb_gateway *gw, struct fb_rt *rt)
{
    uint32_t ngroups = 0;
    for (uint32_t i = 0; i < gw->ndevs; i++) ngroups += gw->devs[i].ngroups;
    rt->groups = calloc(ngroups ? ngroups : 1, sizeof *rt->groups);
    rt->conns = calloc(gw->nconns ? gw->nconns : 1, sizeof *rt->conns);
    rt->sinks = calloc(gw->nsinks ? gw->nsinks : 1, sizeof *rt->sinks);
    if (!rt->groups || !rt->conns || !rt->sinks) return FB_ENOMEM;
    uint32_t k = 0;
    for (uint32_t i = 0; i < gw->ndevs; i++)
        for (uint32_t g = 0; g < gw->devs[i].ngroups; g++) gw->devs[i].groups[g].rt = &rt->groups[k++];
    for (uint32_t i = 0; i < gw->nconns; i++) {
        struct fb_conn_rt *c = &rt->conns[i];
        pthread_mutex_init(&c->mu, NULL);
        fb_cond_init_mono(&c->cv);
        gw->conns[i].rt = c;
    }
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_sink_rt *q = &rt->sinks[i];
        pthread_mutex_init(&q->call_mu, NULL);
        pthread_mutex_init(&q->mu, NULL);
        fb_cond_init_mono(&q->cv);
        gw->sinks[i].rt = q;
    }
    return 0;
}

static void rt_free(struct fb_gateway *gw, struct fb_rt *rt)
{
    for (uint32_t i = 0; i < gw->ndevs; i++)
        for (uint32_t g = 0; g < gw->devs[i].ngroups; g++) {
            struct fb_group *gr = &gw->devs[i].groups[g];
            gr->rt = NULL; /* its pool is its connection's */
        }
    for (uint32_t i = 0; rt->conns && i < gw->nconns; i++) {
        fb_batch_pool_free(rt->conns[i].pool);
        pthread_mutex_destroy(&rt->conns[i].mu);
        pthread_cond_destroy(&rt->conns[i].cv);
        gw->conns[i].rt = NULL;
    }
    for (uint32_t i = 0; rt->sinks && i < gw->nsinks; i++) {
        sink_rt_free(&gw->sinks[i]);
        pthread_mutex_destroy(&rt->sinks[i].call_mu);
        pthread_mutex_destroy(&rt->sinks[i].mu);
        pthread_cond_destroy(&rt->sinks[i].cv);
        gw->sinks[i].rt = NULL;
    }
    free(rt->svc_state);
    free(rt->seen);
    free(rt->drain);
    pthread_mutex_destroy(&rt->status_mu);
    free(rt->groups);
    free(rt->conns);
    free(rt->sinks);
    fb_vib_free(gw);  /* after the raw batches (above): every block is back in its pool */
    fb_edge_free(gw); /* the edge thread's state and the alarm table */
    fb_router_free(rt->router);
    fb_batch_pool_free(rt->out_pool);
    fb_proc_free(rt->proc);
    pthread_mutex_destroy(&rt->fan_mu);
    pthread_mutex_destroy(&rt->stop_mu);
    pthread_cond_destroy(&rt->stop_cv);
    pthread_mutex_destroy(&rt->stored_mu);
    pthread_cond_destroy(&rt->stored_cv);
    free(rt);
    gw->rt = NULL;
}

int fb_runtime_start(struct fb_gateway *gw, struct fb_err *err)
{
    struct fb_rt *rt = calloc(1, sizeof *rt);
    if (!rt) return fb_err_set(err, FB_ENOMEM, "out of memory");
    pthread_mutex_init(&rt->fan_mu, NULL);
    pthread_mutex_init(&rt->status_mu, NULL);
    pthread_mutex_init(&rt->stop_mu, NULL);
    pthread_cond_init(&rt->stop_cv, NULL);
    pthread_mutex_init(&rt->stored_mu, NULL);
    fb_cond_init_mono(&rt->stored_cv);
    rt->rl_seq.interval_ns = 60000000000LL;
    gw->rt = rt;
    rt->started_ns = fb_now_ns();
    if (rt_alloc(gw, rt) < 0) return fb_err_set(err, FB_ENOMEM, "out of memory");

    const char *seq_dir = gw->buffer ? gw->buffer->path : NULL;
    for (uint32_t i = 0; !seq_dir && i < gw->nsinks; i++)
        if (gw->sinks[i].buffer) seq_dir = gw->sinks[i].buffer->path;
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

    uint32_t max_tags = 1, max_win = 0, max_arena = 0;
    for (uint32_t i = 0; i < gw->ndevs; i++) {
        struct fb_device *d = &gw->devs[i];
        d->gw = gw;
        atomic_store(&d->state, FB_DEV_CONNECTING);
        for (uint32_t k = 0; k < d->ngroups; k++) {
            struct fb_group *g = &d->groups[k];
            uint32_t arena = group_arena(gw, g), nwin = group_windows(gw, g);
            g->rt->plain = fb_proc_plain(rt->proc, g);
            if (g->rt->plain) continue; /* processed in place: no processed batch needed */
            if (g->ntags > max_tags) max_tags = g->ntags;
            if (nwin > max_win) max_win = nwin;
            if (arena > max_arena) max_arena = arena;
        }
    }
    for (uint32_t i = 0; i < gw->nconns; i++) {
        struct fb_conn *c = &gw->conns[i];
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
        for (uint32_t j = 0; j < c->ndevs; j++)
            for (uint32_t k = 0; k < c->devs[j]->ngroups; k++) c->devs[j]->groups[k].rt->pool = c->rt->pool;
    }
    rt->out_pool = fb_batch_pool_new(FB_OUT_BATCHES, max_tags, max_win, max_arena);
    if (!rt->out_pool) return fb_err_set(err, FB_ENOMEM, "cannot allocate batches");
    fb_certs_start(gw); /* the first look at every certificate, logged before anything connects */
    /* the router first: a sink may deliver a command as soon as it connects */
    if (fb_router_start(gw) < 0) return fb_err_set(err, FB_ENOMEM, "cannot start command router");
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_sink_inst *s = &gw->sinks[i];
        s->gw = gw;
        if (!s->sink->live && sink_store_open(gw, s, err) < 0) return err ? err->code : FB_EIO;
        if (s->sink->open(s, err) < 0) return err ? err->code : FB_EIO;
        if (pthread_create(&s->rt->thr, NULL, sink_thread, s) != 0)
            return fb_err_set(err, FB_ENOMEM, "cannot start sink thread");
        s->rt->started = true;
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
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024); /* small stacks: hundreds of devices */
    for (uint32_t i = 0; i < gw->nconns; i++) {
        struct fb_conn *c = &gw->conns[i];
        if (pthread_create(&c->rt->thr, &attr, conn_thread, c) != 0) {
            pthread_attr_destroy(&attr);
            return fb_err_set(err, FB_ENOMEM, "cannot start connection thread");
        }
        c->rt->started = true;
    }
    pthread_attr_destroy(&attr);
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
    /* 0. sources: take nothing more; what they accepted is already queued */
    for (uint32_t i = rt->sources_started; i-- > 0;) gw->sources[i].src->stop(&gw->sources[i]);
    /* 0. services that act on the devices (control loops) stop acting and
     * write their safe values while the connections still take writes */
    for (uint32_t i = 0; i < gw->nservices && rt->svc_state; i++)
        if (rt->svc_state[i] && gw->services[i].svc->quiesce) gw->services[i].svc->quiesce(rt->svc_state[i]);
    atomic_store(&rt->conns_stop, true);
    /* 1. connections: wake them; pools closed so nothing blocks in pool_get */
    for (uint32_t i = 0; i < gw->nconns; i++) {
        struct fb_conn_rt *c = gw->conns[i].rt;
        pthread_mutex_lock(&c->mu);
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    for (uint32_t i = 0; i < gw->nconns; i++)
        if (gw->conns[i].rt->pool) fb_batch_pool_close(gw->conns[i].rt->pool);
    for (uint32_t i = 0; i < gw->nconns; i++)
        if (gw->conns[i].rt->started) pthread_join(gw->conns[i].rt->thr, NULL);
    /* the analysis takes the last blocks (its features and alarms go to the edge and the sinks) */
    fb_vib_stop(gw);
    /* the edge thread takes the last batches and publishes its virtual devices offline */
    fb_edge_stop(gw);
    /* commands can no longer reach a device; stop the router before the sinks it answers through */
    fb_router_stop(gw);
    /* 2. sinks drain their queues and close (offline status).  The stores
     * are freed only after every sink has closed and the HTTP endpoint has
     * stopped: the status JSON (any sink's tick, close, GET /status) reads
     * every sink's store. */
    atomic_store(&rt->sinks_stop, true);
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_sink_rt *q = gw->sinks[i].rt;
        if (!q->started) continue;
        pthread_mutex_lock(&q->mu);
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thr, NULL);
    }
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (gw->sinks[i].rt->started) gw->sinks[i].sink->close(&gw->sinks[i]);
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
