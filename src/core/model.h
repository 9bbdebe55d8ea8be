/* model.h — the gateway as configured: tags, devices, connections, sinks.
 *
 * The model is built once from the config (config.c) and is not changed
 * while the gateway runs: it is what `fieldbridge check` prints and what a
 * config reload compares.  It is a set of dense arrays — tags (gw->tags[id]),
 * devices (gw->devs[idx]), connections, sinks — and hot paths refer to tags
 * by id, never by name.
 *
 * Two kinds of mutable data hang off it, each marked where it sits:
 *   - live counters (struct fb_dev_metrics, struct fb_sink_metrics and a
 *     device's connection state): atomics written by the thread that owns the
 *     device or sink, read by anyone (status, /metrics);
 *   - runtime state (threads, queues, mutexes, pools): behind the `rt`
 *     pointers, whose types are private to the runtime (runtime_state.h);
 *     NULL until fb_runtime_start.
 * Drivers and sinks keep their own state behind `ctx`/`drv_dev`/`addr`/`plan`.
 */
#ifndef FB_MODEL_H
#define FB_MODEL_H
#include <stdatomic.h>
#include <stdio.h>

#include "core/batch.h"
#include "core/env.h"
#include "core/fb.h"
#include "core/log.h"
#include "core/url.h"

struct fb_cfg;
struct fb_cfg_map;
struct fb_gateway;
struct fb_conn;
struct fb_group_rt;
struct fb_conn_rt;
struct fb_sink_rt;
struct fb_rt;
struct fb_model_map;
struct fb_fleet_cfg;
struct fb_browse;
struct fb_block_pool;
struct fb_vib;

/* ------------------------------------------------------------------- tags */
enum fb_access { FB_ACC_READ = 1, FB_ACC_WRITE = 2, FB_ACC_RW = 3 };

/* Per-tag processing settings (src/proc). Zero means off unless said.  Tags
 * with equal settings share one copy (the config loader interns them), so a
 * tag holds only a pointer. */
struct fb_tag_proc {
    bool scaled;
    double k, d; /* eng = raw * k + d; raw = (eng - d) / k on write */
    /* the same scale with whole numbers, eng = (raw * sa + sb) / sc, so that
     * decimal factors give decimal results (src/proc/scale.c); sc 0 = none */
    double sa, sb, sc;
    bool has_min, has_max;
    double min, max;       /* plausible / writable range (engineering units) */
    double max_rate;       /* max |Δ|/s; faster → spike → BadSensorFailure (0 = off) */
    uint32_t spike_accept; /* a step is accepted after this many samples that agree (0 = by time only) */
    int64_t stuck_ns;      /* unchanged this long → UncertainSensorNotAccurate (0 = off) */
    double db_abs, db_pct; /* deadband; both 0 = publish every sample */
    int64_t heartbeat_ns;  /* publish at least this often, even inside the deadband */
    int64_t window_ns;     /* sliding-window stats (0 = off) */
    /* Settings that are not processing but that a config entry gives all its
     * tags alike, kept here rather than in struct fb_tag (issue 15: one copy
     * per distinct combination, not one per tag).  Strings interned in the
     * gateway's arena; NULL = not given. */
    const char *order;    /* byte/word order as written (the driver interprets it) */
    const char *unit;     /* engineering unit */
    uint16_t write_roles; /* who may write the tag: 0 = any source commands reach, else gw->acls[write_roles - 1] */
};
/* The settings of a tag without processing (what a NULL proc means). */
extern const struct fb_tag_proc fb_tag_proc_none;

/* Where a tag's values come from: read from its device, or computed by the
 * edge thread (src/edge) from other tags (an expression) or by a Lua script,
 * or by the vibration analysis (src/vib) from a waveform tag's blocks (a
 * feature).  Computed tags have no address, are in no poll group (group
 * FB_GROUP_NONE) and are read-only. */
enum fb_tag_src { FB_TAG_READ = 0, FB_TAG_EXPR = 1, FB_TAG_SCRIPT = 2, FB_TAG_FEATURE = 3 };
#define FB_GROUP_NONE 0xFFFFu
/* The group of a batch of feature tags (src/vib): not a poll group, but
 * unlike the edge's own batches (FB_GROUP_NONE) fed to the edge thread. */
#define FB_GROUP_FEATURES 0xFFFEu

/* A waveform tag (src/vib, docs/vibration.md): each read delivers a block of
 * n samples at fs Hz as one sample of type FB_T_BLOCK (core/block.h), which
 * goes to the vibration analysis instead of the sinks; what the analysis
 * computes from it are the feature tags that follow it in its device
 * (FB_TAG_FEATURE).  Owned by its tag. */
