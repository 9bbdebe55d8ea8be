/* sparkplug.c — the Sparkplug B sink: the gateway as a Sparkplug 3.0 edge
 * node, each configured field device as a Sparkplug device (docs/sparkplug.md).
 *
 * Threads.  The broker session (network thread, reconnect with back-off,
 * server failover, TLS) is the one the JSON sink uses (north/mqtt/session.c).
 * Its callbacks only subscribe and read: they set atomic flags (a connection
 * generation, host online, rebirth requested, host went offline).  Everything that publishes a Sparkplug
 * message — births, data, deaths — runs in send, ready or tick, which the
 * runtime calls under the sink's call lock (from the sink thread, or from a
 * connection thread handing its batch straight over: core/publish.c), so the
 * seq counter, the per-tag value cache and the encoder are used by one
 * thread at a time and need no lock of their own.  A flag set by the network
 * thread is acted on within one sink-thread tick (<= 100 ms; we also wake
 * the thread).
 *
 * Session.  Before every CONNECT the will is set to an NDEATH carrying the
 * next bdSeq (0 first, +1 per CONNECT that got a session, wrapping at 256; persisted next to the
 * buffer when one is configured).  After the CONNACK we subscribe to NCMD,
 * DCMD/+ and, with a primary host, its STATE topic; the births wait for that
 * host's STATE online.  A birth is NBIRTH (seq 0, bdSeq, Node Control metrics)
 * followed by a DBIRTH for every device whose connection is up, with each
 * tag's current value, datatype and alias.  A device's first data, or its
 * coming back online, also triggers its DBIRTH; losing its connection sends
 * DDEATH.  Data, births and deaths are QoS 0, as Sparkplug requires, so a
 * delivery is reported FB_SENT once libmosquitto has queued the message.
 *
 * Store-and-forward.  ready() says no until the birth of the current
 * connection is out, so buffered batches always follow the new NBIRTH and
 * DBIRTHs; a batch made before the current birth is sent with is_historical.
 *
 * Bad values.  A metric whose quality is bad carries no value (is_null), in
 * births as in data, with Quality 0; when the gateway's plausibility checks
 * refused the reading (FB_SF_RAW), it travels in the property "Raw".
 *
 * Reload.  A config reload that keeps this sink (model_begin/model_end)
 * rebuilds the device topics and the value cache for the new model (tag ids,
 * and with them the aliases, may move), sends DDEATH for devices that are
 * gone, and rebirths: NBIRTH and DBIRTHs with the new metric set.  model_mu
 * keeps DCMD handling on the network thread away from the model meanwhile.
 *
 * Commands.  NCMD Rebirth re-sends all births; Reboot is refused unless
 * `reboot: true`, and then stops the process as on SIGTERM and re-executes it
 * (fb_runtime_request_reboot).  DCMD metrics become one
 * JSON write request for the command router, so Sparkplug writes pass the same
 * validation (exists, writable, type, range) as JSON commands; the result is
 * logged, and the new values show up in the next DDATA.
 *
 * Alarms (docs/sparkplug.md).  Each alarm of a device is a folder of Boolean
 * metrics, "Alarms/<tag>/<kind>/Active", "…/Acked", "…/Shelved",
 * "…/Suppressed", plus "…/Severity" (Int32) in the DBIRTH; an alarm event
 * batch becomes a DDATA with the four Booleans as they are after it.
 */
#include "north/sparkplug/sparkplug.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/batch_codec.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/router.h"
#include "edge/alarms.h"

#define SPB_SEC 1000000000LL
#define SPB_CLOSE_WAIT_NS 2000000000LL
#define SPB_CMD_MAX_PAYLOAD (256 * 1024)
/* aliases: node metrics 1..15, tag id + SPB_ALIAS_BASE for device metrics */
#define SPB_ALIAS_REBIRTH 1
#define SPB_ALIAS_REBOOT 2
#define SPB_ALIAS_SOFTWARE 3
#define SPB_ALIAS_BASE 1000
/* alarm a's metric k: SPB_ALIAS_BASE + ntags + a * 8 + k */
enum { AM_ACTIVE, AM_ACKED, AM_SHELVED, AM_SUPPRESSED, AM_SEVERITY, AM__N };
static const char *const am_name[AM__N] = {"Active", "Acked", "Shelved", "Suppressed", "Severity"};

enum { T_BIRTH, T_DATA, T_DEATH, T_CMD, T__N }; /* a device's topics */
static const char *const t_type[T__N] = {"DBIRTH", "DDATA", "DDEATH", "DCMD"};

struct spb_dev {
    char *t[T__N];
    int state; /* last state seen in the batch stream (sink thread) */
    bool born; /* DBIRTH sent in the current session (sink thread) */
    bool seen; /* some value of it is in the cache */
};

struct spb_val { /* last value per tag, for births (sink thread) */
    struct fb_value v;
    uint32_t q;
    bool raw;   /* v is a reading refused by plausibility (FB_SF_RAW) */
    int64_t ts; /* ns, 0 = none yet */
    char *sbuf;
    uint32_t scap;
};

struct spb_ctx {
    struct fb_sink_inst *s;
    struct fb_gateway *gw;
    const struct fb_spb_cfg *cfg;
    struct fb_mqtt_session *ms;
    char client_id[160];
    const char *edge;
    char *t_nbirth, *t_ndata, *t_ndeath, *t_ncmd, *t_dcmd_sub, *t_dcmd_prefix, *t_state;
    size_t dcmd_prefix_len;
    pthread_mutex_t model_mu; /* DCMD look-ups (network thread) against a reload */
    struct spb_dev *devs;
    uint32_t ndevs;
    struct spb_val *cache;
    uint32_t ntags;
    char **alarm_names; /* "Alarms/<name>/<metric>", AM__N per alarm: the encoder keeps the pointers */
    uint32_t nalarms;   /* the model's alarms alarm_names was made for */

    /* set by the session's callbacks (network thread) */
    atomic_uint conn_gen;     /* +1 per accepted CONNACK */
    atomic_bool host_online;  /* no primary host: set at connect */
    atomic_bool want_rebirth; /* NCMD Rebirth */
    atomic_bool host_offline; /* primary host went offline: leave this server */
    atomic_uint bdseq;        /* bdSeq of the current connection (its will) */
    unsigned next_bdseq;
    bool bdseq_fresh; /* the bdSeq of the will has not yet had a session */
    char bdseq_path[1100];
    int64_t state_ts; /* newest STATE time stamp seen */
    _Atomic uint64_t cmd_ids;
    struct fb_ratelimit rl_bdseq, rl_cmd;
    struct fb_buf nbuf; /* network thread: will payload */

