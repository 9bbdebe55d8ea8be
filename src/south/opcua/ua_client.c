/* ua_client.c — one OPC UA client connection: TCP, Hello/Acknowledge, the
 * secure channel and its renewal, the session and its login, chunked
 * request/response.  The driver (opcua.c) and browse build on it.
 *
 * Connecting: TCP connect → Hello/Acknowledge (limits negotiated) →
 * OpenSecureChannel (policy None) → GetEndpoints (token policies, server
 * certificate).  With Basic256Sha256 the server certificate is checked
 * against the trust list, the discovery channel is closed and a new
 * connection opens a signed (and encrypted) channel (ua_secure.c).  Then
 * CreateSession / ActivateSession (anonymous, a user name with the password
 * encrypted per the token policy, or an X.509 user certificate).  A refused
 * login (BadUserAccessDenied, BadIdentityTokenRejected …) is remembered in
 * the caller's struct ua_memo, so the driver can back off for minutes.
 *
 * Transport limits: we announce receive/send buffers of `chunk=` bytes and a
 * maximum message of `max_message=`.  Requests are split into chunks of the
 * server's receive buffer and refused when they exceed its message or chunk
 * limit; received chunks larger than our buffer or messages larger than our
 * limit drop the connection with a clear message.  The secure-channel token
 * is renewed at 75 % of its revised lifetime (checked before every request).
 *
 * One request is in flight at a time, except Publish: Publish responses that
 * arrive while another response is awaited go to c->on_publish.
 */
#include "south/opcua/ua_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/env.h"
#include "core/log.h"
#include "core/net.h"

/* ActivateSession results that mean "these credentials are refused": retrying
 * them soon only counts towards the server's lock-out of the account. */
static bool auth_refused(uint32_t sc)
{
    sc &= 0xFFFF0000u;
    return sc == 0x801F0000u     /* BadUserAccessDenied */
           || sc == 0x80200000u  /* BadIdentityTokenInvalid */
           || sc == 0x80210000u  /* BadIdentityTokenRejected */
           || sc == 0x80570000u; /* BadUserSignatureInvalid */
}

/* One frame into c->rx; returns its size. */
static int recv_frame(struct ua_conn *c, int64_t deadline, struct fb_err *err)
{
    int rc = fb_net_recv_all(c->fd, c->rx, UA_HDR_LEN, deadline);
    if (rc) {
        if (rc == FB_EIO)
            fb_err_set(err, rc, "%s closed the connection", c->where);
        else
            fb_err_set(err, rc, "%s: no answer within %.3gs", c->where, c->o->timeout_ns / 1e9);
        return rc;
    }
    char type[4], chunk;
    int size = ua_hdr_peek(c->rx, UA_HDR_LEN, 0, type, &chunk);
    if (size < 0)
        return fb_err_set(err, FB_EPROTO, "%s: not an OPC UA TCP message (is this an OPC UA server?)", c->where);
    if ((uint32_t)size > c->ours.recv_buf)
        return fb_err_set(err, FB_EPROTO,
                          "%s sent a %d-byte chunk, more than our receive buffer of %u bytes "
                          "(BadTcpMessageTooLarge)",
                          c->where, size, c->ours.recv_buf);
    rc = fb_net_recv_all(c->fd, c->rx + UA_HDR_LEN, (size_t)size - UA_HDR_LEN, deadline);
    if (rc) return fb_err_set(err, rc, "%s: connection lost in the middle of a message", c->where);
    return size;
}

/* After a refused secured OpenSecureChannel: the usual cause is that the
 * server does not trust our application certificate yet (mutual
 * authentication) — say which file to give it. */
static void trust_hint(const struct ua_conn *c, uint32_t st, struct fb_err *err)
{
    st &= 0xFFFF0000u;
    if (!c->secure || c->channel_open || !err) return;
    if (st != 0x80130000u && st != 0x801A0000u && st != 0x80120000u && !(st >= 0x80140000u && st <= 0x801E0000u))
        return;
    size_t l = strlen(err->msg);
    snprintf(err->msg + l, sizeof err->msg - l,
             " (the server does not trust our certificate? add %s/own/cert.der to its trusted clients)", c->o->pki);
}

static int server_error(struct ua_conn *c, int size, struct fb_err *err)
{
    uint32_t st = 0;
    char reason[200] = "", qb[16];
    if (ua_err_parse(c->rx, (size_t)size, &st, reason, sizeof reason) < 0)
        return fb_err_set(err, FB_EPROTO, "%s sent a malformed Error message", c->where);
    fb_error(c->dev_name, NULL, "OPC UA server %s reported an error: %s%s%s", c->where, ua_status_text(st, qb),
             reason[0] ? ": " : "", reason);
    int rc = fb_err_set(err, FB_EIO, "server error %s%s%s", ua_status_text(st, qb), reason[0] ? ": " : "", reason);
    trust_hint(c, st, err);
    return rc;
}

/* A complete message (reassembled from its chunks) into c->ra.buf.
 * FB_EEXCEPTION: the server aborted request *req_id. */
