/* reload.c — a new configuration applied to the running gateway, restarting
 * only what changed.
 *
 * The model (model.h) is immutable while it is in use, so a reload does not
 * edit it: the new config is loaded into a second model (nw), compared with
 * the running one, and the running state of what did not change — threads,
 * open connections, raw batch pools, sink sessions and stores, pipeline
 * state — is moved across behind the rt pointers.  The gateway object itself
 * stays where it is (everyone holds a pointer to it): its contents are
 * swapped with nw's, so afterwards gw is the new model and nw the old one,
 * which the caller frees.
 *
 * What is the same:
 *   - a device is kept when it is polled identically (fb_reload_dev_same:
 *     URL and options, driver, timing, groups, every tag's address and
 *     type, a waveform tag's block shape); tag processing, units, area and line may change;
 *   - a connection is kept when it has the same key and the same devices in
 *     the same order, all kept, and its driver can adopt (struct fb_driver):
 *     its thread and its open transport carry on, its devices' groups keep
 *     their poll deadlines, nothing reconnects;
 *   - a tag keeps its pipeline state (deadband, windows, plausibility) when
 *     its device and name, type, period and processing settings are equal;
 *   - a sink is kept in place when its section (cfg_equal), buffer and queue
 *     are equal, the gateway's id and site are too, and it either has the
 *     model hooks (model_begin/model_end) or the devices did not change;
 *     otherwise it is restarted (closed, then opened on the new settings),
 *     and in between its thread keeps storing what arrives, so nothing is
 *     lost; its store stays (reopened only for new buffer settings);
 *   - the edge thread (computed tags, alarms, scripts: src/edge) is kept when
 *     everything it is built from is the same once old ids are translated
 *     (edge_same): it parks like a sink thread (queue emptied) and its
 *     tag- and device-indexed state — value table, alarm table, the Lua
 *     states' device tables — moves to the new ids (fb_edge_adopt); Lua
 *     globals and timers, alarm states and virtual devices' online state
 *     carry on.  Otherwise it stops in 2 and starts on the new model in 5;
 *   - a service is kept when its section is equal (cfg_equal); a service
 *     with quiesce always restarts, but hands what continues unchanged
 *     (the control loops of the same configuration) over to its new start
 *     (handover/adopt: no safe value, the running state carried).
 *
 * The order, with the polling gap of kept devices kept short:
 *   1. prepare what can fail (pipeline state, pools, new sinks' stores, the
 *      new config's names in every buffer directory) — nothing changed yet;
 *   2. stop the connections that go or change (their devices go offline
 *      with the reason) and close the sinks that restart or go (their
 *      threads only store from now on);
 *   3. park the kept connections (each at the top of its loop, pending
 *      writes failed: their ids are the old config's), then a kept edge
 *      thread, then every sink thread (each after emptying its queue: no
 *      batch of the old model remains);
 *   4. with the model lock held for writing: swap, move the running state,
 *      translate the status memory, queued commands and the buffers' id maps;
 *   5. start (or unpark) the edge thread, start the new connections,
 *      unpark the kept ones, open the restarted and new sinks, unpark every
 *      sink, restart changed services.
 * A failure in 3 undoes 2 (connections started again on the old model,
 * sinks reopened, a stopped vibration analysis resumed) and returns an
 * error: the running configuration stays.
 *
 * The vibration analysis (src/vib) is never kept as such — its threads,
 * channels and the waveform tags' block pools belong to the running model:
 * it stops in 3 (after the kept connections park, before a kept edge parks:
 * what it still publishes goes to the edge and the sinks), is detached in 4,
 * and starts on the new model in 5 taking over each channel's counters and
 * (while the baseline fits) anomaly state by tag path; the old analysis and
 * its pools are freed right after, every block being back.
 *
 * Runs on the router thread (fleet.c submits reloads as commands), so no
 * write is in flight and reloads never overlap.
 */
#include "core/reload.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch_codec.h"
#include "core/certs.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/router.h"
#include "core/runtime.h"
#include "core/runtime_state.h"
#include "core/sinks.h"
#include "edge/edge.h"
#include "proc/proc.h"
#include "store/store.h"
#include "vib/vib.h"
#include "vib/vib_cfg.h"

#define PARK_WAIT_NS 10000000000LL /* a connection in a slow read, a sink emptying its queue */
#define NONE UINT32_MAX

