/* config.c — load the YAML configuration into a fully built gateway model.
 *
 * How it works.  libyaml's document API gives a tree of nodes with marks
 * (0-based line/column; we print them 1-based).  The loader walks that tree
 * with the schema written as code — one function per section, each with a
 * table of the keys it accepts — and fills struct fb_gateway directly:
 *
 *   pass A  YAML → devices and tags (dense arrays, tags of a device
 *           contiguous), `for:` repetition, ${ENV} expansion, typed values
 *           (durations, numbers, booleans), the MQTT sink config;
 *   pass B  drivers: device_init (→ connection keys), parse_address for
 *           every tag, poll groups (one per distinct period) and their read
 *           plans, connections shared by devices with equal keys.
 *
 * Errors never stop the walk: each becomes a message tagged with its
 * line:col, and after both passes all of them are printed in file order as
 * `file:line:col: message` (warnings as `file:line:col: warning: …`).  Only
 * a YAML syntax error ends the load early, as there is no tree then.
 *
 * Every string goes through one reader (str_of) that expands ${VAR} and,
 * inside a `for:` entry, the loop placeholders (config_tmpl.c), so no key can
 * forget to.  YAML merge keys (`<<: *anchor`) are honoured, so a tag template
 * can be written once with an anchor.
 *
 * Ownership: everything hangs off the gateway and fb_gateway_free releases
 * it, also for a half-built model (driver hooks are only called for what the
 * driver created: device_free when device_init succeeded, free_address when
 * tag->addr is set, plan_free when g->plan is set).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

#include "config.h"
#include "config_tmpl.h"
#include "driver.h"
#include "log.h"
#include "north/mqtt/mqtt.h"
#include "north/sparkplug/sparkplug.h"
#include "proc/proc.h"

#define MAX_DEVICES 100000u
#define MAX_TAGS 2000000u
#define MAX_COUNT 65536
#define MAX_LOOP 100000
/* Hostile YAML (issue 14): bounds checked on the event stream before the
 * document is built, so neither libyaml nor the walker ever sees more. */
#define MAX_YAML_DEPTH 64          /* nesting of lists and mappings */
#define MAX_ALIASES 100000         /* alias uses (*name) in one file */
#define MAX_ALIAS_NODES 1000000    /* nodes that aliases add when expanded */
#define MAX_MAP_KEYS 1000          /* keys of one mapping (duplicate checks are linear scans) */

struct mark {
    int line, col; /* 1-based */
};

struct msg {
    struct mark m;
    unsigned seq;
    bool warn;
    char *text;
};

struct dev_aux {
    struct mark url_m;
    bool init_ok;
};

struct tag_aux {
    int64_t poll_ns;
    struct mark name_m;
    uint32_t entry; /* which tag entry made it (array elements share one) */
    struct mark addr_m;
    struct mark numeric_m; /* where a numeric-only setting was given */
    bool needs_numeric;
};

struct ctx {
    const char *file;
    char *dir; /* directory of the config file, for relative paths */
    const struct fb_config_opts *o;
    yaml_document_t doc;
    struct msg *msgs;
    size_t nmsgs, capmsgs;
    int nerr;
    struct fb_gateway *gw;
    size_t capdevs, captags;
    uint32_t entries;
    struct dev_aux *daux;
    struct tag_aux *taux;
    unsigned *merge_seen; /* per node: the map_load generation that merged it */
    unsigned merge_gen;
};

/* ------------------------------------------------------------ diagnostics */

static void vdiag(struct ctx *c, struct mark m, bool warn, const char *fmt, va_list ap)
{
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    /* aliases can make one node report twice: keep one */
    for (size_t i = 0; i < c->nmsgs; i++)
        if (c->msgs[i].m.line == m.line && c->msgs[i].m.col == m.col &&
            c->msgs[i].warn == warn && strcmp(c->msgs[i].text, buf) == 0)
            return;
    if (c->nmsgs == c->capmsgs) {
        size_t n = c->capmsgs ? c->capmsgs * 2 : 16;
        struct msg *t = realloc(c->msgs, n * sizeof *t);
        if (!t) {
            c->nerr++;
            return;
        }
        c->msgs = t;
        c->capmsgs = n;
    }
    char *text = strdup(buf);
    if (!text) {
        c->nerr++;
        return;
    }
    c->msgs[c->nmsgs] = (struct msg){m, (unsigned)c->nmsgs, warn, text};
    c->nmsgs++;
    if (!warn) c->nerr++;
}

FB_PRINTF(3, 4) static void err_at(struct ctx *c, struct mark m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(c, m, false, fmt, ap);
    va_end(ap);
}

FB_PRINTF(3, 4) static void warn_at(struct ctx *c, struct mark m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(c, m, !c->o->strict, fmt, ap);
    va_end(ap);
}

/* A plain warning, never promoted by --strict. */
FB_PRINTF(3, 4) static void note_at(struct ctx *c, struct mark m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(c, m, true, fmt, ap);
    va_end(ap);
}

static int msg_cmp(const void *a, const void *b)
{
    const struct msg *x = a, *y = b;
    if (x->m.line != y->m.line) return x->m.line < y->m.line ? -1 : 1;
    if (x->m.col != y->m.col) return x->m.col < y->m.col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void diag_flush(struct ctx *c)
{
    FILE *f = c->o && c->o->diag ? c->o->diag : stderr;
    if (c->nmsgs) qsort(c->msgs, c->nmsgs, sizeof *c->msgs, msg_cmp);
    for (size_t i = 0; i < c->nmsgs; i++) {
        struct msg *m = &c->msgs[i];
        if (m->m.line > 0)
            fprintf(f, "%s:%d:%d: %s%s\n", c->file, m->m.line, m->m.col, m->warn ? "warning: " : "",
                    m->text);
        else
            fprintf(f, "%s: %s%s\n", c->file, m->warn ? "warning: " : "", m->text);
        free(m->text);
    }
    free(c->msgs);
    c->msgs = NULL;
    c->nmsgs = c->capmsgs = 0;
    fflush(f);
}

/* ------------------------------------------------------------ yaml nodes */

static yaml_node_t *node(struct ctx *c, int id) { return yaml_document_get_node(&c->doc, id); }

static struct mark mk(const yaml_node_t *n)
{
    struct mark m = {0, 0};
    if (n) {
        m.line = (int)n->start_mark.line + 1;
        m.col = (int)n->start_mark.column + 1;
    }
    return m;
}

static const char *kind_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

static bool is_null(const yaml_node_t *n)
{
    if (!n) return true;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *s = (const char *)n->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

struct kv {
    const char *key;
    yaml_node_t *k, *v;
};
struct map {
    struct kv *kv;
    int n;
};

static void map_free(struct map *m)
{
    free(m->kv);
    m->kv = NULL;
    m->n = 0;
}

static int map_find(const struct map *m, const char *key)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->kv[i].key, key)) return i;
    return -1;
}

static bool map_push(struct map *m, const char *key, yaml_node_t *k, yaml_node_t *v)
{
    struct kv *t = realloc(m->kv, (size_t)(m->n + 1) * sizeof *t);
    if (!t) return false;
    m->kv = t;
    m->kv[m->n++] = (struct kv){key, k, v};
    return true;
}

/* Whether node n was already merged into the map being loaded (and mark it).
 * A mapping reached twice through merge keys adds nothing the second time
 * (the first occurrence's keys won), so each node is merged at most once per
 * map_load: linear work whatever the fan-out of `<<: [*a, *a, …]` chains. */
static bool merge_seen(struct ctx *c, yaml_node_t *n)
{
    size_t i = (size_t)(n - c->doc.nodes.start), cnt = (size_t)(c->doc.nodes.top - c->doc.nodes.start);
    if (i >= cnt) return true;
    if (!c->merge_seen) {
        c->merge_seen = calloc(cnt, sizeof *c->merge_seen);
        if (!c->merge_seen) return true;
    }
    if (c->merge_seen[i] == c->merge_gen) return true;
    c->merge_seen[i] = c->merge_gen;
    return false;
}

/* Merge `<<: *x` (a mapping or a list of mappings, as YAML's merge key
 * says) into m: explicit keys win, then earlier merges. */
static void map_merge(struct ctx *c, struct map *m, yaml_node_t *src, int depth)
{
    if (depth > 8) {
        err_at(c, mk(src), "merge keys ('<<') nested too deeply");
        return;
    }
    if (src->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = src->data.sequence.items.start; it < src->data.sequence.items.top; it++) {
            yaml_node_t *item = node(c, *it);
            if (item && item->type == YAML_SEQUENCE_NODE)
                err_at(c, mk(item), "'<<' needs a mapping or a list of mappings, got a list inside the list");
            else if (item)
                map_merge(c, m, item, depth + 1);
        }
        return;
    }
    if (src->type != YAML_MAPPING_NODE) {
        err_at(c, mk(src), "'<<' needs a mapping (or a list of mappings), got %s", kind_name(src));
        return;
    }
    if (merge_seen(c, src)) return;
    for (yaml_node_pair_t *p = src->data.mapping.pairs.start; p < src->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(c, p->key), *v = node(c, p->value);
        if (!k || k->type != YAML_SCALAR_NODE) continue;
        const char *key = (const char *)k->data.scalar.value;
        if (!strcmp(key, "<<")) {
            map_merge(c, m, v, depth + 1);
            continue;
        }
        if (map_find(m, key) >= 0) continue;
        if (m->n >= MAX_MAP_KEYS) {
            err_at(c, mk(src), "more than %d keys in one mapping (with merged ones)", MAX_MAP_KEYS);
            return;
        }
        map_push(m, key, k, v);
    }
}

/* Load a mapping node into m.  false (with an error) when n is not one. */
static bool map_load(struct ctx *c, yaml_node_t *n, const char *what, struct map *m)
{
    m->kv = NULL;
    m->n = 0;
    if (!n) return false;
    if (n->type != YAML_MAPPING_NODE) {
        err_at(c, mk(n), "%s must be a mapping (key: value), got %s", what, kind_name(n));
        return false;
    }
    yaml_node_t *merge = NULL;
    if (n->data.mapping.pairs.top - n->data.mapping.pairs.start > MAX_MAP_KEYS) {
        err_at(c, mk(n), "%s has more than %d keys", what, MAX_MAP_KEYS);
        return false;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(c, p->key), *v = node(c, p->value);
        if (!k || k->type != YAML_SCALAR_NODE) {
            err_at(c, mk(k), "keys in %s must be plain names", what);
            continue;
        }
        const char *key = (const char *)k->data.scalar.value;
        if (!strcmp(key, "<<")) {
            merge = v;
            continue;
        }
        int prev = map_find(m, key);
        if (prev >= 0) {
            err_at(c, mk(k), "duplicate key '%s' in %s (first at line %d)", key, what,
                   mk(m->kv[prev].k).line);
            continue;
        }
        map_push(m, key, k, v);
    }
    if (merge) {
        c->merge_gen++;
        merge_seen(c, n); /* a map merging itself (an alias cycle) adds nothing */
        map_merge(c, m, merge, 0);
    }
    return true;
}

static size_t lev(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40) return 99;
    size_t d[41][41];
    for (size_t i = 0; i <= la; i++) d[i][0] = i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t x = d[i - 1][j] + 1, y = d[i][j - 1] + 1, z = d[i - 1][j - 1] + cost;
            d[i][j] = x < y ? (x < z ? x : z) : (y < z ? y : z);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < d[i][j])
                d[i][j] = d[i - 2][j - 2] + 1; /* transposition */
        }
    return d[la][lb];
}

/* The closest name in a NULL-terminated list, or NULL if none is close. */
static const char *suggest(const char *s, const char *const *names)
{
    const char *best = NULL;
    size_t bd = 99, len = strlen(s);
    for (const char *const *n = names; *n; n++) {
        size_t d = lev(s, *n);
        if (d < bd) {
            bd = d;
            best = *n;
        }
    }
    size_t lim = len <= 3 ? 1 : len <= 6 ? 2 : 3;
    return bd <= lim && bd < len ? best : NULL;
}

static const char *const k_top[] = {"gateway", "log", "metrics", "status_interval", "commands",
                                    "buffer", "mqtt", "sparkplug", "devices", NULL};

/* Unknown keys are errors, with a suggestion when one is close. */
static void map_check(struct ctx *c, const struct map *m, const char *const *allowed, const char *what)
{
    for (int i = 0; i < m->n; i++) {
        /* top level: x-… keys are free for YAML anchors (templates) */
        bool ok = allowed == k_top && !strncmp(m->kv[i].key, "x-", 2);
        for (const char *const *a = allowed; *a; a++)
            if (!strcmp(*a, m->kv[i].key)) ok = true;
        if (ok) continue;
        const char *s = suggest(m->kv[i].key, allowed);
        if (s)
            err_at(c, mk(m->kv[i].k), "unknown key '%s' in %s (did you mean '%s'?)", m->kv[i].key,
                   what, s);
        else
            err_at(c, mk(m->kv[i].k), "unknown key '%s' in %s", m->kv[i].key, what);
    }
}

/* The value for key, NULL when absent or null. */
static yaml_node_t *map_get(const struct map *m, const char *key)
{
    int i = map_find(m, key);
    if (i < 0 || is_null(m->kv[i].v)) return NULL;
    return m->kv[i].v;
}

