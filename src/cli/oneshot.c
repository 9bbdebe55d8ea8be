/* oneshot.c — `fieldbridge read`, `write` and `browse`: the mbpoll of every
 * protocol.  Builds a one-device gateway model in memory and drives the
 * driver table directly (no threads, no pipeline), so what the CLI reads is
 * exactly what the gateway would read. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/oneshot.h"
#include "core/browse.h"
#include "core/buf.h"
#include "core/driver.h"
#include "core/env.h"
#include "core/log.h"
#include "core/router.h"
#include "core/url.h"
#include "south/s7/s7.h"

struct oneshot {
    struct fb_gateway gw;
    struct fb_device dev;
    struct fb_conn conn;
    struct fb_group group;
    struct fb_tag *tags;
    char **atext; /* the tags' address texts (gw.atext) */
    uint32_t ntags;
    struct fb_tag_proc proc; /* every tag's: --order */
    bool dev_inited;
};

struct opts {
    const char *url, *type, *order, *timeout;
    const char *pos[64];
    int npos;
    long count;
    bool json, yaml;
};

static bool looks_negative_number(const char *s)
{
    return s[0] == '-' && ((s[1] >= '0' && s[1] <= '9') || s[1] == '.');
}

/* Returns 0, 1 for --help, or 2 for a usage error. */
static int parse_opts(const char *cmd, int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->count = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 1;
        if ((!strcmp(a, "--type") || !strcmp(a, "-t")) && has_val)
            o->type = argv[++i];
        else if ((!strcmp(a, "--order") || !strcmp(a, "-o")) && has_val)
            o->order = argv[++i];
        else if (!strcmp(a, "--timeout") && has_val)
            o->timeout = argv[++i];
        else if ((!strcmp(a, "--count") || !strcmp(a, "-n")) && has_val) {
            char *end;
            errno = 0;
            o->count = strtol(argv[++i], &end, 10);
            if (*end || errno || o->count < 1 || o->count > 10000) {
                fprintf(stderr, "fieldbridge %s: --count needs a number from 1 to 10000\n", cmd);
                return 2;
            }
        } else if (!strcmp(a, "--json"))
            o->json = true;
        else if (!strcmp(a, "--yaml") && !strcmp(cmd, "browse"))
            o->yaml = true;
        else if (!strcmp(a, "--")) {
            for (i++; i < argc; i++)
                if (o->npos < 64) o->pos[o->npos++] = argv[i];
        } else if (a[0] == '-' && a[1] && !looks_negative_number(a)) {
            fprintf(stderr, "fieldbridge %s: unknown option '%s' (see fieldbridge help)\n", cmd, a);
            return 2;
        } else if (!o->url)
            o->url = a;
        else if (o->npos < 64)
            o->pos[o->npos++] = a;
        else {
            fprintf(stderr, "fieldbridge %s: too many arguments\n", cmd);
            return 2;
        }
    }
    if (!o->url) {
        fprintf(stderr, "fieldbridge %s: missing device URL\n", cmd);
        return 2;
    }
    return 0;
}

static void oneshot_free(struct oneshot *s)
{
    const struct fb_driver *drv = s->dev.drv;
    if (drv) {
        if (s->group.plan && drv->plan_free) drv->plan_free(&s->group);
        for (uint32_t i = 0; i < s->ntags; i++) {
            if (s->tags[i].addr && drv->free_address) drv->free_address(&s->tags[i]);
            free(s->tags[i].name);
        }
        if (s->dev_inited && drv->device_free) drv->device_free(&s->dev);
    }
    for (uint32_t i = 0; s->atext && i < s->ntags; i++) free(s->atext[i]);
    free(s->atext);
    free(s->tags);
    free(s->group.ids);
    free(s->conn.key);
    fb_url_free(&s->dev.url);
}

