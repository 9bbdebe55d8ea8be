/* plant_server.c — a simulated process served over Modbus TCP, so a control
 * loop can run over a real protocol in tests: the gateway reads the
 * measurement and writes the actuator through its Modbus driver, and this
 * process (libmodbus server) answers while it runs the plant model — the
 * same models as the sim driver (src/south/sim/sim_plant.c) — in real time.
 *
 * Registers (float32, ABCD: high word first):
 *   input registers   0-1  the measurement (the plant's output)
 *   holding registers 0-1  the actuator (the plant's input), written by the gateway
 *   holding registers 2-3  the measurement again (for tools that read holding registers)
 *
 * Two ports, as two devices would be: the sensor port (--sensor-port) and
 * the actuator port (--actuator-port, default: the sensor port); both serve
 * all registers.  Faults on the sensor port only, by signal:
 *   SIGUSR1  toggles "disconnected": its clients are closed and it stops
 *            listening (connection refused) until the next SIGUSR1;
 *   SIGUSR2  toggles "frozen": requests arriving there are read but never
 *            answered (a device that hangs), until the next SIGUSR2.
 *
 * Every write to the actuator is printed on stdout, flushed, as
 *   write u=<value> t=<CLOCK_MONOTONIC seconds>
 * and every fault toggle as "sensor disconnected|connected|frozen|thawed t=…";
 * "ready" once listening.  Binds 127.0.0.1 only; stops on SIGINT/SIGTERM.
 *
 * usage: plant_server --sensor-port N [--actuator-port M] --plant SPEC [--u0 V]
 *   SPEC as a sim plant address without input=, e.g. fopdt:k=2,tau=4s,dead=0.8s,y0=20
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include <modbus/modbus.h>

#include "south/sim/sim_plant.h"

#define NREG 16

static volatile sig_atomic_t stop_flag, usr1, usr2;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        usr1 = 1;
    else if (sig == SIGUSR2)
        usr2 = 1;
    else
        stop_flag = 1;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

enum { NONE = 0, SENSOR = 1, ACTUATOR = 2 };

/* float32 in two registers, high word first, each word big-endian (ABCD) —
 * written out here: libmodbus 3.1.6's modbus_set_float_abcd swaps the bytes
 * of each word on little-endian hosts. */
static void put_f32(float f, uint16_t *r)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    r[0] = (uint16_t)(u >> 16);
    r[1] = (uint16_t)u;
}

