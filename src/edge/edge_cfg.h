/* edge_cfg.h — the configuration of computed tags, alarms and scripts
 * (edge_cfg.c): the tag keys `expr:`, `script:`, `period:`, `quality:` and
 * `alarms:`, and the top-level sections `alarms:` and `scripts:`
 * (docs/configuration.md, docs/alarms.md, docs/computed.md).
 *
 * Tags are read in file order, but an expression may name a tag that comes
 * later, or in another device; so reading happens in two steps.  While the
 * devices are loaded, each tag entry's keys are read (with its `for:`
 * variables) into a builder, alarms are added to the model at once and
 * names stay text; fb_edge_cfg_finish then resolves every name, compiles
 * the expressions, orders them, refuses cycles and checks the scripts. */
#ifndef FB_EDGE_CFG_H
#define FB_EDGE_CFG_H
#include "core/cfg.h"
#include "core/model.h"

struct fb_edge_build;
struct fb_tvars;

/* The tag keys this module reads (config_dev.c adds them to its table). */
#define FB_EDGE_TAG_KEYS "expr", "script", "period", "quality", "alarms"

struct fb_edge_build *fb_edge_build_new(void);
void fb_edge_build_free(struct fb_edge_build *b);

/* The source a tag entry declares (FB_TAG_EXPR, FB_TAG_SCRIPT or
 * FB_TAG_READ); errors for both at once, or for keys that need one. */
int fb_edge_cfg_tag_src(struct fb_cfg *r, const struct fb_cfg_map *m);
/* The edge keys of a tag entry, for its tags first .. first+n-1 (already in
 * the model, with their device). */
void fb_edge_cfg_tag(struct fb_edge_build *b, struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_map *m,
                     struct fb_gateway *gw, uint32_t first, uint32_t n);
/* The top-level `alarms:` (NULL: defaults) and `scripts:` sections. */
void fb_edge_cfg_alarms(struct fb_cfg *r, struct fb_cfg_node *n, struct fb_gateway *gw);
void fb_edge_cfg_scripts(struct fb_edge_build *b, struct fb_cfg *r, struct fb_cfg_node *n);
/* After every device: resolve, compile, order; fills gw->calcs and gw->scripts. */
void fb_edge_cfg_finish(struct fb_edge_build *b, struct fb_cfg *r, struct fb_gateway *gw);
/* The key tables ("alarms", "flood", "alarm", "script"), for the docs check. */
size_t fb_edge_key_tables(struct fb_config_keys *out, size_t max);
/* A line for `fieldbridge check` when anything is configured. */
void fb_edge_describe(const struct fb_gateway *gw, FILE *f);
#endif