/* Build the model: one device, one tag per (address × count).  Returns 0 or 2. */
static int oneshot_init(struct oneshot *s, const char *cmd, const struct opts *o, const char **addrs, int naddr,
                        int access)
{
    memset(s, 0, sizeof *s);
    struct fb_err err = {0};
    if (fb_url_parse(o->url, &s->dev.url, &err) < 0) {
        fprintf(stderr, "fieldbridge %s: bad URL '%s': %s\n", cmd, o->url, err.msg);
        return 2;
    }
    const struct fb_driver *drv = fb_driver_for_scheme(s->dev.url.scheme);
    if (!drv) {
        char hint[200];
        fb_scheme_hint(hint, sizeof hint, s->dev.url.scheme);
        fprintf(stderr, "fieldbridge %s: unknown URL scheme '%s'%s\n", cmd, s->dev.url.scheme ? s->dev.url.scheme : "",
                hint);
        return 2;
    }
    s->gw.id = (char *)"cli";
    s->gw.site = (char *)"cli";
    s->gw.devs = &s->dev;
    s->gw.ndevs = 1;
    s->gw.conns = &s->conn;
    s->gw.nconns = 1;
    s->dev.name = (char *)"cli";
    s->dev.url_text = (char *)o->url;
    s->dev.drv = drv;
    s->dev.gw = &s->gw;
    s->dev.timeout_ns = 1000000000LL;
    if (o->timeout && fb_parse_duration(o->timeout, &s->dev.timeout_ns) < 0) {
        fprintf(stderr, "fieldbridge %s: bad --timeout '%s' (e.g. 500ms, 2s)\n", cmd, o->timeout);
        return 2;
    }
    s->dev.ngroups = 1;
    s->dev.groups = &s->group;
    s->dev.conn = &s->conn;
    static struct fb_device *devp[1];
    devp[0] = &s->dev;
    s->conn.devs = devp;
    s->conn.ndevs = 1;
    s->conn.drv = drv;
    if (drv->device_init(&s->dev, &s->conn.key, &err) < 0) {
        fprintf(stderr, "fieldbridge %s: %s\n", cmd, err.msg);
        return 2;
    }
    s->dev_inited = true;
    /* files the URL names (password_file=, user_key=, …): a missing file or
     * one others can read is the caller's to fix, not the device's */
    for (int i = 0; i < s->dev.url.nq; i++) {
        const struct fb_drv_opt *op = fb_scheme_opt(s->dev.url.scheme, s->dev.url.q[i].k);
        if (!op || op->kind == FB_OPT_VALUE || op->kind == FB_OPT_FILE) continue;
        int rc = fb_check_file(s->dev.url.q[i].v ? s->dev.url.q[i].v : "", op->kind, &err);
        if (rc == FB_ENOENT && op->kind == FB_OPT_PKI) continue; /* the driver creates the store */
        if (rc < 0) {
            fprintf(stderr, "fieldbridge %s: %s=: %s\n", cmd, op->key, err.msg);
            return 2;
        }
    }
    s->ntags = (uint32_t)naddr * (uint32_t)o->count;
    s->tags = calloc(s->ntags, sizeof *s->tags);
    s->group.ids = calloc(s->ntags, sizeof *s->group.ids);
    s->atext = calloc(s->ntags, sizeof *s->atext);
    if (!s->tags || !s->group.ids || !s->atext) return 2;
    s->gw.atext = (const char **)s->atext;
    s->proc = fb_tag_proc_none;
    s->proc.order = o->order;
    s->gw.tags = s->tags;
    s->gw.ntags = s->ntags;
    s->dev.first_tag = 0;
    s->dev.ntags = s->ntags;
    s->group.period_ns = 1000000000LL;
    s->group.ntags = s->ntags;
    uint32_t k = 0;
    for (int a = 0; a < naddr; a++) {
        for (long i = 0; i < o->count; i++, k++) {
            struct fb_tag *t = &s->tags[k];
            t->id = k;
            t->device = 0;
            t->access = (uint8_t)access;
            t->index = (uint32_t)i;
            /* --type is the same thing as a :TYPE suffix on the address */
            size_t n = strlen(addrs[a]) + (o->type ? strlen(o->type) + 2 : 1);
            char *at = s->atext[k] = malloc(n);
            if (!at) return 2;
            snprintf(at, n, "%s%s%s", addrs[a], o->type ? ":" : "", o->type ? o->type : "");
            if (o->count > 1) {
                size_t m = strlen(addrs[a]) + 24;
                t->name = malloc(m);
                if (t->name) snprintf(t->name, m, "%s[%ld]", addrs[a], i);
            } else {
                t->name = strdup(addrs[a]);
            }
            t->proc = &s->proc;
            s->group.ids[k] = k;
            if (drv->parse_address(&s->dev, t, &err) < 0) {
                fprintf(stderr, "fieldbridge %s: bad address '%s': %s\n", cmd, addrs[a], err.msg);
                return 2;
            }
        }
    }
    if (drv->plan && drv->plan(&s->dev, &s->group, &err) < 0) {
        fprintf(stderr, "fieldbridge %s: %s\n", cmd, err.msg);
        return 2;
    }
    return 0;
}

