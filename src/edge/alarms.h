/* alarms.h — the alarm table of a running gateway (alarms.c): every
 * configured alarm's live state, its persistence next to the buffer, the
 * events it publishes (FB_BATCH_ALARM batches through the normal publish
 * path), the operator commands (acknowledge, shelve) the command router
 * hands over, and the JSON views the sinks publish (docs/alarms.md,
 * docs/mqtt.md).
 *
 * Who calls what:
 *   - the edge thread (edge.c) evaluates conditions from tag values in
 *     groups: begin → value/suppress/timers … → commit (one lock, one
 *     fdatasync, then the events);
 *   - code that decides an alarm itself — a Lua script, later a feature
 *     monitor (ISO 10816 zones, anomaly scores) — calls fb_alarm_set for an
 *     alarm of kind external it declared in the model (fb_alarm_add);
 *   - the router calls fb_alarms_command; sinks call the JSON views and
 *     fb_alarm_flags.
 * Every entry point but the begin…commit group is safe from any thread.
 */
#ifndef FB_ALARMS_H
#define FB_ALARMS_H
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/model.h"

struct fb_alarms;

/* ----------------------------------------------------------- the model */
/* Add an alarm to the model while the config is loaded (before the
 * runtime starts): its id, or UINT32_MAX when out of memory.  name is
 * device-relative ("temperature/hi"); tag may be UINT32_MAX (an external
 * alarm of the device).  Limits, delays and the rest are set by the caller
 * in gw->alarms[id] afterwards. */
uint32_t fb_alarm_add(struct fb_gateway *gw, uint32_t device, uint32_t tag, int kind, const char *name);
/* The alarm named `name` ("temperature/hi") of device dev, or UINT32_MAX. */
uint32_t fb_alarm_find(const struct fb_gateway *gw, uint32_t dev, const char *name, size_t len);

/* -------------------------------------------------------- the runtime's */
/* Create the table (gw->rt->alarms) when the config has alarms, replaying
 * the journal in dir (NULL: in memory only, lost on restart).  A journal
 * that cannot be used is logged and the table runs in memory. */
int fb_alarms_start(struct fb_gateway *gw, const char *dir, struct fb_err *err);
void fb_alarms_free(struct fb_alarms *a);
/* A configuration reload that keeps the alarm table (the same alarms in the
 * same order; the devices may have moved: edge.h): what the new model's
 * device ids index, allocated beforehand (NULL: out of memory), then moved
 * in once gw holds the new model (map: old ids → new), with the devices'
 * alarm counters counted again.  m stays the caller's to free. */
struct fb_alarms_move;
struct fb_alarms_move *fb_alarms_move_prepare(const struct fb_gateway *nw);
void fb_alarms_move(struct fb_alarms *a, struct fb_alarms_move *m, const struct fb_model_map *map);
void fb_alarms_move_free(struct fb_alarms_move *m);

/* ------------------------------------------------- the edge thread's */
void fb_alarms_begin(struct fb_alarms *a, int64_t now, int64_t wall);
/* A new value of the alarm's tag (and, for a deviation alarm, the setpoint's). */
void fb_alarms_value(struct fb_alarms *a, uint32_t id, double v, uint32_t q, int64_t ts, double sp, uint32_t sp_q);
/* The suppression condition's value. */
void fb_alarms_suppress(struct fb_alarms *a, uint32_t id, bool on);
/* Delays that ran out, shelves that expired, flood windows that ended. */
void fb_alarms_timers(struct fb_alarms *a);
/* Persist what changed (one fdatasync), then publish the events, unlock.
 * Returns the monotonic time of the next timer (0: none). */
int64_t fb_alarms_commit(struct fb_alarms *a);

/* --------------------------------------------------------- any thread */
/* Raise (active) or clear an external alarm, with the value that caused it
 * (NaN: none) and who did it ("lua:oee", "vibration:motor-1").  The on/off
 * delays apply.  FB_ENOENT for an unknown id, FB_EINVAL when the alarm is
 * not external, FB_ECLOSED when the gateway does not run. */
int fb_alarm_set(struct fb_gateway *gw, uint32_t id, bool active, double value, const char *by);
/* A one-off event on the device's alarm topic (a script's message); it
 * counts against the device's flood limit. */
int fb_alarm_message(struct fb_gateway *gw, uint32_t dev, const char *text, const char *by);
/* The alarm's current flags (FB_AS_*); false when there is no such alarm or no table. */
bool fb_alarm_flags(struct fb_gateway *gw, uint32_t id, uint8_t *flags);

/* Whether a command (a json_t* object) asks for alarm actions ("ack",
 * "shelve", "unshelve"). */
bool fb_alarms_is_command(const void *root);
/* Carry out the alarm actions of a command for device dev, in this order:
 * ack, shelve, unshelve (with the optional "comment").  Appends one
 * `"alarm":{"ok":…}` member per alarm to res (a JSON object's members;
 * *first tracks the comma), clears *all_ok when one failed, and logs every
 * action with its source.  Shape errors (a wrong type) are one member
 * named after the key. */
void fb_alarms_command(struct fb_gateway *gw, uint32_t dev, const void *root, const char *source, struct fb_buf *res,
                       bool *first, bool *all_ok);

/* ----------------------------------------------------------- the views */
/* The event message of an FB_BATCH_ALARM batch (docs/mqtt.md). */
void fb_alarm_event_json(struct fb_buf *out, const struct fb_gateway *gw, const struct fb_batch *b);
/* The retained summary of the device's alarms that are not normal. */
void fb_alarm_summary_json(struct fb_buf *out, struct fb_gateway *gw, uint32_t dev);
#endif
