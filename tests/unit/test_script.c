/* test_script.c — the Lua sandbox (src/edge/script.c): budgets that stop an
 * infinite loop (also one hidden inside pcall, xpcall, a coroutine or a
 * finalizer), the memory limit (a huge string, a growing table), errors,
 * the libraries that are missing (io, os, package, debug, load), and the fb
 * table against a small hand-built gateway.  After every failure the same
 * state runs the next call normally. */
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

#include "core/fb.h"
#include "edge/script.h"

static struct fb_tag tags[3];
static struct fb_device dev;
static struct fb_gateway gw;
static struct fb_script sc;
static uint32_t outputs[1] = {2};

/* what the fake edge holds (by the tag ids of the first model: a reload may add id_base) */
static double vals[3] = {21.5, 0, 0};
static uint32_t id_base;
static struct {
    uint32_t tag, q;
    double v;
    int n;
} last_set;

static bool get(void *edge, uint32_t tag, struct fb_value *v, uint32_t *q, int64_t *ts)
{
    (void)edge;
    if (tag < id_base || tag - id_base > 1) return false;
    tag -= id_base;
    v->type = FB_T_FLOAT64;
    v->f = vals[tag];
    *q = tag == 1 ? FB_Q_BAD_COMM : FB_Q_GOOD;
    *ts = 1000000000LL;
    return true;
}

static void set(void *edge, uint32_t tag, const struct fb_value *v, uint32_t q)
{
    (void)edge;
    last_set.tag = tag;
    last_set.q = q;
    last_set.v = v->type == FB_T_FLOAT64 ? v->f : v->type == FB_T_BOOL ? v->b : NAN;
    last_set.n++;
}

static int setup(void **state)
{
    (void)state;
    memset(tags, 0, sizeof tags);
    static const char *const names[] = {"temp", "flow", "out"};
    for (uint32_t i = 0; i < 3; i++) {
        tags[i].id = i;
        tags[i].type = FB_T_FLOAT64;
        tags[i].name = (char *)names[i];
        tags[i].src = i == 2 ? FB_TAG_SCRIPT : FB_TAG_READ;
    }
    memset(&dev, 0, sizeof dev);
    dev.name = (char *)"m1";
    dev.ntags = 3;
    dev.gw = &gw;
    memset(&gw, 0, sizeof gw);
    gw.devs = &dev;
    gw.ndevs = 1;
    gw.tags = tags;
    gw.ntags = 3;
    memset(&sc, 0, sizeof sc);
    sc.name = (char *)"t";
    sc.device = 0;
    sc.outputs = outputs;
    sc.nout = 1;
    sc.max_instructions = 200000;
    sc.max_time_ns = 2000000000LL;
    sc.max_memory = 1u << 20;
    memset(&last_set, 0, sizeof last_set);
    id_base = 0;
    return 0;
}

static struct fb_lua *load(const char *src, struct fb_err *err)
{
    sc.source = (char *)src;
    sc.source_len = strlen(src);
    struct fb_script_env env = {.gw = &gw, .edge = NULL, .get = get, .set = set};
    memset(err, 0, sizeof *err);
    return fb_lua_new(&sc, &env, err);
}

static struct fb_lua *must_load(const char *src)
{
    struct fb_err err;
    struct fb_lua *x = load(src, &err);
    if (!x) fail_msg("load failed: %s", err.msg);
    return x;
}

static int call(struct fb_lua *x, const char **why) { return fb_lua_timer(x, 1700000000000000000LL, why); }

static void test_budget_loop(void **state)
{
    (void)state;
    struct fb_lua *x = must_load("calls = 0\n"
                                 "function on_timer(now)\n"
                                 "  calls = calls + 1\n"
                                 "  if calls == 1 then while true do end end\n"
                                 "  fb.set('out', calls)\n"
                                 "end\n");
    const char *why = NULL;
    assert_int_equal(call(x, &why), FB_ERANGE);
    assert_non_null(strstr(why, "instruction budget exceeded"));
    assert_int_equal(atomic_load(&sc.overruns), 1);
    assert_int_equal(call(x, &why), 0); /* the next call runs normally */
    assert_int_equal(last_set.n, 1);
    assert_true(last_set.v == 2);
    fb_lua_free(x);
}

