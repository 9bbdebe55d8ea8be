/* script.c — the Lua 5.4 sandbox of user scripts (script.h).
 *
 * Limits, and why each holds:
 *   - memory: the state's allocator (lua_Alloc) counts every byte and
 *     refuses to pass `memory:`; Lua turns the refusal into a "not enough
 *     memory" error after an emergency collection;
 *   - instructions and time: a count hook runs every 1000 VM instructions
 *     and compares the instructions of this call with `instructions:` and
 *     the monotonic clock with the call's deadline (`time:`).  Once a
 *     budget is spent the call is killed: the hook raises an error on every
 *     following instruction (it fires on each one from then on), and pcall,
 *     xpcall, coroutine.resume and coroutine.close are wrapped so that they
 *     pass that error on instead of catching it — a script cannot swallow
 *     its own kill.  Lua runs two kinds of code with hooks switched off:
 *     finalizers (__gc), which scripts therefore cannot define (setmetatable
 *     refuses a metatable with __gc), and an xpcall message handler called
 *     for an error raised by a hook, which is skipped once the call is
 *     killed.  New coroutines inherit the hook.
 *   - no file, process or module access: only the base (without dofile,
 *     loadfile, load), table, string, math, utf8 and coroutine libraries are
 *     opened; io and os only with `libraries: [io, os]`; package and debug
 *     never.  Chunks are loaded as text only (no precompiled bytecode).
 * What the hook cannot stop is a single long-running C call (a
 * pathological string.find pattern); docs/computed.md says so.
 *
 * The table `fb` is the script's window on the gateway: get, set, write,
 * alarm, event, log, now (docs/computed.md).  Tag names are resolved once
 * and cached in a Lua table, so a name costs one table look-up per call.
 */
#include "edge/script.h"

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/router.h"
#include "edge/alarms.h"

#define HOOK_EVERY 1000
#define MAX_WRITES_INFLIGHT 16

struct fb_lua {
    lua_State *L;
    struct fb_script *s;
    struct fb_script_env env;
    size_t mem, mem_max;
    uint64_t count;   /* instructions in this call, by HOOK_EVERY */
    int64_t deadline; /* monotonic end of this call's time budget */
    bool killed;      /* a budget is spent: every instruction raises */
    bool in_call;     /* the allocator limit applies (not while closing) */
    int kind;         /* FB_ERANGE (budget) or FB_ENOMEM once killed or out of memory */
    int ref_batch, ref_timer, ref_cache, ref_devs;
    struct fb_ratelimit rl_log;
    char why[300];
};

static struct fb_lua *X(lua_State *L) { return *(struct fb_lua **)lua_getextraspace(L); }

/* ---------------------------------------------------------------- limits */
static void *lalloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct fb_lua *x = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        x->mem -= old;
        return NULL;
    }
    if (nsize > old && x->mem - old + nsize > x->mem_max) return NULL; /* Lua: "not enough memory" */
    void *p = realloc(ptr, nsize);
    if (p) x->mem = x->mem - old + nsize;
    return p;
}

static void hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct fb_lua *x = X(L);
    x->count += HOOK_EVERY;
    if (!x->killed) {
        if (x->count > x->s->max_instructions) {
            x->killed = true;
            snprintf(x->why, sizeof x->why, "instruction budget exceeded (%llu instructions)",
                     (unsigned long long)x->s->max_instructions);
        } else if (fb_mono_ns() > x->deadline) {
            x->killed = true;
            snprintf(x->why, sizeof x->why, "time budget exceeded (%.0f ms)", x->s->max_time_ns / 1e6);
        }
        if (x->killed) lua_sethook(L, hook, LUA_MASKCOUNT, 1); /* from now on: every instruction */
    }
    if (x->killed) luaL_error(L, "%s", x->why);
}

/* pcall & co. pass a kill on instead of catching it. */
static int guard_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct fb_lua *x = X(L);
    if (x->killed) return luaL_error(L, "%s", x->why);
    return lua_gettop(L);
}

