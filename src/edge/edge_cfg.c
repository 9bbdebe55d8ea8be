/* edge_cfg.c — reading computed tags, alarms and scripts (edge_cfg.h).
 *
 * Step 1 (while config_dev.c builds the devices): a tag entry's `expr:`,
 * `script:`, `period:`, `quality:` and `alarms:` are read with the entry's
 * `for:` variables.  Alarms go into the model at once (fb_alarm_add: their
 * device and tag are known); what names other tags — an expression, a
 * deviation alarm's setpoint, a suppression condition, the script a tag
 * belongs to — is kept as text with its position.
 *
 * Step 2 (fb_edge_cfg_finish, after every device): names are resolved
 * (a bare name is a tag of the same device, 'device/tag' in quotes any
 * tag), expressions compiled, expression tags put in an order in which
 * every input is computed before it is used (a cycle is an error that
 * names it), scripts loaded and compiled (a syntax error is reported at
 * its `file:`), and script outputs and alarms bound to their script.
 */
#include "edge/edge_cfg.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config_tmpl.h"
#include "edge/alarm.h"
#include "edge/alarms.h"
#include "edge/expr.h"
#include "edge/script.h"

static const char *const k_alarms[] = {"flood", "max_shelve", NULL};
static const char *const k_flood[] = {"events", "window", NULL};
static const char *const k_alarm[] = {"limit",   "deadband", "on_delay", "off_delay", "priority", "severity",
                                      "message", "ne107",    "suppress", "setpoint",  "when",     NULL};
static const char *const k_script[] = {"name", "file",   "device",    "devices", "timer", "instructions",
                                       "time", "memory", "libraries", "alarms",  NULL};

#define MAX_SCRIPT_BYTES (1u << 20)

struct pend_calc {
    uint32_t tag;
    char *text;
    struct fb_cfg_mark m;
    int64_t period_ns;
    uint8_t quality;
};

struct pend_out {
    uint32_t tag;
    char *script;
    struct fb_cfg_mark m;
};

struct pend_alarm { /* what an alarm of a tag still has to check and resolve */
    uint32_t id;
    struct fb_cfg_mark m; /* its key (hi:, deviation:, …) */
    char *setpoint;
    struct fb_cfg_mark sp_m;
    char *suppress;
    struct fb_cfg_mark sup_m;
};

struct pend_script {
    struct fb_script s;
    char *device;
    struct fb_cfg_mark dev_m, m, file_m;
    char **devices;
    struct fb_cfg_mark *devices_m;
    uint32_t ndevices;
    /* alarms: name and settings, added to the model once the device is known */
    struct script_alarm {
        char *name;
        struct fb_cfg_mark m;
        struct fb_alarm a; /* settings only */
        char *suppress;
        struct fb_cfg_mark sup_m;
    } * alarms;
    uint32_t nalarms;
};

struct fb_edge_build {
    struct pend_calc *calcs;
    uint32_t ncalcs, cap_calcs;
    struct pend_out *outs;
    uint32_t nouts, cap_outs;
    struct pend_alarm *alarms;
    uint32_t nalarms, cap_alarms;
    struct pend_script *scripts;
    uint32_t nscripts;
};

/* Grow an array by doubling: *cap elements of size sz. */
static bool grow(void **p, uint32_t n, uint32_t *cap, size_t sz)
{
    if (n < *cap) return true;
    uint32_t nc = *cap ? *cap * 2 : 16;
    void *np = realloc(*p, (size_t)nc * sz);
    if (!np) return false;
    *p = np;
    *cap = nc;
    return true;
}

struct fb_edge_build *fb_edge_build_new(void) { return calloc(1, sizeof(struct fb_edge_build)); }

static void script_pend_free(struct pend_script *ps)
{
    free(ps->s.name);
    free(ps->s.file);
    free(ps->s.source);
    free(ps->s.devices);
    free(ps->s.outputs);
    free(ps->device);
    for (uint32_t i = 0; i < ps->ndevices; i++) free(ps->devices[i]);
    free(ps->devices);
    free(ps->devices_m);
    for (uint32_t i = 0; i < ps->nalarms; i++) {
        free(ps->alarms[i].name);
        free(ps->alarms[i].a.message);
        free(ps->alarms[i].suppress);
    }
    free(ps->alarms);
}

void fb_edge_build_free(struct fb_edge_build *b)
{
    if (!b) return;
    for (uint32_t i = 0; i < b->ncalcs; i++) free(b->calcs[i].text);
    free(b->calcs);
    for (uint32_t i = 0; i < b->nouts; i++) free(b->outs[i].script);
    free(b->outs);
    for (uint32_t i = 0; i < b->nalarms; i++) {
        free(b->alarms[i].setpoint);
        free(b->alarms[i].suppress);
    }
    free(b->alarms);
    for (uint32_t i = 0; i < b->nscripts; i++) script_pend_free(&b->scripts[i]);
    free(b->scripts);
    free(b);
}

/* ------------------------------------------------------------- tag keys */
int fb_edge_cfg_tag_src(struct fb_cfg *r, const struct fb_cfg_map *m)
{
    struct fb_cfg_node *e = fb_cfg_get(m, "expr"), *s = fb_cfg_get(m, "script");
    if (e && s) fb_cfg_error(r, fb_cfg_key(m, "script"), "a tag is computed by expr: or by script:, not both");
    if (!e) {
        if (fb_cfg_get(m, "period"))
            fb_cfg_error(r, fb_cfg_key(m, "period"), "period: is the evaluation period of an expr: tag");
        if (fb_cfg_get(m, "quality"))
            fb_cfg_error(r, fb_cfg_key(m, "quality"), "quality: is the quality rule of an expr: tag");
    }
    return e ? FB_TAG_EXPR : s ? FB_TAG_SCRIPT : FB_TAG_READ;
}