/* ------------------------------------------------------------ sameness */
static bool str_eq(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

static bool url_eq(const struct fb_url *a, const struct fb_url *b)
{
    if (!str_eq(a->scheme, b->scheme) || !str_eq(a->host, b->host) || !str_eq(a->path, b->path) || a->port != b->port ||
        a->nq != b->nq)
        return false;
    for (int i = 0; i < a->nq; i++)
        if (!str_eq(a->q[i].k, b->q[i].k) || !str_eq(a->q[i].v, b->q[i].v)) return false;
    return true;
}

static bool tag_poll_same(const struct fb_gateway *ga, const struct fb_tag *a, const struct fb_gateway *gb,
                          const struct fb_tag *b)
{
    char ba[FB_ATEXT_MAX], bb[FB_ATEXT_MAX];
    return str_eq(a->name, b->name) && str_eq(fb_tag_addr_text(ga, a, ba), fb_tag_addr_text(gb, b, bb)) &&
           str_eq(fb_tag_order(a), fb_tag_order(b)) &&
           a->type == b->type && a->access == b->access && a->index == b->index && a->str_len == b->str_len &&
           a->group == b->group && fb_tag_is_wave(a) == fb_tag_is_wave(b) &&
           (!fb_tag_is_wave(a) || (fb_tag_wave(ga, a)->n == fb_tag_wave(gb, b)->n &&
                                   fb_tag_wave(ga, a)->fs == fb_tag_wave(gb, b)->fs)); /* the driver fills blocks of n */
}

static bool proc_same(const struct fb_tag_proc *a, const struct fb_tag_proc *b)
{
    return a->scaled == b->scaled && a->k == b->k && a->d == b->d && a->sa == b->sa && a->sb == b->sb &&
           a->sc == b->sc && a->has_min == b->has_min && a->has_max == b->has_max && a->min == b->min &&
           a->max == b->max && a->max_rate == b->max_rate && a->spike_accept == b->spike_accept &&
           a->stuck_ns == b->stuck_ns && a->db_abs == b->db_abs && a->db_pct == b->db_pct &&
           a->heartbeat_ns == b->heartbeat_ns && a->window_ns == b->window_ns; /* the out type follows scaled */
}

bool fb_reload_dev_same(const struct fb_gateway *og, const struct fb_device *o, const struct fb_gateway *ng,
                        const struct fb_device *n)
{
    if (!str_eq(o->name, n->name) || !str_eq(o->url_text, n->url_text) || !url_eq(&o->url, &n->url) ||
        o->drv != n->drv || o->timeout_ns != n->timeout_ns || o->delay_ns != n->delay_ns || o->ntags != n->ntags ||
        o->ngroups != n->ngroups)
        return false;
    if (!o->conn != !n->conn || (o->conn && !str_eq(o->conn->key, n->conn->key))) return false; /* virtual: none */
    for (uint32_t k = 0; k < o->ngroups; k++) {
        const struct fb_group *a = &o->groups[k], *b = &n->groups[k];
        if (a->period_ns != b->period_ns || a->ntags != b->ntags) return false;
        for (uint32_t i = 0; i < a->ntags; i++)
            if (fb_group_tag(a, i) - o->first_tag != fb_group_tag(b, i) - n->first_tag) return false;
    }
    for (uint32_t i = 0; i < o->ntags; i++)
        if (!tag_poll_same(og, &og->tags[o->first_tag + i], ng, &ng->tags[n->first_tag + i])) return false;
    return true;
}

bool fb_tag_same(const struct fb_gateway *ga, const struct fb_tag *a, const struct fb_gateway *gb,
                 const struct fb_tag *b)
{
    if (a->device >= ga->ndevs || b->device >= gb->ndevs) return false;
    const struct fb_device *da = &ga->devs[a->device], *db = &gb->devs[b->device];
    int64_t pa = a->group < da->ngroups ? da->groups[a->group].period_ns : -1;
    int64_t pb = b->group < db->ngroups ? db->groups[b->group].period_ns : -1;
    return str_eq(a->name, b->name) && a->type == b->type && pa == pb && proc_same(fb_tproc(a), fb_tproc(b)) &&
           fb_reload_dev_same(ga, da, gb, db);
}

static bool buffer_same(const struct fb_buffer_cfg *a, const struct fb_buffer_cfg *b)
{
    if (!a || !b) return a == b;
    return str_eq(a->path, b->path) && a->max_bytes == b->max_bytes && a->max_age_ns == b->max_age_ns &&
           a->sync == b->sync && a->sync_interval_ns == b->sync_interval_ns && a->full_policy == b->full_policy &&
           a->drain_rate == b->drain_rate;
}

/* ----------------------------------------------------------------- edge */
/* Whether the edge thread (computed tags, alarms, scripts) can go on under
 * the new model: everything it is built from is the same once old ids are
 * translated by map (same expressions over the same tags, the same alarms
 * in the same order, the same scripts with the same source), every tag it
 * names is the same kind of value (name, type, length, unit, processing,
 * where it comes from), and the virtual devices are the same ones. */
static bool num_eq(double a, double b) { return a == b || (a != a && b != b); }

static uint32_t map_id(const uint32_t *m, uint32_t n, uint32_t id) { return id < n ? m[id] : NONE; }

static bool edge_tag_same(const struct fb_gateway *og, uint32_t i, const struct fb_gateway *ng, uint32_t j,
                          const struct fb_model_map *map)
{
    if (i >= og->ntags || j >= ng->ntags || map->tag[i] != j) return false;
    const struct fb_tag *a = &og->tags[i], *b = &ng->tags[j];
    return str_eq(a->name, b->name) && a->type == b->type && a->str_len == b->str_len && a->src == b->src &&
           str_eq(fb_tag_unit(a), fb_tag_unit(b)) && proc_same(fb_tproc(a), fb_tproc(b)) &&
           (a->src == FB_TAG_READ || a->calc == b->calc);
}

/* an optional id (NONE: none) of the old model and its counterpart in the new */
static bool edge_opt_tag_same(const struct fb_gateway *og, uint32_t i, const struct fb_gateway *ng, uint32_t j,
                              const struct fb_model_map *map)
{
    return (i == NONE && j == NONE) || edge_tag_same(og, i, ng, j, map);
}

static bool edge_same(const struct fb_gateway *og, const struct fb_gateway *ng, const struct fb_model_map *map)
{
    if (og->ncalcs != ng->ncalcs || og->nalarms != ng->nalarms || og->nscripts != ng->nscripts ||
        og->alarm_opts.flood_events != ng->alarm_opts.flood_events ||
        og->alarm_opts.flood_window_ns != ng->alarm_opts.flood_window_ns ||
        og->alarm_opts.max_shelve_ns != ng->alarm_opts.max_shelve_ns)
        return false;
    for (uint32_t i = 0; i < og->ncalcs; i++) {
        const struct fb_calc *a = &og->calcs[i], *b = &ng->calcs[i];
        if (!str_eq(a->text, b->text) || a->period_ns != b->period_ns || a->quality != b->quality ||
            a->nin != b->nin || !edge_tag_same(og, a->tag, ng, b->tag, map))
            return false;
        for (uint32_t k = 0; k < a->nin; k++)
            if (!edge_tag_same(og, a->in[k], ng, b->in[k], map)) return false;
    }
    for (uint32_t i = 0; i < og->nalarms; i++) {
        const struct fb_alarm *a = &og->alarms[i], *b = &ng->alarms[i];
        if (map->alarm[i] != i || map_id(map->dev, map->ndevs, a->device) != b->device || a->kind != b->kind ||
            a->priority != b->priority || a->ne107 != b->ne107 || a->severity != b->severity ||
            !str_eq(a->name, b->name) || !str_eq(a->path, b->path) || !str_eq(a->message, b->message) ||
            !num_eq(a->limit, b->limit) || !num_eq(a->deadband, b->deadband) || !num_eq(a->when, b->when) ||
            a->on_delay_ns != b->on_delay_ns || a->off_delay_ns != b->off_delay_ns ||
            !str_eq(a->suppress_text, b->suppress_text) || a->nsup_in != b->nsup_in ||
            !edge_opt_tag_same(og, a->tag, ng, b->tag, map) ||
            !edge_opt_tag_same(og, a->setpoint, ng, b->setpoint, map))
            return false;
        for (uint32_t k = 0; k < a->nsup_in; k++)
            if (!edge_tag_same(og, a->sup_in[k], ng, b->sup_in[k], map)) return false;
    }
    for (uint32_t i = 0; i < og->nscripts; i++) {
        const struct fb_script *a = &og->scripts[i], *b = &ng->scripts[i];
        if (!str_eq(a->name, b->name) || !str_eq(a->file, b->file) || a->source_len != b->source_len ||
            (a->source_len && memcmp(a->source, b->source, a->source_len)) ||
            map_id(map->dev, map->ndevs, a->device) != b->device || a->ndevs != b->ndevs ||
            a->all_devices != b->all_devices || a->timer_ns != b->timer_ns ||
            a->max_instructions != b->max_instructions || a->max_time_ns != b->max_time_ns ||
            a->max_memory != b->max_memory || a->libs != b->libs || a->nout != b->nout ||
            a->first_alarm != b->first_alarm || a->nalarms != b->nalarms)
            return false;
        for (uint32_t k = 0; k < a->ndevs; k++)
            if (map_id(map->dev, map->ndevs, a->devices[k]) != b->devices[k]) return false;
        for (uint32_t k = 0; k < a->nout; k++)
            if (!edge_tag_same(og, a->outputs[k], ng, b->outputs[k], map)) return false;
    }
    /* the virtual devices (their online state is the edge's) */
    uint32_t nv_old = 0, nv_new = 0;
    for (uint32_t j = 0; j < ng->ndevs; j++) nv_new += !ng->devs[j].conn;
    for (uint32_t i = 0; i < og->ndevs; i++) {
        if (og->devs[i].conn) continue;
        nv_old++;
        uint32_t j = map->dev[i];
        if (j == NONE || ng->devs[j].conn) return false;
    }
    return nv_old == nv_new;
}

/* ----------------------------------------------------------------- plan */
enum { S_KEEP, S_RESTART, S_REMOVE };

struct plan {
    struct fb_model_map *map; /* old ids → new */
    uint32_t *ckeep;          /* per new connection: the old one it continues, NONE = start */
    bool *cstop;              /* per old connection: stop it */
    bool *dkept;              /* per new device: its connection continues */
    bool devices_same;        /* no device added, removed, changed or moved */
    bool identity;            /* gateway id or site changed: every sink's topics change */
    /* sinks: final slot p holds old sink slot_old[p] (kept in place) or new sink slot_new[p] */
    int *slot_old, *slot_new;
    int *sfate;   /* per old sink: S_KEEP / S_RESTART / S_REMOVE */
    int *sfrom;   /* per new sink: the old sink restarted into it, -1 = added, -2 = copy of a kept one */
    int *svcfrom; /* per new service: the old one kept, -1 = start */
    bool *svcstop;
    struct fb_sink_inst *oldc, *newc; /* scratch for the slot shuffle (sink kinds entries) */
    size_t nkinds;
    uint32_t on, onsvc; /* the old model's sinks and services */
    bool *sclosed;      /* per old sink: closed in step 2 */
    bool *squiesced;    /* per old service: quiesced in step 2 (it acts on the devices) */
    void **hblob;       /* per old service: what its handover carries (adopted in 5, or by undo) */
    int *hto;           /* per old service: the new service it handed over to, -1 = none */
    bool edge_stopped;  /* the edge thread was stopped in step 2 */
    bool edge_keep;     /* the edge thread goes on under the new model (edge_same) */
    bool edge_parked;   /* … and is parked (step 3) */
    struct fb_edge_next *edge_next; /* what it needs for the new model (step 1) */
    bool edge_old, edge_new;        /* the old model has a running edge thread, the new one any edge */
    bool vib_old, vib_new;          /* the old model has a running vibration analysis, the new one channels */
    bool vib_stopped;               /* its threads were stopped (step 3) */
    struct fb_vib_rt *vib_prev;     /* the old analysis, detached in 4, taken over and freed in 5 */
    void **svc_state;   /* the new services' states */
};

static void plan_free(struct plan *p)
{
    fb_model_map_free(p->map);
    free(p->ckeep);
    free(p->cstop);
    free(p->dkept);
    free(p->slot_old);
    free(p->slot_new);
    free(p->sfate);
    free(p->sfrom);
    free(p->svcfrom);
    free(p->svcstop);
    free(p->oldc);
    free(p->newc);
    free(p->sclosed);
    free(p->squiesced);
    free(p->hblob);
    free(p->hto);
    free(p->svc_state);
    fb_edge_next_free(p->edge_next);
    fb_vib_release(p->vib_prev);
}

static bool sink_hooks(const struct fb_sink *k) { return k->model_begin && k->model_end; }

static int plan_make(struct fb_gateway *gw, struct fb_gateway *nw, struct plan *p, struct fb_err *err)
{
    memset(p, 0, sizeof *p);
    fb_sinks(&p->nkinds);
    size_t cap = p->nkinds ? p->nkinds : 1;
    /* config.c sizes every model's sinks array for one instance of each kind; the shuffle relies on it */
    FB_ASSERT(gw->nsinks <= p->nkinds && nw->nsinks <= p->nkinds);
    p->map = fb_model_map_between(gw, nw);
    p->ckeep = calloc(nw->nconns + 1, sizeof *p->ckeep);
    p->cstop = calloc(gw->nconns + 1, sizeof *p->cstop);
    p->dkept = calloc(nw->ndevs + 1, sizeof *p->dkept);
    p->slot_old = calloc(cap, sizeof *p->slot_old);
    p->slot_new = calloc(cap, sizeof *p->slot_new);
    p->sfate = calloc(cap, sizeof *p->sfate);
    p->sfrom = calloc(cap, sizeof *p->sfrom);
    p->svcfrom = calloc(nw->nservices + 1, sizeof *p->svcfrom);
    p->svcstop = calloc(gw->nservices + 1, sizeof *p->svcstop);
    p->oldc = calloc(cap, sizeof *p->oldc);
    p->newc = calloc(cap, sizeof *p->newc);
    p->svc_state = calloc(nw->nservices + 1, sizeof *p->svc_state);
    p->sclosed = calloc(cap, sizeof *p->sclosed);
    p->squiesced = calloc(gw->nservices + 1, sizeof *p->squiesced);
    p->hblob = calloc(gw->nservices + 1, sizeof *p->hblob);
    p->hto = calloc(gw->nservices + 1, sizeof *p->hto);
    p->on = gw->nsinks;
    p->onsvc = gw->nservices;
    if (!p->sclosed || !p->squiesced || !p->hblob || !p->hto || !p->map || !p->ckeep || !p->cstop || !p->dkept ||
        !p->slot_old || !p->slot_new || !p->sfate || !p->sfrom || !p->svcfrom || !p->svcstop || !p->oldc || !p->newc ||
        !p->svc_state)
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    p->identity = !str_eq(gw->id, nw->id) || !str_eq(gw->site, nw->site);
    p->edge_old = gw->rt && gw->rt->edge;
    p->edge_new = nw->ncalcs || nw->nalarms || nw->nscripts;
    p->edge_keep = p->edge_old && p->edge_new && edge_same(gw, nw, p->map);
    p->vib_old = gw->rt && gw->rt->vib;
    p->vib_new = nw->vib && nw->vib->nch;

    /* devices and connections */
    p->devices_same = gw->ndevs == nw->ndevs && gw->ntags == nw->ntags;
    for (uint32_t i = 0; i < gw->ndevs && p->devices_same; i++)
        p->devices_same = p->map->dev[i] == i && fb_reload_dev_same(gw, &gw->devs[i], nw, &nw->devs[i]) &&
                          str_eq(gw->devs[i].area, nw->devs[i].area) && str_eq(gw->devs[i].line, nw->devs[i].line);
    for (uint32_t i = 0; i < gw->ntags && p->devices_same; i++)
        p->devices_same = p->map->tag[i] == i && str_eq(fb_tag_unit(&gw->tags[i]), fb_tag_unit(&nw->tags[i])) &&
                          proc_same(fb_tproc(&gw->tags[i]), fb_tproc(&nw->tags[i]));
    for (uint32_t i = 0; i < gw->nconns; i++) p->cstop[i] = true;
    for (uint32_t j = 0; j < nw->nconns; j++) {
        const struct fb_conn *nc = &nw->conns[j];
        p->ckeep[j] = NONE;
        for (uint32_t i = 0; i < gw->nconns; i++) {
            const struct fb_conn *oc = &gw->conns[i];
            if (!p->cstop[i] || !str_eq(oc->key, nc->key) || oc->ndevs != nc->ndevs || oc->drv != nc->drv ||
                !nc->drv->adopt || !oc->rt || !oc->rt->started)
                continue;
            bool same = true;
            for (uint32_t k = 0; k < oc->ndevs && same; k++)
                same = fb_reload_dev_same(gw, oc->devs[k], nw, nc->devs[k]);
            if (!same) continue;
            p->ckeep[j] = i;
            p->cstop[i] = false;
            for (uint32_t k = 0; k < nc->ndevs; k++) p->dkept[nc->devs[k]->idx] = true;
            break;
        }
    }

    /* sinks: kept in place, restarted (its runtime state follows it), added, removed */
    for (size_t i = 0; i < cap; i++) p->slot_old[i] = p->slot_new[i] = -1;
    bool taken[64] = {false}; /* per new sink: spoken for */
    FB_ASSERT(nw->nsinks <= 64);
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        const struct fb_sink_inst *os = &gw->sinks[i];
        p->sfate[i] = S_REMOVE;
        for (uint32_t j = 0; j < nw->nsinks; j++) {
            const struct fb_sink_inst *ns = &nw->sinks[j];
            if (taken[j] || os->sink != ns->sink || !str_eq(os->name, ns->name)) continue;
            taken[j] = true;
            bool same = !p->identity && os->sink->cfg_equal && os->sink->cfg_equal(os->cfg, ns->cfg) &&
                        buffer_same(os->buffer, ns->buffer) && os->queue_len == ns->queue_len &&
                        (sink_hooks(os->sink) || p->devices_same) && i < nw->nsinks && os->rt && os->rt->started;
            if (same) {
                p->sfate[i] = S_KEEP;
                p->slot_old[i] = (int)i;
                p->sfrom[j] = -2;
            } else {
                p->sfate[i] = S_RESTART;
                p->sfrom[j] = (int)i;
            }
            break;
        }
    }
    uint32_t pos = 0;
    for (uint32_t j = 0; j < nw->nsinks; j++) {
        if (!taken[j]) p->sfrom[j] = -1;
        if (p->sfrom[j] == -2) continue;
        while (pos < nw->nsinks && p->slot_old[pos] >= 0) pos++;
        FB_ASSERT(pos < nw->nsinks);
        p->slot_new[pos++] = (int)j;
    }

    /* services */
    for (uint32_t i = 0; i < gw->nservices; i++) {
        p->svcstop[i] = true;
        p->hto[i] = -1;
    }
    for (uint32_t j = 0; j < nw->nservices; j++) {
        p->svcfrom[j] = -1;
        const struct fb_service_inst *ns = &nw->services[j];
        for (uint32_t i = 0; i < gw->nservices; i++) {
            const struct fb_service_inst *os = &gw->services[i];
            /* a service that acts on the devices (quiesce: the control loops) holds tag ids, latest-value
             * slots of the pipeline state and write requests of connections: it always restarts */
            if (!p->svcstop[i] || os->svc != ns->svc || os->svc->quiesce || !os->svc->cfg_equal ||
                !os->svc->cfg_equal(os->cfg, ns->cfg))
                continue;
            p->svcfrom[j] = (int)i;
            p->svcstop[i] = false;
            break;
        }
    }
    return 0;
}