static yaml_node_t *map_keynode(const struct map *m, const char *key)
{
    int i = map_find(m, key);
    return i < 0 ? NULL : m->kv[i].k;
}

/* ------------------------------------------------------------ typed values */

/* The scalar's text after ${ENV} and loop expansion (malloc'd), or NULL
 * after reporting an error. */
static char *str_of(struct ctx *c, const struct fb_tvars *vars, yaml_node_t *n, const char *what)
{
    if (n->type != YAML_SCALAR_NODE) {
        err_at(c, mk(n), "%s must be a single value, got %s", what, kind_name(n));
        return NULL;
    }
    struct fb_err e = {0};
    char *env = NULL;
    if (fb_env_expand((const char *)n->data.scalar.value, &env, &e) < 0) {
        err_at(c, mk(n), "%s: %s", what, e.msg);
        return NULL;
    }
    if (!vars) return env;
    char *out = NULL;
    int rc = fb_tmpl_subst(vars, env, &out, &e);
    free(env);
    if (rc < 0) {
        err_at(c, mk(n), "%s: %s", what, e.msg);
        return NULL;
    }
    return out;
}

static bool dur_of(struct ctx *c, const struct fb_tvars *vars, yaml_node_t *n, const char *what,
                   bool positive, int64_t *out)
{
    char *s = str_of(c, vars, n, what);
    if (!s) return false;
    int64_t v;
    int rc = fb_parse_duration(s, &v);
    if (rc < 0) {
        err_at(c, mk(n), "%s: bad duration '%s' (examples: 250us, 100ms, 1.5s, 2m, 1h, 7d; a bare number is seconds)",
               what, s);
        free(s);
        return false;
    }
    if (positive && v <= 0) {
        err_at(c, mk(n), "%s must be greater than 0 (got '%s')", what, s);
        free(s);
        return false;
    }
    free(s);
    *out = v;
    return true;
}

