/* http.c — the metrics endpoint: GET /metrics (Prometheus text 0.0.4) and
 * GET /status (the gateway status JSON), served by libmicrohttpd.
 *
 * One MHD daemon with its own internal polling thread (epoll/poll/select
 * chosen by MHD; it sleeps in the kernel between requests, never
 * busy-polls).  Because that one thread serves every request, the render
 * buffer is one fb_buf per endpoint reused from request to request: after
 * the first scrape it no longer allocates.  MHD copies the body into its
 * response.  The endpoint is off unless `metrics: {listen: …}` is set.
 *
 * libmicrohttpd is loaded with dlopen() when the endpoint is started, not
 * linked (mhd.c): Debian builds it against GnuTLS, whose libraries cost about
 * 2.3 MB of resident memory at start-up — more than 10,000 tags — for
 * gateways that never enable metrics.
 *
 * It stays a service of its own beside the HTTP API (api.c, the `http:`
 * sink): Prometheus scrapes without a token, usually from a monitoring
 * network, while the API wants TLS and bearer tokens; one port for both
 * would force either tokens on every scraper or an unauthenticated corner
 * in the API.  GET /api/v1/status serves the same status JSON with the API's
 * authentication.  `metrics.tls` serves it over TLS (scrapers verify the
 * gateway and the data is private on the way; the endpoint stays read-only
 * and unauthenticated, docs/security.md).
 */
#include "north/http/http.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/cfg.h"
#include "core/log.h"
#include "core/metrics.h"
#include "north/http/mhd.h"

#define MHD_start_daemon fb_mhd.start_daemon
#define MHD_stop_daemon fb_mhd.stop_daemon
#define MHD_create_response_from_buffer fb_mhd.create_response_from_buffer
#define MHD_add_response_header fb_mhd.add_response_header
#define MHD_queue_response fb_mhd.queue_response
#define MHD_destroy_response fb_mhd.destroy_response
#define MHD_get_daemon_info fb_mhd.get_daemon_info

struct fb_http {
    struct MHD_Daemon *daemon;
    struct fb_gateway *gw;
    struct fb_buf body; /* MHD's one polling thread renders into it */
    struct fb_mhd_tls tls;
    uint16_t port;
};

int fb_http_parse_listen(const char *listen, char *host, size_t cap, uint16_t *port, struct fb_err *err)
{
    if (!listen || !*listen) return fb_err_set(err, FB_EINVAL, "metrics listen address is empty (expected host:port)");
    const char *ps;
    size_t hl;
    const char *h = listen;
    if (listen[0] == '[') { /* [v6]:port */
        const char *rb = strchr(listen, ']');
        if (!rb || rb[1] != ':')
            return fb_err_set(err, FB_EINVAL, "metrics listen '%s': expected [IPv6]:port, e.g. [::1]:9100", listen);
        h = listen + 1;
        hl = (size_t)(rb - h);
        ps = rb + 2;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon) { /* bare port: loopback */
            h = "127.0.0.1";
            hl = strlen(h);
            ps = listen;
        } else {
            if (strchr(listen, ':') != colon)
                return fb_err_set(err, FB_EINVAL, "metrics listen '%s': write IPv6 addresses as [addr]:port", listen);
            hl = (size_t)(colon - listen);
            ps = colon + 1;
            if (hl == 0) { /* ":9100": all interfaces */
                h = "0.0.0.0";
                hl = strlen(h);
            }
        }
    }
    if (hl == 0 || hl >= cap) return fb_err_set(err, FB_EINVAL, "metrics listen '%s': bad host", listen);
    char *end;
    if (!*ps || *ps < '0' || *ps > '9')
        return fb_err_set(err, FB_EINVAL, "metrics listen '%s': port missing (expected host:port)", listen);
    unsigned long p = strtoul(ps, &end, 10);
    if (*end || p > 65535) return fb_err_set(err, FB_EINVAL, "metrics listen '%s': port must be 0..65535", listen);
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (uint16_t)p;
    return 0;
}

