/* schema.c — the `influx:` section and the mapping of fieldbridge data onto
 * InfluxDB measurements, tags and fields (schema.h, docs/influxdb.md).
 *
 * Why templates and rules instead of per-device keys in `devices:`: the sink
 * owns its section (docs/architecture.md, "How to add a sink"), and the same
 * rules must also apply to data ingested from other gateways, whose devices
 * and tags the config does not list.  The sink resolves each tag's column
 * once (configured tags at open, ingested ones when first seen), so the
 * rules cost nothing per value.
 *
 * Health: the gateway status document (the JSON the MQTT sink publishes, the
 * same for our own status and for ingested ones) becomes points with a fixed
 * field table, so a field's type never depends on the value that happened to
 * be sent first (a JSON 0 is not a float to us when the table says integer).
 */
#include "north/influx/schema.h"

#include <ctype.h>
#include <fnmatch.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "core/url.h"
#include "edge/alarm.h"

static const char *const var_name[FB_IX__N] = {"gateway", "site", "area", "line", "device", "tag"};

const char *const fb_ix_keys[] = {"url",         "db",     "rp",    "username",   "password",        "password_file",
                                  "org",         "bucket", "token", "token_file", "create_database", "precision",
                                  "tls",         "batch",  "gzip",  "timeout",    "retry",           "max_inflight",
                                  "measurement", "tags",   "field", "quality",    "stats",           "unsigned",
                                  "health",      "map",    NULL};
static const char *const k_tls[] = {"ca", "ca_path", "cert", "key", "verify_hostname", NULL};
static const char *const k_batch[] = {"size", "bytes", "interval", NULL};
static const char *const k_retry[] = {"min", "max", NULL};
static const char *const k_rule[] = {"device", "tag", "measurement", "field", "tags", "skip", NULL};
const struct fb_config_keys fb_ix_nested[] = {
    {"tls", k_tls}, {"influx.batch", k_batch}, {"influx.retry", k_retry}, {"influx.map", k_rule}, {NULL, NULL}};
static const char *const k_precision[] = {"ns", "us", "ms", "s", NULL};
static const char *const k_quality[] = {"field", "tag", "none", NULL};

/* ------------------------------------------------------------- templates */
bool fb_ix_tmpl_check(const char *t, unsigned allowed, struct fb_err *err)
{
    for (const char *p = t; *p; p++) {
        if (*p == '}') {
            fb_err_set(err, FB_EINVAL, "template \"%s\": '}' without '{'", t);
            return false;
        }
        if (*p != '{') continue;
        const char *e = strchr(p, '}');
        if (!e) {
            fb_err_set(err, FB_EINVAL, "template \"%s\": '{' without '}'", t);
            return false;
        }
        int k;
        for (k = 0; k < FB_IX__N; k++)
            if ((size_t)(e - p - 1) == strlen(var_name[k]) && !strncmp(p + 1, var_name[k], (size_t)(e - p - 1))) break;
        if (k == FB_IX__N || !(allowed & (1u << k))) {
            char known[96] = "";
            for (int i = 0; i < FB_IX__N; i++)
                if (allowed & (1u << i)) {
                    strcat(known, " {");
                    strcat(known, var_name[i]);
                    strcat(known, "}");
                }
            fb_err_set(err, FB_EINVAL, "template \"%s\": %s placeholder {%.*s} (known:%s)", t,
                       k == FB_IX__N ? "unknown" : "here not allowed", (int)(e - p - 1), p + 1, known);
            return false;
        }
        p = e;
    }
    return true;
}

void fb_ix_tmpl_render(struct fb_buf *out, const char *t, const struct fb_ix_names *n)
{
    const char *lit = t;
    for (const char *p = t; *p; p++) {
        if (*p != '{') continue;
        const char *e = strchr(p, '}');
        if (!e) break;
        for (int k = 0; k < FB_IX__N; k++)
            if ((size_t)(e - p - 1) == strlen(var_name[k]) && !strncmp(p + 1, var_name[k], (size_t)(e - p - 1))) {
                fb_buf_put(out, lit, (size_t)(p - lit));
                /* "_" is how an area or line that is not set appears in the
                 * model and in MQTT topics (a level cannot be empty): empty here */
                bool unset = (k == FB_IX_AREA || k == FB_IX_LINE) && n->v[k] && !strcmp(n->v[k], "_");
                if (n->v[k] && !unset) fb_buf_puts(out, n->v[k]);
                lit = e + 1;
                break;
            }
        p = e;
    }
    fb_buf_puts(out, lit);
}

/* ------------------------------------------------------------------ tags */
static void tags_clear(struct fb_ix_tags *t)
{
    for (uint32_t i = 0; i < t->n; i++) {
        free(t->key[i]);
        free(t->tmpl[i]);
    }
    free(t->key);
    free(t->tmpl);
    memset(t, 0, sizeof *t);
}

