/* test_modbus_proto.c — the Modbus codec, address parser, options and read
 * planner, without sockets.  Register arrays are computed by hand (not by our
 * own encoder), then the encoder is checked against the same arrays and by
 * round trips over every type and order. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "south/modbus/modbus_proto.h"

/* ------------------------------------------------------------ helpers */
static struct mb_addr addr_ok(const char *text, const char *order)
{
    struct mb_addr_in in = {.text = text, .order = order};
    struct mb_addr a;
    struct fb_err err = {0};
    int rc = mb_addr_parse(&in, &a, &err);
    if (rc) fprintf(stderr, "parse %s/%s: %s\n", text, order ? order : "-", err.msg);
    assert_int_equal(rc, 0);
    return a;
}

/* Parses and expects an error whose message contains want. */
static void addr_err(const struct mb_addr_in *in, const char *want)
{
    struct mb_addr a;
    struct fb_err err = {0};
    int rc = mb_addr_parse(in, &a, &err);
    if (rc == 0 || !strstr(err.msg, want))
        fprintf(stderr, "addr '%s': rc %d msg '%s', want '%s'\n", in->text, rc, err.msg, want);
    assert_true(rc < 0);
    assert_non_null(strstr(err.msg, want));
}

static void addr_err_t(const char *text, const char *order, const char *want)
{
    struct mb_addr_in in = {.text = text, .order = order};
    addr_err(&in, want);
}

static struct fb_value dec(const struct mb_addr *a, const uint16_t *regs, uint32_t *q)
{
    static char sbuf[300];
    struct fb_value v;
    *q = mb_decode(a, regs, NULL, &v, sbuf, sizeof sbuf);
    return v;
}

/* Decodes regs and checks the encoder gives back exactly regs. */
static struct fb_value dec_enc(const char *text, const char *order, const uint16_t *regs)
{
    struct mb_addr a = addr_ok(text, order);
    uint32_t q;
    struct fb_value v = dec(&a, regs, &q);
    assert_int_equal(q, FB_Q_GOOD);
    uint16_t back[MB_MAX_READ_REGS];
    struct fb_err err = {0};
    int n = mb_encode(&a, &v, back, MB_MAX_READ_REGS, &err);
    assert_int_equal(n, a.count);
    for (int i = 0; i < n; i++) {
        if (back[i] != regs[i]) fprintf(stderr, "%s/%s reg %d: %04X != %04X\n", text, order, i, back[i], regs[i]);
        assert_int_equal(back[i], regs[i]);
    }
    return v;
}

static const char *const orders4[] = {"ABCD", "CDAB", "BADC", "DCBA"};

/* ------------------------------------------------------------ decoding */
static void test_float32_orders(void **state)
{
    (void)state;
    const uint16_t r[4][2] = {{0x3FC0, 0x0000}, {0x0000, 0x3FC0}, {0xC03F, 0x0000}, {0x0000, 0xC03F}};
    for (int i = 0; i < 4; i++) {
        struct fb_value v = dec_enc("hr:0:float32", orders4[i], r[i]);
        assert_int_equal(v.type, FB_T_FLOAT32);
        assert_true(v.f == 1.5);
    }
    /* a less symmetric value: -123.456f = 0xC2F6E979 */
    const uint16_t s[4][2] = {{0xC2F6, 0xE979}, {0xE979, 0xC2F6}, {0xF6C2, 0x79E9}, {0x79E9, 0xF6C2}};
    for (int i = 0; i < 4; i++) {
        struct fb_value v = dec_enc("hr:0:float32", orders4[i], s[i]);
        assert_true((float)v.f == -123.456f);
    }
}

static void test_int32_orders(void **state)
{
    (void)state;
    const uint16_t u[4][2] = {{0x1234, 0x5678}, {0x5678, 0x1234}, {0x3412, 0x7856}, {0x7856, 0x3412}};
    for (int i = 0; i < 4; i++) {
        struct fb_value v = dec_enc("ir:0:uint32", orders4[i], u[i]);
        assert_int_equal(v.type, FB_T_UINT32);
        assert_int_equal(v.u, 0x12345678u);
    }
    const uint16_t n[4][2] = {{0xFFFF, 0xFFFE}, {0xFFFE, 0xFFFF}, {0xFFFF, 0xFEFF}, {0xFEFF, 0xFFFF}};
    for (int i = 0; i < 4; i++) {
        struct fb_value v = dec_enc("hr:0:int32", orders4[i], n[i]);
        assert_int_equal(v.type, FB_T_INT32);
        assert_int_equal(v.i, -2);
    }
    const uint16_t big[2] = {0xFFFF, 0xFFFF};
    assert_int_equal(dec_enc("hr:0:uint32", NULL, big).u, 4294967295u);
    const uint16_t minr[2] = {0x8000, 0x0000};
    assert_int_equal(dec_enc("hr:0:int32", NULL, minr).i, INT32_MIN);
}

static void test_int16(void **state)
{
    (void)state;
    const uint16_t a[1] = {0xFB2E}, b[1] = {0x2EFB}; /* -1234 */
    assert_int_equal(dec_enc("hr:0", NULL, a).i, -1234);
    assert_int_equal(dec_enc("hr:0:int16", "ABCD", a).i, -1234);
    assert_int_equal(dec_enc("hr:0:int16", "BADC", b).i, -1234);
    assert_int_equal(dec_enc("hr:0:int16", "BA", b).i, -1234);
    assert_int_equal(dec_enc("hr:0", NULL, a).type, FB_T_INT16);
    const uint16_t m[1] = {0xFFFF};
    struct fb_value v = dec_enc("ir:3:uint16", NULL, m);
    assert_int_equal(v.type, FB_T_UINT16);
    assert_int_equal(v.u, 65535);
    const uint16_t one[1] = {0x0001}, zero[1] = {0};
    assert_true(dec_enc("hr:0:bool", NULL, one).b);
    assert_false(dec_enc("hr:0:bool", NULL, zero).b);
}

