/* fleet.c — the gateway as a well-behaved member of a fleet (docs/fleet.md).
 *
 * Scale comes from the MQTT broker alone: every gateway listens on its own
 * command topic (<site>/_/_/<id>/command, carried by the MQTT sink, handed
 * over by the command router as a gateway command) and tells its state in
 * its retained status message.  This file is what acts on those commands
 * and keeps what the status reports about the gateway itself.
 *
 * Reload (SIGHUP, `systemctl reload`, {"cmd":"reload"}): the configuration
 * the gateway runs from is read and validated completely; an invalid one is
 * refused with every `file:line:col:` diagnostic (logged, answered, kept as
 * the last result) and the running one stays; a valid one is applied by
 * reload.c, which restarts only what changed.  Reloads run on the router
 * thread, one after the other, never beside a write.
 *
 * Remote configuration ({"cmd":"config"} with the YAML inline, or a URL and
 * its SHA-256): validated like a reload, refused if it would change the
 * gateway's id or state directory, staged as <state_dir>/config/pending.yaml,
 * applied, and watched for fleet.remote_config.health_check: every device
 * online and every sink connected before it is sampled every second over
 * the window (fleet/hwatch.h: once back after a restart it must stay so; a
 * drop longer than the grace, or flapping, ends the check at once) and must
 * be so at the end, else the previous configuration is applied again
 * (roll-back).  Only then it becomes
 * current.yaml, which a restart runs (the local file stays the fallback).  A
 * restart during the check rolls back by itself: pending.yaml is never run.
 * Relative paths in a remote configuration resolve in the local config's
 * directory, so secrets and certificates stay on the box.
 *
 * Lifecycle (health.h): online; maintenance (by command, kept across
 * restarts: polling goes on, writes and remote changes are refused);
 * decommissioned (by command with the gateway id as confirmation, kept
 * across restarts: nothing is polled); error while no sink is connected, or
 * no device online, for fleet.health.error_after; offline when stopped;
 * provisioning is for a provisioning flow that has not given the gateway its
 * identity yet (it polls nothing).
 *
 * The fleet thread samples the box (health.c) every min(status_interval,
 * 5 s), keeps the lifecycle's error state, asks the MQTT sink to publish the
 * status at once when something a fleet operator watches changed (state,
 * health, a device's or sink's connection, the clock), and ends a remote
 * configuration's health check.
 *
 * Extending it (device shadow, OTA): add the topic to fb_fleet_topics
 * (fleet_cfg.c) and a row to `commands` below, keyed by topic and "cmd".
 */
#include "core/fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/driver.h"
#include "core/fetch.h"
#include "core/fleet_cfg.h"
#include "core/health.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/plugin.h"
#include "core/reload.h"
#include "core/router.h"
#include "core/runtime_state.h"
#include "core/sinks.h"
#include "core/thread.h"
#include "fleet/hooks.h" /* fleet extensions (device shadow): docs/fleet.md */
#include "fleet/hwatch.h"
#include "fleet/ota.h"
#include "fleet/outbox.h"
#include "fleet/provision.h"
#include "fleet/shadow.h"

#define FLEET_TICK_NS 1000000000LL
/* A gateway command that arrives during start-up waits this long at most for
 * the fleet component (fb_fleet_start) before it is answered "starting". */
#define START_WAIT_NS 30000000000LL
#define SAMPLE_MAX_NS 5000000000LL

struct fb_fleet {
    struct fb_gateway *gw;
    char *local_path; /* the config named on the command line */
    char *local_dir;  /* its directory: every config's relative paths resolve there */
    int log_level, log_format;
    pthread_mutex_t mu; /* what follows, between the router thread and the fleet thread */
    /* the configuration running */
    bool remote;       /* a remote configuration (state_dir/config/current.yaml or pending.yaml) */
    char version[128]; /* "" = none */
    char sha256[65];
    int64_t applied_ns;
    char *last_json; /* the last reload's or remote configuration's result, an object */
    /* a remote configuration under its health check */
    bool trial, trial_asked;
    int64_t trial_end; /* monotonic */
    int64_t trial_end_utc;
    char trial_version[128], trial_sha[65];
    struct fb_hwatch *hw; /* what was healthy before, watched over the window (fleet/hwatch.h) */
    int64_t trial_next_sample; /* monotonic: the fleet thread samples hw once a second */
    /* lifecycle */
    bool maintenance, decommissioned, in_error;
    char maint_reason[160], error_reason[160];
    int64_t no_sink_since, no_dev_since; /* monotonic, 0 = all is well */
    /* a remote configuration being downloaded (by the fleet thread, so the
     * router thread stays free for writes); the answer goes out when it is applied */
    struct fb_cmd *fetch; /* the command to submit when the download ends (its payload: the request) */
    char *fetch_url, *fetch_ca;
    int64_t fetch_timeout_ns;
    uint64_t fetch_max;
    /* the fleet thread */
    pthread_t thr;
    bool started;
    bool ready; /* under mu: fb_fleet_start has finished (OTA and provisioning are up) */
    atomic_bool stop;
    pthread_cond_t cv;
    int64_t next_sample;
    uint64_t sig;
    /* fleet extensions: what the device shadow and OTA publish (drained by the MQTT sink); OTA */
    struct fb_outbox *outbox;
    struct fb_ota *ota;
    struct fb_prov *prov;
};

