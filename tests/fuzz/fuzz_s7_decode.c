/* fuzz_s7_decode.c — libFuzzer harness for every S7 decoder in
 * src/south/s7/s7_proto.c: COTP/TPKT frames, the S7 header, the Setup
 * Communication, Read Var and Write Var replies, and the address parser with
 * the value codec.
 *
 * Input layout: SELECTOR BYTE, then the bytes for the chosen decoder.
 *   0  one TPKT frame → s7_cotp_parse
 *   1  S7 PDU → s7_parse_setup_reply
 *   2  NITEMS LEN×NITEMS(u8 each) PDU → s7_parse_read_reply (the request's
 *      item lengths come from the input, so mismatches are exercised too)
 *   3  NITEMS PDU → s7_parse_write_reply
 *   4  ADDRESS '\n' VALUE-BYTES → s7_addr_parse, s7_decode, s7_encode of the
 *      decoded value, and decode again: the value must survive the trip
 *   5  ADDRESS list (one per line) → plan build + layout at a PDU from byte 1
 * Any crash, sanitizer report or failed round trip is a bug.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_s7_decode /tmp/c tests/fuzz/corpus/s7
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "south/s7/s7_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void addr_codec(const uint8_t *d, size_t n)
{
    char addr[96];
    size_t i = 0, k = 0;
    while (i < n && d[i] != '\n' && k < sizeof addr - 1) addr[k++] = (char)d[i++];
    addr[k] = 0;
    if (i < n) i++;
    struct s7_addr a;
    struct fb_err err = {0};
    if (s7_addr_parse(addr, FB_T_NONE, 0, 0, &a, &err)) return;
    static uint8_t raw[4 + 2 * S7_MAX_WSTRING], out[4 + 2 * S7_MAX_WSTRING];
    static char sbuf[3 * S7_MAX_WSTRING + 16], sbuf2[3 * S7_MAX_WSTRING + 16];
    memset(raw, 0, a.size);
    memcpy(raw, d + i, n - i < a.size ? n - i : a.size);
    struct fb_value v, v2;
    if (s7_decode(&a, raw, &v, sbuf, sizeof sbuf) != FB_Q_GOOD) return;
    int rc = s7_encode(&a, &v, out, sizeof out, &err);
    if (v.type == FB_T_BOOL) { /* a BOOL is written as one 0/1 byte with a bit item */
        if (rc != 1 || out[0] != (uint8_t)v.b) abort();
        return;
    }
    if (rc < 0) {
        /* only text that cannot go back (U+FFFD from a lone surrogate is fine) */
        if (v.type != FB_T_STRING) abort();
        return;
    }
    if ((uint32_t)rc != a.size) abort();
    if (s7_decode(&a, out, &v2, sbuf2, sizeof sbuf2) != FB_Q_GOOD) abort();
    if (v.type == FB_T_STRING) {
        if (v.s.len != v2.s.len || memcmp(v.s.p, v2.s.p, v.s.len)) abort();
    } else if (!fb_value_equal(&v, &v2)) {
        abort();
    }
}

static void plan(const uint8_t *d, size_t n)
{
    if (n < 1) return;
    int pdu = S7_PDU_MIN + d[0] * 4;
    static struct s7_addr addrs[64];
    const struct s7_addr *ap[64];
    uint32_t ids[64], na = 0;
    char line[96];
    size_t k = 0;
    for (size_t i = 1; i <= n && na < 64; i++) {
        if (i == n || d[i] == '\n') {
            line[k] = 0;
            struct fb_err err = {0};
            if (k && s7_addr_parse(line, FB_T_NONE, 0, 0, &addrs[na], &err) == 0) {
                ap[na] = &addrs[na];
                ids[na] = na;
                na++;
            }
            k = 0;
        } else if (k < sizeof line - 1) {
            line[k++] = (char)d[i];
        }
    }
    struct s7_plan *p;
    struct fb_err err = {0};
    if (s7_plan_build(ids, ap, na, d[0] % 64, S7_MAX_ITEMS, &p, &err)) return;
    if (s7_plan_layout(p, pdu, &err) == 0) {
        for (uint32_t q = 0; q < p->nreqs; q++) {
            size_t reply = 14;
            for (uint32_t c = 0; c < p->reqs[q].n; c++)
                reply += s7_read_reply_item_size((uint16_t)p->chunks[p->reqs[q].first + c].len, c + 1 == p->reqs[q].n);
            if (reply > (size_t)pdu || s7_read_req_size(p->reqs[q].n) > (size_t)pdu) abort();
        }
        if (p->nranges) {
            s7_plan_split(p, 0);
            s7_plan_layout(p, pdu, &err);
        }
    }
    s7_plan_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    uint16_t herr;
    switch (data[0] % 6) {
        case 0: {
            struct s7_cotp c;
            if (s7_cotp_parse(d, n, &c) == 0 && c.kind == S7_COTP_DT &&
                (c.payload < d || c.payload + c.payload_len > d + n))
                abort();
            break;
        }
        case 1: {
            int pdu;
            s7_parse_setup_reply(d, n, 0x0001, &pdu, &herr);
            break;
        }
        case 2: {
            if (n < 1) break;
            unsigned nit = d[0] % (S7_MAX_ITEMS + 1);
            if (n < 1 + nit) break;
            struct s7_item it[S7_MAX_ITEMS];
            struct s7_read_result res[S7_MAX_ITEMS];
            for (unsigned i = 0; i < nit; i++) it[i] = (struct s7_item){.area = S7_AREA_DB, .db = 1, .len = d[1 + i]};
            const uint8_t *pdu = d + 1 + nit;
            size_t pl = n - 1 - nit;
            if (s7_parse_read_reply(pdu, pl, 0x0001, it, nit, res, &herr) == 0)
                for (unsigned i = 0; i < nit; i++)
                    if (res[i].rc == S7_RC_OK && (res[i].data < pdu || res[i].data + it[i].len > pdu + pl)) abort();
            break;
        }
        case 3: {
            if (n < 1) break;
            uint8_t rc[255];
            s7_parse_write_reply(d + 1, n - 1, 0x0001, d[0], rc, &herr);
            break;
        }
        case 4: addr_codec(d, n); break;
        default: plan(d, n); break;
    }
    return 0;
}
