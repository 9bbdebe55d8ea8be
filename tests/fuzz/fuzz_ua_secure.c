/* fuzz_ua_secure.c — libFuzzer harness for the OPC UA secure-channel receive
 * path: ua_recv_msg (src/south/opcua/ua_client.c) reading a byte stream from
 * a socket, with the chunk header check, ERR, the asymmetric OPN open
 * (ua_sec_opn_open: security header, RSA-OAEP decryption, signature,
 * padding), the symmetric MSG/CLO open (ua_sec_sym_open: token, AES-CBC,
 * HMAC, padding), the plain chunk parser, the channel check and reassembly.
 *
 * A fuzzer cannot forge a signature, so besides raw bytes the harness can
 * seal what it is given with the channel's keys (fixed RSA-1024 key pairs
 * made once and keys derived once from fixed nonces): then everything behind the
 * cryptographic gate — lengths, padding bytes, sequence header, chunk kinds,
 * reassembly limits — is decoded from fuzzer-chosen bytes.
 *
 * Input layout: SELECTOR BYTE, then
 *   0  raw stream, channel security None (ua_frame_parse path)
 *   1  raw stream, secured channel (Sign if bit 4 of the selector, else
 *      SignAndEncrypt): header checks before the MAC / decryption
 *   2  records [u16 len][plain chunk]: each chunk (type, size overwritten,
 *      channel, token, sequence header, body, padding byte if encrypted) gets
 *      its HMAC and, SignAndEncrypt, its AES encryption; then ua_recv_msg
 *      until the stream ends
 *   3  one OPN plaintext (sequence header, body, padding): the harness adds
 *      the asymmetric security header, signs with the server key and
 *      encrypts for the client; the reassembled body goes to ua_opn_resp
 * Any crash, leak or sanitizer report is a bug.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_ua_secure /tmp/c tests/fuzz/corpus/ua_secure
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "south/opcua/ua_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHUNK 8192
#define MAXMSG 16384

static EVP_PKEY *client_key, *server_key;
static struct ua_sec sec_keys; /* the channel's keys: derived once (init), copied per input */
static uint8_t server_cert[] = "not a DER certificate: ua_sec_opn_open compares the bytes";
static struct ua_opts opts;
static uint8_t rx[CHUNK], plain[CHUNK], msg[MAXMSG], wire[32768];

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static void init(void)
{
    fb_log_init(-1, FB_LOG_TEXT); /* silence */
    client_key = EVP_RSA_gen(1024);
    server_key = EVP_RSA_gen(1024);
    if (!client_key || !server_key) abort();
    snprintf(opts.host, sizeof opts.host, "fuzz");
    opts.timeout_ns = 1000000000;
    snprintf(opts.pki, sizeof opts.pki, "/nonexistent/pki");
}

/* The symmetric keys depend only on the fixed nonces: deriving them per input
 * (two P_SHA256 runs of OpenSSL HMACs each) took 29 % of the time (perf).
 * They are derived in the first non-empty input (libFuzzer's first, empty,
 * call is not counted), so ua_sec_derive stays in the coverage. */
static void derive_once(void)
{
    sec_keys.own_key = client_key;
    sec_keys.peer_pub = server_key;
    sec_keys.peer_cert = server_cert;
    sec_keys.peer_cert_len = (int32_t)sizeof server_cert;
    sec_keys.peer_leaf_len = sec_keys.peer_cert_len;
    uint8_t sn[UA_NONCE_LEN];
    for (size_t i = 0; i < UA_NONCE_LEN; i++) sec_keys.client_nonce[i] = (uint8_t)i, sn[i] = (uint8_t)(0x80 + i);
    if (ua_sec_derive(&sec_keys, sn, UA_NONCE_LEN, 6) || ua_sec_derive(&sec_keys, sn, UA_NONCE_LEN, 7)) abort();
}

/* The client's view of a channel in mode 1..3 with fixed keys (token 7, previous token 6). */
static void conn_setup(struct ua_conn *c, int mode)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->o = &opts;
    c->dev_name = "fuzz";
    snprintf(c->where, sizeof c->where, "fuzz:4840");
    c->ours = (struct ua_limits){0, CHUNK, CHUNK, MAXMSG, 8};
    c->rx = rx;
    c->plain = plain;
    c->ra.buf = msg;
    c->ra.cap = MAXMSG;
    c->ra.max_chunks = 8;
    c->channel_id = 5;
    c->channel_open = mode != 0; /* mode 0: before the channel (OPN answer) */
    if (mode <= 1) return;
    c->secure = true;
    c->sec = sec_keys;
    c->sec.mode = mode;
}

/* Feeds wire[0..n) through a socket to ua_recv_msg until the stream ends or is refused. */
static void receive(struct ua_conn *c, size_t n, bool opn)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return;
    if (write(sv[1], wire, n) != (ssize_t)n) abort(); /* fits the socket buffer */
    close(sv[1]);
    c->fd = sv[0];
    for (int i = 0; i < 64; i++) {
        uint32_t rid;
        struct fb_err err = {0};
        int rc = ua_recv_msg(c, 0, &rid, &err);
        if (rc == FB_EEXCEPTION) continue;
        if (rc < 0) break;
        if (c->ra.len > c->ra.cap) abort();
        if (opn) {
            struct ua_resphdr h;
            struct ua_token t;
            ua_opn_resp(c->ra.buf, c->ra.len, &h, &t);
        }
    }
    close(sv[0]);
}

