/* certs.c — warn before a certificate the gateway uses expires.
 *
 * An expired certificate stops a plant's data as surely as a cut cable, but
 * it is announced months ahead: this module reads every certificate and CRL
 * the configuration names — the MQTT CA, client certificate and CRL
 * (tls.ca, tls.ca_path, tls.cert, tls.crl), OPC UA user certificates
 * (user_cert=) and the OPC UA certificate store of a secured device (pki=:
 * our own application certificate, the trusted server and CA certificates,
 * the issuers, the CRLs) — and compares each notAfter (a CRL's nextUpdate,
 * after which verification against it fails) with the clock.  The list of
 * files is the model's (gw->certs, filled by the config loader and the
 * drivers' `certs` hook); the files are read again at every scan, so a
 * certificate renewed or trusted while the gateway runs is seen.
 *
 * Within security.cert_warning (30 days) of the date the log gets a warning,
 * past it an error — when first seen so and again once a day, not at every
 * scan (security.cert_check, 1 hour).  The status JSON lists every
 * certificate with its state and /metrics has the seconds left as a gauge
 * (fieldbridge_certificate_expiry_seconds), for alerts.  Files are parsed as
 * PEM (any number of certificates and CRLs) or DER (one of either); a
 * directory's files are deduplicated by fingerprint (OpenSSL's hashed
 * ca_path links point at the same certificate twice).
 */
#include "core/certs.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/log.h"
#include "core/runtime_state.h"
#include "core/thread.h"

#define DAY_NS 86400000000000LL
#define MAX_FILE (1u << 20)
#define MAX_ENTRIES 4096

struct seen {
    /* file + subject + date: the same certificate across scans */
    char key[sizeof ((struct fb_cert_info *)0)->file + sizeof ((struct fb_cert_info *)0)->subject + 24];
    enum fb_cert_state state;
    int64_t logged_ns; /* monotonic; 0 = never */
};

struct fb_certs {
    pthread_mutex_t mu; /* guards cur/ncur and stop */
    pthread_cond_t cv;
    pthread_t thr;
    bool started, stop;
    struct fb_cert_info *cur; /* the last scan */
    size_t ncur;
    struct seen *seen; /* the thread's: what was logged when */
    size_t nseen;
};

/* --------------------------------------------------------------- parsing */
struct list {
    struct fb_cert_info *v;
    size_t n, cap;
    unsigned char (*fp)[32]; /* fingerprints of this source's entries, for dedup */
    size_t source_start;     /* first entry of the current source */
    bool oom;
};

/* Seconds since the epoch, without timegm: a 32-bit time_t (armhf) ends in
 * 2038, and CA certificates often outlive that. */
static int64_t asn1_unix(const ASN1_TIME *t)
{
    if (!t) return 0;
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int days = 0, secs = 0;
    int ok = epoch && ASN1_TIME_diff(&days, &secs, epoch, t);
    ASN1_TIME_free(epoch);
    return ok ? (int64_t)days * 86400 + secs : 0;
}

static void name_text(X509_NAME *nm, char *out, size_t cap)
{
    int i = nm ? X509_NAME_get_index_by_NID(nm, NID_commonName, -1) : -1;
    const ASN1_STRING *s = i >= 0 ? X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, i)) : NULL;
    if (s && ASN1_STRING_length(s) > 0) {
        snprintf(out, cap, "CN=%.*s", ASN1_STRING_length(s), (const char *)ASN1_STRING_get0_data(s));
    } else if (nm) {
        X509_NAME_oneline(nm, out, (int)cap);
    } else {
        snprintf(out, cap, "?");
    }
}

static void push(struct list *l, const char *use, const char *file, const char *subject, bool crl, int64_t nb,
                 int64_t na, const unsigned char fp[32])
{
    for (size_t i = l->source_start; i < l->n; i++)
        if (!memcmp(l->fp[i], fp, 32)) return; /* the same object under another name */
    if (l->n >= MAX_ENTRIES) return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct fb_cert_info *v = realloc(l->v, cap * sizeof *v);
        unsigned char(*f)[32] = v ? realloc(l->fp, cap * sizeof *f) : NULL;
        if (v) l->v = v;
        if (!v || !f) {
            l->oom = true;
            return;
        }
        l->fp = f;
        l->cap = cap;
    }
    struct fb_cert_info *c = &l->v[l->n];
    memset(c, 0, sizeof *c);
    snprintf(c->use, sizeof c->use, "%s", use);
    snprintf(c->file, sizeof c->file, "%s", file);
    snprintf(c->subject, sizeof c->subject, "%s", subject);
    c->crl = crl;
    c->not_before_s = nb;
    c->not_after_s = na;
    memcpy(l->fp[l->n], fp, 32);
    l->n++;
}

