/* test_http.c — the HTTP API's parts without a network: the route table,
 * bearer headers and the tokens file, token making, secret redaction in
 * YAML and URLs, the live table and the event ring (wrap-around, a reader
 * that falls behind, resuming by event id), and the request handler on a
 * gateway loaded from a config in memory (auth, roles, TLS rule, limits,
 * CORS, the JSON of values). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch.h"
#include "core/batch_codec.h"
#include "core/browse.h"
#include "core/config.h"
#include "core/log.h"
#include "north/http/auth.h"
#include "north/http/handler.h"
#include "north/http/live.h"
#include "north/http/redact.h"
#include "north/http/route.h"

/* ------------------------------------------------------------------ route */
static void test_route(void **state)
{
    (void)state;
    struct fb_route r;
    assert_int_equal(fb_http_route("GET", "/api/v1/devices", &r), 200);
    assert_int_equal(r.ep, FB_EP_DEVICES);
    assert_int_equal(r.role, FB_ROLE_VIEWER);
    assert_int_equal(fb_http_route("HEAD", "/api/v1/devices", &r), 200);
    assert_int_equal(fb_http_route("GET", "/api/v1/devices/press-01/tags", &r), 200);
    assert_int_equal(r.ep, FB_EP_TAGS);
    assert_int_equal(r.name_len, 8);
    assert_memory_equal(r.name, "press-01", 8);
    assert_int_equal(fb_http_route("POST", "/api/v1/devices/p/write", &r), 200);
    assert_int_equal(r.role, FB_ROLE_OPERATOR);
    assert_true(r.body && r.tls);
    assert_int_equal(fb_http_route("GET", "/api/v1/devices/p/write", &r), 405);
    assert_string_equal(r.allow, "POST, OPTIONS");
    assert_int_equal(fb_http_route("DELETE", "/api/v1/values", &r), 405);
    assert_string_equal(r.allow, "GET, HEAD, OPTIONS");
    assert_int_equal(fb_http_route("OPTIONS", "/api/v1/devices/p/write", &r), 200);
    assert_int_equal(r.ep, FB_EP_WRITE);
    static const char *const nf[] = {"/api/v1/devices/",
                                     "/api/v1//devices",
                                     "/api/v1/devices/p/tags/",
                                     "/api/v1/devices//tags",
                                     "/api/v2/devices",
                                     "",
                                     "api/v1/devices",
                                     "/api/v1/devices/p/x",
                                     "/ui/",
                                     "/index.html"};
    for (size_t i = 0; i < sizeof nf / sizeof nf[0]; i++) assert_int_equal(fb_http_route("GET", nf[i], &r), 404);
    assert_int_equal(fb_http_route("GET", "/ui/app.js", &r), 200);
    assert_int_equal(r.ep, FB_EP_UI);
    assert_int_equal(fb_http_route("GET", "/api/v1/browse", &r), 200);
    assert_int_equal(r.role, FB_ROLE_OPERATOR);
}

