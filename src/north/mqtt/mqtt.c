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
 * replay them on every reconnect.  The gateway's own topics (fleet_cfg.h:
 * ".../<gateway id>/command") go to the router the same way, as gateway
 * commands (docs/fleet.md).
 *
 * Alarms (docs/alarms.md).  Each alarm event batch becomes one event message
 * on the device's "alarm" topic (tracked, like telemetry: buffered while the
 * broker is away), followed by the device's retained summary of the alarms
 * that are not normal, rendered from the alarm table at that moment; every
 * (re)connect republishes the summary of each device that has alarms.
 *
 * Reload.  The topic tables and the routes are derived from the model; a
 * config reload that keeps this sink rebuilds them in model_end (new
 * devices' command topics subscribed, removed ones' unsubscribed, a device
 * whose topics moved has its old retained status cleared, the alarm
 * summaries published again from the new alarm table).  model_mu keeps
 * the network thread's callbacks away from them meanwhile.
 */
#include "north/mqtt/mqtt.h"

#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch_codec.h"
#include "core/fleet_cfg.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/plugin.h"
#include "core/router.h"
#include "edge/alarms.h"
#include "fleet/hooks.h"
#include "fleet/outbox.h"
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
    /* derived from the model (rebuilt by a reload: model_mu) */
    pthread_mutex_t model_mu; /* the network thread's callbacks against a reload (before mu) */
    struct mq_dev *devs;
    uint32_t ndevs;
    char *t_gw_status;
    char **t_gw_topics, **t_gw_resp; /* the gateway's own topics (fb_fleet_topics) and their responses */
    uint32_t ngw_topics;
    struct mq_route *routes;
    uint32_t nroutes;
    uint32_t status_gen;              /* sink thread: the status generation last published */
    pthread_mutex_t mu;               /* the devices' last state (sink thread writes, network thread reads) */
    struct fb_buf json;               /* whoever holds the sink's call lock (send, tick), close, model_end */
    bool plain_names;                 /* no tag name needs escaping in JSON (checked at open and reload) */
    struct fb_buf nbuf;               /* network thread (connected) */
    int64_t next_status;              /* sink thread: next periodic gateway status (mono) */
    struct fb_broker_cfg prov_broker; /* fleet.provisioning: the broker settings with the identity in use */
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
    pthread_mutex_lock(&ctx->model_mu);
    /* commands first, so a controller that waits for our birth can write at once */
    for (uint32_t k = 0; k < ctx->ngw_topics; k++) {
        int src = fb_mqtt_session_subscribe(ms, ctx->t_gw_topics[k], ctx->cfg->qos_command, true);
        if (src != MOSQ_ERR_SUCCESS)
            fb_warn(NULL, NULL, "mqtt: cannot subscribe to %s: %s", ctx->t_gw_topics[k],
                    fb_mqtt_session_strerror(ms, src));
    }
    for (uint32_t i = 0; i < ctx->ndevs; i++) {
        int src = fb_mqtt_session_subscribe(ms, ctx->devs[i].t[T_CMD], ctx->cfg->qos_command, true);
        if (src != MOSQ_ERR_SUCCESS)
            fb_warn(ctx->gw->devs[i].name, NULL, "mqtt: cannot subscribe to %s: %s", ctx->devs[i].t[T_CMD],
                    fb_mqtt_session_strerror(ms, src));
    }
    publish_gw_status(ctx, &ctx->nbuf, true);
    for (uint32_t i = 0; i < ctx->ndevs; i++) publish_dev_status(ctx, &ctx->nbuf, i);
    for (uint32_t i = 0; i < ctx->ndevs; i++)
        if (ctx->devs[i].alarms) publish_alarm_summary(ctx, &ctx->nbuf, i);
    pthread_mutex_unlock(&ctx->model_mu);
}

static int route_cmp(const void *a, const void *b)
{
    return strcmp(((const struct mq_route *)a)->topic, ((const struct mq_route *)b)->topic);
}

static void cmd_reply(struct fb_cmd *cmd, const char *json, size_t len);

/* A command message as a struct fb_cmd (payload, QoS, MQTT 5 response topic
 * and correlation data), or NULL. */
