/* test_vib_dsp.c — the vibration analysis against signals whose answers are
 * known in closed form: a sine's RMS (A/√2), crest factor (√2), kurtosis
 * (1.5) and skewness (0); Gaussian noise's kurtosis (3) and skewness (0);
 * the FFT line of a sine at its bin with its amplitude after the window
 * correction, also between two bins; band RMS; the velocity RMS of an
 * acceleration sine (A/(2πf)/√2); the envelope spectrum of an amplitude-
 * modulated carrier (a line at the modulation frequency, of the modulation
 * depth); the bearing defect frequencies against hand-computed values; the
 * ISO 10816-3 zones exactly at their boundaries. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vib/bearing.h"
#include "vib/dsp.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#define FS 25600.0
#define N 25600u

static float *sine_block(uint32_t n, double fs, double a, double f, double ph)
{
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    for (uint32_t i = 0; i < n; i++) x[i] = (float)(a * sin(2 * M_PI * f * i / fs + ph));
    return x;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}
static double gauss(void)
{
    double u1 = urand(), u2 = urand();
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static void test_sine_stats(void **st)
{
    (void)st;
    /* 50 whole periods of a 50 Hz sine of amplitude 3 on an offset of 7 */
    float *x = sine_block(N, FS, 3.0, 50.0, 0.3);
    for (uint32_t i = 0; i < N; i++) x[i] += 7.0f;
    struct fb_dsp_stats s;
    fb_dsp_stats(x, N, 1.0, 0.0, &s);
    assert_true(fabs(s.mean - 7.0) < 1e-5);
    assert_true(fabs(s.rms - 3.0 / sqrt(2.0)) < 1e-5); /* A/√2 */
    assert_true(fabs(s.crest - sqrt(2.0)) < 1e-4);     /* √2 */
    assert_true(fabs(s.kurtosis - 1.5) < 1e-4);        /* 3/2 for a sine */
    assert_true(fabs(s.skewness) < 1e-4);              /* symmetric */
    assert_true(fabs(s.peak - 3.0) < 1e-3);            /* sampled at 512 points per period */
    assert_true(fabs(s.p2p - 6.0) < 2e-3);
    /* the scale applies before anything: y = 2x - 14 is a sine of amplitude 6 around 0 */
    fb_dsp_stats(x, N, 2.0, -14.0, &s);
    assert_true(fabs(s.mean) < 1e-4);
    assert_true(fabs(s.rms - 6.0 / sqrt(2.0)) < 1e-4);
    free(x);
}

static void test_noise_stats(void **st)
{
    (void)st;
    uint32_t n = 4 * N; /* kurtosis' standard error sqrt(24/n) = 0.008 */
    float *x = malloc(n * sizeof *x);
    for (uint32_t i = 0; i < n; i++) x[i] = (float)(0.5 * gauss());
    struct fb_dsp_stats s;
    fb_dsp_stats(x, n, 1.0, 0.0, &s);
    assert_true(fabs(s.rms - 0.5) < 0.01);
    assert_true(fabs(s.kurtosis - 3.0) < 0.05);
    assert_true(fabs(s.skewness) < 0.03);
    free(x);
    /* a constant: no spread, the ratios are undefined, not a division by zero */
    float c[64];
    for (int i = 0; i < 64; i++) c[i] = 1.0f;
    fb_dsp_stats(c, 64, 1.0, 0.0, &s);
    assert_true(s.rms == 0 && isnan(s.crest) && isnan(s.kurtosis));
}

