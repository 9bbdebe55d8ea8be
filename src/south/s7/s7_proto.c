/* s7_proto.c — S7comm codec and planner, no I/O (see s7_proto.h).
 *
 * Byte layout (all big-endian), one request on the wire:
 *
 *   TPKT      03 00 LEN16                      LEN counts the whole frame
 *   COTP DT   02 F0 80                         LI=2, DT, EOT
 *   S7 header 32 ROSCTR 0000 PDUREF PARLEN DATALEN [ERRCLASS ERRCODE]
 *   params    Read Var:  04 N  { 12 0A 10 TS COUNT16 DB16 AREA ADDR24 } × N
 *             Write Var: 05 N  (same items)
 *   data      Write Var: { 00 DTS LEN16 bytes [pad to even] } × N
 *             Read reply: { RC DTS LEN16 bytes [pad to even] } × N
 *
 * LEN16 in data items is in bits for DTS 03/04/05 and in bytes for 07/09.
 * A request must fit the negotiated PDU: 12 + 12·N for a read job, and
 * 14 + Σ(4 + len + pad) for its reply, so one item carries at most PDU − 18
 * bytes (read) or PDU − 28 (write, item and data in one job).
 *
 * The planner sorts tags by (area, DB, offset), merges neighbours whose gap
 * is at most max_gap bytes into ranges, cuts ranges into PDU-sized chunks,
 * and packs chunks greedily into requests (≤ max_items, both size formulas).
 * A value that spans chunks is decoded only after all of them arrived, so
 * strings longer than a PDU read fine.  The layout depends on the PDU, which
 * is only known after Setup Communication: s7_plan_layout() is re-run when a
 * connection negotiates a different size (never on the hot path).
 */
#include "south/s7/s7_proto.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------- byte helpers */
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) << 32 | rd32(p + 4); }
static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static void wr32(uint8_t *p, uint32_t v)
{
    wr16(p, (uint16_t)(v >> 16));
    wr16(p + 2, (uint16_t)v);
}
static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)(v >> 32));
    wr32(p + 4, (uint32_t)v);
}

/* ---------------------------------------------------------------- options */
static bool parse_num(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0); /* 0x0102 works */
    if (*end || errno || v < lo || v > hi) return false;
    *out = v;
    return true;
}

int s7_opts_parse(const struct fb_url *u, int64_t def_timeout_ns, struct s7_opts *o, struct fb_err *err)
{
    memset(o, 0, sizeof *o);
    o->port = S7_DEFAULT_PORT;
    o->rack = 0;
    o->slot = 1;
    o->conn_type = S7_CT_PG;
    o->local_tsap = 0x0100;
    o->pdu = S7_PDU_DEFAULT;
    o->max_gap = 32;
    o->max_items = S7_MAX_ITEMS;
    o->timeout_ns = def_timeout_ns > 0 ? def_timeout_ns : 1000000000;
    const char *scheme = u->scheme ? u->scheme : "";
    const char *host = u->host ? u->host : "";
    const char *path = u->path ? u->path : "";
    if (strcmp(scheme, "s7") != 0)
        return fb_err_set(err, FB_EINVAL, "scheme '%s' is not S7 (s7://host:102?rack=0&slot=1)", scheme);
    if (!host[0]) return fb_err_set(err, FB_EINVAL, "s7 URL needs a host (s7://192.168.0.10?rack=0&slot=1)");
    if (path[0] && strcmp(path, "/") != 0) return fb_err_set(err, FB_EINVAL, "s7 URL takes no path ('%s')", path);
    if (strlen(host) >= sizeof o->host) return fb_err_set(err, FB_EINVAL, "host name too long");
    snprintf(o->host, sizeof o->host, "%s", host);
    if (u->port) {
        if (u->port < 1 || u->port > 65535) return fb_err_set(err, FB_EINVAL, "bad port %d", u->port);
        o->port = u->port;
    }
    bool have_remote = false;
    for (int i = 0; i < u->nq; i++) {
        const char *k = u->q[i].k ? u->q[i].k : "", *v = u->q[i].v ? u->q[i].v : "";
        long x;
        if (!strcmp(k, "rack")) {
            if (!parse_num(v, 0, 7, &x)) return fb_err_set(err, FB_EINVAL, "bad rack '%s' (0..7)", v);
            o->rack = (int)x;
        } else if (!strcmp(k, "slot")) {
            if (!parse_num(v, 0, 31, &x)) return fb_err_set(err, FB_EINVAL, "bad slot '%s' (0..31)", v);
            o->slot = (int)x;
        } else if (!strcmp(k, "type")) {
            if (!strcasecmp(v, "pg"))
                o->conn_type = S7_CT_PG;
            else if (!strcasecmp(v, "op"))
                o->conn_type = S7_CT_OP;
            else if (!strcasecmp(v, "basic") || !strcasecmp(v, "s7basic"))
                o->conn_type = S7_CT_BASIC;
            else if (parse_num(v, 1, 0x10, &x))
                o->conn_type = (int)x;
            else
                return fb_err_set(err, FB_EINVAL, "bad connection type '%s' (pg, op, basic, or a number 1..16)", v);
        } else if (!strcmp(k, "local_tsap")) {
            if (!parse_num(v, 0, 0xFFFF, &x)) return fb_err_set(err, FB_EINVAL, "bad local_tsap '%s' (e.g. 0x0100)", v);
            o->local_tsap = (uint16_t)x;
        } else if (!strcmp(k, "remote_tsap")) {
            if (!parse_num(v, 0, 0xFFFF, &x))
                return fb_err_set(err, FB_EINVAL, "bad remote_tsap '%s' (e.g. 0x0102)", v);
            o->remote_tsap = (uint16_t)x;
            have_remote = true;
        } else if (!strcmp(k, "pdu")) {
            if (!parse_num(v, S7_PDU_MIN, S7_PDU_MAX, &x))
                return fb_err_set(err, FB_EINVAL, "bad pdu '%s' (%d..%d)", v, S7_PDU_MIN, S7_PDU_MAX);
            o->pdu = (int)x;
        } else if (!strcmp(k, "max_gap")) {
            if (!parse_num(v, 0, 65535, &x)) return fb_err_set(err, FB_EINVAL, "bad max_gap '%s' (bytes, 0..65535)", v);
            o->max_gap = (int)x;
        } else if (!strcmp(k, "max_items")) {
            if (!parse_num(v, 1, S7_MAX_ITEMS, &x))
                return fb_err_set(err, FB_EINVAL, "bad max_items '%s' (1..%d)", v, S7_MAX_ITEMS);
            o->max_items = (int)x;
        } else if (!strcmp(k, "timeout")) {
            int64_t ns;
            if (fb_parse_duration(v, &ns) != 0 || ns < 1000000 || ns > 3600LL * 1000000000LL)
                return fb_err_set(err, FB_EINVAL, "bad duration '%s' for timeout (e.g. 500ms, 1s)", v);
            o->timeout_ns = ns;
        } else {
            return fb_err_set(err, FB_EINVAL,
                              "unknown S7 option '%s' (expected rack, slot, type, local_tsap, "
                              "remote_tsap, pdu, max_gap, max_items, timeout)",
                              k);
        }
    }
    if (!have_remote) o->remote_tsap = (uint16_t)(o->conn_type << 8 | o->rack << 5 | o->slot);
    return 0;
}

char *s7_opts_conn_key(const struct s7_opts *o)
{
    size_t n = strlen(o->host) + 48;
    char *k = malloc(n);
    if (k) snprintf(k, n, "s7:%s:%d:%04X:%04X", o->host, o->port, o->local_tsap, o->remote_tsap);
    return k;
}

