/* opcua.c — the OPC UA client driver (scheme "opc.tcp"): glue between the
 * core and the OPC UA client (ua_client.c: channel and session, on the
 * I/O-free codecs in ua_types.c / ua_msg.c / ua_secure.c), the tags
 * (ua_tags.c) and subscriptions (ua_subscribe.c).  One TCP socket per
 * connection, one secure channel and session on it.  Browse is here too.
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
 * (fb_conn_failed) with auth_retry= (default 5 min) as the least delay before
 * the next attempt, so a wrong password does not lock
 * the account.  What one attempt learnt that the next must not repeat (the
 * certificate name warning already logged, the refusal) is the device's
 * struct ua_memo.
 *
 * Transport limits and chunking are ua_client.c's; subscriptions (Publish
 * requests outstanding, values applied whenever they arrive, read() handing
 * over what arrived since the previous call) are ua_subscribe.c's.
 */
#include "south/opcua/opcua.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/browse.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/url.h"
#include "south/opcua/ua_client.h"
#include "south/opcua/ua_subscribe.h"
#include "south/opcua/ua_tags.h"

#define UA_DEFAULT_PORT 4840

struct ua_dev {
    struct ua_opts o;
    struct ua_memo memo;
};

static int parse_u32(const char *k, const char *v, uint64_t lo, uint64_t hi, uint32_t *out, struct fb_err *err)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end || end == v || errno || x < lo || x > hi)
        return fb_err_set(err, FB_EINVAL, "%s=%s: expected a number from %llu to %llu", k, v, (unsigned long long)lo,
                          (unsigned long long)hi);
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
    if (n >= sizeof o->endpoint)
        return fb_err_set(err, FB_EINVAL, "endpoint URL longer than %zu bytes", sizeof o->endpoint);
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
            if (!strcmp(v, "subscribe"))
                o->subscribe = true;
            else if (!strcmp(v, "poll"))
                o->subscribe = false;
            else
                rc = fb_err_set(err, FB_EINVAL, "mode=%s: expected poll or subscribe", v);
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
            if (!strcmp(v, "refuse"))
                o->strict_names = true;
            else if (!strcmp(v, "warn"))
                o->strict_names = false;
            else if (!strcmp(v, "off"))
                o->no_names = true;
            else
                rc = fb_err_set(err, FB_EINVAL, "check_names=%s: expected warn, refuse or off", v);
        } else if (!strcmp(k, "auth_retry")) {
            if (fb_parse_duration(v, &o->auth_retry_ns) < 0 || o->auth_retry_ns < 1000000000LL ||
                o->auth_retry_ns > 86400000000000LL)
                rc = fb_err_set(err, FB_EINVAL, "auth_retry=%s: expected a duration from 1s to 24h (e.g. 5m)", v);
        } else if (!strcmp(k, "lifetime")) {
            int64_t ns;
            if (fb_parse_duration(v, &ns) < 0 || ns < 1000000000LL || ns > 86400000000000LL)
                rc = fb_err_set(err, FB_EINVAL, "lifetime=%s: expected a duration from 1s to 24h", v);
            else
                o->lifetime_ms = (uint32_t)(ns / 1000000);
        } else if (!strcmp(k, "session_timeout")) {
            int64_t ns;
            if (fb_parse_duration(v, &ns) < 0 || ns < 1000000000LL || ns > 86400000000000LL)
                rc = fb_err_set(err, FB_EINVAL, "session_timeout=%s: expected a duration from 1s to 24h", v);
            else
                o->session_ms = (uint32_t)(ns / 1000000);
        } else if (!strcmp(k, "chunk")) {
            uint64_t b;
            if (fb_parse_size(v, &b) < 0 || b < UA_MIN_BUF || b > (16u << 20))
                rc = fb_err_set(err, FB_EINVAL, "chunk=%s: expected a size from 8192 to 16MiB", v);
            else
                o->chunk = (uint32_t)b;
        } else if (!strcmp(k, "max_message")) {
            uint64_t b;
            if (fb_parse_size(v, &b) < 0 || b < UA_MIN_BUF || b > (256u << 20))
                rc = fb_err_set(err, FB_EINVAL, "max_message=%s: expected a size from 8192 to 256MiB", v);
            else
                o->max_msg = (uint32_t)b;
        } else if (!strcmp(k, "queue")) {
            rc = parse_u32(k, v, 1, 100000, &o->queue, err);
        } else if (!strcmp(k, "max_batch")) {
            rc = parse_u32(k, v, 1, 100000, &o->max_batch, err);
        } else if (!strcmp(k, "depth")) {
            uint32_t d = 0;
            rc = parse_u32(k, v, 1, 64, &d, err);
            if (rc == 0) o->depth = (int)d; /* a refused value leaves the default */
        } else if (!strcmp(k, "node")) {
            free(o->node);
            o->node = strdup(v);
        } else if (!strcmp(k, "security_policy")) {
            pol = v;
        } else if (!strcmp(k, "security_mode")) {
            mode = v;
        } else if (!strcmp(k, "pki")) {
            if (!v[0] || strlen(v) >= sizeof o->pki)
                rc = fb_err_set(err, FB_EINVAL, "pki=: expected a directory");
            else
                snprintf(o->pki, sizeof o->pki, "%s", v);
        } else if (!strcmp(k, "trust_server")) {
            if (!strcmp(v, "auto"))
                o->auto_trust = true;
            else if (!strcmp(v, "list"))
                o->auto_trust = false;
            else
                rc = fb_err_set(err, FB_EINVAL, "trust_server=%s: expected auto (trust on first use) or list", v);
        } else if (!strcmp(k, "revocation")) {
            if (!strcmp(v, "require"))
                o->crl_optional = false;
            else if (!strcmp(v, "if_present"))
                o->crl_optional = true;
            else
                rc = fb_err_set(err, FB_EINVAL,
                                "revocation=%s: expected require (every CA needs its CRL in pki/crl) or if_present", v);
        } else {
            rc = fb_err_set(err, FB_EINVAL,
                            "unknown opc.tcp URL key '%.16s' (valid: timeout mode user password_file user_cert "
                            "user_key lifetime session_timeout chunk max_message queue max_batch depth node "
                            "security_policy security_mode pki trust_server revocation check_names auth_retry)",
                            k);
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
        return fb_err_set(err, FB_EINVAL,
                          "security_mode=%s needs security_policy=Basic256Sha256 (or "
                          "Aes128_Sha256_RsaOaep)",
                          mode);
    if (strcmp(pol, "None") && o->mode == 1) o->mode = 3; /* a policy without a mode: encrypt */
    if (!o->pki[0]) snprintf(o->pki, sizeof o->pki, "/var/lib/fieldbridge/pki");
    if (o->password_file && !o->user) return fb_err_set(err, FB_EINVAL, "password_file= needs user=");
    if (!o->user_cert != !o->user_key)
        return fb_err_set(err, FB_EINVAL,
                          "user_cert= and user_key= go together (the user's certificate and its "
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

/* A secured channel uses the certificate store: our certificate, the trust
 * list, the CRLs — watched for expiry (core/certs.c). */
static void opcua_certs(struct fb_device *dev, struct fb_gateway *gw)
{
    const struct ua_dev *ud = dev->drv_dev;
    if (!ud || ud->o.mode <= 1) return;
    char use[160];
    snprintf(use, sizeof use, "device %s pki=", dev->name);
    fb_gw_cert_add(gw, use, ud->o.pki, FB_OPT_PKI);
}

static void opcua_device_free(struct fb_device *dev)
{
    struct ua_dev *ud = dev->drv_dev;
    if (ud) opts_free(&ud->o);
    free(ud);
    dev->drv_dev = NULL;
}

/* "ns=2;s=X", "i=2258", "/Objects/2:Demo/2:Temp", each optionally ":TYPE"
 * (a known fieldbridge type name after the last colon). */
static int opcua_parse_address(struct fb_device *dev, struct fb_tag *tag, struct fb_err *err)
{
    char ab[FB_ATEXT_MAX];
    const char *text = fb_tag_addr_text(dev->gw, tag, ab);
    if (!text) text = "";
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
        ua_addr_free(a);
        return rc;
    }
    if (tag->type == FB_T_NONE) {
        /* The server's DataType decides; until it is known (and in the
         * gateway, whose buffers are sized before connecting) a number. */
        tag->type = FB_T_FLOAT64;
        a->auto_type = true;
    }
    if (tag->type == FB_T_STRING && !tag->str_len) tag->str_len = UA_STR_CAP;
    ua_addr_free(tag->addr);
    tag->addr = a;
    return 0;
}

static void opcua_free_address(struct fb_tag *tag)
{
    ua_addr_free(tag->addr);
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
        const struct fb_tag *t = &dev->gw->tags[fb_group_tag(g, i)];
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
    ua_fill_sample(t, t->addr, dv, &q, &ts, &v, x->c->sbuf, sizeof x->c->sbuf);
    if (fb_q_bad(q)) x->nbad++;
    struct fb_sample *s = fb_batch_add(x->out, t->id, q, ts ? ts : x->now, &v);
    (void)s;
}

/* ------------------------------------------------------------ open / close */
static void opcua_close(struct fb_conn *fc)
{
    struct ua_conn *c = fc->ctx;
    if (!c) return;
    ua_disconnect(c);
    ua_conn_free(c);
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
    if (!fc->ndevs || !fc->devs[0]->drv_dev)
        return fb_err_set(err, FB_EINVAL, "connection %s has no OPC UA device", fc->key);
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
        fb_conn_failed(fc, memo->refused, o->auth_retry_ns); /* the runtime logs "retry in …" */
    }
    if (rc) return rc;
    c->fc = fc;
    c->on_publish = ua_sub_on_publish; /* Publish responses that arrive during other calls */
    ua_read_limits(c);
    rc = ua_resolve_paths(c, fc, err);
    if (!rc) rc = ua_read_datatypes(c, fc, err);
    for (uint32_t di = 0; di < fc->ndevs && !rc; di++) {
        struct fb_device *d = fc->devs[di];
        const struct ua_dev *ud = d->drv_dev;
        if (!ud->o.subscribe) continue;
        for (uint32_t k = 0; k < d->ngroups && !rc; k++) {
            struct ua_plan *p = d->groups[k].plan;
            if (p) rc = ua_sub_create(c, d, p, err);
        }
    }
    if (!rc && o->subscribe) rc = ua_sub_send_publish(c, err);
    if (rc) {
        ua_disconnect(c);
        ua_conn_free(c);
        return rc == FB_EEXCEPTION ? FB_EIO : rc;
    }
    fb_debug(fc->devs[0]->name, NULL, "session open on %s", c->where);
    fc->ctx = c;
    return 0;
}

