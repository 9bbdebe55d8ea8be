/* test_s7_proto.c — the S7comm codec, address parser, options and read
 * planner, without sockets.  Golden frames come from PROTOCOLS.md §1 and from
 * replies captured from snap7's S7Server (the system-test peer); every
 * truncation of every valid reply is fed to its decoder and must be refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/config.h"
#include "core/env.h"
#include "core/url.h"
#include "south/s7/s7_proto.h"

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (h[0] && h[1] && n < cap) {
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

static struct s7_addr addr_ok(const char *text)
{
    struct s7_addr a;
    struct fb_err err = {0};
    int rc = s7_addr_parse(text, FB_T_NONE, 0, 0, &a, &err);
    if (rc) fprintf(stderr, "parse %s: %s\n", text, err.msg);
    assert_int_equal(rc, 0);
    return a;
}

static void addr_err(const char *text, const char *want)
{
    struct s7_addr a;
    struct fb_err err = {0};
    int rc = s7_addr_parse(text, FB_T_NONE, 0, 0, &a, &err);
    if (rc == 0 || !strstr(err.msg, want))
        fprintf(stderr, "addr '%s': rc %d msg '%s', want '%s'\n", text, rc, err.msg, want);
    assert_true(rc < 0);
    assert_non_null(strstr(err.msg, want));
}

/* ------------------------------------------------------------- addresses */
static void test_addr_forms(void **state)
{
    (void)state;
    struct s7_addr a = addr_ok("DB10.DBD0:real");
    assert_int_equal(a.area, S7_AREA_DB);
    assert_int_equal(a.db, 10);
    assert_int_equal(a.start, 0);
    assert_int_equal(a.type, S7_REAL);
    assert_int_equal(a.fbtype, FB_T_FLOAT32);
    assert_int_equal(a.size, 4);

    a = addr_ok("DB1.DBX2.3");
    assert_int_equal(a.type, S7_BOOL);
    assert_int_equal(a.start, 2);
    assert_int_equal(a.bit, 3);
    assert_int_equal(a.size, 1);

    a = addr_ok("db1.dbw4:int");
    assert_int_equal(a.type, S7_INT);
    assert_int_equal(a.fbtype, FB_T_INT16);
    a = addr_ok("DB1.DBW4");
    assert_int_equal(a.type, S7_WORD);
    assert_int_equal(a.fbtype, FB_T_UINT16);
    a = addr_ok("DB1.DBD8");
    assert_int_equal(a.type, S7_DWORD);
    a = addr_ok("MW10");
    assert_int_equal(a.area, S7_AREA_M);
    assert_int_equal(a.start, 10);
    assert_int_equal(a.size, 2);
    a = addr_ok("I0.1");
    assert_int_equal(a.area, S7_AREA_I);
    assert_int_equal(a.bit, 1);
    assert_int_equal(a.type, S7_BOOL);
    a = addr_ok("E0.1");
    assert_int_equal(a.area, S7_AREA_I);
    a = addr_ok("Q1.7");
    assert_int_equal(a.area, S7_AREA_Q);
    assert_int_equal(a.start, 1);
    assert_int_equal(a.bit, 7);
    a = addr_ok("A1.7");
    assert_int_equal(a.area, S7_AREA_Q);
    a = addr_ok("IB3");
    assert_int_equal(a.type, S7_BYTE);
    a = addr_ok("QD4:real");
    assert_int_equal(a.type, S7_REAL);
    a = addr_ok("MX0.0");
    assert_int_equal(a.type, S7_BOOL);

    a = addr_ok("DB5.DBB0:string[20]");
    assert_int_equal(a.type, S7_STRING);
    assert_int_equal(a.n, 20);
    assert_int_equal(a.size, 22);
    assert_int_equal(a.fbtype, FB_T_STRING);
    assert_int_equal(s7_addr_str_cap(&a), 40);
    a = addr_ok("DB5.DBB0:string");
    assert_int_equal(a.n, 254);
    a = addr_ok("DB5.DBB0:wstring[10]");
    assert_int_equal(a.size, 24);
    a = addr_ok("DB5.DBB0:dt");
    assert_int_equal(a.type, S7_DT);
    assert_int_equal(a.size, 8);
    a = addr_ok("DB5.DBB0:DATE_AND_TIME");
    assert_int_equal(a.type, S7_DT);
    a = addr_ok("DB5.DBD0:time");
    assert_int_equal(a.fbtype, FB_T_INT32);
    a = addr_ok("DB5.DBD0:lreal"); /* 8-byte types take B, W or D */
    assert_int_equal(a.size, 8);
    a = addr_ok("DB5.DBW0:date");
    assert_int_equal(a.type, S7_DATE);
    a = addr_ok("DB5.DBB0:lint");
    assert_int_equal(a.fbtype, FB_T_INT64);
    a = addr_ok("DB5.DBD0:float32"); /* fb type names work as well */
    assert_int_equal(a.type, S7_REAL);
    a = addr_ok("DB5.DBB0:sint");
    assert_int_equal(a.fbtype, FB_T_INT8);
    a = addr_ok("DB5.DBB0:char");
    assert_int_equal(a.fbtype, FB_T_STRING);

    a = addr_ok("C5");
    assert_int_equal(a.area, S7_AREA_C);
    assert_int_equal(a.start, 5);
    assert_int_equal(a.size, 2);
    a = addr_ok("T3");
    assert_int_equal(a.area, S7_AREA_T);
    a = addr_ok("Z5");
    assert_int_equal(a.area, S7_AREA_C);

    /* hints from the config's type: */
    struct fb_err err = {0};
    assert_int_equal(s7_addr_parse("DB1.DBD0", FB_T_FLOAT32, 0, 0, &a, &err), 0);
    assert_int_equal(a.type, S7_REAL);
    assert_int_equal(s7_addr_parse("DB1.DBB0", FB_T_STRING, 12, 0, &a, &err), 0);
    assert_int_equal(a.type, S7_STRING);
    assert_int_equal(a.n, 12);
    assert_int_equal(s7_addr_parse("DB1.DBW0", FB_T_INT16, 0, 0, &a, &err), 0);
    assert_int_equal(a.type, S7_INT);
}

