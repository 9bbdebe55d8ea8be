/* batch_codec.c — processed batches as bytes, for the store-and-forward queue.
 *
 * Why batches and not finished MQTT messages: the store sits between the
 * pipeline and the sink, so a sink encodes a buffered batch exactly like a
 * live one when it finally leaves — Sparkplug can mark it historical, the
 * JSON keeps its original seq and time stamps, and one store format serves
 * every sink.  Tag and device ids are only valid for one config, so every
 * record carries the fingerprint of the model it was written with; the store
 * directory keeps that model's names (model-<fp>), and a record written under
 * another config is translated by name when it is read back (tags that no
 * longer exist are left out).
 *
 * Record layout, little-endian:
 *   u8 version(1) u8 kind u8 dev_state u8 reason_len  u32 fingerprint
 *   u32 device u32 n u32 nstats  i64 ts  u64 seq  reason[reason_len]
 *   n × sample: u32 tag u32 quality u32 flags u32 stats_idx i64 ts_src i64 ts_gw
 *               u8 type, then bool: u8 | ints: 8 bytes | floats: f64 | string: u32 len + bytes
 *   nstats × stats: f64 mean stddev min max, u32 count, i64 window_ns
 *   kind 2 (an alarm event, src/edge/alarms.c), after the reason:
 *               u32 alarm u8 event u8 flags u32 count f64 value i64 since i64 until
 * Named batches (kinds 3 and 4, made by a source such as ingest from data of
 * devices the model does not know) carry their names instead of ids: after
 * the reason, u32 names_len + the arena's bytes at the time of encoding
 * (the NUL-terminated names, and string values) + FB_BN__N × u32 name
 * offsets; a sample's tag is the offset of its name there.  Their device is 0 and the fingerprint does
 * not matter: they need no model to be read back.
 * The decoder trusts nothing: every length is checked against what is left.
 * Alarm ids are translated like tag ids: the model file lists the alarms
 * ("A <device> <name>"), and the fingerprint covers them when there are any.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/batch_codec.h"
#include "core/buf.h"

#define REC_VERSION 1

static void put_u8(struct fb_buf *b, uint8_t v) { fb_buf_putc(b, (char)v); }
static void put_u32(struct fb_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    fb_buf_put(b, x, 4);
}
static void put_u64(struct fb_buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
    fb_buf_put(b, x, 8);
}
static void put_f64(struct fb_buf *b, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    put_u64(b, u);
}

void fb_batch_encode(struct fb_buf *out, const struct fb_batch *b, uint32_t fingerprint)
{
    size_t rl = strnlen(b->reason, sizeof b->reason - 1);
    put_u8(out, REC_VERSION);
    put_u8(out, b->kind);
    put_u8(out, b->dev_state);
    put_u8(out, (uint8_t)rl);
    put_u32(out, fingerprint);
    put_u32(out, b->device);
    put_u32(out, b->n);
    put_u32(out, b->nstats);
    put_u64(out, (uint64_t)b->ts);
    put_u64(out, b->seq);
    fb_buf_put(out, b->reason, rl);
    if (b->kind == FB_BATCH_ALARM) {
        put_u32(out, b->ev.alarm);
        put_u8(out, b->ev.event);
        put_u8(out, b->ev.flags);
        put_u32(out, b->ev.count);
        put_f64(out, b->ev.value);
        put_u64(out, (uint64_t)b->ev.since);
        put_u64(out, (uint64_t)b->ev.until);
    }
    if (fb_batch_named(b)) {
        put_u32(out, b->arena_len);
        fb_buf_put(out, b->arena, b->arena_len);
        for (int k = 0; k < FB_BN__N; k++) put_u32(out, b->names[k]);
    }
    for (uint32_t i = 0; i < b->n; i++) {
        const struct fb_sample *s = &b->s[i];
        put_u32(out, s->tag);
        put_u32(out, s->quality);
        put_u32(out, s->flags);
        put_u32(out, s->stats);
        put_u64(out, (uint64_t)s->ts_src);
        put_u64(out, (uint64_t)s->ts_gw);
        put_u8(out, s->v.type);
        switch (s->v.type) {
            case FB_T_BOOL: put_u8(out, s->v.b ? 1 : 0); break;
            case FB_T_FLOAT32:
            case FB_T_FLOAT64: put_f64(out, s->v.f); break;
            case FB_T_STRING:
                put_u32(out, s->v.s.len);
                fb_buf_put(out, s->v.s.p, s->v.s.len);
                break;
            case FB_T_NONE: break;
            default: put_u64(out, s->v.u); break; /* i and u share the bits */
        }
    }
    for (uint32_t i = 0; i < b->nstats; i++) {
        const struct fb_stats *st = &b->stats[i];
        put_f64(out, st->mean);
        put_f64(out, st->stddev);
        put_f64(out, st->min);
        put_f64(out, st->max);
        put_u32(out, st->count);
        put_u64(out, (uint64_t)st->window_ns);
    }
}

