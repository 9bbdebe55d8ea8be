/* session.c — one MQTT client session (libmosquitto 2.0) for the sinks that
 * speak MQTT (session.h).
 *
 * Threads.  The sink's send() publishes — on the sink thread, or on a
 * connection thread that hands its batch straight over (core/publish.c);
 * our own network thread connects and runs every libmosquitto callback it
 * reads; other threads (the command router replying) may publish too.  We
 * run the network loop ourselves instead of mosquitto_loop_start() because
 * its built-in reconnect (a) gives up for good on "fatal" errors such as a
 * TLS handshake or DNS failure while the broker restarts, (b) reconnects with
 * a blocking connect() that can hold shutdown for minutes against a
 * black-holed host, and (c) has no jitter.  Ours reconnects with
 * mosquitto_connect_async (non-blocking connect), exponential backoff between
 * reconnect.min and reconnect.max with equal jitter, moves to the next server
 * of a failover list when a connect fails or a sink asks, and checks for
 * shutdown at least once a second.  Open therefore never blocks and a broker
 * that is down at start-up is fine.
 *
 * Writes (direct_io, plain TCP).  In libmosquitto's threaded mode every
 * publish only queues its packet and writes a byte to an internal socket
 * pair to wake the network thread, which then writes the packet; together
 * with waking for every PUBACK that was two thread wake-ups per message, most
 * of the CPU a message cost (BENCHMARKS.md).  So over plain TCP the client is
 * not in threaded mode: mosquitto_publish() writes the packet on the
 * publishing thread, the tracked publisher then reads whatever has arrived
 * (PUBACKs, commands) itself, and while tracked publications keep coming
 * (MS_ACTIVE_NS) the network thread does not watch the socket at all — it
 * polls its own eventfd and a short timeout instead of libmosquitto's socket
 * pair.  One reader at a time (rd_mu).  Over TLS one SSL object must not be
 * used by two threads at once, so TLS keeps the threaded mode: the network
 * thread does all I/O.  Outside threaded mode libmosquitto also writes the
 * PUBACK of a received QoS 1 message at once, before on_message runs, so a
 * session that must acknowledge only what it has handled (ingest: once
 * stored; opts.ack_after_handling) keeps the threaded mode too, where the
 * acknowledgement waits in the queue until the callback returns.  Either
 * way libmosquitto's log callback is removed
 * once connected (unless logging at debug level): with one set it formats a
 * line for every packet.
 *
 * Delivery.  A tracked publication remembers (mid → batch id) in a fixed
 * open-addressing table sized from max_inflight (no allocation per message).
 * The PUBACK/PUBCOMP (on_publish) reports fb_sink_done(FB_SENT), or FB_DROP
 * when an MQTT 5 broker refuses it with a reason code >= 0x80.  QoS 0
 * messages are reported sent once libmosquitto has queued them.  While
 * disconnected, publications are reported FB_RETRY at once (they are not
 * handed to libmosquitto, whose own queue is unbounded).  When max_inflight
 * messages await their acknowledgement, a tracked publish waits
 * (back-pressure).  Messages in flight when the connection drops stay in
 * libmosquitto's session state and are resent after the reconnect; until
 * they are acknowledged ready() says no, so newer buffered records never
 * overtake them, and if the session does not resend them within 5 s they go
 * back to the store (duplicates are possible, loss is not).  What is still
 * unacknowledged at close is reported FB_RETRY.  A publication whose
 * publisher wants its acknowledgement without a store behind it
 * (fb_mqtt_session_publish_acked: the fleet outbox's OTA result) is kept in
 * a small list (mid → token) and reported through ops->acked: FB_SENT on
 * its PUBACK, FB_RETRY as soon as the connection drops or the session
 * closes (its publisher sends it again: at least once, maybe twice).
 *
 * Window.  ready() says yes only while fewer than the in-flight window
 * (window.h: what the link needs, from the acknowledgements' round trips,
 * at most max_inflight and an MQTT 5 broker's Receive Maximum) await their
 * acknowledgement; once full, not again until it has drained to three
 * quarters — the sink thread is then woken once (on_publish), not per
 * acknowledgement, and only if batches wait for it in its queue or store.
 * ready(pace) waits up to MS_ROOM_WAIT_NS for a full window, reading the
 * PUBACKs on the caller's thread: a connection thread that polls as fast as
 * the device answers is paced by the broker instead of handing every batch
 * to the sink thread through the memory queue (an encode, a decode and a
 * wake-up per batch).
 *
 * TLS.  With tls.ca or tls.ca_path the session hands libmosquitto a TLS
 * context of its own (MOSQ_OPT_SSL_CTX, "with defaults": libmosquitto still
 * loads the CA, client certificate and key into it and checks the host
 * name).  libmosquitto 2.0 has no CRL option, so this is where tls.crl goes:
 * the CRLs are put into the context's certificate store with CRL checking
 * for the whole chain, and the file is read again before a connect when it
 * changed (CRLs are reissued while the gateway runs).  The context also
 * remembers why OpenSSL refused the broker's certificate ("certificate
 * revoked", "certificate has expired"), which libmosquitto only reports as
 * "certificate verify failed".  Network thread only.
 *
 * Lock order: rd_mu → ms->mu.  ms->mu is taken inside libmosquitto callbacks
 * (which may hold libmosquitto's callback mutex).  A PUBACK must not be
 * handled before its mid is in the table: in threaded mode (TLS) a tracked
 * publish holds ms->mu around mosquitto_publish(), which then only queues and
 * never runs callbacks; with direct_io mosquitto_publish() writes and may run
 * callbacks itself (a queued QoS 0 message or DISCONNECT written on the way),
 * so it holds rd_mu instead — nobody reads the socket until the mid is in.
 */
#include "north/mqtt/session.h"

#include <errno.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/plugin.h"
#include "core/thread.h"
#include "core/url.h"
#include "north/mqtt/window.h"

#define MS_SEC 1000000000LL
#define MS_LOOP_TIMEOUT_MS 1000
#define MS_CONN_LOG_NS (60 * MS_SEC)   /* the same connection failure is logged once a minute */
#define MS_DRAIN_WAIT_NS 2000000000LL  /* on shutdown, max wait for in-flight room */
#define MS_RESEND_WAIT_NS 5000000000LL /* after a reconnect, wait this long for the session's resends */
/* direct_io: while tracked publications come at least this often, their
 * publisher reads the socket and the network thread does not watch it */
#define MS_ACTIVE_NS 5000000LL
#define MS_ACKS_MAX 32 /* fb_mqtt_session_publish_acked awaiting their PUBACK at once */
/* a full window: how long ready() waits for it to drain (see "Window") */
#define MS_ROOM_WAIT_NS 1000000LL

struct slot {
    int mid; /* 0 = empty (libmosquitto mids are 1..65535) */
    uint64_t id;
    int64_t at; /* monotonic time of the publication (tracked ones) */
};

struct fb_mqtt_session {
    char name[32];
    const struct fb_broker_cfg *cfg;
    struct fb_sink_inst *sink; /* NULL for a source (ingest): no tracked publications */
    _Atomic uint64_t *errors;  /* the owner's error counter and connected flag */
    _Atomic int *connected_metric;
    bool persistent;
    uint32_t expiry_s;
    const struct fb_mqtt_session_ops *ops;
    void *obj;
    struct mosquitto *mosq;
    bool v5;
    int keepalive_s;

    /* network thread */
    pthread_t thr;
    bool thr_started;
    bool direct_io;              /* plain TCP: publishers write to the socket themselves (see "Writes") */
    int wake_fd;                 /* eventfd: wakes the network thread out of its own poll (wait_net) */
    pthread_mutex_t rd_mu;       /* one reader of the socket at a time (direct_io) */
    _Atomic int64_t last_pub_ns; /* monotonic time of the last tracked publication (direct_io) */
    atomic_bool quit;
    atomic_bool connected;   /* CONNACK accepted and not yet disconnected */
    atomic_bool next_server; /* the next CONNECT goes to the next server */
    _Atomic uint32_t srv;    /* index of the server in use */
    bool got_connack;        /* this socket got a CONNACK (accepted or not) */
    bool tcp_up;             /* this socket's TCP connection was established */
    struct fb_backoff backoff;
    struct fb_ratelimit rl_liblog, rl_send;
    struct {
        uint64_t hash; /* of a connection failure's text, logged at */
        int64_t at_ns;
    } conn_why[4]; /* network thread */

    /* in-flight table and close handshake, under mu; cv signals changes */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct slot *slots;
    uint32_t mask, inflight, max_inflight;
    struct fb_win win;    /* how many may be in flight now (window.h) */
    bool full;            /* the window filled and has not drained to its low-water mark yet */
    bool resend_pending;  /* in flight at a disconnect: wait for the resends */
    int64_t connected_at; /* monotonic, for the resend time-out */
    int close_mid;
    bool close_acked;
    /* publications whose acknowledgement their publisher wants (publish_acked): mid → token */
    struct slot acks[MS_ACKS_MAX];
    uint32_t nacks;

    /* TLS (network thread): our context, the CRL file's identity when loaded,
     * why the broker's certificate was last refused (X509_V_ERR_*, 0 = none) */
    SSL_CTX *ssl_ctx;
    struct stat crl_st;
    atomic_int verify_err;
    char verify_subject[160];
};