static void test_addr_index(void **state)
{
    (void)state;
    struct s7_addr a;
    struct fb_err err = {0};
    assert_int_equal(s7_addr_parse("DB1.DBD4:real", FB_T_NONE, 0, 3, &a, &err), 0);
    assert_int_equal(a.start, 16);
    assert_int_equal(s7_addr_parse("DB1.DBX0.6", FB_T_NONE, 0, 3, &a, &err), 0);
    assert_int_equal(a.start, 1);
    assert_int_equal(a.bit, 1);
    assert_int_equal(s7_addr_parse("DB1.DBB0:string[8]", FB_T_NONE, 0, 2, &a, &err), 0);
    assert_int_equal(a.start, 20);
    assert_int_equal(s7_addr_parse("C10", FB_T_NONE, 0, 2, &a, &err), 0);
    assert_int_equal(a.start, 12);
}

static void test_addr_errors(void **state)
{
    (void)state;
    addr_err("", "empty");
    addr_err("X1", "expected DBn");
    addr_err("DB0.DBW0", "DB number");
    addr_err("DB1.DBQ0", "bad DB address");
    addr_err("DB1.DBW", "byte offset");
    addr_err("DB1.DBX2", "needs a bit");
    addr_err("DB1.DBX2.8", "bad bit");
    addr_err("DB1.DBW2.1", "only X");
    addr_err("DB1.DBW0:real", "REAL is 4 bytes");
    addr_err("DB1.DBD0:int", "INT is 2 bytes");
    addr_err("DB1.DBW0:bool", "BOOL needs a bit");
    addr_err("DB1.DBX0.0:int", "holds a BOOL only");
    addr_err("DB1.DBW0:foo", "unknown S7 type");
    addr_err("DB1.DBB0:string[0]", "bad length");
    addr_err("DB1.DBB0:string[255]", "bad length");
    addr_err("DB1.DBB0:string[-2]", "bad length"); /* found by fuzz_s7_decode: strtoul took it as huge */
    addr_err("DB1.DBB0:string[+5]", "bad length");
    addr_err("DB1.DBB0:wstring[-1]", "bad length");
    addr_err("DB1.DBB0:int[3]", "only STRING");
    addr_err("M10", "needs a size");
    addr_err("MW10x", "unexpected");
    addr_err("C5:int", "takes no type");
    addr_err("Cx", "counter");
    addr_err("DB1.DBB99999999", "byte offset");
}

/* ---------------------------------------------------------------- options */
static int opts(const char *url, struct s7_opts *o, struct fb_err *err)
{
    struct fb_url u;
    assert_int_equal(fb_url_parse(url, &u, err), 0);
    int rc = s7_opts_parse(&u, 0, o, err);
    fb_url_free(&u);
    return rc;
}

