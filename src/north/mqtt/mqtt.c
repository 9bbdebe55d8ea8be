/* mqtt.c — the MQTT sink: telemetry and status as JSON on ISA-95 topics,
 * commands in.  Topics and payloads are specified in docs/mqtt.md.
 *
 * The broker session (connection thread, reconnect with back-off, failover
 * list, TLS, in-flight tracking with PUBACK → fb_sink_done) is session.c,
 * shared with the Sparkplug sink; this file is what is particular to the
 * JSON sink: its config section, its topics, and what it publishes when.
 *
 * Delivery.  Telemetry and device-status batches are tracked publications:
 * their delivery is reported when the broker acknowledges them.  While
 * disconnected, telemetry is reported FB_RETRY at once (the store keeps it);
 * device-status batches are reported sent, because every (re)connect
 * republishes each device's current state anyway and a re-queued old state
 * would overwrite a newer one.
 *
 * Status.  On every connect: the retained gateway status (online) and each
 * device's current status; periodically the gateway status with health; at
 * close the offline status (QoS 1, retained), acknowledged before the clean
 * DISCONNECT, which makes the broker discard the will ("connection lost").
 *
 * Commands.  Every device's command topic is subscribed on each (re)connect
 * (MQTT 5: no-local).  The message callback looks the topic up in a sorted
 * table built at open, copies the payload, the QoS and the MQTT 5 response
 * topic and correlation data into a struct fb_cmd and hands it to the
 * router; it never blocks.  The reply is published to the response topic
 * (with the correlation data echoed) or else to the device's
 * "command/response" topic.  Retained commands are ignored: a broker would
 * replay them on every reconnect.
 *
 * Alarms (docs/alarms.md).  Each alarm event batch becomes one event message
 * on the device's "alarm" topic (tracked, like telemetry: buffered while the
 * broker is away), followed by the device's retained summary of the alarms
 * that are not normal, rendered from the alarm table at that moment; every
 * (re)connect republishes the summary of each device that has alarms.
 */
#include "north/mqtt/mqtt.h"

#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/plugin.h"
#include "core/router.h"
#include "edge/alarms.h"
#include "north/mqtt/telemetry.h"
#include "north/mqtt/topic.h"

#define MQ_CMD_MAX_PAYLOAD (64 * 1024)
#define MQ_CLOSE_WAIT_NS 2000000000LL /* close(): wait this long for PUBACKs */
#define MQ_SEC 1000000000LL

enum { T_TELE, T_STATUS, T_CMD, T_RESP, T_ALARM, T__N }; /* a device's topics */
static const char *const t_kind[T__N] = {FB_KIND_TELEMETRY, FB_KIND_STATUS, FB_KIND_COMMAND, FB_KIND_RESPONSE,
                                         FB_KIND_ALARM};

struct mq_dev {
    char *t[T__N];
    bool alarms;                /* the device has alarms: its summary is published on connect */
    int64_t status_ts;          /* time of the last state change seen (under mu), 0 = unknown */
    char reason[FB_REASON_LEN]; /* its reason (under mu) */
};

struct mq_route {
    const char *topic;
    uint32_t dev;
};

struct mq_ctx {
    struct fb_sink_inst *s;
    struct fb_gateway *gw;
    const struct fb_mqtt_cfg *cfg;
    struct fb_mqtt_session *ms;
    char client_id[128];
    struct mq_dev *devs;
    char *t_gw_status;
    struct mq_route *routes;
    uint32_t nroutes;
    pthread_mutex_t mu;  /* the devices' last state (sink thread writes, network thread reads) */
    struct fb_buf json;  /* whoever holds the sink's call lock (send, tick), close */
    bool plain_names;    /* no tag name needs escaping in JSON (checked at open) */
    struct fb_buf nbuf;  /* network thread (connected) */
    int64_t next_status; /* sink thread: next periodic gateway status (mono) */
};

/* ------------------------------------------------------------------ config */
static const char *const k_mqtt[] = {FB_BROKER_KEYS, "topic", "qos", "max_inflight", NULL};
static const char *const k_qos[] = {"telemetry", "status", "command", "alarm", NULL};
static const struct fb_config_keys k_nested[] = {
    {"tls", fb_broker_tls_keys}, {"reconnect", fb_broker_reconnect_keys}, {"qos", k_qos}, {NULL, NULL}};

