/* fb.c — the small shared vocabulary: errors, clocks, durations and sizes,
 * quality codes and value types.  Everything here is pure and thread-safe. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timex.h>
#include <time.h>

#include "core/fb.h"

int fb_err_set(struct fb_err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

const char *fb_strerror(int code)
{
    switch (code) {
        case FB_OK: return "ok";
        case FB_EINVAL: return "invalid argument";
        case FB_ENOMEM: return "out of memory";
        case FB_EIO: return "I/O error";
        case FB_ETIMEDOUT: return "timed out";
        case FB_EPROTO: return "protocol error";
        case FB_EEXCEPTION: return "device refused the request";
        case FB_ENOTSUP: return "not supported";
        case FB_ERANGE: return "out of range";
        case FB_EACCES: return "permission denied";
        case FB_ENOENT: return "not found";
        case FB_ECLOSED: return "closed";
        case FB_EAGAIN: return "try again";
    }
    return "unknown error";
}

int64_t fb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t fb_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

bool fb_clock_synced(void)
{
    struct timex tx;
    memset(&tx, 0, sizeof tx); /* modes 0: read only */
    int st = adjtimex(&tx);
    return st != -1 && st != TIME_ERROR && !(tx.status & STA_UNSYNC);
}

/* Civil date from days since the epoch (proleptic Gregorian); avoids gmtime_r
 * and its locks on the hot path, and a 32-bit time_t (armhf) past 2038. */
void fb_civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yy + (*m <= 2));
}

size_t fb_fmt_time(char *buf, int64_t ns)
{
    int64_t s = ns >= 0 ? ns / 1000000000LL : (ns - 999999999LL) / 1000000000LL;
    int64_t ms = (ns - s * 1000000000LL) / 1000000LL;
    int64_t days = s >= 0 ? s / 86400 : (s - 86399) / 86400;
    int64_t sod = s - days * 86400;
    int y;
    unsigned mo, d;
    fb_civil_from_days(days, &y, &mo, &d);
    unsigned hh = (unsigned)(sod / 3600), mi = (unsigned)(sod / 60 % 60), ss = (unsigned)(sod % 60);
    char *p = buf;
    if (y < 0 || y > 9999) y = y < 0 ? 0 : 9999;
    p[0] = (char)('0' + y / 1000);
    p[1] = (char)('0' + y / 100 % 10);
    p[2] = (char)('0' + y / 10 % 10);
    p[3] = (char)('0' + y % 10);
    p[4] = '-';
    p[5] = (char)('0' + mo / 10);
    p[6] = (char)('0' + mo % 10);
    p[7] = '-';
    p[8] = (char)('0' + d / 10);
    p[9] = (char)('0' + d % 10);
    p[10] = 'T';
    p[11] = (char)('0' + hh / 10);
    p[12] = (char)('0' + hh % 10);
    p[13] = ':';
    p[14] = (char)('0' + mi / 10);
    p[15] = (char)('0' + mi % 10);
    p[16] = ':';
    p[17] = (char)('0' + ss / 10);
    p[18] = (char)('0' + ss % 10);
    p[19] = '.';
    p[20] = (char)('0' + ms / 100);
    p[21] = (char)('0' + ms / 10 % 10);
    p[22] = (char)('0' + ms % 10);
    p[23] = 'Z';
    p[24] = 0;
    return 24;
}

/* Days since the epoch from a civil date (the inverse of civil_from_days). */
static int64_t days_from_civil(int y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *s, size_t n, unsigned *v)
{
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        *v = *v * 10 + (unsigned)(s[i] - '0');
    }
    return true;
}

bool fb_parse_time(const char *s, size_t n, int64_t *ns)
{
    unsigned y, mo, d, h, mi, sec;
    if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':' ||
        (s[n - 1] != 'Z' && s[n - 1] != 'z'))
        return false;
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) || !digits(s + 11, 2, &h) ||
        !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &sec))
        return false;
    static const unsigned mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60) return false;
    int64_t frac = 0;
    size_t i = 19;
    if (i < n - 1) {
        if (s[i] != '.' || n - 1 - (i + 1) < 1 || n - 1 - (i + 1) > 9) return false;
        int64_t scale = 100000000;
        for (i++; i < n - 1; i++, scale /= 10) {
            if (s[i] < '0' || s[i] > '9') return false;
            frac += (s[i] - '0') * scale;
        }
    }
    int64_t days = days_from_civil((int)y, mo, d);
    int64_t secs = days * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 + sec;
    /* int64 nanoseconds reach from 1677 to 2262 */
    if (secs <= INT64_MIN / 1000000000LL || secs >= INT64_MAX / 1000000000LL) return false;
    *ns = secs * 1000000000LL + frac;
    return true;
}

