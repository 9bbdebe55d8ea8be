/* health.c — what the box the gateway runs on is doing, read from the
 * kernel's own files, the way node_exporter reads them:
 *
 *   CPU        /proc/stat "cpu" line: busy = user+nice+system+irq+softirq+steal,
 *              total = busy + idle + iowait; the usage is the busy share of
 *              the jiffies between two samples (all CPUs together, 0..1);
 *              cores = the "cpuN" lines; load from /proc/loadavg
 *   memory     /proc/meminfo MemTotal and MemAvailable (the kernel's estimate
 *              of what can be allocated without swapping), kB
 *   disk       statvfs of the buffer's directory: total and free-for-us bytes
 *   network    /proc/net/dev, per interface: bytes, packets, errors, drops
 *   temperature  /sys/class/thermal/thermal_zoneN/temp (millidegrees) and type,
 *              only where the board exposes them
 *   clock      adjtimex (read only): synchronised (STA_UNSYNC clear and not
 *              TIME_ERROR), offset, maximum and estimated error
 *   process    /proc/self: CPU seconds and resident memory (the caller's:
 *              metrics.c reads them, always from this process's own /proc)
 *
 * Parsers take the files' text so that unit tests feed them captured
 * kernels' output; nothing here allocates.
 */
#include "core/health.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/timex.h>
#include <unistd.h>

static const char *const state_names[FB_GW__N] = {"provisioning", "online", "offline",
                                                  "maintenance",  "error",  "decommissioned"};

const char *fb_gw_state_name(int state) { return state >= 0 && state < FB_GW__N ? state_names[state] : "unknown"; }

int fb_gw_state_parse(const char *name)
{
    for (int i = 0; name && i < FB_GW__N; i++)
        if (!strcmp(state_names[i], name)) return i;
    return -1;
}

/* -------------------------------------------------------------- reading */
ssize_t fb_read_small_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    return (ssize_t)n;
}

int fb_health_parse_stat(const char *text, uint64_t *busy, uint64_t *total, uint32_t *ncpu)
{
    unsigned long long v[8] = {0};
    /* cpu  user nice system idle iowait irq softirq steal (guest time is inside user) */
    if (strncmp(text, "cpu ", 4) != 0) return FB_EPROTO;
    int n = sscanf(text + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                   &v[7]);
    if (n < 4) return FB_EPROTO;
    *busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    *total = *busy + v[3] + v[4];
    uint32_t cores = 0;
    for (const char *p = text; (p = strstr(p, "\ncpu"));) {
        p += 4;
        if (*p >= '0' && *p <= '9') cores++;
    }
    if (ncpu) *ncpu = cores;
    return 0;
}

static bool meminfo_field(const char *text, const char *key, uint64_t *out)
{
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, key, kl) && p[kl] == ':') {
            unsigned long long kb;
            if (sscanf(p + kl + 1, " %llu", &kb) != 1) return false;
            *out = (uint64_t)kb * 1024;
            return true;
        }
    }
    return false;
}

int fb_health_parse_meminfo(const char *text, uint64_t *total, uint64_t *available)
{
    *total = *available = 0;
    if (!meminfo_field(text, "MemTotal", total)) return FB_EPROTO;
    if (!meminfo_field(text, "MemAvailable", available)) /* kernels before 3.14: an estimate */
    {
        uint64_t fr = 0, bu = 0, ca = 0;
        meminfo_field(text, "MemFree", &fr);
        meminfo_field(text, "Buffers", &bu);
        meminfo_field(text, "Cached", &ca);
        *available = fr + bu + ca;
    }
    return 0;
}

int fb_health_parse_netdev(const char *text, struct fb_health *h)
{
    h->nnet = 0;
    const char *p = strchr(text, '\n'); /* two header lines */
    if (p) p = strchr(p + 1, '\n');
    if (!p) return FB_EPROTO;
    for (p++; *p && h->nnet < FB_HEALTH_MAX_IF;) {
        const char *eol = strchr(p, '\n');
        const char *colon = strchr(p, ':');
        if (!colon || (eol && colon > eol)) break;
        while (*p == ' ') p++;
        struct fb_health_if *f = &h->net[h->nnet];
        size_t nl = (size_t)(colon - p);
        if (nl == 0 || nl >= sizeof f->name) {
            if (!eol) break;
            p = eol + 1;
            continue;
        }
        memcpy(f->name, p, nl);
        f->name[nl] = 0;
        unsigned long long v[16];
        if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
                   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &v[13],
                   &v[14], &v[15]) == 16) {
            f->rx_bytes = v[0], f->rx_packets = v[1], f->rx_errors = v[2], f->rx_dropped = v[3];
            f->tx_bytes = v[8], f->tx_packets = v[9], f->tx_errors = v[10], f->tx_dropped = v[11];
            h->nnet++;
        }
        if (!eol) break;
        p = eol + 1;
    }
    return 0;
}