/* ------------------------------------------------------- broker settings */
const char *const fb_broker_tls_keys[] = {"ca", "ca_path", "cert", "key", "crl", "verify_hostname", NULL};
const char *const fb_broker_reconnect_keys[] = {"min", "max", NULL};

/* One broker URL of url: / servers:. */
static void server_add(struct fb_cfg *r, const struct fb_cfg_node *n, const char *what, struct fb_broker_cfg *b)
{
    char *url = fb_cfg_str(r, NULL, n, what);
    if (!url) return;
    struct fb_url u;
    struct fb_err e = {0};
    if (fb_url_parse(url, &u, &e) < 0) {
        fb_cfg_error(r, n, "%s: %s", what, e.msg);
        free(url);
        return;
    }
    if (strcmp(u.scheme, "mqtt") && strcmp(u.scheme, "mqtts"))
        fb_cfg_error(r, n, "%s: scheme must be mqtt:// or mqtts://, got '%s://'", what, u.scheme);
    else if (!*u.host)
        fb_cfg_error(r, n, "%s: missing broker host", what);
    else if ((*u.path && strcmp(u.path, "/")) || u.nq)
        fb_cfg_error(r, n, "%s: a broker URL has no path or query (got '%s')", what, url);
    struct fb_broker_server *sv = realloc(b->servers, (b->nservers + 1) * sizeof *sv);
    if (!sv) {
        fb_url_free(&u);
        free(url);
        return;
    }
    b->servers = sv;
    sv = &b->servers[b->nservers++];
    sv->url = url;
    sv->tls = !strcmp(u.scheme, "mqtts");
    sv->host = strdup(u.host);
    sv->port = u.port ? u.port : sv->tls ? 8883 : 1883;
    if (sv->tls) b->tls = true;
    fb_url_free(&u);
}

static uint64_t files_sig(const struct fb_broker_cfg *b);

void fb_broker_cfg_load(struct fb_cfg *r, const struct fb_cfg_map *m, const char *what, size_t max_client_id,
                        struct fb_broker_cfg *b)
{
    memset(b, 0, sizeof *b);
    b->version = 5;
    b->tls_verify_hostname = true;
    b->keepalive_ns = 30 * MS_SEC;
    b->reconnect_min_ns = MS_SEC;
    b->reconnect_max_ns = 30 * MS_SEC;

    char key[96];
    struct fb_cfg_node *n, *x;
    struct fb_cfg_node *un = fb_cfg_get(m, "url"), *ln = fb_cfg_get(m, "servers");
    if (un && ln) fb_cfg_error(r, ln, "give either %s.url or %s.servers, not both", what, what);
    snprintf(key, sizeof key, "%s.url", what);
    if (un) server_add(r, un, key, b);
    if (ln) {
        snprintf(key, sizeof key, "%s.servers", what);
        if (fb_cfg_kind(ln) != FB_CFG_LIST || fb_cfg_list_len(ln) == 0)
            fb_cfg_error(r, ln, "%s must be a list of broker URLs [mqtt://a:1883, mqtt://b:1883]", key);
        else
            for (size_t i = 0; i < fb_cfg_list_len(ln); i++) server_add(r, fb_cfg_list_at(r, ln, i), key, b);
    }
    if (!un && !ln) fb_cfg_error(r, NULL, "%s.url is required (e.g. mqtt://127.0.0.1:1883)", what);

    if ((n = fb_cfg_get(m, "version"))) {
        snprintf(key, sizeof key, "%s.version", what);
        char *v = fb_cfg_str(r, NULL, n, key);
        if (v) {
            if (!strcmp(v, "5") || !strcmp(v, "5.0"))
                b->version = 5;
            else if (!strcmp(v, "3.1.1") || !strcmp(v, "3") || !strcmp(v, "311") || !strcmp(v, "4"))
                b->version = 3;
            else
                fb_cfg_error(r, n, "%s: expected 5 or 3.1.1, got '%s'", key, v);
            free(v);
        }
    }
    if ((n = fb_cfg_get(m, "client_id"))) {
        snprintf(key, sizeof key, "%s.client_id", what);
        b->client_id = fb_cfg_str(r, NULL, n, key);
        if (b->client_id && (!*b->client_id || strlen(b->client_id) > max_client_id))
            fb_cfg_error(r, n, "%s must be 1..%zu characters", key, max_client_id);
    }
    if ((n = fb_cfg_get(m, "username"))) {
        snprintf(key, sizeof key, "%s.username", what);
        b->username = fb_cfg_str(r, NULL, n, key);
    }
    b->password = fb_cfg_secret(r, m, "password", what);
    if (b->password && !b->username)
        fb_cfg_note(r, fb_cfg_get(m, "password") ? fb_cfg_get(m, "password") : fb_cfg_get(m, "password_file"),
                    "a password without %s.username is usually not what the broker expects", what);

    struct fb_cfg_map t = {0};
    struct fb_cfg_node *tn = fb_cfg_get(m, "tls");
    snprintf(key, sizeof key, "%s.tls", what);
    if (tn && fb_cfg_map_load(r, tn, key, &t)) {
        fb_cfg_map_check(r, &t, fb_broker_tls_keys, key, false);
        b->tls = true;
        char k2[128];
        if ((x = fb_cfg_get(&t, "ca"))) {
            snprintf(k2, sizeof k2, "%s.ca", key);
            b->ca = fb_cfg_file_ref(r, x, k2, FB_OPT_CERT, NULL);
        }
        if ((x = fb_cfg_get(&t, "ca_path"))) {
            snprintf(k2, sizeof k2, "%s.ca_path", key);
            b->ca_path = fb_cfg_file_ref(r, x, k2, FB_OPT_DIR, NULL);
        }
        if ((x = fb_cfg_get(&t, "cert"))) {
            snprintf(k2, sizeof k2, "%s.cert", key);
            b->cert = fb_cfg_file_ref(r, x, k2, FB_OPT_CERT, NULL);
        }
        if ((x = fb_cfg_get(&t, "key"))) {
            snprintf(k2, sizeof k2, "%s.key", key);
            b->key = fb_cfg_file_ref(r, x, k2, FB_OPT_KEY, NULL);
        }
        if ((x = fb_cfg_get(&t, "crl"))) {
            snprintf(k2, sizeof k2, "%s.crl", key);
            b->crl = fb_cfg_file_ref(r, x, k2, FB_OPT_CRL, NULL);
            if (!b->ca && !b->ca_path)
                fb_cfg_error(r, x, "%s needs %s.ca or %s.ca_path (the CA whose revoked certificates it lists)", k2, key,
                             key);
        }
        if ((x = fb_cfg_get(&t, "verify_hostname"))) {
            snprintf(k2, sizeof k2, "%s.verify_hostname", key);
            fb_cfg_bool(r, NULL, x, k2, &b->tls_verify_hostname);
        }
        if (!b->cert != !b->key)
            fb_cfg_error(r, tn, "%s: cert and key go together (client certificate authentication)", key);
        fb_cfg_map_free(&t);
    }
    if ((n = fb_cfg_get(m, "keepalive"))) {
        snprintf(key, sizeof key, "%s.keepalive", what);
        if (fb_cfg_dur(r, NULL, n, key, false, &b->keepalive_ns) &&
            (b->keepalive_ns > 65535 * MS_SEC || (b->keepalive_ns > 0 && b->keepalive_ns < MS_SEC)))
            fb_cfg_error(r, n, "%s must be 0 (off) or between 1s and 65535s", key);
    }
    snprintf(key, sizeof key, "%s.reconnect", what);
    if ((n = fb_cfg_get(m, "reconnect")) && fb_cfg_map_load(r, n, key, &t)) {
        fb_cfg_map_check(r, &t, fb_broker_reconnect_keys, key, false);
        char k2[128];
        if ((x = fb_cfg_get(&t, "min"))) {
            snprintf(k2, sizeof k2, "%s.min", key);
            fb_cfg_dur(r, NULL, x, k2, true, &b->reconnect_min_ns);
        }
        if ((x = fb_cfg_get(&t, "max"))) {
            snprintf(k2, sizeof k2, "%s.max", key);
            fb_cfg_dur(r, NULL, x, k2, true, &b->reconnect_max_ns);
        }
        if (b->reconnect_min_ns > b->reconnect_max_ns) fb_cfg_error(r, n, "%s: min is larger than max", key);
        fb_cfg_map_free(&t);
    }
    b->files_sig = files_sig(b);
}

/* FNV-1a over the referenced files' identity and change time, so that a
 * renewed certificate or key under the same path makes the settings differ. */
static uint64_t files_sig(const struct fb_broker_cfg *b)
{
    const char *files[] = {b->ca, b->ca_path, b->cert, b->key};
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        struct stat st;
        uint64_t v[4] = {0, 0, 0, 0};
        if (files[i] && stat(files[i], &st) == 0) {
            v[0] = (uint64_t)st.st_ino;
            v[1] = (uint64_t)st.st_size;
            v[2] = (uint64_t)st.st_mtim.tv_sec;
            v[3] = (uint64_t)st.st_mtim.tv_nsec;
        }
        const unsigned char *p = (const unsigned char *)v;
        for (size_t k = 0; k < sizeof v; k++) h = (h ^ p[k]) * 1099511628211ULL;
    }
    return h;
}