    /* sink thread */
    unsigned born_gen; /* conn_gen the current births belong to, 0 = none */
    uint8_t seq;
    int64_t birth_ns; /* time of the current NBIRTH */
    struct fb_spb_enc enc;
    struct fb_buf out;
    struct fb_ratelimit rl_send;
};

/* ------------------------------------------------------------- pure helpers */
int fb_spb_topic(char *out, size_t len, const char *group, const char *type, const char *edge, const char *device)
{
    int n = device ? snprintf(out, len, "spBv1.0/%s/%s/%s/%s", group, type, edge, device)
                   : snprintf(out, len, "spBv1.0/%s/%s/%s", group, type, edge);
    return n < 0 || (size_t)n >= len ? FB_ERANGE : 0;
}

int fb_spb_ndeath_payload(struct fb_buf *out, uint64_t ts_ms, uint64_t bdseq)
{
    struct fb_spb_enc e;
    fb_spb_enc_init(&e);
    fb_spb_enc_begin(&e, ts_ms, -1);
    spb_metric *m = fb_spb_enc_add(&e, "bdSeq", -1, -1, SPB_INT64);
    if (!m) {
        fb_spb_enc_free(&e);
        return FB_ENOMEM;
    }
    struct fb_value v = {.type = FB_T_UINT64, .u = bdseq};
    fb_spb_enc_value(&e, m, SPB_INT64, &v);
    fb_spb_enc_finish(&e, out);
    fb_spb_enc_free(&e);
    return 0;
}

int fb_spb_parse_state(const char *p, size_t len, int *online, int64_t *ts)
{
    *ts = -1;
    if (len == 6 && !memcmp(p, "ONLINE", 6)) {
        *online = 1;
        return 0;
    }
    if (len == 7 && !memcmp(p, "OFFLINE", 7)) {
        *online = 0;
        return 0;
    }
    json_error_t jerr;
    json_t *j = json_loadb(p, len, 0, &jerr);
    if (!j) return FB_EPROTO;
    int rc = FB_EPROTO;
    json_t *on = json_object_get(j, "online");
    json_t *t = json_object_get(j, "timestamp");
    if (json_is_boolean(on)) {
        *online = json_is_true(on) ? 1 : 0;
        if (json_is_integer(t)) *ts = (int64_t)json_integer_value(t);
        rc = 0;
    }
    json_decref(j);
    return rc;
}

int fb_spb_metric_json(struct fb_buf *out, const spb_metric *m, const char *name, uint32_t dt, bool first)
{
    struct fb_value v;
    if (fb_spb_metric_value(m, dt, &v) < 0) return FB_EINVAL;
    if (fb_type_is_float(v.type) && !isfinite(v.f)) return FB_EINVAL;
    if (!first) fb_buf_putc(out, ',');
    fb_json_cstr(out, name);
    fb_buf_putc(out, ':');
    fb_json_value(out, &v);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

static int64_t ms_of(int64_t ns) { return ns > 0 ? ns / 1000000 : 0; }

/* --------------------------------------------------------------- bdSeq */
static void bdseq_load(struct spb_ctx *ctx)
{
    ctx->next_bdseq = 0;
    if (!ctx->bdseq_path[0]) return;
    FILE *f = fopen(ctx->bdseq_path, "r");
    if (!f) return;
    unsigned v;
    if (fscanf(f, "%u", &v) == 1) ctx->next_bdseq = (v + 1) % 256;
    fclose(f);
}

static void bdseq_save(struct spb_ctx *ctx, unsigned v)
{
    if (!ctx->bdseq_path[0]) return;
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", ctx->bdseq_path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%u\n", v) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        if (f) fclose(f);
        if (fb_ratelimit_ok(&ctx->rl_bdseq, fb_mono_ns()))
            fb_warn(NULL, NULL, "sparkplug: cannot persist bdSeq in %s: %s", tmp, strerror(errno));
        return;
    }
    fclose(f);
    if (rename(tmp, ctx->bdseq_path) < 0)
        fb_warn(NULL, NULL, "sparkplug: cannot persist bdSeq in %s: %s", ctx->bdseq_path, strerror(errno));
}

/* --------------------------------------------------------------- publish */
/* Publish the encoder's message (QoS 0, as Sparkplug requires). */
static int pub_enc(struct spb_ctx *ctx, const char *topic)
{
    fb_spb_enc_finish(&ctx->enc, &ctx->out);
    int rc = fb_mqtt_session_publish(ctx->ms, topic, ctx->out.p, ctx->out.len, 0, false, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        if (rc != MOSQ_ERR_NO_CONN) atomic_fetch_add(&ctx->s->m.errors, 1);
        if (fb_ratelimit_ok(&ctx->rl_send, fb_mono_ns()))
            fb_warn(NULL, NULL, "sparkplug: cannot publish %zu bytes to %s: %s", ctx->out.len, topic,
                    fb_mqtt_session_strerror(ctx->ms, rc));
    }
    return rc;
}

static int next_seq(struct spb_ctx *ctx) { return ctx->seq++; /* wraps 255 → 0 */ }

/* One metric for tag t from the cache (births) or a sample (data).  A bad
 * value is is_null in both (docs/sparkplug.md); a refused reading (raw) is
 * the property Raw. */
static void add_tag_metric(struct spb_ctx *ctx, const struct fb_tag *t, bool birth, const struct fb_value *v,
                           uint32_t q, int64_t ts_ns, bool historical, bool raw)
{
    bool aliases = ctx->cfg->aliases;
    uint32_t dt = fb_spb_datatype(fb_tag_out_type(t));
    const char *name = birth || !aliases ? t->name : NULL;
    int64_t alias = aliases ? (int64_t)t->id + SPB_ALIAS_BASE : -1;
    spb_metric *m = fb_spb_enc_add(&ctx->enc, name, alias, ms_of(ts_ns ? ts_ns : fb_now_ns()), birth ? dt : 0);
    if (!m) return;
    bool bad = fb_q_bad(q);
    fb_spb_enc_value(&ctx->enc, m, dt, bad ? NULL : v);
    fb_spb_enc_quality(&ctx->enc, m, fb_spb_quality(q));
    if (bad && raw && v && v->type != FB_T_NONE) fb_spb_enc_raw(&ctx->enc, m, dt, v);
    if (historical) {
        m->has_is_historical = true;
        m->is_historical = true;
    }
}

