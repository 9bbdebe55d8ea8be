/* decode.c — topic templates and our JSON telemetry, read by ingest
 * (decode.h).
 *
 * Why a JSON reader of our own: ingest reads the whole fleet's traffic, so
 * this is the hot path of an ingest instance.  A general parser (jansson)
 * allocates a node per value; this one walks the text once and writes names,
 * strings and values straight into the named batch's arena and sample
 * array, which are sized at start-up.  It knows the telemetry schema
 * (docs/telemetry.schema.json) and skips members it does not know, to any
 * depth up to a bound.  It trusts nothing: every read is bounded by the end
 * of the input, strings are checked for valid escapes (\u0000 in a name is
 * refused: names are NUL-terminated), and numbers are converted exactly
 * (integers without going through a double).
 *
 * Numbers and types: JSON does not tell an integer 21 from a float that
 * happens to be whole (our gateways write 21.0 as 21), and InfluxDB refuses
 * a field whose type changes.  So a number is float64 unless a type rule
 * names the tag; see fb_ig_number_type.
 */
#include "north/ingest/decode.h"

#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ templates */
static const char *const var_names[] = {"gateway", "site", "area", "line", "device", "kind"};

void fb_ig_tmpl_free(struct fb_ig_tmpl *t)
{
    for (uint32_t i = 0; t->lv && i < t->n; i++) {
        free(t->lv[i].pre);
        free(t->lv[i].post);
    }
    free(t->lv);
    memset(t, 0, sizeof *t);
}

int fb_ig_tmpl_parse(const char *t, struct fb_ig_tmpl *out, struct fb_err *err)
{
    memset(out, 0, sizeof *out);
    uint32_t n = 1;
    for (const char *p = t; *p; p++) n += *p == '/';
    out->lv = calloc(n, sizeof *out->lv);
    if (!out->lv) return fb_err_set(err, FB_ENOMEM, "out of memory");
    bool has_kind = false, has_dev = false;
    const char *p = t;
    for (uint32_t i = 0; i < n; i++) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        struct fb_ig_level *lv = &out->lv[out->n++];
        lv->var = -1;
        if (!len) {
            fb_ig_tmpl_free(out);
            return fb_err_set(err, FB_EINVAL, "topic template \"%s\": empty level", t);
        }
        const char *o = memchr(p, '{', len), *c = o ? memchr(o, '}', len - (size_t)(o - p)) : NULL;
        if (o && !c) {
            fb_ig_tmpl_free(out);
            return fb_err_set(err, FB_EINVAL, "topic template \"%s\": '{' without '}'", t);
        }
        if (o) {
            size_t vl = (size_t)(c - o - 1);
            for (int k = 0; k < 6; k++)
                if (strlen(var_names[k]) == vl && !memcmp(o + 1, var_names[k], vl)) lv->var = k;
            if (lv->var < 0) {
                fb_ig_tmpl_free(out);
                return fb_err_set(err, FB_EINVAL,
                                  "topic template \"%s\": unknown placeholder {%.*s} (known: {gateway} {site} "
                                  "{area} {line} {device} {kind})",
                                  t, (int)vl, o + 1);
            }
            if (memchr(c + 1, '{', len - (size_t)(c + 1 - p))) {
                fb_ig_tmpl_free(out);
                return fb_err_set(err, FB_EINVAL,
                                  "topic template \"%s\": two placeholders in one level cannot be told apart", t);
            }
            lv->pre = strndup(p, (size_t)(o - p));
            lv->post = strndup(c + 1, len - (size_t)(c + 1 - p));
            has_kind = has_kind || lv->var == FB_IG_KIND;
            has_dev = has_dev || lv->var == FB_BN_DEVICE;
        } else {
            lv->pre = strndup(p, len);
            lv->post = strdup("");
            if (memchr(p, '+', len) || memchr(p, '#', len)) {
                fb_ig_tmpl_free(out);
                return fb_err_set(err, FB_EINVAL, "topic template \"%s\": no MQTT wildcards", t);
            }
        }
        if (!lv->pre || !lv->post) {
            fb_ig_tmpl_free(out);
            return fb_err_set(err, FB_ENOMEM, "out of memory");
        }
        p = e ? e + 1 : p + len;
    }
    if (!has_kind || !has_dev) {
        fb_ig_tmpl_free(out);
        return fb_err_set(err, FB_EINVAL, "topic template \"%s\" must contain {device} and {kind}", t);
    }
    return 0;
}