static void mq_cfg_free(void *p)
{
    struct fb_mqtt_cfg *c = p;
    if (!c) return;
    fb_broker_cfg_clear(&c->broker);
    free(c->topic);
    free(c);
}

static void *mq_cfg_load(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw)
{
    struct fb_mqtt_cfg *q = calloc(1, sizeof *q);
    if (!q) {
        fb_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    q->qos_telemetry = q->qos_status = q->qos_command = q->qos_alarm = 1;
    q->max_inflight = 1000;
    fb_broker_cfg_load(r, m, "mqtt", 256, &q->broker);
    if (!q->broker.client_id) {
        size_t len = strlen(gw->id) + 16;
        q->broker.client_id = malloc(len);
        if (q->broker.client_id) snprintf(q->broker.client_id, len, "fieldbridge-%s", gw->id);
    }
    struct fb_cfg_node *n, *x;
    if ((n = fb_cfg_get(m, "topic"))) {
        q->topic = fb_cfg_str(r, NULL, n, "mqtt.topic");
        struct fb_err e = {0};
        if (q->topic && fb_topic_check(q->topic, &e) < 0) fb_cfg_error(r, n, "mqtt.topic: %s", e.msg);
    } else {
        q->topic = strdup(FB_TOPIC_DEFAULT);
    }
    struct fb_cfg_map t = {0};
    if ((n = fb_cfg_get(m, "qos")) && fb_cfg_map_load(r, n, "mqtt.qos", &t)) {
        fb_cfg_map_check(r, &t, k_qos, "mqtt.qos", false);
        long long v;
        if ((x = fb_cfg_get(&t, "telemetry")) && fb_cfg_int(r, NULL, x, "mqtt.qos.telemetry", 0, 2, &v))
            q->qos_telemetry = (int)v;
        if ((x = fb_cfg_get(&t, "status")) && fb_cfg_int(r, NULL, x, "mqtt.qos.status", 0, 2, &v))
            q->qos_status = (int)v;
        if ((x = fb_cfg_get(&t, "command")) && fb_cfg_int(r, NULL, x, "mqtt.qos.command", 0, 2, &v))
            q->qos_command = (int)v;
        if ((x = fb_cfg_get(&t, "alarm")) && fb_cfg_int(r, NULL, x, "mqtt.qos.alarm", 0, 2, &v)) q->qos_alarm = (int)v;
        fb_cfg_map_free(&t);
    }
    long long v;
    if ((n = fb_cfg_get(m, "max_inflight")) && fb_cfg_int(r, NULL, n, "mqtt.max_inflight", 1, 65535, &v))
        q->max_inflight = (uint32_t)v;
    return q;
}

static void mq_describe(const struct fb_sink_inst *s, FILE *f)
{
    const struct fb_mqtt_cfg *q = s->cfg;
    const struct fb_broker_cfg *b = &q->broker;
    fprintf(f, "  sink mqtt  %s%s  MQTT %s%s  qos telemetry %d status %d command %d%s  topic %s\n",
            b->nservers ? b->servers[0].url : "?", b->nservers > 1 ? " (+ more servers)" : "",
            b->version == 5 ? "5" : "3.1.1", b->tls ? " TLS" : "", q->qos_telemetry, q->qos_status, q->qos_command,
            s->gw && s->gw->nalarms ? (q->qos_alarm == 0   ? " alarm 0"
                                       : q->qos_alarm == 2 ? " alarm 2"
                                                           : " alarm 1")
                                    : "",
            q->topic);
}

/* ----------------------------------------------------------------- status */
static void publish_gw_status(struct mq_ctx *ctx, struct fb_buf *buf, bool online)
{
    fb_buf_clear(buf);
    fb_status_json(ctx->gw, buf, online);
    int rc = fb_mqtt_session_publish(ctx->ms, ctx->t_gw_status, buf->p, buf->len, ctx->cfg->qos_status, true, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        fb_debug(NULL, NULL, "mqtt: gateway status not published: %s", fb_mqtt_session_strerror(ctx->ms, rc));
}

static void publish_dev_status(struct mq_ctx *ctx, struct fb_buf *buf, uint32_t i)
{
    struct fb_batch b;
    memset(&b, 0, sizeof b);
    b.kind = FB_BATCH_DEVSTATE;
    b.device = i;
    b.dev_state = (uint8_t)atomic_load(&ctx->gw->devs[i].state);
    pthread_mutex_lock(&ctx->mu);
    b.ts = ctx->devs[i].status_ts ? ctx->devs[i].status_ts : fb_now_ns();
    memcpy(b.reason, ctx->devs[i].reason, sizeof b.reason);
    pthread_mutex_unlock(&ctx->mu);
    fb_buf_clear(buf);
    fb_devstatus_json(buf, ctx->gw, &b);
    fb_mqtt_session_publish(ctx->ms, ctx->devs[i].t[T_STATUS], buf->p, buf->len, ctx->cfg->qos_status, true, NULL);
}

/* The device's retained alarm summary (any thread with its own buffer). */
static void publish_alarm_summary(struct mq_ctx *ctx, struct fb_buf *buf, uint32_t i)
{
    fb_buf_clear(buf);
    fb_alarm_summary_json(buf, ctx->gw, i);
    fb_mqtt_session_publish(ctx->ms, ctx->devs[i].t[T_ALARM], buf->p, buf->len, ctx->cfg->qos_alarm, true, NULL);
}

/* ---------------------------------------------------- session callbacks */
/* Network thread: the broker accepted us. */
static void mq_connected(void *obj, struct fb_mqtt_session *ms)
{
    struct mq_ctx *ctx = obj;
    const struct fb_broker_server *sv = fb_mqtt_session_server(ms);
    fb_info(NULL, NULL, "mqtt: connected to %s:%d (MQTT %s%s, client id %s)", sv->host, sv->port,
            fb_mqtt_session_v5(ms) ? "5" : "3.1.1", ctx->cfg->broker.tls ? ", TLS" : "", ctx->client_id);
    /* commands first, so a controller that waits for our birth can write at once */
    for (uint32_t i = 0; i < ctx->gw->ndevs; i++) {
        int src = fb_mqtt_session_subscribe(ms, ctx->devs[i].t[T_CMD], ctx->cfg->qos_command, true);
        if (src != MOSQ_ERR_SUCCESS)
            fb_warn(ctx->gw->devs[i].name, NULL, "mqtt: cannot subscribe to %s: %s", ctx->devs[i].t[T_CMD],
                    fb_mqtt_session_strerror(ms, src));
    }
    publish_gw_status(ctx, &ctx->nbuf, true);
    for (uint32_t i = 0; i < ctx->gw->ndevs; i++) publish_dev_status(ctx, &ctx->nbuf, i);
    for (uint32_t i = 0; i < ctx->gw->ndevs; i++)
        if (ctx->devs[i].alarms) publish_alarm_summary(ctx, &ctx->nbuf, i);
}

static int route_cmp(const void *a, const void *b)
{
    return strcmp(((const struct mq_route *)a)->topic, ((const struct mq_route *)b)->topic);
}

static void cmd_reply(struct fb_cmd *cmd, const char *json, size_t len);

/* Network thread: a command. */
static void mq_message(void *obj, const struct mosquitto_message *msg, const mosquitto_property *props)
{
    struct mq_ctx *ctx = obj;
    struct mq_route key = {.topic = msg->topic};
    const struct mq_route *r = bsearch(&key, ctx->routes, ctx->nroutes, sizeof key, route_cmp);
    if (!r) return;
    const char *dname = ctx->gw->devs[r->dev].name;
    if (msg->retain) {
        fb_warn(dname, NULL, "mqtt: retained command on %s ignored (commands must not be retained)", msg->topic);
        return;
    }
    if (msg->payloadlen > MQ_CMD_MAX_PAYLOAD) {
        fb_warn(dname, NULL, "mqtt: command on %s ignored: %d bytes (limit %d)", msg->topic, msg->payloadlen,
                MQ_CMD_MAX_PAYLOAD);
        return;
    }
    struct fb_cmd *cmd = calloc(1, sizeof *cmd);
    if (!cmd) return;
    cmd->payload = malloc((size_t)msg->payloadlen + 1);
    if (!cmd->payload) {
        free(cmd);
        return;
    }
    if (msg->payloadlen) memcpy(cmd->payload, msg->payload, (size_t)msg->payloadlen);
    cmd->payload[msg->payloadlen] = 0;
    cmd->len = (size_t)msg->payloadlen;
    cmd->device = r->dev;
    cmd->qos = msg->qos;
    if (props) {
        char *rt = NULL;
        if (mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &rt, false)) {
            if (rt && *rt && mosquitto_pub_topic_check(rt) == MOSQ_ERR_SUCCESS) {
                cmd->response_topic = rt;
            } else {
                fb_warn(dname, NULL, "mqtt: invalid response topic \"%s\" on %s: answering on %s", rt ? rt : "",
                        msg->topic, ctx->devs[r->dev].t[T_RESP]);
                free(rt);
            }
        }
        void *corr = NULL;
        uint16_t clen = 0;
        if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &clen, false)) {
            cmd->corr = corr;
            cmd->corr_len = clen;
        }
    }
    snprintf(cmd->source, sizeof cmd->source, "mqtt:%.90s", msg->topic);
    snprintf(cmd->via, sizeof cmd->via, "mqtt"); /* no role: the broker authenticates publishers, not us */
    cmd->reply_ctx = ctx;
    cmd->reply = cmd_reply;
    fb_router_submit(ctx->gw, cmd);
}

