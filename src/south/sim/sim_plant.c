/* sim_plant.c — the simulated processes of sim_plant.h.
 *
 * Spec grammar (a sim tag's address, or the plant peer's --plant):
 *
 *     KIND[:KEY=VALUE{,KEY=VALUE}]
 *
 * Keys come from one table (kinds that accept it, name, number or duration,
 * default, field), as in sim_gen.c, so defaults, validation and the "valid
 * keys" message agree.  `input=` takes a tag name.
 *
 * Integration.  fb_plant_advance walks from p->t to t through the intervals
 * in which the delayed input u(τ − dead) is constant — their ends are the
 * recorded input changes shifted by the dead time — and solves each one:
 *   first order (fopdt, heater): y ← y_ss + (y − y_ss)·e^(−Δ/tau), exact;
 *   valve/motor: y moves towards the command at the travel rate, exact;
 *   tank: RK4 with steps of at most 10 ms (the outflow √h is not linear).
 */
#include "south/sim/sim_plant.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const fb_plant_names[] = {"fopdt", "heater", "tank", "valve", "motor", NULL};

enum vk { PV_NUM, PV_DUR, PV_POS /* number > 0 */, PV_NAME };

#define K(k) (1u << (k))
#define K_ALL 0xFFu
struct pkey {
    unsigned kinds;
    const char *name;
    enum vk vk;
    double def;
    size_t off; /* double field, or the input name */
};
#define F(f) offsetof(struct fb_plant, f)
static const struct pkey pkeys[] = {
    {K(FB_PLANT_FOPDT), "k", PV_NUM, 1, F(k)},
    {K(FB_PLANT_FOPDT), "tau", PV_DUR, 10, F(tau_s)},
    {K(FB_PLANT_FOPDT), "y0", PV_NUM, 0, F(y0)},
    {K(FB_PLANT_HEATER), "p_max", PV_POS, 2000, F(p_max)},
    {K(FB_PLANT_HEATER), "c", PV_POS, 40000, F(c)},
    {K(FB_PLANT_HEATER), "ua", PV_POS, 20, F(ua)},
    {K(FB_PLANT_HEATER), "ambient", PV_NUM, 20, F(ambient)},
    {K(FB_PLANT_TANK), "area", PV_POS, 1, F(area)},
    {K(FB_PLANT_TANK), "q_max", PV_POS, 0.01, F(q_max)},
    {K(FB_PLANT_TANK), "k_out", PV_NUM, 0.005, F(k_out)},
    {K(FB_PLANT_TANK), "height", PV_POS, 2, F(height)},
    {K(FB_PLANT_VALVE), "travel", PV_DUR, 10, F(travel_s)},
    {K(FB_PLANT_VALVE), "min", PV_NUM, 0, F(lo)},
    {K(FB_PLANT_VALVE), "max", PV_NUM, 100, F(hi)},
    {K_ALL, "dead", PV_DUR, 0, F(dead_s)},
    {K_ALL, "initial", PV_NUM, NAN /* per kind, below */, F(initial)},
    {K_ALL, "input", PV_NAME, 0, F(input)},
};
#undef F
#define NPKEYS (sizeof pkeys / sizeof pkeys[0])

bool fb_plant_is_spec(const char *spec)
{
    for (int i = 0; fb_plant_names[i]; i++) {
        size_t n = strlen(fb_plant_names[i]);
        if (!strncmp(spec, fb_plant_names[i], n) && (spec[n] == ':' || spec[n] == 0)) return true;
    }
    return false;
}

static void valid_keys(unsigned kind, char *out, size_t n)
{
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i < NPKEYS; i++) {
        if (!(pkeys[i].kinds & K(kind))) continue;
        int w = snprintf(out + len, n - len, "%s%s", len ? ", " : "", pkeys[i].name);
        if (w < 0 || (size_t)w >= n - len) break;
        len += (size_t)w;
    }
}

