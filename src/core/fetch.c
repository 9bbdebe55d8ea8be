/* fetch.c — a remote configuration delivered by URL: libcurl for the
 * transfer, OpenSSL for the SHA-256 that proves it is the file meant.
 *
 * libcurl is loaded the first time a download is asked for (core/curl_dl.h
 * says why).  Only http and https are allowed, for redirects too; the body is
 * bounded while it arrives.
 */
/* fb_sha256_hex uses SHA256_Init & co., deprecated in OpenSSL 3 but kept
 * there (see below why not EVP) */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "core/fetch.h"

#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/curl_dl.h"

struct body {
    char *p;
    size_t len, cap;
    uint64_t max;
    bool too_big;
};

/* What both downloads share: HTTP(S) only (redirects too, at most 5), one
 * time-out for connect and transfer, our CA file, the error text in ebuf. */
static void setup(CURL *h, const char *url, const char *ca_file, int64_t timeout_ns, char *ebuf)
{
    fb_curl.easy_setopt(h, CURLOPT_URL, url);
    fb_curl.easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    fb_curl.easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    fb_curl.easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    fb_curl.easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    fb_curl.easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for DNS time-outs */
    fb_curl.easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout_ns / 1000000));
    fb_curl.easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ns / 1000000));
    fb_curl.easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    fb_curl.easy_setopt(h, CURLOPT_USERAGENT, "fieldbridge/" FB_VERSION);
    if (ca_file) fb_curl.easy_setopt(h, CURLOPT_CAINFO, ca_file);
}

static size_t on_data(char *data, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    size_t k = size * n;
    if (b->len + k > b->max) {
        b->too_big = true;
        return 0; /* ends the transfer with CURLE_WRITE_ERROR */
    }
    if (b->len + k + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 16384;
        while (c < b->len + k + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) return 0;
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->len, data, k);
    b->len += k;
    b->p[b->len] = 0;
    return k;
}

/* libcurl's progress callback (at least once a second): non-zero aborts. */
static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    const atomic_bool *cancel = arg;
    return cancel && atomic_load(cancel) ? 1 : 0;
}

int fb_fetch(const char *url, const char *ca_file, int64_t timeout_ns, uint64_t max_bytes, char **out, size_t *len,
             struct fb_err *err)
{
    return fb_fetch_cancellable(url, ca_file, timeout_ns, max_bytes, NULL, out, len, err);
}

int fb_fetch_cancellable(const char *url, const char *ca_file, int64_t timeout_ns, uint64_t max_bytes,
                         const atomic_bool *cancel, char **out, size_t *len, struct fb_err *err)
{
    *out = NULL;
    *len = 0;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return fb_err_set(err, FB_EINVAL, "url: only http:// and https:// are fetched, got '%.80s'", url);
    int rc = fb_curl_load(err);
    if (rc < 0) return rc;
    CURL *h = fb_curl.easy_init();
    if (!h) return fb_err_set(err, FB_ENOMEM, "cannot start a download");
    struct body b = {.max = max_bytes};
    char ebuf[CURL_ERROR_SIZE] = "";
    setup(h, url, ca_file, timeout_ns, ebuf);
    fb_curl.easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    fb_curl.easy_setopt(h, CURLOPT_WRITEDATA, &b);
    if (cancel) {
        fb_curl.easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        fb_curl.easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        fb_curl.easy_setopt(h, CURLOPT_XFERINFODATA, (void *)cancel);
    }
    if (max_bytes < (uint64_t)LONG_MAX) fb_curl.easy_setopt(h, CURLOPT_MAXFILESIZE, (long)max_bytes);
    CURLcode cc = fb_curl.easy_perform(h);
    long status = 0;
    fb_curl.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    fb_curl.easy_cleanup(h);
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        rc = fb_err_set(err, FB_ECLOSED, "%.120s: download given up (the gateway is stopping)", url);
    else if (b.too_big || cc == CURLE_FILESIZE_EXCEEDED)
        rc = fb_err_set(err, FB_ERANGE, "%.120s: larger than %llu bytes (fleet.remote_config.max_size)", url,
                        (unsigned long long)max_bytes);
    else if (cc != CURLE_OK)
        rc = fb_err_set(err, cc == CURLE_OPERATION_TIMEDOUT ? FB_ETIMEDOUT : FB_EIO, "%.120s: %s", url,
                        ebuf[0] ? ebuf : fb_curl.easy_strerror(cc));
    else if (status >= 400 || (status && status < 200))
        rc = fb_err_set(err, FB_EIO, "%.120s: HTTP status %ld", url, status);
    if (rc < 0) {
        free(b.p);
        return rc;
    }
    if (!b.p) b.p = calloc(1, 1);
    if (!b.p) return fb_err_set(err, FB_ENOMEM, "out of memory");
    *out = b.p;
    *len = b.len;
    return 0;
}