static const char *const read_help =
    "usage: fieldbridge read URL ADDR... [--type T] [--order O] [--count N] [--json] [--timeout D]\n"
    "Reads each address once and prints one line per value, in the order the addresses\n"
    "were given: address, value, and the quality when it is not good.\n"
    "  --type T     type of every address, like a :TYPE suffix (int16, float32, string[8], ...)\n"
    "  --order O    byte/word order of 32/64-bit values (Modbus also hr:N:TYPE:ORDER)\n"
    "  --count N    read N consecutive values of the type from each address (1..10000)\n"
    "  --json       print [{\"addr\",\"type\",\"value\",\"quality\"}]\n"
    "  --timeout D  per request (500ms, 2s; default 1s, or the URL's timeout=)\n"
    "example: fieldbridge read 'modbus-tcp://127.0.0.1:5020?unit=1' hr:0 --type float32 --order CDAB\n"
    "URL forms and addresses of every protocol: fieldbridge help\n"
    "exit codes: 0 all values good; 1 communication error or a value not good; 2 usage error\n";

int fb_cli_read(int argc, char **argv)
{
    struct opts o;
    int rc = parse_opts("read", argc, argv, &o);
    if (rc == 1) {
        fputs(read_help, stdout);
        return 0;
    }
    if (rc) return rc;
    if (o.npos == 0) {
        fprintf(stderr, "fieldbridge read: missing address (e.g. hr:0)\n");
        return 2;
    }
    struct oneshot s;
    rc = oneshot_init(&s, "read", &o, o.pos, o.npos, FB_ACC_READ);
    if (rc) {
        oneshot_free(&s);
        return rc;
    }
    const struct fb_driver *drv = s.dev.drv;
    struct fb_err err = {0};
    if (drv->open(&s.conn, &err) < 0) {
        fprintf(stderr, "fieldbridge read: %s\n", err.msg[0] ? err.msg : "cannot connect");
        oneshot_free(&s);
        return 1;
    }
    uint32_t arena = 0;
    for (uint32_t i = 0; i < s.ntags; i++)
        if (s.tags[i].type == FB_T_STRING) arena += s.tags[i].str_len ? s.tags[i].str_len : 256;
    struct fb_batch *b = fb_batch_new(s.ntags, 0, arena);
    if (!b) {
        drv->close(&s.conn);
        oneshot_free(&s);
        return 1;
    }
    b->ts = fb_now_ns();
    rc = drv->read(&s.dev, &s.group, b);
    drv->close(&s.conn);
    int exit_code = 0;
    if (rc < 0) {
        fprintf(stderr, "fieldbridge read: %s\n", fb_strerror(rc));
        exit_code = 1;
    }
    /* drivers fill a batch in their read plan's order (Modbus sorts by
     * table and address): print in the order the addresses were given */
    const struct fb_sample **by_tag = calloc(s.ntags ? s.ntags : 1, sizeof *by_tag);
    if (!by_tag) {
        fb_batch_free(b);
        oneshot_free(&s);
        return 1;
    }
    for (uint32_t i = 0; i < b->n; i++)
        if (b->s[i].tag < s.ntags && !by_tag[b->s[i].tag]) by_tag[b->s[i].tag] = &b->s[i];
    struct fb_buf out;
    fb_buf_init(&out);
    if (o.json) fb_buf_putc(&out, '[');
    for (uint32_t i = 0; i < s.ntags; i++) {
        /* a tag the driver gave no sample for (it never does when the read succeeded) */
        struct fb_sample none = {.tag = i, .quality = rc < 0 ? FB_Q_BAD_COMM : FB_Q_BAD_WAITING};
        const struct fb_sample *sm = by_tag[i] ? by_tag[i] : &none;
        const struct fb_tag *t = &s.tags[i];
        char qb[16];
        bool good = fb_q_good(sm->quality);
        if (!good) exit_code = 1;
        if (o.json) {
            if (i) fb_buf_putc(&out, ',');
            fb_buf_puts(&out, "{\"addr\":");
            fb_json_cstr(&out, t->name);
            fb_buf_puts(&out, ",\"type\":");
            fb_json_cstr(&out, fb_type_name((enum fb_type)t->type));
            fb_buf_puts(&out, ",\"value\":");
            if (fb_q_bad(sm->quality))
                fb_buf_puts(&out, "null");
            else
                fb_json_value(&out, &sm->v);
            fb_buf_puts(&out, ",\"quality\":");
            fb_json_cstr(&out, good ? "good" : fb_q_name(sm->quality, qb));
            fb_buf_putc(&out, '}');
        } else {
            fb_buf_puts(&out, t->name);
            fb_buf_putc(&out, ' ');
            if (fb_q_bad(sm->quality))
                fb_buf_puts(&out, "null");
            else
                fb_text_value(&out, &sm->v);
            if (!good) {
                fb_buf_putc(&out, ' ');
                fb_buf_puts(&out, fb_q_name(sm->quality, qb));
            }
            fb_buf_putc(&out, '\n');
        }
    }
    if (o.json) fb_buf_puts(&out, "]\n");
    fwrite(out.p, 1, out.len, stdout);
    fb_buf_free(&out);
    free(by_tag);
    fb_batch_free(b);
    oneshot_free(&s);
    return exit_code;
}

