/* control.c — the `control:` service: PID loops (loop.c, pid.c), interlocks
 * (conditions in the expression language of edge/expr.c), watchdogs and safe states.  docs/control.md is the user's view;
 * this is how it is built.
 *
 * Where the loop gets its inputs.  The pipeline keeps a latest-value slot
 * (proc/proc.h, struct fb_latest) for exactly the tags the loops and
 * interlocks read, written for every sample after scaling and plausibility
 * and before the deadband, and read here without a lock (a sequence lock).
 * The slots are asked for when this service starts — before the connection
 * threads, which is what the service's quiesce hook buys (model.h) — so the
 * pipeline's cost for every other tag is one NULL test per sample, and the
 * control thread never waits for a connection thread or a queue.
 *
 * Where the outputs go.  Through the router's validation (fb_cmd_convert_num:
 * range, unscaling, the wire type — the checks a command gets) and then the
 * same per-connection write queue as commands, asynchronously
 * (fb_conn_write_async): the control thread never blocks on a device.  One
 * reusable request per output; while it is still in flight the next cycle
 * writes the newer value instead (latest wins, no queue builds up).  An
 * output is written when its wire value changes, on entering a safe state,
 * after a failed write, and at least every `refresh`.
 *
 * Timing.  One control thread wakes at absolute monotonic times
 * (clock_nanosleep TIMER_ABSTIME) every `period` — by default the greatest
 * common divisor of the loops' cycles — and runs the loops that are due.  It
 * measures how late each wake-up was (jitter, a histogram with 1 µs
 * resolution below 1 ms), how long each cycle's work took, and counts
 * overruns (cycles skipped because the work ran past the next wake-up: they
 * are skipped, never run in a burst).  With `priority:` it asks for
 * SCHED_FIFO, with `cpu:` for one CPU; when refused (no CAP_SYS_NICE, a
 * container) it says so once and runs as a normal thread.
 *
 * Watchdogs.  A second thread checks that the control thread's cycle counter
 * moves: if it stands still for `watchdog` (a stalled control thread — a bug,
 * a blocked system call, a CPU starved by a runaway real-time task), it
 * writes every loop's safe value with its own requests and reports the trip.
 * The systemd watchdog is the gateway's (core/sdwatch.c: WATCHDOG=1 only
 * while every watched thread comes around its loop, core/live.h): with
 * `systemd: true` the control thread is one of the watched threads, its
 * limit `watchdog` (or the gateway's stall_timeout), so a stalled control
 * thread stops the pings as well and systemd restarts the gateway when the
 * stall outlasts WatchdogSec=.  When the control thread comes back, its
 * loops are in manual at the safe value.
 * Test hook: with $FB_TEST_CONTROL_STALL set to a path, the control thread
 * stops cycling while that file exists (the watchdog thread looks for it).
 *
 * Shutdown (the quiesce hook, before the connection threads stop): the
 * control thread stops, then every loop's safe value is written and waited
 * for (bounded by commands.timeout), and the result is logged.
 */
#include "control/control.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "control/ctl_dev.h"
#include "control/loop.h"
#include "core/buf.h"
#include "core/cfg.h"
#include "core/config_dev.h"
#include "core/live.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/router.h"
#include "core/sdnotify.h"
#include "core/thread.h"
#include "edge/expr.h"
#include "proc/proc.h"

#define MIN_PERIOD_NS 500000LL      /* 0.5 ms */
#define MAX_PERIOD_NS 10000000000LL /* 10 s */
#define SAFE_WAIT_DEFAULT_NS 3000000000LL

/* ================================================================ config */
struct ctl_out_cfg {
    char *name;
    struct fb_cfg_mark m;
    uint32_t tag;
    double value;
};

#define CTL_ILK_MAX_TAGS 64 /* distinct tags one interlock condition reads */

struct ctl_ilk_cfg {
    char *name, *when;
    struct fb_cfg_mark mark, when_m;
    struct fb_expr *expr;            /* compiled at bind, when the tags exist */
    uint32_t tags[CTL_ILK_MAX_TAGS]; /* the expression's variable slots: tag ids */
    uint32_t ntags;
    char **loop_names;
    struct fb_cfg_mark *loop_m;
    uint32_t *loops, nloops;
    struct ctl_out_cfg *outs;
    uint32_t nouts;
    bool resume_manual;
};

struct ctl_cfg {
    struct fb_cfg_mark mark;
    int64_t period_ns; /* 0 = the loops' cycles' gcd (bind) */
    bool period_given;
    int priority; /* SCHED_FIFO 1..99, 0 = off */
    int cpu;      /* -1 = not pinned */
    int64_t north_loss_ns, watchdog_ns;
    bool watchdog_given;
    struct fb_cfg_mark watchdog_m;
    bool systemd;
    struct fb_loop_cfg *loops;
    uint32_t nloops;
    struct ctl_ilk_cfg *ilks;
    uint32_t nilks;
    struct fb_dev_spec *specs; /* the loops' devices (those with a name) */
    uint32_t nspecs;
};

static const char *const k_control[] = {"period",  "priority",   "cpu",   "north_loss", "watchdog",
                                        "systemd", "interlocks", "loops", NULL};
static const char *const k_loop[] = {
    "name",    "pv",       "out",  "sp",          "sp_tag",      "sp_min",      "sp_max", "sp_rate",  "sp_track",
    "kp",      "ti",       "td",   "d_filter",    "p_on",        "anti_windup", "tt",     "action",   "out_min",
    "out_max", "out_rate", "safe", "initial_out", "mode",        "cycle",       "stale",  "fallback", "on_north_loss",
    "refresh", "publish",  "area", "line",        "write_roles", NULL};
static const char *const k_interlock[] = {"name", "when", "loops", "outputs", "resume", NULL};
static const struct fb_config_keys k_nested[] = {{"loop", k_loop}, {"interlock", k_interlock}, {NULL, NULL}};

static const char *const e_mode[] = {"manual", "auto", NULL};
static const char *const e_act[] = {"hold", "safe", "manual", "none", NULL};
static const char *const e_p_on[] = {"error", "measurement", NULL};
static const char *const e_aw[] = {"clamp", "back_calculation", "none", NULL};
static const char *const e_action[] = {"reverse", "direct", NULL};

static void str_key(struct fb_cfg *r, const struct fb_cfg_map *m, const char *key, const char *what, char **out,
                    struct fb_cfg_mark *mark)
{
    struct fb_cfg_node *n = fb_cfg_get(m, key);
    if (!n) return;
    char w[96];
    snprintf(w, sizeof w, "%s.%s", what, key);
    *out = fb_cfg_str(r, NULL, n, w);
    if (mark) *mark = fb_cfg_mark(n);
}

static bool num_key(struct fb_cfg *r, const struct fb_cfg_map *m, const char *key, const char *what, double *out)
{
    struct fb_cfg_node *n = fb_cfg_get(m, key);
    if (!n) return false;
    char w[96];
    snprintf(w, sizeof w, "%s.%s", what, key);
    return fb_cfg_num(r, NULL, n, w, out);
}

static bool dur_key(struct fb_cfg *r, const struct fb_cfg_map *m, const char *key, const char *what, bool positive,
                    int64_t *out)
{
    struct fb_cfg_node *n = fb_cfg_get(m, key);
    if (!n) return false;
    char w[96];
    snprintf(w, sizeof w, "%s.%s", what, key);
    return fb_cfg_dur(r, NULL, n, w, positive, out);
}

static void enum_key(struct fb_cfg *r, const struct fb_cfg_map *m, const char *key, const char *what,
                     const char *const *names, int *out)
{
    struct fb_cfg_node *n = fb_cfg_get(m, key);
    if (!n) return;
    char w[96];
    snprintf(w, sizeof w, "%s.%s", what, key);
    fb_cfg_enum(r, n, w, names, out);
}

static void tag_spec(struct fb_tag_spec *t, int field, uint8_t type, uint8_t access)
{
    t->name = fb_loop_field_names[field];
    t->type = type;
    t->access = access;
    if (type == FB_T_STRING) t->str_len = 16;
}