int fb_http_listen_addr(const char *listen, struct sockaddr_storage *ss, bool *v6, char *host, size_t cap,
                        uint16_t *port, struct fb_err *err)
{
    int rc = fb_http_parse_listen(listen, host, cap, port, err);
    if (rc) return rc;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char ports[8];
    snprintf(ports, sizeof ports, "%u", (unsigned)*port);
    int gai = getaddrinfo(host, ports, &hints, &ai);
    if (gai || !ai)
        return fb_err_set(err, FB_EINVAL, "listen '%s': cannot resolve '%s': %s", listen, host,
                          gai ? gai_strerror(gai) : "no address");
    memset(ss, 0, sizeof *ss);
    memcpy(ss, ai->ai_addr, ai->ai_addrlen <= sizeof *ss ? ai->ai_addrlen : sizeof *ss);
    *v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    return 0;
}

uint16_t fb_http_port(const struct fb_http *h) { return h ? h->port : 0; }

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    fb_warn(NULL, NULL, "http: %s", msg);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *ctype, const char *p, size_t n)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)(uintptr_t)p, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size, void **req_cls)
{
    struct fb_http *h = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    static const char text[] = "text/plain; charset=utf-8";
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        static const char m[] = "method not allowed\n";
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, m, sizeof m - 1);
    }
    fb_buf_clear(&h->body);
    if (strcmp(url, "/metrics") == 0) {
        fb_metrics_render(h->gw, &h->body);
        return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", h->body.p, h->body.len);
    }
    if (strcmp(url, "/status") == 0) {
        fb_status_json(h->gw, &h->body, true);
        fb_buf_putc(&h->body, '\n');
        return reply(c, MHD_HTTP_OK, "application/json", h->body.p, h->body.len);
    }
    static const char nf[] = "not found (try /metrics or /status)\n";
    return reply(c, MHD_HTTP_NOT_FOUND, text, nf, sizeof nf - 1);
}

int fb_http_start(struct fb_gateway *gw, const char *listen, const char *tls_cert, const char *tls_key,
                  struct fb_http **out, struct fb_err *err)
{
    *out = NULL;
    if (!gw || !listen) return fb_err_set(err, FB_EINVAL, "no metrics listen address");
    char host[256];
    uint16_t port;
    struct sockaddr_storage ss;
    bool v6 = false;
    int rc = fb_http_listen_addr(listen, &ss, &v6, host, sizeof host, &port, err);
    if (rc) return rc;
    if ((rc = fb_mhd_load("metrics", err)) < 0) return rc;

