/* test_alarm.c — one alarm's ISA-18.2 state machine (src/edge/alarm.c) and
 * the alarm journal (src/edge/alarm_journal.c): every state transition,
 * hysteresis, on/off delays, Bad values freezing a limit alarm, rate of
 * change, deviation, digital and bad-quality conditions, acknowledge,
 * shelve with expiry, suppression; the journal across reopen, with a torn
 * tail, a corrupt record and a foreign file. */
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
#include <sys/stat.h>
#include <unistd.h>

#include "edge/alarm.h"
#include "edge/alarm_journal.h"

#define S 1000000000LL /* one second in ns */

static struct fb_alarm cfg(int kind, double limit, double deadband)
{
    struct fb_alarm a;
    memset(&a, 0, sizeof a);
    a.kind = (uint8_t)kind;
    a.limit = limit;
    a.deadband = deadband;
    a.when = 1;
    a.setpoint = UINT32_MAX;
    return a;
}

/* One sample at monotonic/UTC second t: the event. */
static int feed(const struct fb_alarm *a, struct fb_alarm_st *st, double v, uint32_t q, int64_t t)
{
    int c = fb_alarm_cond(a, st, v, q, t * S, NAN, FB_Q_BAD);
    return fb_alarm_apply(a, st, c, t * S, t * S);
}

static void test_hi_states(void **state)
{
    (void)state;
    struct fb_alarm a = cfg(FB_AK_HI, 80, 0);
    struct fb_alarm_st st;
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    assert_int_equal(feed(&a, &st, 70, FB_Q_GOOD, 1), FB_AE_NONE);
    assert_string_equal(fb_alarm_state_name(st.flags), "normal");
    /* raise: active, unacknowledged, with its time and value */
    assert_int_equal(feed(&a, &st, 85, FB_Q_GOOD, 2), FB_AE_RAISED);
    assert_int_equal(st.flags, FB_AS_ACTIVE | FB_AS_UNACKED);
    assert_int_equal(st.since, 2 * S);
    assert_true(st.value == 85);
    assert_int_equal(feed(&a, &st, 90, FB_Q_GOOD, 3), FB_AE_NONE); /* still active: no new event */
    /* ack while active → active/acked */
    const char *why = NULL;
    assert_int_equal(fb_alarm_ack(&st, &why), FB_AE_ACKED);
    assert_string_equal(fb_alarm_state_name(st.flags), "active_acked");
    assert_int_equal(fb_alarm_ack(&st, &why), FB_EINVAL); /* nothing left to acknowledge */
    assert_string_equal(why, "not unacknowledged");
    /* clear while acked → normal */
    assert_int_equal(feed(&a, &st, 60, FB_Q_GOOD, 4), FB_AE_CLEARED);
    assert_int_equal(st.flags, 0);
    /* raise, clear before the ack → cleared/unacked; ack → normal */
    assert_int_equal(feed(&a, &st, 81, FB_Q_GOOD, 5), FB_AE_RAISED);
    assert_int_equal(feed(&a, &st, 79, FB_Q_GOOD, 6), FB_AE_CLEARED);
    assert_string_equal(fb_alarm_state_name(st.flags), "cleared_unacked");
    /* re-raise from cleared/unacked → active/unacked again, new since */
    assert_int_equal(feed(&a, &st, 99, FB_Q_GOOD, 7), FB_AE_RAISED);
    assert_int_equal(st.since, 7 * S);
    assert_int_equal(feed(&a, &st, 10, FB_Q_GOOD, 8), FB_AE_CLEARED);
    assert_int_equal(fb_alarm_ack(&st, &why), FB_AE_ACKED);
    assert_string_equal(fb_alarm_state_name(st.flags), "normal");
}

static void test_lo_and_limits(void **state)
{
    (void)state;
    struct fb_alarm a = cfg(FB_AK_LOLO, 5, 1);
    struct fb_alarm_st st;
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    assert_int_equal(feed(&a, &st, 5, FB_Q_GOOD, 1), FB_AE_NONE); /* at the limit: not below */
    assert_int_equal(feed(&a, &st, 4.9, FB_Q_GOOD, 2), FB_AE_RAISED);
    assert_int_equal(feed(&a, &st, 5.5, FB_Q_GOOD, 3), FB_AE_NONE); /* inside the deadband */
    assert_int_equal(feed(&a, &st, 6, FB_Q_GOOD, 4), FB_AE_NONE);   /* exactly limit + deadband: not above */
    assert_int_equal(feed(&a, &st, 6.01, FB_Q_GOOD, 5), FB_AE_CLEARED);
}