struct fb_wave {
    uint32_t n;                    /* samples per block */
    double fs;                     /* sample rate, Hz */
    uint32_t chan;                 /* its channel in the analysis (gw->vib) */
    uint32_t first_feature, nfeat; /* its feature tags: gw->tags[first_feature ..] */
    struct fb_block_pool *pool;    /* runtime (vib.c): empty blocks for the driver; NULL until started */
    /* live: the connection thread and the analysis write, status reads */
    _Atomic uint64_t blocks;            /* analysed */
    _Atomic uint64_t dropped;           /* acquisitions dropped: every block still in use (analysis behind) */
    _Atomic uint64_t cpu_ns;            /* analysis CPU time */
    _Atomic uint32_t learned, learn_of; /* anomaly baseline: blocks learnt of learn_of (0: no anomaly detection) */
};

/* 48 bytes: a gateway holds a million of them (issue 15: ≤ 100 bytes per
 * configured tag in all).  The name of a tag read from the config lives in
 * the gateway's arena (gw->arena); `proc` (processing, unit, order, who may
 * write) once per distinct settings.  The address text is not kept here:
 * fb_tag_addr_text gives it.  Its "device/name" path for messages:
 * fb_tag_path. */
struct fb_tag {
    char *name;                     /* within the device: "temperature", "temps[3]" */
    void *addr;                     /* driver-owned parsed address */
    const struct fb_tag_proc *proc; /* shared; NULL = none (read it with fb_tproc, fb_tag_unit, ...) */
    uint32_t id;
    uint32_t device;  /* owning device index */
    uint32_t index;   /* element index for tags expanded from `count:` */
    uint32_t str_len; /* string tags: bytes */
    union {           /* computed tags have no waveform, read tags no calc */
        uint32_t calc; /* FB_TAG_EXPR: index in gw->calcs; FB_TAG_SCRIPT: in gw->scripts */
        uint32_t wave_ix; /* FB_TAG_READ: a waveform tag (src/vib) if non-zero: gw->waves[wave_ix - 1];
                           * read it with fb_tag_is_wave / fb_tag_wave */
    };
    uint16_t group;   /* poll group index within the device (FB_GROUP_NONE: computed) */
    uint8_t type;     /* enum fb_type: the type on the wire */
    uint8_t access : 4; /* enum fb_access */
    uint8_t src : 4;    /* enum fb_tag_src */
};

struct fb_atext_run { /* tags first .. first+n-1 share the address text text */
    uint32_t first, n;
    const char *text;
};

struct fb_group { /* a poll group: tags read at the same period */
    int64_t period_ns;
    /* its tags' ids, read with fb_group_tag: first .. first + ntags - 1 when
     * they are one contiguous run (ids NULL: the common case, no array —
     * issue 15, memory per tag), else ids[0 .. ntags - 1] */
    uint32_t *ids;
    uint32_t first;
    uint32_t ntags;
    void *plan; /* driver-owned read plan */
    struct fb_group_rt *rt;
};

/* ---------------------------------------------------------------- devices */
/* Live counters of a device; written by its connection thread, read by anyone. */
struct fb_dev_metrics {
    _Atomic uint64_t requests, errors, timeouts, reconnects, writes, write_errors;
    _Atomic uint64_t rtt_ns_sum, rtt_ns_last, rtt_count;
    _Atomic int64_t last_success_ns;   /* UTC */
    _Atomic uint32_t tags_out_of_spec; /* tags whose last published quality is out of range */
    _Atomic uint32_t tags_bad;         /* tags whose last published quality is Bad (NE107) */
    /* alarms (src/edge/alarms.c): active ones that are neither shelved nor
     * suppressed, in total and per NE107 category they map to (enum fb_ne107) */
    _Atomic uint32_t alarms_active, alarms_unacked;
    _Atomic uint32_t alarms_ne107[4];
};

struct fb_device {
    uint32_t idx;
    char *name;
    char *url_text;
    struct fb_url url;
    const struct fb_driver *drv;
    char *area, *line;         /* ISA-95 levels for topics */
    uint32_t first_tag, ntags; /* tags are contiguous: gw->tags[first_tag ..] */
    struct fb_group *groups;
    uint32_t ngroups;
    int64_t timeout_ns; /* per request */
    int64_t delay_ns;   /* pause between requests */
    struct fb_conn *conn;
    struct fb_gateway *gw;
    void *drv_dev; /* driver per-device state */
    int line_no, col;
    /* live */
    struct fb_dev_metrics m;
    _Atomic int state; /* enum fb_dev_state */
};

