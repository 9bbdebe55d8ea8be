/* ua_secure.c — OPC UA security primitives on OpenSSL 3.
 *
 * What is here: the encrypted password of a UserNameIdentityToken, which
 * servers such as node-opcua demand even on a channel with security None
 * (the token policy names Basic256Sha256).  The plaintext is
 *   u32 length(password + serverNonce) | password | serverNonce
 * and it is encrypted with the public key of the server's certificate using
 * RSA-OAEP, block by block (each block keyBytes − 42 bytes of plaintext for
 * SHA-1 OAEP, keyBytes − 66 for SHA-256).
 *
 * And Basic256Sha256 secure channels (Part 6 §6.7): the asymmetric
 * OpenSecureChannel chunk (RSA-PKCS1v1.5-SHA256 signature with our key,
 * RSA-OAEP-SHA1 encryption under the server's key, in keyBytes−42 blocks),
 * the P_SHA256 key derivation from the two nonces, and symmetric MSG/CLO
 * chunks (HMAC-SHA256 signature; AES-256-CBC in SignAndEncrypt), plus the
 * application certificate (generated on first start) and the trust list.
 * Aes128_Sha256_RsaOaep channels differ only in the policy URI and the
 * 16-byte AES key (AES-128-CBC); the asymmetric part is the same.
 *
 * The trust list (pki/trusted, issuers, crl) is checked with OpenSSL's chain
 * verification: a server certificate is trusted when it is in trusted/
 * itself (and no CRL of its issuer lists it) or when a CA in trusted/ issued
 * it, through intermediates in issuers/ or the chain the server sent, with
 * every CA's CRL in crl/ (revocation=if_present: where there is one) and no
 * certificate of the chain revoked or out of its validity period.
 *
 * Also: checks of the server certificate beyond the trust list (validity
 * period; host name and application URI against the subjectAltName), and
 * the X.509 user identity (user certificate + key, the user token signature
 * over serverCertificate ‖ serverNonce by the token policy's algorithm).
 *
 * Layout of a secured chunk:
 *   OPN: hdr(8) channelId | policyUri senderCert receiverThumbprint |
 *        E( seq reqId | body | padN padding[N] | signature )
 *   MSG: hdr(8) channelId tokenId | E?( seq reqId | body | [padN padding[N]] | hmac32 )
 * The signature covers everything before it, with the final size already in
 * the header; encryption covers seq … signature.  Padding makes the
 * encrypted part a whole number of blocks (RSA: keyBytes−42 plaintext bytes,
 * AES: 16); each padding byte holds N.
 */
#include "south/opcua/ua_secure.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/env.h"
#include "core/log.h"
#include "south/opcua/ua_msg.h"

#define ALG_OAEP "http://www.w3.org/2001/04/xmlenc#rsa-oaep"
#define ALG_OAEP256 "http://opcfoundation.org/UA/security/rsa-oaep-sha2-256"

int ua_secure_encrypt_password(const char *policy_uri, const uint8_t *cert, int32_t cert_len, const char *pwd,
                               const uint8_t *nonce, int32_t nonce_len, uint8_t **out, int32_t *out_len,
                               const char **alg, struct fb_err *err)
{
    *out = NULL;
    *out_len = 0;
    bool sha256 = strstr(policy_uri, "Aes256_Sha256_RsaPss") != NULL;
    if (!strstr(policy_uri, "Basic256") && !strstr(policy_uri, "Aes128_Sha256_RsaOaep") && !sha256)
        return fb_err_set(err, FB_ENOTSUP, "the server's user token policy %s is not supported", policy_uri);
    if (!cert || cert_len <= 0)
        return fb_err_set(err, FB_EPROTO, "the server sent no certificate to encrypt the password with");
    if (nonce_len <= 0) return fb_err_set(err, FB_EPROTO, "the server sent no nonce to encrypt the password with");
    const unsigned char *p = cert;
    X509 *x = d2i_X509(NULL, &p, cert_len);
    if (!x) return fb_err_set(err, FB_EPROTO, "the server certificate is not valid DER");
    EVP_PKEY *pk = X509_get_pubkey(x);
    X509_free(x);
    if (!pk || EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
        EVP_PKEY_free(pk);
        return fb_err_set(err, FB_EPROTO, "the server certificate has no RSA key");
    }
    size_t key_bytes = (size_t)EVP_PKEY_get_size(pk);
    size_t block = key_bytes - (sha256 ? 66 : 42);
    size_t plen = strlen(pwd), tlen = 4 + plen + (size_t)nonce_len;
    uint8_t *plain = malloc(tlen);
    size_t nblocks = (tlen + block - 1) / block;
    uint8_t *cipher = malloc(nblocks * key_bytes);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pk, NULL);
    int rc = 0;
    if (!plain || !cipher || !ctx) {
        rc = fb_err_set(err, FB_ENOMEM, "out of memory");
        goto out;
    }
    uint32_t l = (uint32_t)(plen + (size_t)nonce_len);
    plain[0] = (uint8_t)l, plain[1] = (uint8_t)(l >> 8), plain[2] = (uint8_t)(l >> 16), plain[3] = (uint8_t)(l >> 24);
    memcpy(plain + 4, pwd, plen);
    memcpy(plain + 4 + plen, nonce, (size_t)nonce_len);
    size_t o = 0;
    for (size_t off = 0; off < tlen; off += block) {
        size_t k = tlen - off < block ? tlen - off : block;
        size_t cl = key_bytes;
        if (EVP_PKEY_encrypt_init(ctx) <= 0 || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
            (sha256 && (EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) <= 0 ||
                        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) <= 0)) ||
            EVP_PKEY_encrypt(ctx, cipher + o, &cl, plain + off, k) <= 0) {
            rc = fb_err_set(err, FB_EPROTO, "RSA-OAEP encryption of the password failed");
            goto out;
        }
        o += cl;
    }
    *out = cipher;
    cipher = NULL;
    *out_len = (int32_t)o;
    *alg = sha256 ? ALG_OAEP256 : ALG_OAEP;
