/* buf.c — growable byte buffer and the JSON writer used on hot paths.
 *
 * The buffer doubles when it must grow and is then reused (fb_buf_clear), so
 * steady-state encoding never allocates.  OOM aborts: a gateway that cannot
 * grow a few-kB encode buffer cannot do anything useful.
 *
 * Numbers.  Integers are written exactly (two digits per step from a table).
 * Doubles and floats are written as the SHORTEST decimal text that strtod /
 * strtof read back to the identical bits, choosing the closest such text when
 * several of that length exist.  Three layers:
 *   1. exact integer fast path: an integral value with |v| < 2^53 is printed
 *      as the integer it is (no shorter digit string can denote it, because
 *      every integer below 2^53 is itself representable);
 *   2. Grisu3 (Loitsch, "Printing floating-point numbers quickly and
 *      accurately with integers", PLDI 2010): 64-bit "do-it-yourself" floats
 *      and a table of cached powers of ten; it either proves its digits are
 *      the shortest and closest, or reports that it cannot decide (~0.5 % of
 *      inputs);
 *   3. exact fallback: Steele & White / Burger & Dybvig free-format digit
 *      generation with small fixed-size bignums (no allocation), which honours
 *      round-half-even boundaries exactly.
 * The float path runs the same code with the float's precision and exponent
 * range, so 0.1f prints "0.1", not "0.10000000149011612".
 *
 * Layout follows ECMAScript Number.prototype.toString: plain notation for
 * decimal exponents in [-7, 21), exponent form otherwise ("1e+21", "5e-324",
 * "1.5e-7").  -0 is written as "-0" (valid JSON, reads back as -0.0).
 * NaN and infinities are written as null (callers pair that with a bad
 * quality).
 *
 * Strings: quotes, backslash and control characters are escaped (\n, \t, ...
 * or \u00XX); valid UTF-8 is copied as is; every maximal invalid subsequence
 * is replaced by \ufffd, so the output is always valid JSON in valid UTF-8. */
#include "core/buf.h"
#include "core/fb.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ buffer */
void fb_buf_init(struct fb_buf *b)
{
    b->p = NULL;
    b->len = b->cap = 0;
}

void fb_buf_free(struct fb_buf *b)
{
    free(b->p);
    fb_buf_init(b);
}

void fb_buf_grow_(struct fb_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1; /* +1: room for fb_buf_cstr's NUL */
    if (need < b->len) abort();       /* overflow */
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        fputs("fieldbridge: out of memory growing a buffer\n", stderr);
        abort();
    }
    b->p = p;
    b->cap = cap;
}

static inline void buf_need(struct fb_buf *b, size_t extra)
{
    if (b->cap - b->len <= extra) fb_buf_grow_(b, extra);
}

void fb_buf_reserve(struct fb_buf *b, size_t extra) { buf_need(b, extra); }

