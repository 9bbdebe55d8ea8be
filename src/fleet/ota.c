/* ota.c — signed software updates (ota.h; docs/fleet.md#ota).
 *
 * Why this way: a box in a cabinet must never be left without a working
 * gateway.  So nothing is replaced in place: every version lives in
 * install_dir/versions/<v>/fieldbridge, `install_dir/current` is a symlink
 * to the one that runs (the unit starts install_dir/current/fieldbridge),
 * and a switch is one rename() of a new symlink over it — atomic, also
 * across a power cut.  Before the switch the package must be whole (the
 * size and SHA-256 the notify names), signed by the configured Ed25519 key
 * (OpenSSL EVP), and start (`<staged> version` exits 0).  After it the new
 * process (the same PID: exec) runs for fleet.ota.health_check; every
 * device that was online and every sink that was connected before is
 * watched over the whole window (fleet/hwatch.h: once back after the
 * restart, it must stay so), else the symlink goes back and the previous
 * version is executed again.  A restart during the check (a crash, systemd restarting
 * it) rolls back too.
 *
 * State, in fleet.state_dir/ota/ (written whole: temporary file, fsync, rename):
 *   pending.json  a switched version under its health check: job, version,
 *                 previous link target, the healthy devices and sinks, boots;
 *   result.json   the last result, and whether it was published yet: only
 *                 the broker's acknowledgement (the QoS 1 PUBACK, through the
 *                 outbox: fb_outbox_put_acked) marks it published; one found
 *                 unpublished at start-up is published then.
 *
 * Threads: the router thread takes the notify and starts the worker thread
 * (download, verify, stage, switch, then a restart through main); the same
 * thread runs the health check after a restart.  Messages go out through
 * the fleet outbox (the MQTT sink publishes them).
 */
#include "fleet/ota.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fetch.h"
#include "core/fleet_cfg.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/thread.h"
#include "fleet/hooks.h"
#include "fleet/hwatch.h"
#include "fleet/outbox.h"

#define ATTEMPTS 5 /* download attempts (each resumes) */
#define SMOKE_TIMEOUT_S 10

struct fb_ota {
    struct fb_gateway *gw;
    const struct fb_ota_cfg *cfg; /* &own: a reload may replace the gateway's (it applies at the next start) */
    struct fb_ota_cfg own;
    char state_dir[PATH_MAX];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thr;
    bool running, joinable;
    atomic_bool stop;
    /* the job (worker thread once started) */
    json_t *job; /* the notify, or pending.json for a health check */
    bool health; /* the worker runs a health check, not an install */
    /* the result on its way to the broker (under mu): result.json says
     * published:true once its PUBACK came (result_acked) */
    json_t *res;
    uint64_t res_token;
};

static char exec_path[PATH_MAX];
const char *fb_ota_exec_path(void) { return exec_path[0] ? exec_path : NULL; }

static void publish(struct fb_gateway *gw, const char *suffix, json_t *j)
{
    char *p = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (p) fb_outbox_put(fb_fleet_outbox(gw), suffix, p, strlen(p));
    free(p);
}

static void path_in(const char *dir, const char *name, char *out, size_t n) { snprintf(out, n, "%s/%s", dir, name); }

static int save_json(const char *path, json_t *j)
{
    char *p = json_dumps(j, JSON_COMPACT);
    struct fb_err e = {0};
    int rc = p ? fb_fleet_write_atomic(path, p, strlen(p), &e) : FB_ENOMEM;
    if (rc < 0) fb_error(NULL, NULL, "ota: %s", p ? e.msg : "out of memory");
    free(p);
    return rc;
}

/* The broker acknowledged the result (outbox callback, the MQTT sink's
 * thread): result.json says so, unless a newer result replaced it. */
