/* sim_gen.c — signal generators and fault injection for the sim driver.
 *
 * Spec grammar (the tag's address):
 *
 *     GEN[:ITEM{,ITEM}]      ITEM = KEY=VALUE | VALUE (const only)
 *     VALUE = number | duration (period, stuck_for) | "quoted string"
 *
 * Keys are declared in one table (generator mask, name, kind of value,
 * default, field offset), so validation, defaults and the "valid keys" list
 * in error messages all come from the same place.
 *
 * Time: sine/square/ramp use the phase inside the period computed in integer
 * nanoseconds (t mod period), so the value at t is exact and reproducible.
 * Randomness: xorshift64* seeded through splitmix64 — fast, no global state,
 * and a fixed (seed, tag index) always gives the same sequence.
 */
#include "south/sim/sim_gen.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

const char *const fb_sim_gen_names[] = {"sine",  "square",  "ramp",   "walk",  "noise",
                                        "const", "counter", "memory", "motor", NULL};

enum val_kind { V_NUM, V_DUR, V_DUR0 /* a duration, 0 allowed */, V_PROB, V_ANY /* number or quoted string */ };

#define K(k) (1u << (k))
#define K_ALL 0xFFu /* every generator but motor (faults are per value, a motor makes blocks) */
#define K_PERIODIC (K(FB_SIM_SINE) | K(FB_SIM_SQUARE) | K(FB_SIM_RAMP))

struct key_def {
    unsigned kinds; /* generators that accept the key */
    const char *name;
    enum val_kind vk;
    double def; /* default (seconds for durations) */
    size_t off; /* offsetof in struct fb_sim_gen (double, or int64_t for V_DUR) */
};

#define F(f) offsetof(struct fb_sim_gen, f)
static const struct key_def keys[] = {
    {K(FB_SIM_SINE), "amp", V_NUM, 1, F(amp)},
    {K_PERIODIC, "period", V_DUR, 0 /* per kind, below */, F(period_ns)},
    {K(FB_SIM_SINE), "offset", V_NUM, 0, F(offset)},
    {K(FB_SIM_SINE), "phase", V_NUM, 0, F(phase_rad)},
    {K(FB_SIM_SQUARE), "low", V_NUM, 0, F(low)},
    {K(FB_SIM_SQUARE), "high", V_NUM, 1, F(high)},
    {K(FB_SIM_SQUARE), "duty", V_PROB, 0.5, F(duty)},
    {K(FB_SIM_RAMP) | K(FB_SIM_WALK), "min", V_NUM, 0, F(min)},
    {K(FB_SIM_RAMP) | K(FB_SIM_WALK), "max", V_NUM, 100, F(max)},
    {K(FB_SIM_WALK), "start", V_NUM, 50, F(start)},
    {K(FB_SIM_COUNTER), "start", V_NUM, 0, F(start)},
    {K(FB_SIM_WALK), "step", V_NUM, 0.5, F(step)},
    {K(FB_SIM_COUNTER), "step", V_NUM, 1, F(step)},
    {K(FB_SIM_NOISE), "mean", V_NUM, 0, F(mean)},
    {K(FB_SIM_NOISE), "stddev", V_NUM, 1, F(stddev)},
    {K(FB_SIM_CONST), "value", V_ANY, 0, F(cur)},
    {K(FB_SIM_MEMORY), "initial", V_ANY, 0, F(cur)},
    {K_ALL, "spike", V_PROB, 0, F(spike_p)},
    {K_ALL, "spike_amp", V_NUM, NAN /* derived */, F(spike_amp)},
    {K_ALL, "stuck", V_PROB, 0, F(stuck_p)},
    {K_ALL, "stuck_for", V_DUR, 30, F(stuck_ns)},
    {K_ALL, "dropout", V_PROB, 0, F(dropout_p)},
    {K_ALL, "oor", V_PROB, 0, F(oor_p)},
    {K_ALL, "oor_value", V_NUM, 1e6, F(oor_value)},
    /* motor (sim_motor.h): the defaults are fb_motor_defaults' */
    {K(FB_SIM_MOTOR), "rpm", V_NUM, 1480, F(motor.rpm)},
    {K(FB_SIM_MOTOR), "unbalance", V_NUM, 0.25, F(motor.unbalance)},
    {K(FB_SIM_MOTOR), "misalign", V_NUM, 0.15, F(motor.misalign)},
    {K(FB_SIM_MOTOR), "noise", V_NUM, 0.3, F(motor.noise)},
    {K(FB_SIM_MOTOR), "resonance", V_NUM, 3500, F(motor.resonance)},
    {K(FB_SIM_MOTOR), "damping", V_NUM, 0.05, F(motor.damping)},
    {K(FB_SIM_MOTOR), "balls", V_NUM, 9, F(motor.balls)},
    {K(FB_SIM_MOTOR), "ball_d", V_NUM, 7.94, F(motor.ball_d)},
    {K(FB_SIM_MOTOR), "pitch_d", V_NUM, 39.04, F(motor.pitch_d)},
    {K(FB_SIM_MOTOR), "angle", V_NUM, 0, F(motor.angle)},
    {K(FB_SIM_MOTOR), "outer", V_NUM, 0, F(motor.outer)},
    {K(FB_SIM_MOTOR), "inner", V_NUM, 0, F(motor.inner)},
    {K(FB_SIM_MOTOR), "ball", V_NUM, 0, F(motor.ball)},
    {K(FB_SIM_MOTOR), "cage", V_NUM, 0, F(motor.cage)},
    {K(FB_SIM_MOTOR), "onset", V_DUR0, 0, F(motor.onset_ns)},
    {K(FB_SIM_MOTOR), "growth", V_DUR0, 3600, F(motor.growth_ns)},
    {K(FB_SIM_MOTOR), "accel", V_NUM, 1, F(motor.accel)},
    {K(FB_SIM_MOTOR), "slip", V_NUM, 0.01, F(motor.slip)},
};
#undef F
#define NKEYS (sizeof keys / sizeof keys[0])