/* The settings every alarm takes (all kinds, also a script's); `what` names
 * the mapping in messages.  Returns false after an error. */
static void alarm_common(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_map *am, struct fb_alarm *a,
                         const char *what, char **suppress, struct fb_cfg_mark *sup_m)
{
    struct fb_cfg_node *n;
    char key[96];
    a->priority = a->kind == FB_AK_HIHI || a->kind == FB_AK_LOLO ? FB_AP_HIGH
                  : a->kind == FB_AK_BAD                         ? FB_AP_LOW
                                                                 : FB_AP_MEDIUM;
    a->ne107 = a->kind <= FB_AK_DEVIATION ? FB_NE107_OUT_OF_SPEC : FB_NE107_MAINTENANCE;
    if ((n = fb_cfg_get(am, "priority"))) {
        char *s = fb_cfg_str(r, vars, n, "priority");
        int p = fb_alarm_prio_parse(s);
        if (s && p < 0) fb_cfg_error(r, n, "%s.priority: expected low, medium, high or urgent, got '%s'", what, s);
        if (p >= 0) a->priority = (uint8_t)p;
        free(s);
    }
    a->severity = fb_alarm_prio_severity(a->priority);
    long long v;
    snprintf(key, sizeof key, "%s.severity", what);
    if ((n = fb_cfg_get(am, "severity")) && fb_cfg_int(r, vars, n, key, 1, 1000, &v)) a->severity = (uint16_t)v;
    if ((n = fb_cfg_get(am, "ne107"))) {
        char *s = fb_cfg_str(r, vars, n, "ne107");
        int c = fb_ne107_parse(s);
        if (s && c < 0)
            fb_cfg_error(r, n, "%s.ne107: expected maintenance, out_of_spec, check or failure, got '%s'", what, s);
        if (c >= 0) a->ne107 = (uint8_t)c;
        free(s);
    }
    if ((n = fb_cfg_get(am, "message"))) {
        a->message = fb_cfg_str(r, vars, n, "message");
        if (a->message && strlen(a->message) > 200) {
            fb_cfg_error(r, n, "%s.message: longer than 200 characters", what);
        }
    }
    snprintf(key, sizeof key, "%s.on_delay", what);
    if ((n = fb_cfg_get(am, "on_delay"))) fb_cfg_dur(r, vars, n, key, false, &a->on_delay_ns);
    snprintf(key, sizeof key, "%s.off_delay", what);
    if ((n = fb_cfg_get(am, "off_delay"))) fb_cfg_dur(r, vars, n, key, false, &a->off_delay_ns);
    if ((n = fb_cfg_get(am, "suppress"))) {
        *suppress = fb_cfg_str(r, vars, n, "suppress");
        *sup_m = fb_cfg_mark(n);
    }
}