/* --------------------------------------------------------------- report */
struct report {
    struct fb_buf *b;
    bool first;
};

static void rep_list_begin(struct report *r, const char *key)
{
    if (!r->b) return;
    fb_buf_printf(r->b, "%s\"%s\":[", r->first ? "" : ",", key);
    r->first = true;
}

static void rep_item(struct report *r, const char *name)
{
    if (!r->b) return;
    if (!r->first) fb_buf_putc(r->b, ',');
    r->first = false;
    fb_json_cstr(r->b, name ? name : "");
}

static void rep_list_end(struct report *r)
{
    if (!r->b) return;
    fb_buf_putc(r->b, ']');
    r->first = false;
}

/* The vibration analysis (absent when neither model has channels): its
 * threads always restart; its channels by waveform tag path — added,
 * removed, changed (other analysis settings) or unchanged — and the
 * channels present before whose anomaly baseline is learnt again (their
 * analysis changed what the baseline depends on, or it is new to them). */
static const struct fb_vib_chan *vib_find(const struct fb_gateway *g, const char *path)
{
    for (uint32_t i = 0; g->vib && i < g->vib->nch; i++)
        if (!strcmp(fb_tag_path(g, &g->tags[g->vib->ch[i].tag]), path)) return &g->vib->ch[i];
    return NULL;
}

