/* batch.h — samples and batches, the unit in which data moves (batch.c).
 *
 * One batch holds the samples of one device for one poll cycle, stored
 * inline, with strings in a per-batch arena sized at start-up, so nothing is
 * allocated per sample.  Batches come from bounded pools and are reference
 * counted, so one processed batch can sit in several sinks' queues at once.
 */
#ifndef FB_BATCH_H
#define FB_BATCH_H
#include <stdatomic.h>

#include "core/fb.h"

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
    FB_BATCH_DATA = 0,         /* samples of one device */
    FB_BATCH_DEVSTATE = 1,     /* device connection state changed: see dev_state */
    FB_BATCH_ALARM = 2,        /* an alarm of the device changed state: see ev (src/edge/alarms.c) */
    FB_BATCH_NAMED = 3,        /* samples of tags the model does not know (received by a source
                                * such as ingest): names instead of ids, see names[] */
    FB_BATCH_NAMED_STATUS = 4, /* a gateway status document received by a source: one string
                                * sample holding the JSON (docs/mqtt.md), names[] as above */
};
/* Named batches: which device the samples belong to, as names.  Each is a
 * NUL-terminated string in the batch's arena; names[k] is its offset, and a
 * sample's `tag` is the arena offset of the tag's name. */
enum { FB_BN_GATEWAY, FB_BN_SITE, FB_BN_AREA, FB_BN_LINE, FB_BN_DEVICE, FB_BN__N };
enum fb_dev_state { FB_DEV_CONNECTING = 0, FB_DEV_ONLINE = 1, FB_DEV_OFFLINE = 2 };
/* Room for a device's offline reason: a whole struct fb_err message fits, so
 * hints such as "…; run: chmod 600 /etc/fieldbridge/opcua.pass" arrive whole
 * (longer text is cut at a word, with an ellipsis: fb_text_cut). */
#define FB_REASON_LEN 256

/* An alarm transition (FB_BATCH_ALARM; docs/alarms.md).  A batch carries
 * one, with no samples; its text (who acknowledged and the comment, or a
 * script's message) is in the batch's reason, "by\ncomment". */
enum fb_alarm_event {
    FB_AE_NONE = 0,
    FB_AE_RAISED,       /* became active */
    FB_AE_CLEARED,      /* returned to normal (still unacknowledged if it was) */
    FB_AE_ACKED,        /* an operator acknowledged it */
    FB_AE_SHELVED,      /* an operator shelved it (until ev.until) */
    FB_AE_UNSHELVED,    /* by command, or the shelve time ran out */
    FB_AE_SUPPRESSED,   /* its suppression condition became true */
    FB_AE_UNSUPPRESSED, /* … and false again */
    FB_AE_FLOOD,        /* the device's flood limit held back ev.count events (alarm = FB_ALARM_NONE) */
    FB_AE_MESSAGE,      /* a script's event: the text is the reason (alarm = FB_ALARM_NONE) */
    FB_AE__COUNT
};
/* Alarm state flags (ev.flags, and the alarm table's live state). */
enum { FB_AS_ACTIVE = 1u << 0, FB_AS_UNACKED = 1u << 1, FB_AS_SHELVED = 1u << 2, FB_AS_SUPPRESSED = 1u << 3 };
#define FB_ALARM_NONE UINT32_MAX

struct fb_alarm_ev {
    uint32_t alarm; /* index in gw->alarms, or FB_ALARM_NONE */
    uint8_t event;  /* enum fb_alarm_event */
    uint8_t flags;  /* FB_AS_* after the event */
    uint32_t count; /* FB_AE_FLOOD: events held back */
    double value;   /* the watched value at the transition (NaN: none) */
    int64_t since;  /* UTC ns: when the alarm last became active (0: never) */
    int64_t until;  /* UTC ns: FB_AE_SHELVED: end of the shelve; FB_AE_FLOOD: window length (ns) */
};

struct fb_batch {
    struct fb_batch *next; /* intrusive link for queues and pools */
    struct fb_batch_pool *pool;
    atomic_int refs;
    uint8_t kind;      /* enum fb_batch_kind */
    uint8_t dev_state; /* enum fb_dev_state, for FB_BATCH_DEVSTATE */
    uint8_t blocks;    /* some sample holds a waveform block (a reference each, released with the batch) */
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
    char reason[FB_REASON_LEN]; /* why a device went offline, for status messages; alarm event text */
    struct fb_alarm_ev ev;      /* FB_BATCH_ALARM */
    uint32_t names[FB_BN__N];   /* named kinds only: arena offsets (above) */
};

static inline bool fb_batch_named(const struct fb_batch *b) { return b->kind >= FB_BATCH_NAMED; }
/* The string at arena offset off of a named batch. */
static inline const char *fb_batch_str(const struct fb_batch *b, uint32_t off) { return b->arena + off; }
/* Copies len bytes and a NUL into the arena; returns the offset, or
 * UINT32_MAX when it does not fit. */
uint32_t fb_batch_name_add(struct fb_batch *b, const char *p, uint32_t len);

struct fb_batch *fb_batch_new(uint32_t cap, uint32_t cap_stats, uint32_t arena_cap);
void fb_batch_free(struct fb_batch *b);
void fb_batch_reset(struct fb_batch *b);
/* Appends a sample and returns it (NULL when full: an invariant, the size is
 * computed at start-up).  Copies string bytes into the arena; takes a
 * reference on a block (FB_T_BLOCK), released when the batch is reset,
 * returned to its pool or freed. */
struct fb_sample *fb_batch_add(struct fb_batch *b, uint32_t tag, uint32_t quality, int64_t ts,
                               const struct fb_value *v);
/* Copies len bytes into the arena; NULL when it does not fit. */
const char *fb_batch_strdup(struct fb_batch *b, const char *p, uint32_t len);

/* A bounded free list of equally sized batches.  get() blocks while none is
 * free (back-pressure), returns NULL after fb_batch_pool_close(). */
struct fb_batch_pool;
struct fb_batch_pool *fb_batch_pool_new(uint32_t count, uint32_t cap, uint32_t cap_stats, uint32_t arena_cap);
struct fb_batch *fb_batch_pool_get(struct fb_batch_pool *p);
struct fb_batch *fb_batch_pool_tryget(struct fb_batch_pool *p);
void fb_batch_pool_close(struct fb_batch_pool *p);
/* Every batch of the pool is back in it (none referenced anywhere). */
bool fb_batch_pool_idle(struct fb_batch_pool *p);
void fb_batch_pool_free(struct fb_batch_pool *p);
/* Drop one reference; the last one returns the batch to its pool (or frees it). */
void fb_batch_unref(struct fb_batch *b);
static inline void fb_batch_ref(struct fb_batch *b) { atomic_fetch_add(&b->refs, 1); }

#endif
