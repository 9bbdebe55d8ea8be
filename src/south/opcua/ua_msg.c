/* ua_msg.c — UA TCP / SecureConversation framing and service codecs (see
 * ua_msg.h for the layouts).  No I/O: opcua.c moves the bytes.
 *
 * The encoders write into a caller's fixed buffer through struct ua_enc (an
 * overflow is reported once by e->err); the decoders read through struct
 * ua_dec and give up with FB_EPROTO on the first inconsistency, so every
 * truncation of a valid message is rejected without reading past its end.
 */
#include "south/opcua/ua_msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ status names */
static const struct {
    uint32_t code;
    const char *name;
} status_names[] = {
    {0x80010000u, "BadUnexpectedError"},
    {0x80020000u, "BadInternalError"},
    {0x80030000u, "BadOutOfMemory"},
    {0x80040000u, "BadResourceUnavailable"},
    {0x80050000u, "BadCommunicationError"},
    {0x80060000u, "BadEncodingError"},
    {0x80070000u, "BadDecodingError"},
    {0x80080000u, "BadEncodingLimitsExceeded"},
    {0x80090000u, "BadRequestTooLarge"},
    {0x800A0000u, "BadTimeout"},
    {0x800B0000u, "BadServiceUnsupported"},
    {0x800C0000u, "BadShutdown"},
    {0x800D0000u, "BadServerNotConnected"},
    {0x800E0000u, "BadServerHalted"},
    {0x800F0000u, "BadNothingToDo"},
    {0x80100000u, "BadTooManyOperations"},
    {0x80120000u, "BadCertificateInvalid"},
    {0x80130000u, "BadSecurityChecksFailed"},
    {0x80140000u, "BadCertificateTimeInvalid"},
    {0x80150000u, "BadCertificateIssuerTimeInvalid"},
    {0x80160000u, "BadCertificateHostNameInvalid"},
    {0x80170000u, "BadCertificateUriInvalid"},
    {0x80180000u, "BadCertificateUseNotAllowed"},
    {0x80190000u, "BadCertificateIssuerUseNotAllowed"},
    {0x801A0000u, "BadCertificateUntrusted"},
    {0x801B0000u, "BadCertificateRevocationUnknown"},
    {0x801C0000u, "BadCertificateIssuerRevocationUnknown"},
    {0x801D0000u, "BadCertificateRevoked"},
    {0x801E0000u, "BadCertificateIssuerRevoked"},
    {0x801F0000u, "BadUserAccessDenied"},
    {0x80200000u, "BadIdentityTokenInvalid"},
    {0x80210000u, "BadIdentityTokenRejected"},
    {0x80220000u, "BadSecureChannelIdInvalid"},
    {0x80230000u, "BadInvalidTimestamp"},
    {0x80240000u, "BadNonceInvalid"},
    {0x80250000u, "BadSessionIdInvalid"},
    {0x80260000u, "BadSessionClosed"},
    {0x80270000u, "BadSessionNotActivated"},
    {0x80280000u, "BadSubscriptionIdInvalid"},
    {0x802A0000u, "BadRequestHeaderInvalid"},
    {0x802B0000u, "BadTimestampsToReturnInvalid"},
    {0x80310000u, "BadNoCommunication"},
    {0x80320000u, "BadWaitingForInitialData"},
    {0x80330000u, "BadNodeIdInvalid"},
    {0x80340000u, "BadNodeIdUnknown"},
    {0x80350000u, "BadAttributeIdInvalid"},
    {0x80360000u, "BadIndexRangeInvalid"},
    {0x80370000u, "BadIndexRangeNoData"},
    {0x80380000u, "BadDataEncodingInvalid"},
    {0x803A0000u, "BadNotReadable"},
    {0x803B0000u, "BadNotWritable"},
    {0x803C0000u, "BadOutOfRange"},
    {0x803D0000u, "BadNotSupported"},
    {0x803E0000u, "BadNotFound"},
    {0x80400000u, "BadMonitoringModeInvalid"},
    {0x80410000u, "BadMonitoredItemIdInvalid"},
    {0x80440000u, "BadFilterNotAllowed"},
    {0x804A0000u, "BadContinuationPointInvalid"},
    {0x804B0000u, "BadNoContinuationPoints"},
    {0x804D0000u, "BadReferenceTypeIdInvalid"},
    {0x80600000u, "BadBrowseNameInvalid"},
    {0x806F0000u, "BadNoMatch"},
    {0x80740000u, "BadTypeMismatch"},
    {0x80780000u, "BadTooManyPublishRequests"},
    {0x80790000u, "BadNoSubscription"},
    {0x807A0000u, "BadSequenceNumberUnknown"},
    {0x807B0000u, "BadMessageNotAvailable"},
    {0x807E0000u, "BadTcpServerTooBusy"},
    {0x807F0000u, "BadTcpMessageTypeInvalid"},
    {0x80800000u, "BadTcpSecureChannelUnknown"},
    {0x80810000u, "BadTcpMessageTooLarge"},
    {0x80820000u, "BadTcpNotEnoughResources"},
    {0x80830000u, "BadTcpInternalError"},
    {0x80840000u, "BadTcpEndpointUrlInvalid"},
    {0x80850000u, "BadRequestInterrupted"},
    {0x80860000u, "BadSecureChannelClosed"},
    {0x80870000u, "BadSecureChannelTokenUnknown"},
    {0x80880000u, "BadSequenceNumberInvalid"},
    {0x80890000u, "BadConfigurationError"},
    {0x808A0000u, "BadNotConnected"},
    {0x808B0000u, "BadDeviceFailure"},
    {0x808C0000u, "BadSensorFailure"},
    {0x80AB0000u, "BadInvalidArgument"},
    {0x80AC0000u, "BadConnectionRejected"},
    {0x80AD0000u, "BadDisconnect"},
    {0x80AE0000u, "BadConnectionClosed"},
    {0x80B80000u, "BadRequestTooLarge"},
    {0x80B90000u, "BadResponseTooLarge"},
    {0x80E50000u, "BadMaxAgeInvalid"},
    {0x40900000u, "UncertainLastUsableValue"},
    {0x40930000u, "UncertainSensorNotAccurate"},
    {0x40940000u, "UncertainEngineeringUnitsExceeded"},
    {0x408F0000u, "UncertainNoCommunicationLastUsableValue"},
    {0x00000000u, "Good"},
};

