/* shadow.c — the device shadow / digital twin (shadow.h; docs/fleet.md#device-shadow).
 *
 * Why this shape: fleet back-ends (AWS IoT, Azure twins, home-made ones
 * modelled on them) think in one document per thing with `desired` and
 * `reported` state, a `delta` between them, a version for optimistic locking
 * and client tokens to match answers to requests.  fieldbridge keeps that
 * document itself, on the gateway's own topics, so any broker will do.
 *
 *   reported  the chosen tags' latest good values (state.reported.devices.
 *             <device>.<tag>) and the gateway's settings (state.reported.
 *             gateway: id, site, software, config version, lifecycle state),
 *             merged at most every `report_interval` when they changed;
 *   desired   what the cloud sends on shadow/update; only writable tags the
 *             shadow names may be desired, each value validated like a write
 *             command (type, range) before anything is accepted — a bad one
 *             rejects the whole update with the reason per tag;
 *   writes    an accepted desired value goes through the command router's
 *             write path (fb_cmd_process: the same validation, logging,
 *             lifecycle rules) once; a write that fails (device offline) stays
 *             pending in the metadata and is retried every `retry_interval`
 *             while the device is online, at most RETRY_MAX times;
 *   persisted the document is written crash-safe (temporary file, fsync,
 *             rename) after every change, so a restart neither forgets the
 *             version nor writes again what was already applied.
 *
 * Threads: the sink thread (send: values into slots, no allocation; tick:
 * the reported merge and the retries) and the router thread (the commands
 * and the writes) share the document under ctx->mu; the writes run without
 * it.  The router thread finds the running shadow through gw->sinks (a
 * reload, which replaces sinks, also runs on the router thread).
 */
#include "fleet/shadow.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch.h"
#include "core/batch_codec.h"
#include "core/buf.h"
#include "core/fleet_cfg.h"
#include "core/health.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/runtime_state.h"
#include "fleet/hooks.h"
#include "fleet/outbox.h"
#include "fleet/shadow_doc.h"

#define RETRY_MAX 10
#define SLOT_STR 128
#define DOC_MAX_BYTES (256u << 10) /* a persisted document larger than this is refused */
#define TOKEN_MAX 64

/* ------------------------------------------------------------------ config */
struct sh_ref {
    char *dev, *tag; /* tag NULL: every tag of the device ("*") */
    struct fb_cfg_mark mark;
};

struct sh_cfg {
    struct sh_ref *refs;
    uint32_t nrefs;
    int64_t report_ns, retry_ns;
    char *file;
};

static const char *const k_shadow[] = {"tags", "report_interval", "retry_interval", "file", NULL};

static void sh_cfg_free(void *p)
{
    struct sh_cfg *c = p;
    if (!c) return;
    for (uint32_t i = 0; i < c->nrefs; i++) {
        free(c->refs[i].dev);
        free(c->refs[i].tag);
    }
    free(c->refs);
    free(c->file);
    free(c);
}

static bool add_ref(struct sh_cfg *c, const char *dev, const char *tag, const struct fb_cfg_node *n)
{
    struct sh_ref *v = realloc(c->refs, (c->nrefs + 1) * sizeof *v);
    if (!v) return false;
    c->refs = v;
    struct sh_ref *r = &v[c->nrefs];
    r->dev = strdup(dev);
    r->tag = tag && strcmp(tag, "*") ? strdup(tag) : NULL;
    r->mark = fb_cfg_mark(n);
    c->nrefs++;
    return r->dev != NULL;
}