static bool str_eq(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

bool fb_broker_cfg_equal(const struct fb_broker_cfg *a, const struct fb_broker_cfg *b)
{
    if (a->nservers != b->nservers) return false;
    for (uint32_t i = 0; i < a->nservers; i++)
        if (!str_eq(a->servers[i].url, b->servers[i].url)) return false;
    return a->version == b->version && str_eq(a->client_id, b->client_id) && str_eq(a->username, b->username) &&
           str_eq(a->password, b->password) && str_eq(a->ca, b->ca) && str_eq(a->ca_path, b->ca_path) &&
           str_eq(a->cert, b->cert) && str_eq(a->key, b->key) && a->tls == b->tls &&
           a->tls_verify_hostname == b->tls_verify_hostname && a->keepalive_ns == b->keepalive_ns &&
           a->reconnect_min_ns == b->reconnect_min_ns && a->reconnect_max_ns == b->reconnect_max_ns &&
           a->files_sig == b->files_sig;
}

void fb_broker_cfg_clear(struct fb_broker_cfg *b)
{
    if (!b) return;
    for (uint32_t i = 0; i < b->nservers; i++) {
        free(b->servers[i].url);
        free(b->servers[i].host);
    }
    free(b->servers);
    free(b->client_id);
    free(b->username);
    if (b->password) {
        explicit_bzero(b->password, strlen(b->password));
        free(b->password);
    }
    free(b->ca);
    free(b->ca_path);
    free(b->cert);
    free(b->key);
    free(b->crl);
    memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------- helpers */
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static void lib_init(void) { mosquitto_lib_init(); }

/* Wait on ms->cv (mu held) until the monotonic deadline; false on timeout. */
static bool wait_until(struct fb_mqtt_session *ms, int64_t deadline)
{
    return fb_cond_wait_until(&ms->cv, &ms->mu, deadline);
}

static void broadcast(struct fb_mqtt_session *ms)
{
    pthread_mutex_lock(&ms->mu);
    pthread_cond_broadcast(&ms->cv);
    pthread_mutex_unlock(&ms->mu);
}

/* Wake the network thread out of poll() (direct_io: it does not watch
 * libmosquitto's socket pair). */
static void wake_net(struct fb_mqtt_session *ms)
{
    if (ms->wake_fd >= 0) {
        uint64_t one = 1;
        if (write(ms->wake_fd, &one, sizeof one) < 0) { /* already signalled: fine */
        }
    }
}

const char *fb_mqtt_session_strerror(const struct fb_mqtt_session *ms, int rc)
{
    /* MQTT 5 reason codes are >= 0x80 for errors; libmosquitto's own codes are small */
    if (ms->v5 && rc >= 0x80) return mosquitto_reason_string(rc);
    if (rc == MOSQ_ERR_ERRNO) return strerror(errno);
    return mosquitto_strerror(rc);
}

bool fb_mqtt_session_connected(const struct fb_mqtt_session *ms) { return atomic_load(&ms->connected); }
bool fb_mqtt_session_v5(const struct fb_mqtt_session *ms) { return ms->v5; }
const struct fb_broker_server *fb_mqtt_session_server(const struct fb_mqtt_session *ms)
{
    return &ms->cfg->servers[atomic_load(&ms->srv)];
}

/* ----------------------------------------------------------- in-flight map */
/* The sink's in-flight gauges (mu held). */
static void window_metrics(struct fb_mqtt_session *ms)
{
    if (!ms->sink) return;
    atomic_store_explicit(&ms->sink->m.inflight, ms->inflight, memory_order_relaxed);
    atomic_store_explicit(&ms->sink->m.window, ms->win.win, memory_order_relaxed);
}

static uint32_t slot_of(const struct fb_mqtt_session *ms, int mid) { return ((uint32_t)mid * 2654435761u) & ms->mask; }

static void map_put(struct fb_mqtt_session *ms, int mid, uint64_t id, int64_t at)
{
    /* the table holds twice max_inflight slots and publish waits below max_inflight */
    FB_ASSERT(ms->inflight < ms->mask);
    uint32_t i = slot_of(ms, mid);
    while (ms->slots[i].mid != 0 && ms->slots[i].mid != mid) i = (i + 1) & ms->mask;
    if (ms->slots[i].mid == 0) ms->inflight++;
    ms->slots[i].mid = mid;
    ms->slots[i].id = id;
    ms->slots[i].at = at;
    if (ms->inflight >= ms->win.win) ms->full = true;
}

/* Removes mid; returns true and its batch id and publication time if it was there. */
static bool map_take(struct fb_mqtt_session *ms, int mid, uint64_t *id, int64_t *at)
{
    uint32_t i = slot_of(ms, mid);
    while (ms->slots[i].mid != mid) {
        if (ms->slots[i].mid == 0) return false;
        i = (i + 1) & ms->mask;
    }
    *id = ms->slots[i].id;
    *at = ms->slots[i].at;
    ms->inflight--;
    /* backward-shift deletion keeps every probe chain unbroken without tombstones */
    uint32_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & ms->mask;
        if (ms->slots[j].mid == 0) break;
        uint32_t home = slot_of(ms, ms->slots[j].mid);
        /* move j into the hole unless its home lies cyclically in (hole, j] */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            ms->slots[hole] = ms->slots[j];
            hole = j;
        }
    }
    ms->slots[hole].mid = 0;
    return true;
}

/* Report every tracked publication FB_RETRY and empty the table (mu held;
 * dropped around each report, as fb_sink_done takes the sink's lock). */
static uint32_t retry_all(struct fb_mqtt_session *ms)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i <= ms->mask; i++)
        if (ms->slots[i].mid) {
            uint64_t id = ms->slots[i].id;
            ms->slots[i].mid = 0;
            n++;
            pthread_mutex_unlock(&ms->mu);
            if (ms->sink) fb_sink_done(ms->sink, id, FB_RETRY);
            pthread_mutex_lock(&ms->mu);
        }
    ms->inflight = 0;
    ms->full = false;
    window_metrics(ms);
    return n;
}

/* Acknowledgements a publisher waits for (fb_mqtt_session_publish_acked), mu held. */
static bool acks_take(struct fb_mqtt_session *ms, int mid, uint64_t *tok)
{
    for (uint32_t i = 0; i < ms->nacks; i++)
        if (ms->acks[i].mid == mid) {
            *tok = ms->acks[i].id;
            ms->acks[i] = ms->acks[--ms->nacks];
            return true;
        }
    return false;
}

/* Every acknowledgement still awaited is reported FB_RETRY (the connection
 * or the session ended: the publisher sends it again on the next one).
 * mu not held. */
static void acks_retry_all(struct fb_mqtt_session *ms)
{
    for (;;) {
        pthread_mutex_lock(&ms->mu);
        uint64_t tok = ms->nacks ? ms->acks[--ms->nacks].id : 0;
        pthread_mutex_unlock(&ms->mu);
        if (!tok) break;
        if (ms->ops->acked) ms->ops->acked(ms->obj, tok, FB_RETRY);
    }
}

/* A connection failure, from the network thread: the same reason again is
 * logged at most once a minute (a broker down for a day writes no flood), a
 * new reason at once, so a restarted broker that now presents a revoked
 * certificate is reported on the attempt that found it.  The last few
 * reasons are remembered: servers: in turn each keep their own. */
static void conn_failed(struct fb_mqtt_session *ms, const char *fmt, ...) FB_PRINTF(2, 3);
static void conn_failed(struct fb_mqtt_session *ms, const char *fmt, ...)
{
    char msg[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *c = msg; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    int64_t now = fb_mono_ns();
    size_t slot = 0;
    for (size_t i = 0; i < sizeof ms->conn_why / sizeof ms->conn_why[0]; i++) {
        if (ms->conn_why[i].hash == h) {
            if (now - ms->conn_why[i].at_ns < MS_CONN_LOG_NS) return;
            slot = i;
            break;
        }
        if (ms->conn_why[i].at_ns < ms->conn_why[slot].at_ns) slot = i; /* the oldest goes */
    }
    ms->conn_why[slot].hash = h;
    ms->conn_why[slot].at_ns = now;
    fb_warn(NULL, NULL, "%s: %s", ms->name, msg);
}

/* ---------------------------------------------------- libmosquitto callbacks */
static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props)
{
    (void)mosq;
    struct fb_mqtt_session *ms = obj;
    const struct fb_broker_server *sv = fb_mqtt_session_server(ms);
    ms->got_connack = true;
    if (rc != 0) {
        atomic_fetch_add(ms->errors, 1);
        const char *why = ms->v5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc);
        conn_failed(ms, "%s:%d refused the connection: %s", sv->host, sv->port, why);
        if (ms->cfg->nservers > 1) atomic_store(&ms->next_server, true);
        return;
    }
    if (ms->persistent)
        fb_info(NULL, NULL, "%s: %s", ms->name,
                flags & 1 ? "the broker resumed our session (what it queued for us follows)"
                          : "the broker started a new session for us");
    /* An MQTT 5 broker says how many QoS > 0 messages it takes at once
     * (Receive Maximum; Mosquitto's default is 20).  libmosquitto holds any
     * beyond that unsent in the same list it walks per message, so the
     * window stops there too. */
    uint16_t recv_max = 0;
    if (ms->v5 && props) mosquitto_property_read_int16(props, MQTT_PROP_RECEIVE_MAXIMUM, &recv_max, false);
    pthread_mutex_lock(&ms->mu);
    ms->connected_at = fb_mono_ns();
    fb_win_cap(&ms->win, recv_max && recv_max < ms->max_inflight ? recv_max : ms->max_inflight);
    window_metrics(ms);
    pthread_mutex_unlock(&ms->mu);
    fb_backoff_reset(&ms->backoff);
    memset(ms->conn_why, 0, sizeof ms->conn_why);
    /* With a log callback libmosquitto formats (malloc, vsnprintf) a line for
     * every packet it sends or receives — about a third of the client's CPU
     * per message.  What it reports at warning level concerns connecting
     * (TLS, sockets), so once connected it only listens at debug level; every
     * connect attempt sets it again (net_thread). */
    if (fb_log_current_level < FB_LOG_DEBUG) mosquitto_log_callback_set(ms->mosq, NULL);
    if (ms->ops->connected) ms->ops->connected(ms->obj, ms);
    atomic_store(&ms->connected, true);
    atomic_store(ms->connected_metric, 1);
    broadcast(ms);
    if (ms->sink) fb_sink_wake(ms->sink);
}

