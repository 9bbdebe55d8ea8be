/* revpi.c — the Revolution Pi driver: glue between the gateway and the
 * piControl process image (`revpi:///dev/piControl0?config=…&cycle=20ms`).
 *
 * The process image is a 4096-byte array behind /dev/piControl0 (or any
 * file standing in for it: the tests use a plain temp file).  The driver
 *
 *   - parses the PiCtory configuration once at start-up (revpi_proto.c) and
 *     resolves tag addresses — variable names or raw `bit:70.3` / `word:10` —
 *     to byte/bit locations;
 *   - reads the whole range of the image the device's tags use with ONE
 *     pread per poll cycle and decodes every tag of the group from that copy,
 *     so all values of a cycle are consistent.  An image that ends inside
 *     that range (a stand-in file cut short while running) makes the tags
 *     past its end BadNodeIdUnknown — each counted as a failed item — while
 *     the others keep reading; a failing pread is a lost connection;
 *   - writes multi-byte values with one pwrite, and single bits through the
 *     piControl ioctl KB_SET_VALUE on the real device, so bits other
 *     processes own in the same byte are never clobbered.  On a plain file
 *     there is no ioctl, so a bit is a read-modify-write of its byte;
 *   - writes the configured safe state (safe=O_1=0,O_2=1) when the gateway
 *     closes the connection (shutdown, connection loss), when the write
 *     watchdog (watchdog=5s) sees no successful write for that long, and
 *     when the northbound command source is lost (north_loss=5s: no sink —
 *     the MQTT or Sparkplug connection commands arrive on — has been
 *     connected for that long).
 *
 * The device calls sit behind the small seam img_read / img_write /
 * img_set_bit, switched by rp_conn.is_device (a character device means
 * piControl), so the file-backed path tests everything but the ioctl.
 *
 * A missing PiCtory file is not fatal while loading the config (so
 * `fieldbridge check` on a laptop only warns): tags that name variables must
 * then carry a type, and their names are resolved when the connection opens
 * on the target; an unknown name there fails the open with a clear message.
 *
 * Threading: open/read/write/close run on the device's connection thread;
 * the per-device state needs no lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/browse.h"
#include "core/env.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/url.h"
#include "south/revpi/revpi.h"
#include "south/revpi/revpi_proto.h"

/* piControl ioctls: magic 'K', no size encoded (_IO); KB_SET_VALUE is
 * number 16 and takes {uint16 byte address, uint8 bit, uint8 value}. */
#define RP_KB_IOC_MAGIC 'K'
#define RP_KB_SET_VALUE _IO(RP_KB_IOC_MAGIC, 16)
struct rp_spi_value {
    uint16_t address;
    uint8_t bit;
    uint8_t value;
};

#define RP_DEFAULT_CONFIG "/etc/revpi/config.rsc"
#define RP_MAX_RSC (16u << 20)

struct rp_tag {
    struct fb_revpi_addr a;
};

struct rp_safe {
    struct fb_revpi_addr a;
    double value;
    struct fb_value v; /* converted once resolved */
    bool ready;
};

struct rp_dev {
    char *cfg_path; /* NULL: no PiCtory file (raw addresses only) */
    bool cfg_loaded;
    struct fb_revpi_cfg cfg;
    char cfg_err[256];
    int64_t cycle_ns, watchdog_ns;
    struct rp_safe *safe;
    uint32_t nsafe;
    uint32_t lo, hi; /* used image range [lo, hi) */
    int64_t last_write_mono;
    bool wd_tripped;
    int64_t north_loss_ns;    /* north_loss=: 0 = off */
    int64_t north_down_since; /* monotonic; 0 while some sink is connected */
    bool north_tripped;
    bool warned_deferred;
    uint32_t seen_end; /* where the image ended at the last read (for the log) */
    uint8_t img[FB_REVPI_IMAGE_SIZE];
};

struct rp_conn {
    int fd;
    bool is_device; /* character device = piControl: bits via ioctl */
    bool readonly;
};

static const char *const revpi_schemes[] = {"revpi", NULL};

/* ------------------------------------------------------------- the seam */
/* Up to n bytes at off; *got tells how many there were before the end of
 * the image (fewer than n only when it ends inside the range). */
