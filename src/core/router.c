/* router.c — commands from the north, validated in one place, written south.
 *
 * Why one thread: commands are rare next to telemetry, but each may wait for a
 * slow field device.  Queueing them here keeps the MQTT network thread free
 * and gives every command the same checks in the same order:
 *   sender allowed (commands.allow) → QoS (0 refused unless allowed) →
 *   JSON shape → age ("ts") → per tag: exists → writable → sender may write
 *   it (write_roles) → not held (the write guard: a control loop's output, a
 *   tag an interlock holds) → type → range (engineering units) → unscale →
 *   fits the wire type → write through the owning connection.  Control
 *   loops write their outputs through the same checks (fb_cmd_convert_num)
 *   without the JSON.
 * Each write, accepted or refused, is logged with its source and reason.
 * Alarm actions (acknowledge, shelve, unshelve; docs/alarms.md) arrive the
 * same way, pass the same QoS, shape and age checks, and are carried out by
 * the alarm table (edge/alarms.c), which logs each with its source.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/router.h"

#include "core/buf.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/runtime_state.h"
#include "edge/alarms.h"
#include "proc/proc.h"

#define FB_CMD_WRITE_TIMEOUT_NS 5000000000LL
/* Commands waiting for the router at most: a flood from the IT side (a
 * broken or hostile MQTT client) must not grow the gateway's memory without
 * bound while the router waits for a slow device; beyond it commands are
 * answered "busy" at once. */
#define FB_CMD_MAX_QUEUED 256

struct fb_router {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fb_cmd *head, *tail;
    uint32_t queued; /* under mu: commands in head..tail */
    struct fb_ratelimit rl_busy;
    bool stop;    /* under mu: submissions are refused */
    bool stopped; /* the thread has been joined (fb_router_stop ran) */
    pthread_t thr;
    struct fb_gateway *gw;
};

void fb_cmd_free(struct fb_cmd *cmd)
{
    if (!cmd) return;
    free(cmd->payload);
    free(cmd->response_topic);
    free(cmd->corr);
    free(cmd);
}

/* Command time stamps.  Both forms must name a moment in
 * [1970-01-01T00:00:00Z, 2200-01-01T00:00:00Z): anything outside is a broken
 * clock or an attack, and inside it every value fits int64 nanoseconds with a
 * wide margin, so the age arithmetic below can never overflow. */
#define TS_MAX_S 7258118400LL /* 2200-01-01T00:00:00Z */

static bool ts_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char ch = (*p)[i];
        if (ch < '0' || ch > '9') return false;
        v = v * 10 + (ch - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* Days since 1970-01-01 of a valid proleptic Gregorian date (y >= 0). */
static int64_t ts_days(int y, int m, int d)
{
    static const int before[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    int64_t yy = y - 1;                                              /* whole years before y */
    int64_t days = yy * 365 + yy / 4 - yy / 100 + yy / 400 - 719162; /* 719162: days 0001-01-01..1970-01-01 */
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return days + before[m - 1] + (m > 2 && leap) + d - 1;
}

/* RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm), every
 * field range-checked (month 1..12, day within the month, hour < 24,
 * minute < 60, second <= 60 for a leap second, offset < 24:00). */
static int ts_parse_text(const char *s, int64_t *ns)
{
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, se;
    const char *p = s;
    if (!ts_digits(&p, 4, &y) || *p++ != '-' || !ts_digits(&p, 2, &mo) || *p++ != '-' || !ts_digits(&p, 2, &d) ||
        (*p != 'T' && *p != 't'))
        return -1;
    p++;
    if (!ts_digits(&p, 2, &h) || *p++ != ':' || !ts_digits(&p, 2, &mi) || *p++ != ':' || !ts_digits(&p, 2, &se))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60) return -1;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap) return -1;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int nd = 0;
        for (; *p >= '0' && *p <= '9'; p++, nd++)
            if (nd < 9) frac = frac * 10 + (*p - '0');
        if (nd == 0) return -1;
        for (; nd < 9; nd++) frac *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '+' ? 1 : -1, oh, om;
        if (!ts_digits(&p, 2, &oh) || *p++ != ':' || !ts_digits(&p, 2, &om) || oh > 23 || om > 59) return -1;
        off = sign * (oh * 3600LL + om * 60LL);
    } else {
        return -1; /* RFC 3339 requires the offset */
    }
    if (*p) return -1;
    int64_t secs = ts_days(y, mo, d) * 86400 + h * 3600LL + mi * 60LL + se - off;
    if (secs < 0 || secs >= TS_MAX_S) return -1;
    *ns = secs * 1000000000LL + frac;
    return 0;
}