struct rd {
    const uint8_t *p;
    size_t left;
    bool bad;
};
static const uint8_t *take(struct rd *r, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}
static uint8_t get_u8(struct rd *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}
static uint32_t get_u32(struct rd *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24 : 0;
}
static uint64_t get_u64(struct rd *r)
{
    const uint8_t *p = take(r, 8);
    uint64_t v = 0;
    if (p)
        for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static double get_f64(struct rd *r)
{
    uint64_t u = get_u64(r);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* Make sure `*bp` can hold n samples, ns stats and `arena` string bytes. */
static int ensure(struct fb_batch **bp, uint32_t n, uint32_t ns, uint32_t arena)
{
    struct fb_batch *b = *bp;
    if (b && b->cap >= n && b->cap_stats >= ns && b->arena_cap >= arena) return 0;
    uint32_t cap = b && b->cap > n ? b->cap : n;
    uint32_t cs = b && b->cap_stats > ns ? b->cap_stats : ns;
    uint32_t ca = b && b->arena_cap > arena ? b->arena_cap : arena;
    struct fb_batch *nb = fb_batch_new(cap, cs, ca);
    if (!nb) return FB_ENOMEM;
    fb_batch_free(b);
    *bp = nb;
    return 0;
}

int fb_batch_decode(const void *p, size_t len, const struct fb_gateway *gw, const struct fb_model_map *map,
                    struct fb_batch **bp, uint32_t *fingerprint)
{
    struct rd r = {p, len, false};
    if (get_u8(&r) != REC_VERSION) return FB_EPROTO;
    uint8_t kind = get_u8(&r), st = get_u8(&r), rl = get_u8(&r);
    uint32_t fp = get_u32(&r);
    uint32_t dev = get_u32(&r), n = get_u32(&r), ns = get_u32(&r);
    int64_t ts = (int64_t)get_u64(&r);
    uint64_t seq = get_u64(&r);
    const uint8_t *reason = take(&r, rl);
    /* reason_len is a u8 and the field holds 255 bytes and the NUL; records
     * written when it held 95 read the same */
    _Static_assert(FB_REASON_LEN > 255, "a u8 reason length must fit struct fb_batch.reason");
    if (r.bad || kind > FB_BATCH_NAMED_STATUS) return FB_EPROTO;
    struct fb_alarm_ev ev;
    memset(&ev, 0, sizeof ev);
    if (kind == FB_BATCH_ALARM) {
        ev.alarm = get_u32(&r);
        ev.event = get_u8(&r);
        ev.flags = get_u8(&r);
        ev.count = get_u32(&r);
        ev.value = get_f64(&r);
        ev.since = (int64_t)get_u64(&r);
        ev.until = (int64_t)get_u64(&r);
        if (r.bad || ev.event >= FB_AE__COUNT) return FB_EPROTO;
        if (ev.alarm != FB_ALARM_NONE) {
            if (map) {
                if (ev.alarm >= map->nalarms || map->alarm[ev.alarm] == UINT32_MAX) return FB_ENOENT;
                ev.alarm = map->alarm[ev.alarm];
            } else if (ev.alarm >= gw->nalarms) {
                return FB_EPROTO;
            }
        }
    }
    if (fingerprint) *fingerprint = fp;
    bool named = kind >= FB_BATCH_NAMED;
    uint32_t nlen = 0, names[FB_BN__N] = {0};
    const uint8_t *nblock = NULL;
    if (named) {
        nlen = get_u32(&r);
        nblock = take(&r, nlen);
        for (int k = 0; k < FB_BN__N; k++) names[k] = get_u32(&r);
        if (r.bad) return FB_EPROTO;
        for (int k = 0; k < FB_BN__N; k++)
            if (names[k] >= nlen || !memchr(nblock + names[k], 0, nlen - names[k])) return FB_EPROTO;
    }
    /* every sample takes at least 33 bytes, every stats entry 44: bound n before allocating */
    if ((uint64_t)n * 33 > r.left || (uint64_t)ns * 44 > r.left) return FB_EPROTO;
    uint64_t arena = (uint64_t)r.left + nlen;
    if (ensure(bp, n, ns, (uint32_t)(arena < UINT32_MAX ? arena : UINT32_MAX)) < 0) return FB_ENOMEM;
    struct fb_batch *b = *bp;
    fb_batch_reset(b);
    b->kind = kind;
    b->dev_state = st;
    b->ts = ts;
    b->seq = seq;
    memcpy(b->reason, reason, rl);
    b->reason[rl] = 0;
    b->ev = ev;
    if (named) {
        if (nlen) memcpy(b->arena, nblock, nlen);
        b->arena_len = nlen;
        memcpy(b->names, names, sizeof names);
        b->device = 0;
    } else if (map) {
        if (dev >= map->ndevs || map->dev[dev] == UINT32_MAX) return FB_ENOENT;
        b->device = map->dev[dev];
    } else {
        if (dev >= gw->ndevs) return FB_EPROTO;
        b->device = dev;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t tag = get_u32(&r), q = get_u32(&r), fl = get_u32(&r), si = get_u32(&r);
        int64_t tsrc = (int64_t)get_u64(&r), tgw = (int64_t)get_u64(&r);
        struct fb_value v;
        memset(&v, 0, sizeof v);
        v.type = get_u8(&r);
        switch (v.type) {
            case FB_T_BOOL: v.b = get_u8(&r) != 0; break;
            case FB_T_FLOAT32:
            case FB_T_FLOAT64: v.f = get_f64(&r); break;
            case FB_T_STRING: {
                uint32_t sl = get_u32(&r);
                const uint8_t *sp = take(&r, sl);
                v.s.p = (const char *)sp;
                v.s.len = sl;
                break;
            }
            case FB_T_NONE: break;
            default:
                if (v.type >= FB_T_BLOCK) return FB_EPROTO; /* a block is a pointer: never on disk */
                v.u = get_u64(&r);
                break;
        }
        if (r.bad) return FB_EPROTO;
        if (named) {
            if (tag >= nlen || !memchr(nblock + tag, 0, nlen - tag)) return FB_EPROTO; /* a NUL-terminated name */
        } else {
            if (map) {
                if (tag >= map->ntags || map->tag[tag] == UINT32_MAX) continue; /* gone from the config */
                tag = map->tag[tag];
            }
            if (tag >= gw->ntags) return FB_EPROTO;
        }
        struct fb_sample *s = fb_batch_add(b, tag, q, tsrc, v.type ? &v : NULL);
        if (!s) return FB_EPROTO;
        s->ts_gw = tgw;
        s->flags = fl;
        s->stats = si;
        if ((fl & FB_SF_STATS) && si >= ns) s->flags &= ~(uint32_t)FB_SF_STATS;
    }
    for (uint32_t i = 0; i < ns; i++) {
        struct fb_stats *x = &b->stats[i];
        x->mean = get_f64(&r);
        x->stddev = get_f64(&r);
        x->min = get_f64(&r);
        x->max = get_f64(&r);
        x->count = get_u32(&r);
        x->window_ns = (int64_t)get_u64(&r);
    }
    if (r.bad || r.left) return FB_EPROTO;
    b->nstats = ns;
    return 0;
}

/* ---------------------------------------------------------------- models */
uint32_t fb_model_fingerprint(const struct fb_gateway *gw)
{
    /* FNV-1a over device names and device/tag pairs in id order */
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < gw->ndevs; i++) {
        for (const char *c = gw->devs[i].name; c && *c; c++) h = (h ^ (uint8_t)*c) * 16777619u;
        h = (h ^ 0xFFu) * 16777619u;
    }
    for (uint32_t i = 0; i < gw->ntags; i++) {
        h = (h ^ (gw->tags[i].device & 0xFF)) * 16777619u;
        for (const char *c = gw->tags[i].name; c && *c; c++) h = (h ^ (uint8_t)*c) * 16777619u;
        h = (h ^ 0xFEu) * 16777619u;
    }
    /* alarms (none: the fingerprint of a config without alarms is unchanged) */
    for (uint32_t i = 0; i < gw->nalarms; i++) {
        h = (h ^ (gw->alarms[i].device & 0xFF)) * 16777619u;
        for (const char *c = gw->alarms[i].name; c && *c; c++) h = (h ^ (uint8_t)*c) * 16777619u;
        h = (h ^ 0xFDu) * 16777619u;
    }
    return h;
}

int fb_model_save(const struct fb_gateway *gw, const char *dir, uint32_t fp)
{
    char path[1024], tmp[1040];
    snprintf(path, sizeof path, "%s/model-%08x", dir, fp);
    FILE *f = fopen(path, "r");
    if (f) { /* already there: models are immutable */
        fclose(f);
        return 0;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f) return FB_EIO;
    for (uint32_t i = 0; i < gw->ndevs; i++) fprintf(f, "D %s\n", gw->devs[i].name);
    for (uint32_t i = 0; i < gw->ntags; i++) fprintf(f, "T %u %s\n", gw->tags[i].device, gw->tags[i].name);
    for (uint32_t i = 0; i < gw->nalarms; i++) fprintf(f, "A %u %s\n", gw->alarms[i].device, gw->alarms[i].name);
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) < 0) {
        unlink(tmp);
        return FB_EIO;
    }
    return 0;
}

