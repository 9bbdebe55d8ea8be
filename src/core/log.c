/* log.c — one line per event, human text or JSON lines, with device and tag
 * context.  Each line is built in a stack buffer and written with one
 * write(2), so lines from different threads never interleave.  Every
 * message passes through the secret redaction (env.h) first: a noted
 * password never reaches the log, whatever a message quotes. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/env.h"
#include "core/log.h"

int fb_log_current_level = FB_LOG_INFO;
static int log_format = FB_LOG_TEXT;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void fb_log_init(int level, int format)
{
    fb_log_current_level = level;
    log_format = format;
}

int fb_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (s && strcasecmp(s, level_names[i]) == 0) return i;
    if (s && strcasecmp(s, "warning") == 0) return FB_LOG_WARN;
    return -1;
}

/* JSON string escaping into a fixed buffer (truncating). */
static size_t esc(char *dst, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            dst[n++] = '\\';
            dst[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(dst + n, cap - n, "\\u%04x", c);
        } else {
            dst[n++] = (char)c;
        }
    }
    dst[n] = 0;
    return n;
}

void fb_log(int level, const char *device, const char *tag, const char *fmt, ...)
{
    if (level > fb_log_current_level) return;
    char raw[1024], msg[1024], line[2048], ts[32];
    va_list ap;
    va_start(ap, fmt);
    int rn = vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    size_t rl = rn < 0 ? 0 : (size_t)rn < sizeof raw ? (size_t)rn : sizeof raw - 1;
    fb_secret_redact(raw, rl, msg, sizeof msg);
    fb_fmt_time(ts, fb_now_ns());
    int n;
    if (log_format == FB_LOG_JSON) {
        char em[1200], ed[200], et[200];
        esc(em, sizeof em, msg);
        n = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, level_names[level]);
        if (device) {
            esc(ed, sizeof ed, device);
            n += snprintf(line + n, sizeof line - (size_t)n, ",\"device\":\"%s\"", ed);
        }
        if (tag && n < (int)sizeof line) {
            esc(et, sizeof et, tag);
            n += snprintf(line + n, sizeof line - (size_t)n, ",\"tag\":\"%s\"", et);
        }
        if (n < (int)sizeof line) n += snprintf(line + n, sizeof line - (size_t)n, ",\"msg\":\"%s\"}\n", em);
    } else {
        n = snprintf(line, sizeof line, "%s %-5s ", ts, level_names[level]);
        if (device && tag)
            n += snprintf(line + n, sizeof line - (size_t)n, "[%s/%s] ", device, tag);
        else if (device)
            n += snprintf(line + n, sizeof line - (size_t)n, "[%s] ", device);
        if (n < (int)sizeof line) n += snprintf(line + n, sizeof line - (size_t)n, "%s\n", msg);
    }
    if (n > (int)sizeof line - 1) {
        n = (int)sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

bool fb_ratelimit_ok(struct fb_ratelimit *r, int64_t now)
{
    if (r->last_ns == 0 || now - r->last_ns >= r->interval_ns) {
        r->last_ns = now;
        return true;
    }
    r->suppressed++;
    return false;
}
