/* metrics.c — the gateway's counters as Prometheus text and as status JSON.
 *
 * Both views read the same atomics that connection and sink threads update
 * (struct fb_dev_metrics, struct fb_sink_metrics), so rendering never takes
 * a lock on a hot path and never stops polling.  Prometheus text format
 * 0.0.4: one HELP and one TYPE line per family, then one sample line per
 * device or sink; label values escaped (\\, \", \n).  Each family is a row
 * in a table (name, type, help, how to read the value), so adding a metric
 * is one line.  The list is documented in docs/metrics.md.
 *
 * NE107 in the status JSON, the same for every driver, from the connection
 * and from the tags' qualities: Failure when the device is offline (its
 * connection is down, or — a Modbus unit behind a gateway — it stopped
 * answering on a connection that stays up), Function check while it is still
 * connecting, Out of specification while any of its tags was last published
 * out of range, Maintenance required while any of its tags was last
 * published Bad (the device refuses or fails that item although the
 * connection is up) or when its error counter was seen to grow within the
 * last status interval, else OK.  Active alarms (neither shelved nor
 * suppressed) count too, each in the category its config names (ne107:;
 * by default limit alarms Out of specification, others Maintenance
 * required): the worst of the alarms' and the tags' categories wins.  The
 * pipeline counts the tags (out of range, Bad) as their published qualities
 * change, the alarm table (src/edge/alarms.c) the alarms; drivers count every
 * failed request or item in the error counter.  The "seen to grow" memory
 * is a small side array (one slot per device) kept here, so neither the
 * model nor the drivers carry it, and any number of callers (the MQTT
 * status publisher, GET /status) see the same answer.
 *
 * Store-and-forward: a sink with a store (sink_store(s)) adds the
 * fieldbridge_buffer_* families (read with fb_store_stats, which takes the
 * store's lock for a moment but never waits for the disk) and a "buffer"
 * object in its status.  The status "drain_rate" is the acked delta divided
 * by the time since the previous measurement; a measurement is taken at most
 * once a second (side array like the NE107 memory), so two callers asking at
 * nearly the same moment both get a meaningful rate instead of 0/0.  The
 * gateway's "health" is "degraded" while any buffer runs on memory only
 * (disk full, read-only, unwritable), else "ok".
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/certs.h"
#include "core/env.h"
#include "core/fleet_cfg.h"
#include "core/health.h"
#include "core/live.h"
#include "core/metrics.h"
#include "core/model.h"
#include "core/plugin.h"
#include "core/runtime_state.h"
#include "store/store.h"

#ifndef FB_VERSION
#define FB_VERSION "0.0.0"
#endif

/* ---------------------------------------------------------- /proc/self */
void fb_proc_usage(double *cpu_s, uint64_t *rss_bytes)
{
    char buf[1024];
    if (cpu_s) {
        *cpu_s = 0;
        /* fields after "(comm)" — comm may hold spaces and parentheses, so
         * look for the last ')' — start at field 3 (state); utime is 14, stime 15 */
        if (fb_read_small_file("/proc/self/stat", buf, sizeof buf) > 0) {
            char *p = strrchr(buf, ')');
            unsigned long long ut = 0, st = 0;
            if (p && sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2) {
                long hz = sysconf(_SC_CLK_TCK);
                if (hz > 0) *cpu_s = (double)(ut + st) / (double)hz;
            }
        }
    }
    if (rss_bytes) {
        *rss_bytes = 0;
        unsigned long long size = 0, res = 0;
        if (fb_read_small_file("/proc/self/statm", buf, sizeof buf) > 0 && sscanf(buf, "%llu %llu", &size, &res) == 2) {
            long ps = sysconf(_SC_PAGESIZE);
            if (ps > 0) *rss_bytes = (uint64_t)res * (uint64_t)ps;
        }
    }
}

/* ------------------------------------------------------------ prometheus */
static void put_label(struct fb_buf *b, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\')
            fb_buf_puts(b, "\\\\");
        else if (*s == '"')
            fb_buf_puts(b, "\\\"");
        else if (*s == '\n')
            fb_buf_puts(b, "\\n");
        else
            fb_buf_putc(b, *s);
    }
}

static void put_double(struct fb_buf *b, double v)
{
    if (v != v)
        fb_buf_puts(b, "NaN");
    else
        fb_buf_printf(b, "%.15g", v);
}