out:
    if (plain) {
        memset(plain, 0, tlen);
        free(plain);
    }
    free(cipher);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pk);
    return rc;
}

int ua_secure_random(uint8_t *p, size_t n) { return RAND_bytes(p, (int)n) == 1 ? 0 : FB_EIO; }

/* ================================================================ channels */
void ua_sec_clear(struct ua_sec *s)
{
    EVP_PKEY_free(s->own_key);
    EVP_PKEY_free(s->peer_pub);
    free(s->own_cert);
    free(s->peer_cert);
    OPENSSL_cleanse(s, sizeof *s);
    memset(s, 0, sizeof *s);
}

static int mkdirs(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0700) < 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            if (cap > (1u << 20)) break;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (!r) break;
        n += r;
    }
    fclose(f);
    *out = buf;
    *len = n;
    return buf ? 0 : -1;
}

static int write_file(const char *path, const uint8_t *p, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return -1;
    ssize_t w = write(fd, p, n);
    int rc = w == (ssize_t)n && fsync(fd) == 0 ? 0 : -1;
    close(fd);
    return rc;
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext) return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static int generate_own(const char *cert_path, const char *key_path, const char *app_uri, struct fb_err *err)
{
    EVP_PKEY *key = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    int rc = FB_EIO;
    if (!key || !x || !bn) goto out;
    char host[256] = "localhost", san[600];
    gethostname(host, sizeof host - 1);
    snprintf(san, sizeof san, "URI:%s,DNS:%s", app_uri, host);
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_set_version(x, 2) || !BN_rand(bn, 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
        !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) || !X509_gmtime_adj(X509_getm_notBefore(x), -86400) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 86400) || !X509_set_pubkey(x, key) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fieldbridge", -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"fieldbridge", -1, -1, 0) ||
        !X509_set_issuer_name(x, name) || add_ext(x, NID_subject_alt_name, san) ||
        add_ext(x, NID_basic_constraints, "critical,CA:FALSE") ||
        add_ext(x, NID_key_usage, "critical,digitalSignature,nonRepudiation,keyEncipherment,dataEncipherment") ||
        add_ext(x, NID_ext_key_usage, "serverAuth,clientAuth") || add_ext(x, NID_subject_key_identifier, "hash") ||
        add_ext(x, NID_authority_key_identifier, "keyid:always") || !X509_sign(x, key, EVP_sha256())) {
        rc = fb_err_set(err, FB_EIO, "cannot create the client certificate (OpenSSL)");
        goto out;
    }
    unsigned char *der = NULL;
    int dl = i2d_X509(x, &der);
    if (dl <= 0) {
        rc = fb_err_set(err, FB_EIO, "cannot encode the client certificate");
        goto out;
    }
    int fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)) {
        if (f)
            fclose(f);
        else if (fd >= 0)
            close(fd);
        OPENSSL_free(der);
        rc = fb_err_set(err, FB_EIO, "cannot write %s: %s", key_path, strerror(errno));
        goto out;
    }
    fclose(f);
    if (write_file(cert_path, der, (size_t)dl, 0644) < 0) {
        OPENSSL_free(der);
        rc = fb_err_set(err, FB_EIO, "cannot write %s: %s", cert_path, strerror(errno));
        goto out;
    }
    OPENSSL_free(der);
    rc = 0;
out:
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

int ua_sec_load_own(struct ua_sec *s, const char *pki, const char *app_uri, struct fb_err *err)
{
    char own[1024], cert_path[1100], key_path[1100];
    snprintf(own, sizeof own, "%s/own", pki);
    snprintf(cert_path, sizeof cert_path, "%s/cert.der", own);
    snprintf(key_path, sizeof key_path, "%s/key.pem", own);
    if (mkdirs(own) < 0) return fb_err_set(err, FB_EIO, "cannot create %s: %s", own, strerror(errno));
    if (access(cert_path, R_OK) != 0 || access(key_path, R_OK) != 0) {
        int rc = generate_own(cert_path, key_path, app_uri, err);
        if (rc) return rc;
    }
    struct stat st;
    if (stat(key_path, &st) == 0 && (st.st_mode & 077))
        return fb_err_set(err, FB_EACCES, "private key %s is accessible by group or others; run: chmod 600 %s",
                          key_path, key_path);
    uint8_t *der = NULL;
    size_t dl = 0;
    if (read_file(cert_path, &der, &dl) < 0 || !dl) {
        free(der);
        return fb_err_set(err, FB_EIO, "cannot read %s", cert_path);
    }
    FILE *f = fopen(key_path, "r");
    EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    if (!key) {
        free(der);
        return fb_err_set(err, FB_EIO, "cannot read the private key %s (PEM)", key_path);
    }
    s->own_key = key;
    s->own_cert = der;
    s->own_cert_len = (int32_t)dl;
    return 0;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[p[i] >> 4];
        out[2 * i + 1] = hx[p[i] & 15];
    }
    out[2 * n] = 0;
}

/* ------------------------------------------------ the trust list
 * pki/trusted/  certificates trusted as they are (a server's own, usually
 *               self-signed) and CA certificates whose issued certificates
 *               are trusted;
 * pki/issuers/  CA certificates that only complete chains (intermediates),
 *               trusted through a CA in trusted/;
 * pki/crl/      the CRLs of those CAs.
 * Files are DER or PEM (several certificates / CRLs in one PEM file). */

