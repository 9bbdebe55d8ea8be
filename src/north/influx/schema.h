/* schema.h — the InfluxDB sink's configuration and how fieldbridge data maps
 * onto InfluxDB's schema (schema.c; docs/influxdb.md).
 *
 * A value becomes one field of one point:
 *   measurement  template, default "{device}"
 *   tags         key → template, default gateway/site/area/line/device; a
 *                tag whose value renders empty is left out
 *   field        template, default "{tag}"
 * with `map:` rules that override these per device and per tag (glob
 * patterns, applied in order, later rules winning).  Placeholders: {gateway}
 * {site} {area} {line} {device} {tag}.  Pure code, unit-tested.
 */
#ifndef FB_INFLUX_SCHEMA_H
#define FB_INFLUX_SCHEMA_H
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/cfg.h"
#include "core/model.h"
#include "north/influx/lp.h"

enum fb_ix_var { FB_IX_GATEWAY, FB_IX_SITE, FB_IX_AREA, FB_IX_LINE, FB_IX_DEVICE, FB_IX_TAG, FB_IX__N };
enum fb_ix_quality { FB_IXQ_FIELD = 0, FB_IXQ_TAG, FB_IXQ_NONE };

struct fb_ix_tags { /* tag key → template, sorted by key */
    char **key, **tmpl;
    uint32_t n;
};

struct fb_ix_rule {         /* one `map:` entry */
    char *device, *tag;     /* glob patterns; NULL = every device / the device level */
    char *measurement;      /* NULL = inherit */
    char *field;            /* NULL = inherit */
    struct fb_ix_tags tags; /* merged into the inherited set; an empty template removes the key */
    bool skip;              /* write nothing for what matches */
};

struct fb_influx_cfg {
    char *url;       /* base URL as written (http:// or https://, optional path prefix) */
    char *write_url; /* the full write URL with its query (built at load) */
    char *query_url; /* 1.x: /query for create_database */
    bool api2;       /* /api/v2/write (org, bucket, token) instead of /write (db, rp) */
    char *db, *rp, *username, *password;
    char *org, *bucket, *token;
    bool create_database;
    enum fb_lp_precision precision;
    bool tls_verify_hostname;
    char *ca, *ca_path, *cert, *key;
    uint32_t batch_lines;               /* points per request (soft), default 5000 */
    uint64_t batch_bytes;               /* line-protocol bytes per request (soft), default 4 MiB */
    int64_t batch_interval_ns;          /* longest wait before a partial batch goes out, default 1 s */
    int gzip_level;                     /* 0 = off, default 1 */
    int64_t timeout_ns;                 /* one request, default 10 s */
    int64_t retry_min_ns, retry_max_ns; /* back-off between failed attempts, 1 s .. 60 s */
    uint32_t max_inflight;              /* concurrent requests, default 1 (keeps the order) */
    char *measurement, *field;
    struct fb_ix_tags tags;
    struct fb_ix_rule *rules;
    uint32_t nrules;
    enum fb_ix_quality quality;
    bool stats;          /* window statistics as extra fields, default true */
    bool unsigned_ok;    /* uint64 as `u` (InfluxDB 2.x) instead of integer */
    bool health;         /* gateway/device/sink health every status interval, default true */
    char *health_prefix; /* measurement name prefix, default "fieldbridge_" */
};

/* Read the `influx:` section (the sink table's cfg_load). */
void *fb_ix_cfg_load(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw);
void fb_ix_cfg_free(void *cfg);
/* Whether two loaded sections configure the very same sink (every setting;
 * never when TLS files are named: a reload restarts it to read them again). */
bool fb_ix_cfg_equal(const void *a, const void *b);
extern const char *const fb_ix_keys[];
extern const struct fb_config_keys fb_ix_nested[];

/* The names a column is made of (NULL or "" = empty). */
struct fb_ix_names {
    const char *v[FB_IX__N];
};

/* Check a template: every placeholder known and allowed by `allowed` (a bit
 * per enum fb_ix_var).  false with a message in err. */
bool fb_ix_tmpl_check(const char *t, unsigned allowed, struct fb_err *err);
/* Render a template with names (raw text, not escaped) into out. */
void fb_ix_tmpl_render(struct fb_buf *out, const char *t, const struct fb_ix_names *n);

/* Where the value of tag n->v[FB_IX_TAG] of device n->v[FB_IX_DEVICE] goes:
 * its series ("measurement,k=v,…", escaped, tags sorted) into series and its
 * field key (escaped) into field (both cleared first).  false when a rule
 * skips it or the measurement or field renders empty (nothing to write). */
bool fb_ix_resolve(const struct fb_influx_cfg *c, const struct fb_ix_names *n, struct fb_buf *series,
                   struct fb_buf *field);

/* ----------------------------------------------------------------- health */
/* Line protocol for a gateway status document (the MQTT status JSON,
 * docs/mqtt.md): one point in <prefix>gateway, one per device in
 * <prefix>device, one per sink in <prefix>sink, tagged gateway and site.
 * Field types are fixed by a table (a counter that happens to be 0 is still
 * an integer).  ts_ns is used when the document has no "ts" (a will).
 * Returns the number of lines, or FB_EPROTO when json is not a status. */
int fb_ix_health_lines(struct fb_buf *out, const char *json, size_t len, const char *site, const char *prefix,
                       int64_t ts_ns, enum fb_lp_precision p);
/* One <prefix>device point for a device state change. */
void fb_ix_devstate_line(struct fb_buf *out, const char *prefix, const char *gateway, const char *site,
                         const char *device, int state, const char *reason, int64_t ts_ns, enum fb_lp_precision p);
/* One <prefix>alarm point for an alarm event batch (FB_BATCH_ALARM): tags
 * device, alarm, kind, priority; fields event, state, active, acked,
 * shelved, value, severity, message, by, comment (those that apply; a flood
 * summary: event "flood", held; a script's message: event "message", text).
 * Returns the number of lines (0 for a summary refresh, which is no event). */
int fb_ix_alarm_line(struct fb_buf *out, const char *prefix, const struct fb_gateway *gw, const struct fb_batch *b,
                     enum fb_lp_precision p);
#endif
