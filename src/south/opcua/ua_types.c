/* ua_types.c — OPC UA binary encoding of the built-in types (see ua_types.h).
 *
 * Layout facts (little endian throughout; shared PROTOCOLS.md §3):
 *   String/ByteString/XmlElement  i32 length (−1 null) + bytes
 *   DateTime   i64, 100 ns since 1601-01-01 UTC
 *   Guid       u32 u16 u16 + 8 bytes
 *   NodeId     byte form: 0 two-byte (u8), 1 four-byte (u8 ns, u16 id),
 *              2 numeric (u16 ns, u32), 3 string, 4 guid, 5 opaque (u16 ns + …);
 *              ExpandedNodeId adds 0x80 (namespace URI) and 0x40 (server index)
 *   Variant    mask: bits 0–5 type, 0x80 array (i32 count), 0x40 dimensions
 *   DataValue  mask 01 value 02 status 04 srcTS 08 srvTS 10 srcPico 20 srvPico,
 *              wire order value, status, srcTS, srcPico, srvTS, srvPico
 * Every decoder checks lengths against what is left before touching bytes;
 * nesting (Variant in Variant, DiagnosticInfo in DiagnosticInfo) is bounded by
 * UA_MAX_DEPTH.
 */
#include "south/opcua/ua_types.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const struct ua_builtin_info ua_builtin[UA_BUILTIN_COUNT] = {
    [UA_NULL] = {"Null", 0, FB_T_NONE},
    [UA_BOOLEAN] = {"Boolean", 1, FB_T_BOOL},
    [UA_SBYTE] = {"SByte", 1, FB_T_INT8},
    [UA_BYTE] = {"Byte", 1, FB_T_UINT8},
    [UA_INT16] = {"Int16", 2, FB_T_INT16},
    [UA_UINT16] = {"UInt16", 2, FB_T_UINT16},
    [UA_INT32] = {"Int32", 4, FB_T_INT32},
    [UA_UINT32] = {"UInt32", 4, FB_T_UINT32},
    [UA_INT64] = {"Int64", 8, FB_T_INT64},
    [UA_UINT64] = {"UInt64", 8, FB_T_UINT64},
    [UA_FLOAT] = {"Float", 4, FB_T_FLOAT32},
    [UA_DOUBLE] = {"Double", 8, FB_T_FLOAT64},
    [UA_STRING] = {"String", 0, FB_T_STRING},
    [UA_DATETIME] = {"DateTime", 8, FB_T_STRING},
    [UA_GUID] = {"Guid", 16, FB_T_STRING},
    [UA_BYTESTRING] = {"ByteString", 0, FB_T_STRING},
    [UA_XML] = {"XmlElement", 0, FB_T_STRING},
    [UA_NODEID] = {"NodeId", 0, FB_T_STRING},
    [UA_EXPNODEID] = {"ExpandedNodeId", 0, FB_T_STRING},
    [UA_STATUSCODE] = {"StatusCode", 4, FB_T_UINT32},
    [UA_QNAME] = {"QualifiedName", 0, FB_T_STRING},
    [UA_LTEXT] = {"LocalizedText", 0, FB_T_STRING},
    [UA_EXTOBJ] = {"ExtensionObject", 0, FB_T_NONE},
    [UA_DATAVALUE] = {"DataValue", 0, FB_T_NONE},
    [UA_VARIANT] = {"Variant", 0, FB_T_NONE},
    [UA_DIAGINFO] = {"DiagnosticInfo", 0, FB_T_NONE},
};

const char *ua_builtin_name(unsigned id) { return id < UA_BUILTIN_COUNT ? ua_builtin[id].name : "?"; }

/* ================================================================ encoder */
void ua_enc_init(struct ua_enc *e, uint8_t *buf, size_t cap)
{
    e->p = buf;
    e->len = 0;
    e->cap = cap;
    e->err = false;
}

void ua_put_raw(struct ua_enc *e, const void *p, size_t n)
{
    if (e->err) return;
    if (n > e->cap - e->len) {
        e->err = true;
        return;
    }
    if (n) memcpy(e->p + e->len, p, n);
    e->len += n;
}

void ua_put_u8(struct ua_enc *e, uint8_t v) { ua_put_raw(e, &v, 1); }
void ua_put_u16(struct ua_enc *e, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    ua_put_raw(e, b, 2);
}
void ua_put_u32(struct ua_enc *e, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    ua_put_raw(e, b, 4);
}
void ua_put_u64(struct ua_enc *e, uint64_t v)
{
    ua_put_u32(e, (uint32_t)v);
    ua_put_u32(e, (uint32_t)(v >> 32));
}
void ua_put_f32(struct ua_enc *e, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    ua_put_u32(e, u);
}
void ua_put_f64(struct ua_enc *e, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    ua_put_u64(e, u);
}
void ua_put_str(struct ua_enc *e, const char *p, int32_t len)
{
    if (len < 0 || !p) {
        ua_put_i32(e, -1);
        return;
    }
    ua_put_i32(e, len);
    ua_put_raw(e, p, (size_t)len);
}
void ua_put_cstr(struct ua_enc *e, const char *s) { ua_put_str(e, s, s ? (int32_t)strlen(s) : -1); }

void ua_put_nodeid_num(struct ua_enc *e, uint16_t ns, uint32_t id)
{
    if (ns == 0 && id <= 0xFF) {
        ua_put_u8(e, 0);
        ua_put_u8(e, (uint8_t)id);
    } else if (ns <= 0xFF && id <= 0xFFFF) {
        ua_put_u8(e, 1);
        ua_put_u8(e, (uint8_t)ns);
        ua_put_u16(e, (uint16_t)id);
    } else {
        ua_put_u8(e, 2);
        ua_put_u16(e, ns);
        ua_put_u32(e, id);
    }
}

