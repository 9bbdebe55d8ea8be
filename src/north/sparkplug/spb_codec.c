/* spb_codec.c — Sparkplug B payload encoding and decoding (see spb_codec.h).
 *
 * The protobuf-c structures of a payload are filled in place from reusable
 * slots (one per metric, each with its own one-entry property set for the
 * Quality property and a string buffer), then packed with protobuf-c into a
 * caller's fb_buf.  Nothing is allocated once the slots have grown. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "north/sparkplug/spb_codec.h"

static char k_quality[] = "Quality";
static char k_raw[] = "Raw";

uint32_t fb_spb_datatype(enum fb_type t)
{
    switch (t) {
        case FB_T_BOOL: return SPB_BOOLEAN;
        case FB_T_INT8: return SPB_INT8;
        case FB_T_UINT8: return SPB_UINT8;
        case FB_T_INT16: return SPB_INT16;
        case FB_T_UINT16: return SPB_UINT16;
        case FB_T_INT32: return SPB_INT32;
        case FB_T_UINT32: return SPB_UINT32;
        case FB_T_INT64: return SPB_INT64;
        case FB_T_UINT64: return SPB_UINT64;
        case FB_T_FLOAT32: return SPB_FLOAT;
        case FB_T_FLOAT64: return SPB_DOUBLE;
        case FB_T_STRING: return SPB_STRING;
        default: return SPB_UNKNOWN;
    }
}

const char *fb_spb_datatype_name(uint32_t dt)
{
    static const char *const names[] = {"Unknown", "Int8",   "Int16",   "Int32",  "Int64",   "UInt8",   "UInt16",
                                        "UInt32",  "UInt64", "Float",   "Double", "Boolean", "String",  "DateTime",
                                        "Text",    "UUID",   "DataSet", "Bytes",  "File",    "Template"};
    return dt < sizeof names / sizeof names[0] ? names[dt] : "Unknown";
}

int32_t fb_spb_quality(uint32_t q)
{
    if (fb_q_bad(q)) return SPB_Q_BAD;
    if (fb_q_good(q)) return SPB_Q_GOOD;
    return SPB_Q_STALE;
}

/* ------------------------------------------------------------------ encode */
void fb_spb_enc_init(struct fb_spb_enc *e) { memset(e, 0, sizeof *e); }

void fb_spb_enc_free(struct fb_spb_enc *e)
{
    for (uint32_t i = 0; i < e->cap; i++) {
        if (!e->slots[i]) continue;
        free(e->slots[i]->sbuf);
        free(e->slots[i]);
    }
    free(e->slots);
    free(e->mp);
    memset(e, 0, sizeof *e);
}

void fb_spb_enc_begin(struct fb_spb_enc *e, uint64_t ts_ms, int seq)
{
    org__eclipse__tahu__protobuf__payload__init(&e->p);
    e->p.has_timestamp = true;
    e->p.timestamp = ts_ms;
    if (seq >= 0) {
        e->p.has_seq = true;
        e->p.seq = (uint64_t)seq;
    }
    e->n = 0;
}

spb_metric *fb_spb_enc_add(struct fb_spb_enc *e, const char *name, int64_t alias, int64_t ts_ms, uint32_t datatype)
{
    if (e->n == e->cap) {
        uint32_t nc = e->cap ? e->cap * 2 : 16;
        struct fb_spb_slot **s = realloc(e->slots, nc * sizeof *s);
        if (!s) return NULL;
        memset(s + e->cap, 0, (nc - e->cap) * sizeof *s);
        e->slots = s;
        spb_metric **mp = realloc(e->mp, nc * sizeof *mp);
        if (!mp) return NULL;
        e->mp = mp;
        e->cap = nc;
    }
    if (!e->slots[e->n] && !(e->slots[e->n] = calloc(1, sizeof **e->slots))) return NULL;
    struct fb_spb_slot *sl = e->slots[e->n];
    e->mp[e->n] = &sl->m;
    e->n++;
    spb_metric *m = &sl->m;
    org__eclipse__tahu__protobuf__payload__metric__init(m);
    m->name = (char *)name;
    if (alias >= 0) {
        m->has_alias = true;
        m->alias = (uint64_t)alias;
    }
    if (ts_ms >= 0) {
        m->has_timestamp = true;
        m->timestamp = (uint64_t)ts_ms;
    }
    if (datatype) {
        m->has_datatype = true;
        m->datatype = datatype;
    }
    return m;
}