static void family(struct fb_buf *b, const char *name, const char *type, const char *help)
{
    fb_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static double ns_to_s(uint64_t ns) { return (double)ns / 1e9; }

/* The sink's store (on disk, or the memory queue), NULL before the runtime runs. */
static struct fb_store *sink_store(const struct fb_sink_inst *s) { return s->rt ? s->rt->store : NULL; }

static uint64_t dev_overruns(const struct fb_device *d)
{
    uint64_t n = 0;
    for (uint32_t k = 0; k < d->ngroups; k++) n += d->groups[k].rt ? atomic_load(&d->groups[k].rt->overruns) : 0;
    return n;
}

enum vk { U64, DBL, SUMMARY /* f = sum in seconds, u = count */ };
struct dev_metric {
    const char *name, *type, *help;
    enum vk vk;
    uint64_t (*u)(const struct fb_device *d);
    double (*f)(const struct fb_device *d);
};

#define DU(fn, field)                                                                                                  \
    static uint64_t fn(const struct fb_device *d) { return atomic_load(&d->m.field); }
DU(d_requests, requests)
DU(d_errors, errors)
DU(d_timeouts, timeouts)
DU(d_reconnects, reconnects)
DU(d_writes, writes)
DU(d_write_errors, write_errors)
DU(d_rtt_count, rtt_count)
#undef DU
static double d_rtt_sum(const struct fb_device *d) { return ns_to_s(atomic_load(&d->m.rtt_ns_sum)); }
static double d_rtt_last(const struct fb_device *d) { return ns_to_s(atomic_load(&d->m.rtt_ns_last)); }
static double d_last_ok(const struct fb_device *d)
{
    int64_t ns = atomic_load(&d->m.last_success_ns);
    return ns > 0 ? (double)ns / 1e9 : 0;
}
static uint64_t d_connected(const struct fb_device *d) { return atomic_load(&d->state) == FB_DEV_ONLINE; }
static uint64_t d_bad_tags(const struct fb_device *d) { return atomic_load(&d->m.tags_bad); }
static uint64_t d_alarms(const struct fb_device *d) { return atomic_load(&d->m.alarms_active); }
static uint64_t d_unacked(const struct fb_device *d) { return atomic_load(&d->m.alarms_unacked); }

static const struct dev_metric dev_metrics[] = {
    {"fieldbridge_device_requests_total", "counter", "Requests sent to the device (one per read or write request).",
     U64, d_requests, NULL},
    {"fieldbridge_device_errors_total", "counter", "Requests that failed (exception, I/O error, timeout, dropout).",
     U64, d_errors, NULL},
    {"fieldbridge_device_timeouts_total", "counter", "Requests that timed out.", U64, d_timeouts, NULL},
    {"fieldbridge_device_reconnects_total", "counter", "Times the connection was lost and re-established.", U64,
     d_reconnects, NULL},
    {"fieldbridge_device_writes_total", "counter", "Writes handed to the driver.", U64, d_writes, NULL},
    {"fieldbridge_device_write_errors_total", "counter", "Writes the driver reported as failed.", U64, d_write_errors,
     NULL},
    {"fieldbridge_device_rtt_seconds", "summary", "Round-trip time of successful requests.", SUMMARY, d_rtt_count,
     d_rtt_sum},
    {"fieldbridge_device_poll_overruns_total", "counter",
     "Poll cycles skipped because a read took longer than its period.", U64, dev_overruns, NULL},
    {"fieldbridge_device_last_rtt_seconds", "gauge", "Round-trip time of the last successful request.", DBL, NULL,
     d_rtt_last},
    {"fieldbridge_device_last_success_timestamp_seconds", "gauge",
     "Unix time of the last successful request (0 = never).", DBL, NULL, d_last_ok},
    {"fieldbridge_device_connected", "gauge", "1 when the device is online, else 0.", U64, d_connected, NULL},
    {"fieldbridge_device_bad_tags", "gauge", "Tags whose last published quality is Bad.", U64, d_bad_tags, NULL},
    {"fieldbridge_device_active_alarms", "gauge",
     "Alarms of the device that are active, neither shelved nor suppressed.", U64, d_alarms, NULL},
    {"fieldbridge_device_unacked_alarms", "gauge",
     "Alarms of the device waiting for an acknowledgement (neither shelved nor suppressed).", U64, d_unacked, NULL},
};

/* Scripts (src/edge/script.c): rendered when there are any. */
struct script_metric {
    const char *name, *help;
    size_t off; /* offsetof in struct fb_script of an _Atomic uint64_t */
};
static const struct script_metric script_metrics[] = {
    {"fieldbridge_script_runs_total", "Calls of the script's on_batch/on_timer (and its load).",
     offsetof(struct fb_script, runs)},
    {"fieldbridge_script_errors_total", "Calls that ended in an error (the script's own, or its memory limit).",
     offsetof(struct fb_script, errors)},
    {"fieldbridge_script_budget_exceeded_total", "Calls stopped for exceeding the instruction or time budget.",
     offsetof(struct fb_script, overruns)},
    {"fieldbridge_script_writes_total", "Write requests the script handed to the command router.",
     offsetof(struct fb_script, writes)},
};

/* Vibration channels (src/vib): rendered when there are waveform tags. */
struct wave_metric {
    const char *name, *type, *help;
    size_t off; /* offsetof in struct fb_wave of an _Atomic uint64_t or uint32_t */
    bool u32;
};
static const struct wave_metric wave_metrics[] = {
    {"fieldbridge_vibration_blocks_total", "counter", "Waveform blocks analysed.", offsetof(struct fb_wave, blocks),
     false},
    {"fieldbridge_vibration_dropped_total", "counter",
     "Waveform acquisitions dropped because every block of the channel was still being analysed.",
     offsetof(struct fb_wave, dropped), false},
    {"fieldbridge_vibration_cpu_seconds_total", "counter", "CPU time the analysis spent on the channel.",
     offsetof(struct fb_wave, cpu_ns), false},
    {"fieldbridge_vibration_baseline_learned_blocks", "gauge",
     "Blocks the anomaly baseline has learnt (equal to the learn blocks once learnt).",
     offsetof(struct fb_wave, learned), true},
    {"fieldbridge_vibration_baseline_learn_blocks", "gauge",
     "Blocks the anomaly baseline is learnt from (0: no anomaly detection).", offsetof(struct fb_wave, learn_of), true},
};

static uint64_t wave_u64(const struct fb_wave *w, const struct wave_metric *m)
{
    const void *p = (const char *)w + m->off;
    if (m->u32) return atomic_load((const _Atomic uint32_t *)p);
    return atomic_load((const _Atomic uint64_t *)p);
}

static void dev_labels(struct fb_buf *b, const struct fb_device *d)
{
    fb_buf_puts(b, "{device=\"");
    put_label(b, d->name);
    fb_buf_puts(b, "\",driver=\"");
    put_label(b, d->drv && d->drv->name ? d->drv->name : "");
    fb_buf_puts(b, "\"}");
}

static void sink_labels(struct fb_buf *b, const struct fb_sink_inst *s)
{
    const char *n = s->name ? s->name : (s->sink && s->sink->name ? s->sink->name : "");
    fb_buf_puts(b, "{sink=\"");
    put_label(b, n);
    fb_buf_puts(b, "\"}");
}

struct sink_metric {
    const char *name, *type, *help;
    size_t off; /* offsetof in struct fb_sink_metrics of an _Atomic uint64_t */
};
static const struct sink_metric sink_metrics[] = {
    {"fieldbridge_sink_queued_total", "counter", "Batches queued to the sink.",
     offsetof(struct fb_sink_metrics, queued)},
    {"fieldbridge_sink_sent_total", "counter", "Batches the sink confirmed as delivered.",
     offsetof(struct fb_sink_metrics, sent)},
    {"fieldbridge_sink_dropped_total", "counter", "Batches dropped (queue full or undeliverable).",
     offsetof(struct fb_sink_metrics, dropped)},
    {"fieldbridge_sink_retries_total", "counter", "Deliveries retried.", offsetof(struct fb_sink_metrics, retries)},
    {"fieldbridge_sink_errors_total", "counter", "Send errors reported by the sink.",
     offsetof(struct fb_sink_metrics, errors)},
};

/* Sources (ingest): one row per family, labelled source="ingest". */
static const struct sink_metric source_metrics[] = {
    {"fieldbridge_source_messages_total", "counter", "Messages a source received.",
     offsetof(struct fb_source_metrics, messages)},
    {"fieldbridge_source_batches_total", "counter", "Batches a source handed to the sinks.",
     offsetof(struct fb_source_metrics, batches)},
    {"fieldbridge_source_errors_total", "counter", "Messages a source could not read (dropped), and session errors.",
     offsetof(struct fb_source_metrics, errors)},
};

static void render_sources(struct fb_gateway *gw, struct fb_buf *out)
{
    if (!gw->nsources) return;
    for (size_t k = 0; k < sizeof source_metrics / sizeof source_metrics[0]; k++) {
        family(out, source_metrics[k].name, source_metrics[k].type, source_metrics[k].help);
        for (uint32_t i = 0; i < gw->nsources; i++) {
            const struct fb_source_inst *s = &gw->sources[i];
            const _Atomic uint64_t *v =
                (const _Atomic uint64_t *)(const void *)((const char *)&s->m + source_metrics[k].off);
            fb_buf_printf(out, "%s{source=\"", source_metrics[k].name);
            put_label(out, s->name ? s->name : "");
            fb_buf_printf(out, "\"} %" PRIu64 "\n", atomic_load(v));
        }
    }
    family(out, "fieldbridge_source_connected", "gauge", "1 when the source is connected to its broker.");
    for (uint32_t i = 0; i < gw->nsources; i++) {
        fb_buf_puts(out, "fieldbridge_source_connected{source=\"");
        put_label(out, gw->sources[i].name ? gw->sources[i].name : "");
        fb_buf_printf(out, "\"} %d\n", atomic_load(&gw->sources[i].m.connected) ? 1 : 0);
    }
}

static uint64_t sink_u64(const struct fb_sink_inst *s, size_t off)
{
    const _Atomic uint64_t *p = (const _Atomic uint64_t *)(const void *)((const char *)&s->m + off);
    return atomic_load(p);
}

/* ---------------------------------------------------- store-and-forward */
enum buf_field { B_RECORDS, B_BYTES, B_OLDEST_AGE, B_DROP_FULL, B_DROP_AGE, B_ACKED, B_CUT, B_LOST, B_DEGRADED };
struct buf_metric {
    const char *name, *type, *help;
    enum buf_field f;
};
static const struct buf_metric buf_metrics[] = {
    {"fieldbridge_buffer_records", "gauge", "Records in the store-and-forward buffer (pending and in flight).",
     B_RECORDS},
    {"fieldbridge_buffer_bytes", "gauge",
     "Bytes the buffer holds on disk and in memory, record and segment overhead included.", B_BYTES},
    {"fieldbridge_buffer_oldest_age_seconds", "gauge",
     "Age of the oldest buffered record (segment granularity; 0 when empty).", B_OLDEST_AGE},
    {"fieldbridge_buffer_dropped_full_total", "counter", "Records dropped because the buffer was full (oldest first).",
     B_DROP_FULL},
    {"fieldbridge_buffer_dropped_age_total", "counter", "Records dropped because they were older than max_age.",
     B_DROP_AGE},
    {"fieldbridge_buffer_acked_total", "counter", "Buffered records the broker acknowledged (since start).", B_ACKED},
    {"fieldbridge_buffer_corrupt_cut_bytes_total", "counter", "Bytes cut from the buffer as torn or corrupt.", B_CUT},
    {"fieldbridge_buffer_lost_records_total", "counter",
     "Records found missing from the buffer (a deleted segment file, records held in memory when the process died, ids "
     "in a cut region).",
     B_LOST},
    {"fieldbridge_buffer_degraded", "gauge",
     "1 while the buffer runs on memory only (disk full, read-only, unwritable).", B_DEGRADED},
};

static double oldest_age_s(const struct fb_store_stats *st, int64_t now)
{
    if (st->oldest_ts <= 0 || st->records == 0) return 0;
    int64_t d = now - st->oldest_ts;
    return d > 0 ? (double)d / 1e9 : 0;
}

/* The integer fields (every field but B_OLDEST_AGE). */
static uint64_t buf_u64(const struct fb_store_stats *st, enum buf_field f)
{
    switch (f) {
        case B_RECORDS: return st->records;
        case B_BYTES: return st->bytes;
        case B_DROP_FULL: return st->dropped_full;
        case B_DROP_AGE: return st->dropped_age;
        case B_ACKED: return st->acked;
        case B_CUT: return st->corrupt_cut;
        case B_LOST: return st->lost;
        case B_DEGRADED: return st->degraded ? 1 : 0;
        case B_OLDEST_AGE: break;
    }
    return 0;
}

static void render_buffers(struct fb_gateway *gw, struct fb_buf *out)
{
    bool any = false;
    for (uint32_t i = 0; i < gw->nsinks; i++) any = any || sink_store(&gw->sinks[i]);
    if (!any) return;
    int64_t now = fb_now_ns();
    for (size_t k = 0; k < sizeof buf_metrics / sizeof buf_metrics[0]; k++) {
        const struct buf_metric *m = &buf_metrics[k];
        family(out, m->name, m->type, m->help);
        for (uint32_t i = 0; i < gw->nsinks; i++) {
            struct fb_sink_inst *s = &gw->sinks[i];
            if (!sink_store(s)) continue;
            struct fb_store_stats st;
            fb_store_stats(sink_store(s), &st);
            fb_buf_puts(out, m->name);
            sink_labels(out, s);
            fb_buf_putc(out, ' ');
            if (m->f == B_OLDEST_AGE)
                put_double(out, oldest_age_s(&st, now));
            else
                fb_buf_printf(out, "%" PRIu64, buf_u64(&st, m->f));
            fb_buf_putc(out, '\n');
        }
    }
}

static double uptime_s(const struct fb_gateway *gw)
{
    int64_t started = gw->rt ? gw->rt->started_ns : 0;
    if (started <= 0) return 0;
    int64_t d = fb_now_ns() - started; /* runtime stamps started_ns with fb_now_ns() */
    return d > 0 ? (double)d / 1e9 : 0;
}

/* ------------------------------------------------------- fleet and host */
static void gauge_line(struct fb_buf *out, const char *name, double v)
{
    fb_buf_puts(out, name);
    fb_buf_putc(out, ' ');
    put_double(out, v);
    fb_buf_putc(out, '\n');
}

/* The gateway's lifecycle state, reloads, queues and the box it runs on
 * (the fleet thread's last sample): docs/metrics.md. */
static void render_fleet(struct fb_gateway *gw, struct fb_buf *out)
{
    struct fb_rt *rt = gw->rt;
    family(out, "fieldbridge_sink_queue_length", "gauge",
           "Batches waiting in the sink's queue from the pipeline (before its buffer).");
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_sink_rt *q = gw->sinks[i].rt;
        uint32_t len = 0;
        if (q) {
            pthread_mutex_lock(&q->mu);
            len = q->len;
            pthread_mutex_unlock(&q->mu);
        }
        fb_buf_puts(out, "fieldbridge_sink_queue_length");
        sink_labels(out, &gw->sinks[i]);
        fb_buf_printf(out, " %" PRIu32 "\n", len);
    }
    if (!rt) return;
    struct fb_health h;
    int state;
    pthread_mutex_lock(&rt->status_mu);
    h = rt->health;
    state = rt->gw_state;
    pthread_mutex_unlock(&rt->status_mu);
    family(out, "fieldbridge_gateway_state", "gauge", "1 for the gateway's lifecycle state (docs/fleet.md), else 0.");
    for (int k = 0; k < FB_GW__N; k++)
        fb_buf_printf(out, "fieldbridge_gateway_state{state=\"%s\"} %d\n", fb_gw_state_name(k), k == state);
    family(out, "fieldbridge_gateway_info", "gauge", "The gateway's identity; the value is always 1.");
    fb_buf_puts(out, "fieldbridge_gateway_info{id=\"");
    put_label(out, gw->id);
    fb_buf_puts(out, "\",model=\"");
    put_label(out, gw->hw_model);
    fb_buf_puts(out, "\",location=\"");
    put_label(out, gw->location);
    fb_buf_puts(out, "\",config_version=\"");
    put_label(out, gw->cfg_version);
    fb_buf_puts(out, "\"} 1\n");
    family(out, "fieldbridge_config_reloads_total", "counter",
           "Configuration reloads applied (ok) or refused (failed).");
    fb_buf_printf(out, "fieldbridge_config_reloads_total{result=\"ok\"} %" PRIu64 "\n", atomic_load(&rt->reloads_ok));
    fb_buf_printf(out, "fieldbridge_config_reloads_total{result=\"failed\"} %" PRIu64 "\n",
                  atomic_load(&rt->reloads_failed));
    if (!h.ts) return;
    if (h.cpu_usage >= 0) {
        family(out, "fieldbridge_system_cpu_usage_ratio", "gauge",
               "Busy share of all CPUs between the last two health samples (0..1).");
        gauge_line(out, "fieldbridge_system_cpu_usage_ratio", h.cpu_usage);
    }
    family(out, "fieldbridge_system_cpus", "gauge", "CPUs the kernel reports.");
    gauge_line(out, "fieldbridge_system_cpus", h.ncpu);
    family(out, "fieldbridge_system_load1", "gauge", "One-minute load average.");
    gauge_line(out, "fieldbridge_system_load1", h.load1);
    family(out, "fieldbridge_system_memory_total_bytes", "gauge", "Memory of the box (MemTotal).");
    gauge_line(out, "fieldbridge_system_memory_total_bytes", (double)h.mem_total);
    family(out, "fieldbridge_system_memory_available_bytes", "gauge",
           "Memory available without swapping (MemAvailable).");
    gauge_line(out, "fieldbridge_system_memory_available_bytes", (double)h.mem_available);
    if (h.disk_ok) {
        family(out, "fieldbridge_disk_total_bytes", "gauge", "Size of the buffer's filesystem.");
        fb_buf_puts(out, "fieldbridge_disk_total_bytes{path=\"");
        put_label(out, h.disk_path);
        fb_buf_printf(out, "\"} %" PRIu64 "\n", h.disk_total);
        family(out, "fieldbridge_disk_free_bytes", "gauge",
               "Bytes of the buffer's filesystem the gateway may still use.");
        fb_buf_puts(out, "fieldbridge_disk_free_bytes{path=\"");
        put_label(out, h.disk_path);
        fb_buf_printf(out, "\"} %" PRIu64 "\n", h.disk_free);
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } nets[] = {
        {"fieldbridge_network_receive_bytes_total", "Bytes received by the interface.",
         offsetof(struct fb_health_if, rx_bytes)},
        {"fieldbridge_network_transmit_bytes_total", "Bytes sent by the interface.",
         offsetof(struct fb_health_if, tx_bytes)},
        {"fieldbridge_network_receive_packets_total", "Packets received.", offsetof(struct fb_health_if, rx_packets)},
        {"fieldbridge_network_transmit_packets_total", "Packets sent.", offsetof(struct fb_health_if, tx_packets)},
        {"fieldbridge_network_receive_errors_total", "Receive errors.", offsetof(struct fb_health_if, rx_errors)},
        {"fieldbridge_network_transmit_errors_total", "Transmit errors.", offsetof(struct fb_health_if, tx_errors)},
        {"fieldbridge_network_receive_drop_total", "Received packets dropped.",
         offsetof(struct fb_health_if, rx_dropped)},
        {"fieldbridge_network_transmit_drop_total", "Packets dropped before sending.",
         offsetof(struct fb_health_if, tx_dropped)},
    };
    for (size_t k = 0; h.nnet && k < sizeof nets / sizeof nets[0]; k++) {
        family(out, nets[k].name, "counter", nets[k].help);
        for (uint32_t i = 0; i < h.nnet; i++) {
            uint64_t v;
            memcpy(&v, (const char *)&h.net[i] + nets[k].off, sizeof v);
            fb_buf_puts(out, nets[k].name);
            fb_buf_puts(out, "{interface=\"");
            put_label(out, h.net[i].name);
            fb_buf_printf(out, "\"} %" PRIu64 "\n", v);
        }
    }
    if (h.ntemp) {
        family(out, "fieldbridge_temperature_celsius", "gauge",
               "Thermal zones the board exposes (/sys/class/thermal).");
        for (uint32_t i = 0; i < h.ntemp; i++) {
            fb_buf_puts(out, "fieldbridge_temperature_celsius{zone=\"");
            put_label(out, h.temp[i].zone);
            fb_buf_puts(out, "\",type=\"");
            put_label(out, h.temp[i].type);
            fb_buf_puts(out, "\"} ");
            put_double(out, h.temp[i].celsius);
            fb_buf_putc(out, '\n');
        }
    }
    family(out, "fieldbridge_clock_offset_seconds", "gauge", "The kernel's clock offset estimate (adjtimex).");
    gauge_line(out, "fieldbridge_clock_offset_seconds", h.clock_offset_s);
    family(out, "fieldbridge_clock_maxerror_seconds", "gauge", "The clock's maximum error (adjtimex).");
    gauge_line(out, "fieldbridge_clock_maxerror_seconds", h.clock_maxerror_s);
    family(out, "fieldbridge_clock_esterror_seconds", "gauge", "The clock's estimated error (adjtimex).");
    gauge_line(out, "fieldbridge_clock_esterror_seconds", h.clock_esterror_s);
}