static void test_64bit_orders(void **state)
{
    (void)state;
    /* 0x0123456789ABCDEF = 81985529216486895, beyond 2^53 */
    const char *o8[] = {"ABCDEFGH", "GHEFCDAB", "BADCFEHG", "HGFEDCBA"};
    const uint16_t r[4][4] = {{0x0123, 0x4567, 0x89AB, 0xCDEF},
                              {0xCDEF, 0x89AB, 0x4567, 0x0123},
                              {0x2301, 0x6745, 0xAB89, 0xEFCD},
                              {0xEFCD, 0xAB89, 0x6745, 0x2301}};
    for (int i = 0; i < 4; i++) {
        struct fb_value v = dec_enc("hr:0:uint64", o8[i], r[i]);
        assert_int_equal(v.type, FB_T_UINT64);
        assert_true(v.u == 81985529216486895ull);
        /* four-letter names mean the matching 64-bit order */
        v = dec_enc("hr:0:int64", orders4[i], r[i]);
        assert_true(v.i == 81985529216486895ll);
    }
    /* -(2^53+1) = 0xFFDFFFFFFFFFFFFF */
    const uint16_t n[4] = {0xFFDF, 0xFFFF, 0xFFFF, 0xFFFF};
    assert_true(dec_enc("hr:0:int64", NULL, n).i == -9007199254740993ll);
    const uint16_t nc[4] = {0xFFFF, 0xFFFF, 0xFFFF, 0xFFDF};
    assert_true(dec_enc("hr:0:int64", "CDAB", nc).i == -9007199254740993ll);
    const uint16_t umax[4] = {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE};
    assert_true(dec_enc("hr:0:uint64", NULL, umax).u == 18446744073709551614ull);
    /* float64 1.5 = 0x3FF8000000000000 */
    const uint16_t f[4][4] = {{0x3FF8, 0, 0, 0}, {0, 0, 0, 0x3FF8}, {0xF83F, 0, 0, 0}, {0, 0, 0, 0xF83F}};
    for (int i = 0; i < 4; i++) {
        struct fb_value v = dec_enc("hr:0:float64", orders4[i], f[i]);
        assert_int_equal(v.type, FB_T_FLOAT64);
        assert_true(v.f == 1.5);
    }
    /* pi = 0x400921FB54442D18 */
    const uint16_t pi[4] = {0x2D18, 0x5444, 0x21FB, 0x4009};
    assert_true(dec_enc("hr:0:float64", "GHEFCDAB", pi).f == M_PI);
}

static void test_bcd(void **state)
{
    (void)state;
    const uint16_t a[1] = {0x1234};
    struct fb_value v = dec_enc("hr:0:bcd16", NULL, a);
    assert_int_equal(v.type, FB_T_UINT16);
    assert_int_equal(v.u, 1234);
    const uint16_t b[2] = {0x1234, 0x5678}, c[2] = {0x5678, 0x1234};
    assert_int_equal(dec_enc("hr:0:bcd32", NULL, b).u, 12345678);
    assert_int_equal(dec_enc("hr:0:bcd32", "CDAB", c).u, 12345678);
    assert_int_equal(dec_enc("hr:0:bcd32", NULL, b).type, FB_T_UINT32);
    const uint16_t d[1] = {0x0999};
    assert_int_equal(dec_enc("hr:0:bcd16", NULL, d).u, 999);

    struct mb_addr ad = addr_ok("hr:0:bcd16", NULL);
    uint32_t q;
    const uint16_t bad[1] = {0x12A4};
    dec(&ad, bad, &q);
    assert_int_equal(q, FB_Q_BAD_DECODING);
    struct mb_addr ad32 = addr_ok("hr:0:bcd32", NULL);
    const uint16_t bad32[2] = {0x1234, 0x567F};
    dec(&ad32, bad32, &q);
    assert_int_equal(q, FB_Q_BAD_DECODING);

    /* encode out of range */
    uint16_t out[2];
    struct fb_err err = {0};
    struct fb_value big = {.type = FB_T_UINT16, .u = 10000};
    assert_int_equal(mb_encode(&ad, &big, out, 2, &err), FB_ERANGE);
    struct fb_value ok = {.type = FB_T_UINT32, .u = 99999999};
    assert_int_equal(mb_encode(&ad32, &ok, out, 2, &err), 2);
    assert_int_equal(out[0], 0x9999);
    assert_int_equal(out[1], 0x9999);
}