void fb_model_map_free(struct fb_model_map *m)
{
    if (!m) return;
    free(m->dev);
    free(m->tag);
    free(m->alarm);
    free(m);
}

struct fb_model_map *fb_model_map_load(const struct fb_gateway *gw, const char *dir, uint32_t fp)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/model-%08x", dir, fp);
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    struct fb_model_map *m = calloc(1, sizeof *m);
    uint32_t capd = 0, capt = 0, capa = 0;
    char line[1024];
    while (m && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0] == 'D' && line[1] == ' ') {
            if (m->ndevs == capd) {
                capd = capd ? capd * 2 : 16;
                uint32_t *d = realloc(m->dev, capd * sizeof *d);
                if (!d) break;
                m->dev = d;
            }
            struct fb_device *d = fb_gw_device((struct fb_gateway *)gw, line + 2);
            m->dev[m->ndevs++] = d ? d->idx : UINT32_MAX;
        } else if (line[0] == 'T' && line[1] == ' ') {
            char *end;
            unsigned long od = strtoul(line + 2, &end, 10);
            if (*end != ' ') continue;
            if (m->ntags == capt) {
                capt = capt ? capt * 2 : 64;
                uint32_t *t = realloc(m->tag, capt * sizeof *t);
                if (!t) break;
                m->tag = t;
            }
            uint32_t nd = od < m->ndevs ? m->dev[od] : UINT32_MAX;
            struct fb_tag *t = nd != UINT32_MAX ? fb_gw_tag((struct fb_gateway *)gw, &gw->devs[nd], end + 1) : NULL;
            m->tag[m->ntags++] = t ? t->id : UINT32_MAX;
        } else if (line[0] == 'A' && line[1] == ' ') {
            char *end;
            unsigned long od = strtoul(line + 2, &end, 10);
            if (*end != ' ') continue;
            if (m->nalarms == capa) {
                capa = capa ? capa * 2 : 16;
                uint32_t *a = realloc(m->alarm, capa * sizeof *a);
                if (!a) break;
                m->alarm = a;
            }
            uint32_t nd = od < m->ndevs ? m->dev[od] : UINT32_MAX, id = UINT32_MAX;
            for (uint32_t i = 0; nd != UINT32_MAX && i < gw->nalarms; i++)
                if (gw->alarms[i].device == nd && !strcmp(gw->alarms[i].name, end + 1)) id = i;
            m->alarm[m->nalarms++] = id;
        }
    }
    fclose(f);
    return m;
}

