/* api.c — the `http:` sink: the REST API, the event stream and the web page
 * on one libmicrohttpd daemon (docs/http-api.md, docs/openapi.yaml).
 *
 * Why a sink: the API shows the latest value of every tag and streams
 * changes, and the one place that sees every processed batch in order is a
 * sink.  It is a live view, not a delivery target (struct fb_sink.live): the
 * runtime gives it no store, every batch is reported FB_SENT at once, and
 * send() never waits for a client.
 *
 * Threads:
 *   - the sink thread (send, tick): updates the live table (live.c), formats
 *     each event once into the shared event ring, wakes subscribers, times
 *     out writes, reloads the tokens file when it changes;
 *   - MHD's one internal polling thread: every request and every response
 *     byte (handler.c decides what to answer); it never blocks: writes,
 *     browse and config checks suspend their connection and are resumed
 *     with the answer;
 *   - the router thread answers writes (on_reply);
 *   - one worker thread runs browse and config checks (they connect to
 *     devices or read files: seconds, not microseconds).
 *
 * Suspend and resume.  MHD_resume_connection on a connection that is not
 * suspended is undefined, so each suspendable thing carries an atomic
 * `suspended` that is set to 1 only after MHD_suspend_connection returned,
 * and whoever resumes first exchanges it back to 0: exactly one resume per
 * suspend.  The suspending side checks again after setting the flag (has the
 * answer come, new events, a shutdown?) so a wake-up between its check and
 * its suspend is never lost.  No lock of ours is held while calling MHD,
 * except model_rw for reading on the MHD thread itself: its writer (a config
 * reload, between model_begin and model_end) calls no MHD function.
 *
 * Reload.  A config reload that leaves the `http:` section alone keeps the
 * sink (model_begin/model_end): the MHD thread handles requests with
 * model_rw held for reading, so it never sees the model being swapped or
 * the latest-value table (per tag id) being made again; the event ring
 * stays, and with it every subscriber's position.
 *
 * Event stream (GET /api/v1/events): an event-source subscriber is a slot
 * with a position in the ring; its content reader copies what is new, or
 * suspends until the sink thread has more.  A subscriber that falls a whole
 * ring behind is disconnected (its client reconnects, resumes from
 * Last-Event-ID if the ring still holds it, else reloads the values), so a
 * slow client costs memory nobody else waits for.  Event kinds: hello (per
 * subscriber), values (the MQTT telemetry JSON of a batch), status (a
 * device's state, the MQTT device status JSON), gateway (the status JSON,
 * periodically), ping (every 15 s, keeps proxies and dead-peer detection
 * going); `alarm` is reserved for the alarm batches of the analytics work.
 */
#include "north/http/api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/batch_codec.h"
#include "core/browse.h"
#include "core/cfg.h"
#include "core/driver.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/plugin.h"
#include "core/router.h"
#include "edge/alarms.h"
#include "north/http/handler.h"
#include "north/http/http.h"
#include "north/http/mhd.h"
#include "north/mqtt/telemetry.h"

#define M fb_mhd
#define SEC 1000000000LL
#define PING_NS (15 * SEC)
#define JOB_QUEUE_MAX 4
#define BROWSE_TIMEOUT_NS (120 * SEC)
#define CHECK_TIMEOUT_NS (60 * SEC)

/* ------------------------------------------------------------------ config */
static const char *const k_http[] = {
    "listen",   "tls",        "tokens",          "anonymous",  "plaintext_writes", "cors",
    "max_body", "rate_limit", "max_connections", "max_events", "events_buffer",    "write_timeout",
    "ui",       NULL};
static const char *const k_http_tls[] = {"cert", "key", NULL};
static const struct fb_config_keys k_nested[] = {{"http.tls", k_http_tls}, {NULL, NULL}};

static void cfg_free(void *p)
{
    struct fb_http_cfg *c = p;
    if (!c) return;
    free(c->listen);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->tokens);
    for (char **o = c->cors; o && *o; o++) free(*o);
    free(c->cors);
    free(c->cfg_path);
    free(c->cfg_text);
    free(c);
}

static bool loopback_host(const char *h)
{
    return !strncmp(h, "127.", 4) || !strcmp(h, "::1") || !strcmp(h, "localhost");
}

/* The config file's text as it is being loaded, for GET /api/v1/config. */
static void read_cfg_text(struct fb_http_cfg *c, const char *path)
{
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) return;
    struct fb_buf b;
    fb_buf_init(&b);
    char tmp[8192];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0 && b.len < (16u << 20)) fb_buf_put(&b, tmp, n);
    fclose(f);
    fb_buf_cstr(&b);
    c->cfg_text = b.p;
    c->cfg_len = b.len;
}