static void test_strings(void **state)
{
    (void)state;
    const uint16_t r[3] = {0x4845, 0x4C4C, 0x4F00}; /* "HELLO\0" */
    struct fb_value v = dec_enc("hr:0:string[6]", NULL, r);
    assert_int_equal(v.type, FB_T_STRING);
    assert_int_equal(v.s.len, 5);
    assert_memory_equal(v.s.p, "HELLO", 5);
    const uint16_t s[3] = {0x4548, 0x4C4C, 0x004F};
    v = dec_enc("hr:0:string[6]", "BADC", s);
    assert_int_equal(v.s.len, 5);
    assert_memory_equal(v.s.p, "HELLO", 5);

    /* trailing spaces trimmed; odd length uses the high byte of the last register */
    struct mb_addr a = addr_ok("hr:0:string[5]", NULL);
    assert_int_equal(a.count, 3);
    const uint16_t t[3] = {0x4142, 0x2020, 0x2058};
    uint32_t q;
    v = dec(&a, t, &q);
    assert_int_equal(v.s.len, 2);
    assert_memory_equal(v.s.p, "AB", 2);
    const uint16_t u[3] = {0x4142, 0x4344, 0x4546};
    v = dec(&a, u, &q);
    assert_int_equal(v.s.len, 5);
    assert_memory_equal(v.s.p, "ABCDE", 5);

    /* encoding pads with NULs; too long is refused */
    uint16_t out[3];
    struct fb_err err = {0};
    struct fb_value w = {.type = FB_T_STRING};
    w.s.p = "Hi";
    w.s.len = 2;
    struct mb_addr a6 = addr_ok("hr:0:string[6]", NULL);
    assert_int_equal(mb_encode(&a6, &w, out, 3, &err), 3);
    assert_int_equal(out[0], 0x4869);
    assert_int_equal(out[1], 0);
    assert_int_equal(out[2], 0);
    w.s.p = "TOOLONG";
    w.s.len = 7;
    assert_int_equal(mb_encode(&a6, &w, out, 3, &err), FB_ERANGE);
}

static void test_bits(void **state)
{
    (void)state;
    struct mb_addr a = addr_ok("co:3", NULL);
    assert_int_equal(a.type, FB_T_BOOL);
    assert_int_equal(a.table, MB_CO);
    uint8_t on = 1, off = 0;
    struct fb_value v;
    char sb[4];
    assert_int_equal(mb_decode(&a, NULL, &on, &v, sb, sizeof sb), FB_Q_GOOD);
    assert_true(v.b);
    mb_decode(&a, NULL, &off, &v, sb, sizeof sb);
    assert_false(v.b);

    struct mb_addr rb = addr_ok("hr:7.3", NULL);
    assert_true(rb.has_bit);
    assert_int_equal(rb.bit, 3);
    assert_int_equal(rb.type, FB_T_BOOL);
    uint16_t r = 0x0008;
    mb_decode(&rb, &r, NULL, &v, sb, sizeof sb);
    assert_true(v.b);
    r = 0xFFF7;
    mb_decode(&rb, &r, NULL, &v, sb, sizeof sb);
    assert_false(v.b);
    struct mb_addr b15 = addr_ok("ir:0.15", NULL);
    r = 0x8000;
    mb_decode(&b15, &r, NULL, &v, sb, sizeof sb);
    assert_true(v.b);

    uint16_t out[1];
    struct fb_err err = {0};
    struct fb_value t = {.type = FB_T_BOOL, .b = true};
    assert_int_equal(mb_encode(&a, &t, out, 1, &err), 1);
    assert_int_equal(out[0], 1);
}

/* Every type × order: encode → decode is the identity. */
static void test_round_trip(void **state)
{
    (void)state;
    const char *types[] = {"int16",  "uint16",  "int32",   "uint32", "int64",
                           "uint64", "float32", "float64", "bcd16",  "bcd32"};
    const char *orders[] = {NULL, "ABCD", "CDAB", "BADC", "DCBA", "ABCDEFGH", "GHEFCDAB", "BADCFEHG", "HGFEDCBA"};
    const double samples[] = {0, 1, -1, 42, -32768, 32767, 65535, 1.5, -123.25, 1e9, 99999999};
    int checked = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (size_t oi = 0; oi < sizeof orders / sizeof *orders; oi++) {
            char text[64];
            snprintf(text, sizeof text, "hr:10:%s", types[ti]);
            struct mb_addr_in in = {.text = text, .order = orders[oi]};
            struct mb_addr a;
            struct fb_err err = {0};
            if (mb_addr_parse(&in, &a, &err) != 0) continue; /* order not valid for width */
            for (size_t si = 0; si < sizeof samples / sizeof *samples; si++) {
                struct fb_value v = {.type = FB_T_FLOAT64, .f = samples[si]};
                uint16_t regs[4];
                int n = mb_encode(&a, &v, regs, 4, &err);
                if (n < 0) {
                    assert_int_equal(n, FB_ERANGE); /* e.g. -1 as uint16 */
                    continue;
                }
                struct fb_value back;
                char sb[8];
                assert_int_equal(mb_decode(&a, regs, NULL, &back, sb, sizeof sb), FB_Q_GOOD);
                double d;
                assert_true(fb_value_to_double(&back, &d));
                /* integers get the rounded value; float32 the nearest float */
                double want = fb_type_is_int((enum fb_type)a.type) ? round(samples[si])
                              : a.type == FB_T_FLOAT32             ? (double)(float)samples[si]
                                                                   : samples[si];
                if (d != want)
                    fprintf(stderr, "%s/%s: %g → %g (want %g)\n", text, orders[oi] ? orders[oi] : "-", samples[si], d,
                            want);
                assert_true(d == want);
                checked++;
            }
        }
    assert_true(checked > 300);

    /* 64-bit integers beyond 2^53 survive exactly in both directions */
    const char *o64[] = {"ABCD", "CDAB", "BADC", "DCBA"};
    for (int i = 0; i < 4; i++) {
        struct mb_addr a = addr_ok("hr:0:int64", o64[i]);
        struct fb_value v = {.type = FB_T_INT64, .i = INT64_MIN + 12345};
        uint16_t regs[4];
        struct fb_err err = {0};
        assert_int_equal(mb_encode(&a, &v, regs, 4, &err), 4);
        struct fb_value back;
        char sb[4];
        mb_decode(&a, regs, NULL, &back, sb, sizeof sb);
        assert_true(back.i == INT64_MIN + 12345);
        struct mb_addr u = addr_ok("hr:0:uint64", o64[i]);
        v.type = FB_T_UINT64;
        v.u = UINT64_MAX - 7;
        assert_int_equal(mb_encode(&u, &v, regs, 4, &err), 4);
        mb_decode(&u, regs, NULL, &back, sb, sizeof sb);
        assert_true(back.u == UINT64_MAX - 7);
    }
}

