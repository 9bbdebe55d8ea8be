/* cmd_rtt.c — command round trip: MQTT command → register written → response.
 *
 * Sends --count write commands, one at a time, in the JSON of DESIGN.md §7
 *   {"id":"rtt-17","write":{"<tag>":17}}
 * at QoS 1 to the device's command topic and waits (≤ --timeout) for the
 * response with the same id on <command topic>/response.  The round trip is
 * measured from just before mosquitto_publish to the arrival of the response
 * in our network callback (CLOCK_MONOTONIC), so it includes the broker twice,
 * the gateway's validation and the Modbus write.  Commands are spaced by
 * --interval so we measure the path, not a queue.  With --mb-port, the
 * register is read back at the end (libmodbus) to check the writes really
 * reached the device.
 *
 * Prints one JSON object (ok / refused / timeouts, p50 / p99 / max ms).
 *
 * usage: cmd_rtt --topic site/_/_/dev/command --tag sp [--port 1883]
 *                [--count 200] [--interval-ms 5] [--timeout 2] [--duration 60]
 *                [--mb-port P --addr A]
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <modbus/modbus.h>
#include <mosquitto.h>

#include "bench_util.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int subscribed;
static char want_id[64];
static int got; /* 0 waiting, 1 ok:true, 2 ok:false */
static int64_t got_ns;
static char last_resp[512];

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *g)
{
    (void)m, (void)ud, (void)mid, (void)n, (void)g;
    pthread_mutex_lock(&mu);
    subscribed = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg)
{
    (void)m, (void)ud;
    int64_t now = bench_mono_ns();
    char idpat[96];
    pthread_mutex_lock(&mu);
    snprintf(idpat, sizeof idpat, "\"id\":\"%s\"", want_id);
    if (!got && msg->payloadlen > 0 && memmem(msg->payload, (size_t)msg->payloadlen, idpat, strlen(idpat))) {
        /* the top-level "ok" is the first one in the response */
        const char *ok = memmem(msg->payload, (size_t)msg->payloadlen, "\"ok\":", 5);
        got = ok && !strncmp(ok + 5, "true", 4) ? 1 : 2;
        got_ns = now;
        int n = msg->payloadlen < (int)sizeof last_resp - 1 ? msg->payloadlen : (int)sizeof last_resp - 1;
        memcpy(last_resp, msg->payload, (size_t)n);
        last_resp[n] = 0;
        pthread_cond_broadcast(&cv);
    }
    pthread_mutex_unlock(&mu);
}