static void *sh_cfg_load(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw)
{
    struct sh_cfg *c = calloc(1, sizeof *c);
    if (!c) {
        fb_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    c->report_ns = 5000000000LL;
    c->retry_ns = 30000000000LL;
    struct fb_cfg_node *n;
    if ((n = fb_cfg_get(m, "report_interval"))) fb_cfg_dur(r, NULL, n, "shadow.report_interval", true, &c->report_ns);
    if ((n = fb_cfg_get(m, "retry_interval"))) fb_cfg_dur(r, NULL, n, "shadow.retry_interval", true, &c->retry_ns);
    if ((n = fb_cfg_get(m, "file"))) {
        char *v = fb_cfg_str(r, NULL, n, "shadow.file");
        if (v) c->file = fb_cfg_path(r, v);
        free(v);
    } else if (gw->fleet && gw->fleet->state_dir) {
        size_t len = strlen(gw->fleet->state_dir) + 16;
        if ((c->file = malloc(len))) snprintf(c->file, len, "%s/shadow.json", gw->fleet->state_dir);
    } else {
        fb_cfg_error(r, NULL,
                     "shadow: needs fleet.state_dir or shadow.file (where the shadow document is kept across "
                     "restarts)");
    }
    struct fb_cfg_node *tn = fb_cfg_get(m, "tags");
    struct fb_cfg_map t = {0};
    if (!tn) {
        fb_cfg_error(r, NULL, "shadow.tags: missing (device: [tag, …] or device: \"*\")");
    } else if (fb_cfg_map_load(r, tn, "shadow.tags", &t)) {
        for (int i = 0; i < t.n; i++) {
            const char *dev = t.kv[i].key;
            struct fb_cfg_node *v = t.kv[i].v;
            if (!v) {
                fb_cfg_error(r, t.kv[i].k, "shadow.tags.%s: a list of tag names, or \"*\" for all", dev);
                continue;
            }
            if (fb_cfg_kind(v) == FB_CFG_SCALAR) {
                const char *s = fb_cfg_scalar(v);
                if (s && !strcmp(s, "*"))
                    add_ref(c, dev, "*", v);
                else
                    fb_cfg_error(r, v, "shadow.tags.%s: a list of tag names, or \"*\" for all", dev);
                continue;
            }
            size_t k = fb_cfg_list_len(v);
            if (fb_cfg_kind(v) != FB_CFG_LIST || k == 0) {
                fb_cfg_error(r, v, "shadow.tags.%s: a list of tag names, or \"*\" for all", dev);
                continue;
            }
            for (size_t j = 0; j < k; j++) {
                struct fb_cfg_node *e = fb_cfg_list_at(r, v, j);
                char *name = e ? fb_cfg_str(r, NULL, e, "shadow.tags") : NULL;
                if (name) add_ref(c, dev, name, e);
                free(name);
            }
        }
        fb_cfg_map_free(&t);
    }
    return c;
}

static void sh_describe(const struct fb_sink_inst *s, FILE *f)
{
    const struct sh_cfg *c = s->cfg;
    fprintf(f, "  sink shadow  %u tag reference%s, reported every %.1fs, kept in %s\n", c->nrefs,
            c->nrefs == 1 ? "" : "s", c->report_ns / 1e9, c->file ? c->file : "?");
}

void fb_shadow_cfg_check(struct fb_cfg *r, struct fb_gateway *gw)
{
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        if (gw->sinks[i].sink != &fb_sink_shadow || !gw->sinks[i].cfg) continue;
        const struct sh_cfg *c = gw->sinks[i].cfg;
        for (uint32_t k = 0; k < c->nrefs; k++) {
            struct fb_device *d = fb_gw_device(gw, c->refs[k].dev);
            if (!d)
                fb_cfg_error_at(r, c->refs[k].mark, "shadow.tags: no device named %s", c->refs[k].dev);
            else if (c->refs[k].tag && !fb_gw_tag(gw, d, c->refs[k].tag))
                fb_cfg_error_at(r, c->refs[k].mark, "shadow.tags.%s: device %s has no tag %s", c->refs[k].dev,
                                c->refs[k].dev, c->refs[k].tag);
        }
    }
}

/* ----------------------------------------------------------------- running */
struct sh_slot {
    uint32_t tag;
    bool have, dirty;
    struct fb_value v;
    char s[SLOT_STR];
};

struct sh_ctx {
    struct fb_sink_inst *s;
    struct fb_gateway *gw;
    const struct sh_cfg *cfg;
    pthread_mutex_t mu; /* everything below, between the sink thread and the router thread */
    struct fb_shadow_doc doc;
    uint32_t *slot_of; /* tag id → slot, UINT32_MAX = not in the shadow */
    uint32_t ntags;
    struct sh_slot *slots;
    uint32_t nslots;
    bool dirty;
    int64_t next_report, next_retry; /* monotonic */
    char *last_delta;                /* the delta last published (compact JSON) */
    atomic_bool sync_asked;
};

static int64_t now_s(void) { return fb_now_ns() / 1000000000LL; }

static void publish(struct sh_ctx *ctx, const char *suffix, json_t *j)
{
    char *p = json_dumps(j, JSON_COMPACT);
    if (p) fb_outbox_put(fb_fleet_outbox(ctx->gw), suffix, p, strlen(p));
    free(p);
}

/* Kept: the document as fb_shadow_doc_json writes it.  Under mu. */
static void persist(struct sh_ctx *ctx)
{
    json_t *j = fb_shadow_doc_json(&ctx->doc);
    char *p = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    struct fb_err e = {0};
    if (!p || fb_fleet_write_atomic(ctx->cfg->file, p, strlen(p), &e) < 0)
        fb_error(NULL, NULL, "shadow: not kept: %s", p ? e.msg : "out of memory");
    free(p);
}

static void load(struct sh_ctx *ctx)
{
    json_error_t je;
    json_t *j = json_load_file(ctx->cfg->file, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        FILE *f = fopen(ctx->cfg->file, "r");
        if (f) { /* there but unreadable: say so, start afresh (the version starts over) */
            fclose(f);
            fb_error(NULL, NULL, "shadow: %s: %s (line %d); starting with an empty shadow", ctx->cfg->file, je.text,
                     je.line);
        }
        return;
    }
    char why[200];
    if (fb_shadow_doc_from_json(&ctx->doc, j, why, sizeof why) < 0)
        fb_error(NULL, NULL, "shadow: %s: %s; starting with an empty shadow", ctx->cfg->file, why);
    else
        fb_info(NULL, NULL, "shadow: version %lld from %s", (long long)ctx->doc.version, ctx->cfg->file);
    json_decref(j);
}

