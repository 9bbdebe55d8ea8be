/* block.c — waveform blocks and their pools (block.h).  A pool is a mutex
 * and a free list of blocks allocated at start-up; get never waits. */
#include "core/block.h"

#include <pthread.h>
#include <stdlib.h>

struct fb_block_pool {
    pthread_mutex_t mu;
    struct fb_block *free;
    uint32_t count, nfree;
};

static void block_free(struct fb_block *b)
{
    if (!b) return;
    free(b->x);
    free(b);
}

struct fb_block_pool *fb_block_pool_new(uint32_t count, uint32_t cap)
{
    struct fb_block_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->mu, NULL);
    for (uint32_t i = 0; i < count; i++) {
        struct fb_block *b = calloc(1, sizeof *b);
        if (b) b->x = malloc((cap ? cap : 1) * sizeof *b->x);
        if (!b || !b->x) {
            block_free(b);
            fb_block_pool_free(p);
            return NULL;
        }
        b->cap = cap;
        b->pool = p;
        b->next = p->free;
        p->free = b;
        p->count++;
        p->nfree++;
    }
    return p;
}

void fb_block_pool_free(struct fb_block_pool *p)
{
    if (!p) return;
    FB_ASSERT(p->nfree == p->count); /* a block still referenced would be freed under its user */
    while (p->free) {
        struct fb_block *b = p->free;
        p->free = b->next;
        block_free(b);
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
}

struct fb_block *fb_block_pool_tryget(struct fb_block_pool *p)
{
    if (!p) return NULL;
    pthread_mutex_lock(&p->mu);
    struct fb_block *b = p->free;
    if (b) {
        p->free = b->next;
        p->nfree--;
    }
    pthread_mutex_unlock(&p->mu);
    if (!b) return NULL;
    b->next = NULL;
    b->n = 0;
    b->fs = 0;
    b->ts = 0;
    atomic_store(&b->refs, 1);
    return b;
}

uint32_t fb_block_pool_in_use(struct fb_block_pool *p)
{
    if (!p) return 0;
    pthread_mutex_lock(&p->mu);
    uint32_t n = p->count - p->nfree;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void fb_block_unref(struct fb_block *b)
{
    int before = atomic_fetch_sub(&b->refs, 1);
    FB_ASSERT(before >= 1); /* one unref too many */
    if (before != 1) return;
    struct fb_block_pool *p = b->pool;
    if (!p) {
        block_free(b);
        return;
    }
    pthread_mutex_lock(&p->mu);
    b->next = p->free;
    p->free = b;
    p->nfree++;
    pthread_mutex_unlock(&p->mu);
}