static int tz_cmp(const void *a, const void *b)
{
    const struct fb_health_tz *x = a, *y = b;
    size_t lx = strlen(x->zone), ly = strlen(y->zone); /* thermal_zone2 before thermal_zone10 */
    return lx != ly ? (lx < ly ? -1 : 1) : strcmp(x->zone, y->zone);
}

void fb_health_read_thermal(const char *dir, struct fb_health *h)
{
    h->ntemp = 0;
    DIR *d = opendir(dir);
    if (!d) return; /* this board exposes none */
    struct dirent *e;
    while ((e = readdir(d)) && h->ntemp < FB_HEALTH_MAX_TZ) {
        if (strncmp(e->d_name, "thermal_zone", 12) != 0 || strlen(e->d_name) >= sizeof h->temp[0].zone) continue;
        char path[512], buf[64];
        snprintf(path, sizeof path, "%s/%s/temp", dir, e->d_name);
        if (fb_read_small_file(path, buf, sizeof buf) <= 0) continue; /* a sensor that is off answers EIO/ENODATA */
        char *end;
        long long milli = strtoll(buf, &end, 10);
        if (end == buf) continue;
        struct fb_health_tz *z = &h->temp[h->ntemp];
        memcpy(z->zone, e->d_name, strlen(e->d_name) + 1); /* its length was checked above */
        snprintf(path, sizeof path, "%s/%s/type", dir, e->d_name);
        if (fb_read_small_file(path, z->type, sizeof z->type) > 0)
            z->type[strcspn(z->type, "\n")] = 0;
        else
            z->type[0] = 0;
        z->celsius = (double)milli / 1000.0;
        h->ntemp++;
    }
    closedir(d);
    qsort(h->temp, h->ntemp, sizeof h->temp[0], tz_cmp);
}

const char *fb_health_clock_state(int state)
{
    switch (state) {
        case TIME_OK: return "ok";
        case TIME_INS: return "insert_leap";
        case TIME_DEL: return "delete_leap";
        case TIME_OOP: return "leap_in_progress";
        case TIME_WAIT: return "leap_done";
        case TIME_ERROR: return "error";
        default: return "unknown";
    }
}

void fb_health_sample(struct fb_health *h, const struct fb_health *prev, const char *disk_path, const char *procfs,
                      const char *sysfs)
{
    uint64_t pbusy = prev ? prev->cpu_busy : 0, ptotal = prev ? prev->cpu_total : 0;
    bool have_prev = prev && prev->ts > 0;
    memset(h, 0, sizeof *h);
    h->ts = fb_now_ns();
    const char *pr = procfs && *procfs ? procfs : "/proc";
    const char *sy = sysfs && *sysfs ? sysfs : "/sys";
    char path[512];
    static char buf[65536]; /* the fleet thread is the only sampler */
    h->cpu_usage = -1;
    snprintf(path, sizeof path, "%s/stat", pr);
    if (fb_read_small_file(path, buf, sizeof buf) > 0 &&
        fb_health_parse_stat(buf, &h->cpu_busy, &h->cpu_total, &h->ncpu) == 0 && have_prev && h->cpu_total > ptotal &&
        h->cpu_busy >= pbusy)
        h->cpu_usage = (double)(h->cpu_busy - pbusy) / (double)(h->cpu_total - ptotal);
    snprintf(path, sizeof path, "%s/loadavg", pr);
    if (fb_read_small_file(path, buf, sizeof buf) > 0) h->load1 = strtod(buf, NULL);
    snprintf(path, sizeof path, "%s/meminfo", pr);
    if (fb_read_small_file(path, buf, sizeof buf) > 0) fb_health_parse_meminfo(buf, &h->mem_total, &h->mem_available);
    snprintf(path, sizeof path, "%s/net/dev", pr);
    if (fb_read_small_file(path, buf, sizeof buf) > 0) fb_health_parse_netdev(buf, h);
    snprintf(path, sizeof path, "%s/class/thermal", sy);
    fb_health_read_thermal(path, h);
    snprintf(h->disk_path, sizeof h->disk_path, "%s", disk_path && *disk_path ? disk_path : "/");
    struct statvfs vf;
    if (statvfs(h->disk_path, &vf) == 0) {
        h->disk_ok = true;
        h->disk_total = (uint64_t)vf.f_blocks * vf.f_frsize;
        h->disk_free = (uint64_t)vf.f_bavail * vf.f_frsize;
    }
    struct timex tx;
    memset(&tx, 0, sizeof tx); /* modes 0: read only */
    int st = adjtimex(&tx);
    h->clock_state = st;
    h->clock_synced = st != -1 && st != TIME_ERROR && !(tx.status & STA_UNSYNC);
    if (st != -1) {
        h->clock_offset_s = (double)tx.offset / ((tx.status & STA_NANO) ? 1e9 : 1e6);
        h->clock_maxerror_s = (double)tx.maxerror / 1e6;
        h->clock_esterror_s = (double)tx.esterror / 1e6;
    }
}