/* The kill cannot be caught by the script's own pcall, xpcall or coroutines. */
static void test_budget_not_catchable(void **state)
{
    (void)state;
    static const char *const srcs[] = {
        "function on_timer() while true do pcall(function() while true do end end) end end",
        "function on_timer() local ok = pcall(function() while true do end end); fb.set('out', 1) end",
        "function on_timer() xpcall(function() while true do end end, function(e) while true do end end); "
        "fb.set('out', 1) end",
        "function on_timer() local co = coroutine.create(function() while true do end end); "
        "while true do coroutine.resume(co) end end",
        "function on_timer() local f = coroutine.wrap(function() while true do coroutine.yield() end end); "
        "while true do pcall(f) end end",
        "function on_timer() local t = setmetatable({}, {__close = function() while true do end end}); "
        "do local c <close> = t; while true do end end end",
        "function on_timer() local t = setmetatable({}, {__index = function(t, k) while true do end end}); "
        "local v = t.x; fb.set('out', 1) end",
        "function on_timer() string.gsub('aaaa', 'a', function() while true do end end); fb.set('out', 1) end",
        "function on_timer() table.sort({3, 2, 1}, function(a, b) while true do end end); fb.set('out', 1) end",
    };
    for (size_t i = 0; i < sizeof srcs / sizeof srcs[0]; i++) {
        setup(NULL);
        sc.max_time_ns = 500000000LL; /* a hang is a failure in seconds, not a stuck test */
        struct fb_lua *x = must_load(srcs[i]);
        const char *why = NULL;
        int rc = call(x, &why);
        if (rc != FB_ERANGE) fail_msg("script %zu: rc %d (%s), expected the budget error", i, rc, why ? why : "");
        assert_int_equal(last_set.n, 0); /* nothing after the loop ran */
        fb_lua_free(x);
    }
    /* finalizers would run with hooks off: scripts cannot define them */
    setup(NULL);
    struct fb_lua *x = must_load("function on_timer() setmetatable({}, {__gc = function() while true do end end}) end");
    const char *why = NULL;
    assert_int_equal(call(x, &why), FB_EINVAL);
    assert_non_null(strstr(why, "__gc"));
    fb_lua_free(x);
    x = must_load(
        "function on_timer() fb.set('out', getmetatable(setmetatable({}, {__index = {a = 5}})).__index.a) end");
    assert_int_equal(call(x, &why), 0); /* other metatables work */
    assert_true(last_set.v == 5);
    fb_lua_free(x);
}

static void test_budget_time(void **state)
{
    (void)state;
    sc.max_instructions = 10000000000ULL; /* only the clock can stop it */
    sc.max_time_ns = 50000000LL;
    struct fb_lua *x = must_load("function on_timer() local i = 0 while true do i = i + 1 end end");
    const char *why = NULL;
    int64_t t0 = fb_mono_ns();
    assert_int_equal(call(x, &why), FB_ERANGE);
    int64_t took = fb_mono_ns() - t0;
    assert_non_null(strstr(why, "time budget exceeded"));
    assert_true(took >= 50000000LL && took < 2000000000LL);
    fb_lua_free(x);
}

static void test_memory(void **state)
{
    (void)state;
    struct fb_lua *x = must_load("n = 0\n"
                                 "function on_timer()\n"
                                 "  n = n + 1\n"
                                 "  if n == 1 then local s = string.rep('x', 1 << 30) end\n"
                                 "  if n == 2 then local t = {} for i = 1, 1e9 do t[i] = i end end\n"
                                 "  fb.set('out', n)\n"
                                 "end\n");
    const char *why = NULL;
    assert_int_equal(call(x, &why), FB_ENOMEM);
    assert_non_null(strstr(why, "memory limit exceeded"));
    assert_true(fb_lua_memory(x) <= sc.max_memory);
    int rc = call(x, &why); /* the table grows until the limit (or the instruction budget) stops it */
    assert_true(rc == FB_ENOMEM || rc == FB_ERANGE);
    assert_true(fb_lua_memory(x) <= sc.max_memory);
    assert_int_equal(call(x, &why), 0); /* and the state recovers: the table was garbage */
    assert_true(last_set.v == 3);
    fb_lua_free(x);
}