static void test_encode_range(void **state)
{
    (void)state;
    struct fb_err err = {0};
    uint16_t regs[4];
    struct mb_addr a = addr_ok("hr:0:int16", NULL);
    struct fb_value v = {.type = FB_T_INT64, .i = 40000};
    assert_int_equal(mb_encode(&a, &v, regs, 4, &err), FB_ERANGE);
    v.i = -32768;
    assert_int_equal(mb_encode(&a, &v, regs, 4, &err), 1);
    assert_int_equal(regs[0], 0x8000);
    struct mb_addr u = addr_ok("hr:0:uint16", NULL);
    v.i = -1;
    assert_int_equal(mb_encode(&u, &v, regs, 4, &err), FB_ERANGE);
    struct mb_addr f = addr_ok("hr:0:float32", NULL);
    struct fb_value big = {.type = FB_T_FLOAT64, .f = 1e300};
    assert_int_equal(mb_encode(&f, &big, regs, 4, &err), FB_ERANGE);
    struct fb_value s = {.type = FB_T_STRING};
    s.s.p = "1";
    s.s.len = 1;
    assert_true(mb_encode(&a, &s, regs, 4, &err) < 0);
    /* hand-computed encode: float32 1.5 CDAB */
    struct mb_addr fc = addr_ok("hr:0:float32", "CDAB");
    struct fb_value x = {.type = FB_T_FLOAT32, .f = 1.5};
    assert_int_equal(mb_encode(&fc, &x, regs, 4, &err), 2);
    assert_int_equal(regs[0], 0x0000);
    assert_int_equal(regs[1], 0x3FC0);
}

/* ------------------------------------------------------------ addresses */
static void test_addr_forms(void **state)
{
    (void)state;
    struct {
        const char *text;
        int table, addr, count, type;
    } ok[] = {
        {"hr:0", MB_HR, 0, 1, FB_T_INT16},
        {"HR:12", MB_HR, 12, 1, FB_T_INT16},
        {"ir:5:float32", MB_IR, 5, 2, FB_T_FLOAT32},
        {"co:7", MB_CO, 7, 1, FB_T_BOOL},
        {"di:9:bool", MB_DI, 9, 1, FB_T_BOOL},
        {"hr:65535", MB_HR, 65535, 1, FB_T_INT16},
        {"hr:65532:float64", MB_HR, 65532, 4, FB_T_FLOAT64},
        {"40001", MB_HR, 0, 1, FB_T_INT16},
        {"40010:uint32", MB_HR, 9, 2, FB_T_UINT32},
        {"30001", MB_IR, 0, 1, FB_T_INT16},
        {"00001", MB_CO, 0, 1, FB_T_BOOL},
        {"10001", MB_DI, 0, 1, FB_T_BOOL},
        {"49999", MB_HR, 9998, 1, FB_T_INT16},
        {"400001", MB_HR, 0, 1, FB_T_INT16},
        {"465536", MB_HR, 65535, 1, FB_T_INT16},
        {"310000", MB_IR, 9999, 1, FB_T_INT16},
        {"hr:3:string[10]", MB_HR, 3, 5, FB_T_STRING},
        {"hr:3:string[9]", MB_HR, 3, 5, FB_T_STRING},
        {"hr:3:bcd32", MB_HR, 3, 2, FB_T_UINT32},
        {"hr:3:int64", MB_HR, 3, 4, FB_T_INT64},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        struct mb_addr a = addr_ok(ok[i].text, NULL);
        assert_int_equal(a.table, ok[i].table);
        assert_int_equal(a.addr, ok[i].addr);
        assert_int_equal(a.count, ok[i].count);
        assert_int_equal(a.type, ok[i].type);
    }
    struct mb_addr b = addr_ok("40001.4", NULL);
    assert_true(b.has_bit);
    assert_int_equal(b.bit, 4);
    assert_int_equal(b.addr, 0);
    struct mb_addr s = addr_ok("hr:0:string[9]", NULL);
    assert_int_equal(mb_str_len(&s), 9);

    /* base = 1 shifts the 0-based forms, not the Modicon ones */
    struct mb_addr_in in = {.text = "hr:1", .base = 1};
    struct mb_addr a;
    struct fb_err err = {0};
    assert_int_equal(mb_addr_parse(&in, &a, &err), 0);
    assert_int_equal(a.addr, 0);
    in.text = "40001";
    assert_int_equal(mb_addr_parse(&in, &a, &err), 0);
    assert_int_equal(a.addr, 0);
    in.text = "hr:65536";
    assert_int_equal(mb_addr_parse(&in, &a, &err), 0);
    assert_int_equal(a.addr, 65535);
    in.text = "hr:0";
    addr_err(&in, "below the device base 1");

    /* type from the config's `type:` and the string length from str_len */
    struct mb_addr_in t = {.text = "hr:4", .type = FB_T_FLOAT32, .order = "CDAB"};
    assert_int_equal(mb_addr_parse(&t, &a, &err), 0);
    assert_int_equal(a.count, 2);
    assert_true(a.swap_words);
    struct mb_addr_in st = {.text = "hr:4", .type = FB_T_STRING, .str_len = 8};
    assert_int_equal(mb_addr_parse(&st, &a, &err), 0);
    assert_int_equal(a.count, 4);
    struct mb_addr_in same = {.text = "hr:4:bcd16", .type = FB_T_UINT16};
    assert_int_equal(mb_addr_parse(&same, &a, &err), 0);
    assert_true(a.bcd);
}

