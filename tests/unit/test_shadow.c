/* test_shadow.c — the device shadow's document rules (src/fleet/shadow_doc.c):
 * the delta (numbers by value, nested objects, absent reported), the merge
 * (null deletes, objects merge, metadata timestamps only for what the update
 * names, an emptied object disappears), the optimistic lock, patch checks,
 * and the persisted form read back; and the outbox's bound and order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"
#include "fleet/hwatch.h"
#include "fleet/outbox.h"
#include "fleet/shadow_doc.h"

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &e);
    if (!j) fail_msg("bad test JSON %s: %s", s, e.text);
    return j;
}

static void assert_json(const json_t *got, const char *want)
{
    json_t *w = J(want);
    if (!json_equal((json_t *)got, w)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fail_msg("got %s, want %s", g, want);
    }
    json_decref(w);
}

static void test_delta(void **st)
{
    (void)st;
    json_t *d = J("{\"devices\":{\"plc\":{\"sp\":40,\"mode\":\"auto\",\"f\":1.5},\"b\":{\"x\":true}},\"k\":1}");
    json_t *r = J("{\"devices\":{\"plc\":{\"sp\":40.0,\"mode\":\"manual\",\"f\":1.5}},\"k\":1}");
    json_t *delta = fb_shadow_delta(d, r);
    /* 40 == 40.0; a device absent in reported is all delta */
    assert_json(delta, "{\"devices\":{\"plc\":{\"mode\":\"auto\"},\"b\":{\"x\":true}}}");
    json_decref(delta);
    delta = fb_shadow_delta(d, NULL);
    assert_true(json_equal(delta, d));
    json_decref(delta);
    delta = fb_shadow_delta(r, r); /* nothing desired differs: empty */
    assert_int_equal(json_object_size(delta), 0);
    json_decref(delta);
    /* a reported leaf where desired has an object, and the other way round */
    json_t *d2 = J("{\"a\":{\"b\":1},\"c\":2}"), *r2 = J("{\"a\":5,\"c\":{\"x\":1}}");
    delta = fb_shadow_delta(d2, r2);
    assert_json(delta, "{\"a\":{\"b\":1},\"c\":2}");
    json_decref(delta);
    assert_true(fb_shadow_value_equal(json_object_get(r, "k"), json_object_get(d, "k")));
    json_decref(d);
    json_decref(r);
    json_decref(d2);
    json_decref(r2);
}

static void test_merge(void **st)
{
    (void)st;
    struct fb_shadow_doc doc;
    fb_shadow_doc_init(&doc);
    json_t *p1 = J("{\"devices\":{\"plc\":{\"sp\":40,\"mode\":\"auto\"}}}");
    assert_true(fb_shadow_merge(doc.desired, doc.meta_desired, p1, 100));
    assert_json(doc.desired, "{\"devices\":{\"plc\":{\"sp\":40,\"mode\":\"auto\"}}}");
    assert_json(doc.meta_desired, "{\"devices\":{\"plc\":{\"sp\":{\"timestamp\":100},\"mode\":{\"timestamp\":100}}}}");
    /* the same again: no change, but the named leaves get the new time */
    assert_false(fb_shadow_merge(doc.desired, doc.meta_desired, p1, 101));
    /* a partial update keeps the rest; null deletes a leaf and its metadata */
    json_t *p2 = J("{\"devices\":{\"plc\":{\"sp\":41,\"mode\":null},\"b\":{\"x\":1}}}");
    assert_true(fb_shadow_merge(doc.desired, doc.meta_desired, p2, 200));
    assert_json(doc.desired, "{\"devices\":{\"plc\":{\"sp\":41},\"b\":{\"x\":1}}}");
    assert_json(doc.meta_desired,
                "{\"devices\":{\"plc\":{\"sp\":{\"timestamp\":200}},\"b\":{\"x\":{\"timestamp\":200}}}}");
    /* deleting the last leaf of an object removes the object */
    json_t *p3 = J("{\"devices\":{\"b\":{\"x\":null}}}");
    assert_true(fb_shadow_merge(doc.desired, doc.meta_desired, p3, 300));
    assert_json(doc.desired, "{\"devices\":{\"plc\":{\"sp\":41}}}");
    /* deleting what is not there changes nothing */
    assert_false(fb_shadow_merge(doc.desired, doc.meta_desired, p3, 301));
    /* a leaf replaced by an object, and a device deleted whole */
    json_t *p4 = J("{\"devices\":{\"plc\":null},\"x\":{\"y\":1}}");
    assert_true(fb_shadow_merge(doc.desired, doc.meta_desired, p4, 400));
    assert_json(doc.desired, "{\"x\":{\"y\":1}}");
    assert_json(doc.meta_desired, "{\"x\":{\"y\":{\"timestamp\":400}}}");
    json_decref(p1);
    json_decref(p2);
    json_decref(p3);
    json_decref(p4);
    fb_shadow_doc_clear(&doc);
}