int fb_cmd_parse_ts(const void *jv, int64_t *ns)
{
    const json_t *j = jv;
    if (json_is_integer(j)) { /* epoch milliseconds */
        json_int_t ms = json_integer_value(j);
        if (ms < 0 || ms >= TS_MAX_S * 1000) return -1;
        *ns = (int64_t)ms * 1000000LL;
        return 0;
    }
    if (!json_is_string(j)) return -1;
    if (strlen(json_string_value(j)) != json_string_length(j)) return -1; /* embedded NUL */
    return ts_parse_text(json_string_value(j), ns);
}

/* ------------------------------------------------------------ senders */
const char *const fb_cmd_sources[] = {"mqtt", "sparkplug", "http", "shadow", "lua", NULL};
const char *const fb_gw_cmd_names[FB_GW_CMDS + 1] = {"reload", "status",    "maintenance", "decommission", "recommission",
                                                     "config", "shadow", "ota",         "provision",    NULL};

static bool ident_ok(const char *s, size_t n)
{
    if (n == 0 || n > 31) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-')) return false;
    return true;
}

int fb_cmd_pattern_check(const char *pat, char *why, size_t why_len)
{
    const char *colon = strchr(pat, ':');
    size_t sl = colon ? (size_t)(colon - pat) : strlen(pat);
    if (colon && !ident_ok(colon + 1, strlen(colon + 1))) {
        snprintf(why, why_len, "'%s': the role after ':' must be 1..31 of a-z 0-9 _ - (e.g. http:operator)", pat);
        return -1;
    }
    if (colon && sl == 1 && pat[0] == '*') return 0;
    for (const char *const *k = fb_cmd_sources; *k; k++)
        if (strlen(*k) == sl && !strncmp(*k, pat, sl)) return 0;
    char list[128] = "";
    size_t off = 0;
    for (const char *const *k = fb_cmd_sources; *k && off < sizeof list; k++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", off ? ", " : "", *k);
    snprintf(why, why_len, "'%s': unknown command source '%.*s' (expected %s, optionally :ROLE, or *:ROLE)", pat,
             (int)sl, pat, list);
    return -1;
}

bool fb_cmd_acl_allows(const struct fb_acl *a, const char *via, const char *role)
{
    size_t vl = strlen(via);
    for (uint32_t i = 0; i < a->n; i++) {
        const char *p = a->pat[i], *colon = strchr(p, ':');
        if (!colon) {
            if (vl && !strcmp(p, via)) return true;
            continue;
        }
        bool src = (colon - p == 1 && p[0] == '*') || (vl && (size_t)(colon - p) == vl && !strncmp(p, via, vl));
        if (src && role[0] && !strcmp(colon + 1, role)) return true;
    }
    return false;
}

/* Does list `idx` (cmd_allow / write_roles: 0 = no list) let the sender in?
 * An index the loader did not make refuses (fail closed). */
static bool acl_ok(const struct fb_gateway *gw, uint16_t idx, const struct fb_cmd *cmd)
{
    if (!idx) return true;
    return idx <= gw->nacls && fb_cmd_acl_allows(&gw->acls[idx - 1], cmd->via, cmd->role);
}

/* "mqtt, http:operator" for messages. */
static void acl_text(const struct fb_gateway *gw, uint16_t idx, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = 0;
    const struct fb_acl *a = idx && idx <= gw->nacls ? &gw->acls[idx - 1] : NULL;
    for (uint32_t i = 0; a && i < a->n && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%s", i ? ", " : "", a->pat[i]);
}

/* "mqtt" or "http:operator": the sender as the lists name it. */
static void sender_text(const struct fb_cmd *cmd, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s%s", cmd->via[0] ? cmd->via : "(unknown source)", cmd->role[0] ? ":" : "", cmd->role);
}

static void fmt_limit(char *buf, size_t n, double v)
{
    struct fb_buf b;
    fb_buf_init(&b);
    fb_json_double(&b, v);
    snprintf(buf, n, "%s", fb_buf_cstr(&b));
    fb_buf_free(&b);
}

/* A value in engineering units inside the tag's range (`range:` of the tag). */
static int check_range(const struct fb_tag *t, double eng, struct fb_err *err)
{
    const struct fb_tag_proc *p = fb_tproc(t);
    char lim[40];
    if (!isfinite(eng)) return fb_err_set(err, FB_EINVAL, "not a finite number");
    if (p->has_max && eng > p->max) {
        fmt_limit(lim, sizeof lim, p->max);
        return fb_err_set(err, FB_ERANGE, "above maximum %s", lim);
    }
    if (p->has_min && eng < p->min) {
        fmt_limit(lim, sizeof lim, p->min);
        return fb_err_set(err, FB_ERANGE, "below minimum %s", lim);
    }
    return 0;
}

/* Engineering units → the raw wire value: unscaled, rounded to the nearest
 * whole number for integer types, checked against the type's range. */
static int from_eng(const struct fb_tag *t, double eng, struct fb_value *raw, struct fb_err *err)
{
    const struct fb_tag_proc *p = fb_tproc(t);
    double r = p->scaled ? fb_scale_out(p, eng) : eng;
    int rc = fb_value_from_double((enum fb_type)t->type, r, raw);
    if (rc == FB_ERANGE) {
        char lim[40];
        fmt_limit(lim, sizeof lim, eng);
        return fb_err_set(err, FB_ERANGE, "%s is out of range for %s", lim, fb_type_name(t->type));
    }
    if (rc < 0) return fb_err_set(err, rc, "cannot convert to %s", fb_type_name(t->type));
    return 0;
}

int fb_cmd_convert(const struct fb_tag *t, const void *jv, struct fb_value *raw, char *sbuf, size_t sbuf_len,
                   struct fb_err *err)
{
    const json_t *j = jv;
    const struct fb_tag_proc *p = fb_tproc(t);
    memset(raw, 0, sizeof *raw);
    if (t->type == FB_T_STRING) {
        if (!json_is_string(j)) return fb_err_set(err, FB_EINVAL, "expected a string");
        size_t n = json_string_length(j);
        size_t max = t->str_len ? t->str_len : sbuf_len;
        if (n > max || n > sbuf_len)
            return fb_err_set(err, FB_ERANGE, "string longer than %zu bytes", max < sbuf_len ? max : sbuf_len);
        memcpy(sbuf, json_string_value(j), n);
        raw->type = FB_T_STRING;
        raw->s.p = sbuf;
        raw->s.len = (uint32_t)n;
        return 0;
    }
    if (t->type == FB_T_BOOL && !p->scaled) {
        if (json_is_boolean(j)) {
            raw->type = FB_T_BOOL;
            raw->b = json_is_true(j);
            return 0;
        }
        if (json_is_integer(j) && (json_integer_value(j) == 0 || json_integer_value(j) == 1)) {
            raw->type = FB_T_BOOL;
            raw->b = json_integer_value(j) == 1;
            return 0;
        }
        return fb_err_set(err, FB_EINVAL, "expected true or false");
    }
    if (!json_is_number(j)) {
        if (json_is_boolean(j) && fb_type_is_int(t->type) && !p->scaled) {
            /* a bool to a numeric register is a common dashboard habit: 0/1 */
            j = json_is_true(j) ? json_integer(1) : json_integer(0);
            int rc = fb_cmd_convert(t, j, raw, sbuf, sbuf_len, err);
            json_decref((json_t *)j);
            return rc;
        }
        return fb_err_set(err, FB_EINVAL, "expected a number for %s tag", fb_type_name(t->type));
    }
    double eng = json_number_value(j);
    int rc = check_range(t, eng, err);
    if (rc) return rc;
    /* Exact path for integers that need no scaling: no detour through double. */
    if (json_is_integer(j) && !p->scaled && fb_type_is_int(t->type)) {
        json_int_t v = json_integer_value(j);
        raw->type = t->type;
        if (fb_type_is_signed(t->type)) {
            static const int64_t lo[] = {
                [FB_T_INT8] = INT8_MIN, [FB_T_INT16] = INT16_MIN, [FB_T_INT32] = INT32_MIN, [FB_T_INT64] = INT64_MIN};
            static const int64_t hi[] = {
                [FB_T_INT8] = INT8_MAX, [FB_T_INT16] = INT16_MAX, [FB_T_INT32] = INT32_MAX, [FB_T_INT64] = INT64_MAX};
            if (v < lo[t->type] || v > hi[t->type])
                return fb_err_set(err, FB_ERANGE, "%lld is out of range for %s", (long long)v, fb_type_name(t->type));
            raw->i = v;
        } else {
            static const uint64_t hi[] = {[FB_T_UINT8] = UINT8_MAX,
                                          [FB_T_UINT16] = UINT16_MAX,
                                          [FB_T_UINT32] = UINT32_MAX,
                                          [FB_T_UINT64] = UINT64_MAX};
            if (v < 0 || (uint64_t)v > hi[t->type])
                return fb_err_set(err, FB_ERANGE, "%lld is out of range for %s", (long long)v, fb_type_name(t->type));
            raw->u = (uint64_t)v;
        }
        return 0;
    }
    if (fb_type_is_int(t->type) && !p->scaled && eng != nearbyint(eng))
        return fb_err_set(err, FB_EINVAL, "%s tag needs a whole number", fb_type_name(t->type));
    return from_eng(t, eng, raw, err);
}

int fb_cmd_convert_num(const struct fb_tag *t, double eng, struct fb_value *raw, struct fb_err *err)
{
    memset(raw, 0, sizeof *raw);
    if (t->type == FB_T_STRING) return fb_err_set(err, FB_EINVAL, "a number for a string tag");
    if (t->type == FB_T_BOOL && !fb_tproc(t)->scaled) {
        if (!isfinite(eng)) return fb_err_set(err, FB_EINVAL, "not a finite number");
        raw->type = FB_T_BOOL;
        raw->b = eng >= 0.5;
        return 0;
    }
    int rc = check_range(t, eng, err);
    return rc ? rc : from_eng(t, eng, raw, err);
}

static void respond(struct fb_buf *b, const char *id_json, bool ok, const char *error)
{
    fb_buf_puts(b, "{\"id\":");
    fb_buf_puts(b, id_json);
    fb_buf_puts(b, ok ? ",\"ok\":true" : ",\"ok\":false");
    if (error) {
        fb_buf_puts(b, ",\"error\":");
        fb_json_cstr(b, error);
    }
    fb_buf_putc(b, '}');
}

/* The request's "id" as JSON text (a string or an integer), "null" when it has none. */
static void id_text(const json_t *root, char *out, size_t n)
{
    snprintf(out, n, "null");
    json_t *id = json_is_object(root) ? json_object_get(root, "id") : NULL;
    if (json_is_string(id) && json_string_length(id) < 100) {
        struct fb_buf ib;
        fb_buf_init(&ib);
        fb_json_str(&ib, json_string_value(id), json_string_length(id));
        snprintf(out, n, "%s", fb_buf_cstr(&ib));
        fb_buf_free(&ib);
    } else if (json_is_integer(id)) {
        snprintf(out, n, "%lld", (long long)json_integer_value(id));
    }
}

void fb_cmd_process(struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *resp_len)
{
    struct fb_buf out;
    fb_buf_init(&out);
    struct fb_device *dev = cmd->device < gw->ndevs ? &gw->devs[cmd->device] : NULL;
    const char *dname = dev ? dev->name : "?";
    json_error_t jerr;
    json_t *root = json_loadb(cmd->payload, cmd->len, JSON_REJECT_DUPLICATES, &jerr);
    char id_json[160] = "null";
    char why[300];

    id_text(root, id_json, sizeof id_json);
    if (!dev) {
        respond(&out, id_json, false, "unknown device");
        goto done;
    }
    char sender[64];
    sender_text(cmd, sender, sizeof sender);
    if (!acl_ok(gw, gw->cmd_allow, cmd)) {
        char list[200];
        acl_text(gw, gw->cmd_allow, list, sizeof list);
        snprintf(why, sizeof why, "commands from %.60s are not allowed (commands.allow: [%.180s])", sender, list);
        fb_warn(dname, NULL, "command refused from %s: %s", cmd->source, why);
        respond(&out, id_json, false, why);
        goto done;
    }
    if (cmd->qos == 0 && !gw->cmd_allow_qos0) {
        fb_warn(dname, NULL, "command refused from %s: sent with QoS 0", cmd->source);
        respond(&out, id_json, false, "commands must be sent with QoS 1 or 2");
        goto done;
    }
    /* the lifecycle state (docs/fleet.md): nothing is written while an operator works on
     * the machine, or on a gateway that is not (or no longer) in service */
    int gstate = gw->rt ? atomic_load(&gw->rt->gw_state) : FB_GW_ONLINE;
    if (gstate == FB_GW_MAINTENANCE || gstate == FB_GW_DECOMMISSIONED || gstate == FB_GW_PROVISIONING) {
        snprintf(why, sizeof why, "the gateway is in %s: writes are refused", fb_gw_state_name(gstate));
        fb_warn(dname, NULL, "command refused from %s: %s", cmd->source, why);
        respond(&out, id_json, false, why);
        goto done;
    }
    if (!root) {
        snprintf(why, sizeof why, "invalid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        fb_warn(dname, NULL, "command refused from %s: %s", cmd->source, why);
        respond(&out, id_json, false, why);
        goto done;
    }
    if (!json_is_object(root)) {
        fb_warn(dname, NULL, "command refused from %s: not a JSON object", cmd->source);
        respond(&out, id_json, false, "expected a JSON object {\"id\":..., \"write\":{...}}");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "id") && strcmp(key, "ts") && strcmp(key, "write") && strcmp(key, "ack") &&
            strcmp(key, "shelve") && strcmp(key, "unshelve") && strcmp(key, "comment")) {
            snprintf(why, sizeof why, "unknown key '%.60s' (expected id, ts, write, ack, shelve, unshelve, comment)",
                     key);
            fb_warn(dname, NULL, "command refused from %s: %s", cmd->source, why);
            respond(&out, id_json, false, why);
            goto done;
        }
    }
    json_t *w = json_object_get(root, "write");
    bool alarm_cmd = fb_alarms_is_command(root);
    if ((w || !alarm_cmd) && (!json_is_object(w) || json_object_size(w) == 0)) {
        fb_warn(dname, NULL, "command refused from %s: no \"write\" object", cmd->source);
        respond(&out, id_json, false,
                "expected \"write\": {\"tag\": value, ...} (or \"ack\", \"shelve\", \"unshelve\")");
        goto done;
    }
    json_t *ts = json_object_get(root, "ts");
    if (ts) {
        int64_t t;
        if (fb_cmd_parse_ts(ts, &t) < 0) {
            fb_warn(dname, NULL, "command refused from %s: bad ts", cmd->source);
            respond(&out, id_json, false,
                    "bad \"ts\" (expected RFC 3339 time with offset, e.g. 2026-11-28T10:00:00Z, or epoch "
                    "milliseconds; 1970..2199)");
            goto done;
        }
        int64_t age = fb_now_ns() - t;
        if (gw->cmd_max_age_ns > 0 && age > gw->cmd_max_age_ns) {
            snprintf(why, sizeof why, "request too old: %.1fs > max_age %.1fs", age / 1e9, gw->cmd_max_age_ns / 1e9);
            fb_warn(dname, NULL, "command refused from %s: %s", cmd->source, why);
            respond(&out, id_json, false, why);
            goto done;
        }
    }

    bool all_ok = true;
    struct fb_buf res;
    fb_buf_init(&res);
    fb_buf_putc(&res, '{');
    bool first = true;
    /* no "write" (an alarm command): json_object_foreach of NULL runs no round */
    json_object_foreach(w, key, val)
    {
        struct fb_err err = {0};
        int rc;
        struct fb_tag *t = fb_gw_tag(gw, dev, key);
        struct fb_value raw;
        char sbuf[256];
        if (!t) {
            rc = fb_err_set(&err, FB_ENOENT, "no such tag");
        } else if (!(t->access & FB_ACC_WRITE)) {
            rc = fb_err_set(&err, FB_EACCES, "tag is read-only");
        } else if (!acl_ok(gw, fb_tag_write_roles(t), cmd)) {
            char list[200];
            acl_text(gw, fb_tag_write_roles(t), list, sizeof list);
            rc = fb_err_set(&err, FB_EACCES, "not allowed for %s (write_roles: [%s])", sender, list);
        } else if ((rc = fb_write_guard_check(gw, t, &err)) < 0) {
            /* held by a control loop or an interlock (the guard gave the reason) */
        } else {
            rc = fb_cmd_convert(t, val, &raw, sbuf, sizeof sbuf, &err);
            if (rc == 0)
                rc = fb_conn_write(gw, t, &raw, gw->cmd_timeout_ns > 0 ? gw->cmd_timeout_ns : FB_CMD_WRITE_TIMEOUT_NS,
                                   &err);
        }
        char *vtext = json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT);
        if (rc == 0)
            fb_info(dname, key, "write %s from %s: ok", vtext ? vtext : "?", cmd->source);
        else
            fb_warn(dname, key, "write %s from %s refused: %s", vtext ? vtext : "?", cmd->source, err.msg);
        free(vtext);
        if (!first) fb_buf_putc(&res, ',');
        first = false;
        fb_json_cstr(&res, key);
        if (rc == 0) {
            fb_buf_puts(&res, ":{\"ok\":true}");
        } else {
            all_ok = false;
            fb_buf_puts(&res, ":{\"ok\":false,\"error\":");
            fb_json_cstr(&res, err.msg[0] ? err.msg : fb_strerror(rc));
            fb_buf_putc(&res, '}');
        }
    }
    if (alarm_cmd) fb_alarms_command(gw, cmd->device, root, cmd->source, &res, &first, &all_ok);
    fb_buf_putc(&res, '}');
    fb_buf_puts(&out, "{\"id\":");
    fb_buf_puts(&out, id_json);
    fb_buf_puts(&out, all_ok ? ",\"ok\":true,\"results\":" : ",\"ok\":false,\"results\":");
    fb_buf_put(&out, res.p, res.len);
    fb_buf_putc(&out, '}');
    fb_buf_free(&res);
done:
    if (root) json_decref(root);
    fb_buf_cstr(&out);
    *resp = out.p;
    *resp_len = out.len;
}

