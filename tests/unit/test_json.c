/* test_json.c — the buffer and JSON writer (src/core/buf.c).
 * Number formatting is checked against the C library: every double/float we
 * write must read back (strtod/strtof) to identical bits, and no text with
 * one significant digit fewer may do so (shortest).  Millions of random bit
 * patterns plus "nice" decimals and subnormals, bounded to a few seconds. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static const char *dbl(struct fb_buf *b, double v)
{
    fb_buf_clear(b);
    fb_json_double(b, v);
    return fb_buf_cstr(b);
}

static const char *flt(struct fb_buf *b, float v)
{
    fb_buf_clear(b);
    fb_json_float(b, v);
    return fb_buf_cstr(b);
}

static void test_integers(void **state)
{
    (void)state;
    struct fb_buf b;
    fb_buf_init(&b);
    fb_json_i64(&b, INT64_MIN);
    fb_buf_putc(&b, ' ');
    fb_json_i64(&b, INT64_MAX);
    fb_buf_putc(&b, ' ');
    fb_json_u64(&b, UINT64_MAX);
    fb_buf_putc(&b, ' ');
    fb_json_i64(&b, 0);
    fb_buf_putc(&b, ' ');
    fb_json_i64(&b, -7);
    fb_buf_putc(&b, ' ');
    fb_json_u64(&b, 10);
    fb_buf_putc(&b, ' ');
    fb_json_i64(&b, 9007199254740993LL); /* beyond 2^53: exact */
    assert_string_equal(fb_buf_cstr(&b), "-9223372036854775808 9223372036854775807 "
                                         "18446744073709551615 0 -7 10 9007199254740993");
    /* every power of ten and its neighbours */
    uint64_t p = 1;
    for (int i = 0; i < 20; i++, p *= 10) {
        char want[32];
        for (int d = -1; d <= 1; d++) {
            uint64_t v = p + (uint64_t)d;
            snprintf(want, sizeof want, "%llu", (unsigned long long)v);
            fb_buf_clear(&b);
            fb_json_u64(&b, v);
            assert_string_equal(fb_buf_cstr(&b), want);
        }
    }
    fb_buf_free(&b);
}

static void test_double_known(void **state)
{
    (void)state;
    struct fb_buf b;
    fb_buf_init(&b);
    assert_string_equal(dbl(&b, 0.1), "0.1");
    assert_string_equal(dbl(&b, 0.3), "0.3");
    assert_string_equal(dbl(&b, 0.1 + 0.2), "0.30000000000000004");
    assert_string_equal(dbl(&b, 21.5), "21.5");
    assert_string_equal(dbl(&b, -1.25), "-1.25");
    assert_string_equal(dbl(&b, 100), "100");
    assert_string_equal(dbl(&b, 0), "0");
    assert_string_equal(dbl(&b, -0.0), "-0");
    assert_string_equal(dbl(&b, 1e21), "1e+21");
    assert_string_equal(dbl(&b, 1e20), "100000000000000000000");
    assert_string_equal(dbl(&b, 123456789012345678.0), "123456789012345680");
    assert_string_equal(dbl(&b, 9007199254740992.0), "9007199254740992");
    assert_string_equal(dbl(&b, 5e-324), "5e-324");
    assert_string_equal(dbl(&b, -5e-324), "-5e-324");
    assert_string_equal(dbl(&b, DBL_MAX), "1.7976931348623157e+308");
    assert_string_equal(dbl(&b, DBL_MIN), "2.2250738585072014e-308");
    assert_string_equal(dbl(&b, 2.225073858507201e-308), "2.225073858507201e-308"); /* largest subnormal */
    assert_string_equal(dbl(&b, 1e-7), "1e-7");
    assert_string_equal(dbl(&b, 1.5e-7), "1.5e-7");
    assert_string_equal(dbl(&b, 0.000001), "0.000001");
    assert_string_equal(dbl(&b, 1e22), "1e+22");
    assert_string_equal(dbl(&b, 1e23), "1e+23");
    assert_string_equal(dbl(&b, 1234.5678), "1234.5678");
    assert_string_equal(dbl(&b, 4.35), "4.35");
    assert_string_equal(dbl(&b, 2.0 / 3.0), "0.6666666666666666");
    assert_string_equal(dbl(&b, 9.5367431640625e-7), "9.5367431640625e-7"); /* 2^-20 */
    assert_string_equal(dbl(&b, NAN), "null");
    assert_string_equal(dbl(&b, INFINITY), "null");
    assert_string_equal(dbl(&b, -INFINITY), "null");
    fb_buf_free(&b);
}

