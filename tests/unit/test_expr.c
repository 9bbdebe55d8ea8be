/* test_expr.c — interlock conditions (src/control/expr.c): precedence,
 * comparisons, tags named once, keywords and symbols, and errors with their
 * column. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "control/expr.h"

static struct fb_expr e;

static bool eval(const char *text, const double *vals)
{
    struct fb_err err = {0};
    int rc = fb_expr_parse(text, &e, &err);
    if (rc) fprintf(stderr, "%s: %s\n", text, err.msg);
    assert_int_equal(rc, 0);
    bool r = fb_expr_eval(&e, vals);
    fb_expr_free(&e);
    return r;
}

static void test_eval(void **st)
{
    (void)st;
    double v[] = {95, 0, 1};
    assert_true(eval("oven/temp > 90", v));
    assert_false(eval("oven/temp > 95", v));
    assert_true(eval("oven/temp >= 95", v));
    assert_true(eval("oven/temp == 95 and not oven/door", v)); /* door = v[1] = 0 */
    assert_true(eval("oven/temp < 0 or oven/temp != 94", v));
    assert_false(eval("!(oven/temp > 90)", v));
    assert_true(eval("oven/temp > 90 && (oven/door || true)", v));
    /* and binds tighter than or */
    assert_true(eval("true or false and false", v));
    assert_false(eval("(true or false) and false", v));
    assert_true(eval("oven/temp > -5.5e1", v));
    /* a number as a condition: true when not 0 (values go by first appearance) */
    assert_false(eval("oven/door", v + 1));
    assert_true(eval("oven/door", v + 2));
    double w[] = {1, 2};
    assert_true(eval("press-01/a.b[2] < line_2/x-y", w));
}

static void test_names(void **st)
{
    (void)st;
    struct fb_err err = {0};
    assert_int_equal(fb_expr_parse("a/x > 1 and b/y < 2 or a/x == 7", &e, &err), 0);
    assert_int_equal(e.nnames, 2);
    assert_string_equal(e.names[0], "a/x");
    assert_string_equal(e.names[1], "b/y");
    fb_expr_free(&e);
}

static void expect_error(const char *text, const char *want)
{
    struct fb_err err = {0};
    assert_int_equal(fb_expr_parse(text, &e, &err), FB_EINVAL);
    if (!strstr(err.msg, want)) fprintf(stderr, "%s: got '%s', want '%s'\n", text, err.msg, want);
    assert_non_null(strstr(err.msg, want));
    fb_expr_free(&e);
}

static void test_errors(void **st)
{
    (void)st;
    expect_error("", "column 1: expected a tag");
    expect_error("temp > 90", "column 1: expected a tag as device/tag");
    expect_error("a/b = 3", "column 5: expected '==' (comparison), not '='");
    expect_error("a/b > ", "column 7:");
    expect_error("(a/b > 1", "expected ')'");
    expect_error("a/b > 1 xor a/c", "column 9: expected 'and', 'or', a comparison or the end");
    char deep[400];
    memset(deep, '(', 200);
    strcpy(deep + 200, "true");
    expect_error(deep, "nested too deep");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
