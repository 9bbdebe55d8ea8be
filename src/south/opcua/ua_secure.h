/* ua_secure.h — OPC UA security primitives on OpenSSL 3 (ua_secure.c). */
#ifndef FB_UA_SECURE_H
#define FB_UA_SECURE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

/* The UserNameIdentityToken password for a token policy that names a
 * security policy (Part 4 §7.36.3): plaintext u32 len(pwd+nonce) | pwd |
 * serverNonce, encrypted under the server certificate (DER) with RSA-OAEP
 * (SHA-1) in blocks of keyBytes−42.  Basic256, Basic256Sha256 and
 * Aes128_Sha256_RsaOaep use RSA-OAEP-SHA1; Aes256_Sha256_RsaPss uses
 * RSA-OAEP-SHA256.  On success *out is malloc'd (caller frees), *alg the
 * algorithm URI to put in the token. */
int ua_secure_encrypt_password(const char *policy_uri, const uint8_t *cert, int32_t cert_len, const char *pwd,
                               const uint8_t *nonce, int32_t nonce_len, uint8_t **out, int32_t *out_len,
                               const char **alg, struct fb_err *err);
/* Cryptographically random bytes (nonces).  0 or FB_EIO. */
int ua_secure_random(uint8_t *p, size_t n);

/* ------------------------------------------------ Basic256Sha256 channels */
#define UA_ALG_RSA_SHA256 "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
#define UA_NONCE_LEN 32

struct ua_symkeys {
    uint8_t sign[32], enc[32], iv[16];
    uint8_t enc_len; /* 32 AES-256 (Basic256Sha256), 16 AES-128 (Aes128_Sha256_RsaOaep) */
};

/* Security state of one secure channel.  Keys: P_SHA256 (TLS 1.2 PRF);
 * client keys = P(serverNonce, clientNonce), server keys = P(clientNonce,
 * serverNonce), each 32 signing | 32 encrypting | 16 IV bytes. */
struct ua_sec {
    int mode;               /* 1 None, 2 Sign, 3 SignAndEncrypt */
    const char *policy_uri; /* UA_POLICY_B256S256 (NULL = that) or UA_POLICY_AES128 */
    void *own_key;          /* EVP_PKEY * (private) */
    uint8_t *own_cert;      /* DER */
    int32_t own_cert_len;
    void *peer_pub;     /* EVP_PKEY * of the server certificate */
    uint8_t *peer_cert; /* as the server sent it: its certificate, maybe followed by its CAs */
    int32_t peer_cert_len;
    int32_t peer_leaf_len;  /* the bytes of the server's own certificate (what signatures cover) */
    uint8_t peer_thumb[20]; /* SHA-1 of the server certificate */
    uint8_t client_nonce[UA_NONCE_LEN], server_nonce[UA_NONCE_LEN];
    struct ua_symkeys send, recv, recv_prev;
    uint32_t token, prev_token; /* token ids of recv / recv_prev */
};
void ua_sec_clear(struct ua_sec *s);
/* Own certificate and key from pki/own/{cert.der,key.pem}; generated on the
 * first start (RSA 2048, SHA-256, SAN URI = app_uri, 10 years), key file 0600. */
int ua_sec_load_own(struct ua_sec *s, const char *pki, const char *app_uri, struct fb_err *err);
/* Sets the server certificate (DER; the server may send its chain, leaf
 * first) after checking it against the trust list in pki: trusted/ (the
 * certificate itself, or a CA that issued it), issuers/ (intermediate CAs),
 * crl/ (every CA's CRL; with UA_TRUST_CRL_OPTIONAL only where present).
 * Revoked, or a CA out of its validity: FB_EACCES with the OPC UA status in
 * the message.  Unknown: with UA_TRUST_AUTO its certificate is copied into
 * pki/trusted (trust on first use), else it is saved to
 * pki/rejected/<thumbprint>.der and FB_EACCES explains how to trust it. */
#define UA_TRUST_AUTO 1u
#define UA_TRUST_CRL_OPTIONAL 2u
int ua_sec_set_peer(struct ua_sec *s, const char *pki, unsigned flags, const uint8_t *cert, int32_t len,
                    const char *where, struct fb_err *err);