/* One alarm of a tag: `hi: 85` or `hi: {limit: 85, …}`. */
static void tag_alarm(struct fb_edge_build *b, struct fb_cfg *r, const struct fb_tvars *vars, struct fb_gateway *gw,
                      uint32_t first, uint32_t n, const struct fb_cfg_kv *kv)
{
    int kind = fb_alarm_kind_parse(kv->key);
    if (kind < 0 || kind == FB_AK_EXTERNAL) {
        fb_cfg_error(r, kv->k, "unknown alarm '%s' (hihi, hi, lo, lolo, roc, deviation, digital, bad_quality)",
                     kv->key);
        return;
    }
    char what[80];
    snprintf(what, sizeof what, "alarms.%s", kv->key);
    struct fb_alarm set;
    memset(&set, 0, sizeof set);
    set.kind = (uint8_t)kind;
    set.when = 1;
    set.setpoint = UINT32_MAX;
    char *sp = NULL, *sup = NULL;
    struct fb_cfg_mark sp_m = {0, 0}, sup_m = {0, 0};
    bool has_limit = false;
    struct fb_cfg_map am = {0};
    bool limits = kind <= FB_AK_DEVIATION;
    if (fb_cfg_kind(kv->v) == FB_CFG_SCALAR) {
        /* shorthand: the limit (hi: 85), or on/off (digital: true, bad_quality: true) */
        if (limits) {
            has_limit = fb_cfg_num(r, vars, kv->v, what, &set.limit);
        } else if (kind == FB_AK_DIGITAL) {
            char *s = fb_cfg_str(r, vars, kv->v, what);
            if (s && (!strcmp(s, "true") || !strcmp(s, "false")))
                set.when = !strcmp(s, "true");
            else if (s)
                fb_cfg_num(r, vars, kv->v, what, &set.when);
            free(s);
        } else {
            bool on = true;
            if (fb_cfg_bool(r, vars, kv->v, what, &on) && !on) return;
        }
        alarm_common(r, vars, &am, &set, what, &sup, &sup_m);
    } else if (fb_cfg_map_load(r, kv->v, what, &am)) {
        fb_cfg_map_check(r, &am, k_alarm, what, false);
        struct fb_cfg_node *x;
        char key[96];
        if ((x = fb_cfg_get(&am, "limit"))) {
            snprintf(key, sizeof key, "%s.limit", what);
            if (!limits)
                fb_cfg_error(r, fb_cfg_key(&am, "limit"), "%s has no limit", what);
            else
                has_limit = fb_cfg_num(r, vars, x, key, &set.limit);
        }
        if ((x = fb_cfg_get(&am, "deadband"))) {
            snprintf(key, sizeof key, "%s.deadband", what);
            if (!limits)
                fb_cfg_error(r, fb_cfg_key(&am, "deadband"), "%s has no deadband (it has no limit)", what);
            else if (fb_cfg_num(r, vars, x, key, &set.deadband) && set.deadband < 0)
                fb_cfg_error(r, x, "%s must not be negative", key);
        }
        if ((x = fb_cfg_get(&am, "when"))) {
            snprintf(key, sizeof key, "%s.when", what);
            if (kind != FB_AK_DIGITAL) {
                fb_cfg_error(r, fb_cfg_key(&am, "when"), "when: belongs to a digital alarm");
            } else {
                char *s = fb_cfg_str(r, vars, x, key);
                if (s && (!strcmp(s, "true") || !strcmp(s, "false")))
                    set.when = !strcmp(s, "true");
                else if (s)
                    fb_cfg_num(r, vars, x, key, &set.when);
                free(s);
            }
        }
        if ((x = fb_cfg_get(&am, "setpoint"))) {
            if (kind != FB_AK_DEVIATION) {
                fb_cfg_error(r, fb_cfg_key(&am, "setpoint"), "setpoint: belongs to a deviation alarm");
            } else {
                sp = fb_cfg_str(r, vars, x, "setpoint");
                sp_m = fb_cfg_mark(x);
            }
        }
        alarm_common(r, vars, &am, &set, what, &sup, &sup_m);
    }
    fb_cfg_map_free(&am);
    if (limits && !has_limit) {
        if (fb_cfg_kind(kv->v) != FB_CFG_SCALAR)
            fb_cfg_error(r, kv->v, "%s: limit: is required (e.g. %s: {limit: 80})", what, kv->key);
        free(sp);
        free(sup);
        free(set.message);
        return;
    }
    if (kind == FB_AK_DEVIATION && !sp) {
        fb_cfg_error(r, kv->v, "%s: setpoint: is required (the tag to compare with)", what);
        free(sup);
        free(set.message);
        return;
    }
    if (kind == FB_AK_ROC && set.limit <= 0) fb_cfg_error(r, kv->v, "%s: the limit is a rate per second > 0", what);
    if (kind == FB_AK_DEVIATION && set.limit < 0) fb_cfg_error(r, kv->v, "%s: the limit must not be negative", what);
    for (uint32_t i = 0; i < n; i++) {
        const struct fb_tag *t = &gw->tags[first + i];
        char name[300];
        snprintf(name, sizeof name, "%s/%s", t->name, kv->key);
        uint32_t id = fb_alarm_add(gw, t->device, t->id, kind, name);
        if (id == UINT32_MAX) {
            fb_cfg_error(r, kv->k, "out of memory");
            break;
        }
        struct fb_alarm *a = &gw->alarms[id];
        a->limit = set.limit;
        a->deadband = set.deadband;
        a->when = set.when;
        a->on_delay_ns = set.on_delay_ns;
        a->off_delay_ns = set.off_delay_ns;
        a->priority = set.priority;
        a->severity = set.severity;
        a->ne107 = set.ne107;
        a->message = set.message ? strdup(set.message) : NULL;
        /* the tag's type is known once its driver parsed the address: checked at the end */
        if (grow((void **)&b->alarms, b->nalarms, &b->cap_alarms, sizeof *b->alarms)) {
            struct pend_alarm *pa = &b->alarms[b->nalarms++];
            memset(pa, 0, sizeof *pa);
            pa->id = id;
            pa->m = fb_cfg_mark(kv->k);
            pa->setpoint = sp ? strdup(sp) : NULL;
            pa->sp_m = sp_m;
            pa->suppress = sup ? strdup(sup) : NULL;
            pa->sup_m = sup_m;
        }
    }
    free(sp);
    free(sup);
    free(set.message);
}

void fb_edge_cfg_tag(struct fb_edge_build *b, struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_map *m,
                     struct fb_gateway *gw, uint32_t first, uint32_t n)
{
    if (!n) return;
    struct fb_cfg_node *x;
    if ((x = fb_cfg_get(m, "expr"))) {
        char *text = fb_cfg_str(r, vars, x, "expr");
        int64_t period = 0;
        struct fb_cfg_node *p = fb_cfg_get(m, "period");
        if (p) fb_cfg_dur(r, vars, p, "period", true, &period);
        int q = FB_CALCQ_WORST;
        static const char *const qn[] = {"worst", "last_usable", NULL};
        if ((p = fb_cfg_get(m, "quality"))) fb_cfg_enum(r, p, "quality", qn, &q);
        if (text && grow((void **)&b->calcs, b->ncalcs, &b->cap_calcs, sizeof *b->calcs)) {
            struct pend_calc *c = &b->calcs[b->ncalcs++];
            c->tag = first;
            c->text = text;
            c->m = fb_cfg_mark(x);
            c->period_ns = period;
            c->quality = (uint8_t)q;
        } else {
            free(text);
        }
    }
    if ((x = fb_cfg_get(m, "script"))) {
        char *name = fb_cfg_str(r, vars, x, "script");
        if (name && grow((void **)&b->outs, b->nouts, &b->cap_outs, sizeof *b->outs)) {
            struct pend_out *o = &b->outs[b->nouts++];
            o->tag = first;
            o->script = name;
            o->m = fb_cfg_mark(x);
        } else {
            free(name);
        }
    }
    if ((x = fb_cfg_get(m, "alarms"))) {
        struct fb_cfg_map am = {0};
        if (fb_cfg_map_load(r, x, "alarms", &am))
            for (int i = 0; i < am.n; i++) tag_alarm(b, r, vars, gw, first, n, &am.kv[i]);
        fb_cfg_map_free(&am);
    }
}

