/* ads_proto.c — the I/O-free ADS codec (see ads_proto.h for the frame
 * layout).  Every decoder takes (pointer, length), checks each read against
 * the length, and returns FB_EPROTO on anything short or inconsistent: bytes
 * come from the network and are never trusted.  Builders return 0 when the
 * caller's buffer is too small, so no frame is ever half written and sent.
 *
 * The symbol upload (0xF00B) is a chain of entries:
 *   entryLength u32 | ig u32 | io u32 | size u32 | adsType u32 | flags u16 |
 *   arrayDim u16 | nameLen u16 | typeLen u16 | commentLen u16 |
 *   name\0 type\0 comment\0 | arrayDim × (lBound i32, elements u32) | …
 * (TwinCAT 3 appends GUIDs and attributes; entryLength skips them.)
 * The data-type upload (0xF00E) is a chain of
 *   entryLength u32 | version u32 | hash u32 | typeHash u32 | size u32 |
 *   offs u32 | adsType u32 | flags u32 | nameLen u16 | typeLen u16 |
 *   commentLen u16 | arrayDim u16 | subItems u16 |
 *   name\0 type\0 comment\0 | arrayDim × (lBound, elements) | subItems × entry
 * where a sub item (struct member) is an entry of the same shape whose offs
 * is its byte offset in the struct.  The resolver walks "A.B[3].C" through
 * both: the longest symbol that prefixes the name, then members and array
 * subscripts through the data types, until a plain IEC type remains.
 */
#include "south/ads/ads_proto.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ------------------------------------------------------------- LE helpers */
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

/* ---------------------------------------------------------------- options */
int ads_netid_parse(const char *s, struct ads_netid *n)
{
    if (!s) return FB_EINVAL;
    const char *p = s;
    for (int i = 0; i < 6; i++) {
        if (!isdigit((unsigned char)*p)) return FB_EINVAL;
        unsigned v = 0;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            v = v * 10 + (unsigned)(*p++ - '0');
            if (++digits > 3) return FB_EINVAL;
        }
        if (v > 255) return FB_EINVAL;
        n->b[i] = (uint8_t)v;
        if (i < 5 && *p++ != '.') return FB_EINVAL;
    }
    return *p ? FB_EINVAL : 0;
}

char *ads_netid_fmt(const struct ads_netid *n, char *buf, size_t len)
{
    snprintf(buf, len, "%u.%u.%u.%u.%u.%u", n->b[0], n->b[1], n->b[2], n->b[3], n->b[4], n->b[5]);
    return buf;
}

static bool parse_num(const char *v, long lo, long hi, long *out)
{
    char *end;
    if (!v || !*v) return false;
    long x = strtol(v, &end, 0);
    if (*end || x < lo || x > hi) return false;
    *out = x;
    return true;
}

int ads_opts_parse(const struct fb_url *u, int64_t def_timeout_ns, struct ads_opts *o, struct fb_err *err)
{
    memset(o, 0, sizeof *o);
    o->port = ADS_TCP_PORT;
    o->ams_port = 851;
    o->source_port = 32905;
    o->timeout_ns = def_timeout_ns > 0 ? def_timeout_ns : 1000000000;
    o->max_sum = ADS_SUM_MAX;
    const char *scheme = u->scheme ? u->scheme : "";
    const char *host = u->host ? u->host : "";
    const char *path = u->path ? u->path : "";
    if (strcmp(scheme, "ads") != 0)
        return fb_err_set(err, FB_EINVAL, "scheme '%s' is not ADS (ads://host?net_id=…&port=851)", scheme);
    if (!host[0])
        return fb_err_set(err, FB_EINVAL, "ads URL needs a host (ads://192.168.0.10?net_id=5.80.192.200.1.1&port=851)");
    if (path[0] && strcmp(path, "/") != 0) return fb_err_set(err, FB_EINVAL, "ads URL takes no path ('%s')", path);
    if (strlen(host) >= sizeof o->host) return fb_err_set(err, FB_EINVAL, "host name too long");
    snprintf(o->host, sizeof o->host, "%s", host);
    if (u->port) {
        if (u->port < 1 || u->port > 65535) return fb_err_set(err, FB_EINVAL, "bad port %d", u->port);
        o->port = u->port;
    }
    bool have_target = false;
    for (int i = 0; i < u->nq; i++) {
        const char *k = u->q[i].k ? u->q[i].k : "", *v = u->q[i].v ? u->q[i].v : "";
        long x;
        int64_t ns;
        if (!strcmp(k, "net_id") || !strcmp(k, "netid")) {
            if (ads_netid_parse(v, &o->target))
                return fb_err_set(err, FB_EINVAL, "bad net_id '%s' (six numbers, e.g. 5.80.192.200.1.1)", v);
            have_target = true;
        } else if (!strcmp(k, "port") || !strcmp(k, "ams_port")) {
            if (!parse_num(v, 1, 65535, &x))
                return fb_err_set(err, FB_EINVAL, "bad ADS port '%s' (851 = TwinCAT 3 PLC 1, 801 = TwinCAT 2)", v);
            o->ams_port = (uint16_t)x;
        } else if (!strcmp(k, "source_net_id")) {
            if (ads_netid_parse(v, &o->source))
                return fb_err_set(err, FB_EINVAL, "bad source_net_id '%s' (six numbers, e.g. 192.168.0.5.1.1)", v);
            o->have_source = true;
        } else if (!strcmp(k, "source_port")) {
            if (!parse_num(v, 1, 65535, &x)) return fb_err_set(err, FB_EINVAL, "bad source_port '%s'", v);
            o->source_port = (uint16_t)x;
        } else if (!strcmp(k, "timeout")) {
            if (fb_parse_duration(v, &ns) < 0 || ns <= 0)
                return fb_err_set(err, FB_EINVAL, "bad timeout '%s' (e.g. 1s, 500ms)", v);
            o->timeout_ns = ns;
        } else if (!strcmp(k, "mode")) {
            if (!strcmp(v, "poll"))
                o->mode = ADS_MODE_POLL;
            else if (!strcmp(v, "notify"))
                o->mode = ADS_MODE_NOTIFY;
            else if (!strcmp(v, "cyclic"))
                o->mode = ADS_MODE_CYCLIC;
            else
                return fb_err_set(err, FB_EINVAL, "bad mode '%s' (poll, notify or cyclic)", v);
        } else if (!strcmp(k, "max_delay")) {
            if (fb_parse_duration(v, &ns) < 0 || ns < 0)
                return fb_err_set(err, FB_EINVAL, "bad max_delay '%s' (e.g. 100ms)", v);
            o->max_delay_ns = ns;
        } else if (!strcmp(k, "cycle")) {
            if (fb_parse_duration(v, &ns) < 0 || ns < 0)
                return fb_err_set(err, FB_EINVAL, "bad cycle '%s' (e.g. 100ms)", v);
            o->cycle_ns = ns;
        } else if (!strcmp(k, "max_sum")) {
            if (!parse_num(v, 1, ADS_SUM_MAX, &x))
                return fb_err_set(err, FB_EINVAL, "bad max_sum '%s' (1..%d)", v, ADS_SUM_MAX);
            o->max_sum = (int)x;
        } else {
            return fb_err_set(err, FB_EINVAL,
                              "unknown ads URL key '%s' (net_id, port, source_net_id, source_port, timeout, "
                              "mode, cycle, max_delay, max_sum)",
                              k);
        }
    }
    if (!have_target)
        return fb_err_set(err, FB_EINVAL, "ads URL needs net_id= (the PLC's AmsNetId, e.g. net_id=5.80.192.200.1.1)");
    return 0;
}

char *ads_opts_conn_key(const struct ads_opts *o)
{
    char id[24], buf[360];
    snprintf(buf, sizeof buf, "ads:%s:%d:%s:%u", o->host, o->port, ads_netid_fmt(&o->target, id, sizeof id),
             o->ams_port);
    return strdup(buf);
}

