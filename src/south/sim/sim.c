/* sim.c — the simulator driver ("sim://anything?seed=42").
 *
 * It lets the demo, the system tests and the pipeline benchmark run without
 * hardware.  Every tag's address is a generator spec (sim_gen.c); the driver
 * is the thin glue that a real protocol driver would be: it owns one
 * connection per device ("sim:<device>", so each sim device gets its own
 * thread), "connects" instantly, fills one sample per tag on read and keeps
 * the per-device counters like a real driver does (one request per group
 * read, its round-trip time, the last success; every item that comes out
 * Bad — a dropout, a tag without an address — counts as a failed item in the
 * error counter, as a real device's refusals do).  Connection state, writes
 * and reconnects are counted by the runtime.
 *
 * Values are produced as float64 unless the tag's type says otherwise; then
 * they are converted the way a device register would hold them: rounded to
 * the nearest integer and saturated to the type's range (bool: nonzero after
 * rounding), float32 clamped to its finite range, numbers formatted as text
 * for string tags.
 *
 * Plants (sim_plant.h): a tag whose address is a process model ("heater:…",
 * "fopdt:…", "tank:…", "valve:…", "motor:…") takes its input from another tag
 * of the same device (`input=NAME`, resolved when the reads are planned; a
 * chain of plants must not loop).  Every read and every write first brings
 * all plants of the device to the present (monotonic clock), in input order
 * and, when one plant feeds another or a generator feeds a plant, in steps of
 * at most 10 ms; a write to an input is then recorded at the time it was
 * made, so the plant sees it exactly then (its dead time counts from there).
 *
 * Threading: read and write run on the connection thread only, so the
 * generator and plant state needs no lock.
 */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/block.h"
#include "core/model.h"
#include "core/plugin.h"
#include "south/sim/sim_gen.h"
#include "south/sim/sim_plant.h"

#define PLANT_STEP_NS 10000000LL /* substep when a plant's input moves by itself */

struct sim_dev {
    uint64_t seed;
    /* plants, in input order (a plant after the plant feeding it) */
    uint32_t *plants;
    uint32_t nplants;
    bool plants_ordered, plants_step; /* step: some input moves by itself (plant or generator) */
    int64_t plants_t;                 /* monotonic time the plants were brought to; 0 = not started */
};

struct sim_tag {
    struct fb_sim_gen g;
    struct fb_plant *plant; /* a process model instead of a generator */
    int64_t input;          /* the plant's input tag id, -1 = none */
    char num[40];           /* numbers formatted for string tags */
    int64_t t_start;        /* motor: the clock at the first block (operating time 0) */
};

static const char *const sim_schemes[] = {"sim", NULL};

