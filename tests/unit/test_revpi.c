/* test_revpi.c — the Revolution Pi driver: PiCtory config.rsc parser against
 * realistic fixtures (tests/unit/data/revpi/), address parsing, the
 * little-endian codec round trips, the safe-state list, and the driver glue
 * on a file-backed process image (bit writes touch only their bit, inputs
 * are never written, the safe state is written on close and by the
 * watchdog). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/browse.h"
#include "core/config.h"
#include "core/env.h"
#include "core/runtime_state.h"
#include "core/url.h"
#include "south/revpi/revpi.h"
#include "south/revpi/revpi_proto.h"

static char *fixture_path(const char *name)
{
    const char *root = getenv("FB_SOURCE_DIR");
    static char buf[400];
    snprintf(buf, sizeof buf, "%s/tests/unit/data/revpi/%s", root ? root : "..", name);
    return buf;
}

static char *slurp(const char *name, size_t *len)
{
    FILE *f = fopen(fixture_path(name), "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void load(const char *name, struct fb_revpi_cfg *cfg)
{
    size_t n;
    char *t = slurp(name, &n);
    struct fb_err e = {0};
    int rc = fb_revpi_cfg_parse(t, n, 0, cfg, &e);
    if (rc) fprintf(stderr, "%s: %s\n", name, e.msg);
    assert_int_equal(rc, 0);
    free(t);
}

static const struct fb_revpi_var *var(const struct fb_revpi_cfg *c, const char *name)
{
    const struct fb_revpi_var *v = fb_revpi_cfg_find(c, name);
    if (!v) fprintf(stderr, "no variable %s\n", name);
    assert_non_null(v);
    return v;
}

static void check_loc(const struct fb_revpi_var *v, uint32_t off, uint8_t bit, uint16_t bits, int io)
{
    assert_int_equal(v->loc.offset, off);
    assert_int_equal(v->loc.bit, bit);
    assert_int_equal(v->loc.bits, bits);
    assert_int_equal(v->io, io);
}

/* ------------------------------------------------------------ config.rsc */
static void test_cfg_full(void **state)
{
    (void)state;
    struct fb_revpi_cfg c;
    load("connect_dio_di_do_aio.rsc", &c);
    assert_int_equal(c.ndevs, 6);
    assert_string_equal(c.devs[0].name, "RevPi Connect 4");
    assert_string_equal(c.devs[0].type, "BASE");
    assert_int_equal(c.devs[0].product_type, 136);
    assert_int_equal(c.devs[1].offset, 9);
    assert_int_equal(c.devs[1].position, 32);
    assert_int_equal(c.devs[1].product_type, 96);
    assert_string_equal(c.devs[5].type, "VIRTUAL");
    /* base */
    check_loc(var(&c, "RevPiStatus"), 0, 0, 8, FB_REVPI_INP);
    check_loc(var(&c, "RevPiIOErrorCnt"), 2, 0, 16, FB_REVPI_INP);
    check_loc(var(&c, "RevPiLED"), 6, 0, 16, FB_REVPI_OUT);
    /* DIO at 9: inputs share byte offset 0, bit positions above 7 land in the next byte */
    check_loc(var(&c, "I_1"), 9, 0, 1, FB_REVPI_INP);
    check_loc(var(&c, "I_8"), 9, 7, 1, FB_REVPI_INP);
    check_loc(var(&c, "I_9"), 10, 0, 1, FB_REVPI_INP);
    check_loc(var(&c, "I_14"), 10, 5, 1, FB_REVPI_INP);
    check_loc(var(&c, "Counter_16"), 9 + 64, 0, 32, FB_REVPI_INP);
    check_loc(var(&c, "O_1"), 79, 0, 1, FB_REVPI_OUT);
    check_loc(var(&c, "O_10"), 80, 1, 1, FB_REVPI_OUT);
    check_loc(var(&c, "PWM_1"), 81, 0, 8, FB_REVPI_OUT);
    check_loc(var(&c, "OutputPWMFrequency"), 101, 0, 8, FB_REVPI_MEM);
    assert_string_equal(var(&c, "OutputPWMFrequency")->def, "1");
    /* DI, DO, AIO, virtual */
    check_loc(var(&c, "I_1_i03"), 102, 0, 1, FB_REVPI_INP);
    check_loc(var(&c, "I_12_i03"), 103, 3, 1, FB_REVPI_INP);
    check_loc(var(&c, "InputMode_4_i03"), 125, 0, 8, FB_REVPI_MEM);
    check_loc(var(&c, "O_14_i04"), 131, 5, 1, FB_REVPI_OUT);
    check_loc(var(&c, "InputValue_1"), 138, 0, 16, FB_REVPI_INP);
    check_loc(var(&c, "OutputValue_2"), 154, 0, 16, FB_REVPI_OUT);
    check_loc(var(&c, "Input1Multiplier"), 157, 0, 16, FB_REVPI_MEM);
    check_loc(var(&c, "VOutput_1"), 163, 0, 8, FB_REVPI_OUT);
    assert_string_equal(var(&c, "InputValue_1")->comment, "mV");
    assert_string_equal(c.devs[var(&c, "InputValue_1")->dev].name, "AIO");
    assert_null(fb_revpi_cfg_find(&c, "i_1")); /* case-sensitive */
    fb_revpi_cfg_free(&c);
    assert_int_equal(c.nvars, 0);
}

static void test_cfg_old_style(void **state)
{
    (void)state;
    struct fb_revpi_cfg c;
    load("core_dio.rsc", &c); /* numbers as JSON numbers, no mem map, unknown keys */
    assert_int_equal(c.ndevs, 2);
    assert_int_equal(c.devs[1].position, 32);
    assert_int_equal(c.devs[1].product_type, 96);
    assert_string_equal(c.devs[1].bmk, "DIO conveyor");
    check_loc(var(&c, "RevPiLED"), 6, 0, 8, FB_REVPI_OUT);
    assert_false(var(&c, "RevPiReserved")->exported);
    assert_true(var(&c, "RevPiLED")->exported);
    check_loc(var(&c, "I_1"), 11, 0, 1, FB_REVPI_INP);
    check_loc(var(&c, "I_13"), 12, 4, 1, FB_REVPI_INP);
    check_loc(var(&c, "O_1"), 81, 0, 1, FB_REVPI_OUT);
    check_loc(var(&c, "O_3"), 81, 2, 1, FB_REVPI_OUT);
    fb_revpi_cfg_free(&c);
}

