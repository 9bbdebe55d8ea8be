/* ingest.h — the ingest source (ingest.c, docs/influxdb.md "Ingest"):
 * `fieldbridge ingest -c FILE` subscribes to the telemetry of many gateways
 * (our JSON telemetry and status, Sparkplug B DBIRTH/DDATA) and hands it to
 * the sinks (influx:) as named batches, through the same queue, buffer and
 * metrics as polled data.  Several instances split a fleet's traffic with an
 * MQTT 5 shared subscription (`share:`). */
#ifndef FB_INGEST_H
#define FB_INGEST_H
#include <stdbool.h>
#include <stdint.h>

#include "core/model.h"
#include "north/ingest/decode.h"
#include "north/mqtt/session.h"

struct fb_ingest_cfg {
    struct fb_broker_cfg broker; /* client id default "fieldbridge-ingest-<gateway id>" */
    char *share;                 /* shared subscription group, NULL = plain subscriptions */
    bool persistent;             /* session: persistent (default) or clean */
    uint32_t expiry_s;           /* MQTT 5 session expiry interval, default 1 day */
    int qos;                     /* subscription QoS, default 1 */
    bool json;                   /* `telemetry:` */
    char *topic;                 /* the gateways' topic template */
    struct fb_ig_tmpl tmpl;
    bool status;     /* gateway status messages too (default true) */
    bool spb;        /* `sparkplug:` */
    char *spb_group; /* group id filter, default "+" */
    bool rebirth;    /* ask for a Rebirth when an alias is unknown (default true) */
    struct fb_ig_types types;
    uint32_t max_values; /* values per message (batch capacity), default 4096 */
    uint32_t max_bytes;  /* names and strings per message, default 256 KiB */
};

extern const struct fb_source fb_source_ingest;
#endif
