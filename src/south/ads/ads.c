/* ads.c — the Beckhoff TwinCAT ADS south driver (scheme "ads"): glue between
 * the core and the I/O-free codec in ads_proto.c.  It owns one TCP socket
 * per connection (AMS/TCP straight to the PLC's port 48898, no local router).
 *
 * Symbolic access.  Tags are symbol names; the driver asks the PLC for a
 * handle per name (ReadWrite 0xF003), packed into sum read-write commands
 * (0xF082), and reads the values by handle with sum reads (0xF080): a group
 * of N tags costs ceil(N / max_sum) frames per cycle, sent back to back and
 * matched by invoke id.  Handles belong to a connection epoch: a reconnect
 * starts a new epoch and they are taken again; they are released (0xF006,
 * one sum write) when the connection closes.  Every sum read carries the
 * symbol version (0xF008) as its first sub-read: when it changes (a PLC
 * download) or the PLC answers 0x710/0x711 for a handle, all handles are
 * dropped and re-resolved and the read is repeated once.
 *
 * Without sum commands.  TwinCAT 2 before them, BC/BX controllers and
 * simulators answer a sum command with 0x701/0x702 for the whole request.
 * The capability is learnt per connection at first use (enum CAP_*): the
 * refused round is done again with single requests (0xF003 per handle,
 * a Read per value, 0xF006 per release; up to ADS_WINDOW in flight), the
 * other sum services are not tried, and the switch is logged once per
 * device.  The symbol version is then read alone every ADS_CHECK_NS.
 *
 * Raw addresses (%MW10, %IX0.1, %QD4:REAL) are read by (index group,
 * offset) — inside the sum read, or as plain Reads — and need no handle.
 *
 * Types.  A tag names its type (`MAIN.nCount:DINT`) or the driver learns it
 * from the PLC's symbol and data-type uploads (0xF00F/0xF00B/0xF00E), taken
 * once per device when its first untyped tag is parsed — at start-up, since
 * the core needs every tag's type before anything runs.  A PLC that refuses
 * the upload is asked per name: symbol info (0xF009), else the extended
 * handle reply; an untyped name it cannot describe is a config error.
 *
 * Notifications (mode=notify: on change; mode=cyclic: every cycle).  The core
 * is poll based, so at connect the driver adds one device notification per
 * tag (requests pipelined, 100 ns units on the wire, cycle = the group's
 * period unless cycle= is set) and read() only drains what the PLC pushed
 * and returns the latest value of each tag: the group period paces
 * publication, there is no read traffic.  A symbol-version read every 2 s
 * checks the link and the program; notifications are added again after a
 * reconnect or a download.
 *
 * Errors.  Transport failures (reset, timeout, malformed frame) return
 * FB_EIO/FB_ETIMEDOUT/FB_EPROTO so the core reconnects; ADS error codes
 * (whole request or per sub-command) mark the affected tags Bad with a
 * mapped quality, are logged once per change with the text of the code, and
 * count in the device's error counter every cycle (one per tag), so a PLC
 * that refuses every read does not look healthy.
 */
#include "south/ads/ads.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/browse.h"
#include "core/env.h"
#include "core/log.h"
#include "core/net.h"
#include "core/plugin.h"
#include "core/url.h"
#include "south/ads/ads_proto.h"

#define ADS_CHECK_NS 2000000000LL         /* notify mode: link / symbol-version check */
#define ADS_HANDLE_RETRY_NS 10000000000LL /* a name the PLC did not know: ask again */
#define ADS_SBUF 512                      /* ≥ 2 × STRING(255), 3 × WSTRING(127) + 4 */
#define ADS_WINDOW 64                     /* without sum commands: single requests in flight at once */

static _Atomic uint32_t epoch_seq = 1;

/* --------------------------------------------------------------- per tag */
struct ads_tag {
    struct ads_tinfo ti;
    uint32_t id;      /* tag id */
    bool raw;         /* %M/%I/%Q: read (ig, handle) directly, no handle to take */
    uint32_t ig;      /* raw: the area's index group */
    uint32_t handle;  /* symbol: the handle; raw: the index offset */
    uint32_t h_epoch; /* epoch of handle, 0 = none */
    uint32_t herr;    /* last handle / notification error */
    int64_t retry_at; /* mono: when to ask again after herr */
    uint32_t note;
    uint32_t n_epoch; /* epoch of the notification, 0 = none */
    uint8_t *val;     /* notify: latest value (ti.size bytes, after name) */
    bool have_val;
    int64_t val_ts;
    uint32_t last_q; /* for change-only logging */
    bool seen;
    char name[]; /* the symbol name (with a `count:` subscript) */
};

struct ads_plan {
    uint32_t n;
    struct ads_tag **tags;
    int64_t period_ns;
    /* scratch for one cycle, sized at plan time so that a read cycle (poll
     * or notify) allocates nothing */
    uint32_t *res;
    uint32_t *doff;
    uint8_t *data;
    struct ads_tag **need;    /* n: tags that need a handle / a notification */
    struct ads_tag **hneed;   /* n: notify mode, those of need without a handle */
    uint32_t *idx;            /* n + 1: sub-read → plan index (UINT32_MAX = symbol version) */
    struct ads_sub *subs;     /* n + 1: the sub-reads of one cycle */
    struct ads_rwsub *rwsubs; /* n: handle requests */
    uint32_t nch;             /* sum commands for n + 1 sub-commands at max_sum */
    uint32_t *first, *cnt;    /* nch: first sub-command and count of each */
};

/* The symbol and data-type uploads of one PLC (connection key), for untyped
 * tags: taken once and shared by every device on that PLC set up within a
 * minute of it (one start-up or reload; a later reload uploads afresh, the
 * program may have changed) — 10 devices over a 10,000-symbol program would
 * otherwise hold 10 copies, ≈ 0.6 MB each. */
struct ads_conn;
/* what the PLC said about one name, without the upload */
struct ads_info {
    char name[ADS_MAX_NAME + 1]; /* "" = nothing kept */
    char type[256];
    uint32_t size, adst;
};
struct ads_upl {
    char *key;
    uint8_t *sym, *dt;
    size_t sym_len, dt_len;
    int rc;
    char err[256];
    uint32_t refused;     /* the upload was refused with this ADS error: types by name instead */
    struct ads_conn *c;   /* refused: connection for the per-name look-ups (closed at plan time) */
    struct ads_info info; /* refused: the last name looked up */
    unsigned refs;
    int64_t at; /* mono time of the upload: shared only within one start-up / reload */
    struct ads_upl *next;
};
#define ADS_UPL_SHARE_NS 60000000000LL
static struct ads_upl *upl_list;
static pthread_mutex_t upl_mu = PTHREAD_MUTEX_INITIALIZER;

struct ads_dev {
    struct ads_opts o;
    struct ads_upl *upl; /* NULL until an untyped tag needs it */
    bool nosum_said;     /* "no sum commands" was logged for this device's connection */
};

struct note_ent {
    uint32_t h;
    struct ads_tag *t;
};

/* Sum services a device may lack (TwinCAT 2 before them, BC/BX controllers,
 * simulators): learnt per connection at first use. */
enum { SUM_READ, SUM_WRITE, SUM_RW, SUM__N };
enum { CAP_UNKNOWN, CAP_YES, CAP_NO };
static const uint32_t sum_ig[SUM__N] = {ADS_IG_SUM_READ, ADS_IG_SUM_WRITE, ADS_IG_SUM_RW};

struct ads_conn {
    int fd;
    bool broken;         /* a transport error happened: skip the goodbye */
    uint8_t cap[SUM__N]; /* CAP_* per sum service */
    struct ads_hdr tmpl; /* addresses of every request */
    uint32_t invoke;
    uint32_t epoch;
    bool have_symver;
    uint8_t symver;
    uint8_t *rx, *tx, *w;
    size_t rx_cap, tx_cap, w_cap;
    struct note_ent *notes;
    uint32_t nnotes, notes_cap;
    int64_t next_check;
    int64_t timeout_ns;
    uint32_t last_ads_err; /* AMS or ADS error of the last FB_EEXCEPTION */
    char where[300];
    struct fb_conn *fc;
};