static void test_fft_line(void **st)
{
    (void)st;
    struct fb_dsp *d = fb_dsp_new(N, 0);
    assert_non_null(d);
    /* bin-centred: 120 Hz at 1 Hz resolution → bin 120, amplitude A after the window correction */
    float *x = sine_block(N, FS, 2.5, 120.0, 1.0);
    fb_dsp_spectrum(d, x, 1.0, 0.0, 0.0, FS);
    uint32_t nb;
    double df;
    const float *a = fb_dsp_amp(d, &nb, &df);
    assert_int_equal(nb, N / 2 + 1);
    assert_true(fabs(df - 1.0) < 1e-12);
    uint32_t best = 0;
    for (uint32_t k = 0; k < nb; k++)
        if (a[k] > a[best]) best = k;
    assert_int_equal(best, 120);
    assert_true(fabs(a[120] - 2.5) < 2.5e-4);
    assert_true(fabs(a[119] - 1.25) < 2.5e-4 && fabs(a[121] - 1.25) < 2.5e-4); /* Hann: A/2 beside */
    assert_true(fabs(fb_dsp_line(d, 120.0, 0.01) - 2.5) < 2.5e-4);
    /* the band RMS of a sine is A/√2 */
    assert_true(fabs(fb_dsp_band_rms(d, 100, 140) - 2.5 / sqrt(2.0)) < 1e-3);
    assert_true(fb_dsp_band_rms(d, 200, 400) < 1e-3);
    free(x);
    /* half-way between two bins: the strongest bin alone reads 15 % low (scalloping);
     * the main lobe's energy is within 1.1 % */
    x = sine_block(N, FS, 2.5, 120.5, 0.0);
    fb_dsp_spectrum(d, x, 1.0, 0.0, 0.0, FS);
    a = fb_dsp_amp(d, &nb, &df);
    assert_true(a[120] < 2.2);
    double l = fb_dsp_line(d, 120.5, 0.01);
    assert_true(fabs(l - 2.5) < 0.011 * 2.5);
    free(x);
    /* two sines in two bands */
    x = sine_block(N, FS, 1.0, 60.0, 0.0);
    float *y = sine_block(N, FS, 4.0, 3000.0, 0.5);
    for (uint32_t i = 0; i < N; i++) x[i] += y[i];
    fb_dsp_spectrum(d, x, 1.0, 0.0, 0.0, FS);
    assert_true(fabs(fb_dsp_band_rms(d, 10, 1000) - 1.0 / sqrt(2.0)) < 1e-3);
    assert_true(fabs(fb_dsp_band_rms(d, 1000, 5000) - 4.0 / sqrt(2.0)) < 1e-3);
    assert_true(fabs(fb_dsp_band_rms(d, 1, 12800) - sqrt(17.0 / 2.0)) < 1e-3); /* Parseval */
    free(x);
    free(y);
    fb_dsp_free(d);
}

static void test_velocity(void **st)
{
    (void)st;
    struct fb_dsp *d = fb_dsp_new(N, 0);
    /* an acceleration sine of A m/s² at f has velocity A/(2πf) m/s peak, A/(2πf)/√2 RMS */
    const double A = 5.0, f = 49.3;
    float *x = sine_block(N, FS, A, f, 0.2);
    fb_dsp_spectrum(d, x, 1.0, 0.0, 0.0, FS);
    double v = fb_dsp_velocity_rms(d, 10, 1000);
    double want = A / (2 * M_PI * f) / sqrt(2.0);
    assert_true(fabs(v - want) / want < 2e-3);
    /* below the high-pass it is gone: a 4 Hz sine is not velocity in 10..1000 Hz */
    free(x);
    x = sine_block(N, FS, A, 4.0, 0.0);
    fb_dsp_spectrum(d, x, 1.0, 0.0, 0.0, FS);
    assert_true(fb_dsp_velocity_rms(d, 10, 1000) < 1e-3 * A / (2 * M_PI * 4.0));
    free(x);
    fb_dsp_free(d);
}

static void test_envelope(void **st)
{
    (void)st;
    /* a 3 kHz carrier modulated at 87 Hz with depth 0.5: x = (1 + 0.5 cos 2π·87t) sin 2π·3000t.
     * Its envelope is 1 + 0.5 cos(...): a line of 0.5 at 87 Hz, nothing at the carrier */
    const double lo = 2000, hi = 4000;
    uint32_t m = fb_dsp_env_size(N, FS, lo, hi);
    assert_true(m >= 2 * 2001 && m % 2 == 0);
    struct fb_dsp *d = fb_dsp_new(N, m);
    assert_non_null(d);
    float *x = malloc(N * sizeof *x);
    for (uint32_t i = 0; i < N; i++) {
        double t = i / FS;
        x[i] = (float)((1 + 0.5 * cos(2 * M_PI * 87 * t)) * sin(2 * M_PI * 3000 * t));
    }
    fb_dsp_spectrum(d, x, 1.0, 0.0, 0.0, FS);
    assert_int_equal(fb_dsp_envelope(d, lo, hi), 0);
    uint32_t nb;
    double df;
    const float *e = fb_dsp_env_amp(d, &nb, &df);
    assert_true(fabs(df - 1.0) < 1e-12);
    uint32_t best = 5;
    for (uint32_t k = 5; k < nb; k++) /* past the window's DC lobe */
        if (e[k] > e[best]) best = k;
    assert_int_equal(best, 87);
    assert_true(fabs(fb_dsp_env_line(d, 87, 0.01) - 0.5) < 0.01);
    assert_true(fb_dsp_env_line(d, 150, 0.01) < 0.01);
    /* a band the plan was not made for */
    assert_int_equal(fb_dsp_envelope(d, 10, 12000), -1);
    free(x);
    fb_dsp_free(d);
    /* no envelope plan: refused */
    d = fb_dsp_new(1024, 0);
    assert_int_equal(fb_dsp_envelope(d, 100, 200), -1);
    assert_true(isnan(fb_dsp_env_line(d, 10, 0.01)));
    fb_dsp_free(d);
    assert_null(fb_dsp_new(15, 0)); /* odd */
}

