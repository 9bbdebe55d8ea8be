/* ua_types.h — the OPC UA binary encoding of the built-in types (Part 6 §5.2),
 * without I/O: an encoder that appends to a fixed buffer and a decoder that
 * reads from one, both with a sticky error flag, so a message is encoded or
 * decoded field after field and checked once at the end (a truncated or
 * malformed input can never read past its end or crash).
 *
 * Decoded strings, byte strings and node ids BORROW the input buffer: they
 * are valid while it is.  Node ids parsed from text own their bytes (own).
 *
 * One table (ua_builtin[]) drives what is generic: names, fixed sizes and
 * the skipper that steps over any built-in value, which Variant arrays,
 * DataValues, ExtensionObjects and unknown fields all use.
 */
#ifndef FB_UA_TYPES_H
#define FB_UA_TYPES_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

/* built-in type ids (Part 6 Table 1) */
enum ua_builtin_id {
    UA_NULL = 0,
    UA_BOOLEAN,
    UA_SBYTE,
    UA_BYTE,
    UA_INT16,
    UA_UINT16,
    UA_INT32,
    UA_UINT32,
    UA_INT64,
    UA_UINT64,
    UA_FLOAT,
    UA_DOUBLE,
    UA_STRING,
    UA_DATETIME,
    UA_GUID,
    UA_BYTESTRING,
    UA_XML,
    UA_NODEID,
    UA_EXPNODEID,
    UA_STATUSCODE,
    UA_QNAME,
    UA_LTEXT,
    UA_EXTOBJ,
    UA_DATAVALUE,
    UA_VARIANT,
    UA_DIAGINFO,
    UA_BUILTIN_COUNT
};

struct ua_builtin_info {
    const char *name; /* "Double" */
    uint8_t fixed;    /* encoded size when fixed, 0 when variable */
    uint8_t fbtype;   /* natural fieldbridge type (enum fb_type) */
};
extern const struct ua_builtin_info ua_builtin[UA_BUILTIN_COUNT];
const char *ua_builtin_name(unsigned id); /* "?" when out of range */

#define UA_MAX_DEPTH 16                       /* nesting of Variant / DataValue / DiagnosticInfo */
#define UA_DT_UNIX_EPOCH 116444736000000000LL /* 1970-01-01 in 100 ns since 1601 */

/* String / ByteString / XmlElement: len −1 = null. */
struct ua_str {
    const char *p;
    int32_t len;
};

enum ua_nid_kind { UA_NID_NUMERIC = 0, UA_NID_STRING = 3, UA_NID_GUID = 4, UA_NID_BYTES = 5 };

struct ua_nodeid {
    uint16_t ns;
    uint8_t kind; /* enum ua_nid_kind */
    uint32_t num;
    uint8_t guid[16]; /* wire order: Data1 LE, Data2 LE, Data3 LE, Data4[8] */
    const char *str;  /* string / opaque bytes */
    int32_t slen;
    char *own; /* malloc'd bytes str points into, or NULL (borrowed) */
};

struct ua_ltext {
    struct ua_str locale, text;
};

struct ua_qname {
    uint16_t ns;
    struct ua_str name;
};

/* A decoded Variant.  Scalars are decoded into v; arrays keep a pointer to
 * their encoded elements (ua_variant_elem decodes one). */
struct ua_variant {
    uint8_t type; /* enum ua_builtin_id, 0 = empty */
    bool is_array;
    int32_t count; /* array length, −1 null array */
    const uint8_t *arr;
    size_t arr_len;
    union {
        bool b;
        int64_t i;       /* SByte, Int16, Int32, Int64 */
        uint64_t u;      /* Byte, UInt16, UInt32, UInt64, StatusCode */
        double f;        /* Float, Double */
        int64_t dt;      /* DateTime (100 ns since 1601) */
        struct ua_str s; /* String, ByteString, XmlElement */
        uint8_t guid[16];
        struct ua_nodeid nid; /* NodeId, ExpandedNodeId (namespace URI dropped) */
        struct ua_qname qn;
        struct ua_ltext lt;
        struct {
            struct ua_nodeid type_id;
            uint8_t enc;
            struct ua_str body;
        } eo;
    } v;
};