static struct fb_spb_slot *slot_of(struct fb_spb_enc *e, spb_metric *m)
{
    (void)e;
    /* m is the first member of its slot */
    return (struct fb_spb_slot *)(void *)m;
}

static void set_null(spb_metric *m)
{
    m->value_case = ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__METRIC__VALUE__NOT_SET;
    m->has_is_null = true;
    m->is_null = true;
}

/* Integer view of a value: signed and unsigned, with a flag for floats. */
static bool int_view(const struct fb_value *v, int64_t *i, uint64_t *u)
{
    switch (v->type) {
        case FB_T_BOOL:
            *i = v->b;
            *u = v->b;
            return true;
        case FB_T_INT8:
        case FB_T_INT16:
        case FB_T_INT32:
        case FB_T_INT64:
            *i = v->i;
            *u = (uint64_t)v->i;
            return true;
        case FB_T_UINT8:
        case FB_T_UINT16:
        case FB_T_UINT32:
        case FB_T_UINT64:
            *u = v->u;
            *i = (int64_t)v->u;
            return true;
        case FB_T_FLOAT32:
        case FB_T_FLOAT64: {
            if (!isfinite(v->f) || v->f < -9.2e18 || v->f > 1.8e19) return false;
            double r = nearbyint(v->f);
            if (r < 9.2e18) {
                *i = (int64_t)r;
                *u = (uint64_t)*i;
            } else {
                *u = (uint64_t)r;
                *i = INT64_MAX;
            }
            return true;
        }
        default: return false;
    }
}

int fb_spb_enc_value(struct fb_spb_enc *e, spb_metric *m, uint32_t dt, const struct fb_value *v)
{
    if (!v || v->type == FB_T_NONE) {
        set_null(m);
        return 0;
    }
    int64_t i = 0;
    uint64_t u = 0;
    double d = 0;
    switch (dt) {
        case SPB_INT8:
        case SPB_INT16:
        case SPB_INT32:
            if (!int_view(v, &i, &u)) break;
            m->value_case = ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__METRIC__VALUE_INT_VALUE;
            m->int_value = (uint32_t)(int32_t)i;
            return 0;
        case SPB_UINT8:
        case SPB_UINT16:
            if (!int_view(v, &i, &u)) break;
            m->value_case = ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__METRIC__VALUE_INT_VALUE;
            m->int_value = (uint32_t)u;
            return 0;
        case SPB_UINT32:
        case SPB_INT64:
        case SPB_UINT64:
        case SPB_DATETIME:
            if (!int_view(v, &i, &u)) break;
            m->value_case = ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__METRIC__VALUE_LONG_VALUE;
            m->long_value = dt == SPB_UINT32 ? (uint64_t)(uint32_t)u : u;
            return 0;
        case SPB_FLOAT:
        case SPB_DOUBLE:
            if (!fb_value_to_double(v, &d)) break;
            if (dt == SPB_FLOAT) {
                m->value_case = ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__METRIC__VALUE_FLOAT_VALUE;
                m->float_value = (float)d;
            } else {
                m->value_case = ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__METRIC__VALUE_DOUBLE_VALUE;
                m->double_value = d;
            }
            return 0;
        case SPB_BOOLEAN:
            if (v->type == FB_T_BOOL) {
                m->boolean_value = v->b;
            } else if (fb_value_to_double(v, &d)) {
                m->boolean_value = d != 0;
            } else {
                break;
            }
            m->value_case = ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__METRIC__VALUE_BOOLEAN_VALUE;
            return 0;
        case SPB_STRING:
        case SPB_TEXT:
        case SPB_UUID: {
            if (v->type != FB_T_STRING) break;
            struct fb_spb_slot *sl = slot_of(e, m);
            if (sl->scap < v->s.len + 1) {
                uint32_t nc = v->s.len + 1 < 64 ? 64 : v->s.len + 1;
                char *nb = realloc(sl->sbuf, nc);
                if (!nb) break;
                sl->sbuf = nb;
                sl->scap = nc;
            }
            if (v->s.len) memcpy(sl->sbuf, v->s.p, v->s.len);
            sl->sbuf[v->s.len] = 0;
            /* a string field must be valid as a C string: cut at an embedded NUL */
            m->value_case = ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__METRIC__VALUE_STRING_VALUE;
            m->string_value = sl->sbuf;
            return 0;
        }
        default: break;
    }
    set_null(m);
    return FB_EINVAL;
}

