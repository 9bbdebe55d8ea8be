/* opcua.c — the OPC UA client driver (scheme "opc.tcp"): glue between the
 * core and the I/O-free codecs in ua_types.c / ua_msg.c.  It owns one TCP
 * socket per connection and one secure channel and session on it.
 *
 * open(): TCP connect → Hello/Acknowledge (limits negotiated, see below) →
 * OpenSecureChannel (policy None) → GetEndpoints (token policies, server
 * certificate).  With Basic256Sha256 the server certificate is checked
 * against the trust list, the discovery channel is closed and a new
 * connection opens a signed (and encrypted) channel (ua_secure.c).  Then
 * CreateSession / ActivateSession (anonymous, or a user name
 * with the password encrypted per the token policy, ua_secure.c) → Read of
 * the server's OperationLimits → TranslateBrowsePathsToNodeIds for tags
 * addressed by browse path → Read of every tag's DataType (cached for writes)
 * → for groups in subscription mode CreateSubscription + CreateMonitoredItems
 * in batches.  All of it is redone after every reconnect, so a restarted
 * server gets a fresh session, fresh subscriptions and re-resolved paths.
 * close() sends CloseSession and CloseSecureChannel when the socket still
 * works, so reconnects do not leave sessions behind on the server.
 *
 * A refused login (BadUserAccessDenied, BadIdentityTokenRejected …) is not a
 * network failure: open() hands the status to the core as the tags' quality
 * (fb_conn.fail_q) with auth_retry= (default 5 min) as the least delay before
 * the next attempt (fb_conn.fail_retry_ns), so a wrong password does not lock
 * the account.  What one attempt learnt that the next must not repeat (the
 * certificate name warning already logged, the refusal) is the device's
 * struct ua_memo.
 *
 * Transport limits: we announce receive/send buffers of `chunk=` bytes
 * (default 64 KiB) and a maximum message of `max_message=` (default 4 MiB).
 * Requests are split into chunks of the server's receive buffer and refused
 * when they exceed its message or chunk limit; received chunks larger than
 * our buffer or messages larger than our limit drop the connection with a
 * clear message.  The secure-channel token is renewed at 75 % of its revised
 * lifetime (checked before every request and every read cycle).
 *
 * One request is in flight at a time, except Publish: in subscription mode
 * up to UA_PUBLISH_MAX Publish requests stay outstanding; their responses
 * arrive between other responses and are applied to the group's latest
 * values whenever they arrive.  read() then hands over the values that
 * arrived since the previous call (only the changed tags, with the source
 * timestamps of the notifications) — see docs/opcua.md.
 */
#include "south/opcua/opcua.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/net.h"
#include "south/opcua/ua_msg.h"

#define UA_DEFAULT_PORT 4840
#define UA_BODY_CAP (1u << 20)  /* largest request body we encode */
#define UA_PUBLISH_MAX 3
#define UA_STR_CAP 256          /* string tags without a length */
#define UA_BATCH_DEFAULT 1000
#define UA_APP_URI "urn:fieldbridge:client"

/* ------------------------------------------------------------------ options */
struct ua_opts {
    char host[256];
    int port;
    char endpoint[1024]; /* opc.tcp://host:port/path, no query */
    int64_t timeout_ns;
    bool subscribe;
    char *user, *password_file;
    char *user_cert, *user_key; /* X.509 user identity */
    bool strict_names;       /* check_names=refuse: host / application URI mismatch refused */
    bool no_names;           /* check_names=off: host and application URI not compared */
    int64_t auth_retry_ns;   /* auth_retry=: wait after a refused login (default 5 min) */
    const char *policy_uri;  /* channel security policy when mode > 1 */
    uint32_t lifetime_ms;    /* requested secure-channel lifetime */
    uint32_t session_ms;     /* requested session timeout */
    uint32_t chunk, max_msg; /* our receive limits */
    uint32_t queue;          /* monitored item queue size */
    uint32_t max_batch;      /* our cap on nodes per request (server limits apply too) */
    int depth;               /* browse depth */
    char *node;              /* browse start node (text), NULL = Objects */
    int mode;                /* 1 None, 2 Sign, 3 SignAndEncrypt (Basic256Sha256) */
    char pki[512];           /* certificate store (own/, trusted/, rejected/) */
    bool auto_trust;         /* trust_server=auto: trust on first use */
};

/* What one connection attempt tells the next (connection thread only). */
struct ua_memo {
    char cert_warn[600]; /* the certificate name warning last logged ("" = none) */
    uint32_t refused;    /* the login was refused with this status (0 = it was not) */
};

struct ua_dev {
    struct ua_opts o;
    struct ua_memo memo;
};

/* ActivateSession results that mean "these credentials are refused": retrying
 * them soon only counts towards the server's lock-out of the account. */
static bool auth_refused(uint32_t sc)
{
    sc &= 0xFFFF0000u;
    return sc == 0x801F0000u    /* BadUserAccessDenied */
           || sc == 0x80200000u /* BadIdentityTokenInvalid */
           || sc == 0x80210000u /* BadIdentityTokenRejected */
           || sc == 0x80570000u; /* BadUserSignatureInvalid */
}

/* A tag's address: a node id, or a browse path resolved at open. */
struct ua_addr {
    struct ua_nodeid node;  /* configured, or resolved (owned) */
    bool is_path;
    struct ua_relpath path;
    uint32_t resolve_q;     /* Good, or why the path / node is unusable */
    uint8_t builtin;        /* DataType from the server (0 unknown) */
    bool auto_type;         /* no type given: the server's decides (CLI) */
};

/* Latest value per tag of a subscribed group. */
struct ua_slot {
    bool fresh;
    uint32_t q;
    int64_t ts;
    struct fb_value v;
    char *s;
    uint32_t cap;
};

struct ua_plan {
    uint32_t n;
    uint32_t *tags;        /* tag ids, group order */
    struct ua_slot *slots; /* subscription mode */
    uint32_t sub_id;       /* 0 = none */
    uint32_t next_seq;     /* the sequence number we expect next */
    double interval_ms;
    uint32_t keepalive;
    int64_t last_pub;      /* monotonic time of the last Publish response */
    uint32_t missing[8];   /* sequence numbers to Republish */
    uint32_t nmissing;
};

struct ua_conn {
    int fd;
    char where[300];
    const char *dev_name;
    struct fb_conn *fc;
    const struct ua_opts *o;
    struct ua_limits ours, peer; /* peer = ACK */
    uint32_t send_chunk;
    uint8_t *tx, *rx, *body, *obody, *plain;
    struct ua_reasm ra;
    bool secure;        /* Basic256Sha256 on this channel */
    struct ua_sec sec;
    uint32_t channel_id, token_id, seq, req_id, handle;
    int64_t renew_at;
    uint32_t lifetime_ms;
    bool channel_open, session_open;
    struct ua_nodeid auth;
    uint32_t max_read, max_mi, max_browse;
    struct ua_readid *rids;  /* one Read batch (max_read entries), allocated once */
    uint32_t rids_cap;
    uint64_t nreads;         /* Read requests sent (metrics: requests per poll cycle) */
    uint32_t pub_ids[UA_PUBLISH_MAX];
    uint32_t npub;
    struct ua_ack acks[64];
    uint32_t nacks;
    char sbuf[4096];
};

static int64_t ms_to_ns(double ms) { return (int64_t)(ms * 1e6); }

static int parse_u32(const char *k, const char *v, uint64_t lo, uint64_t hi, uint32_t *out, struct fb_err *err)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end || end == v || errno || x < lo || x > hi)
        return fb_err_set(err, FB_EINVAL, "%s=%s: expected a number from %llu to %llu", k, v,
                          (unsigned long long)lo, (unsigned long long)hi);
    *out = (uint32_t)x;
    return 0;
}

