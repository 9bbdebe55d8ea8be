/* handler.c — what the HTTP API answers, independent of the HTTP library.
 *
 * Every request takes the same path, in this order, and the first step that
 * says no answers:
 *   route (404 / 405) → CORS preflight → rate limit per client address (429)
 *   → authentication: bearer token, or the anonymous role if configured (401)
 *   → role: viewer for GET, operator for writes, config check, browse (403)
 *   → operator endpoints need TLS unless plaintext writes are allowed on a
 *     loopback listener (403) → cross-origin POSTs need an allowed origin
 *   → body size (413) → the endpoint.
 * Each refusal is logged with the client address, the user and the reason
 * (one line per refusal; under a flood one line per second with the count).
 *
 * The read endpoints render JSON straight from the model, the live table
 * and the counters (docs/http-api.md, docs/openapi.yaml); nothing here
 * blocks on a device.  The JSON of a value follows the MQTT telemetry:
 * "v" (null when bad), "q" good/uncertain/bad, "reason" when not good,
 * "raw" for a reading the plausibility checks refused.
 */
#include "north/http/handler.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "core/metrics.h"
#include "core/runtime_state.h"
#include "edge/alarms.h"
#include "north/http/redact.h"
#include "north/http/ui.h"

#ifndef FB_VERSION
#define FB_VERSION "0.0.0"
#endif

static const char k_json[] = "application/json";

const char *fb_http_arg(const struct fb_http_req *req, const char *key)
{
    for (int i = 0; i < req->nargs; i++)
        if (req->args[i].k && !strcmp(req->args[i].k, key)) return req->args[i].v ? req->args[i].v : "";
    return NULL;
}

void fb_http_error(struct fb_http_resp *resp, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    resp->status = status;
    resp->kind = FB_RESP_DONE;
    resp->ctype = k_json;
    fb_buf_clear(resp->body);
    fb_buf_puts(resp->body, "{\"error\":");
    fb_json_cstr(resp->body, msg);
    fb_buf_printf(resp->body, ",\"status\":%d}", status);
}

/* A refusal: answered and logged. */
static void refuse(struct fb_http_api *api, const struct fb_http_req *req, struct fb_http_resp *resp, int status,
                   const char *fmt, ...) FB_PRINTF(5, 6);
static void refuse(struct fb_http_api *api, const struct fb_http_req *req, struct fb_http_resp *resp, int status,
                   const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fb_http_error(resp, status, "%s", msg);
    atomic_fetch_add(&api->refused, 1);
    int64_t now = fb_mono_ns();
    if (now - api->log_window_ns >= 1000000000LL) {
        if (api->log_suppressed)
            fb_warn(NULL, NULL, "http: %llu more requests refused in the last second (not logged one by one)",
                    (unsigned long long)api->log_suppressed);
        api->log_window_ns = now;
        api->log_lines = 0;
        api->log_suppressed = 0;
    }
    if (api->log_lines >= FB_HTTP_LOG_BURST) {
        api->log_suppressed++;
        return;
    }
    api->log_lines++;
    char path[160];
    snprintf(path, sizeof path, "%s", req->path ? req->path : "?");
    fb_warn(NULL, NULL, "http: refused %s %s from %s (user %s): %d %s", req->method ? req->method : "?", path,
            req->peer[0] ? req->peer : "?", resp->user[0] ? resp->user : "-", status, msg);
}