/* One TCP connection or serial line, shared by the devices behind it; one
 * thread, one request in flight. */
struct fb_conn {
    char *key; /* "tcp:127.0.0.1:502", "rtu:/dev/ttyUSB0", "sim:press-01" */
    const struct fb_driver *drv;
    struct fb_device **devs;
    uint32_t ndevs;
    void *ctx; /* driver transport state, set by open() */
    struct fb_conn_rt *rt;
};

/* ---------------------------------------------------------------- drivers */
/* A south driver: one static table per protocol (src/south/<name>/), listed
 * in core/driver.c. */
struct fb_driver {
    const char *name;           /* "modbus", "sim" */
    const char *const *schemes; /* URL schemes it serves, NULL-terminated */
    /* Check dev->url, set dev->drv_dev, and return in *conn_key (malloc'd) the
     * key of the connection this device uses: equal keys share one connection. */
    int (*device_init)(struct fb_device *dev, char **conn_key, struct fb_err *err);
    void (*device_free)(struct fb_device *dev);
    /* Parse the tag's address text (fb_tag_addr_text; and fb_tag_order,
     * tag->index, tag->type if given); set tag->addr and, if tag->type is
     * FB_T_NONE, the default type. */
    int (*parse_address)(struct fb_device *dev, struct fb_tag *tag, struct fb_err *err);
    void (*free_address)(struct fb_tag *tag);
    /* Optional: write tag->addr (parsed) back as text into buf (len bytes);
     * where that gives the text as written, the text is not kept
     * (fb_tag_addr_text). */
    void (*addr_text)(const struct fb_device *dev, const struct fb_tag *tag, char *buf, size_t len);
    /* After all tags are known: build g->plan for a poll group. */
    int (*plan)(struct fb_device *dev, struct fb_group *g, struct fb_err *err);
    void (*plan_free)(struct fb_group *g);
    /* Connect; called again with backoff after failure. */
    int (*open)(struct fb_conn *c, struct fb_err *err);
    /* Read a group into out, one sample per tag (bad quality where an item
     * failed).  Return 0, or FB_EIO/FB_ETIMEDOUT/FB_EPROTO when the connection
     * must be re-established (the core then closes and reconnects). */
    int (*read)(struct fb_device *dev, struct fb_group *g, struct fb_batch *out);
    /* Write one raw value (already converted to tag->type). */
    int (*write)(struct fb_device *dev, const struct fb_tag *t, const struct fb_value *v, struct fb_err *err);
    void (*close)(struct fb_conn *c);
    /* Optional: a config reload keeps connection c running in place of `old`
     * (same key; the same devices with the same tags in the same order, but
     * new objects whose tag ids may have moved).  c->ctx already holds old's
     * open transport.  Re-point what the transport keeps of the model and
     * carry per-device, per-group and per-tag state worth keeping (cached
     * handles, learnt splits) from old's objects to c's; the old model is
     * freed afterwards with whatever c's objects held before.  Called with
     * the connection's thread parked.  Without it, a reload reconnects the
     * connection even when nothing about it changed. */
    void (*adopt)(struct fb_conn *c, struct fb_conn *old);
    /* What a device offers (OPC UA nodes, ADS symbols, PiCtory variables):
     * each variable into list (core/browse.h) and, when text is not NULL,
     * the human listing of `fieldbridge browse` there.  NULL: nothing to
     * browse (the addresses are absolute). */
    int (*browse)(const char *url, struct fb_browse *list, FILE *text, struct fb_err *err);
    /* Optional: name the certificate stores the device uses beyond the files
     * its URL options name (e.g. the OPC UA pki= store when a security policy
     * is set), with fb_gw_cert_add, for the expiry watch (core/certs.c). */
    void (*certs)(struct fb_device *dev, struct fb_gateway *gw);
};

/* ------------------------------------------------------------------ sinks */
enum fb_delivery { FB_SENT = 0, FB_RETRY = 1, FB_DROP = 2 };

/* Live counters of a sink. */
struct fb_sink_metrics {
    _Atomic uint64_t queued, sent, dropped, retries, errors;
    _Atomic int connected;
    /* sinks that track acknowledgements (MQTT, Sparkplug): messages awaiting
     * theirs and the window they may fill now; 0 for the others */
    _Atomic uint32_t inflight, window;
};

