/* redact.c — the running configuration as GET /api/v1/config shows it.
 *
 * fieldbridge never takes a literal secret in its config (a secret is
 * `${ENV}` or a `*_file` with a permission check), but a default in
 * `${VAR:-default}`, a password written into a URL's user part, or a
 * secret query option of a device URL can still carry one.  So the text is
 * shown with every such value replaced, and the places are listed.
 *
 * Done on the text, not by re-emitting the parsed document, so that the
 * user's comments, order and layout survive: libyaml's parser gives each
 * scalar's start and end mark, and the replacement is spliced in there.
 * libyaml counts marks in characters, not bytes, so the marks are mapped
 * back to byte offsets by walking the UTF-8 text once.
 */
#include "north/http/redact.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

static const char *const secret_words[] = {"password", "secret",  "token",  "passphrase",
                                           "psk",      "api_key", "apikey", NULL};

/* A secret word as the whole key or one of its _-separated parts
 * ("password", "mqtt_password", "client_secret"), except where the key
 * names a file ("password_file", "tokens" — a file of hashes). */
bool fb_redact_key(const char *key)
{
    if (!key) return false;
    size_t n = strlen(key);
    if (n >= 5 && !strcasecmp(key + n - 5, "_file")) return false; /* a file name, not the secret */
    if (n >= 5 && !strcasecmp(key + n - 5, "_path")) return false;
    for (const char *const *w = secret_words; *w; w++) {
        size_t wl = strlen(*w);
        for (size_t i = 0; i + wl <= n; i++)
            if (!strncasecmp(key + i, *w, wl) && (i == 0 || key[i - 1] == '_' || key[i - 1] == '-') &&
                (i + wl == n || key[i + wl] == '_' || key[i + wl] == '-'))
                return true;
    }
    return false;
}

int fb_redact_url(struct fb_buf *out, const char *url, size_t len)
{
    int count = 0;
    const char *end = url + len;
    const char *p = url;
    /* user part: scheme://user:password@host */
    const char *ss = NULL;
    for (const char *q = url; q + 2 < end; q++)
        if (q[0] == ':' && q[1] == '/' && q[2] == '/') {
            ss = q + 3;
            break;
        }
    if (ss) {
        size_t auth_len = strcspn(ss, "/?#");
        if (ss + auth_len > end) auth_len = (size_t)(end - ss);
        const char *at = NULL;
        for (const char *q = ss; q < ss + auth_len; q++)
            if (*q == '@') at = q; /* the last one: a password may hold '@' only percent-encoded anyway */
        const char *colon = NULL;
        if (at)
            for (const char *q = ss; q < at; q++)
                if (*q == ':') {
                    colon = q;
                    break;
                }
        if (colon) {
            fb_buf_put(out, url, (size_t)(colon + 1 - url));
            fb_buf_puts(out, "***");
            p = at;
            count++;
        }
    }
    const char *qm = memchr(p, '?', (size_t)(end - p));
    if (!qm) {
        fb_buf_put(out, p, (size_t)(end - p));
        return count;
    }
    fb_buf_put(out, p, (size_t)(qm + 1 - p));
    p = qm + 1;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *hash = memchr(p, '#', (size_t)(pe - p));
        if (hash) pe = hash;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (eq) {
            char key[64];
            size_t kl = (size_t)(eq - p) < sizeof key - 1 ? (size_t)(eq - p) : sizeof key - 1;
            memcpy(key, p, kl);
            key[kl] = 0;
            if (fb_redact_key(key) && eq + 1 < pe) {
                fb_buf_put(out, p, (size_t)(eq + 1 - p));
                fb_buf_puts(out, "***");
                count++;
            } else {
                fb_buf_put(out, p, (size_t)(pe - p));
            }
        } else {
            fb_buf_put(out, p, (size_t)(pe - p));
        }
        if (hash) {
            fb_buf_put(out, hash, (size_t)(end - hash));
            break;
        }
        if (!amp) break;
        fb_buf_putc(out, '&');
        p = amp + 1;
    }
    return count;
}

/* ------------------------------------------------------------------ YAML */
struct cut {
    size_t a, b; /* character marks of the scalar (start, end) */
    int line, col;
    char key[64];
    char *repl; /* malloc'd replacement text (a quoted YAML scalar) */
};

struct frame {
    bool map;      /* a mapping (else a sequence) */
    bool want_key; /* in a mapping: the next scalar is a key */
    char key[64];  /* the current key */
};

static bool looks_like_url(const char *s) { return strstr(s, "://") != NULL; }

