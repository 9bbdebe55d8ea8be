/* mosq_ingest.c — Mosquitto's own ingest limit: a bare libmosquitto publisher.
 *
 * No Modbus, no JSON building in the loop: the payload is formatted once, in
 * exactly the shape and size of the telemetry e2e_minimal and fieldbridge
 * publish for --regs registers ({"ts":..,"seq":..,"device":..,"values":
 * {"r0":{"v":0,"q":"good"},...}}), and published at QoS 1 over and over as
 * fast as the broker acknowledges, with at most --max-inflight (default 1000)
 * PUBACKs outstanding.  Only the 8-digit seq field is patched in place per
 * message (fixed width, so every message has the same size).  This is the
 * most any publisher of this message size could push through this broker on
 * this machine; the end-to-end figures are stated next to it.
 *
 * Because the payload has the same "v": count, bench/count_sub counts its
 * values like any other tool's.  Prints one JSON object on stdout
 * (messages/s and bytes/s acknowledged, values/s, CPU) and a human line on
 * stderr.
 *
 * usage: mosq_ingest [--port 1883] [--regs 100] [--duration 5] [--topic T]
 *                    [--max-inflight 1000] [--mqtt-version 5|311] [--qos 0|1]
 */
#include <errno.h>
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
    int port = 1883, regs = 100, max_inflight = 1000, version = 5, qos = 1;
    double duration = 5;
    const char *topic = "site/_/_/ingest/telemetry";
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--regs"))
            regs = atoi(v);
        else if (!strcmp(a, "--duration"))
            duration = atof(v);
        else if (!strcmp(a, "--topic"))
            topic = v;
        else if (!strcmp(a, "--max-inflight"))
            max_inflight = atoi(v);
        else if (!strcmp(a, "--mqtt-version"))
            version = atoi(v);
        else if (!strcmp(a, "--qos"))
            qos = atoi(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (argc % 2 == 0 || port < 1 || port > 65535 || regs < 1 || regs > 10000 || duration <= 0 || duration > 3600 ||
        max_inflight < 1 || (version != 5 && version != 311) || (qos != 0 && qos != 1)) {
        fprintf(stderr, "usage: mosq_ingest [--port P] [--regs N] [--duration S] [--topic T]"
                        " [--max-inflight N] [--mqtt-version 5|311] [--qos 0|1]\n");
        return 2;
    }

    /* the telemetry payload, once; seq is a fixed-width field patched per message */
    size_t cap = 256 + (size_t)regs * 48;
    char *msg = malloc(cap);
    if (!msg) return 1;
    int n =
        snprintf(msg, cap, "{\"ts\":\"2026-11-28T10:00:00.123Z\",\"seq\":%08d,\"device\":\"ingest\",\"values\":{", 0);
    char *seqp = strstr(msg, "\"seq\":") + 6;
    for (int i = 0; i < regs; i++)
        n += snprintf(msg + n, cap - (size_t)n, "%s\"r%d\":{\"v\":%d,\"q\":\"good\"}", i ? "," : "", i, i);
    n += snprintf(msg + n, cap - (size_t)n, "}}");

    mosquitto_lib_init();
    struct mosquitto *mq = mosquitto_new("mosq-ingest", true, &acks);
    if (!mq) return 1;
    mosquitto_int_option(mq, MOSQ_OPT_PROTOCOL_VERSION, version == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    mosquitto_int_option(mq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_max_inflight_messages_set(mq, (unsigned)max_inflight);
    mosquitto_connect_callback_set(mq, bench_on_connect);
    mosquitto_publish_callback_set(mq, bench_on_publish);
    if (mosquitto_connect(mq, "127.0.0.1", port, 30) != MOSQ_ERR_SUCCESS ||
        mosquitto_loop_start(mq) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mqtt connect to 127.0.0.1:%d failed\n", port);
        return 1;
    }
    struct timespec dl;
    bench_deadline(&dl, 5);
    pthread_mutex_lock(&acks.mu);
    while (acks.connected < 0)
        if (pthread_cond_timedwait(&acks.cv, &acks.mu, &dl) == ETIMEDOUT) break;
    int conn_ok = acks.connected == 1;
    pthread_mutex_unlock(&acks.mu);
    if (!conn_ok) {
        fprintf(stderr, "mqtt: not acks.connected\n");
        return 1;
    }

    unsigned long long published = 0, errors = 0;
    double c0 = bench_cpu_s(), t0 = bench_mono_s(), end = t0 + duration;
    while (bench_mono_s() < end) {
        char tmp[16];
        snprintf(tmp, sizeof tmp, "%08llu", (published + 1) % 100000000ULL);
        memcpy(seqp, tmp, 8);
        if (qos == 1) {
            pthread_mutex_lock(&acks.mu);
            while (published - acks.n_acked >= (unsigned long long)max_inflight) {
                bench_deadline(&dl, 1);
                if (pthread_cond_timedwait(&acks.cv, &acks.mu, &dl) == ETIMEDOUT && bench_mono_s() > end + 10) break;
            }
            pthread_mutex_unlock(&acks.mu);
        }
        if (mosquitto_publish(mq, NULL, topic, n, msg, qos, false) == MOSQ_ERR_SUCCESS)
            published++;
        else
            errors++;
    }
    double t_pub = bench_mono_s() - t0;
    bench_deadline(&dl, 10);
    pthread_mutex_lock(&acks.mu);
    while (qos == 1 && acks.n_acked < published)
        if (pthread_cond_timedwait(&acks.cv, &acks.mu, &dl) == ETIMEDOUT) break;
    unsigned long long acked = qos == 1 ? acks.n_acked : published;
    pthread_mutex_unlock(&acks.mu);
    double el = bench_mono_s() - t0, cpu = bench_cpu_s() - c0;

    mosquitto_disconnect(mq);
    mosquitto_loop_stop(mq, false);
    mosquitto_destroy(mq);
    mosquitto_lib_cleanup();

    printf("{\"tool\":\"mosq_ingest\",\"regs\":%d,\"qos\":%d,\"message_bytes\":%d,\"seconds\":%.3f,\"drain_s\":%.3f,"
           "\"published\":%llu,\"acked\":%llu,\"errors\":%llu,\"msgs_per_s\":%.1f,\"bytes_per_s\":%.1f,"
           "\"values_per_s\":%.1f,\"cpu_s\":%.3f,\"cpu_pct\":%.1f}\n",
           regs, qos, n, t_pub, el - t_pub, published, acked, errors, acked / t_pub, (double)acked * n / t_pub,
           (double)acked * regs / t_pub, cpu, 100.0 * cpu / el);
    fprintf(stderr, "mosq_ingest: %.0f msgs/s acked (%d B each, %.1f MB/s), CPU %.0f%% of a core, %llu errors\n",
            acked / t_pub, n, (double)acked * n / t_pub / 1e6, 100.0 * cpu / el, errors);
    free(msg);
    return published ? 0 : 1;
}