static void test_opts(void **state)
{
    (void)state;
    struct s7_opts o;
    struct fb_err err = {0};
    assert_int_equal(opts("s7://10.0.0.1", &o, &err), 0);
    assert_int_equal(o.port, 102);
    assert_int_equal(o.remote_tsap, 0x0101); /* PG, rack 0, slot 1 */
    assert_int_equal(o.local_tsap, 0x0100);
    assert_int_equal(o.pdu, 960);
    assert_int_equal(opts("s7://10.0.0.1:1102?rack=0&slot=2", &o, &err), 0);
    assert_int_equal(o.port, 1102);
    assert_int_equal(o.remote_tsap, 0x0102);
    assert_int_equal(opts("s7://h?rack=1&slot=3&type=op", &o, &err), 0);
    assert_int_equal(o.remote_tsap, 0x0223);
    assert_int_equal(opts("s7://h?type=basic&slot=0", &o, &err), 0);
    assert_int_equal(o.remote_tsap, 0x0300);
    assert_int_equal(opts("s7://h?local_tsap=0x1000&remote_tsap=0x2000&pdu=480&timeout=250ms", &o, &err), 0);
    assert_int_equal(o.local_tsap, 0x1000);
    assert_int_equal(o.remote_tsap, 0x2000);
    assert_int_equal(o.pdu, 480);
    assert_int_equal(o.timeout_ns, 250000000);
    char *k = s7_opts_conn_key(&o);
    assert_string_equal(k, "s7:h:102:1000:2000");
    free(k);
    assert_true(opts("s7://h?rack=8", &o, &err) < 0);
    assert_true(opts("s7://h?slot=32", &o, &err) < 0);
    assert_true(opts("s7://h?type=xx", &o, &err) < 0);
    assert_true(opts("s7://h?pdu=100", &o, &err) < 0);
    assert_true(opts("s7://h?unit=1", &o, &err) < 0);
    assert_non_null(strstr(err.msg, "unknown S7 option"));
    assert_true(opts("modbus-tcp://h", &o, &err) < 0);
}

/* ----------------------------------------------------------------- frames */
static void test_build_frames(void **state)
{
    (void)state;
    uint8_t buf[512], want[512];
    size_t n = s7_build_cr(buf, sizeof buf, 0x0100, 0x0102);
    size_t wn = unhex("0300001611E00000000100C0010AC1020100C2020102", want, sizeof want);
    assert_int_equal(n, wn);
    assert_memory_equal(buf, want, n);

    n = s7_build_setup(buf, sizeof buf, 1, 480);
    wn = unhex("0300001902F08032010000000100080000F0000001000101E0", want, sizeof want);
    assert_int_equal(n, wn);
    assert_memory_equal(buf, want, n);

    /* DB1.DBX10.3 as a bit item (PROTOCOLS.md §1), and a BYTE range */
    struct s7_item it[2] = {{.area = S7_AREA_DB, .db = 1, .start = 10, .bit = 3, .is_bit = true, .len = 1},
                            {.area = S7_AREA_M, .start = 4, .len = 6}};
    n = s7_build_read(buf, sizeof buf, 0x0203, it, 2);
    wn = unhex("0300002B02F080 320100000203001A0000 0402"
               "120A100100010001840000 53"
               "120A10020006000083000020",
               want, sizeof want);
    assert_int_equal(n, wn);
    assert_memory_equal(buf, want, n);

    /* counters: transport size 1C, count in elements, address = element */
    struct s7_item ct = {.area = S7_AREA_C, .start = 5, .len = 4};
    n = s7_build_read(buf, sizeof buf, 1, &ct, 1);
    wn = unhex("0300001F02F080 320100000001000E0000 0401 120A101C000200001C000005", want, sizeof want);
    assert_int_equal(n, wn);
    assert_memory_equal(buf, want, n);

    /* write: a 3-byte value then a bit; odd data padded between items */
    uint8_t d1[3] = {1, 2, 3}, d2[1] = {1};
    const uint8_t *dp[2] = {d1, d2};
    struct s7_item w[2] = {{.area = S7_AREA_DB, .db = 2, .start = 0, .len = 3},
                           {.area = S7_AREA_Q, .start = 1, .bit = 7, .is_bit = true, .len = 1}};
    n = s7_build_write(buf, sizeof buf, 7, w, dp, 2);
    wn = unhex("0300003802F080 320100000007001A000D 0502"
               "120A100200030002840000 00"
               "120A100100010000820000 0F"
               "00040018010203 00 0003000101",
               want, sizeof want);
    assert_int_equal(n, wn);
    assert_memory_equal(buf, want, n);
    assert_int_equal(s7_build_read(buf, 10, 1, it, 2), 0); /* too small */
    assert_int_equal(s7_build_read(buf, sizeof buf, 1, it, 0), 0);
}