/* Hysteresis: a value hovering at the limit raises once, not at every crossing. */
static void test_deadband(void **state)
{
    (void)state;
    struct fb_alarm a = cfg(FB_AK_HI, 80, 2);
    struct fb_alarm_st st;
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    static const double wave[] = {79, 80.5, 79.5, 80.2, 78.5, 80.1, 79.9, 78.1, 77.99, 78.5, 80.01};
    int raised = 0, cleared = 0;
    for (size_t i = 0; i < sizeof wave / sizeof wave[0]; i++) {
        int ev = feed(&a, &st, wave[i], FB_Q_GOOD, (int64_t)i + 1);
        raised += ev == FB_AE_RAISED;
        cleared += ev == FB_AE_CLEARED;
        if (ev == FB_AE_CLEARED) assert_true(wave[i] < 78);
    }
    assert_int_equal(raised, 2); /* at 80.5 and again at 80.01 after 77.99 */
    assert_int_equal(cleared, 1);
    /* the same wave without a deadband chatters */
    a.deadband = 0;
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    raised = 0;
    for (size_t i = 0; i < sizeof wave / sizeof wave[0]; i++)
        raised += feed(&a, &st, wave[i], FB_Q_GOOD, (int64_t)i + 1) == FB_AE_RAISED;
    assert_int_equal(raised, 4);
}

static void test_delays(void **state)
{
    (void)state;
    struct fb_alarm a = cfg(FB_AK_HI, 80, 0);
    a.on_delay_ns = 5 * S;
    a.off_delay_ns = 3 * S;
    struct fb_alarm_st st;
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    /* the condition must hold 5 s: a 3 s excursion raises nothing */
    assert_int_equal(feed(&a, &st, 90, FB_Q_GOOD, 10), FB_AE_NONE);
    assert_int_equal(fb_alarm_deadline(&a, &st), 15 * S);
    assert_int_equal(feed(&a, &st, 91, FB_Q_GOOD, 13), FB_AE_NONE);
    assert_int_equal(feed(&a, &st, 70, FB_Q_GOOD, 14), FB_AE_NONE); /* back before 15: delay cancelled */
    assert_int_equal(fb_alarm_deadline(&a, &st), 0);
    assert_int_equal(fb_alarm_due(&a, &st, 16 * S, 16 * S), FB_AE_NONE);
    assert_int_equal(st.flags, 0);
    /* held long enough: raised by the timer, without another sample, at the deadline */
    assert_int_equal(feed(&a, &st, 90, FB_Q_GOOD, 20), FB_AE_NONE);
    assert_int_equal(fb_alarm_due(&a, &st, 24 * S, 24 * S), FB_AE_NONE);
    assert_int_equal(fb_alarm_due(&a, &st, 25 * S, 25 * S), FB_AE_RAISED);
    assert_int_equal(st.since, 25 * S);
    /* or by a sample that arrives after the delay */
    /* off delay: gone for 3 s before it clears */
    assert_int_equal(feed(&a, &st, 50, FB_Q_GOOD, 30), FB_AE_NONE);
    assert_int_equal(feed(&a, &st, 90, FB_Q_GOOD, 31), FB_AE_NONE); /* back: off delay cancelled */
    assert_int_equal(feed(&a, &st, 50, FB_Q_GOOD, 32), FB_AE_NONE);
    assert_int_equal(feed(&a, &st, 50, FB_Q_GOOD, 34), FB_AE_NONE);
    assert_int_equal(feed(&a, &st, 50, FB_Q_GOOD, 35), FB_AE_CLEARED);
}

