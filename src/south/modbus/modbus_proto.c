/* modbus_proto.c — Modbus options, addresses, codec and read planner, no I/O.
 *
 * Addresses.  `WHERE[:TYPE]`, WHERE one of
 *     hr:N  ir:N  co:N  di:N        0-based PDU address (N - base with base=1)
 *     hr:N.B  ir:N.B                bit B (0 = LSB .. 15) of a register
 *     40001 30001 00001 10001       Modicon 1-based, 5 digits (to 9999)
 *     400001 ... 465536             the 6-digit form covering the full range
 * TYPE one of bool int16 uint16 int32 uint32 int64 uint64 float32 float64
 * string[N] bcd16 bcd32.  Tables are data (type_tab, order_tab), not switches.
 *
 * Byte order.  Registers are big-endian 16-bit words; the bytes of a value
 * are named A (most significant) B C D ... .  Every order is two flags:
 *     swap_words  the registers come in reverse order      (CDAB, GHEFCDAB)
 *     swap_bytes  the two bytes inside each register swap (BADC, BADCFEHG)
 * both give DCBA / HGFEDCBA.  Decoding first puts the registers back into
 * ABCD… byte order, then reads a big-endian integer; encoding is the exact
 * inverse, so the round trip is an identity for every type and order.
 *
 *     float32 1.5 = 0x3FC00000    ABCD: 3FC0 0000   CDAB: 0000 3FC0
 *                                 BADC: C03F 0000   DCBA: 0000 C03F
 *
 * Planner.  The tags of a poll group are sorted by (table, address) and
 * merged into blocks while the gap between neighbours is <= max_gap and the
 * block stays within max_regs (125) / max_bits (2000).  A value is never
 * split across blocks.  A device that answers exception 02 (illegal data
 * address) for a merged block has a hole in its map: the block is replaced by
 * one block per value, in place, and stays so (the plan remembers).  The
 * block array is allocated with one slot per item up front, so a split never
 * allocates.
 */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "south/modbus/modbus_proto.h"

/* ------------------------------------------------------------------ helpers */
static bool parse_uint(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 20) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > max) return false;
    }
    *out = v;
    return true;
}

static bool parse_uint_z(const char *s, uint64_t max, uint64_t *out) { return parse_uint(s, strlen(s), max, out); }

static const char *const table_names[] = {"hr", "ir", "co", "di"};

const char *mb_table_name(int table) { return table >= 0 && table < 4 ? table_names[table] : "?"; }

/* ------------------------------------------------------------------ options */
enum opt_kind { K_INT, K_DUR, K_CHOICE };
struct opt_def {
    const char *key;
    int kind;
    int transport; /* -1 both, else only this transport */
    int64_t lo, hi;
};
static const struct opt_def opt_tab[] = {
    {"unit", K_INT, -1, 0, 255},
    {"timeout", K_DUR, -1, 1, 0},
    {"delay", K_DUR, -1, 0, 0},
    {"max_gap", K_INT, -1, 0, MB_MAX_READ_BITS},
    {"max_regs", K_INT, -1, 1, MB_MAX_READ_REGS},
    {"max_bits", K_INT, -1, 1, MB_MAX_READ_BITS},
    {"base", K_INT, -1, 0, 1},
    {"write_single", K_CHOICE, -1, 0, 0},
    {"write_coil", K_CHOICE, -1, 0, 0},
    {"bit_write", K_CHOICE, -1, 0, 0},
    {"baud", K_INT, MB_RTU, 50, 4000000},
    {"parity", K_CHOICE, MB_RTU, 0, 0},
    {"data", K_INT, MB_RTU, 5, 8},
    {"stop", K_INT, MB_RTU, 1, 2},
};

static int set_choice(struct mb_opts *o, const char *k, const char *v, struct fb_err *err)
{
    if (strcmp(k, "write_single") == 0) {
        if (strcasecmp(v, "fc6") == 0)
            o->write_single_fc16 = false;
        else if (strcasecmp(v, "fc16") == 0)
            o->write_single_fc16 = true;
        else
            goto bad;
    } else if (strcmp(k, "write_coil") == 0) {
        if (strcasecmp(v, "fc5") == 0)
            o->write_coil_fc15 = false;
        else if (strcasecmp(v, "fc15") == 0)
            o->write_coil_fc15 = true;
        else
            goto bad;
    } else if (strcmp(k, "bit_write") == 0) {
        if (strcasecmp(v, "fc22") == 0)
            o->bit_write_rmw = false;
        else if (strcasecmp(v, "rmw") == 0)
            o->bit_write_rmw = true;
        else
            goto bad;
    } else { /* parity */
        if (strlen(v) != 1 || !strchr("NEOneo", v[0])) goto bad;
        o->parity = (char)toupper((unsigned char)v[0]);
    }
    return 0;
bad:;
    const char *expect = strcmp(k, "write_single") == 0 ? "fc6 or fc16"
                         : strcmp(k, "write_coil") == 0 ? "fc5 or fc15"
                         : strcmp(k, "bit_write") == 0  ? "fc22 or rmw"
                                                        : "N, E or O";
    return fb_err_set(err, FB_EINVAL, "bad value '%s' for %s (expected %s)", v, k, expect);
}

int mb_opts_parse(const struct fb_url *u, int64_t def_timeout_ns, int64_t def_delay_ns, struct mb_opts *o,
                  struct fb_err *err)
{
    memset(o, 0, sizeof *o);
    o->port = 502;
    o->baud = 9600;
    o->parity = 'N';
    o->data_bits = 8;
    o->stop_bits = 1;
    o->unit = 1;
    o->timeout_ns = def_timeout_ns > 0 ? def_timeout_ns : 1000000000;
    o->delay_ns = def_delay_ns > 0 ? def_delay_ns : 0;
    o->max_gap = 10;
    o->max_regs = MB_MAX_READ_REGS;
    o->max_bits = MB_MAX_READ_BITS;