static bool num_of(struct ctx *c, const struct fb_tvars *vars, yaml_node_t *n, const char *what,
                   double *out)
{
    char *s = str_of(c, vars, n, what);
    if (!s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    bool ok = end != s && !*end && errno != ERANGE && v == v && v - v == 0;
    if (!ok) {
        err_at(c, mk(n), "%s: expected a number, got '%s'", what, s);
        free(s);
        return false;
    }
    free(s);
    *out = v;
    return true;
}

static bool int_of(struct ctx *c, const struct fb_tvars *vars, yaml_node_t *n, const char *what,
                   long long lo, long long hi, long long *out)
{
    char *s = str_of(c, vars, n, what);
    if (!s) return false;
    int64_t v;
    if (!fb_tmpl_int(s, &v)) {
        err_at(c, mk(n), "%s: expected an integer, got '%s'", what, s);
        free(s);
        return false;
    }
    free(s);
    if (v < lo || v > hi) {
        err_at(c, mk(n), "%s: %lld is out of range (%lld..%lld)", what, (long long)v, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

static bool bool_of(struct ctx *c, const struct fb_tvars *vars, yaml_node_t *n, const char *what,
                    bool *out)
{
    char *s = str_of(c, vars, n, what);
    if (!s) return false;
    static const char *const t[] = {"true", "yes", "on", "1"}, *const f[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, t[i])) {
            *out = true;
            free(s);
            return true;
        }
        if (!strcasecmp(s, f[i])) {
            *out = false;
            free(s);
            return true;
        }
    }
    err_at(c, mk(n), "%s: expected true or false, got '%s'", what, s);
    free(s);
    return false;
}

/* Names of devices and tags end up in topics and JSON keys. */
static bool name_ok(const char *s)
{
    if (!*s) return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-') return false;
    return true;
}

/* Topic levels (site, area, line, gateway id): no MQTT wildcards or separators. */
static bool level_ok(const char *s)
{
    if (!*s) return false;
    for (const char *p = s; *p; p++)
        if (*p == '/' || *p == '+' || *p == '#' || (unsigned char)*p < 0x20) return false;
    return true;
}

static char *path_rel(struct ctx *c, const char *p)
{
    if (p[0] == '/' || !c->dir || !strcmp(c->dir, ".")) return strdup(p);
    size_t n = strlen(c->dir) + strlen(p) + 2;
    char *o = malloc(n);
    if (o) snprintf(o, n, "%s/%s", c->dir, p);
    return o;
}

/* ------------------------------------------------------------ gateway */

static const char *const k_gateway[] = {"id", "site", NULL};
static const char *const k_log[] = {"level", "format", NULL};
static const char *const k_metrics[] = {"listen", NULL};
static const char *const k_commands[] = {"max_age", "allow_qos0", "timeout", NULL};
static const char *const k_mqtt[] = {"url", "version", "client_id", "username", "password",
                                     "password_file", "tls", "keepalive", "topic", "qos",
                                     "reconnect", "max_inflight", "queue", "buffer", NULL};
static const char *const k_buffer[] = {"path", "max_size", "max_age", "sync", "full", "drain_rate", NULL};
static const char *const k_tls[] = {"ca", "ca_path", "cert", "key", "verify_hostname", NULL};
static const char *const k_qos[] = {"telemetry", "status", "command", NULL};
static const char *const k_reconnect[] = {"min", "max", NULL};
static const char *const k_device[] = {"for", "name", "url", "area", "line", "poll", "timeout",
                                       "delay", "options", "tags", NULL};
static const char *const k_tag[] = {"for", "name", "addr", "type", "order", "count", "unit",
                                    "access", "poll", "scale", "range", "max_rate", "spike_accept",
                                    "stuck", "deadband", "heartbeat", "window", NULL};
static const char *const k_scale[] = {"raw", "eng", "factor", "offset", NULL};

/* `buffer:` (store-and-forward, docs/store-and-forward.md).  `base` holds
 * the global settings a sink's own `buffer:` overrides key by key. */
static struct fb_buffer_cfg *load_buffer(struct ctx *c, yaml_node_t *bn, const char *what,
                                         const struct fb_buffer_cfg *base)
{
    struct map m = {0};
    if (!map_load(c, bn, what, &m)) return NULL;
    map_check(c, &m, k_buffer, what);
    struct fb_buffer_cfg *b = calloc(1, sizeof *b);
    if (!b) {
        map_free(&m);
        return NULL;
    }
    if (base) {
        *b = *base;
        b->path = base->path ? strdup(base->path) : NULL;
    } else {
        b->max_bytes = 256ULL << 20;
        b->sync = 0; /* FB_SYNC_BATCH */
        b->full_policy = 0; /* FB_FULL_DROP_OLDEST */
        b->drain_rate = 0;
    }
    char key[64];
    yaml_node_t *n;
    if ((n = map_get(&m, "path"))) {
        snprintf(key, sizeof key, "%s.path", what);
        char *v = str_of(c, NULL, n, key);
        if (v) {
            free(b->path);
            b->path = path_rel(c, v);
            free(v);
        }
    }
    if ((n = map_get(&m, "max_size"))) {
        snprintf(key, sizeof key, "%s.max_size", what);
        char *v = str_of(c, NULL, n, key);
        uint64_t sz;
        if (v && (fb_parse_size(v, &sz) < 0 || sz < 65536))
            err_at(c, mk(n), "%s: expected a size of at least 64KiB such as 512MiB, got '%s'", key, v);
        else if (v)
            b->max_bytes = sz;
        free(v);
    }
    if ((n = map_get(&m, "max_age"))) {
        snprintf(key, sizeof key, "%s.max_age", what);
        dur_of(c, NULL, n, key, false, &b->max_age_ns);
    }
    if ((n = map_get(&m, "sync"))) {
        snprintf(key, sizeof key, "%s.sync", what);
        char *v = str_of(c, NULL, n, key);
        int64_t d;
        if (!v) {
        } else if (!strcmp(v, "batch")) {
            b->sync = 0;
        } else if (!strcmp(v, "os")) {
            b->sync = 2;
        } else if (fb_parse_duration(v, &d) == 0 && d > 0) {
            b->sync = 1;
            b->sync_interval_ns = d;
        } else {
            err_at(c, mk(n), "%s: expected batch, os or an interval such as 100ms, got '%s'", key, v);
        }
        free(v);
    }
    if ((n = map_get(&m, "full"))) {
        snprintf(key, sizeof key, "%s.full", what);
        char *v = str_of(c, NULL, n, key);
        if (v && !strcmp(v, "drop_oldest"))
            b->full_policy = 0;
        else if (v && !strcmp(v, "block"))
            b->full_policy = 1;
        else if (v)
            err_at(c, mk(n), "%s: expected drop_oldest or block, got '%s'", key, v);
        free(v);
    }
    if ((n = map_get(&m, "drain_rate"))) {
        long long r;
        snprintf(key, sizeof key, "%s.drain_rate", what);
        if (int_of(c, NULL, n, key, 0, 10000000, &r)) b->drain_rate = (uint32_t)r;
    }
    if (!b->path) err_at(c, mk(bn), "%s.path is required (a directory for the on-disk queue)", what);
    map_free(&m);
    return b;
}

void fb_buffer_cfg_free(struct fb_buffer_cfg *b)
{
    if (!b) return;
    free(b->path);
    free(b);
}

static void load_gateway(struct ctx *c, const struct map *top)
{
    struct fb_gateway *gw = c->gw;
    yaml_node_t *g = map_get(top, "gateway");
    struct map m = {0};
    if (!g) {
        err_at(c, (struct mark){1, 1}, "missing 'gateway:' section (gateway: {id: …})");
    } else if (map_load(c, g, "gateway", &m)) {
        map_check(c, &m, k_gateway, "gateway");
        yaml_node_t *n;
        if ((n = map_get(&m, "id"))) {
            gw->id = str_of(c, NULL, n, "gateway.id");
            if (gw->id && !level_ok(gw->id)) {
                err_at(c, mk(n), "gateway.id '%s' must be non-empty and contain no '/', '+' or '#'", gw->id);
            }
        } else {
            err_at(c, mk(g), "gateway.id is required");
        }
        if ((n = map_get(&m, "site"))) {
            gw->site = str_of(c, NULL, n, "gateway.site");
            if (gw->site && !level_ok(gw->site))
                err_at(c, mk(n), "gateway.site '%s' must be non-empty and contain no '/', '+' or '#'", gw->site);
        }
    }
    map_free(&m);
    if (!gw->id) gw->id = strdup("");
    if (!gw->site) gw->site = strdup("site");

    gw->log_level = FB_LOG_INFO;
    gw->log_format = FB_LOG_TEXT;
    if ((g = map_get(top, "log")) && map_load(c, g, "log", &m)) {
        map_check(c, &m, k_log, "log");
        yaml_node_t *n;
        if ((n = map_get(&m, "level"))) {
            char *s = str_of(c, NULL, n, "log.level");
            if (s) {
                int l = fb_log_level_parse(s);
                if (l < 0)
                    err_at(c, mk(n), "log.level: unknown level '%s' (error, warn, info, debug)", s);
                else
                    gw->log_level = l;
            }
            free(s);
        }
        if ((n = map_get(&m, "format"))) {
            char *s = str_of(c, NULL, n, "log.format");
            if (s) {
                if (!strcmp(s, "text"))
                    gw->log_format = FB_LOG_TEXT;
                else if (!strcmp(s, "json"))
                    gw->log_format = FB_LOG_JSON;
                else
                    err_at(c, mk(n), "log.format: unknown format '%s' (text, json)", s);
            }
            free(s);
        }
        map_free(&m);
    }

    if ((g = map_get(top, "metrics")) && map_load(c, g, "metrics", &m)) {
        map_check(c, &m, k_metrics, "metrics");
        yaml_node_t *n = map_get(&m, "listen");
        if (n) {
            char *s = str_of(c, NULL, n, "metrics.listen");
            if (s) {
                const char *colon = strrchr(s, ':');
                long long port = -1;
                int64_t pv;
                if (colon && fb_tmpl_int(colon + 1, &pv)) port = pv;
                if (!colon || colon == s || port < 1 || port > 65535) {
                    err_at(c, mk(n), "metrics.listen: expected HOST:PORT such as 127.0.0.1:9100, got '%s'", s);
                    free(s);
                } else {
                    gw->metrics_listen = s;
                }
            }
        }
        map_free(&m);
    }

    gw->status_interval_ns = 30000000000LL;
    if ((g = map_get(top, "status_interval")))
        dur_of(c, NULL, g, "status_interval", true, &gw->status_interval_ns);

    gw->cmd_timeout_ns = 5000000000LL;
    if ((g = map_get(top, "commands")) && map_load(c, g, "commands", &m)) {
        map_check(c, &m, k_commands, "commands");
        yaml_node_t *n;
        if ((n = map_get(&m, "max_age"))) dur_of(c, NULL, n, "commands.max_age", false, &gw->cmd_max_age_ns);
        if ((n = map_get(&m, "allow_qos0"))) bool_of(c, NULL, n, "commands.allow_qos0", &gw->cmd_allow_qos0);
        if ((n = map_get(&m, "timeout"))) dur_of(c, NULL, n, "commands.timeout", true, &gw->cmd_timeout_ns);
        map_free(&m);
    }
    if ((g = map_get(top, "buffer"))) gw->buffer = load_buffer(c, g, "buffer", NULL);
}

/* ------------------------------------------------------------ mqtt */

/* Condition variables of connections and sinks wait with CLOCK_MONOTONIC
 * deadlines (the runtime's timers are monotonic). */
static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

void fb_mqtt_cfg_free(struct fb_mqtt_cfg *m)
{
    if (!m) return;
    free(m->url);
    free(m->host);
    free(m->client_id);
    free(m->username);
    if (m->password) {
        explicit_bzero(m->password, strlen(m->password));
        free(m->password);
    }
    free(m->ca);
    free(m->ca_path);
    free(m->cert);
    free(m->key);
    free(m->topic);
    free(m);
}

/* A referenced file, relative to the config file's directory, checked like
 * the gateway will use it (fb_check_file): missing or unreadable → warning
 * (error with --strict); group/other access to a secret or key, or a
 * directory where a file belongs → error.  *usable says whether it passed. */
static char *file_ref(struct ctx *c, yaml_node_t *n, const char *what, enum fb_opt_kind kind, bool *usable)
{
    if (usable) *usable = false;
    char *s = str_of(c, NULL, n, what);
    if (!s) return NULL;
    char *p = path_rel(c, s);
    free(s);
    if (!p) return NULL;
    struct fb_err e = {0};
    int rc = fb_check_file(p, kind, &e);
    if (rc == FB_ENOENT || rc == FB_EIO)
        warn_at(c, mk(n), "%s: %s", what, e.msg);
    else if (rc < 0)
        err_at(c, mk(n), "%s: %s", what, e.msg);
    else if (usable)
        *usable = true;
    return p;
}

/* The password scalar must be exactly one ${VAR} reference. */
static bool password_from_env(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE) return false;
    const char *s = (const char *)n->data.scalar.value;
    size_t len = strlen(s);
    if (len < 4 || s[0] != '$' || s[1] != '{' || s[len - 1] != '}') return false;
    for (size_t i = 2; i < len - 1; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_') return false;
    return true;
}

static void load_mqtt(struct ctx *c, yaml_node_t *mn)
{
    struct fb_gateway *gw = c->gw;
    struct map m = {0};
    if (!map_load(c, mn, "mqtt", &m)) return;
    map_check(c, &m, k_mqtt, "mqtt");
    struct fb_mqtt_cfg *q = calloc(1, sizeof *q);
    gw->sinks = calloc(1, sizeof *gw->sinks);
    if (!q || !gw->sinks) {
        free(q);
        err_at(c, mk(mn), "out of memory");
        map_free(&m);
        return;
    }
    struct fb_sink_inst *s = &gw->sinks[0];
    gw->nsinks = 1;
    s->sink = &fb_sink_mqtt;
    s->name = strdup("mqtt");
    s->cfg = q;
    s->gw = gw;
    pthread_mutex_init(&s->mu, NULL);
    cond_init_mono(&s->cv);

    yaml_node_t *bn = map_get(&m, "buffer");
    if (bn)
        s->buffer = load_buffer(c, bn, "mqtt.buffer", gw->buffer);
    else if (gw->buffer) {
        s->buffer = calloc(1, sizeof *s->buffer);
        if (s->buffer) {
            *s->buffer = *gw->buffer;
            s->buffer->path = gw->buffer->path ? strdup(gw->buffer->path) : NULL;
        }
    }

    q->version = 5;
    q->tls_verify_hostname = true;
    q->keepalive_ns = 30000000000LL;
    q->qos_telemetry = q->qos_status = q->qos_command = 1;
    q->reconnect_min_ns = 1000000000LL;
    q->reconnect_max_ns = 30000000000LL;
    q->max_inflight = 1000;
    q->queue_len = 1024;

    yaml_node_t *n;
    if (!(n = map_get(&m, "url"))) {
        err_at(c, mk(mn), "mqtt.url is required (e.g. mqtt://127.0.0.1:1883)");
    } else if ((q->url = str_of(c, NULL, n, "mqtt.url"))) {
        struct fb_url u;
        struct fb_err e = {0};
        if (fb_url_parse(q->url, &u, &e) < 0) {
            err_at(c, mk(n), "mqtt.url: %s", e.msg);
        } else {
            if (strcmp(u.scheme, "mqtt") && strcmp(u.scheme, "mqtts"))
                err_at(c, mk(n), "mqtt.url: scheme must be mqtt:// or mqtts://, got '%s://'", u.scheme);
            else if (!*u.host)
                err_at(c, mk(n), "mqtt.url: missing broker host");
            else if ((*u.path && strcmp(u.path, "/")) || u.nq)
                err_at(c, mk(n), "mqtt.url: a broker URL has no path or query (got '%s')", q->url);
            q->tls = !strcmp(u.scheme, "mqtts");
            q->host = strdup(u.host);
            q->port = u.port ? u.port : q->tls ? 8883 : 1883;
            fb_url_free(&u);
        }
    }
    if ((n = map_get(&m, "version"))) {
        char *v = str_of(c, NULL, n, "mqtt.version");
        if (v) {
            if (!strcmp(v, "5") || !strcmp(v, "5.0"))
                q->version = 5;
            else if (!strcmp(v, "3.1.1") || !strcmp(v, "3") || !strcmp(v, "311") || !strcmp(v, "4"))
                q->version = 3;
            else
                err_at(c, mk(n), "mqtt.version: expected 5 or 3.1.1, got '%s'", v);
            free(v);
        }
    }
    if ((n = map_get(&m, "client_id"))) {
        q->client_id = str_of(c, NULL, n, "mqtt.client_id");
        if (q->client_id && (!*q->client_id || strlen(q->client_id) > 256))
            err_at(c, mk(n), "mqtt.client_id must be 1..256 characters");
    } else {
        size_t len = strlen(gw->id) + 16;
        q->client_id = malloc(len);
        if (q->client_id) snprintf(q->client_id, len, "fieldbridge-%s", gw->id);
    }
    if ((n = map_get(&m, "username"))) q->username = str_of(c, NULL, n, "mqtt.username");
    yaml_node_t *pw = map_get(&m, "password"), *pwf = map_get(&m, "password_file");
    if (pw && pwf) err_at(c, mk(map_keynode(&m, "password")), "give either mqtt.password or mqtt.password_file, not both");
    if (pw) {
        if (!password_from_env(pw))
            err_at(c, mk(pw), "mqtt.password: a literal password is not allowed in the config file; "
                              "use password_file: or password: \"${ENV_VAR}\"");
        else
            q->password = str_of(c, NULL, pw, "mqtt.password");
    } else if (pwf) {
        bool usable;
        char *p = file_ref(c, pwf, "mqtt.password_file", FB_OPT_SECRET, &usable);
        if (p && usable) {
            struct fb_err e = {0};
            char *secret = NULL;
            if (fb_read_secret_file(p, &secret, &e) < 0)
                err_at(c, mk(pwf), "mqtt.password_file: %s", e.msg);
            else
                q->password = secret;
        }
        free(p);
    }
    if (q->password && !q->username)
        note_at(c, mk(pw ? pw : pwf), "a password without mqtt.username is usually not what the broker expects");

    yaml_node_t *tn = map_get(&m, "tls");
    struct map t = {0};
    if (tn && map_load(c, tn, "mqtt.tls", &t)) {
        map_check(c, &t, k_tls, "mqtt.tls");
        q->tls = true;
        if ((n = map_get(&t, "ca"))) q->ca = file_ref(c, n, "mqtt.tls.ca", FB_OPT_CERT, NULL);
        if ((n = map_get(&t, "ca_path"))) q->ca_path = file_ref(c, n, "mqtt.tls.ca_path", FB_OPT_DIR, NULL);
        if ((n = map_get(&t, "cert"))) q->cert = file_ref(c, n, "mqtt.tls.cert", FB_OPT_CERT, NULL);
        if ((n = map_get(&t, "key"))) q->key = file_ref(c, n, "mqtt.tls.key", FB_OPT_KEY, NULL);
        if ((n = map_get(&t, "verify_hostname")))
            bool_of(c, NULL, n, "mqtt.tls.verify_hostname", &q->tls_verify_hostname);
        if (!q->cert != !q->key)
            err_at(c, mk(tn), "mqtt.tls: cert and key go together (client certificate authentication)");
        map_free(&t);
    }
    if ((n = map_get(&m, "keepalive"))) {
        if (dur_of(c, NULL, n, "mqtt.keepalive", false, &q->keepalive_ns) &&
            (q->keepalive_ns > 65535000000000LL || (q->keepalive_ns > 0 && q->keepalive_ns < 1000000000LL)))
            err_at(c, mk(n), "mqtt.keepalive must be 0 (off) or between 1s and 65535s");
    }
    if ((n = map_get(&m, "topic"))) {
        q->topic = str_of(c, NULL, n, "mqtt.topic");
        struct fb_err e = {0};
        if (q->topic && fb_topic_check(q->topic, &e) < 0) err_at(c, mk(n), "mqtt.topic: %s", e.msg);
    } else {
        q->topic = strdup("{site}/{area}/{line}/{device}/{kind}");
    }
    if ((n = map_get(&m, "qos")) && map_load(c, n, "mqtt.qos", &t)) {
        map_check(c, &t, k_qos, "mqtt.qos");
        long long v;
        yaml_node_t *x;
        if ((x = map_get(&t, "telemetry")) && int_of(c, NULL, x, "mqtt.qos.telemetry", 0, 2, &v)) q->qos_telemetry = (int)v;
        if ((x = map_get(&t, "status")) && int_of(c, NULL, x, "mqtt.qos.status", 0, 2, &v)) q->qos_status = (int)v;
        if ((x = map_get(&t, "command")) && int_of(c, NULL, x, "mqtt.qos.command", 0, 2, &v)) q->qos_command = (int)v;
        map_free(&t);
    }
    if ((n = map_get(&m, "reconnect")) && map_load(c, n, "mqtt.reconnect", &t)) {
        map_check(c, &t, k_reconnect, "mqtt.reconnect");
        yaml_node_t *x;
        if ((x = map_get(&t, "min"))) dur_of(c, NULL, x, "mqtt.reconnect.min", true, &q->reconnect_min_ns);
        if ((x = map_get(&t, "max"))) dur_of(c, NULL, x, "mqtt.reconnect.max", true, &q->reconnect_max_ns);
        if (q->reconnect_min_ns > q->reconnect_max_ns)
            err_at(c, mk(n), "mqtt.reconnect: min is larger than max");
        map_free(&t);
    }
    long long v;
    if ((n = map_get(&m, "max_inflight")) && int_of(c, NULL, n, "mqtt.max_inflight", 1, 65535, &v))
        q->max_inflight = (uint32_t)v;
    if ((n = map_get(&m, "queue")) && int_of(c, NULL, n, "mqtt.queue", 1, 1000000, &v))
        q->queue_len = (uint32_t)v;
    s->q_cap = q->queue_len;
    map_free(&m);
}

/* ------------------------------------------------------------ sparkplug */

static const char *const k_sparkplug[] = {"url", "servers", "group", "edge_node", "primary_host", "version",
                                          "client_id", "username", "password", "password_file", "tls",
                                          "keepalive", "aliases", "reboot", "reconnect", "queue", "buffer",
                                          NULL};

/* Every key table, by the name of the mapping it belongs to (tls, qos,
 * reconnect and buffer appear under mqtt: and sparkplug: alike), for the test
 * that docs/configuration.md documents every key the loader accepts. */
static const struct fb_config_keys key_tables[] = {
    {"top", k_top},         {"gateway", k_gateway},   {"log", k_log},     {"metrics", k_metrics},
    {"commands", k_commands}, {"buffer", k_buffer},   {"mqtt", k_mqtt},   {"tls", k_tls},
    {"qos", k_qos},         {"reconnect", k_reconnect}, {"sparkplug", k_sparkplug}, {"device", k_device},
    {"tag", k_tag},         {"scale", k_scale},
};

const struct fb_config_keys *fb_config_key_tables(size_t *n)
{
    *n = sizeof key_tables / sizeof key_tables[0];
    return key_tables;
}

/* One broker URL of sparkplug.url / sparkplug.servers. */
static void spb_server(struct ctx *c, yaml_node_t *n, const char *what, struct fb_spb_cfg *q)
{
    char *url = str_of(c, NULL, n, what);
    if (!url) return;
    struct fb_url u;
    struct fb_err e = {0};
    if (fb_url_parse(url, &u, &e) < 0) {
        err_at(c, mk(n), "%s: %s", what, e.msg);
        free(url);
        return;
    }
    if (strcmp(u.scheme, "mqtt") && strcmp(u.scheme, "mqtts"))
        err_at(c, mk(n), "%s: scheme must be mqtt:// or mqtts://, got '%s://'", what, u.scheme);
    else if (!u.host || !*u.host)
        err_at(c, mk(n), "%s: missing broker host", what);
    else if ((u.path && *u.path && strcmp(u.path, "/")) || u.nq)
        err_at(c, mk(n), "%s: a broker URL has no path or query (got '%s')", what, url);
    struct fb_spb_server *sv = realloc(q->servers, (q->nservers + 1) * sizeof *sv);
    if (!sv) {
        fb_url_free(&u);
        free(url);
        return;
    }
    q->servers = sv;
    sv = &q->servers[q->nservers++];
    sv->url = url;
    sv->tls = !strcmp(u.scheme, "mqtts");
    sv->host = u.host ? strdup(u.host) : strdup("");
    sv->port = u.port ? u.port : sv->tls ? 8883 : 1883;
    fb_url_free(&u);
}

/* `sparkplug:` — a second sink beside (or instead of) `mqtt:` (docs/sparkplug.md). */
static void load_sparkplug(struct ctx *c, yaml_node_t *sn)
{
    struct fb_gateway *gw = c->gw;
    struct map m = {0};
    if (!map_load(c, sn, "sparkplug", &m)) return;
    map_check(c, &m, k_sparkplug, "sparkplug");
    struct fb_spb_cfg *q = calloc(1, sizeof *q);
    struct fb_sink_inst *arr = calloc(gw->nsinks + 1, sizeof *arr);
    if (!q || !arr) {
        free(q);
        free(arr);
        err_at(c, mk(sn), "out of memory");
        map_free(&m);
        return;
    }
    /* grow gw->sinks: the copied entries get fresh (unused) mutexes and condition variables */
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        arr[i] = gw->sinks[i];
        pthread_mutex_destroy(&gw->sinks[i].mu);
        pthread_cond_destroy(&gw->sinks[i].cv);
        pthread_mutex_init(&arr[i].mu, NULL);
        cond_init_mono(&arr[i].cv);
    }
    free(gw->sinks);
    gw->sinks = arr;
    struct fb_sink_inst *s = &gw->sinks[gw->nsinks++];
    s->sink = &fb_sink_sparkplug;
    s->name = strdup("sparkplug");
    s->cfg = q;
    s->gw = gw;
    pthread_mutex_init(&s->mu, NULL);
    cond_init_mono(&s->cv);

    yaml_node_t *bn = map_get(&m, "buffer");
    if (bn) {
        s->buffer = load_buffer(c, bn, "sparkplug.buffer", gw->buffer);
    } else if (gw->buffer) {
        s->buffer = calloc(1, sizeof *s->buffer);
        if (s->buffer) {
            *s->buffer = *gw->buffer;
            s->buffer->path = gw->buffer->path ? strdup(gw->buffer->path) : NULL;
        }
    }

    q->version = 5;
    q->aliases = true;
    q->tls_verify_hostname = true;
    q->keepalive_ns = 30000000000LL;
    q->reconnect_min_ns = 1000000000LL;
    q->reconnect_max_ns = 30000000000LL;
    q->queue_len = 1024;

    yaml_node_t *n, *x;
    yaml_node_t *un = map_get(&m, "url"), *ln = map_get(&m, "servers");
    if (un && ln) err_at(c, mk(ln), "give either sparkplug.url or sparkplug.servers, not both");
    if (un) spb_server(c, un, "sparkplug.url", q);
    if (ln) {
        if (ln->type != YAML_SEQUENCE_NODE || ln->data.sequence.items.top == ln->data.sequence.items.start)
            err_at(c, mk(ln), "sparkplug.servers must be a list of broker URLs [mqtt://a:1883, mqtt://b:1883]");
        else
            for (yaml_node_item_t *it = ln->data.sequence.items.start; it < ln->data.sequence.items.top; it++)
                spb_server(c, node(c, *it), "sparkplug.servers", q);
    }
    if (!un && !ln) err_at(c, mk(sn), "sparkplug.url (or servers: [...]) is required (e.g. mqtt://127.0.0.1:1883)");

    if (!(n = map_get(&m, "group"))) {
        err_at(c, mk(sn), "sparkplug.group is required (the Sparkplug group id)");
    } else if ((q->group = str_of(c, NULL, n, "sparkplug.group")) && !level_ok(q->group)) {
        err_at(c, mk(n), "sparkplug.group '%s' must be non-empty and contain no '/', '+' or '#'", q->group);
    }
    if ((n = map_get(&m, "edge_node")) && (q->edge_node = str_of(c, NULL, n, "sparkplug.edge_node")) &&
        !level_ok(q->edge_node))
        err_at(c, mk(n), "sparkplug.edge_node '%s' must be non-empty and contain no '/', '+' or '#'", q->edge_node);
    if ((n = map_get(&m, "primary_host")) && (q->primary_host = str_of(c, NULL, n, "sparkplug.primary_host")) &&
        !level_ok(q->primary_host))
        err_at(c, mk(n), "sparkplug.primary_host '%s' must be non-empty and contain no '/', '+' or '#'",
               q->primary_host);
    if ((n = map_get(&m, "version"))) {
        char *v = str_of(c, NULL, n, "sparkplug.version");
        if (v && !strcmp(v, "5"))
            q->version = 5;
        else if (v && (!strcmp(v, "3.1.1") || !strcmp(v, "3")))
            q->version = 3;
        else if (v)
            err_at(c, mk(n), "sparkplug.version: expected 5 or 3.1.1, got '%s'", v);
        free(v);
    }
    if ((n = map_get(&m, "client_id"))) {
        q->client_id = str_of(c, NULL, n, "sparkplug.client_id");
        if (q->client_id && (!*q->client_id || strlen(q->client_id) > 150))
            err_at(c, mk(n), "sparkplug.client_id must be 1..150 characters");
    }
    if ((n = map_get(&m, "username"))) q->username = str_of(c, NULL, n, "sparkplug.username");
    yaml_node_t *pw = map_get(&m, "password"), *pwf = map_get(&m, "password_file");
    if (pw && pwf) err_at(c, mk(pwf), "give either sparkplug.password or sparkplug.password_file, not both");
    if (pw) {
        if (!password_from_env(pw))
            err_at(c, mk(pw), "sparkplug.password: a literal password is not allowed in the config file; "
                              "use password_file or \"${ENV_VAR}\"");
        else
            q->password = str_of(c, NULL, pw, "sparkplug.password");
    } else if (pwf) {
        bool usable;
        char *p = file_ref(c, pwf, "sparkplug.password_file", FB_OPT_SECRET, &usable);
        if (p && usable) {
            struct fb_err e = {0};
            char *secret = NULL;
            if (fb_read_secret_file(p, &secret, &e) < 0)
                err_at(c, mk(pwf), "sparkplug.password_file: %s", e.msg);
            else
                q->password = secret;
        }
        free(p);
    }
    struct map t = {0};
    yaml_node_t *tn = map_get(&m, "tls");
    if (tn && map_load(c, tn, "sparkplug.tls", &t)) {
        map_check(c, &t, k_tls, "sparkplug.tls");
        if ((x = map_get(&t, "ca"))) q->ca = file_ref(c, x, "sparkplug.tls.ca", FB_OPT_CERT, NULL);
        if ((x = map_get(&t, "ca_path"))) q->ca_path = file_ref(c, x, "sparkplug.tls.ca_path", FB_OPT_DIR, NULL);
        if ((x = map_get(&t, "cert"))) q->cert = file_ref(c, x, "sparkplug.tls.cert", FB_OPT_CERT, NULL);
        if ((x = map_get(&t, "key"))) q->key = file_ref(c, x, "sparkplug.tls.key", FB_OPT_KEY, NULL);
        if ((x = map_get(&t, "verify_hostname")))
            bool_of(c, NULL, x, "sparkplug.tls.verify_hostname", &q->tls_verify_hostname);
        if (!q->cert != !q->key) err_at(c, mk(tn), "sparkplug.tls: cert and key go together");
        map_free(&t);
    }
    if ((n = map_get(&m, "keepalive")) && dur_of(c, NULL, n, "sparkplug.keepalive", false, &q->keepalive_ns) &&
        (q->keepalive_ns != 0 && (q->keepalive_ns < 1000000000LL || q->keepalive_ns > 65535000000000LL)))
        err_at(c, mk(n), "sparkplug.keepalive must be between 1s and 65535s");
    if ((n = map_get(&m, "aliases"))) bool_of(c, NULL, n, "sparkplug.aliases", &q->aliases);
    if ((n = map_get(&m, "reboot"))) bool_of(c, NULL, n, "sparkplug.reboot", &q->reboot);
    if ((n = map_get(&m, "reconnect")) && map_load(c, n, "sparkplug.reconnect", &t)) {
        map_check(c, &t, k_reconnect, "sparkplug.reconnect");
        if ((x = map_get(&t, "min"))) dur_of(c, NULL, x, "sparkplug.reconnect.min", true, &q->reconnect_min_ns);
        if ((x = map_get(&t, "max"))) dur_of(c, NULL, x, "sparkplug.reconnect.max", true, &q->reconnect_max_ns);
        if (q->reconnect_min_ns > q->reconnect_max_ns) err_at(c, mk(n), "sparkplug.reconnect: min is larger than max");
        map_free(&t);
    }
    long long v;
    if ((n = map_get(&m, "queue")) && int_of(c, NULL, n, "sparkplug.queue", 1, 1000000, &v)) q->queue_len = (uint32_t)v;
    s->q_cap = q->queue_len;
    map_free(&m);
}

/* ------------------------------------------------------------ for: loops */

struct loop {
    int nvars;
    struct fb_tvar *vars;      /* current values */
    char **names;
    char ***vals;              /* vals[v][k] text */
    int *nvals, *pos;
};

static void loop_free(struct loop *l)
{
    for (int v = 0; v < l->nvars; v++) {
        free(l->names[v]);
        for (int k = 0; k < l->nvals[v]; k++) free(l->vals[v][k]);
        free(l->vals[v]);
    }
    free(l->names);
    free(l->vals);
    free(l->nvals);
    free(l->pos);
    free(l->vars);
    memset(l, 0, sizeof *l);
}

static bool loop_add_val(struct loop *l, int v, char *s)
{
    if (!s) return false;
    int n = l->nvals[v];
    if ((n & (n - 1)) == 0) { /* 0, 1, 2, 4, …: double (linear, not one realloc per value) */
        char **t = realloc(l->vals[v], (size_t)(n ? n * 2 : 1) * sizeof *t);
        if (!t) {
            free(s);
            return false;
        }
        l->vals[v] = t;
    }
    l->vals[v][l->nvals[v]++] = s;
    return true;
}

/* Parse `for: {var: [..] | "a..b", …}`.  false after reporting an error. */
static bool loop_parse(struct ctx *c, const struct fb_tvars *outer, yaml_node_t *n, struct loop *l)
{
    memset(l, 0, sizeof *l);
    struct map m = {0};
    if (!map_load(c, n, "for", &m)) return false;
    if (m.n == 0) {
        err_at(c, mk(n), "for: needs at least one loop variable, e.g. for: {i: \"1..10\"}");
        map_free(&m);
        return false;
    }
    l->nvars = m.n;
    l->names = calloc((size_t)m.n, sizeof *l->names);
    l->vals = calloc((size_t)m.n, sizeof *l->vals);
    l->nvals = calloc((size_t)m.n, sizeof *l->nvals);
    l->pos = calloc((size_t)m.n, sizeof *l->pos);
    l->vars = calloc((size_t)m.n, sizeof *l->vars);
    bool ok = l->names && l->vals && l->nvals && l->pos && l->vars;
    long long total = 1;
    for (int v = 0; ok && v < m.n; v++) {
        const char *name = m.kv[v].key;
        bool ident = isalpha((unsigned char)name[0]) || name[0] == '_';
        for (const char *p = name; *p; p++)
            if (!isalnum((unsigned char)*p) && *p != '_') ident = false;
        if (!ident) {
            err_at(c, mk(m.kv[v].k), "loop variable '%s' must be a name (letters, digits, _)", name);
            ok = false;
            break;
        }
        l->names[v] = strdup(name);
        yaml_node_t *vn = m.kv[v].v;
        if (vn->type == YAML_SEQUENCE_NODE) {
            for (yaml_node_item_t *it = vn->data.sequence.items.start; ok && it < vn->data.sequence.items.top; it++)
                ok = loop_add_val(l, v, str_of(c, outer, node(c, *it), "for value"));
        } else if (vn->type == YAML_SCALAR_NODE) {
            char *s = str_of(c, outer, vn, "for range");
            int64_t lo, hi;
            if (!s) {
                ok = false;
            } else if (fb_tmpl_range(s, &lo, &hi) < 0) {
                err_at(c, mk(vn), "loop variable '%s': expected a list [1, 2, 3] or a range \"1..50\", got '%s'", name, s);
                ok = false;
            } else if ((hi > lo ? hi - lo : lo - hi) >= MAX_LOOP) {
                err_at(c, mk(vn), "loop variable '%s': range '%s' is too long (max %d values)", name, s, MAX_LOOP);
                ok = false;
            } else {
                int64_t step = hi >= lo ? 1 : -1;
                for (int64_t i = lo; ok; i += step) {
                    char buf[32];
                    snprintf(buf, sizeof buf, "%lld", (long long)i);
                    ok = loop_add_val(l, v, strdup(buf));
                    if (i == hi) break;
                }
            }
            free(s);
        } else {
            err_at(c, mk(vn), "loop variable '%s': expected a list or a range string, got %s", name, kind_name(vn));
            ok = false;
        }
        if (ok && l->nvals[v] == 0) {
            err_at(c, mk(vn), "loop variable '%s' has no values", name);
            ok = false;
        }
        if (ok) total *= l->nvals[v];
        if (ok && total > MAX_LOOP) {
            err_at(c, mk(n), "for: expands to more than %d entries", MAX_LOOP);
            ok = false;
        }
    }
    map_free(&m);
    if (!ok) {
        loop_free(l);
        return false;
    }
    return true;
}

/* Set l->vars to the current position. */
static void loop_bind(struct loop *l)
{
    for (int v = 0; v < l->nvars; v++) {
        struct fb_tvar *t = &l->vars[v];
        t->name = l->names[v];
        t->val = l->vals[v][l->pos[v]];
        t->is_int = fb_tmpl_int(t->val, &t->i);
    }
}

/* Advance the odometer (last variable fastest); false when done. */
static bool loop_next(struct loop *l)
{
    for (int v = l->nvars - 1; v >= 0; v--) {
        if (++l->pos[v] < l->nvals[v]) return true;
        l->pos[v] = 0;
    }
    return false;
}

/* ---- counting before expanding (issue 14: 100000 × 100000 nested for:
 * made `check` build tags until memory ran out).  Silent: the real pass
 * reports every error; a count that cannot be made is taken as 1. */
static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }
static uint64_t sat_mul(uint64_t a, uint64_t b) { return b && a > UINT64_MAX / b ? UINT64_MAX : a * b; }

