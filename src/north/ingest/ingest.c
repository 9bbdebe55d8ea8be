/* ingest.c — the ingest source: the MQTT→InfluxDB bridge side of a fleet
 * (docs/influxdb.md, "Ingest").  `fieldbridge ingest -c FILE` subscribes to
 * what many gateways publish and hands every message, as a named batch, to
 * the sinks through the runtime (fb_source_submit): the InfluxDB sink, its
 * queue, its `buffer:` and its metrics are exactly the ones a gateway uses.
 *
 * Why named batches (core/batch.h): the model's tags are dense ids fixed at
 * start-up, but an ingest instance learns devices and tags from the wire.
 * Growing the model while sinks read it would need locks on every hot path
 * and ids that change meaning across restarts under a buffer.  A named batch
 * carries its device's and tags' names in its arena instead; the store
 * encodes them, so buffered records need no model to be read back; the
 * InfluxDB sink resolves each (device, tag) once and caches the column.
 *
 * What it reads.
 *   - JSON telemetry (docs/mqtt.md) on the gateways' topic template: site,
 *     area, line, device (and gateway) from the topic levels, values from
 *     the payload (decode.c).  Gateway status messages on the same template
 *     become health points (a device status message is skipped: the gateway
 *     status lists every device).
 *   - Sparkplug B: DBIRTH gives each metric's name, alias and datatype;
 *     DDATA (and the values of a DBIRTH) are written; NBIRTH starts a node's
 *     session afresh.  Group = site, edge node = gateway, device = device.
 *     A DDATA with an alias no birth named asks the node for a Rebirth
 *     (NCMD Node Control/Rebirth, at most every 30 s per node).
 *
 * Scale-out.  With `share: GROUP` the data subscriptions are MQTT 5 shared
 * subscriptions ($share/GROUP/...): the broker gives each message to one
 * instance of the group.  Sparkplug births must reach every instance (any of
 * them may get the node's DDATA), so they are also subscribed plainly, under
 * subscription identifier 2; a message is written only when it arrived for
 * a data subscription (identifier 1).  The session is persistent (clean
 * start off, session expiry), so what the broker queued for an instance
 * while it restarted is delivered to it then.
 *
 * Acknowledgement.  libmosquitto 2.0 sends a QoS 1 PUBACK after the message
 * callback returns (it only queues the packet inside the callback; our
 * network thread writes it on its next loop).  With a `buffer:` the
 * callback waits until the sinks' stores hold the batch (flushed per the
 * sync policy): a message is acknowledged only once it survives kill -9.
 * Without a buffer it is acknowledged once queued (a crash loses it).  That
 * wait serialises messages per instance; a message costs a hand-off to the
 * sink thread and its store flush (see BENCHMARKS.md).
 */
#include "north/ingest/ingest.h"

#include <fnmatch.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/plugin.h"
#include "north/sparkplug/spb_codec.h"

#define IG_SEC 1000000000LL
#define IG_SUB_DATA 1   /* subscription identifier: write what arrives */
#define IG_SUB_BIRTHS 2 /* learn aliases only */
#define IG_POOL 4
#define IG_REBIRTH_EVERY_NS (30 * IG_SEC)
#define IG_MAX_PAYLOAD (16u << 20)

/* ------------------------------------------------------------------ config */
static const char *const k_ingest[] = {FB_BROKER_KEYS, "share", "session",    "session_expiry", "qos", "telemetry",
                                       "sparkplug",    "types", "max_values", "max_bytes",      NULL};
static const char *const k_tele[] = {"topic", "status", NULL};
static const char *const k_spb[] = {"group", "rebirth", NULL};
static const char *const k_type[] = {"device", "tag", "type", NULL};
static const char *const k_session[] = {"persistent", "clean", NULL};
static const struct fb_config_keys k_nested[] = {{"tls", fb_broker_tls_keys},  {"reconnect", fb_broker_reconnect_keys},
                                                 {"ingest.telemetry", k_tele}, {"ingest.sparkplug", k_spb},
                                                 {"ingest.types", k_type},     {NULL, NULL}};

static void ig_cfg_free(void *p)
{
    struct fb_ingest_cfg *c = p;
    if (!c) return;
    fb_broker_cfg_clear(&c->broker);
    free(c->share);
    free(c->topic);
    fb_ig_tmpl_free(&c->tmpl);
    free(c->spb_group);
    for (uint32_t i = 0; i < c->types.n; i++) {
        free(c->types.r[i].device);
        free(c->types.r[i].tag);
    }
    free(c->types.r);
    free(c);
}

