/* vib_cfg.c — reading the vibration configuration (vib_cfg.h).
 *
 * Every check a maintenance engineer can get wrong is made here, with the
 * place it was written: a sample rate that is not positive, a block that is
 * odd or too large, bearing geometry that cannot exist (balls bigger than
 * the pitch circle), a band past the Nyquist frequency, an envelope band too
 * narrow for the defect frequencies it must show, a feature that needs a
 * speed or a bearing that was not given, an unknown feature name (with a
 * suggestion).  ISO 10816-3 boundaries default from the machine group and
 * mounting (the standard's Annex A values, velocity RMS in mm/s):
 *
 *     group 1 (> 300 kW)   rigid    2.3 / 4.5 / 7.1     flexible 3.5 / 7.1 / 11.0
 *     group 2 (15–300 kW)  rigid    1.4 / 2.8 / 4.5     flexible 2.3 / 4.5 / 7.1
 *
 * (A/B, B/C, C/D); `limits:` replaces them. */
#include "vib/vib_cfg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/config_tmpl.h"
#include "edge/alarm.h"
#include "edge/alarms.h"
#include "vib/dsp.h"

const char *const fb_vib_zone_names[4] = {"A", "B", "C", "D"};

static const char *const k_section[] = {"threads", "save_interval", NULL};
static const char *const k_tag[] = {"fs",     "block",   "unit",     "features",  "velocity", "bands",   "speed",
                                    "orders", "bearing", "envelope", "tolerance", "iso",      "anomaly", NULL};
static const char *const k_speed[] = {"tag", "unit", NULL};
static const char *const k_bearing[] = {"balls", "ball_diameter", "pitch_diameter", "contact_angle", NULL};
static const char *const k_envelope[] = {"band", "harmonics", NULL};
static const char *const k_iso[] = {"group", "mounting", "limits", "alarms", "deadband", NULL};
static const char *const k_anomaly[] = {"features",   "learn",     "learn_blocks", "z",      "z_clear",
                                        "min_blocks", "min_sigma", "trend",        "alarms", NULL};
static const char *const k_trend[] = {"window", "limit", NULL};

/* the names a `features:` list takes */
static const char *const feature_names[] = {"rms",      "peak",     "peak_to_peak", "crest_factor",
                                            "kurtosis", "skewness", "velocity_rms", "bands",
                                            "orders",   "envelope", "iso_zone",     NULL};
enum { F_RMS, F_PEAK, F_P2P, F_CREST, F_KURT, F_SKEW, F_VEL, F_BANDS, F_ORDERS, F_ENV, F_ISO, F__COUNT };

static const double iso_table[2][2][3] = {
    /* group 1 */ {{2.3, 4.5, 7.1}, {3.5, 7.1, 11.0}},
    /* group 2 */ {{1.4, 2.8, 4.5}, {2.3, 4.5, 7.1}},
};

/* ------------------------------------------------------------ helpers */
static struct fb_vib *vib_of(struct fb_gateway *gw);

static void vib_free(struct fb_vib *v)
{
    if (!v) return;
    for (uint32_t i = 0; i < v->nch; i++) {
        struct fb_vib_chan *c = &v->ch[i];
        free(c->unit);
        free(c->speed_name);
        for (uint32_t b = 0; b < c->nbands; b++) free(c->band_name[b]);
    }
    free(v->ch);
    free(v);
}

static struct fb_vib *vib_of(struct fb_gateway *gw)
{
    if (!gw->vib) {
        gw->vib = calloc(1, sizeof *gw->vib);
        if (!gw->vib) return NULL;
        gw->vib->threads = 1;
        gw->vib->save_ns = 60000000000LL;
        gw->vib_free = vib_free;
    }
    return gw->vib;
}

/* "5%" → 0.05; a plain number is a fraction ("0.05") */
static bool fraction(struct fb_cfg *r, const struct fb_tvars *vars, struct fb_cfg_node *n, const char *what, double lo,
                     double hi, double *out)
{
    char *s = fb_cfg_str(r, vars, n, what);
    if (!s) return false;
    size_t len = strlen(s);
    bool pct = len && s[len - 1] == '%';
    if (pct) s[len - 1] = 0;
    char *end;
    double d = strtod(s, &end);
    bool ok = end != s && !*end && isfinite(d);
    if (ok && pct) d /= 100;
    if (!ok || d < lo || d > hi) {
        fb_cfg_error(r, n, "%s: expected a percentage from %g%% to %g%% (e.g. \"5%%\"), got '%s%s'", what, lo * 100,
                     hi * 100, s, pct ? "%" : "");
        ok = false;
    }
    free(s);
    if (ok) *out = d;
    return ok;
}

/* [lo, hi] in Hz inside (0, fs/2] */
static bool band_of(struct fb_cfg *r, const struct fb_tvars *vars, struct fb_cfg_node *n, const char *what, double fs,
                    double out[2])
{
    if (fb_cfg_kind(n) != FB_CFG_LIST || fb_cfg_list_len(n) != 2) {
        fb_cfg_error(r, n, "%s must be a list of two frequencies in Hz [low, high]", what);
        return false;
    }
    double v[2];
    for (int i = 0; i < 2; i++)
        if (!fb_cfg_num(r, vars, fb_cfg_list_at(r, n, (size_t)i), what, &v[i])) return false;
    if (!(v[0] >= 0) || !(v[1] > v[0])) {
        fb_cfg_error(r, n, "%s: [%g, %g] Hz: the low edge must be >= 0 and below the high edge", what, v[0], v[1]);
        return false;
    }
    if (fs > 0 && v[1] > fs / 2) {
        fb_cfg_error(r, n, "%s: [%g, %g] Hz reaches past the Nyquist frequency (%g Hz at fs %g Hz)", what, v[0], v[1],
                     fs / 2, fs);
        return false;
    }
    out[0] = v[0];
    out[1] = v[1];
    return true;
}

