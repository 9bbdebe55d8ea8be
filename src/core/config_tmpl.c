/* config_tmpl.c — placeholder substitution for `for:` repetition in the config.
 *
 * A device or tag with `for: {line: "1..3", i: [1, 2]}` is repeated for the
 * cartesian product of its loop variables; in every string of that entry
 *
 *     {line}        the variable's value
 *     {line:02}     zero-padded to width 2 ({line:3} pads with spaces)
 *     {(i-1)*2+100} integer arithmetic: + - * / % and parentheses
 *
 * are replaced.  Braces that are not about loop variables — `{site}` in a
 * topic template, `{foo}` — are left alone, so the loader can run every
 * string through here without knowing what it is.  An expression is only
 * evaluated when it mentions at least one loop variable; then every name in
 * it must be one (a typo like {i+linee} is an error, not silent text).
 * Evaluation is a small recursive-descent parser over int64 with overflow
 * and division-by-zero checks: no allocation besides the output string.
 * Its recursion (parentheses, unary minus) is bounded by FB_TMPL_MAX_DEPTH,
 * so a hostile `{((((…i))))}` is an error, not a stack overflow.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config_tmpl.h"

bool fb_tmpl_int(const char *s, int64_t *v)
{
    const char *p = s;
    while (*p == ' ') p++;
    if (*p == '+' || *p == '-') p++;
    if (!isdigit((unsigned char)*p)) return false;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    while (*end == ' ') end++;
    if (*end || errno) return false;
    *v = x;
    return true;
}

int fb_tmpl_range(const char *s, int64_t *lo, int64_t *hi)
{
    const char *dots = strstr(s, "..");
    if (!dots || dots == s) return FB_EINVAL;
    char a[32];
    size_t n = (size_t)(dots - s);
    if (n >= sizeof a) return FB_EINVAL;
    memcpy(a, s, n);
    a[n] = 0;
    if (!fb_tmpl_int(a, lo) || !fb_tmpl_int(dots + 2, hi)) return FB_EINVAL;
    return 0;
}

static const struct fb_tvar *lookup(const struct fb_tvars *vs, const char *name, size_t n)
{
    for (; vs; vs = vs->parent)
        for (int i = 0; i < vs->n; i++)
            if (strlen(vs->v[i].name) == n && memcmp(vs->v[i].name, name, n) == 0) return &vs->v[i];
    return NULL;
}

/* ---------------------------------------------------------- expressions */
struct ev {
    const char *p, *end;
    const struct fb_tvars *vars;
    struct fb_err *err;
    int rc;
    int depth; /* open parentheses and unary minus signs */
};

static void skip(struct ev *e)
{
    while (e->p < e->end && *e->p == ' ') e->p++;
}

static int64_t ev_fail(struct ev *e, const char *fmt, const char *a, int an)
{
    if (e->rc == 0) {
        char buf[200];
        snprintf(buf, sizeof buf, fmt, an, a);
        fb_err_set(e->err, FB_EINVAL, "%s", buf);
        e->rc = FB_EINVAL;
    }
    return 0;
}

static int64_t ev_expr(struct ev *e);

static int64_t ev_primary(struct ev *e)
{
    skip(e);
    if (e->p >= e->end) return ev_fail(e, "%.*sexpression ends too early", "", 0);
    char c = *e->p;
    if ((c == '(' || c == '-') && e->depth >= FB_TMPL_MAX_DEPTH) {
        char msg[96];
        snprintf(msg, sizeof msg, "expression nested too deeply (more than %d parentheses or signs)",
                 FB_TMPL_MAX_DEPTH);
        return ev_fail(e, "%.*s", msg, (int)strlen(msg));
    }
    if (c == '(') {
        e->p++;
        e->depth++;
        int64_t v = ev_expr(e);
        e->depth--;
        if (e->rc) return 0;
        skip(e);
        if (e->p >= e->end || *e->p != ')') return ev_fail(e, "%.*smissing ')'", "", 0);
        e->p++;
        return v;
    }
    if (c == '-') {
        e->p++;
        e->depth++;
        int64_t v = ev_primary(e);
        e->depth--;
        if (e->rc) return 0;
        if (v == INT64_MIN) return ev_fail(e, "%.*sinteger overflow", "", 0);
        return -v;
    }
    if (isdigit((unsigned char)c)) {
        int64_t v = 0;
        while (e->p < e->end && isdigit((unsigned char)*e->p)) {
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *e->p - '0', &v))
                return ev_fail(e, "%.*sinteger overflow", "", 0);
            e->p++;
        }
        return v;
    }
    if (isalpha((unsigned char)c) || c == '_') {
        const char *s = e->p;
        while (e->p < e->end && (isalnum((unsigned char)*e->p) || *e->p == '_')) e->p++;
        const struct fb_tvar *v = lookup(e->vars, s, (size_t)(e->p - s));
        if (!v) return ev_fail(e, "unknown loop variable '%.*s' in expression", s, (int)(e->p - s));
        if (!v->is_int)
            return ev_fail(e, "loop variable '%.*s' is not an integer; it cannot be used in arithmetic", s,
                           (int)(e->p - s));
        return v->i;
    }
    return ev_fail(e, "unexpected '%.*s' in expression", e->p, 1);
}

static int64_t ev_term(struct ev *e)
{
    int64_t v = ev_primary(e);
    for (;;) {
        skip(e);
        if (e->rc || e->p >= e->end) return v;
        char op = *e->p;
        if (op != '*' && op != '/' && op != '%') return v;
        e->p++;
        int64_t r = ev_primary(e);
        if (e->rc) return 0;
        if (op == '*') {
            if (__builtin_mul_overflow(v, r, &v)) return ev_fail(e, "%.*sinteger overflow", "", 0);
        } else {
            if (r == 0) return ev_fail(e, "%.*sdivision by zero", "", 0);
            if (v == INT64_MIN && r == -1) return ev_fail(e, "%.*sinteger overflow", "", 0);
            v = op == '/' ? v / r : v % r;
        }
    }
}

