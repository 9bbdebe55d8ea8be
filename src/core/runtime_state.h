/* runtime_state.h — the running gateway's private state: threads, queues,
 * pools and locks, behind the model's `rt` pointers (model.h).  Only the
 * runtime (runtime.c), the status/metrics code that reports on it
 * (metrics.c, http.c) and the router include this; drivers and sinks talk to
 * the runtime through runtime.h.
 */
#ifndef FB_RUNTIME_STATE_H
#define FB_RUNTIME_STATE_H
#include <pthread.h>
#include <stdatomic.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/model.h"
#include "store/store.h"

struct fb_router;
struct fb_certs;
struct fb_proc;
struct fb_model_map;
struct fb_edge;
struct fb_alarms;
struct fb_vib_rt;

/* Ids of batches sent past the store (device state) carry this bit, so their
 * delivery reports never touch the store's records. */
#define FB_DIRECT_ID (1ULL << 63)

/* Status memory (metrics.c): NE107's "errors grew within the status
 * interval" and the buffers' drain rates need the previous observation. */
struct fb_err_seen {
    uint64_t errors; /* error counter at the last observation */
    int64_t when_ns; /* when it was last seen to grow (0 = never) */
};
struct fb_drain_seen {
    const void *store; /* the store the slot belongs to */
    uint64_t acked;    /* acked count at the last measurement */
    int64_t when_ns;   /* monotonic time of the last measurement, 0 = none */
    double rate;       /* messages/s between the last two measurements */
};

/* One poll group while running. */
struct fb_group_rt {
    int64_t next_due;           /* monotonic ns */
    struct fb_batch_pool *pool; /* raw batches: read → pipeline (its connection's, fb_conn_rt) */
    bool plain;                 /* no tag has processing: the pipeline runs in place (fb_proc_inplace) */
    _Atomic uint64_t overruns;  /* cycles started late by more than a period */
};

/* A write request travelling from the router to a connection thread and back.
 * An asynchronous one (fb_conn_write_async: a control loop's output) is
 * owned by its maker and reused: no refs, no waiter; the connection thread
 * calls on_done and clears busy. */
struct fb_write_req {
    struct fb_write_req *next;
    uint32_t tag;
    struct fb_value raw; /* already validated, converted and unscaled */
    char sbuf[256];      /* storage for string values */
    atomic_int refs;     /* requester + connection thread */
    /* completion */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
    struct fb_err err;
    /* asynchronous */
    void (*on_done)(void *ctx, int rc, const struct fb_err *err);
    void *done_ctx;
    atomic_bool busy; /* queued or being written */
    bool quiet;       /* no re-poll of the tag's group after it (written every cycle) */
};

struct fb_write_guard; /* plugin.h */

/* One connection thread. */
struct fb_conn_rt {
    pthread_t thr;
    bool started;
    struct fb_batch_pool *pool; /* one raw batch, sized for the largest group of the connection */
    bool connected;
    int64_t next_try; /* monotonic: next connect attempt */
    /* what a failing open() reported (fb_conn_failed), cleared before each attempt */
    uint32_t fail_q;
    int64_t fail_retry_ns;
    /* pending writes, handed over by the command router */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fb_write_req *wq_head, *wq_tail;
};

/* Batches can be in several sink queues at once, so queues hold small nodes. */
struct fb_qnode {
    struct fb_qnode *next;
    struct fb_batch *b;
};

/* The edge thread's input (edge/edge.c): the processed data batches of the
 * devices whose tags feed a computed tag, an alarm or a script, queued by
 * fb_publish like a sink's; wake is set when something other than a batch
 * needs the thread (an alarm timer was set by another thread). */
struct fb_edge_q {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fb_qnode *head, *tail, *free; /* under mu */
    uint32_t len;                        /* under mu */
    bool wake;                           /* under mu */
    const uint8_t *want;                 /* per device: 1 = queue its data batches (set before start) */
};

