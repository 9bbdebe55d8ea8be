/* anomaly.c — baseline, z-score and trend alarms (anomaly.h). */
#include "vib/anomaly.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fb.h"

int fb_anom_init(struct fb_anom *a, const struct fb_anom_cfg *cfg, uint32_t nf)
{
    memset(a, 0, sizeof *a);
    a->cfg = cfg;
    a->nf = nf;
    a->base = calloc(nf ? nf : 1, sizeof *a->base);
    a->acc = calloc(nf ? nf : 1, sizeof *a->acc);
    a->cnt = calloc(nf ? nf : 1, sizeof *a->cnt);
    a->ring = malloc((nf ? nf : 1) * FB_ANOM_BUCKETS * sizeof *a->ring);
    if (!a->base || !a->acc || !a->cnt || !a->ring) {
        fb_anom_free(a);
        return FB_ENOMEM;
    }
    a->bucket_blocks = cfg->trend_blocks / FB_ANOM_BUCKETS;
    if (a->bucket_blocks < 1) a->bucket_blocks = 1;
    fb_anom_reset(a);
    return 0;
}

void fb_anom_free(struct fb_anom *a)
{
    free(a->base);
    free(a->acc);
    free(a->cnt);
    free(a->ring);
    memset(a, 0, sizeof *a);
}

void fb_anom_reset(struct fb_anom *a)
{
    memset(a->base, 0, a->nf * sizeof *a->base);
    memset(a->acc, 0, a->nf * sizeof *a->acc);
    memset(a->cnt, 0, a->nf * sizeof *a->cnt);
    for (uint32_t i = 0; i < a->nf * FB_ANOM_BUCKETS; i++) a->ring[i] = NAN;
    a->learned = 0;
    a->z_active = a->t_active = false;
    a->z_run = a->t_run = 0;
    a->in_bucket = a->nbuckets = a->head = 0;
}

double fb_anom_sigma(const struct fb_anom *a, uint32_t i)
{
    const struct fb_anom_base *b = &a->base[i];
    double s = b->n > 1 ? sqrt(b->m2 / (b->n - 1)) : 0;
    double floor = a->cfg->min_sigma * fabs(b->mean);
    if (s < floor) s = floor;
    if (s < 1e-12) s = 1e-12; /* a feature that never moved and is 0: any change is an anomaly */
    return s;
}

/* Hysteresis with a minimum duration both ways: the state flips after
 * min_blocks blocks in a row on the other side. */
static int step(bool *active, uint32_t *run, bool over, bool under, uint32_t min_blocks)
{
    bool toward = *active ? under : over;
    *run = toward ? *run + 1 : 0;
    if (*run < min_blocks) return 0;
    *run = 0;
    *active = !*active;
    return *active ? 1 : -1;
}

/* Least-squares slope over the filled buckets, oldest first; NaN with fewer than 8. */
static double slope(const double *ring, uint32_t nbuckets, uint32_t head)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    uint32_t n = 0;
    for (uint32_t k = 0; k < nbuckets; k++) {
        /* head is where the next bucket goes: the oldest of a full ring */
        uint32_t idx = nbuckets < FB_ANOM_BUCKETS ? k : (head + k) % FB_ANOM_BUCKETS;
        double y = ring[idx];
        if (isnan(y)) continue;
        sx += k;
        sy += y;
        sxx += (double)k * k;
        sxy += k * y;
        n++;
    }
    if (n < 8) return NAN;
    double den = n * sxx - sx * sx;
    return den > 0 ? (n * sxy - sx * sy) / den : NAN;
}

void fb_anom_update(struct fb_anom *a, const double *v, struct fb_anom_out *o)
{
    const struct fb_anom_cfg *c = a->cfg;
    memset(o, 0, sizeof *o);
    o->zmax = o->trend = NAN;
    if (a->learned < c->learn_blocks) {
        for (uint32_t i = 0; i < a->nf; i++) {
            if (!isfinite(v[i])) continue;
            struct fb_anom_base *b = &a->base[i];
            b->n += 1;
            double d = v[i] - b->mean;
            b->mean += d / b->n;
            b->m2 += d * (v[i] - b->mean);
        }
        a->learned++;
        o->learning = true;
        return;
    }
    double zmax = -1;
    for (uint32_t i = 0; i < a->nf; i++) {
        if (!isfinite(v[i]) || a->base[i].n < 2) continue;
        double z = fabs(v[i] - a->base[i].mean) / fb_anom_sigma(a, i);
        if (z > zmax) {
            zmax = z;
            o->zfeat = i;
        }
    }
    if (zmax >= 0) {
        o->zmax = zmax;
        o->z_event = step(&a->z_active, &a->z_run, zmax >= c->z_on, zmax < c->z_off, c->min_blocks);
    }
    if (!c->trend_blocks) return;
    for (uint32_t i = 0; i < a->nf; i++)
        if (isfinite(v[i])) {
            a->acc[i] += v[i];
            a->cnt[i]++;
        }
    if (++a->in_bucket >= a->bucket_blocks) {
        for (uint32_t i = 0; i < a->nf; i++) {
            a->ring[i * FB_ANOM_BUCKETS + a->head] = a->cnt[i] ? a->acc[i] / a->cnt[i] : NAN;
            a->acc[i] = 0;
            a->cnt[i] = 0;
        }
        a->head = (a->head + 1) % FB_ANOM_BUCKETS;
        if (a->nbuckets < FB_ANOM_BUCKETS) a->nbuckets++;
        a->in_bucket = 0;
    }
    double tmax = NAN;
    for (uint32_t i = 0; i < a->nf; i++) {
        double m = fabs(a->base[i].mean);
        if (!(m > 0) || m < 3 * fb_anom_sigma(a, i)) continue; /* no level to rise from (skewness ~ 0) */
        double s = slope(a->ring + i * FB_ANOM_BUCKETS, a->nbuckets, a->head);
        if (isnan(s)) continue;
        /* the change across the buckets there are (at most a window), less twice the block-to-block
         * spread (what noise can do), relative to the normal level */
        double sig = 2 * fb_anom_sigma(a, i), d = s * (a->nbuckets - 1);
        d = d > sig ? d - sig : d < -sig ? d + sig : 0;
        double rise = d / m;
        if (isnan(tmax) || rise > tmax) {
            tmax = rise;
            o->tfeat = i;
        }
    }
    o->trend = tmax;
    if (!isnan(tmax))
        o->t_event = step(&a->t_active, &a->t_run, tmax >= c->trend_limit, tmax < 0.8 * c->trend_limit, c->min_blocks);
}
