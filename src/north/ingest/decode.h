/* decode.h — what ingest reads, as pure functions (decode.c): topic
 * templates matched against topics, our JSON telemetry (docs/mqtt.md) into a
 * named batch, and the type rules for JSON numbers.  No I/O, no allocation
 * per message; unit-tested (tests/unit/test_ingest.c) and fuzzed
 * (tests/fuzz/fuzz_ingest_json.c). */
#ifndef FB_INGEST_DECODE_H
#define FB_INGEST_DECODE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/batch.h"
#include "core/fb.h"

/* ------------------------------------------------------------ templates */
/* The gateways' topic template ({site}/{area}/{line}/{device}/{kind} by
 * default): one placeholder per level at most, with literal text around it. */
enum { FB_IG_KIND = FB_BN__N }; /* placeholders: FB_BN_GATEWAY … FB_BN_DEVICE, then {kind} */
struct fb_ig_level {
    char *pre, *post; /* literal text before and after the placeholder (the whole level without one) */
    int var;          /* FB_BN_* or FB_IG_KIND; -1 = none */
};
struct fb_ig_tmpl {
    struct fb_ig_level *lv;
    uint32_t n;
};
int fb_ig_tmpl_parse(const char *t, struct fb_ig_tmpl *out, struct fb_err *err);
void fb_ig_tmpl_free(struct fb_ig_tmpl *t);
/* The subscription filter for one kind ("telemetry", "status"): every other
 * placeholder level becomes `+`.  Malloc'd. */
char *fb_ig_tmpl_filter(const struct fb_ig_tmpl *t, const char *kind);
/* Match topic against t: the placeholder values go into val[FB_BN__N] (NUL-
 * terminated copies in buf; a placeholder the template lacks is "") and the
 * kind into *kind (in buf too).  false when the topic does not fit. */
bool fb_ig_tmpl_match(const struct fb_ig_tmpl *t, const char *topic, char *buf, size_t cap, const char *val[FB_BN__N],
                      const char **kind);

/* ---------------------------------------------------------- type rules */
/* The type of a JSON number (JSON does not say whether 21 is an integer):
 * float64 unless a rule names the tag (glob patterns, first match wins).
 * true/false are always bool and strings always string. */
struct fb_ig_type_rule {
    char *device, *tag; /* NULL = any */
    uint8_t type;       /* enum fb_type */
};
struct fb_ig_types {
    struct fb_ig_type_rule *r;
    uint32_t n;
};
enum fb_type fb_ig_number_type(const struct fb_ig_types *t, const char *device, const char *tag);

/* ------------------------------------------------------------ telemetry */
/* Start a named batch: reset it and put the names (val from the topic). */
int fb_ig_batch_begin(struct fb_batch *b, const char *const val[FB_BN__N], int64_t ts);
/* Decode one telemetry message into b (begun with the topic's names):
 * one sample per value, named by tag, with its quality (q + reason), its own
 * time stamp or the message's ("ts"; now_ns when absent), and its window
 * statistics.  Returns 0; FB_EPROTO when the message is not telemetry (err
 * says where); FB_ERANGE when it has more values or longer names than the
 * batch holds. */
int fb_ig_telemetry(struct fb_batch *b, const char *p, size_t len, const struct fb_ig_types *types, int64_t now_ns,
                    struct fb_err *err);
#endif