static void test_errors(void **state)
{
    (void)state;
    struct fb_lua *x = must_load("function on_timer() local t = nil; return t.field end");
    const char *why = NULL;
    assert_int_equal(call(x, &why), FB_EINVAL);
    assert_non_null(strstr(why, "attempt to index a nil value"));
    assert_non_null(strstr(why, "t:1:")); /* the chunk name and the line */
    assert_int_equal(atomic_load(&sc.errors), 1);
    fb_lua_free(x);
    x = must_load("function on_timer() error('custom trouble') end");
    assert_int_equal(call(x, &why), FB_EINVAL);
    assert_non_null(strstr(why, "custom trouble"));
    fb_lua_free(x);
    /* loading fails: a syntax error, an error at top level, an endless top level, no hooks */
    struct fb_err err;
    assert_null(load("function on_timer( end", &err));
    assert_non_null(strstr(err.msg, "t:1:"));
    assert_null(load("error('at load')", &err));
    assert_non_null(strstr(err.msg, "at load"));
    assert_null(load("while true do end", &err));
    assert_non_null(strstr(err.msg, "budget"));
    assert_null(load("x = 1", &err));
    assert_non_null(strstr(err.msg, "neither on_batch"));
    /* precompiled bytecode is refused (text only) */
    char bc[] = "\x1bLua\x54\x00";
    sc.source = bc;
    sc.source_len = sizeof bc - 1;
    struct fb_script_env env = {.gw = &gw, .get = get, .set = set};
    assert_null(fb_lua_new(&sc, &env, &err));
    assert_non_null(strstr(err.msg, "binary"));
    assert_int_equal(fb_script_check("function f( end", 15, "cfg", &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "cfg:1:"));
    assert_int_equal(fb_script_check("function on_batch(d) end", 24, "cfg", &err), 0);
}

/* No file, process, module or debug access; print goes to the log. */
static void test_sandbox(void **state)
{
    (void)state;
    struct fb_lua *x = must_load("function on_timer()\n"
                                 "  local missing = 0\n"
                                 "  for _, n in ipairs({'io', 'os', 'package', 'debug', 'require', 'dofile', "
                                 "'loadfile', 'load'}) do\n"
                                 "    if _G[n] == nil then missing = missing + 1 end\n"
                                 "  end\n"
                                 "  print('sandbox check', missing)\n"
                                 "  fb.set('out', missing)\n"
                                 "end\n");
    const char *why = NULL;
    assert_int_equal(call(x, &why), 0);
    assert_true(last_set.v == 8);
    fb_lua_free(x);
    /* with libraries: [os] the script gets os (and only that) */
    sc.libs = FB_LUA_OS;
    x = must_load("function on_timer() fb.set('out', (os and os.time and 1 or 0) + (io and 10 or 0)) end");
    assert_int_equal(call(x, &why), 0);
    assert_true(last_set.v == 1);
    fb_lua_free(x);
}