static struct fb_cmd *cmd_from(struct mq_ctx *ctx, const struct mosquitto_message *msg, const mosquitto_property *props,
                               const char *who, const char *default_resp)
{
    struct fb_cmd *cmd = calloc(1, sizeof *cmd);
    if (!cmd) return NULL;
    cmd->payload = malloc((size_t)msg->payloadlen + 1);
    if (!cmd->payload) {
        free(cmd);
        return NULL;
    }
    if (msg->payloadlen) memcpy(cmd->payload, msg->payload, (size_t)msg->payloadlen);
    cmd->payload[msg->payloadlen] = 0;
    cmd->len = (size_t)msg->payloadlen;
    cmd->qos = msg->qos;
    if (props) {
        char *rt = NULL;
        if (mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &rt, false)) {
            if (rt && *rt && mosquitto_pub_topic_check(rt) == MOSQ_ERR_SUCCESS) {
                cmd->response_topic = rt;
            } else {
                fb_warn(who, NULL, "mqtt: invalid response topic \"%s\" on %s: answering on %s", rt ? rt : "",
                        msg->topic, default_resp);
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
    cmd->reply_ctx = ctx->gw;                    /* the reply finds the sink that runs then (a reload may restart it) */
    cmd->reply = cmd_reply;
    return cmd;
}

/* Network thread: a command, to a device or to the gateway. */
static void mq_message(void *obj, const struct mosquitto_message *msg, const mosquitto_property *props)
{
    struct mq_ctx *ctx = obj;
    pthread_mutex_lock(&ctx->model_mu);
    for (uint32_t k = 0; k < ctx->ngw_topics; k++) {
        if (strcmp(msg->topic, ctx->t_gw_topics[k]) != 0) continue;
        /* a new configuration may come inline: allow its size, JSON-escaped */
        uint64_t limit = (ctx->gw->fleet ? ctx->gw->fleet->max_config_bytes : 1u << 20) * 2 + MQ_CMD_MAX_PAYLOAD;
        if (msg->retain)
            fb_warn(NULL, NULL, "mqtt: retained command on %s ignored (commands must not be retained)", msg->topic);
        else if ((uint64_t)msg->payloadlen > limit)
            fb_warn(NULL, NULL, "mqtt: command on %s ignored: %d bytes (limit %llu)", msg->topic, msg->payloadlen,
                    (unsigned long long)limit);
        else {
            struct fb_cmd *cmd = cmd_from(ctx, msg, props, NULL, ctx->t_gw_resp[k]);
            if (cmd) {
                cmd->kind = FB_CMD_GATEWAY;
                cmd->device = UINT32_MAX;
                snprintf(cmd->topic, sizeof cmd->topic, "%s", fb_fleet_topics[k]);
                fb_router_submit(ctx->gw, cmd);
            }
        }
        pthread_mutex_unlock(&ctx->model_mu);
        return;
    }
    struct mq_route key = {.topic = msg->topic};
    const struct mq_route *r = bsearch(&key, ctx->routes, ctx->nroutes, sizeof key, route_cmp);
    if (!r) {
        pthread_mutex_unlock(&ctx->model_mu);
        return;
    }
    const char *dname = ctx->gw->devs[r->dev].name;
    if (msg->retain) {
        fb_warn(dname, NULL, "mqtt: retained command on %s ignored (commands must not be retained)", msg->topic);
    } else if (msg->payloadlen > MQ_CMD_MAX_PAYLOAD) {
        fb_warn(dname, NULL, "mqtt: command on %s ignored: %d bytes (limit %d)", msg->topic, msg->payloadlen,
                MQ_CMD_MAX_PAYLOAD);
    } else {
        struct fb_cmd *cmd = cmd_from(ctx, msg, props, dname, ctx->devs[r->dev].t[T_RESP]);
        if (cmd) {
            cmd->device = r->dev;
            fb_router_submit(ctx->gw, cmd); /* under model_mu: a reload renumbers queued commands after this */
        }
    }
    pthread_mutex_unlock(&ctx->model_mu);
}

/* The running MQTT sink's state (router thread: a reload, which also runs
 * there, is not under way). */
static struct mq_ctx *running_ctx(struct fb_gateway *gw)
{
    for (uint32_t i = 0; gw && i < gw->nsinks; i++)
        if (gw->sinks[i].sink == &fb_sink_mqtt && gw->sinks[i].ctx) return gw->sinks[i].ctx;
    return NULL;
}

/* Router thread.  The router is stopped before the sinks close (runtime.c). */
static void cmd_reply(struct fb_cmd *cmd, const char *json, size_t len)
{
    struct mq_ctx *ctx = running_ctx(cmd->reply_ctx);
    if (!ctx || !ctx->ms) return;
    const char *topic = cmd->response_topic;
    const char *who = NULL;
    if (!topic && cmd->kind == FB_CMD_GATEWAY) {
        for (uint32_t k = 0; k < ctx->ngw_topics; k++)
            if (!strcmp(cmd->topic, fb_fleet_topics[k])) topic = ctx->t_gw_resp[k];
    } else if (!topic) {
        if (cmd->device >= ctx->ndevs) {
            fb_warn(NULL, NULL, "mqtt: no answer to %s: its device is no longer configured", cmd->source);
            return;
        }
        topic = ctx->devs[cmd->device].t[T_RESP];
        who = ctx->gw->devs[cmd->device].name;
    }
    if (!topic) return;
    mosquitto_property *props = NULL;
    if (fb_mqtt_session_v5(ctx->ms) && cmd->corr && cmd->corr_len > 0)
        mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, cmd->corr, (uint16_t)cmd->corr_len);
    int rc = fb_mqtt_session_publish(ctx->ms, topic, json, len, ctx->cfg->qos_status, false, props);
    mosquitto_property_free_all(&props);
    if (rc != MOSQ_ERR_SUCCESS) {
        atomic_fetch_add(&ctx->s->m.errors, 1);
        fb_warn(who, NULL, "mqtt: command response to %s not sent: %s", topic, fb_mqtt_session_strerror(ctx->ms, rc));
    }
}

/* ------------------------------------------------------------ open / close */
static void topics_free(struct mq_dev *devs, uint32_t n)
{
    for (uint32_t i = 0; devs && i < n; i++)
        for (int k = 0; k < T__N; k++) free(devs[i].t[k]);
    free(devs);
}

static void ctx_free(struct mq_ctx *ctx)
{
    if (!ctx) return;
    topics_free(ctx->devs, ctx->ndevs);
    free(ctx->t_gw_status);
    for (uint32_t k = 0; k < ctx->ngw_topics; k++) {
        free(ctx->t_gw_topics[k]);
        free(ctx->t_gw_resp[k]);
    }
    free(ctx->t_gw_topics);
    free(ctx->t_gw_resp);
    free(ctx->routes);
    fb_buf_free(&ctx->json);
    fb_buf_free(&ctx->nbuf);
    pthread_mutex_destroy(&ctx->mu);
    pthread_mutex_destroy(&ctx->model_mu);
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

/* The model's topics, rendered once: every device's, sorted command routes. */
struct mq_topics {
    struct mq_dev *devs;
    uint32_t ndevs;
    struct mq_route *routes;
};

static int make_dev_topics(struct mq_ctx *ctx, struct mq_topics *t, struct fb_err *err)
{
    struct fb_gateway *gw = ctx->gw;
    t->ndevs = gw->ndevs;
    t->devs = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *t->devs);
    t->routes = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *t->routes);
    if (!t->devs || !t->routes) return fb_err_set(err, FB_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < gw->ndevs; i++) {
        struct mq_dev *d = &t->devs[i];
        const struct fb_device *dev = &gw->devs[i];
        for (int k = 0; k < T__N; k++)
            if (!(d->t[k] = topic_dup(ctx, dev, t_kind[k], err))) return FB_EINVAL;
        if (ctx->t_gw_status && !strcmp(d->t[T_STATUS], ctx->t_gw_status))
            fb_warn(dev->name, NULL, "mqtt: device status topic %s is the gateway's own status topic", d->t[T_STATUS]);
        t->routes[i].topic = d->t[T_CMD];
        t->routes[i].dev = i;
    }
    for (uint32_t a = 0; a < gw->nalarms; a++)
        if (gw->alarms[a].device < gw->ndevs) t->devs[gw->alarms[a].device].alarms = true;
    qsort(t->routes, gw->ndevs, sizeof *t->routes, route_cmp);
    for (uint32_t i = 1; i < gw->ndevs; i++)
        if (!strcmp(t->routes[i].topic, t->routes[i - 1].topic))
            return fb_err_set(err, FB_EINVAL, "mqtt.topic: devices %s and %s get the same command topic %s",
                              gw->devs[t->routes[i - 1].dev].name, gw->devs[t->routes[i].dev].name, t->routes[i].topic);
    return 0;
}

