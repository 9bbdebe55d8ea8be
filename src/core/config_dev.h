/* config_dev.h — the devices: section (config_dev.c): devices, tags, `for:`
 * repetition, and each device bound to its driver, poll groups and shared
 * connections. */
#ifndef FB_CONFIG_DEV_H
#define FB_CONFIG_DEV_H
#include "core/cfg.h"
#include "core/model.h"

/* A device another section makes (a service's `devices` hook, model.h): a
 * control loop's state as a device of its own, with one poll group, whose
 * driver is given here rather than found by URL scheme (so no devices:
 * entry can name it). */
struct fb_tag_spec {
    const char *name, *unit; /* unit may be NULL */
    uint8_t type, access;    /* enum fb_type, enum fb_access */
    uint32_t str_len;        /* string tags */
    bool has_min, has_max;   /* the range commands are checked against */
    double min, max;
    /* who may write it (a `write_roles` list, fb_config_acl; NULL: whoever
     * commands.allow lets through); a node of the reader's tree */
    const struct fb_cfg_node *write_roles;
};
struct fb_dev_spec {
    const char *name;
    const char *url;             /* "control://tic-101": parsed, shown by check */
    const char *area, *line;     /* NULL = "_" */
    const struct fb_driver *drv; /* its driver */
    void *drv_dev;               /* dev->drv_dev when drv->device_init is called */
    int64_t poll_ns;
    struct fb_cfg_mark mark; /* where the section declared it, for messages */
    const struct fb_tag_spec *tags;
    uint32_t ntags;
};

/* Build gw->devs, gw->tags and gw->conns from `devices` (NULL: none) and the
 * `nmade` devices other sections make (after those of the list; a name that
 * a listed device has is an error at the spec's mark).  The tags'
 * computed-tag and alarm keys go to eb (src/edge/edge_cfg.h; may be NULL).
 * Errors go to the reader. */
struct fb_edge_build;
void fb_config_devices(struct fb_cfg *r, struct fb_cfg_node *devices, const struct fb_dev_spec *const *made,
                       size_t nmade, struct fb_gateway *gw, struct fb_edge_build *eb);
/* A sender list (`commands.allow`, a tag's `write_roles`): a YAML list of
 * "SOURCE", "SOURCE:ROLE" or "*:ROLE" entries (core/router.h), stored once in
 * gw->acls.  Its index + 1, or 0 after an error (reported to the reader). */
uint16_t fb_config_acl(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_node *n, const char *what,
                       struct fb_gateway *gw);
/* The key tables of the devices: section ("device", "tag", "scale"). */
size_t fb_config_dev_key_tables(struct fb_config_keys *out, size_t max);
#endif
