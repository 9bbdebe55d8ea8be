/* hwatch.c — a health check watched over its window (hwatch.h).
 *
 * Why: looking once, at the end, keeps a new configuration or version
 * under which a device dropped out for half the window, or flapped, as long
 * as it happened to be back at the last moment; the fleet operator then
 * learns of it only when it fails for good, with the roll-back gone.  So
 * every watched device and sink is sampled every second (the fleet thread's
 * tick, the OTA worker's) and counted. */
#include "fleet/hwatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct item {
    char *name;
    bool sink;
    bool seen_up;    /* healthy at a sample since the change (until then it may still be restarting) */
    uint32_t run;    /* unhealthy samples in a row since seen_up */
    uint32_t downs;  /* unhealthy samples in all since seen_up */
    uint32_t longest;
};

struct fb_hwatch {
    struct item *v;
    uint32_t n, cap;
    bool failed;
    char why[300];
};

struct fb_hwatch *fb_hwatch_new(void) { return calloc(1, sizeof(struct fb_hwatch)); }

void fb_hwatch_free(struct fb_hwatch *w)
{
    if (!w) return;
    for (uint32_t i = 0; i < w->n; i++) free(w->v[i].name);
    free(w->v);
    free(w);
}

bool fb_hwatch_add(struct fb_hwatch *w, bool sink, const char *name)
{
    if (!w || !name) return false;
    if (w->n == w->cap) {
        uint32_t cap = w->cap ? w->cap * 2 : 16;
        struct item *v = realloc(w->v, cap * sizeof *v);
        if (!v) return false;
        w->v = v;
        w->cap = cap;
    }
    struct item *it = &w->v[w->n];
    memset(it, 0, sizeof *it);
    if (!(it->name = strdup(name))) return false;
    it->sink = sink;
    w->n++;
    return true;
}

/* 1 healthy, 0 not, -1 no longer configured (removed on purpose: not counted). */
static int healthy(struct fb_gateway *gw, const struct item *it)
{
    if (!it->sink) {
        struct fb_device *d = fb_gw_device(gw, it->name);
        return d ? atomic_load(&d->state) == FB_DEV_ONLINE : -1;
    }
    for (uint32_t k = 0; k < gw->nsinks; k++)
        if (!strcmp(gw->sinks[k].name, it->name)) return atomic_load(&gw->sinks[k].m.connected) != 0;
    return -1;
}

static const char *down_word(const struct item *it) { return it->sink ? "not connected" : "offline"; }

bool fb_hwatch_sample(struct fb_hwatch *w, struct fb_gateway *gw, char *why, size_t n)
{
    if (!w->failed) {
        for (uint32_t i = 0; i < w->n; i++) {
            struct item *it = &w->v[i];
            int h = healthy(gw, it);
            if (h < 0) continue;
            if (h) {
                it->seen_up = true;
                it->run = 0;
                continue;
            }
            if (!it->seen_up) continue; /* restarted by the change: not back yet */
            it->run++;
            it->downs++;
            if (it->run > it->longest) it->longest = it->run;
            if (!w->failed && it->run >= FB_HWATCH_DOWN_SAMPLES) {
                w->failed = true;
                snprintf(w->why, sizeof w->why, "%s %s was %s during the check (%u samples in a row, a second apart)",
                         it->sink ? "sink" : "device", it->name, down_word(it), it->run);
            } else if (!w->failed && it->downs >= FB_HWATCH_FLAP_SAMPLES) {
                w->failed = true;
                snprintf(w->why, sizeof w->why, "%s %s was %s in %u samples during the check (it flaps)",
                         it->sink ? "sink" : "device", it->name, down_word(it), it->downs);
            }
        }
    }
    if (w->failed && why) snprintf(why, n, "%s", w->why);
    return w->failed;
}

bool fb_hwatch_final(struct fb_hwatch *w, struct fb_gateway *gw, char *why, size_t n)
{
    if (fb_hwatch_sample(w, gw, why, n)) return true;
    size_t off = 0;
    for (uint32_t i = 0; i < w->n && off < sizeof w->why; i++) {
        const struct item *it = &w->v[i];
        if (healthy(gw, it) != 0) continue;
        off += (size_t)snprintf(w->why + off, sizeof w->why - off, "%s%s %s is %s", off ? ", " : "",
                                it->sink ? "sink" : "device", it->name, down_word(it));
    }
    if (!off) return false;
    w->failed = true;
    if (why) snprintf(why, n, "%s", w->why);
    return true;
}