void fb_metrics_render(struct fb_gateway *gw, struct fb_buf *out)
{
    fb_model_rdlock(gw);
    for (size_t k = 0; k < sizeof dev_metrics / sizeof dev_metrics[0]; k++) {
        const struct dev_metric *m = &dev_metrics[k];
        family(out, m->name, m->type, m->help);
        for (uint32_t i = 0; i < gw->ndevs; i++) {
            fb_buf_puts(out, m->name);
            if (m->vk == SUMMARY) { /* name_sum{…} seconds, name_count{…} n */
                fb_buf_puts(out, "_sum");
                dev_labels(out, &gw->devs[i]);
                fb_buf_putc(out, ' ');
                put_double(out, m->f(&gw->devs[i]));
                fb_buf_printf(out, "\n%s_count", m->name);
            }
            dev_labels(out, &gw->devs[i]);
            fb_buf_putc(out, ' ');
            if (m->vk == DBL)
                put_double(out, m->f(&gw->devs[i]));
            else
                fb_buf_printf(out, "%" PRIu64, m->u(&gw->devs[i]));
            fb_buf_putc(out, '\n');
        }
    }

    for (size_t k = 0; k < sizeof sink_metrics / sizeof sink_metrics[0]; k++) {
        family(out, sink_metrics[k].name, sink_metrics[k].type, sink_metrics[k].help);
        for (uint32_t i = 0; i < gw->nsinks; i++) {
            fb_buf_puts(out, sink_metrics[k].name);
            sink_labels(out, &gw->sinks[i]);
            fb_buf_printf(out, " %" PRIu64 "\n", sink_u64(&gw->sinks[i], sink_metrics[k].off));
        }
    }
    family(out, "fieldbridge_sink_connected", "gauge", "1 when the sink is connected to its peer.");
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        fb_buf_puts(out, "fieldbridge_sink_connected");
        sink_labels(out, &gw->sinks[i]);
        fb_buf_printf(out, " %d\n", atomic_load(&gw->sinks[i].m.connected) ? 1 : 0);
    }
    /* only the sinks that track acknowledgements have a window (MQTT, Sparkplug) */
    static const struct {
        const char *name, *help;
        size_t off;
    } window_metrics[] = {
        {"fieldbridge_sink_inflight", "Messages awaiting the peer's acknowledgement.", offsetof(struct fb_sink_metrics, inflight)},
        {"fieldbridge_sink_window",
         "How many messages may await their acknowledgement now (follows the link, up to max_inflight).",
         offsetof(struct fb_sink_metrics, window)},
    };
    for (size_t k = 0; k < sizeof window_metrics / sizeof window_metrics[0]; k++) {
        family(out, window_metrics[k].name, "gauge", window_metrics[k].help);
        for (uint32_t i = 0; i < gw->nsinks; i++) {
            const struct fb_sink_metrics *m = &gw->sinks[i].m;
            if (!atomic_load(&m->window)) continue;
            const _Atomic uint32_t *v = (const _Atomic uint32_t *)(const void *)((const char *)m + window_metrics[k].off);
            fb_buf_puts(out, window_metrics[k].name);
            sink_labels(out, &gw->sinks[i]);
            fb_buf_printf(out, " %u\n", (unsigned)atomic_load(v));
        }
    }
    render_buffers(gw, out);
    for (size_t k = 0; gw->nscripts && k < sizeof script_metrics / sizeof script_metrics[0]; k++) {
        family(out, script_metrics[k].name, "counter", script_metrics[k].help);
        for (uint32_t i = 0; i < gw->nscripts; i++) {
            const _Atomic uint64_t *p =
                (const _Atomic uint64_t *)(const void *)((const char *)&gw->scripts[i] + script_metrics[k].off);
            fb_buf_printf(out, "%s{script=\"", script_metrics[k].name);
            put_label(out, gw->scripts[i].name);
            fb_buf_printf(out, "\"} %" PRIu64 "\n", atomic_load(p));
        }
    }
    fb_certs_metrics(gw, out);
    /* the services' own families (the control loops: docs/control.md) */
    for (uint32_t i = 0; i < gw->nservices && gw->rt && gw->rt->svc_state; i++)
        if (gw->rt->svc_state[i] && gw->services[i].svc->metrics)
            gw->services[i].svc->metrics(gw->rt->svc_state[i], out);
    render_sources(gw, out);

    bool waves = false;
    for (uint32_t i = 0; i < gw->ntags && !waves; i++) waves = fb_tag_is_wave(&gw->tags[i]);
    for (size_t k = 0; waves && k < sizeof wave_metrics / sizeof wave_metrics[0]; k++) {
        const struct wave_metric *m = &wave_metrics[k];
        family(out, m->name, m->type, m->help);
        for (uint32_t i = 0; i < gw->ntags; i++) {
            const struct fb_tag *t = &gw->tags[i];
            if (!fb_tag_is_wave(t)) continue;
            fb_buf_printf(out, "%s{channel=\"", m->name);
            put_label(out, fb_tag_path(gw, t));
            fb_buf_puts(out, "\"} ");
            uint64_t v = wave_u64(fb_tag_wave(gw, t), m);
            if (m->off == offsetof(struct fb_wave, cpu_ns))
                put_double(out, (double)v / 1e9);
            else
                fb_buf_printf(out, "%" PRIu64, v);
            fb_buf_putc(out, '\n');
        }
    }

    double cpu;
    uint64_t rss;
    fb_proc_usage(&cpu, &rss);
    family(out, "fieldbridge_process_cpu_seconds_total", "counter", "User and system CPU time of the process.");
    fb_buf_puts(out, "fieldbridge_process_cpu_seconds_total ");
    put_double(out, cpu);
    fb_buf_putc(out, '\n');
    family(out, "fieldbridge_process_resident_memory_bytes", "gauge", "Resident set size.");
    fb_buf_printf(out, "fieldbridge_process_resident_memory_bytes %" PRIu64 "\n", rss);
    family(out, "fieldbridge_uptime_seconds", "gauge", "Seconds since the gateway started.");
    fb_buf_puts(out, "fieldbridge_uptime_seconds ");
    put_double(out, uptime_s(gw));
    fb_buf_putc(out, '\n');
    family(out, "fieldbridge_clock_synced", "gauge",
           "1 when the kernel reports the system clock synchronised (adjtimex), else 0.");
    fb_buf_printf(out, "fieldbridge_clock_synced %d\n", fb_clock_synced() ? 1 : 0);
    family(out, "fieldbridge_stalled_threads", "gauge",
           "Connection, sink and control threads busy in one step for longer than their limit (0 = alive).");
    fb_buf_printf(out, "fieldbridge_stalled_threads %d\n", fb_live_check(fb_mono_ns(), NULL, 0, NULL));
    family(out, "fieldbridge_tags", "gauge", "Configured tags.");
    fb_buf_printf(out, "fieldbridge_tags %" PRIu32 "\n", gw->ntags);
    family(out, "fieldbridge_build_info", "gauge", "Build information; the value is always 1.");
    fb_buf_puts(out, "fieldbridge_build_info{version=\"");
    put_label(out, FB_VERSION);
    fb_buf_puts(out, "\"} 1\n");
    render_fleet(gw, out);
    fb_model_unlock(gw);
}

