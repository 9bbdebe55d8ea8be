/* loop.h — one control loop: its configuration, its state while running,
 * and what it does in one cycle (loop.c), without threads, clocks or I/O.
 *
 * The control thread (control.c) gathers a cycle's inputs — the latest
 * processed value of the process-value tag and its age, whether its device
 * is connected, the remote set point, interlocks, the command source — into
 * struct fb_loop_in, calls fb_loop_cycle, and writes the output it returns.
 * Everything that decides the output is here, so the unit tests can drive a
 * loop through every state with made-up inputs (tests/unit/test_loop.c).
 *
 * What a cycle does, in this order (docs/control.md, "Order of operations"):
 *   1. commands that arrived since the last cycle: mode, set point, manual
 *      output, tuning (bumpless: fb_pid_retune);
 *   2. a watchdog trip since the last cycle: manual at the safe value;
 *   3. the set point: the remote set-point tag when it is good, limits,
 *      tracking of the measurement in manual (sp_track), the ramp;
 *   4. the first condition that holds decides the output:
 *        interlock active        → safe value          (state "interlock")
 *        measurement's device lost (offline, BadCommunicationError …)
 *                                → safe value          (state "comm_loss")
 *        measurement stale (no value, Bad, older than `stale` cycles)
 *                                → `fallback`: hold / safe / manual (state "stale")
 *        command source lost     → `on_north_loss`     (state "north_loss")
 *        output's device offline → hold                (state "output_lost")
 *        else auto → PID step, manual → the manual output (state "ok");
 *      every case but the PID step tracks (fb_pid_track), so the return to
 *      automatic is bumpless;
 *   5. the snapshot others read (telemetry, status) is updated.
 *
 * Threads: fb_loop_cycle and everything it touches run on the control
 * thread only; commands arrive through fb_loop_command from the loop
 * device's connection thread (a mutex and a flag); the snapshot is read by
 * anyone under its mutex.
 */
#ifndef FB_LOOP_H
#define FB_LOOP_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "control/pid.h"
#include "core/cfg.h"
#include "core/config_dev.h"

enum fb_loop_mode { FB_MODE_MANUAL = 0, FB_MODE_AUTO = 1 };
/* what a condition makes the loop do (fallback, on_north_loss) */
enum fb_loop_act { FB_ACT_HOLD = 0, FB_ACT_SAFE, FB_ACT_MANUAL, FB_ACT_NONE };
enum fb_loop_state {
    FB_LS_INIT = 0, /* not run yet */
    FB_LS_OK,
    FB_LS_STALE,
    FB_LS_COMM_LOSS,
    FB_LS_INTERLOCK,
    FB_LS_NORTH_LOSS,
    FB_LS_OUTPUT_LOST,
    FB_LS_STOPPED, /* the gateway stopped: the safe value was written */
    FB_LS__COUNT
};
extern const char *const fb_loop_state_names[]; /* "init", "ok", "stale", ... */

/* The tags of a loop's device, in this order. */
enum fb_loop_field {
    FB_LF_PV = 0,
    FB_LF_SP,        /* rw: the set point (a write sets the target; the ramp moves sp) */
    FB_LF_SP_TARGET, /* where the ramp goes */
    FB_LF_OUT,       /* rw in manual */
    FB_LF_MODE,      /* rw: "auto" / "manual" */
    FB_LF_STATE,     /* enum fb_loop_state's name */
    FB_LF_SAT,       /* "none" / "high" / "low" */
    FB_LF_KP,        /* rw */
    FB_LF_TI,        /* rw, seconds */
    FB_LF_TD,        /* rw, seconds */
    FB_LF__COUNT
};
extern const char *const fb_loop_field_names[];

