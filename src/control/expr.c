/* expr.c — interlock conditions (grammar in expr.h): a recursive-descent
 * parser that emits postfix operations, and a stack machine that runs them.
 * The stack depth is bounded by the number of operations, itself bounded. */
#include "control/expr.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct px {
    const char *s, *p;
    struct fb_expr *e;
    struct fb_err *err;
    int depth;
};

static void skip(struct px *x)
{
    while (*x->p == ' ' || *x->p == '\t' || *x->p == '\n' || *x->p == '\r') x->p++;
}

static int fail(struct px *x, const char *what)
{
    if (x->err->code) return FB_EINVAL; /* the first error counts */
    if (*x->p) return fb_err_set(x->err, FB_EINVAL, "column %d: %s, found '%.12s'", (int)(x->p - x->s) + 1, what, x->p);
    return fb_err_set(x->err, FB_EINVAL, "column %d: %s, found the end", (int)(x->p - x->s) + 1, what);
}

static int emit(struct px *x, uint8_t op, uint32_t arg, double k)
{
    if (x->e->nops >= FB_EXPR_MAX_OPS) return fail(x, "condition too long");
    x->e->ops[x->e->nops++] = (struct fb_expr_op){op, arg, k};
    return 0;
}

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.' || c == '/' || c == '[' || c == ']';
}

/* A keyword at p (whole word). */
static bool word(struct px *x, const char *w)
{
    size_t n = strlen(w);
    if (strncmp(x->p, w, n) || name_char(x->p[n])) return false;
    x->p += n;
    return true;
}

static int p_or(struct px *x);

static int p_atom(struct px *x)
{
    skip(x);
    if (*x->p == '(') {
        if (++x->depth > 64) return fail(x, "parentheses nested too deep");
        x->p++;
        int rc = p_or(x);
        if (rc) return rc;
        skip(x);
        if (*x->p != ')') return fail(x, "expected ')'");
        x->p++;
        x->depth--;
        return 0;
    }
    if (word(x, "true")) return emit(x, FB_XO_CONST, 0, 1);
    if (word(x, "false")) return emit(x, FB_XO_CONST, 0, 0);
    if (isdigit((unsigned char)*x->p) || ((*x->p == '-' || *x->p == '+' || *x->p == '.') && x->p[1] &&
                                          (isdigit((unsigned char)x->p[1]) || x->p[1] == '.'))) {
        char *end;
        double v = strtod(x->p, &end);
        if (end == x->p || !isfinite(v)) return fail(x, "expected a number");
        x->p = end;
        return emit(x, FB_XO_CONST, 0, v);
    }
    if (isalpha((unsigned char)*x->p) || *x->p == '_') {
        const char *b = x->p;
        while (name_char(*x->p)) x->p++;
        size_t n = (size_t)(x->p - b);
        if (!memchr(b, '/', n)) {
            x->p = b;
            return fail(x, "expected a tag as device/tag, a number, true, false or '('");
        }
        uint32_t i;
        for (i = 0; i < x->e->nnames; i++)
            if (strlen(x->e->names[i]) == n && !strncmp(x->e->names[i], b, n)) break;
        if (i == x->e->nnames) {
            if (i >= FB_EXPR_MAX_TAGS) return fail(x, "too many tags in one condition");
            x->e->names[i] = strndup(b, n);
            if (!x->e->names[i]) return fb_err_set(x->err, FB_ENOMEM, "out of memory");
            x->e->nnames++;
        }
        return emit(x, FB_XO_TAG, i, 0);
    }
    return fail(x, "expected a tag (device/tag), a number, true, false or '('");
}

static int p_cmp(struct px *x)
{
    int rc = p_atom(x);
    if (rc) return rc;
    skip(x);
    static const struct {
        const char *t;
        uint8_t op;
    } ops[] = {{"<=", FB_XO_LE}, {">=", FB_XO_GE}, {"==", FB_XO_EQ},
               {"!=", FB_XO_NE}, {"<", FB_XO_LT},  {">", FB_XO_GT}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        size_t n = strlen(ops[i].t);
        if (strncmp(x->p, ops[i].t, n)) continue;
        x->p += n;
        if ((rc = p_atom(x))) return rc;
        return emit(x, ops[i].op, 0, 0);
    }
    if (*x->p == '=') return fail(x, "expected '==' (comparison), not '='");
    return 0;
}

static int p_not(struct px *x)
{
    skip(x);
    if (word(x, "not") || (*x->p == '!' && x->p[1] != '=' && ++x->p)) {
        if (++x->depth > 64) return fail(x, "'not' nested too deep");
        int rc = p_not(x);
        x->depth--;
        return rc ? rc : emit(x, FB_XO_NOT, 0, 0);
    }
    return p_cmp(x);
}

static int p_and(struct px *x)
{
    int rc = p_not(x);
    for (;;) {
        if (rc) return rc;
        skip(x);
        if (!word(x, "and") && !(x->p[0] == '&' && x->p[1] == '&' && (x->p += 2))) return 0;
        if ((rc = p_not(x))) return rc;
        rc = emit(x, FB_XO_AND, 0, 0);
    }
}

static int p_or(struct px *x)
{
    int rc = p_and(x);
    for (;;) {
        if (rc) return rc;
        skip(x);
        if (!word(x, "or") && !(x->p[0] == '|' && x->p[1] == '|' && (x->p += 2))) return 0;
        if ((rc = p_and(x))) return rc;
        rc = emit(x, FB_XO_OR, 0, 0);
    }
}

int fb_expr_parse(const char *text, struct fb_expr *e, struct fb_err *err)
{
    memset(e, 0, sizeof *e);
    struct fb_err local = {0};
    if (!err) err = &local;
    err->code = 0;
    struct px x = {text, text, e, err, 0};
    int rc = p_or(&x);
    if (rc) return rc;
    skip(&x);
    if (*x.p) return fail(&x, "expected 'and', 'or', a comparison or the end");
    return 0;
}

void fb_expr_free(struct fb_expr *e)
{
    for (uint32_t i = 0; i < e->nnames; i++) free(e->names[i]);
    e->nnames = 0;
    e->nops = 0;
}

bool fb_expr_eval(const struct fb_expr *e, const double *vals)
{
    double st[FB_EXPR_MAX_OPS];
    uint32_t sp = 0;
    for (uint32_t i = 0; i < e->nops; i++) {
        const struct fb_expr_op *o = &e->ops[i];
        double a, b;
        switch (o->op) {
            case FB_XO_CONST: st[sp++] = o->k; continue;
            case FB_XO_TAG: st[sp++] = vals[o->arg]; continue;
            case FB_XO_NOT: st[sp - 1] = st[sp - 1] == 0; continue;
            default: break;
        }
        b = st[--sp];
        a = st[sp - 1];
        double r = 0;
        switch (o->op) {
            case FB_XO_AND: r = a != 0 && b != 0; break;
            case FB_XO_OR: r = a != 0 || b != 0; break;
            case FB_XO_LT: r = a < b; break;
            case FB_XO_LE: r = a <= b; break;
            case FB_XO_GT: r = a > b; break;
            case FB_XO_GE: r = a >= b; break;
            case FB_XO_EQ: r = a == b; break;
            case FB_XO_NE: r = a != b; break;
        }
        st[sp - 1] = r;
    }
    return sp > 0 && st[sp - 1] != 0;
}
