/* config_dev.c — the devices: section of the configuration: devices, their
 * tags, `for:` repetition, and the binding of every device to its driver.
 *
 *   pass A  YAML → devices and tags (dense arrays, tags of a device
 *           contiguous), `for:` repetition, typed values (durations,
 *           numbers, booleans) through the config reader;
 *   pass B  drivers: device_init (→ connection keys), parse_address for
 *           every tag, poll groups (one per distinct period) and their read
 *           plans, connections shared by devices with equal keys.
 *
 * Errors never stop the walk (see cfg.h).  Ownership: everything hangs off
 * the gateway; driver hooks are only called for what the driver created
 * (device_free when device_init succeeded, free_address when tag->addr is
 * set, plan_free when g->plan is set), so fb_gateway_free can release a
 * half-built model.
 */
#include "core/config_dev.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/cfg.h"
#include "core/config_tmpl.h"
#include "core/driver.h"
#include "core/router.h"
#include "core/url.h"
#include "edge/edge_cfg.h"
#include "proc/proc.h"
#include "vib/vib_cfg.h"

/* the defaults; struct fb_config_opts.max_expand lowers all three (ctx) */
#define MAX_DEVICES 100000u
#define MAX_TAGS 2000000u
#define MAX_COUNT 65536
#define MAX_LOOP 100000

struct dev_aux {
    struct fb_cfg_mark url_m;
    struct fb_cfg_mark name_m; /* where its name: was given (named) */
    bool named;
    bool init_ok;
};

struct tag_aux {
    int64_t poll_ns;
    struct fb_cfg_mark name_m;
    uint32_t entry; /* which tag entry made it (array elements share one) */
    struct fb_cfg_mark addr_m;
    struct fb_cfg_mark numeric_m; /* where a numeric-only setting was given */
    bool needs_numeric;
    bool bad_wave; /* vibration: given but refused (reported): the address means nothing without it */
    int line;      /* where the tag was declared, for messages */
};

/* Texts (order, unit) and processing settings that many tags share are kept
 * once, in the gateway's arena: an open-addressing set of what is there. */
struct intern {
    const void **p;
    uint64_t *h;
    size_t cap, n;
    const void *last; /* the last one returned: the next tag of a for: loop usually wants it again */
    size_t last_n;
};

struct ctx {
    struct fb_cfg *r;
    struct fb_gateway *gw;
    size_t capdevs, captags;
    uint32_t entries;
    struct dev_aux *daux;
    struct tag_aux *taux;
    struct intern strs, procs;
    uint64_t tags_expected;   /* counted before building: the tag array is made once, at its size */
    uint64_t tags_made;       /* the tags of devices made by other sections (build_made), counted in advance too */
    struct fb_edge_build *eb; /* computed tags and alarms (src/edge/edge_cfg.c) */
    /* MAX_LOOP, MAX_DEVICES and MAX_TAGS, or lower (fb_cfg_max_expand: the fuzz harness) */
    int max_loop;
    uint32_t max_devs, max_tags;
};

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* The arena's copy of p[0..n) (aligned to align), made once per distinct content. */
static const void *intern(struct fb_arena *a, struct intern *t, const void *p, size_t n, size_t align)
{
    if (t->last && t->last_n == n && !memcmp(t->last, p, n)) return t->last;
    if (t->n * 2 >= t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        const void **np = calloc(cap, sizeof *np);
        uint64_t *nh = calloc(cap, sizeof *nh);
        if (!np || !nh) {
            free(np);
            free(nh);
            return NULL;
        }
        for (size_t i = 0; i < t->cap; i++)
            if (t->p[i]) {
                size_t k = t->h[i] & (cap - 1);
                while (np[k]) k = (k + 1) & (cap - 1);
                np[k] = t->p[i];
                nh[k] = t->h[i];
            }
        free(t->p);
        free(t->h);
        t->p = np;
        t->h = nh;
        t->cap = cap;
    }
    uint64_t h = hash_bytes(p, n);
    size_t k = h & (t->cap - 1);
    for (; t->p[k]; k = (k + 1) & (t->cap - 1))
        if (t->h[k] == h && !memcmp(t->p[k], p, n)) {
            t->last = t->p[k];
            t->last_n = n;
            return t->p[k];
        }
    void *c = fb_arena_alloc(a, n, align);
    if (!c) return NULL;
    memcpy(c, p, n);
    t->p[k] = c;
    t->h[k] = h;
    t->n++;
    t->last = c;
    t->last_n = n;
    return c;
}

static char *intern_str(struct ctx *c, const char *s)
{
    return s ? (char *)intern(&c->gw->arena, &c->strs, s, strlen(s) + 1, 1) : NULL;
}

/* Shared settings: no processing, the given unit and who may write (for
 * tags that have no processing of their own; NULL when out of memory). */
static const struct fb_tag_proc *plain_proc(struct ctx *c, const char *unit, uint16_t write_roles)
{
    struct fb_tag_proc p;
    memcpy(&p, &fb_tag_proc_none, sizeof p); /* its padding too (zero): interned by their bytes */
    p.unit = intern_str(c, unit);
    p.write_roles = write_roles;
    if (unit && !p.unit) return NULL;
    return intern(&c->gw->arena, &c->procs, &p, sizeof p, _Alignof(struct fb_tag_proc));
}

static void intern_free(struct intern *t)
{
    free(t->p);
    free(t->h);
    memset(t, 0, sizeof *t);
}

static const char *const k_device[] = {"for",     "name",  "url",     "area", "line", "poll",
                                       "timeout", "delay", "options", "tags", NULL};
static const char *const k_tag[] = {
    "for",      "name",      "addr",   "type",        "order",          "count",         "unit",
    "access",   "poll",      "scale",  "range",       "max_rate",       "spike_accept",  "stuck",
    "deadband", "heartbeat", "window", "write_roles", FB_EDGE_TAG_KEYS, FB_VIB_TAG_KEYS, NULL};
static const char *const k_scale[] = {"raw", "eng", "factor", "offset", NULL};

/* ------------------------------------------------------------ sender lists */
uint16_t fb_config_acl(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what,
                       struct fb_gateway *gw)
{
    if (fb_cfg_kind(n) != FB_CFG_LIST) {
        fb_cfg_error(r, n, "%s must be a list of command senders, e.g. [mqtt, sparkplug, \"http:operator\"], got %s",
                     what, fb_cfg_kind_name(n));
        return 0;
    }
    size_t len = fb_cfg_list_len(n);
    if (len > 64) {
        fb_cfg_error(r, n, "%s: at most 64 entries", what);
        return 0;
    }
    char **pat = calloc(len ? len : 1, sizeof *pat);
    if (!pat) return 0;
    bool ok = true;
    for (size_t i = 0; i < len; i++) {
        struct fb_cfg_node *e = fb_cfg_list_at(r, n, i);
        char why[200];
        pat[i] = fb_cfg_str(r, vars, e, what);
        if (!pat[i]) {
            ok = false;
        } else if (fb_cmd_pattern_check(pat[i], why, sizeof why) < 0) {
            fb_cfg_error(r, e, "%s: %s", what, why);
            ok = false;
        }
    }
    if (!ok) {
        for (size_t i = 0; i < len; i++) free(pat[i]);
        free(pat);
        return 0;
    }
    uint16_t idx = fb_gw_acl_add(gw, pat, (uint32_t)len);
    if (!idx) fb_cfg_error(r, n, "%s: too many different sender lists (or out of memory)", what);
    return idx;
}