char *fb_ig_tmpl_filter(const struct fb_ig_tmpl *t, const char *kind)
{
    size_t cap = strlen(kind) + 2;
    for (uint32_t i = 0; i < t->n; i++) cap += strlen(t->lv[i].pre) + strlen(t->lv[i].post) + 2;
    char *f = malloc(cap);
    if (!f) return NULL;
    size_t o = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        const struct fb_ig_level *lv = &t->lv[i];
        if (i) f[o++] = '/';
        if (lv->var < 0)
            o += (size_t)snprintf(f + o, cap - o, "%s", lv->pre);
        else if (lv->var == FB_IG_KIND)
            o += (size_t)snprintf(f + o, cap - o, "%s%s%s", lv->pre, kind, lv->post);
        else
            f[o++] = '+';
    }
    f[o] = 0;
    return f;
}

bool fb_ig_tmpl_match(const struct fb_ig_tmpl *t, const char *topic, char *buf, size_t cap, const char *val[FB_BN__N],
                      const char **kind)
{
    size_t o = 0;
    if (!cap) return false;
    buf[o++] = 0; /* "" for what the template does not carry */
    for (int k = 0; k < FB_BN__N; k++) val[k] = buf;
    *kind = buf;
    const char *p = topic;
    for (uint32_t i = 0; i < t->n; i++) {
        if (!p) return false;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const struct fb_ig_level *lv = &t->lv[i];
        size_t pl = strlen(lv->pre), sl = strlen(lv->post);
        if (lv->var < 0) {
            if (len != pl || memcmp(p, lv->pre, pl)) return false;
        } else {
            if (len <= pl + sl || memcmp(p, lv->pre, pl) || memcmp(p + len - sl, lv->post, sl)) return false;
            size_t vl = len - pl - sl;
            if (o + vl + 1 > cap) return false;
            memcpy(buf + o, p + pl, vl);
            buf[o + vl] = 0;
            if (lv->var == FB_IG_KIND)
                *kind = buf + o;
            else
                val[lv->var] = buf + o;
            o += vl + 1;
        }
        p = e ? e + 1 : NULL;
    }
    return p == NULL;
}

/* ---------------------------------------------------------- type rules */
enum fb_type fb_ig_number_type(const struct fb_ig_types *t, const char *device, const char *tag)
{
    for (uint32_t i = 0; t && i < t->n; i++) {
        const struct fb_ig_type_rule *r = &t->r[i];
        if ((!r->device || !fnmatch(r->device, device, 0)) && (!r->tag || !fnmatch(r->tag, tag, 0)))
            return (enum fb_type)r->type;
    }
    return FB_T_FLOAT64;
}

/* ------------------------------------------------------------ the reader */
#define MAX_DEPTH 32

struct js {
    const char *p, *end;
    struct fb_err *err;
    const char *start;
};

static bool fail(struct js *j, const char *what)
{
    if (!j->err->msg[0]) fb_err_set(j->err, FB_EPROTO, "%s at byte %td", what, j->p - j->start);
    return false;
}

static void ws(struct js *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static bool eat(struct js *j, char c)
{
    ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return true;
    }
    return false;
}