/* The metrics of alarm id: the four state Booleans, and in a birth its Severity. */
static void add_alarm_metrics(struct spb_ctx *ctx, uint32_t id, uint8_t flags, bool birth, int64_t ts_ns,
                              bool historical)
{
    const struct fb_alarm *a = &ctx->gw->alarms[id];
    bool al = ctx->cfg->aliases;
    const bool bits[4] = {(flags & FB_AS_ACTIVE) != 0, !(flags & FB_AS_UNACKED), (flags & FB_AS_SHELVED) != 0,
                          (flags & FB_AS_SUPPRESSED) != 0};
    for (int k = 0; k < (birth ? AM__N : AM_SEVERITY); k++) {
        const char *name = ctx->alarm_names[id * AM__N + k];
        int64_t alias = al ? (int64_t)SPB_ALIAS_BASE + ctx->gw->ntags + (int64_t)id * 8 + k : -1;
        uint32_t dt = k == AM_SEVERITY ? SPB_INT32 : SPB_BOOLEAN;
        spb_metric *m = fb_spb_enc_add(&ctx->enc, birth || !al ? name : NULL, alias, ms_of(ts_ns), birth ? dt : 0);
        if (!m) return;
        struct fb_value v = k == AM_SEVERITY ? (struct fb_value){.type = FB_T_INT32, .i = a->severity}
                                             : (struct fb_value){.type = FB_T_BOOL, .b = bits[k]};
        fb_spb_enc_value(&ctx->enc, m, dt, &v);
        if (historical) {
            m->has_is_historical = true;
            m->is_historical = true;
        }
    }
}

static void dbirth(struct spb_ctx *ctx, uint32_t di)
{
    const struct fb_device *d = &ctx->gw->devs[di];
    int64_t now = fb_now_ns();
    fb_spb_enc_begin(&ctx->enc, (uint64_t)ms_of(now), next_seq(ctx));
    for (uint32_t k = 0; k < d->ntags; k++) {
        uint32_t id = d->first_tag + k;
        const struct spb_val *c = &ctx->cache[id];
        add_tag_metric(ctx, &ctx->gw->tags[id], true, c->ts ? &c->v : NULL, c->ts ? c->q : FB_Q_BAD_WAITING,
                       c->ts ? c->ts : now, false, c->ts && c->raw);
    }
    for (uint32_t a = 0; a < ctx->gw->nalarms; a++) {
        uint8_t flags = 0;
        if (ctx->gw->alarms[a].device != di) continue;
        fb_alarm_flags(ctx->gw, a, &flags);
        add_alarm_metrics(ctx, a, flags, true, now, false);
    }
    pub_enc(ctx, ctx->devs[di].t[T_BIRTH]);
    ctx->devs[di].born = true;
    fb_debug(d->name, NULL, "sparkplug: DBIRTH (%u metrics)", d->ntags);
}

static void ddeath(struct spb_ctx *ctx, uint32_t di, const char *name)
{
    fb_spb_enc_begin(&ctx->enc, (uint64_t)ms_of(fb_now_ns()), next_seq(ctx));
    pub_enc(ctx, ctx->devs[di].t[T_DEATH]);
    ctx->devs[di].born = false;
    fb_debug(name, NULL, "sparkplug: DDEATH");
}

static void nbirth(struct spb_ctx *ctx, unsigned gen)
{
    int64_t now = fb_now_ns();
    int64_t ms = ms_of(now);
    bool al = ctx->cfg->aliases;
    ctx->seq = 0;
    fb_spb_enc_begin(&ctx->enc, (uint64_t)ms, next_seq(ctx));
    spb_metric *m = fb_spb_enc_add(&ctx->enc, "bdSeq", -1, ms, SPB_INT64);
    struct fb_value v = {.type = FB_T_UINT64, .u = atomic_load(&ctx->bdseq)};
    if (m) fb_spb_enc_value(&ctx->enc, m, SPB_INT64, &v);
    v = (struct fb_value){.type = FB_T_BOOL, .b = false};
    if ((m = fb_spb_enc_add(&ctx->enc, "Node Control/Rebirth", al ? SPB_ALIAS_REBIRTH : -1, ms, SPB_BOOLEAN)))
        fb_spb_enc_value(&ctx->enc, m, SPB_BOOLEAN, &v);
    if ((m = fb_spb_enc_add(&ctx->enc, "Node Control/Reboot", al ? SPB_ALIAS_REBOOT : -1, ms, SPB_BOOLEAN)))
        fb_spb_enc_value(&ctx->enc, m, SPB_BOOLEAN, &v);
    static const char sw[] = "fieldbridge " FB_VERSION;
    v = (struct fb_value){.type = FB_T_STRING, .s = {sw, sizeof sw - 1}};
    if ((m = fb_spb_enc_add(&ctx->enc, "Properties/Software", al ? SPB_ALIAS_SOFTWARE : -1, ms, SPB_STRING)))
        fb_spb_enc_value(&ctx->enc, m, SPB_STRING, &v);
    pub_enc(ctx, ctx->t_nbirth);
    ctx->born_gen = gen;
    ctx->birth_ns = now;
    fb_info(NULL, NULL, "sparkplug: NBIRTH on %s (bdSeq %u)", ctx->t_nbirth, atomic_load(&ctx->bdseq));
    for (uint32_t i = 0; i < ctx->gw->ndevs; i++) {
        ctx->devs[i].born = false;
        /* devices without any value yet are born with their first data */
        if (ctx->devs[i].state == FB_DEV_ONLINE && ctx->devs[i].seen) dbirth(ctx, i);
    }
}