static int guard(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, guard_k);
    return guard_k(L, LUA_OK, 0);
}

/* Replace table[name] (the table on top of the stack) with guard(original). */
static void wrap(lua_State *L, const char *name)
{
    lua_getfield(L, -1, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_pushcclosure(L, guard, 1);
    lua_setfield(L, -2, name);
}

/* xpcall's message handler: not run for a kill (Lua would run it with hooks off). */
static int handler_guard(lua_State *L)
{
    if (X(L)->killed) return 1; /* the error object, as it is */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int xpcall_guard(lua_State *L)
{
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, handler_guard, 1);
    lua_replace(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, guard_k);
    return guard_k(L, LUA_OK, 0);
}

/* setmetatable without finalizers: Lua runs __gc with hooks off, out of the budget's reach. */
static int setmetatable_guard(lua_State *L)
{
    if (lua_istable(L, 2) && lua_getfield(L, 2, "__gc") != LUA_TNIL)
        return luaL_error(L, "setmetatable: __gc (finalizers) is not available to scripts");
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

static void warn_ignore(void *ud, const char *msg, int tocont)
{
    (void)ud;
    (void)msg;
    (void)tocont; /* errors in finalizers: the call's own error is what is reported */
}

/* ----------------------------------------------------------- fb library */
static void push_value(lua_State *L, const struct fb_value *v)
{
    switch (v->type) {
        case FB_T_BOOL: lua_pushboolean(L, v->b); break;
        case FB_T_INT8:
        case FB_T_INT16:
        case FB_T_INT32:
        case FB_T_INT64: lua_pushinteger(L, (lua_Integer)v->i); break;
        case FB_T_UINT8:
        case FB_T_UINT16:
        case FB_T_UINT32:
        case FB_T_UINT64:
            if (v->u <= (uint64_t)LUA_MAXINTEGER)
                lua_pushinteger(L, (lua_Integer)v->u);
            else
                lua_pushnumber(L, (lua_Number)v->u);
            break;
        case FB_T_FLOAT32:
        case FB_T_FLOAT64: lua_pushnumber(L, v->f); break;
        case FB_T_STRING: lua_pushlstring(L, v->s.p ? v->s.p : "", v->s.len); break;
        default: lua_pushnil(L); break;
    }
}

static const char *q_word(uint32_t q) { return fb_q_severity(q); }

/* The tag a script names: "tag" (its device) or "device/tag"; cached. */
static uint32_t resolve(lua_State *L, struct fb_lua *x, int arg)
{
    size_t len;
    const char *name = luaL_checklstring(L, arg, &len);
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->ref_cache);
    lua_pushvalue(L, arg);
    lua_rawget(L, -2);
    if (lua_isinteger(L, -1)) {
        uint32_t id = (uint32_t)lua_tointeger(L, -1);
        lua_pop(L, 2);
        return id;
    }
    lua_pop(L, 1);
    struct fb_gateway *gw = x->env.gw;
    const struct fb_device *d = x->s->device < gw->ndevs ? &gw->devs[x->s->device] : NULL;
    const char *slash = memchr(name, '/', len);
    const char *tn = name;
    if (slash) {
        char dn[256];
        snprintf(dn, sizeof dn, "%.*s", (int)(slash - name), name);
        d = fb_gw_device(gw, dn);
        tn = slash + 1;
    }
    const struct fb_tag *t = d ? fb_gw_tag(gw, d, tn) : NULL;
    if (!t) {
        lua_pop(L, 1);
        if (!slash && !d) return (uint32_t)luaL_error(L, "'%s': a gateway script names tags as 'device/tag'", name);
        return (uint32_t)luaL_error(L, "no tag '%s'", name);
    }
    lua_pushvalue(L, arg);
    lua_pushinteger(L, t->id);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return t->id;
}

/* fb.get(name) → value (nil when Bad or none), quality ("good", "uncertain", "bad"), time (s) */
static int l_get(lua_State *L)
{
    struct fb_lua *x = X(L);
    uint32_t id = resolve(L, x, 1);
    struct fb_value v;
    uint32_t q = FB_Q_BAD_WAITING;
    int64_t ts = 0;
    if (!x->env.get(x->env.edge, id, &v, &q, &ts)) {
        lua_pushnil(L);
        lua_pushstring(L, "bad");
        lua_pushnil(L);
        return 3;
    }
    if (fb_q_bad(q))
        lua_pushnil(L);
    else
        push_value(L, &v);
    lua_pushstring(L, q_word(q));
    lua_pushnumber(L, (lua_Number)ts / 1e9);
    return 3;
}

/* A Lua value as a value of type t (for outputs and writes). */
static bool to_value(lua_State *L, int idx, enum fb_type t, struct fb_value *v, char *why, size_t wlen)
{
    memset(v, 0, sizeof *v);
    int lt = lua_type(L, idx);
    if (t == FB_T_STRING) {
        if (lt != LUA_TSTRING && lt != LUA_TNUMBER) {
            snprintf(why, wlen, "expected a string, got %s", lua_typename(L, lt));
            return false;
        }
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        v->type = FB_T_STRING;
        v->s.p = s;
        v->s.len = (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len);
        return true;
    }
    if (t == FB_T_BOOL) {
        if (lt == LUA_TBOOLEAN) {
            v->type = FB_T_BOOL;
            v->b = lua_toboolean(L, idx);
            return true;
        }
        if (lt == LUA_TNUMBER) {
            v->type = FB_T_BOOL;
            v->b = lua_tonumber(L, idx) != 0;
            return true;
        }
        snprintf(why, wlen, "expected a boolean, got %s", lua_typename(L, lt));
        return false;
    }
    double d;
    if (lt == LUA_TBOOLEAN)
        d = lua_toboolean(L, idx);
    else if (lt == LUA_TNUMBER)
        d = lua_tonumber(L, idx);
    else {
        snprintf(why, wlen, "expected a number, got %s", lua_typename(L, lt));
        return false;
    }
    if (!isfinite(d)) {
        snprintf(why, wlen, "not a finite number");
        return false;
    }
    if (lua_isinteger(L, idx) && fb_type_is_int(t)) { /* exact, also beyond 2^53 */
        lua_Integer i = lua_tointeger(L, idx);
        bool fits = t == FB_T_INT64 || (t == FB_T_UINT64 ? i >= 0 : fb_value_from_double(t, (double)i, v) == 0);
        if (!fits) {
            snprintf(why, wlen, "%lld is out of range for %s", (long long)i, fb_type_name(t));
            return false;
        }
        v->type = (uint8_t)t;
        if (fb_type_is_signed(t))
            v->i = i;
        else
            v->u = (uint64_t)i;
        return true;
    }
    if (fb_value_from_double(t, d, v) < 0) {
        snprintf(why, wlen, "%g is out of range for %s", d, fb_type_name(t));
        return false;
    }
    return true;
}

/* fb.set(name, value [, quality]): one of the script's output tags.  nil
 * (or quality "bad") publishes it Bad. */
static int l_set(lua_State *L)
{
    struct fb_lua *x = X(L);
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    struct fb_gateway *gw = x->env.gw;
    uint32_t id = UINT32_MAX;
    for (uint32_t i = 0; i < x->s->nout; i++) {
        const struct fb_tag *t = &gw->tags[x->s->outputs[i]];
        const char *path = fb_tag_path(gw, t);
        if (!strcmp(t->name, name) || !strcmp(path, name)) {
            if (id != UINT32_MAX && strcmp(path, name))
                return luaL_error(L, "fb.set: '%s' is ambiguous: write 'device/tag'", name);
            id = t->id;
        }
    }
    if (id == UINT32_MAX)
        return luaL_error(L, "fb.set: '%s' is not an output of script %s (script: %s)", name, x->s->name, x->s->name);
    const struct fb_tag *t = &gw->tags[id];
    uint32_t q = FB_Q_GOOD;
    if (!lua_isnoneornil(L, 3)) {
        const char *qs = luaL_checkstring(L, 3);
        if (!strcmp(qs, "good"))
            q = FB_Q_GOOD;
        else if (!strcmp(qs, "uncertain"))
            q = FB_Q_UNCERTAIN;
        else if (!strcmp(qs, "bad"))
            q = FB_Q_BAD;
        else
            return luaL_error(L, "fb.set: quality '%s' (good, uncertain, bad)", qs);
    }
    struct fb_value v;
    char why[120];
    if (lua_isnoneornil(L, 2)) {
        memset(&v, 0, sizeof v);
        q = FB_Q_BAD;
    } else if (!to_value(L, 2, (enum fb_type)t->type, &v, why, sizeof why)) {
        return luaL_error(L, "fb.set('%s'): %s", name, why);
    }
    x->env.set(x->env.edge, id, &v, q);
    return 0;
}

static void write_reply(struct fb_cmd *cmd, const char *json, size_t len)
{
    struct fb_script *s = cmd->reply_ctx;
    atomic_fetch_sub(&s->writes_inflight, 1);
    (void)json;
    (void)len; /* the router logged the outcome with the source */
}

/* fb.write(name, value): a write request through the command router (its
 * validation and log); true when it was queued, else nil and why.  The
 * result arrives later (the router logs it; the new value shows in the data). */
static int l_write(lua_State *L)
{
    struct fb_lua *x = X(L);
    uint32_t id = resolve(L, x, 1);
    luaL_checkany(L, 2);
    struct fb_gateway *gw = x->env.gw;
    const struct fb_tag *t = &gw->tags[id];
    if (atomic_load(&x->s->writes_inflight) >= MAX_WRITES_INFLIGHT) {
        lua_pushnil(L);
        lua_pushfstring(L, "%d writes of this script are still in flight", MAX_WRITES_INFLIGHT);
        return 2;
    }
    json_t *val = NULL;
    int lt = lua_type(L, 2);
    if (lt == LUA_TBOOLEAN)
        val = json_boolean(lua_toboolean(L, 2));
    else if (lt == LUA_TNUMBER && lua_isinteger(L, 2))
        val = json_integer((json_int_t)lua_tointeger(L, 2));
    else if (lt == LUA_TNUMBER && isfinite(lua_tonumber(L, 2)))
        val = json_real(lua_tonumber(L, 2));
    else if (lt == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, 2, &len);
        val = json_stringn(s, len);
    }
    if (!val) return luaL_error(L, "fb.write: expected a boolean, a finite number or a string");
    static _Atomic uint64_t ids;
    char idb[64];
    snprintf(idb, sizeof idb, "lua-%llu", (unsigned long long)(atomic_fetch_add(&ids, 1) + 1));
    json_t *root = json_pack("{s:s, s:{s:o}}", "id", idb, "write", t->name, val);
    char *payload = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    struct fb_cmd *cmd = payload ? calloc(1, sizeof *cmd) : NULL;
    if (!cmd) {
        free(payload);
        return luaL_error(L, "fb.write: out of memory");
    }
    cmd->payload = payload;
    cmd->len = strlen(payload);
    cmd->device = t->device;
    cmd->qos = -1; /* not MQTT: the QoS rule does not apply */
    snprintf(cmd->source, sizeof cmd->source, "lua:%.80s", x->s->name);
    snprintf(cmd->via, sizeof cmd->via, "lua"); /* commands.allow / write_roles: "lua" */
    cmd->reply_ctx = x->s;
    cmd->reply = write_reply;
    atomic_fetch_add(&x->s->writes_inflight, 1);
    atomic_fetch_add(&x->s->writes, 1);
    fb_router_submit(gw, cmd);
    lua_pushboolean(L, 1);
    return 1;
}