/* Every certificate (into certs) and CRL (into crls) of the files of dir;
 * either stack may be NULL. */
static void load_dir(const char *dir, STACK_OF(X509) * certs, STACK_OF(X509_CRL) * crls)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) continue;
        uint8_t *p = NULL;
        size_t n = 0;
        if (read_file(path, &p, &n) < 0 || !n) {
            free(p);
            continue;
        }
        if (n > 10 && memmem(p, n, "-----BEGIN", 10)) {
            BIO *b = BIO_new_mem_buf(p, (int)n);
            STACK_OF(X509_INFO) *inf = b ? PEM_X509_INFO_read_bio(b, NULL, NULL, NULL) : NULL;
            for (int i = 0; inf && i < sk_X509_INFO_num(inf); i++) {
                X509_INFO *xi = sk_X509_INFO_value(inf, i);
                if (xi->x509 && certs && X509_up_ref(xi->x509)) sk_X509_push(certs, xi->x509);
                if (xi->crl && crls && X509_CRL_up_ref(xi->crl)) sk_X509_CRL_push(crls, xi->crl);
            }
            sk_X509_INFO_pop_free(inf, X509_INFO_free);
            BIO_free(b);
        } else {
            const unsigned char *q = p;
            X509 *x = d2i_X509(NULL, &q, (long)n);
            if (x && certs)
                sk_X509_push(certs, x);
            else
                X509_free(x);
            if (!x && crls) {
                q = p;
                X509_CRL *c = d2i_X509_CRL(NULL, &q, (long)n);
                if (c) sk_X509_CRL_push(crls, c);
            }
        }
        free(p);
    }
    closedir(d);
}

/* The certificates of what a server sent: its own first, then (OPC UA 1.04+)
 * the CAs of its chain, back to back in one ByteString.  *leaf_len: the
 * bytes of the first. */
static STACK_OF(X509) * der_chain(const uint8_t *cert, int32_t len, size_t *leaf_len)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    const unsigned char *p = cert, *end = cert + len;
    *leaf_len = 0;
    while (sk && p < end) {
        const unsigned char *start = p;
        X509 *x = d2i_X509(NULL, &p, (long)(end - p));
        if (!x) break;
        if (!*leaf_len) *leaf_len = (size_t)(p - start);
        sk_X509_push(sk, x);
    }
    return sk;
}

/* The OPC UA status for an OpenSSL verification error at depth (0 = the
 * server's own certificate). */
static const char *verify_status(int e, int depth)
{
    switch (e) {
        case X509_V_ERR_CERT_REVOKED: return depth ? "BadCertificateIssuerRevoked" : "BadCertificateRevoked";
        case X509_V_ERR_UNABLE_TO_GET_CRL:
        case X509_V_ERR_CRL_HAS_EXPIRED:
        case X509_V_ERR_CRL_NOT_YET_VALID:
        case X509_V_ERR_CRL_SIGNATURE_FAILURE:
        case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
            return depth ? "BadCertificateIssuerRevocationUnknown" : "BadCertificateRevocationUnknown";
        case X509_V_ERR_CERT_HAS_EXPIRED:
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return depth ? "BadCertificateIssuerTimeInvalid" : "BadCertificateTimeInvalid";
        case X509_V_ERR_INVALID_CA:
        case X509_V_ERR_INVALID_PURPOSE:
            return depth ? "BadCertificateIssuerUseNotAllowed" : "BadCertificateUseNotAllowed";
        default: return "BadCertificateUntrusted";
    }
}

/* revocation=if_present: a CA without a CRL in crl/ is accepted */
static int crl_optional_cb(int ok, X509_STORE_CTX *x)
{
    if (!ok && X509_STORE_CTX_get_error(x) == X509_V_ERR_UNABLE_TO_GET_CRL) {
        X509_STORE_CTX_set_error(x, X509_V_OK);
        return 1;
    }
    return ok;
}

/* Is the certificate on a CRL in crls of its issuer (by name)?  For a
 * certificate trusted as it is, whose issuer may not be in the store. */
static const X509_CRL *revoked_by(X509 *x, STACK_OF(X509_CRL) * crls)
{
    for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
        X509_CRL *c = sk_X509_CRL_value(crls, i);
        X509_REVOKED *r = NULL;
        if (!X509_NAME_cmp(X509_CRL_get_issuer(c), X509_get_issuer_name(x)) && X509_CRL_get0_by_cert(c, &r, x) == 1)
            return c;
    }
    return NULL;
}

int32_t ua_sec_leaf_len(const uint8_t *cert, int32_t len)
{
    const unsigned char *p = cert;
    X509 *x = cert && len > 0 ? d2i_X509(NULL, &p, len) : NULL;
    int32_t n = x ? (int32_t)(p - cert) : len;
    X509_free(x);
    return n;
}

enum trust { T_UNKNOWN, T_TRUSTED, T_REFUSED };

/* Is the server certificate (leaf, with the chain the server sent) trusted
 * by pki?  T_REFUSED with the reason in err: known but revoked, or its CA
 * expired or without a CRL; T_UNKNOWN: nothing in the trust list vouches for
 * it (the caller may trust it on first use). */