/* `telemetry:` / `sparkplug:` may be true/false or a map. */
static bool section(struct fb_cfg *r, struct fb_cfg_node *n, const char *what, const char *const *keys,
                    struct fb_cfg_map *m)
{
    if (fb_cfg_kind(n) == FB_CFG_SCALAR) {
        bool on = false;
        fb_cfg_bool(r, NULL, n, what, &on);
        return on;
    }
    if (!fb_cfg_map_load(r, n, what, m)) return false;
    fb_cfg_map_check(r, m, keys, what, false);
    return true;
}

static void *ig_cfg_load(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw)
{
    struct fb_ingest_cfg *c = calloc(1, sizeof *c);
    if (!c) {
        fb_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    c->persistent = true;
    c->expiry_s = 86400;
    c->qos = 1;
    c->status = true;
    c->rebirth = true;
    c->max_values = 4096;
    c->max_bytes = 256u << 10;
    fb_broker_cfg_load(r, m, "ingest", 256, &c->broker);
    if (!c->broker.client_id) {
        size_t len = strlen(gw->id) + 24;
        c->broker.client_id = malloc(len);
        if (c->broker.client_id) snprintf(c->broker.client_id, len, "fieldbridge-ingest-%s", gw->id);
    }
    struct fb_cfg_node *n, *x;
    if (c->broker.version != 5 && fb_cfg_get(m, "version"))
        fb_cfg_error(r, fb_cfg_get(m, "version"),
                     "ingest needs MQTT 5 (shared subscriptions, subscription identifiers, session expiry)");
    if ((n = fb_cfg_get(m, "share"))) {
        c->share = fb_cfg_str(r, NULL, n, "ingest.share");
        if (c->share && (!*c->share || strpbrk(c->share, "/+#")))
            fb_cfg_error(r, n, "ingest.share: a shared subscription group name has no '/', '+' or '#'");
    }
    int e;
    if ((n = fb_cfg_get(m, "session")) && fb_cfg_enum(r, n, "ingest.session", k_session, &e)) c->persistent = e == 0;
    if ((n = fb_cfg_get(m, "session_expiry"))) {
        int64_t d;
        if (fb_cfg_dur(r, NULL, n, "ingest.session_expiry", true, &d)) {
            if (d / IG_SEC > 0xFFFFFFFELL || d < IG_SEC)
                fb_cfg_error(r, n, "ingest.session_expiry must be between 1s and 136 years");
            else
                c->expiry_s = (uint32_t)(d / IG_SEC);
        }
    }
    long long v;
    if ((n = fb_cfg_get(m, "qos")) && fb_cfg_int(r, NULL, n, "ingest.qos", 0, 2, &v)) c->qos = (int)v;
    if ((n = fb_cfg_get(m, "max_values")) && fb_cfg_int(r, NULL, n, "ingest.max_values", 1, 100000, &v))
        c->max_values = (uint32_t)v;
    if ((n = fb_cfg_get(m, "max_bytes"))) {
        uint64_t b;
        if (fb_cfg_size(r, n, "ingest.max_bytes", 1024, &b)) {
            if (b > (64u << 20))
                fb_cfg_error(r, n, "ingest.max_bytes: at most 64MiB");
            else
                c->max_bytes = (uint32_t)b;
        }
    }
    struct fb_cfg_map t = {0};
    if ((n = fb_cfg_get(m, "telemetry"))) {
        c->json = section(r, n, "ingest.telemetry", k_tele, &t);
        if ((x = fb_cfg_get(&t, "topic"))) c->topic = fb_cfg_str(r, NULL, x, "ingest.telemetry.topic");
        if ((x = fb_cfg_get(&t, "status"))) fb_cfg_bool(r, NULL, x, "ingest.telemetry.status", &c->status);
        if (c->json) {
            if (!c->topic) c->topic = strdup("{site}/{area}/{line}/{device}/{kind}");
            struct fb_err err = {0};
            if (c->topic && fb_ig_tmpl_parse(c->topic, &c->tmpl, &err) < 0)
                fb_cfg_error(r, fb_cfg_get(&t, "topic") ? fb_cfg_get(&t, "topic") : n, "ingest.telemetry.topic: %s",
                             err.msg);
        }
        fb_cfg_map_free(&t);
    }
    if ((n = fb_cfg_get(m, "sparkplug"))) {
        c->spb = section(r, n, "ingest.sparkplug", k_spb, &t);
        if ((x = fb_cfg_get(&t, "group"))) {
            c->spb_group = fb_cfg_str(r, NULL, x, "ingest.sparkplug.group");
            if (c->spb_group && (!*c->spb_group || strpbrk(c->spb_group, "/#") ||
                                 (strchr(c->spb_group, '+') && strcmp(c->spb_group, "+"))))
                fb_cfg_error(r, x, "ingest.sparkplug.group: a group id, or + for every group");
        }
        if ((x = fb_cfg_get(&t, "rebirth"))) fb_cfg_bool(r, NULL, x, "ingest.sparkplug.rebirth", &c->rebirth);
        if (!c->spb_group) c->spb_group = strdup("+");
        fb_cfg_map_free(&t);
    }
    if (!c->json && !c->spb)
        fb_cfg_error(r, NULL, "ingest: give telemetry: (our JSON) and/or sparkplug: (Sparkplug B) to read");
    if ((n = fb_cfg_get(m, "types"))) {
        if (fb_cfg_kind(n) != FB_CFG_LIST) {
            fb_cfg_error(r, n, "ingest.types must be a list of {device: GLOB, tag: GLOB, type: TYPE}");
        } else {
            size_t len = fb_cfg_list_len(n);
            c->types.r = calloc(len ? len : 1, sizeof *c->types.r);
            for (size_t i = 0; c->types.r && i < len; i++) {
                char what[48];
                snprintf(what, sizeof what, "ingest.types[%zu]", i);
                if (!fb_cfg_map_load(r, fb_cfg_list_at(r, n, i), what, &t)) continue;
                fb_cfg_map_check(r, &t, k_type, what, false);
                struct fb_ig_type_rule *tr = &c->types.r[c->types.n++];
                tr->type = FB_T_FLOAT64;
                if ((x = fb_cfg_get(&t, "device"))) tr->device = fb_cfg_str(r, NULL, x, what);
                if ((x = fb_cfg_get(&t, "tag"))) tr->tag = fb_cfg_str(r, NULL, x, what);
                if ((x = fb_cfg_get(&t, "type"))) {
                    char *ts = fb_cfg_str(r, NULL, x, what);
                    enum fb_type ty = ts ? fb_type_parse(ts) : FB_T_NONE;
                    if (ts && (ty == FB_T_NONE || ty == FB_T_BOOL || ty == FB_T_STRING))
                        fb_cfg_error(r, x, "%s.type: a number type (int8 … uint64, float32, float64), got '%s'", what,
                                     ts);
                    else if (ts)
                        tr->type = (uint8_t)ty;
                    free(ts);
                } else {
                    fb_cfg_error(r, fb_cfg_list_at(r, n, i), "%s.type is required", what);
                }
                fb_cfg_map_free(&t);
            }
        }
    }
    return c;
}

static void ig_describe(const struct fb_source_inst *s, FILE *f)
{
    const struct fb_ingest_cfg *c = s->cfg;
    const struct fb_broker_cfg *b = &c->broker;
    fprintf(f, "  source ingest  %s  client id %s  %s session%s%s  qos %d\n", b->nservers ? b->servers[0].url : "?",
            b->client_id ? b->client_id : "?", c->persistent ? "persistent" : "clean",
            c->share ? "  shared group " : "", c->share ? c->share : "", c->qos);
    if (c->json) {
        char *tf = fb_ig_tmpl_filter(&c->tmpl, "telemetry");
        fprintf(f, "    JSON telemetry %s%s\n", tf ? tf : "?", c->status ? " (and gateway status)" : "");
        free(tf);
    }
    if (c->spb)
        fprintf(f, "    Sparkplug B spBv1.0/%s/{DBIRTH,DDATA}/+/+%s\n", c->spb_group,
                c->rebirth ? " (Rebirth on unknown aliases)" : "");
    for (uint32_t i = 0; i < c->types.n; i++)
        fprintf(f, "    numbers of device %s tag %s as %s\n", c->types.r[i].device ? c->types.r[i].device : "*",
                c->types.r[i].tag ? c->types.r[i].tag : "*", fb_type_name((enum fb_type)c->types.r[i].type));
}

/* ------------------------------------------------------------- sparkplug */
struct ig_alias {
    uint64_t alias;
    uint32_t dev, name; /* offsets in the node's strings */
    uint32_t dt;
    bool used;
};

struct ig_node {
    struct ig_node *next;
    char *key; /* "group/edge" */
    struct ig_alias *a;
    uint32_t mask, n;
    struct fb_buf str;
    int64_t rebirth_at; /* monotonic time of the last Rebirth request */
};

struct bump { /* protobuf-c allocator over one reusable block */
    char *p;
    size_t cap, used;
    bool short_of;
};

struct ig_ctx {
    struct fb_source_inst *s;
    struct fb_gateway *gw;
    const struct fb_ingest_cfg *c;
    struct fb_mqtt_session *ms;
    struct fb_batch_pool *pool;
    bool wait_stored; /* some sink has a buffer: acknowledge only what is stored */
    char *f_tele, *f_status, *f_spb_data, *f_spb_dbirth, *f_spb_nbirth;
    char tbuf[1024];
    struct ig_node *nodes[256];
    struct bump bump;
    struct fb_spb_enc enc;
    struct fb_buf out;
    struct fb_ratelimit rl_bad, rl_alias, rl_wait;
};

static void *bump_alloc(void *d, size_t n)
{
    struct bump *b = d;
    n = (n + 15) & ~(size_t)15;
    if (n > b->cap - b->used) {
        b->short_of = true;
        return NULL;
    }
    void *r = b->p + b->used;
    b->used += n;
    return r;
}
static void bump_free(void *d, void *p)
{
    (void)d;
    (void)p; /* the whole block is reused for the next message */
}

static spb_payload *spb_unpack(struct ig_ctx *x, const void *p, size_t len)
{
    for (;;) {
        x->bump.used = 0;
        x->bump.short_of = false;
        ProtobufCAllocator a = {bump_alloc, bump_free, &x->bump};
        spb_payload *pl = org__eclipse__tahu__protobuf__payload__unpack(&a, len, p);
        if (pl || !x->bump.short_of || x->bump.cap >= (256u << 20)) return pl;
        /* a bigger message than ever before: grow once, keep it */
        size_t cap = x->bump.cap * 2;
        char *np = realloc(x->bump.p, cap);
        if (!np) return NULL;
        x->bump.p = np;
        x->bump.cap = cap;
    }
}

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s) h = (h ^ (uint8_t)*s++) * 16777619u;
    return h;
}

