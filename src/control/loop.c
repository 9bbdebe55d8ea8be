/* loop.c — one cycle of a control loop (loop.h has the order of operations). */
#include "control/loop.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"

const char *const fb_loop_state_names[] = {"init",      "ok",         "stale",       "comm_loss",
                                           "interlock", "north_loss", "output_lost", "stopped"};
const char *const fb_loop_field_names[] = {"pv",    "sp",         "sp_target", "out", "mode",
                                           "state", "saturation", "kp",        "ti",  "td"};

static double clampd(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

const char *fb_loop_sat_name(int sat) { return sat > 0 ? "high" : sat < 0 ? "low" : "none"; }

static double sp_clamp(const struct fb_loop_cfg *c, double sp)
{
    if (c->has_sp_min && sp < c->sp_min) sp = c->sp_min;
    if (c->has_sp_max && sp > c->sp_max) sp = c->sp_max;
    return sp;
}

static void publish(struct fb_loop *L, const struct fb_loop_in *in)
{
    pthread_mutex_lock(&L->snap_mu);
    struct fb_loop_snap *s = &L->snap;
    if (in) {
        s->have_pv = in->have_pv;
        s->pv = in->pv;
        s->pv_q = in->pv_q;
        s->pv_age = in->pv_age;
        s->interlock = in->interlock;
    }
    s->sp = L->sp;
    s->sp_target = L->sp_target;
    s->out = L->out;
    s->kp = L->pid.kp;
    s->ti = L->pid.ti;
    s->td = L->pid.td;
    s->mode = L->mode;
    s->state = L->state;
    s->sat = L->state == FB_LS_OK && L->mode == FB_MODE_AUTO ? L->st.sat : 0;
    s->cycles = L->cycles;
    pthread_mutex_unlock(&L->snap_mu);
}

void fb_loop_init(struct fb_loop *L, const struct fb_loop_cfg *c)
{
    memset(L, 0, sizeof *L);
    L->cfg = c;
    L->pid = c->pid;
    L->mode = c->mode0;
    L->state = FB_LS_INIT;
    L->sp = L->sp_target = sp_clamp(c, c->sp0);
    L->out = L->man_out = clampd(c->out0, c->pid.lo, c->pid.hi);
    fb_pid_reset(&L->pid, &L->st, L->out);
    pthread_mutex_init(&L->cmd_mu, NULL);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    /* the control thread may run SCHED_FIFO: a reader holding the snapshot must not stall it */
    pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT);
    pthread_mutex_init(&L->snap_mu, &a);
    pthread_mutexattr_destroy(&a);
    atomic_init(&L->cmd_pending, false);
    atomic_init(&L->held_by, NULL);
    publish(L, NULL);
}

void fb_loop_destroy(struct fb_loop *L)
{
    pthread_mutex_destroy(&L->cmd_mu);
    pthread_mutex_destroy(&L->snap_mu);
}

void fb_loop_snapshot(struct fb_loop *L, struct fb_loop_snap *out)
{
    pthread_mutex_lock(&L->snap_mu);
    *out = L->snap;
    pthread_mutex_unlock(&L->snap_mu);
}

/* Step 1: the commands that arrived since the last cycle. */
static void apply_commands(struct fb_loop *L, const struct fb_loop_in *in)
{
    if (!atomic_load_explicit(&L->cmd_pending, memory_order_acquire)) return;
    pthread_mutex_lock(&L->cmd_mu);
    struct fb_loop_cmd c = L->cmd;
    L->cmd.mask = 0;
    atomic_store_explicit(&L->cmd_pending, false, memory_order_relaxed);
    pthread_mutex_unlock(&L->cmd_mu);
    const char *name = L->cfg->name;
    if (in->interlock) {
        fb_warn(name, NULL, "command dropped: interlock %s became active before it could apply", in->interlock);
        return;
    }
    double y = L->have_good ? L->pv_good : in->pv;
    if (c.mask & (FB_LC_KP | FB_LC_TI | FB_LC_TD)) {
        struct fb_pid_cfg nw = L->pid;
        if (c.mask & FB_LC_KP) nw.kp = c.kp;
        if (c.mask & FB_LC_TI) nw.ti = c.ti;
        if (c.mask & FB_LC_TD) nw.td = c.td;
        fb_pid_retune(&L->pid, &nw, &L->st, L->sp, y);
        fb_info(name, NULL, "tuning: kp %g → %g, ti %gs → %gs, td %gs → %gs", L->pid.kp, nw.kp, L->pid.ti, nw.ti,
                L->pid.td, nw.td);
        L->pid = nw;
    }
    if (c.mask & FB_LC_MODE && c.mode != L->mode) {
        if (c.mode == FB_MODE_MANUAL) L->man_out = L->out; /* auto → manual: the output stays */
        L->mode = c.mode;                                  /* manual → auto: the PID tracked it */
        fb_info(name, NULL, "mode %s", c.mode == FB_MODE_AUTO ? "auto" : "manual");
    }
    if (c.mask & FB_LC_SP) {
        L->sp_target = sp_clamp(L->cfg, c.sp);
        if (L->cfg->sp_rate <= 0) L->sp = L->sp_target;
    }
    if (c.mask & FB_LC_OUT && L->mode == FB_MODE_MANUAL) L->man_out = clampd(c.out, L->pid.lo, L->pid.hi);
}