/* Store-and-forward settings (`buffer:` globally, overridable per sink). */
struct fb_buffer_cfg {
    char *path;               /* directory; each sink uses path/<sink name> */
    uint64_t max_bytes;       /* disk bound (default 256 MiB) */
    int64_t max_age_ns;       /* drop records older than this (0 = keep) */
    int sync;                 /* enum fb_store_sync: batch (default), interval, os */
    int64_t sync_interval_ns; /* for interval */
    int full_policy;          /* enum fb_store_full: drop_oldest (default), block */
    uint32_t drain_rate;      /* max messages/s towards the sink (0 = unlimited) */
};

struct fb_sink_inst;
/* A north sink: one static table per kind (src/north/<name>/), listed in
 * core/sinks.c.  Its config section has the sink's name as its key. */
struct fb_sink {
    const char *name;                    /* "mqtt": the config section and the instance name */
    const char *const *keys;             /* the section's own keys, NULL-terminated (the
                                * core reads the common `buffer:` and `queue:`) */
    const struct fb_config_keys *nested; /* the keys of its nested mappings (tls:, qos:, …),
                                          * ended by a NULL section: for the docs check */
    /* A live view (the HTTP API), not a delivery target: it gets no store and
     * no `buffer:`/`queue:` keys, every batch goes straight to send(), which
     * reports it at once and never blocks. */
    bool live;
    /* Read the section (m, already checked against keys) into a new config
     * object; errors go to the reader (r), the object is returned even then so
     * that every error is found in one pass.  gw holds the gateway section. */
    void *(*cfg_load)(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw);
    void (*cfg_free)(void *cfg);
    /* One line (or a few) for `fieldbridge check`: "  sink mqtt  ...\n". */
    void (*describe)(const struct fb_sink_inst *s, FILE *f);

    int (*open)(struct fb_sink_inst *s, struct fb_err *err);
    /* Accept a batch (data, device state or alarm event: enum fb_batch_kind;
     * a kind the sink has no form for is reported FB_SENT unpublished).  The
     * batch is borrowed until send returns.  Delivery is reported later with
     * fb_sink_done(). */
    int (*send)(struct fb_sink_inst *s, const struct fb_batch *b, uint64_t batch_id);
    /* Can it take a message now (connected, room in flight)?  With a store the
     * runtime only hands over buffered records while this says yes.  `pace`:
     * the caller made the batch (a connection thread about to hand it over
     * directly, core/publish.c) and may be held back a moment while the sink
     * is full — the sink thread passes false. */
    bool (*ready)(struct fb_sink_inst *s, bool pace);
    /* Called on the sink thread about every 100 ms and when idle: housekeeping. */
    void (*tick)(struct fb_sink_inst *s);
    /* Publish an offline status and flush what can be flushed, then disconnect. */
    void (*close)(struct fb_sink_inst *s);
    /* Optional: whether two config objects (cfg_load) configure the very same
     * sink (referenced files included).  NULL: a reload always restarts it. */
    bool (*cfg_equal)(const void *a, const void *b);
    /* Optional, both or neither: a config reload changes the devices or tags
     * under the running sink, whose own settings stay.  model_begin runs with
     * the sink's thread parked: from then on the sink's other threads (its
     * network callbacks) must not look at the model or at what the sink
     * derived from it, until model_end — called once gw holds the new model,
     * with `map` from the old device and tag ids to the new (UINT32_MAX:
     * gone; core/batch_codec.h) — has rebuilt that (topics, aliases,
     * births).  Without them such a reload restarts the sink. */
    void (*model_begin)(struct fb_sink_inst *s);
    void (*model_end)(struct fb_sink_inst *s, const struct fb_model_map *map);
    /* Takes named batches (batch.h: data a source such as ingest received for
     * devices the model does not know).  A config with a source may only
     * have sinks that do. */
    bool named;
};

/* A north-side source: data that arrives from outside instead of from the
 * devices — `ingest:`, the telemetry of other gateways received over MQTT.
 * One static table per kind, listed in core/sinks.c; its config section has
 * its name as key.  It makes named batches (batch.h) and hands them to every
 * sink with fb_source_submit (plugin.h), so they take the same path as
 * polled data: sink queue, store (`buffer:`), sink, metrics.  Started after
 * the sinks, stopped before them, so nothing it accepted is lost at
 * shutdown. */