/* A Bad value neither clears nor raises a limit alarm; the bad-quality alarm reports it. */
static void test_bad_values(void **state)
{
    (void)state;
    struct fb_alarm hi = cfg(FB_AK_HI, 80, 0), badq = cfg(FB_AK_BAD, 0, 0);
    struct fb_alarm_st sh, sb;
    fb_alarm_st_init(&sh, 0, 0, 0, NAN);
    fb_alarm_st_init(&sb, 0, 0, 0, NAN);
    assert_int_equal(feed(&hi, &sh, 90, FB_Q_GOOD, 1), FB_AE_RAISED);
    assert_int_equal(feed(&badq, &sb, 90, FB_Q_GOOD, 1), FB_AE_NONE);
    assert_int_equal(feed(&hi, &sh, 0, FB_Q_BAD_COMM, 2), FB_AE_NONE);
    assert_true(sh.flags & FB_AS_ACTIVE);
    assert_true(sh.value == 90); /* the last usable value stays */
    assert_int_equal(feed(&badq, &sb, 0, FB_Q_BAD_COMM, 2), FB_AE_RAISED);
    assert_true(isnan(sb.value));
    assert_int_equal(feed(&hi, &sh, NAN, FB_Q_GOOD, 3), FB_AE_NONE);        /* NaN: no value either */
    assert_int_equal(feed(&hi, &sh, 50, FB_Q_UNCERTAIN, 4), FB_AE_CLEARED); /* uncertain values count */
    assert_int_equal(feed(&badq, &sb, 50, FB_Q_UNCERTAIN, 4), FB_AE_CLEARED);
}

static void test_roc(void **state)
{
    (void)state;
    struct fb_alarm a = cfg(FB_AK_ROC, 2, 0.5); /* more than 2 units per second */
    struct fb_alarm_st st;
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    assert_int_equal(feed(&a, &st, 10, FB_Q_GOOD, 1), FB_AE_NONE); /* first sample: no rate yet */
    assert_int_equal(feed(&a, &st, 11.5, FB_Q_GOOD, 2), FB_AE_NONE);
    assert_int_equal(feed(&a, &st, 14, FB_Q_GOOD, 3), FB_AE_RAISED);    /* 2.5/s */
    assert_int_equal(feed(&a, &st, 11, FB_Q_GOOD, 4), FB_AE_NONE);      /* -3/s: |rate| */
    assert_int_equal(feed(&a, &st, 12.7, FB_Q_GOOD, 5), FB_AE_NONE);    /* 1.7/s: inside the deadband */
    assert_int_equal(feed(&a, &st, 14.1, FB_Q_GOOD, 6), FB_AE_CLEARED); /* 1.4/s */
    /* the rate is per second of source time, not per sample */
    assert_int_equal(feed(&a, &st, 20, FB_Q_GOOD, 16), FB_AE_NONE);               /* 5.9 in 10 s */
    int c = fb_alarm_cond(&a, &st, 21, FB_Q_GOOD, 16 * S + S / 4, NAN, FB_Q_BAD); /* 1 in 0.25 s = 4/s */
    assert_int_equal(c, 1);
    /* a sample with the same or an older time gives no rate */
    assert_int_equal(fb_alarm_cond(&a, &st, 100, FB_Q_GOOD, 16 * S, NAN, FB_Q_BAD), -1);
}

static void test_deviation(void **state)
{
    (void)state;
    struct fb_alarm a = cfg(FB_AK_DEVIATION, 5, 1);
    struct fb_alarm_st st;
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    assert_int_equal(fb_alarm_cond(&a, &st, 54, FB_Q_GOOD, S, 50, FB_Q_GOOD), 0);
    assert_int_equal(fb_alarm_cond(&a, &st, 44, FB_Q_GOOD, S, 50, FB_Q_GOOD), 1);   /* |44 - 50| = 6 */
    assert_int_equal(fb_alarm_cond(&a, &st, 45.5, FB_Q_GOOD, S, 50, FB_Q_GOOD), 1); /* 4.5: deadband */
    assert_int_equal(fb_alarm_cond(&a, &st, 46.5, FB_Q_GOOD, S, 50, FB_Q_GOOD), 0);
    assert_int_equal(fb_alarm_cond(&a, &st, 46.5, FB_Q_GOOD, S, 50, FB_Q_BAD_COMM), -1); /* setpoint Bad */
    assert_int_equal(fb_alarm_cond(&a, &st, 46.5, FB_Q_GOOD, S, NAN, FB_Q_GOOD), -1);    /* none yet */
}

