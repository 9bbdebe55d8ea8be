/* dsp.c — spectra, envelopes and statistics of one block (dsp.h).
 *
 * Scaling, written down once (x the scaled block minus its mean, w the
 * periodic Hann window w[i] = 0.5 − 0.5·cos(2πi/n), X = FFT(x·w)):
 *
 *   amplitude  a[k] = 2|X[k]| / Σw        (Σw = n/2) — a sine of amplitude A
 *              centred on bin k reads A there: the coherent gain is undone;
 *   power      p[k] = 2|X[k]|² / (n·Σw²)  (Σw² = 3n/8) — the mean square per
 *              bin, so Σp over a band is the band's mean square whatever the
 *              window spread (Parseval with the window's energy undone);
 *   lines      a sine spreads over its main lobe; Hann puts amplitudes A/2, A,
 *              A/2 into three bins when centred, so Σ a² over the three bins
 *              around the maximum is 1.5·A² (1.5 = the noise bandwidth in
 *              bins), off-centre within 1 %: A = sqrt(Σa² / 1.5);
 *   velocity   v = ∫a dt has the power p[k] / (2π f_k)²: integrating in the
 *              frequency domain, with the band's edges as ideal high- and
 *              low-pass (ISO 10816: 10 – 1000 Hz);
 *   envelope   the band's bins [kl, kh] of X, doubled (positive frequencies
 *              only: the analytic signal) and shifted to bin 0, give through
 *              an inverse FFT of M points z[j] = (2/n)·IFFT(X[kl..kh])[j], the
 *              analytic signal of the band-passed x·w at M instants over the
 *              block.  The window is slow next to the band (Bedrosian), so
 *              |z| = w·e with e the envelope: the FFT E of |z| is already the
 *              windowed envelope's spectrum, amplitude 2|E[q]| / (M/2), and
 *              its bins are fs/n apart like the signal's.
 */
#include "vib/dsp.h"

#include <kiss_fft.h>
#include <kiss_fftr.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fb.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

struct fb_dsp {
    uint32_t n, half; /* block length, bins (n/2 + 1) */
    double fs, df;    /* of the last spectrum */
    kiss_fftr_cfg fwd;
    float *win, *in;
    kiss_fft_cpx *X;
    float *amp;
    double *pow;
    double sumw;
    /* envelope */
    uint32_t m, mhalf;
    kiss_fft_cfg inv;
    kiss_fftr_cfg efwd;
    kiss_fft_cpx *zin, *zout, *E;
    float *e, *eamp;
    size_t bytes;
};

/* ---------------------------------------------------------------- stats */
void fb_dsp_stats(const float *x, uint32_t n, double k, double off, struct fb_dsp_stats *o)
{
    memset(o, 0, sizeof *o);
    if (!n) return;
    double sum = 0, mn = INFINITY, mx = -INFINITY;
    for (uint32_t i = 0; i < n; i++) {
        double y = x[i] * k + off;
        sum += y;
        if (y < mn) mn = y;
        if (y > mx) mx = y;
    }
    double mean = sum / n, m2 = 0, m3 = 0, m4 = 0;
    for (uint32_t i = 0; i < n; i++) {
        double y = x[i] * k + off - mean, y2 = y * y;
        m2 += y2;
        m3 += y2 * y;
        m4 += y2 * y2;
    }
    m2 /= n;
    m3 /= n;
    m4 /= n;
    o->mean = mean;
    o->rms = sqrt(m2);
    o->p2p = mx - mn;
    o->peak = fmax(mx - mean, mean - mn);
    if (m2 > 0) {
        o->crest = o->peak / o->rms;
        o->kurtosis = m4 / (m2 * m2);
        o->skewness = m3 / (m2 * sqrt(m2));
    } else {
        o->crest = o->kurtosis = o->skewness = NAN; /* a constant block: undefined */
    }
}

/* ------------------------------------------------------------- plans */
static void *zalloc(struct fb_dsp *d, size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (p) d->bytes += n;
    return p;
}

static kiss_fftr_cfg real_plan(struct fb_dsp *d, uint32_t n)
{
    size_t len = 0;
    kiss_fftr_alloc((int)n, 0, NULL, &len); /* asks for the size */
    kiss_fftr_cfg c = kiss_fftr_alloc((int)n, 0, NULL, NULL);
    if (c) d->bytes += len;
    return c;
}