static int64_t ev_expr(struct ev *e)
{
    int64_t v = ev_term(e);
    for (;;) {
        skip(e);
        if (e->rc || e->p >= e->end) return v;
        char op = *e->p;
        if (op != '+' && op != '-') return v;
        e->p++;
        int64_t r = ev_term(e);
        if (e->rc) return 0;
        bool ovf = op == '+' ? __builtin_add_overflow(v, r, &v) : __builtin_sub_overflow(v, r, &v);
        if (ovf) return ev_fail(e, "%.*sinteger overflow", "", 0);
    }
}

/* Does [s,e) look like an expression over at least one loop variable? */
static bool is_expr(const struct fb_tvars *vars, const char *s, const char *e)
{
    bool known = false;
    for (const char *p = s; p < e;) {
        if (isalpha((unsigned char)*p) || *p == '_') {
            const char *q = p;
            while (q < e && (isalnum((unsigned char)*q) || *q == '_')) q++;
            if (lookup(vars, p, (size_t)(q - p))) known = true;
            p = q;
        } else if (isdigit((unsigned char)*p) || strchr(" +-*/%()", *p)) {
            p++;
        } else {
            return false;
        }
    }
    return known;
}

/* ------------------------------------------------------------ the string */
struct sb {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_put(struct sb *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 64;
        while (b->len + n + 1 > c) c *= 2;
        char *t = realloc(b->p, c);
        if (!t) {
            b->oom = true;
            return;
        }
        b->p = t;
        b->cap = c;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

/* Parse ":02" / ":3" format; returns false if fmt is not a width. */
static bool parse_fmt(const char *s, const char *e, bool *zero, int *width)
{
    *zero = false;
    *width = 0;
    if (s == e) return false;
    if (*s == '0') *zero = true;
    for (const char *p = s; p < e; p++) {
        if (!isdigit((unsigned char)*p)) return false;
        *width = *width * 10 + (*p - '0');
        if (*width > 64) return false;
    }
    return true;
}

int fb_tmpl_subst(const struct fb_tvars *vars, const char *in, char **out, struct fb_err *err)
{
    *out = NULL;
    struct sb b = {0};
    sb_put(&b, "", 0);
    const char *p = in;
    while (*p) {
        const char *open = vars ? strchr(p, '{') : NULL;
        if (!open) {
            sb_put(&b, p, strlen(p));
            break;
        }
        sb_put(&b, p, (size_t)(open - p));
        const char *close = strchr(open + 1, '}');
        if (!close) {
            sb_put(&b, open, strlen(open));
            break;
        }
        const char *cs = open + 1, *ce = close;
        /* optional :fmt at the end */
        const char *colon = NULL;
        for (const char *q = ce; q > cs; q--)
            if (q[-1] == ':') {
                colon = q - 1;
                break;
            }
        bool zero = false;
        int width = 0;
        const char *xe = ce;
        if (colon) {
            if (!parse_fmt(colon + 1, ce, &zero, &width)) {
                sb_put(&b, open, (size_t)(close - open + 1));
                p = close + 1;
                continue;
            }
            xe = colon;
        }
        /* trim */
        const char *xs = cs;
        while (xs < xe && *xs == ' ') xs++;
        while (xe > xs && xe[-1] == ' ') xe--;
        char num[160];
        const char *val = NULL;
        bool is_int = false;
        int64_t iv = 0;
        const struct fb_tvar *v = NULL;
        const char *q = xs;
        while (q < xe && (isalnum((unsigned char)*q) || *q == '_')) q++;
        if (q == xe && xs < xe && !isdigit((unsigned char)*xs) && (v = lookup(vars, xs, (size_t)(xe - xs))) != NULL) {
            val = v->val;
            is_int = v->is_int;
            iv = v->i;
        } else if (xs < xe && is_expr(vars, xs, xe)) {
            struct ev e = {xs, xe, vars, err, 0, 0};
            iv = ev_expr(&e);
            skip(&e);
            if (!e.rc && e.p != e.end) ev_fail(&e, "unexpected '%.*s' in expression", e.p, 1);
            if (e.rc) {
                free(b.p);
                return e.rc;
            }
            is_int = true;
        } else {
            sb_put(&b, open, (size_t)(close - open + 1));
            p = close + 1;
            continue;
        }
        if (is_int) {
            /* sign, then zero or space padding up to width */
            char digits[24];
            unsigned long long mag = iv < 0 ? 0ull - (unsigned long long)iv : (unsigned long long)iv;
            int nd = snprintf(digits, sizeof digits, "%llu", mag);
            int pad = width - nd - (iv < 0);
            size_t k = 0;
            if (!zero)
                for (; pad > 0 && k < sizeof num - 30; pad--) num[k++] = ' ';
            if (iv < 0) num[k++] = '-';
            if (zero)
                for (; pad > 0 && k < sizeof num - 30; pad--) num[k++] = '0';
            memcpy(num + k, digits, (size_t)nd);
            k += (size_t)nd;
            sb_put(&b, num, k);
        } else {
            int pad = width - (int)strlen(val);
            for (int k = 0; k < pad; k++) sb_put(&b, " ", 1);
            sb_put(&b, val, strlen(val));
        }
        p = close + 1;
    }
    if (b.oom) {
        free(b.p);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    *out = b.p;
    return 0;
}