/* fb.alarm(name, active [, value]): raise or clear one of the script's alarms. */
static int l_alarm(lua_State *L)
{
    struct fb_lua *x = X(L);
    const char *name = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    bool active = lua_toboolean(L, 2);
    double value = lua_isnumber(L, 3) ? lua_tonumber(L, 3) : NAN;
    struct fb_gateway *gw = x->env.gw;
    char full[300];
    snprintf(full, sizeof full, "%s/%s", x->s->name, name);
    uint32_t id = UINT32_MAX;
    for (uint32_t i = 0; i < x->s->nalarms; i++)
        if (!strcmp(gw->alarms[x->s->first_alarm + i].name, full)) id = x->s->first_alarm + i;
    if (id == UINT32_MAX)
        return luaL_error(L, "fb.alarm: script %s declares no alarm '%s' (alarms:)", x->s->name, name);
    char by[100];
    snprintf(by, sizeof by, "lua:%.80s", x->s->name);
    int rc = fb_alarm_set(gw, id, active, value, by);
    if (rc < 0) return luaL_error(L, "fb.alarm: %s", fb_strerror(rc));
    return 0;
}

/* fb.event(text [, device]): a one-off event on the alarm topic. */
static int l_event(lua_State *L)
{
    struct fb_lua *x = X(L);
    const char *text = luaL_checkstring(L, 1);
    struct fb_gateway *gw = x->env.gw;
    uint32_t dev = x->s->device;
    if (!lua_isnoneornil(L, 2)) {
        const struct fb_device *d = fb_gw_device(gw, luaL_checkstring(L, 2));
        if (!d) return luaL_error(L, "fb.event: no device '%s'", lua_tostring(L, 2));
        dev = d->idx;
    }
    if (dev >= gw->ndevs) return luaL_error(L, "fb.event: a gateway script names the device: fb.event(text, device)");
    char by[100];
    snprintf(by, sizeof by, "lua:%.80s", x->s->name);
    int rc = fb_alarm_message(gw, dev, text, by);
    lua_pushboolean(L, rc == 0);
    return 1;
}