static const char *const write_help =
    "usage: fieldbridge write URL ADDR VALUE [--type T] [--order O] [--timeout D]\n"
    "Writes one value.  Negative numbers work as they are: write URL hr:10:int16 -5\n"
    "Booleans: true/false/1/0/on/off.  Values outside the type's range are refused (exit 2).\n"
    "  --type T     the value's type, like a :TYPE suffix (int16, float32, string[8], ...)\n"
    "  --order O    byte/word order of 32/64-bit values (Modbus also hr:N:TYPE:ORDER)\n"
    "  --timeout D  per request (500ms, 2s; default 1s, or the URL's timeout=)\n"
    "exit codes: 0 written; 1 device or communication error; 2 usage error (a bad value or\n"
    "address, a read-only target such as ir:3, a missing secret file or one others can read)\n";

/* VALUE text → raw value of the tag's type, with the router's checks. */
static int parse_value(const struct fb_tag *t, const char *text, struct fb_value *v, char *sbuf, size_t sbuf_len,
                       struct fb_err *err)
{
    if (t->type == FB_T_STRING) {
        size_t n = strlen(text);
        if (n > sbuf_len || (t->str_len && n > t->str_len))
            return fb_err_set(err, FB_ERANGE, "string longer than %u bytes", t->str_len);
        memcpy(sbuf, text, n);
        v->type = FB_T_STRING;
        v->s.p = sbuf;
        v->s.len = (uint32_t)n;
        return 0;
    }
    if (t->type == FB_T_BOOL) {
        if (!strcasecmp(text, "true") || !strcmp(text, "1") || !strcasecmp(text, "on")) {
            v->type = FB_T_BOOL;
            v->b = true;
            return 0;
        }
        if (!strcasecmp(text, "false") || !strcmp(text, "0") || !strcasecmp(text, "off")) {
            v->type = FB_T_BOOL;
            v->b = false;
            return 0;
        }
        return fb_err_set(err, FB_EINVAL, "expected true/false/1/0/on/off, got '%s'", text);
    }
    if (t->type == FB_T_UINT64 && text[0] != '-') { /* beyond what JSON integers hold */
        char *end;
        errno = 0;
        unsigned long long u = strtoull(text, &end, 0);
        if (!*end && end != text && !errno) {
            v->type = FB_T_UINT64;
            v->u = u;
            return 0;
        }
    }
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    if (!j || !json_is_number(j)) {
        if (j) json_decref(j);
        return fb_err_set(err, FB_EINVAL, "'%s' is not a number", text);
    }
    int rc = fb_cmd_convert(t, j, v, sbuf, sbuf_len, err);
    json_decref(j);
    return rc;
}