static void test_float_known(void **state)
{
    (void)state;
    struct fb_buf b;
    fb_buf_init(&b);
    assert_string_equal(flt(&b, 21.5f), "21.5");
    assert_string_equal(flt(&b, 0.1f), "0.1");
    assert_string_equal(flt(&b, 0.3f), "0.3");
    assert_string_equal(flt(&b, -273.15f), "-273.15");
    assert_string_equal(flt(&b, 1e-45f), "1e-45"); /* smallest subnormal */
    assert_string_equal(flt(&b, FLT_MAX), "3.4028235e+38");
    assert_string_equal(flt(&b, FLT_MIN), "1.1754944e-38");
    assert_string_equal(flt(&b, 123456789.0f), "123456790");
    assert_string_equal(flt(&b, 16777216.0f), "16777216");
    assert_string_equal(flt(&b, 1e10f), "10000000000");
    assert_string_equal(flt(&b, -0.0f), "-0");
    assert_string_equal(flt(&b, NAN), "null");
    fb_buf_free(&b);
}

/* significant digits in a number text */
static int sig_digits(const char *s)
{
    int n = 0, last = 0;
    bool started = false;
    for (; *s && *s != 'e'; s++) {
        if (*s < '0' || *s > '9') continue;
        if (*s != '0') started = true;
        if (!started) continue;
        n++;
        if (*s != '0') last = n;
    }
    return last;
}

/* JSON number grammar, and no '+' before the mantissa */
static void check_syntax(const char *s)
{
    const char *p = s;
    if (*p == '-') p++;
    assert_true(*p >= '0' && *p <= '9');
    if (*p == '0') assert_true(p[1] == 0 || p[1] == '.' || p[1] == 'e');
    while (*p >= '0' && *p <= '9') p++;
    if (*p == '.') {
        p++;
        assert_true(*p >= '0' && *p <= '9');
        while (*p >= '0' && *p <= '9') p++;
    }
    if (*p == 'e') {
        p++;
        if (*p == '+' || *p == '-') p++;
        assert_true(*p >= '0' && *p <= '9');
        while (*p >= '0' && *p <= '9') p++;
    }
    assert_int_equal(*p, 0);
}

static void check_double(struct fb_buf *b, double v)
{
    if (!isfinite(v)) return;
    const char *s = dbl(b, v);
    double r = strtod(s, NULL);
    if (memcmp(&r, &v, 8) != 0) fail_msg("%.17g wrote %s which reads back as %.17g", v, s, r);
    int n = sig_digits(s);
    if (n > 1) {
        char t[48];
        snprintf(t, sizeof t, "%.*e", n - 2, v); /* the nearest text with n-1 digits */
        if (strtod(t, NULL) == v) fail_msg("%.17g wrote %s but %s is shorter", v, s, t);
    }
}

static void check_float(struct fb_buf *b, float v)
{
    if (!isfinite(v)) return;
    const char *s = flt(b, v);
    float r = strtof(s, NULL);
    if (memcmp(&r, &v, 4) != 0) fail_msg("%.9g wrote %s which reads back as %.9g", v, s, r);
    int n = sig_digits(s);
    if (n > 1) {
        char t[48];
        snprintf(t, sizeof t, "%.*e", n - 2, (double)v);
        if (strtof(t, NULL) == v) fail_msg("%.9g wrote %s but %s is shorter", v, s, t);
    }
}

