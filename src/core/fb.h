/* fb.h — the data model every part of fieldbridge shares.
 *
 * The gateway is a set of dense arrays built once from the config and never
 * resized while running: tags (gw->tags[id]), devices (gw->devs[idx]) and
 * connections.  Hot paths refer to tags by id, never by name.
 *
 * Data flows south → north in batches (struct fb_batch): one batch per
 * device per poll cycle, samples stored inline, strings in a per-batch arena
 * sized at start-up, so no allocation happens per sample.
 *
 * Errors: functions return 0 or a negative enum fb_status; anything a user
 * will read carries a message in struct fb_err.  Broken internal invariants
 * assert; bad input from files or the network never does.
 */
#ifndef FB_H
#define FB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ------------------------------------------------------------------ errors */
enum fb_status {
    FB_OK = 0,
    FB_EINVAL = -1,     /* bad argument / bad input */
    FB_ENOMEM = -2,
    FB_EIO = -3,        /* connection or I/O failure: reconnect */
    FB_ETIMEDOUT = -4,
    FB_EPROTO = -5,     /* malformed frame from the peer */
    FB_EEXCEPTION = -6, /* protocol-level refusal (e.g. Modbus exception) */
    FB_ENOTSUP = -7,
    FB_ERANGE = -8,
    FB_EACCES = -9,
    FB_ENOENT = -10,
    FB_ECLOSED = -11,
    FB_EAGAIN = -12,
};

struct fb_err {
    int code;
    char msg[256];
};

/* Sets e (if not NULL) and returns code, so `return fb_err_set(...)` works. */
int fb_err_set(struct fb_err *e, int code, const char *fmt, ...) FB_PRINTF(3, 4);
const char *fb_strerror(int code);

/* -------------------------------------------------------------------- time */
int64_t fb_now_ns(void);  /* CLOCK_REALTIME, ns since the Unix epoch (UTC) */
int64_t fb_mono_ns(void); /* CLOCK_MONOTONIC */
/* Whether the kernel reports the system clock synchronised (NTP/PTP); health
 * and status say so when it is not, since every time stamp depends on it. */
bool fb_clock_synced(void);
/* "2026-11-28T10:00:00.123Z" (millisecond precision); buf >= 32. Returns length. */
size_t fb_fmt_time(char *buf, int64_t ns);
/* "100ms", "1.5s", "2m", "7d", "250us", "10ns"; a bare number is seconds. */
int fb_parse_duration(const char *s, int64_t *ns);
/* "512MiB", "10MB", "4096", "1GiB", "64k" (k/KB = 1000, KiB = 1024). */
int fb_parse_size(const char *s, uint64_t *bytes);

/* Reconnect back-off: doubles from min to max with equal jitter (half
 * fixed, half random), so gateways restarted together spread out. */
struct fb_backoff {
    int64_t min_ns, max_ns, cur_ns;
    uint64_t rng;
};
void fb_backoff_init(struct fb_backoff *b, int64_t min_ns, int64_t max_ns);
int64_t fb_backoff_next(struct fb_backoff *b); /* the delay before the next attempt */
static inline void fb_backoff_reset(struct fb_backoff *b) { b->cur_ns = b->min_ns; }