struct unit {
    const char *u;
    double mul;
};

/* A non-negative number, optionally followed by one of `units` (none: `dflt`
 * times the number), as a double no larger than `max`. */
static int parse_with_unit(const char *s, const struct unit *units, size_t nunits, double dflt, double max, double *out)
{
    char *end;
    errno = 0;
    if (!s) return FB_EINVAL;
    while (isspace((unsigned char)*s)) s++;
    if (!*s || *s == '+' || (!isdigit((unsigned char)*s) && *s != '.' && *s != '-')) return FB_EINVAL;
    double v = strtod(s, &end);
    if (end == s || errno == ERANGE || !isfinite(v) || v < 0) return FB_EINVAL;
    while (isspace((unsigned char)*end)) end++;
    double mul = dflt;
    if (*end) {
        size_t i = 0;
        while (i < nunits && strcmp(end, units[i].u) != 0) i++;
        if (i == nunits) return FB_EINVAL;
        mul = units[i].mul;
    }
    *out = v * mul;
    return *out > max ? FB_ERANGE : 0;
}

int fb_parse_duration(const char *s, int64_t *ns)
{
    static const struct unit units[] = {
        {"ns", 1},   {"us", 1e3},   {"µs", 1e3},   {"ms", 1e6},    {"s", 1e9},
        {"m", 60e9}, {"min", 60e9}, {"h", 3600e9}, {"d", 86400e9}, {"w", 7 * 86400e9},
    };
    double r;
    int rc = parse_with_unit(s, units, sizeof units / sizeof units[0], 1e9, 9.2e18, &r);
    if (rc == 0) *ns = (int64_t)llround(r);
    return rc;
}

int fb_parse_size(const char *s, uint64_t *bytes)
{
    static const struct unit units[] = {
        {"B", 1},
        {"k", 1e3},
        {"K", 1e3},
        {"kB", 1e3},
        {"KB", 1e3},
        {"MB", 1e6},
        {"M", 1e6},
        {"GB", 1e9},
        {"G", 1e9},
        {"TB", 1e12},
        {"KiB", 1024.0},
        {"MiB", 1048576.0},
        {"GiB", 1073741824.0},
        {"TiB", 1099511627776.0},
    };
    double r;
    int rc = parse_with_unit(s, units, sizeof units / sizeof units[0], 1, 1.8e19, &r);
    if (rc == 0) *bytes = (uint64_t)llround(r);
    return rc;
}

void fb_backoff_init(struct fb_backoff *b, int64_t min_ns, int64_t max_ns)
{
    b->min_ns = min_ns > 0 ? min_ns : 1000000000LL;
    b->max_ns = max_ns >= b->min_ns ? max_ns : b->min_ns;
    b->cur_ns = b->min_ns;
    b->rng = (uint64_t)fb_now_ns() ^ ((uint64_t)(uintptr_t)b << 16) ^ 0x9E3779B97F4A7C15ull;
    if (!b->rng) b->rng = 1;
}

int64_t fb_backoff_next(struct fb_backoff *b)
{
    int64_t d = b->cur_ns;
    b->cur_ns = d > b->max_ns / 2 ? b->max_ns : d * 2;
    uint64_t x = b->rng; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b->rng = x;
    return d / 2 + (int64_t)(x % (uint64_t)(d / 2 + 1));
}

/* ---------------------------------------------------------------- quality */
const char *fb_q_severity(uint32_t q)
{
    if (fb_q_bad(q)) return "bad";
    if (q & 0x40000000u) return "uncertain";
    return "good";
}