const char *ua_status_name(uint32_t sc)
{
    sc &= 0xFFFF0000u;
    for (size_t i = 0; i < sizeof status_names / sizeof status_names[0]; i++)
        if (status_names[i].code == sc) return status_names[i].name;
    return NULL;
}

const char *ua_status_text(uint32_t sc, char buf[16])
{
    const char *n = ua_status_name(sc);
    if (n) return n;
    snprintf(buf, 16, "0x%08X", (unsigned)sc);
    return buf;
}

/* ------------------------------------------------------------ UA TCP */
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int ua_hdr_peek(const uint8_t *p, size_t n, uint32_t max, char type[4], char *chunk)
{
    if (n < UA_HDR_LEN) return FB_EPROTO;
    memcpy(type, p, 3);
    type[3] = 0;
    static const char *const types[] = {"HEL", "ACK", "ERR", "RHE", "OPN", "MSG", "CLO"};
    bool known = false;
    for (size_t i = 0; i < 7; i++)
        if (!memcmp(type, types[i], 3)) known = true;
    if (!known) return FB_EPROTO;
    *chunk = (char)p[3];
    if (*chunk != 'F' && *chunk != 'C' && *chunk != 'A') return FB_EPROTO;
    uint32_t size = rd32(p + 4);
    if (size < UA_HDR_LEN || (max && size > max)) return FB_EPROTO;
    return (int)size;
}

size_t ua_hello_build(uint8_t *out, size_t cap, const struct ua_limits *l, const char *url)
{
    struct ua_enc e;
    ua_enc_init(&e, out, cap);
    ua_put_raw(&e, "HELF", 4);
    ua_put_u32(&e, 0);
    ua_put_u32(&e, l->version);
    ua_put_u32(&e, l->recv_buf);
    ua_put_u32(&e, l->send_buf);
    ua_put_u32(&e, l->max_msg);
    ua_put_u32(&e, l->max_chunks);
    ua_put_cstr(&e, url);
    if (e.err) return 0;
    out[4] = (uint8_t)e.len, out[5] = (uint8_t)(e.len >> 8), out[6] = (uint8_t)(e.len >> 16),
    out[7] = (uint8_t)(e.len >> 24);
    return e.len;
}

int ua_ack_parse(const uint8_t *p, size_t n, struct ua_limits *l)
{
    if (n < 28 || memcmp(p, "ACKF", 4) || rd32(p + 4) != n) return FB_EPROTO;
    struct ua_dec d;
    ua_dec_init(&d, p + 8, n - 8);
    l->version = ua_get_u32(&d);
    l->recv_buf = ua_get_u32(&d);
    l->send_buf = ua_get_u32(&d);
    l->max_msg = ua_get_u32(&d);
    l->max_chunks = ua_get_u32(&d);
    if (d.err || l->recv_buf < UA_MIN_BUF || l->send_buf < UA_MIN_BUF) return FB_EPROTO;
    return 0;
}

int ua_err_parse(const uint8_t *p, size_t n, uint32_t *status, char *reason, size_t cap)
{
    if (n < 16 || memcmp(p, "ERR", 3) || rd32(p + 4) != n) return FB_EPROTO;
    struct ua_dec d;
    ua_dec_init(&d, p + 8, n - 8);
    *status = ua_get_u32(&d);
    struct ua_str s = ua_get_str(&d);
    if (d.err) return FB_EPROTO;
    if (cap) {
        size_t k = s.len > 0 ? (size_t)s.len : 0;
        if (k >= cap) k = cap - 1;
        if (k) memcpy(reason, s.p, k);
        reason[k] = 0;
        for (size_t i = 0; i < k; i++) /* the log is line-based */
            if ((unsigned char)reason[i] < 0x20) reason[i] = ' ';
    }
    return 0;
}