/* The session state machine; sink thread only.  True when births are out. */
static bool session_step(struct spb_ctx *ctx)
{
    if (!fb_mqtt_session_connected(ctx->ms)) {
        ctx->born_gen = 0;
        return false;
    }
    unsigned gen = atomic_load(&ctx->conn_gen);
    if (atomic_exchange(&ctx->host_offline, false)) {
        /* primary host gone: NDEATH ourselves, then try the next server */
        struct fb_buf b;
        fb_buf_init(&b);
        fb_spb_ndeath_payload(&b, (uint64_t)ms_of(fb_now_ns()), atomic_load(&ctx->bdseq));
        fb_mqtt_session_publish(ctx->ms, ctx->t_ndeath, b.p, b.len, 1, false, NULL);
        fb_buf_free(&b);
        fb_warn(NULL, NULL, "sparkplug: primary host %s went offline: NDEATH, disconnecting%s", ctx->cfg->primary_host,
                ctx->cfg->broker.nservers > 1 ? " and moving to the next server" : "");
        fb_mqtt_session_disconnect(ctx->ms, true);
        ctx->born_gen = 0;
        return false;
    }
    if (!atomic_load(&ctx->host_online)) {
        ctx->born_gen = 0;
        return false;
    }
    if (ctx->born_gen != gen) {
        nbirth(ctx, gen);
        atomic_store(&ctx->want_rebirth, false);
    } else if (atomic_exchange(&ctx->want_rebirth, false)) {
        fb_info(NULL, NULL, "sparkplug: rebirth requested");
        nbirth(ctx, gen);
    }
    return true;
}

/* ------------------------------------------------------- session callbacks */
/* Network thread: the broker accepted us.  Births wait for the sink thread. */
static void spb_connected(void *obj, struct fb_mqtt_session *ms)
{
    struct spb_ctx *ctx = obj;
    const struct fb_broker_server *sv = fb_mqtt_session_server(ms);
    ctx->bdseq_fresh = false; /* this bdSeq now names a session: the next CONNECT takes the next */
    ctx->state_ts = 0;
    fb_info(NULL, NULL, "sparkplug: connected to %s:%d (MQTT %s, bdSeq %u)%s%s", sv->host, sv->port,
            fb_mqtt_session_v5(ms) ? "5" : "3.1.1", atomic_load(&ctx->bdseq),
            ctx->t_state ? ", waiting for STATE of " : "", ctx->t_state ? ctx->cfg->primary_host : "");
    const char *subs[3] = {ctx->t_ncmd, ctx->t_dcmd_sub, ctx->t_state};
    for (int i = 0; i < 3; i++) {
        if (!subs[i]) continue;
        int src = fb_mqtt_session_subscribe(ms, subs[i], 1, false);
        if (src != MOSQ_ERR_SUCCESS)
            fb_warn(NULL, NULL, "sparkplug: cannot subscribe to %s: %s", subs[i], fb_mqtt_session_strerror(ms, src));
    }
    atomic_store(&ctx->host_online, ctx->t_state == NULL);
    atomic_store(&ctx->host_offline, false);
    atomic_fetch_add(&ctx->conn_gen, 1);
}

/* Router thread (no reload under way there). */
static void cmd_reply(struct fb_cmd *cmd, const char *json, size_t len)
{
    struct fb_gateway *gw = cmd->reply_ctx;
    const char *dname = gw && cmd->device < gw->ndevs ? gw->devs[cmd->device].name : NULL;
    bool ok = len >= 10 && strstr(json, "\"ok\":true") != NULL && strstr(json, "\"ok\":false") == NULL;
    if (ok)
        fb_info(dname, NULL, "sparkplug: DCMD from %s done: %.*s", cmd->source, (int)(len > 400 ? 400 : len), json);
    else
        fb_warn(dname, NULL, "sparkplug: DCMD from %s failed: %.*s", cmd->source, (int)(len > 400 ? 400 : len), json);
}

static const struct fb_tag *tag_by_alias(struct spb_ctx *ctx, const struct fb_device *d, uint64_t alias)
{
    if (alias < SPB_ALIAS_BASE) return NULL;
    uint64_t id = alias - SPB_ALIAS_BASE;
    if (id < d->first_tag || id >= (uint64_t)d->first_tag + d->ntags) return NULL;
    return &ctx->gw->tags[id];
}

static void on_dcmd(struct spb_ctx *ctx, const char *topic, const spb_payload *p)
{
    const char *dname = topic + ctx->dcmd_prefix_len;
    struct fb_device *d = fb_gw_device(ctx->gw, dname);
    if (!d) {
        fb_warn(NULL, NULL, "sparkplug: DCMD for unknown device %.80s ignored", dname);
        return;
    }
    struct fb_buf j;
    fb_buf_init(&j);
    uint64_t id = atomic_fetch_add(&ctx->cmd_ids, 1) + 1;
    fb_buf_printf(&j, "{\"id\":\"spb-%llu\"", (unsigned long long)id);
    if (p->has_timestamp && p->timestamp > 0 && p->timestamp < (uint64_t)INT64_MAX / 1000000)
        fb_buf_printf(&j, ",\"ts\":%llu", (unsigned long long)p->timestamp);
    fb_buf_puts(&j, ",\"write\":{");
    bool first = true;
    for (size_t i = 0; i < p->n_metrics; i++) {
        const spb_metric *m = p->metrics[i];
        const struct fb_tag *t = NULL;
        if (m->name)
            t = fb_gw_tag(ctx->gw, d, m->name);
        else if (m->has_alias)
            t = tag_by_alias(ctx, d, m->alias);
        const char *name = t ? t->name : m->name;
        if (!name) {
            fb_warn(d->name, NULL, "sparkplug: DCMD metric with unknown alias %llu ignored",
                    (unsigned long long)(m->has_alias ? m->alias : 0));
            continue;
        }
        uint32_t dt = m->has_datatype ? m->datatype : t ? fb_spb_datatype(fb_tag_out_type(t)) : 0;
        if (fb_spb_metric_json(&j, m, name, dt, first) < 0) {
            fb_warn(d->name, name, "sparkplug: DCMD metric without a usable %s value ignored",
                    fb_spb_datatype_name(dt));
            continue;
        }
        first = false;
    }
    fb_buf_puts(&j, "}}");
    if (first) {
        fb_buf_free(&j);
        return;
    }
    struct fb_cmd *cmd = calloc(1, sizeof *cmd);
    if (!cmd) {
        fb_buf_free(&j);
        return;
    }
    cmd->payload = j.p; /* ownership passes to the command */
    cmd->len = j.len;
    cmd->device = d->idx;
    cmd->qos = -1; /* Sparkplug sends commands at QoS 0 by design: not the JSON API's QoS rule */
    snprintf(cmd->source, sizeof cmd->source, "sparkplug:%.80s", topic);
    snprintf(cmd->via, sizeof cmd->via, "sparkplug");
    cmd->reply_ctx = ctx->gw;
    cmd->reply = cmd_reply;
    fb_debug(d->name, NULL, "sparkplug: DCMD → %.*s", (int)cmd->len, cmd->payload);
    fb_router_submit(ctx->gw, cmd); /* under model_mu: a reload renumbers queued commands after this */
}