void fb_spb_enc_quality(struct fb_spb_enc *e, spb_metric *m, int32_t q)
{
    struct fb_spb_slot *sl = slot_of(e, m);
    org__eclipse__tahu__protobuf__payload__property_set__init(&sl->ps);
    org__eclipse__tahu__protobuf__payload__property_value__init(&sl->pv[0]);
    sl->pv[0].has_type = true;
    sl->pv[0].type = SPB_INT32;
    sl->pv[0].value_case = ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__PROPERTY_VALUE__VALUE_INT_VALUE;
    sl->pv[0].int_value = (uint32_t)q;
    sl->pvp[0] = &sl->pv[0];
    sl->keys[0] = k_quality;
    sl->ps.n_keys = 1;
    sl->ps.keys = sl->keys;
    sl->ps.n_values = 1;
    sl->ps.values = sl->pvp;
    m->properties = &sl->ps;
}

#define PV(x) ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__PROPERTY_VALUE__VALUE_##x

int fb_spb_enc_raw(struct fb_spb_enc *e, spb_metric *m, uint32_t dt, const struct fb_value *v)
{
    struct fb_spb_slot *sl = slot_of(e, m);
    if (m->properties != &sl->ps) { /* no Quality yet: Raw alone */
        org__eclipse__tahu__protobuf__payload__property_set__init(&sl->ps);
        sl->ps.keys = sl->keys;
        sl->ps.values = sl->pvp;
        m->properties = &sl->ps;
    }
    size_t i = sl->ps.n_keys;
    if (i >= 2 || !v) return FB_EINVAL;
    spb_propval *pv = &sl->pv[i];
    org__eclipse__tahu__protobuf__payload__property_value__init(pv);
    int64_t n = 0;
    uint64_t u = 0;
    double d = 0;
    switch (dt) {
        case SPB_INT8:
        case SPB_INT16:
        case SPB_INT32:
            if (!int_view(v, &n, &u)) return FB_EINVAL;
            pv->value_case = PV(INT_VALUE);
            pv->int_value = (uint32_t)(int32_t)n;
            break;
        case SPB_UINT8:
        case SPB_UINT16:
            if (!int_view(v, &n, &u)) return FB_EINVAL;
            pv->value_case = PV(INT_VALUE);
            pv->int_value = (uint32_t)u;
            break;
        case SPB_UINT32:
        case SPB_INT64:
        case SPB_UINT64:
            if (!int_view(v, &n, &u)) return FB_EINVAL;
            pv->value_case = PV(LONG_VALUE);
            pv->long_value = dt == SPB_UINT32 ? (uint64_t)(uint32_t)u : u;
            break;
        case SPB_FLOAT:
            if (!fb_value_to_double(v, &d)) return FB_EINVAL;
            pv->value_case = PV(FLOAT_VALUE);
            pv->float_value = (float)d;
            break;
        case SPB_DOUBLE:
            if (!fb_value_to_double(v, &d)) return FB_EINVAL;
            pv->value_case = PV(DOUBLE_VALUE);
            pv->double_value = d;
            break;
        case SPB_BOOLEAN:
            if (!fb_value_to_double(v, &d)) return FB_EINVAL;
            pv->value_case = PV(BOOLEAN_VALUE);
            pv->boolean_value = d != 0;
            break;
        default: return FB_EINVAL; /* strings are never refused by plausibility */
    }
    pv->has_type = true;
    pv->type = dt;
    sl->keys[i] = k_raw;
    sl->pvp[i] = pv;
    sl->ps.n_keys = sl->ps.n_values = i + 1;
    return 0;
}

