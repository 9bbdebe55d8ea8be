/* test_sparkplug.c — Sparkplug B codec and session helpers.
 *
 * Golden bytes are derived by hand from the schema (PROTOCOLS.md §4: field
 * numbers, wire types) and not from our own encoder, so a wrong field number
 * or wire type in sparkplug_b.proto fails here.  Every datatype makes a round
 * trip through the decoder, including the edge values of each integer type. */
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

#include "north/sparkplug/sparkplug.h"
#include "north/sparkplug/spb_codec.h"

static void assert_bytes(const struct fb_buf *b, const uint8_t *want, size_t n)
{
    if (b->len != n || memcmp(b->p, want, n) != 0) {
        fprintf(stderr, "got %zu bytes:", b->len);
        for (size_t i = 0; i < b->len; i++) fprintf(stderr, " %02X", (uint8_t)b->p[i]);
        fprintf(stderr, "\nwant %zu bytes:", n);
        for (size_t i = 0; i < n; i++) fprintf(stderr, " %02X", want[i]);
        fprintf(stderr, "\n");
        fail();
    }
}

/* A DATA-style payload: one Int32 metric -1 with name, alias, timestamp,
 * datatype and the Quality property 192. */
static void test_golden_metric(void **st)
{
    (void)st;
    static const uint8_t want[] = {
        0x08, 0xE8, 0x07,                                  /* Payload.timestamp = 1000 (varint) */
        0x12, 0x22,                                        /* Payload.metrics, 34 bytes */
        0x0A, 0x01, 'a',                                   /*   Metric.name = "a" */
        0x10, 0x01,                                        /*   Metric.alias = 1 */
        0x18, 0xE8, 0x07,                                  /*   Metric.timestamp = 1000 */
        0x20, 0x03,                                        /*   Metric.datatype = 3 (Int32) */
        0x4A, 0x10,                                        /*   Metric.properties, 16 bytes */
        0x0A, 0x07, 'Q',  'u',  'a',  'l',  'i', 't', 'y', /* keys[0] */
        0x12, 0x05,                                        /*     values[0], 5 bytes */
        0x08, 0x03,                                        /*       PropertyValue.type = 3 (Int32) */
        0x18, 0xC0, 0x01,                                  /*       PropertyValue.int_value = 192 */
        0x50, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F,                /* Metric.int_value = (uint32)-1 */
        0x18, 0x01,                                        /* Payload.seq = 1 */
    };
    struct fb_spb_enc e;
    fb_spb_enc_init(&e);
    struct fb_buf b;
    fb_buf_init(&b);
    fb_spb_enc_begin(&e, 1000, 1);
    spb_metric *m = fb_spb_enc_add(&e, "a", 1, 1000, SPB_INT32);
    struct fb_value v = {.type = FB_T_INT32, .i = -1};
    assert_int_equal(fb_spb_enc_value(&e, m, SPB_INT32, &v), 0);
    fb_spb_enc_quality(&e, m, SPB_Q_GOOD);
    fb_spb_enc_finish(&e, &b);
    assert_bytes(&b, want, sizeof want);
    fb_buf_free(&b);
    fb_spb_enc_free(&e);
}

/* The NDEATH will: timestamp, bdSeq as Int64 in long_value, no seq. */
static void test_golden_ndeath(void **st)
{
    (void)st;
    static const uint8_t want[] = {
        0x08, 0xE8, 0x07,                     /* timestamp 1000 */
        0x12, 0x0B,                           /* metrics, 11 bytes */
        0x0A, 0x05, 'b',  'd', 'S', 'e', 'q', /*   name */
        0x20, 0x04,                           /*   datatype Int64 */
        0x58, 0x03,                           /*   long_value 3 */
    };
    struct fb_buf b;
    fb_buf_init(&b);
    assert_int_equal(fb_spb_ndeath_payload(&b, 1000, 3), 0);
    assert_bytes(&b, want, sizeof want);
    fb_buf_free(&b);
}

