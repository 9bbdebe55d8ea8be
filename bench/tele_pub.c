/* tele_pub.c — a fleet's telemetry for the ingest benchmark: JSON messages in
 * our telemetry schema (docs/mqtt.md) on the default ISA-95 topics of
 * --devices devices, published at QoS 1 as fast as the broker acknowledges
 * (at most --max-inflight outstanding), or at --rate messages/s.
 *
 * Each message carries --values float values with quality and its own
 * millisecond time stamp, which advances by 1 ms per message of a device, so
 * every message is a new point in InfluxDB.  Payloads are formatted per
 * message (the time stamp and the values change); the tool's CPU is reported.
 *
 * Prints one JSON object: messages and bytes acknowledged by the broker, per
 * second, own CPU.
 *
 * usage: tele_pub [--port 1883] [--devices 100] [--values 10] [--seconds 10]
 *                 [--rate 0] [--max-inflight 1000] [--site bench]
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <mosquitto.h>

#include "bench_util.h"

static struct bench_acks acks = BENCH_ACKS_INIT;

int main(int argc, char **argv)
{
    int port = 1883, ndev = 100, nval = 10, inflight = 1000;
    double seconds = 10, rate = 0;
    const char *site = "bench";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--devices") && i + 1 < argc)
            ndev = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--values") && i + 1 < argc)
            nval = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rate") && i + 1 < argc)
            rate = atof(argv[++i]);
        else if (!strcmp(argv[i], "--max-inflight") && i + 1 < argc)
            inflight = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--site") && i + 1 < argc)
            site = argv[++i];
        else {
            fprintf(stderr, "usage: tele_pub [--port P] [--devices N] [--values N] [--seconds S] [--rate R] "
                            "[--max-inflight N] [--site S]\n");
            return 2;
        }
    }
    if (ndev < 1 || nval < 1 || inflight < 1 || seconds <= 0) return 2;
    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new("tele_pub", true, &acks);
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(m, MOSQ_OPT_SEND_MAXIMUM, inflight > 65535 ? 65535 : inflight);
    mosquitto_connect_callback_set(m, bench_on_connect);
    mosquitto_publish_callback_set(m, bench_on_publish);
    if (mosquitto_connect(m, "127.0.0.1", port, 30) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "tele_pub: cannot connect to 127.0.0.1:%d\n", port);
        return 1;
    }
    mosquitto_loop_start(m);
    pthread_mutex_lock(&acks.mu);
    while (acks.connected < 0) pthread_cond_wait(&acks.cv, &acks.mu);
    pthread_mutex_unlock(&acks.mu);
    if (acks.connected != 1) return 1;
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    long long base_ms = (long long)rt.tv_sec * 1000;
    char *payload = malloc((size_t)nval * 64 + 256);
    char topic[128];
    unsigned long long sent = 0, bytes = 0;
    double t0 = bench_mono_s(), end = t0 + seconds;
    while (bench_mono_s() < end) {
        if (rate > 0) {
            double ahead = (double)sent / rate - (bench_mono_s() - t0);
            if (ahead > 0) {
                struct timespec ts = {(time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
        pthread_mutex_lock(&acks.mu);
        while (sent - acks.n_acked >= (unsigned long long)inflight) pthread_cond_wait(&acks.cv, &acks.mu);
        pthread_mutex_unlock(&acks.mu);
        int d = (int)(sent % (unsigned long long)ndev);
        long long ms = base_ms + (long long)(sent / (unsigned long long)ndev);
        time_t s = (time_t)(ms / 1000);
        struct tm tm;
        gmtime_r(&s, &tm);
        int o = snprintf(payload, 256,
                         "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"seq\":%llu,\"device\":\"d%d\",\"values\":{",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                         (int)(ms % 1000), sent, d);
        for (int v = 0; v < nval; v++)
            o += snprintf(payload + o, 64, "%s\"t%d\":{\"v\":%.4f,\"q\":\"good\"}", v ? "," : "", v,
                          20.0 + (double)((sent * 13 + (unsigned long long)v) % 10000) / 1000.0);
        o += snprintf(payload + o, 8, "}}");
        snprintf(topic, sizeof topic, "%s/hall/l1/d%d/telemetry", site, d);
        if (mosquitto_publish(m, NULL, topic, o, payload, 1, false) != MOSQ_ERR_SUCCESS) break;
        sent++;
        bytes += (unsigned long long)o;
    }
    double pub_end = bench_mono_s();
    pthread_mutex_lock(&acks.mu);
    while (acks.n_acked < sent && bench_mono_s() < pub_end + 10) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&acks.cv, &acks.mu, &ts);
    }
    unsigned long long acked = acks.n_acked;
    pthread_mutex_unlock(&acks.mu);
    double dt = pub_end - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("{\"messages\":%llu,\"acked\":%llu,\"seconds\":%.3f,\"messages_per_s\":%.1f,\"bytes\":%llu,"
           "\"values_per_message\":%d,\"cpu_s\":%.3f}\n",
           sent, acked, dt, sent / dt, bytes, nval, cpu);
    mosquitto_disconnect(m);
    mosquitto_loop_stop(m, false);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    free(payload);
    return 0;
}