static void test_double_random(void **state)
{
    (void)state;
    struct fb_buf b;
    fb_buf_init(&b);
    for (int i = 0; i < 600000; i++) { /* uniform bit patterns: all exponents */
        uint64_t x = rnd();
        double v;
        memcpy(&v, &x, 8);
        check_double(&b, v);
        if (i < 100) check_syntax(b.p);
    }
    for (int i = 0; i < 200000; i++) { /* subnormals */
        uint64_t x = rnd() & 0x800FFFFFFFFFFFFFull;
        double v;
        memcpy(&v, &x, 8);
        check_double(&b, v);
    }
    for (int i = 0; i < 300000; i++) { /* realistic magnitudes */
        uint64_t x = (rnd() & 0x800FFFFFFFFFFFFFull) | ((uint64_t)(1023 - 40 + (int)(rnd() % 80)) << 52);
        double v;
        memcpy(&v, &x, 8);
        check_double(&b, v);
    }
    static const double p10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
    for (int i = 0; i < 500000; i++) { /* "nice" decimals: n / 10^k, powers of two */
        double v = (double)(int64_t)(rnd() % 2000000001 - 1000000000) / p10[rnd() % 9];
        check_double(&b, v);
        if (i < 2000) {
            char want[40];
            snprintf(want, sizeof want, "%.15g", v); /* few digits: %.15g is exact and shortest */
            if (strchr(want, 'e') == NULL) assert_string_equal(b.p, want);
        }
    }
    for (int e = -1074; e <= 1023; e++) check_double(&b, ldexp(1.0, e));
    fb_buf_free(&b);
}

static void test_float_random(void **state)
{
    (void)state;
    struct fb_buf b;
    fb_buf_init(&b);
    for (int i = 0; i < 600000; i++) {
        uint32_t x = (uint32_t)rnd();
        float v;
        memcpy(&v, &x, 4);
        check_float(&b, v);
    }
    for (uint32_t x = 0; x < 100000; x++) { /* all of the lowest subnormals */
        float v;
        memcpy(&v, &x, 4);
        check_float(&b, v);
    }
    for (int i = 0; i < 200000; i++) {
        float v =
            (float)(int32_t)(rnd() % 200001 - 100000) / (float)(1 + (int)(rnd() % 3) * 9 * (1 + (int)(rnd() % 2) * 10));
        check_float(&b, v);
    }
    for (int i = -100000; i < 100000; i++) { /* every one-decimal value in ±10000 */
        float v = (float)i / 10.0f;
        check_float(&b, v);
        char want[32];
        snprintf(want, sizeof want, "%.1f", (double)i / 10.0);
        size_t n = strlen(want);
        if (n > 2 && want[n - 1] == '0') want[n - 2] = 0; /* 21.0 -> 21 */
        if (strcmp(want, "-0") == 0) strcpy(want, "0");
        assert_string_equal(b.p, want);
    }
    fb_buf_free(&b);
}

static void test_strings(void **state)
{
    (void)state;
    struct fb_buf b;
    fb_buf_init(&b);
    fb_json_str(&b, "a\"b\\c\n\r\t\b\f/", 11);
    assert_string_equal(fb_buf_cstr(&b), "\"a\\\"b\\\\c\\n\\r\\t\\b\\f/\"");
    fb_buf_clear(&b);
    fb_json_str(&b, "\x01\x1f\x00x", 4);
    assert_string_equal(fb_buf_cstr(&b), "\"\\u0001\\u001f\\u0000x\"");
    fb_buf_clear(&b); /* valid UTF-8 (2, 3 and 4 bytes) is kept as is */
    fb_json_cstr(&b, "°C €  \xf0\x9f\x8c\xa1");
    assert_string_equal(fb_buf_cstr(&b), "\"°C €  \xf0\x9f\x8c\xa1\"");
    fb_buf_clear(&b); /* stray continuation, bad lead, overlong, surrogate, > U+10FFFF */
    fb_json_cstr(&b, "a\x80"
                     "b\xff"
                     "c\xc0\xaf"
                     "d\xed\xa0\x80"
                     "e\xf4\x90\x80\x80"
                     "f");
    assert_string_equal(fb_buf_cstr(&b), "\"a\\ufffdb\\ufffdc\\ufffd\\ufffdd\\ufffd\\ufffd\\ufffde"
                                         "\\ufffd\\ufffd\\ufffd\\ufffdf\"");
    fb_buf_clear(&b); /* truncated sequences: one replacement for the valid prefix */
    fb_json_str(&b, "x\xe2\x82", 3);
    assert_string_equal(fb_buf_cstr(&b), "\"x\\ufffd\"");
    fb_buf_clear(&b);
    fb_json_str(&b, "\xe2\x82y", 3);
    assert_string_equal(fb_buf_cstr(&b), "\"\\ufffdy\"");
    fb_buf_clear(&b);
    fb_json_cstr(&b, NULL);
    assert_string_equal(fb_buf_cstr(&b), "null");
    /* a long string grows the buffer */
    char big[5000];
    memset(big, 'x', sizeof big);
    fb_buf_clear(&b);
    fb_json_str(&b, big, sizeof big);
    assert_int_equal(b.len, sizeof big + 2);
    fb_buf_free(&b);
}