static int sim_device_init(struct fb_device *dev, char **conn_key, struct fb_err *err)
{
    uint64_t seed = 0;
    for (int i = 0; i < dev->url.nq; i++) {
        const char *k = dev->url.q[i].k, *v = dev->url.q[i].v ? dev->url.q[i].v : "";
        if (strcmp(k, "seed") == 0) {
            char *end;
            if (!*v || *v == '-') goto bad_seed;
            seed = strtoull(v, &end, 0);
            if (*end) goto bad_seed;
            continue;
        bad_seed:
            return fb_err_set(err, FB_EINVAL, "device %s: seed=%s is not an unsigned integer", dev->name, v);
        }
        return fb_err_set(err, FB_EINVAL, "device %s: unknown sim option '%s' (valid: seed)", dev->name, k);
    }
    struct sim_dev *sd = calloc(1, sizeof *sd);
    size_t n = strlen(dev->name ? dev->name : "") + 5;
    char *key = malloc(n);
    if (!sd || !key) {
        free(sd);
        free(key);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    snprintf(key, n, "sim:%s", dev->name ? dev->name : "");
    sd->seed = seed;
    dev->drv_dev = sd;
    *conn_key = key;
    return 0;
}

static void sim_device_free(struct fb_device *dev)
{
    struct sim_dev *sd = dev->drv_dev;
    if (sd) free(sd->plants);
    free(sd);
    dev->drv_dev = NULL;
}

static uint64_t dev_seed(const struct fb_device *dev)
{
    const struct sim_dev *sd = dev->drv_dev;
    return sd ? sd->seed : 0;
}

/* The tag's position inside its device, when the model already knows it. */
static uint64_t tag_index(const struct fb_device *dev, const struct fb_tag *t)
{
    if (t->id >= dev->first_tag && t->id - dev->first_tag < dev->ntags) return t->id - dev->first_tag;
    return t->id;
}

/* "memory:int16" / "sine:amp=2:float32": an optional trailing :TYPE, as in
 * every other address (docs/configuration.md, `addr`).  Returns the type, or FB_T_NONE and
 * leaves *spec_len at the full length. */
static enum fb_type split_type(const char *text, size_t *spec_len)
{
    size_t n = strlen(text);
    *spec_len = n;
    bool inq = false;
    size_t last = 0, colons = 0;
    for (size_t i = 0; i < n; i++) {
        if (text[i] == '\\' && inq && text[i + 1]) {
            i++;
            continue;
        }
        if (text[i] == '"') inq = !inq;
        if (text[i] == ':' && !inq) {
            last = i;
            colons++;
        }
    }
    if (!colons) return FB_T_NONE;
    const char *suffix = text + last + 1;
    if (strchr(suffix, '=') || strchr(suffix, '"')) return FB_T_NONE;
    char buf[24];
    size_t sl = strlen(suffix);
    if (sl >= sizeof buf) return FB_T_NONE;
    memcpy(buf, suffix, sl + 1);
    enum fb_type t = fb_type_parse(buf);
    if (t != FB_T_NONE) *spec_len = last;
    return t;
}

static int sim_parse_address(struct fb_device *dev, struct fb_tag *tag, struct fb_err *err)
{
    char ab[FB_ATEXT_MAX];
    const char *text = fb_tag_addr_text(dev->gw, tag, ab);
    if (!text) text = "";
    size_t sl;
    enum fb_type at = split_type(text, &sl);
    char *spec = strndup(text, sl);
    struct sim_tag *st = calloc(1, sizeof *st);
    if (!spec || !st) {
        free(spec);
        free(st);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    st->input = -1;
    /* "motor" names two models: on a waveform tag (vibration:) the vibration
     * generator (sim_motor.h), elsewhere the speed plant (sim_plant.h) */
    bool vib_motor = fb_tag_is_wave(tag) && !strncmp(spec, "motor", 5) && (spec[5] == ':' || spec[5] == 0);
    if (fb_plant_is_spec(spec) && !vib_motor) {
        st->plant = malloc(sizeof *st->plant);
        int rc = st->plant ? fb_plant_parse(spec, st->plant, err) : fb_err_set(err, FB_ENOMEM, "out of memory");
        if (rc == FB_EINVAL && !strncmp(spec, "motor", 5) && err && strstr(err->msg, "unknown key") &&
            strlen(err->msg) < sizeof err->msg - 80)
            strcat(err->msg, " (the vibration motor model, rpm= …, needs vibration: on the tag)");
        free(spec);
        if (rc == 0 && at != FB_T_NONE && at != FB_T_FLOAT64 && at != FB_T_FLOAT32)
            rc = fb_err_set(err, FB_EINVAL, "sim address '%s': a plant is float32 or float64, not %s", text,
                            fb_type_name(at));
        if (rc == 0 && tag->type != FB_T_NONE && tag->type != FB_T_FLOAT64 && tag->type != FB_T_FLOAT32)
            rc = fb_err_set(err, FB_EINVAL, "sim address '%s': a plant is float32 or float64, not %s", text,
                            fb_type_name((enum fb_type)tag->type));
        if (rc == 0 && (tag->access & FB_ACC_WRITE))
            rc = fb_err_set(err, FB_EINVAL, "sim address '%s': a plant's value is computed; write its input tag", text);
        if (rc == 0 && fb_tag_is_wave(tag))
            rc = fb_err_set(err, FB_EINVAL, "sim address '%s': a plant delivers one value, not a waveform", text);
        if (rc) {
            free(st->plant);
            free(st);
            return rc;
        }
        if (at != FB_T_NONE) tag->type = (uint8_t)at;
        if (tag->type == FB_T_NONE) tag->type = FB_T_FLOAT64;
        tag->addr = st;
        return 0;
    }
    int rc = fb_sim_gen_parse(spec, &st->g, err);
    free(spec);
    if (rc) {
        free(st);
        return rc;
    }
    if (at != FB_T_NONE) {
        if (tag->type != FB_T_NONE && tag->type != at) {
            fb_sim_gen_free(&st->g);
            free(st);
            return fb_err_set(err, FB_EINVAL, "sim address '%s': type %s conflicts with type %s", text,
                              fb_type_name(at), fb_type_name((enum fb_type)tag->type));
        }
        tag->type = (uint8_t)at;
    }
    if (tag->type == FB_T_NONE) tag->type = st->g.is_string ? FB_T_STRING : FB_T_FLOAT64;
    if (fb_tag_is_wave(tag) && (st->g.is_string || tag->type == FB_T_STRING || tag->type == FB_T_BOOL)) {
        const char *what = st->g.is_string ? "a string" : fb_type_name((enum fb_type)tag->type);
        fb_sim_gen_free(&st->g);
        free(st);
        return fb_err_set(err, FB_EINVAL, "sim address '%s': a waveform tag takes numbers, not %s", text, what);
    }
    if (st->g.is_string && tag->type != FB_T_STRING) {
        fb_sim_gen_free(&st->g);
        free(st);
        return fb_err_set(err, FB_EINVAL, "sim address '%s': a string value needs type string, not %s", text,
                          fb_type_name((enum fb_type)tag->type));
    }
    if (tag->type == FB_T_STRING) {
        if (!st->g.is_string && (st->g.kind == FB_SIM_MEMORY || st->g.kind == FB_SIM_CONST)) {
            /* a string memory/const given a numeric initial value holds its text */
            char num[40];
            int n = snprintf(num, sizeof num, "%.17g", st->g.cur);
            rc = fb_sim_gen_write_str(&st->g, num, (uint32_t)n, err);
            if (rc) {
                fb_sim_gen_free(&st->g);
                free(st);
                return rc;
            }
        }
        if (tag->str_len == 0) tag->str_len = st->g.str_len > 64 ? st->g.str_len : 64;
    }
    fb_sim_gen_seed(&st->g, dev_seed(dev), tag_index(dev, tag));
    tag->addr = st;
    return 0;
}

static void sim_free_address(struct fb_tag *tag)
{
    struct sim_tag *st = tag->addr;
    if (!st) return;
    free(st->plant);
    fb_sim_gen_free(&st->g);
    free(st);
    tag->addr = NULL;
}

/* No plan is needed, but by now every tag has its final id: (re)seed so the
 * sequence depends only on the seed and the tag's position in the device. */
/* A plant's input= names a numeric tag of the same device; a chain of plants
 * must end at something that is not a plant. */
static int plant_resolve(struct fb_device *dev, struct fb_tag *t, struct fb_err *err)
{
    struct sim_tag *st = t->addr;
    struct sim_dev *sd = dev->drv_dev;
    struct fb_tag *tags = dev->gw->tags;
    st->input = -1;
    if (st->plant->input[0]) {
        for (uint32_t k = 0; k < dev->ntags && st->input < 0; k++)
            if (!strcmp(tags[dev->first_tag + k].name, st->plant->input)) st->input = dev->first_tag + k;
        if (st->input < 0)
            return fb_err_set(err, FB_EINVAL, "%s: input=%s: no such tag in device %s", t->name, st->plant->input,
                              dev->name);
        const struct fb_tag *in = &tags[st->input];
        if (in->type == FB_T_STRING || !in->addr)
            return fb_err_set(err, FB_EINVAL, "%s: input=%s must be a numeric sim tag", t->name, in->name);
        /* follow the chain: it must not come back */
        int64_t cur = st->input;
        for (uint32_t n = 0; cur >= 0; n++) {
            const struct sim_tag *ct = tags[cur].addr;
            if (!ct || !ct->plant) break;
            if ((uint32_t)cur == t->id || n > dev->ntags)
                return fb_err_set(err, FB_EINVAL, "%s: input=%s: the plants feed each other in a circle", t->name,
                                  in->name);
            int64_t nx = -1;
            for (uint32_t k = 0; ct->plant->input[0] && k < dev->ntags && nx < 0; k++)
                if (!strcmp(tags[dev->first_tag + k].name, ct->plant->input)) nx = dev->first_tag + k;
            cur = nx;
        }
    }
    for (uint32_t i = 0; i < sd->nplants; i++)
        if (sd->plants[i] == t->id) return 0; /* planned before */
    uint32_t *np = realloc(sd->plants, (sd->nplants + 1) * sizeof *np);
    if (!np) return fb_err_set(err, FB_ENOMEM, "out of memory");
    sd->plants = np;
    sd->plants[sd->nplants++] = t->id;
    sd->plants_ordered = false;
    return 0;
}

static int sim_plan(struct fb_device *dev, struct fb_group *g, struct fb_err *err)
{
    g->plan = NULL;
    for (uint32_t i = 0; i < g->ntags; i++) {
        if (!dev->gw) break;
        struct fb_tag *t = &dev->gw->tags[fb_group_tag(g, i)];
        struct sim_tag *st = t->addr;
        if (st && st->plant) {
            int rc = plant_resolve(dev, t, err);
            if (rc) return rc;
        } else if (st) {
            fb_sim_gen_seed(&st->g, dev_seed(dev), tag_index(dev, t));
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- plants */
/* What a tag feeds a plant at monotonic time t. */
static double input_value(const struct fb_tag *in, int64_t t_utc)
{
    const struct sim_tag *st = in->addr;
    if (st->plant) return fb_plant_value(st->plant);
    if (st->g.kind == FB_SIM_MEMORY || st->g.kind == FB_SIM_CONST) return st->g.cur;
    return fb_sim_gen_base(&st->g, t_utc);
}

/* Order the plants so that each comes after the plant feeding it. */
static void plants_order(struct fb_device *dev, struct sim_dev *sd)
{
    struct fb_tag *tags = dev->gw->tags;
    sd->plants_step = false;
    for (uint32_t done = 0; done < sd->nplants;) {
        uint32_t before = done;
        for (uint32_t i = done; i < sd->nplants; i++) {
            const struct sim_tag *st = tags[sd->plants[i]].addr;
            bool ready = true;
            if (st->input >= 0) {
                const struct sim_tag *in = tags[st->input].addr;
                if (in->plant) {
                    ready = false;
                    for (uint32_t k = 0; k < done; k++)
                        if (sd->plants[k] == (uint32_t)st->input) ready = true;
                }
                if (in->plant || (in->g.kind != FB_SIM_MEMORY && in->g.kind != FB_SIM_CONST)) sd->plants_step = true;
            }
            if (ready) {
                uint32_t x = sd->plants[done];
                sd->plants[done] = sd->plants[i];
                sd->plants[i] = x;
                done++;
            }
        }
        if (done == before) break; /* a circle: refused by plant_resolve, never here */
    }
    sd->plants_ordered = true;
}

/* Bring every plant of the device to monotonic time `now`. */
static void plants_sync(struct fb_device *dev, int64_t now)
{
    struct sim_dev *sd = dev->drv_dev;
    if (!sd || !sd->nplants) return;
    struct fb_tag *tags = dev->gw->tags;
    if (!sd->plants_ordered) plants_order(dev, sd);
    int64_t utc_off = fb_now_ns() - fb_mono_ns();
    if (!sd->plants_t) { /* start: every plant at its initial state, fed its input as it is now */
        for (uint32_t i = 0; i < sd->nplants; i++) {
            struct sim_tag *st = tags[sd->plants[i]].addr;
            fb_plant_advance(st->plant, now);
            if (st->input >= 0) fb_plant_input(st->plant, now, input_value(&tags[st->input], now + utc_off));
        }
        sd->plants_t = now;
        return;
    }
    int64_t t = sd->plants_t;
    while (t < now) {
        t = sd->plants_step && now - t > PLANT_STEP_NS ? t + PLANT_STEP_NS : now;
        for (uint32_t i = 0; i < sd->nplants; i++)
            fb_plant_advance(((struct sim_tag *)tags[sd->plants[i]].addr)->plant, t);
        if (!sd->plants_step) continue;
        for (uint32_t i = 0; i < sd->nplants; i++) {
            struct sim_tag *st = tags[sd->plants[i]].addr;
            if (st->input >= 0) fb_plant_input(st->plant, t, input_value(&tags[st->input], t + utc_off));
        }
    }
    sd->plants_t = now;
}

/* After a write to tag `id`: the plants it feeds take the new value now. */
static void plants_written(struct fb_device *dev, uint32_t id, int64_t now)
{
    struct sim_dev *sd = dev->drv_dev;
    struct fb_tag *tags = dev->gw->tags;
    for (uint32_t i = 0; sd && i < sd->nplants; i++) {
        struct sim_tag *st = tags[sd->plants[i]].addr;
        if (st->input == (int64_t)id) fb_plant_input(st->plant, now, input_value(&tags[id], fb_now_ns()));
    }
}

static void sim_plan_free(struct fb_group *g) { g->plan = NULL; }

static int sim_open(struct fb_conn *c, struct fb_err *err)
{
    (void)c;
    (void)err;
    return 0; /* nothing to connect to: always succeeds */
}

static void sim_close(struct fb_conn *c) { (void)c; }

/* double → value of type t, the way a device register would hold it. */
static void to_value(enum fb_type t, double d, struct fb_value *v)
{
    static const double lo[FB_T__COUNT] = {[FB_T_INT8] = -128.0,
                                           [FB_T_INT16] = -32768.0,
                                           [FB_T_INT32] = -2147483648.0,
                                           [FB_T_INT64] = -9223372036854775808.0};
    static const double hi[FB_T__COUNT] = {[FB_T_INT8] = 127.0,
                                           [FB_T_UINT8] = 255.0,
                                           [FB_T_INT16] = 32767.0,
                                           [FB_T_UINT16] = 65535.0,
                                           [FB_T_INT32] = 2147483647.0,
                                           [FB_T_UINT32] = 4294967295.0,
                                           [FB_T_INT64] = 9223372036854775807.0,
                                           [FB_T_UINT64] = 18446744073709551615.0};
    v->type = (uint8_t)t;
    if (isnan(d)) d = 0;
    double r = nearbyint(d);
    switch (t) {
        case FB_T_BOOL: v->b = r != 0.0; return;
        case FB_T_FLOAT32:
            if (d > FLT_MAX) d = FLT_MAX;
            if (d < -FLT_MAX) d = -FLT_MAX;
            v->f = (double)(float)d;
            return;
        case FB_T_FLOAT64:
        case FB_T_NONE:
        case FB_T_STRING:
        case FB_T__COUNT:
            v->type = FB_T_FLOAT64;
            v->f = d;
            return;
        default: break;
    }
    if (fb_type_is_signed(t)) {
        if (r <= lo[t])
            v->i = (int64_t)lo[t];
        else if (r >= hi[t])
            v->i = t == FB_T_INT64 ? INT64_MAX : (int64_t)hi[t];
        else
            v->i = (int64_t)r;
    } else {
        if (r <= 0)
            v->u = 0;
        else if (r >= hi[t])
            v->u = t == FB_T_UINT64 ? UINT64_MAX : (uint64_t)hi[t];
        else
            v->u = (uint64_t)r;
    }
}

/* A waveform tag: one block of its vibration.block samples (struct fb_wave n).  A motor makes its own
 * signal; any other generator is read once per sample, at the sample's
 * time (a sine of period 20ms is a 50 Hz tone).  No block free (the
 * analysis is behind): nothing is added, fb_block_get counted the drop. */
static void read_block(const struct fb_gateway *gw, struct fb_tag *t, struct sim_tag *st, int64_t now,
                       struct fb_batch *out)
{
    struct fb_block *blk = fb_block_get(gw, t);
    if (!blk) return;
    const struct fb_wave *w = fb_tag_wave(gw, t);
    uint32_t n = w->n <= blk->cap ? w->n : blk->cap;
    double fs = w->fs;
    blk->n = n;
    blk->ts = now;
    if (st->g.kind == FB_SIM_MOTOR) {
        if (!st->t_start) st->t_start = now;
        double t_op = (double)(now - st->t_start) / 1e9 * st->g.motor.accel;
        fb_motor_block(&st->g.motor, blk->x, n, fs, t_op);
    } else {
        for (uint32_t i = 0; i < n; i++) {
            struct fb_sim_out o;
            fb_sim_gen_read(&st->g, now + (int64_t)(i * 1e9 / fs), &o);
            blk->x[i] = (float)o.d;
        }
    }
    struct fb_value v = {.type = FB_T_BLOCK, .blk = blk};
    fb_batch_add(out, t->id, FB_Q_GOOD, now, &v);
    fb_block_unref(blk);
}

static int sim_read(struct fb_device *dev, struct fb_group *g, struct fb_batch *out)
{
    if (!dev->gw) return FB_EINVAL;
    int64_t t0 = fb_mono_ns();
    int64_t now = fb_now_ns();
    struct fb_tag *tags = dev->gw->tags;
    uint64_t failed = 0;
    plants_sync(dev, t0);
    for (uint32_t i = 0; i < g->ntags; i++) {
        struct fb_tag *t = &tags[fb_group_tag(g, i)];
        struct sim_tag *st = t->addr;
        struct fb_sim_out o;
        struct fb_value v;
        if (!st) {
            v.type = t->type;
            v.u = 0;
            fb_batch_add(out, t->id, FB_Q_BAD_CONFIG, now, &v);
            failed++;
            continue;
        }
        if (fb_tag_is_wave(t)) {
            read_block(dev->gw, t, st, now, out);
            continue;
        }
        if (st->plant) {
            to_value((enum fb_type)t->type, fb_plant_value(st->plant), &v);
            fb_batch_add(out, t->id, FB_Q_GOOD, now, &v);
            continue;
        }
        fb_sim_gen_read(&st->g, now, &o);
        if (t->type == FB_T_STRING) {
            v.type = FB_T_STRING;
            if (o.is_string) {
                v.s.p = o.s;
                v.s.len = o.slen;
            } else {
                int n = snprintf(st->num, sizeof st->num, "%.17g", o.d);
                v.s.p = st->num;
                v.s.len = n > 0 ? (uint32_t)n : 0;
            }
            if (t->str_len && v.s.len > t->str_len) v.s.len = t->str_len;
        } else {
            to_value((enum fb_type)t->type, o.d, &v);
        }
        if (fb_q_bad(o.quality)) failed++;
        fb_batch_add(out, t->id, o.quality, now, &v);
    }
    if (failed) atomic_fetch_add(&dev->m.errors, failed); /* each Bad item once */
    int64_t rtt = fb_mono_ns() - t0;
    atomic_fetch_add(&dev->m.requests, 1);
    atomic_fetch_add(&dev->m.rtt_ns_sum, (uint64_t)rtt);
    atomic_fetch_add(&dev->m.rtt_count, 1);
    atomic_store(&dev->m.rtt_ns_last, (uint64_t)rtt);
    atomic_store(&dev->m.last_success_ns, now);
    return 0;
}

static int sim_write(struct fb_device *dev, const struct fb_tag *t, const struct fb_value *v, struct fb_err *err)
{
    struct sim_tag *st = t->addr;
    int rc;
    /* writes / write_errors are counted by the runtime */
    int64_t now = fb_mono_ns();
    if (st && dev->gw) plants_sync(dev, now); /* the plants ran on the old value until now */
    if (st && st->plant) {
        rc = fb_err_set(err, FB_EACCES, "%s: a plant's value is computed; write its input tag", t->name);
    } else if (!st) {
        rc = fb_err_set(err, FB_EINVAL, "%s: no sim address", t->name);
    } else if (!(t->access & FB_ACC_WRITE)) {
        rc = fb_err_set(err, FB_EACCES, "%s is not writable", t->name);
    } else if (v->type == FB_T_STRING) {
        if (t->type != FB_T_STRING)
            rc = fb_err_set(err, FB_EINVAL, "%s: string written to a %s tag", t->name,
                            fb_type_name((enum fb_type)t->type));
        else if (t->str_len && v->s.len > t->str_len)
            rc = fb_err_set(err, FB_ERANGE, "%s: string of %u bytes exceeds %u", t->name, v->s.len, t->str_len);
        else
            rc = fb_sim_gen_write_str(&st->g, v->s.p, v->s.len, err);
    } else {
        double d;
        if (!fb_value_to_double(v, &d))
            rc = fb_err_set(err, FB_EINVAL, "%s: unsupported value type", t->name);
        else if (t->type == FB_T_STRING)
            rc = fb_err_set(err, FB_EINVAL, "%s: number written to a string tag", t->name);
        else
            rc = fb_sim_gen_write_num(&st->g, d, err);
    }
    if (rc == 0 && dev->gw) plants_written(dev, t->id, now);
    return rc;
}

/* A config reload keeps the device (model.h): its signals go on where they
 * were (the generators' state lives in the tags' addresses). */
static void sim_adopt(struct fb_conn *c, struct fb_conn *old) { fb_adopt_swap(c, old, FB_ADOPT_DEV | FB_ADOPT_ADDR); }

const struct fb_driver fb_driver_sim = {
    .name = "sim",
    .schemes = sim_schemes,
    .device_init = sim_device_init,
    .device_free = sim_device_free,
    .parse_address = sim_parse_address,
    .free_address = sim_free_address,
    .plan = sim_plan,
    .plan_free = sim_plan_free,
    .open = sim_open,
    .read = sim_read,
    .write = sim_write,
    .close = sim_close,
    .adopt = sim_adopt,
};