static void *cfg_load(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw)
{
    (void)gw;
    struct fb_http_cfg *c = calloc(1, sizeof *c);
    if (!c) {
        fb_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    c->max_body = 1u << 20;
    c->rate = 50;
    c->max_connections = 64;
    c->max_events = 32;
    c->events_buffer = 4u << 20;
    c->write_timeout_ns = 10 * SEC;
    c->ui = true;
    c->cfg_path = strdup(fb_cfg_file(r));
    struct fb_cfg_node *n, *x;
    char host[256] = "";
    if (!(n = fb_cfg_get(m, "listen"))) {
        fb_cfg_error(r, NULL, "http.listen is required (HOST:PORT such as 127.0.0.1:8080)");
    } else if ((c->listen = fb_cfg_str(r, NULL, n, "http.listen"))) {
        uint16_t port;
        struct fb_err e = {0};
        if (fb_http_parse_listen(c->listen, host, sizeof host, &port, &e) < 0)
            fb_cfg_error(r, n, "http.listen: %s", e.msg);
    }
    struct fb_cfg_map t = {0};
    if ((n = fb_cfg_get(m, "tls")) && fb_cfg_map_load(r, n, "http.tls", &t)) {
        fb_cfg_map_check(r, &t, k_http_tls, "http.tls", false);
        if ((x = fb_cfg_get(&t, "cert"))) c->tls_cert = fb_cfg_file_ref(r, x, "http.tls.cert", FB_OPT_CERT, NULL);
        if ((x = fb_cfg_get(&t, "key"))) c->tls_key = fb_cfg_file_ref(r, x, "http.tls.key", FB_OPT_KEY, NULL);
        if (!c->tls_cert != !c->tls_key) fb_cfg_error(r, n, "http.tls needs both cert and key (PEM files)");
        fb_cfg_map_free(&t);
    }
    if ((n = fb_cfg_get(m, "tokens"))) {
        bool usable = false;
        c->tokens = fb_cfg_file_ref(r, n, "http.tokens", FB_OPT_SECRET, &usable);
        if (c->tokens && usable) {
            struct fb_http_tokens tk;
            struct fb_err e = {0};
            if (fb_http_tokens_load(c->tokens, &tk, &e) < 0)
                fb_cfg_error(r, n, "http.tokens: %s", e.msg);
            else
                fb_http_tokens_free(&tk);
        }
    }
    if ((n = fb_cfg_get(m, "anonymous"))) {
        static const char *const roles[] = {"none", "viewer", NULL};
        int v;
        if (fb_cfg_enum(r, n, "http.anonymous", roles, &v)) c->anonymous = v ? FB_ROLE_VIEWER : FB_ROLE_NONE;
    }
    if ((n = fb_cfg_get(m, "plaintext_writes"))) {
        fb_cfg_bool(r, NULL, n, "http.plaintext_writes", &c->plaintext_writes);
        if (c->plaintext_writes && host[0] && !loopback_host(host))
            fb_cfg_error(r, n,
                         "http.plaintext_writes is only allowed on a loopback listener (127.0.0.1, ::1), not %s: "
                         "use http.tls",
                         host);
    }
    if ((n = fb_cfg_get(m, "cors"))) {
        size_t cnt = fb_cfg_list_len(n);
        if (fb_cfg_kind(n) != FB_CFG_LIST) {
            fb_cfg_error(r, n, "http.cors: expected a list of origins such as [\"https://scada.local:8443\"]");
        } else {
            c->cors = calloc(cnt + 1, sizeof *c->cors);
            for (size_t i = 0; c->cors && i < cnt; i++) {
                struct fb_cfg_node *it = fb_cfg_list_at(r, n, i);
                char *o = fb_cfg_str(r, NULL, it, "http.cors");
                if (o && ((strncmp(o, "http://", 7) && strncmp(o, "https://", 8)) || strchr(o + 8, '/'))) {
                    fb_cfg_error(r, it, "http.cors: '%s' is not an origin (scheme://host[:port], no path)", o);
                    free(o);
                    o = NULL;
                }
                if (o) c->cors[i] = o;
            }
            /* drop gaps left by errors */
            size_t k = 0;
            for (size_t i = 0; c->cors && i < cnt; i++)
                if (c->cors[i]) c->cors[k++] = c->cors[i];
            if (c->cors) c->cors[k] = NULL;
        }
    }
    long long v;
    if ((n = fb_cfg_get(m, "max_body"))) fb_cfg_size(r, n, "http.max_body", 1024, &c->max_body);
    if ((n = fb_cfg_get(m, "rate_limit")) && fb_cfg_int(r, NULL, n, "http.rate_limit", 0, 100000, &v))
        c->rate = (uint32_t)v;
    if ((n = fb_cfg_get(m, "max_connections")) && fb_cfg_int(r, NULL, n, "http.max_connections", 2, 10000, &v))
        c->max_connections = (uint32_t)v;
    if ((n = fb_cfg_get(m, "max_events")) && fb_cfg_int(r, NULL, n, "http.max_events", 0, 1000, &v))
        c->max_events = (uint32_t)v;
    if ((n = fb_cfg_get(m, "events_buffer"))) fb_cfg_size(r, n, "http.events_buffer", 65536, &c->events_buffer);
    if ((n = fb_cfg_get(m, "write_timeout"))) fb_cfg_dur(r, NULL, n, "http.write_timeout", true, &c->write_timeout_ns);
    if ((n = fb_cfg_get(m, "ui"))) fb_cfg_bool(r, NULL, n, "http.ui", &c->ui);
    if (!c->tokens && c->anonymous == FB_ROLE_NONE)
        fb_cfg_error(r, NULL,
                     "http: no tokens file and anonymous: none, so nobody could use the API; set http.tokens "
                     "(fieldbridge http-token NAME ROLE makes an entry) or http.anonymous: viewer");
    if (c->max_events >= c->max_connections)
        fb_cfg_error(r, fb_cfg_get(m, "max_events"), "http.max_events (%u) must be below http.max_connections (%u)",
                     c->max_events, c->max_connections);
    read_cfg_text(c, fb_cfg_file(r));
    return c;
}

static void describe(const struct fb_sink_inst *s, FILE *f)
{
    const struct fb_http_cfg *c = s->cfg;
    fprintf(f, "  sink http  %s://%s  %s%s  anonymous %s  writes %s  ui %s\n", c->tls_cert ? "https" : "http",
            c->listen ? c->listen : "?", c->tokens ? "tokens " : "no tokens", c->tokens ? c->tokens : "",
            fb_http_role_name(c->anonymous),
            c->tls_cert           ? "over TLS"
            : c->plaintext_writes ? "plaintext (loopback)"
                                  : "off (no TLS)",
            c->ui ? "on" : "off");
}

/* ------------------------------------------------------------------- state */
struct api;

struct sse {
    struct api *a;
    struct MHD_Connection *conn;
    atomic_int used;
    atomic_int suspended;
    uint64_t pos;
    char pre[512]; /* the hello event, sent first */
    size_t pre_len, pre_off;
};

enum { P_WRITE = 1, P_BROWSE, P_CHECK };

struct pending {
    struct api *a;
    struct MHD_Connection *conn;
    atomic_int refs;
    atomic_int state; /* 0 waiting, 1 being answered, 2 answered */
    atomic_int suspended;
    atomic_int router_ref; /* the router holds a reference (a submitted write) */
    int kind;
    bool submitted, registered, strict;
    int status;
    const char *ctype;
    struct fb_buf out;  /* the answer */
    struct fb_buf body; /* the request body */
    bool too_big;
    char *arg; /* browse URL */
    char user[FB_TOKEN_NAME_MAX];
    int role;
    char cors_origin[256];
    int64_t deadline;            /* mono */
    struct pending *prev, *next; /* registry */
    struct pending *jnext;       /* job queue */
};

struct api {
    struct fb_sink_inst *s;
    struct fb_gateway *gw;
    struct fb_http_cfg *cfg;
    struct fb_http_api h;
    struct MHD_Daemon *d;
    uint16_t port;
    atomic_bool closing;
    struct sse *sse;
    uint32_t nsse;
    struct fb_buf render;  /* MHD thread */
    struct fb_buf ev;      /* sink thread */
    struct fb_mhd_tls tls; /* http.tls: PEM texts */
    /* Held for reading by whoever looks at the model or at the live table
     * (the MHD thread while it handles a request, the worker while it takes
     * the config's name); a config reload that keeps the sink holds it for
     * writing from model_begin to model_end, while the model is swapped and
     * the table made again.  The sink thread needs none: it is parked then. */
    pthread_rwlock_t model_rw;
    /* pending writes and jobs */
    pthread_mutex_t pend_mu;
    struct pending *pend;
    /* the worker */
    pthread_t worker;
    bool worker_started;
    pthread_mutex_t job_mu;
    pthread_cond_t job_cv;
    struct pending *job_head, *job_tail;
    uint32_t njobs;
    bool job_stop;
    /* sink thread housekeeping */
    int64_t next_ping, next_status, next_tokens;
    struct timespec tokens_mtime;
    off_t tokens_size;
    struct fb_ratelimit rl_slow;
};

/* ----------------------------------------------------------------- helpers */
/* Take a reference unless the last one is already gone (p is being freed). */
static bool pending_ref_live(struct pending *p)
{
    int r = atomic_load(&p->refs);
    while (r > 0 && !atomic_compare_exchange_weak(&p->refs, &r, r + 1)) {
    }
    return r > 0;
}

static void pending_unref(struct pending *p)
{
    if (atomic_fetch_sub(&p->refs, 1) != 1) return;
    struct api *a = p->a;
    if (p->registered) {
        pthread_mutex_lock(&a->pend_mu);
        if (p->prev)
            p->prev->next = p->next;
        else
            a->pend = p->next;
        if (p->next) p->next->prev = p->prev;
        pthread_mutex_unlock(&a->pend_mu);
    }
    fb_buf_free(&p->out);
    fb_buf_free(&p->body);
    free(p->arg);
    free(p);
}

static void pending_register(struct api *a, struct pending *p, int64_t timeout_ns)
{
    p->deadline = fb_mono_ns() + timeout_ns;
    pthread_mutex_lock(&a->pend_mu);
    p->next = a->pend;
    p->prev = NULL;
    if (a->pend) a->pend->prev = p;
    a->pend = p;
    p->registered = true;
    pthread_mutex_unlock(&a->pend_mu);
}

/* Answer a pending request (any thread); the first answer wins. */
static bool answer(struct pending *p, int status, const char *ctype, const char *data, size_t len)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&p->state, &expect, 1)) return false;
    p->status = status;
    p->ctype = ctype;
    fb_buf_clear(&p->out);
    fb_buf_put(&p->out, data, len);
    atomic_store(&p->state, 2);
    if (atomic_exchange(&p->suspended, 0)) M.resume_connection(p->conn);
    return true;
}