static struct ig_node *node_get(struct ig_ctx *x, const char *group, const char *edge, bool create)
{
    char key[600];
    snprintf(key, sizeof key, "%s/%s", group, edge);
    uint32_t h = hash_str(key) & 255;
    for (struct ig_node *nd = x->nodes[h]; nd; nd = nd->next)
        if (!strcmp(nd->key, key)) return nd;
    if (!create) return NULL;
    struct ig_node *nd = calloc(1, sizeof *nd);
    if (!nd) return NULL;
    nd->key = strdup(key);
    fb_buf_init(&nd->str);
    nd->next = x->nodes[h];
    x->nodes[h] = nd;
    return nd;
}

static void node_clear(struct ig_node *nd)
{
    free(nd->a);
    nd->a = NULL;
    nd->mask = nd->n = 0;
    fb_buf_clear(&nd->str);
}

static uint32_t alias_slot(uint64_t a, uint32_t mask) { return (uint32_t)((a * 0x9E3779B97F4A7C15ull) >> 32) & mask; }

static struct ig_alias *alias_find(struct ig_node *nd, uint64_t alias)
{
    if (!nd->a) return NULL;
    for (uint32_t k = alias_slot(alias, nd->mask);; k = (k + 1) & nd->mask) {
        if (!nd->a[k].used) return NULL;
        if (nd->a[k].alias == alias) return &nd->a[k];
    }
}