/* ------------------------------------------------------------ rate limit */
static bool rate_ok(struct fb_http_api *api, const struct fb_http_req *req)
{
    uint32_t rate = api->cfg->rate;
    if (!rate) return true;
    int64_t now = fb_mono_ns();
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++) h = (h ^ req->peer_key[i]) * 16777619u;
    struct fb_http_rl *slot = NULL, *oldest = NULL;
    for (int i = 0; i < 8; i++) { /* a short probe; the oldest in it is reused */
        struct fb_http_rl *e = &api->rl[(h + (uint32_t)i) % FB_HTTP_RL_SLOTS];
        if (e->used && !memcmp(e->key, req->peer_key, 16)) {
            slot = e;
            break;
        }
        if (!oldest || !e->used || (oldest->used && e->t_ns < oldest->t_ns)) oldest = e;
    }
    double cap = 2.0 * rate;
    if (!slot) {
        slot = oldest;
        memcpy(slot->key, req->peer_key, 16);
        slot->used = true;
        slot->tokens = cap;
        slot->t_ns = now;
    }
    slot->tokens += (double)(now - slot->t_ns) * rate / 1e9;
    if (slot->tokens > cap) slot->tokens = cap;
    slot->t_ns = now;
    if (slot->tokens < 1.0) return false;
    slot->tokens -= 1.0;
    return true;
}

/* ------------------------------------------------------------------ JSON */
static void put_time_or_null(struct fb_buf *o, int64_t ns)
{
    if (ns <= 0) {
        fb_buf_puts(o, "null");
        return;
    }
    fb_json_time(o, ns);
}

static const char *access_name(int a) { return a == FB_ACC_RW ? "rw" : a == FB_ACC_WRITE ? "w" : "r"; }

/* "v","q","reason","raw","ts" of a tag's latest sample (the device's live lock held). */
static void put_live(struct fb_buf *o, const struct fb_live_tag *lt)
{
    if (!lt || !lt->have) {
        fb_buf_puts(o, "\"v\":null,\"q\":\"bad\",\"reason\":\"BadWaitingForInitialData\",\"ts\":null");
        return;
    }
    uint32_t q = lt->quality;
    bool finite = !fb_type_is_float((enum fb_type)lt->v.type) || isfinite(lt->v.f);
    if (!finite && !fb_q_bad(q)) q = FB_Q_BAD_OUT_OF_RANGE;
    if (lt->v.type == FB_T_NONE && !fb_q_bad(q)) q = FB_Q_BAD_WAITING;
    fb_buf_puts(o, "\"v\":");
    if (fb_q_bad(q))
        fb_buf_puts(o, "null");
    else
        fb_json_value(o, &lt->v);
    if (fb_q_bad(q) && (lt->flags & FB_SF_RAW) && finite && lt->v.type != FB_T_NONE && lt->v.type != FB_T_STRING) {
        fb_buf_puts(o, ",\"raw\":");
        fb_json_value(o, &lt->v);
    }
    fb_buf_puts(o, ",\"q\":\"");
    fb_buf_puts(o, fb_q_severity(q));
    fb_buf_putc(o, '"');
    if (!fb_q_good(q)) {
        char nb[16];
        fb_buf_puts(o, ",\"reason\":");
        fb_json_cstr(o, fb_q_name(q, nb));
    }
    fb_buf_puts(o, ",\"ts\":");
    put_time_or_null(o, lt->ts_src ? lt->ts_src : lt->ts_gw);
}

static const char *state_name(int s)
{
    return s == FB_DEV_ONLINE ? "online" : s == FB_DEV_OFFLINE ? "offline" : "connecting";
}

