/* sim_motor.c — the simulator's motor model (sim_motor.h).
 *
 * An impact at time t_k rings the structure as a damped sine,
 *   h(τ) = e^(−ζ·ω_n·τ) · sin(ω_d·τ) / h_peak,  ω_n = 2π·f_res, ω_d = ω_n·√(1 − ζ²),
 * normalised so that its highest point is the impact's strength, and cut
 * where it has decayed to 1/1000.  It is produced by rotating a complex
 * number once per sample (no sin/exp per sample).  Impact k of a defect of
 * frequency f sits at (k + u_k·slip − slip/2) / f, with u_k a hash of
 * (seed, defect, k): the same impact lands at the same time whichever block
 * computes it, so impacts ringing across a block boundary continue in the
 * next block. */
#include "south/sim/sim_motor.h"

#include <math.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

void fb_motor_defaults(struct fb_motor *m)
{
    memset(m, 0, sizeof *m);
    m->rpm = 1480;
    m->unbalance = 0.25;
    m->misalign = 0.15;
    m->noise = 0.3;
    m->resonance = 3500;
    m->damping = 0.05;
    m->balls = 9;
    m->ball_d = 7.94;
    m->pitch_d = 39.04;
    m->angle = 0;
    m->onset_ns = 0;
    m->growth_ns = 3600LL * 1000000000LL;
    m->accel = 1;
    m->slip = 0.01;
}

static struct fb_bearing bearing_of(const struct fb_motor *m)
{
    return (struct fb_bearing){(int)m->balls, m->ball_d, m->pitch_d, m->angle};
}

int fb_motor_check(const struct fb_motor *m, const char **why)
{
    const char *w = NULL;
    struct fb_bearing b = bearing_of(m);
    if (!(m->rpm > 0) || m->rpm > 200000)
        w = "rpm must be greater than 0";
    else if (m->balls != floor(m->balls) || !fb_bearing_valid(&b, &w))
        w = w ? w : "balls must be a whole number";
    else if (!(m->resonance > 0))
        w = "resonance must be greater than 0 Hz";
    else if (!(m->damping > 0 && m->damping < 1))
        w = "damping must be between 0 and 1 (exclusive)";
    else if (m->noise < 0 || m->unbalance < 0 || m->misalign < 0 || m->outer < 0 || m->inner < 0 || m->ball < 0 ||
             m->cage < 0)
        w = "amplitudes (unbalance, misalign, noise, outer, inner, ball, cage) must be >= 0";
    else if (!(m->accel > 0))
        w = "accel must be greater than 0";
    else if (!(m->slip >= 0 && m->slip < 0.5))
        w = "slip must be at least 0 and less than 0.5";
    if (why) *why = w;
    return w ? -1 : 0;
}

static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void fb_motor_seed(struct fb_motor *m, uint64_t seed)
{
    m->seed = seed;
    m->rng = mix(seed ^ 0x6D6F746F72ull);
    if (!m->rng) m->rng = 1;
    m->t = 0;
    m->ph1 = 0.3;
    m->ph2 = 1.1;
    m->have_spare = 0;
}