struct fb_loop;
/* One `control.loops` entry (control.c reads it). */
struct fb_loop_cfg {
    char *name, *area, *line; /* area/line NULL = those of the output's device */
    struct fb_cfg_mark mark;
    uint32_t index; /* in control.loops */
    /* tags, "device/tag" as written; ids after bind */
    char *pv_name, *out_name, *sp_name;
    struct fb_cfg_mark pv_m, out_m, sp_m;
    uint32_t pv, out, sp_tag;
    bool has_sp_tag;
    /* control */
    struct fb_pid_cfg pid;
    int64_t cycle_ns;
    int mode0; /* enum fb_loop_mode at start */
    double sp0;
    bool has_sp_min, has_sp_max;
    double sp_min, sp_max, sp_rate; /* limits; ramp in units/s (0 = steps) */
    bool sp_track;                  /* in manual the set point follows the measurement */
    double safe, out0;              /* safe value; output at start */
    uint32_t stale_cycles;          /* older than this many cycles = stale */
    int fallback;                   /* enum fb_loop_act (not NONE) */
    int on_north_loss;              /* enum fb_loop_act */
    int64_t refresh_ns;             /* rewrite an unchanged output this often (0 = changes only) */
    int64_t publish_ns;             /* the loop device's poll period */
    /* its device (struct fb_dev_spec: made by the config loader) */
    struct fb_tag_spec tags[FB_LF__COUNT];
    struct fb_dev_spec spec;
    char url[160];
    /* the running loop (control.c sets it for the lifetime of the service) */
    _Atomic(struct fb_loop *) rt;
};

/* What the control thread read for this cycle. */
struct fb_loop_in {
    double h;       /* seconds since the loop's previous cycle */
    bool have_pv;   /* the measurement has a value */
    double pv;      /* in engineering units */
    uint32_t pv_q;  /* its quality */
    int64_t pv_age; /* ns since the pipeline took it */
    bool pv_lost;   /* its device is offline or the quality says the link is down */
    bool have_sp;   /* a good remote set point (sp_tag) */
    double sp_in;
    const char *interlock; /* the name of an active interlock holding the loop, or NULL */
    bool interlock_manual; /* that interlock hands the loop back in manual */
    bool north_lost;       /* the command source is lost (north_loss) */
    bool out_lost;         /* the output's device is offline */
    bool watchdog_trip;    /* the watchdog tripped since the last cycle */
};

/* A command from the loop device (fields in `mask`). */
enum { FB_LC_MODE = 1, FB_LC_SP = 2, FB_LC_OUT = 4, FB_LC_KP = 8, FB_LC_TI = 16, FB_LC_TD = 32 };
struct fb_loop_cmd {
    unsigned mask;
    int mode;
    double sp, out, kp, ti, td;
};

/* What others see (telemetry, status, metrics). */
struct fb_loop_snap {
    bool have_pv;
    double pv, sp, sp_target, out, kp, ti, td;
    uint32_t pv_q;
    int64_t pv_age;
    int mode, state, sat;
    const char *interlock; /* the interlock holding it, NULL */
    uint64_t cycles;
};

struct fb_loop {
    const struct fb_loop_cfg *cfg;
    /* control thread only */
    struct fb_pid_cfg pid; /* the tuning now */
    struct fb_pid st;
    int mode, state;
    double sp, sp_target;      /* working set point and the ramp's target */
    double man_out;            /* the manual output */
    double out;                /* the output of the last cycle */
    bool have_good;            /* a good measurement was seen */
    double pv_good;            /* the last good measurement */
    const char *interlock_was; /* the interlock of the previous cycle */
    bool interlock_manual_was;
    uint64_t cycles;
    /* commands (fb_loop_command, any thread) */
    pthread_mutex_t cmd_mu;
    struct fb_loop_cmd cmd; /* under cmd_mu */
    atomic_bool cmd_pending;
    _Atomic(const char *) held_by; /* the interlock holding the loop (set each cycle) */
    /* the snapshot */
    pthread_mutex_t snap_mu;
    struct fb_loop_snap snap;
};

/* Set up a loop for its first cycle (mode, set point and output from the
 * config; the output starts at out0). */
void fb_loop_init(struct fb_loop *L, const struct fb_loop_cfg *c);
void fb_loop_destroy(struct fb_loop *L);
/* One cycle: returns the output to write.  *force is set when it must be
 * written even if equal to the last one (the entry into a safe state). */
double fb_loop_cycle(struct fb_loop *L, const struct fb_loop_in *in, bool *force);
/* After the gateway stopped the loop: state "stopped", output = safe. */
void fb_loop_stopped(struct fb_loop *L);
/* A write to the loop device's tag `field` (router-validated for type and
 * range): checked against the loop's state (an interlock holds it; the
 * output is written in manual only; the set point comes from a tag …),
 * then queued for the next cycle.  0, or an error with the reason. */
int fb_loop_command(struct fb_loop *L, int field, const struct fb_value *v, struct fb_err *err);
void fb_loop_snapshot(struct fb_loop *L, struct fb_loop_snap *out);
/* "none" / "high" / "low" */
const char *fb_loop_sat_name(int sat);
#endif