static void add_x509(struct list *l, const char *use, const char *file, X509 *x)
{
    char subj[200];
    unsigned char fp[32];
    unsigned int fl = 32;
    name_text(X509_get_subject_name(x), subj, sizeof subj);
    if (X509_digest(x, EVP_sha256(), fp, &fl) != 1) memset(fp, 0, sizeof fp);
    push(l, use, file, subj, false, asn1_unix(X509_get0_notBefore(x)), asn1_unix(X509_get0_notAfter(x)), fp);
}

static void add_crl(struct list *l, const char *use, const char *file, X509_CRL *c)
{
    char iss[180], subj[200];
    unsigned char fp[32];
    unsigned int fl = 32;
    name_text(X509_CRL_get_issuer(c), iss, sizeof iss);
    snprintf(subj, sizeof subj, "CRL of %s", iss);
    if (X509_CRL_digest(c, EVP_sha256(), fp, &fl) != 1) memset(fp, 0, sizeof fp);
    push(l, use, file, subj, true, asn1_unix(X509_CRL_get0_lastUpdate(c)), asn1_unix(X509_CRL_get0_nextUpdate(c)), fp);
}

/* Every certificate and CRL in one file (PEM: all of them; DER: one). */
static void add_file(struct list *l, const char *use, const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > (off_t)MAX_FILE) return;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    unsigned char *buf = malloc((size_t)st.st_size);
    size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (!n) {
        free(buf);
        return;
    }
    if (n > 10 && memmem(buf, n, "-----BEGIN", 10)) {
        BIO *b = BIO_new_mem_buf(buf, (int)n);
        STACK_OF(X509_INFO) *inf = b ? PEM_X509_INFO_read_bio(b, NULL, NULL, NULL) : NULL;
        for (int i = 0; inf && i < sk_X509_INFO_num(inf); i++) {
            X509_INFO *xi = sk_X509_INFO_value(inf, i);
            if (xi->x509) add_x509(l, use, path, xi->x509);
            if (xi->crl) add_crl(l, use, path, xi->crl);
        }
        sk_X509_INFO_pop_free(inf, X509_INFO_free);
        BIO_free(b);
    } else {
        const unsigned char *p = buf;
        X509 *x = d2i_X509(NULL, &p, (long)n);
        if (x) {
            add_x509(l, use, path, x);
            X509_free(x);
        } else {
            p = buf;
            X509_CRL *c = d2i_X509_CRL(NULL, &p, (long)n);
            if (c) add_crl(l, use, path, c);
            X509_CRL_free(c);
        }
    }
    free(buf);
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every file of a directory (not its subdirectories), in name order, the
 * symbolic links after the files (so a certificate is named by its file,
 * not by OpenSSL's hashed link to it). */
static void add_dir(struct list *l, const char *use, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < MAX_ENTRIES) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **t = realloc(names, cap * sizeof *t);
            if (!t) break;
            names = t;
        }
        if ((names[n] = strdup(e->d_name))) n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, name_cmp);
    for (int links = 0; links < 2; links++)
        for (size_t i = 0; i < n; i++) {
            char path[1024];
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode) == (links == 1)) add_file(l, use, path);
        }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

