/* mqtt.c — the MQTT sink (libmosquitto 2.0): telemetry and status out,
 * commands in.  Topics and payloads are specified in docs/mqtt.md.
 *
 * Threads.  The sink thread (runtime.c) calls send() and tick(); our own
 * network thread runs mosquitto_loop() and every libmosquitto callback; the
 * router thread calls a command's reply().  We run the network loop ourselves
 * instead of mosquitto_loop_start() because its built-in reconnect (a) gives
 * up for good on "fatal" errors such as a TLS handshake or DNS failure while
 * the broker restarts, (b) reconnects with a blocking connect() that can hold
 * shutdown for minutes against a black-holed host, and (c) has no jitter.
 * Ours reconnects with mosquitto_connect_async (non-blocking connect),
 * exponential backoff between reconnect.min and reconnect.max with equal
 * jitter, and checks for shutdown at least once a second.  open() therefore
 * never blocks and a broker that is down at start-up is fine.
 *
 * Delivery.  A telemetry or device-status batch is published at its QoS and
 * its message id (mid) is remembered with the batch id in a fixed open-
 * addressing table sized from max_inflight (no allocation per message).  The
 * PUBACK/PUBCOMP (on_publish) reports fb_sink_done(FB_SENT), or FB_DROP when
 * an MQTT 5 broker refuses it with a reason code >= 0x80.  QoS 0 messages are
 * reported sent once libmosquitto has queued them.  While disconnected,
 * telemetry is reported FB_RETRY at once (it is not handed to libmosquitto,
 * whose own queue is unbounded); device-status batches are reported sent,
 * because every (re)connect republishes each device's current state anyway and
 * a re-queued old state would overwrite a newer one.  When max_inflight
 * messages await their acknowledgement, send() waits (back-pressure): the sink
 * queue then fills and the runtime's overflow policy applies.  Messages in
 * flight when the connection drops stay in libmosquitto's session state and
 * are resent after the reconnect; what is still unacknowledged at close() is
 * reported FB_RETRY.
 *
 * Lock order: ctx->mu is taken inside libmosquitto callbacks (which may hold
 * libmosquitto's callback mutex), and send() holds ctx->mu around
 * mosquitto_publish() so that a PUBACK racing the insertion of its mid finds
 * it.  That is safe because with mosquitto_threaded_set(true) publish only
 * queues the packet (out_packet mutex) and never runs callbacks itself.
 *
 * Commands.  Every device's command topic is subscribed on each (re)connect
 * (MQTT 5: no-local).  on_message looks the topic up in a sorted table built
 * at open, copies the payload, the QoS and the MQTT 5 response topic and
 * correlation data into a struct fb_cmd and hands it to the router; it never
 * blocks.  The reply is published to the response topic (with the correlation
 * data echoed) or else to the device's "command/response" topic.  Retained
 * commands are ignored: a broker would replay them on every reconnect.
 */
#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../core/log.h"
#include "../../core/router.h"
#include "../../core/runtime.h"
#include "mqtt.h"

#define MQ_DEFAULT_TOPIC "{site}/{area}/{line}/{device}/{kind}"
#define MQ_CMD_MAX_PAYLOAD (64 * 1024)
#define MQ_CLOSE_WAIT_NS 2000000000LL   /* close(): wait this long for PUBACKs */
#define MQ_DRAIN_WAIT_NS 2000000000LL   /* on shutdown, max wait for in-flight room */
#define MQ_LOOP_TIMEOUT_MS 1000
#define MQ_RESEND_WAIT_NS 5000000000LL /* after a reconnect, wait this long for the session's resends */
#define MQ_SEC 1000000000LL

struct mq_dev {
    char *t_tele, *t_status, *t_cmd, *t_resp;
    int64_t status_ts; /* time of the last state change seen (under mu), 0 = unknown */
    char reason[FB_REASON_LEN]; /* its reason (under mu) */
};

struct mq_route {
    const char *topic;
    uint32_t dev;
};

struct mq_slot {
    int mid; /* 0 = empty (libmosquitto mids are 1..65535) */
    uint64_t id;
};

struct mq_ctx {
    struct fb_sink_inst *s;
    struct fb_gateway *gw;
    const struct fb_mqtt_cfg *cfg;
    struct mosquitto *mosq;
    bool v5;
    int keepalive_s;
    char client_id[128];
    struct mq_dev *devs;
    char *t_gw_status;
    struct mq_route *routes;
    uint32_t nroutes;
    struct fb_buf json; /* sink thread (send, tick, close) */
    struct fb_buf nbuf; /* network thread (on_connect) */

    /* network thread */
    pthread_t thr;
    bool thr_started;
    atomic_bool quit;
    atomic_bool connected; /* CONNACK accepted and not yet disconnected */
    bool got_connack;      /* network thread: this socket got a CONNACK (accepted or not) */
    struct fb_backoff backoff;
    struct fb_ratelimit rl_conn, rl_liblog;