void ua_put_nodeid(struct ua_enc *e, const struct ua_nodeid *n)
{
    if (!n) {
        ua_put_nodeid_num(e, 0, 0);
        return;
    }
    switch (n->kind) {
        case UA_NID_NUMERIC: ua_put_nodeid_num(e, n->ns, n->num); break;
        case UA_NID_STRING:
        case UA_NID_BYTES:
            ua_put_u8(e, n->kind);
            ua_put_u16(e, n->ns);
            ua_put_str(e, n->str, n->str ? n->slen : -1);
            break;
        case UA_NID_GUID:
            ua_put_u8(e, 4);
            ua_put_u16(e, n->ns);
            ua_put_raw(e, n->guid, 16);
            break;
        default: e->err = true;
    }
}

void ua_put_qname(struct ua_enc *e, const struct ua_qname *q)
{
    ua_put_u16(e, q->ns);
    ua_put_str(e, q->name.p, q->name.len);
}

void ua_put_ltext(struct ua_enc *e, const struct ua_ltext *t)
{
    uint8_t m = (t->locale.len >= 0 && t->locale.p ? 1 : 0) | (t->text.len >= 0 && t->text.p ? 2 : 0);
    ua_put_u8(e, m);
    if (m & 1) ua_put_str(e, t->locale.p, t->locale.len);
    if (m & 2) ua_put_str(e, t->text.p, t->text.len);
}

static void put_scalar(struct ua_enc *e, const struct ua_variant *v)
{
    switch (v->type) {
        case UA_BOOLEAN: ua_put_bool(e, v->v.b); break;
        case UA_SBYTE: ua_put_u8(e, (uint8_t)(int8_t)v->v.i); break;
        case UA_BYTE: ua_put_u8(e, (uint8_t)v->v.u); break;
        case UA_INT16: ua_put_u16(e, (uint16_t)(int16_t)v->v.i); break;
        case UA_UINT16: ua_put_u16(e, (uint16_t)v->v.u); break;
        case UA_INT32: ua_put_u32(e, (uint32_t)(int32_t)v->v.i); break;
        case UA_UINT32:
        case UA_STATUSCODE: ua_put_u32(e, (uint32_t)v->v.u); break;
        case UA_INT64: ua_put_u64(e, (uint64_t)v->v.i); break;
        case UA_UINT64: ua_put_u64(e, v->v.u); break;
        case UA_FLOAT: ua_put_f32(e, (float)v->v.f); break;
        case UA_DOUBLE: ua_put_f64(e, v->v.f); break;
        case UA_DATETIME: ua_put_u64(e, (uint64_t)v->v.dt); break;
        case UA_STRING:
        case UA_BYTESTRING:
        case UA_XML: ua_put_str(e, v->v.s.p, v->v.s.len); break;
        case UA_GUID: ua_put_raw(e, v->v.guid, 16); break;
        case UA_NODEID: ua_put_nodeid(e, &v->v.nid); break;
        case UA_QNAME: ua_put_qname(e, &v->v.qn); break;
        case UA_LTEXT: ua_put_ltext(e, &v->v.lt); break;
        default: e->err = true; /* not something a client sends */
    }
}

void ua_put_variant(struct ua_enc *e, const struct ua_variant *v)
{
    if (v->type == UA_NULL) {
        ua_put_u8(e, 0);
        return;
    }
    if (v->type >= UA_BUILTIN_COUNT) {
        e->err = true;
        return;
    }
    if (v->is_array) {
        ua_put_u8(e, (uint8_t)(v->type | 0x80));
        ua_put_i32(e, v->count);
        ua_put_raw(e, v->arr, v->arr_len);
        return;
    }
    ua_put_u8(e, v->type);
    put_scalar(e, v);
}

void ua_put_datavalue(struct ua_enc *e, const struct ua_datavalue *dv)
{
    uint8_t m = dv->mask & (UA_DV_VALUE | UA_DV_STATUS | UA_DV_SRC_TS | UA_DV_SRV_TS);
    ua_put_u8(e, m);
    if (m & UA_DV_VALUE) ua_put_variant(e, &dv->value);
    if (m & UA_DV_STATUS) ua_put_u32(e, dv->status);
    if (m & UA_DV_SRC_TS) ua_put_u64(e, (uint64_t)dv->src_ts);
    if (m & UA_DV_SRV_TS) ua_put_u64(e, (uint64_t)dv->srv_ts);
}

/* ================================================================ decoder */
void ua_dec_init(struct ua_dec *d, const void *p, size_t len)
{
    d->p = p;
    d->len = len;
    d->pos = 0;
    d->err = false;
    d->depth = 0;
}

const uint8_t *ua_get_raw(struct ua_dec *d, size_t n)
{
    if (d->err || n > d->len - d->pos) {
        d->err = true;
        return NULL;
    }
    const uint8_t *p = d->p + d->pos;
    d->pos += n;
    return p;
}