/* ------------------------------------------------------------ sections */
void fb_edge_cfg_alarms(struct fb_cfg *r, struct fb_cfg_node *n, struct fb_gateway *gw)
{
    struct fb_alarm_opts *o = &gw->alarm_opts;
    o->flood_events = 20;
    o->flood_window_ns = 10000000000LL;
    o->max_shelve_ns = 8LL * 3600 * 1000000000LL;
    struct fb_cfg_map m = {0};
    if (!n || !fb_cfg_map_load(r, n, "alarms", &m)) return;
    fb_cfg_map_check(r, &m, k_alarms, "alarms", false);
    struct fb_cfg_node *x;
    if ((x = fb_cfg_get(&m, "max_shelve"))) fb_cfg_dur(r, NULL, x, "alarms.max_shelve", true, &o->max_shelve_ns);
    struct fb_cfg_map f = {0};
    if ((x = fb_cfg_get(&m, "flood")) && fb_cfg_map_load(r, x, "alarms.flood", &f)) {
        fb_cfg_map_check(r, &f, k_flood, "alarms.flood", false);
        long long v;
        struct fb_cfg_node *y;
        if ((y = fb_cfg_get(&f, "events")) && fb_cfg_int(r, NULL, y, "alarms.flood.events", 0, 1000000, &v))
            o->flood_events = (uint32_t)v;
        if ((y = fb_cfg_get(&f, "window"))) fb_cfg_dur(r, NULL, y, "alarms.flood.window", true, &o->flood_window_ns);
        fb_cfg_map_free(&f);
    }
    fb_cfg_map_free(&m);
}

