/* auth.c — bearer tokens for the HTTP API: the tokens file, look-up, and
 * making new tokens.
 *
 * Why SHA-256 and not a slow password hash: a token is 256 random bits made
 * by `fieldbridge http-token`, not something a person chose, so guessing it
 * from its hash is as hopeless with a fast hash as with PBKDF2 — while a
 * slow hash would cost tens of milliseconds on every request of a page that
 * polls.  What the file must never hold is the token itself, so a copy of
 * the file (a backup, a support bundle) does not let anyone in.
 *
 * Look-up hashes the presented token once and compares it with every entry
 * with CRYPTO_memcmp, without stopping at the first match.
 */
#include "north/http/auth.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/env.h"

const char *fb_http_role_name(int role)
{
    switch (role) {
        case FB_ROLE_VIEWER: return "viewer";
        case FB_ROLE_OPERATOR: return "operator";
        default: return "none";
    }
}

int fb_http_role_parse(const char *s)
{
    if (s && !strcmp(s, "viewer")) return FB_ROLE_VIEWER;
    if (s && !strcmp(s, "operator")) return FB_ROLE_OPERATOR;
    return FB_ROLE_NONE;
}

int fb_http_token_name_ok(const char *s, size_t n)
{
    if (n == 0 || n >= FB_TOKEN_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-' && c != '@') return 0;
    }
    return 1;
}

static int sha256(const void *p, size_t n, uint8_t out[32])
{
    unsigned int len = 0;
    return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32 ? 0 : FB_EIO;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void fb_http_tokens_free(struct fb_http_tokens *t)
{
    if (!t) return;
    if (t->t) OPENSSL_cleanse(t->t, t->n * sizeof *t->t);
    free(t->t);
    t->t = NULL;
    t->n = 0;
}

/* One line, without its newline: NAME:ROLE:sha256:HEX. */
static int parse_line(const char *file, int lineno, const char *s, size_t n, struct fb_http_token *tk,
                      struct fb_err *err)
{
    const char *c1 = memchr(s, ':', n);
    const char *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - s)) : NULL;
    const char *c3 = c2 ? memchr(c2 + 1, ':', n - (size_t)(c2 + 1 - s)) : NULL;
    if (!c3)
        return fb_err_set(err, FB_EINVAL, "%s:%d: expected NAME:ROLE:sha256:HEX (fieldbridge http-token makes one)",
                          file, lineno);
    size_t nl = (size_t)(c1 - s);
    if (!fb_http_token_name_ok(s, nl))
        return fb_err_set(err, FB_EINVAL, "%s:%d: bad token name '%.*s' (1..63 of A-Z a-z 0-9 . _ - @)", file, lineno,
                          (int)(nl < 80 ? nl : 80), s);
    char role[16];
    size_t rl = (size_t)(c2 - c1 - 1);
    snprintf(role, sizeof role, "%.*s", (int)(rl < 15 ? rl : 15), c1 + 1);
    tk->role = rl < 15 ? fb_http_role_parse(role) : FB_ROLE_NONE;
    if (tk->role == FB_ROLE_NONE)
        return fb_err_set(err, FB_EINVAL, "%s:%d: unknown role '%.*s' (viewer or operator)", file, lineno,
                          (int)(rl < 40 ? rl : 40), c1 + 1);
    if ((size_t)(c3 - c2 - 1) != 6 || strncmp(c2 + 1, "sha256", 6))
        return fb_err_set(err, FB_EINVAL, "%s:%d: unknown hash '%.*s' (sha256)", file, lineno,
                          (int)((size_t)(c3 - c2 - 1) < 40 ? (size_t)(c3 - c2 - 1) : 40), c2 + 1);
    const char *h = c3 + 1;
    size_t hl = n - (size_t)(h - s);
    while (hl && (h[hl - 1] == ' ' || h[hl - 1] == '\t' || h[hl - 1] == '\r')) hl--;
    if (hl != 64) return fb_err_set(err, FB_EINVAL, "%s:%d: the hash must be 64 hex digits", file, lineno);
    for (size_t i = 0; i < 32; i++) {
        int a = hexval(h[2 * i]), b = hexval(h[2 * i + 1]);
        if (a < 0 || b < 0) return fb_err_set(err, FB_EINVAL, "%s:%d: the hash must be 64 hex digits", file, lineno);
        tk->hash[i] = (uint8_t)(a << 4 | b);
    }
    memcpy(tk->name, s, nl);
    tk->name[nl] = 0;
    return 0;
}

