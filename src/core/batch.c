/* batch.c — sample batches and their pools.
 *
 * A batch is one allocation-free unit of work: fixed arrays of samples and
 * stats and a string arena, all sized at start-up from the device's tags, so
 * the hot path only writes into memory that already exists.  Pools hand out
 * batches of one size and block when empty: that is how back-pressure reaches
 * the device threads when the pipeline or a sink falls behind. */
#include <stdlib.h>
#include <string.h>

#include "core/batch.h"

#include "core/block.h"

#include <pthread.h>

struct fb_batch_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fb_batch *free;
    uint32_t count;
    bool closed;
};

struct fb_batch *fb_batch_new(uint32_t cap, uint32_t cap_stats, uint32_t arena_cap)
{
    struct fb_batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->cap = cap;
    b->cap_stats = cap_stats;
    b->arena_cap = arena_cap;
    b->s = cap ? calloc(cap, sizeof *b->s) : NULL;
    b->stats = cap_stats ? calloc(cap_stats, sizeof *b->stats) : NULL;
    b->arena = arena_cap ? malloc(arena_cap) : NULL;
    if ((cap && !b->s) || (cap_stats && !b->stats) || (arena_cap && !b->arena)) {
        fb_batch_free(b);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    return b;
}

/* Waveform blocks are shared, not copied: drop the batch's references. */
static void release_blocks(struct fb_batch *b)
{
    if (!b->blocks) return;
    for (uint32_t i = 0; i < b->n; i++)
        if (b->s[i].v.type == FB_T_BLOCK) {
            if (b->s[i].v.blk) fb_block_unref(b->s[i].v.blk);
            b->s[i].v.type = FB_T_NONE;
            b->s[i].v.blk = NULL;
        }
    b->blocks = 0;
}

void fb_batch_free(struct fb_batch *b)
{
    if (!b) return;
    release_blocks(b);
    free(b->s);
    free(b->stats);
    free(b->arena);
    free(b);
}

void fb_batch_reset(struct fb_batch *b)
{
    release_blocks(b);
    b->n = 0;
    b->nstats = 0;
    b->arena_len = 0;
    b->kind = FB_BATCH_DATA;
    b->dev_state = 0;
    b->seq = 0;
    b->reason[0] = 0;
    memset(&b->ev, 0, sizeof b->ev);
    memset(b->names, 0, sizeof b->names);
}

uint32_t fb_batch_name_add(struct fb_batch *b, const char *p, uint32_t len)
{
    if (len >= b->arena_cap - b->arena_len) return UINT32_MAX;
    uint32_t off = b->arena_len;
    if (len) memcpy(b->arena + off, p, len);
    b->arena[off + len] = 0;
    b->arena_len += len + 1;
    return off;
}

const char *fb_batch_strdup(struct fb_batch *b, const char *p, uint32_t len)
{
    if (len > b->arena_cap - b->arena_len) return NULL;
    char *dst = b->arena + b->arena_len;
    if (len) memcpy(dst, p, len);
    b->arena_len += len;
    return dst;
}

struct fb_sample *fb_batch_add(struct fb_batch *b, uint32_t tag, uint32_t quality, int64_t ts, const struct fb_value *v)
{
    if (b->n >= b->cap) return NULL;
    struct fb_sample *s = &b->s[b->n];
    s->tag = tag;
    s->quality = quality;
    s->flags = 0;
    s->stats = 0;
    s->ts_src = ts;
    s->ts_gw = ts;
    if (v) {
        s->v = *v;
        if (v->type == FB_T_STRING) {
            const char *p = fb_batch_strdup(b, v->s.p, v->s.len);
            if (!p) { /* arena sized at start-up: truncate rather than corrupt */
                uint32_t room = b->arena_cap - b->arena_len;
                p = fb_batch_strdup(b, v->s.p, room);
                s->v.s.len = room;
            }
            s->v.s.p = p;
        } else if (v->type == FB_T_BLOCK && v->blk) {
            fb_block_ref(v->blk);
            b->blocks = 1;
        }
    } else {
        memset(&s->v, 0, sizeof s->v);
    }
    b->n++;
    return s;
}

struct fb_batch_pool *fb_batch_pool_new(uint32_t count, uint32_t cap, uint32_t cap_stats, uint32_t arena_cap)
{
    struct fb_batch_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (uint32_t i = 0; i < count; i++) {
        struct fb_batch *b = fb_batch_new(cap, cap_stats, arena_cap);
        if (!b) {
            fb_batch_pool_free(p);
            return NULL;
        }
        b->pool = p;
        b->next = p->free;
        p->free = b;
        p->count++;
    }
    return p;
}

static struct fb_batch *take(struct fb_batch_pool *p)
{
    struct fb_batch *b = p->free;
    FB_ASSERT(b && b->pool == p);
    p->free = b->next;
    b->next = NULL;
    atomic_store(&b->refs, 1);
    fb_batch_reset(b);
    return b;
}

struct fb_batch *fb_batch_pool_get(struct fb_batch_pool *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->free && !p->closed) pthread_cond_wait(&p->cv, &p->mu);
    struct fb_batch *b = p->closed ? NULL : take(p);
    pthread_mutex_unlock(&p->mu);
    return b;
}

struct fb_batch *fb_batch_pool_tryget(struct fb_batch_pool *p)
{
    pthread_mutex_lock(&p->mu);
    struct fb_batch *b = (p->free && !p->closed) ? take(p) : NULL;
    pthread_mutex_unlock(&p->mu);
    return b;
}

void fb_batch_pool_close(struct fb_batch_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->closed = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

bool fb_batch_pool_idle(struct fb_batch_pool *p)
{
    uint32_t n = 0;
    pthread_mutex_lock(&p->mu);
    for (const struct fb_batch *b = p->free; b; b = b->next) n++;
    pthread_mutex_unlock(&p->mu);
    return n == p->count;
}

void fb_batch_pool_free(struct fb_batch_pool *p)
{
    if (!p) return;
    while (p->free) {
        struct fb_batch *b = p->free;
        p->free = b->next;
        fb_batch_free(b);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

void fb_batch_unref(struct fb_batch *b)
{
    int before = atomic_fetch_sub(&b->refs, 1);
    FB_ASSERT(before >= 1); /* one unref too many: the batch would be handed out twice */
    if (before != 1) return;
    struct fb_batch_pool *p = b->pool;
    if (!p) {
        fb_batch_free(b);
        return;
    }
    release_blocks(b); /* back to their pools now, not when the batch is next used */
    pthread_mutex_lock(&p->mu);
    b->next = p->free;
    p->free = b;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}