void fb_buf_printf(struct fb_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_need(b, 64);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= b->cap - b->len) {
        buf_need(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

const char *fb_buf_cstr(struct fb_buf *b)
{
    buf_need(b, 1);
    b->p[b->len] = 0;
    return b->p;
}

/* ---------------------------------------------------------------- integers */
static const char digit_pairs[201] = "00010203040506070809"
                                     "10111213141516171819"
                                     "20212223242526272829"
                                     "30313233343536373839"
                                     "40414243444546474849"
                                     "50515253545556575859"
                                     "60616263646566676869"
                                     "70717273747576777879"
                                     "80818283848586878889"
                                     "90919293949596979899";

/* Writes v in decimal ending just before `end`; returns the first char. */
static char *u64_rev(char *end, uint64_t v)
{
    char *p = end;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        p -= 2;
        memcpy(p, digit_pairs + 2 * r, 2);
    }
    if (v >= 10) {
        p -= 2;
        memcpy(p, digit_pairs + 2 * v, 2);
    } else {
        *--p = (char)('0' + v);
    }
    return p;
}

/* Writes sign and digits at dst (needs 21 bytes); returns the length. */
static size_t put_u64(char *dst, uint64_t v, bool neg)
{
    char tmp[24];
    char *end = tmp + sizeof tmp;
    char *p = u64_rev(end, v);
    if (neg) *--p = '-';
    size_t n = (size_t)(end - p);
    memcpy(dst, p, n);
    return n;
}

size_t fb_fmt_i64(char *dst, int64_t v)
{
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v; /* INT64_MIN safe */
    return put_u64(dst, m, v < 0);
}

size_t fb_fmt_u64(char *dst, uint64_t v) { return put_u64(dst, v, false); }

void fb_json_u64(struct fb_buf *b, uint64_t v)
{
    buf_need(b, 24);
    b->len += put_u64(b->p + b->len, v, false);
}

void fb_json_i64(struct fb_buf *b, int64_t v)
{
    buf_need(b, 24);
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v; /* INT64_MIN safe */
    b->len += put_u64(b->p + b->len, m, v < 0);
}

/* ------------------------------------------------- shortest floating point */
/* A binary float, generic over double and float: value = f * 2^e, f an
 * integer with at most `bits` significant bits. */
struct fmt_spec {
    int mant_bits; /* explicit mantissa bits: 52 / 23 */
    int min_e;     /* exponent of the smallest subnormal: -1074 / -149 */
};
static const struct fmt_spec SPEC_DOUBLE = {52, -1074};
static const struct fmt_spec SPEC_FLOAT = {23, -149};

struct diy {
    uint64_t f;
    int e;
};

/* Normalised significands of 10^q for q = -348, -340, ..., 340, rounded to
 * nearest: 10^q ~ f * 2^e with 2^63 <= f < 2^64.  Generated with exact
 * rational arithmetic (Python fractions) by the project; step 8 suffices
 * because the target exponent window below is 28 bits wide > log2(10^8). */
#define POW_Q0 (-348)
#define POW_STEP 8
static const struct diy cached_pow[] = {
    {0xFA8FD5A0081C0288ull, -1220}, {0xBAAEE17FA23EBF76ull, -1193}, {0x8B16FB203055AC76ull, -1166},
    {0xCF42894A5DCE35EAull, -1140}, {0x9A6BB0AA55653B2Dull, -1113}, {0xE61ACF033D1A45DFull, -1087},
    {0xAB70FE17C79AC6CAull, -1060}, {0xFF77B1FCBEBCDC4Full, -1034}, {0xBE5691EF416BD60Cull, -1007},
    {0x8DD01FAD907FFC3Cull, -980},  {0xD3515C2831559A83ull, -954},  {0x9D71AC8FADA6C9B5ull, -927},
    {0xEA9C227723EE8BCBull, -901},  {0xAECC49914078536Dull, -874},  {0x823C12795DB6CE57ull, -847},
    {0xC21094364DFB5637ull, -821},  {0x9096EA6F3848984Full, -794},  {0xD77485CB25823AC7ull, -768},
    {0xA086CFCD97BF97F4ull, -741},  {0xEF340A98172AACE5ull, -715},  {0xB23867FB2A35B28Eull, -688},
    {0x84C8D4DFD2C63F3Bull, -661},  {0xC5DD44271AD3CDBAull, -635},  {0x936B9FCEBB25C996ull, -608},
    {0xDBAC6C247D62A584ull, -582},  {0xA3AB66580D5FDAF6ull, -555},  {0xF3E2F893DEC3F126ull, -529},
    {0xB5B5ADA8AAFF80B8ull, -502},  {0x87625F056C7C4A8Bull, -475},  {0xC9BCFF6034C13053ull, -449},
    {0x964E858C91BA2655ull, -422},  {0xDFF9772470297EBDull, -396},  {0xA6DFBD9FB8E5B88Full, -369},
    {0xF8A95FCF88747D94ull, -343},  {0xB94470938FA89BCFull, -316},  {0x8A08F0F8BF0F156Bull, -289},
    {0xCDB02555653131B6ull, -263},  {0x993FE2C6D07B7FACull, -236},  {0xE45C10C42A2B3B06ull, -210},
    {0xAA242499697392D3ull, -183},  {0xFD87B5F28300CA0Eull, -157},  {0xBCE5086492111AEBull, -130},
    {0x8CBCCC096F5088CCull, -103},  {0xD1B71758E219652Cull, -77},   {0x9C40000000000000ull, -50},
    {0xE8D4A51000000000ull, -24},   {0xAD78EBC5AC620000ull, 3},     {0x813F3978F8940984ull, 30},
    {0xC097CE7BC90715B3ull, 56},    {0x8F7E32CE7BEA5C70ull, 83},    {0xD5D238A4ABE98068ull, 109},
    {0x9F4F2726179A2245ull, 136},   {0xED63A231D4C4FB27ull, 162},   {0xB0DE65388CC8ADA8ull, 189},
    {0x83C7088E1AAB65DBull, 216},   {0xC45D1DF942711D9Aull, 242},   {0x924D692CA61BE758ull, 269},
    {0xDA01EE641A708DEAull, 295},   {0xA26DA3999AEF774Aull, 322},   {0xF209787BB47D6B85ull, 348},
    {0xB454E4A179DD1877ull, 375},   {0x865B86925B9BC5C2ull, 402},   {0xC83553C5C8965D3Dull, 428},
    {0x952AB45CFA97A0B3ull, 455},   {0xDE469FBD99A05FE3ull, 481},   {0xA59BC234DB398C25ull, 508},
    {0xF6C69A72A3989F5Cull, 534},   {0xB7DCBF5354E9BECEull, 561},   {0x88FCF317F22241E2ull, 588},
    {0xCC20CE9BD35C78A5ull, 614},   {0x98165AF37B2153DFull, 641},   {0xE2A0B5DC971F303Aull, 667},
    {0xA8D9D1535CE3B396ull, 694},   {0xFB9B7CD9A4A7443Cull, 720},   {0xBB764C4CA7A44410ull, 747},
    {0x8BAB8EEFB6409C1Aull, 774},   {0xD01FEF10A657842Cull, 800},   {0x9B10A4E5E9913129ull, 827},
    {0xE7109BFBA19C0C9Dull, 853},   {0xAC2820D9623BF429ull, 880},   {0x80444B5E7AA7CF85ull, 907},
    {0xBF21E44003ACDD2Dull, 933},   {0x8E679C2F5E44FF8Full, 960},   {0xD433179D9C8CB841ull, 986},
    {0x9E19DB92B4E31BA9ull, 1013},  {0xEB96BF6EBADF77D9ull, 1039},  {0xAF87023B9BF0EE6Bull, 1066},
};
#define NPOW ((int)(sizeof cached_pow / sizeof cached_pow[0]))

static inline struct diy diy_mul(struct diy a, struct diy b)
{
#ifdef __SIZEOF_INT128__
    unsigned __int128 p = (unsigned __int128)a.f * b.f;
    uint64_t hi = (uint64_t)(p >> 64), lo = (uint64_t)p;
#else /* 32-bit targets (armhf): the 128-bit product from four 32x32 bit ones */
    uint64_t a1 = a.f >> 32, a0 = a.f & 0xFFFFFFFFu, b1 = b.f >> 32, b0 = b.f & 0xFFFFFFFFu;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t mid = (p00 >> 32) + (p01 & 0xFFFFFFFFu) + (p10 & 0xFFFFFFFFu);
    uint64_t hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32), lo = (mid << 32) | (p00 & 0xFFFFFFFFu);
#endif
    hi += lo >> 63; /* round to nearest */
    return (struct diy){hi, a.e + b.e + 64};
}

