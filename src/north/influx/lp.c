/* lp.c — InfluxDB line protocol pieces (lp.h): names escaped per element,
 * string field values, typed field values, time stamps.
 *
 * Why these rules (checked against InfluxDB 1.6's parser, see
 * tests/system/test_influx.py and docs/influxdb.md):
 *   - The parser pairs every backslash with the byte after it while it looks
 *     for the end of an element, and unescapes only `\,` `\ ` (and `\=` in
 *     keys).  Any other pair is kept literally, so a backslash is written as
 *     is — two in a row stay a pair — unless it is the last byte of the name
 *     or the next byte is one we escape: the parser would then pair it with
 *     our separator or with our own escape.  There is no way to write such a
 *     backslash; it becomes `_`.
 *   - A control character (a newline above all) ends the line; it becomes `_`.
 *   - String field values may contain anything, newlines too; `"` and `\`
 *     are escaped.
 *   - Numbers: floats as the shortest text that reads back to the same value
 *     (the JSON writer's, buf.h: "21.5", "1e+21"; never NaN/Inf, which line
 *     protocol cannot carry), integers with `i`, unsigned with `u`.
 * Empty names are refused: InfluxDB rejects an empty tag value, tag key or
 * field key (the caller leaves the tag out or the value unwritten).
 */
#include "north/influx/lp.h"

#include <math.h>
#include <string.h>

/* bit 0: escape in a measurement; bit 1: escape in a key (tag key/value, field key) */
static inline unsigned esc_class(unsigned char c)
{
    switch (c) {
        case ',':
        case ' ': return 3;
        case '=': return 2;
        default: return 0;
    }
}

bool fb_lp_name(struct fb_buf *b, enum fb_lp_elem e, const char *s, size_t n)
{
    if (!n) return false;
    unsigned mask = e == FB_LP_MEASUREMENT ? 1u : 2u;
    const unsigned char *p = (const unsigned char *)s;
    /* the common case: nothing to escape, copy at once */
    size_t i = 0;
    while (i < n && p[i] >= 0x20 && p[i] != 0x7F && p[i] != '\\' && !(esc_class(p[i]) & mask)) i++;
    fb_buf_put(b, s, i);
    for (; i < n; i++) {
        unsigned char c = p[i];
        if (c < 0x20 || c == 0x7F) {
            fb_buf_putc(b, '_');
        } else if (c == '\\') {
            /* the parser pairs a backslash with the byte after it */
            if (i + 1 < n && p[i + 1] == '\\') { /* a pair of our own: kept as is */
                fb_buf_put(b, "\\\\", 2);
                i++;
                continue;
            }
            bool last = i + 1 == n;
            fb_buf_putc(b, last || (esc_class(p[i + 1]) & mask) ? '_' : '\\');
        } else if (esc_class(c) & mask) {
            char e2[2] = {'\\', (char)c};
            fb_buf_put(b, e2, 2);
        } else {
            fb_buf_putc(b, (char)c);
        }
    }
    return true;
}

void fb_lp_str(struct fb_buf *b, const char *s, size_t n)
{
    fb_buf_putc(b, '"');
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"' || c == '\\') {
            fb_buf_put(b, s + start, i - start);
            char e[2] = {'\\', c};
            fb_buf_put(b, e, 2);
            start = i + 1;
        }
    }
    fb_buf_put(b, s + start, n - start);
    fb_buf_putc(b, '"');
}

enum fb_lp_type fb_lp_type_of(enum fb_type t, bool unsigned_ok)
{
    switch (t) {
        case FB_T_BOOL: return FB_LP_BOOL;
        case FB_T_INT8:
        case FB_T_UINT8:
        case FB_T_INT16:
        case FB_T_UINT16:
        case FB_T_INT32:
        case FB_T_UINT32:
        case FB_T_INT64: return FB_LP_INT;
        case FB_T_UINT64: return unsigned_ok ? FB_LP_UINT : FB_LP_INT;
        case FB_T_FLOAT32: return FB_LP_FLOAT32;
        case FB_T_STRING: return FB_LP_STRING;
        default: return FB_LP_FLOAT;
    }
}

const char *fb_lp_type_name(enum fb_lp_type t)
{
    switch (t) {
        case FB_LP_INT: return "integer";
        case FB_LP_UINT: return "unsigned";
        case FB_LP_BOOL: return "boolean";
        case FB_LP_STRING: return "string";
        default: return "float";
    }
}

/* 2^63 as a double: integers from here on do not fit int64 */
#define TWO63 9223372036854775808.0