static void load_loop(struct fb_cfg *r, struct fb_cfg_node *n, uint32_t i, struct fb_loop_cfg *L)
{
    char what[48];
    snprintf(what, sizeof what, "control.loops[%u]", i);
    L->index = i;
    L->mark = fb_cfg_mark(n);
    struct fb_cfg_map m = {0};
    if (!fb_cfg_map_load(r, n, what, &m)) {
        fb_cfg_map_free(&m);
        return;
    }
    fb_cfg_map_check(r, &m, k_loop, "loop", false);
    str_key(r, &m, "name", what, &L->name, NULL);
    if (!L->name) {
        if (!fb_cfg_get(&m, "name")) fb_cfg_error(r, n, "%s: 'name' is required (it names the loop's device)", what);
    } else if (!fb_cfg_name_ok(L->name)) {
        fb_cfg_error(r, fb_cfg_get(&m, "name"), "%s: name '%s' may only contain letters, digits, '_', '.' and '-'",
                     what, L->name);
    }
    if (L->name) snprintf(what, sizeof what, "loop %s", L->name);
    str_key(r, &m, "pv", what, &L->pv_name, &L->pv_m);
    str_key(r, &m, "out", what, &L->out_name, &L->out_m);
    str_key(r, &m, "sp_tag", what, &L->sp_name, &L->sp_m);
    if (!fb_cfg_get(&m, "pv")) fb_cfg_error(r, n, "%s: 'pv' (the measurement, device/tag) is required", what);
    if (!fb_cfg_get(&m, "out")) fb_cfg_error(r, n, "%s: 'out' (the actuator, device/tag) is required", what);
    if (!num_key(r, &m, "sp", what, &L->sp0) && !fb_cfg_get(&m, "sp"))
        fb_cfg_error(r, n, "%s: 'sp' (the set point at start) is required", what);
    L->has_sp_min = num_key(r, &m, "sp_min", what, &L->sp_min);
    L->has_sp_max = num_key(r, &m, "sp_max", what, &L->sp_max);
    if (num_key(r, &m, "sp_rate", what, &L->sp_rate) && L->sp_rate < 0)
        fb_cfg_error(r, fb_cfg_get(&m, "sp_rate"), "%s.sp_rate: must not be negative (units per second)", what);
    struct fb_cfg_node *x;
    if ((x = fb_cfg_get(&m, "sp_track"))) fb_cfg_bool(r, NULL, x, "sp_track", &L->sp_track);

    struct fb_pid_cfg *p = &L->pid;
    p->n = 10;
    p->b = 1;
    p->aw = FB_AW_CLAMP;
    p->action = FB_PID_REVERSE;
    p->lo = 0;
    p->hi = 100;
    if (!num_key(r, &m, "kp", what, &p->kp) && !fb_cfg_get(&m, "kp"))
        fb_cfg_error(r, n, "%s: 'kp' (the proportional gain) is required", what);
    if (p->kp < 0) fb_cfg_error(r, fb_cfg_get(&m, "kp"), "%s.kp: must not be negative (use action: direct)", what);
    int64_t ns;
    if (dur_key(r, &m, "ti", what, false, &ns)) p->ti = (double)ns / 1e9;
    if (dur_key(r, &m, "td", what, false, &ns)) p->td = (double)ns / 1e9;
    if (dur_key(r, &m, "tt", what, false, &ns)) p->tt = (double)ns / 1e9;
    if (num_key(r, &m, "d_filter", what, &p->n) && p->n <= 0)
        fb_cfg_error(r, fb_cfg_get(&m, "d_filter"), "%s.d_filter: N must be greater than 0 (Tf = td/N)", what);
    int e = 0;
    enum_key(r, &m, "p_on", what, e_p_on, &e);
    p->b = e == 1 ? 0 : 1;
    e = 0; /* clamp: see docs/control.md on back-calculation */
    enum_key(r, &m, "anti_windup", what, e_aw, &e);
    p->aw = e == 0 ? FB_AW_CLAMP : e == 1 ? FB_AW_BACKCALC : FB_AW_NONE;
    e = 0;
    enum_key(r, &m, "action", what, e_action, &e);
    p->action = e == 1 ? FB_PID_DIRECT : FB_PID_REVERSE;
    num_key(r, &m, "out_min", what, &p->lo);
    num_key(r, &m, "out_max", what, &p->hi);
    if (!(p->hi > p->lo)) fb_cfg_error(r, n, "%s: out_max (%g) must be greater than out_min (%g)", what, p->hi, p->lo);
    if (num_key(r, &m, "out_rate", what, &p->rate) && p->rate < 0)
        fb_cfg_error(r, fb_cfg_get(&m, "out_rate"), "%s.out_rate: must not be negative (units per second)", what);
    if (!num_key(r, &m, "safe", what, &L->safe) && !fb_cfg_get(&m, "safe"))
        fb_cfg_error(r, n, "%s: 'safe' (the output's safe value) is required", what);
    else if (L->safe < p->lo || L->safe > p->hi)
        fb_cfg_error(r, fb_cfg_get(&m, "safe"), "%s.safe: %g is outside [out_min, out_max] = [%g, %g]", what, L->safe,
                     p->lo, p->hi);
    L->out0 = L->safe;
    if (num_key(r, &m, "initial_out", what, &L->out0) && (L->out0 < p->lo || L->out0 > p->hi))
        fb_cfg_error(r, fb_cfg_get(&m, "initial_out"), "%s.initial_out: outside [out_min, out_max]", what);
    L->mode0 = FB_MODE_AUTO;
    enum_key(r, &m, "mode", what, e_mode, &L->mode0);
    L->cycle_ns = 100000000LL;
    dur_key(r, &m, "cycle", what, true, &L->cycle_ns);
    if (L->cycle_ns < MIN_PERIOD_NS || L->cycle_ns > MAX_PERIOD_NS)
        fb_cfg_error(r, fb_cfg_get(&m, "cycle"), "%s.cycle: must lie between 0.5ms and 10s", what);
    long long st = 3;
    if ((x = fb_cfg_get(&m, "stale"))) fb_cfg_int(r, NULL, x, "stale (cycles)", 1, 1000000, &st);
    L->stale_cycles = (uint32_t)st;
    L->fallback = FB_ACT_HOLD;
    enum_key(r, &m, "fallback", what, e_act, &L->fallback);
    if (L->fallback == FB_ACT_NONE)
        fb_cfg_error(r, fb_cfg_get(&m, "fallback"), "%s.fallback: a stale measurement needs hold, safe or manual",
                     what);
    L->on_north_loss = FB_ACT_SAFE;
    enum_key(r, &m, "on_north_loss", what, e_act, &L->on_north_loss);
    L->refresh_ns = 1000000000LL;
    dur_key(r, &m, "refresh", what, false, &L->refresh_ns);
    L->publish_ns = 1000000000LL;
    dur_key(r, &m, "publish", what, true, &L->publish_ns);
    str_key(r, &m, "area", what, &L->area, NULL);
    str_key(r, &m, "line", what, &L->line, NULL);
    if (L->area && !fb_cfg_level_ok(L->area)) fb_cfg_error(r, fb_cfg_get(&m, "area"), "%s.area: bad level", what);
    if (L->line && !fb_cfg_level_ok(L->line)) fb_cfg_error(r, fb_cfg_get(&m, "line"), "%s.line: bad level", what);
    if (L->has_sp_min && L->has_sp_max && L->sp_min > L->sp_max)
        fb_cfg_error(r, n, "%s: sp_min (%g) is above sp_max (%g)", what, L->sp_min, L->sp_max);
    /* who may command the loop (set point, mode, output, tuning): checked as
     * a sender list when the loop's device is built (config_dev.c) */
    const struct fb_cfg_node *roles = fb_cfg_get(&m, "write_roles");
    fb_cfg_map_free(&m);

    /* its device: the loop's state as tags */
    tag_spec(&L->tags[FB_LF_PV], FB_LF_PV, FB_T_FLOAT64, FB_ACC_READ);
    tag_spec(&L->tags[FB_LF_SP], FB_LF_SP, FB_T_FLOAT64, FB_ACC_RW);
    tag_spec(&L->tags[FB_LF_SP_TARGET], FB_LF_SP_TARGET, FB_T_FLOAT64, FB_ACC_READ);
    tag_spec(&L->tags[FB_LF_OUT], FB_LF_OUT, FB_T_FLOAT64, FB_ACC_RW);
    tag_spec(&L->tags[FB_LF_MODE], FB_LF_MODE, FB_T_STRING, FB_ACC_RW);
    tag_spec(&L->tags[FB_LF_STATE], FB_LF_STATE, FB_T_STRING, FB_ACC_READ);
    tag_spec(&L->tags[FB_LF_SAT], FB_LF_SAT, FB_T_STRING, FB_ACC_READ);
    tag_spec(&L->tags[FB_LF_KP], FB_LF_KP, FB_T_FLOAT64, FB_ACC_RW);
    tag_spec(&L->tags[FB_LF_TI], FB_LF_TI, FB_T_FLOAT64, FB_ACC_RW);
    tag_spec(&L->tags[FB_LF_TD], FB_LF_TD, FB_T_FLOAT64, FB_ACC_RW);
    L->tags[FB_LF_TI].unit = L->tags[FB_LF_TD].unit = "s";
    struct fb_tag_spec *t = &L->tags[FB_LF_OUT];
    t->has_min = t->has_max = true;
    t->min = p->lo;
    t->max = p->hi;
    for (int f = FB_LF_KP; f <= FB_LF_TD; f++) {
        L->tags[f].has_min = true;
        L->tags[f].min = 0;
    }
    t = &L->tags[FB_LF_SP];
    t->has_min = L->has_sp_min;
    t->min = L->sp_min;
    t->has_max = L->has_sp_max;
    t->max = L->sp_max;
    for (int f = 0; f < FB_LF__COUNT; f++)
        if (L->tags[f].access & FB_ACC_WRITE) L->tags[f].write_roles = roles;
    snprintf(L->url, sizeof L->url, "control://%s", L->name ? L->name : "?");
}

static void load_ilk(struct fb_cfg *r, struct fb_cfg_node *n, uint32_t i, struct ctl_ilk_cfg *I)
{
    char what[64];
    snprintf(what, sizeof what, "control.interlocks[%u]", i);
    I->mark = fb_cfg_mark(n);
    struct fb_cfg_map m = {0};
    if (!fb_cfg_map_load(r, n, what, &m)) return;
    fb_cfg_map_check(r, &m, k_interlock, "interlock", false);
    str_key(r, &m, "name", what, &I->name, NULL);
    if (!I->name && !fb_cfg_get(&m, "name")) fb_cfg_error(r, n, "%s: 'name' is required", what);
    if (I->name && !fb_cfg_name_ok(I->name))
        fb_cfg_error(r, fb_cfg_get(&m, "name"), "%s: name '%s' may only contain letters, digits, '_', '.' and '-'",
                     what, I->name);
    if (I->name) snprintf(what, sizeof what, "interlock %s", I->name);
    str_key(r, &m, "when", what, &I->when, &I->when_m);
    if (!fb_cfg_get(&m, "when"))
        fb_cfg_error(r, n, "%s: 'when' (the condition, e.g. oven/temp > 90) is required", what);
    struct fb_cfg_node *ln = fb_cfg_get(&m, "loops");
    if (ln && fb_cfg_kind(ln) != FB_CFG_LIST) {
        fb_cfg_error(r, ln, "%s.loops: expected a list of loop names", what);
    } else if (ln) {
        size_t k = fb_cfg_list_len(ln);
        I->loop_names = calloc(k ? k : 1, sizeof *I->loop_names);
        I->loop_m = calloc(k ? k : 1, sizeof *I->loop_m);
        I->loops = calloc(k ? k : 1, sizeof *I->loops);
        for (size_t j = 0; j < k && I->loop_names && I->loop_m && I->loops; j++) {
            struct fb_cfg_node *it = fb_cfg_list_at(r, ln, j);
            I->loop_names[I->nloops] = fb_cfg_str(r, NULL, it, "interlock loop");
            I->loop_m[I->nloops] = fb_cfg_mark(it);
            if (I->loop_names[I->nloops]) I->nloops++;
        }
    }
    struct fb_cfg_node *on = fb_cfg_get(&m, "outputs");
    struct fb_cfg_map om = {0};
    if (on && fb_cfg_map_load(r, on, "outputs", &om)) {
        I->outs = calloc(om.n ? (size_t)om.n : 1, sizeof *I->outs);
        for (int j = 0; j < om.n && I->outs; j++) {
            struct ctl_out_cfg *o = &I->outs[I->nouts];
            o->m = fb_cfg_mark(om.kv[j].k);
            if (!fb_cfg_num(r, NULL, om.kv[j].v, "interlock output value", &o->value)) continue;
            o->name = strdup(om.kv[j].key);
            if (o->name) I->nouts++;
        }
    }
    fb_cfg_map_free(&om);
    if (!I->nloops && !I->nouts) fb_cfg_error(r, n, "%s: names no loops and no outputs: it would do nothing", what);
    int e = 1;
    enum_key(r, &m, "resume", what, (const char *const[]){"auto", "manual", NULL}, &e);
    I->resume_manual = e == 1;
    fb_cfg_map_free(&m);
}

static void ctl_cfg_free(void *p)
{
    struct ctl_cfg *c = p;
    if (!c) return;
    for (uint32_t i = 0; i < c->nloops; i++) {
        struct fb_loop_cfg *L = &c->loops[i];
        free(L->name);
        free(L->area);
        free(L->line);
        free(L->pv_name);
        free(L->out_name);
        free(L->sp_name);
    }
    for (uint32_t i = 0; i < c->nilks; i++) {
        struct ctl_ilk_cfg *I = &c->ilks[i];
        free(I->name);
        free(I->when);
        fb_expr_free(I->expr);
        for (uint32_t k = 0; k < I->nloops; k++) free(I->loop_names[k]);
        free(I->loop_names);
        free(I->loop_m);
        free(I->loops);
        for (uint32_t k = 0; k < I->nouts; k++) free(I->outs[k].name);
        free(I->outs);
    }
    free(c->loops);
    free(c->ilks);
    free(c->specs);
    free(c);
}