    struct fb_http *h = calloc(1, sizeof *h);
    if (!h) return fb_err_set(err, FB_ENOMEM, "out of memory");
    h->gw = gw;
    fb_buf_init(&h->body);
    bool tls = tls_cert && tls_key;
    if (tls && (rc = fb_mhd_tls_load(&h->tls, tls_cert, tls_key, "metrics.tls", err)) < 0) {
        free(h);
        return rc;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (v6) flags |= MHD_USE_IPv6;
    if (tls)
        h->daemon =
            MHD_start_daemon(flags | MHD_USE_TLS, port, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
                             NULL, /* first, or MHD complains */
                             MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_HTTPS_MEM_CERT, h->tls.cert_pem,
                             MHD_OPTION_HTTPS_MEM_KEY, h->tls.key_pem, MHD_OPTION_HTTPS_PRIORITIES,
                             FB_MHD_TLS_PRIORITIES, MHD_OPTION_END);
    else
        h->daemon = MHD_start_daemon(flags, port, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
                                     NULL, /* first, or MHD complains */
                                     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                                     (unsigned)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!h->daemon) {
        fb_mhd_tls_free(&h->tls);
        fb_buf_free(&h->body);
        free(h);
        return fb_err_set(err, FB_EIO, "metrics endpoint: cannot listen on %s (in use?%s)", listen,
                          tls ? " for TLS: is the key the certificate's?" : "");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : port;
    fb_info(NULL, NULL, "metrics on %s://%s%s%s:%u/metrics", tls ? "https" : "http", v6 ? "[" : "", host, v6 ? "]" : "",
            (unsigned)h->port);
    *out = h;
    return 0;
}

void fb_http_stop(struct fb_http *h)
{
    if (!h) return;
    MHD_stop_daemon(h->daemon);
    fb_mhd_tls_free(&h->tls);
    fb_buf_free(&h->body);
    free(h);
}

/* ------------------------------------------------------------ the service */
/* `metrics: {listen: HOST:PORT, tls: {cert: FILE, key: FILE}}` (core/sinks.c
 * lists it). */
static const char *const k_metrics[] = {"listen", "tls", NULL};
static const char *const k_metrics_tls[] = {"cert", "key", NULL};
static const struct fb_config_keys k_metrics_nested[] = {{"metrics.tls", k_metrics_tls}, {NULL, NULL}};

struct metrics_cfg {
    char *listen, *tls_cert, *tls_key;
};

static void metrics_cfg_free(void *p)
{
    struct metrics_cfg *c = p;
    if (!c) return;
    free(c->listen);
    free(c->tls_cert);
    free(c->tls_key);
    free(c);
}

static void *http_cfg_load(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw)
{
    (void)gw;
    struct fb_cfg_node *n = fb_cfg_get(m, "listen");
    if (!n) {
        fb_cfg_error(r, NULL, "metrics.listen is required (HOST:PORT such as 127.0.0.1:9100)");
        return NULL;
    }
    char *s = fb_cfg_str(r, NULL, n, "metrics.listen");
    if (!s) return NULL;
    const char *colon = strrchr(s, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon == s || !end || *end || port < 1 || port > 65535) {
        fb_cfg_error(r, n, "metrics.listen: expected HOST:PORT such as 127.0.0.1:9100, got '%s'", s);
        free(s);
        return NULL;
    }
    struct metrics_cfg *c = calloc(1, sizeof *c);
    if (!c) {
        free(s);
        fb_cfg_error(r, n, "out of memory");
        return NULL;
    }
    c->listen = s;
    struct fb_cfg_map t = {0};
    struct fb_cfg_node *x;
    if ((n = fb_cfg_get(m, "tls")) && fb_cfg_map_load(r, n, "metrics.tls", &t)) {
        fb_cfg_map_check(r, &t, k_metrics_tls, "metrics.tls", false);
        if ((x = fb_cfg_get(&t, "cert"))) c->tls_cert = fb_cfg_file_ref(r, x, "metrics.tls.cert", FB_OPT_CERT, NULL);
        if ((x = fb_cfg_get(&t, "key"))) c->tls_key = fb_cfg_file_ref(r, x, "metrics.tls.key", FB_OPT_KEY, NULL);
        if (!c->tls_cert != !c->tls_key) fb_cfg_error(r, n, "metrics.tls needs both cert and key (PEM files)");
    }
    fb_cfg_map_free(&t);
    return c;
}

static void http_describe(const struct fb_service_inst *si, FILE *f)
{
    const struct metrics_cfg *c = si->cfg;
    fprintf(f, "  metrics on %s://%s  (GET /metrics, /status%s)\n", c->tls_cert ? "https" : "http", c->listen,
            c->tls_cert ? "; TLS" : "");
}

static void *http_svc_start(struct fb_gateway *gw, const void *cfg, struct fb_err *err)
{
    const struct metrics_cfg *c = cfg;
    struct fb_http *h = NULL;
    fb_http_start(gw, c->listen, c->tls_cert, c->tls_key, &h, err);
    return h;
}
static void http_svc_stop(void *h) { fb_http_stop(h); }
/* A config reload keeps the endpoint (its clients' connections stay up) when
 * it listens on the same address without TLS; with TLS it restarts, so a
 * reload picks up renewed certificate files under the same names. */
static bool http_cfg_equal(const void *a, const void *b)
{
    const struct metrics_cfg *x = a, *y = b;
    return x && y && !strcmp(x->listen, y->listen) && !x->tls_cert && !y->tls_cert;
}

const struct fb_service fb_service_http = {
    .name = "metrics",
    .keys = k_metrics,
    .nested = k_metrics_nested,
    .cfg_load = http_cfg_load,
    .cfg_free = metrics_cfg_free,
    .describe = http_describe,
    .start = http_svc_start,
    .stop = http_svc_stop,
    .cfg_equal = http_cfg_equal,
};
