/* config.h — load and validate the YAML configuration into a gateway model
 * (config.c).  Every error is printed as `file:line:col: message` to the
 * diag stream; the whole file is checked before anything starts. */
#ifndef FB_CONFIG_H
#define FB_CONFIG_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/model.h"

struct fb_config_opts {
    bool strict; /* missing referenced files are errors, not warnings */
    FILE *diag;  /* where errors and warnings go (stderr) */
    /* 0: the defaults.  n: a `for:` may expand to at most n entries and the
     * document may make at most n devices and n tags (each capped at its
     * default: 100,000 entries, 100,000 devices, 2,000,000 tags), refused
     * with the usual limit messages.  For tests/fuzz/fuzz_config.c: a
     * fuzzer's huge expansions cost it time, not coverage. */
    uint32_t max_expand;
};
/* Returns 0 and *out (free with fb_gateway_free), or FB_EINVAL after
 * printing every error found. */
int fb_config_load(const char *path, const struct fb_config_opts *o, struct fb_gateway **out);
/* The same for a document in memory (POST /api/v1/config/check, a remote
 * configuration): `name` stands for the file in messages, and relative file
 * references resolve against its directory (a remote configuration names the
 * local config's directory: docs/fleet.md). */
int fb_config_load_mem(const char *name, const char *text, size_t len, const struct fb_config_opts *o,
                       struct fb_gateway **out);
/* What would run: devices, connections, tags, poll groups, sinks. */
void fb_config_summary(const struct fb_gateway *gw, FILE *f);

/* Every key table the loader checks against, per mapping ("top", "gateway",
 * each sink's section and its nested ones, "device", "tag", …): fills out
 * (max entries) and returns how many there are.  For the docs check. */
struct fb_config_keys;
size_t fb_config_key_tables(struct fb_config_keys *out, size_t max);
#endif
