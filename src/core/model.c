/* model.c — the model's look-ups and its release (model.h).  The model is
 * built by the config loader (config.c, config_dev.c). */
#include "core/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fleet_cfg.h"
#include "core/url.h"
#include "edge/expr.h"

/* spike_accept 3: the config's default (docs/configuration.md) */
const struct fb_tag_proc fb_tag_proc_none = {.spike_accept = 3};

_Static_assert(sizeof(void *) != 8 || sizeof(struct fb_tag) == 48, "struct fb_tag grew: a gateway holds a million");

/* ------------------------------------------------------------------ arena */
struct fb_arena_blk {
    struct fb_arena_blk *next;
    size_t size;
    _Alignas(16) unsigned char data[];
};
#define ARENA_CHUNK (64u * 1024u - 64u) /* with malloc's header: just under 64 KiB */

void *fb_arena_alloc(struct fb_arena *a, size_t n, size_t align)
{
    if (!align || (align & (align - 1)) || align > 16) return NULL;
    size_t off = a->blk ? (a->off + align - 1) & ~(align - 1) : 0;
    if (!a->blk || off + n > a->blk->size) {
        size_t size = n > ARENA_CHUNK - sizeof(struct fb_arena_blk) ? n : ARENA_CHUNK - sizeof(struct fb_arena_blk);
        struct fb_arena_blk *b = malloc(sizeof *b + size);
        if (!b) return NULL;
        b->size = size;
        b->next = a->blk;
        a->blk = b;
        a->bytes += sizeof *b + size;
        off = 0;
    }
    void *p = a->blk->data + off;
    a->off = off + n;
    memset(p, 0, n);
    return p;
}