static void *ctl_cfg_load(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw)
{
    (void)gw;
    struct ctl_cfg *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (m->n) c->mark = fb_cfg_mark(m->kv[0].k);
    c->cpu = -1;
    c->watchdog_ns = 1000000000LL;
    c->systemd = true;
    struct fb_cfg_node *n;
    if ((n = fb_cfg_get(m, "period"))) {
        c->period_given = fb_cfg_dur(r, NULL, n, "control.period", true, &c->period_ns);
        if (c->period_given && (c->period_ns < MIN_PERIOD_NS || c->period_ns > MAX_PERIOD_NS))
            fb_cfg_error(r, n, "control.period: must lie between 0.5ms and 10s");
    }
    long long v;
    if ((n = fb_cfg_get(m, "priority")) && fb_cfg_int(r, NULL, n, "control.priority", 0, 99, &v)) c->priority = (int)v;
    if ((n = fb_cfg_get(m, "cpu")) && fb_cfg_int(r, NULL, n, "control.cpu", 0, 1023, &v)) c->cpu = (int)v;
    if ((n = fb_cfg_get(m, "north_loss"))) fb_cfg_dur(r, NULL, n, "control.north_loss", false, &c->north_loss_ns);
    if ((n = fb_cfg_get(m, "watchdog"))) {
        c->watchdog_given = fb_cfg_dur(r, NULL, n, "control.watchdog", false, &c->watchdog_ns);
        c->watchdog_m = fb_cfg_mark(n);
    }
    if ((n = fb_cfg_get(m, "systemd"))) fb_cfg_bool(r, NULL, n, "control.systemd", &c->systemd);
    if ((n = fb_cfg_get(m, "loops"))) {
        if (fb_cfg_kind(n) != FB_CFG_LIST) {
            fb_cfg_error(r, n, "control.loops must be a list (- name: …), got %s", fb_cfg_kind_name(n));
        } else {
            size_t k = fb_cfg_list_len(n);
            c->loops = calloc(k ? k : 1, sizeof *c->loops);
            c->specs = calloc(k ? k : 1, sizeof *c->specs);
            if (!c->loops || !c->specs) {
                ctl_cfg_free(c);
                return NULL;
            }
            for (size_t i = 0; i < k; i++) load_loop(r, fb_cfg_list_at(r, n, i), (uint32_t)i, &c->loops[c->nloops++]);
        }
    }
    if ((n = fb_cfg_get(m, "interlocks"))) {
        if (fb_cfg_kind(n) != FB_CFG_LIST) {
            fb_cfg_error(r, n, "control.interlocks must be a list (- name: …), got %s", fb_cfg_kind_name(n));
        } else {
            size_t k = fb_cfg_list_len(n);
            c->ilks = calloc(k ? k : 1, sizeof *c->ilks);
            if (!c->ilks) {
                ctl_cfg_free(c);
                return NULL;
            }
            for (size_t i = 0; i < k; i++) load_ilk(r, fb_cfg_list_at(r, n, i), (uint32_t)i, &c->ilks[c->nilks++]);
        }
    }
    for (uint32_t i = 0; i < c->nloops; i++) {
        struct fb_loop_cfg *L = &c->loops[i];
        for (uint32_t k = 0; k < i; k++)
            if (L->name && c->loops[k].name && !strcmp(L->name, c->loops[k].name))
                fb_cfg_error_at(r, L->mark, "duplicate loop name '%s' (first at line %d)", L->name,
                                c->loops[k].mark.line);
        if (!L->name || !L->tags[FB_LF_PV].name) continue; /* reported: no device for it */
        struct fb_dev_spec *s = &c->specs[c->nspecs++];
        s->name = L->name;
        s->url = L->url;
        s->area = L->area;
        s->line = L->line;
        s->drv = &fb_driver_control;
        s->drv_dev = L;
        s->poll_ns = L->publish_ns;
        s->mark = L->mark;
        s->tags = L->tags;
        s->ntags = FB_LF__COUNT;
    }
    for (uint32_t i = 0; i < c->nilks; i++)
        for (uint32_t k = 0; k < i; k++)
            if (c->ilks[i].name && c->ilks[k].name && !strcmp(c->ilks[i].name, c->ilks[k].name))
                fb_cfg_error_at(r, c->ilks[i].mark, "duplicate interlock name '%s'", c->ilks[i].name);
    return c;
}

static size_t ctl_devices(void *cfg, const struct fb_dev_spec **specs)
{
    struct ctl_cfg *c = cfg;
    *specs = c->specs;
    return c->nspecs;
}

/* "device/tag" → a tag id; an error at `m` when there is no such tag. */
/* Give a loop tag a unit: its settings copied (they may be shared with other
 * tags) with the unit (a string in the arena, shared).  False when out of memory. */
static bool set_unit(struct fb_gateway *gw, struct fb_tag *t, const char *unit)
{
    struct fb_tag_proc *p = fb_arena_alloc(&gw->arena, sizeof *p, _Alignof(struct fb_tag_proc));
    if (!p) return false;
    *p = *fb_tproc(t);
    p->unit = unit;
    t->proc = p;
    return true;
}

static struct fb_tag *find_tag(struct fb_cfg *r, struct fb_gateway *gw, const char *ref, struct fb_cfg_mark m,
                               const char *what)
{
    const char *slash = ref ? strchr(ref, '/') : NULL;
    if (!slash) {
        fb_cfg_error_at(r, m, "%s: expected device/tag, got '%s'", what, ref ? ref : "");
        return NULL;
    }
    char dev[256];
    snprintf(dev, sizeof dev, "%.*s", (int)(slash - ref), ref);
    struct fb_device *d = fb_gw_device(gw, dev);
    if (!d) {
        fb_cfg_error_at(r, m, "%s: no device '%s'", what, dev);
        return NULL;
    }
    struct fb_tag *t = fb_gw_tag(gw, d, slash + 1);
    if (!t) fb_cfg_error_at(r, m, "%s: device '%s' has no tag '%s'", what, dev, slash + 1);
    return t;
}

/* The names in an interlock's condition: 'device/tag' in single quotes (the
 * expression language of computed tags, docs/computed.md; an interlock has
 * no device of its own, so a bare name cannot be resolved). */
struct ilk_resolve {
    struct fb_gateway *gw;
    struct ctl_ilk_cfg *I;
};

static int ilk_resolve(void *ctx, const char *name, size_t len, bool quoted, struct fb_err *err)
{
    struct ilk_resolve *x = ctx;
    if (!quoted)
        return fb_err_set(err, FB_EINVAL,
                          "'%.*s': name tags as 'device/tag' in single quotes (an interlock has no device of its own; "
                          "outside quotes / is a division)",
                          (int)len, name);
    const char *slash = memchr(name, '/', len);
    if (!slash) return fb_err_set(err, FB_EINVAL, "'%.*s': expected 'device/tag'", (int)len, name);
    char dev[256];
    snprintf(dev, sizeof dev, "%.*s", (int)(slash - name), name);
    struct fb_device *d = fb_gw_device(x->gw, dev);
    if (!d) return fb_err_set(err, FB_EINVAL, "no device '%s'", dev);
    char tag[256];
    snprintf(tag, sizeof tag, "%.*s", (int)(name + len - slash - 1), slash + 1);
    struct fb_tag *t = fb_gw_tag(x->gw, d, tag);
    if (!t) return fb_err_set(err, FB_EINVAL, "device '%s' has no tag '%s'", dev, tag);
    if (t->type == FB_T_STRING)
        return fb_err_set(err, FB_EINVAL, "%s is a string tag: conditions take numbers", fb_tag_path(x->gw, t));
    for (uint32_t k = 0; k < x->I->ntags; k++)
        if (x->I->tags[k] == t->id) return (int)k;
    if (x->I->ntags == CTL_ILK_MAX_TAGS)
        return fb_err_set(err, FB_EINVAL, "more than %d tags in one condition", CTL_ILK_MAX_TAGS);
    x->I->tags[x->I->ntags] = t->id;
    return (int)x->I->ntags++;
}

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static void ctl_bind(struct fb_cfg *r, void *cfg, struct fb_gateway *gw)
{
    struct ctl_cfg *c = cfg;
    char what[96];
    int64_t g = 0;
    for (uint32_t i = 0; i < c->nloops; i++) {
        struct fb_loop_cfg *L = &c->loops[i];
        if (!L->name) continue;
        g = gcd64(g, L->cycle_ns);
        snprintf(what, sizeof what, "loop %s.pv", L->name);
        struct fb_tag *pv = find_tag(r, gw, L->pv_name, L->pv_m, what);
        if (pv) {
            L->pv = pv->id;
            if (fb_tag_out_type(pv) == FB_T_STRING)
                fb_cfg_error_at(r, L->pv_m, "%s: %s is a string tag; a measurement is a number", what,
                                fb_tag_path(gw, pv));
            const struct fb_device *pd = &gw->devs[pv->device];
            int64_t poll = pv->group < pd->ngroups ? pd->groups[pv->group].period_ns : 0;
            if (poll > (int64_t)L->stale_cycles * L->cycle_ns)
                fb_cfg_note(r, NULL,
                            "loop %s: %s is polled every %.3gs but counts as stale after %u cycles (%.3gs): the loop "
                            "will sit in its fallback; poll it faster or raise `stale`",
                            L->name, fb_tag_path(gw, pv), poll / 1e9, L->stale_cycles,
                            L->stale_cycles * L->cycle_ns / 1e9);
        }
        snprintf(what, sizeof what, "loop %s.out", L->name);
        struct fb_tag *out = find_tag(r, gw, L->out_name, L->out_m, what);
        if (out) {
            L->out = out->id;
            if (!(out->access & FB_ACC_WRITE))
                fb_cfg_error_at(r, L->out_m, "%s: %s is read-only (give the tag access: rw or w)", what,
                                fb_tag_path(gw, out));
            else if (out->type == FB_T_STRING)
                fb_cfg_error_at(r, L->out_m, "%s: %s is a string tag; an output is a number", what,
                                fb_tag_path(gw, out));
            for (uint32_t k = 0; k < i; k++)
                if (c->loops[k].name && c->loops[k].out == out->id && c->loops[k].out_name)
                    fb_cfg_error_at(r, L->out_m, "%s: %s is already the output of loop %s", what, fb_tag_path(gw, out),
                                    c->loops[k].name);
            if (fb_tproc(out)->has_min && fb_tproc(out)->min > L->safe)
                fb_cfg_error_at(r, L->out_m, "%s: the safe value %g is below the range of %s", what, L->safe,
                                fb_tag_path(gw, out));
            if (fb_tproc(out)->has_max && fb_tproc(out)->max < L->safe)
                fb_cfg_error_at(r, L->out_m, "%s: the safe value %g is above the range of %s", what, L->safe,
                                fb_tag_path(gw, out));
        }
        if (L->sp_name) {
            snprintf(what, sizeof what, "loop %s.sp_tag", L->name);
            struct fb_tag *sp = find_tag(r, gw, L->sp_name, L->sp_m, what);
            if (sp) {
                L->sp_tag = sp->id;
                L->has_sp_tag = true;
            }
        }
        /* the loop's device: limits, units and topic levels from its tags */
        struct fb_device *d = fb_gw_device(gw, L->name);
        if (!d || d->drv != &fb_driver_control) continue;
        struct fb_tag *tags = &gw->tags[d->first_tag];
        if (pv) {
            if (!L->has_sp_min && fb_tproc(pv)->has_min) {
                L->has_sp_min = true;
                L->sp_min = fb_tproc(pv)->min;
            }
            if (!L->has_sp_max && fb_tproc(pv)->has_max) {
                L->has_sp_max = true;
                L->sp_max = fb_tproc(pv)->max;
            }
            /* the set-point tag's own settings (the loaded ones may be shared with other tags) */
            struct fb_tag_proc *spp = fb_arena_alloc(&gw->arena, sizeof *spp, _Alignof(struct fb_tag_proc));
            if (!spp) {
                fb_cfg_error_at(r, L->mark, "out of memory");
                continue;
            }
            *spp = *fb_tproc(&tags[FB_LF_SP]);
            spp->has_min = L->has_sp_min;
            spp->min = L->sp_min;
            spp->has_max = L->has_sp_max;
            spp->max = L->sp_max;
            tags[FB_LF_SP].proc = spp;
            if ((L->has_sp_min && L->sp0 < L->sp_min) || (L->has_sp_max && L->sp0 > L->sp_max))
                fb_cfg_error_at(r, L->mark, "loop %s: sp %g is outside the set-point limits [%g, %g]", L->name, L->sp0,
                                L->has_sp_min ? L->sp_min : -INFINITY, L->has_sp_max ? L->sp_max : INFINITY);
            for (int f = FB_LF_PV; f <= FB_LF_SP_TARGET && fb_tag_unit(pv); f++)
                if (!fb_tag_unit(&tags[f]) && !set_unit(gw, &tags[f], fb_tag_unit(pv))) {
                    fb_cfg_error_at(r, L->mark, "out of memory");
                    break;
                }
        }
        if (out) {
            if (fb_tag_unit(out) && !fb_tag_unit(&tags[FB_LF_OUT]) && !set_unit(gw, &tags[FB_LF_OUT], fb_tag_unit(out)))
                fb_cfg_error_at(r, L->mark, "out of memory");
            const struct fb_device *od = &gw->devs[out->device];
            if (!L->area && od->area) {
                free(d->area);
                d->area = strdup(od->area);
            }
            if (!L->line && od->line) {
                free(d->line);
                d->line = strdup(od->line);
            }
        }
    }
    if (!c->period_given) c->period_ns = g ? g : 100000000LL;
    if (c->period_ns < MIN_PERIOD_NS)
        fb_cfg_error_at(r, c->mark,
                        "control: the loops' cycles have no common period of 0.5ms or more; give cycles that are "
                        "multiples of one period (control.period)");
    /* the stall detector must give the thread a few periods */
    if (!c->watchdog_given && c->watchdog_ns && c->watchdog_ns < 3 * c->period_ns) c->watchdog_ns = 3 * c->period_ns;
    if (c->watchdog_given && c->watchdog_ns && c->watchdog_ns < 2 * c->period_ns)
        fb_cfg_error_at(r, c->watchdog_m,
                        "control.watchdog %.3gs must be at least two periods (%.3gs): the thread "
                        "sleeps a period between cycles",
                        c->watchdog_ns / 1e9, 2 * c->period_ns / 1e9);
    for (uint32_t i = 0; i < c->nloops; i++)
        if (c->loops[i].name && c->period_ns && c->loops[i].cycle_ns % c->period_ns)
            fb_cfg_error_at(r, c->loops[i].mark, "loop %s: cycle %.3gs is not a multiple of control.period %.3gs",
                            c->loops[i].name, c->loops[i].cycle_ns / 1e9, c->period_ns / 1e9);
    for (uint32_t i = 0; i < c->nilks; i++) {
        struct ctl_ilk_cfg *I = &c->ilks[i];
        snprintf(what, sizeof what, "interlock %s", I->name ? I->name : "?");
        if (I->when) {
            struct fb_err e = {0};
            struct ilk_resolve x = {gw, I};
            if (fb_expr_compile(I->when, ilk_resolve, &x, &I->expr, &e) < 0)
                fb_cfg_error_at(r, I->when_m, "%s.when: %s", what, e.msg);
        }
        for (uint32_t k = 0; k < I->nloops; k++) {
            uint32_t j;
            for (j = 0; j < c->nloops; j++)
                if (c->loops[j].name && !strcmp(c->loops[j].name, I->loop_names[k])) break;
            if (j == c->nloops)
                fb_cfg_error_at(r, I->loop_m[k], "%s: no loop '%s' in control.loops", what, I->loop_names[k]);
            I->loops[k] = j;
        }
        for (uint32_t k = 0; k < I->nouts; k++) {
            struct fb_tag *t = find_tag(r, gw, I->outs[k].name, I->outs[k].m, what);
            if (!t) continue;
            I->outs[k].tag = t->id;
            if (!(t->access & FB_ACC_WRITE) || t->type == FB_T_STRING)
                fb_cfg_error_at(r, I->outs[k].m, "%s: output %s must be a writable number tag", what,
                                fb_tag_path(gw, t));
        }
    }
    if (c->north_loss_ns && !gw->nsinks)
        fb_cfg_note(r, NULL, "control.north_loss: no sink section, so no command source can be lost");
}