/* ------------------------------------------------------------------ types */
static const struct {
    const char *name;
    uint8_t type, fbtype;
    uint8_t size;
} types[ADS_T__COUNT] = {
    [ADS_T_NONE] = {"NONE", ADS_T_NONE, FB_T_NONE, 0},
    [ADS_T_BOOL] = {"BOOL", ADS_T_BOOL, FB_T_BOOL, 1},
    [ADS_T_BYTE] = {"BYTE", ADS_T_BYTE, FB_T_UINT8, 1},
    [ADS_T_USINT] = {"USINT", ADS_T_USINT, FB_T_UINT8, 1},
    [ADS_T_SINT] = {"SINT", ADS_T_SINT, FB_T_INT8, 1},
    [ADS_T_WORD] = {"WORD", ADS_T_WORD, FB_T_UINT16, 2},
    [ADS_T_UINT] = {"UINT", ADS_T_UINT, FB_T_UINT16, 2},
    [ADS_T_INT] = {"INT", ADS_T_INT, FB_T_INT16, 2},
    [ADS_T_DWORD] = {"DWORD", ADS_T_DWORD, FB_T_UINT32, 4},
    [ADS_T_UDINT] = {"UDINT", ADS_T_UDINT, FB_T_UINT32, 4},
    [ADS_T_DINT] = {"DINT", ADS_T_DINT, FB_T_INT32, 4},
    [ADS_T_LWORD] = {"LWORD", ADS_T_LWORD, FB_T_UINT64, 8},
    [ADS_T_ULINT] = {"ULINT", ADS_T_ULINT, FB_T_UINT64, 8},
    [ADS_T_LINT] = {"LINT", ADS_T_LINT, FB_T_INT64, 8},
    [ADS_T_REAL] = {"REAL", ADS_T_REAL, FB_T_FLOAT32, 4},
    [ADS_T_LREAL] = {"LREAL", ADS_T_LREAL, FB_T_FLOAT64, 8},
    [ADS_T_STRING] = {"STRING", ADS_T_STRING, FB_T_STRING, 81},
    [ADS_T_TIME] = {"TIME", ADS_T_TIME, FB_T_UINT32, 4},
    [ADS_T_TOD] = {"TOD", ADS_T_TOD, FB_T_UINT32, 4},
    [ADS_T_DATE] = {"DATE", ADS_T_DATE, FB_T_STRING, 4},
    [ADS_T_DT] = {"DT", ADS_T_DT, FB_T_STRING, 4},
    [ADS_T_LTIME] = {"LTIME", ADS_T_LTIME, FB_T_UINT64, 8},
    [ADS_T_WSTRING] = {"WSTRING", ADS_T_WSTRING, FB_T_STRING, 162},
};

static const struct {
    const char *alias;
    uint8_t type;
} aliases[] = {
    {"TIME_OF_DAY", ADS_T_TOD}, {"DATE_AND_TIME", ADS_T_DT}, {"bool", ADS_T_BOOL},  {"uint8", ADS_T_USINT},
    {"int8", ADS_T_SINT},       {"uint16", ADS_T_UINT},      {"int16", ADS_T_INT},  {"uint32", ADS_T_UDINT},
    {"int32", ADS_T_DINT},      {"uint64", ADS_T_ULINT},     {"int64", ADS_T_LINT}, {"float32", ADS_T_REAL},
    {"float64", ADS_T_LREAL},   {"BIT", ADS_T_BOOL},
};

const char *ads_type_name(int t) { return t > 0 && t < ADS_T__COUNT ? types[t].name : "?"; }

static void tinfo_of(int t, struct ads_tinfo *ti)
{
    ti->type = (uint8_t)t;
    ti->fbtype = types[t].fbtype;
    ti->size = types[t].size;
    ti->str_len = t == ADS_T_STRING || t == ADS_T_WSTRING ? 80 : 0;
}

static bool word_eq(const char *s, size_t n, const char *w) { return strlen(w) == n && strncasecmp(s, w, n) == 0; }

int ads_type_parse(const char *s, size_t n, struct ads_tinfo *ti)
{
    memset(ti, 0, sizeof *ti);
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    if (!n) return FB_EINVAL;
    /* STRING, STRING(n), STRING[n], string[n]; WSTRING likewise */
    bool wide = n >= 7 && (s[0] == 'W' || s[0] == 'w');
    size_t pl = wide ? 7 : 6;
    if (n >= pl && strncasecmp(s + (wide ? 1 : 0), "STRING", 6) == 0) {
        int t = wide ? ADS_T_WSTRING : ADS_T_STRING;
        unsigned long max = wide ? ADS_MAX_WSTRING : ADS_MAX_STRING;
        if (n == pl) {
            tinfo_of(t, ti);
            return 0;
        }
        char close = s[pl] == '(' ? ')' : s[pl] == '[' ? ']' : 0;
        if (!close || s[n - 1] != close || n < pl + 3) return FB_EINVAL;
        unsigned long len = 0;
        for (size_t i = pl + 1; i < n - 1; i++) {
            if (!isdigit((unsigned char)s[i])) return FB_EINVAL;
            len = len * 10 + (unsigned long)(s[i] - '0');
            if (len > max) return FB_EINVAL;
        }
        if (len < 1) return FB_EINVAL;
        tinfo_of(t, ti);
        ti->str_len = (uint32_t)len;
        ti->size = wide ? 2 * ((uint32_t)len + 1) : (uint32_t)len + 1;
        return 0;
    }
    for (int t = 1; t < ADS_T__COUNT; t++)
        if (t != ADS_T_STRING && t != ADS_T_WSTRING && word_eq(s, n, types[t].name)) {
            tinfo_of(t, ti);
            return 0;
        }
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (word_eq(s, n, aliases[i].alias)) {
            tinfo_of(aliases[i].type, ti);
            return 0;
        }
    return FB_EINVAL;
}

/* %MW10 / %MX2.3 / %IB0 / %QD4 (text[0..nlen) starts with '%'); a->name holds it */
static const char *const raw_help = "raw ADS addresses are %MB10, %MW10, %MD10, %MX10.3 (flags), %IB0 … %IX0.1 "
                                    "(inputs), %QB0 … %QX0.1 (outputs), with byte offsets";

static int raw_parse(const char *t, size_t nlen, struct ads_addr *a, struct fb_err *err)
{
    if (nlen < 4) return fb_err_set(err, FB_EINVAL, "bad raw address '%.*s': %s", (int)nlen, t, raw_help);
    char area = (char)toupper((unsigned char)t[1]), sz = (char)toupper((unsigned char)t[2]);
    static const struct {
        char area;
        uint32_t ig, igx;
    } areas[] = {
        {'M', ADS_IG_PLC_M, ADS_IG_PLC_MX}, {'I', ADS_IG_IO_I, ADS_IG_IO_IX}, {'Q', ADS_IG_IO_Q, ADS_IG_IO_QX}};
    int ai = -1;
    for (int i = 0; i < 3; i++)
        if (areas[i].area == area) ai = i;
    if (ai < 0 || !strchr("XBWD", sz) || !isdigit((unsigned char)t[3]))
        return fb_err_set(err, FB_EINVAL, "bad raw address '%.*s': %s", (int)nlen, t, raw_help);
    size_t i = 3;
    uint64_t byte = 0;
    while (i < nlen && isdigit((unsigned char)t[i])) {
        byte = byte * 10 + (uint64_t)(t[i++] - '0');
        if (byte > UINT32_MAX) return fb_err_set(err, FB_EINVAL, "raw address '%.*s': offset too large", (int)nlen, t);
    }
    if (sz == 'X') {
        if (i + 2 != nlen || t[i] != '.' || t[i + 1] < '0' || t[i + 1] > '7')
            return fb_err_set(err, FB_EINVAL,
                              "bad raw address '%.*s': a bit address is BYTE.BIT with BIT 0..7 (%%MX10.3)", (int)nlen,
                              t);
        if (byte > UINT32_MAX / 8)
            return fb_err_set(err, FB_EINVAL, "raw address '%.*s': offset too large", (int)nlen, t);
        a->ig = areas[ai].igx;
        a->io = (uint32_t)(byte * 8 + (uint64_t)(t[i + 1] - '0'));
        tinfo_of(ADS_T_BOOL, &a->ti);
    } else {
        if (i != nlen) return fb_err_set(err, FB_EINVAL, "bad raw address '%.*s': %s", (int)nlen, t, raw_help);
        a->ig = areas[ai].ig;
        a->io = (uint32_t)byte;
        tinfo_of(sz == 'B' ? ADS_T_BYTE : sz == 'W' ? ADS_T_WORD : ADS_T_DWORD, &a->ti);
    }
    a->raw = true;
    a->typed = true;
    a->deftype = true;
    return 0;
}

int ads_addr_raw_elem(const struct ads_addr *a, uint32_t index, uint32_t *io)
{
    bool bit = a->ig == ADS_IG_PLC_MX || a->ig == ADS_IG_IO_IX || a->ig == ADS_IG_IO_QX;
    uint64_t o = (uint64_t)a->io + (uint64_t)index * (bit ? 1u : a->ti.size);
    if (o > UINT32_MAX) return FB_ERANGE;
    *io = (uint32_t)o;
    return 0;
}