static int opts_parse(const struct fb_url *u, const char *url_text, int64_t def_timeout, struct ua_opts *o,
                      struct fb_err *err)
{
    memset(o, 0, sizeof *o);
    if (!u->host || !u->host[0]) return fb_err_set(err, FB_EINVAL, "opc.tcp URL needs a host: opc.tcp://host:4840");
    snprintf(o->host, sizeof o->host, "%s", u->host);
    o->port = u->port ? u->port : UA_DEFAULT_PORT;
    const char *q = strchr(url_text, '?');
    size_t n = q ? (size_t)(q - url_text) : strlen(url_text);
    if (n >= sizeof o->endpoint) return fb_err_set(err, FB_EINVAL, "endpoint URL longer than %zu bytes", sizeof o->endpoint);
    memcpy(o->endpoint, url_text, n);
    o->endpoint[n] = 0;
    o->timeout_ns = def_timeout > 0 ? def_timeout : 1000000000LL;
    o->lifetime_ms = 3600000;
    o->session_ms = 60000;
    o->chunk = 65536;
    o->max_msg = 4u << 20;
    o->queue = 10;
    o->max_batch = UA_BATCH_DEFAULT;
    o->depth = 4;
    o->auth_retry_ns = 300000000000LL;
    const char *pol = "None", *mode = "None";
    for (int i = 0; i < u->nq; i++) {
        const char *k = u->q[i].k, *v = u->q[i].v ? u->q[i].v : "";
        int rc = 0;
        if (!strcmp(k, "timeout")) {
            if (fb_parse_duration(v, &o->timeout_ns) < 0 || o->timeout_ns <= 0)
                rc = fb_err_set(err, FB_EINVAL, "timeout=%s: expected a duration such as 2s", v);
        } else if (!strcmp(k, "mode")) {
            if (!strcmp(v, "subscribe")) o->subscribe = true;
            else if (!strcmp(v, "poll")) o->subscribe = false;
            else rc = fb_err_set(err, FB_EINVAL, "mode=%s: expected poll or subscribe", v);
        } else if (!strcmp(k, "user")) {
            free(o->user);
            o->user = strdup(v);
        } else if (!strcmp(k, "password_file")) {
            free(o->password_file);
            o->password_file = strdup(v);
        } else if (!strcmp(k, "user_cert")) {
            free(o->user_cert);
            o->user_cert = strdup(v);
        } else if (!strcmp(k, "user_key")) {
            free(o->user_key);
            o->user_key = strdup(v);
        } else if (!strcmp(k, "check_names")) {
            if (!strcmp(v, "refuse")) o->strict_names = true;
            else if (!strcmp(v, "warn")) o->strict_names = false;
            else if (!strcmp(v, "off")) o->no_names = true;
            else rc = fb_err_set(err, FB_EINVAL, "check_names=%s: expected warn, refuse or off", v);
        } else if (!strcmp(k, "auth_retry")) {
            if (fb_parse_duration(v, &o->auth_retry_ns) < 0 || o->auth_retry_ns < 1000000000LL ||
                o->auth_retry_ns > 86400000000000LL)
                rc = fb_err_set(err, FB_EINVAL, "auth_retry=%s: expected a duration from 1s to 24h (e.g. 5m)", v);
        } else if (!strcmp(k, "lifetime")) {
            int64_t ns;
            if (fb_parse_duration(v, &ns) < 0 || ns < 1000000000LL || ns > 86400000000000LL)
                rc = fb_err_set(err, FB_EINVAL, "lifetime=%s: expected a duration from 1s to 24h", v);
            else o->lifetime_ms = (uint32_t)(ns / 1000000);
        } else if (!strcmp(k, "session_timeout")) {
            int64_t ns;
            if (fb_parse_duration(v, &ns) < 0 || ns < 1000000000LL || ns > 86400000000000LL)
                rc = fb_err_set(err, FB_EINVAL, "session_timeout=%s: expected a duration from 1s to 24h", v);
            else o->session_ms = (uint32_t)(ns / 1000000);
        } else if (!strcmp(k, "chunk")) {
            uint64_t b;
            if (fb_parse_size(v, &b) < 0 || b < UA_MIN_BUF || b > (16u << 20))
                rc = fb_err_set(err, FB_EINVAL, "chunk=%s: expected a size from 8192 to 16MiB", v);
            else o->chunk = (uint32_t)b;
        } else if (!strcmp(k, "max_message")) {
            uint64_t b;
            if (fb_parse_size(v, &b) < 0 || b < UA_MIN_BUF || b > (256u << 20))
                rc = fb_err_set(err, FB_EINVAL, "max_message=%s: expected a size from 8192 to 256MiB", v);
            else o->max_msg = (uint32_t)b;
        } else if (!strcmp(k, "queue")) {
            rc = parse_u32(k, v, 1, 100000, &o->queue, err);
        } else if (!strcmp(k, "max_batch")) {
            rc = parse_u32(k, v, 1, 100000, &o->max_batch, err);
        } else if (!strcmp(k, "depth")) {
            uint32_t d = 0;
            rc = parse_u32(k, v, 1, 64, &d, err);
            if (rc == 0) o->depth = (int)d;  /* a refused value leaves the default */
        } else if (!strcmp(k, "node")) {
            free(o->node);
            o->node = strdup(v);
        } else if (!strcmp(k, "security_policy")) {
            pol = v;
        } else if (!strcmp(k, "security_mode")) {
            mode = v;
        } else if (!strcmp(k, "pki")) {
            if (!v[0] || strlen(v) >= sizeof o->pki) rc = fb_err_set(err, FB_EINVAL, "pki=: expected a directory");
            else snprintf(o->pki, sizeof o->pki, "%s", v);
        } else if (!strcmp(k, "trust_server")) {
            if (!strcmp(v, "auto")) o->auto_trust = true;
            else if (!strcmp(v, "list")) o->auto_trust = false;
            else rc = fb_err_set(err, FB_EINVAL, "trust_server=%s: expected auto (trust on first use) or list", v);
        } else {
            rc = fb_err_set(err, FB_EINVAL,
                            "unknown opc.tcp URL key '%s' (timeout, mode, user, password_file, user_cert, user_key, "
                            "lifetime, session_timeout, chunk, max_message, queue, max_batch, depth, node, "
                            "security_policy, security_mode, pki, trust_server, check_names, auth_retry)", k);
        }
        if (rc) return rc;
    }
    if (strcmp(pol, "None") && strcmp(pol, "Basic256Sha256") && strcmp(pol, "Aes128_Sha256_RsaOaep"))
        return fb_err_set(err, FB_EINVAL, "security_policy=%s: expected None, Basic256Sha256 or Aes128_Sha256_RsaOaep",
                          pol);
    o->policy_uri = !strcmp(pol, "Aes128_Sha256_RsaOaep") ? UA_POLICY_AES128 : UA_POLICY_B256S256;
    o->mode = !strcmp(mode, "None") ? 1 : !strcmp(mode, "Sign") ? 2 : !strcmp(mode, "SignAndEncrypt") ? 3 : 0;
    if (!o->mode) return fb_err_set(err, FB_EINVAL, "security_mode=%s: expected None, Sign or SignAndEncrypt", mode);
    if (!strcmp(pol, "None") && o->mode != 1)
        return fb_err_set(err, FB_EINVAL, "security_mode=%s needs security_policy=Basic256Sha256 (or "
                                          "Aes128_Sha256_RsaOaep)", mode);
    if (strcmp(pol, "None") && o->mode == 1) o->mode = 3; /* a policy without a mode: encrypt */
    if (!o->pki[0]) snprintf(o->pki, sizeof o->pki, "/var/lib/fieldbridge/pki");
    if (o->password_file && !o->user) return fb_err_set(err, FB_EINVAL, "password_file= needs user=");
    if (!o->user_cert != !o->user_key)
        return fb_err_set(err, FB_EINVAL, "user_cert= and user_key= go together (the user's certificate and its "
                                          "private key, readable only by its owner)");
    if (o->user_cert && o->user)
        return fb_err_set(err, FB_EINVAL, "user= and user_cert= exclude each other: one user identity per session");
    if (o->user && !o->password_file)
        return fb_err_set(err, FB_EINVAL, "user=%s needs password_file= (a file readable only by its owner)", o->user);
    return 0;
}

static void opts_free(struct ua_opts *o)
{
    free(o->user);
    free(o->password_file);
    free(o->user_cert);
    free(o->user_key);
    o->user_cert = o->user_key = NULL;
    free(o->node);
    o->user = o->password_file = o->node = NULL;
}

/* ------------------------------------------------------------------ socket */
/* ------------------------------------------------------------ messages */
/* One frame into c->rx; returns its size. */
static int recv_frame(struct ua_conn *c, int64_t deadline, struct fb_err *err)
{
    int rc = fb_net_recv_all(c->fd, c->rx, UA_HDR_LEN, deadline);
    if (rc) {
        if (rc == FB_EIO) fb_err_set(err, rc, "%s closed the connection", c->where);
        else fb_err_set(err, rc, "%s: no answer within %.3gs", c->where, c->o->timeout_ns / 1e9);
        return rc;
    }
    char type[4], chunk;
    int size = ua_hdr_peek(c->rx, UA_HDR_LEN, 0, type, &chunk);
    if (size < 0) return fb_err_set(err, FB_EPROTO, "%s: not an OPC UA TCP message (is this an OPC UA server?)", c->where);
    if ((uint32_t)size > c->ours.recv_buf)
        return fb_err_set(err, FB_EPROTO, "%s sent a %d-byte chunk, more than our receive buffer of %u bytes "
                                          "(BadTcpMessageTooLarge)", c->where, size, c->ours.recv_buf);
    rc = fb_net_recv_all(c->fd, c->rx + UA_HDR_LEN, (size_t)size - UA_HDR_LEN, deadline);
    if (rc) return fb_err_set(err, rc, "%s: connection lost in the middle of a message", c->where);
    return size;
}

static int server_error(struct ua_conn *c, int size, struct fb_err *err)
{
    uint32_t st = 0;
    char reason[200] = "", qb[16];
    if (ua_err_parse(c->rx, (size_t)size, &st, reason, sizeof reason) < 0)
        return fb_err_set(err, FB_EPROTO, "%s sent a malformed Error message", c->where);
    fb_error(c->dev_name, NULL, "OPC UA server %s reported an error: %s%s%s", c->where, ua_status_text(st, qb),
             reason[0] ? ": " : "", reason);
    return fb_err_set(err, FB_EIO, "server error %s%s%s", ua_status_text(st, qb), reason[0] ? ": " : "", reason);
}

/* A complete message (reassembled from its chunks) into c->ra.buf.
 * FB_EEXCEPTION: the server aborted request *req_id. */
static int recv_msg(struct ua_conn *c, int64_t deadline, uint32_t *req_id, struct fb_err *err)
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
                src = ua_sec_opn_open(&c->sec, c->rx, (size_t)size, c->plain, c->ours.recv_buf, &f.channel_id,
                                      &f.seq, &f.req_id, &f.body, &f.body_len);
            else {
                src = ua_sec_sym_open(&c->sec, c->rx, (size_t)size, &f.token_id, &f.seq, &f.req_id, &f.body,
                                      &f.body_len);
                f.channel_id = size >= 12 ? (uint32_t)c->rx[8] | (uint32_t)c->rx[9] << 8 |
                                                (uint32_t)c->rx[10] << 16 | (uint32_t)c->rx[11] << 24 : 0;
            }
            if (src == FB_EACCES)
                return fb_err_set(err, FB_EPROTO, "%s: a %.3s chunk failed its signature or decryption check "
                                                  "(BadSecurityChecksFailed)", c->where, (const char *)c->rx);
            if (src < 0)
                return fb_err_set(err, FB_EPROTO, "%s sent a malformed secured %.3s chunk", c->where, (const char *)c->rx);
        } else if (ua_frame_parse(c->rx, (size_t)size, &f) < 0)
            return fb_err_set(err, FB_EPROTO, "%s sent a malformed %.3s chunk", c->where, (const char *)c->rx);
        if (c->channel_open && f.channel_id != c->channel_id)
            return fb_err_set(err, FB_EPROTO, "%s answered on secure channel %u, ours is %u", c->where,
                              f.channel_id, c->channel_id);
        int rc = ua_reasm_add(&c->ra, &f);
        if (rc == 1) {
            *req_id = f.req_id;
            return 0;
        }
        if (rc == 0) continue;
        if (rc == FB_ERANGE)
            return fb_err_set(err, FB_EPROTO, "%s sent a message larger than our limit of %u bytes "
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
static int send_msg(struct ua_conn *c, const char *type, const uint8_t *body, size_t n, uint32_t *rid,
                    struct fb_err *err)
{
    size_t room = c->secure ? (type[0] == 'O' ? (size_t)-1 / 2 : ua_sec_sym_room(&c->sec, c->send_chunk))
                : type[0] == 'O' ? ua_chunk_room("OPN", c->send_chunk) : ua_chunk_room("MSG", c->send_chunk);
    size_t nchunks = n ? (n + room - 1) / room : 1;
    if (c->peer.max_msg && n > c->peer.max_msg)
        return fb_err_set(err, FB_ERANGE, "request of %zu bytes exceeds the server's message limit of %u bytes",
                          n, c->peer.max_msg);
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
        size_t fl = !c->secure ? ua_chunk_build(c->tx, c->send_chunk, type, last ? 'F' : 'C', c->channel_id,
                                                c->token_id, c->seq, c->req_id, body + off, k)
                  : type[0] == 'O' ? ua_sec_opn_build(&c->sec, c->tx, c->send_chunk, c->channel_id, c->seq, c->req_id,
                                                      body + off, k)
                  : ua_sec_sym_build(&c->sec, c->tx, c->send_chunk, type, last ? 'F' : 'C', c->channel_id,
                                     c->token_id, c->seq, c->req_id, body + off, k);
        if (!fl) return fb_err_set(err, FB_EINVAL, "internal: chunk does not fit");
        int rc = fb_net_send_all(c->fd, c->tx, fl, deadline);
        if (rc) return fb_err_set(err, rc, "%s: connection lost while sending", c->where);
        off += k;
    } while (off < n);
    return 0;
}

static struct ua_reqhdr reqhdr(struct ua_conn *c, uint32_t timeout_ms)
{
    struct ua_reqhdr h = {.auth = c->session_open || !ua_nodeid_is_null(&c->auth) ? &c->auth : NULL,
                          .handle = ++c->handle,
                          .timeout_ms = timeout_ms ? timeout_ms : (uint32_t)(c->o->timeout_ns / 1000000),
                          .ts = ua_dt_from_ns(fb_now_ns())};
    return h;
}

static void handle_publish(struct ua_conn *c, const uint8_t *p, size_t n);