uint8_t ua_get_u8(struct ua_dec *d)
{
    const uint8_t *b = ua_get_raw(d, 1);
    return b ? b[0] : 0;
}
uint16_t ua_get_u16(struct ua_dec *d)
{
    const uint8_t *b = ua_get_raw(d, 2);
    return b ? (uint16_t)(b[0] | b[1] << 8) : 0;
}
uint32_t ua_get_u32(struct ua_dec *d)
{
    const uint8_t *b = ua_get_raw(d, 4);
    return b ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24 : 0;
}
uint64_t ua_get_u64(struct ua_dec *d)
{
    uint64_t lo = ua_get_u32(d);
    uint64_t hi = ua_get_u32(d);
    return lo | hi << 32;
}
float ua_get_f32(struct ua_dec *d)
{
    uint32_t u = ua_get_u32(d);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
double ua_get_f64(struct ua_dec *d)
{
    uint64_t u = ua_get_u64(d);
    double f;
    memcpy(&f, &u, 8);
    return f;
}

struct ua_str ua_get_str(struct ua_dec *d)
{
    struct ua_str s = {NULL, -1};
    int32_t n = ua_get_i32(d);
    if (d->err || n < 0) return s; /* any negative length is null (Part 6 §5.2.2.4) */
    const uint8_t *p = ua_get_raw(d, (size_t)n);
    if (!p) return s;
    s.p = (const char *)p;
    s.len = n;
    return s;
}

int32_t ua_get_count(struct ua_dec *d)
{
    int32_t n = ua_get_i32(d);
    if (d->err) return 0;
    if (n < 0) return 0;
    if ((size_t)n > d->len - d->pos) { /* every element takes at least one byte */
        d->err = true;
        return 0;
    }
    return n;
}

static void get_nodeid_body(struct ua_dec *d, uint8_t form, struct ua_nodeid *n)
{
    memset(n, 0, sizeof *n);
    switch (form & 0x3F) {
        case 0: n->num = ua_get_u8(d); break;
        case 1:
            n->ns = ua_get_u8(d);
            n->num = ua_get_u16(d);
            break;
        case 2:
            n->ns = ua_get_u16(d);
            n->num = ua_get_u32(d);
            break;
        case 3:
        case 5: {
            n->kind = form & 0x3F;
            n->ns = ua_get_u16(d);
            struct ua_str s = ua_get_str(d);
            n->str = s.p;
            n->slen = s.len < 0 ? 0 : s.len;
            break;
        }
        case 4: {
            n->kind = UA_NID_GUID;
            n->ns = ua_get_u16(d);
            const uint8_t *g = ua_get_raw(d, 16);
            if (g) memcpy(n->guid, g, 16);
            break;
        }
        default: d->err = true;
    }
}

void ua_get_nodeid(struct ua_dec *d, struct ua_nodeid *n)
{
    uint8_t form = ua_get_u8(d);
    if (form & 0xC0) d->err = true; /* flags belong to ExpandedNodeId only */
    get_nodeid_body(d, form, n);
}

void ua_get_expnodeid(struct ua_dec *d, struct ua_nodeid *n, struct ua_str *ns_uri, uint32_t *server)
{
    uint8_t form = ua_get_u8(d);
    get_nodeid_body(d, form, n);
    struct ua_str u = {NULL, -1};
    uint32_t si = 0;
    if (form & 0x80) u = ua_get_str(d);
    if (form & 0x40) si = ua_get_u32(d);
    if (ns_uri) *ns_uri = u;
    if (server) *server = si;
}

void ua_get_qname(struct ua_dec *d, struct ua_qname *q)
{
    q->ns = ua_get_u16(d);
    q->name = ua_get_str(d);
}

void ua_get_ltext(struct ua_dec *d, struct ua_ltext *t)
{
    uint8_t m = ua_get_u8(d);
    t->locale = (struct ua_str){NULL, -1};
    t->text = (struct ua_str){NULL, -1};
    if (m & 1) t->locale = ua_get_str(d);
    if (m & 2) t->text = ua_get_str(d);
}

void ua_get_extobj(struct ua_dec *d, struct ua_nodeid *type_id, uint8_t *enc, struct ua_str *body)
{
    ua_get_nodeid(d, type_id);
    *enc = ua_get_u8(d);
    *body = (struct ua_str){NULL, -1};
    if (*enc == 1 || *enc == 2)
        *body = ua_get_str(d);
    else if (*enc != 0)
        d->err = true;
}

static void skip_diag(struct ua_dec *d)
{
    if (++d->depth > UA_MAX_DEPTH) {
        d->err = true;
        return;
    }
    uint8_t m = ua_get_u8(d);
    if (m & 0x01) ua_get_u32(d); /* symbolicId */
    if (m & 0x02) ua_get_u32(d); /* namespaceUri */
    if (m & 0x08) ua_get_u32(d); /* locale (before localizedText on the wire) */
    if (m & 0x04) ua_get_u32(d); /* localizedText */
    if (m & 0x10) ua_get_str(d); /* additionalInfo */
    if (m & 0x20) ua_get_u32(d); /* innerStatusCode */
    if (m & 0x40) skip_diag(d);  /* innerDiagnosticInfo */
    d->depth--;
}

void ua_get_scalar(struct ua_dec *d, uint8_t type, struct ua_variant *v)
{
    memset(v, 0, sizeof *v);
    v->type = type;
    switch (type) {
        case UA_BOOLEAN: v->v.b = ua_get_u8(d) != 0; break;
        case UA_SBYTE: v->v.i = (int8_t)ua_get_u8(d); break;
        case UA_BYTE: v->v.u = ua_get_u8(d); break;
        case UA_INT16: v->v.i = (int16_t)ua_get_u16(d); break;
        case UA_UINT16: v->v.u = ua_get_u16(d); break;
        case UA_INT32: v->v.i = (int32_t)ua_get_u32(d); break;
        case UA_UINT32:
        case UA_STATUSCODE: v->v.u = ua_get_u32(d); break;
        case UA_INT64: v->v.i = (int64_t)ua_get_u64(d); break;
        case UA_UINT64: v->v.u = ua_get_u64(d); break;
        case UA_FLOAT: v->v.f = ua_get_f32(d); break;
        case UA_DOUBLE: v->v.f = ua_get_f64(d); break;
        case UA_DATETIME: v->v.dt = (int64_t)ua_get_u64(d); break;
        case UA_STRING:
        case UA_BYTESTRING:
        case UA_XML: v->v.s = ua_get_str(d); break;
        case UA_GUID: {
            const uint8_t *g = ua_get_raw(d, 16);
            if (g) memcpy(v->v.guid, g, 16);
            break;
        }
        case UA_NODEID: ua_get_nodeid(d, &v->v.nid); break;
        case UA_EXPNODEID: ua_get_expnodeid(d, &v->v.nid, NULL, NULL); break;
        case UA_QNAME: ua_get_qname(d, &v->v.qn); break;
        case UA_LTEXT: ua_get_ltext(d, &v->v.lt); break;
        case UA_EXTOBJ: ua_get_extobj(d, &v->v.eo.type_id, &v->v.eo.enc, &v->v.eo.body); break;
        case UA_DATAVALUE: {
            struct ua_datavalue dv;
            ua_get_datavalue(d, &dv); /* nested: checked and skipped */
            break;
        }
        case UA_VARIANT: {
            struct ua_variant inner;
            if (++d->depth > UA_MAX_DEPTH)
                d->err = true;
            else
                ua_get_variant(d, &inner);
            d->depth--;
            break;
        }
        case UA_DIAGINFO: skip_diag(d); break;
        default: d->err = true;
    }
}

void ua_skip(struct ua_dec *d, uint8_t type)
{
    if (type < UA_BUILTIN_COUNT && ua_builtin[type].fixed) {
        ua_get_raw(d, ua_builtin[type].fixed);
        return;
    }
    struct ua_variant tmp;
    ua_get_scalar(d, type, &tmp);
}

void ua_skip_array(struct ua_dec *d, uint8_t type)
{
    int32_t n = ua_get_count(d);
    for (int32_t i = 0; i < n && !d->err; i++) ua_skip(d, type);
}

void ua_get_variant(struct ua_dec *d, struct ua_variant *v)
{
    memset(v, 0, sizeof *v);
    uint8_t m = ua_get_u8(d);
    uint8_t type = m & 0x3F;
    if (d->err) return;
    if (type >= UA_BUILTIN_COUNT) {
        d->err = true;
        return;
    }
    if (type == UA_NULL && !(m & 0x80)) return;
    if (m & 0x80) {
        v->type = type;
        v->is_array = true;
        int32_t n = ua_get_i32(d);
        v->count = n < 0 ? -1 : n;
        if (n > 0 && (size_t)n > ua_dec_left(d)) d->err = true;
        size_t start = d->pos;
        for (int32_t i = 0; i < n && !d->err; i++) ua_skip(d, type);
        if (!d->err) {
            v->arr = d->p + start;
            v->arr_len = d->pos - start;
        }
        if (m & 0x40) ua_skip_array(d, UA_INT32); /* dimensions */
        return;
    }
    if (type == UA_VARIANT) { /* a scalar Variant may not contain a Variant */
        d->err = true;
        return;
    }
    ua_get_scalar(d, type, v);
    if (m & 0x40) d->err = true; /* dimensions without array */
}

void ua_get_datavalue(struct ua_dec *d, struct ua_datavalue *dv)
{
    memset(dv, 0, sizeof *dv);
    if (++d->depth > UA_MAX_DEPTH) {
        d->err = true;
        return;
    }
    dv->mask = ua_get_u8(d);
    if (dv->mask & UA_DV_VALUE) ua_get_variant(d, &dv->value);
    if (dv->mask & UA_DV_STATUS) dv->status = ua_get_u32(d);
    if (dv->mask & UA_DV_SRC_TS) dv->src_ts = (int64_t)ua_get_u64(d);
    if (dv->mask & UA_DV_SRC_PICO) ua_get_u16(d);
    if (dv->mask & UA_DV_SRV_TS) dv->srv_ts = (int64_t)ua_get_u64(d);
    if (dv->mask & UA_DV_SRV_PICO) ua_get_u16(d);
    d->depth--;
}

int ua_variant_elem(const struct ua_variant *v, int32_t k, struct ua_variant *out)
{
    if (!v->is_array || k < 0 || k >= v->count) return FB_ERANGE;
    struct ua_dec d;
    ua_dec_init(&d, v->arr, v->arr_len);
    if (ua_builtin[v->type].fixed) {
        d.pos = (size_t)k * ua_builtin[v->type].fixed;
        if (d.pos > d.len) return FB_EPROTO;
    } else {
        for (int32_t i = 0; i < k && !d.err; i++) ua_skip(&d, v->type);
    }
    ua_get_scalar(&d, v->type, out);
    return d.err ? FB_EPROTO : 0;
}

/* ================================================================ node ids */
static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64val(int c)
{
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

/* Decodes base64 text into out (cap >= 3*len/4+3); returns length or −1. */
static int b64_decode(const char *s, size_t n, uint8_t *out)
{
    uint32_t acc = 0;
    int bits = 0, len = 0;
    size_t i = 0;
    for (; i < n && s[i] != '='; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (uint8_t)(acc >> bits);
        }
    }
    for (; i < n; i++)
        if (s[i] != '=') return -1;
    return len;
}

static size_t b64_encode(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        char q[4] = {b64[v >> 18 & 63], b64[v >> 12 & 63], i + 1 < n ? b64[v >> 6 & 63] : '=',
                     i + 2 < n ? b64[v & 63] : '='};
        for (int k = 0; k < 4; k++)
            if (o + 1 < cap) out[o++] = q[k];
    }
    if (cap) out[o < cap ? o : cap - 1] = 0;
    return o;
}