/* "1480rpm", "24.7Hz", "24.7 hz", 1480 (rpm) → Hz */
static bool speed_text(const char *s, double *hz)
{
    char *end;
    double d = strtod(s, &end);
    if (end == s || !isfinite(d) || !(d > 0)) return false;
    while (*end == ' ') end++;
    if (!*end || !strcasecmp(end, "rpm") || !strcasecmp(end, "r/min") || !strcasecmp(end, "1/min"))
        *hz = d / 60.0;
    else if (!strcasecmp(end, "hz"))
        *hz = d;
    else
        return false;
    return true;
}

static bool load_map(struct fb_cfg *r, struct fb_cfg_node *n, const char *what, const char *const *keys,
                     struct fb_cfg_map *m)
{
    if (!fb_cfg_map_load(r, n, what, m)) return false;
    fb_cfg_map_check(r, m, keys, what, false);
    return true;
}

/* ------------------------------------------------------------ section */
void fb_vib_cfg_section(struct fb_cfg *r, struct fb_cfg_node *n, struct fb_gateway *gw)
{
    if (!n) return;
    struct fb_vib *v = vib_of(gw);
    struct fb_cfg_map m = {0};
    if (!v || !load_map(r, n, "vibration", k_section, &m)) {
        fb_cfg_map_free(&m);
        return;
    }
    struct fb_cfg_node *x;
    long long t;
    if ((x = fb_cfg_get(&m, "threads")) && fb_cfg_int(r, NULL, x, "vibration.threads", 1, 64, &t))
        v->threads = (uint32_t)t;
    if ((x = fb_cfg_get(&m, "save_interval"))) fb_cfg_dur(r, NULL, x, "vibration.save_interval", true, &v->save_ns);
    fb_cfg_map_free(&m);
}

/* ------------------------------------------------------------ a channel */
static void add_out(struct fb_vib_chan *c, int kind, int idx)
{
    if (c->nout < FB_VIB_MAX_OUT) c->out[c->nout++] = (struct fb_vib_out){(uint8_t)kind, (uint8_t)idx};
}

static void read_speed(struct fb_cfg *r, const struct fb_tvars *vars, struct fb_cfg_node *n, struct fb_vib_chan *c)
{
    c->speed_m = fb_cfg_mark(n);
    if (fb_cfg_kind(n) == FB_CFG_MAP) {
        struct fb_cfg_map m = {0};
        if (load_map(r, n, "vibration.speed", k_speed, &m)) {
            struct fb_cfg_node *tn = fb_cfg_get(&m, "tag"), *un = fb_cfg_get(&m, "unit");
            if (!tn)
                fb_cfg_error(r, n,
                             "vibration.speed: give a tag (speed: {tag: motor_speed, unit: rpm}) or a fixed "
                             "speed (speed: 1480rpm)");
            else
                c->speed_name = fb_cfg_str(r, vars, tn, "vibration.speed.tag");
            c->speed_k = 1.0 / 60.0;
            if (un) {
                static const char *const units[] = {"rpm", "hz", NULL};
                int u;
                if (fb_cfg_enum(r, un, "vibration.speed.unit", units, &u)) c->speed_k = u == 0 ? 1.0 / 60.0 : 1.0;
            }
            if (tn) c->speed_m = fb_cfg_mark(tn);
        }
        fb_cfg_map_free(&m);
        return;
    }
    char *s = fb_cfg_str(r, vars, n, "vibration.speed");
    if (s && !speed_text(s, &c->speed_hz))
        fb_cfg_error(r, n,
                     "vibration.speed: expected a running speed such as 1480rpm or 24.7Hz, or {tag: NAME, unit: "
                     "rpm}, got '%s'",
                     s);
    free(s);
}

static void read_bearing(struct fb_cfg *r, const struct fb_tvars *vars, struct fb_cfg_node *n, struct fb_vib_chan *c)
{
    struct fb_cfg_map m = {0};
    if (!load_map(r, n, "vibration.bearing", k_bearing, &m)) {
        fb_cfg_map_free(&m);
        return;
    }
    struct fb_cfg_node *x;
    long long balls = 0;
    bool ok = true;
    static const char *const req[] = {"balls", "ball_diameter", "pitch_diameter"};
    for (int i = 0; i < 3; i++)
        if (!fb_cfg_get(&m, req[i])) {
            fb_cfg_error(r, n,
                         "vibration.bearing: '%s' is required (balls, ball_diameter, pitch_diameter; "
                         "contact_angle defaults to 0)",
                         req[i]);
            ok = false;
        }
    struct fb_bearing b = {0};
    if ((x = fb_cfg_get(&m, "balls"))) ok &= fb_cfg_int(r, vars, x, "vibration.bearing.balls", 3, 200, &balls);
    b.balls = (int)balls;
    if ((x = fb_cfg_get(&m, "ball_diameter")))
        ok &= fb_cfg_num(r, vars, x, "vibration.bearing.ball_diameter", &b.ball_d);
    if ((x = fb_cfg_get(&m, "pitch_diameter")))
        ok &= fb_cfg_num(r, vars, x, "vibration.bearing.pitch_diameter", &b.pitch_d);
    if ((x = fb_cfg_get(&m, "contact_angle")))
        ok &= fb_cfg_num(r, vars, x, "vibration.bearing.contact_angle", &b.contact_angle);
    const char *why;
    if (ok && !fb_bearing_valid(&b, &why)) {
        const char *key = strstr(why, "pitch_diameter")  ? "pitch_diameter"
                          : strstr(why, "ball_diameter") ? "ball_diameter"
                          : strstr(why, "contact")       ? "contact_angle"
                                                         : "balls";
        x = fb_cfg_get(&m, key);
        fb_cfg_error(r, x ? x : n, "vibration.bearing: %s", why);
        ok = false;
    }
    if (ok) {
        c->bearing = b;
        c->has_bearing = true;
    }
    fb_cfg_map_free(&m);
}