static void test_addr_index(void **state)
{
    (void)state;
    struct mb_addr a;
    struct fb_err err = {0};
    struct mb_addr_in in = {.text = "hr:10:float32", .index = 3};
    assert_int_equal(mb_addr_parse(&in, &a, &err), 0);
    assert_int_equal(a.addr, 16);
    in.text = "co:10";
    assert_int_equal(mb_addr_parse(&in, &a, &err), 0);
    assert_int_equal(a.addr, 13);
    in.text = "hr:10:string[5]";
    assert_int_equal(mb_addr_parse(&in, &a, &err), 0);
    assert_int_equal(a.addr, 19);
    in.text = "hr:10.14";
    assert_int_equal(mb_addr_parse(&in, &a, &err), 0);
    assert_int_equal(a.addr, 11);
    assert_int_equal(a.bit, 1);
    in.text = "hr:65534:float32";
    in.index = 1;
    addr_err(&in, "beyond 65535");
}

static void test_addr_errors(void **state)
{
    (void)state;
    addr_err_t("hx:0", NULL, "unknown table 'hx' in 'hx:0' (expected hr, ir, co, di or 40001-style)");
    addr_err_t("", NULL, "empty");
    addr_err_t("hr", NULL, "unknown table");
    addr_err_t("hr:", NULL, "bad address");
    addr_err_t("hr:-1", NULL, "bad address");
    addr_err_t("hr:1x", NULL, "bad address");
    addr_err_t("hr:70000", NULL, "out of range");
    addr_err_t("hr:65535:float32", NULL, "type float32 needs 2 registers");
    addr_err_t("hr:0:flaot32", NULL, "unknown type 'flaot32'");
    addr_err_t("hr:0:string", NULL, "needs a length");
    addr_err_t("hr:0:string[0]", NULL, "out of range");
    addr_err_t("hr:0:string[x]", NULL, "expected string[N]");
    addr_err_t("hr:0:string[300]", NULL, "out of range");
    addr_err_t("hr:0.16", NULL, "bad bit number");
    addr_err_t("hr:0.3:int16", NULL, "not valid");
    addr_err_t("co:0:int16", NULL, "type int16 is not valid for 'co:0:int16' (a coil");
    addr_err_t("co:0.1", NULL, "no bits");
    addr_err_t("20001", NULL, "first digit");
    addr_err_t("123", NULL, "not a Modbus address");
    addr_err_t("40000", NULL, "out of range");
    addr_err_t("465537", NULL, "out of range");
    addr_err_t("hr:0:int16", "CDAB", "order CDAB is not valid for int16");
    addr_err_t("hr:0:int32", "ABCDEFGH", "is for 64-bit values, not int32");
    addr_err_t("hr:0:float32", "XYZW", "unknown order 'XYZW'");
    addr_err_t("co:0", "DCBA", "order DCBA is not valid for bool");
    addr_err_t("hr:0:string[4]", "CDAB", "not valid for string[4]");
    struct mb_addr_in conflict = {.text = "hr:0:int16", .type = FB_T_FLOAT32};
    addr_err(&conflict, "conflicts");
    struct mb_addr_in i8 = {.text = "hr:0", .type = FB_T_INT8};
    addr_err(&i8, "not supported by Modbus");
}

