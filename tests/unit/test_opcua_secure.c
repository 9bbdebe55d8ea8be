/* test_opcua_secure.c — the Basic256Sha256 pieces of ua_secure.c without
 * sockets: P_SHA256 against the published TLS 1.2 PRF vector, key
 * derivation from the nonces, symmetric chunks (Sign and SignAndEncrypt)
 * built by one side and opened by the other, tampering and truncation
 * refused, the asymmetric OPN chunk between two generated certificates,
 * the trust list (untrusted refused and saved to rejected/, trusted after
 * the copy, trust on first use), and the RSA-OAEP password block.
 * Also: Aes128_Sha256_RsaOaep key layout (16-byte AES keys) and chunks; the
 * server certificate checks (validity period, host name, application URI)
 * on certificates generated here; the X.509 user identity (loading, key
 * file permissions, the token signature per policy, the token's encoding). */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "south/opcua/ua_msg.h"
#include "south/opcua/ua_secure.h"

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (h[0] && n < cap) {
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
        h += 2;
    }
    return n;
}

static void test_p_sha256(void **state)
{
    (void)state;
    uint8_t secret[16], seed[64], want[80], out[80];
    unhex("9bbe436ba940f017b17652849a71db35", secret, sizeof secret);
    memcpy(seed, "test label", 10);
    unhex("a0ba9f936cda311827a6f796ffd5198c", seed + 10, 16);
    unhex("e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a", want, sizeof want);
    assert_int_equal(ua_p_sha256(secret, 16, seed, 26, out, 32), 0);
    assert_memory_equal(out, want, 32);
    /* 80 bytes (the key block) with 32-byte nonces, checked against Python's hmac */
    uint8_t s2[32], n2[32];
    for (int i = 0; i < 32; i++) s2[i] = (uint8_t)i, n2[i] = (uint8_t)(100 + i);
    unhex("5d667f3542df4c0d18c2edc05d8fecbf7beb6a0a0403e76e1e91719689d1ecd81cdf20ea137039545580dbadc02dc685"
          "72e6506f48406debe0a2f12bc59e7c015e6332cea56dc081cef88b3e8fc6629c",
          want, sizeof want);
    assert_int_equal(ua_p_sha256(s2, 32, n2, 32, out, 80), 0);
    assert_memory_equal(out, want, 80);
}

/* client a and server b that share the derived keys the way the spec says */
static void pair(struct ua_sec *a, struct ua_sec *b, int mode)
{
    memset(a, 0, sizeof *a);
    memset(b, 0, sizeof *b);
    a->mode = b->mode = mode;
    uint8_t sn[32];
    for (int i = 0; i < 32; i++) a->client_nonce[i] = (uint8_t)(7 * i), sn[i] = (uint8_t)(255 - i);
    assert_int_equal(ua_sec_derive(a, sn, 32, 5), 0);
    /* the server's view: it sends with the client's receive keys and the reverse */
    b->send = a->recv;
    b->recv = a->send;
    b->token = 5;
    uint8_t k[80];
    ua_p_sha256(sn, 32, a->client_nonce, 32, k, 80);
    assert_memory_equal(a->send.sign, k, 32);
    assert_memory_equal(a->send.enc, k + 32, 32);
    assert_memory_equal(a->send.iv, k + 64, 16);
}

