/* expr.h — expression tags: a small compiler from text to a stack program
 * and its evaluator (expr.c; the language is in docs/computed.md).
 *
 *   (t_in - t_out) * flow * 4.186        'boiler-2/t_in' > 80 and not running
 *   max('a/x', 'b/x', 0)                 if(level < 10, 0, clamp(speed, 0, 1500))
 *
 * Compiling allocates once; evaluating allocates nothing and touches only
 * the program and the caller's variable array, so any number of threads may
 * evaluate one program at once.  Variables are tag references; the caller's
 * resolver turns each into a slot number, and the evaluator reads the value
 * of slot i from vars[i].  Numbers are doubles, booleans 0 and 1; a result
 * that is NaN or infinite is the caller's to treat as no value.
 */
#ifndef FB_EXPR_H
#define FB_EXPR_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/fb.h"

#define FB_EXPR_MAX_TEXT 4096 /* characters of one expression */
#define FB_EXPR_MAX_DEPTH 64  /* nesting, and values on the evaluation stack */
#define FB_EXPR_MAX_CODE 2048 /* instructions */

struct fb_expr;

/* The resolver: name (len bytes, not NUL-terminated) is a bare name
 * (`t_in`, `temps[3]`) or, with quoted, the text between single quotes
 * (`'press-01/t_in'`).  Returns the variable's slot (>= 0; equal names may
 * share one), or a negative error with err set ("no such tag …"). */
typedef int (*fb_expr_resolve_fn)(void *ctx, const char *name, size_t len, bool quoted, struct fb_err *err);

/* Compile `src`.  On error returns FB_EINVAL with a message that names the
 * column (1-based, in src) and what was expected. */
int fb_expr_compile(const char *src, fb_expr_resolve_fn resolve, void *ctx, struct fb_expr **out, struct fb_err *err);
void fb_expr_free(struct fb_expr *e);
/* Evaluate with vars[slot] the variables' values. */
double fb_expr_eval(const struct fb_expr *e, const double *vars);
/* Whether the result is a comparison or logic (0/1), for bool tags. */
bool fb_expr_is_bool(const struct fb_expr *e);
/* The number of instructions (for tests and benchmarks). */
uint32_t fb_expr_size(const struct fb_expr *e);
#endif
