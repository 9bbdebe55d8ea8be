/* plugin.c — what the runtime offers the plug-ins: drivers, sinks and the
 * command router call these, never the runtime's start/stop (runtime.c).
 * Kept apart from runtime.c so that the plug-ins do not depend on the
 * tables that list them (core/driver.c, core/sinks.c), which the runtime
 * does: no include cycle. */
#include "core/plugin.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/block.h"
#include "core/publish.h"
#include "core/runtime_state.h"
#include "core/thread.h"
#include "proc/proc.h"
#include "store/store.h"

/* ------------------------------------------------------------------ sinks */
_Thread_local struct fb_direct_send fb_direct_send;

void fb_sink_done(struct fb_sink_inst *s, uint64_t batch_id, enum fb_delivery d)
{
    struct fb_sink_rt *q = s->rt;
    if (d == FB_RETRY && (batch_id & FB_DIRECT_ID) && batch_id == fb_direct_send.id) {
        /* sent past the memory queue and refused at once: the caller queues it */
        fb_direct_send.retry = true;
        atomic_fetch_add(&s->m.retries, 1);
        return;
    }
    bool stored = q && q->store && !(batch_id & FB_DIRECT_ID);
    switch (d) {
        case FB_SENT: atomic_fetch_add(&s->m.sent, 1); break;
        /* only the store retries: without one (or for a batch sent past it) the batch is lost */
        case FB_RETRY: atomic_fetch_add(stored ? &s->m.retries : &s->m.dropped, 1); break;
        case FB_DROP: atomic_fetch_add(&s->m.dropped, 1); break;
    }
    if (!stored) return;
    if (d == FB_RETRY) {
        atomic_store(&q->rewind, true);
    } else {
        /* delivered, or refused for good (counted above): either way it leaves the queue */
        fb_store_ack(q->store, batch_id);
    }
    /* room in flight again: wake the sink thread */
    fb_sink_wake(s);
}

void fb_sink_wake(struct fb_sink_inst *s)
{
    struct fb_sink_rt *q = s->rt;
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

bool fb_sink_waiting(struct fb_sink_inst *s)
{
    struct fb_sink_rt *q = s->rt;
    if (!q) return false;
    pthread_mutex_lock(&q->mu);
    bool queued = q->head != NULL;
    pthread_mutex_unlock(&q->mu);
    return queued || (q->store && fb_store_live(q->store) > 0);
}

/* ---------------------------------------------------------------- devices */
void fb_device_set_state(struct fb_device *d, int state, const char *reason)
{
    if (!fb_runtime_running(d->gw)) {
        atomic_store(&d->state, state);
        return;
    }
    fb_publish_state(d->gw, d, state, reason);
}

void fb_conn_failed(struct fb_conn *c, uint32_t quality, int64_t retry_ns)
{
    if (!c->rt) return; /* the one-shot CLI: no retries */
    c->rt->fail_q = quality;
    c->rt->fail_retry_ns = retry_ns;
}

void fb_adopt_swap(struct fb_conn *c, struct fb_conn *old, unsigned what)
{
    FB_ASSERT(c->ndevs == old->ndevs);
    for (uint32_t k = 0; k < c->ndevs; k++) {
        struct fb_device *dn = c->devs[k], *dold = old->devs[k];
        FB_ASSERT(dn->ntags == dold->ntags && dn->ngroups == dold->ngroups);
        if (what & FB_ADOPT_DEV) {
            void *x = dn->drv_dev;
            dn->drv_dev = dold->drv_dev;
            dold->drv_dev = x;
        }
        if (what & FB_ADOPT_ADDR)
            for (uint32_t i = 0; i < dn->ntags; i++) {
                struct fb_tag *a = &dn->gw->tags[dn->first_tag + i], *b = &dold->gw->tags[dold->first_tag + i];
                void *x = a->addr;
                a->addr = b->addr;
                b->addr = x;
            }
        if (what & FB_ADOPT_PLAN)
            for (uint32_t g = 0; g < dn->ngroups; g++) {
                void *x = dn->groups[g].plan;
                dn->groups[g].plan = dold->groups[g].plan;
                dold->groups[g].plan = x;
            }
    }
}

/* ---------------------------------------------------------------- sources */
void fb_source_submit(struct fb_gateway *gw, struct fb_batch *b)
{
    FB_ASSERT(gw->rt != NULL && fb_batch_named(b));
    fb_publish(gw, b);
}

static bool all_stored(struct fb_gateway *gw, uint64_t seq)
{
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        const struct fb_sink_inst *s = &gw->sinks[i];
        if (s->buffer && s->rt && s->rt->started && atomic_load(&s->rt->stored_seq) < seq) return false;
    }
    return true;
}

