/* count_sub.c — the counting subscriber every benchmark measures at.
 *
 * Subscribes (libmosquitto, QoS 1 by default so the broker does not drop) to a
 * topic filter and counts messages, bytes and values — a value is one
 * occurrence of `"v":` in a payload, i.e. one tag update with its quality, as
 * the telemetry JSON of DESIGN.md §7 writes it.  Counting by substring keeps
 * the subscriber cheap so it is not the side that limits a throughput run
 * (its own CPU is reported so that can be checked).
 *
 * Latency mode (--latency-tag NAME): for each message it finds
 * `"NAME":{"v":<int>`, and records the arrival time (CLOCK_REALTIME) of the
 * first message that carries each new value.  With --tick-log FILE (written
 * by mb_server_fast --tick-log: "value realtime_ns" per change) it joins the
 * two at exit: latency = arrival − the time the server made that value
 * readable, reported as p50/p99/max.  Both clocks are the same machine's.
 *
 * Ends on SIGINT/SIGTERM, after --duration seconds, or after --idle-exit
 * seconds without a message once one has arrived; then prints one JSON
 * object with totals and a per-second series on stdout.  --ready-file PATH is
 * created once the subscription is acknowledged (for scripts to wait on).
 *
 * Measurement windows: each SIGUSR1 records a mark (monotonic time, values and
 * messages so far); the output lists the marks and the rate between the first
 * two, so a harness can count exactly over the window in which it also samples
 * the producer's CPU.  "first_msg_unix_ns" (CLOCK_REALTIME of the first
 * message) lets it compute start-up time to first publish.
 *
 * usage: count_sub [--port 1883] [--topic '#'] [--qos 1] [--duration 60]
 *                  [--idle-exit S] [--ready-file PATH]
 *                  [--latency-tag NAME] [--tick-log FILE] [--mqtt-version 5|311]
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

#include "bench_util.h"

#define MAX_SECONDS 3600
#define MAX_LAT 200000

#define MAX_MARKS 16

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static struct {
    unsigned long long msgs, values, bytes;
    double t_first, t_last, t_start;
    unsigned long long per_sec[MAX_SECONDS];
    int subscribed;
    const char *lat_needle; /* "\"NAME\":{\"v\":" */
    size_t lat_len;
    long long last_val;
    int have_last;
    long long *lat_val;
    int64_t *lat_ns;
    size_t nlat;
    unsigned long long lat_unparsed;
    int64_t first_real_ns;
} st;

/* written by the SIGUSR1 handler only; on_message runs in the same thread, so a
 * mark is taken between two messages, never in the middle of one's counting
 * in a way that matters (64-bit aligned loads on the architectures we run) */
static struct mark {
    double t;
    unsigned long long values, msgs;
} marks[MAX_MARKS];
static volatile sig_atomic_t nmarks;

static int64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void on_mark(int sig)
{
    (void)sig;
    if (nmarks >= MAX_MARKS) return;
    struct mark *m = &marks[nmarks];
    m->t = bench_mono_s();
    m->values = st.values;
    m->msgs = st.msgs;
    nmarks = nmarks + 1;
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted)
{
    (void)m;
    (void)ud;
    (void)mid;
    (void)n;
    (void)granted;
    st.subscribed = 1;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg)
{
    (void)m;
    (void)ud;
    int64_t arrival = st.lat_needle ? real_ns() : 0;
    double now = bench_mono_s();
    if (!st.msgs) {
        st.t_first = now;
        st.first_real_ns = real_ns();
    }
    st.t_last = now;
    st.msgs++;
    st.bytes += (unsigned long long)msg->payloadlen;
    const char *p = msg->payload, *end = p + msg->payloadlen;
    unsigned long long nv = 0;
    while (p < end) {
        const char *q = memmem(p, (size_t)(end - p), "\"v\":", 4);
        if (!q) break;
        nv++;
        p = q + 4;
    }
    st.values += nv;
    long sec = (long)(now - st.t_start);
    if (sec >= 0 && sec < MAX_SECONDS) st.per_sec[sec] += nv;

    if (st.lat_needle && msg->payloadlen > 0) {
        const char *q = memmem(msg->payload, (size_t)msg->payloadlen, st.lat_needle, st.lat_len);
        if (!q) return;
        q += st.lat_len;
        char num[32];
        size_t k = 0;
        while (q < end && k + 1 < sizeof num && (*q == '-' || (*q >= '0' && *q <= '9'))) num[k++] = *q++;
        num[k] = 0;
        if (!k) {
            st.lat_unparsed++; /* null (bad quality) or not an integer */
            return;
        }
        long long v = strtoll(num, NULL, 10);
        if (st.have_last && v == st.last_val) return;
        st.have_last = 1;
        st.last_val = v;
        if (st.nlat < MAX_LAT) {
            st.lat_val[st.nlat] = v;
            st.lat_ns[st.nlat] = arrival;
            st.nlat++;
        }
    }
}

