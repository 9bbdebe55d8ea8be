/* batch_codec.h — processed batches as bytes for the store-and-forward queue,
 * and the config fingerprint that keeps buffered records meaningful across
 * config changes (see batch_codec.c). */
#ifndef FB_BATCH_CODEC_H
#define FB_BATCH_CODEC_H
#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"
#include "core/model.h"

/* Old ids → current ids (UINT32_MAX: no longer configured). */
struct fb_model_map {
    uint32_t *dev, ndevs;
    uint32_t *tag, ntags;
    uint32_t *alarm, nalarms;
};

void fb_batch_encode(struct fb_buf *out, const struct fb_batch *b, uint32_t fingerprint);
/* Decode into *bp (grown or allocated as needed; the caller frees it).  With
 * map, ids are translated (samples of vanished tags dropped; FB_ENOENT when the
 * device is gone).  Ids are checked against gw.  *fingerprint receives the record's model fingerprint.
 * FB_EPROTO for anything malformed. */
int fb_batch_decode(const void *p, size_t len, const struct fb_gateway *gw, const struct fb_model_map *map,
                    struct fb_batch **bp, uint32_t *fingerprint);

uint32_t fb_model_fingerprint(const struct fb_gateway *gw);
/* Write dir/model-<fp> (device and tag names by id) once. */
int fb_model_save(const struct fb_gateway *gw, const char *dir, uint32_t fp);
/* Read dir/model-<fp> and map it onto gw; NULL when there is no such file. */
struct fb_model_map *fb_model_map_load(const struct fb_gateway *gw, const char *dir, uint32_t fp);
void fb_model_map_free(struct fb_model_map *m);
/* In memory, for a reload: the ids of model `old` mapped onto `now` by
 * device and tag name; and a map followed by another (old → mid → now).
 * NULL when out of memory. */
struct fb_model_map *fb_model_map_between(const struct fb_gateway *old, const struct fb_gateway *now);
struct fb_model_map *fb_model_map_compose(const struct fb_model_map *a, const struct fb_model_map *b);
/* Copy every model-<fp> file of one store directory into another (a buffer
 * that moved keeps the names of its records' configs).  0 or FB_EIO. */
int fb_model_copy_all(const char *from_dir, const char *to_dir);
#endif
