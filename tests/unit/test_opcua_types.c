/* test_opcua_types.c — the OPC UA built-in type codec (ua_types.c) without
 * sockets: an encode → decode round trip of every built-in scalar and of
 * arrays inside a Variant, golden bytes from the spec (PROTOCOLS.md §3),
 * every truncation of every valid encoding refused, node id text forms,
 * and the conversions to and from fieldbridge values. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "south/opcua/ua_types.h"

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

static struct ua_str S(const char *s) {
    return (struct ua_str){s, (int32_t)strlen(s)};
}

/* One scalar of each builtin a client may send. */
static struct ua_variant
sample(uint8_t type)
{
    struct ua_variant v;
    memset(&v, 0, sizeof v);
    v.type = type;
    switch (type) {
        case UA_BOOLEAN: v.v.b = true; break;
        case UA_SBYTE: v.v.i = -100; break;
        case UA_BYTE: v.v.u = 250; break;
        case UA_INT16: v.v.i = -30000; break;
        case UA_UINT16: v.v.u = 65000; break;
        case UA_INT32: v.v.i = INT32_MIN; break;
        case UA_UINT32: v.v.u = UINT32_MAX; break;
        case UA_INT64: v.v.i = INT64_MIN + 1; break;
        case UA_UINT64: v.v.u = UINT64_MAX - 1; break;
        case UA_FLOAT: v.v.f = 21.5; break;
        case UA_DOUBLE: v.v.f = -1.0 / 3.0; break;
        case UA_STRING: v.v.s = S("hello wörld"); break;
        case UA_DATETIME: v.v.dt = 133537698451230000LL; break;
        case UA_GUID: ua_guid_parse("72962b91-fa75-4ae6-8d28-b404dc7daf63", v.v.guid); break;
        case UA_BYTESTRING: v.v.s = (struct ua_str){"\x00\xff\x10", 3}; break;
        case UA_XML: v.v.s = S("<a/>"); break;
        case UA_NODEID:
            v.v.nid.ns = 2;
            v.v.nid.kind = UA_NID_STRING;
            v.v.nid.str = "Channel1.Temp";
            v.v.nid.slen = 13;
            break;
        case UA_STATUSCODE: v.v.u = 0x80340000u; break;
        case UA_QNAME:
            v.v.qn.ns = 3;
            v.v.qn.name = S("Demo");
            break;
        case UA_LTEXT:
            v.v.lt.locale = S("en");
            v.v.lt.text = S("Pump");
            break;
        default: break;
    }
    return v;
}

static const uint8_t scalar_types[] = {UA_BOOLEAN, UA_SBYTE,  UA_BYTE,       UA_INT16,  UA_UINT16,
                                       UA_INT32,   UA_UINT32, UA_INT64,      UA_UINT64, UA_FLOAT,
                                       UA_DOUBLE,  UA_STRING, UA_DATETIME,   UA_GUID,   UA_BYTESTRING,
                                       UA_XML,     UA_NODEID, UA_STATUSCODE, UA_QNAME,  UA_LTEXT};

static bool str_eq(struct ua_str a, struct ua_str b)
{
    return a.len == b.len && (a.len <= 0 || !memcmp(a.p, b.p, (size_t)a.len));
}

static void assert_same(const struct ua_variant *a, const struct ua_variant *b)
{
    assert_int_equal(a->type, b->type);
    switch (a->type) {
        case UA_BOOLEAN: assert_int_equal(a->v.b, b->v.b); break;
        case UA_SBYTE:
        case UA_INT16:
        case UA_INT32:
        case UA_INT64: assert_true(a->v.i == b->v.i); break;
        case UA_BYTE:
        case UA_UINT16:
        case UA_UINT32:
        case UA_UINT64:
        case UA_STATUSCODE: assert_true(a->v.u == b->v.u); break;
        case UA_FLOAT: assert_true((float)a->v.f == (float)b->v.f); break;
        case UA_DOUBLE: assert_true(a->v.f == b->v.f); break;
        case UA_DATETIME: assert_true(a->v.dt == b->v.dt); break;
        case UA_STRING:
        case UA_BYTESTRING:
        case UA_XML: assert_true(str_eq(a->v.s, b->v.s)); break;
        case UA_GUID: assert_memory_equal(a->v.guid, b->v.guid, 16); break;
        case UA_NODEID: assert_true(ua_nodeid_equal(&a->v.nid, &b->v.nid)); break;
        case UA_QNAME:
            assert_int_equal(a->v.qn.ns, b->v.qn.ns);
            assert_true(str_eq(a->v.qn.name, b->v.qn.name));
            break;
        case UA_LTEXT:
            assert_true(str_eq(a->v.lt.locale, b->v.lt.locale));
            assert_true(str_eq(a->v.lt.text, b->v.lt.text));
            break;
        default: fail();
    }
}