static void test_random_bytes_stay_valid(void **state)
{
    (void)state;
    struct fb_buf b;
    fb_buf_init(&b);
    unsigned char in[64];
    for (int r = 0; r < 20000; r++) {
        size_t n = rnd() % sizeof in;
        for (size_t i = 0; i < n; i++) in[i] = (unsigned char)rnd();
        fb_buf_clear(&b);
        fb_json_str(&b, (const char *)in, n);
        /* output: quoted, no raw control chars, no unescaped quote inside, valid UTF-8 */
        const unsigned char *p = (const unsigned char *)b.p;
        assert_int_equal(p[0], '"');
        assert_int_equal(p[b.len - 1], '"');
        for (size_t i = 1; i + 1 < b.len; i++) {
            assert_true(p[i] >= 0x20);
            if (p[i] == '\\') {
                i++;
                continue;
            }
            assert_true(p[i] != '"');
            if (p[i] >= 0x80) {
                int l = p[i] >= 0xF0 ? 4 : p[i] >= 0xE0 ? 3 : 2;
                assert_true(p[i] >= 0xC2 && p[i] <= 0xF4);
                for (int k = 1; k < l; k++) assert_true((p[i + (size_t)k] & 0xC0) == 0x80);
                i += (size_t)l - 1;
            }
        }
    }
    fb_buf_free(&b);
}

static void test_values(void **state)
{
    (void)state;
    struct fb_buf b;
    fb_buf_init(&b);
    struct fb_value v[] = {
        {.type = FB_T_BOOL, .b = true},
        {.type = FB_T_BOOL, .b = false},
        {.type = FB_T_INT16, .i = -5},
        {.type = FB_T_INT64, .i = INT64_MIN},
        {.type = FB_T_UINT64, .u = UINT64_MAX},
        {.type = FB_T_FLOAT32, .f = (double)0.1f},
        {.type = FB_T_FLOAT64, .f = 0.1},
        {.type = FB_T_FLOAT64, .f = NAN},
        {.type = FB_T_FLOAT32, .f = INFINITY},
        {.type = FB_T_STRING, .s = {"a\"b", 3}},
        {.type = FB_T_NONE},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (i) fb_buf_putc(&b, ',');
        fb_json_value(&b, &v[i]);
    }
    assert_string_equal(fb_buf_cstr(&b), "true,false,-5,-9223372036854775808,18446744073709551615,"
                                         "0.1,0.1,null,null,\"a\\\"b\",null");
    fb_buf_clear(&b);
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (i) fb_buf_putc(&b, ',');
        fb_text_value(&b, &v[i]);
    }
    assert_string_equal(fb_buf_cstr(&b), "true,false,-5,-9223372036854775808,18446744073709551615,"
                                         "0.1,0.1,nan,inf,a\"b,null");
    fb_buf_free(&b);
}