static void alias_put(struct ig_node *nd, uint64_t alias, const char *dev, const char *name, uint32_t dt)
{
    if (!nd->a || 2 * (nd->n + 1) > nd->mask) {
        uint32_t cap = nd->mask ? (nd->mask + 1) * 2 : 64;
        struct ig_alias *t = calloc(cap, sizeof *t);
        if (!t) return;
        for (uint32_t i = 0; nd->a && i <= nd->mask; i++)
            if (nd->a[i].used) {
                uint32_t k = alias_slot(nd->a[i].alias, cap - 1);
                while (t[k].used) k = (k + 1) & (cap - 1);
                t[k] = nd->a[i];
            }
        free(nd->a);
        nd->a = t;
        nd->mask = cap - 1;
    }
    struct ig_alias *e = alias_find(nd, alias);
    if (!e) {
        uint32_t k = alias_slot(alias, nd->mask);
        while (nd->a[k].used) k = (k + 1) & nd->mask;
        e = &nd->a[k];
        nd->n++;
    }
    e->used = true;
    e->alias = alias;
    e->dev = (uint32_t)nd->str.len;
    fb_buf_put(&nd->str, dev, strlen(dev) + 1);
    e->name = (uint32_t)nd->str.len;
    fb_buf_put(&nd->str, name, strlen(name) + 1);
    e->dt = dt;
}