/* Every prefix shorter than the encoding must be refused by the decoder. */
static void truncations(const uint8_t *p, size_t n, void (*dec)(struct ua_dec *d))
{
    for (size_t k = 0; k < n; k++) {
        struct ua_dec d;
        ua_dec_init(&d, p, k);
        dec(&d);
        if (!d.err) fprintf(stderr, "truncation to %zu of %zu accepted\n", k, n);
        assert_true(d.err);
    }
}

static void dec_variant(struct ua_dec *d)
{
    struct ua_variant v;
    ua_get_variant(d, &v);
}
static void dec_datavalue(struct ua_dec *d)
{
    struct ua_datavalue v;
    ua_get_datavalue(d, &v);
}

static void test_scalar_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof scalar_types; i++) {
        struct ua_variant v = sample(scalar_types[i]), out;
        uint8_t buf[256];
        struct ua_enc e;
        ua_enc_init(&e, buf, sizeof buf);
        ua_put_variant(&e, &v);
        assert_false(e.err);
        if (ua_builtin[v.type].fixed) assert_int_equal(e.len, 1 + ua_builtin[v.type].fixed);
        struct ua_dec d;
        ua_dec_init(&d, buf, e.len);
        ua_get_variant(&d, &out);
        assert_false(d.err);
        assert_int_equal(d.pos, e.len);
        assert_same(&v, &out);
        truncations(buf, e.len, dec_variant);
        /* the encoder refuses to overflow at every size too */
        for (size_t cap = 0; cap < e.len; cap++) {
            struct ua_enc e2;
            ua_enc_init(&e2, buf, cap);
            ua_put_variant(&e2, &v);
            assert_true(e2.err);
        }
    }
}

static void test_array_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof scalar_types; i++) {
        struct ua_variant v = sample(scalar_types[i]);
        uint8_t elems[512], buf[600];
        struct ua_enc e;
        ua_enc_init(&e, elems, sizeof elems);
        for (int k = 0; k < 3; k++) { /* three encoded scalars */
            uint8_t tmp[200];
            struct ua_enc t;
            ua_enc_init(&t, tmp, sizeof tmp);
            ua_put_variant(&t, &v);
            ua_put_raw(&e, tmp + 1, t.len - 1);
        }
        struct ua_variant arr = {.type = v.type, .is_array = true, .count = 3, .arr = elems, .arr_len = e.len};
        struct ua_enc e2;
        ua_enc_init(&e2, buf, sizeof buf);
        ua_put_variant(&e2, &arr);
        assert_false(e2.err);
        struct ua_dec d;
        ua_dec_init(&d, buf, e2.len);
        struct ua_variant out, el;
        ua_get_variant(&d, &out);
        assert_false(d.err);
        assert_true(out.is_array);
        assert_int_equal(out.count, 3);
        for (int k = 0; k < 3; k++) {
            assert_int_equal(ua_variant_elem(&out, k, &el), 0);
            assert_same(&v, &el);
        }
        assert_int_equal(ua_variant_elem(&out, 3, &el), FB_ERANGE);
        assert_int_equal(ua_variant_elem(&out, -1, &el), FB_ERANGE);
        truncations(buf, e2.len, dec_variant);
    }
}