static void on_ncmd(struct spb_ctx *ctx, const spb_payload *p)
{
    for (size_t i = 0; i < p->n_metrics; i++) {
        const spb_metric *m = p->metrics[i];
        bool rebirth = (m->name && !strcmp(m->name, "Node Control/Rebirth")) ||
                       (!m->name && m->has_alias && m->alias == SPB_ALIAS_REBIRTH && ctx->cfg->aliases);
        bool reboot = (m->name && !strcmp(m->name, "Node Control/Reboot")) ||
                      (!m->name && m->has_alias && m->alias == SPB_ALIAS_REBOOT && ctx->cfg->aliases);
        struct fb_value v;
        bool yes = fb_spb_metric_value(m, SPB_BOOLEAN, &v) == 0 && v.b;
        if (rebirth && yes) {
            atomic_store(&ctx->want_rebirth, true);
            fb_sink_wake(ctx->s);
        } else if (reboot && yes) {
            if (!ctx->cfg->reboot) {
                fb_warn(NULL, NULL, "sparkplug: Node Control/Reboot refused (enable it with sparkplug.reboot: true)");
                continue;
            }
            fb_warn(NULL, NULL, "sparkplug: Node Control/Reboot: stopping and restarting the gateway process");
            fb_runtime_request_reboot(ctx->gw);
        } else if (!rebirth && !reboot) {
            fb_warn(NULL, NULL, "sparkplug: NCMD metric %s ignored (supported: Node Control/Rebirth, Reboot)",
                    m->name ? m->name : "(by alias)");
        }
    }
}

/* Network thread: STATE, NCMD, DCMD. */
static void spb_message(void *obj, const struct mosquitto_message *msg, const mosquitto_property *props)
{
    (void)props;
    struct spb_ctx *ctx = obj;
    if (ctx->t_state && !strcmp(msg->topic, ctx->t_state)) {
        int online = 0;
        int64_t ts = -1;
        if (fb_spb_parse_state(msg->payload, (size_t)msg->payloadlen, &online, &ts) < 0) {
            fb_warn(NULL, NULL, "sparkplug: unreadable STATE message on %s ignored", msg->topic);
            return;
        }
        if (ts >= 0) {
            if (ts < ctx->state_ts) return; /* older than one already seen */
            ctx->state_ts = ts;
        }
        bool was = atomic_exchange(&ctx->host_online, online != 0);
        if (online && !was) {
            fb_info(NULL, NULL, "sparkplug: primary host %s is online", ctx->cfg->primary_host);
            fb_sink_wake(ctx->s);
        } else if (!online && was) {
            atomic_store(&ctx->host_offline, true);
            fb_sink_wake(ctx->s);
        } else if (!online) {
            fb_info(NULL, NULL, "sparkplug: primary host %s is offline: waiting before birth", ctx->cfg->primary_host);
        }
        return;
    }
    if (msg->retain) {
        if (fb_ratelimit_ok(&ctx->rl_cmd, fb_mono_ns()))
            fb_warn(NULL, NULL, "sparkplug: retained command on %s ignored", msg->topic);
        return;
    }
    bool ncmd = !strcmp(msg->topic, ctx->t_ncmd);
    bool dcmd = !ncmd && !strncmp(msg->topic, ctx->t_dcmd_prefix, ctx->dcmd_prefix_len);
    if (!ncmd && !dcmd) return;
    if (msg->payloadlen > SPB_CMD_MAX_PAYLOAD) {
        fb_warn(NULL, NULL, "sparkplug: command on %s ignored: %d bytes", msg->topic, msg->payloadlen);
        return;
    }
    spb_payload *p = fb_spb_decode(msg->payload, (size_t)msg->payloadlen);
    if (!p) {
        fb_warn(NULL, NULL, "sparkplug: command on %s ignored: not a Sparkplug B payload", msg->topic);
        return;
    }
    if (ncmd) {
        on_ncmd(ctx, p);
    } else {
        pthread_mutex_lock(&ctx->model_mu);
        on_dcmd(ctx, msg->topic, p);
        pthread_mutex_unlock(&ctx->model_mu);
    }
    fb_spb_free(p);
}

/* Network thread, before every CONNECT: the will is an NDEATH with a fresh bdSeq. */
static void spb_before_connect(void *obj, struct fb_mqtt_session *ms)
{
    struct spb_ctx *ctx = obj;
    /* a new bdSeq for each session: attempts that never got a CONNACK keep theirs */
    if (ctx->bdseq_fresh) return;
    unsigned b = ctx->next_bdseq;
    ctx->next_bdseq = (b + 1) % 256;
    bdseq_save(ctx, b);
    atomic_store(&ctx->bdseq, b);
    ctx->bdseq_fresh = true;
    fb_buf_clear(&ctx->nbuf);
    fb_spb_ndeath_payload(&ctx->nbuf, (uint64_t)ms_of(fb_now_ns()), b);
    int rc = fb_mqtt_session_set_will(ms, ctx->t_ndeath, ctx->nbuf.p, ctx->nbuf.len, 1, false);
    if (rc) fb_warn(NULL, NULL, "sparkplug: cannot set the NDEATH will: %s", mosquitto_strerror(rc));
}

/* ----------------------------------------------------------- open / close */
static void devs_free(struct spb_dev *devs, uint32_t n)
{
    for (uint32_t i = 0; devs && i < n; i++)
        for (int k = 0; k < T__N; k++) free(devs[i].t[k]);
    free(devs);
}

static void alarm_names_free(char **names, uint32_t nalarms)
{
    if (names)
        for (uint32_t i = 0; i < nalarms * AM__N; i++) free(names[i]);
    free(names);
}

/* The metric names of gw's alarms (NULL when out of memory). */
static char **alarm_names_make(const struct fb_gateway *gw)
{
    char **names = calloc(gw->nalarms ? gw->nalarms * AM__N : 1, sizeof *names);
    for (uint32_t i = 0; names && i < gw->nalarms * AM__N; i++) {
        size_t len = strlen(gw->alarms[i / AM__N].name) + 24;
        if (!(names[i] = malloc(len))) {
            alarm_names_free(names, gw->nalarms);
            return NULL;
        }
        snprintf(names[i], len, "Alarms/%s/%s", gw->alarms[i / AM__N].name, am_name[i % AM__N]);
    }
    return names;
}