int ua_frame_parse(const uint8_t *p, size_t n, struct ua_frame *f)
{
    memset(f, 0, sizeof *f);
    int size = ua_hdr_peek(p, n, 0, f->type, &f->chunk);
    if (size < 0 || (size_t)size != n) return FB_EPROTO;
    f->size = (uint32_t)size;
    bool opn = !strcmp(f->type, "OPN"), msg = !strcmp(f->type, "MSG") || !strcmp(f->type, "CLO");
    if (!opn && !msg) return FB_EPROTO;
    struct ua_dec d;
    ua_dec_init(&d, p + 8, n - 8);
    f->channel_id = ua_get_u32(&d);
    if (opn) {
        f->policy_uri = ua_get_str(&d);
        ua_get_str(&d); /* sender certificate */
        ua_get_str(&d); /* receiver thumbprint */
    } else {
        f->token_id = ua_get_u32(&d);
    }
    f->seq = ua_get_u32(&d);
    f->req_id = ua_get_u32(&d);
    if (d.err) return FB_EPROTO;
    f->body = p + 8 + d.pos;
    f->body_len = n - 8 - d.pos;
    return 0;
}

size_t ua_chunk_build(uint8_t *out, size_t cap, const char *type, char chunk, uint32_t channel_id, uint32_t token_id,
                      uint32_t seq, uint32_t req_id, const uint8_t *body, size_t n)
{
    struct ua_enc e;
    ua_enc_init(&e, out, cap);
    ua_put_raw(&e, type, 3);
    ua_put_u8(&e, (uint8_t)chunk);
    ua_put_u32(&e, 0);
    ua_put_u32(&e, channel_id);
    if (type[0] == 'O') {
        ua_put_cstr(&e, UA_POLICY_NONE);
        ua_put_i32(&e, -1); /* certificate */
        ua_put_i32(&e, -1); /* thumbprint */
    } else {
        ua_put_u32(&e, token_id);
    }
    ua_put_u32(&e, seq);
    ua_put_u32(&e, req_id);
    ua_put_raw(&e, body, n);
    if (e.err) return 0;
    out[4] = (uint8_t)e.len, out[5] = (uint8_t)(e.len >> 8), out[6] = (uint8_t)(e.len >> 16),
    out[7] = (uint8_t)(e.len >> 24);
    return e.len;
}

