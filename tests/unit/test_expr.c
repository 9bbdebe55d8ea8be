/* test_expr.c — the expression language of computed tags (src/edge/expr.c):
 * results against values computed here by C, operator precedence and
 * associativity, functions, booleans, and the compiler's errors (each
 * naming the column and what was expected). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge/expr.h"

/* Variables a..z are slots 0..25; 'dev/x' quoted names are slots 26+ in order of first use. */
static char quoted_names[8][64];
static int nquoted;

static int resolve(void *ctx, const char *name, size_t len, bool quoted, struct fb_err *err)
{
    (void)ctx;
    if (!quoted) {
        if (len == 1 && name[0] >= 'a' && name[0] <= 'z') return name[0] - 'a';
        if (len == 8 && !memcmp(name, "temps[3]", 8)) return 20;
        if (len == 6 && !memcmp(name, "t_in.x", 6)) return 21;
        return fb_err_set(err, FB_ENOENT, "no tag '%.*s'", (int)len, name);
    }
    for (int i = 0; i < nquoted; i++)
        if (strlen(quoted_names[i]) == len && !memcmp(quoted_names[i], name, len)) return 26 + i;
    if (nquoted == 8) return fb_err_set(err, FB_ERANGE, "too many");
    snprintf(quoted_names[nquoted], sizeof quoted_names[0], "%.*s", (int)len, name);
    return 26 + nquoted++;
}

static double vars[64];

static double ev(const char *src)
{
    struct fb_expr *e = NULL;
    struct fb_err err = {0};
    nquoted = 0;
    if (fb_expr_compile(src, resolve, NULL, &e, &err) != 0) fail_msg("'%s' did not compile: %s", src, err.msg);
    double r = fb_expr_eval(e, vars);
    fb_expr_free(e);
    return r;
}

/* Compiling src fails with a message containing want. */
static void bad(const char *src, const char *want)
{
    struct fb_expr *e = NULL;
    struct fb_err err = {0};
    nquoted = 0;
    int rc = fb_expr_compile(src, resolve, NULL, &e, &err);
    if (rc == 0) {
        fb_expr_free(e);
        fail_msg("'%s' compiled, expected an error with '%s'", src, want);
    }
    assert_null(e);
    if (!strstr(err.msg, want)) fail_msg("'%s': error '%s' does not contain '%s'", src, err.msg, want);
}

static void near(double a, double b, int line)
{
    if (!(fabs(a - b) <= 1e-12 * (fabs(b) > 1 ? fabs(b) : 1))) fail_msg("line %d: %.17g != %.17g", line, a, b);
}
#define NEAR(a, b) near((a), (double)(b), __LINE__)

static void test_arithmetic(void **st)
{
    (void)st;
    vars['a' - 'a'] = 70.5; /* t_in */
    vars['b' - 'a'] = 45.25;
    vars['c' - 'a'] = 2.5;
    /* the issue's example: (t_in - t_out) * flow * 4.186 */
    NEAR(ev("(a - b) * c * 4.186"), (70.5 - 45.25) * 2.5 * 4.186);
    NEAR(ev("1 + 2 * 3"), 7);
    NEAR(ev("(1 + 2) * 3"), 9);
    NEAR(ev("10 - 4 - 3"), 3);   /* left-associative */
    NEAR(ev("100 / 10 / 5"), 2); /* left-associative */
    NEAR(ev("2 ^ 3 ^ 2"), 512);  /* right-associative: 2^(3^2) */
    NEAR(ev("-2 ^ 2"), -4);      /* minus binds weaker than ^ */
    NEAR(ev("2 ^ -1"), 0.5);
    NEAR(ev("--3"), 3);
    NEAR(ev("+3 - -3"), 6);
    NEAR(ev("7 % 3"), 1);
    NEAR(ev("-7 % 3"), fmod(-7, 3));
    NEAR(ev("1.5e3 + .5 + 2E-1"), 1500.7);
    NEAR(ev("  a*2   "), 141);
    assert_true(isinf(ev("1 / 0")));
    assert_true(isnan(ev("0 / 0")));
}

static void test_logic(void **st)
{
    (void)st;
    vars[0] = 5;
    vars[1] = 0;
    assert_true(ev("a > 4") == 1);
    assert_true(ev("a >= 5") == 1);
    assert_true(ev("a < 5") == 0);
    assert_true(ev("a <= 5") == 1);
    assert_true(ev("a == 5") == 1);
    assert_true(ev("a != 5") == 0);
    assert_true(ev("a > 1 and b") == 0);
    assert_true(ev("a > 1 && b == 0") == 1);
    assert_true(ev("b or a") == 1);
    assert_true(ev("b || b") == 0);
    assert_true(ev("not b") == 1);
    assert_true(ev("!a") == 0);
    assert_true(ev("not a > 10") == 1);   /* not binds weaker than a comparison */
    assert_true(ev("1 or 0 and 0") == 1); /* and before or */
    assert_true(ev("true + true") == 2);
    assert_true(ev("false") == 0);
    /* booleans are 0/1, so they compute */
    assert_true(ev("(a > 1) * 10") == 10);
    /* is_bool: comparisons and logic at the top */
    struct fb_expr *e;
    struct fb_err err;
    assert_int_equal(fb_expr_compile("a > 1 and b < 2", resolve, NULL, &e, &err), 0);
    assert_true(fb_expr_is_bool(e));
    fb_expr_free(e);
    assert_int_equal(fb_expr_compile("(a > 1) * 2", resolve, NULL, &e, &err), 0);
    assert_false(fb_expr_is_bool(e));
    fb_expr_free(e);
}