/* The length of the first certificate of a DER chain (len when it is not DER). */
int32_t ua_sec_leaf_len(const uint8_t *cert, int32_t len);
/* P_SHA256 keys from the nonces (after OpenSecureChannel / renew). */
int ua_sec_derive(struct ua_sec *s, const uint8_t *server_nonce, int32_t len, uint32_t token);
/* Asymmetric OPN chunk (always signed and encrypted).  Returns the size or 0. */
size_t ua_sec_opn_build(struct ua_sec *s, uint8_t *out, size_t cap, uint32_t channel_id, uint32_t seq, uint32_t req_id,
                        const uint8_t *body, size_t n);
/* Opens an asymmetric OPN response chunk p[0..n) into plain (cap >= n):
 * verifies the signature, strips padding; *body points into plain. */
int ua_sec_opn_open(struct ua_sec *s, const uint8_t *p, size_t n, uint8_t *plain, size_t cap, uint32_t *channel_id,
                    uint32_t *seq, uint32_t *req_id, const uint8_t **body, size_t *body_len);
/* Body bytes per symmetric chunk for a buffer size. */
size_t ua_sec_sym_room(const struct ua_sec *s, uint32_t buf);
/* Symmetric MSG/CLO chunk, signed (and encrypted in SignAndEncrypt). */
size_t ua_sec_sym_build(struct ua_sec *s, uint8_t *out, size_t cap, const char *type, char chunk, uint32_t channel_id,
                        uint32_t token_id, uint32_t seq, uint32_t req_id, const uint8_t *body, size_t n);
/* Opens a symmetric chunk in place: decrypts, verifies, strips padding. */
int ua_sec_sym_open(struct ua_sec *s, uint8_t *p, size_t n, uint32_t *token_id, uint32_t *seq, uint32_t *req_id,
                    const uint8_t **body, size_t *body_len);
/* RSA-PKCS1v1.5-SHA256 with our key over a‖b (session signatures); *sig malloc'd. */
int ua_sec_sign(struct ua_sec *s, const uint8_t *a, size_t an, const uint8_t *b, size_t bn, uint8_t **sig,
                size_t *sig_len);
/* Verifies the server's signature over a‖b. 0 or FB_EACCES. */
int ua_sec_verify(struct ua_sec *s, const uint8_t *a, size_t an, const uint8_t *b, size_t bn, const uint8_t *sig,
                  size_t sig_len);
/* Checks of a server certificate beyond the trust list (Part 4 §6.1.3):
 * the validity period at now_s (Unix seconds) — expired or not yet valid is
 * FB_EACCES (BadCertificateTimeInvalid) with the dates in the message; and
 * whether the certificate names the endpoint's host (SAN DNS / IP) and the
 * server's application URI (SAN URI; skipped when app_uri is NULL/empty).  A
 * name mismatch writes a description into warn (empty when all matched) and
 * is FB_EACCES only when strict_names. */
int ua_sec_check_cert(const uint8_t *cert, int32_t len, int64_t now_s, const char *host, const char *app_uri,
                      bool strict_names, char *warn, size_t wcap, struct fb_err *err);

/* ------------------------------------------------ X.509 user identity */
struct ua_user_cert {
    uint8_t *cert; /* DER */
    int32_t cert_len;
    void *key; /* EVP_PKEY * (private) */
};
/* Loads the user certificate (DER or PEM) and its private key (PEM; the file
 * must be readable only by its owner, fb_read_secret_file) and checks that
 * they belong together. */
int ua_user_load(struct ua_user_cert *u, const char *cert_path, const char *key_path, struct fb_err *err);
void ua_user_clear(struct ua_user_cert *u);
/* The user token signature over a‖b (serverCertificate ‖ serverNonce) with
 * the user's key, by the token policy's security policy: RSA-PKCS1-SHA256
 * for Basic256Sha256 / Aes128_Sha256_RsaOaep (and None), RSA-PSS-SHA256 for
 * Aes256_Sha256_RsaPss, RSA-PKCS1-SHA1 for Basic256 / Basic128Rsa15.
 * *sig malloc'd, *alg the algorithm URI. */
int ua_user_sign(const struct ua_user_cert *u, const char *policy_uri, const uint8_t *a, size_t an, const uint8_t *b,
                 size_t bn, uint8_t **sig, size_t *sig_len, const char **alg, struct fb_err *err);

/* TLS-style PRF, exposed for tests. */
int ua_p_sha256(const uint8_t *secret, size_t sn, const uint8_t *seed, size_t seedn, uint8_t *out, size_t outn);
#endif