int ua_reasm_add(struct ua_reasm *r, const struct ua_frame *f)
{
    if (f->chunk == 'A') {
        bool mine = r->active && f->req_id == r->req_id;
        r->active = false;
        r->len = 0;
        r->nchunks = 0;
        (void)mine;
        return FB_EEXCEPTION;
    }
    if (!r->active) {
        r->active = true;
        r->len = 0;
        r->nchunks = 0;
        r->req_id = f->req_id;
    } else if (f->req_id != r->req_id) {
        r->active = false;
        return FB_EPROTO;
    }
    r->nchunks++;
    if ((r->max_chunks && r->nchunks > r->max_chunks) || f->body_len > r->cap - r->len) {
        r->active = false;
        return FB_ERANGE;
    }
    memcpy(r->buf + r->len, f->body, f->body_len);
    r->len += f->body_len;
    if (f->chunk == 'F') {
        r->active = false;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ headers */
void ua_put_reqhdr(struct ua_enc *e, uint32_t type_id, const struct ua_reqhdr *h)
{
    ua_put_nodeid_num(e, 0, type_id);
    ua_put_nodeid(e, h->auth);
    ua_put_u64(e, (uint64_t)h->ts);
    ua_put_u32(e, h->handle);
    ua_put_u32(e, 0);  /* returnDiagnostics */
    ua_put_i32(e, -1); /* auditEntryId */
    ua_put_u32(e, h->timeout_ms);
    ua_put_nodeid_num(e, 0, 0); /* additionalHeader: null ExtensionObject */
    ua_put_u8(e, 0);
}

int ua_get_resphdr(struct ua_dec *d, uint32_t expect, struct ua_resphdr *h)
{
    memset(h, 0, sizeof *h);
    struct ua_nodeid id;
    ua_get_nodeid(d, &id);
    if (d->err || id.ns != 0 || id.kind != UA_NID_NUMERIC) return FB_EPROTO;
    h->type_id = id.num;
    ua_get_u64(d); /* timestamp */
    h->handle = ua_get_u32(d);
    h->result = ua_get_u32(d);
    ua_skip(d, UA_DIAGINFO);
    ua_skip_array(d, UA_STRING); /* stringTable */
    struct ua_nodeid t;
    uint8_t enc;
    struct ua_str body;
    ua_get_extobj(d, &t, &enc, &body);
    if (d->err) return FB_EPROTO;
    if (h->type_id == UA_ID_SERVICE_FAULT) {
        if (!(h->result & 0x80000000u)) h->result = 0x80010000u;
        return FB_EEXCEPTION;
    }
    if (h->type_id != expect) return FB_EPROTO;
    if (h->result & 0x80000000u) return FB_EEXCEPTION;
    return 0;
}

static int begin(struct ua_dec *d, const uint8_t *p, size_t n, uint32_t expect, struct ua_resphdr *h)
{
    ua_dec_init(d, p, n);
    return ua_get_resphdr(d, expect, h);
}

/* ------------------------------------------------------------ channel */
void ua_opn_req_nonce(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t request_type, uint32_t mode,
                      const uint8_t *nonce, int32_t nonce_len, uint32_t lifetime_ms)
{
    ua_put_reqhdr(e, UA_ID_OPN_REQ, h);
    ua_put_u32(e, 0); /* protocol version */
    ua_put_u32(e, request_type);
    ua_put_u32(e, mode);
    if (nonce)
        ua_put_str(e, (const char *)nonce, nonce_len);
    else
        ua_put_i32(e, 0); /* clientNonce: empty for None */
    ua_put_u32(e, lifetime_ms);
}

void ua_opn_req(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t request_type, uint32_t mode, uint32_t lifetime_ms)
{
    ua_opn_req_nonce(e, h, request_type, mode, NULL, 0, lifetime_ms);
}

int ua_opn_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, struct ua_token *t)
{
    struct ua_dec d;
    int rc = begin(&d, p, n, UA_ID_OPN_RESP, h);
    if (rc) return rc;
    ua_get_u32(&d); /* server protocol version */
    t->channel_id = ua_get_u32(&d);
    t->token_id = ua_get_u32(&d);
    t->created = (int64_t)ua_get_u64(&d);
    t->lifetime_ms = ua_get_u32(&d);
    t->server_nonce = ua_get_str(&d);
    return d.err ? FB_EPROTO : 0;
}

void ua_clo_req(struct ua_enc *e, const struct ua_reqhdr *h) { ua_put_reqhdr(e, UA_ID_CLO_REQ, h); }

/* ------------------------------------------------------------ endpoints */
static void get_appdesc(struct ua_dec *d, struct ua_str *app_uri)
{
    struct ua_str u = ua_get_str(d); /* applicationUri */
    if (app_uri) *app_uri = u;
    ua_get_str(d);               /* productUri */
    ua_skip(d, UA_LTEXT);        /* applicationName */
    ua_get_u32(d);               /* applicationType */
    ua_get_str(d);               /* gatewayServerUri */
    ua_get_str(d);               /* discoveryProfileUri */
    ua_skip_array(d, UA_STRING); /* discoveryUrls */
}

static void get_endpoint(struct ua_dec *d, struct ua_endpoint *ep)
{
    memset(ep, 0, sizeof *ep);
    ep->url = ua_get_str(d);
    get_appdesc(d, &ep->app_uri);
    ep->cert = ua_get_str(d);
    ep->mode = ua_get_u32(d);
    ep->policy_uri = ua_get_str(d);
    int32_t nt = ua_get_count(d);
    for (int32_t i = 0; i < nt && !d->err; i++) {
        struct ua_token_policy tp;
        tp.policy_id = ua_get_str(d);
        tp.type = ua_get_u32(d);
        ua_get_str(d); /* issuedTokenType */
        ua_get_str(d); /* issuerEndpointUrl */
        tp.policy_uri = ua_get_str(d);
        if (ep->ntokens < UA_MAX_TOKENS) ep->tokens[ep->ntokens++] = tp;
    }
    ua_get_str(d); /* transportProfileUri */
    ep->level = ua_get_u8(d);
}

static void get_endpoints(struct ua_dec *d, struct ua_endpoint *eps, uint32_t max, uint32_t *neps)
{
    int32_t n = ua_get_count(d);
    *neps = 0;
    for (int32_t i = 0; i < n && !d->err; i++) {
        struct ua_endpoint tmp;
        get_endpoint(d, *neps < max ? &eps[*neps] : &tmp);
        if (*neps < max) (*neps)++;
    }
}

void ua_getendpoints_req(struct ua_enc *e, const struct ua_reqhdr *h, const char *url)
{
    ua_put_reqhdr(e, UA_ID_GETENDPOINTS_REQ, h);
    ua_put_cstr(e, url);
    ua_put_i32(e, 0); /* localeIds */
    ua_put_i32(e, 0); /* profileUris */
}

int ua_getendpoints_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, struct ua_endpoint *eps, uint32_t max,
                         uint32_t *neps)
{
    struct ua_dec d;
    int rc = begin(&d, p, n, UA_ID_GETENDPOINTS_RESP, h);
    if (rc) return rc;
    get_endpoints(&d, eps, max, neps);
    return d.err ? FB_EPROTO : 0;
}