bool fb_source_wait_stored(struct fb_gateway *gw, uint64_t seq, int64_t timeout_ns)
{
    struct fb_rt *rt = gw->rt;
    if (!rt) return false;
    if (all_stored(gw, seq)) return true;
    int64_t deadline = fb_mono_ns() + timeout_ns;
    pthread_mutex_lock(&rt->stored_mu);
    atomic_fetch_add(&rt->stored_waiters, 1);
    bool ok;
    while (!(ok = all_stored(gw, seq)) && !atomic_load(&rt->sinks_stop)) {
        int64_t now = fb_mono_ns();
        if (now >= deadline) break;
        /* re-check at least every 100 ms: a sink thread that ended wakes nobody */
        fb_cond_wait_until(&rt->stored_cv, &rt->stored_mu, now + 100000000LL < deadline ? now + 100000000LL : deadline);
    }
    atomic_fetch_sub(&rt->stored_waiters, 1);
    pthread_mutex_unlock(&rt->stored_mu);
    return ok;
}

/* ------------------------------------------------------------ the gateway */
bool fb_runtime_running(const struct fb_gateway *gw) { return gw && gw->rt; }
bool fb_runtime_stopping(const struct fb_gateway *gw) { return !gw || !gw->rt || atomic_load(&gw->rt->stop); }
bool fb_runtime_reboot_requested(const struct fb_gateway *gw) { return gw && gw->rt && atomic_load(&gw->rt->reboot); }

void fb_runtime_request_reboot(struct fb_gateway *gw)
{
    if (!gw->rt) return;
    atomic_store(&gw->rt->reboot, true);
    kill(getpid(), SIGTERM); /* process-directed: main's sigwait takes it and stops in order */
}

/* ------------------------------------------------------------------ model */
void fb_model_rdlock(struct fb_gateway *gw)
{
    if (gw && gw->rt) pthread_rwlock_rdlock(&gw->rt->model_lock);
}

void fb_model_unlock(struct fb_gateway *gw)
{
    if (gw && gw->rt) pthread_rwlock_unlock(&gw->rt->model_lock);
}

uint32_t fb_model_generation(const struct fb_gateway *gw)
{
    return gw && gw->rt ? atomic_load(&gw->rt->generation) : 0;
}

void fb_status_changed(struct fb_gateway *gw)
{
    if (!gw || !gw->rt) return;
    atomic_fetch_add(&gw->rt->status_gen, 1);
    for (uint32_t i = 0; i < gw->nsinks; i++) fb_sink_wake(&gw->sinks[i]);
}

uint32_t fb_status_generation(const struct fb_gateway *gw)
{
    return gw && gw->rt ? atomic_load(&gw->rt->status_gen) : 0;
}

/* --------------------------------------------------------------- waveforms */
struct fb_block *fb_block_get(const struct fb_gateway *gw, const struct fb_tag *t)
{
    struct fb_wave *w = gw && t ? fb_tag_wave(gw, t) : NULL;
    if (!w || !w->pool) return NULL;
    struct fb_block *b = fb_block_pool_tryget(w->pool);
    if (!b) {
        atomic_fetch_add(&w->dropped, 1);
        return NULL;
    }
    b->fs = w->fs;
    return b;
}