/* One sink thread: its queue from the pipeline and its store.
 *
 * call_mu is held by whoever calls into the sink (send, ready, tick): the
 * sink thread for everything it takes from its queue or its store, and a
 * connection thread that hands a batch straight over (publish.c) while the
 * queue and the store are empty and the sink is ready.  Holding it from the
 * queue's head to the end of send() is what keeps batches in sequence order
 * whichever thread delivers them.  Lock order: fan_mu → call_mu → mu. */
struct fb_sink_rt {
    pthread_mutex_t call_mu;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fb_qnode *head, *tail, *free; /* under mu */
    uint32_t len;                        /* under mu */
    pthread_t thr;
    bool started;
    struct fb_store *store; /* the on-disk queue, or the memory queue without a buffer */
    atomic_bool rewind;     /* a delivery failed: re-deliver the in-flight records */
    bool mem_only;          /* no buffer configured: nothing waiting and the sink ready →
                             * batches go straight over (no crash safety is promised, so
                             * the queue is only for when it is needed) */
    /* store-and-forward */
    struct fb_buf enc;        /* record being appended */
    struct fb_batch *scratch; /* record being delivered */
    uint32_t fp;              /* this config's model fingerprint */
    struct fb_model_map *map; /* for records of another config */
    uint32_t map_fp;
    char dir[1024];
    uint32_t drain_rate; /* messages/s, 0 = unlimited */
    double tokens;       /* drain-rate bucket */
    int64_t tokens_ns;
    struct fb_ratelimit rl_drop, rl_full;
    uint64_t undecodable;
    /* sources waiting for their batches to be stored (fb_source_wait_stored) */
    uint64_t taken_seq;          /* sink thread: seq of the last batch taken from the queue */
    _Atomic uint64_t stored_seq; /* everything up to here is in the store (flushed) or handed over */
};

/* The gateway while running (gw->rt). */
struct fb_rt {
    atomic_bool stop;       /* a stop was requested */
    atomic_bool conns_stop; /* the connection threads stop (after the services' quiesce) */
    atomic_bool sinks_stop;
    int64_t started_ns; /* UTC */
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    pthread_mutex_t fan_mu; /* sequence numbers and sink queues advance together */
    _Atomic uint64_t seq;
    bool seq_persisted; /* seq comes from a counter file that survives kill -9 */
    struct fb_store_seq store_seq;
    struct fb_ratelimit rl_seq;
    struct fb_proc *proc;
    struct fb_batch_pool *out_pool; /* processed batches: pipeline → sinks */
    struct fb_router *router;       /* router.c */
    struct fb_edge *edge;           /* edge/edge.c: computed tags, alarms, scripts (NULL: none configured) */
    struct fb_edge_q *edge_q;       /* its input queue (NULL: no edge thread) */
    struct fb_alarms *alarms;       /* edge/alarms.c: the alarm table (NULL: no alarms) */
    struct fb_certs *certs;         /* certs.c: the certificate expiry watch, NULL when nothing is watched */
    struct fb_vib_rt *vib;          /* vib/vib.c: vibration analysis (NULL: no waveform tags) */
    void **svc_state;               /* each running service's state (gw->services order) */
    /* the runtime state of every poll group, connection and sink (the model's rt pointers) */
    struct fb_group_rt *groups;
    struct fb_conn_rt *conns;
    struct fb_sink_rt *sinks;
    atomic_bool reboot;                           /* a sink accepted a remote reboot: re-execute after stopping */
    _Atomic(const struct fb_write_guard *) guard; /* asked by the router before command writes */
    /* what the status remembers between calls (metrics.c), under status_mu */
    pthread_mutex_t status_mu;
    struct fb_err_seen *seen; /* per device: when its error counter last grew */
    uint32_t nseen;
    struct fb_drain_seen *drain; /* per sink: the last drain-rate measurement */
    uint32_t ndrain;
    uint32_t sources_started;
    pthread_mutex_t stored_mu; /* stored_cv: a sink's stored_seq advanced */
    pthread_cond_t stored_cv;
    atomic_int stored_waiters;
};

#endif
