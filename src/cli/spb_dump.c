/* spb_dump.c — `fieldbridge spb-dump`: subscribe to Sparkplug traffic and
 * print every message readably (topic, seq, time stamp, metrics with name,
 * alias, datatype, value, quality), for troubleshooting a plant's Sparkplug
 * set-up without a SCADA system.
 *
 * DATA and CMD messages usually carry only aliases and no datatypes; like a
 * host application we learn both from the NBIRTH/DBIRTH of the same node or
 * device (a table per topic, replaced by each birth).  Messages whose birth
 * was missed still print, with datatypes guessed from the value field, and
 * a hint line says why names are missing — once per edge node.  With
 * --rebirth the dump asks such a node for its births instead: an NCMD with
 * Node Control/Rebirth = true (Sparkplug's way for a host that joins late),
 * once per node, so a dump started mid-stream soon shows names and types.
 * Single-threaded: the blocking mosquitto_loop() runs on the calling thread. */
#include <errno.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/spb_dump.h"
#include "core/env.h"
#include "north/sparkplug/sparkplug.h"

struct dump_alias {
    uint64_t alias;
    char *name;
    uint32_t dt;
};

struct dump_birth { /* one per node / device: "group/edge[/device]" */
    char *key;
    struct dump_alias *a;
    size_t n;
};

struct dump_ctx {
    struct dump_birth *b;
    size_t nb;
    long count, seen;
    int rc;
    struct fb_buf out;
    bool rebirth; /* --rebirth: ask nodes whose birth was missed */
    char **nodes; /* "group/edge" already hinted at or asked */
    size_t nnodes;
    struct fb_spb_enc enc; /* the NCMD */
    struct fb_buf cmd;
};

/* True the first time a node ("group/edge") is seen here. */
static bool node_first(struct dump_ctx *d, const char *node)
{
    for (size_t i = 0; i < d->nnodes; i++)
        if (!strcmp(d->nodes[i], node)) return false;
    char **n = realloc(d->nodes, (d->nnodes + 1) * sizeof *n);
    if (!n) return false;
    d->nodes = n;
    if (!(n[d->nnodes] = strdup(node))) return false;
    d->nnodes++;
    return true;
}

/* NCMD Node Control/Rebirth = true to spBv1.0/<group>/NCMD/<edge>. */
static int ask_rebirth(struct mosquitto *mosq, struct dump_ctx *d, const char *group, const char *edge, char *topic,
                       size_t tlen)
{
    if (fb_spb_topic(topic, tlen, group, "NCMD", edge, NULL) < 0) return FB_ERANGE;
    int64_t ms = fb_now_ns() / 1000000;
    fb_spb_enc_begin(&d->enc, (uint64_t)ms, -1);
    spb_metric *m = fb_spb_enc_add(&d->enc, "Node Control/Rebirth", -1, ms, SPB_BOOLEAN);
    if (!m) return FB_ENOMEM;
    struct fb_value yes = {.type = FB_T_BOOL, .b = true};
    fb_spb_enc_value(&d->enc, m, SPB_BOOLEAN, &yes);
    fb_spb_enc_finish(&d->enc, &d->cmd);
    int rc = mosquitto_publish(mosq, NULL, topic, (int)d->cmd.len, d->cmd.p, 0, false);
    return rc == MOSQ_ERR_SUCCESS ? 0 : FB_EIO;
}

static void birth_clear(struct dump_birth *b)
{
    for (size_t i = 0; i < b->n; i++) free(b->a[i].name);
    free(b->a);
    b->a = NULL;
    b->n = 0;
}

/* "spBv1.0/G/TYPE/E[/D]" → type (in *type, *tlen) and key "G/E[/D]" */
static bool topic_parts(const char *t, char *key, size_t klen, char *type, size_t tlen)
{
    const char *lv[6];
    size_t ll[6];
    int n = 0;
    const char *p = t;
    while (n < 6) {
        const char *q = strchr(p, '/');
        lv[n] = p;
        ll[n] = q ? (size_t)(q - p) : strlen(p);
        n++;
        if (!q) break;
        p = q + 1;
    }
    if (n < 4 || n > 5 || ll[0] != 7 || memcmp(lv[0], "spBv1.0", 7)) return false;
    snprintf(type, tlen, "%.*s", (int)ll[2], lv[2]);
    if (n == 5)
        snprintf(key, klen, "%.*s/%.*s/%.*s", (int)ll[1], lv[1], (int)ll[3], lv[3], (int)ll[4], lv[4]);
    else
        snprintf(key, klen, "%.*s/%.*s", (int)ll[1], lv[1], (int)ll[3], lv[3]);
    return true;
}