int fb_certs_scan(const struct fb_gateway *gw, struct fb_cert_info **out, size_t *n)
{
    struct list l = {0};
    for (uint32_t i = 0; i < gw->ncerts; i++) {
        const struct fb_cert_ref *r = &gw->certs[i];
        char use[160], path[1024];
        l.source_start = l.n;
        switch (r->kind) {
            case FB_OPT_DIR: add_dir(&l, r->use, r->path); break;
            case FB_OPT_PKI: {
                /* the OPC UA store (ua_secure.c): own/, trusted/, issuers/, crl/ */
                static const char *const parts[] = {"trusted", "issuers", "crl"};
                snprintf(use, sizeof use, "%s own", r->use);
                snprintf(path, sizeof path, "%s/own/cert.der", r->path);
                add_file(&l, use, path);
                for (size_t k = 0; k < 3; k++) {
                    l.source_start = l.n;
                    snprintf(use, sizeof use, "%s %s", r->use, parts[k]);
                    snprintf(path, sizeof path, "%s/%s", r->path, parts[k]);
                    add_dir(&l, use, path);
                }
                break;
            }
            default: add_file(&l, r->use, r->path); break;
        }
    }
    free(l.fp);
    if (l.oom) {
        free(l.v);
        *out = NULL;
        *n = 0;
        return FB_ENOMEM;
    }
    *out = l.v;
    *n = l.n;
    return 0;
}

enum fb_cert_state fb_cert_state(const struct fb_gateway *gw, const struct fb_cert_info *c, int64_t now_s)
{
    if (c->not_after_s <= 0) return FB_CERT_OK; /* a CRL without nextUpdate */
    if (c->not_after_s <= now_s) return FB_CERT_EXPIRED;
    int64_t lead = gw->cert_warn_ns / 1000000000LL;
    /* A CRL is reissued long before its nextUpdate (a 7-day CRL every day):
     * warn only in the last quarter of its period, which a working refresh
     * never reaches, and never earlier than the certificates' lead time. */
    if (c->crl && c->not_before_s > 0 && c->not_after_s > c->not_before_s &&
        (c->not_after_s - c->not_before_s) / 4 < lead)
        lead = (c->not_after_s - c->not_before_s) / 4;
    return c->not_after_s - now_s <= lead ? FB_CERT_EXPIRING : FB_CERT_OK;
}

const char *fb_cert_state_name(enum fb_cert_state s)
{
    return s == FB_CERT_EXPIRED ? "expired" : s == FB_CERT_EXPIRING ? "expiring" : "ok";
}

static void date_text(int64_t s, char *out, size_t cap)
{
    if (s <= 0) {
        snprintf(out, cap, "-");
        return;
    }
    int y; /* not gmtime_r: past 2038 on a 32-bit time_t too */
    unsigned mo, d;
    fb_civil_from_days(s / 86400, &y, &mo, &d);
    snprintf(out, cap, "%04d-%02u-%02uT%02d:%02d:%02dZ", y, mo, d, (int)(s % 86400 / 3600), (int)(s % 3600 / 60),
             (int)(s % 60));
}

/* "12 days", "5 hours", "40 minutes" */
static void span_text(int64_t secs, char *out, size_t cap)
{
    int64_t a = secs < 0 ? -secs : secs;
    const char *unit = a >= 2 * 86400 ? "days" : a >= 2 * 3600 ? "hours" : "minutes";
    int64_t v = a >= 2 * 86400 ? a / 86400 : a >= 2 * 3600 ? a / 3600 : a / 60;
    snprintf(out, cap, "%lld %s", (long long)v, unit);
}

/* "in 12 days", "3 days ago" */
static void left_text(int64_t secs, char *out, size_t cap)
{
    char sp[32];
    span_text(secs, sp, sizeof sp);
    snprintf(out, cap, secs < 0 ? "%s ago" : "in %s", sp);
}

