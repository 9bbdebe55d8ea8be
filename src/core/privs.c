/* privs.c — does the gateway run with more privilege than it needs?
 *
 * fieldbridge needs no privilege at all as a TCP client (Modbus, S7, ADS,
 * OPC UA, MQTT); /dev/piControl0 and serial ports need only membership of
 * the group that owns them; binding a listening port below 1024 (the metrics
 * endpoint, later the HTTP API) needs CAP_NET_BIND_SERVICE and nothing else
 * (docs/security.md).  So after start-up, when every service has bound its
 * port, the process looks at itself: its effective uid, its effective
 * capabilities (/proc/self/status) and the TCP ports it listens on (its own
 * socket inodes matched in /proc/self/net/tcp{,6}).  Root, or capabilities
 * beyond what its ports need, is a warning with the fix — not a refusal: a
 * commissioning bench may run it as root on purpose.  CAP_SYS_NICE, which a
 * control.priority (SCHED_FIFO) seems to ask for, is extra too: an
 * RLIMIT_RTPRIO (LimitRTPRIO=) gives that priority without a capability that
 * would also let it reschedule every other process; the warning says so.
 */
#include "core/privs.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

#define CAP_NET_BIND_SERVICE_BIT 10
#define CAP_SYS_NICE_BIT 23

uint64_t fb_privs_cap_eff(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    uint64_t caps = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "CapEff:", 7)) {
            caps = strtoull(line + 7, NULL, 16);
            break;
        }
    fclose(f);
    return caps;
}

/* Is inode one of this process's sockets? (/proc/self/fd/N → "socket:[inode]") */
static bool own_socket(unsigned long inode)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return false;
    char want[48], path[300], link[64];
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n <= 0) continue;
        link[n] = 0;
        found = !strcmp(link, want);
    }
    closedir(d);
    return found;
}

int fb_privs_lowest_listen_port(void)
{
    static const char *const files[] = {"/proc/self/net/tcp", "/proc/self/net/tcp6"};
    int lowest = 0;
    for (size_t i = 0; i < 2; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f) continue;
        char line[512];
        if (!fgets(line, sizeof line, f)) { /* header */
            fclose(f);
            continue;
        }
        while (fgets(line, sizeof line, f)) {
            char local[128];
            unsigned st;
            unsigned long inode;
            /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
            if (sscanf(line, " %*s %127s %*s %x %*s %*s %*s %*u %*u %lu", local, &st, &inode) != 3) continue;
            char *colon = strrchr(local, ':');
            if (st != 0x0A || !colon) continue; /* 0A = LISTEN */
            int port = (int)strtol(colon + 1, NULL, 16);
            if (port <= 0 || (lowest && port >= lowest) || !own_socket(inode)) continue;
            lowest = port;
        }
        fclose(f);
    }
    return lowest;
}

int fb_privs_advice(unsigned euid, uint64_t caps, int lowest_port, char *out, size_t cap)
{
    bool low = lowest_port > 0 && lowest_port < 1024;
    uint64_t needed = low ? 1ULL << CAP_NET_BIND_SERVICE_BIT : 0;
    char port_note[160] = "";
    if (low)
        snprintf(port_note, sizeof port_note,
                 "; it listens on port %d (below 1024), for which CAP_NET_BIND_SERVICE alone is enough "
                 "(AmbientCapabilities=CAP_NET_BIND_SERVICE)",
                 lowest_port);
    if (euid == 0) {
        snprintf(out, cap,
                 "running as root, which fieldbridge does not need: run it as an unprivileged user "
                 "(deploy/fieldbridge.service does). TCP clients need no privilege, /dev/piControl0 and serial "
                 "ports need only their group (SupplementaryGroups=)%s — docs/security.md",
                 port_note);
        return 1;
    }
    uint64_t extra = caps & ~needed;
    if (extra) {
        const char *nice = (extra >> CAP_SYS_NICE_BIT) & 1
                               ? "; CAP_SYS_NICE is not needed for control.priority either: LimitRTPRIO= (an "
                                 "RLIMIT_RTPRIO) gives SCHED_FIFO without it"
                               : "";
        snprintf(out, cap,
                 "running with capabilities (CapEff 0x%" PRIx64 ") beyond what fieldbridge needs%s%s%s: drop them "
                 "(CapabilityBoundingSet=) — docs/security.md",
                 extra, low ? "" : " (none: it listens on no port below 1024)", port_note, nice);
        return 1;
    }
    out[0] = 0;
    return 0;
}

void fb_privs_check(void)
{
    char msg[700];
    if (fb_privs_advice((unsigned)geteuid(), fb_privs_cap_eff(), fb_privs_lowest_listen_port(), msg, sizeof msg))
        fb_warn(NULL, NULL, "%s", msg);
}
