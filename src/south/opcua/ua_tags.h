/* ua_tags.h — the OPC UA driver's tags (ua_tags.c): addresses (node ids or
 * browse paths resolved at open), their server DataTypes, and turning a
 * DataValue into a sample. */
#ifndef FB_UA_TAGS_H
#define FB_UA_TAGS_H
#include "core/model.h"
#include "south/opcua/ua_client.h"

#define UA_STR_CAP 256 /* string tags without a length */

/* A tag's address: a node id, or a browse path resolved at open. */
struct ua_addr {
    struct ua_nodeid node; /* configured, or resolved (owned) */
    bool is_path;
    struct ua_relpath path;
    uint32_t resolve_q; /* Good, or why the path / node is unusable */
    uint8_t builtin;    /* DataType from the server (0 unknown) */
    bool auto_type;     /* no type given: the server's decides (CLI) */
};

void ua_addr_free(struct ua_addr *a);
/* Browse paths → node ids (64 per request); at every open, so a server
 * whose ids changed is followed. */
int ua_resolve_paths(struct ua_conn *c, struct fb_conn *fc, struct fb_err *err);
/* The DataType of every tag's node (for writes, and untyped tags in the CLI). */
int ua_read_datatypes(struct ua_conn *c, struct fb_conn *fc, struct fb_err *err);
/* A DataValue as tag t's sample: quality, time stamp, value (strings in sbuf). */
void ua_fill_sample(const struct fb_tag *t, const struct ua_addr *a, const struct ua_datavalue *dv, uint32_t *q,
                    int64_t *ts, struct fb_value *v, char *sbuf, size_t cap);
void ua_add_bad(struct fb_batch *out, const struct fb_tag *t, uint32_t q, int64_t ts);
#endif
