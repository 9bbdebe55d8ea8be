/* ua_subscribe.c — OPC UA subscriptions for poll groups in subscription
 * mode: CreateSubscription + CreateMonitoredItems in batches within the
 * server's MaxMonitoredItemsPerCall (absolute deadbands on the server when a
 * tag is unscaled, percent deadbands on the node's EURange, refused percent
 * deadbands retried without a filter), up to UA_PUBLISH_MAX Publish requests
 * outstanding, Republish for sequence gaps, a subscription silent for three
 * keep-alive periods taken as a lost connection.  Notifications update the
 * group's latest value per tag whenever they arrive; read() hands over the
 * values that arrived since the previous call — see docs/opcua.md. */
#include "south/opcua/ua_subscribe.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "south/opcua/ua_tags.h"

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
    ua_fill_sample(t, t->addr, dv, &s->q, &s->ts, &s->v, sb, cap);
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

void ua_sub_on_publish(struct ua_conn *c, const uint8_t *buf, size_t n)
{
    struct ua_dec d;
    ua_dec_init(&d, buf, n);
    struct ua_resphdr rh;
    struct ua_notif_msg m;
    int rc = ua_publish_resp(&d, UA_ID_PUBLISH_RESP, &rh, &m);
    if (rc) {
        char qb[16];
        uint32_t sc = rh.result & 0xFFFF0000u;
        if (rc == FB_EEXCEPTION &&
            (sc == UA_BAD_NO_SUBSCRIPTION || sc == UA_BAD_TOO_MANY_PUBLISH || sc == UA_BAD_TIMEOUT ||
             sc == UA_BAD_SESSION_CLOSED || sc == UA_BAD_SESSION_ID_INVALID))
            fb_debug(c->dev_name, NULL, "Publish: %s", ua_status_text(rh.result, qb));
        else
            fb_warn(c->dev_name, NULL, "Publish failed: %s",
                    rc == FB_EEXCEPTION ? ua_status_text(rh.result, qb) : "malformed response");
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

int ua_sub_send_publish(struct ua_conn *c, struct fb_err *err)
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
        struct ua_reqhdr h = ua_reqhdr(c, tmo ? tmo : 60000);
        ua_publish_req(&e, &h, c->acks, c->nacks);
        if (e.err) return fb_err_set(err, FB_EINVAL, "Publish too large");
        if (c->channel_open && fb_mono_ns() >= c->renew_at) {
            int rc = ua_renew(c, 1, err);
            if (rc) return rc;
        }
        uint32_t rid;
        int rc = ua_send_msg(c, "MSG", c->body, e.len, &rid, err);
        if (rc) return rc;
        c->nacks = 0;
        c->pub_ids[c->npub++] = rid;
    }
    return 0;
}

int ua_sub_republish(struct ua_conn *c, struct fb_device *dev, struct ua_plan *p, struct fb_err *err)
{
    while (p->nmissing) {
        uint32_t seq = p->missing[--p->nmissing];
        struct ua_enc e;
        ua_enc_init(&e, c->body, UA_BODY_CAP);
        struct ua_reqhdr h = ua_reqhdr(c, 0);
        ua_republish_req(&e, &h, p->sub_id, seq);
        int rc = ua_call(c, e.len, err);
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
        if (rc) return ua_svc_error(c, "Republish", rc, &rh, err);
        apply_notifications(c, dev, p, &d, m.ndata);
    }
    return 0;
}