/* ----------------------------------------------------------------- status */

static const char *state_name(int s)
{
    switch (s) {
        case FB_DEV_ONLINE: return "online";
        case FB_DEV_OFFLINE: return "offline";
        default: return "connecting";
    }
}

/* Must hold the status memory's lock (rt->status_mu). */
static const char *ne107(const struct fb_gateway *gw, uint32_t i, int state, uint64_t errors, int64_t now)
{
    struct fb_err_seen *seen = gw->rt ? gw->rt->seen : NULL;
    uint32_t nseen = gw->rt ? gw->rt->nseen : 0;
    int64_t interval = gw->status_interval_ns > 0 ? gw->status_interval_ns : 30000000000LL;
    bool grew = false;
    if (seen && i < nseen) {
        if (errors != seen[i].errors) {
            seen[i].errors = errors;
            seen[i].when_ns = now;
        }
        grew = seen[i].when_ns > 0 && now - seen[i].when_ns < interval;
    }
    const struct fb_dev_metrics *m = &gw->devs[i].m;
    if (state == FB_DEV_OFFLINE || atomic_load(&m->alarms_ne107[FB_NE107_FAILURE]) > 0) return "Failure";
    if (state != FB_DEV_ONLINE || atomic_load(&m->alarms_ne107[FB_NE107_CHECK]) > 0) return "Function check";
    if (atomic_load(&m->tags_out_of_spec) > 0 || atomic_load(&m->alarms_ne107[FB_NE107_OUT_OF_SPEC]) > 0)
        return "Out of specification";
    if (atomic_load(&m->tags_bad) > 0 || atomic_load(&m->alarms_ne107[FB_NE107_MAINTENANCE]) > 0)
        return "Maintenance required";
    return grew ? "Maintenance required" : "OK";
}