/* The delta message when the delta changed since the last one.  Under mu. */
static void publish_delta(struct sh_ctx *ctx, const char *token, bool force)
{
    json_t *delta = fb_shadow_delta(ctx->doc.desired, ctx->doc.reported);
    char *p = delta ? json_dumps(delta, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!p) {
        json_decref(delta);
        return;
    }
    bool same = ctx->last_delta && !strcmp(ctx->last_delta, p);
    if ((!same || force) && (json_object_size(delta) > 0 || (ctx->last_delta && strcmp(ctx->last_delta, "{}")))) {
        json_t *meta = fb_shadow_delta(ctx->doc.meta_desired, NULL); /* desired's metadata, copied */
        json_t *m = json_pack("{s:O,s:o,s:I,s:I}", "state", delta, "metadata", meta, "version",
                              (json_int_t)ctx->doc.version, "timestamp", (json_int_t)now_s());
        if (m && token) json_object_set_new(m, "clientToken", json_string(token));
        if (m) publish(ctx, "shadow/update/delta", m);
        json_decref(m);
    }
    free(ctx->last_delta);
    ctx->last_delta = p;
    json_decref(delta);
}

/* ------------------------------------------------------------ values → json */
static json_t *value_json(const struct fb_value *v)
{
    switch (v->type) {
        case FB_T_BOOL: return json_boolean(v->b);
        case FB_T_INT8:
        case FB_T_INT16:
        case FB_T_INT32:
        case FB_T_INT64: return json_integer(v->i);
        case FB_T_UINT8:
        case FB_T_UINT16:
        case FB_T_UINT32:
        case FB_T_UINT64: return v->u > (uint64_t)INT64_MAX ? json_real((double)v->u) : json_integer((json_int_t)v->u);
        case FB_T_FLOAT32:
        case FB_T_FLOAT64: return isfinite(v->f) ? json_real(v->f) : json_null();
        case FB_T_STRING: return json_stringn(v->s.p, v->s.len);
        default: return json_null();
    }
}

/* state.reported.gateway: who the gateway is and what it runs. */
static json_t *gateway_json(struct fb_gateway *gw)
{
    int st = gw->rt ? atomic_load(&gw->rt->gw_state) : FB_GW_ONLINE;
    json_t *g = json_pack("{s:s,s:s,s:s,s:s}", "id", gw->id ? gw->id : "", "site", gw->site ? gw->site : "", "software",
                          "fieldbridge " FB_VERSION, "state", fb_gw_state_name(st));
    if (g) json_object_set_new(g, "config_version", gw->cfg_version ? json_string(gw->cfg_version) : json_null());
    return g;
}

/* ---------------------------------------------------------------- the sink */
/* The slots of the tags the config names in model gw: slot_of (per tag id)
 * and slots (room for every tag) filled, the number of slots returned. */
static uint32_t make_slots(struct fb_gateway *gw, const struct sh_cfg *cfg, uint32_t *slot_of,
                           struct sh_slot *slots)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < gw->ntags; i++) slot_of[i] = UINT32_MAX;
    for (uint32_t k = 0; k < cfg->nrefs; k++) {
        const struct sh_ref *r = &cfg->refs[k];
        struct fb_device *d = fb_gw_device(gw, r->dev);
        if (!d) continue; /* the config check said so */
        for (uint32_t t = d->first_tag; t < d->first_tag + d->ntags; t++) {
            if (r->tag && strcmp(gw->tags[t].name, r->tag)) continue;
            if (slot_of[t] != UINT32_MAX) continue;
            slot_of[t] = n;
            slots[n++].tag = t;
        }
    }
    return n;
}