static void test_golden(void **state)
{
    (void)state;
    uint8_t buf[64], want[64];
    struct ua_enc e;
    /* Read's encoding id: four-byte node id 01 00 77 02 */
    ua_enc_init(&e, buf, sizeof buf);
    ua_put_nodeid_num(&e, 0, 631);
    assert_memory_equal(buf, "\x01\x00\x77\x02", 4);
    /* two-byte, numeric */
    ua_enc_init(&e, buf, sizeof buf);
    ua_put_nodeid_num(&e, 0, 85);
    ua_put_nodeid_num(&e, 300, 70000);
    size_t n = unhex("0055 02 2c01 70110100", want, sizeof want);
    assert_int_equal(e.len, n);
    assert_memory_equal(buf, want, n);
    /* string node id ns=2;s=AB and a null string */
    struct ua_nodeid sid;
    assert_int_equal(ua_nodeid_parse("ns=2;s=AB", &sid, NULL), 0);
    ua_enc_init(&e, buf, sizeof buf);
    ua_put_nodeid(&e, &sid);
    ua_put_str(&e, NULL, -1);
    n = unhex("03 0200 02000000 4142 ffffffff", want, sizeof want);
    assert_int_equal(e.len, n);
    assert_memory_equal(buf, want, n);
    ua_nodeid_clear(&sid);
    /* Guid: Data1..3 little endian, Data4 as is */
    uint8_t g[16];
    assert_int_equal(ua_guid_parse("72962b91-fa75-4ae6-8d28-b404dc7daf63", g), 0);
    n = unhex("912b9672 75fa e64a 8d28b404dc7daf63", want, sizeof want);
    assert_memory_equal(g, want, 16);
    /* DataValue: value Double 1.0, status, source timestamp */
    struct ua_datavalue dv = {.mask = UA_DV_VALUE | UA_DV_STATUS | UA_DV_SRC_TS,
                              .value = {.type = UA_DOUBLE, .v.f = 1.0},
                              .status = 0x80340000u,
                              .src_ts = 1};
    ua_enc_init(&e, buf, sizeof buf);
    ua_put_datavalue(&e, &dv);
    n = unhex("07 0b 000000000000f03f 00003480 0100000000000000", want, sizeof want);
    assert_int_equal(e.len, n);
    assert_memory_equal(buf, want, n);
    truncations(buf, e.len, dec_datavalue);
    /* decoding picoseconds and server timestamp in wire order */
    n = unhex("3d 06 2a000000 0100000000000000 0700 0200000000000000 0900", want, sizeof want);
    struct ua_dec d;
    ua_dec_init(&d, want, n);
    struct ua_datavalue got;
    ua_get_datavalue(&d, &got);
    assert_false(d.err);
    assert_int_equal(d.pos, n);
    assert_int_equal(got.value.v.i, 42);
    assert_true(got.src_ts == 1 && got.srv_ts == 2);
    truncations(want, n, dec_datavalue);
}

static void test_bad_input(void **state)
{
    (void)state;
    uint8_t b[64];
    struct ua_dec d;
    struct ua_variant v;
    /* builtin id out of range */
    size_t n = unhex("3f", b, sizeof b);
    ua_dec_init(&d, b, n);
    ua_get_variant(&d, &v);
    assert_true(d.err);
    /* array count larger than the bytes left */
    n = unhex("86 ffffff7f 00", b, sizeof b);
    ua_dec_init(&d, b, n);
    ua_get_variant(&d, &v);
    assert_true(d.err);
    /* null array is fine */
    n = unhex("86 ffffffff", b, sizeof b);
    ua_dec_init(&d, b, n);
    ua_get_variant(&d, &v);
    assert_false(d.err);
    assert_int_equal(v.count, -1);
    /* a scalar Variant containing a Variant is refused */
    n = unhex("18 0b 000000000000f03f", b, sizeof b);
    ua_dec_init(&d, b, n);
    ua_get_variant(&d, &v);
    assert_true(d.err);
    /* deeply nested DataValues inside Variant arrays hit the depth bound */
    uint8_t deep[400];
    size_t k = 0;
    for (int i = 0; i < 60; i++) {
        deep[k++] = 0x97; /* array of DataValue */
        deep[k++] = 1, deep[k++] = 0, deep[k++] = 0, deep[k++] = 0;
        deep[k++] = 0x01; /* DataValue with a value */
    }
    deep[k++] = 0;
    ua_dec_init(&d, deep, k);
    ua_get_variant(&d, &v);
    assert_true(d.err);
    /* node id forms: ExpandedNodeId flags are not allowed in a NodeId */
    n = unhex("80 00", b, sizeof b);
    ua_dec_init(&d, b, n);
    struct ua_nodeid nid;
    ua_get_nodeid(&d, &nid);
    assert_true(d.err);
    n = unhex("c0 05 0600000061626300 07000000", b, sizeof b); /* expanded: uri "abc", server 7 ... truncated uri */
    ua_dec_init(&d, b, n);
    struct ua_str uri;
    uint32_t srv;
    ua_get_expnodeid(&d, &nid, &uri, &srv);
    assert_true(d.err);
    n = unhex("c0 05 03000000616263 07000000", b, sizeof b);
    ua_dec_init(&d, b, n);
    ua_get_expnodeid(&d, &nid, &uri, &srv);
    assert_false(d.err);
    assert_int_equal(nid.num, 5);
    assert_int_equal(srv, 7);
    assert_int_equal(uri.len, 3);
}