/* ------------------------------------------------------------------ files */
static char *read_all(const char *path, uint64_t max, size_t *len, struct fb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fb_err_set(err, errno == ENOENT ? FB_ENOENT : FB_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 8192, n = 0;
    char *p = malloc(cap);
    while (p) {
        if (n + 4096 + 1 > cap) {
            char *q = realloc(p, cap * 2);
            if (!q) break;
            p = q;
            cap *= 2;
        }
        size_t r = fread(p + n, 1, cap - n - 1, f);
        n += r;
        if (n > max) {
            fb_err_set(err, FB_ERANGE, "%s: larger than %llu bytes", path, (unsigned long long)max);
            free(p);
            p = NULL;
            break;
        }
        if (r == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!p) return NULL;
    if (bad) {
        free(p);
        fb_err_set(err, FB_EIO, "%s: read error", path);
        return NULL;
    }
    p[n] = 0;
    *len = n;
    return p;
}

/* Written whole or not at all: a temporary file, fsync, rename, fsync of the directory. */
static int write_atomic(const char *path, const void *p, size_t len, struct fb_err *err)
{
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return fb_err_set(err, FB_EIO, "%s: %s", tmp, strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, (const char *)p + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    bool ok = off == len && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return fb_err_set(err, FB_EIO, "%s: %s", path, strerror(e));
    }
    char dir[1100];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        int dfd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return 0;
}

/* state_dir/<name>, "" when there is no state directory. */
static void state_path(const struct fb_gateway *gw, const char *name, char *out, size_t n)
{
    const char *d = gw->fleet ? gw->fleet->state_dir : NULL;
    if (!d) {
        out[0] = 0;
        return;
    }
    snprintf(out, n, "%s/%s", d, name);
}

static void make_dirs(const struct fb_gateway *gw)
{
    const char *d = gw->fleet ? gw->fleet->state_dir : NULL;
    if (!d) return;
    char p[1100];
    if (mkdir(d, 0750) < 0 && errno != EEXIST) fb_warn(NULL, NULL, "fleet: cannot create %s: %s", d, strerror(errno));
    snprintf(p, sizeof p, "%s/config", d);
    if (mkdir(p, 0750) < 0 && errno != EEXIST) fb_warn(NULL, NULL, "fleet: cannot create %s: %s", p, strerror(errno));
}

static bool exists(const char *path) { return path[0] && access(path, F_OK) == 0; }

/* ---------------------------------------------------------------- loading */
/* Load a config from text (a remote one) or from the local file, with every
 * diagnostic logged and collected as a JSON array of strings in `diags`
 * (may be NULL).  0 and *out, or FB_EINVAL. */
static int load_config(struct fb_fleet *f, const char *text, size_t len, const char *name, struct fb_gateway **out,
                       struct fb_buf *diags)
{
    char *buf = NULL;
    size_t blen = 0;
    FILE *diag = open_memstream(&buf, &blen);
    struct fb_config_opts o = {.strict = true, .diag = diag ? diag : stderr};
    int rc = text ? fb_config_load_mem(name, text, len, &o, out) : fb_config_load(f->local_path, &o, out);
    if (diag) fclose(diag);
    bool first = true;
    if (diags) fb_buf_putc(diags, '[');
    for (char *line = buf, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (*line) {
            fb_log(rc < 0 ? FB_LOG_ERROR : FB_LOG_WARN, NULL, NULL, "config: %s", line);
            if (diags) {
                if (!first) fb_buf_putc(diags, ',');
                fb_json_cstr(diags, line);
                first = false;
            }
        }
        if (!nl) break;
    }
    if (diags) fb_buf_putc(diags, ']');
    free(buf);
    return rc;
}

/* The name a remote configuration has in messages: in the local config's
 * directory, so that its relative paths resolve there. */
static void remote_name(const struct fb_fleet *f, const char *version, char *out, size_t n)
{
    snprintf(out, n, "%s/[remote configuration%s%.100s]", f->local_dir, version && *version ? " " : "",
             version ? version : "");
}

/* version and sha256 of the kept remote configuration (config/current.json). */
static void read_meta(const char *path, char *version, size_t vlen, char *sha, size_t slen)
{
    version[0] = sha[0] = 0;
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return;
    const char *v = json_string_value(json_object_get(j, "version"));
    const char *s = json_string_value(json_object_get(j, "sha256"));
    if (v) snprintf(version, vlen, "%s", v);
    if (s) snprintf(sha, slen, "%s", s);
    json_decref(j);
}

static void write_meta(const char *path, const char *version, const char *sha, const char *extra)
{
    struct fb_buf b;
    fb_buf_init(&b);
    char ts[40];
    fb_fmt_time(ts, fb_now_ns());
    fb_buf_puts(&b, "{\"version\":");
    fb_json_cstr(&b, version);
    fb_buf_puts(&b, ",\"sha256\":");
    fb_json_cstr(&b, sha);
    fb_buf_puts(&b, ",\"saved\":");
    fb_json_cstr(&b, ts);
    if (extra) fb_buf_puts(&b, extra);
    fb_buf_puts(&b, "}\n");
    struct fb_err e = {0};
    if (write_atomic(path, b.p, b.len, &e) < 0) fb_warn(NULL, NULL, "fleet: %s", e.msg);
    fb_buf_free(&b);
}

/* -------------------------------------------------------------- the status */
/* The status's "config" object: what runs, what is on trial, the last result. */
static void publish_config(struct fb_fleet *f)
{
    struct fb_gateway *gw = f->gw;
    struct fb_buf b;
    fb_buf_init(&b);
    char ts[40];
    pthread_mutex_lock(&f->mu);
    fb_buf_puts(&b, "{\"version\":");
    if (f->version[0])
        fb_json_cstr(&b, f->version);
    else
        fb_buf_puts(&b, "null");
    fb_buf_puts(&b, f->remote ? ",\"source\":\"remote\"" : ",\"source\":\"file\"");
    fb_buf_puts(&b, ",\"path\":");
    fb_json_cstr(&b, gw->cfg_path ? gw->cfg_path : "");
    fb_buf_puts(&b, ",\"sha256\":");
    fb_json_cstr(&b, f->sha256);
    fb_fmt_time(ts, f->applied_ns);
    fb_buf_puts(&b, ",\"applied\":");
    fb_json_cstr(&b, ts);
    fb_buf_puts(&b, ",\"remote\":");
    fb_buf_puts(&b, gw->fleet && gw->fleet->remote_config ? "true" : "false");
    if (f->trial) {
        fb_fmt_time(ts, f->trial_end_utc);
        fb_buf_puts(&b, ",\"trial\":{\"version\":");
        fb_json_cstr(&b, f->trial_version);
        fb_buf_puts(&b, ",\"until\":");
        fb_json_cstr(&b, ts);
        fb_buf_putc(&b, '}');
    }
    if (f->last_json) {
        fb_buf_puts(&b, ",\"last\":");
        fb_buf_puts(&b, f->last_json);
    }
    fb_buf_putc(&b, '}');
    pthread_mutex_unlock(&f->mu);
    fb_buf_cstr(&b);
    if (gw->rt) {
        pthread_mutex_lock(&gw->rt->status_mu);
        free(gw->rt->config_json);
        gw->rt->config_json = b.p;
        pthread_mutex_unlock(&gw->rt->status_mu);
        fb_status_changed(gw);
    } else {
        fb_buf_free(&b);
    }
}

/* The last result: {"action","ok","ts",…extra members} (extra: ",\"x\":…"). */
static void set_last(struct fb_fleet *f, const char *action, bool ok, const char *version, const char *error,
                     const char *extra)
{
    struct fb_buf b;
    fb_buf_init(&b);
    char ts[40];
    fb_fmt_time(ts, fb_now_ns());
    fb_buf_puts(&b, "{\"action\":");
    fb_json_cstr(&b, action);
    fb_buf_puts(&b, ok ? ",\"ok\":true" : ",\"ok\":false");
    fb_buf_puts(&b, ",\"ts\":");
    fb_json_cstr(&b, ts);
    if (version && *version) {
        fb_buf_puts(&b, ",\"version\":");
        fb_json_cstr(&b, version);
    }
    if (error) {
        fb_buf_puts(&b, ",\"error\":");
        fb_json_cstr(&b, error);
    }
    if (extra) fb_buf_puts(&b, extra);
    fb_buf_putc(&b, '}');
    fb_buf_cstr(&b);
    pthread_mutex_lock(&f->mu);
    free(f->last_json);
    f->last_json = b.p;
    pthread_mutex_unlock(&f->mu);
    char path[1100];
    state_path(f->gw, "config/last-result.json", path, sizeof path);
    if (path[0]) {
        struct fb_err e = {0};
        if (write_atomic(path, b.p, b.len, &e) < 0) fb_warn(NULL, NULL, "fleet: %s", e.msg);
    }
    if (f->gw->rt) {
        if (ok)
            atomic_fetch_add(&f->gw->rt->reloads_ok, 1);
        else
            atomic_fetch_add(&f->gw->rt->reloads_failed, 1);
    }
    publish_config(f);
}

/* The lifecycle state from what is known (decommissioned > maintenance > error > online). */
static void update_state(struct fb_fleet *f)
{
    struct fb_rt *rt = f->gw->rt;
    if (!rt) return;
    pthread_mutex_lock(&f->mu);
    int st = FB_GW_ONLINE;
    const char *why = "";
    if (f->decommissioned)
        st = FB_GW_DECOMMISSIONED;
    else if (f->maintenance)
        st = FB_GW_MAINTENANCE, why = f->maint_reason;
    else if (f->in_error)
        st = FB_GW_ERROR, why = f->error_reason;
    if (atomic_load(&rt->gw_state) == FB_GW_PROVISIONING && !f->decommissioned) st = FB_GW_PROVISIONING;
    pthread_mutex_lock(&rt->status_mu);
    int old = atomic_exchange(&rt->gw_state, st);
    bool changed = old != st || strcmp(rt->gw_state_reason, why) != 0;
    snprintf(rt->gw_state_reason, sizeof rt->gw_state_reason, "%s", why);
    pthread_mutex_unlock(&rt->status_mu);
    pthread_mutex_unlock(&f->mu);
    if (old != st)
        fb_log(st == FB_GW_ERROR ? FB_LOG_WARN : FB_LOG_INFO, NULL, NULL, "gateway state: %s → %s%s%s",
               fb_gw_state_name(old), fb_gw_state_name(st), why[0] ? ": " : "", why);
    if (changed) fb_status_changed(f->gw);
}

/* info.capabilities: what this binary and this config can do. */
static void publish_caps(struct fb_fleet *f)
{
    struct fb_gateway *gw = f->gw;
    struct fb_buf b;
    fb_buf_init(&b);
    fb_buf_puts(&b, "{\"drivers\":[");
    size_t n;
    const struct fb_scheme_info *si = fb_schemes(&n);
    const struct fb_driver *seen[32];
    size_t nseen = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t k = 0; k < nseen; k++) dup = dup || seen[k] == si[i].drv;
        if (dup || nseen == 32) continue;
        seen[nseen++] = si[i].drv;
        if (nseen > 1) fb_buf_putc(&b, ',');
        fb_json_cstr(&b, si[i].drv->name);
    }
    fb_buf_puts(&b, "],\"sinks\":[");
    const struct fb_sink *const *sk = fb_sinks(&n);
    for (size_t i = 0; i < n; i++) {
        if (i) fb_buf_putc(&b, ',');
        fb_json_cstr(&b, sk[i]->name);
    }
    fb_buf_puts(&b, "],\"commands\":[\"reload\",\"status\",\"maintenance\",\"decommission\",\"recommission\"");
    if (gw->fleet && gw->fleet->remote_config) fb_buf_puts(&b, ",\"config\"");
    fb_buf_puts(&b, "]}");
    fb_buf_cstr(&b);
    if (gw->rt) {
        pthread_mutex_lock(&gw->rt->status_mu);
        free(gw->rt->caps_json);
        gw->rt->caps_json = b.p;
        pthread_mutex_unlock(&gw->rt->status_mu);
    } else {
        fb_buf_free(&b);
    }
}

