/* model.c — the model's look-ups and its release (model.h).  The model is
 * built by the config loader (config.c, config_dev.c). */
#include "core/model.h"

#include <stdlib.h>
#include <string.h>

#include "core/fleet_cfg.h"
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
