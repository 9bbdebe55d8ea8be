/* fuzz_command.c — libFuzzer harness for the command path: every MQTT
 * command payload goes through fb_cmd_process (JSON parse, shape, age, tag
 * look-up, access) and fb_cmd_convert (type, range, scaling, conversion).
 *
 * The gateway here is built by hand with one device whose tags are all
 * read-only, so fb_cmd_process never reaches a connection thread; every
 * value in the payload's "write" object is also run through fb_cmd_convert
 * against one writable tag of each type (scaled and unscaled, with limits).
 * The response must always be a well-formed JSON object with "id" and "ok".
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_command /tmp/c tests/fuzz/corpus/command
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fb_tag tags[FB_T__COUNT * 2];
static struct fb_device dev;
static struct fb_gateway gw;
static char names[FB_T__COUNT * 2][24];

static void setup(void)
{
    fb_log_init(-1, FB_LOG_TEXT); /* silence */
    for (int i = 0; i < FB_T__COUNT * 2; i++) {
        struct fb_tag *t = &tags[i];
        t->id = (uint32_t)i;
        t->type = (uint8_t)(i % FB_T__COUNT ? i % FB_T__COUNT : FB_T_FLOAT64);
        t->access = FB_ACC_READ;
        t->str_len = 8;
        snprintf(names[i], sizeof names[i], "t%d", i);
        t->name = names[i];
        /* the second half: scaled with limits */
        static const struct fb_tag_proc scaled = {
            .scaled = true, .k = 0.1, .d = -40, .has_min = true, .has_max = true, .min = -40, .max = 150};
        if (i >= FB_T__COUNT) t->proc = &scaled;
    }
    dev.name = (char *)"d";
    dev.ntags = FB_T__COUNT * 2;
    gw.devs = &dev;
    gw.ndevs = 1;
    gw.tags = tags;
    gw.ntags = FB_T__COUNT * 2;
    gw.cmd_max_age_ns = 30000000000LL;
    dev.gw = &gw;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    struct fb_cmd c;
    memset(&c, 0, sizeof c);
    c.payload = (char *)data;
    c.len = size;
    /* QoS from the last byte's top bits, so that JSON (which starts with '{'
     * and ends with '}', both < 0x80) is parsed at QoS 1 or 2, and only
     * inputs ending in a byte >= 0xc0 exercise the QoS 0 refusal. */
    c.qos = size ? (data[size - 1] >= 0xc0 ? 0 : 1 + (data[size - 1] >> 7)) : 1;
    snprintf(c.source, sizeof c.source, "fuzz");
    char *resp = NULL;
    size_t rlen = 0;
    fb_cmd_process(&gw, &c, &resp, &rlen);
    json_error_t je;
    json_t *r = json_loadb(resp, rlen, 0, &je);
    if (!r || !json_is_object(r) || !json_object_get(r, "ok") || !json_object_get(r, "id")) abort();
    json_decref(r);
    free(resp);

    json_t *root = json_loadb((const char *)data, size, 0, &je);
    json_t *w = root ? json_object_get(root, "write") : NULL;
    if (json_is_object(w)) {
        const char *k;
        json_t *v;
        json_object_foreach(w, k, v)
        {
            for (int i = 0; i < FB_T__COUNT * 2; i++) {
                struct fb_tag t = tags[i];
                t.access = FB_ACC_RW;
                struct fb_value raw;
                char sbuf[16];
                struct fb_err err;
                if (fb_cmd_convert(&t, v, &raw, sbuf, sizeof sbuf, &err) == 0 && raw.type != t.type) abort();
            }
        }
    }
    if (root) json_decref(root);
    return 0;
}
