/* health.h — the box the gateway runs on, sampled (health.c): CPU, memory,
 * the buffer's filesystem, network counters, temperatures, the clock; and
 * the gateway's lifecycle states.  The fleet thread (fleet.c) samples; the
 * status JSON and /metrics (metrics.c) render the last sample.  Every file
 * read comes from the configured procfs/sysfs roots (a container may see
 * the host's elsewhere, as for node_exporter's --path.procfs). */
#ifndef FB_HEALTH_H
#define FB_HEALTH_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/buf.h"

/* ------------------------------------------------------------ lifecycle */
/* docs/fleet.md has the transitions. */
enum fb_gw_state {
    FB_GW_PROVISIONING = 0, /* no usable identity yet: nothing is polled (a provisioning flow ends it) */
    FB_GW_ONLINE,           /* running its configuration */
    FB_GW_OFFLINE,          /* stopped (the retained offline status and the will say so) */
    FB_GW_MAINTENANCE,      /* an operator works on it: polling goes on, writes and remote changes refused */
    FB_GW_ERROR,            /* running, but cannot do its job (no sink, or no device, for a while) */
    FB_GW_DECOMMISSIONED,   /* taken out of service: polls nothing, stays so across restarts */
    FB_GW__N
};
const char *fb_gw_state_name(int state);
int fb_gw_state_parse(const char *name); /* -1 when unknown */

/* --------------------------------------------------------------- sample */
#define FB_HEALTH_MAX_IF 16
#define FB_HEALTH_MAX_TZ 16

struct fb_health_if {
    char name[32];
    uint64_t rx_bytes, rx_packets, rx_errors, rx_dropped;
    uint64_t tx_bytes, tx_packets, tx_errors, tx_dropped;
};

struct fb_health_tz {
    char zone[32]; /* thermal_zone0 */
    char type[48]; /* what the board calls it: cpu-thermal, x86_pkg_temp */
    double celsius;
};

struct fb_health {
    int64_t ts; /* UTC ns of the sample, 0 = none yet */
    /* CPU: busy share of all CPUs since the previous sample (0..1; -1 before
     * there are two samples), the counters it came from, load average */
    double cpu_usage;
    uint64_t cpu_busy, cpu_total; /* jiffies since boot */
    uint32_t ncpu;
    double load1;
    double process_cpu_s; /* this process, user + system (filled by the caller: fb_proc_usage) */
    uint64_t rss_bytes;
    uint64_t mem_total, mem_available; /* bytes; 0 = unknown */
    /* the buffer's filesystem (or the state directory's, or /) */
    char disk_path[256];
    bool disk_ok;
    uint64_t disk_total, disk_free; /* bytes available to this user */
    struct fb_health_if net[FB_HEALTH_MAX_IF];
    uint32_t nnet;
    struct fb_health_tz temp[FB_HEALTH_MAX_TZ];
    uint32_t ntemp;
    /* clock discipline (adjtimex) */
    bool clock_synced;
    int clock_state;         /* adjtimex's return: TIME_OK, TIME_ERROR, … */
    double clock_offset_s;   /* the kernel's current offset estimate */
    double clock_maxerror_s; /* maximum error */
    double clock_esterror_s; /* estimated error */
};

/* Sample everything into h.  prev (may be h's previous contents, or NULL)
 * gives the CPU rate.  procfs/sysfs NULL: /proc and /sys. */
void fb_health_sample(struct fb_health *h, const struct fb_health *prev, const char *disk_path, const char *procfs,
                      const char *sysfs);
/* A file of /proc or /sys read whole into buf (NUL-terminated, at most
 * cap - 1 bytes): its length, or -1 when it cannot be opened. */
ssize_t fb_read_small_file(const char *path, char *buf, size_t cap);
/* The parts, for tests: text of /proc/stat, /proc/meminfo, /proc/net/dev;
 * a thermal class directory (…/class/thermal).  0 or FB_EPROTO. */
int fb_health_parse_stat(const char *text, uint64_t *busy, uint64_t *total, uint32_t *ncpu);
int fb_health_parse_meminfo(const char *text, uint64_t *total, uint64_t *available);
int fb_health_parse_netdev(const char *text, struct fb_health *h);
void fb_health_read_thermal(const char *dir, struct fb_health *h);
/* The members of the status's "system" object (no braces around): cpu,
 * memory, disk, network, temperature, clock (docs/fleet.md).  Its
 * Prometheus families are metrics.c's (docs/metrics.md). */
void fb_health_json(struct fb_buf *out, const struct fb_health *h);
/* adjtimex's clock state as a word: "ok", "insert_leap", …, "error". */
const char *fb_health_clock_state(int state);
#endif
