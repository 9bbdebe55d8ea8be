/* live.h — what the HTTP API shows of the running gateway (live.c): the
 * latest value of every tag, and the event stream behind GET
 * /api/v1/events as one shared ring of ready-made SSE frames. */
#ifndef FB_HTTP_LIVE_H
#define FB_HTTP_LIVE_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/model.h"

/* A tag's latest sample.  Read and written under its device's lock. */
struct fb_live_tag {
    bool have; /* a sample has arrived */
    uint32_t quality;
    uint32_t flags; /* FB_SF_* */
    int64_t ts_src, ts_gw;
    struct fb_value v; /* a string points into s */
    char *s;           /* string tags: room for the value */
    uint32_t scap;
};

struct fb_live;

/* For gw's tags; ring_bytes of SSE frames (rounded up to a power of two). */
struct fb_live *fb_live_new(const struct fb_gateway *gw, size_t ring_bytes);
void fb_live_free(struct fb_live *l);
/* A config reload changed the model under gw (the same gateway object, the
 * new model in it): the latest-value table is made again for its tags, each
 * tag still there (map: old tag ids → new) keeping its value when the type
 * is the same.  The event ring stays as it is, so subscribers read on.  No
 * reader or writer of the table may run meanwhile.  0, or FB_ENOMEM (then
 * the table is empty: every tag waits for its next sample). */
struct fb_model_map;
int fb_live_remodel(struct fb_live *l, const struct fb_model_map *map);

/* The sink thread: remember the batch's samples as the latest values. */
void fb_live_update(struct fb_live *l, const struct fb_batch *b);
/* Readers: hold the device's lock while looking at its tags. */
void fb_live_lock(struct fb_live *l, uint32_t dev);
void fb_live_unlock(struct fb_live *l, uint32_t dev);
const struct fb_live_tag *fb_live_tag(const struct fb_live *l, uint32_t tag);

/* ---- the event ring: SSE frames "id: E-P\nevent: K\ndata: JSON\n\n" ----
 * One writer (the sink thread) appends whole frames; any number of readers
 * copy bytes from their own position.  A reader more than the ring's size
 * behind has lost events (it is told so and must resynchronise).  P in the
 * id is the frame's offset in the stream and E this process's epoch, so a
 * client that reconnects with Last-Event-ID resumes where it stopped if
 * the frames after it are still in the ring. */

/* Append one event; json must not contain a newline.  Returns false when
 * the frame is larger than half the ring (it is dropped and counted). */
bool fb_live_event(struct fb_live *l, const char *kind, const char *json, size_t len);
/* The stream position new readers start at. */
uint64_t fb_live_head(struct fb_live *l);
/* Copy up to max bytes from *pos on; advances *pos.  Returns the number of
 * bytes, 0 when there is nothing new, -1 when *pos fell out of the ring. */
long fb_live_read(struct fb_live *l, uint64_t *pos, char *buf, size_t max);
/* Where a client that last saw event id `last` ("E-P") continues, in
 * *pos; false when it cannot (another process, or gone from the ring). */
bool fb_live_resume(struct fb_live *l, const char *last, uint64_t *pos);
uint64_t fb_live_epoch(const struct fb_live *l);
uint64_t fb_live_dropped(struct fb_live *l); /* frames too large for the ring */
#endif
