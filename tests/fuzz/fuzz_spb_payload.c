/* fuzz_spb_payload.c — libFuzzer harness for Sparkplug B payloads as they
 * arrive from the network (NCMD/DCMD commands, spb-dump): the protobuf-c
 * decoder, the value/quality readers under every datatype, the readable
 * formatter and the command-to-JSON conversion must never crash, and a
 * decoded value re-encoded under its datatype must decode to the same value.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_spb_payload /tmp/c tests/fuzz/corpus/spb_payload
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "north/sparkplug/sparkplug.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fb_buf out, js, enc_out;
    static struct fb_spb_enc enc;
    spb_payload *p = fb_spb_decode(data, size);
    if (!p) return 0;
    fb_buf_clear(&out);
    fb_spb_format(&out, p, NULL, NULL);
    for (size_t i = 0; i < p->n_metrics; i++) {
        const spb_metric *m = p->metrics[i];
        int32_t q;
        (void)fb_spb_metric_quality(m, &q);
        for (uint32_t dt = 0; dt <= 20; dt++) {
            struct fb_value v;
            if (fb_spb_metric_value(m, dt, &v) != 0) continue;
            fb_buf_clear(&js);
            fb_spb_metric_json(&js, m, "x", dt, true);
            if (dt == 0 || v.type == FB_T_STRING) continue;
            /* round trip under the same datatype */
            fb_spb_enc_begin(&enc, 1, 0);
            spb_metric *e = fb_spb_enc_add(&enc, "x", 1, 1, dt);
            if (!e || fb_spb_enc_value(&enc, e, dt, &v) != 0) continue;
            fb_spb_enc_finish(&enc, &enc_out);
            spb_payload *p2 = fb_spb_decode(enc_out.p, enc_out.len);
            if (!p2 || p2->n_metrics != 1) abort();
            struct fb_value w;
            if (fb_spb_metric_value(p2->metrics[0], dt, &w) != 0) abort();
            if (!fb_type_is_float(v.type) && !fb_value_equal(&v, &w)) abort();
            fb_spb_free(p2);
        }
    }
    fb_spb_free(p);
    return 0;
}