struct fb_model_map *fb_model_map_between(const struct fb_gateway *old, const struct fb_gateway *now)
{
    struct fb_model_map *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->dev = calloc(old->ndevs ? old->ndevs : 1, sizeof *m->dev);
    m->tag = calloc(old->ntags ? old->ntags : 1, sizeof *m->tag);
    m->alarm = calloc(old->nalarms ? old->nalarms : 1, sizeof *m->alarm);
    if (!m->dev || !m->tag || !m->alarm) {
        fb_model_map_free(m);
        return NULL;
    }
    m->ndevs = old->ndevs;
    m->ntags = old->ntags;
    m->nalarms = old->nalarms;
    for (uint32_t i = 0; i < old->ndevs; i++) {
        struct fb_device *d = fb_gw_device((struct fb_gateway *)now, old->devs[i].name);
        m->dev[i] = d ? d->idx : UINT32_MAX;
    }
    for (uint32_t i = 0; i < old->ntags; i++) {
        const struct fb_tag *t = &old->tags[i];
        uint32_t nd = t->device < old->ndevs ? m->dev[t->device] : UINT32_MAX;
        const struct fb_tag *nt =
            nd != UINT32_MAX ? fb_gw_tag((struct fb_gateway *)now, &now->devs[nd], t->name) : NULL;
        m->tag[i] = nt ? nt->id : UINT32_MAX;
    }
    for (uint32_t i = 0; i < old->nalarms; i++) { /* by device and name, like the model files */
        const struct fb_alarm *a = &old->alarms[i];
        uint32_t nd = a->device < old->ndevs ? m->dev[a->device] : UINT32_MAX;
        m->alarm[i] = UINT32_MAX;
        for (uint32_t k = 0; nd != UINT32_MAX && k < now->nalarms; k++)
            if (now->alarms[k].device == nd && a->name && now->alarms[k].name && !strcmp(now->alarms[k].name, a->name))
                m->alarm[i] = k;
    }
    return m;
}