static void test_nodeid_text(void **state)
{
    (void)state;
    const char *ok[] = {"i=2258",
                        "ns=2;s=Channel1.Device1.Temperature",
                        "ns=3;g=72962b91-fa75-4ae6-8d28-b404dc7daf63",
                        "ns=1;b=3q2+7w==",
                        "ns=65535;i=4294967295",
                        "s=with;semicolon=and:colon"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct ua_nodeid n, back;
        struct fb_err err = {0};
        assert_int_equal(ua_nodeid_parse(ok[i], &n, &err), 0);
        char buf[200];
        ua_nodeid_format(&n, buf, sizeof buf);
        assert_string_equal(buf, ok[i]);
        /* binary round trip */
        uint8_t wire[200];
        struct ua_enc e;
        ua_enc_init(&e, wire, sizeof wire);
        ua_put_nodeid(&e, &n);
        struct ua_dec d;
        ua_dec_init(&d, wire, e.len);
        ua_get_nodeid(&d, &back);
        assert_false(d.err);
        assert_true(ua_nodeid_equal(&n, &back));
        struct ua_nodeid cp;
        assert_int_equal(ua_nodeid_copy(&back, &cp), 0);
        assert_true(ua_nodeid_equal(&n, &cp));
        ua_nodeid_clear(&cp);
        ua_nodeid_clear(&n);
    }
    const char *bad[] = {"",
                         "x=1",
                         "ns=;i=1",
                         "ns=70000;i=1",
                         "i=",
                         "i=-1",
                         "i=4294967296",
                         "g=1234",
                         "ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf6Z",
                         "b=@@",
                         "ns=1",
                         "i=12abc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct ua_nodeid n;
        struct fb_err err = {0};
        assert_int_equal(ua_nodeid_parse(bad[i], &n, &err), FB_EINVAL);
        assert_true(err.msg[0] != 0);
    }
}

static void test_to_fb(void **state)
{
    (void)state;
    char sb[128];
    struct fb_value v;
    /* natural types */
    for (size_t i = 0; i < sizeof scalar_types; i++) {
        struct ua_variant u = sample(scalar_types[i]);
        assert_int_equal(ua_variant_to_fb(&u, FB_T_NONE, &v, sb, sizeof sb), FB_Q_GOOD);
        assert_int_equal(v.type, ua_builtin[u.type].fbtype);
    }
    struct ua_variant u = sample(UA_INT64);
    assert_int_equal(ua_variant_to_fb(&u, FB_T_NONE, &v, sb, sizeof sb), FB_Q_GOOD);
    assert_true(v.i == INT64_MIN + 1);
    u = sample(UA_UINT64);
    assert_int_equal(ua_variant_to_fb(&u, FB_T_NONE, &v, sb, sizeof sb), FB_Q_GOOD);
    assert_true(v.u == UINT64_MAX - 1);
    /* texts */
    struct {
        uint8_t t;
        const char *want;
    } texts[] = {{UA_BYTESTRING, "00ff10"},
                 {UA_GUID, "72962b91-fa75-4ae6-8d28-b404dc7daf63"},
                 {UA_DATETIME, "2024-03-01T12:30:45.123Z"},
                 {UA_LTEXT, "Pump"},
                 {UA_NODEID, "ns=2;s=Channel1.Temp"},
                 {UA_QNAME, "3:Demo"},
                 {UA_STRING, "hello wörld"}};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        u = sample(texts[i].t);
        assert_int_equal(ua_variant_to_fb(&u, FB_T_NONE, &v, sb, sizeof sb), FB_Q_GOOD);
        assert_int_equal(v.s.len, strlen(texts[i].want));
        assert_memory_equal(v.s.p, texts[i].want, v.s.len);
    }
    /* conversions with range checks */
    u = sample(UA_INT32); /* INT32_MIN */
    assert_int_equal(ua_variant_to_fb(&u, FB_T_INT16, &v, sb, sizeof sb), FB_Q_BAD_OUT_OF_RANGE);
    assert_int_equal(ua_variant_to_fb(&u, FB_T_UINT32, &v, sb, sizeof sb), FB_Q_BAD_OUT_OF_RANGE);
    assert_int_equal(ua_variant_to_fb(&u, FB_T_INT64, &v, sb, sizeof sb), FB_Q_GOOD);
    assert_true(v.i == INT32_MIN);
    assert_int_equal(ua_variant_to_fb(&u, FB_T_FLOAT64, &v, sb, sizeof sb), FB_Q_GOOD);
    assert_true(v.f == (double)INT32_MIN);
    u = sample(UA_DOUBLE);
    assert_int_equal(ua_variant_to_fb(&u, FB_T_INT32, &v, sb, sizeof sb), FB_Q_GOOD);
    assert_true(v.i == 0);
    assert_int_equal(ua_variant_to_fb(&u, FB_T_STRING, &v, sb, sizeof sb), FB_Q_GOOD);
    u = sample(UA_STRING);
    assert_int_equal(ua_variant_to_fb(&u, FB_T_FLOAT64, &v, sb, sizeof sb), FB_Q_BAD_TYPE_MISMATCH);
    /* string truncated to the buffer, never overflowing */
    assert_int_equal(ua_variant_to_fb(&u, FB_T_STRING, &v, sb, 4), FB_Q_GOOD);
    assert_int_equal(v.s.len, 4);
    u = (struct ua_variant){.type = UA_DOUBLE, .is_array = true};
    assert_int_equal(ua_variant_to_fb(&u, FB_T_NONE, &v, sb, sizeof sb), FB_Q_BAD_TYPE_MISMATCH);
}