/* ------------------------------------------------------------ options */
static void test_opts(void **state)
{
    (void)state;
    struct fb_url_kv q[] = {{"unit", "7"},        {"timeout", "250ms"}, {"max_gap", "0"}, {"write_single", "fc16"},
                            {"bit_write", "rmw"}, {"base", "1"}};
    struct fb_url u = {.scheme = "modbus-tcp", .host = "127.0.0.1", .path = "", .port = 5020, .q = q, .nq = 6};
    struct mb_opts o;
    struct fb_err err = {0};
    assert_int_equal(mb_opts_parse(&u, 1000000000, 5000000, &o, &err), 0);
    assert_int_equal(o.unit, 7);
    assert_true(o.timeout_ns == 250000000);
    assert_true(o.delay_ns == 5000000); /* from the device default */
    assert_int_equal(o.max_gap, 0);
    assert_int_equal(o.max_regs, 125);
    assert_true(o.write_single_fc16);
    assert_true(o.bit_write_rmw);
    assert_false(o.write_coil_fc15);
    assert_int_equal(o.base, 1);
    char *k = mb_opts_conn_key(&o);
    assert_string_equal(k, "tcp:127.0.0.1:5020");
    free(k);

    struct fb_url d = {.scheme = "modbus-tcp", .host = "plc", .path = ""};
    assert_int_equal(mb_opts_parse(&d, 0, 0, &o, &err), 0);
    assert_int_equal(o.port, 502);
    assert_int_equal(o.unit, 1);

    struct fb_url_kv bad[] = {{"unti", "1"}};
    d.q = bad;
    d.nq = 1;
    assert_int_equal(mb_opts_parse(&d, 0, 0, &o, &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "unknown Modbus option 'unti'"));
    struct fb_url_kv baud[] = {{"baud", "9600"}}; /* serial key on TCP */
    d.q = baud;
    assert_int_equal(mb_opts_parse(&d, 0, 0, &o, &err), FB_EINVAL);
    struct fb_url_kv regs[] = {{"max_regs", "126"}};
    d.q = regs;
    assert_int_equal(mb_opts_parse(&d, 0, 0, &o, &err), FB_EINVAL);
    struct fb_url_kv ws[] = {{"write_single", "fc3"}};
    d.q = ws;
    assert_int_equal(mb_opts_parse(&d, 0, 0, &o, &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "fc6 or fc16"));
    struct fb_url_kv to[] = {{"timeout", "soon"}};
    d.q = to;
    assert_int_equal(mb_opts_parse(&d, 0, 0, &o, &err), FB_EINVAL);
    struct fb_url_kv un[] = {{"unit", "250"}};
    d.q = un;
    assert_int_equal(mb_opts_parse(&d, 0, 0, &o, &err), FB_EINVAL);

    struct fb_url_kv rq[] = {{"baud", "19200"}, {"parity", "e"}, {"unit", "3"}, {"stop", "2"}};
    struct fb_url r = {.scheme = "modbus-rtu", .host = "", .path = "/dev/ttyUSB0", .q = rq, .nq = 4};
    assert_int_equal(mb_opts_parse(&r, 0, 0, &o, &err), 0);
    assert_int_equal(o.transport, MB_RTU);
    assert_int_equal(o.baud, 19200);
    assert_int_equal(o.parity, 'E');
    assert_int_equal(o.stop_bits, 2);
    assert_int_equal(o.data_bits, 8);
    k = mb_opts_conn_key(&o);
    assert_string_equal(k, "rtu:/dev/ttyUSB0");
    free(k);
    struct fb_url r2 = {.scheme = "modbus-rtu", .host = "dev", .path = "/ttyUSB0"};
    assert_int_equal(mb_opts_parse(&r2, 0, 0, &o, &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "three slashes"));
    struct fb_url_kv u0[] = {{"unit", "0"}};
    r.q = u0;
    r.nq = 1;
    assert_int_equal(mb_opts_parse(&r, 0, 0, &o, &err), FB_EINVAL);
    struct fb_url nohost = {.scheme = "modbus-tcp", .host = "", .path = ""};
    assert_int_equal(mb_opts_parse(&nohost, 0, 0, &o, &err), FB_EINVAL);
}

/* ------------------------------------------------------------ planner */
struct pl {
    struct mb_addr a[64];
    struct fb_tag t[64]; /* the device's tags: t[i].addr = &a[i] */
    struct mb_item it[64];
    uint32_t n;
};

static void pl_add(struct pl *p, const char *text)
{
    p->a[p->n] = addr_ok(text, NULL);
    p->a[p->n].tag = p->n;
    p->t[p->n].addr = &p->a[p->n];
    p->it[p->n].ix = p->n;
    p->n++;
}

static struct mb_plan *pl_build(struct pl *p, int gap, int regs, int bits)
{
    struct mb_limits lim = {gap, regs, bits};
    struct mb_plan *plan;
    struct fb_err err = {0};
    assert_int_equal(mb_plan_build(p->t, p->it, p->n, &lim, &plan, &err), 0);
    return plan;
}

static void test_plan_merge(void **state)
{
    (void)state;
    struct pl p = {0};
    pl_add(&p, "hr:20:float32"); /* 20-21 */
    pl_add(&p, "hr:0");          /* 0 */
    pl_add(&p, "hr:1:uint32");   /* 1-2 */
    pl_add(&p, "hr:12");         /* gap 9 after 2 → merge with gap 10 */
    pl_add(&p, "co:0");
    pl_add(&p, "co:5");
    pl_add(&p, "ir:0");
    pl_add(&p, "hr:0.3"); /* overlaps hr:0 */
    struct mb_plan *plan = pl_build(&p, 10, 125, 2000);
    /* tables: hr, ir, co → hr block 0..21, ir block, co block */
    assert_int_equal(plan->nblocks, 3);
    assert_int_equal(plan->blocks[0].table, MB_HR);
    assert_int_equal(plan->blocks[0].start, 0);
    assert_int_equal(plan->blocks[0].count, 22);
    assert_int_equal(plan->blocks[0].n, 5);
    assert_int_equal(plan->blocks[1].table, MB_IR);
    assert_int_equal(plan->blocks[2].table, MB_CO);
    assert_int_equal(plan->blocks[2].start, 0);
    assert_int_equal(plan->blocks[2].count, 6);
    assert_int_equal(plan->blocks[2].n, 2);
    /* every tag served exactly once */
    int seen[8] = {0};
    for (uint32_t b = 0; b < plan->nblocks; b++)
        for (uint32_t k = 0; k < plan->blocks[b].n; k++) {
            const struct mb_addr *a = mb_item_addr(p.t, &plan->items[plan->blocks[b].first + k]);
            seen[a->tag]++;
            assert_true(a->addr >= plan->blocks[b].start);
            assert_true(a->addr + a->count <= plan->blocks[b].start + plan->blocks[b].count);
        }
    for (int i = 0; i < 8; i++) assert_int_equal(seen[i], 1);
    mb_plan_free(plan);

    /* gap 0: only adjacent values merge */
    plan = pl_build(&p, 0, 125, 2000);
    assert_int_equal(plan->blocks[0].count, 3); /* hr:0..2 */
    assert_int_equal(plan->nblocks, 3 + 2 + 1); /* hr 0-2, 12, 20-21; ir; co 0; co 5 */
    mb_plan_free(plan);
}

