/* http.c — the metrics endpoint: GET /metrics (Prometheus text 0.0.4) and
 * GET /status (the gateway status JSON), served by libmicrohttpd.
 *
 * One MHD daemon with its own internal polling thread (epoll/poll/select
 * chosen by MHD; it sleeps in the kernel between requests, never
 * busy-polls).  Because that one thread serves every request, the render
 * buffer is a single static fb_buf reused from request to request: after
 * the first scrape it no longer allocates.  MHD copies the body into its
 * response.  The endpoint is off unless `metrics: {listen: …}` is set.
 *
 * libmicrohttpd is loaded with dlopen() when the endpoint is started, not
 * linked: Debian builds it against GnuTLS, whose libraries cost about 2.3 MB
 * of resident memory at start-up — more than 10,000 tags — for gateways that
 * never enable metrics.  The headers still come from libmicrohttpd-dev.
 */
#include "north/http/http.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/runtime.h"

/* the library's entry points, resolved at start */
static struct {
    void *lib;
    __typeof__(MHD_start_daemon) *start_daemon;
    __typeof__(MHD_stop_daemon) *stop_daemon;
    __typeof__(MHD_create_response_from_buffer) *create_response_from_buffer;
    __typeof__(MHD_add_response_header) *add_response_header;
    __typeof__(MHD_queue_response) *queue_response;
    __typeof__(MHD_destroy_response) *destroy_response;
    __typeof__(MHD_get_daemon_info) *get_daemon_info;
} mhd;
#define MHD_start_daemon mhd.start_daemon
#define MHD_stop_daemon mhd.stop_daemon
#define MHD_create_response_from_buffer mhd.create_response_from_buffer
#define MHD_add_response_header mhd.add_response_header
#define MHD_queue_response mhd.queue_response
#define MHD_destroy_response mhd.destroy_response
#define MHD_get_daemon_info mhd.get_daemon_info

static int mhd_load(struct fb_err *err)
{
    if (mhd.lib) return 0;
    static const char *const names[] = {"libmicrohttpd.so.12", "libmicrohttpd.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !mhd.lib; i++)
        mhd.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!mhd.lib)
        return fb_err_set(err, FB_ENOENT, "metrics: cannot load libmicrohttpd (apt install libmicrohttpd12): %s",
                          dlerror());
#define LOAD(field, sym)                                                                   \
    do {                                                                                   \
        *(void **)&mhd.field = dlsym(mhd.lib, sym);                                        \
        if (!mhd.field) {                                                                  \
            dlclose(mhd.lib);                                                              \
            mhd.lib = NULL;                                                                \
            return fb_err_set(err, FB_ENOENT, "metrics: libmicrohttpd lacks %s", sym);      \
        }                                                                                  \
    } while (0)
    LOAD(start_daemon, "MHD_start_daemon");
    LOAD(stop_daemon, "MHD_stop_daemon");
    LOAD(create_response_from_buffer, "MHD_create_response_from_buffer");
    LOAD(add_response_header, "MHD_add_response_header");
    LOAD(queue_response, "MHD_queue_response");
    LOAD(destroy_response, "MHD_destroy_response");
    LOAD(get_daemon_info, "MHD_get_daemon_info");
#undef LOAD
    return 0;
}

static struct MHD_Daemon *daemon_;
static struct fb_gateway *gw_;
static struct fb_buf body_;
static uint16_t port_;

