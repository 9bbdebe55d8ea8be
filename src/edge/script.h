/* script.h — user logic in Lua 5.4 (script.c; docs/computed.md): one Lua
 * state per configured script, run by the edge thread with an instruction
 * budget, a wall-clock budget and a memory limit, and without the io, os,
 * package and debug libraries unless `libraries:` enables io or os.
 *
 * A script defines on_batch(dev) (called with each processed batch of its
 * devices) and/or on_timer(now) (every `timer:`), and talks to the gateway
 * through the table `fb`: get values, set its output tags, request writes
 * (through the command router's validation), raise its alarms and events.
 * A script that fails — an error, a budget or the memory limit exceeded —
 * is reported and its outputs go Bad; the gateway goes on.
 */
#ifndef FB_SCRIPT_H
#define FB_SCRIPT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

/* What the edge thread gives its scripts: the current value of any tag, and
 * where an output value goes (staged until the call succeeded). */
struct fb_script_env {
    struct fb_gateway *gw;
    void *edge;
    /* false when the tag has no value yet */
    bool (*get)(void *edge, uint32_t tag, struct fb_value *v, uint32_t *q, int64_t *ts);
    void (*set)(void *edge, uint32_t tag, const struct fb_value *v, uint32_t q);
};

struct fb_lua;

/* Compile src (no run) to check its syntax: the config loader's. */
int fb_script_check(const char *src, size_t len, const char *name, struct fb_err *err);

/* A running script: the state is made, the libraries opened, the chunk run
 * (under the budget) and on_batch/on_timer looked up.  NULL with err set
 * when that fails. */
struct fb_lua *fb_lua_new(struct fb_script *s, const struct fb_script_env *env, struct fb_err *err);
void fb_lua_free(struct fb_lua *x);
bool fb_lua_has_batch(const struct fb_lua *x);
bool fb_lua_has_timer(const struct fb_lua *x);
/* Call on_batch with the batch's values (b->device's table updated in
 * place) or on_timer.  0 on success, else a negative error with the reason
 * in *why (valid until the next call): FB_ERANGE for a budget, FB_ENOMEM
 * for the memory limit, FB_EINVAL for an error the script raised. */
int fb_lua_batch(struct fb_lua *x, const struct fb_batch *b, const char **why);
int fb_lua_timer(struct fb_lua *x, int64_t wall, const char **why);
/* A configuration reload kept the script (edge.h): its entry in the new
 * model, and — on the edge thread, before the next call — its per-device
 * tables re-keyed by the devices' new ids (devmap: old id → new,
 * UINT32_MAX: gone) and its cache of tag names emptied (ids may have
 * moved).  Globals stay.  Nonzero with *why when the state has not the
 * memory for it (then nothing changed). */
void fb_lua_rebind(struct fb_lua *x, struct fb_script *s);
int fb_lua_remap_devices(struct fb_lua *x, const uint32_t *devmap, uint32_t n, const char **why);
/* Bytes the state holds now. */
size_t fb_lua_memory(const struct fb_lua *x);
#endif
