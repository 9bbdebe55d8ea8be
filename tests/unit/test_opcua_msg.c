/* test_opcua_msg.c — UA TCP framing, secure-conversation chunks and the
 * service codecs (ua_msg.c) without sockets: golden frames from the spec
 * facts (PROTOCOLS.md §3), chunk reassembly with its limits, browse paths,
 * and every truncation of every valid response fed to its decoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "south/opcua/ua_msg.h"

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (h[0] && n < cap) {
        if (h[0] == ' ') {
            h++;
            continue;
        }
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
        h += 2;
    }
    return n;
}

static void test_hello_ack_err(void **state)
{
    (void)state;
    uint8_t b[128], want[128];
    struct ua_limits l = {0, 65536, 65536, 4194304, 0};
    size_t n = ua_hello_build(b, sizeof b, &l, "opc.tcp://h:4840");
    size_t wn = unhex("48454c46 30000000 00000000 00000100 00000100 00004000 00000000 10000000"
                      "6f70632e7463703a2f2f683a34383430",
                      want, sizeof want);
    assert_int_equal(n, wn);
    assert_memory_equal(b, want, n);
    assert_int_equal(ua_hello_build(b, 20, &l, "opc.tcp://h:4840"), 0);

    n = unhex("41434b46 1c000000 00000000 00200000 00200000 00000100 10000000", b, sizeof b);
    struct ua_limits a;
    assert_int_equal(ua_ack_parse(b, n, &a), 0);
    assert_int_equal(a.recv_buf, 8192);
    assert_int_equal(a.max_msg, 65536);
    assert_int_equal(a.max_chunks, 16);
    for (size_t k = 0; k < n; k++) assert_int_equal(ua_ack_parse(b, k, &a), FB_EPROTO);
    b[13] = 0x10; /* receive buffer 4096 < 8192: invalid */
    b[12] = 0;
    assert_int_equal(ua_ack_parse(b, n, &a), FB_EPROTO);

    n = unhex("45525246 1a000000 00003480 0a000000 6e6f0a73756368206964", b, sizeof b);
    uint32_t st;
    char reason[64];
    assert_int_equal(ua_err_parse(b, n, &st, reason, sizeof reason), 0);
    assert_int_equal(st, 0x80340000u);
    assert_string_equal(reason, "no such id"); /* control characters flattened */
    for (size_t k = 0; k < n; k++) assert_int_equal(ua_err_parse(b, k, &st, reason, sizeof reason), FB_EPROTO);
    char qb[16];
    assert_string_equal(ua_status_text(0x80340000u, qb), "BadNodeIdUnknown");
    assert_string_equal(ua_status_text(0x80AA0000u, qb), "0x80AA0000");

    char type[4], chunk;
    assert_int_equal(ua_hdr_peek((const uint8_t *)"MSGF\x20\x00\x00\x00", 8, 0, type, &chunk), 32);
    assert_int_equal(ua_hdr_peek((const uint8_t *)"MSGX\x20\x00\x00\x00", 8, 0, type, &chunk), FB_EPROTO);
    assert_int_equal(ua_hdr_peek((const uint8_t *)"XYZF\x20\x00\x00\x00", 8, 0, type, &chunk), FB_EPROTO);
    assert_int_equal(ua_hdr_peek((const uint8_t *)"MSGF\x04\x00\x00\x00", 8, 0, type, &chunk), FB_EPROTO);
    assert_int_equal(ua_hdr_peek((const uint8_t *)"MSGF\x00\x00\x01\x00", 8, 8192, type, &chunk), FB_EPROTO);
}