static void fmt_s(char *b, size_t n, double s)
{
    if (s == 0)
        snprintf(b, n, "0");
    else if (s < 1)
        snprintf(b, n, "%gms", s * 1e3);
    else
        snprintf(b, n, "%gs", s);
}

static void ctl_describe(const struct fb_service_inst *si, FILE *f)
{
    const struct ctl_cfg *c = si->cfg;
    char p[32], w[32];
    fmt_s(p, sizeof p, c->period_ns / 1e9);
    fmt_s(w, sizeof w, c->watchdog_ns / 1e9);
    fprintf(f, "  control  %u loop%s, %u interlock%s, period %s, watchdog %s", c->nloops, c->nloops == 1 ? "" : "s",
            c->nilks, c->nilks == 1 ? "" : "s", p, c->watchdog_ns ? w : "off");
    if (c->priority) fprintf(f, ", SCHED_FIFO %d", c->priority);
    if (c->cpu >= 0) fprintf(f, ", cpu %d", c->cpu);
    if (c->north_loss_ns) fprintf(f, ", north_loss %gs", c->north_loss_ns / 1e9);
    fputc('\n', f);
    for (uint32_t i = 0; i < c->nloops; i++) {
        const struct fb_loop_cfg *L = &c->loops[i];
        char cy[32], ti[32], td[32];
        fmt_s(cy, sizeof cy, L->cycle_ns / 1e9);
        fmt_s(ti, sizeof ti, L->pid.ti);
        fmt_s(td, sizeof td, L->pid.td);
        fprintf(f, "    loop %s  %s → %s  sp %g  kp %g ti %s td %s  cycle %s  out [%g, %g] safe %g  %s\n",
                L->name ? L->name : "?", L->pv_name ? L->pv_name : "?", L->out_name ? L->out_name : "?", L->sp0,
                L->pid.kp, ti, td, cy, L->pid.lo, L->pid.hi, L->safe, L->mode0 == FB_MODE_AUTO ? "auto" : "manual");
    }
    for (uint32_t i = 0; i < c->nilks; i++)
        fprintf(f, "    interlock %s  when %s  (%u loop%s, %u output%s)\n", c->ilks[i].name ? c->ilks[i].name : "?",
                c->ilks[i].when ? c->ilks[i].when : "?", c->ilks[i].nloops, c->ilks[i].nloops == 1 ? "" : "s",
                c->ilks[i].nouts, c->ilks[i].nouts == 1 ? "" : "s");
}

/* =============================================================== runtime */
/* Jitter histogram: 1 µs buckets below 1 ms, 10 µs below 10 ms, 100 µs below
 * 100 ms, then one bucket for the rest. */
#define H_FINE 1000
#define H_MID 900
#define H_COARSE 900
#define H_N (H_FINE + H_MID + H_COARSE + 1)

static uint32_t h_bucket(int64_t ns)
{
    int64_t us = ns / 1000;
    if (us < 0) us = 0;
    if (us < 1000) return (uint32_t)us;
    if (us < 10000) return H_FINE + (uint32_t)((us - 1000) / 10);
    if (us < 100000) return H_FINE + H_MID + (uint32_t)((us - 10000) / 100);
    return H_N - 1;
}

/* The upper edge of a bucket, in seconds. */
static double h_upper(uint32_t b)
{
    if (b < H_FINE) return (b + 1) * 1e-6;
    if (b < H_FINE + H_MID) return (1000 + (b - H_FINE + 1) * 10) * 1e-6;
    if (b < H_N - 1) return (10000 + (b - H_FINE - H_MID + 1) * 100) * 1e-6;
    return INFINITY;
}

struct ctl;
struct ctl_loop {
    struct fb_loop L;
    const struct fb_loop_cfg *c;
    struct ctl *x;
    const struct fb_latest *pv, *sp;
    struct fb_write_req *req, *wd_req;
    struct fb_value last_raw;
    bool have_last, dirty;
    int64_t last_write, last_run;
    uint32_t every; /* cycle in ticks */
    bool trip;      /* a watchdog trip to hand to the next cycle */
    atomic_bool failed;
    _Atomic int last_rc;
    _Atomic uint64_t writes, write_errors;
    struct fb_ratelimit rl_conv; /* control thread */
    struct fb_ratelimit rl_done; /* the output's connection thread */
};

struct ctl_iout {
    struct ctl *x;
    const struct ctl_out_cfg *o;
    struct fb_write_req *req;
};

struct ctl_ilk {
    const struct ctl_ilk_cfg *c;
    const struct fb_latest *slots[CTL_ILK_MAX_TAGS];
    double vals[CTL_ILK_MAX_TAGS];
    atomic_bool active;
    _Atomic uint64_t trips;
    struct ctl_iout *outs;
    int64_t last_write;
};

struct ctl {
    struct fb_gateway *gw;
    const struct ctl_cfg *cfg;
    struct ctl_loop *loops;
    struct ctl_ilk *ilks;
    struct fb_write_guard guard;
    /* control thread */
    pthread_t thr;
    bool thr_started;
    atomic_bool stop;
    bool realtime;
    int64_t north_down_since;
    bool north_lost;
    uint32_t trip_seen;
    /* counters (written by the control thread, read by anyone) */
    _Atomic uint64_t cycles, overruns, work_sum_ns, work_count;
    _Atomic int64_t work_max_ns, jitter_max_ns;
    _Atomic uint64_t jitter_sum_ns;
    _Atomic uint64_t hist[H_N];
    atomic_bool realtime_on;
    /* watchdog */
    pthread_t wd_thr;
    bool wd_started;
    pthread_mutex_t wd_mu;
    pthread_cond_t wd_cv;
    bool wd_stop; /* under wd_mu */
    atomic_bool tripped;
    _Atomic uint32_t trip_seq;
    _Atomic uint64_t trips;
    bool sd_watchdog;    /* watched by the gateway's systemd watchdog (control.systemd, WatchdogSec=) */
    struct fb_live live; /* the control thread's liveness record (control.systemd) */
    /* test hook */
    const char *stall_path;
    atomic_bool stall;
};

static int64_t ts_ns(const struct timespec *t) { return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec; }
static struct timespec ns_ts(int64_t ns) { return (struct timespec){ns / 1000000000LL, ns % 1000000000LL}; }

static bool comm_quality(uint32_t q)
{
    uint32_t k = q & 0xFFFF0000u;
    return k == FB_Q_BAD_COMM || k == FB_Q_BAD_NO_COMM || k == FB_Q_BAD_NOT_CONNECTED || k == FB_Q_BAD_TIMEOUT;
}

/* ---------------------------------------------------------------- writes */
static void out_done(void *ctx, int rc, const struct fb_err *err)
{
    struct ctl_loop *cl = ctx;
    atomic_store(&cl->last_rc, rc);
    if (rc == 0) return;
    atomic_fetch_add(&cl->write_errors, 1);
    atomic_store(&cl->failed, true);
    if (fb_ratelimit_ok(&cl->rl_done, fb_mono_ns()))
        fb_warn(cl->c->name, NULL, "output %s not written: %s", cl->c->out_name,
                err && err->msg[0] ? err->msg : fb_strerror(rc));
}

static void iout_done(void *ctx, int rc, const struct fb_err *err)
{
    struct ctl_iout *io = ctx;
    if (rc < 0)
        fb_warn(NULL, NULL, "control: interlock output %s not written: %s", io->o->name,
                err && err->msg[0] ? err->msg : fb_strerror(rc));
}

/* The loop's output through the router's conversion to the write queue. */
static void write_out(struct ctl *x, struct ctl_loop *cl, double u, bool force, int64_t now)
{
    const struct fb_tag *t = &x->gw->tags[cl->c->out];
    struct fb_value raw;
    struct fb_err err = {0};
    if (fb_cmd_convert_num(t, u, &raw, &err) < 0) {
        atomic_fetch_add(&cl->write_errors, 1);
        if (fb_ratelimit_ok(&cl->rl_conv, now))
            fb_warn(cl->c->name, NULL, "output %g refused for %s: %s", u, fb_tag_path(x->gw, t), err.msg);
        return;
    }
    /* a failed write is repeated, but not faster than once a second (a device that refuses) */
    bool failed = atomic_load(&cl->failed) && now - cl->last_write >= 1000000000LL;
    bool due = force || cl->dirty || failed || !cl->have_last || !fb_value_equal(&raw, &cl->last_raw) ||
               (cl->c->refresh_ns > 0 && now - cl->last_write >= cl->c->refresh_ns);
    if (!due) return;
    if (fb_conn_write_async(x->gw, cl->req, t, &raw) < 0) {
        cl->dirty = true; /* the previous one is still on its way: the next cycle writes the newest */
        return;
    }
    atomic_store(&cl->failed, false);
    atomic_fetch_add(&cl->writes, 1);
    cl->last_raw = raw;
    cl->have_last = true;
    cl->last_write = now;
    cl->dirty = false;
}