static void test_from_fb(void **state)
{
    (void)state;
    struct ua_variant u;
    uint8_t buf[16];
    struct fb_err err = {0};
    struct fb_value v = {.type = FB_T_FLOAT64, .f = 300};
    assert_int_equal(ua_variant_from_fb(&v, UA_BYTE, &u, buf, sizeof buf, &err), FB_ERANGE);
    v.f = 200.4;
    assert_int_equal(ua_variant_from_fb(&v, UA_BYTE, &u, buf, sizeof buf, &err), 0);
    assert_true(u.v.u == 200);
    v = (struct fb_value){.type = FB_T_INT64, .i = -1};
    assert_int_equal(ua_variant_from_fb(&v, UA_UINT64, &u, buf, sizeof buf, &err), FB_ERANGE);
    assert_int_equal(ua_variant_from_fb(&v, UA_SBYTE, &u, buf, sizeof buf, &err), 0);
    assert_true(u.v.i == -1);
    v = (struct fb_value){.type = FB_T_UINT64, .u = UINT64_MAX};
    assert_int_equal(ua_variant_from_fb(&v, UA_UINT64, &u, buf, sizeof buf, &err), 0);
    assert_true(u.v.u == UINT64_MAX);
    assert_int_equal(ua_variant_from_fb(&v, UA_INT64, &u, buf, sizeof buf, &err), FB_ERANGE);
    v = (struct fb_value){.type = FB_T_FLOAT64, .f = 1e39};
    assert_int_equal(ua_variant_from_fb(&v, UA_FLOAT, &u, buf, sizeof buf, &err), FB_ERANGE);
    v = (struct fb_value){.type = FB_T_STRING, .s = {"0aFF", 4}};
    assert_int_equal(ua_variant_from_fb(&v, UA_BYTESTRING, &u, buf, sizeof buf, &err), 0);
    assert_int_equal(u.v.s.len, 2);
    assert_memory_equal(u.v.s.p, "\x0a\xff", 2);
    v.s = (struct fb_value){.s = {"0aF", 3}}.s;
    assert_int_equal(ua_variant_from_fb(&v, UA_BYTESTRING, &u, buf, sizeof buf, &err), FB_EINVAL);
    assert_int_equal(ua_variant_from_fb(&v, UA_DOUBLE, &u, buf, sizeof buf, &err), FB_EINVAL);
    assert_int_equal(ua_variant_from_fb(&v, UA_LTEXT, &u, buf, sizeof buf, &err), 0);
    v = (struct fb_value){.type = FB_T_BOOL, .b = true};
    assert_int_equal(ua_variant_from_fb(&v, UA_BOOLEAN, &u, buf, sizeof buf, &err), 0);
    assert_true(u.v.b);
    assert_int_equal(ua_variant_from_fb(&v, UA_DIAGINFO, &u, buf, sizeof buf, &err), FB_ENOTSUP);
    /* DataType node → builtin */
    struct ua_nodeid dt = {.num = 11};
    assert_int_equal(ua_datatype_builtin(&dt), UA_DOUBLE);
    dt.num = 29;
    assert_int_equal(ua_datatype_builtin(&dt), UA_INT32);
    dt.num = 26; /* Number: abstract */
    assert_int_equal(ua_datatype_builtin(&dt), 0);
    dt.ns = 2;
    dt.num = 11;
    assert_int_equal(ua_datatype_builtin(&dt), 0);
}