/* Every scalar type, edge values, through encoder and decoder. */
static void test_roundtrip_all_types(void **st)
{
    (void)st;
    struct fb_value vals[] = {
        {.type = FB_T_BOOL, .b = true},
        {.type = FB_T_BOOL, .b = false},
        {.type = FB_T_INT8, .i = -128},
        {.type = FB_T_INT8, .i = 127},
        {.type = FB_T_UINT8, .u = 255},
        {.type = FB_T_INT16, .i = -32768},
        {.type = FB_T_INT16, .i = 32767},
        {.type = FB_T_UINT16, .u = 65535},
        {.type = FB_T_INT32, .i = INT32_MIN},
        {.type = FB_T_INT32, .i = INT32_MAX},
        {.type = FB_T_UINT32, .u = UINT32_MAX},
        {.type = FB_T_UINT32, .u = 0},
        {.type = FB_T_INT64, .i = INT64_MIN},
        {.type = FB_T_INT64, .i = -1},
        {.type = FB_T_INT64, .i = INT64_MAX},
        {.type = FB_T_UINT64, .u = UINT64_MAX},
        {.type = FB_T_FLOAT32, .f = -1.5f},
        {.type = FB_T_FLOAT32, .f = FLT_MAX},
        {.type = FB_T_FLOAT64, .f = 3.141592653589793},
        {.type = FB_T_FLOAT64, .f = -1e300},
        {.type = FB_T_STRING, .s = {"hello, Sparkplug", 16}},
        {.type = FB_T_STRING, .s = {"", 0}},
    };
    size_t n = sizeof vals / sizeof vals[0];
    struct fb_spb_enc e;
    fb_spb_enc_init(&e);
    struct fb_buf b;
    fb_buf_init(&b);
    fb_spb_enc_begin(&e, 1234567890123ULL, 7);
    char names[64][16];
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "m%zu", i);
        uint32_t dt = fb_spb_datatype(vals[i].type);
        assert_int_not_equal(dt, SPB_UNKNOWN);
        spb_metric *m = fb_spb_enc_add(&e, names[i], (int64_t)i + 1000, 1234567890123LL, dt);
        assert_non_null(m);
        assert_int_equal(fb_spb_enc_value(&e, m, dt, &vals[i]), 0);
        fb_spb_enc_quality(&e, m, (int32_t)(i % 3 == 0 ? SPB_Q_GOOD : i % 3 == 1 ? SPB_Q_STALE : SPB_Q_BAD));
    }
    /* a null metric too */
    spb_metric *mn = fb_spb_enc_add(&e, "nothing", 5, 1, SPB_DOUBLE);
    fb_spb_enc_value(&e, mn, SPB_DOUBLE, NULL);
    fb_spb_enc_finish(&e, &b);

    spb_payload *p = fb_spb_decode(b.p, b.len);
    assert_non_null(p);
    assert_true(p->has_seq);
    assert_int_equal(p->seq, 7);
    assert_int_equal(p->timestamp, 1234567890123ULL);
    assert_int_equal(p->n_metrics, n + 1);
    for (size_t i = 0; i < n; i++) {
        const spb_metric *m = p->metrics[i];
        assert_string_equal(m->name, names[i]);
        assert_int_equal(m->alias, i + 1000);
        assert_int_equal(m->datatype, fb_spb_datatype(vals[i].type));
        struct fb_value got;
        assert_int_equal(fb_spb_metric_value(m, 0, &got), 0);
        assert_int_equal(got.type, vals[i].type);
        if (vals[i].type == FB_T_STRING) {
            assert_int_equal(got.s.len, vals[i].s.len);
            assert_memory_equal(got.s.p, vals[i].s.p, got.s.len);
        } else if (fb_type_is_float(vals[i].type)) {
            assert_true(got.f == vals[i].f);
        } else {
            assert_true(fb_value_equal(&got, &vals[i]));
        }
        int32_t q = -1;
        assert_true(fb_spb_metric_quality(m, &q));
        assert_int_equal(q, i % 3 == 0 ? SPB_Q_GOOD : i % 3 == 1 ? SPB_Q_STALE : SPB_Q_BAD);
        /* field placement as the reference implementation does it */
        uint32_t dt = m->datatype;
        if (dt == SPB_UINT32 || dt == SPB_INT64 || dt == SPB_UINT64)
            assert_int_equal(m->value_case, ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__METRIC__VALUE_LONG_VALUE);
        if (dt == SPB_INT8 || dt == SPB_INT16 || dt == SPB_INT32 || dt == SPB_UINT8 || dt == SPB_UINT16)
            assert_int_equal(m->value_case, ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__METRIC__VALUE_INT_VALUE);
    }
    const spb_metric *m = p->metrics[n];
    assert_true(m->has_is_null && m->is_null);
    struct fb_value got;
    assert_int_equal(fb_spb_metric_value(m, 0, &got), FB_ENOENT);
    fb_spb_free(p);
    fb_buf_free(&b);
    fb_spb_enc_free(&e);
}