int fb_http_parse_listen(const char *listen, char *host, size_t cap, uint16_t *port,
                         struct fb_err *err)
{
    if (!listen || !*listen)
        return fb_err_set(err, FB_EINVAL, "metrics listen address is empty (expected host:port)");
    const char *ps;
    size_t hl;
    const char *h = listen;
    if (listen[0] == '[') { /* [v6]:port */
        const char *rb = strchr(listen, ']');
        if (!rb || rb[1] != ':')
            return fb_err_set(err, FB_EINVAL,
                              "metrics listen '%s': expected [IPv6]:port, e.g. [::1]:9100", listen);
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
                return fb_err_set(err, FB_EINVAL,
                                  "metrics listen '%s': write IPv6 addresses as [addr]:port", listen);
            hl = (size_t)(colon - listen);
            ps = colon + 1;
            if (hl == 0) { /* ":9100": all interfaces */
                h = "0.0.0.0";
                hl = strlen(h);
            }
        }
    }
    if (hl == 0 || hl >= cap)
        return fb_err_set(err, FB_EINVAL, "metrics listen '%s': bad host", listen);
    char *end;
    if (!*ps || *ps < '0' || *ps > '9')
        return fb_err_set(err, FB_EINVAL, "metrics listen '%s': port missing (expected host:port)",
                          listen);
    unsigned long p = strtoul(ps, &end, 10);
    if (*end || p > 65535)
        return fb_err_set(err, FB_EINVAL, "metrics listen '%s': port must be 0..65535", listen);
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (uint16_t)p;
    return 0;
}

uint16_t fb_http_port(void) { return port_; }

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    fb_warn(NULL, NULL, "http: %s", msg);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *ctype,
                             const char *p, size_t n)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(n, (void *)(uintptr_t)p, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **req_cls)
{
    (void)cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    static const char text[] = "text/plain; charset=utf-8";
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        static const char m[] = "method not allowed\n";
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, m, sizeof m - 1);
    }
    fb_buf_clear(&body_);
    if (strcmp(url, "/metrics") == 0) {
        fb_metrics_render(gw_, &body_);
        return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body_.p,
                     body_.len);
    }
    if (strcmp(url, "/status") == 0) {
        fb_status_json(gw_, &body_, true);
        fb_buf_putc(&body_, '\n');
        return reply(c, MHD_HTTP_OK, "application/json", body_.p, body_.len);
    }
    static const char nf[] = "not found (try /metrics or /status)\n";
    return reply(c, MHD_HTTP_NOT_FOUND, text, nf, sizeof nf - 1);
}

int fb_http_start(struct fb_gateway *gw, struct fb_err *err)
{
    if (daemon_) return fb_err_set(err, FB_EINVAL, "metrics endpoint already running");
    if (!gw || !gw->metrics_listen) return fb_err_set(err, FB_EINVAL, "no metrics listen address");
    char host[256];
    uint16_t port;
    int rc = fb_http_parse_listen(gw->metrics_listen, host, sizeof host, &port, err);
    if (rc) return rc;
    if ((rc = mhd_load(err)) < 0) return rc;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char ports[8];
    snprintf(ports, sizeof ports, "%u", (unsigned)port);
    int gai = getaddrinfo(host, ports, &hints, &ai);
    if (gai || !ai)
        return fb_err_set(err, FB_EINVAL, "metrics listen '%s': cannot resolve '%s': %s",
                          gw->metrics_listen, host, gai ? gai_strerror(gai) : "no address");
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen <= sizeof ss ? ai->ai_addrlen : sizeof ss);
    bool v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (v6) flags |= MHD_USE_IPv6;
    gw_ = gw;
    fb_buf_init(&body_);
    daemon_ = MHD_start_daemon(flags, port, NULL, NULL, handle, NULL,
                               MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first, or MHD complains */
                               MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                               MHD_OPTION_END);
    if (!daemon_) {
        fb_buf_free(&body_);
        gw_ = NULL;
        return fb_err_set(err, FB_EIO, "metrics endpoint: cannot listen on %s (in use?)",
                          gw->metrics_listen);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
    port_ = info ? info->port : port;
    fb_info(NULL, NULL, "metrics on http://%s%s%s:%u/metrics", v6 ? "[" : "", host, v6 ? "]" : "",
            (unsigned)port_);
    return 0;
}

void fb_http_stop(void)
{
    if (!daemon_) return;
    MHD_stop_daemon(daemon_);
    daemon_ = NULL;
    gw_ = NULL;
    port_ = 0;
    fb_buf_free(&body_);
}