#define DRAIN_MIN_NS 1000000000LL

/* Records acked per second since the previous measurement (at least 1 s ago). */
static double drain_rate(struct fb_rt *rt, uint32_t i, const void *store, uint64_t acked, int64_t now)
{
    double r = 0;
    if (!rt) return 0;
    pthread_mutex_lock(&rt->status_mu);
    if (i < rt->ndrain) {
        struct fb_drain_seen *d = &rt->drain[i];
        if (d->store != store || acked < d->acked) {
            d->store = store;
            d->acked = acked;
            d->when_ns = now;
            d->rate = 0;
        } else if (now - d->when_ns >= DRAIN_MIN_NS) {
            d->rate = (double)(acked - d->acked) * 1e9 / (double)(now - d->when_ns);
            d->acked = acked;
            d->when_ns = now;
        }
        r = d->rate;
    }
    pthread_mutex_unlock(&rt->status_mu);
    return r;
}

/* The status memory of a running gateway, sized on first use (status_mu held). */
static void status_memory(struct fb_gateway *gw)
{
    struct fb_rt *rt = gw->rt;
    if (!rt->seen && gw->ndevs) {
        rt->seen = calloc(gw->ndevs, sizeof *rt->seen);
        rt->nseen = rt->seen ? gw->ndevs : 0;
    }
    if (!rt->drain && gw->nsinks) {
        rt->drain = calloc(gw->nsinks, sizeof *rt->drain);
        rt->ndrain = rt->drain ? gw->nsinks : 0;
    }
}

