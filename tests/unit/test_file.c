/* test_file.c — the file driver's parsers and glue: WAV headers of every
 * supported format (PCM 16/24/32, float 32/64, extensible) decode to the
 * values written, unknown chunks are skipped, a data chunk longer than the
 * file is cut to what is there, every malformed or truncated header is
 * refused with a message; CSV with and without a header, with ',' ';' and
 * tab, comments, and the line and column of a bad cell; and the driver
 * replaying a WAV recording block by block into waveform tags (looping, the
 * sample rate checked against vibration.fs, channels checked). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/block.h"
#include "core/config.h"
#include "south/file/file.h"
#include "south/file/file_proto.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

/* A WAV header (+ an optional LIST chunk before fmt) for `frames` frames; returns its length. */
static size_t wav_header(uint8_t *h, uint16_t tag, uint16_t ch, uint32_t rate, uint16_t bits, uint32_t frames,
                         bool list, bool ext)
{
    size_t o = 12;
    memcpy(h, "RIFF", 4);
    memcpy(h + 8, "WAVE", 4);
    if (list) { /* an odd-sized chunk: padded to even */
        memcpy(h + o, "LIST", 4);
        put32(h + o + 4, 5);
        memcpy(h + o + 8, "abcde\0", 6);
        o += 14;
    }
    memcpy(h + o, "fmt ", 4);
    put32(h + o + 4, ext ? 40 : 16);
    put16(h + o + 8, ext ? 0xFFFE : tag);
    put16(h + o + 10, ch);
    put32(h + o + 12, rate);
    put32(h + o + 16, rate * ch * (bits / 8));
    put16(h + o + 20, (uint16_t)(ch * (bits / 8)));
    put16(h + o + 22, bits);
    if (ext) {
        put16(h + o + 24, 22);
        put16(h + o + 26, bits);
        put32(h + o + 28, 0);
        memset(h + o + 32, 0, 16);
        put16(h + o + 32, tag); /* the GUID starts with the format tag */
    }
    o += 8 + (ext ? 40 : 16);
    memcpy(h + o, "data", 4);
    put32(h + o + 4, frames * ch * (bits / 8));
    o += 8;
    put32(h + 4, (uint32_t)(o - 8 + frames * ch * (bits / 8)));
    return o;
}