/* ----------------------------------------------------------------- quality */
/* OPC UA StatusCode compatible.  The top two bits give the severity. */
#define FB_Q_GOOD 0x00000000u
#define FB_Q_UNCERTAIN 0x40000000u
#define FB_Q_BAD 0x80000000u
#define FB_Q_BAD_INTERNAL 0x80020000u
#define FB_Q_BAD_COMM 0x80050000u            /* BadCommunicationError */
#define FB_Q_BAD_DECODING 0x80070000u        /* BadDecodingError */
#define FB_Q_BAD_TIMEOUT 0x800A0000u         /* BadTimeout */
#define FB_Q_BAD_NO_COMM 0x80310000u         /* BadNoCommunication */
#define FB_Q_BAD_WAITING 0x80320000u         /* BadWaitingForInitialData */
#define FB_Q_BAD_NODE_UNKNOWN 0x80340000u    /* BadNodeIdUnknown */
#define FB_Q_BAD_NOT_READABLE 0x803A0000u
#define FB_Q_BAD_NOT_WRITABLE 0x803B0000u
#define FB_Q_BAD_OUT_OF_RANGE 0x803C0000u    /* BadOutOfRange */
#define FB_Q_BAD_TYPE_MISMATCH 0x80740000u
#define FB_Q_BAD_CONFIG 0x80890000u          /* BadConfigurationError */
#define FB_Q_BAD_NOT_CONNECTED 0x808A0000u
#define FB_Q_BAD_DEVICE_FAILURE 0x808B0000u  /* BadDeviceFailure */
#define FB_Q_BAD_SENSOR_FAILURE 0x808C0000u  /* BadSensorFailure */
#define FB_Q_UNC_LAST_USABLE 0x40900000u     /* UncertainLastUsableValue */
#define FB_Q_UNC_NOT_ACCURATE 0x40930000u    /* UncertainSensorNotAccurate */
#define FB_Q_UNC_EU_EXCEEDED 0x40940000u     /* UncertainEngineeringUnitsExceeded */

static inline bool fb_q_good(uint32_t q) { return (q & 0xC0000000u) == 0; }
static inline bool fb_q_bad(uint32_t q) { return (q & 0x80000000u) != 0; }
/* "good" / "uncertain" / "bad" */
const char *fb_q_severity(uint32_t q);
/* "BadCommunicationError", ...; "0x80AB0000" style for unknown codes (buf >= 12 used then). */
const char *fb_q_name(uint32_t q, char buf[16]);

/* ------------------------------------------------------------------ values */
enum fb_type {
    FB_T_NONE = 0,
    FB_T_BOOL,
    FB_T_INT8,
    FB_T_UINT8,
    FB_T_INT16,
    FB_T_UINT16,
    FB_T_INT32,
    FB_T_UINT32,
    FB_T_INT64,
    FB_T_UINT64,
    FB_T_FLOAT32,
    FB_T_FLOAT64,
    FB_T_STRING,
    FB_T__COUNT
};
const char *fb_type_name(enum fb_type t);        /* "float32" */
enum fb_type fb_type_parse(const char *s);       /* FB_T_NONE if unknown */
static inline bool fb_type_is_int(enum fb_type t) { return t >= FB_T_INT8 && t <= FB_T_UINT64; }
static inline bool fb_type_is_signed(enum fb_type t)
{
    return t == FB_T_INT8 || t == FB_T_INT16 || t == FB_T_INT32 || t == FB_T_INT64;
}
static inline bool fb_type_is_float(enum fb_type t) { return t == FB_T_FLOAT32 || t == FB_T_FLOAT64; }

/* A value.  Integers live in i (signed types) or u (unsigned types), floats in
 * f (float32 widened), strings point into memory owned by whoever made the
 * value (a batch's arena, a command's buffer) and are not NUL-terminated. */
struct fb_value {
    uint8_t type; /* enum fb_type */
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double f;
        struct {
            const char *p;
            uint32_t len;
        } s;
    };
};
/* Numeric view (bool → 0/1); false for strings. */
bool fb_value_to_double(const struct fb_value *v, double *out);
/* Convert a double into type t with range check (FB_ERANGE) and, for integer
 * types, rounding to nearest.  Used when writing scaled values back. */
int fb_value_from_double(enum fb_type t, double d, struct fb_value *out);
bool fb_value_equal(const struct fb_value *a, const struct fb_value *b);

/* ------------------------------------------------------------------ sample */
/* FB_SF_RAW: the pipeline's plausibility checks made the sample bad (out of
 * range, a spike); v is the refused reading, published as "raw" next to
 * "v": null so operators see what the sensor said. */
enum { FB_SF_STATS = 1u << 0, FB_SF_HEARTBEAT = 1u << 1, FB_SF_HISTORICAL = 1u << 2, FB_SF_RAW = 1u << 3 };

struct fb_sample {
    uint32_t tag;     /* tag id */
    uint32_t quality; /* FB_Q_* */
    uint32_t flags;   /* FB_SF_* */
    uint32_t stats;   /* index into batch->stats when FB_SF_STATS */
    int64_t ts_src;   /* source timestamp (device or read time), ns UTC */
    int64_t ts_gw;    /* gateway timestamp, ns UTC */
    struct fb_value v;
};