static void put_device(struct fb_buf *o, struct fb_gateway *gw, const struct fb_device *d, bool detail)
{
    fb_buf_puts(o, "{\"name\":");
    fb_json_cstr(o, d->name);
    fb_buf_puts(o, ",\"driver\":");
    fb_json_cstr(o, d->drv && d->drv->name ? d->drv->name : "");
    fb_buf_puts(o, ",\"url\":");
    struct fb_buf u;
    fb_buf_init(&u);
    fb_redact_url(&u, d->url_text ? d->url_text : "", d->url_text ? strlen(d->url_text) : 0);
    fb_json_str(o, u.p ? u.p : "", u.len);
    fb_buf_free(&u);
    fb_buf_puts(o, ",\"area\":");
    if (d->area)
        fb_json_cstr(o, d->area);
    else
        fb_buf_puts(o, "null");
    fb_buf_puts(o, ",\"line\":");
    if (d->line)
        fb_json_cstr(o, d->line);
    else
        fb_buf_puts(o, "null");
    fb_buf_puts(o, ",\"state\":\"");
    fb_buf_puts(o, state_name(atomic_load(&d->state)));
    fb_buf_puts(o, "\",\"ne107\":");
    fb_json_cstr(o, fb_device_ne107(gw, d->idx));
    fb_buf_printf(o, ",\"tags\":%" PRIu32, d->ntags);
    const struct fb_dev_metrics *m = &d->m;
    fb_buf_puts(o, ",\"counters\":{\"requests\":");
    fb_json_u64(o, atomic_load(&m->requests));
    fb_buf_puts(o, ",\"errors\":");
    fb_json_u64(o, atomic_load(&m->errors));
    fb_buf_puts(o, ",\"timeouts\":");
    fb_json_u64(o, atomic_load(&m->timeouts));
    fb_buf_puts(o, ",\"reconnects\":");
    fb_json_u64(o, atomic_load(&m->reconnects));
    fb_buf_puts(o, ",\"writes\":");
    fb_json_u64(o, atomic_load(&m->writes));
    fb_buf_puts(o, ",\"write_errors\":");
    fb_json_u64(o, atomic_load(&m->write_errors));
    uint64_t over = 0;
    for (uint32_t k = 0; k < d->ngroups; k++) over += d->groups[k].rt ? atomic_load(&d->groups[k].rt->overruns) : 0;
    fb_buf_puts(o, ",\"overruns\":");
    fb_json_u64(o, over);
    fb_buf_puts(o, "},\"rtt_ms\":");
    fb_json_double(o, (double)atomic_load(&m->rtt_ns_last) / 1e6);
    fb_buf_puts(o, ",\"last_success\":");
    put_time_or_null(o, atomic_load(&m->last_success_ns));
    if (detail) {
        fb_buf_puts(o, ",\"poll_groups\":[");
        for (uint32_t k = 0; k < d->ngroups; k++) {
            if (k) fb_buf_putc(o, ',');
            fb_buf_puts(o, "{\"period_ms\":");
            fb_json_double(o, (double)d->groups[k].period_ns / 1e6);
            fb_buf_printf(o, ",\"tags\":%" PRIu32 ",\"overruns\":", d->groups[k].ntags);
            fb_json_u64(o, d->groups[k].rt ? atomic_load(&d->groups[k].rt->overruns) : 0);
            fb_buf_putc(o, '}');
        }
        fb_buf_putc(o, ']');
    }
    fb_buf_putc(o, '}');
}

static void put_limit(struct fb_buf *o, bool has, double v)
{
    if (has && isfinite(v))
        fb_json_double(o, v);
    else
        fb_buf_puts(o, "null");
}

static void put_tag(struct fb_buf *o, const struct fb_gateway *gw, const struct fb_tag *t, const struct fb_live_tag *lt)
{
    char ab[FB_ATEXT_MAX];
    const char *addr = fb_tag_addr_text(gw, t, ab);
    fb_buf_puts(o, "{\"name\":");
    fb_json_cstr(o, t->name);
    fb_buf_puts(o, ",\"addr\":");
    fb_json_cstr(o, addr ? addr : "");
    fb_buf_puts(o, ",\"type\":\"");
    fb_buf_puts(o, fb_type_name(fb_tag_out_type(t)));
    fb_buf_puts(o, "\",\"wire_type\":\"");
    fb_buf_puts(o, fb_type_name((enum fb_type)t->type));
    fb_buf_puts(o, "\",\"unit\":");
    if (fb_tag_unit(t))
        fb_json_cstr(o, fb_tag_unit(t));
    else
        fb_buf_puts(o, "null");
    fb_buf_puts(o, ",\"access\":\"");
    fb_buf_puts(o, access_name(t->access));
    fb_buf_puts(o, "\",\"range\":[");
    put_limit(o, fb_tproc(t)->has_min, fb_tproc(t)->min);
    fb_buf_putc(o, ',');
    put_limit(o, fb_tproc(t)->has_max, fb_tproc(t)->max);
    fb_buf_puts(o, "],");
    put_live(o, lt);
    fb_buf_putc(o, '}');
}