/* ---------------------------------------------------------------- types */
struct type_def {
    const char *name, *alias;
    uint8_t size; /* bytes (strings: header only) */
    uint8_t fbtype;
};
static const struct type_def types[S7_T__COUNT] = {
    [S7_BOOL] = {"BOOL", NULL, 1, FB_T_BOOL},         [S7_BYTE] = {"BYTE", NULL, 1, FB_T_UINT8},
    [S7_USINT] = {"USINT", NULL, 1, FB_T_UINT8},      [S7_SINT] = {"SINT", NULL, 1, FB_T_INT8},
    [S7_CHAR] = {"CHAR", NULL, 1, FB_T_STRING},       [S7_WORD] = {"WORD", NULL, 2, FB_T_UINT16},
    [S7_UINT] = {"UINT", NULL, 2, FB_T_UINT16},       [S7_INT] = {"INT", NULL, 2, FB_T_INT16},
    [S7_DWORD] = {"DWORD", NULL, 4, FB_T_UINT32},     [S7_UDINT] = {"UDINT", NULL, 4, FB_T_UINT32},
    [S7_DINT] = {"DINT", NULL, 4, FB_T_INT32},        [S7_REAL] = {"REAL", NULL, 4, FB_T_FLOAT32},
    [S7_LWORD] = {"LWORD", NULL, 8, FB_T_UINT64},     [S7_ULINT] = {"ULINT", NULL, 8, FB_T_UINT64},
    [S7_LINT] = {"LINT", NULL, 8, FB_T_INT64},        [S7_LREAL] = {"LREAL", NULL, 8, FB_T_FLOAT64},
    [S7_TIME] = {"TIME", NULL, 4, FB_T_INT32},        [S7_TOD] = {"TIME_OF_DAY", "TOD", 4, FB_T_UINT32},
    [S7_DATE] = {"DATE", NULL, 2, FB_T_STRING},       [S7_DT] = {"DATE_AND_TIME", "DT", 8, FB_T_STRING},
    [S7_STRING] = {"STRING", NULL, 2, FB_T_STRING},   [S7_WSTRING] = {"WSTRING", NULL, 4, FB_T_STRING},
    [S7_COUNTER] = {"COUNTER", NULL, 2, FB_T_UINT16}, [S7_TIMER] = {"TIMER", NULL, 2, FB_T_UINT16},
};

const char *s7_type_name(int t) { return t >= 0 && t < S7_T__COUNT ? types[t].name : "?"; }

/* fb types given outside the address (config `type: float32`) → S7 type. */
static int type_from_fb(enum fb_type t)
{
    switch (t) {
        case FB_T_BOOL: return S7_BOOL;
        case FB_T_UINT8: return S7_BYTE;
        case FB_T_INT8: return S7_SINT;
        case FB_T_UINT16: return S7_WORD;
        case FB_T_INT16: return S7_INT;
        case FB_T_UINT32: return S7_DWORD;
        case FB_T_INT32: return S7_DINT;
        case FB_T_UINT64: return S7_ULINT;
        case FB_T_INT64: return S7_LINT;
        case FB_T_FLOAT32: return S7_REAL;
        case FB_T_FLOAT64: return S7_LREAL;
        case FB_T_STRING: return S7_STRING;
        default: return -1;
    }
}

/* "real", "string[20]", "wstring[8]", "dt", fb names ("float32", "int16") too. */
static int type_parse(const char *s, uint32_t *n, struct fb_err *err)
{
    *n = 0;
    const char *br = strchr(s, '[');
    size_t nl = br ? (size_t)(br - s) : strlen(s);
    char name[32];
    if (nl == 0 || nl >= sizeof name) return fb_err_set(err, FB_EINVAL, "bad type '%s'", s);
    memcpy(name, s, nl);
    name[nl] = 0;
    int t = -1;
    for (int i = 0; i < S7_T__COUNT; i++)
        if (!strcasecmp(name, types[i].name) || (types[i].alias && !strcasecmp(name, types[i].alias))) t = i;
    if (t == S7_COUNTER || t == S7_TIMER) t = -1; /* implied by the C/T areas */
    if (t < 0) {
        enum fb_type ft = fb_type_parse(name);
        if (ft == FB_T_NONE && !strcasecmp(name, "uint8")) ft = FB_T_UINT8;
        t = type_from_fb(ft);
    }
    if (t < 0)
        return fb_err_set(err, FB_EINVAL,
                          "unknown S7 type '%s' (BOOL, BYTE, WORD, DWORD, LWORD, SINT, USINT, INT, "
                          "UINT, DINT, UDINT, LINT, ULINT, REAL, LREAL, CHAR, STRING[n], WSTRING[n], "
                          "TIME, TOD, DATE, DT)",
                          s);
    if (br) {
        if (t != S7_STRING && t != S7_WSTRING)
            return fb_err_set(err, FB_EINVAL, "only STRING and WSTRING take a length ('%s')", s);
        char *end;
        errno = 0;
        unsigned long v = strtoul(br + 1, &end, 10);
        long max = t == S7_STRING ? S7_MAX_STRING : S7_MAX_WSTRING;
        /* digits only: strtoul would take "-2" as a huge number */
        if (br[1] < '0' || br[1] > '9' || end == br + 1 || *end != ']' || end[1] || errno || v < 1 ||
            v > (unsigned long)max)
            return fb_err_set(err, FB_EINVAL, "bad length in '%s' (%s[n] with n in 1..%ld)", s, types[t].name, max);
        *n = (uint32_t)v;
    } else if (t == S7_STRING) {
        *n = S7_MAX_STRING; /* Siemens default STRING = STRING[254] */
    } else if (t == S7_WSTRING) {
        *n = S7_MAX_STRING;
    }
    return t;
}

static uint32_t type_size(int t, uint32_t n)
{
    if (t == S7_STRING) return 2 + n;
    if (t == S7_WSTRING) return 4 + 2 * n;
    return types[t].size;
}

static bool read_uint(const char **s, uint32_t max, uint32_t *out)
{
    const char *p = *s;
    if (!isdigit((unsigned char)*p)) return false;
    uint64_t v = 0;
    while (isdigit((unsigned char)*p)) {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > max) return false;
        p++;
    }
    *out = (uint32_t)v;
    *s = p;
    return true;
}

int s7_addr_parse(const char *text, enum fb_type hint, uint32_t hint_len, uint32_t index, struct s7_addr *a,
                  struct fb_err *err)
{
    memset(a, 0, sizeof *a);
    if (!text || !*text) return fb_err_set(err, FB_EINVAL, "empty S7 address");
    char where[64];
    const char *colon = strchr(text, ':');
    size_t wl = colon ? (size_t)(colon - text) : strlen(text);
    if (wl == 0 || wl >= sizeof where)
        return fb_err_set(err, FB_EINVAL, "bad S7 address '%s' (e.g. DB1.DBD0:real, MW10, I0.1)", text);
    memcpy(where, text, wl);
    where[wl] = 0;
    for (char *q = where; *q; q++) *q = (char)toupper((unsigned char)*q);