/* Which of fb_gw_cmd_names a gateway command is, -1 when none (a command
 * topic message without a known "cmd": the fleet component refuses it). */
static int gateway_cmd_index(const struct fb_cmd *cmd, const json_t *root)
{
    const char *name = NULL;
    if (!strncmp(cmd->topic, "shadow/", 7))
        name = "shadow";
    else if (!strncmp(cmd->topic, "ota/", 4))
        name = "ota";
    else if (!strncmp(cmd->topic, "provision/", 10))
        name = "provision";
    else if (json_is_object(root))
        name = json_string_value(json_object_get(root, "cmd"));
    for (int i = 0; name && fb_gw_cmd_names[i]; i++)
        if (!strcmp(fb_gw_cmd_names[i], name)) return i;
    return -1;
}

static void gateway_refuse(const char *id_json, const char *why, char **resp, size_t *resp_len)
{
    struct fb_buf out;
    fb_buf_init(&out);
    respond(&out, id_json, false, why);
    fb_buf_cstr(&out);
    *resp = out.p;
    *resp_len = out.len;
}

/* A command to the gateway itself: the sender lists and the QoS rule, then
 * the fleet component's handler (docs/fleet.md).  What the gateway makes
 * itself (SIGHUP, the fleet thread, the shadow's retries: no sender `via`,
 * no QoS) passes; every command from outside — over MQTT today — passes
 * commands.allow and its own commands.gateway.<cmd> like a write passes
 * commands.allow and the tag's write_roles. */
