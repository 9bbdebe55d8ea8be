/* test_certs.c — the certificate expiry watch (core/certs.c): every kind of
 * watched file (PEM bundle, DER, CA directory with hashed links, OPC UA
 * store, CRLs) is read, duplicates are dropped, and the state follows the
 * lead time (a CRL's only in the last quarter of its period).  The
 * certificates are made here with OpenSSL, with the validity each case needs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/certs.h"
#include "core/model.h"

#define DAY 86400L

static char dir[256];
static EVP_PKEY *key;

/* A self-signed certificate CN=cn valid from now-1d to now+days. */
static X509 *make_cert(const char *cn, long days)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), days + 1000);
    X509_gmtime_adj(X509_getm_notBefore(x), -DAY);
    X509_gmtime_adj(X509_getm_notAfter(x), days * DAY);
    X509_set_pubkey(x, key);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, nm);
    X509_sign(x, key, EVP_sha256());
    return x;
}

/* A CRL by CN=cn, lastUpdate now-last_days, nextUpdate now+next_days. */
static X509_CRL *make_crl(const char *cn, long last_days, long next_days)
{
    X509_CRL *c = X509_CRL_new();
    X509_CRL_set_version(c, 1);
    X509_NAME *nm = X509_NAME_new();
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_CRL_set_issuer_name(c, nm);
    X509_NAME_free(nm);
    ASN1_TIME *t = ASN1_TIME_adj(NULL, time(NULL), (int)-last_days, 0);
    X509_CRL_set1_lastUpdate(c, t);
    ASN1_TIME_adj(t, time(NULL), (int)next_days, 0);
    X509_CRL_set1_nextUpdate(c, t);
    ASN1_TIME_free(t);
    X509_CRL_sign(c, key, EVP_sha256());
    return c;
}

static const char *path(const char *name)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static void write_der(const char *name, X509 *x)
{
    FILE *f = fopen(path(name), "wb");
    assert_non_null(f);
    i2d_X509_fp(f, x);
    fclose(f);
}

static int setup(void **st)
{
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/fb-test-certs-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    key = EVP_EC_gen("P-256");
    return key ? 0 : -1;
}

static int teardown(void **st)
{
    (void)st;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return -1;
    EVP_PKEY_free(key);
    return 0;
}

static const struct fb_cert_info *find(const struct fb_cert_info *v, size_t n, const char *subject)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].subject, subject)) return &v[i];
    fail_msg("no entry %s", subject);
    return NULL;
}