static bool is_publish(struct ua_conn *c, uint32_t rid, bool remove)
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
        int rc = recv_msg(c, deadline, &got, err);
        if (rc == FB_EEXCEPTION && got != rid) {
            if (is_publish(c, got, true)) continue;
            fb_debug(c->dev_name, NULL, "ignored an aborted response to request %u", got);
            continue;
        }
        if (rc) return rc;
        if (got == rid) return 0;
        if (is_publish(c, got, true)) {
            handle_publish(c, c->ra.buf, c->ra.len);
            continue;
        }
        fb_debug(c->dev_name, NULL, "ignored a late response to request %u", got);
    }
}

static int renew(struct ua_conn *c, uint32_t request_type, struct fb_err *err);

/* Sends the request in c->body[0..n) and waits for its response (c->ra.buf). */
static int call(struct ua_conn *c, size_t n, struct fb_err *err)
{
    if (c->channel_open && fb_mono_ns() >= c->renew_at) {
        int rc = renew(c, 1, err);
        if (rc) return rc;
    }
    uint32_t rid;
    int rc = send_msg(c, "MSG", c->body, n, &rid, err);
    if (rc) return rc;
    return wait_resp(c, rid, err);
}

static int svc_error(struct ua_conn *c, const char *what, int rc, const struct ua_resphdr *h, struct fb_err *err)
{
    char qb[16];
    if (rc == FB_EEXCEPTION)
        return fb_err_set(err, FB_EEXCEPTION, "%s: %s refused: %s", c->where, what, ua_status_text(h->result, qb));
    return fb_err_set(err, FB_EPROTO, "%s: malformed %s response", c->where, what);
}

/* session-level failures mean: reconnect */
static bool session_lost(uint32_t sc)
{
    sc &= 0xFFFF0000u;
    return sc == UA_BAD_SESSION_ID_INVALID || sc == UA_BAD_SESSION_CLOSED || sc == UA_BAD_SESSION_NOT_ACTIVATED ||
           sc == UA_BAD_SECURE_CHANNEL_CLOSED || sc == UA_BAD_SECURE_CHANNEL_TOKEN_UNKNOWN ||
           sc == 0x800D0000u /* BadServerNotConnected */ || sc == 0x800C0000u /* BadShutdown */;
}

/* ------------------------------------------------------------ channel */
static int renew(struct ua_conn *c, uint32_t request_type, struct fb_err *err)
{
    struct ua_enc e;
    ua_enc_init(&e, c->obody, 512);
    struct ua_reqhdr h = reqhdr(c, 0);
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
    int rc = send_msg(c, "OPN", c->obody, e.len, &rid, err);
    if (rc) return rc;
    rc = wait_resp(c, rid, err);
    if (rc) return rc;
    struct ua_resphdr rh;
    struct ua_token t;
    rc = ua_opn_resp(c->ra.buf, c->ra.len, &rh, &t);
    if (rc) return svc_error(c, request_type ? "renewing the secure channel" : "OpenSecureChannel", rc, &rh, err);
    if (request_type == 0) c->channel_id = t.channel_id;
    else if (t.channel_id != c->channel_id)
        return fb_err_set(err, FB_EPROTO, "%s renewed another secure channel (%u, ours %u)", c->where,
                          t.channel_id, c->channel_id);
    if (c->secure && ua_sec_derive(&c->sec, (const uint8_t *)t.server_nonce.p, t.server_nonce.len, t.token_id) < 0)
        return fb_err_set(err, FB_EPROTO, "%s sent a server nonce of %d bytes (32 expected)", c->where,
                          t.server_nonce.len);
    c->token_id = t.token_id;
    c->lifetime_ms = t.lifetime_ms ? t.lifetime_ms : c->o->lifetime_ms;
    c->renew_at = fb_mono_ns() + ms_to_ns(c->lifetime_ms * 0.75);
    c->channel_open = true;
    fb_debug(c->dev_name, NULL, "secure channel %u token %u, lifetime %u ms%s", c->channel_id, c->token_id,
             c->lifetime_ms, request_type ? " (renewed)" : "");
    return 0;
}

