/* publish.c — how a processed batch leaves the thread that made it: a
 * per-gateway sequence number, then, for every sink, either straight into
 * the sink on this thread (no buffer configured, nothing waiting, the sink
 * ready: no other thread wakes up) or a reference in the sink's queue for its
 * thread; all under one lock, so that every sink sees batches in sequence
 * order whichever connection thread made them.  Device state changes travel
 * the same way, as batches of their own kind.  Used by the connection threads
 * (runtime.c) and by drivers reporting a device's state (plugin.c).
 */
#include "core/publish.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/runtime_state.h"
#include "store/store.h"

static void sink_push(struct fb_sink_inst *s, struct fb_batch *b)
{
    struct fb_sink_rt *q = s->rt;
    FB_ASSERT(q != NULL); /* every sink's runtime state exists before the first batch is read */
    fb_batch_ref(b);
    pthread_mutex_lock(&q->mu);
    struct fb_qnode *n = q->free;
    if (n)
        q->free = n->next;
    else
        n = malloc(sizeof *n); /* grows to the number of batches in flight, then reused */
    if (!n) {
        pthread_mutex_unlock(&q->mu);
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
    q->len++;
    atomic_fetch_add(&s->m.queued, 1);
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Hand the batch to the sink on this thread when nothing can be overtaken:
 * no buffer (the memory queue only exists for when the sink cannot take
 * data), nothing waiting in the sink's queue or memory queue, nobody else
 * inside the sink (call_mu), and the sink ready, so send() will not wait.
 * This saves the sink thread's wake-up per batch, which with the network
 * write was most of the CPU per value (BENCHMARKS.md).  False: queue it.
 * Only data batches: the others are rare, and some are published under a
 * lock their send() takes again (alarm events under the alarm table's lock:
 * the MQTT sink then reads the alarm summary), so they go through the sink
 * thread as before.  Nor while a reload has the sink parked (it may be
 * closing, rebuilding or moving it) or detached (closed until it opens on
 * the new settings), or once the sinks stop: the queue then, which the sink
 * thread handles as main does (fb_rt_sink_park waits for a direct send that
 * started before the park). */
static bool sink_direct(struct fb_gateway *gw, struct fb_sink_inst *s, struct fb_batch *b)
{
    struct fb_sink_rt *q = s->rt;
    if (b->kind != FB_BATCH_DATA || !q->mem_only || pthread_mutex_trylock(&q->call_mu) != 0) return false;
    pthread_mutex_lock(&q->mu);
    bool go = q->mem_only && !q->head && q->started && !q->park && !q->parked && !atomic_load(&q->detached) &&
              !atomic_load(&q->stop) && !atomic_load(&gw->rt->sinks_stop);
    pthread_mutex_unlock(&q->mu);
    /* ready() before the memory queue's count: it may take in acknowledgements that empty it */
    go = go && (!s->sink->ready || s->sink->ready(s, true));
    go = go && fb_store_live(q->store) == 0;
    if (go) {
        atomic_fetch_add(&s->m.queued, 1);
        fb_direct_send = (struct fb_direct_send){b->seq | FB_DIRECT_ID, false};
        if (s->sink->send(s, b, b->seq | FB_DIRECT_ID) < 0) atomic_fetch_add(&s->m.errors, 1);
        if (fb_direct_send.retry) {
            /* the connection broke after ready(): the sink thread queues it (sink_push counts it) */
            atomic_fetch_sub(&s->m.queued, 1);
            go = false;
        }
        fb_direct_send.id = 0;
    }
    pthread_mutex_unlock(&q->call_mu);
    return go;
}

/* The edge thread takes the data batches of the devices it watches (one
 * test when nothing is configured: no edge queue).  Its own batches (computed
 * tags, group FB_GROUP_NONE) are not fed back: it has them already. */
static void edge_push(struct fb_edge_q *q, struct fb_batch *b)
{
    if (b->kind != FB_BATCH_DATA || b->group == FB_GROUP_NONE || !q->want[b->device]) return;
    fb_batch_ref(b);
    pthread_mutex_lock(&q->mu);
    struct fb_qnode *n = q->free;
    if (n)
        q->free = n->next;
    else
        n = malloc(sizeof *n); /* grows to the number of batches in flight, then reused */
    if (!n) {
        pthread_mutex_unlock(&q->mu);
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
    q->len++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

void fb_publish_wake_edge(struct fb_gateway *gw)
{
    if (!gw || !gw->rt) return;
    pthread_mutex_lock(&gw->rt->fan_mu); /* edge_q is cleared under it when the edge stops */
    struct fb_edge_q *q = gw->rt->edge_q;
    if (q) {
        pthread_mutex_lock(&q->mu);
        q->wake = true;
        pthread_cond_signal(&q->cv);
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_unlock(&gw->rt->fan_mu);
}

static void fan_out(struct fb_gateway *gw, struct fb_batch *b)
{
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (!sink_direct(gw, &gw->sinks[i], b)) sink_push(&gw->sinks[i], b);
    if (gw->rt->edge_q) edge_push(gw->rt->edge_q, b);
}

/* Per-gateway message sequence.  With a buffer directory it is persisted in
 * reserved blocks (src/store), so it never goes back, even after kill -9;
 * without one it starts from the clock in microseconds, which also keeps it
 * increasing across restarts as long as the clock does. */
static uint64_t next_seq(struct fb_gateway *gw)
{
    struct fb_rt *rt = gw->rt;
    if (rt->seq_persisted) {
        uint64_t v;
        if (fb_store_seq_next(&rt->store_seq, &v) < 0 && fb_ratelimit_ok(&rt->rl_seq, fb_mono_ns()))
            fb_warn(NULL, NULL, "cannot persist the sequence counter in %s: numbers may repeat after a crash",
                    rt->store_seq.dir);
        atomic_store(&rt->seq, v);
        return v;
    }
    return atomic_fetch_add(&gw->rt->seq, 1) + 1;
}

/* Number a batch and queue it to every sink, atomically with respect to other
 * connection threads, so every sink sees batches in sequence order. */
void fb_publish(struct fb_gateway *gw, struct fb_batch *b)
{
    pthread_mutex_lock(&gw->rt->fan_mu);
    b->seq = next_seq(gw);
    fan_out(gw, b);
    pthread_mutex_unlock(&gw->rt->fan_mu);
}

void fb_publish_state(struct fb_gateway *gw, struct fb_device *d, int state, const char *reason)
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
    fb_publish(gw, b);
    fb_batch_unref(b);
}