/* ------------------------------------------------------------------ reload */
/* The running configuration becomes `nw` (validated).  The report of what
 * changed goes to `changes` (an object, may be NULL).  0 or an error. */
static int apply(struct fb_fleet *f, struct fb_gateway *nw, struct fb_buf *changes, struct fb_err *err)
{
    struct fb_gateway *gw = f->gw;
    int rc = fb_reload_apply(gw, nw, changes, err);
    fb_gateway_free(nw); /* what the gateway no longer uses, either way */
    if (rc < 0) return rc;
    /* the new config's logging, unless the command line chose */
    fb_log_init(f->log_level >= 0 ? f->log_level : gw->log_level, f->log_format >= 0 ? f->log_format : gw->log_format);
    make_dirs(gw);
    publish_caps(f);
    return 0;
}

/* Which configuration the gateway runs from: the kept remote one, else the
 * local file.  Loads it into *out (diagnostics into diags). */
static int load_running_source(struct fb_fleet *f, struct fb_gateway **out, struct fb_buf *diags, bool *remote,
                               char *version, char *sha, struct fb_err *err)
{
    char cur[1100], meta[1100];
    state_path(f->gw, "config/current.yaml", cur, sizeof cur);
    state_path(f->gw, "config/current.json", meta, sizeof meta);
    size_t len = 0;
    char *text = NULL;
    *remote = false;
    if (exists(cur)) {
        uint64_t max = f->gw->fleet ? f->gw->fleet->max_config_bytes : 1u << 20;
        struct fb_err e = {0};
        text = read_all(cur, max, &len, &e);
        if (!text) fb_warn(NULL, NULL, "fleet: %s: running the local configuration instead", e.msg);
    }
    int rc;
    if (text) {
        char name[1200];
        read_meta(meta, version, 128, sha, 65);
        remote_name(f, version, name, sizeof name);
        fb_sha256_hex(text, len, sha);
        rc = load_config(f, text, len, name, out, diags);
        *remote = true;
        free(text);
    } else {
        struct fb_err e = {0};
        text = read_all(f->local_path, 64u << 20, &len, &e);
        if (text) fb_sha256_hex(text, len, sha);
        free(text);
        rc = load_config(f, NULL, 0, NULL, out, diags);
        version[0] = 0;
    }
    if (rc < 0) return fb_err_set(err, rc, "the configuration is not valid; the running one stays");
    if (!*remote && (*out)->cfg_version) snprintf(version, 128, "%s", (*out)->cfg_version);
    return 0;
}

/* {"cmd":"reload"} and SIGHUP. */
static bool do_reload(struct fb_fleet *f, const char *source, struct fb_buf *resp)
{
    struct fb_gateway *nw = NULL;
    struct fb_buf diags, changes;
    fb_buf_init(&diags);
    fb_buf_init(&changes);
    struct fb_err err = {0};
    bool remote = false, ok = false;
    char version[128] = "", sha[65] = "";
    fb_info(NULL, NULL, "reload requested by %s", source);
    if (f->trial) {
        fb_err_set(&err, FB_EAGAIN, "a remote configuration (%s) is being checked until it is kept or rolled back",
                   f->trial_version);
    } else if (f->decommissioned) {
        fb_err_set(&err, FB_EACCES, "the gateway is decommissioned: recommission it first");
    } else if (load_running_source(f, &nw, &diags, &remote, version, sha, &err) == 0) {
        if (apply(f, nw, &changes, &err) == 0) {
            pthread_mutex_lock(&f->mu);
            f->remote = remote;
            snprintf(f->version, sizeof f->version, "%s", version);
            snprintf(f->sha256, sizeof f->sha256, "%s", sha);
            f->applied_ns = fb_now_ns();
            pthread_mutex_unlock(&f->mu);
            ok = true;
        }
    }
    fb_buf_cstr(&diags);
    fb_buf_cstr(&changes);
    struct fb_buf extra;
    fb_buf_init(&extra);
    fb_buf_printf(&extra, ",\"source\":");
    fb_json_cstr(&extra, source);
    if (ok && changes.len) fb_buf_printf(&extra, ",\"changes\":%s", changes.p);
    if (!ok && diags.len > 2) fb_buf_printf(&extra, ",\"errors\":%s", diags.p);
    fb_buf_cstr(&extra);
    if (ok)
        fb_info(NULL, NULL, "reload: applied (%s)", changes.p ? changes.p : "");
    else
        fb_error(NULL, NULL, "reload refused: %s", err.msg);
    set_last(f, "reload", ok, version, ok ? NULL : err.msg, extra.p);
    if (!ok) fb_buf_puts(resp, ",\"error\":"), fb_json_cstr(resp, err.msg);
    fb_buf_puts(resp, extra.p ? extra.p : "");
    fb_buf_free(&extra);
    fb_buf_free(&diags);
    fb_buf_free(&changes);
    return ok;
}

/* ------------------------------------------------------- remote configuration */
/* What is healthy now, by name (devices online, sinks connected): watched
 * over the health check's window (model read lock held). */
static void baseline(struct fb_fleet *f)
{
    struct fb_gateway *gw = f->gw;
    struct fb_hwatch *hw = fb_hwatch_new();
    for (uint32_t i = 0; hw && i < gw->ndevs; i++)
        if (atomic_load(&gw->devs[i].state) == FB_DEV_ONLINE) fb_hwatch_add(hw, false, gw->devs[i].name);
    for (uint32_t i = 0; hw && i < gw->nsinks; i++)
        if (atomic_load(&gw->sinks[i].m.connected)) fb_hwatch_add(hw, true, gw->sinks[i].name);
    pthread_mutex_lock(&f->mu);
    fb_hwatch_free(f->hw);
    f->hw = hw;
    pthread_mutex_unlock(&f->mu);
}

