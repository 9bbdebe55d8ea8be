/* sse_clients.c — N Server-Sent Events subscribers of the HTTP API in one
 * process (bench/http_bench.py): a poll() loop over N loopback connections
 * to GET /api/v1/events, counting events and bytes per client and, for
 * `values` events, the delay from the batch's "ts" (the gateway's clock,
 * the same machine) to its arrival.  C, so the clients cost the 2-core
 * machine little next to the gateway being measured.
 *
 *   sse_clients PORT TOKEN N SECONDS
 * prints one JSON line: {"clients":N,"events":[...per client],"bytes":...,
 *   "values":..., "lat_ms":{"p50","p99","max"}, "disconnects":k}
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXC 256
#define BUF (1 << 20)

struct cl {
    int fd;
    char *buf;
    size_t len;
    long events, values;
    long long bytes;
    int open;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "2026-11-28T10:00:00.123Z" → seconds since the epoch (UTC) */
static double parse_ts(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int ms = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &ms) != 7)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm) + ms / 1000.0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: sse_clients PORT TOKEN N SECONDS\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[3]);
    double secs = atof(argv[4]);
    if (n < 1 || n > MAXC) return 2;
    static struct cl c[MAXC];
    struct pollfd pf[MAXC];
    size_t lcap = 1 << 20, nl = 0;
    double *lat = malloc(lcap * sizeof *lat);
    char req[512];
    snprintf(req, sizeof req,
             "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nAccept: "
             "text/event-stream\r\n\r\n",
             argv[2]);
    for (int i = 0; i < n; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        c[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c[i].fd, (struct sockaddr *)&sa, sizeof sa) < 0 || write(c[i].fd, req, strlen(req)) < 0) {
            perror("connect");
            return 1;
        }
        c[i].buf = malloc(BUF);
        c[i].open = 1;
        pf[i].fd = c[i].fd;
        pf[i].events = POLLIN;
    }
    double t0 = now_s(), warm = t0 + 1.0; /* the first second: connect, hello */
    int disc = 0;
    while (now_s() - t0 < secs + 1.0) {
        if (poll(pf, (nfds_t)n, 200) < 0) break;
        for (int i = 0; i < n; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)) || !c[i].open) continue;
            ssize_t r = read(c[i].fd, c[i].buf + c[i].len, BUF - 1 - c[i].len);
            if (r <= 0) {
                c[i].open = 0;
                pf[i].fd = -1;
                disc++;
                continue;
            }
            double t = now_s();
            c[i].len += (size_t)r;
            if (t >= warm) c[i].bytes += r;
            c[i].buf[c[i].len] = 0;
            /* frames end with a blank line; chunk framing lines in between are harmless here */
            char *p = c[i].buf, *e;
            while ((e = strstr(p, "\n\n"))) {
                *e = 0;
                if (t >= warm) {
                    c[i].events++;
                    char *v = strstr(p, "event: values\n");
                    if (v) {
                        c[i].values++;
                        char *ts = strstr(v, "\"ts\":\"");
                        if (ts && nl < lcap) {
                            double bt = parse_ts(ts + 6);
                            if (bt > 0) lat[nl++] = (t - bt) * 1000.0;
                        }
                    }
                }
                p = e + 2;
            }
            size_t rest = c[i].len - (size_t)(p - c[i].buf);
            memmove(c[i].buf, p, rest);
            c[i].len = rest;
            if (c[i].len > BUF / 2) c[i].len = 0; /* no frame is that long: resynchronise */
        }
    }
    double dur = now_s() - warm;
    qsort(lat, nl, sizeof *lat, cmp);
    long long bytes = 0;
    long values = 0;
    printf("{\"clients\":%d,\"seconds\":%.2f,\"events\":[", n, dur);
    for (int i = 0; i < n; i++) {
        printf("%s%ld", i ? "," : "", c[i].events);
        bytes += c[i].bytes;
        values += c[i].values;
    }
    printf("],\"values\":%ld,\"bytes\":%lld,\"disconnects\":%d,\"lat_ms\":{\"n\":%zu,\"p50\":%.2f,\"p99\":%.2f,"
           "\"max\":%.2f}}\n",
           values, bytes, disc, nl, nl ? lat[nl / 2] : 0, nl ? lat[nl * 99 / 100] : 0, nl ? lat[nl - 1] : 0);
    return 0;
}