static int opcua_read(struct fb_device *dev, struct fb_group *g, struct fb_batch *out)
{
    struct ua_plan *p = g->plan;
    struct ua_conn *c = dev->conn ? dev->conn->ctx : NULL;
    if (!p) return FB_EINVAL;
    int64_t now = fb_now_ns();
    if (!c) {
        for (uint32_t i = 0; i < p->n; i++) ua_add_bad(out, &dev->gw->tags[p->tags[i]], FB_Q_BAD_NOT_CONNECTED, now);
        return FB_EIO;
    }
    const struct ua_dev *ud = dev->drv_dev;
    int64_t t0 = fb_mono_ns();
    if (ud->o.subscribe) {
        atomic_fetch_add(&dev->m.requests, 1);
        int rc = ua_sub_read(dev, c, p, out);
        if (rc)
            atomic_fetch_add(&dev->m.errors, 1);
        else
            atomic_store(&dev->m.last_success_ns, fb_now_ns());
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
            ua_add_bad(out, t, a ? a->resolve_q : FB_Q_BAD_CONFIG, now);
            unresolved++;
            continue;
        }
        nodes[n] = &a->node;
        ids[n++] = t->id;
    }
    struct fb_err err = {0};
    struct poll_ctx x = {dev, c, out, ids, now, 0};
    uint64_t reads0 = c->nreads;
    int rc = n ? ua_read_attr(c, nodes, n, UA_ATTR_VALUE, 2, poll_cb, &x, &err) : 0;
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
            if (!found)
                ua_add_bad(out, &dev->gw->tags[ids[i]], rc == FB_ETIMEDOUT ? FB_Q_BAD_TIMEOUT : FB_Q_BAD_COMM, now);
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
    char ab[FB_ATEXT_MAX];
    const char *at = fb_tag_addr_text(dev->gw, t, ab);
    if (a->resolve_q) return fb_err_set(err, FB_ENOENT, "%s: node %s not found on the server", t->name, at);
    /* writes and write errors are counted by the runtime */
    uint8_t type = a->builtin;
    if (!type) { /* DataType unknown or abstract: the current value's type decides */
        const struct ua_nodeid *nodes[1] = {&a->node};
        struct type_ctx x = {0, 0};
        int rc = ua_read_attr(c, nodes, 1, UA_ATTR_VALUE, 3, type_cb, &x, err);
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
    struct ua_reqhdr h = ua_reqhdr(c, 0);
    ua_write_req(&e, &h, &a->node, &uv);
    if (e.err) return fb_err_set(err, FB_EINVAL, "write of %s too large", t->name);
    rc = ua_call(c, e.len, err);
    if (rc) {
        atomic_fetch_add(&dev->m.write_errors, 1);
        return rc;
    }
    struct ua_resphdr rh;
    uint32_t st = 0;
    rc = ua_write_resp(c->ra.buf, c->ra.len, &rh, &st);
    if (rc == FB_EEXCEPTION)
        st = rh.result;
    else if (rc)
        return ua_svc_error(c, "Write", rc, &rh, err);
    if (st & 0x80000000u) {
        char qb[16];
        uint32_t sc = st & 0xFFFF0000u;
        atomic_fetch_add(&dev->m.write_errors, 1);
        int code = sc == FB_Q_BAD_NOT_WRITABLE || sc == 0x801F0000u ? FB_EACCES
                   : sc == FB_Q_BAD_NODE_UNKNOWN                    ? FB_ENOENT
                   : sc == FB_Q_BAD_TYPE_MISMATCH                   ? FB_EINVAL
                   : sc == FB_Q_BAD_OUT_OF_RANGE                    ? FB_ERANGE
                   : ua_session_lost(sc)                            ? FB_EIO
                                                                    : FB_EEXCEPTION;
        return fb_err_set(err, code, "write to %s (%s) refused: %s", t->name, at, ua_status_text(st, qb));
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

/* Browse the references below node.  Each variable goes into list (with
 * `prefix`, its parents' browse names, in front of its own) and, when out
 * is not NULL, the tree is printed there. */
static int browse_node(struct ua_conn *c, const struct ua_nodeid *node, int depth, int max_depth, FILE *out,
                       struct fb_browse *list, const char *prefix, struct fb_err *err)
{
    struct bnode *kids = NULL;
    uint32_t nk = 0, cap = 0;
    struct ua_enc e;
    ua_enc_init(&e, c->body, UA_BODY_CAP);
    struct ua_reqhdr h = ua_reqhdr(c, 0);
    ua_browse_req(&e, &h, node, 200);
    int rc = ua_call(c, e.len, err);
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
            rc = ua_svc_error(c, "Browse", rc, &rh, err);
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
            if (r.browse_name.ns)
                snprintf(b->name, sizeof b->name, "%u:%.*s", r.browse_name.ns, nl, r.browse_name.name.p);
            else
                snprintf(b->name, sizeof b->name, "%.*s", nl, nl ? r.browse_name.name.p : "");
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
        h = ua_reqhdr(c, 0);
        ua_browsenext_req(&e, &h, stop, (struct ua_str){cpb, cl});
        rc = ua_call(c, e.len, err);
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
        if (nv && ua_read_attr(c, vn, nv, UA_ATTR_DATATYPE, 3, dtv_cb, &x, err) == FB_EIO) rc = FB_EIO;
        x.acc = true;
        if (!rc && nv && ua_read_attr(c, vn, nv, UA_ATTR_ACCESSLEVEL, 3, dtv_cb, &x, err) == FB_EIO) rc = FB_EIO;
    }
    uint32_t vi = 0;
    for (uint32_t i = 0; i < nk && !rc; i++) {
        char nb[300];
        ua_nodeid_format(&kids[i].id, nb, sizeof nb);
        /* the browse name without its namespace index ("2:Speed" → "Speed") */
        const char *bare = kids[i].name;
        const char *colon = strchr(bare, ':');
        if (colon && colon != bare && strspn(bare, "0123456789") == (size_t)(colon - bare)) bare = colon + 1;
        char path[400];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", bare);
        if (out) fprintf(out, "%*s%s  %s  %s", depth * 2, "", kids[i].name, nb, node_class_name(kids[i].nc));
        if (kids[i].nc == 2 && vi < nv) {
            uint8_t ty = types[vi], ac = acc[vi];
            uint32_t dn = dtnum[vi];
            vi++;
            char tn[48];
            if (ty == 0xFF)
                snprintf(tn, sizeof tn, "DataType i=%u", dn);
            else
                snprintf(tn, sizeof tn, "%s", ty ? ua_builtin_name(ty) : "?");
            if (out) {
                fprintf(out, "  %s  %s%s", tn, ac & 1 ? "r" : "-", ac & 2 ? "w" : "-");
                if (ty && ty != 0xFF && ua_builtin[ty].fbtype)
                    fprintf(out, "  (%s)", fb_type_name(ua_builtin[ty].fbtype));
            }
            int fbt = ty && ty != 0xFF ? ua_builtin[ty].fbtype : FB_T_NONE;
            int access = (ac & 2) ? ((ac & 1) ? FB_ACC_RW : FB_ACC_WRITE) : FB_ACC_READ;
            if (list && fb_browse_add(list, path, nb, fbt, access, tn) < 0)
                rc = fb_err_set(err, FB_ENOMEM, "out of memory");
        }
        if (out) fputc('\n', out);
        bool skip = kids[i].id.ns == 0 && kids[i].id.kind == UA_NID_NUMERIC && kids[i].id.num == 2253 && depth == 1 &&
                    max_depth < 8;
        if (!rc && kids[i].nc == 1 && depth + 1 < max_depth && !skip)
            rc = browse_node(c, &kids[i].id, depth + 1, max_depth, out, list, path, err);
        else if (skip && out)
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

int fb_opcua_browse(const char *url, struct fb_browse *list, FILE *out, struct fb_err *err)
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
    ua_read_limits(c);
    char nb[300];
    if (out) fprintf(out, "%s  %s\n", o.node ? "(start)" : "Objects", ua_nodeid_format(&start, nb, sizeof nb));
    rc = browse_node(c, &start, 1, o.depth + 1, out, list, "", err);
    ua_nodeid_clear(&start);
    ua_disconnect(c);
    ua_conn_free(c);
    opts_free(&o);
    return rc < 0 ? rc : 0;
}

static const char *const opcua_schemes[] = {"opc.tcp", NULL};

/* A config reload keeps the session (model.h): the resolved nodes and data
 * types (in the addresses), the subscriptions and their slots (in the
 * plans, which name tags by id: those may have moved) and the login memory
 * stay with the running model; the session's back-pointers follow. */
static void opcua_adopt(struct fb_conn *c, struct fb_conn *old)
{
    fb_adopt_swap(c, old, FB_ADOPT_DEV | FB_ADOPT_ADDR | FB_ADOPT_PLAN);
    for (uint32_t k = 0; k < c->ndevs; k++) {
        int64_t shift = fb_adopt_tag_shift(c, old, k);
        for (uint32_t g = 0; g < c->devs[k]->ngroups; g++) {
            struct ua_plan *p = c->devs[k]->groups[g].plan;
            for (uint32_t i = 0; p && i < p->n; i++) p->tags[i] = (uint32_t)((int64_t)p->tags[i] + shift);
        }
    }
    struct ua_conn *uc = c->ctx;
    if (uc) {
        uc->fc = c;
        uc->dev_name = c->devs[0]->name;
    }
}

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
    .adopt = opcua_adopt,
    .browse = fb_opcua_browse,
    .certs = opcua_certs,
};
