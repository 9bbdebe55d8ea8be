/* ua_msg.h — OPC UA TCP and SecureConversation framing (policy None) and the
 * service requests / responses the driver uses, without I/O.
 *
 * Frames: every UA TCP message starts with type[3] chunk[1] size u32.
 * HEL/ACK/ERR carry the transport limits; OPN/MSG/CLO carry one chunk of a
 * secure-channel message:
 *   OPN: hdr(8) channelId | policyUri certificate thumbprint | seq reqId | body
 *   MSG/CLO: hdr(8) channelId tokenId | seq reqId | body
 * A service body starts with its binary encoding NodeId (ns 0), then the
 * RequestHeader / ResponseHeader and the fields (Part 4 / Part 6).
 *
 * Responses are decoded into small structs whose strings borrow the message
 * buffer.  Every decoder returns 0, FB_EPROTO (malformed / truncated) or
 * FB_EEXCEPTION when the server answered with a ServiceFault or a bad
 * serviceResult (the status is in the header struct).
 */
#ifndef FB_UA_MSG_H
#define FB_UA_MSG_H
#include "south/opcua/ua_types.h"

#define UA_HDR_LEN 8
#define UA_MSG_HDR_LEN 24 /* MSG: hdr + channel + token + seq + reqId */
#define UA_POLICY_NONE "http://opcfoundation.org/UA/SecurityPolicy#None"
#define UA_POLICY_B256S256 "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
#define UA_POLICY_AES128 "http://opcfoundation.org/UA/SecurityPolicy#Aes128_Sha256_RsaOaep"
#define UA_MIN_BUF 8192

/* service encoding ids (ns 0) */
enum {
    UA_ID_SERVICE_FAULT = 397,
    UA_ID_GETENDPOINTS_REQ = 428,
    UA_ID_GETENDPOINTS_RESP = 431,
    UA_ID_OPN_REQ = 446,
    UA_ID_OPN_RESP = 449,
    UA_ID_CLO_REQ = 452,
    UA_ID_CREATESESSION_REQ = 461,
    UA_ID_CREATESESSION_RESP = 464,
    UA_ID_ACTIVATESESSION_REQ = 467,
    UA_ID_ACTIVATESESSION_RESP = 470,
    UA_ID_CLOSESESSION_REQ = 473,
    UA_ID_CLOSESESSION_RESP = 476,
    UA_ID_BROWSE_REQ = 527,
    UA_ID_BROWSE_RESP = 530,
    UA_ID_BROWSENEXT_REQ = 533,
    UA_ID_BROWSENEXT_RESP = 536,
    UA_ID_TRANSLATE_REQ = 554,
    UA_ID_TRANSLATE_RESP = 557,
    UA_ID_READ_REQ = 631,
    UA_ID_READ_RESP = 634,
    UA_ID_WRITE_REQ = 673,
    UA_ID_WRITE_RESP = 676,
    UA_ID_CREATEMI_REQ = 751,
    UA_ID_CREATEMI_RESP = 754,
    UA_ID_CREATESUB_REQ = 787,
    UA_ID_CREATESUB_RESP = 790,
    UA_ID_PUBLISH_REQ = 826,
    UA_ID_PUBLISH_RESP = 829,
    UA_ID_REPUBLISH_REQ = 832,
    UA_ID_REPUBLISH_RESP = 835,
    UA_ID_DELETESUB_REQ = 847,
    UA_ID_DELETESUB_RESP = 850,
    UA_ID_DATACHANGE_NOTIF = 811,
    UA_ID_STATUSCHANGE_NOTIF = 820,
    UA_ID_DATACHANGE_FILTER = 724,
    UA_ID_ANON_TOKEN = 321,
    UA_ID_USER_TOKEN = 324,
    UA_ID_X509_TOKEN = 327,
};

/* attribute ids */
enum {
    UA_ATTR_NODEID = 1,
    UA_ATTR_NODECLASS = 2,
    UA_ATTR_BROWSENAME = 3,
    UA_ATTR_VALUE = 13,
    UA_ATTR_DATATYPE = 14,
    UA_ATTR_ACCESSLEVEL = 17
};

