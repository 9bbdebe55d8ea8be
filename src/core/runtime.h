/* runtime.h — the running gateway (runtime.c): one thread per connection
 * (polling, pipeline, writes), one per sink, the command router and the
 * north services.  What plug-ins may ask of it is plugin.h.  See
 * docs/architecture.md. */
#ifndef FB_RUNTIME_H
#define FB_RUNTIME_H
#include <stddef.h>

#include "core/model.h"

/* Start everything; returns when all threads run (sinks connect in the background). */
int fb_runtime_start(struct fb_gateway *gw, struct fb_err *err);
/* The same, with what the fleet component (fleet.c) puts in place before any
 * thread starts: the handler of commands to the gateway itself, its state,
 * the lifecycle state to start in (-1: online), and what to render into the
 * status before the first sink can publish it (identity, capabilities). */
struct fb_cmd;
struct fb_proc;
struct fb_fleet;
struct fb_runtime_ext {
    void (*gw_cmd)(struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *len);
    struct fb_fleet *fleet;
    int state;
    void (*status_init)(struct fb_fleet *f); /* called once the runtime state exists, before the sinks */
};
int fb_runtime_start_ext(struct fb_gateway *gw, const struct fb_runtime_ext *ext, struct fb_err *err);
/* Ask to stop (signal-safe: only sets a flag and wakes the threads). */
void fb_runtime_request_stop(struct fb_gateway *gw);
/* Block until stop is requested, then shut down in order: devices, router,
 * sinks (offline status, flush), services; frees the runtime state. */
void fb_runtime_wait(struct fb_gateway *gw);

/* ---- The runtime's parts that a config reload (reload.c) puts together;
 * not for plug-ins.  All of them run on the reload's thread (the router's). */
/* Poll groups of device d of model gw: runtime state (their raw batch pool is
 * their connection's, made by fb_rt_conn_start). */
int fb_rt_groups_new(const struct fb_gateway *gw, struct fb_device *d, struct fb_err *err);
void fb_rt_groups_free(struct fb_device *d);
/* Connection c of the running gateway: runtime state (also its devices'
 * groups where missing) and its thread. */
int fb_rt_conn_start(struct fb_gateway *gw, struct fb_conn *c, struct fb_err *err);
/* Stop c's thread alone (its devices go offline with `reason`, NULL: the
 * one set in c->rt->stop_reason), join it, free its runtime state and its
 * devices' groups'. */
void fb_rt_conn_stop(struct fb_gateway *gw, struct fb_conn *c, const char *reason);
/* Ask c's thread to hold still at the top of its loop (it fails its pending
 * writes first); false when it did not by the monotonic deadline (unpark it
 * then) or the gateway is stopping. */
bool fb_rt_conn_park(struct fb_conn *c, int64_t deadline);
void fb_rt_conn_unpark(struct fb_conn *c);
/* Sink s: runtime state and store for the records of model `model`; then
 * open it and start its thread (on the running model). */
int fb_rt_sink_prepare(const struct fb_gateway *model, struct fb_sink_inst *s, struct fb_err *err);
int fb_rt_sink_run(struct fb_sink_inst *s, struct fb_err *err);
/* Ask s's thread to empty its queue and hold still; false at the deadline. */
bool fb_rt_sink_park(struct fb_sink_inst *s, int64_t deadline);
void fb_rt_sink_unpark(struct fb_sink_inst *s);
/* Detached, the thread only stores what arrives (the sink is closed); set while parked. */
void fb_rt_sink_set_detached(struct fb_sink_inst *s, bool detached);
/* Stop s's thread alone (detach it first), free its runtime state and store. */
void fb_rt_sink_stop(struct fb_sink_inst *s);
/* Whether s's store takes every record of model `model`. */
bool fb_rt_sink_store_fits(const struct fb_gateway *model, const struct fb_sink_inst *s);
/* Reopen s's store for model `model` (new buffer settings): records move over. */
int fb_rt_sink_store_reopen(const struct fb_gateway *model, struct fb_sink_inst *s, struct fb_err *err);
/* The directory of the gateway's persistent state (the sequence counter,
 * the alarm journal): the gateway's buffer, else the first sink's; NULL: none. */
const char *fb_rt_state_dir(const struct fb_gateway *gw);
/* A processed-batch pool for model gw; whether the running one fits gw.  Only
 * groups that proc (the pipeline state made for gw) does not process in place
 * need processed batches. */
struct fb_batch_pool *fb_rt_out_pool_new(const struct fb_gateway *gw, const struct fb_proc *proc);
bool fb_rt_out_pool_fits(const struct fb_gateway *running, const struct fb_gateway *gw, const struct fb_proc *proc);
#endif
