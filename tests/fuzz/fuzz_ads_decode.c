/* fuzz_ads_decode.c — libFuzzer harness for every ADS decoder in
 * src/south/ads/ads_proto.c.
 *
 * Input layout: SELECTOR BYTE, then the bytes for the chosen decoder.
 *   0  a whole frame → ads_frame_len + ads_parse_hdr
 *   1  reply bodies → ads_parse_read / state / devinfo / addnote / handle /
 *      handle_ex (the type name must lie inside the input)
 *   2  notification stream → ads_parse_notes
 *   3  N (1 byte), N sub lengths (1 byte each), reply → ads_sum_read_parse,
 *      ads_sum_write_parse, ads_sum_rw_parse
 *   4  symbol upload, '\0', name → ads_sym_next over all (and
 *      ads_type_resolve of each entry alone, as a 0xF009 reply is used),
 *      ads_resolve(name) with the same bytes as data-type upload too
 *   5  ADDRESS '\n' VALUE-BYTES → ads_addr_parse (symbols and raw %M/%I/%Q
 *      addresses, ads_addr_raw_elem), ads_decode, ads_encode of the decoded
 *      value and decode again: the value must survive the trip
 *   6  UDP 48899 reply → ads_udp_parse
 * Any crash, sanitizer report or failed round trip is a bug.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_ads_decode /tmp/c tests/fuzz/corpus/ads_decode
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "south/ads/ads_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void note_cb(void *ctx, int64_t ts, uint32_t h, const uint8_t *d, uint32_t n)
{
    (void)ts, (void)h;
    volatile uint8_t x = 0;
    for (uint32_t i = 0; i < n; i++) x ^= d[i]; /* every byte must be readable */
    *(size_t *)ctx += x;
}

static void codec(const uint8_t *d, size_t n)
{
    char addr[300];
    size_t i = 0, k = 0;
    while (i < n && d[i] != '\n' && k < sizeof addr - 1) addr[k++] = (char)d[i++];
    addr[k] = 0;
    if (i < n) i++;
    struct ads_addr a;
    struct fb_err err = {0};
    if (ads_addr_parse(addr, &a, &err) || !a.typed) return;
    uint32_t io;
    if (a.raw && ads_addr_raw_elem(&a, (uint32_t)n, &io) == 0 && io < a.io) abort(); /* never wraps */
    static uint8_t raw[ADS_MAX_STRING + 9], out[ADS_MAX_STRING + 9];
    static char sbuf[2 * ADS_MAX_STRING + 32], sbuf2[2 * ADS_MAX_STRING + 32];
    memset(raw, 0, sizeof raw);
    size_t m = n - i < a.ti.size ? n - i : a.ti.size;
    memcpy(raw, d + i, m);
    struct fb_value v, v2;
    if (ads_decode(&a.ti, raw, a.ti.size, &v, sbuf, sizeof sbuf) != FB_Q_GOOD) return;
    int w = ads_encode(&a.ti, &v, out, sizeof out, &err);
    if (w < 0) abort(); /* what decodes must encode */
    if (ads_decode(&a.ti, out, (uint32_t)w, &v2, sbuf2, sizeof sbuf2) != FB_Q_GOOD) abort();
    if (!fb_value_equal(&v, &v2)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    uint32_t res, len, h, sz;
    const uint8_t *p;
    switch (data[0] % 7) {
        case 0: {
            struct ads_hdr hd;
            long fl = ads_frame_len(d, n);
            if (fl > 0 && (size_t)fl <= n) ads_parse_hdr(d, (size_t)fl, &hd);
            break;
        }
        case 1: {
            uint16_t a, b;
            struct ads_devinfo di;
            if (!ads_parse_read(d, n, &res, &p, &len) && p && (p < d || p + len > d + n)) abort();
            ads_parse_state(d, n, &res, &a, &b);
            ads_parse_devinfo(d, n, &res, &di);
            ads_parse_addnote(d, n, &res, &h);
            ads_parse_handle(d, n, &h, &sz);
            const char *tn;
            uint16_t tl;
            if (!ads_parse_handle_ex(d, n, &h, &sz, &tn, &tl) && tn &&
                ((const uint8_t *)tn < d || (const uint8_t *)tn + tl > d + n))
                abort();
            break;
        }
        case 2: {
            size_t acc = 0;
            ads_parse_notes(d, n, note_cb, &acc);
            break;
        }
        case 3: {
            if (n < 1) break;
            uint32_t cnt = d[0] % 16 + 1;
            if (n < 1 + cnt) break;
            struct ads_sub subs[16];
            for (uint32_t i = 0; i < cnt; i++) subs[i] = (struct ads_sub){0xF005, i, d[1 + i]};
            uint32_t r[16], lens[16];
            const uint8_t *dp[16];
            const uint8_t *body = d + 1 + cnt;
            size_t bn = n - 1 - cnt;
            if (!ads_sum_read_parse(body, bn, subs, cnt, r, dp))
                for (uint32_t i = 0; i < cnt; i++)
                    if (dp[i] && (dp[i] < body || dp[i] + subs[i].len > body + bn)) abort();
            ads_sum_write_parse(body, bn, cnt, r);
            if (!ads_sum_rw_parse(body, bn, cnt, r, dp, lens))
                for (uint32_t i = 0; i < cnt; i++)
                    if (dp[i] < body || dp[i] + lens[i] > body + bn) abort();
            break;
        }
        case 4: {
            const uint8_t *z = memchr(d, 0, n);
            size_t sl = z ? (size_t)(z - d) : n;
            char name[ADS_MAX_NAME + 1] = "MAIN.x";
            if (z) {
                size_t nl = n - sl - 1 < ADS_MAX_NAME ? n - sl - 1 : ADS_MAX_NAME;
                memcpy(name, z + 1, nl);
                name[nl] = 0;
            }
            size_t off = 0;
            struct ads_sym s;
            struct ads_tinfo ti;
            struct fb_err e = {0};
            char sub[32];
            while (ads_sym_next(d, sl, &off, &s) == 1) {
                if (off > sl) abort();
                ads_type_resolve(s.type, s.type_len, s.size, s.adstype, d, sl, 2, sub, sizeof sub, &ti, &e);
            }
            ads_resolve(d, sl, d, sl, name, -1, NULL, 0, &ti, &e);
            ads_resolve(d, sl, d, sl, name, 3, sub, sizeof sub, &ti, &e);
            break;
        }
        case 5: codec(d, n); break;
        case 6: {
            struct ads_udp_reply r;
            ads_udp_parse(d, n, &r);
            break;
        }
    }
    return 0;
}
