/* config.c — load the YAML configuration into a fully built gateway model.
 *
 * The loader walks the document with the schema written as code — one
 * function per section, each with a table of the keys it accepts — through
 * the config reader (cfg.h), which gives every section the same typed
 * values, ${ENV} expansion and `file:line:col: message` diagnostics.  This
 * file reads what belongs to the gateway as a whole (gateway, log,
 * status_interval, commands, buffer) and hands the rest on:
 *
 *   - each sink's section (its name is the key: `mqtt:`, `sparkplug:`) to
 *     that sink's cfg_load, found in the sink table (sinks.c); only the keys
 *     every sink shares, `buffer:` and `queue:`, are read here;
 *   - each service's section (`metrics:`) to that service's cfg_load;
 *   - each source's section (`ingest:`) to that source's cfg_load, likewise;
 *   - `devices:` to config_dev.c, which also binds devices to drivers.
 *
 * Errors never stop the walk: after all sections every message is printed in
 * file order.  Only a YAML syntax error ends the load early, as there is no
 * tree then.  Ownership: everything hangs off the gateway, and
 * fb_gateway_free (model.c) releases it, also a half-built one.
 */
#include "core/config.h"

#include <stdlib.h>
#include <string.h>

#include "core/certs.h"
#include "core/cfg.h"
#include "core/config_dev.h"
#include "core/config_tmpl.h"
#include "core/fleet_cfg.h"
#include "core/log.h"
#include "core/router.h"
#include "core/sinks.h"
#include "edge/edge_cfg.h"
#include "fleet/shadow.h"
#include "vib/vib_cfg.h"

struct ctx {
    struct fb_cfg *r;
    struct fb_gateway *gw;
};

static const char *const k_fixed[] = {
    "gateway", "log",   "status_interval", "stall_timeout", "commands", "security",  "buffer",
    "devices", "fleet", "version",         "alarms",        "scripts",  "vibration", NULL};
#define NFIXED (sizeof k_fixed / sizeof k_fixed[0] - 1)
/* the keys every sink's section takes besides its own */
static const char *const k_sink_common[] = {"buffer", "queue", NULL};
static const char *const k_gateway[] = {"id", "site", "model", "location", "labels", NULL};
static const char *const k_log[] = {"level", "format", NULL};
static const char *const k_commands[] = {"max_age", "allow_qos0", "timeout", "allow", "gateway", NULL};
static const char *const k_security[] = {"cert_warning", "cert_check", NULL};
static const char *const k_buffer[] = {"path", "max_size", "max_age", "sync", "full", "drain_rate", NULL};

/* ------------------------------------------------------------ buffer */
/* `buffer:` (store-and-forward, docs/store-and-forward.md).  `base` holds
 * the global settings a sink's own `buffer:` overrides key by key. */
static struct fb_buffer_cfg *load_buffer(struct ctx *c, struct fb_cfg_node *bn, const char *what,
                                         const struct fb_buffer_cfg *base)
{
    struct fb_cfg_map m = {0};
    if (!fb_cfg_map_load(c->r, bn, what, &m)) return NULL;
    fb_cfg_map_check(c->r, &m, k_buffer, what, false);
    struct fb_buffer_cfg *b = calloc(1, sizeof *b);
    if (!b) {
        fb_cfg_map_free(&m);
        return NULL;
    }
    if (base) {
        *b = *base;
        b->path = base->path ? strdup(base->path) : NULL;
    } else {
        b->max_bytes = 256ULL << 20;
        b->sync = 0;        /* FB_SYNC_BATCH */
        b->full_policy = 0; /* FB_FULL_DROP_OLDEST */
        b->drain_rate = 0;
    }
    char key[64];
    struct fb_cfg_node *n;
    if ((n = fb_cfg_get(&m, "path"))) {
        snprintf(key, sizeof key, "%s.path", what);
        char *v = fb_cfg_str(c->r, NULL, n, key);
        if (v) {
            free(b->path);
            b->path = fb_cfg_path(c->r, v);
            free(v);
        }
    }
    if ((n = fb_cfg_get(&m, "max_size"))) {
        snprintf(key, sizeof key, "%s.max_size", what);
        fb_cfg_size(c->r, n, key, 65536, &b->max_bytes);
    }
    if ((n = fb_cfg_get(&m, "max_age"))) {
        snprintf(key, sizeof key, "%s.max_age", what);
        fb_cfg_dur(c->r, NULL, n, key, false, &b->max_age_ns);
    }
    if ((n = fb_cfg_get(&m, "sync"))) {
        snprintf(key, sizeof key, "%s.sync", what);
        char *v = fb_cfg_str(c->r, NULL, n, key);
        int64_t d;
        if (!v) {
        } else if (!strcmp(v, "batch")) {
            b->sync = 0;
        } else if (!strcmp(v, "os")) {
            b->sync = 2;
        } else if (fb_parse_duration(v, &d) == 0 && d > 0) {
            b->sync = 1;
            b->sync_interval_ns = d;
        } else {
            fb_cfg_error(c->r, n, "%s: expected batch, os or an interval such as 100ms, got '%s'", key, v);
        }
        free(v);
    }
    if ((n = fb_cfg_get(&m, "full"))) {
        snprintf(key, sizeof key, "%s.full", what);
        char *v = fb_cfg_str(c->r, NULL, n, key);
        if (v && !strcmp(v, "drop_oldest"))
            b->full_policy = 0;
        else if (v && !strcmp(v, "block"))
            b->full_policy = 1;
        else if (v)
            fb_cfg_error(c->r, n, "%s: expected drop_oldest or block, got '%s'", key, v);
        free(v);
    }
    if ((n = fb_cfg_get(&m, "drain_rate"))) {
        long long r;
        snprintf(key, sizeof key, "%s.drain_rate", what);
        if (fb_cfg_int(c->r, NULL, n, key, 0, 10000000, &r)) b->drain_rate = (uint32_t)r;
    }
    if (!b->path) fb_cfg_error(c->r, bn, "%s.path is required (a directory for the on-disk queue)", what);
    fb_cfg_map_free(&m);
    return b;
}