struct fb_source_inst;
struct fb_source_metrics { /* live */
    _Atomic uint64_t messages, batches, errors;
    _Atomic int connected;
};
struct fb_source {
    const char *name;
    const char *const *keys;
    const struct fb_config_keys *nested; /* nested mappings' keys, NULL section last (for the docs check) */
    void *(*cfg_load)(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw);
    void (*cfg_free)(void *cfg);
    void (*describe)(const struct fb_source_inst *s, FILE *f);
    int (*start)(struct fb_source_inst *s, struct fb_err *err);
    /* Stop receiving (before the sinks drain: what it accepted is queued). */
    void (*stop)(struct fb_source_inst *s);
    /* After the sinks have closed: free what their queues may have pointed
     * to (the source's batch pool) and the running state. */
    void (*release)(struct fb_source_inst *s);
};
struct fb_source_inst {
    const struct fb_source *src;
    char *name;
    void *cfg;
    struct fb_gateway *gw;
    void *ctx; /* the source's running state (start .. stop) */
    struct fb_source_metrics m;
};

/* A service: something configured by its own top-level section that lives
 * as long as the runtime without taking the data stream (the metrics
 * endpoint).  Started after the sinks, stopped after they closed and before
 * their stores are freed (status readers look at the stores).  Listed in
 * core/sinks.c; present when its section is. */
struct fb_service_inst;
struct fb_dev_spec; /* core/config_dev.h */
struct fb_buf;      /* core/buf.h */
struct fb_service {
    const char *name;                    /* its config section */
    const char *const *keys;             /* the section's keys, NULL-terminated */
    const struct fb_config_keys *nested; /* nested mappings' keys, NULL section last (may be NULL) */
    void *(*cfg_load)(struct fb_cfg *r, const struct fb_cfg_map *m, const struct fb_gateway *gw);
    void (*cfg_free)(void *cfg);
    void (*describe)(const struct fb_service_inst *si, FILE *f);                /* the `check` line */
    void *(*start)(struct fb_gateway *gw, const void *cfg, struct fb_err *err); /* NULL + err on failure */
    void (*stop)(void *state);
    /* Optional: the same configuration?  NULL: a reload always restarts it. */
    bool (*cfg_equal)(const void *a, const void *b);
    /* Optional hooks, for a service that acts on the devices (the control
     * loops, docs/control.md); NULL for the others. */
    /* Devices the section adds to the model (their tags are the service's
     * state, published like telemetry and written by commands): called after
     * cfg_load, before the devices: section is built; the specs belong to cfg. */
    size_t (*devices)(void *cfg, const struct fb_dev_spec **specs);
    /* Resolve the section's names of devices and tags once the model is
     * built; errors go to the reader with the section's file:line:col. */
    void (*bind)(struct fb_cfg *r, void *cfg, struct fb_gateway *gw);
    /* When set, the service starts before the connection threads, and
     * quiesce runs when a stop is requested, before the connection threads
     * are told to stop: writes it makes then (safe values) still reach the
     * devices.  stop still runs after the sinks, like every service's. */
    void (*quiesce)(void *state);
    /* Optional, with quiesce: a reload that keeps a section of this service
     * calls handover instead of quiesce.  It stops the service acting like
     * quiesce, but what new_cfg (loaded and bound on the new model nw)
     * continues unchanged is left as it is (a kept loop writes no safe
     * value), and its running state is returned as a self-contained blob
     * (NULL: nothing to carry).  The blob is then always given to adopt —
     * which starts the service like start, continuing from it, and frees it
     * (also on failure) — on the new model, or on the old one when the
     * reload is undone. */
    void *(*handover)(void *state, const void *new_cfg, const struct fb_gateway *nw);
    void *(*adopt)(struct fb_gateway *gw, const void *cfg, void *blob, struct fb_err *err);
    /* Its part of GET /metrics (whole families) and of the status JSON (the
     * value of "<name>":, one JSON object). */
    void (*metrics)(void *state, struct fb_buf *out);
    void (*status)(void *state, struct fb_buf *out);
};

struct fb_service_inst {
    const struct fb_service *svc;
    void *cfg;
};

struct fb_sink_inst {
    const struct fb_sink *sink;
    char *name;
    void *cfg;                    /* the sink's config object (cfg_load) */
    struct fb_buffer_cfg *buffer; /* store-and-forward, NULL = none; the global one with overrides */
    uint32_t queue_len;           /* `queue:` (default 1024; see docs/configuration.md) */
    struct fb_gateway *gw;
    void *ctx;                /* the sink's running state (open .. close) */
    struct fb_sink_metrics m; /* live */
    struct fb_sink_rt *rt;
};