    /* in-flight table and close handshake, under mu; cv signals changes */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct mq_slot *slots;
    uint32_t mask, inflight, max_inflight;
    /* Messages in flight when the connection dropped are resent by libmosquitto
     * after the reconnect; until they are acknowledged, ready() holds back newer
     * buffered records so that nothing overtakes them (under mu). */
    bool resend_pending;
    int64_t connected_at; /* monotonic, for the resend time-out */
    int close_mid;
    bool close_acked;

    int64_t next_status; /* sink thread: next periodic gateway status (mono) */
    struct fb_ratelimit rl_send;
};

/* ---------------------------------------------------------------- helpers */
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static void lib_init(void) { mosquitto_lib_init(); }

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* Wait on ctx->cv (mu held) until the monotonic deadline; false on timeout. */
static bool wait_until(struct mq_ctx *ctx, int64_t deadline)
{
    struct timespec ts = {.tv_sec = deadline / MQ_SEC, .tv_nsec = deadline % MQ_SEC};
    return pthread_cond_timedwait(&ctx->cv, &ctx->mu, &ts) != ETIMEDOUT;
}

static const char *reason_text(const struct mq_ctx *ctx, int rc)
{
    /* MQTT 5 reason codes are >= 0x80 for errors; libmosquitto's own codes are small */
    if (ctx->v5 && rc >= 0x80) return mosquitto_reason_string(rc);
    if (rc == MOSQ_ERR_ERRNO) return strerror(errno);
    return mosquitto_strerror(rc);
}

/* ----------------------------------------------------------- in-flight map */
static uint32_t slot_of(const struct mq_ctx *ctx, int mid) { return ((uint32_t)mid * 2654435761u) & ctx->mask; }

static void map_put(struct mq_ctx *ctx, int mid, uint64_t id)
{
    uint32_t i = slot_of(ctx, mid);
    while (ctx->slots[i].mid != 0 && ctx->slots[i].mid != mid) i = (i + 1) & ctx->mask;
    if (ctx->slots[i].mid == 0) ctx->inflight++;
    ctx->slots[i].mid = mid;
    ctx->slots[i].id = id;
}

/* Removes mid; returns true and its batch id if it was there. */
static bool map_take(struct mq_ctx *ctx, int mid, uint64_t *id)
{
    uint32_t i = slot_of(ctx, mid);
    while (ctx->slots[i].mid != mid) {
        if (ctx->slots[i].mid == 0) return false;
        i = (i + 1) & ctx->mask;
    }
    *id = ctx->slots[i].id;
    ctx->inflight--;
    /* backward-shift deletion keeps every probe chain unbroken without tombstones */
    uint32_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & ctx->mask;
        if (ctx->slots[j].mid == 0) break;
        uint32_t home = slot_of(ctx, ctx->slots[j].mid);
        /* move j into the hole unless its home lies cyclically in (hole, j] */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            ctx->slots[hole] = ctx->slots[j];
            hole = j;
        }
    }
    ctx->slots[hole].mid = 0;
    return true;
}

/* --------------------------------------------------------------- publish */
static int publish(struct mq_ctx *ctx, int *mid, const char *topic, const struct fb_buf *b, int qos,
                   bool retain)
{
    if (ctx->v5) return mosquitto_publish_v5(ctx->mosq, mid, topic, (int)b->len, b->p, qos, retain, NULL);
    return mosquitto_publish(ctx->mosq, mid, topic, (int)b->len, b->p, qos, retain);
}

static void publish_gw_status(struct mq_ctx *ctx, struct fb_buf *buf, bool online)
{
    fb_buf_clear(buf);
    fb_status_json(ctx->gw, buf, online);
    int rc = publish(ctx, NULL, ctx->t_gw_status, buf, ctx->cfg->qos_status, true);
    if (rc != MOSQ_ERR_SUCCESS) fb_debug(NULL, NULL, "mqtt: gateway status not published: %s", reason_text(ctx, rc));
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
    publish(ctx, NULL, ctx->devs[i].t_status, buf, ctx->cfg->qos_status, true);
}