static struct dump_birth *birth_get(struct dump_ctx *d, const char *key, bool create)
{
    for (size_t i = 0; i < d->nb; i++)
        if (!strcmp(d->b[i].key, key)) return &d->b[i];
    if (!create) return NULL;
    struct dump_birth *nb = realloc(d->b, (d->nb + 1) * sizeof *nb);
    if (!nb) return NULL;
    d->b = nb;
    struct dump_birth *b = &d->b[d->nb];
    memset(b, 0, sizeof *b);
    b->key = strdup(key);
    if (!b->key) return NULL;
    d->nb++;
    return b;
}

static bool alias_fn(void *ctx, uint64_t alias, const char **name, uint32_t *dt)
{
    const struct dump_birth *b = ctx;
    if (!b) return false;
    for (size_t i = 0; i < b->n; i++)
        if (b->a[i].alias == alias) {
            *name = b->a[i].name;
            *dt = b->a[i].dt;
            return true;
        }
    return false;
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    struct dump_ctx *d = obj;
    char key[512], type[32];
    fb_buf_clear(&d->out);
    fb_buf_printf(&d->out, "%s%s\n", msg->topic, msg->retain ? "  (retained)" : "");
    if (!topic_parts(msg->topic, key, sizeof key, type, sizeof type) || !strcmp(type, "STATE") ||
        !strncmp(msg->topic, "spBv1.0/STATE/", 14)) {
        fb_buf_puts(&d->out, "  ");
        for (int i = 0; i < msg->payloadlen && i < 2000; i++) {
            unsigned char c = ((const unsigned char *)msg->payload)[i];
            fb_buf_putc(&d->out, c >= 32 && c < 127 ? (char)c : '.');
        }
        fb_buf_putc(&d->out, '\n');
    } else {
        spb_payload *p = fb_spb_decode(msg->payload, (size_t)(msg->payloadlen > 0 ? msg->payloadlen : 0));
        if (!p) {
            fb_buf_printf(&d->out, "  (%d bytes: not a Sparkplug B payload)\n", msg->payloadlen);
        } else {
            bool birth = !strcmp(type, "NBIRTH") || !strcmp(type, "DBIRTH");
            if (birth) {
                struct dump_birth *b = birth_get(d, key, true);
                if (b) {
                    birth_clear(b);
                    b->a = calloc(p->n_metrics ? p->n_metrics : 1, sizeof *b->a);
                    for (size_t i = 0; b->a && i < p->n_metrics; i++) {
                        const spb_metric *m = p->metrics[i];
                        if (!m || !m->has_alias) continue;
                        b->a[b->n].alias = m->alias;
                        b->a[b->n].name = m->name ? strdup(m->name) : NULL;
                        b->a[b->n].dt = m->has_datatype ? m->datatype : 0;
                        b->n++;
                    }
                }
            }
            struct dump_birth *known = birth_get(d, key, false);
            fb_spb_format(&d->out, p, alias_fn, known);
            fb_spb_free(p);
            bool data = !strcmp(type, "NDATA") || !strcmp(type, "DDATA");
            /* the node of this message: group/edge (the key without the device) */
            char node[512];
            snprintf(node, sizeof node, "%s", key);
            char *dev = strchr(node, '/') ? strchr(strchr(node, '/') + 1, '/') : NULL;
            if (dev) *dev = 0;
            if (data && !known && node_first(d, node)) {
                char *edge = strchr(node, '/');
                char topic[600];
                *edge++ = 0;
                if (!d->rebirth)
                    fb_buf_printf(&d->out,
                                  "  (no birth of %s/%s%s%s seen since spb-dump started: names and datatypes "
                                  "come from births; run with --rebirth to ask the edge node for them)\n",
                                  node, edge, dev ? "/" : "", dev ? dev + 1 : "");
                else if (ask_rebirth(mosq, d, node, edge, topic, sizeof topic) == 0)
                    fb_buf_printf(&d->out, "  (no birth of %s/%s seen yet: asked for a Rebirth on %s)\n", node, edge,
                                  topic);
                else
                    fb_buf_printf(&d->out, "  (no birth of %s/%s seen yet; asking for a Rebirth failed)\n", node, edge);
            }
        }
    }
    fwrite(d->out.p, 1, d->out.len, stdout);
    fflush(stdout);
    d->seen++;
    if (d->count > 0 && d->seen >= d->count) mosquitto_disconnect(mosq);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)obj;
    if (rc) fprintf(stderr, "fieldbridge spb-dump: connection refused: %s\n", mosquitto_connack_string(rc));
    (void)mosq;
}

