/* file_proto.c — WAV and CSV parsing (file_proto.h).  Every length read
 * from the file is checked against the bytes there are before it is used. */
#include "south/file/file_proto.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ WAV */
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int fb_wav_parse(const uint8_t *p, size_t len, uint64_t file_size, struct fb_wav *w, struct fb_err *err)
{
    memset(w, 0, sizeof *w);
    if (len < 12 || memcmp(p, "RIFF", 4) || memcmp(p + 8, "WAVE", 4))
        return fb_err_set(err, FB_EPROTO, "not a WAV file (no RIFF/WAVE header)");
    if (len > file_size) len = (size_t)file_size;
    size_t off = 12;
    bool fmt = false;
    while (off + 8 <= len) {
        const uint8_t *ck = p + off;
        uint32_t size = le32(ck + 4);
        uint64_t body = off + 8;
        if (!memcmp(ck, "fmt ", 4)) {
            if (size < 16 || body + 16 > len)
                return fb_err_set(err, FB_EPROTO, "WAV: fmt chunk of %u bytes is too short", size);
            const uint8_t *f = p + body;
            uint16_t tag = le16(f);
            w->channels = le16(f + 2);
            w->rate = le32(f + 4);
            w->align = le16(f + 12);
            w->bits = le16(f + 14);
            if (tag == 0xFFFE) { /* extensible: the sub-format GUID's first two bytes are the tag */
                if (size < 40 || body + 40 > len)
                    return fb_err_set(err, FB_EPROTO, "WAV: extensible fmt chunk of %u bytes is too short", size);
                tag = le16(f + 24);
            }
            w->format = tag;
            fmt = true;
        } else if (!memcmp(ck, "data", 4)) {
            if (!fmt) return fb_err_set(err, FB_EPROTO, "WAV: data chunk before the fmt chunk");
            if (w->format != 1 && w->format != 3)
                return fb_err_set(err, FB_EPROTO, "WAV: format %u is neither PCM (1) nor IEEE float (3)", w->format);
            bool ok =
                w->format == 1 ? (w->bits == 16 || w->bits == 24 || w->bits == 32) : (w->bits == 32 || w->bits == 64);
            if (!ok)
                return fb_err_set(err, FB_EPROTO,
                                  "WAV: %u-bit %s samples are not supported (PCM 16/24/32, float 32/64)", w->bits,
                                  w->format == 1 ? "PCM" : "float");
            if (!w->channels || w->channels > 256)
                return fb_err_set(err, FB_EPROTO, "WAV: %u channels (1..256)", w->channels);
            if (!w->rate) return fb_err_set(err, FB_EPROTO, "WAV: sample rate 0");
            if (w->align != (uint32_t)w->channels * (w->bits / 8))
                return fb_err_set(err, FB_EPROTO, "WAV: block align %u does not match %u channels of %u bits", w->align,
                                  w->channels, w->bits);
            w->data_off = body;
            uint64_t avail = file_size > body ? file_size - body : 0;
            uint64_t n = size < avail ? size : avail; /* a recorder stopped mid-way: what is there */
            w->frames = n / w->align;
            return 0;
        }
        uint64_t next = body + size + (size & 1);
        if (next <= off || next > len) break;
        off = (size_t)next;
    }
    return fb_err_set(err, FB_EPROTO,
                      fmt ? "WAV: no data chunk in the first %d bytes" : "WAV: no fmt chunk in the first %d bytes",
                      FB_WAV_HEADER_MAX);
}

void fb_wav_decode(const struct fb_wav *w, const uint8_t *p, uint32_t nframes, uint32_t ch, float *out)
{
    uint32_t bps = w->bits / 8;
    const uint8_t *s = p + (size_t)ch * bps;
    for (uint32_t i = 0; i < nframes; i++, s += w->align) {
        float v;
        if (w->format == 3) {
            if (w->bits == 32) {
                memcpy(&v, s, 4); /* little-endian hosts (x86, ARM): the file's order */
            } else {
                double d;
                memcpy(&d, s, 8);
                v = (float)d;
            }
            if (!isfinite(v)) v = 0;
        } else if (w->bits == 16) {
            v = (float)(int16_t)le16(s) / 32768.0f;
        } else if (w->bits == 24) {
            int32_t x = (int32_t)((uint32_t)s[0] << 8 | (uint32_t)s[1] << 16 | (uint32_t)s[2] << 24) >> 8;
            v = (float)((double)x / 8388608.0);
        } else {
            v = (float)((double)(int32_t)le32(s) / 2147483648.0);
        }
        out[i] = v;
    }
}

/* ------------------------------------------------------------------ CSV */
void fb_csv_free(struct fb_csv *c)
{
    if (c->names)
        for (uint32_t i = 0; i < c->cols; i++) free(c->names[i]);
    free(c->names);
    free(c->data);
    memset(c, 0, sizeof *c);
}

