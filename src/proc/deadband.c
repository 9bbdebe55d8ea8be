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
 * change until the next heartbeat — 2^-64, accepted. */
#include <math.h>
#include <string.h>

#include "proc/proc.h"

static uint64_t fnv1a(const char *p, uint32_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Remember v as published (strings: hash and length; the rest as a double). */
static void remember(struct fb_last *st, const struct fb_value *v)
{
    st->type = v->type;
    if (v->type == FB_T_STRING) {
        st->h = fnv1a(v->s.p, v->s.p ? v->s.len : 0);
    } else if (!fb_value_to_double(v, &st->d)) {
        st->d = 0; /* FB_T_NONE */
    }
}

static bool changed(const struct fb_tag_proc *p, const struct fb_last *last, const struct fb_value *v)
{
    double a = last->d, b;
    if (v->type != last->type) return true;
    if (v->type == FB_T_STRING) return fnv1a(v->s.p, v->s.p ? v->s.len : 0) != last->h;
    if (v->type == FB_T_BOOL) return v->b != (a != 0);
    if (!fb_value_to_double(v, &b)) return false; /* FB_T_NONE */
    if (isnan(a) || isnan(b)) return isnan(a) != isnan(b);
    if (p->db_abs <= 0 && p->db_pct <= 0) return true; /* no deadband */
    double d = fabs(b - a);
    if (p->db_abs > 0 && d > p->db_abs) return true;
    if (p->db_pct > 0 && d > fabs(a) * p->db_pct / 100.0) return true;
    return false;
}

bool fb_deadband_pass(const struct fb_tag_proc *p, struct fb_last *st, int64_t *last_ns, const struct fb_value *v,
                      uint32_t q, int64_t ts, bool *heartbeat)
{
    bool hb = false, pass;
    if (!st->have || q != st->q || (p->db_abs <= 0 && p->db_pct <= 0)) {
        pass = true;
    } else if (!fb_q_bad(q) && changed(p, st, v)) {
        pass = true;
    } else if (p->heartbeat_ns > 0 && last_ns && ts - *last_ns >= p->heartbeat_ns) {
        pass = hb = true;
    } else {
        pass = false;
    }
    if (heartbeat) *heartbeat = hb;
    if (pass) {
        st->have = true;
        remember(st, v);
        st->q = q;
        if (last_ns) *last_ns = ts;
    }
    return pass;
}