int ua_recv_msg(struct ua_conn *c, int64_t deadline, uint32_t *req_id, struct fb_err *err)
{
    for (;;) {
        int size = recv_frame(c, deadline, err);
        if (size < 0) return size;
        if (!memcmp(c->rx, "ERR", 3)) return server_error(c, size, err);
        struct ua_frame f;
        if (c->secure) {
            memset(&f, 0, sizeof f);
            memcpy(f.type, c->rx, 3);
            f.chunk = (char)c->rx[3];
            int src;
            if (!memcmp(c->rx, "OPN", 3))
                src = ua_sec_opn_open(&c->sec, c->rx, (size_t)size, c->plain, c->ours.recv_buf, &f.channel_id, &f.seq,
                                      &f.req_id, &f.body, &f.body_len);
            else {
                src =
                    ua_sec_sym_open(&c->sec, c->rx, (size_t)size, &f.token_id, &f.seq, &f.req_id, &f.body, &f.body_len);
                f.channel_id = size >= 12 ? (uint32_t)c->rx[8] | (uint32_t)c->rx[9] << 8 | (uint32_t)c->rx[10] << 16 |
                                                (uint32_t)c->rx[11] << 24
                                          : 0;
            }
            if (src == FB_EACCES)
                return fb_err_set(err, FB_EPROTO,
                                  "%s: a %.3s chunk failed its signature or decryption check "
                                  "(BadSecurityChecksFailed)",
                                  c->where, (const char *)c->rx);
            if (src < 0)
                return fb_err_set(err, FB_EPROTO, "%s sent a malformed secured %.3s chunk", c->where,
                                  (const char *)c->rx);
        } else if (ua_frame_parse(c->rx, (size_t)size, &f) < 0)
            return fb_err_set(err, FB_EPROTO, "%s sent a malformed %.3s chunk", c->where, (const char *)c->rx);
        if (c->channel_open && f.channel_id != c->channel_id)
            return fb_err_set(err, FB_EPROTO, "%s answered on secure channel %u, ours is %u", c->where, f.channel_id,
                              c->channel_id);
        int rc = ua_reasm_add(&c->ra, &f);
        if (rc == 1) {
            *req_id = f.req_id;
            return 0;
        }
        if (rc == 0) continue;
        if (rc == FB_ERANGE)
            return fb_err_set(err, FB_EPROTO,
                              "%s sent a message larger than our limit of %u bytes "
                              "(raise max_message= or read fewer nodes per request)",
                              c->where, c->ours.max_msg);
        if (rc == FB_EEXCEPTION) {
            struct ua_dec d;
            ua_dec_init(&d, f.body, f.body_len);
            uint32_t st = ua_get_u32(&d);
            char qb[16];
            *req_id = f.req_id;
            return fb_err_set(err, FB_EEXCEPTION, "%s aborted the response: %s", c->where, ua_status_text(st, qb));
        }
        return fb_err_set(err, FB_EPROTO, "%s interleaved the chunks of two messages", c->where);
    }
}

/* Sends body[0..n) as a message of `type` in chunks.  *rid gets its request id. */
int ua_send_msg(struct ua_conn *c, const char *type, const uint8_t *body, size_t n, uint32_t *rid, struct fb_err *err)
{
    size_t room = c->secure        ? (type[0] == 'O' ? (size_t)-1 / 2 : ua_sec_sym_room(&c->sec, c->send_chunk))
                  : type[0] == 'O' ? ua_chunk_room("OPN", c->send_chunk)
                                   : ua_chunk_room("MSG", c->send_chunk);
    size_t nchunks = n ? (n + room - 1) / room : 1;
    if (c->peer.max_msg && n > c->peer.max_msg)
        return fb_err_set(err, FB_ERANGE, "request of %zu bytes exceeds the server's message limit of %u bytes", n,
                          c->peer.max_msg);
    if (c->peer.max_chunks && nchunks > c->peer.max_chunks)
        return fb_err_set(err, FB_ERANGE, "request needs %zu chunks, the server accepts %u", nchunks,
                          c->peer.max_chunks);
    if (++c->req_id == 0) c->req_id = 1;
    *rid = c->req_id;
    int64_t deadline = fb_mono_ns() + c->o->timeout_ns;
    size_t off = 0;
    do {
        size_t k = n - off < room ? n - off : room;
        bool last = off + k >= n;
        if (++c->seq > 4294966271u) c->seq = 1; /* wrap below 1024 (Part 6 §6.7.2.4) */
        size_t fl = !c->secure       ? ua_chunk_build(c->tx, c->send_chunk, type, last ? 'F' : 'C', c->channel_id,
                                                      c->token_id, c->seq, c->req_id, body + off, k)
                    : type[0] == 'O' ? ua_sec_opn_build(&c->sec, c->tx, c->send_chunk, c->channel_id, c->seq, c->req_id,
                                                        body + off, k)
                                     : ua_sec_sym_build(&c->sec, c->tx, c->send_chunk, type, last ? 'F' : 'C',
                                                        c->channel_id, c->token_id, c->seq, c->req_id, body + off, k);
        if (!fl) return fb_err_set(err, FB_EINVAL, "internal: chunk does not fit");
        int rc = fb_net_send_all(c->fd, c->tx, fl, deadline);
        if (rc) return fb_err_set(err, rc, "%s: connection lost while sending", c->where);
        off += k;
    } while (off < n);
    return 0;
}

