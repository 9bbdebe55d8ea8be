/* fuzz_wavfile.c — libFuzzer harness for the file driver's parsers
 * (src/south/file/file_proto.c): any file, however broken, is refused with a
 * message or parsed into a header whose frames decode without reading past
 * the bytes there are.  The first byte picks the parser: even → WAV (the
 * rest as the file, and again as the first bytes of a file that claims to
 * be longer), odd → CSV.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/w && ./fuzz_wavfile /tmp/w tests/fuzz/corpus/wavfile
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "south/file/file_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static float out[4096];

static void wav(const uint8_t *p, size_t len, uint64_t file_size)
{
    struct fb_wav w;
    struct fb_err err = {0};
    if (fb_wav_parse(p, len, file_size, &w, &err) < 0) return;
    /* the frames the header says are in this buffer (the parser cut them to the file) */
    if (w.data_off > len) return;
    uint64_t have = (len - w.data_off) / w.align;
    if (have > w.frames) have = w.frames;
    if (have > sizeof out / sizeof out[0]) have = sizeof out / sizeof out[0];
    for (uint32_t ch = 0; ch < w.channels; ch++) fb_wav_decode(&w, p + w.data_off, (uint32_t)have, ch, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20)) return 0;
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    if (data[0] % 2 == 0) {
        wav(p, len, len);
        wav(p, len, (uint64_t)len + 1000); /* a header read from the start of a longer file */
        return 0;
    }
    struct fb_csv c;
    struct fb_err err = {0};
    if (fb_csv_parse((const char *)p, len, &c, &err) == 0) {
        for (uint64_t i = 0; i < c.rows * c.cols; i++) out[i % 4096] = c.data[i]; /* every value is there */
        for (uint32_t i = 0; c.names && i < c.cols; i++) (void)fb_csv_column(&c, c.names[i]);
        fb_csv_free(&c);
    }
    return 0;
}