/* ---------------------------------------------------- libmosquitto callbacks */
static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props)
{
    (void)flags;
    (void)props;
    struct mq_ctx *ctx = obj;
    ctx->got_connack = true;
    if (rc != 0) {
        atomic_fetch_add(&ctx->s->m.errors, 1);
        const char *why = ctx->v5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc);
        if (fb_ratelimit_ok(&ctx->rl_conn, fb_mono_ns()))
            fb_warn(NULL, NULL, "mqtt: %s:%d refused the connection: %s", ctx->cfg->host, ctx->cfg->port, why);
        return;
    }
    pthread_mutex_lock(&ctx->mu);
    ctx->connected_at = fb_mono_ns();
    pthread_mutex_unlock(&ctx->mu);
    atomic_store(&ctx->connected, true);
    atomic_store(&ctx->s->m.connected, 1);
    fb_backoff_reset(&ctx->backoff);
    ctx->rl_conn.last_ns = 0;
    fb_info(NULL, NULL, "mqtt: connected to %s:%d (MQTT %s%s, client id %s)", ctx->cfg->host, ctx->cfg->port,
            ctx->v5 ? "5" : "3.1.1", ctx->cfg->tls ? ", TLS" : "", ctx->client_id);
    /* commands first, so a controller that waits for our birth can write at once */
    for (uint32_t i = 0; i < ctx->gw->ndevs; i++) {
        int src = ctx->v5 ? mosquitto_subscribe_v5(mosq, NULL, ctx->devs[i].t_cmd, ctx->cfg->qos_command,
                                                    MQTT_SUB_OPT_NO_LOCAL, NULL)
                          : mosquitto_subscribe(mosq, NULL, ctx->devs[i].t_cmd, ctx->cfg->qos_command);
        if (src != MOSQ_ERR_SUCCESS)
            fb_warn(ctx->gw->devs[i].name, NULL, "mqtt: cannot subscribe to %s: %s", ctx->devs[i].t_cmd,
                    reason_text(ctx, src));
    }
    publish_gw_status(ctx, &ctx->nbuf, true);
    for (uint32_t i = 0; i < ctx->gw->ndevs; i++) publish_dev_status(ctx, &ctx->nbuf, i);
    pthread_mutex_lock(&ctx->mu);
    pthread_cond_broadcast(&ctx->cv);
    pthread_mutex_unlock(&ctx->mu);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    struct mq_ctx *ctx = obj;
    pthread_mutex_lock(&ctx->mu);
    if (ctx->inflight > 0) ctx->resend_pending = true;
    pthread_mutex_unlock(&ctx->mu);
    if (atomic_exchange(&ctx->connected, false)) {
        atomic_store(&ctx->s->m.connected, 0);
        if (rc == 0)
            fb_info(NULL, NULL, "mqtt: disconnected from %s:%d", ctx->cfg->host, ctx->cfg->port);
        else
            fb_warn(NULL, NULL, "mqtt: connection to %s:%d lost: %s", ctx->cfg->host, ctx->cfg->port,
                    reason_text(ctx, rc));
    }
    pthread_mutex_lock(&ctx->mu);
    pthread_cond_broadcast(&ctx->cv);
    pthread_mutex_unlock(&ctx->mu);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    struct mq_ctx *ctx = obj;
    uint64_t id = 0;
    pthread_mutex_lock(&ctx->mu);
    bool ours = map_take(ctx, mid, &id);
    if (ctx->inflight == 0) ctx->resend_pending = false;
    if (mid == ctx->close_mid) ctx->close_acked = true;
    pthread_cond_broadcast(&ctx->cv);
    pthread_mutex_unlock(&ctx->mu);
    if (reason >= 0x80) {
        atomic_fetch_add(&ctx->s->m.errors, 1);
        if (fb_ratelimit_ok(&ctx->rl_conn, fb_mono_ns()))
            fb_warn(NULL, NULL, "mqtt: the broker refused a message: %s", mosquitto_reason_string(reason));
    }
    if (ours) fb_sink_done(ctx->s, id, reason >= 0x80 ? FB_DROP : FB_SENT);
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *granted,
                         const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    (void)mid;
    struct mq_ctx *ctx = obj;
    for (int i = 0; i < n; i++)
        if (granted[i] >= 0x80) {
            atomic_fetch_add(&ctx->s->m.errors, 1);
            fb_warn(NULL, NULL, "mqtt: the broker refused a command subscription (%s): commands will not arrive",
                    ctx->v5 ? mosquitto_reason_string(granted[i]) : "failure");
        }
}

static int route_cmp(const void *a, const void *b)
{
    return strcmp(((const struct mq_route *)a)->topic, ((const struct mq_route *)b)->topic);
}

static void cmd_reply(struct fb_cmd *cmd, const char *json, size_t len);

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    (void)mosq;
    struct mq_ctx *ctx = obj;
    struct mq_route key = {.topic = msg->topic};
    const struct mq_route *r = bsearch(&key, ctx->routes, ctx->nroutes, sizeof key, route_cmp);
    if (!r) return;
    const char *dname = ctx->gw->devs[r->dev].name;
    if (msg->retain) {
        fb_warn(dname, NULL, "mqtt: retained command on %s ignored (commands must not be retained)", msg->topic);
        return;
    }
    if (msg->payloadlen < 0 || msg->payloadlen > MQ_CMD_MAX_PAYLOAD) {
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
                        msg->topic, ctx->devs[r->dev].t_resp);
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
    cmd->reply_ctx = ctx;
    cmd->reply = cmd_reply;
    fb_router_submit(ctx->gw, cmd);
}