/* ------------------------------------------------------------------ socket */
static int grow(uint8_t **p, size_t *cap, size_t need)
{
    if (*cap >= need) return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    uint8_t *q = realloc(*p, n);
    if (!q) return FB_ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/* ------------------------------------------------------- notifications in */
static int note_cmp(const void *a, const void *b)
{
    uint32_t x = ((const struct note_ent *)a)->h, y = ((const struct note_ent *)b)->h;
    return x < y ? -1 : x > y;
}

static void note_cb(void *ctx, int64_t ts, uint32_t h, const uint8_t *data, uint32_t size)
{
    struct ads_conn *c = ctx;
    struct note_ent key = {.h = h};
    struct note_ent *e = bsearch(&key, c->notes, c->nnotes, sizeof *c->notes, note_cmp);
    if (!e) return;
    struct ads_tag *t = e->t;
    if (t->n_epoch != c->epoch || !t->val || size < t->ti.size) return;
    memcpy(t->val, data, t->ti.size);
    t->have_val = true;
    t->val_ts = ts ? ts : fb_now_ns();
}

/* One frame into c->rx; *h and the ADS data (c->rx + ADS_HDR, h->len bytes). */
static int recv_frame(struct ads_conn *c, int64_t deadline, struct ads_hdr *h)
{
    if (grow(&c->rx, &c->rx_cap, ADS_HDR)) return FB_ENOMEM;
    int rc = fb_net_recv_all(c->fd, c->rx, ADS_TCP_HDR, deadline);
    if (rc) return rc;
    long fl = ads_frame_len(c->rx, ADS_TCP_HDR);
    if (fl <= 0) return FB_EPROTO;
    if (grow(&c->rx, &c->rx_cap, (size_t)fl)) return FB_ENOMEM;
    rc = fb_net_recv_all(c->fd, c->rx + ADS_TCP_HDR, (size_t)fl - ADS_TCP_HDR, deadline);
    if (rc) return rc;
    return ads_parse_hdr(c->rx, (size_t)fl, h);
}

/* A frame that is not the awaited reply: a notification, or a late answer. */
static void stray(struct ads_conn *c, const struct ads_hdr *h)
{
    if (h->cmd == ADS_CMD_NOTE) ads_parse_notes(c->rx + ADS_HDR, h->len, note_cb, c);
}

/* Reply handler: i = index of the request, err = AMS error (0 = body valid). */
typedef int (*reply_fn)(void *ctx, uint32_t i, uint32_t err, const uint8_t *d, size_t n);

/* Send the n requests in c->tx[0..len) (invoke ids first..first+n-1) and
 * hand every reply to fn, in arrival order.  0, or a transport status.
 * Replies are taken while the requests are still being sent: with many
 * frames in flight (20 sum reads of 500 sub-reads for 10,000 symbols) a
 * sender that only sends could fill both socket buffers while the PLC
 * blocks on its replies — a deadlock that only the timeout would end. */
static int exchange(struct ads_conn *c, size_t len, uint32_t first, uint32_t n, reply_fn fn, void *ctx,
                    int64_t timeout_ns)
{
    int64_t deadline = fb_mono_ns() + timeout_ns;
    int rc = 0;
    size_t sent = 0;
    uint32_t got = 0;
    while (rc == 0 && (got < n || sent < len)) {
        if (sent < len) {
            ssize_t w = send(c->fd, c->tx + sent, len - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                rc = FB_EIO;
            if (rc || sent == len) continue;
            /* the socket is full: wait until it drains or a reply arrives */
            int64_t left = deadline - fb_mono_ns();
            if (left <= 0) {
                rc = FB_ETIMEDOUT;
                break;
            }
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN | POLLOUT};
            int r = poll(&pfd, 1, (int)((left + 999999) / 1000000));
            if (r < 0 && errno != EINTR) rc = FB_EIO;
            if (r <= 0 || !(pfd.revents & (POLLIN | POLLERR | POLLHUP))) continue;
        }
        struct ads_hdr h;
        rc = recv_frame(c, deadline, &h);
        if (rc) break;
        if (h.cmd == ADS_CMD_NOTE || h.invoke - first >= n || !(h.flags & 1)) {
            stray(c, &h);
            continue;
        }
        got++;
        rc = fn(ctx, h.invoke - first, h.error, c->rx + ADS_HDR, h.len);
    }
    if (rc == FB_EIO || rc == FB_ETIMEDOUT || rc == FB_EPROTO) c->broken = true;
    return rc;
}

static uint32_t next_invoke(struct ads_conn *c, uint32_t n)
{
    uint32_t first = ++c->invoke;
    c->invoke += n - 1;
    return first;
}

/* single request: reply body copied pointer (valid until the next receive) */
struct one {
    uint32_t err;
    const uint8_t *d;
    size_t n;
};
static int one_fn(void *ctx, uint32_t i, uint32_t err, const uint8_t *d, size_t n)
{
    (void)i;
    struct one *o = ctx;
    o->err = err;
    o->d = d;
    o->n = n;
    return 0;
}

static int fail_text(struct ads_conn *c, int rc, struct fb_err *err, const char *what)
{
    if (rc == FB_ETIMEDOUT)
        return fb_err_set(err, rc, "%s: no answer to %s within %.3gs", c->where, what, c->timeout_ns / 1e9);
    if (rc == FB_EIO) return fb_err_set(err, rc, "%s: connection lost (%s)", c->where, what);
    if (rc == FB_ENOMEM) return fb_err_set(err, rc, "out of memory");
    return fb_err_set(err, rc, "%s: malformed reply to %s", c->where, what);
}

/* One request of n bytes in c->tx (invoke already set); on success o holds
 * the reply.  An AMS or ADS result error returns FB_EEXCEPTION with
 * c->last_ads_err set; transport failures their status. */
static int transact(struct ads_conn *c, size_t len, uint32_t invoke, struct one *o, const char *what,
                    struct fb_err *err)
{
    memset(o, 0, sizeof *o);
    int rc = exchange(c, len, invoke, 1, one_fn, o, c->timeout_ns);
    if (rc) return fail_text(c, rc, err, what);
    uint32_t res = o->err;
    if (!res && ads_parse_result(o->d, o->n, &res)) {
        c->broken = true;
        return fail_text(c, FB_EPROTO, err, what);
    }
    if (res) {
        c->last_ads_err = res;
        return fb_err_set(err, FB_EEXCEPTION, "%s: %s: ADS error 0x%X: %s", c->where, what, res, ads_err_text(res));
    }
    return 0;
}

static struct ads_hdr tmpl_for(struct ads_conn *c, uint32_t invoke)
{
    struct ads_hdr h = c->tmpl;
    h.invoke = invoke;
    return h;
}

/* ------------------------------------------------------- single requests */
/* Frame i of a run of single requests, built into b (0 = does not fit). */
typedef size_t (*build_fn)(void *ctx, uint32_t i, uint8_t *b, size_t cap, const struct ads_hdr *h);

struct win {
    reply_fn fn;
    void *ctx;
    uint32_t base;
};
static int win_fn(void *ctx, uint32_t i, uint32_t err, const uint8_t *d, size_t n)
{
    struct win *w = ctx;
    return w->fn(w->ctx, w->base + i, err, d, n);
}

/* n single requests (frames of at most frame_max bytes), ADS_WINDOW in flight
 * at once: the device without sum commands still gets them back to back,
 * but a small controller never sees hundreds queued, and every window has
 * the full timeout.  Replies go to fn with the request's index. */
static int singles(struct ads_conn *c, uint32_t n, size_t frame_max, build_fn bf, reply_fn fn, void *ctx)
{
    for (uint32_t f = 0; f < n; f += ADS_WINDOW) {
        uint32_t m = n - f < ADS_WINDOW ? n - f : ADS_WINDOW;
        if (grow(&c->tx, &c->tx_cap, (size_t)m * frame_max)) return FB_ENOMEM;
        uint32_t inv = next_invoke(c, m);
        size_t len = 0;
        for (uint32_t i = 0; i < m; i++) {
            struct ads_hdr h = tmpl_for(c, inv + i);
            size_t fl = bf(ctx, f + i, c->tx + len, c->tx_cap - len, &h);
            if (!fl) return FB_EINVAL;
            len += fl;
        }
        struct win w = {fn, ctx, f};
        int rc = exchange(c, len, inv, m, win_fn, &w, c->timeout_ns);
        if (rc) return rc;
    }
    return 0;
}

static uint32_t windows(uint32_t n) { return (n + ADS_WINDOW - 1) / ADS_WINDOW; }

/* ------------------------------------------------------- sum capability */
static const char *conn_dev_name(const struct ads_conn *c)
{
    return c->fc && c->fc->ndevs ? c->fc->devs[0]->name : NULL;
}

static struct ads_dev *conn_dev(const struct ads_conn *c)
{
    return c->fc && c->fc->ndevs ? c->fc->devs[0]->drv_dev : NULL;
}

/* Use sum service k?  Until the device refuses it — and a service never
 * tried is not tried once another was refused: devices that lack sum
 * commands lack all of them, and every probe costs a request. */
static bool sum_ok(const struct ads_conn *c, int k)
{
    if (c->cap[k] != CAP_UNKNOWN) return c->cap[k] == CAP_YES;
    for (int i = 0; i < SUM__N; i++)
        if (c->cap[i] == CAP_NO) return false;
    return true;
}

/* Sum service k answered `code` (0x701/0x702) for the whole command: single
 * requests on this connection from now on, logged once per device (not on
 * every reconnect). */
static void sum_refused(struct ads_conn *c, int k, uint32_t code)
{
    c->cap[k] = CAP_NO;
    struct ads_dev *ad = conn_dev(c);
    if (ad && ad->nosum_said) return;
    if (ad) ad->nosum_said = true;
    fb_info(conn_dev_name(c), NULL,
            "%s answers sum commands (0x%X) with ADS error 0x%X (%s): using single requests, one per tag and "
            "cycle (TwinCAT 2 without sum commands, BC/BX controllers, simulators; docs/ads.md §4)",
            c->where, sum_ig[k], code, ads_err_text(code));
}

static void sum_works(struct ads_conn *c, int k)
{
    if (c->cap[k] == CAP_YES) return;
    c->cap[k] = CAP_YES;
    struct ads_dev *ad = conn_dev(c);
    if (ad && ad->nosum_said) {
        ad->nosum_said = false;
        fb_info(conn_dev_name(c), NULL, "%s takes sum commands again", c->where);
    }
}

/* ------------------------------------------------------------- connection */
static void conn_free(struct ads_conn *c)
{
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    free(c->rx);
    free(c->tx);
    free(c->w);
    free(c->notes);
    free(c);
}

/* Connect and say hello (ReadState): the PLC answers only with a route. */
static int conn_new(const struct ads_opts *o, struct ads_conn **out, struct fb_err *err)
{
    struct ads_conn *c = calloc(1, sizeof *c);
    if (!c) return fb_err_set(err, FB_ENOMEM, "out of memory");
    c->fd = -1;
    c->timeout_ns = o->timeout_ns;
    c->epoch = atomic_fetch_add(&epoch_seq, 1);
    char id[24];
    snprintf(c->where, sizeof c->where, "%s:%d (AMS %s:%u)", o->host, o->port, ads_netid_fmt(&o->target, id, sizeof id),
             o->ams_port);
    int rc = fb_tcp_connect(o->host, o->port, o->timeout_ns, c->where, &c->fd, err);
    if (rc) {
        conn_free(c);
        return rc;
    }
    c->tmpl.target = o->target;
    c->tmpl.target_port = o->ams_port;
    c->tmpl.source_port = o->source_port;
    if (o->have_source) {
        c->tmpl.source = o->source;
    } else { /* <our IPv4 address>.1.1, the convention TwinCAT routes expect */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        uint8_t ip[4] = {127, 0, 0, 1};
        if (getsockname(c->fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET)
            memcpy(ip, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        memcpy(c->tmpl.source.b, ip, 4);
        c->tmpl.source.b[4] = 1;
        c->tmpl.source.b[5] = 1;
    }
    if (grow(&c->tx, &c->tx_cap, 65536) || grow(&c->rx, &c->rx_cap, 65536)) {
        conn_free(c);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    uint32_t inv = next_invoke(c, 1);
    struct ads_hdr h = tmpl_for(c, inv);
    size_t n = ads_build_simple(c->tx, c->tx_cap, &h, ADS_CMD_STATE);
    struct one o1;
    struct fb_err e = {0};
    rc = transact(c, n, inv, &o1, "ReadState", &e);
    if (rc == FB_ETIMEDOUT || rc == FB_EIO) {
        char src[24];
        fb_err_set(err, rc,
                   "%s: %s — is there a route on the PLC for our AmsNetId %s at this address? "
                   "(fieldbridge ads add-route, docs/ads.md)",
                   c->where, rc == FB_ETIMEDOUT ? "no answer" : "the PLC closed the connection",
                   ads_netid_fmt(&c->tmpl.source, src, sizeof src));
        conn_free(c);
        return rc;
    }
    if (rc == FB_EEXCEPTION) {
        fb_err_set(err, FB_EIO, "%s refused the connection: ADS error 0x%X: %s", c->where, c->last_ads_err,
                   ads_err_text(c->last_ads_err));
        conn_free(c);
        return FB_EIO;
    }
    if (rc) {
        *err = e;
        conn_free(c);
        return rc;
    }
    uint32_t res;
    uint16_t st = 0, ds = 0;
    if (ads_parse_state(o1.d, o1.n, &res, &st, &ds)) {
        conn_free(c);
        return fb_err_set(err, FB_EPROTO, "%s: malformed ReadState reply (is this an ADS device?)", c->where);
    }
    *out = c;
    return 0;
}

/* Read one block (Read command) into a malloc'd buffer. */
static int read_block(struct ads_conn *c, uint32_t ig, uint32_t io, uint32_t len, uint8_t **out, size_t *outlen,
                      const char *what, struct fb_err *err)
{
    uint32_t inv = next_invoke(c, 1);
    struct ads_hdr h = tmpl_for(c, inv);
    size_t n = ads_build_read(c->tx, c->tx_cap, &h, ig, io, len);
    struct one o;
    int rc = transact(c, n, inv, &o, what, err);
    if (rc) return rc;
    uint32_t res;
    const uint8_t *d;
    uint32_t dl;
    if (ads_parse_read(o.d, o.n, &res, &d, &dl)) return fail_text(c, FB_EPROTO, err, what);
    *out = malloc(dl ? dl : 1);
    if (!*out) return fb_err_set(err, FB_ENOMEM, "out of memory");
    memcpy(*out, d, dl);
    *outlen = dl;
    return 0;
}

/* Symbol and data-type uploads. */
static int upload(struct ads_conn *c, uint8_t **sym, size_t *sym_len, uint8_t **dt, size_t *dt_len, struct fb_err *err)
{
    uint8_t *info = NULL;
    size_t il = 0;
    *sym = *dt = NULL;
    *sym_len = *dt_len = 0;
    int rc = read_block(c, ADS_IG_UPLOAD_INFO2, 0, 24, &info, &il, "upload info (0xF00F)", err);
    if (rc == FB_EEXCEPTION && ADS_UNSUPPORTED(c->last_ads_err)) {
        /* TwinCAT 2 before 0xF00F: the older upload info, symbols only */
        struct fb_err e2 = {0};
        int rc2 = read_block(c, ADS_IG_SYM_UPLOAD_INFO, 0, 8, &info, &il, "upload info (0xF00C)", &e2);
        if (rc2 != FB_EEXCEPTION) { /* else both refused: the first message says it */
            rc = rc2;
            if (rc) *err = e2;
        }
    }
    if (rc) return rc;
    struct ads_upload_info ui;
    rc = ads_parse_upload_info(info, il, &ui);
    free(info);
    if (rc) return fail_text(c, FB_EPROTO, err, "upload info");
    if (ui.sym_len > ADS_FRAME_MAX - 64 || ui.dt_len > ADS_FRAME_MAX - 64)
        return fb_err_set(err, FB_ERANGE, "%s: symbol table too large (%u bytes)", c->where, ui.sym_len);
    rc = read_block(c, ADS_IG_SYM_UPLOAD, 0, ui.sym_len, sym, sym_len, "symbol upload (0xF00B)", err);
    if (rc) return rc;
    if (ui.dt_len) {
        struct fb_err e2 = {0};
        if (read_block(c, ADS_IG_DT_UPLOAD, 0, ui.dt_len, dt, dt_len, "data-type upload (0xF00E)", &e2)) {
            *dt = NULL; /* optional: plain types resolve without it */
            *dt_len = 0;
            if (c->broken) {
                *err = e2;
                return e2.code;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ device */
static int ads_device_init(struct fb_device *dev, char **conn_key, struct fb_err *err)
{
    struct ads_dev *ad = calloc(1, sizeof *ad);
    if (!ad) return fb_err_set(err, FB_ENOMEM, "out of memory");
    int rc = ads_opts_parse(&dev->url, dev->timeout_ns, &ad->o, err);
    if (rc) {
        free(ad);
        return rc;
    }
    *conn_key = ads_opts_conn_key(&ad->o);
    if (!*conn_key) {
        free(ad);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    dev->timeout_ns = ad->o.timeout_ns;
    dev->drv_dev = ad;
    return 0;
}

static void ads_device_free(struct fb_device *dev)
{
    struct ads_dev *ad = dev->drv_dev;
    if (ad) {
        if (ad->upl) {
            pthread_mutex_lock(&upl_mu);
            if (--ad->upl->refs == 0) {
                for (struct ads_upl **pp = &upl_list; *pp; pp = &(*pp)->next)
                    if (*pp == ad->upl) {
                        *pp = ad->upl->next;
                        break;
                    }
                conn_free(ad->upl->c);
                free(ad->upl->key);
                free(ad->upl->sym);
                free(ad->upl->dt);
                free(ad->upl);
            }
            pthread_mutex_unlock(&upl_mu);
        }
        free(ad);
    }
    dev->drv_dev = NULL;
}

static int ensure_upload(struct ads_dev *ad, struct fb_err *err)
{
    if (!ad->upl) {
        char *key = ads_opts_conn_key(&ad->o);
        if (!key) return fb_err_set(err, FB_ENOMEM, "out of memory");
        pthread_mutex_lock(&upl_mu);
        struct ads_upl *u = upl_list;
        int64_t now = fb_mono_ns();
        while (u && (strcmp(u->key, key) || now - u->at > ADS_UPL_SHARE_NS)) u = u->next;
        if (u) {
            free(key);
        } else if ((u = calloc(1, sizeof *u))) {
            u->key = key;
            u->at = now;
            struct ads_conn *c = NULL;
            struct fb_err e = {0};
            u->rc = conn_new(&ad->o, &c, &e);
            if (!u->rc) u->rc = upload(c, &u->sym, &u->sym_len, &u->dt, &u->dt_len, &e);
            if (u->rc == FB_EEXCEPTION && !c->broken) {
                /* the PLC has no symbol upload: keep the connection to ask name by name */
                u->refused = c->last_ads_err;
                u->c = c;
                fb_info(NULL, NULL,
                        "%s refused the symbol upload (ADS error 0x%X: %s): asking the PLC for the types "
                        "of untyped names one by one",
                        c->where, u->refused, ads_err_text(u->refused));
            } else {
                conn_free(c);
            }
            if (u->rc) snprintf(u->err, sizeof u->err, "%s", e.msg);
            u->next = upl_list;
            upl_list = u;
        } else {
            free(key);
        }
        if (u) u->refs++;
        pthread_mutex_unlock(&upl_mu);
        if (!u) return fb_err_set(err, FB_ENOMEM, "out of memory");
        ad->upl = u;
    }
    if (ad->upl->rc) return fb_err_set(err, ad->upl->rc, "%s", ad->upl->err);
    return 0;
}

/* The per-name connection of a refused upload: closed once the device's tags
 * are parsed (a later look-up opens it again). */
static void upl_close_conn(struct ads_upl *u)
{
    pthread_mutex_lock(&upl_mu);
    conn_free(u->c);
    u->c = NULL;
    pthread_mutex_unlock(&upl_mu);
}

/* One ReadWrite on c: the reply data (valid until the next receive). */
static int rw_once(struct ads_conn *c, uint32_t ig, uint32_t rlen, const char *name, const char *what,
                   const uint8_t **data, uint32_t *len, struct fb_err *err)
{
    size_t nl = strlen(name) + 1;
    if (grow(&c->tx, &c->tx_cap, ADS_HDR + 16 + nl)) return fb_err_set(err, FB_ENOMEM, "out of memory");
    uint32_t inv = next_invoke(c, 1);
    struct ads_hdr h = tmpl_for(c, inv);
    size_t n = ads_build_rw(c->tx, c->tx_cap, &h, ig, 0, rlen, (const uint8_t *)name, (uint32_t)nl);
    struct one o;
    int rc = transact(c, n, inv, &o, what, err);
    if (rc) return rc;
    uint32_t res;
    if (ads_parse_read(o.d, o.n, &res, data, len)) return fail_text(c, FB_EPROTO, err, what);
    return 0;
}

/* The upload was refused (TwinCAT 2 without it, BC/BX, simulators): learn
 * what the PLC says about one name — its symbol entry (0xF009, the upload's
 * entry layout for just this name), else the extended handle reply of
 * TwinCAT 3 (size and type name) — into u->info.  Must hold upl_mu.
 * FB_ENOENT for a name the PLC does not know; the other failures say what
 * was refused. */
static int name_info(struct ads_upl *u, const struct ads_opts *o, const char *name, struct fb_err *err)
{
    int rc = 0;
    if (!u->c && (rc = conn_new(o, &u->c, err)) != 0) return rc;
    struct ads_conn *c = u->c;
    const uint8_t *d;
    uint32_t dl;
    struct fb_err e1 = {0}, e2 = {0};
    struct ads_info *in = &u->info;
    in->name[0] = 0;
    rc = rw_once(c, ADS_IG_SYM_INFO_EX, 0xFFFF, name, "symbol info (0xF009)", &d, &dl, &e1);
    if (rc == 0) {
        size_t off = 0;
        struct ads_sym s;
        if (ads_sym_next(d, dl, &off, &s) != 1 || s.type_len >= sizeof in->type)
            return fb_err_set(err, FB_EPROTO, "malformed symbol info (0xF009) from the PLC");
        memcpy(in->type, s.type, s.type_len);
        in->type[s.type_len] = 0;
        in->size = s.size;
        in->adst = s.adstype;
        snprintf(in->name, sizeof in->name, "%s", name);
        return 0;
    }
    uint32_t info_err = c->last_ads_err;
    if (rc == FB_EEXCEPTION && info_err != ADSERR_SYM_NOT_FOUND) {
        /* no symbol info: a handle, asked for with room for TwinCAT 3's extended reply */
        rc = rw_once(c, ADS_IG_HANDLE_BY_NAME, 0xFFFFFFFFu, name, "handle (0xF003)", &d, &dl, &e2);
        if (rc == 0) {
            uint32_t hd, size;
            const char *tn;
            uint16_t tl;
            int prc = ads_parse_handle_ex(d, dl, &hd, &size, &tn, &tl);
            if (!prc && tl && tl < sizeof in->type) {
                memcpy(in->type, tn, tl);
                in->type[tl] = 0;
                in->size = size;
                in->adst = 0;
                snprintf(in->name, sizeof in->name, "%s", name);
            } else {
                rc = fb_err_set(err, FB_EINVAL,
                                "it refuses the symbol upload (ADS error 0x%X) and the symbol info by name (0xF009: "
                                "0x%X), and its handle reply names no type",
                                u->refused, info_err);
            }
            if (!prc) { /* give the handle back */
                uint8_t hb[4] = {(uint8_t)hd, (uint8_t)(hd >> 8), (uint8_t)(hd >> 16), (uint8_t)(hd >> 24)};
                uint32_t inv = next_invoke(c, 1);
                struct ads_hdr h = tmpl_for(c, inv);
                size_t n = ads_build_write(c->tx, c->tx_cap, &h, ADS_IG_RELEASE_HANDLE, 0, hb, 4);
                struct one on;
                struct fb_err e3 = {0};
                transact(c, n, inv, &on, "release handle", &e3);
            }
            return rc;
        }
        if (rc != FB_EEXCEPTION) e1 = e2;
    }
    if (rc == FB_EEXCEPTION && c->last_ads_err == ADSERR_SYM_NOT_FOUND)
        return fb_err_set(err, FB_ENOENT, "symbol not found (ADS error 0x710)");
    if (rc == FB_EEXCEPTION)
        return fb_err_set(err, FB_EINVAL,
                          "it refuses the symbol upload (ADS error 0x%X), the symbol info by name (0xF009: 0x%X) "
                          "and the handle by name (0xF003: 0x%X)",
                          u->refused, info_err, c->last_ads_err);
    *err = e1;
    return rc;
}

/* The type of one name (element `elem` of a `count:` run) from the PLC
 * without its upload.  The last name's answer is kept: a `count:` run parses
 * the same name once per element. */
static int type_by_name(struct ads_dev *ad, const char *name, int64_t elem, char *sub, size_t subcap,
                        struct ads_tinfo *ti, struct fb_err *err)
{
    struct ads_upl *u = ad->upl;
    int rc = 0;
    pthread_mutex_lock(&upl_mu);
    if (strcmp(u->info.name, name) != 0) rc = name_info(u, &ad->o, name, err);
    if (!rc)
        rc = ads_type_resolve(u->info.type, strlen(u->info.type), u->info.size, u->info.adst, NULL, 0, elem, sub,
                              subcap, ti, err);
    if (u->c && u->c->broken) {
        conn_free(u->c);
        u->c = NULL;
    }
    pthread_mutex_unlock(&upl_mu);
    return rc;
}

static int ads_parse_address(struct fb_device *dev, struct fb_tag *tag, struct fb_err *err)
{
    struct ads_dev *ad = dev->drv_dev;
    struct ads_addr a; /* parsed here; the tag keeps only what it needs */
    char ab[FB_ATEXT_MAX];
    const char *text = fb_tag_addr_text(dev->gw, tag, ab);
    int rc = ads_addr_parse(text ? text : "", &a, err);
    if (!rc && a.deftype && tag->type != FB_T_NONE) {
        /* a raw address with `type:` in the config: that type, from the byte offset */
        if (a.ti.type == ADS_T_BOOL && tag->type != FB_T_BOOL)
            rc = fb_err_set(err, FB_EINVAL, "'%s' is a bit address: its type is bool", a.name);
        else
            a.typed = false; /* taken from the config just below */
    }
    if (!rc && !a.typed && tag->type != FB_T_NONE) {
        /* `type:` in the config names an fb type: take it as its IEC twin */
        const char *tn = fb_type_name((enum fb_type)tag->type);
        char buf[32];
        if (tag->type == FB_T_STRING) {
            snprintf(buf, sizeof buf, "STRING(%u)", tag->str_len ? tag->str_len : 80);
            tn = buf;
        }
        if (ads_type_parse(tn, strlen(tn), &a.ti) == 0)
            a.typed = true;
        else if (a.raw)
            rc = fb_err_set(err, FB_EINVAL, "type %s cannot be read from '%s'", tn, a.name);
    }
    if (!rc && a.raw && tag->index > 0 && ads_addr_raw_elem(&a, tag->index, &a.io))
        rc = fb_err_set(err, FB_EINVAL, "count over '%s' runs past the end of the offsets", a.name);
    else if (!rc && a.typed && !a.raw && tag->index > 0)
        rc = fb_err_set(err, FB_EINVAL,
                        "count over '%s' needs the type from the PLC: leave out the type, or "
                        "address the elements (NAME[i]:TYPE)",
                        a.name);
    if (!rc && !a.typed) {
        struct fb_err e = {0};
        char sub[32] = "";
        rc = ensure_upload(ad, &e);
        if (rc && ad->upl && ad->upl->refused) {
            /* no symbol upload on this PLC: ask for this name alone */
            memset(&e, 0, sizeof e);
            rc = type_by_name(ad, a.name, tag->index, sub, sizeof sub, &a.ti, &e);
            if (rc == FB_ENOENT)
                rc = fb_err_set(err, rc, "'%s' %s", a.name, e.msg);
            else if (rc == FB_ENOTSUP)
                rc = fb_err_set(err, FB_EINVAL, "'%s' %s", a.name, e.msg);
            else if (rc)
                rc = fb_err_set(err, FB_EINVAL,
                                "cannot learn the type of '%s' from the PLC: give it in the address "
                                "(%s:REAL, :DINT, :STRING(80) …); %s",
                                a.name, a.name, e.msg);
        } else if (rc) {
            rc = fb_err_set(err, FB_EINVAL,
                            "cannot learn the type of '%s' from the PLC: give it in the address "
                            "(%s:REAL, :DINT, :STRING(80) …); %s",
                            a.name, a.name, e.msg);
        } else {
            rc = ads_resolve(ad->upl->sym, ad->upl->sym_len, ad->upl->dt, ad->upl->dt_len, a.name, tag->index, sub,
                             sizeof sub, &a.ti, &e);
            if (rc) rc = fb_err_set(err, rc == FB_ENOTSUP ? FB_EINVAL : rc, "'%s' %s", a.name, e.msg);
        }
        if (!rc && sub[0] && strlen(a.name) + strlen(sub) <= ADS_MAX_NAME)
            strcat(a.name, sub);
        else if (!rc && sub[0])
            rc = fb_err_set(err, FB_EINVAL, "symbol name too long");
    }
    if (rc) return rc;
    /* one block: the tag, its name, its latest notified value (10,000 tags
     * cost their names' length, not 10,000 × ADS_MAX_NAME) */
    size_t nl = strlen(a.name) + 1;
    struct ads_tag *t = calloc(1, sizeof *t + nl + (a.ti.size ? a.ti.size : 1));
    if (!t) return fb_err_set(err, FB_ENOMEM, "out of memory");
    memcpy(t->name, a.name, nl);
    t->ti = a.ti;
    t->val = (uint8_t *)t->name + nl;
    t->id = tag->id;
    t->raw = a.raw;
    t->ig = a.ig;
    if (a.raw) t->handle = a.io;
    free(tag->addr);
    tag->addr = t;
    tag->type = t->ti.fbtype;
    if (t->ti.type == ADS_T_STRING)
        tag->str_len = 2 * t->ti.str_len; /* Latin-1 → UTF-8 */
    else if (t->ti.type == ADS_T_WSTRING)
        tag->str_len = 3 * t->ti.str_len; /* UTF-16 unit → ≤ 3 bytes */
    else if (t->ti.fbtype == FB_T_STRING)
        tag->str_len = 24; /* DATE / DT as text */
    return 0;
}

static void ads_free_address(struct fb_tag *tag)
{
    free(tag->addr);
    tag->addr = NULL;
}

static void plan_free(struct ads_plan *p)
{
    if (!p) return;
    free(p->tags);
    free(p->res);
    free(p->doff);
    free(p->data);
    free(p->need);
    free(p->hneed);
    free(p->idx);
    free(p->subs);
    free(p->rwsubs);
    free(p->first);
    free(p->cnt);
    free(p);
}

static int ads_plan_cb(struct fb_device *dev, struct fb_group *g, struct fb_err *err)
{
    struct ads_dev *ad = dev->drv_dev;
    if (ad->upl && ad->upl->c) upl_close_conn(ad->upl); /* every tag is parsed by now */
    struct ads_plan *p = calloc(1, sizeof *p);
    uint32_t n = g->ntags;
    if (!p) return fb_err_set(err, FB_ENOMEM, "out of memory");
    p->n = n;
    p->period_ns = g->period_ns;
    p->tags = calloc(n ? n : 1, sizeof *p->tags);
    p->res = calloc(n + 1, sizeof *p->res);
    p->doff = calloc(n + 1, sizeof *p->doff);
    size_t total = 1;
    for (uint32_t i = 0; i < n; i++) {
        const struct fb_tag *t = &dev->gw->tags[fb_group_tag(g, i)];
        if (!t->addr) {
            plan_free(p);
            return fb_err_set(err, FB_EINVAL, "tag %s has no parsed address", t->name);
        }
        p->tags[i] = t->addr;
        if (p->doff) p->doff[i] = (uint32_t)total;
        total += p->tags[i]->ti.size;
    }
    p->data = calloc(1, total);
    uint32_t ms = (uint32_t)((struct ads_dev *)dev->drv_dev)->o.max_sum;
    p->nch = (n + 1 + ms - 1) / ms;
    p->need = calloc(n ? n : 1, sizeof *p->need);
    p->hneed = calloc(n ? n : 1, sizeof *p->hneed);
    p->idx = calloc(n + 1, sizeof *p->idx);
    p->subs = calloc(n + 1, sizeof *p->subs);
    p->rwsubs = calloc(n ? n : 1, sizeof *p->rwsubs);
    p->first = calloc(p->nch, sizeof *p->first);
    p->cnt = calloc(p->nch, sizeof *p->cnt);
    if (!p->tags || !p->res || !p->doff || !p->data || !p->need || !p->hneed || !p->idx || !p->subs || !p->rwsubs ||
        !p->first || !p->cnt) {
        plan_free(p);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    g->plan = p;
    return 0;
}

static void ads_plan_free_cb(struct fb_group *g)
{
    plan_free(g->plan);
    g->plan = NULL;
}

/* ----------------------------------------------------------------- handles */
static bool tag_ready(const struct ads_tag *t, const struct ads_conn *c) { return t->raw || t->h_epoch == c->epoch; }
static uint32_t tag_ig(const struct ads_tag *t) { return t->raw ? t->ig : ADS_IG_VALUE_BY_HANDLE; }

struct hctx {
    struct ads_conn *c;
    struct ads_tag **tags; /* the tags of each chunk, in order */
    uint32_t *first;       /* chunk → index of its first tag */
    uint32_t *cnt;
    bool was_yes;     /* sum read-write was known to work before this call */
    uint32_t refused; /* a whole sum command answered 0x701/0x702 */
    bool worked;      /* a whole sum command was answered */
};

static void handle_fail(struct ads_tag *t, uint32_t code)
{
    t->h_epoch = 0;
    t->herr = code;
    /* an unknown name is asked for again now and then; anything else next cycle */
    t->retry_at = fb_mono_ns() + (code == ADSERR_SYM_NOT_FOUND ? ADS_HANDLE_RETRY_NS : 0);
}

static void handle_take(struct ads_conn *c, struct ads_tag *t, const uint8_t *d, uint32_t n)
{
    uint32_t hd, sz;
    if (ads_parse_handle(d, n, &hd, &sz)) {
        handle_fail(t, 0x706);
        return;
    }
    t->handle = hd;
    t->h_epoch = c->epoch;
    t->herr = 0;
}

static int handles_fn(void *ctx, uint32_t i, uint32_t err, const uint8_t *d, size_t n)
{
    struct hctx *h = ctx;
    struct ads_tag **tags = h->tags + h->first[i];
    uint32_t cnt = h->cnt[i];
    uint32_t res = err;
    const uint8_t *rd = NULL;
    uint32_t rl = 0;
    if (!res && ads_parse_read(d, n, &res, &rd, &rl)) return FB_EPROTO;
    if (res && ADS_UNSUPPORTED(res) && !h->was_yes) { /* no sum commands: single requests */
        h->refused = res;
        return 0;
    }
    if (res) { /* the whole sum command failed */
        for (uint32_t k = 0; k < cnt; k++) handle_fail(tags[k], res);
        return 0;
    }
    h->worked = true;
    uint32_t r[ADS_SUM_MAX], lens[ADS_SUM_MAX];
    const uint8_t *dp[ADS_SUM_MAX];
    if (ads_sum_rw_parse(rd, rl, cnt, r, dp, lens)) return FB_EPROTO;
    for (uint32_t k = 0; k < cnt; k++) {
        if (r[k])
            handle_fail(tags[k], r[k]);
        else
            handle_take(h->c, tags[k], dp[k], lens[k]);
    }
    return 0;
}

/* single handle requests (ReadWrite 0xF003, the name with its NUL) */
struct h1ctx {
    struct ads_conn *c;
    struct ads_tag **tags;
};
static size_t handle_req(void *ctx, uint32_t i, uint8_t *b, size_t cap, const struct ads_hdr *h)
{
    const struct ads_tag *t = ((struct h1ctx *)ctx)->tags[i];
    return ads_build_rw(b, cap, h, ADS_IG_HANDLE_BY_NAME, 0, 4, (const uint8_t *)t->name,
                        (uint32_t)strlen(t->name) + 1);
}
static int handle_rep(void *ctx, uint32_t i, uint32_t err, const uint8_t *d, size_t n)
{
    struct h1ctx *x = ctx;
    uint32_t res = err, rl = 0;
    const uint8_t *rd = NULL;
    if (!res && ads_parse_read(d, n, &res, &rd, &rl)) return FB_EPROTO;
    if (res)
        handle_fail(x->tags[i], res);
    else
        handle_take(x->c, x->tags[i], rd, rl);
    return 0;
}

/* Ask for the handles of tags[0..n) in sum read-writes of up to max_sum
 * names, all frames in flight at once — or, from a device without sum
 * commands, one ReadWrite per name (ADS_WINDOW in flight).  *nreq counts the
 * requests sent.  The caller's scratch: subs holds n, first and cnt
 * ceil(n / max_sum) entries (a plan's tables, or one each on the stack for a
 * write), so nothing is allocated here; tags[] may be reordered. */
static int resolve_handles(struct ads_conn *c, const struct ads_opts *o, struct ads_tag **tags, uint32_t n,
                           struct ads_rwsub *subs, uint32_t *first, uint32_t *cnt, uint64_t *nreq)
{
    if (!n) return 0;
    int rc = 0;
    if (sum_ok(c, SUM_RW)) {
        uint32_t chunks = (n + (uint32_t)o->max_sum - 1) / (uint32_t)o->max_sum;
        size_t len = 0;
        uint32_t inv = next_invoke(c, chunks ? chunks : 1);
        for (uint32_t ch = 0; ch < chunks && !rc; ch++) {
            first[ch] = ch * (uint32_t)o->max_sum;
            cnt[ch] = n - first[ch] < (uint32_t)o->max_sum ? n - first[ch] : (uint32_t)o->max_sum;
            size_t wl = 16 * (size_t)cnt[ch];
            for (uint32_t k = 0; k < cnt[ch]; k++) {
                struct ads_tag *t = tags[first[ch] + k];
                /* the name with its NUL, as TwinCAT's own clients send it */
                subs[first[ch] + k] = (struct ads_rwsub){ADS_IG_HANDLE_BY_NAME, 0, 4, (uint32_t)strlen(t->name) + 1,
                                                         (const uint8_t *)t->name};
                wl += strlen(t->name) + 1;
            }
            if (grow(&c->w, &c->w_cap, wl) || grow(&c->tx, &c->tx_cap, len + ADS_HDR + 16 + wl)) {
                rc = FB_ENOMEM;
                break;
            }
            uint32_t rlen;
            size_t w = ads_sum_rw_req(c->w, c->w_cap, subs + first[ch], cnt[ch], &rlen);
            struct ads_hdr h = tmpl_for(c, inv + ch);
            size_t fl =
                w ? ads_build_rw(c->tx + len, c->tx_cap - len, &h, ADS_IG_SUM_RW, cnt[ch], rlen, c->w, (uint32_t)w) : 0;
            if (!fl) rc = FB_EINVAL;
            len += fl;
        }
        if (rc) return rc;
        struct hctx hc = {c, tags, first, cnt, c->cap[SUM_RW] == CAP_YES, 0, false};
        *nreq += chunks;
        rc = exchange(c, len, inv, chunks, handles_fn, &hc, c->timeout_ns);
        if (rc) return rc;
        if (!hc.refused) {
            if (hc.worked) sum_works(c, SUM_RW);
            return 0;
        }
        sum_refused(c, SUM_RW, hc.refused);
    }
    uint32_t m = 0; /* those still without a handle */
    for (uint32_t i = 0; i < n; i++)
        if (tags[i]->h_epoch != c->epoch) tags[m++] = tags[i];
    struct h1ctx x = {c, tags};
    *nreq += m;
    return singles(c, m, ADS_HDR + 16 + ADS_MAX_NAME + 1, handle_req, handle_rep, &x);
}

/* A download (new symbol version, or 0x710/0x711 for a handle): every handle
 * and notification of this connection is void. */
static void new_epoch(struct ads_conn *c)
{
    c->epoch = atomic_fetch_add(&epoch_seq, 1);
    /* notifications on raw addresses (%M, %I, %Q) do not depend on the
     * program: they stay (a subsequence of a sorted array stays sorted) */
    uint32_t k = 0;
    for (uint32_t i = 0; i < c->nnotes; i++)
        if (c->notes[i].t->raw && c->notes[i].t->n_epoch) {
            c->notes[i].t->n_epoch = c->epoch;
            c->notes[k++] = c->notes[i];
        }
    c->nnotes = k;
}

/* Every ADS_CHECK_NS read the symbol version alone (notify mode, and poll
 * mode without sum commands, where it cannot ride along in the sum read):
 * a link check too.  A change (a download) starts a new epoch; `then` says
 * what follows in the log. */
static int check_symver(struct fb_device *dev, struct ads_conn *c, const char *then)
{
    int64_t now = fb_mono_ns();
    if (now < c->next_check) return 0;
    c->next_check = now + ADS_CHECK_NS;
    uint32_t inv = next_invoke(c, 1);
    struct ads_hdr h = tmpl_for(c, inv);
    size_t n = ads_build_read(c->tx, c->tx_cap, &h, ADS_IG_SYM_VERSION, 0, 1);
    struct one o;
    struct fb_err e = {0};
    atomic_fetch_add(&dev->m.requests, 1);
    int rc = transact(c, n, inv, &o, "symbol version", &e);
    if (rc == FB_EEXCEPTION) return 0;
    if (rc) return rc;
    uint32_t res, dl;
    const uint8_t *d;
    if (ads_parse_read(o.d, o.n, &res, &d, &dl) || dl < 1) return 0;
    if (c->have_symver && d[0] != c->symver) {
        fb_info(dev->name, NULL, "the PLC program changed (symbol version %u → %u): %s", c->symver, d[0], then);
        new_epoch(c);
    }
    c->symver = d[0];
    c->have_symver = true;
    return 0;
}

/* -------------------------------------------------------------- poll read */
struct rctx_read {
    struct ads_conn *c;
    struct ads_plan *p;
    uint32_t *idx; /* sub k of the whole read → plan index (UINT32_MAX = symbol version) */
    uint32_t *first, *cnt;
    struct ads_sub *subs;
    uint32_t req_err; /* an error for the whole request */
    bool symver_seen;
    uint8_t symver;
    bool was_yes;      /* sum read was known to work before this round */
    uint32_t refused;  /* a whole sum read answered 0x701/0x702 */
    uint32_t answered; /* requests answered without an error for the whole request */
};

static int read_fn(void *ctx, uint32_t i, uint32_t err, const uint8_t *d, size_t n)
{
    struct rctx_read *r = ctx;
    uint32_t first = r->first[i], cnt = r->cnt[i];
    uint32_t res = err;
    const uint8_t *rd = NULL;
    uint32_t rl = 0;
    if (!res && ads_parse_read(d, n, &res, &rd, &rl)) return FB_EPROTO;
    if (res && ADS_UNSUPPORTED(res) && !r->was_yes) { /* no sum commands: single reads */
        r->refused = res;
        return 0;
    }
    if (res) {
        r->req_err = res;
        for (uint32_t k = 0; k < cnt; k++)
            if (r->idx[first + k] != UINT32_MAX) r->p->res[r->idx[first + k]] = res;
        return 0;
    }
    r->answered++;
    uint32_t sres[ADS_SUM_MAX + 1];
    const uint8_t *dp[ADS_SUM_MAX + 1];
    if (ads_sum_read_parse(rd, rl, r->subs + first, cnt, sres, dp)) return FB_EPROTO;
    for (uint32_t k = 0; k < cnt; k++) {
        uint32_t ix = r->idx[first + k];
        if (ix == UINT32_MAX) {
            if (!sres[k] && dp[k]) {
                r->symver_seen = true;
                r->symver = dp[k][0];
            }
            continue;
        }
        r->p->res[ix] = sres[k];
        if (!sres[k]) memcpy(r->p->data + r->p->doff[ix], dp[k], r->subs[first + k].len);
    }
    return 0;
}

/* single reads (Read IG, IO, len): subs[i] / idx[i] */
static size_t read_req(void *ctx, uint32_t i, uint8_t *b, size_t cap, const struct ads_hdr *h)
{
    const struct ads_sub *s = &((struct rctx_read *)ctx)->subs[i];
    return ads_build_read(b, cap, h, s->ig, s->io, s->len);
}
static int read_rep(void *ctx, uint32_t i, uint32_t err, const uint8_t *d, size_t n)
{
    struct rctx_read *r = ctx;
    uint32_t res = err, rl = 0;
    const uint8_t *rd = NULL;
    if (!res && ads_parse_read(d, n, &res, &rd, &rl)) return FB_EPROTO;
    if (!res && rl < r->subs[i].len) res = 0x705; /* fewer bytes than the type needs */
    uint32_t ix = r->idx[i];
    r->p->res[ix] = res;
    if (!res) {
        memcpy(r->p->data + r->p->doff[ix], rd, r->subs[i].len);
        r->answered++;
    } else {
        r->req_err = res;
    }
    return 0;
}

/* One round: handles for tags that need them, then the reads — sum reads
 * of up to max_sum sub-reads (the symbol version riding along first), or,
 * from a device without sum commands, one Read per tag and a separate
 * symbol-version check every ADS_CHECK_NS. */
static int poll_round(struct fb_device *dev, struct ads_conn *c, struct ads_plan *p, bool *redo)
{
    const struct ads_opts *o = &((struct ads_dev *)dev->drv_dev)->o;
    *redo = false;
    /* the plan's tables: nothing is allocated per cycle */
    struct ads_tag **need = p->need;
    uint32_t *idx = p->idx, *first = p->first, *cnt = p->cnt;
    struct ads_sub *subs = p->subs;
    int rc = 0;
    uint64_t nreq = 0;
    if (!sum_ok(c, SUM_READ)) rc = check_symver(dev, c, "resolving handles again");
    int64_t now = fb_mono_ns();
    uint32_t nn = 0;
    for (uint32_t i = 0; i < p->n && !rc; i++) {
        struct ads_tag *t = p->tags[i];
        if (!tag_ready(t, c) && (!t->herr || now >= t->retry_at)) need[nn++] = t;
    }
    if (!rc && nn) rc = resolve_handles(c, o, need, nn, p->rwsubs, first, cnt, &nreq);
    /* sub-reads: the symbol version first (sum reads only), then every tag
     * with a handle or a raw address */
    bool sum = sum_ok(c, SUM_READ);
    uint32_t ns = 0;
    if (!rc) {
        if (sum) {
            subs[ns] = (struct ads_sub){ADS_IG_SYM_VERSION, 0, 1};
            idx[ns++] = UINT32_MAX;
        }
        for (uint32_t i = 0; i < p->n; i++) {
            struct ads_tag *t = p->tags[i];
            if (tag_ready(t, c)) {
                subs[ns] = (struct ads_sub){tag_ig(t), t->handle, t->ti.size};
                idx[ns++] = i;
                p->res[i] = 0x1; /* until answered */
            } else {
                p->res[i] = t->herr ? t->herr : 0x710;
            }
        }
    }
    struct rctx_read rr = {c, p, idx, first, cnt, subs, 0, false, 0, c->cap[SUM_READ] == CAP_YES, 0, 0};
    int64_t t0 = fb_mono_ns();
    uint32_t trips = 0;
    if (!rc && sum) {
        uint32_t chunks = (ns + (uint32_t)o->max_sum - 1) / (uint32_t)o->max_sum;
        size_t len = 0;
        uint32_t inv = next_invoke(c, chunks);
        for (uint32_t ch = 0; ch < chunks && !rc; ch++) {
            first[ch] = ch * (uint32_t)o->max_sum;
            cnt[ch] = ns - first[ch] < (uint32_t)o->max_sum ? ns - first[ch] : (uint32_t)o->max_sum;
            if (grow(&c->w, &c->w_cap, 12 * (size_t)cnt[ch]) ||
                grow(&c->tx, &c->tx_cap, len + ADS_HDR + 16 + 12 * (size_t)cnt[ch])) {
                rc = FB_ENOMEM;
                break;
            }
            uint32_t rlen;
            size_t w = ads_sum_read_req(c->w, c->w_cap, subs + first[ch], cnt[ch], &rlen);
            struct ads_hdr h = tmpl_for(c, inv + ch);
            size_t fl =
                w ? ads_build_rw(c->tx + len, c->tx_cap - len, &h, ADS_IG_SUM_READ, cnt[ch], rlen, c->w, (uint32_t)w)
                  : 0;
            if (!fl) rc = FB_EINVAL;
            len += fl;
        }
        if (!rc) {
            nreq += chunks;
            trips = 1;
            rc = exchange(c, len, inv, chunks, read_fn, &rr, c->timeout_ns);
        }
        if (!rc && rr.refused) {
            sum_refused(c, SUM_READ, rr.refused);
            sum = false;
        } else if (!rc && rr.answered) {
            sum_works(c, SUM_READ);
        }
        if (!sum) { /* refused: the same reads one by one, without the symbol version */
            subs++;
            idx++;
            ns--;
        }
    }
    if (!rc && !sum && ns) {
        rr.subs = subs;
        rr.idx = idx;
        nreq += ns;
        trips += windows(ns);
        rc = singles(c, ns, ADS_HDR + 12, read_req, read_rep, &rr);
    }
    int64_t t1 = fb_mono_ns();
    atomic_fetch_add(&dev->m.requests, nreq);
    if (!rc && trips) {
        uint64_t rtt = (uint64_t)(t1 - t0) / trips; /* one round trip: a window of requests in flight */
        atomic_fetch_add(&dev->m.rtt_ns_sum, rtt);
        atomic_store(&dev->m.rtt_ns_last, rtt);
        atomic_fetch_add(&dev->m.rtt_count, 1);
        if (rr.answered) atomic_store(&dev->m.last_success_ns, fb_now_ns());
    }
    if (!rc) {
        bool stale = false;
        if (rr.symver_seen) {
            if (c->have_symver && rr.symver != c->symver) stale = true;
            c->symver = rr.symver;
            c->have_symver = true;
        }
        for (uint32_t i = 0; i < p->n; i++)
            if (!p->tags[i]->raw && p->tags[i]->h_epoch == c->epoch &&
                (p->res[i] == ADSERR_SYM_NOT_FOUND || p->res[i] == ADSERR_SYM_VERSION))
                stale = true;
        if (stale) {
            fb_info(dev->name, NULL, "the PLC program changed (symbol version %u): resolving handles again", c->symver);
            new_epoch(c);
            *redo = true;
        }
    }
    return rc;
}

/* ------------------------------------------------------------ notifications */
struct nctx {
    struct ads_conn *c;
    struct ads_tag **tags;
};

static int addnote_fn(void *ctx, uint32_t i, uint32_t err, const uint8_t *d, size_t n)
{
    struct nctx *x = ctx;
    struct ads_tag *t = x->tags[i];
    uint32_t res = err, h = 0;
    if (!res && ads_parse_addnote(d, n, &res, &h)) return FB_EPROTO;
    if (res) {
        t->herr = res;
        t->retry_at = fb_mono_ns() + ADS_HANDLE_RETRY_NS;
        t->n_epoch = 0;
        return 0;
    }
    t->note = h;
    t->n_epoch = x->c->epoch;
    t->have_val = false;
    struct ads_conn *c = x->c;
    if (c->nnotes == c->notes_cap) {
        uint32_t nc = c->notes_cap ? c->notes_cap * 2 : 64;
        struct note_ent *ne = realloc(c->notes, nc * sizeof *ne);
        if (!ne) return FB_ENOMEM;
        c->notes = ne;
        c->notes_cap = nc;
    }
    c->notes[c->nnotes++] = (struct note_ent){h, t};
    return 0;
}

/* Handles, then one AddDeviceNotification per tag (all in flight at once). */
static int add_notes(struct fb_device *dev, struct ads_conn *c, struct ads_plan *p)
{
    const struct ads_opts *o = &((struct ads_dev *)dev->drv_dev)->o;
    int64_t now = fb_mono_ns();
    struct ads_tag **need = p->need; /* the plan's tables: called every notify-mode cycle */
    uint32_t nn = 0;
    for (uint32_t i = 0; i < p->n; i++) {
        struct ads_tag *t = p->tags[i];
        if (t->n_epoch != c->epoch && (!t->herr || now >= t->retry_at)) need[nn++] = t;
    }
    if (!nn) return 0;
    uint32_t nh = 0;
    struct ads_tag **hn = p->hneed;
    int rc = 0;
    uint64_t nreq = 0;
    for (uint32_t i = 0; i < nn; i++)
        if (!tag_ready(need[i], c)) hn[nh++] = need[i];
    if (nh) rc = resolve_handles(c, o, hn, nh, p->rwsubs, p->first, p->cnt, &nreq);
    atomic_fetch_add(&dev->m.requests, nreq);
    uint32_t na = 0;
    for (uint32_t i = 0; i < nn && !rc; i++)
        if (tag_ready(need[i], c)) need[na++] = need[i];
    if (!rc && na) {
        int64_t cyc = o->cycle_ns ? o->cycle_ns : (o->mode == ADS_MODE_CYCLIC ? p->period_ns : 0);
        uint32_t cyc100 = (uint32_t)(cyc / 100 > UINT32_MAX ? UINT32_MAX : cyc / 100);
        uint32_t del100 = (uint32_t)(o->max_delay_ns / 100 > UINT32_MAX ? UINT32_MAX : o->max_delay_ns / 100);
        uint32_t mode = o->mode == ADS_MODE_CYCLIC ? ADS_TRANS_CYCLIC : ADS_TRANS_ONCHANGE;
        if (grow(&c->tx, &c->tx_cap, (size_t)na * (ADS_HDR + 40))) rc = FB_ENOMEM;
        uint32_t inv = next_invoke(c, na);
        size_t len = 0;
        for (uint32_t i = 0; i < na && !rc; i++) {
            struct ads_hdr h = tmpl_for(c, inv + i);
            len += ads_build_addnote(c->tx + len, c->tx_cap - len, &h, tag_ig(need[i]), need[i]->handle,
                                     need[i]->ti.size, mode, del100, cyc100);
        }
        if (!rc) {
            atomic_fetch_add(&dev->m.requests, na);
            struct nctx x = {c, need};
            rc = exchange(c, len, inv, na, addnote_fn, &x, c->timeout_ns + (int64_t)na * 1000000);
        }
        if (c->nnotes) qsort(c->notes, c->nnotes, sizeof *c->notes, note_cmp);
    }
    return rc;
}

/* Drain whatever the PLC pushed, without waiting. */
static int drain(struct ads_conn *c)
{
    for (;;) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int r = poll(&pfd, 1, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return 0;
        if (pfd.revents & (POLLERR | POLLHUP) && !(pfd.revents & POLLIN)) {
            c->broken = true;
            return FB_EIO;
        }
        struct ads_hdr h;
        int rc = recv_frame(c, fb_mono_ns() + c->timeout_ns, &h);
        if (rc) {
            c->broken = true;
            return rc;
        }
        stray(c, &h);
    }
}

/* ------------------------------------------------------------------- read */
static void add_bad(struct fb_batch *out, uint32_t id, uint8_t type, uint32_t q, int64_t ts)
{
    struct fb_value v;
    memset(&v, 0, sizeof v);
    v.type = type;
    if (v.type == FB_T_STRING) v.s.p = "";
    fb_batch_add(out, id, q, ts, &v);
}

static void log_tag(struct fb_device *dev, struct ads_tag *t, uint32_t q, uint32_t code)
{
    const struct fb_tag *ft = &dev->gw->tags[t->id];
    if (fb_q_bad(q) && (!t->seen || q != t->last_q)) {
        char qn[16];
        fb_warn(dev->name, ft->name, "%s: ADS error 0x%X: %s → %s%s", t->name, code, ads_err_text(code),
                fb_q_name(q, qn),
                ADS_UNSUPPORTED(code) && !t->raw
                    ? " (this PLC offers no access by name, as a BC controller: use raw addresses such as %MW10, "
                      "docs/ads.md §3)"
                    : "");
    } else if (!fb_q_bad(q) && t->seen && fb_q_bad(t->last_q)) {
        fb_info(dev->name, ft->name, "read recovered");
    }
    t->last_q = q;
    t->seen = true;
}

static int ads_read(struct fb_device *dev, struct fb_group *g, struct fb_batch *out)
{
    struct ads_plan *p = g->plan;
    struct ads_conn *c = dev->conn ? dev->conn->ctx : NULL;
    const struct ads_opts *o = &((struct ads_dev *)dev->drv_dev)->o;
    if (!p) return FB_EINVAL;
    int64_t ts = fb_now_ns();
    if (!c) {
        for (uint32_t i = 0; i < p->n; i++)
            add_bad(out, p->tags[i]->id, dev->gw->tags[p->tags[i]->id].type, FB_Q_BAD_NOT_CONNECTED, ts);
        return FB_EIO;
    }
    char sbuf[ADS_SBUF];
    int rc = 0;
    uint64_t failed = 0; /* tags the PLC refused or does not know, this cycle */
    if (o->mode == ADS_MODE_POLL) {
        bool redo = false;
        rc = poll_round(dev, c, p, &redo);
        if (!rc && redo) rc = poll_round(dev, c, p, &redo);
        ts = fb_now_ns();
        for (uint32_t i = 0; i < p->n; i++) {
            struct ads_tag *t = p->tags[i];
            uint8_t type = dev->gw->tags[t->id].type;
            uint32_t code = rc ? 0 : p->res[i];
            uint32_t q = rc ? (rc == FB_ETIMEDOUT ? FB_Q_BAD_TIMEOUT : FB_Q_BAD_COMM) : ads_err_quality(code, false);
            if (!rc) log_tag(dev, t, q, code);
            if (code) failed++;
            if (q != FB_Q_GOOD) {
                add_bad(out, t->id, type, q, ts);
                continue;
            }
            struct fb_value v;
            q = ads_decode(&t->ti, p->data + p->doff[i], t->ti.size, &v, sbuf, sizeof sbuf);
            if (q != FB_Q_GOOD)
                add_bad(out, t->id, type, q, ts);
            else
                fb_batch_add(out, t->id, FB_Q_GOOD, ts, &v);
        }
    } else {
        rc = check_symver(dev, c, "adding notifications again");
        if (!rc) rc = add_notes(dev, c, p);
        if (!rc) rc = drain(c);
        ts = fb_now_ns();
        for (uint32_t i = 0; i < p->n; i++) {
            struct ads_tag *t = p->tags[i];
            uint8_t type = dev->gw->tags[t->id].type;
            uint32_t q;
            if (rc)
                q = rc == FB_ETIMEDOUT ? FB_Q_BAD_TIMEOUT : FB_Q_BAD_COMM;
            else if (t->n_epoch != c->epoch)
                q = ads_err_quality(t->herr ? t->herr : 0x710, false);
            else
                q = t->have_val ? FB_Q_GOOD : FB_Q_BAD_WAITING;
            if (!rc && t->n_epoch != c->epoch) failed++;
            if (!rc && q != FB_Q_BAD_WAITING) log_tag(dev, t, q, t->herr);
            if (q != FB_Q_GOOD) {
                add_bad(out, t->id, type, q, ts);
                continue;
            }
            struct fb_value v;
            q = ads_decode(&t->ti, t->val, t->ti.size, &v, sbuf, sizeof sbuf);
            struct fb_sample *s = q != FB_Q_GOOD ? NULL : fb_batch_add(out, t->id, FB_Q_GOOD, ts, &v);
            if (q != FB_Q_GOOD)
                add_bad(out, t->id, type, q, ts);
            else if (s)
                s->ts_src = t->val_ts;
        }
    }
    /* every item the device refused counts, as a failed request does: a PLC
     * that answers every read with an error is not healthy */
    if (failed) atomic_fetch_add(&dev->m.errors, failed);
    if (rc) {
        atomic_fetch_add(&dev->m.errors, 1);
        if (rc == FB_ETIMEDOUT) atomic_fetch_add(&dev->m.timeouts, 1);
        fb_warn(dev->name, NULL, "%s: %s", c->where, fb_strerror(rc));
        return rc == FB_ENOMEM || rc == FB_EINVAL ? FB_EPROTO : rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ write */
static int write_once(struct fb_device *dev, struct ads_conn *c, struct ads_tag *t, const uint8_t *data, uint32_t len,
                      uint32_t *res, struct fb_err *err)
{
    const struct ads_opts *o = &((struct ads_dev *)dev->drv_dev)->o;
    *res = 0;
    if (!tag_ready(t, c)) {
        struct ads_rwsub sub;
        uint32_t first, cnt;
        uint64_t nreq = 0;
        struct ads_tag *one[1] = {t};
        int rc = resolve_handles(c, o, one, 1, &sub, &first, &cnt, &nreq);
        atomic_fetch_add(&dev->m.requests, nreq);
        if (rc) return fail_text(c, rc, err, "handle request");
        if (t->h_epoch != c->epoch) {
            *res = t->herr;
            return 0;
        }
    }
    if (grow(&c->tx, &c->tx_cap, ADS_HDR + 12 + len)) return fb_err_set(err, FB_ENOMEM, "out of memory");
    uint32_t inv = next_invoke(c, 1);
    struct ads_hdr h = tmpl_for(c, inv);
    size_t n = ads_build_write(c->tx, c->tx_cap, &h, tag_ig(t), t->handle, data, len);
    struct one one;
    struct fb_err e = {0};
    int rc = transact(c, n, inv, &one, "write", &e);
    if (rc == FB_EEXCEPTION) {
        *res = c->last_ads_err;
        return 0;
    }
    if (rc) *err = e;
    return rc;
}

static int ads_write(struct fb_device *dev, const struct fb_tag *ft, const struct fb_value *v, struct fb_err *err)
{
    struct ads_tag *t = ft->addr;
    struct ads_conn *c = dev->conn ? dev->conn->ctx : NULL;
    if (!t) return fb_err_set(err, FB_EINVAL, "tag %s has no address", ft->name);
    if (!c) return fb_err_set(err, FB_EIO, "%s: not connected", dev->name);
    uint8_t buf[ADS_MAX_STRING + 9];
    int n = ads_encode(&t->ti, v, buf, sizeof buf, err);
    if (n < 0) return n;
    uint32_t res;
    int rc = write_once(dev, c, t, buf, (uint32_t)n, &res, err);
    if (!rc && !t->raw && (res == ADSERR_SYM_NOT_FOUND || res == ADSERR_SYM_VERSION) && t->h_epoch == c->epoch) {
        new_epoch(c); /* a stale handle after a download: take a new one, once */
        rc = write_once(dev, c, t, buf, (uint32_t)n, &res, err);
    }
    if (rc) return rc;
    if (res) {
        int code = res == 0x704 || res == 0x723   ? FB_EACCES
                   : res == ADSERR_SYM_NOT_FOUND  ? FB_ENOENT
                   : res == 0x705 || res == 0x706 ? FB_EINVAL
                                                  : FB_EEXCEPTION;
        if (code == FB_EINVAL) code = FB_EEXCEPTION; /* the device refused: not a usage error */
        return fb_err_set(err, code, "write to %s refused: ADS error 0x%X: %s", t->name, res, ads_err_text(res));
    }
    return 0;
}

/* ------------------------------------------------------------ open / close */
static int ads_open(struct fb_conn *cn, struct fb_err *err)
{
    if (cn->ctx) {
        conn_free(cn->ctx);
        cn->ctx = NULL;
    }
    if (!cn->ndevs || !cn->devs[0]->drv_dev)
        return fb_err_set(err, FB_EINVAL, "connection %s has no ADS device", cn->key);
    const struct ads_opts *o = &((const struct ads_dev *)cn->devs[0]->drv_dev)->o;
    struct ads_conn *c = NULL;
    int rc = conn_new(o, &c, err);
    if (rc) return rc;
    c->fc = cn;
    /* the symbol version, to notice downloads */
    uint8_t *sv = NULL;
    size_t svl = 0;
    struct fb_err e = {0};
    if (read_block(c, ADS_IG_SYM_VERSION, 0, 1, &sv, &svl, "symbol version", &e) == 0 && svl >= 1) {
        c->symver = sv[0];
        c->have_symver = true;
    } else if (c->broken) {
        free(sv);
        *err = e;
        conn_free(c);
        return e.code ? e.code : FB_EIO;
    }
    free(sv);
    c->next_check = fb_mono_ns() + ADS_CHECK_NS;
    cn->ctx = c;
    /* notify mode: subscribe now so the first values arrive before the first read */
    for (uint32_t i = 0; i < cn->ndevs; i++) {
        struct fb_device *d = cn->devs[i];
        if (((struct ads_dev *)d->drv_dev)->o.mode == ADS_MODE_POLL) continue;
        for (uint32_t k = 0; k < d->ngroups; k++) {
            if (!d->groups[k].plan) continue;
            rc = add_notes(d, c, d->groups[k].plan);
            if (rc) {
                fail_text(c, rc, err, "AddDeviceNotification");
                conn_free(c);
                cn->ctx = NULL;
                return rc;
            }
        }
    }
    fb_debug(cn->devs[0]->name, NULL, "connected to %s", c->where);
    return 0;
}

static int del_fn(void *ctx, uint32_t i, uint32_t err, const uint8_t *d, size_t n)
{
    (void)ctx, (void)i, (void)err, (void)d, (void)n;
    return 0;
}

/* single release (Write 0xF006, data = the handle): vals[i] */
static size_t release_req(void *ctx, uint32_t i, uint8_t *b, size_t cap, const struct ads_hdr *h)
{
    const uint8_t *const *vals = ctx;
    return ads_build_write(b, cap, h, ADS_IG_RELEASE_HANDLE, 0, vals[i], 4);
}

/* Say goodbye: delete notifications, release handles (best effort, short). */
static void goodbye(struct fb_conn *cn, struct ads_conn *c)
{
    int64_t saved = c->timeout_ns;
    if (c->timeout_ns > 500000000) c->timeout_ns = 500000000;
    uint32_t nh = 0, nd = 0;
    for (uint32_t i = 0; i < cn->ndevs; i++) {
        struct fb_device *d = cn->devs[i];
        for (uint32_t k = 0; k < d->ntags; k++) {
            struct ads_tag *t = d->gw->tags[d->first_tag + k].addr;
            if (!t) continue;
            if (t->h_epoch == c->epoch) nh++;
            if (t->n_epoch == c->epoch) nd++;
        }
    }
    size_t len = 0;
    int rc = grow(&c->tx, &c->tx_cap, (size_t)nd * (ADS_HDR + 4) + 64);
    uint32_t inv = next_invoke(c, nd ? nd : 1);
    uint32_t j = 0;
    for (uint32_t i = 0; i < cn->ndevs && !rc; i++) {
        struct fb_device *d = cn->devs[i];
        for (uint32_t k = 0; k < d->ntags; k++) {
            struct ads_tag *t = d->gw->tags[d->first_tag + k].addr;
            if (t && t->n_epoch == c->epoch) {
                struct ads_hdr h = tmpl_for(c, inv + j++);
                len += ads_build_delnote(c->tx + len, c->tx_cap - len, &h, t->note);
                t->n_epoch = 0;
            }
        }
    }
    if (!rc && nd) rc = exchange(c, len, inv, nd, del_fn, NULL, c->timeout_ns);
    /* handles: sum writes of 0xF006 */
    const struct ads_opts *o = &((const struct ads_dev *)cn->devs[0]->drv_dev)->o;
    struct ads_sub *subs = calloc(nh ? nh : 1, sizeof *subs);
    uint32_t *hv = calloc(nh ? nh : 1, sizeof *hv);
    const uint8_t **vals = calloc(nh ? nh : 1, sizeof *vals);
    if (!subs || !hv || !vals) rc = FB_ENOMEM;
    j = 0;
    for (uint32_t i = 0; i < cn->ndevs && !rc; i++) {
        struct fb_device *d = cn->devs[i];
        for (uint32_t k = 0; k < d->ntags; k++) {
            struct ads_tag *t = d->gw->tags[d->first_tag + k].addr;
            if (t && t->h_epoch == c->epoch) {
                uint8_t *b = (uint8_t *)&hv[j];
                for (int q = 0; q < 4; q++) b[q] = (uint8_t)(t->handle >> (8 * q));
                subs[j] = (struct ads_sub){ADS_IG_RELEASE_HANDLE, 0, 4};
                vals[j] = b;
                j++;
                t->h_epoch = 0;
            }
        }
    }
    uint32_t f = 0;
    while (f < nh && !rc && !c->broken && sum_ok(c, SUM_WRITE)) {
        uint32_t m = nh - f < (uint32_t)o->max_sum ? nh - f : (uint32_t)o->max_sum;
        if (grow(&c->w, &c->w_cap, 16 * (size_t)m) || grow(&c->tx, &c->tx_cap, ADS_HDR + 16 + 16 * (size_t)m)) break;
        size_t w = ads_sum_write_req(c->w, c->w_cap, subs + f, m, vals + f);
        uint32_t iv = next_invoke(c, 1);
        struct ads_hdr h = tmpl_for(c, iv);
        size_t fl = ads_build_rw(c->tx, c->tx_cap, &h, ADS_IG_SUM_WRITE, m, 4 * m, c->w, (uint32_t)w);
        struct one one;
        struct fb_err e = {0};
        int r = fl ? transact(c, fl, iv, &one, "release handles", &e) : FB_EINVAL;
        if (r == FB_EEXCEPTION && ADS_UNSUPPORTED(c->last_ads_err) && c->cap[SUM_WRITE] != CAP_YES) {
            sum_refused(c, SUM_WRITE, c->last_ads_err); /* the rest one by one, below */
            break;
        }
        if (r < 0) {
            f = nh; /* best effort: give up */
            break;
        }
        sum_works(c, SUM_WRITE);
        f += m;
    }
    if (f < nh && !rc && !c->broken) singles(c, nh - f, ADS_HDR + 12 + 4, release_req, del_fn, (void *)(vals + f));
    free(subs);
    free(hv);
    free(vals);
    c->timeout_ns = saved;
}

static void ads_close(struct fb_conn *cn)
{
    struct ads_conn *c = cn->ctx;
    if (!c) return;
    if (!c->broken && c->fd >= 0) goodbye(cn, c);
    conn_free(c);
    cn->ctx = NULL;
}

/* ------------------------------------------------------------------ browse */
int fb_ads_browse(const char *url, struct fb_browse *list, FILE *out, struct fb_err *err)
{
    struct fb_url u;
    int rc = fb_url_parse(url, &u, err);
    if (rc) return FB_EINVAL;
    struct ads_opts o;
    rc = ads_opts_parse(&u, 2000000000LL, &o, err);
    fb_url_free(&u);
    if (rc) return FB_EINVAL;
    struct ads_conn *c = NULL;
    rc = conn_new(&o, &c, err);
    if (rc) return rc;
    uint8_t *sym = NULL, *dt = NULL;
    size_t sl = 0, dl = 0;
    rc = upload(c, &sym, &sl, &dt, &dl, err);
    if (rc == FB_EEXCEPTION) /* TwinCAT 2 without it, BC/BX controllers, simulators */
        fb_err_set(err, rc,
                   "%s has no symbol upload (ADS error 0x%X, %s): nothing to list. Names still read and write "
                   "(types asked per name, else give them: MAIN.x:DINT), raw addresses too (%%MW10); docs/ads.md §4",
                   c->where, c->last_ads_err, ads_err_text(c->last_ads_err));
    conn_free(c);
    if (rc) {
        free(sym);
        free(dt);
        return rc;
    }
    size_t off = 0;
    struct ads_sym s;
    uint32_t count = 0;
    if (out) fprintf(out, "%-40s %-24s %-8s %s\n", "SYMBOL", "TYPE", "AS", "SIZE");
    while ((rc = ads_sym_next(sym, sl, &off, &s)) == 1) {
        struct ads_tinfo ti;
        struct fb_err e = {0};
        const char *as = "-";
        int fbt = FB_T_NONE;
        if (ads_resolve(sym, sl, dt, dl, s.name, -1, NULL, 0, &ti, &e) == 0) {
            as = fb_type_name((enum fb_type)ti.fbtype);
            fbt = ti.fbtype;
        } else if (!strncasecmp(s.type, "ARRAY", 5))
            as = "array";
        else
            as = "struct";
        if (out) fprintf(out, "%-40s %-24s %-8s %u\n", s.name, s.type, as, s.size);
        /* read-only in the tag config: writing to a PLC is a decision to make per tag */
        if (list && fb_browse_add(list, s.name, s.name, fbt, FB_ACC_READ, s.type) < 0) {
            rc = fb_err_set(err, FB_ENOMEM, "out of memory");
            break;
        }
        count++;
    }
    free(sym);
    free(dt);
    if (rc == FB_ENOMEM) return rc;
    if (rc < 0) return fb_err_set(err, FB_EPROTO, "malformed symbol upload after %u symbols", count);
    if (out)
        fprintf(out,
                "%u symbols; read them by name (MAIN.fTemperature), elements of arrays and structs as "
                "MAIN.aValues[3] / MAIN.stRecipe.fSpeed\n",
                count);
    return 0;
}

/* --------------------------------------------------------------- add-route */
/* The UDP exchange of `fieldbridge ads add-route` (src/cli/ads_route.c):
 * one AddRoute request, repeated every second until an answer or the
 * deadline. */
int fb_ads_add_route(struct fb_ads_route *r, char *plc_netid, size_t len, struct fb_err *err)
{
    struct ads_netid nid;
    if (!r->host || !r->net_id || !r->user || !r->password)
        return fb_err_set(err, FB_EINVAL, "PLC host, our NetId, user and password are required");
    if (ads_netid_parse(r->net_id, &nid))
        return fb_err_set(err, FB_EINVAL, "bad NetId '%s' (six numbers, e.g. 192.168.0.5.1.1)", r->net_id);
    int port = r->port ? r->port : ADS_UDP_PORT;
    if (port < 1 || port > 65535) return fb_err_set(err, FB_EINVAL, "bad port %d", port);
    int64_t tmo = r->timeout_ns > 0 ? r->timeout_ns : 3000000000LL;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_DGRAM}, *res = NULL;
    int g = getaddrinfo(r->host, portstr, &hints, &res);
    if (g) return fb_err_set(err, FB_EIO, "cannot resolve %s: %s", r->host, gai_strerror(g));
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        fb_err_set(err, FB_EIO, "%s", strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        return FB_EIO;
    }
    freeaddrinfo(res);
    char ourip[64] = "";
    const char *addr = r->address;
    if (!addr) { /* the address the PLC sees us at */
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        if (getsockname(fd, (struct sockaddr *)&sa, &sl) == 0) inet_ntop(AF_INET, &sa.sin_addr, ourip, sizeof ourip);
        addr = ourip;
    }
    snprintf(r->address_used, sizeof r->address_used, "%s", addr);
    const char *name = r->name ? r->name : addr;
    uint8_t pkt[1200];
    uint32_t invoke = (uint32_t)fb_mono_ns() | 1;
    size_t n = ads_udp_add_route(pkt, sizeof pkt, invoke, &nid, name, &nid, r->user, r->password, addr);
    if (!n) {
        close(fd);
        return fb_err_set(err, FB_EINVAL, "arguments too long");
    }
    int64_t deadline = fb_mono_ns() + tmo;
    int64_t resend = 0;
    while (fb_mono_ns() < deadline) {
        if (fb_mono_ns() >= resend) { /* UDP: repeat every second */
            if (send(fd, pkt, n, 0) < 0 && errno != ECONNREFUSED) break;
            resend = fb_mono_ns() + 1000000000LL;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int64_t left = (resend < deadline ? resend : deadline) - fb_mono_ns();
        int rv = poll(&pfd, 1, left > 0 ? (int)(left / 1000000) + 1 : 0);
        if (rv <= 0) continue;
        uint8_t rb[2048];
        ssize_t got = recv(fd, rb, sizeof rb, 0);
        if (got < 0) continue;
        struct ads_udp_reply rep;
        if (ads_udp_parse(rb, (size_t)got, &rep) || rep.invoke != invoke ||
            rep.service != (ADS_UDP_RESPONSE | ADS_UDP_ADD_ROUTE))
            continue;
        close(fd);
        ads_netid_fmt(&rep.netid, plc_netid, len);
        if (!rep.have_status || rep.status == 0) return 0;
        return fb_err_set(err, FB_EACCES, "%s (PLC %s) refused the route: 0x%X %s", r->host, plc_netid, rep.status,
                          rep.status == 0x704 || rep.status == 0x723 ? "wrong user name or password"
                                                                     : ads_err_text(rep.status));
    }
    close(fd);
    return fb_err_set(err, FB_ETIMEDOUT, "no answer from %s:%d within %.1fs (is it a TwinCAT system? is UDP %d open?)",
                      r->host, port, tmo / 1e9, port);
}

static const char *const ads_schemes[] = {"ads", NULL};

/* A config reload keeps the connection (model.h): the handles and
 * notifications (in the tags' addresses, which the notification table and
 * the plans point at) and the symbol uploads stay with the running model;
 * the addresses carry their tag's id, which may have moved. */
static void ads_adopt(struct fb_conn *c, struct fb_conn *old)
{
    fb_adopt_swap(c, old, FB_ADOPT_DEV | FB_ADOPT_ADDR | FB_ADOPT_PLAN);
    for (uint32_t k = 0; k < c->ndevs; k++) {
        struct fb_device *d = c->devs[k];
        for (uint32_t i = 0; i < d->ntags; i++) {
            struct fb_tag *t = &d->gw->tags[d->first_tag + i];
            if (t->addr) ((struct ads_tag *)t->addr)->id = t->id;
        }
    }
    struct ads_conn *ac = c->ctx;
    if (ac) ac->fc = c;
}

const struct fb_driver fb_driver_ads = {
    .name = "ads",
    .schemes = ads_schemes,
    .device_init = ads_device_init,
    .device_free = ads_device_free,
    .parse_address = ads_parse_address,
    .free_address = ads_free_address,
    .plan = ads_plan_cb,
    .plan_free = ads_plan_free_cb,
    .open = ads_open,
    .read = ads_read,
    .write = ads_write,
    .close = ads_close,
    .adopt = ads_adopt,
    .browse = fb_ads_browse,
};