void ua_guid_format(const uint8_t g[16], char out[37])
{
    uint32_t d1 = (uint32_t)g[0] | (uint32_t)g[1] << 8 | (uint32_t)g[2] << 16 | (uint32_t)g[3] << 24;
    unsigned d2 = (unsigned)(g[4] | g[5] << 8), d3 = (unsigned)(g[6] | g[7] << 8);
    snprintf(out, 37, "%08" PRIx32 "-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", d1, d2, d3, g[8], g[9], g[10], g[11],
             g[12], g[13], g[14], g[15]);
}

static int hex1(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int ua_guid_parse(const char *s, uint8_t g[16])
{
    /* 8-4-4-4-12 hex digits */
    uint8_t raw[16];
    int k = 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return FB_EINVAL;
            continue;
        }
        int h = hex1((unsigned char)s[i]), l;
        if (h < 0 || (l = hex1((unsigned char)s[++i])) < 0) return FB_EINVAL;
        raw[k++] = (uint8_t)(h << 4 | l);
    }
    if (s[36]) return FB_EINVAL;
    /* text is big endian for the first three groups; the wire is little endian */
    g[0] = raw[3], g[1] = raw[2], g[2] = raw[1], g[3] = raw[0];
    g[4] = raw[5], g[5] = raw[4], g[6] = raw[7], g[7] = raw[6];
    memcpy(g + 8, raw + 8, 8);
    return 0;
}

