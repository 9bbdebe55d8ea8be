/* telemetry.h — the JSON payloads of the MQTT sink (telemetry.c;
 * docs/mqtt.md, docs/telemetry.schema.json).  Pure functions over a batch,
 * unit-tested without a broker. */
#ifndef FB_TELEMETRY_H
#define FB_TELEMETRY_H
#include "core/buf.h"
#include "core/model.h"

/* Telemetry JSON for one data batch:
 * {"ts":"...","seq":N,"device":"press-01","values":{"t":{"v":21.5,"q":"good"},...}} */
void fb_telemetry_json(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_batch *b);
/* The same when every tag name is known to need no escaping (fb_json_plain
 * of each, checked once by the caller): the names are copied as they are. */
void fb_telemetry_json_plain(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_batch *b);
/* Device status JSON (retained) from a DEVSTATE batch. */
void fb_devstatus_json(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_batch *b);
#endif
