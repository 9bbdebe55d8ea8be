/* fuzz_http_request.c — libFuzzer harness for the HTTP API's request side:
 * the route table, query arguments, the Authorization header and token
 * look-up, CORS and origin checks, the body pass, and every read endpoint's
 * rendering (devices, tags, values with filters, whoami, config with
 * redaction), plus the tokens-file parser, the YAML redactor and the event
 * ring's Last-Event-ID resume on the same bytes.
 *
 * Input layout: fields separated by '\n' —
 *   flags byte, method, path, query (k=v&k=v), Authorization, Origin,
 *   Content-Length, then the body (the rest, newlines included).
 * The gateway is loaded once from a config in memory (two simulated
 * devices, no runtime), with live values for some tags; answers must be a
 * status 100..599 and, for JSON, valid JSON.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/h && ./fuzz_http_request /tmp/h tests/fuzz/corpus/http_request
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch.h"
#include "core/config.h"
#include "core/log.h"
#include "north/http/handler.h"
#include "north/http/redact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char cfg_text[] = "gateway: {id: g}\n"
                               "devices:\n"
                               "  - name: d\n"
                               "    url: \"sim://x\"\n"
                               "    tags:\n"
                               "      - {name: t, addr: \"const:1\", unit: bar}\n"
                               "      - {name: s, addr: \"const:\\\"abc\\\"\"}\n"
                               "      - {name: w, addr: \"memory:initial=2\", access: rw, range: [0, 10]}\n"
                               "  - name: e\n"
                               "    url: \"sim://y\"\n"
                               "    tags: [{name: t, addr: \"const:3\"}]\n";

static struct fb_gateway *gw;
static struct fb_http_cfg cfg;
static struct fb_http_api api;
static struct fb_buf body;
static char *cors[] = {"https://ok.example", NULL};

static void setup(void)
{
    fb_log_init(-1, FB_LOG_TEXT); /* silence */
    struct fb_config_opts o = {false, NULL};
    FILE *devnull = fopen("/dev/null", "w");
    o.diag = devnull;
    if (fb_config_load_mem("/nonexistent/f.yaml", cfg_text, sizeof cfg_text - 1, &o, &gw) != 0) abort();
    fclose(devnull);
    cfg.max_body = 4096;
    cfg.rate = 1000000;
    cfg.ui = true;
    cfg.cors = cors;
    cfg.cfg_path = "/nonexistent/f.yaml";
    cfg.cfg_text = (char *)cfg_text;
    cfg.cfg_len = sizeof cfg_text - 1;
    api.gw = gw;
    api.cfg = &cfg;
    api.live = fb_live_new(gw, 8192);
    pthread_mutex_init(&api.tokens_mu, NULL);
    /* "op-token" and "vi-token" */
    static const char tok[] = "op:operator:sha256:5ea0f11fa4f5eb84c3b9e3fd3fef6d6c1e1b2e8fd1f2bd1b9b0cf1f5e1bd0e5b\n";
    struct fb_err e;
    fb_http_tokens_parse("t", tok, sizeof tok - 1, &api.tokens, &e);
    struct fb_batch *b = fb_batch_new(4, 0, 16);
    b->ts = 1;
    struct fb_value v = {.type = FB_T_FLOAT64, .f = 1.5};
    fb_batch_add(b, 0, FB_Q_GOOD, 1, &v);
    struct fb_value sv = {.type = FB_T_STRING, .s = {"x\"y", 3}};
    fb_batch_add(b, 1, FB_Q_UNC_LAST_USABLE, 1, &sv);
    fb_live_update(api.live, b);
    fb_batch_free(b);
    fb_live_event(api.live, "values", "{}", 2);
    fb_buf_init(&body);
}

/* Next '\n'-terminated field (NUL-terminated in place), or NULL at the end. */
static char *field(char **p, char *end)
{
    if (*p >= end) return NULL;
    char *s = *p;
    char *nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl) {
        *p = end;
        return s; /* the caller's copy has a NUL after end */
    }
    *nl = 0;
    *p = nl + 1;
    return s;
}

