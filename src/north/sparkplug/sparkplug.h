/* sparkplug.h — the Sparkplug B sink (edge node = the gateway, devices = the
 * configured field devices; docs/sparkplug.md), its configuration, the pure
 * helpers the unit tests and `fieldbridge spb-dump` (src/cli) use. */
#ifndef FB_SPARKPLUG_H
#define FB_SPARKPLUG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/model.h"
#include "north/mqtt/session.h"
#include "north/sparkplug/spb_codec.h"

struct fb_spb_cfg {
    struct fb_broker_cfg broker; /* `url:` or `servers: [...]`, tried in turn; client id default
                                  * "fieldbridge-spb-<edge node>" */
    char *group;                 /* Sparkplug group id (required) */
    char *edge_node;             /* edge node id, default the gateway id */
    char *primary_host;          /* host application id whose STATE gates the births, or NULL */
    bool aliases;                /* default true */
    bool reboot;                 /* accept Node Control/Reboot (default false) */
};

extern const struct fb_sink fb_sink_sparkplug;

/* "spBv1.0/<group>/<type>/<edge>[/<device>]"; FB_ERANGE when it does not fit. */
int fb_spb_topic(char *out, size_t len, const char *group, const char *type, const char *edge, const char *device);
/* The NDEATH (will) payload: timestamp and the bdSeq metric, no seq. */
int fb_spb_ndeath_payload(struct fb_buf *out, uint64_t ts_ms, uint64_t bdseq);
/* A STATE message: Sparkplug 3.0 JSON {"online":bool,"timestamp":ms} (ts
 * set) or 2.2 text ONLINE/OFFLINE (*ts = -1).  FB_EPROTO otherwise. */
int fb_spb_parse_state(const char *p, size_t len, int *online, int64_t *ts);
/* Append `"name":value` (JSON) for a command metric read as datatype dt;
 * a leading comma unless first.  FB_EINVAL when it has no usable value. */
int fb_spb_metric_json(struct fb_buf *out, const spb_metric *m, const char *name, uint32_t dt, bool first);

#endif