static void test_version_and_checks(void **st)
{
    (void)st;
    struct fb_shadow_doc doc;
    fb_shadow_doc_init(&doc);
    doc.version = 7;
    json_t *u = J("{\"state\":{},\"version\":7}");
    assert_int_equal(fb_shadow_check_version(&doc, u), 0);
    json_decref(u);
    u = J("{\"state\":{},\"version\":6}");
    assert_int_equal(fb_shadow_check_version(&doc, u), -1);
    json_decref(u);
    u = J("{\"state\":{},\"version\":\"7\"}");
    assert_int_equal(fb_shadow_check_version(&doc, u), -1);
    json_decref(u);
    u = J("{\"state\":{}}"); /* no version: last writer wins */
    assert_int_equal(fb_shadow_check_version(&doc, u), 0);
    json_decref(u);
    char why[100];
    json_t *deep = J("{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":1}}}}}}}");
    assert_int_equal(fb_shadow_check_patch(deep, why, sizeof why), -1);
    assert_non_null(strstr(why, "deeper"));
    json_decref(deep);
    json_t *arr = J("[1]");
    assert_int_equal(fb_shadow_check_patch(arr, why, sizeof why), -1);
    json_decref(arr);
    json_t *ok = J("{\"devices\":{\"plc\":{\"sp\":1,\"list\":[1,2]}}}");
    assert_int_equal(fb_shadow_check_patch(ok, why, sizeof why), 0);
    json_decref(ok);
    fb_shadow_doc_clear(&doc);
}

static void test_persisted_form(void **st)
{
    (void)st;
    struct fb_shadow_doc a, b;
    fb_shadow_doc_init(&a);
    fb_shadow_doc_init(&b);
    json_t *p = J("{\"devices\":{\"plc\":{\"sp\":40}}}"), *r = J("{\"devices\":{\"plc\":{\"sp\":39}}}");
    fb_shadow_merge(a.desired, a.meta_desired, p, 10);
    fb_shadow_merge(a.reported, a.meta_reported, r, 11);
    a.version = 12;
    a.timestamp = 11;
    json_t *j = fb_shadow_doc_json(&a);
    assert_json(json_object_get(json_object_get(j, "state"), "delta"), "{\"devices\":{\"plc\":{\"sp\":40}}}");
    char *text = json_dumps(j, JSON_COMPACT);
    json_t *back = json_loads(text, 0, NULL);
    char why[200];
    assert_int_equal(fb_shadow_doc_from_json(&b, back, why, sizeof why), 0);
    assert_int_equal(b.version, 12);
    assert_int_equal(b.timestamp, 11);
    assert_true(json_equal(a.desired, b.desired));
    assert_true(json_equal(a.reported, b.reported));
    assert_true(json_equal(a.meta_desired, b.meta_desired));
    json_t *bad = J("{\"state\":{\"desired\":[]},\"version\":1}");
    assert_int_equal(fb_shadow_doc_from_json(&b, bad, why, sizeof why), -1);
    json_t *nover = J("{\"state\":{}}");
    assert_int_equal(fb_shadow_doc_from_json(&b, nover, why, sizeof why), -1);
    free(text);
    json_decref(j);
    json_decref(back);
    json_decref(bad);
    json_decref(nover);
    json_decref(p);
    json_decref(r);
    fb_shadow_doc_clear(&a);
    fb_shadow_doc_clear(&b);
}

struct seen {
    char buf[256];
    int n, refuse_at;
    uint64_t tokens[8];
    int ntokens;
};

static int take(void *arg, const char *suffix, const char *json, size_t len, uint64_t token)
{
    struct seen *s = arg;
    if (s->n == s->refuse_at) return 1;
    s->n++;
    if (token && s->ntokens < 8) s->tokens[s->ntokens++] = token;
    size_t used = strlen(s->buf);
    snprintf(s->buf + used, sizeof s->buf - used, "%s=%.*s;", suffix, (int)len, json);
    return 0;
}