static enum trust check_trust(const char *pki, X509 *leaf, STACK_OF(X509) * sent, unsigned flags, const char *where,
                              char *how, size_t how_len, struct fb_err *err)
{
    char dir[1100];
    STACK_OF(X509) *trusted = sk_X509_new_null(), *untrusted = sk_X509_new_null();
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    enum trust t = T_UNKNOWN;
    how[0] = 0;
    if (!trusted || !untrusted || !crls) goto out;
    snprintf(dir, sizeof dir, "%s/trusted", pki);
    load_dir(dir, trusted, NULL);
    snprintf(dir, sizeof dir, "%s/issuers", pki);
    load_dir(dir, untrusted, NULL);
    snprintf(dir, sizeof dir, "%s/crl", pki);
    load_dir(dir, NULL, crls);
    for (int i = 1; i < sk_X509_num(sent); i++)
        if (X509_up_ref(sk_X509_value(sent, i))) sk_X509_push(untrusted, sk_X509_value(sent, i));

    /* 1. the certificate itself is in the trust list: trusted, unless a CRL of its issuer lists it */
    for (int i = 0; i < sk_X509_num(trusted) && t == T_UNKNOWN; i++)
        if (!X509_cmp(sk_X509_value(trusted, i), leaf)) t = T_TRUSTED;
    if (t == T_TRUSTED) {
        const X509_CRL *c = revoked_by(leaf, crls);
        if (c) {
            char iss[200];
            X509_NAME_oneline(X509_CRL_get_issuer(c), iss, sizeof iss);
            fb_err_set(err, FB_EACCES,
                       "%s: the server certificate is revoked (on the CRL of %s in %s/crl; "
                       "BadCertificateRevoked)",
                       where, iss, pki);
            t = T_REFUSED;
        } else {
            snprintf(how, how_len, "in the trust list");
        }
        goto out;
    }
    /* 2. issued (through issuers/ or the chain it sent) by a CA in trusted/ */
    if (!sk_X509_num(trusted)) goto out;
    store = X509_STORE_new();
    ctx = X509_STORE_CTX_new();
    if (!store || !ctx) goto out;
    for (int i = 0; i < sk_X509_num(trusted); i++) X509_STORE_add_cert(store, sk_X509_value(trusted, i));
    for (int i = 0; i < sk_X509_CRL_num(crls); i++) X509_STORE_add_crl(store, sk_X509_CRL_value(crls, i));
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    if (flags & UA_TRUST_CRL_OPTIONAL) X509_STORE_set_verify_cb(store, crl_optional_cb);
    if (X509_STORE_CTX_init(ctx, store, leaf, untrusted) != 1) goto out;
    if (X509_verify_cert(ctx) == 1) {
        X509 *root =
            sk_X509_num(X509_STORE_CTX_get0_chain(ctx)) > 0
                ? sk_X509_value(X509_STORE_CTX_get0_chain(ctx), sk_X509_num(X509_STORE_CTX_get0_chain(ctx)) - 1)
                : NULL;
        char rn[200] = "?";
        if (root) X509_NAME_oneline(X509_get_subject_name(root), rn, sizeof rn);
        snprintf(how, how_len, "issued by the trusted CA %s", rn);
        t = T_TRUSTED;
        goto out;
    }
    int e = X509_STORE_CTX_get_error(ctx), depth = X509_STORE_CTX_get_error_depth(ctx);
    if (e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY || e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
        e == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT || e == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
        e == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE)
        goto out; /* no CA of ours vouches for it: unknown */
    X509 *bad = X509_STORE_CTX_get_current_cert(ctx);
    char bn[200] = "?";
    if (bad) X509_NAME_oneline(X509_get_subject_name(bad), bn, sizeof bn);
    fb_err_set(err, FB_EACCES, "%s: the server certificate chain is refused: %s at %s (%s)%s", where,
               X509_verify_cert_error_string(e), bn, verify_status(e, depth),
               e == X509_V_ERR_UNABLE_TO_GET_CRL ? "; put the CA's CRL into crl/ of the pki (or revocation=if_present)"
                                                 : "");
    t = T_REFUSED;
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_pop_free(trusted, X509_free);
    sk_X509_pop_free(untrusted, X509_free);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    return t;
}