static void gateway_process(struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *resp_len)
{
    bool own = !cmd->via[0] && cmd->qos < 0;
    if (!own) {
        json_t *root = json_loadb(cmd->payload, cmd->len, 0, NULL);
        char id_json[160], why[300], sender[64], list[200];
        id_text(root, id_json, sizeof id_json);
        int k = gateway_cmd_index(cmd, root);
        json_decref(root);
        sender_text(cmd, sender, sizeof sender);
        why[0] = 0;
        if (!acl_ok(gw, gw->cmd_allow, cmd)) {
            acl_text(gw, gw->cmd_allow, list, sizeof list);
            snprintf(why, sizeof why, "commands from %.60s are not allowed (commands.allow: [%.180s])", sender, list);
        } else if (k >= 0 && !acl_ok(gw, gw->gw_cmd_allow[k], cmd)) {
            acl_text(gw, gw->gw_cmd_allow[k], list, sizeof list);
            snprintf(why, sizeof why, "%s from %.60s is not allowed (commands.gateway.%s: [%.180s])",
                     fb_gw_cmd_names[k], sender, fb_gw_cmd_names[k], list);
        } else if (cmd->qos == 0 && !gw->cmd_allow_qos0) {
            snprintf(why, sizeof why, "commands must be sent with QoS 1 or 2");
        }
        if (why[0]) {
            fb_warn(NULL, NULL, "gateway command %s refused from %s: %s", k >= 0 ? fb_gw_cmd_names[k] : cmd->topic,
                    cmd->source, why);
            gateway_refuse(id_json, why, resp, resp_len);
            return;
        }
    }
    if (gw->rt && gw->rt->gw_cmd) {
        pthread_mutex_lock(&gw->rt->gw_cmd_mu);
        if (atomic_load(&gw->rt->stop)) { /* fb_runtime_wait has begun: it changes no more */
            pthread_mutex_unlock(&gw->rt->gw_cmd_mu);
            gateway_refuse("null", "the gateway is stopping", resp, resp_len);
            return;
        }
        gw->rt->gw_cmd(gw, cmd, resp, resp_len);
        pthread_mutex_unlock(&gw->rt->gw_cmd_mu);
        return;
    }
    gateway_refuse("null", "this gateway takes no commands for itself", resp, resp_len);
}

