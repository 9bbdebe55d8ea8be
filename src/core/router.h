/* router.h — the one path by which commands reach devices.
 *
 * A sink (MQTT today) turns a message into a struct fb_cmd and submits it;
 * the router thread parses the JSON write request, validates every tag (exists,
 * writable, type, range, age), converts and unscales the value, hands the
 * write to the owning connection thread, waits for the result, and answers
 * through cmd->reply.  Every write, accepted or refused, is logged with its
 * source and reason.
 *
 * Who may command.  Every command names its sender: the kind of source that
 * received it (`via`: "mqtt", "sparkplug", "http", "lua"; later "shadow") and,
 * where that source authenticates users, the user's role (`role`: the HTTP
 * API's "viewer" or "operator"; empty for MQTT and Sparkplug, whose
 * publishers the broker authenticates, not us, and for Lua).  The optional `commands.allow` list says which
 * senders may command at all, a tag's optional `write_roles` which may write
 * it.  An entry matches a sender when it is
 *   "SOURCE"        that source, any role          mqtt, sparkplug
 *   "SOURCE:ROLE"   that source with that role     http:operator
 *   "*:ROLE"        that role from any source      *:operator
 * Both are checked here, so every source gets the same rules; a refusal is
 * logged with its reason and answered with it.
 *
 * Request:  {"id":"c-17","ts":"2026-11-28T10:00:00Z","write":{"setpoint":42.5}}
 * Response: {"id":"c-17","ok":false,"results":{"setpoint":{"ok":false,"error":"above maximum 40"}}}
 *
 * Commands to the gateway itself (kind FB_CMD_GATEWAY: reload, a new
 * configuration, maintenance — docs/fleet.md) take the same queue, so they
 * are serialised with the writes and with each other, and pass the same
 * sender lists (commands.allow, then the command's own commands.gateway.<cmd>)
 * and QoS rule — except those the gateway makes itself (SIGHUP, the fleet
 * thread: no `via`, no QoS); the router hands them to the handler the fleet component registered
 * (gw->rt->gw_cmd), which answers with {"id","ok",…}.  A reload runs on this
 * thread: no write is in flight while the model changes.
 */
#ifndef FB_ROUTER_H
#define FB_ROUTER_H
#include <stddef.h>
#include <stdint.h>
#include "core/model.h"

enum fb_cmd_kind {
    FB_CMD_WRITE = 0,   /* a write request for `device` */
    FB_CMD_GATEWAY = 1, /* a command to the gateway (`device` unused) */
};

struct fb_cmd {
    struct fb_cmd *next;
    uint8_t kind;    /* enum fb_cmd_kind */
    char topic[64];  /* FB_CMD_GATEWAY: the gateway topic it came on ("command"; docs/fleet.md) */
    uint32_t device; /* target device index (FB_CMD_WRITE) */
    int qos;         /* QoS the command arrived with (-1: not MQTT) */
    char *payload;   /* owned */
    size_t len;
    char *response_topic; /* owned; MQTT 5 response topic or NULL */
    void *corr;           /* owned; MQTT 5 correlation data or NULL */
    int corr_len;
    char source[96]; /* who sent it, for the log: "<sink name>:…" ("mqtt:<topic>") */
    char via[16];    /* the kind of source (fb_cmd_sources), matched by commands.allow / write_roles */
    char role[32];   /* the authenticated sender's role, "" when the source has no users */
    void *reply_ctx;
    /* Called once on the router thread with the response JSON. */
    void (*reply)(struct fb_cmd *cmd, const char *json, size_t len);
};

/* The kinds of command source a sender list may name (NULL-terminated): the
 * ones that exist and the ones planned, so a config can name them now. */
extern const char *const fb_cmd_sources[];
/* Check one sender-list entry ("mqtt", "http:operator", "*:operator"):
 * 0, or -1 with the reason in why. */
int fb_cmd_pattern_check(const char *pat, char *why, size_t why_len);
/* The gateway commands that may have their own sender list
 * (commands.gateway.<name>; FB_GW_CMDS of them, NULL-terminated): the
 * `cmd`s of the command topic, then "shadow", "ota" and "provision" for
 * what arrives on those topics. */
extern const char *const fb_gw_cmd_names[];
/* Does the list allow a command from (via, role)? */
bool fb_cmd_acl_allows(const struct fb_acl *a, const char *via, const char *role);

/* Takes ownership of cmd (freed with fb_cmd_free after reply). */
void fb_router_submit(struct fb_gateway *gw, struct fb_cmd *cmd);
void fb_cmd_free(struct fb_cmd *cmd);
/* The runtime's: start the router thread (gw->rt->router); stop it (commands
 * submitted afterwards are dropped); free it once no sink can submit. */
struct fb_router;
int fb_router_start(struct fb_gateway *gw);
void fb_router_stop(struct fb_gateway *gw);
void fb_router_free(struct fb_router *r);
/* Answer every queued command now, refused with `why` (a reload that
 * restarts the sinks the answers go through).  Router thread only. */
void fb_router_refuse_queued(struct fb_gateway *gw, const char *why);
/* Drop, unanswered, the queued commands a sink submitted (`source` begins
 * with "<sink>:"), once that sink has closed and freed what its answers
 * needed (a reload restarting it).  Router thread only. */
void fb_router_drop_from(struct fb_gateway *gw, const char *sink);
/* A reload renumbered the devices: queued commands follow (map[old index] =
 * new index, UINT32_MAX = gone; n old devices).  Router thread only. */
void fb_router_remap(struct fb_gateway *gw, const uint32_t *map, uint32_t n);

/* Validate one value for a tag and produce the raw value to write (scaling
 * inverted, range-checked, converted to the wire type).  `j` is a json_t*.
 * Returns 0 or an error with a reason a user can act on. */
int fb_cmd_convert(const struct fb_tag *t, const void *j, struct fb_value *raw, char *sbuf, size_t sbuf_len,
                   struct fb_err *err);
/* The same for a number in engineering units (a control loop's output):
 * finite, inside the tag's range, unscaled, rounded to the nearest whole
 * number for an integer tag (a bool tag: true from 0.5), fits the wire type. */
int fb_cmd_convert_num(const struct fb_tag *t, double eng, struct fb_value *raw, struct fb_err *err);
/* A command's "ts" (a json_t*): RFC 3339 date-time with an offset, or epoch
 * milliseconds (an integer), strictly parsed and range-checked; the moment
 * must lie in [1970-01-01, 2200-01-01).  0 and *ns (UTC), or -1. */
int fb_cmd_parse_ts(const void *j, int64_t *ns);
/* Synchronously process one command (what the router thread does); writes the
 * response JSON into *resp (malloc'd).  Exposed for tests. */
void fb_cmd_process(struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *resp_len);
#endif
