/* sim_gen.h — the simulator's signal generators, without any driver glue.
 *
 * A generator is parsed once from a tag address ("sine:amp=10,period=60s")
 * and then evaluated per read.  Periodic generators (sine, square, ramp) are
 * pure functions of the wall-clock time, so a test can predict them; walk,
 * noise, counter and the fault injection use a per-tag xorshift64* PRNG, so
 * a fixed seed gives a fixed sequence.  See docs/simulator.md.
 */
#ifndef FB_SIM_GEN_H
#define FB_SIM_GEN_H
#include <stdbool.h>
#include <stdint.h>
#include "core/model.h"
#include "south/sim/sim_motor.h"

enum fb_sim_kind {
    FB_SIM_SINE = 0,
    FB_SIM_SQUARE,
    FB_SIM_RAMP,
    FB_SIM_WALK,
    FB_SIM_NOISE,
    FB_SIM_CONST,
    FB_SIM_COUNTER,
    FB_SIM_MEMORY,
    FB_SIM_MOTOR, /* waveform tags only: a motor's vibration (sim_motor.h) */
    FB_SIM__COUNT
};

struct fb_sim_gen {
    uint8_t kind;   /* enum fb_sim_kind */
    bool is_string; /* const:"text" / memory:initial="text": a string source */
    /* parameters (meaning depends on kind, see fb_sim_gen_parse) */
    double amp, offset, phase_rad; /* sine */
    double low, high, duty;        /* square */
    double min, max;               /* ramp, walk (clamp) */
    double start, step;            /* walk, counter */
    double mean, stddev;           /* noise */
    int64_t period_ns;             /* sine, square, ramp */
    double bias;                   /* added to periodic signals after a write */
    /* fault injection: probabilities per read */
    double spike_p, spike_amp;
    double stuck_p;
    int64_t stuck_ns;
    double dropout_p;
    double oor_p, oor_value;
    /* state */
    uint64_t rng;
    double cur; /* walk / counter / const / memory numeric value */
    bool stuck;
    int64_t stuck_until; /* ns UTC */
    double stuck_val;
    char *str; /* string value (const/memory strings), heap, cap str_cap */
    uint32_t str_len, str_cap;
    struct fb_motor motor; /* FB_SIM_MOTOR */
};

/* The result of one read. */
struct fb_sim_out {
    double d; /* numeric value (unused when is_string) */
    bool is_string;
    const char *s; /* string bytes, valid until the next read/write */
    uint32_t slen;
    uint32_t quality; /* FB_Q_GOOD or FB_Q_BAD_COMM (dropout) */
};

/* Parse a generator spec.  g is fully initialised (zeroed first); on error
 * err explains and lists the valid generators or keys.  Strings owned by g
 * are released with fb_sim_gen_free.  Returns 0 or FB_EINVAL / FB_ENOMEM. */
int fb_sim_gen_parse(const char *spec, struct fb_sim_gen *g, struct fb_err *err);
void fb_sim_gen_free(struct fb_sim_gen *g);
/* Seed the PRNG (splitmix64 of seed and index); also resets walk/counter to their start. */
void fb_sim_gen_seed(struct fb_sim_gen *g, uint64_t seed, uint64_t index);
/* The fault-free value of a periodic generator at t_ns (UTC ns): a pure
 * function of t for sine, square and ramp; the current value for the others. */
double fb_sim_gen_base(const struct fb_sim_gen *g, int64_t t_ns);
/* One read at time t_ns: advances walk/noise/counter and applies faults. */
void fb_sim_gen_read(struct fb_sim_gen *g, int64_t t_ns, struct fb_sim_out *out);
/* A write: memory/const/walk/counter take the value; noise takes it as its
 * mean; periodic signals are re-centred on it (the written value becomes the
 * middle of the signal).  String sources take strings only (FB_EINVAL
 * otherwise), numeric sources numbers only.  FB_ERANGE when a string exceeds
 * the capacity. */
int fb_sim_gen_write_num(struct fb_sim_gen *g, double v, struct fb_err *err);
int fb_sim_gen_write_str(struct fb_sim_gen *g, const char *s, uint32_t len, struct fb_err *err);
/* The generator names, NULL-terminated (for messages and docs). */
extern const char *const fb_sim_gen_names[];
#endif
