/* expr.c — the expression language of computed tags: a recursive-descent
 * compiler that emits a postfix program, and a switch loop that runs it on a
 * fixed stack.
 *
 * Why a stack program and not a tree walk: the program is one flat array,
 * evaluation is a loop without recursion or pointers to chase, and the
 * deepest stack a program can need is known when it is compiled, so the
 * evaluator's stack lives in its own frame and nothing is allocated per
 * evaluation (≥ 1 M evaluations/s is the bar; bench/bench_expr.c).
 *
 * Grammar, lowest precedence first:
 *   or      := and { ("or" | "||") and }
 *   and     := not { ("and" | "&&") not }
 *   not     := ("not" | "!") not | cmp
 *   cmp     := sum [ ("<" | "<=" | ">" | ">=" | "==" | "!=") sum ]      (no chains)
 *   sum     := term { ("+" | "-") term }
 *   term    := unary { ("*" | "/" | "%") unary }
 *   unary   := ("-" | "+") unary | power
 *   power   := primary [ "^" unary ]                                    (right-assoc.)
 *   primary := number | "true" | "false" | name | 'quoted name'
 *            | function "(" [ or { "," or } ] ")" | "(" or ")"
 * A name is [A-Za-z_][A-Za-z0-9_.]* with an optional [N] (an array
 * element); anything else (other devices, '-' in names) is written in single
 * quotes.  Booleans are 0 and 1; "and"/"or"/"not" treat any non-zero value
 * as true and give 0 or 1.  Division by zero gives ±Inf or NaN: the caller
 * turns a non-finite result into a Bad value.
 */
#include "edge/expr.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum op {
    OP_CONST,
    OP_VAR,
    OP_NEG,
    OP_NOT,
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_MOD,
    OP_POW,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_EQ,
    OP_NE,
    OP_AND,
    OP_OR,
    OP_CALL
};

enum fn {
    FN_ABS,
    FN_SQRT,
    FN_EXP,
    FN_LN,
    FN_LOG10,
    FN_SIN,
    FN_COS,
    FN_TAN,
    FN_ATAN2,
    FN_FLOOR,
    FN_CEIL,
    FN_ROUND,
    FN_POW,
    FN_MIN,
    FN_MAX,
    FN_AVG,
    FN_CLAMP,
    FN_IF
};

static const struct {
    const char *name;
    uint8_t fn, min, max; /* max 255: any number */
} fns[] = {
    {"abs", FN_ABS, 1, 1},     {"sqrt", FN_SQRT, 1, 1},   {"exp", FN_EXP, 1, 1},   {"ln", FN_LN, 1, 1},
    {"log10", FN_LOG10, 1, 1}, {"sin", FN_SIN, 1, 1},     {"cos", FN_COS, 1, 1},   {"tan", FN_TAN, 1, 1},
    {"atan2", FN_ATAN2, 2, 2}, {"floor", FN_FLOOR, 1, 1}, {"ceil", FN_CEIL, 1, 1}, {"round", FN_ROUND, 1, 1},
    {"pow", FN_POW, 2, 2},     {"min", FN_MIN, 1, 255},   {"max", FN_MAX, 1, 255}, {"avg", FN_AVG, 1, 255},
    {"clamp", FN_CLAMP, 3, 3}, {"if", FN_IF, 3, 3},
};
#define NFNS (sizeof fns / sizeof fns[0])

struct ins {
    uint8_t op;   /* enum op */
    uint8_t fn;   /* OP_CALL: enum fn */
    uint8_t argc; /* OP_CALL */
    uint32_t arg; /* OP_CONST: index in k; OP_VAR: slot */
};

struct fb_expr {
    struct ins *code;
    uint32_t n;
    double *k;
    uint32_t nk;
    bool is_bool;
};

struct parser {
    const char *src, *p;
    struct ins code[FB_EXPR_MAX_CODE];
    uint32_t n;
    double k[FB_EXPR_MAX_CODE];
    uint32_t nk;
    int depth, max_depth; /* evaluation stack */
    int nest;             /* parser recursion */
    bool last_bool;       /* the last emitted value is 0/1 */
    fb_expr_resolve_fn resolve;
    void *ctx;
    struct fb_err *err;
    bool failed;
};

static int col(const struct parser *ps, const char *at) { return (int)(at - ps->src) + 1; }

static void fail_at(struct parser *ps, const char *at, const char *fmt, ...) FB_PRINTF(3, 4);
static void fail_at(struct parser *ps, const char *at, const char *fmt, ...)
{
    if (ps->failed) return;
    ps->failed = true;
    char msg[240];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fb_err_set(ps->err, FB_EINVAL, "at column %d: %s", col(ps, at), msg);
}