static inline struct diy diy_norm(struct diy a)
{
    int s = __builtin_clzll(a.f);
    return (struct diy){a.f << s, a.e - s};
}

/* Pull the last digit down towards w while that brings it closer, then check
 * the result is provably the closest shortest one (Grisu3's "round_weed").
 * All quantities are in units of the scaled exponent. */
static bool round_weed(char *buf, int len, uint64_t dist_high_w, uint64_t unsafe, uint64_t rest, uint64_t ten_kappa,
                       uint64_t unit)
{
    uint64_t small = dist_high_w - unit; /* conservative distances to w */
    uint64_t big = dist_high_w + unit;
    while (rest < small && unsafe - rest >= ten_kappa &&
           (rest + ten_kappa < small || small - rest >= rest + ten_kappa - small)) {
        buf[len - 1]--;
        rest += ten_kappa;
    }
    if (rest < big && unsafe - rest >= ten_kappa && (rest + ten_kappa < big || big - rest > rest + ten_kappa - big))
        return false; /* w's true position could favour the next candidate */
    return 2 * unit <= rest && rest <= unsafe - 4 * unit;
}

static const uint32_t pow10_u32[10] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000};

/* Grisu3 digit generation.  low/w/high share one exponent in [-60, -32]. */
static bool digit_gen(struct diy low, struct diy w, struct diy high, char *buf, int *len, int *kappa)
{
    uint64_t unit = 1;
    uint64_t too_low = low.f - unit, too_high = high.f + unit;
    uint64_t unsafe = too_high - too_low;
    int sh = -w.e;
    uint64_t one = (uint64_t)1 << sh, mask = one - 1;
    uint32_t integrals = (uint32_t)(too_high >> sh);
    uint64_t fractionals = too_high & mask;
    int kap = 1;
    while (kap < 10 && integrals >= pow10_u32[kap]) kap++;
    uint32_t divisor = pow10_u32[kap - 1];
    int n = 0;
    while (kap > 0) {
        uint32_t dg;
        switch (kap) { /* constant divisors: the compiler multiplies instead of dividing */
            case 10:
                dg = integrals / 1000000000u;
                integrals %= 1000000000u;
                break;
            case 9:
                dg = integrals / 100000000u;
                integrals %= 100000000u;
                break;
            case 8:
                dg = integrals / 10000000u;
                integrals %= 10000000u;
                break;
            case 7:
                dg = integrals / 1000000u;
                integrals %= 1000000u;
                break;
            case 6:
                dg = integrals / 100000u;
                integrals %= 100000u;
                break;
            case 5:
                dg = integrals / 10000u;
                integrals %= 10000u;
                break;
            case 4:
                dg = integrals / 1000u;
                integrals %= 1000u;
                break;
            case 3:
                dg = integrals / 100u;
                integrals %= 100u;
                break;
            case 2:
                dg = integrals / 10u;
                integrals %= 10u;
                break;
            default:
                dg = integrals;
                integrals = 0;
                break;
        }
        buf[n++] = (char)('0' + dg);
        kap--;
        uint64_t rest = ((uint64_t)integrals << sh) + fractionals;
        if (rest < unsafe) {
            *len = n;
            *kappa = kap;
            return round_weed(buf, n, too_high - w.f, unsafe, rest, (uint64_t)divisor << sh, unit);
        }
        divisor /= 10;
    }
    for (;;) {
        fractionals *= 10;
        unit *= 10;
        unsafe *= 10;
        buf[n++] = (char)('0' + (fractionals >> sh));
        fractionals &= mask;
        kap--;
        if (fractionals < unsafe) {
            *len = n;
            *kappa = kap;
            return round_weed(buf, n, (too_high - w.f) * unit, unsafe, fractionals, one, unit);
        }
        if (n >= 20) return false; /* cannot happen; never overrun buf */
    }
}

