/* test_batch_codec.c — buffered batches survive the trip to disk and back:
 * every value type, stats and flags round trip exactly; every truncation and
 * every single-byte corruption of a record is refused or decoded into
 * something within bounds (never a crash); records of an older config are
 * translated by tag name through the saved model; named batches (ingest)
 * carry their names and need no model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/batch_codec.h"
#include "core/config.h"
#include "north/mqtt/mqtt.h"
#include "north/mqtt/telemetry.h"

#include "edge/alarms.h"

static struct fb_gateway *load(const char *yaml)
{
    char path[] = "/tmp/fb_bc_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    struct fb_gateway *gw = NULL;
    FILE *devnull = fopen("/dev/null", "w");
    struct fb_config_opts o = {.strict = false, .diag = devnull};
    assert_int_equal(fb_config_load(path, &o, &gw), 0);
    fclose(devnull);
    unlink(path);
    return gw;
}

static const char *cfg_a = "gateway: {id: a}\n"
                           "devices:\n"
                           "  - name: d1\n"
                           "    url: \"sim://x\"\n"
                           "    tags:\n"
                           "      - {name: t0, addr: \"const:1\"}\n"
                           "      - {name: t1, addr: \"const:2\"}\n"
                           "      - {name: t2, addr: \"const:3\"}\n"
                           "  - name: d2\n"
                           "    url: \"sim://y\"\n"
                           "    tags:\n"
                           "      - {name: u0, addr: \"const:1\"}\n";

/* the same names in another order, one tag gone, one new */
static const char *cfg_b = "gateway: {id: a}\n"
                           "devices:\n"
                           "  - name: d2\n"
                           "    url: \"sim://y\"\n"
                           "    tags:\n"
                           "      - {name: new, addr: \"const:1\"}\n"
                           "      - {name: u0, addr: \"const:1\"}\n"
                           "  - name: d1\n"
                           "    url: \"sim://x\"\n"
                           "    tags:\n"
                           "      - {name: t2, addr: \"const:3\"}\n"
                           "      - {name: t0, addr: \"const:1\"}\n";

static struct fb_batch *sample_batch(void)
{
    struct fb_batch *b = fb_batch_new(8, 2, 64);
    b->kind = FB_BATCH_DATA;
    b->device = 0;
    b->ts = 1795860000123000000LL;
    b->seq = 9007199254740993ULL;
    struct fb_value v;
    v.type = FB_T_FLOAT64;
    v.f = 21.5;
    struct fb_sample *s = fb_batch_add(b, 0, FB_Q_GOOD, b->ts - 5, &v);
    s->flags = FB_SF_STATS;
    s->stats = 0;
    b->stats[0] =
        (struct fb_stats){.mean = 1.25, .stddev = 0.5, .min = -1, .max = 3, .count = 7, .window_ns = 60000000000LL};
    b->nstats = 1;
    v.type = FB_T_INT64;
    v.i = INT64_MIN;
    fb_batch_add(b, 1, FB_Q_UNC_NOT_ACCURATE, b->ts, &v);
    v.type = FB_T_STRING;
    v.s.p = "héllo";
    v.s.len = (uint32_t)strlen("héllo");
    fb_batch_add(b, 2, FB_Q_GOOD, b->ts, &v);
    fb_batch_add(b, 1, FB_Q_BAD_COMM, b->ts, NULL);
    v.type = FB_T_UINT64;
    v.u = UINT64_MAX;
    fb_batch_add(b, 0, FB_Q_GOOD, b->ts, &v);
    v.type = FB_T_BOOL;
    v.b = true;
    fb_batch_add(b, 2, FB_Q_GOOD, b->ts, &v);
    v.type = FB_T_FLOAT32;
    v.f = (double)0.1f;
    fb_batch_add(b, 0, FB_Q_GOOD, b->ts, &v);
    return b;
}

/* A reload's translation in memory: by device and tag name, and carried
 * over a second reload (old → mid → now), with what vanished on the way. */