/* UInt32 arriving in int_value (the old reading of the spec) is accepted;
 * negative Int8 is sign-extended 32-bit. */
static void test_decode_tolerance(void **st)
{
    (void)st;
    static const uint8_t u32_in_int[] = {0x12, 0x08, 0x20, 0x07, 0x50, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F};
    spb_payload *p = fb_spb_decode(u32_in_int, sizeof u32_in_int);
    assert_non_null(p);
    struct fb_value v;
    assert_int_equal(fb_spb_metric_value(p->metrics[0], 0, &v), 0);
    assert_int_equal(v.type, FB_T_UINT32);
    assert_true(v.u == UINT32_MAX);
    fb_spb_free(p);

    struct fb_spb_enc e;
    fb_spb_enc_init(&e);
    struct fb_buf b;
    fb_buf_init(&b);
    fb_spb_enc_begin(&e, 1, 0);
    spb_metric *m = fb_spb_enc_add(&e, NULL, 9, -1, 0);
    struct fb_value in = {.type = FB_T_INT8, .i = -5};
    fb_spb_enc_value(&e, m, SPB_INT8, &in);
    assert_int_equal(m->int_value, 0xFFFFFFFBu);
    fb_spb_enc_finish(&e, &b);
    p = fb_spb_decode(b.p, b.len);
    assert_non_null(p);
    assert_null(p->metrics[0]->name);
    assert_false(p->metrics[0]->has_datatype);
    assert_int_equal(fb_spb_metric_value(p->metrics[0], SPB_INT8, &v), 0);
    assert_int_equal(v.i, -5);
    /* wrong field for the datatype */
    assert_int_equal(fb_spb_metric_value(p->metrics[0], SPB_STRING, &v), FB_EPROTO);
    fb_spb_free(p);
    fb_buf_free(&b);
    fb_spb_enc_free(&e);
}

static void test_decode_garbage(void **st)
{
    (void)st;
    static const uint8_t bad1[] = {0x12, 0x40, 0x0A}; /* length beyond the end */
    static const uint8_t bad2[] = {0x0A, 0x05, 'a'};  /* Payload has no field 1 as bytes */
    static const uint8_t bad3[] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    assert_null(fb_spb_decode(bad1, sizeof bad1));
    assert_null(fb_spb_decode(bad2, sizeof bad2));
    assert_null(fb_spb_decode(bad3, sizeof bad3));
    spb_payload *p = fb_spb_decode("", 0);
    assert_non_null(p); /* empty is a valid empty payload */
    assert_int_equal(p->n_metrics, 0);
    fb_spb_free(p);
}