int ads_addr_parse(const char *text, struct ads_addr *a, struct fb_err *err)
{
    memset(a, 0, sizeof *a);
    if (!text || !*text)
        return fb_err_set(err, FB_EINVAL, "empty ADS address (expected a symbol name such as MAIN.fTemperature)");
    const char *colon = strrchr(text, ':');
    size_t nlen = colon ? (size_t)(colon - text) : strlen(text);
    while (nlen && isspace((unsigned char)text[nlen - 1])) nlen--;
    if (!nlen) return fb_err_set(err, FB_EINVAL, "ADS address '%s' has no symbol name", text);
    if (nlen > ADS_MAX_NAME) return fb_err_set(err, FB_EINVAL, "symbol name longer than %d characters", ADS_MAX_NAME);
    for (size_t i = 0; i < nlen; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x21 || c == 0x7f)
            return fb_err_set(err, FB_EINVAL, "symbol name '%.*s' contains a space or control character", (int)nlen,
                              text);
    }
    memcpy(a->name, text, nlen);
    a->name[nlen] = 0;
    if (text[0] == '%') {
        int rc = raw_parse(text, nlen, a, err);
        if (rc) return rc;
    }
    if (colon) {
        bool bit = a->raw && a->ti.type == ADS_T_BOOL;
        if (ads_type_parse(colon + 1, strlen(colon + 1), &a->ti) < 0)
            return fb_err_set(
                err, FB_EINVAL,
                "unknown ADS type '%s' (BOOL, BYTE, SINT, USINT, WORD, INT, UINT, DWORD, DINT, "
                "UDINT, LWORD, LINT, ULINT, REAL, LREAL, STRING(n), WSTRING(n), TIME, LTIME, TOD, DATE, DT)",
                colon + 1);
        if (bit && a->ti.type != ADS_T_BOOL)
            return fb_err_set(err, FB_EINVAL, "'%s' is a bit address: its type is BOOL", a->name);
        a->typed = true;
        a->deftype = false;
    }
    return 0;
}

/* ------------------------------------------------------------ value codec */
static int64_t days_from_civil(int y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)((int64_t)yoe + era * 400 + (*m <= 2));
}

uint32_t ads_decode(const struct ads_tinfo *ti, const uint8_t *p, uint32_t n, struct fb_value *v, char *sbuf,
                    size_t cap)
{
    memset(v, 0, sizeof *v);
    v->type = ti->fbtype;
    if (!p || n < ti->size || ti->type == ADS_T_NONE || ti->type >= ADS_T__COUNT) return FB_Q_BAD_DECODING;
    switch (ti->type) {
        case ADS_T_BOOL: v->b = p[0] != 0; break;
        case ADS_T_BYTE:
        case ADS_T_USINT: v->u = p[0]; break;
        case ADS_T_SINT: v->i = (int8_t)p[0]; break;
        case ADS_T_WORD:
        case ADS_T_UINT: v->u = rd16(p); break;
        case ADS_T_INT: v->i = (int16_t)rd16(p); break;
        case ADS_T_DWORD:
        case ADS_T_UDINT:
        case ADS_T_TIME:
        case ADS_T_TOD: v->u = rd32(p); break;
        case ADS_T_DINT: v->i = (int32_t)rd32(p); break;
        case ADS_T_LWORD:
        case ADS_T_ULINT:
        case ADS_T_LTIME: v->u = rd64(p); break;
        case ADS_T_LINT: v->i = (int64_t)rd64(p); break;
        case ADS_T_REAL: {
            uint32_t r = rd32(p);
            float f;
            memcpy(&f, &r, 4);
            v->f = f;
            if (!isfinite(v->f)) return FB_Q_BAD_OUT_OF_RANGE;
            break;
        }
        case ADS_T_LREAL: {
            uint64_t r = rd64(p);
            memcpy(&v->f, &r, 8);
            if (!isfinite(v->f)) return FB_Q_BAD_OUT_OF_RANGE;
            break;
        }
        case ADS_T_STRING: {
            /* STRING is 8-bit text (TwinCAT: Windows-1252); we read it as
         * ISO-8859-1 and publish UTF-8 */
            size_t len = 0, o = 0;
            while (len < ti->size && len < ti->str_len && p[len]) len++;
            for (size_t k = 0; k < len; k++) {
                if (o + 2 > cap) return FB_Q_BAD_INTERNAL;
                if (p[k] < 0x80) {
                    sbuf[o++] = (char)p[k];
                } else {
                    sbuf[o++] = (char)(0xC0 | p[k] >> 6);
                    sbuf[o++] = (char)(0x80 | (p[k] & 0x3F));
                }
            }
            v->s.p = sbuf;
            v->s.len = (uint32_t)o;
            break;
        }
        case ADS_T_WSTRING: {
            /* UTF-16LE up to the NUL → UTF-8; a lone surrogate reads as U+FFFD */
            size_t o = 0, units = ti->size / 2 < ti->str_len ? ti->size / 2 : ti->str_len;
            for (size_t k = 0; k < units; k++) {
                uint32_t u = (uint32_t)p[2 * k] | (uint32_t)p[2 * k + 1] << 8;
                if (!u) break;
                if (u >= 0xD800 && u <= 0xDBFF && k + 1 < units) {
                    uint32_t u2 = (uint32_t)p[2 * k + 2] | (uint32_t)p[2 * k + 3] << 8;
                    if (u2 >= 0xDC00 && u2 <= 0xDFFF) {
                        u = 0x10000 + ((u - 0xD800) << 10) + (u2 - 0xDC00);
                        k++;
                    }
                }
                if (u >= 0xD800 && u <= 0xDFFF) u = 0xFFFD;
                if (o + 4 > cap) return FB_Q_BAD_INTERNAL;
                if (u < 0x80) {
                    sbuf[o++] = (char)u;
                } else if (u < 0x800) {
                    sbuf[o++] = (char)(0xC0 | u >> 6);
                    sbuf[o++] = (char)(0x80 | (u & 0x3F));
                } else if (u < 0x10000) {
                    sbuf[o++] = (char)(0xE0 | u >> 12);
                    sbuf[o++] = (char)(0x80 | (u >> 6 & 0x3F));
                    sbuf[o++] = (char)(0x80 | (u & 0x3F));
                } else {
                    sbuf[o++] = (char)(0xF0 | u >> 18);
                    sbuf[o++] = (char)(0x80 | (u >> 12 & 0x3F));
                    sbuf[o++] = (char)(0x80 | (u >> 6 & 0x3F));
                    sbuf[o++] = (char)(0x80 | (u & 0x3F));
                }
            }
            v->s.p = sbuf;
            v->s.len = (uint32_t)o;
            break;
        }
        case ADS_T_DATE:
        case ADS_T_DT: {
            uint32_t secs = rd32(p);
            int y;
            unsigned mo, d;
            civil_from_days(secs / 86400, &y, &mo, &d);
            uint32_t r = secs % 86400;
            int len = ti->type == ADS_T_DATE ? snprintf(sbuf, cap, "%04d-%02u-%02u", y, mo, d)
                                             : snprintf(sbuf, cap, "%04d-%02u-%02uT%02u:%02u:%02u", y, mo, d, r / 3600,
                                                        r / 60 % 60, r % 60);
            if (len < 0 || (size_t)len >= cap) return FB_Q_BAD_INTERNAL;
            v->s.p = sbuf;
            v->s.len = (uint32_t)len;
            break;
        }
        default: return FB_Q_BAD_DECODING;
    }
    return FB_Q_GOOD;
}