static void test_chunks(void **state)
{
    (void)state;
    uint8_t b[256], want[256];
    /* OPN with the None asymmetric header */
    size_t n = ua_chunk_build(b, sizeof b, "OPN", 'F', 0, 0, 1, 1, (const uint8_t *)"\xaa", 1);
    size_t wn = unhex("4f504e46 50000000 00000000 2f000000"
                      "687474703a2f2f6f7063666f756e646174696f6e2e6f72672f55412f5365637572697479506f6c696379234e6f6e65"
                      "ffffffff ffffffff 01000000 01000000 aa",
                      want, sizeof want);
    assert_int_equal(n, wn);
    assert_memory_equal(b, want, n);
    struct ua_frame f;
    assert_int_equal(ua_frame_parse(b, n, &f), 0);
    assert_int_equal(f.body_len, 1);
    assert_int_equal(f.policy_uri.len, 47);
    for (size_t k = 0; k < n; k++) assert_int_equal(ua_frame_parse(b, k, &f), FB_EPROTO);
    /* MSG: 24-byte header */
    n = ua_chunk_build(b, sizeof b, "MSG", 'C', 7, 9, 100, 5, (const uint8_t *)"xyz", 3);
    wn = unhex("4d534743 1b000000 07000000 09000000 64000000 05000000 78797a", want, sizeof want);
    assert_int_equal(n, wn);
    assert_memory_equal(b, want, n);
    assert_int_equal(ua_frame_parse(b, n, &f), 0);
    assert_int_equal(f.channel_id, 7);
    assert_int_equal(f.token_id, 9);
    assert_int_equal(f.seq, 100);
    assert_int_equal(f.req_id, 5);
    assert_int_equal(f.chunk, 'C');
    assert_int_equal(ua_chunk_room("MSG", 8192), 8192 - 24);
    assert_int_equal(ua_chunk_build(b, 20, "MSG", 'F', 1, 1, 1, 1, (const uint8_t *)"xyz", 3), 0);
}

static struct ua_frame mkframe(char chunk, uint32_t rid, const char *body)
{
    struct ua_frame f = {.chunk = chunk, .req_id = rid, .body = (const uint8_t *)body, .body_len = strlen(body)};
    memcpy(f.type, "MSG", 4);
    return f;
}

static void test_reassembly(void **state)
{
    (void)state;
    uint8_t buf[16];
    struct ua_reasm r = {.buf = buf, .cap = sizeof buf, .max_chunks = 3};
    struct ua_frame a = mkframe('C', 1, "abc"), b = mkframe('C', 1, "def"), c = mkframe('F', 1, "gh");
    assert_int_equal(ua_reasm_add(&r, &a), 0);
    assert_int_equal(ua_reasm_add(&r, &b), 0);
    assert_int_equal(ua_reasm_add(&r, &c), 1);
    assert_int_equal(r.len, 8);
    assert_memory_equal(r.buf, "abcdefgh", 8);
    /* too many chunks */
    struct ua_frame d = mkframe('C', 2, "a");
    for (int i = 0; i < 3; i++) assert_int_equal(ua_reasm_add(&r, &d), 0);
    assert_int_equal(ua_reasm_add(&r, &d), FB_ERANGE);
    /* too many bytes */
    r.max_chunks = 0;
    struct ua_frame big = mkframe('C', 3, "0123456789");
    assert_int_equal(ua_reasm_add(&r, &big), 0);
    assert_int_equal(ua_reasm_add(&r, &big), FB_ERANGE);
    /* a chunk of another request in the middle */
    struct ua_frame x = mkframe('C', 4, "a"), y = mkframe('F', 5, "b");
    assert_int_equal(ua_reasm_add(&r, &x), 0);
    assert_int_equal(ua_reasm_add(&r, &y), FB_EPROTO);
    /* abort drops the partial message; the next one starts clean */
    struct ua_frame ab = mkframe('A', 6, "\x00\x00\x0a\x80");
    assert_int_equal(ua_reasm_add(&r, &x), 0);
    assert_int_equal(ua_reasm_add(&r, &ab), FB_EEXCEPTION);
    struct ua_frame z = mkframe('F', 7, "zz");
    assert_int_equal(ua_reasm_add(&r, &z), 1);
    assert_int_equal(r.len, 2);
}

/* ---- responses built with the encoder, then every truncation decoded ---- */
static void resphdr(struct ua_enc *e, uint32_t id, uint32_t result)
{
    ua_put_nodeid_num(e, 0, id);
    ua_put_u64(e, 0);
    ua_put_u32(e, 1);
    ua_put_u32(e, result);
    ua_put_u8(e, 0);  /* diagnostics */
    ua_put_i32(e, 0); /* string table */
    ua_put_nodeid_num(e, 0, 0);
    ua_put_u8(e, 0);
}