/* Router thread.  The router is stopped before the sinks close (runtime.c),
 * so ctx and the session are alive here. */
static void cmd_reply(struct fb_cmd *cmd, const char *json, size_t len)
{
    struct mq_ctx *ctx = cmd->reply_ctx;
    if (!ctx || !ctx->ms || cmd->device >= ctx->gw->ndevs) return;
    const char *topic = cmd->response_topic ? cmd->response_topic : ctx->devs[cmd->device].t[T_RESP];
    mosquitto_property *props = NULL;
    if (fb_mqtt_session_v5(ctx->ms) && cmd->corr && cmd->corr_len > 0)
        mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, cmd->corr, (uint16_t)cmd->corr_len);
    int rc = fb_mqtt_session_publish(ctx->ms, topic, json, len, ctx->cfg->qos_status, false, props);
    mosquitto_property_free_all(&props);
    if (rc != MOSQ_ERR_SUCCESS) {
        atomic_fetch_add(&ctx->s->m.errors, 1);
        fb_warn(ctx->gw->devs[cmd->device].name, NULL, "mqtt: command response to %s not sent: %s", topic,
                fb_mqtt_session_strerror(ctx->ms, rc));
    }
}

/* ------------------------------------------------------------ open / close */
static void ctx_free(struct mq_ctx *ctx)
{
    if (!ctx) return;
    if (ctx->devs)
        for (uint32_t i = 0; i < ctx->gw->ndevs; i++)
            for (int k = 0; k < T__N; k++) free(ctx->devs[i].t[k]);
    free(ctx->devs);
    free(ctx->t_gw_status);
    free(ctx->routes);
    fb_buf_free(&ctx->json);
    fb_buf_free(&ctx->nbuf);
    pthread_mutex_destroy(&ctx->mu);
    free(ctx);
}

