/* revpi_proto.c — PiCtory config.rsc parser, RevPi addresses and the
 * process-image codec.  No I/O: text and bytes in, structs out, so all of it
 * is unit-tested and fuzzed without a Revolution Pi.
 *
 * The process image is a flat byte array (4096 bytes on piControl).  PiCtory
 * places each module ("device") at a base byte `offset`; its variables are
 * kept in three maps (inp, out, mem) keyed "0", "1", … whose entries are
 * arrays:
 *
 *   [ name, default, length-in-bits, byte-offset-in-device, exported,
 *     sort-order, comment, bit-position ]
 *
 * Numbers arrive as strings in every PiCtory version we know of, but we take
 * JSON numbers too.  A digital module's 14 inputs share byte offset 0 with
 * bit positions 0..13, so the absolute place of a variable is
 *
 *   byte = device.offset + var.offset + bitpos / 8,   bit = bitpos % 8.
 *
 * Files carry keys that vary between PiCtory versions (App, Summary,
 * Connections, extend, inpVariant, …): anything we do not need is ignored.
 * What would make addressing ambiguous or unsafe is refused with a message
 * naming the device and the variable: two variables sharing bits, a variable
 * reaching past the image, two variables with the same name.
 *
 * Multi-byte values are little-endian, as on the RevPi's ARM CPU.
 *
 * Signedness is a property of the module, not of the length: piControl
 * copies each module's values into the image as its firmware defines them,
 * and the AIO's words are two's-complement (a -250 mV input is 0xFF06,
 * which must read as -250, not 65286).  module_rules below says, per
 * productType, which variables read as signed; everything else reads as
 * the unsigned type of its length.  Inputs and outputs are matched by map
 * and length only, because PiCtory lets users rename them; configuration
 * values in mem also by a name suffix.  A :TYPE suffix always wins.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "south/revpi/revpi_proto.h"

const char *fb_revpi_io_name(int io)
{
    static const char *const n[] = {"inp", "out", "mem"};
    return io >= 0 && io <= 2 ? n[io] : "?";
}

/* ------------------------------------------------------------ config.rsc */
static bool parse_dec(const char *s, size_t n, unsigned long max, unsigned long *out);

/* A non-negative integer given as a JSON integer or a decimal string. */
static bool json_uint(const json_t *j, long long max, long long *out)
{
    if (json_is_integer(j)) {
        long long v = json_integer_value(j);
        if (v < 0 || v > max) return false;
        *out = v;
        return true;
    }
    if (json_is_real(j)) {
        double d = json_real_value(j);
        if (!(d >= 0 && d <= (double)max) || d != floor(d)) return false;
        *out = (long long)d;
        return true;
    }
    if (!json_is_string(j)) return false;
    const char *s = json_string_value(j);
    while (*s == ' ') s++;
    if (!isdigit((unsigned char)*s)) return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    while (*end == ' ') end++;
    if (*end || errno || v > max) return false;
    *out = v;
    return true;
}

static char *json_strdup(const json_t *j)
{
    if (json_is_string(j)) return strdup(json_string_value(j));
    if (json_is_integer(j)) {
        char b[32];
        snprintf(b, sizeof b, "%lld", (long long)json_integer_value(j));
        return strdup(b);
    }
    return strdup("");
}

void fb_revpi_cfg_free(struct fb_revpi_cfg *cfg)
{
    if (!cfg) return;
    for (uint32_t i = 0; i < cfg->ndevs; i++) {
        free(cfg->devs[i].name);
        free(cfg->devs[i].id);
        free(cfg->devs[i].type);
        free(cfg->devs[i].bmk);
    }
    for (uint32_t i = 0; i < cfg->nvars; i++) {
        free(cfg->vars[i].name);
        free(cfg->vars[i].def);
        free(cfg->vars[i].comment);
    }
    free(cfg->devs);
    free(cfg->vars);
    memset(cfg, 0, sizeof *cfg);
}

struct keyed {
    long long idx;
    const char *key;
    json_t *v;
};

static int keyed_cmp(const void *a, const void *b)
{
    const struct keyed *x = a, *y = b;
    if (x->idx != y->idx) return x->idx < y->idx ? -1 : 1;
    return strcmp(x->key, y->key);
}