/* A double-quoted YAML scalar of s. */
static char *quote(const char *s, size_t n)
{
    struct fb_buf b;
    fb_buf_init(&b);
    fb_json_str(&b, s, n); /* a JSON string is a valid YAML double-quoted scalar */
    fb_buf_cstr(&b);
    return b.p;
}

int fb_redact_yaml(const char *text, size_t len, struct fb_buf *out, struct fb_buf *where)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return -1;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    struct cut *cuts = NULL;
    size_t ncuts = 0, cap = 0;
    struct frame st[64];
    int depth = 0;
    bool ok = true, done = false;
    while (!done) {
        yaml_event_t e;
        if (!yaml_parser_parse(&p, &e)) {
            ok = false;
            break;
        }
        switch (e.type) {
            case YAML_STREAM_END_EVENT: done = true; break;
            case YAML_MAPPING_START_EVENT:
            case YAML_SEQUENCE_START_EVENT:
                if (depth >= 64) { /* deeper than any config: not shown at all */
                    ok = false;
                    done = true;
                    break;
                }
                if (depth > 0 && st[depth - 1].map) st[depth - 1].want_key = true; /* a value: next is a key */
                st[depth].map = e.type == YAML_MAPPING_START_EVENT;
                st[depth].want_key = true;
                /* a list under a secret key (password: [..]) keeps the key's meaning */
                snprintf(st[depth].key, sizeof st[depth].key, "%s", depth > 0 ? st[depth - 1].key : "");
                depth++;
                break;
            case YAML_MAPPING_END_EVENT:
            case YAML_SEQUENCE_END_EVENT:
                if (depth > 0) depth--;
                break;
            case YAML_SCALAR_EVENT:
            case YAML_ALIAS_EVENT: {
                struct frame *f = depth > 0 ? &st[depth - 1] : NULL;
                if (f && f->map && f->want_key) {
                    if (e.type == YAML_SCALAR_EVENT)
                        snprintf(f->key, sizeof f->key, "%s", (const char *)e.data.scalar.value);
                    else
                        f->key[0] = 0;
                    f->want_key = false;
                    break;
                }
                if (f && f->map) f->want_key = true;
                if (e.type != YAML_SCALAR_EVENT) break;
                const char *v = (const char *)e.data.scalar.value;
                size_t vl = e.data.scalar.length;
                const char *key = f ? f->key : "";
                char *repl = NULL;
                if (fb_redact_key(key) && vl > 0) {
                    repl = quote("***", 3);
                } else if (looks_like_url(v)) {
                    struct fb_buf u;
                    fb_buf_init(&u);
                    if (fb_redact_url(&u, v, vl) > 0) repl = quote(u.p, u.len);
                    fb_buf_free(&u);
                }
                if (!repl) break;
                if (ncuts == cap) {
                    cap = cap ? cap * 2 : 8;
                    struct cut *nc = realloc(cuts, cap * sizeof *nc);
                    if (!nc) {
                        free(repl);
                        ok = false;
                        done = true;
                        break;
                    }
                    cuts = nc;
                }
                struct cut *c = &cuts[ncuts++];
                c->a = e.start_mark.index;
                c->b = e.end_mark.index;
                c->line = (int)e.start_mark.line + 1;
                c->col = (int)e.start_mark.column + 1;
                snprintf(c->key, sizeof c->key, "%s", key);
                c->repl = repl;
                break;
            }
            default: break;
        }
        yaml_event_delete(&e);
    }
    yaml_parser_delete(&p);
    int count = -1;
    if (ok) {
        /* splice: walk the text, counting characters (UTF-8 lead bytes) */
        size_t ci = 0, k = 0;
        size_t i = 0;
        while (i < len) {
            if (k < ncuts && ci == cuts[k].a) {
                fb_buf_puts(out, cuts[k].repl);
                while (i < len && ci < cuts[k].b) { /* skip the original scalar */
                    i++;
                    while (i < len && ((unsigned char)text[i] & 0xC0) == 0x80) i++;
                    ci++;
                }
                k++;
                continue;
            }
            size_t s = i++;
            while (i < len && ((unsigned char)text[i] & 0xC0) == 0x80) i++;
            fb_buf_put(out, text + s, i - s);
            ci++;
        }
        count = (int)ncuts;
        if (where) {
            fb_buf_putc(where, '[');
            for (size_t j = 0; j < ncuts; j++) {
                if (j) fb_buf_putc(where, ',');
                fb_buf_printf(where, "{\"line\":%d,\"col\":%d,\"key\":", cuts[j].line, cuts[j].col);
                fb_json_cstr(where, cuts[j].key);
                fb_buf_putc(where, '}');
            }
            fb_buf_putc(where, ']');
        }
    }
    for (size_t j = 0; j < ncuts; j++) free(cuts[j].repl);
    free(cuts);
    return count;
}
