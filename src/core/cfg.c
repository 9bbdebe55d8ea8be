/* cfg.c — the config reader (cfg.h) over libyaml's document API.
 *
 * libyaml gives a tree of nodes with 0-based marks; we print them 1-based.
 * struct fb_cfg_node is never defined: a node pointer is a yaml_node_t
 * pointer, cast at this file's edge, so no other file depends on libyaml.
 *
 * Diagnostics are collected (text, mark, arrival order) and printed sorted
 * by position when the reader finishes, so the output reads top to bottom
 * whatever order the loader walked the sections in.  A message repeated for
 * the same node (aliases make one node visible from several places) is kept
 * once.
 */
#include "core/cfg.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "core/config_tmpl.h"
#include "core/env.h"

/* Hostile YAML (issue 14): bounds checked on the event stream before the
 * document is built, so neither libyaml nor the walker ever sees more. */
#define MAX_YAML_DEPTH 64       /* nesting of lists and mappings */
#define MAX_ALIASES 100000      /* alias uses (*name) in one file */
#define MAX_ALIAS_NODES 1000000 /* nodes that aliases add when expanded */
#define MAX_MAP_KEYS 1000       /* keys of one mapping (duplicate checks are linear scans) */

struct msg {
    struct fb_cfg_mark m;
    unsigned seq;
    bool warn;
    char *text;
};

struct cert_note {
    char *what, *path;
    enum fb_opt_kind kind;
};

/* fb_cfg_map_check's last suggestions for unknown keys: a `for:` of 10,000
 * entries with a misspelt key asks the same question 10,000 times, and the
 * edit distances to every allowed key were a quarter of fuzz_config's time.
 * Keyed by the key's text and the allowed table's string pointers (the
 * tables are static: the same pointers are the same strings). */
struct sg_cache {
    uint64_t h; /* of the allowed table's pointers */
    const char *best;
    bool used;
    char key[48];
};

struct fb_cfg {
    struct sg_cache sg[16];
    char *file;
    char *dir; /* directory of the config file, for relative paths */
    bool strict;
    FILE *diag;
    uint32_t max_expand; /* struct fb_config_opts.max_expand (0: the defaults) */
    bool loaded;         /* doc holds a document */
    yaml_document_t doc;
    struct msg *msgs;
    size_t *mhash; /* open addressing over msgs (index + 1, 0 = empty): the duplicate check stays linear */
    size_t hcap;
    size_t nmsgs, capmsgs;
    int nerr;
    unsigned *merge_seen; /* per node: the map_load generation that merged it */
    unsigned merge_gen;
    struct cert_note *certs; /* certificate files named so far (fb_cfg_file_ref) */
    size_t ncerts;
};

static yaml_node_t *Y(const struct fb_cfg_node *n) { return (yaml_node_t *)(void *)n; }
static struct fb_cfg_node *N(yaml_node_t *n) { return (struct fb_cfg_node *)(void *)n; }

/* ------------------------------------------------------------ diagnostics */
static size_t msg_hash(struct fb_cfg_mark m, bool warn, const char *text)
{
    uint64_t h = 1469598103934665603ull ^ ((uint64_t)(unsigned)m.line << 32 | (unsigned)m.col) ^ warn;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h ^ h >> 29);
}

