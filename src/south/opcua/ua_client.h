/* ua_client.h — one OPC UA client connection (ua_client.c): TCP, Hello,
 * the secure channel (None or Basic256Sha256) with its renewal, the session
 * with its login, and request/response with chunking.  Services build their
 * request body in c->body and call ua_call; the response is in c->ra.buf. */
#ifndef FB_UA_CLIENT_H
#define FB_UA_CLIENT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"
#include "south/opcua/ua_msg.h"
#include "south/opcua/ua_secure.h"

#define UA_BODY_CAP (1u << 20) /* largest request body we encode */
#define UA_PUBLISH_MAX 3
#define UA_APP_URI "urn:fieldbridge:client"
#define UA_BATCH_DEFAULT 1000 /* nodes per request unless the server says fewer */

/* The connection options, from the device URL (opcua.c). */
/* ------------------------------------------------------------------ options */
struct ua_opts {
    char host[256];
    int port;
    char endpoint[1024]; /* opc.tcp://host:port/path, no query */
    int64_t timeout_ns;
    bool subscribe;
    char *user, *password_file;
    char *user_cert, *user_key; /* X.509 user identity */
    bool strict_names;          /* check_names=refuse: host / application URI mismatch refused */
    bool no_names;              /* check_names=off: host and application URI not compared */
    int64_t auth_retry_ns;      /* auth_retry=: wait after a refused login (default 5 min) */
    const char *policy_uri;     /* channel security policy when mode > 1 */
    uint32_t lifetime_ms;       /* requested secure-channel lifetime */
    uint32_t session_ms;        /* requested session timeout */
    uint32_t chunk, max_msg;    /* our receive limits */
    uint32_t queue;             /* monitored item queue size */
    uint32_t max_batch;         /* our cap on nodes per request (server limits apply too) */
    int depth;                  /* browse depth */
    char *node;                 /* browse start node (text), NULL = Objects */
    int mode;                   /* 1 None, 2 Sign, 3 SignAndEncrypt (Basic256Sha256) */
    char pki[512];              /* certificate store (own/, trusted/, rejected/) */
    bool auto_trust;            /* trust_server=auto: trust on first use */
    bool crl_optional;          /* revocation=if_present: a CA without a CRL in pki/crl is accepted */
};

/* What one connection attempt tells the next (connection thread only). */
struct ua_memo {
    char cert_warn[600]; /* the certificate name warning last logged ("" = none) */
    uint32_t refused;    /* the login was refused with this status (0 = it was not) */
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
    bool secure; /* Basic256Sha256 on this channel */
    struct ua_sec sec;
    uint32_t channel_id, token_id, seq, req_id, handle;
    int64_t renew_at;
    uint32_t lifetime_ms;
    bool channel_open, session_open;
    struct ua_nodeid auth;
    uint32_t max_read, max_mi, max_browse;
    struct ua_readid *rids; /* one Read batch (max_read entries), allocated once */
    uint32_t rids_cap;
    uint64_t nreads; /* Read requests sent (metrics: requests per poll cycle) */
    uint32_t pub_ids[UA_PUBLISH_MAX];
    uint32_t npub;
    struct ua_ack acks[64];
    uint32_t nacks;
    char sbuf[4096];
    /* a Publish response that arrived while waiting for another (ua_subscribe.c) */
    void (*on_publish)(struct ua_conn *c, const uint8_t *p, size_t n);
};

static inline int64_t ua_ms_to_ns(double ms) { return (int64_t)(ms * 1e6); }

/* TCP + Hello + OpenSecureChannel + GetEndpoints (+ the secured channel) +
 * CreateSession + ActivateSession.  memo carries what the previous attempt
 * learnt (the certificate warning logged, a refused login). */
int ua_connect(struct ua_conn **out, const struct ua_opts *o, const char *dev_name, uint32_t session_ms,
               struct ua_memo *memo, struct fb_err *err);
/* Polite goodbye (CloseSession, CloseSecureChannel) while the socket works. */
void ua_disconnect(struct ua_conn *c);
void ua_conn_free(struct ua_conn *c);

struct ua_reqhdr ua_reqhdr(struct ua_conn *c, uint32_t timeout_ms);
/* Send c->body[0..n) and wait for its response (c->ra.buf). */
int ua_call(struct ua_conn *c, size_t n, struct fb_err *err);
/* Send a message of `type` without waiting; *rid gets its request id. */
int ua_send_msg(struct ua_conn *c, const char *type, const uint8_t *body, size_t n, uint32_t *rid, struct fb_err *err);
/* Receive one complete message; FB_EEXCEPTION: the server aborted *req_id. */
int ua_recv_msg(struct ua_conn *c, int64_t deadline, uint32_t *req_id, struct fb_err *err);
/* Is rid an outstanding Publish (removed with remove)? */
bool ua_is_publish(struct ua_conn *c, uint32_t rid, bool remove);
/* Renew (request_type 1) or open (0) the secure channel. */
int ua_renew(struct ua_conn *c, uint32_t request_type, struct fb_err *err);
int ua_svc_error(struct ua_conn *c, const char *what, int rc, const struct ua_resphdr *h, struct fb_err *err);
/* Session-level failures mean: reconnect. */
bool ua_session_lost(uint32_t sc);
/* Read attr of nodes[0..n) in batches within the server's limit; cb gets each DataValue. */
int ua_read_attr(struct ua_conn *c, const struct ua_nodeid *const *nodes, uint32_t n, uint32_t attr,
                 uint32_t timestamps, void (*cb)(void *ctx, uint32_t i, const struct ua_datavalue *dv), void *ctx,
                 struct fb_err *err);
/* The server's OperationLimits (nodes per Read, monitored items per call). */
void ua_read_limits(struct ua_conn *c);
#endif