static void test_map_between_and_compose(void **st)
{
    (void)st;
    struct fb_gateway *a = load(cfg_a), *b = load(cfg_b);
    struct fb_model_map *m = fb_model_map_between(a, b);
    assert_non_null(m);
    assert_int_equal(m->ndevs, 2);
    assert_int_equal(m->dev[0], 1); /* d1 is second in b */
    assert_int_equal(m->dev[1], 0);
    assert_int_equal(m->ntags, 4);
    /* a: d1/t0 0, d1/t1 1, d1/t2 2, d2/u0 3; b: d2/new 0, d2/u0 1, d1/t2 2, d1/t0 3 */
    assert_int_equal(m->tag[0], 3);
    assert_int_equal(m->tag[1], UINT32_MAX); /* t1 is gone */
    assert_int_equal(m->tag[2], 2);
    assert_int_equal(m->tag[3], 1);
    /* a record of a's model decodes into b's ids through it */
    struct fb_batch *bt = fb_batch_new(4, 0, 0);
    bt->kind = FB_BATCH_DATA;
    bt->device = 0;
    struct fb_value v = {.type = FB_T_INT32, .i = 5};
    fb_batch_add(bt, 0, FB_Q_GOOD, 1, &v);
    fb_batch_add(bt, 1, FB_Q_GOOD, 1, &v);
    struct fb_buf enc;
    fb_buf_init(&enc);
    fb_batch_encode(&enc, bt, fb_model_fingerprint(a));
    struct fb_batch *d = NULL;
    assert_int_equal(fb_batch_decode(enc.p, enc.len, b, m, &d, NULL), 0);
    assert_int_equal(d->device, 1);
    assert_int_equal(d->n, 1);
    assert_int_equal(d->s[0].tag, 3);
    /* and back again: b → a composed with a → b is the identity for what survives */
    struct fb_model_map *back = fb_model_map_between(b, a);
    struct fb_model_map *round = fb_model_map_compose(m, back);
    assert_non_null(round);
    assert_int_equal(round->ndevs, 2);
    assert_int_equal(round->dev[0], 0);
    assert_int_equal(round->dev[1], 1);
    assert_int_equal(round->tag[0], 0);
    assert_int_equal(round->tag[1], UINT32_MAX);
    assert_int_equal(round->tag[2], 2);
    assert_int_equal(round->tag[3], 3);
    fb_model_map_free(m);
    fb_model_map_free(back);
    fb_model_map_free(round);
    fb_batch_free(bt);
    fb_batch_free(d);
    fb_buf_free(&enc);
    fb_gateway_free(a);
    fb_gateway_free(b);
}

static void test_round_trip(void **st)
{
    (void)st;
    struct fb_gateway *gw = load(cfg_a);
    struct fb_batch *b = sample_batch();
    struct fb_buf enc;
    fb_buf_init(&enc);
    fb_batch_encode(&enc, b, 0xABCD1234u);
    struct fb_batch *d = NULL;
    uint32_t fp = 0;
    assert_int_equal(fb_batch_decode(enc.p, enc.len, gw, NULL, &d, &fp), 0);
    assert_int_equal(fp, 0xABCD1234u);
    assert_int_equal(d->n, b->n);
    assert_true(d->seq == b->seq);
    assert_true(d->ts == b->ts);
    assert_int_equal(d->nstats, 1);
    assert_true(d->stats[0].mean == 1.25 && d->stats[0].count == 7 && d->stats[0].window_ns == 60000000000LL);
    for (uint32_t i = 0; i < b->n; i++) {
        assert_int_equal(d->s[i].tag, b->s[i].tag);
        assert_int_equal(d->s[i].quality, b->s[i].quality);
        assert_int_equal(d->s[i].flags, b->s[i].flags);
        assert_true(d->s[i].ts_src == b->s[i].ts_src);
        assert_int_equal(d->s[i].v.type, b->s[i].v.type);
        if (b->s[i].v.type) assert_true(fb_value_equal(&d->s[i].v, &b->s[i].v));
    }
    /* the decoded string lives in the decoded batch, not in the record */
    assert_true(d->s[2].v.s.p >= d->arena && d->s[2].v.s.p < d->arena + d->arena_cap);

    /* every truncation is refused */
    for (size_t cut = 0; cut < enc.len; cut++) assert_int_not_equal(fb_batch_decode(enc.p, cut, gw, NULL, &d, NULL), 0);
    /* every single-byte corruption is refused or stays within the model */
    for (size_t i = 0; i < enc.len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            enc.p[i] ^= (char)(1 << bit);
            if (fb_batch_decode(enc.p, enc.len, gw, NULL, &d, NULL) == 0) {
                assert_true(d->device < gw->ndevs);
                for (uint32_t k = 0; k < d->n; k++) assert_true(d->s[k].tag < gw->ntags);
            }
            enc.p[i] ^= (char)(1 << bit);
        }
    }
    /* a record naming a device or tag outside this config is refused */
    b->device = 5;
    fb_buf_clear(&enc);
    fb_batch_encode(&enc, b, 1);
    assert_int_equal(fb_batch_decode(enc.p, enc.len, gw, NULL, &d, NULL), FB_EPROTO);
    fb_buf_free(&enc);
    fb_batch_free(d);
    fb_batch_free(b);
    fb_gateway_free(gw);
}

