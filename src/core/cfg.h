/* cfg.h — the config reader: what the core, every sink and every driver use
 * to read their part of the YAML configuration with the same checks and the
 * same `file:line:col: message` diagnostics.
 *
 * A reader holds one parsed document.  Sections are read as maps (merge keys
 * `<<: *anchor` applied, duplicate keys refused); every key is checked
 * against the section's table, with a suggestion for a near miss.  Typed
 * readers expand ${ENV} (and, inside a `for:` entry, the loop placeholders)
 * before they convert, so no key can forget to.  Errors never stop the walk:
 * they are collected and printed in file order by fb_cfg_finish, so one run
 * of `fieldbridge check` shows every mistake.
 *
 * Nodes are opaque (struct fb_cfg_node); NULL is a valid "absent" node for
 * every reader that takes one.  Ownership: strings returned are malloc'd
 * and the caller's.
 */
#ifndef FB_CFG_H
#define FB_CFG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/env.h"
#include "core/fb.h"

struct fb_cfg;
struct fb_cfg_node;
struct fb_tvars; /* loop variables of a `for:` entry (core/config_tmpl.h) */

struct fb_cfg_kv {
    const char *key;
    struct fb_cfg_node *k, *v;
};
/* The keys a section accepts ("mqtt", "tls", "tag", …), for key checks and
 * for the test that docs/configuration.md documents every one. */
struct fb_config_keys {
    const char *section;
    const char *const *keys; /* NULL-terminated */
};

/* The keys of one mapping, in file order, merge keys applied. */
struct fb_cfg_map {
    struct fb_cfg_kv *kv;
    int n;
};

/* ------------------------------------------------------------ the reader */
/* Parse `path`.  NULL on a YAML syntax error (already reported to diag) or
 * when the file cannot be read.  strict: referenced files that are missing
 * are errors instead of warnings. */
struct fb_cfg *fb_cfg_open(const char *path, bool strict, FILE *diag);
/* Parse an in-memory document; `name` stands for the file in messages. */
struct fb_cfg *fb_cfg_open_mem(const char *name, const char *text, size_t len, bool strict, FILE *diag);
struct fb_cfg_node *fb_cfg_root(struct fb_cfg *r);
const char *fb_cfg_file(const struct fb_cfg *r);
bool fb_cfg_strict(const struct fb_cfg *r);
/* Lower the `for:` entries, devices and tags a document may make to n each
 * (0: the defaults, 100,000 / 100,000 / 2,000,000; config_dev.c). */
void fb_cfg_set_max_expand(struct fb_cfg *r, uint32_t n);
uint32_t fb_cfg_max_expand(const struct fb_cfg *r);
int fb_cfg_errors(const struct fb_cfg *r);
/* Print every collected message in file order and free the reader.
 * Returns the number of errors. */
int fb_cfg_finish(struct fb_cfg *r);

/* ----------------------------------------------------------- diagnostics */
struct fb_cfg_mark {
    int line, col; /* 1-based; 0 = the file as a whole */
};
struct fb_cfg_mark fb_cfg_mark(const struct fb_cfg_node *n);
void fb_cfg_error(struct fb_cfg *r, const struct fb_cfg_node *n, const char *fmt, ...) FB_PRINTF(3, 4);
void fb_cfg_error_at(struct fb_cfg *r, struct fb_cfg_mark m, const char *fmt, ...) FB_PRINTF(3, 4);
/* A warning that --strict turns into an error (missing referenced files). */
void fb_cfg_warn(struct fb_cfg *r, const struct fb_cfg_node *n, const char *fmt, ...) FB_PRINTF(3, 4);
void fb_cfg_warn_at(struct fb_cfg *r, struct fb_cfg_mark m, const char *fmt, ...) FB_PRINTF(3, 4);
/* A plain warning, never promoted. */
void fb_cfg_note(struct fb_cfg *r, const struct fb_cfg_node *n, const char *fmt, ...) FB_PRINTF(3, 4);