/* Renders one topic into a malloc'd string and checks it is publishable. */
static char *topic_dup(struct mq_ctx *ctx, const struct fb_device *dev, const char *kind, struct fb_err *err)
{
    const char *tmpl = ctx->cfg->topic ? ctx->cfg->topic : FB_TOPIC_DEFAULT;
    struct fb_buf b;
    fb_buf_init(&b);
    if (fb_topic_render(&b, tmpl, ctx->gw, dev, kind) < 0) {
        struct fb_err e = {0};
        fb_topic_check(tmpl, &e);
        fb_err_set(err, FB_EINVAL, "mqtt.topic: %s", e.msg[0] ? e.msg : "invalid template");
        fb_buf_free(&b);
        return NULL;
    }
    fb_buf_cstr(&b);
    if (b.len > 65535 || mosquitto_validate_utf8(b.p, (int)b.len) != MOSQ_ERR_SUCCESS ||
        mosquitto_pub_topic_check(b.p) != MOSQ_ERR_SUCCESS) {
        fb_err_set(err, FB_EINVAL, "mqtt: topic \"%.120s\" for %s is not a valid MQTT topic (UTF-8, length)", b.p,
                   dev ? dev->name : "the gateway");
        fb_buf_free(&b);
        return NULL;
    }
    return b.p; /* ownership passes to the caller */
}

