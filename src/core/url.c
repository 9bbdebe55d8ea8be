/* url.c — device and broker URLs, the text the config loader and the CLI
 * share.  A URL is parsed once into struct fb_url:
 *
 *     scheme://[host][:port][/path][?k=v&k=v]
 *
 * - the scheme is lower-cased; it may contain letters, digits, '+', '-', '.'
 *   ("opc.tcp", "modbus-tcp");
 * - the host may be empty (modbus-rtu:///dev/ttyUSB0 → host "", path
 *   "/dev/ttyUSB0") or an IPv6 literal in brackets ([::1]:502 → host "::1");
 * - path, query keys and values are percent-decoded (%2F); '+' stays '+';
 * - credentials in the URL (user:pass@) are refused: secrets never sit in a
 *   URL that ends up in logs and summaries;
 * - a query key given twice is an error (which one would win is a guess).
 * host and path are never NULL after a successful parse ("" when absent).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/url.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decode [s, s+n) into a new string; NULL on a bad escape or a %00. */
static char *pct_decode(const char *s, size_t n, struct fb_err *err, const char *what)
{
    char *o = malloc(n + 1);
    if (!o) {
        fb_err_set(err, FB_ENOMEM, "out of memory");
        return NULL;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n || hexval((unsigned char)s[i + 1]) < 0 || hexval((unsigned char)s[i + 2]) < 0) {
                free(o);
                fb_err_set(err, FB_EINVAL, "bad percent escape in URL %s", what);
                return NULL;
            }
            int c = hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]);
            if (c == 0) {
                free(o);
                fb_err_set(err, FB_EINVAL, "%%00 is not allowed in URL %s", what);
                return NULL;
            }
            o[j++] = (char)c;
            i += 2;
        } else {
            o[j++] = s[i];
        }
    }
    o[j] = 0;
    return o;
}

void fb_url_free(struct fb_url *u)
{
    if (!u) return;
    free(u->scheme);
    free(u->host);
    free(u->path);
    for (int i = 0; i < u->nq; i++) {
        free(u->q[i].k);
        free(u->q[i].v);
    }
    free(u->q);
    memset(u, 0, sizeof(*u));
}

const char *fb_url_get(const struct fb_url *u, const char *k)
{
    if (!u || !k) return NULL;
    for (int i = 0; i < u->nq; i++)
        if (strcmp(u->q[i].k, k) == 0) return u->q[i].v;
    return NULL;
}

static int parse_query(const char *q, struct fb_url *u, struct fb_err *err)
{
    const char *p = q;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        if (n > 0) {
            const char *eq = memchr(p, '=', n);
            size_t kn = eq ? (size_t)(eq - p) : n;
            if (kn == 0) return fb_err_set(err, FB_EINVAL, "empty key in URL query");
            char *k = pct_decode(p, kn, err, "query");
            if (!k) return FB_EINVAL;
            char *v = eq ? pct_decode(eq + 1, n - kn - 1, err, "query") : strdup("");
            if (!v) {
                free(k);
                return FB_EINVAL;
            }
            if (fb_url_get(u, k)) {
                fb_err_set(err, FB_EINVAL, "URL query key '%s' given twice", k);
                free(k);
                free(v);
                return FB_EINVAL;
            }
            struct fb_url_kv *nq = realloc(u->q, sizeof(*nq) * (size_t)(u->nq + 1));
            if (!nq) {
                free(k);
                free(v);
                return fb_err_set(err, FB_ENOMEM, "out of memory");
            }
            u->q = nq;
            u->q[u->nq].k = k;
            u->q[u->nq].v = v;
            u->nq++;
        }
        if (!amp) break;
        p = amp + 1;
    }
    return 0;
}

int fb_url_parse(const char *text, struct fb_url *u, struct fb_err *err)
{
    memset(u, 0, sizeof(*u));
    if (!text || !*text) return fb_err_set(err, FB_EINVAL, "empty URL");
    const char *sep = strstr(text, "://");
    if (!sep || sep == text) return fb_err_set(err, FB_EINVAL, "bad URL '%s': expected scheme://…", text);
    for (const char *c = text; c < sep; c++) {
        if (!(isalnum((unsigned char)*c) || *c == '+' || *c == '-' || *c == '.') ||
            (c == text && !isalpha((unsigned char)*c)))
            return fb_err_set(err, FB_EINVAL, "bad URL scheme in '%s'", text);
    }
    for (const char *c = text; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == ' ' || *c == 0x7f)
            return fb_err_set(err, FB_EINVAL, "URL contains a space or control character");
    u->scheme = strndup(text, (size_t)(sep - text));
    if (!u->scheme) return fb_err_set(err, FB_ENOMEM, "out of memory");
    for (char *c = u->scheme; *c; c++) *c = (char)tolower((unsigned char)*c);

    const char *a = sep + 3;
    size_t alen = strcspn(a, "/?#");
    const char *rest = a + alen;
    if (*rest == '#') {
        fb_url_free(u);
        return fb_err_set(err, FB_EINVAL, "URL fragments ('#') are not supported");
    }
    if (memchr(a, '@', alen)) {
        fb_url_free(u);
        return fb_err_set(err, FB_EINVAL, "credentials in the URL are not supported (use username / password_file)");
    }
    const char *hs = a, *he;
    const char *port = NULL;
    if (alen > 0 && a[0] == '[') {
        const char *rb = memchr(a, ']', alen);
        if (!rb) {
            fb_url_free(u);
            return fb_err_set(err, FB_EINVAL, "bad URL '%s': missing ']' after IPv6 address", text);
        }
        hs = a + 1;
        he = rb;
        if (rb + 1 < a + alen) {
            if (rb[1] != ':') {
                fb_url_free(u);
                return fb_err_set(err, FB_EINVAL, "bad URL '%s': junk after ']'", text);
            }
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(a, ':', alen);
        he = colon ? colon : a + alen;
        if (colon) port = colon + 1;
    }
    u->host = pct_decode(hs, (size_t)(he - hs), err, "host");
    if (!u->host) {
        fb_url_free(u);
        return FB_EINVAL;
    }
    if (port) {
        const char *pe = a + alen;
        long v = 0;
        if (port == pe) {
            fb_url_free(u);
            return fb_err_set(err, FB_EINVAL, "bad URL '%s': empty port", text);
        }
        for (const char *c = port; c < pe; c++) {
            if (!isdigit((unsigned char)*c) || v > 65535) {
                fb_url_free(u);
                return fb_err_set(err, FB_EINVAL, "bad port in URL '%s' (1..65535)", text);
            }
            v = v * 10 + (*c - '0');
        }
        if (v < 1 || v > 65535) {
            fb_url_free(u);
            return fb_err_set(err, FB_EINVAL, "bad port in URL '%s' (1..65535)", text);
        }
        u->port = (int)v;
    }
    size_t plen = strcspn(rest, "?");
    u->path = pct_decode(rest, plen, err, "path");
    if (!u->path) {
        fb_url_free(u);
        return FB_EINVAL;
    }
    if (rest[plen] == '?') {
        int rc = parse_query(rest + plen + 1, u, err);
        if (rc < 0) {
            fb_url_free(u);
            return rc;
        }
    }
    return 0;
}