static int make_topics(struct mq_ctx *ctx, struct fb_err *err)
{
    if (!(ctx->t_gw_status = topic_dup(ctx, NULL, FB_KIND_STATUS, err))) return FB_EINVAL;
    uint32_t n = 0;
    while (fb_fleet_topics[n]) n++;
    ctx->t_gw_topics = calloc(n ? n : 1, sizeof *ctx->t_gw_topics);
    ctx->t_gw_resp = calloc(n ? n : 1, sizeof *ctx->t_gw_resp);
    if (!ctx->t_gw_topics || !ctx->t_gw_resp) return fb_err_set(err, FB_ENOMEM, "out of memory");
    for (uint32_t k = 0; k < n; k++) {
        char resp[96];
        snprintf(resp, sizeof resp, "%s/response", fb_fleet_topics[k]);
        ctx->t_gw_topics[k] = topic_dup(ctx, NULL, fb_fleet_topics[k], err);
        ctx->t_gw_resp[k] = topic_dup(ctx, NULL, resp, err);
        ctx->ngw_topics = k + 1;
        if (!ctx->t_gw_topics[k] || !ctx->t_gw_resp[k]) return FB_EINVAL;
    }
    struct mq_topics t = {0};
    int rc = make_dev_topics(ctx, &t, err);
    ctx->devs = t.devs;
    ctx->ndevs = t.ndevs;
    ctx->routes = t.routes;
    ctx->nroutes = t.ndevs;
    return rc;
}