static void test_wav_formats(void **st)
{
    (void)st;
    uint8_t f[512];
    struct fb_wav w;
    struct fb_err e = {0};
    float out[4];
    /* PCM16, 2 channels: 16384 = 0.5, -32768 = -1 */
    size_t h = wav_header(f, 1, 2, 25600, 16, 2, true, false);
    put16(f + h, 16384);
    put16(f + h + 2, 0x8000);
    put16(f + h + 4, (uint16_t)-8192);
    put16(f + h + 6, 1);
    assert_int_equal(fb_wav_parse(f, h + 8, h + 8, &w, &e), 0);
    assert_int_equal(w.channels, 2);
    assert_int_equal(w.rate, 25600);
    assert_int_equal(w.frames, 2);
    assert_int_equal(w.data_off, h);
    fb_wav_decode(&w, f + h, 2, 0, out);
    assert_true(out[0] == 0.5f && out[1] == -0.25f);
    fb_wav_decode(&w, f + h, 2, 1, out);
    assert_true(out[0] == -1.0f && fabsf(out[1] - 1.0f / 32768) < 1e-9f);
    /* PCM24 mono: 0x400000 = 0.5, 0xC00000 = -0.5 (sign from the top byte) */
    h = wav_header(f, 1, 1, 8000, 24, 2, false, false);
    f[h] = 0, f[h + 1] = 0, f[h + 2] = 0x40;
    f[h + 3] = 0, f[h + 4] = 0, f[h + 5] = 0xC0;
    assert_int_equal(fb_wav_parse(f, h + 6, h + 6, &w, &e), 0);
    fb_wav_decode(&w, f + h, 2, 0, out);
    assert_true(out[0] == 0.5f && out[1] == -0.5f);
    /* PCM32 through WAVE_FORMAT_EXTENSIBLE */
    h = wav_header(f, 1, 1, 8000, 32, 1, false, true);
    put32(f + h, 0xC0000000u);
    assert_int_equal(fb_wav_parse(f, h + 4, h + 4, &w, &e), 0);
    assert_int_equal(w.format, 1);
    fb_wav_decode(&w, f + h, 1, 0, out);
    assert_true(out[0] == -0.5f);
    /* float32 and float64: as they are */
    h = wav_header(f, 3, 1, 8000, 32, 1, false, false);
    float v32 = 9.81f;
    memcpy(f + h, &v32, 4);
    assert_int_equal(fb_wav_parse(f, h + 4, h + 4, &w, &e), 0);
    fb_wav_decode(&w, f + h, 1, 0, out);
    assert_true(out[0] == 9.81f);
    h = wav_header(f, 3, 1, 8000, 64, 1, false, true);
    double v64 = -2.5;
    memcpy(f + h, &v64, 8);
    assert_int_equal(fb_wav_parse(f, h + 8, h + 8, &w, &e), 0);
    fb_wav_decode(&w, f + h, 1, 0, out);
    assert_true(out[0] == -2.5f);
    /* a data chunk that says more than the file has: the frames there are */
    h = wav_header(f, 1, 1, 8000, 16, 1000, false, false);
    assert_int_equal(fb_wav_parse(f, h + 7, h + 7, &w, &e), 0);
    assert_int_equal(w.frames, 3);
}

static void test_wav_errors(void **st)
{
    (void)st;
    uint8_t f[256];
    struct fb_wav w;
    struct fb_err e = {0};
    size_t h = wav_header(f, 1, 1, 8000, 16, 4, true, false);
    /* every truncation of a valid header is refused with a message, never read past */
    for (size_t n = 0; n < h; n++) {
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, f, n);
        memset(&e, 0, sizeof e);
        assert_int_not_equal(fb_wav_parse(cut, n, n, &w, &e), 0);
        assert_true(e.msg[0] != 0);
        free(cut);
    }
    struct {
        size_t off;
        uint8_t val;
        const char *msg;
    } bad[] = {
        {0, 'X', "not a WAV"},
        {12 + 14 + 8, 2, "neither PCM"},        /* format tag 2 (ADPCM) */
        {12 + 14 + 8 + 14, 8, "not supported"}, /* 8 bits */
        {12 + 14 + 8 + 12, 3, "block align"},
        {12 + 14 + 8 + 2, 0, "channels"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t g[256];
        memcpy(g, f, h + 8);
        g[bad[i].off] = bad[i].val;
        memset(&e, 0, sizeof e);
        assert_int_equal(fb_wav_parse(g, h + 8, h + 8, &w, &e), FB_EPROTO);
        if (!strstr(e.msg, bad[i].msg)) fprintf(stderr, "case %zu: %s\n", i, e.msg);
        assert_non_null(strstr(e.msg, bad[i].msg));
    }
    /* data before fmt */
    uint8_t g[64] = "RIFF\0\0\0\0WAVEdata\4\0\0\0abcd";
    assert_int_equal(fb_wav_parse(g, 24, 24, &w, &e), FB_EPROTO);
    assert_non_null(strstr(e.msg, "before the fmt"));
}