static void test_digital(void **state)
{
    (void)state;
    struct fb_alarm a = cfg(FB_AK_DIGITAL, 0, 0);
    struct fb_alarm_st st;
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    assert_int_equal(feed(&a, &st, 0, FB_Q_GOOD, 1), FB_AE_NONE);
    assert_int_equal(feed(&a, &st, 1, FB_Q_GOOD, 2), FB_AE_RAISED);
    assert_int_equal(feed(&a, &st, 0, FB_Q_GOOD, 3), FB_AE_CLEARED);
    a.when = 0; /* active when false (a burner that went off) */
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    assert_int_equal(feed(&a, &st, 1, FB_Q_GOOD, 1), FB_AE_NONE);
    assert_int_equal(feed(&a, &st, 0, FB_Q_GOOD, 2), FB_AE_RAISED);
    a.when = 3; /* a state code */
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    assert_int_equal(feed(&a, &st, 2, FB_Q_GOOD, 1), FB_AE_NONE);
    assert_int_equal(feed(&a, &st, 3, FB_Q_GOOD, 2), FB_AE_RAISED);
}

/* External alarms (scripts, feature monitors): the condition comes from code, the delays still apply. */
static void test_external(void **state)
{
    (void)state;
    struct fb_alarm a = cfg(FB_AK_EXTERNAL, 0, 0);
    a.on_delay_ns = 2 * S;
    struct fb_alarm_st st;
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    assert_int_equal(fb_alarm_cond(&a, &st, 5, FB_Q_GOOD, S, NAN, FB_Q_BAD), -1); /* values do nothing */
    assert_int_equal(fb_alarm_apply(&a, &st, 1, 10 * S, 10 * S), FB_AE_NONE);
    assert_int_equal(fb_alarm_apply(&a, &st, 1, 12 * S, 12 * S), FB_AE_RAISED);
    assert_int_equal(fb_alarm_apply(&a, &st, 0, 13 * S, 13 * S), FB_AE_CLEARED); /* no off delay */
}

static void test_shelve_suppress(void **state)
{
    (void)state;
    struct fb_alarm a = cfg(FB_AK_HI, 80, 0);
    struct fb_alarm_st st;
    fb_alarm_st_init(&st, 0, 0, 0, NAN);
    const char *why;
    assert_int_equal(fb_alarm_unshelve(&st, &why), FB_EINVAL);
    assert_string_equal(why, "not shelved");
    assert_int_equal(fb_alarm_shelve(&st, 100 * S), FB_AE_SHELVED);
    assert_int_equal(st.shelved_until, 100 * S);
    /* the state machine runs on under the shelve; the alarm does not count */
    assert_int_equal(feed(&a, &st, 90, FB_Q_GOOD, 10), FB_AE_RAISED);
    assert_false(fb_alarm_counts(st.flags));
    assert_int_equal(fb_alarm_due(&a, &st, 99 * S, 99 * S), FB_AE_NONE);
    assert_int_equal(fb_alarm_due(&a, &st, 100 * S, 100 * S), FB_AE_UNSHELVED); /* expired */
    assert_true(fb_alarm_counts(st.flags));
    assert_int_equal(fb_alarm_due(&a, &st, 101 * S, 101 * S), FB_AE_NONE);
    /* re-shelve extends; unshelve by command */
    assert_int_equal(fb_alarm_shelve(&st, 200 * S), FB_AE_SHELVED);
    assert_int_equal(fb_alarm_shelve(&st, 300 * S), FB_AE_SHELVED);
    assert_int_equal(st.shelved_until, 300 * S);
    assert_int_equal(fb_alarm_unshelve(&st, &why), FB_AE_UNSHELVED);
    assert_int_equal(st.shelved_until, 0);
    /* suppression: only changes are events */
    assert_int_equal(fb_alarm_suppress(&st, false), FB_AE_NONE);
    assert_int_equal(fb_alarm_suppress(&st, true), FB_AE_SUPPRESSED);
    assert_int_equal(fb_alarm_suppress(&st, true), FB_AE_NONE);
    assert_false(fb_alarm_counts(st.flags));
    assert_int_equal(fb_alarm_suppress(&st, false), FB_AE_UNSUPPRESSED);
    assert_true(fb_alarm_counts(st.flags));
}