static int log_at(lua_State *L, int level)
{
    struct fb_lua *x = X(L);
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, ' ');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    if (level <= FB_LOG_WARN || fb_ratelimit_ok(&x->rl_log, fb_mono_ns()))
        fb_log(level, x->s->device < x->env.gw->ndevs ? x->env.gw->devs[x->s->device].name : NULL, NULL, "lua:%s: %s",
               x->s->name, lua_tostring(L, -1));
    return 0;
}
static int l_log(lua_State *L) { return log_at(L, FB_LOG_INFO); }
static int l_warn(lua_State *L) { return log_at(L, FB_LOG_WARN); }

static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)fb_now_ns() / 1e9);
    return 1;
}

static const luaL_Reg fb_funcs[] = {{"get", l_get},     {"set", l_set},     {"write", l_write},
                                    {"alarm", l_alarm}, {"event", l_event}, {"log", l_log},
                                    {"warn", l_warn},   {"now", l_now},     {NULL, NULL}};

/* ---------------------------------------------------------------- state */
static int msgh(lua_State *L)
{
    const char *m = lua_tostring(L, 1);
    luaL_traceback(L, L, m ? m : "(error object is not a string)", 1);
    return 1;
}

static void open_libs(lua_State *L, uint32_t libs)
{
    static const luaL_Reg safe[] = {{LUA_GNAME, luaopen_base},
                                    {LUA_TABLIBNAME, luaopen_table},
                                    {LUA_STRLIBNAME, luaopen_string},
                                    {LUA_MATHLIBNAME, luaopen_math},
                                    {LUA_UTF8LIBNAME, luaopen_utf8},
                                    {LUA_COLIBNAME, luaopen_coroutine},
                                    {NULL, NULL}};
    for (const luaL_Reg *l = safe; l->func; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    if (libs & FB_LUA_IO) {
        luaL_requiref(L, LUA_IOLIBNAME, luaopen_io, 1);
        lua_pop(L, 1);
    }
    if (libs & FB_LUA_OS) {
        luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 1);
        lua_pop(L, 1);
    }
    lua_pushglobaltable(L);
    static const char *const unsafe[] = {"dofile", "loadfile", "load", "require", NULL};
    for (const char *const *u = unsafe; *u; u++) {
        lua_pushnil(L);
        lua_setfield(L, -2, *u);
    }
    wrap(L, "pcall");
    lua_getfield(L, -1, "xpcall");
    lua_pushcclosure(L, xpcall_guard, 1);
    lua_setfield(L, -2, "xpcall");
    lua_getfield(L, -1, "setmetatable");
    lua_pushcclosure(L, setmetatable_guard, 1);
    lua_setfield(L, -2, "setmetatable");
    lua_getfield(L, -1, LUA_COLIBNAME);
    wrap(L, "resume");
    wrap(L, "close");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_log); /* print → the gateway's log */
    lua_setfield(L, -2, "print");
    luaL_newlib(L, fb_funcs);
    lua_setfield(L, -2, "fb");
    lua_pop(L, 1);
}