static void report_vib(struct fb_buf *b, struct fb_gateway *gw, struct fb_gateway *nw, const struct plan *p)
{
    if (!p->vib_old && !p->vib_new) return;
    struct report r = {b, true};
    const char *what = p->vib_new ? (p->vib_old ? "restarted" : "started") : "stopped";
    fb_buf_printf(b, ",\"vibration\":{\"analysis\":\"%s\"", what);
    r.first = false;
    uint32_t on = p->vib_old ? gw->vib->nch : 0, nn = p->vib_new ? nw->vib->nch : 0;
    char path[256];
    rep_list_begin(&r, "added");
    for (uint32_t j = 0; j < nn; j++) {
        snprintf(path, sizeof path, "%s", fb_tag_path(nw, &nw->tags[nw->vib->ch[j].tag]));
        if (!p->vib_old || !vib_find(gw, path)) rep_item(&r, path);
    }
    rep_list_end(&r);
    rep_list_begin(&r, "removed");
    for (uint32_t i = 0; i < on; i++) {
        snprintf(path, sizeof path, "%s", fb_tag_path(gw, &gw->tags[gw->vib->ch[i].tag]));
        if (!p->vib_new || !vib_find(nw, path)) rep_item(&r, path);
    }
    rep_list_end(&r);
    for (int pass = 0; pass < 3; pass++) {
        rep_list_begin(&r, pass == 0 ? "changed" : pass == 1 ? "unchanged" : "relearning");
        for (uint32_t j = 0; j < nn && p->vib_old; j++) {
            const struct fb_vib_chan *c = &nw->vib->ch[j];
            snprintf(path, sizeof path, "%s", fb_tag_path(nw, &nw->tags[c->tag]));
            const struct fb_vib_chan *o = vib_find(gw, path);
            if (!o) continue;
            bool same = fb_vib_chan_same(o, c);
            if ((pass == 0 && !same) || (pass == 1 && same) ||
                (pass == 2 && c->anomaly && !fb_vib_baseline_carries(gw, o, nw, c)))
                rep_item(&r, path);
        }
        rep_list_end(&r);
    }
    fb_buf_putc(b, '}');
}

static void report_plan(struct fb_buf *b, struct fb_gateway *gw, struct fb_gateway *nw, const struct plan *p)
{
    if (!b) return;
    struct report r = {b, true};
    fb_buf_puts(b, "{\"devices\":{");
    rep_list_begin(&r, "added");
    for (uint32_t j = 0; j < nw->ndevs; j++)
        if (!fb_gw_device(gw, nw->devs[j].name)) rep_item(&r, nw->devs[j].name);
    rep_list_end(&r);
    rep_list_begin(&r, "removed");
    for (uint32_t i = 0; i < gw->ndevs; i++)
        if (p->map->dev[i] == NONE) rep_item(&r, gw->devs[i].name);
    rep_list_end(&r);
    rep_list_begin(&r, "changed");
    uint32_t kept = 0;
    for (uint32_t j = 0; j < nw->ndevs; j++) {
        if (p->dkept[j])
            kept++;
        else if (fb_gw_device(gw, nw->devs[j].name))
            rep_item(&r, nw->devs[j].name);
    }
    rep_list_end(&r);
    fb_buf_printf(b, ",\"kept\":%u},\"sinks\":{", kept);
    r.first = true;
    rep_list_begin(&r, "added");
    for (uint32_t j = 0; j < nw->nsinks; j++)
        if (p->sfrom[j] == -1) rep_item(&r, nw->sinks[j].name);
    rep_list_end(&r);
    rep_list_begin(&r, "removed");
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (p->sfate[i] == S_REMOVE) rep_item(&r, gw->sinks[i].name);
    rep_list_end(&r);
    rep_list_begin(&r, "restarted");
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (p->sfate[i] == S_RESTART) rep_item(&r, gw->sinks[i].name);
    rep_list_end(&r);
    rep_list_begin(&r, "kept");
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (p->sfate[i] == S_KEEP) rep_item(&r, gw->sinks[i].name);
    rep_list_end(&r);
    fb_buf_puts(b, "},\"services\":{");
    r.first = true;
    rep_list_begin(&r, "restarted");
    for (uint32_t j = 0; j < nw->nservices; j++)
        if (p->svcfrom[j] < 0) rep_item(&r, nw->services[j].svc->name);
    rep_list_end(&r);
    rep_list_begin(&r, "kept");
    for (uint32_t j = 0; j < nw->nservices; j++)
        if (p->svcfrom[j] >= 0) rep_item(&r, nw->services[j].svc->name);
    rep_list_end(&r);
    fb_buf_puts(b, "}");
    /* the edge thread (computed tags, alarms, scripts): absent when neither model has one */
    if (p->edge_keep)
        fb_buf_puts(b, ",\"edge\":\"kept\"");
    else if (p->edge_new)
        fb_buf_puts(b, p->edge_old ? ",\"edge\":\"restarted\"" : ",\"edge\":\"started\"");
    else if (p->edge_old)
        fb_buf_puts(b, ",\"edge\":\"stopped\"");
    report_vib(b, gw, nw, p);
}

