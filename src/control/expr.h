/* expr.h — the conditions of interlocks (expr.c): boolean expressions over
 * tags, parsed once into a small postfix program and evaluated every cycle
 * without allocating.
 *
 *     expr   := or
 *     or     := and { ("or" | "||") and }
 *     and    := not { ("and" | "&&") not }
 *     not    := ("not" | "!") not | cmp
 *     cmp    := sum [ ("<" | "<=" | ">" | ">=" | "==" | "!=") sum ]
 *     sum    := atom                       (no arithmetic: conditions only)
 *     atom   := NUMBER | "true" | "false" | TAG | "(" expr ")"
 *     TAG    := device/tag                 (a tag of the model)
 *
 * A value is a number; booleans are 1 and 0, and a number used as a
 * condition is true when it is not 0.  The caller gives the tags' values in
 * the order of e->names and decides what a missing or Bad value means (an
 * interlock treats it as active: fail-safe, docs/control.md).
 */
#ifndef FB_EXPR_H
#define FB_EXPR_H
#include <stdbool.h>
#include <stdint.h>

#include "core/fb.h"

#define FB_EXPR_MAX_OPS 256
#define FB_EXPR_MAX_TAGS 64

enum fb_expr_opcode {
    FB_XO_CONST = 0,
    FB_XO_TAG,
    FB_XO_NOT,
    FB_XO_AND,
    FB_XO_OR,
    FB_XO_LT,
    FB_XO_LE,
    FB_XO_GT,
    FB_XO_GE,
    FB_XO_EQ,
    FB_XO_NE
};

struct fb_expr_op {
    uint8_t op;
    uint32_t arg; /* FB_XO_TAG: index in names */
    double k;     /* FB_XO_CONST */
};

struct fb_expr {
    struct fb_expr_op ops[FB_EXPR_MAX_OPS];
    uint32_t nops;
    char *names[FB_EXPR_MAX_TAGS]; /* "device/tag" as written, each once */
    uint32_t nnames;
};

/* Parse `text`.  0, or FB_EINVAL with the column (1-based) and what was
 * expected in err.  Free with fb_expr_free also after an error. */
int fb_expr_parse(const char *text, struct fb_expr *e, struct fb_err *err);
void fb_expr_free(struct fb_expr *e);
/* Evaluate with vals[i] the value of names[i]. */
bool fb_expr_eval(const struct fb_expr *e, const double *vals);
#endif