    const char *scheme = u->scheme ? u->scheme : "";
    const char *host = u->host ? u->host : "";
    const char *path = u->path ? u->path : "";
    if (strcmp(scheme, "modbus-tcp") == 0) {
        o->transport = MB_TCP;
        if (!host[0])
            return fb_err_set(err, FB_EINVAL, "modbus-tcp URL needs a host (modbus-tcp://127.0.0.1:502?unit=1)");
        if (path[0] && strcmp(path, "/") != 0)
            return fb_err_set(err, FB_EINVAL, "modbus-tcp URL takes no path ('%s')", path);
        if (strlen(host) >= sizeof o->host) return fb_err_set(err, FB_EINVAL, "host name too long");
        snprintf(o->host, sizeof o->host, "%s", host);
        if (u->port) {
            if (u->port < 1 || u->port > 65535) return fb_err_set(err, FB_EINVAL, "bad port %d", u->port);
            o->port = u->port;
        }
    } else if (strcmp(scheme, "modbus-rtu") == 0) {
        o->transport = MB_RTU;
        if (host[0] || u->port)
            return fb_err_set(err, FB_EINVAL,
                              "modbus-rtu URL takes a device path, not a host: "
                              "modbus-rtu:///dev/ttyUSB0 (three slashes)");
        if (path[0] != '/' || !path[1])
            return fb_err_set(err, FB_EINVAL, "modbus-rtu URL needs a serial device: modbus-rtu:///dev/ttyUSB0");
        if (strlen(path) >= sizeof o->device) return fb_err_set(err, FB_EINVAL, "serial device path too long");
        snprintf(o->device, sizeof o->device, "%s", path);
    } else {
        return fb_err_set(err, FB_EINVAL, "scheme '%s' is not Modbus (modbus-tcp, modbus-rtu)", scheme);
    }

    for (int i = 0; i < u->nq; i++) {
        const char *k = u->q[i].k ? u->q[i].k : "", *v = u->q[i].v ? u->q[i].v : "";
        const struct opt_def *d = NULL;
        for (size_t j = 0; j < sizeof opt_tab / sizeof opt_tab[0]; j++)
            if (strcmp(opt_tab[j].key, k) == 0) d = &opt_tab[j];
        if (!d || (d->transport >= 0 && d->transport != o->transport))
            return fb_err_set(err, FB_EINVAL,
                              "unknown Modbus option '%s' (expected unit, timeout, delay, "
                              "max_gap, max_regs, max_bits, base, write_single, write_coil, "
                              "bit_write%s)",
                              k, o->transport == MB_RTU ? ", baud, parity, data, stop" : "");
        if (d->kind == K_INT) {
            uint64_t x;
            if (!parse_uint_z(v, (uint64_t)d->hi, &x) || (int64_t)x < d->lo)
                return fb_err_set(err, FB_EINVAL, "bad value '%s' for %s (expected %" PRId64 "..%" PRId64 ")", v, k,
                                  d->lo, d->hi);
            int xi = (int)x;
            if (!strcmp(k, "unit"))
                o->unit = xi;
            else if (!strcmp(k, "max_gap"))
                o->max_gap = xi;
            else if (!strcmp(k, "max_regs"))
                o->max_regs = xi;
            else if (!strcmp(k, "max_bits"))
                o->max_bits = xi;
            else if (!strcmp(k, "base"))
                o->base = xi;
            else if (!strcmp(k, "baud"))
                o->baud = xi;
            else if (!strcmp(k, "data"))
                o->data_bits = xi;
            else
                o->stop_bits = xi;
        } else if (d->kind == K_DUR) {
            int64_t ns;
            if (fb_parse_duration(v, &ns) != 0 || ns < d->lo || ns > 3600LL * 1000000000LL)
                return fb_err_set(err, FB_EINVAL, "bad duration '%s' for %s (e.g. 500ms, 1s)", v, k);
            if (!strcmp(k, "timeout"))
                o->timeout_ns = ns;
            else
                o->delay_ns = ns;
        } else {
            int rc = set_choice(o, k, v, err);
            if (rc) return rc;
        }
    }
    if (o->transport == MB_TCP && o->unit > 247 && o->unit != 255)
        return fb_err_set(err, FB_EINVAL, "unit %d out of range (0..247 or 255 for TCP)", o->unit);
    if (o->transport == MB_RTU && (o->unit < 1 || o->unit > 247))
        return fb_err_set(err, FB_EINVAL, "unit %d out of range (1..247 for RTU)", o->unit);
    return 0;
}

char *mb_opts_conn_key(const struct mb_opts *o)
{
    char buf[300];
    if (o->transport == MB_TCP)
        snprintf(buf, sizeof buf, "tcp:%s:%d", o->host, o->port);
    else
        snprintf(buf, sizeof buf, "rtu:%s", o->device);
    return strdup(buf);
}