/* The manual output moves no faster than the rate limit. */
static double rate_limited(const struct fb_loop *L, double u, double h)
{
    double r = L->pid.rate;
    if (r <= 0 || L->state == FB_LS_INIT) return u;
    if (u > L->out + r * h) return L->out + r * h;
    if (u < L->out - r * h) return L->out - r * h;
    return u;
}

/* An action for a condition (stale, north loss) that puts the loop in
 * `state`: the output it gives.  A safe value is written on entry even if
 * the last written output was equal (the device may have been changed). */
static double act(struct fb_loop *L, int a, int state, bool *force)
{
    switch (a) {
        case FB_ACT_SAFE: *force = *force || L->state != state; return L->cfg->safe;
        case FB_ACT_MANUAL:
            if (L->mode != FB_MODE_MANUAL) {
                L->mode = FB_MODE_MANUAL;
                L->man_out = L->out;
                fb_warn(L->cfg->name, NULL, "switched to manual at %g", L->out);
            }
            return L->man_out;
        default: return L->out; /* hold */
    }
}

double fb_loop_cycle(struct fb_loop *L, const struct fb_loop_in *in, bool *force)
{
    const struct fb_loop_cfg *c = L->cfg;
    const char *name = c->name;
    *force = false;
    double h = in->h > 0 ? in->h : (double)c->cycle_ns / 1e9;
    atomic_store_explicit(&L->held_by, in->interlock, memory_order_relaxed);
    apply_commands(L, in);
    if (in->watchdog_trip) {
        L->mode = FB_MODE_MANUAL;
        L->man_out = c->safe;
        fb_warn(name, NULL, "watchdog tripped: manual at the safe value %g", c->safe);
    }
    if (!in->interlock && L->interlock_was) {
        fb_info(name, NULL, "interlock %s released%s", L->interlock_was,
                L->interlock_manual_was ? ": manual at the safe value" : "");
        if (L->interlock_manual_was) {
            L->mode = FB_MODE_MANUAL;
            L->man_out = c->safe;
        }
    }
    L->interlock_was = in->interlock;
    L->interlock_manual_was = in->interlock_manual;

    bool pv_ok = in->have_pv && !fb_q_bad(in->pv_q) && !in->pv_lost && isfinite(in->pv) &&
                 in->pv_age <= (int64_t)c->stale_cycles * c->cycle_ns;
    if (pv_ok) {
        L->pv_good = in->pv;
        L->have_good = true;
    }
    double y = pv_ok ? in->pv : L->have_good ? L->pv_good : (isfinite(in->pv) ? in->pv : 0);

    /* 3. the set point */
    if (c->has_sp_tag && in->have_sp && isfinite(in->sp_in)) L->sp_target = sp_clamp(c, in->sp_in);
    if (c->sp_track && L->mode == FB_MODE_MANUAL && pv_ok) L->sp = L->sp_target = sp_clamp(c, y);
    if (c->sp_rate > 0 && L->sp != L->sp_target) {
        double step = c->sp_rate * h;
        if (L->sp < L->sp_target)
            L->sp = L->sp + step > L->sp_target ? L->sp_target : L->sp + step;
        else
            L->sp = L->sp - step < L->sp_target ? L->sp_target : L->sp - step;
    } else {
        L->sp = L->sp_target;
    }

    /* 4. the first condition that holds */
    int state;
    double u;
    bool auto_step = false;
    if (L->state == FB_LS_INIT && !pv_ok && !in->interlock && !in->pv_lost && L->cycles < c->stale_cycles) {
        /* start-up: the first measurement has `stale` cycles to arrive; nothing is written before */
        L->cycles++;
        publish(L, in);
        return L->out;
    }
    if (in->interlock) {
        state = FB_LS_INTERLOCK;
        u = c->safe;
        *force = L->state != FB_LS_INTERLOCK;
    } else if (in->pv_lost) {
        state = FB_LS_COMM_LOSS;
        u = c->safe;
        *force = L->state != FB_LS_COMM_LOSS;
    } else if (!pv_ok) {
        state = FB_LS_STALE;
        u = act(L, c->fallback, FB_LS_STALE, force);
    } else if (in->north_lost && c->on_north_loss != FB_ACT_NONE) {
        state = FB_LS_NORTH_LOSS;
        u = act(L, c->on_north_loss, FB_LS_NORTH_LOSS, force);
    } else if (in->out_lost) {
        state = FB_LS_OUTPUT_LOST;
        u = L->out;
    } else if (L->mode == FB_MODE_AUTO) {
        state = FB_LS_OK;
        auto_step = true;
        u = 0;
    } else {
        state = FB_LS_OK;
        u = rate_limited(L, L->man_out, h);
    }
    if (state != L->state && L->state != FB_LS_INIT) {
        if (state == FB_LS_OK)
            fb_info(name, NULL, "back to normal (%s)", L->mode == FB_MODE_AUTO ? "auto" : "manual");
        else if (state == FB_LS_STALE)
            fb_warn(name, NULL, "measurement %s (age %.0f ms, limit %.0f ms): fallback %s",
                    !in->have_pv         ? "has no value"
                    : fb_q_bad(in->pv_q) ? "is bad"
                                         : "is stale",
                    in->pv_age / 1e6, (double)c->stale_cycles * (double)c->cycle_ns / 1e6,
                    c->fallback == FB_ACT_SAFE     ? "safe value"
                    : c->fallback == FB_ACT_MANUAL ? "manual"
                                                   : "hold");
        else if (state == FB_LS_COMM_LOSS)
            fb_warn(name, NULL, "measurement's connection lost: safe value %g", c->safe);
        else if (state == FB_LS_INTERLOCK)
            fb_warn(name, NULL, "interlock %s active: safe value %g", in->interlock, c->safe);
        else
            fb_warn(name, NULL, "%s", fb_loop_state_names[state]);
    }
    if (auto_step) {
        u = fb_pid_step(&L->pid, &L->st, L->sp, y, h);
    } else {
        u = fb_pid_track(&L->pid, &L->st, L->sp, y, u, h);
    }
    if (L->state == FB_LS_INIT) *force = true; /* the first output is always written */
    L->state = state;
    L->out = u;
    L->cycles++;
    publish(L, in);
    return u;
}