static void read_iso(struct fb_cfg *r, const struct fb_tvars *vars, struct fb_cfg_node *n, struct fb_vib_chan *c,
                     bool *alarms)
{
    struct fb_cfg_map m = {0};
    c->iso = true;
    c->iso_group = 2;
    c->iso_deadband = 0.05;
    *alarms = true;
    if (fb_cfg_kind(n) != FB_CFG_MAP && fb_cfg_is_null(n)) goto defaults;
    if (!load_map(r, n, "vibration.iso", k_iso, &m)) {
        fb_cfg_map_free(&m);
        return;
    }
    struct fb_cfg_node *x;
    long long g;
    if ((x = fb_cfg_get(&m, "group")) && fb_cfg_int(r, vars, x, "vibration.iso.group", 1, 2, &g)) c->iso_group = (int)g;
    if ((x = fb_cfg_get(&m, "mounting"))) {
        static const char *const mt[] = {"rigid", "flexible", NULL};
        int k;
        if (fb_cfg_enum(r, x, "vibration.iso.mounting", mt, &k)) c->iso_flexible = k == 1;
    }
    if ((x = fb_cfg_get(&m, "alarms"))) fb_cfg_bool(r, vars, x, "vibration.iso.alarms", alarms);
    if ((x = fb_cfg_get(&m, "deadband"))) fraction(r, vars, x, "vibration.iso.deadband", 0, 0.5, &c->iso_deadband);
defaults:
    memcpy(c->iso_limits, iso_table[c->iso_group - 1][c->iso_flexible], sizeof c->iso_limits);
    if ((x = fb_cfg_get(&m, "limits"))) {
        if (fb_cfg_kind(x) != FB_CFG_LIST || fb_cfg_list_len(x) != 3) {
            fb_cfg_error(r, x,
                         "vibration.iso.limits: expected three velocities in mm/s [A/B, B/C, C/D], e.g. [1.4, "
                         "2.8, 4.5]");
        } else {
            double l[3];
            bool ok = true;
            for (int i = 0; i < 3; i++)
                ok &= fb_cfg_num(r, vars, fb_cfg_list_at(r, x, (size_t)i), "vibration.iso.limits", &l[i]);
            if (ok && !(l[0] > 0 && l[1] > l[0] && l[2] > l[1]))
                fb_cfg_error(r, x, "vibration.iso.limits: [%g, %g, %g] must be positive and rising (A/B < B/C < C/D)",
                             l[0], l[1], l[2]);
            else if (ok)
                memcpy(c->iso_limits, l, sizeof l);
        }
    }
    fb_cfg_map_free(&m);
}

static int out_of_name(const struct fb_vib_chan *c, const char *name, const char *const *onames)
{
    for (uint32_t i = 0; i < c->nout; i++)
        if (!strcmp(onames[i], name)) return (int)i;
    return -1;
}