/* Set key to tmpl (replacing), keeping keys sorted; tmpl NULL removes. */
static void tags_set(struct fb_ix_tags *t, const char *key, const char *tmpl)
{
    uint32_t i = 0;
    while (i < t->n && strcmp(t->key[i], key) < 0) i++;
    if (i < t->n && !strcmp(t->key[i], key)) {
        free(t->tmpl[i]);
        if (tmpl) {
            t->tmpl[i] = strdup(tmpl);
            return;
        }
        free(t->key[i]);
        memmove(t->key + i, t->key + i + 1, (t->n - i - 1) * sizeof *t->key);
        memmove(t->tmpl + i, t->tmpl + i + 1, (t->n - i - 1) * sizeof *t->tmpl);
        t->n--;
        return;
    }
    if (!tmpl) return;
    char **k = realloc(t->key, (t->n + 1) * sizeof *k);
    if (k) t->key = k;
    char **v = realloc(t->tmpl, (t->n + 1) * sizeof *v);
    if (v) t->tmpl = v;
    if (!k || !v) return;
    memmove(t->key + i + 1, t->key + i, (t->n - i) * sizeof *t->key);
    memmove(t->tmpl + i + 1, t->tmpl + i, (t->n - i) * sizeof *t->tmpl);
    t->key[i] = strdup(key);
    t->tmpl[i] = strdup(tmpl);
    t->n++;
}

static void tags_copy(struct fb_ix_tags *dst, const struct fb_ix_tags *src)
{
    for (uint32_t i = 0; i < src->n; i++) tags_set(dst, src->key[i], src->tmpl[i]);
}

#define ALLOW_SERIES                                                                                                   \
    ((1u << FB_IX_GATEWAY) | (1u << FB_IX_SITE) | (1u << FB_IX_AREA) | (1u << FB_IX_LINE) | (1u << FB_IX_DEVICE) |     \
     (1u << FB_IX_TAG))

/* A template-valued key: the string, checked. */
static char *load_tmpl(struct fb_cfg *r, const struct fb_cfg_node *n, const char *what, bool nonempty)
{
    char *s = fb_cfg_str(r, NULL, n, what);
    if (!s) return NULL;
    struct fb_err e = {0};
    if (!fb_ix_tmpl_check(s, ALLOW_SERIES, &e)) {
        fb_cfg_error(r, n, "%s: %s", what, e.msg);
    } else if (nonempty && !*s) {
        fb_cfg_error(r, n, "%s must not be empty", what);
    }
    return s;
}

/* `tags:` — a map key → template; in a rule an empty or null value removes the key. */
static void load_tags(struct fb_cfg *r, const struct fb_cfg_node *n, const char *what, struct fb_ix_tags *t, bool rule)
{
    struct fb_cfg_map m = {0};
    if (fb_cfg_is_null(n) && !rule) return; /* tags: ~ → none */
    if (!fb_cfg_map_load(r, n, what, &m)) return;
    for (int i = 0; i < m.n; i++) {
        const char *k = m.kv[i].key;
        char key[160];
        snprintf(key, sizeof key, "%s.%s", what, k);
        if (!*k || !strcmp(k, "time") || !strcmp(k, "quality"))
            fb_cfg_error(r, m.kv[i].k, "%s: '%s' cannot be a tag key (empty, InfluxDB's 'time', or the quality tag)",
                         what, k);
        if (fb_cfg_is_null(m.kv[i].v)) {
            if (rule) tags_set(t, k, ""); /* a rule's empty template removes the key */
            continue;
        }
        char *v = load_tmpl(r, m.kv[i].v, key, false);
        if (v && (rule || *v)) tags_set(t, k, v);
        free(v);
    }
    fb_cfg_map_free(&m);
}

/* -------------------------------------------------------------- the URL */
static void put_qs(struct fb_buf *b, const char *k, const char *v)
{
    static const char hex[] = "0123456789ABCDEF";
    fb_buf_putc(b, b->len && memchr(b->p, '?', b->len) ? '&' : '?');
    fb_buf_puts(b, k);
    fb_buf_putc(b, '=');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            fb_buf_putc(b, (char)*p);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            fb_buf_put(b, e, 3);
        }
    }
}

static void build_urls(struct fb_influx_cfg *c)
{
    size_t n = strlen(c->url);
    while (n && c->url[n - 1] == '/') n--;
    struct fb_buf b;
    fb_buf_init(&b);
    fb_buf_put(&b, c->url, n);
    if (c->api2) {
        fb_buf_puts(&b, "/api/v2/write");
        put_qs(&b, "org", c->org ? c->org : "");
        put_qs(&b, "bucket", c->bucket ? c->bucket : "");
    } else {
        fb_buf_puts(&b, "/write");
        put_qs(&b, "db", c->db ? c->db : "");
        if (c->rp) put_qs(&b, "rp", c->rp);
    }
    put_qs(&b, "precision", fb_lp_precision_param(c->precision, c->api2));
    c->write_url = strdup(fb_buf_cstr(&b));
    fb_buf_clear(&b);
    fb_buf_put(&b, c->url, n);
    fb_buf_puts(&b, "/query");
    c->query_url = strdup(fb_buf_cstr(&b));
    fb_buf_free(&b);
}

