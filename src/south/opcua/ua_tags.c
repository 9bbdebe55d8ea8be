/* ua_tags.c — the OPC UA driver's tags: node ids or browse paths (resolved
 * at every open, so a server whose ids changed is followed), the DataType of
 * every node (for writes, and the type of untyped tags in the CLI), and a
 * DataValue turned into a sample of the tag's type. */
#include "south/opcua/ua_tags.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/plugin.h"

void ua_addr_free(struct ua_addr *a)
{
    if (!a) return;
    ua_nodeid_clear(&a->node);
    ua_path_clear(&a->path);
    free(a);
}

/* ------------------------------------------------------------ resolution */
static int resolve_batch(struct ua_conn *c, struct ua_addr **addrs, uint32_t n, struct fb_err *err)
{
    const struct ua_relpath *paths[64];
    for (uint32_t k = 0; k < n; k++) paths[k] = &addrs[k]->path;
    struct ua_enc e;
    ua_enc_init(&e, c->body, UA_BODY_CAP);
    struct ua_reqhdr h = ua_reqhdr(c, 0);
    ua_translate_req(&e, &h, paths, n);
    if (e.err) return fb_err_set(err, FB_EINVAL, "TranslateBrowsePaths request too large");
    int rc = ua_call(c, e.len, err);
    if (rc) return rc;
    struct ua_dec d;
    ua_dec_init(&d, c->ra.buf, c->ra.len);
    struct ua_resphdr rh;
    int32_t cnt;
    rc = ua_translate_resp(&d, &rh, &cnt);
    if (rc) return ua_svc_error(c, "TranslateBrowsePathsToNodeIds", rc, &rh, err);
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
int ua_resolve_paths(struct ua_conn *c, struct fb_conn *fc, struct fb_err *err)
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
int ua_read_datatypes(struct ua_conn *c, struct fb_conn *fc, struct fb_err *err)
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
        if (fb_runtime_running(d->gw)) adopt = false; /* the gateway sized its buffers already */
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
    rc = ua_read_attr(c, nodes, n, UA_ATTR_DATATYPE, 3, dt_cb, &x, err);
    if (rc == FB_EEXCEPTION) rc = 0; /* not fatal: types are then learnt on write */
out:
    free(nodes);
    free(addrs);
    free(tags);
    return rc;
}

/* ------------------------------------------------------------ values */
void ua_fill_sample(const struct fb_tag *t, const struct ua_addr *a, const struct ua_datavalue *dv, uint32_t *q,
                    int64_t *ts, struct fb_value *v, char *sbuf, size_t cap)
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

void ua_add_bad(struct fb_batch *out, const struct fb_tag *t, uint32_t q, int64_t ts)
{
    struct fb_value v;
    memset(&v, 0, sizeof v);
    v.type = t->type;
    if (v.type == FB_T_STRING) v.s.p = "";
    fb_batch_add(out, t->id, q, ts, &v);
}