static float get_f32(const uint16_t *r)
{
    uint32_t u = (uint32_t)r[0] << 16 | r[1];
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

int main(int argc, char **argv)
{
    int sport = 0, aport = 0;
    const char *spec = NULL;
    double u0 = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--sensor-port"))
            sport = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--actuator-port"))
            aport = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--plant"))
            spec = argv[i + 1];
        else if (!strcmp(argv[i], "--u0"))
            u0 = atof(argv[i + 1]);
        else {
            fprintf(stderr, "plant_server: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (sport <= 0 || sport > 65535 || !spec || aport < 0 || aport > 65535) {
        fprintf(stderr, "usage: plant_server --sensor-port N [--actuator-port M] --plant SPEC [--u0 V]\n");
        return 2;
    }
    static struct fb_plant plant;
    struct fb_err err = {0};
    if (fb_plant_parse(spec, &plant, &err) < 0) {
        fprintf(stderr, "plant_server: %s\n", err.msg);
        return 2;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    modbus_t *sctx = modbus_new_tcp("127.0.0.1", sport);
    modbus_t *actx = aport && aport != sport ? modbus_new_tcp("127.0.0.1", aport) : NULL;
    modbus_mapping_t *map = modbus_mapping_new(0, 0, NREG, NREG);
    if (!sctx || (aport && aport != sport && !actx) || !map) {
        fprintf(stderr, "plant_server: %s\n", modbus_strerror(errno));
        return 1;
    }
    int slfd = modbus_tcp_listen(sctx, 8);
    int alfd = actx ? modbus_tcp_listen(actx, 8) : -1;
    if (slfd < 0 || (actx && alfd < 0)) {
        fprintf(stderr, "plant_server: listen: %s\n", modbus_strerror(errno));
        return 1;
    }
    int64_t now = mono_ns();
    fb_plant_advance(&plant, now);
    fb_plant_input(&plant, now, u0);
    put_f32((float)u0, &map->tab_registers[0]);
    printf("ready sensor=%d actuator=%d\n", sport, aport ? aport : sport);
    fflush(stdout);

    int kind[FD_SETSIZE] = {0}; /* what each client fd came in on */
    bool disconnected = false, frozen = false;
    uint8_t q[MODBUS_TCP_MAX_ADU_LENGTH];
    while (!stop_flag) {
        if (usr1) {
            usr1 = 0;
            disconnected = !disconnected;
            if (disconnected) { /* the sensor port goes away: clients dropped, nothing listens */
                for (int fd = 0; fd < FD_SETSIZE; fd++)
                    if (kind[fd] == SENSOR) {
                        close(fd);
                        kind[fd] = NONE;
                    }
                close(slfd);
                slfd = -1;
            } else {
                slfd = modbus_tcp_listen(sctx, 8);
            }
            printf("sensor %s t=%.6f\n", disconnected ? "disconnected" : "connected", mono_ns() / 1e9);
            fflush(stdout);
        }
        if (usr2) {
            usr2 = 0;
            frozen = !frozen;
            printf("sensor %s t=%.6f\n", frozen ? "frozen" : "thawed", mono_ns() / 1e9);
            fflush(stdout);
        }
        fd_set rd;
        FD_ZERO(&rd);
        int maxfd = -1;
        if (slfd >= 0) {
            FD_SET(slfd, &rd);
            maxfd = slfd;
        }
        if (alfd >= 0) {
            FD_SET(alfd, &rd);
            if (alfd > maxfd) maxfd = alfd;
        }
        for (int fd = 0; fd < FD_SETSIZE; fd++)
            if (kind[fd]) {
                FD_SET(fd, &rd);
                if (fd > maxfd) maxfd = fd;
            }
        struct timeval tv = {0, 5000};
        int n = select(maxfd + 1, &rd, NULL, NULL, &tv);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("select");
            break;
        }
        now = mono_ns();
        float y = (float)fb_plant_advance(&plant, now);
        put_f32(y, &map->tab_input_registers[0]);
        put_f32(y, &map->tab_registers[2]);
        for (int fd = 0; fd <= maxfd && n > 0; fd++) {
            if (!FD_ISSET(fd, &rd)) continue;
            n--;
            if (fd == slfd || fd == alfd) {
                int lfd = fd;
                int cfd = modbus_tcp_accept(fd == slfd ? sctx : actx, &lfd);
                if (cfd >= 0 && cfd < FD_SETSIZE)
                    kind[cfd] = fd == slfd ? SENSOR : ACTUATOR;
                else if (cfd >= 0)
                    close(cfd);
                continue;
            }
            modbus_t *ctx = kind[fd] == SENSOR ? sctx : actx ? actx : sctx;
            modbus_set_socket(ctx, fd);
            int rc = modbus_receive(ctx, q);
            if (rc == -1) {
                close(fd);
                kind[fd] = NONE;
                continue;
            }
            if (rc <= 0 || (frozen && kind[fd] == SENSOR)) continue; /* frozen: read, never answered */
            int off = modbus_get_header_length(ctx);
            int fc = q[off];
            int addr = (q[off + 1] << 8) | q[off + 2];
            modbus_reply(ctx, q, rc, map);
            if ((fc == 0x10 || fc == 0x06) && addr <= 1) {
                float u = get_f32(&map->tab_registers[0]);
                fb_plant_advance(&plant, now);
                fb_plant_input(&plant, now, u);
                put_f32(u, &map->tab_input_registers[2]);
                printf("write u=%.9g t=%.6f\n", (double)u, now / 1e9);
                fflush(stdout);
            }
        }
    }
    for (int fd = 0; fd < FD_SETSIZE; fd++)
        if (kind[fd]) close(fd);
    if (slfd >= 0) close(slfd);
    if (alfd >= 0) close(alfd);
    modbus_mapping_free(map);
    modbus_free(sctx);
    if (actx) modbus_free(actx);
    return 0;
}
