/* fuzz_lp.c — libFuzzer harness for the InfluxDB line protocol encoder
 * (north/influx/lp.c).  The input is split into a measurement, a tag key and
 * value, a field key, a string value and some bytes read as a number; the
 * line built from them must parse back — with a strict parser written here
 * from the line-protocol rules, InfluxDB 1.x's way of pairing backslashes —
 * into exactly one line whose elements are the inputs, except where lp.h
 * says a byte cannot be written (control characters, a backslash that would
 * pair with an escape or the end: `_`).
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_lp /tmp/c tests/fuzz/corpus/lp
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "north/influx/lp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the encoder should have written for name s in element e, unescaped:
 * the name with control bytes and unwritable backslashes as '_'. */
static size_t expect_name(const char *s, size_t n, bool key, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F) {
            out[o++] = '_';
        } else if (c == '\\') {
            if (i + 1 < n && s[i + 1] == '\\') {
                out[o++] = '\\';
                out[o++] = '\\';
                i++;
                continue;
            }
            bool special = i + 1 < n && (s[i + 1] == ',' || s[i + 1] == ' ' || (key && s[i + 1] == '='));
            out[o++] = i + 1 == n || special ? '_' : '\\';
        } else {
            out[o++] = (char)c;
        }
    }
    return o;
}

/* Read one element the InfluxDB way: a backslash pairs with the next byte;
 * stop at an unpaired byte in stops.  Unescape `\,` `\ ` (and `\=` in keys).
 * Returns the bytes consumed, or 0 when the element runs into the end. */
static size_t read_elem(const char *p, size_t n, const char *stops, bool key, char *out, size_t *olen)
{
    size_t i = 0, o = 0;
    while (i < n) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            if (d == ',' || d == ' ' || (key && d == '=')) {
                out[o++] = d;
            } else {
                out[o++] = c;
                out[o++] = d;
            }
            i += 2;
            continue;
        }
        if (strchr(stops, c)) break;
        out[o++] = c;
        i++;
    }
    *olen = o;
    return i;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fb_buf b;
    /* five parts separated by 0xFF bytes */
    const char *part[5] = {"m", "k", "v", "f", "s"};
    size_t plen[5] = {1, 1, 1, 1, 1};
    size_t start = 0;
    int np = 0;
    for (size_t i = 0; i <= size && np < 5; i++)
        if (i == size || data[i] == 0xFF) {
            part[np] = (const char *)data + start;
            plen[np] = i - start;
            np++;
            start = i + 1;
        }
    for (int i = 0; i < 5; i++)
        if (!plen[i] && i < 4) return 0; /* empty names are refused by design */
    fb_buf_clear(&b);
    if (!fb_lp_name(&b, FB_LP_MEASUREMENT, part[0], plen[0])) abort();
    fb_buf_putc(&b, ',');
    fb_lp_name(&b, FB_LP_KEY, part[1], plen[1]);
    fb_buf_putc(&b, '=');
    fb_lp_name(&b, FB_LP_KEY, part[2], plen[2]);
    fb_buf_putc(&b, ' ');
    fb_lp_name(&b, FB_LP_KEY, part[3], plen[3]);
    fb_buf_putc(&b, '=');
    fb_lp_str(&b, part[4], np > 4 ? plen[4] : 0);
    /* a number field from the first 8 bytes, as every type */
    double d = 0;
    memcpy(&d, data, size < 8 ? size : 8);
    struct fb_value v = {.type = FB_T_FLOAT64};
    v.f = d;
    static const enum fb_lp_type types[] = {FB_LP_FLOAT, FB_LP_INT, FB_LP_UINT};
    for (int t = 0; t < 3; t++) {
        size_t mark = b.len;
        fb_buf_puts(&b, ",n=");
        int rc = fb_lp_value(&b, types[t], &v);
        if (rc != fb_lp_check(types[t], &v)) abort();
        if (rc < 0)
            b.len = mark;
        else if (!isfinite(d))
            abort(); /* NaN/Inf never written */
    }
    fb_buf_puts(&b, " 1\n");
    /* exactly one line */
    if (memchr(b.p, '\n', b.len - 1)) {
        /* a newline inside the quoted string is allowed; outside it is not */
        const char *q = memchr(b.p, '"', b.len);
        const char *nl = memchr(b.p, '\n', b.len - 1);
        if (!q || nl < q) abort();
    }
    /* parse back */
    static char got[4096], want[4096];
    size_t gl, wl;
    const char *p = b.p;
    size_t n = b.len;
    size_t k = read_elem(p, n, ", ", false, got, &gl);
    if (k == n || p[k] != ',') abort();
    wl = expect_name(part[0], plen[0], false, want);
    if (gl != wl || memcmp(got, want, gl)) abort();
    p += k + 1, n -= k + 1;
    k = read_elem(p, n, "=", true, got, &gl);
    wl = expect_name(part[1], plen[1], true, want);
    if (k == n || gl != wl || memcmp(got, want, gl)) abort();
    p += k + 1, n -= k + 1;
    k = read_elem(p, n, ", ", true, got, &gl);
    wl = expect_name(part[2], plen[2], true, want);
    if (k == n || p[k] != ' ' || gl != wl || memcmp(got, want, gl)) abort();
    p += k + 1, n -= k + 1;
    k = read_elem(p, n, "=", true, got, &gl);
    wl = expect_name(part[3], plen[3], true, want);
    if (k == n || gl != wl || memcmp(got, want, gl)) abort();
    p += k + 1, n -= k + 1;
    /* the string: quotes, \" and \\ */
    if (!n || *p != '"') abort();
    size_t o = 0, i = 1;
    for (; i < n && p[i] != '"'; i++) {
        if (p[i] == '\\') {
            if (i + 1 >= n || (p[i + 1] != '"' && p[i + 1] != '\\')) abort();
            i++;
        }
        got[o++] = p[i];
    }
    if (i >= n) abort();
    size_t sl = np > 4 ? plen[4] : 0;
    if (o != sl || memcmp(got, part[4], sl)) abort();
    return 0;
}
