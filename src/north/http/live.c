/* live.c — latest values and the event ring of the HTTP API.
 *
 * Latest values: one record per tag, sized at start (string tags get room
 * for their longest value), so updating never allocates.  A device's tags
 * are guarded by one mutex per device: a batch is one device, so the sink
 * thread takes one lock per batch, and a reader rendering /values holds a
 * device's lock only while it formats that device's tags.
 *
 * Event ring: every subscriber of GET /api/v1/events sees the same bytes,
 * so each event is formatted once, by the sink thread, as a complete SSE
 * frame appended to a ring of 2^k bytes; a subscriber is only a position in
 * that stream.  The writer never waits for a reader: a reader that falls a
 * ring's length behind finds its position overwritten (fb_live_read says
 * -1) and is told to resynchronise.  The lock is held for a memcpy at a
 * time (at most one network write's worth for a reader), never for I/O.
 */
#include "north/http/live.h"

#include "core/batch_codec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fb_live {
    const struct fb_gateway *gw;
    struct fb_live_tag *tags;
    pthread_mutex_t *dev_mu;
    uint32_t ntags, ndevs;
    /* the ring */
    pthread_mutex_t mu;
    char *ring;
    size_t cap, mask;
    uint64_t head; /* bytes ever written */
    uint64_t epoch;
    uint64_t dropped;
};

struct fb_live *fb_live_new(const struct fb_gateway *gw, size_t ring_bytes)
{
    struct fb_live *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->gw = gw;
    l->ntags = gw->ntags;
    l->ndevs = gw->ndevs;
    l->tags = calloc(gw->ntags ? gw->ntags : 1, sizeof *l->tags);
    l->dev_mu = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *l->dev_mu);
    size_t cap = 4096;
    while (cap < ring_bytes && cap < ((size_t)1 << 30)) cap <<= 1;
    l->ring = malloc(cap); /* pages become resident as events fill them */
    l->cap = cap;
    l->mask = cap - 1;
    if (!l->tags || !l->dev_mu || !l->ring) {
        free(l->tags);
        free(l->dev_mu);
        free(l->ring);
        free(l);
        return NULL;
    }
    for (uint32_t i = 0; i < gw->ntags; i++) {
        const struct fb_tag *t = &gw->tags[i];
        if (t->type != FB_T_STRING) continue;
        l->tags[i].scap = t->str_len ? t->str_len : 256;
        l->tags[i].s = malloc(l->tags[i].scap);
        if (!l->tags[i].s) l->tags[i].scap = 0;
    }
    for (uint32_t i = 0; i < gw->ndevs; i++) pthread_mutex_init(&l->dev_mu[i], NULL);
    pthread_mutex_init(&l->mu, NULL);
    l->epoch = (uint64_t)fb_now_ns() / 1000000u; /* ms: distinct per start */
    return l;
}

int fb_live_remodel(struct fb_live *l, const struct fb_model_map *map)
{
    const struct fb_gateway *gw = l->gw; /* the new model now */
    struct fb_live_tag *tags = calloc(gw->ntags ? gw->ntags : 1, sizeof *tags);
    pthread_mutex_t *dev_mu = calloc(gw->ndevs ? gw->ndevs : 1, sizeof *dev_mu);
    bool ok = tags && dev_mu;
    for (uint32_t i = 0; ok && i < gw->ntags; i++) {
        const struct fb_tag *t = &gw->tags[i];
        if (t->type != FB_T_STRING) continue;
        tags[i].scap = t->str_len ? t->str_len : 256;
        if (!(tags[i].s = malloc(tags[i].scap))) ok = false;
    }
    if (!ok) {
        for (uint32_t i = 0; tags && i < gw->ntags; i++) free(tags[i].s);
        free(tags);
        free(dev_mu);
        /* the old table is the old ids': show nothing rather than other tags' values */
        for (uint32_t i = 0; i < l->ntags; i++) free(l->tags[i].s);
        for (uint32_t i = 0; i < l->ndevs; i++) pthread_mutex_destroy(&l->dev_mu[i]);
        l->ntags = l->ndevs = 0;
        return FB_ENOMEM;
    }
    /* the latest value of a tag that is still there, and still of the same type (its type or scaling may
     * have changed: then it waits for its next sample) */
    for (uint32_t i = 0; i < l->ntags && i < map->ntags; i++) {
        uint32_t j = map->tag[i];
        const struct fb_live_tag *o = &l->tags[i];
        if (j >= gw->ntags || !o->have || o->v.type != fb_tag_out_type(&gw->tags[j])) continue;
        struct fb_live_tag *n = &tags[j];
        n->have = true;
        n->quality = o->quality;
        n->flags = o->flags;
        n->ts_src = o->ts_src;
        n->ts_gw = o->ts_gw;
        n->v = o->v;
        if (o->v.type == FB_T_STRING) {
            uint32_t len = o->v.s.len < n->scap ? o->v.s.len : n->scap;
            if (len) memcpy(n->s, o->v.s.p, len);
            n->v.s.p = n->s;
            n->v.s.len = len;
        }
    }
    for (uint32_t i = 0; i < l->ntags; i++) free(l->tags[i].s);
    for (uint32_t i = 0; i < l->ndevs; i++) pthread_mutex_destroy(&l->dev_mu[i]);
    free(l->tags);
    free(l->dev_mu);
    for (uint32_t i = 0; i < gw->ndevs; i++) pthread_mutex_init(&dev_mu[i], NULL);
    l->tags = tags;
    l->dev_mu = dev_mu;
    l->ntags = gw->ntags;
    l->ndevs = gw->ndevs;
    return 0;
}

