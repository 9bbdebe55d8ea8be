/* sim_motor.h — a motor's vibration (acceleration) for the simulator
 * (sim_motor.c): the `motor:` generator of a waveform tag
 * (docs/simulator.md, docs/vibration.md).
 *
 *   shaft       1× (unbalance) and 2× (misalignment) of the running speed
 *   bearing     impacts at the defect frequencies of the bearing's geometry
 *               (vib/bearing.h): outer race at BPFO with constant strength
 *               (the defect sits still in the load zone), inner race at BPFI
 *               modulated by the shaft's rotation (1×), rolling element at
 *               2 × BSF modulated by the cage (FTF), cage at FTF; each impact
 *               rings the structure's resonance (a damped sine), with a small
 *               random spread of the impact times (the elements slip)
 *   noise       Gaussian, broadband
 *   growth      a defect is absent before `onset` operating time and grows
 *               linearly to its full strength over `growth`; operating time
 *               runs `accel` times faster than the clock, so a test can live
 *               through a day of a machine's life in minutes
 *
 * The signal is continuous from block to block (its own time advances by
 * n/fs per block) and deterministic for a seed: impact times and noise come
 * from seeded generators, an impact's time from its index alone. */
#ifndef FB_SIM_MOTOR_H
#define FB_SIM_MOTOR_H
#include <stdint.h>

#include "vib/bearing.h"

struct fb_motor {
    /* parameters (doubles: read by the sim's key table) */
    double rpm;                      /* running speed */
    double unbalance, misalign;      /* 1× and 2× amplitudes (0-peak, signal unit, e.g. m/s²) */
    double noise;                    /* Gaussian noise, RMS */
    double resonance, damping;       /* Hz and damping ratio of the ringing structure */
    double balls, ball_d, pitch_d;   /* bearing geometry (vib/bearing.h) */
    double angle;                    /* contact angle, degrees */
    double outer, inner, ball, cage; /* impact peak of each defect at full strength (0: none) */
    int64_t onset_ns, growth_ns;     /* operating time when defects appear, and until full */
    double accel;                    /* operating time per clock time */
    double slip;                     /* spread of the impact times, fraction of their spacing */
    /* state */
    uint64_t rng, seed;
    double t;        /* signal time of the next sample, s */
    double ph1, ph2; /* phases of 1× and 2× */
    double spare;    /* a second Gaussian from the last pair */
    int have_spare;
};

/* Defaults (a 1480 rpm motor on a 6205-size bearing, healthy). */
void fb_motor_defaults(struct fb_motor *m);
/* Check the parameters; *why says what is wrong. */
int fb_motor_check(const struct fb_motor *m, const char **why);
void fb_motor_seed(struct fb_motor *m, uint64_t seed);
/* A defect's strength (0 .. 1) at operating time t_op seconds. */
double fb_motor_severity(const struct fb_motor *m, double t_op);
/* The next n samples at fs Hz, at operating time t_op seconds. */
void fb_motor_block(struct fb_motor *m, float *x, uint32_t n, double fs, double t_op);
#endif