static int sh_open(struct fb_sink_inst *s, struct fb_err *err)
{
    struct sh_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return fb_err_set(err, FB_ENOMEM, "out of memory");
    ctx->s = s;
    ctx->gw = s->gw;
    ctx->cfg = s->cfg;
    pthread_mutex_init(&ctx->mu, NULL);
    fb_shadow_doc_init(&ctx->doc);
    struct fb_gateway *gw = s->gw;
    ctx->ntags = gw->ntags;
    ctx->slot_of = malloc((gw->ntags ? gw->ntags : 1) * sizeof *ctx->slot_of);
    ctx->slots = calloc(gw->ntags ? gw->ntags : 1, sizeof *ctx->slots);
    if (!ctx->slot_of || !ctx->slots || !ctx->doc.desired || !ctx->doc.meta_reported) {
        free(ctx->slot_of);
        free(ctx->slots);
        fb_shadow_doc_clear(&ctx->doc);
        free(ctx);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    ctx->nslots = make_slots(gw, ctx->cfg, ctx->slot_of, ctx->slots);
    load(ctx);
    ctx->next_report = fb_mono_ns(); /* the gateway's settings at once */
    ctx->next_retry = fb_mono_ns();
    s->ctx = ctx;
    atomic_store(&s->m.connected, 1);
    fb_info(NULL, NULL, "shadow: %u tags, version %lld, kept in %s", ctx->nslots, (long long)ctx->doc.version,
            ctx->cfg->file);
    return 0;
}

/* Sink thread: the chosen tags' latest good values into their slots. */
static int sh_send(struct fb_sink_inst *s, const struct fb_batch *b, uint64_t batch_id)
{
    struct sh_ctx *ctx = s->ctx;
    if (ctx && b->kind == FB_BATCH_DATA) {
        pthread_mutex_lock(&ctx->mu);
        for (uint32_t i = 0; i < b->n; i++) {
            const struct fb_sample *x = &b->s[i];
            if (x->tag >= ctx->ntags || ctx->slot_of[x->tag] == UINT32_MAX) continue;
            if ((x->quality & FB_Q_BAD) || (x->flags & FB_SF_HISTORICAL)) continue;
            struct sh_slot *sl = &ctx->slots[ctx->slot_of[x->tag]];
            struct fb_value v = x->v;
            if (v.type == FB_T_STRING) {
                uint32_t n = v.s.len < SLOT_STR ? v.s.len : SLOT_STR;
                if (n) memcpy(sl->s, v.s.p, n);
                v.s.p = sl->s;
                v.s.len = n;
            }
            if (sl->have && fb_value_equal(&sl->v, &v)) continue;
            sl->v = v;
            sl->have = sl->dirty = true;
            ctx->dirty = true;
        }
        pthread_mutex_unlock(&ctx->mu);
    }
    fb_sink_done(s, batch_id, FB_SENT);
    return 0;
}

static bool sh_ready(struct fb_sink_inst *s, bool pace)
{
    (void)pace;
    return s->ctx != NULL;
}

/* Whether a desired leaf's metadata says its write is still to be done. */
static bool leaf_pending(const json_t *m) { return json_is_true(json_object_get(m, "pending")); }

/* Any pending write for a device that is online.  Under mu. */
static bool any_pending(struct sh_ctx *ctx)
{
    json_t *devs = json_object_get(ctx->doc.meta_desired, "devices");
    const char *dn, *tn;
    json_t *dm, *tm;
    json_object_foreach(devs, dn, dm)
    {
        struct fb_device *d = fb_gw_device(ctx->gw, dn);
        if (!d || atomic_load(&d->state) != FB_DEV_ONLINE) continue;
        json_object_foreach(dm, tn, tm) if (leaf_pending(tm)) return true;
    }
    return false;
}

static void submit_sync(struct sh_ctx *ctx)
{
    struct fb_cmd *cmd = calloc(1, sizeof *cmd);
    if (!cmd || !(cmd->payload = strdup("{}"))) {
        free(cmd);
        return;
    }
    cmd->len = 2;
    cmd->kind = FB_CMD_GATEWAY;
    cmd->device = UINT32_MAX;
    cmd->qos = -1;
    snprintf(cmd->topic, sizeof cmd->topic, "shadow/sync");
    snprintf(cmd->source, sizeof cmd->source, "fleet:shadow");
    atomic_store(&ctx->sync_asked, true);
    fb_router_submit(ctx->gw, cmd);
}

/* Sink thread: merge what changed into reported, at most every report_interval. */
static void sh_tick(struct fb_sink_inst *s)
{
    struct sh_ctx *ctx = s->ctx;
    if (!ctx) return;
    int64_t now = fb_mono_ns();
    pthread_mutex_lock(&ctx->mu);
    if (now >= ctx->next_report) {
        ctx->next_report = now + ctx->cfg->report_ns;
        json_t *patch = json_object(), *devs = json_object();
        for (uint32_t i = 0; ctx->dirty && i < ctx->nslots; i++) {
            struct sh_slot *sl = &ctx->slots[i];
            if (!sl->dirty) continue;
            sl->dirty = false;
            const struct fb_tag *t = &ctx->gw->tags[sl->tag];
            const char *dn = ctx->gw->devs[t->device].name;
            json_t *d = json_object_get(devs, dn);
            if (!d) {
                json_object_set_new(devs, dn, json_object());
                d = json_object_get(devs, dn);
            }
            json_object_set_new(d, t->name, value_json(&sl->v));
        }
        ctx->dirty = false;
        if (json_object_size(devs)) json_object_set(patch, "devices", devs);
        json_decref(devs);
        json_object_set_new(patch, "gateway", gateway_json(ctx->gw));
        json_t *prev = fb_shadow_doc_json(&ctx->doc);
        int64_t ts = now_s();
        if (fb_shadow_merge(ctx->doc.reported, ctx->doc.meta_reported, patch, ts)) {
            ctx->doc.version++;
            ctx->doc.timestamp = ts;
            persist(ctx);
            json_t *cur = fb_shadow_doc_json(&ctx->doc);
            json_t *m = json_pack("{s:O,s:O,s:I}", "previous", prev, "current", cur, "timestamp", (json_int_t)ts);
            if (m) publish(ctx, "shadow/update/documents", m);
            json_decref(m);
            json_decref(cur);
            publish_delta(ctx, NULL, false);
        }
        json_decref(prev);
        json_decref(patch);
    }
    bool retry = now >= ctx->next_retry && !atomic_load(&ctx->sync_asked) && any_pending(ctx);
    if (retry) ctx->next_retry = now + ctx->cfg->retry_ns;
    pthread_mutex_unlock(&ctx->mu);
    if (retry) submit_sync(ctx);
}

static void sh_close(struct fb_sink_inst *s)
{
    struct sh_ctx *ctx = s->ctx;
    if (!ctx) return;
    s->ctx = NULL;
    atomic_store(&s->m.connected, 0);
    fb_shadow_doc_clear(&ctx->doc);
    pthread_mutex_destroy(&ctx->mu);
    free(ctx->slot_of);
    free(ctx->slots);
    free(ctx->last_delta);
    free(ctx);
}

static bool str_same(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

/* Every setting of the section: the tag references (in order: the slots
 * follow it), the intervals and the file. */
static bool sh_cfg_equal(const void *a, const void *b)
{
    const struct sh_cfg *x = a, *y = b;
    if (!x || !y) return x == y;
    if (x->nrefs != y->nrefs || x->report_ns != y->report_ns || x->retry_ns != y->retry_ns ||
        !str_same(x->file, y->file))
        return false;
    for (uint32_t i = 0; i < x->nrefs; i++)
        if (!str_same(x->refs[i].dev, y->refs[i].dev) || !str_same(x->refs[i].tag, y->refs[i].tag)) return false;
    return true;
}

/* A reload keeps the shadow (same section) while the devices or tags
 * change.  The document (version, reported, desired and its pending writes)
 * is by device and tag name and stays as it is; what is by tag id — the
 * slots of the chosen tags — is made again for the new model, each tag that
 * is still there keeping its latest value (and whether it is still to be
 * reported).  The router thread (the commands) is the one reloading and the
 * sink thread is parked, so nobody else looks at the slots meanwhile; mu is
 * held from begin to end all the same. */
static void sh_model_begin(struct fb_sink_inst *s)
{
    struct sh_ctx *ctx = s->ctx;
    if (ctx) pthread_mutex_lock(&ctx->mu);
}

static void sh_model_end(struct fb_sink_inst *s, const struct fb_model_map *map)
{
    struct sh_ctx *ctx = s->ctx;
    if (!ctx) return;
    struct fb_gateway *gw = ctx->gw; /* the new model now */
    uint32_t *slot_of = malloc((gw->ntags ? gw->ntags : 1) * sizeof *slot_of);
    struct sh_slot *slots = calloc(gw->ntags ? gw->ntags : 1, sizeof *slots);
    if (!slot_of || !slots) { /* the old slots name the old ids: no values until memory is there again */
        free(slot_of);
        free(slots);
        fb_error(NULL, NULL, "shadow: out of memory after the reload; no tag is reported until the next one");
        for (uint32_t i = 0; i < ctx->ntags; i++) ctx->slot_of[i] = UINT32_MAX;
        ctx->nslots = 0;
        pthread_mutex_unlock(&ctx->mu);
        return;
    }
    uint32_t n = make_slots(gw, ctx->cfg, slot_of, slots);
    for (uint32_t i = 0; i < ctx->nslots; i++) {
        const struct sh_slot *o = &ctx->slots[i];
        uint32_t t = o->tag < map->ntags ? map->tag[o->tag] : UINT32_MAX;
        if (t == UINT32_MAX || t >= gw->ntags || slot_of[t] == UINT32_MAX || !o->have) continue;
        /* a value of another type (the tag's type or scaling changed) is not this tag's: wait for a new one */
        if (o->v.type != fb_tag_out_type(&gw->tags[t])) continue;
        struct sh_slot *sl = &slots[slot_of[t]];
        sl->have = true;
        sl->dirty = o->dirty;
        sl->v = o->v;
        memcpy(sl->s, o->s, sizeof sl->s);
        if (sl->v.type == FB_T_STRING) sl->v.s.p = sl->s;
    }
    free(ctx->slot_of);
    free(ctx->slots);
    ctx->slot_of = slot_of;
    ctx->slots = slots;
    ctx->ntags = gw->ntags;
    ctx->nslots = n;
    fb_info(NULL, NULL, "shadow: kept across the reload (version %lld, %u tags)", (long long)ctx->doc.version, n);
    pthread_mutex_unlock(&ctx->mu);
}

const struct fb_sink fb_sink_shadow = {
    .name = "shadow",
    .keys = k_shadow,
    .live = true,
    .cfg_load = sh_cfg_load,
    .cfg_free = sh_cfg_free,
    .describe = sh_describe,
    .open = sh_open,
    .send = sh_send,
    .ready = sh_ready,
    .tick = sh_tick,
    .close = sh_close,
    .cfg_equal = sh_cfg_equal,
    .model_begin = sh_model_begin,
    .model_end = sh_model_end,
};

/* ----------------------------------------------------------- the commands */
static struct sh_ctx *running(struct fb_gateway *gw)
{
    for (uint32_t i = 0; gw && i < gw->nsinks; i++)
        if (gw->sinks[i].sink == &fb_sink_shadow && gw->sinks[i].ctx) return gw->sinks[i].ctx;
    return NULL;
}

static void reject(struct fb_gateway *gw, const char *suffix, int code, const char *msg, const char *token,
                   json_t *errors)
{
    json_t *m = json_pack("{s:i,s:s,s:I}", "code", code, "message", msg, "timestamp", (json_int_t)now_s());
    if (m && token) json_object_set_new(m, "clientToken", json_string(token));
    if (m && errors) json_object_set(m, "errors", errors);
    char *p = m ? json_dumps(m, JSON_COMPACT) : NULL;
    if (p) fb_outbox_put(fb_fleet_outbox(gw), suffix, p, strlen(p));
    fb_warn(NULL, NULL, "shadow: %s %d: %s", suffix, code, msg);
    free(p);
    json_decref(m);
}

/* Set errors.devices.<dev>.<tag> = why. */
static void add_error(json_t *errors, const char *dev, const char *tag, const char *why)
{
    json_t *d = json_object_get(errors, "devices");
    if (!d) {
        json_object_set_new(errors, "devices", json_object());
        d = json_object_get(errors, "devices");
    }
    json_t *t = json_object_get(d, dev);
    if (!t) {
        json_object_set_new(d, dev, json_object());
        t = json_object_get(d, dev);
    }
    json_object_set_new(t, tag ? tag : "*", json_string(why));
}

/* Every desired leaf a target the shadow can write, with a valid value.
 * Router thread, the model stable. */
static void validate(struct sh_ctx *ctx, const json_t *desired, json_t *errors)
{
    const char *k, *dn, *tn;
    json_t *v, *dv, *tv;
    json_object_foreach((json_t *)desired, k, v)
    {
        if (strcmp(k, "devices")) {
            json_object_set_new(errors, k,
                                json_string("only state.desired.devices can be desired (gateway settings are "
                                            "reported)"));
            continue;
        }
        if (json_is_null(v)) continue;
        if (!json_is_object(v)) {
            add_error(errors, "*", NULL, "state.desired.devices: an object {device: {tag: value}}");
            continue;
        }
        json_object_foreach(v, dn, dv)
        {
            struct fb_device *d = fb_gw_device(ctx->gw, dn);
            if (!d) {
                add_error(errors, dn, NULL, "no such device");
                continue;
            }
            if (json_is_null(dv)) continue;
            if (!json_is_object(dv)) {
                add_error(errors, dn, NULL, "an object {tag: value} expected");
                continue;
            }
            json_object_foreach(dv, tn, tv)
            {
                struct fb_tag *t = fb_gw_tag(ctx->gw, d, tn);
                if (!t) {
                    add_error(errors, dn, tn, "no such tag");
                    continue;
                }
                if (ctx->slot_of[t->id] == UINT32_MAX) {
                    add_error(errors, dn, tn, "not in the shadow (shadow.tags)");
                    continue;
                }
                if (!(t->access & FB_ACC_WRITE)) {
                    add_error(errors, dn, tn, "tag is read-only");
                    continue;
                }
                if (json_is_null(tv)) continue;
                struct fb_value raw;
                char sbuf[256];
                struct fb_err e = {0};
                if (fb_cmd_convert(t, tv, &raw, sbuf, sizeof sbuf, &e) < 0) add_error(errors, dn, tn, e.msg);
            }
        }
    }
}

/* Write the given leaves ({dev: {tag: value}}) through the router's write
 * path, one command per device, and record each result in the desired
 * metadata.  Router thread, without mu; takes it to record. */
static void do_writes(struct sh_ctx *ctx, json_t *todo, const char *why)
{
    const char *dn;
    json_t *tags;
    bool failed = false;
    json_object_foreach(todo, dn, tags)
    {
        struct fb_device *d = fb_gw_device(ctx->gw, dn);
        if (!d) continue;
        json_t *req = json_pack("{s:s,s:O}", "id", why, "write", tags);
        char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
        json_decref(req);
        if (!payload) continue;
        struct fb_cmd c = {.kind = FB_CMD_WRITE, .device = d->idx, .qos = 1, .payload = payload};
        c.len = strlen(payload);
        snprintf(c.source, sizeof c.source, "shadow:%s", why);
        char *resp = NULL;
        size_t rlen = 0;
        fb_cmd_process(ctx->gw, &c, &resp, &rlen);
        free(payload);
        json_t *r = resp ? json_loadb(resp, rlen, 0, NULL) : NULL;
        json_t *results = json_object_get(r, "results");
        const char *whole = json_string_value(json_object_get(r, "error"));
        int64_t ts = now_s();
        pthread_mutex_lock(&ctx->mu);
        json_t *md = json_object_get(json_object_get(ctx->doc.meta_desired, "devices"), dn);
        const char *tn;
        json_t *tv;
        json_object_foreach(tags, tn, tv)
        {
            json_t *m = json_object_get(md, tn);
            if (!json_is_object(m)) continue; /* deleted meanwhile */
            json_t *res = json_object_get(results, tn);
            if (json_is_true(json_object_get(res, "ok"))) {
                json_object_del(m, "pending");
                json_object_del(m, "error");
                json_object_del(m, "attempts");
                json_object_set_new(m, "applied", json_integer(ts));
                continue;
            }
            const char *err = json_string_value(json_object_get(res, "error"));
            if (!err) err = whole ? whole : "no answer from the command router";
            json_int_t n = json_integer_value(json_object_get(m, "attempts")) + 1;
            json_object_set_new(m, "attempts", json_integer(n));
            json_object_set_new(m, "error", json_string(err));
            if (n >= RETRY_MAX) {
                json_object_del(m, "pending");
                fb_warn(dn, tn, "shadow: desired value not written after %d attempts: %s; given up", RETRY_MAX, err);
            }
            failed = true;
        }
        persist(ctx);
        pthread_mutex_unlock(&ctx->mu);
        json_decref(r);
        free(resp);
    }
    if (failed) { /* tell the cloud why the delta stays */
        pthread_mutex_lock(&ctx->mu);
        publish_delta(ctx, NULL, true);
        pthread_mutex_unlock(&ctx->mu);
    }
}

/* The desired leaves set by `desired` (not null) under devices, as {dev: {tag: value}}. */
static json_t *leaves_to_write(const json_t *desired)
{
    json_t *todo = json_object();
    const char *dn, *tn;
    json_t *dv, *tv;
    json_object_foreach(json_object_get(desired, "devices"), dn, dv)
    {
        if (!json_is_object(dv)) continue;
        json_t *t = json_object();
        json_object_foreach(dv, tn, tv) if (!json_is_null(tv)) json_object_set(t, tn, tv);
        if (json_object_size(t))
            json_object_set_new(todo, dn, t);
        else
            json_decref(t);
    }
    return todo;
}

static void mark_pending(struct sh_ctx *ctx, const json_t *todo)
{
    const char *dn, *tn;
    json_t *dv, *tv;
    json_t *md = json_object_get(ctx->doc.meta_desired, "devices");
    json_object_foreach((json_t *)todo, dn, dv)
    {
        json_object_foreach(dv, tn, tv)
        {
            json_t *m = json_object_get(json_object_get(md, dn), tn);
            if (json_is_object(m)) json_object_set_new(m, "pending", json_true());
        }
    }
}

static void cmd_update(struct sh_ctx *ctx, json_t *root, const char *token)
{
    struct fb_gateway *gw = ctx->gw;
    json_t *state = json_object_get(root, "state");
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        if (strcmp(k, "state") && strcmp(k, "version") && strcmp(k, "clientToken")) {
            char why[120];
            snprintf(why, sizeof why, "unknown member '%.40s' (expected state, version, clientToken)", k);
            reject(gw, "shadow/update/rejected", 400, why, token, NULL);
            return;
        }
    }
    if (!json_is_object(state)) {
        reject(gw, "shadow/update/rejected", 400, "expected {\"state\":{\"desired\":{…}}}", token, NULL);
        return;
    }
    json_object_foreach(state, k, v)
    {
        if (!strcmp(k, "reported")) {
            reject(gw, "shadow/update/rejected", 400, "state.reported is the gateway's: only state.desired is updated",
                   token, NULL);
            return;
        }
        if (strcmp(k, "desired")) {
            reject(gw, "shadow/update/rejected", 400, "state: only desired can be updated", token, NULL);
            return;
        }
    }
    json_t *desired = json_object_get(state, "desired");
    if (!desired) {
        reject(gw, "shadow/update/rejected", 400, "expected {\"state\":{\"desired\":{…}}}", token, NULL);
        return;
    }
    json_t *ver = json_object_get(root, "version");
    if (ver && !json_is_integer(ver)) {
        reject(gw, "shadow/update/rejected", 400, "version: an integer", token, NULL);
        return;
    }
    char why[200];
    if (!json_is_null(desired) && fb_shadow_check_patch(desired, why, sizeof why) < 0) {
        char msg[260];
        snprintf(msg, sizeof msg, "state.desired: %s", why);
        reject(gw, "shadow/update/rejected", 400, msg, token, NULL);
        return;
    }
    json_t *errors = json_object();
    if (json_is_object(desired)) validate(ctx, desired, errors);
    if (json_object_size(errors)) {
        reject(gw, "shadow/update/rejected", 400, "state.desired: invalid values, nothing changed", token, errors);
        json_decref(errors);
        return;
    }
    json_decref(errors);
    pthread_mutex_lock(&ctx->mu);
    if (fb_shadow_check_version(&ctx->doc, root) < 0) {
        snprintf(why, sizeof why, "version conflict: the shadow is at version %lld, the update names %lld",
                 (long long)ctx->doc.version, (long long)json_integer_value(ver));
        pthread_mutex_unlock(&ctx->mu);
        reject(gw, "shadow/update/rejected", 409, why, token, NULL);
        return;
    }
    json_t *prev = fb_shadow_doc_json(&ctx->doc);
    int64_t ts = now_s();
    json_t *patch = json_is_null(desired) ? NULL : desired;
    if (json_is_null(desired)) { /* "desired": null clears it all */
        json_object_clear(ctx->doc.desired);
        json_object_clear(ctx->doc.meta_desired);
    } else {
        fb_shadow_merge(ctx->doc.desired, ctx->doc.meta_desired, patch, ts);
    }
    json_t *todo = patch ? leaves_to_write(patch) : json_object();
    mark_pending(ctx, todo);
    ctx->doc.version++;
    ctx->doc.timestamp = ts;
    persist(ctx);
    json_t *pmeta = fb_shadow_delta(ctx->doc.meta_desired, NULL);
    json_t *acc = json_pack("{s:{s:O},s:{s:o},s:I,s:I}", "state", "desired", desired, "metadata", "desired", pmeta,
                            "version", (json_int_t)ctx->doc.version, "timestamp", (json_int_t)ts);
    if (acc && token) json_object_set_new(acc, "clientToken", json_string(token));
    if (acc) publish(ctx, "shadow/update/accepted", acc);
    json_decref(acc);
    json_t *cur = fb_shadow_doc_json(&ctx->doc);
    json_t *docs = json_pack("{s:O,s:O,s:I}", "previous", prev, "current", cur, "timestamp", (json_int_t)ts);
    if (docs && token) json_object_set_new(docs, "clientToken", json_string(token));
    if (docs) publish(ctx, "shadow/update/documents", docs);
    json_decref(docs);
    json_decref(cur);
    json_decref(prev);
    publish_delta(ctx, token, true);
    char id[48];
    snprintf(id, sizeof id, "update v%lld", (long long)ctx->doc.version);
    pthread_mutex_unlock(&ctx->mu);
    fb_info(NULL, NULL, "shadow: desired state updated to version %lld%s%s", (long long)ctx->doc.version,
            token ? ", clientToken " : "", token ? token : "");
    if (json_object_size(todo)) do_writes(ctx, todo, id);
    json_decref(todo);
}

/* Internal: the pending writes of devices that are online, again. */
static void cmd_sync(struct sh_ctx *ctx)
{
    atomic_store(&ctx->sync_asked, false);
    pthread_mutex_lock(&ctx->mu);
    json_t *todo = json_object();
    const char *dn, *tn;
    json_t *dm, *tm;
    json_object_foreach(json_object_get(ctx->doc.meta_desired, "devices"), dn, dm)
    {
        struct fb_device *d = fb_gw_device(ctx->gw, dn);
        if (!d || atomic_load(&d->state) != FB_DEV_ONLINE) continue;
        json_t *dd = json_object_get(json_object_get(ctx->doc.desired, "devices"), dn);
        json_t *t = json_object();
        json_object_foreach(dm, tn, tm)
        {
            json_t *val = json_object_get(dd, tn);
            if (leaf_pending(tm) && val) json_object_set(t, tn, val);
        }
        if (json_object_size(t))
            json_object_set_new(todo, dn, t);
        else
            json_decref(t);
    }
    char id[48];
    snprintf(id, sizeof id, "retry v%lld", (long long)ctx->doc.version);
    pthread_mutex_unlock(&ctx->mu);
    if (json_object_size(todo)) do_writes(ctx, todo, id);
    json_decref(todo);
}

void fb_shadow_command(struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *len)
{
    *resp = NULL; /* answered on …/accepted, …/rejected */
    *len = 0;
    bool internal = cmd->qos < 0 && !strncmp(cmd->source, "fleet:", 6);
    bool is_get = !strcmp(cmd->topic, "shadow/get"), is_update = !strcmp(cmd->topic, "shadow/update");
    bool is_sync = internal && !strcmp(cmd->topic, "shadow/sync");
    if (!is_get && !is_update && !is_sync) return;
    const char *rej = is_get ? "shadow/get/rejected" : "shadow/update/rejected";
    struct sh_ctx *ctx = running(gw);
    if (is_sync) {
        if (ctx) cmd_sync(ctx);
        return;
    }
    json_error_t je;
    json_t *root = cmd->len ? json_loadb(cmd->payload, cmd->len, JSON_REJECT_DUPLICATES, &je) : json_object();
    json_t *jt = json_object_get(root, "clientToken");
    char token[TOKEN_MAX + 1] = "";
    bool has_token = json_is_string(jt) && json_string_length(jt) <= TOKEN_MAX;
    if (has_token) snprintf(token, sizeof token, "%s", json_string_value(jt));
    const char *tok = has_token ? token : NULL;
    if (!root || !json_is_object(root)) {
        char why[300];
        if (root)
            snprintf(why, sizeof why, "expected a JSON object");
        else
            snprintf(why, sizeof why, "invalid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        reject(gw, rej, 400, why, NULL, NULL);
    } else if (jt && !has_token) {
        reject(gw, rej, 400, "clientToken: a string of at most 64 bytes", NULL, NULL);
    } else if (!ctx) {
        reject(gw, rej, 404, "this gateway has no shadow (no shadow: section)", tok, NULL);
    } else if (is_get) {
        pthread_mutex_lock(&ctx->mu);
        json_t *d = fb_shadow_doc_json(&ctx->doc);
        pthread_mutex_unlock(&ctx->mu);
        if (d && tok) json_object_set_new(d, "clientToken", json_string(tok));
        if (d) publish(ctx, "shadow/get/accepted", d);
        json_decref(d);
    } else {
        cmd_update(ctx, root, tok);
    }
    json_decref(root);
}
