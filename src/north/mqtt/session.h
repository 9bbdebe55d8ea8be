/* session.h — one MQTT client session (libmosquitto 2.0) for every sink that
 * speaks MQTT: the JSON/ISA-95 sink (mqtt.c), the Sparkplug B sink
 * (sparkplug/), and later ones.  See session.c for the threads, the
 * reconnect policy and the delivery bookkeeping.
 *
 * The broker settings are one struct shared by those sinks' configs
 * (`url:`/`servers:`, `version`, `client_id`, credentials, `tls:`,
 * `keepalive`, `reconnect:`), parsed by fb_broker_cfg_load with the config
 * reader, so every MQTT sink accepts the same keys with the same checks.
 */
#ifndef FB_MQTT_SESSION_H
#define FB_MQTT_SESSION_H
#include <mosquitto.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/cfg.h"
#include "core/model.h"

/* ------------------------------------------------------- broker settings */
struct fb_broker_server {
    char *url; /* as written */
    char *host;
    int port;
    bool tls; /* mqtts:// */
};

struct fb_broker_cfg {
    struct fb_broker_server *servers; /* `url:` or `servers: [...]`, tried in turn */
    uint32_t nservers;
    int version;     /* 5 (default) or 3 (3.1.1) */
    char *client_id; /* NULL: the sink's default */
    char *username;
    char *password; /* from password_file or ${ENV}; never plain text in the file */
    char *ca, *ca_path, *cert, *key;
    char *crl;                                  /* tls.crl: CRLs of the broker's CA chain (PEM/DER), or NULL */
    bool tls;                                   /* any server is mqtts:// or a tls: section was given */
    bool tls_verify_hostname;                   /* default true */
    int64_t keepalive_ns;                       /* default 30 s */
    int64_t reconnect_min_ns, reconnect_max_ns; /* default 1 s .. 30 s */
    uint64_t files_sig;                         /* the referenced files (tls:) as they were at load: a reload
                         * with the same paths but a renewed certificate reconnects */
};

/* The keys fb_broker_cfg_load reads, for the sink's key table. */
#define FB_BROKER_KEYS                                                                                                 \
    "url", "servers", "version", "client_id", "username", "password", "password_file", "tls", "keepalive", "reconnect"

/* The keys of the nested broker mappings `tls:` and `reconnect:`. */
extern const char *const fb_broker_tls_keys[];
extern const char *const fb_broker_reconnect_keys[];

/* Read the broker keys of section `m` (named `what`, e.g. "mqtt") into b,
 * with defaults; errors and warnings go to the reader.  max_client_id bounds
 * client_id's length. */
void fb_broker_cfg_load(struct fb_cfg *r, const struct fb_cfg_map *m, const char *what, size_t max_client_id,
                        struct fb_broker_cfg *b);
void fb_broker_cfg_clear(struct fb_broker_cfg *b);
/* The same broker settings, the referenced files' contents as loaded included
 * (a config reload keeps an MQTT sink's session only then). */
bool fb_broker_cfg_equal(const struct fb_broker_cfg *a, const struct fb_broker_cfg *b);

/* -------------------------------------------------------------- session */
struct fb_mqtt_session;

/* Callbacks from the network thread (every one optional).  `obj` is the sink's. */
struct fb_mqtt_session_ops {
    /* before every CONNECT attempt, e.g. to set a will that changes per session */
    void (*before_connect)(void *obj, struct fb_mqtt_session *ms);
    /* the broker accepted the connection: subscribe, publish births/status */
    void (*connected)(void *obj, struct fb_mqtt_session *ms);
    /* the connection ended (after it had been accepted) */
    void (*disconnected)(void *obj, struct fb_mqtt_session *ms);
    void (*message)(void *obj, const struct mosquitto_message *msg, const mosquitto_property *props);
    /* what became of a fb_mqtt_session_publish_acked publication (token):
     * FB_SENT on its PUBACK, FB_DROP when an MQTT 5 broker refused it,
     * FB_RETRY when the connection or the session ended before (any thread
     * that reads the socket, or the closing one; no lock of the session held) */
    void (*acked)(void *obj, uint64_t token, int outcome);
};