/* "2024-03-01" or "2024-03-01T13:14:15" (a trailing Z is accepted) → seconds */
static int parse_dt(const char *s, size_t n, bool with_time, uint32_t *out)
{
    char buf[32];
    if (n >= sizeof buf) return FB_EINVAL;
    memcpy(buf, s, n);
    buf[n] = 0;
    if (n && (buf[n - 1] == 'Z' || buf[n - 1] == 'z')) buf[--n] = 0;
    int y, mo, d, h = 0, mi = 0, se = 0, used = 0;
    if (sscanf(buf, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3) return FB_EINVAL;
    if (buf[used]) {
        if (!with_time || (buf[used] != 'T' && buf[used] != ' ')) return FB_EINVAL;
        int u2 = 0;
        if (sscanf(buf + used + 1, "%2d:%2d:%2d%n", &h, &mi, &se, &u2) != 3 || buf[used + 1 + u2]) return FB_EINVAL;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 59 || h < 0 || mi < 0 || se < 0)
        return FB_EINVAL;
    int64_t t = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se;
    if (t < 0 || t > 0xFFFFFFFFLL) return FB_ERANGE;
    *out = (uint32_t)t;
    return 0;
}

/* Encode a value for a write. Long because it is one switch over every PLC
 * type with its own range check; splitting it would scatter the table. */
int ads_encode(const struct ads_tinfo *ti, const struct fb_value *v, uint8_t *out, size_t cap, struct fb_err *err)
{
    if (ti->type == ADS_T_NONE || ti->type >= ADS_T__COUNT || cap < ti->size)
        return fb_err_set(err, FB_EINVAL, "cannot encode a value of type %s", ads_type_name(ti->type));
    double d = 0;
    bool num = fb_value_to_double(v, &d);
    bool is_str = v->type == FB_T_STRING;
    /* integers travel in i or u depending on their fb type; take them exactly */
    int64_t iv = 0;
    uint64_t uv = 0;
    bool exact = fb_type_is_int((enum fb_type)v->type) || v->type == FB_T_BOOL;
    if (v->type == FB_T_BOOL)
        iv = v->b, uv = v->b;
    else if (fb_type_is_signed((enum fb_type)v->type))
        iv = v->i, uv = (uint64_t)v->i;
    else if (fb_type_is_int((enum fb_type)v->type))
        uv = v->u, iv = (int64_t)v->u;
    if (!exact && num) {
        if (ti->type != ADS_T_REAL && ti->type != ADS_T_LREAL) {
            if (d != nearbyint(d))
                return fb_err_set(err, FB_EINVAL, "%s needs a whole number", ads_type_name(ti->type));
            if (d >= -9.3e18 && d <= 9.3e18) iv = (int64_t)d;
            if (d >= 0 && d < 1.8e19) uv = (uint64_t)d;
        }
    }
    bool neg = fb_type_is_signed((enum fb_type)v->type) ? v->i < 0 : (!exact && d < 0);
    switch (ti->type) {
        case ADS_T_STRING: {
            if (!is_str) return fb_err_set(err, FB_EINVAL, "STRING needs a text value");
            /* UTF-8 in, ISO-8859-1 on the wire */
            memset(out, 0, ti->size);
            const uint8_t *q = (const uint8_t *)v->s.p;
            uint32_t o = 0;
            for (uint32_t k = 0; k < v->s.len; k++) {
                uint32_t ch = q[k];
                if (ch >= 0x80) {
                    if ((ch & 0xE0) != 0xC0 || k + 1 >= v->s.len || (q[k + 1] & 0xC0) != 0x80 || ch > 0xC3)
                        return fb_err_set(err, FB_EINVAL, "STRING holds Latin-1 text only (character %u is not)", k);
                    ch = (ch & 0x1F) << 6 | (q[++k] & 0x3F);
                }
                if (o >= ti->str_len) return fb_err_set(err, FB_ERANGE, "text longer than STRING(%u)", ti->str_len);
                out[o++] = (uint8_t)ch;
            }
            return (int)ti->size;
        }
        case ADS_T_WSTRING: {
            if (!is_str) return fb_err_set(err, FB_EINVAL, "WSTRING needs a text value");
            /* UTF-8 in (validated), UTF-16LE on the wire, zero-filled */
            memset(out, 0, ti->size);
            const uint8_t *q = (const uint8_t *)v->s.p;
            uint32_t o = 0;
            for (uint32_t k = 0; k < v->s.len;) {
                uint32_t c = q[k], need = c < 0x80             ? 0
                                          : (c & 0xE0) == 0xC0 ? 1
                                          : (c & 0xF0) == 0xE0 ? 2
                                          : (c & 0xF8) == 0xF0 ? 3
                                                               : 9;
                if (need == 9 || k + need >= v->s.len) goto bad_utf8;
                uint32_t u = need == 0 ? c : need == 1 ? c & 0x1F : need == 2 ? c & 0x0F : c & 0x07;
                for (uint32_t j = 1; j <= need; j++) {
                    if ((q[k + j] & 0xC0) != 0x80) goto bad_utf8;
                    u = u << 6 | (q[k + j] & 0x3F);
                }
                static const uint32_t minv[4] = {0, 0x80, 0x800, 0x10000};
                if (u < minv[need] || u > 0x10FFFF || (u >= 0xD800 && u <= 0xDFFF)) goto bad_utf8;
                k += need + 1;
                if (!u) return fb_err_set(err, FB_EINVAL, "WSTRING cannot hold a NUL character");
                uint32_t units = u >= 0x10000 ? 2 : 1;
                if (o + units > ti->str_len)
                    return fb_err_set(err, FB_ERANGE, "text longer than WSTRING(%u)", ti->str_len);
                if (units == 2) {
                    uint32_t hi = 0xD800 + ((u - 0x10000) >> 10), lo = 0xDC00 + ((u - 0x10000) & 0x3FF);
                    out[2 * o] = (uint8_t)hi, out[2 * o + 1] = (uint8_t)(hi >> 8);
                    o++;
                    u = lo;
                }
                out[2 * o] = (uint8_t)u, out[2 * o + 1] = (uint8_t)(u >> 8);
                o++;
            }
            return (int)ti->size;
        bad_utf8:
            return fb_err_set(err, FB_EINVAL, "WSTRING needs valid UTF-8 text");
        }
        case ADS_T_DATE:
        case ADS_T_DT: {
            uint32_t secs = 0;
            if (is_str) {
                if (parse_dt(v->s.p, v->s.len, ti->type == ADS_T_DT, &secs) < 0)
                    return fb_err_set(err, FB_EINVAL, "%s needs %s", ads_type_name(ti->type),
                                      ti->type == ADS_T_DT ? "YYYY-MM-DDTHH:MM:SS" : "YYYY-MM-DD");
            } else if (num && !neg && d <= 4294967295.0) {
                secs = (uint32_t)uv;
            } else {
                return fb_err_set(err, FB_EINVAL, "%s needs a date text", ads_type_name(ti->type));
            }
            wr32(out, secs);
            return 4;
        }
        default: break;
    }
    if (!num) return fb_err_set(err, FB_EINVAL, "%s needs a number", ads_type_name(ti->type));
    switch (ti->type) {
        case ADS_T_BOOL: out[0] = d != 0; return 1;
        case ADS_T_REAL: {
            float f = (float)d;
            if (!isfinite(d) || fabs(d) > 3.4028234663852886e38)
                return fb_err_set(err, FB_ERANGE, "%g is out of range for REAL", d);
            uint32_t r;
            memcpy(&r, &f, 4);
            wr32(out, r);
            return 4;
        }
        case ADS_T_LREAL: {
            if (!isfinite(d)) return fb_err_set(err, FB_ERANGE, "LREAL needs a finite number");
            uint64_t r;
            memcpy(&r, &d, 8);
            wr64(out, r);
            return 8;
        }
        default: break;
    }
    /* integer targets: range check against the wire type */
    int64_t lo;
    uint64_t hi;
    switch (ti->type) {
        case ADS_T_SINT: lo = INT8_MIN, hi = INT8_MAX; break;
        case ADS_T_INT: lo = INT16_MIN, hi = INT16_MAX; break;
        case ADS_T_DINT: lo = INT32_MIN, hi = INT32_MAX; break;
        case ADS_T_LINT: lo = INT64_MIN, hi = INT64_MAX; break;
        case ADS_T_BYTE:
        case ADS_T_USINT: lo = 0, hi = UINT8_MAX; break;
        case ADS_T_WORD:
        case ADS_T_UINT: lo = 0, hi = UINT16_MAX; break;
        case ADS_T_DWORD:
        case ADS_T_UDINT:
        case ADS_T_TIME:
        case ADS_T_TOD: lo = 0, hi = UINT32_MAX; break;
        default: lo = 0, hi = UINT64_MAX; break;
    }
    bool ok;
    if (!exact && (d < -9.3e18 || d > 1.85e19))
        ok = false;
    else if (neg)
        ok = lo < 0 && iv >= lo;
    else
        ok = uv <= hi;
    if (!ok) {
        if (exact && neg)
            return fb_err_set(err, FB_ERANGE, "%lld is out of range for %s", (long long)iv, ads_type_name(ti->type));
        if (exact)
            return fb_err_set(err, FB_ERANGE, "%llu is out of range for %s", (unsigned long long)uv,
                              ads_type_name(ti->type));
        return fb_err_set(err, FB_ERANGE, "%g is out of range for %s", d, ads_type_name(ti->type));
    }
    uint64_t bits = neg ? (uint64_t)iv : uv;
    for (uint32_t i = 0; i < ti->size; i++) out[i] = (uint8_t)(bits >> (8 * i));
    return (int)ti->size;
}

/* ----------------------------------------------------------------- frames */
long ads_frame_len(const uint8_t *b, size_t n)
{
    if (n < ADS_TCP_HDR) return 0;
    if (rd16(b) != 0) return FB_EPROTO; /* router commands are not ours */
    uint32_t len = rd32(b + 2);
    if (len < ADS_AMS_HDR || len > ADS_FRAME_MAX) return FB_EPROTO;
    return (long)len + ADS_TCP_HDR;
}

int ads_parse_hdr(const uint8_t *b, size_t n, struct ads_hdr *h)
{
    long fl = ads_frame_len(b, n);
    if (fl <= 0 || (size_t)fl != n) return FB_EPROTO;
    const uint8_t *a = b + ADS_TCP_HDR;
    memcpy(h->target.b, a, 6);
    h->target_port = rd16(a + 6);
    memcpy(h->source.b, a + 8, 6);
    h->source_port = rd16(a + 14);
    h->cmd = rd16(a + 16);
    h->flags = rd16(a + 18);
    h->len = rd32(a + 20);
    h->error = rd32(a + 24);
    h->invoke = rd32(a + 28);
    if ((size_t)h->len != n - ADS_HDR) return FB_EPROTO;
    return 0;
}

void ads_put_hdr(uint8_t *b, const struct ads_hdr *h)
{
    wr16(b, 0);
    wr32(b + 2, ADS_AMS_HDR + h->len);
    uint8_t *a = b + ADS_TCP_HDR;
    memcpy(a, h->target.b, 6);
    wr16(a + 6, h->target_port);
    memcpy(a + 8, h->source.b, 6);
    wr16(a + 14, h->source_port);
    wr16(a + 16, h->cmd);
    wr16(a + 18, h->flags);
    wr32(a + 20, h->len);
    wr32(a + 24, h->error);
    wr32(a + 28, h->invoke);
}

static size_t put_req(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint16_t cmd, size_t body)
{
    if (body > ADS_FRAME_MAX || cap < ADS_HDR + body) return 0;
    struct ads_hdr h = *tmpl;
    h.cmd = cmd;
    h.flags = ADS_SF_REQUEST;
    h.len = (uint32_t)body;
    h.error = 0;
    ads_put_hdr(b, &h);
    return ADS_HDR + body;
}

size_t ads_build_simple(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint16_t cmd)
{
    return put_req(b, cap, tmpl, cmd, 0);
}

size_t ads_build_read(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint32_t ig, uint32_t io, uint32_t len)
{
    size_t n = put_req(b, cap, tmpl, ADS_CMD_READ, 12);
    if (!n) return 0;
    wr32(b + ADS_HDR, ig);
    wr32(b + ADS_HDR + 4, io);
    wr32(b + ADS_HDR + 8, len);
    return n;
}

size_t ads_build_write(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint32_t ig, uint32_t io,
                       const uint8_t *data, uint32_t len)
{
    size_t n = put_req(b, cap, tmpl, ADS_CMD_WRITE, 12 + (size_t)len);
    if (!n) return 0;
    wr32(b + ADS_HDR, ig);
    wr32(b + ADS_HDR + 4, io);
    wr32(b + ADS_HDR + 8, len);
    if (len) memcpy(b + ADS_HDR + 12, data, len);
    return n;
}

size_t ads_build_rw(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint32_t ig, uint32_t io, uint32_t rlen,
                    const uint8_t *data, uint32_t wlen)
{
    size_t n = put_req(b, cap, tmpl, ADS_CMD_RW, 16 + (size_t)wlen);
    if (!n) return 0;
    wr32(b + ADS_HDR, ig);
    wr32(b + ADS_HDR + 4, io);
    wr32(b + ADS_HDR + 8, rlen);
    wr32(b + ADS_HDR + 12, wlen);
    if (wlen) memmove(b + ADS_HDR + 16, data, wlen);
    return n;
}

size_t ads_build_addnote(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint32_t ig, uint32_t io, uint32_t len,
                         uint32_t mode, uint32_t max_delay_100ns, uint32_t cycle_100ns)
{
    size_t n = put_req(b, cap, tmpl, ADS_CMD_ADDNOTE, 40);
    if (!n) return 0;
    uint8_t *d = b + ADS_HDR;
    memset(d, 0, 40);
    wr32(d, ig);
    wr32(d + 4, io);
    wr32(d + 8, len);
    wr32(d + 12, mode);
    wr32(d + 16, max_delay_100ns);
    wr32(d + 20, cycle_100ns);
    return n;
}

size_t ads_build_delnote(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint32_t handle)
{
    size_t n = put_req(b, cap, tmpl, ADS_CMD_DELNOTE, 4);
    if (!n) return 0;
    wr32(b + ADS_HDR, handle);
    return n;
}

int ads_parse_result(const uint8_t *d, size_t n, uint32_t *result)
{
    if (!d || n < 4) return FB_EPROTO;
    *result = rd32(d);
    return 0;
}

int ads_parse_read(const uint8_t *d, size_t n, uint32_t *result, const uint8_t **data, uint32_t *len)
{
    *data = NULL;
    *len = 0;
    if (ads_parse_result(d, n, result)) return FB_EPROTO;
    if (*result) return 0; /* an error reply may stop after the result */
    if (n < 8) return FB_EPROTO;
    uint32_t l = rd32(d + 4);
    if (l > n - 8) return FB_EPROTO;
    *data = d + 8;
    *len = l;
    return 0;
}

int ads_parse_state(const uint8_t *d, size_t n, uint32_t *result, uint16_t *ads_state, uint16_t *dev_state)
{
    if (ads_parse_result(d, n, result)) return FB_EPROTO;
    if (*result) return 0;
    if (n < 8) return FB_EPROTO;
    *ads_state = rd16(d + 4);
    *dev_state = rd16(d + 6);
    return 0;
}

int ads_parse_devinfo(const uint8_t *d, size_t n, uint32_t *result, struct ads_devinfo *di)
{
    memset(di, 0, sizeof *di);
    if (ads_parse_result(d, n, result)) return FB_EPROTO;
    if (*result) return 0;
    if (n < 24) return FB_EPROTO;
    di->major = d[4];
    di->minor = d[5];
    di->build = rd16(d + 6);
    for (int i = 0; i < 16 && d[8 + i]; i++) {
        char c = (char)d[8 + i];
        di->name[i] = (unsigned char)c >= 0x20 && (unsigned char)c < 0x7f ? c : '?';
    }
    return 0;
}

int ads_parse_addnote(const uint8_t *d, size_t n, uint32_t *result, uint32_t *handle)
{
    *handle = 0;
    if (ads_parse_result(d, n, result)) return FB_EPROTO;
    if (*result) return 0;
    if (n < 8) return FB_EPROTO;
    *handle = rd32(d + 4);
    return 0;
}

int ads_parse_handle(const uint8_t *d, size_t n, uint32_t *handle, uint32_t *size)
{
    *size = 0;
    if (!d || n < 4) return FB_EPROTO;
    *handle = rd32(d);
    if (n == 4) return 0;
    if (n < 14) return FB_EPROTO;
    *size = rd32(d + 4);
    uint16_t tl = rd16(d + 12);
    if ((size_t)tl > n - 14) return FB_EPROTO;
    return 0;
}

int ads_parse_handle_ex(const uint8_t *d, size_t n, uint32_t *handle, uint32_t *size, const char **tname,
                        uint16_t *tlen)
{
    *tname = NULL;
    *tlen = 0;
    int rc = ads_parse_handle(d, n, handle, size);
    if (rc || n == 4) return rc;
    *tlen = rd16(d + 12);
    *tname = (const char *)d + 14;
    return 0;
}

int64_t ads_filetime_to_ns(uint64_t ft)
{
    const uint64_t epoch = 116444736000000000ULL;
    if (ft < epoch) return 0;
    uint64_t t = ft - epoch;
    if (t > (uint64_t)INT64_MAX / 100) return INT64_MAX;
    return (int64_t)(t * 100);
}

static int notes_walk(const uint8_t *d, size_t n, ads_note_cb cb, void *ctx)
{
    if (n < 8) return FB_EPROTO;
    uint32_t len = rd32(d), stamps = rd32(d + 4);
    if (len > n - 4) return FB_EPROTO;
    size_t end = 4 + (size_t)len, off = 8;
    for (uint32_t s = 0; s < stamps; s++) {
        if (end < off || end - off < 12) return FB_EPROTO;
        int64_t ts = ads_filetime_to_ns(rd64(d + off));
        uint32_t samples = rd32(d + off + 8);
        off += 12;
        for (uint32_t k = 0; k < samples; k++) {
            if (end - off < 8) return FB_EPROTO;
            uint32_t h = rd32(d + off), sz = rd32(d + off + 4);
            off += 8;
            if (sz > end - off) return FB_EPROTO;
            if (cb) cb(ctx, ts, h, d + off, sz);
            off += sz;
        }
    }
    return 0;
}

int ads_parse_notes(const uint8_t *d, size_t n, ads_note_cb cb, void *ctx)
{
    if (!d) return FB_EPROTO;
    int rc = notes_walk(d, n, NULL, NULL);
    if (rc) return rc;
    return notes_walk(d, n, cb, ctx);
}

/* ------------------------------------------------------------ sum commands */
size_t ads_sum_read_req(uint8_t *w, size_t cap, const struct ads_sub *s, uint32_t n, uint32_t *rlen)
{
    if ((size_t)n * 12 > cap) return 0;
    uint64_t r = 4ull * n;
    for (uint32_t i = 0; i < n; i++) {
        wr32(w + 12 * i, s[i].ig);
        wr32(w + 12 * i + 4, s[i].io);
        wr32(w + 12 * i + 8, s[i].len);
        r += s[i].len;
    }
    if (r > ADS_FRAME_MAX) return 0;
    *rlen = (uint32_t)r;
    return (size_t)n * 12;
}

int ads_sum_read_parse(const uint8_t *d, size_t n, const struct ads_sub *s, uint32_t cnt, uint32_t *res,
                       const uint8_t **data)
{
    if (!d || n / 4 < cnt) return FB_EPROTO;
    size_t off = 4 * (size_t)cnt;
    for (uint32_t i = 0; i < cnt; i++) {
        res[i] = rd32(d + 4 * i);
        data[i] = NULL;
        if (s[i].len > n - off) {
            /* a failed sub at the end may come without its slot; a good one may not */
            if (res[i] == 0) return FB_EPROTO;
            off = n;
            continue;
        }
        if (res[i] == 0) data[i] = d + off;
        off += s[i].len;
    }
    return 0;
}

size_t ads_sum_write_req(uint8_t *w, size_t cap, const struct ads_sub *s, uint32_t n, const uint8_t *const *vals)
{
    size_t need = (size_t)n * 12;
    for (uint32_t i = 0; i < n; i++) need += s[i].len;
    if (need > cap || need > ADS_FRAME_MAX) return 0;
    size_t off = (size_t)n * 12;
    for (uint32_t i = 0; i < n; i++) {
        wr32(w + 12 * i, s[i].ig);
        wr32(w + 12 * i + 4, s[i].io);
        wr32(w + 12 * i + 8, s[i].len);
        if (s[i].len) memcpy(w + off, vals[i], s[i].len);
        off += s[i].len;
    }
    return need;
}

int ads_sum_write_parse(const uint8_t *d, size_t n, uint32_t cnt, uint32_t *res)
{
    if (!d || n / 4 < cnt) return FB_EPROTO;
    for (uint32_t i = 0; i < cnt; i++) res[i] = rd32(d + 4 * i);
    return 0;
}

size_t ads_sum_rw_req(uint8_t *w, size_t cap, const struct ads_rwsub *s, uint32_t n, uint32_t *rlen)
{
    size_t need = (size_t)n * 16;
    uint64_t r = 8ull * n;
    for (uint32_t i = 0; i < n; i++) {
        need += s[i].wlen;
        r += s[i].rlen;
    }
    if (need > cap || need > ADS_FRAME_MAX || r > ADS_FRAME_MAX) return 0;
    size_t off = (size_t)n * 16;
    for (uint32_t i = 0; i < n; i++) {
        wr32(w + 16 * i, s[i].ig);
        wr32(w + 16 * i + 4, s[i].io);
        wr32(w + 16 * i + 8, s[i].rlen);
        wr32(w + 16 * i + 12, s[i].wlen);
        if (s[i].wlen) memcpy(w + off, s[i].wdata, s[i].wlen);
        off += s[i].wlen;
    }
    *rlen = (uint32_t)r;
    return need;
}

int ads_sum_rw_parse(const uint8_t *d, size_t n, uint32_t cnt, uint32_t *res, const uint8_t **data, uint32_t *lens)
{
    if (!d || n / 8 < cnt) return FB_EPROTO;
    size_t off = 8 * (size_t)cnt;
    for (uint32_t i = 0; i < cnt; i++) {
        res[i] = rd32(d + 8 * i);
        lens[i] = rd32(d + 8 * i + 4);
        if (lens[i] > n - off) return FB_EPROTO;
        data[i] = d + off;
        off += lens[i];
    }
    return 0;
}

/* ----------------------------------------------------------------- upload */
int ads_parse_upload_info(const uint8_t *d, size_t n, struct ads_upload_info *ui)
{
    memset(ui, 0, sizeof *ui);
    if (!d || n < 8) return FB_EPROTO;
    ui->nsym = rd32(d);
    ui->sym_len = rd32(d + 4);
    if (n >= 16) {
        ui->ndt = rd32(d + 8);
        ui->dt_len = rd32(d + 12);
    }
    return 0;
}

/* name\0 of length nl at p within [p, end): true when the NUL is there */
static bool cstr_ok(const uint8_t *p, const uint8_t *end, uint16_t nl)
{
    return end > p && (size_t)(end - p) > nl && p[nl] == 0;
}

int ads_sym_next(const uint8_t *d, size_t n, size_t *off, struct ads_sym *s)
{
    if (*off >= n) return 0;
    if (n - *off < 30) return FB_EPROTO;
    const uint8_t *e = d + *off;
    uint32_t elen = rd32(e);
    if (elen < 30 || elen > n - *off) return FB_EPROTO;
    const uint8_t *end = e + elen;
    memset(s, 0, sizeof *s);
    s->ig = rd32(e + 4);
    s->io = rd32(e + 8);
    s->size = rd32(e + 12);
    s->adstype = rd32(e + 16);
    s->flags = rd16(e + 20);
    s->arrdim = rd16(e + 22);
    s->name_len = rd16(e + 24);
    s->type_len = rd16(e + 26);
    uint16_t cl = rd16(e + 28);
    const uint8_t *p = e + 30;
    if (!cstr_ok(p, end, s->name_len)) return FB_EPROTO;
    s->name = (const char *)p;
    p += s->name_len + 1;
    if (!cstr_ok(p, end, s->type_len)) return FB_EPROTO;
    s->type = (const char *)p;
    p += s->type_len + 1;
    if (!cstr_ok(p, end, cl)) return FB_EPROTO;
    s->comment = (const char *)p;
    *off += elen;
    return 1;
}

/* one data-type entry (top level or a sub item) */
struct ads_dt {
    uint32_t size, offs, adstype, flags;
    const char *name, *type;
    uint16_t name_len, type_len, arrdim, nsub;
    const uint8_t *arr;  /* arrdim × (lBound i32, elements u32) */
    const uint8_t *subs; /* first sub item */
    const uint8_t *end;
};

static int dt_parse(const uint8_t *e, size_t avail, struct ads_dt *t)
{
    if (avail < 42) return FB_EPROTO;
    uint32_t elen = rd32(e);
    if (elen < 42 || elen > avail) return FB_EPROTO;
    const uint8_t *end = e + elen;
    memset(t, 0, sizeof *t);
    t->size = rd32(e + 16);
    t->offs = rd32(e + 20);
    t->adstype = rd32(e + 24);
    t->flags = rd32(e + 28);
    t->name_len = rd16(e + 32);
    t->type_len = rd16(e + 34);
    uint16_t cl = rd16(e + 36);
    t->arrdim = rd16(e + 38);
    t->nsub = rd16(e + 40);
    const uint8_t *p = e + 42;
    if (!cstr_ok(p, end, t->name_len)) return FB_EPROTO;
    t->name = (const char *)p;
    p += t->name_len + 1;
    if (!cstr_ok(p, end, t->type_len)) return FB_EPROTO;
    t->type = (const char *)p;
    p += t->type_len + 1;
    if (!cstr_ok(p, end, cl)) return FB_EPROTO;
    p += cl + 1;
    if ((size_t)(end - p) / 8 < t->arrdim) return FB_EPROTO;
    t->arr = p;
    t->subs = p + 8 * (size_t)t->arrdim;
    t->end = end;
    return 0;
}

static int dt_find(const uint8_t *dt, size_t dt_len, const char *name, size_t nl, struct ads_dt *out)
{
    size_t off = 0;
    while (off < dt_len) {
        if (dt_parse(dt + off, dt_len - off, out)) return FB_EPROTO;
        if (out->name_len == nl && strncasecmp(out->name, name, nl) == 0) return 0;
        off += rd32(dt + off);
    }
    return FB_ENOENT;
}

/* "ARRAY [0..9] OF INT" / "ARRAY [1..2,0..3] OF REAL": bounds and element type */
static int parse_array_type(const char *t, int32_t *lo, uint32_t *cnt, int *dims, const char **elem)
{
    if (strncasecmp(t, "ARRAY", 5) != 0) return FB_EINVAL;
    const char *p = strchr(t, '[');
    const char *q = p ? strchr(p, ']') : NULL;
    if (!p || !q) return FB_EINVAL;
    *dims = 0;
    p++;
    while (p < q && *dims < 4) {
        char *e;
        long a = strtol(p, &e, 10);
        if (e[0] != '.' || e[1] != '.') return FB_EINVAL;
        long b = strtol(e + 2, &e, 10);
        if (b < a) return FB_EINVAL;
        lo[*dims] = (int32_t)a;
        cnt[*dims] = (uint32_t)(b - a + 1);
        (*dims)++;
        while (*e == ' ') e++;
        if (*e == ',') e++;
        p = e;
    }
    const char *of = strstr(q, " OF ");
    if (!of) of = strstr(q, " of ");
    if (!of) return FB_EINVAL;
    *elem = of + 4;
    return 0;
}

/* descend from a value of type `tname` (size `size`) through the rest of a name */
struct rctx {
    const uint8_t *dt;
    size_t dt_len;
    int64_t elem; /* element index to append to an array name, -1 = none */
    char *sub;    /* receives "[lo+elem]" when appended */
    size_t subcap;
};

static int resolve_rest(struct rctx *rc, const char *tname, size_t tlen, uint32_t size, const char *rest,
                        struct ads_tinfo *ti, struct fb_err *err, int depth)
{
    const uint8_t *dt = rc->dt;
    size_t dt_len = rc->dt_len;
    char tbuf[256];
    if (depth > 16 || tlen >= sizeof tbuf) return fb_err_set(err, FB_ENOTSUP, "type nesting too deep");
    memcpy(tbuf, tname, tlen);
    tbuf[tlen] = 0;
    if (!*rest && rc->elem >= 0) {
        /* `count:` over an array symbol: NAME → NAME[lo + index] */
        int32_t lo[4];
        uint32_t cnt[4];
        int dims;
        const char *elem;
        if (parse_array_type(tbuf, lo, cnt, &dims, &elem) == 0 && dims == 1) {
            if ((uint64_t)rc->elem >= cnt[0])
                return fb_err_set(err, FB_ENOENT, "element %lld is beyond %s", (long long)rc->elem, tbuf);
            char idx[32];
            snprintf(idx, sizeof idx, "[%lld]", (long long)(lo[0] + rc->elem));
            snprintf(rc->sub, rc->subcap, "%s", idx);
            rc->elem = -1;
            return resolve_rest(rc, elem, strlen(elem), cnt[0] ? size / cnt[0] : 0, "", ti, err, depth + 1);
        }
        if (rc->elem > 0) return fb_err_set(err, FB_EINVAL, "is of type %s, not an array: count needs an array", tbuf);
        rc->elem = -1;
    }
    if (!*rest) {
        if (ads_type_parse(tbuf, tlen, ti) == 0) {
            if (ti->type == ADS_T_STRING && size > 1 && size - 1 <= ADS_MAX_STRING) {
                ti->str_len = size - 1;
                ti->size = size;
            }
            if (ti->type == ADS_T_WSTRING && size >= 4 && size % 2 == 0 && size / 2 - 1 <= ADS_MAX_WSTRING) {
                ti->str_len = size / 2 - 1;
                ti->size = size;
            }
            return 0;
        }
        /* an alias (TYPE T_Temp : REAL) resolves through the data types */
        struct ads_dt t;
        if (dt && dt_find(dt, dt_len, tbuf, tlen, &t) == 0 && t.type_len && !t.nsub && !t.arrdim)
            return resolve_rest(rc, t.type, t.type_len, t.size, rest, ti, err, depth + 1);
        return fb_err_set(err, FB_ENOTSUP, "is of type %s, not a plain type: address one of its elements", tbuf);
    }
    if (rest[0] == '[') {
        int32_t lo[4];
        uint32_t cnt[4];
        int dims;
        const char *elem;
        struct ads_dt t;
        if (parse_array_type(tbuf, lo, cnt, &dims, &elem) < 0) {
            /* an alias of an array type */
            if (dt && dt_find(dt, dt_len, tbuf, tlen, &t) == 0 && t.type_len && !t.nsub)
                return resolve_rest(rc, t.type, t.type_len, t.size, rest, ti, err, depth + 1);
            return fb_err_set(err, FB_ENOTSUP, "is of type %s, not an array", tbuf);
        }
        const char *p = rest + 1;
        for (int k = 0; k < dims; k++) {
            char *e;
            long ix = strtol(p, &e, 10);
            if (e == p || ix < lo[k] || ix >= (long)lo[k] + (long)cnt[k])
                return fb_err_set(err, FB_ENOENT, "array index out of bounds (%s)", tbuf);
            p = e;
            while (*p == ' ') p++;
            if (k < dims - 1 && *p++ != ',') return fb_err_set(err, FB_EINVAL, "array needs %d indices", dims);
        }
        if (*p != ']') return fb_err_set(err, FB_EINVAL, "bad array subscript");
        uint32_t total = 1;
        for (int k = 0; k < dims; k++) total *= cnt[k] ? cnt[k] : 1;
        return resolve_rest(rc, elem, strlen(elem), total ? size / total : 0, p + 1, ti, err, depth + 1);
    }
    if (rest[0] != '.') return fb_err_set(err, FB_EINVAL, "bad name after type %s", tbuf);
    const char *m = rest + 1;
    size_t ml = strcspn(m, ".[");
    struct ads_dt t;
    if (!dt || dt_find(dt, dt_len, tbuf, tlen, &t) != 0)
        return fb_err_set(err, FB_ENOENT, "unknown member '%.*s' (type %s has no members)", (int)ml, m, tbuf);
    if (!t.nsub && t.type_len) /* alias of a struct */
        return resolve_rest(rc, t.type, t.type_len, t.size, rest, ti, err, depth + 1);
    const uint8_t *sp = t.subs;
    for (uint16_t i = 0; i < t.nsub; i++) {
        struct ads_dt s;
        if (dt_parse(sp, (size_t)(t.end - sp), &s)) return fb_err_set(err, FB_EPROTO, "malformed data-type upload");
        if (s.name_len == ml && strncasecmp(s.name, m, ml) == 0)
            return resolve_rest(rc, s.type, s.type_len, s.size, m + ml, ti, err, depth + 1);
        sp = s.end;
    }
    return fb_err_set(err, FB_ENOENT, "type %s has no member '%.*s'", tbuf, (int)ml, m);
}

static bool prefix_ci(const char *s, size_t n, const char *w)
{
    size_t wl = strlen(w);
    return n >= wl && strncasecmp(s, w, wl) == 0;
}

/* ADST_* code → a plain type of exactly `size` bytes */
static int adst_tinfo(uint32_t adst, uint32_t size, struct ads_tinfo *ti)
{
    static const struct {
        uint32_t adst;
        uint8_t type;
    } map[] = {{2, ADS_T_INT},     {3, ADS_T_DINT},     {4, ADS_T_REAL},   {5, ADS_T_LREAL}, {16, ADS_T_SINT},
               {17, ADS_T_USINT},  {18, ADS_T_UINT},    {19, ADS_T_UDINT}, {20, ADS_T_LINT}, {21, ADS_T_ULINT},
               {30, ADS_T_STRING}, {31, ADS_T_WSTRING}, {33, ADS_T_BOOL}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (map[i].adst != adst) continue;
        tinfo_of(map[i].type, ti);
        if (ti->type == ADS_T_STRING) {
            if (size < 2 || size - 1 > ADS_MAX_STRING) return FB_ENOTSUP;
            ti->str_len = size - 1;
            ti->size = size;
        } else if (ti->type == ADS_T_WSTRING) {
            if (size < 4 || size % 2 || size / 2 - 1 > ADS_MAX_WSTRING) return FB_ENOTSUP;
            ti->str_len = size / 2 - 1;
            ti->size = size;
        } else if (ti->size != size) {
            return FB_ENOTSUP;
        }
        return 0;
    }
    return FB_ENOTSUP;
}

int ads_type_resolve(const char *type, size_t tlen, uint32_t size, uint32_t adstype, const uint8_t *dt, size_t dt_len,
                     int64_t elem, char *sub, size_t subcap, struct ads_tinfo *ti, struct fb_err *err)
{
    struct rctx rc0 = {dt, dt_len, elem, sub, subcap};
    if (sub && subcap) sub[0] = 0;
    if (!sub) rc0.elem = -1;
    int rc = resolve_rest(&rc0, type, tlen, size, "", ti, err, 0);
    /* an alias (T_Temp : REAL) without the data types: the PLC's type code
     * says what it is; arrays, pointers and references keep their own code */
    if (rc == FB_ENOTSUP && elem <= 0 && !prefix_ci(type, tlen, "ARRAY") && !prefix_ci(type, tlen, "POINTER") &&
        !prefix_ci(type, tlen, "REFERENCE") && adst_tinfo(adstype, size, ti) == 0)
        return 0;
    return rc;
}

int ads_resolve(const uint8_t *sym, size_t sym_len, const uint8_t *dt, size_t dt_len, const char *name, int64_t elem,
                char *sub, size_t subcap, struct ads_tinfo *ti, struct fb_err *err)
{
    struct rctx rc0 = {dt, dt_len, elem, sub, subcap};
    if (sub && subcap) sub[0] = 0;
    if (!sub) rc0.elem = -1;
    size_t nl = strlen(name), off = 0, best = 0;
    struct ads_sym s, bs;
    int rc;
    while ((rc = ads_sym_next(sym, sym_len, &off, &s)) == 1) {
        size_t l = s.name_len;
        if (l > nl || l <= best || strncasecmp(s.name, name, l) != 0) continue;
        if (l < nl && name[l] != '.' && name[l] != '[') continue;
        best = l;
        bs = s;
    }
    if (rc < 0) return fb_err_set(err, FB_EPROTO, "malformed symbol upload");
    if (!best) return fb_err_set(err, FB_ENOENT, "symbol not found in the PLC's symbol table");
    if (!name[best]) /* the symbol itself: its type code helps where the data types do not */
        return ads_type_resolve(bs.type, bs.type_len, bs.size, bs.adstype, dt, dt_len, elem, sub, subcap, ti, err);
    return resolve_rest(&rc0, bs.type, bs.type_len, bs.size, name + best, ti, err, 0);
}

/* ------------------------------------------------------------------ errors */
static const struct {
    uint32_t code;
    const char *text;
} errs[] = {
    {0x1, "internal error"},
    {0x6, "target port not found: the ADS port does not exist or the PLC runtime is stopped (check port=, 851 for "
          "TwinCAT 3 PLC 1, 801 for TwinCAT 2)"},
    {0x7, "target machine not found: no route (add a static route for our AmsNetId on the PLC: fieldbridge ads "
          "add-route, docs/ads.md)"},
    {0x8, "unknown command ID"},
    {0xA, "no memory on the target"},
    {0x12, "port disabled"},
    {0x13, "port already connected"},
    {0x18, "port not connected"},
    {0x19, "bad AMS header length"},
    {0x700, "general device error"},
    {0x701, "service not supported by the server"},
    {0x702, "invalid index group"},
    {0x703, "invalid index offset"},
    {0x704, "reading or writing not permitted"},
    {0x705, "parameter size not correct (type or size of the symbol differs)"},
    {0x706, "invalid parameter value"},
    {0x707, "device not ready (PLC stopped?)"},
    {0x708, "device busy"},
    {0x709, "invalid context (must be in RUN mode?)"},
    {0x70A, "out of memory"},
    {0x70B, "invalid parameter values"},
    {0x70C, "not found (files, ...)"},
    {0x70D, "syntax error in command or file"},
    {0x710, "symbol not found (check the name in fieldbridge browse; after a PLC download it may have been renamed)"},
    {0x711, "symbol version invalid (the PLC program was downloaded again: handles are re-resolved)"},
    {0x712, "server is in an invalid state"},
    {0x713, "AdsTransMode not supported"},
    {0x714, "notification handle invalid"},
    {0x715, "notification client not registered"},
    {0x716, "no more notification handles"},
    {0x717, "size for watch too big"},
    {0x718, "device not initialised"},
    {0x719, "device timeout"},
    {0x71A, "query interface failed"},
    {0x71B, "wrong interface requested"},
    {0x71C, "class ID invalid"},
    {0x71D, "object ID invalid"},
    {0x71E, "request pending"},
    {0x71F, "request aborted"},
    {0x720, "signal warning"},
    {0x721, "invalid array index"},
    {0x722, "symbol not active"},
    {0x723, "access denied"},
    {0x740, "client error"},
    {0x741, "service contains an invalid parameter"},
    {0x745, "timeout"},
    {0x748, "ADS port not opened"},
    {0x750, "internal error in ADS sync"},
    {0x751, "hash table overflow"},
    {0x752, "key not found in hash"},
    {0x753, "no more symbols in cache"},
};

const char *ads_err_text(uint32_t code)
{
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++)
        if (errs[i].code == code) return errs[i].text;
    return "unknown ADS error";
}