/* Router thread.  The router is stopped before the sinks close (runtime.c),
 * so ctx and the connection are alive here. */
static void cmd_reply(struct fb_cmd *cmd, const char *json, size_t len)
{
    struct mq_ctx *ctx = cmd->reply_ctx;
    if (!ctx || !ctx->mosq || cmd->device >= ctx->gw->ndevs) return;
    const char *topic = cmd->response_topic ? cmd->response_topic : ctx->devs[cmd->device].t_resp;
    int rc;
    if (ctx->v5) {
        mosquitto_property *props = NULL;
        if (cmd->corr && cmd->corr_len > 0)
            mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, cmd->corr, (uint16_t)cmd->corr_len);
        rc = mosquitto_publish_v5(ctx->mosq, NULL, topic, (int)len, json, ctx->cfg->qos_status, false, props);
        mosquitto_property_free_all(&props);
    } else {
        rc = mosquitto_publish(ctx->mosq, NULL, topic, (int)len, json, ctx->cfg->qos_status, false);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        atomic_fetch_add(&ctx->s->m.errors, 1);
        fb_warn(ctx->gw->devs[cmd->device].name, NULL, "mqtt: command response to %s not sent: %s", topic,
                reason_text(ctx, rc));
    }
}

static void on_liblog(struct mosquitto *mosq, void *obj, int level, const char *str)
{
    (void)mosq;
    struct mq_ctx *ctx = obj;
    /* TLS and socket failures are only explained here (e.g. "certificate verify failed") */
    if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) {
        if (fb_ratelimit_ok(&ctx->rl_liblog, fb_mono_ns())) fb_warn(NULL, NULL, "mqtt: libmosquitto: %s", str);
    } else if (level & (MOSQ_LOG_DEBUG | MOSQ_LOG_INFO | MOSQ_LOG_NOTICE)) {
        fb_debug(NULL, NULL, "mqtt: libmosquitto: %s", str);
    }
}

/* --------------------------------------------------------- network thread */
/* Why mosquitto_connect_async()/mosquitto_loop() failed.  libmosquitto 2.0
 * has no text for MOSQ_ERR_KEEPALIVE ("Unknown error."), which is what a
 * broker that accepts TCP but never answers CONNECT, or stops answering
 * pings, produces. */
static const char *net_err_text(const struct mq_ctx *ctx, int rc, int e, char *buf, size_t n)
{
    if (rc == MOSQ_ERR_ERRNO) return strerror(e);
    if (rc == MOSQ_ERR_KEEPALIVE) {
        snprintf(buf, n, "%s within the keepalive (%d s); retrying",
                 ctx->got_connack ? "no answer to PINGREQ"
                                  : "no CONNACK: the broker accepted the TCP connection but did not answer CONNECT",
                 ctx->keepalive_s);
        return buf;
    }
    return mosquitto_strerror(rc);
}