/* value = f * 2^e (f != 0, f < 2^(mant_bits+1)); lower_closer when the gap
 * below is half the gap above (f is exactly the hidden bit and not the
 * smallest normal exponent).  Digits go to buf, value = digits * 10^*e10. */
static bool grisu3(uint64_t f, int e, bool lower_closer, char *buf, int *len, int *e10)
{
    struct diy w = diy_norm((struct diy){f, e});
    struct diy hi = diy_norm((struct diy){(f << 1) + 1, e - 1});
    struct diy lo = lower_closer ? (struct diy){(f << 2) - 1, e - 2} : (struct diy){(f << 1) - 1, e - 1};
    lo.f <<= lo.e - hi.e;
    lo.e = hi.e;
    /* cached power c with w.e + c.e + 64 in [-60, -32] */
    int cmin = -60 - 64 - w.e, cmax = -32 - 64 - w.e;
    int q = ((cmin + 63) * 78913 + (1 << 18) - 1) >> 18; /* ~ceil(x log10 2); fixed below */
    int i = (q - POW_Q0 + POW_STEP - 1) / POW_STEP;
    if (i < 0) i = 0;
    if (i >= NPOW) i = NPOW - 1;
    while (i < NPOW - 1 && cached_pow[i].e < cmin) i++;
    while (i > 0 && cached_pow[i].e > cmax) i--;
    if (cached_pow[i].e < cmin || cached_pow[i].e > cmax) return false;
    struct diy c = cached_pow[i];
    int qc = POW_Q0 + i * POW_STEP;
    struct diy sw = diy_mul(w, c), slo = diy_mul(lo, c), shi = diy_mul(hi, c);
    int kappa;
    if (!digit_gen(slo, sw, shi, buf, len, &kappa)) return false;
    *e10 = kappa - qc;
    return true;
}

/* ---- exact fallback: free-format shortest digits with fixed bignums ---- */
#define BN_LIMBS 40 /* 1280 bits; the worst case (subnormal * 10^324) needs ~1130 */
struct bn {
    int n; /* used limbs, no leading zero limbs */
    uint32_t d[BN_LIMBS];
};

static void bn_set(struct bn *a, uint64_t v)
{
    a->n = 0;
    while (v) {
        a->d[a->n++] = (uint32_t)v;
        v >>= 32;
    }
}

static void bn_mul_small(struct bn *a, uint32_t m)
{
    uint64_t carry = 0;
    for (int i = 0; i < a->n; i++) {
        uint64_t t = (uint64_t)a->d[i] * m + carry;
        a->d[i] = (uint32_t)t;
        carry = t >> 32;
    }
    if (carry && a->n < BN_LIMBS) a->d[a->n++] = (uint32_t)carry;
}

static void bn_mul_pow10(struct bn *a, int k)
{
    while (k >= 9) {
        bn_mul_small(a, 1000000000u);
        k -= 9;
    }
    if (k > 0) bn_mul_small(a, pow10_u32[k]);
}