static const double period_default_s[FB_SIM__COUNT] = {[FB_SIM_SINE] = 60, [FB_SIM_SQUARE] = 10, [FB_SIM_RAMP] = 10};

/* ------------------------------------------------------------------ PRNG */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t xorshift64s(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* uniform in [0, 1) */
static double rnd01(struct fb_sim_gen *g) { return (double)(xorshift64s(&g->rng) >> 11) * 0x1.0p-53; }

static double rnd_gauss(struct fb_sim_gen *g)
{
    double u1 = rnd01(g), u2 = rnd01(g);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void fb_sim_gen_seed(struct fb_sim_gen *g, uint64_t seed, uint64_t index)
{
    uint64_t x = seed ^ (index * 0xD1342543DE82EF95ull);
    g->rng = splitmix64(&x);
    if (g->rng == 0) g->rng = 0x9E3779B97F4A7C15ull; /* xorshift must not be 0 */
    if (g->kind == FB_SIM_WALK || g->kind == FB_SIM_COUNTER) g->cur = g->start;
    if (g->kind == FB_SIM_MOTOR) fb_motor_seed(&g->motor, g->rng);
    g->stuck = false;
}

/* --------------------------------------------------------------- parsing */
static void list_valid_keys(enum fb_sim_kind k, char *out, size_t n)
{
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        if (!(keys[i].kinds & K(k))) continue;
        int w = snprintf(out + len, n - len, "%s%s", len ? ", " : "", keys[i].name);
        if (w < 0 || (size_t)w >= n - len) break;
        len += (size_t)w;
    }
}

static void list_gens(char *out, size_t n)
{
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; fb_sim_gen_names[i]; i++) {
        int w = snprintf(out + len, n - len, "%s%s", len ? ", " : "", fb_sim_gen_names[i]);
        if (w < 0 || (size_t)w >= n - len) break;
        len += (size_t)w;
    }
}

static int set_string(struct fb_sim_gen *g, const char *s, size_t len)
{
    uint32_t cap = len > 256 ? (uint32_t)len : 256;
    char *p = malloc(cap);
    if (!p) return FB_ENOMEM;
    memcpy(p, s, len);
    free(g->str);
    g->str = p;
    g->str_cap = cap;
    g->str_len = (uint32_t)len;
    g->is_string = true;
    return 0;
}

static bool parse_num(const char *s, double *out)
{
    if (!*s) return false;
    if (!strcmp(s, "true")) return (*out = 1), true;
    if (!strcmp(s, "false")) return (*out = 0), true;
    char *end;
    double d = strtod(s, &end);
    if (*end || !isfinite(d)) return false;
    *out = d;
    return true;
}