int ua_sec_set_peer(struct ua_sec *s, const char *pki, unsigned flags, const uint8_t *cert, int32_t len,
                    const char *where, struct fb_err *err)
{
    if (!cert || len <= 0) return fb_err_set(err, FB_EPROTO, "%s sent no server certificate", where);
    size_t leaf_len = 0;
    STACK_OF(X509) *chain = der_chain(cert, len, &leaf_len);
    X509 *x = chain && sk_X509_num(chain) ? sk_X509_value(chain, 0) : NULL;
    if (!x) {
        sk_X509_pop_free(chain, X509_free);
        return fb_err_set(err, FB_EPROTO, "%s: the server certificate is not valid DER", where);
    }
    EVP_PKEY *pk = X509_get_pubkey(x);
    char subject[256] = "";
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof subject);
    if (!pk || EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
        EVP_PKEY_free(pk);
        sk_X509_pop_free(chain, X509_free);
        return fb_err_set(err, FB_EPROTO, "%s: the server certificate has no RSA key", where);
    }
    /* the thumbprint names the server's own certificate, not the chain */
    uint8_t thumb[20];
    EVP_Digest(cert, leaf_len, thumb, NULL, EVP_sha1(), NULL);
    char th[41];
    hex(thumb, 20, th);
    char trusted[1100], rejected[1100], path[1200], how[300];
    snprintf(trusted, sizeof trusted, "%s/trusted", pki);
    snprintf(rejected, sizeof rejected, "%s/rejected", pki);
    mkdirs(trusted);
    enum trust t = check_trust(pki, x, chain, flags, where, how, sizeof how, err);
    sk_X509_pop_free(chain, X509_free);
    if (t == T_REFUSED) {
        EVP_PKEY_free(pk);
        fb_warn(NULL, NULL, "OPC UA server %s presented certificate \"%s\" (SHA-1 %s): %s", where, subject, th,
                err ? err->msg : "refused");
        return FB_EACCES;
    }
    if (t == T_UNKNOWN) {
        if (flags & UA_TRUST_AUTO) {
            snprintf(path, sizeof path, "%s/%s.der", trusted, th);
            if (write_file(path, cert, leaf_len, 0644) < 0) {
                EVP_PKEY_free(pk);
                return fb_err_set(err, FB_EIO, "cannot write %s: %s", path, strerror(errno));
            }
            fb_info(NULL, NULL, "OPC UA server %s: certificate \"%s\" (SHA-1 %s) trusted on first use: %s", where,
                    subject, th, path);
        } else {
            mkdirs(rejected);
            snprintf(path, sizeof path, "%s/%s.der", rejected, th);
            write_file(path, cert, leaf_len, 0644);
            EVP_PKEY_free(pk);
            fb_warn(NULL, NULL,
                    "OPC UA server %s presented certificate \"%s\" (SHA-1 %s), which is not in %s and not issued by "
                    "a CA there. If it is the right server, trust it with: cp %s %s/ (or put the CA that issued it "
                    "into %s/ and its CRL into %s/crl/; or add trust_server=auto to the URL to trust on first use)",
                    where, subject, th, trusted, path, trusted, trusted, pki);
            return fb_err_set(err, FB_EACCES, "server certificate not trusted (SHA-1 %.12s…): cp %s %s/", th, path,
                              trusted);
        }
    } else {
        fb_debug(NULL, NULL, "OPC UA server %s: certificate \"%s\" trusted: %s", where, subject, how);
    }
    EVP_PKEY_free(s->peer_pub);
    free(s->peer_cert);
    s->peer_cert = malloc((size_t)len);
    if (!s->peer_cert) {
        EVP_PKEY_free(pk);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    memcpy(s->peer_cert, cert, (size_t)len);
    s->peer_cert_len = len;
    s->peer_leaf_len = (int32_t)leaf_len;
    s->peer_pub = pk;
    memcpy(s->peer_thumb, thumb, 20);
    return 0;
}

int ua_p_sha256(const uint8_t *secret, size_t sn, const uint8_t *seed, size_t seedn, uint8_t *out, size_t outn)
{
    uint8_t a[32], buf[32 + 128];
    unsigned int l = 32;
    if (seedn > 128) return FB_EINVAL;
    if (!HMAC(EVP_sha256(), secret, (int)sn, seed, seedn, a, &l)) return FB_EIO; /* A(1) */
    for (size_t o = 0; o < outn;) {
        memcpy(buf, a, 32);
        memcpy(buf + 32, seed, seedn);
        uint8_t blk[32];
        if (!HMAC(EVP_sha256(), secret, (int)sn, buf, 32 + seedn, blk, &l)) return FB_EIO;
        size_t k = outn - o < 32 ? outn - o : 32;
        memcpy(out + o, blk, k);
        o += k;
        if (!HMAC(EVP_sha256(), secret, (int)sn, a, 32, a, &l)) return FB_EIO; /* A(i+1) */
    }
    return 0;
}

static const char *sec_policy(const struct ua_sec *s) { return s->policy_uri ? s->policy_uri : UA_POLICY_B256S256; }

int ua_sec_derive(struct ua_sec *s, const uint8_t *server_nonce, int32_t len, uint32_t token)
{
    if (len != UA_NONCE_LEN) return FB_EPROTO;
    memcpy(s->server_nonce, server_nonce, UA_NONCE_LEN);
    /* signing key 32 | encrypting key 32 (Basic256Sha256) or 16 (Aes128) | IV 16 */
    size_t el = strcmp(sec_policy(s), UA_POLICY_AES128) ? 32 : 16, kl = 32 + el + 16;
    uint8_t k[80];
    if (ua_p_sha256(s->server_nonce, 32, s->client_nonce, 32, k, kl)) return FB_EIO;
    memcpy(s->send.sign, k, 32);
    memcpy(s->send.enc, k + 32, el);
    memcpy(s->send.iv, k + 32 + el, 16);
    s->send.enc_len = (uint8_t)el;
    if (ua_p_sha256(s->client_nonce, 32, s->server_nonce, 32, k, kl)) return FB_EIO;
    s->recv_prev = s->recv;
    s->prev_token = s->token;
    memcpy(s->recv.sign, k, 32);
    memcpy(s->recv.enc, k + 32, el);
    memcpy(s->recv.iv, k + 32 + el, 16);
    s->recv.enc_len = (uint8_t)el;
    s->token = token;
    OPENSSL_cleanse(k, sizeof k);
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int rsa_sign(EVP_PKEY *key, const uint8_t *a, size_t an, const uint8_t *b, size_t bn, uint8_t *sig, size_t *sl)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    int ok = m && EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, key) == 1 && EVP_DigestSignUpdate(m, a, an) == 1 &&
             (!bn || EVP_DigestSignUpdate(m, b, bn) == 1) && EVP_DigestSignFinal(m, sig, sl) == 1;
    EVP_MD_CTX_free(m);
    return ok ? 0 : FB_EIO;
}

static int rsa_verify(EVP_PKEY *key, const uint8_t *a, size_t an, const uint8_t *b, size_t bn, const uint8_t *sig,
                      size_t sl)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    int ok = m && EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestVerifyUpdate(m, a, an) == 1 && (!bn || EVP_DigestVerifyUpdate(m, b, bn) == 1) &&
             EVP_DigestVerifyFinal(m, sig, sl) == 1;
    EVP_MD_CTX_free(m);
    return ok ? 0 : FB_EACCES;
}