static struct fb_device *find_device(struct fb_gateway *gw, const char *name, size_t n)
{
    char buf[256];
    if (!name || n == 0 || n >= sizeof buf) return NULL;
    memcpy(buf, name, n);
    buf[n] = 0;
    return fb_gw_device(gw, buf);
}

/* GET /api/v1/alarms: the summary (docs/mqtt.md, the retained one) of
 * every device that has alarms configured, in config order.  The alarm
 * table locks per call, so each device's summary is consistent. */
static void render_alarms(struct fb_gateway *gw, struct fb_buf *o)
{
    fb_buf_puts(o, "{\"devices\":[");
    bool first = true;
    for (uint32_t d = 0; d < gw->ndevs; d++) {
        bool has = false;
        for (uint32_t i = 0; i < gw->nalarms && !has; i++) has = gw->alarms[i].device == d;
        if (!has) continue;
        if (!first) fb_buf_putc(o, ',');
        first = false;
        fb_alarm_summary_json(o, gw, d);
    }
    fb_buf_puts(o, "]}");
}

static void render_tags(struct fb_http_api *api, struct fb_buf *o, const struct fb_device *d)
{
    struct fb_gateway *gw = api->gw;
    fb_buf_puts(o, "{\"device\":");
    fb_json_cstr(o, d->name);
    fb_buf_puts(o, ",\"tags\":[");
    fb_live_lock(api->live, d->idx);
    for (uint32_t i = 0; i < d->ntags; i++) {
        if (i) fb_buf_putc(o, ',');
        put_tag(o, gw, &gw->tags[d->first_tag + i], fb_live_tag(api->live, d->first_tag + i));
    }
    fb_live_unlock(api->live, d->idx);
    fb_buf_puts(o, "]}");
}

/* GET /api/v1/values?device=&tag= */
static void render_values(struct fb_http_api *api, const struct fb_http_req *req, struct fb_http_resp *resp)
{
    struct fb_gateway *gw = api->gw;
    const char *dn = fb_http_arg(req, "device"), *tn = fb_http_arg(req, "tag");
    struct fb_device *only = NULL;
    if (dn) {
        only = find_device(gw, dn, strlen(dn));
        if (!only) {
            fb_http_error(resp, 404, "no device '%.100s'", dn);
            return;
        }
    }
    for (int i = 0; i < req->nargs; i++)
        if (strcmp(req->args[i].k, "device") && strcmp(req->args[i].k, "tag")) {
            fb_http_error(resp, 400, "unknown argument '%.60s' (device, tag)", req->args[i].k);
            return;
        }
    struct fb_buf *o = resp->body;
    fb_buf_clear(o);
    fb_buf_puts(o, "{\"ts\":");
    put_time_or_null(o, fb_now_ns());
    fb_buf_puts(o, ",\"values\":[");
    uint32_t count = 0;
    for (uint32_t di = only ? only->idx : 0; di < gw->ndevs; di++) {
        const struct fb_device *d = &gw->devs[di];
        fb_live_lock(api->live, di);
        for (uint32_t i = 0; i < d->ntags; i++) {
            const struct fb_tag *t = &gw->tags[d->first_tag + i];
            if (tn && strcmp(t->name, tn)) continue;
            if (count++) fb_buf_putc(o, ',');
            fb_buf_puts(o, "{\"device\":");
            fb_json_cstr(o, d->name);
            fb_buf_puts(o, ",\"tag\":");
            fb_json_cstr(o, t->name);
            fb_buf_putc(o, ',');
            put_live(o, fb_live_tag(api->live, d->first_tag + i));
            fb_buf_putc(o, '}');
        }
        fb_live_unlock(api->live, di);
        if (only) break;
    }
    if (tn && count == 0) {
        fb_http_error(resp, 404, "no tag '%.100s'%s%.100s", tn, only ? " on device " : "", only ? only->name : "");
        return;
    }
    fb_buf_printf(o, "],\"count\":%" PRIu32 "}", count);
    resp->status = 200;
    resp->ctype = k_json;
}