enum {
    UA_DV_VALUE = 0x01,
    UA_DV_STATUS = 0x02,
    UA_DV_SRC_TS = 0x04,
    UA_DV_SRV_TS = 0x08,
    UA_DV_SRC_PICO = 0x10,
    UA_DV_SRV_PICO = 0x20
};

struct ua_datavalue {
    uint8_t mask;
    struct ua_variant value;
    uint32_t status;
    int64_t src_ts, srv_ts; /* 100 ns since 1601; 0 when absent */
};

/* ---------------------------------------------------------------- encoder */
struct ua_enc {
    uint8_t *p;
    size_t len, cap;
    bool err; /* set on overflow; every later put is a no-op */
};
void ua_enc_init(struct ua_enc *e, uint8_t *buf, size_t cap);
void ua_put_raw(struct ua_enc *e, const void *p, size_t n);
void ua_put_u8(struct ua_enc *e, uint8_t v);
void ua_put_u16(struct ua_enc *e, uint16_t v);
void ua_put_u32(struct ua_enc *e, uint32_t v);
void ua_put_u64(struct ua_enc *e, uint64_t v);
static inline void ua_put_i32(struct ua_enc *e, int32_t v) { ua_put_u32(e, (uint32_t)v); }
static inline void ua_put_bool(struct ua_enc *e, bool v) { ua_put_u8(e, v ? 1 : 0); }
void ua_put_f32(struct ua_enc *e, float v);
void ua_put_f64(struct ua_enc *e, double v);
void ua_put_str(struct ua_enc *e, const char *p, int32_t len);      /* len −1 = null */
void ua_put_cstr(struct ua_enc *e, const char *s);                  /* NULL = null */
void ua_put_nodeid(struct ua_enc *e, const struct ua_nodeid *n);    /* NULL = the null node id */
void ua_put_nodeid_num(struct ua_enc *e, uint16_t ns, uint32_t id); /* compact forms */
void ua_put_qname(struct ua_enc *e, const struct ua_qname *q);
void ua_put_ltext(struct ua_enc *e, const struct ua_ltext *t);
/* A Variant: scalars and arrays of the builtins up to DiagnosticInfo that a
 * client sends (numbers, bool, String, ByteString, DateTime, Guid, NodeId,
 * StatusCode, QualifiedName, LocalizedText).  Arrays are encoded from arr/arr_len
 * as they are (already encoded elements). */
void ua_put_variant(struct ua_enc *e, const struct ua_variant *v);
void ua_put_datavalue(struct ua_enc *e, const struct ua_datavalue *dv);

/* ---------------------------------------------------------------- decoder */
struct ua_dec {
    const uint8_t *p;
    size_t len, pos;
    bool err; /* set on truncation / malformed input; every later get returns 0 */
    int depth;
};
void ua_dec_init(struct ua_dec *d, const void *p, size_t len);
static inline size_t ua_dec_left(const struct ua_dec *d) { return d->err ? 0 : d->len - d->pos; }
const uint8_t *ua_get_raw(struct ua_dec *d, size_t n); /* NULL (and err) if short */
uint8_t ua_get_u8(struct ua_dec *d);
uint16_t ua_get_u16(struct ua_dec *d);
uint32_t ua_get_u32(struct ua_dec *d);
uint64_t ua_get_u64(struct ua_dec *d);
static inline int32_t ua_get_i32(struct ua_dec *d) { return (int32_t)ua_get_u32(d); }
static inline bool ua_get_bool(struct ua_dec *d) { return ua_get_u8(d) != 0; }
float ua_get_f32(struct ua_dec *d);
double ua_get_f64(struct ua_dec *d);
struct ua_str ua_get_str(struct ua_dec *d);
void ua_get_nodeid(struct ua_dec *d, struct ua_nodeid *n);
void ua_get_expnodeid(struct ua_dec *d, struct ua_nodeid *n, struct ua_str *ns_uri, uint32_t *server);
void ua_get_qname(struct ua_dec *d, struct ua_qname *q);
void ua_get_ltext(struct ua_dec *d, struct ua_ltext *t);
void ua_get_variant(struct ua_dec *d, struct ua_variant *v);
void ua_get_datavalue(struct ua_dec *d, struct ua_datavalue *dv);
void ua_get_extobj(struct ua_dec *d, struct ua_nodeid *type_id, uint8_t *enc, struct ua_str *body);
/* Decode one scalar of builtin type into v (type set). */
void ua_get_scalar(struct ua_dec *d, uint8_t type, struct ua_variant *v);
/* Step over one value of a builtin type (the data-driven skipper). */
void ua_skip(struct ua_dec *d, uint8_t type);
/* Step over an array (i32 count, then elements) of a builtin type. */
void ua_skip_array(struct ua_dec *d, uint8_t type);
/* Array length with a sanity bound: −1 (null) becomes 0; more elements than
 * bytes left (each takes at least one) sets err. */