static void test_functions(void **st)
{
    (void)st;
    vars[0] = -3.7;
    vars[1] = 12;
    NEAR(ev("abs(a)"), 3.7);
    NEAR(ev("sqrt(b + 4)"), 4);
    NEAR(ev("exp(0) + ln(1) + log10(1000)"), 4);
    NEAR(ev("sin(0) + cos(0) + tan(0)"), 1);
    NEAR(ev("atan2(1, 1)"), atan2(1, 1));
    NEAR(ev("floor(a) + ceil(a) + round(a)"), floor(-3.7) + ceil(-3.7) + round(-3.7));
    NEAR(ev("round(2.5)"), 3); /* half away from zero */
    NEAR(ev("pow(2, 10)"), 1024);
    NEAR(ev("min(5, a, b)"), -3.7);
    NEAR(ev("max(5, a, b)"), 12);
    NEAR(ev("max(7)"), 7);
    NEAR(ev("avg(1, 2, 3, 4)"), 2.5);
    NEAR(ev("clamp(b, 0, 10)"), 10);
    NEAR(ev("clamp(a, 0, 10)"), 0);
    NEAR(ev("if(b > 10, 1, 2)"), 1);
    NEAR(ev("if(a > 10, 1, 2)"), 2);
    NEAR(ev("if(0, 1 / 0, 5)"), 5); /* the other branch's Inf does not leak */
    NEAR(ev("max( min(1,2) , abs(-4) ) * 2"), 8);
}

static void test_names(void **st)
{
    (void)st;
    vars[20] = 33;
    vars[21] = 7;
    NEAR(ev("temps[3] + 1"), 34); /* an array element */
    NEAR(ev("t_in.x * 2"), 14);   /* dots belong to names */
    vars[26] = 100;
    vars[27] = 40;
    NEAR(ev("'boiler-2/t_in' - 'boiler-2/t_out'"), 60);
    NEAR(ev("'boiler-2/t_in' + 'boiler-2/t_in'"), 200); /* the same name: the same slot */
    assert_int_equal(nquoted, 1);
}

static void test_errors(void **st)
{
    (void)st;
    bad("", "empty expression");
    bad("   ", "empty expression");
    bad("1 +", "column 4: the expression ends where a value is expected");
    bad("(1 + 2", "column 7: expected ')'");
    bad("1 + 2)", "column 6: ')' without a matching '('");
    bad("a = 1", "column 3: '=' is not an operator: compare with ==");
    bad("a < b < c", "column 7: comparisons do not chain");
    bad("foo(1)", "column 1: unknown function 'foo'");
    bad("min()", "min() takes at least 1 argument, got 0");
    bad("clamp(1, 2)", "clamp() takes 3 arguments, got 2");
    bad("sqrt(1, 2)", "sqrt() takes 1 argument, got 2");
    bad("nope + 1", "column 1: no tag 'nope'");
    bad("'unterminated + 1", "column 1: unterminated quoted name");
    bad("''", "empty quoted name");
    bad("\"a\" + 1", "single quotes");
    bad("1 2", "column 3: expected an operator or the end");
    bad("2x", "column 2: expected an operator after the number");
    bad("1e+", "column 2: a number's exponent needs digits");
    bad("a + and", "expected a value, got the operator 'and'");
    bad("#", "expected a value, got '#'");
    bad("1e999", "number out of range");
    /* nesting is bounded: no stack exhaustion from hostile input */
    char deep[400];
    memset(deep, '(', 200);
    strcpy(deep + 200, "1");
    bad(deep, "nested too deeply");
    memset(deep, '-', 300);
    strcpy(deep + 300, "1");
    bad(deep, "nested too deeply");
    char *longx = malloc(FB_EXPR_MAX_TEXT + 10);
    memset(longx, '1', FB_EXPR_MAX_TEXT + 5);
    longx[FB_EXPR_MAX_TEXT + 5] = 0;
    bad(longx, "longer than");
    free(longx);
}

/* A long flat sum: the stack stays shallow (left-associative), the program long. */
static void test_long_sum(void **st)
{
    (void)st;
    char src[3000];
    size_t off = 0;
    for (int i = 0; i < 500; i++) off += (size_t)snprintf(src + off, sizeof src - off, "%s1", i ? "+" : "");
    NEAR(ev(src), 500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arithmetic), cmocka_unit_test(test_logic),  cmocka_unit_test(test_functions),
        cmocka_unit_test(test_names),      cmocka_unit_test(test_errors), cmocka_unit_test(test_long_sum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