/* The connection ended (on_disconnect, or the loop failed without it). */
static void lost(struct fb_mqtt_session *ms, bool clean, const char *why)
{
    if (!atomic_exchange(&ms->connected, false)) return;
    atomic_store(ms->connected_metric, 0);
    const struct fb_broker_server *sv = fb_mqtt_session_server(ms);
    if (clean)
        fb_info(NULL, NULL, "%s: disconnected from %s:%d", ms->name, sv->host, sv->port);
    else if (!atomic_load(&ms->next_server))
        fb_warn(NULL, NULL, "%s: connection to %s:%d lost: %s", ms->name, sv->host, sv->port, why);
    if (ms->ops->disconnected) ms->ops->disconnected(ms->obj, ms);
    /* libmosquitto may resend them after the reconnect, or not (see "Delivery"):
     * their publisher sends them again, so at least one copy arrives */
    acks_retry_all(ms);
    if (ms->sink) fb_sink_wake(ms->sink);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    struct fb_mqtt_session *ms = obj;
    pthread_mutex_lock(&ms->mu);
    if (ms->inflight > 0) ms->resend_pending = true;
    pthread_mutex_unlock(&ms->mu);
    lost(ms, rc == 0, fb_mqtt_session_strerror(ms, rc));
    broadcast(ms);
    wake_net(ms); /* it may be another thread that saw the socket close */
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    struct fb_mqtt_session *ms = obj;
    uint64_t id = 0, tok = 0;
    int64_t at = 0;
    pthread_mutex_lock(&ms->mu);
    bool ours = map_take(ms, mid, &id, &at);
    bool acked = !ours && acks_take(ms, mid, &tok);
    bool room = false;
    if (ours) {
        int64_t now = fb_mono_ns();
        fb_win_ack(&ms->win, now - at, now);
        /* a full window takes publications again at its low-water mark: the
         * sink thread, if it waits with a queue, is woken then, once */
        room = ms->full && ms->inflight <= fb_win_low(&ms->win);
        if (room) ms->full = false;
    }
    if (ms->inflight == 0) ms->resend_pending = false;
    if (mid == ms->close_mid) ms->close_acked = true;
    pthread_cond_broadcast(&ms->cv);
    window_metrics(ms);
    pthread_mutex_unlock(&ms->mu);
    /* the sink thread matters only if batches wait for it (its queue, the
     * store); otherwise the publisher that filled the window sends the next
     * batch itself (core/publish.c) and a wake-up would find nothing to do */
    if (room && ms->sink && fb_sink_waiting(ms->sink)) fb_sink_wake(ms->sink);
    if (reason >= 0x80) {
        atomic_fetch_add(ms->errors, 1);
        if (fb_ratelimit_ok(&ms->rl_send, fb_mono_ns()))
            fb_warn(NULL, NULL, "%s: the broker refused a message: %s", ms->name, mosquitto_reason_string(reason));
    }
    if (ours && ms->sink) fb_sink_done(ms->sink, id, reason >= 0x80 ? FB_DROP : FB_SENT);
    if (acked && ms->ops->acked) ms->ops->acked(ms->obj, tok, reason >= 0x80 ? FB_DROP : FB_SENT);
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *granted,
                         const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    (void)mid;
    struct fb_mqtt_session *ms = obj;
    for (int i = 0; i < n; i++)
        if (granted[i] >= 0x80) {
            atomic_fetch_add(ms->errors, 1);
            fb_warn(NULL, NULL, "%s: the broker refused a subscription (%s): %s", ms->name,
                    ms->v5 ? mosquitto_reason_string(granted[i]) : "failure",
                    ms->sink ? "commands will not arrive" : "its messages will not arrive");
        }
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    (void)mosq;
    struct fb_mqtt_session *ms = obj;
    if (ms->ops->message && msg->topic && msg->payloadlen >= 0) ms->ops->message(ms->obj, msg, props);
}

static void on_liblog(struct mosquitto *mosq, void *obj, int level, const char *str)
{
    (void)mosq;
    struct fb_mqtt_session *ms = obj;
    /* TLS and socket failures are only explained here (e.g. "certificate verify failed") */
    if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) {
        if (fb_ratelimit_ok(&ms->rl_liblog, fb_mono_ns())) fb_warn(NULL, NULL, "%s: libmosquitto: %s", ms->name, str);
    } else if (level & (MOSQ_LOG_DEBUG | MOSQ_LOG_INFO | MOSQ_LOG_NOTICE)) {
        fb_debug(NULL, NULL, "%s: libmosquitto: %s", ms->name, str);
    }
}

/* ------------------------------------------------------------------- TLS */
/* Each certificate's result as OpenSSL found it (the default). */
static int per_cert(int ok, X509_STORE_CTX *x)
{
    (void)x;
    return ok;
}

/* The verification of the broker's chain: libssl calls this instead of
 * X509_verify_cert.  libmosquitto 2.0.11 installs a per-certificate callback
 * of its own (the host-name check) that, with a context it did not create,
 * cannot find its client (its SSL ex_data index is made only when it creates
 * a context itself) and refuses every chain as "unspecified"; so it is
 * replaced here by OpenSSL's own host-name (or IP address) check, which
 * follows the same rules (subjectAltName, else the CN) unless
 * tls.verify_hostname is false.  Why a chain failed is kept for the log. */
static int verify_chain(X509_STORE_CTX *x, void *arg)
{
    struct fb_mqtt_session *ms = arg;
    X509_STORE_CTX_set_verify_cb(x, per_cert);
    if (ms->cfg->tls_verify_hostname) {
        X509_VERIFY_PARAM *p = X509_STORE_CTX_get0_param(x);
        const char *host = fb_mqtt_session_server(ms)->host;
        if (X509_VERIFY_PARAM_set1_ip_asc(p, host) != 1) {
            X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            X509_VERIFY_PARAM_set1_host(p, host, 0);
        }
    }
    int ok = X509_verify_cert(x);
    int e = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(x);
    if (e != X509_V_OK) {
        X509 *cur = X509_STORE_CTX_get_current_cert(x);
        ms->verify_subject[0] = 0;
        if (cur) X509_NAME_oneline(X509_get_subject_name(cur), ms->verify_subject, sizeof ms->verify_subject);
    }
    atomic_store(&ms->verify_err, e);
    return ok;
}

/* A certificate store holding the CRLs of `path` (PEM: any number; DER: one),
 * checked for every certificate of the chain.  NULL with err set. */
static X509_STORE *crl_store(const char *name, const char *path, int *ncrl, struct fb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fb_err_set(err, FB_EIO, "%s.tls.crl: cannot read %s: %s", name, path, strerror(errno));
        return NULL;
    }
    X509_STORE *st = X509_STORE_new();
    int n = 0;
    STACK_OF(X509_INFO) *inf = st ? PEM_X509_INFO_read(f, NULL, NULL, NULL) : NULL;
    for (int i = 0; inf && i < sk_X509_INFO_num(inf); i++) {
        X509_INFO *xi = sk_X509_INFO_value(inf, i);
        if (xi->crl && X509_STORE_add_crl(st, xi->crl) == 1) n++;
    }
    sk_X509_INFO_pop_free(inf, X509_INFO_free);
    if (st && !n) { /* not PEM: one DER CRL */
        rewind(f);
        X509_CRL *c = d2i_X509_CRL_fp(f, NULL);
        if (c && X509_STORE_add_crl(st, c) == 1) n++;
        X509_CRL_free(c);
    }
    fclose(f);
    if (!n) {
        X509_STORE_free(st);
        fb_err_set(err, FB_EINVAL, "%s.tls.crl: %s holds no certificate revocation list (PEM or DER)", name, path);
        return NULL;
    }
    /* every CA in the chain must have a CRL here: a revoked intermediate counts too */
    X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    *ncrl = n;
    return st;
}

/* Before a connect: load tls.crl again when the file changed.  A file that
 * became unreadable keeps the CRLs loaded before (and says so). */