/* ----------------------------------------------------------------- nodes */
enum fb_cfg_kind { FB_CFG_NONE = 0, FB_CFG_SCALAR, FB_CFG_LIST, FB_CFG_MAP };
enum fb_cfg_kind fb_cfg_kind(const struct fb_cfg_node *n);
const char *fb_cfg_kind_name(const struct fb_cfg_node *n); /* "a scalar", "a list", ... */
/* A plain `~`, `null` or empty scalar (or NULL). */
bool fb_cfg_is_null(const struct fb_cfg_node *n);
/* The raw text of a scalar (no expansion), NULL for other kinds. */
const char *fb_cfg_scalar(const struct fb_cfg_node *n);
/* Items of a list: count and the i-th item (NULL when out of range or not a list). */
size_t fb_cfg_list_len(const struct fb_cfg_node *n);
struct fb_cfg_node *fb_cfg_list_at(struct fb_cfg *r, const struct fb_cfg_node *n, size_t i);

/* ------------------------------------------------------------------ maps */
/* Load mapping node n (section `what`) into m.  false, with an error, when n
 * is not a mapping.  m must be freed with fb_cfg_map_free either way. */
bool fb_cfg_map_load(struct fb_cfg *r, const struct fb_cfg_node *n, const char *what, struct fb_cfg_map *m);
void fb_cfg_map_free(struct fb_cfg_map *m);
/* Unknown keys are errors, with a suggestion when one is close.  allowed is
 * NULL-terminated; with x_keys, `x-…` keys are accepted (YAML templates). */
void fb_cfg_map_check(struct fb_cfg *r, const struct fb_cfg_map *m, const char *const *allowed, const char *what,
                      bool x_keys);
/* The value for key, NULL when absent or null. */
struct fb_cfg_node *fb_cfg_get(const struct fb_cfg_map *m, const char *key);
/* The key node itself (for messages about the key), NULL when absent. */
struct fb_cfg_node *fb_cfg_key(const struct fb_cfg_map *m, const char *key);
/* The closest name in a NULL-terminated list, or NULL if none is close. */
const char *fb_cfg_suggest(const char *s, const char *const *names);

/* --------------------------------------------------------- typed values */
/* vars: the loop variables inside a `for:` entry, NULL elsewhere.  Each
 * reader reports its own error (naming `what`) and returns false/NULL. */
char *fb_cfg_str(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what);
bool fb_cfg_dur(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what,
                bool positive, int64_t *out);
bool fb_cfg_size(struct fb_cfg *r, const struct fb_cfg_node *n, const char *what, uint64_t min, uint64_t *out);
bool fb_cfg_num(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what,
                double *out);
bool fb_cfg_int(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what,
                long long lo, long long hi, long long *out);
bool fb_cfg_bool(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what,
                 bool *out);
/* One of names (NULL-terminated): its index in *out. */
bool fb_cfg_enum(struct fb_cfg *r, const struct fb_cfg_node *n, const char *what, const char *const *names, int *out);

/* A path relative to the config file's directory (malloc'd). */
char *fb_cfg_path(const struct fb_cfg *r, const char *p);
/* A referenced file or directory: the path made relative to the config
 * file, checked as the gateway will use it (fb_check_file): missing or
 * unreadable → warning (an error with --strict); group/other access to a
 * secret or key, or a directory where a file belongs → error.  *usable (may
 * be NULL) says whether it passed. */
char *fb_cfg_file_ref(struct fb_cfg *r, const struct fb_cfg_node *n, const char *what, enum fb_opt_kind kind,
                      bool *usable);
/* Every certificate, CA directory and CRL file named through fb_cfg_file_ref
 * so far (what: the key, "mqtt.tls.cert"; kind: enum fb_opt_kind), for the
 * expiry watch (core/certs.c). */
void fb_cfg_each_cert(const struct fb_cfg *r, void (*fn)(void *ctx, const char *what, const char *path, int kind),
                      void *ctx);
/* A secret given as `<key>: "${ENV}"` or `<key>_file: path` in m (never a
 * literal): its value (malloc'd, the caller wipes it), or NULL when neither
 * is given or after an error.  The file must not be readable by others. */
char *fb_cfg_secret(struct fb_cfg *r, const struct fb_cfg_map *m, const char *key, const char *what);

/* Names of devices and tags (they end up in topics and JSON keys). */
bool fb_cfg_name_ok(const char *s);
/* A topic level (site, area, line, ids): no MQTT wildcards or separators. */
bool fb_cfg_level_ok(const char *s);
#endif
