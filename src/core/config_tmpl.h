/* config_tmpl.h — internal to the config loader: loop variables of `for:`
 * and the {var} / {var:02} / {(i-1)*2} substitution (config_tmpl.c). */
#ifndef FB_CONFIG_TMPL_H
#define FB_CONFIG_TMPL_H
#include <stdbool.h>
#include <stdint.h>
#include "core/fb.h"

struct fb_tvar {
    const char *name;
    const char *val; /* the value as text */
    bool is_int;
    int64_t i;
};
/* A scope of loop variables; inner scopes (a tag's for:) shadow outer ones. */
struct fb_tvars {
    const struct fb_tvars *parent;
    const struct fb_tvar *v;
    int n;
};

/* Deepest nesting of parentheses and unary minus signs in an expression. */
#define FB_TMPL_MAX_DEPTH 64

/* Replace every {…} that names a loop variable or is an integer expression
 * over loop variables.  Other {…} text is kept (topic templates use braces).
 * An unknown variable inside an expression, a division by zero or an
 * overflow is an error.  vars may be NULL (then in is copied). */
int fb_tmpl_subst(const struct fb_tvars *vars, const char *in, char **out, struct fb_err *err);
/* "1..50" → lo=1, hi=50.  Returns 0, or FB_EINVAL if s is not a range. */
int fb_tmpl_range(const char *s, int64_t *lo, int64_t *hi);
/* Strict decimal integer (optional sign).  false if s is not one. */
bool fb_tmpl_int(const char *s, int64_t *v);
#endif