void ua_nodeid_clear(struct ua_nodeid *n)
{
    free(n->own);
    memset(n, 0, sizeof *n);
}

int ua_nodeid_copy(const struct ua_nodeid *src, struct ua_nodeid *dst)
{
    struct ua_nodeid t = *src;
    t.own = NULL;
    if (src->kind == UA_NID_STRING || src->kind == UA_NID_BYTES) {
        t.own = malloc((size_t)src->slen + 1);
        if (!t.own) return FB_ENOMEM;
        if (src->slen) memcpy(t.own, src->str, (size_t)src->slen);
        t.own[src->slen] = 0;
        t.str = t.own;
    }
    *dst = t;
    return 0;
}

bool ua_nodeid_equal(const struct ua_nodeid *a, const struct ua_nodeid *b)
{
    if (a->ns != b->ns || a->kind != b->kind) return false;
    switch (a->kind) {
        case UA_NID_NUMERIC: return a->num == b->num;
        case UA_NID_GUID: return !memcmp(a->guid, b->guid, 16);
        default: return a->slen == b->slen && (!a->slen || !memcmp(a->str, b->str, (size_t)a->slen));
    }
}

bool ua_nodeid_is_null(const struct ua_nodeid *n) { return n->ns == 0 && n->kind == UA_NID_NUMERIC && n->num == 0; }