static void test_cotp(void **state)
{
    (void)state;
    uint8_t f[64];
    struct s7_cotp c;
    /* captured CC from snap7 */
    size_t n = unhex("0300001611D00001000100C0010AC1020100C2020101", f, sizeof f);
    assert_int_equal(s7_cotp_parse(f, n, &c), 0);
    assert_int_equal(c.kind, S7_COTP_CC);
    for (size_t k = 0; k < n; k++) assert_true(s7_cotp_parse(f, k, &c) < 0);
    /* DT without EOT, then with */
    n = unhex("0300000902F0003201", f, sizeof f);
    assert_int_equal(s7_cotp_parse(f, n, &c), 0);
    assert_int_equal(c.kind, S7_COTP_DT);
    assert_false(c.eot);
    assert_int_equal(c.payload_len, 2);
    f[6] = 0x80;
    assert_int_equal(s7_cotp_parse(f, n, &c), 0);
    assert_true(c.eot);
    /* DR with a reason */
    n = unhex("0300000B068000000001 88", f, sizeof f);
    assert_int_equal(s7_cotp_parse(f, n, &c), 0);
    assert_int_equal(c.kind, S7_COTP_DR);
    assert_int_equal(c.reason, 0x88);
    /* bad TPKT version, length below minimum */
    n = unhex("0400000902F0803201", f, sizeof f);
    assert_true(s7_cotp_parse(f, n, &c) < 0);
    assert_true(s7_tpkt_len((const uint8_t *)"\x03\x00\x00\x03", 4) < 0);
}

static void test_setup_reply(void **state)
{
    (void)state;
    uint8_t f[64];
    int pdu = 0;
    uint16_t herr;
    /* captured from snap7 (COTP stripped): PDU 480 */
    size_t n = unhex("320300000001000800000000F0000001000101E0", f, sizeof f);
    assert_int_equal(s7_parse_setup_reply(f, n, 1, &pdu, &herr), 0);
    assert_int_equal(pdu, 480);
    assert_true(s7_parse_setup_reply(f, n, 2, &pdu, &herr) < 0); /* wrong PDU ref */
    for (size_t k = 0; k < n; k++) assert_true(s7_parse_setup_reply(f, k, 1, &pdu, &herr) < 0);
    /* header-only error reply */
    n = unhex("320300000001000000008104", f, sizeof f);
    assert_int_equal(s7_parse_setup_reply(f, n, 1, &pdu, &herr), FB_EEXCEPTION);
    assert_int_equal(herr, 0x8104);
    for (size_t k = 0; k < n; k++) assert_true(s7_parse_setup_reply(f, k, 1, &pdu, &herr) < 0);
}

