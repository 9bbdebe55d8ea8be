/* deadband.c — report by exception.
 *
 * A sample is published when it is the tag's first, when its quality code
 * differs from the last published one (so a tag going Bad, and recovering,
 * is always seen), when no deadband is configured, when a numeric value moved
 * MORE than db_abs or more than db_pct % of |last published value| away from
 * the last published value, when a non-numeric value differs, or when the
 * heartbeat is due (ts - last publish >= heartbeat_ns; *heartbeat is then set
 * so the sink can tell a keep-alive from a change).  While a tag stays Bad
 * with the same code its value is meaningless (often 0), so value changes do
 * not publish it again; only the quality change and the heartbeat do.
 *
 * The comparison is against the last PUBLISHED value, not the previous
 * sample, so a slow drift is reported once it adds up to the deadband.
 * Numbers are remembered as the double the comparison uses anyway (bools as
 * 0/1), strings as a 64-bit FNV-1a hash of their bytes (the state must not
 * point into a batch that is recycled); a hash collision would hide one
 * change until the next heartbeat — 2^-64, accepted.
 *
 * The state is 12 bytes (struct fb_last, issue 15): the value's type is not
 * stored, it is the tag's (drivers and computed tags deliver the tag's type;
 * the pipeline converts to float64 before this stage when the tag's output
 * is float64).  "Nothing published yet", "no value" (FB_T_NONE) and "a value
 * of another type" are NaNs with a payload (BOX) that no number is stored
 * as — every NaN is remembered as the one quiet NaN, since the comparison
 * treats all NaNs alike — and that a string's hash is moved away from.  A
 * value of another type than the tag's is remembered by its type only: the
 * next sample of that type counts as changed (published once more, never
 * hidden); before, its value was compared. */
#include <math.h>
#include <string.h>

#include "proc/proc.h"

#define BOX UINT64_C(0x7FF4F2B000000000) /* a signalling NaN's payload: kind << 8 | type below */
#define BOX_MASK UINT64_C(0xFFFFFFFFFFFF0000)
#define NOTHING (BOX | 0x100u)            /* nothing published yet (stored as 0: see load) */
#define NO_VALUE (BOX | 0x200u)           /* FB_T_NONE */
#define OTHER(t) (BOX | 0x300u | (uint64_t)(t)) /* a value of type t, not the tag's */
#define QNAN UINT64_C(0x7FF8000000000000)

static uint64_t fnv1a(const char *p, uint32_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The state's 64 bits, stored XOR NOTHING so that a zeroed state is "nothing
 * published"; 4-byte aligned, hence memcpy. */
static uint64_t load(const struct fb_last *st)
{
    uint64_t x;
    memcpy(&x, st->v, sizeof x);
    return x ^ NOTHING;
}

static void store(struct fb_last *st, uint64_t x)
{
    x ^= NOTHING;
    memcpy(st->v, &x, sizeof x);
}

static double as_double(uint64_t x)
{
    double d;
    memcpy(&d, &x, sizeof d);
    return d;
}

/* How v is remembered when the tag's type is `type`. */
static uint64_t encode(enum fb_type type, const struct fb_value *v)
{
    if (v->type == FB_T_NONE) return NO_VALUE;
    if (v->type != type) return OTHER(v->type);
    if (v->type == FB_T_STRING) {
        uint64_t h = fnv1a(v->s.p, v->s.p ? v->s.len : 0);
        return (h & BOX_MASK) == BOX ? h ^ (UINT64_C(1) << 63) : h; /* never a box */
    }
    double d;
    if (!fb_value_to_double(v, &d)) d = 0;
    if (isnan(d)) return QNAN;
    uint64_t x;
    memcpy(&x, &d, sizeof x);
    return x;
}

static bool changed(const struct fb_tag_proc *p, enum fb_type type, uint64_t last, const struct fb_value *v)
{
    if (v->type == FB_T_NONE) return last != NO_VALUE;
    if (v->type != type) return true;                   /* another type: its last value is not kept */
    if ((last & BOX_MASK) == BOX) return true;          /* the last one was no value or of another type */
    if (v->type == FB_T_STRING) return encode(type, v) != last;
    double a = as_double(last), b;
    if (v->type == FB_T_BOOL) return v->b != (a != 0);
    if (!fb_value_to_double(v, &b)) return false;
    if (isnan(a) || isnan(b)) return isnan(a) != isnan(b);
    if (p->db_abs <= 0 && p->db_pct <= 0) return true; /* no deadband */
    double d = fabs(b - a);
    if (p->db_abs > 0 && d > p->db_abs) return true;
    if (p->db_pct > 0 && d > fabs(a) * p->db_pct / 100.0) return true;
    return false;
}

bool fb_deadband_pass(const struct fb_tag_proc *p, struct fb_last *st, int64_t *last_ns, enum fb_type type,
                      const struct fb_value *v, uint32_t q, int64_t ts, bool *heartbeat)
{
    bool hb = false, pass;
    uint64_t last = load(st);
    if (last == NOTHING || q != st->q || (p->db_abs <= 0 && p->db_pct <= 0)) {
        pass = true;
    } else if (!fb_q_bad(q) && changed(p, type, last, v)) {
        pass = true;
    } else if (p->heartbeat_ns > 0 && last_ns && ts - *last_ns >= p->heartbeat_ns) {
        pass = hb = true;
    } else {
        pass = false;
    }
    if (heartbeat) *heartbeat = hb;
    if (pass) {
        store(st, encode(type, v));
        st->q = q;
        if (last_ns) *last_ns = ts;
    }
    return pass;
}