/* ------------------------------------------------------------------ writes */
int fb_conn_write(struct fb_gateway *gw, const struct fb_tag *t, const struct fb_value *raw, int64_t timeout_ns,
                  struct fb_err *err)
{
    struct fb_conn *c = gw->devs[t->device].conn;
    if (!c || !c->rt || !c->rt->started) /* a decommissioned gateway polls nothing */
        return fb_err_set(err, FB_ECLOSED, "device %s is not running", gw->devs[t->device].name);
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
    fb_cond_init_mono(&r->cv);
    pthread_mutex_lock(&c->rt->mu);
    if (c->rt->wq_tail)
        c->rt->wq_tail->next = r;
    else
        c->rt->wq_head = r;
    c->rt->wq_tail = r;
    pthread_cond_signal(&c->rt->cv);
    pthread_mutex_unlock(&c->rt->mu);

    int64_t deadline = fb_mono_ns() + timeout_ns;
    pthread_mutex_lock(&r->mu);
    while (!r->done)
        if (!fb_cond_wait_until(&r->cv, &r->mu, deadline)) break;
    int rc = r->done ? r->rc : FB_ETIMEDOUT;
    if (r->done && rc < 0 && err) *err = r->err;
    pthread_mutex_unlock(&r->mu);
    if (rc == FB_ETIMEDOUT && !r->done) fb_err_set(err, FB_ETIMEDOUT, "write timed out after %.1fs", timeout_ns / 1e9);
    if (atomic_fetch_sub(&r->refs, 1) == 1) {
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r);
    }
    return rc;
}

/* ------------------------------------------------------- asynchronous writes */
struct fb_write_req *fb_write_req_new(void (*on_done)(void *ctx, int rc, const struct fb_err *err), void *ctx)
{
    struct fb_write_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->on_done = on_done;
    r->done_ctx = ctx;
    r->quiet = true;
    atomic_init(&r->busy, false);
    return r;
}

void fb_write_req_free(struct fb_write_req *r) { free(r); }

bool fb_write_req_busy(const struct fb_write_req *r)
{
    return atomic_load_explicit(&((struct fb_write_req *)r)->busy, memory_order_acquire);
}

int fb_conn_write_async(struct fb_gateway *gw, struct fb_write_req *r, const struct fb_tag *t,
                        const struct fb_value *raw)
{
    FB_ASSERT(r->on_done != NULL);
    if (!gw->rt) return FB_ECLOSED;
    if (atomic_exchange_explicit(&r->busy, true, memory_order_acq_rel)) return FB_EAGAIN;
    struct fb_conn *c = gw->devs[t->device].conn;
    r->next = NULL;
    r->tag = t->id;
    r->raw = *raw;
    if (raw->type == FB_T_STRING) {
        uint32_t n = raw->s.len < sizeof r->sbuf ? raw->s.len : (uint32_t)sizeof r->sbuf;
        memcpy(r->sbuf, raw->s.p, n);
        r->raw.s.p = r->sbuf;
        r->raw.s.len = n;
    }
    pthread_mutex_lock(&c->rt->mu);
    bool was_empty = !c->rt->wq_head;
    if (c->rt->wq_tail)
        c->rt->wq_tail->next = r;
    else
        c->rt->wq_head = r;
    c->rt->wq_tail = r;
    /* a non-empty queue has been signalled already and the connection thread
     * empties it before it sleeps: one wake-up for all outputs of a cycle */
    if (was_empty) pthread_cond_signal(&c->rt->cv);
    pthread_mutex_unlock(&c->rt->mu);
    return 0;
}

/* ------------------------------------------------------------- write guard */
void fb_write_guard_set(struct fb_gateway *gw, const struct fb_write_guard *g)
{
    if (gw->rt) atomic_store(&gw->rt->guard, g);
}

int fb_write_guard_check(struct fb_gateway *gw, const struct fb_tag *t, struct fb_err *err)
{
    const struct fb_write_guard *g = gw->rt ? atomic_load(&gw->rt->guard) : NULL;
    return g ? g->fn(g->ctx, t, err) : 0;
}

/* ------------------------------------------------------------ latest values */
const struct fb_latest *fb_tag_latest(struct fb_gateway *gw, uint32_t tag)
{
    return gw->rt ? fb_proc_latest(gw->rt->proc, tag) : NULL;
}
