/* s7.c — the Siemens S7 south driver (scheme "s7"): glue between the core and
 * the I/O-free codec in s7_proto.c.  It owns one TCP socket per connection
 * and moves frames over it; everything else (addresses, frames, values,
 * planning) is in s7_proto.c.
 *
 * Connection set-up: TCP connect → COTP CR/CC with the TSAPs → S7 Setup
 * Communication; the PDU size the PLC answers binds every later request (a
 * group's plan is laid out again when a connection negotiates a different
 * size).  One job is in flight at a time (we announce MaxAmQ 1).
 *
 * Timeouts: every request has a deadline (dev->timeout_ns, or timeout= in the
 * URL) enforced with poll(); a request that times out leaves the stream in an
 * unknown state, so read() returns FB_ETIMEDOUT and the core reconnects with
 * backoff — that is also how a half-open connection is detected.  A reset or
 * closed socket returns FB_EIO, a malformed or mismatched reply FB_EPROTO.
 *
 * Refusals (item return codes, S7 header errors) mark the tags of the
 * affected range Bad with a mapped quality and are logged once per change
 * with a sentence the user can act on.  Each failed request, each refused
 * item of a request that succeeded and each value that cannot be decoded
 * counts once in the device's error counter (NE107, docs/metrics.md).  An "address out of range" for a
 * range that merged several tags splits that range for good, so one bad tag
 * does not take its neighbours with it.
 */
#include "south/s7/s7.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/net.h"
#include "core/plugin.h"
#include "south/s7/s7_proto.h"

#define S7_SBUF (3 * S7_MAX_WSTRING + 16)

struct s7_dev {
    struct s7_opts o;
};

struct s7_conn {
    int fd;
    int pdu;          /* negotiated */
    uint16_t ref;     /* PDU reference of the last job */
    int64_t last_end; /* monotonic end of the previous request */
    char where[300];
    uint8_t tx[S7_FRAME_MAX];
    uint8_t rx[S7_FRAME_MAX];
    uint8_t pdubuf[S7_FRAME_MAX]; /* reassembled S7 PDU */
    char sbuf[S7_SBUF];
    uint8_t wbuf[4 + 2 * S7_MAX_WSTRING];
};

/* ------------------------------------------------------------------ socket */
/* One TPKT frame into c->rx; returns its length or a negative status. */
static int recv_frame(struct s7_conn *c, int64_t deadline)
{
    int rc = fb_net_recv_all(c->fd, c->rx, S7_TPKT_HDR, deadline);
    if (rc) return rc;
    int len = s7_tpkt_len(c->rx, S7_TPKT_HDR);
    if (len < 0) return FB_EPROTO;
    rc = fb_net_recv_all(c->fd, c->rx + S7_TPKT_HDR, (size_t)len - S7_TPKT_HDR, deadline);
    return rc ? rc : len;
}

/* Reassemble COTP DT fragments up to EOT into c->pdubuf; returns its length. */
static int recv_pdu(struct s7_conn *c, int64_t deadline, struct fb_err *err)
{
    size_t got = 0;
    for (;;) {
        int len = recv_frame(c, deadline);
        if (len < 0) return len;
        struct s7_cotp ct;
        if (s7_cotp_parse(c->rx, (size_t)len, &ct) || ct.kind != S7_COTP_DT) {
            fb_err_set(err, FB_EPROTO, "%s: unexpected COTP frame (not a data TPDU)", c->where);
            return FB_EPROTO;
        }
        if (got + ct.payload_len > sizeof c->pdubuf) {
            fb_err_set(err, FB_EPROTO, "%s: reply larger than %zu bytes", c->where, sizeof c->pdubuf);
            return FB_EPROTO;
        }
        memcpy(c->pdubuf + got, ct.payload, ct.payload_len);
        got += ct.payload_len;
        if (ct.eot) return (int)got;
    }
}

static void pace(struct s7_conn *c, const struct fb_device *dev)
{
    if (dev->delay_ns > 0 && c->last_end) {
        int64_t wait = c->last_end + dev->delay_ns - fb_mono_ns();
        if (wait > 0) {
            struct timespec ts = {(time_t)(wait / 1000000000), (long)(wait % 1000000000)};
            while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
            }
        }
    }
}