/* NCMD Node Control/Rebirth = true, so the node sends its births again. */
static void ask_rebirth(struct ig_ctx *x, struct ig_node *nd, const char *group, const char *edge)
{
    int64_t now = fb_mono_ns();
    if (!x->c->rebirth || (nd->rebirth_at && now - nd->rebirth_at < IG_REBIRTH_EVERY_NS)) return;
    nd->rebirth_at = now;
    char topic[600];
    snprintf(topic, sizeof topic, "spBv1.0/%s/NCMD/%s", group, edge);
    fb_spb_enc_begin(&x->enc, (uint64_t)(fb_now_ns() / 1000000), -1);
    spb_metric *m = fb_spb_enc_add(&x->enc, "Node Control/Rebirth", -1, -1, SPB_BOOLEAN);
    struct fb_value v = {.type = FB_T_BOOL};
    v.b = true;
    if (m) fb_spb_enc_value(&x->enc, m, SPB_BOOLEAN, &v);
    size_t len = fb_spb_enc_finish(&x->enc, &x->out);
    int rc = fb_mqtt_session_publish(x->ms, topic, x->out.p, len, 0, false, NULL);
    fb_info(NULL, NULL, "ingest: no birth of %s/%s seen: %s a Rebirth on %s", group, edge,
            rc == MOSQ_ERR_SUCCESS ? "asked for" : "could not ask for", topic);
}

static uint32_t spb_quality(const spb_metric *m, bool has_value)
{
    int32_t q;
    if (fb_spb_metric_quality(m, &q)) {
        if (q == SPB_Q_GOOD) return has_value ? FB_Q_GOOD : FB_Q_BAD_WAITING;
        if (q == SPB_Q_STALE) return has_value ? FB_Q_UNC_LAST_USABLE : FB_Q_BAD;
        return FB_Q_BAD;
    }
    return has_value ? FB_Q_GOOD : FB_Q_BAD;
}

/* ------------------------------------------------------------- delivery */
/* Hand b to the sinks; with a buffer, return only once it is stored. */
static void deliver(struct ig_ctx *x, struct fb_batch *b, int qos)
{
    fb_source_submit(x->gw, b);
    atomic_fetch_add(&x->s->m.batches, 1);
    if (qos > 0 && x->wait_stored) {
        int64_t start = fb_mono_ns();
        while (!fb_source_wait_stored(x->gw, b->seq, IG_SEC)) {
            int64_t waited = fb_mono_ns() - start;
            if (fb_ratelimit_ok(&x->rl_wait, fb_mono_ns()))
                fb_warn(NULL, NULL,
                        "ingest: the buffer has not stored a message for %.0fs (disk full with `full: "
                        "block`?); not acknowledging it yet",
                        waited / 1e9);
            if (fb_runtime_stopping(x->gw) && waited > 5 * IG_SEC) {
                fb_warn(NULL, NULL, "ingest: stopping: a message is acknowledged before its batch was stored");
                break;
            }
        }
    }
    fb_batch_unref(b);
}

static void bad_message(struct ig_ctx *x, const char *topic, const char *why)
{
    atomic_fetch_add(&x->s->m.errors, 1);
    if (fb_ratelimit_ok(&x->rl_bad, fb_mono_ns())) fb_warn(NULL, NULL, "ingest: %s: %s (dropped)", topic, why);
}

