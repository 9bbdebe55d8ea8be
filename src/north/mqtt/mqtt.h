/* mqtt.h — the MQTT sink's configuration and its pure helpers (topic
 * templates, telemetry/status JSON), which are unit-tested without a broker. */
#ifndef FB_MQTT_H
#define FB_MQTT_H
#include <stdbool.h>
#include <stdint.h>
#include "../../core/buf.h"
#include "../../core/fb.h"

struct fb_mqtt_cfg {
    char *url;        /* as written: mqtt://host:1883 or mqtts://host:8883 */
    char *host;
    int port;
    bool tls;         /* mqtts:// or any tls option given */
    int version;      /* 3 = 3.1.1 (MQTT_PROTOCOL_V311), 5 = MQTT 5 */
    char *client_id;  /* default: "fieldbridge-<gateway id>" */
    char *username;
    char *password;   /* from password_file or ${ENV}; never plain text in the file */
    char *ca, *ca_path, *cert, *key;
    bool tls_verify_hostname; /* default true */
    int64_t keepalive_ns;     /* default 30 s */
    char *topic;              /* template; default "{site}/{area}/{line}/{device}/{kind}" */
    int qos_telemetry;        /* default 1 */
    int qos_status;           /* default 1 */
    int qos_command;          /* subscription QoS for commands, default 1 */
    int64_t reconnect_min_ns, reconnect_max_ns; /* default 1 s .. 30 s */
    uint32_t max_inflight;    /* default 1000 */
    uint32_t queue_len;       /* batches queued towards the sink, default 1024 */
};
void fb_mqtt_cfg_free(struct fb_mqtt_cfg *c);

/* Topic kinds */
#define FB_KIND_TELEMETRY "telemetry"
#define FB_KIND_STATUS "status"
#define FB_KIND_COMMAND "command"
#define FB_KIND_RESPONSE "command/response"

/* Render a topic template.  Placeholders: {gateway} {site} {area} {line}
 * {device} {kind}.  dev == NULL renders the gateway's own topic: device =
 * gateway id, area/line = "_".  Empty levels collapse to "_" so a topic never
 * has an empty level.  Returns 0 or FB_EINVAL for an unknown placeholder. */
int fb_topic_render(struct fb_buf *out, const char *tmpl, const struct fb_gateway *gw,
                    const struct fb_device *dev, const char *kind);
/* Check a template at config time (unknown placeholders, wildcards). */
int fb_topic_check(const char *tmpl, struct fb_err *err);

/* Telemetry JSON for one data batch (docs/mqtt.md):
 * {"ts":"...","seq":N,"device":"press-01","values":{"t":{"v":21.5,"q":"good"},...}} */
void fb_telemetry_json(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_batch *b);
/* Device status JSON (retained) from a DEVSTATE batch. */
void fb_devstatus_json(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_batch *b);
#endif