static int img_read_upto(struct rp_conn *rc, uint8_t *buf, uint32_t n, uint32_t off, uint32_t *got)
{
    *got = 0;
    while (*got < n) {
        ssize_t r = pread(rc->fd, buf + *got, n - *got, (off_t)(off + *got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return FB_EIO;
        if (r == 0) break; /* the end of the image */
        *got += (uint32_t)r;
    }
    return 0;
}

static int img_read(struct rp_conn *rc, uint8_t *buf, uint32_t n, uint32_t off)
{
    uint32_t got;
    int r = img_read_upto(rc, buf, n, off, &got);
    return r ? r : got == n ? 0 : FB_EIO;
}

static int img_write(struct rp_conn *rc, const uint8_t *buf, uint32_t n, uint32_t off)
{
    uint32_t put = 0;
    while (put < n) {
        ssize_t r = pwrite(rc->fd, buf + put, n - put, (off_t)(off + put));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return FB_EIO;
        put += (uint32_t)r;
    }
    return 0;
}

static int img_set_bit(struct rp_conn *rc, uint32_t off, uint8_t bit, bool v)
{
    if (rc->is_device) {
        struct rp_spi_value sv = {.address = (uint16_t)off, .bit = bit, .value = v ? 1 : 0};
        return ioctl(rc->fd, RP_KB_SET_VALUE, &sv) < 0 ? FB_EIO : 0;
    }
    uint8_t b;
    int rc2 = img_read(rc, &b, 1, off);
    if (rc2) return rc2;
    b = fb_revpi_bit_apply(b, bit, v);
    return img_write(rc, &b, 1, off);
}

/* ------------------------------------------------------------ helpers */
static int load_cfg(const char *path, struct fb_revpi_cfg *cfg, struct fb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fb_err_set(err, errno == ENOENT ? FB_ENOENT : FB_EIO, "PiCtory configuration %s: %s", path,
                          strerror(errno));
    char *buf = malloc(RP_MAX_RSC + 1);
    if (!buf) {
        fclose(f);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, RP_MAX_RSC + 1, f);
    bool bad = ferror(f);
    fclose(f);
    if (bad || n > RP_MAX_RSC) {
        free(buf);
        return fb_err_set(err, FB_EINVAL, "PiCtory configuration %s: %s", path,
                          bad ? "read error" : "larger than 16 MiB");
    }
    struct fb_err e = {0};
    int rc = fb_revpi_cfg_parse(buf, n, FB_REVPI_IMAGE_SIZE, cfg, &e);
    free(buf);
    if (rc) return fb_err_set(err, rc, "%s: %s", path, e.msg);
    return 0;
}

/* A config= path relative to the YAML file's directory (like tls: paths). */
static char *cfg_path_of(const struct fb_device *dev, const char *v)
{
    if (v[0] == '/' || !dev->gw || !dev->gw->cfg_path) return strdup(v);
    char *c = strdup(dev->gw->cfg_path);
    if (!c) return NULL;
    const char *dir = dirname(c);
    size_t n = strlen(dir) + strlen(v) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, v);
    free(c);
    return p;
}

static bool gateway_running(const struct fb_device *dev)
{
    /* The one-shot CLI builds a gateway it never runs: it never writes the
     * safe state (a `fieldbridge write` must not be undone by its close). */
    return fb_runtime_running(dev->gw);
}

static const char *devname(const struct fb_device *dev) { return dev->name ? dev->name : "revpi"; }

/* ------------------------------------------------------------ lifecycle */
static void revpi_device_free(struct fb_device *dev)
{
    struct rp_dev *d = dev->drv_dev;
    if (!d) return;
    fb_revpi_cfg_free(&d->cfg);
    free(d->cfg_path);
    free(d->safe);
    free(d);
    dev->drv_dev = NULL;
}

static int revpi_device_init(struct fb_device *dev, char **conn_key, struct fb_err *err)
{
    const char *path = dev->url.path;
    if (dev->url.host && dev->url.host[0])
        return fb_err_set(
            err, FB_EINVAL,
            "device %s: revpi URLs name a local file: revpi:///dev/piControl0 (three slashes), not host '%s'",
            devname(dev), dev->url.host);
    if (!path || !path[0] || !strcmp(path, "/"))
        return fb_err_set(err, FB_EINVAL,
                          "device %s: revpi URL needs the process image path, e.g. revpi:///dev/piControl0",
                          devname(dev));
    struct rp_dev *d = calloc(1, sizeof *d);
    if (!d) return fb_err_set(err, FB_ENOMEM, "out of memory");
    dev->drv_dev = d;
    const char *cfgv = RP_DEFAULT_CONFIG, *safev = NULL;
    for (int i = 0; i < dev->url.nq; i++) {
        const char *k = dev->url.q[i].k, *v = dev->url.q[i].v ? dev->url.q[i].v : "";
        if (!strcmp(k, "config")) {
            cfgv = v;
        } else if (!strcmp(k, "cycle") || !strcmp(k, "watchdog") || !strcmp(k, "north_loss")) {
            int64_t ns;
            if (fb_parse_duration(v, &ns) < 0 || ns < (k[0] == 'c' ? 1000000LL : 1000000LL) ||
                ns > 3600LL * 1000000000LL) {
                revpi_device_free(dev);
                return fb_err_set(err, FB_EINVAL, "device %s: %s=%s must be a duration from 1ms to 1h (e.g. 20ms, 5s)",
                                  devname(dev), k, v);
            }
            if (k[0] == 'c')
                d->cycle_ns = ns;
            else if (k[0] == 'w')
                d->watchdog_ns = ns;
            else
                d->north_loss_ns = ns;
        } else if (!strcmp(k, "safe")) {
            safev = v;
        } else if (!strcmp(k, "timeout") || !strcmp(k, "delay")) {
            /* taken by the core */
        } else {
            revpi_device_free(dev);
            return fb_err_set(
                err, FB_EINVAL,
                "device %s: unknown revpi option '%s' (valid: config, cycle, watchdog, north_loss, safe, timeout)",
                devname(dev), k);
        }
    }
    if (cfgv[0] && strcmp(cfgv, "none")) {
        d->cfg_path = cfg_path_of(dev, cfgv);
        if (!d->cfg_path) {
            revpi_device_free(dev);
            return fb_err_set(err, FB_ENOMEM, "out of memory");
        }
        struct fb_err e = {0};
        int rc = load_cfg(d->cfg_path, &d->cfg, &e);
        if (rc == 0) {
            d->cfg_loaded = true;
        } else if (rc == FB_ENOENT) {
            /* resolved when the connection opens on the target */
            snprintf(d->cfg_err, sizeof d->cfg_err, "%s", e.msg);
        } else {
            revpi_device_free(dev);
            return fb_err_set(err, rc, "device %s: %s", devname(dev), e.msg);
        }
    }
    if (safev) {
        struct fb_revpi_safe *items;
        uint32_t n;
        struct fb_err e = {0};
        if (fb_revpi_safe_parse(safev, &items, &n, &e) < 0) {
            revpi_device_free(dev);
            return fb_err_set(err, FB_EINVAL, "device %s: %s", devname(dev), e.msg);
        }
        d->safe = calloc(n ? n : 1, sizeof *d->safe);
        if (!d->safe) {
            free(items);
            revpi_device_free(dev);
            return fb_err_set(err, FB_ENOMEM, "out of memory");
        }
        d->nsafe = n;
        int rc = 0;
        for (uint32_t i = 0; i < n && rc == 0; i++) {
            d->safe[i].value = items[i].value;
            rc = fb_revpi_addr_parse(items[i].addr, &d->safe[i].a, &e);
            if (rc == 0 && d->cfg_loaded)
                rc = fb_revpi_addr_resolve(&d->safe[i].a, &d->cfg, &e);
            else if (rc == 0 && d->safe[i].a.name[0] && !d->cfg_path)
                rc = fb_err_set(&e, FB_EINVAL, "'%s' is a variable name but there is no config=", items[i].addr);
        }
        free(items);
        if (rc) {
            revpi_device_free(dev);
            return fb_err_set(err, FB_EINVAL, "device %s: safe: %s", devname(dev), e.msg);
        }
    }
    if (d->north_loss_ns && !d->nsafe)
        fb_warn(devname(dev), NULL, "north_loss=%.3gs without safe=: nothing to write when commands stop",
                d->north_loss_ns / 1e9);
    if (d->watchdog_ns && !d->nsafe)
        fb_warn(devname(dev), NULL, "watchdog=%.3gs without safe=: the watchdog has nothing to write",
                d->watchdog_ns / 1e9);
    size_t kn = strlen(path) + 7;
    char *key = malloc(kn);
    if (!key) {
        revpi_device_free(dev);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    snprintf(key, kn, "revpi:%s", path);
    *conn_key = key;
    return 0;
}

static int revpi_parse_address(struct fb_device *dev, struct fb_tag *tag, struct fb_err *err)
{
    struct rp_dev *d = dev->drv_dev;
    struct rp_tag *rt = calloc(1, sizeof *rt);
    if (!rt) return fb_err_set(err, FB_ENOMEM, "out of memory");
    char ab[FB_ATEXT_MAX];
    const char *text = fb_tag_addr_text(dev->gw, tag, ab);
    if (!text) text = "";
    struct fb_err e = {0};
    int rc = fb_revpi_addr_parse(text, &rt->a, &e);
    if (rc == 0 && rt->a.type != FB_T_NONE && tag->type != FB_T_NONE && rt->a.type != tag->type && rt->a.name[0])
        rc = fb_err_set(&e, FB_EINVAL, "'%s': type %s conflicts with type %s", text,
                        fb_type_name((enum fb_type)rt->a.type), fb_type_name((enum fb_type)tag->type));
    if (rc == 0 && tag->type != FB_T_NONE) rt->a.type = tag->type; /* type: overrides the raw kind */
    if (rc == 0 && rt->a.name[0]) {
        if (d && d->cfg_loaded) {
            rc = fb_revpi_addr_resolve(&rt->a, &d->cfg, &e);
        } else if (!d || !d->cfg_path) {
            rc = fb_err_set(
                &e, FB_EINVAL,
                "'%s' is a variable name but the URL has config=none; use a raw address (bit:70.3, word:10)", text);
        } else if (rt->a.type == FB_T_NONE) {
            rc = fb_err_set(
                &e, FB_EINVAL,
                "'%s': %s; without the PiCtory file the type of a variable is unknown: add type: (bool, uint16 …)",
                text, d->cfg_err);
        } else if (!d->warned_deferred) {
            d->warned_deferred = true;
            fb_warn(devname(dev), NULL, "%s: variable names are checked when the gateway starts", d->cfg_err);
        }
    }
    if (rc == 0 && rt->a.resolved && rt->a.type != FB_T_NONE)
        rc = fb_revpi_type_check((enum fb_type)rt->a.type, rt->a.loc.bits, &e);
    if (rc < 0) {
        free(rt);
        return fb_err_set(err, rc, "%s", e.msg);
    }
    if (tag->type == FB_T_NONE)
        tag->type = rt->a.type != FB_T_NONE ? rt->a.type : (uint8_t)fb_revpi_default_type(rt->a.loc.bits);
    if (tag->type == FB_T_NONE) {
        unsigned bits = rt->a.loc.bits;
        free(rt);
        return fb_err_set(err, FB_EINVAL, "'%s' has %u bits: give a type", text, bits);
    }
    rt->a.type = tag->type;
    if (rt->a.resolved && rt->a.name[0] && rt->a.io == FB_REVPI_INP && (tag->access & FB_ACC_WRITE)) {
        free(rt);
        return fb_err_set(err, FB_EINVAL, "'%s' is an input (inp) variable: it cannot be written (access: r)", text);
    }
    tag->addr = rt;
    return 0;
}

static void revpi_free_address(struct fb_tag *tag)
{
    free(tag->addr);
    tag->addr = NULL;
}

/* cycle= sets the period of every poll group of the device. */
static int revpi_plan(struct fb_device *dev, struct fb_group *g, struct fb_err *err)
{
    (void)err;
    struct rp_dev *d = dev->drv_dev;
    if (d && d->cycle_ns) g->period_ns = d->cycle_ns;
    g->plan = NULL;
    return 0;
}

static void revpi_plan_free(struct fb_group *g) { g->plan = NULL; }

/* Resolve what was deferred, convert the safe values, compute the range. */
static int prepare_dev(struct fb_device *dev, struct fb_err *err)
{
    struct rp_dev *d = dev->drv_dev;
    struct fb_tag *tags = dev->gw ? dev->gw->tags : NULL;
    bool need = false;
    for (uint32_t i = 0; tags && i < dev->ntags; i++) {
        struct rp_tag *rt = tags[dev->first_tag + i].addr;
        if (rt && !rt->a.resolved) need = true;
    }
    for (uint32_t i = 0; i < d->nsafe; i++)
        if (!d->safe[i].a.resolved) need = true;
    if (need && !d->cfg_loaded) {
        if (!d->cfg_path) return fb_err_set(err, FB_EINVAL, "variable names need config=");
        int rc = load_cfg(d->cfg_path, &d->cfg, err);
        if (rc) return rc;
        d->cfg_loaded = true;
    }
    d->lo = FB_REVPI_IMAGE_SIZE;
    d->hi = 0;
    for (uint32_t i = 0; tags && i < dev->ntags; i++) {
        struct fb_tag *t = &tags[dev->first_tag + i];
        struct rp_tag *rt = t->addr;
        if (!rt) continue;
        if (!rt->a.resolved) {
            struct fb_err e = {0};
            if (fb_revpi_addr_resolve(&rt->a, &d->cfg, &e) < 0)
                return fb_err_set(err, FB_EINVAL, "tag %s: %s (%s)", t->name, e.msg, d->cfg_path);
            if (rt->a.io == FB_REVPI_INP && (t->access & FB_ACC_WRITE))
                return fb_err_set(err, FB_EINVAL, "tag %s: '%s' is an input variable and cannot be written", t->name,
                                  rt->a.name);
        }
        uint32_t end = rt->a.loc.offset + fb_revpi_loc_bytes(&rt->a.loc);
        if (rt->a.loc.offset < d->lo) d->lo = rt->a.loc.offset;
        if (end > d->hi) d->hi = end;
    }
    if (d->hi <= d->lo) d->lo = d->hi = 0;
    for (uint32_t i = 0; i < d->nsafe; i++) {
        struct rp_safe *s = &d->safe[i];
        struct fb_err e = {0};
        if (!s->a.resolved && fb_revpi_addr_resolve(&s->a, &d->cfg, &e) < 0)
            return fb_err_set(err, FB_EINVAL, "safe: %s", e.msg);
        enum fb_type t = s->a.type != FB_T_NONE ? (enum fb_type)s->a.type : fb_revpi_default_type(s->a.loc.bits);
        if (t == FB_T_NONE) return fb_err_set(err, FB_EINVAL, "safe: '%s' needs a :TYPE", s->a.name);
        s->a.type = (uint8_t)t;
        if (fb_value_from_double(t, s->value, &s->v) < 0)
            return fb_err_set(err, FB_ERANGE, "safe: %g does not fit %s '%s'", s->value, fb_type_name(t),
                              s->a.name[0] ? s->a.name : "raw address");
        s->ready = true;
    }
    return 0;
}

static int write_loc(struct rp_conn *rc, const struct fb_revpi_loc *l, enum fb_type t, const struct fb_value *v,
                     struct fb_err *err)
{
    uint8_t buf[8];
    uint32_t n;
    bool bit;
    int r = fb_revpi_encode(l, t, v, buf, &n, &bit, err);
    if (r < 0) return r;
    if (rc->readonly) return fb_err_set(err, FB_EACCES, "the process image is open read-only");
    r = l->bits == 1 ? img_set_bit(rc, l->offset, l->bit, bit) : img_write(rc, buf, n, l->offset);
    if (r < 0) return fb_err_set(err, r, "write to the process image failed: %s", strerror(errno));
    return 0;
}

/* Write every safe value, in the order given.  Best effort: a failing item
 * is logged and the rest are still written. */
static void write_safe(struct fb_conn *c, struct fb_device *dev, const char *why)
{
    struct rp_dev *d = dev->drv_dev;
    struct rp_conn *rc = c->ctx;
    if (!d || !d->nsafe || !rc || rc->fd < 0) return;
    uint32_t ok = 0;
    for (uint32_t i = 0; i < d->nsafe; i++) {
        struct rp_safe *s = &d->safe[i];
        struct fb_err e = {0};
        if (!s->ready) continue;
        if (write_loc(rc, &s->a.loc, (enum fb_type)s->a.type, &s->v, &e) < 0) {
            char where[32];
            fb_revpi_loc_format(where, sizeof where, &s->a.loc);
            fb_error(devname(dev), s->a.name[0] ? s->a.name : where, "safe state not written: %s", e.msg);
        } else {
            ok++;
        }
    }
    if (!rc->is_device) fdatasync(rc->fd);
    fb_warn(devname(dev), NULL, "safe state written (%s): %u of %u outputs", why, ok, d->nsafe);
}

static int revpi_open(struct fb_conn *c, struct fb_err *err)
{
    if (!c->ndevs) return fb_err_set(err, FB_EINVAL, "no device");
    const char *path = c->devs[0]->url.path;
    uint32_t need = 0;
    for (uint32_t i = 0; i < c->ndevs; i++) {
        int rc = prepare_dev(c->devs[i], err);
        if (rc < 0) return rc;
        struct rp_dev *d = c->devs[i]->drv_dev;
        if (d->hi > need) need = d->hi;
        for (uint32_t k = 0; k < d->nsafe; k++) {
            uint32_t end = d->safe[k].a.loc.offset + fb_revpi_loc_bytes(&d->safe[k].a.loc);
            if (end > need) need = end;
        }
    }
    struct rp_conn *rc = calloc(1, sizeof *rc);
    if (!rc) return fb_err_set(err, FB_ENOMEM, "out of memory");
    rc->fd = open(path, O_RDWR | O_CLOEXEC);
    if (rc->fd < 0 && (errno == EACCES || errno == EROFS || errno == EPERM)) {
        rc->fd = open(path, O_RDONLY | O_CLOEXEC);
        rc->readonly = rc->fd >= 0;
    }
    if (rc->fd < 0) {
        int e = errno;
        free(rc);
        return fb_err_set(
            err, FB_EIO, "%s: %s%s", path, strerror(e),
            e == EACCES ? " (add the gateway's user to the group owning /dev/piControl0, see docs/revpi.md)" : "");
    }
    struct stat st;
    if (fstat(rc->fd, &st) < 0) {
        close(rc->fd);
        free(rc);
        return fb_err_set(err, FB_EIO, "%s: %s", path, strerror(errno));
    }
    rc->is_device = S_ISCHR(st.st_mode);
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < need) {
        close(rc->fd);
        free(rc);
        return fb_err_set(err, FB_EIO,
                          "%s is %lld bytes, but the configured addresses reach byte %u (a process image has %u)", path,
                          (long long)st.st_size, need, FB_REVPI_IMAGE_SIZE);
    }
    if (!rc->is_device && !S_ISREG(st.st_mode)) {
        close(rc->fd);
        free(rc);
        return fb_err_set(err, FB_EINVAL, "%s is neither the piControl device nor a regular file", path);
    }
    if (rc->readonly) fb_warn(c->devs[0]->name, NULL, "%s is read-only: writes and the safe state will fail", path);
    c->ctx = rc;
    int64_t now = fb_mono_ns();
    for (uint32_t i = 0; i < c->ndevs; i++) {
        struct rp_dev *d = c->devs[i]->drv_dev;
        d->last_write_mono = now;
        d->wd_tripped = false;
    }
    return 0;
}

static void revpi_close(struct fb_conn *c)
{
    struct rp_conn *rc = c->ctx;
    if (!rc) return;
    for (uint32_t i = 0; i < c->ndevs; i++) {
        struct fb_device *dev = c->devs[i];
        if (!gateway_running(dev)) continue;
        write_safe(c, dev, fb_runtime_stopping(dev->gw) ? "gateway stopping" : "connection closed");
    }
    if (rc->fd >= 0) close(rc->fd);
    free(rc);
    c->ctx = NULL;
}

static int revpi_read(struct fb_device *dev, struct fb_group *g, struct fb_batch *out)
{
    struct rp_dev *d = dev->drv_dev;
    struct rp_conn *rc = dev->conn ? dev->conn->ctx : NULL;
    if (!d || !rc) return FB_EIO;
    int64_t t0 = fb_mono_ns();
    if (d->watchdog_ns && !d->wd_tripped && gateway_running(dev) && t0 - d->last_write_mono >= d->watchdog_ns) {
        d->wd_tripped = true;
        char why[64];
        snprintf(why, sizeof why, "watchdog: no write for %.3gs", d->watchdog_ns / 1e9);
        write_safe(dev->conn, dev, why);
    }
    if (d->north_loss_ns && gateway_running(dev) && dev->gw->nsinks) {
        bool up = false;
        for (uint32_t i = 0; i < dev->gw->nsinks; i++)
            if (atomic_load(&dev->gw->sinks[i].m.connected)) up = true;
        if (up) {
            if (d->north_tripped) fb_info(devname(dev), NULL, "command source back: outputs follow commands again");
            d->north_down_since = 0;
            d->north_tripped = false;
        } else if (!d->north_down_since) {
            d->north_down_since = t0;
        } else if (!d->north_tripped && t0 - d->north_down_since >= d->north_loss_ns) {
            d->north_tripped = true;
            char why[80];
            snprintf(why, sizeof why, "command source lost: no northbound connection for %.3gs",
                     d->north_loss_ns / 1e9);
            write_safe(dev->conn, dev, why);
        }
    }
    uint32_t end = d->hi; /* the image's bytes we have: [lo, end) */
    if (d->hi > d->lo) {
        uint32_t got;
        int r = img_read_upto(rc, d->img + d->lo, d->hi - d->lo, d->lo, &got);
        if (r < 0) {
            atomic_fetch_add(&dev->m.errors, 1);
            return r;
        }
        end = d->lo + got;
    }
    if (end != d->seen_end) { /* the image got shorter than the addresses (or whole again) */
        if (end < d->hi)
            fb_warn(devname(dev), NULL,
                    "the process image ends at byte %u: tags at or past it are Bad "
                    "(BadNodeIdUnknown)",
                    end);
        else if (d->seen_end && d->seen_end < d->hi)
            fb_info(devname(dev), NULL, "the process image covers every tag again");
        d->seen_end = end;
    }
    int64_t now = fb_now_ns();
    struct fb_tag *tags = dev->gw->tags;
    for (uint32_t i = 0; i < g->ntags; i++) {
        struct fb_tag *t = &tags[fb_group_tag(g, i)];
        struct rp_tag *rt = t->addr;
        struct fb_value v = {.type = t->type};
        uint32_t q = FB_Q_GOOD;
        if (rt && rt->a.resolved && rt->a.loc.offset + fb_revpi_loc_bytes(&rt->a.loc) > end)
            q = FB_Q_BAD_NODE_UNKNOWN; /* past the end of the image: the item is refused */
        else if (!rt || !rt->a.resolved ||
                 fb_revpi_decode(d->img, 0, FB_REVPI_IMAGE_SIZE, &rt->a.loc, (enum fb_type)t->type, &v) < 0)
            q = FB_Q_BAD_CONFIG;
        if (q != FB_Q_GOOD) {
            atomic_fetch_add(&dev->m.errors, 1); /* every failed item counts (NE107) */
            memset(&v, 0, sizeof v);
            v.type = t->type;
        }
        fb_batch_add(out, t->id, q, now, &v);
    }
    int64_t rtt = fb_mono_ns() - t0;
    atomic_fetch_add(&dev->m.requests, 1);
    atomic_fetch_add(&dev->m.rtt_ns_sum, (uint64_t)rtt);
    atomic_fetch_add(&dev->m.rtt_count, 1);
    atomic_store(&dev->m.rtt_ns_last, (uint64_t)rtt);
    atomic_store(&dev->m.last_success_ns, now);
    return 0;
}

static int revpi_write(struct fb_device *dev, const struct fb_tag *t, const struct fb_value *v, struct fb_err *err)
{
    struct rp_dev *d = dev->drv_dev;
    struct rp_tag *rt = t->addr;
    struct rp_conn *rc = dev->conn ? dev->conn->ctx : NULL;
    const char *tn = t->name;
    if (!d || !rt || !rc) return fb_err_set(err, FB_EIO, "%s: device is not open", tn);
    if (!(t->access & FB_ACC_WRITE)) return fb_err_set(err, FB_EACCES, "%s is not writable", tn);
    if (!rt->a.resolved) return fb_err_set(err, FB_EINVAL, "%s: address not resolved", tn);
    if (rt->a.name[0] && rt->a.io == FB_REVPI_INP)
        return fb_err_set(err, FB_EACCES, "%s: '%s' is an input variable", tn, rt->a.name);
    int r = write_loc(rc, &rt->a.loc, (enum fb_type)t->type, v, err);
    if (r < 0) return r;
    d->last_write_mono = fb_mono_ns();
    if (d->wd_tripped) {
        d->wd_tripped = false;
        fb_info(devname(dev), NULL, "write received: watchdog re-armed");
    }
    return 0;
}

/* A config reload keeps the process image open (model.h): the device state
 * (image copy, watchdog, safe values) and the addresses stay with the
 * running model. */
static void revpi_adopt(struct fb_conn *c, struct fb_conn *old) { fb_adopt_swap(c, old, FB_ADOPT_DEV | FB_ADOPT_ADDR); }

const struct fb_driver fb_driver_revpi = {
    .name = "revpi",
    .schemes = revpi_schemes,
    .device_init = revpi_device_init,
    .device_free = revpi_device_free,
    .parse_address = revpi_parse_address,
    .free_address = revpi_free_address,
    .plan = revpi_plan,
    .plan_free = revpi_plan_free,
    .open = revpi_open,
    .read = revpi_read,
    .write = revpi_write,
    .close = revpi_close,
    .adopt = revpi_adopt,
    .browse = fb_revpi_browse,
};

/* ---------------------------------------------------------------- browse */
int fb_revpi_browse(const char *url_text, struct fb_browse *list, FILE *out, struct fb_err *err)
{
    struct fb_url u;
    int rc = fb_url_parse(url_text, &u, err);
    if (rc < 0) return rc;
    if (!u.scheme || strcmp(u.scheme, "revpi")) {
        fb_url_free(&u);
        return fb_err_set(err, FB_EINVAL, "not a revpi:// URL");
    }
    const char *cfgv = fb_url_get(&u, "config");
    if (!cfgv || !cfgv[0] || !strcmp(cfgv, "none")) cfgv = RP_DEFAULT_CONFIG;
    struct fb_revpi_cfg cfg;
    rc = load_cfg(cfgv, &cfg, err);
    if (rc < 0) {
        fb_url_free(&u);
        return rc;
    }
    uint8_t *img = calloc(1, FB_REVPI_IMAGE_SIZE); /* not static: the HTTP API browses from its own thread */
    if (!img) {
        fb_revpi_cfg_free(&cfg);
        fb_url_free(&u);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    bool have_img = false;
    const char *path = u.path && u.path[0] && strcmp(u.path, "/") ? u.path : NULL;
    if (path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n = pread(fd, img, FB_REVPI_IMAGE_SIZE, 0);
            if (n > 0) {
                memset(img + n, 0, FB_REVPI_IMAGE_SIZE - (size_t)n);
                have_img = true;
            }
            close(fd);
        }
    }
    if (out)
        fprintf(out, "# %s: %u devices, %u variables%s%s\n", cfgv, cfg.ndevs, cfg.nvars,
                have_img ? "; values from " : "", have_img ? path : "");
    for (uint32_t i = 0; i < cfg.ndevs && rc == 0; i++) {
        const struct fb_revpi_dev *dv = &cfg.devs[i];
        if (out)
            fprintf(out, "device %d %s (type %s, productType %d, offset %u%s%s)\n", dv->position, dv->name,
                    dv->type[0] ? dv->type : "?", dv->product_type, dv->offset,
                    dv->bmk[0] && strcmp(dv->bmk, dv->name) ? ", bmk " : "",
                    dv->bmk[0] && strcmp(dv->bmk, dv->name) ? dv->bmk : "");
        for (uint32_t k = dv->first_var; k < dv->first_var + dv->nvars; k++) {
            const struct fb_revpi_var *v = &cfg.vars[k];
            /* outputs are what a controller writes; inputs and memory are read */
            if (list && fb_browse_add(list, v->name, v->name, v->type, v->io == FB_REVPI_OUT ? FB_ACC_RW : FB_ACC_READ,
                                      v->comment[0] ? v->comment : NULL) < 0) {
                rc = fb_err_set(err, FB_ENOMEM, "out of memory");
                break;
            }
            if (!out) continue;
            char where[32], val[48] = "";
            fb_revpi_loc_format(where, sizeof where, &v->loc);
            enum fb_type t = (enum fb_type)v->type; /* the module's type (signed AIO values …) */
            if (have_img && t != FB_T_NONE) {
                struct fb_value fv;
                if (fb_revpi_decode(img, 0, FB_REVPI_IMAGE_SIZE, &v->loc, t, &fv) == 0) {
                    if (t == FB_T_BOOL)
                        snprintf(val, sizeof val, "%s", fv.b ? "true" : "false");
                    else if (fb_type_is_signed(t))
                        snprintf(val, sizeof val, "%" PRId64, fv.i);
                    else
                        snprintf(val, sizeof val, "%" PRIu64, fv.u);
                }
            }
            char line[512];
            int n =
                snprintf(line, sizeof line, "  %-28s %s  %-12s %-7s %-6s%s%s", v->name, fb_revpi_io_name(v->io), where,
                         t == FB_T_NONE ? "-" : fb_type_name(t), val, v->comment[0] ? "  # " : "", v->comment);
            if (n < 0) continue;
            size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
            while (len && line[len - 1] == ' ') len--;
            fprintf(out, "%.*s\n", (int)len, line);
        }
    }
    free(img);
    fb_revpi_cfg_free(&cfg);
    fb_url_free(&u);
    return rc;
}