size_t fb_spb_enc_finish(struct fb_spb_enc *e, struct fb_buf *out)
{
    e->p.n_metrics = e->n;
    e->p.metrics = e->n ? e->mp : NULL;
    size_t len = org__eclipse__tahu__protobuf__payload__get_packed_size(&e->p);
    fb_buf_clear(out);
    fb_buf_reserve(out, len + 1);
    org__eclipse__tahu__protobuf__payload__pack(&e->p, (uint8_t *)out->p);
    out->len = len;
    return len;
}

/* ------------------------------------------------------------------ decode */
spb_payload *fb_spb_decode(const void *p, size_t len)
{
    if (!p && len) return NULL;
    return org__eclipse__tahu__protobuf__payload__unpack(NULL, len, p);
}

void fb_spb_free(spb_payload *p)
{
    if (p) org__eclipse__tahu__protobuf__payload__free_unpacked(p, NULL);
}

#define VC(x) ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__METRIC__VALUE_##x

int fb_spb_metric_value(const spb_metric *m, uint32_t dt, struct fb_value *out)
{
    memset(out, 0, sizeof *out);
    if (!dt && m->has_datatype) dt = m->datatype;
    if (m->has_is_null && m->is_null) return FB_ENOENT;
    if (!dt) { /* no birth known: go by the field present */
        switch (m->value_case) {
            case VC(INT_VALUE): dt = SPB_UINT32; break;
            case VC(LONG_VALUE): dt = SPB_UINT64; break;
            case VC(FLOAT_VALUE): dt = SPB_FLOAT; break;
            case VC(DOUBLE_VALUE): dt = SPB_DOUBLE; break;
            case VC(BOOLEAN_VALUE): dt = SPB_BOOLEAN; break;
            case VC(STRING_VALUE): dt = SPB_STRING; break;
            case VC(BYTES_VALUE): return FB_ENOTSUP;
            default: return FB_ENOENT;
        }
    }
    uint64_t n;
    switch (dt) {
        case SPB_INT8:
        case SPB_INT16:
        case SPB_INT32:
        case SPB_UINT8:
        case SPB_UINT16:
        case SPB_UINT32:
            if (m->value_case == VC(INT_VALUE))
                n = m->int_value;
            else if (m->value_case == VC(LONG_VALUE))
                n = m->long_value; /* UInt32 the reference way; tolerated for the others */
            else
                return m->value_case == VC(_NOT_SET) ? FB_ENOENT : FB_EPROTO;
            switch (dt) {
                case SPB_INT8:
                    out->type = FB_T_INT8;
                    out->i = (int8_t)(uint8_t)n;
                    break;
                case SPB_INT16:
                    out->type = FB_T_INT16;
                    out->i = (int16_t)(uint16_t)n;
                    break;
                case SPB_INT32:
                    out->type = FB_T_INT32;
                    out->i = (int32_t)(uint32_t)n;
                    break;
                case SPB_UINT8:
                    out->type = FB_T_UINT8;
                    out->u = (uint8_t)n;
                    break;
                case SPB_UINT16:
                    out->type = FB_T_UINT16;
                    out->u = (uint16_t)n;
                    break;
                default:
                    out->type = FB_T_UINT32;
                    out->u = (uint32_t)n;
                    break;
            }
            return 0;
        case SPB_INT64:
        case SPB_UINT64:
        case SPB_DATETIME:
            if (m->value_case == VC(LONG_VALUE))
                n = m->long_value;
            else if (m->value_case == VC(INT_VALUE))
                n = m->int_value;
            else
                return m->value_case == VC(_NOT_SET) ? FB_ENOENT : FB_EPROTO;
            if (dt == SPB_INT64) {
                out->type = FB_T_INT64;
                out->i = (int64_t)n;
            } else {
                out->type = FB_T_UINT64;
                out->u = n;
            }
            return 0;
        case SPB_FLOAT:
        case SPB_DOUBLE:
            if (m->value_case == VC(FLOAT_VALUE)) {
                out->f = m->float_value;
            } else if (m->value_case == VC(DOUBLE_VALUE)) {
                out->f = m->double_value;
            } else {
                return m->value_case == VC(_NOT_SET) ? FB_ENOENT : FB_EPROTO;
            }
            out->type = dt == SPB_FLOAT ? FB_T_FLOAT32 : FB_T_FLOAT64;
            return 0;
        case SPB_BOOLEAN:
            if (m->value_case != VC(BOOLEAN_VALUE)) return m->value_case == VC(_NOT_SET) ? FB_ENOENT : FB_EPROTO;
            out->type = FB_T_BOOL;
            out->b = m->boolean_value != 0;
            return 0;
        case SPB_STRING:
        case SPB_TEXT:
        case SPB_UUID:
            if (m->value_case != VC(STRING_VALUE) || !m->string_value)
                return m->value_case == VC(_NOT_SET) ? FB_ENOENT : FB_EPROTO;
            out->type = FB_T_STRING;
            out->s.p = m->string_value;
            out->s.len = (uint32_t)strlen(m->string_value);
            return 0;
        default: return FB_ENOTSUP;
    }
}