/* Write the safe value with request r (the watchdog's, or at shutdown). */
static bool write_safe(struct ctl *x, struct ctl_loop *cl, struct fb_write_req *r)
{
    const struct fb_tag *t = &x->gw->tags[cl->c->out];
    struct fb_value raw;
    struct fb_err err = {0};
    if (fb_cmd_convert_num(t, cl->c->safe, &raw, &err) < 0) {
        fb_error(cl->c->name, NULL, "safe value %g cannot be written to %s: %s", cl->c->safe, fb_tag_path(x->gw, t),
                 err.msg);
        return false;
    }
    atomic_store(&cl->last_rc, 1); /* pending */
    return fb_conn_write_async(x->gw, r, t, &raw) == 0;
}

/* ------------------------------------------------------------ the cycle */
static void north_check(struct ctl *x, int64_t now)
{
    const struct fb_gateway *gw = x->gw;
    if (!x->cfg->north_loss_ns || !gw->nsinks) return;
    bool up = false;
    for (uint32_t i = 0; i < gw->nsinks && !up; i++) up = atomic_load(&gw->sinks[i].m.connected) != 0;
    if (up) {
        if (x->north_lost) fb_info(NULL, NULL, "control: command source back: loops resume");
        x->north_down_since = 0;
        x->north_lost = false;
    } else if (!x->north_down_since) {
        x->north_down_since = now;
    } else if (!x->north_lost && now - x->north_down_since >= x->cfg->north_loss_ns) {
        x->north_lost = true;
        fb_warn(NULL, NULL, "control: command source lost: no northbound connection for %.3gs",
                x->cfg->north_loss_ns / 1e9);
    }
}

static void interlocks(struct ctl *x, int64_t now)
{
    for (uint32_t i = 0; i < x->cfg->nilks; i++) {
        struct ctl_ilk *k = &x->ilks[i];
        const struct ctl_ilk_cfg *c = k->c;
        bool bad = false;
        for (uint32_t j = 0; j < c->ntags; j++) {
            struct fb_latest_val v;
            fb_latest_get(k->slots[j], &v);
            /* fail-safe: a condition that cannot be evaluated holds */
            if (!v.mono_ns || fb_q_bad(v.q) || !isfinite(v.v)) bad = true;
            k->vals[j] = v.v;
        }
        double res = bad || !c->expr ? 1 : fb_expr_eval(c->expr, k->vals);
        bool on = res != 0; /* NaN (no value) holds too */
        bool was = atomic_load_explicit(&k->active, memory_order_relaxed);
        if (on != was) {
            atomic_store(&k->active, on);
            if (on) {
                atomic_fetch_add(&k->trips, 1);
                fb_warn(NULL, NULL, "control: interlock %s active (%s%s)", c->name,
                        bad ? "an input is bad or missing: " : "", c->when);
            } else {
                fb_info(NULL, NULL, "control: interlock %s released", c->name);
            }
        }
        if (on && (!was || now - k->last_write >= 1000000000LL)) { /* hold the outputs: on entry, then every second */
            k->last_write = now;
            for (uint32_t j = 0; j < c->nouts; j++) {
                const struct fb_tag *t = &x->gw->tags[c->outs[j].tag];
                struct fb_value raw;
                struct fb_err e = {0};
                if (fb_cmd_convert_num(t, c->outs[j].value, &raw, &e) == 0)
                    fb_conn_write_async(x->gw, k->outs[j].req, t, &raw);
                else if (!was)
                    fb_warn(NULL, NULL, "control: interlock %s: %s: %s", c->name, fb_tag_path(x->gw, t), e.msg);
            }
        }
    }
}

static void run_loop(struct ctl *x, struct ctl_loop *cl, int64_t deadline, int64_t now)
{
    const struct fb_loop_cfg *c = cl->c;
    const struct fb_gateway *gw = x->gw;
    struct fb_loop_in in = {0};
    in.h = cl->last_run ? (double)(deadline - cl->last_run) / 1e9 : (double)c->cycle_ns / 1e9;
    cl->last_run = deadline;
    struct fb_latest_val v;
    fb_latest_get(cl->pv, &v);
    in.have_pv = v.mono_ns != 0;
    in.pv = v.v;
    in.pv_q = v.q;
    in.pv_age = v.mono_ns ? now - v.mono_ns : INT64_MAX;
    const struct fb_device *pd = &gw->devs[gw->tags[c->pv].device];
    in.pv_lost = atomic_load(&pd->state) == FB_DEV_OFFLINE || (in.have_pv && comm_quality(v.q));
    if (cl->sp) {
        fb_latest_get(cl->sp, &v);
        in.have_sp = v.mono_ns && !fb_q_bad(v.q) && isfinite(v.v);
        in.sp_in = v.v;
    }
    for (uint32_t i = 0; i < x->cfg->nilks && !in.interlock; i++) {
        if (!atomic_load_explicit(&x->ilks[i].active, memory_order_relaxed)) continue;
        for (uint32_t k = 0; k < x->ilks[i].c->nloops; k++)
            if (x->ilks[i].c->loops[k] == c->index) {
                in.interlock = x->ilks[i].c->name;
                in.interlock_manual = x->ilks[i].c->resume_manual;
            }
    }
    in.north_lost = x->north_lost;
    in.out_lost = atomic_load(&gw->devs[gw->tags[c->out].device].state) != FB_DEV_ONLINE;
    in.watchdog_trip = cl->trip;
    cl->trip = false;
    bool force;
    double u = fb_loop_cycle(&cl->L, &in, &force);
    if (cl->L.state != FB_LS_INIT) write_out(x, cl, u, force, now);
}

static void stall_hook(struct ctl *x)
{
    if (!x->stall_path || !atomic_load_explicit(&x->stall, memory_order_relaxed)) return;
    fb_warn(NULL, NULL, "control: test hook: the control thread stops (%s exists)", x->stall_path);
    while (atomic_load(&x->stall) && !atomic_load(&x->stop)) {
        struct timespec ts = {0, 5000000L};
        nanosleep(&ts, NULL);
    }
    fb_warn(NULL, NULL, "control: test hook: the control thread runs again");
}

static void apply_sched(struct ctl *x)
{
    const struct ctl_cfg *c = x->cfg;
    /* a normal thread's timed sleeps may end up to 50 µs late by default (timer
     * slack, to merge wake-ups); the control thread wants its deadline */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    if (c->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(c->cpu, &set);
        int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
        if (rc)
            fb_warn(NULL, NULL, "control: cannot pin the control thread to CPU %d (%s): it runs on any CPU", c->cpu,
                    strerror(rc));
        else
            fb_info(NULL, NULL, "control: control thread pinned to CPU %d", c->cpu);
    }
    if (c->priority > 0) {
        struct sched_param sp = {.sched_priority = c->priority};
        int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
        if (rc)
            fb_warn(
                NULL, NULL,
                "control: SCHED_FIFO priority %d refused (%s; needs CAP_SYS_NICE or an RLIMIT_RTPRIO): running with "
                "normal priority",
                c->priority, strerror(rc));
        else
            fb_info(NULL, NULL, "control: control thread runs SCHED_FIFO priority %d", c->priority);
        atomic_store(&x->realtime_on, rc == 0);
    }
}

static void *ctl_thread(void *arg)
{
    struct ctl *x = arg;
    apply_sched(x);
    /* a watched thread (core/live.h): it beats every cycle and says, before it
     * sleeps, when it is due back; stalled past `watchdog`, the gateway's
     * systemd watchdog pings stop */
    if (x->cfg->systemd)
        fb_live_enter(&x->live, "control", x->cfg->watchdog_ns ? x->cfg->watchdog_ns : x->gw->stall_timeout_ns);
    const int64_t period = x->cfg->period_ns;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    int64_t deadline = ts_ns(&next);
    uint64_t tick = 0;
    for (;;) {
        deadline += period;
        next = ns_ts(deadline);
        fb_live_idle(deadline);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
        }
        int64_t now = fb_mono_ns();
        fb_live_beat(now);
        int64_t late = now - deadline;
        if (late < 0) late = 0;
        atomic_fetch_add_explicit(&x->hist[h_bucket(late)], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&x->jitter_sum_ns, (uint64_t)late, memory_order_relaxed);
        if (late > atomic_load_explicit(&x->jitter_max_ns, memory_order_relaxed))
            atomic_store_explicit(&x->jitter_max_ns, late, memory_order_relaxed);
        if (atomic_load_explicit(&x->stop, memory_order_relaxed)) break;
        stall_hook(x);
        uint32_t ts = atomic_load(&x->trip_seq);
        if (ts != x->trip_seen) {
            x->trip_seen = ts;
            for (uint32_t i = 0; i < x->cfg->nloops; i++) x->loops[i].trip = true;
        }
        north_check(x, now);
        interlocks(x, now);
        for (uint32_t i = 0; i < x->cfg->nloops; i++)
            if (tick % x->loops[i].every == 0) run_loop(x, &x->loops[i], deadline, now);
        atomic_fetch_add_explicit(&x->cycles, 1, memory_order_release);
        int64_t end = fb_mono_ns();
        int64_t work = end - now;
        atomic_fetch_add_explicit(&x->work_sum_ns, (uint64_t)work, memory_order_relaxed);
        atomic_fetch_add_explicit(&x->work_count, 1, memory_order_relaxed);
        if (work > atomic_load_explicit(&x->work_max_ns, memory_order_relaxed))
            atomic_store_explicit(&x->work_max_ns, work, memory_order_relaxed);
        tick++;
        if (end >= deadline + period) { /* overrun: skip the wake-ups already missed, never burst */
            uint64_t missed = (uint64_t)((end - deadline) / period);
            atomic_fetch_add(&x->overruns, missed);
            deadline += (int64_t)missed * period;
            tick += missed;
        }
    }
    fb_live_leave();
    return NULL;
}

/* -------------------------------------------------------------- watchdog */
static void trip(struct ctl *x, int64_t stalled_ns)
{
    atomic_store(&x->tripped, true);
    atomic_fetch_add(&x->trips, 1);
    atomic_fetch_add(&x->trip_seq, 1);
    uint32_t ok = 0;
    for (uint32_t i = 0; i < x->cfg->nloops; i++) ok += write_safe(x, &x->loops[i], x->loops[i].wd_req);
    fb_error(NULL, NULL,
             "control: watchdog: the control thread has not cycled for %.0f ms (limit %.0f ms): safe values queued "
             "for %u of %u outputs%s",
             stalled_ns / 1e6, x->cfg->watchdog_ns / 1e6, ok, x->cfg->nloops,
             x->sd_watchdog ? "; systemd watchdog pings stop" : "");
}