/* A string token: [*s, *s + *n) between the quotes, escapes not yet undone. */
static bool str_span(struct js *j, const char **s, size_t *n, bool *esc)
{
    ws(j);
    if (j->p >= j->end || *j->p != '"') return fail(j, "expected a string");
    const char *q = ++j->p;
    *esc = false;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) return fail(j, "control character in a string");
        if (c == '\\') {
            *esc = true;
            if (++j->p >= j->end) break;
        }
        j->p++;
    }
    if (j->p >= j->end) return fail(j, "unterminated string");
    *s = q;
    *n = (size_t)(j->p - q);
    j->p++;
    return true;
}

static int hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v << 4 | d;
    }
    return v;
}

/* Undo the escapes of span s (n bytes) into dst (cap bytes); the length, or
 * -1 for a bad escape, -2 when it does not fit, -3 for an escaped NUL when
 * nul_ok is false. */
static long unescape(const char *s, size_t n, char *dst, size_t cap, bool nul_ok)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c != '\\') {
            if (o >= cap) return -2;
            dst[o++] = c;
            continue;
        }
        if (++i >= n) return -1;
        char e = s[i], out;
        switch (e) {
            case '"': out = '"'; break;
            case '\\': out = '\\'; break;
            case '/': out = '/'; break;
            case 'b': out = '\b'; break;
            case 'f': out = '\f'; break;
            case 'n': out = '\n'; break;
            case 'r': out = '\r'; break;
            case 't': out = '\t'; break;
            case 'u': {
                if (n - i - 1 < 4) return -1;
                int u = hex4(s + i + 1);
                if (u < 0) return -1;
                i += 4;
                uint32_t cp = (uint32_t)u;
                if (cp >= 0xD800 && cp <= 0xDBFF) { /* a surrogate pair */
                    if (n - i - 1 < 6 || s[i + 1] != '\\' || s[i + 2] != 'u') return -1;
                    int lo = hex4(s + i + 3);
                    if (lo < 0xDC00 || lo > 0xDFFF) return -1;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
                    i += 6;
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return -1;
                }
                if (cp == 0 && !nul_ok) return -3;
                char u8[4];
                size_t ul;
                if (cp < 0x80) {
                    u8[0] = (char)cp;
                    ul = 1;
                } else if (cp < 0x800) {
                    u8[0] = (char)(0xC0 | cp >> 6);
                    u8[1] = (char)(0x80 | (cp & 0x3F));
                    ul = 2;
                } else if (cp < 0x10000) {
                    u8[0] = (char)(0xE0 | cp >> 12);
                    u8[1] = (char)(0x80 | (cp >> 6 & 0x3F));
                    u8[2] = (char)(0x80 | (cp & 0x3F));
                    ul = 3;
                } else {
                    u8[0] = (char)(0xF0 | cp >> 18);
                    u8[1] = (char)(0x80 | (cp >> 12 & 0x3F));
                    u8[2] = (char)(0x80 | (cp >> 6 & 0x3F));
                    u8[3] = (char)(0x80 | (cp & 0x3F));
                    ul = 4;
                }
                if (o + ul > cap) return -2;
                memcpy(dst + o, u8, ul);
                o += ul;
                continue;
            }
            default: return -1;
        }
        if (o >= cap) return -2;
        dst[o++] = out;
    }
    return (long)o;
}

