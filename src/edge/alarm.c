/* alarm.c — one alarm's state machine (alarm.h): condition with deadband,
 * on/off delays, acknowledge, shelve, suppression.
 *
 * Deadband (hysteresis) works on the condition, not on the alarm state: a
 * HI alarm's condition turns true when the value rises above the limit and
 * false only when it falls below limit - deadband, so a value that hovers
 * at the limit cannot make the condition chatter.  Delays then work on the
 * condition: it must hold for on_delay before the alarm is raised and be
 * gone for off_delay before it clears; a condition that flips back before
 * its delay ran out leaves the alarm as it was.  A Bad value (or a missing
 * setpoint) gives no condition at all, and the alarm keeps its state and
 * any running delay: a sensor that fails is the bad-quality alarm's
 * business, not a reason to clear or raise a limit alarm.
 */
#include "edge/alarm.h"

#include <math.h>
#include <string.h>

void fb_alarm_st_init(struct fb_alarm_st *st, uint8_t flags, int64_t since, int64_t shelved_until, double value)
{
    memset(st, 0, sizeof *st);
    st->flags = flags;
    st->cond = (flags & FB_AS_ACTIVE) != 0;
    st->since = since;
    st->shelved_until = (flags & FB_AS_SHELVED) ? shelved_until : 0;
    st->value = value;
}

/* Hysteresis: raise when `over` is past the limit, clear only when the
 * value is back by the deadband. */
static int hyst_above(bool cond, double x, double limit, double db) { return cond ? !(x < limit - db) : x > limit; }
static int hyst_below(bool cond, double x, double limit, double db) { return cond ? !(x > limit + db) : x < limit; }

int fb_alarm_cond(const struct fb_alarm *a, struct fb_alarm_st *st, double v, uint32_t q, int64_t ts, double sp,
                  uint32_t sp_q)
{
    int c = -1;
    bool usable = !fb_q_bad(q) && isfinite(v);
    if (usable || a->kind == FB_AK_BAD) st->value = usable ? v : NAN;
    switch (a->kind) {
        case FB_AK_BAD: c = fb_q_bad(q); break;
        case FB_AK_HIHI:
        case FB_AK_HI:
            if (usable) c = hyst_above(st->cond, v, a->limit, a->deadband);
            break;
        case FB_AK_LO:
        case FB_AK_LOLO:
            if (usable) c = hyst_below(st->cond, v, a->limit, a->deadband);
            break;
        case FB_AK_DEVIATION:
            if (usable && !fb_q_bad(sp_q) && isfinite(sp))
                c = hyst_above(st->cond, fabs(v - sp), a->limit, a->deadband);
            break;
        case FB_AK_ROC:
            if (!usable) break;
            if (st->have_prev && ts > st->prev_ts) {
                double rate = fabs(v - st->prev) / ((double)(ts - st->prev_ts) / 1e9);
                c = hyst_above(st->cond, rate, a->limit, a->deadband);
            }
            if (!st->have_prev || ts > st->prev_ts) {
                st->prev = v;
                st->prev_ts = ts;
                st->have_prev = true;
            }
            break;
        case FB_AK_DIGITAL:
            if (usable) c = v == a->when;
            break;
        default: break; /* external: set by code through fb_alarm_apply */
    }
    if (c >= 0) st->cond = c != 0;
    return c;
}

static int transition(struct fb_alarm_st *st, bool on, int64_t wall)
{
    st->pend_ns = 0;
    if (on) {
        st->flags |= FB_AS_ACTIVE | FB_AS_UNACKED;
        st->since = wall;
        return FB_AE_RAISED;
    }
    st->flags &= (uint8_t)~FB_AS_ACTIVE;
    return FB_AE_CLEARED;
}

int fb_alarm_apply(const struct fb_alarm *a, struct fb_alarm_st *st, int cond, int64_t now, int64_t wall)
{
    if (cond < 0) return FB_AE_NONE;
    st->cond = cond != 0;
    bool active = (st->flags & FB_AS_ACTIVE) != 0;
    if (st->cond == active) {
        st->pend_ns = 0; /* the condition went back before its delay ran out */
        return FB_AE_NONE;
    }
    int64_t delay = st->cond ? a->on_delay_ns : a->off_delay_ns;
    if (delay <= 0) return transition(st, st->cond, wall);
    if (!st->pend_ns) {
        st->pend_ns = now ? now : 1;
        return FB_AE_NONE;
    }
    if (now - st->pend_ns >= delay) return transition(st, st->cond, wall);
    return FB_AE_NONE;
}

int64_t fb_alarm_deadline(const struct fb_alarm *a, const struct fb_alarm_st *st)
{
    if (!st->pend_ns) return 0;
    return st->pend_ns + (st->cond ? a->on_delay_ns : a->off_delay_ns);
}