static void test_datetime(void **state)
{
    (void)state;
    char b[40];
    ua_dt_format(UA_DT_UNIX_EPOCH, b, sizeof b);
    assert_string_equal(b, "1970-01-01T00:00:00.000Z");
    ua_dt_format(UA_DT_UNIX_EPOCH + 1, b, sizeof b);
    assert_string_equal(b, "1970-01-01T00:00:00.0000001Z");
    ua_dt_format(UA_DT_UNIX_EPOCH - 10000, b, sizeof b);
    assert_string_equal(b, "1969-12-31T23:59:59.999Z");
    assert_true(ua_dt_to_ns(ua_dt_from_ns(1700000000123456700LL)) == 1700000000123456700LL);
    assert_int_equal(ua_dt_to_ns(0), 0);
    ua_dt_format(INT64_MAX, b, sizeof b); /* far future: no crash */
    assert_string_equal(b, "9999-12-31T23:59:59.9999999Z");
    /* from server data (issue 14, the fuzz input 06 0d 00 09 0a 0b 0c 0d 00 80):
     * a huge negative DateTime overflowed dt - epoch (UBSan abort) */
    int64_t neg = (int64_t)0x80000d0c0b0a0900ULL;
    ua_dt_format(neg, b, sizeof b);
    assert_string_equal(b, "1601-01-01T00:00:00.000Z");
    ua_dt_format(INT64_MIN, b, sizeof b);
    assert_string_equal(b, "1601-01-01T00:00:00.000Z");
    ua_dt_format(UA_DT_MAX, b, sizeof b);
    assert_string_equal(b, "9999-12-31T23:59:59.9999999Z");
    /* to ns: out of range means "no time stamp" (0), never a wrapped value */
    assert_int_equal(ua_dt_to_ns(neg), 0);
    assert_int_equal(ua_dt_to_ns(INT64_MIN), 0);
    assert_int_equal(ua_dt_to_ns(-1), 0);
    assert_int_equal(ua_dt_to_ns(INT64_MAX), 0);
    assert_int_equal(ua_dt_to_ns(UA_DT_MAX), 0);
    assert_int_equal(ua_dt_to_ns(1), 0);                                      /* 1601: before 1677, not representable */
    assert_int_equal(ua_dt_to_ns(UA_DT_UNIX_EPOCH + 92233720368547759LL), 0); /* after 2262 */
    assert_int_equal(ua_dt_to_ns(UA_DT_UNIX_EPOCH - 92233720368547759LL), 0); /* before 1677 */
    assert_true(ua_dt_to_ns(UA_DT_UNIX_EPOCH + 92233720368547758LL) == 9223372036854775800LL);
    assert_true(ua_dt_to_ns(UA_DT_UNIX_EPOCH - 92233720368547758LL) == -9223372036854775800LL);
    /* through the value conversion (what the fuzz harness does) */
    struct ua_variant v;
    memset(&v, 0, sizeof v);
    v.type = UA_DATETIME;
    v.v.dt = neg;
    struct fb_value fv;
    char sb[64];
    assert_int_equal(ua_variant_to_fb(&v, FB_T_STRING, &fv, sb, sizeof sb), 0);
    assert_int_equal(fv.s.len, strlen("1601-01-01T00:00:00.000Z"));
    assert_memory_equal(fv.s.p, "1601-01-01T00:00:00.000Z", fv.s.len);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalar_round_trip),
        cmocka_unit_test(test_array_round_trip),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_nodeid_text),
        cmocka_unit_test(test_to_fb),
        cmocka_unit_test(test_from_fb),
        cmocka_unit_test(test_datetime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