static void test_symmetric(void **state)
{
    (void)state;
    for (int mode = 2; mode <= 3; mode++) {
        struct ua_sec a, b;
        pair(&a, &b, mode);
        for (size_t n = 0; n < 70; n += 13) {
            uint8_t body[100], buf[256], copy[256];
            for (size_t i = 0; i < n; i++) body[i] = (uint8_t)(i * 3);
            size_t len = ua_sec_sym_build(&a, buf, sizeof buf, "MSG", 'F', 9, 5, 77, 88, body, n);
            assert_true(len > 0);
            if (mode == 3)
                assert_int_equal((len - 16) % 16, 0);
            else
                assert_int_equal(len, 16 + 8 + n + 32);
            uint32_t tok, seq, rid;
            const uint8_t *bp;
            size_t bl;
            memcpy(copy, buf, len);
            assert_int_equal(ua_sec_sym_open(&b, copy, len, &tok, &seq, &rid, &bp, &bl), 0);
            assert_int_equal(seq, 77);
            assert_int_equal(rid, 88);
            assert_int_equal(bl, n);
            if (n) assert_memory_equal(bp, body, n);
            if (mode == 3 && n) assert_memory_not_equal(buf + 24, body, n); /* really encrypted */
            /* one flipped bit anywhere is refused */
            for (size_t i = 16; i < len; i += 5) {
                memcpy(copy, buf, len);
                copy[i] ^= 0x01;
                assert_true(ua_sec_sym_open(&b, copy, len, &tok, &seq, &rid, &bp, &bl) < 0);
            }
            /* truncations: the size field no longer matches */
            for (size_t k = 0; k < len; k += 3) {
                memcpy(copy, buf, len);
                assert_true(ua_sec_sym_open(&b, copy, k, &tok, &seq, &rid, &bp, &bl) < 0);
            }
            /* an unknown token */
            memcpy(copy, buf, len);
            copy[12] = 6;
            assert_int_equal(ua_sec_sym_open(&b, copy, len, &tok, &seq, &rid, &bp, &bl), FB_EACCES);
        }
        assert_true(ua_sec_sym_room(&a, 8192) > 8000);
        if (mode == 3) assert_int_equal((ua_sec_sym_room(&a, 8192) + 8 + 32 + 1) % 16, 0);
    }
}

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/fb-ua-pki-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void test_asymmetric_and_trust(void **state)
{
    (void)state;
    char *pa = tmpdir(), *pb = tmpdir(), *pc = tmpdir();
    struct ua_sec a = {0}, b = {0};
    struct fb_err err = {0};
    assert_int_equal(ua_sec_load_own(&a, pa, "urn:fieldbridge:client", &err), 0);
    assert_int_equal(ua_sec_load_own(&b, pb, "urn:test:server", &err), 0);
    char key[512];
    snprintf(key, sizeof key, "%s/own/key.pem", pa);
    struct stat st;
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 077, 0); /* private key readable by its owner only */
    /* loading again reuses the same certificate */
    struct ua_sec a2 = {0};
    assert_int_equal(ua_sec_load_own(&a2, pa, "urn:fieldbridge:client", &err), 0);
    assert_int_equal(a2.own_cert_len, a.own_cert_len);
    assert_memory_equal(a2.own_cert, a.own_cert, (size_t)a.own_cert_len);
    ua_sec_clear(&a2);

    /* untrusted: refused, saved to rejected/, with the command in the message */
    memset(&err, 0, sizeof err);
    assert_int_equal(ua_sec_set_peer(&a, pc, false, b.own_cert, b.own_cert_len, "srv:4840", &err), FB_EACCES);
    assert_non_null(strstr(err.msg, "cp "));
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp %s/rejected/*.der %s/trusted/", pc, pc);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(ua_sec_set_peer(&a, pc, false, b.own_cert, b.own_cert_len, "srv:4840", &err), 0);
    /* trust on first use */
    assert_int_equal(ua_sec_set_peer(&b, pb, true, a.own_cert, a.own_cert_len, "client", &err), 0);
    assert_int_equal(ua_sec_set_peer(&b, pb, false, a.own_cert, a.own_cert_len, "client", &err), 0);

    /* a server that sends a chain (its certificate, then more): the thumbprint,
     * the signatures and a first-use trust entry cover its own certificate only */
    char *pd = tmpdir();
    size_t cl = (size_t)(b.own_cert_len + a.own_cert_len);
    uint8_t *chain = malloc(cl);
    memcpy(chain, b.own_cert, (size_t)b.own_cert_len);
    memcpy(chain + b.own_cert_len, a.own_cert, (size_t)a.own_cert_len);
    assert_int_equal(ua_sec_leaf_len(chain, (int32_t)cl), b.own_cert_len);
    struct ua_sec c3 = {0};
    assert_int_equal(ua_sec_set_peer(&c3, pd, UA_TRUST_AUTO, chain, (int32_t)cl, "srv", &err), 0);
    assert_int_equal(c3.peer_cert_len, (int32_t)cl);
    assert_int_equal(c3.peer_leaf_len, b.own_cert_len);
    uint8_t th[20];
    EVP_Digest(b.own_cert, (size_t)b.own_cert_len, th, NULL, EVP_sha1(), NULL);
    assert_memory_equal(c3.peer_thumb, th, 20);
    snprintf(cmd, sizeof cmd, "test $(cat %s/trusted/*.der | wc -c) -eq %d", pd, b.own_cert_len);
    assert_int_equal(system(cmd), 0);
    ua_sec_clear(&c3);
    free(chain);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", pd);
    assert_int_equal(system(cmd), 0);
    free(pd);

    /* OPN from a to b: b decrypts with its key and checks a's signature */
    uint8_t body[300], buf[4096], plain[4096];
    for (size_t i = 0; i < sizeof body; i++) body[i] = (uint8_t)i;
    size_t len = ua_sec_opn_build(&a, buf, sizeof buf, 0, 1, 2, body, sizeof body);
    assert_true(len > 0);
    uint32_t ch, seq, rid;
    const uint8_t *bp;
    size_t bl;
    /* b opens it as if it were the client side of a response: swap roles for the check */
    struct ua_sec bv = b;
    assert_int_equal(ua_sec_opn_open(&bv, buf, len, plain, sizeof plain, &ch, &seq, &rid, &bp, &bl), 0);
    assert_int_equal(seq, 1);
    assert_int_equal(rid, 2);
    assert_int_equal(bl, sizeof body);
    assert_memory_equal(bp, body, sizeof body);
    buf[len - 10] ^= 0x40;
    assert_true(ua_sec_opn_open(&bv, buf, len, plain, sizeof plain, &ch, &seq, &rid, &bp, &bl) < 0);
    for (size_t k = 0; k < len; k += 97)
        assert_true(ua_sec_opn_open(&bv, buf, k, plain, sizeof plain, &ch, &seq, &rid, &bp, &bl) < 0);

    /* session signatures */
    uint8_t *sig = NULL;
    size_t sl = 0;
    assert_int_equal(ua_sec_sign(&a, (const uint8_t *)"ab", 2, (const uint8_t *)"cd", 2, &sig, &sl), 0);
    assert_int_equal(ua_sec_verify(&b, (const uint8_t *)"ab", 2, (const uint8_t *)"cd", 2, sig, sl), 0);
    assert_int_equal(ua_sec_verify(&b, (const uint8_t *)"ab", 2, (const uint8_t *)"ce", 2, sig, sl), FB_EACCES);
    free(sig);

    /* password for a Basic256Sha256 token policy: one 256-byte RSA block */
    uint8_t *enc = NULL;
    int32_t el = 0;
    const char *alg = NULL;
    uint8_t nonce[32] = {1};
    assert_int_equal(ua_secure_encrypt_password(UA_POLICY_B256S256, b.own_cert, b.own_cert_len, "secret", nonce, 32,
                                                &enc, &el, &alg, &err),
                     0);
    assert_int_equal(el, 256);
    assert_string_equal(alg, "http://www.w3.org/2001/04/xmlenc#rsa-oaep");
    free(enc);
    assert_int_equal(ua_secure_encrypt_password("http://x#Basic128Rsa15", b.own_cert, b.own_cert_len, "s", nonce, 32,
                                                &enc, &el, &alg, &err),
                     FB_ENOTSUP);
    bv.own_key = NULL; /* shared with b */
    bv.peer_pub = NULL;
    bv.own_cert = bv.peer_cert = NULL;
    ua_sec_clear(&a);
    ua_sec_clear(&b);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s %s", pa, pb, pc);
    assert_int_equal(system(cmd), 0);
    free(pa);
    free(pb);
    free(pc);
}