/* ------------------------------------------------------------------ arena */
/* Memory that lives as long as the model, handed out in chunks and freed at
 * once with it: no allocation header per string (tag names and addresses
 * are short and there may be a million of them). */
struct fb_arena_blk;
struct fb_arena {
    struct fb_arena_blk *blk; /* current chunk, linked to the older ones */
    size_t off;               /* bytes used in it */
    size_t bytes;             /* total reserved, for the memory accounting */
};
/* n bytes aligned to `align` (a power of two), zeroed; NULL when out of memory. */
void *fb_arena_alloc(struct fb_arena *a, size_t n, size_t align);
/* A copy of s[0..n) with a NUL after it. */
char *fb_arena_strndup(struct fb_arena *a, const char *s, size_t n);
void fb_arena_free(struct fb_arena *a);

/* ------------------------------------------- computed tags, alarms, scripts */
/* Built by src/edge/edge_cfg.c from the tags' `expr:`/`script:`/`alarms:`
 * keys and the `scripts:`/`alarms:` sections; run by the edge thread
 * (src/edge/edge.c).  Absent (all counts 0) in a config that uses none of
 * them, and then nothing of the edge runs. */
struct fb_expr; /* a compiled expression (edge/expr.h) */

/* Quality of a computed value (docs/computed.md): worst = the worst input
 * quality wins (a Bad input makes the result Bad, with that input's code);
 * last_usable = Bad inputs count with their last good value and make the
 * result UncertainLastUsableValue. */
enum fb_calc_quality { FB_CALCQ_WORST = 0, FB_CALCQ_LAST_USABLE = 1 };

struct fb_calc {          /* an expression tag */
    uint32_t tag;         /* the tag it computes */
    char *text;           /* as written */
    struct fb_expr *expr; /* its variables are in[0..nin) */
    uint32_t *in, nin;    /* input tag ids */
    int64_t period_ns;    /* 0: evaluated when an input changes */
    uint8_t quality;      /* enum fb_calc_quality */
};

enum fb_alarm_kind {
    FB_AK_HIHI = 0,
    FB_AK_HI,
    FB_AK_LO,
    FB_AK_LOLO,
    FB_AK_ROC,       /* rate of change, |Δvalue|/s */
    FB_AK_DEVIATION, /* |value - setpoint tag| */
    FB_AK_DIGITAL,   /* value == when */
    FB_AK_BAD,       /* quality Bad */
    FB_AK_EXTERNAL,  /* raised and cleared by code: a script, a feature monitor */
    FB_AK__COUNT
};
enum fb_alarm_prio { FB_AP_LOW = 0, FB_AP_MEDIUM, FB_AP_HIGH, FB_AP_URGENT };
/* NAMUR NE107 status categories an active alarm puts its device in. */
enum fb_ne107 { FB_NE107_MAINTENANCE = 0, FB_NE107_OUT_OF_SPEC, FB_NE107_CHECK, FB_NE107_FAILURE };

struct fb_alarm {
    uint32_t id;
    uint32_t device;
    uint32_t tag;      /* the tag it watches; UINT32_MAX for an external alarm of the device */
    uint8_t kind;      /* enum fb_alarm_kind */
    uint8_t priority;  /* enum fb_alarm_prio */
    uint8_t ne107;     /* enum fb_ne107 */
    uint16_t severity; /* 1..1000 (OPC UA A&C) */
    char *name;        /* within the device: "temperature/hi", "pump-cycles/short_cycling" */
    char *path;        /* "press-01/temperature/hi" */
    char *message;     /* NULL: none */
    double limit, deadband;
    double when;       /* digital: active when the value equals this */
    uint32_t setpoint; /* deviation: the setpoint tag */
    int64_t on_delay_ns, off_delay_ns;
    /* suppressed by condition: while this expression is true (NULL: never) */
    char *suppress_text;
    struct fb_expr *suppress;
    uint32_t *sup_in, nsup_in;
};

/* Lua libraries a script may be given beside the safe ones. */
enum { FB_LUA_IO = 1u << 0, FB_LUA_OS = 1u << 1 };

struct fb_script {
    char *name;
    char *file;   /* path as resolved */
    char *source; /* the script's text, read at load time */
    size_t source_len;
    uint32_t device;          /* its device (events, alarms, bare tag names); UINT32_MAX: the gateway */
    uint32_t *devices, ndevs; /* whose batches call on_batch; all when all_devices */
    bool all_devices;
    int64_t timer_ns; /* on_timer period, 0 = none */
    uint64_t max_instructions;
    int64_t max_time_ns;
    uint64_t max_memory;
    uint32_t libs;                 /* FB_LUA_* */
    uint32_t *outputs, nout;       /* tags with `script: <name>` */
    uint32_t first_alarm, nalarms; /* its external alarms: gw->alarms[first_alarm ..] */
    /* live (edge thread writes, anyone reads) */
    _Atomic uint64_t runs, errors, overruns, writes;
    _Atomic uint32_t writes_inflight;
};