static void conn_free(struct ua_conn *c)
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
static void disconnect(struct ua_conn *c)
{
    if (c->fd < 0) return;
    struct fb_err e = {0};
    if (c->session_open) {
        struct ua_enc en;
        ua_enc_init(&en, c->body, UA_BODY_CAP);
        struct ua_reqhdr h = reqhdr(c, 0);
        ua_closesession_req(&en, &h, true);
        if (!en.err && call(c, en.len, &e) == 0) {
            struct ua_resphdr rh;
            ua_simple_resp(c->ra.buf, c->ra.len, UA_ID_CLOSESESSION_RESP, &rh);
        }
        c->session_open = false;
    }
    if (c->channel_open) {
        struct ua_enc en;
        ua_enc_init(&en, c->obody, 512);
        struct ua_reqhdr h = reqhdr(c, 0);
        h.auth = NULL;
        ua_clo_req(&en, &h);
        uint32_t rid;
        if (!en.err) send_msg(c, "CLO", c->obody, en.len, &rid, &e);
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
    return renew(c, 0, err);
}

/* TCP + Hello + OpenSecureChannel + GetEndpoints + session. */
static int ua_connect(struct ua_conn **out, const struct ua_opts *o, const char *dev_name, uint32_t session_ms,
                      struct ua_memo *memo, struct fb_err *err)
{
    if (memo) memo->refused = 0;
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
    int rc;
    if (!c->rx || !c->body || !c->obody || !c->ra.buf) {
        rc = fb_err_set(err, FB_ENOMEM, "out of memory");
        goto fail;
    }
    if (o->mode > 1) {
        c->plain = malloc(o->chunk);
        if (!c->plain) {
            rc = fb_err_set(err, FB_ENOMEM, "out of memory");
            goto fail;
        }
        c->sec.mode = o->mode;
        c->sec.policy_uri = o->policy_uri;
        rc = ua_sec_load_own(&c->sec, o->pki, UA_APP_URI, err);
        if (rc) goto fail;
    }
    rc = transport_open(c, err);
    if (rc) goto fail;
    /* GetEndpoints: token policies (and the server certificate for passwords) */
    struct ua_enc e;
    ua_enc_init(&e, c->body, UA_BODY_CAP);
    struct ua_reqhdr h = reqhdr(c, 0);
    ua_getendpoints_req(&e, &h, o->endpoint);
    rc = call(c, e.len, err);
    if (rc) goto fail;
    struct ua_resphdr rh;
    struct ua_endpoint *eps = calloc(UA_MAX_ENDPOINTS, sizeof *eps);
    if (!eps) {
        rc = fb_err_set(err, FB_ENOMEM, "out of memory");
        goto fail;
    }
    uint32_t neps = 0;
    rc = ua_getendpoints_resp(c->ra.buf, c->ra.len, &rh, eps, UA_MAX_ENDPOINTS, &neps);
    if (rc) {
        free(eps);
        rc = svc_error(c, "GetEndpoints", rc, &rh, err);
        goto fail;
    }
    /* the None endpoint's token policies; copy what we need before the buffer is reused */
    char policy_id[128] = "", token_policy_uri[128] = "", app_uri[256] = "";
    uint8_t *server_cert = NULL;
    int32_t server_cert_len = 0;
    bool none_ep = false;
    uint32_t want = o->user_cert ? 2 : o->user ? 1 : 0;
    const char *want_pol = o->mode > 1 ? o->policy_uri : UA_POLICY_NONE;
    const char *want_name = strrchr(want_pol, '#') + 1;
    const char *login = o->user_cert ? "X.509 certificate" : o->user ? "user name" : "anonymous";
    char offered[400] = "";
    for (uint32_t i = 0; i < neps; i++) {
        const char *pn = eps[i].policy_uri.len > 0 ? memrchr(eps[i].policy_uri.p, '#', (size_t)eps[i].policy_uri.len) : NULL;
        size_t ol = strlen(offered);
        if (pn && ol + 64 < sizeof offered)
            snprintf(offered + ol, sizeof offered - ol, "%s%.*s/%s", ol ? ", " : "",
                     (int)(eps[i].policy_uri.p + eps[i].policy_uri.len - pn - 1), pn + 1,
                     eps[i].mode == 1 ? "None" : eps[i].mode == 2 ? "Sign" : "SignAndEncrypt");
        if (eps[i].mode != (uint32_t)o->mode || eps[i].policy_uri.len != (int32_t)strlen(want_pol) ||
            memcmp(eps[i].policy_uri.p, want_pol, strlen(want_pol)))
            continue;
        none_ep = true;
        if (!app_uri[0] && eps[i].app_uri.len > 0)
            snprintf(app_uri, sizeof app_uri, "%.*s", (int)eps[i].app_uri.len, eps[i].app_uri.p);
        for (uint32_t k = 0; k < eps[i].ntokens; k++) {
            if (eps[i].tokens[k].type != want || policy_id[0]) continue;
            snprintf(policy_id, sizeof policy_id, "%.*s", eps[i].tokens[k].policy_id.len > 0 ? (int)eps[i].tokens[k].policy_id.len : 0,
                     eps[i].tokens[k].policy_id.p ? eps[i].tokens[k].policy_id.p : "");
            snprintf(token_policy_uri, sizeof token_policy_uri, "%.*s",
                     eps[i].tokens[k].policy_uri.len > 0 ? (int)eps[i].tokens[k].policy_uri.len : 0,
                     eps[i].tokens[k].policy_uri.p ? eps[i].tokens[k].policy_uri.p : "");
            if (eps[i].cert.len > 0 && !server_cert) {
                server_cert = malloc((size_t)eps[i].cert.len);
                if (server_cert) {
                    memcpy(server_cert, eps[i].cert.p, (size_t)eps[i].cert.len);
                    server_cert_len = eps[i].cert.len;
                }
            }
        }
    }
    free(eps);
    if (!none_ep) {
        free(server_cert);
        rc = fb_err_set(err, FB_EACCES, "%s offers no endpoint with security %s/%s (it offers: %s)", c->where,
                        want_name,
                        o->mode == 1 ? "None" : o->mode == 2 ? "Sign" : "SignAndEncrypt", offered);
        goto fail;
    }
    if (o->mode > 1) {
        /* validity period and names, then trust, then reopen the channel secured */
        char warn[600];
        struct fb_err cerr = {0};
        rc = ua_sec_check_cert(server_cert, server_cert_len, fb_now_ns() / 1000000000LL,
                               o->no_names ? NULL : o->host, o->no_names ? NULL : app_uri, o->strict_names, warn,
                               sizeof warn, &cerr);
        if (rc) {
            free(server_cert);
            rc = fb_err_set(err, rc, "%s: %s", c->where, cerr.msg);
            goto fail;
        }
        /* said once, and again only when it changes: not at every reconnect */
        if (!memo || strcmp(memo->cert_warn, warn)) {
            if (warn[0])
                fb_warn(dev_name, NULL, "OPC UA server %s: %s (accepted; check_names=refuse refuses such servers, "
                                        "check_names=off stops comparing names)", c->where, warn);
            else if (memo && memo->cert_warn[0])
                fb_info(dev_name, NULL, "OPC UA server %s: its certificate names the host and application URI now",
                        c->where);
            if (memo) snprintf(memo->cert_warn, sizeof memo->cert_warn, "%s", warn);
        }
        rc = ua_sec_set_peer(&c->sec, o->pki, o->auto_trust, server_cert, server_cert_len, c->where, err);
        if (rc) {
            free(server_cert);
            goto fail;
        }
        disconnect(c);
        close(c->fd);
        c->fd = -1;
        c->channel_id = 0;
        c->token_id = 0;
        c->secure = true;
        rc = transport_open(c, err);
        if (rc) {
            free(server_cert);
            goto fail;
        }
    }
    if (!policy_id[0]) {
        free(server_cert);
        rc = fb_err_set(err, FB_EACCES, "%s does not accept %s logins on its %s/%s endpoint", c->where, login,
                        want_name, o->mode == 1 ? "None" : o->mode == 2 ? "Sign" : "SignAndEncrypt");
        goto fail;
    }
    /* CreateSession */
    uint8_t nonce[32];
    if (ua_secure_random(nonce, sizeof nonce) < 0) {
        free(server_cert);
        rc = fb_err_set(err, FB_EIO, "no random bytes for the session nonce");
        goto fail;
    }
    struct ua_session_req sr = {.app_uri = UA_APP_URI, .product_uri = "urn:fieldbridge",
                                .app_name = "fieldbridge", .endpoint_url = o->endpoint,
                                .session_name = dev_name && dev_name[0] ? dev_name : "fieldbridge",
                                .nonce = nonce, .nonce_len = 32, .timeout_ms = session_ms,
                                .cert = c->secure ? c->sec.own_cert : NULL, .cert_len = c->sec.own_cert_len};
    ua_enc_init(&e, c->body, UA_BODY_CAP);
    h = reqhdr(c, 0);
    ua_createsession_req(&e, &h, &sr);
    rc = call(c, e.len, err);
    struct ua_session *ss = NULL;
    if (!rc) {
        ss = calloc(1, sizeof *ss);
        if (!ss) rc = fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    if (!rc) {
        rc = ua_createsession_resp(c->ra.buf, c->ra.len, &rh, ss);
        if (rc) rc = svc_error(c, "CreateSession", rc, &rh, err);
    }
    uint8_t snonce[64];
    int32_t snonce_len = 0;
    if (!rc) {
        rc = ua_nodeid_copy(&ss->auth_token, &c->auth);
        snonce_len = ss->server_nonce.len > 0 ? (ss->server_nonce.len > 64 ? 64 : ss->server_nonce.len) : 0;
        if (snonce_len) memcpy(snonce, ss->server_nonce.p, (size_t)snonce_len);
        if (!rc && c->secure &&
            (ss->sig.len <= 0 || ua_sec_verify(&c->sec, c->sec.own_cert, (size_t)c->sec.own_cert_len, nonce,
                                               sizeof nonce, (const uint8_t *)ss->sig.p, (size_t)ss->sig.len)))
            rc = fb_err_set(err, FB_EACCES, "%s: the server's session signature does not verify "
                                            "(BadApplicationSignatureInvalid)", c->where);
        if (ss->server_cert.len > 0 && !server_cert) {
            server_cert = malloc((size_t)ss->server_cert.len);
            if (server_cert) {
                memcpy(server_cert, ss->server_cert.p, (size_t)ss->server_cert.len);
                server_cert_len = ss->server_cert.len;
            }
        }
    }
    free(ss);
    if (rc) {
        free(server_cert);
        goto fail;
    }
    c->session_open = true;
    /* ActivateSession */
    char *pwd = NULL;
    uint8_t *enc_pwd = NULL;
    int32_t enc_len = 0;
    const char *alg = NULL;
    struct ua_user_cert ucert = {0};
    uint8_t *usig = NULL;
    size_t usig_len = 0;
    const char *usig_alg = NULL;
    if (!token_policy_uri[0]) /* empty: the channel's policy applies */
        snprintf(token_policy_uri, sizeof token_policy_uri, "%s", c->secure ? o->policy_uri : UA_POLICY_NONE);
    if (o->user_cert) {
        /* X509IdentityToken: the certificate, and a signature over serverCertificate ‖ serverNonce */
        rc = ua_user_load(&ucert, o->user_cert, o->user_key, err);
        if (!rc && (!server_cert || !snonce_len))
            rc = fb_err_set(err, FB_EPROTO, "%s sent no server certificate or nonce to sign the user token with",
                            c->where);
        if (!rc)
            rc = ua_user_sign(&ucert, token_policy_uri, server_cert, (size_t)server_cert_len, snonce,
                              (size_t)snonce_len, &usig, &usig_len, &usig_alg, err);
    } else if (o->user) {
        rc = fb_read_secret_file(o->password_file, &pwd, err);
        if (!rc) {
            bool none_pol = !strcmp(token_policy_uri, UA_POLICY_NONE);
            if (none_pol) {
                enc_pwd = (uint8_t *)pwd;
                enc_len = (int32_t)strlen(pwd);
            } else {
                rc = ua_secure_encrypt_password(token_policy_uri, server_cert, server_cert_len, pwd, snonce,
                                                snonce_len, &enc_pwd, &enc_len, &alg, err);
            }
        }
    }
    free(server_cert);
    if (!rc) {
        ua_enc_init(&e, c->body, UA_BODY_CAP);
        h = reqhdr(c, 0);
        uint8_t *csig = NULL;
        size_t csig_len = 0;
        if (c->secure && ua_sec_sign(&c->sec, c->sec.peer_cert, (size_t)c->sec.peer_cert_len, snonce,
                                     (size_t)snonce_len, &csig, &csig_len) < 0)
            rc = fb_err_set(err, FB_EIO, "cannot sign ActivateSession");
        struct ua_identity id = {.policy_id = policy_id, .user = o->user, .pwd = enc_pwd, .pwd_len = enc_len,
                                 .alg = alg, .cert = ucert.cert, .cert_len = ucert.cert_len, .usig_alg = usig_alg,
                                 .usig = usig, .usig_len = (int32_t)usig_len};
        ua_activatesession_req_id(&e, &h, csig ? UA_ALG_RSA_SHA256 : NULL, csig, (int32_t)csig_len, &id);
        free(csig);
        if (!rc) rc = e.err ? fb_err_set(err, FB_EINVAL, "ActivateSession too large") : call(c, e.len, err);
        if (!rc) {
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
                rc = fb_err_set(err, FB_EACCES, "%s refused the %s login: %s%s", c->where, login,
                                ua_status_text(rh.result, qb), hint);
                if (memo && auth_refused(rh.result)) memo->refused = rh.result & 0xFFFF0000u;
            } else if (rc) {
                rc = svc_error(c, "ActivateSession", rc, &rh, err);
            }
        }
    }
    if (enc_pwd && enc_pwd != (uint8_t *)pwd) free(enc_pwd);
    free(usig);
    ua_user_clear(&ucert);
    if (pwd) {
        memset(pwd, 0, strlen(pwd));
        free(pwd);
    }
    if (rc) goto fail;
    *out = c;
    return 0;
fail:
    disconnect(c);
    conn_free(c);
    return rc < 0 ? rc : FB_EIO;
}

/* ------------------------------------------------------------ reads */
/* Reads attr of ids[0..n) in batches within max_read; cb gets each DataValue. */
static int read_attr(struct ua_conn *c, const struct ua_nodeid *const *nodes, uint32_t n, uint32_t attr,
                     uint32_t timestamps, void (*cb)(void *ctx, uint32_t i, const struct ua_datavalue *dv),
                     void *ctx, struct fb_err *err)
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
        struct ua_reqhdr h = reqhdr(c, 0);
        ua_read_req(&e, &h, timestamps, ids, k);
        if (e.err) return fb_err_set(err, FB_EINVAL, "Read request too large");
        c->nreads++;
        int rc = call(c, e.len, err);
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
            svc_error(c, "Read", rc, &rh, err);
            return rc == FB_EEXCEPTION && !session_lost(rh.result) ? FB_EEXCEPTION : rc == FB_EEXCEPTION ? FB_EIO : rc;
        }
        if (cnt != (int32_t)k) return fb_err_set(err, FB_EPROTO, "%s answered %d values for %u nodes", c->where, cnt, k);
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

static void read_limits(struct ua_conn *c)
{
    struct ua_nodeid mr = {.num = 11705}, mmi = {.num = 11714};
    const struct ua_nodeid *nodes[2] = {&mr, &mmi};
    struct limits_ctx l = {{0, 0}};
    struct fb_err e = {0};
    c->max_read = 2;
    if (read_attr(c, nodes, 2, UA_ATTR_VALUE, 3, limits_cb, &l, &e) < 0)
        fb_debug(c->dev_name, NULL, "no OperationLimits: %s", e.msg);
    uint32_t cap = c->o->max_batch;
    c->max_read = l.v[0] && l.v[0] < cap ? l.v[0] : cap;
    c->max_mi = l.v[1] && l.v[1] < cap ? l.v[1] : cap;
    fb_debug(c->dev_name, NULL, "nodes per Read %u, monitored items per call %u", c->max_read, c->max_mi);
}