struct fb_stats { /* sliding-window statistics, published alongside a value */
    double mean, stddev, min, max;
    uint32_t count;
    int64_t window_ns;
};

/* ------------------------------------------------------------------- batch */
enum fb_batch_kind {
    FB_BATCH_DATA = 0,     /* samples of one device */
    FB_BATCH_DEVSTATE = 1, /* device connection state changed: see dev_state */
};
enum fb_dev_state { FB_DEV_CONNECTING = 0, FB_DEV_ONLINE = 1, FB_DEV_OFFLINE = 2 };
/* Room for a device's offline reason: a whole struct fb_err message fits, so
 * hints such as "…; run: chmod 600 /etc/fieldbridge/opcua.pass" arrive whole
 * (longer text is cut at a word, with an ellipsis: fb_text_cut). */
#define FB_REASON_LEN 256

struct fb_batch {
    struct fb_batch *next; /* intrusive link for queues and pools */
    struct fb_batch_pool *pool;
    atomic_int refs;
    uint8_t kind;      /* enum fb_batch_kind */
    uint8_t dev_state; /* enum fb_dev_state, for FB_BATCH_DEVSTATE */
    uint32_t device;   /* device index */
    uint16_t group;    /* poll group index within the device */
    int64_t ts;        /* gateway time the batch was made */
    uint64_t seq;      /* per-gateway monotonic sequence, set by the pipeline */
    uint32_t n, cap;
    struct fb_sample *s;
    uint32_t nstats, cap_stats;
    struct fb_stats *stats;
    char *arena; /* string bytes; fixed capacity so pointers stay valid */
    uint32_t arena_len, arena_cap;
    char reason[FB_REASON_LEN]; /* why a device went offline, for status messages */
};

struct fb_batch *fb_batch_new(uint32_t cap, uint32_t cap_stats, uint32_t arena_cap);
void fb_batch_free(struct fb_batch *b);
void fb_batch_reset(struct fb_batch *b);
/* Appends a sample and returns it (NULL when full: an invariant, the size is
 * computed at start-up).  Copies string bytes into the arena. */
struct fb_sample *fb_batch_add(struct fb_batch *b, uint32_t tag, uint32_t quality, int64_t ts,
                               const struct fb_value *v);
/* Copies len bytes into the arena; NULL when it does not fit. */
const char *fb_batch_strdup(struct fb_batch *b, const char *p, uint32_t len);

/* A bounded free list of equally sized batches.  get() blocks while none is
 * free (back-pressure), returns NULL after fb_batch_pool_close(). */
struct fb_batch_pool;
struct fb_batch_pool *fb_batch_pool_new(uint32_t count, uint32_t cap, uint32_t cap_stats,
                                        uint32_t arena_cap);
struct fb_batch *fb_batch_pool_get(struct fb_batch_pool *p);
struct fb_batch *fb_batch_pool_tryget(struct fb_batch_pool *p);
void fb_batch_pool_close(struct fb_batch_pool *p);
void fb_batch_pool_free(struct fb_batch_pool *p);
/* Drop one reference; the last one returns the batch to its pool (or frees it). */
void fb_batch_unref(struct fb_batch *b);
static inline void fb_batch_ref(struct fb_batch *b) { atomic_fetch_add(&b->refs, 1); }

/* ---------------------------------------------------------------- the model */
enum fb_access { FB_ACC_READ = 1, FB_ACC_WRITE = 2, FB_ACC_RW = 3 };

/* Per-tag processing settings (src/proc). Zero means off unless said. */
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
    uint8_t out_type;      /* type after scaling (float64 when scaled) */
};

struct fb_tag {
    uint32_t id;
    uint32_t device; /* owning device index */
    uint16_t group;  /* poll group index within the device */
    uint8_t type;    /* enum fb_type: the type on the wire */
    uint8_t access;  /* enum fb_access */
    uint32_t index;  /* element index for tags expanded from `count:` */
    uint32_t str_len;  /* string tags: bytes */
    char *name;      /* within the device: "temperature", "temps[3]" */
    char *path;      /* "press-01/temperature", for logs */
    char *addr_text; /* as written in the config */
    char *order;     /* byte/word order as written, or NULL (driver interprets) */
    char *unit;      /* engineering unit, or NULL */
    void *addr;      /* driver-owned parsed address */
    struct fb_tag_proc proc;
    int line, col;   /* where it was declared, for messages */
};

