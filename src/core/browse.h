/* browse.h — what `fieldbridge browse` found, as data (browse.c): the
 * variables a device offers (OPC UA nodes, ADS symbols, PiCtory variables)
 * as {name, address, type, access}, turned into ready-to-paste tag config
 * (`fieldbridge browse URL --yaml`, GET /api/v1/browse). */
#ifndef FB_BROWSE_H
#define FB_BROWSE_H
#include <stddef.h>

#include "core/buf.h"
#include "core/fb.h"

struct fb_browse_item {
    char *name;     /* a valid, unique tag name made from what the device calls it */
    char *addr;     /* the address as a tag's `addr:` takes it */
    uint8_t type;   /* enum fb_type; FB_T_NONE when it is not one value (a struct, an array) */
    uint8_t access; /* enum fb_access (model.h): 1 r, 2 w, 3 rw */
    char *note;     /* the device's own type name or a remark, may be NULL */
};

struct fb_browse {
    struct fb_browse_item *it;
    size_t n, cap;
};

/* Add a variable; `name` is made valid (characters other than A-Z a-z 0-9
 * _ . - become _) and unique (suffix _2, _3, …).  Returns 0 or FB_ENOMEM. */
int fb_browse_add(struct fb_browse *b, const char *name, const char *addr, int type, int access, const char *note);
void fb_browse_free(struct fb_browse *b);
/* A device entry to paste under `devices:` (name, url, tags); variables
 * that are not one value are listed as comments. */
void fb_browse_yaml(struct fb_buf *out, const struct fb_browse *b, const char *url, const char *device);
/* {"count":N,"items":[{"name","addr","type","access","note"}]} without the braces' caller context. */
void fb_browse_json_items(struct fb_buf *out, const struct fb_browse *b);
#endif
