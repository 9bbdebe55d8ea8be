/* mqtt.h — the MQTT sink: telemetry and status as JSON on ISA-95 topics,
 * commands in (mqtt.c, docs/mqtt.md).  Its broker session is session.h, its
 * topics topic.h, its payloads telemetry.h. */
#ifndef FB_MQTT_H
#define FB_MQTT_H
#include <stdbool.h>
#include <stdint.h>

#include "core/model.h"
#include "north/mqtt/session.h"

struct fb_mqtt_cfg {
    struct fb_broker_cfg broker; /* client id default: "fieldbridge-<gateway id>" */
    char *topic;                 /* template; default "{site}/{area}/{line}/{device}/{kind}" */
    int qos_telemetry;           /* default 1 */
    int qos_status;              /* default 1 */
    int qos_command;             /* subscription QoS for commands, default 1 */
    int qos_alarm;               /* alarm events and summaries, default 1 */
    uint32_t max_inflight;       /* default 1000 */
};

extern const struct fb_sink fb_sink_mqtt;
#endif
