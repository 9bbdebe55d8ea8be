/* floor.c — the floor: what one tuned single-threaded publisher needs per
 * value, the reference fieldbridge is stated against (issue 15).
 *
 * One thread, one loop, no library between it and the MQTT socket:
 *   read R holding registers from 0         — framed as fieldbridge's Modbus
 *     driver frames TCP reads (south/modbus/modbus_proto.c): one send() and
 *     one blocking recv() per request (libmodbus's modbus_read_registers
 *     makes seven system calls; the floor must not be dearer than the
 *     gateway it measures)
 *   → the same telemetry JSON as fieldbridge, written with fieldbridge's own
 *     JSON helpers (core/buf.h: fb_fmt_time, fb_json_*) into a reused buffer
 *   → an MQTT 5 PUBLISH (QoS 1) framed by hand and appended to an output
 *     buffer; every --batch messages (default 8) the buffer goes out in one
 *     send(), and whatever PUBACKs have arrived are read in one recv() and
 *     counted.  At most --max-inflight messages are unacknowledged; when that
 *     many are, it blocks in recv() for PUBACKs (the broker's ingest rate
 *     then limits it, as for every other tool).
 * No second thread, no wake-ups besides the Modbus and MQTT sockets, no
 * allocation in the loop: a gateway cannot be cheaper per value than this
 * with the same server, broker and payload.  --batch 1 sends every message
 * alone (one send() per PUBLISH), still reading PUBACKs in bulk.
 *
 * Prints one JSON object on stdout (bench/run.sh) and a human line on stderr;
 * "values_per_s" counts acknowledged values.
 *
 * usage: floor [--mb-port 5020] [--mqtt-port 1883] [--regs 100] [--duration 5]
 *              [--topic T] [--device NAME] [--batch 8] [--max-inflight 1000]
 *              [--unit 1]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <modbus/modbus.h>

#include "bench_util.h"

#include "core/buf.h"
#include "core/fb.h"
#include "south/modbus/modbus_proto.h"

static size_t put_varint(uint8_t *p, size_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 127;
        v >>= 7;
        p[n++] = (uint8_t)(b | (v ? 128 : 0));
    } while (v);
    return n;
}

static int send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Incoming bytes: only PUBACKs are expected (no subscriptions). */
static uint8_t in[1 << 16];
static size_t in_len;
static unsigned long long acked, protocol_errors;

static int read_acks(int fd, int flags)
{
    ssize_t r = recv(fd, in + in_len, sizeof in - in_len, flags);
    if (r == 0) return -1;
    if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    in_len += (size_t)r;
    size_t pos = 0;
    for (;;) {
        if (in_len - pos < 2) break;
        size_t len = 0, mul = 1, k = 1;
        while (k < 5 && pos + k < in_len) {
            len += (in[pos + k] & 127u) * mul;
            mul *= 128;
            if (!(in[pos + k++] & 128)) break;
        }
        if (pos + k + len > in_len || (k < 5 && (in[pos + k - 1] & 128))) break;
        if ((in[pos] & 0xF0) == 0x40)
            acked++;
        else
            protocol_errors++;
        pos += k + len;
    }
    memmove(in, in + pos, in_len - pos);
    in_len -= pos;
    return 0;
}

/* R holding registers from 0: R, or -1 (the answer was not the expected one) */
static int read_regs(int fd, uint16_t tid, int unit, int regs, uint16_t *val)
{
    uint8_t req[MB_TCP_REQ_LEN], buf[2 * MB_TCP_ADU_MAX];
    mb_tcp_read_request(req, tid, (uint8_t)unit, MB_HR, 0, (uint16_t)regs);
    if (send(fd, req, sizeof req, MSG_NOSIGNAL) != (ssize_t)sizeof req) return -1;
    size_t have = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
        if (r <= 0) return -1;
        have += (size_t)r;
        int exc;
        enum mb_rsp v = mb_tcp_take(req, buf, &have, val, NULL, &exc);
        if (v == MB_RSP_OK) return regs;
        if (v != MB_RSP_MORE) return -1;
    }
}

