/* alarm.h — the ISA-18.2 alarm state machine of one alarm (alarm.c): the
 * condition with its deadband, the on/off delays, acknowledge, shelve and
 * suppression.  Pure functions over the alarm's configuration (model.h,
 * struct fb_alarm) and its live state, with the time passed in, so every
 * transition is unit-tested without threads or clocks.  The table of all
 * alarms, persistence and publication are alarms.c.
 *
 * States (docs/alarms.md), from the flags FB_AS_ACTIVE and FB_AS_UNACKED:
 *   normal             —                     raise → active/unacked
 *   active, unacked    ACTIVE|UNACKED        ack → active/acked;  clear → cleared/unacked
 *   active, acked      ACTIVE                clear → normal
 *   cleared, unacked   UNACKED               ack → normal;        raise → active/unacked
 * Shelved (FB_AS_SHELVED, by command, until a time) and suppressed
 * (FB_AS_SUPPRESSED, while the alarm's condition expression holds) are
 * orthogonal flags: the state machine keeps running under them, only what
 * is announced changes (alarms.c).
 */
#ifndef FB_ALARM_H
#define FB_ALARM_H
#include <stdbool.h>
#include <stdint.h>

#include "core/model.h"

struct fb_alarm_st {
    uint8_t flags;         /* FB_AS_* */
    bool cond;             /* the condition at the last evaluation, deadband applied */
    int64_t pend_ns;       /* monotonic: since when cond differs from ACTIVE (0 = no delay running) */
    int64_t since;         /* UTC ns: when it last became active (0 = never) */
    int64_t shelved_until; /* UTC ns, while SHELVED */
    double value;          /* the watched value at the last evaluation (NaN: none) */
    double prev;           /* rate of change: the previous usable sample */
    int64_t prev_ts;
    bool have_prev;
};

/* A fresh state (normal), or one restored from the journal: cond follows ACTIVE. */
void fb_alarm_st_init(struct fb_alarm_st *st, uint8_t flags, int64_t since, int64_t shelved_until, double value);

/* The condition of a limit, deviation, rate-of-change, digital or
 * bad-quality alarm for a new sample (value v, quality q, source time ts in
 * UTC ns; sp/sp_q the setpoint's for a deviation alarm): 1 true, 0 false,
 * -1 unknown (the value is Bad, the setpoint has none, the first sample of
 * a rate): the alarm then keeps its state.  Updates st->cond and st->value. */
int fb_alarm_cond(const struct fb_alarm *a, struct fb_alarm_st *st, double v, uint32_t q, int64_t ts, double sp,
                  uint32_t sp_q);

/* Apply a condition (1/0; -1 does nothing) at monotonic time now and UTC
 * time wall: FB_AE_RAISED, FB_AE_CLEARED, or FB_AE_NONE while a delay runs
 * or nothing changes. */
int fb_alarm_apply(const struct fb_alarm *a, struct fb_alarm_st *st, int cond, int64_t now, int64_t wall);

/* Timers: a delay that ran out (FB_AE_RAISED/CLEARED) or a shelve that
 * expired (FB_AE_UNSHELVED); FB_AE_NONE when nothing is due.  Call until it
 * returns FB_AE_NONE. */
int fb_alarm_due(const struct fb_alarm *a, struct fb_alarm_st *st, int64_t now, int64_t wall);
/* When the running delay ends (monotonic), 0 when none runs. */
int64_t fb_alarm_deadline(const struct fb_alarm *a, const struct fb_alarm_st *st);

/* Operator actions: the event, or a negative error (FB_EINVAL with a reason
 * in *why: "not unacknowledged", "not shelved"). */
int fb_alarm_ack(struct fb_alarm_st *st, const char **why);
int fb_alarm_shelve(struct fb_alarm_st *st, int64_t until);
int fb_alarm_unshelve(struct fb_alarm_st *st, const char **why);
/* Suppression condition changed: FB_AE_SUPPRESSED / FB_AE_UNSUPPRESSED / FB_AE_NONE. */
int fb_alarm_suppress(struct fb_alarm_st *st, bool on);

/* Whether the alarm counts for its device (NE107, active count): active,
 * not shelved, not suppressed. */
static inline bool fb_alarm_counts(uint8_t flags)
{
    return (flags & FB_AS_ACTIVE) && !(flags & (FB_AS_SHELVED | FB_AS_SUPPRESSED));
}

/* Names, as the config writes them and the JSON shows them. */
const char *fb_alarm_kind_name(int kind);   /* "hi", "deviation", "bad_quality", … */
int fb_alarm_kind_parse(const char *s);     /* -1 when unknown */
const char *fb_alarm_prio_name(int prio);   /* "low" … "urgent" */
int fb_alarm_prio_parse(const char *s);     /* -1 when unknown */
uint16_t fb_alarm_prio_severity(int prio);  /* 250, 500, 700, 900 */
const char *fb_alarm_event_name(int event); /* "raised", "acknowledged", … */
const char *fb_ne107_name(int cat);         /* "Maintenance required", … */
int fb_ne107_parse(const char *s);          /* "maintenance", "out_of_spec", "check", "failure"; -1 */
/* "active_unacked", "active_acked", "cleared_unacked", "normal" */
const char *fb_alarm_state_name(uint8_t flags);
#endif