static int parse_var(struct fb_revpi_cfg *cfg, uint32_t di, int io, const char *key, json_t *e, struct fb_err *err)
{
    struct fb_revpi_dev *d = &cfg->devs[di];
    const char *dn = d->name;
    if (!json_is_array(e) || json_array_size(e) < 4)
        return fb_err_set(err, FB_EINVAL,
                          "config.rsc: device '%s' %s[\"%s\"]: expected an array [name, default, "
                          "bits, offset, exported, order, comment, bitpos]",
                          dn, fb_revpi_io_name(io), key);
    const json_t *jn = json_array_get(e, 0);
    if (!json_is_string(jn) || !json_string_value(jn)[0])
        return fb_err_set(err, FB_EINVAL, "config.rsc: device '%s' %s[\"%s\"]: name must be a non-empty string", dn,
                          fb_revpi_io_name(io), key);
    const char *name = json_string_value(jn);
    if (strlen(name) >= FB_REVPI_NAME_MAX)
        return fb_err_set(err, FB_EINVAL,
                          "config.rsc: device '%s': variable name '%.40s…' is longer than %d characters", dn, name,
                          FB_REVPI_NAME_MAX - 1);
    for (const char *p = name; *p; p++)
        if (*p == ':' || *p == ',' || *p == '=' || isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return fb_err_set(err, FB_EINVAL,
                              "config.rsc: device '%s': variable name '%s' contains '%c' (not addressable)", dn, name,
                              isprint((unsigned char)*p) ? *p : '?');
    long long bits, off, bitpos = 0;
    if (!json_uint(json_array_get(e, 2), (long long)cfg->image_size * 8, &bits) || bits == 0)
        return fb_err_set(err, FB_EINVAL, "config.rsc: variable '%s' (device '%s'): bad length in bits", name, dn);
    if (bits > 1 && bits % 8)
        return fb_err_set(err, FB_EINVAL,
                          "config.rsc: variable '%s' (device '%s'): length %lld bits is neither 1 nor whole bytes",
                          name, dn, bits);
    if (!json_uint(json_array_get(e, 3), cfg->image_size, &off))
        return fb_err_set(err, FB_EINVAL, "config.rsc: variable '%s' (device '%s'): bad byte offset", name, dn);
    const json_t *jb = json_array_get(e, 7);
    if (jb && !(json_is_string(jb) && json_string_value(jb)[0] == '\0') && !json_is_null(jb)) {
        if (!json_uint(jb, 65535, &bitpos))
            return fb_err_set(err, FB_EINVAL, "config.rsc: variable '%s' (device '%s'): bad bit position", name, dn);
        if (bits != 1 && bitpos != 0)
            return fb_err_set(
                err, FB_EINVAL,
                "config.rsc: variable '%s' (device '%s'): a bit position needs a 1-bit variable (length %lld)", name,
                dn, bits);
    }
    long long abs_byte = (long long)d->offset + off + bitpos / 8;
    long long nbytes = bits == 1 ? 1 : bits / 8;
    if (abs_byte + nbytes > (long long)cfg->image_size)
        return fb_err_set(
            err, FB_EINVAL,
            "config.rsc: variable '%s' (device '%s'): bytes %lld..%lld are outside the %u-byte process image", name, dn,
            abs_byte, abs_byte + nbytes - 1, cfg->image_size);
    struct fb_revpi_var *v = &cfg->vars[cfg->nvars];
    memset(v, 0, sizeof *v);
    v->name = strdup(name);
    v->def = json_strdup(json_array_get(e, 1));
    const json_t *jc = json_array_get(e, 6);
    v->comment = json_is_string(jc) ? strdup(json_string_value(jc)) : strdup("");
    v->exported = json_is_true(json_array_get(e, 4));
    v->io = (uint8_t)io;
    v->dev = di;
    v->loc.offset = (uint32_t)abs_byte;
    v->loc.bit = (uint8_t)(bits == 1 ? bitpos % 8 : 0);
    v->loc.bits = bits > 65535 ? 65535 : (uint16_t)bits;
    v->type = (uint8_t)fb_revpi_module_type(d->product_type, io, v->loc.bits, name, NULL);
    cfg->nvars++;
    if (!v->name || !v->def || !v->comment) return fb_err_set(err, FB_ENOMEM, "out of memory");
    return 0;
}

static int parse_map(struct fb_revpi_cfg *cfg, uint32_t di, int io, json_t *m, struct fb_err *err)
{
    if (!m || json_is_null(m)) return 0;
    size_t n = json_is_object(m) ? json_object_size(m) : json_is_array(m) ? json_array_size(m) : 0;
    if (!json_is_object(m) && !json_is_array(m))
        return fb_err_set(err, FB_EINVAL, "config.rsc: device '%s': '%s' must be an object", cfg->devs[di].name,
                          fb_revpi_io_name(io));
    if (n == 0) return 0;
    struct keyed *k = calloc(n, sizeof *k);
    if (!k) return fb_err_set(err, FB_ENOMEM, "out of memory");
    size_t i = 0;
    if (json_is_object(m)) {
        const char *key;
        json_t *v;
        json_object_foreach(m, key, v)
        {
            unsigned long x;
            /* keys are "0", "1", …: numeric order; anything else after them */
            k[i].idx = parse_dec(key, strlen(key), 1UL << 30, &x) ? (long long)x : (1LL << 40);
            k[i].key = key;
            k[i].v = v;
            i++;
        }
    } else {
        for (; i < n; i++) {
            k[i].idx = (long long)i;
            k[i].key = "";
            k[i].v = json_array_get(m, i);
        }
    }
    qsort(k, n, sizeof *k, keyed_cmp);
    int rc = 0;
    for (i = 0; i < n && rc == 0; i++) {
        char kb[24];
        const char *key = k[i].key;
        if (!*key) {
            snprintf(kb, sizeof kb, "%zu", i);
            key = kb;
        }
        rc = parse_var(cfg, di, io, key, k[i].v, err);
    }
    free(k);
    return rc;
}

static size_t map_size(const json_t *m)
{
    return json_is_object(m) ? json_object_size(m) : json_is_array(m) ? json_array_size(m) : 0;
}

struct span {
    uint64_t start, end; /* bit positions in the image, [start, end) */
    uint32_t var;
};

static int span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return x->var < y->var ? -1 : x->var > y->var;
}