struct fb_group {      /* a poll group: tags read at the same period */
    int64_t period_ns;
    uint32_t *tags;    /* tag ids */
    uint32_t ntags;
    void *plan;        /* driver-owned read plan */
    int64_t next_due;  /* monotonic ns */
    struct fb_batch_pool *pool;     /* raw batches: connection thread → pipeline */
    _Atomic uint64_t overruns;      /* cycles started late by more than a period */
};

/* Per-device counters; written by the connection thread, read by anyone. */
struct fb_dev_metrics {
    _Atomic uint64_t requests, errors, timeouts, reconnects, writes, write_errors;
    _Atomic uint64_t rtt_ns_sum, rtt_ns_last, rtt_count;
    _Atomic int64_t last_success_ns; /* UTC */
    _Atomic uint32_t tags_out_of_spec; /* tags whose last published quality is out of range */
    _Atomic uint32_t tags_bad;         /* tags whose last published quality is Bad (NE107) */
};

/* A URL parsed once: scheme://host:port/path?k=v&k=v */
struct fb_url_kv {
    char *k, *v;
};
struct fb_url {
    char *scheme, *host, *path;
    int port; /* 0 when absent */
    struct fb_url_kv *q;
    int nq;
};

struct fb_gateway;
struct fb_conn;

struct fb_device {
    uint32_t idx;
    char *name;
    char *url_text;
    struct fb_url url;
    const struct fb_driver *drv;
    char *area, *line;   /* ISA-95 levels for topics */
    uint32_t first_tag, ntags; /* tags are contiguous: gw->tags[first_tag ..] */
    struct fb_group *groups;
    uint32_t ngroups;
    int64_t timeout_ns;  /* per request */
    int64_t delay_ns;    /* pause between requests */
    struct fb_conn *conn;
    struct fb_gateway *gw;
    void *drv_dev;       /* driver per-device state */
    struct fb_dev_metrics m;
    _Atomic int state;   /* enum fb_dev_state */
    int line_no, col;
};

/* One TCP connection or serial line, shared by the devices behind it; one
 * thread, one request in flight. */
struct fb_conn {
    char *key; /* "tcp:127.0.0.1:502", "rtu:/dev/ttyUSB0", "sim:press-01" */
    const struct fb_driver *drv;
    struct fb_device **devs;
    uint32_t ndevs;
    void *ctx; /* driver transport state */
    bool connected;
    int64_t next_try; /* monotonic: next connect attempt */
    /* Set by a driver's open() when it fails, cleared by the runtime before
     * each attempt: the quality the tags get (0 = BadCommunicationError) and
     * the least delay before the next attempt (0 = the usual back-off) — a
     * refused login is BadUserAccessDenied and retried after minutes. */
    uint32_t fail_q;
    int64_t fail_retry_ns;
    pthread_t thr;
    bool started;
    /* pending writes, handed over by the command router */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fb_write_req *wq_head, *wq_tail;
};

/* A write request travelling from the router to a connection thread and back. */
struct fb_write_req {
    struct fb_write_req *next;
    uint32_t tag;
    struct fb_value raw; /* already validated, converted and unscaled */
    char sbuf[256];      /* storage for string values */
    atomic_int refs; /* requester + connection thread */
    /* completion */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
    struct fb_err err;
};