struct fb_model_map *fb_model_map_compose(const struct fb_model_map *a, const struct fb_model_map *b)
{
    struct fb_model_map *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->dev = calloc(a->ndevs ? a->ndevs : 1, sizeof *m->dev);
    m->tag = calloc(a->ntags ? a->ntags : 1, sizeof *m->tag);
    m->alarm = calloc(a->nalarms ? a->nalarms : 1, sizeof *m->alarm);
    if (!m->dev || !m->tag || !m->alarm) {
        fb_model_map_free(m);
        return NULL;
    }
    m->ndevs = a->ndevs;
    m->ntags = a->ntags;
    m->nalarms = a->nalarms;
    for (uint32_t i = 0; i < a->ndevs; i++) m->dev[i] = a->dev[i] < b->ndevs ? b->dev[a->dev[i]] : UINT32_MAX;
    for (uint32_t i = 0; i < a->ntags; i++) m->tag[i] = a->tag[i] < b->ntags ? b->tag[a->tag[i]] : UINT32_MAX;
    for (uint32_t i = 0; i < a->nalarms; i++)
        m->alarm[i] = a->alarm[i] < b->nalarms ? b->alarm[a->alarm[i]] : UINT32_MAX;
    return m;
}

int fb_model_copy_all(const char *from_dir, const char *to_dir)
{
    DIR *d = opendir(from_dir);
    if (!d) return FB_EIO;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned fp;
        char tail;
        if (sscanf(e->d_name, "model-%8x%c", &fp, &tail) != 1 || strlen(e->d_name) != 14) continue;
        char src[1100], dst[1100], tmp[1110];
        snprintf(src, sizeof src, "%s/%s", from_dir, e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", to_dir, e->d_name);
        if (access(dst, F_OK) == 0) continue; /* models are immutable */
        snprintf(tmp, sizeof tmp, "%s.tmp", dst);
        FILE *in = fopen(src, "r"), *out = in ? fopen(tmp, "w") : NULL;
        bool ok = in && out;
        char buf[4096];
        size_t n;
        while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
        if (in) fclose(in);
        if (out) {
            ok = fflush(out) == 0 && fsync(fileno(out)) == 0 && ok;
            ok = fclose(out) == 0 && ok;
        }
        if (!ok || rename(tmp, dst) < 0) {
            unlink(tmp);
            rc = FB_EIO;
        }
    }
    closedir(d);
    return rc;
}