static void *router_thread(void *arg)
{
    struct fb_router *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->head && !r->stop) pthread_cond_wait(&r->cv, &r->mu);
        /* Stopping: take no more commands — the connection threads are finishing
         * and each write would hold them (a queue of writes for a silent device
         * kept the gateway from stopping); fb_router_stop answers what is left. */
        if (r->stop || fb_runtime_stopping(r->gw)) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        struct fb_cmd *c = r->head;
        if (c) {
            r->head = c->next;
            if (!r->head) r->tail = NULL;
            r->queued--;
        }
        pthread_mutex_unlock(&r->mu);
        if (!c) break;
        char *resp = NULL;
        size_t len = 0;
        if (c->kind == FB_CMD_GATEWAY)
            gateway_process(r->gw, c, &resp, &len);
        else
            fb_cmd_process(r->gw, c, &resp, &len);
        if (c->reply && resp) c->reply(c, resp, len);
        free(resp);
        fb_cmd_free(c);
    }
    return NULL;
}

/* Answer a command that will not be processed (busy, stopping) with its id
 * and the reason, on the calling thread (a source's reply is thread-safe),
 * log it (when say), and free it. */
static void answer_refused(struct fb_gateway *gw, struct fb_cmd *cmd, const char *why, bool say)
{
    json_t *root = json_loadb(cmd->payload, cmd->len, 0, NULL);
    char id[160];
    id_text(root, id, sizeof id);
    json_decref(root);
    const char *dname = cmd->device < gw->ndevs ? gw->devs[cmd->device].name : "?";
    if (say) fb_warn(dname, NULL, "command refused from %s: %s", cmd->source, why);
    struct fb_buf out;
    fb_buf_init(&out);
    respond(&out, id, false, why);
    if (cmd->reply) cmd->reply(cmd, fb_buf_cstr(&out), out.len);
    fb_buf_free(&out);
    fb_cmd_free(cmd);
}