static struct fb_buffer_cfg *buffer_copy(const struct fb_buffer_cfg *base)
{
    struct fb_buffer_cfg *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    *b = *base;
    b->path = base->path ? strdup(base->path) : NULL;
    return b;
}

/* ------------------------------------------------------------ gateway */
/* What the gateway says about itself in its status (docs/fleet.md): the
 * hardware model, where it is, and free-form labels. */
static void load_identity(struct ctx *c, const struct fb_cfg_map *m)
{
    struct fb_gateway *gw = c->gw;
    struct fb_cfg_node *n;
    if ((n = fb_cfg_get(m, "model"))) gw->hw_model = fb_cfg_str(c->r, NULL, n, "gateway.model");
    if ((n = fb_cfg_get(m, "location"))) gw->location = fb_cfg_str(c->r, NULL, n, "gateway.location");
    struct fb_cfg_map lm = {0};
    if ((n = fb_cfg_get(m, "labels")) && fb_cfg_map_load(c->r, n, "gateway.labels", &lm)) {
        gw->labels = calloc(lm.n ? (size_t)lm.n : 1, sizeof *gw->labels);
        for (int i = 0; gw->labels && i < lm.n; i++) {
            char what[96];
            snprintf(what, sizeof what, "gateway.labels.%.60s", lm.kv[i].key);
            char *v = fb_cfg_str(c->r, NULL, lm.kv[i].v, what);
            if (!v) continue;
            gw->labels[gw->nlabels].key = strdup(lm.kv[i].key);
            gw->labels[gw->nlabels++].value = v;
        }
        fb_cfg_map_free(&lm);
    }
}