static void test_other_config_by_name(void **st)
{
    (void)st;
    char dir[] = "/tmp/fb_model_XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct fb_gateway *a = load(cfg_a), *b = load(cfg_b);
    uint32_t fa = fb_model_fingerprint(a), fbp = fb_model_fingerprint(b);
    assert_true(fa != fbp);
    assert_int_equal(fb_model_save(a, dir, fa), 0);

    /* a batch of d1 under config a: t0, t1, t2 */
    struct fb_batch *x = fb_batch_new(4, 0, 0);
    x->device = 0;
    struct fb_value v = {.type = FB_T_INT16};
    for (uint32_t t = 0; t < 3; t++) {
        v.i = 100 + t;
        fb_batch_add(x, t, FB_Q_GOOD, 1, &v);
    }
    struct fb_buf enc;
    fb_buf_init(&enc);
    fb_batch_encode(&enc, x, fa);

    struct fb_model_map *m = fb_model_map_load(b, dir, fa);
    assert_non_null(m);
    struct fb_batch *d = NULL;
    assert_int_equal(fb_batch_decode(enc.p, enc.len, b, m, &d, NULL), 0);
    assert_int_equal(d->device, 1); /* d1 is the second device in config b */
    assert_int_equal(d->n, 2);      /* t1 is gone */
    assert_string_equal(b->tags[d->s[0].tag].name, "t0");
    assert_int_equal(d->s[0].v.i, 100);
    assert_string_equal(b->tags[d->s[1].tag].name, "t2");
    assert_int_equal(d->s[1].v.i, 102);
    assert_null(fb_model_map_load(b, dir, 0x12345678u)); /* unknown model */

    fb_model_map_free(m);
    fb_buf_free(&enc);
    fb_batch_free(d);
    fb_batch_free(x);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    fb_gateway_free(a);
    fb_gateway_free(b);
}

/* A named batch (a source such as ingest: device and tag names instead of
 * ids) round trips without any model, also into a gateway with no tags. */