static void script_entry(struct fb_edge_build *b, struct fb_cfg *r, struct fb_cfg_node *en)
{
    struct fb_cfg_map m = {0};
    if (!fb_cfg_map_load(r, en, "script", &m)) return;
    fb_cfg_map_check(r, &m, k_script, "script", false);
    struct pend_script *nps = realloc(b->scripts, (b->nscripts + 1) * sizeof *nps);
    if (!nps) {
        fb_cfg_map_free(&m);
        return;
    }
    b->scripts = nps;
    struct pend_script *ps = &b->scripts[b->nscripts++];
    memset(ps, 0, sizeof *ps);
    struct fb_script *s = &ps->s;
    ps->m = fb_cfg_mark(en);
    s->device = UINT32_MAX;
    s->max_instructions = 1000000;
    s->max_time_ns = 100000000LL;
    s->max_memory = 8u << 20;
    struct fb_cfg_node *x;
    if (!(x = fb_cfg_get(&m, "name"))) {
        fb_cfg_error(r, en, "script: 'name' is required");
    } else if ((s->name = fb_cfg_str(r, NULL, x, "script name")) && !fb_cfg_name_ok(s->name)) {
        fb_cfg_error(r, x, "script name '%s' may only contain letters, digits, '_', '.' and '-'", s->name);
    }
    for (uint32_t i = 0; s->name && i + 1 < b->nscripts; i++)
        if (b->scripts[i].s.name && !strcmp(b->scripts[i].s.name, s->name))
            fb_cfg_error(r, x, "duplicate script name '%s' (first at line %d)", s->name, b->scripts[i].m.line);
    if (!(x = fb_cfg_get(&m, "file"))) {
        fb_cfg_error(r, en, "script%s%s: 'file' is required (the Lua script)", s->name ? " " : "",
                     s->name ? s->name : "");
    } else {
        ps->file_m = fb_cfg_mark(x);
        char *rel = fb_cfg_str(r, NULL, x, "script file");
        if (rel) {
            s->file = fb_cfg_path(r, rel);
            free(rel);
            FILE *f = s->file ? fopen(s->file, "rb") : NULL;
            if (!f) {
                fb_cfg_error(r, x, "script file %s: %s", s->file ? s->file : "?", strerror(errno));
            } else {
                s->source = malloc(MAX_SCRIPT_BYTES + 1);
                size_t len = s->source ? fread(s->source, 1, MAX_SCRIPT_BYTES + 1, f) : 0;
                if (ferror(f))
                    fb_cfg_error(r, x, "script file %s: read error", s->file);
                else if (len > MAX_SCRIPT_BYTES)
                    fb_cfg_error(r, x, "script file %s is larger than 1 MiB", s->file);
                if (s->source) s->source[len <= MAX_SCRIPT_BYTES ? len : MAX_SCRIPT_BYTES] = 0;
                s->source_len = len <= MAX_SCRIPT_BYTES ? len : MAX_SCRIPT_BYTES;
                fclose(f);
            }
        }
    }
    if ((x = fb_cfg_get(&m, "device"))) {
        ps->device = fb_cfg_str(r, NULL, x, "script device");
        ps->dev_m = fb_cfg_mark(x);
    }
    if ((x = fb_cfg_get(&m, "devices"))) {
        if (fb_cfg_kind(x) != FB_CFG_LIST) {
            fb_cfg_error(r, x, "devices: expected a list of device names");
        } else {
            size_t nd = fb_cfg_list_len(x);
            ps->devices = calloc(nd ? nd : 1, sizeof *ps->devices);
            ps->devices_m = calloc(nd ? nd : 1, sizeof *ps->devices_m);
            for (size_t i = 0; ps->devices && ps->devices_m && i < nd; i++) {
                struct fb_cfg_node *d = fb_cfg_list_at(r, x, i);
                char *dn = fb_cfg_str(r, NULL, d, "devices");
                if (!dn) continue;
                ps->devices_m[ps->ndevices] = fb_cfg_mark(d);
                ps->devices[ps->ndevices++] = dn;
            }
        }
    }
    if ((x = fb_cfg_get(&m, "timer"))) fb_cfg_dur(r, NULL, x, "timer", true, &s->timer_ns);
    long long v;
    if ((x = fb_cfg_get(&m, "instructions")) && fb_cfg_int(r, NULL, x, "instructions", 1000, 10000000000LL, &v))
        s->max_instructions = (uint64_t)v;
    if ((x = fb_cfg_get(&m, "time"))) fb_cfg_dur(r, NULL, x, "time", true, &s->max_time_ns);
    if ((x = fb_cfg_get(&m, "memory"))) {
        uint64_t mem;
        if (fb_cfg_size(r, x, "memory", 65536, &mem)) {
            if (mem > (1ULL << 30))
                fb_cfg_error(r, x, "memory: at most 1GiB per script");
            else
                s->max_memory = mem;
        }
    }
    if ((x = fb_cfg_get(&m, "libraries"))) {
        if (fb_cfg_kind(x) != FB_CFG_LIST) {
            fb_cfg_error(r, x, "libraries: expected a list, e.g. [os]");
        } else {
            for (size_t i = 0; i < fb_cfg_list_len(x); i++) {
                struct fb_cfg_node *l = fb_cfg_list_at(r, x, i);
                char *ln = fb_cfg_str(r, NULL, l, "libraries");
                if (ln && !strcmp(ln, "io"))
                    s->libs |= FB_LUA_IO;
                else if (ln && !strcmp(ln, "os"))
                    s->libs |= FB_LUA_OS;
                else if (ln)
                    fb_cfg_error(r, l,
                                 "libraries: '%s' cannot be enabled (io and os can; package and debug never: they "
                                 "would open the sandbox)",
                                 ln);
                free(ln);
            }
            if (s->libs)
                fb_cfg_note(r, x, "script '%s' may use %s%s%s: it can touch files and processes of the gateway",
                            s->name ? s->name : "?", s->libs & FB_LUA_IO ? "io" : "",
                            s->libs == (FB_LUA_IO | FB_LUA_OS) ? " and " : "", s->libs & FB_LUA_OS ? "os" : "");
        }
    }
    struct fb_cfg_map am = {0};
    if ((x = fb_cfg_get(&m, "alarms")) && fb_cfg_map_load(r, x, "script alarms", &am)) {
        ps->alarms = calloc(am.n ? (size_t)am.n : 1, sizeof *ps->alarms);
        for (int i = 0; ps->alarms && i < am.n; i++) {
            struct script_alarm *sa = &ps->alarms[ps->nalarms];
            if (!fb_cfg_name_ok(am.kv[i].key)) {
                fb_cfg_error(r, am.kv[i].k, "alarm name '%s' may only contain letters, digits, '_', '.' and '-'",
                             am.kv[i].key);
                continue;
            }
            struct fb_cfg_map one = {0};
            sa->a.kind = FB_AK_EXTERNAL;
            char what[120];
            snprintf(what, sizeof what, "alarms.%s", am.kv[i].key);
            if (!fb_cfg_is_null(am.kv[i].v) && !fb_cfg_map_load(r, am.kv[i].v, what, &one)) continue;
            fb_cfg_map_check(r, &one, k_alarm, what, false);
            static const char *const only_tag[] = {"limit", "deadband", "setpoint", "when", NULL};
            for (const char *const *k = only_tag; *k; k++)
                if (fb_cfg_get(&one, *k))
                    fb_cfg_error(r, fb_cfg_key(&one, *k),
                                 "%s: a script's alarm is raised by the script (fb.alarm): %s: has no meaning", what,
                                 *k);
            alarm_common(r, NULL, &one, &sa->a, what, &sa->suppress, &sa->sup_m);
            fb_cfg_map_free(&one);
            sa->name = strdup(am.kv[i].key);
            sa->m = fb_cfg_mark(am.kv[i].k);
            ps->nalarms++;
        }
    }
    fb_cfg_map_free(&am);
    fb_cfg_map_free(&m);
}

void fb_edge_cfg_scripts(struct fb_edge_build *b, struct fb_cfg *r, struct fb_cfg_node *n)
{
    if (!n) return;
    if (fb_cfg_kind(n) != FB_CFG_LIST) {
        fb_cfg_error(r, n, "scripts must be a list (- name: …, file: …)");
        return;
    }
    for (size_t i = 0; i < fb_cfg_list_len(n); i++) script_entry(b, r, fb_cfg_list_at(r, n, i));
}

/* ------------------------------------------------------------ resolving */
/* A tag named by text relative to device dev: "tag", "device/tag". */
static const struct fb_tag *find_tag(const struct fb_gateway *gw, uint32_t dev, const char *name, size_t len)
{
    const char *slash = memchr(name, '/', len);
    const struct fb_device *d = dev < gw->ndevs ? &gw->devs[dev] : NULL;
    if (slash) {
        d = NULL;
        size_t dl = (size_t)(slash - name);
        for (uint32_t i = 0; i < gw->ndevs; i++)
            if (strlen(gw->devs[i].name) == dl && !memcmp(gw->devs[i].name, name, dl)) d = &gw->devs[i];
        len -= dl + 1;
        name = slash + 1;
    }
    if (!d) return NULL;
    for (uint32_t i = 0; i < d->ntags; i++) {
        const struct fb_tag *t = &gw->tags[d->first_tag + i];
        if (strlen(t->name) == len && !memcmp(t->name, name, len)) return t;
    }
    return NULL;
}