struct fb_dsp *fb_dsp_new(uint32_t n, uint32_t env_m)
{
    if (n < 16 || n % 2 || n > (1u << 24) || env_m % 2 || env_m > (1u << 24)) return NULL;
    struct fb_dsp *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->bytes = sizeof *d;
    d->n = n;
    d->half = n / 2 + 1;
    d->fwd = real_plan(d, n);
    d->win = zalloc(d, n * sizeof *d->win);
    d->in = zalloc(d, n * sizeof *d->in);
    d->X = zalloc(d, d->half * sizeof *d->X);
    d->amp = zalloc(d, d->half * sizeof *d->amp);
    d->pow = zalloc(d, d->half * sizeof *d->pow);
    bool ok = d->fwd && d->win && d->in && d->X && d->amp && d->pow;
    if (ok && env_m) {
        size_t len = 0;
        d->m = env_m;
        d->mhalf = env_m / 2 + 1;
        kiss_fft_alloc((int)env_m, 1, NULL, &len);
        d->inv = kiss_fft_alloc((int)env_m, 1, NULL, NULL);
        if (d->inv) d->bytes += len;
        d->efwd = real_plan(d, env_m);
        d->zin = zalloc(d, env_m * sizeof *d->zin);
        d->zout = zalloc(d, env_m * sizeof *d->zout);
        d->E = zalloc(d, d->mhalf * sizeof *d->E);
        d->e = zalloc(d, env_m * sizeof *d->e);
        d->eamp = zalloc(d, d->mhalf * sizeof *d->eamp);
        ok = d->inv && d->efwd && d->zin && d->zout && d->E && d->e && d->eamp;
    }
    if (!ok) {
        fb_dsp_free(d);
        return NULL;
    }
    double sw = 0;
    for (uint32_t i = 0; i < n; i++) {
        d->win[i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / n));
        sw += d->win[i];
    }
    d->sumw = sw;
    return d;
}

void fb_dsp_free(struct fb_dsp *d)
{
    if (!d) return;
    kiss_fftr_free(d->fwd);
    kiss_fft_free(d->inv);
    kiss_fftr_free(d->efwd);
    free(d->win);
    free(d->in);
    free(d->X);
    free(d->amp);
    free(d->pow);
    free(d->zin);
    free(d->zout);
    free(d->E);
    free(d->e);
    free(d->eamp);
    free(d);
}

size_t fb_dsp_bytes(const struct fb_dsp *d) { return d ? d->bytes : 0; }

static uint32_t even_fast(uint32_t m)
{
    if (m < 64) m = 64;
    for (;;) {
        m = (uint32_t)kiss_fft_next_fast_size((int)m);
        if (m % 2 == 0) return m;
        m++;
    }
}

static void band_bins(uint32_t half, double df, double lo, double hi, uint32_t *kl, uint32_t *kh)
{
    double a = ceil(lo / df - 1e-9), b = floor(hi / df + 1e-9);
    if (a < 1) a = 1; /* never DC */
    if (b > half - 1) b = half - 1;
    *kl = (uint32_t)a;
    *kh = b < a ? (uint32_t)a - 1 : (uint32_t)b;
}

uint32_t fb_dsp_env_size(uint32_t n, double fs, double lo, double hi)
{
    if (n < 16 || !(fs > 0) || !(hi > lo)) return 0;
    uint32_t kl, kh;
    band_bins(n / 2 + 1, fs / n, lo, hi, &kl, &kh);
    if (kh < kl) return 0;
    return even_fast(2 * (kh - kl + 1));
}

/* ------------------------------------------------------------ spectrum */
void fb_dsp_spectrum(struct fb_dsp *d, const float *x, double k, double off, double mean, double fs)
{
    uint32_t n = d->n;
    double c = off - mean;
    for (uint32_t i = 0; i < n; i++) d->in[i] = (float)((x[i] * k + c) * d->win[i]);
    kiss_fftr(d->fwd, d->in, d->X);
    d->fs = fs;
    d->df = fs / n;
    double ka = 2.0 / d->sumw, kp = 2.0 / ((double)n * (3.0 * n / 8.0));
    for (uint32_t i = 0; i < d->half; i++) {
        double re = d->X[i].r, im = d->X[i].i, p = re * re + im * im;
        bool edge = i == 0 || i == d->half - 1; /* DC and Nyquist appear once, not twice */
        d->amp[i] = (float)(sqrt(p) * (edge ? ka / 2 : ka));
        d->pow[i] = p * (edge ? kp / 2 : kp);
    }
}