/* The `alarms:` section. */
struct fb_alarm_opts {
    uint32_t flood_events;   /* events published per device and window (default 20) */
    int64_t flood_window_ns; /* default 10 s */
    int64_t max_shelve_ns;   /* longest shelve a command may ask for (default 8 h) */
};

/* ---------------------------------------------------------------- gateway */
/* The gateway commands a sender list may be given for (commands.gateway;
 * their names: fb_gw_cmd_names in core/router.h). */
#define FB_GW_CMDS 9

/* A list of command senders (`commands.allow`, a tag's `write_roles`): each
 * entry "SOURCE", "SOURCE:ROLE" or "*:ROLE" (router.h says how they match).
 * Identical lists are stored once. */
struct fb_acl {
    char **pat;
    uint32_t n;
};

/* A certificate file or store the gateway uses, watched for expiry
 * (core/certs.c): kind FB_OPT_CERT (a PEM/DER file, maybe several
 * certificates), FB_OPT_DIR (a directory of CA certificates), FB_OPT_PKI (an
 * OPC UA store: own/, trusted/, issuers/, crl/) or FB_OPT_CRL (CRLs). */
struct fb_cert_ref {
    char *use;  /* what uses it, as the config names it: "mqtt.tls.cert", "device plc-01 pki" */
    char *path; /* as the gateway opens it */
    uint8_t kind;
};

struct fb_label {
    char *key, *value;
};

struct fb_gateway {
    char *id, *site;
    char *cfg_path;
    /* identity (`gateway:`) and the config's own `version:`, for the status */
    char *hw_model, *location, *cfg_version;
    struct fb_label *labels;
    uint32_t nlabels;
    struct fb_fleet_cfg *fleet; /* `fleet:` (core/fleet_cfg.h), NULL = defaults */
    struct fb_tag *tags;
    uint32_t ntags;
    struct fb_device *devs;
    uint32_t ndevs;
    struct fb_conn *conns;
    uint32_t nconns;
    struct fb_sink_inst *sinks;
    uint32_t nsinks;
    struct fb_service_inst *services;
    uint32_t nservices;
    struct fb_source_inst *sources; /* `ingest:` (a config with a source has no devices) */
    uint32_t nsources;
    /* commands */
    int64_t cmd_max_age_ns; /* refuse commands whose "ts" is older (0 = off) */
    bool cmd_allow_qos0;
    int64_t cmd_timeout_ns; /* how long a command may wait for its device */
    uint16_t cmd_allow;     /* commands.allow: 0 = every source, else acls[cmd_allow - 1] */
    /* commands.gateway.<cmd> (fb_gw_cmd_names, router.h): who may send that
     * gateway command besides passing commands.allow; 0 = no own list */
    uint16_t gw_cmd_allow[FB_GW_CMDS];
    struct fb_acl *acls;    /* the sender lists of commands.allow and write_roles */
    uint32_t nacls;
    /* security: certificates to watch, and how (security.cert_warning / cert_check) */
    struct fb_cert_ref *certs;
    uint32_t ncerts;
    int64_t cert_warn_ns;         /* warn this long before a certificate or CRL expires (default 30 d) */
    int64_t cert_check_ns;        /* look again this often (default 1 h) */
    struct fb_buffer_cfg *buffer; /* global buffer settings, NULL = none */
    int64_t status_interval_ns;
    int64_t stall_timeout_ns; /* a watched thread busy this long in one step is stalled (core/live.h) */
    /* computed tags, alarms, scripts (src/edge) */
    struct fb_calc *calcs;
    uint32_t ncalcs;
    struct fb_alarm *alarms;
    uint32_t nalarms;
    struct fb_script *scripts;
    uint32_t nscripts;
    struct fb_alarm_opts alarm_opts;
    /* vibration condition monitoring (src/vib): the channels' analysis
     * settings, owned by vib/vib_cfg.c (freed through vib_free); NULL: none */
    struct fb_vib *vib;
    /* the waveform tags' settings and counters (struct fb_wave, owned here),
     * by a tag's wave_ix - 1: fb_tag_wave */
    struct fb_wave **waves;
    uint32_t nwaves;
    void (*vib_free)(struct fb_vib *vib);
    /* logging */
    int log_level;
    int log_format;        /* enum fb_log_format */
    struct fb_arena arena; /* tags' strings and shared processing settings */
    /* tags' address texts as written (read them with fb_tag_addr_text): one
     * per tag (atext[id], NULL = none) while loading and in models built by
     * hand; after loading (fb_gw_atext_compact) only those the driver does
     * not write back the same, in runs of tags that share one, by tag id */
    const char **atext;
    struct fb_arena atext_arena; /* the texts of atext while loading */
    struct fb_atext_run *atext_runs;
    uint32_t natext_runs;
    struct fb_rt *rt;      /* the running gateway (runtime.c), NULL before start */
    /* The loader that built this model, for a sink that checks a posted
     * config the same way (POST /api/v1/config/check) without depending on
     * the loader: 0 when valid; messages to diag, and when valid the `check`
     * summary to summary (may be NULL). */
    int (*config_check)(const char *name, const char *text, size_t len, bool strict, FILE *diag, FILE *summary);
};