static void render_config(struct fb_http_api *api, struct fb_http_resp *resp)
{
    const struct fb_http_cfg *c = api->cfg;
    struct fb_buf *o = resp->body;
    if (!c->cfg_text) {
        fb_http_error(resp, 404, "the running configuration's text is not available");
        return;
    }
    struct fb_buf y, w;
    fb_buf_init(&y);
    fb_buf_init(&w);
    int n = fb_redact_yaml(c->cfg_text, c->cfg_len, &y, &w);
    if (n < 0) {
        fb_buf_free(&y);
        fb_buf_free(&w);
        fb_http_error(resp, 500, "the configuration could not be parsed for redaction");
        return;
    }
    fb_buf_clear(o);
    fb_buf_puts(o, "{\"path\":");
    fb_json_cstr(o, c->cfg_path ? c->cfg_path : "");
    fb_buf_puts(o, ",\"redacted\":");
    fb_buf_put(o, w.p, w.len);
    fb_buf_puts(o, ",\"yaml\":");
    /* and any value the gateway holds as a secret (core/env.h), wherever it
     * stands in the text: the key-based redaction above cannot know them all */
    size_t rl = 0;
    char *red = fb_secret_any() && y.len ? fb_secret_redact_dup(y.p, y.len, &rl) : NULL;
    if (red)
        fb_json_str(o, red, rl);
    else
        fb_json_str(o, y.p ? y.p : "", y.len);
    free(red);
    fb_buf_putc(o, '}');
    fb_buf_free(&y);
    fb_buf_free(&w);
    resp->status = 200;
    resp->ctype = k_json;
}

static const struct fb_ui_file *ui_file(const char *path)
{
    for (size_t i = 0; i < fb_ui_nfiles; i++)
        if (!strcmp(fb_ui_files[i].path, path)) return &fb_ui_files[i];
    return NULL;
}

static void serve_static(struct fb_http_resp *resp, const struct fb_ui_file *f)
{
    resp->status = 200;
    resp->kind = FB_RESP_STATIC;
    resp->ctype = f->ctype;
    resp->static_data = f->data;
    resp->static_len = f->len;
}

/* ------------------------------------------------------------ the handler */
static bool origin_allowed(const struct fb_http_cfg *c, const char *origin)
{
    for (char **o = c->cors; o && *o; o++)
        if (!strcmp(*o, origin)) return true;
    return false;
}

/* The page itself calls the API: its Origin is this server's. */
static bool same_origin(const struct fb_http_req *req)
{
    if (!req->origin || !req->host) return false;
    const char *pfx = req->tls ? "https://" : "http://";
    size_t pl = strlen(pfx);
    return !strncmp(req->origin, pfx, pl) && !strcmp(req->origin + pl, req->host);
}

/* One request from route to answer. Long on purpose: the checks run in a fixed,
 * security-relevant order (route, CORS, method, rate, token, role, TLS for
 * writes, body) that reads best as one straight sequence. */