void fb_router_submit(struct fb_gateway *gw, struct fb_cmd *cmd)
{
    struct fb_router *r = gw->rt ? gw->rt->router : NULL;
    if (!r) {
        fb_cmd_free(cmd);
        return;
    }
    cmd->next = NULL;
    pthread_mutex_lock(&r->mu);
    if (r->stop) {
        pthread_mutex_unlock(&r->mu);
        fb_cmd_free(cmd);
        return;
    }
    if (r->queued >= FB_CMD_MAX_QUEUED) {
        bool say = fb_ratelimit_ok(&r->rl_busy, fb_mono_ns());
        pthread_mutex_unlock(&r->mu);
        char why[120];
        snprintf(why, sizeof why, "busy: %d commands are waiting for their devices; try again later",
                 FB_CMD_MAX_QUEUED);
        answer_refused(gw, cmd, why, say);
        return;
    }
    r->queued++;
    if (r->tail)
        r->tail->next = cmd;
    else
        r->head = cmd;
    r->tail = cmd;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

int fb_router_start(struct fb_gateway *gw)
{
    struct fb_router *r = calloc(1, sizeof *r);
    if (!r) return FB_ENOMEM;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->gw = gw;
    r->rl_busy.interval_ns = 10000000000LL;
    if (pthread_create(&r->thr, NULL, router_thread, r) != 0) {
        free(r);
        return FB_ENOMEM;
    }
    gw->rt->router = r;
    return 0;
}

void fb_router_stop(struct fb_gateway *gw)
{
    struct fb_router *r = gw->rt ? gw->rt->router : NULL;
    if (!r || r->stopped) return;
    r->stopped = true;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thr, NULL);
    /* commands still queued: the devices are closed, so they are answered as
     * not executed (the sinks still run: they stop after the router) */
    pthread_mutex_lock(&r->mu);
    struct fb_cmd *c = r->head;
    r->head = r->tail = NULL;
    r->queued = 0;
    pthread_mutex_unlock(&r->mu);
    bool say = c != NULL;
    while (c) {
        struct fb_cmd *next = c->next;
        answer_refused(gw, c, "the gateway is stopping: the command was not executed", say);
        say = false;
        c = next;
    }
}