static double u01(struct fb_motor *m)
{
    uint64_t x = m->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    m->rng = x;
    return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

static double gauss(struct fb_motor *m)
{
    if (m->have_spare) {
        m->have_spare = 0;
        return m->spare;
    }
    double u1 = u01(m), u2 = u01(m);
    if (u1 < 1e-300) u1 = 1e-300;
    double r = sqrt(-2.0 * log(u1));
    m->spare = r * sin(2.0 * M_PI * u2);
    m->have_spare = 1;
    return r * cos(2.0 * M_PI * u2);
}

double fb_motor_severity(const struct fb_motor *m, double t_op)
{
    double on = m->onset_ns / 1e9, g = m->growth_ns / 1e9;
    if (t_op < on) return 0;
    if (g <= 0) return 1;
    double s = (t_op - on) / g;
    return s > 1 ? 1 : s;
}

/* One defect's impacts into x. */
static void impacts(const struct fb_motor *m, float *x, uint32_t n, double fs, double t0, int which, double f,
                    double amp, double fr, double ftf)
{
    double wn = 2.0 * M_PI * m->resonance, z = m->damping, wd = wn * sqrt(1.0 - z * z);
    double tau_max = log(1000.0) / (z * wn);
    double tpk = atan(wd / (z * wn)) / wd, hpk = exp(-z * wn * tpk) * sin(wd * tpk);
    double t1 = t0 + n / fs;
    /* one rotation per sample: r = e^((−ζω_n + iω_d)/fs) */
    double rr = exp(-z * wn / fs), rc = rr * cos(wd / fs), rs = rr * sin(wd / fs);
    int64_t k0 = (int64_t)floor((t0 - tau_max) * f) - 1, k1 = (int64_t)ceil(t1 * f) + 1;
    for (int64_t k = k0; k <= k1; k++) {
        uint64_t h = mix(m->seed ^ ((uint64_t)which << 58) ^ (uint64_t)k);
        double u = (double)(h >> 11) * 0x1.0p-53;
        double tk = ((double)k + (u - 0.5) * m->slip) / f;
        if (tk + tau_max < t0 || tk >= t1) continue;
        double a = amp;
        if (which == 1) a *= 0.5 * (1.0 + cos(2.0 * M_PI * fr * tk));  /* inner race: load zone, once a turn */
        if (which == 2) a *= 0.5 * (1.0 + cos(2.0 * M_PI * ftf * tk)); /* ball: once a cage turn */
        a /= hpk;
        double first = ceil((tk - t0) * fs);
        if (first < 0) first = 0;
        uint32_t i = (uint32_t)first;
        double tau = t0 + i / fs - tk;
        /* e^(−ζω_n τ) (cos ω_d τ + i sin ω_d τ), the imaginary part is h */
        double e = exp(-z * wn * tau), cr = e * cos(wd * tau), ci = e * sin(wd * tau);
        uint32_t last = (uint32_t)fmin((double)n, ceil((tk + tau_max - t0) * fs));
        for (; i < last; i++) {
            x[i] += (float)(a * ci);
            double nr = cr * rc - ci * rs;
            ci = cr * rs + ci * rc;
            cr = nr;
        }
    }
}

void fb_motor_block(struct fb_motor *m, float *x, uint32_t n, double fs, double t_op)
{
    double fr = m->rpm / 60.0;
    double d1 = 2.0 * M_PI * fr / fs, d2 = 2.0 * d1;
    double c1 = cos(m->ph1), s1 = sin(m->ph1), c2 = cos(m->ph2), s2 = sin(m->ph2);
    double r1c = cos(d1), r1s = sin(d1), r2c = cos(d2), r2s = sin(d2);
    for (uint32_t i = 0; i < n; i++) {
        x[i] = (float)(m->unbalance * s1 + m->misalign * s2 + m->noise * gauss(m));
        double t = c1 * r1c - s1 * r1s;
        s1 = c1 * r1s + s1 * r1c;
        c1 = t;
        t = c2 * r2c - s2 * r2s;
        s2 = c2 * r2s + s2 * r2c;
        c2 = t;
    }
    /* the phases from their sums, not the rotated values: no drift over days */
    m->ph1 = fmod(m->ph1 + n * d1, 2.0 * M_PI);
    m->ph2 = fmod(m->ph2 + n * d2, 2.0 * M_PI);
    double sev = fb_motor_severity(m, t_op);
    if (sev > 0) {
        struct fb_bearing b = bearing_of(m);
        double o[FB_BEARING__COUNT];
        fb_bearing_orders(&b, o);
        double ftf = o[FB_FTF] * fr;
        if (m->outer > 0) impacts(m, x, n, fs, m->t, 0, o[FB_BPFO] * fr, m->outer * sev, fr, ftf);
        if (m->inner > 0) impacts(m, x, n, fs, m->t, 1, o[FB_BPFI] * fr, m->inner * sev, fr, ftf);
        if (m->ball > 0) impacts(m, x, n, fs, m->t, 2, 2.0 * o[FB_BSF] * fr, m->ball * sev, fr, ftf);
        if (m->cage > 0) impacts(m, x, n, fs, m->t, 3, ftf, m->cage * sev, fr, ftf);
    }
    m->t += n / fs;
}