static void test_read_reply(void **state)
{
    (void)state;
    uint8_t f[128];
    uint16_t herr;
    struct s7_read_result res[3];
    /* captured from snap7: MW0 (2 bytes) ok, DB1.DBB60 (12) out of range, DB2 missing */
    struct s7_item it[3] = {{.area = S7_AREA_M, .len = 2},
                            {.area = S7_AREA_DB, .db = 1, .start = 60, .len = 12},
                            {.area = S7_AREA_DB, .db = 2, .len = 2}};
    size_t n = unhex("3203000000020002000E00000403FF0400101234050000040A000004", f, sizeof f);
    assert_int_equal(s7_parse_read_reply(f, n, 2, it, 3, res, &herr), 0);
    assert_int_equal(res[0].rc, 0xFF);
    assert_int_equal(res[0].data[0], 0x12);
    assert_int_equal(res[0].data[1], 0x34);
    assert_int_equal(res[1].rc, 0x05);
    assert_null(res[1].data);
    assert_int_equal(res[2].rc, 0x0A);
    assert_int_equal(s7_item_quality(res[2].rc, false), FB_Q_BAD_NODE_UNKNOWN);
    for (size_t k = 0; k < n; k++) assert_true(s7_parse_read_reply(f, k, 2, it, 3, res, &herr) < 0);
    assert_true(s7_parse_read_reply(f, n, 2, it, 2, res, &herr) < 0); /* item count */

    /* odd lengths padded between items, not after the last; real as TS 07 */
    struct s7_item it2[3] = {
        {.area = S7_AREA_M, .len = 1}, {.area = S7_AREA_M, .len = 1}, {.area = S7_AREA_DB, .db = 1, .len = 4}};
    n = unhex("32030000000900020014000004 03"
              "FF04000841 00"
              "FF04000842 00"
              "FF07000441A80000",
              f, sizeof f);
    assert_int_equal(s7_parse_read_reply(f, n, 9, it2, 3, res, &herr), 0);
    assert_int_equal(res[0].data[0], 0x41);
    assert_int_equal(res[1].data[0], 0x42);
    assert_int_equal(res[2].data[1], 0xA8);
    for (size_t k = 0; k < n; k++) assert_true(s7_parse_read_reply(f, k, 9, it2, 3, res, &herr) < 0);
    /* a length that disagrees with the request is malformed */
    f[17] = 0x10;
    assert_true(s7_parse_read_reply(f, n, 9, it2, 3, res, &herr) < 0);

    /* header error on a read */
    n = unhex("32020000000900000000 8500", f, sizeof f);
    assert_int_equal(s7_parse_read_reply(f, n, 9, it2, 3, res, &herr), FB_EEXCEPTION);
    assert_int_equal(herr, 0x8500);
    assert_int_equal(s7_header_quality(0x8104, false), FB_Q_BAD_NOT_READABLE);
    assert_int_equal(s7_header_quality(0x8104, true), FB_Q_BAD_NOT_WRITABLE);
    assert_non_null(strstr(s7_header_text(0x8104), "PUT/GET"));
    assert_non_null(strstr(s7_item_text(0x03), "Optimized block access"));
    assert_int_equal(s7_item_quality(0x03, true), FB_Q_BAD_NOT_WRITABLE);
    assert_int_equal(s7_item_quality(0x42, false), FB_Q_BAD_DEVICE_FAILURE);
}

static void test_write_reply(void **state)
{
    (void)state;
    uint8_t f[64], rc[2];
    uint16_t herr;
    size_t n = unhex("32030000000700020002000005 02FF0A", f, sizeof f);
    assert_int_equal(s7_parse_write_reply(f, n, 7, 2, rc, &herr), 0);
    assert_int_equal(rc[0], 0xFF);
    assert_int_equal(rc[1], 0x0A);
    for (size_t k = 0; k < n; k++) assert_true(s7_parse_write_reply(f, k, 7, 2, rc, &herr) < 0);
    n = unhex("320300000007000000008304", f, sizeof f);
    assert_int_equal(s7_parse_write_reply(f, n, 7, 1, rc, &herr), FB_EEXCEPTION);
    assert_int_equal(herr, 0x8304);
    /* a Job where an Ack is expected */
    n = unhex("32010000000700020001000005 01FF", f, sizeof f);
    assert_true(s7_parse_write_reply(f, n, 7, 1, rc, &herr) < 0);
}

/* ------------------------------------------------------------ value codec */
static void roundtrip(const char *addr, const char *hex, const struct fb_value *want)
{
    struct s7_addr a = addr_ok(addr);
    uint8_t raw[600], out[600];
    size_t n = unhex(hex, raw, sizeof raw);
    assert_int_equal(n, a.size);
    struct fb_value v;
    char sbuf[1200];
    assert_int_equal(s7_decode(&a, raw, &v, sbuf, sizeof sbuf), FB_Q_GOOD);
    assert_int_equal(v.type, want->type);
    if (v.type == FB_T_STRING) {
        assert_int_equal(v.s.len, want->s.len);
        assert_memory_equal(v.s.p, want->s.p, v.s.len);
    } else {
        assert_true(fb_value_equal(&v, want));
    }
    struct fb_err err = {0};
    memset(out, 0xEE, sizeof out);
    int rc = s7_encode(&a, &v, out, sizeof out, &err);
    if (rc < 0) fprintf(stderr, "encode %s: %s\n", addr, err.msg);
    assert_int_equal(rc, (int)a.size);
    if (a.type != S7_BOOL) assert_memory_equal(out, raw, n);
}

static struct fb_value vi(enum fb_type t, int64_t i)
{
    struct fb_value v = {.type = (uint8_t)t};
    if (fb_type_is_signed(t))
        v.i = i;
    else
        v.u = (uint64_t)i;
    return v;
}
static struct fb_value vs(const char *s)
{
    struct fb_value v = {.type = FB_T_STRING};
    v.s.p = s;
    v.s.len = (uint32_t)strlen(s);
    return v;
}