static int set_key(struct fb_plant *p, const char *kind_name, const char *key, const char *val, struct fb_err *err)
{
    const struct pkey *d = NULL;
    for (size_t i = 0; i < NPKEYS && !d; i++)
        if ((pkeys[i].kinds & K(p->kind)) && !strcmp(pkeys[i].name, key)) d = &pkeys[i];
    if (!d) {
        char list[200];
        valid_keys(p->kind, list, sizeof list);
        return fb_err_set(err, FB_EINVAL, "%s: unknown key '%s' (valid: %s)", kind_name, key, list);
    }
    if (d->vk == PV_NAME) {
        size_t n = strlen(val);
        if (n == 0 || n >= sizeof p->input)
            return fb_err_set(err, FB_EINVAL, "%s: input= needs a tag name of 1..%zu characters", kind_name,
                              sizeof p->input - 1);
        memcpy(p->input, val, n + 1);
        return 0;
    }
    double v;
    if (d->vk == PV_DUR) {
        int64_t ns;
        if (fb_parse_duration(val, &ns) < 0 || ns < 0)
            return fb_err_set(err, FB_EINVAL, "%s: %s=%s is not a duration (e.g. 250ms, 10s)", kind_name, key, val);
        v = (double)ns / 1e9;
    } else {
        char *end;
        v = strtod(val, &end);
        if (end == val || *end || !isfinite(v))
            return fb_err_set(err, FB_EINVAL, "%s: %s=%s is not a number", kind_name, key, val);
        if (d->vk == PV_POS && v <= 0)
            return fb_err_set(err, FB_EINVAL, "%s: %s must be greater than 0", kind_name, key);
    }
    *(double *)(void *)((char *)p + d->off) = v;
    return 0;
}

int fb_plant_parse(const char *spec, struct fb_plant *p, struct fb_err *err)
{
    memset(p, 0, sizeof *p);
    const char *colon = strchr(spec, ':');
    size_t kl = colon ? (size_t)(colon - spec) : strlen(spec);
    int kind = -1;
    char kind_name[16] = "";
    for (int i = 0; fb_plant_names[i]; i++)
        if (strlen(fb_plant_names[i]) == kl && !strncmp(spec, fb_plant_names[i], kl)) {
            kind = i < FB_PLANT_VALVE ? i : FB_PLANT_VALVE; /* motor = valve */
            snprintf(kind_name, sizeof kind_name, "%s", fb_plant_names[i]);
        }
    if (kind < 0)
        return fb_err_set(err, FB_EINVAL, "unknown plant '%.*s' (fopdt, heater, tank, valve, motor)", (int)kl, spec);
    p->kind = (uint8_t)kind;
    for (size_t i = 0; i < NPKEYS; i++)
        if ((pkeys[i].kinds & K(kind)) && pkeys[i].vk != PV_NAME)
            *(double *)(void *)((char *)p + pkeys[i].off) = pkeys[i].def;
    if (!strcmp(kind_name, "motor")) p->hi = 1500; /* rpm */
    if (colon && colon[1]) {
        char buf[512];
        if (strlen(colon + 1) >= sizeof buf) return fb_err_set(err, FB_EINVAL, "%s: spec too long", kind_name);
        snprintf(buf, sizeof buf, "%s", colon + 1);
        char *save = NULL;
        for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
            char *eq = strchr(item, '=');
            if (!eq) return fb_err_set(err, FB_EINVAL, "%s: expected KEY=VALUE, got '%s'", kind_name, item);
            *eq = 0;
            int rc = set_key(p, kind_name, item, eq + 1, err);
            if (rc) return rc;
        }
    }
    switch (p->kind) {
        case FB_PLANT_FOPDT:
            if (p->tau_s <= 0) return fb_err_set(err, FB_EINVAL, "fopdt: tau must be greater than 0");
            if (isnan(p->initial)) p->initial = p->y0;
            break;
        case FB_PLANT_HEATER:
            if (isnan(p->initial)) p->initial = p->ambient;
            break;
        case FB_PLANT_TANK:
            if (p->k_out < 0) return fb_err_set(err, FB_EINVAL, "tank: k_out must not be negative");
            if (isnan(p->initial)) p->initial = 0;
            if (p->initial < 0 || p->initial > p->height)
                return fb_err_set(err, FB_EINVAL, "tank: initial must lie in [0, height]");
            break;
        case FB_PLANT_VALVE:
            if (p->travel_s <= 0) return fb_err_set(err, FB_EINVAL, "%s: travel must be greater than 0", kind_name);
            if (!(p->hi > p->lo)) return fb_err_set(err, FB_EINVAL, "%s: max must be greater than min", kind_name);
            if (isnan(p->initial)) p->initial = p->lo;
            break;
    }
    if (p->dead_s > 3600) return fb_err_set(err, FB_EINVAL, "%s: dead time longer than 1h", kind_name);
    p->y = p->initial;
    return 0;
}