/* Mode 2: seal each record [u16 len][plain chunk] as the server would. */
static size_t seal_sym(struct ua_conn *c, const uint8_t *p, size_t n)
{
    size_t out = 0;
    bool enc = c->sec.mode == 3;
    while (n >= 2) {
        size_t l = (size_t)p[0] | (size_t)p[1] << 8;
        p += 2, n -= 2;
        if (l > n) l = n;
        size_t plen = l < 24 ? 24 : l;
        if (enc) plen += (16 - (plen + 32 - 16) % 16) % 16; /* encrypted part: whole AES blocks */
        if (out + plen + 32 > sizeof wire) break;
        uint8_t *q = wire + out;
        memset(q, 0, plen);
        memcpy(q, p, l);
        put32(q + 4, (uint32_t)(plen + 32));
        /* server→client keys are the client's receive keys */
        const struct ua_symkeys *k =
            (uint32_t)q[12] == c->sec.prev_token && !q[13] && !q[14] && !q[15] ? &c->sec.recv_prev : &c->sec.recv;
        unsigned int ml = 32;
        if (!HMAC(EVP_sha256(), k->sign, 32, q, plen, q + plen, &ml)) abort();
        if (enc) {
            EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
            int l1 = 0, l2 = 0;
            if (!x || EVP_EncryptInit_ex(x, EVP_aes_256_cbc(), NULL, k->enc, k->iv) != 1 ||
                EVP_CIPHER_CTX_set_padding(x, 0) != 1 ||
                EVP_EncryptUpdate(x, q + 16, &l1, q + 16, (int)(plen + 32 - 16)) != 1 ||
                EVP_EncryptFinal_ex(x, q + 16 + l1, &l2) != 1)
                abort();
            EVP_CIPHER_CTX_free(x);
        }
        out += plen + 32;
        p += l, n -= l;
    }
    return out;
}

/* Mode 3: one asymmetric OPN chunk around the plaintext p[0..n). */
static size_t seal_opn(const uint8_t *p, size_t n)
{
    size_t cb = (size_t)EVP_PKEY_get_size(client_key), pb = cb - 42, sig = (size_t)EVP_PKEY_get_size(server_key);
    struct ua_enc e;
    ua_enc_init(&e, wire, sizeof wire);
    ua_put_raw(&e, "OPNF", 4);
    ua_put_u32(&e, 0);
    ua_put_u32(&e, 5);
    ua_put_cstr(&e, UA_POLICY_B256S256);
    ua_put_str(&e, (const char *)server_cert, (int32_t)sizeof server_cert);
    ua_put_str(&e, "01234567890123456789", 20);
    if (e.err) abort();
    size_t hl = e.len;
    if (n > 4 * pb) n = 4 * pb;
    size_t blocks = (n + sig + pb - 1) / pb, plen = blocks * pb - sig; /* plaintext + signature fill the blocks */
    uint8_t buf[8 * 128];
    memset(buf, 0, sizeof buf);
    memcpy(buf, p, n < plen ? n : plen);
    put32(wire + 4, (uint32_t)(hl + blocks * cb));
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    size_t sl = sig;
    if (!m || EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, server_key) != 1 ||
        EVP_DigestSignUpdate(m, wire, hl) != 1 || EVP_DigestSignUpdate(m, buf, plen) != 1 ||
        EVP_DigestSignFinal(m, buf + plen, &sl) != 1 || sl != sig)
        abort();
    EVP_MD_CTX_free(m);
    for (size_t i = 0; i < blocks; i++) {
        EVP_PKEY_CTX *x = EVP_PKEY_CTX_new(client_key, NULL);
        size_t ol = cb;
        if (!x || EVP_PKEY_encrypt_init(x) != 1 || EVP_PKEY_CTX_set_rsa_padding(x, RSA_PKCS1_OAEP_PADDING) != 1 ||
            EVP_PKEY_encrypt(x, wire + hl + i * cb, &ol, buf + i * pb, pb) != 1 || ol != cb)
            abort();
        EVP_PKEY_CTX_free(x);
    }
    return hl + blocks * cb;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!client_key) init();
    if (size < 1) return 0;
    if (!sec_keys.token) derive_once();
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if (n > sizeof wire / 4) n = sizeof wire / 4;
    static struct ua_conn c;
    switch (data[0] % 4) {
        case 0:
            conn_setup(&c, data[0] & 0x10 ? 1 : 0);
            memcpy(wire, p, n);
            receive(&c, n, false);
            break;
        case 1:
            conn_setup(&c, data[0] & 0x10 ? 2 : 3);
            c.channel_open = !(data[0] & 0x20);
            memcpy(wire, p, n);
            receive(&c, n, false);
            break;
        case 2:
            conn_setup(&c, data[0] & 0x10 ? 2 : 3);
            receive(&c, seal_sym(&c, p, n), false);
            break;
        case 3:
            conn_setup(&c, 3);
            c.channel_open = false;
            receive(&c, seal_opn(p, n), true);
            break;
    }
    return 0;
}
