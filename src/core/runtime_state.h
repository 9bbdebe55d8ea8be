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
#include "core/health.h"
#include "core/live.h"
#include "core/log.h"
#include "core/model.h"
#include "store/store.h"

struct fb_router;
struct fb_certs;
struct fb_proc;
struct fb_model_map;
struct fb_cmd;
struct fb_fleet;
struct fb_edge;
struct fb_alarms;
struct fb_vib_rt;

/* Ids of batches sent past the store (device state) carry this bit, so their
 * delivery reports never touch the store's records. */
#define FB_DIRECT_ID (1ULL << 63)

/* The data batch this thread is sending past a memory queue (no buffer;
 * publish.c, runtime.c), set around its send(): when the send reports it
 * FB_RETRY at once (the connection broke between ready() and the publish),
 * fb_sink_done only notes it here and the caller queues the batch instead of
 * it counting as dropped.  id 0: none. */
struct fb_direct_send {
    uint64_t id;
    bool retry;
};
extern _Thread_local struct fb_direct_send fb_direct_send;

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

/* One connection thread.  Allocated per connection, so that a reload
 * (reload.c) can hand a running thread over to the new model's element. */
struct fb_conn_rt {
    pthread_t thr;
    bool started;
    struct fb_live live;        /* liveness, for the watchdog (core/live.h) */
    struct fb_batch_pool *pool; /* its raw batches, sized for the largest group of the connection; moves
                                 * with the connection when a reload keeps it */
    struct fb_conn *conn;       /* the model element the thread serves; a reload that keeps the
                           * connection points it at the new model's (while parked) */
    atomic_bool stop;           /* stop this connection alone (a reload removed or changed it) */
    char stop_reason[96];       /* its devices' offline reason then */
    /* reload: `park` asks the thread to hold still at the top of its loop (it
     * fails pending writes, sets `parked` under mu and signals park_cv, then
     * waits on cv until park is cleared) */
    atomic_bool park;
    bool parked; /* under mu */
    pthread_cond_t park_cv;
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

/* A translation of another config's ids, kept in memory by a reload for
 * the records still queued that were made under it (a memory queue has no
 * directory for the model-<fp> files; a disk store gets both). */
struct fb_fp_map {
    uint32_t fp;
    struct fb_model_map *map;
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

/* One sink thread: its queue from the pipeline and its store.  Allocated
 * per sink; a reload may move it to another slot of the sinks array.
 *
 * call_mu is held by whoever calls into the sink (send, ready, tick): the
 * sink thread for everything it takes from its queue or its store, and a
 * connection thread that hands a batch straight over (publish.c) while the
 * queue and the store are empty and the sink is ready.  Holding it from the
 * queue's head to the end of send() is what keeps batches in sequence order
 * whichever thread delivers them.  Lock order: fan_mu → call_mu → mu.
 * The direct path is only taken while the sink is neither parked nor
 * detached (read under mu with call_mu held); a reload that parks the sink
 * takes call_mu once after setting park, so no direct send is still inside
 * a sink it is about to close, rebuild or move (fb_rt_sink_park). */
struct fb_sink_rt {
    pthread_mutex_t call_mu;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fb_sink_inst *inst; /* the slot it serves (re-read by the thread after a park) */
    atomic_bool stop;          /* stop this sink alone (reload) */
    /* reload: `park` (under mu) — the thread empties its queue and holds still;
     * `detached` (under mu) — the sink is closed: the thread only stores what
     * arrives (no send, no tick) until it is attached again */
    bool park, parked;
    atomic_bool detached;
    pthread_cond_t park_cv;
    struct fb_fp_map *fpmaps; /* earlier configs' translations (reload), newest last */
    uint32_t nfpmaps;
    struct fb_qnode *head, *tail, *free; /* under mu */
    uint32_t len;                        /* under mu */
    pthread_t thr;
    bool started;
    struct fb_live live;    /* liveness, for the watchdog (core/live.h) */
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
    /* the model's rt pointers (groups, connections, sinks) point at objects
     * allocated one by one, so that a reload can keep some and free others */
    atomic_bool reboot;                           /* a sink accepted a remote reboot: re-execute after stopping */
    _Atomic(const struct fb_write_guard *) guard; /* asked by the router before command writes */
    /* reload (reload.c): readers outside the runtime's own threads (status,
     * /metrics, the fleet thread) hold the model lock for reading; a reload
     * swaps the model under it for writing, with every connection and sink
     * thread parked.  generation counts applied reloads. */
    pthread_rwlock_t model_lock;
    _Atomic uint32_t generation;
    struct fb_batch_pool **retired;     /* processed-batch pools of earlier configs (freed at the end: */
    uint32_t nretired;                  /* a batch may still be out when its pool is replaced) */
    struct fb_batch_pool **retired_raw; /* stopped connections' raw pools with a batch still out */
    uint32_t nretired_raw;              /* (conn_pool_release: freed once idle) */
    /* gateway-level commands (router.c hands them here; fleet.c sets it) */
    void (*gw_cmd)(struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *len);
    pthread_mutex_t gw_cmd_mu; /* held while one runs (a reload, a recommission): shutdown waits for it */
    struct fb_fleet *fleet;    /* fleet.c's state: identity, lifecycle, remote config, health */
    /* what the status remembers between calls (metrics.c), under status_mu */
    pthread_mutex_t status_mu;
    struct fb_err_seen *seen; /* per device: when its error counter last grew */
    uint32_t nseen;
    struct fb_drain_seen *drain; /* per sink: the last drain-rate measurement */
    uint32_t ndrain;
    /* the gateway as a fleet member (fleet.c writes, the status reads; under status_mu) */
    _Atomic int gw_state;        /* enum fb_gw_state (health.h); the router reads it without the lock */
    char gw_state_reason[160];   /* why, for error and maintenance ("" = none) */
    char *config_json;           /* the status's "config" object, made by fleet.c (NULL = none) */
    char *caps_json;             /* the status's info.capabilities array, made by fleet.c (NULL = none) */
    struct fb_health health;     /* the last sample of the box (health.ts 0: none yet) */
    _Atomic uint32_t status_gen; /* +1 when the status changed: the MQTT sink publishes it at once */
    _Atomic uint64_t reloads_ok, reloads_failed;
    uint32_t sources_started;
    pthread_mutex_t stored_mu; /* stored_cv: a sink's stored_seq advanced */
    pthread_cond_t stored_cv;
    atomic_int stored_waiters;
};

#endif