static char *str_quiet(const struct fb_tvars *vars, yaml_node_t *n)
{
    if (!n || n->type != YAML_SCALAR_NODE) return NULL;
    struct fb_err e = {0};
    char *env = NULL, *out = NULL;
    if (fb_env_expand((const char *)n->data.scalar.value, &env, &e) < 0) return NULL;
    if (!vars) return env;
    if (fb_tmpl_subst(vars, env, &out, &e) < 0) out = NULL;
    free(env);
    return out;
}

/* The number of entries a `for:` mapping makes (the product of its value counts). */
static uint64_t for_count(struct ctx *c, const struct fb_tvars *vars, yaml_node_t *forn)
{
    if (!forn || forn->type != YAML_MAPPING_NODE) return 1;
    uint64_t total = 1;
    for (yaml_node_pair_t *p = forn->data.mapping.pairs.start; p < forn->data.mapping.pairs.top; p++) {
        yaml_node_t *v = node(c, p->value);
        uint64_t k = 1;
        if (v && v->type == YAML_SEQUENCE_NODE) {
            k = (uint64_t)(v->data.sequence.items.top - v->data.sequence.items.start);
        } else if (v && v->type == YAML_SCALAR_NODE) {
            char *t = str_quiet(vars, v);
            int64_t lo, hi;
            if (t && fb_tmpl_range(t, &lo, &hi) == 0)
                k = hi >= lo ? (uint64_t)hi - (uint64_t)lo + 1 : (uint64_t)lo - (uint64_t)hi + 1;
            free(t);
        }
        total = sat_mul(total, k ? k : 1);
    }
    return total;
}

