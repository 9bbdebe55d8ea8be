/* e2e_minimal.c — the end-to-end limit: read → JSON → publish, nothing else.
 *
 * One loop: modbus_read_registers(addr, R) → the same telemetry JSON the
 * gateway publishes (DESIGN.md §7, docs/mqtt.md)
 *   {"ts":"2026-11-28T10:00:00.123Z","seq":N,"device":"e2e","values":
 *    {"r0":{"v":123,"q":"good"},...}}
 * built with snprintf → mosquitto_publish at QoS 1, for T seconds.  libmosquitto
 * runs its network thread (loop_start).  No scheduler, no bus, no pipeline, no
 * deadband: this is what a gateway that publishes every value could reach at
 * best with these two libraries on this machine.
 *
 * Back-pressure like the gateway's: at most --max-inflight messages may be
 * unacknowledged (PUBACK); the loop waits on a condition variable when that
 * many are outstanding, so the broker's ingest rate limits us instead of an
 * unbounded client-side queue.  After T seconds it waits (≤ 10 s) for the
 * remaining PUBACKs.  "values_per_s" counts acknowledged values only.
 *
 * Prints one JSON object on stdout and a human line on stderr.
 *
 * usage: e2e_minimal [--mb-port 5020] [--mqtt-port 1883] [--regs 100]
 *                    [--duration 5] [--topic T] [--device NAME]
 *                    [--max-inflight 1000] [--mqtt-version 5|311] [--unit 1]
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <modbus/modbus.h>
#include <mosquitto.h>

#include "bench_util.h"

static struct bench_acks acks = BENCH_ACKS_INIT;

/* "2026-11-28T10:00:00.123Z" */
static size_t fmt_now(char *out, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    return n + (size_t)snprintf(out + n, cap - n, ".%03uZ", (unsigned)(ts.tv_nsec / 1000000L) % 1000u);
}