/* ------------------------------------------------------------ session */
void ua_createsession_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_session_req *r)
{
    ua_put_reqhdr(e, UA_ID_CREATESESSION_REQ, h);
    /* ApplicationDescription */
    ua_put_cstr(e, r->app_uri);
    ua_put_cstr(e, r->product_uri);
    struct ua_ltext name = {{NULL, -1}, {r->app_name, (int32_t)strlen(r->app_name)}};
    ua_put_ltext(e, &name);
    ua_put_u32(e, 1);  /* Client */
    ua_put_i32(e, -1); /* gatewayServerUri */
    ua_put_i32(e, -1); /* discoveryProfileUri */
    ua_put_i32(e, 0);  /* discoveryUrls */
    ua_put_i32(e, -1); /* serverUri */
    ua_put_cstr(e, r->endpoint_url);
    ua_put_cstr(e, r->session_name);
    ua_put_str(e, (const char *)r->nonce, r->nonce ? r->nonce_len : -1);
    ua_put_str(e, (const char *)r->cert, r->cert ? r->cert_len : -1);
    ua_put_f64(e, r->timeout_ms);
    ua_put_u32(e, 0); /* maxResponseMessageSize: no limit beyond the transport's */
}

int ua_createsession_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, struct ua_session *s)
{
    struct ua_dec d;
    memset(s, 0, sizeof *s);
    int rc = begin(&d, p, n, UA_ID_CREATESESSION_RESP, h);
    if (rc) return rc;
    ua_get_nodeid(&d, &s->session_id);
    ua_get_nodeid(&d, &s->auth_token);
    s->timeout_ms = ua_get_f64(&d);
    s->server_nonce = ua_get_str(&d);
    s->server_cert = ua_get_str(&d);
    get_endpoints(&d, s->eps, UA_MAX_ENDPOINTS, &s->neps);
    int32_t nsw = ua_get_count(&d); /* serverSoftwareCertificates */
    for (int32_t i = 0; i < nsw && !d.err; i++) {
        ua_get_str(&d);
        ua_get_str(&d);
    }
    s->sig_alg = ua_get_str(&d);
    s->sig = ua_get_str(&d);
    s->max_request = ua_get_u32(&d);
    return d.err ? FB_EPROTO : 0;
}

void ua_activatesession_req(struct ua_enc *e, const struct ua_reqhdr *h, const char *policy_id, const char *user,
                            const uint8_t *pwd, int32_t pwd_len, const char *alg)
{
    ua_activatesession_req_sig(e, h, NULL, NULL, 0, policy_id, user, pwd, pwd_len, alg);
}

void ua_activatesession_req_sig(struct ua_enc *e, const struct ua_reqhdr *h, const char *sig_alg, const uint8_t *sig,
                                int32_t sig_len, const char *policy_id, const char *user, const uint8_t *pwd,
                                int32_t pwd_len, const char *alg)
{
    struct ua_identity id = {.policy_id = policy_id, .user = user, .pwd = pwd, .pwd_len = pwd_len, .alg = alg};
    ua_activatesession_req_id(e, h, sig_alg, sig, sig_len, &id);
}

void ua_activatesession_req_id(struct ua_enc *e, const struct ua_reqhdr *h, const char *sig_alg, const uint8_t *sig,
                               int32_t sig_len, const struct ua_identity *id)
{
    ua_put_reqhdr(e, UA_ID_ACTIVATESESSION_REQ, h);
    ua_put_cstr(e, sig_alg);                              /* clientSignature.algorithm */
    ua_put_str(e, (const char *)sig, sig ? sig_len : -1); /* clientSignature.signature */
    ua_put_i32(e, 0);                                     /* clientSoftwareCertificates */
    ua_put_i32(e, 0);                                     /* localeIds */
    /* userIdentityToken: ExtensionObject with a binary body; the length is patched */
    ua_put_nodeid_num(e, 0, id->cert ? UA_ID_X509_TOKEN : id->user ? UA_ID_USER_TOKEN : UA_ID_ANON_TOKEN);
    ua_put_u8(e, 1);
    size_t at = e->len;
    ua_put_u32(e, 0);
    size_t start = e->len;
    ua_put_cstr(e, id->policy_id);
    if (id->cert) {
        ua_put_str(e, (const char *)id->cert, id->cert_len); /* certificateData */
    } else if (id->user) {
        ua_put_cstr(e, id->user);
        ua_put_str(e, (const char *)id->pwd, id->pwd ? id->pwd_len : -1);
        ua_put_cstr(e, id->alg);
    }
    if (!e->err) {
        uint32_t len = (uint32_t)(e->len - start);
        e->p[at] = (uint8_t)len, e->p[at + 1] = (uint8_t)(len >> 8), e->p[at + 2] = (uint8_t)(len >> 16),
        e->p[at + 3] = (uint8_t)(len >> 24);
    }
    ua_put_cstr(e, id->usig_alg);                                        /* userTokenSignature.algorithm */
    ua_put_str(e, (const char *)id->usig, id->usig ? id->usig_len : -1); /* userTokenSignature.signature */
}