static void load_gateway(struct ctx *c, const struct fb_cfg_map *top)
{
    struct fb_gateway *gw = c->gw;
    struct fb_cfg_node *g = fb_cfg_get(top, "gateway");
    struct fb_cfg_map m = {0};
    if (!g) {
        fb_cfg_error_at(c->r, (struct fb_cfg_mark){1, 1}, "missing 'gateway:' section (gateway: {id: …})");
    } else if (fb_cfg_map_load(c->r, g, "gateway", &m)) {
        fb_cfg_map_check(c->r, &m, k_gateway, "gateway", false);
        struct fb_cfg_node *n;
        if ((n = fb_cfg_get(&m, "id"))) {
            gw->id = fb_cfg_str(c->r, NULL, n, "gateway.id");
            if (gw->id && !fb_cfg_level_ok(gw->id)) {
                fb_cfg_error(c->r, n, "gateway.id '%s' must be non-empty and contain no '/', '+' or '#'", gw->id);
            }
        } else {
            fb_cfg_error(c->r, g, "gateway.id is required");
        }
        if ((n = fb_cfg_get(&m, "site"))) {
            gw->site = fb_cfg_str(c->r, NULL, n, "gateway.site");
            if (gw->site && !fb_cfg_level_ok(gw->site))
                fb_cfg_error(c->r, n, "gateway.site '%s' must be non-empty and contain no '/', '+' or '#'", gw->site);
        }
        load_identity(c, &m);
    }
    fb_cfg_map_free(&m);
    if (!gw->id) gw->id = strdup("");
    if (!gw->site) gw->site = strdup("site");

    gw->log_level = FB_LOG_INFO;
    gw->log_format = FB_LOG_TEXT;
    if ((g = fb_cfg_get(top, "log")) && fb_cfg_map_load(c->r, g, "log", &m)) {
        fb_cfg_map_check(c->r, &m, k_log, "log", false);
        struct fb_cfg_node *n;
        if ((n = fb_cfg_get(&m, "level"))) {
            char *s = fb_cfg_str(c->r, NULL, n, "log.level");
            if (s) {
                int l = fb_log_level_parse(s);
                if (l < 0)
                    fb_cfg_error(c->r, n, "log.level: unknown level '%s' (error, warn, info, debug)", s);
                else
                    gw->log_level = l;
            }
            free(s);
        }
        if ((n = fb_cfg_get(&m, "format"))) {
            char *s = fb_cfg_str(c->r, NULL, n, "log.format");
            if (s) {
                if (!strcmp(s, "text"))
                    gw->log_format = FB_LOG_TEXT;
                else if (!strcmp(s, "json"))
                    gw->log_format = FB_LOG_JSON;
                else
                    fb_cfg_error(c->r, n, "log.format: unknown format '%s' (text, json)", s);
            }
            free(s);
        }
        fb_cfg_map_free(&m);
    }

    gw->status_interval_ns = 30000000000LL;
    if ((g = fb_cfg_get(top, "status_interval")))
        fb_cfg_dur(c->r, NULL, g, "status_interval", true, &gw->status_interval_ns);
    /* how long a connection or sink thread may be busy in one step before the
     * gateway counts as wedged (systemd watchdog, /metrics; core/live.h) */
    gw->stall_timeout_ns = 60000000000LL;
    if ((g = fb_cfg_get(top, "stall_timeout"))) fb_cfg_dur(c->r, NULL, g, "stall_timeout", true, &gw->stall_timeout_ns);

    gw->cmd_timeout_ns = 5000000000LL;
    if ((g = fb_cfg_get(top, "commands")) && fb_cfg_map_load(c->r, g, "commands", &m)) {
        fb_cfg_map_check(c->r, &m, k_commands, "commands", false);
        struct fb_cfg_node *n;
        if ((n = fb_cfg_get(&m, "max_age"))) fb_cfg_dur(c->r, NULL, n, "commands.max_age", false, &gw->cmd_max_age_ns);
        if ((n = fb_cfg_get(&m, "allow_qos0"))) fb_cfg_bool(c->r, NULL, n, "commands.allow_qos0", &gw->cmd_allow_qos0);
        if ((n = fb_cfg_get(&m, "timeout"))) fb_cfg_dur(c->r, NULL, n, "commands.timeout", true, &gw->cmd_timeout_ns);
        if ((n = fb_cfg_get(&m, "allow"))) gw->cmd_allow = fb_config_acl(c->r, NULL, n, "commands.allow", gw);
        struct fb_cfg_map gm;
        if ((n = fb_cfg_get(&m, "gateway")) && fb_cfg_map_load(c->r, n, "commands.gateway", &gm)) {
            /* per gateway command, in the form of commands.allow (docs/security.md) */
            fb_cfg_map_check(c->r, &gm, fb_gw_cmd_names, "commands.gateway", false);
            for (int k = 0; k < FB_GW_CMDS; k++) {
                char what[64];
                snprintf(what, sizeof what, "commands.gateway.%s", fb_gw_cmd_names[k]);
                struct fb_cfg_node *x = fb_cfg_get(&gm, fb_gw_cmd_names[k]);
                if (x) gw->gw_cmd_allow[k] = fb_config_acl(c->r, NULL, x, what, gw);
            }
            fb_cfg_map_free(&gm);
        }
        fb_cfg_map_free(&m);
    }
    gw->cert_warn_ns = 30 * 86400000000000LL;
    gw->cert_check_ns = 3600000000000LL;
    if ((g = fb_cfg_get(top, "security")) && fb_cfg_map_load(c->r, g, "security", &m)) {
        fb_cfg_map_check(c->r, &m, k_security, "security", false);
        struct fb_cfg_node *n;
        if ((n = fb_cfg_get(&m, "cert_warning")))
            fb_cfg_dur(c->r, NULL, n, "security.cert_warning", false, &gw->cert_warn_ns);
        if ((n = fb_cfg_get(&m, "cert_check")) &&
            fb_cfg_dur(c->r, NULL, n, "security.cert_check", true, &gw->cert_check_ns) &&
            gw->cert_check_ns < 1000000000LL)
            fb_cfg_error(c->r, n, "security.cert_check must be at least 1s");
        fb_cfg_map_free(&m);
    }
    if ((g = fb_cfg_get(top, "buffer"))) gw->buffer = load_buffer(c, g, "buffer", NULL);
    if ((g = fb_cfg_get(top, "version"))) gw->cfg_version = fb_cfg_str(c->r, NULL, g, "version");
    gw->fleet = fb_fleet_cfg_load(c->r, fb_cfg_get(top, "fleet"));
    /* the provisioning service's certificate arrives over MQTT as a gateway
     * command: a sender list that keeps it out would leave the box unprovisioned */
    if (gw->fleet && gw->fleet->prov) {
        int k = 0;
        while (fb_gw_cmd_names[k] && strcmp(fb_gw_cmd_names[k], "provision")) k++;
        uint16_t lists[2] = {gw->cmd_allow, gw->gw_cmd_allow[k]};
        for (int i = 0; i < 2; i++)
            if (lists[i] && lists[i] <= gw->nacls && !fb_cmd_acl_allows(&gw->acls[lists[i] - 1], "mqtt", ""))
                fb_cfg_error(c->r, fb_cfg_get(top, "commands"),
                             "%s does not let mqtt in, but fleet.provisioning receives its certificate over MQTT "
                             "(add mqtt to it)",
                             i == 0 ? "commands.allow" : "commands.gateway.provision");
    }
}