/* Every topic rendered once, here; command topics sorted for the look-up. */
static int make_topics(struct mq_ctx *ctx, struct fb_err *err)
{
    struct fb_gateway *gw = ctx->gw;
    ctx->devs = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *ctx->devs);
    ctx->routes = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *ctx->routes);
    if (!ctx->devs || !ctx->routes) return fb_err_set(err, FB_ENOMEM, "out of memory");
    if (!(ctx->t_gw_status = topic_dup(ctx, NULL, FB_KIND_STATUS, err))) return FB_EINVAL;
    for (uint32_t i = 0; i < gw->ndevs; i++) {
        struct mq_dev *d = &ctx->devs[i];
        const struct fb_device *dev = &gw->devs[i];
        for (int k = 0; k < T__N; k++)
            if (!(d->t[k] = topic_dup(ctx, dev, t_kind[k], err))) return FB_EINVAL;
        if (!strcmp(d->t[T_STATUS], ctx->t_gw_status))
            fb_warn(dev->name, NULL, "mqtt: device status topic %s is the gateway's own status topic", d->t[T_STATUS]);
        ctx->routes[i].topic = d->t[T_CMD];
        ctx->routes[i].dev = i;
    }
    for (uint32_t a = 0; a < gw->nalarms; a++) ctx->devs[gw->alarms[a].device].alarms = true;
    ctx->nroutes = gw->ndevs;
    qsort(ctx->routes, ctx->nroutes, sizeof *ctx->routes, route_cmp);
    for (uint32_t i = 1; i < ctx->nroutes; i++)
        if (!strcmp(ctx->routes[i].topic, ctx->routes[i - 1].topic))
            return fb_err_set(err, FB_EINVAL, "mqtt.topic: devices %s and %s get the same command topic %s",
                              gw->devs[ctx->routes[i - 1].dev].name, gw->devs[ctx->routes[i].dev].name,
                              ctx->routes[i].topic);
    return 0;
}

static const struct fb_mqtt_session_ops mq_ops = {
    .connected = mq_connected,
    .message = mq_message,
};

static int mq_open(struct fb_sink_inst *s, struct fb_err *err)
{
    const struct fb_mqtt_cfg *cfg = s->cfg;
    struct fb_gateway *gw = s->gw;
    if (!cfg || !gw) return fb_err_set(err, FB_EINVAL, "mqtt: not configured");
    struct mq_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return fb_err_set(err, FB_ENOMEM, "out of memory");
    ctx->s = s;
    ctx->gw = gw;
    ctx->cfg = cfg;
    pthread_mutex_init(&ctx->mu, NULL);
    fb_buf_init(&ctx->json);
    fb_buf_init(&ctx->nbuf);
    snprintf(ctx->client_id, sizeof ctx->client_id, "%.127s",
             cfg->broker.client_id ? cfg->broker.client_id : "fieldbridge");
    if (make_topics(ctx, err) < 0) {
        ctx_free(ctx);
        return err ? err->code : FB_EINVAL;
    }
    ctx->plain_names = true; /* config names are letters, digits, '_', '.', '-' and [N]: checked anyway */
    for (uint32_t i = 0; i < gw->ntags && ctx->plain_names; i++)
        ctx->plain_names = gw->tags[i].name && fb_json_plain(gw->tags[i].name);
    /* the will: the broker publishes it when we vanish; it cannot carry the
     * time of that moment, so "ts" is null (docs/mqtt.md) */
    struct fb_buf w;
    fb_buf_init(&w);
    fb_buf_puts(&w, "{\"gateway\":");
    fb_json_cstr(&w, gw->id ? gw->id : "");
    fb_buf_puts(&w, ",\"online\":false,\"ts\":null,\"reason\":\"connection lost\"}");
    struct fb_mqtt_session_opts o = {
        .name = "mqtt",
        .broker = &cfg->broker,
        .client_id = ctx->client_id,
        .max_inflight = cfg->max_inflight,
        .sink = s,
        .ops = &mq_ops,
        .obj = ctx,
        .will_topic = ctx->t_gw_status,
        .will_payload = w.p,
        .will_len = w.len,
        .will_qos = cfg->qos_status,
        .will_retain = true,
    };
    s->ctx = ctx;
    int rc = fb_mqtt_session_open(&ctx->ms, &o, err);
    fb_buf_free(&w);
    if (rc < 0) {
        s->ctx = NULL;
        ctx_free(ctx);
        return rc;
    }
    ctx->next_status = fb_mono_ns() + (gw->status_interval_ns > 0 ? gw->status_interval_ns : 30 * MQ_SEC);
    fb_info(NULL, NULL, "mqtt: connecting to %s:%d in the background (gateway status on %s)",
            cfg->broker.servers[0].host, cfg->broker.servers[0].port, ctx->t_gw_status);
    return 0;
}