/* Release a gateway model, also a half-built one (driver hooks are called
 * only for what the driver created). */
void fb_gateway_free(struct fb_gateway *gw);
void fb_buffer_cfg_free(struct fb_buffer_cfg *b);
/* Store a sender list (pat[0..n), taken over) once: its index + 1 for
 * cmd_allow / write_roles, or 0 when out of memory or past 65535 lists. */
uint16_t fb_gw_acl_add(struct fb_gateway *gw, char **pat, uint32_t n);
/* Watch a certificate file or store (see struct fb_cert_ref); the same path
 * and kind twice is kept once.  False when out of memory. */
bool fb_gw_cert_add(struct fb_gateway *gw, const char *use, const char *path, enum fb_opt_kind kind);
/* Look-ups for the command path (not hot). */
struct fb_device *fb_gw_device(struct fb_gateway *gw, const char *name);
struct fb_tag *fb_gw_tag(struct fb_gateway *gw, const struct fb_device *d, const char *name);
/* "device/name" of a tag, for messages (not kept per tag: a million tags
 * would hold a million copies).  The text is in a per-thread buffer, one of
 * four used in turn, so up to four may appear in one message. */
const char *fb_tag_path(const struct fb_gateway *gw, const struct fb_tag *t);
/* A tag's processing settings (never NULL). */
static inline const struct fb_tag_proc *fb_tproc(const struct fb_tag *t)
{
    return t->proc ? t->proc : &fb_tag_proc_none;
}
static inline const char *fb_tag_unit(const struct fb_tag *t) { return fb_tproc(t)->unit; }
static inline const char *fb_tag_order(const struct fb_tag *t) { return fb_tproc(t)->order; }
static inline uint16_t fb_tag_write_roles(const struct fb_tag *t) { return fb_tproc(t)->write_roles; }
/* The id of poll group g's i-th tag (i < g->ntags). */
static inline uint32_t fb_group_tag(const struct fb_group *g, uint32_t i) { return g->ids ? g->ids[i] : g->first + i; }

/* A waveform tag (src/vib)?  Its settings and counters: fb_tag_wave. */
static inline bool fb_tag_is_wave(const struct fb_tag *t) { return t->src == FB_TAG_READ && t->wave_ix != 0; }
static inline struct fb_wave *fb_tag_wave(const struct fb_gateway *gw, const struct fb_tag *t)
{
    return fb_tag_is_wave(t) && t->wave_ix <= gw->nwaves ? gw->waves[t->wave_ix - 1] : NULL;
}
/* Room for any address text a driver writes back (fb_driver.addr_text). */
#define FB_ATEXT_MAX 128
/* A tag's address text as written in the config, or NULL when it has none
 * (computed tags): kept (gw->atext, gw->atext_runs), or written back by its
 * driver into buf (FB_ATEXT_MAX bytes). */
const char *fb_tag_addr_text(const struct fb_gateway *gw, const struct fb_tag *t, char *buf);
/* After the drivers parsed the addresses: keep only the texts the drivers do
 * not write back the same, copied to gw->arena; gw->atext is freed.  False
 * when out of memory (then gw->atext is kept). */
bool fb_gw_atext_compact(struct fb_gateway *gw);
/* The type a tag's values have after processing (scaled → float64). */
static inline enum fb_type fb_tag_out_type(const struct fb_tag *t)
{
    return t->proc && t->proc->scaled ? FB_T_FLOAT64 : (enum fb_type)t->type;
}
#endif