static void on_spb(struct ig_ctx *x, const struct mosquitto_message *msg, bool write)
{
    /* spBv1.0/<group>/<type>/<edge>[/<device>] */
    char t[600];
    snprintf(t, sizeof t, "%s", msg->topic);
    char *lv[6] = {0};
    int nl = 0;
    for (char *p = t, *sv = NULL; nl < 6 && (p = strtok_r(nl ? NULL : p, "/", &sv));) lv[nl++] = p;
    if (nl < 4) return;
    const char *group = lv[1], *type = lv[2], *edge = lv[3], *dev = nl > 4 ? lv[4] : "";
    bool nbirth = !strcmp(type, "NBIRTH"), dbirth = !strcmp(type, "DBIRTH"), ddata = !strcmp(type, "DDATA");
    if (!nbirth && !dbirth && !ddata) return;
    if (nbirth) {
        struct ig_node *nd = node_get(x, group, edge, true);
        if (nd) node_clear(nd); /* a new session of the node: its aliases start afresh */
        return;
    }
    if ((dbirth || ddata) && nl != 5) {
        bad_message(x, msg->topic, "a device message needs a device id");
        return;
    }
    spb_payload *pl = spb_unpack(x, msg->payload, (size_t)msg->payloadlen);
    if (!pl) {
        bad_message(x, msg->topic, "not a Sparkplug B payload");
        return;
    }
    struct ig_node *nd = node_get(x, group, edge, true);
    if (!nd) return;
    if (dbirth)
        for (size_t i = 0; i < pl->n_metrics; i++) {
            const spb_metric *m = pl->metrics[i];
            if (m->name && m->has_alias) alias_put(nd, m->alias, dev, m->name, m->has_datatype ? m->datatype : 0);
        }
    if (!write) return;
    int64_t now = fb_now_ns();
    int64_t pts =
        pl->has_timestamp && pl->timestamp < (uint64_t)INT64_MAX / 1000000 ? (int64_t)pl->timestamp * 1000000 : now;
    const char *names[FB_BN__N] = {[FB_BN_GATEWAY] = edge, [FB_BN_SITE] = group, [FB_BN_DEVICE] = dev};
    struct fb_batch *b = fb_batch_pool_get(x->pool);
    if (!b) return;
    if (fb_ig_batch_begin(b, names, pts) < 0) {
        fb_batch_unref(b);
        bad_message(x, msg->topic, "names too long for a batch");
        return;
    }
    uint32_t unknown = 0;
    for (size_t i = 0; i < pl->n_metrics; i++) {
        const spb_metric *m = pl->metrics[i];
        const char *name = m->name;
        uint32_t dt = m->has_datatype ? m->datatype : 0;
        if (!name && m->has_alias) {
            const struct ig_alias *a = alias_find(nd, m->alias);
            if (!a || strcmp(nd->str.p + a->dev, dev)) {
                unknown++;
                continue;
            }
            name = nd->str.p + a->name;
            if (!dt) dt = a->dt;
        }
        if (!name || !*name) {
            unknown++;
            continue;
        }
        struct fb_value v;
        int rc = fb_spb_metric_value(m, dt, &v);
        if (rc == FB_ENOTSUP) continue; /* datasets, bytes, templates: not written */
        bool has = rc == 0;
        if (has && v.type == FB_T_NONE) has = false;
        uint32_t off = fb_batch_name_add(b, name, (uint32_t)strlen(name));
        if (off == UINT32_MAX || b->n >= b->cap) {
            fb_batch_unref(b);
            bad_message(x, msg->topic, "more values or longer names than a batch holds (ingest.max_values, max_bytes)");
            return;
        }
        int64_t ts =
            m->has_timestamp && m->timestamp < (uint64_t)INT64_MAX / 1000000 ? (int64_t)m->timestamp * 1000000 : pts;
        uint32_t q = rc == FB_EPROTO ? FB_Q_BAD_DECODING : spb_quality(m, has); /* a value in the wrong field */
        struct fb_sample *s = fb_batch_add(b, off, q, ts, has && !fb_q_bad(q) ? &v : NULL);
        if (s && m->has_is_historical && m->is_historical) s->flags |= FB_SF_HISTORICAL;
    }
    if (unknown) {
        atomic_fetch_add(&x->s->m.errors, 1);
        if (fb_ratelimit_ok(&x->rl_alias, fb_mono_ns()))
            fb_warn(NULL, NULL, "ingest: %s: %u metrics without a name this instance knows (no birth seen)", msg->topic,
                    unknown);
        ask_rebirth(x, nd, group, edge);
    }
    if (b->n)
        deliver(x, b, msg->qos);
    else
        fb_batch_unref(b);
}