int ua_sec_sign(struct ua_sec *s, const uint8_t *a, size_t an, const uint8_t *b, size_t bn, uint8_t **sig,
                size_t *sig_len)
{
    size_t sl = (size_t)EVP_PKEY_get_size(s->own_key);
    *sig = malloc(sl);
    if (!*sig) return FB_ENOMEM;
    int rc = rsa_sign(s->own_key, a, an, b, bn, *sig, &sl);
    if (rc) {
        free(*sig);
        *sig = NULL;
        return rc;
    }
    *sig_len = sl;
    return 0;
}

int ua_sec_verify(struct ua_sec *s, const uint8_t *a, size_t an, const uint8_t *b, size_t bn, const uint8_t *sig,
                  size_t sig_len)
{
    return rsa_verify(s->peer_pub, a, an, b, bn, sig, sig_len);
}

static int oaep(EVP_PKEY *key, bool enc, const uint8_t *in, size_t n, uint8_t *out, size_t *outn)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(key, NULL);
    int ok = c && (enc ? EVP_PKEY_encrypt_init(c) : EVP_PKEY_decrypt_init(c)) == 1 &&
             EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1 &&
             (enc ? EVP_PKEY_encrypt(c, out, outn, in, n) : EVP_PKEY_decrypt(c, out, outn, in, n)) == 1;
    EVP_PKEY_CTX_free(c);
    return ok ? 0 : FB_EIO;
}

size_t ua_sec_opn_build(struct ua_sec *s, uint8_t *out, size_t cap, uint32_t channel_id, uint32_t seq, uint32_t req_id,
                        const uint8_t *body, size_t n)
{
    size_t cb = (size_t)EVP_PKEY_get_size(s->peer_pub), pb = cb - 42;
    size_t sig = (size_t)EVP_PKEY_get_size(s->own_key);
    bool extra = cb > 256;
    struct ua_enc e;
    ua_enc_init(&e, out, cap);
    ua_put_raw(&e, "OPNF", 4);
    ua_put_u32(&e, 0);
    ua_put_u32(&e, channel_id);
    ua_put_cstr(&e, sec_policy(s));
    ua_put_str(&e, (const char *)s->own_cert, s->own_cert_len);
    ua_put_str(&e, (const char *)s->peer_thumb, 20);
    if (e.err) return 0;
    size_t hl = e.len;
    size_t content = 8 + n, o = extra ? 2 : 1;
    size_t npad = (pb - (content + o + sig) % pb) % pb;
    size_t plain_len = content + o + npad; /* without signature */
    size_t blocks = (plain_len + sig) / pb;
    size_t total = hl + blocks * cb;
    if (total > cap || hl + plain_len + sig > cap) return 0;
    uint8_t *pl = malloc(plain_len + sig);
    if (!pl) return 0;
    put32(pl, seq);
    put32(pl + 4, req_id);
    memcpy(pl + 8, body, n);
    pl[content] = (uint8_t)npad;
    memset(pl + content + 1, (int)(npad & 0xFF), npad);
    if (extra) pl[content + 1 + npad] = (uint8_t)(npad >> 8);
    put32(out + 4, (uint32_t)total);
    size_t sl = sig;
    size_t res = 0;
    if (rsa_sign(s->own_key, out, hl, pl, plain_len, pl + plain_len, &sl) == 0 && sl == sig) {
        size_t off = hl;
        res = total;
        for (size_t i = 0; i < blocks; i++) {
            size_t ol = cb;
            if (oaep(s->peer_pub, true, pl + i * pb, pb, out + off, &ol) || ol != cb) {
                res = 0;
                break;
            }
            off += cb;
        }
    }
    OPENSSL_cleanse(pl, plain_len + sig);
    free(pl);
    return res;
}

int ua_sec_opn_open(struct ua_sec *s, const uint8_t *p, size_t n, uint8_t *plain, size_t cap, uint32_t *channel_id,
                    uint32_t *seq, uint32_t *req_id, const uint8_t **body, size_t *body_len)
{
    struct ua_dec d;
    ua_dec_init(&d, p, n);
    const uint8_t *h = ua_get_raw(&d, 8);
    if (!h || memcmp(h, "OPN", 3) || get32(h + 4) != n) return FB_EPROTO;
    *channel_id = ua_get_u32(&d);
    struct ua_str pol = ua_get_str(&d), cert = ua_get_str(&d), thumb = ua_get_str(&d);
    if (d.err || pol.len != (int32_t)strlen(sec_policy(s)) || memcmp(pol.p, sec_policy(s), (size_t)pol.len))
        return FB_EPROTO;
    if (cert.len != s->peer_cert_len || memcmp(cert.p, s->peer_cert, (size_t)cert.len)) return FB_EACCES;
    (void)thumb;
    size_t hl = d.pos, cb = (size_t)EVP_PKEY_get_size(s->own_key), sig = (size_t)EVP_PKEY_get_size(s->peer_pub);
    size_t enc = n - hl;
    if (!enc || enc % cb || enc > cap) return FB_EPROTO;
    size_t pl = 0;
    for (size_t off = 0; off < enc; off += cb) {
        size_t ol = cap - pl;
        if (oaep(s->own_key, false, p + hl + off, cb, plain + pl, &ol)) return FB_EACCES;
        pl += ol;
    }
    if (pl < 8 + 1 + sig) return FB_EPROTO;
    if (rsa_verify(s->peer_pub, p, hl, plain, pl - sig, plain + pl - sig, sig)) return FB_EACCES;
    size_t end = pl - sig;
    bool extra = cb > 256;
    size_t npad = plain[end - 1];
    if (extra) npad = (size_t)plain[end - 1] << 8 | plain[end - 2];
    size_t o = extra ? 2 : 1;
    if (npad + o + 8 > end) return FB_EPROTO;
    *seq = get32(plain);
    *req_id = get32(plain + 4);
    *body = plain + 8;
    *body_len = end - o - npad - 8;
    return 0;
}