/* ------------------------------------------------------- running state */
/* A device's live counters follow it by name; a changed device's tag
 * counters are recounted from the pipeline state it keeps. */
static void dev_counters_copy(struct fb_device *to, const struct fb_device *from)
{
    struct fb_dev_metrics *a = &to->m;
    const struct fb_dev_metrics *b = &from->m;
    atomic_store(&a->requests, atomic_load(&b->requests));
    atomic_store(&a->errors, atomic_load(&b->errors));
    atomic_store(&a->timeouts, atomic_load(&b->timeouts));
    atomic_store(&a->reconnects, atomic_load(&b->reconnects));
    atomic_store(&a->writes, atomic_load(&b->writes));
    atomic_store(&a->write_errors, atomic_load(&b->write_errors));
    atomic_store(&a->rtt_ns_sum, atomic_load(&b->rtt_ns_sum));
    atomic_store(&a->rtt_ns_last, atomic_load(&b->rtt_ns_last));
    atomic_store(&a->rtt_count, atomic_load(&b->rtt_count));
    atomic_store(&a->last_success_ns, atomic_load(&b->last_success_ns));
}

static void sink_counters_copy(struct fb_sink_inst *to, const struct fb_sink_inst *from)
{
    atomic_store(&to->m.queued, atomic_load(&from->m.queued));
    atomic_store(&to->m.sent, atomic_load(&from->m.sent));
    atomic_store(&to->m.dropped, atomic_load(&from->m.dropped));
    atomic_store(&to->m.retries, atomic_load(&from->m.retries));
    atomic_store(&to->m.errors, atomic_load(&from->m.errors));
    atomic_store(&to->m.connected, 0);
}

/* The records still in s's store were made under the old config: remember
 * how its ids translate (every earlier translation is carried one step on). */
static void sink_fp_advance(struct fb_sink_inst *s, const struct fb_model_map *map, uint32_t new_fp)
{
    struct fb_sink_rt *q = s->rt;
    if (!q || !q->store || q->fp == new_fp) return;
    struct fb_store_stats st;
    fb_store_stats(q->store, &st);
    if (st.records == 0) { /* nothing of an earlier config is left (in flight included): forget them all */
        for (uint32_t i = 0; i < q->nfpmaps; i++) fb_model_map_free(q->fpmaps[i].map);
        q->nfpmaps = 0;
        fb_model_map_free(q->map);
        q->map = NULL;
        q->map_fp = 0;
        q->fp = new_fp;
        return;
    }
    uint32_t n = 0;
    struct fb_fp_map *m = realloc(q->fpmaps, (q->nfpmaps + 1) * sizeof *m);
    if (!m) {
        fb_warn(NULL, NULL, "%s: out of memory: records of the previous config will be dropped", s->name);
        q->fp = new_fp;
        return;
    }
    q->fpmaps = m;
    for (uint32_t i = 0; i < q->nfpmaps; i++) {
        struct fb_model_map *c = fb_model_map_compose(m[i].map, map);
        fb_model_map_free(m[i].map);
        if (c) m[n++] = (struct fb_fp_map){m[i].fp, c};
    }
    struct fb_model_map *own = fb_model_map_compose(map, map); /* a copy sized for the old model */
    if (own) {
        memcpy(own->dev, map->dev, map->ndevs * sizeof *own->dev);
        memcpy(own->tag, map->tag, map->ntags * sizeof *own->tag);
        if (map->nalarms) memcpy(own->alarm, map->alarm, map->nalarms * sizeof *own->alarm);
        m[n++] = (struct fb_fp_map){q->fp, own};
    }
    q->nfpmaps = n;
    fb_model_map_free(q->map); /* a file-based translation may name the ids of the old config */
    q->map = NULL;
    q->map_fp = 0;
    q->fp = new_fp;
}

/* Step 4: the swap, with every thread of the runtime parked. */
static void swap_models(struct fb_gateway *gw, struct fb_gateway *nw, struct plan *p, struct fb_proc *proc,
                        struct fb_batch_pool *pool)
{
    struct fb_rt *rt = gw->rt;
    struct fb_gateway tmp;
    memcpy(&tmp, gw, sizeof tmp);
    memcpy(gw, nw, sizeof tmp);
    memcpy(nw, &tmp, sizeof tmp);
    gw->rt = rt;
    nw->rt = NULL;
    struct fb_gateway *cur = gw, *old = nw; /* from here on */

    /* devices and connections */
    for (uint32_t i = 0; i < cur->ndevs; i++) {
        struct fb_device *d = &cur->devs[i];
        d->gw = cur;
        atomic_store(&d->state, FB_DEV_CONNECTING);
    }
    for (uint32_t i = 0; i < old->ndevs; i++) {
        old->devs[i].gw = old;
        uint32_t j = p->map->dev[i];
        if (j != NONE) dev_counters_copy(&cur->devs[j], &old->devs[i]);
    }
    for (uint32_t j = 0; j < cur->nconns; j++) {
        if (p->ckeep[j] == NONE) continue;
        struct fb_conn *cj = &cur->conns[j], *oi = &old->conns[p->ckeep[j]];
        cj->rt = oi->rt;
        oi->rt = NULL;
        cj->rt->conn = cj;
        cj->ctx = oi->ctx;
        oi->ctx = NULL;
        for (uint32_t k = 0; k < cj->ndevs; k++) {
            struct fb_device *dn = cj->devs[k], *dold = oi->devs[k];
            atomic_store(&dn->state, atomic_load(&dold->state));
            for (uint32_t g = 0; g < dn->ngroups; g++) {
                dn->groups[g].rt = dold->groups[g].rt;
                dold->groups[g].rt = NULL;
            }
        }
        cj->drv->adopt(cj, oi);
    }

    /* pipeline: tags with the same settings keep their state */
    struct fb_proc *oldproc = rt->proc;
    fb_proc_set_model(proc, cur);
    for (uint32_t i = 0; i < old->ntags; i++) {
        uint32_t j = p->map->tag[i];
        if (j == NONE) continue;
        const struct fb_tag *a = &old->tags[i], *b = &cur->tags[j];
        const struct fb_device *da = &old->devs[a->device], *db = &cur->devs[b->device];
        /* a computed tag is in no poll group (its state is the edge thread's: moved too) */
        int64_t pa = a->group < da->ngroups ? da->groups[a->group].period_ns : -1;
        int64_t pb = b->group < db->ngroups ? db->groups[b->group].period_ns : -1;
        if (a->type == b->type && proc_same(fb_tproc(a), fb_tproc(b)) && pa == pb) fb_proc_move(proc, j, oldproc, i);
    }
    rt->proc = proc;
    for (uint32_t j = 0; j < cur->ndevs; j++) {
        uint32_t oos, bad;
        fb_proc_quality_counts(proc, cur->devs[j].first_tag, cur->devs[j].ntags, &oos, &bad);
        atomic_store(&cur->devs[j].m.tags_out_of_spec, oos);
        atomic_store(&cur->devs[j].m.tags_bad, bad);
    }
    fb_proc_free(oldproc);
    if (pool) {
        struct fb_batch_pool **r = realloc(rt->retired, (rt->nretired + 1) * sizeof *r);
        if (r) {
            rt->retired = r;
            rt->retired[rt->nretired++] = rt->out_pool;
        } else {
            fb_batch_pool_free(rt->out_pool); /* every batch is back (all threads parked, queues empty) */
        }
        rt->out_pool = pool;
    }