static void *wd_thread(void *arg)
{
    struct ctl *x = arg;
    const struct ctl_cfg *c = x->cfg;
    int64_t interval = c->watchdog_ns ? c->watchdog_ns / 4 : 1000000000LL;
    if (x->stall_path && interval > 20000000LL) interval = 20000000LL;
    if (interval < 1000000LL) interval = 1000000LL;
    uint64_t last_hb = atomic_load(&x->cycles);
    int64_t last_change = fb_mono_ns();
    pthread_mutex_lock(&x->wd_mu);
    while (!x->wd_stop) {
        fb_cond_wait_until(&x->wd_cv, &x->wd_mu, fb_mono_ns() + interval);
        if (x->wd_stop) break;
        pthread_mutex_unlock(&x->wd_mu);
        int64_t now = fb_mono_ns();
        if (x->stall_path) atomic_store(&x->stall, access(x->stall_path, F_OK) == 0);
        uint64_t hb = atomic_load_explicit(&x->cycles, memory_order_acquire);
        if (hb != last_hb) {
            if (atomic_load(&x->tripped)) {
                fb_warn(NULL, NULL,
                        "control: watchdog: the control thread cycles again after %.0f ms; its loops are "
                        "in manual at their safe values",
                        (now - last_change) / 1e6);
                atomic_store(&x->tripped, false);
            }
            last_hb = hb;
            last_change = now;
        } else if (c->watchdog_ns && !atomic_load(&x->tripped) && now - last_change > c->watchdog_ns) {
            trip(x, now - last_change);
        }
        pthread_mutex_lock(&x->wd_mu);
    }
    pthread_mutex_unlock(&x->wd_mu);
    return NULL;
}

/* ----------------------------------------------------------- write guard */
static int guard(void *ctx, const struct fb_tag *t, struct fb_err *err)
{
    struct ctl *x = ctx;
    const struct ctl_cfg *c = x->cfg;
    for (uint32_t i = 0; i < c->nilks; i++) {
        if (!atomic_load(&x->ilks[i].active)) continue;
        for (uint32_t k = 0; k < c->ilks[i].nouts; k++)
            if (c->ilks[i].outs[k].tag == t->id)
                return fb_err_set(err, FB_EACCES, "interlock %s is active: %s is held at %g", c->ilks[i].name, t->name,
                                  c->ilks[i].outs[k].value);
    }
    for (uint32_t i = 0; i < c->nloops; i++)
        if (c->loops[i].out == t->id)
            return fb_err_set(err, FB_EACCES,
                              "%s is the output of control loop %s: write the loop's out in manual mode instead",
                              t->name, c->loops[i].name);
    return 0;
}

/* ------------------------------------------------------------ reload */
/* A reload restarts the service on the new configuration (it holds the old
 * model's tag ids, latest-value slots and write requests), but a loop whose
 * configuration did not change is carried over by name (handover → adopt,
 * model.h): no safe value, the mode, set point, manual output, tuning, PID
 * state and interlock memory continue, so its output goes on without a bump.
 * An interlock of the same configuration keeps its state too. */
struct ctl_carry_loop {
    char *name;
    struct fb_loop_saved s;
    struct fb_value last_raw;
    bool have_last, failed;
    int64_t last_write, last_run;
    uint64_t writes, write_errors;
};

struct ctl_carry_ilk {
    char *name;
    bool active;
    uint64_t trips;
    int64_t last_write;
};

struct ctl_carry {
    struct ctl_carry_loop *loops;
    uint32_t nloops;
    struct ctl_carry_ilk *ilks;
    uint32_t nilks;
    bool north_lost;
    int64_t north_down_since;
};

static void carry_free(struct ctl_carry *k)
{
    if (!k) return;
    for (uint32_t i = 0; i < k->nloops; i++) free(k->loops[i].name);
    for (uint32_t i = 0; i < k->nilks; i++) free(k->ilks[i].name);
    free(k->loops);
    free(k->ilks);
    free(k);
}

static bool s_eq(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

static bool tag_eq(const struct fb_gateway *og, uint32_t a, const struct fb_gateway *ng, uint32_t b)
{
    return a < og->ntags && b < ng->ntags && fb_tag_same(og, &og->tags[a], ng, &ng->tags[b]);
}

static bool pid_eq(const struct fb_pid_cfg *a, const struct fb_pid_cfg *b)
{
    return a->kp == b->kp && a->ti == b->ti && a->td == b->td && a->n == b->n && a->b == b->b && a->tt == b->tt &&
           a->aw == b->aw && a->action == b->action && a->lo == b->lo && a->hi == b->hi && a->rate == b->rate;
}

/* Everything that decides what the loop does (its device's publish period,
 * area and line do not); its tags compared by name and definition, their ids
 * are the models' own. */
static bool loop_eq(const struct fb_gateway *og, const struct fb_loop_cfg *a, const struct fb_gateway *ng,
                    const struct fb_loop_cfg *b)
{
    return s_eq(a->name, b->name) && s_eq(a->pv_name, b->pv_name) && s_eq(a->out_name, b->out_name) &&
           s_eq(a->sp_name, b->sp_name) && a->has_sp_tag == b->has_sp_tag && tag_eq(og, a->pv, ng, b->pv) &&
           tag_eq(og, a->out, ng, b->out) && (!a->has_sp_tag || tag_eq(og, a->sp_tag, ng, b->sp_tag)) &&
           pid_eq(&a->pid, &b->pid) && a->cycle_ns == b->cycle_ns && a->mode0 == b->mode0 && a->sp0 == b->sp0 &&
           a->has_sp_min == b->has_sp_min && a->has_sp_max == b->has_sp_max &&
           (!a->has_sp_min || a->sp_min == b->sp_min) && (!a->has_sp_max || a->sp_max == b->sp_max) &&
           a->sp_rate == b->sp_rate && a->sp_track == b->sp_track && a->safe == b->safe && a->out0 == b->out0 &&
           a->stale_cycles == b->stale_cycles && a->fallback == b->fallback && a->on_north_loss == b->on_north_loss &&
           a->refresh_ns == b->refresh_ns;
}

static bool ilk_eq(const struct fb_gateway *og, const struct ctl_ilk_cfg *a, const struct fb_gateway *ng,
                   const struct ctl_ilk_cfg *b)
{
    if (!s_eq(a->name, b->name) || !s_eq(a->when, b->when) || a->resume_manual != b->resume_manual ||
        a->ntags != b->ntags || a->nloops != b->nloops || a->nouts != b->nouts || !a->expr != !b->expr)
        return false;
    for (uint32_t k = 0; k < a->ntags; k++)
        if (!tag_eq(og, a->tags[k], ng, b->tags[k])) return false;
    for (uint32_t k = 0; k < a->nloops; k++)
        if (!s_eq(a->loop_names[k], b->loop_names[k])) return false;
    for (uint32_t k = 0; k < a->nouts; k++)
        if (!s_eq(a->outs[k].name, b->outs[k].name) || a->outs[k].value != b->outs[k].value ||
            !tag_eq(og, a->outs[k].tag, ng, b->outs[k].tag))
            return false;
    return true;
}

static const struct ctl_ilk_cfg *ilk_named(const struct ctl_cfg *c, const char *name)
{
    for (uint32_t i = 0; name && i < c->nilks; i++)
        if (s_eq(c->ilks[i].name, name)) return &c->ilks[i];
    return NULL;
}

static bool ilk_names_loop(const struct ctl_ilk_cfg *I, const char *loop)
{
    for (uint32_t k = 0; k < I->nloops; k++)
        if (s_eq(I->loop_names[k], loop)) return true;
    return false;
}

/* Loop a of c continues as b of nc: the same configuration, and every
 * interlock that holds it is the same in both. */
static bool loop_carried(const struct fb_gateway *og, const struct ctl_cfg *c, const struct fb_loop_cfg *a,
                         const struct fb_gateway *ng, const struct ctl_cfg *nc, const struct fb_loop_cfg *b)
{
    if (!a->name || !loop_eq(og, a, ng, b)) return false;
    uint32_t n_old = 0, n_new = 0;
    for (uint32_t i = 0; i < c->nilks; i++) {
        if (!ilk_names_loop(&c->ilks[i], a->name)) continue;
        n_old++;
        const struct ctl_ilk_cfg *o = ilk_named(nc, c->ilks[i].name);
        if (!o || !ilk_eq(og, &c->ilks[i], ng, o)) return false;
    }
    for (uint32_t i = 0; i < nc->nilks; i++) n_new += ilk_names_loop(&nc->ilks[i], a->name);
    return n_old == n_new;
}

/* In ctl_start_from, before the control thread runs. */
static void carry_apply(struct ctl *x, struct ctl_carry *k)
{
    if (!k) return;
    const struct ctl_cfg *c = x->cfg;
    for (uint32_t i = 0; i < c->nloops; i++) {
        struct ctl_loop *cl = &x->loops[i];
        const struct ctl_carry_loop *o = NULL;
        for (uint32_t j = 0; j < k->nloops && !o; j++)
            if (s_eq(k->loops[j].name, cl->c->name)) o = &k->loops[j];
        if (!o) continue;
        const struct ctl_ilk_cfg *I = ilk_named(c, o->s.interlock_was[0] ? o->s.interlock_was : NULL);
        fb_loop_restore(&cl->L, &o->s, I ? I->name : NULL);
        cl->last_raw = o->last_raw;
        cl->have_last = o->have_last;
        cl->last_write = o->last_write;
        cl->last_run = o->last_run;
        atomic_store(&cl->failed, o->failed);
        atomic_store(&cl->writes, o->writes);
        atomic_store(&cl->write_errors, o->write_errors);
        fb_info(cl->c->name, NULL, "continues across the reload: %s, sp %g, out %g, state %s",
                o->s.mode == FB_MODE_AUTO ? "auto" : "manual", o->s.sp, o->s.out, fb_loop_state_names[o->s.state]);
    }
    for (uint32_t i = 0; i < c->nilks; i++)
        for (uint32_t j = 0; j < k->nilks; j++)
            if (s_eq(k->ilks[j].name, c->ilks[i].name)) {
                atomic_store(&x->ilks[i].active, k->ilks[j].active);
                atomic_store(&x->ilks[i].trips, k->ilks[j].trips);
                x->ilks[i].last_write = k->ilks[j].last_write;
            }
    x->north_lost = k->north_lost;
    x->north_down_since = k->north_down_since;
    carry_free(k);
}

/* ---------------------------------------------------------- start / stop */
static void ctl_free(struct ctl *x)
{
    if (!x) return;
    for (uint32_t i = 0; x->loops && i < x->cfg->nloops; i++) {
        struct ctl_loop *cl = &x->loops[i];
        atomic_store(&((struct fb_loop_cfg *)cl->c)->rt, NULL);
        fb_loop_destroy(&cl->L);
        fb_write_req_free(cl->req);
        fb_write_req_free(cl->wd_req);
    }
    for (uint32_t i = 0; x->ilks && i < x->cfg->nilks; i++) {
        for (uint32_t k = 0; x->ilks[i].outs && k < x->cfg->ilks[i].nouts; k++)
            fb_write_req_free(x->ilks[i].outs[k].req);
        free(x->ilks[i].outs);
    }
    free(x->loops);
    free(x->ilks);
    pthread_mutex_destroy(&x->wd_mu);
    pthread_cond_destroy(&x->wd_cv);
    free(x);
}

/* Start the service; with `carry` (a reload's handover, taken and freed) the
 * loops and interlocks named in it continue from their running state. */
static void *ctl_start_from(struct fb_gateway *gw, const void *cfg, struct ctl_carry *carry, struct fb_err *err)
{
    const struct ctl_cfg *c = cfg;
    struct ctl *x = calloc(1, sizeof *x);
    if (!x) {
        carry_free(carry);
        fb_err_set(err, FB_ENOMEM, "out of memory");
        return NULL;
    }
    x->gw = gw;
    x->cfg = c;
    pthread_mutex_init(&x->wd_mu, NULL);
    fb_cond_init_mono(&x->wd_cv);
    x->loops = calloc(c->nloops ? c->nloops : 1, sizeof *x->loops);
    x->ilks = calloc(c->nilks ? c->nilks : 1, sizeof *x->ilks);
    if (!x->loops || !x->ilks) goto nomem;
    for (uint32_t i = 0; i < c->nloops; i++) {
        struct ctl_loop *cl = &x->loops[i];
        const struct fb_loop_cfg *L = &c->loops[i];
        cl->c = L;
        cl->x = x;
        cl->every = (uint32_t)(L->cycle_ns / c->period_ns);
        cl->rl_conv.interval_ns = cl->rl_done.interval_ns = 10000000000LL;
        fb_loop_init(&cl->L, L);
        cl->pv = fb_tag_latest(gw, L->pv);
        cl->sp = L->has_sp_tag ? fb_tag_latest(gw, L->sp_tag) : NULL;
        cl->req = fb_write_req_new(out_done, cl);
        cl->wd_req = fb_write_req_new(out_done, cl);
        if (!cl->pv || (L->has_sp_tag && !cl->sp) || !cl->req || !cl->wd_req) goto nomem;
        atomic_store(&((struct fb_loop_cfg *)L)->rt, &cl->L);
    }
    for (uint32_t i = 0; i < c->nilks; i++) {
        struct ctl_ilk *k = &x->ilks[i];
        k->c = &c->ilks[i];
        for (uint32_t j = 0; j < k->c->ntags; j++)
            if (!(k->slots[j] = fb_tag_latest(gw, k->c->tags[j]))) goto nomem;
        k->outs = calloc(k->c->nouts ? k->c->nouts : 1, sizeof *k->outs);
        if (!k->outs) goto nomem;
        for (uint32_t j = 0; j < k->c->nouts; j++) {
            k->outs[j].x = x;
            k->outs[j].o = &k->c->outs[j];
            if (!(k->outs[j].req = fb_write_req_new(iout_done, &k->outs[j]))) goto nomem;
        }
    }
    carry_apply(x, carry); /* before the control thread's first cycle */
    carry = NULL;
    x->guard = (struct fb_write_guard){guard, x};
    fb_write_guard_set(gw, &x->guard);
    x->stall_path = getenv("FB_TEST_CONTROL_STALL");
    if (x->stall_path && !*x->stall_path) x->stall_path = NULL;
    uint64_t sd_usec = 0;
    x->sd_watchdog = c->systemd && fb_sd_watchdog(&sd_usec);
    if (pthread_create(&x->thr, NULL, ctl_thread, x) != 0) {
        fb_err_set(err, FB_ENOMEM, "cannot start the control thread");
        goto fail;
    }
    x->thr_started = true;
    pthread_setname_np(x->thr, "fb-control"); /* top -H, /proc/PID/task/TID/comm: its own CPU time */
    if (c->watchdog_ns || x->stall_path) {
        if (pthread_create(&x->wd_thr, NULL, wd_thread, x) != 0) {
            fb_err_set(err, FB_ENOMEM, "cannot start the control watchdog thread");
            goto fail;
        }
        x->wd_started = true;
        pthread_setname_np(x->wd_thr, "fb-ctl-watchdog");
    }
    fb_info(NULL, NULL, "control: %u loop%s, %u interlock%s, period %.3g ms%s", c->nloops, c->nloops == 1 ? "" : "s",
            c->nilks, c->nilks == 1 ? "" : "s", c->period_ns / 1e6,
            x->sd_watchdog ? ", watched by the systemd watchdog" : "");
    return x;
nomem:
    fb_err_set(err, FB_ENOMEM, "control: out of memory");
fail:
    carry_free(carry);
    if (x->thr_started) {
        atomic_store(&x->stop, true);
        pthread_join(x->thr, NULL);
    }
    fb_write_guard_set(gw, NULL);
    ctl_free(x);
    return NULL;
}

/* Stop the control thread and the watchdog, then write the safe value of
 * every loop not in `keep` (NULL: all) and wait for the devices' answers —
 * while the connection threads still run. */
static void wind_down(struct ctl *x, const bool *keep, const char *when)
{
    if (x->thr_started) {
        atomic_store(&x->stop, true);
        pthread_join(x->thr, NULL);
        x->thr_started = false;
    }
    if (x->wd_started) {
        pthread_mutex_lock(&x->wd_mu);
        x->wd_stop = true;
        pthread_cond_broadcast(&x->wd_cv);
        pthread_mutex_unlock(&x->wd_mu);
        pthread_join(x->wd_thr, NULL);
        x->wd_started = false;
    }
    const uint32_t n = x->cfg->nloops;
    if (!n) return;
    int64_t wait = x->gw->cmd_timeout_ns > 0 ? x->gw->cmd_timeout_ns : SAFE_WAIT_DEFAULT_NS;
    int64_t deadline = fb_mono_ns() + wait;
    /* the last cycle's writes first, so the safe value is the last one (a kept loop's last
     * output is answered before a reload pauses its connection) */
    for (uint32_t i = 0; i < n; i++)
        while ((fb_write_req_busy(x->loops[i].req) || fb_write_req_busy(x->loops[i].wd_req)) &&
               fb_mono_ns() < deadline) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
    uint32_t nsafe = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (keep && keep[i]) continue;
        nsafe++;
        fb_loop_stopped(&x->loops[i].L);
        write_safe(x, &x->loops[i], x->loops[i].req);
    }
    for (uint32_t i = 0; i < n; i++)
        while (!(keep && keep[i]) && fb_write_req_busy(x->loops[i].req) && fb_mono_ns() < deadline) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
    uint32_t ok = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct ctl_loop *cl = &x->loops[i];
        if (keep && keep[i]) continue;
        int rc = atomic_load(&cl->last_rc);
        if (rc == 0)
            ok++;
        else
            fb_error(cl->c->name, NULL, "safe value %g NOT written to %s on %s (%s)", cl->c->safe, cl->c->out_name,
                     when, rc == 1 ? "no answer in time" : fb_strerror(rc));
    }
    if (nsafe)
        fb_log(ok == nsafe ? FB_LOG_INFO : FB_LOG_ERROR, NULL, NULL,
               "control: safe values written on %s: %u of %u outputs", when, ok, nsafe);
}