/* ------------------------------------------------------------------ address */
struct type_def {
    const char *name;
    uint8_t type;
    uint8_t nregs; /* 0: string, from its length */
    bool bcd;
};
static const struct type_def type_tab[] = {
    {"bool", FB_T_BOOL, 1, false},     {"int16", FB_T_INT16, 1, false},     {"uint16", FB_T_UINT16, 1, false},
    {"int32", FB_T_INT32, 2, false},   {"uint32", FB_T_UINT32, 2, false},   {"int64", FB_T_INT64, 4, false},
    {"uint64", FB_T_UINT64, 4, false}, {"float32", FB_T_FLOAT32, 2, false}, {"float64", FB_T_FLOAT64, 4, false},
    {"bcd16", FB_T_UINT16, 1, true},   {"bcd32", FB_T_UINT32, 2, true},     {"string", FB_T_STRING, 0, false},
};
#define TYPE_LIST                                                                                                      \
    "bool, int16, uint16, int32, uint32, int64, uint64, float32, float64, "                                            \
    "string[N], bcd16, bcd32"

static const struct type_def *type_by_fb(uint8_t t)
{
    for (size_t i = 0; i < sizeof type_tab / sizeof type_tab[0]; i++)
        if (type_tab[i].type == t && !type_tab[i].bcd) return &type_tab[i];
    return NULL;
}

struct order_def {
    const char *name;
    bool sw, sb;
    uint8_t width; /* 0: any, 16: one register, 64: 64-bit only */
};
static const struct order_def order_tab[] = {
    {"ABCD", false, false, 0},      {"CDAB", true, false, 0},      {"BADC", false, true, 0},
    {"DCBA", true, true, 0},        {"AB", false, false, 16},      {"BA", false, true, 16},
    {"ABCDEFGH", false, false, 64}, {"GHEFCDAB", true, false, 64}, {"BADCFEHG", false, true, 64},
    {"HGFEDCBA", true, true, 64},
};

static const char *type_label(const struct mb_addr *a, char *buf, size_t len)
{
    if (a->bcd) return a->type == FB_T_UINT16 ? "bcd16" : "bcd32";
    if (a->type == FB_T_STRING) {
        snprintf(buf, len, "string[%u]", (unsigned)mb_str_len(a));
        return buf;
    }
    return fb_type_name((enum fb_type)a->type);
}

static int apply_order(const struct mb_addr_in *in, struct mb_addr *a, struct fb_err *err)
{
    if (!in->order || !in->order[0]) return 0;
    const struct order_def *od = NULL;
    for (size_t i = 0; i < sizeof order_tab / sizeof order_tab[0]; i++)
        if (strcasecmp(order_tab[i].name, in->order) == 0) od = &order_tab[i];
    if (!od)
        return fb_err_set(err, FB_EINVAL,
                          "unknown order '%s' (expected ABCD, CDAB, BADC, DCBA, ABCDEFGH, "
                          "GHEFCDAB, BADCFEHG or HGFEDCBA)",
                          in->order);
    char tb[24];
    const char *tn = type_label(a, tb, sizeof tb);
    bool bits = a->table == MB_CO || a->table == MB_DI || a->has_bit;
    bool ok;
    if (bits)
        ok = !od->sw && !od->sb; /* ABCD / AB: harmless default */
    else if (a->count == 1 || a->type == FB_T_STRING)
        ok = !od->sw && od->width != 64;
    else if (a->count == 2)
        ok = od->width != 64 && od->width != 16;
    else
        ok = od->width != 16;
    if (!ok) {
        if (!bits && a->count == 2 && od->width == 64)
            return fb_err_set(err, FB_EINVAL, "order %s is for 64-bit values, not %s (use ABCD, CDAB, BADC or DCBA)",
                              od->name, tn);
        return fb_err_set(err, FB_EINVAL, "order %s is not valid for %s%s", od->name, tn,
                          bits                                      ? " (a single bit has no byte order)"
                          : a->count == 1 || a->type == FB_T_STRING ? " (one register: only ABCD or BADC)"
                                                                    : "");
    }
    a->swap_words = od->sw;
    a->swap_bytes = od->sb;
    return 0;
}

/* Parses ":TYPE" text into a type_def + string length. */
static int parse_type(const char *t, const char *text, const struct type_def **td, uint32_t *slen, struct fb_err *err)
{
    *slen = 0;
    if (strncasecmp(t, "string", 6) == 0) {
        *td = &type_tab[sizeof type_tab / sizeof type_tab[0] - 1];
        const char *p = t + 6;
        if (!*p) return 0; /* length from the tag's `type:`/str_len, checked later */
        size_t pl = strlen(p);
        uint64_t n;
        if (p[0] != '[' || p[pl - 1] != ']' || !parse_uint(p + 1, pl - 2, 100000, &n))
            return fb_err_set(err, FB_EINVAL, "bad string type '%s' in '%s' (expected string[N])", t, text);
        if (n < 1 || n > MB_MAX_STR_LEN)
            return fb_err_set(err, FB_EINVAL, "string length %u in '%s' out of range (1..%d)", (unsigned)n, text,
                              MB_MAX_STR_LEN);
        *slen = (uint32_t)n;
        return 0;
    }
    for (size_t i = 0; i < sizeof type_tab / sizeof type_tab[0]; i++)
        if (strcasecmp(type_tab[i].name, t) == 0) {
            *td = &type_tab[i];
            return 0;
        }
    return fb_err_set(err, FB_EINVAL, "unknown type '%s' in '%s' (expected " TYPE_LIST ")", t, text);
}

/* Long on purpose: the address grammar (table, 0- and 1-based forms, bit,
 * type, order, count) checked in one pass, each error naming its part. */