    /* sinks: the running array stays (sinks hold pointers to their slot) */
    struct fb_sink_inst *L = old->sinks, *N = cur->sinks;
    uint32_t on = old->nsinks, nn = cur->nsinks;
    memcpy(p->oldc, L, on * sizeof *L);
    memcpy(p->newc, N, nn * sizeof *N);
    for (uint32_t pos = 0; pos < nn; pos++) {
        if (p->slot_old[pos] >= 0) continue; /* kept in place: L[pos] is itself */
        int j = p->slot_new[pos];
        memcpy(&L[pos], &p->newc[j], sizeof *L);
        int from = p->sfrom[j];
        if (from >= 0) { /* restarted: its runtime state (thread, queue, store) follows */
            L[pos].rt = p->oldc[from].rt;
            sink_counters_copy(&L[pos], &p->oldc[from]);
        }
        if (L[pos].rt) L[pos].rt->inst = &L[pos];
        L[pos].ctx = NULL;
    }
    uint32_t r = 0;
    for (uint32_t i = 0; i < on; i++)
        if (p->sfate[i] != S_KEEP) {
            memcpy(&N[r], &p->oldc[i], sizeof *N);
            N[r].rt = NULL; /* removed: stopped after the swap through the slot it moved to (below) */
            r++;
        }
    for (uint32_t j = 0; j < nn; j++)
        if (p->sfrom[j] == -2) memcpy(&N[r++], &p->newc[j], sizeof *N);
    FB_ASSERT(r == on);
    cur->sinks = L;
    cur->nsinks = nn;
    old->sinks = N;
    old->nsinks = r;
    for (uint32_t i = 0; i < nn; i++) L[i].gw = cur;
    for (uint32_t i = 0; i < r; i++) N[i].gw = old;

    /* services: a kept one keeps the config object its running state uses */
    for (uint32_t j = 0; j < cur->nservices; j++) {
        int from = p->svcfrom[j];
        if (from < 0) continue;
        void *c = cur->services[j].cfg;
        cur->services[j].cfg = old->services[from].cfg;
        old->services[from].cfg = c;
        p->svc_state[j] = rt->svc_state[from];
        rt->svc_state[from] = NULL;
    }
    void **st = rt->svc_state;
    rt->svc_state = p->svc_state; /* the stopped ones' states were stopped before */
    p->svc_state = st;

    /* what refers to devices by index: the status memory, queued commands */
    pthread_mutex_lock(&rt->status_mu);
    if (rt->seen) {
        struct fb_err_seen *seen = calloc(cur->ndevs ? cur->ndevs : 1, sizeof *seen);
        for (uint32_t i = 0; seen && i < rt->nseen && i < p->map->ndevs; i++)
            if (p->map->dev[i] != NONE) seen[p->map->dev[i]] = rt->seen[i];
        free(rt->seen);
        rt->seen = seen;
        rt->nseen = seen ? cur->ndevs : 0;
    }
    free(rt->drain); /* measured again from the next status on */
    rt->drain = NULL;
    rt->ndrain = 0;
    pthread_mutex_unlock(&rt->status_mu);
    fb_router_remap(cur, p->map->dev, p->map->ndevs);
    atomic_fetch_add(&rt->generation, 1);
}

/* ------------------------------------------------------------- undo */
/* Step 3 failed: the old model runs on.  Connections stopped in step 2 start
 * again, sinks closed in step 2 open again, everything parked moves on. */
static void undo(struct fb_gateway *gw, struct plan *p)
{
    struct fb_rt *rt = gw->rt;
    /* the control loops and the edge thread first: before any connection runs again */
    for (uint32_t i = 0; i < gw->nservices; i++) {
        if (!p->squiesced[i]) continue;
        const struct fb_service_inst *si = &gw->services[i];
        struct fb_err e = {0};
        si->svc->stop(rt->svc_state[i]);
        /* a handed-over state continues on the old configuration it came from */
        void *st = p->hblob[i] ? si->svc->adopt(gw, si->cfg, p->hblob[i], &e) : si->svc->start(gw, si->cfg, &e);
        p->hblob[i] = NULL;
        pthread_rwlock_wrlock(&rt->model_lock);
        rt->svc_state[i] = st;
        pthread_rwlock_unlock(&rt->model_lock);
        if (!st) fb_error(NULL, NULL, "reload undo: %s cannot start again: %s", si->svc->name, e.msg);
    }
    if (p->edge_stopped) {
        struct fb_err e = {0};
        fb_edge_free(gw);
        if (fb_edge_start(gw, fb_rt_state_dir(gw), &e) < 0) fb_error(NULL, NULL, "reload undo: edge: %s", e.msg);
    }
    if (p->edge_parked) fb_edge_unpark(gw);
    if (p->vib_stopped) { /* its threads ended: they start again, on the same state */
        struct fb_err e = {0};
        if (fb_vib_resume(gw, &e) < 0) fb_error(NULL, NULL, "reload undo: vibration: %s", e.msg);
    }
    for (uint32_t i = 0; i < gw->nconns; i++) {
        struct fb_conn *c = &gw->conns[i];
        if (c->rt && c->rt->started) {
            fb_rt_conn_unpark(c);
            continue;
        }
        struct fb_err e = {0};
        if (fb_rt_conn_start(gw, c, &e) < 0) fb_error(c->devs[0]->name, NULL, "reload undo: %s", e.msg);
    }
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_sink_inst *s = &gw->sinks[i];
        if (!s->rt) continue;
        if (p->sclosed[i]) {
            struct fb_err e = {0};
            fb_rt_sink_park(s, fb_mono_ns() + PARK_WAIT_NS);
            if (s->sink->open(s, &e) < 0)
                fb_error(NULL, NULL, "reload undo: %s: cannot open again: %s", s->name, e.msg);
            else
                fb_rt_sink_set_detached(s, false);
        }
        fb_rt_sink_unpark(s);
    }
}

static void rep_error(struct fb_buf *report, bool *any, const char *msg)
{
    if (report) {
        if (*any) fb_buf_putc(report, ',');
        fb_json_cstr(report, msg);
    }
    *any = true;
}

/* Start the new services that act on the devices (quiesce: true) or the
 * others; one an old service handed its state over to continues from it. */