static void on_json(struct ig_ctx *x, const struct mosquitto_message *msg)
{
    const char *val[FB_BN__N], *kind;
    if (!fb_ig_tmpl_match(&x->c->tmpl, msg->topic, x->tbuf, sizeof x->tbuf, val, &kind)) return;
    bool tele = !strcmp(kind, "telemetry"), status = !strcmp(kind, "status");
    if (!tele && !(status && x->c->status)) return;
    const char *p = msg->payload ? msg->payload : "";
    size_t len = (size_t)msg->payloadlen;
    if (status && !memmem(p, len, "\"gateway\"", 9)) return; /* a device's status: the gateway's lists it */
    struct fb_batch *b = fb_batch_pool_get(x->pool);
    if (!b) return;
    int64_t now = fb_now_ns();
    if (status && !*val[FB_BN_GATEWAY]) val[FB_BN_GATEWAY] = val[FB_BN_DEVICE]; /* a gateway's own topic */
    if (fb_ig_batch_begin(b, val, now) < 0) {
        fb_batch_unref(b);
        bad_message(x, msg->topic, "names too long for a batch");
        return;
    }
    if (status) {
        b->kind = FB_BATCH_NAMED_STATUS;
        struct fb_value v = {.type = FB_T_STRING};
        v.s.p = p;
        v.s.len = (uint32_t)len;
        if (len > b->arena_cap - b->arena_len) {
            fb_batch_unref(b);
            bad_message(x, msg->topic, "status message larger than ingest.max_bytes");
            return;
        }
        fb_batch_add(b, b->names[FB_BN_GATEWAY], FB_Q_GOOD, now, &v);
        deliver(x, b, msg->qos);
        return;
    }
    struct fb_err err = {0};
    int rc = fb_ig_telemetry(b, p, len, &x->c->types, now, &err);
    if (rc < 0) {
        fb_batch_unref(b);
        bad_message(x, msg->topic, err.msg[0] ? err.msg : fb_strerror(rc));
        return;
    }
    if (b->n)
        deliver(x, b, msg->qos);
    else
        fb_batch_unref(b);
}

/* ------------------------------------------------------ session callbacks */
static bool has_sub_id(const mosquitto_property *props, uint32_t id)
{
    const mosquitto_property *p = props;
    bool first = true;
    uint32_t v;
    while ((p = mosquitto_property_read_varint(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &v, !first))) {
        first = false;
        if (v == id) return true;
    }
    return false;
}

static void ig_message(void *obj, const struct mosquitto_message *msg, const mosquitto_property *props)
{
    struct ig_ctx *x = obj;
    atomic_fetch_add(&x->s->m.messages, 1);
    if ((size_t)msg->payloadlen > IG_MAX_PAYLOAD) {
        bad_message(x, msg->topic, "payload larger than 16 MiB");
        return;
    }
    if (!strncmp(msg->topic, "spBv1.0/", 8)) {
        if (x->c->spb) on_spb(x, msg, has_sub_id(props, IG_SUB_DATA));
    } else if (x->c->json) {
        on_json(x, msg);
    }
}

static void subscribe(struct ig_ctx *x, struct fb_mqtt_session *ms, const char *filter, bool shared, uint32_t id)
{
    char t[1200];
    if (shared && x->c->share)
        snprintf(t, sizeof t, "$share/%s/%s", x->c->share, filter);
    else
        snprintf(t, sizeof t, "%s", filter);
    int rc = fb_mqtt_session_subscribe_id(ms, t, x->c->qos, id);
    if (rc != MOSQ_ERR_SUCCESS)
        fb_warn(NULL, NULL, "ingest: cannot subscribe to %s: %s", t, fb_mqtt_session_strerror(ms, rc));
    else
        fb_debug(NULL, NULL, "ingest: subscribed to %s (QoS %d, id %u)", t, x->c->qos, id);
}

static void ig_connected(void *obj, struct fb_mqtt_session *ms)
{
    struct ig_ctx *x = obj;
    const struct fb_broker_server *sv = fb_mqtt_session_server(ms);
    fb_info(NULL, NULL, "ingest: connected to %s:%d (client id %s%s%s)", sv->host, sv->port, x->c->broker.client_id,
            x->c->share ? ", shared group " : "", x->c->share ? x->c->share : "");
    if (x->c->json) {
        subscribe(x, ms, x->f_tele, true, IG_SUB_DATA);
        if (x->c->status) subscribe(x, ms, x->f_status, true, IG_SUB_DATA);
    }
    if (x->c->spb) {
        subscribe(x, ms, x->f_spb_data, true, IG_SUB_DATA);
        subscribe(x, ms, x->f_spb_dbirth, true, IG_SUB_DATA);
        /* every instance learns every node's aliases */
        if (x->c->share) subscribe(x, ms, x->f_spb_dbirth, false, IG_SUB_BIRTHS);
        subscribe(x, ms, x->f_spb_nbirth, false, IG_SUB_BIRTHS);
    }
}

/* ----------------------------------------------------------- start / stop */
static void ctx_free(struct ig_ctx *x)
{
    if (!x) return;
    free(x->f_tele);
    free(x->f_status);
    free(x->f_spb_data);
    free(x->f_spb_dbirth);
    free(x->f_spb_nbirth);
    for (int i = 0; i < 256; i++)
        while (x->nodes[i]) {
            struct ig_node *nd = x->nodes[i];
            x->nodes[i] = nd->next;
            free(nd->key);
            free(nd->a);
            fb_buf_free(&nd->str);
            free(nd);
        }
    free(x->bump.p);
    fb_spb_enc_free(&x->enc);
    fb_buf_free(&x->out);
    fb_batch_pool_free(x->pool);
    free(x);
}