static void result_acked(void *arg, uint64_t token)
{
    struct fb_ota *o = arg;
    pthread_mutex_lock(&o->mu);
    if (o->res && token == o->res_token) {
        char p[PATH_MAX + 32];
        path_in(o->state_dir, "ota/result.json", p, sizeof p);
        json_object_set_new(o->res, "published", json_true());
        save_json(p, o->res);
        json_decref(o->res);
        o->res = NULL;
        o->res_token = 0;
        fb_info(NULL, NULL, "ota: the result was acknowledged by the broker");
    }
    pthread_mutex_unlock(&o->mu);
}

/* r (without "published") goes to result.json as not yet published and, unless
 * kept for the version executed next, to ota/complete; published:true only
 * once the broker has it (result_acked).  Takes r. */
static void result_out(struct fb_ota *o, json_t *r, bool kept_for_later)
{
    char p[PATH_MAX + 32];
    path_in(o->state_dir, "ota/result.json", p, sizeof p);
    pthread_mutex_lock(&o->mu);
    json_decref(o->res);
    o->res = NULL;
    o->res_token = 0;
    json_object_set_new(r, "published", json_false());
    save_json(p, r);
    json_object_del(r, "published");
    char *text = kept_for_later ? NULL : json_dumps(r, JSON_COMPACT);
    if (text) {
        o->res_token = fb_outbox_put_acked(fb_fleet_outbox(o->gw), "ota/complete", text, strlen(text), result_acked, o);
        if (o->res_token) o->res = json_incref(r);
    }
    pthread_mutex_unlock(&o->mu);
    free(text);
    json_decref(r);
}

/* The result: on ota/complete and in result.json (published: whether the broker has it). */
static void result(struct fb_ota *o, const json_t *job, bool ok, const char *step, const char *error, bool rolled_back,
                   bool kept_for_later)
{
    json_t *r = json_pack("{s:O?,s:O?,s:b,s:s,s:I}", "job", json_object_get(job, "job"), "version",
                          json_object_get(job, "version"), "ok", ok, "step", step, "timestamp",
                          (json_int_t)(fb_now_ns() / 1000000000LL));
    if (!r) return;
    if (error) json_object_set_new(r, "error", json_string(error));
    if (rolled_back) json_object_set_new(r, "rolled_back", json_true());
    if (ok) json_object_set_new(r, "health_check", json_string("passed"));
    if (ok || error) {
        if (ok)
            fb_info(NULL, NULL, "ota: %s installed and kept", json_string_value(json_object_get(job, "version")));
        else
            fb_warn(NULL, NULL, "ota: %s: %s: %s%s", json_string_value(json_object_get(job, "version")), step, error,
                    rolled_back ? " (rolled back)" : "");
    }
    result_out(o, r, kept_for_later);
}

static void progress(struct fb_ota *o, const json_t *job, const char *step, uint64_t have, uint64_t total)
{
    json_t *m = json_pack("{s:O?,s:O?,s:s}", "job", json_object_get(job, "job"), "version",
                          json_object_get(job, "version"), "step", step);
    if (!m) return;
    if (total) {
        json_object_set_new(m, "bytes", json_integer((json_int_t)have));
        json_object_set_new(m, "total", json_integer((json_int_t)total));
    }
    publish(o->gw, "ota/progress", m);
    json_decref(m);
}

struct dl_prog {
    struct fb_ota *o;
    const json_t *job;
    int64_t next;
};

static void on_progress(void *arg, uint64_t have, uint64_t total)
{
    struct dl_prog *p = arg;
    int64_t now = fb_mono_ns();
    if (now < p->next) return;
    p->next = now + 1000000000LL;
    progress(p->o, p->job, "downloading", have, total);
}

/* --------------------------------------------------------------- verifying */
static int b64_decode(const char *s, unsigned char *out, size_t max, size_t *len)
{
    size_t n = strlen(s);
    if (n == 0 || n % 4 || n / 4 * 3 > max) return -1;
    int k = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    if (k < 0) return -1;
    size_t pad = (s[n - 1] == '=') + (n > 1 && s[n - 2] == '=');
    *len = (size_t)k - pad;
    return 0;
}

