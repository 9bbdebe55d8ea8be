/* config_dev.h — the devices: section (config_dev.c): devices, tags, `for:`
 * repetition, and each device bound to its driver, poll groups and shared
 * connections. */
#ifndef FB_CONFIG_DEV_H
#define FB_CONFIG_DEV_H
#include "core/cfg.h"
#include "core/model.h"

/* Build gw->devs, gw->tags and gw->conns from `devices` (NULL: none).
 * The tags' computed-tag and alarm keys go to eb (src/edge/edge_cfg.h; may
 * be NULL).  Errors go to the reader. */
struct fb_edge_build;
void fb_config_devices(struct fb_cfg *r, struct fb_cfg_node *devices, struct fb_gateway *gw, struct fb_edge_build *eb);
/* A sender list (`commands.allow`, a tag's `write_roles`): a YAML list of
 * "SOURCE", "SOURCE:ROLE" or "*:ROLE" entries (core/router.h), stored once in
 * gw->acls.  Its index + 1, or 0 after an error (reported to the reader). */
uint16_t fb_config_acl(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what,
                       struct fb_gateway *gw);
/* The key tables of the devices: section ("device", "tag", "scale"). */
size_t fb_config_dev_key_tables(struct fb_config_keys *out, size_t max);
#endif