/* ------------------------------------------------------------ device / tags */
static int opcua_device_init(struct fb_device *dev, char **conn_key, struct fb_err *err)
{
    struct ua_dev *ud = calloc(1, sizeof *ud);
    if (!ud) return fb_err_set(err, FB_ENOMEM, "out of memory");
    int rc = opts_parse(&dev->url, dev->url_text ? dev->url_text : "", dev->timeout_ns, &ud->o, err);
    if (rc) {
        opts_free(&ud->o);
        free(ud);
        return rc;
    }
    size_t n = strlen(dev->url_text ? dev->url_text : "") + 16;
    *conn_key = malloc(n);
    if (!*conn_key) {
        opts_free(&ud->o);
        free(ud);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    snprintf(*conn_key, n, "opcua:%s", dev->url_text ? dev->url_text : "");
    dev->timeout_ns = ud->o.timeout_ns;
    dev->drv_dev = ud;
    return 0;
}

static void opcua_device_free(struct fb_device *dev)
{
    struct ua_dev *ud = dev->drv_dev;
    if (ud) opts_free(&ud->o);
    free(ud);
    dev->drv_dev = NULL;
}

static void addr_free(struct ua_addr *a)
{
    if (!a) return;
    ua_nodeid_clear(&a->node);
    ua_path_clear(&a->path);
    free(a);
}

/* "ns=2;s=X", "i=2258", "/Objects/2:Demo/2:Temp", each optionally ":TYPE"
 * (a known fieldbridge type name after the last colon). */
static int opcua_parse_address(struct fb_device *dev, struct fb_tag *tag, struct fb_err *err)
{
    (void)dev;
    const char *text = tag->addr_text ? tag->addr_text : "";
    char *copy = strdup(text);
    if (!copy) return fb_err_set(err, FB_ENOMEM, "out of memory");
    char *colon = strrchr(copy, ':');
    if (colon) {
        enum fb_type t = fb_type_parse(colon + 1);
        uint32_t slen = 0;
        if (t == FB_T_NONE && !strncmp(colon + 1, "string[", 7)) {
            char *end;
            unsigned long v = strtoul(colon + 8, &end, 10);
            if (*end == ']' && !end[1] && v >= 1 && v <= 65535) {
                t = FB_T_STRING;
                slen = (uint32_t)v;
            }
        }
        if (t != FB_T_NONE) {
            *colon = 0;
            tag->type = (uint8_t)t;
            if (slen) tag->str_len = slen;
        }
    }
    struct ua_addr *a = calloc(1, sizeof *a);
    if (!a) {
        free(copy);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    int rc;
    if (copy[0] == '/') {
        a->is_path = true;
        rc = ua_path_parse(copy, &a->path, err);
    } else {
        rc = ua_nodeid_parse(copy, &a->node, err);
    }
    free(copy);
    if (rc) {
        addr_free(a);
        return rc;
    }
    if (tag->type == FB_T_NONE) {
        /* The server's DataType decides; until it is known (and in the
         * gateway, whose buffers are sized before connecting) a number. */
        tag->type = FB_T_FLOAT64;
        a->auto_type = true;
    }
    if (tag->type == FB_T_STRING && !tag->str_len) tag->str_len = UA_STR_CAP;
    addr_free(tag->addr);
    tag->addr = a;
    return 0;
}

static void opcua_free_address(struct fb_tag *tag)
{
    addr_free(tag->addr);
    tag->addr = NULL;
}

static int opcua_plan_cb(struct fb_device *dev, struct fb_group *g, struct fb_err *err)
{
    struct ua_plan *p = calloc(1, sizeof *p);
    if (!p) return fb_err_set(err, FB_ENOMEM, "out of memory");
    p->n = g->ntags;
    p->tags = calloc(p->n ? p->n : 1, sizeof *p->tags);
    p->slots = calloc(p->n ? p->n : 1, sizeof *p->slots);
    if (!p->tags || !p->slots) goto oom;
    for (uint32_t i = 0; i < p->n; i++) {
        const struct fb_tag *t = &dev->gw->tags[g->tags[i]];
        p->tags[i] = t->id;
        p->slots[i].cap = t->type == FB_T_STRING ? (t->str_len ? t->str_len : UA_STR_CAP) : 0;
        if (p->slots[i].cap && !(p->slots[i].s = malloc(p->slots[i].cap))) goto oom;
    }
    p->interval_ms = g->period_ns / 1e6;
    g->plan = p;
    return 0;
oom:
    if (p->slots)
        for (uint32_t i = 0; i < p->n; i++) free(p->slots[i].s);
    free(p->slots);
    free(p->tags);
    free(p);
    return fb_err_set(err, FB_ENOMEM, "out of memory");
}

static void opcua_plan_free_cb(struct fb_group *g)
{
    struct ua_plan *p = g->plan;
    if (!p) return;
    for (uint32_t i = 0; i < p->n; i++) free(p->slots[i].s);
    free(p->slots);
    free(p->tags);
    free(p);
    g->plan = NULL;
}

/* ------------------------------------------------------------ resolution */
static int resolve_batch(struct ua_conn *c, struct ua_addr **addrs, uint32_t n, struct fb_err *err)
{
    const struct ua_relpath *paths[64];
    for (uint32_t k = 0; k < n; k++) paths[k] = &addrs[k]->path;
    struct ua_enc e;
    ua_enc_init(&e, c->body, UA_BODY_CAP);
    struct ua_reqhdr h = reqhdr(c, 0);
    ua_translate_req(&e, &h, paths, n);
    if (e.err) return fb_err_set(err, FB_EINVAL, "TranslateBrowsePaths request too large");
    int rc = call(c, e.len, err);
    if (rc) return rc;
    struct ua_dec d;
    ua_dec_init(&d, c->ra.buf, c->ra.len);
    struct ua_resphdr rh;
    int32_t cnt;
    rc = ua_translate_resp(&d, &rh, &cnt);
    if (rc) return svc_error(c, "TranslateBrowsePathsToNodeIds", rc, &rh, err);
    if (cnt != (int32_t)n) return fb_err_set(err, FB_EPROTO, "%s: wrong number of browse path results", c->where);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t st;
        struct ua_nodeid target;
        ua_get_translate_result(&d, &st, &target);
        if (d.err) return fb_err_set(err, FB_EPROTO, "%s: malformed browse path result", c->where);
        ua_nodeid_clear(&addrs[k]->node);
        if (st & 0x80000000u) {
            char qb[16];
            addrs[k]->resolve_q = FB_Q_BAD_NODE_UNKNOWN;
            fb_warn(c->dev_name, NULL, "browse path %s not found: %s", addrs[k]->path.own, ua_status_text(st, qb));
        } else {
            addrs[k]->resolve_q = FB_Q_GOOD;
            if (ua_nodeid_copy(&target, &addrs[k]->node) < 0) return fb_err_set(err, FB_ENOMEM, "out of memory");
        }
    }
    return 0;
}

/* Browse paths → node ids, 64 per TranslateBrowsePathsToNodeIds request;
 * done at every open, so a server whose ids changed is followed. */
static int resolve_paths(struct ua_conn *c, struct fb_conn *fc, struct fb_err *err)
{
    struct ua_addr *batch[64];
    uint32_t n = 0;
    for (uint32_t di = 0; di < fc->ndevs; di++) {
        struct fb_device *d = fc->devs[di];
        for (uint32_t i = 0; i < d->ntags; i++) {
            struct ua_addr *a = d->gw->tags[d->first_tag + i].addr;
            if (!a || !a->is_path) continue;
            batch[n++] = a;
            if (n == 64) {
                int rc = resolve_batch(c, batch, n, err);
                if (rc) return rc;
                n = 0;
            }
        }
    }
    return n ? resolve_batch(c, batch, n, err) : 0;
}

struct dt_ctx {
    struct ua_addr **addrs;
    struct fb_tag **tags;
    const char *dev;
    bool adopt;
};
static void dt_cb(void *ctx, uint32_t i, const struct ua_datavalue *dv)
{
    struct dt_ctx *x = ctx;
    struct ua_addr *a = x->addrs[i];
    if ((dv->status & 0x80000000u) || !(dv->mask & UA_DV_VALUE)) {
        a->resolve_q = (dv->status & 0xFFFF0000u) == FB_Q_BAD_NODE_UNKNOWN ? FB_Q_BAD_NODE_UNKNOWN : a->resolve_q;
        a->builtin = 0;
        if (a->resolve_q) {
            char nb[200];
            fb_warn(x->dev, x->tags[i]->name, "node %s does not exist on the server (BadNodeIdUnknown)",
                    ua_nodeid_format(&a->node, nb, sizeof nb));
        }
        return;
    }
    if (dv->value.type == UA_NODEID && !dv->value.is_array) a->builtin = ua_datatype_builtin(&dv->value.v.nid);
    if (x->adopt && a->auto_type && a->builtin && ua_builtin[a->builtin].fbtype != FB_T_NONE) {
        struct fb_tag *t = x->tags[i];
        t->type = ua_builtin[a->builtin].fbtype;
        if (t->type == FB_T_STRING && !t->str_len) t->str_len = UA_STR_CAP;
    }
}

/* DataType of every tag's node (for writes, and the type of untyped tags in
 * the CLI, whose buffers are sized after open). */
static int read_datatypes(struct ua_conn *c, struct fb_conn *fc, struct fb_err *err)
{
    uint32_t total = 0;
    for (uint32_t di = 0; di < fc->ndevs; di++) total += fc->devs[di]->ntags;
    if (!total) return 0;
    const struct ua_nodeid **nodes = calloc(total, sizeof *nodes);
    struct ua_addr **addrs = calloc(total, sizeof *addrs);
    struct fb_tag **tags = calloc(total, sizeof *tags);
    int rc = 0;
    if (!nodes || !addrs || !tags) {
        rc = fb_err_set(err, FB_ENOMEM, "out of memory");
        goto out;
    }
    uint32_t n = 0;
    bool adopt = true;
    for (uint32_t di = 0; di < fc->ndevs; di++) {
        struct fb_device *d = fc->devs[di];
        for (uint32_t k = 0; k < d->ngroups; k++)
            if (d->groups[k].pool) adopt = false; /* the gateway sized its buffers already */
        for (uint32_t i = 0; i < d->ntags; i++) {
            struct fb_tag *t = &d->gw->tags[d->first_tag + i];
            struct ua_addr *a = t->addr;
            if (!a || a->resolve_q) continue;
            nodes[n] = &a->node;
            addrs[n] = a;
            tags[n++] = t;
        }
    }
    struct dt_ctx x = {addrs, tags, c->dev_name, adopt};
    rc = read_attr(c, nodes, n, UA_ATTR_DATATYPE, 3, dt_cb, &x, err);
    if (rc == FB_EEXCEPTION) rc = 0; /* not fatal: types are then learnt on write */
out:
    free(nodes);
    free(addrs);
    free(tags);
    return rc;
}

/* ------------------------------------------------------------ values */
static void fill_sample(const struct fb_tag *t, const struct ua_addr *a, const struct ua_datavalue *dv,
                        uint32_t *q, int64_t *ts, struct fb_value *v, char *sbuf, size_t cap)
{
    memset(v, 0, sizeof *v);
    v->type = t->type;
    if (v->type == FB_T_STRING) v->s.p = "";
    *q = dv->mask & UA_DV_STATUS ? dv->status : FB_Q_GOOD;
    *ts = dv->src_ts ? ua_dt_to_ns(dv->src_ts) : dv->srv_ts ? ua_dt_to_ns(dv->srv_ts) : 0;
    if (fb_q_bad(*q)) return;
    if (!(dv->mask & UA_DV_VALUE) || dv->value.type == UA_NULL) {
        *q = FB_Q_BAD_WAITING;
        return;
    }
    struct ua_variant el;
    const struct ua_variant *src = &dv->value;
    if (dv->value.is_array) {
        if (ua_variant_elem(&dv->value, (int32_t)t->index, &el) < 0) {
            *q = 0x80370000u; /* BadIndexRangeNoData */
            return;
        }
        src = &el;
    } else if (t->index) {
        *q = 0x80370000u;
        return;
    }
    enum fb_type want = a->auto_type && t->type == FB_T_FLOAT64 ? FB_T_FLOAT64 : (enum fb_type)t->type;
    size_t scap = t->type == FB_T_STRING && t->str_len && t->str_len < cap ? t->str_len : cap;
    uint32_t cq = ua_variant_to_fb(src, want, v, sbuf, scap);
    if (cq != FB_Q_GOOD) {
        memset(v, 0, sizeof *v);
        v->type = t->type;
        if (v->type == FB_T_STRING) v->s.p = "";
        *q = cq;
    }
}

static void add_bad(struct fb_batch *out, const struct fb_tag *t, uint32_t q, int64_t ts)
{
    struct fb_value v;
    memset(&v, 0, sizeof v);
    v.type = t->type;
    if (v.type == FB_T_STRING) v.s.p = "";
    fb_batch_add(out, t->id, q, ts, &v);
}

struct poll_ctx {
    struct fb_device *dev;
    struct ua_conn *c;
    struct fb_batch *out;
    uint32_t *ids;
    int64_t now;
    uint32_t nbad;
};
static void poll_cb(void *ctx, uint32_t i, const struct ua_datavalue *dv)
{
    struct poll_ctx *x = ctx;
    const struct fb_tag *t = &x->dev->gw->tags[x->ids[i]];
    uint32_t q;
    int64_t ts;
    struct fb_value v;
    fill_sample(t, t->addr, dv, &q, &ts, &v, x->c->sbuf, sizeof x->c->sbuf);
    if (fb_q_bad(q)) x->nbad++;
    struct fb_sample *s = fb_batch_add(x->out, t->id, q, ts ? ts : x->now, &v);
    (void)s;
}

/* ------------------------------------------------------------ subscriptions */
static struct ua_plan *plan_by_sub(struct fb_conn *fc, uint32_t sub_id, struct fb_device **devp)
{
    for (uint32_t di = 0; di < fc->ndevs; di++)
        for (uint32_t k = 0; k < fc->devs[di]->ngroups; k++) {
            struct ua_plan *p = fc->devs[di]->groups[k].plan;
            if (p && p->sub_id == sub_id) {
                *devp = fc->devs[di];
                return p;
            }
        }
    return NULL;
}

struct notif_ctx {
    struct fb_device *dev;
    struct ua_plan *p;
};
static void notif_cb(void *ctx, uint32_t handle, const struct ua_datavalue *dv)
{
    struct notif_ctx *x = ctx;
    if (handle >= x->p->n) return;
    struct ua_slot *s = &x->p->slots[handle];
    const struct fb_tag *t = &x->dev->gw->tags[x->p->tags[handle]];
    char tmp[UA_STR_CAP * 2];
    char *sb = s->s ? s->s : tmp;
    size_t cap = s->s ? s->cap : sizeof tmp;
    fill_sample(t, t->addr, dv, &s->q, &s->ts, &s->v, sb, cap);
    if (!s->ts) s->ts = fb_now_ns();
    s->fresh = true;
}

static void apply_notifications(struct ua_conn *c, struct fb_device *dev, struct ua_plan *p, struct ua_dec *d,
                                int32_t ndata)
{
    struct notif_ctx x = {dev, p};
    for (int32_t i = 0; i < ndata && !d->err; i++) {
        uint32_t sc = 0;
        if (ua_get_notification(d, notif_cb, &x, &sc) < 0) break;
        if (sc) {
            char qb[16];
            fb_warn(c->dev_name, NULL, "subscription %u changed status: %s", p->sub_id, ua_status_text(sc, qb));
            if (sc & 0x80000000u) p->sub_id = 0; /* gone: recreated by the next read */
        }
    }
}

static void handle_publish(struct ua_conn *c, const uint8_t *buf, size_t n)
{
    struct ua_dec d;
    ua_dec_init(&d, buf, n);
    struct ua_resphdr rh;
    struct ua_notif_msg m;
    int rc = ua_publish_resp(&d, UA_ID_PUBLISH_RESP, &rh, &m);
    if (rc) {
        char qb[16];
        uint32_t sc = rh.result & 0xFFFF0000u;
        if (rc == FB_EEXCEPTION && (sc == UA_BAD_NO_SUBSCRIPTION || sc == UA_BAD_TOO_MANY_PUBLISH || sc == UA_BAD_TIMEOUT ||
                                  sc == UA_BAD_SESSION_CLOSED || sc == UA_BAD_SESSION_ID_INVALID))
            fb_debug(c->dev_name, NULL, "Publish: %s", ua_status_text(rh.result, qb));
        else
            fb_warn(c->dev_name, NULL, "Publish failed: %s", rc == FB_EEXCEPTION ? ua_status_text(rh.result, qb) : "malformed response");
        return;
    }
    struct fb_device *dev = NULL;
    struct ua_plan *p = plan_by_sub(c->fc, m.sub_id, &dev);
    if (!p) return;
    p->last_pub = fb_mono_ns();
    if (m.ndata == 0) { /* keep-alive: seq is the next one to come */
        if (p->next_seq && m.seq != p->next_seq && p->nmissing < 8) {
            for (uint32_t s = p->next_seq; s != m.seq && p->nmissing < 8; s++) p->missing[p->nmissing++] = s;
        }
        p->next_seq = m.seq;
        return;
    }
    if (p->next_seq && m.seq != p->next_seq) { /* a gap: ask for the missing ones again */
        for (uint32_t s = p->next_seq; s != m.seq && p->nmissing < 8; s++) p->missing[p->nmissing++] = s;
    }
    p->next_seq = m.seq + 1;
    apply_notifications(c, dev, p, &d, m.ndata);
    if (c->nacks < sizeof c->acks / sizeof c->acks[0]) c->acks[c->nacks++] = (struct ua_ack){m.sub_id, m.seq};
}

static int send_publish(struct ua_conn *c, struct fb_err *err)
{
    while (c->npub < UA_PUBLISH_MAX) {
        struct ua_enc e;
        ua_enc_init(&e, c->body, UA_BODY_CAP);
        uint32_t tmo = 0;
        /* the server holds a Publish up to a keep-alive period: give it room */
        for (uint32_t di = 0; di < c->fc->ndevs; di++)
            for (uint32_t k = 0; k < c->fc->devs[di]->ngroups; k++) {
                struct ua_plan *p = c->fc->devs[di]->groups[k].plan;
                if (p && p->sub_id) {
                    double t = p->interval_ms * (p->keepalive ? p->keepalive : 10) * 3 + 10000;
                    if (t > tmo) tmo = t > 4e9 ? 4000000000u : (uint32_t)t;
                }
            }
        struct ua_reqhdr h = reqhdr(c, tmo ? tmo : 60000);
        ua_publish_req(&e, &h, c->acks, c->nacks);
        if (e.err) return fb_err_set(err, FB_EINVAL, "Publish too large");
        if (c->channel_open && fb_mono_ns() >= c->renew_at) {
            int rc = renew(c, 1, err);
            if (rc) return rc;
        }
        uint32_t rid;
        int rc = send_msg(c, "MSG", c->body, e.len, &rid, err);
        if (rc) return rc;
        c->nacks = 0;
        c->pub_ids[c->npub++] = rid;
    }
    return 0;
}

static int republish(struct ua_conn *c, struct fb_device *dev, struct ua_plan *p, struct fb_err *err)
{
    while (p->nmissing) {
        uint32_t seq = p->missing[--p->nmissing];
        struct ua_enc e;
        ua_enc_init(&e, c->body, UA_BODY_CAP);
        struct ua_reqhdr h = reqhdr(c, 0);
        ua_republish_req(&e, &h, p->sub_id, seq);
        int rc = call(c, e.len, err);
        if (rc) return rc;
        struct ua_dec d;
        ua_dec_init(&d, c->ra.buf, c->ra.len);
        struct ua_resphdr rh;
        struct ua_notif_msg m;
        rc = ua_publish_resp(&d, UA_ID_REPUBLISH_RESP, &rh, &m);
        char qb[16];
        if (rc == FB_EEXCEPTION) {
            fb_info(c->dev_name, NULL, "notification %u of subscription %u is gone (%s): values may have been missed",
                    seq, p->sub_id, ua_status_text(rh.result, qb));
            continue;
        }
        if (rc) return svc_error(c, "Republish", rc, &rh, err);
        apply_notifications(c, dev, p, &d, m.ndata);
    }
    return 0;
}

static int create_subscription(struct ua_conn *c, struct fb_device *dev, struct ua_plan *p, struct fb_err *err)
{
    struct ua_sub_params sp = {.interval_ms = p->interval_ms, .keepalive_count = 10, .max_notif = 0};
    double ka_ms = sp.interval_ms * sp.keepalive_count;
    if (ka_ms < 5000 && sp.interval_ms > 0) sp.keepalive_count = (uint32_t)(5000 / sp.interval_ms) + 1;
    sp.lifetime_count = sp.keepalive_count * 6;
    struct ua_enc e;
    ua_enc_init(&e, c->body, UA_BODY_CAP);
    struct ua_reqhdr h = reqhdr(c, 0);
    ua_createsub_req(&e, &h, &sp);
    int rc = call(c, e.len, err);
    if (rc) return rc;
    struct ua_resphdr rh;
    struct ua_sub_params rev;
    uint32_t sid;
    rc = ua_createsub_resp(c->ra.buf, c->ra.len, &rh, &sid, &rev);
    if (rc) return svc_error(c, "CreateSubscription", rc, &rh, err);
    p->sub_id = sid;
    p->keepalive = rev.keepalive_count;
    p->interval_ms = rev.interval_ms > 0 ? rev.interval_ms : p->interval_ms;
    p->next_seq = 0;
    p->nmissing = 0;
    p->last_pub = fb_mono_ns();
    /* monitored items in batches within MaxMonitoredItemsPerCall */
    uint32_t batch = c->max_mi ? c->max_mi : UA_BATCH_DEFAULT;
    struct ua_mon_item *items = calloc(batch, sizeof *items);
    uint32_t *idx = calloc(batch, sizeof *idx);
    if (!items || !idx) {
        free(items);
        free(idx);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    uint32_t created = 0;
    rc = 0;
    for (uint32_t off = 0; off < p->n && !rc;) {
        uint32_t k = 0;
        for (; off < p->n && k < batch; off++) {
            const struct fb_tag *t = &dev->gw->tags[p->tags[off]];
            const struct ua_addr *a = t->addr;
            p->slots[off].fresh = false;
            if (!a || a->resolve_q) { /* report it once as bad */
                p->slots[off] = (struct ua_slot){.fresh = true, .q = a ? a->resolve_q : FB_Q_BAD_CONFIG,
                                                 .ts = fb_now_ns(), .v = {.type = t->type}, .s = p->slots[off].s,
                                                 .cap = p->slots[off].cap};
                if (t->type == FB_T_STRING) p->slots[off].v.s.p = "";
                continue;
            }
            items[k] = (struct ua_mon_item){.node = &a->node, .handle = off, .sampling_ms = p->interval_ms,
                                            .queue = c->o->queue};
            if (t->proc.db_abs > 0) {
                /* a server-side deadband on the raw value: only when unscaled */
                if (!t->proc.scaled) {
                    items[k].deadband_type = 1;
                    items[k].deadband = t->proc.db_abs;
                }
            } else if (t->proc.db_pct > 0 && t->proc.db_pct <= 100) {
                /* percent of the node's EURange (the same share of a linearly scaled range) */
                items[k].deadband_type = 2;
                items[k].deadband = t->proc.db_pct;
            }
            idx[k++] = off;
        }
        if (!k) continue;
        /* a second pass for items whose percent deadband the server refused: without the filter */
        for (int pass = 0; pass < 2 && k && !rc; pass++) {
            uint32_t nretry = 0;
            ua_enc_init(&e, c->body, UA_BODY_CAP);
            h = reqhdr(c, 0);
            ua_createmi_req(&e, &h, sid, items, k);
            if (e.err) {
                rc = fb_err_set(err, FB_EINVAL, "CreateMonitoredItems too large");
                break;
            }
            rc = call(c, e.len, err);
            if (rc) break;
            struct ua_dec d;
            ua_dec_init(&d, c->ra.buf, c->ra.len);
            int32_t cnt;
            rc = ua_createmi_resp(&d, &rh, &cnt);
            if (rc) {
                rc = svc_error(c, "CreateMonitoredItems", rc, &rh, err);
                break;
            }
            if (cnt != (int32_t)k) {
                rc = fb_err_set(err, FB_EPROTO, "%s: wrong number of monitored item results", c->where);
                break;
            }
            for (uint32_t i = 0; i < k; i++) {
                uint32_t st, mid;
                ua_get_mi_result(&d, &st, &mid);
                if (d.err) {
                    rc = fb_err_set(err, FB_EPROTO, "%s: malformed monitored item result", c->where);
                    break;
                }
                if ((st & 0x80000000u) && items[i].deadband_type == 2 && pass == 0) {
                    const struct fb_tag *t = &dev->gw->tags[p->tags[idx[i]]];
                    char qb[16];
                    fb_warn(dev->name, t->name, "%s refused the percent deadband on %s (%s; a percent deadband needs "
                            "an analog node with an EURange): monitoring it without a server-side deadband",
                            c->where, t->addr_text, ua_status_text(st, qb));
                    items[nretry] = items[i];
                    items[nretry].deadband_type = 0;
                    idx[nretry++] = idx[i];
                } else if (st & 0x80000000u) {
                    const struct fb_tag *t = &dev->gw->tags[p->tags[idx[i]]];
                    char qb[16];
                    fb_warn(dev->name, t->name, "cannot monitor %s: %s", t->addr_text, ua_status_text(st, qb));
                    struct ua_slot *s = &p->slots[idx[i]];
                    s->fresh = true;
                    s->q = st & 0xFFFF0000u;
                    s->ts = fb_now_ns();
                    memset(&s->v, 0, sizeof s->v);
                    s->v.type = t->type;
                    if (t->type == FB_T_STRING) s->v.s.p = "";
                } else {
                    created++;
                }
            }
            k = nretry;
        }
    }
    free(items);
    free(idx);
    if (rc) return rc;
    fb_debug(dev->name, NULL, "subscription %u: %u monitored items, publishing every %.0f ms", sid, created,
             p->interval_ms);
    return 0;
}

/* ------------------------------------------------------------ open / close */
static void opcua_close(struct fb_conn *fc)
{
    struct ua_conn *c = fc->ctx;
    if (!c) return;
    disconnect(c);
    conn_free(c);
    fc->ctx = NULL;
    for (uint32_t di = 0; di < fc->ndevs; di++)
        for (uint32_t k = 0; k < fc->devs[di]->ngroups; k++) {
            struct ua_plan *p = fc->devs[di]->groups[k].plan;
            if (p) p->sub_id = 0;
        }
}

static int opcua_open(struct fb_conn *fc, struct fb_err *err)
{
    opcua_close(fc);
    if (!fc->ndevs || !fc->devs[0]->drv_dev) return fb_err_set(err, FB_EINVAL, "connection %s has no OPC UA device", fc->key);
    const struct ua_opts *o = &((const struct ua_dev *)fc->devs[0]->drv_dev)->o;
    /* the session must outlive the longest gap between requests */
    uint32_t session_ms = o->session_ms;
    for (uint32_t di = 0; di < fc->ndevs; di++)
        for (uint32_t k = 0; k < fc->devs[di]->ngroups; k++) {
            double need = fc->devs[di]->groups[k].period_ns / 1e6 * 3;
            if (need > session_ms) session_ms = need > 3.6e6 ? 3600000 : (uint32_t)need;
        }
    struct ua_conn *c = NULL;
    struct ua_memo *memo = &((struct ua_dev *)fc->devs[0]->drv_dev)->memo;
    int rc = ua_connect(&c, o, fc->devs[0]->name, session_ms, memo, err);
    if (rc && memo->refused) {
        /* a refused login: its status for the tags, and a long pause so that a wrong
         * password does not lock the account (docs/opcua.md, auth_retry=) */
        fc->fail_q = memo->refused;
        fc->fail_retry_ns = o->auth_retry_ns; /* the runtime logs "retry in …" */
    }
    if (rc) return rc;
    c->fc = fc;
    read_limits(c);
    rc = resolve_paths(c, fc, err);
    if (!rc) rc = read_datatypes(c, fc, err);
    for (uint32_t di = 0; di < fc->ndevs && !rc; di++) {
        struct fb_device *d = fc->devs[di];
        const struct ua_dev *ud = d->drv_dev;
        if (!ud->o.subscribe) continue;
        for (uint32_t k = 0; k < d->ngroups && !rc; k++) {
            struct ua_plan *p = d->groups[k].plan;
            if (p) rc = create_subscription(c, d, p, err);
        }
    }
    if (!rc && o->subscribe) rc = send_publish(c, err);
    if (rc) {
        disconnect(c);
        conn_free(c);
        return rc == FB_EEXCEPTION ? FB_EIO : rc;
    }
    fb_debug(fc->devs[0]->name, NULL, "session open on %s", c->where);
    fc->ctx = c;
    return 0;
}

/* ------------------------------------------------------------ read */
static int read_subscribed(struct fb_device *dev, struct ua_conn *c, struct ua_plan *p, struct fb_batch *out)
{
    struct fb_err err = {0};
    int rc = 0;
    if (!p->sub_id) rc = create_subscription(c, dev, p, &err);
    if (!rc && p->nmissing) rc = republish(c, dev, p, &err);
    if (!rc) rc = send_publish(c, &err);
    /* take what has arrived, without waiting for more */
    while (!rc) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int r = poll(&pfd, 1, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        uint32_t got;
        rc = recv_msg(c, fb_mono_ns() + c->o->timeout_ns, &got, &err);
        if (rc == FB_EEXCEPTION) {
            is_publish(c, got, true);
            rc = 0;
            continue;
        }
        if (rc) break;
        if (is_publish(c, got, true)) handle_publish(c, c->ra.buf, c->ra.len);
    }
    if (!rc && c->channel_open && fb_mono_ns() >= c->renew_at) rc = renew(c, 1, &err);
    if (!rc && p->sub_id) {
        /* no Publish response (not even a keep-alive) for 3 keep-alive periods: dead */
        int64_t silent = fb_mono_ns() - p->last_pub;
        int64_t limit = ms_to_ns(p->interval_ms * (p->keepalive ? p->keepalive : 10) * 3) + c->o->timeout_ns;
        if (silent > limit) rc = fb_err_set(&err, FB_ETIMEDOUT, "%s: subscription %u silent for %.1fs", c->where,
                                            p->sub_id, silent / 1e9);
    }
    int64_t now = fb_now_ns();
    for (uint32_t i = 0; i < p->n; i++) {
        struct ua_slot *s = &p->slots[i];
        const struct fb_tag *t = &dev->gw->tags[p->tags[i]];
        if (rc) {
            add_bad(out, t, rc == FB_ETIMEDOUT ? FB_Q_BAD_TIMEOUT : FB_Q_BAD_COMM, now);
            continue;
        }
        if (!s->fresh) continue;
        s->fresh = false;
        /* a Bad notification (or an item the server would not monitor) is a failed item */
        if (fb_q_bad(s->q)) atomic_fetch_add(&dev->m.errors, 1);
        fb_batch_add(out, t->id, s->q, s->ts ? s->ts : now, &s->v);
    }
    if (rc) {
        fb_warn(dev->name, NULL, "%s", err.msg[0] ? err.msg : fb_strerror(rc));
        return rc == FB_EEXCEPTION ? FB_EIO : rc;
    }
    return 0;
}

static int opcua_read(struct fb_device *dev, struct fb_group *g, struct fb_batch *out)
{
    struct ua_plan *p = g->plan;
    struct ua_conn *c = dev->conn ? dev->conn->ctx : NULL;
    if (!p) return FB_EINVAL;
    int64_t now = fb_now_ns();
    if (!c) {
        for (uint32_t i = 0; i < p->n; i++) add_bad(out, &dev->gw->tags[p->tags[i]], FB_Q_BAD_NOT_CONNECTED, now);
        return FB_EIO;
    }
    const struct ua_dev *ud = dev->drv_dev;
    int64_t t0 = fb_mono_ns();
    if (ud->o.subscribe) {
        atomic_fetch_add(&dev->m.requests, 1);
        int rc = read_subscribed(dev, c, p, out);
        if (rc) atomic_fetch_add(&dev->m.errors, 1);
        else atomic_store(&dev->m.last_success_ns, fb_now_ns());
        return rc;
    }
    /* poll: unresolved tags are bad without asking; the rest in batched Reads */
    const struct ua_nodeid **nodes = calloc(p->n ? p->n : 1, sizeof *nodes);
    uint32_t *ids = calloc(p->n ? p->n : 1, sizeof *ids);
    if (!nodes || !ids) {
        free(nodes);
        free(ids);
        return FB_ENOMEM;
    }
    uint32_t n = 0, unresolved = 0;
    for (uint32_t i = 0; i < p->n; i++) {
        const struct fb_tag *t = &dev->gw->tags[p->tags[i]];
        const struct ua_addr *a = t->addr;
        if (!a || a->resolve_q) { /* the server said at open that it has no such node */
            add_bad(out, t, a ? a->resolve_q : FB_Q_BAD_CONFIG, now);
            unresolved++;
            continue;
        }
        nodes[n] = &a->node;
        ids[n++] = t->id;
    }
    struct fb_err err = {0};
    struct poll_ctx x = {dev, c, out, ids, now, 0};
    uint64_t reads0 = c->nreads;
    int rc = n ? read_attr(c, nodes, n, UA_ATTR_VALUE, 2, poll_cb, &x, &err) : 0;
    atomic_fetch_add(&dev->m.requests, c->nreads - reads0); /* one per Read request (batch) */
    /* every item the server refused (Bad status) or we could not use counts as failed */
    atomic_fetch_add(&dev->m.errors, unresolved + x.nbad);
    free(nodes);
    if (rc) {
        atomic_fetch_add(&dev->m.errors, 1);
        if (rc == FB_ETIMEDOUT) atomic_fetch_add(&dev->m.timeouts, 1);
        /* the tags not yet added become bad */
        for (uint32_t i = 0; i < n; i++) {
            bool found = false;
            for (uint32_t k = 0; k < out->n && !found; k++) found = out->s[k].tag == ids[i];
            if (!found) add_bad(out, &dev->gw->tags[ids[i]], rc == FB_ETIMEDOUT ? FB_Q_BAD_TIMEOUT : FB_Q_BAD_COMM, now);
        }
        free(ids);
        fb_warn(dev->name, NULL, "%s", err.msg[0] ? err.msg : fb_strerror(rc));
        return rc == FB_EEXCEPTION ? FB_EIO : rc;
    }
    free(ids);
    int64_t t1 = fb_mono_ns();
    atomic_fetch_add(&dev->m.rtt_ns_sum, (uint64_t)(t1 - t0));
    atomic_store(&dev->m.rtt_ns_last, (uint64_t)(t1 - t0));
    atomic_fetch_add(&dev->m.rtt_count, 1);
    atomic_store(&dev->m.last_success_ns, fb_now_ns());
    return 0;
}

/* ------------------------------------------------------------ write */
struct type_ctx {
    uint8_t type;
    uint32_t status;
};
static void type_cb(void *ctx, uint32_t i, const struct ua_datavalue *dv)
{
    (void)i;
    struct type_ctx *x = ctx;
    x->status = dv->status;
    if (dv->mask & UA_DV_VALUE) x->type = dv->value.type;
}

static int opcua_write(struct fb_device *dev, const struct fb_tag *t, const struct fb_value *v, struct fb_err *err)
{
    struct ua_conn *c = dev->conn ? dev->conn->ctx : NULL;
    struct ua_addr *a = t->addr;
    if (!a) return fb_err_set(err, FB_EINVAL, "tag %s has no address", t->name);
    if (!c) return fb_err_set(err, FB_EIO, "%s: not connected", dev->name);
    if (a->resolve_q) return fb_err_set(err, FB_ENOENT, "%s: node %s not found on the server", t->name, t->addr_text);
    /* writes and write errors are counted by the runtime */
    uint8_t type = a->builtin;
    if (!type) { /* DataType unknown or abstract: the current value's type decides */
        const struct ua_nodeid *nodes[1] = {&a->node};
        struct type_ctx x = {0, 0};
        int rc = read_attr(c, nodes, 1, UA_ATTR_VALUE, 3, type_cb, &x, err);
        if (rc) return rc == FB_EEXCEPTION ? FB_EIO : rc;
        if (x.status & 0x80000000u) {
            char qb[16];
            atomic_fetch_add(&dev->m.write_errors, 1);
            return fb_err_set(err, (x.status & 0xFFFF0000u) == FB_Q_BAD_NODE_UNKNOWN ? FB_ENOENT : FB_EEXCEPTION,
                              "write to %s: cannot read the node's type: %s", t->name, ua_status_text(x.status, qb));
        }
        type = x.type;
    }
    struct ua_variant uv;
    uint8_t buf[256];
    int rc = ua_variant_from_fb(v, type, &uv, buf, sizeof buf, err);
    if (rc) {
        atomic_fetch_add(&dev->m.write_errors, 1);
        return rc;
    }
    struct ua_enc e;
    ua_enc_init(&e, c->body, UA_BODY_CAP);
    struct ua_reqhdr h = reqhdr(c, 0);
    ua_write_req(&e, &h, &a->node, &uv);
    if (e.err) return fb_err_set(err, FB_EINVAL, "write of %s too large", t->name);
    rc = call(c, e.len, err);
    if (rc) {
        atomic_fetch_add(&dev->m.write_errors, 1);
        return rc;
    }
    struct ua_resphdr rh;
    uint32_t st = 0;
    rc = ua_write_resp(c->ra.buf, c->ra.len, &rh, &st);
    if (rc == FB_EEXCEPTION) st = rh.result;
    else if (rc) return svc_error(c, "Write", rc, &rh, err);
    if (st & 0x80000000u) {
        char qb[16];
        uint32_t sc = st & 0xFFFF0000u;
        atomic_fetch_add(&dev->m.write_errors, 1);
        int code = sc == FB_Q_BAD_NOT_WRITABLE || sc == 0x801F0000u ? FB_EACCES
                 : sc == FB_Q_BAD_NODE_UNKNOWN ? FB_ENOENT
                 : sc == FB_Q_BAD_TYPE_MISMATCH ? FB_EINVAL
                 : sc == FB_Q_BAD_OUT_OF_RANGE ? FB_ERANGE
                 : session_lost(sc) ? FB_EIO : FB_EEXCEPTION;
        return fb_err_set(err, code, "write to %s (%s) refused: %s", t->name, t->addr_text, ua_status_text(st, qb));
    }
    return 0;
}

/* ------------------------------------------------------------ browse */
static const char *node_class_name(uint32_t nc)
{
    switch (nc) {
    case 1: return "Object";
    case 2: return "Variable";
    case 4: return "Method";
    case 8: return "ObjectType";
    case 16: return "VariableType";
    case 32: return "ReferenceType";
    case 64: return "DataType";
    case 128: return "View";
    default: return "?";
    }
}

struct bnode {
    struct ua_nodeid id; /* owned */
    char name[160];
    uint32_t nc;
};

struct dtv_ctx {
    struct bnode *nodes;
    uint32_t *dtnum; /* DataType node i=N when not a built-in */
    uint8_t *types;
    uint8_t *access;
    bool acc;
};
static void dtv_cb(void *ctx, uint32_t i, const struct ua_datavalue *dv)
{
    struct dtv_ctx *x = ctx;
    if (!(dv->mask & UA_DV_VALUE) || (dv->status & 0x80000000u)) return;
    if (x->acc) {
        if (dv->value.type == UA_BYTE) x->access[i] = (uint8_t)dv->value.v.u;
    } else if (dv->value.type == UA_NODEID) {
        x->types[i] = ua_datatype_builtin(&dv->value.v.nid);
        if (!x->types[i]) { /* a structure, enumeration or abstract type */
            x->types[i] = 0xFF;
            x->dtnum[i] = dv->value.v.nid.kind == UA_NID_NUMERIC ? dv->value.v.nid.num : 0;
        }
    }
}

static int browse_node(struct ua_conn *c, const struct ua_nodeid *node, int depth, int max_depth, FILE *out,
                       struct fb_err *err)
{
    struct bnode *kids = NULL;
    uint32_t nk = 0, cap = 0;
    struct ua_enc e;
    ua_enc_init(&e, c->body, UA_BODY_CAP);
    struct ua_reqhdr h = reqhdr(c, 0);
    ua_browse_req(&e, &h, node, 200);
    int rc = call(c, e.len, err);
    uint32_t expect = UA_ID_BROWSE_RESP;
    while (!rc) {
        struct ua_dec d;
        ua_dec_init(&d, c->ra.buf, c->ra.len);
        struct ua_resphdr rh;
        uint32_t st;
        struct ua_str cp;
        int32_t nrefs;
        rc = ua_browse_resp(&d, expect, &rh, &st, &cp, &nrefs);
        if (rc) {
            rc = svc_error(c, "Browse", rc, &rh, err);
            break;
        }
        for (int32_t i = 0; i < nrefs && !d.err; i++) {
            struct ua_ref r;
            ua_get_ref(&d, &r);
            if (d.err || r.server_index) continue;
            if (nk == cap) {
                cap = cap ? cap * 2 : 32;
                struct bnode *nn = realloc(kids, cap * sizeof *nn);
                if (!nn) {
                    rc = fb_err_set(err, FB_ENOMEM, "out of memory");
                    break;
                }
                kids = nn;
            }
            struct bnode *b = &kids[nk];
            if (ua_nodeid_copy(&r.target, &b->id) < 0) {
                rc = fb_err_set(err, FB_ENOMEM, "out of memory");
                break;
            }
            b->nc = r.node_class;
            int nl = r.browse_name.name.len > 0 ? r.browse_name.name.len : 0;
            if (r.browse_name.ns) snprintf(b->name, sizeof b->name, "%u:%.*s", r.browse_name.ns, nl, r.browse_name.name.p);
            else snprintf(b->name, sizeof b->name, "%.*s", nl, nl ? r.browse_name.name.p : "");
            nk++;
        }
        if (d.err && !rc) rc = fb_err_set(err, FB_EPROTO, "%s: malformed Browse response", c->where);
        if (rc || cp.len <= 0) break;
        /* more references: BrowseNext, releasing the point if we stop */
        char cpb[256];
        int32_t cl = cp.len < (int32_t)sizeof cpb ? cp.len : (int32_t)sizeof cpb;
        memcpy(cpb, cp.p, (size_t)cl);
        bool stop = nk > 100000;
        ua_enc_init(&e, c->body, UA_BODY_CAP);
        h = reqhdr(c, 0);
        ua_browsenext_req(&e, &h, stop, (struct ua_str){cpb, cl});
        rc = call(c, e.len, err);
        expect = UA_ID_BROWSENEXT_RESP;
        if (stop) break;
    }
    /* data types and access levels of the variables, in one Read each */
    uint8_t *types = calloc(nk ? nk : 1, 1), *acc = calloc(nk ? nk : 1, 1);
    uint32_t *dtnum = calloc(nk ? nk : 1, sizeof *dtnum);
    const struct ua_nodeid **vn = calloc(nk ? nk : 1, sizeof *vn);
    struct bnode *vb = calloc(nk ? nk : 1, sizeof *vb);
    uint32_t nv = 0;
    if (!types || !acc || !vn || !vb || !dtnum) rc = fb_err_set(err, FB_ENOMEM, "out of memory");
    if (!rc) {
        for (uint32_t i = 0; i < nk; i++)
            if (kids[i].nc == 2) {
                vn[nv] = &kids[i].id;
                vb[nv++] = kids[i];
            }
        struct dtv_ctx x = {vb, dtnum, types, acc, false};
        if (nv && read_attr(c, vn, nv, UA_ATTR_DATATYPE, 3, dtv_cb, &x, err) == FB_EIO) rc = FB_EIO;
        x.acc = true;
        if (!rc && nv && read_attr(c, vn, nv, UA_ATTR_ACCESSLEVEL, 3, dtv_cb, &x, err) == FB_EIO) rc = FB_EIO;
    }
    uint32_t vi = 0;
    for (uint32_t i = 0; i < nk && !rc; i++) {
        char nb[300];
        fprintf(out, "%*s%s  %s  %s", depth * 2, "", kids[i].name, ua_nodeid_format(&kids[i].id, nb, sizeof nb),
                node_class_name(kids[i].nc));
        if (kids[i].nc == 2 && vi < nv) {
            uint8_t ty = types[vi], ac = acc[vi];
            uint32_t dn = dtnum[vi];
            vi++;
            if (ty == 0xFF) fprintf(out, "  DataType i=%u", dn);
            else fprintf(out, "  %s", ty ? ua_builtin_name(ty) : "?");
            fprintf(out, "  %s%s", ac & 1 ? "r" : "-", ac & 2 ? "w" : "-");
            if (ty && ty != 0xFF && ua_builtin[ty].fbtype) fprintf(out, "  (%s)", fb_type_name(ua_builtin[ty].fbtype));
        }
        fputc('\n', out);
        bool skip = kids[i].id.ns == 0 && kids[i].id.kind == UA_NID_NUMERIC && kids[i].id.num == 2253 && depth == 1 &&
                    max_depth < 8;
        if (kids[i].nc == 1 && depth + 1 < max_depth && !skip)
            rc = browse_node(c, &kids[i].id, depth + 1, max_depth, out, err);
        else if (skip)
            fprintf(out, "%*s…  (the Server object: depth=8 or more shows it)\n", depth * 2 + 2, "");
    }
    for (uint32_t i = 0; i < nk; i++) ua_nodeid_clear(&kids[i].id);
    free(kids);
    free(types);
    free(acc);
    free(dtnum);
    free(vn);
    free(vb);
    return rc;
}

int fb_opcua_browse(const char *url, FILE *out, struct fb_err *err)
{
    struct fb_url u;
    if (fb_url_parse(url, &u, err) < 0) return FB_EINVAL;
    struct ua_opts o;
    int rc = opts_parse(&u, url, 2000000000LL, &o, err);
    fb_url_free(&u);
    struct ua_nodeid start = {.num = 85}; /* Objects */
    if (!rc && o.node) rc = ua_nodeid_parse(o.node, &start, err);
    if (rc) {
        opts_free(&o);
        return FB_EINVAL;
    }
    struct ua_conn *c = NULL;
    rc = ua_connect(&c, &o, "browse", o.session_ms, NULL, err);
    if (rc) {
        ua_nodeid_clear(&start);
        opts_free(&o);
        return rc;
    }
    read_limits(c);
    char nb[300];
    fprintf(out, "%s  %s\n", o.node ? "(start)" : "Objects", ua_nodeid_format(&start, nb, sizeof nb));
    rc = browse_node(c, &start, 1, o.depth + 1, out, err);
    ua_nodeid_clear(&start);
    disconnect(c);
    conn_free(c);
    opts_free(&o);
    return rc < 0 ? rc : 0;
}

static const char *const opcua_schemes[] = {"opc.tcp", NULL};

const struct fb_driver fb_driver_opcua = {
    .name = "opcua",
    .schemes = opcua_schemes,
    .device_init = opcua_device_init,
    .device_free = opcua_device_free,
    .parse_address = opcua_parse_address,
    .free_address = opcua_free_address,
    .plan = opcua_plan_cb,
    .plan_free = opcua_plan_free_cb,
    .open = opcua_open,
    .read = opcua_read,
    .write = opcua_write,
    .close = opcua_close,
};