static void vdiag(struct fb_cfg *r, struct fb_cfg_mark m, bool warn, const char *fmt, va_list ap)
{
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    /* aliases can make one node report twice: keep one (a hash set: a
     * `for:` of 100000 devices can make as many messages) */
    size_t h = msg_hash(m, warn, buf);
    for (size_t i = r->hcap ? h & (r->hcap - 1) : 0; r->hcap && r->mhash[i]; i = (i + 1) & (r->hcap - 1)) {
        const struct msg *o = &r->msgs[r->mhash[i] - 1];
        if (o->m.line == m.line && o->m.col == m.col && o->warn == warn && strcmp(o->text, buf) == 0) return;
    }
    if ((r->nmsgs + 1) * 2 > r->hcap) {
        size_t nc = r->hcap ? r->hcap * 2 : 64;
        size_t *t = calloc(nc, sizeof *t);
        if (!t) {
            r->nerr++;
            return;
        }
        for (size_t k = 0; k < r->nmsgs; k++) {
            size_t i = msg_hash(r->msgs[k].m, r->msgs[k].warn, r->msgs[k].text) & (nc - 1);
            while (t[i]) i = (i + 1) & (nc - 1);
            t[i] = k + 1;
        }
        free(r->mhash);
        r->mhash = t;
        r->hcap = nc;
    }
    if (r->nmsgs == r->capmsgs) {
        size_t n = r->capmsgs ? r->capmsgs * 2 : 16;
        struct msg *t = realloc(r->msgs, n * sizeof *t);
        if (!t) {
            r->nerr++;
            return;
        }
        r->msgs = t;
        r->capmsgs = n;
    }
    char *text = strdup(buf);
    if (!text) {
        r->nerr++;
        return;
    }
    r->msgs[r->nmsgs] = (struct msg){m, (unsigned)r->nmsgs, warn, text};
    r->nmsgs++;
    size_t i = h & (r->hcap - 1);
    while (r->mhash[i]) i = (i + 1) & (r->hcap - 1);
    r->mhash[i] = r->nmsgs;
    if (!warn) r->nerr++;
}

struct fb_cfg_mark fb_cfg_mark(const struct fb_cfg_node *n)
{
    struct fb_cfg_mark m = {0, 0};
    if (n) {
        m.line = (int)Y(n)->start_mark.line + 1;
        m.col = (int)Y(n)->start_mark.column + 1;
    }
    return m;
}

void fb_cfg_error(struct fb_cfg *r, const struct fb_cfg_node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(r, fb_cfg_mark(n), false, fmt, ap);
    va_end(ap);
}

void fb_cfg_error_at(struct fb_cfg *r, struct fb_cfg_mark m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(r, m, false, fmt, ap);
    va_end(ap);
}

void fb_cfg_warn(struct fb_cfg *r, const struct fb_cfg_node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(r, fb_cfg_mark(n), !r->strict, fmt, ap);
    va_end(ap);
}

void fb_cfg_warn_at(struct fb_cfg *r, struct fb_cfg_mark m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(r, m, !r->strict, fmt, ap);
    va_end(ap);
}

void fb_cfg_note(struct fb_cfg *r, const struct fb_cfg_node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(r, fb_cfg_mark(n), true, fmt, ap);
    va_end(ap);
}