/* Tags that a device's `tags:` list makes with these loop variables. */
static uint64_t tags_count(struct ctx *c, const struct fb_tvars *vars, yaml_node_t *tags)
{
    if (!tags || tags->type != YAML_SEQUENCE_NODE) return 0;
    uint64_t total = 0;
    for (yaml_node_item_t *it = tags->data.sequence.items.start; it < tags->data.sequence.items.top; it++) {
        yaml_node_t *tn = node(c, *it);
        struct map m = {0};
        if (!tn || tn->type != YAML_MAPPING_NODE || !map_load(c, tn, "tag", &m)) {
            total = sat_add(total, 1);
            continue;
        }
        yaml_node_t *forn = map_get(&m, "for"), *cn = map_get(&m, "count");
        uint64_t n = for_count(c, vars, forn);
        if (cn) {
            struct loop l;
            uint64_t elems = 1;
            /* count: may use the tag's own loop variables: take the first binding */
            if (forn && forn->type == YAML_MAPPING_NODE && n < UINT64_MAX && loop_parse(c, vars, forn, &l)) {
                loop_bind(&l);
                struct fb_tvars scope = {vars, l.vars, l.nvars};
                char *t = str_quiet(&scope, cn);
                int64_t v;
                if (t && fb_tmpl_int(t, &v) && v > 0) elems = (uint64_t)v;
                free(t);
                loop_free(&l);
            } else {
                char *t = str_quiet(vars, cn);
                int64_t v;
                if (t && fb_tmpl_int(t, &v) && v > 0) elems = (uint64_t)v;
                free(t);
            }
            n = sat_mul(n, elems);
        }
        map_free(&m);
        total = sat_add(total, n);
    }
    return total;
}

/* ------------------------------------------------------------ tags */

static struct fb_tag *push_tag(struct ctx *c, struct tag_aux **aux)
{
    struct fb_gateway *gw = c->gw;
    if (gw->ntags >= MAX_TAGS) return NULL;
    if (gw->ntags == c->captags) {
        size_t n = c->captags ? c->captags * 2 : 64;
        struct fb_tag *t = realloc(gw->tags, n * sizeof *t);
        if (!t) return NULL;
        gw->tags = t;
        struct tag_aux *a = realloc(c->taux, n * sizeof *a);
        if (!a) return NULL;
        c->taux = a;
        c->captags = n;
    }
    struct fb_tag *t = &gw->tags[gw->ntags];
    memset(t, 0, sizeof *t);
    *aux = &c->taux[gw->ntags];
    memset(*aux, 0, sizeof **aux);
    t->id = gw->ntags++;
    return t;
}

static bool parse_access(const char *s, uint8_t *acc)
{
    if (!strcmp(s, "r") || !strcmp(s, "read") || !strcmp(s, "ro")) *acc = FB_ACC_READ;
    else if (!strcmp(s, "w") || !strcmp(s, "write") || !strcmp(s, "wo")) *acc = FB_ACC_WRITE;
    else if (!strcmp(s, "rw") || !strcmp(s, "read-write") || !strcmp(s, "readwrite") || !strcmp(s, "read_write"))
        *acc = FB_ACC_RW;
    else return false;
    return true;
}

/* A two-number list [lo, hi]; a null end is open (only when allow_open). */
static bool pair_of(struct ctx *c, const struct fb_tvars *vars, yaml_node_t *n, const char *what,
                    bool allow_open, double v[2], bool has[2])
{
    if (n->type != YAML_SEQUENCE_NODE || n->data.sequence.items.top - n->data.sequence.items.start != 2) {
        err_at(c, mk(n), "%s must be a list of two numbers [low, high]", what);
        return false;
    }
    bool ok = true;
    for (int i = 0; i < 2; i++) {
        yaml_node_t *x = node(c, n->data.sequence.items.start[i]);
        has[i] = false;
        if (allow_open && is_null(x)) continue;
        if (num_of(c, vars, x, what, &v[i])) has[i] = true;
        else ok = false;
    }
    return ok;
}

/* The processing settings shared by all elements of a tag entry. */
static void tag_proc(struct ctx *c, const struct fb_tvars *vars, const struct map *m,
                     struct fb_tag_proc *p, uint8_t access, struct tag_aux *aux)
{
    yaml_node_t *n;
    if ((n = map_get(m, "scale"))) {
        struct map s = {0};
        aux->needs_numeric = true;
        aux->numeric_m = mk(map_keynode(m, "scale"));
        if (map_load(c, n, "scale", &s)) {
            map_check(c, &s, k_scale, "scale");
            yaml_node_t *raw = map_get(&s, "raw"), *eng = map_get(&s, "eng");
            yaml_node_t *fac = map_get(&s, "factor"), *off = map_get(&s, "offset");
            if ((raw || eng) && (fac || off)) {
                err_at(c, mk(n), "scale: give either raw/eng or factor/offset, not both");
            } else if (raw || eng) {
                double r[2], e[2];
                bool hr[2], he[2];
                if (!raw || !eng) {
                    err_at(c, mk(n), "scale: raw and eng go together, e.g. {raw: [0, 27648], eng: [0, 100]}");
                } else if (pair_of(c, vars, raw, "scale.raw", false, r, hr) &&
                           pair_of(c, vars, eng, "scale.eng", false, e, he)) {
                    if (r[0] == r[1])
                        err_at(c, mk(raw), "scale.raw: low and high are equal (%g); the scale would divide by zero", r[0]);
                    else if (e[0] == e[1])
                        err_at(c, mk(eng), "scale.eng: low and high are equal (%g); writes could not be scaled back", e[0]);
                    else
                        fb_scale_set_points(p, r[0], r[1], e[0], e[1]);
                }
            } else {
                double f = 1, o = 0;
                bool ok = true;
                if (fac) ok &= num_of(c, vars, fac, "scale.factor", &f);
                if (off) ok &= num_of(c, vars, off, "scale.offset", &o);
                if (ok && f == 0)
                    err_at(c, mk(fac), "scale.factor must not be 0");
                else if (ok && (fac || off))
                    fb_scale_set_factor(p, f, o);
                else if (ok)
                    err_at(c, mk(n), "scale: expected {raw: [..], eng: [..]} or {factor: F, offset: O}");
            }
            map_free(&s);
        }
    }
    if ((n = map_get(m, "range"))) {
        double v[2] = {0, 0};
        bool has[2];
        aux->needs_numeric = true;
        aux->numeric_m = mk(map_keynode(m, "range"));
        if (pair_of(c, vars, n, "range", true, v, has)) {
            p->has_min = has[0];
            p->has_max = has[1];
            p->min = v[0];
            p->max = v[1];
            if (has[0] && has[1] && v[0] > v[1])
                err_at(c, mk(n), "range: min %g is greater than max %g%s", v[0], v[1],
                       access & FB_ACC_WRITE ? " (no value could be written)" : "");
        }
    }
    if ((n = map_get(m, "max_rate"))) {
        aux->needs_numeric = true;
        aux->numeric_m = mk(map_keynode(m, "max_rate"));
        if (num_of(c, vars, n, "max_rate", &p->max_rate) && p->max_rate <= 0)
            err_at(c, mk(n), "max_rate must be greater than 0 (change per second)");
    }
    p->spike_accept = 3; /* a real step passes after 3 samples that agree (docs/configuration.md) */
    if ((n = map_get(m, "spike_accept"))) {
        long long v;
        if (int_of(c, vars, n, "spike_accept", 0, 1000000, &v)) p->spike_accept = (uint32_t)v;
        if (!map_get(m, "max_rate")) note_at(c, mk(n), "spike_accept has no effect without max_rate");
    }
    if ((n = map_get(m, "stuck"))) dur_of(c, vars, n, "stuck", true, &p->stuck_ns);
    if ((n = map_get(m, "deadband"))) {
        char *s = str_of(c, vars, n, "deadband");
        aux->needs_numeric = true;
        aux->numeric_m = mk(map_keynode(m, "deadband"));
        if (s) {
            size_t len = strlen(s);
            bool pct = len > 0 && s[len - 1] == '%';
            if (pct) s[len - 1] = 0;
            char *end;
            double d = strtod(s, &end);
            if (end == s || *end || !(d >= 0) || d - d != 0)
                err_at(c, mk(n), "deadband: expected a number >= 0 or a percentage like \"2%%\", got '%s%s'", s, pct ? "%" : "");
            else if (pct)
                p->db_pct = d;
            else
                p->db_abs = d;
            free(s);
        }
    }
    if ((n = map_get(m, "heartbeat"))) dur_of(c, vars, n, "heartbeat", true, &p->heartbeat_ns);
    if ((n = map_get(m, "window"))) {
        aux->needs_numeric = true;
        aux->numeric_m = mk(map_keynode(m, "window"));
        dur_of(c, vars, n, "window", true, &p->window_ns);
    }
}

/* Is `s` "string[N]"?  Sets *len. */
static bool string_type(const char *s, uint32_t *len)
{
    if (strncasecmp(s, "string[", 7) != 0) return false;
    int64_t v;
    char buf[16];
    size_t n = strlen(s + 7);
    if (n < 2 || n > sizeof buf || s[7 + n - 1] != ']') return false;
    memcpy(buf, s + 7, n - 1);
    buf[n - 1] = 0;
    if (!fb_tmpl_int(buf, &v) || v < 1 || v > 65535) return false;
    *len = (uint32_t)v;
    return true;
}