int fb_lp_value(struct fb_buf *b, enum fb_lp_type lt, const struct fb_value *v)
{
    enum fb_type t = (enum fb_type)v->type;
    switch (lt) {
        case FB_LP_FLOAT:
        case FB_LP_FLOAT32: {
            double d;
            if (t == FB_T_BOOL || t == FB_T_STRING || !fb_value_to_double(v, &d)) return FB_EINVAL;
            if (!isfinite(d)) return FB_ERANGE;
            if (lt == FB_LP_FLOAT32 && t == FB_T_FLOAT32)
                fb_json_float(b, (float)d);
            else
                fb_json_double(b, d);
            return 0;
        }
        case FB_LP_INT: {
            int64_t i;
            if (fb_type_is_int(t) && fb_type_is_signed(t)) {
                i = v->i;
            } else if (fb_type_is_int(t)) {
                if (v->u > (uint64_t)INT64_MAX) return FB_ERANGE;
                i = (int64_t)v->u;
            } else if (fb_type_is_float(t)) {
                if (!isfinite(v->f) || v->f != floor(v->f) || v->f < -TWO63 || v->f >= TWO63) return FB_ERANGE;
                i = (int64_t)v->f;
            } else {
                return FB_EINVAL;
            }
            fb_json_i64(b, i);
            fb_buf_putc(b, 'i');
            return 0;
        }
        case FB_LP_UINT: {
            uint64_t u;
            if (fb_type_is_int(t) && fb_type_is_signed(t)) {
                if (v->i < 0) return FB_ERANGE;
                u = (uint64_t)v->i;
            } else if (fb_type_is_int(t)) {
                u = v->u;
            } else if (fb_type_is_float(t)) {
                if (!isfinite(v->f) || v->f != floor(v->f) || v->f < 0 || v->f >= 2 * TWO63) return FB_ERANGE;
                u = (uint64_t)v->f;
            } else {
                return FB_EINVAL;
            }
            fb_json_u64(b, u);
            fb_buf_putc(b, 'u');
            return 0;
        }
        case FB_LP_BOOL:
            if (t != FB_T_BOOL) return FB_EINVAL;
            fb_buf_puts(b, v->b ? "true" : "false");
            return 0;
        case FB_LP_STRING:
            if (t != FB_T_STRING) return FB_EINVAL;
            fb_lp_str(b, v->s.p ? v->s.p : "", v->s.p ? v->s.len : 0);
            return 0;
    }
    return FB_EINVAL;
}

int fb_lp_check(enum fb_lp_type lt, const struct fb_value *v)
{
    enum fb_type t = (enum fb_type)v->type;
    switch (lt) {
        case FB_LP_FLOAT:
        case FB_LP_FLOAT32: {
            double d;
            if (t == FB_T_BOOL || t == FB_T_STRING || !fb_value_to_double(v, &d)) return FB_EINVAL;
            return isfinite(d) ? 0 : FB_ERANGE;
        }
        case FB_LP_INT:
            if (fb_type_is_int(t)) return fb_type_is_signed(t) || v->u <= (uint64_t)INT64_MAX ? 0 : FB_ERANGE;
            if (fb_type_is_float(t))
                return isfinite(v->f) && v->f == floor(v->f) && v->f >= -TWO63 && v->f < TWO63 ? 0 : FB_ERANGE;
            return FB_EINVAL;
        case FB_LP_UINT:
            if (fb_type_is_int(t)) return !fb_type_is_signed(t) || v->i >= 0 ? 0 : FB_ERANGE;
            if (fb_type_is_float(t))
                return isfinite(v->f) && v->f == floor(v->f) && v->f >= 0 && v->f < 2 * TWO63 ? 0 : FB_ERANGE;
            return FB_EINVAL;
        case FB_LP_BOOL: return t == FB_T_BOOL ? 0 : FB_EINVAL;
        case FB_LP_STRING: return t == FB_T_STRING ? 0 : FB_EINVAL;
    }
    return FB_EINVAL;
}

void fb_lp_time(struct fb_buf *b, int64_t ns, enum fb_lp_precision p)
{
    static const int64_t div[] = {1, 1000, 1000000, 1000000000};
    int64_t d = div[p <= FB_LP_S ? p : 0];
    int64_t q = ns / d;
    if (ns % d != 0 && ns < 0) q--; /* floor: a time stamp never moves into the future */
    fb_json_i64(b, q);
}

const char *fb_lp_precision_param(enum fb_lp_precision p, bool api2)
{
    switch (p) {
        case FB_LP_US: return api2 ? "us" : "u";
        case FB_LP_MS: return "ms";
        case FB_LP_S: return "s";
        default: return "ns";
    }
}
