/* fuzz_expr.c — libFuzzer harness for the interlock conditions
 * (src/control/expr.c): any text is parsed; what parses is evaluated with
 * values taken from the input (so comparisons go both ways, NaN included),
 * and the program must respect its bounds.  Any crash, sanitizer report,
 * out-of-bounds program or a parse error without a message is a bug.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_expr /tmp/c tests/fuzz/corpus/expr
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/expr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    static struct fb_expr e;
    struct fb_err err = {0};
    int rc = fb_expr_parse(text, &e, &err);
    if (rc != 0 && !err.msg[0]) abort(); /* every refusal says why */
    if (rc == 0) {
        if (e.nops == 0 || e.nops > FB_EXPR_MAX_OPS || e.nnames > FB_EXPR_MAX_TAGS) abort();
        double vals[FB_EXPR_MAX_TAGS];
        for (uint32_t i = 0; i < e.nnames; i++) {
            if (!e.names[i] || !strchr(e.names[i], '/')) abort();
            uint8_t b = data[i % size];
            vals[i] = b == 0xFF ? NAN : (double)(b % 7) - 3;
        }
        volatile bool r = fb_expr_eval(&e, vals);
        (void)r;
    }
    fb_expr_free(&e);
    free(text);
    return 0;
}
