/* test_opcua_secure.c — the Basic256Sha256 pieces of ua_secure.c without
 * sockets: P_SHA256 against the published TLS 1.2 PRF vector, key
 * derivation from the nonces, symmetric chunks (Sign and SignAndEncrypt)
 * built by one side and opened by the other, tampering and truncation
 * refused, the asymmetric OPN chunk between two generated certificates,
 * the trust list (untrusted refused and saved to rejected/, trusted after
 * the copy, trust on first use), and the RSA-OAEP password block. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
          "72e6506f48406debe0a2f12bc59e7c015e6332cea56dc081cef88b3e8fc6629c", want, sizeof want);
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
            if (mode == 3) assert_int_equal((len - 16) % 16, 0);
            else assert_int_equal(len, 16 + 8 + n + 32);
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
                                                &enc, &el, &alg, &err), 0);
    assert_int_equal(el, 256);
    assert_string_equal(alg, "http://www.w3.org/2001/04/xmlenc#rsa-oaep");
    free(enc);
    assert_int_equal(ua_secure_encrypt_password("http://x#Basic128Rsa15", b.own_cert, b.own_cert_len, "s", nonce, 32,
                                                &enc, &el, &alg, &err), FB_ENOTSUP);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_p_sha256),
        cmocka_unit_test(test_symmetric),
        cmocka_unit_test(test_asymmetric_and_trust),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
