/* telemetry.c — the JSON payloads of the MQTT sink (docs/mqtt.md,
 * docs/telemetry.schema.json).
 *
 * Telemetry, one message per device and poll cycle:
 *   {"ts":"2026-11-28T10:00:00.123Z","seq":1234,"device":"press-01",
 *    "values":{"temperature":{"v":21.5,"q":"good"},
 *              "pressure":{"v":null,"q":"bad","reason":"BadCommunicationError"},
 *              "level":{"v":null,"raw":123.456,"q":"bad","reason":"BadOutOfRange"},
 *              "speed":{"v":12.5,"q":"good","ts":"2026-11-28T10:00:00.100Z",
 *                       "stats":{"mean":12.1,"stddev":0.3,"min":11.8,"max":12.6,"count":60,"window":"60s"}}}}
 * - "q" is the severity (good / uncertain / bad); every value that is not good
 *   also carries "reason", the OPC UA StatusCode name.
 * - a bad value is always "v":null (the last raw bits are not data); when the
 *   pipeline's plausibility checks made it bad (out of range, a spike:
 *   FB_SF_RAW), the refused reading follows as "raw", in engineering units,
 *   so operators see what the sensor said; a value
 *   that cannot be written as a JSON number (NaN, ±Inf) is null too and is
 *   reported bad ("BadOutOfRange") whatever its quality said, so a consumer
 *   never sees null next to "good"; a sample without a value (type none) is
 *   "BadWaitingForInitialData".
 * - a value's own "ts" appears only when its source time differs from the
 *   message's by 1 ms or more (the message ts has millisecond precision).
 * - integers are exact decimal text, also beyond 2^53 (buf.h).
 * Nothing here allocates once the output buffer has grown to its working size.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "north/mqtt/telemetry.h"

/* A window length as the config writes it: "60s", "250ms", "1500us", "10ns". */
static void put_window(struct fb_buf *out, int64_t ns)
{
    char t[32];
    if (ns % 1000000000LL == 0)
        snprintf(t, sizeof t, "\"%" PRId64 "s\"", (int64_t)(ns / 1000000000LL));
    else if (ns % 1000000LL == 0)
        snprintf(t, sizeof t, "\"%" PRId64 "ms\"", (int64_t)(ns / 1000000LL));
    else if (ns % 1000LL == 0)
        snprintf(t, sizeof t, "\"%" PRId64 "us\"", (int64_t)(ns / 1000LL));
    else
        snprintf(t, sizeof t, "\"%" PRId64 "ns\"", ns);
    fb_buf_puts(out, t);
}

static bool value_finite(const struct fb_value *v)
{
    return !fb_type_is_float((enum fb_type)v->type) || isfinite(v->f);
}

/* The usual sample — Good, an integer or a bool, no statistics, taken at
 * the message's time — in one reservation, without the general checks.
 * False: not that case. */
static bool put_plain(struct fb_buf *out, const struct fb_batch *b, const struct fb_sample *s)
{
    uint8_t t = s->v.type;
    if (!fb_q_good(s->quality) || (s->flags & FB_SF_STATS) || !(fb_type_is_int((enum fb_type)t) || t == FB_T_BOOL))
        return false;
    int64_t d = s->ts_src ? s->ts_src - b->ts : 0;
    if (d >= 1000000LL || d <= -1000000LL) return false;
    fb_buf_reserve(out, 48);
    char *o = out->p + out->len;
    memcpy(o, "{\"v\":", 5);
    o += 5;
    if (t == FB_T_BOOL) {
        memcpy(o, s->v.b ? "true" : "false", s->v.b ? 4 : 5);
        o += s->v.b ? 4 : 5;
    } else {
        o += fb_type_is_signed((enum fb_type)t) ? fb_fmt_i64(o, s->v.i) : fb_fmt_u64(o, s->v.u);
    }
    memcpy(o, ",\"q\":\"good\"}", 12);
    out->len = (size_t)(o + 12 - out->p);
    return true;
}