static bool answer_error(struct pending *p, int status, const char *fmt, ...) FB_PRINTF(3, 4);
static bool answer_error(struct pending *p, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct fb_buf b;
    fb_buf_init(&b);
    fb_buf_puts(&b, "{\"error\":");
    fb_json_cstr(&b, msg);
    fb_buf_printf(&b, ",\"status\":%d}", status);
    bool won = answer(p, status, "application/json", b.p, b.len);
    fb_buf_free(&b);
    return won;
}

/* Suspend the connection of p until answer(); called on the MHD thread. */
static void pending_suspend(struct api *a, struct pending *p)
{
    M.suspend_connection(p->conn);
    atomic_store(&p->suspended, 1);
    if ((atomic_load(&p->state) == 2 || atomic_load(&a->closing)) && atomic_exchange(&p->suspended, 0))
        M.resume_connection(p->conn);
}

static void add_common_headers(struct MHD_Response *r, const char *cors_origin, bool html)
{
    M.add_response_header(r, "X-Content-Type-Options", "nosniff");
    M.add_response_header(r, "Referrer-Policy", "no-referrer");
    M.add_response_header(r, "X-Frame-Options", "DENY");
    if (html)
        M.add_response_header(r, "Content-Security-Policy",
                              "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                              "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
    if (cors_origin && *cors_origin) {
        M.add_response_header(r, "Access-Control-Allow-Origin", cors_origin);
        M.add_response_header(r, "Vary", "Origin");
    }
}

static enum MHD_Result queue_buf(struct MHD_Connection *c, int status, const char *ctype, const char *p, size_t n,
                                 const char *cors_origin)
{
    struct MHD_Response *r = M.create_response_from_buffer(n, (void *)(uintptr_t)p, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    if (ctype) M.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    M.add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    add_common_headers(r, cors_origin, false);
    enum MHD_Result rc = M.queue_response(c, (unsigned)status, r);
    M.destroy_response(r);
    return rc;
}

static enum MHD_Result queue_error(struct MHD_Connection *c, int status, const char *msg)
{
    struct fb_buf b;
    fb_buf_init(&b);
    fb_buf_puts(&b, "{\"error\":");
    fb_json_cstr(&b, msg);
    fb_buf_printf(&b, ",\"status\":%d}", status);
    enum MHD_Result rc = queue_buf(c, status, "application/json", b.p, b.len, NULL);
    fb_buf_free(&b);
    return rc;
}

/* The handler's answer. */
static enum MHD_Result queue_resp(struct MHD_Connection *c, const struct fb_http_resp *rs)
{
    struct MHD_Response *r;
    bool html = false;
    if (rs->kind == FB_RESP_STATIC) {
        r = M.create_response_from_buffer(rs->static_len, (void *)(uintptr_t)rs->static_data, MHD_RESPMEM_PERSISTENT);
        html = rs->ctype && !strncmp(rs->ctype, "text/html", 9);
    } else {
        r = M.create_response_from_buffer(rs->body->len, rs->body->p ? rs->body->p : (void *)"", MHD_RESPMEM_MUST_COPY);
    }
    if (!r) return MHD_NO;
    if (rs->ctype && rs->status != 204) M.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, rs->ctype);
    M.add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, rs->kind == FB_RESP_STATIC ? "no-cache" : "no-store");
    add_common_headers(r, rs->cors_origin, html);
    if (rs->preflight) {
        M.add_response_header(r, "Access-Control-Allow-Methods", rs->allow ? rs->allow : "GET");
        M.add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID");
        M.add_response_header(r, "Access-Control-Max-Age", "600");
    }
    if (rs->status == 405 && rs->allow) M.add_response_header(r, MHD_HTTP_HEADER_ALLOW, rs->allow);
    if (rs->www_authenticate)
        M.add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"fieldbridge\"");
    if (rs->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", rs->retry_after);
        M.add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    enum MHD_Result rc = M.queue_response(c, (unsigned)rs->status, r);
    M.destroy_response(r);
    return rc;
}