static void skip_ws(struct parser *ps)
{
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r') ps->p++;
}

/* Emit an instruction; `push` is its net effect on the stack. */
static void emit(struct parser *ps, uint8_t op, uint32_t arg, uint8_t fn, uint8_t argc, int push)
{
    if (ps->failed) return;
    if (ps->n >= FB_EXPR_MAX_CODE) {
        fail_at(ps, ps->p, "expression too long (more than %d instructions)", FB_EXPR_MAX_CODE);
        return;
    }
    ps->code[ps->n++] = (struct ins){op, fn, argc, arg};
    ps->depth += push;
    if (ps->depth > ps->max_depth) ps->max_depth = ps->depth;
    if (ps->max_depth > FB_EXPR_MAX_DEPTH)
        fail_at(ps, ps->p, "expression nested too deeply (more than %d levels)", FB_EXPR_MAX_DEPTH);
}

static void emit_const(struct parser *ps, double v)
{
    if (ps->failed) return;
    ps->k[ps->nk] = v;
    emit(ps, OP_CONST, ps->nk++, 0, 0, 1);
    ps->last_bool = v == 0 || v == 1;
}

static bool word_is(const char *p, const char *w)
{
    size_t n = strlen(w);
    return !strncmp(p, w, n) && !(isalnum((unsigned char)p[n]) || p[n] == '_' || p[n] == '.');
}

static void parse_or(struct parser *ps);

static bool enter(struct parser *ps)
{
    if (++ps->nest > FB_EXPR_MAX_DEPTH) {
        fail_at(ps, ps->p, "expression nested too deeply (more than %d levels)", FB_EXPR_MAX_DEPTH);
        return false;
    }
    return true;
}

static void parse_call(struct parser *ps, const char *name, size_t len, const char *at)
{
    int which = -1;
    for (size_t i = 0; i < NFNS; i++)
        if (strlen(fns[i].name) == len && !strncmp(fns[i].name, name, len)) which = (int)i;
    if (which < 0) {
        fail_at(ps, at,
                "unknown function '%.*s' (known: abs sqrt exp ln log10 sin cos tan atan2 floor ceil round pow min max "
                "avg clamp if)",
                (int)(len < 40 ? len : 40), name);
        return;
    }
    ps->p++; /* '(' */
    skip_ws(ps);
    int argc = 0;
    if (*ps->p != ')') {
        for (;;) {
            parse_or(ps);
            if (ps->failed) return;
            argc++;
            skip_ws(ps);
            if (*ps->p == ',') {
                ps->p++;
                continue;
            }
            break;
        }
    }
    if (*ps->p != ')') {
        fail_at(ps, ps->p, "expected ',' or ')' in the arguments of %s()", fns[which].name);
        return;
    }
    ps->p++;
    if (argc < fns[which].min || argc > fns[which].max) {
        if (fns[which].min == fns[which].max)
            fail_at(ps, at, "%s() takes %d argument%s, got %d", fns[which].name, fns[which].min,
                    fns[which].min == 1 ? "" : "s", argc);
        else
            fail_at(ps, at, "%s() takes at least %d argument, got %d", fns[which].name, fns[which].min, argc);
        return;
    }
    emit(ps, OP_CALL, 0, fns[which].fn, (uint8_t)argc, 1 - argc);
    ps->last_bool = false;
}

static void parse_ref(struct parser *ps, const char *name, size_t len, bool quoted, const char *at)
{
    struct fb_err e = {0};
    int slot = ps->resolve ? ps->resolve(ps->ctx, name, len, quoted, &e) : FB_ENOENT;
    if (slot < 0) {
        if (!e.msg[0]) fb_err_set(&e, FB_ENOENT, "unknown name '%.*s'", (int)(len < 80 ? len : 80), name);
        fail_at(ps, at, "%s", e.msg);
        return;
    }
    emit(ps, OP_VAR, (uint32_t)slot, 0, 0, 1);
    ps->last_bool = false;
}