/* ---------------------------------------------------------------- drivers */
/* A south driver: one static table per protocol (src/south/<name>/). */
struct fb_driver {
    const char *name;            /* "modbus", "sim" */
    const char *const *schemes;  /* URL schemes it serves, NULL-terminated */
    /* Check dev->url, set dev->drv_dev, and return in *conn_key (malloc'd) the
     * key of the connection this device uses: equal keys share one connection. */
    int (*device_init)(struct fb_device *dev, char **conn_key, struct fb_err *err);
    void (*device_free)(struct fb_device *dev);
    /* Parse tag->addr_text (and tag->order, tag->index, tag->type if given);
     * set tag->addr and, if tag->type is FB_T_NONE, the default type. */
    int (*parse_address)(struct fb_device *dev, struct fb_tag *tag, struct fb_err *err);
    void (*free_address)(struct fb_tag *tag);
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
    int (*write)(struct fb_device *dev, const struct fb_tag *t, const struct fb_value *v,
                 struct fb_err *err);
    void (*close)(struct fb_conn *c);
};
const struct fb_driver *fb_driver_for_scheme(const char *scheme);
extern const struct fb_driver fb_driver_modbus;
extern const struct fb_driver fb_driver_sim;

/* ------------------------------------------------------------------ sinks */
enum fb_delivery { FB_SENT = 0, FB_RETRY = 1, FB_DROP = 2 };

struct fb_sink_metrics {
    _Atomic uint64_t queued, sent, dropped, retries, errors;
    _Atomic int connected;
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
struct fb_sink {
    const char *name; /* "mqtt" */
    int (*open)(struct fb_sink_inst *s, struct fb_err *err);
    /* Accept a batch (data or device state).  The batch is borrowed until
     * send returns.  Delivery is reported later with fb_sink_done(). */
    int (*send)(struct fb_sink_inst *s, const struct fb_batch *b, uint64_t batch_id);
    /* Can it take a message now (connected, room in flight)?  With a store the
     * runtime only hands over buffered records while this says yes. */
    bool (*ready)(struct fb_sink_inst *s);
    /* Called on the sink thread about every 100 ms and when idle: housekeeping. */
    void (*tick)(struct fb_sink_inst *s);
    /* Publish an offline status and flush what can be flushed, then disconnect. */
    void (*close)(struct fb_sink_inst *s);
};
extern const struct fb_sink fb_sink_mqtt;

struct fb_sink_inst {
    const struct fb_sink *sink;
    char *name;
    void *cfg;  /* sink config (e.g. struct fb_mqtt_cfg *) */
    void *ctx;  /* sink runtime state */
    struct fb_gateway *gw;
    struct fb_sink_metrics m;
    /* queue from the pipeline */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fb_batch *q_head, *q_tail;
    uint32_t q_len, q_cap;
    pthread_t thr;
    bool started;
    /* store-and-forward (src/store), NULL when no buffer is configured */
    struct fb_buffer_cfg *buffer; /* owned; a copy of the global one with overrides */
    void *store;                  /* struct fb_store * */
    atomic_bool rewind;           /* a delivery failed: re-deliver the in-flight records */
};
/* Delivery report from a sink (any thread). */
void fb_sink_done(struct fb_sink_inst *s, uint64_t batch_id, enum fb_delivery d);

/* ---------------------------------------------------------------- gateway */
enum fb_log_format { FB_LOG_TEXT = 0, FB_LOG_JSON = 1 };

struct fb_gateway {
    char *id, *site;
    char *cfg_path;
    struct fb_tag *tags;
    uint32_t ntags;
    struct fb_device *devs;
    uint32_t ndevs;
    struct fb_conn *conns;
    uint32_t nconns;
    struct fb_sink_inst *sinks;
    uint32_t nsinks;
    /* commands */
    int64_t cmd_max_age_ns; /* refuse commands whose "ts" is older (0 = off) */
    bool cmd_allow_qos0;
    int64_t cmd_timeout_ns; /* how long a command may wait for its device */
    struct fb_buffer_cfg *buffer; /* global buffer settings, NULL = none */
    /* metrics endpoint ("127.0.0.1:9100"), NULL = off */
    char *metrics_listen;
    int64_t status_interval_ns;
    /* logging */
    int log_level;
    int log_format; /* enum fb_log_format */
    /* runtime */
    atomic_bool stop;
    struct fb_bus *bus;
    _Atomic uint64_t seq;
    int64_t started_ns;
};

/* Look-ups for the command path (not hot). */
struct fb_device *fb_gw_device(struct fb_gateway *gw, const char *name);
struct fb_tag *fb_gw_tag(struct fb_gateway *gw, const struct fb_device *d, const char *name);

#endif