/* ------------------------------------------------------------------ events */
static void wake_subscribers(struct api *a)
{
    for (uint32_t i = 0; i < a->nsse; i++) {
        struct sse *c = &a->sse[i];
        if (atomic_load(&c->used) && atomic_exchange(&c->suspended, 0)) M.resume_connection(c->conn);
    }
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct sse *c = cls;
    struct api *a = c->a;
    if (c->pre_off < c->pre_len) {
        size_t n = c->pre_len - c->pre_off < max ? c->pre_len - c->pre_off : max;
        memcpy(buf, c->pre + c->pre_off, n);
        c->pre_off += n;
        return (ssize_t)n;
    }
    if (atomic_load(&a->closing)) return MHD_CONTENT_READER_END_OF_STREAM;
    long n = fb_live_read(a->h.live, &c->pos, buf, max);
    if (n < 0) {
        /* a whole ring behind: let it reconnect and resynchronise */
        if (fb_ratelimit_ok(&a->rl_slow, fb_mono_ns()))
            fb_warn(NULL, NULL, "http: an event subscriber fell %llu bytes behind (http.events_buffer); disconnected",
                    (unsigned long long)(fb_live_head(a->h.live) - c->pos));
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (n > 0) return n;
    M.suspend_connection(c->conn);
    atomic_store(&c->suspended, 1);
    if ((fb_live_head(a->h.live) != c->pos || atomic_load(&a->closing)) && atomic_exchange(&c->suspended, 0))
        M.resume_connection(c->conn);
    return 0;
}

static void sse_free(void *cls)
{
    struct sse *c = cls;
    atomic_store(&c->suspended, 0);
    atomic_store(&c->used, 0);
}

static enum MHD_Result start_events(struct api *a, struct MHD_Connection *conn, const struct fb_http_resp *rs)
{
    struct sse *c = NULL;
    for (uint32_t i = 0; i < a->nsse && !c; i++) {
        int expect = 0;
        if (atomic_compare_exchange_strong(&a->sse[i].used, &expect, 1)) c = &a->sse[i];
    }
    if (!c) {
        struct fb_http_resp r = *rs;
        fb_http_error(&r, 503, "too many event subscribers (http.max_events %u)", a->nsse);
        r.retry_after = 5;
        return queue_resp(conn, &r);
    }
    c->a = a;
    c->conn = conn;
    atomic_store(&c->suspended, 0);
    /* a small kernel send buffer: what a slow subscriber can hold in the
     * kernel stays small, and falling behind shows in the ring soon */
    const union MHD_ConnectionInfo *fi = M.get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (fi) {
        int sz = 64 * 1024;
        setsockopt(fi->connect_fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    const char *last = M.lookup_connection_value(conn, MHD_HEADER_KIND, "Last-Event-ID");
    bool resumed = last && fb_live_resume(a->h.live, last, &c->pos);
    if (!resumed) c->pos = fb_live_head(a->h.live);
    int n = snprintf(c->pre, sizeof c->pre,
                     "retry: 2000\nevent: hello\ndata: {\"gateway\":\"%.100s\",\"epoch\":%llu,\"resumed\":%s,"
                     "\"user\":\"%.63s\",\"role\":\"%s\"}\n\n",
                     a->gw->id ? a->gw->id : "", (unsigned long long)fb_live_epoch(a->h.live),
                     resumed ? "true" : "false", rs->user, fb_http_role_name(rs->role));
    c->pre_len = n > 0 && (size_t)n < sizeof c->pre ? (size_t)n : 0;
    c->pre_off = 0;
    struct MHD_Response *r = M.create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, c, sse_free);
    if (!r) {
        atomic_store(&c->used, 0);
        return MHD_NO;
    }
    M.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    M.add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    M.add_response_header(r, "X-Accel-Buffering", "no");
    add_common_headers(r, rs->cors_origin, false);
    enum MHD_Result rc = M.queue_response(conn, 200, r);
    M.destroy_response(r);
    return rc;
}

/* ------------------------------------------------------------------ writes */
/* Router thread: the command's answer. */
static void on_reply(struct fb_cmd *cmd, const char *json, size_t len)
{
    struct pending *p = cmd->reply_ctx;
    if (!p) return;
    cmd->reply_ctx = NULL;
    json_t *j = json_loadb(json, len, 0, NULL);
    bool ok = j && json_is_true(json_object_get(j, "ok"));
    json_decref(j);
    if (!answer(p, ok ? 200 : 422, "application/json", json, len))
        fb_warn(NULL, NULL, "http: the answer to a write from %s came after its request had timed out: %.*s", p->user,
                (int)(len < 300 ? len : 300), json);
    if (atomic_exchange(&p->router_ref, 0)) pending_unref(p);
}

static void submit_write(struct api *a, struct pending *p, uint32_t device)
{
    struct fb_cmd *cmd = calloc(1, sizeof *cmd);
    char *payload = malloc(p->body.len + 1);
    if (!cmd || !payload) {
        free(cmd);
        free(payload);
        answer_error(p, 500, "out of memory");
        return;
    }
    memcpy(payload, p->body.p ? p->body.p : "", p->body.len);
    payload[p->body.len] = 0;
    cmd->payload = payload;
    cmd->len = p->body.len;
    cmd->device = device;
    cmd->qos = -1;
    /* the router logs every write with its source and checks the sender
     * (commands.allow, write_roles: "http", "http:operator") */
    snprintf(cmd->source, sizeof cmd->source, "http:%.60s", p->user);
    snprintf(cmd->via, sizeof cmd->via, "http");
    if (p->role != FB_ROLE_NONE) snprintf(cmd->role, sizeof cmd->role, "%s", fb_http_role_name(p->role));
    cmd->reply_ctx = p;
    cmd->reply = on_reply;
    atomic_fetch_add(&p->refs, 1);
    atomic_store(&p->router_ref, 1);
    pending_register(a, p, a->cfg->write_timeout_ns);
    fb_router_submit(a->gw, cmd);
}

/* -------------------------------------------------------------------- jobs */
static void job_browse(struct api *a, struct pending *p)
{
    (void)a;
    struct fb_url u;
    struct fb_err err = {0};
    if (fb_url_parse(p->arg, &u, &err) < 0) {
        answer_error(p, 400, "bad URL: %s", err.msg);
        return;
    }
    const struct fb_driver *drv = fb_driver_for_scheme(u.scheme);
    char host[64];
    snprintf(host, sizeof host, "%s", u.host && *u.host ? u.host : drv ? drv->name : "device");
    char scheme[32];
    snprintf(scheme, sizeof scheme, "%s", u.scheme ? u.scheme : "");
    fb_url_free(&u);
    if (!drv) {
        char hint[200];
        fb_scheme_hint(hint, sizeof hint, scheme);
        answer_error(p, 400, "unknown URL scheme '%s'%s", scheme, hint);
        return;
    }
    if (!drv->browse) {
        answer_error(p, 400, "the %s driver has nothing to browse: its addresses are absolute (docs/%s.md)", drv->name,
                     drv->name);
        return;
    }
    struct fb_browse list = {0};
    fb_info(NULL, NULL, "http: browse %s for %s", p->arg, p->user);
    int rc = drv->browse(p->arg, &list, NULL, &err);
    if (rc < 0) {
        fb_browse_free(&list);
        answer_error(p, rc == FB_EINVAL ? 400 : 502, "%s", err.msg[0] ? err.msg : fb_strerror(rc));
        return;
    }
    struct fb_buf o, y;
    fb_buf_init(&o);
    fb_buf_init(&y);
    fb_browse_yaml(&y, &list, p->arg, host);
    fb_buf_puts(&o, "{\"url\":");
    fb_json_cstr(&o, p->arg);
    fb_buf_puts(&o, ",\"driver\":");
    fb_json_cstr(&o, drv->name);
    fb_buf_putc(&o, ',');
    fb_browse_json_items(&o, &list);
    fb_buf_puts(&o, ",\"yaml\":");
    fb_json_str(&o, y.p ? y.p : "", y.len);
    fb_buf_putc(&o, '}');
    answer(p, 200, "application/json", o.p, o.len);
    fb_buf_free(&o);
    fb_buf_free(&y);
    fb_browse_free(&list);
}

/* One diagnostic line of `check`: "FILE:L:C: [warning: ]msg" or "FILE: msg". */
static void put_diag(struct fb_buf *o, const char *file, const char *line, size_t n, int *nerr, int *nwarn)
{
    size_t fl = strlen(file);
    int ln = 0, col = 0;
    const char *msg = line;
    if (n > fl + 1 && !strncmp(line, file, fl) && line[fl] == ':') {
        const char *p = line + fl + 1;
        if (*p >= '0' && *p <= '9') {
            ln = atoi(p);
            p += strspn(p, "0123456789");
            if (*p == ':') {
                col = atoi(++p);
                p += strspn(p, "0123456789");
            }
            if (*p == ':') p++;
        }
        while (*p == ' ') p++;
        msg = p;
    }
    bool warn = !strncmp(msg, "warning: ", 9);
    if (warn) {
        msg += 9;
        (*nwarn)++;
    } else {
        (*nerr)++;
    }
    fb_buf_puts(o, "{\"line\":");
    if (ln)
        fb_buf_printf(o, "%d,\"col\":%d", ln, col);
    else
        fb_buf_puts(o, "null,\"col\":null");
    fb_buf_puts(o, warn ? ",\"severity\":\"warning\",\"message\":" : ",\"severity\":\"error\",\"message\":");
    fb_json_str(o, msg, (size_t)(line + n - msg));
    fb_buf_puts(o, ",\"text\":");
    fb_json_str(o, line, n);
    fb_buf_putc(o, '}');
}

static void job_check(struct api *a, struct pending *p)
{
    /* a reload may replace the model (and its path) while the check runs: a copy of the name */
    char name[1024];
    pthread_rwlock_rdlock(&a->model_rw);
    snprintf(name, sizeof name, "%s", a->gw->cfg_path ? a->gw->cfg_path : "config.yaml");
    int (*check)(const char *, const char *, size_t, bool, FILE *, FILE *) = a->gw->config_check;
    pthread_rwlock_unlock(&a->model_rw);
    if (!check) {
        answer_error(p, 501, "config checks are not available");
        return;
    }
    char *dtext = NULL, *stext = NULL;
    size_t dlen = 0, slen = 0;
    FILE *diag = open_memstream(&dtext, &dlen), *sum = open_memstream(&stext, &slen);
    if (!diag || !sum) {
        if (diag) fclose(diag);
        if (sum) fclose(sum);
        free(dtext);
        free(stext);
        answer_error(p, 500, "out of memory");
        return;
    }
    int rc = check(name, p->body.p ? p->body.p : "", p->body.len, p->strict, diag, sum);
    fclose(diag);
    fclose(sum);
    fb_info(NULL, NULL, "http: config check for %s: %s", p->user, rc == 0 ? "valid" : "invalid");
    struct fb_buf o;
    fb_buf_init(&o);
    fb_buf_puts(&o, rc == 0 ? "{\"ok\":true,\"diagnostics\":[" : "{\"ok\":false,\"diagnostics\":[");
    int nerr = 0, nwarn = 0;
    for (size_t i = 0; i < dlen;) {
        const char *nl = memchr(dtext + i, '\n', dlen - i);
        size_t e = nl ? (size_t)(nl - dtext) : dlen;
        if (e > i) {
            if (nerr + nwarn) fb_buf_putc(&o, ',');
            put_diag(&o, name, dtext + i, e - i, &nerr, &nwarn);
        }
        i = e + 1;
    }
    fb_buf_printf(&o, "],\"errors\":%d,\"warnings\":%d,\"summary\":", rc == 0 ? 0 : nerr, nwarn);
    if (rc == 0)
        fb_json_str(&o, stext ? stext : "", slen);
    else
        fb_buf_puts(&o, "null");
    fb_buf_putc(&o, '}');
    answer(p, 200, "application/json", o.p, o.len);
    fb_buf_free(&o);
    free(dtext);
    free(stext);
}

static void *worker(void *arg)
{
    struct api *a = arg;
    for (;;) {
        pthread_mutex_lock(&a->job_mu);
        while (!a->job_head && !a->job_stop) pthread_cond_wait(&a->job_cv, &a->job_mu);
        struct pending *p = a->job_head;
        if (p) {
            a->job_head = p->jnext;
            if (!a->job_head) a->job_tail = NULL;
            a->njobs--;
        }
        pthread_mutex_unlock(&a->job_mu);
        if (!p) break;
        if (atomic_load(&p->state) == 0) { /* not timed out or cancelled meanwhile */
            if (p->kind == P_BROWSE)
                job_browse(a, p);
            else
                job_check(a, p);
        }
        pending_unref(p);
    }
    return NULL;
}

/* Queue a job for p (the worker holds a reference); false when the queue is full. */
static bool submit_job(struct api *a, struct pending *p, int64_t timeout_ns)
{
    pthread_mutex_lock(&a->job_mu);
    if (a->njobs >= JOB_QUEUE_MAX || a->job_stop) {
        pthread_mutex_unlock(&a->job_mu);
        return false;
    }
    atomic_fetch_add(&p->refs, 1);
    pending_register(a, p, timeout_ns);
    p->jnext = NULL;
    if (a->job_tail)
        a->job_tail->jnext = p;
    else
        a->job_head = p;
    a->job_tail = p;
    a->njobs++;
    pthread_cond_signal(&a->job_cv);
    pthread_mutex_unlock(&a->job_mu);
    return true;
}

/* ---------------------------------------------------------------- requests */
static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    struct fb_http_req *rq = cls;
    if (rq->nargs >= FB_HTTP_MAX_ARGS) {
        rq->args_overflow = true;
        return MHD_NO;
    }
    rq->args[rq->nargs].k = key ? key : "";
    rq->args[rq->nargs].v = value;
    rq->nargs++;
    return MHD_YES;
}

static void build_req(struct api *a, struct MHD_Connection *c, const char *url, const char *method,
                      struct fb_http_req *rq)
{
    memset(rq, 0, sizeof *rq);
    rq->method = method;
    rq->path = url;
    rq->tls = a->h.tls;
    M.get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, rq);
    rq->authorization = M.lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    rq->origin = M.lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    rq->host = M.lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    rq->content_length = M.lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const union MHD_ConnectionInfo *ci = M.get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, rq->peer, sizeof rq->peer);
        memcpy(rq->peer_key, &s4->sin_addr, 4);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, rq->peer, sizeof rq->peer);
        memcpy(rq->peer_key, &s6->sin6_addr, 16);
    }
}

