/* model.c — the model's look-ups and its release (model.h).  The model is
 * built by the config loader (config.c, config_dev.c). */
#include "core/model.h"

#include <stdlib.h>
#include <string.h>

#include "core/url.h"
#include "edge/expr.h"

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
            free(d->groups[g].tags);
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
    for (uint32_t i = 0; i < gw->ntags; i++) {
        struct fb_tag *t = &gw->tags[i];
        free(t->name);
        free(t->path);
        free(t->addr_text);
        free(t->order);
        free(t->unit);
        free(t->wave);
    }
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
    free(gw->id);
    free(gw->site);
    free(gw->cfg_path);
    for (uint32_t i = 0; i < gw->nservices; i++)
        if (gw->services[i].svc->cfg_free) gw->services[i].svc->cfg_free(gw->services[i].cfg);
    free(gw->services);
    fb_buffer_cfg_free(gw->buffer);
    free(gw);
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