int mb_addr_parse(const struct mb_addr_in *in, struct mb_addr *a, struct fb_err *err)
{
    memset(a, 0, sizeof *a);
    const char *text = in->text ? in->text : "";
    char buf[128];
    size_t tl = strlen(text);
    if (tl == 0) return fb_err_set(err, FB_EINVAL, "empty Modbus address");
    if (tl >= sizeof buf) return fb_err_set(err, FB_EINVAL, "Modbus address too long");
    memcpy(buf, text, tl + 1);

    /* split WHERE and TYPE */
    char *where = buf, *tsuffix = NULL, *num;
    bool classic = false;
    if (isdigit((unsigned char)buf[0])) {
        classic = true;
        num = buf;
        char *c = strchr(buf, ':');
        if (c) {
            *c = 0;
            tsuffix = c + 1;
        }
    } else {
        char *c = strchr(buf, ':');
        if (c) *c = 0;
        int t = -1;
        for (int i = 0; i < 4; i++)
            if (strcasecmp(where, table_names[i]) == 0) t = i;
        if (t < 0 || !c)
            return fb_err_set(err, FB_EINVAL, "unknown table '%s' in '%s' (expected hr, ir, co, di or 40001-style)",
                              where, text);
        a->table = (uint8_t)t;
        num = c + 1;
        c = strchr(num, ':');
        if (c) {
            *c = 0;
            tsuffix = c + 1;
        }
    }
    /* number and optional .bit */
    char *dot = strchr(num, '.');
    uint64_t bit = 0;
    if (dot) {
        *dot = 0;
        if (!parse_uint_z(dot + 1, 15, &bit))
            return fb_err_set(err, FB_EINVAL, "bad bit number '%s' in '%s' (expected 0..15)", dot + 1, text);
        a->has_bit = true;
        a->bit = (uint8_t)bit;
    }
    uint64_t n;
    uint64_t pdu; /* 0-based */
    if (classic) {
        size_t nl = strlen(num);
        if (!parse_uint(num, nl, UINT64_MAX / 16, &n))
            return fb_err_set(err, FB_EINVAL, "bad address '%s' in '%s'", num, text);
        if (nl != 5 && nl != 6)
            return fb_err_set(err, FB_EINVAL,
                              "'%s' is not a Modbus address: use hr:N/ir:N/co:N/di:N or the "
                              "5/6-digit forms 40001 / 400001",
                              num);
        static const int8_t by_digit[10] = {MB_CO, MB_DI, -1, MB_IR, MB_HR, -1, -1, -1, -1, -1};
        int t = by_digit[num[0] - '0'];
        if (t < 0)
            return fb_err_set(err, FB_EINVAL,
                              "'%s' is not a Modbus address (first digit 0 coil, 1 discrete input, "
                              "3 input register, 4 holding register)",
                              num);
        a->table = (uint8_t)t;
        uint64_t off = 0;
        (void)parse_uint(num + 1, nl - 1, UINT64_MAX, &off);
        uint64_t maxoff = nl == 5 ? 9999 : 65536;
        if (off < 1 || off > maxoff)
            return fb_err_set(err, FB_EINVAL,
                              "'%s' out of range (the offset after the "
                              "table digit runs 1..%" PRIu64 ")",
                              num, maxoff);
        pdu = off - 1;
    } else {
        if (!parse_uint_z(num, 1000000, &n))
            return fb_err_set(err, FB_EINVAL, "bad address '%s' in '%s' (expected a number)", num, text);
        if (n < (uint64_t)in->base)
            return fb_err_set(err, FB_EINVAL, "address %" PRIu64 " in '%s' is below the device base %d", n, text,
                              in->base);
        pdu = n - (uint64_t)in->base;
        if (pdu > 65535)
            return fb_err_set(err, FB_EINVAL, "address %" PRIu64 " in '%s' out of range (0..65535)", n, text);
    }
    bool bits_table = a->table == MB_CO || a->table == MB_DI;
    if (a->has_bit && bits_table)
        return fb_err_set(err, FB_EINVAL, "'%s': coils and discrete inputs have no bits inside", text);

    /* an order may follow the type: hr:102:float32:CDAB (the same as order:) */
    struct mb_addr_in in2 = *in;
    char *osuffix = tsuffix ? strchr(tsuffix, ':') : NULL;
    if (osuffix) {
        *osuffix++ = 0;
        if (in->order && in->order[0] && strcasecmp(in->order, osuffix))
            return fb_err_set(err, FB_EINVAL, "order %s in '%s' conflicts with order %s", osuffix, text, in->order);
        in2.order = osuffix;
    }
    in = &in2;

    /* type: suffix, config `type:`, or default */
    const struct type_def *td = NULL;
    uint32_t slen = 0;
    if (tsuffix) {
        int rc = parse_type(tsuffix, text, &td, &slen, err);
        if (rc) return rc;
    }
    if (in->type != FB_T_NONE) {
        const struct type_def *given = type_by_fb(in->type);
        if (!given)
            return fb_err_set(err, FB_EINVAL, "type %s is not supported by Modbus (expected " TYPE_LIST ")",
                              fb_type_name((enum fb_type)in->type));
        if (td && td->type != given->type)
            return fb_err_set(err, FB_EINVAL, "type %s conflicts with ':%s' in '%s'",
                              fb_type_name((enum fb_type)in->type), tsuffix, text);
        if (!td) td = given;
    }
    if (td && td->type == FB_T_STRING && !slen) slen = in->str_len;
    if (!td) td = bits_table || a->has_bit ? &type_tab[0] : &type_tab[1];

    if ((bits_table || a->has_bit) && td->type != FB_T_BOOL)
        return fb_err_set(err, FB_EINVAL, "type %s is not valid for '%s' (%s is a single bit: bool)", td->name, text,
                          a->has_bit                        ? "a register bit"
                          : bits_table && a->table == MB_CO ? "a coil"
                                                            : "a discrete input");
    a->type = td->type;
    a->bcd = td->bcd;
    if (td->type == FB_T_STRING) {
        if (slen < 1 || slen > MB_MAX_STR_LEN)
            return fb_err_set(err, FB_EINVAL, "string in '%s' needs a length: string[N], N 1..%d", text,
                              MB_MAX_STR_LEN);
        a->count = (uint16_t)((slen + 1) / 2);
        a->str_odd = slen % 2;
    } else {
        a->count = bits_table || a->has_bit ? 1 : td->nregs;
    }

    /* array element */
    uint64_t start = pdu;
    if (in->index) {
        if (a->has_bit) {
            uint64_t abs = pdu * 16 + a->bit + in->index;
            start = abs / 16;
            a->bit = (uint8_t)(abs % 16);
        } else {
            start = pdu + (uint64_t)in->index * a->count;
        }
    }
    if (start + a->count - 1 > 65535) {
        char tb[24];
        if (a->count > 1 && start <= 65535)
            return fb_err_set(err, FB_EINVAL,
                              "type %s needs %u registers from address %" PRIu64
                              " but the last register is 65535 ('%s')",
                              type_label(a, tb, sizeof tb), a->count, start, text);
        return fb_err_set(err, FB_EINVAL, "address of '%s' (element %u) beyond 65535", text, (unsigned)in->index);
    }
    a->addr = (uint16_t)start;
    return apply_order(in, a, err);
}