static void put_endpoint(struct ua_enc *e)
{
    ua_put_cstr(e, "opc.tcp://h:4840");
    ua_put_cstr(e, "urn:server"); /* ApplicationDescription */
    ua_put_cstr(e, "urn:product");
    ua_put_u8(e, 2);
    ua_put_cstr(e, "Server");
    ua_put_u32(e, 0);
    ua_put_i32(e, -1);
    ua_put_i32(e, -1);
    ua_put_i32(e, 1);
    ua_put_cstr(e, "opc.tcp://h:4840");
    ua_put_str(e, "\x30\x82", 2); /* certificate */
    ua_put_u32(e, 1);
    ua_put_cstr(e, UA_POLICY_NONE);
    ua_put_i32(e, 2);
    ua_put_cstr(e, "anon");
    ua_put_u32(e, 0);
    ua_put_i32(e, -1);
    ua_put_i32(e, -1);
    ua_put_i32(e, -1);
    ua_put_cstr(e, "user");
    ua_put_u32(e, 1);
    ua_put_i32(e, -1);
    ua_put_i32(e, -1);
    ua_put_cstr(e, UA_POLICY_B256S256);
    ua_put_cstr(e, "http://opcfoundation.org/UA-Profile/Transport/uatcp-uasc-uabinary");
    ua_put_u8(e, 1);
}

typedef int (*decode_fn)(const uint8_t *p, size_t n);

static void every_truncation(const uint8_t *p, size_t n, decode_fn fn)
{
    assert_int_equal(fn(p, n), 0);
    for (size_t k = 0; k < n; k++) {
        int rc = fn(p, k);
        if (rc != FB_EPROTO) fprintf(stderr, "truncation %zu/%zu gave %d\n", k, n, rc);
        assert_int_equal(rc, FB_EPROTO);
    }
}

static int dec_opn(const uint8_t *p, size_t n)
{
    struct ua_resphdr h;
    struct ua_token t;
    int rc = ua_opn_resp(p, n, &h, &t);
    if (!rc) assert_int_equal(t.lifetime_ms, 600000);
    return rc;
}
static int dec_endpoints(const uint8_t *p, size_t n)
{
    struct ua_resphdr h;
    struct ua_endpoint eps[4];
    uint32_t ne;
    int rc = ua_getendpoints_resp(p, n, &h, eps, 4, &ne);
    if (!rc) {
        assert_int_equal(ne, 1);
        assert_int_equal(eps[0].ntokens, 2);
        assert_int_equal(eps[0].tokens[1].type, 1);
        assert_int_equal(eps[0].cert.len, 2);
    }
    return rc;
}
static int dec_session(const uint8_t *p, size_t n)
{
    struct ua_resphdr h;
    static struct ua_session s;
    int rc = ua_createsession_resp(p, n, &h, &s);
    if (!rc) {
        assert_int_equal(s.auth_token.kind, UA_NID_GUID);
        assert_int_equal(s.neps, 1);
        assert_int_equal(s.server_nonce.len, 32);
    }
    return rc;
}
static int dec_activate(const uint8_t *p, size_t n)
{
    struct ua_resphdr h;
    struct ua_str sn;
    return ua_activatesession_resp(p, n, &h, &sn);
}
static int dec_read(const uint8_t *p, size_t n)
{
    struct ua_dec d;
    ua_dec_init(&d, p, n);
    struct ua_resphdr h;
    int32_t cnt;
    int rc = ua_read_resp(&d, &h, &cnt);
    if (rc) return rc;
    for (int32_t i = 0; i < cnt; i++) {
        struct ua_datavalue dv;
        ua_get_datavalue(&d, &dv);
    }
    ua_skip_array(&d, UA_DIAGINFO);
    return d.err ? FB_EPROTO : 0;
}
static int dec_browse(const uint8_t *p, size_t n)
{
    struct ua_dec d;
    ua_dec_init(&d, p, n);
    struct ua_resphdr h;
    uint32_t st;
    struct ua_str cp;
    int32_t nr;
    int rc = ua_browse_resp(&d, UA_ID_BROWSE_RESP, &h, &st, &cp, &nr);
    if (rc) return rc;
    for (int32_t i = 0; i < nr; i++) {
        struct ua_ref r;
        ua_get_ref(&d, &r);
        if (!d.err) assert_int_equal(r.node_class, 2);
    }
    ua_skip_array(&d, UA_DIAGINFO);
    return d.err ? FB_EPROTO : 0;
}
static int dec_translate(const uint8_t *p, size_t n)
{
    struct ua_dec d;
    ua_dec_init(&d, p, n);
    struct ua_resphdr h;
    int32_t cnt;
    int rc = ua_translate_resp(&d, &h, &cnt);
    if (rc) return rc;
    for (int32_t i = 0; i < cnt; i++) {
        uint32_t st;
        struct ua_nodeid t;
        ua_get_translate_result(&d, &st, &t);
    }
    ua_skip_array(&d, UA_DIAGINFO);
    return d.err ? FB_EPROTO : 0;
}
static uint32_t notif_count;
static void count_cb(void *ctx, uint32_t handle, const struct ua_datavalue *dv)
{
    (void)ctx;
    (void)dv;
    notif_count += handle;
}
static int dec_publish(const uint8_t *p, size_t n)
{
    struct ua_dec d;
    ua_dec_init(&d, p, n);
    struct ua_resphdr h;
    struct ua_notif_msg m;
    int rc = ua_publish_resp(&d, UA_ID_PUBLISH_RESP, &h, &m);
    if (rc) return rc;
    notif_count = 0;
    for (int32_t i = 0; i < m.ndata; i++) {
        uint32_t sc;
        if (ua_get_notification(&d, count_cb, NULL, &sc) < 0) return FB_EPROTO;
    }
    ua_skip_array(&d, UA_STATUSCODE);
    ua_skip_array(&d, UA_DIAGINFO);
    return d.err ? FB_EPROTO : 0;
}