const float *fb_dsp_amp(const struct fb_dsp *d, uint32_t *nbins, double *df)
{
    if (nbins) *nbins = d->half;
    if (df) *df = d->df;
    return d->amp;
}

double fb_dsp_band_rms(const struct fb_dsp *d, double lo, double hi)
{
    uint32_t kl, kh;
    band_bins(d->half, d->df, lo, hi, &kl, &kh);
    double s = 0;
    for (uint32_t k = kl; k <= kh; k++) s += d->pow[k];
    return sqrt(s);
}

double fb_dsp_velocity_rms(const struct fb_dsp *d, double lo, double hi)
{
    uint32_t kl, kh;
    band_bins(d->half, d->df, lo, hi, &kl, &kh);
    double s = 0;
    for (uint32_t k = kl; k <= kh; k++) {
        double w = 2.0 * M_PI * k * d->df;
        s += d->pow[k] / (w * w);
    }
    return sqrt(s);
}

static double line_in(const float *a, uint32_t nb, double df, double f, double tol)
{
    if (!(f > 0) || !(df > 0)) return NAN;
    double c = f / df, w = tol * f / df;
    if (w < 1) w = 1;
    double lo = floor(c - w + 0.5), hi = floor(c + w + 0.5);
    if (lo < 1) lo = 1;
    if (hi > nb - 2.0) hi = nb - 2.0;
    if (hi < lo) return NAN;
    uint32_t best = (uint32_t)lo;
    for (uint32_t k = (uint32_t)lo; k <= (uint32_t)hi; k++)
        if (a[k] > a[best]) best = k;
    double s = (double)a[best - 1] * a[best - 1] + (double)a[best] * a[best] + (double)a[best + 1] * a[best + 1];
    return sqrt(s / 1.5);
}

double fb_dsp_line(const struct fb_dsp *d, double f, double tol) { return line_in(d->amp, d->half, d->df, f, tol); }

/* ------------------------------------------------------------ envelope */
int fb_dsp_envelope(struct fb_dsp *d, double lo, double hi)
{
    if (!d->m) return FB_EINVAL;
    uint32_t kl, kh;
    band_bins(d->half, d->df, lo, hi, &kl, &kh);
    if (kh < kl || kh - kl + 1 > d->m) return FB_EINVAL;
    uint32_t b = kh - kl + 1;
    memcpy(d->zin, d->X + kl, b * sizeof *d->zin);
    memset(d->zin + b, 0, (d->m - b) * sizeof *d->zin);
    kiss_fft(d->inv, d->zin, d->zout);
    double kz = 2.0 / d->n;
    for (uint32_t j = 0; j < d->m; j++) {
        double re = d->zout[j].r, im = d->zout[j].i;
        d->e[j] = (float)(kz * sqrt(re * re + im * im));
    }
    kiss_fftr(d->efwd, d->e, d->E);
    double ka = 2.0 / (d->m / 2.0);
    for (uint32_t q = 0; q < d->mhalf; q++) {
        double re = d->E[q].r, im = d->E[q].i;
        bool edge = q == 0 || q == d->mhalf - 1;
        d->eamp[q] = (float)(sqrt(re * re + im * im) * (edge ? ka / 2 : ka));
    }
    return 0;
}

const float *fb_dsp_env_amp(const struct fb_dsp *d, uint32_t *nbins, double *df)
{
    if (nbins) *nbins = d->mhalf;
    if (df) *df = d->df;
    return d->eamp;
}

double fb_dsp_env_line(const struct fb_dsp *d, double f, double tol)
{
    if (!d->m) return NAN;
    return line_in(d->eamp, d->mhalf, d->df, f, tol);
}

/* ----------------------------------------------------------------- ISO */
int fb_iso_zone(double v, const double limits[3])
{
    int z = 0;
    for (int i = 0; i < 3; i++)
        if (v >= limits[i]) z = i + 1;
    return z;
}