int fb_cli_spb_dump(int argc, char **argv)
{
    const char *url = NULL, *filter = "spBv1.0/#", *user = NULL, *cafile = NULL, *cert = NULL, *key = NULL;
    long count = 0;
    int64_t timeout_ns = 0;
    bool rebirth = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            puts("usage: fieldbridge spb-dump mqtt://HOST[:PORT] [--topic FILTER] [--count N] [--timeout D]\n"
                 "                            [--username U] [--rebirth]   (password from $MQTT_PASSWORD)\n"
                 "                            [--cafile F] [--cert F --key F]   (mqtts://)\n"
                 "Subscribes to Sparkplug B traffic (default spBv1.0/#) and prints each message: topic,\n"
                 "seq, time stamp and every metric with name, alias, datatype, value, quality (and the\n"
                 "refused reading, raw, of a bad one).  Names and datatypes of DATA messages come from\n"
                 "the births seen; when a node's births were missed (the dump started mid-stream) a\n"
                 "hint line says so.\n"
                 "  --topic F     subscription filter (default spBv1.0/#)\n"
                 "  --count N     stop after N messages\n"
                 "  --timeout D   stop after D (exit code 1 if nothing arrived)\n"
                 "  --username U  broker user; the password comes from $MQTT_PASSWORD\n"
                 "  --rebirth     ask every edge node whose births were missed for a Rebirth (NCMD\n"
                 "                Node Control/Rebirth = true; the node re-sends NBIRTH and DBIRTHs)\n"
                 "  --cafile F    mqtts://: the broker's CA (PEM; default: the system's CAs)\n"
                 "  --cert F, --key F  mqtts://: a client certificate and its key (mode 0600) for\n"
                 "                brokers that require one (mutual TLS)\n"
                 "exit codes: 0 done; 1 no connection, or nothing arrived before the timeout; 2 usage error");
            return 0;
        } else if (!strcmp(argv[i], "--topic") && i + 1 < argc) {
            filter = argv[++i];
        } else if (!strcmp(argv[i], "--count") && i + 1 < argc) {
            count = strtol(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--username") && i + 1 < argc) {
            user = argv[++i];
        } else if (!strcmp(argv[i], "--rebirth")) {
            rebirth = true;
        } else if (!strcmp(argv[i], "--cafile") && i + 1 < argc) {
            cafile = argv[++i];
        } else if (!strcmp(argv[i], "--cert") && i + 1 < argc) {
            cert = argv[++i];
        } else if (!strcmp(argv[i], "--key") && i + 1 < argc) {
            key = argv[++i];
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            if (fb_parse_duration(argv[++i], &timeout_ns) < 0) {
                fprintf(stderr, "fieldbridge spb-dump: bad duration '%s'\n", argv[i]);
                return 2;
            }
        } else if (!url && argv[i][0] != '-') {
            url = argv[i];
        } else {
            fprintf(stderr, "fieldbridge spb-dump: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!url) {
        fprintf(stderr, "fieldbridge spb-dump: missing broker URL (mqtt://127.0.0.1:1883)\n");
        return 2;
    }
    char host[256];
    int port = 1883;
    bool tls = false;
    const char *h = url;
    if (!strncmp(h, "mqtt://", 7)) {
        h += 7;
    } else if (!strncmp(h, "mqtts://", 8)) {
        h += 8;
        tls = true;
        port = 8883;
    } else {
        fprintf(stderr, "fieldbridge spb-dump: URL must start with mqtt:// or mqtts://\n");
        return 2;
    }
    snprintf(host, sizeof host, "%s", h);
    char *colon = strrchr(host, ':');
    char *slash = strchr(host, '/');
    if (slash) *slash = 0;
    if (colon && (!slash || colon < slash)) {
        *colon = 0;
        port = atoi(colon + 1);
    }
    if (!*host || port <= 0 || port > 65535) {
        fprintf(stderr, "fieldbridge spb-dump: bad broker URL '%s'\n", url);
        return 2;
    }
    if ((cafile || cert || key) && !tls) {
        fprintf(stderr, "fieldbridge spb-dump: --cafile, --cert and --key need an mqtts:// URL\n");
        return 2;
    }
    if (!cert != !key) {
        fprintf(stderr, "fieldbridge spb-dump: --cert and --key go together\n");
        return 2;
    }
    struct {
        const char *path;
        enum fb_opt_kind kind;
    } files[] = {{cafile, FB_OPT_CERT}, {cert, FB_OPT_CERT}, {key, FB_OPT_KEY}};
    for (size_t i = 0; i < 3; i++) {
        struct fb_err e = {0};
        if (files[i].path && fb_check_file(files[i].path, files[i].kind, &e) < 0) {
            fprintf(stderr, "fieldbridge spb-dump: %s\n", e.msg);
            return 2;
        }
    }
    mosquitto_lib_init();
    struct dump_ctx d = {.count = count, .rebirth = rebirth};
    fb_buf_init(&d.out);
    fb_buf_init(&d.cmd);
    fb_spb_enc_init(&d.enc);
    struct mosquitto *m = mosquitto_new(NULL, true, &d);
    int rc = 2;
    if (!m) {
        fprintf(stderr, "fieldbridge spb-dump: %s\n", strerror(errno));
        goto out;
    }
    if (user) mosquitto_username_pw_set(m, user, getenv("MQTT_PASSWORD"));
    if (tls && (cafile || cert)) {
        /* a private CA and/or a client certificate; without --cafile the system's CAs */
        if (!cafile) mosquitto_int_option(m, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
        int t = mosquitto_tls_set(m, cafile, cafile ? NULL : "/etc/ssl/certs", cert, key, NULL);
        if (t != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "fieldbridge spb-dump: TLS files: %s\n", mosquitto_strerror(t));
            goto out;
        }
    } else if (tls) {
        mosquitto_int_option(m, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
    }
    mosquitto_connect_callback_set(m, on_connect);
    mosquitto_message_callback_set(m, on_message);
    int r = mosquitto_connect(m, host, port, 30);
    if (r != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "fieldbridge spb-dump: cannot connect to %s:%d: %s\n", host, port,
                r == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(r));
        rc = 1;
        goto out;
    }
    mosquitto_subscribe(m, NULL, filter, 0);
    int64_t end = timeout_ns > 0 ? fb_mono_ns() + timeout_ns : 0;
    rc = 0;
    for (;;) {
        r = mosquitto_loop(m, 200, 1);
        if (count > 0 && d.seen >= count) break;
        if (end && fb_mono_ns() >= end) {
            if (d.seen == 0) rc = 1;
            break;
        }
        if (r != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "fieldbridge spb-dump: connection lost: %s\n", mosquitto_strerror(r));
            rc = 1;
            break;
        }
    }
    mosquitto_disconnect(m);
out:
    if (m) mosquitto_destroy(m);
    for (size_t i = 0; i < d.nb; i++) {
        birth_clear(&d.b[i]);
        free(d.b[i].key);
    }
    free(d.b);
    for (size_t i = 0; i < d.nnodes; i++) free(d.nodes[i]);
    free(d.nodes);
    fb_buf_free(&d.out);
    fb_buf_free(&d.cmd);
    fb_spb_enc_free(&d.enc);
    mosquitto_lib_cleanup();
    return rc;
}