static void test_responses(void **state)
{
    (void)state;
    static uint8_t b[4096];
    struct ua_enc e;
    /* OpenSecureChannel */
    ua_enc_init(&e, b, sizeof b);
    resphdr(&e, UA_ID_OPN_RESP, 0);
    ua_put_u32(&e, 0);
    ua_put_u32(&e, 5);
    ua_put_u32(&e, 1);
    ua_put_u64(&e, 0);
    ua_put_u32(&e, 600000);
    ua_put_str(&e, "", 0);
    every_truncation(b, e.len, dec_opn);
    /* GetEndpoints */
    ua_enc_init(&e, b, sizeof b);
    resphdr(&e, UA_ID_GETENDPOINTS_RESP, 0);
    ua_put_i32(&e, 1);
    put_endpoint(&e);
    every_truncation(b, e.len, dec_endpoints);
    /* CreateSession */
    ua_enc_init(&e, b, sizeof b);
    resphdr(&e, UA_ID_CREATESESSION_RESP, 0);
    ua_put_nodeid_num(&e, 1, 77);
    struct ua_nodeid tok = {.kind = UA_NID_GUID, .ns = 1};
    ua_put_nodeid(&e, &tok);
    ua_put_f64(&e, 60000);
    ua_put_str(&e, "0123456789abcdef0123456789abcdef", 32);
    ua_put_str(&e, "\x30\x82", 2);
    ua_put_i32(&e, 1);
    put_endpoint(&e);
    ua_put_i32(&e, 0);
    ua_put_i32(&e, -1);
    ua_put_i32(&e, -1);
    ua_put_u32(&e, 0);
    every_truncation(b, e.len, dec_session);
    /* ActivateSession */
    ua_enc_init(&e, b, sizeof b);
    resphdr(&e, UA_ID_ACTIVATESESSION_RESP, 0);
    ua_put_str(&e, "n", 1);
    ua_put_i32(&e, 0);
    ua_put_i32(&e, 0);
    every_truncation(b, e.len, dec_activate);
    /* Read: a Double with timestamps, a bad status, a string array */
    ua_enc_init(&e, b, sizeof b);
    resphdr(&e, UA_ID_READ_RESP, 0);
    ua_put_i32(&e, 3);
    struct ua_datavalue dv = {.mask = UA_DV_VALUE | UA_DV_SRC_TS | UA_DV_SRV_TS,
                              .value = {.type = UA_DOUBLE, .v.f = 2.5},
                              .src_ts = 5,
                              .srv_ts = 6};
    ua_put_datavalue(&e, &dv);
    struct ua_datavalue bad = {.mask = UA_DV_STATUS, .status = 0x80340000u};
    ua_put_datavalue(&e, &bad);
    uint8_t elems[32];
    struct ua_enc ee;
    ua_enc_init(&ee, elems, sizeof elems);
    ua_put_cstr(&ee, "a");
    ua_put_cstr(&ee, "bb");
    struct ua_datavalue arr = {
        .mask = UA_DV_VALUE,
        .value = {.type = UA_STRING, .is_array = true, .count = 2, .arr = elems, .arr_len = ee.len}};
    ua_put_datavalue(&e, &arr);
    ua_put_i32(&e, 0);
    every_truncation(b, e.len, dec_read);
    /* ServiceFault instead of a Read response */
    uint8_t f[64];
    struct ua_enc fe;
    ua_enc_init(&fe, f, sizeof f);
    resphdr(&fe, UA_ID_SERVICE_FAULT, 0x80250000u);
    struct ua_dec d;
    ua_dec_init(&d, f, fe.len);
    struct ua_resphdr h;
    int32_t cnt;
    assert_int_equal(ua_read_resp(&d, &h, &cnt), FB_EEXCEPTION);
    assert_int_equal(h.result, 0x80250000u);
    /* the wrong response type */
    ua_enc_init(&fe, f, sizeof f);
    resphdr(&fe, UA_ID_WRITE_RESP, 0);
    ua_dec_init(&d, f, fe.len);
    assert_int_equal(ua_read_resp(&d, &h, &cnt), FB_EPROTO);
    /* Browse: one reference with continuation point */
    ua_enc_init(&e, b, sizeof b);
    resphdr(&e, UA_ID_BROWSE_RESP, 0);
    ua_put_i32(&e, 1);
    ua_put_u32(&e, 0);
    ua_put_str(&e, "cp", 2);
    ua_put_i32(&e, 1);
    ua_put_nodeid_num(&e, 0, 47);
    ua_put_bool(&e, true);
    ua_put_u8(&e, 0x40); /* expanded with server index 0 */
    ua_put_u8(&e, 9);
    ua_put_u32(&e, 0);
    struct ua_qname qn = {1, {"Temp", 4}};
    ua_put_qname(&e, &qn);
    struct ua_ltext lt = {{NULL, -1}, {"Temp", 4}};
    ua_put_ltext(&e, &lt);
    ua_put_u32(&e, 2);
    ua_put_nodeid_num(&e, 0, 63);
    ua_put_i32(&e, 0);
    every_truncation(b, e.len, dec_browse);
    /* TranslateBrowsePaths: one found, one not */
    ua_enc_init(&e, b, sizeof b);
    resphdr(&e, UA_ID_TRANSLATE_RESP, 0);
    ua_put_i32(&e, 2);
    ua_put_u32(&e, 0);
    ua_put_i32(&e, 1);
    ua_put_nodeid_num(&e, 2, 5000);
    ua_put_u32(&e, 0xFFFFFFFFu);
    ua_put_u32(&e, 0x806F0000u);
    ua_put_i32(&e, 0);
    ua_put_i32(&e, 0);
    every_truncation(b, e.len, dec_translate);
    /* Publish with a DataChangeNotification of two items */
    ua_enc_init(&e, b, sizeof b);
    resphdr(&e, UA_ID_PUBLISH_RESP, 0);
    ua_put_u32(&e, 1); /* subscription */
    ua_put_i32(&e, 1); /* available seqs */
    ua_put_u32(&e, 3);
    ua_put_bool(&e, false);
    ua_put_u32(&e, 3); /* seq */
    ua_put_u64(&e, 0);
    ua_put_i32(&e, 1);
    ua_put_nodeid_num(&e, 0, UA_ID_DATACHANGE_NOTIF);
    ua_put_u8(&e, 1);
    uint8_t body[128];
    struct ua_enc be;
    ua_enc_init(&be, body, sizeof body);
    ua_put_i32(&be, 2);
    ua_put_u32(&be, 4);
    ua_put_datavalue(&be, &dv);
    ua_put_u32(&be, 6);
    ua_put_datavalue(&be, &dv);
    ua_put_i32(&be, 0);
    ua_put_str(&e, (const char *)body, (int32_t)be.len);
    ua_put_i32(&e, 0);
    ua_put_i32(&e, 0);
    every_truncation(b, e.len, dec_publish);
    dec_publish(b, e.len);
    assert_int_equal(notif_count, 10);
}