static int name_cmp(const void *a, const void *b, void *ctx)
{
    const struct fb_revpi_cfg *cfg = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    int c = strcmp(cfg->vars[x].name, cfg->vars[y].name);
    return c ? c : (x < y ? -1 : x > y);
}

static void describe(const struct fb_revpi_cfg *cfg, uint32_t vi, char *buf, size_t n)
{
    const struct fb_revpi_var *v = &cfg->vars[vi];
    char where[40];
    fb_revpi_loc_format(where, sizeof where, &v->loc);
    snprintf(buf, n, "'%s' (device '%s', %s %s)", v->name, cfg->devs[v->dev].name, fb_revpi_io_name(v->io), where);
}

static int check_layout(struct fb_revpi_cfg *cfg, struct fb_err *err)
{
    if (cfg->nvars < 2) return 0;
    struct span *s = calloc(cfg->nvars, sizeof *s);
    uint32_t *idx = calloc(cfg->nvars, sizeof *idx);
    if (!s || !idx) {
        free(s);
        free(idx);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < cfg->nvars; i++) {
        const struct fb_revpi_loc *l = &cfg->vars[i].loc;
        s[i].start = (uint64_t)l->offset * 8 + l->bit;
        s[i].end = s[i].start + l->bits;
        s[i].var = i;
        idx[i] = i;
    }
    int rc = 0;
    qsort(s, cfg->nvars, sizeof *s, span_cmp);
    uint64_t max_end = s[0].end;
    uint32_t max_var = s[0].var;
    for (uint32_t i = 1; i < cfg->nvars; i++) {
        if (s[i].start < max_end) {
            char a[160], b[160];
            describe(cfg, max_var, a, sizeof a);
            describe(cfg, s[i].var, b, sizeof b);
            rc = fb_err_set(err, FB_EINVAL, "config.rsc: variable %s overlaps %s", b, a);
            goto out;
        }
        if (s[i].end > max_end) {
            max_end = s[i].end;
            max_var = s[i].var;
        }
    }
    qsort_r(idx, cfg->nvars, sizeof *idx, name_cmp, cfg);
    for (uint32_t i = 1; i < cfg->nvars; i++)
        if (!strcmp(cfg->vars[idx[i - 1]].name, cfg->vars[idx[i]].name)) {
            char a[160], b[160];
            describe(cfg, idx[i - 1], a, sizeof a);
            describe(cfg, idx[i], b, sizeof b);
            rc = fb_err_set(err, FB_EINVAL, "config.rsc: duplicate variable name: %s and %s", a, b);
            goto out;
        }
out:
    free(s);
    free(idx);
    return rc;
}