/* A state restored from the journal: the hysteresis continues from it. */
static void test_restored(void **state)
{
    (void)state;
    struct fb_alarm a = cfg(FB_AK_HI, 80, 5);
    struct fb_alarm_st st;
    fb_alarm_st_init(&st, FB_AS_ACTIVE, 7 * S, 0, 88);
    assert_int_equal(feed(&a, &st, 78, FB_Q_GOOD, 10), FB_AE_NONE); /* inside the deadband: still active */
    assert_int_equal(st.since, 7 * S);
    assert_int_equal(feed(&a, &st, 74, FB_Q_GOOD, 11), FB_AE_CLEARED);
    assert_int_equal(st.flags, 0); /* it had been acknowledged: normal, not cleared/unacked */
}

static void test_names(void **state)
{
    (void)state;
    for (int k = 0; k < FB_AK__COUNT; k++) assert_int_equal(fb_alarm_kind_parse(fb_alarm_kind_name(k)), k);
    assert_int_equal(fb_alarm_kind_parse("high"), -1);
    for (int p = 0; p < 4; p++) assert_int_equal(fb_alarm_prio_parse(fb_alarm_prio_name(p)), p);
    assert_int_equal(fb_alarm_prio_severity(FB_AP_URGENT), 900);
    assert_int_equal(fb_ne107_parse("failure"), FB_NE107_FAILURE);
    assert_string_equal(fb_ne107_name(FB_NE107_OUT_OF_SPEC), "Out of specification");
    assert_string_equal(fb_alarm_event_name(FB_AE_ACKED), "acknowledged");
}

/* ------------------------------------------------------------ journal */
struct loaded {
    struct fb_journal_rec r[64];
    int n;
};

static void load(void *ctx, const struct fb_journal_rec *r)
{
    struct loaded *l = ctx;
    if (l->n < 64) l->r[l->n++] = *r;
}

static char dir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/fb-test-journal-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[300];
    snprintf(p, sizeof p, "%s/alarms", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/alarms.tmp", dir);
    unlink(p);
    rmdir(dir);
    return 0;
}