int main(int argc, char **argv)
{
    int mb_port = 5020, mqtt_port = 1883, regs = 100, batch = 8, max_inflight = 1000, unit = 1;
    double duration = 5;
    const char *topic = "site/_/_/floor/telemetry", *device = "floor";
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
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--max-inflight"))
            max_inflight = atoi(v);
        else if (!strcmp(a, "--unit"))
            unit = atoi(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (argc % 2 == 0 || regs < 1 || regs > MODBUS_MAX_READ_REGISTERS || duration <= 0 || duration > 3600 ||
        batch < 1 || batch > 64 || max_inflight < 1 || max_inflight > 65535) {
        fprintf(stderr, "usage: floor [--mb-port P] [--mqtt-port P] [--regs 1..125] [--duration S] [--topic T]"
                        " [--device NAME] [--batch 1..64] [--max-inflight N] [--unit U]\n");
        return 2;
    }

    modbus_t *mb = modbus_new_tcp("127.0.0.1", mb_port);
    if (!mb) return 1;
    modbus_set_slave(mb, unit);
    if (modbus_connect(mb) < 0) {
        fprintf(stderr, "modbus connect: %s\n", modbus_strerror(errno));
        return 1;
    }

    /* MQTT 5 CONNECT, clean start, keepalive 60 s, no properties */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)mqtt_port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "mqtt connect to 127.0.0.1:%d: %s\n", mqtt_port, strerror(errno));
        return 1;
    }
    static const char cid[] = "fb-floor";
    uint8_t c[64];
    size_t cl = 0;
    const uint8_t vh[] = {0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0};
    c[cl++] = 0x10;
    c[cl++] = (uint8_t)(sizeof vh + 2 + sizeof cid - 1);
    memcpy(c + cl, vh, sizeof vh);
    cl += sizeof vh;
    c[cl++] = 0;
    c[cl++] = (uint8_t)(sizeof cid - 1);
    memcpy(c + cl, cid, sizeof cid - 1);
    cl += sizeof cid - 1;
    uint8_t ca[64];
    if (send_all(fd, c, cl) < 0 || recv(fd, ca, sizeof ca, 0) < 4 || ca[0] != 0x20 || ca[3] != 0) {
        fprintf(stderr, "mqtt: CONNECT refused or no CONNACK\n");
        return 1;
    }

    /* key names are fixed: format them once, as a gateway resolves names at start-up */
    char(*keys)[16] = calloc((size_t)regs, sizeof *keys);
    if (!keys) return 1;
    for (int i = 0; i < regs; i++) snprintf(keys[i], sizeof keys[i], "r%d", i);
    size_t tlen = strlen(topic);
    struct fb_buf pl, out;
    fb_buf_init(&pl);
    fb_buf_init(&out);

    /* blocking: one recv() waits for the answer */
    int mfd = modbus_get_socket(mb);
    fcntl(mfd, F_SETFL, fcntl(mfd, F_GETFL) & ~O_NONBLOCK);
    uint16_t tid = 0;
    uint16_t val[MODBUS_MAX_READ_REGISTERS];
    unsigned long long polls = 0, errors = 0, published = 0, seq = 0;
    uint16_t pid = 0;
    int pending = 0;
    double c0 = bench_cpu_s(), t0 = bench_mono_s(), end = t0 + duration;
    while (bench_mono_s() < end) {
        if (read_regs(mfd, ++tid, unit, regs, val) != regs) {
            errors++;
            continue;
        }
        polls++;
        fb_buf_clear(&pl);
        fb_buf_puts(&pl, "{\"ts\":\"");
        char ts[40];
        fb_buf_put(&pl, ts, fb_fmt_time(ts, fb_now_ns()));
        fb_buf_puts(&pl, "\",\"seq\":");
        fb_json_u64(&pl, ++seq);
        fb_buf_puts(&pl, ",\"device\":");
        fb_json_cstr(&pl, device);
        fb_buf_puts(&pl, ",\"values\":{");
        for (int i = 0; i < regs; i++) {
            if (i) fb_buf_putc(&pl, ',');
            fb_json_cstr(&pl, keys[i]);
            fb_buf_puts(&pl, ":{\"v\":");
            struct fb_value v = {.type = FB_T_INT16, .i = (int16_t)val[i]};
            fb_json_value(&pl, &v);
            fb_buf_puts(&pl, ",\"q\":\"good\"}");
        }
        fb_buf_puts(&pl, "}}");

        /* PUBLISH, QoS 1: fixed header, topic, packet id, properties length 0, payload */
        if (++pid == 0) pid = 1;
        uint8_t h[8 + 2];
        h[0] = 0x32;
        size_t hl = 1 + put_varint(h + 1, 2 + tlen + 2 + 1 + pl.len);
        h[hl++] = (uint8_t)(tlen >> 8);
        h[hl++] = (uint8_t)tlen;
        fb_buf_put(&out, h, hl);
        fb_buf_put(&out, topic, tlen);
        uint8_t t[3] = {(uint8_t)(pid >> 8), (uint8_t)pid, 0};
        fb_buf_put(&out, t, 3);
        fb_buf_put(&out, pl.p, pl.len);
        published++;
        if (++pending >= batch) {
            if (send_all(fd, out.p, out.len) < 0) break;
            fb_buf_clear(&out);
            pending = 0;
            if (read_acks(fd, MSG_DONTWAIT) < 0) break;
            while (published - acked >= (unsigned long long)max_inflight)
                if (read_acks(fd, 0) < 0) break;
        }
    }
    if (out.len) send_all(fd, out.p, out.len);
    double t_pub = bench_mono_s() - t0;
    /* drain: the outstanding PUBACKs, at most 10 s */
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (acked < published)
        if (read_acks(fd, 0) < 0 || bench_mono_s() > t0 + t_pub + 10) break;
    double el = bench_mono_s() - t0, cpu = bench_cpu_s() - c0;
    static const uint8_t disc[] = {0xE0, 0};
    send_all(fd, disc, sizeof disc);
    close(fd);
    modbus_close(mb);
    modbus_free(mb);
    fb_buf_free(&pl);
    fb_buf_free(&out);
    free(keys);

    printf("{\"tool\":\"floor\",\"regs\":%d,\"batch\":%d,\"seconds\":%.3f,\"drain_s\":%.3f,\"polls\":%llu,"
           "\"published\":%llu,\"acked\":%llu,\"errors\":%llu,\"protocol_errors\":%llu,\"polls_per_s\":%.1f,"
           "\"values_per_s\":%.1f,\"cpu_s\":%.3f,\"cpu_pct\":%.1f,\"cpu_us_per_value\":%.4f}\n",
           regs, batch, t_pub, el - t_pub, polls, published, acked, errors, protocol_errors, acked / t_pub,
           (double)acked * regs / t_pub, cpu, 100.0 * cpu / el, acked ? cpu * 1e6 / ((double)acked * regs) : 0.0);
    fprintf(stderr, "floor: %.0f polls/s, %.0f values/s acked, CPU %.0f%% of a core, %llu errors\n", acked / t_pub,
            (double)acked * regs / t_pub, 100.0 * cpu / el, errors);
    return 0;
}