/* Before the connection threads stop (shutdown, or a reload without a
 * control section any more). */
static void ctl_quiesce(void *state) { wind_down(state, NULL, "shutdown"); }

/* A reload: the loops that continue unchanged in new_cfg (bound on nw) keep
 * their output and hand their state over; the others write their safe value
 * as at shutdown. */
static void *ctl_handover(void *state, const void *new_cfg, const struct fb_gateway *nw)
{
    struct ctl *x = state;
    const struct ctl_cfg *c = x->cfg, *nc = new_cfg;
    struct ctl_carry *k = calloc(1, sizeof *k);
    bool *keep = calloc(c->nloops + 1, sizeof *keep);
    if (k) k->loops = calloc(c->nloops + 1, sizeof *k->loops);
    if (k) k->ilks = calloc(c->nilks + 1, sizeof *k->ilks);
    if (!k || !keep || !k->loops || !k->ilks) {
        fb_warn(NULL, NULL, "control: out of memory: every loop restarts through its safe value");
        carry_free(k);
        free(keep);
        wind_down(x, NULL, "reload");
        return NULL;
    }
    uint32_t nkeep = 0;
    for (uint32_t i = 0; i < c->nloops; i++)
        for (uint32_t j = 0; j < nc->nloops && !keep[i]; j++)
            if (s_eq(c->loops[i].name, nc->loops[j].name)) {
                keep[i] = loop_carried(x->gw, c, &c->loops[i], nw, nc, &nc->loops[j]);
                nkeep += keep[i];
            }
    wind_down(x, keep, "reload");
    char names[256] = "";
    size_t used = 0;
    for (uint32_t i = 0; i < c->nloops; i++) {
        if (!keep[i]) continue;
        struct ctl_loop *cl = &x->loops[i];
        struct ctl_carry_loop *o = &k->loops[k->nloops];
        if (!(o->name = strdup(cl->c->name))) continue; /* then it restarts at its configured start */
        k->nloops++;
        fb_loop_save(&cl->L, &o->s);
        o->last_raw = cl->last_raw;
        o->have_last = cl->have_last;
        o->failed = atomic_load(&cl->failed);
        o->last_write = cl->last_write;
        o->last_run = cl->last_run;
        o->writes = atomic_load(&cl->writes);
        o->write_errors = atomic_load(&cl->write_errors);
        if (used < sizeof names)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "", cl->c->name);
    }
    for (uint32_t i = 0; i < c->nilks; i++) {
        const struct ctl_ilk_cfg *o = ilk_named(nc, c->ilks[i].name);
        if (!o || !ilk_eq(x->gw, &c->ilks[i], nw, o) || !(k->ilks[k->nilks].name = strdup(c->ilks[i].name))) continue;
        struct ctl_carry_ilk *I = &k->ilks[k->nilks++];
        I->active = atomic_load(&x->ilks[i].active);
        I->trips = atomic_load(&x->ilks[i].trips);
        I->last_write = x->ilks[i].last_write;
    }
    k->north_lost = x->north_lost;
    k->north_down_since = x->north_down_since;
    free(keep);
    fb_info(NULL, NULL, "control: reload: %u of %u loops continue unchanged%s%s%s", nkeep, c->nloops, nkeep ? " (" : "",
            names, nkeep ? ")" : "");
    return k;
}

static void *ctl_start(struct fb_gateway *gw, const void *cfg, struct fb_err *err)
{
    return ctl_start_from(gw, cfg, NULL, err);
}

static void *ctl_adopt(struct fb_gateway *gw, const void *cfg, void *blob, struct fb_err *err)
{
    return ctl_start_from(gw, cfg, blob, err);
}

static void ctl_stop(void *state)
{
    struct ctl *x = state;
    if (x->thr_started) { /* only if the runtime never quiesced us: then no device takes writes any more */
        atomic_store(&x->stop, true);
        pthread_join(x->thr, NULL);
    }
    if (x->wd_started) {
        pthread_mutex_lock(&x->wd_mu);
        x->wd_stop = true;
        pthread_cond_broadcast(&x->wd_cv);
        pthread_mutex_unlock(&x->wd_mu);
        pthread_join(x->wd_thr, NULL);
    }
    fb_write_guard_set(x->gw, NULL);
    ctl_free(x);
}

/* --------------------------------------------------------- metrics/status */
static uint64_t h_total(struct ctl *x)
{
    uint64_t n = 0;
    for (uint32_t b = 0; b < H_N; b++) n += atomic_load_explicit(&x->hist[b], memory_order_relaxed);
    return n;
}

/* The p-th quantile of the wake-up lateness in seconds (the bucket's upper
 * edge, but never above the largest lateness seen: an edge above it made the
 * status say p99 > max). */
static double h_quantile(struct ctl *x, double p)
{
    uint64_t n = h_total(x);
    if (!n) return 0;
    double max = atomic_load(&x->jitter_max_ns) / 1e9;
    uint64_t want = (uint64_t)ceil(p * (double)n), acc = 0;
    for (uint32_t b = 0; b < H_N; b++) {
        acc += atomic_load_explicit(&x->hist[b], memory_order_relaxed);
        if (acc >= want) return b == H_N - 1 || h_upper(b) > max ? max : h_upper(b);
    }
    return max;
}