static void test_codec(void **state)
{
    (void)state;
    struct fb_value v;
    v = (struct fb_value){.type = FB_T_BOOL, .b = true};
    roundtrip("DB1.DBX0.3", "08", &v);
    v = vi(FB_T_UINT8, 0xAB);
    roundtrip("DB1.DBB0", "AB", &v);
    v = vi(FB_T_INT8, -2);
    roundtrip("DB1.DBB0:sint", "FE", &v);
    v = vi(FB_T_UINT16, 0xFFFE);
    roundtrip("DB1.DBW0", "FFFE", &v);
    v = vi(FB_T_INT16, -2);
    roundtrip("DB1.DBW0:int", "FFFE", &v);
    v = vi(FB_T_UINT32, 0xDEADBEEF);
    roundtrip("DB1.DBD0:udint", "DEADBEEF", &v);
    v = vi(FB_T_INT32, -100000);
    roundtrip("DB1.DBD0:dint", "FFFE7960", &v);
    v = (struct fb_value){.type = FB_T_FLOAT32, .f = 21.0};
    roundtrip("DB1.DBD0:real", "41A80000", &v);
    v = (struct fb_value){.type = FB_T_FLOAT64, .f = 3.141592653589793};
    roundtrip("DB1.DBB0:lreal", "400921FB54442D18", &v);
    v = vi(FB_T_INT64, -1);
    roundtrip("DB1.DBB0:lint", "FFFFFFFFFFFFFFFF", &v);
    v = vi(FB_T_UINT64, 0x0102030405060708);
    roundtrip("DB1.DBB0:lword", "0102030405060708", &v);
    v = vi(FB_T_INT32, -5000);
    roundtrip("DB1.DBD0:time", "FFFFEC78", &v);
    v = vi(FB_T_UINT32, 3600000);
    roundtrip("DB1.DBD0:tod", "0036EE80", &v);
    v = vs("2024-03-01");
    roundtrip("DB1.DBW0:date", "30BE", &v); /* 12478 days after 1990-01-01 */
    v = vs("1990-01-01");
    roundtrip("DB1.DBW0:date", "0000", &v);
    v = vs("2024-02-29T13:14:15.678");
    roundtrip("DB1.DBB0:dt", "2402291314156785", &v); /* Thursday = 5 */
    v = vs("1999-12-31T23:59:59.000");
    roundtrip("DB1.DBB0:dt", "9912312359590006", &v); /* Friday = 6 */
    v = vs("h\xc3\xa9llo");
    roundtrip("DB1.DBB0:string[6]", "060568E96C6C6F00", &v);
    v = vs("\xe6\x97\xa5\xf0\x9f\x98\x80"); /* 日 + U+1F600 (a surrogate pair) */
    roundtrip("DB1.DBB0:wstring[4]", "00040003 65E5 D83DDE00 0000", &v);
    v = vs("\xc3\x84");
    roundtrip("DB1.DBB0:char", "C4", &v);
    v = vi(FB_T_UINT16, 0x0123);
    roundtrip("C1", "0123", &v);

    /* decode: current length clamped to max and to the declared n */
    struct s7_addr a = addr_ok("DB1.DBB0:string[3]");
    uint8_t raw[16];
    char sbuf[32];
    size_t n = unhex("0A0A4142434445", raw, sizeof raw);
    (void)n;
    assert_int_equal(s7_decode(&a, raw, &v, sbuf, sizeof sbuf), FB_Q_GOOD);
    assert_int_equal(v.s.len, 3);
    /* invalid BCD date, NaN real: bad decoding */
    a = addr_ok("DB1.DBB0:dt");
    unhex("24132913141567 85", raw, sizeof raw);
    assert_int_equal(s7_decode(&a, raw, &v, sbuf, sizeof sbuf), FB_Q_BAD_DECODING);
    unhex("0000000000000000", raw, sizeof raw);
    assert_int_equal(s7_decode(&a, raw, &v, sbuf, sizeof sbuf), FB_Q_BAD_DECODING);
    a = addr_ok("DB1.DBD0:real");
    unhex("7FC00000", raw, sizeof raw);
    assert_int_equal(s7_decode(&a, raw, &v, sbuf, sizeof sbuf), FB_Q_BAD_DECODING);
    /* lone surrogate → U+FFFD */
    a = addr_ok("DB1.DBB0:wstring[1]");
    unhex("00010001D800", raw, sizeof raw);
    assert_int_equal(s7_decode(&a, raw, &v, sbuf, sizeof sbuf), FB_Q_GOOD);
    assert_int_equal(v.s.len, 3);
    assert_memory_equal(v.s.p, "\xef\xbf\xbd", 3);
}