static void test_outbox(void **st)
{
    (void)st;
    struct fb_outbox *o = fb_outbox_new(3);
    fb_outbox_put(o, "a", "1", 1);
    fb_outbox_put(o, "b", "2", 1);
    fb_outbox_put(o, "c", "3", 1);
    fb_outbox_put(o, "d", "4", 1); /* full: "a" goes */
    assert_int_equal(fb_outbox_dropped(o), 1);
    struct seen s = {.refuse_at = 1};
    assert_int_equal(fb_outbox_drain(o, take, &s), 1); /* the second is kept for later */
    assert_string_equal(s.buf, "b=2;");
    s.refuse_at = -1;
    assert_int_equal(fb_outbox_drain(o, take, &s), 2);
    assert_string_equal(s.buf, "b=2;c=3;d=4;");
    assert_int_equal(fb_outbox_drain(o, take, &s), 0);
    fb_outbox_put(NULL, "x", "1", 1); /* no outbox: nothing happens */
    fb_outbox_free(o);
}

struct acks {
    uint64_t got[8];
    int n;
};

static void on_ack(void *arg, uint64_t token)
{
    struct acks *a = arg;
    if (a->n < 8) a->got[a->n++] = token;
}

/* A message put with an acknowledgement callback is reported only when the
 * session settles it FB_SENT (the PUBACK); FB_RETRY (the connection or the
 * session ended first) sends it again with the next drain; FB_DROP forgets
 * it; a forgotten owner is not called. */
static void test_outbox_acked(void **st)
{
    (void)st;
    struct fb_outbox *o = fb_outbox_new(4);
    struct acks a = {0};
    uint64_t t1 = fb_outbox_put_acked(o, "ota/complete", "{\"r\":1}", 7, on_ack, &a);
    fb_outbox_put(o, "p", "x", 1);
    assert_true(t1 != 0);
    struct seen s = {.refuse_at = -1};
    assert_int_equal(fb_outbox_drain(o, take, &s), 2);
    assert_int_equal(s.ntokens, 1);
    assert_true(s.tokens[0] == t1);
    assert_int_equal(a.n, 0); /* handed to the session is not acknowledged */
    fb_outbox_settle(o, t1, FB_RETRY); /* the connection dropped before the PUBACK */
    assert_int_equal(a.n, 0);
    memset(&s, 0, sizeof s);
    s.refuse_at = -1;
    assert_int_equal(fb_outbox_drain(o, take, &s), 1); /* sent again */
    assert_string_equal(s.buf, "ota/complete={\"r\":1};");
    fb_outbox_settle(o, t1, FB_SENT);
    assert_int_equal(a.n, 1);
    assert_true(a.got[0] == t1);
    fb_outbox_settle(o, t1, FB_SENT); /* once only */
    assert_int_equal(a.n, 1);
    assert_int_equal(fb_outbox_drain(o, take, &s), 0);
    /* refused by the broker: forgotten, the owner is not told (it keeps its copy) */
    uint64_t t2 = fb_outbox_put_acked(o, "ota/complete", "2", 1, on_ack, &a);
    assert_int_equal(fb_outbox_drain(o, take, &s), 1);
    fb_outbox_settle(o, t2, FB_DROP);
    assert_int_equal(a.n, 1);
    assert_int_equal(fb_outbox_drain(o, take, &s), 0);
    /* an owner that went away is not called; its message still goes out */
    uint64_t t3 = fb_outbox_put_acked(o, "ota/complete", "3", 1, on_ack, &a);
    fb_outbox_forget(o, &a);
    assert_int_equal(fb_outbox_drain(o, take, &s), 1);
    fb_outbox_settle(o, t3, FB_SENT);
    assert_int_equal(a.n, 1);
    /* one the session could not take stays queued, not waiting for a PUBACK */
    uint64_t t4 = fb_outbox_put_acked(o, "ota/complete", "4", 1, on_ack, &a);
    memset(&s, 0, sizeof s);
    s.refuse_at = 0;
    assert_int_equal(fb_outbox_drain(o, take, &s), 0);
    fb_outbox_settle(o, t4, FB_SENT); /* not in flight: nothing */
    assert_int_equal(a.n, 1);
    s.refuse_at = -1;
    assert_int_equal(fb_outbox_drain(o, take, &s), 1);
    fb_outbox_free(o); /* with one still awaiting its acknowledgement */
}