static void build_tag(struct ctx *c, uint32_t di, int64_t dev_poll, yaml_node_t *tn,
                      const struct fb_tvars *vars)
{
    struct map m = {0};
    if (!map_load(c, tn, "tag", &m)) return;
    map_check(c, &m, k_tag, "tag");
    char *name = NULL, *addr = NULL, *order = NULL, *unit = NULL;
    uint8_t type = FB_T_NONE, access = FB_ACC_READ;
    uint32_t str_len = 0;
    long long count = 0;
    int64_t poll = dev_poll;
    struct fb_tag_proc proc = {0};
    struct tag_aux aux = {0};
    yaml_node_t *n, *namen = map_get(&m, "name"), *addrn = map_get(&m, "addr");
    bool ok = true;

    if (!namen) {
        err_at(c, mk(tn), "tag: 'name' is required");
        ok = false;
    } else if ((name = str_of(c, vars, namen, "tag name")) && !name_ok(name)) {
        err_at(c, mk(namen), "tag name '%s' may only contain letters, digits, '_', '.' and '-'", name);
        ok = false;
    }
    if (!addrn) {
        err_at(c, mk(tn), "tag%s%s%s: 'addr' is required", name ? " '" : "", name ? name : "", name ? "'" : "");
        ok = false;
    } else {
        addr = str_of(c, vars, addrn, "addr");
        aux.addr_m = mk(addrn);
    }
    if ((n = map_get(&m, "type"))) {
        char *s = str_of(c, vars, n, "type");
        if (s) {
            enum fb_type t = fb_type_parse(s);
            if (t != FB_T_NONE) {
                type = (uint8_t)t;
            } else if (string_type(s, &str_len)) {
                type = FB_T_STRING;
            } else if (strncasecmp(s, "bcd", 3) && strncasecmp(s, "string", 6)) {
                err_at(c, mk(n), "type: unknown type '%s' (bool, int8..int64, uint8..uint64, float32, "
                                 "float64, string[N], bcd16, bcd32)", s);
            } else if (strncasecmp(s, "string", 6) == 0) {
                err_at(c, mk(n), "type: '%s' needs a length in bytes: string[N] with N in 1..65535", s);
            } else if (addr) {
                /* a driver-specific type (bcd16, …): the driver reads it from the address */
                size_t len = strlen(addr) + strlen(s) + 2;
                char *a2 = malloc(len);
                if (a2) {
                    snprintf(a2, len, "%s:%s", addr, s);
                    free(addr);
                    addr = a2;
                }
            }
            free(s);
        }
    }
    if ((n = map_get(&m, "order"))) order = str_of(c, vars, n, "order");
    if ((n = map_get(&m, "unit"))) unit = str_of(c, vars, n, "unit");
    if ((n = map_get(&m, "count"))) int_of(c, vars, n, "count", 1, MAX_COUNT, &count);
    if ((n = map_get(&m, "access"))) {
        char *s = str_of(c, vars, n, "access");
        if (s && !parse_access(s, &access)) err_at(c, mk(n), "access: expected r, w or rw, got '%s'", s);
        free(s);
    }
    if ((n = map_get(&m, "poll"))) dur_of(c, vars, n, "poll", true, &poll);
    tag_proc(c, vars, &m, &proc, access, &aux);
    aux.poll_ns = poll;
    aux.name_m = mk(namen);
    aux.entry = c->entries++;

    if (ok && name && addr) {
        long long elems = count ? count : 1;
        for (long long i = 0; i < elems; i++) {
            struct tag_aux *ta;
            struct fb_tag *t = push_tag(c, &ta);
            if (!t) {
                err_at(c, mk(tn), "too many tags (max %u) or out of memory", MAX_TAGS);
                break;
            }
            *ta = aux;
            t->device = di;
            t->type = type;
            t->str_len = str_len;
            t->access = access;
            t->index = (uint32_t)i;
            if (count) {
                size_t len = strlen(name) + 24;
                t->name = malloc(len);
                if (t->name) snprintf(t->name, len, "%s[%lld]", name, i);
            } else {
                t->name = strdup(name);
            }
            t->addr_text = strdup(addr);
            t->order = order ? strdup(order) : NULL;
            t->unit = unit ? strdup(unit) : NULL;
            t->proc = proc;
            t->line = mk(tn).line;
            t->col = mk(tn).col;
            c->gw->devs[di].ntags++;
        }
    }
    free(name);
    free(addr);
    free(order);
    free(unit);
    map_free(&m);
}

static void build_tags(struct ctx *c, uint32_t di, int64_t dev_poll, yaml_node_t *tags,
                       const struct fb_tvars *vars)
{
    if (tags->type != YAML_SEQUENCE_NODE) {
        err_at(c, mk(tags), "tags must be a list (- name: …), got %s", kind_name(tags));
        return;
    }
    for (yaml_node_item_t *it = tags->data.sequence.items.start; it < tags->data.sequence.items.top; it++) {
        yaml_node_t *tn = node(c, *it);
        yaml_node_t *forn = NULL;
        if (tn->type == YAML_MAPPING_NODE) {
            struct map m = {0};
            map_load(c, tn, "tag", &m);
            forn = map_get(&m, "for");
            map_free(&m);
        }
        if (!forn) {
            build_tag(c, di, dev_poll, tn, vars);
            continue;
        }
        struct loop l;
        if (!loop_parse(c, vars, forn, &l)) continue;
        uint64_t k = for_count(c, vars, forn);
        if (c->gw->ntags + k > MAX_TAGS) { /* counted before expanding: never build past the limit */
            err_at(c, mk(forn), "for: %" PRIu64 " more tags would pass the limit of %u tags", k, MAX_TAGS);
            loop_free(&l);
            continue;
        }
        do {
            loop_bind(&l);
            struct fb_tvars scope = {vars, l.vars, l.nvars};
            int before = c->nerr;
            build_tag(c, di, dev_poll, tn, &scope);
            if (c->nerr > before + 20) break; /* one broken template: do not repeat its errors 1000× */
        } while (loop_next(&l));
        loop_free(&l);
    }
}

/* Duplicate tag names within a device, after for:/count: expansion: sort
 * by base name ("temps" for "temps[3]") and compare neighbours, O(n log n). */
struct dup_item {
    const char *name;
    size_t blen;
    uint32_t id;
};

static int dup_cmp(const void *a, const void *b)
{
    const struct dup_item *x = a, *y = b;
    size_t n = x->blen < y->blen ? x->blen : y->blen;
    int r = memcmp(x->name, y->name, n);
    if (r) return r;
    if (x->blen != y->blen) return x->blen < y->blen ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void check_dup_tags(struct ctx *c, uint32_t di)
{
    struct fb_device *d = &c->gw->devs[di];
    if (d->ntags < 2) return;
    struct dup_item *it = malloc(d->ntags * sizeof *it);
    if (!it) return;
    for (uint32_t i = 0; i < d->ntags; i++) {
        const struct fb_tag *t = &c->gw->tags[d->first_tag + i];
        it[i] = (struct dup_item){t->name, strcspn(t->name, "["), t->id};
    }
    qsort(it, d->ntags, sizeof *it, dup_cmp);
    uint32_t run = 0, reported = UINT32_MAX;
    for (uint32_t k = 1; k < d->ntags; k++) {
        if (dup_cmp(&(struct dup_item){it[k].name, it[k].blen, 0}, &(struct dup_item){it[run].name, it[run].blen, 0})) {
            run = k;
            continue;
        }
        const struct tag_aux *ak = &c->taux[it[k].id], *a0 = &c->taux[it[run].id];
        if (ak->entry == a0->entry || ak->entry == reported) continue;
        reported = ak->entry;
        err_at(c, ak->name_m, "duplicate tag name '%.*s' in device '%s' (first at line %d)", (int)it[k].blen,
               it[k].name, d->name, c->gw->tags[it[run].id].line);
    }
    free(it);
}

/* ------------------------------------------------------------ devices */

static struct fb_device *push_dev(struct ctx *c)
{
    struct fb_gateway *gw = c->gw;
    if (gw->ndevs >= MAX_DEVICES) return NULL;
    if (gw->ndevs == c->capdevs) {
        size_t n = c->capdevs ? c->capdevs * 2 : 8;
        struct fb_device *d = realloc(gw->devs, n * sizeof *d);
        if (!d) return NULL;
        gw->devs = d;
        struct dev_aux *a = realloc(c->daux, n * sizeof *a);
        if (!a) return NULL;
        c->daux = a;
        c->capdevs = n;
    }
    struct fb_device *d = &gw->devs[gw->ndevs];
    memset(d, 0, sizeof *d);
    memset(&c->daux[gw->ndevs], 0, sizeof c->daux[0]);
    d->idx = gw->ndevs++;
    return d;
}

/* Add k=v to the device URL's query: the options: block. */
static bool url_add_opt(struct fb_url *u, const char *k, const char *v)
{
    struct fb_url_kv *q = realloc(u->q, (size_t)(u->nq + 1) * sizeof *q);
    if (!q) return false;
    u->q = q;
    q[u->nq].k = strdup(k);
    q[u->nq].v = strdup(v);
    u->nq++;
    return true;
}

static void build_device(struct ctx *c, yaml_node_t *dn, const struct fb_tvars *vars)
{
    struct map m = {0};
    if (!map_load(c, dn, "device", &m)) return;
    map_check(c, &m, k_device, "device");
    struct fb_device *d = push_dev(c);
    if (!d) {
        err_at(c, mk(dn), "too many devices (max %u) or out of memory", MAX_DEVICES);
        map_free(&m);
        return;
    }
    uint32_t di = d->idx;
    struct dev_aux *da = &c->daux[di];
    d->gw = c->gw;
    d->line_no = mk(dn).line;
    d->col = mk(dn).col;
    d->first_tag = c->gw->ntags;
    d->timeout_ns = 1000000000LL;
    yaml_node_t *n;
    if (!(n = map_get(&m, "name"))) {
        err_at(c, mk(dn), "device: 'name' is required");
    } else if ((d->name = str_of(c, vars, n, "device name"))) {
        if (!name_ok(d->name))
            err_at(c, mk(n), "device name '%s' may only contain letters, digits, '_', '.' and '-'", d->name);
        for (uint32_t i = 0; i < di; i++)
            if (c->gw->devs[i].name && !strcmp(c->gw->devs[i].name, d->name)) {
                err_at(c, mk(n), "duplicate device name '%s' (first at line %d)", d->name, c->gw->devs[i].line_no);
                break;
            }
    }
    if (!d->name) d->name = strdup("?");
    if (!(n = map_get(&m, "url"))) {
        err_at(c, mk(dn), "device '%s': 'url' is required (e.g. modbus-tcp://127.0.0.1:502?unit=1)", d->name);
    } else if ((d->url_text = str_of(c, vars, n, "url"))) {
        struct fb_err e = {0};
        da->url_m = mk(n);
        if (fb_url_parse(d->url_text, &d->url, &e) < 0) err_at(c, mk(n), "url: %s", e.msg);
    }
    if ((n = map_get(&m, "area"))) {
        d->area = str_of(c, vars, n, "area");
        if (d->area && !level_ok(d->area))
            err_at(c, mk(n), "area '%s' must be non-empty and contain no '/', '+' or '#'", d->area);
    }
    if ((n = map_get(&m, "line"))) {
        d->line = str_of(c, vars, n, "line");
        if (d->line && !level_ok(d->line))
            err_at(c, mk(n), "line '%s' must be non-empty and contain no '/', '+' or '#'", d->line);
    }
    if (!d->area) d->area = strdup("_");
    if (!d->line) d->line = strdup("_");
    int64_t poll = 1000000000LL;
    if ((n = map_get(&m, "poll"))) dur_of(c, vars, n, "poll", true, &poll);
    yaml_node_t *tn = map_get(&m, "timeout"), *dln = map_get(&m, "delay");
    if (tn) dur_of(c, vars, tn, "timeout", true, &d->timeout_ns);
    if (dln) dur_of(c, vars, dln, "delay", false, &d->delay_ns);
    if ((n = map_get(&m, "options"))) {
        struct map o = {0};
        if (map_load(c, n, "options", &o)) {
            for (int i = 0; i < o.n; i++) {
                char *v = str_of(c, vars, o.kv[i].v, "option");
                if (!v) continue;
                if (d->url.scheme && fb_url_get(&d->url, o.kv[i].key))
                    err_at(c, mk(o.kv[i].k), "option '%s' is also given in the device URL", o.kv[i].key);
                else if (d->url.scheme)
                    url_add_opt(&d->url, o.kv[i].key, v);
                free(v);
            }
            map_free(&o);
        }
    }
    /* timeout/delay may also come from the URL (the CLI form): one place only */
    static const char *const tk[] = {"timeout", "delay"};
    for (int i = 0; i < 2 && d->url.scheme; i++) {
        const char *v = fb_url_get(&d->url, tk[i]);
        yaml_node_t *kn = i == 0 ? tn : dln;
        if (!v) continue;
        /* the driver reads the URL's value (and sets dev->timeout_ns/delay_ns) */
        if (kn) err_at(c, mk(kn), "%s is given both here and in the device URL/options", tk[i]);
    }
    if ((n = map_get(&m, "tags"))) {
        build_tags(c, di, poll, n, vars);
        check_dup_tags(c, di);
    }
    else note_at(c, mk(dn), "device '%s' has no tags", c->gw->devs[di].name);
    map_free(&m);
}

/* Counts every tag the devices list would make, stopping past MAX_TAGS;
 * false (with an error at the entry that crosses the limit) if it does. */
static bool devices_fit(struct ctx *c, yaml_node_t *dn)
{
    uint64_t total = 0;
    for (yaml_node_item_t *it = dn->data.sequence.items.start; it < dn->data.sequence.items.top; it++) {
        yaml_node_t *n = node(c, *it);
        if (!n || n->type != YAML_MAPPING_NODE) continue;
        struct map m = {0};
        if (!map_load(c, n, "device", &m)) continue;
        yaml_node_t *forn = map_get(&m, "for"), *tags = map_get(&m, "tags");
        map_free(&m);
        if (!forn) {
            uint64_t k = tags_count(c, NULL, tags);
            total = sat_add(total, k);
            if (total > MAX_TAGS) {
                err_at(c, mk(tags ? tags : n), "these tags bring the gateway to more than the limit of %u tags",
                       MAX_TAGS);
                return false;
            }
            continue;
        }
        struct loop l;
        if (!loop_parse(c, NULL, forn, &l)) continue; /* reported; the real pass skips it too */
        uint64_t ndev = for_count(c, NULL, forn), first = 0;
        bool firstb = true;
        do {
            loop_bind(&l);
            struct fb_tvars scope = {NULL, l.vars, l.nvars};
            uint64_t k = tags_count(c, &scope, tags);
            if (firstb) first = k, firstb = false;
            total = sat_add(total, k);
        } while (total <= MAX_TAGS && loop_next(&l));
        loop_free(&l);
        if (total > MAX_TAGS) {
            err_at(c, mk(forn), "for: %" PRIu64 " devices with %" PRIu64 " tags each (the first) make %" PRIu64
                   " tags; the limit is %u tags", ndev, first, sat_mul(ndev, first), MAX_TAGS);
            return false;
        }
    }
    return true;
}

static void load_devices(struct ctx *c, yaml_node_t *dn)
{
    if (dn->type != YAML_SEQUENCE_NODE) {
        err_at(c, mk(dn), "devices must be a list (- name: …), got %s", kind_name(dn));
        return;
    }
    if (!devices_fit(c, dn)) return;
    for (yaml_node_item_t *it = dn->data.sequence.items.start; it < dn->data.sequence.items.top; it++) {
        yaml_node_t *n = node(c, *it);
        yaml_node_t *forn = NULL;
        if (n->type == YAML_MAPPING_NODE) {
            struct map m = {0};
            map_load(c, n, "device", &m);
            forn = map_get(&m, "for");
            map_free(&m);
        }
        if (!forn) {
            build_device(c, n, NULL);
            continue;
        }
        struct loop l;
        if (!loop_parse(c, NULL, forn, &l)) continue;
        do {
            loop_bind(&l);
            struct fb_tvars scope = {NULL, l.vars, l.nvars};
            int before = c->nerr;
            build_device(c, n, &scope);
            if (c->nerr > before + 20) break;
        } while (loop_next(&l));
        loop_free(&l);
    }
}

/* ------------------------------------------------------------ pass B: drivers */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

void fb_scheme_hint(char *buf, size_t len, const char *scheme)
{
    size_t ns;
    const struct fb_scheme_info *si = fb_schemes(&ns);
    const char *names[32];
    size_t n = 0, off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < ns && n < 31; i++) names[n++] = si[i].scheme;
    names[n] = NULL;
    const char *sg = scheme ? suggest(scheme, names) : NULL;
    if (sg) {
        snprintf(buf, len, " (did you mean '%s'?)", sg);
        return;
    }
    off += (size_t)snprintf(buf + off, len - off, " (known:");
    for (size_t i = 0; i < n && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, " %s://", names[i]);
    if (off < len) snprintf(buf + off, len - off, ")");
}