static void crl_refresh(struct fb_mqtt_session *ms, bool first, struct fb_err *err)
{
    const char *path = ms->cfg->crl;
    struct stat st = {0};
    if (!path || !ms->ssl_ctx) return;
    if (stat(path, &st) == 0 && !first && st.st_ino == ms->crl_st.st_ino && st.st_size == ms->crl_st.st_size &&
        st.st_mtim.tv_sec == ms->crl_st.st_mtim.tv_sec && st.st_mtim.tv_nsec == ms->crl_st.st_mtim.tv_nsec)
        return;
    int n = 0;
    struct fb_err e = {0};
    X509_STORE *store = crl_store(ms->name, path, &n, &e);
    if (!store) {
        if (err) *err = e;
        if (!first && fb_ratelimit_ok(&ms->rl_liblog, fb_mono_ns()))
            fb_warn(NULL, NULL, "%s: %s; keeping the CRLs loaded before", ms->name, e.msg);
        if (!first) ms->crl_st = st; /* do not retry until it changes again */
        return;
    }
    /* the CA (and client certificate) are loaded into the new store again by
     * libmosquitto at the connect ("with defaults") */
    SSL_CTX_set_cert_store(ms->ssl_ctx, store);
    ms->crl_st = st;
    if (!first) fb_info(NULL, NULL, "%s: tls.crl %s changed: %d CRL%s loaded", ms->name, path, n, n == 1 ? "" : "s");
}

/* "A TLS error occurred." + why the broker's certificate was refused, once. */
static const char *tls_detail(struct fb_mqtt_session *ms, const char *base, char *buf, size_t n)
{
    int v = atomic_exchange(&ms->verify_err, X509_V_OK);
    if (v == X509_V_OK) return base;
    snprintf(buf, n, "%s (the broker's certificate chain was refused: %s%s%s%s)", base,
             X509_verify_cert_error_string(v), ms->verify_subject[0] ? " at " : "", ms->verify_subject,
             v == X509_V_ERR_CERT_REVOKED ? "; it is listed in tls.crl" : "");
    return buf;
}

/* --------------------------------------------------------- network thread */
/* Why mosquitto_connect_async()/mosquitto_loop() failed.  libmosquitto 2.0
 * has no text for MOSQ_ERR_KEEPALIVE ("Unknown error."), which is what a
 * broker that accepts TCP but never answers CONNECT, or stops answering
 * pings, produces. */
static const char *net_err_text(const struct fb_mqtt_session *ms, int rc, int e, char *buf, size_t n)
{
    if (rc == MOSQ_ERR_ERRNO) return strerror(e);
    if (rc == MOSQ_ERR_KEEPALIVE) {
        snprintf(buf, n, "%s within the keepalive (%d s); retrying",
                 ms->got_connack ? "no answer to PINGREQ"
                 : ms->tcp_up    ? "no CONNACK: the broker accepted the TCP connection but did not answer CONNECT"
                                 : "no answer to the TCP connection request (the host is unreachable or a firewall "
                                   "drops the packets)",
                 ms->keepalive_s);
        return buf;
    }
    return mosquitto_strerror(rc);
}

/* Wait (at most `to`) for `events` on the socket fd or for a wake-up
 * (wake_net), which is cleared; the socket's revents in *revents.  ppoll's
 * result: < 0 with errno, 0 on time-out. */
static int wait_net(struct fb_mqtt_session *ms, int fd, short events, const struct timespec *to, short *revents)
{
    struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = ms->wake_fd, .events = POLLIN}};
    int n = ppoll(p, 2, to, NULL);
    if (n > 0 && (p[1].revents & POLLIN)) {
        uint64_t v;
        if (read(ms->wake_fd, &v, sizeof v) < 0) { /* nothing to clear */
        }
    }
    *revents = n > 0 ? p[0].revents : 0;
    return n;
}

/* One round of the network loop while connected over plain TCP: poll the
 * socket (and the wake-up eventfd, not libmosquitto's socket pair, which
 * every publish writes to), then read, write what publishers left queued,
 * and run the keepalive.  Returns a libmosquitto code like mosquitto_loop(). */
static int io_loop(struct fb_mqtt_session *ms)
{
    int fd = mosquitto_socket(ms->mosq);
    if (fd < 0) return MOSQ_ERR_NO_CONN;
    short events = POLLIN, rev;
    struct timespec to = {MS_LOOP_TIMEOUT_MS / 1000, (MS_LOOP_TIMEOUT_MS % 1000) * 1000000L};
    /* A publisher active within MS_ACTIVE_NS reads the PUBACKs (and commands)
     * after each publication: watching the socket too would wake this thread
     * for every acknowledgement.  It looks again once publications pause. */
    int64_t quiet = fb_mono_ns() - atomic_load(&ms->last_pub_ns);
    if (quiet >= 0 && quiet < MS_ACTIVE_NS) {
        events = 0;
        to.tv_sec = 0;
        to.tv_nsec = (long)(MS_ACTIVE_NS - quiet);
    }
    if (mosquitto_want_write(ms->mosq)) events |= POLLOUT;
    int n = wait_net(ms, fd, events, &to, &rev);
    if (n < 0 && errno != EINTR) return MOSQ_ERR_ERRNO;
    if (rev & POLLNVAL) return MOSQ_ERR_NO_CONN; /* closed by another thread */
    if (rev & (POLLIN | POLLERR | POLLHUP)) {
        pthread_mutex_lock(&ms->rd_mu);
        int rc = mosquitto_loop_read(ms->mosq, 1);
        pthread_mutex_unlock(&ms->rd_mu);
        if (rc != MOSQ_ERR_SUCCESS) return rc;
    }
    if (mosquitto_socket(ms->mosq) < 0) return MOSQ_ERR_NO_CONN;
    if (mosquitto_want_write(ms->mosq)) {
        int rc = mosquitto_loop_write(ms->mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS) return rc;
    }
    return mosquitto_loop_misc(ms->mosq);
}

/* Whether the TCP connection of `fd` was ever established (a socket whose
 * connect was refused has no receive window and no round-trip time). */
static bool tcp_was_up(int fd)
{
    struct tcp_info ti = {0};
    socklen_t len = sizeof ti;
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) return false;
    return ti.tcpi_state == TCP_ESTABLISHED || ti.tcpi_rcv_space > 0 || ti.tcpi_rtt > 0;
}

/* One round of the network loop while a TLS connection is being set up.
 * libmosquitto 2.0 takes SSL_ERROR_SYSCALL from SSL_connect — a refused TCP
 * connect, a reset during the handshake — for "try again": its loop would
 * spin on the dead socket at full CPU until the keepalive ran out and then
 * report "no CONNACK".  So the socket is polled here first: an error or a
 * hang-up ends the attempt with its reason: SO_ERROR when still pending,
 * else — libmosquitto's first SSL_connect consumed it — refused or reset as
 * the socket's TCP state tells; otherwise libmosquitto does the work. */
static int tls_connect_loop(struct fb_mqtt_session *ms)
{
    int fd = mosquitto_socket(ms->mosq);
    if (fd < 0) return MOSQ_ERR_NO_CONN;
    const struct timespec to = {MS_LOOP_TIMEOUT_MS / 1000, (MS_LOOP_TIMEOUT_MS % 1000) * 1000000L};
    short rev;
    int n = wait_net(ms, fd, (short)(POLLIN | (mosquitto_want_write(ms->mosq) ? POLLOUT : 0)), &to, &rev);
    if (n < 0 && errno != EINTR) return MOSQ_ERR_ERRNO;
    if (rev & (POLLERR | POLLHUP | POLLNVAL)) {
        int e = 0;
        socklen_t len = sizeof e;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0 || e == 0)
            e = tcp_was_up(fd) ? ECONNRESET : ECONNREFUSED;
        errno = e;
        return MOSQ_ERR_ERRNO;
    }
    pthread_mutex_lock(&ms->rd_mu);
    int rc = mosquitto_loop(ms->mosq, 0, 1);
    pthread_mutex_unlock(&ms->rd_mu);
    return rc;
}