static void bn_shl(struct bn *a, int bits)
{
    if (!a->n || bits <= 0) return;
    int limbs = bits / 32, r = bits % 32;
    int n = a->n + limbs + 1;
    if (n > BN_LIMBS) n = BN_LIMBS;
    for (int i = n - 1; i >= 0; i--) {
        int s = i - limbs;
        uint64_t v = 0;
        if (s >= 0 && s < a->n) v = (uint64_t)a->d[s] << r;
        if (r && s - 1 >= 0 && s - 1 < a->n) v |= a->d[s - 1] >> (32 - r);
        a->d[i] = (uint32_t)v;
    }
    a->n = n;
    while (a->n && !a->d[a->n - 1]) a->n--;
}

static int bn_cmp(const struct bn *a, const struct bn *b)
{
    if (a->n != b->n) return a->n < b->n ? -1 : 1;
    for (int i = a->n - 1; i >= 0; i--)
        if (a->d[i] != b->d[i]) return a->d[i] < b->d[i] ? -1 : 1;
    return 0;
}

static void bn_add(struct bn *out, const struct bn *a, const struct bn *b)
{
    int n = a->n > b->n ? a->n : b->n;
    uint64_t carry = 0;
    for (int i = 0; i < n; i++) {
        uint64_t t = carry;
        if (i < a->n) t += a->d[i];
        if (i < b->n) t += b->d[i];
        out->d[i] = (uint32_t)t;
        carry = t >> 32;
    }
    out->n = n;
    if (carry && n < BN_LIMBS) out->d[out->n++] = (uint32_t)carry;
}

static void bn_sub(struct bn *a, const struct bn *b) /* a -= b, a >= b */
{
    int64_t borrow = 0;
    for (int i = 0; i < a->n; i++) {
        int64_t t = (int64_t)a->d[i] - borrow - (i < b->n ? (int64_t)b->d[i] : 0);
        borrow = t < 0;
        a->d[i] = (uint32_t)(t + (borrow ? ((int64_t)1 << 32) : 0));
    }
    while (a->n && !a->d[a->n - 1]) a->n--;
}

/* cmp(a + b, c) */
static int bn_cmp_sum(const struct bn *a, const struct bn *b, const struct bn *c)
{
    struct bn t;
    bn_add(&t, a, b);
    return bn_cmp(&t, c);
}

static void exact_shortest(uint64_t f, int e, bool lower_closer, char *buf, int *len, int *e10)
{
    struct bn r, s, mp, mm;
    bool even = (f & 1) == 0; /* round-half-even: boundaries belong to even f */
    /* v = r/s, upper half-gap = mp/s, lower half-gap = mm/s */
    bn_set(&r, f);
    bn_set(&s, 1);
    bn_set(&mp, 1);
    bn_set(&mm, 1);
    if (e >= 0) {
        bn_shl(&r, e + (lower_closer ? 2 : 1));
        bn_set(&s, lower_closer ? 4 : 2);
        bn_shl(&mp, e + (lower_closer ? 1 : 0));
        bn_shl(&mm, e);
    } else {
        bn_shl(&r, lower_closer ? 2 : 1);
        bn_shl(&s, -e + (lower_closer ? 2 : 1));
        if (lower_closer) bn_set(&mp, 2);
    }
    int bits = 64 - __builtin_clzll(f) + e; /* v in [2^(bits-1), 2^bits) */
    int k = (int)ceil((bits - 1) * 0.30102999566398114 - 1e-9);
    if (k >= 0) {
        bn_mul_pow10(&s, k);
    } else {
        bn_mul_pow10(&r, -k);
        bn_mul_pow10(&mp, -k);
        bn_mul_pow10(&mm, -k);
    }
    for (;;) { /* fix the estimate: want v + gap < 10^k (<= when inclusive) */
        int c = bn_cmp_sum(&r, &mp, &s);
        if (c > 0 || (even && c == 0)) {
            bn_mul_small(&s, 10);
            k++;
        } else {
            break;
        }
    }
    int n = 0;
    for (;;) {
        bn_mul_small(&r, 10);
        bn_mul_small(&mp, 10);
        bn_mul_small(&mm, 10);
        int dgt = 0;
        while (bn_cmp(&r, &s) >= 0) {
            bn_sub(&r, &s);
            dgt++;
        }
        int c1 = bn_cmp(&r, &mm);
        bool tc1 = c1 < 0 || (even && c1 == 0);
        int c2 = bn_cmp_sum(&r, &mp, &s);
        bool tc2 = c2 > 0 || (even && c2 == 0);
        if (!tc1 && !tc2 && n < 24) {
            buf[n++] = (char)('0' + dgt);
            continue;
        }
        if (tc1 && tc2) {
            struct bn r2 = r;
            bn_shl(&r2, 1);
            int c = bn_cmp(&r2, &s);
            if (c > 0 || (c == 0 && (dgt & 1))) dgt++;
        } else if (tc2) {
            dgt++;
        }
        buf[n++] = (char)('0' + dgt);
        break;
    }
    *len = n;
    *e10 = k - n;
}