static void expect_bad_file(const char *name, const char *needle)
{
    size_t n;
    char *t = slurp(name, &n);
    struct fb_revpi_cfg c;
    struct fb_err e = {0};
    assert_int_equal(fb_revpi_cfg_parse(t, n, 0, &c, &e), FB_EINVAL);
    if (!strstr(e.msg, needle)) fprintf(stderr, "%s: message '%s' lacks '%s'\n", name, e.msg, needle);
    assert_non_null(strstr(e.msg, needle));
    assert_int_equal(c.nvars, 0);
    assert_null(c.vars);
    free(t);
}

static void test_cfg_rejects(void **state)
{
    (void)state;
    expect_bad_file("overlap.rsc", "overlaps");
    expect_bad_file("overlap.rsc", "'PWM_1' (device 'DIO'");
    expect_bad_file("out_of_image.rsc", "outside the 4096-byte process image");
    expect_bad_file("out_of_image.rsc", "'VOutput_1' (device 'Virtual01')");
    expect_bad_file("duplicate.rsc", "duplicate variable name");
}

static void expect_bad_text(const char *text, const char *needle)
{
    struct fb_revpi_cfg c;
    struct fb_err e = {0};
    assert_true(fb_revpi_cfg_parse(text, strlen(text), 0, &c, &e) < 0);
    if (!strstr(e.msg, needle)) fprintf(stderr, "'%s': message '%s' lacks '%s'\n", text, e.msg, needle);
    assert_non_null(strstr(e.msg, needle));
}

#define DEV(inner) "{\"Devices\":[{\"name\":\"M\",\"offset\":\"10\"," inner "}]}"

static void test_cfg_malformed(void **state)
{
    (void)state;
    expect_bad_text("", "not valid JSON");
    expect_bad_text("[1,2]", "Devices");
    expect_bad_text("{\"Devices\":{}}", "Devices");
    expect_bad_text("{\"Devices\":[3]}", "not an object");
    expect_bad_text("{\"Devices\":[{\"name\":\"M\"}]}", "offset");
    expect_bad_text("{\"Devices\":[{\"name\":\"M\",\"offset\":\"-1\"}]}", "offset");
    expect_bad_text(DEV("\"inp\":{\"0\":\"x\"}"), "expected an array");
    expect_bad_text(DEV("\"inp\":{\"0\":[\"\",\"0\",\"8\",\"0\"]}"), "non-empty");
    expect_bad_text(DEV("\"inp\":{\"0\":[\"A B\",\"0\",\"8\",\"0\"]}"), "contains ' '");
    expect_bad_text(DEV("\"inp\":{\"0\":[\"A\",\"0\",\"12\",\"0\"]}"), "neither 1 nor whole bytes");
    expect_bad_text(DEV("\"inp\":{\"0\":[\"A\",\"0\",\"x\",\"0\"]}"), "length");
    expect_bad_text(DEV("\"inp\":{\"0\":[\"A\",\"0\",\"8\",\"-3\"]}"), "offset");
    expect_bad_text(DEV("\"inp\":{\"0\":[\"A\",\"0\",\"8\",\"0\",true,\"0\",\"\",\"3\"]}"), "1-bit");
    expect_bad_text(DEV("\"inp\":{\"0\":[\"A\",\"0\",\"1\",\"0\",true,\"0\",\"\",\"x\"]}"), "bit position");
    expect_bad_text(
        DEV("\"inp\":{\"0\":[\"A\",\"0\",\"8\",\"0\"],\"1\":[\"B\",\"0\",\"1\",\"0\",true,\"0\",\"\",\"7\"]}"),
        "overlaps");
    expect_bad_text(DEV("\"inp\":{\"0\":[\"A\",\"0\",\"1\",\"0\",true,\"0\",\"\",\"3\"],"
                        "\"1\":[\"B\",\"0\",\"1\",\"0\",true,\"0\",\"\",\"3\"]}"),
                    "overlaps");
    expect_bad_text("{\"Devices\":[{\"offset\":0,\"inp\":{\"0\":[\"A\",\"0\",\"8\",\"0\"]}},"
                    "{\"offset\":1,\"out\":{\"0\":[\"A\",\"0\",\"8\",\"0\"]}}]}",
                    "duplicate");
    /* fine: bits of one byte side by side, then a word after them; 4-entry arrays */
    const char *ok = DEV("\"inp\":{\"1\":[\"B\",\"0\",\"1\",\"0\",true,\"0\",\"\",\"9\"],"
                         "\"0\":[\"A\",\"0\",\"1\",\"0\",true,\"0\",\"\",\"0\"],"
                         "\"2\":[\"W\",\"0\",16,2]},\"out\":null");
    struct fb_revpi_cfg c;
    struct fb_err e = {0};
    assert_int_equal(fb_revpi_cfg_parse(ok, strlen(ok), 0, &c, &e), 0);
    assert_int_equal(c.nvars, 3);
    assert_string_equal(c.vars[0].name, "A"); /* numeric key order */
    check_loc(var(&c, "B"), 11, 1, 1, FB_REVPI_INP);
    check_loc(var(&c, "W"), 12, 0, 16, FB_REVPI_INP);
    fb_revpi_cfg_free(&c);
    /* a smaller image (the parser takes the size) */
    assert_true(fb_revpi_cfg_parse(ok, strlen(ok), 12, &c, &e) < 0);
}

/* Every truncation of a real file is refused without crashing. */
static void test_cfg_truncations(void **state)
{
    (void)state;
    size_t n;
    char *t = slurp("core_dio.rsc", &n);
    for (size_t k = 0; k < n; k += 7) {
        struct fb_revpi_cfg c;
        struct fb_err e = {0};
        assert_true(fb_revpi_cfg_parse(t, k, 0, &c, &e) < 0);
    }
    free(t);
}