/* status codes used by name */
#define UA_BAD_TIMEOUT 0x800A0000u
#define UA_BAD_TOO_MANY_OPS 0x80100000u
#define UA_BAD_SESSION_ID_INVALID 0x80250000u
#define UA_BAD_SESSION_CLOSED 0x80260000u
#define UA_BAD_SESSION_NOT_ACTIVATED 0x80270000u
#define UA_BAD_SUBSCRIPTION_ID_INVALID 0x80280000u
#define UA_BAD_NO_SUBSCRIPTION 0x80790000u
#define UA_BAD_MESSAGE_NOT_AVAILABLE 0x807B0000u
#define UA_BAD_TOO_MANY_PUBLISH 0x80780000u
#define UA_BAD_SECURE_CHANNEL_CLOSED 0x80860000u
#define UA_BAD_SECURE_CHANNEL_TOKEN_UNKNOWN 0x80870000u

/* Name of a status code ("BadNodeIdUnknown"), NULL when not in our table. */
const char *ua_status_name(uint32_t sc);
/* Name or "0x80AB0000" into buf (>= 12). */
const char *ua_status_text(uint32_t sc, char buf[16]);

/* ------------------------------------------------------------ UA TCP */
struct ua_limits {
    uint32_t version, recv_buf, send_buf, max_msg, max_chunks;
};

struct ua_frame { /* what ua_frame_parse found in one chunk */
    char type[4]; /* "MSG", "OPN", "CLO", "ACK", "ERR", NUL-terminated */
    char chunk;   /* 'F', 'C', 'A' */
    uint32_t size;
    uint32_t channel_id, token_id; /* token for MSG/CLO */
    struct ua_str policy_uri;      /* OPN */
    uint32_t seq, req_id;
    const uint8_t *body;
    size_t body_len;
};

/* Reads the 8-byte header: returns the frame size, or FB_EPROTO (bad type /
 * size below the header or above max). */
int ua_hdr_peek(const uint8_t *p, size_t n, uint32_t max, char type[4], char *chunk);
size_t ua_hello_build(uint8_t *out, size_t cap, const struct ua_limits *l, const char *url);
int ua_ack_parse(const uint8_t *p, size_t n, struct ua_limits *l);
/* ERR body: status and reason (copied into reason, NUL-terminated). */
int ua_err_parse(const uint8_t *p, size_t n, uint32_t *status, char *reason, size_t cap);
/* One chunk: headers as for its type; for OPN/MSG/CLO fills channel, seq, body. */
int ua_frame_parse(const uint8_t *p, size_t n, struct ua_frame *f);
/* Builds one chunk of type "OPN" (policy None asymmetric header), "MSG" or
 * "CLO" around body[0..n).  Returns the size, 0 if it does not fit. */
size_t ua_chunk_build(uint8_t *out, size_t cap, const char *type, char chunk, uint32_t channel_id, uint32_t token_id,
                      uint32_t seq, uint32_t req_id, const uint8_t *body, size_t n);
/* Body bytes per chunk for a send buffer (MSG: buf − 24). */
static inline size_t ua_chunk_room(const char *type, uint32_t send_buf)
{
    size_t hdr = type[0] == 'O' ? 12 + 4 + sizeof UA_POLICY_NONE - 1 + 8 + 8 : UA_MSG_HDR_LEN;
    return send_buf > hdr ? send_buf - hdr : 0;
}

/* Reassembly of a message from its chunks, with the limits we announced. */
struct ua_reasm {
    uint8_t *buf;
    size_t len, cap;              /* cap = our max message size */
    uint32_t nchunks, max_chunks; /* 0 = unlimited */
    uint32_t req_id;
    bool active;
};
/* Adds a chunk.  Returns 1 when the message is complete (buf/len hold the
 * body), 0 when more chunks follow, FB_ERANGE when a limit is exceeded
 * (message too large / too many chunks), FB_EPROTO on a chunk of another
 * request in the middle of a message, FB_EEXCEPTION on an abort chunk
 * (the partial message is dropped). */
int ua_reasm_add(struct ua_reasm *r, const struct ua_frame *f);

/* ------------------------------------------------------------ services */
struct ua_reqhdr {
    const struct ua_nodeid *auth; /* NULL before the session */
    uint32_t handle;
    uint32_t timeout_ms;
    int64_t ts; /* DateTime */
};
struct ua_resphdr {
    uint32_t type_id; /* the response's encoding id (397 = ServiceFault) */
    uint32_t handle;
    uint32_t result;
};
/* Encoding NodeId + RequestHeader. */
void ua_put_reqhdr(struct ua_enc *e, uint32_t type_id, const struct ua_reqhdr *h);
/* Encoding NodeId + ResponseHeader.  FB_EEXCEPTION when a ServiceFault or a
 * bad serviceResult, FB_EPROTO when malformed or not `expect`. */