static void test_csv(void **st)
{
    (void)st;
    struct fb_csv c;
    struct fb_err e = {0};
    const char *t1 = "# recorded 2026-11-28\ntime;x;y\n0;1.5;-2\n\n0.1;2.5;-3\r\n";
    assert_int_equal(fb_csv_parse(t1, strlen(t1), &c, &e), 0);
    assert_int_equal(c.cols, 3);
    assert_int_equal(c.rows, 2);
    assert_int_equal(fb_csv_column(&c, "y"), 2);
    assert_int_equal(fb_csv_column(&c, "z"), -1);
    assert_true(c.data[1 * 3 + 1] == 2.5f && c.data[2] == -2.0f);
    fb_csv_free(&c);
    const char *t2 = "1\t2\n3\t4\n";
    assert_int_equal(fb_csv_parse(t2, strlen(t2), &c, &e), 0);
    assert_null(c.names);
    assert_true(c.rows == 2 && c.cols == 2 && c.data[3] == 4.0f);
    fb_csv_free(&c);
    const char *t3 = "a,b\n1,2\n3,x4\n";
    assert_int_equal(fb_csv_parse(t3, strlen(t3), &c, &e), FB_EPROTO);
    assert_non_null(strstr(e.msg, "line 3, column 2: 'x4' is not a number"));
    const char *t4 = "1,2\n3\n";
    assert_int_equal(fb_csv_parse(t4, strlen(t4), &c, &e), FB_EPROTO);
    assert_non_null(strstr(e.msg, "line 2: 1 columns, the first row has 2"));
    assert_int_equal(fb_csv_parse("# nothing\n", 10, &c, &e), FB_EPROTO);
    assert_int_equal(fb_csv_parse("", 0, &c, &e), FB_EPROTO);
}

/* ---------------------------------------------------------- the driver */
static char dir[256];

static struct fb_gateway *load(const char *yaml, int want_rc, char **diag_out)
{
    char path[512];
    snprintf(path, sizeof path, "%s/f.yaml", dir);
    FILE *f = fopen(path, "w");
    fputs("gateway: {id: t}\n", f);
    fputs(yaml, f);
    fclose(f);
    char *diag = NULL;
    size_t len;
    FILE *df = open_memstream(&diag, &len);
    struct fb_config_opts o = {false, df};
    struct fb_gateway *gw = NULL;
    int rc = fb_config_load(path, &o, &gw);
    fclose(df);
    if (rc != want_rc) fprintf(stderr, "%s", diag);
    assert_int_equal(rc, want_rc);
    if (diag_out)
        *diag_out = diag;
    else
        free(diag);
    return gw;
}