/* ------------------------------------------------------------ the watch */
static void log_changes(struct fb_gateway *gw, struct fb_certs *cs, const struct fb_cert_info *v, size_t n)
{
    int64_t now_s = fb_now_ns() / 1000000000LL, mono = fb_mono_ns();
    struct seen *next = calloc(n ? n : 1, sizeof *next);
    if (!next) return;
    char warn_for[32];
    span_text(gw->cert_warn_ns / 1000000000LL, warn_for, sizeof warn_for);
    for (size_t i = 0; i < n; i++) {
        const struct fb_cert_info *c = &v[i];
        enum fb_cert_state st = fb_cert_state(gw, c, now_s);
        struct seen *s = &next[i];
        snprintf(s->key, sizeof s->key, "%s|%s|%lld", c->file, c->subject, (long long)c->not_after_s);
        s->state = st;
        const struct seen *old = NULL;
        for (size_t k = 0; k < cs->nseen && !old; k++)
            if (!strcmp(cs->seen[k].key, s->key)) old = &cs->seen[k];
        s->logged_ns = old && old->state == st ? old->logged_ns : 0;
        if (st == FB_CERT_OK || (s->logged_ns && mono - s->logged_ns < DAY_NS)) continue;
        s->logged_ns = mono;
        char date[32], left[32];
        date_text(c->not_after_s, date, sizeof date);
        left_text(c->not_after_s - now_s, left, sizeof left);
        const char *what = c->crl ? "CRL" : "certificate";
        if (st == FB_CERT_EXPIRED && c->crl)
            fb_error(NULL, NULL,
                     "%s %s (%s, %s) is out of date since %s (%s): certificates checked against it are refused "
                     "until a newer CRL is installed",
                     what, c->subject, c->use, c->file, date, left);
        else if (st == FB_CERT_EXPIRED)
            fb_error(NULL, NULL, "%s %s (%s, %s) expired on %s (%s): connections that use it fail; renew it", what,
                     c->subject, c->use, c->file, date, left);
        else
            fb_warn(NULL, NULL, "%s %s (%s, %s) %s on %s (%s; security.cert_warning: %s ahead): %s", what, c->subject,
                    c->use, c->file, c->crl ? "must be replaced" : "expires", date, left, warn_for,
                    c->crl ? "install a newer CRL before then" : "renew it before then");
    }
    free(cs->seen);
    cs->seen = next;
    cs->nseen = n;
}

static void rescan(struct fb_gateway *gw, struct fb_certs *cs)
{
    struct fb_cert_info *v = NULL;
    size_t n = 0;
    if (fb_certs_scan(gw, &v, &n) < 0) return;
    log_changes(gw, cs, v, n);
    pthread_mutex_lock(&cs->mu);
    free(cs->cur);
    cs->cur = v;
    cs->ncur = n;
    pthread_mutex_unlock(&cs->mu);
}

static void *watch_thread(void *arg)
{
    struct fb_gateway *gw = arg;
    struct fb_certs *cs = gw->rt->certs;
    int64_t every = gw->cert_check_ns > 0 ? gw->cert_check_ns : 3600000000000LL;
    for (;;) {
        pthread_mutex_lock(&cs->mu);
        int64_t until = fb_mono_ns() + every;
        while (!cs->stop && fb_mono_ns() < until) fb_cond_wait_until(&cs->cv, &cs->mu, until);
        bool stop = cs->stop;
        pthread_mutex_unlock(&cs->mu);
        if (stop) break;
        rescan(gw, cs);
    }
    return NULL;
}

int fb_certs_start(struct fb_gateway *gw)
{
    if (!gw->rt || !gw->ncerts) return 0;
    struct fb_certs *cs = calloc(1, sizeof *cs);
    if (!cs) return FB_ENOMEM;
    pthread_mutex_init(&cs->mu, NULL);
    fb_cond_init_mono(&cs->cv);
    gw->rt->certs = cs;
    rescan(gw, cs);
    if (pthread_create(&cs->thr, NULL, watch_thread, gw) == 0) cs->started = true;
    return 0;
}

void fb_certs_stop(struct fb_gateway *gw)
{
    struct fb_certs *cs = gw->rt ? gw->rt->certs : NULL;
    if (!cs) return;
    pthread_mutex_lock(&cs->mu);
    cs->stop = true;
    pthread_cond_broadcast(&cs->cv);
    pthread_mutex_unlock(&cs->mu);
    if (cs->started) pthread_join(cs->thr, NULL);
    gw->rt->certs = NULL;
    free(cs->cur);
    free(cs->seen);
    pthread_mutex_destroy(&cs->mu);
    pthread_cond_destroy(&cs->cv);
    free(cs);
}

/* A copy of the last scan (the caller frees). */
static struct fb_cert_info *snapshot(struct fb_gateway *gw, size_t *n)
{
    struct fb_certs *cs = gw->rt ? gw->rt->certs : NULL;
    *n = 0;
    if (!cs) return NULL;
    pthread_mutex_lock(&cs->mu);
    struct fb_cert_info *v = cs->ncur ? malloc(cs->ncur * sizeof *v) : NULL;
    if (v) {
        memcpy(v, cs->cur, cs->ncur * sizeof *v);
        *n = cs->ncur;
    }
    pthread_mutex_unlock(&cs->mu);
    return v;
}

