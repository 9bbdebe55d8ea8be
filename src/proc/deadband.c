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
 * Strings are remembered as length + 64-bit FNV-1a hash (the state must not
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

/* The value as remembered in the state (strings: hash in u, length in s.len). */
static struct fb_value remembered(const struct fb_value *v)
{
    struct fb_value r = *v;
    if (v->type == FB_T_STRING) {
        uint32_t len = v->s.p ? v->s.len : 0;
        r.u = fnv1a(v->s.p, len);
        r.s.len = len;
    }
    return r;
}

static bool changed(const struct fb_tag_proc *p, const struct fb_value *last, const struct fb_value *v)
{
    double a, b;
    if (v->type != last->type) return true;
    if (v->type == FB_T_STRING) {
        struct fb_value r = remembered(v);
        return r.s.len != last->s.len || r.u != last->u;
    }
    if (v->type == FB_T_BOOL) return v->b != last->b;
    if (!fb_value_to_double(v, &b) || !fb_value_to_double(last, &a)) return false; /* FB_T_NONE */
    if (isnan(a) || isnan(b)) return isnan(a) != isnan(b);
    if (p->db_abs <= 0 && p->db_pct <= 0) return true; /* no deadband */
    double d = fabs(b - a);
    if (p->db_abs > 0 && d > p->db_abs) return true;
    if (p->db_pct > 0 && d > fabs(a) * p->db_pct / 100.0) return true;
    return false;
}

bool fb_deadband_pass(const struct fb_tag_proc *p, struct fb_tag_state *st, const struct fb_value *v, uint32_t q,
                      int64_t ts, bool *heartbeat)
{
    bool hb = false, pass;
    if (!st->have_last || q != st->last_pub_q || (p->db_abs <= 0 && p->db_pct <= 0)) {
        pass = true;
    } else if (!fb_q_bad(q) && changed(p, &st->last_pub, v)) {
        pass = true;
    } else if (p->heartbeat_ns > 0 && ts - st->last_pub_ns >= p->heartbeat_ns) {
        pass = hb = true;
    } else {
        pass = false;
    }
    if (heartbeat) *heartbeat = hb;
    if (pass) {
        st->have_last = true;
        st->last_pub = remembered(v);
        st->last_pub_q = q;
        st->last_pub_ns = ts;
    }
    return pass;
}