const char *mb_addr_fmt(const struct mb_addr *a, char *buf, size_t len)
{
    char tb[24];
    if (a->has_bit)
        snprintf(buf, len, "%s:%u.%u", mb_table_name(a->table), a->addr, a->bit);
    else
        snprintf(buf, len, "%s:%u:%s%s%s", mb_table_name(a->table), a->addr, type_label(a, tb, sizeof tb),
                 a->swap_words || a->swap_bytes ? "/" : "",
                 a->swap_words && a->swap_bytes ? "DCBA"
                 : a->swap_words                ? "CDAB"
                 : a->swap_bytes                ? "BADC"
                                                : "");
    return buf;
}

/* ------------------------------------------------------------------ codec */
/* registers → big-endian bytes A B C D ... */
static void regs_to_bytes(const struct mb_addr *a, const uint16_t *regs, uint8_t *b)
{
    unsigned n = a->count;
    for (unsigned i = 0; i < n; i++) {
        uint16_t r = regs[a->swap_words ? n - 1 - i : i];
        uint8_t hi = (uint8_t)(r >> 8), lo = (uint8_t)r;
        b[2 * i] = a->swap_bytes ? lo : hi;
        b[2 * i + 1] = a->swap_bytes ? hi : lo;
    }
}

static void bytes_to_regs(const struct mb_addr *a, const uint8_t *b, uint16_t *regs)
{
    unsigned n = a->count;
    for (unsigned i = 0; i < n; i++) {
        uint8_t hi = a->swap_bytes ? b[2 * i + 1] : b[2 * i];
        uint8_t lo = a->swap_bytes ? b[2 * i] : b[2 * i + 1];
        regs[a->swap_words ? n - 1 - i : i] = (uint16_t)(hi << 8 | lo);
    }
}

static uint64_t be_uint(const uint8_t *b, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) v = v << 8 | b[i];
    return v;
}