/* "info" (identity: docs/fleet.md) and "config" (the running version and
 * the last reload's result, kept by fleet.c). */
static void status_identity(struct fb_gateway *gw, struct fb_buf *out)
{
    fb_buf_puts(out, ",\"info\":{\"id\":");
    fb_json_cstr(out, gw->id ? gw->id : "");
    fb_buf_puts(out, ",\"site\":");
    fb_json_cstr(out, gw->site ? gw->site : "");
    fb_buf_puts(out, ",\"model\":");
    if (gw->hw_model)
        fb_json_cstr(out, gw->hw_model);
    else
        fb_buf_puts(out, "null");
    fb_buf_puts(out, ",\"location\":");
    if (gw->location)
        fb_json_cstr(out, gw->location);
    else
        fb_buf_puts(out, "null");
    fb_buf_puts(out, ",\"labels\":{");
    for (uint32_t i = 0; i < gw->nlabels; i++) {
        if (i) fb_buf_putc(out, ',');
        fb_json_cstr(out, gw->labels[i].key);
        fb_buf_putc(out, ':');
        fb_json_cstr(out, gw->labels[i].value);
    }
    fb_buf_puts(out, "},\"software\":\"fieldbridge " FB_VERSION "\"");
    if (gw->rt) {
        pthread_mutex_lock(&gw->rt->status_mu);
        if (gw->rt->caps_json) {
            fb_buf_puts(out, ",\"capabilities\":");
            fb_buf_puts(out, gw->rt->caps_json);
        }
        fb_buf_putc(out, '}');
        if (gw->rt->config_json) {
            fb_buf_puts(out, ",\"config\":");
            fb_buf_puts(out, gw->rt->config_json);
        }
        pthread_mutex_unlock(&gw->rt->status_mu);
    } else {
        fb_buf_putc(out, '}');
    }
}

/* "system": the box, from the fleet thread's last health sample. */
static void status_system(struct fb_gateway *gw, struct fb_buf *out)
{
    if (!gw->rt) return;
    pthread_mutex_lock(&gw->rt->status_mu);
    if (gw->rt->health.ts) {
        fb_buf_puts(out, ",\"system\":{");
        fb_health_json(out, &gw->rt->health);
        fb_buf_putc(out, '}');
    }
    pthread_mutex_unlock(&gw->rt->status_mu);
}