/* Run fn (on top, with nargs arguments above it) under the budget. */
static int run(struct fb_lua *x, int nargs, const char **why)
{
    lua_State *L = x->L;
    x->count = 0;
    x->killed = false;
    x->deadline = fb_mono_ns() + x->s->max_time_ns;
    lua_sethook(L, hook, LUA_MASKCOUNT, HOOK_EVERY);
    int base = lua_gettop(L) - nargs; /* the function */
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    int st = lua_pcall(L, nargs, 0, base);
    atomic_fetch_add(&x->s->runs, 1);
    if (st == LUA_OK) {
        lua_sethook(L, NULL, 0, 0);
        lua_settop(L, base - 1);
        return 0;
    }
    const char *m = lua_tostring(L, -1);
    int rc = x->killed ? FB_ERANGE : st == LUA_ERRMEM ? FB_ENOMEM : FB_EINVAL;
    if (!x->killed) snprintf(x->why, sizeof x->why, "%s", m ? m : "error");
    if (st == LUA_ERRMEM)
        snprintf(x->why, sizeof x->why, "memory limit exceeded (%llu bytes)", (unsigned long long)x->mem_max);
    if (m && strstr(m, "not enough memory") && !x->killed) {
        rc = FB_ENOMEM;
        snprintf(x->why, sizeof x->why, "memory limit exceeded (%llu bytes): %s", (unsigned long long)x->mem_max, m);
    }
    lua_settop(L, base - 1);
    atomic_fetch_add(rc == FB_ERANGE ? &x->s->overruns : &x->s->errors, 1);
    /* what the failed call left behind goes now; its finalizers run with the
     * kill armed, so one that loops stops at its first instruction */
    x->killed = true;
    lua_sethook(L, hook, LUA_MASKCOUNT, 1);
    lua_gc(L, LUA_GCCOLLECT);
    lua_sethook(L, NULL, 0, 0);
    x->killed = false;
    *why = x->why;
    return rc;
}