static void cache_free(struct spb_val *cache, uint32_t n)
{
    for (uint32_t i = 0; cache && i < n; i++) free(cache[i].sbuf);
    free(cache);
}

static void ctx_free(struct spb_ctx *ctx)
{
    if (!ctx) return;
    devs_free(ctx->devs, ctx->ndevs);
    cache_free(ctx->cache, ctx->ntags);
    alarm_names_free(ctx->alarm_names, ctx->nalarms);
    pthread_mutex_destroy(&ctx->model_mu);
    free(ctx->t_nbirth);
    free(ctx->t_ndata);
    free(ctx->t_ndeath);
    free(ctx->t_ncmd);
    free(ctx->t_dcmd_sub);
    free(ctx->t_dcmd_prefix);
    free(ctx->t_state);
    fb_spb_enc_free(&ctx->enc);
    fb_buf_free(&ctx->out);
    fb_buf_free(&ctx->nbuf);
    free(ctx);
}

static char *topic_dup(struct spb_ctx *ctx, const char *type, const char *dev, struct fb_err *err)
{
    char t[1024];
    if (fb_spb_topic(t, sizeof t, ctx->cfg->group, type, ctx->edge, dev) < 0 ||
        mosquitto_validate_utf8(t, (int)strlen(t)) != MOSQ_ERR_SUCCESS) {
        fb_err_set(err, FB_EINVAL, "sparkplug: topic for %s %s is too long or not UTF-8", type, dev ? dev : "");
        return NULL;
    }
    char *s = strdup(t);
    if (!s) fb_err_set(err, FB_ENOMEM, "out of memory");
    return s;
}

/* Every device's topics, for the model the gateway holds. */
static int dev_topics(struct spb_ctx *ctx, struct spb_dev *devs, struct fb_err *err)
{
    for (uint32_t i = 0; i < ctx->gw->ndevs; i++) {
        struct spb_dev *d = &devs[i];
        const char *n = ctx->gw->devs[i].name;
        for (int k = 0; k < T__N; k++)
            if (!(d->t[k] = topic_dup(ctx, t_type[k], n, err))) return FB_EINVAL;
        d->state = FB_DEV_CONNECTING;
    }
    return 0;
}

static const struct fb_mqtt_session_ops spb_ops = {
    .before_connect = spb_before_connect,
    .connected = spb_connected,
    .message = spb_message,
};

static int spb_open(struct fb_sink_inst *s, struct fb_err *err)
{
    const struct fb_spb_cfg *cfg = s->cfg;
    struct fb_gateway *gw = s->gw;
    if (!cfg || !gw || !cfg->broker.nservers || !cfg->group)
        return fb_err_set(err, FB_EINVAL, "sparkplug: no server or group");
    struct spb_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return fb_err_set(err, FB_ENOMEM, "out of memory");
    ctx->s = s;
    ctx->gw = gw;
    ctx->cfg = cfg;
    ctx->edge = cfg->edge_node && *cfg->edge_node ? cfg->edge_node : gw->id;
    fb_spb_enc_init(&ctx->enc);
    fb_buf_init(&ctx->out);
    fb_buf_init(&ctx->nbuf);
    ctx->rl_bdseq.interval_ns = 60 * SPB_SEC;
    ctx->rl_send.interval_ns = 60 * SPB_SEC;
    ctx->rl_cmd.interval_ns = 60 * SPB_SEC;
    if (s->buffer && s->buffer->path)
        snprintf(ctx->bdseq_path, sizeof ctx->bdseq_path, "%s/%s.bdseq", s->buffer->path,
                 s->name ? s->name : "sparkplug");
    bdseq_load(ctx);

    pthread_mutex_init(&ctx->model_mu, NULL);
    ctx->devs = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *ctx->devs);
    ctx->cache = calloc(gw->ntags ? gw->ntags : 1, sizeof *ctx->cache);
    ctx->ndevs = gw->ndevs;
    ctx->ntags = gw->ntags;
    ctx->alarm_names = alarm_names_make(gw);
    ctx->nalarms = gw->nalarms;
    if (!ctx->devs || !ctx->cache || !ctx->alarm_names) {
        ctx_free(ctx);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    if (!(ctx->t_nbirth = topic_dup(ctx, "NBIRTH", NULL, err)) ||
        !(ctx->t_ndata = topic_dup(ctx, "NDATA", NULL, err)) ||
        !(ctx->t_ndeath = topic_dup(ctx, "NDEATH", NULL, err)) || !(ctx->t_ncmd = topic_dup(ctx, "NCMD", NULL, err)) ||
        !(ctx->t_dcmd_sub = topic_dup(ctx, "DCMD", "+", err)) ||
        !(ctx->t_dcmd_prefix = topic_dup(ctx, "DCMD", "", err)))
        goto fail;
    ctx->dcmd_prefix_len = strlen(ctx->t_dcmd_prefix);
    if (cfg->primary_host && *cfg->primary_host) {
        char t[600];
        snprintf(t, sizeof t, "spBv1.0/STATE/%.500s", cfg->primary_host);
        if (!(ctx->t_state = strdup(t))) goto fail;
    }
    if (dev_topics(ctx, ctx->devs, err) < 0) goto fail;
    if (cfg->broker.client_id && *cfg->broker.client_id)
        snprintf(ctx->client_id, sizeof ctx->client_id, "%.150s", cfg->broker.client_id);
    else
        snprintf(ctx->client_id, sizeof ctx->client_id, "fieldbridge-spb-%.120s", ctx->edge);
    struct fb_mqtt_session_opts o = {
        .name = "sparkplug",
        .broker = &cfg->broker,
        .client_id = ctx->client_id,
        .sink = s,
        .ops = &spb_ops,
        .obj = ctx,
    };
    s->ctx = ctx;
    if (fb_mqtt_session_open(&ctx->ms, &o, err) < 0) {
        s->ctx = NULL;
        goto fail;
    }
    fb_info(NULL, NULL, "sparkplug: edge node %s/%s connecting to %s in the background", cfg->group, ctx->edge,
            cfg->broker.servers[0].url);
    return 0;
fail:
    ctx_free(ctx);
    return err && err->code ? err->code : FB_EINVAL;
}