void fb_http_handle(struct fb_http_api *api, const struct fb_http_req *req, struct fb_http_resp *resp)
{
    struct fb_buf *body = resp->body;
    memset(resp, 0, sizeof *resp);
    resp->body = body;
    fb_buf_clear(body);
    atomic_fetch_add(&api->requests, 1);
    const struct fb_http_cfg *cfg = api->cfg;
    struct fb_route r;
    int rc = fb_http_route(req->method, req->path, &r);
    if (rc == 404) {
        fb_http_error(resp, 404, "not found (the API is under /api/v1/, see /api/v1/openapi.yaml)");
        return;
    }
    resp->allow = r.allow;
    if (req->origin && origin_allowed(cfg, req->origin)) resp->cors_origin = req->origin;
    if (!strcmp(req->method, "OPTIONS")) {
        if (!resp->cors_origin) {
            refuse(api, req, resp, 403, "cross-origin requests from %.100s are not allowed (http.cors)",
                   req->origin ? req->origin : "an unnamed origin");
            return;
        }
        resp->status = 204;
        resp->preflight = true;
        resp->kind = FB_RESP_DONE;
        return;
    }
    if (rc == 405) {
        fb_http_error(resp, 405, "method %.16s not allowed here (allowed: %s)", req->method, r.allow);
        return;
    }
    if (!req->body && !rate_ok(api, req)) { /* once per request: the body pass is the same request */
        resp->retry_after = 1;
        refuse(api, req, resp, 429, "too many requests (http.rate_limit %u/s per client)", cfg->rate);
        return;
    }
    /* authentication */
    if (r.role > FB_ROLE_NONE) {
        const char *tok;
        size_t tl;
        int brc = fb_http_bearer(req->authorization, &tok, &tl);
        if (brc == 0) {
            pthread_mutex_lock(&api->tokens_mu);
            const struct fb_http_token *t = fb_http_tokens_find(&api->tokens, tok, tl);
            if (t) {
                snprintf(resp->user, sizeof resp->user, "%s", t->name);
                resp->role = t->role;
            }
            pthread_mutex_unlock(&api->tokens_mu);
            if (!resp->role) {
                resp->www_authenticate = true;
                refuse(api, req, resp, 401, "unknown token");
                return;
            }
        } else if (brc == FB_EINVAL) {
            resp->www_authenticate = true;
            refuse(api, req, resp, 401, "malformed Authorization header (expected: Bearer TOKEN)");
            return;
        } else if (cfg->anonymous > FB_ROLE_NONE) {
            snprintf(resp->user, sizeof resp->user, "anonymous");
            resp->role = cfg->anonymous;
        } else {
            resp->www_authenticate = true;
            refuse(api, req, resp, 401, "a bearer token is required (Authorization: Bearer TOKEN)");
            return;
        }
        if (resp->role < r.role) {
            refuse(api, req, resp, 403, "role %s may not do this (needs %s)", fb_http_role_name(resp->role),
                   fb_http_role_name(r.role));
            return;
        }
        if (r.tls && !api->tls && !cfg->plaintext_writes) {
            refuse(api, req, resp, 403,
                   "this needs TLS (http.tls), so that operator tokens never cross the network in clear; on a "
                   "loopback listener http.plaintext_writes: true allows it");
            return;
        }
    }
    /* a cross-origin POST is refused unless its origin is allowed (GETs just get no CORS headers) */
    if (r.body && req->origin && !resp->cors_origin && !same_origin(req)) {
        refuse(api, req, resp, 403, "cross-origin request from %.100s refused (http.cors)", req->origin);
        return;
    }
    if (r.body && !req->body) {
        if (req->content_length) {
            char *end;
            unsigned long long n = strtoull(req->content_length, &end, 10);
            if (*end || end == req->content_length) {
                refuse(api, req, resp, 400, "bad Content-Length");
                return;
            }
            if (n > cfg->max_body) {
                refuse(api, req, resp, 413, "request body of %llu bytes is larger than http.max_body (%llu)", n,
                       (unsigned long long)cfg->max_body);
                return;
            }
        }
        resp->kind = FB_RESP_CONTINUE;
        resp->status = 100;
        return;
    }
    if (req->nargs && req->args_overflow) {
        fb_http_error(resp, 400, "too many query arguments");
        return;
    }
    struct fb_gateway *gw = api->gw;
    struct fb_device *d = NULL;
    if (r.name && r.ep != FB_EP_UI) {
        d = find_device(gw, r.name, r.name_len);
        if (!d) {
            fb_http_error(resp, 404, "no device '%.*s'", (int)(r.name_len < 100 ? r.name_len : 100), r.name);
            return;
        }
    }
    resp->status = 200;
    resp->ctype = k_json;
    switch (r.ep) {
        case FB_EP_UI: {
            char path[160];
            snprintf(path, sizeof path, "%s", req->path);
            const struct fb_ui_file *f = cfg->ui ? ui_file(path) : NULL;
            if (!f || !strncmp(path, "/api/", 5)) {
                fb_http_error(resp, 404, cfg->ui ? "not found" : "the web page is off (http.ui: false)");
                return;
            }
            serve_static(resp, f);
            return;
        }
        case FB_EP_OPENAPI: {
            const struct fb_ui_file *f = ui_file("/api/v1/openapi.yaml");
            if (!f) {
                fb_http_error(resp, 404, "not built in");
                return;
            }
            serve_static(resp, f);
            return;
        }
        case FB_EP_WHOAMI:
            fb_buf_puts(body, "{\"user\":");
            fb_json_cstr(body, resp->user);
            fb_buf_puts(body, ",\"role\":\"");
            fb_buf_puts(body, fb_http_role_name(resp->role));
            fb_buf_puts(body, req->tls ? "\",\"tls\":true" : "\",\"tls\":false");
            fb_buf_puts(body, resp->role >= FB_ROLE_OPERATOR && (api->tls || cfg->plaintext_writes)
                                  ? ",\"can_write\":true"
                                  : ",\"can_write\":false");
            fb_buf_puts(body, ",\"gateway\":");
            fb_json_cstr(body, gw->id ? gw->id : "");
            fb_buf_puts(body, ",\"version\":");
            fb_json_cstr(body, FB_VERSION);
            fb_buf_putc(body, '}');
            return;
        case FB_EP_STATUS: fb_status_json(gw, body, true); return;
        case FB_EP_DEVICES:
            fb_buf_puts(body, "{\"devices\":[");
            for (uint32_t i = 0; i < gw->ndevs; i++) {
                if (i) fb_buf_putc(body, ',');
                put_device(body, gw, &gw->devs[i], false);
            }
            fb_buf_puts(body, "]}");
            return;
        case FB_EP_DEVICE: put_device(body, gw, d, true); return;
        case FB_EP_TAGS: render_tags(api, body, d); return;
        case FB_EP_VALUES: render_values(api, req, resp); return;
        case FB_EP_CONFIG: render_config(api, resp); return;
        case FB_EP_ALARMS: render_alarms(gw, body); return;
        case FB_EP_EVENTS: resp->kind = FB_RESP_EVENTS; return;
        case FB_EP_BROWSE: {
            const char *url = fb_http_arg(req, "url");
            if (!url || !*url) {
                fb_http_error(resp, 400, "missing ?url= (a device URL such as opc.tcp://host:4840)");
                return;
            }
            resp->url = url;
            resp->kind = FB_RESP_BROWSE;
            return;
        }
        case FB_EP_WRITE:
        case FB_EP_CHECK:
            if (req->body_len > cfg->max_body) {
                refuse(api, req, resp, 413, "request body larger than http.max_body (%llu bytes)",
                       (unsigned long long)cfg->max_body);
                return;
            }
            if (r.ep == FB_EP_WRITE) {
                resp->kind = FB_RESP_WRITE;
                resp->device = d->idx;
            } else {
                resp->kind = FB_RESP_CHECK;
            }
            return;
        case FB_EP_NONE: break;
    }
    fb_http_error(resp, 404, "not found");
}