static void test_aes128_channel(void **state)
{
    (void)state;
    for (int mode = 2; mode <= 3; mode++) {
        struct ua_sec a = {0}, b = {0};
        a.mode = b.mode = mode;
        a.policy_uri = UA_POLICY_AES128;
        uint8_t sn[32];
        for (int i = 0; i < 32; i++) a.client_nonce[i] = (uint8_t)(7 * i), sn[i] = (uint8_t)(255 - i);
        assert_int_equal(ua_sec_derive(&a, sn, 32, 5), 0);
        /* signing key 32 | encrypting key 16 | IV 16 */
        uint8_t k[64];
        ua_p_sha256(sn, 32, a.client_nonce, 32, k, 64);
        assert_int_equal(a.send.enc_len, 16);
        assert_memory_equal(a.send.sign, k, 32);
        assert_memory_equal(a.send.enc, k + 32, 16);
        assert_memory_equal(a.send.iv, k + 48, 16);
        b.send = a.recv;
        b.recv = a.send;
        b.token = 5;
        uint8_t body[100], buf[256], copy[256];
        for (size_t i = 0; i < sizeof body; i++) body[i] = (uint8_t)(i * 5);
        size_t len = ua_sec_sym_build(&a, buf, sizeof buf, "MSG", 'F', 9, 5, 77, 88, body, sizeof body);
        assert_true(len > 0);
        memcpy(copy, buf, len);
        uint32_t tok, seq, rid;
        const uint8_t *bp;
        size_t bl;
        assert_int_equal(ua_sec_sym_open(&b, copy, len, &tok, &seq, &rid, &bp, &bl), 0);
        assert_int_equal(bl, sizeof body);
        assert_memory_equal(bp, body, sizeof body);
        if (mode == 3) {
            /* really AES-128-CBC under the derived key: decrypt the first block by hand */
            EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
            uint8_t out[32];
            int ol = 0;
            assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_128_cbc(), NULL, k + 32, k + 48), 1);
            EVP_CIPHER_CTX_set_padding(c, 0);
            assert_int_equal(EVP_DecryptUpdate(c, out, &ol, buf + 16, 16), 1);
            EVP_CIPHER_CTX_free(c);
            assert_int_equal(out[0], 77); /* sequence number */
            assert_int_equal(out[4], 88); /* request id */
            assert_memory_equal(out + 8, body, 8);
            /* the Basic256Sha256 side (32-byte keys) cannot open it */
            struct ua_sec c2 = {0}, d2 = {0};
            c2.mode = d2.mode = 3;
            memcpy(c2.client_nonce, a.client_nonce, 32);
            assert_int_equal(ua_sec_derive(&c2, sn, 32, 5), 0);
            d2.recv = c2.send;
            d2.token = 5;
            memcpy(copy, buf, len);
            assert_true(ua_sec_sym_open(&d2, copy, len, &tok, &seq, &rid, &bp, &bl) < 0);
        }
    }
}