static struct pending *pending_new(struct api *a, struct MHD_Connection *c, const struct fb_http_resp *rs)
{
    struct pending *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->a = a;
    p->conn = c;
    atomic_store(&p->refs, 1); /* MHD's, dropped when the request completes */
    fb_buf_init(&p->out);
    fb_buf_init(&p->body);
    snprintf(p->user, sizeof p->user, "%s", rs->user);
    p->role = rs->role;
    if (rs->cors_origin) snprintf(p->cors_origin, sizeof p->cors_origin, "%s", rs->cors_origin);
    return p;
}

static enum MHD_Result queue_pending(struct MHD_Connection *c, struct pending *p)
{
    return queue_buf(c, p->status, p->ctype, p->out.p ? p->out.p : "", p->out.len, p->cors_origin);
}

/* The whole body has arrived: the second pass of the handler, then the work. */
static enum MHD_Result body_done(struct api *a, struct MHD_Connection *c, struct pending *p, const char *url,
                                 const char *method)
{
    p->submitted = true;
    if (p->too_big) {
        char m[128];
        snprintf(m, sizeof m, "request body larger than http.max_body (%llu bytes)",
                 (unsigned long long)a->cfg->max_body);
        fb_warn(NULL, NULL, "http: refused %s %s (user %s): 413 %s", method, url, p->user, m);
        atomic_fetch_add(&a->h.refused, 1);
        return queue_error(c, 413, m);
    }
    struct fb_http_req rq;
    build_req(a, c, url, method, &rq);
    rq.body = p->body.p ? p->body.p : "";
    rq.body_len = p->body.len;
    struct fb_http_resp rs = {.body = &a->render};
    fb_http_handle(&a->h, &rq, &rs);
    if (rs.kind == FB_RESP_WRITE) {
        submit_write(a, p, rs.device);
    } else if (rs.kind == FB_RESP_CHECK) {
        const char *st = fb_http_arg(&rq, "strict");
        p->strict = st && (!strcmp(st, "1") || !strcmp(st, "true"));
        p->kind = P_CHECK;
        if (!submit_job(a, p, CHECK_TIMEOUT_NS)) return queue_error(c, 503, "busy: too many checks and browses");
    } else {
        return queue_resp(c, &rs);
    }
    pending_suspend(a, p);
    return MHD_YES;
}