int fb_csv_column(const struct fb_csv *c, const char *name)
{
    for (uint32_t i = 0; c->names && i < c->cols; i++)
        if (!strcmp(c->names[i], name)) return (int)i;
    return -1;
}

/* The cells of one line [p, end) split at sep, each trimmed. */
static uint32_t split(const char *p, const char *end, char sep, const char **cell, size_t *clen, uint32_t max)
{
    uint32_t n = 0;
    for (;;) {
        const char *e = memchr(p, sep, (size_t)(end - p));
        if (!e) e = end;
        const char *a = p, *b = e;
        while (a < b && (*a == ' ' || *a == '\t' || *a == '"')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r' || b[-1] == '"')) b--;
        if (n < max) {
            cell[n] = a;
            clen[n] = (size_t)(b - a);
        }
        n++;
        if (e == end) break;
        p = e + 1;
    }
    return n;
}

static bool number(const char *s, size_t n, float *out)
{
    char buf[64];
    if (!n || n >= sizeof buf) return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    double d = strtod(buf, &end);
    if (end == buf || *end || !isfinite(d)) return false;
    *out = (float)d;
    return true;
}

int fb_csv_parse(const char *text, size_t len, struct fb_csv *c, struct fb_err *err)
{
    memset(c, 0, sizeof *c);
    const char *p = text, *end = text + len;
    const char *cell[FB_CSV_MAX_COLS];
    size_t clen[FB_CSV_MAX_COLS];
    char sep = 0;
    uint64_t line = 0, cap = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *q = p;
        p = eol < end ? eol + 1 : end;
        line++;
        while (q < eol && (*q == ' ' || *q == '\t')) q++;
        if (q == eol || *q == '#' || (q + 1 == eol && *q == '\r')) continue; /* blank or comment */
        if (!sep) { /* the first data line decides: tab, ';' or ',' */
            sep = memchr(q, '\t', (size_t)(eol - q)) ? '\t' : memchr(q, ';', (size_t)(eol - q)) ? ';' : ',';
        }
        uint32_t n = split(q, eol, sep, cell, clen, FB_CSV_MAX_COLS);
        if (n > FB_CSV_MAX_COLS) {
            fb_csv_free(c);
            return fb_err_set(err, FB_EPROTO, "line %llu: %u columns (at most %d)", (unsigned long long)line, n,
                              FB_CSV_MAX_COLS);
        }
        if (!c->cols) {
            c->cols = n;
            float tmp;
            bool header = false;
            for (uint32_t i = 0; i < n; i++)
                if (!number(cell[i], clen[i], &tmp)) header = true;
            if (header) {
                c->names = calloc(n, sizeof *c->names);
                if (!c->names) goto oom;
                for (uint32_t i = 0; i < n; i++) {
                    /* not strndup: the cell is not NUL-terminated (strndup may look past it) */
                    c->names[i] = malloc(clen[i] + 1);
                    if (!c->names[i]) goto oom;
                    memcpy(c->names[i], cell[i], clen[i]);
                    c->names[i][clen[i]] = 0;
                }
                continue;
            }
        }
        if (n != c->cols) {
            uint32_t want = c->cols;
            fb_csv_free(c);
            return fb_err_set(err, FB_EPROTO, "line %llu: %u columns, the first row has %u", (unsigned long long)line,
                              n, want);
        }
        if (c->rows == cap) {
            uint64_t nc = cap ? cap * 2 : 1024;
            if (nc * c->cols > (1ull << 28)) {
                fb_csv_free(c);
                return fb_err_set(err, FB_EPROTO, "line %llu: more than %llu values", (unsigned long long)line,
                                  1ull << 28);
            }
            float *d = realloc(c->data, nc * c->cols * sizeof *d);
            if (!d) goto oom;
            c->data = d;
            cap = nc;
        }
        for (uint32_t i = 0; i < n; i++)
            if (!number(cell[i], clen[i], &c->data[c->rows * c->cols + i])) {
                char shown[40];
                snprintf(shown, sizeof shown, "%.*s", (int)(clen[i] < 32 ? clen[i] : 32), cell[i]);
                fb_csv_free(c);
                return fb_err_set(err, FB_EPROTO, "line %llu, column %u: '%s' is not a number",
                                  (unsigned long long)line, i + 1, shown);
            }
        c->rows++;
    }
    if (!c->rows) {
        fb_csv_free(c);
        return fb_err_set(err, FB_EPROTO, "no rows of numbers");
    }
    return 0;
oom:
    fb_csv_free(c);
    return fb_err_set(err, FB_ENOMEM, "out of memory");
}