static void *net_thread(void *arg)
{
    struct mq_ctx *ctx = arg;
    const struct fb_mqtt_cfg *cfg = ctx->cfg;
    bool sock = false;
    int64_t next_try = 0;
    while (!atomic_load(&ctx->quit)) {
        if (!sock) {
            int64_t now = fb_mono_ns();
            if (now < next_try) {
                pthread_mutex_lock(&ctx->mu);
                if (!atomic_load(&ctx->quit)) wait_until(ctx, next_try);
                pthread_mutex_unlock(&ctx->mu);
                continue;
            }
            /* connect_async stores host/port and starts a non-blocking connect */
            int rc = mosquitto_connect_async(ctx->mosq, cfg->host, cfg->port, ctx->keepalive_s);
            if (rc != MOSQ_ERR_SUCCESS) {
                int e = errno;
                if (fb_ratelimit_ok(&ctx->rl_conn, now))
                    fb_warn(NULL, NULL, "mqtt: cannot connect to %s:%d: %s", cfg->host, cfg->port,
                            rc == MOSQ_ERR_ERRNO ? strerror(e) : mosquitto_strerror(rc));
                next_try = now + fb_backoff_next(&ctx->backoff);
                continue;
            }
            sock = true;
            ctx->got_connack = false;
        }
        int rc = mosquitto_loop(ctx->mosq, MQ_LOOP_TIMEOUT_MS, 1);
        if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(ctx->mosq) < 0) {
            int e = errno;
            char why[160];
            sock = false;
            if (atomic_exchange(&ctx->connected, false)) { /* lost without on_disconnect */
                atomic_store(&ctx->s->m.connected, 0);
                fb_warn(NULL, NULL, "mqtt: connection to %s:%d lost: %s", cfg->host, cfg->port,
                        net_err_text(ctx, rc, e, why, sizeof why));
            } else if (!ctx->got_connack && rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN &&
                       !atomic_load(&ctx->quit) && fb_ratelimit_ok(&ctx->rl_conn, fb_mono_ns())) {
                fb_warn(NULL, NULL, "mqtt: cannot connect to %s:%d: %s", cfg->host, cfg->port,
                        net_err_text(ctx, rc, e, why, sizeof why));
            }
            pthread_mutex_lock(&ctx->mu);
            pthread_cond_broadcast(&ctx->cv);
            pthread_mutex_unlock(&ctx->mu);
            next_try = fb_mono_ns() + fb_backoff_next(&ctx->backoff);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ open / close */
static void ctx_free(struct mq_ctx *ctx)
{
    if (!ctx) return;
    if (ctx->mosq) mosquitto_destroy(ctx->mosq);
    if (ctx->devs)
        for (uint32_t i = 0; i < ctx->gw->ndevs; i++) {
            free(ctx->devs[i].t_tele);
            free(ctx->devs[i].t_status);
            free(ctx->devs[i].t_cmd);
            free(ctx->devs[i].t_resp);
        }
    free(ctx->devs);
    free(ctx->t_gw_status);
    free(ctx->routes);
    free(ctx->slots);
    fb_buf_free(&ctx->json);
    fb_buf_free(&ctx->nbuf);
    pthread_mutex_destroy(&ctx->mu);
    pthread_cond_destroy(&ctx->cv);
    free(ctx);
}

/* Renders one topic into a malloc'd string and checks it is publishable. */
static char *topic_dup(struct mq_ctx *ctx, const struct fb_device *dev, const char *kind, struct fb_err *err)
{
    const char *tmpl = ctx->cfg->topic ? ctx->cfg->topic : MQ_DEFAULT_TOPIC;
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

static int key_password_none(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)userdata;
    return 0; /* never prompt on a terminal for an encrypted key */
}

static int setup_client(struct mq_ctx *ctx, struct fb_err *err)
{
    const struct fb_mqtt_cfg *cfg = ctx->cfg;
    struct fb_gateway *gw = ctx->gw;
    if (cfg->client_id && *cfg->client_id)
        snprintf(ctx->client_id, sizeof ctx->client_id, "%.127s", cfg->client_id);
    else
        snprintf(ctx->client_id, sizeof ctx->client_id, "fieldbridge-%.100s", gw->id ? gw->id : "gateway");
    ctx->mosq = mosquitto_new(ctx->client_id, true, ctx);
    if (!ctx->mosq) return fb_err_set(err, FB_ENOMEM, "mqtt: cannot create a client: %s", strerror(errno));
    struct mosquitto *m = ctx->mosq;
    mosquitto_threaded_set(m, true);
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, ctx->v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    /* small messages must not wait for Nagle + delayed ACK (≈ 40 ms per command round trip) */
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    uint32_t send_max = ctx->max_inflight + 64;
    mosquitto_int_option(m, MOSQ_OPT_SEND_MAXIMUM, (int)(send_max > 65535 ? 65535 : send_max));
    int rc;
    if (cfg->username || cfg->password) {
        rc = mosquitto_username_pw_set(m, cfg->username, cfg->password);
        if (rc) return fb_err_set(err, FB_EINVAL, "mqtt: username/password: %s", mosquitto_strerror(rc));
    }
    if (cfg->tls) {
        if (cfg->ca || cfg->ca_path) {
            rc = mosquitto_tls_set(m, cfg->ca, cfg->ca_path, cfg->cert, cfg->key, key_password_none);
            if (rc)
                return fb_err_set(err, FB_EINVAL,
                                  "mqtt.tls: %s (ca %s, ca_path %s, cert %s, key %s: files must exist and be "
                                  "readable; cert and key go together)",
                                  mosquitto_strerror(rc), cfg->ca ? cfg->ca : "-", cfg->ca_path ? cfg->ca_path : "-",
                                  cfg->cert ? cfg->cert : "-", cfg->key ? cfg->key : "-");
        } else {
            if (cfg->cert || cfg->key)
                return fb_err_set(err, FB_EINVAL, "mqtt.tls: a client certificate needs tls.ca or tls.ca_path");
            mosquitto_int_option(m, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
        }
        rc = mosquitto_tls_insecure_set(m, !cfg->tls_verify_hostname);
        if (rc) return fb_err_set(err, FB_EINVAL, "mqtt.tls: %s", mosquitto_strerror(rc));
    }
    /* the will: the broker publishes it when we vanish; it cannot carry the
     * time of that moment, so "ts" is null (docs/mqtt.md) */
    struct fb_buf w;
    fb_buf_init(&w);
    fb_buf_puts(&w, "{\"gateway\":");
    fb_json_cstr(&w, gw->id ? gw->id : "");
    fb_buf_puts(&w, ",\"online\":false,\"ts\":null,\"reason\":\"connection lost\"}");
    rc = mosquitto_will_set(m, ctx->t_gw_status, (int)w.len, w.p, cfg->qos_status, true);
    fb_buf_free(&w);
    if (rc) return fb_err_set(err, FB_EINVAL, "mqtt: will: %s", mosquitto_strerror(rc));
    mosquitto_connect_v5_callback_set(m, on_connect);
    mosquitto_disconnect_v5_callback_set(m, on_disconnect);
    mosquitto_publish_v5_callback_set(m, on_publish);
    mosquitto_message_v5_callback_set(m, on_message);
    mosquitto_subscribe_v5_callback_set(m, on_subscribe);
    mosquitto_log_callback_set(m, on_liblog);
    return 0;
}

static int mq_open(struct fb_sink_inst *s, struct fb_err *err)
{
    const struct fb_mqtt_cfg *cfg = s->cfg;
    struct fb_gateway *gw = s->gw;
    if (!cfg || !gw || !cfg->host || !*cfg->host) return fb_err_set(err, FB_EINVAL, "mqtt: no broker host");
    if (cfg->port <= 0 || cfg->port > 65535) return fb_err_set(err, FB_EINVAL, "mqtt: bad port %d", cfg->port);
    pthread_once(&lib_once, lib_init);

    struct mq_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return fb_err_set(err, FB_ENOMEM, "out of memory");
    ctx->s = s;
    ctx->gw = gw;
    ctx->cfg = cfg;
    ctx->v5 = cfg->version != 3;
    int64_t ka = cfg->keepalive_ns > 0 ? cfg->keepalive_ns / MQ_SEC : 30;
    ctx->keepalive_s = (int)(ka < 5 ? 5 : ka > 65535 ? 65535 : ka);
    pthread_mutex_init(&ctx->mu, NULL);
    cond_init_mono(&ctx->cv);
    fb_buf_init(&ctx->json);
    fb_buf_init(&ctx->nbuf);
    ctx->rl_conn.interval_ns = 60 * MQ_SEC;
    ctx->rl_liblog.interval_ns = 10 * MQ_SEC;
    ctx->rl_send.interval_ns = 60 * MQ_SEC;
    fb_backoff_init(&ctx->backoff, cfg->reconnect_min_ns > 0 ? cfg->reconnect_min_ns : MQ_SEC,
                    cfg->reconnect_max_ns > 0 ? cfg->reconnect_max_ns : 30 * MQ_SEC);

    /* in-flight table: power of two >= 2 × max_inflight keeps probes short */
    uint32_t mi = cfg->max_inflight ? cfg->max_inflight : 1000;
    ctx->max_inflight = mi > 65535 ? 65535 : mi;
    uint32_t cap = 16;
    while (cap < 2 * ctx->max_inflight) cap <<= 1;
    ctx->slots = calloc(cap, sizeof *ctx->slots);
    ctx->mask = cap - 1;
    ctx->close_mid = -1;

    /* every topic rendered once, here */
    ctx->devs = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *ctx->devs);
    ctx->routes = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *ctx->routes);
    if (!ctx->slots || !ctx->devs || !ctx->routes) {
        ctx_free(ctx);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    if (!(ctx->t_gw_status = topic_dup(ctx, NULL, FB_KIND_STATUS, err))) goto fail;
    for (uint32_t i = 0; i < gw->ndevs; i++) {
        struct mq_dev *d = &ctx->devs[i];
        const struct fb_device *dev = &gw->devs[i];
        if (!(d->t_tele = topic_dup(ctx, dev, FB_KIND_TELEMETRY, err))) goto fail;
        if (!(d->t_status = topic_dup(ctx, dev, FB_KIND_STATUS, err))) goto fail;
        if (!(d->t_cmd = topic_dup(ctx, dev, FB_KIND_COMMAND, err))) goto fail;
        if (!(d->t_resp = topic_dup(ctx, dev, FB_KIND_RESPONSE, err))) goto fail;
        if (!strcmp(d->t_status, ctx->t_gw_status))
            fb_warn(dev->name, NULL, "mqtt: device status topic %s is the gateway's own status topic", d->t_status);
        ctx->routes[i].topic = d->t_cmd;
        ctx->routes[i].dev = i;
    }
    ctx->nroutes = gw->ndevs;
    qsort(ctx->routes, ctx->nroutes, sizeof *ctx->routes, route_cmp);
    for (uint32_t i = 1; i < ctx->nroutes; i++)
        if (!strcmp(ctx->routes[i].topic, ctx->routes[i - 1].topic)) {
            fb_err_set(err, FB_EINVAL, "mqtt.topic: devices %s and %s get the same command topic %s",
                       gw->devs[ctx->routes[i - 1].dev].name, gw->devs[ctx->routes[i].dev].name,
                       ctx->routes[i].topic);
            goto fail;
        }

    if (setup_client(ctx, err) < 0) goto fail;
    s->ctx = ctx;
    ctx->next_status = fb_mono_ns() + (gw->status_interval_ns > 0 ? gw->status_interval_ns : 30 * MQ_SEC);
    if (pthread_create(&ctx->thr, NULL, net_thread, ctx) != 0) {
        s->ctx = NULL;
        fb_err_set(err, FB_ENOMEM, "mqtt: cannot start the network thread");
        goto fail;
    }
    ctx->thr_started = true;
    fb_info(NULL, NULL, "mqtt: connecting to %s:%d in the background (gateway status on %s)", cfg->host, cfg->port,
            ctx->t_gw_status);
    return 0;
fail:
    ctx_free(ctx);
    return err ? err->code : FB_EINVAL;
}

/* ------------------------------------------------------------------- send */
/* Publish a tracked message (telemetry or device status): the delivery of
 * batch `id` is reported from on_publish, or here when it cannot be sent. */
static int publish_tracked(struct mq_ctx *ctx, uint64_t id, const char *topic, int qos, bool retain)
{
    struct fb_sink_inst *s = ctx->s;
    pthread_mutex_lock(&ctx->mu);
    if (qos > 0 && ctx->inflight >= ctx->max_inflight) {
        int64_t start = fb_mono_ns();
        while (ctx->inflight >= ctx->max_inflight && atomic_load(&ctx->connected)) {
            int64_t now = fb_mono_ns();
            /* normally wait as long as the connection lives; while the gateway
             * stops, give up after a bound so shutdown cannot hang */
            if (atomic_load(&ctx->gw->stop) && now - start > MQ_DRAIN_WAIT_NS) break;
            wait_until(ctx, now + 100000000LL);
        }
    }
    if (!atomic_load(&ctx->connected) || (qos > 0 && ctx->inflight >= ctx->max_inflight)) {
        pthread_mutex_unlock(&ctx->mu);
        fb_sink_done(s, id, FB_RETRY);
        return 0;
    }
    int mid = 0;
    int rc = publish(ctx, &mid, topic, &ctx->json, qos, retain);
    if (rc == MOSQ_ERR_SUCCESS && qos > 0) {
        map_put(ctx, mid, id);
        pthread_mutex_unlock(&ctx->mu);
        return 0;
    }
    pthread_mutex_unlock(&ctx->mu);
    if (rc == MOSQ_ERR_SUCCESS) {
        fb_sink_done(s, id, FB_SENT); /* QoS 0: handed to the connection */
        return 0;
    }
    if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_NOMEM || rc == MOSQ_ERR_ERRNO) {
        fb_sink_done(s, id, FB_RETRY);
        return 0;
    }
    /* payload too large for the broker, bad topic: it would never succeed */
    atomic_fetch_add(&s->m.errors, 1);
    if (fb_ratelimit_ok(&ctx->rl_send, fb_mono_ns()))
        fb_warn(NULL, NULL, "mqtt: cannot publish %zu bytes to %s: %s", ctx->json.len, topic, reason_text(ctx, rc));
    fb_sink_done(s, id, FB_DROP);
    return 0;
}

static int mq_send(struct fb_sink_inst *s, const struct fb_batch *b, uint64_t batch_id)
{
    struct mq_ctx *ctx = s->ctx;
    if (!ctx || b->device >= ctx->gw->ndevs) {
        fb_sink_done(s, batch_id, FB_DROP);
        return FB_EINVAL;
    }
    struct mq_dev *d = &ctx->devs[b->device];
    if (b->kind == FB_BATCH_DEVSTATE) {
        pthread_mutex_lock(&ctx->mu);
        d->status_ts = b->ts;
        fb_text_cut(d->reason, sizeof d->reason, b->reason);
        pthread_mutex_unlock(&ctx->mu);
        if (!atomic_load(&ctx->connected)) {
            /* superseded: every (re)connect publishes each device's current state */
            fb_sink_done(s, batch_id, FB_SENT);
            return 0;
        }
        fb_buf_clear(&ctx->json);
        fb_devstatus_json(&ctx->json, ctx->gw, b);
        return publish_tracked(ctx, batch_id, d->t_status, ctx->cfg->qos_status, true);
    }
    if (!atomic_load(&ctx->connected)) { /* don't encode what cannot leave */
        fb_sink_done(s, batch_id, FB_RETRY);
        return 0;
    }
    fb_buf_clear(&ctx->json);
    fb_telemetry_json(&ctx->json, ctx->gw, b);
    return publish_tracked(ctx, batch_id, d->t_tele, ctx->cfg->qos_telemetry, false);
}

/* The runtime hands over buffered records only while this holds. */
static bool mq_ready(struct fb_sink_inst *s)
{
    struct mq_ctx *ctx = s->ctx;
    if (!ctx || !atomic_load(&ctx->connected)) return false;
    pthread_mutex_lock(&ctx->mu);
    if (ctx->resend_pending && fb_mono_ns() - ctx->connected_at > MQ_RESEND_WAIT_NS) {
        /* the session did not resend them: hand them back to the store, which
         * delivers them again in order (duplicates are possible, loss is not) */
        uint32_t n = 0;
        for (uint32_t i = 0; i <= ctx->mask; i++)
            if (ctx->slots[i].mid) {
                uint64_t id = ctx->slots[i].id;
                ctx->slots[i].mid = 0;
                n++;
                pthread_mutex_unlock(&ctx->mu);
                fb_sink_done(s, id, FB_RETRY);
                pthread_mutex_lock(&ctx->mu);
            }
        ctx->inflight = 0;
        ctx->resend_pending = false;
        fb_warn(NULL, NULL, "mqtt: %u messages from before the reconnect not acknowledged; delivering them again", n);
    }
    bool room = !ctx->resend_pending && ctx->inflight < ctx->max_inflight;
    pthread_mutex_unlock(&ctx->mu);
    return room;
}

static void mq_tick(struct fb_sink_inst *s)
{
    struct mq_ctx *ctx = s->ctx;
    if (!ctx) return;
    int64_t now = fb_mono_ns();
    if (now < ctx->next_status) return;
    ctx->next_status = now + (ctx->gw->status_interval_ns > 0 ? ctx->gw->status_interval_ns : 30 * MQ_SEC);
    if (atomic_load(&ctx->connected)) publish_gw_status(ctx, &ctx->json, true);
}

static void mq_close(struct fb_sink_inst *s)
{
    struct mq_ctx *ctx = s->ctx;
    if (!ctx) return;
    int64_t deadline = fb_mono_ns() + MQ_CLOSE_WAIT_NS;
    if (atomic_load(&ctx->connected)) {
        /* offline status at QoS 1 (retained), then wait for its PUBACK and
         * for the telemetry still in flight */
        fb_buf_clear(&ctx->json);
        fb_status_json(ctx->gw, &ctx->json, false);
        pthread_mutex_lock(&ctx->mu);
        int mid = 0;
        int rc = publish(ctx, &mid, ctx->t_gw_status, &ctx->json, 1, true);
        if (rc == MOSQ_ERR_SUCCESS) ctx->close_mid = mid;
        while ((!ctx->close_acked || ctx->inflight > 0) && atomic_load(&ctx->connected) && rc == MOSQ_ERR_SUCCESS)
            if (!wait_until(ctx, deadline) && fb_mono_ns() >= deadline) break;
        bool acked = ctx->close_acked;
        uint32_t left = ctx->inflight;
        pthread_mutex_unlock(&ctx->mu);
        if (!acked)
            fb_warn(NULL, NULL, "mqtt: offline status not acknowledged by the broker%s",
                    rc == MOSQ_ERR_SUCCESS ? " within 2 s" : "");
        if (left) fb_warn(NULL, NULL, "mqtt: %u messages still unacknowledged at close", left);
        /* a normal DISCONNECT: the broker discards the will */
        mosquitto_disconnect(ctx->mosq);
        pthread_mutex_lock(&ctx->mu);
        int64_t dl = fb_mono_ns() + 500000000LL;
        while (atomic_load(&ctx->connected) && fb_mono_ns() < dl) wait_until(ctx, dl);
        pthread_mutex_unlock(&ctx->mu);
    } else {
        mosquitto_disconnect(ctx->mosq);
    }
    atomic_store(&ctx->quit, true);
    pthread_mutex_lock(&ctx->mu);
    pthread_cond_broadcast(&ctx->cv);
    pthread_mutex_unlock(&ctx->mu);
    if (ctx->thr_started) pthread_join(ctx->thr, NULL);
    atomic_store(&s->m.connected, 0);
    /* what the broker never acknowledged is the store's to keep */
    for (uint32_t i = 0; i <= ctx->mask; i++)
        if (ctx->slots[i].mid) {
            fb_sink_done(s, ctx->slots[i].id, FB_RETRY);
            ctx->slots[i].mid = 0;
        }
    ctx->inflight = 0;
    s->ctx = NULL;
    ctx_free(ctx);
}

const struct fb_sink fb_sink_mqtt = {
    .name = "mqtt",
    .open = mq_open,
    .send = mq_send,
    .ready = mq_ready,
    .tick = mq_tick,
    .close = mq_close,
};