static void start_services(struct fb_gateway *gw, struct plan *p, bool quiesce, struct fb_buf *report, bool *errors)
{
    struct fb_rt *rt = gw->rt;
    for (uint32_t j = 0; j < gw->nservices; j++) {
        const struct fb_service_inst *si = &gw->services[j];
        if (p->svcfrom[j] >= 0 || (si->svc->quiesce != NULL) != quiesce) continue;
        struct fb_err e = {0};
        void *blob = NULL;
        for (uint32_t i = 0; i < p->onsvc && !blob; i++)
            if (p->hto[i] == (int)j && p->hblob[i]) {
                blob = p->hblob[i];
                p->hblob[i] = NULL;
            }
        void *st = blob ? si->svc->adopt(gw, si->cfg, blob, &e) : si->svc->start(gw, si->cfg, &e);
        pthread_rwlock_wrlock(&rt->model_lock); /* status readers look at the states */
        rt->svc_state[j] = st;
        pthread_rwlock_unlock(&rt->model_lock);
        if (!st) {
            fb_error(NULL, NULL, "reload: %s cannot start: %s", si->svc->name, e.msg);
            rep_error(report, errors, e.msg);
        }
    }
}

static const char *stop_reason(const struct plan *p, const struct fb_conn *c)
{
    for (uint32_t k = 0; k < c->ndevs; k++)
        if (p->map->dev[c->devs[k]->idx] != NONE) return "the configuration changed";
    return "removed from the configuration";
}