int fb_cli_write(int argc, char **argv)
{
    struct opts o;
    int rc = parse_opts("write", argc, argv, &o);
    if (rc == 1) {
        fputs(write_help, stdout);
        return 0;
    }
    if (rc) return rc;
    if (o.npos != 2) {
        fprintf(stderr, "fieldbridge write: expected URL ADDR VALUE\n");
        return 2;
    }
    o.count = 1;
    struct oneshot s;
    rc = oneshot_init(&s, "write", &o, o.pos, 1, FB_ACC_RW);
    if (rc) {
        oneshot_free(&s);
        return rc;
    }
    struct fb_err err = {0};
    struct fb_value v;
    char sbuf[256];
    /* Some protocols (OPC UA, ADS) learn a node's type only when connected: a
     * value that does not parse as the address's type is checked again after
     * open, against the type the device reported. */
    uint8_t type_before = s.tags[0].type;
    struct fb_err perr = {0};
    int prc = parse_value(&s.tags[0], o.pos[1], &v, sbuf, sizeof sbuf, &perr);
    const struct fb_driver *drv = s.dev.drv;
    if (drv->open(&s.conn, &err) < 0) {
        if (prc < 0) {
            fprintf(stderr, "fieldbridge write: %s: %s\n", o.pos[0], perr.msg);
            oneshot_free(&s);
            return 2;
        }
        fprintf(stderr, "fieldbridge write: %s\n", err.msg[0] ? err.msg : "cannot connect");
        oneshot_free(&s);
        return 1;
    }
    if (s.tags[0].type != type_before) prc = parse_value(&s.tags[0], o.pos[1], &v, sbuf, sizeof sbuf, &perr);
    if (prc < 0) {
        drv->close(&s.conn);
        fprintf(stderr, "fieldbridge write: %s: %s\n", o.pos[0], perr.msg);
        oneshot_free(&s);
        return 2;
    }
    rc = drv->write(&s.dev, &s.tags[0], &v, &err);
    drv->close(&s.conn);
    if (rc < 0) {
        fprintf(stderr, "fieldbridge write: %s: %s\n", o.pos[0], err.msg[0] ? err.msg : fb_strerror(rc));
        oneshot_free(&s);
        /* a value the protocol cannot carry is a usage error; a refusal by
         * the device (a node or symbol it says is not writable) is the
         * device's answer: 1.  Read-only tables (ir:, di:) are refused by
         * the driver when the address is parsed, before connecting (2). */
        return rc == FB_EINVAL || rc == FB_ERANGE ? 2 : 1;
    }
    struct fb_buf out;
    fb_buf_init(&out);
    fb_text_value(&out, &v);
    printf("%s <- %s ok\n", o.pos[0], fb_buf_cstr(&out));
    fb_buf_free(&out);
    oneshot_free(&s);
    return 0;
}

int fb_cli_browse(int argc, char **argv)
{
    struct opts o;
    int rc = parse_opts("browse", argc, argv, &o);
    if (rc == 1) {
        puts("usage: fieldbridge browse URL [--yaml]\n"
             "Lists what a device offers: OPC UA nodes (URL options depth=N, node=NODEID), ADS\n"
             "symbols with their types, RevPi variables from the PiCtory file (config=FILE).\n"
             "  --yaml   print a device entry with one tag per variable instead, ready to paste\n"
             "           under devices: (OPC UA access as the server declares it, ADS read-only,\n"
             "           RevPi outputs rw; structs and arrays listed as comments)\n"
             "Modbus, S7 and the simulator have nothing to browse: their addresses are absolute.\n"
             "exit codes: 0 listed; 1 device or communication error; 2 usage error or nothing to browse");
        return 0;
    }
    if (rc) return rc;
    struct fb_url u;
    struct fb_err err = {0};
    if (fb_url_parse(o.url, &u, &err) < 0) {
        fprintf(stderr, "fieldbridge browse: bad URL '%s': %s\n", o.url, err.msg);
        return 2;
    }
    if (o.npos) {
        fprintf(stderr, "fieldbridge browse: unexpected argument '%s'\n", o.pos[0]);
        fb_url_free(&u);
        return 2;
    }
    const struct fb_driver *drv = fb_driver_for_scheme(u.scheme);
    if (drv && drv->browse) {
        char host[64];
        snprintf(host, sizeof host, "%s", u.host && *u.host ? u.host : drv->name);
        fb_url_free(&u);
        struct fb_browse list = {0};
        rc = drv->browse(o.url, o.yaml ? &list : NULL, o.yaml ? NULL : stdout, &err);
        if (rc < 0) {
            fprintf(stderr, "fieldbridge browse: %s\n", err.msg[0] ? err.msg : fb_strerror(rc));
        } else if (o.yaml) {
            struct fb_buf out;
            fb_buf_init(&out);
            fb_browse_yaml(&out, &list, o.url, host);
            fwrite(out.p, 1, out.len, stdout);
            fb_buf_free(&out);
        }
        fb_browse_free(&list);
        return rc == 0 ? 0 : rc == FB_EINVAL ? 2 : 1;
    }
    if (!drv) {
        char hint[200];
        fb_scheme_hint(hint, sizeof hint, u.scheme);
        fprintf(stderr, "fieldbridge browse: unknown URL scheme '%s'%s\n", u.scheme ? u.scheme : "", hint);
    } else if (drv == &fb_driver_s7)
        fprintf(stderr, "fieldbridge browse: S7comm offers no symbol table: address tags absolutely "
                        "(DB10.DBD0:real, MW10, I0.1; docs/s7.md)\n");
    else
        fprintf(stderr,
                "fieldbridge browse: the %s driver has nothing to browse: its devices do not describe "
                "their registers; list them in the config (docs/%s.md)\n",
                drv->name, drv->name);
    fb_url_free(&u);
    return 2;
}