bool fb_spb_metric_quality(const spb_metric *m, int32_t *q)
{
    const spb_propset *ps = m->properties;
    if (!ps) return false;
    for (size_t i = 0; i < ps->n_keys && i < ps->n_values; i++) {
        if (!ps->keys[i] || strcmp(ps->keys[i], "Quality") || !ps->values[i]) continue;
        const spb_propval *pv = ps->values[i];
        if (pv->value_case == ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__PROPERTY_VALUE__VALUE_INT_VALUE) {
            *q = (int32_t)pv->int_value;
            return true;
        }
        if (pv->value_case == ORG__ECLIPSE__TAHU__PROTOBUF__PAYLOAD__PROPERTY_VALUE__VALUE_LONG_VALUE) {
            *q = (int32_t)pv->long_value;
            return true;
        }
    }
    return false;
}

bool fb_spb_metric_raw(const spb_metric *m, uint32_t dt, struct fb_value *out)
{
    const spb_propset *ps = m->properties;
    if (!ps) return false;
    for (size_t i = 0; i < ps->n_keys && i < ps->n_values; i++) {
        if (!ps->keys[i] || strcmp(ps->keys[i], "Raw") || !ps->values[i]) continue;
        const spb_propval *pv = ps->values[i];
        if (!dt && pv->has_type) dt = pv->type;
        /* read it as a metric of that datatype would be read */
        spb_metric tmp;
        org__eclipse__tahu__protobuf__payload__metric__init(&tmp);
        switch (pv->value_case) {
            case PV(INT_VALUE):
                tmp.value_case = VC(INT_VALUE);
                tmp.int_value = pv->int_value;
                break;
            case PV(LONG_VALUE):
                tmp.value_case = VC(LONG_VALUE);
                tmp.long_value = pv->long_value;
                break;
            case PV(FLOAT_VALUE):
                tmp.value_case = VC(FLOAT_VALUE);
                tmp.float_value = pv->float_value;
                break;
            case PV(DOUBLE_VALUE):
                tmp.value_case = VC(DOUBLE_VALUE);
                tmp.double_value = pv->double_value;
                break;
            case PV(BOOLEAN_VALUE):
                tmp.value_case = VC(BOOLEAN_VALUE);
                tmp.boolean_value = pv->boolean_value;
                break;
            default: return false;
        }
        return fb_spb_metric_value(&tmp, dt, out) == 0;
    }
    return false;
}