struct resolve_ctx {
    const struct fb_gateway *gw;
    uint32_t dev;
    uint32_t self; /* the computed tag (UINT32_MAX: none) */
    uint32_t *in, nin, cap;
};

static int resolve(void *ctx, const char *name, size_t len, bool quoted, struct fb_err *err)
{
    struct resolve_ctx *rc = ctx;
    if (!quoted && memchr(name, '/', len))
        return fb_err_set(err, FB_EINVAL, "'/' divides: write other devices' tags in quotes, '%.*s'",
                          (int)(len < 80 ? len : 80), name);
    const struct fb_tag *t = find_tag(rc->gw, rc->dev, name, len);
    if (!t) {
        const char *slash = memchr(name, '/', len);
        if (slash) return fb_err_set(err, FB_ENOENT, "no tag '%.*s'", (int)(len < 120 ? len : 120), name);
        return fb_err_set(err, FB_ENOENT,
                          "no tag '%.*s' in device '%s' (a tag of another device is written 'device/tag', in quotes)",
                          (int)(len < 80 ? len : 80), name, rc->gw->devs[rc->dev].name);
    }
    if (t->id == rc->self) return fb_err_set(err, FB_EINVAL, "the tag refers to itself");
    if (t->type == FB_T_STRING)
        return fb_err_set(err, FB_EINVAL, "tag '%s' is a string: expressions compute with numbers and booleans",
                          fb_tag_path(rc->gw, t));
    for (uint32_t i = 0; i < rc->nin; i++)
        if (rc->in[i] == t->id) return (int)i;
    if (rc->nin == rc->cap) {
        uint32_t nc = rc->cap ? rc->cap * 2 : 8;
        uint32_t *ni = realloc(rc->in, nc * sizeof *ni);
        if (!ni) return fb_err_set(err, FB_ENOMEM, "out of memory");
        rc->in = ni;
        rc->cap = nc;
    }
    if (rc->nin >= 256) return fb_err_set(err, FB_ERANGE, "more than 256 different tags in one expression");
    rc->in[rc->nin] = t->id;
    return (int)rc->nin++;
}

/* Depth-first topological order of the expression tags (inputs first). */
static bool topo_visit(const struct fb_gateway *gw, const struct fb_calc *calcs, uint32_t i, uint8_t *mark,
                       uint32_t *order, uint32_t *n, uint32_t *path, uint32_t depth, struct fb_cfg *r,
                       const struct fb_cfg_mark *marks)
{
    if (mark[i] == 2) return true;
    if (mark[i] == 1) { /* back on the path: a cycle; name it */
        char text[600];
        size_t off = 0;
        uint32_t k = depth;
        while (k > 0 && path[k - 1] != i) k--;
        for (uint32_t j = k ? k - 1 : 0; j < depth && off < sizeof text - 100; j++)
            off += (size_t)snprintf(text + off, sizeof text - off, "%s → ",
                                    fb_tag_path(gw, &gw->tags[calcs[path[j]].tag]));
        snprintf(text + off, sizeof text - off, "%s", fb_tag_path(gw, &gw->tags[calcs[i].tag]));
        fb_cfg_error_at(r, marks[i], "expression tags depend on each other in a circle: %s", text);
        return false;
    }
    mark[i] = 1;
    path[depth] = i;
    bool ok = true;
    const struct fb_calc *c = &calcs[i];
    for (uint32_t k = 0; ok && k < c->nin; k++) {
        const struct fb_tag *t = &gw->tags[c->in[k]];
        if (t->src == FB_TAG_EXPR) ok = topo_visit(gw, calcs, t->calc, mark, order, n, path, depth + 1, r, marks);
    }
    mark[i] = 2;
    order[(*n)++] = i;
    return ok;
}

static uint32_t find_script(const struct fb_gateway *gw, const char *name)
{
    for (uint32_t i = 0; i < gw->nscripts; i++)
        if (gw->scripts[i].name && !strcmp(gw->scripts[i].name, name)) return i;
    return UINT32_MAX;
}

static uint32_t find_device(const struct fb_gateway *gw, const char *name)
{
    for (uint32_t i = 0; name && i < gw->ndevs; i++)
        if (!strcmp(gw->devs[i].name, name)) return i;
    return UINT32_MAX;
}

/* A suppression condition: compile against device dev. */
static void compile_suppress(struct fb_cfg *r, struct fb_gateway *gw, struct fb_alarm *a, const char *text,
                             struct fb_cfg_mark m)
{
    struct resolve_ctx rc = {gw, a->device, UINT32_MAX, NULL, 0, 0};
    struct fb_err e = {0};
    if (fb_expr_compile(text, resolve, &rc, &a->suppress, &e) < 0) {
        fb_cfg_error_at(r, m, "suppress: %s", e.msg);
        free(rc.in);
        return;
    }
    a->suppress_text = strdup(text);
    a->sup_in = rc.in;
    a->nsup_in = rc.nin;
}