int ua_activatesession_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, struct ua_str *server_nonce)
{
    struct ua_dec d;
    int rc = begin(&d, p, n, UA_ID_ACTIVATESESSION_RESP, h);
    if (rc) return rc;
    *server_nonce = ua_get_str(&d);
    ua_skip_array(&d, UA_STATUSCODE);
    ua_skip_array(&d, UA_DIAGINFO);
    return d.err ? FB_EPROTO : 0;
}

void ua_closesession_req(struct ua_enc *e, const struct ua_reqhdr *h, bool delete_subs)
{
    ua_put_reqhdr(e, UA_ID_CLOSESESSION_REQ, h);
    ua_put_bool(e, delete_subs);
}

int ua_simple_resp(const uint8_t *p, size_t n, uint32_t expect, struct ua_resphdr *h)
{
    struct ua_dec d;
    return begin(&d, p, n, expect, h);
}

/* ------------------------------------------------------------ read / write */
void ua_read_req(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t timestamps, const struct ua_readid *ids,
                 uint32_t n)
{
    ua_put_reqhdr(e, UA_ID_READ_REQ, h);
    ua_put_f64(e, 0); /* maxAge: current value */
    ua_put_u32(e, timestamps);
    ua_put_i32(e, (int32_t)n);
    for (uint32_t i = 0; i < n; i++) {
        ua_put_nodeid(e, ids[i].node);
        ua_put_u32(e, ids[i].attr);
        ua_put_i32(e, -1); /* indexRange */
        ua_put_u16(e, 0);  /* dataEncoding: QualifiedName 0:null */
        ua_put_i32(e, -1);
    }
}

int ua_read_resp(struct ua_dec *d, struct ua_resphdr *h, int32_t *n)
{
    int rc = ua_get_resphdr(d, UA_ID_READ_RESP, h);
    if (rc) return rc;
    *n = ua_get_count(d);
    return d->err ? FB_EPROTO : 0;
}

void ua_write_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_nodeid *node, const struct ua_variant *v)
{
    ua_put_reqhdr(e, UA_ID_WRITE_REQ, h);
    ua_put_i32(e, 1);
    ua_put_nodeid(e, node);
    ua_put_u32(e, UA_ATTR_VALUE);
    ua_put_i32(e, -1);
    struct ua_datavalue dv = {.mask = UA_DV_VALUE, .value = *v};
    ua_put_datavalue(e, &dv);
}

int ua_write_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, uint32_t *status)
{
    struct ua_dec d;
    int rc = begin(&d, p, n, UA_ID_WRITE_RESP, h);
    if (rc) return rc;
    int32_t k = ua_get_count(&d);
    if (k != 1) return FB_EPROTO;
    *status = ua_get_u32(&d);
    return d.err ? FB_EPROTO : 0;
}

/* ------------------------------------------------------------ browse */
void ua_browse_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_nodeid *node, uint32_t max_refs)
{
    ua_put_reqhdr(e, UA_ID_BROWSE_REQ, h);
    ua_put_nodeid_num(e, 0, 0); /* view */
    ua_put_u64(e, 0);
    ua_put_u32(e, 0);
    ua_put_u32(e, max_refs);
    ua_put_i32(e, 1);
    ua_put_nodeid(e, node);
    ua_put_u32(e, 0);            /* forward */
    ua_put_nodeid_num(e, 0, 33); /* HierarchicalReferences */
    ua_put_bool(e, true);
    ua_put_u32(e, 0);    /* all node classes */
    ua_put_u32(e, 0x3F); /* all result fields */
}

void ua_browsenext_req(struct ua_enc *e, const struct ua_reqhdr *h, bool release, struct ua_str cp)
{
    ua_put_reqhdr(e, UA_ID_BROWSENEXT_REQ, h);
    ua_put_bool(e, release);
    ua_put_i32(e, 1);
    ua_put_str(e, cp.p, cp.len);
}

int ua_browse_resp(struct ua_dec *d, uint32_t expect, struct ua_resphdr *h, uint32_t *status, struct ua_str *cp,
                   int32_t *nrefs)
{
    int rc = ua_get_resphdr(d, expect, h);
    if (rc) return rc;
    if (ua_get_count(d) != 1) return FB_EPROTO;
    *status = ua_get_u32(d);
    *cp = ua_get_str(d);
    *nrefs = ua_get_count(d);
    return d->err ? FB_EPROTO : 0;
}

void ua_get_ref(struct ua_dec *d, struct ua_ref *r)
{
    ua_get_nodeid(d, &r->ref_type);
    r->forward = ua_get_bool(d);
    ua_get_expnodeid(d, &r->target, NULL, &r->server_index);
    ua_get_qname(d, &r->browse_name);
    ua_get_ltext(d, &r->display_name);
    r->node_class = ua_get_u32(d);
    ua_get_expnodeid(d, &r->type_def, NULL, NULL);
}

