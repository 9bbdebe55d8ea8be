/* modbus.c — the Modbus TCP/RTU south driver: glue between the core and
 * libmodbus 3.1.6.  Everything that can be done without I/O (options,
 * addresses, codec, planning) lives in modbus_proto.c; this file only runs
 * plans and writes through a modbus_t and turns answers into samples.
 *
 * Connections.  A connection (TCP endpoint or serial line) is one modbus_t
 * shared by every device (unit id) behind it; the core runs it on one thread,
 * so one request is in flight at a time.  Before each request the unit id and
 * the response timeout of the requesting device are set, and the device's
 * delay since the end of the previous request on the line is waited out.
 *
 * Failures.  A Modbus exception marks the tags of that request Bad with the
 * mapped quality (exception 02 on a merged block first splits the block, for
 * good, and retries).  A timeout marks them BadTimeout.  A broken link
 * (reset, EPIPE, closed) returns FB_EIO.  After a timeout or a malformed
 * answer the receive buffer is flushed, so a late answer cannot be taken for
 * the next request's.  Every failed request, and every value that cannot be
 * decoded, counts once in the device's error counter.
 *
 * Waveforms.  A waveform tag (`vibration:`, docs/vibration.md) is an array
 * of vibration.block values of its type starting at its address — a
 * sensor's sample buffer.  It is not part of the coalesced plan: after the
 * plan's requests it is read in requests of up to max_regs registers, each
 * value decoded with the tag's type and order into one block (core/block.h),
 * which travels as one sample.  A failed request makes the waveform Bad for
 * that cycle, like a failed block of ordinary tags.
 *
 * Silent units.  Several units share one link (a TCP→RTU gateway, an RS-485
 * line), and one dead unit must not disturb the others, so answers are
 * counted per unit (per device).  A unit with MB_SILENT_AFTER requests in a
 * row unanswered (timeouts, or a gateway's exception 0A/0B) is "silent": its
 * device goes offline (NE107 Failure) with a reason, its tags turn
 * BadCommunicationError without asking it, and it is asked again only by one
 * probe request at growing intervals (1 s … 30 s), so its timeouts no longer
 * hold up the line for the healthy units.  Its first answer brings it back
 * online.  The link itself is suspect (half-open TCP, unplugged converter)
 * only when nobody answers on it: the unit asked last timed out three times
 * with no answer from any unit in between, and every other unit is known
 * silent or timed out too since then.  Then read() returns FB_ETIMEDOUT and
 * the core reconnects.  With one unit on the link that is the old rule —
 * three timeouts in a row reconnect.
 */
#include <errno.h>
#include <fcntl.h>
#include <modbus.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/block.h"
#include "core/log.h"
#include "core/model.h"
#include "core/net.h"
#include "core/plugin.h"
#include "south/modbus/modbus_proto.h"

#define MB_SILENT_AFTER 3             /* requests in a row without an answer */
#define MB_PROBE_MIN_NS 1000000000LL  /* a silent unit is asked again after 1 s … */
#define MB_PROBE_MAX_NS 30000000000LL /* … doubling up to 30 s */

/* The parsed addresses of a device's tags, 16 bytes each, in chunks owned by
 * the device (a malloc per tag cost as much again in allocator overhead). */
#define MB_SLAB_N 256
struct mb_slab {
    struct mb_slab *next;
    uint32_t used;
    struct mb_addr a[MB_SLAB_N];
};

struct mb_dev {
    struct mb_opts o;
    struct mb_slab *slab; /* tags' parsed addresses (tag->addr points here) */
    /* this unit's answers (connection thread only) */
    int no_answer;     /* requests in a row without an answer: timeouts, exceptions 0A/0B */
    int link_timeouts; /* timeouts since anyone last answered on the link (valid while
                         * link_seq equals the link's answer count) */
    uint64_t link_seq;
    bool silent;        /* declared not answering: offline, asked only by probes */
    int64_t next_probe; /* monotonic */
    struct fb_backoff probe;
};

struct mb_conn {
    modbus_t *mb;
    int fd;       /* TCP: the socket, on which reads are framed here (tcp_read); RTU: -1 */
    uint16_t tid; /* transaction id of our last read request */
    uint64_t answers; /* answers from any unit on the link (a gateway's 0A/0B included) */
    int64_t last_end; /* monotonic end of the previous request */
    int cur_unit;
    int64_t cur_timeout;
    char where[300]; /* "127.0.0.1:502" or "/dev/ttyUSB0", for messages */
};

/* ------------------------------------------------------------------ errors */
enum outcome { OUT_EXC, OUT_TIMEOUT, OUT_MALFORMED, OUT_BROKEN };

static enum outcome classify(int e, int *exc)
{
    *exc = 0;
    if (e > MODBUS_ENOBASE && e <= EMBXGTAR) {
        *exc = e - MODBUS_ENOBASE;
        return OUT_EXC;
    }
    if (e == ETIMEDOUT) return OUT_TIMEOUT;
    if (e >= EMBBADCRC && e <= EMBBADSLAVE) return OUT_MALFORMED;
    switch (e) {
        case ECONNRESET:
        case EPIPE:
        case EBADF:
        case ENOTCONN:
        case ECONNREFUSED:
        case ECONNABORTED:
        case ENETUNREACH:
        case EHOSTUNREACH:
        case EIO:
        case ENXIO:
        case ENODEV: return OUT_BROKEN;
        default: return OUT_MALFORMED;
    }
}

