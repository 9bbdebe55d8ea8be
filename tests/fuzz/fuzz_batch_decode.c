/* fuzz_batch_decode.c — libFuzzer harness for buffered records read back
 * from disk (src/core/batch_codec.c).  A record that decodes must stay
 * inside the model (device and tag ids in range, strings inside the batch's
 * arena; for named batches every name a NUL-terminated string inside the
 * arena) and must encode again to a record that decodes the same way.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_batch_decode /tmp/c tests/fuzz/corpus/batch_decode
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fb_tag tags[4];
    static struct fb_device devs[2];
    static struct fb_gateway gw = {.tags = tags, .ntags = 4, .devs = devs, .ndevs = 2};
    static struct fb_batch *b, *c;
    static struct fb_buf enc;
    if (fb_batch_decode(data, size, &gw, NULL, &b, NULL) != 0) return 0;
    if (b->device >= gw.ndevs) abort();
    bool named = fb_batch_named(b);
    for (int k = 0; named && k < FB_BN__N; k++)
        if (b->names[k] >= b->arena_len || !memchr(b->arena + b->names[k], 0, b->arena_len - b->names[k])) abort();
    for (uint32_t i = 0; i < b->n; i++) {
        const struct fb_sample *s = &b->s[i];
        if (named ? s->tag >= b->arena_len || !memchr(b->arena + s->tag, 0, b->arena_len - s->tag) : s->tag >= gw.ntags)
            abort();
        if (s->v.type == FB_T_STRING && s->v.s.len &&
            (s->v.s.p < b->arena || s->v.s.p + s->v.s.len > b->arena + b->arena_cap))
            abort();
        if ((s->flags & FB_SF_STATS) && s->stats >= b->nstats) abort();
    }
    fb_buf_clear(&enc);
    fb_batch_encode(&enc, b, 7);
    if (fb_batch_decode(enc.p, enc.len, &gw, NULL, &c, NULL) != 0) abort();
    if (c->n != b->n || c->seq != b->seq || c->nstats != b->nstats) abort();
    return 0;
}
