/* fuzz_opcua_variant.c — libFuzzer harness for the OPC UA Variant and
 * DataValue decoders (src/south/opcua/ua_types.c).
 *
 * Input: FLAG BYTE, then an encoded Variant (flag bit 0 clear) or DataValue
 * (bit 0 set).  Every decoded scalar is converted to each fieldbridge type;
 * every element of a decoded array is decoded; and a scalar of a type the
 * client can send is encoded again and must decode to the same bytes.
 * Any crash, sanitizer report or failed round trip is a bug.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_opcua_variant /tmp/c tests/fuzz/corpus/opcua_variant
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "south/opcua/ua_types.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool sendable(uint8_t t)
{
    return (t >= UA_BOOLEAN && t <= UA_NODEID) || t == UA_STATUSCODE || t == UA_QNAME || t == UA_LTEXT;
}

static void check(const struct ua_variant *v)
{
    char sb[96];
    struct fb_value fv;
    for (int t = FB_T_NONE; t < FB_T__COUNT; t++) ua_variant_to_fb(v, (enum fb_type)t, &fv, sb, sizeof sb);
    if (v->is_array) {
        for (int32_t k = 0; k < v->count && k < 64; k++) {
            struct ua_variant el;
            if (ua_variant_elem(v, k, &el) == 0) ua_variant_to_fb(&el, FB_T_NONE, &fv, sb, sizeof sb);
        }
        return;
    }
    if (!sendable(v->type)) return;
    /* re-encode and decode: the same value must come back */
    static uint8_t a[70000], b[70000];
    struct ua_enc e;
    ua_enc_init(&e, a, sizeof a);
    ua_put_variant(&e, v);
    if (e.err) return;
    struct ua_dec d;
    ua_dec_init(&d, a, e.len);
    struct ua_variant back;
    ua_get_variant(&d, &back);
    if (d.err || d.pos != e.len) abort();
    struct ua_enc e2;
    ua_enc_init(&e2, b, sizeof b);
    ua_put_variant(&e2, &back);
    if (e2.err || e2.len != e.len || memcmp(a, b, e.len)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    struct ua_dec d;
    ua_dec_init(&d, data + 1, size - 1);
    if (data[0] & 1) {
        struct ua_datavalue dv;
        ua_get_datavalue(&d, &dv);
        if (!d.err && (dv.mask & UA_DV_VALUE)) check(&dv.value);
    } else {
        struct ua_variant v;
        ua_get_variant(&d, &v);
        if (!d.err) check(&v);
    }
    return 0;
}
