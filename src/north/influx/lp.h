/* lp.h — InfluxDB line protocol, the pieces (lp.c).  Pure functions that
 * append to a struct fb_buf; no I/O, no allocation once the buffer has grown.
 * Unit-tested in tests/unit/test_influx.c and fuzzed (tests/fuzz/fuzz_lp.c).
 *
 * A line is   measurement[,tagkey=tagvalue...] fieldkey=value[,fieldkey=value...] timestamp\n
 * and the escaping rules differ per element (docs/influxdb.md):
 *   measurement             `,` and space escaped with a backslash
 *   tag keys/values, field keys   `,` `=` and space escaped
 *   string field values     in double quotes, `"` and `\` escaped
 * InfluxDB keeps any other backslash literally, so a backslash that would
 * escape the character after it (or end the element) cannot be written and
 * becomes `_`, and so do control characters (a newline ends a line).
 */
#ifndef FB_LP_H
#define FB_LP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/fb.h"

enum fb_lp_elem {
    FB_LP_MEASUREMENT, /* escapes , and space */
    FB_LP_KEY,         /* tag key, tag value, field key: escapes , = and space */
};

/* The field type a series has, fixed once (from a tag's configured type):
 * InfluxDB refuses a point whose field type differs from what the shard
 * already holds, so a value is converted to it or not written at all. */
enum fb_lp_type {
    FB_LP_FLOAT,   /* 21.5 (shortest round-trip text of the double) */
    FB_LP_FLOAT32, /* a float with the shortest text that reads back as the float32 */
    FB_LP_INT,     /* -5i */
    FB_LP_UINT,    /* 5u (InfluxDB 2.x; 1.x refuses it) */
    FB_LP_BOOL,    /* true / false */
    FB_LP_STRING,  /* "text" */
};

enum fb_lp_precision { FB_LP_NS = 0, FB_LP_US, FB_LP_MS, FB_LP_S };

/* Append name (n bytes, any bytes) escaped for element e.  Returns false when
 * nothing could be written (empty name: InfluxDB refuses empty keys and tag
 * values). */
bool fb_lp_name(struct fb_buf *b, enum fb_lp_elem e, const char *s, size_t n);
/* Append a string field value with its quotes. */
void fb_lp_str(struct fb_buf *b, const char *s, size_t n);
/* The series type for a fieldbridge value type; uint64 is an integer unless
 * unsigned_ok (values above 2^63-1 are then not writable). */
enum fb_lp_type fb_lp_type_of(enum fb_type t, bool unsigned_ok);
const char *fb_lp_type_name(enum fb_lp_type t); /* "float", "integer", ... as InfluxDB says */
/* Append v converted to lt.  Returns 0, or FB_ERANGE (not finite, out of
 * range, not integral for an integer series) / FB_EINVAL (wrong kind: a
 * string for a number, a number for a bool) — then nothing is appended. */
int fb_lp_value(struct fb_buf *b, enum fb_lp_type lt, const struct fb_value *v);
/* What fb_lp_value would return, without writing. */
int fb_lp_check(enum fb_lp_type lt, const struct fb_value *v);
/* Append a time stamp (ns since the epoch) in the precision's unit (floor). */
void fb_lp_time(struct fb_buf *b, int64_t ns, enum fb_lp_precision p);
/* The `precision` query parameter: "ns" "us" "ms" "s" for the 2.x API; the
 * 1.x /write wants "u" for microseconds (1.6 takes "us" silently as ns). */
const char *fb_lp_precision_param(enum fb_lp_precision p, bool api2);
#endif