/* Join arrivals with the server's change log; prints the "latency" member. */
static void print_latency(const char *tick_log)
{
    FILE *f = fopen(tick_log, "r");
    if (!f) {
        printf(",\"latency\":{\"error\":\"cannot open tick log\"}");
        return;
    }
    size_t cap = 1024, n = 0;
    long long *tv = malloc(cap * sizeof *tv);
    int64_t *tt = malloc(cap * sizeof *tt);
    long long v;
    long long t;
    while (tv && tt && fscanf(f, "%lld %lld", &v, &t) == 2) {
        if (n == cap) {
            cap *= 2;
            long long *nv = realloc(tv, cap * sizeof *tv);
            int64_t *nt = realloc(tt, cap * sizeof *tt);
            if (!nv || !nt) {
                free(nv ? nv : tv);
                free(nt ? nt : tt);
                fclose(f);
                printf(",\"latency\":{\"error\":\"out of memory\"}");
                return;
            }
            tv = nv;
            tt = nt;
        }
        tv[n] = v;
        tt[n] = t;
        n++;
    }
    fclose(f);
    int64_t *lat = malloc((st.nlat + 1) * sizeof *lat);
    size_t nl = 0, unmatched = 0, j = 0;
    /* both series are in time order: walk the change log alongside the arrivals,
     * taking the latest change of the arrived value (mod 65536) before it arrived */
    for (size_t i = 0; lat && i < st.nlat; i++) {
        while (j < n && tt[j] <= st.lat_ns[i]) j++;
        size_t k = j;
        int found = 0;
        while (k > 0) {
            k--;
            if (((tv[k] - st.lat_val[i]) & 0xffff) == 0) {
                found = 1;
                break;
            }
            if (j - k > 100000) break;
        }
        /* the first arrival may show the value from before the first change */
        if (found)
            lat[nl++] = st.lat_ns[i] - tt[k];
        else
            unmatched++;
    }
    /* skip the very first sample: it shows whatever value was current at start */
    if (nl > 0) {
        memmove(lat, lat + 1, (nl - 1) * sizeof *lat);
        nl--;
    }
    qsort(lat, nl, sizeof *lat, bench_cmp_i64);
    if (nl) {
        double sum = 0;
        for (size_t i = 0; i < nl; i++) sum += (double)lat[i];
        printf(",\"latency\":{\"samples\":%zu,\"unmatched\":%zu,\"changes\":%zu,\"p50_ms\":%.3f,"
               "\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"min_ms\":%.3f,\"mean_ms\":%.3f}",
               nl, unmatched, n, lat[nl / 2] / 1e6, lat[nl * 9 / 10] / 1e6, lat[(nl * 99) / 100] / 1e6,
               lat[nl - 1] / 1e6, lat[0] / 1e6, sum / (double)nl / 1e6);
    } else {
        printf(",\"latency\":{\"samples\":0,\"unmatched\":%zu,\"changes\":%zu}", unmatched, n);
    }
    free(lat);
    free(tv);
    free(tt);
}