/* Reads a double-quoted string at *pp (which points at the opening quote)
 * into buf; \" and \\ are the only escapes. */
static int parse_quoted(const char **pp, char *buf, size_t cap, size_t *len)
{
    const char *p = *pp + 1;
    size_t n = 0;
    while (*p && *p != '"') {
        if (*p == '\\' && (p[1] == '"' || p[1] == '\\')) p++;
        if (n + 1 >= cap) return FB_ERANGE;
        buf[n++] = *p++;
    }
    if (*p != '"') return FB_EINVAL;
    buf[n] = 0;
    *len = n;
    *pp = p + 1;
    return 0;
}

static int apply_key(struct fb_sim_gen *g, const struct key_def *kd, const char *val, bool quoted, size_t qlen,
                     const char *spec, struct fb_err *err)
{
    char *base = (char *)g;
    if (quoted) {
        if (kd->vk != V_ANY)
            return fb_err_set(err, FB_EINVAL, "sim address '%s': %s takes a number, not a string", spec, kd->name);
        int rc = set_string(g, val, qlen);
        if (rc) return fb_err_set(err, rc, "sim address '%s': out of memory", spec);
        return 0;
    }
    if (kd->vk == V_DUR || kd->vk == V_DUR0) {
        int64_t ns;
        if (fb_parse_duration(val, &ns) || ns < 0 || (ns == 0 && kd->vk == V_DUR))
            return fb_err_set(err, FB_EINVAL, "sim address '%s': %s=%s is not a %s duration (e.g. 10s, 250ms, 2h)",
                              spec, kd->name, val, kd->vk == V_DUR ? "positive" : "non-negative");
        memcpy(base + kd->off, &ns, sizeof ns);
        return 0;
    }
    double d;
    if (!parse_num(val, &d)) {
        if (kd->vk == V_ANY)
            return fb_err_set(err, FB_EINVAL, "sim address '%s': %s=%s is not a number (quote strings: \"text\")", spec,
                              kd->name, val);
        return fb_err_set(err, FB_EINVAL, "sim address '%s': %s=%s is not a number", spec, kd->name, val);
    }
    if (kd->vk == V_PROB && (d < 0 || d > 1))
        return fb_err_set(err, FB_EINVAL, "sim address '%s': %s=%s must be between 0 and 1", spec, kd->name, val);
    memcpy(base + kd->off, &d, sizeof d);
    return 0;
}