size_t ua_sec_sym_room(const struct ua_sec *s, uint32_t buf)
{
    if (buf < 16 + 8 + 32 + 32) return 0;
    if (s->mode == 3) return (size_t)((buf - 16) / 16 * 16) - 8 - 32 - 1;
    return buf - 16 - 8 - 32;
}

static int aes(const struct ua_symkeys *k, bool enc, uint8_t *p, size_t n)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0;
    int ok = c &&
             EVP_CipherInit_ex(c, k->enc_len == 16 ? EVP_aes_128_cbc() : EVP_aes_256_cbc(), NULL, k->enc, k->iv,
                               enc ? 1 : 0) == 1 &&
             EVP_CIPHER_CTX_set_padding(c, 0) == 1 && EVP_CipherUpdate(c, p, &l1, p, (int)n) == 1 &&
             EVP_CipherFinal_ex(c, p + l1, &l2) == 1 && (size_t)(l1 + l2) == n;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : FB_EIO;
}

size_t ua_sec_sym_build(struct ua_sec *s, uint8_t *out, size_t cap, const char *type, char chunk, uint32_t channel_id,
                        uint32_t token_id, uint32_t seq, uint32_t req_id, const uint8_t *body, size_t n)
{
    bool enc = s->mode == 3;
    size_t content = 8 + n;
    size_t npad = enc ? (16 - (content + 1 + 32) % 16) % 16 : 0;
    size_t plain = content + (enc ? 1 + npad : 0);
    size_t total = 16 + plain + 32;
    if (total > cap) return 0;
    memcpy(out, type, 3);
    out[3] = (uint8_t)chunk;
    put32(out + 4, (uint32_t)total);
    put32(out + 8, channel_id);
    put32(out + 12, token_id);
    put32(out + 16, seq);
    put32(out + 20, req_id);
    memmove(out + 24, body, n);
    if (enc) memset(out + 16 + content, (int)npad, npad + 1);
    unsigned int l = 32;
    if (!HMAC(EVP_sha256(), s->send.sign, 32, out, 16 + plain, out + 16 + plain, &l)) return 0;
    if (enc && aes(&s->send, true, out + 16, plain + 32)) return 0;
    return total;
}

int ua_sec_sym_open(struct ua_sec *s, uint8_t *p, size_t n, uint32_t *token_id, uint32_t *seq, uint32_t *req_id,
                    const uint8_t **body, size_t *body_len)
{
    if (n < 16 + 8 + 32 || get32(p + 4) != n) return FB_EPROTO;
    *token_id = get32(p + 12);
    const struct ua_symkeys *k = *token_id == s->token                         ? &s->recv
                                 : *token_id == s->prev_token && s->prev_token ? &s->recv_prev
                                                                               : NULL;
    if (!k) return FB_EACCES;
    bool enc = s->mode == 3;
    if (enc) {
        if ((n - 16) % 16) return FB_EPROTO;
        if (aes(k, false, p + 16, n - 16)) return FB_EACCES;
    }
    uint8_t mac[32];
    unsigned int l = 32;
    if (!HMAC(EVP_sha256(), k->sign, 32, p, n - 32, mac, &l) || CRYPTO_memcmp(mac, p + n - 32, 32)) return FB_EACCES;
    size_t end = n - 32;
    if (enc) {
        size_t npad = p[end - 1];
        if (npad + 1 + 24 > end) return FB_EPROTO;
        end -= npad + 1;
    }
    *seq = get32(p + 16);
    *req_id = get32(p + 20);
    *body = p + 24;
    *body_len = end - 24;
    return 0;
}

/* ------------------------------------------------ server certificate checks */
static void asn1_time_text(const ASN1_TIME *t, char *out, size_t cap)
{
    struct tm tm;
    if (t && ASN1_TIME_to_tm(t, &tm) == 1)
        strftime(out, cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
    else
        snprintf(out, cap, "?");
}

/* Does a SAN entry of this type equal / match the text? */
static bool san_has_uri(X509 *x, const char *uri)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI) continue;
        const ASN1_IA5STRING *s = g->d.uniformResourceIdentifier;
        found = (size_t)s->length == strlen(uri) && !memcmp(s->data, uri, (size_t)s->length);
    }
    GENERAL_NAMES_free(gens);
    return found;
}

