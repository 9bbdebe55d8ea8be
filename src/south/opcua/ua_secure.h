/* ua_secure.h — OPC UA security primitives on OpenSSL 3 (ua_secure.c). */
#ifndef FB_UA_SECURE_H
#define FB_UA_SECURE_H
#include <stddef.h>
#include <stdint.h>

#include "core/fb.h"

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
#endif