static void parse_primary(struct parser *ps)
{
    skip_ws(ps);
    const char *at = ps->p;
    char c = *ps->p;
    if (isdigit((unsigned char)c) || (c == '.' && isdigit((unsigned char)ps->p[1]))) {
        const char *q = ps->p;
        while (isdigit((unsigned char)*q)) q++;
        if (*q == '.') {
            q++;
            while (isdigit((unsigned char)*q)) q++;
        }
        if (*q == 'e' || *q == 'E') {
            const char *r = q + 1;
            if (*r == '+' || *r == '-') r++;
            if (!isdigit((unsigned char)*r)) {
                fail_at(ps, q, "a number's exponent needs digits");
                return;
            }
            while (isdigit((unsigned char)*r)) r++;
            q = r;
        }
        char buf[64];
        size_t n = (size_t)(q - ps->p);
        if (n >= sizeof buf) {
            fail_at(ps, at, "number too long");
            return;
        }
        memcpy(buf, ps->p, n);
        buf[n] = 0;
        double v = strtod(buf, NULL);
        if (!isfinite(v)) {
            fail_at(ps, at, "number out of range");
            return;
        }
        if (isalpha((unsigned char)*q) || *q == '_') {
            fail_at(ps, q, "expected an operator after the number");
            return;
        }
        ps->p = q;
        emit_const(ps, v);
        ps->last_bool = false;
        return;
    }
    if (c == '\'') {
        const char *s = ps->p + 1, *e = s;
        while (*e && *e != '\'' && *e != '\n') e++;
        if (*e != '\'') {
            fail_at(ps, at, "unterminated quoted name (a closing ' is missing)");
            return;
        }
        if (e == s) {
            fail_at(ps, at, "empty quoted name ''");
            return;
        }
        ps->p = e + 1;
        parse_ref(ps, s, (size_t)(e - s), true, at);
        return;
    }
    if (isalpha((unsigned char)c) || c == '_') {
        const char *s = ps->p, *e = s;
        while (isalnum((unsigned char)*e) || *e == '_' || *e == '.') e++;
        if (*e == '[') { /* an array element: temps[3] */
            const char *r = e + 1;
            while (isdigit((unsigned char)*r)) r++;
            if (r > e + 1 && *r == ']') e = r + 1;
        }
        size_t len = (size_t)(e - s);
        if (len == 4 && !strncmp(s, "true", 4)) {
            ps->p = e;
            emit_const(ps, 1);
            ps->last_bool = true;
            return;
        }
        if (len == 5 && !strncmp(s, "false", 5)) {
            ps->p = e;
            emit_const(ps, 0);
            ps->last_bool = true;
            return;
        }
        if ((len == 3 && (!strncmp(s, "and", 3) || !strncmp(s, "not", 3))) || (len == 2 && !strncmp(s, "or", 2))) {
            fail_at(ps, at, "expected a value, got the operator '%s'",
                    len == 2                  ? "or"
                    : len == 3 && s[0] == 'a' ? "and"
                                              : "not");
            return;
        }
        ps->p = e;
        const char *save = ps->p;
        skip_ws(ps);
        if (*ps->p == '(') {
            parse_call(ps, s, len, at);
            return;
        }
        ps->p = save;
        parse_ref(ps, s, len, false, at);
        return;
    }
    if (c == '(') {
        ps->p++;
        if (!enter(ps)) return;
        parse_or(ps);
        ps->nest--;
        if (ps->failed) return;
        skip_ws(ps);
        if (*ps->p != ')') {
            fail_at(ps, ps->p, "expected ')'");
            return;
        }
        ps->p++;
        return;
    }
    if (!c)
        fail_at(ps, at, "the expression ends where a value is expected");
    else if (c == '"')
        fail_at(ps, at, "names of other devices' tags go in single quotes: 'device/tag'");
    else {
        fail_at(ps, at, "expected a value, got '%c'", isprint((unsigned char)c) ? c : '?');
    }
}

static void parse_unary(struct parser *ps);

static void parse_power(struct parser *ps)
{
    parse_primary(ps);
    skip_ws(ps);
    if (!ps->failed && *ps->p == '^') {
        ps->p++;
        if (!enter(ps)) return;
        parse_unary(ps);
        ps->nest--;
        emit(ps, OP_POW, 0, 0, 0, -1);
        ps->last_bool = false;
    }
}

static void parse_unary(struct parser *ps)
{
    skip_ws(ps);
    if (*ps->p == '-' || *ps->p == '+') {
        bool neg = *ps->p == '-';
        ps->p++;
        if (!enter(ps)) return;
        parse_unary(ps);
        ps->nest--;
        if (neg) {
            emit(ps, OP_NEG, 0, 0, 0, 0);
            ps->last_bool = false;
        }
        return;
    }
    parse_power(ps);
}

static void parse_term(struct parser *ps)
{
    parse_unary(ps);
    for (;;) {
        skip_ws(ps);
        char c = *ps->p;
        if (ps->failed || (c != '*' && c != '/' && c != '%')) return;
        ps->p++;
        parse_unary(ps);
        emit(ps, c == '*' ? OP_MUL : c == '/' ? OP_DIV : OP_MOD, 0, 0, 0, -1);
        ps->last_bool = false;
    }
}