static void build_groups(struct ctx *c, struct fb_device *d)
{
    struct fb_gateway *gw = c->gw;
    if (!d->ntags) return;
    int64_t *per = malloc(d->ntags * sizeof *per);
    if (!per) return;
    for (uint32_t i = 0; i < d->ntags; i++) per[i] = c->taux[d->first_tag + i].poll_ns;
    qsort(per, d->ntags, sizeof *per, cmp_i64);
    uint32_t ng = 0;
    for (uint32_t i = 0; i < d->ntags; i++)
        if (i == 0 || per[i] != per[i - 1]) per[ng++] = per[i];
    d->groups = calloc(ng, sizeof *d->groups);
    if (!d->groups) {
        free(per);
        return;
    }
    d->ngroups = ng;
    for (uint32_t g = 0; g < ng; g++) {
        struct fb_group *gr = &d->groups[g];
        gr->period_ns = per[g];
        uint32_t cnt = 0;
        for (uint32_t i = 0; i < d->ntags; i++)
            if (c->taux[d->first_tag + i].poll_ns == per[g]) cnt++;
        gr->tags = malloc(cnt * sizeof *gr->tags);
        if (!gr->tags) continue;
        for (uint32_t i = 0; i < d->ntags; i++) {
            uint32_t id = d->first_tag + i;
            if (c->taux[id].poll_ns == per[g]) {
                gr->tags[gr->ntags++] = id;
                gw->tags[id].group = (uint16_t)g;
            }
        }
    }
    free(per);
}

/* Files a device URL names (driver.h: password_file=, user_key=, pki=, …),
 * checked as the driver will open them: as written, relative to the
 * gateway's working directory. */
static void check_url_files(struct ctx *c, const struct fb_device *d, const struct dev_aux *da)
{
    for (int i = 0; i < d->url.nq; i++) {
        const struct fb_drv_opt *o = fb_scheme_opt(d->url.scheme, d->url.q[i].k);
        if (!o || o->kind == FB_OPT_VALUE || o->kind == FB_OPT_FILE) continue;
        struct fb_err e = {0};
        int rc = fb_check_file(d->url.q[i].v ? d->url.q[i].v : "", o->kind, &e);
        if (rc == FB_ENOENT && o->kind == FB_OPT_PKI) continue; /* the driver creates the store */
        if (rc == FB_ENOENT || rc == FB_EIO)
            warn_at(c, da->url_m, "device '%s': %s=: %s", d->name, o->key, e.msg);
        else if (rc < 0)
            err_at(c, da->url_m, "device '%s': %s=: %s", d->name, o->key, e.msg);
    }
}

static void build_drivers(struct ctx *c)
{
    struct fb_gateway *gw = c->gw;
    char **keys = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *keys);
    if (!keys) {
        err_at(c, (struct mark){0, 0}, "out of memory");
        return;
    }
    for (uint32_t di = 0; di < gw->ndevs; di++) {
        struct fb_device *d = &gw->devs[di];
        struct dev_aux *da = &c->daux[di];
        for (uint32_t i = 0; i < d->ntags; i++) {
            struct fb_tag *t = &gw->tags[d->first_tag + i];
            size_t len = strlen(d->name) + strlen(t->name) + 2;
            t->path = malloc(len);
            if (t->path) snprintf(t->path, len, "%s/%s", d->name, t->name);
        }
        if (d->ngroups == 0) build_groups(c, d);
        if (d->ntags > 0 && d->ngroups > 65535) {
            err_at(c, (struct mark){d->line_no, d->col}, "device '%s' has too many poll periods", d->name);
            continue;
        }
        if (!d->url.scheme) continue; /* url error already reported */
        const struct fb_driver *drv = fb_driver_for_scheme(d->url.scheme);
        if (!drv) {
            char hint[200];
            fb_scheme_hint(hint, sizeof hint, d->url.scheme);
            err_at(c, da->url_m, "url: no driver for scheme '%s://'%s", d->url.scheme, hint);
            continue;
        }
        d->drv = drv;
        struct fb_err e = {0};
        if (drv->device_init(d, &keys[di], &e) < 0) {
            err_at(c, da->url_m, "%s", e.msg[0] ? e.msg : "device rejected by its driver");
            d->drv = NULL;
            free(keys[di]);
            keys[di] = NULL;
            continue;
        }
        da->init_ok = true;
        check_url_files(c, d, da);
        bool tags_ok = true;
        for (uint32_t i = 0; i < d->ntags; i++) {
            struct fb_tag *t = &gw->tags[d->first_tag + i];
            struct tag_aux *ta = &c->taux[d->first_tag + i];
            memset(&e, 0, sizeof e);
            if (drv->parse_address(d, t, &e) < 0) {
                if (t->index && i > 0 && !strcmp(gw->tags[d->first_tag + i - 1].addr_text, t->addr_text) &&
                    gw->tags[d->first_tag + i - 1].addr == NULL)
                    ; /* same array already reported */
                else
                    err_at(c, ta->addr_m, "%s", e.msg[0] ? e.msg : "bad address");
                tags_ok = false;
                continue;
            }
            if (t->type == FB_T_NONE) {
                err_at(c, ta->addr_m, "addr: the driver gave no type for '%s'; add type:", t->addr_text);
                tags_ok = false;
                continue;
            }
            bool numeric = t->type != FB_T_STRING;
            if (ta->needs_numeric && (!numeric || (t->type == FB_T_BOOL && t->proc.scaled))) {
                err_at(c, ta->numeric_m, "tag '%s' is of type %s: scale, range, deadband, max_rate and window need a numeric tag",
                       t->name, fb_type_name((enum fb_type)t->type));
                tags_ok = false;
            }
            t->proc.out_type = t->proc.scaled ? FB_T_FLOAT64 : t->type;
        }
        if (!tags_ok) continue;
        for (uint32_t g = 0; g < d->ngroups; g++) {
            memset(&e, 0, sizeof e);
            if (drv->plan && drv->plan(d, &d->groups[g], &e) < 0) {
                struct fb_tag *t0 = d->groups[g].ntags ? &gw->tags[d->groups[g].tags[0]] : NULL;
                err_at(c, t0 ? c->taux[t0->id].addr_m : da->url_m, "%s", e.msg[0] ? e.msg : "cannot plan reads");
            }
        }
    }
    /* connections: equal keys share one */
    gw->conns = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *gw->conns);
    if (!gw->conns) {
        err_at(c, (struct mark){0, 0}, "out of memory");
    } else {
        for (uint32_t di = 0; di < gw->ndevs; di++) {
            if (!keys[di]) continue;
            struct fb_device *d = &gw->devs[di];
            struct fb_conn *cn = NULL;
            for (uint32_t k = 0; k < gw->nconns; k++)
                if (!strcmp(gw->conns[k].key, keys[di])) cn = &gw->conns[k];
            if (cn && cn->drv != d->drv) {
                err_at(c, c->daux[di].url_m, "device '%s' uses connection %s of device '%s' with another driver",
                       d->name, keys[di], cn->devs[0]->name);
                continue;
            }
            if (!cn) {
                cn = &gw->conns[gw->nconns++];
                cn->key = keys[di];
                keys[di] = NULL;
                cn->drv = d->drv;
                pthread_mutex_init(&cn->mu, NULL);
                cond_init_mono(&cn->cv);
            }
            struct fb_device **nd = realloc(cn->devs, (cn->ndevs + 1) * sizeof *nd);
            if (!nd) continue;
            cn->devs = nd;
            cn->devs[cn->ndevs++] = d;
            d->conn = cn;
        }
    }
    for (uint32_t di = 0; di < gw->ndevs; di++) free(keys[di]);
    free(keys);
}

/* ------------------------------------------------------------ load */