/* Messages name the file as the user wrote it ("oee.lua:12: …"). */
static const char *chunk_name(const struct fb_script *s)
{
    if (!s->file) return s->name;
    const char *b = strrchr(s->file, '/');
    return b ? b + 1 : s->file;
}

static int open_all(lua_State *L)
{
    struct fb_lua *x = X(L);
    open_libs(L, x->s->libs);
    lua_newtable(L);
    x->ref_cache = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    x->ref_devs = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static int find_hooks(lua_State *L)
{
    struct fb_lua *x = X(L);
    if (lua_getglobal(L, "on_batch") == LUA_TFUNCTION)
        x->ref_batch = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_pop(L, 1);
    if (lua_getglobal(L, "on_timer") == LUA_TFUNCTION)
        x->ref_timer = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_pop(L, 1);
    return 0;
}

int fb_script_check(const char *src, size_t len, const char *name, struct fb_err *err)
{
    lua_State *L = luaL_newstate();
    if (!L) return fb_err_set(err, FB_ENOMEM, "cannot create a Lua state");
    char chunk[128];
    snprintf(chunk, sizeof chunk, "=%s", name);
    int rc = luaL_loadbufferx(L, src, len, chunk, "t");
    if (rc != LUA_OK) fb_err_set(err, FB_EINVAL, "%s", lua_tostring(L, -1));
    lua_close(L);
    return rc == LUA_OK ? 0 : FB_EINVAL;
}

struct fb_lua *fb_lua_new(struct fb_script *s, const struct fb_script_env *env, struct fb_err *err)
{
    struct fb_lua *x = calloc(1, sizeof *x);
    if (!x) {
        fb_err_set(err, FB_ENOMEM, "out of memory");
        return NULL;
    }
    x->s = s;
    x->env = *env;
    x->mem_max = s->max_memory;
    x->rl_log.interval_ns = 1000000000LL;
    x->ref_batch = x->ref_timer = x->ref_cache = x->ref_devs = LUA_NOREF;
    x->L = lua_newstate(lalloc, x);
    if (!x->L) {
        fb_err_set(err, FB_ENOMEM, "cannot create a Lua state within %llu bytes", (unsigned long long)x->mem_max);
        free(x);
        return NULL;
    }
    lua_State *L = x->L;
    *(struct fb_lua **)lua_getextraspace(L) = x;
    lua_setwarnf(L, warn_ignore, NULL);
    const char *why = NULL;
    /* the libraries and the registry tables allocate: protected, and under the memory limit */
    lua_pushcfunction(L, open_all);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        fb_err_set(err, FB_ENOMEM, "cannot open the Lua libraries within %llu bytes: %s",
                   (unsigned long long)x->mem_max, lua_tostring(L, -1));
        fb_lua_free(x);
        return NULL;
    }
    char chunk[128];
    snprintf(chunk, sizeof chunk, "=%s", chunk_name(s));
    if (luaL_loadbufferx(L, s->source ? s->source : "", s->source_len, chunk, "t") != LUA_OK) {
        fb_err_set(err, FB_EINVAL, "%s", lua_tostring(L, -1));
        fb_lua_free(x);
        return NULL;
    }
    int rc = run(x, 0, &why); /* the chunk's top level, under the budget */
    if (rc < 0) {
        fb_err_set(err, rc, "while loading: %s", why);
        fb_lua_free(x);
        return NULL;
    }
    lua_pushcfunction(L, find_hooks);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        fb_err_set(err, FB_ENOMEM, "%s", lua_tostring(L, -1));
        fb_lua_free(x);
        return NULL;
    }
    if (x->ref_batch == LUA_NOREF && x->ref_timer == LUA_NOREF) {
        fb_err_set(err, FB_EINVAL, "defines neither on_batch(dev) nor on_timer(now)");
        fb_lua_free(x);
        return NULL;
    }
    return x;
}