static void parse_sum(struct parser *ps)
{
    parse_term(ps);
    for (;;) {
        skip_ws(ps);
        char c = *ps->p;
        if (ps->failed || (c != '+' && c != '-')) return;
        ps->p++;
        parse_term(ps);
        emit(ps, c == '+' ? OP_ADD : OP_SUB, 0, 0, 0, -1);
        ps->last_bool = false;
    }
}

/* A comparison operator at p: its op and length (0 when none). */
static int cmp_op(const char *p, uint8_t *op)
{
    if (p[0] == '<' && p[1] == '=') return *op = OP_LE, 2;
    if (p[0] == '>' && p[1] == '=') return *op = OP_GE, 2;
    if (p[0] == '=' && p[1] == '=') return *op = OP_EQ, 2;
    if (p[0] == '!' && p[1] == '=') return *op = OP_NE, 2;
    if (p[0] == '<') return *op = OP_LT, 1;
    if (p[0] == '>') return *op = OP_GT, 1;
    return 0;
}

static void parse_cmp(struct parser *ps)
{
    parse_sum(ps);
    if (ps->failed) return;
    skip_ws(ps);
    uint8_t op;
    int n = cmp_op(ps->p, &op);
    if (!n) {
        if (ps->p[0] == '=' && ps->p[1] != '=') fail_at(ps, ps->p, "'=' is not an operator: compare with ==");
        return;
    }
    ps->p += n;
    parse_sum(ps);
    emit(ps, op, 0, 0, 0, -1);
    ps->last_bool = true;
    skip_ws(ps);
    if (!ps->failed && cmp_op(ps->p, &op)) fail_at(ps, ps->p, "comparisons do not chain: write a < b and b < c");
}

static void parse_not(struct parser *ps)
{
    skip_ws(ps);
    bool bang = ps->p[0] == '!' && ps->p[1] != '=';
    if (bang || word_is(ps->p, "not")) {
        ps->p += bang ? 1 : 3;
        if (!enter(ps)) return;
        parse_not(ps);
        ps->nest--;
        emit(ps, OP_NOT, 0, 0, 0, 0);
        ps->last_bool = true;
        return;
    }
    parse_cmp(ps);
}

static void parse_and(struct parser *ps)
{
    parse_not(ps);
    for (;;) {
        skip_ws(ps);
        if (ps->failed) return;
        if (ps->p[0] == '&' && ps->p[1] == '&')
            ps->p += 2;
        else if (word_is(ps->p, "and"))
            ps->p += 3;
        else
            return;
        parse_not(ps);
        emit(ps, OP_AND, 0, 0, 0, -1);
        ps->last_bool = true;
    }
}

static void parse_or(struct parser *ps)
{
    if (!enter(ps)) return;
    parse_and(ps);
    for (;;) {
        skip_ws(ps);
        if (ps->failed) break;
        if (ps->p[0] == '|' && ps->p[1] == '|')
            ps->p += 2;
        else if (word_is(ps->p, "or"))
            ps->p += 2;
        else
            break;
        parse_and(ps);
        emit(ps, OP_OR, 0, 0, 0, -1);
        ps->last_bool = true;
    }
    ps->nest--;
}