struct ua_reqhdr ua_reqhdr(struct ua_conn *c, uint32_t timeout_ms)
{
    struct ua_reqhdr h = {.auth = c->session_open || !ua_nodeid_is_null(&c->auth) ? &c->auth : NULL,
                          .handle = ++c->handle,
                          .timeout_ms = timeout_ms ? timeout_ms : (uint32_t)(c->o->timeout_ns / 1000000),
                          .ts = ua_dt_from_ns(fb_now_ns())};
    return h;
}

bool ua_is_publish(struct ua_conn *c, uint32_t rid, bool remove)
{
    for (uint32_t i = 0; i < c->npub; i++)
        if (c->pub_ids[i] == rid) {
            if (remove) c->pub_ids[i] = c->pub_ids[--c->npub];
            return true;
        }
    return false;
}

/* Waits for the response to rid; Publish responses arriving meanwhile are applied. */
static int wait_resp(struct ua_conn *c, uint32_t rid, struct fb_err *err)
{
    int64_t deadline = fb_mono_ns() + c->o->timeout_ns;
    for (;;) {
        uint32_t got = 0;
        int rc = ua_recv_msg(c, deadline, &got, err);
        if (rc == FB_EEXCEPTION && got != rid) {
            if (ua_is_publish(c, got, true)) continue;
            fb_debug(c->dev_name, NULL, "ignored an aborted response to request %u", got);
            continue;
        }
        if (rc) return rc;
        if (got == rid) return 0;
        if (ua_is_publish(c, got, true)) {
            if (c->on_publish) c->on_publish(c, c->ra.buf, c->ra.len);
            continue;
        }
        fb_debug(c->dev_name, NULL, "ignored a late response to request %u", got);
    }
}

/* Sends the request in c->body[0..n) and waits for its response (c->ra.buf). */
int ua_call(struct ua_conn *c, size_t n, struct fb_err *err)
{
    if (c->channel_open && fb_mono_ns() >= c->renew_at) {
        int rc = ua_renew(c, 1, err);
        if (rc) return rc;
    }
    uint32_t rid;
    int rc = ua_send_msg(c, "MSG", c->body, n, &rid, err);
    if (rc) return rc;
    return wait_resp(c, rid, err);
}

int ua_svc_error(struct ua_conn *c, const char *what, int rc, const struct ua_resphdr *h, struct fb_err *err)
{
    char qb[16];
    if (rc == FB_EEXCEPTION)
        return fb_err_set(err, FB_EEXCEPTION, "%s: %s refused: %s", c->where, what, ua_status_text(h->result, qb));
    return fb_err_set(err, FB_EPROTO, "%s: malformed %s response", c->where, what);
}

/* session-level failures mean: reconnect */
bool ua_session_lost(uint32_t sc)
{
    sc &= 0xFFFF0000u;
    return sc == UA_BAD_SESSION_ID_INVALID || sc == UA_BAD_SESSION_CLOSED || sc == UA_BAD_SESSION_NOT_ACTIVATED ||
           sc == UA_BAD_SECURE_CHANNEL_CLOSED || sc == UA_BAD_SECURE_CHANNEL_TOKEN_UNKNOWN ||
           sc == 0x800D0000u /* BadServerNotConnected */ || sc == 0x800C0000u /* BadShutdown */;
}

/* ------------------------------------------------------------ channel */
int ua_renew(struct ua_conn *c, uint32_t request_type, struct fb_err *err)
{
    struct ua_enc e;
    ua_enc_init(&e, c->obody, 512);
    struct ua_reqhdr h = ua_reqhdr(c, 0);
    h.auth = NULL;
    if (c->secure) {
        if (ua_secure_random(c->sec.client_nonce, UA_NONCE_LEN) < 0)
            return fb_err_set(err, FB_EIO, "no random bytes for the channel nonce");
        ua_opn_req_nonce(&e, &h, request_type, (uint32_t)c->o->mode, c->sec.client_nonce, UA_NONCE_LEN,
                         c->o->lifetime_ms);
    } else {
        ua_opn_req(&e, &h, request_type, 1, c->o->lifetime_ms);
    }
    if (e.err) return fb_err_set(err, FB_EINVAL, "internal: OPN too large");
    uint32_t rid;
    int rc = ua_send_msg(c, "OPN", c->obody, e.len, &rid, err);
    if (rc) return rc;
    rc = wait_resp(c, rid, err);
    if (rc) return rc;
    struct ua_resphdr rh;
    struct ua_token t;
    rc = ua_opn_resp(c->ra.buf, c->ra.len, &rh, &t);
    if (rc) {
        rc = ua_svc_error(c, request_type ? "renewing the secure channel" : "OpenSecureChannel", rc, &rh, err);
        if (rc == FB_EEXCEPTION) trust_hint(c, rh.result, err);
        return rc;
    }
    if (request_type == 0)
        c->channel_id = t.channel_id;
    else if (t.channel_id != c->channel_id)
        return fb_err_set(err, FB_EPROTO, "%s renewed another secure channel (%u, ours %u)", c->where, t.channel_id,
                          c->channel_id);
    if (c->secure && ua_sec_derive(&c->sec, (const uint8_t *)t.server_nonce.p, t.server_nonce.len, t.token_id) < 0)
        return fb_err_set(err, FB_EPROTO, "%s sent a server nonce of %d bytes (32 expected)", c->where,
                          t.server_nonce.len);
    c->token_id = t.token_id;
    c->lifetime_ms = t.lifetime_ms ? t.lifetime_ms : c->o->lifetime_ms;
    c->renew_at = fb_mono_ns() + ua_ms_to_ns(c->lifetime_ms * 0.75);
    c->channel_open = true;
    fb_debug(c->dev_name, NULL, "secure channel %u token %u, lifetime %u ms%s", c->channel_id, c->token_id,
             c->lifetime_ms, request_type ? " (renewed)" : "");
    return 0;
}