uint32_t ads_err_quality(uint32_t code, bool write)
{
    switch (code) {
        case 0: return FB_Q_GOOD;
        case 0x6:
        case 0x7:
        case 0x12:
        case 0x18:
        case 0x748: return FB_Q_BAD_NO_COMM;
        case 0x702:
        case 0x703:
        case 0x70C:
        case 0x710:
        case 0x711:
        case 0x721:
        case 0x722: return FB_Q_BAD_NODE_UNKNOWN;
        case 0x704:
        case 0x723: return write ? FB_Q_BAD_NOT_WRITABLE : FB_Q_BAD_NOT_READABLE;
        case 0x705: return FB_Q_BAD_TYPE_MISMATCH;
        case 0x706:
        case 0x70B: return FB_Q_BAD_OUT_OF_RANGE;
        case 0x719:
        case 0x745: return FB_Q_BAD_TIMEOUT;
        case 0x707:
        case 0x708:
        case 0x709:
        case 0x718: return FB_Q_BAD_DEVICE_FAILURE;
        default: return FB_Q_BAD_COMM;
    }
}

/* ------------------------------------------------------- UDP 48899 routes */
static const uint8_t udp_magic[4] = {0x03, 0x66, 0x14, 0x71};

static size_t udp_head(uint8_t *b, size_t cap, uint32_t invoke, uint32_t service, const struct ads_netid *sender,
                       uint32_t ntags)
{
    if (cap < 24) return 0;
    memcpy(b, udp_magic, 4);
    wr32(b + 4, invoke);
    wr32(b + 8, service);
    memcpy(b + 12, sender->b, 6);
    wr16(b + 18, 10000);
    wr32(b + 20, ntags);
    return 24;
}