int ua_get_resphdr(struct ua_dec *d, uint32_t expect, struct ua_resphdr *h);

/* OpenSecureChannel */
struct ua_token {
    uint32_t channel_id, token_id;
    int64_t created;
    uint32_t lifetime_ms;
    struct ua_str server_nonce; /* borrowed */
};
void ua_opn_req(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t request_type /* 0 issue 1 renew */,
                uint32_t mode /* 1 None */, uint32_t lifetime_ms);
/* The same with a client nonce (secured channels). */
void ua_opn_req_nonce(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t request_type, uint32_t mode,
                      const uint8_t *nonce, int32_t nonce_len, uint32_t lifetime_ms);
int ua_opn_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, struct ua_token *t);
void ua_clo_req(struct ua_enc *e, const struct ua_reqhdr *h);

/* GetEndpoints / endpoints in CreateSession */
#define UA_MAX_ENDPOINTS 16
#define UA_MAX_TOKENS 8
struct ua_token_policy {
    struct ua_str policy_id, policy_uri;
    uint32_t type; /* 0 anonymous 1 user name 2 certificate 3 issued */
};
struct ua_endpoint {
    struct ua_str url, policy_uri, cert, app_uri;
    uint32_t mode;
    uint8_t level;
    uint32_t ntokens;
    struct ua_token_policy tokens[UA_MAX_TOKENS];
};
void ua_getendpoints_req(struct ua_enc *e, const struct ua_reqhdr *h, const char *url);
/* Up to max endpoints are kept (the rest are checked and skipped). */
int ua_getendpoints_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, struct ua_endpoint *eps, uint32_t max,
                         uint32_t *neps);

/* CreateSession / ActivateSession / CloseSession */
struct ua_session_req {
    const char *app_uri, *product_uri, *app_name, *endpoint_url, *session_name;
    const uint8_t *nonce;
    int32_t nonce_len;
    const uint8_t *cert;
    int32_t cert_len;
    double timeout_ms;
};
void ua_createsession_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_session_req *r);
struct ua_session {
    struct ua_nodeid session_id, auth_token; /* borrowed */
    double timeout_ms;
    struct ua_str server_nonce, server_cert;
    uint32_t max_request;
    struct ua_str sig_alg, sig; /* serverSignature over clientCert ‖ clientNonce */
    uint32_t neps;
    struct ua_endpoint eps[UA_MAX_ENDPOINTS];
};
int ua_createsession_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, struct ua_session *s);
/* Anonymous when user is NULL; else a UserNameIdentityToken with the
 * password bytes as given (plain or already encrypted) and the algorithm URI
 * (NULL for plain). */
void ua_activatesession_req(struct ua_enc *e, const struct ua_reqhdr *h, const char *policy_id, const char *user,
                            const uint8_t *pwd, int32_t pwd_len, const char *alg);
/* The same with a clientSignature (secured channels): alg URI and bytes. */
void ua_activatesession_req_sig(struct ua_enc *e, const struct ua_reqhdr *h, const char *sig_alg, const uint8_t *sig,
                                int32_t sig_len, const char *policy_id, const char *user, const uint8_t *pwd,
                                int32_t pwd_len, const char *alg);
/* Any identity: anonymous (user and cert NULL), user name (user, pwd, alg as
 * above) or X.509 (cert = the user's DER certificate; usig = the user token
 * signature over serverCertificate ‖ serverNonce with the user's key, usig_alg
 * its algorithm URI). */
struct ua_identity {
    const char *policy_id;
    const char *user;
    const uint8_t *pwd;
    int32_t pwd_len;
    const char *alg;
    const uint8_t *cert;
    int32_t cert_len;
    const char *usig_alg;
    const uint8_t *usig;
    int32_t usig_len;
};
void ua_activatesession_req_id(struct ua_enc *e, const struct ua_reqhdr *h, const char *sig_alg, const uint8_t *sig,
                               int32_t sig_len, const struct ua_identity *id);
int ua_activatesession_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, struct ua_str *server_nonce);
void ua_closesession_req(struct ua_enc *e, const struct ua_reqhdr *h, bool delete_subs);
int ua_simple_resp(const uint8_t *p, size_t n, uint32_t expect, struct ua_resphdr *h);