/* ------------------------------------------------------------ browse paths */
int ua_path_parse(const char *text, struct ua_relpath *p, struct fb_err *err)
{
    memset(p, 0, sizeof *p);
    if (text[0] != '/') return fb_err_set(err, FB_EINVAL, "a browse path starts with '/' (/Objects/2:Demo/2:Temp)");
    size_t n = strlen(text);
    p->own = malloc(n + 1);
    if (!p->own) return fb_err_set(err, FB_ENOMEM, "out of memory");
    memcpy(p->own, text, n + 1);
    char *s = p->own + 1;
    p->start = 84; /* Root */
    bool first = true;
    while (*s) {
        char *slash = strchr(s, '/');
        if (slash) *slash = 0;
        if (!*s) {
            ua_path_clear(p);
            return fb_err_set(err, FB_EINVAL, "empty element in browse path '%s'", text);
        }
        uint16_t ns = 0;
        char *name = s, *colon = strchr(s, ':');
        if (colon) {
            char *end;
            unsigned long v = strtoul(s, &end, 10);
            if (end == colon && end != s && v <= 65535) {
                ns = (uint16_t)v;
                name = colon + 1;
            }
        }
        if (first && ns == 0 && !strcmp(name, "Objects")) {
            p->start = 85; /* begin at Objects directly */
        } else if (first && ns == 0 && !strcmp(name, "Root")) {
            p->start = 84;
        } else {
            if (p->n >= UA_MAX_PATH) {
                ua_path_clear(p);
                return fb_err_set(err, FB_EINVAL, "browse path '%s' has more than %d elements", text, UA_MAX_PATH);
            }
            p->el[p->n].ns = ns;
            p->el[p->n].name = (struct ua_str){name, (int32_t)strlen(name)};
            p->n++;
        }
        first = false;
        if (!slash) break;
        s = slash + 1;
        if (!*s) break; /* trailing slash */
    }
    if (!p->n) {
        ua_path_clear(p);
        return fb_err_set(err, FB_EINVAL, "browse path '%s' names no node below its start", text);
    }
    return 0;
}

void ua_path_clear(struct ua_relpath *p)
{
    free(p->own);
    memset(p, 0, sizeof *p);
}

void ua_translate_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_relpath *const *paths, uint32_t n)
{
    ua_put_reqhdr(e, UA_ID_TRANSLATE_REQ, h);
    ua_put_i32(e, (int32_t)n);
    for (uint32_t i = 0; i < n; i++) {
        const struct ua_relpath *p = paths[i];
        ua_put_nodeid_num(e, 0, p->start);
        ua_put_i32(e, (int32_t)p->n);
        for (uint32_t k = 0; k < p->n; k++) {
            ua_put_nodeid_num(e, 0, 33); /* HierarchicalReferences */
            ua_put_bool(e, false);
            ua_put_bool(e, true);
            ua_put_qname(e, &p->el[k]);
        }
    }
}

int ua_translate_resp(struct ua_dec *d, struct ua_resphdr *h, int32_t *n)
{
    int rc = ua_get_resphdr(d, UA_ID_TRANSLATE_RESP, h);
    if (rc) return rc;
    *n = ua_get_count(d);
    return d->err ? FB_EPROTO : 0;
}

void ua_get_translate_result(struct ua_dec *d, uint32_t *status, struct ua_nodeid *target)
{
    *status = ua_get_u32(d);
    int32_t nt = ua_get_count(d);
    memset(target, 0, sizeof *target);
    for (int32_t i = 0; i < nt && !d->err; i++) {
        struct ua_nodeid t;
        uint32_t server;
        ua_get_expnodeid(d, &t, NULL, &server);
        ua_get_u32(d); /* remainingPathIndex */
        if (i == 0) *target = t;
    }
    if (!(*status & 0x80000000u) && nt == 0) *status = 0x806F0000u; /* BadNoMatch */
}

/* ------------------------------------------------------------ subscriptions */
void ua_createsub_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_sub_params *p)
{
    ua_put_reqhdr(e, UA_ID_CREATESUB_REQ, h);
    ua_put_f64(e, p->interval_ms);
    ua_put_u32(e, p->lifetime_count);
    ua_put_u32(e, p->keepalive_count);
    ua_put_u32(e, p->max_notif);
    ua_put_bool(e, true); /* publishingEnabled */
    ua_put_u8(e, 0);      /* priority */
}

int ua_createsub_resp(const uint8_t *p, size_t n, struct ua_resphdr *h, uint32_t *sub_id, struct ua_sub_params *rev)
{
    struct ua_dec d;
    int rc = begin(&d, p, n, UA_ID_CREATESUB_RESP, h);
    if (rc) return rc;
    *sub_id = ua_get_u32(&d);
    rev->interval_ms = ua_get_f64(&d);
    rev->lifetime_count = ua_get_u32(&d);
    rev->keepalive_count = ua_get_u32(&d);
    return d.err ? FB_EPROTO : 0;
}