static void put_label(struct fb_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fb_buf_putc(b, '\\'), fb_buf_putc(b, *s);
        else if (*s == '\n')
            fb_buf_puts(b, "\\n");
        else
            fb_buf_putc(b, *s);
    }
}

void fb_certs_metrics(struct fb_gateway *gw, struct fb_buf *out)
{
    if (!gw->ncerts) return;
    size_t n;
    struct fb_cert_info *v = snapshot(gw, &n);
    int64_t now_s = fb_now_ns() / 1000000000LL;
    fb_buf_puts(out, "# HELP fieldbridge_certificate_expiry_seconds Seconds until a certificate expires (notAfter) or "
                     "a CRL must be replaced (nextUpdate); negative once past.\n"
                     "# TYPE fieldbridge_certificate_expiry_seconds gauge\n");
    for (size_t i = 0; i < n; i++) {
        if (v[i].not_after_s <= 0) continue;
        fb_buf_puts(out, "fieldbridge_certificate_expiry_seconds{use=\"");
        put_label(out, v[i].use);
        fb_buf_puts(out, v[i].crl ? "\",type=\"crl\",subject=\"" : "\",type=\"certificate\",subject=\"");
        put_label(out, v[i].subject);
        fb_buf_puts(out, "\",file=\"");
        put_label(out, v[i].file);
        fb_buf_printf(out, "\"} %lld\n", (long long)(v[i].not_after_s - now_s));
    }
    fb_buf_printf(out,
                  "# HELP fieldbridge_certificate_warning_seconds How long before expiry the gateway warns "
                  "(security.cert_warning).\n"
                  "# TYPE fieldbridge_certificate_warning_seconds gauge\n"
                  "fieldbridge_certificate_warning_seconds %lld\n",
                  (long long)(gw->cert_warn_ns / 1000000000LL));
    free(v);
}

void fb_certs_status(struct fb_gateway *gw, struct fb_buf *out)
{
    if (!gw->ncerts) return;
    size_t n;
    struct fb_cert_info *v = snapshot(gw, &n);
    int64_t now_s = fb_now_ns() / 1000000000LL;
    fb_buf_puts(out, ",\"certificates\":[");
    for (size_t i = 0; i < n; i++) {
        char date[32];
        date_text(v[i].not_after_s, date, sizeof date);
        fb_buf_puts(out, i ? ",{\"use\":" : "{\"use\":");
        fb_json_cstr(out, v[i].use);
        fb_buf_puts(out, v[i].crl ? ",\"type\":\"crl\",\"subject\":" : ",\"type\":\"certificate\",\"subject\":");
        fb_json_cstr(out, v[i].subject);
        fb_buf_puts(out, ",\"file\":");
        fb_json_cstr(out, v[i].file);
        fb_buf_puts(out, ",\"not_after\":");
        fb_json_cstr(out, date);
        fb_buf_puts(out, ",\"expires_in_s\":");
        fb_json_i64(out, v[i].not_after_s > 0 ? v[i].not_after_s - now_s : 0);
        fb_buf_puts(out, ",\"state\":");
        fb_json_cstr(out, fb_cert_state_name(fb_cert_state(gw, &v[i], now_s)));
        fb_buf_putc(out, '}');
    }
    fb_buf_putc(out, ']');
    free(v);
}

void fb_certs_describe(const struct fb_gateway *gw, FILE *f)
{
    if (!gw->ncerts) return;
    struct fb_cert_info *v = NULL;
    size_t n = 0;
    if (fb_certs_scan(gw, &v, &n) < 0) return;
    int64_t now_s = fb_now_ns() / 1000000000LL;
    for (size_t i = 0; i < n; i++) {
        char date[32], left[32];
        date_text(v[i].not_after_s, date, sizeof date);
        left_text(v[i].not_after_s - now_s, left, sizeof left);
        enum fb_cert_state st = fb_cert_state(gw, &v[i], now_s);
        fprintf(f, "  %s %s  %s  %s  %s %s (%s)%s\n", v[i].crl ? "crl" : "certificate", v[i].use, v[i].subject,
                v[i].file, v[i].crl ? "next update" : "expires", date, v[i].not_after_s > 0 ? left : "never",
                st == FB_CERT_EXPIRED    ? "  EXPIRED"
                : st == FB_CERT_EXPIRING ? "  EXPIRING SOON: renew it"
                                         : "");
    }
    free(v);
}