static int msg_cmp(const void *a, const void *b)
{
    const struct msg *x = a, *y = b;
    if (x->m.line != y->m.line) return x->m.line < y->m.line ? -1 : 1;
    if (x->m.col != y->m.col) return x->m.col < y->m.col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void diag_flush(struct fb_cfg *r)
{
    FILE *f = r->diag ? r->diag : stderr;
    if (r->nmsgs) qsort(r->msgs, r->nmsgs, sizeof *r->msgs, msg_cmp);
    for (size_t i = 0; i < r->nmsgs; i++) {
        struct msg *m = &r->msgs[i];
        /* a message may quote a value that turned out to be a secret (read later in the walk) */
        char *t = fb_secret_redact_dup(m->text, strlen(m->text), NULL);
        const char *text = t ? t : m->text;
        if (m->m.line > 0)
            fprintf(f, "%s:%d:%d: %s%s\n", r->file, m->m.line, m->m.col, m->warn ? "warning: " : "", text);
        else
            fprintf(f, "%s: %s%s\n", r->file, m->warn ? "warning: " : "", text);
        free(t);
        free(m->text);
    }
    free(r->msgs);
    r->msgs = NULL;
    r->nmsgs = r->capmsgs = 0;
    free(r->mhash);
    r->mhash = NULL;
    r->hcap = 0;
    fflush(f);
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
    uint64_t h = 1469598103934665603u; /* FNV-1a, 64-bit also where size_t is 32 */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
    return (size_t)h;
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

/* f (rewound by the caller afterwards) or text[0..len). */
static bool yaml_precheck(struct fb_cfg *r, FILE *f, const char *text, size_t len)
{
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    if (f)
        yaml_parser_set_input_file(&p, f);
    else
        yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
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
        struct fb_cfg_mark m = {(int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1};
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
                anchor =
                    ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor : ev.data.mapping_start.anchor;
                if (depth == MAX_YAML_DEPTH) {
                    fb_cfg_error_at(r, m, "lists and mappings nested deeper than %d levels", MAX_YAML_DEPTH);
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
                    fb_cfg_error_at(r, m, "more than %d aliases (*name) in one file", MAX_ALIASES);
                    ok = false;
                } else if (a && !a->done) {
                    fb_cfg_error_at(r, m, "alias *%s refers to the node that contains it", name);
                    ok = false;
                } else if (a) {
                    add = a->size;
                    extra += a->size;
                    if (extra > MAX_ALIAS_NODES) {
                        fb_cfg_error_at(r, m, "aliases expand to more than %d nodes (at *%s)", MAX_ALIAS_NODES, name);
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

/* ------------------------------------------------------------ the reader */
static void yaml_error(struct fb_cfg *r, const yaml_parser_t *p)
{
    struct fb_cfg_mark m = {(int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1};
    if (p->context)
        fb_cfg_error_at(r, m, "YAML syntax error: %s %s (line %d)", p->problem ? p->problem : "?", p->context,
                        (int)p->context_mark.line + 1);
    else
        fb_cfg_error_at(r, m, "YAML syntax error: %s", p->problem ? p->problem : "?");
}

static struct fb_cfg *reader_new(const char *name, bool strict, FILE *diag)
{
    struct fb_cfg *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->file = strdup(name);
    const char *slash = strrchr(name, '/');
    r->dir = slash ? strndup(name, (size_t)(slash - name) + (slash == name)) : strdup(".");
    r->strict = strict;
    r->diag = diag;
    if (!r->file || !r->dir) {
        free(r->file);
        free(r->dir);
        free(r);
        return NULL;
    }
    return r;
}

/* Parse from an initialised parser; false (reported, reader finished) on a syntax error. */
static bool reader_parse(struct fb_cfg *r, yaml_parser_t *p)
{
    if (!yaml_parser_load(p, &r->doc)) {
        yaml_error(r, p);
        return false;
    }
    r->loaded = true;
    /* only one document */
    yaml_document_t extra;
    if (yaml_parser_load(p, &extra)) {
        yaml_node_t *root = yaml_document_get_root_node(&extra);
        if (root)
            fb_cfg_error_at(r, (struct fb_cfg_mark){(int)root->start_mark.line + 1, (int)root->start_mark.column + 1},
                            "only one YAML document is allowed per config file");
        yaml_document_delete(&extra);
    }
    return true;
}

struct fb_cfg *fb_cfg_open(const char *path, bool strict, FILE *diag)
{
    struct fb_cfg *r = reader_new(path, strict, diag);
    if (!r) return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fb_cfg_error_at(r, (struct fb_cfg_mark){0, 0}, "cannot open: %s", strerror(errno));
        fb_cfg_finish(r);
        return NULL;
    }
    if (!yaml_precheck(r, f, NULL, 0) || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        fb_cfg_finish(r);
        return NULL;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    bool ok = reader_parse(r, &p);
    yaml_parser_delete(&p);
    fclose(f);
    if (!ok) {
        fb_cfg_finish(r);
        return NULL;
    }
    return r;
}

struct fb_cfg *fb_cfg_open_mem(const char *name, const char *text, size_t len, bool strict, FILE *diag)
{
    struct fb_cfg *r = reader_new(name, strict, diag);
    if (!r) return NULL;
    if (!yaml_precheck(r, NULL, text, len)) {
        fb_cfg_finish(r);
        return NULL;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    bool ok = reader_parse(r, &p);
    yaml_parser_delete(&p);
    if (!ok) {
        fb_cfg_finish(r);
        return NULL;
    }
    return r;
}

struct fb_cfg_node *fb_cfg_root(struct fb_cfg *r) { return r->loaded ? N(yaml_document_get_root_node(&r->doc)) : NULL; }
const char *fb_cfg_file(const struct fb_cfg *r) { return r->file; }
bool fb_cfg_strict(const struct fb_cfg *r) { return r->strict; }
void fb_cfg_set_max_expand(struct fb_cfg *r, uint32_t n) { r->max_expand = n; }
uint32_t fb_cfg_max_expand(const struct fb_cfg *r) { return r->max_expand; }
int fb_cfg_errors(const struct fb_cfg *r) { return r->nerr; }

int fb_cfg_finish(struct fb_cfg *r)
{
    if (!r) return 0;
    int nerr = r->nerr;
    diag_flush(r);
    if (r->loaded) yaml_document_delete(&r->doc);
    for (size_t i = 0; i < r->ncerts; i++) {
        free(r->certs[i].what);
        free(r->certs[i].path);
    }
    free(r->certs);
    free(r->merge_seen);
    free(r->file);
    free(r->dir);
    free(r);
    return nerr;
}

/* ----------------------------------------------------------------- nodes */
enum fb_cfg_kind fb_cfg_kind(const struct fb_cfg_node *n)
{
    if (!n) return FB_CFG_NONE;
    switch (Y(n)->type) {
        case YAML_SCALAR_NODE: return FB_CFG_SCALAR;
        case YAML_SEQUENCE_NODE: return FB_CFG_LIST;
        case YAML_MAPPING_NODE: return FB_CFG_MAP;
        default: return FB_CFG_NONE;
    }
}

const char *fb_cfg_kind_name(const struct fb_cfg_node *n)
{
    switch (fb_cfg_kind(n)) {
        case FB_CFG_SCALAR: return "a scalar";
        case FB_CFG_LIST: return "a list";
        case FB_CFG_MAP: return "a mapping";
        default: return "nothing";
    }
}

bool fb_cfg_is_null(const struct fb_cfg_node *n)
{
    if (!n) return true;
    if (Y(n)->type != YAML_SCALAR_NODE || Y(n)->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *s = (const char *)Y(n)->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

const char *fb_cfg_scalar(const struct fb_cfg_node *n)
{
    return n && Y(n)->type == YAML_SCALAR_NODE ? (const char *)Y(n)->data.scalar.value : NULL;
}

size_t fb_cfg_list_len(const struct fb_cfg_node *n)
{
    if (!n || Y(n)->type != YAML_SEQUENCE_NODE) return 0;
    return (size_t)(Y(n)->data.sequence.items.top - Y(n)->data.sequence.items.start);
}

struct fb_cfg_node *fb_cfg_list_at(struct fb_cfg *r, const struct fb_cfg_node *n, size_t i)
{
    if (i >= fb_cfg_list_len(n)) return NULL;
    return N(yaml_document_get_node(&r->doc, Y(n)->data.sequence.items.start[i]));
}

static yaml_node_t *node_of(struct fb_cfg *r, int id) { return yaml_document_get_node(&r->doc, id); }

/* ------------------------------------------------------------------ maps */
void fb_cfg_map_free(struct fb_cfg_map *m)
{
    free(m->kv);
    m->kv = NULL;
    m->n = 0;
}

static int map_find(const struct fb_cfg_map *m, const char *key)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->kv[i].key, key)) return i;
    return -1;
}

static bool map_push(struct fb_cfg_map *m, const char *key, yaml_node_t *k, yaml_node_t *v)
{
    struct fb_cfg_kv *t = realloc(m->kv, (size_t)(m->n + 1) * sizeof *t);
    if (!t) return false;
    m->kv = t;
    m->kv[m->n++] = (struct fb_cfg_kv){key, N(k), N(v)};
    return true;
}

/* Whether node n was already merged into the map being loaded (and mark it).
 * A mapping reached twice through merge keys adds nothing the second time
 * (the first occurrence's keys won), so each node is merged at most once per
 * map_load: linear work whatever the fan-out of `<<: [*a, *a, …]` chains. */
static bool merge_seen(struct fb_cfg *r, yaml_node_t *n)
{
    size_t i = (size_t)(n - r->doc.nodes.start), cnt = (size_t)(r->doc.nodes.top - r->doc.nodes.start);
    if (i >= cnt) return true;
    if (!r->merge_seen) {
        r->merge_seen = calloc(cnt, sizeof *r->merge_seen);
        if (!r->merge_seen) return true;
    }
    if (r->merge_seen[i] == r->merge_gen) return true;
    r->merge_seen[i] = r->merge_gen;
    return false;
}

/* Merge `<<: *x` (a mapping or a list of mappings, as YAML's merge key
 * says) into m: explicit keys win, then earlier merges. */
static void map_merge(struct fb_cfg *r, struct fb_cfg_map *m, yaml_node_t *src, int depth)
{
    if (depth > 8) {
        fb_cfg_error(r, N(src), "merge keys ('<<') nested too deeply");
        return;
    }
    if (src->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = src->data.sequence.items.start; it < src->data.sequence.items.top; it++) {
            yaml_node_t *item = node_of(r, *it);
            if (item && item->type == YAML_SEQUENCE_NODE)
                fb_cfg_error(r, N(item), "'<<' needs a mapping or a list of mappings, got a list inside the list");
            else if (item)
                map_merge(r, m, item, depth + 1);
        }
        return;
    }
    if (src->type != YAML_MAPPING_NODE) {
        fb_cfg_error(r, N(src), "'<<' needs a mapping (or a list of mappings), got %s", fb_cfg_kind_name(N(src)));
        return;
    }
    if (merge_seen(r, src)) return;
    for (yaml_node_pair_t *p = src->data.mapping.pairs.start; p < src->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_of(r, p->key), *v = node_of(r, p->value);
        if (!k || k->type != YAML_SCALAR_NODE) continue;
        const char *key = (const char *)k->data.scalar.value;
        if (!strcmp(key, "<<")) {
            map_merge(r, m, v, depth + 1);
            continue;
        }
        if (map_find(m, key) >= 0) continue;
        if (m->n >= MAX_MAP_KEYS) {
            fb_cfg_error(r, N(src), "more than %d keys in one mapping (with merged ones)", MAX_MAP_KEYS);
            return;
        }
        map_push(m, key, k, v);
    }
}

bool fb_cfg_map_load(struct fb_cfg *r, const struct fb_cfg_node *node, const char *what, struct fb_cfg_map *m)
{
    m->kv = NULL;
    m->n = 0;
    yaml_node_t *n = Y(node);
    if (!n) return false;
    if (n->type != YAML_MAPPING_NODE) {
        fb_cfg_error(r, node, "%s must be a mapping (key: value), got %s", what, fb_cfg_kind_name(node));
        return false;
    }
    yaml_node_t *merge = NULL;
    if (n->data.mapping.pairs.top - n->data.mapping.pairs.start > MAX_MAP_KEYS) {
        fb_cfg_error(r, node, "%s has more than %d keys", what, MAX_MAP_KEYS);
        return false;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_of(r, p->key), *v = node_of(r, p->value);
        if (!k || k->type != YAML_SCALAR_NODE) {
            fb_cfg_error(r, N(k), "keys in %s must be plain names", what);
            continue;
        }
        const char *key = (const char *)k->data.scalar.value;
        if (!strcmp(key, "<<")) {
            merge = v;
            continue;
        }
        int prev = map_find(m, key);
        if (prev >= 0) {
            fb_cfg_error(r, N(k), "duplicate key '%s' in %s (first at line %d)", key, what,
                         fb_cfg_mark(m->kv[prev].k).line);
            continue;
        }
        map_push(m, key, k, v);
    }
    if (merge) {
        r->merge_gen++;
        merge_seen(r, n); /* a map merging itself (an alias cycle) adds nothing */
        map_merge(r, m, merge, 0);
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
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < d[i][j])
                d[i][j] = d[i - 2][j - 2] + 1; /* transposition */
        }
    return d[la][lb];
}

const char *fb_cfg_suggest(const char *s, const char *const *names)
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

static const char *suggest_cached(struct fb_cfg *r, const char *key, const char *const *allowed)
{
    size_t len = strlen(key);
    if (len >= sizeof r->sg[0].key) return fb_cfg_suggest(key, allowed);
    uint64_t h = 1469598103934665603ull, hk;
    for (const char *const *a = allowed; *a; a++) h = (h ^ (uint64_t)(uintptr_t)*a) * 1099511628211ull;
    hk = h;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) hk = (hk ^ *p) * 1099511628211ull;
    struct sg_cache *e = &r->sg[(hk ^ hk >> 32) % (sizeof r->sg / sizeof r->sg[0])];
    if (e->used && e->h == h && !strcmp(e->key, key)) return e->best;
    e->best = fb_cfg_suggest(key, allowed);
    e->h = h;
    e->used = true;
    memcpy(e->key, key, len + 1);
    return e->best;
}

void fb_cfg_map_check(struct fb_cfg *r, const struct fb_cfg_map *m, const char *const *allowed, const char *what,
                      bool x_keys)
{
    for (int i = 0; i < m->n; i++) {
        bool ok = x_keys && !strncmp(m->kv[i].key, "x-", 2);
        for (const char *const *a = allowed; *a && !ok; a++)
            if (!strcmp(*a, m->kv[i].key)) ok = true;
        if (ok) continue;
        const char *s = suggest_cached(r, m->kv[i].key, allowed);
        if (s)
            fb_cfg_error(r, m->kv[i].k, "unknown key '%s' in %s (did you mean '%s'?)", m->kv[i].key, what, s);
        else
            fb_cfg_error(r, m->kv[i].k, "unknown key '%s' in %s", m->kv[i].key, what);
    }
}

struct fb_cfg_node *fb_cfg_get(const struct fb_cfg_map *m, const char *key)
{
    int i = map_find(m, key);
    if (i < 0 || fb_cfg_is_null(m->kv[i].v)) return NULL;
    return m->kv[i].v;
}

struct fb_cfg_node *fb_cfg_key(const struct fb_cfg_map *m, const char *key)
{
    int i = map_find(m, key);
    return i < 0 ? NULL : m->kv[i].k;
}

/* --------------------------------------------------------- typed values */
char *fb_cfg_str(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what)
{
    if (!n) return NULL;
    if (Y(n)->type != YAML_SCALAR_NODE) {
        fb_cfg_error(r, n, "%s must be a single value, got %s", what, fb_cfg_kind_name(n));
        return NULL;
    }
    struct fb_err e = {0};
    char *env = NULL;
    if (fb_env_expand((const char *)Y(n)->data.scalar.value, &env, &e) < 0) {
        fb_cfg_error(r, n, "%s: %s", what, e.msg);
        return NULL;
    }
    if (!vars) return env;
    char *out = NULL;
    int rc = fb_tmpl_subst(vars, env, &out, &e);
    free(env);
    if (rc < 0) {
        fb_cfg_error(r, n, "%s: %s", what, e.msg);
        return NULL;
    }
    return out;
}

bool fb_cfg_dur(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what,
                bool positive, int64_t *out)
{
    char *s = fb_cfg_str(r, vars, n, what);
    if (!s) return false;
    int64_t v;
    if (fb_parse_duration(s, &v) < 0) {
        fb_cfg_error(r, n, "%s: bad duration '%s' (examples: 250us, 100ms, 1.5s, 2m, 1h, 7d; a bare number is seconds)",
                     what, s);
        free(s);
        return false;
    }
    if (positive && v <= 0) {
        fb_cfg_error(r, n, "%s must be greater than 0 (got '%s')", what, s);
        free(s);
        return false;
    }
    free(s);
    *out = v;
    return true;
}

bool fb_cfg_size(struct fb_cfg *r, const struct fb_cfg_node *n, const char *what, uint64_t min, uint64_t *out)
{
    char *s = fb_cfg_str(r, NULL, n, what);
    if (!s) return false;
    uint64_t v;
    bool ok = fb_parse_size(s, &v) == 0 && v >= min;
    if (!ok) {
        char m[32];
        if (min >= 1024 && min % 1024 == 0)
            snprintf(m, sizeof m, "%lluKiB", (unsigned long long)(min / 1024));
        else
            snprintf(m, sizeof m, "%llu bytes", (unsigned long long)min);
        fb_cfg_error(r, n, "%s: expected a size of at least %s such as 512MiB, got '%s'", what, m, s);
    } else {
        *out = v;
    }
    free(s);
    return ok;
}

bool fb_cfg_num(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what,
                double *out)
{
    char *s = fb_cfg_str(r, vars, n, what);
    if (!s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    bool ok = end != s && !*end && errno != ERANGE && v == v && v - v == 0;
    if (!ok) {
        fb_cfg_error(r, n, "%s: expected a number, got '%s'", what, s);
        free(s);
        return false;
    }
    free(s);
    *out = v;
    return true;
}

bool fb_cfg_int(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what,
                long long lo, long long hi, long long *out)
{
    char *s = fb_cfg_str(r, vars, n, what);
    if (!s) return false;
    int64_t v;
    if (!fb_tmpl_int(s, &v)) {
        fb_cfg_error(r, n, "%s: expected an integer, got '%s'", what, s);
        free(s);
        return false;
    }
    free(s);
    if (v < lo || v > hi) {
        fb_cfg_error(r, n, "%s: %lld is out of range (%lld..%lld)", what, (long long)v, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

bool fb_cfg_bool(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what,
                 bool *out)
{
    char *s = fb_cfg_str(r, vars, n, what);
    if (!s) return false;
    static const char *const t[] = {"true", "yes", "on", "1"}, *const f[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, t[i]) || !strcasecmp(s, f[i])) {
            *out = !strcasecmp(s, t[i]);
            free(s);
            return true;
        }
    }
    fb_cfg_error(r, n, "%s: expected true or false, got '%s'", what, s);
    free(s);
    return false;
}

bool fb_cfg_enum(struct fb_cfg *r, const struct fb_cfg_node *n, const char *what, const char *const *names, int *out)
{
    char *s = fb_cfg_str(r, NULL, n, what);
    if (!s) return false;
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i])) {
            *out = i;
            free(s);
            return true;
        }
    char list[256];
    size_t off = 0;
    list[0] = 0;
    for (int i = 0; names[i] && off < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", names[i]);
    fb_cfg_error(r, n, "%s: expected one of %s, got '%s'", what, list, s);
    free(s);
    return false;
}

char *fb_cfg_path(const struct fb_cfg *r, const char *p)
{
    if (p[0] == '/' || !r->dir || !strcmp(r->dir, ".")) return strdup(p);
    size_t n = strlen(r->dir) + strlen(p) + 2;
    char *o = malloc(n);
    if (o) snprintf(o, n, "%s/%s", r->dir, p);
    return o;
}

char *fb_cfg_file_ref(struct fb_cfg *r, const struct fb_cfg_node *n, const char *what, enum fb_opt_kind kind,
                      bool *usable)
{
    if (usable) *usable = false;
    char *s = fb_cfg_str(r, NULL, n, what);
    if (!s) return NULL;
    char *p = fb_cfg_path(r, s);
    free(s);
    if (!p) return NULL;
    struct fb_err e = {0};
    int rc = fb_check_file(p, kind, &e);
    if (kind == FB_OPT_CERT || kind == FB_OPT_DIR || kind == FB_OPT_CRL) { /* for the expiry watch */
        struct cert_note *t = realloc(r->certs, (r->ncerts + 1) * sizeof *t);
        if (t) {
            r->certs = t;
            t[r->ncerts].what = strdup(what);
            t[r->ncerts].path = strdup(p);
            t[r->ncerts].kind = kind;
            if (t[r->ncerts].what && t[r->ncerts].path) {
                r->ncerts++;
            } else {
                free(t[r->ncerts].what);
                free(t[r->ncerts].path);
            }
        }
    }
    if (rc == FB_ENOENT || rc == FB_EIO)
        fb_cfg_warn(r, n, "%s: %s", what, e.msg);
    else if (rc < 0)
        fb_cfg_error(r, n, "%s: %s", what, e.msg);
    else if (usable)
        *usable = true;
    return p;
}

void fb_cfg_each_cert(const struct fb_cfg *r, void (*fn)(void *ctx, const char *what, const char *path, int kind),
                      void *ctx)
{
    for (size_t i = 0; i < r->ncerts; i++) fn(ctx, r->certs[i].what, r->certs[i].path, (int)r->certs[i].kind);
}

/* The scalar must be exactly one ${VAR} reference. */
static bool is_env_ref(const struct fb_cfg_node *n)
{
    const char *s = fb_cfg_scalar(n);
    if (!s) return false;
    size_t len = strlen(s);
    if (len < 4 || s[0] != '$' || s[1] != '{' || s[len - 1] != '}') return false;
    for (size_t i = 2; i < len - 1; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_') return false;
    return true;
}

char *fb_cfg_secret(struct fb_cfg *r, const struct fb_cfg_map *m, const char *key, const char *what)
{
    char fkey[64], name[128];
    snprintf(fkey, sizeof fkey, "%s_file", key);
    struct fb_cfg_node *v = fb_cfg_get(m, key), *f = fb_cfg_get(m, fkey);
    if (v && f) {
        fb_cfg_error(r, fb_cfg_key(m, key), "give either %s.%s or %s.%s, not both", what, key, what, fkey);
        return NULL;
    }
    if (v) {
        snprintf(name, sizeof name, "%s.%s", what, key);
        if (!is_env_ref(v)) {
            fb_cfg_error(r, v, "%s: a literal %s is not allowed in the config file; use %s: or %s: \"${ENV_VAR}\"",
                         name, key, fkey, key);
            return NULL;
        }
        char *val = fb_cfg_str(r, NULL, v, name);
        fb_secret_note(val); /* from now on no output path prints it */
        return val;
    }
    if (!f) return NULL;
    snprintf(name, sizeof name, "%s.%s", what, fkey);
    bool usable;
    char *p = fb_cfg_file_ref(r, f, name, FB_OPT_SECRET, &usable);
    char *secret = NULL;
    if (p && usable) {
        struct fb_err e = {0};
        if (fb_read_secret_file(p, &secret, &e) < 0) fb_cfg_error(r, f, "%s: %s", name, e.msg);
    }
    free(p);
    return secret;
}

bool fb_cfg_name_ok(const char *s)
{
    if (!*s) return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-') return false;
    return true;
}

bool fb_cfg_level_ok(const char *s)
{
    if (!*s) return false;
    for (const char *p = s; *p; p++)
        if (*p == '/' || *p == '+' || *p == '#' || (unsigned char)*p < 0x20) return false;
    return true;
}