int main(int argc, char **argv)
{
    int port = 1883, count = 200, mb_port = 0, addr = 0;
    double interval_ms = 5, timeout = 2, duration = 60;
    const char *topic = NULL, *tag = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--topic"))
            topic = v;
        else if (!strcmp(a, "--tag"))
            tag = v;
        else if (!strcmp(a, "--count"))
            count = atoi(v);
        else if (!strcmp(a, "--interval-ms"))
            interval_ms = atof(v);
        else if (!strcmp(a, "--timeout"))
            timeout = atof(v);
        else if (!strcmp(a, "--duration"))
            duration = atof(v);
        else if (!strcmp(a, "--mb-port"))
            mb_port = atoi(v);
        else if (!strcmp(a, "--addr"))
            addr = atoi(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (argc % 2 == 0 || !topic || !tag || count < 1 || count > 1000000 || timeout <= 0 || duration <= 0 ||
        strlen(topic) > 200 || strlen(tag) > 100) {
        fprintf(stderr, "usage: cmd_rtt --topic T --tag NAME [--port P] [--count N] [--interval-ms MS]"
                        " [--timeout S] [--duration S] [--mb-port P --addr A]\n");
        return 2;
    }
    char rtopic[256];
    snprintf(rtopic, sizeof rtopic, "%s/response", topic);

    mosquitto_lib_init();
    struct mosquitto *mq = mosquitto_new("cmd-rtt", true, NULL);
    if (!mq) return 1;
    mosquitto_int_option(mq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    /* our small command must not wait for Nagle: measure the gateway, not us */
    mosquitto_int_option(mq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_subscribe_callback_set(mq, on_subscribe);
    mosquitto_message_callback_set(mq, on_message);
    if (mosquitto_connect(mq, "127.0.0.1", port, 30) != MOSQ_ERR_SUCCESS ||
        mosquitto_loop_start(mq) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "cmd_rtt: cannot connect to 127.0.0.1:%d\n", port);
        return 1;
    }
    mosquitto_subscribe(mq, NULL, rtopic, 1);
    struct timespec dl;
    bench_deadline(&dl, 5);
    pthread_mutex_lock(&mu);
    while (!subscribed)
        if (pthread_cond_timedwait(&cv, &mu, &dl) == ETIMEDOUT) break;
    int sub_ok = subscribed;
    pthread_mutex_unlock(&mu);
    if (!sub_ok) {
        fprintf(stderr, "cmd_rtt: no SUBACK\n");
        return 1;
    }

    int64_t *rtt = calloc((size_t)count, sizeof *rtt);
    if (!rtt) return 1;
    int n_ok = 0, n_refused = 0, n_timeout = 0, sent = 0, last_value = -1;
    int64_t end = bench_mono_ns() + (int64_t)(duration * 1e9);
    for (int k = 0; k < count && bench_mono_ns() < end; k++) {
        char payload[256];
        int value = k % 30000;
        pthread_mutex_lock(&mu);
        snprintf(want_id, sizeof want_id, "rtt-%d", k);
        got = 0;
        pthread_mutex_unlock(&mu);
        int n = snprintf(payload, sizeof payload, "{\"id\":\"rtt-%d\",\"write\":{\"%s\":%d}}", k, tag, value);
        int64_t t0 = bench_mono_ns();
        if (mosquitto_publish(mq, NULL, topic, n, payload, 1, false) != MOSQ_ERR_SUCCESS) {
            n_timeout++;
            continue;
        }
        sent++;
        bench_deadline(&dl, timeout);
        pthread_mutex_lock(&mu);
        while (!got)
            if (pthread_cond_timedwait(&cv, &mu, &dl) == ETIMEDOUT) break;
        int g = got;
        int64_t t1 = got_ns;
        pthread_mutex_unlock(&mu);
        if (g == 1) {
            rtt[n_ok++] = t1 - t0;
            last_value = value;
        } else if (g == 2) {
            n_refused++;
        } else {
            n_timeout++;
        }
        if (interval_ms > 0) {
            struct timespec ts = {(time_t)(interval_ms / 1000),
                                  (long)(((long long)(interval_ms * 1e6)) % 1000000000LL)};
            nanosleep(&ts, NULL);
        }
    }
    mosquitto_disconnect(mq);
    mosquitto_loop_stop(mq, false);
    mosquitto_destroy(mq);
    mosquitto_lib_cleanup();

    int verified = -1; /* -1 not checked, 0 mismatch, 1 register holds the last written value */
    long readback = -1;
    if (mb_port > 0 && last_value >= 0) {
        modbus_t *mb = modbus_new_tcp("127.0.0.1", mb_port);
        uint16_t r;
        if (mb && modbus_connect(mb) == 0 && modbus_read_registers(mb, addr, 1, &r) == 1) {
            readback = r;
            verified = r == (uint16_t)last_value;
        } else {
            verified = 0;
        }
        if (mb) {
            modbus_close(mb);
            modbus_free(mb);
        }
    }
    qsort(rtt, (size_t)n_ok, sizeof *rtt, bench_cmp_i64);
    printf("{\"tool\":\"cmd_rtt\",\"sent\":%d,\"ok\":%d,\"refused\":%d,\"timeouts\":%d,\"verified\":%d,"
           "\"readback\":%ld,\"last_written\":%d",
           sent, n_ok, n_refused, n_timeout, verified, readback, last_value);
    if (n_ok)
        printf(",\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"min_ms\":%.3f", rtt[n_ok / 2] / 1e6,
               rtt[n_ok * 9 / 10] / 1e6, rtt[n_ok * 99 / 100] / 1e6, rtt[n_ok - 1] / 1e6, rtt[0] / 1e6);
    if (n_refused) {
        printf(",\"last_response\":\"");
        for (const char *p = last_resp; *p; p++) {
            if (*p == '"' || *p == '\\') putchar('\\');
            if ((unsigned char)*p >= 0x20) putchar(*p);
        }
        printf("\"");
    }
    printf("}\n");
    free(rtt);
    return n_ok ? 0 : 1;
}
