/* poll_models.c — thread per connection against an event loop, measured
 * (issue 15: "100 devices must not cost 100 threads' worth of stacks and
 * wake-ups").
 *
 * N Modbus TCP devices (one connection each, ports from --ports-file, cycled
 * when there are fewer ports than devices), each read every --period-ms:
 * Read Holding Registers 0..R-1, unit 1, the response decoded (the registers
 * summed, so the values are touched).  The same framing code in every model,
 * so only the way waiting is organised differs:
 *
 *   threads   one thread per connection (256 KiB stacks, as fieldbridge's):
 *             clock_nanosleep to its next deadline, send, poll() the socket
 *             for the answer, decode — what fieldbridge's connection threads
 *             do, minus libmodbus (which select()s: unusable past fd 1023).
 *   epoll     one thread: every socket non-blocking in one epoll set, the
 *             deadlines in a binary heap; due requests are sent, answers are
 *             read as epoll reports them — one wake-up can serve many.
 *   pool:K    K such event-loop threads, the devices spread over them.
 *
 * All devices start due at the same instant and keep their phase (a missed
 * deadline is skipped, counted as an overrun), as fieldbridge does.  Prints
 * one JSON object: polls/s, errors, overruns, CPU (getrusage: user+system),
 * context switches (voluntary/involuntary), threads, VmRSS/VmHWM, and the
 * request → answer latency (p50/p99/max).
 *
 * usage: poll_models --model threads|epoll|pool:K --devices N --ports-file F
 *                    [--period-ms 100] [--regs 100] [--duration 10]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
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

#define MAX_ADU 260
#define LAT_SLOTS 4096

struct dev {
    int fd;
    int port;
    uint16_t tid;
    bool inflight;
    int64_t due, sent;
    uint16_t n;
    uint8_t buf[MAX_ADU];
};

static int g_regs = 100;
static int64_t g_period, g_end;
static _Atomic unsigned long long g_polls, g_errors, g_overruns, g_sum;
/* latency samples (ns): every g_stride-th answer, spread over the run */
static int64_t g_lat[LAT_SLOTS];
static _Atomic unsigned g_nlat;
static _Atomic unsigned long long g_nans;
static unsigned long long g_stride = 1;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void lat_add(int64_t ns)
{
    if (atomic_fetch_add(&g_nans, 1) % g_stride) return;
    unsigned i = atomic_fetch_add(&g_nlat, 1);
    if (i < LAT_SLOTS) g_lat[i] = ns;
}