/* A self-signed certificate valid from now+nb_s to now+na_s with the given SAN (NULL: none), DER. */
static int make_cert(long nb_s, long na_s, const char *san, EVP_PKEY **keyp, uint8_t **der)
{
    EVP_PKEY *key = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), nb_s);
    X509_gmtime_adj(X509_getm_notAfter(x), na_s);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"t", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    if (san) {
        X509V3_CTX ctx;
        X509V3_set_ctx_nodb(&ctx);
        X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        assert_non_null(e);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    X509_sign(x, key, EVP_sha256());
    *der = NULL;
    int n = i2d_X509(x, der);
    X509_free(x);
    if (keyp)
        *keyp = key;
    else
        EVP_PKEY_free(key);
    return n;
}

static void test_server_cert_checks(void **state)
{
    (void)state;
    int64_t now = (int64_t)time(NULL);
    char warn[600];
    struct fb_err err = {0};
    uint8_t *der;
    int n = make_cert(-3600, 86400, "IP:127.0.0.1,DNS:plc.example,URI:urn:srv", NULL, &der);
    assert_int_equal(ua_sec_check_cert(der, n, now, "127.0.0.1", "urn:srv", true, warn, sizeof warn, &err), 0);
    assert_string_equal(warn, "");
    assert_int_equal(ua_sec_check_cert(der, n, now, "plc.example", "urn:srv", true, warn, sizeof warn, &err), 0);
    assert_int_equal(ua_sec_check_cert(der, n, now, "PLC.example", NULL, true, warn, sizeof warn, &err), 0);
    /* another host: a warning, refused only when strict */
    assert_int_equal(ua_sec_check_cert(der, n, now, "10.0.0.9", "urn:srv", false, warn, sizeof warn, &err), 0);
    assert_non_null(strstr(warn, "does not name the host 10.0.0.9"));
    assert_int_equal(ua_sec_check_cert(der, n, now, "other.example", "urn:srv", true, warn, sizeof warn, &err),
                     FB_EACCES);
    assert_non_null(strstr(err.msg, "BadCertificateHostNameInvalid"));
    /* another application URI */
    assert_int_equal(ua_sec_check_cert(der, n, now, "127.0.0.1", "urn:other", false, warn, sizeof warn, &err), 0);
    assert_non_null(strstr(warn, "application URI urn:other"));
    assert_null(strstr(warn, "host"));
    /* the same certificate seen from the future (expired) and from the past (not yet valid) */
    assert_int_equal(ua_sec_check_cert(der, n, now + 2 * 86400, "127.0.0.1", NULL, false, warn, sizeof warn, &err),
                     FB_EACCES);
    assert_non_null(strstr(err.msg, "has expired"));
    assert_int_equal(ua_sec_check_cert(der, n, now - 7200, "127.0.0.1", NULL, false, warn, sizeof warn, &err),
                     FB_EACCES);
    assert_non_null(strstr(err.msg, "not valid yet"));
    OPENSSL_free(der);
    /* generated already expired; and without any SAN */
    n = make_cert(-10 * 86400, -86400, NULL, NULL, &der);
    assert_int_equal(ua_sec_check_cert(der, n, now, "127.0.0.1", NULL, false, warn, sizeof warn, &err), FB_EACCES);
    assert_non_null(strstr(err.msg, "BadCertificateTimeInvalid"));
    OPENSSL_free(der);
    n = make_cert(-60, 86400, NULL, NULL, &der);
    /* valid since a minute before it was made: "now" is read again, as the
     * 2048-bit keys made since the first read can take longer (emulated ARM) */
    now = (int64_t)time(NULL);
    assert_int_equal(ua_sec_check_cert(der, n, now, "127.0.0.1", "urn:srv", false, warn, sizeof warn, &err), 0);
    assert_non_null(strstr(warn, "host"));
    assert_non_null(strstr(warn, "urn:srv"));
    /* truncated DER never passes */
    for (int k = 0; k < n; k += 37)
        assert_true(ua_sec_check_cert(der, k, now, "127.0.0.1", NULL, false, warn, sizeof warn, &err) < 0);
    OPENSSL_free(der);
}