/* ------------------------------------------------------------ for: loops */

struct loop {
    int nvars;
    struct fb_tvar *vars; /* current values */
    char **names;
    char ***vals; /* vals[v][k] text */
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
static bool loop_parse(struct ctx *c, const struct fb_tvars *outer, struct fb_cfg_node *n, struct loop *l)
{
    memset(l, 0, sizeof *l);
    struct fb_cfg_map m = {0};
    if (!fb_cfg_map_load(c->r, n, "for", &m)) return false;
    if (m.n == 0) {
        fb_cfg_error(c->r, n, "for: needs at least one loop variable, e.g. for: {i: \"1..10\"}");
        fb_cfg_map_free(&m);
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
            fb_cfg_error(c->r, m.kv[v].k, "loop variable '%s' must be a name (letters, digits, _)", name);
            ok = false;
            break;
        }
        l->names[v] = strdup(name);
        struct fb_cfg_node *vn = m.kv[v].v;
        if (fb_cfg_kind(vn) == FB_CFG_LIST) {
            for (size_t k = 0; ok && k < fb_cfg_list_len(vn); k++)
                ok = loop_add_val(l, v, fb_cfg_str(c->r, outer, fb_cfg_list_at(c->r, vn, k), "for value"));
        } else if (fb_cfg_kind(vn) == FB_CFG_SCALAR) {
            char *s = fb_cfg_str(c->r, outer, vn, "for range");
            int64_t lo, hi;
            if (!s) {
                ok = false;
            } else if (fb_tmpl_range(s, &lo, &hi) < 0) {
                fb_cfg_error(c->r, vn, "loop variable '%s': expected a list [1, 2, 3] or a range \"1..50\", got '%s'",
                             name, s);
                ok = false;
            } else if ((hi > lo ? hi - lo : lo - hi) >= c->max_loop) {
                fb_cfg_error(c->r, vn, "loop variable '%s': range '%s' is too long (max %d values)", name, s,
                             c->max_loop);
                ok = false;
            } else if (total * ((hi > lo ? hi - lo : lo - hi) + 1) > c->max_loop) {
                /* refused before its values are made (fuzz_config: two long ranges made 200000 strings first) */
                fb_cfg_error(c->r, n, "for: expands to more than %d entries", c->max_loop);
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
            fb_cfg_error(c->r, vn, "loop variable '%s': expected a list or a range string, got %s", name,
                         fb_cfg_kind_name(vn));
            ok = false;
        }
        if (ok && l->nvals[v] == 0) {
            fb_cfg_error(c->r, vn, "loop variable '%s' has no values", name);
            ok = false;
        }
        if (ok) total *= l->nvals[v];
        if (ok && total > c->max_loop) {
            fb_cfg_error(c->r, n, "for: expands to more than %d entries", c->max_loop);
            ok = false;
        }
    }
    fb_cfg_map_free(&m);
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

static char *str_quiet(const struct fb_tvars *vars, struct fb_cfg_node *n)
{
    const char *text = fb_cfg_scalar(n);
    if (!text) return NULL;
    struct fb_err e = {0};
    char *env = NULL, *out = NULL;
    if (fb_env_expand(text, &env, &e) < 0) return NULL;
    if (!vars) return env;
    if (fb_tmpl_subst(vars, env, &out, &e) < 0) out = NULL;
    free(env);
    return out;
}

/* The number of entries a `for:` mapping makes (the product of its value counts). */
static uint64_t for_count(struct ctx *c, const struct fb_tvars *vars, struct fb_cfg_node *forn)
{
    if (fb_cfg_kind(forn) != FB_CFG_MAP) return 1;
    struct fb_cfg_map fm = {0};
    if (!fb_cfg_map_load(c->r, forn, "for", &fm)) return 1;
    uint64_t total = 1;
    for (int i = 0; i < fm.n; i++) {
        struct fb_cfg_node *v = fm.kv[i].v;
        uint64_t k = 1;
        if (fb_cfg_kind(v) == FB_CFG_LIST) {
            k = fb_cfg_list_len(v);
        } else if (fb_cfg_kind(v) == FB_CFG_SCALAR) {
            char *t = str_quiet(vars, v);
            int64_t lo, hi;
            if (t && fb_tmpl_range(t, &lo, &hi) == 0)
                k = hi >= lo ? (uint64_t)hi - (uint64_t)lo + 1 : (uint64_t)lo - (uint64_t)hi + 1;
            free(t);
        }
        total = sat_mul(total, k ? k : 1);
    }
    fb_cfg_map_free(&fm);
    return total;
}

/* Tags that a device's `tags:` list makes with these loop variables. */
static uint64_t tags_count(struct ctx *c, const struct fb_tvars *vars, struct fb_cfg_node *tags)
{
    if (fb_cfg_kind(tags) != FB_CFG_LIST) return 0;
    uint64_t total = 0;
    for (size_t it = 0; it < fb_cfg_list_len(tags); it++) {
        struct fb_cfg_node *tn = fb_cfg_list_at(c->r, tags, it);
        struct fb_cfg_map m = {0};
        if (fb_cfg_kind(tn) != FB_CFG_MAP || !fb_cfg_map_load(c->r, tn, "tag", &m)) {
            total = sat_add(total, 1);
            continue;
        }
        struct fb_cfg_node *forn = fb_cfg_get(&m, "for"), *cn = fb_cfg_get(&m, "count");
        uint64_t n = for_count(c, vars, forn);
        if (cn) {
            struct loop l;
            uint64_t elems = 1;
            /* count: may use the tag's own loop variables: take the first binding */
            if (fb_cfg_kind(forn) == FB_CFG_MAP && n < UINT64_MAX && loop_parse(c, vars, forn, &l)) {
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
        fb_cfg_map_free(&m);
        total = sat_add(total, n);
    }
    return total;
}

/* ------------------------------------------------------------ tags */

static struct fb_tag *push_tag(struct ctx *c, struct tag_aux **aux)
{
    struct fb_gateway *gw = c->gw;
    if (gw->ntags >= c->max_tags) return NULL;
    if (gw->ntags == c->captags) {
        size_t n = c->captags ? c->captags * 2 : 64;
        struct fb_tag *t = realloc(gw->tags, n * sizeof *t);
        if (!t) return NULL;
        gw->tags = t;
        struct tag_aux *a = realloc(c->taux, n * sizeof *a);
        if (!a) return NULL;
        c->taux = a;
        const char **at = realloc(gw->atext, n * sizeof *at);
        if (!at) return NULL;
        gw->atext = at;
        c->captags = n;
    }
    struct fb_tag *t = &gw->tags[gw->ntags];
    memset(t, 0, sizeof *t);
    *aux = &c->taux[gw->ntags];
    memset(*aux, 0, sizeof **aux);
    gw->atext[gw->ntags] = NULL;
    t->id = gw->ntags++;
    return t;
}

static bool parse_access(const char *s, uint8_t *acc)
{
    if (!strcmp(s, "r") || !strcmp(s, "read") || !strcmp(s, "ro"))
        *acc = FB_ACC_READ;
    else if (!strcmp(s, "w") || !strcmp(s, "write") || !strcmp(s, "wo"))
        *acc = FB_ACC_WRITE;
    else if (!strcmp(s, "rw") || !strcmp(s, "read-write") || !strcmp(s, "readwrite") || !strcmp(s, "read_write"))
        *acc = FB_ACC_RW;
    else
        return false;
    return true;
}

/* A two-number list [lo, hi]; a null end is open (only when allow_open). */
static bool pair_of(struct ctx *c, const struct fb_tvars *vars, struct fb_cfg_node *n, const char *what,
                    bool allow_open, double v[2], bool has[2])
{
    if (fb_cfg_kind(n) != FB_CFG_LIST || fb_cfg_list_len(n) != 2) {
        fb_cfg_error(c->r, n, "%s must be a list of two numbers [low, high]", what);
        return false;
    }
    bool ok = true;
    for (int i = 0; i < 2; i++) {
        struct fb_cfg_node *x = fb_cfg_list_at(c->r, n, (size_t)i);
        has[i] = false;
        if (allow_open && fb_cfg_is_null(x)) continue;
        if (fb_cfg_num(c->r, vars, x, what, &v[i]))
            has[i] = true;
        else
            ok = false;
    }
    return ok;
}

/* The processing settings shared by all elements of a tag entry. */
static void tag_proc(struct ctx *c, const struct fb_tvars *vars, const struct fb_cfg_map *m, struct fb_tag_proc *p,
                     uint8_t access, struct tag_aux *aux)
{
    struct fb_cfg_node *n;
    if ((n = fb_cfg_get(m, "scale"))) {
        struct fb_cfg_map s = {0};
        aux->needs_numeric = true;
        aux->numeric_m = fb_cfg_mark(fb_cfg_key(m, "scale"));
        if (fb_cfg_map_load(c->r, n, "scale", &s)) {
            fb_cfg_map_check(c->r, &s, k_scale, "scale", false);
            struct fb_cfg_node *raw = fb_cfg_get(&s, "raw"), *eng = fb_cfg_get(&s, "eng");
            struct fb_cfg_node *fac = fb_cfg_get(&s, "factor"), *off = fb_cfg_get(&s, "offset");
            if ((raw || eng) && (fac || off)) {
                fb_cfg_error(c->r, n, "scale: give either raw/eng or factor/offset, not both");
            } else if (raw || eng) {
                double r[2], e[2];
                bool hr[2], he[2];
                if (!raw || !eng) {
                    fb_cfg_error(c->r, n, "scale: raw and eng go together, e.g. {raw: [0, 27648], eng: [0, 100]}");
                } else if (pair_of(c, vars, raw, "scale.raw", false, r, hr) &&
                           pair_of(c, vars, eng, "scale.eng", false, e, he)) {
                    if (r[0] == r[1])
                        fb_cfg_error(c->r, raw,
                                     "scale.raw: low and high are equal (%g); the scale would divide by zero", r[0]);
                    else if (e[0] == e[1])
                        fb_cfg_error(c->r, eng,
                                     "scale.eng: low and high are equal (%g); writes could not be scaled back", e[0]);
                    else
                        fb_scale_set_points(p, r[0], r[1], e[0], e[1]);
                }
            } else {
                double f = 1, o = 0;
                bool ok = true;
                if (fac) ok &= fb_cfg_num(c->r, vars, fac, "scale.factor", &f);
                if (off) ok &= fb_cfg_num(c->r, vars, off, "scale.offset", &o);
                if (ok && f == 0)
                    fb_cfg_error(c->r, fac, "scale.factor must not be 0");
                else if (ok && (fac || off))
                    fb_scale_set_factor(p, f, o);
                else if (ok)
                    fb_cfg_error(c->r, n, "scale: expected {raw: [..], eng: [..]} or {factor: F, offset: O}");
            }
            fb_cfg_map_free(&s);
        }
    }
    if ((n = fb_cfg_get(m, "range"))) {
        double v[2] = {0, 0};
        bool has[2];
        aux->needs_numeric = true;
        aux->numeric_m = fb_cfg_mark(fb_cfg_key(m, "range"));
        if (pair_of(c, vars, n, "range", true, v, has)) {
            p->has_min = has[0];
            p->has_max = has[1];
            p->min = v[0];
            p->max = v[1];
            if (has[0] && has[1] && v[0] > v[1])
                fb_cfg_error(c->r, n, "range: min %g is greater than max %g%s", v[0], v[1],
                             access & FB_ACC_WRITE ? " (no value could be written)" : "");
        }
    }
    if ((n = fb_cfg_get(m, "max_rate"))) {
        aux->needs_numeric = true;
        aux->numeric_m = fb_cfg_mark(fb_cfg_key(m, "max_rate"));
        if (fb_cfg_num(c->r, vars, n, "max_rate", &p->max_rate) && p->max_rate <= 0)
            fb_cfg_error(c->r, n, "max_rate must be greater than 0 (change per second)");
    }
    p->spike_accept = 3; /* a real step passes after 3 samples that agree (docs/configuration.md) */
    if ((n = fb_cfg_get(m, "spike_accept"))) {
        long long v;
        if (fb_cfg_int(c->r, vars, n, "spike_accept", 0, 1000000, &v)) p->spike_accept = (uint32_t)v;
        if (!fb_cfg_get(m, "max_rate")) fb_cfg_note(c->r, n, "spike_accept has no effect without max_rate");
    }
    if ((n = fb_cfg_get(m, "stuck"))) fb_cfg_dur(c->r, vars, n, "stuck", true, &p->stuck_ns);
    if ((n = fb_cfg_get(m, "deadband"))) {
        char *s = fb_cfg_str(c->r, vars, n, "deadband");
        aux->needs_numeric = true;
        aux->numeric_m = fb_cfg_mark(fb_cfg_key(m, "deadband"));
        if (s) {
            size_t len = strlen(s);
            bool pct = len > 0 && s[len - 1] == '%';
            if (pct) s[len - 1] = 0;
            char *end;
            double d = strtod(s, &end);
            if (end == s || *end || !(d >= 0) || d - d != 0)
                fb_cfg_error(c->r, n, "deadband: expected a number >= 0 or a percentage like \"2%%\", got '%s%s'", s,
                             pct ? "%" : "");
            else if (pct)
                p->db_pct = d;
            else
                p->db_abs = d;
            free(s);
        }
    }
    if ((n = fb_cfg_get(m, "heartbeat"))) fb_cfg_dur(c->r, vars, n, "heartbeat", true, &p->heartbeat_ns);
    if ((n = fb_cfg_get(m, "window"))) {
        aux->needs_numeric = true;
        aux->numeric_m = fb_cfg_mark(fb_cfg_key(m, "window"));
        fb_cfg_dur(c->r, vars, n, "window", true, &p->window_ns);
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

static void vib_tag(struct ctx *c, const struct fb_tvars *vars, const struct fb_cfg_map *m, struct fb_cfg_node *tn,
                    uint32_t id, int src, long long count);

static void build_tag(struct ctx *c, uint32_t di, int64_t dev_poll, struct fb_cfg_node *tn, const struct fb_tvars *vars)
{
    struct fb_cfg_map m = {0};
    if (!fb_cfg_map_load(c->r, tn, "tag", &m)) return;
    fb_cfg_map_check(c->r, &m, k_tag, "tag", false);
    char *name = NULL, *addr = NULL, *order = NULL, *unit = NULL;
    uint8_t type = FB_T_NONE, access = FB_ACC_READ;
    uint32_t str_len = 0;
    long long count = 0;
    int64_t poll = dev_poll;
    struct fb_tag_proc proc;
    memset(&proc, 0, sizeof proc); /* padding too: settings are interned by their bytes */
    struct tag_aux aux = {0};
    struct fb_cfg_node *n, *namen = fb_cfg_get(&m, "name"), *addrn = fb_cfg_get(&m, "addr");
    bool ok = true;
    /* a computed tag (expr:, script:) has no address and is not polled */
    int src = fb_edge_cfg_tag_src(c->r, &m);

    if (!namen) {
        fb_cfg_error(c->r, tn, "tag: 'name' is required");
        ok = false;
    } else if ((name = fb_cfg_str(c->r, vars, namen, "tag name")) && !fb_cfg_name_ok(name)) {
        fb_cfg_error(c->r, namen, "tag name '%s' may only contain letters, digits, '_', '.' and '-'", name);
        ok = false;
    }
    if (src != FB_TAG_READ) {
        static const char *const not_computed[] = {"addr", "count", "poll", "scale", "order", NULL};
        for (const char *const *k = not_computed; *k; k++)
            if (fb_cfg_get(&m, *k))
                fb_cfg_error(c->r, fb_cfg_key(&m, *k),
                             "a computed tag (%s:) takes no %s:", src == FB_TAG_EXPR ? "expr" : "script", *k);
        type = FB_T_FLOAT64; /* unless type: says otherwise */
    } else if (!addrn) {
        fb_cfg_error(c->r, tn, "tag%s%s%s: 'addr' is required", name ? " '" : "", name ? name : "", name ? "'" : "");
        ok = false;
    } else {
        addr = fb_cfg_str(c->r, vars, addrn, "addr");
        aux.addr_m = fb_cfg_mark(addrn);
    }
    if ((n = fb_cfg_get(&m, "type"))) {
        char *s = fb_cfg_str(c->r, vars, n, "type");
        if (s) {
            enum fb_type t = fb_type_parse(s);
            if (t != FB_T_NONE) {
                type = (uint8_t)t;
            } else if (string_type(s, &str_len)) {
                type = FB_T_STRING;
                if (src == FB_TAG_EXPR) fb_cfg_error(c->r, n, "an expression computes numbers: type %s is not one", s);
            } else if (strncasecmp(s, "bcd", 3) && strncasecmp(s, "string", 6)) {
                fb_cfg_error(c->r, n,
                             "type: unknown type '%s' (bool, int8..int64, uint8..uint64, float32, "
                             "float64, string[N], bcd16, bcd32)",
                             s);
            } else if (strncasecmp(s, "string", 6) == 0) {
                fb_cfg_error(c->r, n, "type: '%s' needs a length in bytes: string[N] with N in 1..65535", s);
            } else if (src != FB_TAG_READ) {
                fb_cfg_error(c->r, n, "type: '%s' is a device type; a computed tag is bool, int8..uint64, float32/64%s",
                             s, src == FB_TAG_SCRIPT ? " or string[N]" : "");
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
    if ((n = fb_cfg_get(&m, "order"))) order = fb_cfg_str(c->r, vars, n, "order");
    if ((n = fb_cfg_get(&m, "unit"))) unit = fb_cfg_str(c->r, vars, n, "unit");
    if ((n = fb_cfg_get(&m, "count"))) fb_cfg_int(c->r, vars, n, "count", 1, MAX_COUNT, &count);
    if ((n = fb_cfg_get(&m, "access"))) {
        char *s = fb_cfg_str(c->r, vars, n, "access");
        if (s && !parse_access(s, &access)) fb_cfg_error(c->r, n, "access: expected r, w or rw, got '%s'", s);
        free(s);
    }
    if ((n = fb_cfg_get(&m, "poll"))) fb_cfg_dur(c->r, vars, n, "poll", true, &poll);
    uint16_t write_roles = 0;
    if ((n = fb_cfg_get(&m, "write_roles"))) {
        write_roles = fb_config_acl(c->r, vars, n, "write_roles", c->gw);
        if (!(access & FB_ACC_WRITE))
            fb_cfg_note(c->r, n, "write_roles on a read-only tag has no effect (access: rw makes it writable)");
    }
    tag_proc(c, vars, &m, &proc, access, &aux);
    if (src != FB_TAG_READ) {
        if (access & FB_ACC_WRITE) fb_cfg_error(c->r, fb_cfg_key(&m, "access"), "a computed tag is read-only");
        if (aux.needs_numeric && type == FB_T_STRING)
            fb_cfg_error(c->r, tn, "tag is a string: range, deadband, max_rate and window need a numeric tag");
        poll = 0; /* in no poll group */
    }
    aux.poll_ns = poll;
    aux.name_m = fb_cfg_mark(namen);
    aux.entry = c->entries++;

    const struct fb_tag_proc *shared = NULL;
    char *order_s = NULL, *unit_s = NULL;
    uint32_t first_new = c->gw->ntags;
    if (ok && name && (addr || src != FB_TAG_READ)) {
        order_s = intern_str(c, order);
        unit_s = intern_str(c, unit);
        proc.order = order_s;
        proc.unit = unit_s;
        proc.write_roles = write_roles;
        shared = intern(&c->gw->arena, &c->procs, &proc, sizeof proc, _Alignof(struct fb_tag_proc));
        if (!shared || (order && !order_s) || (unit && !unit_s)) {
            fb_cfg_error(c->r, tn, "out of memory");
            ok = false;
        }
    }
    if (ok && name && (addr || src != FB_TAG_READ)) {
        long long elems = count && src == FB_TAG_READ ? count : 1;
        size_t addr_len = addr ? strlen(addr) : 0;
        for (long long i = 0; i < elems; i++) {
            struct tag_aux *ta;
            struct fb_tag *t = push_tag(c, &ta);
            if (!t) {
                fb_cfg_error(c->r, tn, "too many tags (max %u) or out of memory", c->max_tags);
                break;
            }
            *ta = aux;
            t->device = di;
            t->type = type;
            t->str_len = str_len;
            t->access = access;
            t->index = (uint32_t)i;
            if (count) {
                char nb[24];
                int nn = snprintf(nb, sizeof nb, "[%lld]", i);
                size_t len = strlen(name);
                t->name = fb_arena_alloc(&c->gw->arena, len + (size_t)nn + 1, 1);
                if (t->name) {
                    memcpy(t->name, name, len);
                    memcpy(t->name + len, nb, (size_t)nn + 1);
                }
            } else {
                t->name = fb_arena_strndup(&c->gw->arena, name, strlen(name));
            }
            /* an array's elements share the address text: the driver adds the index;
             * kept aside while loading (fb_gw_atext_compact keeps what is needed) */
            const char **at = &c->gw->atext[t->id];
            *at = !addr           ? NULL
                  : i && at[-1]   ? at[-1]
                                  : fb_arena_strndup(&c->gw->atext_arena, addr, addr_len);
            if (!t->name || (addr && !*at)) {
                fb_cfg_error(c->r, tn, "out of memory");
                c->gw->ntags--;
                break;
            }
            t->src = (uint8_t)src;
            if (src != FB_TAG_READ) t->group = FB_GROUP_NONE;
            t->proc = shared;
            ta->line = fb_cfg_mark(tn).line;
            c->gw->devs[di].ntags++;
        }
        /* none made (the tag limit, reported): nothing for the edge or the vibration
         * analysis to refer to (vib_tag read tags[first_new] past the array: fuzz_config) */
        if (c->gw->ntags > first_new) {
            if (c->eb) fb_edge_cfg_tag(c->eb, c->r, vars, &m, c->gw, first_new, c->gw->ntags - first_new);
            if (fb_cfg_get(&m, "vibration")) vib_tag(c, vars, &m, tn, first_new, src, count);
        }
    }
    free(name);
    free(addr);
    free(order);
    free(unit);
    fb_cfg_map_free(&m);
}

/* A waveform tag (`vibration:`, src/vib): its feature tags follow it in the
 * device, named "<tag>.<feature>", computed by the analysis. */
static void vib_tag(struct ctx *c, const struct fb_tvars *vars, const struct fb_cfg_map *m, struct fb_cfg_node *tn,
                    uint32_t id, int src, long long count)
{
    struct fb_cfg_node *vk = fb_cfg_key(m, "vibration");
    if (src != FB_TAG_READ) {
        fb_cfg_error(c->r, vk, "a computed tag cannot be a waveform: vibration: belongs to a tag read from a device");
        return;
    }
    if (count) {
        fb_cfg_error(c->r, vk,
                     "a waveform tag is one tag: vibration: and count: do not go together (the block's "
                     "length is vibration.block)");
        c->taux[id].bad_wave = true;
        return;
    }
    static char names[FB_VIB_MAX_OUT][48];
    const char *units[FB_VIB_MAX_OUT];
    uint8_t types[FB_VIB_MAX_OUT];
    const struct tag_aux parent = c->taux[id];
    uint32_t n = fb_vib_cfg_tag(c->r, vars, m, c->gw, id, parent.poll_ns, names, units, types);
    if (!n) {
        c->taux[id].bad_wave = true;
        return;
    }
    uint32_t first = c->gw->ntags;
    for (uint32_t k = 0; k < n; k++) {
        struct tag_aux *ta;
        struct fb_tag *t = push_tag(c, &ta);
        if (!t) {
            fb_cfg_error(c->r, tn, "too many tags (max %u) or out of memory", c->max_tags);
            return;
        }
        const struct fb_tag *w = &c->gw->tags[id]; /* push_tag may have moved the array */
        ta->name_m = parent.name_m;
        ta->entry = c->entries++;
        t->device = w->device;
        t->type = types[k];
        t->str_len = types[k] == FB_T_STRING ? 1 : 0;
        t->access = FB_ACC_READ;
        t->src = FB_TAG_FEATURE;
        t->group = FB_GROUP_NONE;
        size_t len = strlen(w->name) + strlen(names[k]) + 2;
        t->name = fb_arena_alloc(&c->gw->arena, len, 1);
        if (t->name) snprintf(t->name, len, "%s.%s", w->name, names[k]);
        t->proc = plain_proc(c, units[k], 0);
        if (!t->name || !t->proc) {
            fb_cfg_error(c->r, tn, "out of memory");
            return;
        }
        ta->line = parent.line;
        c->gw->devs[w->device].ntags++;
    }
    struct fb_wave *wv = fb_tag_wave(c->gw, &c->gw->tags[id]);
    if (wv) wv->first_feature = first;
}

static void build_tags(struct ctx *c, uint32_t di, int64_t dev_poll, struct fb_cfg_node *tags,
                       const struct fb_tvars *vars)
{
    if (fb_cfg_kind(tags) != FB_CFG_LIST) {
        fb_cfg_error(c->r, tags, "tags must be a list (- name: …), got %s", fb_cfg_kind_name(tags));
        return;
    }
    for (size_t k = 0; k < fb_cfg_list_len(tags); k++) {
        struct fb_cfg_node *tn = fb_cfg_list_at(c->r, tags, k);
        struct fb_cfg_node *forn = NULL;
        if (fb_cfg_kind(tn) == FB_CFG_MAP) {
            struct fb_cfg_map m = {0};
            fb_cfg_map_load(c->r, tn, "tag", &m);
            forn = fb_cfg_get(&m, "for");
            fb_cfg_map_free(&m);
        }
        if (!forn) {
            build_tag(c, di, dev_poll, tn, vars);
            continue;
        }
        struct loop l;
        if (!loop_parse(c, vars, forn, &l)) continue;
        uint64_t more = for_count(c, vars, forn);
        if (c->gw->ntags + more > c->max_tags) { /* counted before expanding: never build past the limit */
            fb_cfg_error(c->r, forn, "for: %" PRIu64 " more tags would pass the limit of %u tags", more, c->max_tags);
            loop_free(&l);
            continue;
        }
        do {
            loop_bind(&l);
            struct fb_tvars scope = {vars, l.vars, l.nvars};
            int before = fb_cfg_errors(c->r);
            build_tag(c, di, dev_poll, tn, &scope);
            if (fb_cfg_errors(c->r) > before + 20) break; /* one broken template: do not repeat its errors 1000× */
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
        fb_cfg_error_at(c->r, ak->name_m, "duplicate tag name '%.*s' in device '%s' (first at line %d)",
                        (int)it[k].blen, it[k].name, d->name, a0->line);
    }
    free(it);
}

/* Devices, and connection keys, sorted by their text (then by index): a
 * `for:` can make 100000 devices, and comparing each with every other took
 * minutes (fuzz_config). */
struct str_item {
    const char *s;
    uint32_t idx;
};

static int str_item_cmp(const void *a, const void *b)
{
    const struct str_item *x = a, *y = b;
    int r = strcmp(x->s, y->s);
    if (r) return r;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* first[i] = the lowest index whose string equals s[i] (UINT32_MAX where s[i] is NULL). */
static uint32_t *first_equal(char *const *s, const struct dev_aux *named, uint32_t n, const struct fb_device *devs)
{
    uint32_t *first = malloc((n ? n : 1) * sizeof *first);
    struct str_item *it = malloc((n ? n : 1) * sizeof *it);
    if (!first || !it) {
        free(first);
        free(it);
        return NULL;
    }
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        first[i] = UINT32_MAX;
        const char *t = s ? s[i] : named[i].named ? devs[i].name : NULL;
        if (t) it[m++] = (struct str_item){t, i};
    }
    qsort(it, m, sizeof *it, str_item_cmp);
    for (uint32_t k = 0, run = 0; k < m; k++) {
        if (k && strcmp(it[k].s, it[run].s)) run = k;
        first[it[k].idx] = it[run].idx;
    }
    free(it);
    return first;
}

static void check_dup_devices(struct ctx *c)
{
    struct fb_gateway *gw = c->gw;
    uint32_t *first = first_equal(NULL, c->daux, gw->ndevs, gw->devs);
    if (!first) return;
    for (uint32_t di = 0; di < gw->ndevs; di++)
        if (first[di] != UINT32_MAX && first[di] != di)
            fb_cfg_error_at(c->r, c->daux[di].name_m, "duplicate device name '%s' (first at line %d)",
                            gw->devs[di].name, gw->devs[first[di]].line_no);
    free(first);
}

/* ------------------------------------------------------------ devices */

static struct fb_device *push_dev(struct ctx *c)
{
    struct fb_gateway *gw = c->gw;
    if (gw->ndevs >= c->max_devs) return NULL;
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

static void build_device(struct ctx *c, struct fb_cfg_node *dn, const struct fb_tvars *vars)
{
    struct fb_cfg_map m = {0};
    if (!fb_cfg_map_load(c->r, dn, "device", &m)) return;
    fb_cfg_map_check(c->r, &m, k_device, "device", false);
    struct fb_device *d = push_dev(c);
    if (!d) {
        fb_cfg_error(c->r, dn, "too many devices (max %u) or out of memory", c->max_devs);
        fb_cfg_map_free(&m);
        return;
    }
    uint32_t di = d->idx;
    struct dev_aux *da = &c->daux[di];
    d->gw = c->gw;
    d->line_no = fb_cfg_mark(dn).line;
    d->col = fb_cfg_mark(dn).col;
    d->first_tag = c->gw->ntags;
    d->timeout_ns = 1000000000LL;
    struct fb_cfg_node *n;
    if (!(n = fb_cfg_get(&m, "name"))) {
        fb_cfg_error(c->r, dn, "device: 'name' is required");
    } else if ((d->name = fb_cfg_str(c->r, vars, n, "device name"))) {
        if (!fb_cfg_name_ok(d->name))
            fb_cfg_error(c->r, n, "device name '%s' may only contain letters, digits, '_', '.' and '-'", d->name);
        da->named = true; /* duplicates: check_dup_devices, once every device is known */
        da->name_m = fb_cfg_mark(n);
    }
    if (!d->name) d->name = strdup("?");
    struct fb_cfg_node *urln = fb_cfg_get(&m, "url");
    if (!(n = urln)) {
        /* a virtual device: checked once its tags are known */
    } else if ((d->url_text = fb_cfg_str(c->r, vars, n, "url"))) {
        struct fb_err e = {0};
        da->url_m = fb_cfg_mark(n);
        if (fb_url_parse(d->url_text, &d->url, &e) < 0) fb_cfg_error(c->r, n, "url: %s", e.msg);
    }
    if ((n = fb_cfg_get(&m, "area"))) {
        d->area = fb_cfg_str(c->r, vars, n, "area");
        if (d->area && !fb_cfg_level_ok(d->area))
            fb_cfg_error(c->r, n, "area '%s' must be non-empty and contain no '/', '+' or '#'", d->area);
    }
    if ((n = fb_cfg_get(&m, "line"))) {
        d->line = fb_cfg_str(c->r, vars, n, "line");
        if (d->line && !fb_cfg_level_ok(d->line))
            fb_cfg_error(c->r, n, "line '%s' must be non-empty and contain no '/', '+' or '#'", d->line);
    }
    if (!d->area) d->area = strdup("_");
    if (!d->line) d->line = strdup("_");
    int64_t poll = 1000000000LL;
    if ((n = fb_cfg_get(&m, "poll"))) fb_cfg_dur(c->r, vars, n, "poll", true, &poll);
    struct fb_cfg_node *tn = fb_cfg_get(&m, "timeout"), *dln = fb_cfg_get(&m, "delay");
    if (tn) fb_cfg_dur(c->r, vars, tn, "timeout", true, &d->timeout_ns);
    if (dln) fb_cfg_dur(c->r, vars, dln, "delay", false, &d->delay_ns);
    if ((n = fb_cfg_get(&m, "options"))) {
        struct fb_cfg_map o = {0};
        if (fb_cfg_map_load(c->r, n, "options", &o)) {
            for (int i = 0; i < o.n; i++) {
                char *v = fb_cfg_str(c->r, vars, o.kv[i].v, "option");
                if (!v) continue;
                if (d->url.scheme && fb_url_get(&d->url, o.kv[i].key))
                    fb_cfg_error(c->r, o.kv[i].k, "option '%s' is also given in the device URL", o.kv[i].key);
                else if (d->url.scheme)
                    url_add_opt(&d->url, o.kv[i].key, v);
                free(v);
            }
            fb_cfg_map_free(&o);
        }
    }
    /* timeout/delay may also come from the URL (the CLI form): one place only */
    static const char *const tk[] = {"timeout", "delay"};
    for (int i = 0; i < 2 && d->url.scheme; i++) {
        const char *v = fb_url_get(&d->url, tk[i]);
        struct fb_cfg_node *kn = i == 0 ? tn : dln;
        if (!v) continue;
        /* the driver reads the URL's value (and sets dev->timeout_ns/delay_ns) */
        if (kn) fb_cfg_error(c->r, kn, "%s is given both here and in the device URL/options", tk[i]);
    }
    if ((n = fb_cfg_get(&m, "tags"))) {
        build_tags(c, di, poll, n, vars);
        check_dup_tags(c, di);
    } else if (urln)
        fb_cfg_note(c->r, dn, "device '%s' has no tags", c->gw->devs[di].name);
    if (!urln) { /* without url: a virtual device, all of whose tags are computed */
        const struct fb_device *vd = &c->gw->devs[di];
        bool computed = vd->ntags > 0;
        for (uint32_t i = 0; i < vd->ntags; i++)
            if (c->gw->tags[vd->first_tag + i].src == FB_TAG_READ) computed = false;
        if (!computed)
            fb_cfg_error(c->r, dn,
                         "device '%s': 'url' is required (e.g. modbus-tcp://127.0.0.1:502?unit=1); a device without "
                         "url is virtual and each of its tags needs expr: or script:",
                         vd->name);
    }
    fb_cfg_map_free(&m);
}

/* Counts every tag the devices list would make, stopping past c->max_tags;
 * false (with an error at the entry that crosses the limit) if it does. */
static bool devices_fit(struct ctx *c, struct fb_cfg_node *dn)
{
    uint64_t total = 0;
    for (size_t it = 0; it < fb_cfg_list_len(dn); it++) {
        struct fb_cfg_node *n = fb_cfg_list_at(c->r, dn, it);
        if (fb_cfg_kind(n) != FB_CFG_MAP) continue;
        struct fb_cfg_map m = {0};
        if (!fb_cfg_map_load(c->r, n, "device", &m)) continue;
        struct fb_cfg_node *forn = fb_cfg_get(&m, "for"), *tags = fb_cfg_get(&m, "tags");
        fb_cfg_map_free(&m);
        if (!forn) {
            uint64_t k = tags_count(c, NULL, tags);
            total = sat_add(total, k);
            if (total > c->max_tags) {
                fb_cfg_error(c->r, tags ? tags : n, "these tags bring the gateway to more than the limit of %u tags",
                             c->max_tags);
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
        } while (total <= c->max_tags && loop_next(&l));
        loop_free(&l);
        if (total > c->max_tags) {
            fb_cfg_error(c->r, forn,
                         "for: %" PRIu64 " devices with %" PRIu64 " tags each (the first) make %" PRIu64
                         " tags; the limit is %u tags",
                         ndev, first, sat_mul(ndev, first), c->max_tags);
            return false;
        }
    }
    c->tags_expected = total;
    return true;
}

static void load_devices(struct ctx *c, struct fb_cfg_node *dn)
{
    if (fb_cfg_kind(dn) != FB_CFG_LIST) {
        fb_cfg_error(c->r, dn, "devices must be a list (- name: …), got %s", fb_cfg_kind_name(dn));
        return;
    }
    if (!devices_fit(c, dn)) return;
    /* one allocation at the final size: growing by doubling briefly held the
     * old and the new array (the start-up peak) and left the heap fragmented */
    uint64_t want = c->tags_expected + c->tags_made;
    if (want > 0 && want <= c->max_tags) {
        c->gw->tags = malloc(want * sizeof *c->gw->tags);
        c->taux = malloc(want * sizeof *c->taux);
        c->gw->atext = malloc(want * sizeof *c->gw->atext);
        if (c->gw->tags && c->taux && c->gw->atext) {
            c->captags = want;
        } else {
            free(c->gw->tags);
            free(c->taux);
            free(c->gw->atext);
            c->gw->tags = NULL;
            c->taux = NULL;
            c->gw->atext = NULL;
        }
    }
    for (size_t k = 0; k < fb_cfg_list_len(dn); k++) {
        struct fb_cfg_node *n = fb_cfg_list_at(c->r, dn, k);
        struct fb_cfg_node *forn = NULL;
        if (fb_cfg_kind(n) == FB_CFG_MAP) {
            struct fb_cfg_map m = {0};
            fb_cfg_map_load(c->r, n, "device", &m);
            forn = fb_cfg_get(&m, "for");
            fb_cfg_map_free(&m);
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
            int before = fb_cfg_errors(c->r);
            build_device(c, n, &scope);
            if (fb_cfg_errors(c->r) > before + 20) break;
        } while (loop_next(&l));
        loop_free(&l);
    }
}

/* A device made by another section (struct fb_dev_spec): one poll group,
 * tags with their types and ranges as given, the driver preset. */
static void build_made(struct ctx *c, const struct fb_dev_spec *sp)
{
    for (uint32_t i = 0; i < c->gw->ndevs; i++)
        if (c->gw->devs[i].name && !strcmp(c->gw->devs[i].name, sp->name)) {
            fb_cfg_error_at(c->r, sp->mark, "'%s' is also the name of a device (line %d): names must differ", sp->name,
                            c->gw->devs[i].line_no);
            return;
        }
    struct fb_device *d = push_dev(c);
    if (!d) {
        fb_cfg_error_at(c->r, sp->mark, "too many devices (max %u) or out of memory", c->max_devs);
        return;
    }
    struct dev_aux *da = &c->daux[d->idx];
    d->gw = c->gw;
    d->line_no = sp->mark.line;
    d->col = sp->mark.col;
    d->first_tag = c->gw->ntags;
    d->timeout_ns = 1000000000LL;
    d->name = strdup(sp->name);
    d->url_text = strdup(sp->url);
    d->area = strdup(sp->area ? sp->area : "_");
    d->line = strdup(sp->line ? sp->line : "_");
    da->url_m = sp->mark;
    struct fb_err e = {0};
    if (d->url_text && fb_url_parse(d->url_text, &d->url, &e) < 0) fb_cfg_error_at(c->r, sp->mark, "%s", e.msg);
    d->drv = sp->drv;
    d->drv_dev = sp->drv_dev;
    const struct fb_cfg_node *roles_node = NULL; /* one list per node, however many tags share it */
    uint16_t roles = 0;
    for (uint32_t k = 0; k < sp->ntags; k++) {
        const struct fb_tag_spec *ts = &sp->tags[k];
        struct tag_aux *ta;
        struct fb_tag *t = push_tag(c, &ta);
        if (!t) {
            fb_cfg_error_at(c->r, sp->mark, "too many tags (max %u) or out of memory", c->max_tags);
            break;
        }
        t->device = d->idx;
        t->type = ts->type;
        t->access = ts->access;
        t->str_len = ts->str_len;
        struct fb_tag_proc proc;
        memset(&proc, 0, sizeof proc); /* padding too: settings are interned by their bytes */
        proc.has_min = ts->has_min;
        proc.has_max = ts->has_max;
        proc.min = ts->min;
        proc.max = ts->max;
        if (ts->write_roles && (ts->access & FB_ACC_WRITE)) {
            if (ts->write_roles != roles_node) {
                roles_node = ts->write_roles;
                roles = fb_config_acl(c->r, NULL, roles_node, "write_roles", c->gw);
            }
            proc.write_roles = roles;
        }
        t->name = fb_arena_strndup(&c->gw->arena, ts->name, strlen(ts->name));
        c->gw->atext[t->id] = t->name;
        proc.unit = intern_str(c, ts->unit);
        t->proc = intern(&c->gw->arena, &c->procs, &proc, sizeof proc, _Alignof(struct fb_tag_proc));
        if (!t->name || !t->proc || (ts->unit && !proc.unit)) {
            fb_cfg_error_at(c->r, sp->mark, "out of memory");
            c->gw->ntags--;
            break;
        }
        ta->line = sp->mark.line;
        ta->poll_ns = sp->poll_ns;
        ta->name_m = sp->mark;
        ta->addr_m = sp->mark;
        ta->entry = c->entries++;
        d->ntags++;
    }
}

/* ------------------------------------------------------------ pass B: drivers */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void build_groups(struct ctx *c, struct fb_device *d)
{
    struct fb_gateway *gw = c->gw;
    if (!d->ntags) return;
    int64_t *per = malloc(d->ntags * sizeof *per);
    if (!per) return;
    uint32_t np = 0; /* computed tags (poll 0) are in no group */
    for (uint32_t i = 0; i < d->ntags; i++)
        if (c->taux[d->first_tag + i].poll_ns > 0) per[np++] = c->taux[d->first_tag + i].poll_ns;
    qsort(per, np, sizeof *per, cmp_i64);
    uint32_t ng = 0;
    for (uint32_t i = 0; i < np; i++)
        if (i == 0 || per[i] != per[i - 1]) per[ng++] = per[i];
    if (!ng) {
        free(per);
        return;
    }
    d->groups = calloc(ng, sizeof *d->groups);
    if (!d->groups) {
        free(per);
        return;
    }
    d->ngroups = ng;
    for (uint32_t g = 0; g < ng; g++) {
        struct fb_group *gr = &d->groups[g];
        gr->period_ns = per[g];
        uint32_t cnt = 0, lo = UINT32_MAX, hi = 0;
        for (uint32_t i = 0; i < d->ntags; i++)
            if (c->taux[d->first_tag + i].poll_ns == per[g]) {
                cnt++;
                if (lo == UINT32_MAX) lo = i;
                hi = i;
            }
        /* one contiguous run of ids (the common case): no array */
        bool run = cnt && hi - lo + 1 == cnt;
        if (!run) {
            gr->ids = malloc(cnt * sizeof *gr->ids);
            if (!gr->ids) continue;
        }
        gr->first = run ? d->first_tag + lo : 0;
        for (uint32_t i = 0; i < d->ntags; i++) {
            uint32_t id = d->first_tag + i;
            if (c->taux[id].poll_ns == per[g]) {
                if (gr->ids) gr->ids[gr->ntags] = id;
                gr->ntags++;
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
        if (o->kind == FB_OPT_CERT || o->kind == FB_OPT_CRL) { /* watched for expiry (core/certs.c) */
            char use[200];
            snprintf(use, sizeof use, "device %s %s=", d->name, o->key);
            fb_gw_cert_add(c->gw, use, d->url.q[i].v ? d->url.q[i].v : "", o->kind);
        }
        if (rc == FB_ENOENT && o->kind == FB_OPT_PKI) continue; /* the driver creates the store */
        if (rc == FB_ENOENT || rc == FB_EIO)
            fb_cfg_warn_at(c->r, da->url_m, "device '%s': %s=: %s", d->name, o->key, e.msg);
        else if (rc < 0)
            fb_cfg_error_at(c->r, da->url_m, "device '%s': %s=: %s", d->name, o->key, e.msg);
    }
}

static void build_drivers(struct ctx *c)
{
    struct fb_gateway *gw = c->gw;
    char **keys = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *keys);
    if (!keys) {
        fb_cfg_error_at(c->r, (struct fb_cfg_mark){0, 0}, "out of memory");
        return;
    }
    for (uint32_t di = 0; di < gw->ndevs; di++) {
        struct fb_device *d = &gw->devs[di];
        struct dev_aux *da = &c->daux[di];
        if (d->ngroups == 0) build_groups(c, d);
        if (d->ntags > 0 && d->ngroups > 65535) {
            fb_cfg_error_at(c->r, (struct fb_cfg_mark){d->line_no, d->col}, "device '%s' has too many poll periods",
                            d->name);
            continue;
        }
        if (!d->url.scheme) continue; /* url error already reported */
        /* a device another section made comes with its driver (build_made) */
        const struct fb_driver *drv = d->drv ? d->drv : fb_driver_for_scheme(d->url.scheme);
        if (!drv) {
            char hint[200];
            fb_scheme_hint(hint, sizeof hint, d->url.scheme);
            fb_cfg_error_at(c->r, da->url_m, "url: no driver for scheme '%s://'%s", d->url.scheme, hint);
            continue;
        }
        d->drv = drv;
        struct fb_err e = {0};
        if (drv->device_init(d, &keys[di], &e) < 0) {
            fb_cfg_error_at(c->r, da->url_m, "%s", e.msg[0] ? e.msg : "device rejected by its driver");
            d->drv = NULL;
            free(keys[di]);
            keys[di] = NULL;
            continue;
        }
        da->init_ok = true;
        check_url_files(c, d, da);
        if (drv->certs) drv->certs(d, gw);
        bool tags_ok = true;
        for (uint32_t i = 0; i < d->ntags; i++) {
            struct fb_tag *t = &gw->tags[d->first_tag + i];
            struct tag_aux *ta = &c->taux[d->first_tag + i];
            memset(&e, 0, sizeof e);
            if (t->src != FB_TAG_READ) continue; /* computed by the edge thread: nothing for the driver */
            if (ta->bad_wave) {
                tags_ok = false;
                continue;
            }
            if (drv->parse_address(d, t, &e) < 0) {
                if (t->index && i > 0 && gw->atext[t->id - 1] && gw->atext[t->id] &&
                    !strcmp(gw->atext[t->id - 1], gw->atext[t->id]) && gw->tags[d->first_tag + i - 1].addr == NULL)
                    ; /* same array already reported */
                else
                    fb_cfg_error_at(c->r, ta->addr_m, "%s", e.msg[0] ? e.msg : "bad address");
                tags_ok = false;
                continue;
            }
            if (t->type == FB_T_NONE) {
                fb_cfg_error_at(c->r, ta->addr_m, "addr: the driver gave no type for '%s'; add type:", gw->atext[t->id]);
                tags_ok = false;
                continue;
            }
            bool numeric = t->type != FB_T_STRING;
            if (ta->needs_numeric && (!numeric || (t->type == FB_T_BOOL && fb_tproc(t)->scaled))) {
                fb_cfg_error_at(
                    c->r, ta->numeric_m,
                    "tag '%s' is of type %s: scale, range, deadband, max_rate and window need a numeric tag", t->name,
                    fb_type_name((enum fb_type)t->type));
                tags_ok = false;
            }
        }
        if (!tags_ok) continue;
        for (uint32_t g = 0; g < d->ngroups; g++) {
            memset(&e, 0, sizeof e);
            if (drv->plan && drv->plan(d, &d->groups[g], &e) < 0) {
                struct fb_tag *t0 = d->groups[g].ntags ? &gw->tags[fb_group_tag(&d->groups[g], 0)] : NULL;
                fb_cfg_error_at(c->r, t0 ? c->taux[t0->id].addr_m : da->url_m, "%s",
                                e.msg[0] ? e.msg : "cannot plan reads");
            }
        }
    }
    /* connections: equal keys share one */
    gw->conns = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *gw->conns);
    uint32_t *first = first_equal(keys, NULL, gw->ndevs, NULL);
    /* devices per key, counted first: each connection's list is made once at
     * its size (growing it by one per device copied n²/2 pointers: a `for:` of
     * 10,000 devices on one bus took 3 s and 600 MB under ASan, fuzz_config) */
    uint32_t *ndev = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *ndev);
    if (!gw->conns || !first || !ndev) {
        fb_cfg_error_at(c->r, (struct fb_cfg_mark){0, 0}, "out of memory");
    } else {
        for (uint32_t di = 0; di < gw->ndevs; di++)
            if (keys[di] && first[di] < gw->ndevs) ndev[first[di]]++;
        for (uint32_t di = 0; di < gw->ndevs; di++) {
            if (!keys[di]) continue;
            struct fb_device *d = &gw->devs[di];
            /* the first device with this key made its connection */
            struct fb_conn *cn = first[di] != di ? gw->devs[first[di]].conn : NULL;
            if (cn && cn->drv != d->drv) {
                fb_cfg_error_at(c->r, c->daux[di].url_m,
                                "device '%s' uses connection %s of device '%s' with another driver", d->name, keys[di],
                                cn->devs[0]->name);
                continue;
            }
            if (!cn) {
                /* room for every device with this key (a failed one leaves the rest a new list) */
                struct fb_device **nd = malloc((ndev[first[di]] ? ndev[first[di]] : 1) * sizeof *nd);
                if (!nd) continue;
                cn = &gw->conns[gw->nconns++];
                cn->key = keys[di];
                keys[di] = NULL;
                cn->drv = d->drv;
                cn->devs = nd;
            }
            cn->devs[cn->ndevs++] = d;
            d->conn = cn;
        }
    }
    free(ndev);
    free(first);
    for (uint32_t di = 0; di < gw->ndevs; di++) free(keys[di]);
    free(keys);
}

/* ------------------------------------------------------------ entry */
void fb_config_devices(struct fb_cfg *r, struct fb_cfg_node *devices, const struct fb_dev_spec *const *made,
                       size_t nmade, struct fb_gateway *gw, struct fb_edge_build *eb)
{
    struct ctx c = {.r = r, .gw = gw, .eb = eb, .max_loop = MAX_LOOP, .max_devs = MAX_DEVICES, .max_tags = MAX_TAGS};
    uint32_t lim = fb_cfg_max_expand(r); /* 0: the defaults */
    if (lim && lim < (uint32_t)c.max_loop) c.max_loop = (int)lim;
    if (lim && lim < c.max_devs) c.max_devs = lim;
    if (lim && lim < c.max_tags) c.max_tags = lim;
    for (size_t i = 0; i < nmade; i++) c.tags_made += made[i]->ntags;
    if (devices) load_devices(&c, devices);
    check_dup_devices(&c);
    for (size_t i = 0; i < nmade; i++) build_made(&c, made[i]);
    if (devices || nmade) {
        /* if the count was off and the array grew by doubling, give back the slack */
        if (gw->ntags && gw->ntags < c.captags) {
            struct fb_tag *t = realloc(gw->tags, gw->ntags * sizeof *t);
            if (t) gw->tags = t;
        }
    }
    build_drivers(&c);
    if (!fb_gw_atext_compact(gw)) fb_cfg_error_at(r, (struct fb_cfg_mark){0, 0}, "out of memory");
    free(c.daux);
    free(c.taux);
    intern_free(&c.strs);
    intern_free(&c.procs);
}

size_t fb_config_dev_key_tables(struct fb_config_keys *out, size_t max)
{
    const struct fb_config_keys t[] = {{"device", k_device}, {"tag", k_tag}, {"scale", k_scale}};
    size_t n = 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0] && n < max; i++) out[n++] = t[i];
    return n;
}
