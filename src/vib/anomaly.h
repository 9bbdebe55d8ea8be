/* anomaly.h — a learned baseline per feature and the two alarms drawn from
 * it (anomaly.c), without threads or I/O: one call per analysed block.
 *
 * Baseline.  For the first learn_blocks blocks every feature's mean and
 * variance are accumulated with equal weight (Welford's running sums: no
 * precision lost over millions of blocks, and the result is exactly the
 * sample mean and variance of the learning period); then the baseline is
 * frozen.  Frozen, not adapting: a fault that grows slowly would otherwise
 * be learnt as normal.  Equal weights rather than an EWMA: the learning
 * period is a fixed, documented stretch of healthy operation, and its mean
 * and spread are what the z-score compares with.  (Median/MAD would resist
 * outliers during learning better but needs the learning period's values
 * kept; the mean/variance needs four numbers per feature and persists as
 * such.)
 *
 * z-score.  z = |x − mean| / σ with σ = max(sample σ, min_sigma · |mean|):
 * the floor keeps features that hardly move block to block (an RMS over
 * 25,600 samples varies by well under 1 %) from alarming on a change no
 * maintenance engineer would care about.  The anomaly alarm is raised when
 * the largest z of the channel's monitored features is >= z_on for
 * min_blocks blocks in a row, and cleared when it is < z_off for min_blocks
 * blocks in a row (hysteresis and minimum duration both ways).
 *
 * Trend.  Each feature's values are averaged into buckets of
 * trend_blocks / 32 blocks; over the buckets there are (at least 8, at most
 * the 32 of the window) a least-squares line gives the change from the
 * first to the last bucket.  What exceeds twice the feature's block-to-block
 * spread σ (noise cannot move a line through a window's means that far),
 * relative to the baseline mean, is the trend: 0.25 = the feature rose by
 * 25 % of its normal level over the window, beyond its noise.  Features whose baseline mean is within 3 σ
 * of zero (skewness) have no level to rise from and no trend.  The trend
 * alarm is raised when the largest
 * rise is >= trend_limit for min_blocks blocks in a row, and cleared below
 * 0.8 · trend_limit the same way.
 *
 * Features whose value is NaN in a block (orders without a speed) are left
 * out of that block. */
#ifndef FB_VIB_ANOMALY_H
#define FB_VIB_ANOMALY_H
#include <stdbool.h>
#include <stdint.h>

#define FB_ANOM_BUCKETS 32

struct fb_anom_cfg {
    uint32_t learn_blocks; /* the baseline is learnt from this many blocks */
    double z_on, z_off;    /* raise at max z >= z_on, clear below z_off (z_off <= z_on) */
    uint32_t min_blocks;   /* blocks in a row for either transition (>= 1) */
    double min_sigma;      /* σ floor as a fraction of |mean| */
    uint32_t trend_blocks; /* the trend's window in blocks; 0: no trend */
    double trend_limit;    /* rise per window, relative to the baseline mean */
};

/* A feature's baseline: what is persisted (vib/baseline.c). */
struct fb_anom_base {
    double n, mean, m2; /* values seen, their mean, Σ (x − mean)² */
};

struct fb_anom {
    const struct fb_anom_cfg *cfg;
    uint32_t nf;
    struct fb_anom_base *base; /* nf */
    uint32_t learned;          /* blocks learnt; == cfg->learn_blocks: frozen */
    bool z_active, t_active;
    uint32_t z_run, t_run; /* blocks in a row towards the other state */
    /* trend */
    uint32_t bucket_blocks, in_bucket, nbuckets, head;
    double *acc;   /* nf: sums of the bucket being filled */
    uint32_t *cnt; /* nf: values in it */
    double *ring;  /* nf × FB_ANOM_BUCKETS bucket means (NaN: none) */
};

struct fb_anom_out {
    bool learning;  /* the baseline is still being learnt (no z, no alarms) */
    double zmax;    /* largest z of this block (NaN while learning) */
    uint32_t zfeat; /* its feature */
    double trend;   /* largest rise per window (NaN: not enough buckets or no trend) */
    uint32_t tfeat;
    int z_event, t_event; /* +1 raised, −1 cleared, 0 none */
};

int fb_anom_init(struct fb_anom *a, const struct fb_anom_cfg *cfg, uint32_t nf);
void fb_anom_free(struct fb_anom *a);
/* Start learning again (a changed config, or on request). */
void fb_anom_reset(struct fb_anom *a);
/* One block's feature values (nf of them). */
void fb_anom_update(struct fb_anom *a, const double *v, struct fb_anom_out *o);
/* The σ used for feature i (with the floor). */
double fb_anom_sigma(const struct fb_anom *a, uint32_t i);
#endif