static void test_named(void **st)
{
    (void)st;
    struct fb_gateway *gw = load("gateway: {id: ingest-1}\n");
    struct fb_batch *b = fb_batch_new(4, 1, 256);
    b->kind = FB_BATCH_NAMED;
    b->ts = 1795860000123000000LL;
    b->seq = 77;
    const char *nm[FB_BN__N] = {"edge-01", "munich", "assembly", "", "press 01"};
    for (int k = 0; k < FB_BN__N; k++) b->names[k] = fb_batch_name_add(b, nm[k], (uint32_t)strlen(nm[k]));
    struct fb_value v = {.type = FB_T_FLOAT64};
    v.f = 21.5;
    uint32_t t1 = fb_batch_name_add(b, "temperature", 11);
    struct fb_sample *s = fb_batch_add(b, t1, FB_Q_GOOD, b->ts - 1, &v);
    s->flags = FB_SF_STATS;
    b->stats[0] = (struct fb_stats){.mean = 2, .count = 3};
    b->nstats = 1;
    v.type = FB_T_STRING;
    v.s.p = "PX-200";
    v.s.len = 6;
    uint32_t t2 = fb_batch_name_add(b, "recipe", 6);
    fb_batch_add(b, t2, FB_Q_GOOD, b->ts, &v);
    fb_batch_add(b, t1, FB_Q_BAD_COMM, b->ts, NULL);
    struct fb_buf enc;
    fb_buf_init(&enc);
    fb_batch_encode(&enc, b, 0x1111u);
    struct fb_batch *d = NULL;
    assert_int_equal(fb_batch_decode(enc.p, enc.len, gw, NULL, &d, NULL), 0);
    assert_int_equal(d->kind, FB_BATCH_NAMED);
    for (int k = 0; k < FB_BN__N; k++) assert_string_equal(fb_batch_str(d, d->names[k]), nm[k]);
    assert_int_equal(d->n, 3);
    assert_string_equal(fb_batch_str(d, d->s[0].tag), "temperature");
    assert_true(d->s[0].v.f == 21.5 && d->s[0].flags == FB_SF_STATS && d->stats[0].count == 3);
    assert_string_equal(fb_batch_str(d, d->s[1].tag), "recipe");
    assert_int_equal(d->s[1].v.s.len, 6);
    assert_memory_equal(d->s[1].v.s.p, "PX-200", 6);
    assert_int_equal(d->s[2].quality, FB_Q_BAD_COMM);
    /* truncations refused; corruptions refused or every name still a string inside the arena */
    for (size_t cut = 0; cut < enc.len; cut++) assert_int_not_equal(fb_batch_decode(enc.p, cut, gw, NULL, &d, NULL), 0);
    for (size_t i = 0; i < enc.len; i++)
        for (int bit = 0; bit < 8; bit += 3) {
            enc.p[i] ^= (char)(1 << bit);
            if (fb_batch_decode(enc.p, enc.len, gw, NULL, &d, NULL) == 0 && fb_batch_named(d)) {
                for (int k = 0; k < FB_BN__N; k++) assert_true(d->names[k] < d->arena_len);
                for (uint32_t k = 0; k < d->n; k++) {
                    assert_true(d->s[k].tag < d->arena_len);
                    assert_non_null(memchr(d->arena + d->s[k].tag, 0, d->arena_len - d->s[k].tag));
                }
            }
            enc.p[i] ^= (char)(1 << bit);
        }
    /* a name that does not fit is refused, nothing half-written */
    struct fb_batch *small = fb_batch_new(1, 0, 8);
    assert_int_equal(fb_batch_name_add(small, "1234567", 7), 0);
    assert_int_equal(fb_batch_name_add(small, "", 0), UINT32_MAX);
    assert_int_equal(small->arena_len, 8);
    fb_batch_free(small);
    fb_buf_free(&enc);
    fb_batch_free(d);
    fb_batch_free(b);
    fb_gateway_free(gw);
}

/* Device-state records carry the whole reason (issue 12: "…run: chmod 600 /tmp"
 * was cut mid-word at 95 bytes), and records written with the old limit still decode. */
static void test_long_reason(void **st)
{
    (void)st;
    struct fb_gateway *gw = load(cfg_a);
    const char *why = "opc.tcp://10.0.1.20:4840: secret file /var/lib/fieldbridge/secrets/plant-7/opcua/op.pass "
                      "is accessible by group or others (mode 0644); "
                      "run: chmod 600 /var/lib/fieldbridge/secrets/plant-7/opcua/op.pass";
    assert_true(strlen(why) > 150 && strlen(why) < FB_REASON_LEN);
    struct fb_batch *b = fb_batch_new(0, 0, 0);
    b->kind = FB_BATCH_DEVSTATE;
    b->dev_state = FB_DEV_OFFLINE;
    fb_text_cut(b->reason, sizeof b->reason, why);
    struct fb_buf enc;
    fb_buf_init(&enc);
    fb_batch_encode(&enc, b, 7);
    struct fb_batch *d = NULL;
    assert_int_equal(fb_batch_decode(enc.p, enc.len, gw, NULL, &d, NULL), 0);
    assert_string_equal(d->reason, why);
    /* the longest reason the field holds (255 bytes) round-trips too */
    memset(b->reason, 'x', sizeof b->reason - 1);
    b->reason[sizeof b->reason - 1] = 0;
    fb_buf_clear(&enc);
    fb_batch_encode(&enc, b, 7);
    assert_int_equal(fb_batch_decode(enc.p, enc.len, gw, NULL, &d, NULL), 0);
    assert_int_equal(strlen(d->reason), 255);

    /* a record as the previous release wrote it (reason of 95 bytes), byte by byte */
    uint8_t old[36 + 95];
    memset(old, 0, sizeof old);
    old[0] = 1;                 /* version */
    old[1] = FB_BATCH_DEVSTATE; /* kind */
    old[2] = FB_DEV_OFFLINE;
    old[3] = 95;    /* reason_len */
    old[4] = 7;     /* fingerprint */
    old[24] = 0x40; /* ts (little-endian, bytes 20..27) */
    old[28] = 3;    /* seq (bytes 28..35) */
    memset(old + 36, 'r', 95);
    assert_int_equal(fb_batch_decode(old, sizeof old, gw, NULL, &d, NULL), 0);
    assert_int_equal(d->kind, FB_BATCH_DEVSTATE);
    assert_int_equal(d->dev_state, FB_DEV_OFFLINE);
    assert_int_equal(d->seq, 3);
    assert_int_equal(d->ts, 0x40ll << 32);
    assert_int_equal(strlen(d->reason), 95);
    fb_buf_free(&enc);
    fb_batch_free(d);
    fb_batch_free(b);
    fb_gateway_free(gw);
}