static uint32_t outcome_quality(enum outcome o, int exc)
{
    switch (o) {
        case OUT_EXC: return mb_exception_quality(exc);
        case OUT_TIMEOUT: return FB_Q_BAD_TIMEOUT;
        case OUT_MALFORMED: return FB_Q_BAD_COMM;
        default: return FB_Q_BAD_COMM;
    }
}

static void outcome_text(enum outcome o, int exc, int e, char *buf, size_t len)
{
    if (o == OUT_EXC)
        snprintf(buf, len, "Modbus exception %02X (%s)", exc, mb_exception_text(exc));
    else if (o == OUT_TIMEOUT)
        snprintf(buf, len, "no answer (timeout)");
    else
        snprintf(buf, len, "%s", modbus_strerror(e));
}

/* ------------------------------------------------------------------ device */
static int mb_device_init(struct fb_device *dev, char **conn_key, struct fb_err *err)
{
    struct mb_dev *md = calloc(1, sizeof *md);
    if (!md) return fb_err_set(err, FB_ENOMEM, "out of memory");
    int rc = mb_opts_parse(&dev->url, dev->timeout_ns, dev->delay_ns, &md->o, err);
    if (rc) {
        free(md);
        return rc;
    }
    *conn_key = mb_opts_conn_key(&md->o);
    if (!*conn_key) {
        free(md);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    dev->timeout_ns = md->o.timeout_ns;
    dev->delay_ns = md->o.delay_ns;
    fb_backoff_init(&md->probe, MB_PROBE_MIN_NS, MB_PROBE_MAX_NS);
    dev->drv_dev = md;
    return 0;
}

static void mb_device_free(struct fb_device *dev)
{
    struct mb_dev *md = dev->drv_dev;
    while (md && md->slab) {
        struct mb_slab *s = md->slab;
        md->slab = s->next;
        free(s);
    }
    free(md);
    dev->drv_dev = NULL;
}

_Static_assert(sizeof(struct mb_addr) == 12 && sizeof(struct mb_item) == 4,
               "a Modbus tag's address and plan item: see BENCHMARKS.md, memory per tag");

static struct mb_addr *addr_alloc(struct mb_dev *md)
{
    if (!md->slab || md->slab->used == MB_SLAB_N) {
        struct mb_slab *s = malloc(sizeof *s);
        if (!s) return NULL;
        s->used = 0;
        s->next = md->slab;
        md->slab = s;
    }
    return &md->slab->a[md->slab->used++];
}

static int mb_parse_address(struct fb_device *dev, struct fb_tag *tag, struct fb_err *err)
{
    struct mb_dev *md = dev->drv_dev;
    char ab[FB_ATEXT_MAX];
    struct mb_addr_in in = {
        .text = fb_tag_addr_text(dev->gw, tag, ab),
        .type = tag->type,
        .str_len = tag->str_len,
        .order = fb_tag_order(tag),
        .index = tag->index,
        .base = md ? md->o.base : 0,
    };
    struct mb_addr parsed;
    int rc = mb_addr_parse(&in, &parsed, err);
    if (!rc && (tag->access & FB_ACC_WRITE) && (parsed.table == MB_IR || parsed.table == MB_DI))
        rc = fb_err_set(err, FB_EINVAL, "%s are read-only: a tag on them takes access: r",
                        parsed.table == MB_IR ? "input registers" : "discrete inputs");
    const struct fb_wave *wave = fb_tag_wave(dev->gw, tag);
    if (!rc && wave) {
        uint64_t end = (uint64_t)parsed.addr + (uint64_t)wave->n * parsed.count;
        if (parsed.table != MB_HR && parsed.table != MB_IR)
            rc = fb_err_set(err, FB_EINVAL, "a waveform is read from holding or input registers (hr:, ir:), not %s",
                            parsed.table == MB_CO ? "coils" : "discrete inputs");
        else if (parsed.type == FB_T_STRING || parsed.type == FB_T_BOOL || parsed.has_bit || parsed.bcd)
            rc = fb_err_set(err, FB_EINVAL, "a waveform's values are numbers (int16, uint16, int32, float32, …)");
        else if (end > 65536)
            rc = fb_err_set(err, FB_EINVAL,
                            "a waveform of %u values of %u register%s at %s:%u ends at register %llu: the block does "
                            "not fit the 65536 registers",
                            wave->n, parsed.count, parsed.count == 1 ? "" : "s", mb_table_name(parsed.table),
                            parsed.addr, (unsigned long long)end - 1);
    }
    if (rc) return rc;
    struct mb_addr *a = tag->addr ? tag->addr : md ? addr_alloc(md) : NULL; /* parsed again: in place */
    if (!a) return fb_err_set(err, FB_ENOMEM, "out of memory");
    *a = parsed;
    a->tag = tag->id;
    tag->addr = a;
    tag->type = a->type;
    if (a->type == FB_T_STRING) tag->str_len = mb_str_len(a);
    return 0;
}

static void mb_free_address(struct fb_tag *tag) { tag->addr = NULL; /* the device's slab owns it (mb_device_free) */ }

/* The parsed address as text: the config's text when it was written so (most
 * are), which is then not kept (fb_tag_addr_text). */
static void mb_addr_text(const struct fb_device *dev, const struct fb_tag *tag, char *buf, size_t len)
{
    (void)dev;
    mb_addr_fmt(tag->addr, buf, len);
}

static int mb_plan(struct fb_device *dev, struct fb_group *g, struct fb_err *err)
{
    const struct mb_dev *md = dev->drv_dev;
    struct mb_item *items = calloc(g->ntags ? g->ntags : 1, sizeof *items);
    if (!items) return fb_err_set(err, FB_ENOMEM, "out of memory");
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->ntags; i++) {
        const struct fb_tag *t = &dev->gw->tags[fb_group_tag(g, i)];
        if (!t->addr) {
            free(items);
            return fb_err_set(err, FB_EINVAL, "tag %s has no parsed address", t->name);
        }
        if (fb_tag_is_wave(t)) continue; /* read on its own after the plan (read_wave) */
        items[n].ix = fb_group_tag(g, i) - dev->first_tag;
        n++;
    }
    struct mb_limits lim = {md->o.max_gap, md->o.max_regs, md->o.max_bits};
    struct mb_plan *p;
    int rc = mb_plan_build(&dev->gw->tags[dev->first_tag], items, n, &lim, &p, err);
    free(items);
    if (rc) return rc;
    g->plan = p;
    return 0;
}