int fb_revpi_cfg_parse(const char *text, size_t len, uint32_t image_size, struct fb_revpi_cfg *cfg, struct fb_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->image_size = image_size ? image_size : FB_REVPI_IMAGE_SIZE;
    if (!text) return fb_err_set(err, FB_EINVAL, "config.rsc: no text");
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fb_err_set(err, FB_EINVAL, "config.rsc: not valid JSON at line %d column %d: %s", je.line, je.column,
                          je.text);
    int rc = 0;
    json_t *devs = json_is_object(root) ? json_object_get(root, "Devices") : NULL;
    if (!json_is_array(devs)) {
        rc = fb_err_set(err, FB_EINVAL, "config.rsc: no \"Devices\" array (is this a PiCtory configuration?)");
        goto out;
    }
    size_t nd = json_array_size(devs), nv = 0;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(devs, i);
        if (!json_is_object(d)) continue;
        nv += map_size(json_object_get(d, "inp")) + map_size(json_object_get(d, "out")) +
              map_size(json_object_get(d, "mem"));
    }
    cfg->devs = calloc(nd ? nd : 1, sizeof *cfg->devs);
    cfg->vars = calloc(nv ? nv : 1, sizeof *cfg->vars);
    if (!cfg->devs || !cfg->vars) {
        rc = fb_err_set(err, FB_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nd && rc == 0; i++) {
        json_t *d = json_array_get(devs, i);
        if (!json_is_object(d)) {
            rc = fb_err_set(err, FB_EINVAL, "config.rsc: Devices[%zu] is not an object", i);
            break;
        }
        struct fb_revpi_dev *dv = &cfg->devs[cfg->ndevs++];
        json_t *jn = json_object_get(d, "name"), *jid = json_object_get(d, "id");
        dv->id = json_strdup(jid);
        if (json_is_string(jn) && json_string_value(jn)[0])
            dv->name = strdup(json_string_value(jn));
        else if (dv->id && dv->id[0])
            dv->name = strdup(dv->id);
        else {
            char b[32];
            snprintf(b, sizeof b, "Devices[%zu]", i);
            dv->name = strdup(b);
        }
        dv->type = json_strdup(json_object_get(d, "type"));
        dv->bmk = json_strdup(json_object_get(d, "bmk"));
        if (!dv->id || !dv->name || !dv->type || !dv->bmk) {
            rc = fb_err_set(err, FB_ENOMEM, "out of memory");
            break;
        }
        long long x;
        dv->position = json_uint(json_object_get(d, "position"), 1 << 30, &x) ? (int)x : -1;
        dv->product_type = json_uint(json_object_get(d, "productType"), 1 << 30, &x) ? (int)x : -1;
        if (!json_uint(json_object_get(d, "offset"), (long long)cfg->image_size - 1, &x)) {
            rc = fb_err_set(err, FB_EINVAL, "config.rsc: device '%s': \"offset\" missing or not a byte offset below %u",
                            dv->name, cfg->image_size);
            break;
        }
        dv->offset = (uint32_t)x;
        dv->first_var = cfg->nvars;
        static const char *const maps[] = {"inp", "out", "mem"};
        for (int io = 0; io < 3 && rc == 0; io++)
            rc = parse_map(cfg, (uint32_t)(cfg->ndevs - 1), io, json_object_get(d, maps[io]), err);
        dv->nvars = cfg->nvars - dv->first_var;
    }
    if (rc == 0) rc = check_layout(cfg, err);
out:
    json_decref(root);
    if (rc) fb_revpi_cfg_free(cfg);
    return rc;
}

const struct fb_revpi_var *fb_revpi_cfg_find(const struct fb_revpi_cfg *cfg, const char *name)
{
    if (!cfg || !name) return NULL;
    for (uint32_t i = 0; i < cfg->nvars; i++)
        if (!strcmp(cfg->vars[i].name, name)) return &cfg->vars[i];
    return NULL;
}

/* -------------------------------------------------------------- addresses */
static unsigned type_bits(enum fb_type t)
{
    switch (t) {
        case FB_T_BOOL: return 1;
        case FB_T_INT8:
        case FB_T_UINT8: return 8;
        case FB_T_INT16:
        case FB_T_UINT16: return 16;
        case FB_T_INT32:
        case FB_T_UINT32:
        case FB_T_FLOAT32: return 32;
        case FB_T_INT64:
        case FB_T_UINT64:
        case FB_T_FLOAT64: return 64;
        default: return 0;
    }
}

/* Which variables of which module are not plain unsigned (docs/revpi.md has
 * the same table for users).  Sources: KUNBUS's piControl driver, whose
 * structures type the values the firmware puts in the image, and the
 * module documentation for their units and ranges. */