static void test_buffer(void **state)
{
    (void)state;
    struct fb_buf b;
    fb_buf_init(&b);
    assert_string_equal(fb_buf_cstr(&b), "");
    fb_buf_printf(&b, "%s-%d", "x", 42);
    char big[1000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = 0;
    fb_buf_printf(&b, "%s", big); /* longer than the free space: grows and retries */
    assert_int_equal(b.len, 4 + 999);
    assert_memory_equal(b.p, "x-42yyy", 7);
    assert_int_equal(strlen(fb_buf_cstr(&b)), b.len);
    fb_buf_put(&b, "", 0);
    fb_buf_puts(&b, "z");
    assert_int_equal(b.p[b.len - 1], 'z');
    char *before = b.p;
    fb_buf_clear(&b);
    fb_buf_puts(&b, "reuse");
    assert_ptr_equal(b.p, before); /* no reallocation after clear */
    fb_buf_free(&b);
    assert_null(b.p);
}

/* fb_float_widen(f) is the double of f's shortest text (what strtod reads). */
static void test_float_widen(void **state)
{
    (void)state;
    struct fb_buf b;
    fb_buf_init(&b);
    assert_true(fb_float_widen(7.77f) == 7.77);
    assert_true(fb_float_widen(-0.1f) == -0.1);
    assert_true(fb_float_widen(3.0f) == 3.0);
    assert_true(fb_float_widen(FLT_MAX) == strtod("3.4028235e+38", NULL));
    assert_true(fb_float_widen(1e-45f) == strtod("1e-45", NULL));
    for (int i = 0; i < 2000000; i++) {
        uint32_t bits = (uint32_t)rnd();
        float f;
        memcpy(&f, &bits, 4);
        if (!isfinite(f)) continue;
        double want = strtod(flt(&b, f), NULL);
        if (fb_float_widen(f) != want) {
            fprintf(stderr, "float 0x%08x (%s): %.17g, strtod gives %.17g\n", bits, flt(&b, f), fb_float_widen(f),
                    want);
            fail();
        }
    }
    fb_buf_free(&b);
}

/* fb_text_cut: whole text when it fits; else cut after a whole word with "…",
 * never inside a UTF-8 character, always NUL-terminated within cap. */
static void test_text_cut(void **state)
{
    (void)state;
    char buf[32];
    assert_int_equal(fb_text_cut(buf, sizeof buf, "short reason"), 12);
    assert_string_equal(buf, "short reason");
    const char *exact = "0123456789012345678901234567890"; /* 31 bytes: fits with its NUL */
    assert_int_equal(fb_text_cut(buf, sizeof buf, exact), 31);
    assert_string_equal(buf, exact);
    /* too long: cut after the last whole word, ellipsis appended */
    fb_text_cut(buf, sizeof buf, "secret file is accessible; run: chmod 600 /tmp/x.pass");
    assert_string_equal(buf, "secret file is accessible\xe2\x80\xa6");
    assert_true(strlen(buf) < sizeof buf);
    /* one long word: cut at a character boundary (é is two bytes) */
    fb_text_cut(buf, sizeof buf, "/é/é/é/é/é/é/é/é/é/é/é/é/é/é/é/é/é");
    assert_true(strlen(buf) < sizeof buf);
    size_t n = strlen(buf);
    assert_memory_equal(buf + n - 3, "\xe2\x80\xa6", 3);
    assert_true(((unsigned char)buf[n - 4] & 0xC0) != 0xC0); /* no lead byte without its continuation */
    for (size_t cap = 0; cap < 12; cap++) {                  /* tiny buffers: never overflow */
        char t[12];
        memset(t, 'Z', sizeof t);
        fb_text_cut(t, cap, "several words that do not fit");
        if (cap) assert_true(strlen(t) < cap);
        for (size_t i = cap; i < sizeof t; i++) assert_int_equal(t[i], 'Z');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_double_known),
        cmocka_unit_test(test_float_known),
        cmocka_unit_test(test_double_random),
        cmocka_unit_test(test_float_random),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_random_bytes_stay_valid),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_buffer),
        cmocka_unit_test(test_text_cut),
        cmocka_unit_test(test_float_widen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
