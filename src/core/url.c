/* url.c — device/broker URLs, ${ENV} expansion and secret files.
 *
 * These are the small text building blocks the config loader and the CLI
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
 *
 * Secret files are read with a permission check: a file readable by group or
 * others is refused, like ssh does for private keys.  fb_check_file applies
 * the same rules ahead of time, for `fieldbridge check` and the CLI, to every
 * file the config or a device URL names (driver.h says which options do).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "driver.h"

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
            if (i + 2 >= n || hexval((unsigned char)s[i + 1]) < 0 ||
                hexval((unsigned char)s[i + 2]) < 0) {
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
    if (!sep || sep == text)
        return fb_err_set(err, FB_EINVAL, "bad URL '%s': expected scheme://…", text);
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
        return fb_err_set(err, FB_EINVAL,
                          "credentials in the URL are not supported (use username / password_file)");
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

/* ------------------------------------------------------------ ${ENV} */

int fb_env_expand(const char *in, char **out, struct fb_err *err)
{
    *out = NULL;
    size_t cap = strlen(in) + 1, len = 0;
    char *o = malloc(cap);
    if (!o) return fb_err_set(err, FB_ENOMEM, "out of memory");
#define PUT(ptr, n)                                                  \
    do {                                                             \
        size_t n_ = (n);                                             \
        if (len + n_ + 1 > cap) {                                    \
            while (len + n_ + 1 > cap) cap *= 2;                     \
            char *t_ = realloc(o, cap);                              \
            if (!t_) {                                               \
                free(o);                                             \
                return fb_err_set(err, FB_ENOMEM, "out of memory");  \
            }                                                        \
            o = t_;                                                  \
        }                                                            \
        memcpy(o + len, (ptr), n_);                                  \
        len += n_;                                                   \
    } while (0)
    const char *p = in;
    while (*p) {
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') { /* $${ → literal ${ */
            PUT("${", 2);
            p += 3;
            continue;
        }
        if (p[0] != '$' || p[1] != '{') {
            PUT(p, 1);
            p++;
            continue;
        }
        const char *name = p + 2;
        const char *e = name;
        while (isalnum((unsigned char)*e) || *e == '_') e++;
        if (e == name || isdigit((unsigned char)*name)) {
            free(o);
            return fb_err_set(err, FB_EINVAL, "bad variable name in '${' (expected ${NAME} or ${NAME:-default})");
        }
        const char *def = NULL;
        size_t deflen = 0;
        const char *close;
        if (e[0] == '}') {
            close = e;
        } else if (e[0] == ':' && e[1] == '-') {
            def = e + 2;
            close = strchr(def, '}');
            if (!close) {
                free(o);
                return fb_err_set(err, FB_EINVAL, "unterminated ${%.*s:-…", (int)(e - name), name);
            }
            deflen = (size_t)(close - def);
        } else {
            free(o);
            if (!*e)
                return fb_err_set(err, FB_EINVAL, "unterminated ${%.*s", (int)(e - name), name);
            return fb_err_set(err, FB_EINVAL,
                              "bad variable reference ${%.*s%c…} (expected ${NAME} or ${NAME:-default})",
                              (int)(e - name), name, *e);
        }
        char vname[128];
        size_t nlen = (size_t)(e - name);
        if (nlen >= sizeof vname) {
            free(o);
            return fb_err_set(err, FB_EINVAL, "variable name too long");
        }
        memcpy(vname, name, nlen);
        vname[nlen] = 0;
        const char *val = getenv(vname);
        if (val && *val) {
            PUT(val, strlen(val));
        } else if (def) {
            PUT(def, deflen);
        } else if (val) {
            /* set but empty, no default: the empty value is what was asked for */
        } else {
            free(o);
            return fb_err_set(err, FB_ENOENT,
                              "environment variable %s is not set (use ${%s:-default} for a default)",
                              vname, vname);
        }
        p = close + 1;
    }
#undef PUT
    o[len] = 0;
    *out = o;
    return 0;
}

/* ------------------------------------------------------------ secrets */

int fb_read_secret_file(const char *path, char **out, struct fb_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return fb_err_set(err, e == ENOENT ? FB_ENOENT : e == EACCES ? FB_EACCES : FB_EIO,
                          "cannot open secret file %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fb_err_set(err, FB_EINVAL, "secret file %s is not a regular file", path);
    }
    if (st.st_mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH)) {
        close(fd);
        return fb_err_set(err, FB_EACCES,
                          "secret file %s is accessible by group or others (mode %04o); "
                          "run: chmod 600 %s",
                          path, (unsigned)(st.st_mode & 07777), path);
    }
    if (st.st_size > 65536) {
        close(fd);
        return fb_err_set(err, FB_EINVAL, "secret file %s is larger than 64 KiB", path);
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    for (;;) {
        if (len + 1 >= cap) break;
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return fb_err_set(err, FB_EIO, "cannot read %s: %s", path, strerror(e));
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    if (strlen(buf) != len) {
        free(buf);
        return fb_err_set(err, FB_EINVAL, "secret file %s contains a NUL byte", path);
    }
    if (len > 0 && buf[len - 1] == '\n') buf[--len] = 0;
    if (len > 0 && buf[len - 1] == '\r') buf[--len] = 0;
    *out = buf;
    return 0;
}

int fb_check_file(const char *path, enum fb_opt_kind kind, struct fb_err *err)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        int e = errno;
        return fb_err_set(err, e == ENOENT ? FB_ENOENT : FB_EIO, "%s: %s", path, strerror(e));
    }
    bool want_dir = kind == FB_OPT_PKI || kind == FB_OPT_DIR;
    if (want_dir && !S_ISDIR(st.st_mode)) return fb_err_set(err, FB_EINVAL, "%s is not a directory", path);
    if (!want_dir && S_ISDIR(st.st_mode))
        return fb_err_set(err, FB_EINVAL, "%s is a directory, expected a file", path);
    if (kind == FB_OPT_PKI) {
        /* the store's own key (created on first use when missing) must be private */
        char key[4200];
        snprintf(key, sizeof key, "%s/own/key.pem", path);
        if (stat(key, &st) == 0 && (st.st_mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH)))
            return fb_err_set(err, FB_EACCES,
                              "private key %s is accessible by group or others (mode %04o); run: chmod 600 %s", key,
                              (unsigned)(st.st_mode & 07777), key);
        return 0;
    }
    if (access(path, want_dir ? R_OK | X_OK : R_OK) < 0) {
        int e = errno;
        return fb_err_set(err, FB_EIO, "%s cannot be read by this user (uid %u): %s", path, (unsigned)getuid(),
                          strerror(e));
    }
    if ((kind == FB_OPT_SECRET || kind == FB_OPT_KEY) && (st.st_mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH)))
        return fb_err_set(err, FB_EACCES, "%s %s is accessible by group or others (mode %04o); run: chmod 600 %s",
                          kind == FB_OPT_KEY ? "private key" : "secret file", path, (unsigned)(st.st_mode & 07777),
                          path);
    return 0;
}