#define IO_INP (1u << FB_REVPI_INP)
#define IO_OUT (1u << FB_REVPI_OUT)
#define IO_MEM (1u << FB_REVPI_MEM)
static const struct module_rule {
    int product_type;
    const char *module;
    unsigned io_mask; /* IO_INP | IO_OUT | IO_MEM */
    uint16_t bits;
    const char *suffix; /* the name must end in this (NULL: any name) */
    enum fb_type type;
} module_rules[] = {
    /* AIO: InputValue_1..4 (mV / µA, ±10 V and ±25 mA ranges), RTDValue_1..2
     * (0.1 °C, below 0 °C negative) and OutputValue_1..2 are INT16; the
     * status bytes are bit fields (uint8).  Of the scaling values in mem,
     * the multipliers and offsets are INT16 and the divisors UINT16. */
    {103, "AIO", IO_INP | IO_OUT, 16, NULL, FB_T_INT16},
    {103, "AIO", IO_MEM, 16, "Multiplier", FB_T_INT16},
    {103, "AIO", IO_MEM, 16, "Offset", FB_T_INT16},
    /* Compact: AIn_1..8 are INT16 (mV, or 0.1 °C with RTDs); AOut is UINT16. */
    {104, "Compact", IO_INP, 16, NULL, FB_T_INT16},
    /* Flat: AIn is INT16; AOut and RevPiLED are UINT16. */
    {135, "Flat", IO_INP, 16, NULL, FB_T_INT16},
    /* MIO (118) has no row: KUNBUS documents its analog values as 0..10000 mV
     * (inputs up to 10760), duty cycles as 0..1000 and counters and
     * frequencies as non-negative, so uint16 reads every documented value
     * (piControl declares the analog input words INT16, which agrees on all
     * of them).  DIO/DI/DO, the base modules, gateways and virtual devices
     * hold counters, bit fields and LEDs: unsigned. */
};

enum fb_type fb_revpi_module_type(int product_type, int io, uint16_t bits, const char *name, const char **module)
{
    if (module) *module = NULL;
    for (size_t i = 0; i < sizeof module_rules / sizeof module_rules[0]; i++) {
        const struct module_rule *r = &module_rules[i];
        if (r->product_type != product_type || r->bits != bits || io < 0 || io > 2 || !(r->io_mask & (1u << io)))
            continue;
        if (r->suffix) {
            size_t n = name ? strlen(name) : 0, k = strlen(r->suffix);
            if (n < k || strcmp(name + n - k, r->suffix)) continue;
        }
        if (module) *module = r->module;
        return r->type;
    }
    return fb_revpi_default_type(bits);
}

enum fb_type fb_revpi_default_type(uint16_t bits)
{
    switch (bits) {
        case 1: return FB_T_BOOL;
        case 8: return FB_T_UINT8;
        case 16: return FB_T_UINT16;
        case 32: return FB_T_UINT32;
        case 64: return FB_T_UINT64;
        default: return FB_T_NONE;
    }
}

int fb_revpi_type_check(enum fb_type t, uint16_t bits, struct fb_err *err)
{
    if (t == FB_T_BOOL) return 0;
    if (t == FB_T_STRING || type_bits(t) == 0)
        return fb_err_set(err, FB_EINVAL, "type %s is not supported in the process image", fb_type_name(t));
    if (bits == 1) {
        if (fb_type_is_int(t)) return 0;
        return fb_err_set(err, FB_EINVAL, "a 1-bit value reads as bool or an integer, not %s", fb_type_name(t));
    }
    if (type_bits(t) != bits)
        return fb_err_set(err, FB_EINVAL, "type %s is %u bits wide but the value has %u bits", fb_type_name(t),
                          type_bits(t), (unsigned)bits);
    return 0;
}

int fb_revpi_loc_format(char *buf, size_t n, const struct fb_revpi_loc *l)
{
    switch (l->bits) {
        case 1: return snprintf(buf, n, "bit:%u.%u", l->offset, l->bit);
        case 8: return snprintf(buf, n, "byte:%u", l->offset);
        case 16: return snprintf(buf, n, "word:%u", l->offset);
        case 32: return snprintf(buf, n, "dword:%u", l->offset);
        case 64: return snprintf(buf, n, "qword:%u", l->offset);
        default: return snprintf(buf, n, "bits%u:%u", l->bits, l->offset);
    }
}

struct raw_kind {
    const char *name;
    uint16_t bits;
    enum fb_type type;
};
static const struct raw_kind raw_kinds[] = {
    {"bit", 1, FB_T_BOOL},       {"byte", 8, FB_T_UINT8},       {"word", 16, FB_T_UINT16},
    {"dword", 32, FB_T_UINT32},  {"qword", 64, FB_T_UINT64},    {"int8", 8, FB_T_INT8},
    {"uint8", 8, FB_T_UINT8},    {"int16", 16, FB_T_INT16},     {"uint16", 16, FB_T_UINT16},
    {"int32", 32, FB_T_INT32},   {"uint32", 32, FB_T_UINT32},   {"int64", 64, FB_T_INT64},
    {"uint64", 64, FB_T_UINT64}, {"float32", 32, FB_T_FLOAT32}, {"float64", 64, FB_T_FLOAT64},
};

static bool parse_dec(const char *s, size_t n, unsigned long max, unsigned long *out)
{
    if (n == 0 || n > 10) return false;
    unsigned long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > max) return false;
    *out = v;
    return true;
}

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.' || (unsigned char)c >= 0x80;
}