void ua_conn_free(struct ua_conn *c)
{
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    free(c->tx);
    free(c->rx);
    free(c->body);
    free(c->obody);
    free(c->rids);
    free(c->plain);
    free(c->ra.buf);
    ua_sec_clear(&c->sec);
    ua_nodeid_clear(&c->auth);
    free(c);
}

/* Polite goodbye: CloseSession (deleting subscriptions) and CloseSecureChannel. */
void ua_disconnect(struct ua_conn *c)
{
    if (c->fd < 0) return;
    struct fb_err e = {0};
    if (c->session_open) {
        struct ua_enc en;
        ua_enc_init(&en, c->body, UA_BODY_CAP);
        struct ua_reqhdr h = ua_reqhdr(c, 0);
        ua_closesession_req(&en, &h, true);
        if (!en.err && ua_call(c, en.len, &e) == 0) {
            struct ua_resphdr rh;
            ua_simple_resp(c->ra.buf, c->ra.len, UA_ID_CLOSESESSION_RESP, &rh);
        }
        c->session_open = false;
    }
    if (c->channel_open) {
        struct ua_enc en;
        ua_enc_init(&en, c->obody, 512);
        struct ua_reqhdr h = ua_reqhdr(c, 0);
        h.auth = NULL;
        ua_clo_req(&en, &h);
        uint32_t rid;
        if (!en.err) ua_send_msg(c, "CLO", c->obody, en.len, &rid, &e);
        c->channel_open = false;
    }
}

