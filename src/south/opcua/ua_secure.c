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
 * Signed and encrypted secure channels (Basic256Sha256 Sign /
 * SignAndEncrypt) are not implemented yet; see docs/opcua.md.
 */
#include "south/opcua/ua_secure.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

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
