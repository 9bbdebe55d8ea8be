/* shadow_doc.h — the device shadow's document, apart from the gateway
 * (shadow_doc.c; docs/fleet.md#device-shadow): desired and reported state,
 * their metadata timestamps, the version, the delta (desired minus reported)
 * and the update rules (merge, null deletes, optimistic locking).  Pure
 * jansson, so the rules have unit tests of their own (tests/unit/test_shadow.c).
 *
 * The shape follows the AWS IoT device shadow:
 *   {"state":{"desired":{…},"reported":{…},"delta":{…}},
 *    "metadata":{"desired":{…},"reported":{…}},"version":7,"timestamp":1764410000}
 * where metadata mirrors state with {"timestamp":<epoch s>} at each leaf. */
#ifndef FB_SHADOW_DOC_H
#define FB_SHADOW_DOC_H
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#define FB_SHADOW_MAX_DEPTH 6

struct fb_shadow_doc {
    json_t *desired, *reported;           /* objects */
    json_t *meta_desired, *meta_reported; /* the same shape; leaves {"timestamp":s,…} */
    int64_t version;                      /* bumped by every update that changes state */
    int64_t timestamp;                    /* epoch seconds of the last change */
};

void fb_shadow_doc_init(struct fb_shadow_doc *d);
void fb_shadow_doc_clear(struct fb_shadow_doc *d);

/* Two leaf values equal for the delta: numbers by value (40 == 40.0), the
 * rest as JSON. */
bool fb_shadow_value_equal(const json_t *a, const json_t *b);
/* Desired minus reported: every desired leaf whose reported value is absent
 * or different, in desired's shape (a new object, possibly empty). */
json_t *fb_shadow_delta(const json_t *desired, const json_t *reported);
/* Check an update's state section (desired or reported): an object, at most
 * FB_SHADOW_MAX_DEPTH levels, no arrays of objects.  0, or -1 and why. */
int fb_shadow_check_patch(const json_t *patch, char *why, size_t n);
/* Merge patch into dst (objects merge, null deletes, anything else
 * replaces) and stamp each changed leaf's metadata with ts.  Returns
 * whether anything changed. */
bool fb_shadow_merge(json_t *dst, json_t *meta, const json_t *patch, int64_t ts);
/* The optimistic lock: an update that names a version must name the
 * current one.  0, or -1 (409 version conflict). */
int fb_shadow_check_version(const struct fb_shadow_doc *d, const json_t *update);

/* The whole document as above, delta included (a new object). */
json_t *fb_shadow_doc_json(const struct fb_shadow_doc *d);
/* Load what fb_shadow_doc_json wrote (the persisted file): 0, or -1 and why
 * (d is left empty). */
int fb_shadow_doc_from_json(struct fb_shadow_doc *d, const json_t *j, char *why, size_t n);
#endif
