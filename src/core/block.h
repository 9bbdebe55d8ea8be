/* block.h — waveform blocks (block.c): the samples of one acquisition of a
 * waveform tag (e.g. 25,600 accelerations taken in one second), which travel
 * as ONE sample of type FB_T_BLOCK from the driver that filled them to the
 * vibration analysis (src/vib), never as thousands of samples.
 *
 * A block is allocated once, in a bounded pool per waveform tag sized at
 * start-up, and reference counted: the driver takes an empty one
 * (fb_block_get in core/plugin.h), fills it, puts it into its raw batch
 * (which takes a reference, batch.c), and whoever keeps it longer takes its
 * own.  The last unref puts it back into its pool.  Nothing is copied and
 * nothing is allocated per block on the hot path; when every block of a tag
 * is still in use (the analysis is behind), there is none to fill and the
 * acquisition is dropped and counted instead of blocking the poll loop. */
#ifndef FB_BLOCK_H
#define FB_BLOCK_H
#include <stdatomic.h>

#include "core/fb.h"

struct fb_block_pool;

struct fb_block {
    struct fb_block *next; /* free list */
    struct fb_block_pool *pool;
    atomic_int refs;
    uint32_t n, cap; /* samples filled, room */
    double fs;       /* sample rate, Hz */
    int64_t ts;      /* UTC ns of the first sample */
    float *x;        /* the samples, in the tag's raw unit (scaling is applied by the analysis) */
};

/* count blocks of cap samples each; NULL when out of memory. */
struct fb_block_pool *fb_block_pool_new(uint32_t count, uint32_t cap);
/* Every block must be back (an invariant: checked). */
void fb_block_pool_free(struct fb_block_pool *p);
/* An empty block (refs 1, n 0), or NULL when all are in use.  Never blocks. */
struct fb_block *fb_block_pool_tryget(struct fb_block_pool *p);
/* Blocks not in the free list. */
uint32_t fb_block_pool_in_use(struct fb_block_pool *p);
static inline void fb_block_ref(struct fb_block *b) { atomic_fetch_add(&b->refs, 1); }
/* The last reference returns the block to its pool (or frees a pool-less one). */
void fb_block_unref(struct fb_block *b);
#endif