int main(int argc, char **argv)
{
    int port = 1883, qos = 1, version = 5;
    double duration = 60, idle_exit = 0;
    const char *topic = "#", *ready_file = NULL, *lat_tag = NULL, *tick_log = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--topic"))
            topic = v;
        else if (!strcmp(a, "--qos"))
            qos = atoi(v);
        else if (!strcmp(a, "--duration"))
            duration = atof(v);
        else if (!strcmp(a, "--idle-exit"))
            idle_exit = atof(v);
        else if (!strcmp(a, "--ready-file"))
            ready_file = v;
        else if (!strcmp(a, "--latency-tag"))
            lat_tag = v;
        else if (!strcmp(a, "--tick-log"))
            tick_log = v;
        else if (!strcmp(a, "--mqtt-version"))
            version = atoi(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (argc % 2 == 0 || qos < 0 || qos > 2 || duration <= 0 || duration > MAX_SECONDS ||
        (version != 5 && version != 311)) {
        fprintf(stderr, "usage: count_sub [--port P] [--topic F] [--qos 0..2] [--duration S] [--idle-exit S]"
                        " [--ready-file PATH] [--latency-tag NAME] [--tick-log FILE]\n");
        return 2;
    }
    char needle[256];
    if (lat_tag) {
        snprintf(needle, sizeof needle, "\"%s\":{\"v\":", lat_tag);
        st.lat_needle = needle;
        st.lat_len = strlen(needle);
        st.lat_val = calloc(MAX_LAT, sizeof *st.lat_val);
        st.lat_ns = calloc(MAX_LAT, sizeof *st.lat_ns);
        if (!st.lat_val || !st.lat_ns) return 1;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct sigaction su = {0};
    su.sa_handler = on_mark;
    sigaction(SIGUSR1, &su, NULL);

    mosquitto_lib_init();
    char cid[64];
    snprintf(cid, sizeof cid, "count-sub-%d", (int)getpid());
    struct mosquitto *mq = mosquitto_new(cid, true, NULL);
    if (!mq) return 1;
    mosquitto_int_option(mq, MOSQ_OPT_PROTOCOL_VERSION, version == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    mosquitto_subscribe_callback_set(mq, on_subscribe);
    mosquitto_message_callback_set(mq, on_message);
    if (mosquitto_connect(mq, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "count_sub: cannot connect to 127.0.0.1:%d\n", port);
        return 1;
    }
    mosquitto_subscribe(mq, NULL, topic, qos);
    st.t_start = bench_mono_s();
    double end = st.t_start + duration;
    int ready_done = 0;
    struct rusage r0;
    getrusage(RUSAGE_SELF, &r0);
    while (!stop_flag) {
        int rc = mosquitto_loop(mq, 100, 1);
        if (rc == MOSQ_ERR_ERRNO && errno == EINTR) rc = MOSQ_ERR_SUCCESS; /* a SIGUSR1 mark */
        if (rc != MOSQ_ERR_SUCCESS) {
            if (stop_flag) break;
            fprintf(stderr, "count_sub: connection lost (%s), reconnecting\n", mosquitto_strerror(rc));
            struct timespec ts = {0, 100000000L};
            nanosleep(&ts, NULL);
            mosquitto_reconnect(mq);
        }
        double now = bench_mono_s();
        if (st.subscribed && !ready_done) {
            ready_done = 1;
            if (ready_file) {
                FILE *f = fopen(ready_file, "w");
                if (f) fclose(f);
            }
        }
        if (now >= end) break;
        if (idle_exit > 0 && st.msgs && now - st.t_last >= idle_exit) break;
    }
    struct rusage r1;
    getrusage(RUSAGE_SELF, &r1);
    double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) +
                 (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) * 1e-6 +
                 (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) * 1e-6;
    double span = st.msgs > 1 ? st.t_last - st.t_first : 0;
    printf("{\"tool\":\"count_sub\",\"topic\":\"%s\",\"messages\":%llu,\"values\":%llu,\"bytes\":%llu,"
           "\"span_s\":%.3f,\"values_per_s\":%.1f,\"messages_per_s\":%.1f,\"cpu_s\":%.3f",
           topic, st.msgs, st.values, st.bytes, span, span > 0 ? st.values / span : 0.0,
           span > 0 ? st.msgs / span : 0.0, cpu);
    printf(",\"first_msg_unix_ns\":%lld", (long long)st.first_real_ns);
    int nm = nmarks;
    printf(",\"marks\":[");
    for (int i = 0; i < nm; i++)
        printf("%s{\"t\":%.6f,\"values\":%llu,\"messages\":%llu}", i ? "," : "", marks[i].t - st.t_start,
               marks[i].values, marks[i].msgs);
    printf("]");
    if (nm >= 2 && marks[1].t > marks[0].t)
        printf(",\"window\":{\"seconds\":%.3f,\"values\":%llu,\"messages\":%llu,\"values_per_s\":%.1f}",
               marks[1].t - marks[0].t, marks[1].values - marks[0].values, marks[1].msgs - marks[0].msgs,
               (marks[1].values - marks[0].values) / (marks[1].t - marks[0].t));
    long last = (long)(bench_mono_s() - st.t_start);
    if (last >= MAX_SECONDS) last = MAX_SECONDS - 1;
    printf(",\"per_second\":[");
    for (long s = 0; s <= last; s++) printf("%s%llu", s ? "," : "", st.per_sec[s]);
    printf("]");
    if (lat_tag) {
        printf(",\"latency_tag\":\"%s\",\"arrivals\":%zu,\"unparsed\":%llu", lat_tag, st.nlat, st.lat_unparsed);
        if (tick_log) print_latency(tick_log);
    }
    printf("}\n");
    fflush(stdout);
    mosquitto_disconnect(mq);
    mosquitto_destroy(mq);
    mosquitto_lib_cleanup();
    free(st.lat_val);
    free(st.lat_ns);
    return 0;
}