static void test_encode_errors(void **state)
{
    (void)state;
    uint8_t out[64];
    struct fb_err err = {0};
    struct s7_addr a = addr_ok("DB1.DBW0:int");
    struct fb_value v = vi(FB_T_INT64, 40000);
    assert_int_equal(s7_encode(&a, &v, out, sizeof out, &err), FB_ERANGE);
    a = addr_ok("DB1.DBB0");
    v = vi(FB_T_INT64, -1);
    assert_int_equal(s7_encode(&a, &v, out, sizeof out, &err), FB_ERANGE);
    a = addr_ok("DB1.DBB0:string[3]");
    v = vs("toolong");
    assert_int_equal(s7_encode(&a, &v, out, sizeof out, &err), FB_ERANGE);
    assert_non_null(strstr(err.msg, "STRING[3]"));
    v = vs("\xe6\x97\xa5");
    assert_int_equal(s7_encode(&a, &v, out, sizeof out, &err), FB_ERANGE);
    assert_non_null(strstr(err.msg, "WSTRING"));
    a = addr_ok("DB1.DBB0:wstring[2]");
    v = vs("\xff");
    assert_int_equal(s7_encode(&a, &v, out, sizeof out, &err), FB_EINVAL);
    a = addr_ok("DB1.DBB0:dt");
    v = vs("2024-02-30T00:00:00");
    assert_int_equal(s7_encode(&a, &v, out, sizeof out, &err), FB_EINVAL);
    v = vs("2100-01-01T00:00:00");
    assert_int_equal(s7_encode(&a, &v, out, sizeof out, &err), FB_ERANGE);
    v = vs("2024-01-01 10:00:00.5");
    assert_int_equal(s7_encode(&a, &v, out, sizeof out, &err), 8);
    assert_int_equal(out[6], 0x50);
    a = addr_ok("DB1.DBD0:real");
    v = vs("x");
    assert_int_equal(s7_encode(&a, &v, out, sizeof out, &err), FB_EINVAL);
    v = (struct fb_value){.type = FB_T_FLOAT64, .f = 1e300};
    assert_int_equal(s7_encode(&a, &v, out, sizeof out, &err), FB_ERANGE);
    a = addr_ok("DB1.DBW0:date");
    v = vs("1989-12-31");
    assert_int_equal(s7_encode(&a, &v, out, sizeof out, &err), FB_ERANGE);
}

/* ---------------------------------------------------------------- planner */
/* Every request obeys the PDU formulas and the item cap; every tag's bytes
 * lie inside its range; chunks cover each range exactly once. */
static void check_layout(const struct s7_plan *p, int pdu)
{
    for (uint32_t q = 0; q < p->nreqs; q++) {
        const struct s7_req *r = &p->reqs[q];
        assert_true(r->n >= 1 && r->n <= (uint32_t)p->max_items);
        assert_true(s7_read_req_size(r->n) <= (size_t)pdu);
        size_t reply = 14;
        for (uint32_t k = 0; k < r->n; k++)
            reply += s7_read_reply_item_size((uint16_t)p->chunks[r->first + k].len, k + 1 == r->n);
        assert_true(reply <= (size_t)pdu);
    }
    for (uint32_t i = 0; i < p->ntags; i++) {
        const struct s7_range *rg = &p->ranges[p->tags[i].range];
        assert_true(p->tags[i].off + p->tags[i].a->size <= rg->len);
    }
    uint32_t c = 0;
    for (uint32_t r = 0; r < p->nranges; r++) {
        uint32_t covered = 0;
        for (; c < p->nchunks && p->chunks[c].range == r; c++) {
            assert_int_equal(p->chunks[c].off, covered);
            assert_true(p->chunks[c].len <= s7_max_read_len(pdu));
            covered += p->chunks[c].len;
        }
        assert_int_equal(covered, p->ranges[r].len);
    }
    assert_int_equal(c, p->nchunks);
}

static struct s7_plan *plan_of(const char *const *addrs, uint32_t n, int gap, int pdu, struct s7_addr *store)
{
    uint32_t ids[256];
    const struct s7_addr *ap[256];
    for (uint32_t i = 0; i < n; i++) {
        store[i] = addr_ok(addrs[i]);
        ids[i] = i;
        ap[i] = &store[i];
    }
    struct s7_plan *p;
    struct fb_err err = {0};
    assert_int_equal(s7_plan_build(ids, ap, n, gap, S7_MAX_ITEMS, &p, &err), 0);
    assert_int_equal(s7_plan_layout(p, pdu, &err), 0);
    check_layout(p, pdu);
    return p;
}