static void test_bearing(void **st)
{
    (void)st;
    /* a 6205-size deep-groove ball bearing: 9 balls, d = 7.94 mm, D = 39.04 mm, φ = 0.
     * By hand: r = 7.94 / 39.04 = 0.2033811
     *   BPFO = 9/2 · (1 − r)                 = 4.5 · 0.7966189 = 3.5847848 × shaft
     *   BPFI = 9/2 · (1 + r)                 = 4.5 · 1.2033811 = 5.4152152
     *   FTF  = 1/2 · (1 − r)                 = 0.3983094
     *   BSF  = 39.04 / (2 · 7.94) · (1 − r²) = 2.4584383 · 0.9586362 = 2.3567477 */
    struct fb_bearing b = {9, 7.94, 39.04, 0};
    double o[FB_BEARING__COUNT];
    assert_true(fb_bearing_valid(&b, NULL));
    fb_bearing_orders(&b, o);
    assert_true(fabs(o[FB_BPFO] - 3.5847848) < 1e-6);
    assert_true(fabs(o[FB_BPFI] - 5.4152152) < 1e-6);
    assert_true(fabs(o[FB_FTF] - 0.3983094) < 1e-6);
    assert_true(fabs(o[FB_BSF] - 2.3567477) < 1e-6);
    /* at 1480 rpm (24.667 Hz) the outer race is hit 88.42 times a second */
    assert_true(fabs(o[FB_BPFO] * 1480.0 / 60.0 - 88.4247) < 1e-3);
    /* a contact angle of 15°: r = 0.2033811 · cos 15° = 0.1964511, BPFO = 4.5 · 0.8035489 = 3.6159700 */
    b.contact_angle = 15;
    fb_bearing_orders(&b, o);
    assert_true(fabs(o[FB_BPFO] - 3.6159700) < 1e-6);
    const char *why;
    struct fb_bearing bad = {9, 40, 39.04, 0};
    assert_false(fb_bearing_valid(&bad, &why));
    assert_non_null(strstr(why, "pitch_diameter"));
    bad = (struct fb_bearing){2, 7, 39, 0};
    assert_false(fb_bearing_valid(&bad, &why));
    bad = (struct fb_bearing){9, 7, 39, 90};
    assert_false(fb_bearing_valid(&bad, &why));
    assert_non_null(strstr(why, "contact_angle"));
}

static void test_iso_zone(void **st)
{
    (void)st;
    /* group 2, rigid: A/B 1.4, B/C 2.8, C/D 4.5 mm/s; a value on a boundary is in the worse zone */
    const double g2r[3] = {1.4, 2.8, 4.5};
    assert_int_equal(fb_iso_zone(0.0, g2r), 0);
    assert_int_equal(fb_iso_zone(nextafter(1.4, 0), g2r), 0);
    assert_int_equal(fb_iso_zone(1.4, g2r), 1);
    assert_int_equal(fb_iso_zone(nextafter(2.8, 0), g2r), 1);
    assert_int_equal(fb_iso_zone(2.8, g2r), 2);
    assert_int_equal(fb_iso_zone(nextafter(4.5, 0), g2r), 2);
    assert_int_equal(fb_iso_zone(4.5, g2r), 3);
    assert_int_equal(fb_iso_zone(100, g2r), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sine_stats), cmocka_unit_test(test_noise_stats), cmocka_unit_test(test_fft_line),
        cmocka_unit_test(test_velocity),   cmocka_unit_test(test_envelope),    cmocka_unit_test(test_bearing),
        cmocka_unit_test(test_iso_zone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