static void status_buffer(struct fb_buf *out, const struct fb_store_stats *st, double rate, int64_t now)
{
    fb_buf_puts(out, ",\"buffer\":{\"records\":");
    fb_json_u64(out, st->records);
    fb_buf_puts(out, ",\"bytes\":");
    fb_json_u64(out, st->bytes);
    fb_buf_puts(out, ",\"oldest_age_s\":");
    fb_json_double(out, oldest_age_s(st, now));
    fb_buf_puts(out, ",\"dropped\":");
    fb_json_u64(out, st->dropped_full + st->dropped_age);
    fb_buf_puts(out, ",\"lost\":");
    fb_json_u64(out, st->lost);
    if (st->lost) {
        fb_buf_puts(out, ",\"lost_ids\":[");
        fb_json_u64(out, st->lost_first);
        fb_buf_putc(out, ',');
        fb_json_u64(out, st->lost_last);
        fb_buf_putc(out, ']');
    }
    fb_buf_puts(out, ",\"drain_rate\":");
    fb_json_double(out, rate);
    fb_buf_puts(out, st->degraded ? ",\"degraded\":true" : ",\"degraded\":false");
    if (st->degraded && st->last_errno) {
        fb_buf_puts(out, ",\"error\":");
        fb_json_cstr(out, strerror(st->last_errno));
    }
    fb_buf_putc(out, '}');
}

/* The gateway's health and, in `why` (may be NULL), a JSON array of the
 * reasons (docs/fleet.md): error while the lifecycle state is error;
 * degraded while a buffer runs on memory only, or the box is short of disk
 * or memory, or a thermal zone is too hot (fleet.health thresholds); else ok.
 * Model lock held. */
static int health_level(struct fb_gateway *gw, const bool *buf_degraded, struct fb_buf *why)
{
    int level = FB_HEALTH_OK;
    bool first = true;
    char txt[400];
#define REASON(lvl, ...)                                                                                               \
    do {                                                                                                               \
        if ((lvl) > level) level = (lvl);                                                                              \
        if (why) {                                                                                                     \
            snprintf(txt, sizeof txt, __VA_ARGS__);                                                                    \
            if (!first) fb_buf_putc(why, ',');                                                                         \
            fb_json_cstr(why, txt);                                                                                    \
            first = false;                                                                                             \
        }                                                                                                              \
    } while (0)
    if (why) fb_buf_putc(why, '[');
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (buf_degraded[i]) REASON(FB_HEALTH_DEGRADED, "buffer of %s runs on memory only", gw->sinks[i].name);
    struct fb_rt *rt = gw->rt;
    if (rt) {
        struct fb_fleet_cfg def, *fc = gw->fleet;
        if (!fc) {
            fb_fleet_cfg_defaults(&def);
            fc = &def;
        }
        pthread_mutex_lock(&rt->status_mu);
        const struct fb_health *h = &rt->health;
        if (rt->gw_state == FB_GW_ERROR)
            REASON(FB_HEALTH_ERROR, "%s", rt->gw_state_reason[0] ? rt->gw_state_reason : "error");
        if (h->ts && h->disk_ok && h->disk_total) {
            double pct = 100.0 * (double)h->disk_free / (double)h->disk_total;
            if (pct < fc->disk_min_free_pct)
                REASON(FB_HEALTH_DEGRADED, "disk %.200s: %.1f%% free (less than %g%%)", h->disk_path, pct,
                       fc->disk_min_free_pct);
        }
        if (h->ts && h->mem_total) {
            double pct = 100.0 * (double)h->mem_available / (double)h->mem_total;
            if (pct < fc->memory_min_free_pct)
                REASON(FB_HEALTH_DEGRADED, "memory: %.1f%% available (less than %g%%)", pct, fc->memory_min_free_pct);
        }
        for (uint32_t i = 0; h->ts && fc->temperature_max_c > 0 && i < h->ntemp; i++)
            if (h->temp[i].celsius >= fc->temperature_max_c)
                REASON(FB_HEALTH_DEGRADED, "%s (%s): %.1f degrees C (limit %g)", h->temp[i].zone, h->temp[i].type,
                       h->temp[i].celsius, fc->temperature_max_c);
        pthread_mutex_unlock(&rt->status_mu);
    }
#undef REASON
    if (why) fb_buf_putc(why, ']');
    return level;
}

static const char *const health_names[] = {"ok", "degraded", "error"};

int fb_status_health(struct fb_gateway *gw)
{
    fb_model_rdlock(gw);
    bool deg[64] = {false};
    for (uint32_t i = 0; i < gw->nsinks && i < 64; i++) {
        struct fb_store_stats st;
        if (!sink_store(&gw->sinks[i])) continue;
        fb_store_stats(sink_store(&gw->sinks[i]), &st);
        deg[i] = st.degraded;
    }
    int level = health_level(gw, deg, NULL);
    fb_model_unlock(gw);
    return level;
}

const char *fb_device_ne107(struct fb_gateway *gw, uint32_t i)
{
    if (i >= gw->ndevs) return "Failure";
    const struct fb_device *d = &gw->devs[i];
    int st = atomic_load(&d->state);
    uint64_t errors = atomic_load(&d->m.errors);
    if (!gw->rt) return ne107(gw, i, st, errors, fb_now_ns());
    pthread_mutex_lock(&gw->rt->status_mu);
    status_memory(gw);
    const char *r = ne107(gw, i, st, errors, fb_now_ns());
    pthread_mutex_unlock(&gw->rt->status_mu);
    return r;
}

/* Replace any noted secret in out[from..] (env.h): nothing in the status is
 * meant to be one, but it quotes names and errors that could contain one. */
static void redact_from(struct fb_buf *out, size_t from)
{
    if (!fb_secret_any() || out->len <= from) return;
    size_t n = 0;
    char *r = fb_secret_redact_dup(out->p + from, out->len - from, &n);
    if (!r) return;
    out->len = from;
    fb_buf_put(out, r, n);
    free(r);
}