int fb_expr_compile(const char *src, fb_expr_resolve_fn resolve, void *ctx, struct fb_expr **out, struct fb_err *err)
{
    *out = NULL;
    if (!src) return fb_err_set(err, FB_EINVAL, "no expression");
    size_t len = strlen(src);
    if (len > FB_EXPR_MAX_TEXT)
        return fb_err_set(err, FB_EINVAL, "expression longer than %d characters", FB_EXPR_MAX_TEXT);
    struct parser *ps = calloc(1, sizeof *ps);
    if (!ps) return fb_err_set(err, FB_ENOMEM, "out of memory");
    ps->src = ps->p = src;
    ps->resolve = resolve;
    ps->ctx = ctx;
    ps->err = err;
    skip_ws(ps);
    if (!*ps->p) {
        free(ps);
        return fb_err_set(err, FB_EINVAL, "empty expression");
    }
    parse_or(ps);
    skip_ws(ps);
    if (!ps->failed && *ps->p) {
        if (*ps->p == ')')
            fail_at(ps, ps->p, "')' without a matching '('");
        else if (*ps->p == '=')
            fail_at(ps, ps->p, "'=' is not an operator: compare with ==");
        else
            fail_at(ps, ps->p, "expected an operator or the end of the expression");
    }
    if (ps->failed) {
        free(ps);
        return FB_EINVAL;
    }
    FB_ASSERT(ps->depth == 1);
    struct fb_expr *e = calloc(1, sizeof *e);
    if (e) {
        e->code = malloc(ps->n * sizeof *e->code);
        e->k = malloc((ps->nk ? ps->nk : 1) * sizeof *e->k);
    }
    if (!e || !e->code || !e->k) {
        fb_expr_free(e);
        free(ps);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    memcpy(e->code, ps->code, ps->n * sizeof *e->code);
    memcpy(e->k, ps->k, ps->nk * sizeof *e->k);
    e->n = ps->n;
    e->nk = ps->nk;
    e->is_bool = ps->last_bool;
    free(ps);
    *out = e;
    return 0;
}

void fb_expr_free(struct fb_expr *e)
{
    if (!e) return;
    free(e->code);
    free(e->k);
    free(e);
}

bool fb_expr_is_bool(const struct fb_expr *e) { return e && e->is_bool; }
uint32_t fb_expr_size(const struct fb_expr *e) { return e ? e->n : 0; }

static double call(uint8_t fn, const double *a, int argc)
{
    switch (fn) {
        case FN_ABS: return fabs(a[0]);
        case FN_SQRT: return sqrt(a[0]);
        case FN_EXP: return exp(a[0]);
        case FN_LN: return log(a[0]);
        case FN_LOG10: return log10(a[0]);
        case FN_SIN: return sin(a[0]);
        case FN_COS: return cos(a[0]);
        case FN_TAN: return tan(a[0]);
        case FN_ATAN2: return atan2(a[0], a[1]);
        case FN_FLOOR: return floor(a[0]);
        case FN_CEIL: return ceil(a[0]);
        case FN_ROUND: return round(a[0]);
        case FN_POW: return pow(a[0], a[1]);
        case FN_MIN: {
            double m = a[0];
            for (int i = 1; i < argc; i++)
                if (a[i] < m || isnan(a[i])) m = a[i];
            return m;
        }
        case FN_MAX: {
            double m = a[0];
            for (int i = 1; i < argc; i++)
                if (a[i] > m || isnan(a[i])) m = a[i];
            return m;
        }
        case FN_AVG: {
            double s = 0;
            for (int i = 0; i < argc; i++) s += a[i];
            return s / argc;
        }
        case FN_CLAMP: return a[0] < a[1] ? a[1] : a[0] > a[2] ? a[2] : a[0];
        case FN_IF: return a[0] != 0 ? a[1] : a[2];
    }
    return NAN;
}

double fb_expr_eval(const struct fb_expr *e, const double *vars)
{
    double st[FB_EXPR_MAX_DEPTH + 1];
    int sp = 0; /* next free slot */
    const struct ins *c = e->code, *end = e->code + e->n;
    for (; c < end; c++) {
        switch (c->op) {
            case OP_CONST: st[sp++] = e->k[c->arg]; break;
            case OP_VAR: st[sp++] = vars[c->arg]; break;
            case OP_NEG: st[sp - 1] = -st[sp - 1]; break;
            case OP_NOT: st[sp - 1] = st[sp - 1] == 0 ? 1 : 0; break;
            case OP_ADD: sp--, st[sp - 1] += st[sp]; break;
            case OP_SUB: sp--, st[sp - 1] -= st[sp]; break;
            case OP_MUL: sp--, st[sp - 1] *= st[sp]; break;
            case OP_DIV: sp--, st[sp - 1] /= st[sp]; break;
            case OP_MOD: sp--, st[sp - 1] = fmod(st[sp - 1], st[sp]); break;
            case OP_POW: sp--, st[sp - 1] = pow(st[sp - 1], st[sp]); break;
            case OP_LT: sp--, st[sp - 1] = st[sp - 1] < st[sp]; break;
            case OP_LE: sp--, st[sp - 1] = st[sp - 1] <= st[sp]; break;
            case OP_GT: sp--, st[sp - 1] = st[sp - 1] > st[sp]; break;
            case OP_GE: sp--, st[sp - 1] = st[sp - 1] >= st[sp]; break;
            case OP_EQ: sp--, st[sp - 1] = st[sp - 1] == st[sp]; break;
            case OP_NE: sp--, st[sp - 1] = st[sp - 1] != st[sp]; break;
            case OP_AND: sp--, st[sp - 1] = st[sp - 1] != 0 && st[sp] != 0; break;
            case OP_OR: sp--, st[sp - 1] = st[sp - 1] != 0 || st[sp] != 0; break;
            case OP_CALL:
                sp -= c->argc;
                st[sp] = call(c->fn, &st[sp], c->argc);
                sp++;
                break;
        }
    }
    return st[0];
}