/* Digits of |v| for a finite nonzero value given as (f, e). */
static void shortest_digits(uint64_t f, int e, bool lower_closer, char *buf, int *len, int *e10)
{
    if (!grisu3(f, e, lower_closer, buf, len, e10)) exact_shortest(f, e, lower_closer, buf, len, e10);
    while (*len > 1 && buf[*len - 1] == '0') { /* defensive: never emit trailing zeros */
        (*len)--;
        (*e10)++;
    }
}

/* Lays out digits d[0..n) * 10^e10 at dst (room for 40 bytes; d is 32 bytes
 * long); returns the length. */
static size_t layout(char *dst, bool neg, const char *d, int n, int e10)
{
    char *p = dst;
    if (neg) *p++ = '-';
    int kpt = n + e10; /* value = 0.d * 10^kpt */
    /* d has 32 bytes (n <= 17 used) and dst room for 40: fixed-size copies
     * compile to a few moves, and bytes past the end are simply not counted */
    if (n <= kpt && kpt <= 21) {
        memcpy(p, d, 24);
        p += n;
        memset(p, '0', (size_t)(kpt - n));
        p += kpt - n;
    } else if (0 < kpt && kpt <= 21) { /* kpt < n <= 17 */
        memcpy(p, d, 16);
        p += kpt;
        *p++ = '.';
        memcpy(p, d + kpt, 16);
        p += n - kpt;
    } else if (-6 < kpt && kpt <= 0) {
        *p++ = '0';
        *p++ = '.';
        memset(p, '0', (size_t)-kpt);
        p += -kpt;
        memcpy(p, d, (size_t)n);
        p += n;
    } else {
        *p++ = d[0];
        if (n > 1) {
            *p++ = '.';
            memcpy(p, d + 1, (size_t)(n - 1));
            p += n - 1;
        }
        *p++ = 'e';
        int x = kpt - 1;
        *p++ = x < 0 ? '-' : '+';
        unsigned ux = (unsigned)(x < 0 ? -x : x);
        if (ux >= 100) *p++ = (char)('0' + ux / 100);
        if (ux >= 10) *p++ = (char)('0' + ux / 10 % 10);
        *p++ = (char)('0' + ux % 10);
    }
    return (size_t)(p - dst);
}

/* Shortest text of a finite value with the given format's precision. */
static size_t fmt_shortest(char *dst, double v, const struct fmt_spec *sp)
{
    bool neg = signbit(v);
    double a = fabs(v);
    if (a == 0) {
        if (neg) *dst++ = '-';
        *dst = '0';
        return neg ? 2 : 1;
    }
    /* exact integer fast path: below 2^(precision) every integer is representable */
    double int_lim = sp == &SPEC_FLOAT ? 16777216.0 : 9007199254740992.0;
    if (a < int_lim && a == (double)(uint64_t)a) return put_u64(dst, (uint64_t)a, neg);
    uint64_t f;
    int e;
    bool lower_closer;
    if (sp == &SPEC_FLOAT) {
        float fl = (float)a;
        uint32_t bits;
        memcpy(&bits, &fl, 4);
        uint32_t be = bits >> 23, m = bits & 0x7FFFFFu;
        if (be == 0) {
            f = m;
            e = sp->min_e;
        } else {
            f = m | 0x800000u;
            e = (int)be - 150;
        }
        lower_closer = m == 0 && be > 1;
    } else {
        uint64_t bits;
        memcpy(&bits, &a, 8);
        uint64_t be = bits >> 52, m = bits & 0xFFFFFFFFFFFFFull;
        if (be == 0) {
            f = m;
            e = sp->min_e;
        } else {
            f = m | 0x10000000000000ull;
            e = (int)be - 1075;
        }
        lower_closer = m == 0 && be > 1;
    }
    char d[32];
    int n, e10;
    shortest_digits(f, e, lower_closer, d, &n, &e10);
    return layout(dst, neg, d, n, e10);
}

void fb_json_time(struct fb_buf *b, int64_t ns)
{
    char t[40];
    size_t n = fb_fmt_time(t, ns);
    fb_buf_putc(b, '"');
    fb_buf_put(b, t, n);
    fb_buf_putc(b, '"');
}