int ua_sub_create(struct ua_conn *c, struct fb_device *dev, struct ua_plan *p, struct fb_err *err)
{
    struct ua_sub_params sp = {.interval_ms = p->interval_ms, .keepalive_count = 10, .max_notif = 0};
    double ka_ms = sp.interval_ms * sp.keepalive_count;
    if (ka_ms < 5000 && sp.interval_ms > 0) sp.keepalive_count = (uint32_t)(5000 / sp.interval_ms) + 1;
    sp.lifetime_count = sp.keepalive_count * 6;
    struct ua_enc e;
    ua_enc_init(&e, c->body, UA_BODY_CAP);
    struct ua_reqhdr h = ua_reqhdr(c, 0);
    ua_createsub_req(&e, &h, &sp);
    int rc = ua_call(c, e.len, err);
    if (rc) return rc;
    struct ua_resphdr rh;
    struct ua_sub_params rev;
    uint32_t sid;
    rc = ua_createsub_resp(c->ra.buf, c->ra.len, &rh, &sid, &rev);
    if (rc) return ua_svc_error(c, "CreateSubscription", rc, &rh, err);
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
                p->slots[off] = (struct ua_slot){.fresh = true,
                                                 .q = a ? a->resolve_q : FB_Q_BAD_CONFIG,
                                                 .ts = fb_now_ns(),
                                                 .v = {.type = t->type},
                                                 .s = p->slots[off].s,
                                                 .cap = p->slots[off].cap};
                if (t->type == FB_T_STRING) p->slots[off].v.s.p = "";
                continue;
            }
            items[k] = (struct ua_mon_item){
                .node = &a->node, .handle = off, .sampling_ms = p->interval_ms, .queue = c->o->queue};
            if (fb_tproc(t)->db_abs > 0) {
                /* a server-side deadband on the raw value: only when unscaled */
                if (!fb_tproc(t)->scaled) {
                    items[k].deadband_type = 1;
                    items[k].deadband = fb_tproc(t)->db_abs;
                }
            } else if (fb_tproc(t)->db_pct > 0 && fb_tproc(t)->db_pct <= 100) {
                /* percent of the node's EURange (the same share of a linearly scaled range) */
                items[k].deadband_type = 2;
                items[k].deadband = fb_tproc(t)->db_pct;
            }
            idx[k++] = off;
        }
        if (!k) continue;
        /* a second pass for items whose percent deadband the server refused: without the filter */
        for (int pass = 0; pass < 2 && k && !rc; pass++) {
            uint32_t nretry = 0;
            ua_enc_init(&e, c->body, UA_BODY_CAP);
            h = ua_reqhdr(c, 0);
            ua_createmi_req(&e, &h, sid, items, k);
            if (e.err) {
                rc = fb_err_set(err, FB_EINVAL, "CreateMonitoredItems too large");
                break;
            }
            rc = ua_call(c, e.len, err);
            if (rc) break;
            struct ua_dec d;
            ua_dec_init(&d, c->ra.buf, c->ra.len);
            int32_t cnt;
            rc = ua_createmi_resp(&d, &rh, &cnt);
            if (rc) {
                rc = ua_svc_error(c, "CreateMonitoredItems", rc, &rh, err);
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
                    char qb[16], ab[FB_ATEXT_MAX];
                    fb_warn(dev->name, t->name,
                            "%s refused the percent deadband on %s (%s; a percent deadband needs "
                            "an analog node with an EURange): monitoring it without a server-side deadband",
                            c->where, fb_tag_addr_text(dev->gw, t, ab), ua_status_text(st, qb));
                    items[nretry] = items[i];
                    items[nretry].deadband_type = 0;
                    idx[nretry++] = idx[i];
                } else if (st & 0x80000000u) {
                    const struct fb_tag *t = &dev->gw->tags[p->tags[idx[i]]];
                    char qb[16], ab[FB_ATEXT_MAX];
                    fb_warn(dev->name, t->name, "cannot monitor %s: %s", fb_tag_addr_text(dev->gw, t, ab),
                            ua_status_text(st, qb));
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

/* ------------------------------------------------------------ read */
int ua_sub_read(struct fb_device *dev, struct ua_conn *c, struct ua_plan *p, struct fb_batch *out)
{
    struct fb_err err = {0};
    int rc = 0;
    if (!p->sub_id) rc = ua_sub_create(c, dev, p, &err);
    if (!rc && p->nmissing) rc = ua_sub_republish(c, dev, p, &err);
    if (!rc) rc = ua_sub_send_publish(c, &err);
    /* take what has arrived, without waiting for more */
    while (!rc) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int r = poll(&pfd, 1, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        uint32_t got;
        rc = ua_recv_msg(c, fb_mono_ns() + c->o->timeout_ns, &got, &err);
        if (rc == FB_EEXCEPTION) {
            ua_is_publish(c, got, true);
            rc = 0;
            continue;
        }
        if (rc) break;
        if (ua_is_publish(c, got, true)) ua_sub_on_publish(c, c->ra.buf, c->ra.len);
    }
    if (!rc && c->channel_open && fb_mono_ns() >= c->renew_at) rc = ua_renew(c, 1, &err);
    if (!rc && p->sub_id) {
        /* no Publish response (not even a keep-alive) for 3 keep-alive periods: dead */
        int64_t silent = fb_mono_ns() - p->last_pub;
        int64_t limit = ua_ms_to_ns(p->interval_ms * (p->keepalive ? p->keepalive : 10) * 3) + c->o->timeout_ns;
        if (silent > limit)
            rc = fb_err_set(&err, FB_ETIMEDOUT, "%s: subscription %u silent for %.1fs", c->where, p->sub_id,
                            silent / 1e9);
    }
    int64_t now = fb_now_ns();
    for (uint32_t i = 0; i < p->n; i++) {
        struct ua_slot *s = &p->slots[i];
        const struct fb_tag *t = &dev->gw->tags[p->tags[i]];
        if (rc) {
            ua_add_bad(out, t, rc == FB_ETIMEDOUT ? FB_Q_BAD_TIMEOUT : FB_Q_BAD_COMM, now);
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