void fb_router_refuse_queued(struct fb_gateway *gw, const char *why)
{
    struct fb_router *r = gw->rt ? gw->rt->router : NULL;
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    struct fb_cmd *c = r->head;
    r->head = r->tail = NULL;
    pthread_mutex_unlock(&r->mu);
    while (c) {
        struct fb_cmd *next = c->next;
        char id_json[160] = "null";
        json_t *root = json_loadb(c->payload, c->len, 0, NULL);
        json_t *id = root ? json_object_get(root, "id") : NULL;
        if (json_is_string(id) && json_string_length(id) < 100) {
            struct fb_buf ib;
            fb_buf_init(&ib);
            fb_json_str(&ib, json_string_value(id), json_string_length(id));
            snprintf(id_json, sizeof id_json, "%s", fb_buf_cstr(&ib));
            fb_buf_free(&ib);
        } else if (json_is_integer(id)) {
            snprintf(id_json, sizeof id_json, "%lld", (long long)json_integer_value(id));
        }
        json_decref(root);
        fb_warn(NULL, NULL, "command from %s refused: %s", c->source, why);
        struct fb_buf out;
        fb_buf_init(&out);
        respond(&out, id_json, false, why);
        fb_buf_cstr(&out);
        if (c->reply) c->reply(c, out.p, out.len);
        fb_buf_free(&out);
        fb_cmd_free(c);
        c = next;
    }
}