void fb_json_double(struct fb_buf *b, double v)
{
    buf_need(b, 40);
    if (!isfinite(v)) {
        memcpy(b->p + b->len, "null", 4);
        b->len += 4;
        return;
    }
    b->len += fmt_shortest(b->p + b->len, v, &SPEC_DOUBLE);
}

void fb_json_float(struct fb_buf *b, float v)
{
    buf_need(b, 40);
    if (!isfinite(v)) {
        memcpy(b->p + b->len, "null", 4);
        b->len += 4;
        return;
    }
    b->len += fmt_shortest(b->p + b->len, (double)v, &SPEC_FLOAT);
}

/* Clinger's fast path: the shortest digits of a float are at most 9 (an
 * exact integer D) and D × 10^k with |k| <= 22 is one correctly rounded
 * operation on exact operands, i.e. what strtod of the text would give. */
double fb_float_widen(float f)
{
    double a = fabs((double)f);
    if (!isfinite(f) || a == 0 || (a < 16777216.0 && a == (double)(uint64_t)a)) return (double)f;
    uint32_t bits;
    float fa = (float)a;
    memcpy(&bits, &fa, 4);
    uint32_t be = bits >> 23, m = bits & 0x7FFFFFu;
    uint64_t mant = be ? (m | 0x800000u) : m;
    int e = be ? (int)be - 150 : SPEC_FLOAT.min_e;
    char d[32];
    int n, e10;
    shortest_digits(mant, e, m == 0 && be > 1, d, &n, &e10);
    static const double p10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    double r;
    if (n <= 15 && e10 >= -22 && e10 <= 22) {
        uint64_t dv = 0;
        for (int i = 0; i < n; i++) dv = dv * 10 + (uint64_t)(d[i] - '0');
        r = e10 < 0 ? (double)dv / p10[-e10] : (double)dv * p10[e10];
    } else { /* tiny or huge floats: let strtod do it */
        char t[48];
        size_t len = fmt_shortest(t, a, &SPEC_FLOAT);
        t[len] = 0;
        r = strtod(t, NULL); /* the C locale: fieldbridge never calls setlocale */
    }
    return f < 0 ? -r : r;
}

/* ----------------------------------------------------------------- strings */
/* 0: copy as is; 1: escape; 2: start of a multi-byte UTF-8 sequence (validate) */
static const uint8_t str_class[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

/* Length of the valid UTF-8 sequence at s (n bytes available), or the
 * negated length of the maximal invalid prefix to replace (at least 1). */
static int utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    int need;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* > U+10FFFF */
    } else {
        return -1;
    }
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n) return -i;
        unsigned x = s[i];
        if (i == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xBF)) return -i;
    }
    return need + 1;
}

void fb_json_str(struct fb_buf *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    if (n <= 256) { /* short (tag names): reserve the worst case once, then copy */
        buf_need(b, n * 6 + 2);
        char *o = b->p + b->len;
        *o++ = '"';
        size_t i = 0;
        while (i < n && str_class[s[i]] == 0) *o++ = (char)s[i++];
        b->len = (size_t)(o - b->p);
        if (i == n) {
            b->p[b->len++] = '"';
            return;
        }
        s += i; /* rare: something to escape or validate; the general loop below */
        n -= i;
    } else {
        buf_need(b, n + 2);
        b->p[b->len++] = '"';
    }
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && str_class[s[j]] == 0) j++;
        if (j > i) {
            fb_buf_put(b, s + i, j - i);
            i = j;
            if (i == n) break;
        }
        unsigned c = s[i];
        if (str_class[c] == 1) {
            char e[6] = {'\\', 0, 0, 0, 0, 0};
            size_t el = 2;
            switch (c) {
                case '"': e[1] = '"'; break;
                case '\\': e[1] = '\\'; break;
                case '\n': e[1] = 'n'; break;
                case '\r': e[1] = 'r'; break;
                case '\t': e[1] = 't'; break;
                case '\b': e[1] = 'b'; break;
                case '\f': e[1] = 'f'; break;
                default:
                    memcpy(e + 1, "u00", 3);
                    e[4] = hex[c >> 4];
                    e[5] = hex[c & 15];
                    el = 6;
            }
            fb_buf_put(b, e, el);
            i++;
        } else {
            int l = utf8_seq(s + i, n - i);
            if (l > 0) {
                fb_buf_put(b, s + i, (size_t)l);
                i += (size_t)l;
            } else {
                fb_buf_put(b, "\\ufffd", 6);
                i += (size_t)-l;
            }
        }
    }
    fb_buf_putc(b, '"');
}