static void check_answer(const struct fb_http_resp *r)
{
    if (r->status < 100 || r->status > 599) abort();
    if (r->kind == FB_RESP_DONE && r->ctype && !strcmp(r->ctype, "application/json") && r->status != 204) {
        json_error_t je;
        json_t *j = json_loadb(r->body->p ? r->body->p : "", r->body->len, 0, &je);
        if (!j) abort();
        json_decref(j);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int done;
    if (!done) {
        setup();
        done = 1;
    }
    if (size < 1 || size > 16384) return 0;
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = 0;
    char *p = copy + 1, *end = copy + size;
    uint8_t flags = (uint8_t)copy[0];
    struct fb_http_req rq;
    memset(&rq, 0, sizeof rq);
    rq.method = field(&p, end);
    rq.path = field(&p, end);
    char *query = field(&p, end);
    rq.authorization = field(&p, end);
    rq.origin = field(&p, end);
    rq.content_length = field(&p, end);
    char *bodyp = p < end ? p : NULL;
    size_t body_len = bodyp ? (size_t)(end - p) : 0;
    if (!rq.method || !rq.path) {
        free(copy);
        return 0;
    }
    if (rq.authorization && !*rq.authorization) rq.authorization = NULL;
    if (rq.origin && !*rq.origin) rq.origin = NULL;
    if (rq.content_length && !*rq.content_length) rq.content_length = NULL;
    for (char *q = query; q && *q && rq.nargs < FB_HTTP_MAX_ARGS;) {
        char *amp = strchr(q, '&');
        if (amp) *amp = 0;
        char *eq = strchr(q, '=');
        if (eq) *eq = 0;
        rq.args[rq.nargs].k = q;
        rq.args[rq.nargs].v = eq ? eq + 1 : NULL;
        rq.nargs++;
        q = amp ? amp + 1 : NULL;
        if (q && rq.nargs == FB_HTTP_MAX_ARGS) rq.args_overflow = true;
    }
    rq.tls = flags & 1;
    rq.host = (flags & 2) ? "gw:1" : NULL;
    cfg.plaintext_writes = flags & 4;
    cfg.anonymous = (flags & 8) ? FB_ROLE_VIEWER : FB_ROLE_NONE;
    api.tls = flags & 16;
    snprintf(rq.peer, sizeof rq.peer, "10.0.0.%u", flags >> 5);
    rq.peer_key[0] = flags >> 5;
    struct fb_http_resp rs = {.body = &body};
    fb_http_handle(&api, &rq, &rs);
    check_answer(&rs);
    if (rs.kind == FB_RESP_CONTINUE) {
        rq.body = bodyp ? bodyp : "";
        rq.body_len = body_len;
        fb_http_handle(&api, &rq, &rs);
        check_answer(&rs);
    }
    /* the same bytes as other inputs of the API */
    if (rq.authorization) {
        const char *t;
        size_t n;
        fb_http_bearer(rq.authorization, &t, &n);
    }
    if (bodyp) {
        struct fb_http_tokens tk;
        struct fb_err e;
        if (fb_http_tokens_parse("f", bodyp, body_len, &tk, &e) == 0) fb_http_tokens_free(&tk);
        struct fb_buf o, w;
        fb_buf_init(&o);
        fb_buf_init(&w);
        if (fb_redact_yaml(bodyp, body_len, &o, &w) >= 0) {
            json_t *j = json_loadb(w.p ? w.p : "[]", w.len ? w.len : 2, 0, NULL);
            if (!j) abort();
            json_decref(j);
        }
        fb_buf_clear(&o);
        fb_redact_url(&o, bodyp, body_len);
        fb_buf_free(&o);
        fb_buf_free(&w);
        uint64_t pos;
        fb_live_resume(api.live, bodyp, &pos);
    }
    free(copy);
    return 0;
}