/* fb_cfg_each_cert → the model's watch list. */
static void take_cert(void *ctx, const char *what, const char *path, int kind)
{
    fb_gw_cert_add(ctx, what, path, (enum fb_opt_kind)kind);
}

/* ------------------------------------------------------------ sinks */
/* Every top-level key that names a sink makes one instance of it.  The sink
 * reads its own keys; the keys all sinks share (`buffer:`, `queue:`) are read here. */
static void load_sinks(struct ctx *c, const struct fb_cfg_map *top)
{
    struct fb_gateway *gw = c->gw;
    size_t nsinks;
    const struct fb_sink *const *all = fb_sinks(&nsinks);
    gw->sinks = calloc(nsinks ? nsinks : 1, sizeof *gw->sinks);
    if (!gw->sinks) {
        fb_cfg_error_at(c->r, (struct fb_cfg_mark){0, 0}, "out of memory");
        return;
    }
    for (int i = 0; i < top->n; i++) {
        const struct fb_sink *sk = fb_sink_by_name(top->kv[i].key);
        struct fb_cfg_node *sn = top->kv[i].v;
        if (!sk || fb_cfg_is_null(sn)) continue;
        struct fb_cfg_map m = {0};
        if (!fb_cfg_map_load(c->r, sn, sk->name, &m)) continue;
        /* the sink's keys and the shared ones */
        const char *keys[64];
        size_t nk = 0;
        for (const char *const *k = sk->keys; k && *k && nk < 61; k++) keys[nk++] = *k;
        for (const char *const *k = k_sink_common; *k && !sk->live; k++) keys[nk++] = *k;
        keys[nk] = NULL;
        fb_cfg_map_check(c->r, &m, keys, sk->name, false);
        struct fb_sink_inst *s = &gw->sinks[gw->nsinks++];
        s->sink = sk;
        s->name = strdup(sk->name);
        s->gw = gw;
        char what[64];
        snprintf(what, sizeof what, "%s.buffer", sk->name);
        struct fb_cfg_node *bn = fb_cfg_get(&m, "buffer");
        if (bn && !sk->live)
            s->buffer = load_buffer(c, bn, what, gw->buffer);
        else if (gw->buffer && !sk->live) /* a live view has nothing to buffer */
            s->buffer = buffer_copy(gw->buffer);
        s->queue_len = 1024;
        struct fb_cfg_node *qn = fb_cfg_get(&m, "queue");
        long long v;
        snprintf(what, sizeof what, "%s.queue", sk->name);
        if (qn && fb_cfg_int(c->r, NULL, qn, what, 1, 1000000, &v)) s->queue_len = (uint32_t)v;
        /* queue: bounds the memory queue; a buffer is bounded by its max_size */
        if (qn && s->buffer)
            fb_cfg_note(c->r, qn, "%s has no effect with a buffer (its max_size bounds the queue)", what);
        s->cfg = sk->cfg_load(c->r, &m, gw);
        fb_cfg_map_free(&m);
    }
    if (gw->nsinks == 0) {
        char list[256];
        size_t off = 0;
        list[0] = 0;
        for (size_t i = 0; i < nsinks && off < sizeof list; i++)
            off += (size_t)snprintf(list + off, sizeof list - off, "%s%s:", i ? ", " : "", all[i]->name);
        fb_cfg_note(c->r, NULL, "no sink section (%s): values are polled but not published anywhere", list);
    }
}