/* A number token: its span; *integer when it has no fraction or exponent. */
static bool num_span(struct js *j, const char **s, size_t *n, bool *integer)
{
    ws(j);
    const char *q = j->p;
    *integer = true;
    if (j->p < j->end && *j->p == '-') j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') return fail(j, "expected a value");
    if (*j->p == '0')
        j->p++;
    else
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    if (j->p < j->end && *j->p == '.') {
        *integer = false;
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9') return fail(j, "bad number");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        *integer = false;
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9') return fail(j, "bad number");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    *s = q;
    *n = (size_t)(j->p - q);
    if (*n > 64) return fail(j, "number too long");
    return true;
}

static bool word(struct js *j, const char *w)
{
    size_t n = strlen(w);
    ws(j);
    if ((size_t)(j->end - j->p) >= n && !memcmp(j->p, w, n)) {
        j->p += n;
        return true;
    }
    return false;
}

static bool skip_value(struct js *j, int depth)
{
    if (depth > MAX_DEPTH) return fail(j, "nested too deeply");
    ws(j);
    if (j->p >= j->end) return fail(j, "expected a value");
    const char *s;
    size_t n;
    bool esc, in;
    switch (*j->p) {
        case '"': return str_span(j, &s, &n, &esc);
        case '{':
            j->p++;
            if (eat(j, '}')) return true;
            do {
                if (!str_span(j, &s, &n, &esc) || !eat(j, ':') || !skip_value(j, depth + 1))
                    return fail(j, "bad object");
            } while (eat(j, ','));
            return eat(j, '}') || fail(j, "expected '}'");
        case '[':
            j->p++;
            if (eat(j, ']')) return true;
            do {
                if (!skip_value(j, depth + 1)) return false;
            } while (eat(j, ','));
            return eat(j, ']') || fail(j, "expected ']'");
        case 't': return word(j, "true") || fail(j, "bad literal");
        case 'f': return word(j, "false") || fail(j, "bad literal");
        case 'n': return word(j, "null") || fail(j, "bad literal");
        default: return num_span(j, &s, &n, &in);
    }
}

static bool key_is(const char *s, size_t n, bool esc, const char *k)
{
    return !esc && strlen(k) == n && !memcmp(s, k, n);
}

/* A number span as a double (NUL-terminated copy for strtod). */
static bool to_double(const char *s, size_t n, double *d)
{
    char b[72];
    memcpy(b, s, n);
    b[n] = 0;
    errno = 0;
    char *e;
    *d = strtod(b, &e);
    return e == b + n && isfinite(*d);
}

/* The value of a number span as type t: exact for integers.  0, FB_ERANGE
 * (outside the type) or FB_EINVAL (a fraction for an integer type: the
 * rule that named the tag an integer is wrong, and rounding would hide it). */
static int number_value(const char *s, size_t n, bool integer, enum fb_type t, struct fb_value *v)
{
    memset(v, 0, sizeof *v);
    if (fb_type_is_int(t) && integer) {
        char b[72];
        memcpy(b, s, n);
        b[n] = 0;
        errno = 0;
        char *e;
        if (fb_type_is_signed(t)) {
            long long x = strtoll(b, &e, 10);
            if (errno || e != b + n) return FB_ERANGE;
            if (t != FB_T_INT64) return fb_value_from_double(t, (double)x, v);
            v->type = FB_T_INT64;
            v->i = x;
            return 0;
        }
        if (b[0] == '-') return FB_ERANGE;
        unsigned long long x = strtoull(b, &e, 10);
        if (errno || e != b + n) return FB_ERANGE;
        if (t != FB_T_UINT64) return fb_value_from_double(t, (double)x, v);
        v->type = FB_T_UINT64;
        v->u = x;
        return 0;
    }
    double d;
    if (!to_double(s, n, &d)) return FB_ERANGE;
    if (fb_type_is_int(t) && d != floor(d)) return FB_EINVAL;
    if (t == FB_T_BOOL || t == FB_T_STRING || t == FB_T_NONE) t = FB_T_FLOAT64;
    return fb_value_from_double(t, d, v) == 0 ? 0 : FB_ERANGE;
}

/* ------------------------------------------------------------ telemetry */
int fb_ig_batch_begin(struct fb_batch *b, const char *const val[FB_BN__N], int64_t ts)
{
    fb_batch_reset(b);
    b->kind = FB_BATCH_NAMED;
    b->ts = ts;
    b->device = 0;
    b->group = 0;
    for (int k = 0; k < FB_BN__N; k++) {
        const char *v = val[k] ? val[k] : "";
        uint32_t off = fb_batch_name_add(b, v, (uint32_t)strlen(v));
        if (off == UINT32_MAX) return FB_ERANGE;
        b->names[k] = off;
    }
    return 0;
}

#define TS_UNSET INT64_MIN

struct val_parts { /* one member of "values" while it is read */
    const char *v;
    size_t vn;
    int vkind; /* 0 absent, 1 null, 2 true, 3 false, 4 number, 5 string */
    bool vint, vesc;
    int sev; /* -1 absent, 0 good, 1 uncertain, 2 bad */
    uint32_t reason;
    bool has_reason;
    int64_t ts;
    bool has_stats;
    struct fb_stats st;
};

static bool read_stats(struct js *j, struct fb_stats *st)
{
    memset(st, 0, sizeof *st);
    st->mean = st->stddev = st->min = st->max = NAN;
    if (!eat(j, '{')) return fail(j, "stats: expected an object");
    if (eat(j, '}')) return true;
    do {
        const char *k, *s;
        size_t kn, n;
        bool esc, integer;
        if (!str_span(j, &k, &kn, &esc) || !eat(j, ':')) return fail(j, "stats: bad member");
        double *dst = key_is(k, kn, esc, "mean")     ? &st->mean
                      : key_is(k, kn, esc, "stddev") ? &st->stddev
                      : key_is(k, kn, esc, "min")    ? &st->min
                      : key_is(k, kn, esc, "max")    ? &st->max
                                                     : NULL;
        if (dst) {
            if (word(j, "null")) continue;
            if (!num_span(j, &s, &n, &integer) || !to_double(s, n, dst)) return fail(j, "stats: bad number");
        } else if (key_is(k, kn, esc, "count")) {
            double d;
            if (!num_span(j, &s, &n, &integer) || !integer || !to_double(s, n, &d) || d < 0 || d > UINT32_MAX)
                return fail(j, "stats: bad count");
            st->count = (uint32_t)d;
        } else if (key_is(k, kn, esc, "window")) {
            char b[32];
            if (!str_span(j, &s, &n, &esc) || esc || n >= sizeof b) return fail(j, "stats: bad window");
            memcpy(b, s, n);
            b[n] = 0;
            if (fb_parse_duration(b, &st->window_ns) < 0) return fail(j, "stats: bad window");
        } else if (!skip_value(j, 2)) {
            return false;
        }
    } while (eat(j, ','));
    return eat(j, '}') || fail(j, "stats: expected '}'");
}

static bool read_value(struct js *j, struct val_parts *vp)
{
    memset(vp, 0, sizeof *vp);
    vp->sev = -1;
    vp->ts = TS_UNSET;
    if (!eat(j, '{')) return fail(j, "a value must be an object {\"v\":…,\"q\":…}");
    if (eat(j, '}')) return true;
    do {
        const char *k, *s;
        size_t kn, n;
        bool esc;
        if (!str_span(j, &k, &kn, &esc) || !eat(j, ':')) return fail(j, "bad member");
        if (key_is(k, kn, esc, "v")) {
            ws(j);
            if (j->p >= j->end) return fail(j, "expected a value");
            char c = *j->p;
            if (c == '"') {
                if (!str_span(j, &vp->v, &vp->vn, &vp->vesc)) return false;
                vp->vkind = 5;
            } else if (c == 'n') {
                if (!word(j, "null")) return fail(j, "bad literal");
                vp->vkind = 1;
            } else if (c == 't') {
                if (!word(j, "true")) return fail(j, "bad literal");
                vp->vkind = 2;
            } else if (c == 'f') {
                if (!word(j, "false")) return fail(j, "bad literal");
                vp->vkind = 3;
            } else if (c == '{' || c == '[') {
                return fail(j, "a value must be a number, a string, true, false or null");
            } else {
                if (!num_span(j, &vp->v, &vp->vn, &vp->vint)) return false;
                vp->vkind = 4;
            }
        } else if (key_is(k, kn, esc, "q")) {
            if (!str_span(j, &s, &n, &esc)) return false;
            vp->sev = key_is(s, n, esc, "good")        ? 0
                      : key_is(s, n, esc, "uncertain") ? 1
                      : key_is(s, n, esc, "bad")       ? 2
                                                       : -2;
            if (vp->sev == -2) return fail(j, "q must be good, uncertain or bad");
        } else if (key_is(k, kn, esc, "reason")) {
            if (!str_span(j, &s, &n, &esc)) return false;
            vp->has_reason = !esc && fb_q_parse(s, n, &vp->reason);
        } else if (key_is(k, kn, esc, "ts")) {
            if (!str_span(j, &s, &n, &esc)) return false;
            if (esc || !fb_parse_time(s, n, &vp->ts)) return fail(j, "bad ts");
        } else if (key_is(k, kn, esc, "stats")) {
            if (word(j, "null")) continue;
            if (!read_stats(j, &vp->st)) return false;
            vp->has_stats = true;
        } else if (!skip_value(j, 2)) {
            return false;
        }
    } while (eat(j, ','));
    return eat(j, '}') || fail(j, "expected '}'");
}

/* The quality of a value: the reason's code when it has one of the stated
 * severity, else the severity's generic code; a null value is never good. */
static uint32_t quality(const struct val_parts *vp)
{
    static const uint32_t generic[] = {FB_Q_GOOD, FB_Q_UNCERTAIN, FB_Q_BAD};
    int sev = vp->sev;
    if (sev < 0) sev = vp->vkind == 1 || vp->vkind == 0 ? 2 : 0;
    uint32_t q = generic[sev];
    if (vp->has_reason) {
        uint32_t rs = fb_q_bad(vp->reason) ? 2 : (vp->reason & 0x40000000u) ? 1 : 0;
        if ((int)rs == sev) q = vp->reason;
    }
    if ((vp->vkind == 1 || vp->vkind == 0) && !fb_q_bad(q)) q = FB_Q_BAD_WAITING;
    return q;
}

/* Add the sample of one member of "values". */
static int add_value(struct fb_batch *b, const char *tag, uint32_t tag_off, const struct val_parts *vp,
                     const struct fb_ig_types *types, struct fb_err *err)
{
    uint32_t q = quality(vp);
    struct fb_value v;
    memset(&v, 0, sizeof v);
    bool have = false;
    switch (vp->vkind) {
        case 2:
        case 3:
            v.type = FB_T_BOOL;
            v.b = vp->vkind == 2;
            have = true;
            break;
        case 4: {
            enum fb_type t = fb_ig_number_type(types, fb_batch_str(b, b->names[FB_BN_DEVICE]), tag);
            int rc = number_value(vp->v, vp->vn, vp->vint, t, &v);
            have = rc == 0;
            if (!have && !fb_q_bad(q)) q = rc == FB_EINVAL ? FB_Q_BAD_TYPE_MISMATCH : FB_Q_BAD_OUT_OF_RANGE;
            break;
        }
        case 5: {
            /* the string's bytes go into the arena (fb_batch_add copies plain
         * bytes; undo the escapes into a place of our own first) */
            uint32_t room = b->arena_cap - b->arena_len;
            long n = vp->vesc ? unescape(vp->v, vp->vn, b->arena + b->arena_len, room, true)
                              : (vp->vn <= room ? (long)vp->vn : -2);
            if (n == -2) return fb_err_set(err, FB_ERANGE, "message too large for a batch (strings)");
            if (n < 0) return fb_err_set(err, FB_EPROTO, "bad escape in the value of %s", tag);
            if (!vp->vesc) memcpy(b->arena + b->arena_len, vp->v, (size_t)n);
            v.type = FB_T_STRING;
            v.s.p = b->arena + b->arena_len;
            v.s.len = (uint32_t)n;
            b->arena_len += (uint32_t)n; /* already in place: add the sample without copying again */
            have = true;
            break;
        }
        default: break;
    }
    if (fb_q_bad(q)) have = false;
    if (b->n >= b->cap) return fb_err_set(err, FB_ERANGE, "message has more values than a batch holds (%u)", b->cap);
    struct fb_sample *s = &b->s[b->n++];
    memset(s, 0, sizeof *s);
    s->tag = tag_off;
    s->quality = q;
    s->ts_src = s->ts_gw = vp->ts;
    if (have) s->v = v;
    if (vp->has_stats && have) {
        if (b->nstats >= b->cap_stats) return fb_err_set(err, FB_ERANGE, "too many window statistics for a batch");
        b->stats[b->nstats] = vp->st;
        s->flags |= FB_SF_STATS;
        s->stats = b->nstats++;
    }
    return 0;
}

int fb_ig_telemetry(struct fb_batch *b, const char *p, size_t len, const struct fb_ig_types *types, int64_t now_ns,
                    struct fb_err *err)
{
    struct js j = {p, p + len, err, p};
    err->msg[0] = 0;
    err->code = 0;
    int64_t msg_ts = TS_UNSET;
    bool seen_values = false;
    if (!eat(&j, '{')) {
        fail(&j, "telemetry must be a JSON object");
        return FB_EPROTO;
    }
    if (!eat(&j, '}')) {
        do {
            const char *k, *s;
            size_t kn, n;
            bool esc;
            if (!str_span(&j, &k, &kn, &esc) || !eat(&j, ':')) return fail(&j, "bad member"), FB_EPROTO;
            if (key_is(k, kn, esc, "ts")) {
                if (!str_span(&j, &s, &n, &esc)) return FB_EPROTO;
                if (esc || !fb_parse_time(s, n, &msg_ts)) return fail(&j, "bad ts"), FB_EPROTO;
            } else if (key_is(k, kn, esc, "values")) {
                seen_values = true;
                if (!eat(&j, '{')) return fail(&j, "values must be an object"), FB_EPROTO;
                if (eat(&j, '}')) continue;
                do {
                    const char *tn;
                    size_t tl;
                    bool tesc;
                    if (!str_span(&j, &tn, &tl, &tesc) || !eat(&j, ':')) return fail(&j, "bad tag name"), FB_EPROTO;
                    if (!tl) return fail(&j, "empty tag name"), FB_EPROTO;
                    /* the name, NUL-terminated, into the arena */
                    uint32_t off = b->arena_len, room = b->arena_cap - b->arena_len;
                    long nl = tesc ? unescape(tn, tl, b->arena + off, room ? room - 1 : 0, false)
                                   : (tl < room ? (long)tl : -2);
                    if (nl == -2) return fb_err_set(err, FB_ERANGE, "message too large for a batch (names)");
                    if (nl < 0) return fail(&j, nl == -3 ? "NUL in a tag name" : "bad escape in a tag name"), FB_EPROTO;
                    if (!tesc) memcpy(b->arena + off, tn, (size_t)nl);
                    b->arena[off + (uint32_t)nl] = 0;
                    b->arena_len += (uint32_t)nl + 1;
                    struct val_parts vp;
                    if (!read_value(&j, &vp)) return FB_EPROTO;
                    int rc = add_value(b, b->arena + off, off, &vp, types, err);
                    if (rc < 0) return rc;
                } while (eat(&j, ','));
                if (!eat(&j, '}')) return fail(&j, "expected '}' after values"), FB_EPROTO;
            } else if (!skip_value(&j, 1)) {
                return FB_EPROTO;
            }
        } while (eat(&j, ','));
        if (!eat(&j, '}')) return fail(&j, "expected '}'"), FB_EPROTO;
    }
    ws(&j);
    if (j.p != j.end) return fail(&j, "data after the object"), FB_EPROTO;
    if (!seen_values) return fb_err_set(err, FB_EPROTO, "no \"values\": not a telemetry message");
    if (msg_ts == TS_UNSET) msg_ts = now_ns;
    b->ts = msg_ts;
    for (uint32_t i = 0; i < b->n; i++)
        if (b->s[i].ts_src == TS_UNSET) b->s[i].ts_src = b->s[i].ts_gw = msg_ts;
    return 0;
}