/* Whether no tag name of model gw needs escaping in JSON (config names are
 * letters, digits, '_', '.', '-' and [N]: checked anyway). */
static bool names_plain(const struct fb_gateway *gw)
{
    for (uint32_t i = 0; i < gw->ntags; i++)
        if (!gw->tags[i].name || !fb_json_plain(gw->tags[i].name)) return false;
    return true;
}

/* ------------------------------------------------------------------ reload */
static void mq_model_begin(struct fb_sink_inst *s)
{
    struct mq_ctx *ctx = s->ctx;
    if (ctx) pthread_mutex_lock(&ctx->model_mu);
}

/* The gateway holds the new model: new topic tables, subscriptions changed
 * where connected, each device's last state carried over by the map; a kept
 * device whose topics moved (area, line) has the retained status under the
 * old topic cleared and its state published under the new. */
static void mq_model_end(struct fb_sink_inst *s, const struct fb_model_map *map)
{
    struct mq_ctx *ctx = s->ctx;
    if (!ctx) return;
    struct mq_topics t = {0};
    struct fb_err e = {0};
    if (make_dev_topics(ctx, &t, &e) < 0) {
        /* the config was checked: only memory can run out here */
        fb_error(NULL, NULL, "mqtt: after the reload: %s; commands and status stay on the old topics", e.msg);
        topics_free(t.devs, t.ndevs);
        free(t.routes);
        pthread_mutex_unlock(&ctx->model_mu);
        return;
    }
    ctx->plain_names = names_plain(ctx->gw); /* the sink is parked: no send() runs */
    bool connected = fb_mqtt_session_connected(ctx->ms);
    /* per new device: KEPT it was there before, CMD_SAME / ST_SAME its command / status topic did not move */
    enum { KEPT = 1, CMD_SAME = 2, ST_SAME = 4 };
    uint8_t *same = calloc(t.ndevs ? t.ndevs : 1, 1);
    pthread_mutex_lock(&ctx->mu);
    for (uint32_t i = 0; i < ctx->ndevs && i < map->ndevs; i++) {
        uint32_t j = map->dev[i];
        struct mq_dev *od = &ctx->devs[i];
        if (j == UINT32_MAX || j >= t.ndevs) { /* removed: its offline status (reason) stays retained */
            if (connected) fb_mqtt_session_unsubscribe(ctx->ms, od->t[T_CMD]);
            continue;
        }
        struct mq_dev *nd = &t.devs[j];
        nd->status_ts = od->status_ts;
        memcpy(nd->reason, od->reason, sizeof nd->reason);
        bool cmd_same = !strcmp(od->t[T_CMD], nd->t[T_CMD]), st_same = !strcmp(od->t[T_STATUS], nd->t[T_STATUS]);
        if (same) same[j] = (uint8_t)(KEPT | (cmd_same ? CMD_SAME : 0) | (st_same ? ST_SAME : 0));
        if (connected && !cmd_same) fb_mqtt_session_unsubscribe(ctx->ms, od->t[T_CMD]);
        if (connected && !st_same) /* an empty retained message clears the old one */
            fb_mqtt_session_publish(ctx->ms, od->t[T_STATUS], "", 0, ctx->cfg->qos_status, true, NULL);
    }
    pthread_mutex_unlock(&ctx->mu);
    struct mq_dev *odevs = ctx->devs;
    uint32_t on = ctx->ndevs;
    ctx->devs = t.devs;
    ctx->ndevs = t.ndevs;
    free(ctx->routes);
    ctx->routes = t.routes;
    ctx->nroutes = t.ndevs;
    for (uint32_t j = 0; connected && j < t.ndevs; j++) {
        if (!same || !(same[j] & CMD_SAME))
            fb_mqtt_session_subscribe(ctx->ms, t.devs[j].t[T_CMD], ctx->cfg->qos_command, true);
        /* a kept device under a new status topic; new devices publish with their first state */
        if (same && (same[j] & KEPT) && !(same[j] & ST_SAME)) publish_dev_status(ctx, &ctx->json, j);
        /* the alarms may have changed (limits, new or removed alarms): their summaries again */
        if (connected && t.devs[j].alarms) publish_alarm_summary(ctx, &ctx->json, j);
    }
    free(same);
    topics_free(odevs, on);
    pthread_mutex_unlock(&ctx->model_mu);
    fb_status_changed(ctx->gw);
}