int fb_http_tokens_parse(const char *file, const char *text, size_t len, struct fb_http_tokens *out, struct fb_err *err)
{
    out->t = NULL;
    out->n = 0;
    size_t cap = 0;
    int lineno = 0;
    for (size_t i = 0; i < len;) {
        const char *nlp = memchr(text + i, '\n', len - i);
        size_t e = nlp ? (size_t)(nlp - text) : len;
        const char *s = text + i;
        size_t n = e - i;
        i = e + 1;
        lineno++;
        while (n && (*s == ' ' || *s == '\t')) s++, n--;
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) n--;
        if (n == 0 || *s == '#') continue;
        if (memchr(s, 0, n)) {
            fb_http_tokens_free(out);
            return fb_err_set(err, FB_EINVAL, "%s:%d: NUL byte", file, lineno);
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 8;
            struct fb_http_token *nt = realloc(out->t, cap * sizeof *nt);
            if (!nt) {
                fb_http_tokens_free(out);
                return fb_err_set(err, FB_ENOMEM, "out of memory");
            }
            out->t = nt;
        }
        struct fb_http_token *tk = &out->t[out->n];
        memset(tk, 0, sizeof *tk);
        if (parse_line(file, lineno, s, n, tk, err) < 0) {
            fb_http_tokens_free(out);
            return FB_EINVAL;
        }
        for (size_t k = 0; k < out->n; k++)
            if (!strcmp(out->t[k].name, tk->name)) {
                fb_err_set(err, FB_EINVAL, "%s:%d: token name '%s' appears twice", file, lineno, tk->name);
                fb_http_tokens_free(out);
                return FB_EINVAL;
            }
        out->n++;
    }
    return 0;
}

int fb_http_tokens_load(const char *path, struct fb_http_tokens *out, struct fb_err *err)
{
    out->t = NULL;
    out->n = 0;
    char *text = NULL;
    int rc = fb_read_secret_file(path, &text, err);
    if (rc < 0) return rc;
    rc = fb_http_tokens_parse(path, text, strlen(text), out, err);
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    return rc;
}

const struct fb_http_token *fb_http_tokens_find(const struct fb_http_tokens *t, const char *token, size_t len)
{
    uint8_t h[32];
    if (!t || !token || sha256(token, len, h) < 0) return NULL;
    const struct fb_http_token *found = NULL;
    for (size_t i = 0; i < t->n; i++)
        if (CRYPTO_memcmp(h, t->t[i].hash, 32) == 0 && !found) found = &t->t[i];
    return found;
}

int fb_http_bearer(const char *h, const char **tok, size_t *len)
{
    *tok = NULL;
    *len = 0;
    if (!h) return FB_ENOENT;
    while (*h == ' ' || *h == '\t') h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t')) return FB_EINVAL;
    h += 6;
    while (*h == ' ' || *h == '\t') h++;
    size_t n = 0;
    /* RFC 6750 b64token: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/", then "="s */
    while (h[n] && (isalnum((unsigned char)h[n]) || strchr("-._~+/", h[n]))) n++;
    while (h[n] == '=') n++;
    size_t e = n;
    while (h[e] == ' ' || h[e] == '\t') e++;
    if (n == 0 || h[e] || n > 512) return FB_EINVAL;
    *tok = h;
    *len = n;
    return 0;
}

int fb_http_token_new(const char *name, const char *role, char *tok, size_t tok_cap, char *line, size_t line_cap,
                      struct fb_err *err)
{
    if (!name || !fb_http_token_name_ok(name, strlen(name)))
        return fb_err_set(err, FB_EINVAL, "bad token name '%s' (1..63 of A-Z a-z 0-9 . _ - @)", name ? name : "");
    if (fb_http_role_parse(role) == FB_ROLE_NONE)
        return fb_err_set(err, FB_EINVAL, "unknown role '%s' (viewer or operator)", role ? role : "");
    if (tok_cap < 64 || line_cap < 200) return fb_err_set(err, FB_EINVAL, "buffers too small");
    uint8_t rnd[32];
    if (RAND_bytes(rnd, sizeof rnd) != 1) return fb_err_set(err, FB_EIO, "no random numbers from OpenSSL");
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    memcpy(tok, "fbt_", 4);
    o = 4;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < sizeof rnd; i++) {
        acc = acc << 8 | rnd[i];
        bits += 8;
        while (bits >= 6) {
            tok[o++] = b64[(acc >> (bits - 6)) & 63];
            bits -= 6;
        }
    }
    if (bits) tok[o++] = b64[(acc << (6 - bits)) & 63];
    tok[o] = 0;
    OPENSSL_cleanse(rnd, sizeof rnd);
    uint8_t h[32];
    if (sha256(tok, o, h) < 0) return fb_err_set(err, FB_EIO, "SHA-256 failed");
    int n = snprintf(line, line_cap, "%s:%s:sha256:", name, role);
    for (size_t i = 0; i < 32 && n > 0 && (size_t)n + 3 < line_cap; i++) n += snprintf(line + n, 3, "%02x", h[i]);
    return 0;
}