/* Every top-level key that names a service makes it run. */
static void load_services(struct ctx *c, const struct fb_cfg_map *top)
{
    struct fb_gateway *gw = c->gw;
    size_t nsvc;
    fb_services(&nsvc);
    gw->services = calloc(nsvc ? nsvc : 1, sizeof *gw->services);
    if (!gw->services) {
        fb_cfg_error_at(c->r, (struct fb_cfg_mark){0, 0}, "out of memory");
        return;
    }
    for (int i = 0; i < top->n; i++) {
        const struct fb_service *sv = fb_service_by_name(top->kv[i].key);
        struct fb_cfg_node *sn = top->kv[i].v;
        if (!sv || fb_cfg_is_null(sn)) continue;
        struct fb_cfg_map m = {0};
        if (!fb_cfg_map_load(c->r, sn, sv->name, &m)) continue;
        fb_cfg_map_check(c->r, &m, sv->keys, sv->name, false);
        struct fb_service_inst *si = &gw->services[gw->nservices++];
        si->svc = sv;
        si->cfg = sv->cfg_load(c->r, &m, gw);
        fb_cfg_map_free(&m);
    }
}

/* ------------------------------------------------------------ sources */
/* Every top-level key that names a source (`ingest:`) makes one instance. */
static void load_sources(struct ctx *c, const struct fb_cfg_map *top)
{
    struct fb_gateway *gw = c->gw;
    size_t nsrc;
    fb_sources(&nsrc);
    gw->sources = calloc(nsrc ? nsrc : 1, sizeof *gw->sources);
    if (!gw->sources) return;
    for (int i = 0; i < top->n; i++) {
        const struct fb_source *sk = fb_source_by_name(top->kv[i].key);
        struct fb_cfg_node *sn = top->kv[i].v;
        if (!sk || fb_cfg_is_null(sn)) continue;
        struct fb_cfg_map m = {0};
        if (!fb_cfg_map_load(c->r, sn, sk->name, &m)) continue;
        fb_cfg_map_check(c->r, &m, sk->keys, sk->name, false);
        struct fb_source_inst *s = &gw->sources[gw->nsources++];
        s->src = sk;
        s->name = strdup(sk->name);
        s->gw = gw;
        s->cfg = sk->cfg_load(c->r, &m, gw);
        fb_cfg_map_free(&m);
        /* a source's batches are named: every sink must take them */
        for (uint32_t k = 0; k < gw->nsinks; k++)
            if (!gw->sinks[k].sink->named)
                fb_cfg_error(c->r, fb_cfg_key(top, gw->sinks[k].name),
                             "%s: cannot take what %s: receives (devices the config does not list); "
                             "an %s config writes to sinks such as influx:",
                             gw->sinks[k].name, sk->name, sk->name);
        if (!gw->nsinks) fb_cfg_error(c->r, top->kv[i].k, "%s: needs a sink to write to (e.g. influx:)", sk->name);
        /* the model's sections would be read by nobody: say so rather than ignore them */
        const char *model_keys[4 + 16] = {"devices", "alarms", "scripts", "vibration"};
        size_t nmk = 4;
        for (uint32_t k = 0; k < gw->nservices && nmk < 4 + 16; k++) /* services that act on devices (control:) */
            if (gw->services[k].svc->devices || gw->services[k].svc->bind)
                model_keys[nmk++] = gw->services[k].svc->name;
        for (size_t k = 0; k < nmk; k++)
            if (fb_cfg_get(top, model_keys[k]))
                fb_cfg_error(c->r, fb_cfg_key(top, model_keys[k]),
                             "%s: and %s: do not go together: run the gateway and the %s instance with "
                             "two configs (an %s instance is stateless, so several can share a fleet's traffic)",
                             model_keys[k], sk->name, sk->name, sk->name);
    }
}

/* ------------------------------------------------------------ the model */
/* Devices, tags, computed tags, alarms and scripts, and the devices the
 * services make (control loops); then the services resolve their names. */
