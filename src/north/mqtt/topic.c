/* topic.c — MQTT topic templates over the ISA-95 levels.
 *
 * A template such as "factory/{site}/area/{area}/line/{line}/device/{device}/{kind}"
 * is rendered once per device and kind when the MQTT sink opens; the hot path
 * only ever uses the rendered strings.  Rules (docs/mqtt.md):
 *   - placeholders: {gateway} {site} {area} {line} {device} {kind};
 *     anything else in braces is an error that names the placeholder;
 *   - every placeholder except {kind} fills exactly one topic level: the MQTT
 *     wildcards '+' and '#' and the level separator '/' inside a value become
 *     '_', and an empty value becomes "_", so a topic never has an empty level
 *     and never contains a wildcard;
 *   - {kind} is ours ("telemetry", "status", "command", "command/response")
 *     and is copied as is;
 *   - for the gateway's own topics (dev == NULL) the device level is the
 *     gateway id and area/line are "_".
 * fb_topic_check() is the config-time validation: it also demands {device}
 * and {kind}, since without them devices or message kinds would share topics.
 */
#include <stdio.h>
#include <string.h>

#include "north/mqtt/topic.h"

enum ph { PH_GATEWAY, PH_SITE, PH_AREA, PH_LINE, PH_DEVICE, PH_KIND, PH__COUNT };
static const char *const ph_names[PH__COUNT] = {"gateway", "site", "area", "line", "device", "kind"};

/* Placeholder name [p, p+n) → enum ph, or -1. */
static int ph_lookup(const char *p, size_t n)
{
    for (int i = 0; i < PH__COUNT; i++)
        if (strlen(ph_names[i]) == n && memcmp(ph_names[i], p, n) == 0) return i;
    return -1;
}

/* Appends one level value: "_" when empty, wildcards and '/' replaced. */
static void put_level(struct fb_buf *out, const char *v)
{
    if (!v || !*v) {
        fb_buf_putc(out, '_');
        return;
    }
    size_t n = strlen(v);
    fb_buf_reserve(out, n);
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        out->p[out->len++] = (c == '+' || c == '#' || c == '/') ? '_' : c;
    }
}

int fb_topic_render(struct fb_buf *out, const char *tmpl, const struct fb_gateway *gw, const struct fb_device *dev,
                    const char *kind)
{
    if (!out || !tmpl || !gw) return FB_EINVAL;
    const char *p = tmpl;
    while (*p) {
        if (*p == '+' || *p == '#') return FB_EINVAL;
        if (*p != '{') {
            const char *q = p;
            while (*q && *q != '{' && *q != '+' && *q != '#') q++;
            fb_buf_put(out, p, (size_t)(q - p));
            p = q;
            continue;
        }
        const char *end = strchr(p, '}');
        if (!end) return FB_EINVAL;
        int ph = ph_lookup(p + 1, (size_t)(end - p - 1));
        switch (ph) {
            case PH_GATEWAY: put_level(out, gw->id); break;
            case PH_SITE: put_level(out, gw->site); break;
            case PH_AREA: put_level(out, dev ? dev->area : NULL); break;
            case PH_LINE: put_level(out, dev ? dev->line : NULL); break;
            case PH_DEVICE: put_level(out, dev ? dev->name : gw->id); break;
            case PH_KIND:
                if (kind && *kind)
                    fb_buf_puts(out, kind);
                else
                    fb_buf_putc(out, '_');
                break;
            default: return FB_EINVAL;
        }
        p = end + 1;
    }
    fb_buf_cstr(out);
    return 0;
}

int fb_topic_check(const char *tmpl, struct fb_err *err)
{
    if (!tmpl || !*tmpl) return fb_err_set(err, FB_EINVAL, "topic template is empty");
    if (tmpl[0] == '$')
        return fb_err_set(err, FB_EINVAL, "topic template must not start with '$' (reserved for the broker)");
    if (strlen(tmpl) > 1024) return fb_err_set(err, FB_EINVAL, "topic template is longer than 1024 bytes");
    bool seen[PH__COUNT] = {false};
    const char *p = tmpl;
    const char *level = tmpl; /* start of the current level */
    while (*p) {
        char c = *p;
        if (c == '+' || c == '#')
            return fb_err_set(err, FB_EINVAL, "topic template \"%s\": wildcard '%c' is not allowed in a topic", tmpl,
                              c);
        if (c == '}') return fb_err_set(err, FB_EINVAL, "topic template \"%s\": '}' without '{'", tmpl);
        if (c == '/') {
            if (p == level) return fb_err_set(err, FB_EINVAL, "topic template \"%s\": empty topic level", tmpl);
            level = ++p;
            continue;
        }
        if (c == '{') {
            const char *end = p + 1;
            while (*end && *end != '}' && *end != '{' && *end != '/') end++;
            if (*end != '}')
                return fb_err_set(err, FB_EINVAL, "topic template \"%s\": unterminated placeholder \"%.*s\"", tmpl,
                                  (int)(end - p), p);
            int ph = ph_lookup(p + 1, (size_t)(end - p - 1));
            if (ph < 0)
                return fb_err_set(err, FB_EINVAL,
                                  "topic template \"%s\": unknown placeholder {%.*s} (known: {gateway} "
                                  "{site} {area} {line} {device} {kind})",
                                  tmpl, (int)(end - p - 1), p + 1);
            seen[ph] = true;
            p = end + 1;
            continue;
        }
        p++;
    }
    if (p == level) return fb_err_set(err, FB_EINVAL, "topic template \"%s\": empty topic level at the end", tmpl);
    if (!seen[PH_DEVICE])
        return fb_err_set(err, FB_EINVAL, "topic template \"%s\" needs {device}, or all devices would share one topic",
                          tmpl);
    if (!seen[PH_KIND])
        return fb_err_set(err, FB_EINVAL,
                          "topic template \"%s\" needs {kind}, or telemetry, status and commands would share "
                          "one topic",
                          tmpl);
    return 0;
}