int fb_alarm_due(const struct fb_alarm *a, struct fb_alarm_st *st, int64_t now, int64_t wall)
{
    bool active = (st->flags & FB_AS_ACTIVE) != 0;
    if (st->pend_ns && st->cond != active && now >= fb_alarm_deadline(a, st)) return transition(st, st->cond, wall);
    if ((st->flags & FB_AS_SHELVED) && st->shelved_until && wall >= st->shelved_until) {
        st->flags &= (uint8_t)~FB_AS_SHELVED;
        st->shelved_until = 0;
        return FB_AE_UNSHELVED;
    }
    return FB_AE_NONE;
}

int fb_alarm_ack(struct fb_alarm_st *st, const char **why)
{
    if (!(st->flags & FB_AS_UNACKED)) {
        if (why) *why = "not unacknowledged";
        return FB_EINVAL;
    }
    st->flags &= (uint8_t)~FB_AS_UNACKED;
    return FB_AE_ACKED;
}

int fb_alarm_shelve(struct fb_alarm_st *st, int64_t until)
{
    st->flags |= FB_AS_SHELVED;
    st->shelved_until = until;
    return FB_AE_SHELVED;
}

int fb_alarm_unshelve(struct fb_alarm_st *st, const char **why)
{
    if (!(st->flags & FB_AS_SHELVED)) {
        if (why) *why = "not shelved";
        return FB_EINVAL;
    }
    st->flags &= (uint8_t)~FB_AS_SHELVED;
    st->shelved_until = 0;
    return FB_AE_UNSHELVED;
}

int fb_alarm_suppress(struct fb_alarm_st *st, bool on)
{
    bool was = (st->flags & FB_AS_SUPPRESSED) != 0;
    if (was == on) return FB_AE_NONE;
    if (on) {
        st->flags |= FB_AS_SUPPRESSED;
        return FB_AE_SUPPRESSED;
    }
    st->flags &= (uint8_t)~FB_AS_SUPPRESSED;
    return FB_AE_UNSUPPRESSED;
}

/* ------------------------------------------------------------------ names */
static const char *const kinds[FB_AK__COUNT] = {
    [FB_AK_HIHI] = "hihi",       [FB_AK_HI] = "hi",           [FB_AK_LO] = "lo",
    [FB_AK_LOLO] = "lolo",       [FB_AK_ROC] = "roc",         [FB_AK_DEVIATION] = "deviation",
    [FB_AK_DIGITAL] = "digital", [FB_AK_BAD] = "bad_quality", [FB_AK_EXTERNAL] = "external",
};

const char *fb_alarm_kind_name(int kind) { return kind >= 0 && kind < FB_AK__COUNT ? kinds[kind] : "?"; }

int fb_alarm_kind_parse(const char *s)
{
    for (int i = 0; s && i < FB_AK__COUNT; i++)
        if (!strcmp(kinds[i], s)) return i;
    return -1;
}

static const char *const prios[] = {"low", "medium", "high", "urgent"};
static const uint16_t prio_sev[] = {250, 500, 700, 900};

const char *fb_alarm_prio_name(int p) { return p >= 0 && p < 4 ? prios[p] : "?"; }
uint16_t fb_alarm_prio_severity(int p) { return p >= 0 && p < 4 ? prio_sev[p] : 500; }

int fb_alarm_prio_parse(const char *s)
{
    for (int i = 0; s && i < 4; i++)
        if (!strcmp(prios[i], s)) return i;
    return -1;
}

static const char *const events[FB_AE__COUNT] = {
    [FB_AE_NONE] = "none",
    [FB_AE_RAISED] = "raised",
    [FB_AE_CLEARED] = "cleared",
    [FB_AE_ACKED] = "acknowledged",
    [FB_AE_SHELVED] = "shelved",
    [FB_AE_UNSHELVED] = "unshelved",
    [FB_AE_SUPPRESSED] = "suppressed",
    [FB_AE_UNSUPPRESSED] = "unsuppressed",
    [FB_AE_FLOOD] = "flood",
    [FB_AE_MESSAGE] = "message",
};

const char *fb_alarm_event_name(int e) { return e >= 0 && e < FB_AE__COUNT ? events[e] : "?"; }

static const char *const ne107_names[] = {"Maintenance required", "Out of specification", "Function check", "Failure"};
static const char *const ne107_keys[] = {"maintenance", "out_of_spec", "check", "failure"};

const char *fb_ne107_name(int c) { return c >= 0 && c < 4 ? ne107_names[c] : "?"; }

int fb_ne107_parse(const char *s)
{
    for (int i = 0; s && i < 4; i++)
        if (!strcmp(ne107_keys[i], s)) return i;
    return -1;
}

const char *fb_alarm_state_name(uint8_t flags)
{
    bool act = flags & FB_AS_ACTIVE, un = flags & FB_AS_UNACKED;
    return act ? (un ? "active_unacked" : "active_acked") : (un ? "cleared_unacked" : "normal");
}