static void put_sample(struct fb_buf *out, const struct fb_batch *b, const struct fb_sample *s)
{
    if (put_plain(out, b, s)) return;
    uint32_t q = s->quality;
    bool finite = value_finite(&s->v);
    if (!finite && !fb_q_bad(q)) q = FB_Q_BAD_OUT_OF_RANGE;
    if (s->v.type == FB_T_NONE && !fb_q_bad(q)) q = FB_Q_BAD_WAITING; /* no value yet */

    fb_buf_puts(out, "{\"v\":");
    if (fb_q_bad(q))
        fb_buf_puts(out, "null");
    else
        fb_json_value(out, &s->v);
    if (fb_q_bad(q) && (s->flags & FB_SF_RAW) && finite && s->v.type != FB_T_NONE && s->v.type != FB_T_STRING) {
        fb_buf_puts(out, ",\"raw\":");
        fb_json_value(out, &s->v);
    }
    if (fb_q_good(q)) { /* the usual case, without a look-up */
        fb_buf_puts(out, ",\"q\":\"good\"");
    } else {
        fb_buf_puts(out, ",\"q\":\"");
        fb_buf_puts(out, fb_q_severity(q));
        fb_buf_putc(out, '"');
    }
    if (!fb_q_good(q)) {
        char nb[16];
        fb_buf_puts(out, ",\"reason\":");
        fb_json_cstr(out, fb_q_name(q, nb));
    }
    if (s->ts_src != 0) {
        int64_t d = s->ts_src - b->ts;
        if (d >= 1000000LL || d <= -1000000LL) {
            fb_buf_puts(out, ",\"ts\":");
            fb_json_time(out, s->ts_src);
        }
    }
    if ((s->flags & FB_SF_STATS) && s->stats < b->nstats && b->stats) {
        const struct fb_stats *st = &b->stats[s->stats];
        fb_buf_puts(out, ",\"stats\":{\"mean\":");
        fb_json_double(out, st->mean);
        fb_buf_puts(out, ",\"stddev\":");
        fb_json_double(out, st->stddev);
        fb_buf_puts(out, ",\"min\":");
        fb_json_double(out, st->min);
        fb_buf_puts(out, ",\"max\":");
        fb_json_double(out, st->max);
        fb_buf_puts(out, ",\"count\":");
        fb_json_u64(out, st->count);
        fb_buf_puts(out, ",\"window\":");
        put_window(out, st->window_ns);
        fb_buf_putc(out, '}');
    }
    fb_buf_putc(out, '}');
}

static const char *device_name(const struct fb_gateway *gw, uint32_t idx)
{
    if (gw && idx < gw->ndevs && gw->devs[idx].name) return gw->devs[idx].name;
    return "?";
}

static void telemetry(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_batch *b, bool plain_names)
{
    fb_buf_puts(out, "{\"ts\":");
    fb_json_time(out, b->ts);
    fb_buf_puts(out, ",\"seq\":");
    fb_json_u64(out, b->seq);
    fb_buf_puts(out, ",\"device\":");
    fb_json_cstr(out, device_name(gw, b->device));
    fb_buf_puts(out, ",\"values\":{");
    bool first = true;
    for (uint32_t i = 0; i < b->n; i++) {
        const struct fb_sample *s = &b->s[i];
        if (!gw || s->tag >= gw->ntags) continue; /* not ours: never index out of range */
        if (!first) fb_buf_putc(out, ',');
        first = false;
        if (plain_names)
            fb_json_key_plain(out, gw->tags[s->tag].name);
        else
            fb_json_key(out, gw->tags[s->tag].name);
        put_sample(out, b, s);
    }
    fb_buf_puts(out, "}}");
    fb_buf_cstr(out);
}

void fb_telemetry_json(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_batch *b)
{
    telemetry(out, gw, b, false);
}

void fb_telemetry_json_plain(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_batch *b)
{
    telemetry(out, gw, b, true);
}

static const char *state_name(int st)
{
    switch (st) {
        case FB_DEV_ONLINE: return "online";
        case FB_DEV_OFFLINE: return "offline";
        default: return "connecting";
    }
}

void fb_devstatus_json(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_batch *b)
{
    fb_buf_puts(out, "{\"device\":");
    fb_json_cstr(out, device_name(gw, b->device));
    fb_buf_puts(out, ",\"state\":\"");
    fb_buf_puts(out, state_name(b->dev_state));
    fb_buf_puts(out, "\",\"ts\":");
    fb_json_time(out, b->ts);
    size_t rn = strnlen(b->reason, sizeof b->reason);
    if (rn) {
        fb_buf_puts(out, ",\"reason\":");
        fb_json_str(out, b->reason, rn);
    }
    fb_buf_putc(out, '}');
    fb_buf_cstr(out);
}