struct fb_mqtt_session_opts {
    const char *name;                   /* sink name, the prefix of log lines ("mqtt") */
    const struct fb_broker_cfg *broker; /* borrowed for the session's life */
    const char *client_id;              /* the effective client id */
    uint32_t max_inflight;              /* QoS > 0 publications awaiting their ack (0: 1000) */
    struct fb_sink_inst *sink;          /* delivery reports and the connected metric */
    /* without a sink (a source such as ingest, which publishes nothing
     * tracked): where the error count and the connected flag go */
    _Atomic uint64_t *errors;
    _Atomic int *connected;
    /* persistent session: clean start off, and for MQTT 5 this session
     * expiry interval, so the broker keeps the subscriptions and queues
     * messages while we are away (a restart picks them up) */
    bool persistent;
    uint32_t session_expiry_s;
    /* a received QoS 1/2 message is acknowledged only once on_message has
     * returned (ingest: acknowledged once stored).  This keeps libmosquitto's
     * threaded mode: outside it the library writes the PUBACK at once, before
     * the callback runs, so publishers do not write to the socket themselves
     * ("Writes" in session.c). */
    bool ack_after_handling;
    const struct fb_mqtt_session_ops *ops;
    void *obj;
    /* will (may also be set later from before_connect) */
    const char *will_topic;
    const void *will_payload;
    size_t will_len;
    int will_qos;
    bool will_retain;
};

/* Create the client (clean session unless o->persistent) and start the
 * network thread, which connects in the background: never blocks on the
 * broker. */
int fb_mqtt_session_open(struct fb_mqtt_session **out, const struct fb_mqtt_session_opts *o, struct fb_err *err);

/* Publish the final message (e.g. the offline status or NDEATH) at QoS 1 if
 * connected, wait up to wait_ns for its acknowledgement and for what is in
 * flight, DISCONNECT, stop the thread, report every unacknowledged tracked
 * publication FB_RETRY, and free.  topic NULL: no final message.  True when
 * the final message was acknowledged. */
bool fb_mqtt_session_close(struct fb_mqtt_session *ms, const char *topic, const void *p, size_t len, bool retain,
                           int64_t wait_ns);

bool fb_mqtt_session_connected(const struct fb_mqtt_session *ms);
bool fb_mqtt_session_v5(const struct fb_mqtt_session *ms);
const struct fb_broker_server *fb_mqtt_session_server(const struct fb_mqtt_session *ms);

/* Publish a message whose delivery reports batch `id` to the sink: QoS > 0
 * on its PUBACK (FB_DROP if an MQTT 5 broker refuses it), QoS 0 once queued;
 * FB_RETRY at once while disconnected or on a transient error, FB_DROP when
 * it can never be sent (too large, bad topic).  Waits while max_inflight
 * messages await their ack (back-pressure), for a bounded time once the
 * gateway stops. */
void fb_mqtt_session_publish_tracked(struct fb_mqtt_session *ms, uint64_t id, const char *topic, const void *p,
                                     size_t len, int qos, bool retain);
/* A publication (QoS >= 1; 0 is raised to 1) whose fate is reported to
 * ops->acked with `token`: on its PUBACK, or FB_RETRY once the connection
 * drops or the session closes first.  MOSQ_ERR_SUCCESS, or an error and
 * nothing is reported (not connected; 32 such publications already await
 * their acknowledgement). */
int fb_mqtt_session_publish_acked(struct fb_mqtt_session *ms, const char *topic, const void *p, size_t len, int qos,
                                  bool retain, uint64_t token);
/* Untracked publication (status, births, responses); props may be NULL. */
int fb_mqtt_session_publish(struct fb_mqtt_session *ms, const char *topic, const void *p, size_t len, int qos,
                            bool retain, const mosquitto_property *props);
/* MQTT 5 no-local where the protocol has it. */
int fb_mqtt_session_subscribe(struct fb_mqtt_session *ms, const char *topic, int qos, bool no_local);
int fb_mqtt_session_unsubscribe(struct fb_mqtt_session *ms, const char *topic);
/* With an MQTT 5 subscription identifier (0 = none), which the broker puts
 * on every message it delivers for this subscription. */
int fb_mqtt_session_subscribe_id(struct fb_mqtt_session *ms, const char *topic, int qos, uint32_t sub_id);
int fb_mqtt_session_set_will(struct fb_mqtt_session *ms, const char *topic, const void *p, size_t len, int qos,
                             bool retain);
/* Can a tracked publication go out now without waiting (connected, room in
 * the in-flight window, nothing from before a reconnect still awaiting its
 * resend)?  With `pace`, a full window is waited for a moment (up to 1 ms)
 * first: the caller is a producer the broker may slow down. */
bool fb_mqtt_session_ready(struct fb_mqtt_session *ms, bool pace);
/* End the current connection; with next_server the next CONNECT goes to the
 * next server of the list. */
void fb_mqtt_session_disconnect(struct fb_mqtt_session *ms, bool next_server);
/* Text for a libmosquitto or MQTT 5 reason code. */
const char *fb_mqtt_session_strerror(const struct fb_mqtt_session *ms, int rc);
#endif
