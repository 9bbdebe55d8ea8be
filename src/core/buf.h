/* buf.h — a growable byte buffer and the JSON writer used on hot paths.
 * Encoding never allocates once the buffer has grown to its working size.
 * Numbers: integers as exact decimal text (int64/uint64, also beyond 2^53);
 * doubles as the shortest text that reads back to the same double;
 * NaN/Inf are never written as numbers (callers write null + bad quality). */
#ifndef FB_BUF_H
#define FB_BUF_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "core/fb.h"

struct fb_buf {
    char *p;
    size_t len, cap;
};
void fb_buf_init(struct fb_buf *b);
void fb_buf_free(struct fb_buf *b);
void fb_buf_reserve(struct fb_buf *b, size_t extra); /* aborts on OOM */
static inline void fb_buf_clear(struct fb_buf *b) { b->len = 0; }
/* Grows so that at least `extra` more bytes fit (internal; use the inlines). */
void fb_buf_grow_(struct fb_buf *b, size_t extra);
/* Inline so constant strings' lengths fold away on the hot path. */
static inline void fb_buf_put(struct fb_buf *b, const void *p, size_t n)
{
    if (!n) return;
    if (b->cap - b->len <= n) fb_buf_grow_(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}
static inline void fb_buf_puts(struct fb_buf *b, const char *s) { fb_buf_put(b, s, strlen(s)); }
static inline void fb_buf_putc(struct fb_buf *b, char c)
{
    if (b->cap - b->len <= 1) fb_buf_grow_(b, 1);
    b->p[b->len++] = c;
}
void fb_buf_printf(struct fb_buf *b, const char *fmt, ...) FB_PRINTF(2, 3);
/* NUL-terminate without counting the NUL in len. */
const char *fb_buf_cstr(struct fb_buf *b);

/* JSON pieces */
void fb_json_str(struct fb_buf *b, const char *s, size_t n); /* quoted, escaped */
void fb_json_cstr(struct fb_buf *b, const char *s);
/* A member name and its colon, "s": — one pass copies and checks whether
 * anything needs escaping (tag names from the config never do). */
void fb_json_key(struct fb_buf *b, const char *s);
/* The same for a name known to need no escaping (fb_json_plain): a copy. */
void fb_json_key_plain(struct fb_buf *b, const char *s);
/* True when s is written as it is inside a JSON string (printable ASCII
 * without '"' and '\'). */
bool fb_json_plain(const char *s);
void fb_json_i64(struct fb_buf *b, int64_t v);
/* The same decimal text into dst (at least 21 bytes of room); returns its length. */
size_t fb_fmt_i64(char *dst, int64_t v);
size_t fb_fmt_u64(char *dst, uint64_t v);
void fb_json_u64(struct fb_buf *b, uint64_t v);
/* Shortest round-trip text; NaN and infinities are written as null. */
void fb_json_double(struct fb_buf *b, double v);
/* A time (ns since the epoch) as a quoted RFC 3339 string (fb_fmt_time). */
void fb_json_time(struct fb_buf *b, int64_t ns);
/* float32 values: shortest text that round-trips as a float. */
void fb_json_float(struct fb_buf *b, float v);
/* A float32 as the double of its shortest decimal text (7.77f → 7.77, not
 * 7.769999980926514 as (double)f gives), for arithmetic on float32 readings
 * whose result is published as a double (scaling, window statistics).
 * NaN and infinities are widened as they are. */
double fb_float_widen(float f);
/* A value: number/bool/string; null when a float is NaN/Inf. */
void fb_json_value(struct fb_buf *b, const struct fb_value *v);
/* Plain text form for the CLI (same number formatting, strings unquoted). */
void fb_text_value(struct fb_buf *b, const struct fb_value *v);

/* Copy the C string src into dst (cap bytes with the NUL).  Text that does
 * not fit is cut after the last whole word that leaves room for "…" (at a
 * UTF-8 character boundary when a single word is too long) and the ellipsis
 * is appended.  Returns the length written. */
size_t fb_text_cut(char *dst, size_t cap, const char *src);
#endif