static void test_plan_limits(void **state)
{
    (void)state;
    /* 64 float32 values back to back: 128 registers → 125 limit → 2 blocks,
     * no value split (62 values = 124 registers in the first) */
    struct pl p = {0};
    char t[32];
    for (int i = 0; i < 64; i++) {
        snprintf(t, sizeof t, "hr:%d:float32", i * 2);
        pl_add(&p, t);
    }
    struct mb_plan *plan = pl_build(&p, 10, 125, 2000);
    assert_int_equal(plan->nblocks, 2);
    assert_int_equal(plan->blocks[0].count, 124);
    assert_int_equal(plan->blocks[0].n, 62);
    assert_int_equal(plan->blocks[1].start, 124);
    assert_int_equal(plan->blocks[1].count, 4);
    mb_plan_free(plan);
    /* a smaller device limit */
    plan = pl_build(&p, 10, 10, 2000);
    assert_int_equal(plan->nblocks, 13);
    for (uint32_t b = 0; b < plan->nblocks; b++) assert_true(plan->blocks[b].count <= 10);
    mb_plan_free(plan);

    /* coils: 2000-bit limit */
    struct pl c = {0};
    pl_add(&c, "co:0");
    pl_add(&c, "co:1999");
    pl_add(&c, "co:2000");
    plan = pl_build(&c, 2000, 125, 2000);
    assert_int_equal(plan->nblocks, 2);
    assert_int_equal(plan->blocks[0].count, 2000);
    assert_int_equal(plan->blocks[1].start, 2000);
    mb_plan_free(plan);
    plan = pl_build(&c, 10, 125, 2000);
    assert_int_equal(plan->nblocks, 2); /* 0 | 1999,2000 */
    assert_int_equal(plan->blocks[1].count, 2);
    mb_plan_free(plan);

    /* a value bigger than max_regs is an error, not a split */
    struct pl s = {0};
    pl_add(&s, "hr:0:string[40]");
    struct mb_limits lim = {10, 10, 2000};
    struct mb_plan *bad;
    struct fb_err err = {0};
    assert_int_equal(mb_plan_build(s.t, s.it, s.n, &lim, &bad, &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "max_regs"));

    /* empty group */
    struct pl e = {0};
    plan = pl_build(&e, 10, 125, 2000);
    assert_int_equal(plan->nblocks, 0);
    mb_plan_free(plan);
}

static void test_plan_split(void **state)
{
    (void)state;
    struct pl p = {0};
    pl_add(&p, "hr:0");
    pl_add(&p, "hr:0.1");       /* same register: shares the split request */
    pl_add(&p, "hr:2:float32"); /* hole at 1 */
    pl_add(&p, "hr:6");
    pl_add(&p, "ir:0");
    pl_add(&p, "ir:1");
    struct mb_plan *plan = pl_build(&p, 10, 125, 2000);
    assert_int_equal(plan->nblocks, 2);
    assert_true(mb_plan_can_split(plan, p.t, 0));
    assert_int_equal(mb_plan_split(plan, p.t, 0), 3);
    assert_int_equal(plan->nblocks, 4);
    assert_int_equal(plan->splits, 1);
    assert_int_equal(plan->blocks[0].start, 0);
    assert_int_equal(plan->blocks[0].count, 1);
    assert_int_equal(plan->blocks[0].n, 2);
    assert_int_equal(plan->blocks[1].start, 2);
    assert_int_equal(plan->blocks[1].count, 2);
    assert_int_equal(plan->blocks[2].start, 6);
    assert_int_equal(plan->blocks[3].table, MB_IR); /* later block kept */
    assert_int_equal(plan->blocks[3].n, 2);
    /* split blocks are never split again; the memory is the plan itself */
    for (int i = 0; i < 3; i++) {
        assert_true(plan->blocks[i].split);
        assert_false(mb_plan_can_split(plan, p.t, (uint32_t)i));
        assert_int_equal(mb_plan_split(plan, p.t, (uint32_t)i), FB_EINVAL);
    }
    assert_true(mb_plan_can_split(plan, p.t, 3));
    assert_int_equal(mb_plan_split(plan, p.t, 3), 2);
    assert_int_equal(plan->nblocks, 5);
    assert_false(mb_plan_can_split(plan, p.t, 99));
    mb_plan_free(plan);

    /* a block of one value cannot be split */
    struct pl one = {0};
    pl_add(&one, "hr:0:float64");
    plan = pl_build(&one, 10, 125, 2000);
    assert_false(mb_plan_can_split(plan, one.t, 0));
    mb_plan_free(plan);
}

static void test_exceptions(void **state)
{
    (void)state;
    assert_int_equal(mb_exception_quality(2), FB_Q_BAD_NODE_UNKNOWN);
    assert_int_equal(mb_exception_quality(1), FB_Q_BAD_CONFIG);
    assert_int_equal(mb_exception_quality(3), FB_Q_BAD_CONFIG);
    assert_int_equal(mb_exception_quality(4), FB_Q_BAD_DEVICE_FAILURE);
    assert_int_equal(mb_exception_quality(5), FB_Q_BAD_DEVICE_FAILURE);
    assert_int_equal(mb_exception_quality(6), FB_Q_BAD_DEVICE_FAILURE);
    assert_int_equal(mb_exception_quality(10), FB_Q_BAD_NO_COMM);
    assert_int_equal(mb_exception_quality(11), FB_Q_BAD_NO_COMM);
    assert_int_equal(mb_exception_quality(99), FB_Q_BAD_COMM);
    assert_string_equal(mb_exception_text(2), "illegal data address");
}