/* Alarms by (device, name), for the duplicate check. */
struct alarm_key {
    uint32_t device;
    const char *name, *path;
};
static int alarm_cmp(const void *x, const void *y)
{
    const struct alarm_key *a = x, *b = y;
    if (a->device != b->device) return a->device < b->device ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* Resolve what the edge sections named once every device is known: scripts,
 * computed tags (compiled, ordered so inputs come first, cycles refused), alarms;
 * each step needs the one before. Long because each step is a short loop
 * over its own pending list. */
void fb_edge_cfg_finish(struct fb_edge_build *b, struct fb_cfg *r, struct fb_gateway *gw)
{
    /* scripts: their devices, then their text */
    if (b->nscripts) {
        gw->scripts = calloc(b->nscripts, sizeof *gw->scripts);
        if (!gw->scripts) {
            fb_cfg_error_at(r, (struct fb_cfg_mark){0, 0}, "out of memory");
            return;
        }
    }
    for (uint32_t i = 0; i < b->nscripts; i++) {
        struct pend_script *ps = &b->scripts[i];
        struct fb_script *s = &ps->s;
        if (ps->device) {
            s->device = find_device(gw, ps->device);
            if (s->device == UINT32_MAX) fb_cfg_error_at(r, ps->dev_m, "script device: no device '%s'", ps->device);
        }
        if (ps->ndevices) {
            s->devices = calloc(ps->ndevices, sizeof *s->devices);
            for (uint32_t k = 0; s->devices && k < ps->ndevices; k++) {
                uint32_t d = find_device(gw, ps->devices[k]);
                if (d == UINT32_MAX)
                    fb_cfg_error_at(r, ps->devices_m[k], "script devices: no device '%s'", ps->devices[k]);
                else
                    s->devices[s->ndevs++] = d;
            }
        } else if (s->device != UINT32_MAX) {
            s->devices = malloc(sizeof *s->devices);
            if (s->devices) s->devices[s->ndevs++] = s->device;
        } else {
            s->all_devices = true;
        }
        if (s->source) {
            struct fb_err e = {0};
            const char *base = s->file ? strrchr(s->file, '/') : NULL;
            base = base ? base + 1 : s->file ? s->file : "script";
            if (fb_script_check(s->source, s->source_len, base, &e) < 0)
                fb_cfg_error_at(r, ps->file_m, "script %s: %s", s->name ? s->name : "?", e.msg);
        }
        if (ps->nalarms && s->device == UINT32_MAX)
            fb_cfg_error_at(r, ps->m, "script '%s' has alarms: give it a device: (their topic)",
                            s->name ? s->name : "?");
        s->first_alarm = gw->nalarms;
        for (uint32_t k = 0; s->device != UINT32_MAX && k < ps->nalarms; k++) {
            struct script_alarm *sa = &ps->alarms[k];
            char name[300];
            snprintf(name, sizeof name, "%s/%s", s->name ? s->name : "?", sa->name);
            uint32_t id = fb_alarm_add(gw, s->device, UINT32_MAX, FB_AK_EXTERNAL, name);
            if (id == UINT32_MAX) break;
            struct fb_alarm *a = &gw->alarms[id];
            a->priority = sa->a.priority;
            a->severity = sa->a.severity;
            a->ne107 = sa->a.ne107;
            a->on_delay_ns = sa->a.on_delay_ns;
            a->off_delay_ns = sa->a.off_delay_ns;
            a->message = sa->a.message;
            sa->a.message = NULL;
            if (sa->suppress) compile_suppress(r, gw, a, sa->suppress, sa->sup_m);
            s->nalarms++;
        }
        gw->scripts[i] = *s; /* the model owns the strings and arrays now */
        memset(s, 0, sizeof *s);
        gw->nscripts++;
    }
    /* script outputs */
    for (uint32_t i = 0; i < b->nouts; i++) {
        struct pend_out *o = &b->outs[i];
        uint32_t si = find_script(gw, o->script);
        struct fb_tag *t = &gw->tags[o->tag];
        if (si == UINT32_MAX || si >= gw->nscripts) {
            fb_cfg_error_at(r, o->m, "script: no script '%s' in the scripts: section", o->script);
            continue;
        }
        struct fb_script *s = &gw->scripts[si];
        uint32_t *no = realloc(s->outputs, (s->nout + 1) * sizeof *no);
        if (!no) continue;
        s->outputs = no;
        s->outputs[s->nout++] = t->id;
        t->calc = si;
    }
    /* expression tags: compile */
    if (b->ncalcs) {
        gw->calcs = calloc(b->ncalcs, sizeof *gw->calcs);
        if (!gw->calcs) return;
    }
    struct fb_cfg_mark *marks = calloc(b->ncalcs ? b->ncalcs : 1, sizeof *marks);
    for (uint32_t i = 0; i < b->ncalcs; i++) {
        struct pend_calc *pc = &b->calcs[i];
        struct fb_tag *t = &gw->tags[pc->tag];
        struct fb_calc *c = &gw->calcs[gw->ncalcs];
        struct resolve_ctx rc = {gw, t->device, t->id, NULL, 0, 0};
        struct fb_err e = {0};
        if (fb_expr_compile(pc->text, resolve, &rc, &c->expr, &e) < 0) {
            fb_cfg_error_at(r, pc->m, "expr: %s", e.msg);
            free(rc.in);
            continue;
        }
        c->tag = t->id;
        c->text = pc->text;
        pc->text = NULL;
        c->in = rc.in;
        c->nin = rc.nin;
        c->period_ns = pc->period_ns;
        c->quality = pc->quality;
        if (marks) marks[gw->ncalcs] = pc->m;
        t->calc = gw->ncalcs++;
    }
    /* an order in which inputs come first; a cycle is an error */
    if (gw->ncalcs && marks) {
        uint8_t *mark = calloc(gw->ncalcs, 1);
        uint32_t *order = calloc(gw->ncalcs, sizeof *order), *path = calloc(gw->ncalcs + 1, sizeof *path);
        struct fb_calc *sorted = calloc(gw->ncalcs, sizeof *sorted);
        uint32_t n = 0;
        bool ok = mark && order && path && sorted;
        for (uint32_t i = 0; ok && i < gw->ncalcs; i++)
            if (!mark[i]) ok = topo_visit(gw, gw->calcs, i, mark, order, &n, path, 0, r, marks);
        if (ok && n == gw->ncalcs) {
            for (uint32_t i = 0; i < n; i++) sorted[i] = gw->calcs[order[i]];
            memcpy(gw->calcs, sorted, n * sizeof *sorted);
            for (uint32_t i = 0; i < n; i++) gw->tags[gw->calcs[i].tag].calc = i;
        }
        free(mark);
        free(order);
        free(path);
        free(sorted);
    }
    free(marks);
    /* alarms: setpoints and suppression conditions */
    uint32_t reported = UINT32_MAX; /* the elements of an array tag share one message */
    for (uint32_t i = 0; i < b->nalarms; i++) {
        struct pend_alarm *pa = &b->alarms[i];
        struct fb_alarm *a = &gw->alarms[pa->id];
        const struct fb_tag *t = a->tag < gw->ntags ? &gw->tags[a->tag] : NULL;
        uint32_t at = (uint32_t)pa->m.line << 12 | (uint32_t)(pa->m.col & 0xFFF);
        if (t && t->type == FB_T_STRING && a->kind != FB_AK_BAD && at != reported) {
            fb_cfg_error_at(r, pa->m, "tag '%s' is a string: it can only have a bad_quality alarm", t->name);
            reported = at;
        } else if (t && t->type == FB_T_BOOL && a->kind <= FB_AK_DEVIATION && at != reported) {
            fb_cfg_error_at(r, pa->m, "tag '%s' is a bool: give it a digital alarm", t->name);
            reported = at;
        }
        if (pa->setpoint) {
            const struct fb_tag *spt = find_tag(gw, a->device, pa->setpoint, strlen(pa->setpoint));
            if (!spt)
                fb_cfg_error_at(r, pa->sp_m, "setpoint: no tag '%s' (a tag of the device, or 'device/tag')",
                                pa->setpoint);
            else if (spt->type == FB_T_STRING)
                fb_cfg_error_at(r, pa->sp_m, "setpoint: tag '%s' is a string", fb_tag_path(gw, spt));
            else if (spt->id == a->tag)
                fb_cfg_error_at(r, pa->sp_m, "setpoint: the tag is its own setpoint");
            else
                a->setpoint = spt->id;
        }
        if (pa->suppress) compile_suppress(r, gw, a, pa->suppress, pa->sup_m);
    }
    if (gw->nalarms) { /* the alarm journal lives in a buffer directory */
        bool dir = gw->buffer && gw->buffer->path;
        for (uint32_t i = 0; !dir && i < gw->nsinks; i++) dir = gw->sinks[i].buffer && gw->sinks[i].buffer->path;
        if (!dir)
            fb_cfg_note(r, NULL,
                        "%u alarm%s but no buffer: directory: their state is kept in memory only and lost on restart",
                        gw->nalarms, gw->nalarms == 1 ? "" : "s");
    }
    /* alarm names are unique per device (a script named like a tag could collide) */
    struct alarm_key *keys = gw->nalarms > 1 ? malloc(gw->nalarms * sizeof *keys) : NULL;
    if (keys) {
        for (uint32_t i = 0; i < gw->nalarms; i++)
            keys[i] = (struct alarm_key){gw->alarms[i].device, gw->alarms[i].name, gw->alarms[i].path};
        qsort(keys, gw->nalarms, sizeof *keys, alarm_cmp);
        for (uint32_t i = 1; i < gw->nalarms; i++)
            if (alarm_cmp(&keys[i - 1], &keys[i]) == 0)
                fb_cfg_error_at(r, (struct fb_cfg_mark){0, 0}, "two alarms are named %s", keys[i].path);
        free(keys);
    }
}

size_t fb_edge_key_tables(struct fb_config_keys *out, size_t max)
{
    const struct fb_config_keys t[] = {
        {"alarms", k_alarms}, {"flood", k_flood}, {"alarm", k_alarm}, {"script", k_script}};
    size_t n = 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0] && n < max; i++) out[n++] = t[i];
    return n;
}