int fb_revpi_addr_parse(const char *text, struct fb_revpi_addr *a, struct fb_err *err)
{
    memset(a, 0, sizeof *a);
    if (!text || !*text)
        return fb_err_set(err, FB_EINVAL, "empty address (a PiCtory variable name, or bit:70.3, byte:70, word:10 …)");
    size_t len = strlen(text);
    if (len > 200) return fb_err_set(err, FB_EINVAL, "address too long");
    const char *c1 = strchr(text, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (c2 && strchr(c2 + 1, ':')) return fb_err_set(err, FB_EINVAL, "'%s': too many ':' (WHERE[:TYPE])", text);
    const char *type_text = NULL;
    const struct raw_kind *rk = NULL;
    if (c1) {
        size_t kl = (size_t)(c1 - text);
        for (size_t i = 0; i < sizeof raw_kinds / sizeof raw_kinds[0]; i++)
            if (strlen(raw_kinds[i].name) == kl && !strncasecmp(text, raw_kinds[i].name, kl)) rk = &raw_kinds[i];
        if (rk && !isdigit((unsigned char)c1[1]))
            return fb_err_set(err, FB_EINVAL, "'%s': expected a byte offset after '%s:'", text, rk->name);
    }
    if (rk) {
        const char *num = c1 + 1, *end = c2 ? c2 : text + len;
        const char *dot = memchr(num, '.', (size_t)(end - num));
        unsigned long off, bit = 0;
        size_t nl = (size_t)((dot ? dot : end) - num);
        if (!parse_dec(num, nl, FB_REVPI_IMAGE_SIZE - 1, &off))
            return fb_err_set(err, FB_EINVAL, "'%s': byte offset must be 0..%u", text, FB_REVPI_IMAGE_SIZE - 1);
        if (dot) {
            if (rk->bits != 1)
                return fb_err_set(err, FB_EINVAL, "'%s': only bit: addresses take a .BIT (e.g. bit:70.3)", text);
            if (!parse_dec(dot + 1, (size_t)(end - dot - 1), 7, &bit))
                return fb_err_set(err, FB_EINVAL, "'%s': bit must be 0..7", text);
        } else if (rk->bits == 1) {
            return fb_err_set(err, FB_EINVAL, "'%s': a bit address is BYTE.BIT, e.g. bit:70.3", text);
        }
        a->loc.offset = (uint32_t)off;
        a->loc.bit = (uint8_t)bit;
        a->loc.bits = rk->bits;
        if (off + fb_revpi_loc_bytes(&a->loc) > FB_REVPI_IMAGE_SIZE)
            return fb_err_set(err, FB_EINVAL, "'%s': reaches past the %u-byte process image", text,
                              FB_REVPI_IMAGE_SIZE);
        a->type = (uint8_t)rk->type;
        a->io = FB_REVPI_OUT;
        a->resolved = true;
        type_text = c2 ? c2 + 1 : NULL;
    } else {
        if (c2)
            return fb_err_set(err, FB_EINVAL, "'%s': unknown address kind (bit, byte, word, dword, int16, uint32 …)",
                              text);
        size_t nl = c1 ? (size_t)(c1 - text) : len;
        if (nl == 0 || nl >= FB_REVPI_NAME_MAX)
            return fb_err_set(err, FB_EINVAL, "'%s': a variable name has 1..%d characters", text,
                              FB_REVPI_NAME_MAX - 1);
        for (size_t i = 0; i < nl; i++)
            if (!name_char(text[i]))
                return fb_err_set(
                    err, FB_EINVAL,
                    "'%s' is neither a PiCtory variable name nor a raw address (bit:70.3, byte:70, word:10 …)", text);
        memcpy(a->name, text, nl);
        a->name[nl] = '\0';
        type_text = c1 ? c1 + 1 : NULL;
    }
    if (type_text) {
        enum fb_type t = fb_type_parse(type_text);
        if (t == FB_T_NONE || t == FB_T_STRING)
            return fb_err_set(err, FB_EINVAL, "'%s': unknown type '%s' (bool, int8 … uint64, float32, float64)", text,
                              type_text);
        if (a->resolved && fb_revpi_type_check(t, a->loc.bits, err) < 0) return FB_EINVAL;
        a->type = (uint8_t)t;
    }
    return 0;
}

int fb_revpi_addr_resolve(struct fb_revpi_addr *a, const struct fb_revpi_cfg *cfg, struct fb_err *err)
{
    if (!a->name[0]) return 0; /* raw */
    const struct fb_revpi_var *v = fb_revpi_cfg_find(cfg, a->name);
    if (!v) return fb_err_set(err, FB_ENOENT, "no variable '%s' in the PiCtory configuration", a->name);
    if (v->type == FB_T_NONE && a->type == FB_T_NONE)
        return fb_err_set(err, FB_EINVAL, "variable '%s' has %u bits: give a type", a->name, (unsigned)v->loc.bits);
    if (a->type != FB_T_NONE) {
        struct fb_err e2 = {0};
        if (fb_revpi_type_check((enum fb_type)a->type, v->loc.bits, &e2) < 0)
            return fb_err_set(err, FB_EINVAL, "variable '%s': %s", a->name, e2.msg);
    }
    a->loc = v->loc;
    a->io = v->io;
    if (a->type == FB_T_NONE) a->type = v->type; /* the module's type, unless :TYPE said otherwise */
    a->resolved = true;
    return 0;
}

/* ------------------------------------------------------------------ codec */
int fb_revpi_decode(const uint8_t *img, uint32_t base, uint32_t len, const struct fb_revpi_loc *l, enum fb_type t,
                    struct fb_value *v)
{
    uint32_t nb = fb_revpi_loc_bytes(l);
    if (l->offset < base || (uint64_t)l->offset + nb > (uint64_t)base + len) return FB_ERANGE;
    const uint8_t *p = img + (l->offset - base);
    v->type = (uint8_t)t;
    if (l->bits == 1) {
        unsigned b = (p[0] >> (l->bit & 7)) & 1u;
        if (t == FB_T_BOOL)
            v->b = b != 0;
        else if (fb_type_is_signed(t))
            v->i = b;
        else if (fb_type_is_int(t))
            v->u = b;
        else
            return FB_EINVAL;
        return 0;
    }
    if (nb > 8) return FB_EINVAL;
    uint64_t raw = 0;
    for (uint32_t i = 0; i < nb; i++) raw |= (uint64_t)p[i] << (8 * i);
    switch (t) {
        case FB_T_BOOL: v->b = raw != 0; return 0;
        case FB_T_INT8: v->i = (int8_t)(uint8_t)raw; break;
        case FB_T_INT16: v->i = (int16_t)(uint16_t)raw; break;
        case FB_T_INT32: v->i = (int32_t)(uint32_t)raw; break;
        case FB_T_INT64: v->i = (int64_t)raw; break;
        case FB_T_UINT8:
        case FB_T_UINT16:
        case FB_T_UINT32:
        case FB_T_UINT64: v->u = raw; break;
        case FB_T_FLOAT32: {
            uint32_t u32 = (uint32_t)raw;
            float f;
            memcpy(&f, &u32, sizeof f);
            v->f = f;
            break;
        }
        case FB_T_FLOAT64: memcpy(&v->f, &raw, sizeof v->f); break;
        default: return FB_EINVAL;
    }
    if (type_bits(t) != nb * 8) return FB_EINVAL;
    return 0;
}

/* Any numeric value as an exact integer, if it is one. */
static bool value_int(const struct fb_value *v, bool *neg, uint64_t *mag)
{
    switch (v->type) {
        case FB_T_BOOL:
            *neg = false;
            *mag = v->b ? 1 : 0;
            return true;
        case FB_T_INT8:
        case FB_T_INT16:
        case FB_T_INT32:
        case FB_T_INT64:
            *neg = v->i < 0;
            *mag = v->i < 0 ? (uint64_t)0 - (uint64_t)v->i : (uint64_t)v->i;
            return true;
        case FB_T_UINT8:
        case FB_T_UINT16:
        case FB_T_UINT32:
        case FB_T_UINT64:
            *neg = false;
            *mag = v->u;
            return true;
        case FB_T_FLOAT32:
        case FB_T_FLOAT64:
            if (!isfinite(v->f) || v->f != floor(v->f) || fabs(v->f) >= 18446744073709551616.0) return false;
            *neg = v->f < 0;
            *mag = (uint64_t)fabs(v->f);
            return true;
        default: return false;
    }
}

int fb_revpi_encode(const struct fb_revpi_loc *l, enum fb_type t, const struct fb_value *v, uint8_t out[8],
                    uint32_t *nbytes, bool *bitval, struct fb_err *err)
{
    *nbytes = 0;
    *bitval = false;
    if (v->type == FB_T_STRING || v->type == FB_T_NONE || v->type >= FB_T__COUNT)
        return fb_err_set(err, FB_EINVAL, "only numbers and booleans can be written to the process image");
    if (fb_revpi_type_check(t, l->bits, err) < 0) return FB_EINVAL;
    bool neg = false;
    uint64_t mag = 0;
    bool is_int = value_int(v, &neg, &mag);
    if (l->bits == 1) {
        if (!is_int || neg || mag > 1) return fb_err_set(err, FB_ERANGE, "a bit takes true/false or 0/1");
        *bitval = mag != 0;
        return 0;
    }
    uint32_t nb = fb_revpi_loc_bytes(l);
    uint64_t raw = 0;
    if (t == FB_T_BOOL) {
        if (!is_int || neg || mag > 1) return fb_err_set(err, FB_ERANGE, "a bool takes true/false or 0/1");
        raw = mag;
    } else if (t == FB_T_FLOAT32 || t == FB_T_FLOAT64) {
        double d;
        if (!fb_value_to_double(v, &d) || !isfinite(d)) return fb_err_set(err, FB_ERANGE, "not a finite number");
        if (t == FB_T_FLOAT32) {
            if (fabs(d) > 3.4028234663852886e38) return fb_err_set(err, FB_ERANGE, "%g is outside float32", d);
            float f = (float)d;
            uint32_t u32;
            memcpy(&u32, &f, sizeof u32);
            raw = u32;
        } else {
            memcpy(&raw, &d, sizeof raw);
        }
    } else {
        if (!is_int) return fb_err_set(err, FB_ERANGE, "%s takes an integer", fb_type_name(t));
        unsigned w = type_bits(t);
        if (fb_type_is_signed(t)) {
            uint64_t lim = (uint64_t)1 << (w - 1); /* |min| */
            if ((neg && mag > lim) || (!neg && mag > lim - 1))
                return fb_err_set(err, FB_ERANGE, "value is outside %s", fb_type_name(t));
            raw = neg ? (uint64_t)0 - mag : mag;
        } else {
            uint64_t max = w == 64 ? UINT64_MAX : (((uint64_t)1 << w) - 1);
            if (neg || mag > max) return fb_err_set(err, FB_ERANGE, "value is outside %s", fb_type_name(t));
            raw = mag;
        }
    }
    for (uint32_t i = 0; i < nb; i++) out[i] = (uint8_t)(raw >> (8 * i));
    *nbytes = nb;
    return 0;
}

/* ------------------------------------------------------------- safe list */
static void trim(const char **s, const char **e)
{
    while (*s < *e && isspace((unsigned char)**s)) (*s)++;
    while (*e > *s && isspace((unsigned char)(*e)[-1])) (*e)--;
}

int fb_revpi_safe_parse(const char *spec, struct fb_revpi_safe **items, uint32_t *n, struct fb_err *err)
{
    *items = NULL;
    *n = 0;
    if (!spec) return 0;
    const char *p = spec;
    while (isspace((unsigned char)*p)) p++;
    if (!*p) return 0;
    uint32_t cap = 1;
    for (const char *q = spec; *q; q++)
        if (*q == ',') cap++;
    struct fb_revpi_safe *it = calloc(cap, sizeof *it);
    if (!it) return fb_err_set(err, FB_ENOMEM, "out of memory");
    uint32_t k = 0;
    for (;;) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        const char *s = p, *se = e;
        trim(&s, &se);
        const char *eq = NULL;
        for (const char *q = s; q < se; q++)
            if (*q == '=') eq = q;
        if (!eq) {
            fb_err_set(err, FB_EINVAL, "safe: '%.*s' is not NAME=VALUE (e.g. safe=O_1=0,O_2=1)", (int)(se - s), s);
            goto fail;
        }
        const char *as = s, *ae = eq, *vs = eq + 1, *ve = se;
        trim(&as, &ae);
        trim(&vs, &ve);
        if (ae == as || (size_t)(ae - as) >= sizeof it[k].addr) {
            fb_err_set(err, FB_EINVAL, "safe: bad address in '%.*s'", (int)(se - s), s);
            goto fail;
        }
        memcpy(it[k].addr, as, (size_t)(ae - as));
        it[k].addr[ae - as] = '\0';
        char vb[64];
        size_t vl = (size_t)(ve - vs);
        if (vl == 0 || vl >= sizeof vb) {
            fb_err_set(err, FB_EINVAL, "safe: '%s' has no value", it[k].addr);
            goto fail;
        }
        memcpy(vb, vs, vl);
        vb[vl] = '\0';
        if (!strcasecmp(vb, "true") || !strcasecmp(vb, "on"))
            it[k].value = 1;
        else if (!strcasecmp(vb, "false") || !strcasecmp(vb, "off"))
            it[k].value = 0;
        else {
            char *end;
            errno = 0;
            double d = strtod(vb, &end);
            if (*end || errno || !isfinite(d)) {
                fb_err_set(err, FB_EINVAL, "safe: value '%s' for '%s' is not a number or true/false", vb, it[k].addr);
                goto fail;
            }
            it[k].value = d;
        }
        k++;
        if (!*e) break;
        p = e + 1;
    }
    *items = it;
    *n = k;
    return 0;
fail:
    free(it);
    return FB_EINVAL;
}
