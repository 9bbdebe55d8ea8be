/* bench_vib.c — what the vibration analysis costs per block (issue 18,
 * BENCHMARKS.md "Vibration analysis").  The question is how many channels
 * of 25.6 kHz one core analyses in real time: with one block per second and
 * channel, that is 1 s divided by the CPU time of one block.
 *
 * The channel is made from YAML by the config loader, as the gateway makes
 * it, and each block goes through what an analysis thread runs per block:
 * fb_vib_features (statistics, spectrum, velocity, bands, orders, envelope,
 * ISO zone) and fb_anom_update (baseline, z-scores, trend).  The blocks come
 * from the simulator's motor model (an outer-race defect, so the envelope
 * has lines to find), generated before timing; the time is this thread's
 * CPU time (CLOCK_THREAD_CPUTIME_ID), as the gateway's status counts it.
 *
 *   bench_vib [--seconds S] [--block N]
 *
 * Profiles: "minimal" (statistics and velocity RMS only) and "full" (every
 * feature of examples/conveyor-pdm.yaml, anomaly and trend included).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/model.h"
#include "south/sim/sim_gen.h"
#include "south/sim/sim_motor.h"
#include "vib/anomaly.h"
#include "vib/dsp.h"
#include "vib/features.h"
#include "vib/vib_cfg.h"

#define NBLK 8 /* distinct blocks, cycled */

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int run(const char *profile, const char *vib_yaml, unsigned block, double seconds)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "gateway: {id: bench}\n"
             "devices:\n"
             "  - name: m\n"
             "    url: \"sim://m?seed=7\"\n"
             "    poll: 1s\n"
             "    tags:\n"
             "      - name: acc\n"
             "        addr: \"motor:rpm=1480,outer=20,onset=0s,growth=1s\"\n"
             "        vibration:\n"
             "          fs: 25600\n"
             "          block: %u\n"
             "%s",
             block, vib_yaml);
    FILE *diag = tmpfile(); /* the loader's warnings (no sink) only matter when it fails */
    struct fb_config_opts opt = {false, diag ? diag : stderr};
    struct fb_gateway *gw = NULL;
    int rc = fb_config_load_mem("bench.yaml", yaml, strlen(yaml), &opt, &gw);
    if (rc || !gw->vib || gw->vib->nch != 1) {
        if (diag) {
            rewind(diag);
            for (int ch; (ch = fgetc(diag)) != EOF;) fputc(ch, stderr);
        }
        fprintf(stderr, "bench_vib: the %s config was refused\n", profile);
        return 1;
    }
    if (diag) fclose(diag);
    const struct fb_vib_chan *c = &gw->vib->ch[0];
    struct fb_sim_gen g;
    struct fb_err e = {0};
    if (fb_sim_gen_parse("motor:rpm=1480,outer=20,onset=0s,growth=1s", &g, &e)) {
        fprintf(stderr, "bench_vib: %s\n", e.msg);
        fb_gateway_free(gw);
        return 1;
    }
    fb_sim_gen_seed(&g, 7, 0);
    float *x = malloc((size_t)NBLK * c->n * sizeof *x);
    struct fb_dsp *d = fb_dsp_new(c->n, c->env_m);
    struct fb_anom a;
    int anom = c->nmon ? fb_anom_init(&a, &c->acfg, c->nmon) : 0;
    if (!x || !d || anom) {
        fprintf(stderr, "bench_vib: out of memory\n");
        return 1;
    }
    for (int b = 0; b < NBLK; b++) fb_motor_block(&g.motor, x + (size_t)b * c->n, c->n, c->fs, 3600.0 * (b + 1));
    double vals[FB_VIB_MAX_OUT], mv[FB_VIB_MAX_OUT];
    volatile double sink = 0; /* the results are used */
    uint32_t q[FB_VIB_MAX_OUT];
    long blocks = 0;
    double t0 = cpu_now(), t1 = t0;
    while (t1 - t0 < seconds) {
        for (int b = 0; b < NBLK; b++) {
            sink += fb_vib_features(c, d, x + (size_t)b * c->n, 1, 0, NAN, FB_Q_GOOD, vals, q);
            if (c->nmon) {
                struct fb_anom_out o;
                for (uint32_t m = 0; m < c->nmon; m++) mv[m] = vals[c->mon[m]];
                fb_anom_update(&a, mv, &o);
                sink += o.zmax;
            }
        }
        blocks += NBLK;
        t1 = cpu_now();
    }
    (void)sink;
    double us = (t1 - t0) / (double)blocks * 1e6;
    double span = c->n / c->fs; /* seconds of signal per block */
    printf("%-8s block %6u (%.2f s at 25.6 kHz), %2u feature tags, %2u watched: %8.1f µs CPU per block, "
           "%6.0f channels per core in real time (one block per %.2f s each)   [%ld blocks, dsp %zu KiB]\n",
           profile, c->n, span, c->nout, c->nmon, us, span * 1e6 / us, span, blocks, fb_dsp_bytes(d) / 1024);
    if (c->nmon) fb_anom_free(&a);
    fb_dsp_free(d);
    free(x);
    fb_sim_gen_free(&g);
    fb_gateway_free(gw);
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = 3;
    unsigned block = 25600;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--block") && i + 1 < argc)
            block = (unsigned)strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_vib [--seconds S] [--block N]\n");
            return 2;
        }
    }
    int rc = run("minimal",
                 "          features: [rms, peak, peak_to_peak, crest_factor, kurtosis, skewness, "
                 "velocity_rms]\n",
                 block, seconds);
    rc |= run("full",
              "          speed: 1480rpm\n"
              "          bands: {low: [10, 1000], mid: [1000, 5000], high: [5000, 12000]}\n"
              "          bearing: {balls: 9, ball_diameter: 7.94, pitch_diameter: 39.04, contact_angle: 0}\n"
              "          envelope: {band: [2000, 6000]}\n"
              "          iso: {group: 2, mounting: rigid}\n"
              "          anomaly: {learn_blocks: 60, z: 4, min_blocks: 3, trend: {window: 10m, limit: 50%}}\n",
              block, seconds);
    return rc;
}