/* TCP connect, Hello / Acknowledge, OpenSecureChannel (None or secured). */
static int transport_open(struct ua_conn *c, struct fb_err *err)
{
    const struct ua_opts *o = c->o;
    int rc;
    rc = fb_tcp_connect(o->host, o->port, o->timeout_ns, c->where, &c->fd, err);
    if (rc) return rc;
    /* Hello / Acknowledge */
    int64_t deadline = fb_mono_ns() + o->timeout_ns;
    size_t n = ua_hello_build(c->body, UA_BODY_CAP, &c->ours, o->endpoint);
    rc = n ? fb_net_send_all(c->fd, c->body, n, deadline) : FB_EINVAL;
    if (rc) {
        fb_err_set(err, rc, "%s: cannot send Hello", c->where);
        return rc;
    }
    int size = recv_frame(c, deadline, err);
    if (size < 0) {
        rc = size;
        if (rc == FB_EIO) fb_err_set(err, rc, "%s closed the connection after Hello (not an OPC UA server?)", c->where);
        return rc;
    }
    if (!memcmp(c->rx, "ERR", 3)) {
        rc = server_error(c, size, err);
        return rc;
    }
    if (ua_ack_parse(c->rx, (size_t)size, &c->peer) < 0) {
        rc = fb_err_set(err, FB_EPROTO, "%s: malformed Acknowledge", c->where);
        return rc;
    }
    c->send_chunk = c->peer.recv_buf < c->ours.send_buf ? c->peer.recv_buf : c->ours.send_buf;
    free(c->tx);
    c->tx = malloc(c->send_chunk);
    if (!c->tx) {
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    fb_debug(c->dev_name, NULL, "%s: chunks %u out / %u in, server max message %u, max chunks %u", c->where,
             c->send_chunk, c->peer.send_buf, c->peer.max_msg, c->peer.max_chunks);
    return ua_renew(c, 0, err);
}

/* ---------------------------------------------------------- connecting */
/* What GetEndpoints told us about the endpoint we will use. */
struct ua_ep {
    char policy_id[128];        /* the user token policy for our login */
    char token_policy_uri[128]; /* its security policy ("" = the channel's) */
    char app_uri[256];          /* the server's application URI */
    uint8_t *server_cert;       /* owned */
    int32_t server_cert_len;
    uint8_t snonce[64]; /* the session's server nonce (CreateSession) */
    int32_t snonce_len;
};

static const char *mode_name(int mode) { return mode == 1 ? "None" : mode == 2 ? "Sign" : "SignAndEncrypt"; }

static const char *login_name(const struct ua_opts *o)
{
    return o->user_cert ? "X.509 certificate" : o->user ? "user name" : "anonymous";
}

/* The connection with its buffers and, for a secured mode, our certificate. */
static int conn_new(struct ua_conn **out, const struct ua_opts *o, const char *dev_name, struct fb_err *err)
{
    struct ua_conn *c = calloc(1, sizeof *c);
    if (!c) return fb_err_set(err, FB_ENOMEM, "out of memory");
    c->fd = -1;
    c->o = o;
    c->dev_name = dev_name;
    snprintf(c->where, sizeof c->where, "%s:%d", o->host, o->port);
    c->ours = (struct ua_limits){0, o->chunk, o->chunk, o->max_msg, 0};
    c->rx = malloc(o->chunk);
    c->body = malloc(UA_BODY_CAP);
    c->obody = malloc(512);
    c->ra.buf = malloc(o->max_msg);
    c->ra.cap = o->max_msg;
    *out = c;
    if (!c->rx || !c->body || !c->obody || !c->ra.buf) return fb_err_set(err, FB_ENOMEM, "out of memory");
    if (o->mode > 1) {
        c->plain = malloc(o->chunk);
        if (!c->plain) return fb_err_set(err, FB_ENOMEM, "out of memory");
        c->sec.mode = o->mode;
        c->sec.policy_uri = o->policy_uri;
        return ua_sec_load_own(&c->sec, o->pki, UA_APP_URI, err);
    }
    return 0;
}

/* GetEndpoints: the endpoint with our security policy and mode, its token
 * policy for our login, and the server certificate. */
static int get_endpoints(struct ua_conn *c, struct ua_ep *ep, struct fb_err *err)
{
    const struct ua_opts *o = c->o;
    struct ua_enc e;
    ua_enc_init(&e, c->body, UA_BODY_CAP);
    struct ua_reqhdr h = ua_reqhdr(c, 0);
    ua_getendpoints_req(&e, &h, o->endpoint);
    int rc = ua_call(c, e.len, err);
    if (rc) return rc;
    struct ua_resphdr rh;
    struct ua_endpoint *eps = calloc(UA_MAX_ENDPOINTS, sizeof *eps);
    if (!eps) return fb_err_set(err, FB_ENOMEM, "out of memory");
    uint32_t neps = 0;
    rc = ua_getendpoints_resp(c->ra.buf, c->ra.len, &rh, eps, UA_MAX_ENDPOINTS, &neps);
    if (rc) {
        free(eps);
        return ua_svc_error(c, "GetEndpoints", rc, &rh, err);
    }
    /* copy what we need before the receive buffer is reused */
    bool found = false;
    uint32_t want = o->user_cert ? 2 : o->user ? 1 : 0;
    const char *want_pol = o->mode > 1 ? o->policy_uri : UA_POLICY_NONE;
    char offered[400] = "";
    for (uint32_t i = 0; i < neps; i++) {
        const struct ua_endpoint *x = &eps[i];
        const char *pn = x->policy_uri.len > 0 ? memrchr(x->policy_uri.p, '#', (size_t)x->policy_uri.len) : NULL;
        size_t ol = strlen(offered);
        if (pn && ol + 64 < sizeof offered)
            snprintf(offered + ol, sizeof offered - ol, "%s%.*s/%s", ol ? ", " : "",
                     (int)(x->policy_uri.p + x->policy_uri.len - pn - 1), pn + 1, mode_name((int)x->mode));
        if (x->mode != (uint32_t)o->mode || x->policy_uri.len != (int32_t)strlen(want_pol) ||
            memcmp(x->policy_uri.p, want_pol, strlen(want_pol)))
            continue;
        found = true;
        if (!ep->app_uri[0] && x->app_uri.len > 0)
            snprintf(ep->app_uri, sizeof ep->app_uri, "%.*s", (int)x->app_uri.len, x->app_uri.p);
        for (uint32_t k = 0; k < x->ntokens; k++) {
            const struct ua_token_policy *t = &x->tokens[k];
            if (t->type != want || ep->policy_id[0]) continue;
            snprintf(ep->policy_id, sizeof ep->policy_id, "%.*s", t->policy_id.len > 0 ? (int)t->policy_id.len : 0,
                     t->policy_id.p ? t->policy_id.p : "");
            snprintf(ep->token_policy_uri, sizeof ep->token_policy_uri, "%.*s",
                     t->policy_uri.len > 0 ? (int)t->policy_uri.len : 0, t->policy_uri.p ? t->policy_uri.p : "");
            if (x->cert.len > 0 && !ep->server_cert && (ep->server_cert = malloc((size_t)x->cert.len))) {
                memcpy(ep->server_cert, x->cert.p, (size_t)x->cert.len);
                ep->server_cert_len = x->cert.len;
            }
        }
    }
    free(eps);
    if (!found)
        return fb_err_set(err, FB_EACCES, "%s offers no endpoint with security %s/%s (it offers: %s)", c->where,
                          strrchr(want_pol, '#') + 1, mode_name(o->mode), offered);
    return 0;
}

/* Basic256Sha256: check the server certificate (validity, names, trust),
 * then close the discovery channel and open a secured one. */
static int secure_channel(struct ua_conn *c, struct ua_ep *ep, struct ua_memo *memo, struct fb_err *err)
{
    const struct ua_opts *o = c->o;
    char warn[600];
    struct fb_err cerr = {0};
    int rc = ua_sec_check_cert(ep->server_cert, ep->server_cert_len, fb_now_ns() / 1000000000LL,
                               o->no_names ? NULL : o->host, o->no_names ? NULL : ep->app_uri, o->strict_names, warn,
                               sizeof warn, &cerr);
    if (rc) return fb_err_set(err, rc, "%s: %s", c->where, cerr.msg);
    /* said once, and again only when it changes: not at every reconnect */
    if (!memo || strcmp(memo->cert_warn, warn)) {
        if (warn[0])
            fb_warn(c->dev_name, NULL,
                    "OPC UA server %s: %s (accepted; check_names=refuse refuses such servers, "
                    "check_names=off stops comparing names)",
                    c->where, warn);
        else if (memo && memo->cert_warn[0])
            fb_info(c->dev_name, NULL, "OPC UA server %s: its certificate names the host and application URI now",
                    c->where);
        if (memo) snprintf(memo->cert_warn, sizeof memo->cert_warn, "%s", warn);
    }
    rc = ua_sec_set_peer(&c->sec, o->pki,
                         (o->auto_trust ? UA_TRUST_AUTO : 0) | (o->crl_optional ? UA_TRUST_CRL_OPTIONAL : 0),
                         ep->server_cert, ep->server_cert_len, c->where, err);
    if (rc) return rc;
    ua_disconnect(c);
    close(c->fd);
    c->fd = -1;
    c->channel_id = 0;
    c->token_id = 0;
    c->secure = true;
    return transport_open(c, err);
}

/* CreateSession: our nonce and certificate, the server's nonce (kept in ep
 * for the login) and, on a secured channel, its signature checked. */
static int create_session(struct ua_conn *c, uint32_t session_ms, struct ua_ep *ep, struct fb_err *err)
{
    const struct ua_opts *o = c->o;
    uint8_t nonce[32];
    if (ua_secure_random(nonce, sizeof nonce) < 0)
        return fb_err_set(err, FB_EIO, "no random bytes for the session nonce");
    struct ua_session_req sr = {.app_uri = UA_APP_URI,
                                .product_uri = "urn:fieldbridge",
                                .app_name = "fieldbridge",
                                .endpoint_url = o->endpoint,
                                .session_name = c->dev_name && c->dev_name[0] ? c->dev_name : "fieldbridge",
                                .nonce = nonce,
                                .nonce_len = 32,
                                .timeout_ms = session_ms,
                                .cert = c->secure ? c->sec.own_cert : NULL,
                                .cert_len = c->sec.own_cert_len};
    struct ua_enc e;
    ua_enc_init(&e, c->body, UA_BODY_CAP);
    struct ua_reqhdr h = ua_reqhdr(c, 0);
    ua_createsession_req(&e, &h, &sr);
    int rc = ua_call(c, e.len, err);
    if (rc) return rc;
    struct ua_session *ss = calloc(1, sizeof *ss);
    if (!ss) return fb_err_set(err, FB_ENOMEM, "out of memory");
    struct ua_resphdr rh;
    rc = ua_createsession_resp(c->ra.buf, c->ra.len, &rh, ss);
    if (rc) {
        free(ss);
        return ua_svc_error(c, "CreateSession", rc, &rh, err);
    }
    rc = ua_nodeid_copy(&ss->auth_token, &c->auth);
    ep->snonce_len = ss->server_nonce.len > 0 ? (ss->server_nonce.len > 64 ? 64 : ss->server_nonce.len) : 0;
    if (ep->snonce_len) memcpy(ep->snonce, ss->server_nonce.p, (size_t)ep->snonce_len);
    if (!rc && c->secure &&
        (ss->sig.len <= 0 || ua_sec_verify(&c->sec, c->sec.own_cert, (size_t)c->sec.own_cert_len, nonce, sizeof nonce,
                                           (const uint8_t *)ss->sig.p, (size_t)ss->sig.len)))
        rc = fb_err_set(err, FB_EACCES,
                        "%s: the server's session signature does not verify "
                        "(BadApplicationSignatureInvalid)",
                        c->where);
    if (ss->server_cert.len > 0 && !ep->server_cert && (ep->server_cert = malloc((size_t)ss->server_cert.len))) {
        memcpy(ep->server_cert, ss->server_cert.p, (size_t)ss->server_cert.len);
        ep->server_cert_len = ss->server_cert.len;
    }
    free(ss);
    if (!rc) c->session_open = true;
    return rc;
}

/* The user identity of the login: a password encrypted per the token policy,
 * or an X.509 certificate with a signature over serverCertificate ‖ nonce. */
struct ua_login {
    char *pwd;
    uint8_t *enc_pwd;
    int32_t enc_len;
    const char *alg;
    struct ua_user_cert ucert;
    uint8_t *usig;
    size_t usig_len;
    const char *usig_alg;
};

static void login_clear(struct ua_login *l)
{
    if (l->enc_pwd && l->enc_pwd != (uint8_t *)l->pwd) free(l->enc_pwd);
    free(l->usig);
    ua_user_clear(&l->ucert);
    if (l->pwd) {
        memset(l->pwd, 0, strlen(l->pwd));
        free(l->pwd);
    }
}

static int login_prepare(struct ua_conn *c, struct ua_ep *ep, struct ua_login *l, struct fb_err *err)
{
    const struct ua_opts *o = c->o;
    if (!ep->token_policy_uri[0]) /* empty: the channel's policy applies */
        snprintf(ep->token_policy_uri, sizeof ep->token_policy_uri, "%s", c->secure ? o->policy_uri : UA_POLICY_NONE);
    if (o->user_cert) {
        int rc = ua_user_load(&l->ucert, o->user_cert, o->user_key, err);
        if (!rc && (!ep->server_cert || !ep->snonce_len))
            rc = fb_err_set(err, FB_EPROTO, "%s sent no server certificate or nonce to sign the user token with",
                            c->where);
        if (!rc)
            rc = ua_user_sign(&l->ucert, ep->token_policy_uri, ep->server_cert,
                              (size_t)ua_sec_leaf_len(ep->server_cert, ep->server_cert_len), ep->snonce,
                              (size_t)ep->snonce_len, &l->usig, &l->usig_len, &l->usig_alg, err);
        return rc;
    }
    if (!o->user) return 0;
    int rc = fb_read_secret_file(o->password_file, &l->pwd, err);
    if (rc) return rc;
    if (!strcmp(ep->token_policy_uri, UA_POLICY_NONE)) {
        l->enc_pwd = (uint8_t *)l->pwd;
        l->enc_len = (int32_t)strlen(l->pwd);
        return 0;
    }
    return ua_secure_encrypt_password(ep->token_policy_uri, ep->server_cert, ep->server_cert_len, l->pwd, ep->snonce,
                                      ep->snonce_len, &l->enc_pwd, &l->enc_len, &l->alg, err);
}

/* ActivateSession with the login; a refusal of the credentials is noted in memo. */
static int activate_session(struct ua_conn *c, struct ua_ep *ep, struct ua_memo *memo, struct fb_err *err)
{
    const struct ua_opts *o = c->o;
    struct ua_login l = {0};
    int rc = login_prepare(c, ep, &l, err);
    uint8_t *csig = NULL;
    size_t csig_len = 0;
    if (!rc && c->secure &&
        ua_sec_sign(&c->sec, c->sec.peer_cert, (size_t)c->sec.peer_leaf_len, ep->snonce, (size_t)ep->snonce_len, &csig,
                    &csig_len) < 0)
        rc = fb_err_set(err, FB_EIO, "cannot sign ActivateSession");
    struct ua_enc e;
    if (!rc) {
        ua_enc_init(&e, c->body, UA_BODY_CAP);
        struct ua_reqhdr h = ua_reqhdr(c, 0);
        struct ua_identity id = {.policy_id = ep->policy_id,
                                 .user = o->user,
                                 .pwd = l.enc_pwd,
                                 .pwd_len = l.enc_len,
                                 .alg = l.alg,
                                 .cert = l.ucert.cert,
                                 .cert_len = l.ucert.cert_len,
                                 .usig_alg = l.usig_alg,
                                 .usig = l.usig,
                                 .usig_len = (int32_t)l.usig_len};
        ua_activatesession_req_id(&e, &h, csig ? UA_ALG_RSA_SHA256 : NULL, csig, (int32_t)csig_len, &id);
        rc = e.err ? fb_err_set(err, FB_EINVAL, "ActivateSession too large") : ua_call(c, e.len, err);
    }
    free(csig);
    login_clear(&l);
    if (rc) return rc;
    struct ua_resphdr rh;
    struct ua_str sn;
    rc = ua_activatesession_resp(c->ra.buf, c->ra.len, &rh, &sn);
    if (rc == FB_EEXCEPTION) {
        char qb[16];
        uint32_t sc = rh.result & 0xFFFF0000u;
        const char *hint = "";
        if (o->user_cert)
            hint = " (the server must trust the user certificate: copy user_cert into its user "
                   "certificate trust list)";
        else if (sc == 0x801F0000u || sc == 0x80210000u || sc == 0x80200000u)
            hint = " (check user= and the password file)";
        if (memo && auth_refused(rh.result)) memo->refused = sc;
        return fb_err_set(err, FB_EACCES, "%s refused the %s login: %s%s", c->where, login_name(o),
                          ua_status_text(rh.result, qb), hint);
    }
    return rc ? ua_svc_error(c, "ActivateSession", rc, &rh, err) : 0;
}

/* TCP + Hello + OpenSecureChannel + GetEndpoints (+ the secured channel) +
 * CreateSession + ActivateSession: each step says what went wrong. */
int ua_connect(struct ua_conn **out, const struct ua_opts *o, const char *dev_name, uint32_t session_ms,
               struct ua_memo *memo, struct fb_err *err)
{
    if (memo) memo->refused = 0;
    struct ua_conn *c = NULL;
    struct ua_ep ep = {0};
    int rc = conn_new(&c, o, dev_name, err);
    if (!rc) rc = transport_open(c, err);
    if (!rc) rc = get_endpoints(c, &ep, err);
    if (!rc && o->mode > 1) rc = secure_channel(c, &ep, memo, err);
    if (!rc && !ep.policy_id[0])
        rc = fb_err_set(err, FB_EACCES, "%s does not accept %s logins on its %s/%s endpoint", c->where, login_name(o),
                        strrchr(o->mode > 1 ? o->policy_uri : UA_POLICY_NONE, '#') + 1, mode_name(o->mode));
    if (!rc) rc = create_session(c, session_ms, &ep, err);
    if (!rc) rc = activate_session(c, &ep, memo, err);
    free(ep.server_cert);
    if (rc) {
        if (c) {
            ua_disconnect(c);
            ua_conn_free(c);
        }
        return rc < 0 ? rc : FB_EIO;
    }
    *out = c;
    return 0;
}

/* Reads attr of ids[0..n) in batches within max_read; cb gets each DataValue. */
int ua_read_attr(struct ua_conn *c, const struct ua_nodeid *const *nodes, uint32_t n, uint32_t attr,
                 uint32_t timestamps, void (*cb)(void *ctx, uint32_t i, const struct ua_datavalue *dv), void *ctx,
                 struct fb_err *err)
{
    uint32_t batch = c->max_read ? c->max_read : 1;
    if (c->rids_cap < batch) { /* at the first read after connect, not per cycle */
        struct ua_readid *r = realloc(c->rids, batch * sizeof *r);
        if (!r) return fb_err_set(err, FB_ENOMEM, "out of memory");
        c->rids = r;
        c->rids_cap = batch;
    }
    struct ua_readid *ids = c->rids;
    for (uint32_t off = 0; off < n;) {
        uint32_t k = n - off < batch ? n - off : batch;
        for (uint32_t i = 0; i < k; i++) ids[i] = (struct ua_readid){nodes[off + i], attr};
        struct ua_enc e;
        ua_enc_init(&e, c->body, UA_BODY_CAP);
        struct ua_reqhdr h = ua_reqhdr(c, 0);
        ua_read_req(&e, &h, timestamps, ids, k);
        if (e.err) return fb_err_set(err, FB_EINVAL, "Read request too large");
        c->nreads++;
        int rc = ua_call(c, e.len, err);
        if (rc) return rc;
        struct ua_dec d;
        ua_dec_init(&d, c->ra.buf, c->ra.len);
        struct ua_resphdr rh;
        int32_t cnt;
        rc = ua_read_resp(&d, &rh, &cnt);
        if (rc == FB_EEXCEPTION && (rh.result & 0xFFFF0000u) == UA_BAD_TOO_MANY_OPS && batch > 1) {
            batch /= 2; /* the server's limit is lower than it told: retry smaller */
            c->max_read = batch;
            continue;
        }
        if (rc) {
            ua_svc_error(c, "Read", rc, &rh, err);
            return rc == FB_EEXCEPTION && !ua_session_lost(rh.result) ? FB_EEXCEPTION
                   : rc == FB_EEXCEPTION                              ? FB_EIO
                                                                      : rc;
        }
        if (cnt != (int32_t)k)
            return fb_err_set(err, FB_EPROTO, "%s answered %d values for %u nodes", c->where, cnt, k);
        for (uint32_t i = 0; i < k; i++) {
            struct ua_datavalue dv;
            ua_get_datavalue(&d, &dv);
            if (d.err) return fb_err_set(err, FB_EPROTO, "%s: malformed value in a Read response", c->where);
            cb(ctx, off + i, &dv);
        }
        off += k;
    }
    return 0;
}

struct limits_ctx {
    uint32_t v[2];
};
static void limits_cb(void *ctx, uint32_t i, const struct ua_datavalue *dv)
{
    struct limits_ctx *l = ctx;
    if (!(dv->mask & UA_DV_VALUE) || (dv->status & 0x80000000u) || dv->value.is_array) return;
    if (dv->value.type == UA_UINT32 || dv->value.type == UA_UINT16) l->v[i] = (uint32_t)dv->value.v.u;
}

void ua_read_limits(struct ua_conn *c)
{
    struct ua_nodeid mr = {.num = 11705}, mmi = {.num = 11714};
    const struct ua_nodeid *nodes[2] = {&mr, &mmi};
    struct limits_ctx l = {{0, 0}};
    struct fb_err e = {0};
    c->max_read = 2;
    if (ua_read_attr(c, nodes, 2, UA_ATTR_VALUE, 3, limits_cb, &l, &e) < 0)
        fb_debug(c->dev_name, NULL, "no OperationLimits: %s", e.msg);
    uint32_t cap = c->o->max_batch;
    c->max_read = l.v[0] && l.v[0] < cap ? l.v[0] : cap;
    c->max_mi = l.v[1] && l.v[1] < cap ? l.v[1] : cap;
    fb_debug(c->dev_name, NULL, "nodes per Read %u, monitored items per call %u", c->max_read, c->max_mi);
}
