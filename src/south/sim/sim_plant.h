/* sim_plant.h — simulated processes that react to what is written to them,
 * so control loops run end to end without hardware (sim_plant.c).
 *
 * A plant is a tag of a sim device whose value is the state of a small
 * dynamic model driven by another tag of the same device (`input=`): usually
 * a `memory:` tag the controller writes (the actuator), or another plant (a
 * valve whose position feeds a tank).  The models, all in continuous time:
 *
 *   fopdt   first order plus dead time: tau·y' = y0 + k·u(t − dead) − y
 *   heater  a heated vessel: c·T' = p_max·u(t − dead)/100 − ua·(T − ambient)
 *           (u = heater power in %, T in °C; the same FOPDT with
 *           k = p_max/(100·ua), tau = c/ua, y0 = ambient)
 *   tank    a tank drained through an orifice: area·h' = q_max·u(t − dead)/100
 *           − k_out·√h, h in [0, height] (u = inlet valve opening in %)
 *   valve / motor   an actuator with travel time: the position follows the
 *           command at most (max − min)/travel per second, within [min, max]
 *
 * Linear models are advanced with their exact solution over every interval
 * in which the (delayed) input is constant, so a step response matches the
 * textbook curve to rounding; the tank uses fourth-order Runge–Kutta in steps
 * of at most 10 ms.  The input's history is kept as a ring of (time, value)
 * changes for the dead time (FB_PLANT_HIST changes; past that the oldest are
 * dropped, which coarsens an input that changes faster than dead/4096).
 *
 * Time is whatever the caller passes in ns (the sim driver: wall clock, the
 * Modbus plant peer: monotonic); nothing here reads a clock or allocates
 * after fb_plant_parse.  Used by the sim driver (sim.c) and by the Modbus
 * plant peer (tests/peers/plant_server.c).
 */
#ifndef FB_SIM_PLANT_H
#define FB_SIM_PLANT_H
#include <stdbool.h>
#include <stdint.h>

#include "core/fb.h"

enum fb_plant_kind { FB_PLANT_FOPDT = 0, FB_PLANT_HEATER, FB_PLANT_TANK, FB_PLANT_VALVE, FB_PLANT__COUNT };

#define FB_PLANT_HIST 4096

struct fb_plant_change {
    int64_t t;
    double u;
};

struct fb_plant {
    uint8_t kind; /* enum fb_plant_kind */
    /* parameters (see the table in docs/simulator.md) */
    double k, tau_s, y0;               /* fopdt */
    double p_max, c, ua, ambient;      /* heater */
    double area, q_max, k_out, height; /* tank */
    double travel_s, lo, hi;           /* valve, motor */
    double dead_s;                     /* every kind */
    double initial;                    /* the state at the first advance */
    char input[64];                    /* the input tag's name ("" = none: u stays 0) */
    /* state */
    double y;      /* output at time t */
    int64_t t;     /* time of y; 0 = not started (the first advance starts it) */
    double u_last; /* the input's last recorded value */
    struct fb_plant_change hist[FB_PLANT_HIST];
    uint32_t hhead, hn; /* ring: oldest at hhead */
};

/* Whether `spec` names a plant ("heater:..." etc.). */
bool fb_plant_is_spec(const char *spec);
/* Parse "KIND:key=value,..."; p is zeroed first.  0, or FB_EINVAL with the
 * valid kinds or keys in err. */
int fb_plant_parse(const char *spec, struct fb_plant *p, struct fb_err *err);
/* The input changes to u at time t (call fb_plant_advance(p, t) first). */
void fb_plant_input(struct fb_plant *p, int64_t t, double u);
/* Advance the state to time t (no-op for t <= p->t); returns the output. */
double fb_plant_advance(struct fb_plant *p, int64_t t);
/* The output at the time it was last advanced to. */
static inline double fb_plant_value(const struct fb_plant *p) { return p->t ? p->y : p->initial; }
/* "fopdt", "heater", ... NULL-terminated (docs and messages). */
extern const char *const fb_plant_names[];
#endif