/* ------------------------------------------------------------------ load */
void fb_ix_cfg_free(void *p)
{
    struct fb_influx_cfg *c = p;
    if (!c) return;
    free(c->url);
    free(c->write_url);
    free(c->query_url);
    free(c->db);
    free(c->rp);
    free(c->username);
    free(c->org);
    free(c->bucket);
    if (c->password) explicit_bzero(c->password, strlen(c->password));
    if (c->token) explicit_bzero(c->token, strlen(c->token));
    free(c->password);
    free(c->token);
    free(c->ca);
    free(c->ca_path);
    free(c->cert);
    free(c->key);
    free(c->measurement);
    free(c->field);
    tags_clear(&c->tags);
    for (uint32_t i = 0; i < c->nrules; i++) {
        struct fb_ix_rule *x = &c->rules[i];
        free(x->device);
        free(x->tag);
        free(x->measurement);
        free(x->field);
        tags_clear(&x->tags);
    }
    free(c->rules);
    free(c);
}

/* ------------------------------------------------------------- sameness */
static bool str_same(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

static bool tags_same(const struct fb_ix_tags *a, const struct fb_ix_tags *b)
{
    if (a->n != b->n) return false;
    for (uint32_t i = 0; i < a->n; i++)
        if (!str_same(a->key[i], b->key[i]) || !str_same(a->tmpl[i], b->tmpl[i])) return false;
    return true;
}

bool fb_ix_cfg_equal(const void *pa, const void *pb)
{
    const struct fb_influx_cfg *a = pa, *b = pb;
    if (!a || !b) return a == b;
    /* certificate files are read when connections are made: a reload restarts the sink so that renewed
     * files under the same names are used */
    if (a->ca || a->ca_path || a->cert || a->key || b->ca || b->ca_path || b->cert || b->key) return false;
    if (!str_same(a->url, b->url) || !str_same(a->write_url, b->write_url) || !str_same(a->query_url, b->query_url) ||
        a->api2 != b->api2 || !str_same(a->db, b->db) || !str_same(a->rp, b->rp) ||
        !str_same(a->username, b->username) || !str_same(a->password, b->password) || !str_same(a->org, b->org) ||
        !str_same(a->bucket, b->bucket) || !str_same(a->token, b->token) || a->create_database != b->create_database ||
        a->precision != b->precision || a->tls_verify_hostname != b->tls_verify_hostname ||
        a->batch_lines != b->batch_lines || a->batch_bytes != b->batch_bytes ||
        a->batch_interval_ns != b->batch_interval_ns || a->gzip_level != b->gzip_level ||
        a->timeout_ns != b->timeout_ns || a->retry_min_ns != b->retry_min_ns || a->retry_max_ns != b->retry_max_ns ||
        a->max_inflight != b->max_inflight || !str_same(a->measurement, b->measurement) ||
        !str_same(a->field, b->field) || !tags_same(&a->tags, &b->tags) || a->quality != b->quality ||
        a->stats != b->stats || a->unsigned_ok != b->unsigned_ok || a->health != b->health ||
        !str_same(a->health_prefix, b->health_prefix) || a->nrules != b->nrules)
        return false;
    for (uint32_t i = 0; i < a->nrules; i++) {
        const struct fb_ix_rule *x = &a->rules[i], *y = &b->rules[i];
        if (!str_same(x->device, y->device) || !str_same(x->tag, y->tag) || !str_same(x->measurement, y->measurement) ||
            !str_same(x->field, y->field) || !tags_same(&x->tags, &y->tags) || x->skip != y->skip)
            return false;
    }
    return true;
}

static void load_rules(struct fb_cfg *r, const struct fb_cfg_node *n, struct fb_influx_cfg *c)
{
    if (fb_cfg_kind(n) != FB_CFG_LIST) {
        fb_cfg_error(r, n,
                     "influx.map must be a list of rules ({device: PATTERN, tag: PATTERN, measurement: ..., "
                     "field: ..., tags: {...}, skip: bool})");
        return;
    }
    size_t len = fb_cfg_list_len(n);
    c->rules = calloc(len ? len : 1, sizeof *c->rules);
    if (!c->rules) return;
    for (size_t i = 0; i < len; i++) {
        struct fb_cfg_node *it = fb_cfg_list_at(r, n, i);
        char what[64];
        snprintf(what, sizeof what, "influx.map[%zu]", i);
        struct fb_cfg_map m = {0};
        if (!fb_cfg_map_load(r, it, what, &m)) continue;
        fb_cfg_map_check(r, &m, k_rule, what, false);
        struct fb_ix_rule *x = &c->rules[c->nrules++];
        char key[96];
        struct fb_cfg_node *v;
        if ((v = fb_cfg_get(&m, "device"))) {
            snprintf(key, sizeof key, "%s.device", what);
            x->device = fb_cfg_str(r, NULL, v, key);
        }
        if ((v = fb_cfg_get(&m, "tag"))) {
            snprintf(key, sizeof key, "%s.tag", what);
            x->tag = fb_cfg_str(r, NULL, v, key);
        }
        if ((v = fb_cfg_get(&m, "measurement"))) {
            snprintf(key, sizeof key, "%s.measurement", what);
            x->measurement = load_tmpl(r, v, key, true);
        }
        if ((v = fb_cfg_get(&m, "field"))) {
            snprintf(key, sizeof key, "%s.field", what);
            x->field = load_tmpl(r, v, key, true);
        }
        if ((v = fb_cfg_get(&m, "tags"))) {
            snprintf(key, sizeof key, "%s.tags", what);
            load_tags(r, v, key, &x->tags, true);
        }
        if ((v = fb_cfg_get(&m, "skip"))) {
            snprintf(key, sizeof key, "%s.skip", what);
            fb_cfg_bool(r, NULL, v, key, &x->skip);
        }
        if (!x->measurement && !x->field && !x->tags.n && !x->skip)
            fb_cfg_note(r, it, "%s changes nothing (give measurement:, field:, tags: or skip:)", what);
        fb_cfg_map_free(&m);
    }
}

/* The influx: section, key by key, each with its own file:line:col check;
 * long because the section has many keys, not because of nesting. */
void *fb_ix_cfg_load(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw)
{
    (void)gw;
    struct fb_influx_cfg *c = calloc(1, sizeof *c);
    if (!c) {
        fb_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    c->precision = FB_LP_NS;
    c->tls_verify_hostname = true;
    c->batch_lines = 5000;
    c->batch_bytes = 4u << 20;
    c->batch_interval_ns = 1000000000LL;
    c->gzip_level = 1;
    c->timeout_ns = 10000000000LL;
    c->retry_min_ns = 1000000000LL;
    c->retry_max_ns = 60000000000LL;
    c->max_inflight = 1;
    c->quality = FB_IXQ_FIELD;
    c->stats = true;
    c->health = true;

    struct fb_cfg_node *n, *x;
    /* url */
    if ((n = fb_cfg_get(m, "url"))) {
        c->url = fb_cfg_str(r, NULL, n, "influx.url");
        if (c->url) {
            struct fb_url u;
            struct fb_err e = {0};
            if (fb_url_parse(c->url, &u, &e) < 0) {
                fb_cfg_error(r, n, "influx.url: %s", e.msg);
            } else {
                if (strcmp(u.scheme, "http") && strcmp(u.scheme, "https"))
                    fb_cfg_error(r, n, "influx.url: scheme must be http:// or https://, got '%s://'", u.scheme);
                else if (!*u.host)
                    fb_cfg_error(r, n, "influx.url: missing host");
                else if (u.nq)
                    fb_cfg_error(r, n, "influx.url: no query here (give db:, rp:, org:, bucket: as keys)");
                fb_url_free(&u);
            }
        }
    } else {
        fb_cfg_error(r, NULL, "influx.url is required (e.g. http://127.0.0.1:8086)");
    }
    /* 1.x or 2.x */
    struct fb_cfg_node *dbn = fb_cfg_get(m, "db"), *bn = fb_cfg_get(m, "bucket");
    c->api2 = bn != NULL;
    if (dbn && bn)
        fb_cfg_error(r, bn, "give influx.db (InfluxDB 1.x /write) or influx.bucket (2.x /api/v2/write), not both");
    if (dbn) c->db = fb_cfg_str(r, NULL, dbn, "influx.db");
    if (bn) c->bucket = fb_cfg_str(r, NULL, bn, "influx.bucket");
    if (!dbn && !bn) fb_cfg_error(r, NULL, "influx: give db: (InfluxDB 1.x) or org: and bucket: (2.x)");
    if ((n = fb_cfg_get(m, "rp"))) {
        if (c->api2) fb_cfg_error(r, n, "influx.rp belongs to the 1.x API (db:); 2.x writes to a bucket");
        c->rp = fb_cfg_str(r, NULL, n, "influx.rp");
    }
    if ((n = fb_cfg_get(m, "org"))) {
        if (!c->api2) fb_cfg_error(r, n, "influx.org belongs to the 2.x API (bucket:)");
        c->org = fb_cfg_str(r, NULL, n, "influx.org");
    } else if (c->api2) {
        fb_cfg_error(r, bn, "influx.org is required with influx.bucket (the 2.x write API)");
    }
    if ((n = fb_cfg_get(m, "username"))) c->username = fb_cfg_str(r, NULL, n, "influx.username");
    c->password = fb_cfg_secret(r, m, "password", "influx");
    c->token = fb_cfg_secret(r, m, "token", "influx");
    if (c->token && (c->username || c->password))
        fb_cfg_error(r, fb_cfg_key(m, "token") ? fb_cfg_key(m, "token") : fb_cfg_key(m, "token_file"),
                     "influx: give a token or a username/password, not both");
    if (c->password && !c->username)
        fb_cfg_error(r, fb_cfg_key(m, "password") ? fb_cfg_key(m, "password") : fb_cfg_key(m, "password_file"),
                     "influx: a password needs influx.username");
    if ((n = fb_cfg_get(m, "create_database"))) {
        fb_cfg_bool(r, NULL, n, "influx.create_database", &c->create_database);
        if (c->api2 && c->create_database)
            fb_cfg_error(r, n, "influx.create_database is for the 1.x API; create 2.x buckets in InfluxDB");
    }
    int e;
    if ((n = fb_cfg_get(m, "precision")) && fb_cfg_enum(r, n, "influx.precision", k_precision, &e))
        c->precision = (enum fb_lp_precision)e;
    /* tls */
    struct fb_cfg_map t = {0};
    if ((n = fb_cfg_get(m, "tls")) && fb_cfg_map_load(r, n, "influx.tls", &t)) {
        fb_cfg_map_check(r, &t, k_tls, "influx.tls", false);
        if (c->url && strncmp(c->url, "https://", 8)) fb_cfg_error(r, n, "influx.tls needs an https:// url");
        if ((x = fb_cfg_get(&t, "ca"))) c->ca = fb_cfg_file_ref(r, x, "influx.tls.ca", FB_OPT_CERT, NULL);
        if ((x = fb_cfg_get(&t, "ca_path"))) c->ca_path = fb_cfg_file_ref(r, x, "influx.tls.ca_path", FB_OPT_DIR, NULL);
        if ((x = fb_cfg_get(&t, "cert"))) c->cert = fb_cfg_file_ref(r, x, "influx.tls.cert", FB_OPT_CERT, NULL);
        if ((x = fb_cfg_get(&t, "key"))) c->key = fb_cfg_file_ref(r, x, "influx.tls.key", FB_OPT_KEY, NULL);
        if ((x = fb_cfg_get(&t, "verify_hostname")))
            fb_cfg_bool(r, NULL, x, "influx.tls.verify_hostname", &c->tls_verify_hostname);
        if (!c->cert != !c->key) fb_cfg_error(r, n, "influx.tls: cert and key go together (client certificate)");
        fb_cfg_map_free(&t);
    }
    /* batching, transport */
    if ((n = fb_cfg_get(m, "batch")) && fb_cfg_map_load(r, n, "influx.batch", &t)) {
        fb_cfg_map_check(r, &t, k_batch, "influx.batch", false);
        long long v;
        if ((x = fb_cfg_get(&t, "size")) && fb_cfg_int(r, NULL, x, "influx.batch.size", 1, 1000000, &v))
            c->batch_lines = (uint32_t)v;
        if ((x = fb_cfg_get(&t, "bytes"))) fb_cfg_size(r, x, "influx.batch.bytes", 1024, &c->batch_bytes);
        if ((x = fb_cfg_get(&t, "interval")))
            fb_cfg_dur(r, NULL, x, "influx.batch.interval", true, &c->batch_interval_ns);
        fb_cfg_map_free(&t);
    }
    if ((n = fb_cfg_get(m, "gzip"))) {
        const char *s = fb_cfg_scalar(n);
        long long v;
        if (s && (!strcmp(s, "true") || !strcmp(s, "false"))) {
            bool on = false;
            fb_cfg_bool(r, NULL, n, "influx.gzip", &on);
            c->gzip_level = on ? 1 : 0;
        } else if (fb_cfg_int(r, NULL, n, "influx.gzip (true, false or a level 1..9)", 0, 9, &v)) {
            c->gzip_level = (int)v;
        }
    }
    if ((n = fb_cfg_get(m, "timeout"))) fb_cfg_dur(r, NULL, n, "influx.timeout", true, &c->timeout_ns);
    if ((n = fb_cfg_get(m, "retry")) && fb_cfg_map_load(r, n, "influx.retry", &t)) {
        fb_cfg_map_check(r, &t, k_retry, "influx.retry", false);
        if ((x = fb_cfg_get(&t, "min"))) fb_cfg_dur(r, NULL, x, "influx.retry.min", true, &c->retry_min_ns);
        if ((x = fb_cfg_get(&t, "max"))) fb_cfg_dur(r, NULL, x, "influx.retry.max", true, &c->retry_max_ns);
        if (c->retry_min_ns > c->retry_max_ns) fb_cfg_error(r, n, "influx.retry: min is larger than max");
        fb_cfg_map_free(&t);
    }
    long long v;
    if ((n = fb_cfg_get(m, "max_inflight")) && fb_cfg_int(r, NULL, n, "influx.max_inflight", 1, 64, &v))
        c->max_inflight = (uint32_t)v;
    /* schema */
    c->measurement =
        (n = fb_cfg_get(m, "measurement")) ? load_tmpl(r, n, "influx.measurement", true) : strdup("{device}");
    c->field = (n = fb_cfg_get(m, "field")) ? load_tmpl(r, n, "influx.field", true) : strdup("{tag}");
    if ((n = fb_cfg_get(m, "tags")) || fb_cfg_key(m, "tags")) {
        load_tags(r, n, "influx.tags", &c->tags, false);
    } else {
        tags_set(&c->tags, "gateway", "{gateway}");
        tags_set(&c->tags, "site", "{site}");
        tags_set(&c->tags, "area", "{area}");
        tags_set(&c->tags, "line", "{line}");
        tags_set(&c->tags, "device", "{device}");
    }
    if ((n = fb_cfg_get(m, "quality")) && fb_cfg_enum(r, n, "influx.quality", k_quality, &e))
        c->quality = (enum fb_ix_quality)e;
    if ((n = fb_cfg_get(m, "stats"))) fb_cfg_bool(r, NULL, n, "influx.stats", &c->stats);
    if ((n = fb_cfg_get(m, "unsigned"))) {
        fb_cfg_bool(r, NULL, n, "influx.unsigned", &c->unsigned_ok);
        if (c->unsigned_ok && !c->api2)
            fb_cfg_note(r, n, "influx.unsigned: InfluxDB 1.x refuses unsigned fields (5u) unless built with them");
    }
    if ((n = fb_cfg_get(m, "health"))) fb_cfg_bool(r, NULL, n, "influx.health", &c->health);
    if ((n = fb_cfg_get(m, "map"))) load_rules(r, n, c);
    if (c->url) build_urls(c);
    return c;
}

/* ------------------------------------------------------------ resolving */
static bool glob_ok(const char *pat, const char *s) { return !pat || fnmatch(pat, s ? s : "", 0) == 0; }

/* The name as a key may not be InfluxDB's reserved "time". */
static void put_key(struct fb_buf *b, const char *s, size_t n)
{
    fb_lp_name(b, FB_LP_KEY, s, n);
    if (n == 4 && !memcmp(s, "time", 4)) fb_buf_putc(b, '_');
}

bool fb_ix_resolve(const struct fb_influx_cfg *c, const struct fb_ix_names *n, struct fb_buf *series,
                   struct fb_buf *field)
{
    fb_buf_clear(series);
    fb_buf_clear(field);
    const char *meas = c->measurement, *fld = c->field;
    const struct fb_ix_tags *base = &c->tags;
    struct fb_ix_tags merged = {0};
    bool own = false;
    for (uint32_t i = 0; i < c->nrules; i++) {
        const struct fb_ix_rule *x = &c->rules[i];
        if (!glob_ok(x->device, n->v[FB_IX_DEVICE])) continue;
        if (x->tag && !glob_ok(x->tag, n->v[FB_IX_TAG])) continue;
        if (x->skip) {
            if (own) tags_clear(&merged);
            return false;
        }
        if (x->measurement) meas = x->measurement;
        if (x->field) fld = x->field;
        if (x->tags.n) {
            if (!own) {
                tags_copy(&merged, base);
                own = true;
            }
            for (uint32_t k = 0; k < x->tags.n; k++)
                tags_set(&merged, x->tags.key[k], *x->tags.tmpl[k] ? x->tags.tmpl[k] : NULL);
        }
    }
    const struct fb_ix_tags *tags = own ? &merged : base;
    struct fb_buf tmp;
    fb_buf_init(&tmp);
    bool ok = true;
    fb_ix_tmpl_render(&tmp, meas, n);
    ok = fb_lp_name(series, FB_LP_MEASUREMENT, tmp.p, tmp.len);
    for (uint32_t i = 0; ok && i < tags->n; i++) {
        fb_buf_clear(&tmp);
        fb_ix_tmpl_render(&tmp, tags->tmpl[i], n);
        if (!tmp.len) continue; /* empty tag values are refused by InfluxDB: leave the tag out */
        fb_buf_putc(series, ',');
        put_key(series, tags->key[i], strlen(tags->key[i]));
        fb_buf_putc(series, '=');
        fb_lp_name(series, FB_LP_KEY, tmp.p, tmp.len);
    }
    if (ok) {
        fb_buf_clear(&tmp);
        fb_ix_tmpl_render(&tmp, fld, n);
        if (tmp.len) put_key(field, tmp.p, tmp.len);
        ok = tmp.len > 0;
    }
    fb_buf_free(&tmp);
    if (own) tags_clear(&merged);
    return ok;
}

/* ----------------------------------------------------------------- health */
enum hf { HF_BOOL, HF_INT, HF_FLOAT, HF_STR };
struct hfield {
    const char *json, *field;
    enum hf t;
};
static const struct hfield gw_fields[] = {
    {"online", "online", HF_BOOL},  {"health", "health", HF_STR},       {"uptime_s", "uptime_s", HF_INT},
    {"cpu_s", "cpu_s", HF_FLOAT},   {"rss_bytes", "rss_bytes", HF_INT}, {"clock_synced", "clock_synced", HF_BOOL},
    {"version", "version", HF_STR}, {"reason", "reason", HF_STR},       {NULL, NULL, HF_INT},
};
static const struct hfield dev_fields[] = {
    {"state", "state", HF_STR},   {"ne107", "ne107", HF_STR},     {"requests", "requests", HF_INT},
    {"errors", "errors", HF_INT}, {"rtt_ms", "rtt_ms", HF_FLOAT}, {NULL, NULL, HF_INT},
};
static const struct hfield sink_fields[] = {
    {"connected", "connected", HF_BOOL}, {"sent", "sent", HF_INT}, {"queued", "queued", HF_INT},
    {"dropped", "dropped", HF_INT},      {NULL, NULL, HF_INT},
};
static const struct hfield buf_fields[] = {
    {"records", "buffer_records", HF_INT},
    {"bytes", "buffer_bytes", HF_INT},
    {"oldest_age_s", "buffer_oldest_age_s", HF_FLOAT},
    {"dropped", "buffer_dropped", HF_INT},
    {"drain_rate", "buffer_drain_rate", HF_FLOAT},
    {"degraded", "buffer_degraded", HF_BOOL},
    {NULL, NULL, HF_INT},
};

/* Append the fields of table tab found in object o; returns how many. */
static int put_fields(struct fb_buf *b, json_t *o, const struct hfield *tab, int nf)
{
    for (const struct hfield *f = tab; f->json; f++) {
        json_t *v = json_object_get(o, f->json);
        if (!v || json_is_null(v)) continue;
        size_t mark = b->len;
        fb_buf_putc(b, nf ? ',' : ' ');
        fb_buf_puts(b, f->field);
        fb_buf_putc(b, '=');
        bool ok = true;
        switch (f->t) {
            case HF_BOOL:
                ok = json_is_boolean(v);
                if (ok) fb_buf_puts(b, json_is_true(v) ? "true" : "false");
                break;
            case HF_INT:
                ok = json_is_integer(v);
                if (ok) {
                    fb_json_i64(b, (int64_t)json_integer_value(v));
                    fb_buf_putc(b, 'i');
                }
                break;
            case HF_FLOAT:
                ok = json_is_number(v);
                if (ok) fb_json_double(b, json_number_value(v));
                break;
            case HF_STR:
                ok = json_is_string(v);
                if (ok) fb_lp_str(b, json_string_value(v), json_string_length(v));
                break;
        }
        if (ok)
            nf++;
        else
            b->len = mark;
    }
    return nf;
}

static void put_ident(struct fb_buf *b, const char *prefix, const char *what, const char *gateway, const char *site)
{
    fb_lp_name(b, FB_LP_MEASUREMENT, prefix, strlen(prefix));
    fb_buf_puts(b, what);
    if (gateway && *gateway) {
        fb_buf_puts(b, ",gateway=");
        fb_lp_name(b, FB_LP_KEY, gateway, strlen(gateway));
    }
    if (site && *site) {
        fb_buf_puts(b, ",site=");
        fb_lp_name(b, FB_LP_KEY, site, strlen(site));
    }
}

/* Ends the line begun at mark with its time stamp when it has fields
 * (returns 1), or takes it back (returns 0): a line without fields is not
 * line protocol. */
static int line_end(struct fb_buf *b, size_t mark, int nfields, int64_t ts, enum fb_lp_precision p)
{
    if (!nfields) {
        b->len = mark;
        return 0;
    }
    fb_buf_putc(b, ' ');
    fb_lp_time(b, ts, p);
    fb_buf_putc(b, '\n');
    return 1;
}

int fb_ix_health_lines(struct fb_buf *out, const char *json, size_t len, const char *site, const char *prefix,
                       int64_t ts_ns, enum fb_lp_precision p)
{
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return FB_EPROTO;
    }
    json_t *gwv = json_object_get(root, "gateway");
    json_t *on = json_object_get(root, "online");
    if (!json_is_string(gwv) || !json_is_boolean(on) || !*json_string_value(gwv)) {
        json_decref(root);
        return FB_EPROTO;
    }
    const char *gateway = json_string_value(gwv);
    int64_t ts = ts_ns;
    json_t *tsv = json_object_get(root, "ts");
    if (json_is_string(tsv)) fb_parse_time(json_string_value(tsv), json_string_length(tsv), &ts);
    int lines = 0;
    size_t mark = out->len;
    put_ident(out, prefix, "gateway", gateway, site);
    int nf = put_fields(out, root, gw_fields, 0);
    json_t *devs = json_object_get(root, "devices");
    if (json_is_object(devs)) {
        size_t total = json_object_size(devs), online = 0;
        const char *k;
        json_t *dv;
        json_object_foreach(devs, k, dv)
        {
            json_t *st = json_object_get(dv, "state");
            if (json_is_string(st) && !strcmp(json_string_value(st), "online")) online++;
        }
        fb_buf_printf(out, "%cdevices=%zui,devices_online=%zui", nf ? ',' : ' ', total, online);
        nf += 2;
    }
    lines += line_end(out, mark, nf, ts, p);
    if (json_is_object(devs)) {
        const char *k;
        json_t *dv;
        json_object_foreach(devs, k, dv)
        {
            if (!json_is_object(dv) || !*k) continue;
            mark = out->len;
            put_ident(out, prefix, "device", gateway, site);
            fb_buf_puts(out, ",device=");
            fb_lp_name(out, FB_LP_KEY, k, strlen(k));
            int n2 = put_fields(out, dv, dev_fields, 0);
            json_t *st = json_object_get(dv, "state");
            if (json_is_string(st)) {
                fb_buf_puts(out, n2 ? ",online=" : " online=");
                fb_buf_puts(out, !strcmp(json_string_value(st), "online") ? "true" : "false");
                n2++;
            }
            lines += line_end(out, mark, n2, ts, p);
        }
    }
    json_t *sinks = json_object_get(root, "sinks");
    if (json_is_object(sinks)) {
        const char *k;
        json_t *sv;
        json_object_foreach(sinks, k, sv)
        {
            if (!json_is_object(sv) || !*k) continue;
            mark = out->len;
            put_ident(out, prefix, "sink", gateway, site);
            fb_buf_puts(out, ",sink=");
            fb_lp_name(out, FB_LP_KEY, k, strlen(k));
            int n2 = put_fields(out, sv, sink_fields, 0);
            json_t *bv = json_object_get(sv, "buffer");
            if (json_is_object(bv)) n2 = put_fields(out, bv, buf_fields, n2);
            lines += line_end(out, mark, n2, ts, p);
        }
    }
    json_decref(root);
    return lines;
}

void fb_ix_devstate_line(struct fb_buf *out, const char *prefix, const char *gateway, const char *site,
                         const char *device, int state, const char *reason, int64_t ts_ns, enum fb_lp_precision p)
{
    static const char *const names[] = {"connecting", "online", "offline"};
    put_ident(out, prefix, "device", gateway, site);
    fb_buf_puts(out, ",device=");
    fb_lp_name(out, FB_LP_KEY, device, strlen(device));
    fb_buf_puts(out, " state=");
    const char *sn = state >= 0 && state <= 2 ? names[state] : "connecting";
    fb_lp_str(out, sn, strlen(sn));
    fb_buf_puts(out, state == FB_DEV_ONLINE ? ",online=true" : ",online=false");
    if (reason && *reason) {
        fb_buf_puts(out, ",reason=");
        fb_lp_str(out, reason, strlen(reason));
    }
    fb_buf_putc(out, ' ');
    fb_lp_time(out, ts_ns, p);
    fb_buf_putc(out, '\n');
}

static void put_str_field(struct fb_buf *out, bool *first, const char *key, const char *v, size_t n)
{
    fb_buf_puts(out, *first ? " " : ",");
    *first = false;
    fb_buf_puts(out, key);
    fb_buf_putc(out, '=');
    fb_lp_str(out, v, n);
}

int fb_ix_alarm_line(struct fb_buf *out, const char *prefix, const struct fb_gateway *gw, const struct fb_batch *b,
                     enum fb_lp_precision p)
{
    const struct fb_alarm_ev *ev = &b->ev;
    if (ev->event == FB_AE_NONE || b->device >= gw->ndevs) return 0;
    const struct fb_alarm *a = ev->alarm < gw->nalarms ? &gw->alarms[ev->alarm] : NULL;
    put_ident(out, prefix, "alarm", gw->id, gw->site);
    const char *dev = gw->devs[b->device].name;
    fb_buf_puts(out, ",device=");
    fb_lp_name(out, FB_LP_KEY, dev, strlen(dev));
    if (a) {
        fb_buf_puts(out, ",alarm=");
        fb_lp_name(out, FB_LP_KEY, a->name, strlen(a->name));
        fb_buf_puts(out, ",kind=");
        fb_buf_puts(out, fb_alarm_kind_name(a->kind));
        fb_buf_puts(out, ",priority=");
        fb_buf_puts(out, fb_alarm_prio_name(a->priority));
    }
    bool first = true;
    const char *evname = ev->event == FB_AE_FLOOD     ? "flood"
                         : ev->event == FB_AE_MESSAGE ? "message"
                                                      : fb_alarm_event_name(ev->event);
    put_str_field(out, &first, "event", evname, strlen(evname));
    /* the batch's text: "by\ncomment" (a message: "by\ntext") */
    const char *text = b->reason;
    size_t tl = strnlen(text, sizeof b->reason);
    const char *nl = memchr(text, '\n', tl);
    size_t bl = nl ? (size_t)(nl - text) : tl;
    if (ev->event == FB_AE_FLOOD) {
        fb_buf_printf(out, ",held=%ui", ev->count);
    } else if (a) {
        const char *st = fb_alarm_state_name(ev->flags);
        put_str_field(out, &first, "state", st, strlen(st));
        fb_buf_puts(out, ev->flags & FB_AS_ACTIVE ? ",active=true" : ",active=false");
        fb_buf_puts(out, ev->flags & FB_AS_UNACKED ? ",acked=false" : ",acked=true");
        fb_buf_puts(out, ev->flags & FB_AS_SHELVED ? ",shelved=true" : ",shelved=false");
        fb_buf_printf(out, ",severity=%ui", (unsigned)a->severity);
        if (isfinite(ev->value)) {
            struct fb_value v = {.type = FB_T_FLOAT64, .f = ev->value};
            fb_buf_puts(out, ",value=");
            fb_lp_value(out, FB_LP_FLOAT, &v);
        }
        if (a->message) put_str_field(out, &first, "message", a->message, strlen(a->message));
    }
    if (nl && tl > bl + 1)
        put_str_field(out, &first, ev->event == FB_AE_MESSAGE ? "text" : "comment", nl + 1, tl - bl - 1);
    if (bl) put_str_field(out, &first, "by", text, bl);
    fb_buf_putc(out, ' ');
    fb_lp_time(out, b->ts, p);
    fb_buf_putc(out, '\n');
    return 1;
}