/* Not EVP: the first EVP fetch initialises OpenSSL 3's default provider
 * (every algorithm's tables: ≈ 1.8 MB more resident pages of libcrypto), which
 * a gateway without TLS would pay at every start only to hash its
 * configuration file for the status message (issue 15, memory).  The
 * low-level SHA-256 needs no provider; EVP where the OpenSSL build dropped it. */
void fb_sha256_hex(const void *p, size_t len, char *hex)
{
    unsigned char md[32];
#ifndef OPENSSL_NO_DEPRECATED_3_0
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, p, len);
    SHA256_Final(md, &c);
#else
    unsigned int n = 0;
    EVP_Digest(p, len, md, &n, EVP_sha256(), NULL);
#endif
    for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    hex[64] = 0;
}

/* ------------------------------------------------- to a file, resumable */
struct fbody {
    FILE *f;
    uint64_t have, max;
    bool too_big, io_error;
};

static size_t on_file_data(char *data, size_t size, size_t n, void *arg)
{
    struct fbody *b = arg;
    size_t k = size * n;
    if (b->have + k > b->max) {
        b->too_big = true;
        return 0;
    }
    if (fwrite(data, 1, k, b->f) != k) {
        b->io_error = true;
        return 0;
    }
    b->have += k;
    return k;
}

struct fprog {
    const atomic_bool *cancel;
    void (*progress)(void *arg, uint64_t have, uint64_t total);
    void *arg;
    uint64_t base;
};

static int on_file_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)ut, (void)un;
    struct fprog *p = arg;
    if (p->progress && dt > 0) p->progress(p->arg, p->base + (uint64_t)dn, p->base + (uint64_t)dt);
    return p->cancel && atomic_load(p->cancel) ? 1 : 0;
}

int fb_fetch_file(const char *url, const char *ca_file, int64_t timeout_ns, uint64_t max_bytes, const char *path,
                  const atomic_bool *cancel, void (*progress)(void *arg, uint64_t have, uint64_t total),
                  void *progress_arg, uint64_t *len, struct fb_err *err)
{
    *len = 0;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return fb_err_set(err, FB_EINVAL, "url: only http:// and https:// are fetched, got '%.80s'", url);
    int rc = fb_curl_load(err);
    if (rc < 0) return rc;
    FILE *f = fopen(path, "ab");
    if (!f) return fb_err_set(err, FB_EIO, "%s: %s", path, strerror(errno));
    fseeko(f, 0, SEEK_END);
    off_t have = ftello(f);
    if (have < 0) have = 0;
    CURL *h = fb_curl.easy_init();
    if (!h) {
        fclose(f);
        return fb_err_set(err, FB_ENOMEM, "cannot start a download");
    }
    struct fbody b = {.f = f, .have = (uint64_t)have, .max = max_bytes};
    struct fprog pr = {.cancel = cancel, .progress = progress, .arg = progress_arg, .base = (uint64_t)have};
    char ebuf[CURL_ERROR_SIZE] = "";
    setup(h, url, ca_file, timeout_ns, ebuf);
    fb_curl.easy_setopt(h, CURLOPT_WRITEFUNCTION, on_file_data);
    fb_curl.easy_setopt(h, CURLOPT_WRITEDATA, &b);
    fb_curl.easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    fb_curl.easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_file_progress);
    fb_curl.easy_setopt(h, CURLOPT_XFERINFODATA, &pr);
    if (have > 0) fb_curl.easy_setopt(h, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)have);
    CURLcode cc = fb_curl.easy_perform(h);
    long status = 0;
    fb_curl.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    fb_curl.easy_cleanup(h);
    bool flushed = fflush(f) == 0 && fsync(fileno(f)) == 0;
    fclose(f);
    *len = b.have;
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return fb_err_set(err, FB_ECLOSED, "%.120s: download given up (the gateway is stopping)", url);
    if (b.too_big || cc == CURLE_FILESIZE_EXCEEDED)
        return fb_err_set(err, FB_ERANGE, "%.120s: larger than %llu bytes", url, (unsigned long long)max_bytes);
    if (b.io_error || !flushed) return fb_err_set(err, FB_EIO, "%s: cannot write: %s", path, strerror(errno));
    if (have > 0 && cc == CURLE_RANGE_ERROR) /* the server cannot resume: start over */
        return fb_err_set(err, FB_EAGAIN, "%.120s: the server does not resume downloads", url);
    if (cc != CURLE_OK)
        return fb_err_set(err, cc == CURLE_OPERATION_TIMEDOUT ? FB_ETIMEDOUT : FB_EIO, "%.120s: %s", url,
                          ebuf[0] ? ebuf : fb_curl.easy_strerror(cc));
    if (status >= 400 || (status && status < 200))
        return fb_err_set(err, FB_EIO, "%.120s: HTTP status %ld", url, status);
    if (have > 0 && status == 200) /* the whole file again, appended to what we had: unusable */
        return fb_err_set(err, FB_EAGAIN, "%.120s: the server sent the whole file instead of the rest", url);
    return 0;
}