static void read_anomaly(struct fb_cfg *r, const struct fb_tvars *vars, struct fb_cfg_node *n, struct fb_vib_chan *c,
                         int64_t poll_ns, const char *const *onames, bool *alarms)
{
    struct fb_cfg_map m = {0};
    struct fb_anom_cfg *a = &c->acfg;
    c->anomaly = true;
    *alarms = true;
    int64_t learn = 3600LL * 1000000000LL;
    a->z_on = 4;
    a->z_off = -1;
    a->min_blocks = 3;
    a->min_sigma = 0.05;
    if (!fb_cfg_is_null(n) && !load_map(r, n, "vibration.anomaly", k_anomaly, &m)) {
        fb_cfg_map_free(&m);
        return;
    }
    struct fb_cfg_node *x;
    long long k;
    if ((x = fb_cfg_get(&m, "learn"))) fb_cfg_dur(r, vars, x, "vibration.anomaly.learn", true, &learn);
    int64_t per = poll_ns > 0 ? poll_ns : 1000000000LL;
    uint64_t blocks = (uint64_t)((learn + per - 1) / per);
    if ((x = fb_cfg_get(&m, "learn_blocks"))) {
        if (fb_cfg_get(&m, "learn"))
            fb_cfg_error(r, x, "vibration.anomaly: give learn (a duration) or learn_blocks, not both");
        else if (fb_cfg_int(r, vars, x, "vibration.anomaly.learn_blocks", 2, 100000000, &k))
            blocks = (uint64_t)k;
    }
    if (blocks < 2) blocks = 2;
    if (blocks > 100000000) {
        fb_cfg_error(r, fb_cfg_get(&m, "learn"), "vibration.anomaly.learn: more than 100000000 blocks");
        blocks = 100000000;
    }
    a->learn_blocks = (uint32_t)blocks;
    if ((x = fb_cfg_get(&m, "z")) && fb_cfg_num(r, vars, x, "vibration.anomaly.z", &a->z_on) && !(a->z_on > 0))
        fb_cfg_error(r, x, "vibration.anomaly.z must be greater than 0 (standard deviations)");
    if ((x = fb_cfg_get(&m, "z_clear")) && fb_cfg_num(r, vars, x, "vibration.anomaly.z_clear", &a->z_off) &&
        !(a->z_off > 0 && a->z_off <= a->z_on))
        fb_cfg_error(r, x, "vibration.anomaly.z_clear must be greater than 0 and not above z (%g)", a->z_on);
    if (a->z_off < 0) a->z_off = a->z_on > 1 ? a->z_on - 1 : a->z_on * 0.75;
    if ((x = fb_cfg_get(&m, "min_blocks")) && fb_cfg_int(r, vars, x, "vibration.anomaly.min_blocks", 1, 1000000, &k))
        a->min_blocks = (uint32_t)k;
    if ((x = fb_cfg_get(&m, "min_sigma"))) fraction(r, vars, x, "vibration.anomaly.min_sigma", 0, 10, &a->min_sigma);
    if ((x = fb_cfg_get(&m, "alarms"))) fb_cfg_bool(r, vars, x, "vibration.anomaly.alarms", alarms);
    if ((x = fb_cfg_get(&m, "trend"))) {
        struct fb_cfg_map t = {0};
        if (load_map(r, x, "vibration.anomaly.trend", k_trend, &t)) {
            int64_t win = 24 * 3600LL * 1000000000LL;
            struct fb_cfg_node *y;
            a->trend_limit = 0.25;
            if ((y = fb_cfg_get(&t, "window"))) fb_cfg_dur(r, vars, y, "vibration.anomaly.trend.window", true, &win);
            if ((y = fb_cfg_get(&t, "limit")))
                fraction(r, vars, y, "vibration.anomaly.trend.limit", 0.001, 100, &a->trend_limit);
            uint64_t tb = (uint64_t)(win / per);
            if (tb < 8) {
                fb_cfg_error(r, fb_cfg_get(&t, "window") ? fb_cfg_get(&t, "window") : x,
                             "vibration.anomaly.trend.window: at least 8 blocks are needed for a trend (one block "
                             "every %gs)",
                             per / 1e9);
                tb = 8;
            }
            a->trend_blocks = tb > 100000000 ? 100000000 : (uint32_t)tb;
        }
        fb_cfg_map_free(&t);
    }
    /* which features: by default every number the channel publishes */
    c->nmon = 0;
    if ((x = fb_cfg_get(&m, "features"))) {
        if (fb_cfg_kind(x) != FB_CFG_LIST || !fb_cfg_list_len(x)) {
            fb_cfg_error(r, x,
                         "vibration.anomaly.features: expected a list of feature tags, e.g. [rms, "
                         "velocity_rms, envelope.bpfo]");
        } else {
            for (size_t i = 0; i < fb_cfg_list_len(x); i++) {
                struct fb_cfg_node *it = fb_cfg_list_at(r, x, i);
                char *s = fb_cfg_str(r, vars, it, "vibration.anomaly.features");
                if (!s) continue;
                int o = out_of_name(c, s, onames);
                if (o < 0 || c->out[o].kind == FB_VO_ISO) {
                    char list[512] = "";
                    size_t len = 0;
                    for (uint32_t k2 = 0; k2 < c->nout && len < sizeof list - 64; k2++)
                        if (c->out[k2].kind != FB_VO_ISO)
                            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", onames[k2]);
                    fb_cfg_error(r, it,
                                 "vibration.anomaly.features: '%s' is not a numeric feature of this tag (it has: %s)",
                                 s, list);
                } else {
                    bool dup = false;
                    for (uint32_t k2 = 0; k2 < c->nmon; k2++) dup |= c->mon[k2] == (uint8_t)o;
                    if (!dup) c->mon[c->nmon++] = (uint8_t)o;
                }
                free(s);
            }
        }
    } else {
        for (uint32_t i = 0; i < c->nout; i++)
            if (c->out[i].kind != FB_VO_ISO) c->mon[c->nmon++] = (uint8_t)i;
    }
    fb_cfg_map_free(&m);
}