/* A reading refused by plausibility travels through the store with its value
 * and flag, and the JSON made from the stored record shows it as "raw". */
static void test_refused_reading_kept(void **st)
{
    (void)st;
    struct fb_gateway *gw = load(cfg_a);
    struct fb_batch *b = fb_batch_new(4, 0, 0);
    b->device = 0;
    b->ts = 1795860000123000000LL;
    struct fb_value v = {.type = FB_T_FLOAT64, .f = 123.456};
    fb_batch_add(b, 0, FB_Q_BAD_OUT_OF_RANGE, b->ts, &v)->flags = FB_SF_RAW;
    v = (struct fb_value){.type = FB_T_INT16, .i = 0};
    fb_batch_add(b, 1, FB_Q_BAD_COMM, b->ts, &v); /* bad from the device: no raw */
    struct fb_buf enc, json;
    fb_buf_init(&enc);
    fb_buf_init(&json);
    fb_batch_encode(&enc, b, 1);
    struct fb_batch *d = NULL;
    assert_int_equal(fb_batch_decode(enc.p, enc.len, gw, NULL, &d, NULL), 0);
    assert_int_equal(d->s[0].flags, FB_SF_RAW);
    assert_true(d->s[0].v.f == 123.456);
    fb_telemetry_json(&json, gw, d);
    const char *t = fb_buf_cstr(&json);
    assert_non_null(strstr(t, "\"t0\":{\"v\":null,\"raw\":123.456,\"q\":\"bad\",\"reason\":\"BadOutOfRange\"}"));
    assert_non_null(strstr(t, "\"t1\":{\"v\":null,\"q\":\"bad\",\"reason\":\"BadCommunicationError\"}"));
    fb_buf_free(&enc);
    fb_buf_free(&json);
    fb_batch_free(d);
    fb_batch_free(b);
    fb_gateway_free(gw);
}

/* Alarm events (issue 18) go through the store too: every field round trips,
 * truncations are refused, and an event of another config is translated by
 * the alarm's name (or dropped when the alarm is gone). */
static const char *cfg_alarm_a = "gateway: {id: a}\n"
                                 "devices:\n"
                                 "  - name: d1\n"
                                 "    url: \"sim://x\"\n"
                                 "    tags:\n"
                                 "      - {name: t0, addr: \"const:1\", alarms: {hi: 5, lo: 1}}\n"
                                 "      - {name: t1, addr: \"const:2\", alarms: {hihi: 9}}\n";
static const char *cfg_alarm_b = "gateway: {id: a}\n"
                                 "devices:\n"
                                 "  - name: d1\n"
                                 "    url: \"sim://x\"\n"
                                 "    tags:\n"
                                 "      - {name: t1, addr: \"const:2\", alarms: {hihi: 9, bad_quality: true}}\n"
                                 "      - {name: t0, addr: \"const:1\", alarms: {hi: 5}}\n";

