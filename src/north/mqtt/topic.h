/* topic.h — MQTT topic templates over the ISA-95 levels (topic.c). */
#ifndef FB_TOPIC_H
#define FB_TOPIC_H
#include "core/buf.h"
#include "core/model.h"

/* Topic kinds */
#define FB_KIND_TELEMETRY "telemetry"
#define FB_KIND_STATUS "status"
#define FB_KIND_COMMAND "command"
#define FB_KIND_RESPONSE "command/response"
#define FB_KIND_ALARM "alarm"
#define FB_TOPIC_DEFAULT "{site}/{area}/{line}/{device}/{kind}"

/* Render a topic template.  Placeholders: {gateway} {site} {area} {line}
 * {device} {kind}.  dev == NULL renders the gateway's own topic: device =
 * gateway id, area/line = "_".  Empty levels collapse to "_" so a topic never
 * has an empty level.  Returns 0 or FB_EINVAL for an unknown placeholder. */
int fb_topic_render(struct fb_buf *out, const char *tmpl, const struct fb_gateway *gw, const struct fb_device *dev,
                    const char *kind);
/* Check a template at config time (unknown placeholders, wildcards). */
int fb_topic_check(const char *tmpl, struct fb_err *err);
#endif