/* ------------------------------------------------------------------- send */
static int mq_send(struct fb_sink_inst *s, const struct fb_batch *b, uint64_t batch_id)
{
    struct mq_ctx *ctx = s->ctx;
    if (!ctx || b->device >= ctx->gw->ndevs) {
        fb_sink_done(s, batch_id, FB_DROP);
        return FB_EINVAL;
    }
    struct mq_dev *d = &ctx->devs[b->device];
    bool connected = fb_mqtt_session_connected(ctx->ms);
    if (b->kind == FB_BATCH_DEVSTATE) {
        pthread_mutex_lock(&ctx->mu);
        d->status_ts = b->ts;
        fb_text_cut(d->reason, sizeof d->reason, b->reason);
        pthread_mutex_unlock(&ctx->mu);
        if (!connected) {
            /* superseded: every (re)connect publishes each device's current state */
            fb_sink_done(s, batch_id, FB_SENT);
            return 0;
        }
        fb_buf_clear(&ctx->json);
        fb_devstatus_json(&ctx->json, ctx->gw, b);
        fb_mqtt_session_publish_tracked(ctx->ms, batch_id, d->t[T_STATUS], ctx->json.p, ctx->json.len,
                                        ctx->cfg->qos_status, true);
        return 0;
    }
    if (!connected) { /* don't encode what cannot leave */
        fb_sink_done(s, batch_id, FB_RETRY);
        return 0;
    }
    if (b->kind == FB_BATCH_ALARM) {
        if (b->ev.event == FB_AE_NONE) { /* a summary refresh (a silenced alarm changed): the summary only */
            publish_alarm_summary(ctx, &ctx->json, b->device);
            fb_sink_done(s, batch_id, FB_SENT);
            return 0;
        }
        /* the event (tracked, kept in the buffer until acknowledged), then the current summary */
        fb_buf_clear(&ctx->json);
        fb_alarm_event_json(&ctx->json, ctx->gw, b);
        fb_mqtt_session_publish_tracked(ctx->ms, batch_id, d->t[T_ALARM], ctx->json.p, ctx->json.len,
                                        ctx->cfg->qos_alarm, false);
        publish_alarm_summary(ctx, &ctx->json, b->device);
        return 0;
    }
    if (b->kind != FB_BATCH_DATA) { /* a kind this sink does not know: nothing to publish */
        fb_sink_done(s, batch_id, FB_SENT);
        return 0;
    }
    fb_buf_clear(&ctx->json);
    if (ctx->plain_names)
        fb_telemetry_json_plain(&ctx->json, ctx->gw, b);
    else
        fb_telemetry_json(&ctx->json, ctx->gw, b);
    fb_mqtt_session_publish_tracked(ctx->ms, batch_id, d->t[T_TELE], ctx->json.p, ctx->json.len,
                                    ctx->cfg->qos_telemetry, false);
    return 0;
}

/* The runtime hands over buffered records only while this holds. */
static bool mq_ready(struct fb_sink_inst *s)
{
    struct mq_ctx *ctx = s->ctx;
    return ctx && fb_mqtt_session_ready(ctx->ms);
}

static void mq_tick(struct fb_sink_inst *s)
{
    struct mq_ctx *ctx = s->ctx;
    if (!ctx) return;
    int64_t now = fb_mono_ns();
    if (now < ctx->next_status) return;
    ctx->next_status = now + (ctx->gw->status_interval_ns > 0 ? ctx->gw->status_interval_ns : 30 * MQ_SEC);
    if (fb_mqtt_session_connected(ctx->ms)) publish_gw_status(ctx, &ctx->json, true);
}

static void mq_close(struct fb_sink_inst *s)
{
    struct mq_ctx *ctx = s->ctx;
    if (!ctx) return;
    /* offline status at QoS 1 (retained), acknowledged before the DISCONNECT */
    fb_buf_clear(&ctx->json);
    fb_status_json(ctx->gw, &ctx->json, false);
    fb_mqtt_session_close(ctx->ms, ctx->t_gw_status, ctx->json.p, ctx->json.len, true, MQ_CLOSE_WAIT_NS);
    ctx->ms = NULL;
    s->ctx = NULL;
    ctx_free(ctx);
}

const struct fb_sink fb_sink_mqtt = {
    .name = "mqtt",
    .keys = k_mqtt,
    .nested = k_nested,
    .cfg_load = mq_cfg_load,
    .cfg_free = mq_cfg_free,
    .describe = mq_describe,
    .open = mq_open,
    .send = mq_send,
    .ready = mq_ready,
    .tick = mq_tick,
    .close = mq_close,
};