static void family(struct fb_buf *b, const char *name, const char *type, const char *help)
{
    fb_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_num(struct fb_buf *b, double v)
{
    if (isnan(v))
        fb_buf_puts(b, "NaN");
    else if (isinf(v))
        fb_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    else
        fb_buf_printf(b, "%.15g", v);
}

static void loop_label(struct fb_buf *b, const char *name, const char *loop)
{
    fb_buf_puts(b, name);
    fb_buf_puts(b, "{loop=\"");
    fb_buf_puts(b, loop); /* names are [A-Za-z0-9_.-]: nothing to escape */
    fb_buf_puts(b, "\"} ");
}

static void ctl_metrics(void *state, struct fb_buf *b)
{
    struct ctl *x = state;
    const struct ctl_cfg *c = x->cfg;
    family(b, "fieldbridge_control_cycles_total", "counter", "Control thread cycles run.");
    fb_buf_printf(b, "fieldbridge_control_cycles_total %" PRIu64 "\n", atomic_load(&x->cycles));
    family(b, "fieldbridge_control_overruns_total", "counter",
           "Control cycles skipped because a cycle's work ran past the next wake-up.");
    fb_buf_printf(b, "fieldbridge_control_overruns_total %" PRIu64 "\n", atomic_load(&x->overruns));
    family(b, "fieldbridge_control_period_seconds", "gauge", "The control thread's period.");
    fb_buf_puts(b, "fieldbridge_control_period_seconds ");
    put_num(b, c->period_ns / 1e9);
    fb_buf_putc(b, '\n');
    family(b, "fieldbridge_control_wakeup_jitter_seconds", "histogram",
           "How late the control thread woke up after each absolute deadline.");
    static const double le[] = {5e-6, 1e-5, 2e-5, 3e-5, 5e-5, 7.5e-5, 1e-4,   1.5e-4, 2e-4,
                                3e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2,   2.5e-2, 5e-2,   1e-1};
    uint64_t acc = 0;
    uint32_t bkt = 0;
    for (size_t i = 0; i < sizeof le / sizeof le[0]; i++) {
        while (bkt < H_N && h_upper(bkt) <= le[i] + 1e-12)
            acc += atomic_load_explicit(&x->hist[bkt++], memory_order_relaxed);
        fb_buf_puts(b, "fieldbridge_control_wakeup_jitter_seconds_bucket{le=\"");
        put_num(b, le[i]);
        fb_buf_printf(b, "\"} %" PRIu64 "\n", acc);
    }
    uint64_t total = h_total(x);
    fb_buf_printf(b, "fieldbridge_control_wakeup_jitter_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", total);
    fb_buf_puts(b, "fieldbridge_control_wakeup_jitter_seconds_sum ");
    put_num(b, atomic_load(&x->jitter_sum_ns) / 1e9);
    fb_buf_printf(b, "\nfieldbridge_control_wakeup_jitter_seconds_count %" PRIu64 "\n", total);
    family(b, "fieldbridge_control_wakeup_jitter_max_seconds", "gauge", "The latest wake-up since start.");
    fb_buf_puts(b, "fieldbridge_control_wakeup_jitter_max_seconds ");
    put_num(b, atomic_load(&x->jitter_max_ns) / 1e9);
    fb_buf_putc(b, '\n');
    family(b, "fieldbridge_control_cycle_seconds", "summary", "Work time of each control cycle (all due loops).");
    fb_buf_puts(b, "fieldbridge_control_cycle_seconds_sum ");
    put_num(b, atomic_load(&x->work_sum_ns) / 1e9);
    fb_buf_printf(b, "\nfieldbridge_control_cycle_seconds_count %" PRIu64 "\n", atomic_load(&x->work_count));
    family(b, "fieldbridge_control_cycle_max_seconds", "gauge", "The longest control cycle since start.");
    fb_buf_puts(b, "fieldbridge_control_cycle_max_seconds ");
    put_num(b, atomic_load(&x->work_max_ns) / 1e9);
    fb_buf_putc(b, '\n');
    family(b, "fieldbridge_control_realtime", "gauge", "1 when the control thread runs SCHED_FIFO.");
    fb_buf_printf(b, "fieldbridge_control_realtime %d\n", atomic_load(&x->realtime_on) ? 1 : 0);
    family(b, "fieldbridge_control_watchdog_trips_total", "counter",
           "Times the control thread stalled past control.watchdog.");
    fb_buf_printf(b, "fieldbridge_control_watchdog_trips_total %" PRIu64 "\n", atomic_load(&x->trips));
    family(b, "fieldbridge_control_watchdog_tripped", "gauge", "1 while the control thread is stalled.");
    fb_buf_printf(b, "fieldbridge_control_watchdog_tripped %d\n", atomic_load(&x->tripped) ? 1 : 0);
    if (c->nilks) {
        family(b, "fieldbridge_control_interlock_active", "gauge",
               "1 while the interlock holds its loops and outputs.");
        for (uint32_t i = 0; i < c->nilks; i++)
            fb_buf_printf(b, "fieldbridge_control_interlock_active{interlock=\"%s\"} %d\n", c->ilks[i].name,
                          atomic_load(&x->ilks[i].active) ? 1 : 0);
        family(b, "fieldbridge_control_interlock_trips_total", "counter", "Times the interlock became active.");
        for (uint32_t i = 0; i < c->nilks; i++)
            fb_buf_printf(b, "fieldbridge_control_interlock_trips_total{interlock=\"%s\"} %" PRIu64 "\n",
                          c->ilks[i].name, atomic_load(&x->ilks[i].trips));
    }
    if (!c->nloops) return;
    struct fb_loop_snap *snaps = malloc(c->nloops * sizeof *snaps);
    if (!snaps) return;
    for (uint32_t i = 0; i < c->nloops; i++) fb_loop_snapshot(&x->loops[i].L, &snaps[i]);
    static const char *const fam[][3] = {
        {"fieldbridge_control_loop_input_age_seconds", "gauge", "Age of the measurement the loop last used."},
        {"fieldbridge_control_loop_pv", "gauge", "The loop's measurement (engineering units)."},
        {"fieldbridge_control_loop_sp", "gauge", "The loop's working set point."},
        {"fieldbridge_control_loop_output", "gauge", "The loop's output."},
        {"fieldbridge_control_loop_auto", "gauge", "1 in automatic, 0 in manual."},
        {"fieldbridge_control_loop_ok", "gauge", "1 when the loop runs normally, 0 in a fallback or safe state."},
        {"fieldbridge_control_loop_saturated", "gauge", "1 or -1 while the output is held at its high or low limit."},
        {"fieldbridge_control_loop_writes_total", "counter", "Output writes queued."},
        {"fieldbridge_control_loop_write_errors_total", "counter", "Output writes refused or failed."},
    };
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        family(b, fam[f][0], fam[f][1], fam[f][2]);
        for (uint32_t i = 0; i < c->nloops; i++) {
            const struct fb_loop_snap *s = &snaps[i];
            loop_label(b, fam[f][0], c->loops[i].name);
            switch (f) {
                case 0: put_num(b, s->have_pv ? s->pv_age / 1e9 : NAN); break;
                case 1: put_num(b, s->have_pv && !fb_q_bad(s->pv_q) ? s->pv : NAN); break;
                case 2: put_num(b, s->sp); break;
                case 3: put_num(b, s->out); break;
                case 4: fb_buf_putc(b, s->mode == FB_MODE_AUTO ? '1' : '0'); break;
                case 5: fb_buf_putc(b, s->state == FB_LS_OK ? '1' : '0'); break;
                case 6: fb_buf_printf(b, "%d", s->sat); break;
                case 7: fb_buf_printf(b, "%" PRIu64, atomic_load(&x->loops[i].writes)); break;
                case 8: fb_buf_printf(b, "%" PRIu64, atomic_load(&x->loops[i].write_errors)); break;
            }
            fb_buf_putc(b, '\n');
        }
    }
    free(snaps);
}

static void json_num(struct fb_buf *b, double v)
{
    if (isfinite(v))
        fb_json_double(b, v);
    else
        fb_buf_puts(b, "null");
}

static void ctl_status(void *state, struct fb_buf *b)
{
    struct ctl *x = state;
    const struct ctl_cfg *c = x->cfg;
    fb_buf_puts(b, "{\"period_ms\":");
    json_num(b, c->period_ns / 1e6);
    fb_buf_puts(b, ",\"realtime\":");
    fb_buf_puts(b, atomic_load(&x->realtime_on) ? "true" : "false");
    fb_buf_puts(b, ",\"cycles\":");
    fb_json_u64(b, atomic_load(&x->cycles));
    fb_buf_puts(b, ",\"overruns\":");
    fb_json_u64(b, atomic_load(&x->overruns));
    fb_buf_puts(b, ",\"jitter_us\":{\"p50\":");
    json_num(b, h_quantile(x, 0.5) * 1e6);
    fb_buf_puts(b, ",\"p99\":");
    json_num(b, h_quantile(x, 0.99) * 1e6);
    fb_buf_puts(b, ",\"max\":");
    json_num(b, atomic_load(&x->jitter_max_ns) / 1e3);
    uint64_t wc = atomic_load(&x->work_count);
    fb_buf_puts(b, "},\"cycle_us\":{\"mean\":");
    json_num(b, wc ? atomic_load(&x->work_sum_ns) / 1e3 / (double)wc : 0);
    fb_buf_puts(b, ",\"max\":");
    json_num(b, atomic_load(&x->work_max_ns) / 1e3);
    fb_buf_puts(b, "},\"watchdog\":{\"tripped\":");
    fb_buf_puts(b, atomic_load(&x->tripped) ? "true" : "false");
    fb_buf_puts(b, ",\"trips\":");
    fb_json_u64(b, atomic_load(&x->trips));
    fb_buf_puts(b, ",\"systemd\":");
    fb_buf_puts(b, x->sd_watchdog ? "true" : "false");
    fb_buf_puts(b, "},\"interlocks\":{");
    for (uint32_t i = 0; i < c->nilks; i++) {
        if (i) fb_buf_putc(b, ',');
        fb_json_cstr(b, c->ilks[i].name);
        fb_buf_puts(b, atomic_load(&x->ilks[i].active) ? ":true" : ":false");
    }
    fb_buf_puts(b, "},\"loops\":{");
    for (uint32_t i = 0; i < c->nloops; i++) {
        struct fb_loop_snap s;
        fb_loop_snapshot(&x->loops[i].L, &s);
        if (i) fb_buf_putc(b, ',');
        fb_json_cstr(b, c->loops[i].name);
        fb_buf_puts(b, ":{\"mode\":");
        fb_json_cstr(b, s.mode == FB_MODE_AUTO ? "auto" : "manual");
        fb_buf_puts(b, ",\"state\":");
        fb_json_cstr(b, fb_loop_state_names[s.state]);
        fb_buf_puts(b, ",\"pv\":");
        json_num(b, s.have_pv && !fb_q_bad(s.pv_q) ? s.pv : NAN);
        fb_buf_puts(b, ",\"sp\":");
        json_num(b, s.sp);
        fb_buf_puts(b, ",\"out\":");
        json_num(b, s.out);
        fb_buf_puts(b, ",\"saturation\":");
        fb_json_cstr(b, fb_loop_sat_name(s.sat));
        fb_buf_puts(b, ",\"input_age_ms\":");
        json_num(b, s.have_pv ? s.pv_age / 1e6 : NAN);
        if (s.interlock) {
            fb_buf_puts(b, ",\"interlock\":");
            fb_json_cstr(b, s.interlock);
        }
        fb_buf_putc(b, '}');
    }
    fb_buf_puts(b, "}}");
}

const struct fb_service fb_service_control = {
    .name = "control",
    .keys = k_control,
    .nested = k_nested,
    .cfg_load = ctl_cfg_load,
    .cfg_free = ctl_cfg_free,
    .describe = ctl_describe,
    .start = ctl_start,
    .stop = ctl_stop,
    .devices = ctl_devices,
    .bind = ctl_bind,
    .quiesce = ctl_quiesce,
    .handover = ctl_handover,
    .adopt = ctl_adopt,
    .metrics = ctl_metrics,
    .status = ctl_status,
};