uint32_t fb_vib_cfg_tag(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_map *tm,
                        struct fb_gateway *gw, uint32_t tag, int64_t poll_ns, char names[][48], const char **units,
                        uint8_t *types)
{
    struct fb_cfg_node *vn = fb_cfg_get(tm, "vibration");
    if (!vn) return 0;
    struct fb_vib *v = vib_of(gw);
    if (!v) return 0;
    if (v->nch == v->cap) {
        uint32_t nc = v->cap ? v->cap * 2 : 4;
        struct fb_vib_chan *ch = realloc(v->ch, nc * sizeof *ch);
        if (!ch) return 0;
        v->ch = ch;
        v->cap = nc;
    }
    struct fb_vib_chan *c = &v->ch[v->nch];
    memset(c, 0, sizeof *c);
    c->tag = tag;
    c->speed_tag = UINT32_MAX;
    c->alarm_c = c->alarm_d = c->alarm_z = c->alarm_trend = UINT32_MAX;
    c->m = fb_cfg_mark(vn);
    struct fb_cfg_map m = {0};
    int before = fb_cfg_errors(r);
    if (!load_map(r, vn, "vibration", k_tag, &m)) {
        fb_cfg_map_free(&m);
        return 0;
    }
    struct fb_cfg_node *x;
    /* sample rate and block */
    if (!(x = fb_cfg_get(&m, "fs"))) {
        fb_cfg_error(r, vn, "vibration: 'fs' (the sample rate in Hz) is required, e.g. fs: 25600");
    } else if (fb_cfg_num(r, vars, x, "vibration.fs", &c->fs) && !(c->fs > 0 && c->fs <= 10e6)) {
        fb_cfg_error(r, x, "vibration.fs must be a positive sample rate in Hz (at most 10 MHz), got %g", c->fs);
        c->fs = 0;
    }
    long long n = 0;
    if ((x = fb_cfg_get(&m, "block"))) {
        if (fb_cfg_int(r, vars, x, "vibration.block", 1, 1LL << 40, &n)) {
            if (n < 64 || n > FB_VIB_MAX_BLOCK || n % 2)
                fb_cfg_error(r, x,
                             "vibration.block: %lld samples: a block must be an even number of samples from 64 to %u",
                             n, FB_VIB_MAX_BLOCK);
            else
                c->n = (uint32_t)n;
        }
    } else if (c->fs > 0) {
        double one = round(c->fs);
        if (one == c->fs && one >= 64 && one <= FB_VIB_MAX_BLOCK && fmod(one, 2) == 0)
            c->n = (uint32_t)one; /* one second */
        else
            fb_cfg_error(r, vn,
                         "vibration: give block: (samples per block, even, 64..%u); one second at fs %g Hz is "
                         "not one",
                         FB_VIB_MAX_BLOCK, c->fs);
    }
    if (c->n && c->fs > 0 && c->n / c->fs > 3600)
        fb_cfg_error(r, fb_cfg_get(&m, "block") ? fb_cfg_get(&m, "block") : vn,
                     "vibration.block: %u samples at %g Hz last %.0f s: a block may last at most an hour", c->n, c->fs,
                     c->n / c->fs);
    /* the signal's unit */
    c->to_ms2 = 1;
    c->unit = strdup("m/s2");
    if ((x = fb_cfg_get(&m, "unit"))) {
        static const char *const un[] = {"m/s2", "g", "mm/s2", NULL};
        static const double k[] = {1.0, 9.80665, 0.001};
        int u;
        if (fb_cfg_enum(r, x, "vibration.unit", un, &u)) {
            c->to_ms2 = k[u];
            free(c->unit);
            c->unit = strdup(un[u]);
        }
    }
    double nyq = c->fs > 0 ? c->fs / 2 : 0;
    /* which features */
    bool want[F__COUNT] = {0}, given = false;
    struct fb_cfg_node *fn = fb_cfg_get(&m, "features");
    if (fn) {
        given = true;
        if (fb_cfg_kind(fn) != FB_CFG_LIST || !fb_cfg_list_len(fn))
            fb_cfg_error(r, fn, "vibration.features: expected a list, e.g. [rms, velocity_rms, kurtosis, envelope]");
        for (size_t i = 0; fb_cfg_kind(fn) == FB_CFG_LIST && i < fb_cfg_list_len(fn); i++) {
            struct fb_cfg_node *it = fb_cfg_list_at(r, fn, i);
            char *s = fb_cfg_str(r, vars, it, "vibration.features");
            if (!s) continue;
            int f = -1;
            for (int k = 0; feature_names[k]; k++)
                if (!strcmp(s, feature_names[k])) f = k;
            if (f >= 0) {
                want[f] = true;
            } else {
                const char *near = fb_cfg_suggest(s, feature_names);
                fb_cfg_error(r, it,
                             "vibration.features: unknown feature '%s'%s%s%s (rms, peak, peak_to_peak, crest_factor, "
                             "kurtosis, skewness, velocity_rms, bands, orders, envelope, iso_zone)",
                             s, near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
            }
            free(s);
        }
    }
    /* velocity band */
    c->vel_lo = 10;
    c->vel_hi = 1000;
    if ((x = fb_cfg_get(&m, "velocity"))) {
        double b[2];
        if (band_of(r, vars, x, "vibration.velocity", c->fs, b)) {
            if (!(b[0] > 0))
                fb_cfg_error(r, x, "vibration.velocity: the high-pass edge must be above 0 Hz (10 Hz per ISO 10816)");
            c->vel_lo = b[0];
            c->vel_hi = b[1];
        }
    } else if (nyq > 0 && c->vel_hi > nyq) {
        c->vel_hi = nyq;
    }
    /* bands */
    if ((x = fb_cfg_get(&m, "bands"))) {
        struct fb_cfg_map bm = {0};
        if (fb_cfg_map_load(r, x, "vibration.bands", &bm)) {
            if (bm.n > FB_VIB_MAX_BANDS) fb_cfg_error(r, x, "vibration.bands: at most %d bands", FB_VIB_MAX_BANDS);
            for (int i = 0; i < bm.n && c->nbands < FB_VIB_MAX_BANDS; i++) {
                if (!fb_cfg_name_ok(bm.kv[i].key) || strlen(bm.kv[i].key) > 24) {
                    fb_cfg_error(r, bm.kv[i].k,
                                 "vibration.bands: band name '%s' may only contain letters, digits, "
                                 "'_', '.' and '-' (at most 24)",
                                 bm.kv[i].key);
                    continue;
                }
                double b[2];
                char what[80];
                snprintf(what, sizeof what, "vibration.bands.%s", bm.kv[i].key);
                if (!band_of(r, vars, bm.kv[i].v, what, c->fs, b)) continue;
                c->band_name[c->nbands] = strdup(bm.kv[i].key);
                c->band[c->nbands][0] = b[0];
                c->band[c->nbands][1] = b[1];
                c->nbands++;
            }
        }
        fb_cfg_map_free(&bm);
    }
    /* speed and orders */
    if ((x = fb_cfg_get(&m, "speed"))) read_speed(r, vars, x, c);
    bool has_speed = c->speed_hz > 0 || c->speed_name;
    c->norders = 3;
    c->order[0] = 1;
    c->order[1] = 2;
    c->order[2] = 3;
    if ((x = fb_cfg_get(&m, "orders"))) {
        if (fb_cfg_kind(x) != FB_CFG_LIST || !fb_cfg_list_len(x) || fb_cfg_list_len(x) > FB_VIB_MAX_ORDERS) {
            fb_cfg_error(r, x,
                         "vibration.orders: expected a list of 1 to %d multiples of the running speed, e.g. [1, 2, 3]",
                         FB_VIB_MAX_ORDERS);
        } else {
            c->norders = 0;
            for (size_t i = 0; i < fb_cfg_list_len(x); i++) {
                double o;
                struct fb_cfg_node *it = fb_cfg_list_at(r, x, i);
                if (!fb_cfg_num(r, vars, it, "vibration.orders", &o)) continue;
                if (!(o > 0 && o <= 1000))
                    fb_cfg_error(r, it,
                                 "vibration.orders: %g is not a multiple of the running speed (0 < order <= 1000)", o);
                else
                    c->order[c->norders++] = o;
            }
        }
        if (!has_speed) fb_cfg_error(r, x, "vibration.orders need the running speed: add speed: (e.g. 1480rpm)");
    }
    c->tol = 0.02;
    if ((x = fb_cfg_get(&m, "tolerance"))) fraction(r, vars, x, "vibration.tolerance", 0, 0.2, &c->tol);
    /* bearing and envelope */
    if ((x = fb_cfg_get(&m, "bearing"))) read_bearing(r, vars, x, c);
    c->env_harm = 1;
    bool env_band = false;
    if ((x = fb_cfg_get(&m, "envelope"))) {
        struct fb_cfg_map em = {0};
        if (load_map(r, x, "vibration.envelope", k_envelope, &em)) {
            struct fb_cfg_node *y;
            double b[2];
            if ((y = fb_cfg_get(&em, "band")) && band_of(r, vars, y, "vibration.envelope.band", c->fs, b)) {
                c->env_lo = b[0];
                c->env_hi = b[1];
                env_band = true;
            } else if (!y) {
                fb_cfg_error(r, x,
                             "vibration.envelope: 'band' is required: the band around the structure's resonance "
                             "to demodulate, e.g. band: [2000, 8000]");
            }
            long long h;
            if ((y = fb_cfg_get(&em, "harmonics")) && fb_cfg_int(r, vars, y, "vibration.envelope.harmonics", 1, 10, &h))
                c->env_harm = (uint32_t)h;
        }
        fb_cfg_map_free(&em);
    }
    bool iso_alarms = false;
    struct fb_cfg_node *isonode = fb_cfg_get(&m, "iso");
    if (isonode || fb_cfg_key(&m, "iso")) read_iso(r, vars, isonode, c, &iso_alarms);
    /* defaults: what the configuration makes possible */
    if (!given) {
        for (int f = F_RMS; f <= F_VEL; f++) want[f] = true;
        want[F_BANDS] = c->nbands > 0;
        want[F_ORDERS] = has_speed;
        want[F_ENV] = c->has_bearing && env_band && has_speed;
        want[F_ISO] = c->iso;
    }
    /* what each feature needs */
    struct fb_cfg_node *at = fn ? fn : vn;
    if (want[F_BANDS] && !c->nbands && !fb_cfg_get(&m, "bands"))
        fb_cfg_error(r, at, "vibration.features: bands needs bands: {NAME: [low, high], …}");
    if (want[F_ORDERS] && !has_speed && !fb_cfg_get(&m, "speed"))
        fb_cfg_error(r, at,
                     "vibration.features: orders need the running speed: add speed: (e.g. 1480rpm or {tag: "
                     "NAME, unit: rpm})");
    if (want[F_ENV]) {
        if (!fb_cfg_get(&m, "bearing"))
            fb_cfg_error(r, at,
                         "vibration.features: envelope needs the bearing's geometry: bearing: {balls: 9, "
                         "ball_diameter: 7.94, pitch_diameter: 39.04}");
        if (!has_speed && !fb_cfg_get(&m, "speed"))
            fb_cfg_error(r, at,
                         "vibration.features: envelope needs the running speed to place the defect "
                         "frequencies: add speed:");
        if (!fb_cfg_get(&m, "envelope"))
            fb_cfg_error(r, at,
                         "vibration.features: envelope needs envelope: {band: [low, high]} (the band around "
                         "the resonance the impacts ring)");
    }
    if (want[F_ISO] && !c->iso) {
        read_iso(r, vars, NULL, c, &iso_alarms); /* group 2, rigid */
    }
    if (c->iso && !want[F_ISO] && given && isonode)
        fb_cfg_note(r, isonode, "vibration.iso has no effect: iso_zone is not in features:");
    if (want[F_ENV] && env_band && c->has_bearing && c->fs > 0 && c->n) {
        /* the envelope spectrum must reach the highest defect line the search looks at */
        double o[FB_BEARING__COUNT];
        fb_bearing_orders(&c->bearing, o);
        double top = 0;
        for (int k = 0; k < FB_BEARING__COUNT; k++) top = fmax(top, k == FB_BSF ? 2 * o[k] : o[k]); /* 2×BSF */
        double fr_max = c->speed_hz > 0 ? c->speed_hz : 3600.0 / 60.0; /* a speed tag: up to 3600 rpm */
        double need = top * fr_max * c->env_harm * (1 + c->tol) + 2 * c->fs / c->n;
        if (c->env_hi - c->env_lo < need)
            fb_cfg_error(r, fb_cfg_get(&m, "envelope"),
                         "vibration.envelope.band [%g, %g] Hz is %g Hz wide: the envelope spectrum must reach %.0f Hz "
                         "(the highest defect frequency%s at %s%.0f rpm); widen the band",
                         c->env_lo, c->env_hi, c->env_hi - c->env_lo, need, c->env_harm > 1 ? " × harmonics" : "",
                         c->speed_hz > 0 ? "" : "up to ", fr_max * 60);
        c->env_m = fb_dsp_env_size(c->n, c->fs, c->env_lo, c->env_hi);
    }
    /* the feature tags */
    static const char *const one[] = {"rms", "peak", "peak_to_peak", "crest_factor", "kurtosis", "skewness"};
    uint32_t k = 0;
    for (int f = F_RMS; f <= F_SKEW; f++)
        if (want[f]) add_out(c, FB_VO_RMS + f, 0);
    if (want[F_VEL]) add_out(c, FB_VO_VEL, 0);
    for (uint32_t i = 0; want[F_BANDS] && i < c->nbands; i++) add_out(c, FB_VO_BAND, (int)i);
    for (uint32_t i = 0; want[F_ORDERS] && i < c->norders; i++) add_out(c, FB_VO_ORDER, (int)i);
    for (int i = 0; want[F_ENV] && i < FB_BEARING__COUNT; i++) add_out(c, FB_VO_ENV, i);
    if (want[F_ISO]) add_out(c, FB_VO_ISO, 0);
    if (!want[F_ENV]) c->env_m = 0;
    const char *onames[FB_VIB_MAX_OUT];
    for (k = 0; k < c->nout; k++) {
        const struct fb_vib_out *o = &c->out[k];
        const char *u = c->unit;
        types[k] = FB_T_FLOAT64;
        switch (o->kind) {
            case FB_VO_BAND: snprintf(names[k], 48, "band.%s", c->band_name[o->idx]); break;
            case FB_VO_ORDER: snprintf(names[k], 48, "order.%gx", c->order[o->idx]); break;
            case FB_VO_ENV: snprintf(names[k], 48, "envelope.%s", fb_bearing_names[o->idx]); break;
            case FB_VO_VEL:
                snprintf(names[k], 48, "velocity_rms");
                u = "mm/s";
                break;
            case FB_VO_ISO:
                snprintf(names[k], 48, "iso_zone");
                u = NULL;
                types[k] = FB_T_STRING;
                break;
            default:
                snprintf(names[k], 48, "%s", one[o->kind]);
                if (o->kind >= FB_VO_CREST) u = NULL;
                break;
        }
        units[k] = u;
        onames[k] = names[k];
    }
    bool anom_alarms = false;
    struct fb_cfg_node *an = fb_cfg_get(&m, "anomaly");
    if (an || fb_cfg_key(&m, "anomaly")) {
        read_anomaly(r, vars, an, c, poll_ns, onames, &anom_alarms);
        if (c->anomaly && !c->nmon) fb_cfg_error(r, an ? an : vn, "vibration.anomaly: no feature to watch");
        add_out(c, FB_VO_ANOM, 0);
        snprintf(names[c->nout - 1], 48, "anomaly");
        units[c->nout - 1] = NULL;
        types[c->nout - 1] = FB_T_FLOAT64;
        if (c->acfg.trend_blocks) {
            add_out(c, FB_VO_TREND, 0);
            snprintf(names[c->nout - 1], 48, "trend");
            units[c->nout - 1] = "%";
            types[c->nout - 1] = FB_T_FLOAT64;
        }
    }
    /* alarms are declared at finish (the device's name is final then); remember which */
    c->iso_alarms = c->iso && want[F_ISO] && iso_alarms;
    c->anom_alarms = c->anomaly && anom_alarms;
    fb_cfg_map_free(&m);
    if (fb_cfg_errors(r) > before || !c->n || !(c->fs > 0)) {
        free(c->unit);
        free(c->speed_name);
        for (uint32_t b = 0; b < c->nbands; b++) free(c->band_name[b]);
        return 0;
    }
    struct fb_wave *w = calloc(1, sizeof *w);
    if (!w) return 0;
    w->n = c->n;
    w->fs = c->fs;
    w->chan = v->nch;
    w->nfeat = c->nout;
    /* learn_of is set when the analysis starts, once a saved baseline is read
     * (until then the status shows no baseline state rather than "learning") */
    struct fb_tag *wt = &gw->tags[tag];
    if (fb_tag_is_wave(wt) && wt->wave_ix <= gw->nwaves) { /* configured again: replace */
        free(gw->waves[wt->wave_ix - 1]);
        gw->waves[wt->wave_ix - 1] = w;
    } else {
        struct fb_wave **nw = realloc(gw->waves, (gw->nwaves + 1) * sizeof *nw);
        if (!nw) {
            free(w);
            return 0;
        }
        gw->waves = nw;
        gw->waves[gw->nwaves++] = w;
        wt->wave_ix = gw->nwaves;
    }
    v->nch++;
    return c->nout;
}

/* ------------------------------------------------------------ finish */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

static uint32_t declare(struct fb_gateway *gw, uint32_t dev, const char *tag, const char *what, int prio, int ne107,
                        const char *msg)
{
    char name[200];
    snprintf(name, sizeof name, "%s/%s", tag, what);
    uint32_t id = fb_alarm_add(gw, dev, UINT32_MAX, FB_AK_EXTERNAL, name);
    if (id == UINT32_MAX) return id;
    struct fb_alarm *a = &gw->alarms[id];
    a->priority = (uint8_t)prio;
    a->severity = fb_alarm_prio_severity(prio);
    a->ne107 = (uint8_t)ne107;
    a->message = strdup(msg);
    return id;
}

void fb_vib_cfg_finish(struct fb_cfg *r, struct fb_gateway *gw)
{
    struct fb_vib *v = gw->vib;
    if (!v) return;
    for (uint32_t i = 0; i < v->nch; i++) {
        struct fb_vib_chan *c = &v->ch[i];
        struct fb_tag *t = &gw->tags[c->tag];
        const struct fb_device *d = &gw->devs[t->device];
        if (c->speed_name) {
            /* "tag" of the same device, or "device/tag" */
            const char *slash = strchr(c->speed_name, '/');
            const struct fb_device *sd = d;
            const char *tn = c->speed_name;
            if (slash) {
                char dn[256];
                snprintf(dn, sizeof dn, "%.*s", (int)(slash - c->speed_name), c->speed_name);
                sd = fb_gw_device(gw, dn);
                tn = slash + 1;
            }
            const struct fb_tag *st = sd ? fb_gw_tag(gw, sd, tn) : NULL;
            if (!st)
                fb_cfg_error_at(r, c->speed_m, "vibration.speed.tag: no tag '%s'%s", c->speed_name,
                                slash ? "" : " in this device (another device's: DEVICE/TAG)");
            else if (st->src != FB_TAG_READ || fb_tag_is_wave(st) || st->type == FB_T_STRING)
                fb_cfg_error_at(r, c->speed_m,
                                "vibration.speed.tag: '%s' must be a numeric tag read from a device (not computed, "
                                "not a waveform)",
                                c->speed_name);
            else
                c->speed_tag = st->id;
        }
        if (c->iso_alarms) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "ISO 10816-3 zone C: vibration velocity unsatisfactory for long-term operation (>= %g mm/s)",
                     c->iso_limits[1]);
            c->alarm_c = declare(gw, t->device, t->name, "iso_zone_c", FB_AP_MEDIUM, FB_NE107_MAINTENANCE, msg);
            snprintf(msg, sizeof msg,
                     "ISO 10816-3 zone D: vibration velocity severe enough to cause damage (>= %g mm/s)",
                     c->iso_limits[2]);
            c->alarm_d = declare(gw, t->device, t->name, "iso_zone_d", FB_AP_HIGH, FB_NE107_OUT_OF_SPEC, msg);
        }
        if (c->anom_alarms)
            c->alarm_z = declare(gw, t->device, t->name, "anomaly", FB_AP_LOW, FB_NE107_MAINTENANCE,
                                 "vibration differs from the learned baseline");
        if (c->anom_alarms && c->acfg.trend_blocks)
            c->alarm_trend = declare(gw, t->device, t->name, "trend", FB_AP_LOW, FB_NE107_MAINTENANCE,
                                     "vibration rising compared with the learned baseline");
        /* the baseline is only valid for the same analysis of the same signal */
        uint64_t h = 0xCBF29CE484222325ull;
        h = fnv(h, &c->n, sizeof c->n);
        h = fnv(h, &c->fs, sizeof c->fs);
        h = fnv(h, &c->to_ms2, sizeof c->to_ms2);
        h = fnv(h, &fb_tproc(t)->k, sizeof fb_tproc(t)->k);
        h = fnv(h, &fb_tproc(t)->d, sizeof fb_tproc(t)->d);
        h = fnv(h, &c->vel_lo, sizeof c->vel_lo);
        h = fnv(h, &c->vel_hi, sizeof c->vel_hi);
        h = fnv(h, c->band, sizeof c->band);
        h = fnv(h, c->order, sizeof c->order);
        h = fnv(h, &c->tol, sizeof c->tol);
        h = fnv(h, &c->speed_hz, sizeof c->speed_hz);
        if (c->speed_name) h = fnv(h, c->speed_name, strlen(c->speed_name));
        h = fnv(h, &c->bearing.balls, sizeof c->bearing.balls);
        h = fnv(h, &c->bearing.ball_d, sizeof c->bearing.ball_d);
        h = fnv(h, &c->bearing.pitch_d, sizeof c->bearing.pitch_d);
        h = fnv(h, &c->bearing.contact_angle, sizeof c->bearing.contact_angle);
        h = fnv(h, &c->env_lo, sizeof c->env_lo);
        h = fnv(h, &c->env_hi, sizeof c->env_hi);
        h = fnv(h, &c->env_harm, sizeof c->env_harm);
        h = fnv(h, &c->acfg.learn_blocks, sizeof c->acfg.learn_blocks);
        for (uint32_t k = 0; k < c->nmon; k++) h = fnv(h, &c->out[c->mon[k]], sizeof c->out[0]);
        c->fingerprint = h;
    }
    /* the baselines live in the buffer directory, as the alarm journal */
    bool anomaly = false, dir = gw->buffer && gw->buffer->path;
    for (uint32_t i = 0; i < v->nch; i++) anomaly |= v->ch[i].anomaly;
    for (uint32_t i = 0; anomaly && !dir && i < gw->nsinks; i++) dir = gw->sinks[i].buffer && gw->sinks[i].buffer->path;
    if (anomaly && !dir)
        fb_cfg_note(r, NULL,
                    "vibration: anomaly baselines but no buffer: directory: they are kept in memory only and learnt "
                    "again after a restart");
}