static size_t udp_tag(uint8_t *b, size_t cap, size_t off, uint16_t id, const void *data, size_t len)
{
    if (!off || len > 0xFFFF || cap < off || cap - off < 4 + len) return 0;
    wr16(b + off, id);
    wr16(b + off + 2, (uint16_t)len);
    memcpy(b + off + 4, data, len);
    return off + 4 + len;
}

size_t ads_udp_add_route(uint8_t *b, size_t cap, uint32_t invoke, const struct ads_netid *sender, const char *name,
                         const struct ads_netid *netid, const char *user, const char *password, const char *host)
{
    size_t off = udp_head(b, cap, invoke, ADS_UDP_ADD_ROUTE, sender, 5);
    off = udp_tag(b, cap, off, ADS_UDP_TAG_ROUTENAME, name, strlen(name) + 1);
    off = udp_tag(b, cap, off, ADS_UDP_TAG_NETID, netid->b, 6);
    off = udp_tag(b, cap, off, ADS_UDP_TAG_USER, user, strlen(user) + 1);
    off = udp_tag(b, cap, off, ADS_UDP_TAG_PASSWORD, password, strlen(password) + 1);
    off = udp_tag(b, cap, off, ADS_UDP_TAG_HOST, host, strlen(host) + 1);
    return off;
}