char *fb_arena_strndup(struct fb_arena *a, const char *s, size_t n)
{
    char *p = fb_arena_alloc(a, n + 1, 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void fb_arena_free(struct fb_arena *a)
{
    while (a->blk) {
        struct fb_arena_blk *b = a->blk;
        a->blk = b->next;
        free(b);
    }
    a->off = 0;
    a->bytes = 0;
}

void fb_buffer_cfg_free(struct fb_buffer_cfg *b)
{
    if (!b) return;
    free(b->path);
    free(b);
}

void fb_gateway_free(struct fb_gateway *gw)
{
    if (!gw) return;
    for (uint32_t di = 0; di < gw->ndevs; di++) {
        struct fb_device *d = &gw->devs[di];
        for (uint32_t g = 0; g < d->ngroups; g++) {
            if (d->groups[g].plan && d->drv && d->drv->plan_free) d->drv->plan_free(&d->groups[g]);
            free(d->groups[g].ids);
        }
        free(d->groups);
        for (uint32_t i = 0; i < d->ntags && d->first_tag + i < gw->ntags; i++) {
            struct fb_tag *t = &gw->tags[d->first_tag + i];
            if (t->addr && d->drv && d->drv->free_address) d->drv->free_address(t);
        }
        if (d->drv && d->drv->device_free) d->drv->device_free(d);
        free(d->name);
        free(d->url_text);
        fb_url_free(&d->url);
        free(d->area);
        free(d->line);
    }
    /* the tags' strings and settings are in the arena */
    for (uint32_t i = 0; i < gw->nwaves; i++) free(gw->waves[i]);
    free(gw->waves);
    free(gw->atext);
    fb_arena_free(&gw->atext_arena);
    free(gw->atext_runs);
    for (uint32_t k = 0; k < gw->nconns; k++) {
        free(gw->conns[k].key);
        free(gw->conns[k].devs);
    }
    for (uint32_t s = 0; s < gw->nsinks; s++) {
        struct fb_sink_inst *si = &gw->sinks[s];
        if (si->sink && si->sink->cfg_free) si->sink->cfg_free(si->cfg);
        fb_buffer_cfg_free(si->buffer);
        free(si->name);
    }
    free(gw->sinks);
    for (uint32_t i = 0; gw->calcs && i < gw->ncalcs; i++) {
        free(gw->calcs[i].text);
        fb_expr_free(gw->calcs[i].expr);
        free(gw->calcs[i].in);
    }
    free(gw->calcs);
    for (uint32_t i = 0; gw->alarms && i < gw->nalarms; i++) {
        struct fb_alarm *a = &gw->alarms[i];
        free(a->name);
        free(a->path);
        free(a->message);
        free(a->suppress_text);
        fb_expr_free(a->suppress);
        free(a->sup_in);
    }
    free(gw->alarms);
    for (uint32_t i = 0; gw->scripts && i < gw->nscripts; i++) {
        struct fb_script *sc = &gw->scripts[i];
        free(sc->name);
        free(sc->file);
        free(sc->source);
        free(sc->devices);
        free(sc->outputs);
    }
    free(gw->scripts);
    if (gw->vib && gw->vib_free) gw->vib_free(gw->vib);
    for (uint32_t s = 0; s < gw->nsources; s++) {
        struct fb_source_inst *si = &gw->sources[s];
        if (si->src && si->src->cfg_free) si->src->cfg_free(si->cfg);
        free(si->name);
    }
    free(gw->sources);
    free(gw->conns);
    free(gw->devs);
    free(gw->tags);
    fb_arena_free(&gw->arena);
    free(gw->id);
    free(gw->site);
    free(gw->cfg_path);
    free(gw->hw_model);
    free(gw->location);
    free(gw->cfg_version);
    for (uint32_t i = 0; i < gw->nlabels; i++) {
        free(gw->labels[i].key);
        free(gw->labels[i].value);
    }
    free(gw->labels);
    fb_fleet_cfg_free(gw->fleet);
    for (uint32_t i = 0; i < gw->nservices; i++)
        if (gw->services[i].svc->cfg_free) gw->services[i].svc->cfg_free(gw->services[i].cfg);
    free(gw->services);
    fb_buffer_cfg_free(gw->buffer);
    for (uint32_t i = 0; i < gw->nacls; i++) {
        for (uint32_t k = 0; k < gw->acls[i].n; k++) free(gw->acls[i].pat[k]);
        free(gw->acls[i].pat);
    }
    free(gw->acls);
    for (uint32_t i = 0; i < gw->ncerts; i++) {
        free(gw->certs[i].use);
        free(gw->certs[i].path);
    }
    free(gw->certs);
    free(gw);
}

bool fb_gw_cert_add(struct fb_gateway *gw, const char *use, const char *path, enum fb_opt_kind kind)
{
    for (uint32_t i = 0; i < gw->ncerts; i++)
        if (gw->certs[i].kind == kind && !strcmp(gw->certs[i].path, path)) return true;
    struct fb_cert_ref *t = realloc(gw->certs, (gw->ncerts + 1) * sizeof *t);
    if (!t) return false;
    gw->certs = t;
    struct fb_cert_ref *c = &gw->certs[gw->ncerts];
    c->use = strdup(use);
    c->path = strdup(path);
    c->kind = (uint8_t)kind;
    if (!c->use || !c->path) {
        free(c->use);
        free(c->path);
        return false;
    }
    gw->ncerts++;
    return true;
}

static void pat_free(char **pat, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++) free(pat[k]);
    free(pat);
}

uint16_t fb_gw_acl_add(struct fb_gateway *gw, char **pat, uint32_t n)
{
    for (uint32_t i = 0; i < gw->nacls; i++) {
        const struct fb_acl *a = &gw->acls[i];
        bool same = a->n == n;
        for (uint32_t k = 0; same && k < n; k++) same = !strcmp(a->pat[k], pat[k]);
        if (same) { /* a `for:` loop gives every tag the same list: keep one */
            pat_free(pat, n);
            return (uint16_t)(i + 1);
        }
    }
    struct fb_acl *t = gw->nacls < 65535 ? realloc(gw->acls, (gw->nacls + 1) * sizeof *t) : NULL;
    if (!t) {
        pat_free(pat, n);
        return 0;
    }
    gw->acls = t;
    gw->acls[gw->nacls].pat = pat;
    gw->acls[gw->nacls].n = n;
    return (uint16_t)++gw->nacls;
}

struct fb_device *fb_gw_device(struct fb_gateway *gw, const char *name)
{
    if (!gw || !name) return NULL;
    for (uint32_t i = 0; i < gw->ndevs; i++)
        if (!strcmp(gw->devs[i].name, name)) return &gw->devs[i];
    return NULL;
}

struct fb_tag *fb_gw_tag(struct fb_gateway *gw, const struct fb_device *d, const char *name)
{
    if (!gw || !d || !name) return NULL;
    for (uint32_t i = 0; i < d->ntags; i++)
        if (!strcmp(gw->tags[d->first_tag + i].name, name)) return &gw->tags[d->first_tag + i];
    return NULL;
}

/* ---------------------------------------------------------- address texts */
/* The text its driver writes back for tag t, or NULL when it does not. */
static const char *written_back(const struct fb_gateway *gw, const struct fb_tag *t, char *buf)
{
    if (!t->addr || t->device >= gw->ndevs) return NULL;
    const struct fb_device *d = &gw->devs[t->device];
    if (!d->drv || !d->drv->addr_text) return NULL;
    buf[0] = 0;
    d->drv->addr_text(d, t, buf, FB_ATEXT_MAX);
    return buf;
}

const char *fb_tag_addr_text(const struct fb_gateway *gw, const struct fb_tag *t, char *buf)
{
    if (!gw || !t) return NULL;
    if (gw->atext) return t->id < gw->ntags ? gw->atext[t->id] : NULL;
    uint32_t lo = 0, hi = gw->natext_runs;
    while (lo < hi) { /* the last run starting at or before t->id */
        uint32_t mid = lo + (hi - lo) / 2;
        if (gw->atext_runs[mid].first <= t->id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo > 0 && t->id - gw->atext_runs[lo - 1].first < gw->atext_runs[lo - 1].n) return gw->atext_runs[lo - 1].text;
    return written_back(gw, t, buf);
}

bool fb_gw_atext_compact(struct fb_gateway *gw)
{
    if (!gw->atext) return true;
    char buf[FB_ATEXT_MAX];
    uint32_t n = 0;
    for (int pass = 0; pass < 2; pass++) { /* count the runs, then make them */
        struct fb_atext_run *runs = NULL;
        if (pass == 1) {
            runs = malloc((n ? n : 1) * sizeof *runs);
            if (!runs) return false;
        }
        uint32_t k = 0;
        const char *prev = NULL;
        for (uint32_t i = 0; i < gw->ntags; i++) {
            const char *a = gw->atext[i];
            const char *w = a ? written_back(gw, &gw->tags[i], buf) : NULL;
            if (!a || (w && !strcmp(w, a))) {
                prev = NULL;
                continue;
            }
            if (a == prev) { /* the run of the tag before (prev: its text, kept) */
                if (runs) runs[k - 1].n++;
            } else {
                if (runs) {
                    char *copy = fb_arena_strndup(&gw->arena, a, strlen(a));
                    if (!copy) {
                        free(runs);
                        return false;
                    }
                    runs[k] = (struct fb_atext_run){i, 1, copy};
                }
                k++;
            }
            prev = a;
        }
        if (pass == 0) {
            n = k;
        } else {
            free(gw->atext_runs);
            gw->atext_runs = runs;
            gw->natext_runs = k;
        }
    }
    free(gw->atext);
    gw->atext = NULL;
    fb_arena_free(&gw->atext_arena);
    return true;
}

const char *fb_tag_path(const struct fb_gateway *gw, const struct fb_tag *t)
{
    static _Thread_local char buf[4][256];
    static _Thread_local unsigned turn;
    char *b = buf[turn++ % 4];
    const char *dev = gw && t->device < gw->ndevs && gw->devs[t->device].name ? gw->devs[t->device].name : NULL;
    if (dev)
        snprintf(b, sizeof buf[0], "%s/%s", dev, t->name ? t->name : "?");
    else
        snprintf(b, sizeof buf[0], "%s", t->name ? t->name : "?");
    return b;
}