/* --------------------------------------------------------------- history */
static const struct fb_plant_change *hist_at(const struct fb_plant *p, uint32_t i)
{
    return &p->hist[(p->hhead + i) % FB_PLANT_HIST];
}

void fb_plant_input(struct fb_plant *p, int64_t t, double u)
{
    if (!isfinite(u)) return;
    if (p->hn && hist_at(p, p->hn - 1)->u == u) return;
    if (p->hn && hist_at(p, p->hn - 1)->t > t) t = hist_at(p, p->hn - 1)->t; /* never backwards */
    if (p->hn == FB_PLANT_HIST) {                                            /* full: the oldest goes */
        p->hhead = (p->hhead + 1) % FB_PLANT_HIST;
        p->hn--;
    }
    p->hist[(p->hhead + p->hn) % FB_PLANT_HIST] = (struct fb_plant_change){t, u};
    p->hn++;
    p->u_last = u;
}

/* The delayed input in effect at time t (u(t − dead)), and in *next the time
 * the delayed input changes next (INT64_MAX when it stays). Drops changes no
 * later instant can need. */
static double delayed_input(struct fb_plant *p, int64_t t, int64_t *next)
{
    int64_t dead = (int64_t)llround(p->dead_s * 1e9);
    int64_t at = t - dead;
    /* the newest change at or before `at` is the one in effect; older ones are history */
    while (p->hn >= 2 && hist_at(p, 1)->t <= at) {
        p->hhead = (p->hhead + 1) % FB_PLANT_HIST;
        p->hn--;
    }
    *next = INT64_MAX;
    if (p->hn == 0) return 0;
    const struct fb_plant_change *c0 = hist_at(p, 0);
    if (c0->t > at) { /* the first change has not arrived yet: the input was 0 before it */
        *next = c0->t + dead;
        return 0;
    }
    if (p->hn >= 2) *next = hist_at(p, 1)->t + dead;
    return c0->u;
}

/* ------------------------------------------------------------ the models */
static double tank_rate(const struct fb_plant *p, double h, double u)
{
    if (h < 0) h = 0;
    return (p->q_max * u / 100.0 - p->k_out * sqrt(h)) / p->area;
}

static void step(struct fb_plant *p, double u, double dt)
{
    switch (p->kind) {
        case FB_PLANT_FOPDT: {
            double yss = p->y0 + p->k * u;
            p->y = yss + (p->y - yss) * exp(-dt / p->tau_s);
            break;
        }
        case FB_PLANT_HEATER: {
            double yss = p->ambient + p->p_max * u / 100.0 / p->ua, tau = p->c / p->ua;
            p->y = yss + (p->y - yss) * exp(-dt / tau);
            break;
        }
        case FB_PLANT_TANK: {
            double left = dt;
            while (left > 0) {
                double h = left < 0.01 ? left : 0.01;
                double y = p->y;
                double k1 = tank_rate(p, y, u), k2 = tank_rate(p, y + h / 2 * k1, u);
                double k3 = tank_rate(p, y + h / 2 * k2, u), k4 = tank_rate(p, y + h * k3, u);
                y += h / 6 * (k1 + 2 * k2 + 2 * k3 + k4);
                p->y = y < 0 ? 0 : y > p->height ? p->height : y;
                left -= h;
            }
            break;
        }
        case FB_PLANT_VALVE: {
            double target = u < p->lo ? p->lo : u > p->hi ? p->hi : u;
            double move = (p->hi - p->lo) / p->travel_s * dt;
            if (p->y < target)
                p->y = p->y + move > target ? target : p->y + move;
            else
                p->y = p->y - move < target ? target : p->y - move;
            break;
        }
    }
}

double fb_plant_advance(struct fb_plant *p, int64_t t)
{
    if (!p->t) {
        p->t = t;
        p->y = p->initial;
        return p->y;
    }
    while (p->t < t) {
        int64_t next;
        double u = delayed_input(p, p->t, &next);
        int64_t end = next < t && next > p->t ? next : t;
        step(p, u, (double)(end - p->t) / 1e9);
        p->t = end;
    }
    return p->y;
}