static const struct key_def *find_key(enum fb_sim_kind k, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if ((keys[i].kinds & K(k)) && !strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

static void set_defaults(struct fb_sim_gen *g)
{
    char *base = (char *)g;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key_def *kd = &keys[i];
        if (!(kd->kinds & K(g->kind))) continue;
        if (kd->vk == V_DUR || kd->vk == V_DUR0) {
            double s = kd->off == offsetof(struct fb_sim_gen, period_ns) ? period_default_s[g->kind] : kd->def;
            int64_t ns = (int64_t)(s * 1e9);
            memcpy(base + kd->off, &ns, sizeof ns);
        } else {
            memcpy(base + kd->off, &kd->def, sizeof kd->def);
        }
    }
}

static int validate(struct fb_sim_gen *g, const char *spec, struct fb_err *err)
{
    switch (g->kind) {
        case FB_SIM_SINE:
            g->phase_rad = g->phase_rad * M_PI / 180.0; /* written in degrees */
            break;
        case FB_SIM_RAMP:
        case FB_SIM_WALK:
            if (g->min > g->max) return fb_err_set(err, FB_EINVAL, "sim address '%s': min must not exceed max", spec);
            if (g->kind == FB_SIM_WALK) {
                if (g->step < 0) return fb_err_set(err, FB_EINVAL, "sim address '%s': step must be >= 0", spec);
                if (g->start < g->min || g->start > g->max)
                    return fb_err_set(err, FB_EINVAL, "sim address '%s': start must lie in [min, max]", spec);
            }
            break;
        case FB_SIM_NOISE:
            if (g->stddev < 0) return fb_err_set(err, FB_EINVAL, "sim address '%s': stddev must be >= 0", spec);
            break;
        case FB_SIM_MOTOR: {
            const char *why;
            if (fb_motor_check(&g->motor, &why) < 0)
                return fb_err_set(err, FB_EINVAL, "sim address '%s': %s", spec, why);
            break;
        }
        default: break;
    }
    if (isnan(g->spike_amp)) g->spike_amp = g->kind == FB_SIM_SINE ? 10.0 * fabs(g->amp) : 100.0;
    return 0;
}

int fb_sim_gen_parse(const char *spec, struct fb_sim_gen *g, struct fb_err *err)
{
    memset(g, 0, sizeof *g);
    if (!spec) spec = "";
    char name[32];
    size_t nl = strcspn(spec, ":");
    char valid[512];
    if (nl >= sizeof name) nl = sizeof name - 1;
    memcpy(name, spec, nl);
    name[nl] = 0;
    int kind = -1;
    for (int i = 0; fb_sim_gen_names[i]; i++)
        if (!strcmp(name, fb_sim_gen_names[i])) kind = i;
    if (kind < 0) {
        list_gens(valid, sizeof valid);
        return fb_err_set(err, FB_EINVAL, "sim address '%s': unknown generator '%s' (valid: %s)", spec, name, valid);
    }
    g->kind = (uint8_t)kind;
    set_defaults(g);

    const char *p = spec[strcspn(spec, ":")] == ':' ? spec + strcspn(spec, ":") + 1 : NULL;
    bool positional_used = false;
    int rc = 0;
    while (p && *p) {
        char key[32] = "", val[512];
        bool quoted = false;
        size_t qlen = 0;
        /* key= (absent for a positional value) */
        size_t kl = strcspn(p, "=,\"");
        if (p[kl] == '=') {
            if (kl == 0 || kl >= sizeof key) {
                rc = fb_err_set(err, FB_EINVAL, "sim address '%s': bad key near '%s'", spec, p);
                goto fail;
            }
            memcpy(key, p, kl);
            key[kl] = 0;
            p += kl + 1;
        }
        if (*p == '"') {
            int qrc = parse_quoted(&p, val, sizeof val, &qlen);
            if (qrc) {
                rc = fb_err_set(err, FB_EINVAL, "sim address '%s': %s", spec,
                                qrc == FB_ERANGE ? "string too long" : "unterminated string");
                goto fail;
            }
            quoted = true;
            if (*p && *p != ',') {
                rc = fb_err_set(err, FB_EINVAL, "sim address '%s': ',' expected after string", spec);
                goto fail;
            }
        } else {
            size_t vl = strcspn(p, ",");
            if (vl >= sizeof val) {
                rc = fb_err_set(err, FB_EINVAL, "sim address '%s': value too long", spec);
                goto fail;
            }
            memcpy(val, p, vl);
            val[vl] = 0;
            p += vl;
        }
        if (*p == ',') p++;

        const struct key_def *kd;
        if (!key[0]) {
            /* positional: only const's value, only once */
            if (g->kind != FB_SIM_CONST || positional_used) {
                list_valid_keys(g->kind, valid, sizeof valid);
                rc = fb_err_set(err, FB_EINVAL, "sim address '%s': '%s' is not KEY=VALUE (valid keys for %s: %s)", spec,
                                quoted ? "\"...\"" : val, fb_sim_gen_names[g->kind], valid);
                goto fail;
            }
            positional_used = true;
            kd = find_key(FB_SIM_CONST, "value");
        } else {
            kd = find_key(g->kind, key);
            if (!kd) {
                list_valid_keys(g->kind, valid, sizeof valid);
                rc = fb_err_set(err, FB_EINVAL, "sim address '%s': unknown key '%s' for %s (valid: %s)", spec, key,
                                fb_sim_gen_names[g->kind], valid);
                goto fail;
            }
        }
        rc = apply_key(g, kd, val, quoted, qlen, spec, err);
        if (rc) goto fail;
    }
    rc = validate(g, spec, err);
    if (rc) goto fail;
    fb_sim_gen_seed(g, 0, 0);
    return 0;
fail:
    fb_sim_gen_free(g);
    return rc;
}

void fb_sim_gen_free(struct fb_sim_gen *g)
{
    if (!g) return;
    free(g->str);
    g->str = NULL;
    g->str_len = g->str_cap = 0;
}

/* ------------------------------------------------------------ evaluation */
/* Position inside the period, in [0, 1), computed in integer ns. */
static double period_frac(int64_t t_ns, int64_t period_ns)
{
    int64_t r = t_ns % period_ns;
    if (r < 0) r += period_ns;
    return (double)r / (double)period_ns;
}

double fb_sim_gen_base(const struct fb_sim_gen *g, int64_t t_ns)
{
    switch (g->kind) {
        case FB_SIM_SINE:
            return g->offset + g->bias + g->amp * sin(2.0 * M_PI * period_frac(t_ns, g->period_ns) + g->phase_rad);
        case FB_SIM_SQUARE: return (period_frac(t_ns, g->period_ns) < g->duty ? g->high : g->low) + g->bias;
        case FB_SIM_RAMP: return g->min + (g->max - g->min) * period_frac(t_ns, g->period_ns) + g->bias;
        case FB_SIM_NOISE: return g->mean;
        default: return g->cur;
    }
}

void fb_sim_gen_read(struct fb_sim_gen *g, int64_t t_ns, struct fb_sim_out *o)
{
    double v;
    switch (g->kind) {
        case FB_SIM_MOTOR: v = 0; break; /* makes blocks (fb_motor_block), never single values */
        case FB_SIM_WALK:
            g->cur += (2.0 * rnd01(g) - 1.0) * g->step;
            if (g->cur < g->min) g->cur = g->min;
            if (g->cur > g->max) g->cur = g->max;
            v = g->cur;
            break;
        case FB_SIM_NOISE: v = g->mean + g->stddev * rnd_gauss(g); break;
        case FB_SIM_COUNTER:
            v = g->cur;
            g->cur += g->step;
            break;
        default: v = fb_sim_gen_base(g, t_ns); break;
    }
    o->quality = FB_Q_GOOD;
    o->is_string = g->is_string;
    o->s = g->str;
    o->slen = g->str_len;

    /* Faults.  A random number is drawn for every configured fault on every
     * read, whatever the outcome, so one fault does not shift another's
     * sequence. */
    if (g->stuck_p > 0) {
        bool start = rnd01(g) < g->stuck_p;
        if (g->stuck && t_ns >= g->stuck_until) g->stuck = false;
        if (!g->stuck && start) {
            g->stuck = true;
            g->stuck_until = t_ns + g->stuck_ns;
            g->stuck_val = v;
        }
        if (g->stuck) v = g->stuck_val;
    }
    if (g->spike_p > 0) {
        double r = rnd01(g);
        if (r < g->spike_p) v += (r < g->spike_p / 2) ? g->spike_amp : -g->spike_amp;
    }
    if (g->oor_p > 0 && rnd01(g) < g->oor_p) v = g->oor_value;
    if (g->dropout_p > 0 && rnd01(g) < g->dropout_p) o->quality = FB_Q_BAD_COMM;
    o->d = v;
}

int fb_sim_gen_write_num(struct fb_sim_gen *g, double v, struct fb_err *err)
{
    if (g->is_string) return fb_err_set(err, FB_EINVAL, "sim: this tag holds a string, a number was written");
    if (!isfinite(v)) return fb_err_set(err, FB_EINVAL, "sim: cannot write NaN or infinity");
    switch (g->kind) {
        case FB_SIM_SINE: g->bias = v - g->offset; break;
        case FB_SIM_SQUARE: g->bias = v - (g->low + g->high) / 2.0; break;
        case FB_SIM_RAMP: g->bias = v - (g->min + g->max) / 2.0; break;
        case FB_SIM_NOISE: g->mean = v; break;
        case FB_SIM_WALK:
            /* the walk continues from the written value, bounds widened if needed */
            if (v < g->min) g->min = v;
            if (v > g->max) g->max = v;
            g->cur = v;
            break;
        default: g->cur = v; break;
    }
    g->stuck = false;
    return 0;
}

int fb_sim_gen_write_str(struct fb_sim_gen *g, const char *s, uint32_t len, struct fb_err *err)
{
    if (!g->is_string && g->kind != FB_SIM_MEMORY && g->kind != FB_SIM_CONST)
        return fb_err_set(err, FB_EINVAL, "sim: %s generates numbers, a string was written", fb_sim_gen_names[g->kind]);
    if (g->str && len <= g->str_cap) {
        memcpy(g->str, s, len);
        g->str_len = len;
        g->is_string = true;
        return 0;
    }
    if (len > 4096) return fb_err_set(err, FB_ERANGE, "sim: string of %u bytes is too long", len);
    if (set_string(g, s, len)) return fb_err_set(err, FB_ENOMEM, "sim: out of memory");
    return 0;
}
