/* handler.h — the HTTP API's request handling without the HTTP library
 * (handler.c): a request (method, path, arguments, the headers that
 * matter, the body, the peer) in, a status, headers and a body out.  The
 * MHD glue (api.c) feeds it, and so do the unit tests and the fuzzer.
 * Requests that cannot be answered at once (writes through the command
 * router, browse, config check, the event stream) come back as a `kind`
 * the glue carries out. */
#ifndef FB_HTTP_HANDLER_H
#define FB_HTTP_HANDLER_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/model.h"
#include "north/http/auth.h"
#include "north/http/live.h"
#include "north/http/route.h"

/* The `http:` section (docs/http-api.md, docs/configuration.md). */
struct fb_http_cfg {
    char *listen;             /* HOST:PORT */
    char *tls_cert, *tls_key; /* PEM files; both or neither */
    char *tokens;             /* the tokens file, NULL = none */
    int anonymous;            /* role of a request without a token: none (default) or viewer */
    bool plaintext_writes;    /* operator endpoints without TLS: only on a loopback listener */
    char **cors;              /* allowed origins (exact), NULL-terminated; NULL = no CORS */
    uint64_t max_body;        /* largest request body (bytes) */
    uint32_t rate;            /* requests per second per client address (burst: twice), 0 = off */
    uint32_t max_connections; /* open connections at once */
    uint32_t max_events;      /* event-stream subscribers at once */
    uint64_t events_buffer;   /* bytes of events kept for subscribers (ring) */
    int64_t write_timeout_ns; /* how long a write waits for the router's answer */
    bool ui;                  /* serve the web page */
    char *cfg_path;           /* the config file this came from */
    char *cfg_text;           /* its text as loaded, for GET /api/v1/config */
    size_t cfg_len;
};

#define FB_HTTP_MAX_ARGS 16
struct fb_http_arg {
    const char *k, *v;
};

struct fb_http_req {
    const char *method, *path;
    struct fb_http_arg args[FB_HTTP_MAX_ARGS]; /* query arguments, decoded */
    int nargs;
    bool args_overflow;                 /* more than FB_HTTP_MAX_ARGS */
    const char *authorization, *origin; /* header values or NULL */
    const char *host;                   /* Host header, for same-origin requests */
    const char *content_length;         /* as sent, or NULL */
    const char *body;                   /* NULL in the first pass (headers only) */
    size_t body_len;
    bool tls;
    char peer[64];        /* client address as text */
    uint8_t peer_key[16]; /* the address, for the rate limit */
};

enum fb_http_kind {
    FB_RESP_DONE = 0, /* status, ctype and body are the answer */
    FB_RESP_CONTINUE, /* first pass: accepted so far, read the body */
    FB_RESP_STATIC,   /* static_data is the body (a page file) */
    FB_RESP_WRITE,    /* submit body as a command for `device` */
    FB_RESP_EVENTS,   /* start an event stream */
    FB_RESP_CHECK,    /* check the body as a config */
    FB_RESP_BROWSE,   /* browse `url` */
};

struct fb_http_resp {
    int status;
    int kind; /* enum fb_http_kind */
    const char *ctype;
    struct fb_buf *body; /* the caller's buffer, cleared by the handler */
    const unsigned char *static_data;
    size_t static_len;
    const char *allow;       /* Allow header (405, OPTIONS) */
    bool www_authenticate;   /* 401 */
    int retry_after;         /* seconds, for 429/503 (0 = none) */
    const char *cors_origin; /* echo as Access-Control-Allow-Origin */
    bool preflight;          /* an answered CORS preflight */
    uint32_t device;         /* FB_RESP_WRITE */
    const char *url;         /* FB_RESP_BROWSE: points into the request */
    char user[FB_TOKEN_NAME_MAX];
    int role;
};

#define FB_HTTP_LOG_BURST 20

/* Per-address token buckets: a fixed table, the oldest entry reused. */
#define FB_HTTP_RL_SLOTS 256
struct fb_http_rl {
    uint8_t key[16];
    double tokens;
    int64_t t_ns;
    bool used;
};

/* The API's state that request handling reads (one per running sink). */
struct fb_http_api {
    struct fb_gateway *gw;
    const struct fb_http_cfg *cfg;
    struct fb_live *live;
    bool tls; /* the listener speaks TLS */
    /* tokens: replaced when the file changes (tokens_mu) */
    pthread_mutex_t tokens_mu;
    struct fb_http_tokens tokens;
    /* rate limit: touched only by the HTTP thread */
    struct fb_http_rl rl[FB_HTTP_RL_SLOTS];
    /* refused requests are logged one by one, up to FB_HTTP_LOG_BURST a
     * second; beyond that they are counted and the count is logged */
    int64_t log_window_ns;
    uint32_t log_lines;
    uint64_t log_suppressed;
    _Atomic uint64_t refused, requests;
};

/* Handle one request.  Called twice for requests with a body: first with
 * req->body NULL (route, limits, auth: FB_RESP_CONTINUE or a refusal), then
 * with the body.  Must run on one thread at a time per api (the rate table
 * is not locked). */
void fb_http_handle(struct fb_http_api *api, const struct fb_http_req *req, struct fb_http_resp *resp);

/* A JSON error body {"error":"…","status":N}. */
void fb_http_error(struct fb_http_resp *resp, int status, const char *fmt, ...) FB_PRINTF(3, 4);
/* Look up a query argument (the first with that key), NULL when absent. */
const char *fb_http_arg(const struct fb_http_req *req, const char *key);
#endif
