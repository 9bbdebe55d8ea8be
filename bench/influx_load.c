/* influx_load.c — InfluxDB's own write limit on this machine: a bare HTTP
 * writer (libcurl) sending line protocol of exactly the shape the InfluxDB
 * sink writes, as fast as the server answers.
 *
 * A line is one device's poll: measurement and tag set as the sink's
 * defaults (dev<k>,device=dev<k>,gateway=load,site=bench), then per tag the
 * value and its quality (t<i>=<float>,t<i>_quality=0i), and a nanosecond time
 * stamp that never repeats, so every point is new to the server.  Bodies hold
 * --lines lines (the sink's batch.size), optionally gzip'd at level 1 (the
 * sink's default), and are POSTed back to back over --conns connections
 * (threads), each waiting for its answer.  Bodies are built while the
 * previous request is out, by the same thread; the tool's CPU is reported so
 * that it can be told apart from the server's.
 *
 * Prints one JSON object: points and values (tag values) written and per
 * second, requests, bytes sent (after gzip), errors, own CPU seconds.
 *
 * usage: influx_load --url URL [--devices 10] [--tags 100] [--lines 5000]
 *                    [--seconds 10] [--conns 1] [--gzip]
 */
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <zlib.h>

static const char *url;
static int ndev = 10, ntags = 100, nlines = 5000, conns = 1, gz;
static double seconds = 10;
static _Atomic uint64_t points, requests, bytes, errors;
static _Atomic int64_t next_ts;

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static size_t sink(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

static void *worker(void *arg)
{
    (void)arg;
    size_t cap = (size_t)nlines * ((size_t)ntags * 40 + 128) + 1024;
    char *body = malloc(cap), *zbuf = malloc(cap + 1024);
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: text/plain; charset=utf-8");
    h = curl_slist_append(h, "Expect:");
    if (gz) h = curl_slist_append(h, "Content-Encoding: gzip");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    z_stream z;
    memset(&z, 0, sizeof z);
    if (gz) deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    double end = mono() + seconds;
    uint64_t seq = 0;
    while (mono() < end) {
        size_t o = 0;
        int64_t ts = atomic_fetch_add(&next_ts, nlines);
        for (int l = 0; l < nlines; l++) {
            int d = (int)(seq++ % (uint64_t)ndev);
            o += (size_t)snprintf(body + o, cap - o, "dev%d,device=dev%d,gateway=load,site=bench", d, d);
            /* values like the sink's sine tags: 15-17 significant digits */
            for (int t = 0; t < ntags; t++)
                o += (size_t)snprintf(body + o, cap - o, "%ct%d=%.17g,t%d_quality=0i", t ? ',' : ' ', t,
                                      20.0 + 5.0 * sin((double)(seq * 7 + (uint64_t)t) * 0.001), t);
            o += (size_t)snprintf(body + o, cap - o, " %lld\n", (long long)(ts + l));
        }
        const char *payload = body;
        size_t plen = o;
        if (gz) {
            deflateReset(&z);
            z.next_in = (Bytef *)body;
            z.avail_in = (uInt)o;
            z.next_out = (Bytef *)zbuf;
            z.avail_out = (uInt)(cap + 1024);
            deflate(&z, Z_FINISH);
            payload = zbuf;
            plen = cap + 1024 - z.avail_out;
        }
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)plen);
        long code = 0;
        CURLcode rc = curl_easy_perform(e);
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        atomic_fetch_add(&requests, 1);
        if (rc != CURLE_OK || code != 204) {
            atomic_fetch_add(&errors, 1);
            continue;
        }
        atomic_fetch_add(&points, (uint64_t)nlines);
        atomic_fetch_add(&bytes, plen);
    }
    if (gz) deflateEnd(&z);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    free(body);
    free(zbuf);
    return NULL;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc)
            url = argv[++i];
        else if (!strcmp(argv[i], "--devices") && i + 1 < argc)
            ndev = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tags") && i + 1 < argc)
            ntags = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--lines") && i + 1 < argc)
            nlines = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--conns") && i + 1 < argc)
            conns = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gzip"))
            gz = 1;
        else {
            fprintf(stderr, "usage: influx_load --url URL [--devices N] [--tags N] [--lines N] [--seconds S] "
                            "[--conns N] [--gzip]\n");
            return 2;
        }
    }
    if (!url || ndev < 1 || ntags < 1 || nlines < 1 || conns < 1 || conns > 64 || seconds <= 0) {
        fprintf(stderr, "influx_load: --url is required; counts must be positive\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    atomic_store(&next_ts, (int64_t)now.tv_sec * 1000000000LL);
    pthread_t th[64];
    double t0 = mono();
    for (int i = 0; i < conns; i++) pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < conns; i++) pthread_join(th[i], NULL);
    double dt = mono() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    uint64_t p = atomic_load(&points);
    printf("{\"points\":%llu,\"values\":%llu,\"seconds\":%.3f,\"points_per_s\":%.1f,\"values_per_s\":%.1f,"
           "\"requests\":%llu,\"bytes\":%llu,\"bytes_per_value\":%.3f,\"errors\":%llu,\"cpu_s\":%.3f,\"conns\":%d,"
           "\"gzip\":%s}\n",
           (unsigned long long)p, (unsigned long long)(p * (uint64_t)ntags), dt, p / dt, p * (double)ntags / dt,
           (unsigned long long)atomic_load(&requests), (unsigned long long)atomic_load(&bytes),
           p ? (double)atomic_load(&bytes) / ((double)p * ntags) : 0.0, (unsigned long long)atomic_load(&errors), cpu,
           conns, gz ? "true" : "false");
    curl_global_cleanup();
    return atomic_load(&errors) && !p ? 1 : 0;
}