void fb_live_free(struct fb_live *l)
{
    if (!l) return;
    for (uint32_t i = 0; i < l->ntags; i++) free(l->tags[i].s);
    for (uint32_t i = 0; i < l->ndevs; i++) pthread_mutex_destroy(&l->dev_mu[i]);
    pthread_mutex_destroy(&l->mu);
    free(l->tags);
    free(l->dev_mu);
    free(l->ring);
    free(l);
}

void fb_live_lock(struct fb_live *l, uint32_t dev)
{
    if (dev < l->ndevs) pthread_mutex_lock(&l->dev_mu[dev]);
}
void fb_live_unlock(struct fb_live *l, uint32_t dev)
{
    if (dev < l->ndevs) pthread_mutex_unlock(&l->dev_mu[dev]);
}
const struct fb_live_tag *fb_live_tag(const struct fb_live *l, uint32_t tag)
{
    return tag < l->ntags ? &l->tags[tag] : NULL;
}

void fb_live_update(struct fb_live *l, const struct fb_batch *b)
{
    if (b->kind != FB_BATCH_DATA || b->device >= l->ndevs) return;
    const struct fb_device *d = &l->gw->devs[b->device];
    pthread_mutex_lock(&l->dev_mu[b->device]);
    for (uint32_t i = 0; i < b->n; i++) {
        const struct fb_sample *s = &b->s[i];
        /* only the device's own tags: a batch never names another's */
        if (s->tag < d->first_tag || s->tag >= d->first_tag + d->ntags) continue;
        if (s->flags & FB_SF_HISTORICAL) continue; /* older than what is shown */
        struct fb_live_tag *t = &l->tags[s->tag];
        t->have = true;
        t->quality = s->quality;
        t->flags = s->flags;
        t->ts_src = s->ts_src;
        t->ts_gw = s->ts_gw ? s->ts_gw : b->ts;
        t->v = s->v;
        if (s->v.type == FB_T_STRING) {
            uint32_t n = s->v.s.len < t->scap ? s->v.s.len : t->scap;
            if (n) memcpy(t->s, s->v.s.p, n);
            t->v.s.p = t->s;
            t->v.s.len = n;
        }
    }
    pthread_mutex_unlock(&l->dev_mu[b->device]);
}

/* ------------------------------------------------------------ the ring */
static void ring_put(struct fb_live *l, const char *p, size_t n)
{
    while (n) {
        size_t at = (size_t)(l->head & l->mask);
        size_t k = l->cap - at < n ? l->cap - at : n;
        memcpy(l->ring + at, p, k);
        l->head += k;
        p += k;
        n -= k;
    }
}

bool fb_live_event(struct fb_live *l, const char *kind, const char *json, size_t len)
{
    char hdr[96];
    pthread_mutex_lock(&l->mu);
    int hn = snprintf(hdr, sizeof hdr, "id: %" PRIu64 "-%" PRIu64 "\nevent: %s\ndata: ", l->epoch, l->head, kind);
    if (hn < 0 || (size_t)hn >= sizeof hdr || (size_t)hn + len + 2 > l->cap / 2) {
        l->dropped++;
        pthread_mutex_unlock(&l->mu);
        return false;
    }
    ring_put(l, hdr, (size_t)hn);
    ring_put(l, json, len);
    ring_put(l, "\n\n", 2);
    pthread_mutex_unlock(&l->mu);
    return true;
}

uint64_t fb_live_head(struct fb_live *l)
{
    pthread_mutex_lock(&l->mu);
    uint64_t h = l->head;
    pthread_mutex_unlock(&l->mu);
    return h;
}

uint64_t fb_live_epoch(const struct fb_live *l) { return l->epoch; }

uint64_t fb_live_dropped(struct fb_live *l)
{
    pthread_mutex_lock(&l->mu);
    uint64_t d = l->dropped;
    pthread_mutex_unlock(&l->mu);
    return d;
}

long fb_live_read(struct fb_live *l, uint64_t *pos, char *buf, size_t max)
{
    pthread_mutex_lock(&l->mu);
    uint64_t p = *pos;
    if (p > l->head || l->head - p > l->cap) {
        pthread_mutex_unlock(&l->mu);
        return -1;
    }
    size_t avail = (size_t)(l->head - p);
    size_t n = avail < max ? avail : max;
    size_t done = 0;
    while (done < n) {
        size_t at = (size_t)((p + done) & l->mask);
        size_t k = l->cap - at < n - done ? l->cap - at : n - done;
        memcpy(buf + done, l->ring + at, k);
        done += k;
    }
    *pos = p + n;
    pthread_mutex_unlock(&l->mu);
    return (long)n;
}

bool fb_live_resume(struct fb_live *l, const char *last, uint64_t *pos)
{
    if (!last) return false;
    char *end;
    unsigned long long e = strtoull(last, &end, 10);
    if (end == last || *end != '-' || e != l->epoch) return false;
    const char *ps = end + 1;
    unsigned long long p = strtoull(ps, &end, 10);
    if (end == ps || *end) return false;
    bool ok = false;
    pthread_mutex_lock(&l->mu);
    /* the frame that starts at p must still be whole in the ring; it ends at
     * the first blank line ("\n\n": JSON data never holds a raw newline) */
    if (p < l->head && l->head - p <= l->cap) {
        char prev = 0;
        for (uint64_t q = p; q < l->head; q++) {
            char c = l->ring[q & l->mask];
            if (c == '\n' && prev == '\n') {
                *pos = q + 1;
                ok = true;
                break;
            }
            prev = c;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return ok;
}