static char *dupf(const char *fmt, const char *a)
{
    size_t n = strlen(fmt) + strlen(a) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, fmt, a);
    return s;
}

static const struct fb_mqtt_session_ops ig_ops = {
    .connected = ig_connected,
    .message = ig_message,
};

static int ig_start(struct fb_source_inst *s, struct fb_err *err)
{
    const struct fb_ingest_cfg *c = s->cfg;
    if (!c) return fb_err_set(err, FB_EINVAL, "ingest: not configured");
    struct ig_ctx *x = calloc(1, sizeof *x);
    if (!x) return fb_err_set(err, FB_ENOMEM, "out of memory");
    x->s = s;
    x->gw = s->gw;
    x->c = c;
    x->rl_bad.interval_ns = 10 * IG_SEC;
    x->rl_alias.interval_ns = 10 * IG_SEC;
    x->rl_wait.interval_ns = 10 * IG_SEC;
    fb_spb_enc_init(&x->enc);
    fb_buf_init(&x->out);
    for (uint32_t i = 0; i < x->gw->nsinks; i++) x->wait_stored = x->wait_stored || x->gw->sinks[i].buffer;
    x->pool = fb_batch_pool_new(IG_POOL, c->max_values, c->max_values, c->max_bytes);
    x->bump.cap = 1u << 20;
    x->bump.p = malloc(x->bump.cap);
    if (c->json) {
        x->f_tele = fb_ig_tmpl_filter(&c->tmpl, "telemetry");
        x->f_status = fb_ig_tmpl_filter(&c->tmpl, "status");
    }
    if (c->spb) {
        x->f_spb_data = dupf("spBv1.0/%s/DDATA/+/+", c->spb_group);
        x->f_spb_dbirth = dupf("spBv1.0/%s/DBIRTH/+/+", c->spb_group);
        x->f_spb_nbirth = dupf("spBv1.0/%s/NBIRTH/+", c->spb_group);
    }
    if (!x->pool || !x->bump.p || (c->json && (!x->f_tele || !x->f_status)) ||
        (c->spb && (!x->f_spb_data || !x->f_spb_dbirth || !x->f_spb_nbirth))) {
        ctx_free(x);
        return fb_err_set(err, FB_ENOMEM, "ingest: out of memory");
    }
    struct fb_mqtt_session_opts o = {
        .name = "ingest",
        .broker = &c->broker,
        .client_id = c->broker.client_id,
        .errors = &s->m.errors,
        .connected = &s->m.connected,
        .persistent = c->persistent,
        .session_expiry_s = c->expiry_s,
        .ack_after_handling = true, /* a message is acknowledged once stored */
        .ops = &ig_ops,
        .obj = x,
    };
    s->ctx = x;
    int rc = fb_mqtt_session_open(&x->ms, &o, err);
    if (rc < 0) {
        s->ctx = NULL;
        ctx_free(x);
        return rc;
    }
    fb_info(NULL, NULL, "ingest: connecting to %s:%d in the background (%s session%s%s)", c->broker.servers[0].host,
            c->broker.servers[0].port, c->persistent ? "persistent" : "clean",
            x->wait_stored ? ", messages acknowledged once buffered" : ", no buffer: acknowledged once queued",
            c->share ? ", shared subscriptions" : "");
    return 0;
}

static void ig_stop(struct fb_source_inst *s)
{
    struct ig_ctx *x = s->ctx;
    if (!x) return;
    /* a normal DISCONNECT: with a persistent session the broker keeps queueing for us */
    fb_mqtt_session_close(x->ms, NULL, NULL, 0, false, 1000000000LL);
    x->ms = NULL;
    fb_info(NULL, NULL, "ingest: %llu messages received, %llu batches handed on, %llu errors",
            (unsigned long long)atomic_load(&s->m.messages), (unsigned long long)atomic_load(&s->m.batches),
            (unsigned long long)atomic_load(&s->m.errors));
}

static void ig_release(struct fb_source_inst *s)
{
    struct ig_ctx *x = s->ctx;
    s->ctx = NULL;
    ctx_free(x);
}

const struct fb_source fb_source_ingest = {
    .name = "ingest",
    .keys = k_ingest,
    .nested = k_nested,
    .cfg_load = ig_cfg_load,
    .cfg_free = ig_cfg_free,
    .describe = ig_describe,
    .start = ig_start,
    .stop = ig_stop,
    .release = ig_release,
};