static const struct {
    uint32_t code;
    const char *name;
} q_names[] = {
    {FB_Q_GOOD, "Good"},
    {FB_Q_UNCERTAIN, "Uncertain"},
    {FB_Q_BAD, "Bad"},
    {FB_Q_BAD_INTERNAL, "BadInternalError"},
    {FB_Q_BAD_COMM, "BadCommunicationError"},
    {FB_Q_BAD_DECODING, "BadDecodingError"},
    {FB_Q_BAD_TIMEOUT, "BadTimeout"},
    {FB_Q_BAD_NO_COMM, "BadNoCommunication"},
    {FB_Q_BAD_WAITING, "BadWaitingForInitialData"},
    {FB_Q_BAD_NODE_UNKNOWN, "BadNodeIdUnknown"},
    {0x80370000u, "BadIndexRangeNoData"},
    {0x80360000u, "BadIndexRangeInvalid"},
    {0x80330000u, "BadNodeIdInvalid"},
    {0x80350000u, "BadAttributeIdInvalid"},
    {0x801F0000u, "BadUserAccessDenied"},
    {0x80200000u, "BadIdentityTokenInvalid"},
    {0x80210000u, "BadIdentityTokenRejected"},
    {0x80570000u, "BadUserSignatureInvalid"},
    {0x80040000u, "BadResourceUnavailable"},
    {FB_Q_BAD_NOT_READABLE, "BadNotReadable"},
    {FB_Q_BAD_NOT_WRITABLE, "BadNotWritable"},
    {FB_Q_BAD_OUT_OF_RANGE, "BadOutOfRange"},
    {FB_Q_BAD_TYPE_MISMATCH, "BadTypeMismatch"},
    {FB_Q_BAD_CONFIG, "BadConfigurationError"},
    {FB_Q_BAD_NOT_CONNECTED, "BadNotConnected"},
    {FB_Q_BAD_DEVICE_FAILURE, "BadDeviceFailure"},
    {FB_Q_BAD_SENSOR_FAILURE, "BadSensorFailure"},
    {FB_Q_UNC_LAST_USABLE, "UncertainLastUsableValue"},
    {FB_Q_UNC_NOT_ACCURATE, "UncertainSensorNotAccurate"},
    {FB_Q_UNC_EU_EXCEEDED, "UncertainEngineeringUnitsExceeded"},
};

