/* env.c — ${ENV} expansion and secret files: how secrets and per-machine
 * values reach the configuration without being written into it.
 *
 * ${NAME} is replaced by the variable's value, ${NAME:-default} by the
 * default when the variable is unset or empty; an unset variable without a
 * default is an error (a typo must not silently become an empty broker
 * address); $${ gives a literal ${.
 *
 * Secret files are read with a permission check: a file readable by group or
 * others is refused, like ssh does for private keys.  fb_check_file applies
 * the same rules ahead of time, for `fieldbridge check` and the CLI, to every
 * file the config or a device URL names (the driver table says which URL
 * options name files, and of which kind).
 *
 * Redaction: every secret value read here or by the config reader is noted
 * in a small registry, and the output paths (log lines, status JSON, check,
 * config diagnostics) replace any occurrence with "[secret]" — a second line
 * of defence behind "never print a secret": a message that quotes a value
 * which happens to be a password (a mistyped key, a server echoing a login)
 * cannot leak it.  The registry holds copies (wiped when forgotten); a line
 * is scanned only when something is noted.
 */
#include "core/env.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ ${ENV} */

int fb_env_expand(const char *in, char **out, struct fb_err *err)
{
    *out = NULL;
    size_t cap = strlen(in) + 1, len = 0;
    char *o = malloc(cap);
    if (!o) return fb_err_set(err, FB_ENOMEM, "out of memory");
#define PUT(ptr, n)                                                                                                    \
    do {                                                                                                               \
        size_t n_ = (n);                                                                                               \
        if (len + n_ + 1 > cap) {                                                                                      \
            while (len + n_ + 1 > cap) cap *= 2;                                                                       \
            char *t_ = realloc(o, cap);                                                                                \
            if (!t_) {                                                                                                 \
                free(o);                                                                                               \
                return fb_err_set(err, FB_ENOMEM, "out of memory");                                                    \
            }                                                                                                          \
            o = t_;                                                                                                    \
        }                                                                                                              \
        memcpy(o + len, (ptr), n_);                                                                                    \
        len += n_;                                                                                                     \
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
            if (!*e) return fb_err_set(err, FB_EINVAL, "unterminated ${%.*s", (int)(e - name), name);
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
            return fb_err_set(err, FB_ENOENT, "environment variable %s is not set (use ${%s:-default} for a default)",
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
        return fb_err_set(err,
                          e == ENOENT   ? FB_ENOENT
                          : e == EACCES ? FB_EACCES
                                        : FB_EIO,
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
    fb_secret_note(buf);
    *out = buf;
    return 0;
}

/* ------------------------------------------------------------ redaction */
static pthread_mutex_t sec_mu = PTHREAD_MUTEX_INITIALIZER;
static char *sec_val[2 * FB_SECRET_MAX]; /* each secret, then its JSON-escaped form when it differs */
static size_t sec_len[2 * FB_SECRET_MAX];
static size_t sec_next; /* the slot pair a new secret takes (the oldest when full) */
static atomic_bool sec_any;

static void sec_drop(size_t i)
{
    if (!sec_val[i]) return;
    explicit_bzero(sec_val[i], sec_len[i]);
    free(sec_val[i]);
    sec_val[i] = NULL;
    sec_len[i] = 0;
}

/* The JSON string form of s (without quotes) when it differs from s, else NULL. */
static char *json_escaped(const char *s)
{
    size_t n = 0;
    bool differs = false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\' || *p < 0x20) {
            differs = true;
            n += 6;
        } else {
            n++;
        }
    }
    if (!differs) return NULL;
    char *o = malloc(n + 1), *q = o;
    if (!o) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            *q++ = '\\';
            *q++ = (char)*p;
        } else if (*p == '\n') {
            *q++ = '\\';
            *q++ = 'n';
        } else if (*p == '\t') {
            *q++ = '\\';
            *q++ = 't';
        } else if (*p == '\r') {
            *q++ = '\\';
            *q++ = 'r';
        } else if (*p < 0x20) {
            q += sprintf(q, "\\u%04x", *p);
        } else {
            *q++ = (char)*p;
        }
    }
    *q = 0;
    return o;
}

void fb_secret_note(const char *s)
{
    if (!s || strlen(s) < FB_SECRET_MIN) return;
    pthread_mutex_lock(&sec_mu);
    for (size_t i = 0; i < 2 * FB_SECRET_MAX; i += 2)
        if (sec_val[i] && !strcmp(sec_val[i], s)) {
            pthread_mutex_unlock(&sec_mu);
            return;
        }
    size_t slot = sec_next;
    sec_next = (sec_next + 2) % (2 * FB_SECRET_MAX);
    sec_drop(slot);
    sec_drop(slot + 1);
    sec_val[slot] = strdup(s);
    sec_len[slot] = sec_val[slot] ? strlen(s) : 0;
    sec_val[slot + 1] = json_escaped(s);
    sec_len[slot + 1] = sec_val[slot + 1] ? strlen(sec_val[slot + 1]) : 0;
    atomic_store(&sec_any, true);
    pthread_mutex_unlock(&sec_mu);
}

bool fb_secret_any(void) { return atomic_load(&sec_any); }

void fb_secret_forget_all(void)
{
    pthread_mutex_lock(&sec_mu);
    for (size_t i = 0; i < 2 * FB_SECRET_MAX; i++) sec_drop(i);
    sec_next = 0;
    atomic_store(&sec_any, false);
    pthread_mutex_unlock(&sec_mu);
}

/* The longest noted secret that starts at p (n bytes available), or 0. */
static size_t sec_match(const char *p, size_t n)
{
    size_t best = 0;
    for (size_t i = 0; i < 2 * FB_SECRET_MAX; i++) {
        size_t l = sec_len[i];
        if (l && l <= n && l > best && sec_val[i][0] == p[0] && !memcmp(sec_val[i], p, l)) best = l;
    }
    return best;
}

size_t fb_secret_redact(const char *in, size_t len, char *out, size_t cap)
{
    if (!cap) return 0;
    size_t o = 0;
    if (!atomic_load(&sec_any)) {
        o = len < cap - 1 ? len : cap - 1;
        memmove(out, in, o);
        out[o] = 0;
        return o;
    }
    static const char mask[] = FB_SECRET_MASK;
    pthread_mutex_lock(&sec_mu);
    for (size_t i = 0; i < len && o + 1 < cap;) {
        size_t m = sec_match(in + i, len - i);
        if (m) {
            for (size_t k = 0; k < sizeof mask - 1 && o + 1 < cap; k++) out[o++] = mask[k];
            i += m;
        } else {
            out[o++] = in[i++];
        }
    }
    pthread_mutex_unlock(&sec_mu);
    out[o] = 0;
    return o;
}

char *fb_secret_redact_dup(const char *in, size_t len, size_t *out_len)
{
    /* the mask may be longer than a secret (FB_SECRET_MIN bytes): room for the worst case */
    size_t cap = len / FB_SECRET_MIN * (sizeof FB_SECRET_MASK) + len + 1;
    char *o = malloc(cap);
    if (!o) return NULL;
    size_t n = fb_secret_redact(in, len, o, cap);
    if (out_len) *out_len = n;
    return o;
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
    if (!want_dir && S_ISDIR(st.st_mode)) return fb_err_set(err, FB_EINVAL, "%s is a directory, expected a file", path);
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
