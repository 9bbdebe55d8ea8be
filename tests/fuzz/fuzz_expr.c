/* fuzz_expr.c — libFuzzer harness for the expression compiler of computed
 * tags (src/edge/expr.c): any text from a config file, however hostile, is
 * either refused with a message or compiled into a program that evaluates
 * within its stack, whatever the variables hold (NaN, infinities, huge
 * numbers).  Names resolve to slots 0..7 by their first byte; a name that
 * starts with 'z' is refused, so the resolver's error path runs too.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/e && ./fuzz_expr /tmp/e tests/fuzz/corpus/expr
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edge/expr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int resolve(void *ctx, const char *name, size_t len, bool quoted, struct fb_err *err)
{
    (void)ctx;
    (void)quoted;
    if (!len || name[0] == 'z') return fb_err_set(err, FB_ENOENT, "no tag '%.*s'", (int)(len < 40 ? len : 40), name);
    return (uint8_t)name[0] % 8;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FB_EXPR_MAX_TEXT + 16) return 0;
    char *src = malloc(size + 1);
    if (!src) return 0;
    memcpy(src, data, size);
    src[size] = 0;
    struct fb_expr *e = NULL;
    struct fb_err err = {0};
    if (fb_expr_compile(src, resolve, NULL, &e, &err) == 0) {
        static const double sets[][8] = {
            {0, 1, -1, 2.5, 1e308, -1e308, 3, 4},
            {NAN, INFINITY, -INFINITY, 0, -0.0, 1e-308, 7, 1},
        };
        for (size_t k = 0; k < sizeof sets / sizeof sets[0]; k++) (void)fb_expr_eval(e, sets[k]);
        fb_expr_free(e);
    } else if (!err.msg[0]) {
        abort(); /* a refusal always says why */
    }
    free(src);
    return 0;
}