static void load_model(struct ctx *c, const struct fb_cfg_map *top, struct fb_cfg_node *dn)
{
    struct fb_gateway *gw = c->gw;
    /* computed tags, alarms and scripts (src/edge): scripts first, tags name them */
    struct fb_edge_build *eb = fb_edge_build_new();
    fb_edge_cfg_alarms(c->r, fb_cfg_get(top, "alarms"), gw);
    if (eb) fb_edge_cfg_scripts(eb, c->r, fb_cfg_get(top, "scripts"));
    /* vibration monitoring (src/vib): waveform tags are read with the devices */
    fb_vib_cfg_section(c->r, fb_cfg_get(top, "vibration"), gw);
    /* devices the services' sections make (control loops), after the list's */
    const struct fb_dev_spec **made = NULL;
    size_t nmade = 0;
    for (uint32_t i = 0; i < gw->nservices; i++) {
        const struct fb_service_inst *si = &gw->services[i];
        const struct fb_dev_spec *specs = NULL;
        size_t n = si->svc->devices && si->cfg ? si->svc->devices(si->cfg, &specs) : 0;
        if (!n) continue;
        const struct fb_dev_spec **m2 = realloc(made, (nmade + n) * sizeof *m2);
        if (!m2) {
            fb_cfg_error_at(c->r, (struct fb_cfg_mark){0, 0}, "out of memory");
            break;
        }
        made = m2;
        for (size_t k = 0; k < n; k++) made[nmade++] = &specs[k];
    }
    fb_config_devices(c->r, dn, made, nmade, gw, eb);
    free(made);
    if (eb) fb_edge_cfg_finish(eb, c->r, gw);
    fb_edge_build_free(eb);
    fb_vib_cfg_finish(c->r, gw);                 /* the feature tags, before the services bind their tag names */
    for (uint32_t i = 0; i < gw->nservices; i++) /* the services' names of devices and tags */
        if (gw->services[i].svc->bind && gw->services[i].cfg) gw->services[i].svc->bind(c->r, gw->services[i].cfg, gw);
}

/* ------------------------------------------------------------ load */
static int load(struct fb_cfg *r, const char *path, struct fb_gateway **out);

int fb_config_load(const char *path, const struct fb_config_opts *o, struct fb_gateway **out)
{
    *out = NULL;
    struct fb_cfg *r = fb_cfg_open(path, o && o->strict, o ? o->diag : NULL);
    if (!r) return FB_EINVAL;
    if (o) fb_cfg_set_max_expand(r, o->max_expand);
    return load(r, path, out);
}

int fb_config_load_mem(const char *name, const char *text, size_t len, const struct fb_config_opts *o,
                       struct fb_gateway **out)
{
    *out = NULL;
    struct fb_cfg *r = fb_cfg_open_mem(name, text, len, o && o->strict, o ? o->diag : NULL);
    if (!r) return FB_EINVAL;
    if (o) fb_cfg_set_max_expand(r, o->max_expand);
    return load(r, name, out);
}

static int check_text(const char *name, const char *text, size_t len, bool strict, FILE *diag, FILE *summary)
{
    struct fb_config_opts o = {.strict = strict, .diag = diag};
    struct fb_gateway *gw = NULL;
    int rc = fb_config_load_mem(name, text, len, &o, &gw);
    if (rc == 0 && summary) fb_config_summary(gw, summary);
    fb_gateway_free(gw);
    return rc;
}

static int load(struct fb_cfg *r, const char *path, struct fb_gateway **out)
{
    struct fb_gateway *gw = calloc(1, sizeof *gw);
    if (!gw) {
        fb_cfg_finish(r);
        return FB_ENOMEM;
    }
    gw->cfg_path = strdup(path);
    gw->config_check = check_text;
    struct ctx c = {.r = r, .gw = gw};
    struct fb_cfg_node *root = fb_cfg_root(r);
    struct fb_cfg_map top = {0};
    if (!root || fb_cfg_is_null(root)) {
        fb_cfg_error_at(r, (struct fb_cfg_mark){1, 1}, "the config file is empty");
    } else if (fb_cfg_map_load(r, root, "the config file", &top)) {
        /* the fixed sections, then one per sink; x-… keys are free for YAML anchors */
        size_t nsinks, nsvc;
        const struct fb_sink *const *all = fb_sinks(&nsinks);
        const struct fb_service *const *svc = fb_services(&nsvc);
        const char *keys[NFIXED + 64];
        size_t nk = 0;
        for (size_t i = 0; i < NFIXED; i++) keys[nk++] = k_fixed[i];
        for (size_t i = 0; i < nsinks && nk < NFIXED + 31; i++) keys[nk++] = all[i]->name;
        for (size_t i = 0; i < nsvc && nk < NFIXED + 63; i++) keys[nk++] = svc[i]->name;
        size_t nsrc;
        const struct fb_source *const *srcs = fb_sources(&nsrc);
        for (size_t i = 0; i < nsrc && nk < NFIXED + 63; i++) keys[nk++] = srcs[i]->name;
        keys[nk] = NULL;
        fb_cfg_map_check(r, &top, keys, "the config file", true);
        load_gateway(&c, &top);
        load_sinks(&c, &top);
        load_services(&c, &top);
        load_sources(&c, &top);
        struct fb_cfg_node *dn = fb_cfg_get(&top, "devices");
        if (!dn && !gw->nsources) fb_cfg_note(r, NULL, "no devices: nothing to poll");
        fb_cfg_each_cert(r, take_cert, gw); /* the sinks', services' and sources' files first, in config order */
        if (!gw->nsources) {
            load_model(&c, &top, dn);
            fb_shadow_cfg_check(r, gw); /* the device shadow's tags exist (src/fleet/shadow.c) */
        }
    }
    fb_cfg_map_free(&top);
    if (fb_cfg_finish(r) > 0) {
        fb_gateway_free(gw);
        return FB_EINVAL;
    }
    *out = gw;
    return 0;
}