static void test_journal(void **state)
{
    (void)state;
    struct fb_alarm_journal *j;
    struct fb_err err = {0};
    struct loaded l = {0};
    uint64_t cut = 99;
    assert_int_equal(fb_alarm_journal_open(&j, dir, load, &l, &cut, &err), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(cut, 0);
    uint64_t k1 = fb_alarm_key("press-01/temperature/hi"), k2 = fb_alarm_key("press-01/temperature/hihi");
    assert_true(k1 != k2);
    struct fb_journal_rec r1 = {k1, FB_AS_ACTIVE | FB_AS_UNACKED, 5 * S, 0, 87.5};
    struct fb_journal_rec r2 = {k2, FB_AS_ACTIVE | FB_AS_SHELVED, 6 * S, 99 * S, 96};
    struct fb_journal_rec r1b = {k1, FB_AS_ACTIVE, 5 * S, 0, 88};
    assert_int_equal(fb_alarm_journal_append(j, &r1), 0);
    assert_int_equal(fb_alarm_journal_append(j, &r2), 0);
    assert_int_equal(fb_alarm_journal_append(j, &r1b), 0);
    assert_int_equal(fb_alarm_journal_sync(j), 0);
    fb_alarm_journal_close(j);
    /* reopen: every record, in order */
    memset(&l, 0, sizeof l);
    assert_int_equal(fb_alarm_journal_open(&j, dir, load, &l, &cut, &err), 0);
    assert_int_equal(l.n, 3);
    assert_true(l.r[0].key == k1 && l.r[0].flags == (FB_AS_ACTIVE | FB_AS_UNACKED) && l.r[0].value == 87.5);
    assert_true(l.r[1].key == k2 && l.r[1].until == 99 * S && l.r[1].since == 6 * S);
    assert_true(l.r[2].key == k1 && l.r[2].flags == FB_AS_ACTIVE);
    assert_int_equal(fb_alarm_journal_records(j), 3);
    /* compaction keeps what it is given */
    struct fb_journal_rec keep[2] = {r1b, r2};
    assert_int_equal(fb_alarm_journal_compact(j, keep, 2), 0);
    assert_int_equal(fb_alarm_journal_records(j), 2);
    assert_int_equal(fb_alarm_journal_append(j, &r1), 0); /* appends go after the compacted records */
    fb_alarm_journal_close(j);
    memset(&l, 0, sizeof l);
    assert_int_equal(fb_alarm_journal_open(&j, dir, load, &l, &cut, &err), 0);
    assert_int_equal(l.n, 3);
    assert_true(l.r[0].key == k1 && l.r[0].flags == FB_AS_ACTIVE);
    assert_true(l.r[2].key == k1 && l.r[2].flags == (FB_AS_ACTIVE | FB_AS_UNACKED));
    fb_alarm_journal_close(j);
}

/* A crash tears the last write: replay stops at the last whole record and cuts the rest. */
static void test_journal_torn(void **state)
{
    (void)state;
    struct fb_alarm_journal *j;
    struct fb_err err = {0};
    struct loaded l = {0};
    uint64_t cut = 0;
    assert_int_equal(fb_alarm_journal_open(&j, dir, load, &l, &cut, &err), 0);
    struct fb_journal_rec r = {fb_alarm_key("a/b/hi"), FB_AS_ACTIVE, S, 0, 1};
    for (int i = 0; i < 3; i++) {
        r.value = i;
        assert_int_equal(fb_alarm_journal_append(j, &r), 0);
    }
    fb_alarm_journal_close(j);
    char p[300];
    snprintf(p, sizeof p, "%s/alarms", dir);
    /* every truncation inside the last record */
    for (int keep = 1; keep < FB_JOURNAL_REC; keep += 7) {
        assert_int_equal(truncate(p, FB_JOURNAL_HEADER + 2 * FB_JOURNAL_REC + keep), 0);
        memset(&l, 0, sizeof l);
        assert_int_equal(fb_alarm_journal_open(&j, dir, load, &l, &cut, &err), 0);
        assert_int_equal(l.n, 2);
        assert_int_equal(cut, (uint64_t)keep);
        assert_true(l.r[1].value == 1);
        /* the next append follows whole records */
        r.value = 2;
        assert_int_equal(fb_alarm_journal_append(j, &r), 0);
        fb_alarm_journal_close(j);
    }
    /* a flipped bit in the middle record: replay keeps the first, cuts from there */
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    uint8_t byte;
    assert_int_equal(pread(fd, &byte, 1, FB_JOURNAL_HEADER + FB_JOURNAL_REC + 20), 1);
    byte ^= 0x10;
    assert_int_equal(pwrite(fd, &byte, 1, FB_JOURNAL_HEADER + FB_JOURNAL_REC + 20), 1);
    close(fd);
    memset(&l, 0, sizeof l);
    assert_int_equal(fb_alarm_journal_open(&j, dir, load, &l, &cut, &err), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(cut, 2 * FB_JOURNAL_REC);
    fb_alarm_journal_close(j);
    /* a file that is not a journal is refused and left alone */
    fd = open(p, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "hello, this is not a journal", 28), 28);
    close(fd);
    assert_int_equal(fb_alarm_journal_open(&j, dir, load, &l, &cut, &err), FB_EPROTO);
    assert_non_null(strstr(err.msg, "not an alarm journal"));
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_size, 28);
}

static void test_record_codec(void **state)
{
    (void)state;
    struct fb_journal_rec r = {0x0123456789abcdefULL, 7, -5, INT64_MAX, -0.25}, o;
    uint8_t b[FB_JOURNAL_REC];
    fb_journal_encode(b, &r);
    assert_int_equal(fb_journal_decode(b, &o), 0);
    assert_true(o.key == r.key && o.flags == 7 && o.since == -5 && o.until == INT64_MAX && o.value == -0.25);
    for (int i = 0; i < FB_JOURNAL_REC; i++) { /* every single-bit error is caught by the CRC */
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (uint8_t)(1u << bit);
            assert_int_equal(fb_journal_decode(b, &o), FB_EPROTO);
            b[i] ^= (uint8_t)(1u << bit);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hi_states),
        cmocka_unit_test(test_lo_and_limits),
        cmocka_unit_test(test_deadband),
        cmocka_unit_test(test_delays),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_roc),
        cmocka_unit_test(test_deviation),
        cmocka_unit_test(test_digital),
        cmocka_unit_test(test_external),
        cmocka_unit_test(test_shelve_suppress),
        cmocka_unit_test(test_restored),
        cmocka_unit_test(test_names),
        cmocka_unit_test_setup_teardown(test_journal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_torn, setup, teardown),
        cmocka_unit_test(test_record_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