static enum MHD_Result first_pass(struct api *a, struct MHD_Connection *c, const char *url, const char *method,
                                  void **req_cls);

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **req_cls)
{
    (void)version;
    struct api *a = cls;
    struct pending *p = *req_cls;
    if (p) {
        if (!p->submitted) {
            if (*upload_size) {
                if (!p->too_big && p->body.len + *upload_size <= a->cfg->max_body)
                    fb_buf_put(&p->body, upload, *upload_size);
                else
                    p->too_big = true;
                *upload_size = 0;
                return MHD_YES;
            }
            pthread_rwlock_rdlock(&a->model_rw);
            enum MHD_Result r = body_done(a, c, p, url, method);
            pthread_rwlock_unlock(&a->model_rw);
            return r;
        }
        /* resumed: the answer is there (or the gateway is stopping) */
        while (atomic_load(&p->state) == 1) sched_yield();
        if (atomic_load(&p->state) != 2) answer_error(p, 503, "the gateway is stopping");
        return queue_pending(c, p);
    }
    if (atomic_load(&a->closing)) return queue_error(c, 503, "the gateway is stopping");
    pthread_rwlock_rdlock(&a->model_rw);
    enum MHD_Result r = first_pass(a, c, url, method, req_cls);
    pthread_rwlock_unlock(&a->model_rw);
    return r;
}

/* A new request (the model read-locked): answered, or its body awaited, or
 * the work started. */