/* ------------------------------------------------------------ tables */
size_t fb_vib_key_tables(struct fb_config_keys *out, size_t max)
{
    /* one heading in docs/configuration.md: ## `vibration` */
    const struct fb_config_keys t[] = {{"vibration", k_section}, {"vibration", k_tag},      {"vibration", k_speed},
                                       {"vibration", k_bearing}, {"vibration", k_envelope}, {"vibration", k_iso},
                                       {"vibration", k_anomaly}, {"vibration", k_trend}};
    size_t n = 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0] && n < max; i++) out[n++] = t[i];
    return n;
}

void fb_vib_describe(const struct fb_gateway *gw, FILE *f)
{
    const struct fb_vib *v = gw->vib;
    if (!v || !v->nch) return;
    fprintf(f, "  vibration: %u channel%s on %u analysis thread%s\n", v->nch, v->nch == 1 ? "" : "s", v->threads,
            v->threads == 1 ? "" : "s");
    for (uint32_t i = 0; i < v->nch; i++) {
        const struct fb_vib_chan *c = &v->ch[i];
        const struct fb_tag *t = &gw->tags[c->tag];
        fprintf(f, "    %s  %u samples at %g Hz (%.3g s)  %u feature tags", fb_tag_path(gw, t), c->n, c->fs,
                c->n / c->fs, c->nout);
        if (c->speed_hz > 0) fprintf(f, "  speed %.0f rpm", c->speed_hz * 60);
        if (c->speed_tag != UINT32_MAX) fprintf(f, "  speed from %s", fb_tag_path(gw, &gw->tags[c->speed_tag]));
        if (c->iso)
            fprintf(f, "  ISO 10816-3 group %d %s [%g, %g, %g] mm/s", c->iso_group,
                    c->iso_flexible ? "flexible" : "rigid", c->iso_limits[0], c->iso_limits[1], c->iso_limits[2]);
        if (c->anomaly)
            fprintf(f, "  anomaly: %u features, baseline of %u blocks, z %g/%g", c->nmon, c->acfg.learn_blocks,
                    c->acfg.z_on, c->acfg.z_off);
        fputc('\n', f);
    }
}