void fb_lua_free(struct fb_lua *x)
{
    if (!x) return;
    if (x->L) {
        x->mem_max = SIZE_MAX; /* closing only frees */
        x->killed = true;      /* finalizers stop at their first instruction */
        lua_sethook(x->L, hook, LUA_MASKCOUNT, 1);
        lua_close(x->L);
    }
    free(x);
}

void fb_lua_rebind(struct fb_lua *x, struct fb_script *s)
{
    x->s = s;
    x->mem_max = s->max_memory;
}

struct remap {
    const uint32_t *map;
    uint32_t n;
};

/* Protected: the new tables allocate (under the memory limit); the registry
 * slots are replaced only at the end, which allocates nothing. */
static int remap_devices(lua_State *L)
{
    struct fb_lua *x = X(L);
    const struct remap *r = lua_touserdata(L, 1);
    lua_newtable(L);                                /* 2: device tables by the new ids */
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->ref_devs); /* 3: by the old ones */
    lua_pushnil(L);
    while (lua_next(L, 3)) {
        lua_Integer k = lua_isinteger(L, -2) ? lua_tointeger(L, -2) : 0;
        if (k >= 1 && (uint64_t)k <= r->n && r->map[k - 1] != UINT32_MAX)
            lua_rawseti(L, 2, (lua_Integer)r->map[k - 1] + 1);
        else
            lua_pop(L, 1);
    }
    lua_newtable(L); /* 4: the name cache, empty */
    lua_pushvalue(L, 2);
    lua_rawseti(L, LUA_REGISTRYINDEX, x->ref_devs);
    lua_pushvalue(L, 4);
    lua_rawseti(L, LUA_REGISTRYINDEX, x->ref_cache);
    return 0;
}