void fb_router_drop_from(struct fb_gateway *gw, const char *sink)
{
    struct fb_router *r = gw->rt ? gw->rt->router : NULL;
    if (!r || !sink) return;
    size_t n = strlen(sink);
    pthread_mutex_lock(&r->mu);
    struct fb_cmd **pp = &r->head, *last = NULL;
    while (*pp) {
        struct fb_cmd *c = *pp;
        if (!strncmp(c->source, sink, n) && c->source[n] == ':') {
            *pp = c->next;
            fb_warn(NULL, NULL, "command from %s dropped: %s closed for a configuration reload", c->source, sink);
            fb_cmd_free(c);
            continue;
        }
        last = c;
        pp = &c->next;
    }
    r->tail = last;
    pthread_mutex_unlock(&r->mu);
}

void fb_router_remap(struct fb_gateway *gw, const uint32_t *map, uint32_t n)
{
    struct fb_router *r = gw->rt ? gw->rt->router : NULL;
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    for (struct fb_cmd *c = r->head; c; c = c->next)
        if (c->kind == FB_CMD_WRITE) c->device = c->device < n ? map[c->device] : UINT32_MAX;
    pthread_mutex_unlock(&r->mu);
}

void fb_router_free(struct fb_router *r)
{
    if (!r) return;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