void fb_json_key(struct fb_buf *b, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    buf_need(b, 64);
    char *o = b->p + b->len, *end = b->p + b->cap - 2;
    *o++ = '"';
    while (*u && o < end && str_class[*u] == 0) *o++ = (char)*u++;
    if (*u) { /* something to escape, or longer than the room reserved: the general path */
        fb_json_cstr(b, s);
        fb_buf_putc(b, ':');
        return;
    }
    *o++ = '"';
    *o++ = ':';
    b->len = (size_t)(o - b->p);
}

void fb_json_key_plain(struct fb_buf *b, const char *s)
{
    buf_need(b, 64);
    char *o = b->p + b->len;
    *o++ = '"';
    size_t i = 0;
    while (s[i] && i < 60) o[i] = s[i], i++; /* names are short: no call, no length first */
    if (s[i]) {                              /* a long one */
        size_t n = strlen(s);
        buf_need(b, n + 3);
        o = b->p + b->len + 1;
        memcpy(o, s, n);
        i = n;
    }
    o += i;
    *o++ = '"';
    *o++ = ':';
    b->len = (size_t)(o - b->p);
}

bool fb_json_plain(const char *s)
{
    for (const unsigned char *u = (const unsigned char *)s; *u; u++)
        if (str_class[*u]) return false;
    return true;
}

void fb_json_cstr(struct fb_buf *b, const char *s)
{
    if (!s) {
        fb_buf_put(b, "null", 4);
        return;
    }
    fb_json_str(b, s, strlen(s));
}

/* ------------------------------------------------------------------ values */
static void put_number(struct fb_buf *b, const struct fb_value *v, bool text)
{
    switch (v->type) {
        case FB_T_BOOL: fb_buf_puts(b, v->b ? "true" : "false"); return;
        case FB_T_INT8:
        case FB_T_INT16:
        case FB_T_INT32:
        case FB_T_INT64: fb_json_i64(b, v->i); return;
        case FB_T_UINT8:
        case FB_T_UINT16:
        case FB_T_UINT32:
        case FB_T_UINT64: fb_json_u64(b, v->u); return;
        case FB_T_FLOAT32:
        case FB_T_FLOAT64:
            if (!isfinite(v->f)) {
                if (!text)
                    fb_buf_put(b, "null", 4);
                else
                    fb_buf_puts(b, isnan(v->f) ? "nan" : v->f < 0 ? "-inf" : "inf");
            } else if (v->type == FB_T_FLOAT32) {
                fb_json_float(b, (float)v->f);
            } else {
                fb_json_double(b, v->f);
            }
            return;
        default: fb_buf_put(b, "null", 4); return;
    }
}

void fb_json_value(struct fb_buf *b, const struct fb_value *v)
{
    if (v->type == FB_T_STRING)
        fb_json_str(b, v->s.p ? v->s.p : "", v->s.p ? v->s.len : 0);
    else
        put_number(b, v, false);
}

void fb_text_value(struct fb_buf *b, const struct fb_value *v)
{
    if (v->type == FB_T_STRING) {
        if (v->s.p) fb_buf_put(b, v->s.p, v->s.len);
    } else if (v->type == FB_T_NONE) {
        fb_buf_puts(b, "null");
    } else {
        put_number(b, v, true);
    }
}

/* ------------------------------------------------------------------- text */
size_t fb_text_cut(char *dst, size_t cap, const char *src)
{
    static const char ell[] = "\xe2\x80\xa6"; /* U+2026 HORIZONTAL ELLIPSIS */
    if (!cap) return 0;
    if (!src) src = "";
    size_t n = strlen(src);
    if (n < cap) {
        memcpy(dst, src, n + 1);
        return n;
    }
    if (cap < sizeof ell) { /* no room even for the ellipsis */
        dst[0] = 0;
        return 0;
    }
    size_t room = cap - sizeof ell; /* bytes of src that fit before "…" and the NUL */
    size_t cut = room;
    /* a word boundary: the last space at or before the cut, if it keeps half */
    size_t sp = cut;
    while (sp > 0 && src[sp] != ' ') sp--;
    if (sp > room / 2) {
        cut = sp;
    } else {
        while (cut > 0 && ((unsigned char)src[cut] & 0xC0) == 0x80) cut--; /* not inside a character */
    }
    while (cut > 0 && (src[cut - 1] == ' ' || src[cut - 1] == ',' || src[cut - 1] == ';' || src[cut - 1] == ':')) cut--;
    memcpy(dst, src, cut);
    memcpy(dst + cut, ell, sizeof ell); /* with its NUL */
    return cut + sizeof ell - 1;
}
