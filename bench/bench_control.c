/* bench_control.c — what one control-loop cycle costs on the CPU, alone:
 * N loops, each with its own simulated first-order process (fb_plant), run
 * through fb_loop_cycle (commands check, set point, the PID step, the
 * snapshot others read) for S simulated seconds at the given cycle.  The
 * process model is advanced outside the timed part; the time is this
 * thread's CPU time, so other load on the machine does not inflate it.
 *
 *   bench_control [--loops N] [--cycle-ms C] [--seconds S] [--td SEC]
 *
 * Prints ns per loop-cycle.  The control thread of the gateway adds to this
 * the read of the latest-value slot, the output's conversion and the queueing
 * of the write; bench/control_bench.py measures that whole thread inside
 * the running gateway. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "control/loop.h"
#include "core/log.h"
#include "south/sim/sim_plant.h"

static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int n = 100;
    double cycle_ms = 10, seconds = 600, td = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--loops"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--cycle-ms"))
            cycle_ms = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--td"))
            td = atof(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_control [--loops N] [--cycle-ms C] [--seconds S] [--td SEC]\n");
            return 2;
        }
    }
    if (n < 1 || cycle_ms <= 0 || seconds <= 0) return 2;
    fb_log_init(FB_LOG_WARN, FB_LOG_TEXT);
    struct fb_loop_cfg *cfg = calloc((size_t)n, sizeof *cfg);
    struct fb_loop *L = calloc((size_t)n, sizeof *L);
    struct fb_plant *p = calloc((size_t)n, sizeof *p);
    if (!cfg || !L || !p) return 1;
    for (int i = 0; i < n; i++) {
        struct fb_loop_cfg *c = &cfg[i];
        c->name = "bench";
        c->pid =
            (struct fb_pid_cfg){.kp = 1.25, .ti = 4, .td = td, .n = 10, .b = 1, .aw = FB_AW_CLAMP, .lo = 0, .hi = 100};
        c->cycle_ns = (int64_t)(cycle_ms * 1e6);
        c->mode0 = FB_MODE_AUTO;
        c->sp0 = 30 + i % 10;
        c->stale_cycles = 3;
        c->fallback = FB_ACT_HOLD;
        c->on_north_loss = FB_ACT_NONE;
        fb_loop_init(&L[i], c);
        struct fb_err e;
        if (fb_plant_parse("fopdt:k=2,tau=4s,dead=800ms,y0=20", &p[i], &e) < 0) return 1;
    }
    int64_t h_ns = (int64_t)(cycle_ms * 1e6), t = 1000000000LL;
    long cycles = (long)(seconds * 1000 / cycle_ms);
    double spent = 0, sink = 0;
    for (long k = 0; k < cycles; k++, t += h_ns) {
        double y[1024];
        for (int i = 0; i < n; i++) y[i % 1024] = fb_plant_advance(&p[i], t);
        double c0 = cpu();
        for (int i = 0; i < n; i++) {
            struct fb_loop_in in = {.h = cycle_ms / 1e3, .have_pv = true, .pv = y[i % 1024], .pv_age = h_ns / 2};
            bool force;
            double u = fb_loop_cycle(&L[i], &in, &force);
            y[i % 1024] = u;
        }
        spent += cpu() - c0;
        for (int i = 0; i < n; i++) {
            fb_plant_input(&p[i], t, y[i % 1024]);
            sink += y[i % 1024];
        }
    }
    printf("%d loops × %ld cycles of %.3g ms (td %.3g s): %.1f ns per loop-cycle (CPU time of this thread)%s\n", n,
           cycles, cycle_ms, td, spent * 1e9 / ((double)n * (double)cycles), sink == 0 ? " ?" : "");
    for (int i = 0; i < n; i++) fb_loop_destroy(&L[i]);
    free(cfg);
    free(L);
    free(p);
    return 0;
}
