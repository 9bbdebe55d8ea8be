/* features.c — a block to its channel's feature values (features.h). */
#include "vib/features.h"

#include <math.h>

#include "core/fb.h"

double fb_vib_features(const struct fb_vib_chan *c, struct fb_dsp *dsp, const float *x, double k, double d, double fr,
                       uint32_t fq, double *vals, uint32_t *quals)
{
    struct fb_dsp_stats st;
    fb_dsp_stats(x, c->n, k, d, &st);
    bool spectrum = false;
    for (uint32_t i = 0; i < c->nout; i++) spectrum |= c->out[i].kind >= FB_VO_VEL && c->out[i].kind <= FB_VO_ISO;
    if (spectrum) fb_dsp_spectrum(dsp, x, k, d, st.mean, c->fs);
    if (c->speed_hz > 0) { /* a fixed speed wins over whatever the caller has */
        fr = c->speed_hz;
        fq = FB_Q_GOOD;
    }
    if (!isfinite(fr) || !(fr > 0)) {
        fr = NAN;
        if (!fb_q_bad(fq)) fq = FB_Q_BAD_WAITING; /* no speed yet */
    }
    bool env = c->env_m && isfinite(fr) && fb_dsp_envelope(dsp, c->env_lo, c->env_hi) == 0;
    double orders[FB_BEARING__COUNT] = {0};
    if (c->has_bearing) fb_bearing_orders(&c->bearing, orders);
    double vel = spectrum ? fb_dsp_velocity_rms(dsp, c->vel_lo, c->vel_hi) * c->to_ms2 * 1000.0 : NAN;
    for (uint32_t i = 0; i < c->nout; i++) {
        const struct fb_vib_out *o = &c->out[i];
        double val = NAN;
        uint32_t q = FB_Q_GOOD;
        switch (o->kind) {
            case FB_VO_RMS: val = st.rms; break;
            case FB_VO_PEAK: val = st.peak; break;
            case FB_VO_P2P: val = st.p2p; break;
            case FB_VO_CREST: val = st.crest; break;
            case FB_VO_KURT: val = st.kurtosis; break;
            case FB_VO_SKEW: val = st.skewness; break;
            case FB_VO_VEL: val = vel; break;
            case FB_VO_BAND: val = fb_dsp_band_rms(dsp, c->band[o->idx][0], c->band[o->idx][1]); break;
            case FB_VO_ORDER:
                q = fq;
                if (isfinite(fr)) val = fb_dsp_line(dsp, c->order[o->idx] * fr, c->tol);
                break;
            case FB_VO_ENV: {
                q = fq;
                if (!env) break;
                /* a spall on a ball touches both races once per spin: its line is at 2 × BSF */
                double f = orders[o->idx] * fr * (o->idx == FB_BSF ? 2.0 : 1.0), s = 0;
                for (uint32_t h = 1; h <= c->env_harm; h++) {
                    double a = fb_dsp_env_line(dsp, h * f, c->tol);
                    s += isfinite(a) ? a * a : 0;
                }
                val = sqrt(s);
                break;
            }
            case FB_VO_ISO:
                if (isfinite(vel)) val = fb_iso_zone(vel, c->iso_limits);
                break;
            default: q = FB_Q_BAD_WAITING; break; /* anomaly, trend: the baseline's */
        }
        if (!isfinite(val) && !fb_q_bad(q))
            q = o->kind <= FB_VO_SKEW || o->kind == FB_VO_ISO ? FB_Q_BAD_SENSOR_FAILURE : FB_Q_BAD_OUT_OF_RANGE;
        vals[i] = fb_q_bad(q) ? NAN : val;
        quals[i] = q;
    }
    return vel;
}

bool fb_vib_iso_alarms(const double limits[3], double deadband, double v, bool *c_on, bool *d_on)
{
    bool c = *c_on ? v >= limits[1] * (1 - deadband) : v >= limits[1];
    bool d = *d_on ? v >= limits[2] * (1 - deadband) : v >= limits[2];
    bool changed = c != *c_on || d != *d_on;
    *c_on = c;
    *d_on = d;
    return changed;
}