/* Send tx[0..n) and receive the reply PDU.  0 or FB_EIO / FB_ETIMEDOUT / FB_EPROTO. */
static int transact(struct s7_conn *c, size_t n, int64_t timeout_ns, int *pdulen, struct fb_err *err)
{
    int64_t deadline = fb_mono_ns() + timeout_ns;
    int rc = fb_net_send_all(c->fd, c->tx, n, deadline);
    if (rc == 0) rc = recv_pdu(c, deadline, err);
    c->last_end = fb_mono_ns();
    if (rc >= 0) {
        *pdulen = rc;
        return 0;
    }
    if (!err || !err->msg[0] || err->code != rc) {
        if (rc == FB_ETIMEDOUT)
            fb_err_set(err, rc, "%s: no answer within %.3gs", c->where, timeout_ns / 1e9);
        else if (rc == FB_EIO)
            fb_err_set(err, rc, "%s: connection lost", c->where);
        else
            fb_err_set(err, rc, "%s: malformed reply", c->where);
    }
    return rc;
}

static uint16_t next_ref(struct s7_conn *c)
{
    if (++c->ref == 0) c->ref = 1;
    return c->ref;
}

/* ------------------------------------------------------------------ device */
static int s7_device_init(struct fb_device *dev, char **conn_key, struct fb_err *err)
{
    struct s7_dev *sd = calloc(1, sizeof *sd);
    if (!sd) return fb_err_set(err, FB_ENOMEM, "out of memory");
    int rc = s7_opts_parse(&dev->url, dev->timeout_ns, &sd->o, err);
    if (rc) {
        free(sd);
        return rc;
    }
    *conn_key = s7_opts_conn_key(&sd->o);
    if (!*conn_key) {
        free(sd);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    dev->timeout_ns = sd->o.timeout_ns;
    dev->drv_dev = sd;
    return 0;
}

static void s7_device_free(struct fb_device *dev)
{
    free(dev->drv_dev);
    dev->drv_dev = NULL;
}

static int s7_parse_address(struct fb_device *dev, struct fb_tag *tag, struct fb_err *err)
{
    char ab[FB_ATEXT_MAX];
    const char *text = fb_tag_addr_text(dev->gw, tag, ab);
    struct s7_addr *a = malloc(sizeof *a);
    if (!a) return fb_err_set(err, FB_ENOMEM, "out of memory");
    int rc = s7_addr_parse(text ? text : "", (enum fb_type)tag->type, tag->str_len, tag->index, a, err);
    if (rc) {
        free(a);
        return rc;
    }
    free(tag->addr);
    tag->addr = a;
    tag->type = a->fbtype;
    if (a->fbtype == FB_T_STRING) tag->str_len = s7_addr_str_cap(a);
    return 0;
}

static void s7_free_address(struct fb_tag *tag)
{
    free(tag->addr);
    tag->addr = NULL;
}

static int s7_plan_cb(struct fb_device *dev, struct fb_group *g, struct fb_err *err)
{
    const struct s7_dev *sd = dev->drv_dev;
    uint32_t n = g->ntags;
    uint32_t *ids = calloc(n ? n : 1, sizeof *ids);
    const struct s7_addr **addrs = calloc(n ? n : 1, sizeof *addrs);
    if (!ids || !addrs) {
        free(ids);
        free(addrs);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    int rc = 0;
    for (uint32_t i = 0; i < n && !rc; i++) {
        const struct fb_tag *t = &dev->gw->tags[fb_group_tag(g, i)];
        if (!t->addr) rc = fb_err_set(err, FB_EINVAL, "tag %s has no parsed address", t->name);
        ids[i] = t->id;
        addrs[i] = t->addr;
    }
    struct s7_plan *p = NULL;
    if (!rc) rc = s7_plan_build(ids, addrs, n, sd->o.max_gap, sd->o.max_items, &p, err);
    /* a provisional layout for the PDU we ask for; redone after negotiation */
    if (!rc) rc = s7_plan_layout(p, sd->o.pdu, err);
    free(ids);
    free(addrs);
    if (rc) {
        s7_plan_free(p);
        return rc;
    }
    g->plan = p;
    return 0;
}

static void s7_plan_free_cb(struct fb_group *g)
{
    s7_plan_free(g->plan);
    g->plan = NULL;
}

/* ------------------------------------------------------------- connection */
static void s7_close(struct fb_conn *cn)
{
    struct s7_conn *c = cn->ctx;
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    free(c);
    cn->ctx = NULL;
}

static int s7_open(struct fb_conn *cn, struct fb_err *err)
{
    s7_close(cn);
    if (!cn->ndevs || !cn->devs[0]->drv_dev)
        return fb_err_set(err, FB_EINVAL, "connection %s has no S7 device", cn->key);
    const struct s7_opts *o = &((const struct s7_dev *)cn->devs[0]->drv_dev)->o;
    struct s7_conn *c = calloc(1, sizeof *c);
    if (!c) return fb_err_set(err, FB_ENOMEM, "out of memory");
    c->fd = -1;
    snprintf(c->where, sizeof c->where, "%s:%d", o->host, o->port);
    int rc = fb_tcp_connect(o->host, o->port, o->timeout_ns, c->where, &c->fd, err);
    if (rc) {
        free(c);
        return rc;
    }
    /* COTP connection request / confirm */
    int64_t deadline = fb_mono_ns() + o->timeout_ns;
    size_t n = s7_build_cr(c->tx, sizeof c->tx, o->local_tsap, o->remote_tsap);
    rc = fb_net_send_all(c->fd, c->tx, n, deadline);
    int len = rc ? rc : recv_frame(c, deadline);
    struct s7_cotp ct;
    if (len < 0) {
        fb_err_set(err, len,
                   len == FB_ETIMEDOUT ? "%s: no COTP connection confirm (wrong rack/slot or TSAP? remote TSAP 0x%04X)"
                                       : "%s: the PLC closed the connection during the COTP handshake (wrong "
                                         "rack/slot or TSAP? remote TSAP 0x%04X)",
                   c->where, o->remote_tsap);
        goto fail;
    }
    if (s7_cotp_parse(c->rx, (size_t)len, &ct)) {
        rc = fb_err_set(err, FB_EPROTO, "%s: malformed COTP reply (is this an S7 PLC on port %d?)", c->where, o->port);
        goto fail;
    }
    if (ct.kind == S7_COTP_DR) {
        rc = fb_err_set(err, FB_EIO,
                        "%s refused the connection (%s): check rack=%d slot=%d or the TSAPs "
                        "(local 0x%04X, remote 0x%04X)",
                        c->where, s7_cotp_dr_text(ct.reason), o->rack, o->slot, o->local_tsap, o->remote_tsap);
        goto fail;
    }
    if (ct.kind != S7_COTP_CC) {
        rc = fb_err_set(err, FB_EPROTO, "%s: unexpected COTP reply 0x%02X", c->where, ct.kind);
        goto fail;
    }
    /* S7 Setup Communication */
    uint16_t ref = next_ref(c);
    n = s7_build_setup(c->tx, sizeof c->tx, ref, (uint16_t)o->pdu);
    int pl;
    rc = transact(c, n, o->timeout_ns, &pl, err);
    if (rc) goto fail;
    uint16_t herr;
    rc = s7_parse_setup_reply(c->pdubuf, (size_t)pl, ref, &c->pdu, &herr);
    if (rc == FB_EEXCEPTION) {
        rc = fb_err_set(err, FB_EIO, "%s refused Setup Communication: %s", c->where, s7_header_text(herr));
        goto fail;
    }
    if (rc) {
        rc = fb_err_set(err, FB_EPROTO, "%s: malformed Setup Communication reply", c->where);
        goto fail;
    }
    if (c->pdu > o->pdu) c->pdu = o->pdu; /* never exceed what we asked for */
    if (c->pdu > S7_PDU_MAX) c->pdu = S7_PDU_MAX;
    fb_debug(cn->devs[0]->name, NULL, "connected to %s, PDU %d bytes", c->where, c->pdu);
    cn->ctx = c;
    return 0;
fail:
    close(c->fd);
    free(c);
    return rc < 0 ? rc : FB_EIO;
}

/* ------------------------------------------------------------------- read */
static void add_bad(struct fb_batch *out, const struct fb_tag *t, uint32_t q, int64_t ts)
{
    struct fb_value v;
    memset(&v, 0, sizeof v);
    v.type = t->type;
    if (v.type == FB_T_STRING) v.s.p = "";
    fb_batch_add(out, t->id, q, ts, &v);
}

static void mark(struct s7_plan *p, uint32_t r, uint32_t q, uint8_t rc, uint16_t herr)
{
    struct s7_range *rg = &p->ranges[r];
    if (rg->q == FB_Q_GOOD) {
        rg->q = q;
        rg->rc = rc;
        rg->herr = herr;
    }
}

static void log_range(struct fb_device *dev, struct s7_plan *p, struct s7_range *rg, const char *why)
{
    const struct fb_tag *t = &dev->gw->tags[p->tags[rg->first].tag];
    char qn[16], at[48];
    struct s7_addr a = {.area = rg->area,
                        .db = rg->db,
                        .start = rg->area == S7_AREA_C || rg->area == S7_AREA_T ? rg->start / 2 : rg->start};
    fb_warn(dev->name, t->name, "read %s (%u bytes, %u tag%s) failed: %s → %s", s7_addr_text(&a, at, sizeof at),
            rg->len, rg->n, rg->n == 1 ? "" : "s", why, fb_q_name(rg->q, qn));
}

/* Run every request of the plan once; range qualities tell what failed.
 * Returns 0, or the status that must make the core reconnect. */
static int run_requests(struct fb_device *dev, struct s7_conn *c, struct s7_plan *p, struct fb_err *err)
{
    const struct s7_dev *sd = dev->drv_dev;
    struct s7_item items[S7_MAX_ITEMS];
    struct s7_read_result res[S7_MAX_ITEMS];
    for (uint32_t r = 0; r < p->nranges; r++) {
        p->ranges[r].q = FB_Q_GOOD;
        p->ranges[r].rc = 0;
        p->ranges[r].herr = 0;
    }
    for (uint32_t qi = 0; qi < p->nreqs; qi++) {
        const struct s7_req *rq = &p->reqs[qi];
        for (uint32_t k = 0; k < rq->n; k++) {
            const struct s7_chunk *ch = &p->chunks[rq->first + k];
            const struct s7_range *rg = &p->ranges[ch->range];
            bool ct = rg->area == S7_AREA_C || rg->area == S7_AREA_T;
            items[k] = (struct s7_item){.area = rg->area,
                                        .db = rg->db,
                                        .start = ct ? (rg->start + ch->off) / 2 : rg->start + ch->off,
                                        .len = (uint16_t)ch->len};
        }
        uint16_t ref = next_ref(c);
        size_t n = s7_build_read(c->tx, sizeof c->tx, ref, items, rq->n);
        pace(c, dev);
        int64_t t0 = fb_mono_ns();
        int pl = 0;
        atomic_fetch_add(&dev->m.requests, 1);
        int rc = n ? transact(c, n, sd->o.timeout_ns, &pl, err) : FB_EINVAL;
        uint16_t herr = 0;
        if (rc == 0) rc = s7_parse_read_reply(c->pdubuf, (size_t)pl, ref, items, rq->n, res, &herr);
        int64_t t1 = fb_mono_ns();
        if (rc == 0 || rc == FB_EEXCEPTION) {
            atomic_fetch_add(&dev->m.rtt_ns_sum, (uint64_t)(t1 - t0));
            atomic_store(&dev->m.rtt_ns_last, (uint64_t)(t1 - t0));
            atomic_fetch_add(&dev->m.rtt_count, 1);
        }
        if (rc == 0) {
            atomic_store(&dev->m.last_success_ns, fb_now_ns());
            for (uint32_t k = 0; k < rq->n; k++) {
                const struct s7_chunk *ch = &p->chunks[rq->first + k];
                if (res[k].rc == S7_RC_OK) {
                    memcpy(p->data + p->ranges[ch->range].buf_off + ch->off, res[k].data, ch->len);
                } else {
                    atomic_fetch_add(&dev->m.errors, 1); /* an item the PLC refused */
                    mark(p, ch->range, s7_item_quality(res[k].rc, false), res[k].rc, 0);
                }
            }
            continue;
        }
        atomic_fetch_add(&dev->m.errors, 1);
        if (rc == FB_EEXCEPTION) {
            for (uint32_t k = 0; k < rq->n; k++)
                mark(p, p->chunks[rq->first + k].range, s7_header_quality(herr, false), 0, herr);
            continue;
        }
        /* the stream is lost or out of step: everything left is bad, reconnect */
        if (rc == FB_EPROTO && !err->msg[0]) fb_err_set(err, rc, "%s: malformed reply", c->where);
        if (rc == FB_ETIMEDOUT) atomic_fetch_add(&dev->m.timeouts, 1);
        uint32_t q = rc == FB_ETIMEDOUT ? FB_Q_BAD_TIMEOUT : FB_Q_BAD_COMM;
        for (uint32_t k = rq->first; k < p->nchunks; k++) mark(p, p->chunks[k].range, q, 0, 0);
        return rc == FB_EINVAL ? FB_EPROTO : rc;
    }
    return 0;
}

static int s7_read(struct fb_device *dev, struct fb_group *g, struct fb_batch *out)
{
    struct s7_plan *p = g->plan;
    struct s7_conn *c = dev->conn ? dev->conn->ctx : NULL;
    if (!p) return FB_EINVAL;
    if (!c) {
        int64_t ts = fb_now_ns();
        for (uint32_t i = 0; i < p->ntags; i++)
            add_bad(out, &dev->gw->tags[p->tags[i].tag], FB_Q_BAD_NOT_CONNECTED, ts);
        return FB_EIO;
    }
    int final = 0;
    struct fb_err err = {0};
    for (int attempt = 0;; attempt++) {
        if (p->pdu != c->pdu) {
            struct fb_err e = {0};
            if (s7_plan_layout(p, c->pdu, &e) < 0) {
                fb_error(dev->name, NULL, "cannot plan reads for PDU %d: %s", c->pdu, e.msg);
                int64_t ts = fb_now_ns();
                for (uint32_t i = 0; i < p->ntags; i++)
                    add_bad(out, &dev->gw->tags[p->tags[i].tag], FB_Q_BAD_INTERNAL, ts);
                p->pdu = 0;
                return 0;
            }
        }
        final = run_requests(dev, c, p, &err);
        if (final) break;
        /* "address out of range" on a merge: split it for good and read again once */
        bool split = false;
        for (uint32_t r = 0; r < p->nranges; r++) {
            struct s7_range *rg = &p->ranges[r];
            if (rg->rc == 0x05 && rg->n > 1) {
                fb_info(dev->name, dev->gw->tags[p->tags[rg->first].tag].name,
                        "a merged read of %u tags was out of range: reading them one by one from now on", rg->n);
                s7_plan_split(p, r);
                split = true;
            }
        }
        if (!split || attempt) break;
    }
    int64_t ts = fb_now_ns();
    for (uint32_t r = 0; r < p->nranges; r++) {
        struct s7_range *rg = &p->ranges[r];
        if (fb_q_bad(rg->q) && (!rg->seen || rg->q != rg->last_q) && !final)
            log_range(dev, p, rg, rg->herr ? s7_header_text(rg->herr) : s7_item_text(rg->rc));
        else if (rg->q == FB_Q_GOOD && rg->seen && fb_q_bad(rg->last_q))
            fb_info(dev->name, dev->gw->tags[p->tags[rg->first].tag].name, "read recovered");
        rg->last_q = rg->q;
        rg->seen = true;
    }
    /* samples in the order the group lists its tags */
    for (uint32_t i = 0; i < p->ntags; i++) {
        const struct s7_ptag *pt = &p->tags[p->order[i]];
        const struct s7_range *rg = &p->ranges[pt->range];
        const struct fb_tag *t = &dev->gw->tags[pt->tag];
        if (rg->q != FB_Q_GOOD) {
            add_bad(out, t, rg->q, ts);
            continue;
        }
        struct fb_value v;
        uint32_t q = s7_decode(pt->a, p->data + rg->buf_off + pt->off, &v, c->sbuf, sizeof c->sbuf);
        if (q != FB_Q_GOOD) {
            atomic_fetch_add(&dev->m.errors, 1); /* a value the PLC gave us unusable */
            add_bad(out, t, q, ts);
        } else {
            fb_batch_add(out, t->id, FB_Q_GOOD, ts, &v);
        }
    }
    if (final) fb_warn(dev->name, NULL, "%s", err.msg[0] ? err.msg : fb_strerror(final));
    return final;
}

/* ------------------------------------------------------------------ write */
static int write_items(struct fb_device *dev, struct s7_conn *c, const struct fb_tag *t, const struct s7_item *it,
                       const uint8_t *data, struct fb_err *err)
{
    const struct s7_dev *sd = dev->drv_dev;
    char ab[FB_ATEXT_MAX];
    const char *at = fb_tag_addr_text(dev->gw, t, ab);
    uint16_t ref = next_ref(c);
    const uint8_t *dp[1] = {data};
    size_t n = s7_build_write(c->tx, sizeof c->tx, ref, it, dp, 1);
    if (!n) return fb_err_set(err, FB_EINVAL, "write frame too large");
    pace(c, dev);
    int pl;
    struct fb_err e2 = {0};
    int rc = transact(c, n, sd->o.timeout_ns, &pl, &e2);
    if (rc) return fb_err_set(err, rc, "write to %s (%s) failed: %s", t->name, at, e2.msg);
    uint8_t irc = 0;
    uint16_t herr = 0;
    rc = s7_parse_write_reply(c->pdubuf, (size_t)pl, ref, 1, &irc, &herr);
    if (rc == FB_EEXCEPTION)
        return fb_err_set(err, (herr >> 8) == 0x87 || herr == 0x8104 || herr == 0x8304 ? FB_EACCES : FB_EEXCEPTION,
                          "write to %s (%s) refused: %s", t->name, at, s7_header_text(herr));
    if (rc) return fb_err_set(err, FB_EPROTO, "write to %s (%s): malformed reply", t->name, at);
    if (irc != S7_RC_OK)
        return fb_err_set(err,
                          irc == 0x03                  ? FB_EACCES
                          : irc == 0x0A || irc == 0x05 ? FB_ENOENT
                                                       : FB_EEXCEPTION,
                          "write to %s (%s) refused: %s", t->name, at, s7_item_text(irc));
    return 0;
}

static int s7_write(struct fb_device *dev, const struct fb_tag *t, const struct fb_value *v, struct fb_err *err)
{
    const struct s7_addr *a = t->addr;
    struct s7_conn *c = dev->conn ? dev->conn->ctx : NULL;
    if (!a) return fb_err_set(err, FB_EINVAL, "tag %s has no address", t->name);
    if (!c) return fb_err_set(err, FB_EIO, "%s: not connected", dev->name);
    int n = s7_encode(a, v, c->wbuf, sizeof c->wbuf, err);
    if (n < 0) return n;
    /* writes and write errors are counted by the runtime */
    if (a->type == S7_BOOL) {
        struct s7_item it = {.area = a->area, .db = a->db, .start = a->start, .bit = a->bit, .is_bit = true, .len = 1};
        return write_items(dev, c, t, &it, c->wbuf, err);
    }
    bool ct = a->area == S7_AREA_C || a->area == S7_AREA_T;
    uint32_t max = s7_max_write_len(c->pdu) & ~1u;
    uint32_t base = ct ? a->start * 2 : a->start;
    for (uint32_t off = 0; off < (uint32_t)n; off += max) {
        uint32_t len = (uint32_t)n - off < max ? (uint32_t)n - off : max;
        struct s7_item it = {
            .area = a->area, .db = a->db, .start = ct ? (base + off) / 2 : base + off, .len = (uint16_t)len};
        int rc = write_items(dev, c, t, &it, c->wbuf + off, err);
        if (rc) return rc;
    }
    return 0;
}

static const char *const s7_schemes[] = {"s7", NULL};

/* A config reload keeps the connection (model.h): the plans (laid out for
 * the negotiated PDU, with the items found to need reading alone) stay with
 * the running model; they name tags by id, which may have moved. */
static void s7_adopt(struct fb_conn *c, struct fb_conn *old)
{
    fb_adopt_swap(c, old, FB_ADOPT_DEV | FB_ADOPT_ADDR | FB_ADOPT_PLAN);
    for (uint32_t k = 0; k < c->ndevs; k++) {
        int64_t shift = fb_adopt_tag_shift(c, old, k);
        for (uint32_t g = 0; g < c->devs[k]->ngroups; g++) {
            struct s7_plan *p = c->devs[k]->groups[g].plan;
            for (uint32_t i = 0; p && i < p->ntags; i++) p->tags[i].tag = (uint32_t)((int64_t)p->tags[i].tag + shift);
        }
    }
}

const struct fb_driver fb_driver_s7 = {
    .name = "s7",
    .schemes = s7_schemes,
    .device_init = s7_device_init,
    .device_free = s7_device_free,
    .parse_address = s7_parse_address,
    .free_address = s7_free_address,
    .plan = s7_plan_cb,
    .plan_free = s7_plan_free_cb,
    .open = s7_open,
    .read = s7_read,
    .write = s7_write,
    .close = s7_close,
    .adopt = s7_adopt,
};