static bool mq_cfg_equal(const void *a, const void *b)
{
    const struct fb_mqtt_cfg *x = a, *y = b;
    return x && y && fb_broker_cfg_equal(&x->broker, &y->broker) && !strcmp(x->topic, y->topic) &&
           x->qos_telemetry == y->qos_telemetry && x->qos_status == y->qos_status && x->qos_command == y->qos_command &&
           x->max_inflight == y->max_inflight;
}

static void mq_acked(void *obj, uint64_t token, int outcome);
static const struct fb_mqtt_session_ops mq_ops = {
    .connected = mq_connected,
    .message = mq_message,
    .acked = mq_acked,
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
    pthread_mutex_init(&ctx->model_mu, NULL);
    fb_buf_init(&ctx->json);
    fb_buf_init(&ctx->nbuf);
    snprintf(ctx->client_id, sizeof ctx->client_id, "%.127s",
             cfg->broker.client_id ? cfg->broker.client_id : "fieldbridge");
    if (make_topics(ctx, err) < 0) {
        ctx_free(ctx);
        return err ? err->code : FB_EINVAL;
    }
    ctx->plain_names = names_plain(gw);
    ctx->status_gen = fb_status_generation(gw);
    /* the will: the broker publishes it when we vanish; it cannot carry the
     * time of that moment, so "ts" is null (docs/mqtt.md) */
    struct fb_buf w;
    fb_buf_init(&w);
    fb_buf_puts(&w, "{\"gateway\":");
    fb_json_cstr(&w, gw->id ? gw->id : "");
    fb_buf_puts(&w, ",\"online\":false,\"state\":\"offline\",\"ts\":null,\"reason\":\"connection lost\"}");
    /* provisioning (src/fleet/prov_cfg.h): the claim certificate until the
     * device has its own, then its own; the files named here stay the
     * sink's config's (a shallow copy) */
    const struct fb_prov_cfg *pv = gw->fleet ? gw->fleet->prov : NULL;
    if (pv) {
        bool own = fb_prov_have_identity(pv);
        ctx->prov_broker = cfg->broker;
        ctx->prov_broker.cert = own ? pv->cert : pv->claim_cert;
        ctx->prov_broker.key = own ? pv->key : pv->claim_key;
        ctx->prov_broker.tls = true;
        fb_info(NULL, NULL, "mqtt: connecting with the %s certificate %s", own ? "device" : "claim",
                ctx->prov_broker.cert);
    }
    struct fb_mqtt_session_opts o = {
        .name = "mqtt",
        .broker = pv ? &ctx->prov_broker : &cfg->broker,
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
    if (!ctx || b->device >= ctx->ndevs) {
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
static bool mq_ready(struct fb_sink_inst *s, bool pace)
{
    struct mq_ctx *ctx = s->ctx;
    return ctx && fb_mqtt_session_ready(ctx->ms, pace);
}

/* A message of the fleet extensions (device shadow, OTA: src/fleet/outbox.h)
 * on the gateway topic with `suffix` as its kind; non-zero keeps it queued.
 * One with a token goes out at QoS 1 at least and its PUBACK settles it
 * (mq_acked). */
static int outbox_pub(void *arg, const char *suffix, const char *json, size_t len, uint64_t token)
{
    struct mq_ctx *ctx = arg;
    struct fb_err e = {0};
    char *t = topic_dup(ctx, NULL, suffix, &e);
    if (!t) {
        fb_warn(NULL, NULL, "mqtt: %s not published: %s", suffix, e.msg);
        if (token) fb_outbox_settle(fb_fleet_outbox(ctx->gw), token, FB_DROP);
        return 0;
    }
    int rc = token ? fb_mqtt_session_publish_acked(ctx->ms, t, json, len, ctx->cfg->qos_status, false, token)
                   : fb_mqtt_session_publish(ctx->ms, t, json, len, ctx->cfg->qos_status, false, NULL);
    free(t);
    return rc == MOSQ_ERR_SUCCESS ? 0 : 1;
}

/* The broker acknowledged an outbox message (or the connection ended first). */
static void mq_acked(void *obj, uint64_t token, int outcome)
{
    struct mq_ctx *ctx = obj;
    fb_outbox_settle(fb_fleet_outbox(ctx->gw), token, outcome);
}

/* The gateway status: every status interval, and at once when it changed
 * (lifecycle state, health, a reload's result: fb_status_changed). */
static void mq_tick(struct fb_sink_inst *s)
{
    struct mq_ctx *ctx = s->ctx;
    if (!ctx) return;
    if (fb_mqtt_session_connected(ctx->ms)) fb_outbox_drain(fb_fleet_outbox(ctx->gw), outbox_pub, ctx);
    int64_t now = fb_mono_ns();
    uint32_t gen = fb_status_generation(ctx->gw);
    if (now < ctx->next_status && gen == ctx->status_gen) return;
    ctx->next_status = now + (ctx->gw->status_interval_ns > 0 ? ctx->gw->status_interval_ns : 30 * MQ_SEC);
    ctx->status_gen = gen;
    if (fb_mqtt_session_connected(ctx->ms)) publish_gw_status(ctx, &ctx->json, true);
}

static void mq_close(struct fb_sink_inst *s)
{
    struct mq_ctx *ctx = s->ctx;
    if (!ctx) return;
    /* what the fleet extensions still had to say (an update restarting the gateway) */
    if (fb_mqtt_session_connected(ctx->ms)) fb_outbox_drain(fb_fleet_outbox(ctx->gw), outbox_pub, ctx);
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
    .cfg_equal = mq_cfg_equal,
    .model_begin = mq_model_begin,
    .model_end = mq_model_end,
};
