/* bench_pipeline.c — the pipeline alone on one core:
 *   sim generator (sine) → raw batch per device → fb_proc_batch →
 *   telemetry JSON (fb_telemetry_json, the MQTT sink's encoder) → null sink.
 *
 * The gateway model is built in memory (no config file): N float64 tags over
 * D devices, one poll group of 1 s each.  Time is simulated (each cycle
 * advances 1 s of sample time) so the run measures CPU, not sleeping.  By
 * default every tag publishes every sample (no deadband): the worst case for
 * the encoder.  Options add the per-tag features to see what they cost.
 *
 *   bench_pipeline [--tags N] [--devices D] [--seconds S] [--deadband X]
 *                  [--window SEC] [--range] [--float32]
 *
 * Prints values/s and ns/value for the whole chain and per stage, from the
 * thread's CPU time (so other load on the machine does not skew it). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "north/mqtt/mqtt.h"
#include "north/mqtt/telemetry.h"
#include "proc/proc.h"
#include "south/sim/sim_gen.h"

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu(void) /* this thread's CPU time: immune to other load on the machine */
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(void)
{
    fputs("usage: bench_pipeline [--tags N] [--devices D] [--seconds S] [--deadband X]\n"
          "                      [--window SEC] [--range] [--float32]\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    uint32_t ntags = 10000, ndevs = 100;
    double seconds = 3, deadband = 0, window_s = 0;
    bool range = false, f32 = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--range"))
            range = true;
        else if (!strcmp(a, "--float32"))
            f32 = true;
        else if (i + 1 >= argc)
            usage();
        else if (!strcmp(a, "--tags"))
            ntags = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "--devices"))
            ndevs = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "--seconds"))
            seconds = strtod(argv[++i], NULL);
        else if (!strcmp(a, "--deadband"))
            deadband = strtod(argv[++i], NULL);
        else if (!strcmp(a, "--window"))
            window_s = strtod(argv[++i], NULL);
        else
            usage();
    }
    if (ntags == 0 || ndevs == 0 || ndevs > ntags) usage();

    /* ---- the model ---- */
    struct fb_gateway gw = {.id = "bench", .site = "lab"};
    struct fb_tag_proc settings = {.db_abs = deadband, .window_ns = (int64_t)(window_s * 1e9)};
    if (range) {
        settings.has_min = settings.has_max = true;
        settings.min = -1000;
        settings.max = 1000;
        settings.max_rate = 1000;
        settings.stuck_ns = 600000000000LL;
    }
    gw.ntags = ntags;
    gw.ndevs = ndevs;
    gw.tags = calloc(ntags, sizeof *gw.tags);
    gw.devs = calloc(ndevs, sizeof *gw.devs);
    struct fb_group *groups = calloc(ndevs, sizeof *groups);
    struct fb_sim_gen *gen = calloc(ntags, sizeof *gen);
    if (!gw.tags || !gw.devs || !groups || !gen) return 1;
    uint32_t per = ntags / ndevs, maxper = 0;
    for (uint32_t d = 0, t = 0; d < ndevs; d++) {
        struct fb_device *dev = &gw.devs[d];
        uint32_t n = d == ndevs - 1 ? ntags - t : per;
        dev->idx = d;
        dev->name = malloc(32);
        snprintf(dev->name, 32, "line%u-plc%02u", d / 10 + 1, d % 10);
        dev->area = "assembly";
        dev->line = "01";
        dev->first_tag = t;
        dev->ntags = n;
        groups[d].period_ns = 1000000000LL;
        groups[d].ntags = n;
        dev->groups = &groups[d];
        dev->ngroups = 1;
        if (n > maxper) maxper = n;
        for (uint32_t k = 0; k < n; k++, t++) {
            struct fb_tag *tg = &gw.tags[t];
            tg->id = t;
            tg->device = d;
            tg->type = f32 ? FB_T_FLOAT32 : FB_T_FLOAT64;
            tg->name = malloc(24);
            snprintf(tg->name, 24, "sensor%03u", k);
            tg->proc = &settings; /* one set of settings for every tag, as the config loader shares them */
            char spec[96];
            snprintf(spec, sizeof spec, "sine:amp=%u,offset=%u,period=%us,phase=%.3f", 10 + t % 90, t % 50,
                     20 + t % 100, (t % 628) / 100.0);
            struct fb_err err;
            if (fb_sim_gen_parse(spec, &gen[t], &err) != 0) {
                fprintf(stderr, "sim spec %s: %s\n", spec, err.msg);
                return 1;
            }
            fb_sim_gen_seed(&gen[t], 1, t);
        }
    }
    struct fb_proc *proc = fb_proc_new(&gw);
    struct fb_batch *in = fb_batch_new(maxper, 0, 0);
    struct fb_batch *out = fb_batch_new(maxper, maxper, 0);
    if (!proc || !in || !out) return 1;
    struct fb_buf json;
    fb_buf_init(&json);

    /* ---- the run ---- */
    int64_t t0 = 1764324000000000000LL; /* 2025-11-28T10:00:00Z */
    uint64_t values = 0, published = 0, bytes = 0, seq = 0, sink = 0;
    double tg = 0, tp = 0, tj = 0;
    double start = mono(), now = start, cpu0 = cpu();
    int64_t cycle = 0;
    while (now - start < seconds) {
        int64_t ts = t0 + cycle * 1000000000LL;
        for (uint32_t d = 0; d < ndevs; d++) {
            const struct fb_device *dev = &gw.devs[d];
            double a = mono();
            /* south: what the sim driver's read does, one sample per tag */
            fb_batch_reset(in);
            in->device = d;
            in->ts = ts;
            for (uint32_t k = 0; k < dev->ntags; k++) {
                uint32_t id = dev->first_tag + k;
                struct fb_sim_out so;
                fb_sim_gen_read(&gen[id], ts, &so);
                struct fb_value v = {.type = gw.tags[id].type, .f = f32 ? (double)(float)so.d : so.d};
                fb_batch_add(in, id, so.quality, ts, &v);
            }
            double b = mono();
            fb_batch_reset(out);
            published += fb_proc_batch(proc, in, out);
            out->seq = ++seq;
            double c = mono();
            fb_buf_clear(&json);
            if (out->n) fb_telemetry_json(&json, &gw, out);
            bytes += json.len;
            sink += (unsigned char)json.p[json.len / 2]; /* the null sink touches the payload */
            double e = mono();
            tg += b - a;
            tp += c - b;
            tj += e - c;
            values += dev->ntags;
        }
        cycle++;
        now = mono();
    }
    double el = now - start, cpu_s = cpu() - cpu0;
    printf("bench_pipeline: %u tags on %u devices, %s, deadband %g, window %gs%s, %.1f s\n", ntags, ndevs,
           f32 ? "float32" : "float64", deadband, window_s, range ? ", range+rate+stuck" : "", el);
    printf("  values        %llu (%llu published, %.1f%%), %llu JSON bytes (%.1f B/value)\n",
           (unsigned long long)values, (unsigned long long)published, 100.0 * published / values,
           (unsigned long long)bytes, (double)bytes / (published ? published : 1));
    printf("  throughput    %.2f M values/s   %.1f ns/value of CPU (all stages; wall %.2f M/s)\n", values / cpu_s / 1e6,
           cpu_s * 1e9 / values, values / el / 1e6);
    double f = cpu_s / el; /* stage times are wall clock: scale to CPU */
    printf("  stages        sim %.1f  pipeline %.1f  json %.1f ns/value (CPU)\n", tg * f * 1e9 / values,
           tp * f * 1e9 / values, tj * f * 1e9 / values);
    printf("  without sim   %.2f M values/s (pipeline + JSON)\n", values / ((tp + tj) * f) / 1e6);
    if (sink == 42) puts("");
    fb_buf_free(&json);
    fb_batch_free(in);
    fb_batch_free(out);
    fb_proc_free(proc);
    for (uint32_t t = 0; t < ntags; t++) {
        fb_sim_gen_free(&gen[t]);
        free(gw.tags[t].name);
    }
    for (uint32_t d = 0; d < ndevs; d++) free(gw.devs[d].name);
    free(gen);
    free(groups);
    free(gw.tags);
    free(gw.devs);
    return 0;
}