static int dev_connect(struct dev *d)
{
    d->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (d->fd < 0) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d->port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int one = 1;
    setsockopt(d->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return connect(d->fd, (struct sockaddr *)&sa, sizeof sa);
}

static int send_req(struct dev *d)
{
    uint8_t q[12] = {(uint8_t)(++d->tid >> 8), (uint8_t)d->tid, 0, 0, 0, 6, 1, 3, 0, 0,
                     (uint8_t)(g_regs >> 8),   (uint8_t)g_regs};
    d->n = 0;
    d->sent = mono_ns();
    return send(d->fd, q, sizeof q, MSG_NOSIGNAL) == (ssize_t)sizeof q ? 0 : -1;
}

/* A whole answer in d->buf? 1 = decoded, 0 = not yet, -1 = bad. */
static int try_answer(struct dev *d)
{
    if (d->n < 9) return 0;
    unsigned len = 6u + ((unsigned)d->buf[4] << 8 | d->buf[5]);
    if (len > MAX_ADU) return -1;
    if (d->n < len) return 0;
    if (((unsigned)d->buf[0] << 8 | d->buf[1]) != d->tid || d->buf[7] != 3 || d->buf[8] != 2 * g_regs) return -1;
    unsigned long long sum = 0;
    for (int i = 0; i < g_regs; i++) sum += (unsigned)d->buf[9 + 2 * i] << 8 | d->buf[10 + 2 * i];
    atomic_fetch_add(&g_sum, sum);
    atomic_fetch_add(&g_polls, 1);
    lat_add(mono_ns() - d->sent);
    return 1;
}

/* ------------------------------------------------------------- threads */
static void *dev_thread(void *arg)
{
    struct dev *d = arg;
    for (;;) {
        struct timespec ts = {(time_t)(d->due / 1000000000LL), (long)(d->due % 1000000000LL)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
        if (d->due >= g_end) break;
        if (send_req(d) < 0) {
            atomic_fetch_add(&g_errors, 1);
            break;
        }
        int rc = 0;
        while (rc == 0) {
            struct pollfd p = {.fd = d->fd, .events = POLLIN};
            if (poll(&p, 1, 1000) <= 0) {
                rc = -1;
                break;
            }
            ssize_t r = recv(d->fd, d->buf + d->n, sizeof d->buf - d->n, 0);
            if (r <= 0) {
                rc = -1;
                break;
            }
            d->n = (uint16_t)(d->n + r);
            rc = try_answer(d);
        }
        if (rc < 0) atomic_fetch_add(&g_errors, 1);
        d->due += g_period;
        int64_t now = mono_ns();
        if (d->due <= now) { /* fell behind: skip, no burst */
            atomic_fetch_add(&g_overruns, 1);
            d->due = now + g_period;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------- event loop */
struct loop {
    struct dev **heap; /* by due */
    int n;
    int ep;
};

static void heap_down(struct dev **h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l]->due < h[m]->due) m = l;
        if (r < n && h[r]->due < h[m]->due) m = r;
        if (m == i) return;
        struct dev *t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void *loop_thread(void *arg)
{
    struct loop *L = arg;
    struct epoll_event evs[256];
    for (;;) {
        int64_t now = mono_ns();
        if (now >= g_end) break;
        /* send what is due: the heap's top, repeatedly */
        while (L->n && L->heap[0]->due <= now) {
            struct dev *d = L->heap[0];
            if (d->inflight) {
                atomic_fetch_add(&g_overruns, 1);
            } else if (send_req(d) < 0) {
                atomic_fetch_add(&g_errors, 1);
            } else {
                d->inflight = true;
            }
            d->due += g_period;
            if (d->due <= now) d->due = now + g_period;
            heap_down(L->heap, L->n, 0);
        }
        int64_t wait = L->n ? L->heap[0]->due - now : 100000000;
        if (wait > g_end - now) wait = g_end - now;
        int n = epoll_wait(L->ep, evs, 256, (int)((wait + 999999) / 1000000));
        for (int k = 0; k < n; k++) {
            struct dev *d = evs[k].data.ptr;
            for (;;) {
                ssize_t r = recv(d->fd, d->buf + d->n, sizeof d->buf - d->n, MSG_DONTWAIT);
                if (r <= 0) {
                    if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) atomic_fetch_add(&g_errors, 1);
                    break;
                }
                d->n = (uint16_t)(d->n + r);
                int rc = try_answer(d);
                if (rc != 0) {
                    if (rc < 0) atomic_fetch_add(&g_errors, 1);
                    d->inflight = false;
                    d->n = 0;
                    break;
                }
            }
        }
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') v = strtol(line + kl + 1, NULL, 10);
    if (f) fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    const char *model = "threads", *ports_file = NULL;
    int ndev = 1, period_ms = 100, nloops = 1;
    double duration = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--devices"))
            ndev = atoi(v);
        else if (!strcmp(a, "--ports-file"))
            ports_file = v;
        else if (!strcmp(a, "--period-ms"))
            period_ms = atoi(v);
        else if (!strcmp(a, "--regs"))
            g_regs = atoi(v);
        else if (!strcmp(a, "--duration"))
            duration = atof(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    bool threads = !strcmp(model, "threads");
    if (!strncmp(model, "pool:", 5)) nloops = atoi(model + 5);
    if (!threads && strcmp(model, "epoll") && strncmp(model, "pool:", 5)) nloops = 0;
    if (argc % 2 == 0 || !ports_file || ndev < 1 || ndev > 20000 || period_ms < 1 || g_regs < 1 || g_regs > 125 ||
        duration <= 0 || (!threads && (nloops < 1 || nloops > 64))) {
        fprintf(stderr, "usage: poll_models --model threads|epoll|pool:K --devices N --ports-file F"
                        " [--period-ms 100] [--regs 100] [--duration 10]\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int ports[8192], nports = 0;
    FILE *pf = fopen(ports_file, "r");
    while (pf && nports < 8192 && fscanf(pf, "%d", &ports[nports]) == 1) nports++;
    if (pf) fclose(pf);
    if (!nports) {
        fprintf(stderr, "no ports in %s\n", ports_file);
        return 2;
    }
    struct dev *devs = calloc((size_t)ndev, sizeof *devs);
    if (!devs) return 1;
    for (int i = 0; i < ndev; i++) {
        devs[i].port = ports[i % nports];
        if (dev_connect(&devs[i]) < 0) {
            fprintf(stderr, "connect to port %d: %s\n", devs[i].port, strerror(errno));
            return 1;
        }
    }
    g_period = (int64_t)period_ms * 1000000LL;
    unsigned long long expected = (unsigned long long)(duration * 1000.0 / period_ms) * (unsigned long long)ndev;
    g_stride = expected / LAT_SLOTS + 1;
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    int64_t t0 = mono_ns() + 1000000; /* everyone due at the same instant */
    g_end = t0 + (int64_t)(duration * 1e9);
    int nthr = threads ? ndev : nloops;
    pthread_t *th = calloc((size_t)nthr, sizeof *th);
    struct loop *loops = calloc((size_t)nloops, sizeof *loops);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < ndev; i++) devs[i].due = t0;
    if (threads) {
        for (int i = 0; i < ndev; i++)
            if (pthread_create(&th[i], &attr, dev_thread, &devs[i]) != 0) return 1;
    } else {
        for (int l = 0; l < nloops; l++) {
            loops[l].heap = calloc((size_t)ndev, sizeof *loops[l].heap);
            loops[l].ep = epoll_create1(EPOLL_CLOEXEC);
        }
        for (int i = 0; i < ndev; i++) {
            struct loop *L = &loops[i % nloops];
            L->heap[L->n++] = &devs[i];
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &devs[i]};
            epoll_ctl(L->ep, EPOLL_CTL_ADD, devs[i].fd, &ev);
        }
        for (int l = 0; l < nloops; l++)
            if (pthread_create(&th[l], &attr, loop_thread, &loops[l]) != 0) return 1;
    }
    /* the steady state's memory, half way through */
    struct timespec half = {(time_t)(duration / 2), (long)((duration / 2 - (int)(duration / 2)) * 1e9)};
    nanosleep(&half, NULL);
    long rss = status_kb("VmRSS"), nthreads_seen = -1;
    FILE *sf = fopen("/proc/self/status", "r");
    char line[256];
    while (sf && fgets(line, sizeof line, sf))
        if (!strncmp(line, "Threads:", 8)) nthreads_seen = strtol(line + 8, NULL, 10);
    if (sf) fclose(sf);
    for (int i = 0; i < nthr; i++) pthread_join(th[i], NULL);
    getrusage(RUSAGE_SELF, &r1);
    double el = (mono_ns() - t0) / 1e9;
    double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) +
                 (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) * 1e-6 +
                 (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) * 1e-6;
    unsigned nl = atomic_load(&g_nlat) < LAT_SLOTS ? atomic_load(&g_nlat) : LAT_SLOTS;
    qsort(g_lat, nl, sizeof *g_lat, cmp_i64);
    unsigned long long polls = atomic_load(&g_polls);
    printf(
        "{\"tool\":\"poll_models\",\"model\":\"%s\",\"devices\":%d,\"period_ms\":%d,\"regs\":%d,\"seconds\":%.3f,"
        "\"polls\":%llu,\"polls_per_s\":%.1f,\"expected_per_s\":%.1f,\"errors\":%llu,\"overruns\":%llu,"
        "\"cpu_s\":%.3f,\"cpu_pct\":%.2f,\"cpu_us_per_poll\":%.2f,\"vcsw\":%ld,\"ivcsw\":%ld,\"vcsw_per_poll\":%.2f,"
        "\"threads\":%ld,\"rss_kb\":%ld,\"hwm_kb\":%ld,\"lat_p50_us\":%.1f,\"lat_p99_us\":%.1f,\"lat_max_us\":%.1f}\n",
        model, ndev, period_ms, g_regs, el, polls, polls / el, ndev * 1000.0 / period_ms, atomic_load(&g_errors),
        atomic_load(&g_overruns), cpu, 100 * cpu / el, polls ? cpu * 1e6 / (double)polls : 0.0,
        r1.ru_nvcsw - r0.ru_nvcsw, r1.ru_nivcsw - r0.ru_nivcsw,
        polls ? (double)(r1.ru_nvcsw - r0.ru_nvcsw) / (double)polls : 0.0, nthreads_seen, rss, status_kb("VmHWM"),
        nl ? g_lat[nl / 2] / 1e3 : 0.0, nl ? g_lat[nl * 99 / 100] / 1e3 : 0.0, nl ? g_lat[nl - 1] / 1e3 : 0.0);
    for (int i = 0; i < ndev; i++) close(devs[i].fd);
    for (int l = 0; l < nloops; l++) {
        close(loops[l].ep);
        free(loops[l].heap);
    }
    free(loops);
    free(th);
    free(devs);
    pthread_attr_destroy(&attr);
    return 0;
}
