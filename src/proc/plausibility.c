/* plausibility.c — range, rate-of-change (spike) and stuck-value checks.
 *
 * The checks never drop a sample: they downgrade its quality, so a consumer
 * sees the value together with why it is not to be trusted.  In order:
 *   - a NaN becomes BadSensorFailure and ±Inf BadOutOfRange (JSON carries
 *     them as null, so the quality must say why) — always, even without rules;
 *   - outside [min, max] → BadOutOfRange;
 *   - |Δ| / Δt above max_rate against the last PLAUSIBLE sample →
 *     BadSensorFailure.  A spike does not become the reference, so one wild
 *     reading cannot make the next normal reading look like a spike back.
 *     A genuine step is accepted in one of two ways: after spike_accept
 *     consecutive refused samples that agree with each other (each within
 *     max_rate of the one before: the signal sits at a new level, it is not
 *     a spike), the last of them is plausible and the new reference; or once
 *     max_rate × the time since the reference covers the step (the reference
 *     stays put while time runs on), so the check heals itself even with
 *     spike_accept 0 — but that can take minutes for a big step.
 *     Samples with a timestamp not after the reference skip the rate check;
 *   - the value exactly unchanged for at least stuck_ns → UncertainSensor-
 *     NotAccurate (only a Good quality is downgraded).
 * Samples that arrive bad (communication errors) pass through untouched and
 * do not touch the state; strings are not checked.  Timestamps are the
 * sample's source time in ns. */
#include <math.h>

#include "proc/proc.h"

uint32_t fb_plausibility(const struct fb_tag_proc *p, struct fb_tag_state *st, const struct fb_value *v, uint32_t q,
                         int64_t ts)
{
    double x;
    if (fb_q_bad(q) || !fb_value_to_double(v, &x)) return q;
    if (isnan(x)) return FB_Q_BAD_SENSOR_FAILURE;
    if (isinf(x)) return FB_Q_BAD_OUT_OF_RANGE;
    if ((p->has_min && x < p->min) || (p->has_max && x > p->max)) return FB_Q_BAD_OUT_OF_RANGE;
    if (p->max_rate > 0 && st->have_prev && ts > st->prev_ns) {
        double dt = (double)(ts - st->prev_ns) * 1e-9;
        if (fabs(x - st->prev) > p->max_rate * dt) {
            if (!p->spike_accept) return FB_Q_BAD_SENSOR_FAILURE;
            bool agrees = st->cand_n > 0 && ts > st->cand_ns &&
                          fabs(x - st->cand) <= p->max_rate * (double)(ts - st->cand_ns) * 1e-9;
            st->cand_n = agrees ? st->cand_n + 1 : 1;
            st->cand = x;
            st->cand_ns = ts;
            if (st->cand_n < p->spike_accept) return FB_Q_BAD_SENSOR_FAILURE;
            /* spike_accept samples agree: a real step, accepted below */
        }
    }
    st->cand_n = 0;
    /* plausible: becomes the reference for the next rate and stuck checks */
    if (!st->have_prev || x != st->prev) st->unchanged_since_ns = ts;
    st->have_prev = true;
    st->prev = x;
    st->prev_ns = ts;
    if (p->stuck_ns > 0 && fb_q_good(q) && ts - st->unchanged_since_ns >= p->stuck_ns) return FB_Q_UNC_NOT_ACCURATE;
    return q;
}