/* ------------------------------------------------------------------ send */
static void cache_put(struct spb_ctx *ctx, const struct fb_sample *sm)
{
    if (sm->tag >= ctx->gw->ntags) return;
    struct spb_val *c = &ctx->cache[sm->tag];
    int64_t ts = sm->ts_src ? sm->ts_src : sm->ts_gw;
    if (c->ts && ts < c->ts) return; /* an older (buffered) value never replaces a newer one */
    c->ts = ts ? ts : 1;
    c->q = sm->quality;
    c->raw = (sm->flags & FB_SF_RAW) && sm->v.type != FB_T_NONE;
    if (sm->v.type == FB_T_NONE) {
        /* bad sample without a value: keep the last value, flag its quality */
        return;
    }
    c->v = sm->v;
    if (sm->v.type == FB_T_STRING) {
        if (c->scap < sm->v.s.len + 1) {
            uint32_t nc = sm->v.s.len + 1 < 64 ? 64 : sm->v.s.len + 1;
            char *nb = realloc(c->sbuf, nc);
            if (!nb) {
                c->v.type = FB_T_NONE;
                return;
            }
            c->sbuf = nb;
            c->scap = nc;
        }
        if (sm->v.s.len) memcpy(c->sbuf, sm->v.s.p, sm->v.s.len);
        c->v.s.p = c->sbuf;
    }
}

static int spb_send(struct fb_sink_inst *s, const struct fb_batch *b, uint64_t batch_id)
{
    struct spb_ctx *ctx = s->ctx;
    if (!ctx || b->device >= ctx->gw->ndevs) {
        fb_sink_done(s, batch_id, FB_DROP);
        return FB_EINVAL;
    }
    bool born = session_step(ctx);
    struct spb_dev *d = &ctx->devs[b->device];
    if (b->kind == FB_BATCH_DEVSTATE) {
        d->state = b->dev_state;
        /* DDEATH at once; the DBIRTH of a device that (re)connects goes out
         * with its first data, so it carries fresh values */
        if (born && b->dev_state == FB_DEV_OFFLINE && d->born) ddeath(ctx, b->device, ctx->gw->devs[b->device].name);
        /* births replay the state after every reconnect: never re-queued */
        fb_sink_done(s, batch_id, FB_SENT);
        return 0;
    }
    bool hist = born && b->ts < ctx->birth_ns;
    if (b->kind == FB_BATCH_ALARM) {
        if (b->ev.alarm >= ctx->gw->nalarms) { /* a flood summary, a script message, a summary refresh */
            fb_sink_done(s, batch_id, FB_SENT);
            return 0;
        }
        if (!born) {
            fb_sink_done(s, batch_id, FB_RETRY);
            return 0;
        }
        if (!d->born) {
            /* a dead device publishes nothing; a living one's birth carries the alarms' current state */
            if (d->state != FB_DEV_OFFLINE) dbirth(ctx, b->device);
            fb_sink_done(s, batch_id, FB_SENT);
            return 0;
        }
        fb_spb_enc_begin(&ctx->enc, (uint64_t)ms_of(b->ts), next_seq(ctx));
        add_alarm_metrics(ctx, b->ev.alarm, b->ev.flags, false, b->ts, hist);
        fb_spb_enc_finish(&ctx->enc, &ctx->out);
        fb_mqtt_session_publish_tracked(ctx->ms, batch_id, d->t[T_DATA], ctx->out.p, ctx->out.len, 0, false);
        return 0;
    }
    if (b->kind != FB_BATCH_DATA) { /* a kind this sink does not know */
        fb_sink_done(s, batch_id, FB_SENT);
        return 0;
    }
    for (uint32_t i = 0; i < b->n; i++) cache_put(ctx, &b->s[i]);
    if (b->n) d->seen = true;
    if (!born) {
        fb_sink_done(s, batch_id, FB_RETRY);
        return 0;
    }
    if (!d->born) {
        if (d->state == FB_DEV_OFFLINE) {
            /* a dead device publishes nothing; its last values are in the cache for the next DBIRTH */
            fb_sink_done(s, batch_id, FB_SENT);
            return 0;
        }
        /* the birth carries these values (from the cache, with their time stamps) */
        dbirth(ctx, b->device);
        fb_sink_done(s, batch_id, FB_SENT);
        return 0;
    }
    if (b->n == 0) {
        fb_sink_done(s, batch_id, FB_SENT);
        return 0;
    }
    fb_spb_enc_begin(&ctx->enc, (uint64_t)ms_of(b->ts), next_seq(ctx));
    for (uint32_t i = 0; i < b->n; i++) {
        const struct fb_sample *sm = &b->s[i];
        if (sm->tag >= ctx->gw->ntags) continue;
        add_tag_metric(ctx, &ctx->gw->tags[sm->tag], false, &sm->v, sm->quality, sm->ts_src ? sm->ts_src : sm->ts_gw,
                       hist, (sm->flags & FB_SF_RAW) != 0);
    }
    fb_spb_enc_finish(&ctx->enc, &ctx->out);
    fb_mqtt_session_publish_tracked(ctx->ms, batch_id, d->t[T_DATA], ctx->out.p, ctx->out.len, 0, false);
    return 0;
}

static bool spb_ready(struct fb_sink_inst *s, bool pace)
{
    (void)pace;
    struct spb_ctx *ctx = s->ctx;
    return ctx && session_step(ctx);
}

static void spb_tick(struct fb_sink_inst *s)
{
    struct spb_ctx *ctx = s->ctx;
    if (ctx) session_step(ctx);
}

static void spb_close(struct fb_sink_inst *s)
{
    struct spb_ctx *ctx = s->ctx;
    if (!ctx) return;
    /* NDEATH ourselves before a clean DISCONNECT (which makes the broker drop the will) */
    struct fb_buf b;
    fb_buf_init(&b);
    fb_spb_ndeath_payload(&b, (uint64_t)ms_of(fb_now_ns()), atomic_load(&ctx->bdseq));
    if (fb_mqtt_session_close(ctx->ms, ctx->t_ndeath, b.p, b.len, false, SPB_CLOSE_WAIT_NS))
        fb_info(NULL, NULL, "sparkplug: NDEATH published (bdSeq %u)", atomic_load(&ctx->bdseq));
    fb_buf_free(&b);
    ctx->ms = NULL;
    s->ctx = NULL;
    ctx_free(ctx);
}

/* ------------------------------------------------------------------ reload */
static void spb_model_begin(struct fb_sink_inst *s)
{
    struct spb_ctx *ctx = s->ctx;
    if (ctx) pthread_mutex_lock(&ctx->model_mu);
}