static void test_quality_and_types(void **st)
{
    (void)st;
    assert_int_equal(fb_spb_quality(FB_Q_GOOD), 192);
    assert_int_equal(fb_spb_quality(FB_Q_UNC_LAST_USABLE), 500);
    assert_int_equal(fb_spb_quality(FB_Q_BAD_COMM), 0);
    assert_int_equal(fb_spb_datatype(FB_T_UINT32), 7);
    assert_int_equal(fb_spb_datatype(FB_T_FLOAT64), 10);
    assert_string_equal(fb_spb_datatype_name(SPB_UINT64), "UInt64");
    assert_string_equal(fb_spb_datatype_name(999), "Unknown");
}

#define S(x) x, strlen(x)
static void test_topics_and_state(void **st)
{
    (void)st;
    char t[256];
    assert_int_equal(fb_spb_topic(t, sizeof t, "G1", "DDATA", "edge", "press-01"), 0);
    assert_string_equal(t, "spBv1.0/G1/DDATA/edge/press-01");
    assert_int_equal(fb_spb_topic(t, sizeof t, "G1", "NBIRTH", "edge", NULL), 0);
    assert_string_equal(t, "spBv1.0/G1/NBIRTH/edge");
    assert_true(fb_spb_topic(t, 10, "G1", "NBIRTH", "edge", NULL) < 0);

    int64_t ts = 0;
    int on = -1;
    assert_int_equal(fb_spb_parse_state(S("{\"online\":true,\"timestamp\":1700000000000}"), &on, &ts), 0);
    assert_int_equal(on, 1);
    assert_int_equal(ts, 1700000000000LL);
    assert_int_equal(fb_spb_parse_state(S("{\"online\":false,\"timestamp\":5}"), &on, &ts), 0);
    assert_int_equal(on, 0);
    assert_int_equal(fb_spb_parse_state(S("ONLINE"), &on, &ts), 0); /* Sparkplug 2.2 */
    assert_int_equal(on, 1);
    assert_int_equal(ts, -1);
    assert_int_equal(fb_spb_parse_state(S("OFFLINE"), &on, &ts), 0);
    assert_int_equal(on, 0);
    assert_true(fb_spb_parse_state(S("{\"online\":\"yes\"}"), &on, &ts) < 0);
    assert_true(fb_spb_parse_state(S(""), &on, &ts) < 0);
}

/* DCMD metrics become a JSON write request for the router. */
static void test_dcmd_to_json(void **st)
{
    (void)st;
    struct fb_spb_enc e;
    fb_spb_enc_init(&e);
    struct fb_buf b, j;
    fb_buf_init(&b);
    fb_buf_init(&j);
    fb_spb_enc_begin(&e, 1700000000000ULL, -1);
    spb_metric *m = fb_spb_enc_add(&e, "setpoint", -1, -1, SPB_DOUBLE);
    struct fb_value v = {.type = FB_T_FLOAT64, .f = 42.5};
    fb_spb_enc_value(&e, m, SPB_DOUBLE, &v);
    m = fb_spb_enc_add(&e, NULL, 1003, -1, 0); /* by alias, datatype from the birth */
    v = (struct fb_value){.type = FB_T_INT16, .i = -7};
    fb_spb_enc_value(&e, m, SPB_INT16, &v);
    fb_spb_enc_finish(&e, &b);
    spb_payload *p = fb_spb_decode(b.p, b.len);
    assert_non_null(p);
    const char *names[] = {"setpoint", "level"};
    uint32_t dts[] = {SPB_DOUBLE, SPB_INT16};
    int ok = 0;
    for (size_t i = 0; i < p->n_metrics; i++) {
        const spb_metric *pm = p->metrics[i];
        uint32_t dt = pm->has_datatype ? pm->datatype : dts[i];
        assert_int_equal(fb_spb_metric_json(&j, pm, names[i], dt, i == 0), 0);
        ok++;
    }
    fb_buf_cstr(&j);
    assert_string_equal(j.p, "\"setpoint\":42.5,\"level\":-7");
    assert_int_equal(ok, 2);
    fb_spb_free(p);
    fb_buf_free(&b);
    fb_buf_free(&j);
    fb_spb_enc_free(&e);
}