void fb_spb_format(struct fb_buf *out, const spb_payload *p, fb_spb_alias_fn names, void *ctx)
{
    char tb[40];
    if (p->has_timestamp) {
        fb_fmt_time(tb, p->timestamp > (uint64_t)INT64_MAX / 1000000 ? 0 : (int64_t)p->timestamp * 1000000);
        fb_buf_printf(out, "  timestamp %s (%" PRIu64 ")", tb, p->timestamp);
    } else {
        fb_buf_puts(out, "  timestamp -");
    }
    if (p->has_seq)
        fb_buf_printf(out, "  seq %" PRIu64, p->seq);
    else
        fb_buf_puts(out, "  seq -");
    fb_buf_printf(out, "  %zu metric%s", p->n_metrics, p->n_metrics == 1 ? "" : "s");
    if (p->uuid) fb_buf_printf(out, "  uuid %s", p->uuid);
    fb_buf_putc(out, '\n');
    for (size_t i = 0; i < p->n_metrics; i++) {
        const spb_metric *m = p->metrics[i];
        if (!m) continue;
        const char *name = m->name;
        uint32_t dt = m->has_datatype ? m->datatype : 0;
        if (m->has_alias && names) {
            const char *nn = NULL;
            uint32_t ndt = 0;
            if (names(ctx, m->alias, &nn, &ndt)) {
                if (!name) name = nn;
                if (!dt) dt = ndt;
            }
        }
        fb_buf_puts(out, "    ");
        if (name)
            fb_json_cstr(out, name);
        else
            fb_buf_puts(out, "(no name)");
        if (m->has_alias) fb_buf_printf(out, " alias %" PRIu64, m->alias);
        fb_buf_printf(out, " %s", dt ? fb_spb_datatype_name(dt) : "?");
        struct fb_value v;
        int rc = fb_spb_metric_value(m, dt, &v);
        if (rc == 0) {
            fb_buf_puts(out, " = ");
            if (v.type == FB_T_STRING)
                fb_json_str(out, v.s.p, v.s.len);
            else
                fb_text_value(out, &v);
        } else if (m->has_is_null && m->is_null) {
            fb_buf_puts(out, " = null");
        } else if (rc == FB_ENOTSUP) {
            fb_buf_puts(out, " = (not shown)");
        } else {
            fb_buf_puts(out, " = (no value)");
        }
        int32_t q;
        if (fb_spb_metric_quality(m, &q))
            fb_buf_printf(out, "  quality %d (%s)", q,
                          q == SPB_Q_GOOD    ? "good"
                          : q == SPB_Q_STALE ? "stale"
                          : q == 0           ? "bad"
                                             : "?");
        struct fb_value rv;
        if (fb_spb_metric_raw(m, dt, &rv)) {
            fb_buf_puts(out, "  raw ");
            fb_text_value(out, &rv);
        }
        if (m->has_timestamp) {
            fb_fmt_time(tb, m->timestamp > (uint64_t)INT64_MAX / 1000000 ? 0 : (int64_t)m->timestamp * 1000000);
            fb_buf_printf(out, "  @%s", tb);
        }
        if (m->has_is_historical && m->is_historical) fb_buf_puts(out, "  historical");
        if (m->has_is_transient && m->is_transient) fb_buf_puts(out, "  transient");
        fb_buf_putc(out, '\n');
    }
}
