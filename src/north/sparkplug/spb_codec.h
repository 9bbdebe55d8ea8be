/* spb_codec.h — Sparkplug B payloads (protobuf, Sparkplug 3.0) built and read
 * through the protobuf-c code generated from sparkplug_b.proto.
 *
 * Encoding reuses one struct fb_spb_enc per sender: metric, property and
 * string slots grow to the largest message seen and are then reused, so a
 * steady stream of DDATA messages allocates nothing.  Decoding (commands,
 * spb-dump, tests) uses protobuf-c's unpack, which allocates; that path is
 * not hot and trusts nothing in the input.
 *
 * Value placement follows the reference implementation (PROTOCOLS.md §4):
 * Int8/16/32 and UInt8/16 in int_value (negative numbers as their 32-bit
 * two's complement), UInt32, Int64, UInt64 and DateTime in long_value,
 * Float/Double/Boolean/String in their own fields.  The decoder accepts
 * UInt32 in either int_value or long_value.  Quality travels in the metric
 * property "Quality" (Int32): 192 good, 500 stale (uncertain), 0 bad.  A bad
 * value is is_null; a reading the gateway's plausibility checks refused goes
 * in the property "Raw", typed and placed like the metric's value. */
#ifndef FB_SPB_CODEC_H
#define FB_SPB_CODEC_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/model.h"
#include "sparkplug_b.pb-c.h"

typedef Org__Eclipse__Tahu__Protobuf__Payload spb_payload;
typedef Org__Eclipse__Tahu__Protobuf__Payload__Metric spb_metric;
typedef Org__Eclipse__Tahu__Protobuf__Payload__PropertySet spb_propset;
typedef Org__Eclipse__Tahu__Protobuf__Payload__PropertyValue spb_propval;

enum spb_datatype {
    SPB_UNKNOWN = 0,
    SPB_INT8 = 1,
    SPB_INT16 = 2,
    SPB_INT32 = 3,
    SPB_INT64 = 4,
    SPB_UINT8 = 5,
    SPB_UINT16 = 6,
    SPB_UINT32 = 7,
    SPB_UINT64 = 8,
    SPB_FLOAT = 9,
    SPB_DOUBLE = 10,
    SPB_BOOLEAN = 11,
    SPB_STRING = 12,
    SPB_DATETIME = 13,
    SPB_TEXT = 14,
    SPB_UUID = 15,
    SPB_DATASET = 16,
    SPB_BYTES = 17,
    SPB_FILE = 18,
    SPB_TEMPLATE = 19,
};

#define SPB_Q_GOOD 192
#define SPB_Q_STALE 500
#define SPB_Q_BAD 0

/* fieldbridge value type → Sparkplug datatype (SPB_UNKNOWN for FB_T_NONE). */
uint32_t fb_spb_datatype(enum fb_type t);
/* "Int32", "Float", …; "Unknown" for anything else. */
const char *fb_spb_datatype_name(uint32_t dt);
/* OPC UA style quality → Sparkplug Quality property. */
int32_t fb_spb_quality(uint32_t q);

/* ------------------------------------------------------------------ encode */
struct fb_spb_slot {
    spb_metric m;
    spb_propset ps;
    spb_propval pv[2]; /* Quality, Raw */
    spb_propval *pvp[2];
    char *keys[2];
    char *sbuf; /* NUL-terminated copy of a string value */
    uint32_t scap;
};

struct fb_spb_enc {
    spb_payload p;
    struct fb_spb_slot **slots; /* each allocated once: pointers into a slot stay valid */
    spb_metric **mp;
    uint32_t n, cap;
};

void fb_spb_enc_init(struct fb_spb_enc *e);
void fb_spb_enc_free(struct fb_spb_enc *e);
/* Start a payload: timestamp in ms, seq < 0 = no seq field (NDEATH). */
void fb_spb_enc_begin(struct fb_spb_enc *e, uint64_t ts_ms, int seq);
/* Append a metric; name may be NULL (DATA with aliases), alias < 0 = none,
 * ts_ms < 0 = none, datatype 0 = not sent (DATA/CMD).  NULL on no memory. */
spb_metric *fb_spb_enc_add(struct fb_spb_enc *e, const char *name, int64_t alias, int64_t ts_ms, uint32_t datatype);
/* Put v into the field the datatype dt calls for (v converted as needed);
 * v NULL or of type FB_T_NONE sets is_null.  Returns FB_EINVAL when v cannot
 * be represented (then is_null is set). */
int fb_spb_enc_value(struct fb_spb_enc *e, spb_metric *m, uint32_t dt, const struct fb_value *v);
/* Attach the "Quality" property (Int32). */
void fb_spb_enc_quality(struct fb_spb_enc *e, spb_metric *m, int32_t q);
/* Attach the "Raw" property (after the Quality): v as datatype dt, placed as
 * a metric value of that datatype would be.  FB_EINVAL when v does not fit. */
int fb_spb_enc_raw(struct fb_spb_enc *e, spb_metric *m, uint32_t dt, const struct fb_value *v);
/* The "Raw" property if present and readable as datatype dt (0: by its own type). */
bool fb_spb_metric_raw(const spb_metric *m, uint32_t dt, struct fb_value *out);
/* Serialise into out (cleared first).  Returns the length. */
size_t fb_spb_enc_finish(struct fb_spb_enc *e, struct fb_buf *out);

/* ------------------------------------------------------------------ decode */
/* NULL when the bytes are not a valid payload.  Free with fb_spb_free. */
spb_payload *fb_spb_decode(const void *p, size_t len);
void fb_spb_free(spb_payload *p);
/* The metric's value as a fieldbridge value, read as datatype dt (0: the
 * metric's own datatype, else guessed from the field present).  Strings
 * point into m.  FB_ENOENT when is_null or no value, FB_EPROTO when the
 * field does not fit the datatype, FB_ENOTSUP for datasets, bytes, … */
int fb_spb_metric_value(const spb_metric *m, uint32_t dt, struct fb_value *out);
/* The Quality property if present. */
bool fb_spb_metric_quality(const spb_metric *m, int32_t *q);

/* Readable text of a payload for spb-dump: one line for the header, one per
 * metric (name/alias, datatype, value, quality, timestamp, flags).
 * names(ctx, alias) may resolve aliases and datatypes learnt from births. */
typedef bool (*fb_spb_alias_fn)(void *ctx, uint64_t alias, const char **name, uint32_t *dt);
void fb_spb_format(struct fb_buf *out, const spb_payload *p, fb_spb_alias_fn names, void *ctx);
#endif