/* ------------------------------------------------------------ summary */
static void fmt_dur(char *buf, size_t len, int64_t ns)
{
    if (ns == 0)
        snprintf(buf, len, "0");
    else if (ns % 86400000000000LL == 0)
        snprintf(buf, len, "%lldd", (long long)(ns / 86400000000000LL));
    else if (ns % 3600000000000LL == 0)
        snprintf(buf, len, "%lldh", (long long)(ns / 3600000000000LL));
    else if (ns % 60000000000LL == 0)
        snprintf(buf, len, "%lldm", (long long)(ns / 60000000000LL));
    else if (ns % 1000000000LL == 0)
        snprintf(buf, len, "%llds", (long long)(ns / 1000000000LL));
    else if (ns % 1000000LL == 0)
        snprintf(buf, len, "%lldms", (long long)(ns / 1000000LL));
    else if (ns % 1000LL == 0)
        snprintf(buf, len, "%lldus", (long long)(ns / 1000LL));
    else
        snprintf(buf, len, "%lldns", (long long)ns);
}

void fb_config_summary(const struct fb_gateway *gw, FILE *f)
{
    uint32_t ngroups = 0;
    for (uint32_t i = 0; i < gw->ndevs; i++) ngroups += gw->devs[i].ngroups;
    static const char *const lv[] = {"error", "warn", "info", "debug"};
    char d1[32];
    fmt_dur(d1, sizeof d1, gw->status_interval_ns);
    fprintf(f, "gateway %s (site %s), log %s/%s, status every %s\n", gw->id, gw->site,
            gw->log_level >= 0 && gw->log_level < 4 ? lv[gw->log_level] : "?",
            gw->log_format == FB_LOG_JSON ? "json" : "text", d1);
    fprintf(f, "%u device%s, %u connection%s, %u tag%s, %u poll group%s, %u sink%s\n", gw->ndevs,
            gw->ndevs == 1 ? "" : "s", gw->nconns, gw->nconns == 1 ? "" : "s", gw->ntags, gw->ntags == 1 ? "" : "s",
            ngroups, ngroups == 1 ? "" : "s", gw->nsinks, gw->nsinks == 1 ? "" : "s");
    uint32_t nroles = 0;
    for (uint32_t i = 0; i < gw->ntags; i++) nroles += fb_tag_write_roles(&gw->tags[i]) != 0;
    if (gw->cmd_allow && gw->cmd_allow <= gw->nacls) {
        const struct fb_acl *a = &gw->acls[gw->cmd_allow - 1];
        fprintf(f, "commands accepted only from:");
        for (uint32_t k = 0; k < a->n; k++) fprintf(f, "%s %s", k ? "," : "", a->pat[k]);
        fprintf(f, "%s\n", a->n ? "" : " nobody (commands.allow: [])");
    }
    for (int k = 0; k < FB_GW_CMDS; k++) {
        uint16_t x = gw->gw_cmd_allow[k];
        if (!x || x > gw->nacls) continue;
        fprintf(f, "gateway command %s accepted only from:", fb_gw_cmd_names[k]);
        for (uint32_t i = 0; i < gw->acls[x - 1].n; i++) fprintf(f, "%s %s", i ? "," : "", gw->acls[x - 1].pat[i]);
        fprintf(f, "%s\n", gw->acls[x - 1].n ? "" : " nobody");
    }
    if (nroles) fprintf(f, "%u tag%s with write_roles\n", nroles, nroles == 1 ? "" : "s");
    for (uint32_t i = 0; i < gw->ndevs; i++) {
        const struct fb_device *d = &gw->devs[i];
        fprintf(f, "  device %s  %s  area %s line %s  %u tag%s  [%s]  groups:", d->name,
                d->url_text ? d->url_text : "(virtual)", d->area, d->line, d->ntags, d->ntags == 1 ? "" : "s",
                d->conn ? d->conn->key : "-");
        for (uint32_t g = 0; g < d->ngroups; g++) {
            fmt_dur(d1, sizeof d1, d->groups[g].period_ns);
            fprintf(f, " %s(%u)", d1, d->groups[g].ntags);
        }
        fputc('\n', f);
    }
    for (uint32_t s = 0; s < gw->nsources; s++) {
        const struct fb_source_inst *si = &gw->sources[s];
        if (si->src->describe && si->cfg)
            si->src->describe(si, f);
        else
            fprintf(f, "  source %s\n", si->name ? si->name : "?");
    }
    for (uint32_t s = 0; s < gw->nsinks; s++) {
        const struct fb_sink_inst *si = &gw->sinks[s];
        if (si->sink->describe && si->cfg)
            si->sink->describe(si, f);
        else
            fprintf(f, "  sink %s\n", si->name ? si->name : "?");
        if (si->buffer) {
            const struct fb_buffer_cfg *b = si->buffer;
            static const char *const sy[] = {"batch", "interval", "os"};
            fmt_dur(d1, sizeof d1, b->max_age_ns);
            fprintf(f, "    buffer %s/%s  max %.1f MiB  max age %s  sync %s  when full %s  drain %u msg/s%s\n", b->path,
                    si->name, b->max_bytes / 1048576.0, b->max_age_ns ? d1 : "unlimited", sy[b->sync % 3],
                    b->full_policy ? "block" : "drop oldest", b->drain_rate, b->drain_rate ? "" : " (unlimited)");
        } else if (!si->sink->live) {
            fprintf(f, "    no buffer: messages that cannot be delivered are dropped and counted\n");
        }
    }
    fb_edge_describe(gw, f);
    fb_vib_describe(gw, f);
    for (uint32_t i = 0; i < gw->nservices; i++) {
        const struct fb_service_inst *si = &gw->services[i];
        if (si->svc->describe && si->cfg)
            si->svc->describe(si, f);
        else
            fprintf(f, "  %s\n", si->svc->name);
    }
    const struct fb_fleet_cfg *fl = gw->fleet;
    if (gw->cfg_version || gw->hw_model || gw->location || gw->nlabels ||
        (fl && (fl->state_dir || fl->remote_config))) {
        fprintf(f, "  fleet: version %s, model %s, location %s, %u label%s; state in %s; remote configuration %s",
                gw->cfg_version ? gw->cfg_version : "-", gw->hw_model ? gw->hw_model : "-",
                gw->location ? gw->location : "-", gw->nlabels, gw->nlabels == 1 ? "" : "s",
                fl && fl->state_dir ? fl->state_dir : "memory only", fl && fl->remote_config ? "on" : "off");
        if (fl && fl->remote_config) {
            fmt_dur(d1, sizeof d1, fl->health_check_ns);
            fprintf(f, " (health check %s)", d1);
        }
        fputc('\n', f);
    }
    fb_certs_describe(gw, f);
}