/* The health check's window rule (fleet/hwatch.h): a watched device that
 * the change restarted may come back; once back it fails the check when
 * found down in 2 samples in a row or in 3 in all (flapping); a removed one
 * does not count; at the end every watched one must be up. */
static void test_health_watch(void **st)
{
    (void)st;
    struct fb_device devs[2];
    struct fb_sink_inst sinks[1];
    memset(devs, 0, sizeof devs);
    memset(sinks, 0, sizeof sinks);
    devs[0].name = "a";
    devs[1].name = "b";
    sinks[0].name = "mqtt";
    struct fb_gateway gw;
    memset(&gw, 0, sizeof gw);
    gw.devs = devs;
    gw.ndevs = 2;
    gw.sinks = sinks;
    gw.nsinks = 1;
    char why[300];
    /* a: restarted (connecting at first), then back, then down 2 samples in a row */
    struct fb_hwatch *w = fb_hwatch_new();
    assert_true(fb_hwatch_add(w, false, "a") && fb_hwatch_add(w, false, "b") && fb_hwatch_add(w, true, "mqtt"));
    atomic_store(&devs[0].state, FB_DEV_CONNECTING);
    atomic_store(&devs[1].state, FB_DEV_ONLINE);
    atomic_store(&sinks[0].m.connected, 1);
    assert_false(fb_hwatch_sample(w, &gw, why, sizeof why)); /* not back yet: no count */
    assert_false(fb_hwatch_sample(w, &gw, why, sizeof why));
    atomic_store(&devs[0].state, FB_DEV_ONLINE);
    assert_false(fb_hwatch_sample(w, &gw, why, sizeof why));
    atomic_store(&devs[0].state, FB_DEV_OFFLINE);
    assert_false(fb_hwatch_sample(w, &gw, why, sizeof why)); /* one sample: the grace */
    assert_true(fb_hwatch_sample(w, &gw, why, sizeof why));
    assert_string_equal(why, "device a was offline during the check (2 samples in a row, a second apart)");
    atomic_store(&devs[0].state, FB_DEV_ONLINE); /* back before the end: still failed */
    assert_true(fb_hwatch_final(w, &gw, why, sizeof why));
    assert_non_null(strstr(why, "device a was offline during the check"));
    fb_hwatch_free(w);

    /* a sink that flaps: down, up, down, up, down */
    w = fb_hwatch_new();
    assert_true(fb_hwatch_add(w, true, "mqtt"));
    for (int i = 0; i < 5; i++) {
        atomic_store(&sinks[0].m.connected, i % 2 == 0 ? 1 : 0);
        assert_false(fb_hwatch_sample(w, &gw, why, sizeof why));
    }
    atomic_store(&sinks[0].m.connected, 0);
    assert_true(fb_hwatch_sample(w, &gw, why, sizeof why));
    assert_string_equal(why, "sink mqtt was not connected in 3 samples during the check (it flaps)");
    fb_hwatch_free(w);

    /* healthy all along passes; one never back fails at the end; a removed one does not count */
    w = fb_hwatch_new();
    assert_true(fb_hwatch_add(w, false, "a") && fb_hwatch_add(w, false, "b") && fb_hwatch_add(w, false, "gone"));
    atomic_store(&devs[0].state, FB_DEV_ONLINE);
    atomic_store(&devs[1].state, FB_DEV_CONNECTING);
    for (int i = 0; i < 5; i++) assert_false(fb_hwatch_sample(w, &gw, why, sizeof why));
    assert_true(fb_hwatch_final(w, &gw, why, sizeof why));
    assert_string_equal(why, "device b is offline");
    fb_hwatch_free(w);
    w = fb_hwatch_new();
    assert_true(fb_hwatch_add(w, false, "a"));
    assert_false(fb_hwatch_sample(w, &gw, why, sizeof why));
    assert_false(fb_hwatch_final(w, &gw, why, sizeof why));
    fb_hwatch_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delta),          cmocka_unit_test(test_merge),  cmocka_unit_test(test_version_and_checks),
        cmocka_unit_test(test_persisted_form), cmocka_unit_test(test_outbox),
        cmocka_unit_test(test_outbox_acked), cmocka_unit_test(test_health_watch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
