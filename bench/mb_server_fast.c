/* mb_server_fast.c — a fast libmodbus TCP server for benchmarks, demos and tests.
 *
 * One thread, one epoll set over the listening sockets and every client, so
 * several pollers (the gateway, the bare loop, the Python peer) can share it
 * and the server costs one wake-up per burst of requests — it must never be
 * the side that limits a benchmark.  Requests are framed here (MBAP length)
 * and answered with libmodbus's modbus_reply(); libmodbus's own receive is
 * not used because it select()s, which breaks on descriptors ≥ 1024 — and a
 * thousand simulated devices need more.  All four tables have 65536 entries (the whole
 * Modbus address space); every register starts at --init (default 0) so
 * values are easy to check.
 *
 * --tick MS increments every holding register (and input register) every MS
 * milliseconds inside the select() timeout, so a change → subscriber latency
 * can be measured.  With --tick-log FILE each tick appends "value realtime_ns"
 * (the new value of hr:0 and the wall-clock time it became readable) so the
 * harness can join it with the subscriber's arrival log.
 *
 * --port may be given up to 4096 times: the server then listens on every port
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
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <modbus/modbus.h>

#define NREG 65536
#define MAX_FD_CLIENTS 8192
#define MAX_PORTS 4096
#define LISTEN_TAG (1ull << 32)

/* One client's partial request (Modbus TCP: 7-byte MBAP header, then the PDU). */
struct client {
    uint16_t n;
    uint8_t buf[MODBUS_TCP_MAX_ADU_LENGTH];
};

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
    int port = 5020, max_clients = 64, nports = 0;
    static int ports[MAX_PORTS];
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
    /* a thousand devices need more descriptors than the usual 1024 */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    static int lfds[MAX_PORTS];
    static modbus_t *lctx[MAX_PORTS];
    for (int i = 0; i < nports; i++) {
        lctx[i] = i == 0 ? ctx : modbus_new_tcp("127.0.0.1", ports[i]);
        lfds[i] = lctx[i] ? modbus_tcp_listen(lctx[i], max_clients) : -1;
        if (lfds[i] < 0) {
            fprintf(stderr, "listen 127.0.0.1:%d: %s\n", ports[i], modbus_strerror(errno));
            return 1;
        }
    }
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

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("epoll_create1");
        return 1;
    }
    for (int i = 0; i < nports; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = LISTEN_TAG | (uint64_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, lfds[i], &ev);
    }
    struct client **cl = calloc((size_t)MAX_FD_CLIENTS * 2 + MAX_PORTS + 64, sizeof *cl);
    int cl_cap = MAX_FD_CLIENTS * 2 + MAX_PORTS + 64, nclients = 0;
    if (!cl) return 1;
    int64_t t0 = mono_ns();
    int64_t tick_ns = (int64_t)(tick_ms * 1e6);
    int64_t next_tick = t0 + tick_ns;
    int64_t end = duration > 0 ? t0 + (int64_t)(duration * 1e9) : INT64_MAX;
    unsigned long long nreq = 0;
    struct epoll_event evs[256];

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
        int n = epoll_wait(ep, evs, 256, (int)((wait + 999999) / 1000000));
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            break;
        }
        for (int k = 0; k < n; k++) {
            uint64_t d = evs[k].data.u64;
            if (d & LISTEN_TAG) {
                int cfd = accept4(lfds[d & 0xFFFFFFFFu], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) continue;
                if (cfd >= cl_cap || nclients >= max_clients) {
                    close(cfd);
                    continue;
                }
                int one = 1;
                setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                cl[cfd] = calloc(1, sizeof **cl);
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)cfd};
                if (!cl[cfd] || epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev) < 0) {
                    free(cl[cfd]);
                    cl[cfd] = NULL;
                    close(cfd);
                    continue;
                }
                nclients++;
                continue;
            }
            int fd = (int)d;
            struct client *c = cl[fd];
            if (!c) continue;
            bool gone = false;
            for (;;) {
                ssize_t r = recv(fd, c->buf + c->n, sizeof c->buf - c->n, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                    gone = true;
                    break;
                }
                if (r < 0) break;
                c->n = (uint16_t)(c->n + r);
                /* answer every whole request in the buffer */
                for (;;) {
                    if (c->n < 7) break;
                    unsigned len = 6u + ((unsigned)c->buf[4] << 8 | c->buf[5]);
                    if (len < 8 || len > sizeof c->buf) { /* not Modbus TCP: drop the client */
                        gone = true;
                        break;
                    }
                    if (c->n < len) break;
                    modbus_set_socket(ctx, fd);
                    modbus_reply(ctx, c->buf, (int)len, map);
                    nreq++;
                    memmove(c->buf, c->buf + len, c->n - len);
                    c->n = (uint16_t)(c->n - len);
                }
                if (gone) break;
            }
            if (gone) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                free(c);
                cl[fd] = NULL;
                nclients--;
            }
        }
    }
    fprintf(stderr, "mb_server_fast: %llu requests served\n", nreq);
    if (tlog) fclose(tlog);
    for (int fd = 0; fd < cl_cap; fd++)
        if (cl[fd]) {
            close(fd);
            free(cl[fd]);
        }
    free(cl);
    close(ep);
    for (int i = 0; i < nports; i++) {
        close(lfds[i]);
        if (i > 0) modbus_free(lctx[i]);
    }
    modbus_mapping_free(map);
    modbus_free(ctx);
    return 0;
}