static void yaml_error(struct ctx *c, yaml_parser_t *p)
{
    struct mark m = {(int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1};
    if (p->context)
        err_at(c, m, "YAML syntax error: %s %s (line %d)", p->problem ? p->problem : "?", p->context,
               (int)p->context_mark.line + 1);
    else
        err_at(c, m, "YAML syntax error: %s", p->problem ? p->problem : "?");
}

/* ------------------------------------------------------------ hostile YAML */
/* One pass over libyaml's event stream, before the document is built:
 * nesting deeper than MAX_YAML_DEPTH (a 100,000-deep list made libyaml's
 * scanner quadratic and the walker deep), more than MAX_ALIASES alias uses,
 * aliases whose expansion adds more than MAX_ALIAS_NODES nodes (the
 * "billion laughs" kind: each anchor's expanded size is known when it
 * closes, so this costs O(events)), and an alias inside the node it names
 * (a cycle).  Reports the first problem at its mark; false then. */
struct anchor_ent {
    char *name;
    uint64_t size; /* expanded nodes, saturated */
    bool done;     /* the anchored node is complete */
};
struct anchors {
    struct anchor_ent *e;
    size_t cap, n;
};

static size_t anchor_hash(const char *s)
{
    size_t h = 1469598103934665603u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static struct anchor_ent *anchor_find(struct anchors *a, const char *name, bool add)
{
    if (add && (a->n + 1) * 2 > a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        struct anchor_ent *ne = calloc(nc, sizeof *ne);
        if (!ne) return NULL;
        for (size_t i = 0; i < a->cap; i++)
            if (a->e[i].name) {
                size_t j = anchor_hash(a->e[i].name) & (nc - 1);
                while (ne[j].name) j = (j + 1) & (nc - 1);
                ne[j] = a->e[i];
            }
        free(a->e);
        a->e = ne;
        a->cap = nc;
    }
    if (!a->cap) return NULL;
    size_t j = anchor_hash(name) & (a->cap - 1);
    while (a->e[j].name) {
        if (!strcmp(a->e[j].name, name)) return &a->e[j];
        j = (j + 1) & (a->cap - 1);
    }
    if (!add || !(a->e[j].name = strdup(name))) return NULL;
    a->n++;
    return &a->e[j];
}

static bool yaml_precheck(struct ctx *c, FILE *f)
{
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    struct anchors an = {0};
    struct {
        struct anchor_ent *anchor;
        uint64_t size;
    } st[MAX_YAML_DEPTH];
    int depth = 0;
    uint64_t aliases = 0, extra = 0;
    bool ok = true, done = false;
    while (ok && !done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) break; /* the loader reports syntax errors */
        struct mark m = {(int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1};
        uint64_t add = 0;
        const yaml_char_t *anchor = NULL;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT: done = true; break;
        case YAML_DOCUMENT_START_EVENT: depth = 0; break;
        case YAML_SCALAR_EVENT:
            add = 1;
            if (ev.data.scalar.anchor) {
                struct anchor_ent *a = anchor_find(&an, (const char *)ev.data.scalar.anchor, true);
                if (a) a->size = 1, a->done = true;
            }
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            anchor = ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor
                                                         : ev.data.mapping_start.anchor;
            if (depth == MAX_YAML_DEPTH) {
                err_at(c, m, "lists and mappings nested deeper than %d levels", MAX_YAML_DEPTH);
                ok = false;
                break;
            }
            st[depth].anchor = anchor ? anchor_find(&an, (const char *)anchor, true) : NULL;
            if (st[depth].anchor) st[depth].anchor->done = false;
            st[depth++].size = 1;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth > 0) {
                depth--;
                if (st[depth].anchor) st[depth].anchor->size = st[depth].size, st[depth].anchor->done = true;
                add = st[depth].size;
            }
            break;
        case YAML_ALIAS_EVENT: {
            const char *name = (const char *)ev.data.alias.anchor;
            struct anchor_ent *a = anchor_find(&an, name, false);
            if (++aliases > MAX_ALIASES) {
                err_at(c, m, "more than %d aliases (*name) in one file", MAX_ALIASES);
                ok = false;
            } else if (a && !a->done) {
                err_at(c, m, "alias *%s refers to the node that contains it", name);
                ok = false;
            } else if (a) {
                add = a->size;
                extra += a->size;
                if (extra > MAX_ALIAS_NODES) {
                    err_at(c, m, "aliases expand to more than %d nodes (at *%s)", MAX_ALIAS_NODES, name);
                    ok = false;
                }
            }
            break;
        }
        default: break;
        }
        if (add && depth > 0) {
            st[depth - 1].size += add;
            if (st[depth - 1].size > MAX_ALIAS_NODES + 1u) st[depth - 1].size = MAX_ALIAS_NODES + 1u;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    for (size_t i = 0; i < an.cap; i++) free(an.e[i].name);
    free(an.e);
    return ok;
}

int fb_config_load(const char *path, const struct fb_config_opts *o, struct fb_gateway **out)
{
    static const struct fb_config_opts defaults = {false, NULL};
    struct ctx c = {0};
    c.file = path;
    c.o = o ? o : &defaults;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_at(&c, (struct mark){0, 0}, "cannot open: %s", strerror(errno));
        diag_flush(&c);
        return FB_EINVAL;
    }
    const char *slash = strrchr(path, '/');
    c.dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");

    if (!yaml_precheck(&c, f) || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        free(c.dir);
        diag_flush(&c);
        return FB_EINVAL;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    bool loaded = yaml_parser_load(&p, &c.doc);
    if (!loaded) {
        yaml_error(&c, &p);
        yaml_parser_delete(&p);
        fclose(f);
        free(c.dir);
        diag_flush(&c);
        return FB_EINVAL;
    }
    /* only one document */
    yaml_document_t extra;
    if (yaml_parser_load(&p, &extra)) {
        yaml_node_t *r = yaml_document_get_root_node(&extra);
        if (r) err_at(&c, mk(r), "only one YAML document is allowed per config file");
        yaml_document_delete(&extra);
    }
    yaml_parser_delete(&p);
    fclose(f);

    struct fb_gateway *gw = calloc(1, sizeof *gw);
    c.gw = gw;
    if (!gw) {
        yaml_document_delete(&c.doc);
        free(c.dir);
        return FB_ENOMEM;
    }
    gw->cfg_path = strdup(path);
    yaml_node_t *root = yaml_document_get_root_node(&c.doc);
    struct map top = {0};
    if (!root || is_null(root)) {
        err_at(&c, (struct mark){1, 1}, "the config file is empty");
    } else if (map_load(&c, root, "the config file", &top)) {
        map_check(&c, &top, k_top, "the config file");
        load_gateway(&c, &top);
        yaml_node_t *n;
        if ((n = map_get(&top, "mqtt")))
            load_mqtt(&c, n);
        if ((n = map_get(&top, "sparkplug")))
            load_sparkplug(&c, n);
        if (!map_get(&top, "mqtt") && !map_get(&top, "sparkplug"))
            note_at(&c, (struct mark){0, 0}, "no mqtt: section: values are polled but not published anywhere");
        if ((n = map_get(&top, "devices")))
            load_devices(&c, n);
        else
            note_at(&c, (struct mark){0, 0}, "no devices: nothing to poll");
        /* the array grew by doubling; give back the slack before drivers keep pointers */
        if (gw->ntags && gw->ntags < c.captags) {
            struct fb_tag *t = realloc(gw->tags, gw->ntags * sizeof *t);
            if (t) gw->tags = t;
        }
        build_drivers(&c);
    }
    map_free(&top);
    yaml_document_delete(&c.doc);
    free(c.merge_seen);
    free(c.dir);
    free(c.daux);
    free(c.taux);
    int nerr = c.nerr;
    diag_flush(&c);
    if (nerr > 0) {
        fb_gateway_free(gw);
        return FB_EINVAL;
    }
    *out = gw;
    return 0;
}

/* ------------------------------------------------------------ free, look-ups */

void fb_gateway_free(struct fb_gateway *gw)
{
    if (!gw) return;
    for (uint32_t di = 0; di < gw->ndevs; di++) {
        struct fb_device *d = &gw->devs[di];
        for (uint32_t g = 0; g < d->ngroups; g++) {
            if (d->groups[g].plan && d->drv && d->drv->plan_free) d->drv->plan_free(&d->groups[g]);
            free(d->groups[g].tags);
        }
        free(d->groups);
        for (uint32_t i = 0; i < d->ntags && d->first_tag + i < gw->ntags; i++) {
            struct fb_tag *t = &gw->tags[d->first_tag + i];
            if (t->addr && d->drv && d->drv->free_address) d->drv->free_address(t);
        }
        if (d->drv && d->drv->device_free) d->drv->device_free(d);
        free(d->name);
        free(d->url_text);
        fb_url_free(&d->url);
        free(d->area);
        free(d->line);
    }
    for (uint32_t i = 0; i < gw->ntags; i++) {
        struct fb_tag *t = &gw->tags[i];
        free(t->name);
        free(t->path);
        free(t->addr_text);
        free(t->order);
        free(t->unit);
    }
    for (uint32_t k = 0; k < gw->nconns; k++) {
        free(gw->conns[k].key);
        free(gw->conns[k].devs);
        pthread_mutex_destroy(&gw->conns[k].mu);
        pthread_cond_destroy(&gw->conns[k].cv);
    }
    for (uint32_t s = 0; s < gw->nsinks; s++) {
        struct fb_sink_inst *si = &gw->sinks[s];
        if (si->sink == &fb_sink_mqtt) fb_mqtt_cfg_free(si->cfg);
        if (si->sink == &fb_sink_sparkplug) fb_spb_cfg_free(si->cfg);
        fb_buffer_cfg_free(si->buffer);
        free(si->name);
        pthread_mutex_destroy(&si->mu);
        pthread_cond_destroy(&si->cv);
    }
    free(gw->sinks);
    free(gw->conns);
    free(gw->devs);
    free(gw->tags);
    free(gw->id);
    free(gw->site);
    free(gw->cfg_path);
    free(gw->metrics_listen);
    fb_buffer_cfg_free(gw->buffer);
    free(gw);
}

struct fb_device *fb_gw_device(struct fb_gateway *gw, const char *name)
{
    if (!gw || !name) return NULL;
    for (uint32_t i = 0; i < gw->ndevs; i++)
        if (!strcmp(gw->devs[i].name, name)) return &gw->devs[i];
    return NULL;
}

struct fb_tag *fb_gw_tag(struct fb_gateway *gw, const struct fb_device *d, const char *name)
{
    if (!gw || !d || !name) return NULL;
    for (uint32_t i = 0; i < d->ntags; i++)
        if (!strcmp(gw->tags[d->first_tag + i].name, name)) return &gw->tags[d->first_tag + i];
    return NULL;
}

/* ------------------------------------------------------------ summary */

static void fmt_dur(char *buf, size_t len, int64_t ns)
{
    if (ns == 0) snprintf(buf, len, "0");
    else if (ns % 86400000000000LL == 0) snprintf(buf, len, "%lldd", (long long)(ns / 86400000000000LL));
    else if (ns % 3600000000000LL == 0) snprintf(buf, len, "%lldh", (long long)(ns / 3600000000000LL));
    else if (ns % 60000000000LL == 0) snprintf(buf, len, "%lldm", (long long)(ns / 60000000000LL));
    else if (ns % 1000000000LL == 0) snprintf(buf, len, "%llds", (long long)(ns / 1000000000LL));
    else if (ns % 1000000LL == 0) snprintf(buf, len, "%lldms", (long long)(ns / 1000000LL));
    else if (ns % 1000LL == 0) snprintf(buf, len, "%lldus", (long long)(ns / 1000LL));
    else snprintf(buf, len, "%lldns", (long long)ns);
}

void fb_config_summary(const struct fb_gateway *gw, FILE *f)
{
    uint32_t ngroups = 0;
    for (uint32_t i = 0; i < gw->ndevs; i++) ngroups += gw->devs[i].ngroups;
    static const char *const lv[] = {"error", "warn", "info", "debug"};
    char d1[32];
    fmt_dur(d1, sizeof d1, gw->status_interval_ns);
    fprintf(f, "gateway %s (site %s), log %s/%s, status every %s, metrics %s\n", gw->id, gw->site,
            gw->log_level >= 0 && gw->log_level < 4 ? lv[gw->log_level] : "?",
            gw->log_format == FB_LOG_JSON ? "json" : "text", d1,
            gw->metrics_listen ? gw->metrics_listen : "off");
    fprintf(f, "%u device%s, %u connection%s, %u tag%s, %u poll group%s, %u sink%s\n", gw->ndevs,
            gw->ndevs == 1 ? "" : "s", gw->nconns, gw->nconns == 1 ? "" : "s", gw->ntags,
            gw->ntags == 1 ? "" : "s", ngroups, ngroups == 1 ? "" : "s", gw->nsinks,
            gw->nsinks == 1 ? "" : "s");
    for (uint32_t i = 0; i < gw->ndevs; i++) {
        const struct fb_device *d = &gw->devs[i];
        fprintf(f, "  device %s  %s  area %s line %s  %u tag%s  [%s]  groups:", d->name, d->url_text,
                d->area, d->line, d->ntags, d->ntags == 1 ? "" : "s",
                d->conn ? d->conn->key : "-");
        for (uint32_t g = 0; g < d->ngroups; g++) {
            fmt_dur(d1, sizeof d1, d->groups[g].period_ns);
            fprintf(f, " %s(%u)", d1, d->groups[g].ntags);
        }
        fputc('\n', f);
    }
    for (uint32_t s = 0; s < gw->nsinks; s++) {
        const struct fb_sink_inst *si = &gw->sinks[s];
        if (si->sink == &fb_sink_mqtt && si->cfg) {
            const struct fb_mqtt_cfg *q = si->cfg;
            fprintf(f, "  sink mqtt  %s  MQTT %s%s  qos telemetry %d status %d command %d  topic %s\n",
                    q->url, q->version == 5 ? "5" : "3.1.1", q->tls ? " TLS" : "", q->qos_telemetry,
                    q->qos_status, q->qos_command, q->topic);
        } else if (si->sink == &fb_sink_sparkplug && si->cfg) {
            const struct fb_spb_cfg *q = si->cfg;
            fprintf(f, "  sink sparkplug  group %s edge node %s  %s%s  MQTT %s  aliases %s  primary host %s  reboot %s\n",
                    q->group ? q->group : "?", q->edge_node ? q->edge_node : gw->id,
                    q->nservers ? q->servers[0].url : "?", q->nservers > 1 ? " (+ more servers)" : "",
                    q->version == 3 ? "3.1.1" : "5", q->aliases ? "on" : "off",
                    q->primary_host ? q->primary_host : "none", q->reboot ? "allowed" : "refused");
        } else {
            fprintf(f, "  sink %s\n", si->name ? si->name : "?");
        }
        if (si->buffer) {
            const struct fb_buffer_cfg *b = si->buffer;
            static const char *const sy[] = {"batch", "interval", "os"};
            fmt_dur(d1, sizeof d1, b->max_age_ns);
            fprintf(f, "    buffer %s/%s  max %.1f MiB  max age %s  sync %s  when full %s  drain %u msg/s%s\n",
                    b->path, si->name, b->max_bytes / 1048576.0, b->max_age_ns ? d1 : "unlimited",
                    sy[b->sync % 3], b->full_policy ? "block" : "drop oldest", b->drain_rate,
                    b->drain_rate ? "" : " (unlimited)");
        } else {
            fprintf(f, "    no buffer: messages that cannot be delivered are dropped and counted\n");
        }
    }
}