/* -------------------------------------------------------------- addresses */
static void addr_ok(const char *text, const char *name, uint32_t off, uint8_t bit, uint16_t bits, enum fb_type t)
{
    struct fb_revpi_addr a;
    struct fb_err e = {0};
    int rc = fb_revpi_addr_parse(text, &a, &e);
    if (rc) fprintf(stderr, "%s: %s\n", text, e.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(a.name, name);
    if (!name[0]) {
        assert_true(a.resolved);
        assert_int_equal(a.loc.offset, off);
        assert_int_equal(a.loc.bit, bit);
        assert_int_equal(a.loc.bits, bits);
    }
    assert_int_equal(a.type, t);
}

static void addr_bad(const char *text, const char *needle)
{
    struct fb_revpi_addr a;
    struct fb_err e = {0};
    assert_true(fb_revpi_addr_parse(text, &a, &e) < 0);
    if (!strstr(e.msg, needle)) fprintf(stderr, "'%s': message '%s' lacks '%s'\n", text, e.msg, needle);
    assert_non_null(strstr(e.msg, needle));
}

static void test_addr(void **state)
{
    (void)state;
    addr_ok("I_1", "I_1", 0, 0, 0, FB_T_NONE);
    addr_ok("RevPiLED", "RevPiLED", 0, 0, 0, FB_T_NONE);
    addr_ok("InputValue_1:int16", "InputValue_1", 0, 0, 0, FB_T_INT16);
    addr_ok("byte:70", "", 70, 0, 8, FB_T_UINT8);
    addr_ok("bit:70.3", "", 70, 3, 1, FB_T_BOOL);
    addr_ok("BIT:0.7", "", 0, 7, 1, FB_T_BOOL);
    addr_ok("word:10", "", 10, 0, 16, FB_T_UINT16);
    addr_ok("dword:12", "", 12, 0, 32, FB_T_UINT32);
    addr_ok("int16:10", "", 10, 0, 16, FB_T_INT16);
    addr_ok("uint32:12", "", 12, 0, 32, FB_T_UINT32);
    addr_ok("float32:20", "", 20, 0, 32, FB_T_FLOAT32);
    addr_ok("int64:4088", "", 4088, 0, 64, FB_T_INT64);
    addr_ok("word:10:int16", "", 10, 0, 16, FB_T_INT16);
    addr_ok("bit:1.1:uint8", "", 1, 1, 1, FB_T_UINT8);
    addr_ok("byte:4095", "", 4095, 0, 8, FB_T_UINT8);
    addr_bad("", "empty");
    addr_bad("bit:70", "BYTE.BIT");
    addr_bad("bit:70.8", "0..7");
    addr_bad("byte:70.1", "only bit:");
    addr_bad("byte:4096", "0..4095");
    addr_bad("word:4095", "past the 4096-byte");
    addr_bad("word:x", "byte offset after");
    addr_bad("word:-1", "byte offset after");
    addr_bad("word:10:float32", "16 bits");
    addr_bad("word:10:string", "unknown type");
    addr_bad("I_1:nope", "unknown type");
    addr_bad("a:b:c:d", "too many");
    addr_bad("foo:1:2", "unknown address kind");
    addr_bad("I 1", "neither");
    addr_bad("bit:70.3x", "0..7");
    char longname[100];
    memset(longname, 'A', sizeof longname - 1);
    longname[99] = 0;
    addr_bad(longname, "1..63");
}

static void test_resolve_and_types(void **state)
{
    (void)state;
    struct fb_revpi_cfg c;
    load("connect_dio_di_do_aio.rsc", &c);
    struct fb_revpi_addr a;
    struct fb_err e = {0};
    assert_int_equal(fb_revpi_addr_parse("I_9", &a, &e), 0);
    assert_int_equal(fb_revpi_addr_resolve(&a, &c, &e), 0);
    assert_int_equal(a.loc.offset, 10);
    assert_int_equal(a.loc.bit, 0);
    assert_int_equal(a.io, FB_REVPI_INP);
    assert_int_equal(fb_revpi_addr_parse("InputValue_1:int16", &a, &e), 0);
    assert_int_equal(fb_revpi_addr_resolve(&a, &c, &e), 0);
    assert_int_equal(fb_revpi_addr_parse("InputValue_1:int32", &a, &e), 0);
    assert_true(fb_revpi_addr_resolve(&a, &c, &e) < 0);
    assert_non_null(strstr(e.msg, "InputValue_1"));
    assert_int_equal(fb_revpi_addr_parse("Nope_7", &a, &e), 0);
    assert_int_equal(fb_revpi_addr_resolve(&a, &c, &e), FB_ENOENT);
    assert_non_null(strstr(e.msg, "Nope_7"));
    fb_revpi_cfg_free(&c);

    assert_int_equal(fb_revpi_default_type(1), FB_T_BOOL);
    assert_int_equal(fb_revpi_default_type(8), FB_T_UINT8);
    assert_int_equal(fb_revpi_default_type(16), FB_T_UINT16);
    assert_int_equal(fb_revpi_default_type(32), FB_T_UINT32);
    assert_int_equal(fb_revpi_default_type(48), FB_T_NONE);
    assert_int_equal(fb_revpi_type_check(FB_T_BOOL, 16, NULL), 0);
    assert_int_equal(fb_revpi_type_check(FB_T_UINT8, 1, NULL), 0);
    assert_true(fb_revpi_type_check(FB_T_FLOAT32, 1, NULL) < 0);
    assert_true(fb_revpi_type_check(FB_T_INT32, 16, NULL) < 0);
    assert_int_equal(fb_revpi_type_check(FB_T_FLOAT32, 32, NULL), 0);
    assert_true(fb_revpi_type_check(FB_T_STRING, 8, NULL) < 0);
    char b[32];
    struct fb_revpi_loc l = {70, 3, 1};
    fb_revpi_loc_format(b, sizeof b, &l);
    assert_string_equal(b, "bit:70.3");
    l = (struct fb_revpi_loc){10, 0, 16};
    fb_revpi_loc_format(b, sizeof b, &l);
    assert_string_equal(b, "word:10");
}

/* Module-specific types: the AIO's words are INT16 whatever the user named
 * them, its status bytes and the DIO's counters stay unsigned, and a :TYPE
 * suffix still wins (connect_aio_dio.rsc: Connect 4 at 0, AIO at 9 with the
 * module's process-data layout and two renamed channels, DIO at 98). */
static void test_module_types(void **state)
{
    (void)state;
    struct fb_revpi_cfg c;
    load("connect_aio_dio.rsc", &c);
    static const struct {
        const char *name;
        enum fb_type t;
    } want[] = {
        {"InputValue_1", FB_T_INT16},
        {"flow_in", FB_T_INT16},
        {"RTDValue_2", FB_T_INT16},
        {"OutputValue_1", FB_T_INT16},
        {"valve_setpoint", FB_T_INT16},
        {"InputStatus_1", FB_T_UINT8},
        {"OutputStatus_2", FB_T_UINT8},
        {"Input1Multiplier", FB_T_INT16},
        {"Input1Offset", FB_T_INT16},
        {"RTD2Offset", FB_T_INT16},
        {"Input1Divisor", FB_T_UINT16},
        {"Output2Range", FB_T_UINT8},
        {"I_1", FB_T_BOOL},
        {"Counter_16", FB_T_UINT32},
        {"Status", FB_T_UINT16},
        {"OutputPushPull", FB_T_UINT16},
        {"RevPiIOErrorCnt", FB_T_UINT16},
        {"RevPiLED", FB_T_UINT16},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (var(&c, want[i].name)->type != want[i].t)
            fprintf(stderr, "%s: %s\n", want[i].name, fb_type_name((enum fb_type)var(&c, want[i].name)->type));
        assert_int_equal(var(&c, want[i].name)->type, want[i].t);
    }
    check_loc(var(&c, "flow_in"), 13, 0, 16, FB_REVPI_INP);
    check_loc(var(&c, "OutputValue_1"), 29, 0, 16, FB_REVPI_OUT);
    check_loc(var(&c, "I_9"), 99, 0, 1, FB_REVPI_INP);

    struct fb_revpi_addr a;
    struct fb_err e = {0};
    assert_int_equal(fb_revpi_addr_parse("InputValue_1", &a, &e), 0);
    assert_int_equal(fb_revpi_addr_resolve(&a, &c, &e), 0);
    assert_int_equal(a.type, FB_T_INT16);
    assert_int_equal(fb_revpi_addr_parse("InputValue_1:uint16", &a, &e), 0); /* the override wins */
    assert_int_equal(fb_revpi_addr_resolve(&a, &c, &e), 0);
    assert_int_equal(a.type, FB_T_UINT16);
    assert_int_equal(fb_revpi_addr_parse("Counter_1", &a, &e), 0);
    assert_int_equal(fb_revpi_addr_resolve(&a, &c, &e), 0);
    assert_int_equal(a.type, FB_T_UINT32);
    fb_revpi_cfg_free(&c);

    /* the table itself */
    const char *m = NULL;
    assert_int_equal(fb_revpi_module_type(103, FB_REVPI_INP, 16, "anything", &m), FB_T_INT16);
    assert_string_equal(m, "AIO");
    assert_int_equal(fb_revpi_module_type(103, FB_REVPI_INP, 8, "InputStatus_1", &m), FB_T_UINT8);
    assert_null(m);
    assert_int_equal(fb_revpi_module_type(103, FB_REVPI_MEM, 16, "Output1Divisor", NULL), FB_T_UINT16);
    assert_int_equal(fb_revpi_module_type(104, FB_REVPI_INP, 16, "AIn_1", &m), FB_T_INT16);
    assert_string_equal(m, "Compact");
    assert_int_equal(fb_revpi_module_type(104, FB_REVPI_OUT, 16, "AOut_1", NULL), FB_T_UINT16);
    assert_int_equal(fb_revpi_module_type(135, FB_REVPI_INP, 16, "AIn", NULL), FB_T_INT16);
    assert_int_equal(fb_revpi_module_type(118, FB_REVPI_INP, 16, "AnalogInput_1", NULL), FB_T_UINT16);
    assert_int_equal(fb_revpi_module_type(96, FB_REVPI_INP, 32, "Counter_1", NULL), FB_T_UINT32);
    assert_int_equal(fb_revpi_module_type(103, 7, 16, "x", NULL), FB_T_UINT16); /* bad io: no rule */
    /* the older fixture's AIO too */
    load("connect_dio_di_do_aio.rsc", &c);
    assert_int_equal(var(&c, "InputValue_1")->type, FB_T_INT16);
    assert_int_equal(var(&c, "InputStatus_1")->type, FB_T_UINT8);
    assert_int_equal(var(&c, "Counter_16")->type, FB_T_UINT32);
    fb_revpi_cfg_free(&c);
}

/* ------------------------------------------------------------------ codec */
static void roundtrip(enum fb_type t, uint16_t bits, struct fb_value in)
{
    uint8_t img[64];
    memset(img, 0xA5, sizeof img);
    struct fb_revpi_loc l = {.offset = 20, .bit = 0, .bits = bits};
    uint8_t out[8];
    uint32_t n;
    bool bit;
    struct fb_err e = {0};
    in.type = (uint8_t)t;
    assert_int_equal(fb_revpi_encode(&l, t, &in, out, &n, &bit, &e), 0);
    assert_int_equal(n, bits / 8);
    memcpy(img + 20, out, n);
    assert_int_equal(img[19], 0xA5);
    assert_int_equal(img[20 + n], 0xA5);
    struct fb_value v;
    assert_int_equal(fb_revpi_decode(img, 0, sizeof img, &l, t, &v), 0);
    assert_true(fb_value_equal(&v, &in));
    /* decode from a window that starts elsewhere */
    assert_int_equal(fb_revpi_decode(img + 16, 16, 16, &l, t, &v), 0);
    assert_true(fb_value_equal(&v, &in));
}

static void test_codec(void **state)
{
    (void)state;
    roundtrip(FB_T_UINT8, 8, (struct fb_value){.u = 200});
    roundtrip(FB_T_INT8, 8, (struct fb_value){.i = -100});
    roundtrip(FB_T_UINT16, 16, (struct fb_value){.u = 0xBEEF});
    roundtrip(FB_T_INT16, 16, (struct fb_value){.i = -12345});
    roundtrip(FB_T_UINT32, 32, (struct fb_value){.u = 0xDEADBEEF});
    roundtrip(FB_T_INT32, 32, (struct fb_value){.i = -2000000000});
    roundtrip(FB_T_INT64, 64, (struct fb_value){.i = INT64_MIN});
    roundtrip(FB_T_UINT64, 64, (struct fb_value){.u = UINT64_MAX});
    roundtrip(FB_T_FLOAT32, 32, (struct fb_value){.f = 21.5});
    roundtrip(FB_T_FLOAT64, 64, (struct fb_value){.f = -1e300});
    roundtrip(FB_T_BOOL, 16, (struct fb_value){.b = true});

    /* little-endian on the wire */
    uint8_t img[8] = {0x34, 0x12, 0x78, 0x56, 0, 0, 0, 0};
    struct fb_revpi_loc w = {0, 0, 16}, d = {0, 0, 32};
    struct fb_value v;
    assert_int_equal(fb_revpi_decode(img, 0, 8, &w, FB_T_UINT16, &v), 0);
    assert_int_equal(v.u, 0x1234);
    assert_int_equal(fb_revpi_decode(img, 0, 8, &d, FB_T_UINT32, &v), 0);
    assert_int_equal(v.u, 0x56781234);
    img[1] = 0xFF;
    assert_int_equal(fb_revpi_decode(img, 0, 8, &w, FB_T_INT16, &v), 0);
    assert_int_equal(v.i, (int16_t)0xFF34);

    /* bits */
    uint8_t b2[2] = {0x08, 0x00};
    struct fb_revpi_loc bl = {1, 0, 1}, b3 = {0, 3, 1};
    assert_int_equal(fb_revpi_decode(b2, 0, 2, &b3, FB_T_BOOL, &v), 0);
    assert_true(v.b);
    assert_int_equal(fb_revpi_decode(b2, 0, 2, &bl, FB_T_BOOL, &v), 0);
    assert_false(v.b);
    assert_int_equal(fb_revpi_decode(b2, 0, 2, &b3, FB_T_UINT8, &v), 0);
    assert_int_equal(v.u, 1);
    assert_int_equal(fb_revpi_bit_apply(0x08, 3, false), 0x00);
    assert_int_equal(fb_revpi_bit_apply(0x08, 0, true), 0x09);
    uint8_t out[8];
    uint32_t n;
    bool bit;
    struct fb_err e = {0};
    struct fb_value t = {.type = FB_T_BOOL, .b = true};
    assert_int_equal(fb_revpi_encode(&b3, FB_T_BOOL, &t, out, &n, &bit, &e), 0);
    assert_int_equal(n, 0);
    assert_true(bit);
    struct fb_value two = {.type = FB_T_UINT8, .u = 2};
    assert_int_equal(fb_revpi_encode(&b3, FB_T_UINT8, &two, out, &n, &bit, &e), FB_ERANGE);

    /* range errors */
    struct fb_revpi_loc by = {0, 0, 8};
    struct fb_value big = {.type = FB_T_INT64, .i = 300}, neg = {.type = FB_T_INT64, .i = -1};
    assert_int_equal(fb_revpi_encode(&by, FB_T_UINT8, &big, out, &n, &bit, &e), FB_ERANGE);
    assert_int_equal(fb_revpi_encode(&w, FB_T_UINT16, &neg, out, &n, &bit, &e), FB_ERANGE);
    struct fb_value lim = {.type = FB_T_INT64, .i = -32768};
    assert_int_equal(fb_revpi_encode(&w, FB_T_INT16, &lim, out, &n, &bit, &e), 0);
    assert_int_equal(out[0], 0x00);
    assert_int_equal(out[1], 0x80);
    lim.i = 32768;
    assert_int_equal(fb_revpi_encode(&w, FB_T_INT16, &lim, out, &n, &bit, &e), FB_ERANGE);
    struct fb_value s = {.type = FB_T_STRING};
    assert_true(fb_revpi_encode(&w, FB_T_INT16, &s, out, &n, &bit, &e) < 0);
    struct fb_value nan = {.type = FB_T_FLOAT64, .f = NAN};
    assert_true(fb_revpi_encode(&d, FB_T_FLOAT32, &nan, out, &n, &bit, &e) < 0);
    /* outside the window */
    struct fb_revpi_loc far = {7, 0, 16};
    assert_int_equal(fb_revpi_decode(img, 0, 8, &far, FB_T_UINT16, &v), FB_ERANGE);
    assert_int_equal(fb_revpi_decode(img + 4, 4, 4, &w, FB_T_UINT16, &v), FB_ERANGE);
}

static void test_safe_parse(void **state)
{
    (void)state;
    struct fb_revpi_safe *it;
    uint32_t n;
    struct fb_err e = {0};
    assert_int_equal(fb_revpi_safe_parse("O_1=0, O_2 = 1,AnalogOut=-5.5,bit:70.3=true,PWM_1=off", &it, &n, &e), 0);
    assert_int_equal(n, 5);
    assert_string_equal(it[0].addr, "O_1");
    assert_true(it[0].value == 0);
    assert_string_equal(it[1].addr, "O_2");
    assert_true(it[1].value == 1);
    assert_true(it[2].value == -5.5);
    assert_string_equal(it[3].addr, "bit:70.3");
    assert_true(it[3].value == 1);
    assert_true(it[4].value == 0);
    free(it);
    assert_int_equal(fb_revpi_safe_parse("", &it, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_true(fb_revpi_safe_parse("O_1", &it, &n, &e) < 0);
    assert_true(fb_revpi_safe_parse("O_1=", &it, &n, &e) < 0);
    assert_true(fb_revpi_safe_parse("=1", &it, &n, &e) < 0);
    assert_true(fb_revpi_safe_parse("O_1=1,,O_2=0", &it, &n, &e) < 0);
    assert_true(fb_revpi_safe_parse("O_1=maybe", &it, &n, &e) < 0);
    assert_non_null(strstr(e.msg, "maybe"));
}

/* ---------------------------------------------- driver on a file image */
struct rig {
    char dir[64], img[96];
    struct fb_gateway gw;
    struct fb_device dev;
    struct fb_conn conn;
    struct fb_device *devp[1];
    struct fb_group group;
    struct fb_tag tags[8];
    const char *atext[8]; /* the tags' address texts (gw.atext) */
    uint32_t ids[8];
    struct fb_rt running; /* stands in for a running runtime */
};

static void img_put(const struct rig *r, uint32_t off, uint8_t v)
{
    int fd = open(r->img, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &v, 1, off), 1);
    close(fd);
}

static void img_all(const struct rig *r, uint8_t out[FB_REVPI_IMAGE_SIZE])
{
    int fd = open(r->img, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, out, FB_REVPI_IMAGE_SIZE, 0), FB_REVPI_IMAGE_SIZE);
    close(fd);
}

/* Builds a one-device gateway on a fresh 4096-byte image; returns the
 * driver's device_init result. */
static int rig_init(struct rig *r, const char *query, const char *const *addrs, const uint8_t *access, int n,
                    struct fb_err *e)
{
    memset(r, 0, sizeof *r);
    snprintf(r->dir, sizeof r->dir, "/tmp/fb-revpi-XXXXXX");
    assert_non_null(mkdtemp(r->dir));
    snprintf(r->img, sizeof r->img, "%s/piControl0", r->dir);
    int fd = open(r->img, O_CREAT | O_RDWR | O_TRUNC, 0644);
    assert_true(fd >= 0);
    uint8_t zero[FB_REVPI_IMAGE_SIZE] = {0};
    assert_int_equal(write(fd, zero, sizeof zero), (ssize_t)sizeof zero);
    close(fd);
    char url[1400];
    snprintf(url, sizeof url, "revpi://%s?%s", r->img, query);
    assert_int_equal(fb_url_parse(url, &r->dev.url, e), 0);
    r->gw.devs = &r->dev;
    r->gw.ndevs = 1;
    r->gw.conns = &r->conn;
    r->gw.nconns = 1;
    r->gw.tags = r->tags;
    r->gw.atext = r->atext;
    r->gw.ntags = (uint32_t)n;
    r->dev.name = (char *)"revpi-001";
    r->dev.gw = &r->gw;
    r->dev.drv = &fb_driver_revpi;
    r->dev.conn = &r->conn;
    r->dev.groups = &r->group;
    r->dev.ngroups = 1;
    r->dev.ntags = (uint32_t)n;
    r->devp[0] = &r->dev;
    r->conn.devs = r->devp;
    r->conn.ndevs = 1;
    r->conn.drv = &fb_driver_revpi;
    r->group.ids = r->ids;
    r->group.ntags = (uint32_t)n;
    r->group.period_ns = 1000000000LL;
    int rc = fb_driver_revpi.device_init(&r->dev, &r->conn.key, e);
    if (rc) return rc;
    for (int i = 0; i < n; i++) {
        r->tags[i].id = (uint32_t)i;
        r->tags[i].name = (char *)addrs[i];
        r->atext[i] = addrs[i];
        r->tags[i].access = access[i];
        r->ids[i] = (uint32_t)i;
        rc = fb_driver_revpi.parse_address(&r->dev, &r->tags[i], e);
        if (rc) return rc;
    }
    return fb_driver_revpi.plan(&r->dev, &r->group, e);
}

static void rig_free(struct rig *r)
{
    for (uint32_t i = 0; i < r->gw.ntags; i++)
        if (r->tags[i].addr) fb_driver_revpi.free_address(&r->tags[i]);
    if (r->dev.drv_dev) fb_driver_revpi.device_free(&r->dev);
    free(r->conn.key);
    fb_url_free(&r->dev.url);
    unlink(r->img);
    rmdir(r->dir);
}

static struct fb_batch *rig_read(struct rig *r)
{
    struct fb_batch *b = fb_batch_new(8, 0, 0);
    assert_non_null(b);
    assert_int_equal(fb_driver_revpi.read(&r->dev, &r->group, b), 0);
    assert_int_equal(b->n, r->group.ntags);
    return b;
}

static void test_driver_file_image(void **state)
{
    (void)state;
    static const char *const addrs[] = {"I_1", "I_9", "O_1", "O_3", "RevPiLED", "word:100", "I_2:uint8"};
    static const uint8_t acc[] = {FB_ACC_READ, FB_ACC_READ, FB_ACC_RW, FB_ACC_RW, FB_ACC_RW, FB_ACC_RW, FB_ACC_READ};
    struct rig r;
    struct fb_err e = {0};
    char q[1200];
    snprintf(q, sizeof q, "config=%s&cycle=20ms&safe=O_1=0,O_3=1,RevPiLED=0", fixture_path("core_dio.rsc"));
    int rc = rig_init(&r, q, addrs, acc, 7, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(r.conn.key + 6, r.img);
    assert_memory_equal(r.conn.key, "revpi:", 6);
    assert_int_equal(r.group.period_ns, 20000000LL); /* cycle= */
    assert_int_equal(r.tags[0].type, FB_T_BOOL);
    assert_int_equal(r.tags[4].type, FB_T_UINT8);
    assert_int_equal(r.tags[5].type, FB_T_UINT16);
    assert_int_equal(r.tags[6].type, FB_T_UINT8);
    assert_int_equal(fb_driver_revpi.open(&r.conn, &e), 0);

    /* an external writer sets I_9 (byte 12 bit 0) and I_1 (byte 11 bit 0) */
    img_put(&r, 12, 0x01);
    img_put(&r, 11, 0x03);
    img_put(&r, 100, 0x34);
    img_put(&r, 101, 0x12);
    struct fb_batch *b = rig_read(&r);
    assert_true(b->s[0].v.b);
    assert_true(b->s[1].v.b);
    assert_false(b->s[2].v.b);
    assert_int_equal(b->s[5].v.u, 0x1234);
    assert_int_equal(b->s[6].v.u, 1); /* I_2 as uint8 */
    assert_int_equal(b->s[0].quality, FB_Q_GOOD);
    fb_batch_free(b);

    /* an output bit write changes that bit and nothing else */
    img_put(&r, 81, 0xF0); /* O_5..O_8 set by someone else */
    uint8_t before[FB_REVPI_IMAGE_SIZE], after[FB_REVPI_IMAGE_SIZE];
    img_all(&r, before);
    struct fb_value on = {.type = FB_T_BOOL, .b = true};
    assert_int_equal(fb_driver_revpi.write(&r.dev, &r.tags[3], &on, &e), 0);
    img_all(&r, after);
    before[81] |= 0x04;
    assert_memory_equal(before, after, sizeof before);
    /* a byte write */
    struct fb_value led = {.type = FB_T_UINT8, .u = 3};
    assert_int_equal(fb_driver_revpi.write(&r.dev, &r.tags[4], &led, &e), 0);
    img_all(&r, after);
    assert_int_equal(after[6], 3);
    /* inputs and out-of-range values are refused */
    assert_true(fb_driver_revpi.write(&r.dev, &r.tags[0], &on, &e) < 0);
    struct fb_value big = {.type = FB_T_UINT8, .u = 300};
    assert_int_equal(fb_driver_revpi.write(&r.dev, &r.tags[4], &big, &e), FB_ERANGE);

    /* one-shot CLI (no runtime): close does NOT write the safe state */
    fb_driver_revpi.close(&r.conn);
    img_all(&r, after);
    assert_int_equal(after[81], 0xF4);
    /* a running gateway: close writes it, and only the listed outputs */
    r.gw.rt = &r.running;
    assert_int_equal(fb_driver_revpi.open(&r.conn, &e), 0);
    assert_int_equal(fb_driver_revpi.write(&r.dev, &r.tags[2], &on, &e), 0); /* O_1 = 1 */
    fb_driver_revpi.close(&r.conn);
    img_all(&r, after);
    assert_int_equal(after[81], 0xF4); /* O_1 back to 0, O_3 stays 1, O_5..O_8 untouched */
    assert_int_equal(after[6], 0);     /* RevPiLED = 0 */
    assert_int_equal(after[11], 0x03);
    rig_free(&r);
}

static void test_driver_watchdog(void **state)
{
    (void)state;
    static const char *const addrs[] = {"O_1", "bit:81.1"};
    static const uint8_t acc[] = {FB_ACC_RW, FB_ACC_RW};
    struct rig r;
    struct fb_err e = {0};
    char q[1200];
    snprintf(q, sizeof q, "config=%s&watchdog=50ms&safe=O_1=0,bit:81.1=1", fixture_path("core_dio.rsc"));
    assert_int_equal(rig_init(&r, q, addrs, acc, 2, &e), 0);
    r.gw.rt = &r.running;
    assert_int_equal(fb_driver_revpi.open(&r.conn, &e), 0);
    struct fb_value on = {.type = FB_T_BOOL, .b = true};
    assert_int_equal(fb_driver_revpi.write(&r.dev, &r.tags[0], &on, &e), 0);
    uint8_t img[FB_REVPI_IMAGE_SIZE];
    fb_batch_free(rig_read(&r)); /* within the watchdog: nothing happens */
    img_all(&r, img);
    assert_int_equal(img[81], 0x01);
    usleep(80000);
    fb_batch_free(rig_read(&r)); /* watchdog expired: safe state */
    img_all(&r, img);
    assert_int_equal(img[81], 0x02);
    /* a write re-arms it */
    assert_int_equal(fb_driver_revpi.write(&r.dev, &r.tags[0], &on, &e), 0);
    fb_batch_free(rig_read(&r));
    img_all(&r, img);
    assert_int_equal(img[81], 0x03);
    r.gw.rt = NULL;
    fb_driver_revpi.close(&r.conn);
    rig_free(&r);
}

/* The AIO's values through the driver: -250 mV reads as -250 (not 65286),
 * :uint16 still reads the raw word, a negative setpoint is written as INT16,
 * and a negative safe value is accepted for an AIO output. */
static void test_driver_aio(void **state)
{
    (void)state;
    static const char *const addrs[] = {"InputValue_1",  "InputValue_1:uint16", "flow_in", "RTDValue_1",
                                        "InputStatus_1", "OutputValue_1",       "I_1",     "Counter_1"};
    static const uint8_t acc[] = {FB_ACC_READ, FB_ACC_READ, FB_ACC_READ, FB_ACC_READ,
                                  FB_ACC_READ, FB_ACC_RW,   FB_ACC_READ, FB_ACC_READ};
    struct rig r;
    struct fb_err e = {0};
    char q[1200];
    snprintf(q, sizeof q, "config=%s&safe=OutputValue_1=-500", fixture_path("connect_aio_dio.rsc"));
    int rc = rig_init(&r, q, addrs, acc, 8, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(r.tags[0].type, FB_T_INT16);
    assert_int_equal(r.tags[1].type, FB_T_UINT16);
    assert_int_equal(r.tags[2].type, FB_T_INT16);
    assert_int_equal(r.tags[4].type, FB_T_UINT8);
    assert_int_equal(r.tags[5].type, FB_T_INT16);
    assert_int_equal(r.tags[7].type, FB_T_UINT32);
    rc = fb_driver_revpi.open(&r.conn, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    img_put(&r, 9, 0x06); /* InputValue_1 = 0xFF06 = -250 mV */
    img_put(&r, 10, 0xFF);
    img_put(&r, 13, 0x10); /* flow_in = 10000 */
    img_put(&r, 14, 0x27);
    img_put(&r, 21, 0x30); /* RTDValue_1 = 0xF830 = -2000 (-200.0 °C) */
    img_put(&r, 22, 0xF8);
    img_put(&r, 17, 0x81);                                       /* InputStatus_1: bits 0 and 7 */
    img_put(&r, 98, 0x01);                                       /* DIO I_1 */
    for (uint32_t k = 0; k < 4; k++) img_put(&r, 102 + k, 0xFF); /* Counter_1 */
    struct fb_batch *b = rig_read(&r);
    assert_int_equal(b->s[0].v.type, FB_T_INT16);
    assert_int_equal(b->s[0].v.i, -250);
    assert_int_equal(b->s[1].v.u, 65286);
    assert_int_equal(b->s[2].v.i, 10000);
    assert_int_equal(b->s[3].v.i, -2000);
    assert_int_equal(b->s[4].v.u, 0x81);
    assert_true(b->s[6].v.b);
    assert_int_equal(b->s[7].v.u, 4294967295u);
    for (uint32_t i = 0; i < b->n; i++) assert_int_equal(b->s[i].quality, FB_Q_GOOD);
    fb_batch_free(b);

    struct fb_value sp = {.type = FB_T_INT16, .i = -1000};
    assert_int_equal(fb_driver_revpi.write(&r.dev, &r.tags[5], &sp, &e), 0);
    uint8_t img[FB_REVPI_IMAGE_SIZE];
    img_all(&r, img);
    assert_int_equal(img[29], 0x18); /* -1000 = 0xFC18, little-endian */
    assert_int_equal(img[30], 0xFC);
    b = rig_read(&r);
    assert_int_equal(b->s[5].v.i, -1000);
    fb_batch_free(b);
    struct fb_value big = {.type = FB_T_INT16, .i = 40000};
    assert_int_equal(fb_driver_revpi.write(&r.dev, &r.tags[5], &big, &e), FB_ERANGE);
    /* a running gateway's close writes the safe value -500 = 0xFE0C */
    r.gw.rt = &r.running;
    fb_driver_revpi.close(&r.conn);
    img_all(&r, img);
    assert_int_equal(img[29], 0x0C);
    assert_int_equal(img[30], 0xFE);
    r.gw.rt = NULL;
    rig_free(&r);
}

static void test_driver_errors(void **state)
{
    (void)state;
    struct rig r;
    struct fb_err e = {0};
    static const char *const in[] = {"I_1"};
    static const uint8_t rw[] = {FB_ACC_RW}, ro[] = {FB_ACC_READ};
    char q[1200];
    snprintf(q, sizeof q, "config=%s", fixture_path("core_dio.rsc"));
    assert_true(rig_init(&r, q, in, rw, 1, &e) < 0); /* input declared writable */
    assert_non_null(strstr(e.msg, "input"));
    rig_free(&r);
    static const char *const unknown[] = {"Nope"};
    assert_true(rig_init(&r, q, unknown, ro, 1, &e) < 0);
    assert_non_null(strstr(e.msg, "Nope"));
    rig_free(&r);
    assert_true(rig_init(&r, "bogus=1", in, ro, 1, &e) < 0);
    assert_non_null(strstr(e.msg, "unknown revpi option"));
    rig_free(&r);
    assert_true(rig_init(&r, "config=none", in, ro, 1, &e) < 0);
    assert_non_null(strstr(e.msg, "config=none"));
    rig_free(&r);
    snprintf(q, sizeof q, "config=%s", fixture_path("overlap.rsc"));
    assert_true(rig_init(&r, q, in, ro, 1, &e) < 0);
    assert_non_null(strstr(e.msg, "overlaps"));
    rig_free(&r);
    snprintf(q, sizeof q, "config=%s&safe=Nope=1", fixture_path("core_dio.rsc"));
    assert_true(rig_init(&r, q, in, ro, 1, &e) < 0);
    assert_non_null(strstr(e.msg, "safe"));
    rig_free(&r);
    /* a missing PiCtory file: names need a type, and open fails until it exists */
    assert_true(rig_init(&r, "config=/nonexistent/config.rsc", in, ro, 1, &e) < 0);
    assert_non_null(strstr(e.msg, "type"));
    rig_free(&r);
    static const char *const typed[] = {"I_1:bool"};
    assert_int_equal(rig_init(&r, "config=/nonexistent/config.rsc", typed, ro, 1, &e), 0);
    assert_true(fb_driver_revpi.open(&r.conn, &e) < 0);
    assert_non_null(strstr(e.msg, "/nonexistent/config.rsc"));
    rig_free(&r);
    /* an image cut short while running: the tags past its end are refused
     * (Bad, each counted as a failed item), the others keep reading */
    static const char *const two[] = {"byte:50", "byte:200"};
    static const uint8_t ro2[] = {FB_ACC_READ, FB_ACC_READ};
    assert_int_equal(rig_init(&r, "config=none", two, ro2, 2, &e), 0);
    assert_int_equal(fb_driver_revpi.open(&r.conn, &e), 0);
    img_put(&r, 50, 7);
    img_put(&r, 200, 9);
    struct fb_batch *b = rig_read(&r);
    assert_int_equal(b->s[1].v.u, 9);
    assert_int_equal(atomic_load(&r.dev.m.errors), 0);
    fb_batch_free(b);
    assert_int_equal(truncate(r.img, 100), 0);
    b = rig_read(&r);
    assert_int_equal(b->s[0].quality, FB_Q_GOOD);
    assert_int_equal(b->s[0].v.u, 7);
    assert_int_equal(b->s[1].quality, FB_Q_BAD_NODE_UNKNOWN);
    assert_int_equal(atomic_load(&r.dev.m.errors), 1);
    fb_batch_free(b);
    b = rig_read(&r);
    assert_int_equal(atomic_load(&r.dev.m.errors), 2); /* every read of a refused item counts */
    fb_batch_free(b);
    assert_int_equal(truncate(r.img, FB_REVPI_IMAGE_SIZE), 0);
    b = rig_read(&r);
    assert_int_equal(b->s[1].quality, FB_Q_GOOD);
    assert_int_equal(b->s[1].v.u, 0);
    assert_int_equal(atomic_load(&r.dev.m.errors), 2);
    fb_batch_free(b);
    fb_driver_revpi.close(&r.conn);
    rig_free(&r);
    /* an image file too short for the addresses when the connection opens */
    static const char *const far[] = {"byte:4095"};
    assert_int_equal(rig_init(&r, "config=none", far, ro, 1, &e), 0);
    assert_int_equal(truncate(r.img, 100), 0);
    assert_true(fb_driver_revpi.open(&r.conn, &e) < 0);
    assert_non_null(strstr(e.msg, "100 bytes"));
    rig_free(&r);
}

static void test_browse(void **state)
{
    (void)state;
    char url[1200];
    snprintf(url, sizeof url, "revpi:///nonexistent-image?config=%s", fixture_path("connect_dio_di_do_aio.rsc"));
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    struct fb_err e = {0};
    assert_int_equal(fb_revpi_browse(url, NULL, f, &e), 0);
    fclose(f);
    assert_non_null(strstr(text, "6 devices"));
    assert_non_null(strstr(text, "device 32 DIO (type LEFT_RIGHT, productType 96, offset 9)"));
    assert_non_null(strstr(text, "I_9"));
    assert_non_null(strstr(text, "bit:10.0"));
    assert_non_null(strstr(text, "InputValue_1"));
    free(text);
    f = open_memstream(&text, &len);
    assert_true(fb_revpi_browse("revpi:///x?config=/nonexistent.rsc", NULL, f, &e) < 0);
    assert_true(fb_revpi_browse("modbus-tcp://127.0.0.1", NULL, f, &e) < 0);
    fclose(f);
    free(text);
    /* the same variables as data: inputs read-only, outputs rw, one per variable */
    struct fb_browse list = {0};
    assert_int_equal(fb_revpi_browse(url, &list, NULL, &e), 0);
    const struct fb_browse_item *i9 = NULL, *o1 = NULL;
    for (size_t i = 0; i < list.n; i++) {
        if (!strcmp(list.it[i].name, "I_9")) i9 = &list.it[i];
        if (!strcmp(list.it[i].name, "O_1")) o1 = &list.it[i];
    }
    assert_non_null(i9);
    assert_string_equal(i9->addr, "I_9");
    assert_int_equal(i9->type, FB_T_BOOL);
    assert_int_equal(i9->access, FB_ACC_READ);
    assert_non_null(o1);
    assert_int_equal(o1->access, FB_ACC_RW);
    struct fb_buf y;
    fb_buf_init(&y);
    fb_browse_yaml(&y, &list, url, "revpi");
    fb_buf_cstr(&y);
    assert_non_null(strstr(y.p, "- {name: \"I_9\", addr: \"I_9\", type: bool}"));
    assert_non_null(strstr(y.p, "- {name: \"O_1\", addr: \"O_1\", type: bool, access: rw}"));
    fb_buf_free(&y);
    fb_browse_free(&list);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cfg_full),
        cmocka_unit_test(test_cfg_old_style),
        cmocka_unit_test(test_cfg_rejects),
        cmocka_unit_test(test_cfg_malformed),
        cmocka_unit_test(test_cfg_truncations),
        cmocka_unit_test(test_addr),
        cmocka_unit_test(test_resolve_and_types),
        cmocka_unit_test(test_module_types),
        cmocka_unit_test(test_codec),
        cmocka_unit_test(test_safe_parse),
        cmocka_unit_test(test_driver_file_image),
        cmocka_unit_test(test_driver_watchdog),
        cmocka_unit_test(test_driver_aio),
        cmocka_unit_test(test_driver_errors),
        cmocka_unit_test(test_browse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