/* ------------------------------------------------------------ key tables */
size_t fb_config_key_tables(struct fb_config_keys *out, size_t max)
{
    const struct fb_config_keys own[] = {{"top", k_fixed},         {"gateway", k_gateway},   {"log", k_log},
                                         {"commands", k_commands}, {"security", k_security}, {"buffer", k_buffer}};
    size_t n = 0;
    for (size_t i = 0; i < sizeof own / sizeof own[0] && n < max; i++) out[n++] = own[i];
    size_t nsinks;
    const struct fb_sink *const *all = fb_sinks(&nsinks);
    for (size_t i = 0; i < nsinks; i++) {
        if (n < max) out[n++] = (struct fb_config_keys){all[i]->name, all[i]->keys};
        if (n < max && !all[i]->live) out[n++] = (struct fb_config_keys){all[i]->name, k_sink_common};
        for (const struct fb_config_keys *k = all[i]->nested; k && k->section && n < max; k++) out[n++] = *k;
    }
    size_t nsvc;
    const struct fb_service *const *svc = fb_services(&nsvc);
    for (size_t i = 0; i < nsvc; i++) {
        if (n < max) out[n++] = (struct fb_config_keys){svc[i]->name, svc[i]->keys};
        for (const struct fb_config_keys *k = svc[i]->nested; k && k->section && n < max; k++) out[n++] = *k;
    }
    n += fb_fleet_cfg_key_tables(out + n, max - n);
    n += fb_edge_key_tables(out + n, max - n);
    n += fb_vib_key_tables(out + n, max - n);
    size_t nsrc;
    const struct fb_source *const *src = fb_sources(&nsrc);
    for (size_t i = 0; i < nsrc; i++) {
        if (n < max) out[n++] = (struct fb_config_keys){src[i]->name, src[i]->keys};
        for (const struct fb_config_keys *k = src[i]->nested; k && k->section && n < max; k++) out[n++] = *k;
    }
    return n + fb_config_dev_key_tables(out + n, max - n);
}