    const char *p = where;
    char size = 0; /* X B W D, or 0 for a bare bit (I0.1) / C / T */
    uint32_t v;
    if (p[0] == 'D' && p[1] == 'B' && isdigit((unsigned char)p[2])) {
        p += 2;
        if (!read_uint(&p, 65535, &v) || v == 0)
            return fb_err_set(err, FB_EINVAL, "bad DB number in '%s' (DB1..DB65535)", text);
        a->area = S7_AREA_DB;
        a->db = (uint16_t)v;
        if (p[0] != '.' || p[1] != 'D' || p[2] != 'B' || !strchr("XBWD", p[3]) || !p[3])
            return fb_err_set(err, FB_EINVAL,
                              "bad DB address '%s': expected DBn.DBX<byte>.<bit>, DBn.DBB<byte>, "
                              "DBn.DBW<byte> or DBn.DBD<byte>",
                              text);
        size = p[3];
        p += 4;
    } else {
        switch (p[0]) {
            case 'I':
            case 'E': a->area = S7_AREA_I; break;
            case 'Q':
            case 'A': a->area = S7_AREA_Q; break;
            case 'M': a->area = S7_AREA_M; break;
            case 'C':
            case 'Z': a->area = S7_AREA_C; break;
            case 'T': a->area = S7_AREA_T; break;
            default:
                return fb_err_set(err, FB_EINVAL,
                                  "bad S7 address '%s': expected DBn.DBX/B/W/D, I, Q, M (E, A), C or T "
                                  "(e.g. DB1.DBD0:real, MW10, I0.1, Q1.7, C5, T3)",
                                  text);
        }
        p++;
        if (a->area == S7_AREA_C || a->area == S7_AREA_T) {
            if (!read_uint(&p, 65535, &v) || *p)
                return fb_err_set(err, FB_EINVAL, "bad %s address '%s' (e.g. %s5)",
                                  a->area == S7_AREA_C ? "counter" : "timer", text, a->area == S7_AREA_C ? "C" : "T");
            if (colon)
                return fb_err_set(err, FB_EINVAL, "%s '%s' takes no type: it is a 16-bit raw word",
                                  a->area == S7_AREA_C ? "counter" : "timer", text);
            a->type = a->area == S7_AREA_C ? S7_COUNTER : S7_TIMER;
            a->fbtype = FB_T_UINT16;
            v += index;
            if (v > 65535) return fb_err_set(err, FB_EINVAL, "'%s' + %u is beyond 65535", text, index);
            a->start = v;
            a->size = 2;
            return 0;
        }
        if (strchr("XBWD", p[0]) && p[0]) {
            size = p[0];
            p++;
        }
    }
    if (!read_uint(&p, 0xFFFFFF / 8, &v)) return fb_err_set(err, FB_EINVAL, "bad byte offset in '%s'", text);
    a->start = v;
    bool has_bit = false;
    if (*p == '.') {
        p++;
        uint32_t b;
        if (!read_uint(&p, 7, &b) || *p) return fb_err_set(err, FB_EINVAL, "bad bit in '%s' (0..7)", text);
        a->bit = (uint8_t)b;
        has_bit = true;
    }
    if (*p) return fb_err_set(err, FB_EINVAL, "unexpected '%s' in S7 address '%s'", p, text);
    if (size == 0) size = has_bit ? 'X' : 0;
    if (size == 0)
        return fb_err_set(err, FB_EINVAL, "'%s' needs a size: %.1sX<byte>.<bit>, %.1sB, %.1sW or %.1sD", text, where,
                          where, where, where);
    if ((size == 'X') != has_bit)
        return fb_err_set(err, FB_EINVAL,
                          size == 'X' ? "'%s' needs a bit: X<byte>.<bit>" : "'%s': only X addresses take a bit", text);

    /* the type: suffix, else the hint, else from the size letter */
    int t;
    uint32_t n = 0;
    if (colon) {
        t = type_parse(colon + 1, &n, err);
        if (t < 0) return t;
    } else if (hint != FB_T_NONE) {
        t = type_from_fb(hint);
        if (t < 0) return fb_err_set(err, FB_EINVAL, "type %s has no S7 equivalent", fb_type_name(hint));
        if (t == S7_STRING) n = hint_len && hint_len <= S7_MAX_STRING ? hint_len : S7_MAX_STRING;
        /* a size letter that contradicts an integer hint picks the letter's width */
        if (size == 'X') t = S7_BOOL;
    } else {
        t = size == 'X' ? S7_BOOL : size == 'B' ? S7_BYTE : size == 'W' ? S7_WORD : S7_DWORD;
    }
    if ((t == S7_BOOL) != (size == 'X'))
        return fb_err_set(err, FB_EINVAL,
                          t == S7_BOOL ? "'%s': BOOL needs a bit address (e.g. DB1.DBX2.3, M0.1)"
                                       : "'%s': a bit address (X) holds a BOOL only",
                          text);
    uint32_t sz = type_size(t, n);
    uint32_t letter = size == 'B' ? 1 : size == 'W' ? 2 : size == 'D' ? 4 : 0;
    if (size != 'X' && size != 'B' && sz <= 4 && sz != letter)
        return fb_err_set(err, FB_EINVAL,
                          "'%s': %s is %u byte%s, the address letter %c means %u "
                          "(use %s)",
                          text, types[t].name, sz, sz == 1 ? "" : "s", size, letter,
                          sz == 1   ? "B"
                          : sz == 2 ? "W"
                                    : "D");
    a->type = (uint8_t)t;
    a->n = (uint16_t)n;
    a->fbtype = types[t].fbtype;
    a->size = t == S7_BOOL ? 1 : sz;
    if (index) {
        if (t == S7_BOOL) {
            uint64_t bitpos = (uint64_t)a->start * 8 + a->bit + index;
            a->start = (uint32_t)(bitpos / 8);
            a->bit = (uint8_t)(bitpos % 8);
        } else {
            a->start += index * sz;
        }
    }
    if ((uint64_t)a->start + a->size > 0xFFFFFF / 8 + 1)
        return fb_err_set(err, FB_EINVAL, "'%s' (element %u) is beyond the 2 MiB S7 address space", text, index);
    return 0;
}

uint32_t s7_addr_str_cap(const struct s7_addr *a)
{
    switch (a->type) {
        case S7_STRING: return 2u * a->n;  /* Latin-1 → UTF-8 */
        case S7_WSTRING: return 3u * a->n; /* UTF-16 unit → at most 3 UTF-8 bytes */
        case S7_CHAR: return 2;
        case S7_DATE: return 10;
        case S7_DT: return 23;
        default: return 0;
    }
}

const char *s7_addr_text(const struct s7_addr *a, char *buf, size_t len)
{
    switch (a->area) {
        case S7_AREA_DB: snprintf(buf, len, "DB%u.DBB%" PRIu32, a->db, a->start); break;
        case S7_AREA_C: snprintf(buf, len, "C%" PRIu32, a->start); break;
        case S7_AREA_T: snprintf(buf, len, "T%" PRIu32, a->start); break;
        default:
            snprintf(buf, len, "%cB%" PRIu32, a->area == S7_AREA_I ? 'I' : a->area == S7_AREA_Q ? 'Q' : 'M', a->start);
    }
    return buf;
}

/* ------------------------------------------------------------ value codec */
static int bcd(uint8_t b)
{
    int hi = b >> 4, lo = b & 15;
    return hi > 9 || lo > 9 ? -1 : hi * 10 + lo;
}
static uint8_t to_bcd(int v) { return (uint8_t)((v / 10) << 4 | (v % 10)); }

/* Days since 1970-01-01 ⇄ civil date (proleptic Gregorian). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}
static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}
static int days_in_month(int y, int m)
{
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}
#define DAYS_1990 7305 /* 1990-01-01 − 1970-01-01 */

/* Latin-1 → UTF-8 */
static size_t latin1_to_utf8(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x80) {
            if (k + 1 > cap) break;
            out[k++] = (char)p[i];
        } else {
            if (k + 2 > cap) break;
            out[k++] = (char)(0xC0 | p[i] >> 6);
            out[k++] = (char)(0x80 | (p[i] & 0x3F));
        }
    }
    return k;
}