/* The gateway holds the new model (the sink thread is parked, so the
 * encoder and seq are ours): topics and value cache follow the map, devices
 * that are gone die, and everything is born again with the new metrics. */
static void spb_model_end(struct fb_sink_inst *s, const struct fb_model_map *map)
{
    struct spb_ctx *ctx = s->ctx;
    if (!ctx) return;
    struct fb_gateway *gw = ctx->gw;
    struct fb_err e = {0};
    struct spb_dev *devs = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *devs);
    struct spb_val *cache = calloc(gw->ntags ? gw->ntags : 1, sizeof *cache);
    char **names = alarm_names_make(gw);
    if (!devs || !cache || !names || dev_topics(ctx, devs, &e) < 0) {
        fb_error(NULL, NULL, "sparkplug: after the reload: %s; restart the gateway",
                 e.msg[0] ? e.msg : "out of memory");
        devs_free(devs, gw->ndevs);
        free(cache);
        alarm_names_free(names, gw->nalarms);
        pthread_mutex_unlock(&ctx->model_mu);
        return;
    }
    bool born = ctx->born_gen != 0 && fb_mqtt_session_connected(ctx->ms);
    for (uint32_t i = 0; i < ctx->ndevs && i < map->ndevs; i++) {
        uint32_t j = map->dev[i];
        if (j != UINT32_MAX && j < gw->ndevs) {
            devs[j].state = ctx->devs[i].state;
            devs[j].seen = ctx->devs[i].seen;
        } else if (born && ctx->devs[i].born) {
            ddeath(ctx, i, NULL); /* its topics are still in ctx->devs; the model has forgotten it */
        }
    }
    for (uint32_t i = 0; i < ctx->ntags && i < map->ntags; i++) {
        uint32_t j = map->tag[i];
        if (j == UINT32_MAX || j >= gw->ntags) continue;
        cache[j] = ctx->cache[i]; /* the string buffer moves with it */
        ctx->cache[i].sbuf = NULL;
    }
    devs_free(ctx->devs, ctx->ndevs);
    cache_free(ctx->cache, ctx->ntags);
    ctx->devs = devs;
    ctx->ndevs = gw->ndevs;
    ctx->cache = cache;
    ctx->ntags = gw->ntags;
    alarm_names_free(ctx->alarm_names, ctx->nalarms);
    ctx->alarm_names = names;
    ctx->nalarms = gw->nalarms;
    atomic_store(&ctx->want_rebirth, true); /* aliases and metric sets follow the new model */
    pthread_mutex_unlock(&ctx->model_mu);
}

static bool str_eq(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

static bool spb_cfg_equal(const void *a, const void *b)
{
    const struct fb_spb_cfg *x = a, *y = b;
    return x && y && fb_broker_cfg_equal(&x->broker, &y->broker) && str_eq(x->group, y->group) &&
           str_eq(x->edge_node, y->edge_node) && str_eq(x->primary_host, y->primary_host) && x->aliases == y->aliases &&
           x->reboot == y->reboot;
}

/* ------------------------------------------------------------------ config */
static const char *const k_sparkplug[] = {FB_BROKER_KEYS, "group",  "edge_node", "primary_host",
                                          "aliases",      "reboot", NULL};

static const struct fb_config_keys k_nested[] = {
    {"tls", fb_broker_tls_keys}, {"reconnect", fb_broker_reconnect_keys}, {NULL, NULL}};

static void spb_cfg_free(void *p)
{
    struct fb_spb_cfg *c = p;
    if (!c) return;
    fb_broker_cfg_clear(&c->broker);
    free(c->group);
    free(c->edge_node);
    free(c->primary_host);
    free(c);
}

/* A Sparkplug id (group, edge node, host): one topic level. */
static char *spb_id(struct fb_cfg *r, const struct fb_cfg_map *m, const char *key)
{
    struct fb_cfg_node *n = fb_cfg_get(m, key);
    if (!n) return NULL;
    char what[64];
    snprintf(what, sizeof what, "sparkplug.%s", key);
    char *v = fb_cfg_str(r, NULL, n, what);
    if (v && !fb_cfg_level_ok(v))
        fb_cfg_error(r, n, "%s '%s' must be non-empty and contain no '/', '+' or '#'", what, v);
    return v;
}

static void *spb_cfg_load(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw)
{
    (void)gw; /* the edge node id defaults to the gateway id at open */
    struct fb_spb_cfg *q = calloc(1, sizeof *q);
    if (!q) {
        fb_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    q->aliases = true;
    fb_broker_cfg_load(r, m, "sparkplug", 150, &q->broker);
    if (!fb_cfg_get(m, "group")) fb_cfg_error(r, NULL, "sparkplug.group is required (the Sparkplug group id)");
    q->group = spb_id(r, m, "group");
    q->edge_node = spb_id(r, m, "edge_node");
    q->primary_host = spb_id(r, m, "primary_host");
    struct fb_cfg_node *n;
    if ((n = fb_cfg_get(m, "aliases"))) fb_cfg_bool(r, NULL, n, "sparkplug.aliases", &q->aliases);
    if ((n = fb_cfg_get(m, "reboot"))) fb_cfg_bool(r, NULL, n, "sparkplug.reboot", &q->reboot);
    return q;
}

static void spb_describe(const struct fb_sink_inst *s, FILE *f)
{
    const struct fb_spb_cfg *q = s->cfg;
    const struct fb_broker_cfg *b = &q->broker;
    fprintf(f, "  sink sparkplug  group %s edge node %s  %s%s  MQTT %s  aliases %s  primary host %s  reboot %s\n",
            q->group ? q->group : "?", q->edge_node ? q->edge_node : s->gw->id, b->nservers ? b->servers[0].url : "?",
            b->nservers > 1 ? " (+ more servers)" : "", b->version == 3 ? "3.1.1" : "5", q->aliases ? "on" : "off",
            q->primary_host ? q->primary_host : "none", q->reboot ? "allowed" : "refused");
}

const struct fb_sink fb_sink_sparkplug = {
    .name = "sparkplug",
    .keys = k_sparkplug,
    .nested = k_nested,
    .cfg_load = spb_cfg_load,
    .cfg_free = spb_cfg_free,
    .describe = spb_describe,
    .open = spb_open,
    .send = spb_send,
    .ready = spb_ready,
    .tick = spb_tick,
    .close = spb_close,
    .cfg_equal = spb_cfg_equal,
    .model_begin = spb_model_begin,
    .model_end = spb_model_end,
};