void fb_status_json(struct fb_gateway *gw, struct fb_buf *out, bool online)
{
    fb_model_rdlock(gw);
    size_t start = out->len;
    char ts[40];
    int64_t now = fb_now_ns();
    double cpu;
    uint64_t rss;
    fb_proc_usage(&cpu, &rss);
    fb_buf_puts(out, "{\"gateway\":");
    fb_json_cstr(out, gw->id ? gw->id : "");
    fb_buf_puts(out, online ? ",\"online\":true" : ",\"online\":false");
    int state = online ? FB_GW_ONLINE : FB_GW_OFFLINE;
    if (gw->rt) {
        pthread_mutex_lock(&gw->rt->status_mu);
        /* offline is what a stopped gateway is, unless it was taken out of service */
        if (online || gw->rt->gw_state == FB_GW_DECOMMISSIONED) state = gw->rt->gw_state;
        pthread_mutex_unlock(&gw->rt->status_mu);
    }
    fb_buf_puts(out, ",\"state\":");
    fb_json_cstr(out, fb_gw_state_name(state));
    /* one snapshot per buffer: health and the sink objects agree */
    struct fb_store_stats bst[16];
    bool bdeg[64] = {false};
    uint32_t nbst = gw->nsinks < 16 ? gw->nsinks : 16;
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_store_stats tmp, *st = i < nbst ? &bst[i] : &tmp;
        if (!sink_store(&gw->sinks[i])) continue;
        fb_store_stats(sink_store(&gw->sinks[i]), st);
        if (i < 64) bdeg[i] = st->degraded;
    }
    struct fb_buf why;
    fb_buf_init(&why);
    int level = health_level(gw, bdeg, &why);
    fb_buf_puts(out, ",\"health\":");
    fb_json_cstr(out, health_names[level]);
    fb_buf_puts(out, ",\"health_reasons\":");
    fb_buf_put(out, why.p, why.len);
    fb_buf_free(&why);
    fb_fmt_time(ts, now);
    fb_buf_puts(out, ",\"ts\":");
    fb_json_cstr(out, ts);
    fb_buf_puts(out, ",\"version\":");
    fb_json_cstr(out, FB_VERSION);
    fb_buf_puts(out, ",\"uptime_s\":");
    fb_json_i64(out, (int64_t)uptime_s(gw));
    /* time stamps are only as good as the clock: say when it is not synchronised */
    fb_buf_puts(out, fb_clock_synced() ? ",\"clock_synced\":true" : ",\"clock_synced\":false");
    fb_buf_puts(out, ",\"cpu_s\":");
    fb_json_double(out, cpu);
    fb_buf_puts(out, ",\"rss_bytes\":");
    fb_json_u64(out, rss);
    status_identity(gw, out);
    fb_certs_status(gw, out);

    fb_buf_puts(out, ",\"devices\":{");
    if (gw->rt) {
        pthread_mutex_lock(&gw->rt->status_mu);
        status_memory(gw);
    }
    for (uint32_t i = 0; i < gw->ndevs; i++) {
        const struct fb_device *d = &gw->devs[i];
        int st = atomic_load(&d->state);
        uint64_t errors = atomic_load(&d->m.errors);
        if (i) fb_buf_putc(out, ',');
        fb_json_cstr(out, d->name ? d->name : "");
        fb_buf_puts(out, ":{\"state\":");
        fb_json_cstr(out, state_name(st));
        fb_buf_puts(out, ",\"ne107\":");
        fb_json_cstr(out, ne107(gw, i, st, errors, now));
        fb_buf_puts(out, ",\"requests\":");
        fb_json_u64(out, atomic_load(&d->m.requests));
        fb_buf_puts(out, ",\"errors\":");
        fb_json_u64(out, errors);
        fb_buf_puts(out, ",\"rtt_ms\":");
        fb_json_double(out, (double)atomic_load(&d->m.rtt_ns_last) / 1e6);
        if (gw->nalarms) {
            fb_buf_puts(out, ",\"alarms\":{\"active\":");
            fb_json_u64(out, atomic_load(&d->m.alarms_active));
            fb_buf_puts(out, ",\"unacked\":");
            fb_json_u64(out, atomic_load(&d->m.alarms_unacked));
            fb_buf_putc(out, '}');
        }
        fb_buf_putc(out, '}');
    }
    if (gw->rt) pthread_mutex_unlock(&gw->rt->status_mu);
    fb_buf_puts(out, "},\"sinks\":{");
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        const struct fb_sink_inst *s = &gw->sinks[i];
        if (i) fb_buf_putc(out, ',');
        fb_json_cstr(out, s->name ? s->name : (s->sink && s->sink->name ? s->sink->name : ""));
        fb_buf_puts(out, atomic_load(&s->m.connected) ? ":{\"connected\":true" : ":{\"connected\":false");
        fb_buf_puts(out, ",\"sent\":");
        fb_json_u64(out, atomic_load(&s->m.sent));
        fb_buf_puts(out, ",\"queued\":");
        fb_json_u64(out, atomic_load(&s->m.queued));
        fb_buf_puts(out, ",\"dropped\":");
        fb_json_u64(out, atomic_load(&s->m.dropped));
        if (s->rt) {
            pthread_mutex_lock(&s->rt->mu);
            uint32_t qlen = s->rt->len;
            pthread_mutex_unlock(&s->rt->mu);
            fb_buf_puts(out, ",\"queue\":");
            fb_json_u64(out, qlen);
        }
        if (sink_store(s)) {
            struct fb_store_stats tmp;
            const struct fb_store_stats *st = &tmp;
            if (i < nbst)
                st = &bst[i];
            else
                fb_store_stats(sink_store(s), &tmp);
            status_buffer(out, st, drain_rate(gw->rt, i, sink_store(s), st->acked, fb_mono_ns()), now);
        }
        fb_buf_putc(out, '}');
    }
    fb_buf_putc(out, '}');
    /* vibration channels: blocks, drops, and whether the anomaly baseline is learnt */
    bool first = true;
    for (uint32_t i = 0; i < gw->ntags; i++) {
        const struct fb_tag *t = &gw->tags[i];
        const struct fb_wave *w = fb_tag_wave(gw, t);
        if (!w) continue;
        fb_buf_puts(out, first ? ",\"vibration\":{" : ",");
        first = false;
        fb_json_cstr(out, fb_tag_path(gw, t));
        fb_buf_puts(out, ":{\"blocks\":");
        fb_json_u64(out, atomic_load(&w->blocks));
        fb_buf_puts(out, ",\"dropped\":");
        fb_json_u64(out, atomic_load(&w->dropped));
        fb_buf_puts(out, ",\"cpu_s\":");
        fb_json_double(out, (double)atomic_load(&w->cpu_ns) / 1e9);
        uint32_t of = atomic_load(&w->learn_of), got = atomic_load(&w->learned);
        if (of) {
            fb_buf_puts(out, got >= of ? ",\"baseline\":\"learnt\"" : ",\"baseline\":\"learning\"");
            fb_buf_puts(out, ",\"learned_blocks\":");
            fb_json_u64(out, got);
            fb_buf_puts(out, ",\"learn_blocks\":");
            fb_json_u64(out, of);
        }
        fb_buf_putc(out, '}');
    }
    if (!first) fb_buf_putc(out, '}');
    for (uint32_t i = 0; i < gw->nservices && gw->rt && gw->rt->svc_state; i++)
        if (gw->rt->svc_state[i] && gw->services[i].svc->status) {
            fb_buf_putc(out, ',');
            fb_json_cstr(out, gw->services[i].svc->name);
            fb_buf_putc(out, ':');
            gw->services[i].svc->status(gw->rt->svc_state[i], out);
        }
    status_system(gw, out);
    fb_buf_putc(out, '}');
    redact_from(out, start);
    fb_model_unlock(gw);
}
