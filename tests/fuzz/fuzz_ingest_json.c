/* fuzz_ingest_json.c — libFuzzer harness for ingest's JSON telemetry reader
 * (north/ingest/decode.c).  Any input must be refused with a message or read
 * into a named batch that stays within its bounds: every name a NUL-
 * terminated string inside the arena, string values inside the arena, stats
 * indices valid, types known; and the batch must survive the store's codec.
 * The first byte picks type rules, so integer paths are reached too.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_ingest_json /tmp/c tests/fuzz/corpus/ingest_json
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch_codec.h"
#include "north/ingest/decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fb_batch *b, *d;
    static struct fb_buf enc;
    static struct fb_gateway gw;
    if (!b) b = fb_batch_new(32, 32, 2048);
    if (!size) return 0;
    static struct fb_ig_type_rule rules[] = {{NULL, "a*", FB_T_INT8},
                                             {NULL, "b*", FB_T_UINT64},
                                             {NULL, "c*", FB_T_INT64},
                                             {NULL, "d*", FB_T_FLOAT32},
                                             {NULL, "*", FB_T_UINT16}};
    struct fb_ig_types types = {rules, (uint32_t)(data[0] % 6)};
    const char *names[FB_BN__N] = {"g", "s", "a", "", "dev"};
    if (fb_ig_batch_begin(b, names, 0) < 0) abort();
    struct fb_err err = {0};
    int rc = fb_ig_telemetry(b, (const char *)data + 1, size - 1, &types, 1, &err);
    if (rc < 0) {
        if (!err.msg[0]) abort(); /* every refusal says why */
        return 0;
    }
    if (b->n > b->cap || b->arena_len > b->arena_cap || b->nstats > b->cap_stats) abort();
    for (uint32_t i = 0; i < b->n; i++) {
        const struct fb_sample *s = &b->s[i];
        if (s->tag >= b->arena_len || !memchr(b->arena + s->tag, 0, b->arena_len - s->tag)) abort();
        if (s->v.type >= FB_T__COUNT) abort();
        if (s->v.type == FB_T_STRING && s->v.s.len &&
            (s->v.s.p < b->arena || s->v.s.p + s->v.s.len > b->arena + b->arena_len))
            abort();
        if ((s->flags & FB_SF_STATS) && s->stats >= b->nstats) abort();
        if (fb_q_bad(s->quality) && s->v.type != FB_T_NONE) abort(); /* a bad value carries no value */
    }
    fb_buf_clear(&enc);
    fb_batch_encode(&enc, b, 0);
    if (fb_batch_decode(enc.p, enc.len, &gw, NULL, &d, NULL) != 0) abort();
    if (d->n != b->n) abort();
    return 0;
}