static void test_requests(void **state)
{
    (void)state;
    uint8_t b[512], want[512];
    struct ua_enc e;
    struct ua_nodeid node = {.ns = 0, .num = 2258};
    struct ua_readid ids[1] = {{&node, UA_ATTR_VALUE}};
    struct ua_reqhdr h = {.handle = 1, .timeout_ms = 1000, .ts = 0};
    ua_enc_init(&e, b, sizeof b);
    ua_read_req(&e, &h, 2, ids, 1);
    size_t n = unhex("01007702"                                                         /* Read */
                     "0000 0000000000000000 01000000 00000000 ffffffff e8030000 000000" /* header */
                     "0000000000000000 02000000 01000000 0100d208 0d000000 ffffffff 0000 ffffffff",
                     want, sizeof want);
    assert_int_equal(e.len, n);
    assert_memory_equal(b, want, n);
    /* the header and body fit exactly or the encoder says no */
    for (size_t cap = 0; cap < n; cap++) {
        ua_enc_init(&e, b, cap);
        ua_read_req(&e, &h, 2, ids, 1);
        assert_true(e.err);
    }
    /* ActivateSession: anonymous token as an ExtensionObject 321 */
    ua_enc_init(&e, b, sizeof b);
    ua_activatesession_req(&e, &h, "anon", NULL, NULL, 0, NULL);
    n = unhex("0100d301 0000 0000000000000000 01000000 00000000 ffffffff e8030000 000000"
              "ffffffff ffffffff 00000000 00000000 01004101 01 08000000 04000000 616e6f6e ffffffff ffffffff",
              want, sizeof want);
    assert_int_equal(e.len, n);
    assert_memory_equal(b, want, n);
    /* ActivateSession: X509IdentityToken (ExtensionObject 327: policy id, certificate) and the user token signature */
    const uint8_t ucert[2] = {0xaa, 0xbb}, usig[2] = {1, 2};
    struct ua_identity id = {
        .policy_id = "x509", .cert = ucert, .cert_len = 2, .usig_alg = "a", .usig = usig, .usig_len = 2};
    ua_enc_init(&e, b, sizeof b);
    ua_activatesession_req_id(&e, &h, NULL, NULL, 0, &id);
    n = unhex("0100d301 0000 0000000000000000 01000000 00000000 ffffffff e8030000 000000"
              "ffffffff ffffffff 00000000 00000000 01004701 01 0e000000 04000000 78353039 02000000 aabb"
              "01000000 61 02000000 0102",
              want, sizeof want);
    assert_int_equal(e.len, n);
    assert_memory_equal(b, want, n);
    /* CreateMonitoredItems with a Percent deadband (DataChangeFilter 724, trigger StatusValue, type 2, 10 %) */
    struct ua_mon_item mi = {
        .node = &node, .handle = 5, .sampling_ms = 100, .queue = 10, .deadband_type = 2, .deadband = 10};
    ua_enc_init(&e, b, sizeof b);
    ua_createmi_req(&e, &h, 7, &mi, 1);
    n = unhex("0100ef02 0000 0000000000000000 01000000 00000000 ffffffff e8030000 000000"
              "07000000 02000000 01000000 0100d208 0d000000 ffffffff 0000 ffffffff 02000000 05000000"
              "0000000000005940 0100d402 01 10000000 01000000 02000000 0000000000002440 0a000000 01",
              want, sizeof want);
    assert_int_equal(e.len, n);
    assert_memory_equal(b, want, n);
    /* OpenSecureChannel issue, None, 1 h */
    ua_enc_init(&e, b, sizeof b);
    ua_opn_req(&e, &h, 0, 1, 3600000);
    n = unhex("0100be01 0000 0000000000000000 01000000 00000000 ffffffff e8030000 000000"
              "00000000 00000000 01000000 00000000 80ee3600",
              want, sizeof want);
    assert_int_equal(e.len, n);
    assert_memory_equal(b, want, n);
}