void fb_loop_stopped(struct fb_loop *L)
{
    L->state = FB_LS_STOPPED;
    L->out = L->cfg->safe;
    publish(L, NULL);
}

int fb_loop_command(struct fb_loop *L, int field, const struct fb_value *v, struct fb_err *err)
{
    const struct fb_loop_cfg *c = L->cfg;
    const char *ilk = atomic_load_explicit(&L->held_by, memory_order_relaxed);
    if (ilk) return fb_err_set(err, FB_EACCES, "interlock %s is active: commands to loop %s are blocked", ilk, c->name);
    double d = 0;
    int mode = -1;
    if (field == FB_LF_MODE) {
        if (v->type != FB_T_STRING) return fb_err_set(err, FB_EINVAL, "mode: expected \"auto\" or \"manual\"");
        if (v->s.len == 4 && !strncasecmp(v->s.p, "auto", 4))
            mode = FB_MODE_AUTO;
        else if (v->s.len == 6 && !strncasecmp(v->s.p, "manual", 6))
            mode = FB_MODE_MANUAL;
        else
            return fb_err_set(err, FB_EINVAL, "mode: expected \"auto\" or \"manual\", got \"%.*s\"",
                              (int)(v->s.len > 20 ? 20 : v->s.len), v->s.p);
    } else if (!fb_value_to_double(v, &d) || !isfinite(d)) {
        return fb_err_set(err, FB_EINVAL, "%s: expected a number", fb_loop_field_names[field]);
    }
    pthread_mutex_lock(&L->cmd_mu);
    /* the mode this command sees: one queued before it, else the loop's */
    int cur_mode;
    if (L->cmd.mask & FB_LC_MODE) {
        cur_mode = L->cmd.mode;
    } else {
        pthread_mutex_lock(&L->snap_mu); /* never taken with cmd_mu the other way round */
        cur_mode = L->snap.mode;
        pthread_mutex_unlock(&L->snap_mu);
    }
    int rc = 0;
    switch (field) {
        case FB_LF_MODE:
            L->cmd.mode = mode;
            L->cmd.mask |= FB_LC_MODE;
            break;
        case FB_LF_SP:
            if (c->has_sp_tag)
                rc = fb_err_set(err, FB_EACCES, "the set point of loop %s comes from %s", c->name, c->sp_name);
            else if (c->sp_track && cur_mode == FB_MODE_MANUAL)
                rc = fb_err_set(err, FB_EACCES, "in manual the set point tracks the measurement (sp_track)");
            else {
                L->cmd.sp = d;
                L->cmd.mask |= FB_LC_SP;
            }
            break;
        case FB_LF_OUT:
            if (cur_mode != FB_MODE_MANUAL)
                rc = fb_err_set(err, FB_EACCES, "out of loop %s can be written in manual mode only (mode is auto)",
                                c->name);
            else {
                L->cmd.out = d;
                L->cmd.mask |= FB_LC_OUT;
            }
            break;
        case FB_LF_KP:
            L->cmd.kp = d;
            L->cmd.mask |= FB_LC_KP;
            break;
        case FB_LF_TI:
            L->cmd.ti = d;
            L->cmd.mask |= FB_LC_TI;
            break;
        case FB_LF_TD:
            L->cmd.td = d;
            L->cmd.mask |= FB_LC_TD;
            break;
        default: rc = fb_err_set(err, FB_EACCES, "%s is read-only", fb_loop_field_names[field]);
    }
    if (rc == 0) atomic_store_explicit(&L->cmd_pending, true, memory_order_release);
    pthread_mutex_unlock(&L->cmd_mu);
    return rc;
}