/* ----------------------------------------------------------------- tokens */
static void sha_hex(const char *tok, char out[65])
{
    unsigned char h[32];
    unsigned int n;
    EVP_Digest(tok, strlen(tok), h, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", h[i]);
}

static void test_bearer_and_tokens(void **state)
{
    (void)state;
    const char *t;
    size_t n;
    assert_int_equal(fb_http_bearer("Bearer abc.DEF-_~+/=", &t, &n), 0);
    assert_int_equal(n, 13);
    assert_memory_equal(t, "abc.DEF-_~+/=", 13);
    assert_int_equal(fb_http_bearer("  bearer   xyz  ", &t, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(fb_http_bearer(NULL, &t, &n), FB_ENOENT);
    static const char *const bad[] = {"Basic abc",  "Bearer",      "Bearer ",  "Bearerabc",
                                      "Bearer a b", "Bearer a\"b", "Bearer =a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_int_equal(fb_http_bearer(bad[i], &t, &n), FB_EINVAL);

    char h1[65], h2[65], text[512];
    sha_hex("tok-one", h1);
    sha_hex("tok-two", h2);
    snprintf(text, sizeof text, "# comment\n\n alice:operator:sha256:%s \r\nbob:viewer:sha256:%s", h1, h2);
    struct fb_http_tokens tk;
    struct fb_err e = {0};
    assert_int_equal(fb_http_tokens_parse("f", text, strlen(text), &tk, &e), 0);
    assert_int_equal(tk.n, 2);
    const struct fb_http_token *a = fb_http_tokens_find(&tk, "tok-one", 7);
    assert_non_null(a);
    assert_string_equal(a->name, "alice");
    assert_int_equal(a->role, FB_ROLE_OPERATOR);
    assert_int_equal(fb_http_tokens_find(&tk, "tok-two", 7)->role, FB_ROLE_VIEWER);
    assert_null(fb_http_tokens_find(&tk, "tok-one ", 8));
    assert_null(fb_http_tokens_find(&tk, "", 0));
    fb_http_tokens_free(&tk);
    static const struct {
        const char *line, *msg;
    } errs[] = {
        {"x:viewer", "f:1: expected NAME:ROLE:sha256:HEX"},
        {"x:admin:sha256:00", "f:1: unknown role 'admin'"},
        {"x:viewer:md5:00", "f:1: unknown hash 'md5'"},
        {"x:viewer:sha256:00", "f:1: the hash must be 64 hex digits"},
        {"bad name:viewer:sha256:0000000000000000000000000000000000000000000000000000000000000000",
         "f:1: bad token name"},
        {"a:viewer:sha256:000000000000000000000000000000000000000000000000000000000000000g",
         "f:1: the hash must be 64 hex digits"},
        {"a:viewer:sha256:0000000000000000000000000000000000000000000000000000000000000000\n"
         "a:operator:sha256:0000000000000000000000000000000000000000000000000000000000000000",
         "f:2: token name 'a' appears twice"},
    };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        assert_int_equal(fb_http_tokens_parse("f", errs[i].line, strlen(errs[i].line), &tk, &e), FB_EINVAL);
        if (!strstr(e.msg, errs[i].msg)) fail_msg("'%s': got '%s'", errs[i].line, e.msg);
        assert_int_equal(tk.n, 0);
    }
    /* a new token: its line verifies it, and nothing else */
    char tok[80], line[256];
    assert_int_equal(fb_http_token_new("carol", "viewer", tok, sizeof tok, line, sizeof line, &e), 0);
    assert_int_equal(strlen(tok), 47);
    assert_memory_equal(tok, "fbt_", 4);
    assert_null(strstr(line, tok + 4));
    assert_int_equal(fb_http_tokens_parse("f", line, strlen(line), &tk, &e), 0);
    assert_non_null(fb_http_tokens_find(&tk, tok, strlen(tok)));
    tok[10] ^= 1;
    assert_null(fb_http_tokens_find(&tk, tok, strlen(tok)));
    fb_http_tokens_free(&tk);
    char tok2[80];
    assert_int_equal(fb_http_token_new("carol", "viewer", tok2, sizeof tok2, line, sizeof line, &e), 0);
    assert_string_not_equal(tok, tok2);
    assert_int_equal(fb_http_token_new("a b", "viewer", tok, sizeof tok, line, sizeof line, &e), FB_EINVAL);
    assert_int_equal(fb_http_token_new("a", "root", tok, sizeof tok, line, sizeof line, &e), FB_EINVAL);
}

/* ----------------------------------------------------------------- redact */
static char *redact_yaml(const char *in, char **where)
{
    struct fb_buf o, w;
    fb_buf_init(&o);
    fb_buf_init(&w);
    int n = fb_redact_yaml(in, strlen(in), &o, &w);
    if (n < 0) {
        fb_buf_free(&o);
        fb_buf_free(&w);
        return NULL;
    }
    fb_buf_cstr(&o);
    fb_buf_cstr(&w);
    *where = w.p;
    return o.p ? o.p : strdup("");
}

static void test_redact(void **state)
{
    (void)state;
    struct fb_buf b;
    fb_buf_init(&b);
    assert_int_equal(fb_redact_url(&b, "mqtt://u:p@h:1/x?a=1&password=s&token=t&b=2#f", 46), 3);
    fb_buf_cstr(&b);
    assert_string_equal(b.p, "mqtt://u:***@h:1/x?a=1&password=***&token=***&b=2#f");
    fb_buf_clear(&b);
    assert_int_equal(fb_redact_url(&b, "opc.tcp://h?password_file=/etc/p&user=op", 40), 0);
    fb_buf_cstr(&b);
    assert_string_equal(b.p, "opc.tcp://h?password_file=/etc/p&user=op");
    fb_buf_free(&b);
    assert_true(fb_redact_key("password") && fb_redact_key("mqtt_password") && fb_redact_key("api_key"));
    assert_true(fb_redact_key("client_secret") && fb_redact_key("token"));
    assert_false(fb_redact_key("password_file") || fb_redact_key("tokens") || fb_redact_key("passwords_dir"));
    assert_false(fb_redact_key("key") || fb_redact_key("name"));

    char *where = NULL;
    const char *in = "# °C plant\n"
                     "a: {password: \"${P:-x}\", user: u}  # keep\n"
                     "b:\n"
                     "  - url: \"opc.tcp://op:pw@h:4840\"\n"
                     "  - secret: [s1, s2]\n"
                     "unit: \"°C\"\n"
                     "password_file: /etc/x\n";
    char *out = redact_yaml(in, &where);
    assert_non_null(out);
    assert_string_equal(out, "# °C plant\n"
                             "a: {password: \"***\", user: u}  # keep\n"
                             "b:\n"
                             "  - url: \"opc.tcp://op:***@h:4840\"\n"
                             "  - secret: [\"***\", \"***\"]\n"
                             "unit: \"°C\"\n"
                             "password_file: /etc/x\n");
    assert_string_equal(where,
                        "[{\"line\":2,\"col\":15,\"key\":\"password\"},{\"line\":4,\"col\":10,\"key\":\"url\"},"
                        "{\"line\":5,\"col\":14,\"key\":\"secret\"},{\"line\":5,\"col\":18,\"key\":\"secret\"}]");
    free(out);
    free(where);
    assert_null(redact_yaml("a: [", &where));
    /* deeper than any config (found by fuzz_http_request): refused, not overrun */
    char deep[300];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = 0;
    assert_null(redact_yaml(deep, &where));
}

/* ------------------------------------------------------------------- live */
static struct fb_gateway *load(const char *yaml)
{
    struct fb_gateway *gw = NULL;
    char *diag = NULL;
    size_t dl = 0;
    FILE *f = open_memstream(&diag, &dl);
    struct fb_config_opts o = {false, f};
    int rc = fb_config_load_mem("/nonexistent/t.yaml", yaml, strlen(yaml), &o, &gw);
    fclose(f);
    if (rc) fail_msg("config: %s", diag);
    free(diag);
    return gw;
}

static const char *cfg_text = "gateway: {id: g}\n"
                              "devices:\n"
                              "  - name: d\n"
                              "    url: \"sim://x\"\n"
                              "    tags:\n"
                              "      - {name: t, addr: \"const:1\"}\n"
                              "      - {name: s, addr: \"const:\\\"abc\\\"\"}\n"
                              "      - {name: w, addr: \"memory:initial=2\", access: rw, range: [0, 10], unit: bar}\n"
                              "  - name: e\n"
                              "    url: \"sim://y\"\n"
                              "    tags: [{name: t, addr: \"const:3\"}]\n";

static void test_live_and_ring(void **state)
{
    (void)state;
    struct fb_gateway *gw = load(cfg_text);
    struct fb_live *l = fb_live_new(gw, 4096);
    assert_non_null(l);
    struct fb_batch *b = fb_batch_new(4, 0, 64);
    b->device = 0;
    b->ts = 1000000000LL;
    struct fb_value v = {.type = FB_T_FLOAT64, .f = 1.5};
    fb_batch_add(b, 0, FB_Q_GOOD, b->ts, &v);
    struct fb_value sv = {.type = FB_T_STRING, .s = {"abcdef", 6}};
    fb_batch_add(b, 1, FB_Q_GOOD, b->ts, &sv);
    fb_batch_add(b, 3, FB_Q_GOOD, b->ts, &v); /* device e's tag: not this batch's, ignored */
    fb_live_update(l, b);
    assert_true(fb_live_tag(l, 0)->have);
    assert_true(fb_live_tag(l, 0)->v.f == 1.5);
    assert_memory_equal(fb_live_tag(l, 1)->v.s.p, "abcdef", 6);
    assert_ptr_not_equal(fb_live_tag(l, 1)->v.s.p, sv.s.p); /* copied */
    assert_false(fb_live_tag(l, 3)->have);
    fb_batch_free(b);

    /* the ring: 4096 bytes; frames are whole and ids resume after the frame */
    uint64_t pos = fb_live_head(l);
    assert_true(fb_live_event(l, "values", "{\"a\":1}", 7));
    char buf[8192];
    long n = fb_live_read(l, &pos, buf, sizeof buf);
    assert_true(n > 0);
    buf[n] = 0;
    char want[128];
    snprintf(want, sizeof want, "id: %llu-0\nevent: values\ndata: {\"a\":1}\n\n", (unsigned long long)fb_live_epoch(l));
    assert_string_equal(buf, want);
    assert_int_equal(fb_live_read(l, &pos, buf, sizeof buf), 0);
    assert_true(fb_live_event(l, "ping", "{}", 2));
    uint64_t r;
    char id[64];
    snprintf(id, sizeof id, "%llu-0", (unsigned long long)fb_live_epoch(l));
    assert_true(fb_live_resume(l, id, &r));
    assert_int_equal(r, (uint64_t)n); /* right after the first frame */
    assert_false(fb_live_resume(l, "1-0", &r));
    assert_false(fb_live_resume(l, "garbage", &r));
    snprintf(id, sizeof id, "%llu-999999", (unsigned long long)fb_live_epoch(l));
    assert_false(fb_live_resume(l, id, &r));
    /* too large for the ring: dropped and counted */
    char big[3000];
    memset(big, 'x', sizeof big);
    assert_false(fb_live_event(l, "values", big, sizeof big));
    assert_int_equal(fb_live_dropped(l), 1);
    /* a reader that falls a whole ring behind is told so; wrap-around copies right */
    uint64_t slow = fb_live_head(l);
    for (int i = 0; i < 100; i++) {
        char j[64];
        int k = snprintf(j, sizeof j, "{\"i\":%d}", i);
        assert_true(fb_live_event(l, "values", j, (size_t)k));
    }
    assert_int_equal(fb_live_read(l, &slow, buf, sizeof buf), -1);
    uint64_t tail = fb_live_head(l) - 2000;
    n = fb_live_read(l, &tail, buf, sizeof buf);
    assert_int_equal(n, 2000);
    buf[n] = 0;
    assert_non_null(strstr(buf, "data: {\"i\":99}\n\n"));
    fb_live_free(l);
    fb_gateway_free(gw);
}

/* ---------------------------------------------------------------- handler */
struct rig {
    struct fb_gateway *gw;
    struct fb_http_cfg cfg;
    struct fb_http_api api;
    struct fb_buf body;
    struct fb_http_req req;
    struct fb_http_resp resp;
    char *cors[2];
};

static void rig_init(struct rig *r)
{
    memset(r, 0, sizeof *r);
    r->gw = load(cfg_text);
    r->cfg.max_body = 1000;
    r->cfg.rate = 0;
    r->cfg.ui = true;
    r->cors[0] = "https://ok.example";
    r->cfg.cors = r->cors;
    r->api.gw = r->gw;
    r->api.cfg = &r->cfg;
    r->api.live = fb_live_new(r->gw, 65536);
    pthread_mutex_init(&r->api.tokens_mu, NULL);
    char h1[65], h2[65], text[300];
    sha_hex("op-token", h1);
    sha_hex("vi-token", h2);
    snprintf(text, sizeof text, "op:operator:sha256:%s\nvi:viewer:sha256:%s\n", h1, h2);
    struct fb_err e;
    assert_int_equal(fb_http_tokens_parse("t", text, strlen(text), &r->api.tokens, &e), 0);
    fb_buf_init(&r->body);
}

static void rig_free(struct rig *r)
{
    fb_http_tokens_free(&r->api.tokens);
    pthread_mutex_destroy(&r->api.tokens_mu);
    fb_live_free(r->api.live);
    fb_buf_free(&r->body);
    fb_gateway_free(r->gw);
}

/* One request; returns the status (the body is in r->body, NUL-terminated). */
static int req(struct rig *r, const char *method, const char *path, const char *auth, const char *body)
{
    memset(&r->req, 0, sizeof r->req);
    r->req.method = method;
    r->req.path = path;
    r->req.authorization = auth;
    snprintf(r->req.peer, sizeof r->req.peer, "127.0.0.1");
    r->req.peer_key[0] = 127;
    r->req.peer_key[3] = 1;
    r->resp.body = &r->body;
    fb_http_handle(&r->api, &r->req, &r->resp);
    if (r->resp.kind == FB_RESP_CONTINUE && body) {
        r->req.body = body;
        r->req.body_len = strlen(body);
        fb_http_handle(&r->api, &r->req, &r->resp);
    }
    fb_buf_cstr(&r->body);
    return r->resp.status;
}

/* A config reload that keeps the API: the latest-value table is made again
 * for the new model (a device in front moves every id), values follow their
 * tags by name when the type is the same, and the event ring is untouched. */
static void test_live_remodel(void **state)
{
    (void)state;
    struct fb_gateway *gw = load(cfg_text);
    struct fb_live *l = fb_live_new(gw, 4096);
    assert_non_null(l);
    struct fb_batch *b = fb_batch_new(4, 0, 64);
    b->device = 0;
    b->ts = 1000000000LL;
    struct fb_value v = {.type = FB_T_FLOAT64, .f = 1.5};
    fb_batch_add(b, 0, FB_Q_GOOD, b->ts, &v); /* d.t */
    struct fb_value sv = {.type = FB_T_STRING, .s = {"abcdef", 6}};
    fb_batch_add(b, 1, FB_Q_GOOD, b->ts, &sv); /* d.s */
    struct fb_value wv = {.type = FB_T_FLOAT64, .f = 7};
    fb_batch_add(b, 2, FB_Q_GOOD, b->ts, &wv); /* d.w */
    fb_live_update(l, b);
    assert_true(fb_live_event(l, "values", "{\"a\":1}", 7));
    uint64_t head = fb_live_head(l), pos = 0;

    /* the new config: device n in front, d.w now an int32 (its float value is not its) */
    struct fb_gateway *nw = load("gateway: {id: g}\n"
                                 "devices:\n"
                                 "  - name: n\n"
                                 "    url: \"sim://n\"\n"
                                 "    tags: [{name: a, addr: \"const:5\"}, {name: b, addr: \"const:6\"}]\n"
                                 "  - name: d\n"
                                 "    url: \"sim://x\"\n"
                                 "    tags:\n"
                                 "      - {name: t, addr: \"const:1\"}\n"
                                 "      - {name: s, addr: \"const:\\\"abc\\\"\"}\n"
                                 "      - {name: w, addr: \"memory:initial=2\", access: rw, type: int32}\n"
                                 "      - {name: z, addr: \"const:4\"}\n");
    struct fb_model_map *map = fb_model_map_between(gw, nw);
    assert_non_null(map);
    struct fb_gateway tmp; /* the swap of a reload: gw, which l points at, holds the new model */
    memcpy(&tmp, gw, sizeof tmp);
    memcpy(gw, nw, sizeof tmp);
    memcpy(nw, &tmp, sizeof tmp);
    assert_int_equal(fb_live_remodel(l, map), 0);
    fb_model_map_free(map);
    assert_false(fb_live_tag(l, 0)->have); /* n.a, n.b: new */
    assert_false(fb_live_tag(l, 1)->have);
    assert_true(fb_live_tag(l, 2)->have && fb_live_tag(l, 2)->v.f == 1.5); /* d.t, was 0 */
    assert_true(fb_live_tag(l, 3)->have);                                   /* d.s, was 1 */
    assert_int_equal(fb_live_tag(l, 3)->v.s.len, 6);
    assert_memory_equal(fb_live_tag(l, 3)->v.s.p, "abcdef", 6);
    assert_false(fb_live_tag(l, 4)->have); /* d.w: another type now */
    assert_false(fb_live_tag(l, 5)->have); /* d.z: new */
    assert_null(fb_live_tag(l, 6));
    /* the new ids take samples under the new device locks */
    b->device = 1;
    b->n = 0;
    fb_batch_add(b, 5, FB_Q_GOOD, b->ts, &v);
    fb_live_update(l, b);
    assert_true(fb_live_tag(l, 5)->have);
    fb_batch_free(b);
    /* the ring is as it was: a reader goes on where it was */
    assert_int_equal(fb_live_head(l), head);
    char buf[256];
    assert_true(fb_live_read(l, &pos, buf, sizeof buf) > 0);
    assert_true(fb_live_event(l, "ping", "{}", 2));
    assert_true(fb_live_read(l, &pos, buf, sizeof buf) > 0);
    fb_live_free(l);
    fb_gateway_free(gw);
    fb_gateway_free(nw);
}

static void test_handler_auth(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r);
    assert_int_equal(req(&r, "GET", "/api/v1/devices", NULL, NULL), 401);
    assert_true(r.resp.www_authenticate);
    assert_non_null(strstr(r.body.p, "a bearer token is required"));
    assert_int_equal(req(&r, "GET", "/api/v1/devices", "Bearer nope", NULL), 401);
    assert_int_equal(req(&r, "GET", "/api/v1/devices", "Basic x", NULL), 401);
    assert_int_equal(req(&r, "GET", "/api/v1/devices", "Bearer vi-token", NULL), 200);
    assert_string_equal(r.resp.user, "vi");
    /* page files need nothing */
    assert_int_equal(req(&r, "GET", "/", NULL, NULL), 200);
    assert_int_equal(r.resp.kind, FB_RESP_STATIC);
    assert_non_null(strstr(r.resp.ctype, "text/html"));
    /* writes: operator, TLS unless allowed on loopback */
    assert_int_equal(req(&r, "POST", "/api/v1/devices/d/write", "Bearer vi-token", "{}"), 403);
    assert_non_null(strstr(r.body.p, "role viewer may not"));
    assert_int_equal(req(&r, "POST", "/api/v1/devices/d/write", "Bearer op-token", "{}"), 403);
    assert_non_null(strstr(r.body.p, "needs TLS"));
    r.api.tls = true;
    assert_int_equal(req(&r, "POST", "/api/v1/devices/d/write", "Bearer op-token", "{\"write\":{}}"), 200);
    assert_int_equal(r.resp.kind, FB_RESP_WRITE);
    assert_int_equal(r.resp.device, 0);
    assert_int_equal(req(&r, "POST", "/api/v1/devices/e/write", "Bearer op-token", "{}"), 200);
    assert_int_equal(r.resp.device, 1);
    assert_int_equal(req(&r, "POST", "/api/v1/devices/zz/write", "Bearer op-token", "{}"), 404);
    r.api.tls = false;
    r.cfg.plaintext_writes = true;
    assert_int_equal(req(&r, "POST", "/api/v1/devices/d/write", "Bearer op-token", "{}"), 200);
    /* body size: announced, then actual */
    memset(&r.req, 0, sizeof r.req);
    r.req.method = "POST";
    r.req.path = "/api/v1/devices/d/write";
    r.req.authorization = "Bearer op-token";
    r.req.content_length = "1001";
    fb_http_handle(&r.api, &r.req, &r.resp);
    assert_int_equal(r.resp.status, 413);
    char big[1200];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(req(&r, "POST", "/api/v1/devices/d/write", "Bearer op-token", big), 413);
    /* anonymous viewer */
    r.cfg.anonymous = FB_ROLE_VIEWER;
    assert_int_equal(req(&r, "GET", "/api/v1/values", NULL, NULL), 200);
    assert_int_equal(req(&r, "POST", "/api/v1/devices/d/write", NULL, "{}"), 403);
    assert_int_equal(req(&r, "GET", "/api/v1/browse", NULL, NULL), 403);
    assert_true(atomic_load(&r.api.refused) >= 9);
    rig_free(&r);
}

static void test_handler_cors_rate_and_values(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r);
    r.cfg.plaintext_writes = true;
    /* CORS */
    memset(&r.req, 0, sizeof r.req);
    r.req.method = "OPTIONS";
    r.req.path = "/api/v1/devices/d/write";
    r.req.origin = "https://ok.example";
    r.resp.body = &r.body;
    fb_http_handle(&r.api, &r.req, &r.resp);
    assert_int_equal(r.resp.status, 204);
    assert_true(r.resp.preflight);
    assert_string_equal(r.resp.cors_origin, "https://ok.example");
    r.req.origin = "https://evil.example";
    fb_http_handle(&r.api, &r.req, &r.resp);
    assert_int_equal(r.resp.status, 403);
    r.req.method = "POST";
    r.req.authorization = "Bearer op-token";
    r.req.host = "gw.local:8080";
    fb_http_handle(&r.api, &r.req, &r.resp);
    assert_int_equal(r.resp.status, 403); /* a foreign page's POST */
    r.req.origin = "http://gw.local:8080";
    fb_http_handle(&r.api, &r.req, &r.resp);
    assert_int_equal(r.resp.kind, FB_RESP_CONTINUE); /* the page's own */
    /* values: before any sample and after one */
    assert_int_equal(req(&r, "GET", "/api/v1/values", "Bearer vi-token", NULL), 200);
    json_t *j = json_loads(r.body.p, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 4);
    json_t *v0 = json_array_get(json_object_get(j, "values"), 0);
    assert_string_equal(json_string_value(json_object_get(v0, "reason")), "BadWaitingForInitialData");
    assert_true(json_is_null(json_object_get(v0, "v")));
    json_decref(j);
    struct fb_batch *b = fb_batch_new(4, 0, 16);
    b->device = 0;
    b->ts = 1764324000123000000LL;
    struct fb_value v = {.type = FB_T_FLOAT64, .f = 12.5};
    fb_batch_add(b, 2, FB_Q_GOOD, b->ts, &v);
    struct fb_value nanv = {.type = FB_T_FLOAT64, .f = NAN};
    fb_batch_add(b, 0, FB_Q_GOOD, b->ts, &nanv);
    fb_live_update(r.api.live, b);
    fb_batch_free(b);
    r.req.nargs = 0;
    assert_int_equal(req(&r, "GET", "/api/v1/values", "Bearer vi-token", NULL), 200);
    /* a NaN is never "good": null with BadOutOfRange, as in the telemetry */
    assert_non_null(strstr(r.body.p, "{\"device\":\"d\",\"tag\":\"t\",\"v\":null,\"q\":\"bad\",\"reason\":"
                                     "\"BadOutOfRange\",\"ts\":\"2025-11-28T10:00:00.123Z\"}"));
    assert_non_null(strstr(r.body.p, "{\"device\":\"d\",\"tag\":\"w\",\"v\":12.5,\"q\":\"good\","
                                     "\"ts\":\"2025-11-28T10:00:00.123Z\"}"));
    assert_int_equal(req(&r, "GET", "/api/v1/devices/d/tags", "Bearer vi-token", NULL), 200);
    assert_non_null(strstr(r.body.p, "{\"name\":\"w\",\"addr\":\"memory:initial=2\",\"type\":\"float64\","
                                     "\"wire_type\":\"float64\",\"unit\":\"bar\",\"access\":\"rw\",\"range\":[0,10],"
                                     "\"v\":12.5,\"q\":\"good\""));
    /* filters */
    memset(&r.req, 0, sizeof r.req);
    r.req.method = "GET";
    r.req.path = "/api/v1/values";
    r.req.authorization = "Bearer vi-token";
    r.req.args[0] = (struct fb_http_arg){"device", "e"};
    r.req.nargs = 1;
    fb_http_handle(&r.api, &r.req, &r.resp);
    fb_buf_cstr(&r.body);
    assert_int_equal(r.resp.status, 200);
    assert_non_null(strstr(r.body.p, "\"count\":1}"));
    r.req.args[1] = (struct fb_http_arg){"tag", "nope"};
    r.req.nargs = 2;
    fb_http_handle(&r.api, &r.req, &r.resp);
    assert_int_equal(r.resp.status, 404);
    /* the rate limit: a burst of twice the rate, then 429 */
    r.cfg.rate = 5;
    int ok = 0, limited = 0;
    for (int i = 0; i < 20; i++) {
        int s = req(&r, "GET", "/api/v1/whoami", "Bearer vi-token", NULL);
        ok += s == 200;
        limited += s == 429;
    }
    assert_true(ok >= 10 && ok <= 11);
    assert_int_equal(limited, 20 - ok);
    assert_int_equal(r.resp.retry_after, 1);
    /* another client address has its own bucket */
    memset(&r.req, 0, sizeof r.req);
    r.req.method = "GET";
    r.req.path = "/api/v1/whoami";
    r.req.authorization = "Bearer vi-token";
    r.req.peer_key[0] = 10;
    fb_http_handle(&r.api, &r.req, &r.resp);
    assert_int_equal(r.resp.status, 200);
    rig_free(&r);
}

int main(void)
{
    fb_log_init(FB_LOG_ERROR, FB_LOG_TEXT); /* the refusals' log lines are expected */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route),        cmocka_unit_test(test_bearer_and_tokens),
        cmocka_unit_test(test_redact),       cmocka_unit_test(test_live_and_ring),
        cmocka_unit_test(test_live_remodel),
        cmocka_unit_test(test_handler_auth), cmocka_unit_test(test_handler_cors_rate_and_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