static void *net_thread(void *arg)
{
    struct fb_mqtt_session *ms = arg;
    const struct fb_broker_cfg *cfg = ms->cfg;
    bool sock = false;
    fb_thread_name("net", ms->name);
    int64_t next_try = 0;
    while (!atomic_load(&ms->quit)) {
        if (!sock) {
            int64_t now = fb_mono_ns();
            if (now < next_try) {
                pthread_mutex_lock(&ms->mu);
                if (!atomic_load(&ms->quit)) wait_until(ms, next_try);
                pthread_mutex_unlock(&ms->mu);
                continue;
            }
            if (atomic_exchange(&ms->next_server, false) && cfg->nservers > 1) {
                atomic_store(&ms->srv, (atomic_load(&ms->srv) + 1) % cfg->nservers);
                fb_info(NULL, NULL, "%s: trying server %s", ms->name, fb_mqtt_session_server(ms)->url);
            }
            const struct fb_broker_server *sv = fb_mqtt_session_server(ms);
            mosquitto_log_callback_set(ms->mosq, on_liblog); /* off while connected (on_connect) */
            crl_refresh(ms, false, NULL);
            if (ms->ops->before_connect) ms->ops->before_connect(ms->obj, ms);
            /* connect_async stores host/port and starts a non-blocking connect */
            int rc = mosquitto_connect_async(ms->mosq, sv->host, sv->port, ms->keepalive_s);
            if (rc != MOSQ_ERR_SUCCESS) {
                int e = errno;
                char why[400];
                conn_failed(
                    ms, "cannot connect to %s:%d: %s", sv->host, sv->port,
                    tls_detail(ms, rc == MOSQ_ERR_ERRNO ? strerror(e) : mosquitto_strerror(rc), why, sizeof why));
                if (cfg->nservers > 1) atomic_store(&ms->next_server, true);
                next_try = now + fb_backoff_next(&ms->backoff);
                continue;
            }
            sock = true;
            ms->got_connack = false;
            ms->tcp_up = false;
        }
        int rc;
        if (!ms->got_connack && !ms->tcp_up) ms->tcp_up = tcp_was_up(mosquitto_socket(ms->mosq));
        if (ms->direct_io && atomic_load(&ms->connected)) {
            rc = io_loop(ms);
        } else if (ms->ssl_ctx && !ms->got_connack) {
            rc = tls_connect_loop(ms);
        } else {
            /* connecting (or TLS): libmosquitto's own loop; publishers never read */
            pthread_mutex_lock(&ms->rd_mu);
            rc = mosquitto_loop(ms->mosq, MS_LOOP_TIMEOUT_MS, 1);
            pthread_mutex_unlock(&ms->rd_mu);
        }
        if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(ms->mosq) < 0) {
            int e = errno;
            char why[160];
            sock = false;
            const struct fb_broker_server *sv = fb_mqtt_session_server(ms);
            if (atomic_load(&ms->connected)) { /* lost without on_disconnect */
                lost(ms, false, net_err_text(ms, rc, e, why, sizeof why));
            } else if (!ms->got_connack && rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN &&
                       !atomic_load(&ms->quit)) {
                char why2[400];
                conn_failed(ms, "cannot connect to %s:%d: %s", sv->host, sv->port,
                            tls_detail(ms, net_err_text(ms, rc, e, why, sizeof why), why2, sizeof why2));
                if (cfg->nservers > 1) atomic_store(&ms->next_server, true);
            }
            broadcast(ms);
            next_try = fb_mono_ns() + fb_backoff_next(&ms->backoff);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ open / close */
static int key_password_none(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)userdata;
    return 0; /* never prompt on a terminal for an encrypted key */
}

static void session_free(struct fb_mqtt_session *ms)
{
    if (!ms) return;
    if (ms->mosq) mosquitto_destroy(ms->mosq);
    SSL_CTX_free(ms->ssl_ctx); /* libmosquitto held its own reference */
    free(ms->slots);
    if (ms->wake_fd >= 0) close(ms->wake_fd);
    pthread_mutex_destroy(&ms->rd_mu);
    pthread_mutex_destroy(&ms->mu);
    pthread_cond_destroy(&ms->cv);
    free(ms);
}

static int setup_client(struct fb_mqtt_session *ms, const struct fb_mqtt_session_opts *o, struct fb_err *err)
{
    const struct fb_broker_cfg *cfg = ms->cfg;
    /* clean session: nothing of an earlier run is replayed (Sparkplug requires
     * it).  A persistent session (ingest) keeps the subscriptions and what the
     * broker queued for us while we were away: clean start off and, for MQTT
     * 5, a session expiry interval (0 would end the session at disconnect). */
    ms->mosq = mosquitto_new(o->client_id, !ms->persistent, ms);
    if (!ms->mosq) return fb_err_set(err, FB_ENOMEM, "%s: cannot create a client: %s", ms->name, strerror(errno));
    struct mosquitto *m = ms->mosq;
    /* direct_io: a publish writes to the socket on the publishing thread */
    mosquitto_threaded_set(m, !ms->direct_io);
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, ms->v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    if (ms->persistent && ms->v5) {
        /* libmosquitto 2.0 takes CONNECT properties only through the blocking
         * mosquitto_connect_bind_v5, which stores them before it validates its
         * host argument: with host NULL it returns MOSQ_ERR_INVAL at once and
         * keeps them for every later (non-blocking) connect.  The ingest
         * system test (a restart picking up what was queued) checks it works. */
        mosquitto_property *cp = NULL;
        int prc = mosquitto_property_add_int32(&cp, MQTT_PROP_SESSION_EXPIRY_INTERVAL, ms->expiry_s);
        if (prc == MOSQ_ERR_SUCCESS) prc = mosquitto_connect_bind_v5(m, NULL, 0, ms->keepalive_s, NULL, cp);
        mosquitto_property_free_all(&cp);
        if (prc != MOSQ_ERR_INVAL)
            return fb_err_set(err, FB_EINVAL, "%s: cannot set the session expiry interval: %s", ms->name,
                              mosquitto_strerror(prc));
    }
    /* small messages must not wait for Nagle + delayed ACK (≈ 40 ms per command round trip) */
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    uint32_t send_max = ms->max_inflight + 64;
    mosquitto_int_option(m, MOSQ_OPT_SEND_MAXIMUM, (int)(send_max > 65535 ? 65535 : send_max));
    int rc;
    if (cfg->username || cfg->password) {
        rc = mosquitto_username_pw_set(m, cfg->username, cfg->password);
        if (rc) return fb_err_set(err, FB_EINVAL, "%s: username/password: %s", ms->name, mosquitto_strerror(rc));
    }
    if (cfg->tls) {
        if (cfg->ca || cfg->ca_path) {
            rc = mosquitto_tls_set(m, cfg->ca, cfg->ca_path, cfg->cert, cfg->key, key_password_none);
            if (rc)
                return fb_err_set(err, FB_EINVAL,
                                  "%s.tls: %s (ca %s, ca_path %s, cert %s, key %s: files must exist and be "
                                  "readable; cert and key go together)",
                                  ms->name, mosquitto_strerror(rc), cfg->ca ? cfg->ca : "-",
                                  cfg->ca_path ? cfg->ca_path : "-", cfg->cert ? cfg->cert : "-",
                                  cfg->key ? cfg->key : "-");
            /* our own context (see the top of the file); libmosquitto applies its defaults to it */
            ms->ssl_ctx = SSL_CTX_new(TLS_client_method());
            if (!ms->ssl_ctx) return fb_err_set(err, FB_ENOMEM, "%s.tls: cannot create a TLS context", ms->name);
            SSL_CTX_set_cert_verify_callback(ms->ssl_ctx, verify_chain, ms);
            if (cfg->crl) {
                crl_refresh(ms, true, err);
                if (!ms->crl_st.st_ino) return err ? err->code : FB_EINVAL;
            }
            rc = mosquitto_void_option(m, MOSQ_OPT_SSL_CTX, ms->ssl_ctx);
            if (!rc) rc = mosquitto_int_option(m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 1);
            if (rc) return fb_err_set(err, FB_EINVAL, "%s.tls: %s", ms->name, mosquitto_strerror(rc));
        } else {
            if (cfg->cert || cfg->key)
                return fb_err_set(err, FB_EINVAL, "%s.tls: a client certificate needs tls.ca or tls.ca_path", ms->name);
            mosquitto_int_option(m, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
        }
        rc = mosquitto_tls_insecure_set(m, !cfg->tls_verify_hostname);
        if (rc) return fb_err_set(err, FB_EINVAL, "%s.tls: %s", ms->name, mosquitto_strerror(rc));
    }
    if (o->will_topic) {
        rc = mosquitto_will_set(m, o->will_topic, (int)o->will_len, o->will_payload, o->will_qos, o->will_retain);
        if (rc) return fb_err_set(err, FB_EINVAL, "%s: will: %s", ms->name, mosquitto_strerror(rc));
    }
    mosquitto_connect_v5_callback_set(m, on_connect);
    mosquitto_disconnect_v5_callback_set(m, on_disconnect);
    mosquitto_publish_v5_callback_set(m, on_publish);
    mosquitto_message_v5_callback_set(m, on_message);
    mosquitto_subscribe_v5_callback_set(m, on_subscribe);
    mosquitto_log_callback_set(m, on_liblog);
    return 0;
}

int fb_mqtt_session_open(struct fb_mqtt_session **out, const struct fb_mqtt_session_opts *o, struct fb_err *err)
{
    static const struct fb_mqtt_session_ops no_ops = {0};
    *out = NULL;
    const struct fb_broker_cfg *cfg = o->broker;
    if (!cfg || !cfg->nservers) return fb_err_set(err, FB_EINVAL, "%s: no broker", o->name);
    for (uint32_t i = 0; i < cfg->nservers; i++) {
        const struct fb_broker_server *sv = &cfg->servers[i];
        if (!sv->host || !*sv->host) return fb_err_set(err, FB_EINVAL, "%s: no broker host", o->name);
        if (sv->port <= 0 || sv->port > 65535) return fb_err_set(err, FB_EINVAL, "%s: bad port %d", o->name, sv->port);
    }
    pthread_once(&lib_once, lib_init);
    struct fb_mqtt_session *ms = calloc(1, sizeof *ms);
    if (!ms) return fb_err_set(err, FB_ENOMEM, "out of memory");
    snprintf(ms->name, sizeof ms->name, "%s", o->name);
    ms->cfg = cfg;
    ms->sink = o->sink;
    ms->errors = o->sink ? &o->sink->m.errors : o->errors;
    ms->connected_metric = o->sink ? &o->sink->m.connected : o->connected;
    if (!ms->errors || !ms->connected_metric) {
        free(ms);
        return fb_err_set(err, FB_EINVAL, "%s: no counters for the session", o->name);
    }
    ms->persistent = o->persistent;
    ms->expiry_s = o->session_expiry_s;
    ms->ops = o->ops ? o->ops : &no_ops;
    ms->obj = o->obj;
    ms->v5 = cfg->version != 3;
    int64_t ka = cfg->keepalive_ns > 0 ? cfg->keepalive_ns / MS_SEC : 30;
    ms->keepalive_s = (int)(ka < 5 ? 5 : ka > 65535 ? 65535 : ka);
    pthread_mutex_init(&ms->mu, NULL);
    pthread_mutex_init(&ms->rd_mu, NULL);
    fb_cond_init_mono(&ms->cv);
    /* TLS keeps libmosquitto's threaded mode: one SSL object must not be
     * used by two threads at once, so only the network thread does I/O */
    ms->direct_io = !cfg->tls && !o->ack_after_handling;
    /* the network thread's wake-up: it polls it itself over plain TCP, and
     * over TLS while connecting (quit must not wait for a poll's time-out) */
    ms->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ms->wake_fd < 0) ms->direct_io = false;
    ms->rl_liblog.interval_ns = 10 * MS_SEC;
    ms->rl_send.interval_ns = 60 * MS_SEC;
    ms->close_mid = -1;
    fb_backoff_init(&ms->backoff, cfg->reconnect_min_ns > 0 ? cfg->reconnect_min_ns : MS_SEC,
                    cfg->reconnect_max_ns > 0 ? cfg->reconnect_max_ns : 30 * MS_SEC);
    /* in-flight table: power of two >= 2 × max_inflight keeps probes short */
    uint32_t mi = o->max_inflight ? o->max_inflight : 1000;
    ms->max_inflight = mi > 65535 ? 65535 : mi;
    fb_win_init(&ms->win, ms->max_inflight, fb_mono_ns());
    uint32_t cap = 16;
    while (cap < 2 * ms->max_inflight) cap <<= 1;
    ms->slots = calloc(cap, sizeof *ms->slots);
    ms->mask = cap - 1;
    if (!ms->slots) {
        session_free(ms);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    if (setup_client(ms, o, err) < 0) {
        session_free(ms);
        return err ? err->code : FB_EINVAL;
    }
    /* the callbacks may run before pthread_create returns: the caller's
     * handle must already be set */
    *out = ms;
    if (pthread_create(&ms->thr, NULL, net_thread, ms) != 0) {
        *out = NULL;
        session_free(ms);
        return fb_err_set(err, FB_ENOMEM, "%s: cannot start the network thread", o->name);
    }
    ms->thr_started = true;
    return 0;
}

/* direct_io: after a tracked publication, write what is still queued
 * (libmosquitto queues without writing while any thread runs a callback;
 * the socket may be full); wake the network thread if something stays
 * queued or the connection broke. */
static void flush(struct fb_mqtt_session *ms)
{
    if (mosquitto_want_write(ms->mosq)) mosquitto_loop_write(ms->mosq, 1);
    if (mosquitto_socket(ms->mosq) < 0 || mosquitto_want_write(ms->mosq)) wake_net(ms);
}

/* direct_io, rd_mu held: take in what has arrived (PUBACKs in bulk,
 * commands) on this thread; a broken connection is the network thread's to
 * handle.  No other thread has to wake up for a message to be acknowledged
 * or a command to be received while publications keep coming. */
static _Thread_local const struct fb_mqtt_session *tl_read; /* read by ready() just now */
static void read_locked(struct fb_mqtt_session *ms)
{
    if (atomic_load(&ms->connected) && mosquitto_socket(ms->mosq) >= 0 &&
        mosquitto_loop_read(ms->mosq, 1) != MOSQ_ERR_SUCCESS)
        wake_net(ms);
}

/* A write error inside mosquitto_publish (direct_io) still leaves a QoS > 0
 * message in the session, which resends it after the reconnect: it counts as
 * published; the network thread sees the broken socket. */
static bool published(const struct fb_mqtt_session *ms, int rc, int qos, int mid)
{
    if (rc == MOSQ_ERR_SUCCESS) return true;
    return ms->direct_io && qos > 0 && mid && (rc == MOSQ_ERR_ERRNO || rc == MOSQ_ERR_CONN_LOST);
}

bool fb_mqtt_session_close(struct fb_mqtt_session *ms, const char *topic, const void *p, size_t len, bool retain,
                           int64_t wait_ns)
{
    if (!ms) return false;
    bool acked = false;
    if (atomic_load(&ms->connected)) {
        /* the final message at QoS 1, then wait for its PUBACK and for what is still in flight */
        int64_t deadline = fb_mono_ns() + wait_ns;
        pthread_mutex_lock(&ms->mu);
        int rc = MOSQ_ERR_SUCCESS;
        if (topic) {
            int mid = 0;
            if (ms->direct_io) { /* see fb_mqtt_session_publish_tracked */
                pthread_mutex_unlock(&ms->mu);
                pthread_mutex_lock(&ms->rd_mu);
            }
            rc = ms->v5 ? mosquitto_publish_v5(ms->mosq, &mid, topic, (int)len, p, 1, retain, NULL)
                        : mosquitto_publish(ms->mosq, &mid, topic, (int)len, p, 1, retain);
            if (ms->direct_io) {
                pthread_mutex_lock(&ms->mu);
                pthread_mutex_unlock(&ms->rd_mu);
            }
            if (published(ms, rc, 1, mid)) {
                ms->close_mid = mid;
                rc = MOSQ_ERR_SUCCESS;
            }
        } else {
            ms->close_acked = true;
        }
        while ((!ms->close_acked || ms->inflight > 0) && atomic_load(&ms->connected) && rc == MOSQ_ERR_SUCCESS)
            if (!wait_until(ms, deadline) && fb_mono_ns() >= deadline) break;
        acked = topic && ms->close_acked;
        uint32_t left = ms->inflight;
        pthread_mutex_unlock(&ms->mu);
        if (topic && !ms->close_acked)
            fb_warn(NULL, NULL, "%s: last message (%s) not acknowledged by the broker%s", ms->name, topic,
                    rc == MOSQ_ERR_SUCCESS ? " in time" : "");
        if (left) fb_warn(NULL, NULL, "%s: %u messages still unacknowledged at close", ms->name, left);
        /* a normal DISCONNECT: the broker discards the will */
        mosquitto_disconnect(ms->mosq);
        pthread_mutex_lock(&ms->mu);
        int64_t dl = fb_mono_ns() + 500000000LL;
        while (atomic_load(&ms->connected) && fb_mono_ns() < dl) wait_until(ms, dl);
        pthread_mutex_unlock(&ms->mu);
    } else {
        mosquitto_disconnect(ms->mosq);
    }
    atomic_store(&ms->quit, true);
    broadcast(ms);
    wake_net(ms);
    if (ms->thr_started) pthread_join(ms->thr, NULL);
    atomic_store(ms->connected_metric, 0);
    /* what the broker never acknowledged is the store's to keep */
    pthread_mutex_lock(&ms->mu);
    retry_all(ms);
    pthread_mutex_unlock(&ms->mu);
    acks_retry_all(ms);
    session_free(ms);
    return acked;
}

/* ------------------------------------------------------------------ publish */
int fb_mqtt_session_publish(struct fb_mqtt_session *ms, const char *topic, const void *p, size_t len, int qos,
                            bool retain, const mosquitto_property *props)
{
    int mid = 0;
    int rc = ms->v5 ? mosquitto_publish_v5(ms->mosq, &mid, topic, (int)len, p, qos, retain, props)
                    : mosquitto_publish(ms->mosq, &mid, topic, (int)len, p, qos, retain);
    if (!published(ms, rc, qos, mid)) return rc;
    /* queued, not written (a callback runs somewhere, maybe this one): the
     * network thread writes it */
    if (ms->direct_io && mosquitto_want_write(ms->mosq)) wake_net(ms);
    return MOSQ_ERR_SUCCESS;
}

int fb_mqtt_session_publish_acked(struct fb_mqtt_session *ms, const char *topic, const void *p, size_t len, int qos,
                                  bool retain, uint64_t token)
{
    if (qos < 1) qos = 1;
    /* the PUBACK must find the mid: as in publish_tracked, nobody reads the
     * socket (direct_io: rd_mu) or runs a callback (threaded: mu) until it is in */
    if (ms->direct_io) pthread_mutex_lock(&ms->rd_mu);
    pthread_mutex_lock(&ms->mu);
    if (ms->nacks == MS_ACKS_MAX || !atomic_load(&ms->connected)) {
        pthread_mutex_unlock(&ms->mu);
        if (ms->direct_io) pthread_mutex_unlock(&ms->rd_mu);
        return ms->nacks == MS_ACKS_MAX ? MOSQ_ERR_NOMEM : MOSQ_ERR_NO_CONN;
    }
    if (ms->direct_io) pthread_mutex_unlock(&ms->mu);
    int mid = 0;
    int rc = ms->v5 ? mosquitto_publish_v5(ms->mosq, &mid, topic, (int)len, p, qos, retain, NULL)
                    : mosquitto_publish(ms->mosq, &mid, topic, (int)len, p, qos, retain);
    if (ms->direct_io) pthread_mutex_lock(&ms->mu);
    bool ok = published(ms, rc, qos, mid);
    if (ok && !atomic_load(&ms->connected)) { /* lost on the way: its acks_retry_all has run already */
        ok = false;
        rc = MOSQ_ERR_CONN_LOST;
    }
    if (ok) {
        ms->acks[ms->nacks].mid = mid;
        ms->acks[ms->nacks].id = token;
        ms->nacks++;
    }
    pthread_mutex_unlock(&ms->mu);
    if (ms->direct_io) {
        if (ok) flush(ms);
        pthread_mutex_unlock(&ms->rd_mu);
    }
    return ok ? MOSQ_ERR_SUCCESS : rc;
}

void fb_mqtt_session_publish_tracked(struct fb_mqtt_session *ms, uint64_t id, const char *topic, const void *p,
                                     size_t len, int qos, bool retain)
{
    struct fb_sink_inst *s = ms->sink;
    pthread_mutex_lock(&ms->mu);
    if (qos > 0 && ms->inflight >= ms->max_inflight) {
        int64_t start = fb_mono_ns();
        while (ms->inflight >= ms->max_inflight && atomic_load(&ms->connected)) {
            int64_t now = fb_mono_ns();
            /* normally wait as long as the connection lives; while the gateway
             * stops, give up after a bound so shutdown cannot hang */
            if (fb_runtime_stopping(s->gw) && now - start > MS_DRAIN_WAIT_NS) break;
            if (ms->direct_io) { /* the acknowledgements may be waiting in the socket for us */
                pthread_mutex_unlock(&ms->mu);
                if (pthread_mutex_trylock(&ms->rd_mu) == 0) {
                    read_locked(ms);
                    pthread_mutex_unlock(&ms->rd_mu);
                }
                pthread_mutex_lock(&ms->mu);
                if (ms->inflight < ms->max_inflight) break;
            }
            wait_until(ms, now + (ms->direct_io ? 1000000LL : 100000000LL));
        }
    }
    if (!atomic_load(&ms->connected) || (qos > 0 && ms->inflight >= ms->max_inflight)) {
        pthread_mutex_unlock(&ms->mu);
        fb_sink_done(s, id, FB_RETRY);
        return;
    }
    /* The PUBACK must find the mid in the table.  Threaded (TLS): publish only
     * queues, so holding mu across it is enough.  direct_io: publish writes
     * and may run callbacks that take mu, so rd_mu is held instead — no thread
     * reads the socket until the mid is in the table.  (Only one tracked
     * publication per sink runs at a time — the runtime calls send() under
     * the sink's call lock — so the room checked above stays.) */
    if (ms->direct_io) {
        pthread_mutex_unlock(&ms->mu);
        pthread_mutex_lock(&ms->rd_mu);
        /* what arrived since the last publication (unless ready() on this
         * thread just took it in): while this publisher is active the network
         * thread does not watch the socket */
        if (tl_read != ms) read_locked(ms);
        tl_read = NULL;
    }
    int mid = 0;
    int rc = ms->v5 ? mosquitto_publish_v5(ms->mosq, &mid, topic, (int)len, p, qos, retain, NULL)
                    : mosquitto_publish(ms->mosq, &mid, topic, (int)len, p, qos, retain);
    if (ms->direct_io) pthread_mutex_lock(&ms->mu);
    bool ok = published(ms, rc, qos, mid);
    int64_t now = ok ? fb_mono_ns() : 0;
    if (ok && qos > 0) {
        map_put(ms, mid, id, now);
        window_metrics(ms);
    }
    pthread_mutex_unlock(&ms->mu);
    if (ms->direct_io) {
        if (ok) {
            atomic_store(&ms->last_pub_ns, now);
            flush(ms);
        }
        pthread_mutex_unlock(&ms->rd_mu);
    }
    if (ok) {
        if (qos == 0) fb_sink_done(s, id, FB_SENT); /* QoS 0: handed to the connection */
        return;
    }
    if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_NOMEM || rc == MOSQ_ERR_ERRNO || rc == MOSQ_ERR_CONN_LOST) {
        fb_sink_done(s, id, FB_RETRY);
        return;
    }
    /* payload too large for the broker, bad topic: it would never succeed */
    atomic_fetch_add(&s->m.errors, 1);
    if (fb_ratelimit_ok(&ms->rl_send, fb_mono_ns()))
        fb_warn(NULL, NULL, "%s: cannot publish %zu bytes to %s: %s", ms->name, len, topic,
                fb_mqtt_session_strerror(ms, rc));
    fb_sink_done(s, id, FB_DROP);
}

int fb_mqtt_session_subscribe(struct fb_mqtt_session *ms, const char *topic, int qos, bool no_local)
{
    if (ms->v5) return mosquitto_subscribe_v5(ms->mosq, NULL, topic, qos, no_local ? MQTT_SUB_OPT_NO_LOCAL : 0, NULL);
    return mosquitto_subscribe(ms->mosq, NULL, topic, qos);
}

int fb_mqtt_session_unsubscribe(struct fb_mqtt_session *ms, const char *topic)
{
    if (ms->v5) return mosquitto_unsubscribe_v5(ms->mosq, NULL, topic, NULL);
    return mosquitto_unsubscribe(ms->mosq, NULL, topic);
}

int fb_mqtt_session_subscribe_id(struct fb_mqtt_session *ms, const char *topic, int qos, uint32_t sub_id)
{
    if (!ms->v5 || !sub_id) return mosquitto_subscribe(ms->mosq, NULL, topic, qos);
    mosquitto_property *p = NULL;
    int rc = mosquitto_property_add_varint(&p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, sub_id);
    if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_subscribe_v5(ms->mosq, NULL, topic, qos, 0, p);
    mosquitto_property_free_all(&p);
    return rc;
}

int fb_mqtt_session_set_will(struct fb_mqtt_session *ms, const char *topic, const void *p, size_t len, int qos,
                             bool retain)
{
    return mosquitto_will_set(ms->mosq, topic, (int)len, p, qos, retain);
}

/* Room for a tracked publication (mu held): nothing awaits its resend and
 * the window is not full — once full, until it drains to its low-water mark
 * (on_publish and retry_all clear `full`; the window is never above
 * max_inflight, fb_win_init and fb_win_cap bound it). */
static bool room_locked(const struct fb_mqtt_session *ms)
{
    return !ms->resend_pending && !ms->full && ms->inflight < ms->win.win;
}

bool fb_mqtt_session_ready(struct fb_mqtt_session *ms, bool pace)
{
    if (!atomic_load(&ms->connected)) return false;
    /* acknowledgements that have arrived count: the caller may be about to
     * decide whether anything is still unacknowledged (core/publish.c) */
    if (ms->direct_io && pthread_mutex_trylock(&ms->rd_mu) == 0) {
        read_locked(ms);
        tl_read = ms;
        pthread_mutex_unlock(&ms->rd_mu);
    }
    pthread_mutex_lock(&ms->mu);
    if (ms->resend_pending && fb_mono_ns() - ms->connected_at > MS_RESEND_WAIT_NS) {
        /* the session did not resend them: hand them back to the store, which
         * delivers them again in order (duplicates are possible, loss is not) */
        uint32_t n = retry_all(ms);
        ms->resend_pending = false;
        fb_warn(NULL, NULL, "%s: %u messages from before the reconnect not acknowledged; delivering them again",
                ms->name, n);
    }
    bool room = room_locked(ms);
    if (pace && !room && !ms->resend_pending) {
        /* The window is full: wait a little for it to drain to its low-water
         * mark, reading the acknowledgements on this thread (direct_io).  A
         * connection thread polling as fast as it can is then paced by the
         * broker instead of handing every batch to the sink thread through
         * the memory queue (an encode, a decode and a wake-up per batch); a
         * broker that stays behind for longer still finds the batches
         * queued, as before, after at most MS_ROOM_WAIT_NS per batch. */
        int64_t deadline = fb_mono_ns() + MS_ROOM_WAIT_NS;
        for (bool broken = false; !broken;) {
            int64_t now = fb_mono_ns();
            if (now >= deadline || !atomic_load(&ms->connected)) break;
            if (ms->direct_io) {
                pthread_mutex_unlock(&ms->mu);
                if (pthread_mutex_trylock(&ms->rd_mu) == 0) {
                    int fd = mosquitto_socket(ms->mosq);
                    struct pollfd pf = {.fd = fd, .events = POLLIN};
                    struct timespec ts = {0, (long)(deadline - now)};
                    bool readable = fd >= 0 && ppoll(&pf, 1, &ts, NULL) > 0 && pf.revents == POLLIN;
                    read_locked(ms);
                    tl_read = ms;
                    pthread_mutex_unlock(&ms->rd_mu);
                    pthread_mutex_lock(&ms->mu);
                    /* a broken socket is the network thread's: no spinning on it */
                    broken = !readable && fb_mono_ns() < deadline;
                } else {
                    pthread_mutex_lock(&ms->mu); /* another thread reads: on_publish signals cv */
                    if (!room_locked(ms)) wait_until(ms, deadline);
                }
            } else {
                wait_until(ms, deadline);
            }
            if (ms->resend_pending || (room = room_locked(ms))) break;
        }
    }
    pthread_mutex_unlock(&ms->mu);
    return room;
}

void fb_mqtt_session_disconnect(struct fb_mqtt_session *ms, bool next_server)
{
    if (next_server && ms->cfg->nservers > 1) atomic_store(&ms->next_server, true);
    mosquitto_disconnect(ms->mosq);
    wake_net(ms);
}