static void mb_plan_free_cb(struct fb_group *g)
{
    mb_plan_free(g->plan);
    g->plan = NULL;
}

/* ------------------------------------------------------------- connection */
static void mb_close(struct fb_conn *c)
{
    struct mb_conn *mc = c->ctx;
    if (!mc) return;
    if (mc->mb) {
        modbus_close(mc->mb);
        modbus_free(mc->mb);
    }
    free(mc);
    c->ctx = NULL;
}

static void set_timeout(struct mb_conn *mc, int64_t ns)
{
    if (ns <= 0) ns = 1000000000;
    if (ns < 1000) ns = 1000; /* libmodbus refuses 0 s 0 us */
    modbus_set_response_timeout(mc->mb, (uint32_t)(ns / 1000000000), (uint32_t)(ns % 1000000000 / 1000));
    if (mc->fd >= 0) { /* tcp_read's waits: a blocking socket, bounded by the device's timeout */
        struct timeval tv = {(time_t)(ns / 1000000000), (suseconds_t)(ns % 1000000000 / 1000)};
        setsockopt(mc->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(mc->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
}

static int mb_open(struct fb_conn *c, struct fb_err *err)
{
    mb_close(c);
    if (!c->ndevs || !c->devs[0]->drv_dev)
        return fb_err_set(err, FB_EINVAL, "connection %s has no Modbus device", c->key);
    const struct mb_opts *o = &((const struct mb_dev *)c->devs[0]->drv_dev)->o;
    for (uint32_t i = 1; i < c->ndevs; i++) {
        const struct mb_opts *x = &((const struct mb_dev *)c->devs[i]->drv_dev)->o;
        if (o->transport == MB_RTU && (x->baud != o->baud || x->parity != o->parity || x->data_bits != o->data_bits ||
                                       x->stop_bits != o->stop_bits))
            return fb_err_set(err, FB_EINVAL, "devices %s and %s share %s with different serial settings",
                              c->devs[0]->name, c->devs[i]->name, o->device);
    }
    struct mb_conn *mc = calloc(1, sizeof *mc);
    if (!mc) return fb_err_set(err, FB_ENOMEM, "out of memory");
    if (o->transport == MB_TCP) {
        char port[16];
        snprintf(port, sizeof port, "%d", o->port);
        snprintf(mc->where, sizeof mc->where, "%s:%d", o->host, o->port);
        mc->mb = modbus_new_tcp_pi(o->host, port);
    } else {
        snprintf(mc->where, sizeof mc->where, "%s", o->device);
        mc->mb = modbus_new_rtu(o->device, o->baud, o->parity, o->data_bits, o->stop_bits);
    }
    if (!mc->mb) {
        int e = errno;
        fb_err_set(err, FB_EINVAL, "cannot set up Modbus for %s: %s", mc->where, modbus_strerror(e));
        free(mc);
        return FB_EINVAL;
    }
    mc->cur_timeout = o->timeout_ns;
    mc->cur_unit = -1;
    mc->fd = -1;
    /* libmodbus waits for answers with select(), which cannot take a
     * descriptor of FD_SETSIZE (1024) or more: the process aborted ("bit out
     * of range") once a gateway had about a thousand connections.  So the TCP
     * connection is made here (poll(), no such limit) and handed over, and a
     * descriptor too high for libmodbus is refused: that device goes offline
     * and is retried, the rest keeps working. */
    int fd = -1;
    if (o->transport == MB_TCP) {
        int rc = fb_tcp_connect(o->host, o->port, o->timeout_ns, mc->where, &fd, err);
        if (rc < 0) {
            modbus_free(mc->mb);
            free(mc);
            return rc;
        }
        if (fd < FD_SETSIZE) modbus_set_socket(mc->mb, fd);
    } else {
        if (modbus_connect(mc->mb) == -1) {
            int e = errno;
            fb_err_set(err, FB_EIO, "connect to %s failed: %s", mc->where, modbus_strerror(e));
            modbus_free(mc->mb);
            free(mc);
            return FB_EIO;
        }
        fd = modbus_get_socket(mc->mb);
    }
    if (fd >= FD_SETSIZE) {
        fb_err_set(err, FB_EIO,
                   "connect to %s: its descriptor %d is beyond what libmodbus can wait on (%d, select); "
                   "this gateway has too many connections open — share connections (devices behind one "
                   "TCP gateway as unit ids) or spread the devices over gateways",
                   mc->where, fd, FD_SETSIZE - 1);
        if (o->transport == MB_TCP)
            close(fd);
        else
            modbus_close(mc->mb);
        modbus_free(mc->mb);
        free(mc);
        return FB_EIO;
    }
    if (o->transport == MB_TCP) {
        /* blocking, so that tcp_read waits in recv() itself (SO_RCVTIMEO) */
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        mc->fd = fd;
    }
    set_timeout(mc, o->timeout_ns);
    c->ctx = mc;
    /* a new link: every unit gets a fresh chance (the core reports them online) */
    for (uint32_t i = 0; i < c->ndevs; i++) {
        struct mb_dev *md = c->devs[i]->drv_dev;
        md->no_answer = md->link_timeouts = 0;
        md->link_seq = 0;
        md->silent = false;
        fb_backoff_reset(&md->probe);
    }
    return 0;
}

/* ------------------------------------------------------------------ units */
/* The unit answered (a value or an exception other than 0A/0B). */
static void unit_answered(struct fb_device *dev, struct mb_dev *md, struct mb_conn *mc)
{
    mc->answers++; /* the link works */
    md->no_answer = 0;
    if (!md->silent) return;
    md->silent = false;
    fb_backoff_reset(&md->probe);
    fb_info(dev->name, NULL, "unit %d answers again", md->o.unit);
    fb_device_set_state(dev, FB_DEV_ONLINE, NULL);
}

/* A request of md timed out. */
static void note_timeout(struct mb_dev *md, const struct mb_conn *mc)
{
    if (md->link_seq != mc->answers) { /* someone answered since this unit's last timeout */
        md->link_seq = mc->answers;
        md->link_timeouts = 0;
    }
    md->link_timeouts++;
    md->no_answer++;
}

/* Is the link itself suspect?  The unit asked last (cur) timed out three
 * times with no answer from anyone on the link in between, and every other
 * unit (with tags) either is already known silent or timed out too since
 * then — a unit not asked since the last answer keeps the link (it may well
 * answer), which bounds the wait by one poll period of the slowest unit. */
static bool link_silent(const struct fb_conn *c, const struct mb_dev *cur, const struct mb_conn *mc)
{
    if (cur->link_seq != mc->answers || cur->link_timeouts < MB_SILENT_AFTER) return false;
    for (uint32_t i = 0; i < c->ndevs; i++) {
        const struct mb_dev *md = c->devs[i]->drv_dev;
        if (md == cur || !c->devs[i]->ntags || md->silent) continue;
        if (md->link_seq != mc->answers || md->link_timeouts < 1) return false;
    }
    return true;
}

/* A request of dev went unanswered: declare the unit silent, or schedule
 * the next probe of one that already is. */
static void unit_unanswered(struct fb_device *dev, struct mb_dev *md, const char *why)
{
    int64_t now = fb_mono_ns();
    if (md->silent) {
        md->next_probe = now + fb_backoff_next(&md->probe);
        return;
    }
    if (md->no_answer < MB_SILENT_AFTER) return;
    md->silent = true;
    md->next_probe = now + fb_backoff_next(&md->probe);
    char reason[96];
    snprintf(reason, sizeof reason, "unit %d does not answer (%s)", md->o.unit, why);
    fb_warn(dev->name, NULL,
            "unit %d: %d requests in a row without an answer (%s): reported offline, "
            "asked again in %.1fs; the link stays up for the other units",
            md->o.unit, md->no_answer, why, (md->next_probe - now) / 1e9);
    fb_device_set_state(dev, FB_DEV_OFFLINE, reason);
}

/* Unit id, timeout and inter-request delay of dev before a request. */
static void prepare(struct mb_conn *mc, const struct mb_dev *md)
{
    if (mc->cur_unit != md->o.unit) {
        modbus_set_slave(mc->mb, md->o.unit);
        mc->cur_unit = md->o.unit;
    }
    if (mc->cur_timeout != md->o.timeout_ns) {
        set_timeout(mc, md->o.timeout_ns);
        mc->cur_timeout = md->o.timeout_ns;
    }
    if (md->o.delay_ns > 0 && mc->last_end) {
        int64_t wait = mc->last_end + md->o.delay_ns - fb_mono_ns();
        if (wait > 0) {
            struct timespec ts = {(time_t)(wait / 1000000000), (long)(wait % 1000000000)};
            while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
            }
        }
    }
}

/* A read over Modbus TCP, framed here rather than by libmodbus, whose
 * select() + recv() for an answer's header and again for its body made five
 * of the seven system calls per request (BENCHMARKS.md, T6): one send() of
 * the request, then usually one blocking recv() takes the whole answer (the
 * socket is blocking with SO_RCVTIMEO/SO_SNDTIMEO as the device's timeout).
 * A partly received answer is completed by poll() + recv() within the same
 * time-out.  An answer to an earlier request that timed out (its transaction
 * id) is skipped, not taken for this one.  Returns count, or -1 with errno as
 * libmodbus sets it, so the caller's classification is the same for both. */
static int tcp_read(struct mb_conn *mc, uint8_t unit, int table, uint16_t start, uint16_t count, uint16_t *regs,
                    uint8_t *bits)
{
    uint8_t req[MB_TCP_REQ_LEN], buf[2 * MB_TCP_ADU_MAX];
    mb_tcp_read_request(req, ++mc->tid, unit, table, start, count);
    ssize_t w;
    do w = send(mc->fd, req, sizeof req, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) errno = ETIMEDOUT; /* the device reads nothing */
    if (w != (ssize_t)sizeof req) {
        if (w >= 0) errno = EIO; /* 12 bytes half sent: the link is unusable */
        return -1;
    }
    int64_t deadline = fb_mono_ns() + mc->cur_timeout;
    size_t have = 0;
    bool first = true;
    for (;;) {
        int exc;
        enum mb_rsp v = mb_tcp_take(req, buf, &have, regs, bits, &exc);
        if (v == MB_RSP_OK) return count; /* anything after it answers nothing: dropped */
        if (v != MB_RSP_MORE) {
            if (v == MB_RSP_EXC)
                errno = exc >= 1 && exc <= EMBXGTAR - MODBUS_ENOBASE ? MODBUS_ENOBASE + exc : EMBBADEXC;
            else
                errno = EMBBADDATA; /* the caller flushes */
            return -1;
        }
        ssize_t r;
        if (first) {
            first = false;
            r = recv(mc->fd, buf, sizeof buf, 0); /* blocks up to the time-out (SO_RCVTIMEO) */
        } else { /* the rest of a partial answer, or more after a late one, within the same time-out */
            int64_t left = deadline - fb_mono_ns();
            struct pollfd pf = {.fd = mc->fd, .events = POLLIN};
            int pr = left > 0 ? poll(&pf, 1, (int)((left + 999999) / 1000000)) : 0;
            if (pr < 0 && errno == EINTR) continue;
            if (pr <= 0) {
                if (pr == 0) errno = ETIMEDOUT;
                return -1;
            }
            r = recv(mc->fd, buf + have, sizeof buf - have, MSG_DONTWAIT);
        }
        if (r > 0) {
            have += (size_t)r;
            continue;
        }
        if (r == 0) {
            errno = ECONNRESET; /* the device closed the connection */
            return -1;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (fb_mono_ns() < deadline) continue;
            errno = ETIMEDOUT;
        }
        return -1;
    }
}

/* count registers (HR, IR) or bits (CO, DI) from start: count, or -1 and errno */
static int read_table(struct mb_conn *mc, const struct mb_dev *md, int table, int start, int count, uint16_t *regs,
                      uint8_t *bits)
{
    if (mc->fd >= 0) return tcp_read(mc, (uint8_t)md->o.unit, table, (uint16_t)start, (uint16_t)count, regs, bits);
    switch (table) {
        case MB_HR: return modbus_read_registers(mc->mb, start, count, regs);
        case MB_IR: return modbus_read_input_registers(mc->mb, start, count, regs);
        case MB_CO: return modbus_read_bits(mc->mb, start, count, bits);
        default: return modbus_read_input_bits(mc->mb, start, count, bits);
    }
}

static void add_bad(struct fb_batch *out, const struct fb_tag *t, uint32_t q, int64_t ts)
{
    struct fb_value v;
    memset(&v, 0, sizeof v);
    v.type = t->type;
    if (v.type == FB_T_STRING) v.s.p = "";
    fb_batch_add(out, t->id, q, ts, &v);
}

static void fill_block(struct fb_device *dev, const struct mb_plan *p, const struct mb_block *b, uint32_t q,
                       struct fb_batch *out, int64_t ts)
{
    const struct fb_tag *tags = &dev->gw->tags[dev->first_tag];
    for (uint32_t k = 0; k < b->n; k++) add_bad(out, &tags[p->items[b->first + k].ix], q, ts);
}

static void log_block(struct fb_device *dev, struct mb_plan *p, struct mb_block *b, uint32_t q, const char *why)
{
    const struct fb_tag *t = &dev->gw->tags[dev->first_tag + p->items[b->first].ix];
    bool changed = b->last_q != q;
    b->last_q = q;
    if (!changed && !fb_ratelimit_ok(&b->rl, fb_mono_ns())) return;
    if (changed) b->rl.last_ns = fb_mono_ns();
    char qn[16];
    uint64_t sup = b->rl.suppressed;
    b->rl.suppressed = 0;
    fb_warn(dev->name, t->name, "read %s:%u (%u %s, %u tag%s) failed: %s → %s%s", mb_table_name(b->table), b->start,
            b->count, b->table >= MB_CO ? "bits" : "registers", b->n, b->n == 1 ? "" : "s", why, fb_q_name(q, qn),
            sup ? " (repeated since the last message)" : "");
}

/* The group's waveform tags, all Bad with q. */
static void bad_waves(struct fb_device *dev, struct fb_group *g, uint32_t q, struct fb_batch *out, int64_t ts)
{
    for (uint32_t i = 0; i < g->ntags; i++) {
        const struct fb_tag *t = &dev->gw->tags[fb_group_tag(g, i)];
        if (fb_tag_is_wave(t)) fb_batch_add(out, t->id, q, ts, NULL);
    }
}

/* One waveform tag: its n values in requests of up to max_regs registers
 * (whole values each), decoded into a block.  Returns FB_EIO when the link
 * broke, else 0 (a failed request makes the waveform Bad this cycle). */
static int read_wave(struct fb_device *dev, struct mb_dev *md, struct mb_conn *mc, struct fb_tag *t,
                     struct fb_batch *out)
{
    const struct mb_addr *a = t->addr;
    struct fb_block *blk = fb_block_get(dev->gw, t);
    if (!blk) return 0; /* the analysis is behind: dropped (counted) */
    uint32_t wn = fb_tag_wave(dev->gw, t)->n;
    uint32_t n = wn <= blk->cap ? wn : blk->cap;
    int limit = md->o.max_regs < 1 || md->o.max_regs > MB_MAX_READ_REGS ? MB_MAX_READ_REGS : md->o.max_regs;
    uint32_t per = (uint32_t)limit / a->count; /* values per request */
    uint16_t regs[MB_MAX_READ_REGS];
    char sbuf[8];
    int64_t ts = fb_now_ns();
    blk->ts = ts;
    for (uint32_t done = 0; done < n;) {
        uint32_t k = n - done < per ? n - done : per;
        int cnt = (int)(k * a->count), start = (int)(a->addr + done * a->count);
        prepare(mc, md);
        int64_t t0 = fb_mono_ns();
        int rc = read_table(mc, md, a->table, start, cnt, regs, NULL);
        int e = errno;
        int64_t t1 = fb_mono_ns();
        mc->last_end = t1;
        atomic_fetch_add(&dev->m.requests, 1);
        if (rc != cnt) {
            atomic_fetch_add(&dev->m.errors, 1);
            int exc = 0;
            enum outcome o = rc < 0 ? classify(e, &exc) : OUT_MALFORMED;
            char why[128];
            outcome_text(o, exc, e, why, sizeof why);
            if (o == OUT_TIMEOUT) {
                atomic_fetch_add(&dev->m.timeouts, 1);
                modbus_flush(mc->mb);
                note_timeout(md, mc);
            } else if (o == OUT_MALFORMED) {
                modbus_flush(mc->mb);
            } else if (o == OUT_EXC) {
                unit_answered(dev, md, mc);
            }
            uint32_t q = outcome_quality(o, exc);
            char qn[16];
            fb_warn(dev->name, t->name, "waveform read %s:%d (%d registers) failed: %s → %s", mb_table_name(a->table),
                    start, cnt, why, fb_q_name(q, qn));
            fb_block_unref(blk);
            fb_batch_add(out, t->id, q, ts, NULL);
            return o == OUT_BROKEN ? FB_EIO : 0;
        }
        unit_answered(dev, md, mc);
        atomic_fetch_add(&dev->m.rtt_ns_sum, (uint64_t)(t1 - t0));
        atomic_store(&dev->m.rtt_ns_last, (uint64_t)(t1 - t0));
        atomic_fetch_add(&dev->m.rtt_count, 1);
        for (uint32_t i = 0; i < k; i++) {
            struct fb_value v;
            double d = 0;
            if (mb_decode(a, regs + i * a->count, NULL, &v, sbuf, sizeof sbuf) == FB_Q_GOOD) fb_value_to_double(&v, &d);
            blk->x[done + i] = (float)d;
        }
        done += k;
    }
    blk->n = n;
    atomic_store(&dev->m.last_success_ns, fb_now_ns());
    struct fb_value v = {.type = FB_T_BLOCK, .blk = blk};
    fb_batch_add(out, t->id, FB_Q_GOOD, ts, &v);
    fb_block_unref(blk);
    return 0;
}

static int mb_read(struct fb_device *dev, struct fb_group *g, struct fb_batch *out)
{
    struct mb_dev *md = dev->drv_dev;
    struct mb_plan *p = g->plan;
    const struct fb_tag *tags = &dev->gw->tags[dev->first_tag]; /* the plan's items index them */
    struct mb_conn *mc = dev->conn ? dev->conn->ctx : NULL;
    if (!p) return FB_EINVAL;
    if (!mc || !mc->mb) {
        int64_t ts = fb_now_ns();
        for (uint32_t bi = 0; bi < p->nblocks; bi++)
            fill_block(dev, p, &p->blocks[bi], FB_Q_BAD_NOT_CONNECTED, out, ts);
        bad_waves(dev, g, FB_Q_BAD_NOT_CONNECTED, out, ts);
        return FB_EIO;
    }
    if (md->silent && fb_mono_ns() < md->next_probe) {
        /* known not to answer: Bad without asking, the line stays free for the other units */
        int64_t ts = fb_now_ns();
        for (uint32_t bi = 0; bi < p->nblocks; bi++) fill_block(dev, p, &p->blocks[bi], FB_Q_BAD_COMM, out, ts);
        bad_waves(dev, g, FB_Q_BAD_COMM, out, ts);
        return 0;
    }
    int final = 0;     /* the link must be re-established */
    bool skip = false; /* the unit went (or stays) silent: the rest is not asked */
    uint32_t rest_q = 0;
    for (uint32_t bi = 0; bi < p->nblocks;) {
        struct mb_block *b = &p->blocks[bi];
        if (final || skip) {
            fill_block(dev, p, b, rest_q, out, fb_now_ns());
            bi++;
            continue;
        }
        prepare(mc, md);
        int64_t t0 = fb_mono_ns();
        int rc = read_table(mc, md, b->table, b->start, b->count, p->regs, p->bits);
        int e = errno;
        int64_t t1 = fb_mono_ns();
        int64_t ts = fb_now_ns();
        mc->last_end = t1;
        atomic_fetch_add(&dev->m.requests, 1);
        if (rc == b->count) {
            unit_answered(dev, md, mc);
            atomic_fetch_add(&dev->m.rtt_ns_sum, (uint64_t)(t1 - t0));
            atomic_store(&dev->m.rtt_ns_last, (uint64_t)(t1 - t0));
            atomic_fetch_add(&dev->m.rtt_count, 1);
            atomic_store(&dev->m.last_success_ns, ts);
            if (b->last_q && fb_q_bad(b->last_q))
                fb_info(dev->name, tags[p->items[b->first].ix].name, "read %s:%u recovered",
                        mb_table_name(b->table), b->start);
            b->last_q = FB_Q_GOOD;
            for (uint32_t k = 0; k < b->n; k++) {
                const struct mb_addr *a = mb_item_addr(tags, &p->items[b->first + k]);
                unsigned off = (unsigned)(a->addr - b->start);
                if (a->count == 1 && !a->has_bit && !a->bcd && (a->type == FB_T_INT16 || a->type == FB_T_UINT16) &&
                    b->table <= MB_IR && out->n < out->cap) {
                    /* one 16-bit register (most tags): straight into the batch */
                    uint16_t r = a->swap_bytes ? (uint16_t)(p->regs[off] << 8 | p->regs[off] >> 8) : p->regs[off];
                    struct fb_sample *s = &out->s[out->n++];
                    *s = (struct fb_sample){.tag = a->tag, .quality = FB_Q_GOOD, .ts_src = ts, .ts_gw = ts};
                    s->v.type = a->type;
                    if (a->type == FB_T_INT16)
                        s->v.i = (int16_t)r;
                    else
                        s->v.u = r;
                    continue;
                }
                struct fb_value v;
                bool bits = b->table == MB_CO || b->table == MB_DI;
                uint32_t q = mb_decode(a, bits ? NULL : p->regs + off, bits ? p->bits + off : NULL, &v, p->sbuf,
                                       sizeof p->sbuf);
                if (q != FB_Q_GOOD) {
                    atomic_fetch_add(&dev->m.errors, 1); /* an item the device gave us unusable */
                    struct fb_ratelimit *rl = &b->rl;
                    if (fb_ratelimit_ok(rl, t1))
                        fb_warn(dev->name, dev->gw->tags[a->tag].name, "cannot decode %s value (invalid BCD digit)",
                                fb_type_name((enum fb_type)a->type));
                    add_bad(out, &dev->gw->tags[a->tag], q, ts);
                } else {
                    fb_batch_add(out, a->tag, FB_Q_GOOD, ts, &v);
                }
            }
            bi++;
            continue;
        }
        atomic_fetch_add(&dev->m.errors, 1);
        int exc;
        enum outcome o = rc < 0 ? classify(e, &exc) : OUT_MALFORMED;
        if (rc >= 0) exc = 0;
        char why[128];
        outcome_text(o, exc, e, why, sizeof why);
        bool gateway_miss = o == OUT_EXC && (exc == 0x0A || exc == 0x0B);
        if (o == OUT_EXC) {
            atomic_fetch_add(&dev->m.rtt_ns_sum, (uint64_t)(t1 - t0));
            atomic_store(&dev->m.rtt_ns_last, (uint64_t)(t1 - t0));
            atomic_fetch_add(&dev->m.rtt_count, 1);
            if (gateway_miss) {
                /* the gateway answered for a unit that did not: the link is fine */
                mc->answers++;
                md->no_answer++;
            } else {
                unit_answered(dev, md, mc);
            }
            if (exc == 2 && mb_plan_can_split(p, tags, bi)) {
                fb_info(dev->name, tags[p->items[b->first].ix].name,
                        "%s:%u..%u answered exception 02 (illegal data address): reading its "
                        "%u tags one by one from now on",
                        mb_table_name(b->table), b->start, b->start + b->count - 1u, b->n);
                mb_plan_split(p, tags, bi);
                continue; /* retry the first part right away */
            }
        } else if (o == OUT_TIMEOUT) {
            atomic_fetch_add(&dev->m.timeouts, 1);
            modbus_flush(mc->mb);
            note_timeout(md, mc);
        } else if (o == OUT_MALFORMED) {
            modbus_flush(mc->mb);
        } else {
            final = FB_EIO;
            rest_q = FB_Q_BAD_COMM;
        }
        if ((o == OUT_TIMEOUT || gateway_miss) && (md->silent || md->no_answer >= MB_SILENT_AFTER)) {
            if (o == OUT_TIMEOUT && link_silent(dev->conn, md, mc)) {
                final = FB_ETIMEDOUT; /* nobody on the link answers: the link itself */
                rest_q = FB_Q_BAD_TIMEOUT;
            } else {
                unit_unanswered(dev, md, o == OUT_TIMEOUT ? "timeouts" : mb_exception_text(exc));
                skip = true;
                rest_q = FB_Q_BAD_COMM;
            }
        }
        uint32_t q = outcome_quality(o, exc);
        log_block(dev, p, b, q, why);
        fill_block(dev, p, b, q, out, ts);
        bi++;
    }
    /* the waveforms, on their own requests */
    for (uint32_t i = 0; i < g->ntags; i++) {
        struct fb_tag *t = &dev->gw->tags[fb_group_tag(g, i)];
        if (!fb_tag_is_wave(t)) continue;
        if (final || skip) {
            fb_batch_add(out, t->id, rest_q, fb_now_ns(), NULL);
        } else if (read_wave(dev, md, mc, t, out) == FB_EIO) {
            final = FB_EIO;
            rest_q = FB_Q_BAD_COMM;
        }
    }
    if (final == FB_ETIMEDOUT)
        fb_warn(dev->name, NULL, "%d timeouts in a row on %s%s: reconnecting", md->link_timeouts, mc->where,
                dev->conn->ndevs > 1 ? " (and no other unit on it answers)" : "");
    else if (final == FB_EIO)
        fb_warn(dev->name, NULL, "connection to %s lost", mc->where);
    return final;
}

/* ------------------------------------------------------------------ write */
/* writes and write errors are counted by the runtime */
static int write_fail(const struct fb_device *dev, struct mb_conn *mc, const struct fb_tag *t, int e, struct fb_err *err)
{
    char ab[FB_ATEXT_MAX];
    int exc;
    enum outcome o = classify(e, &exc);
    char why[128];
    outcome_text(o, exc, e, why, sizeof why);
    if (o == OUT_TIMEOUT || o == OUT_MALFORMED) modbus_flush(mc->mb);
    int code = o == OUT_EXC ? FB_EEXCEPTION : o == OUT_TIMEOUT ? FB_ETIMEDOUT : o == OUT_MALFORMED ? FB_EPROTO : FB_EIO;
    return fb_err_set(err, code, "write to %s (%s) failed: %s", t->name, fb_tag_addr_text(dev->gw, t, ab), why);
}

static int mb_write(struct fb_device *dev, const struct fb_tag *t, const struct fb_value *v, struct fb_err *err)
{
    const struct mb_addr *a = t->addr;
    struct mb_dev *md = dev->drv_dev;
    struct mb_conn *mc = dev->conn ? dev->conn->ctx : NULL;
    if (!a) return fb_err_set(err, FB_EINVAL, "tag %s has no address", t->name);
    char ab[FB_ATEXT_MAX];
    if (a->table == MB_IR || a->table == MB_DI)
        return fb_err_set(err, FB_EACCES, "%s (%s) is read-only: %s cannot be written", t->name,
                          fb_tag_addr_text(dev->gw, t, ab), a->table == MB_IR ? "input registers" : "discrete inputs");
    uint16_t regs[MB_MAX_WRITE_REGS];
    int n = mb_encode(a, v, regs, MB_MAX_WRITE_REGS, err);
    if (n < 0) return n;
    if (!mc || !mc->mb) return fb_err_set(err, FB_EIO, "%s: not connected", dev->name);
    prepare(mc, md);
    int rc;
    if (a->table == MB_CO) {
        if (md->o.write_coil_fc15) {
            uint8_t bit = regs[0] ? 1 : 0;
            rc = modbus_write_bits(mc->mb, a->addr, 1, &bit);
        } else {
            rc = modbus_write_bit(mc->mb, a->addr, regs[0] ? 1 : 0);
        }
    } else if (a->has_bit) {
        uint16_t mask = (uint16_t)(1u << a->bit);
        if (md->o.bit_write_rmw) {
            uint16_t cur;
            rc = modbus_read_registers(mc->mb, a->addr, 1, &cur);
            if (rc == 1) {
                cur = regs[0] ? (uint16_t)(cur | mask) : (uint16_t)(cur & ~mask);
                rc = md->o.write_single_fc16 ? modbus_write_registers(mc->mb, a->addr, 1, &cur)
                                             : modbus_write_register(mc->mb, a->addr, cur);
            }
        } else {
            rc = modbus_mask_write_register(mc->mb, a->addr, (uint16_t)~mask, regs[0] ? mask : 0);
        }
    } else if (n == 1 && !md->o.write_single_fc16) {
        rc = modbus_write_register(mc->mb, a->addr, regs[0]);
    } else {
        rc = modbus_write_registers(mc->mb, a->addr, n, regs);
    }
    int e = errno;
    mc->last_end = fb_mono_ns();
    if (rc < 0) {
        int exc;
        if (classify(e, &exc) == OUT_EXC && exc != 0x0A && exc != 0x0B) unit_answered(dev, md, mc);
        return write_fail(dev, mc, t, e, err);
    }
    unit_answered(dev, md, mc);
    return 0;
}

static const char *const mb_schemes[] = {"modbus-tcp", "modbus-rtu", NULL};

/* A config reload keeps the connection (model.h): the unit state, the
 * addresses and the plans (with the splits learnt from exception 02) stay
 * with the running model; the addresses name their tags by id, which may
 * have moved. */
static void modbus_adopt(struct fb_conn *c, struct fb_conn *old)
{
    fb_adopt_swap(c, old, FB_ADOPT_DEV | FB_ADOPT_ADDR | FB_ADOPT_PLAN);
    for (uint32_t k = 0; k < c->ndevs; k++) {
        const struct fb_device *d = c->devs[k];
        for (uint32_t i = 0; i < d->ntags; i++) { /* the addresses name their tags (the plans' items) */
            struct mb_addr *a = d->gw->tags[d->first_tag + i].addr;
            if (a) a->tag = d->first_tag + i;
        }
    }
}

const struct fb_driver fb_driver_modbus = {
    .name = "modbus",
    .schemes = mb_schemes,
    .device_init = mb_device_init,
    .device_free = mb_device_free,
    .parse_address = mb_parse_address,
    .addr_text = mb_addr_text,
    .free_address = mb_free_address,
    .plan = mb_plan,
    .plan_free = mb_plan_free_cb,
    .open = mb_open,
    .read = mb_read,
    .write = mb_write,
    .close = mb_close,
    .adopt = modbus_adopt,
};
