/* dsp.h — the signal processing of one vibration block (dsp.c), without
 * threads, config or I/O, so every number it produces can be checked against
 * a signal whose answer is known (tests/unit/test_vib_dsp.c).
 *
 *   time domain   mean, RMS, peak, peak-to-peak, crest factor, kurtosis,
 *                 skewness of the scaled block (fb_dsp_stats)
 *   spectrum      Hann-windowed real FFT (kissfft): amplitude per bin
 *                 (0-peak, corrected for the window's coherent gain) and
 *                 mean-square power per bin (corrected for its energy), from
 *                 which band RMS, velocity RMS (integration by 1/(2πf) in
 *                 the frequency domain, the band's edges as high- and
 *                 low-pass) and line amplitudes (running-speed orders) come
 *   envelope      complex demodulation of one band of that spectrum (the
 *                 analytic signal of the band-passed block, shifted to
 *                 baseband and brought back with an inverse FFT of M ≥ 2 ×
 *                 band bins points), its magnitude, and that magnitude's
 *                 spectrum: lines at bearing defect frequencies
 *
 * Everything is allocated by fb_dsp_new for one block length n and one
 * envelope size M: analysing a block allocates nothing.  A struct fb_dsp is
 * used by one thread at a time (kissfft's real-FFT plans keep scratch in the
 * plan). */
#ifndef FB_VIB_DSP_H
#define FB_VIB_DSP_H
#include <stddef.h>
#include <stdint.h>

struct fb_dsp_stats {
    double mean;     /* of the scaled block (removed before everything else) */
    double rms;      /* sqrt(mean square of x - mean) */
    double peak;     /* max |x - mean| */
    double p2p;      /* max - min */
    double crest;    /* peak / rms */
    double kurtosis; /* m4 / m2² (3 for Gaussian noise, 1.5 for a sine) */
    double skewness; /* m3 / m2^1.5 */
};

/* Statistics of y = x·k + off over n samples (two passes, in double). */
void fb_dsp_stats(const float *x, uint32_t n, double k, double off, struct fb_dsp_stats *o);

struct fb_dsp;
/* Plans and buffers for blocks of n samples (even, >= 16) and an envelope
 * of env_m points (even; 0: no envelope).  NULL when out of memory. */
struct fb_dsp *fb_dsp_new(uint32_t n, uint32_t env_m);
void fb_dsp_free(struct fb_dsp *d);
/* The envelope size for band [lo, hi] Hz of n samples at fs Hz: the next
 * size kissfft handles fast that is even and >= 2 × the band's bins. */
uint32_t fb_dsp_env_size(uint32_t n, double fs, double lo, double hi);
/* Bytes allocated (plans and buffers), for the benchmark's memory figure. */
size_t fb_dsp_bytes(const struct fb_dsp *d);

/* The windowed spectrum of y = x·k + off minus mean (pass the block's mean
 * from fb_dsp_stats).  The queries below read it. */
void fb_dsp_spectrum(struct fb_dsp *d, const float *x, double k, double off, double mean, double fs);
/* Amplitude (0-peak) per bin, bins 0 .. n/2, df Hz apart. */
const float *fb_dsp_amp(const struct fb_dsp *d, uint32_t *nbins, double *df);
/* RMS of the content between lo and hi Hz (bins whose centre lies in [lo, hi]). */
double fb_dsp_band_rms(const struct fb_dsp *d, double lo, double hi);
/* RMS of the time integral (unit of y · s) of the content in [lo, hi] Hz:
 * acceleration in m/s² gives velocity in m/s. */
double fb_dsp_velocity_rms(const struct fb_dsp *d, double lo, double hi);
/* 0-peak amplitude of a line near f Hz: the strongest bin within ±tol·f
 * (at least ±1 bin), its main lobe's energy (3 bins / the window's noise
 * bandwidth), so a line between two bins loses at most ~1 %.  NaN when f is
 * outside the spectrum. */
double fb_dsp_line(const struct fb_dsp *d, double f, double tol);

/* The envelope of band [lo, hi] Hz of the last spectrum, and its spectrum.
 * FB_EINVAL when the band does not fit the envelope size this dsp was made
 * for (or there is none). */
int fb_dsp_envelope(struct fb_dsp *d, double lo, double hi);
/* Envelope amplitude (0-peak) per bin, bins 0 .. M/2, df Hz apart (= fs/n). */
const float *fb_dsp_env_amp(const struct fb_dsp *d, uint32_t *nbins, double *df);
/* As fb_dsp_line, in the envelope spectrum. */
double fb_dsp_env_line(const struct fb_dsp *d, double f, double tol);

/* ISO 10816-3 / 20816-3 evaluation zone of a velocity RMS: 0 = A, 1 = B,
 * 2 = C, 3 = D.  A value equal to a boundary belongs to the worse zone
 * (limits[0] = A/B, limits[1] = B/C, limits[2] = C/D). */
int fb_iso_zone(double v, const double limits[3]);
#endif
