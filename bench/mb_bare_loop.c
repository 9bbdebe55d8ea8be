/* mb_bare_loop.c — the protocol's limit: a bare libmodbus read loop.
 *
 * Each of --conns threads opens its own TCP connection and issues
 * modbus_read_registers(addr, R) back to back for T seconds; nothing is done
 * with the values.  This is the most any Modbus TCP client can get out of the
 * server on this machine with synchronous request/response, so every other
 * result is stated relative to it.  CPU is this process's user+system time
 * (getrusage), so "CPU per request" is the client side only.
 *
 * Prints one JSON object on stdout (for bench/run.sh) and a human line on
 * stderr.
 *
 * usage: mb_bare_loop [--host 127.0.0.1] [--port 5020] [--unit 1] [--addr 0]
 *                     [--regs 100] [--duration 5] [--conns 1]
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <modbus/modbus.h>

#include "bench_util.h"

struct worker {
    pthread_t th;
    const char *host;
    int port, unit, addr, regs;
    double duration;
    unsigned long long ok, errors;
    int failed_connect;
};

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    modbus_t *ctx = modbus_new_tcp(w->host, w->port);
    if (!ctx) {
        w->failed_connect = 1;
        return NULL;
    }
    modbus_set_slave(ctx, w->unit);
    modbus_set_response_timeout(ctx, 1, 0);
    if (modbus_connect(ctx) < 0) {
        fprintf(stderr, "connect %s:%d: %s\n", w->host, w->port, modbus_strerror(errno));
        w->failed_connect = 1;
        modbus_free(ctx);
        return NULL;
    }
    uint16_t regs[MODBUS_MAX_READ_REGISTERS];
    double end = bench_mono_s() + w->duration;
    /* check the clock every 64 requests: cheap, and bounds the run */
    for (;;) {
        for (int k = 0; k < 64; k++) {
            if (modbus_read_registers(ctx, w->addr, w->regs, regs) == w->regs)
                w->ok++;
            else
                w->errors++;
        }
        if (bench_mono_s() >= end) break;
    }
    modbus_close(ctx);
    modbus_free(ctx);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 5020, unit = 1, addr = 0, regs = 100, conns = 1;
    double duration = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--unit"))
            unit = atoi(v);
        else if (!strcmp(a, "--addr"))
            addr = atoi(v);
        else if (!strcmp(a, "--regs"))
            regs = atoi(v);
        else if (!strcmp(a, "--duration"))
            duration = atof(v);
        else if (!strcmp(a, "--conns"))
            conns = atoi(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (argc % 2 == 0 || regs < 1 || regs > MODBUS_MAX_READ_REGISTERS || conns < 1 || conns > 256 || duration <= 0 ||
        duration > 3600 || addr < 0 || addr + regs > 65536) {
        fprintf(stderr, "usage: mb_bare_loop [--host H] [--port P] [--unit U] [--addr A] [--regs 1..125]"
                        " [--duration S] [--conns N]\n");
        return 2;
    }
    struct worker *w = calloc((size_t)conns, sizeof *w);
    if (!w) return 1;
    double c0 = bench_cpu_s(), t0 = bench_mono_s();
    for (int i = 0; i < conns; i++) {
        w[i] =
            (struct worker){.host = host, .port = port, .unit = unit, .addr = addr, .regs = regs, .duration = duration};
        if (pthread_create(&w[i].th, NULL, run_worker, &w[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    unsigned long long ok = 0, errs = 0;
    int failed = 0;
    for (int i = 0; i < conns; i++) {
        pthread_join(w[i].th, NULL);
        ok += w[i].ok;
        errs += w[i].errors;
        failed += w[i].failed_connect;
    }
    double el = bench_mono_s() - t0, cpu = bench_cpu_s() - c0;
    double rps = ok / el;
    printf("{\"tool\":\"mb_bare_loop\",\"conns\":%d,\"regs\":%d,\"seconds\":%.3f,\"requests\":%llu,"
           "\"errors\":%llu,\"requests_per_s\":%.1f,\"values_per_s\":%.1f,\"cpu_s\":%.3f,"
           "\"cpu_pct\":%.1f,\"cpu_us_per_value\":%.4f}\n",
           conns, regs, el, ok, errs, rps, rps * regs, cpu, 100.0 * cpu / el,
           ok ? cpu * 1e6 / ((double)ok * regs) : 0.0);
    fprintf(stderr,
            "mb_bare_loop: %d conn(s), %d regs: %.0f requests/s, %.0f values/s, CPU %.0f%% of a core, %llu errors\n",
            conns, regs, rps, rps * regs, 100.0 * cpu / el, errs);
    free(w);
    return failed == conns ? 1 : 0;
}