int32_t ua_get_count(struct ua_dec *d);

/* Element k of an array Variant as a scalar Variant.  0 or FB_ERANGE / FB_EPROTO. */
int ua_variant_elem(const struct ua_variant *v, int32_t k, struct ua_variant *out);

/* ------------------------------------------------------------- node ids */
/* Text forms "ns=2;s=Name", "i=85", "ns=3;g=72962b91-fa75-4ae6-8d28-b404dc7daf63",
 * "ns=1;b=3q2+7w==" (base64).  out owns its bytes (ua_nodeid_clear frees them). */
int ua_nodeid_parse(const char *text, struct ua_nodeid *out, struct fb_err *err);
void ua_nodeid_clear(struct ua_nodeid *n);
int ua_nodeid_copy(const struct ua_nodeid *src, struct ua_nodeid *dst); /* owned copy */
bool ua_nodeid_equal(const struct ua_nodeid *a, const struct ua_nodeid *b);
bool ua_nodeid_is_null(const struct ua_nodeid *n);
/* Text form into buf (truncated to cap); returns buf. */
char *ua_nodeid_format(const struct ua_nodeid *n, char *buf, size_t cap);
void ua_guid_format(const uint8_t g[16], char out[37]);
int ua_guid_parse(const char *s, uint8_t g[16]);

/* ------------------------------------------------------------ time */
/* DateTime from a server is untrusted: OPC UA (Part 6, 5.2.2.5) makes values
 * <= 0 the minimum and values at or past 9999-12-31T23:59:59Z the maximum,
 * both meaning "no usable time".  To Unix ns: 0 (no time stamp: the caller
 * uses its receive time) for those and for anything int64 ns cannot hold
 * (before 1677-09-22 or after 2262-04-11); never an overflow. */
#define UA_DT_MAX 2650467743999999999LL /* 9999-12-31T23:59:59.9999999Z */
static inline int64_t ua_dt_to_ns(int64_t dt)
{
    if (dt <= 0 || dt >= UA_DT_MAX) return 0;
    int64_t ns;
    if (__builtin_mul_overflow(dt - UA_DT_UNIX_EPOCH, (int64_t)100, &ns)) return 0;
    return ns;
}
static inline int64_t ua_dt_from_ns(int64_t ns) { return ns / 100 + UA_DT_UNIX_EPOCH; }
/* "2024-03-01T12:30:45.123Z" (7 decimals when finer than 1 ms), cap >= 32.  Returns length.
 * dt is clamped to [1601-01-01, 9999-12-31T23:59:59.9999999Z] first. */
size_t ua_dt_format(int64_t dt, char *buf, size_t cap);

/* ------------------------------------------------- fieldbridge values */
/* Convert a scalar Variant into an fb value.  want = FB_T_NONE takes the
 * natural type (ua_builtin[].fbtype).  Strings are written into sbuf.
 * Returns FB_Q_GOOD or a quality (BadTypeMismatch, BadOutOfRange). */
uint32_t ua_variant_to_fb(const struct ua_variant *v, enum fb_type want, struct fb_value *out, char *sbuf,
                          size_t sbuf_cap);
/* Make a scalar Variant of builtin type `type` from an fb value, with range
 * checks.  Strings / byte strings point into v's memory or into buf (hex
 * decoding of ByteString).  0, FB_ERANGE, FB_EINVAL or FB_ENOTSUP (err set). */
int ua_variant_from_fb(const struct fb_value *v, uint8_t type, struct ua_variant *out, uint8_t *buf, size_t buf_cap,
                       struct fb_err *err);
/* Built-in type behind a DataType node id (i=1..25 and the common ns 0 subtypes:
 * Enumeration, Duration, UtcTime, …); 0 when unknown or abstract (Number). */
uint8_t ua_datatype_builtin(const struct ua_nodeid *dt);
#endif
