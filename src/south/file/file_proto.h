/* file_proto.h — the I/O-free half of the file driver (file_proto.c):
 * recorded waveforms in WAV and CSV files, parsed from bytes, so every
 * malformed file is a unit test or a fuzz input, never a crash.
 *
 * WAV (RIFF/WAVE): a "fmt " chunk and a "data" chunk, other chunks skipped
 * (each padded to an even size).  Formats: PCM (tag 1) with 16, 24 or 32
 * bits per sample, IEEE float (tag 3) with 32 or 64 bits, and
 * WAVE_FORMAT_EXTENSIBLE (0xFFFE) whose sub-format GUID says PCM or float.
 * PCM samples are read as fractions of full scale, [−1, 1); floats as they
 * are.  A data chunk longer than the file (a recorder that was stopped) is
 * cut to the frames the file holds.
 *
 * CSV: one row per sample instant, one column per channel; separators ','
 * ';' or tab (the first line decides); an optional header line of column
 * names (a first line that is not all numbers); '#' starts a comment line;
 * numbers with a decimal point.  There is no sample rate in a CSV: the
 * channel's vibration.fs says it. */
#ifndef FB_FILE_PROTO_H
#define FB_FILE_PROTO_H
#include <stddef.h>
#include <stdint.h>

#include "core/fb.h"

/* ------------------------------------------------------------------ WAV */
#define FB_WAV_HEADER_MAX 65536 /* the fmt and data chunks must start within it */

struct fb_wav {
    uint16_t format;   /* 1 PCM, 3 float (extensible resolved) */
    uint16_t channels; /* 1 .. 256 */
    uint32_t rate;     /* frames per second */
    uint16_t bits;     /* per sample */
    uint16_t align;    /* bytes per frame */
    uint64_t data_off; /* file offset of the first frame */
    uint64_t frames;   /* whole frames in the file */
};

/* Parse the first len bytes of a file of file_size bytes.  FB_EPROTO (with
 * a message) for anything that is not a WAV file this reads. */
int fb_wav_parse(const uint8_t *p, size_t len, uint64_t file_size, struct fb_wav *w, struct fb_err *err);
/* nframes whole frames at p (nframes × align bytes) → channel `ch` as floats. */
void fb_wav_decode(const struct fb_wav *w, const uint8_t *p, uint32_t nframes, uint32_t ch, float *out);

/* ------------------------------------------------------------------ CSV */
#define FB_CSV_MAX_COLS 256

struct fb_csv {
    uint32_t cols;
    uint64_t rows;
    char **names; /* cols names when there was a header line, else NULL */
    float *data;  /* rows × cols, row-major */
};

/* Parse a whole CSV text.  FB_EPROTO with "line N: …" for a bad cell or a
 * row with another number of columns; FB_ENOMEM. */
int fb_csv_parse(const char *text, size_t len, struct fb_csv *c, struct fb_err *err);
void fb_csv_free(struct fb_csv *c);
/* The column named `name`, or -1. */
int fb_csv_column(const struct fb_csv *c, const char *name);
#endif