void ua_createmi_req(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t sub_id, const struct ua_mon_item *items,
                     uint32_t n)
{
    ua_put_reqhdr(e, UA_ID_CREATEMI_REQ, h);
    ua_put_u32(e, sub_id);
    ua_put_u32(e, 2); /* timestamps: both */
    ua_put_i32(e, (int32_t)n);
    for (uint32_t i = 0; i < n; i++) {
        const struct ua_mon_item *it = &items[i];
        ua_put_nodeid(e, it->node);
        ua_put_u32(e, UA_ATTR_VALUE);
        ua_put_i32(e, -1);
        ua_put_u16(e, 0);
        ua_put_i32(e, -1);
        ua_put_u32(e, 2); /* Reporting */
        ua_put_u32(e, it->handle);
        ua_put_f64(e, it->sampling_ms);
        if (it->deadband_type) { /* DataChangeFilter: StatusValue trigger + deadband */
            ua_put_nodeid_num(e, 0, UA_ID_DATACHANGE_FILTER);
            ua_put_u8(e, 1);
            ua_put_u32(e, 16);
            ua_put_u32(e, 1);
            ua_put_u32(e, it->deadband_type);
            ua_put_f64(e, it->deadband);
        } else {
            ua_put_nodeid_num(e, 0, 0);
            ua_put_u8(e, 0);
        }
        ua_put_u32(e, it->queue);
        ua_put_bool(e, true); /* discardOldest */
    }
}

int ua_createmi_resp(struct ua_dec *d, struct ua_resphdr *h, int32_t *n)
{
    int rc = ua_get_resphdr(d, UA_ID_CREATEMI_RESP, h);
    if (rc) return rc;
    *n = ua_get_count(d);
    return d->err ? FB_EPROTO : 0;
}

void ua_get_mi_result(struct ua_dec *d, uint32_t *status, uint32_t *item_id)
{
    *status = ua_get_u32(d);
    *item_id = ua_get_u32(d);
    ua_get_f64(d);         /* revisedSamplingInterval */
    ua_get_u32(d);         /* revisedQueueSize */
    ua_skip(d, UA_EXTOBJ); /* filterResult */
}

void ua_publish_req(struct ua_enc *e, const struct ua_reqhdr *h, const struct ua_ack *acks, uint32_t n)
{
    ua_put_reqhdr(e, UA_ID_PUBLISH_REQ, h);
    ua_put_i32(e, (int32_t)n);
    for (uint32_t i = 0; i < n; i++) {
        ua_put_u32(e, acks[i].sub_id);
        ua_put_u32(e, acks[i].seq);
    }
}

void ua_republish_req(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t sub_id, uint32_t seq)
{
    ua_put_reqhdr(e, UA_ID_REPUBLISH_REQ, h);
    ua_put_u32(e, sub_id);
    ua_put_u32(e, seq);
}

void ua_deletesub_req(struct ua_enc *e, const struct ua_reqhdr *h, uint32_t sub_id)
{
    ua_put_reqhdr(e, UA_ID_DELETESUB_REQ, h);
    ua_put_i32(e, 1);
    ua_put_u32(e, sub_id);
}

int ua_publish_resp(struct ua_dec *d, uint32_t expect, struct ua_resphdr *h, struct ua_notif_msg *m)
{
    memset(m, 0, sizeof *m);
    int rc = ua_get_resphdr(d, expect, h);
    if (rc) return rc;
    if (expect == UA_ID_PUBLISH_RESP) {
        m->sub_id = ua_get_u32(d);
        ua_skip_array(d, UA_UINT32); /* availableSequenceNumbers */
        m->more = ua_get_bool(d);
    }
    m->seq = ua_get_u32(d);
    m->publish_time = (int64_t)ua_get_u64(d);
    m->ndata = ua_get_count(d);
    return d->err ? FB_EPROTO : 0;
}

int ua_get_notification(struct ua_dec *d, void (*cb)(void *ctx, uint32_t handle, const struct ua_datavalue *dv),
                        void *ctx, uint32_t *status_change)
{
    struct ua_nodeid tid;
    uint8_t enc;
    struct ua_str body;
    *status_change = 0;
    ua_get_extobj(d, &tid, &enc, &body);
    if (d->err) return FB_EPROTO;
    if (enc != 1 || tid.ns != 0 || tid.kind != UA_NID_NUMERIC) return 0;
    struct ua_dec b;
    ua_dec_init(&b, body.p, body.len > 0 ? (size_t)body.len : 0);
    if (tid.num == UA_ID_DATACHANGE_NOTIF) {
        int32_t n = ua_get_count(&b);
        for (int32_t i = 0; i < n && !b.err; i++) {
            uint32_t handle = ua_get_u32(&b);
            struct ua_datavalue dv;
            ua_get_datavalue(&b, &dv);
            if (!b.err && cb) cb(ctx, handle, &dv);
        }
        return b.err ? FB_EPROTO : 0;
    }
    if (tid.num == UA_ID_STATUSCHANGE_NOTIF) {
        *status_change = ua_get_u32(&b);
        if (!*status_change) *status_change = 0x80AD0000u;
        return b.err ? FB_EPROTO : 0;
    }
    return 0; /* events and others: not ours */
}
