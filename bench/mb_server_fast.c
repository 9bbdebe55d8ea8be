/* mb_server_fast.c — a fast libmodbus TCP server for benchmarks, demos and tests.
 *
 * One thread, one select() over the listening socket and every client, so
 * several pollers (the gateway, the bare loop, the Python peer) can share it
 * and the server costs one wake-up per request — it must never be the side
 * that limits a benchmark.  All four tables have 65536 entries (the whole
 * Modbus address space); every register starts at --init (default 0) so
 * values are easy to check.
 *
 * --tick MS increments every holding register (and input register) every MS
 * milliseconds inside the select() timeout, so a change → subscriber latency
 * can be measured.  With --tick-log FILE each tick appends "value realtime_ns"
 * (the new value of hr:0 and the wall-clock time it became readable) so the
 * harness can join it with the subscriber's arrival log.
 *
 * --port may be given up to 256 times: the server then listens on every port
 * (same registers behind all of them), so one process can stand in for many
 * devices that a client reaches over separate connections (a gateway keys
 * its connections by host:port).
 *
 * Binds 127.0.0.1 only.  Prints "ready port=N" on stdout once listening.
 * Stops on SIGINT/SIGTERM or after --duration seconds (0 = run until killed).
 *
 * usage: mb_server_fast [--port 5020] [--tick MS] [--tick-log FILE]
 *                       [--init V] [--duration S] [--max-clients N]
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include <modbus/modbus.h>

#define NREG 65536
#define MAX_FD_CLIENTS 1000
#define MAX_PORTS 256

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void usage(void)
{
    fprintf(stderr, "usage: mb_server_fast [--port 5020] [--tick MS] [--tick-log FILE]\n"
                    "                      [--init V] [--duration S] [--max-clients N]\n");
}

int main(int argc, char **argv)
{
    int port = 5020, max_clients = 64, nports = 0, ports[MAX_PORTS];
    double tick_ms = 0, duration = 0;
    long init = 0;
    const char *tick_log = NULL;

    for (int i = 1; i < argc; i += 2) { /* --option value */
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        }
        if (!v) {
            usage();
            return 2;
        }
        if (!strcmp(a, "--port")) {
            port = atoi(v);
            if (nports == MAX_PORTS || port <= 0 || port > 65535) {
                usage();
                return 2;
            }
            ports[nports++] = port;
        } else if (!strcmp(a, "--tick"))
            tick_ms = atof(v);
        else if (!strcmp(a, "--tick-log"))
            tick_log = v;
        else if (!strcmp(a, "--init"))
            init = strtol(v, NULL, 0);
        else if (!strcmp(a, "--duration"))
            duration = atof(v);
        else if (!strcmp(a, "--max-clients"))
            max_clients = atoi(v);
        else {
            usage();
            return 2;
        }
    }
    if (nports == 0) ports[nports++] = port;
    if (port <= 0 || port > 65535 || tick_ms < 0 || duration < 0 || max_clients < 1 || max_clients > MAX_FD_CLIENTS) {
        usage();
        return 2;
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    modbus_t *ctx = modbus_new_tcp("127.0.0.1", ports[0]);
    if (!ctx) {
        fprintf(stderr, "modbus_new_tcp: %s\n", modbus_strerror(errno));
        return 1;
    }
    modbus_mapping_t *map = modbus_mapping_new(NREG, NREG, NREG, NREG);
    if (!map) {
        fprintf(stderr, "modbus_mapping_new: %s\n", modbus_strerror(errno));
        modbus_free(ctx);
        return 1;
    }
    for (int i = 0; i < NREG; i++) {
        map->tab_registers[i] = (uint16_t)init;
        map->tab_input_registers[i] = (uint16_t)init;
    }
    int lfds[MAX_PORTS];
    modbus_t *lctx[MAX_PORTS];
    for (int i = 0; i < nports; i++) {
        lctx[i] = i == 0 ? ctx : modbus_new_tcp("127.0.0.1", ports[i]);
        lfds[i] = lctx[i] ? modbus_tcp_listen(lctx[i], max_clients) : -1;
        if (lfds[i] < 0) {
            fprintf(stderr, "listen 127.0.0.1:%d: %s\n", ports[i], modbus_strerror(errno));
            return 1;
        }
    }
    int lfd = lfds[0];
    FILE *tlog = NULL;
    if (tick_log) {
        tlog = fopen(tick_log, "w");
        if (!tlog) {
            perror(tick_log);
            return 1;
        }
    }
    printf("ready port=%d\n", ports[0]);
    fflush(stdout);

    fd_set all;
    FD_ZERO(&all);
    int maxfd = lfd;
    for (int i = 0; i < nports; i++) {
        FD_SET(lfds[i], &all);
        if (lfds[i] > maxfd) maxfd = lfds[i];
    }
    int minfd = maxfd; /* client fds are above every listening fd */
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    int64_t t0 = mono_ns();
    int64_t tick_ns = (int64_t)(tick_ms * 1e6);
    int64_t next_tick = t0 + tick_ns;
    int64_t end = duration > 0 ? t0 + (int64_t)(duration * 1e9) : INT64_MAX;
    unsigned long long nreq = 0;

    while (!stop_flag) {
        int64_t now = mono_ns();
        if (now >= end) break;
        if (tick_ns > 0 && now >= next_tick) {
            for (int i = 0; i < NREG; i++) {
                map->tab_registers[i]++;
                map->tab_input_registers[i]++;
            }
            if (tlog) { /* flushed per line: the subscriber joins it while we run */
                fprintf(tlog, "%u %lld\n", (unsigned)map->tab_registers[0], (long long)real_ns());
                fflush(tlog);
            }
            next_tick += tick_ns;
            if (next_tick <= now) next_tick = now + tick_ns; /* we fell behind: do not burst */
            continue;
        }
        int64_t wait = (tick_ns > 0 ? next_tick : end) - now;
        if (wait > 1000000000LL) wait = 1000000000LL; /* re-check the stop flag each second */
        struct timeval tv = {(time_t)(wait / 1000000000LL), (suseconds_t)((wait % 1000000000LL) / 1000)};
        fd_set rd = all;
        int n = select(maxfd + 1, &rd, NULL, NULL, &tv);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("select");
            break;
        }
        for (int fd = 0; fd <= maxfd && n > 0; fd++) {
            if (!FD_ISSET(fd, &rd)) continue;
            n--;
            int li = -1;
            for (int i = 0; i < nports && li < 0; i++)
                if (fd == lfds[i]) li = i;
            if (li >= 0) {
                int cfd = modbus_tcp_accept(lctx[li], &lfds[li]);
                if (cfd < 0) continue;
                if (cfd >= FD_SETSIZE) {
                    close(cfd);
                    continue;
                }
                FD_SET(cfd, &all);
                if (cfd > maxfd) maxfd = cfd;
                continue;
            }
            modbus_set_socket(ctx, fd);
            int rc = modbus_receive(ctx, query);
            if (rc > 0) {
                modbus_reply(ctx, query, rc, map);
                nreq++;
            } else if (rc == -1) {
                /* closed or broken: forget this client */
                close(fd);
                FD_CLR(fd, &all);
                if (fd == maxfd)
                    while (maxfd > minfd && !FD_ISSET(maxfd, &all)) maxfd--;
            }
            /* rc == 0: a request for another unit or ignored frame */
        }
    }
    fprintf(stderr, "mb_server_fast: %llu requests served\n", nreq);
    if (tlog) fclose(tlog);
    for (int fd = minfd + 1; fd <= maxfd; fd++)
        if (FD_ISSET(fd, &all)) close(fd);
    for (int i = 0; i < nports; i++) {
        close(lfds[i]);
        if (i > 0) modbus_free(lctx[i]);
    }
    modbus_mapping_free(map);
    modbus_free(ctx);
    return 0;
}