int ua_sec_check_cert(const uint8_t *cert, int32_t len, int64_t now_s, const char *host, const char *app_uri,
                      bool strict_names, char *warn, size_t wcap, struct fb_err *err)
{
    if (wcap) warn[0] = 0;
    if (!cert || len <= 0) return fb_err_set(err, FB_EPROTO, "no server certificate");
    const unsigned char *p = cert;
    X509 *x = d2i_X509(NULL, &p, len);
    if (!x) return fb_err_set(err, FB_EPROTO, "the server certificate is not valid DER");
    char nb[40], na[40];
    asn1_time_text(X509_get0_notBefore(x), nb, sizeof nb);
    asn1_time_text(X509_get0_notAfter(x), na, sizeof na);
    time_t now = (time_t)now_s;
    int rc = 0;
    if (X509_cmp_time(X509_get0_notBefore(x), &now) >= 0)
        rc = fb_err_set(err, FB_EACCES,
                        "the server certificate is not valid yet (valid from %s to %s; "
                        "BadCertificateTimeInvalid — check the clocks)",
                        nb, na);
    else if (X509_cmp_time(X509_get0_notAfter(x), &now) <= 0)
        rc = fb_err_set(err, FB_EACCES,
                        "the server certificate has expired (valid from %s to %s; "
                        "BadCertificateTimeInvalid — the server needs a new certificate)",
                        nb, na);
    if (!rc && host && host[0]) {
        /* an IP literal is matched against SAN IP entries, a name against DNS names */
        int m = X509_check_ip_asc(x, host, 0);
        if (m < 0) m = X509_check_host(x, host, 0, 0, NULL);
        if (m != 1) {
            size_t l = strlen(warn);
            snprintf(warn + l, wcap - l,
                     "the server certificate does not name the host %s (no matching "
                     "subjectAltName DNS/IP entry; BadCertificateHostNameInvalid)",
                     host);
        }
    }
    if (!rc && app_uri && app_uri[0] && !san_has_uri(x, app_uri)) {
        size_t l = strlen(warn);
        snprintf(warn + l, wcap - l,
                 "%sthe server certificate does not carry the server's application URI %s "
                 "(BadCertificateUriInvalid)",
                 l ? "; " : "", app_uri);
    }
    X509_free(x);
    if (!rc && strict_names && wcap && warn[0]) rc = fb_err_set(err, FB_EACCES, "%s", warn);
    return rc;
}

/* ------------------------------------------------ X.509 user identity */
void ua_user_clear(struct ua_user_cert *u)
{
    free(u->cert);
    EVP_PKEY_free(u->key);
    memset(u, 0, sizeof *u);
}

int ua_user_load(struct ua_user_cert *u, const char *cert_path, const char *key_path, struct fb_err *err)
{
    memset(u, 0, sizeof *u);
    uint8_t *raw = NULL;
    size_t n = 0;
    if (read_file(cert_path, &raw, &n) < 0)
        return fb_err_set(err, FB_EIO, "user_cert=%s: %s", cert_path, strerror(errno));
    X509 *x = NULL;
    const unsigned char *p = raw;
    if (n > 10 && !memcmp(raw, "-----BEGIN", 10)) {
        BIO *b = BIO_new_mem_buf(raw, (int)n);
        x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
    } else {
        x = d2i_X509(NULL, &p, (long)n);
    }
    free(raw);
    if (!x) return fb_err_set(err, FB_EINVAL, "user_cert=%s: not an X.509 certificate (DER or PEM)", cert_path);
    char *pem = NULL;
    int rc = fb_read_secret_file(key_path, &pem, err);
    if (rc) {
        X509_free(x);
        return rc;
    }
    BIO *b = BIO_new_mem_buf(pem, (int)strlen(pem));
    EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
    if (!key) {
        X509_free(x);
        return fb_err_set(err, FB_EINVAL, "user_key=%s: not a PEM private key (an unencrypted key is needed)",
                          key_path);
    }
    if (X509_check_private_key(x, key) != 1) {
        X509_free(x);
        EVP_PKEY_free(key);
        return fb_err_set(err, FB_EINVAL, "user_key=%s does not belong to user_cert=%s", key_path, cert_path);
    }
    unsigned char *der = NULL;
    int dl = i2d_X509(x, &der);
    X509_free(x);
    if (dl <= 0 || !(u->cert = malloc((size_t)dl))) {
        OPENSSL_free(der);
        EVP_PKEY_free(key);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    memcpy(u->cert, der, (size_t)dl);
    OPENSSL_free(der);
    u->cert_len = dl;
    u->key = key;
    return 0;
}

int ua_user_sign(const struct ua_user_cert *u, const char *policy_uri, const uint8_t *a, size_t an, const uint8_t *b,
                 size_t bn, uint8_t **sig, size_t *sig_len, const char **alg, struct fb_err *err)
{
    const EVP_MD *md = EVP_sha256();
    bool pss = false;
    *alg = UA_ALG_RSA_SHA256;
    if (policy_uri && strstr(policy_uri, "Aes256_Sha256_RsaPss")) {
        pss = true;
        *alg = "http://opcfoundation.org/UA/security/rsa-pss-sha2-256";
    } else if (policy_uri && (strstr(policy_uri, "#Basic256") && !strstr(policy_uri, "Sha256"))) {
        md = EVP_sha1();
        *alg = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
    } else if (policy_uri && strstr(policy_uri, "#Basic128Rsa15")) {
        md = EVP_sha1();
        *alg = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
    }
    size_t sl = (size_t)EVP_PKEY_get_size(u->key);
    *sig = malloc(sl);
    if (!*sig) return fb_err_set(err, FB_ENOMEM, "out of memory");
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pc = NULL;
    int ok = m && EVP_DigestSignInit(m, &pc, md, NULL, u->key) == 1 &&
             (!pss || (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) == 1 &&
                       EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) == 1)) &&
             EVP_DigestSignUpdate(m, a, an) == 1 && (!bn || EVP_DigestSignUpdate(m, b, bn) == 1) &&
             EVP_DigestSignFinal(m, *sig, &sl) == 1;
    EVP_MD_CTX_free(m);
    if (!ok) {
        free(*sig);
        *sig = NULL;
        return fb_err_set(err, FB_EIO, "cannot sign the user token with the user's key (OpenSSL)");
    }
    *sig_len = sl;
    return 0;
}