void fb_edge_describe(const struct fb_gateway *gw, FILE *f)
{
    if (!gw->ncalcs && !gw->nalarms && !gw->nscripts) return;
    uint32_t outs = 0;
    for (uint32_t i = 0; i < gw->nscripts; i++) outs += gw->scripts[i].nout;
    fprintf(f, "  edge  %u expression tag%s, %u script%s (%u output%s), %u alarm%s  flood %u events/%.0fs\n",
            gw->ncalcs, gw->ncalcs == 1 ? "" : "s", gw->nscripts, gw->nscripts == 1 ? "" : "s", outs,
            outs == 1 ? "" : "s", gw->nalarms, gw->nalarms == 1 ? "" : "s", gw->alarm_opts.flood_events,
            gw->alarm_opts.flood_window_ns / 1e9);
    for (uint32_t i = 0; i < gw->nscripts; i++) {
        const struct fb_script *s = &gw->scripts[i];
        fprintf(f, "    script %s  %s  %s%s  budget %llu instructions, %.0f ms, %.1f MiB\n", s->name, s->file,
                s->device < gw->ndevs ? "device " : "gateway", s->device < gw->ndevs ? gw->devs[s->device].name : "",
                (unsigned long long)s->max_instructions, s->max_time_ns / 1e6, s->max_memory / 1048576.0);
    }
}