static enum MHD_Result first_pass(struct api *a, struct MHD_Connection *c, const char *url, const char *method,
                                  void **req_cls)
{
    struct pending *p;
    struct fb_http_req rq;
    build_req(a, c, url, method, &rq);
    struct fb_http_resp rs = {.body = &a->render};
    fb_http_handle(&a->h, &rq, &rs);
    switch (rs.kind) {
        case FB_RESP_CONTINUE:
            if (!(p = pending_new(a, c, &rs))) return MHD_NO;
            p->kind = P_WRITE;
            *req_cls = p;
            return MHD_YES;
        case FB_RESP_EVENTS: return start_events(a, c, &rs);
        case FB_RESP_BROWSE:
            if (!(p = pending_new(a, c, &rs))) return MHD_NO;
            *req_cls = p;
            p->submitted = true;
            p->kind = P_BROWSE;
            p->arg = strdup(rs.url);
            if (!p->arg) return queue_error(c, 500, "out of memory");
            if (!submit_job(a, p, BROWSE_TIMEOUT_NS)) return queue_error(c, 503, "busy: too many checks and browses");
            pending_suspend(a, p);
            return MHD_YES;
        default: return queue_resp(c, &rs);
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct pending *p = *req_cls;
    *req_cls = NULL;
    if (p) pending_unref(p);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    fb_debug(NULL, NULL, "http: %s", msg);
}

/* ------------------------------------------------------------------- sink */
static void api_free(struct api *a)
{
    if (!a) return;
    fb_live_free(a->h.live);
    fb_http_tokens_free(&a->h.tokens);
    pthread_mutex_destroy(&a->h.tokens_mu);
    pthread_mutex_destroy(&a->pend_mu);
    pthread_rwlock_destroy(&a->model_rw);
    pthread_mutex_destroy(&a->job_mu);
    pthread_cond_destroy(&a->job_cv);
    fb_buf_free(&a->render);
    fb_buf_free(&a->ev);
    fb_mhd_tls_free(&a->tls);
    free(a->sse);
    free(a);
}

static void tokens_stat(struct api *a, struct timespec *mt, off_t *sz)
{
    struct stat st;
    memset(mt, 0, sizeof *mt);
    *sz = -1;
    if (a->cfg->tokens && stat(a->cfg->tokens, &st) == 0) {
        *mt = st.st_mtim;
        *sz = st.st_size;
    }
}

static int api_open(struct fb_sink_inst *s, struct fb_err *err)
{
    struct fb_http_cfg *cfg = s->cfg;
    struct api *a = calloc(1, sizeof *a);
    if (!a) return fb_err_set(err, FB_ENOMEM, "out of memory");
    a->s = s;
    a->gw = s->gw;
    a->cfg = cfg;
    a->h.gw = s->gw;
    a->h.cfg = cfg;
    a->rl_slow.interval_ns = 10 * SEC;
    pthread_mutex_init(&a->h.tokens_mu, NULL);
    pthread_mutex_init(&a->pend_mu, NULL);
    /* writer first: under a stream of requests a reload must still get it (the MHD thread never takes it twice) */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&a->model_rw, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&a->job_mu, NULL);
    pthread_cond_init(&a->job_cv, NULL);
    fb_buf_init(&a->render);
    fb_buf_init(&a->ev);
    int rc = 0;
    char host[256];
    uint16_t port;
    struct sockaddr_storage ss;
    bool v6 = false;
    if ((rc = fb_http_listen_addr(cfg->listen, &ss, &v6, host, sizeof host, &port, err)) < 0) goto fail;
    if ((rc = fb_mhd_load("http", err)) < 0) goto fail;
    if (cfg->tokens && (rc = fb_http_tokens_load(cfg->tokens, &a->h.tokens, err)) < 0) goto fail;
    tokens_stat(a, &a->tokens_mtime, &a->tokens_size);
    if (cfg->tls_cert) {
        if ((rc = fb_mhd_tls_load(&a->tls, cfg->tls_cert, cfg->tls_key, "http.tls", err)) < 0) goto fail;
        a->h.tls = true;
    }
    a->h.live = fb_live_new(s->gw, cfg->events_buffer);
    a->nsse = cfg->max_events;
    a->sse = calloc(a->nsse ? a->nsse : 1, sizeof *a->sse);
    if (!a->h.live || !a->sse) {
        rc = fb_err_set(err, FB_ENOMEM, "out of memory");
        goto fail;
    }
    if (pthread_create(&a->worker, NULL, worker, a) != 0) {
        rc = fb_err_set(err, FB_ENOMEM, "http: cannot start the worker thread");
        goto fail;
    }
    a->worker_started = true;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6) flags |= MHD_USE_IPv6;
    if (a->h.tls) flags |= MHD_USE_TLS;
    if (a->h.tls)
        a->d = M.start_daemon(flags, port, NULL, NULL, on_request, a, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536, MHD_OPTION_NOTIFY_COMPLETED,
                              on_completed, a, MHD_OPTION_HTTPS_MEM_CERT, a->tls.cert_pem, MHD_OPTION_HTTPS_MEM_KEY,
                              a->tls.key_pem, MHD_OPTION_HTTPS_PRIORITIES, FB_MHD_TLS_PRIORITIES, MHD_OPTION_END);
    else
        a->d = M.start_daemon(flags, port, NULL, NULL, on_request, a, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536, MHD_OPTION_NOTIFY_COMPLETED,
                              on_completed, a, MHD_OPTION_END);
    if (!a->d) {
        rc = fb_err_set(err, FB_EIO, "http: cannot listen on %s (in use? for TLS: is the key the certificate's?)",
                        cfg->listen);
        goto fail;
    }
    const union MHD_DaemonInfo *info = M.get_daemon_info(a->d, MHD_DAEMON_INFO_BIND_PORT);
    a->port = info ? info->port : port;
    int64_t now = fb_mono_ns();
    a->next_ping = now + PING_NS;
    a->next_status = now;
    a->next_tokens = now + 2 * SEC;
    s->ctx = a;
    atomic_store(&s->m.connected, 1);
    fb_info(NULL, NULL, "http: API%s on %s://%s%s%s:%u/ (tokens: %s, anonymous: %s, writes: %s)",
            cfg->ui ? " and web page" : "", a->h.tls ? "https" : "http", v6 ? "[" : "", host, v6 ? "]" : "",
            (unsigned)a->port, cfg->tokens ? cfg->tokens : "none", fb_http_role_name(cfg->anonymous),
            a->h.tls                ? "TLS"
            : cfg->plaintext_writes ? "plaintext on loopback"
                                    : "refused without TLS");
    return 0;
fail:
    if (a->worker_started) {
        pthread_mutex_lock(&a->job_mu);
        a->job_stop = true;
        pthread_cond_broadcast(&a->job_cv);
        pthread_mutex_unlock(&a->job_mu);
        pthread_join(a->worker, NULL);
    }
    api_free(a);
    return rc < 0 ? rc : FB_EIO;
}

static int api_send(struct fb_sink_inst *s, const struct fb_batch *b, uint64_t batch_id)
{
    struct api *a = s->ctx;
    if (!a) {
        fb_sink_done(s, batch_id, FB_DROP);
        return FB_EINVAL;
    }
    fb_buf_clear(&a->ev);
    switch (b->kind) {
        case FB_BATCH_DATA:
            fb_live_update(a->h.live, b);
            if (a->nsse) {
                fb_telemetry_json(&a->ev, a->gw, b);
                fb_live_event(a->h.live, "values", a->ev.p, a->ev.len);
            }
            break;
        case FB_BATCH_DEVSTATE:
            fb_devstatus_json(&a->ev, a->gw, b);
            fb_live_event(a->h.live, "status", a->ev.p, a->ev.len);
            break;
        case FB_BATCH_ALARM: /* the event message of docs/mqtt.md */
            fb_alarm_event_json(&a->ev, a->gw, b);
            fb_live_event(a->h.live, "alarm", a->ev.p, a->ev.len);
            break;
        default: break;
    }
    fb_sink_done(s, batch_id, FB_SENT); /* a live view: nothing to retry */
    wake_subscribers(a);
    return 0;
}

static bool api_ready(struct fb_sink_inst *s, bool pace)
{
    (void)pace;
    return s->ctx != NULL;
}

static void reload_tokens(struct api *a)
{
    struct timespec mt;
    off_t sz;
    tokens_stat(a, &mt, &sz);
    if (mt.tv_sec == a->tokens_mtime.tv_sec && mt.tv_nsec == a->tokens_mtime.tv_nsec && sz == a->tokens_size) return;
    a->tokens_mtime = mt;
    a->tokens_size = sz;
    struct fb_http_tokens t;
    struct fb_err e = {0};
    if (fb_http_tokens_load(a->cfg->tokens, &t, &e) < 0) {
        fb_warn(NULL, NULL, "http: tokens file changed but cannot be used (%s); keeping the previous tokens", e.msg);
        return;
    }
    pthread_mutex_lock(&a->h.tokens_mu);
    struct fb_http_tokens old = a->h.tokens;
    a->h.tokens = t;
    pthread_mutex_unlock(&a->h.tokens_mu);
    fb_http_tokens_free(&old);
    fb_info(NULL, NULL, "http: tokens reloaded from %s (%zu tokens)", a->cfg->tokens, t.n);
}