/* ------------------------------------------------------------------ JSON */
void fb_health_json(struct fb_buf *out, const struct fb_health *h)
{
    fb_buf_puts(out, "\"cpu\":{\"usage\":");
    if (h->cpu_usage >= 0)
        fb_json_double(out, h->cpu_usage);
    else
        fb_buf_puts(out, "null");
    fb_buf_puts(out, ",\"cores\":");
    fb_json_u64(out, h->ncpu);
    fb_buf_puts(out, ",\"load1\":");
    fb_json_double(out, h->load1);
    fb_buf_puts(out, ",\"process_s\":");
    fb_json_double(out, h->process_cpu_s);
    fb_buf_puts(out, "},\"memory\":{\"total_bytes\":");
    fb_json_u64(out, h->mem_total);
    fb_buf_puts(out, ",\"available_bytes\":");
    fb_json_u64(out, h->mem_available);
    fb_buf_puts(out, ",\"process_rss_bytes\":");
    fb_json_u64(out, h->rss_bytes);
    fb_buf_puts(out, "},\"disk\":{\"path\":");
    fb_json_cstr(out, h->disk_path);
    if (h->disk_ok) {
        fb_buf_puts(out, ",\"total_bytes\":");
        fb_json_u64(out, h->disk_total);
        fb_buf_puts(out, ",\"free_bytes\":");
        fb_json_u64(out, h->disk_free);
    }
    fb_buf_puts(out, "},\"network\":{");
    for (uint32_t i = 0; i < h->nnet; i++) {
        const struct fb_health_if *f = &h->net[i];
        if (i) fb_buf_putc(out, ',');
        fb_json_cstr(out, f->name);
        fb_buf_printf(out,
                      ":{\"rx_bytes\":%llu,\"tx_bytes\":%llu,\"rx_packets\":%llu,\"tx_packets\":%llu,"
                      "\"rx_errors\":%llu,\"tx_errors\":%llu,\"rx_dropped\":%llu,\"tx_dropped\":%llu}",
                      (unsigned long long)f->rx_bytes, (unsigned long long)f->tx_bytes,
                      (unsigned long long)f->rx_packets, (unsigned long long)f->tx_packets,
                      (unsigned long long)f->rx_errors, (unsigned long long)f->tx_errors,
                      (unsigned long long)f->rx_dropped, (unsigned long long)f->tx_dropped);
    }
    fb_buf_puts(out, "},\"temperature\":{");
    for (uint32_t i = 0; i < h->ntemp; i++) {
        if (i) fb_buf_putc(out, ',');
        fb_json_cstr(out, h->temp[i].zone);
        fb_buf_puts(out, ":{\"type\":");
        fb_json_cstr(out, h->temp[i].type);
        fb_buf_puts(out, ",\"celsius\":");
        fb_json_double(out, h->temp[i].celsius);
        fb_buf_putc(out, '}');
    }
    fb_buf_puts(out, "},\"clock\":{\"synced\":");
    fb_buf_puts(out, h->clock_synced ? "true" : "false");
    fb_buf_puts(out, ",\"state\":");
    fb_json_cstr(out, fb_health_clock_state(h->clock_state));
    fb_buf_puts(out, ",\"offset_s\":");
    fb_json_double(out, h->clock_offset_s);
    fb_buf_puts(out, ",\"maxerror_s\":");
    fb_json_double(out, h->clock_maxerror_s);
    fb_buf_puts(out, ",\"esterror_s\":");
    fb_json_double(out, h->clock_esterror_s);
    fb_buf_putc(out, '}');
}