static void test_driver(void **st)
{
    (void)st;
    /* a 2-channel PCM16 recording at 1000 Hz: channel 0 a 50 Hz sine of 0.5, channel 1 constant 0.25; 300 frames */
    char wav[512];
    snprintf(wav, sizeof wav, "%s/rec.wav", dir);
    uint8_t f[2048];
    size_t h = wav_header(f, 1, 2, 1000, 16, 300, false, false);
    FILE *o = fopen(wav, "wb");
    fwrite(f, 1, h, o);
    for (int i = 0; i < 300; i++) {
        int16_t a = (int16_t)lrint(16384 * sin(2 * M_PI * 50 * i / 1000.0)), b = 8192;
        fwrite(&a, 2, 1, o);
        fwrite(&b, 2, 1, o);
    }
    fclose(o);
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "devices:\n"
             "  - name: rec\n"
             "    url: \"file://rec.wav\"\n"
             "    tags:\n"
             "      - {name: a, addr: \"0\", vibration: {fs: 1000, block: 128}}\n"
             "      - {name: b, addr: \"ch:1\", vibration: {fs: 1000, block: 128}}\n");
    struct fb_gateway *gw = load(yaml, 0, NULL);
    struct fb_device *d = &gw->devs[0];
    struct fb_tag *ta = fb_gw_tag(gw, d, "a"), *tb = fb_gw_tag(gw, d, "b");
    struct fb_wave *wa = fb_tag_wave(gw, ta), *wb = fb_tag_wave(gw, tb);
    assert_non_null(wa);
    assert_non_null(wb);
    wa->pool = fb_block_pool_new(2, 128);
    wb->pool = fb_block_pool_new(2, 128);
    struct fb_err e = {0};
    assert_int_equal(fb_driver_file.open(d->conn, &e), 0);
    struct fb_batch *b = fb_batch_new(4, 0, 0);
    /* three blocks of 128 from 300 frames: the third wraps around (loop) */
    for (int k = 0; k < 3; k++) {
        fb_batch_reset(b);
        assert_int_equal(fb_driver_file.read(d, &d->groups[0], b), 0);
        assert_int_equal(b->n, 2);
        const struct fb_block *ba = b->s[0].v.blk, *bb = b->s[1].v.blk;
        assert_int_equal(b->s[0].v.type, FB_T_BLOCK);
        assert_int_equal(ba->n, 128);
        for (int i = 0; i < 128; i++) {
            int frame = (k * 128 + i) % 300;
            assert_true(fabs(ba->x[i] - 0.5 * sin(2 * M_PI * 50 * frame / 1000.0)) < 1e-4);
            assert_true(bb->x[i] == 0.25f);
        }
    }
    /* the analysis still holds two blocks of a: the next read has none for it (dropped, counted) */
    fb_batch_reset(b);
    struct fb_block *held[2] = {fb_block_pool_tryget(wa->pool), fb_block_pool_tryget(wa->pool)};
    assert_non_null(held[1]);
    assert_int_equal(fb_driver_file.read(d, &d->groups[0], b), 0);
    assert_int_equal(b->n, 1); /* only b */
    assert_int_equal(atomic_load(&wa->dropped), 1);
    fb_block_unref(held[0]);
    fb_block_unref(held[1]);
    fb_batch_free(b);
    fb_driver_file.close(d->conn);
    fb_block_pool_free(wa->pool);
    fb_block_pool_free(wb->pool);
    wa->pool = wb->pool = NULL;
    fb_gateway_free(gw);
    /* the file's rate must be vibration.fs; a channel must exist */
    const char *bad[][2] = {
        {"{name: a, addr: \"0\", vibration: {fs: 2000, block: 128}}", "sampled at 1000 Hz, vibration.fs says 2000"},
        {"{name: a, addr: \"ch:2\", vibration: {fs: 1000, block: 128}}", "channel 2, the file has 2"},
        {"{name: a, addr: \"x\", vibration: {fs: 1000, block: 128}}", "no column names"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(yaml, sizeof yaml, "devices:\n  - name: rec\n    url: \"file://rec.wav\"\n    tags:\n      - %s\n",
                 bad[i][0]);
        gw = load(yaml, 0, NULL);
        memset(&e, 0, sizeof e);
        assert_int_not_equal(fb_driver_file.open(gw->devs[0].conn, &e), 0);
        if (!strstr(e.msg, bad[i][1])) fprintf(stderr, "%s\n", e.msg);
        assert_non_null(strstr(e.msg, bad[i][1]));
        fb_gateway_free(gw);
    }
    /* config errors: a file tag without vibration:, an unknown option */
    char *diag;
    gw = load("devices:\n  - name: rec\n    url: \"file://rec.wav?loop=maybe\"\n    tags:\n      - {name: a, addr: "
              "\"0\"}\n",
              -1, &diag);
    assert_non_null(strstr(diag, "loop=maybe: expected true or false"));
    free(diag);
    gw = load("devices:\n  - name: rec\n    url: \"file://rec.wav\"\n    tags:\n      - {name: a, addr: \"0\"}\n", -1,
              &diag);
    assert_non_null(strstr(diag, "f.yaml:6:25:"));
    assert_non_null(strstr(diag, "not a waveform"));
    free(diag);
    unlink(wav);
}

static int setup(void **st)
{
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/fb-test-file-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    char p[600];
    snprintf(p, sizeof p, "%s/f.yaml", dir);
    unlink(p);
    rmdir(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wav_formats),
        cmocka_unit_test(test_wav_errors),
        cmocka_unit_test(test_csv),
        cmocka_unit_test(test_driver),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