/* Requests whose answer is overdue get 504 (the write may still be done). */
static void expire_pending(struct api *a, int64_t now)
{
    struct pending *due[64];
    size_t n = 0;
    pthread_mutex_lock(&a->pend_mu);
    for (struct pending *p = a->pend; p && n < 64; p = p->next)
        if (atomic_load(&p->state) == 0 && now >= p->deadline && pending_ref_live(p)) due[n++] = p;
    pthread_mutex_unlock(&a->pend_mu);
    for (size_t i = 0; i < n; i++) {
        struct pending *p = due[i];
        if (p->kind == P_WRITE)
            answer_error(p, 504, "no answer from the device within http.write_timeout; the write may still be done");
        else
            answer_error(p, 504, "no result in time");
        pending_unref(p);
    }
}

static void api_tick(struct fb_sink_inst *s)
{
    struct api *a = s->ctx;
    if (!a) return;
    int64_t now = fb_mono_ns();
    if (now >= a->next_status) {
        int64_t iv = a->gw->status_interval_ns > 0 ? a->gw->status_interval_ns : 30 * SEC;
        if (iv > 10 * SEC) iv = 10 * SEC;
        if (iv < SEC) iv = SEC;
        a->next_status = now + iv;
        fb_buf_clear(&a->ev);
        fb_status_json(a->gw, &a->ev, true);
        fb_live_event(a->h.live, "gateway", a->ev.p, a->ev.len);
        wake_subscribers(a);
    }
    if (now >= a->next_ping) {
        a->next_ping = now + PING_NS;
        fb_live_event(a->h.live, "ping", "{}", 2);
        wake_subscribers(a);
    }
    if (a->cfg->tokens && now >= a->next_tokens) {
        a->next_tokens = now + 2 * SEC;
        reload_tokens(a);
    }
    expire_pending(a, now);
}

static void api_close(struct fb_sink_inst *s)
{
    struct api *a = s->ctx;
    if (!a) return;
    atomic_store(&s->m.connected, 0);
    atomic_store(&a->closing, true);
    /* the worker: no new jobs; a running browse finishes (its own timeout bounds it) */
    pthread_mutex_lock(&a->job_mu);
    a->job_stop = true;
    struct pending *q = a->job_head;
    a->job_head = a->job_tail = NULL;
    a->njobs = 0;
    pthread_cond_broadcast(&a->job_cv);
    pthread_mutex_unlock(&a->job_mu);
    while (q) {
        struct pending *nx = q->jnext;
        answer_error(q, 503, "the gateway is stopping");
        pending_unref(q);
        q = nx;
    }
    if (a->worker_started) pthread_join(a->worker, NULL);
    /* every suspended connection is resumed (its readers see `closing`); the
     * router has stopped (runtime.c stops it before the sinks close), so
     * writes it never answered are answered here and its references dropped */
    for (int round = 0; round < 50; round++) {
        wake_subscribers(a);
        struct pending *ps[256];
        size_t n = 0;
        pthread_mutex_lock(&a->pend_mu);
        for (struct pending *p = a->pend; p && n < 256; p = p->next)
            if (pending_ref_live(p)) ps[n++] = p;
        pthread_mutex_unlock(&a->pend_mu);
        bool any = false;
        for (size_t i = 0; i < n; i++) {
            answer_error(ps[i], 503, "the gateway is stopping");
            if (atomic_exchange(&ps[i]->router_ref, 0)) pending_unref(ps[i]);
            if (atomic_load(&ps[i]->suspended)) any = true;
            pending_unref(ps[i]);
        }
        for (uint32_t i = 0; i < a->nsse; i++)
            any = any || (atomic_load(&a->sse[i].used) && atomic_load(&a->sse[i].suspended));
        if (!any) break;
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    M.stop_daemon(a->d);
    /* what MHD still held is released by on_completed; what is left is ours */
    s->ctx = NULL;
    api_free(a);
}

static bool str_same(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

/* Every setting of the section (the config file's text is not one: it is
 * taken again from the new config when the sink is kept).  With TLS a
 * reload restarts the API, so renewed certificate files under the same
 * names are read. */
static bool api_cfg_equal(const void *pa, const void *pb)
{
    const struct fb_http_cfg *a = pa, *b = pb;
    if (!a || !b) return a == b;
    if (a->tls_cert || a->tls_key || b->tls_cert || b->tls_key) return false;
    if (!str_same(a->listen, b->listen) || !str_same(a->tokens, b->tokens) || a->anonymous != b->anonymous ||
        a->plaintext_writes != b->plaintext_writes || a->max_body != b->max_body || a->rate != b->rate ||
        a->max_connections != b->max_connections || a->max_events != b->max_events ||
        a->events_buffer != b->events_buffer || a->write_timeout_ns != b->write_timeout_ns || a->ui != b->ui)
        return false;
    size_t i = 0;
    for (; a->cors && b->cors && a->cors[i] && b->cors[i]; i++)
        if (strcmp(a->cors[i], b->cors[i])) return false;
    return (!a->cors || !a->cors[i]) && (!b->cors || !b->cors[i]);
}

/* A reload keeps the API (same section) while devices or tags change: the
 * daemon, its listening socket and every open connection stay — event
 * streams read on from the same ring, pending writes and jobs carry on.
 * What is by tag or device id, the latest-value table, is made again for the
 * new model, and GET /api/v1/config shows the new config's text.  Requests
 * wait meanwhile (model_rw); the sink thread is parked. */
static void api_model_begin(struct fb_sink_inst *s)
{
    struct api *a = s->ctx;
    if (a) pthread_rwlock_wrlock(&a->model_rw);
}

static void api_model_end(struct fb_sink_inst *s, const struct fb_model_map *map)
{
    struct api *a = s->ctx;
    if (!a) return;
    if (fb_live_remodel(a->h.live, map) < 0)
        fb_error(NULL, NULL, "http: out of memory after the reload: no latest values until they come again");
    struct fb_http_cfg *c = a->cfg;
    free(c->cfg_text);
    c->cfg_text = NULL;
    c->cfg_len = 0;
    free(c->cfg_path);
    c->cfg_path = a->gw->cfg_path ? strdup(a->gw->cfg_path) : NULL;
    read_cfg_text(c, c->cfg_path);
    a->next_status = fb_mono_ns(); /* the gateway event with the new devices soon */
    pthread_rwlock_unlock(&a->model_rw);
    fb_info(NULL, NULL, "http: kept across the reload (port %u, %u devices)", (unsigned)a->port, a->gw->ndevs);
}

uint16_t fb_http_api_port(const struct fb_sink_inst *s)
{
    const struct api *a = s ? s->ctx : NULL;
    return a ? a->port : 0;
}

const struct fb_sink fb_sink_http = {
    .name = "http",
    .keys = k_http,
    .nested = k_nested,
    .live = true,
    .cfg_load = cfg_load,
    .cfg_free = cfg_free,
    .describe = describe,
    .open = api_open,
    .send = api_send,
    .ready = api_ready,
    .tick = api_tick,
    .close = api_close,
    .cfg_equal = api_cfg_equal,
    .model_begin = api_model_begin,
    .model_end = api_model_end,
};