static void test_fb_api(void **state)
{
    (void)state;
    struct fb_lua *x = must_load("function on_timer(now)\n"
                                 "  local v, q, ts = fb.get('temp')\n"
                                 "  local f, fq = fb.get('m1/flow')\n"
                                 "  assert(q == 'good' and ts == 1 and f == nil and fq == 'bad')\n"
                                 "  assert(now > 1.6e9 and fb.now() > 1.6e9)\n"
                                 "  fb.set('out', v * 2)\n"
                                 "end\n"
                                 "function on_batch(d) fb.set('m1/out', d.values.temp, 'uncertain') end\n");
    const char *why = NULL;
    assert_true(fb_lua_has_timer(x));
    assert_true(fb_lua_has_batch(x));
    int rc = call(x, &why);
    if (rc) fail_msg("%s", why);
    assert_int_equal(last_set.tag, 2);
    assert_true(last_set.v == 43);
    assert_int_equal(last_set.q, FB_Q_GOOD);
    /* on_batch gets the device's table, updated in place */
    struct fb_batch *b = fb_batch_new(2, 0, 0);
    b->device = 0;
    b->ts = 5000000000LL;
    struct fb_value v = {.type = FB_T_FLOAT64, .f = 7.25};
    fb_batch_add(b, 0, FB_Q_GOOD, b->ts, &v);
    rc = fb_lua_batch(x, b, &why);
    if (rc) fail_msg("%s", why);
    assert_true(last_set.v == 7.25);
    assert_int_equal(last_set.q, FB_Q_UNCERTAIN);
    fb_batch_free(b);
    fb_lua_free(x);
    /* misuse is an error of the call, with a reason */
    static const char *const bad[][2] = {
        {"function on_timer() fb.set('temp', 1) end", "not an output"},
        {"function on_timer() fb.set('out', 'text') end", "expected a number"},
        {"function on_timer() fb.get('nope') end", "no tag 'nope'"},
        {"function on_timer() fb.get('m9/temp') end", "no tag 'm9/temp'"},
        {"function on_timer() fb.alarm('undeclared', true) end", "declares no alarm"},
        {"function on_timer() fb.set('out', 1, 'great') end", "quality 'great'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        x = must_load(bad[i][0]);
        rc = call(x, &why);
        if (rc != FB_EINVAL || !strstr(why, bad[i][1]))
            fail_msg("'%s': rc %d, '%s' (expected '%s')", bad[i][0], rc, why ? why : "", bad[i][1]);
        fb_lua_free(x);
    }
}

/* A reload that keeps the script while a device is added before its own:
 * the device's ids and the tags' ids move.  The state goes on (globals), the
 * table on_batch gets for the device is the same one under its new id, and
 * names resolve to the new ids (the cache of the old ones is gone). */
static void test_remap_devices(void **state)
{
    (void)state;
    struct fb_lua *x = must_load("n = 0\n"
                                 "function on_batch(d)\n"
                                 "  n = n + 1\n"
                                 "  first = first or d\n"
                                 "  assert(first == d, 'a new table for the device')\n"
                                 "  fb.set('out', n)\n"
                                 "end\n"
                                 "function on_timer() fb.set('out', fb.get('temp')) end\n");
    const char *why = NULL;
    struct fb_batch *b = fb_batch_new(2, 0, 0);
    b->device = 0;
    b->ts = 5000000000LL;
    struct fb_value v = {.type = FB_T_FLOAT64, .f = 7.25};
    fb_batch_add(b, 0, FB_Q_GOOD, b->ts, &v);
    if (fb_lua_batch(x, b, &why)) fail_msg("%s", why);
    assert_true(last_set.v == 1 && last_set.tag == 2);
    if (call(x, &why)) fail_msg("%s", why);
    assert_true(last_set.v == 21.5);
    /* the new model: m0 (one tag) before m1, whose tags are now 1..3 */
    static struct fb_tag tags2[4];
    static struct fb_device devs2[2];
    static uint32_t outputs2[1] = {3};
    memset(tags2, 0, sizeof tags2);
    tags2[0].name = (char *)"x";
    tags2[0].type = FB_T_FLOAT64;
    for (uint32_t i = 0; i < 3; i++) {
        tags2[i + 1] = tags[i];
        tags2[i + 1].id = i + 1;
        tags2[i + 1].device = 1;
    }
    memset(devs2, 0, sizeof devs2);
    devs2[0].name = (char *)"m0";
    devs2[0].ntags = 1;
    devs2[1] = dev;
    devs2[1].idx = 1;
    devs2[1].first_tag = 1;
    gw.devs = devs2;
    gw.ndevs = 2;
    gw.tags = tags2;
    gw.ntags = 4;
    static struct fb_script sc2;
    sc2 = sc;
    sc2.device = 1;
    sc2.outputs = outputs2;
    atomic_store(&sc2.runs, 0);
    uint64_t runs_before = atomic_load(&sc.runs);
    id_base = 1;
    const uint32_t devmap[1] = {1};
    fb_lua_rebind(x, &sc2);
    if (fb_lua_remap_devices(x, devmap, 1, &why)) fail_msg("%s", why);
    b->device = 1;
    b->s[0].tag = 1;
    if (fb_lua_batch(x, b, &why)) fail_msg("%s", why);
    assert_true(last_set.v == 2); /* n went on */
    assert_int_equal(last_set.tag, 3);
    if (call(x, &why)) fail_msg("%s", why); /* 'temp' is tag 1 now, not the cached 0 */
    assert_true(last_set.v == 21.5);
    assert_int_equal(last_set.tag, 3);
    assert_int_equal(atomic_load(&sc2.runs), 2); /* counted in the script's new entry */
    assert_int_equal(atomic_load(&sc.runs), runs_before);
    fb_batch_free(b);
    fb_lua_free(x);
}

int main(void)
{
    alarm(120); /* a budget that fails to stop a script is a hang: make it a failure */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_budget_loop, setup), cmocka_unit_test_setup(test_budget_not_catchable, setup),
        cmocka_unit_test_setup(test_budget_time, setup), cmocka_unit_test_setup(test_memory, setup),
        cmocka_unit_test_setup(test_errors, setup),      cmocka_unit_test_setup(test_sandbox, setup),
        cmocka_unit_test_setup(test_fb_api, setup),      cmocka_unit_test_setup(test_remap_devices, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