static void test_scan_every_kind(void **st)
{
    (void)st;
    X509 *soon = make_cert("soon", 10), *later = make_cert("later", 100), *old = make_cert("old", -2);
    X509 *ca = make_cert("dir-ca", 400), *own = make_cert("own", 3650), *srv = make_cert("server", 20);
    X509_CRL *crl = make_crl("crl-ca", 1, 6), *stale = make_crl("stale-ca", 9, -2);
    /* a PEM bundle with two certificates and a CRL; a DER file */
    FILE *f = fopen(path("bundle.pem"), "w");
    PEM_write_X509(f, soon);
    PEM_write_X509(f, later);
    PEM_write_X509_CRL(f, crl);
    fclose(f);
    write_der("old.der", old);
    /* a CA directory with OpenSSL's hashed link to the same file */
    mkdir(path("cadir"), 0755);
    f = fopen(path("cadir/ca.pem"), "w");
    PEM_write_X509(f, ca);
    fclose(f);
    assert_int_equal(symlink("ca.pem", path("cadir/1a2b3c4d.0")), 0);
    /* an OPC UA store */
    mkdir(path("pki"), 0700);
    mkdir(path("pki/own"), 0700);
    mkdir(path("pki/trusted"), 0700);
    mkdir(path("pki/crl"), 0700);
    write_der("pki/own/cert.der", own);
    write_der("pki/trusted/server.der", srv);
    f = fopen(path("pki/crl/stale.crl"), "w");
    PEM_write_X509_CRL(f, stale);
    fclose(f);

    struct fb_gateway gw;
    memset(&gw, 0, sizeof gw);
    gw.cert_warn_ns = 30 * DAY * 1000000000LL;
    assert_true(fb_gw_cert_add(&gw, "mqtt.tls.ca", path("bundle.pem"), FB_OPT_CERT));
    assert_true(fb_gw_cert_add(&gw, "again", path("bundle.pem"), FB_OPT_CERT)); /* kept once */
    assert_true(fb_gw_cert_add(&gw, "device x user_cert=", path("old.der"), FB_OPT_CERT));
    assert_true(fb_gw_cert_add(&gw, "mqtt.tls.ca_path", path("cadir"), FB_OPT_DIR));
    assert_true(fb_gw_cert_add(&gw, "device plc pki=", path("pki"), FB_OPT_PKI));
    assert_true(fb_gw_cert_add(&gw, "missing", path("nope.pem"), FB_OPT_CERT));
    assert_int_equal(gw.ncerts, 5);

    struct fb_cert_info *v = NULL;
    size_t n = 0;
    assert_int_equal(fb_certs_scan(&gw, &v, &n), 0);
    assert_int_equal(n, 8); /* soon, later, crl, old, dir-ca (once), own, server, stale */
    int64_t now = time(NULL);
    const struct fb_cert_info *c = find(v, n, "CN=soon");
    assert_string_equal(c->use, "mqtt.tls.ca");
    assert_false(c->crl);
    assert_true(c->not_after_s >= now + 10 * DAY - 60 && c->not_after_s <= now + 10 * DAY + 60);
    assert_int_equal(fb_cert_state(&gw, c, now), FB_CERT_EXPIRING);
    assert_int_equal(fb_cert_state(&gw, find(v, n, "CN=later"), now), FB_CERT_OK);
    assert_int_equal(fb_cert_state(&gw, find(v, n, "CN=old"), now), FB_CERT_EXPIRED);
    assert_string_equal(find(v, n, "CN=dir-ca")->use, "mqtt.tls.ca_path");
    assert_string_equal(find(v, n, "CN=own")->use, "device plc pki= own");
    c = find(v, n, "CN=server");
    assert_string_equal(c->use, "device plc pki= trusted");
    assert_int_equal(fb_cert_state(&gw, c, now), FB_CERT_EXPIRING);
    /* CRLs: a 7-day CRL 6 days before its nextUpdate is fine (last quarter: 1.75 days) ... */
    c = find(v, n, "CRL of CN=crl-ca");
    assert_true(c->crl);
    assert_int_equal(fb_cert_state(&gw, c, now), FB_CERT_OK);
    assert_int_equal(fb_cert_state(&gw, c, now + 5 * DAY), FB_CERT_EXPIRING);
    /* ... and one past it is expired */
    c = find(v, n, "CRL of CN=stale-ca");
    assert_string_equal(c->use, "device plc pki= crl");
    assert_int_equal(fb_cert_state(&gw, c, now), FB_CERT_EXPIRED);
    /* cert_warning 0: only expired ones */
    gw.cert_warn_ns = 0;
    assert_int_equal(fb_cert_state(&gw, find(v, n, "CN=soon"), now), FB_CERT_OK);
    gw.cert_warn_ns = 30 * DAY * 1000000000LL;

    /* the check summary */
    char *text = NULL;
    size_t tl = 0;
    FILE *m = open_memstream(&text, &tl);
    fb_certs_describe(&gw, m);
    fclose(m);
    assert_non_null(strstr(text, "certificate mqtt.tls.ca  CN=soon"));
    if (!strstr(text, "days)  EXPIRING SOON: renew it")) fail_msg("%s", text);
    assert_non_null(strstr(text, "cadir/ca.pem")); /* the file, not OpenSSL's hashed link to it */
    assert_non_null(strstr(text, "CN=old"));
    assert_non_null(strstr(text, "(2 days ago)  EXPIRED"));
    assert_non_null(strstr(text, "crl device plc pki= crl  CRL of CN=stale-ca"));
    free(text);

    free(v);
    for (uint32_t i = 0; i < gw.ncerts; i++) {
        free(gw.certs[i].use);
        free(gw.certs[i].path);
    }
    free(gw.certs);
    X509_free(soon), X509_free(later), X509_free(old), X509_free(ca), X509_free(own), X509_free(srv);
    X509_CRL_free(crl), X509_CRL_free(stale);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_every_kind),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