/* ----------------------------------------------------------------- apply */
int fb_reload_apply(struct fb_gateway *gw, struct fb_gateway *nw, struct fb_buf *report, struct fb_err *err)
{
    struct fb_rt *rt = gw->rt;
    if (!rt || atomic_load(&rt->stop)) return fb_err_set(err, FB_ECLOSED, "the gateway is stopping");
    /* ingest (sources of named batches, docs/influxdb.md): its MQTT subscriptions and its acknowledgements
     * wait on the sinks' stores; a reload does not take them over — restarting is what applies a change */
    if (gw->nsources)
        return fb_err_set(err, FB_EINVAL,
                          "an ingest configuration is not reloaded: restart fieldbridge ingest to apply the change");
    if (nw->nsources)
        return fb_err_set(err, FB_EINVAL,
                          "the new configuration is an ingest configuration (ingest:): run it with fieldbridge ingest");
    struct plan p;
    struct fb_proc *proc = NULL;
    struct fb_batch_pool *pool = NULL;
    int rc = plan_make(gw, nw, &p, err);
    if (rc < 0) goto fail;

    /* 1. prepare what can fail */
    if (!(proc = fb_proc_new(nw))) {
        rc = fb_err_set(err, FB_ENOMEM, "cannot allocate the pipeline state");
        goto fail;
    }
    if (!fb_rt_out_pool_fits(gw, nw, proc) && !(pool = fb_rt_out_pool_new(nw, proc))) {
        rc = fb_err_set(err, FB_ENOMEM, "cannot allocate batches");
        goto fail;
    }
    for (uint32_t j = 0; j < nw->nsinks; j++) {
        struct fb_sink_inst *s = &nw->sinks[j];
        s->gw = gw;
        if (p.sfrom[j] == -1 && (rc = fb_rt_sink_prepare(nw, s, err)) < 0) goto fail;
    }
    if (p.edge_keep && !(p.edge_next = fb_edge_prepare(nw, p.map))) {
        rc = fb_err_set(err, FB_ENOMEM, "cannot allocate the edge state");
        goto fail;
    }
    uint32_t new_fp = fb_model_fingerprint(nw);
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_sink_rt *q = gw->sinks[i].rt;
        if (q && q->dir[0] && q->fp != new_fp && fb_model_save(nw, q->dir, new_fp) < 0)
            fb_warn(NULL, NULL, "%s: cannot save the tag names of the new config in %s", gw->sinks[i].name, q->dir);
    }

    /* 2. the services that act on the devices (control loops) stop acting and
     * write their safe values while every connection still runs — except for
     * what they hand over to their new configuration (loops that did not
     * change continue bumplessly: handover/adopt, model.h); the edge
     * thread (computed tags, alarms, scripts), unless it is kept, takes what
     * is queued and ends — both hold the old model's ids and start again on
     * the new one in 5 (a kept edge parks in 3 and moves to the new ids in 4);
     * then stop the connections that go or change (all asked at once), close
     * the sinks that restart or go (their threads keep storing) */
    for (uint32_t i = 0; i < gw->nservices; i++) {
        const struct fb_service *svc = gw->services[i].svc;
        if (!rt->svc_state || !rt->svc_state[i] || !svc->quiesce) continue;
        /* the new config has this service too: what it continues unchanged is handed over, not stopped */
        for (uint32_t j = 0; j < nw->nservices && p.hto[i] < 0 && svc->handover && svc->adopt; j++) {
            bool taken = false;
            for (uint32_t k = 0; k < i; k++) taken = taken || p.hto[k] == (int)j;
            if (nw->services[j].svc == svc && !taken) p.hto[i] = (int)j;
        }
        if (p.hto[i] >= 0)
            p.hblob[i] = svc->handover(rt->svc_state[i], nw->services[p.hto[i]].cfg, nw);
        else
            svc->quiesce(rt->svc_state[i]);
        p.squiesced[i] = true;
    }
    if (rt->edge && !p.edge_keep) {
        fb_edge_stop(gw);
        p.edge_stopped = true;
    }
    for (uint32_t i = 0; i < gw->nconns; i++) {
        struct fb_conn *c = &gw->conns[i];
        if (!p.cstop[i] || !c->rt || !c->rt->started) continue;
        snprintf(c->rt->stop_reason, sizeof c->rt->stop_reason, "%s", stop_reason(&p, c));
        pthread_mutex_lock(&c->rt->mu);
        atomic_store(&c->rt->stop, true);
        pthread_cond_broadcast(&c->rt->cv);
        pthread_mutex_unlock(&c->rt->mu);
    }
    for (uint32_t i = 0; i < gw->nconns; i++)
        if (p.cstop[i] && gw->conns[i].rt) fb_rt_conn_stop(gw, &gw->conns[i], NULL);
    /* a sink that closes may be the way queued commands are answered: answer them before */
    bool closing = false;
    for (uint32_t i = 0; i < gw->nsinks; i++) closing = closing || (p.sfate[i] != S_KEEP && gw->sinks[i].rt);
    if (closing) fb_router_refuse_queued(gw, "the configuration is being reloaded: send it again");
    for (uint32_t i = 0; i < gw->nsinks; i++) {
        struct fb_sink_inst *s = &gw->sinks[i];
        if (p.sfate[i] == S_KEEP || !s->rt) continue;
        if (!fb_rt_sink_park(s, fb_mono_ns() + PARK_WAIT_NS)) {
            rc = fb_err_set(err, FB_EAGAIN, "sink %s did not pause within %llds (its buffer is full?)", s->name,
                            PARK_WAIT_NS / 1000000000LL);
            goto undo;
        }
        fb_rt_sink_set_detached(s, true);
        fb_rt_sink_unpark(s);
        s->sink->close(s);                /* its session ends cleanly (offline status) */
        fb_router_drop_from(gw, s->name); /* what it submitted since: its answers' state is gone */
        p.sclosed[i] = true;
    }

    /* 3. park the kept connections, then every sink (queues emptied) */
    int64_t t_park = fb_mono_ns(), t_run = 0;
    int64_t deadline = t_park + PARK_WAIT_NS;
    for (uint32_t i = 0; i < gw->nconns; i++) {
        struct fb_conn *c = &gw->conns[i];
        if (p.cstop[i]) continue;
        if (!fb_rt_conn_park(c, deadline)) {
            rc = fb_err_set(err, FB_EAGAIN,
                            "device %s did not pause within %llds (a read hanging, or the sinks holding the "
                            "producers back)",
                            c->devs[0]->name, PARK_WAIT_NS / 1000000000LL);
            goto undo;
        }
    }
    /* the vibration analysis: nothing feeds it now; it analyses what is queued (its features go to the
     * edge thread and the sinks, still running) and saves the baselines.  It restarts on the new model in
     * 5 (its threads, channels and block pools are the old model's), taking over what it learnt. */
    if (p.vib_old) {
        fb_vib_stop(gw);
        p.vib_stopped = true;
    }
    /* a kept edge thread: its queue emptied (no connection feeds it now), what it computed published */
    if (p.edge_keep) {
        p.edge_parked = true;
        if (!fb_edge_park(gw, deadline)) {
            rc = fb_err_set(err, FB_EAGAIN, "the edge thread did not pause within %llds (a script running long?)",
                            PARK_WAIT_NS / 1000000000LL);
            goto undo;
        }
    }
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (gw->sinks[i].rt && !fb_rt_sink_park(&gw->sinks[i], deadline)) {
            rc = fb_err_set(err, FB_EAGAIN, "sink %s did not pause within %llds (its buffer is full?)",
                            gw->sinks[i].name, PARK_WAIT_NS / 1000000000LL);
            goto undo;
        }
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (p.sfate[i] == S_KEEP && gw->sinks[i].sink->model_begin) gw->sinks[i].sink->model_begin(&gw->sinks[i]);

    /* Lua writes still queued answer to their script (cmd->reply_ctx), which
     * goes with the old model whether the edge restarts or is kept (a kept
     * edge runs on the new model's scripts): dropped, logged, before the swap.
     * The edge thread is stopped or parked, so no script submits meanwhile. */
    fb_router_drop_from(gw, "lua");

    /* 4. swap, under the model lock */
    report_plan(report, gw, nw, &p);
    fb_certs_stop(gw); /* its thread reads the model's certificate list: it starts again on the new one */
    pthread_rwlock_wrlock(&rt->model_lock);
    if (p.edge_stopped) fb_edge_free(gw); /* its state is sized by the old model; the alarm table goes with it */
    p.vib_prev = fb_vib_detach(gw);       /* stopped in 3; freed in 5, after the new one took over */
    swap_models(gw, nw, &p, proc, pool);
    proc = NULL;
    pool = NULL;
    if (p.edge_keep) fb_edge_adopt(gw, nw, p.edge_next, p.map);
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (gw->sinks[i].rt) sink_fp_advance(&gw->sinks[i], p.map, new_fp);
    pthread_rwlock_unlock(&rt->model_lock);
    fb_certs_start(gw);

    /* 5. run: the kept sinks rebuild what they took from the model, the
     * connections go on or start, the sinks open and go on, services restart */
    bool errors = false;
    if (report) fb_buf_puts(report, ",\"errors\":[");
    /* the old services stop (a quiesced one has written its safe values), then
     * the control loops and the edge thread start on the new model before any
     * connection runs (the latest-value slots, the edge's queue) */
    for (uint32_t i = 0; i < p.onsvc; i++)
        if (p.svcstop[i] && p.svc_state[i]) nw->services[i].svc->stop(p.svc_state[i]);
    start_services(gw, &p, true, report, &errors);
    if (p.edge_keep) {
        fb_edge_unpark(gw);
    } else {
        struct fb_err e = {0};
        if (fb_edge_start(gw, fb_rt_state_dir(gw), &e) < 0) {
            fb_error(NULL, NULL, "reload: the edge thread cannot start: %s", e.msg);
            rep_error(report, &errors, e.msg);
        }
    }
    /* the vibration analysis: after the alarm table (its alarms), before any connection runs (its block
     * pools); the old one's pools are freed only now, every block back (its connections stopped or parked) */
    if (p.vib_new) {
        struct fb_err e = {0};
        if (fb_vib_restart(gw, fb_rt_state_dir(gw), p.vib_prev, &e) < 0) {
            fb_vib_free(gw);
            fb_error(NULL, NULL, "reload: the vibration analysis cannot start: %s", e.msg);
            rep_error(report, &errors, e.msg);
        }
    }
    fb_vib_release(p.vib_prev);
    p.vib_prev = NULL;
    for (uint32_t pos = 0; pos < gw->nsinks; pos++) {
        struct fb_sink_inst *s = &gw->sinks[pos];
        if (p.slot_old[pos] < 0) continue;
        if (s->sink->model_end) s->sink->model_end(s, p.map);
        struct fb_err e = {0};
        if (!fb_rt_sink_store_fits(gw, s) && fb_rt_sink_store_reopen(gw, s, &e) < 0)
            fb_error(NULL, NULL, "%s: %s", s->name, e.msg);
    }
    for (uint32_t j = 0; j < gw->nconns; j++) {
        struct fb_conn *c = &gw->conns[j];
        if (p.ckeep[j] != NONE) {
            fb_rt_conn_unpark(c);
            t_run = fb_mono_ns();
            continue;
        }
        struct fb_err e = {0};
        if (fb_rt_conn_start(gw, c, &e) < 0) {
            fb_error(c->devs[0]->name, NULL, "reload: cannot start: %s", e.msg);
            rep_error(report, &errors, e.msg);
        }
    }
    for (uint32_t i = 0; i < p.on; i++) { /* removed sinks: parked and detached, now stopped */
        struct fb_sink_inst *o = &p.oldc[i];
        if (p.sfate[i] != S_REMOVE || !o->rt) continue;
        o->rt->inst = o; /* the thread wakes on this copy of its slot, sees stop and ends */
        o->gw = gw;
        fb_rt_sink_stop(o);
    }
    for (uint32_t pos = 0; pos < gw->nsinks; pos++) {
        struct fb_sink_inst *s = &gw->sinks[pos];
        if (p.slot_old[pos] >= 0) {
            fb_rt_sink_unpark(s);
            continue;
        }
        struct fb_err e = {0};
        int from = p.sfrom[p.slot_new[pos]];
        if (from < 0) { /* added */
            if (fb_rt_sink_run(s, &e) < 0) {
                fb_error(NULL, NULL, "reload: %s cannot start: %s", s->name, e.msg);
                rep_error(report, &errors, e.msg);
            }
            continue;
        }
        /* restarted: its store stays unless the buffer settings changed */
        const struct fb_sink_inst *o = &p.oldc[from];
        if ((!buffer_same(o->buffer, s->buffer) || !fb_rt_sink_store_fits(gw, s)) &&
            fb_rt_sink_store_reopen(gw, s, &e) < 0) {
            fb_error(NULL, NULL, "%s: %s", s->name, e.msg);
            memset(&e, 0, sizeof e);
        }
        if (s->sink->open(s, &e) < 0) {
            fb_error(NULL, NULL, "reload: %s cannot open: %s (what arrives is kept in its buffer)", s->name, e.msg);
            rep_error(report, &errors, e.msg);
        } else {
            fb_rt_sink_set_detached(s, false);
        }
        fb_rt_sink_unpark(s);
    }
    start_services(gw, &p, false, report, &errors);
    if (report) fb_buf_puts(report, "]}");
    plan_free(&p);
    if (t_run) fb_info(NULL, NULL, "reload: the kept connections paused for %.1f ms", (double)(t_run - t_park) / 1e6);
    return 0;

undo:
    undo(gw, &p);
fail:
    for (uint32_t j = 0; p.sfrom && j < nw->nsinks; j++)
        if (p.sfrom[j] == -1 && nw->sinks[j].rt) fb_rt_sink_stop(&nw->sinks[j]);
    fb_proc_free(proc);
    fb_batch_pool_free(pool);
    plan_free(&p);
    return rc < 0 ? rc : FB_EINVAL;
}