/* Read */
struct ua_readid {
    const struct ua_nodeid *node;
    uint32_t attr;
};
void ua_read_req(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t timestamps, const struct ua_readid *ids,
                 uint32_t n);
/* Positions the decoder at the first DataValue of the results and returns
 * their count in *n (decode each with ua_get_datavalue). */
int ua_read_resp(struct ua_dec *d, struct ua_resphdr *h, int32_t *n);

/* Write (one node, value attribute) */
void ua_write_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_nodeid *node,
                  const struct ua_variant *v);
int ua_write_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, uint32_t *status);

/* Browse / BrowseNext */
struct ua_ref {
    struct ua_nodeid ref_type;
    bool forward;
    struct ua_nodeid target;
    uint32_t server_index;
    struct ua_qname browse_name;
    struct ua_ltext display_name;
    uint32_t node_class;
    struct ua_nodeid type_def;
};
void ua_browse_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_nodeid *node, uint32_t max_refs);
void ua_browsenext_req(struct ua_enc *e, const struct ua_reqhdr *h, bool release, struct ua_str cp);
/* One BrowseResult: status, continuation point, and refs positioned for
 * ua_get_ref (count in *nrefs). */
int ua_browse_resp(struct ua_dec *d, uint32_t expect, struct ua_resphdr *h, uint32_t *status, struct ua_str *cp,
                   int32_t *nrefs);
void ua_get_ref(struct ua_dec *d, struct ua_ref *r);

/* TranslateBrowsePathsToNodeIds: paths are "/0:Objects/2:Demo/2:Temp" style
 * text (see ua_path_parse); start at Objects unless the path starts at the root. */
#define UA_MAX_PATH 32
struct ua_relpath {
    uint32_t n;
    struct ua_qname el[UA_MAX_PATH];
    uint32_t start; /* numeric ns 0 start node (84 Root, 85 Objects) */
    char *own;      /* names point into this */
};
int ua_path_parse(const char *text, struct ua_relpath *p, struct fb_err *err);
void ua_path_clear(struct ua_relpath *p);
void ua_translate_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_relpath *const *paths, uint32_t n);
/* Positions at the results; each with ua_get_translate_result. */
int ua_translate_resp(struct ua_dec *d, struct ua_resphdr *h, int32_t *n);
void ua_get_translate_result(struct ua_dec *d, uint32_t *status, struct ua_nodeid *target);

/* Subscriptions */
struct ua_sub_params {
    double interval_ms;
    uint32_t lifetime_count, keepalive_count, max_notif;
};
void ua_createsub_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_sub_params *p);
int ua_createsub_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, uint32_t *sub_id, struct ua_sub_params *rev);
struct ua_mon_item {
    const struct ua_nodeid *node;
    uint32_t handle;
    double sampling_ms;
    uint32_t queue;
    uint32_t deadband_type; /* 0 none, 1 absolute, 2 percent */
    double deadband;
};
void ua_createmi_req(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t sub_id, const struct ua_mon_item *items,
                     uint32_t n);
/* Positions at the results; each with ua_get_mi_result. */
int ua_createmi_resp(struct ua_dec *d, struct ua_resphdr *h, int32_t *n);
void ua_get_mi_result(struct ua_dec *d, uint32_t *status, uint32_t *item_id);
struct ua_ack {
    uint32_t sub_id, seq;
};
void ua_publish_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_ack *acks, uint32_t n);
void ua_republish_req(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t sub_id, uint32_t seq);
void ua_deletesub_req(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t sub_id);
/* A notification message (from Publish or Republish). */
struct ua_notif_msg {
    uint32_t sub_id; /* Publish only */
    uint32_t seq;
    bool more;
    int64_t publish_time;
    int32_t ndata; /* notification ExtensionObjects, positioned for ua_get_notification */
};
int ua_publish_resp(struct ua_dec *d, uint32_t expect, struct ua_resphdr *h, struct ua_notif_msg *m);
/* Calls cb for each data change item (client handle + DataValue) of the
 * next notification ExtensionObject; status changes are reported through
 * *status_change (0 when none).  Other notification types are skipped. */
int ua_get_notification(struct ua_dec *d, void (*cb)(void *ctx, uint32_t handle, const struct ua_datavalue *dv),
                        void *ctx, uint32_t *status_change);
#endif