static void test_alarm_event(void **st)
{
    (void)st;
    struct fb_gateway *a = load(cfg_alarm_a), *b = load(cfg_alarm_b);
    assert_int_equal(a->nalarms, 3);
    /* alarms are part of the fingerprint (ids in buffered events depend on them) */
    uint32_t with = fb_model_fingerprint(a);
    a->nalarms = 0;
    assert_true(fb_model_fingerprint(a) != with);
    a->nalarms = 3;
    assert_true(fb_model_fingerprint(a) != fb_model_fingerprint(b));

    struct fb_batch *x = fb_batch_new(0, 0, 0);
    x->kind = FB_BATCH_ALARM;
    x->device = 0;
    x->ts = 1795860000123000000LL;
    x->seq = 77;
    x->ev = (struct fb_alarm_ev){.alarm = 1, /* t0/lo */
                                 .event = FB_AE_ACKED,
                                 .flags = FB_AS_ACTIVE,
                                 .count = 0,
                                 .value = 0.75,
                                 .since = 1795860000000000000LL,
                                 .until = 0};
    snprintf(x->reason, sizeof x->reason, "mqtt:site/_/_/d1/command\nseen by the night shift");
    struct fb_buf enc;
    fb_buf_init(&enc);
    fb_batch_encode(&enc, x, 7);
    struct fb_batch *d = NULL;
    assert_int_equal(fb_batch_decode(enc.p, enc.len, a, NULL, &d, NULL), 0);
    assert_int_equal(d->kind, FB_BATCH_ALARM);
    assert_int_equal(d->ev.alarm, 1);
    assert_int_equal(d->ev.event, FB_AE_ACKED);
    assert_int_equal(d->ev.flags, FB_AS_ACTIVE);
    assert_true(d->ev.value == 0.75 && d->ev.since == x->ev.since && d->seq == 77);
    assert_string_equal(d->reason, x->reason);
    /* the event as the MQTT sink publishes it */
    struct fb_buf j;
    fb_buf_init(&j);
    fb_alarm_event_json(&j, a, d);
    assert_non_null(strstr(j.p, "\"type\":\"event\""));
    assert_non_null(strstr(j.p, "\"event\":\"acknowledged\",\"alarm\":\"t0/lo\",\"tag\":\"t0\",\"kind\":\"lo\""));
    assert_non_null(strstr(j.p, "\"state\":\"active_acked\""));
    assert_non_null(strstr(j.p, "\"value\":0.75,\"limit\":1"));
    assert_non_null(strstr(j.p, "\"by\":\"mqtt:site/_/_/d1/command\",\"comment\":\"seen by the night shift\""));
    fb_buf_free(&j);
    for (size_t cut = 0; cut < enc.len; cut++) assert_int_not_equal(fb_batch_decode(enc.p, cut, a, NULL, &d, NULL), 0);
    /* an alarm id outside the config is refused */
    x->ev.alarm = 3;
    fb_buf_clear(&enc);
    fb_batch_encode(&enc, x, 7);
    assert_int_equal(fb_batch_decode(enc.p, enc.len, a, NULL, &d, NULL), FB_EPROTO);

    /* another config: translated by name; t0/lo is gone there */
    char dir[] = "/tmp/fb_model_XXXXXX";
    assert_non_null(mkdtemp(dir));
    uint32_t fa = fb_model_fingerprint(a);
    assert_int_equal(fb_model_save(a, dir, fa), 0);
    struct fb_model_map *m = fb_model_map_load(b, dir, fa);
    assert_non_null(m);
    x->ev.alarm = 2; /* t1/hihi: the first alarm in config b */
    fb_buf_clear(&enc);
    fb_batch_encode(&enc, x, fa);
    assert_int_equal(fb_batch_decode(enc.p, enc.len, b, m, &d, NULL), 0);
    assert_string_equal(b->alarms[d->ev.alarm].name, "t1/hihi");
    x->ev.alarm = 1; /* t0/lo */
    fb_buf_clear(&enc);
    fb_batch_encode(&enc, x, fa);
    assert_int_equal(fb_batch_decode(enc.p, enc.len, b, m, &d, NULL), FB_ENOENT);
    /* a flood event names no alarm */
    x->ev.alarm = FB_ALARM_NONE;
    x->ev.event = FB_AE_FLOOD;
    x->ev.count = 42;
    fb_buf_clear(&enc);
    fb_batch_encode(&enc, x, fa);
    assert_int_equal(fb_batch_decode(enc.p, enc.len, b, m, &d, NULL), 0);
    assert_int_equal(d->ev.count, 42);
    fb_model_map_free(m);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    fb_buf_free(&enc);
    fb_batch_free(d);
    fb_batch_free(x);
    fb_gateway_free(a);
    fb_gateway_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),           cmocka_unit_test(test_map_between_and_compose),
        cmocka_unit_test(test_other_config_by_name), cmocka_unit_test(test_named),
        cmocka_unit_test(test_long_reason),          cmocka_unit_test(test_refused_reading_kept),
        cmocka_unit_test(test_alarm_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