int fb_lua_remap_devices(struct fb_lua *x, const uint32_t *devmap, uint32_t n, const char **why)
{
    struct remap r = {devmap, n};
    lua_pushcfunction(x->L, remap_devices);
    lua_pushlightuserdata(x->L, &r);
    if (lua_pcall(x->L, 1, 0, 0) != LUA_OK) {
        snprintf(x->why, sizeof x->why, "%s", lua_tostring(x->L, -1) ? lua_tostring(x->L, -1) : "error");
        lua_pop(x->L, 1);
        *why = x->why;
        return FB_ENOMEM;
    }
    return 0;
}

bool fb_lua_has_batch(const struct fb_lua *x) { return x && x->ref_batch != LUA_NOREF; }
bool fb_lua_has_timer(const struct fb_lua *x) { return x && x->ref_timer != LUA_NOREF; }
size_t fb_lua_memory(const struct fb_lua *x) { return x ? x->mem : 0; }

/* The device's table {device=, ts=, values={}, quality={}}, kept in the
 * registry and updated in place, so a batch allocates nothing once every
 * tag has been seen (and its name interned). */
static int call_batch(lua_State *L)
{
    struct fb_lua *x = X(L);
    const struct fb_batch *b = lua_touserdata(L, 1);
    struct fb_gateway *gw = x->env.gw;
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->ref_devs);
    if (lua_rawgeti(L, -1, (lua_Integer)b->device + 1) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 4);
        lua_pushstring(L, gw->devs[b->device].name);
        lua_setfield(L, -2, "device");
        lua_newtable(L);
        lua_setfield(L, -2, "values");
        lua_newtable(L);
        lua_setfield(L, -2, "quality");
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, (lua_Integer)b->device + 1);
    }
    int dt = lua_gettop(L);
    lua_pushnumber(L, (lua_Number)b->ts / 1e9);
    lua_setfield(L, dt, "ts");
    lua_getfield(L, dt, "values");
    lua_getfield(L, dt, "quality");
    int vt = dt + 1, qt = dt + 2;
    for (uint32_t i = 0; i < b->n; i++) {
        const struct fb_sample *sm = &b->s[i];
        if (sm->tag >= gw->ntags) continue;
        const char *name = gw->tags[sm->tag].name;
        if (fb_q_bad(sm->quality))
            lua_pushnil(L);
        else
            push_value(L, &sm->v);
        lua_setfield(L, vt, name);
        lua_pushstring(L, q_word(sm->quality));
        lua_setfield(L, qt, name);
    }
    lua_settop(L, dt);
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->ref_batch);
    lua_insert(L, dt);
    lua_call(L, 1, 0);
    return 0;
}

int fb_lua_batch(struct fb_lua *x, const struct fb_batch *b, const char **why)
{
    if (x->ref_batch == LUA_NOREF) return 0;
    lua_pushcfunction(x->L, call_batch);
    lua_pushlightuserdata(x->L, (void *)b);
    return run(x, 1, why);
}

int fb_lua_timer(struct fb_lua *x, int64_t wall, const char **why)
{
    if (x->ref_timer == LUA_NOREF) return 0;
    lua_rawgeti(x->L, LUA_REGISTRYINDEX, x->ref_timer);
    lua_pushnumber(x->L, (lua_Number)wall / 1e9);
    return run(x, 1, why);
}