/* Read requests over TCP are framed by modbus_proto.c, answers checked there */
static void test_tcp_frames(void **st)
{
    (void)st;
    uint8_t req[MB_TCP_REQ_LEN];
    mb_tcp_read_request(req, 0x1234, 7, MB_IR, 0x0102, 3);
    const uint8_t want_req[] = {0x12, 0x34, 0, 0, 0, 6, 7, 4, 0x01, 0x02, 0, 3};
    assert_memory_equal(req, want_req, sizeof want_req);

    uint16_t regs[3] = {0};
    uint8_t bits[16];
    int exc = -1;
    uint8_t ok[] = {0x12, 0x34, 0, 0, 0, 9, 7, 4, 6, 0xAB, 0xCD, 0, 1, 0xFF, 0xFE};
    assert_int_equal(mb_tcp_adu_len(ok), sizeof ok);
    assert_int_equal(mb_tcp_read_answer(req, ok, sizeof ok, regs, bits, &exc), MB_RSP_OK);
    assert_int_equal(regs[0], 0xABCD);
    assert_int_equal(regs[1], 1);
    assert_int_equal(regs[2], 0xFFFE);
    assert_int_equal(exc, 0);

    /* one thing wrong at a time */
    uint8_t bad[sizeof ok];
    memcpy(bad, ok, sizeof ok);
    bad[1] = 0x35;
    assert_int_equal(mb_tcp_read_answer(req, bad, sizeof bad, regs, bits, &exc), MB_RSP_BAD_TID);
    memcpy(bad, ok, sizeof ok);
    bad[3] = 1;
    assert_int_equal(mb_tcp_read_answer(req, bad, sizeof bad, regs, bits, &exc), MB_RSP_BAD_PROTO);
    memcpy(bad, ok, sizeof ok);
    bad[6] = 0; /* a device that does not echo the unit id: taken, as libmodbus does */
    assert_int_equal(mb_tcp_read_answer(req, bad, sizeof bad, regs, bits, &exc), MB_RSP_OK);
    memcpy(bad, ok, sizeof ok);
    bad[7] = 3;
    assert_int_equal(mb_tcp_read_answer(req, bad, sizeof bad, regs, bits, &exc), MB_RSP_BAD_FC);
    memcpy(bad, ok, sizeof ok);
    bad[8] = 4; /* two registers' bytes for a request of three */
    assert_int_equal(mb_tcp_read_answer(req, bad, sizeof bad, regs, bits, &exc), MB_RSP_BAD_LEN);
    assert_int_equal(mb_tcp_read_answer(req, ok, sizeof ok - 2, regs, bits, &exc), MB_RSP_BAD_LEN);
    assert_int_equal(mb_tcp_read_answer(req, ok, 8, regs, bits, &exc), MB_RSP_BAD_LEN);

    /* an exception */
    uint8_t ex[] = {0x12, 0x34, 0, 0, 0, 3, 7, 0x84, 2};
    assert_int_equal(mb_tcp_adu_len(ex), sizeof ex);
    assert_int_equal(mb_tcp_read_answer(req, ex, sizeof ex, regs, bits, &exc), MB_RSP_EXC);
    assert_int_equal(exc, 2);
    ex[7] = 0x83; /* an exception for another function */
    assert_int_equal(mb_tcp_read_answer(req, ex, sizeof ex, regs, bits, &exc), MB_RSP_BAD_FC);

    /* lengths no answer can have */
    uint8_t h[6] = {0, 0, 0, 0, 0, 2};
    assert_int_equal(mb_tcp_adu_len(h), 0);
    h[5] = 255;
    assert_int_equal(mb_tcp_adu_len(h), 0);
    h[5] = 254;
    assert_int_equal(mb_tcp_adu_len(h), MB_TCP_ADU_MAX);
    h[4] = 1;
    assert_int_equal(mb_tcp_adu_len(h), 0);

    /* coils: bits LSB first, 10 of them in two bytes */
    mb_tcp_read_request(req, 1, 1, MB_CO, 0, 10);
    assert_int_equal(req[7], 1);
    uint8_t co[] = {0, 1, 0, 0, 0, 5, 1, 1, 2, 0x05, 0x02};
    assert_int_equal(mb_tcp_read_answer(req, co, sizeof co, regs, bits, &exc), MB_RSP_OK);
    const uint8_t want_bits[10] = {1, 0, 1, 0, 0, 0, 0, 0, 0, 1};
    assert_memory_equal(bits, want_bits, sizeof want_bits);
    mb_tcp_read_request(req, 1, 1, MB_DI, 0, 10);
    assert_int_equal(req[7], 2);
    mb_tcp_read_request(req, 1, 1, MB_HR, 0, 10);
    assert_int_equal(req[7], 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_float32_orders), cmocka_unit_test(test_int32_orders), cmocka_unit_test(test_int16),
        cmocka_unit_test(test_64bit_orders),   cmocka_unit_test(test_bcd),          cmocka_unit_test(test_strings),
        cmocka_unit_test(test_bits),           cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_encode_range),
        cmocka_unit_test(test_addr_forms),     cmocka_unit_test(test_addr_index),   cmocka_unit_test(test_addr_errors),
        cmocka_unit_test(test_opts),           cmocka_unit_test(test_plan_merge),   cmocka_unit_test(test_plan_limits),
        cmocka_unit_test(test_plan_split),     cmocka_unit_test(test_exceptions),  cmocka_unit_test(test_tcp_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