int ua_nodeid_parse(const char *text, struct ua_nodeid *out, struct fb_err *err)
{
    memset(out, 0, sizeof *out);
    const char *s = text;
    if (!strncmp(s, "ns=", 3)) {
        char *end;
        unsigned long ns = strtoul(s + 3, &end, 10);
        if (end == s + 3 || *end != ';' || ns > 65535)
            return fb_err_set(err, FB_EINVAL, "bad namespace index in node id '%s' (ns=0..65535;…)", text);
        out->ns = (uint16_t)ns;
        s = end + 1;
    }
    if (!s[0] || s[1] != '=')
        return fb_err_set(err, FB_EINVAL,
                          "bad node id '%s': expected i=N, s=TEXT, g=GUID or b=BASE64, optionally after ns=N;", text);
    const char *v = s + 2;
    size_t n = strlen(v);
    switch (s[0]) {
        case 'i': {
            char *end;
            if (!*v || *v == '-' || *v == '+') return fb_err_set(err, FB_EINVAL, "bad numeric node id '%s'", text);
            unsigned long long id = strtoull(v, &end, 10);
            if (*end || id > UINT32_MAX) return fb_err_set(err, FB_EINVAL, "bad numeric node id '%s'", text);
            out->kind = UA_NID_NUMERIC;
            out->num = (uint32_t)id;
            return 0;
        }
        case 's':
            if (n > 4096) return fb_err_set(err, FB_EINVAL, "node id '%.40s…' is longer than 4096 bytes", text);
            out->own = malloc(n + 1);
            if (!out->own) return fb_err_set(err, FB_ENOMEM, "out of memory");
            memcpy(out->own, v, n + 1);
            out->kind = UA_NID_STRING;
            out->str = out->own;
            out->slen = (int32_t)n;
            return 0;
        case 'g':
            out->kind = UA_NID_GUID;
            if (n != 36 || ua_guid_parse(v, out->guid))
                return fb_err_set(err, FB_EINVAL, "bad GUID in node id '%s' (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                                  text);
            return 0;
        case 'b': {
            if (n > 8192) return fb_err_set(err, FB_EINVAL, "opaque node id too long");
            out->own = malloc(n * 3 / 4 + 4);
            if (!out->own) return fb_err_set(err, FB_ENOMEM, "out of memory");
            int len = b64_decode(v, n, (uint8_t *)out->own);
            if (len < 0) {
                ua_nodeid_clear(out);
                return fb_err_set(err, FB_EINVAL, "bad base64 in node id '%s'", text);
            }
            out->kind = UA_NID_BYTES;
            out->str = out->own;
            out->slen = len;
            return 0;
        }
        default:
            return fb_err_set(err, FB_EINVAL,
                              "bad node id '%s': expected i=N, s=TEXT, g=GUID or b=BASE64, optionally after ns=N;",
                              text);
    }
}

char *ua_nodeid_format(const struct ua_nodeid *n, char *buf, size_t cap)
{
    if (!cap) return buf;
    char ns[16] = "";
    if (n->ns) snprintf(ns, sizeof ns, "ns=%u;", n->ns);
    switch (n->kind) {
        case UA_NID_NUMERIC: snprintf(buf, cap, "%si=%" PRIu32, ns, n->num); break;
        case UA_NID_STRING: snprintf(buf, cap, "%ss=%.*s", ns, (int)n->slen, n->str ? n->str : ""); break;
        case UA_NID_GUID: {
            char g[37];
            ua_guid_format(n->guid, g);
            snprintf(buf, cap, "%sg=%s", ns, g);
            break;
        }
        case UA_NID_BYTES: {
            size_t o = (size_t)snprintf(buf, cap, "%sb=", ns);
            if (o < cap) b64_encode((const uint8_t *)n->str, (size_t)n->slen, buf + o, cap - o);
            break;
        }
        default: snprintf(buf, cap, "?");
    }
    return buf;
}

/* ================================================================ time */
size_t ua_dt_format(int64_t dt, char *buf, size_t cap)
{
    if (cap < 32) {
        if (cap) buf[0] = 0;
        return 0;
    }
    /* clamp as the spec says (min and max DateTime); the subtraction of
     * the epoch cannot overflow then.  Floor division so dates before 1970 work. */
    if (dt < 0) dt = 0;
    if (dt > UA_DT_MAX) dt = UA_DT_MAX;
    int64_t rel = dt - UA_DT_UNIX_EPOCH;
    int64_t secs = rel / 10000000, frac = rel % 10000000;
    if (frac < 0) {
        frac += 10000000;
        secs--;
    }
    /* not gmtime_r: a 32-bit time_t (armhf) ends in 2038, DateTime in 9999 */
    int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400, sod = secs - days * 86400;
    int y;
    unsigned mo, d;
    fb_civil_from_days(days, &y, &mo, &d);
    int hh = (int)(sod / 3600), mi = (int)(sod / 60 % 60), ss = (int)(sod % 60);
    int n = frac % 10000
                ? snprintf(buf, cap, "%04d-%02u-%02uT%02d:%02d:%02d.%07dZ", y, mo, d, hh, mi, ss, (int)frac)
                : snprintf(buf, cap, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", y, mo, d, hh, mi, ss, (int)(frac / 10000));
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* ================================================================ fb values */
static uint32_t put_text(struct fb_value *out, char *sbuf, size_t cap, const char *p, size_t n)
{
    if (n > cap) n = cap;
    if (n && p != sbuf) memmove(sbuf, p, n);
    out->type = FB_T_STRING;
    out->s.p = sbuf;
    out->s.len = (uint32_t)n;
    return FB_Q_GOOD;
}

/* Text form of any decodable scalar (used for strings and string tags). */
static uint32_t to_text(const struct ua_variant *v, struct fb_value *out, char *sbuf, size_t cap)
{
    char tmp[80];
    switch (v->type) {
        case UA_STRING:
        case UA_XML: return put_text(out, sbuf, cap, v->v.s.p ? v->v.s.p : "", v->v.s.len > 0 ? (size_t)v->v.s.len : 0);
        case UA_BYTESTRING: {
            size_t n = v->v.s.len > 0 ? (size_t)v->v.s.len : 0, o = 0;
            static const char hx[] = "0123456789abcdef";
            for (size_t i = 0; i < n && o + 2 <= cap; i++) {
                sbuf[o++] = hx[(uint8_t)v->v.s.p[i] >> 4];
                sbuf[o++] = hx[(uint8_t)v->v.s.p[i] & 15];
            }
            return put_text(out, sbuf, cap, sbuf, o);
        }
        case UA_LTEXT:
            return put_text(out, sbuf, cap, v->v.lt.text.p ? v->v.lt.text.p : "",
                            v->v.lt.text.len > 0 ? (size_t)v->v.lt.text.len : 0);
        case UA_QNAME: {
            int n = v->v.qn.ns ? snprintf(tmp, sizeof tmp, "%u:", v->v.qn.ns) : 0;
            size_t nl = v->v.qn.name.len > 0 ? (size_t)v->v.qn.name.len : 0;
            if ((size_t)n + nl > cap) nl = cap > (size_t)n ? cap - (size_t)n : 0;
            if ((size_t)n > cap) n = (int)cap;
            memcpy(sbuf, tmp, (size_t)n);
            if (nl) memcpy(sbuf + n, v->v.qn.name.p, nl);
            return put_text(out, sbuf, cap, sbuf, (size_t)n + nl);
        }
        case UA_GUID: ua_guid_format(v->v.guid, tmp); break;
        case UA_DATETIME: ua_dt_format(v->v.dt, tmp, sizeof tmp); break;
        case UA_NODEID:
        case UA_EXPNODEID: {
            char big[600];
            ua_nodeid_format(&v->v.nid, big, sizeof big);
            return put_text(out, sbuf, cap, big, strlen(big));
        }
        case UA_BOOLEAN: snprintf(tmp, sizeof tmp, "%s", v->v.b ? "true" : "false"); break;
        case UA_SBYTE:
        case UA_INT16:
        case UA_INT32:
        case UA_INT64: snprintf(tmp, sizeof tmp, "%" PRId64, v->v.i); break;
        case UA_BYTE:
        case UA_UINT16:
        case UA_UINT32:
        case UA_UINT64: snprintf(tmp, sizeof tmp, "%" PRIu64, v->v.u); break;
        case UA_STATUSCODE: snprintf(tmp, sizeof tmp, "0x%08" PRIX64, v->v.u); break;
        case UA_FLOAT: snprintf(tmp, sizeof tmp, "%.9g", v->v.f); break;
        case UA_DOUBLE: snprintf(tmp, sizeof tmp, "%.17g", v->v.f); break;
        default: return FB_Q_BAD_TYPE_MISMATCH;
    }
    return put_text(out, sbuf, cap, tmp, strlen(tmp));
}

uint32_t ua_variant_to_fb(const struct ua_variant *v, enum fb_type want, struct fb_value *out, char *sbuf,
                          size_t sbuf_cap)
{
    memset(out, 0, sizeof *out);
    if (v->is_array || v->type == UA_NULL || v->type >= UA_BUILTIN_COUNT) return FB_Q_BAD_TYPE_MISMATCH;
    enum fb_type nat = (enum fb_type)ua_builtin[v->type].fbtype;
    if (nat == FB_T_NONE) return FB_Q_BAD_TYPE_MISMATCH;
    if (want == FB_T_NONE) want = nat;
    if (want == FB_T_STRING) return to_text(v, out, sbuf, sbuf_cap);
    if (nat == FB_T_STRING) return FB_Q_BAD_TYPE_MISMATCH; /* text into a number: no guessing */
    out->type = (uint8_t)want;
    if (want == nat) { /* exact: no precision lost (64-bit integers) */
        switch (v->type) {
            case UA_BOOLEAN: out->b = v->v.b; break;
            case UA_FLOAT:
            case UA_DOUBLE: out->f = v->v.f; break;
            case UA_SBYTE:
            case UA_INT16:
            case UA_INT32:
            case UA_INT64: out->i = v->v.i; break;
            default: out->u = v->v.u; break;
        }
        return FB_Q_GOOD;
    }
    bool sgn = v->type == UA_SBYTE || v->type == UA_INT16 || v->type == UA_INT32 || v->type == UA_INT64;
    if (want == FB_T_BOOL) {
        out->b = v->type == UA_BOOLEAN ? v->v.b : fb_type_is_float(nat) ? v->v.f != 0 : sgn ? v->v.i != 0 : v->v.u != 0;
        return FB_Q_GOOD;
    }
    if (fb_type_is_int(want) && !fb_type_is_float(nat)) { /* integer to integer, exact */
        struct fb_value tmp;
        if (v->type == UA_BOOLEAN) {
            tmp.type = FB_T_UINT64;
            tmp.u = v->v.b;
        } else if (sgn) {
            tmp.type = FB_T_INT64;
            tmp.i = v->v.i;
        } else {
            tmp.type = FB_T_UINT64;
            tmp.u = v->v.u;
        }
        static const int64_t smin[] = {
            [FB_T_INT8] = INT8_MIN, [FB_T_INT16] = INT16_MIN, [FB_T_INT32] = INT32_MIN, [FB_T_INT64] = INT64_MIN};
        static const int64_t smax[] = {
            [FB_T_INT8] = INT8_MAX, [FB_T_INT16] = INT16_MAX, [FB_T_INT32] = INT32_MAX, [FB_T_INT64] = INT64_MAX};
        static const uint64_t umax[] = {[FB_T_UINT8] = UINT8_MAX,
                                        [FB_T_UINT16] = UINT16_MAX,
                                        [FB_T_UINT32] = UINT32_MAX,
                                        [FB_T_UINT64] = UINT64_MAX};
        if (fb_type_is_signed(want)) {
            if (tmp.type == FB_T_UINT64 && tmp.u > (uint64_t)smax[want]) return FB_Q_BAD_OUT_OF_RANGE;
            int64_t x = tmp.type == FB_T_UINT64 ? (int64_t)tmp.u : tmp.i;
            if (x < smin[want] || x > smax[want]) return FB_Q_BAD_OUT_OF_RANGE;
            out->i = x;
        } else {
            if (tmp.type == FB_T_INT64 && tmp.i < 0) return FB_Q_BAD_OUT_OF_RANGE;
            uint64_t x = tmp.type == FB_T_INT64 ? (uint64_t)tmp.i : tmp.u;
            if (x > umax[want]) return FB_Q_BAD_OUT_OF_RANGE;
            out->u = x;
        }
        return FB_Q_GOOD;
    }
    double d = v->type == UA_BOOLEAN   ? (v->v.b ? 1 : 0)
               : fb_type_is_float(nat) ? v->v.f
               : sgn                   ? (double)v->v.i
                                       : (double)v->v.u;
    if (fb_type_is_float(want)) {
        out->f = want == FB_T_FLOAT32 ? (double)(float)d : d;
        return FB_Q_GOOD;
    }
    if (isnan(d)) return FB_Q_BAD_OUT_OF_RANGE;
    return fb_value_from_double(want, d, out) < 0 ? FB_Q_BAD_OUT_OF_RANGE : FB_Q_GOOD;
}

int ua_variant_from_fb(const struct fb_value *v, uint8_t type, struct ua_variant *out, uint8_t *buf, size_t buf_cap,
                       struct fb_err *err)
{
    memset(out, 0, sizeof *out);
    out->type = type;
    if (type == UA_STRING || type == UA_XML || type == UA_LTEXT || type == UA_BYTESTRING) {
        if (v->type != FB_T_STRING)
            return fb_err_set(err, FB_EINVAL, "the node holds a %s: send a string", ua_builtin_name(type));
        struct ua_str s = {v->s.p ? v->s.p : "", (int32_t)v->s.len};
        if (type == UA_LTEXT) {
            out->v.lt.locale = (struct ua_str){NULL, -1};
            out->v.lt.text = s;
        } else if (type == UA_BYTESTRING) { /* hex text, as reads show it */
            if (s.len % 2 || (size_t)s.len / 2 > buf_cap)
                return fb_err_set(err, FB_EINVAL, "a ByteString is written as an even number of hex digits");
            for (int32_t i = 0; i < s.len; i += 2) {
                int h = hex1((unsigned char)s.p[i]), l = hex1((unsigned char)s.p[i + 1]);
                if (h < 0 || l < 0) return fb_err_set(err, FB_EINVAL, "a ByteString is written as hex digits");
                buf[i / 2] = (uint8_t)(h << 4 | l);
            }
            out->v.s = (struct ua_str){(const char *)buf, s.len / 2};
        } else {
            out->v.s = s;
        }
        return 0;
    }
    if (type == UA_BOOLEAN) {
        double d;
        if (v->type == FB_T_BOOL)
            out->v.b = v->b;
        else if (fb_value_to_double(v, &d))
            out->v.b = d != 0;
        else
            return fb_err_set(err, FB_EINVAL, "the node holds a Boolean: send true or false");
        return 0;
    }
    if (type == UA_FLOAT || type == UA_DOUBLE) {
        double d;
        if (!fb_value_to_double(v, &d))
            return fb_err_set(err, FB_EINVAL, "the node holds a %s: send a number", ua_builtin_name(type));
        if (type == UA_FLOAT && isfinite(d) && fabs(d) > 3.4028234663852886e38)
            return fb_err_set(err, FB_ERANGE, "%g is outside the range of a Float", d);
        out->v.f = d;
        return 0;
    }
    if (type >= UA_SBYTE && type <= UA_UINT64) {
        static const uint8_t map[] = {
            [UA_SBYTE] = FB_T_INT8,  [UA_BYTE] = FB_T_UINT8,    [UA_INT16] = FB_T_INT16, [UA_UINT16] = FB_T_UINT16,
            [UA_INT32] = FB_T_INT32, [UA_UINT32] = FB_T_UINT32, [UA_INT64] = FB_T_INT64, [UA_UINT64] = FB_T_UINT64};
        enum fb_type ft = (enum fb_type)map[type];
        struct ua_variant src = {0};
        if (v->type == FB_T_STRING)
            return fb_err_set(err, FB_EINVAL, "the node holds a %s: send a number", ua_builtin_name(type));
        if (fb_type_is_float((enum fb_type)v->type)) {
            struct fb_value t;
            if (fb_value_from_double(ft, v->f, &t) < 0)
                return fb_err_set(err, FB_ERANGE, "%g is outside the range of %s", v->f, ua_builtin_name(type));
            if (fb_type_is_signed(ft))
                out->v.i = t.i;
            else
                out->v.u = t.u;
            return 0;
        }
        if (v->type == FB_T_BOOL) {
            src.type = UA_BYTE;
            src.v.u = v->b;
        } else if (fb_type_is_signed((enum fb_type)v->type)) {
            src.type = UA_INT64;
            src.v.i = v->i;
        } else {
            src.type = UA_UINT64;
            src.v.u = v->u;
        }
        struct fb_value t;
        char sb[1];
        if (ua_variant_to_fb(&src, ft, &t, sb, 0) != FB_Q_GOOD) {
            char num[32];
            if (src.type == UA_INT64)
                snprintf(num, sizeof num, "%" PRId64, src.v.i);
            else
                snprintf(num, sizeof num, "%" PRIu64, src.v.u);
            return fb_err_set(err, FB_ERANGE, "%s is outside the range of %s", num, ua_builtin_name(type));
        }
        if (fb_type_is_signed(ft))
            out->v.i = t.i;
        else
            out->v.u = t.u;
        return 0;
    }
    return fb_err_set(err, FB_ENOTSUP, "writing a %s is not supported", ua_builtin_name(type));
}

uint8_t ua_datatype_builtin(const struct ua_nodeid *dt)
{
    if (dt->ns != 0 || dt->kind != UA_NID_NUMERIC) return 0;
    uint32_t i = dt->num;
    if (i >= 1 && i <= 25) return (uint8_t)i;
    switch (i) {
        case 29: return UA_INT32;       /* Enumeration */
        case 290: return UA_DOUBLE;     /* Duration */
        case 294: return UA_DATETIME;   /* UtcTime */
        case 293: return UA_DATETIME;   /* Date */
        case 288: return UA_UINT32;     /* IntegerId */
        case 289: return UA_UINT32;     /* Counter */
        case 291: return UA_STRING;     /* NumericRange */
        case 292: return UA_STRING;     /* Time */
        case 295: return UA_STRING;     /* LocaleId */
        case 311: return UA_BYTESTRING; /* ApplicationInstanceCertificate */
        case 12878: return UA_STRING;   /* NormalizedString */
        case 12879: return UA_STRING;   /* DecimalString */
        case 12880: return UA_STRING;   /* DurationString */
        case 12881: return UA_STRING;   /* TimeString */
        case 12882: return UA_STRING;   /* DateString */
        default: return 0;
    }
}