int main(int argc, char **argv)
{
    int mb_port = 5020, mqtt_port = 1883, regs = 100, max_inflight = 1000, version = 5, unit = 1;
    double duration = 5;
    const char *topic = "site/_/_/e2e/telemetry", *device = "e2e";
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--mb-port"))
            mb_port = atoi(v);
        else if (!strcmp(a, "--mqtt-port"))
            mqtt_port = atoi(v);
        else if (!strcmp(a, "--regs"))
            regs = atoi(v);
        else if (!strcmp(a, "--duration"))
            duration = atof(v);
        else if (!strcmp(a, "--topic"))
            topic = v;
        else if (!strcmp(a, "--device"))
            device = v;
        else if (!strcmp(a, "--max-inflight"))
            max_inflight = atoi(v);
        else if (!strcmp(a, "--mqtt-version"))
            version = atoi(v);
        else if (!strcmp(a, "--unit"))
            unit = atoi(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (argc % 2 == 0 || regs < 1 || regs > MODBUS_MAX_READ_REGISTERS || duration <= 0 || duration > 3600 ||
        max_inflight < 1 || (version != 5 && version != 311)) {
        fprintf(stderr, "usage: e2e_minimal [--mb-port P] [--mqtt-port P] [--regs 1..125] [--duration S]"
                        " [--topic T] [--device NAME] [--max-inflight N] [--mqtt-version 5|311]\n");
        return 2;
    }

    modbus_t *mb = modbus_new_tcp("127.0.0.1", mb_port);
    if (!mb) return 1;
    modbus_set_slave(mb, unit);
    if (modbus_connect(mb) < 0) {
        fprintf(stderr, "modbus connect: %s\n", modbus_strerror(errno));
        return 1;
    }

    mosquitto_lib_init();
    struct mosquitto *mq = mosquitto_new("e2e-minimal", true, &acks);
    if (!mq) return 1;
    mosquitto_int_option(mq, MOSQ_OPT_PROTOCOL_VERSION, version == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    mosquitto_max_inflight_messages_set(mq, (unsigned)max_inflight);
    mosquitto_connect_callback_set(mq, bench_on_connect);
    mosquitto_publish_callback_set(mq, bench_on_publish);
    if (mosquitto_connect(mq, "127.0.0.1", mqtt_port, 30) != MOSQ_ERR_SUCCESS ||
        mosquitto_loop_start(mq) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mqtt connect to 127.0.0.1:%d failed\n", mqtt_port);
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

    /* key names are fixed: format them once, like a gateway resolves names at start-up */
    char(*keys)[16] = calloc((size_t)regs, sizeof *keys);
    size_t cap = 256 + (size_t)regs * 48;
    char *msg = malloc(cap);
    if (!keys || !msg) return 1;
    for (int i = 0; i < regs; i++) snprintf(keys[i], sizeof keys[i], "r%d", i);

    uint16_t val[MODBUS_MAX_READ_REGISTERS];
    unsigned long long polls = 0, errors = 0, published = 0, seq = 0;
    double c0 = bench_cpu_s(), t0 = bench_mono_s(), end = t0 + duration;
    while (bench_mono_s() < end) {
        if (modbus_read_registers(mb, 0, regs, val) != regs) {
            errors++;
            continue;
        }
        polls++;
        char ts[64];
        fmt_now(ts, sizeof ts);
        int n = snprintf(msg, cap, "{\"ts\":\"%s\",\"seq\":%llu,\"device\":\"%s\",\"values\":{", ts, ++seq, device);
        for (int i = 0; i < regs; i++)
            n += snprintf(msg + n, cap - (size_t)n, "%s\"%s\":{\"v\":%d,\"q\":\"good\"}", i ? "," : "", keys[i],
                          (int)(int16_t)val[i]);
        n += snprintf(msg + n, cap - (size_t)n, "}}");

        pthread_mutex_lock(&acks.mu);
        while (published - acks.n_acked >= (unsigned long long)max_inflight) {
            bench_deadline(&dl, 1);
            if (pthread_cond_timedwait(&acks.cv, &acks.mu, &dl) == ETIMEDOUT && bench_mono_s() > end + 10) break;
        }
        pthread_mutex_unlock(&acks.mu);
        if (mosquitto_publish(mq, NULL, topic, n, msg, 1, false) == MOSQ_ERR_SUCCESS)
            published++;
        else
            errors++;
    }
    double t_pub = bench_mono_s() - t0;
    /* drain: wait for the outstanding PUBACKs, at most 10 s */
    bench_deadline(&dl, 10);
    pthread_mutex_lock(&acks.mu);
    while (acks.n_acked < published)
        if (pthread_cond_timedwait(&acks.cv, &acks.mu, &dl) == ETIMEDOUT) break;
    unsigned long long acked = acks.n_acked;
    pthread_mutex_unlock(&acks.mu);
    double el = bench_mono_s() - t0, cpu = bench_cpu_s() - c0;

    mosquitto_disconnect(mq);
    mosquitto_loop_stop(mq, false);
    mosquitto_destroy(mq);
    mosquitto_lib_cleanup();
    modbus_close(mb);
    modbus_free(mb);

    /* rates over the publishing window; the drain is short and counted in CPU */
    printf("{\"tool\":\"e2e_minimal\",\"regs\":%d,\"seconds\":%.3f,\"drain_s\":%.3f,\"polls\":%llu,"
           "\"published\":%llu,\"acked\":%llu,\"errors\":%llu,\"polls_per_s\":%.1f,\"values_per_s\":%.1f,"
           "\"cpu_s\":%.3f,\"cpu_pct\":%.1f,\"cpu_us_per_value\":%.4f}\n",
           regs, t_pub, el - t_pub, polls, published, acked, errors, acked / t_pub, (double)acked * regs / t_pub, cpu,
           100.0 * cpu / el, acked ? cpu * 1e6 / ((double)acked * regs) : 0.0);
    fprintf(stderr, "e2e_minimal: %.0f polls/s, %.0f values/s acked, CPU %.0f%% of a core, %llu errors\n",
            acked / t_pub, (double)acked * regs / t_pub, 100.0 * cpu / el, errors);
    free(keys);
    free(msg);
    return 0;
}