/* Back to what ran before the trial: the kept remote configuration, or the local file. */
static int rollback(struct fb_fleet *f, struct fb_err *err)
{
    struct fb_gateway *nw = NULL;
    bool remote;
    char version[128], sha[65];
    if (load_running_source(f, &nw, NULL, &remote, version, sha, err) < 0) return err->code;
    int rc = apply(f, nw, NULL, err);
    if (rc < 0) return rc;
    pthread_mutex_lock(&f->mu);
    f->remote = remote;
    snprintf(f->version, sizeof f->version, "%s", version);
    snprintf(f->sha256, sizeof f->sha256, "%s", sha);
    f->applied_ns = fb_now_ns();
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static void trial_clear(struct fb_fleet *f)
{
    char p[1100];
    state_path(f->gw, "config/pending.yaml", p, sizeof p);
    if (p[0]) unlink(p);
    state_path(f->gw, "config/pending.json", p, sizeof p);
    if (p[0]) unlink(p);
    pthread_mutex_lock(&f->mu);
    f->trial = f->trial_asked = false;
    pthread_mutex_unlock(&f->mu);
}

/* The health check's end (the fleet thread asks; router thread): keep or roll back. */
static void trial_end(struct fb_fleet *f)
{
    if (!f->trial) return;
    char failed[600] = "";
    fb_model_rdlock(f->gw);
    pthread_mutex_lock(&f->mu);
    if (f->hw) fb_hwatch_final(f->hw, f->gw, failed, sizeof failed);
    pthread_mutex_unlock(&f->mu);
    fb_model_unlock(f->gw);
    char version[128];
    snprintf(version, sizeof version, "%s", f->trial_version);
    if (!failed[0]) {
        char cur[1100], prev[1100], pend[1100], meta[1100];
        state_path(f->gw, "config/current.yaml", cur, sizeof cur);
        state_path(f->gw, "config/previous.yaml", prev, sizeof prev);
        state_path(f->gw, "config/pending.yaml", pend, sizeof pend);
        state_path(f->gw, "config/current.json", meta, sizeof meta);
        if (exists(cur) && rename(cur, prev) < 0)
            fb_warn(NULL, NULL, "fleet: cannot keep %s as %s: %s", cur, prev, strerror(errno));
        if (rename(pend, cur) < 0) {
            char why[sizeof cur + 200];
            snprintf(why, sizeof why, "cannot keep it: %s: %s (it runs until the next restart)", cur, strerror(errno));
            fb_error(NULL, NULL, "remote configuration %s: %s", version, why);
            trial_clear(f);
            set_last(f, "config", false, version, why, NULL);
            return;
        }
        write_meta(meta, version, f->trial_sha, NULL);
        trial_clear(f);
        fb_info(NULL, NULL, "remote configuration %s passed its health check: kept", version);
        set_last(f, "config", true, version, NULL, ",\"health_check\":\"passed\"");
        return;
    }
    fb_warn(NULL, NULL, "remote configuration %s failed its health check (%s): rolling back", version, failed);
    trial_clear(f);
    char why[700];
    snprintf(why, sizeof why, "health check failed: %s", failed);
    struct fb_err e = {0};
    if (rollback(f, &e) < 0) {
        pthread_mutex_lock(&f->mu);
        f->in_error = true;
        snprintf(f->error_reason, sizeof f->error_reason, "roll-back failed: %.130s", e.msg);
        pthread_mutex_unlock(&f->mu);
        update_state(f);
        set_last(f, "config", false, version, why, ",\"rolled_back\":false");
        return;
    }
    set_last(f, "config", false, version, why, ",\"rolled_back\":true");
}

/* {"cmd":"config","version":…,"config":"<yaml>"} or {…,"url":…,"sha256":…}. */
#define DEFERRED 2 /* the answer comes later (a download) */

static int defer_fetch(struct fb_fleet *f, const struct fb_cmd *cmd, const char *url, struct fb_err *err);

static int do_config(struct fb_fleet *f, const struct fb_cmd *cmd, json_t *root, struct fb_buf *resp)
{
    struct fb_gateway *gw = f->gw;
    const struct fb_fleet_cfg *fc = gw->fleet;
    const char *cversion = json_string_value(json_object_get(root, "version"));
    const char *inline_text = json_string_value(json_object_get(root, "config"));
    const char *url = json_string_value(json_object_get(root, "url"));
    const char *fetched = json_string_value(json_object_get(root, "fetched_from")); /* the download came back */
    if (fetched && cmd->qos >= 0) fetched = NULL; /* only the gateway itself says so */
    if (fetched) url = NULL;
    const char *want_sha = json_string_value(json_object_get(root, "sha256"));
    char version[128];
    snprintf(version, sizeof version, "%s", cversion ? cversion : "");
    struct fb_err err = {0};
    struct fb_buf diags, changes;
    fb_buf_init(&diags);
    fb_buf_init(&changes);
    char *text = NULL;
    size_t len = 0;
    char sha[65] = "";
    bool ok = false;
    struct fb_gateway *nw = NULL;

    /* off, then what is wrong with the request, then why not now */
    if (!fc || !fc->remote_config || !fc->state_dir) {
        fb_err_set(&err, FB_EACCES, "remote configuration is off (fleet.remote_config with fleet.state_dir)");
    } else if (fetched && json_is_string(json_object_get(root, "error"))) {
        fb_err_set(&err, FB_EIO, "%s", json_string_value(json_object_get(root, "error")));
    } else if (!!inline_text == !!url) {
        fb_err_set(&err, FB_EINVAL, "give either \"config\" (the YAML text) or \"url\" with \"sha256\"");
    } else if (url && !want_sha) {
        fb_err_set(&err, FB_EINVAL, "a configuration by \"url\" needs its \"sha256\"");
    } else if (want_sha && (strlen(want_sha) != 64 || strspn(want_sha, "0123456789abcdefABCDEF") != 64)) {
        fb_err_set(&err, FB_EINVAL, "\"sha256\" must be 64 hex digits");
    } else if (f->maintenance || f->decommissioned) {
        fb_err_set(&err, FB_EACCES, "the gateway is in %s: remote changes are refused",
                   f->maintenance ? "maintenance" : "decommissioned state");
    } else if (f->trial) {
        fb_err_set(&err, FB_EAGAIN, "remote configuration %s is being checked: send the next one after",
                   f->trial_version);
    } else if (f->fetch && !fetched) {
        fb_err_set(&err, FB_EAGAIN, "a remote configuration is being downloaded: send the next one after");
    } else if (inline_text) {
        len = json_string_length(json_object_get(root, "config"));
        if (len > fc->max_config_bytes)
            fb_err_set(&err, FB_ERANGE, "the configuration is larger than %llu bytes (fleet.remote_config.max_size)",
                       (unsigned long long)fc->max_config_bytes);
        else if (strlen(inline_text) != len)
            fb_err_set(&err, FB_EINVAL, "the configuration text contains a NUL character");
        else if (!(text = malloc(len + 1)))
            fb_err_set(&err, FB_ENOMEM, "out of memory");
        else
            memcpy(text, inline_text, len + 1);
    } else if (defer_fetch(f, cmd, url, &err) == 0) {
        fb_info(NULL, NULL, "remote configuration %s: downloading %s", version, url);
        return DEFERRED;
    }
    if (text) {
        fb_sha256_hex(text, len, sha);
        if (want_sha && strcasecmp(want_sha, sha) != 0) {
            fb_err_set(&err, FB_EACCES, "SHA-256 mismatch: got %s, expected %s", sha, want_sha);
        } else {
            char pend[1100], name[1200];
            state_path(gw, "config/pending.yaml", pend, sizeof pend);
            make_dirs(gw);
            remote_name(f, version, name, sizeof name);
            if (load_config(f, text, len, name, &nw, &diags) < 0) {
                fb_err_set(&err, FB_EINVAL, "the configuration is not valid");
            } else if (strcmp(nw->id ? nw->id : "", gw->id ? gw->id : "") != 0) {
                fb_err_set(&err, FB_EACCES, "gateway.id cannot change by remote configuration (%s → %s)", gw->id,
                           nw->id);
            } else if (!nw->fleet || !nw->fleet->state_dir || strcmp(nw->fleet->state_dir, fc->state_dir) != 0 ||
                       !nw->fleet->remote_config) {
                fb_err_set(&err, FB_EACCES,
                           "a remote configuration must keep fleet.state_dir (%s) and fleet.remote_config",
                           fc->state_dir);
            } else if (nw->cfg_version && cversion && strcmp(nw->cfg_version, cversion) != 0) {
                fb_err_set(&err, FB_EINVAL, "version mismatch: the command says %s, the file's version: is %s",
                           cversion, nw->cfg_version);
            } else {
                if (!version[0] && nw->cfg_version) snprintf(version, sizeof version, "%s", nw->cfg_version);
                char meta[1100], extra[300];
                state_path(gw, "config/pending.json", meta, sizeof meta);
                snprintf(extra, sizeof extra, ",\"source\":\"%s\"", fetched ? "url" : "inline");
                if (write_atomic(pend, text, len, &err) == 0) {
                    write_meta(meta, version, sha, extra);
                    fb_model_rdlock(gw);
                    baseline(f);
                    fb_model_unlock(gw);
                    int64_t hc = fc->health_check_ns;
                    if (apply(f, nw, &changes, &err) == 0) {
                        ok = true;
                        pthread_mutex_lock(&f->mu);
                        f->remote = true;
                        snprintf(f->version, sizeof f->version, "%s", version);
                        snprintf(f->sha256, sizeof f->sha256, "%s", sha);
                        f->applied_ns = fb_now_ns();
                        f->trial = true;
                        f->trial_asked = false;
                        f->trial_end = fb_mono_ns() + hc;
                        f->trial_next_sample = fb_mono_ns() + FLEET_TICK_NS;
                        f->trial_end_utc = fb_now_ns() + hc;
                        snprintf(f->trial_version, sizeof f->trial_version, "%s", version);
                        snprintf(f->trial_sha, sizeof f->trial_sha, "%s", sha);
                        pthread_mutex_unlock(&f->mu);
                    } else {
                        unlink(pend);
                        unlink(meta);
                    }
                    nw = NULL; /* apply freed it */
                }
            }
        }
    }
    fb_gateway_free(nw);
    free(text);
    fc = gw->fleet; /* the new model's, when it was applied (the old one is freed) */
    fb_buf_cstr(&diags);
    fb_buf_cstr(&changes);
    struct fb_buf extra;
    fb_buf_init(&extra);
    fb_buf_puts(&extra, ",\"source\":");
    fb_json_cstr(&extra, cmd->source);
    if (sha[0]) fb_buf_printf(&extra, ",\"sha256\":\"%s\"", sha);
    if (ok) {
        fb_buf_printf(&extra, ",\"result\":\"applied\",\"health_check_s\":%.3g", (double)fc->health_check_ns / 1e9);
        if (changes.len) fb_buf_printf(&extra, ",\"changes\":%s", changes.p);
    } else if (diags.len > 2) {
        fb_buf_printf(&extra, ",\"errors\":%s", diags.p);
    }
    fb_buf_cstr(&extra);
    if (ok) {
        fb_info(NULL, NULL, "remote configuration %s applied; health check for %.3gs", version,
                (double)fc->health_check_ns / 1e9);
        set_last(f, "config", true, version, NULL, ",\"health_check\":\"running\"");
        publish_config(f);
        if (fc->health_check_ns <= 0) trial_end(f);
    } else {
        fb_error(NULL, NULL, "remote configuration %s refused: %s", version, err.msg);
        set_last(f, "config", false, version, err.msg, extra.p);
        fb_buf_puts(resp, ",\"error\":");
        fb_json_cstr(resp, err.msg);
    }
    fb_buf_puts(resp, extra.p);
    fb_buf_free(&extra);
    fb_buf_free(&diags);
    fb_buf_free(&changes);
    return ok;
}

/* A configuration by URL: the fleet thread downloads it and submits the
 * command again with the text (and the original command's answer path). */
static int defer_fetch(struct fb_fleet *f, const struct fb_cmd *cmd, const char *url, struct fb_err *err)
{
    const struct fb_fleet_cfg *fc = f->gw->fleet;
    struct fb_cmd *c = calloc(1, sizeof *c);
    if (!c) return fb_err_set(err, FB_ENOMEM, "out of memory");
    c->payload = malloc(cmd->len + 1);
    c->response_topic = cmd->response_topic ? strdup(cmd->response_topic) : NULL;
    c->corr = cmd->corr && cmd->corr_len > 0 ? malloc((size_t)cmd->corr_len) : NULL;
    if (!c->payload || (cmd->response_topic && !c->response_topic) || (cmd->corr && cmd->corr_len > 0 && !c->corr)) {
        fb_cmd_free(c);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    memcpy(c->payload, cmd->payload, cmd->len);
    c->payload[cmd->len] = 0;
    c->len = cmd->len;
    if (c->corr) memcpy(c->corr, cmd->corr, (size_t)cmd->corr_len);
    c->corr_len = cmd->corr && cmd->corr_len > 0 ? cmd->corr_len : 0;
    c->kind = FB_CMD_GATEWAY;
    c->device = UINT32_MAX;
    c->qos = -1;
    snprintf(c->topic, sizeof c->topic, "%s", cmd->topic);
    snprintf(c->source, sizeof c->source, "%s", cmd->source);
    /* the same sender: it passes commands.allow / commands.gateway.config again */
    snprintf(c->via, sizeof c->via, "%s", cmd->via);
    snprintf(c->role, sizeof c->role, "%s", cmd->role);
    c->reply = cmd->reply;
    c->reply_ctx = cmd->reply_ctx;
    pthread_mutex_lock(&f->mu);
    f->fetch = c;
    free(f->fetch_url);
    free(f->fetch_ca);
    f->fetch_url = strdup(url);
    f->fetch_ca = fc->fetch_ca ? strdup(fc->fetch_ca) : NULL;
    f->fetch_timeout_ns = fc->fetch_timeout_ns;
    f->fetch_max = fc->max_config_bytes;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return 0;
}

/* Fleet thread: download, then hand the text to the router as the same
 * command with "config" (and "fetched_from"), or with "error". */
static void run_fetch(struct fb_fleet *f)
{
    pthread_mutex_lock(&f->mu);
    struct fb_cmd *c = f->fetch;
    char *url = f->fetch_url, *ca = f->fetch_ca;
    int64_t timeout = f->fetch_timeout_ns;
    uint64_t max = f->fetch_max;
    f->fetch_url = f->fetch_ca = NULL;
    pthread_mutex_unlock(&f->mu);
    char *text = NULL;
    size_t len = 0;
    struct fb_err err = {0};
    fb_fetch_cancellable(url, ca, timeout, max, &f->stop, &text, &len, &err);
    json_error_t je;
    json_t *root = json_loadb(c->payload, c->len, 0, &je);
    if (json_is_object(root)) {
        json_object_set_new(root, "fetched_from", json_string(url));
        json_object_del(root, "url");
        if (text && strlen(text) == len)
            json_object_set_new(root, "config", json_stringn(text, len));
        else
            json_object_set_new(root, "error",
                                json_string(text ? "the downloaded file contains a NUL character" : err.msg));
        char *p = json_dumps(root, JSON_COMPACT);
        if (p) {
            free(c->payload);
            c->payload = p;
            c->len = strlen(p);
        }
    }
    json_decref(root);
    free(text);
    free(url);
    free(ca);
    pthread_mutex_lock(&f->mu);
    f->fetch = NULL; /* the router may take the next one once this is applied */
    pthread_mutex_unlock(&f->mu);
    fb_router_submit(f->gw, c);
}

/* -------------------------------------------------------------- lifecycle */
static void flag_file(struct fb_fleet *f, const char *name, bool on, const char *text)
{
    char p[1100];
    state_path(f->gw, name, p, sizeof p);
    if (!p[0]) return;
    if (!on) {
        unlink(p);
        return;
    }
    make_dirs(f->gw);
    struct fb_err e = {0};
    if (write_atomic(p, text, strlen(text), &e) < 0)
        fb_warn(NULL, NULL, "fleet: %s (the state is not kept across a restart)", e.msg);
}

static bool do_maintenance(struct fb_fleet *f, json_t *root, struct fb_buf *resp)
{
    json_t *on = json_object_get(root, "on");
    const char *reason = json_string_value(json_object_get(root, "reason"));
    if (!json_is_boolean(on)) {
        fb_buf_puts(resp, ",\"error\":\"expected \\\"on\\\": true or false\"");
        return false;
    }
    if (f->decommissioned) {
        fb_buf_puts(resp, ",\"error\":\"the gateway is decommissioned\"");
        return false;
    }
    pthread_mutex_lock(&f->mu);
    f->maintenance = json_is_true(on);
    snprintf(f->maint_reason, sizeof f->maint_reason, "%s", f->maintenance && reason ? reason : "");
    pthread_mutex_unlock(&f->mu);
    flag_file(f, "maintenance", f->maintenance, f->maint_reason);
    update_state(f);
    return true;
}

static bool do_decommission(struct fb_fleet *f, json_t *root, struct fb_buf *resp, bool on)
{
    struct fb_gateway *gw = f->gw;
    const char *confirm = json_string_value(json_object_get(root, "confirm"));
    if (on && (!confirm || strcmp(confirm, gw->id ? gw->id : "") != 0)) {
        fb_buf_puts(resp, ",\"error\":\"give \\\"confirm\\\": the gateway id\"");
        return false;
    }
    if (on && f->trial) {
        fb_buf_puts(resp, ",\"error\":\"a remote configuration is being checked\"");
        return false;
    }
    if (on == f->decommissioned) return true;
    /* the router thread: no reload is under way */
    for (uint32_t i = 0; i < gw->nconns; i++) {
        struct fb_conn *c = &gw->conns[i];
        if (on && c->rt && c->rt->started) {
            fb_rt_conn_stop(gw, c, "gateway decommissioned");
        } else if (!on && !(c->rt && c->rt->started)) {
            struct fb_err e = {0};
            if (fb_rt_conn_start(gw, c, &e) < 0) fb_error(c->devs[0]->name, NULL, "recommission: %s", e.msg);
        }
    }
    pthread_mutex_lock(&f->mu);
    f->decommissioned = on;
    pthread_mutex_unlock(&f->mu);
    flag_file(f, "decommissioned", on, "decommissioned\n");
    fb_warn(NULL, NULL, "gateway %s", on ? "decommissioned: polling stopped" : "recommissioned: polling again");
    update_state(f);
    return true;
}

/* --------------------------------------------------------------- commands */
struct command {
    const char *topic, *name;
    bool internal; /* only from the gateway itself (SIGHUP, the fleet thread) */
};
static const struct command commands[] = {
    {"command", "reload", false},       {"command", "config", false},       {"command", "maintenance", false},
    {"command", "decommission", false}, {"command", "recommission", false}, {"command", "status", false},
    {"command", "trial-end", true},
};

/* The MQTT sink subscribes to the gateway's topics as soon as it connects,
 * which is before fb_fleet_start has resumed an OTA health check, started
 * OTA and provisioning: a command that arrives meanwhile (an OTA notify
 * answered "off" although configured, one installing beside a pending
 * health check) waits here, on the router thread, until the component is
 * up; the commands behind it wait in order.  False when the gateway stops
 * first or START_WAIT_NS passes. */
static bool wait_started(struct fb_fleet *f, const struct fb_cmd *cmd)
{
    pthread_mutex_lock(&f->mu);
    bool ready = f->ready, waits = !ready && !atomic_load(&f->stop);
    pthread_mutex_unlock(&f->mu);
    if (!waits) return ready;
    fb_info(NULL, NULL, "gateway command on %s from %s waits for the start-up to finish",
            cmd->topic[0] ? cmd->topic : "command", cmd->source);
    int64_t end = fb_mono_ns() + START_WAIT_NS;
    pthread_mutex_lock(&f->mu);
    while (!f->ready && !atomic_load(&f->stop) && fb_mono_ns() < end) fb_cond_wait_until(&f->cv, &f->mu, end);
    bool ok = f->ready;
    pthread_mutex_unlock(&f->mu);
    return ok;
}

void fb_fleet_command(struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *len)
{
    struct fb_fleet *f = gw->rt ? gw->rt->fleet : NULL;
    struct fb_buf out;
    fb_buf_init(&out);
    if (!f || !wait_started(f, cmd)) { /* retryable: the same command succeeds once the gateway runs */
        char id[160] = "null";
        json_t *root = json_loadb(cmd->payload, cmd->len, 0, NULL);
        json_t *jid = json_is_object(root) ? json_object_get(root, "id") : NULL;
        if (json_is_string(jid) && json_string_length(jid) < 100) {
            fb_json_str(&out, json_string_value(jid), json_string_length(jid));
            snprintf(id, sizeof id, "%s", fb_buf_cstr(&out));
            fb_buf_clear(&out);
        } else if (json_is_integer(jid)) {
            snprintf(id, sizeof id, "%lld", (long long)json_integer_value(jid));
        }
        json_decref(root);
        fb_warn(NULL, NULL, "gateway command on %s from %s refused: the gateway is %s",
                cmd->topic[0] ? cmd->topic : "command", cmd->source,
                f && atomic_load(&f->stop) ? "stopping" : "starting");
        fb_buf_printf(&out, "{\"id\":%s,\"ok\":false,\"error\":\"the gateway is %s: send it again\"}", id,
                      f && atomic_load(&f->stop) ? "stopping" : "starting");
        fb_buf_cstr(&out);
        *resp = out.p;
        *len = out.len;
        return;
    }
    if (!strncmp(cmd->topic, "shadow/", 7)) { /* the device shadow (src/fleet/shadow.c) */
        fb_buf_free(&out);
        fb_shadow_command(gw, cmd, resp, len);
        return;
    }
    if (!strncmp(cmd->topic, "provision/", 10)) { /* provisioning (src/fleet/provision.c) */
        fb_buf_free(&out);
        fb_prov_command(f ? f->prov : NULL, gw, cmd, resp, len);
        return;
    }
    if (!strncmp(cmd->topic, "ota/", 4)) { /* software updates (src/fleet/ota.c) */
        fb_buf_free(&out);
        fb_ota_command(f ? f->ota : NULL, gw, cmd, resp, len);
        return;
    }
    json_error_t je;
    json_t *root = json_loadb(cmd->payload, cmd->len, JSON_REJECT_DUPLICATES, &je);
    char id[160] = "null";
    json_t *jid = root ? json_object_get(root, "id") : NULL;
    if (json_is_string(jid) && json_string_length(jid) < 100) {
        struct fb_buf ib;
        fb_buf_init(&ib);
        fb_json_str(&ib, json_string_value(jid), json_string_length(jid));
        snprintf(id, sizeof id, "%s", fb_buf_cstr(&ib));
        fb_buf_free(&ib);
    } else if (json_is_integer(jid)) {
        snprintf(id, sizeof id, "%lld", (long long)json_integer_value(jid));
    }
    const char *name = root ? json_string_value(json_object_get(root, "cmd")) : NULL;
    bool internal = cmd->qos < 0 && (!strncmp(cmd->source, "signal:", 7) || !strncmp(cmd->source, "fleet:", 6));
    const struct command *c = NULL;
    for (size_t i = 0; name && i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, name) && !strcmp(commands[i].topic, cmd->topic[0] ? cmd->topic : "command") &&
            (!commands[i].internal || internal))
            c = &commands[i];
    fb_buf_printf(&out, "{\"id\":%s", id);
    struct fb_buf body;
    fb_buf_init(&body);
    bool ok = false;
    if (!root) {
        fb_buf_puts(&body, ",\"error\":");
        char why[300];
        snprintf(why, sizeof why, "invalid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        fb_json_cstr(&body, why);
    } else if (!c) {
        fb_buf_puts(&body,
                    ",\"error\":\"expected \\\"cmd\\\": reload, config, maintenance, decommission, recommission or "
                    "status\"");
    } else {
        fb_info(NULL, NULL, "gateway command %s from %s", c->name, cmd->source);
        if (!strcmp(c->name, "reload"))
            ok = do_reload(f, cmd->source, &body);
        else if (!strcmp(c->name, "config")) {
            int r = do_config(f, cmd, root, &body);
            if (r == DEFERRED) { /* answered when the download is applied */
                fb_buf_free(&body);
                fb_buf_free(&out);
                json_decref(root);
                *resp = NULL;
                *len = 0;
                return;
            }
            ok = r != 0;
        } else if (!strcmp(c->name, "maintenance"))
            ok = do_maintenance(f, root, &body);
        else if (!strcmp(c->name, "decommission"))
            ok = do_decommission(f, root, &body, true);
        else if (!strcmp(c->name, "recommission"))
            ok = do_decommission(f, root, &body, false);
        else if (!strcmp(c->name, "trial-end"))
            trial_end(f), ok = true;
        else if (!strcmp(c->name, "status")) {
            fb_buf_puts(&body, ",\"status\":");
            fb_status_json(gw, &body, true);
            ok = true;
        }
    }
    if (!ok && c) fb_warn(NULL, NULL, "gateway command %s from %s failed", c->name, cmd->source);
    fb_buf_puts(&out, ok ? ",\"ok\":true" : ",\"ok\":false");
    fb_buf_put(&out, body.p, body.len);
    fb_buf_putc(&out, '}');
    fb_buf_free(&body);
    if (root) json_decref(root);
    fb_buf_cstr(&out);
    *resp = out.p;
    *len = out.len;
}

static void submit_internal(struct fb_fleet *f, const char *source, const char *payload)
{
    struct fb_cmd *cmd = calloc(1, sizeof *cmd);
    if (!cmd || !(cmd->payload = strdup(payload))) {
        free(cmd);
        return;
    }
    cmd->len = strlen(payload);
    cmd->kind = FB_CMD_GATEWAY;
    cmd->device = UINT32_MAX;
    cmd->qos = -1;
    snprintf(cmd->topic, sizeof cmd->topic, "command");
    snprintf(cmd->source, sizeof cmd->source, "%s", source);
    fb_router_submit(f->gw, cmd);
}

void fb_fleet_request_reload(struct fb_fleet *f, const char *source)
{
    char src[96];
    snprintf(src, sizeof src, "%s", source);
    submit_internal(f, src, "{\"id\":null,\"cmd\":\"reload\"}");
}

/* ------------------------------------------------------------ the thread */
/* What a fleet operator watches, folded into one number: a change publishes the status. */
static uint64_t signature(struct fb_gateway *gw, int level)
{
    uint64_t h = 1469598103934665603ULL;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * 1099511628211ULL)
    MIX(atomic_load(&gw->rt->gw_state));
    MIX(level);
    MIX(gw->rt->health.clock_synced);
    for (uint32_t i = 0; i < gw->ndevs; i++) {
        MIX(atomic_load(&gw->devs[i].state));
        MIX(atomic_load(&gw->devs[i].m.tags_bad) > 0);
        MIX(atomic_load(&gw->devs[i].m.tags_out_of_spec) > 0);
    }
    for (uint32_t i = 0; i < gw->nsinks; i++) MIX(atomic_load(&gw->sinks[i].m.connected));
#undef MIX
    return h;
}

/* error: no sink connected, or no device online, for fleet.health.error_after. */
static void check_error(struct fb_fleet *f, int64_t now)
{
    struct fb_gateway *gw = f->gw;
    int64_t after = gw->fleet ? gw->fleet->error_after_ns : 300000000000LL;
    bool any_sink = gw->nsinks == 0, any_dev = gw->ndevs == 0;
    for (uint32_t i = 0; i < gw->nsinks; i++) any_sink = any_sink || atomic_load(&gw->sinks[i].m.connected);
    for (uint32_t i = 0; i < gw->ndevs; i++) any_dev = any_dev || atomic_load(&gw->devs[i].state) == FB_DEV_ONLINE;
    f->no_sink_since = any_sink ? 0 : f->no_sink_since ? f->no_sink_since : now;
    f->no_dev_since = any_dev ? 0 : f->no_dev_since ? f->no_dev_since : now;
    char why[160] = "";
    if (f->no_sink_since && now - f->no_sink_since >= after)
        snprintf(why, sizeof why, "no sink connected for %.0fs", (now - f->no_sink_since) / 1e9);
    else if (f->no_dev_since && now - f->no_dev_since >= after && !f->decommissioned)
        snprintf(why, sizeof why, "no device online for %.0fs", (now - f->no_dev_since) / 1e9);
    pthread_mutex_lock(&f->mu);
    bool was = f->in_error;
    f->in_error = why[0] != 0 || (f->in_error && !strncmp(f->error_reason, "roll-back failed", 16));
    if (why[0]) snprintf(f->error_reason, sizeof f->error_reason, "%s", why);
    bool changed = was != f->in_error;
    pthread_mutex_unlock(&f->mu);
    if (changed) update_state(f);
}

static void *fleet_thread(void *arg)
{
    struct fb_fleet *f = arg;
    struct fb_gateway *gw = f->gw;
    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        pthread_mutex_unlock(&f->mu);
        int64_t now = fb_mono_ns();
        fb_model_rdlock(gw);
        if (now >= f->next_sample) {
            int64_t si = gw->status_interval_ns > 0 && gw->status_interval_ns < SAMPLE_MAX_NS ? gw->status_interval_ns
                                                                                              : SAMPLE_MAX_NS;
            f->next_sample = now + si;
            struct fb_health h;
            const char *disk = NULL;
            for (uint32_t i = 0; !disk && i < gw->nsinks; i++)
                if (gw->sinks[i].buffer) disk = gw->sinks[i].buffer->path;
            if (!disk && gw->fleet) disk = gw->fleet->state_dir;
            struct fb_health prev = gw->rt->health; /* only this thread writes it */
            fb_health_sample(&h, &prev, disk, gw->fleet ? gw->fleet->procfs : NULL,
                             gw->fleet ? gw->fleet->sysfs : NULL);
            fb_proc_usage(&h.process_cpu_s, &h.rss_bytes);
            pthread_mutex_lock(&gw->rt->status_mu);
            gw->rt->health = h;
            pthread_mutex_unlock(&gw->rt->status_mu);
        }
        check_error(f, now);
        fb_model_unlock(gw);
        int level = fb_status_health(gw);
        fb_model_rdlock(gw);
        uint64_t sig = signature(gw, level);
        if (sig != f->sig) {
            f->sig = sig;
            fb_status_changed(gw);
        }
        fb_model_unlock(gw);
        /* a remote configuration under its health check: watched every second,
         * ended at once when what was healthy before fails (fleet/hwatch.h), else at its end */
        fb_model_rdlock(gw);
        pthread_mutex_lock(&f->mu);
        bool failed = false;
        if (f->trial && !f->trial_asked && f->hw && fb_mono_ns() >= f->trial_next_sample) {
            f->trial_next_sample = fb_mono_ns() + FLEET_TICK_NS;
            failed = fb_hwatch_sample(f->hw, gw, NULL, 0);
        }
        bool ask = f->trial && !f->trial_asked && (failed || fb_mono_ns() >= f->trial_end);
        if (ask) f->trial_asked = true;
        pthread_mutex_unlock(&f->mu);
        fb_model_unlock(gw);
        if (ask) submit_internal(f, "fleet:health-check", "{\"id\":null,\"cmd\":\"trial-end\"}");
        pthread_mutex_lock(&f->mu);
        bool fetch = f->fetch && f->fetch_url;
        pthread_mutex_unlock(&f->mu);
        if (fetch) run_fetch(f);
        pthread_mutex_lock(&f->mu);
        if (!f->stop && !(f->fetch && f->fetch_url)) fb_cond_wait_until(&f->cv, &f->mu, fb_mono_ns() + FLEET_TICK_NS);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* -------------------------------------------------------------- lifetime */
int fb_fleet_load(const char *path, const struct fb_fleet_opts *o, FILE *diag, struct fb_gateway **gwp,
                  struct fb_fleet **fp)
{
    *gwp = NULL;
    *fp = NULL;
    struct fb_config_opts co = {.strict = true, .diag = diag};
    struct fb_gateway *gw = NULL;
    if (fb_config_load(path, &co, &gw) < 0) return FB_EINVAL;
    struct fb_fleet *f = calloc(1, sizeof *f);
    if (!f) {
        fb_gateway_free(gw);
        return FB_ENOMEM;
    }
    pthread_mutex_init(&f->mu, NULL);
    fb_cond_init_mono(&f->cv);
    f->gw = gw;
    f->log_level = o ? o->log_level : -1;
    f->log_format = o ? o->log_format : -1;
    f->local_path = strdup(path);
    const char *slash = strrchr(path, '/');
    f->local_dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
    f->applied_ns = fb_now_ns();
    f->outbox = fb_outbox_new(256);
    size_t len = 0;
    struct fb_err e = {0};
    char *text = read_all(path, 64u << 20, &len, &e);
    if (text) fb_sha256_hex(text, len, f->sha256);
    free(text);
    if (gw->cfg_version) snprintf(f->version, sizeof f->version, "%s", gw->cfg_version);

    char p[1100];
    state_path(gw, "config/last-result.json", p, sizeof p);
    if (exists(p)) {
        text = read_all(p, 65536, &len, &e);
        json_error_t je;
        json_t *j = text ? json_loadb(text, len, 0, &je) : NULL;
        if (json_is_object(j)) f->last_json = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        free(text);
    }
    /* a remote configuration that was still being checked when the gateway stopped: never run */
    state_path(gw, "config/pending.yaml", p, sizeof p);
    if (exists(p)) {
        char meta[1100], version[128], sha[65];
        state_path(gw, "config/pending.json", meta, sizeof meta);
        read_meta(meta, version, sizeof version, sha, sizeof sha);
        unlink(p);
        unlink(meta);
        fb_warn(NULL, NULL, "remote configuration %s was still being checked when the gateway stopped: rolled back",
                version);
        set_last(f, "config", false, version, "the gateway restarted during the health check: rolled back",
                 ",\"rolled_back\":true");
    }
    state_path(gw, "maintenance", p, sizeof p);
    if (exists(p)) {
        f->maintenance = true;
        text = read_all(p, 1024, &len, &e);
        if (text) snprintf(f->maint_reason, sizeof f->maint_reason, "%.*s", (int)strcspn(text, "\n"), text);
        free(text);
    }
    state_path(gw, "decommissioned", p, sizeof p);
    if (exists(p)) f->decommissioned = true;
    /* a kept remote configuration runs instead of the local file */
    state_path(gw, "config/current.yaml", p, sizeof p);
    if (exists(p)) {
        struct fb_gateway *rw = NULL;
        bool remote;
        char version[128], sha[65];
        struct fb_err le = {0};
        struct fb_buf diags;
        fb_buf_init(&diags);
        if (load_running_source(f, &rw, &diags, &remote, version, sha, &le) == 0 && remote) {
            fb_info(NULL, NULL, "running remote configuration %s (%s; the local %s is the fallback)",
                    version[0] ? version : "(no version)", p, path);
            fb_gateway_free(gw);
            gw = rw;
            f->gw = gw;
            f->remote = true;
            snprintf(f->version, sizeof f->version, "%s", version);
            snprintf(f->sha256, sizeof f->sha256, "%s", sha);
        } else {
            fb_gateway_free(rw);
            fb_error(NULL, NULL, "the kept remote configuration %s does not load: running the local %s", p, path);
        }
        fb_buf_free(&diags);
    }
    *gwp = gw;
    *fp = f;
    return 0;
}

/* Before any thread of the runtime runs: the capabilities and the running
 * configuration into the status, so that the first one published has them. */
static void status_init(struct fb_fleet *f)
{
    publish_caps(f);
    publish_config(f);
}

void fb_fleet_runtime_ext(struct fb_fleet *f, struct fb_runtime_ext *ext)
{
    ext->gw_cmd = fb_fleet_command;
    ext->fleet = f;
    ext->state = f->decommissioned ? FB_GW_DECOMMISSIONED : f->maintenance ? FB_GW_MAINTENANCE : FB_GW_ONLINE;
    ext->status_init = status_init;
    if (!f->decommissioned && fb_prov_needed(f->gw)) ext->state = FB_GW_PROVISIONING; /* src/fleet/provision.c */
}

int fb_fleet_start(struct fb_fleet *f, struct fb_err *err)
{
    /* Test hook: $FB_TEST_FLEET_START_DELAY milliseconds between the runtime's
     * start (the MQTT sink takes commands) and this one's, so the system tests
     * can send a command into that window at will (docs/fleet.md). */
    const char *delay = getenv("FB_TEST_FLEET_START_DELAY");
    if (delay && atoi(delay) > 0) {
        fb_warn(NULL, NULL, "FB_TEST_FLEET_START_DELAY: the fleet component starts %d ms late", atoi(delay));
        struct timespec ts = {atoi(delay) / 1000, (long)(atoi(delay) % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    make_dirs(f->gw);
    /* a reload command may already run on the router thread */
    fb_model_rdlock(f->gw);
    publish_caps(f);
    publish_config(f);
    update_state(f);
    fb_model_unlock(f->gw);
    if (pthread_create(&f->thr, NULL, fleet_thread, f) != 0)
        return fb_err_set(err, FB_ENOMEM, "cannot start the fleet thread");
    f->started = true;
    f->ota = fb_ota_start(f->gw);   /* a switched version's health check, a result to publish */
    f->prov = fb_prov_start(f->gw); /* no identity yet: key pair, CSR */
    pthread_mutex_lock(&f->mu);
    f->ready = true; /* gateway commands that arrived meanwhile go on (wait_started) */
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return 0;
}

void fb_fleet_stop(struct fb_fleet *f)
{
    if (!f) return;
    if (f->started) {
        pthread_mutex_lock(&f->mu);
        atomic_store(&f->stop, true); /* also gives up a download (fetch.c) */
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
        pthread_join(f->thr, NULL);
        f->started = false;
    }
    fb_ota_stop(f->ota);
    fb_prov_stop(f->prov);
    /* no gateway command (reload) starts once the stop was requested: the
     * router checks rt->stop under gw_cmd_mu, and fb_runtime_wait waits for
     * one that runs; the router itself stops after the connections */
}

void fb_fleet_free(struct fb_fleet *f)
{
    if (!f) return;
    fb_cmd_free(f->fetch); /* a download the fleet thread did not get to */
    free(f->fetch_url);
    free(f->fetch_ca);
    free(f->local_path);
    free(f->local_dir);
    free(f->last_json);
    fb_ota_free(f->ota);
    fb_prov_free(f->prov);
    fb_outbox_free(f->outbox);
    fb_hwatch_free(f->hw);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

/* ------------------------------------------------- fleet extensions' hooks */
struct fb_outbox *fb_fleet_outbox(struct fb_gateway *gw)
{
    return gw && gw->rt && gw->rt->fleet ? gw->rt->fleet->outbox : NULL;
}

int fb_fleet_write_atomic(const char *path, const void *p, size_t len, struct fb_err *err)
{
    return write_atomic(path, p, len, err);
}
