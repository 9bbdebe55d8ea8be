/* fuzz_opcua_msg.c — libFuzzer harness for the OPC UA message decoders in
 * src/south/opcua/ua_msg.c.
 *
 * Input layout: SELECTOR BYTE, then the bytes for the chosen decoder.
 *   0  ACK frame → ua_ack_parse          1  ERR frame → ua_err_parse
 *   2  OPN/MSG/CLO chunk → ua_frame_parse, then the chunk into a 64-byte
 *      reassembly buffer (limits exercised)
 *   3  a service response body; the next byte picks which response decoder
 *      (OpenSecureChannel, GetEndpoints, CreateSession, ActivateSession, Read
 *      with every DataValue, Write, Browse with every reference, Translate,
 *      CreateSubscription, CreateMonitoredItems, Publish with every
 *      notification, Republish)
 *   4  a browse path text → ua_path_parse
 *   5  MODE(2|3) then a secured MSG chunk → ua_sec_sym_open with fixed keys
 *      (mostly refused by the HMAC, but every length and padding path runs);
 *      an odd MODE byte with bit 1 set uses the Aes128_Sha256_RsaOaep keys
 *   6  a server certificate (DER) → ua_sec_check_cert (validity, host, URI)
 * Any crash or sanitizer report is a bug.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_opcua_msg /tmp/c tests/fuzz/corpus/opcua_msg
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "south/opcua/ua_msg.h"
#include "south/opcua/ua_secure.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void dv_cb(void *ctx, uint32_t handle, const struct ua_datavalue *dv)
{
    (void)ctx;
    (void)handle;
    char sb[64];
    struct fb_value v;
    ua_variant_to_fb(&dv->value, FB_T_NONE, &v, sb, sizeof sb);
}

static void response(uint8_t which, const uint8_t *p, size_t n)
{
    struct ua_resphdr h;
    struct ua_dec d;
    switch (which % 12) {
        case 0: {
            struct ua_token t;
            ua_opn_resp(p, n, &h, &t);
            break;
        }
        case 1: {
            struct ua_endpoint eps[4];
            uint32_t ne;
            ua_getendpoints_resp(p, n, &h, eps, 4, &ne);
            break;
        }
        case 2: {
            static struct ua_session s;
            ua_createsession_resp(p, n, &h, &s);
            break;
        }
        case 3: {
            struct ua_str sn;
            ua_activatesession_resp(p, n, &h, &sn);
            break;
        }
        case 4: {
            int32_t cnt;
            ua_dec_init(&d, p, n);
            if (ua_read_resp(&d, &h, &cnt) == 0)
                for (int32_t i = 0; i < cnt && !d.err; i++) {
                    struct ua_datavalue dv;
                    ua_get_datavalue(&d, &dv);
                    if (!d.err) dv_cb(NULL, 0, &dv);
                }
            break;
        }
        case 5: {
            uint32_t st;
            ua_write_resp(p, n, &h, &st);
            break;
        }
        case 6: {
            uint32_t st;
            struct ua_str cp;
            int32_t nr;
            ua_dec_init(&d, p, n);
            if (ua_browse_resp(&d, UA_ID_BROWSE_RESP, &h, &st, &cp, &nr) == 0)
                for (int32_t i = 0; i < nr && !d.err; i++) {
                    struct ua_ref r;
                    ua_get_ref(&d, &r);
                }
            break;
        }
        case 7: {
            int32_t cnt;
            ua_dec_init(&d, p, n);
            if (ua_translate_resp(&d, &h, &cnt) == 0)
                for (int32_t i = 0; i < cnt && !d.err; i++) {
                    uint32_t st;
                    struct ua_nodeid t;
                    ua_get_translate_result(&d, &st, &t);
                }
            break;
        }
        case 8: {
            uint32_t sid;
            struct ua_sub_params sp;
            ua_createsub_resp(p, n, &h, &sid, &sp);
            break;
        }
        case 9: {
            int32_t cnt;
            ua_dec_init(&d, p, n);
            if (ua_createmi_resp(&d, &h, &cnt) == 0)
                for (int32_t i = 0; i < cnt && !d.err; i++) {
                    uint32_t st, id;
                    ua_get_mi_result(&d, &st, &id);
                }
            break;
        }
        case 10:
        case 11: {
            struct ua_notif_msg m;
            ua_dec_init(&d, p, n);
            uint32_t expect = which % 12 == 10 ? UA_ID_PUBLISH_RESP : UA_ID_REPUBLISH_RESP;
            if (ua_publish_resp(&d, expect, &h, &m) == 0)
                for (int32_t i = 0; i < m.ndata && !d.err; i++) {
                    uint32_t sc;
                    if (ua_get_notification(&d, dv_cb, NULL, &sc) < 0) break;
                }
            break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 7) {
        case 0: {
            struct ua_limits l;
            ua_ack_parse(p, n, &l);
            break;
        }
        case 1: {
            uint32_t st;
            char reason[32];
            ua_err_parse(p, n, &st, reason, sizeof reason);
            break;
        }
        case 2: {
            struct ua_frame f;
            uint8_t buf[64];
            struct ua_reasm r = {.buf = buf, .cap = sizeof buf, .max_chunks = 4};
            if (ua_frame_parse(p, n, &f) == 0) {
                ua_reasm_add(&r, &f);
                ua_reasm_add(&r, &f);
            }
            break;
        }
        case 3:
            if (n) response(p[0], p + 1, n - 1);
            break;
        case 4: {
            char *s = malloc(n + 1);
            if (!s) return 0;
            memcpy(s, p, n);
            s[n] = 0;
            struct ua_relpath rp;
            if (ua_path_parse(s, &rp, NULL) == 0) ua_path_clear(&rp);
            struct ua_nodeid nid;
            if (ua_nodeid_parse(s, &nid, NULL) == 0) {
                char out[128];
                ua_nodeid_format(&nid, out, sizeof out);
                ua_nodeid_clear(&nid);
            }
            free(s);
            break;
        }
        case 5: {
            if (!n) break;
            static struct ua_sec sec;
            sec.mode = 2 + (p[0] & 1);
            sec.token = 1;
            sec.recv.enc_len = (p[0] & 2) ? 16 : 32;
            uint8_t *buf = malloc(n);
            if (!buf) return 0;
            memcpy(buf, p + 1, n - 1);
            uint32_t tok, seq, rid;
            const uint8_t *body;
            size_t bl;
            if (ua_sec_sym_open(&sec, buf, n - 1, &tok, &seq, &rid, &body, &bl) == 0 && body + bl > buf + n - 1)
                abort();
            free(buf);
            break;
        }
        case 6: {
            char warn[300];
            struct fb_err err = {0};
            ua_sec_check_cert(p, (int32_t)(n > 1000000 ? 1000000 : n), 1700000000, "127.0.0.1", "urn:x", false, warn,
                              sizeof warn, &err);
            break;
        }
    }
    return 0;
}