bool fb_q_parse(const char *s, size_t n, uint32_t *q)
{
    for (size_t i = 0; i < sizeof q_names / sizeof q_names[0]; i++)
        if (strlen(q_names[i].name) == n && !memcmp(q_names[i].name, s, n)) {
            *q = q_names[i].code;
            return true;
        }
    if (n != 10 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X')) return false;
    uint32_t v = 0;
    for (size_t i = 2; i < n; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return false;
        v = v << 4 | (uint32_t)d;
    }
    *q = v;
    return true;
}

const char *fb_q_name(uint32_t q, char buf[16])
{
    /* The low 16 bits carry info bits (e.g. limits); the name is in the high 16. */
    uint32_t key = q & 0xFFFF0000u;
    for (size_t i = 0; i < sizeof q_names / sizeof q_names[0]; i++)
        if (q_names[i].code == key) return q_names[i].name;
    snprintf(buf, 16, "0x%08X", (unsigned)q);
    return buf;
}

/* ------------------------------------------------------------------ types */
static const char *const type_names[FB_T__COUNT] = {
    [FB_T_NONE] = "none",     [FB_T_BOOL] = "bool",     [FB_T_INT8] = "int8",       [FB_T_UINT8] = "uint8",
    [FB_T_INT16] = "int16",   [FB_T_UINT16] = "uint16", [FB_T_INT32] = "int32",     [FB_T_UINT32] = "uint32",
    [FB_T_INT64] = "int64",   [FB_T_UINT64] = "uint64", [FB_T_FLOAT32] = "float32", [FB_T_FLOAT64] = "float64",
    [FB_T_STRING] = "string", [FB_T_BLOCK] = "block",
};

const char *fb_type_name(enum fb_type t) { return (unsigned)t < FB_T__COUNT ? type_names[t] : "?"; }

enum fb_type fb_type_parse(const char *s)
{
    if (!s) return FB_T_NONE;
    for (int t = FB_T_BOOL; t <= FB_T_STRING; t++) /* a block is no tag type */
        if (strcasecmp(s, type_names[t]) == 0) return (enum fb_type)t;
    /* common aliases */
    if (!strcasecmp(s, "float") || !strcasecmp(s, "real")) return FB_T_FLOAT32;
    if (!strcasecmp(s, "double") || !strcasecmp(s, "lreal")) return FB_T_FLOAT64;
    if (!strcasecmp(s, "boolean")) return FB_T_BOOL;
    return FB_T_NONE;
}

bool fb_value_to_double(const struct fb_value *v, double *out)
{
    switch (v->type) {
        case FB_T_BOOL: *out = v->b ? 1.0 : 0.0; return true;
        case FB_T_INT8:
        case FB_T_INT16:
        case FB_T_INT32:
        case FB_T_INT64: *out = (double)v->i; return true;
        case FB_T_UINT8:
        case FB_T_UINT16:
        case FB_T_UINT32:
        case FB_T_UINT64: *out = (double)v->u; return true;
        case FB_T_FLOAT32:
        case FB_T_FLOAT64: *out = v->f; return true;
        default: return false;
    }
}

int fb_value_from_double(enum fb_type t, double d, struct fb_value *out)
{
    static const struct {
        double lo, hi;
    } lim[FB_T__COUNT] = {
        [FB_T_INT8] = {-128, 127},
        [FB_T_UINT8] = {0, 255},
        [FB_T_INT16] = {-32768, 32767},
        [FB_T_UINT16] = {0, 65535},
        [FB_T_INT32] = {-2147483648.0, 2147483647.0},
        [FB_T_UINT32] = {0, 4294967295.0},
        [FB_T_INT64] = {-9223372036854775808.0, 9223372036854775807.0},
        [FB_T_UINT64] = {0, 18446744073709551615.0},
    };
    if (!isfinite(d) && t != FB_T_FLOAT32 && t != FB_T_FLOAT64) return FB_ERANGE;
    out->type = (uint8_t)t;
    switch (t) {
        case FB_T_BOOL:
            if (d != 0.0 && d != 1.0) return FB_ERANGE;
            out->b = d != 0.0;
            return 0;
        case FB_T_FLOAT32:
            if (isfinite(d) && fabs(d) > 3.4028234663852886e38) return FB_ERANGE;
            out->f = (double)(float)d;
            return 0;
        case FB_T_FLOAT64: out->f = d; return 0;
        case FB_T_STRING:
        case FB_T_BLOCK:
        case FB_T_NONE:
        case FB_T__COUNT: return FB_EINVAL;
        default: break;
    }
    double r = nearbyint(d);
    if (r < lim[t].lo || r > lim[t].hi) return FB_ERANGE;
    if (fb_type_is_signed(t)) {
        if (t == FB_T_INT64 && r >= 9223372036854775807.0) return FB_ERANGE;
        out->i = (int64_t)r;
    } else {
        if (t == FB_T_UINT64 && r >= 18446744073709551615.0) return FB_ERANGE;
        out->u = (uint64_t)r;
    }
    return 0;
}

bool fb_value_equal(const struct fb_value *a, const struct fb_value *b)
{
    if (a->type != b->type) return false;
    switch (a->type) {
        case FB_T_BOOL: return a->b == b->b;
        case FB_T_INT8:
        case FB_T_INT16:
        case FB_T_INT32:
        case FB_T_INT64: return a->i == b->i;
        case FB_T_UINT8:
        case FB_T_UINT16:
        case FB_T_UINT32:
        case FB_T_UINT64: return a->u == b->u;
        case FB_T_FLOAT32:
        case FB_T_FLOAT64: return a->f == b->f || (isnan(a->f) && isnan(b->f));
        case FB_T_STRING: return a->s.len == b->s.len && (a->s.len == 0 || memcmp(a->s.p, b->s.p, a->s.len) == 0);
        default: return true;
    }
}

_Noreturn void fb_assert_fail(const char *cond, const char *file, int line, const char *func)
{
    fprintf(stderr, "fieldbridge: internal error: %s:%d: %s: assertion '%s' failed\n", file, line, func, cond);
    fflush(stderr);
    abort();
}