static void write_pem(const char *path, EVP_PKEY *key, const uint8_t *der, int n, int mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    if (key) {
        PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    } else {
        const unsigned char *p = der;
        X509 *x = d2i_X509(NULL, &p, n);
        PEM_write_X509(f, x);
        X509_free(x);
    }
    fclose(f);
    chmod(path, (mode_t)mode);
}

static void test_user_identity(void **state)
{
    (void)state;
    char *d = tmpdir();
    char cert[300], key[300], key2[300], cmd[400];
    snprintf(cert, sizeof cert, "%s/alice.pem", d);
    snprintf(key, sizeof key, "%s/alice.key", d);
    snprintf(key2, sizeof key2, "%s/other.key", d);
    EVP_PKEY *k1, *k2;
    uint8_t *der, *der2;
    int n = make_cert(-60, 86400, "URI:urn:alice", &k1, &der);
    assert_true(make_cert(-60, 86400, NULL, &k2, &der2) > 0);
    write_pem(cert, NULL, der, n, 0644);
    write_pem(key, k1, NULL, 0, 0600);
    write_pem(key2, k2, NULL, 0, 0600);
    struct ua_user_cert u;
    struct fb_err err = {0};
    assert_int_equal(ua_user_load(&u, cert, key, &err), 0);
    assert_int_equal(u.cert_len, n);
    assert_memory_equal(u.cert, der, (size_t)n);
    /* signatures over serverCertificate ‖ serverNonce, verified with the certificate's key */
    const uint8_t sc[] = "server-certificate", nonce[] = "0123456789abcdef0123456789abcdef";
    struct {
        const char *policy, *alg;
        const EVP_MD *md;
        int pad;
    } cases[] = {
        {UA_POLICY_B256S256, UA_ALG_RSA_SHA256, EVP_sha256(), RSA_PKCS1_PADDING},
        {UA_POLICY_AES128, UA_ALG_RSA_SHA256, EVP_sha256(), RSA_PKCS1_PADDING},
        {UA_POLICY_NONE, UA_ALG_RSA_SHA256, EVP_sha256(), RSA_PKCS1_PADDING},
        {"http://opcfoundation.org/UA/SecurityPolicy#Aes256_Sha256_RsaPss",
         "http://opcfoundation.org/UA/security/rsa-pss-sha2-256", EVP_sha256(), RSA_PKCS1_PSS_PADDING},
        {"http://opcfoundation.org/UA/SecurityPolicy#Basic256", "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
         EVP_sha1(), RSA_PKCS1_PADDING},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *sig = NULL;
        size_t sl = 0;
        const char *alg = NULL;
        assert_int_equal(ua_user_sign(&u, cases[i].policy, sc, sizeof sc - 1, nonce, 32, &sig, &sl, &alg, &err), 0);
        assert_string_equal(alg, cases[i].alg);
        assert_int_equal(sl, 256);
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pc = NULL;
        assert_int_equal(EVP_DigestVerifyInit(m, &pc, cases[i].md, NULL, k1), 1);
        EVP_PKEY_CTX_set_rsa_padding(pc, cases[i].pad);
        EVP_DigestVerifyUpdate(m, sc, sizeof sc - 1);
        EVP_DigestVerifyUpdate(m, nonce, 32);
        assert_int_equal(EVP_DigestVerifyFinal(m, sig, sl), 1);
        EVP_MD_CTX_free(m);
        /* the X509IdentityToken in ActivateSession: ExtensionObject 327, policy id, certificate, then the signature */
        uint8_t out[2048];
        struct ua_enc e;
        ua_enc_init(&e, out, sizeof out);
        struct ua_reqhdr h = {0};
        struct ua_identity id = {.policy_id = "x509",
                                 .cert = u.cert,
                                 .cert_len = u.cert_len,
                                 .usig_alg = alg,
                                 .usig = sig,
                                 .usig_len = (int32_t)sl};
        ua_activatesession_req_id(&e, &h, NULL, NULL, 0, &id);
        assert_false(e.err);
        size_t al = strlen(alg);
        size_t tail = 4 + al + 4 + sl, tok = 4 + 4 + 4 + (size_t)n;
        assert_true(e.len > tail + tok + 9);
        const uint8_t *t = out + e.len - tail - tok - 9;
        const uint8_t hdr[] = {0x01, 0x00, 0x47, 0x01, 0x01}; /* NodeId i=327, binary body */
        assert_memory_equal(t, hdr, 5);
        assert_int_equal(t[5] | t[6] << 8, 4 + 4 + 4 + n); /* body length */
        assert_memory_equal(t + 9, "\x04\0\0\0x509", 8);
        assert_memory_equal(t + 17 + 4, u.cert, (size_t)n);
        assert_memory_equal(out + e.len - sl, sig, sl);
        assert_memory_equal(out + e.len - sl - 4 - al, alg, al);
        free(sig);
    }
    ua_user_clear(&u);
    /* a key of another certificate; a key file others can read; not a certificate */
    assert_int_equal(ua_user_load(&u, cert, key2, &err), FB_EINVAL);
    assert_non_null(strstr(err.msg, "does not belong"));
    chmod(key, 0644);
    assert_true(ua_user_load(&u, cert, key, &err) < 0);
    assert_int_equal(ua_user_load(&u, key2, key2, &err), FB_EINVAL);
    assert_true(ua_user_load(&u, "/nonexistent/cert.pem", key2, &err) < 0);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    OPENSSL_free(der);
    OPENSSL_free(der2);
    snprintf(cmd, sizeof cmd, "rm -rf %s", d);
    assert_int_equal(system(cmd), 0);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_p_sha256),
        cmocka_unit_test(test_symmetric),
        cmocka_unit_test(test_asymmetric_and_trust),
        cmocka_unit_test(test_aes128_channel),
        cmocka_unit_test(test_server_cert_checks),
        cmocka_unit_test(test_user_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