/* Size, SHA-256 and the Ed25519 signature of the file at path. */
static int verify(struct fb_ota *o, const json_t *job, const char *path, char *why, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(why, n, "%.300s: %.150s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    json_int_t want = json_integer_value(json_object_get(job, "size"));
    if (want > 0 && st.st_size != want) {
        snprintf(why, n, "%s: got %lld of %lld bytes", st.st_size < want ? "truncated" : "too long",
                 (long long)st.st_size, (long long)want);
        close(fd);
        return -1;
    }
    if (st.st_size == 0) {
        snprintf(why, n, "the package is empty");
        close(fd);
        return -1;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(why, n, "%.300s: %.150s", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    char hex[65];
    fb_sha256_hex(p, (size_t)st.st_size, hex);
    const char *sha = json_string_value(json_object_get(job, "sha256"));
    unsigned char sig[96];
    size_t siglen = 0;
    EVP_PKEY *key = NULL;
    EVP_MD_CTX *ctx = NULL;
    FILE *kf = NULL;
    if (strcasecmp(hex, sha)) {
        snprintf(why, n, "SHA-256 mismatch: the package has %s, the notify names %s", hex, sha);
        goto out;
    }
    if (b64_decode(json_string_value(json_object_get(job, "signature")), sig, sizeof sig, &siglen) < 0 ||
        siglen != 64) {
        snprintf(why, n, "signature: 64 bytes in base64 expected");
        goto out;
    }
    if (!(kf = fopen(o->cfg->public_key, "r")) || !(key = PEM_read_PUBKEY(kf, NULL, NULL, NULL)) ||
        EVP_PKEY_id(key) != EVP_PKEY_ED25519) {
        snprintf(why, n, "%s: not an Ed25519 public key", o->cfg->public_key);
        goto out;
    }
    if (!(ctx = EVP_MD_CTX_new()) || EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) != 1) {
        snprintf(why, n, "cannot verify signatures (OpenSSL)");
        goto out;
    }
    if (EVP_DigestVerify(ctx, sig, siglen, p, (size_t)st.st_size) != 1) {
        snprintf(why, n, "the signature does not verify with the configured public key (%s)", o->cfg->public_key);
        goto out;
    }
    rc = 0;
out:
    if (kf) fclose(kf);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    munmap(p, (size_t)st.st_size);
    return rc;
}

/* `<path> version` exits 0 within SMOKE_TIMEOUT_S: the file runs on this box. */
static int smoke(const char *path, char *why, size_t n)
{
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, n, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 1);
            dup2(nul, 2);
        }
        execl(path, path, "version", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    for (int i = 0; i < SMOKE_TIMEOUT_S * 20; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
            snprintf(why, n, "the new version does not run here (`version` exited with %d)",
                     WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
            return -1;
        }
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    snprintf(why, n, "the new version does not run here (`version` did not end within %ds)", SMOKE_TIMEOUT_S);
    return -1;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* install_dir/current → target, atomically (a new link renamed over it). */
static int swap_link(const struct fb_ota_cfg *c, const char *target, char *why, size_t n)
{
    char link[PATH_MAX + 32], tmp[PATH_MAX + 32];
    path_in(c->install_dir, "current", link, sizeof link);
    path_in(c->install_dir, "current.tmp", tmp, sizeof tmp);
    unlink(tmp);
    if (symlink(target, tmp) < 0 || rename(tmp, link) < 0) {
        snprintf(why, n, "%.300s: %.150s", link, strerror(errno));
        unlink(tmp);
        return -1;
    }
    fsync_dir(c->install_dir);
    return 0;
}

/* The devices online and sinks connected now: what must be so after the switch. */
static json_t *baseline(struct fb_gateway *gw)
{
    json_t *devs = json_array(), *sinks = json_array();
    fb_model_rdlock(gw);
    for (uint32_t i = 0; i < gw->ndevs; i++)
        if (atomic_load(&gw->devs[i].state) == FB_DEV_ONLINE)
            json_array_append_new(devs, json_string(gw->devs[i].name));
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (atomic_load(&gw->sinks[i].m.connected)) json_array_append_new(sinks, json_string(gw->sinks[i].name));
    fb_model_unlock(gw);
    return json_pack("{s:o,s:o}", "devices", devs, "sinks", sinks);
}

static bool sleep_cancellable(struct fb_ota *o, int64_t ns)
{
    int64_t end = fb_mono_ns() + ns;
    pthread_mutex_lock(&o->mu);
    while (!atomic_load(&o->stop) && fb_mono_ns() < end) fb_cond_wait_until(&o->cv, &o->mu, end);
    bool stopped = atomic_load(&o->stop);
    pthread_mutex_unlock(&o->mu);
    return !stopped;
}

/* ------------------------------------------------------------ the install */
static void install(struct fb_ota *o)
{
    const json_t *job = o->job;
    const struct fb_ota_cfg *c = o->cfg;
    const char *version = json_string_value(json_object_get(job, "version"));
    const char *url = json_string_value(json_object_get(job, "url"));
    char why[512], dl_dir[PATH_MAX + 32], part[PATH_MAX + 64], vdir[PATH_MAX + 64], bin[PATH_MAX + 96];
    path_in(c->install_dir, ".download", dl_dir, sizeof dl_dir);
    mkdir(c->install_dir, 0755);
    mkdir(dl_dir, 0700);
    snprintf(part, sizeof part, "%s/%.16s-%s.part", dl_dir, json_string_value(json_object_get(job, "sha256")), version);
    /* download, resuming what an earlier attempt (or an earlier notify of the same package) left */
    fb_info(NULL, NULL, "ota: downloading %s from %s", version, url);
    progress(o, job, "downloading", 0, 0);
    struct dl_prog dp = {.o = o, .job = job};
    int rc = -1;
    struct fb_err e = {0};
    for (int a = 0; a < ATTEMPTS && !atomic_load(&o->stop); a++) {
        uint64_t len = 0;
        e = (struct fb_err){0};
        rc = fb_fetch_file(url, c->ca, c->fetch_timeout_ns, c->max_bytes, part, &o->stop, on_progress, &dp, &len, &e);
        if (rc == 0 || rc == FB_ECLOSED || rc == FB_ERANGE) break;
        if (rc == FB_EAGAIN) unlink(part); /* the server cannot resume: from the start */
        json_int_t want = json_integer_value(json_object_get(job, "size"));
        if (rc == FB_EIO && want > 0 && (json_int_t)len >= want) { /* whole but for an error after: verify */
            rc = 0;
            break;
        }
        fb_warn(NULL, NULL, "ota: download attempt %d of %d: %s", a + 1, ATTEMPTS, e.msg);
        if (!sleep_cancellable(o, 1000000000LL * (a + 1))) break;
    }
    if (atomic_load(&o->stop)) return; /* the gateway stops: the next notify resumes */
    if (rc < 0) {
        if (rc == FB_ERANGE) unlink(part);
        result(o, job, false, "download", e.msg, false, false);
        return;
    }
    progress(o, job, "verifying", 0, 0);
    if (verify(o, job, part, why, sizeof why) < 0) {
        unlink(part); /* never kept: a new notify downloads afresh */
        result(o, job, false, "verify", why, false, false);
        return;
    }
    /* stage */
    progress(o, job, "staging", 0, 0);
    snprintf(vdir, sizeof vdir, "%s/versions", c->install_dir);
    mkdir(vdir, 0755);
    snprintf(vdir, sizeof vdir, "%s/versions/%s", c->install_dir, version);
    snprintf(bin, sizeof bin, "%s/fieldbridge", vdir);
    if ((mkdir(vdir, 0755) < 0 && errno != EEXIST) || chmod(part, 0755) < 0 || rename(part, bin) < 0) {
        snprintf(why, sizeof why, "%.300s: %.150s", bin, strerror(errno));
        result(o, job, false, "stage", why, false, false);
        return;
    }
    fsync_dir(vdir);
    if (smoke(bin, why, sizeof why) < 0) {
        result(o, job, false, "stage", why, false, false);
        return;
    }
    /* switch: remember where to go back to and what must be healthy after */
    progress(o, job, "switching", 0, 0);
    char link[PATH_MAX + 32], prev[PATH_MAX] = "";
    path_in(c->install_dir, "current", link, sizeof link);
    ssize_t k = readlink(link, prev, sizeof prev - 1);
    if (k > 0) prev[k] = 0;
    json_t *pend = json_pack("{s:O?,s:s,s:s,s:o,s:i}", "job", json_object_get(job, "job"), "version", version,
                             "previous", prev, "baseline", baseline(o->gw), "boots", 0);
    char pp[PATH_MAX + 32];
    path_in(o->state_dir, "ota/pending.json", pp, sizeof pp);
    char target[PATH_MAX];
    snprintf(target, sizeof target, "versions/%s", version);
    if (!pend || save_json(pp, pend) < 0 || swap_link(c, target, why, sizeof why) < 0) {
        unlink(pp);
        result(o, job, false, "switch", pend ? why : "out of memory", false, false);
        json_decref(pend);
        return;
    }
    json_decref(pend);
    fb_info(NULL, NULL, "ota: %s switched to (was %s): restarting", version, prev[0] ? prev : "none");
    progress(o, job, "restarting", 0, 0);
    snprintf(exec_path, sizeof exec_path, "%s/current/fieldbridge", c->install_dir);
    sleep_cancellable(o, 500000000LL); /* the progress message a moment to leave */
    fb_runtime_request_reboot(o->gw);
}

/* Back to the previous version and execute it; the result waits in result.json. */
static void roll_back(struct fb_ota *o, const json_t *pend, const char *why)
{
    const char *prev = json_string_value(json_object_get(pend, "previous"));
    char err[512], pp[PATH_MAX + 32];
    path_in(o->state_dir, "ota/pending.json", pp, sizeof pp);
    if (!prev || !prev[0] || swap_link(o->cfg, prev, err, sizeof err) < 0) {
        unlink(pp);
        snprintf(err, sizeof err, "%s; no previous version to go back to", why);
        result(o, pend, false, "health_check", err, false, false);
        return;
    }
    unlink(pp);
    fsync_dir(o->state_dir);
    result(o, pend, false, "health_check", why, true, true); /* published by the previous version */
    snprintf(exec_path, sizeof exec_path, "%s/current/fieldbridge", o->cfg->install_dir);
    fb_warn(NULL, NULL, "ota: rolling back to %s: %s", prev, why);
    fb_runtime_request_reboot(o->gw);
}

/* The new version under its health check: what was healthy before the
 * switch is watched every second over the window (fleet/hwatch.h); a roll-back
 * as soon as it fails, else a commit at the end. */
static void health_check(struct fb_ota *o)
{
    const json_t *pend = o->job;
    progress(o, pend, "health_check", 0, 0);
    struct fb_hwatch *hw = fb_hwatch_new();
    json_t *base = json_object_get(pend, "baseline");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(base, "devices"), i, v) fb_hwatch_add(hw, false, json_string_value(v));
    json_array_foreach(json_object_get(base, "sinks"), i, v) fb_hwatch_add(hw, true, json_string_value(v));
    char failed[300] = "";
    int64_t end = fb_mono_ns() + o->cfg->health_check_ns;
    for (;;) {
        int64_t now = fb_mono_ns();
        bool last = now + 1000000000LL >= end;
        if (!sleep_cancellable(o, last ? end - now : 1000000000LL)) { /* stopped: the next start rolls back */
            fb_hwatch_free(hw);
            return;
        }
        fb_model_rdlock(o->gw);
        bool bad = hw && (last ? fb_hwatch_final(hw, o->gw, failed, sizeof failed)
                               : fb_hwatch_sample(hw, o->gw, failed, sizeof failed));
        fb_model_unlock(o->gw);
        if (bad || last) break;
    }
    fb_hwatch_free(hw);
    if (failed[0]) {
        char why[400];
        snprintf(why, sizeof why, "health check failed: %s", failed);
        roll_back(o, pend, why);
        return;
    }
    char pp[PATH_MAX + 32];
    path_in(o->state_dir, "ota/pending.json", pp, sizeof pp);
    unlink(pp);
    fsync_dir(o->state_dir);
    result(o, pend, true, "complete", NULL, false, false);
}

static void *worker(void *arg)
{
    struct fb_ota *o = arg;
    if (o->health)
        health_check(o);
    else
        install(o);
    pthread_mutex_lock(&o->mu);
    o->running = false;
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

static int spawn(struct fb_ota *o, json_t *job, bool health)
{
    if (o->joinable) {
        pthread_join(o->thr, NULL);
        o->joinable = false;
    }
    json_decref(o->job);
    o->job = job;
    o->health = health;
    o->running = true;
    if (pthread_create(&o->thr, NULL, worker, o) != 0) {
        o->running = false;
        return -1;
    }
    o->joinable = true;
    return 0;
}

/* ----------------------------------------------------------------- lifetime */
struct fb_ota *fb_ota_start(struct fb_gateway *gw)
{
    if (!gw->fleet || !gw->fleet->ota || !gw->fleet->state_dir) return NULL;
    struct fb_ota *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->gw = gw;
    const struct fb_ota_cfg *c = gw->fleet->ota;
    o->own = *c;
    o->own.public_key = c->public_key ? strdup(c->public_key) : NULL;
    o->own.install_dir = c->install_dir ? strdup(c->install_dir) : NULL;
    o->own.ca = c->ca ? strdup(c->ca) : NULL;
    o->cfg = &o->own;
    if (!o->own.public_key || !o->own.install_dir) {
        free(o->own.public_key);
        free(o->own.install_dir);
        free(o->own.ca);
        free(o);
        return NULL;
    }
    snprintf(o->state_dir, sizeof o->state_dir, "%s", gw->fleet->state_dir);
    pthread_mutex_init(&o->mu, NULL);
    fb_cond_init_mono(&o->cv);
    char p[PATH_MAX + 32];
    path_in(o->state_dir, "ota", p, sizeof p);
    mkdir(o->state_dir, 0750);
    mkdir(p, 0750);
    /* a result not yet published (a roll-back executed this version) */
    path_in(o->state_dir, "ota/result.json", p, sizeof p);
    json_t *r = json_load_file(p, 0, NULL);
    if (json_is_object(r) && json_is_false(json_object_get(r, "published"))) {
        json_object_del(r, "published");
        fb_info(NULL, NULL, "ota: publishing the result of %s kept from before the restart",
                json_string_value(json_object_get(r, "version")));
        result_out(o, r, false); /* takes r */
    } else {
        json_decref(r);
    }
    /* a switched version under its health check */
    path_in(o->state_dir, "ota/pending.json", p, sizeof p);
    json_t *pend = json_load_file(p, 0, NULL);
    if (pend) {
        const char *v = json_string_value(json_object_get(pend, "version"));
        char want[PATH_MAX + 96], self[PATH_MAX], wreal[PATH_MAX];
        snprintf(want, sizeof want, "%s/versions/%s/fieldbridge", o->cfg->install_dir, v ? v : "?");
        ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
        self[k > 0 ? k : 0] = 0;
        bool is_new = realpath(want, wreal) && !strcmp(wreal, self);
        json_int_t boots = json_integer_value(json_object_get(pend, "boots"));
        if (boots > 0) {
            roll_back(o, pend, "the gateway restarted during the health check");
            json_decref(pend);
        } else if (!is_new) {
            roll_back(o, pend,
                      "the new version did not start (is the gateway run as install_dir/current/fieldbridge?)");
            json_decref(pend);
        } else {
            json_object_set_new(pend, "boots", json_integer(boots + 1));
            save_json(p, pend);
            fb_info(NULL, NULL, "ota: running %s; health check for %.0fs", v, o->cfg->health_check_ns / 1e9);
            spawn(o, pend, true);
        }
    }
    return o;
}

void fb_ota_stop(struct fb_ota *o)
{
    if (!o) return;
    pthread_mutex_lock(&o->mu);
    atomic_store(&o->stop, true);
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    if (o->joinable) {
        pthread_join(o->thr, NULL);
        o->joinable = false;
    }
}

void fb_ota_free(struct fb_ota *o)
{
    if (!o) return;
    fb_ota_stop(o);
    fb_outbox_forget(fb_fleet_outbox(o->gw), o); /* no acknowledgement reaches it any more */
    json_decref(o->res);
    json_decref(o->job);
    free(o->own.public_key);
    free(o->own.install_dir);
    free(o->own.ca);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o);
}

static bool safe_version(const char *v)
{
    if (!v || !v[0] || v[0] == '.' || strlen(v) > 64) return false;
    for (const char *p = v; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '-' || *p == '_' || *p == '+'))
            return false;
    return true;
}

static bool is_hex64(const char *s)
{
    if (!s || strlen(s) != 64) return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F'))) return false;
    return true;
}

void fb_ota_command(struct fb_ota *o, struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *len)
{
    *resp = NULL;
    *len = 0;
    json_error_t je;
    json_t *job = json_loadb(cmd->payload, cmd->len, JSON_REJECT_DUPLICATES, &je);
    char why[300] = "";
    if (!json_is_object(job))
        snprintf(why, sizeof why, "invalid JSON: %s", job ? "expected an object" : je.text);
    else if (!o)
        snprintf(why, sizeof why, "software updates are off on this gateway (no fleet.ota)");
    else if (!json_is_string(json_object_get(job, "job")))
        snprintf(why, sizeof why, "job: a string naming the update");
    else if (!safe_version(json_string_value(json_object_get(job, "version"))))
        snprintf(why, sizeof why, "version: 1-64 of A-Z a-z 0-9 . _ - +, not starting with a dot");
    else if (!json_is_string(json_object_get(job, "url")))
        snprintf(why, sizeof why, "url: the package's http:// or https:// URL");
    else if (!is_hex64(json_string_value(json_object_get(job, "sha256"))))
        snprintf(why, sizeof why, "sha256: 64 hex digits");
    else if (!json_is_string(json_object_get(job, "signature")))
        snprintf(why, sizeof why, "signature: the package's Ed25519 signature in base64");
    else if (json_object_get(job, "size") && json_integer_value(json_object_get(job, "size")) <= 0)
        snprintf(why, sizeof why, "size: a positive integer (bytes)");
    else {
        pthread_mutex_lock(&o->mu);
        bool busy = o->running;
        pthread_mutex_unlock(&o->mu);
        char cur[PATH_MAX + 32], target[PATH_MAX] = "", want[100];
        path_in(o->cfg->install_dir, "current", cur, sizeof cur);
        ssize_t k = readlink(cur, target, sizeof target - 1);
        target[k > 0 ? k : 0] = 0;
        snprintf(want, sizeof want, "versions/%s", json_string_value(json_object_get(job, "version")));
        if (busy)
            snprintf(why, sizeof why, "another update (%s) is in progress",
                     json_string_value(json_object_get(o->job, "version")));
        else if (!strcmp(target, want))
            snprintf(why, sizeof why, "version %s is the one installed", want + 9);
        else if (atomic_load(&o->stop))
            snprintf(why, sizeof why, "the gateway is stopping");
    }
    if (why[0]) {
        json_t *fake = json_is_object(job) ? job : NULL;
        json_t *r = json_pack("{s:O?,s:O?,s:b,s:s,s:s}", "job", json_object_get(fake, "job"), "version",
                              json_object_get(fake, "version"), "ok", 0, "step", "notify", "error", why);
        publish(gw, "ota/complete", r);
        fb_warn(NULL, NULL, "ota: notify from %s refused: %s", cmd->source, why);
        json_decref(r);
        json_decref(job);
        return;
    }
    fb_info(NULL, NULL, "ota: %s from %s", json_string_value(json_object_get(job, "version")), cmd->source);
    if (spawn(o, job, false) < 0) {
        fb_error(NULL, NULL, "ota: cannot start the update thread");
        o->job = NULL;
        json_decref(job);
    }
}
