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
 * Threading: read and write run on the connection thread only, so the
 * generator state needs no lock.
 */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"
#include "south/sim/sim_gen.h"

struct sim_dev {
    uint64_t seed;
};

struct sim_tag {
    struct fb_sim_gen g;
    char num[40]; /* numbers formatted for string tags */
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
    free(dev->drv_dev);
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
    const char *text = tag->addr_text ? tag->addr_text : "";
    size_t sl;
    enum fb_type at = split_type(text, &sl);
    char *spec = strndup(text, sl);
    struct sim_tag *st = calloc(1, sizeof *st);
    if (!spec || !st) {
        free(spec);
        free(st);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
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
    fb_sim_gen_free(&st->g);
    free(st);
    tag->addr = NULL;
}

/* No plan is needed, but by now every tag has its final id: (re)seed so the
 * sequence depends only on the seed and the tag's position in the device. */
static int sim_plan(struct fb_device *dev, struct fb_group *g, struct fb_err *err)
{
    (void)err;
    g->plan = NULL;
    for (uint32_t i = 0; i < g->ntags; i++) {
        if (!dev->gw) break;
        struct fb_tag *t = &dev->gw->tags[g->tags[i]];
        struct sim_tag *st = t->addr;
        if (st) fb_sim_gen_seed(&st->g, dev_seed(dev), tag_index(dev, t));
    }
    return 0;
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

static int sim_read(struct fb_device *dev, struct fb_group *g, struct fb_batch *out)
{
    if (!dev->gw) return FB_EINVAL;
    int64_t t0 = fb_mono_ns();
    int64_t now = fb_now_ns();
    struct fb_tag *tags = dev->gw->tags;
    uint64_t failed = 0;
    for (uint32_t i = 0; i < g->ntags; i++) {
        struct fb_tag *t = &tags[g->tags[i]];
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
    (void)dev; /* writes / write_errors are counted by the runtime */
    if (!st) {
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
    return rc;
}

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
};