static bool bcd_decode(uint64_t raw, unsigned digits, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = (int)digits - 1; i >= 0; i--) {
        unsigned d = (unsigned)(raw >> (4 * i)) & 0xF;
        if (d > 9) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

uint32_t mb_decode(const struct mb_addr *a, const uint16_t *regs, const uint8_t *bits, struct fb_value *v, char *sbuf,
                   size_t scap)
{
    if (a->count == 1 && !a->has_bit && !a->bcd && (a->table == MB_HR || a->table == MB_IR) &&
        (a->type == FB_T_INT16 || a->type == FB_T_UINT16)) { /* one 16-bit register: most tags */
        uint16_t r = a->swap_bytes ? (uint16_t)(regs[0] << 8 | regs[0] >> 8) : regs[0];
        memset(v, 0, sizeof *v);
        v->type = a->type;
        if (a->type == FB_T_INT16)
            v->i = (int16_t)r;
        else
            v->u = r;
        return FB_Q_GOOD;
    }
    memset(v, 0, sizeof *v);
    v->type = a->type;
    if (a->table == MB_CO || a->table == MB_DI) {
        v->b = bits[0] != 0;
        return FB_Q_GOOD;
    }
    if (a->has_bit) {
        v->b = (regs[0] >> a->bit) & 1;
        return FB_Q_GOOD;
    }
    uint8_t b[2 * MB_MAX_READ_REGS];
    regs_to_bytes(a, regs, b);
    unsigned nb = 2u * a->count;
    if (a->type == FB_T_STRING) {
        size_t len = mb_str_len(a) < nb ? mb_str_len(a) : nb;
        if (len > scap) len = scap;
        const uint8_t *nul = memchr(b, 0, len);
        if (nul) len = (size_t)(nul - b);
        while (len && b[len - 1] == ' ') len--;
        memcpy(sbuf, b, len);
        v->s.p = sbuf;
        v->s.len = (uint32_t)len;
        return FB_Q_GOOD;
    }
    uint64_t raw = be_uint(b, nb);
    if (a->bcd) {
        uint64_t d;
        if (!bcd_decode(raw, nb * 2, &d)) return FB_Q_BAD_DECODING;
        v->u = d;
        return FB_Q_GOOD;
    }
    switch (a->type) {
        case FB_T_BOOL: v->b = raw != 0; break;
        case FB_T_INT16: v->i = (int16_t)raw; break;
        case FB_T_INT32: v->i = (int32_t)(uint32_t)raw; break;
        case FB_T_INT64: v->i = (int64_t)raw; break;
        case FB_T_UINT16:
        case FB_T_UINT32:
        case FB_T_UINT64: v->u = raw; break;
        case FB_T_FLOAT32: {
            uint32_t u32 = (uint32_t)raw;
            float f;
            memcpy(&f, &u32, 4);
            v->f = f;
            break;
        }
        case FB_T_FLOAT64: memcpy(&v->f, &raw, 8); break;
        default: return FB_Q_BAD_INTERNAL;
    }
    return FB_Q_GOOD;
}

/* Brings v to the numeric representation of type t (exact for same-kind
 * integers, rounding + range check otherwise). */
static int to_type(uint8_t t, const struct fb_value *v, struct fb_value *out, struct fb_err *err)
{
    if (v->type == t) {
        *out = *v;
        return 0;
    }
    /* exact integer conversions first (int64 beyond 2^53 must survive) */
    bool vs = fb_type_is_signed((enum fb_type)v->type), vu = fb_type_is_int((enum fb_type)v->type) && !vs;
    if (fb_type_is_int((enum fb_type)t) && (vs || vu || v->type == FB_T_BOOL)) {
        out->type = t;
        bool neg = vs && v->i < 0;
        uint64_t mag = v->type == FB_T_BOOL ? (uint64_t)v->b : vs ? (neg ? 0 - (uint64_t)v->i : (uint64_t)v->i) : v->u;
        if (fb_type_is_signed((enum fb_type)t)) {
            out->i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
            if (!neg && mag > INT64_MAX) goto range;
        } else {
            if (neg) goto range;
            out->u = mag;
        }
        double lo = 0, hi = 0;
        switch (t) {
            case FB_T_INT16:
                lo = INT16_MIN;
                hi = INT16_MAX;
                break;
            case FB_T_UINT16: hi = UINT16_MAX; break;
            case FB_T_INT32:
                lo = INT32_MIN;
                hi = INT32_MAX;
                break;
            case FB_T_UINT32: hi = UINT32_MAX; break;
            default: return 0; /* 64-bit: checked above */
        }
        double d = fb_type_is_signed((enum fb_type)t) ? (double)out->i : (double)out->u;
        if (d < lo || d > hi) goto range;
        return 0;
    }
    double d;
    if (!fb_value_to_double(v, &d))
        return fb_err_set(err, FB_EINVAL, "cannot write a %s value to a %s register",
                          fb_type_name((enum fb_type)v->type), fb_type_name((enum fb_type)t));
    if (t == FB_T_BOOL) {
        out->type = t;
        out->b = d != 0;
        return 0;
    }
    if (fb_value_from_double((enum fb_type)t, d, out) != 0) goto range;
    return 0;
range:
    return fb_err_set(err, FB_ERANGE, "value out of range for %s", fb_type_name((enum fb_type)t));
}

int mb_encode(const struct mb_addr *a, const struct fb_value *v, uint16_t *regs, size_t cap, struct fb_err *err)
{
    if (cap < a->count) return fb_err_set(err, FB_EINVAL, "encode buffer too small");
    if (a->table == MB_CO || a->table == MB_DI || a->has_bit || a->type == FB_T_BOOL) {
        struct fb_value b = {0};
        int rc = to_type(FB_T_BOOL, v, &b, err);
        if (rc) return rc;
        regs[0] = b.b ? 1 : 0;
        return 1;
    }
    uint8_t bytes[2 * MB_MAX_READ_REGS];
    unsigned nb = 2u * a->count;
    memset(bytes, 0, sizeof bytes);
    if (a->type == FB_T_STRING) {
        if (v->type != FB_T_STRING) return fb_err_set(err, FB_EINVAL, "a string register needs a string value");
        if (v->s.len > mb_str_len(a))
            return fb_err_set(err, FB_ERANGE, "string of %u bytes does not fit string[%u]", (unsigned)v->s.len,
                              (unsigned)mb_str_len(a));
        if (v->s.len) memcpy(bytes, v->s.p, v->s.len);
        bytes_to_regs(a, bytes, regs);
        return a->count;
    }
    struct fb_value x;
    int rc = to_type(a->type, v, &x, err);
    if (rc) return rc;
    uint64_t raw;
    switch (a->type) {
        case FB_T_INT16:
        case FB_T_INT32:
        case FB_T_INT64: raw = (uint64_t)x.i; break;
        case FB_T_FLOAT32: {
            if (isfinite(x.f) && fabs(x.f) > 3.4028234663852886e38)
                return fb_err_set(err, FB_ERANGE, "value out of range for float32");
            float f = (float)x.f;
            uint32_t u32;
            memcpy(&u32, &f, 4);
            raw = u32;
            break;
        }
        case FB_T_FLOAT64: memcpy(&raw, &x.f, 8); break;
        default: raw = x.u; break;
    }
    if (a->bcd) {
        unsigned digits = nb * 2;
        uint64_t max = digits == 4 ? 9999 : 99999999;
        if (raw > max)
            return fb_err_set(err, FB_ERANGE, "value %" PRIu64 " does not fit %s (0..%" PRIu64 ")", raw,
                              digits == 4 ? "bcd16" : "bcd32", max);
        uint64_t bcd = 0, r = raw;
        for (unsigned i = 0; i < digits; i++, r /= 10) bcd |= (r % 10) << (4 * i);
        raw = bcd;
    }
    for (unsigned i = 0; i < nb; i++) bytes[nb - 1 - i] = (uint8_t)(raw >> (8 * i));
    bytes_to_regs(a, bytes, regs);
    return a->count;
}

/* ------------------------------------------------------------------ planner */
static int item_cmp(const void *x, const void *y, void *tags)
{
    const struct mb_item *i = x, *k = y;
    const struct mb_addr *a = mb_item_addr(tags, i), *b = mb_item_addr(tags, k);
    if (a->table != b->table) return a->table < b->table ? -1 : 1;
    if (a->addr != b->addr) return a->addr < b->addr ? -1 : 1;
    if (a->count != b->count) return a->count < b->count ? -1 : 1;
    return i->ix < k->ix ? -1 : i->ix > k->ix;
}

static void block_init(struct mb_block *b, const struct mb_addr *a, uint32_t idx, bool split)
{
    memset(b, 0, sizeof *b);
    b->table = a->table;
    b->split = split;
    b->start = a->addr;
    b->count = a->count;
    b->first = idx;
    b->n = 1;
    b->rl.interval_ns = 60LL * 1000000000LL;
}

int mb_plan_build(const struct fb_tag *tags, const struct mb_item *items, uint32_t n, const struct mb_limits *lim,
                  struct mb_plan **out, struct fb_err *err)
{
    *out = NULL;
    struct mb_plan *p = calloc(1, sizeof *p);
    if (!p) return fb_err_set(err, FB_ENOMEM, "out of memory");
    p->items = calloc(n ? n : 1, sizeof *p->items);
    p->blocks = calloc(n ? n : 1, sizeof *p->blocks);
    if (!p->items || !p->blocks) {
        mb_plan_free(p);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    if (n) memcpy(p->items, items, n * sizeof *items);
    p->nitems = n;
    p->cap_blocks = n;
    qsort_r(p->items, n, sizeof *p->items, item_cmp, (void *)tags);

    int max_gap = lim->max_gap < 0 ? 0 : lim->max_gap;
    for (uint32_t i = 0; i < n; i++) {
        const struct mb_addr *a = mb_item_addr(tags, &p->items[i]);
        bool bits = a->table == MB_CO || a->table == MB_DI;
        int limit = bits ? lim->max_bits : lim->max_regs;
        int hard = bits ? MB_MAX_READ_BITS : MB_MAX_READ_REGS;
        if (limit < 1 || limit > hard) limit = hard;
        if (a->count > limit) {
            mb_plan_free(p);
            return fb_err_set(err, FB_EINVAL, "a value of %u registers at %s:%u is larger than max_regs=%d", a->count,
                              mb_table_name(a->table), a->addr, limit);
        }
        if (p->nblocks) {
            struct mb_block *b = &p->blocks[p->nblocks - 1];
            uint32_t bend = (uint32_t)b->start + b->count; /* exclusive */
            uint32_t iend = (uint32_t)a->addr + a->count;
            uint32_t gap = a->addr > bend ? a->addr - bend : 0;
            uint32_t nend = iend > bend ? iend : bend;
            if (b->table == a->table && gap <= (uint32_t)max_gap && nend - b->start <= (uint32_t)limit) {
                b->count = (uint16_t)(nend - b->start);
                b->n++;
                continue;
            }
        }
        block_init(&p->blocks[p->nblocks++], a, i, false);
    }
    /* keep only the blocks made (40 bytes each; a split grows the array when it happens) */
    if (p->nblocks && p->nblocks < p->cap_blocks) {
        struct mb_block *nb = realloc(p->blocks, p->nblocks * sizeof *nb);
        if (nb) {
            p->blocks = nb;
            p->cap_blocks = p->nblocks;
        }
    }
    *out = p;
    return 0;
}

void mb_plan_free(struct mb_plan *p)
{
    if (!p) return;
    free(p->items);
    free(p->blocks);
    free(p);
}

static bool same_range(const struct fb_tag *tags, const struct mb_item *x, const struct mb_item *y)
{
    const struct mb_addr *a = mb_item_addr(tags, x), *b = mb_item_addr(tags, y);
    return a->addr == b->addr && a->count == b->count;
}

bool mb_plan_can_split(const struct mb_plan *p, const struct fb_tag *tags, uint32_t i)
{
    if (i >= p->nblocks) return false;
    const struct mb_block *b = &p->blocks[i];
    if (b->split) return false;
    for (uint32_t k = 1; k < b->n; k++)
        if (!same_range(tags, &p->items[b->first], &p->items[b->first + k])) return true;
    return false;
}

int mb_plan_split(struct mb_plan *p, const struct fb_tag *tags, uint32_t i)
{
    if (!mb_plan_can_split(p, tags, i)) return FB_EINVAL;
    struct mb_block old = p->blocks[i];
    uint32_t parts = 1;
    for (uint32_t k = 1; k < old.n; k++)
        if (!same_range(tags, &p->items[old.first + k - 1], &p->items[old.first + k])) parts++;
    /* parts <= old.n, and the blocks hold at most nitems in total: the
     * first split grows the array to that once (rare: a device refused a
     * range), later ones fit */
    if (p->nblocks - 1 + parts > p->cap_blocks) {
        struct mb_block *nb = realloc(p->blocks, p->nitems * sizeof *nb);
        if (!nb) return FB_ENOMEM;
        p->blocks = nb;
        p->cap_blocks = p->nitems;
    }
    memmove(&p->blocks[i + parts], &p->blocks[i + 1], (p->nblocks - i - 1) * sizeof *p->blocks);
    p->nblocks += parts - 1;
    uint32_t bi = i;
    for (uint32_t k = 0; k < old.n; k++) {
        uint32_t idx = old.first + k;
        if (k && same_range(tags, &p->items[idx - 1], &p->items[idx])) {
            p->blocks[bi - 1].n++;
            continue;
        }
        block_init(&p->blocks[bi], mb_item_addr(tags, &p->items[idx]), idx, true);
        p->blocks[bi].last_q = old.last_q;
        bi++;
    }
    p->splits++;
    return (int)parts;
}

/* ------------------------------------------------------------------ errors */
static const struct {
    int code;
    uint32_t q;
    const char *text;
} exc_tab[] = {
    {1, FB_Q_BAD_CONFIG, "illegal function"},
    {2, FB_Q_BAD_NODE_UNKNOWN, "illegal data address"},
    {3, FB_Q_BAD_CONFIG, "illegal data value"},
    {4, FB_Q_BAD_DEVICE_FAILURE, "server device failure"},
    {5, FB_Q_BAD_DEVICE_FAILURE, "acknowledge (busy with a long request)"},
    {6, FB_Q_BAD_DEVICE_FAILURE, "server device busy"},
    {8, FB_Q_BAD_DEVICE_FAILURE, "memory parity error"},
    {10, FB_Q_BAD_NO_COMM, "gateway path unavailable"},
    {11, FB_Q_BAD_NO_COMM, "gateway target device failed to respond"},
};

uint32_t mb_exception_quality(int code)
{
    for (size_t i = 0; i < sizeof exc_tab / sizeof exc_tab[0]; i++)
        if (exc_tab[i].code == code) return exc_tab[i].q;
    return FB_Q_BAD_COMM;
}

const char *mb_exception_text(int code)
{
    for (size_t i = 0; i < sizeof exc_tab / sizeof exc_tab[0]; i++)
        if (exc_tab[i].code == code) return exc_tab[i].text;
    return "unknown exception";
}

/* ------------------------------------------------------------- TCP reads */
static const uint8_t read_fc[4] = {[MB_HR] = 3, [MB_IR] = 4, [MB_CO] = 1, [MB_DI] = 2};

void mb_tcp_read_request(uint8_t req[MB_TCP_REQ_LEN], uint16_t tid, uint8_t unit, int table, uint16_t start,
                         uint16_t count)
{
    req[0] = (uint8_t)(tid >> 8);
    req[1] = (uint8_t)tid;
    req[2] = req[3] = 0; /* protocol: Modbus */
    req[4] = 0;
    req[5] = 6; /* unit id + PDU */
    req[6] = unit;
    req[7] = read_fc[table & 3];
    req[8] = (uint8_t)(start >> 8);
    req[9] = (uint8_t)start;
    req[10] = (uint8_t)(count >> 8);
    req[11] = (uint8_t)count;
}

size_t mb_tcp_adu_len(const uint8_t hdr[6])
{
    size_t len = (size_t)hdr[4] << 8 | hdr[5]; /* unit id + PDU */
    /* the shortest answer is an exception (unit, function, code) */
    if (len < 3 || 6 + len > MB_TCP_ADU_MAX) return 0;
    return 6 + len;
}

enum mb_rsp mb_tcp_read_answer(const uint8_t req[MB_TCP_REQ_LEN], const uint8_t *adu, size_t n, uint16_t *regs,
                               uint8_t *bits, int *exc)
{
    *exc = 0;
    if (n < 9) return MB_RSP_BAD_LEN;
    if (adu[0] != req[0] || adu[1] != req[1]) return MB_RSP_BAD_TID;
    if (adu[2] || adu[3]) return MB_RSP_BAD_PROTO;
    uint8_t fc = req[7];
    if (adu[7] == (fc | 0x80)) {
        if (n != 9) return MB_RSP_BAD_LEN;
        *exc = adu[8];
        return MB_RSP_EXC;
    }
    if (adu[7] != fc) return MB_RSP_BAD_FC;
    unsigned count = (unsigned)req[10] << 8 | req[11];
    bool reg = fc == 3 || fc == 4;
    unsigned bytes = reg ? 2 * count : (count + 7) / 8;
    if (adu[8] != bytes || n != 9 + (size_t)bytes) return MB_RSP_BAD_LEN;
    const uint8_t *d = adu + 9;
    if (reg)
        for (unsigned i = 0; i < count; i++) regs[i] = (uint16_t)(d[2 * i] << 8 | d[2 * i + 1]);
    else
        for (unsigned i = 0; i < count; i++) bits[i] = (uint8_t)(d[i / 8] >> (i % 8) & 1);
    return MB_RSP_OK;
}

enum mb_rsp mb_tcp_take(const uint8_t req[MB_TCP_REQ_LEN], uint8_t *buf, size_t *have, uint16_t *regs,
                        uint8_t *bits, int *exc)
{
    *exc = 0;
    while (*have >= 6) {
        size_t len = mb_tcp_adu_len(buf);
        if (!len) return MB_RSP_GARBAGE;
        if (*have < len) break;
        if (buf[0] == req[0] && buf[1] == req[1]) return mb_tcp_read_answer(req, buf, len, regs, bits, exc);
        memmove(buf, buf + len, *have - len); /* a late answer to an earlier request */
        *have -= len;
    }
    return MB_RSP_MORE;
}

const char *mb_rsp_text(enum mb_rsp r)
{
    switch (r) {
        case MB_RSP_OK: return "ok";
        case MB_RSP_EXC: return "exception";
        case MB_RSP_BAD_TID: return "answer to another request (transaction id)";
        case MB_RSP_BAD_PROTO: return "not a Modbus answer (protocol id)";
        case MB_RSP_BAD_FC: return "answer for another function";
        case MB_RSP_GARBAGE: return "not a Modbus TCP answer";
        case MB_RSP_MORE: return "incomplete answer";
        default: return "answer of the wrong length";
    }
}