/* A bad metric: is_null, Quality 0 and the refused reading in the property
 * Raw, typed like the metric; decoded back, and shown by spb-dump's format. */
static void test_raw_property(void **st)
{
    (void)st;
    struct fb_spb_enc e;
    fb_spb_enc_init(&e);
    struct fb_buf b;
    fb_buf_init(&b);
    static const uint32_t dts[] = {SPB_INT16, SPB_UINT32, SPB_INT64, SPB_FLOAT, SPB_DOUBLE, SPB_BOOLEAN};
    static const struct fb_value vals[] = {{.type = FB_T_INT16, .i = -150},
                                           {.type = FB_T_UINT32, .u = 4000000000u},
                                           {.type = FB_T_INT64, .i = -9007199254740993LL},
                                           {.type = FB_T_FLOAT32, .f = 1.5},
                                           {.type = FB_T_FLOAT64, .f = 123.456},
                                           {.type = FB_T_BOOL, .b = true}};
    for (int round = 0; round < 2; round++) { /* the second round reuses the slots */
        fb_spb_enc_begin(&e, 1000, 3);
        for (size_t i = 0; i < 6; i++) {
            spb_metric *m = fb_spb_enc_add(&e, "x", (int64_t)i, 1000, dts[i]);
            assert_int_equal(fb_spb_enc_value(&e, m, dts[i], NULL), 0); /* bad: is_null */
            fb_spb_enc_quality(&e, m, SPB_Q_BAD);
            assert_int_equal(fb_spb_enc_raw(&e, m, dts[i], &vals[i]), 0);
        }
        spb_metric *g = fb_spb_enc_add(&e, "good", 9, 1000, SPB_INT16); /* no Raw on a reused slot */
        struct fb_value gv = {.type = FB_T_INT16, .i = 7};
        fb_spb_enc_value(&e, g, SPB_INT16, &gv);
        fb_spb_enc_quality(&e, g, SPB_Q_GOOD);
        fb_spb_enc_finish(&e, &b);
        spb_payload *p = fb_spb_decode(b.p, b.len);
        assert_non_null(p);
        assert_int_equal(p->n_metrics, 7);
        for (size_t i = 0; i < 6; i++) {
            const spb_metric *m = p->metrics[i];
            struct fb_value v;
            assert_true(m->has_is_null && m->is_null);
            assert_int_equal(fb_spb_metric_value(m, 0, &v), FB_ENOENT);
            int32_t q = -1;
            assert_true(fb_spb_metric_quality(m, &q));
            assert_int_equal(q, SPB_Q_BAD);
            assert_true(fb_spb_metric_raw(m, 0, &v));
            if (dts[i] == SPB_FLOAT)
                assert_true(v.f == 1.5);
            else
                assert_true(fb_value_equal(&v, &vals[i]));
            assert_int_equal(m->properties->values[1]->type, dts[i]);
        }
        struct fb_value v;
        assert_false(fb_spb_metric_raw(p->metrics[6], 0, &v));
        struct fb_buf t;
        fb_buf_init(&t);
        fb_spb_format(&t, p, NULL, NULL);
        assert_non_null(strstr(fb_buf_cstr(&t), "Int16 = null  quality 0 (bad)  raw -150"));
        fb_buf_free(&t);
        fb_spb_free(p);
    }
    fb_buf_free(&b);
    fb_spb_enc_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_metric),       cmocka_unit_test(test_golden_ndeath),
        cmocka_unit_test(test_roundtrip_all_types), cmocka_unit_test(test_decode_tolerance),
        cmocka_unit_test(test_decode_garbage),      cmocka_unit_test(test_quality_and_types),
        cmocka_unit_test(test_topics_and_state),    cmocka_unit_test(test_dcmd_to_json),
        cmocka_unit_test(test_raw_property),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