static void test_paths(void **state)
{
    (void)state;
    struct ua_relpath p;
    struct fb_err err = {0};
    assert_int_equal(ua_path_parse("/Objects/2:Demo/2:Temp", &p, &err), 0);
    assert_int_equal(p.start, 85);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.el[0].ns, 2);
    assert_int_equal(p.el[1].name.len, 4);
    ua_path_clear(&p);
    assert_int_equal(ua_path_parse("/Root/Objects/Server", &p, &err), 0);
    assert_int_equal(p.start, 84);
    assert_int_equal(p.n, 2);
    ua_path_clear(&p);
    assert_int_equal(ua_path_parse("/Objects/Name:with:colons", &p, &err), 0);
    assert_int_equal(p.el[0].ns, 0);
    assert_int_equal(p.el[0].name.len, 16);
    ua_path_clear(&p);
    assert_int_equal(ua_path_parse("Objects/X", &p, &err), FB_EINVAL);
    assert_int_equal(ua_path_parse("/Objects//X", &p, &err), FB_EINVAL);
    assert_int_equal(ua_path_parse("/Objects", &p, &err), FB_EINVAL);
    char longp[400] = "/Objects";
    for (int i = 0; i < 40; i++) strcat(longp, "/a");
    assert_int_equal(ua_path_parse(longp, &p, &err), FB_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_ack_err), cmocka_unit_test(test_chunks),   cmocka_unit_test(test_reassembly),
        cmocka_unit_test(test_responses),     cmocka_unit_test(test_requests), cmocka_unit_test(test_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