static size_t put_utf8(uint32_t cp, char *out, size_t k, size_t cap)
{
    char t[4];
    size_t n;
    if (cp < 0x80) {
        t[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | cp >> 6);
        t[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | cp >> 12);
        t[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        t[0] = (char)(0xF0 | cp >> 18);
        t[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        t[2] = (char)(0x80 | (cp >> 6 & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    if (k + n > cap) return 0;
    memcpy(out + k, t, n);
    return n;
}

/* UTF-16BE (n units) → UTF-8; lone surrogates become U+FFFD. */
static size_t utf16_to_utf8(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = rd16(p + 2 * i);
        if (c >= 0xD800 && c <= 0xDBFF && i + 1 < n) {
            uint32_t c2 = rd16(p + 2 * i + 2);
            if (c2 >= 0xDC00 && c2 <= 0xDFFF) {
                c = 0x10000 + ((c - 0xD800) << 10) + (c2 - 0xDC00);
                i++;
            } else {
                c = 0xFFFD;
            }
        } else if (c >= 0xD800 && c <= 0xDFFF) {
            c = 0xFFFD;
        }
        size_t w = put_utf8(c, out, k, cap);
        if (!w) break;
        k += w;
    }
    return k;
}

/* Next code point of UTF-8 text; -1 when invalid. */
static int32_t next_cp(const uint8_t *s, size_t n, size_t *i)
{
    uint8_t c = s[*i];
    int len;
    uint32_t cp;
    if (c < 0x80) {
        (*i)++;
        return c;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        cp = c & 0x07;
    } else {
        return -1;
    }
    if (*i + (size_t)len > n) return -1;
    for (int k = 1; k < len; k++) {
        if ((s[*i + (size_t)k] & 0xC0) != 0x80) return -1;
        cp = cp << 6 | (s[*i + (size_t)k] & 0x3F);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    *i += (size_t)len;
    return (int32_t)cp;
}

static void set_str(struct fb_value *v, const char *p, size_t n)
{
    v->type = FB_T_STRING;
    v->s.p = p;
    v->s.len = (uint32_t)n;
}

uint32_t s7_decode(const struct s7_addr *a, const uint8_t *p, struct fb_value *v, char *sbuf, size_t sbuf_len)
{
    memset(v, 0, sizeof *v);
    v->type = a->fbtype;
    switch (a->type) {
        case S7_BOOL: v->b = (p[0] >> a->bit) & 1; break;
        case S7_BYTE:
        case S7_USINT: v->u = p[0]; break;
        case S7_SINT: v->i = (int8_t)p[0]; break;
        case S7_CHAR: set_str(v, sbuf, latin1_to_utf8(p, 1, sbuf, sbuf_len)); break;
        case S7_WORD:
        case S7_UINT:
        case S7_COUNTER:
        case S7_TIMER: v->u = rd16(p); break;
        case S7_INT: v->i = (int16_t)rd16(p); break;
        case S7_DWORD:
        case S7_UDINT: v->u = rd32(p); break;
        case S7_TOD:
            v->u = rd32(p);
            if (v->u > 86399999) return FB_Q_BAD_DECODING; /* not a time of day */
            break;
        case S7_DINT:
        case S7_TIME: v->i = (int32_t)rd32(p); break;
        case S7_REAL: {
            uint32_t u = rd32(p);
            float f;
            memcpy(&f, &u, 4);
            v->f = f;
            if (!isfinite(v->f)) return FB_Q_BAD_DECODING;
            break;
        }
        case S7_LWORD:
        case S7_ULINT: v->u = rd64(p); break;
        case S7_LINT: v->i = (int64_t)rd64(p); break;
        case S7_LREAL: {
            uint64_t u = rd64(p);
            memcpy(&v->f, &u, 8);
            if (!isfinite(v->f)) return FB_Q_BAD_DECODING;
            break;
        }
        case S7_DATE: {
            int y, m, d;
            civil_from_days(DAYS_1990 + rd16(p), &y, &m, &d);
            int n = snprintf(sbuf, sbuf_len, "%04d-%02d-%02d", y, m, d);
            set_str(v, sbuf, n < 0 ? 0 : (size_t)n < sbuf_len ? (size_t)n : sbuf_len - 1);
            break;
        }
        case S7_DT: {
            int yy = bcd(p[0]), mo = bcd(p[1]), d = bcd(p[2]), h = bcd(p[3]), mi = bcd(p[4]), s = bcd(p[5]),
                ms2 = bcd(p[6]), ms1 = p[7] >> 4;
            if (yy < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 59 ||
                ms2 < 0 || ms1 > 9)
                return FB_Q_BAD_DECODING;
            int y = yy >= 90 ? 1900 + yy : 2000 + yy;
            if (d > days_in_month(y, mo)) return FB_Q_BAD_DECODING;
            int n = snprintf(sbuf, sbuf_len, "%04d-%02d-%02dT%02d:%02d:%02d.%03d", y, mo, d, h, mi, s, ms2 * 10 + ms1);
            set_str(v, sbuf, n < 0 ? 0 : (size_t)n < sbuf_len ? (size_t)n : sbuf_len - 1);
            break;
        }
        case S7_STRING: {
            size_t cur = p[1];
            if (cur > p[0]) cur = p[0];
            if (cur > a->n) cur = a->n;
            set_str(v, sbuf, latin1_to_utf8(p + 2, cur, sbuf, sbuf_len));
            break;
        }
        case S7_WSTRING: {
            size_t max = rd16(p), cur = rd16(p + 2);
            if (cur > max) cur = max;
            if (cur > a->n) cur = a->n;
            set_str(v, sbuf, utf16_to_utf8(p + 4, cur, sbuf, sbuf_len));
            break;
        }
        default: return FB_Q_BAD_INTERNAL;
    }
    return FB_Q_GOOD;
}

/* "YYYY-MM-DD" then optionally [T ]HH:MM:SS[.mmm] */
static int parse_dt_text(const char *s, size_t n, bool want_time, int f[7])
{
    char buf[40];
    if (n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    memset(f, 0, 7 * sizeof f[0]);
    int pos = 0;
    if (sscanf(buf, "%4d-%2d-%2d%n", &f[0], &f[1], &f[2], &pos) != 3 || pos != 10) return -1;
    if (buf[pos]) {
        if (!want_time || (buf[pos] != 'T' && buf[pos] != ' ')) return -1;
        int p2 = 0;
        if (sscanf(buf + pos + 1, "%2d:%2d:%2d%n", &f[3], &f[4], &f[5], &p2) != 3 || p2 != 8) return -1;
        const char *r = buf + pos + 1 + p2;
        if (*r == '.') {
            r++;
            int ms = 0, dig = 0;
            while (isdigit((unsigned char)*r) && dig < 3) {
                ms = ms * 10 + (*r++ - '0');
                dig++;
            }
            if (!dig || isdigit((unsigned char)*r)) return -1;
            while (dig++ < 3) ms *= 10;
            f[6] = ms;
        }
        if (*r) return -1;
    }
    if (f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > days_in_month(f[0], f[1]) || f[3] > 23 || f[4] > 59 || f[5] > 59)
        return -1;
    return 0;
}

static int check_int(const struct fb_value *v, int64_t lo, uint64_t hi, uint64_t *raw, const struct s7_addr *a,
                     struct fb_err *err)
{
    if (v->type == FB_T_BOOL) {
        *raw = v->b;
        return 0;
    }
    if (fb_type_is_signed((enum fb_type)v->type)) {
        if (v->i < lo || (v->i > 0 && (uint64_t)v->i > hi))
            return fb_err_set(err, FB_ERANGE, "%" PRId64 " is outside %s (%" PRId64 "..%" PRIu64 ")", v->i,
                              types[a->type].name, lo, hi);
        *raw = (uint64_t)v->i;
        return 0;
    }
    if (fb_type_is_int((enum fb_type)v->type)) {
        if (v->u > hi)
            return fb_err_set(err, FB_ERANGE, "%" PRIu64 " is outside %s (%" PRId64 "..%" PRIu64 ")", v->u,
                              types[a->type].name, lo, hi);
        *raw = v->u;
        return 0;
    }
    if (fb_type_is_float((enum fb_type)v->type)) {
        double d = nearbyint(v->f);
        if (!isfinite(d) || d < (double)lo || d > (double)hi)
            return fb_err_set(err, FB_ERANGE, "%g is outside %s", v->f, types[a->type].name);
        *raw = d < 0 ? (uint64_t)(int64_t)d : (uint64_t)d;
        return 0;
    }
    return fb_err_set(err, FB_EINVAL, "%s needs a number", types[a->type].name);
}

/* Long on purpose: one case per S7 type, each a few lines of byte layout;
 * split up it would only scatter the table. */
int s7_encode(const struct s7_addr *a, const struct fb_value *v, uint8_t *out, size_t cap, struct fb_err *err)
{
    if (cap < a->size) return fb_err_set(err, FB_EINVAL, "buffer too small");
    uint64_t raw = 0;
    int rc = 0;
    bool is_str = v->type == FB_T_STRING;
    switch (a->type) {
        case S7_CHAR:
        case S7_DATE:
        case S7_DT:
        case S7_STRING:
        case S7_WSTRING:
            if (!is_str) return fb_err_set(err, FB_EINVAL, "%s needs a string value", types[a->type].name);
            break;
        case S7_REAL:
        case S7_LREAL: {
            double d;
            if (is_str || !fb_value_to_double(v, &d))
                return fb_err_set(err, FB_EINVAL, "%s needs a number", types[a->type].name);
            if (!isfinite(d)) return fb_err_set(err, FB_ERANGE, "%s cannot be NaN or infinite", types[a->type].name);
            if (a->type == S7_REAL) {
                if (fabs(d) > 3.4028234663852886e38) return fb_err_set(err, FB_ERANGE, "%g does not fit a REAL", d);
                float f = (float)d;
                uint32_t u;
                memcpy(&u, &f, 4);
                wr32(out, u);
            } else {
                uint64_t u;
                memcpy(&u, &d, 8);
                wr64(out, u);
            }
            return (int)a->size;
        }
        default:
            if (is_str) return fb_err_set(err, FB_EINVAL, "%s needs a number", types[a->type].name);
    }
    switch (a->type) {
        case S7_BOOL:
            if (v->type == FB_T_BOOL)
                raw = v->b;
            else if ((rc = check_int(v, 0, 1, &raw, a, err)))
                return rc;
            out[0] = (uint8_t)raw;
            return 1;
        case S7_BYTE:
        case S7_USINT:
            if ((rc = check_int(v, 0, 0xFF, &raw, a, err))) return rc;
            out[0] = (uint8_t)raw;
            break;
        case S7_SINT:
            if ((rc = check_int(v, -128, 127, &raw, a, err))) return rc;
            out[0] = (uint8_t)raw;
            break;
        case S7_WORD:
        case S7_UINT:
        case S7_COUNTER:
        case S7_TIMER:
            if ((rc = check_int(v, 0, 0xFFFF, &raw, a, err))) return rc;
            wr16(out, (uint16_t)raw);
            break;
        case S7_INT:
            if ((rc = check_int(v, INT16_MIN, INT16_MAX, &raw, a, err))) return rc;
            wr16(out, (uint16_t)raw);
            break;
        case S7_DWORD:
        case S7_UDINT:
            if ((rc = check_int(v, 0, UINT32_MAX, &raw, a, err))) return rc;
            wr32(out, (uint32_t)raw);
            break;
        case S7_TOD:
            if ((rc = check_int(v, 0, 86399999, &raw, a, err))) return rc;
            wr32(out, (uint32_t)raw);
            break;
        case S7_DINT:
        case S7_TIME:
            if ((rc = check_int(v, INT32_MIN, INT32_MAX, &raw, a, err))) return rc;
            wr32(out, (uint32_t)raw);
            break;
        case S7_LWORD:
        case S7_ULINT:
            if ((rc = check_int(v, 0, UINT64_MAX, &raw, a, err))) return rc;
            wr64(out, raw);
            break;
        case S7_LINT:
            if ((rc = check_int(v, INT64_MIN, INT64_MAX, &raw, a, err))) return rc;
            wr64(out, raw);
            break;
        case S7_CHAR: {
            size_t i = 0;
            int32_t cp = v->s.len ? next_cp((const uint8_t *)v->s.p, v->s.len, &i) : -1;
            if (cp < 0 || cp > 0xFF || i != v->s.len)
                return fb_err_set(err, FB_ERANGE, "CHAR takes exactly one Latin-1 character");
            out[0] = (uint8_t)cp;
            break;
        }
        case S7_DATE: {
            int f[7];
            if (parse_dt_text(v->s.p, v->s.len, false, f)) return fb_err_set(err, FB_EINVAL, "DATE needs YYYY-MM-DD");
            int64_t days = days_from_civil(f[0], f[1], f[2]) - DAYS_1990;
            if (days < 0 || days > 65535) return fb_err_set(err, FB_ERANGE, "DATE runs from 1990-01-01 to 2168-12-31");
            wr16(out, (uint16_t)days);
            break;
        }
        case S7_DT: {
            int f[7];
            if (parse_dt_text(v->s.p, v->s.len, true, f))
                return fb_err_set(err, FB_EINVAL, "DATE_AND_TIME needs YYYY-MM-DDTHH:MM:SS[.mmm]");
            if (f[0] < 1990 || f[0] > 2089) return fb_err_set(err, FB_ERANGE, "DATE_AND_TIME runs from 1990 to 2089");
            int64_t days = days_from_civil(f[0], f[1], f[2]);
            int wd = (int)(((days % 7) + 7 + 4) % 7) + 1; /* 1970-01-01 was a Thursday; 1 = Sunday */
            out[0] = to_bcd(f[0] % 100);
            out[1] = to_bcd(f[1]);
            out[2] = to_bcd(f[2]);
            out[3] = to_bcd(f[3]);
            out[4] = to_bcd(f[4]);
            out[5] = to_bcd(f[5]);
            out[6] = to_bcd(f[6] / 10);
            out[7] = (uint8_t)((f[6] % 10) << 4 | wd);
            break;
        }
        case S7_STRING: {
            size_t k = 0, i = 0;
            const uint8_t *s = (const uint8_t *)v->s.p;
            while (i < v->s.len) {
                int32_t cp = next_cp(s, v->s.len, &i);
                if (cp < 0 || cp > 0xFF)
                    return fb_err_set(err, FB_ERANGE, "STRING holds Latin-1 characters only (use WSTRING)");
                if (k >= a->n) return fb_err_set(err, FB_ERANGE, "text longer than STRING[%u]", a->n);
                out[2 + k++] = (uint8_t)cp;
            }
            out[0] = (uint8_t)a->n;
            out[1] = (uint8_t)k;
            memset(out + 2 + k, 0, a->n - k);
            break;
        }
        case S7_WSTRING: {
            size_t k = 0, i = 0;
            const uint8_t *s = (const uint8_t *)v->s.p;
            while (i < v->s.len) {
                int32_t cp = next_cp(s, v->s.len, &i);
                if (cp < 0) return fb_err_set(err, FB_EINVAL, "text is not valid UTF-8");
                unsigned units = cp >= 0x10000 ? 2 : 1;
                if (k + units > a->n) return fb_err_set(err, FB_ERANGE, "text longer than WSTRING[%u]", a->n);
                if (units == 2) {
                    uint32_t c = (uint32_t)cp - 0x10000;
                    wr16(out + 4 + 2 * k++, (uint16_t)(0xD800 + (c >> 10)));
                    wr16(out + 4 + 2 * k++, (uint16_t)(0xDC00 + (c & 0x3FF)));
                } else {
                    wr16(out + 4 + 2 * k++, (uint16_t)cp);
                }
            }
            wr16(out, a->n);
            wr16(out + 2, (uint16_t)k);
            memset(out + 4 + 2 * k, 0, 2 * (a->n - k));
            break;
        }
        default: return fb_err_set(err, FB_EINVAL, "cannot write this type");
    }
    return (int)a->size;
}

/* ----------------------------------------------------------------- frames */
static void put_tpkt_dt(uint8_t *buf, size_t len)
{
    buf[0] = 3;
    buf[1] = 0;
    wr16(buf + 2, (uint16_t)len);
    buf[4] = 2;
    buf[5] = 0xF0;
    buf[6] = 0x80;
}

size_t s7_build_cr(uint8_t *buf, size_t cap, uint16_t local_tsap, uint16_t remote_tsap)
{
    if (cap < 22) return 0;
    static const uint8_t hdr[] = {3, 0, 0, 22, 17, 0xE0, 0, 0, 0, 1, 0, 0xC0, 1, 0x0A, 0xC1, 2};
    memcpy(buf, hdr, sizeof hdr);
    wr16(buf + 16, local_tsap);
    buf[18] = 0xC2;
    buf[19] = 2;
    wr16(buf + 20, remote_tsap);
    return 22;
}

static void put_job(uint8_t *s7, uint16_t ref, uint16_t par, uint16_t data)
{
    s7[0] = 0x32;
    s7[1] = 1;
    s7[2] = s7[3] = 0;
    wr16(s7 + 4, ref);
    wr16(s7 + 6, par);
    wr16(s7 + 8, data);
}

size_t s7_build_setup(uint8_t *buf, size_t cap, uint16_t pdu_ref, uint16_t pdu)
{
    size_t len = 7 + 10 + 8;
    if (cap < len) return 0;
    put_tpkt_dt(buf, len);
    put_job(buf + 7, pdu_ref, 8, 0);
    uint8_t *p = buf + 17;
    p[0] = 0xF0;
    p[1] = 0;
    wr16(p + 2, 1); /* MaxAmQ calling: one job in flight */
    wr16(p + 4, 1);
    wr16(p + 6, pdu);
    return len;
}

static void put_item(uint8_t *p, const struct s7_item *it)
{
    p[0] = 0x12;
    p[1] = 0x0A;
    p[2] = 0x10;
    uint32_t addr;
    if (it->area == S7_AREA_C || it->area == S7_AREA_T) {
        p[3] = it->area; /* transport size COUNTER / TIMER */
        wr16(p + 4, (uint16_t)(it->len / 2));
        addr = it->start;
    } else if (it->is_bit) {
        p[3] = 0x01;
        wr16(p + 4, 1);
        addr = it->start * 8 + it->bit;
    } else {
        p[3] = 0x02;
        wr16(p + 4, it->len);
        addr = it->start * 8;
    }
    wr16(p + 6, it->area == S7_AREA_DB ? it->db : 0);
    p[8] = it->area;
    p[9] = (uint8_t)(addr >> 16);
    p[10] = (uint8_t)(addr >> 8);
    p[11] = (uint8_t)addr;
}

size_t s7_read_req_size(unsigned nitems) { return 12 + 12 * (size_t)nitems; }
size_t s7_read_reply_item_size(uint16_t len, bool last) { return 4 + (size_t)len + (last ? 0 : len & 1); }
uint32_t s7_max_read_len(int pdu) { return pdu > 18 ? (uint32_t)pdu - 18 : 0; }
uint32_t s7_max_write_len(int pdu) { return pdu > 28 ? (uint32_t)pdu - 28 : 0; }

size_t s7_build_read(uint8_t *buf, size_t cap, uint16_t pdu_ref, const struct s7_item *it, unsigned n)
{
    if (n == 0 || n > 255) return 0;
    size_t par = 2 + 12 * (size_t)n, len = 7 + 10 + par;
    if (cap < len || len > 0xFFFF) return 0;
    put_tpkt_dt(buf, len);
    put_job(buf + 7, pdu_ref, (uint16_t)par, 0);
    buf[17] = 0x04;
    buf[18] = (uint8_t)n;
    for (unsigned i = 0; i < n; i++) put_item(buf + 19 + 12 * i, &it[i]);
    return len;
}

size_t s7_build_write(uint8_t *buf, size_t cap, uint16_t pdu_ref, const struct s7_item *it, const uint8_t *const *data,
                      unsigned n)
{
    if (n == 0 || n > 255) return 0;
    size_t par = 2 + 12 * (size_t)n, dlen = 0;
    for (unsigned i = 0; i < n; i++) {
        dlen += 4 + it[i].len;
        if (i + 1 < n) dlen += it[i].len & 1;
    }
    size_t len = 7 + 10 + par + dlen;
    if (cap < len || len > 0xFFFF) return 0;
    put_tpkt_dt(buf, len);
    put_job(buf + 7, pdu_ref, (uint16_t)par, (uint16_t)dlen);
    buf[17] = 0x05;
    buf[18] = (uint8_t)n;
    for (unsigned i = 0; i < n; i++) put_item(buf + 19 + 12 * i, &it[i]);
    uint8_t *d = buf + 19 + 12 * n;
    for (unsigned i = 0; i < n; i++) {
        d[0] = 0;
        if (it[i].area == S7_AREA_C || it[i].area == S7_AREA_T) {
            d[1] = 0x09;
            wr16(d + 2, it[i].len);
        } else if (it[i].is_bit) {
            d[1] = 0x03;
            wr16(d + 2, 1);
        } else {
            d[1] = 0x04;
            wr16(d + 2, (uint16_t)(it[i].len * 8));
        }
        memcpy(d + 4, data[i], it[i].len);
        d += 4 + it[i].len;
        if (i + 1 < n && (it[i].len & 1)) *d++ = 0;
    }
    return len;
}

int s7_tpkt_len(const uint8_t *hdr, size_t n)
{
    if (n < 4 || hdr[0] != 3) return FB_EPROTO;
    int len = rd16(hdr + 2);
    if (len < 7 || len > S7_FRAME_MAX) return FB_EPROTO;
    return len;
}

int s7_cotp_parse(const uint8_t *frame, size_t n, struct s7_cotp *c)
{
    memset(c, 0, sizeof *c);
    int tl = s7_tpkt_len(frame, n);
    if (tl < 0 || (size_t)tl != n || n < 6) return FB_EPROTO;
    size_t li = frame[4];
    if (li < 1 || 5 + li > n) return FB_EPROTO;
    c->kind = frame[5] & 0xF0;
    if (c->kind == S7_COTP_DT) {
        if (li < 2) return FB_EPROTO;
        c->eot = (frame[6] & 0x80) != 0;
        c->payload = frame + 5 + li;
        c->payload_len = n - 5 - li;
    } else if (c->kind == S7_COTP_DR) {
        if (li >= 6) c->reason = frame[10]; /* LI 80 DSTREF SRCREF REASON */
    } else if (c->kind != S7_COTP_CC) {
        return FB_EPROTO;
    }
    return 0;
}

int s7_hdr_parse(const uint8_t *pdu, size_t n, struct s7_hdr *h)
{
    memset(h, 0, sizeof *h);
    if (n < S7_HDR_JOB || pdu[0] != 0x32) return FB_EPROTO;
    h->rosctr = pdu[1];
    h->pdu_ref = rd16(pdu + 4);
    h->par_len = rd16(pdu + 6);
    h->data_len = rd16(pdu + 8);
    size_t hl = S7_HDR_JOB;
    if (h->rosctr == 2 || h->rosctr == 3) {
        if (n < S7_HDR_ACK) return FB_EPROTO;
        h->err_class = pdu[10];
        h->err_code = pdu[11];
        hl = S7_HDR_ACK;
    } else {
        return FB_EPROTO; /* a client only expects Ack / Ack_Data */
    }
    if (hl + h->par_len + h->data_len > n) return FB_EPROTO;
    h->par = pdu + hl;
    h->data = pdu + hl + h->par_len;
    return 0;
}

int s7_parse_setup_reply(const uint8_t *pdu, size_t n, uint16_t pdu_ref, int *neg_pdu, uint16_t *herr)
{
    struct s7_hdr h;
    *herr = 0;
    if (s7_hdr_parse(pdu, n, &h) || h.pdu_ref != pdu_ref) return FB_EPROTO;
    if (s7_hdr_error(&h)) {
        *herr = s7_hdr_error(&h);
        return FB_EEXCEPTION;
    }
    if (h.par_len < 8 || h.par[0] != 0xF0) return FB_EPROTO;
    int v = rd16(h.par + 6);
    if (v < 64) return FB_EPROTO; /* cannot carry a single useful item */
    *neg_pdu = v;
    return 0;
}

int s7_parse_read_reply(const uint8_t *pdu, size_t n, uint16_t pdu_ref, const struct s7_item *it, unsigned nit,
                        struct s7_read_result *res, uint16_t *herr)
{
    struct s7_hdr h;
    *herr = 0;
    if (s7_hdr_parse(pdu, n, &h) || h.pdu_ref != pdu_ref) return FB_EPROTO;
    if (s7_hdr_error(&h)) {
        *herr = s7_hdr_error(&h);
        return FB_EEXCEPTION;
    }
    if (h.par_len < 2 || h.par[0] != 0x04 || h.par[1] != nit) return FB_EPROTO;
    const uint8_t *d = h.data, *end = h.data + h.data_len;
    for (unsigned i = 0; i < nit; i++) {
        if (end - d < 4) return FB_EPROTO;
        res[i].rc = d[0];
        res[i].data = NULL;
        uint8_t ts = d[1];
        size_t len = rd16(d + 2);
        if (ts == 0x03 || ts == 0x04 || ts == 0x05) len = (len + 7) / 8;
        d += 4;
        if (d[-4] != S7_RC_OK) {
            /* failed items carry no data, whatever their length field says
             * (snap7 sends "rc 00 0004", CPUs "rc 00 0000") */
            len = 0;
        } else {
            if (len > (size_t)(end - d)) return FB_EPROTO;
            if (len != it[i].len) return FB_EPROTO;
            res[i].data = d;
            d += len;
        }
        if (i + 1 < nit && (len & 1)) {
            if (d >= end) return FB_EPROTO;
            d++;
        }
    }
    return 0;
}

int s7_parse_write_reply(const uint8_t *pdu, size_t n, uint16_t pdu_ref, unsigned nit, uint8_t *rc, uint16_t *herr)
{
    struct s7_hdr h;
    *herr = 0;
    if (s7_hdr_parse(pdu, n, &h) || h.pdu_ref != pdu_ref) return FB_EPROTO;
    if (s7_hdr_error(&h)) {
        *herr = s7_hdr_error(&h);
        return FB_EEXCEPTION;
    }
    if (h.par_len < 2 || h.par[0] != 0x05 || h.par[1] != nit || h.data_len < nit) return FB_EPROTO;
    for (unsigned i = 0; i < nit; i++) rc[i] = h.data[i];
    return 0;
}

/* ----------------------------------------------------------------- errors */
static const struct {
    uint8_t rc;
    uint32_t q;
    const char *text;
} item_tab[] = {
    {0x01, FB_Q_BAD_DEVICE_FAILURE, "hardware fault in the PLC (item return code 0x01)"},
    {0x03, FB_Q_BAD_NOT_READABLE,
     "access denied (item return code 0x03): on an S7-1200/1500 enable \"Permit access with "
     "PUT/GET communication\" and turn off \"Optimized block access\" for the DB, then download"},
    {0x05, FB_Q_BAD_NODE_UNKNOWN,
     "address out of range (item return code 0x05): the DB or area is shorter than the address"},
    {0x06, FB_Q_BAD_TYPE_MISMATCH, "data type not supported (item return code 0x06)"},
    {0x07, FB_Q_BAD_TYPE_MISMATCH, "data type or size inconsistent (item return code 0x07)"},
    {0x0A, FB_Q_BAD_NODE_UNKNOWN,
     "object does not exist (item return code 0x0A): no such DB in the PLC, or the area is "
     "not available"},
};

uint32_t s7_item_quality(uint8_t rc, bool write)
{
    if (rc == S7_RC_OK) return FB_Q_GOOD;
    for (size_t i = 0; i < sizeof item_tab / sizeof item_tab[0]; i++)
        if (item_tab[i].rc == rc)
            return write && item_tab[i].q == FB_Q_BAD_NOT_READABLE ? FB_Q_BAD_NOT_WRITABLE : item_tab[i].q;
    return FB_Q_BAD_DEVICE_FAILURE;
}

const char *s7_item_text(uint8_t rc)
{
    if (rc == S7_RC_OK) return "ok";
    for (size_t i = 0; i < sizeof item_tab / sizeof item_tab[0]; i++)
        if (item_tab[i].rc == rc) return item_tab[i].text;
    return "unknown item return code";
}

static const struct {
    uint16_t code;
    uint32_t q;
    const char *text;
} hdr_tab[] = {
    {0x8104, FB_Q_BAD_NOT_READABLE,
     "function not available (0x8104): on an S7-1200/1500 enable \"Permit access with PUT/GET "
     "communication\" (and turn off \"Optimized block access\" for the DBs), then download"},
    {0x8304, FB_Q_BAD_NOT_WRITABLE,
     "the PLC refused the job (0x8304): on an S7-1200/1500 enable PUT/GET, give full access and "
     "turn off optimized block access"},
    {0x8500, FB_Q_BAD_COMM, "PDU size exceeded (0x8500): lower pdu= in the URL"},
    {0xD209, FB_Q_BAD_NODE_UNKNOWN, "block not found (0xD209)"},
    {0xD241, FB_Q_BAD_NOT_READABLE, "protection level: the CPU needs a password (0xD241)"},
    {0xD602, FB_Q_BAD_NOT_READABLE, "wrong password (0xD602)"},
};

uint32_t s7_header_quality(uint16_t herr, bool write)
{
    for (size_t i = 0; i < sizeof hdr_tab / sizeof hdr_tab[0]; i++)
        if (hdr_tab[i].code == herr)
            return write && hdr_tab[i].q == FB_Q_BAD_NOT_READABLE ? FB_Q_BAD_NOT_WRITABLE : hdr_tab[i].q;
    if ((herr >> 8) == 0x87) return write ? FB_Q_BAD_NOT_WRITABLE : FB_Q_BAD_NOT_READABLE;
    return FB_Q_BAD_DEVICE_FAILURE;
}

const char *s7_header_text(uint16_t herr)
{
    for (size_t i = 0; i < sizeof hdr_tab / sizeof hdr_tab[0]; i++)
        if (hdr_tab[i].code == herr) return hdr_tab[i].text;
    switch (herr >> 8) {
        case 0x81: return "application relationship error";
        case 0x82: return "object definition error";
        case 0x83: return "no resources available in the PLC";
        case 0x84: return "error on service processing";
        case 0x85: return "error on supplies";
        case 0x87: return "access error: check PUT/GET and the CPU's protection level";
        default: return "unknown S7 error";
    }
}

const char *s7_cotp_dr_text(uint8_t reason)
{
    switch (reason) {
        case 0x00: return "reason not specified";
        case 0x01: return "congestion at the PLC";
        case 0x02: return "session entity not attached to the TSAP";
        case 0x03: return "address unknown";
        case 0x80: return "normal disconnect";
        case 0x81: return "remote end congested";
        case 0x82: return "connection negotiation failed";
        case 0x83: return "duplicate source reference";
        case 0x84: return "mismatched references";
        case 0x85: return "protocol error";
        case 0x87: return "reference overflow";
        case 0x88: return "connection request refused";
        case 0x8A: return "header or parameter length invalid";
        default: return "unknown reason";
    }
}

/* ---------------------------------------------------------------- planner */
static int ptag_cmp(const void *x, const void *y)
{
    const struct s7_ptag *a = x, *b = y;
    if (a->a->area != b->a->area) return a->a->area < b->a->area ? -1 : 1;
    if (a->a->db != b->a->db) return a->a->db < b->a->db ? -1 : 1;
    if (a->a->start != b->a->start) return a->a->start < b->a->start ? -1 : 1;
    if (a->a->bit != b->a->bit) return a->a->bit < b->a->bit ? -1 : 1;
    return a->range < b->range ? -1 : a->range > b->range; /* stable: given order */
}

int s7_plan_build(const uint32_t *tag_ids, const struct s7_addr *const *addrs, uint32_t n, int max_gap, int max_items,
                  struct s7_plan **out, struct fb_err *err)
{
    struct s7_plan *p = calloc(1, sizeof *p);
    if (!p) return fb_err_set(err, FB_ENOMEM, "out of memory");
    p->tags = calloc(n ? n : 1, sizeof *p->tags);
    if (!p->tags) {
        free(p);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    p->order = calloc(n ? n : 1, sizeof *p->order);
    if (!p->order) {
        free(p->tags);
        free(p);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < n; i++) {
        p->tags[i].tag = tag_ids[i];
        p->tags[i].a = addrs[i];
        p->tags[i].range = i; /* the given position, until sorted */
    }
    p->ntags = n;
    p->max_gap = max_gap < 0 ? 0 : max_gap;
    p->max_items = max_items < 1 || max_items > S7_MAX_ITEMS ? S7_MAX_ITEMS : max_items;
    qsort(p->tags, n, sizeof *p->tags, ptag_cmp);
    for (uint32_t i = 0; i < n; i++) p->order[p->tags[i].range] = i;
    *out = p;
    return 0;
}

/* byte extent of an address inside its area (C/T: 2 bytes per element) */
static void extent(const struct s7_addr *a, uint32_t *start, uint32_t *len)
{
    if (a->area == S7_AREA_C || a->area == S7_AREA_T) {
        *start = a->start * 2;
        *len = 2;
    } else {
        *start = a->start;
        *len = a->size;
    }
}

int s7_plan_layout(struct s7_plan *p, int pdu, struct fb_err *err)
{
    uint32_t maxlen = s7_max_read_len(pdu) & ~1u;
    if (pdu < S7_PDU_MIN / 4 || maxlen < 2) return fb_err_set(err, FB_EINVAL, "PDU size %d too small", pdu);
    free(p->ranges);
    free(p->chunks);
    free(p->reqs);
    free(p->data);
    p->ranges = NULL;
    p->chunks = NULL;
    p->reqs = NULL;
    p->data = NULL;
    p->nranges = p->nchunks = p->nreqs = 0;
    p->data_len = 0;
    p->pdu = 0;
    uint32_t n = p->ntags;
    p->ranges = calloc(n ? n : 1, sizeof *p->ranges);
    if (!p->ranges) return fb_err_set(err, FB_ENOMEM, "out of memory");
    /* 1. ranges: merge neighbours in the same area/DB within max_gap */
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct s7_addr *a = p->tags[i].a;
        uint32_t s, l;
        extent(a, &s, &l);
        struct s7_range *r = p->nranges ? &p->ranges[p->nranges - 1] : NULL;
        bool merge = r && !p->tags[i].solo && !p->tags[r->first + r->n - 1].solo && r->area == a->area &&
                     r->db == a->db && (uint64_t)s <= (uint64_t)r->start + r->len + (uint32_t)p->max_gap;
        if (merge) {
            uint32_t end = s + l > r->start + r->len ? s + l : r->start + r->len;
            total += end - (r->start + r->len);
            r->len = end - r->start;
            r->n++;
        } else {
            r = &p->ranges[p->nranges++];
            memset(r, 0, sizeof *r);
            r->area = a->area;
            r->db = a->db;
            r->start = s;
            r->len = l;
            r->first = i;
            r->n = 1;
            total += l;
        }
        p->tags[i].range = (uint32_t)(r - p->ranges);
        p->tags[i].off = s - r->start;
    }
    if (total > 64u * 1024 * 1024) return fb_err_set(err, FB_EINVAL, "plan reads too much data");
    /* 2. chunks: cut ranges to what one item can carry */
    uint64_t nch = 0;
    for (uint32_t r = 0; r < p->nranges; r++) nch += (p->ranges[r].len + maxlen - 1) / maxlen;
    p->chunks = calloc(nch ? nch : 1, sizeof *p->chunks);
    p->reqs = calloc(nch ? nch : 1, sizeof *p->reqs);
    p->data = malloc(total ? total : 1);
    if (!p->chunks || !p->reqs || !p->data) return fb_err_set(err, FB_ENOMEM, "out of memory");
    uint32_t off = 0;
    for (uint32_t r = 0; r < p->nranges; r++) {
        struct s7_range *rg = &p->ranges[r];
        rg->buf_off = off;
        off += rg->len;
        for (uint32_t o = 0; o < rg->len; o += maxlen) {
            struct s7_chunk *c = &p->chunks[p->nchunks++];
            c->range = r;
            c->off = o;
            c->len = rg->len - o < maxlen ? rg->len - o : maxlen;
        }
    }
    p->data_len = off;
    /* 3. requests: pack chunks greedily under both PDU formulas */
    size_t reply = 0;
    for (uint32_t c = 0; c < p->nchunks; c++) {
        struct s7_req *q = p->nreqs ? &p->reqs[p->nreqs - 1] : NULL;
        size_t item = 4 + p->chunks[c].len + (p->chunks[c].len & 1); /* padded if not last */
        if (q && q->n < (uint32_t)p->max_items && s7_read_req_size(q->n + 1) <= (size_t)pdu &&
            reply + 4 + p->chunks[c].len <= (size_t)pdu) {
            q->n++;
            reply += item;
        } else {
            q = &p->reqs[p->nreqs++];
            q->first = c;
            q->n = 1;
            reply = 14 + item;
        }
    }
    p->pdu = pdu;
    return 0;
}

void s7_plan_split(struct s7_plan *p, uint32_t r)
{
    if (r >= p->nranges) return;
    for (uint32_t i = 0; i < p->ranges[r].n; i++) p->tags[p->ranges[r].first + i].solo = true;
    p->pdu = 0; /* force a new layout */
}

void s7_plan_free(struct s7_plan *p)
{
    if (!p) return;
    free(p->tags);
    free(p->order);
    free(p->ranges);
    free(p->chunks);
    free(p->reqs);
    free(p->data);
    free(p);
}