static void test_plan_merge(void **state)
{
    (void)state;
    struct s7_addr st[64];
    const char *a1[] = {"DB1.DBW40", "DB1.DBD0:real", "DB1.DBX4.1", "MW0", "DB2.DBW0", "I0.0", "DB1.DBW6"};
    struct s7_plan *p = plan_of(a1, 7, 31, 240, st);
    /* I | M | DB1 0..8 | DB1 40..42 | DB2 */
    assert_int_equal(p->nranges, 5);
    assert_int_equal(p->ranges[2].db, 1);
    assert_int_equal(p->ranges[2].start, 0);
    assert_int_equal(p->ranges[2].len, 8);
    assert_int_equal(p->ranges[2].n, 3);
    assert_int_equal(p->nreqs, 1);
    /* order[] maps back to the given order */
    assert_int_equal(p->tags[p->order[0]].tag, 0);
    assert_int_equal(p->tags[p->order[6]].tag, 6);
    s7_plan_free(p);
    /* a bigger gap merges DB1 40 as well */
    p = plan_of(a1, 7, 40, 240, st);
    assert_int_equal(p->nranges, 4);
    assert_int_equal(p->ranges[2].len, 42);
    /* split a range: its tags stay alone from now on */
    s7_plan_split(p, 2);
    struct fb_err err = {0};
    assert_int_equal(s7_plan_layout(p, 240, &err), 0);
    assert_int_equal(p->nranges, 7);
    check_layout(p, 240);
    s7_plan_free(p);
}

static void test_plan_limits(void **state)
{
    (void)state;
    struct s7_addr st[64];
    /* a 1000-byte string at PDU 240: chunks of 222, one per request */
    const char *big[] = {"DB3.DBB0:wstring[498]"};
    struct s7_plan *p = plan_of(big, 1, 0, 240, st);
    assert_int_equal(p->nranges, 1);
    assert_int_equal(p->ranges[0].len, 1000);
    assert_int_equal(p->nchunks, 5);
    assert_int_equal(p->chunks[0].len, 222);
    assert_int_equal(p->nreqs, 5);
    /* the same at PDU 960: chunks of 942, two items in two requests */
    struct fb_err err = {0};
    assert_int_equal(s7_plan_layout(p, 960, &err), 0);
    check_layout(p, 960);
    assert_int_equal(p->nchunks, 2);
    assert_int_equal(p->nreqs, 2);
    s7_plan_free(p);

    /* 25 single-word items in different DBs: 19 per request at 240 (12+12n), 20 at 960 */
    char names[25][24];
    const char *many[25];
    for (int i = 0; i < 25; i++) {
        snprintf(names[i], sizeof names[i], "DB%d.DBW0", i + 1);
        many[i] = names[i];
    }
    p = plan_of(many, 25, 32, 240, st);
    assert_int_equal(p->nreqs, 2);
    assert_int_equal(p->reqs[0].n, 19);
    assert_int_equal(s7_plan_layout(p, 960, &err), 0);
    check_layout(p, 960);
    assert_int_equal(p->reqs[0].n, 20);
    s7_plan_free(p);

    /* many medium items: the reply formula binds */
    for (int i = 0; i < 25; i++) {
        snprintf(names[i], sizeof names[i], "DB%d.DBB0:string[40]", i + 1);
        many[i] = names[i];
    }
    p = plan_of(many, 25, 32, 240, st);
    assert_int_equal(p->reqs[0].n, 4); /* 14 + 4·(4+42) = 198; a fifth would be 244 */
    s7_plan_free(p);

    /* counters: element addressing, merged */
    const char *ctr[] = {"C1", "C2", "C3", "T1"};
    p = plan_of(ctr, 4, 0, 240, st);
    assert_int_equal(p->nranges, 2);
    assert_int_equal(p->ranges[0].area, S7_AREA_C);
    assert_int_equal(p->ranges[0].start, 2);
    assert_int_equal(p->ranges[0].len, 6);
    s7_plan_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_forms),  cmocka_unit_test(test_addr_index),    cmocka_unit_test(test_addr_errors),
        cmocka_unit_test(test_opts),        cmocka_unit_test(test_build_frames),  cmocka_unit_test(test_cotp),
        cmocka_unit_test(test_setup_reply), cmocka_unit_test(test_read_reply),    cmocka_unit_test(test_write_reply),
        cmocka_unit_test(test_codec),       cmocka_unit_test(test_encode_errors), cmocka_unit_test(test_plan_merge),
        cmocka_unit_test(test_plan_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