size_t ads_udp_discover(uint8_t *b, size_t cap, uint32_t invoke, const struct ads_netid *sender)
{
    return udp_head(b, cap, invoke, ADS_UDP_DISCOVER, sender, 0);
}

int ads_udp_parse(const uint8_t *b, size_t n, struct ads_udp_reply *r)
{
    memset(r, 0, sizeof *r);
    if (!b || n < 24 || memcmp(b, udp_magic, 4) != 0) return FB_EPROTO;
    r->invoke = rd32(b + 4);
    r->service = rd32(b + 8);
    memcpy(r->netid.b, b + 12, 6);
    r->port = rd16(b + 18);
    uint32_t ntags = rd32(b + 20);
    size_t off = 24;
    for (uint32_t i = 0; i < ntags; i++) {
        if (n - off < 4) return FB_EPROTO;
        uint16_t id = rd16(b + off), len = rd16(b + off + 2);
        off += 4;
        if (len > n - off) return FB_EPROTO;
        if (id == ADS_UDP_TAG_STATUS && len == 4 && !(r->service == (ADS_UDP_RESPONSE | ADS_UDP_DISCOVER))) {
            r->status = rd32(b + off);
            r->have_status = true;
        } else if (id == ADS_UDP_TAG_ROUTENAME && len) {
            size_t l = len < sizeof r->name ? len : sizeof r->name - 1;
            for (size_t k = 0; k < l && b[off + k]; k++)
                r->name[k] = b[off + k] >= 0x20 && b[off + k] < 0x7f ? (char)b[off + k] : '?';
        }
        off += len;
    }
    return 0;
}
