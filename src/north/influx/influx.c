/* influx.c — the InfluxDB sink: every batch becomes line protocol, batched
 * into HTTP requests to InfluxDB 1.x (/write) or 2.x (/api/v2/write)
 * (docs/influxdb.md).
 *
 * Threads.  The sink thread (runtime.c) calls send/ready/tick: it encodes
 * batches into the body being filled and, when the body is full (batch.size
 * points or batch.bytes) or old (batch.interval), seals it (gzip) and queues
 * it.  Our own I/O thread runs a libcurl multi handle: it takes sealed bodies
 * in order, max_inflight at a time, and sleeps in curl_multi_poll, woken by
 * curl_multi_wakeup when a body is queued or the sink closes.  Why a thread
 * and not the multi handle driven from tick(): tick runs about every 100 ms,
 * so a response would wait up to that long before the next request could
 * start, and TLS handshakes and slow servers would still cost the sink
 * thread time; with its own thread the network never holds the sink thread
 * and the sink thread never delays the network.  The hand-over is a fixed
 * set of max_inflight + 1 bodies (one filling, the others queued or in
 * flight): when none is free, ready() says no and the records wait in the
 * store (on disk with a `buffer:`), so memory is bounded.
 *
 * Delivery.  A body remembers the ids of the batches in it; each is reported
 * once, when the body's fate is known:
 *   2xx                         FB_SENT
 *   400/422 "partial write"     FB_SENT: InfluxDB wrote every point it could
 *                               parse and type-check and refused the others
 *                               for good (type conflict, bad line, outside
 *                               the retention); retrying cannot change that.
 *                               The refusal is logged with the server's text
 *                               and counted as an error.
 *   other 4xx except the below  FB_DROP, the body logged: the request itself
 *                               is refused and would be again.
 *   429, 5xx, time-out, no      retried (the same body, first in line) after
 *   connection                  a back-off (retry.min … retry.max, equal
 *                               jitter; Retry-After when the server says more)
 *   401, 403, 404               retried like a 5xx and logged as a
 *                               configuration error: wrong credentials, a
 *                               missing database or bucket are fixed by the
 *                               operator, and the data must still be there then.
 * At close, bodies not delivered within 2 s are reported FB_RETRY, so the
 * store keeps them.  Batches that encode to nothing (every tag skipped by
 * `map:`) are reported FB_SENT at once.
 *
 * Columns.  Each configured tag's series ("measurement,tags") and field key
 * are rendered and escaped once at open; series strings are interned, so the
 * samples of a batch that share series and time stamp become one line with
 * several fields.  Tags of named batches (ingest: devices the config does not
 * list) are resolved the first time a (device, tag) pair is seen and kept in
 * a hash table; their field type is the first one seen and never changes.
 */
#include "north/influx/influx.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/curl_dl.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/plugin.h"
#include "core/thread.h"

#define IX_SEC 1000000000LL
#define IX_CLOSE_WAIT_NS (2 * IX_SEC)
#define IX_PREFIX "fieldbridge_"
#define IX_MAX_NAMED 500000u /* columns learnt from named batches (the table: at most 2^21 slots) */
#define IX_RESP_MAX 4096     /* bytes of a response body kept for the log */

struct ix_str {
    uint32_t off, len;
};

struct ix_col {
    uint32_t series; /* index into ctx->series */
    struct ix_str field;
    uint8_t type; /* enum fb_lp_type */
    bool typed;   /* named columns: the type is known (first value seen) */
    bool skip;    /* nothing to write (a map rule, an empty name) */
};

struct ix_named {  /* a column learnt from named batches */
    uint64_t hash; /* 0 = empty slot */
    struct ix_str key;
    struct ix_col col;
};

struct ix_body {
    struct ix_body *next;
    struct fb_buf text, gz;
    uint64_t *ids;
    uint32_t nids, cap_ids, lines;
    int64_t born; /* monotonic time of its first line */
    uint32_t attempts;
    CURL *easy;
    struct fb_buf resp;
    char err[CURL_ERROR_SIZE];
};

struct ix_key { /* sort key of a sample while a batch is encoded */
    uint32_t series;
    uint8_t sev;
    int64_t ts;
    uint32_t idx;
};

struct ix_ctx {
    struct fb_sink_inst *s;
    struct fb_gateway *gw;
    const struct fb_influx_cfg *c;

    /* interned strings: series and field keys (sink thread) */
    struct fb_buf pool;
    struct ix_str *series;
    uint32_t nseries, cap_series;
    uint32_t *shash; /* open addressing over series indices + 1 (0 = empty) */
    uint32_t smask;
    struct ix_col *cols; /* per configured tag id */
    uint32_t ncols;
    struct ix_named *named;
    uint32_t nmask, nnamed;
    struct fb_buf keys; /* keys of named columns */
    struct fb_buf tmp1, tmp2, hjson;
    struct ix_key *order;
    const struct ix_col **colp; /* each sample's column while a batch is encoded */
    uint32_t cap_order;
    struct fb_ratelimit rl_enc;

    /* bodies */
    struct ix_body *bodies;
    uint32_t nbodies;
    struct ix_body *fill;            /* sink thread */
    pthread_mutex_t mu;              /* the lists below */
    struct ix_body *free_list;       /* unused */
    struct ix_body *q_head, *q_tail; /* sealed, in order, for the I/O thread */
    z_stream z;
    bool z_ok;
    int64_t next_health;

    /* I/O thread */
    pthread_t thr;
    bool thr_started;
    CURLM *multi;
    struct curl_slist *headers;
    atomic_bool quit;         /* close: finish what is in flight, start nothing new after the deadline */
    _Atomic int64_t deadline; /* monotonic; 0 = none */
    uint32_t active;
    struct fb_backoff bo;
    int64_t retry_at;
    bool db_ready; /* create_database done (or not wanted) */
    CURL *qeasy;   /* the CREATE DATABASE request */
    struct fb_buf qresp;
    bool qactive;
    char qerr[CURL_ERROR_SIZE];
    struct fb_ratelimit rl_http, rl_partial;
    _Atomic uint64_t n_requests, n_lines, n_bytes_text, n_bytes_wire, n_retries, n_partial, n_refused;
};

/* ----------------------------------------------------------------- strings */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}
#define FNV0 14695981039346656037ull

static struct ix_str pool_add(struct ix_ctx *x, const char *p, size_t n)
{
    struct ix_str s = {(uint32_t)x->pool.len, (uint32_t)n};
    fb_buf_put(&x->pool, p, n);
    return s;
}

static const char *pstr(const struct ix_ctx *x, struct ix_str s) { return x->pool.p + s.off; }

/* The index of series text p (interned). */
static uint32_t series_id(struct ix_ctx *x, const char *p, size_t n)
{
    if (2 * (x->nseries + 1) > x->smask) { /* grow and rehash */
        uint32_t cap = (x->smask + 1) * 2;
        uint32_t *h = calloc(cap, sizeof *h);
        if (!h) FB_ASSERT(!"out of memory");
        for (uint32_t i = 0; i < x->nseries; i++) {
            uint32_t k = (uint32_t)fnv(FNV0, pstr(x, x->series[i]), x->series[i].len) & (cap - 1);
            while (h[k]) k = (k + 1) & (cap - 1);
            h[k] = i + 1;
        }
        free(x->shash);
        x->shash = h;
        x->smask = cap - 1;
    }
    uint32_t k = (uint32_t)fnv(FNV0, p, n) & x->smask;
    while (x->shash[k]) {
        struct ix_str s = x->series[x->shash[k] - 1];
        if (s.len == n && !memcmp(pstr(x, s), p, n)) return x->shash[k] - 1;
        k = (k + 1) & x->smask;
    }
    if (x->nseries == x->cap_series) {
        uint32_t cap = x->cap_series ? x->cap_series * 2 : 64;
        struct ix_str *a = realloc(x->series, cap * sizeof *a);
        if (!a) FB_ASSERT(!"out of memory");
        x->series = a;
        x->cap_series = cap;
    }
    x->series[x->nseries] = pool_add(x, p, n);
    x->shash[k] = ++x->nseries;
    return x->nseries - 1;
}

/* Resolve names into a column (series and field interned). */
static void col_make(struct ix_ctx *x, const struct fb_ix_names *n, struct ix_col *col)
{
    memset(col, 0, sizeof *col);
    if (!fb_ix_resolve(x->c, n, &x->tmp1, &x->tmp2)) {
        col->skip = true;
        return;
    }
    col->series = series_id(x, x->tmp1.p, x->tmp1.len);
    col->field = pool_add(x, x->tmp2.p, x->tmp2.len);
}

/* --------------------------------------------------------- named columns */
static void named_grow(struct ix_ctx *x)
{
    uint32_t cap = x->nmask ? (x->nmask + 1) * 2 : 1024;
    struct ix_named *t = calloc(cap, sizeof *t);
    if (!t) FB_ASSERT(!"out of memory");
    for (uint32_t i = 0; x->named && i <= x->nmask; i++)
        if (x->named[i].hash) {
            uint32_t k = (uint32_t)x->named[i].hash & (cap - 1);
            while (t[k].hash) k = (k + 1) & (cap - 1);
            t[k] = x->named[i];
        }
    free(x->named);
    x->named = t;
    x->nmask = cap - 1;
}

/* The column of tag name `tag` in named batch b, learnt on first sight; NULL
 * when no more columns may be learnt. */
static struct ix_col *named_col(struct ix_ctx *x, const struct fb_batch *b, uint64_t ih, const char *tag)
{
    size_t tl = strlen(tag);
    uint64_t h = fnv(ih, tag, tl + 1);
    if (!h) h = 1;
    /* the table was grown for the whole batch (encode_values): no rehash
     * here, so column pointers stay valid while a batch is encoded.  The
     * key: the five names and the tag name, NUL-separated. */
    uint32_t k = (uint32_t)h & x->nmask;
    while (x->named[k].hash) {
        struct ix_named *e = &x->named[k];
        if (e->hash == h) {
            const char *p = x->keys.p + e->key.off, *end = p + e->key.len;
            bool same = true;
            for (int i = 0; i < FB_BN__N && same; i++) {
                const char *nm = fb_batch_str(b, b->names[i]);
                size_t l = strlen(nm);
                same = (size_t)(end - p) > l && !memcmp(p, nm, l + 1);
                p += l + 1;
            }
            if (same && (size_t)(end - p) == tl + 1 && !memcmp(p, tag, tl + 1)) return &e->col;
        }
        k = (k + 1) & x->nmask;
    }
    if (x->nnamed >= IX_MAX_NAMED || 2 * (x->nnamed + 1) > x->nmask) return NULL;
    struct ix_named *e = &x->named[k];
    e->hash = h;
    e->key.off = (uint32_t)x->keys.len;
    for (int i = 0; i < FB_BN__N; i++) {
        const char *nm = fb_batch_str(b, b->names[i]);
        fb_buf_put(&x->keys, nm, strlen(nm) + 1);
    }
    fb_buf_put(&x->keys, tag, tl + 1);
    e->key.len = (uint32_t)(x->keys.len - e->key.off);
    x->nnamed++;
    struct fb_ix_names n = {{fb_batch_str(b, b->names[FB_BN_GATEWAY]), fb_batch_str(b, b->names[FB_BN_SITE]),
                             fb_batch_str(b, b->names[FB_BN_AREA]), fb_batch_str(b, b->names[FB_BN_LINE]),
                             fb_batch_str(b, b->names[FB_BN_DEVICE]), tag}};
    col_make(x, &n, &e->col);
    return &e->col;
}

/* ------------------------------------------------------------------ encode */
static void body_add_id(struct ix_body *bd, uint64_t id)
{
    if (bd->nids == bd->cap_ids) {
        uint32_t cap = bd->cap_ids ? bd->cap_ids * 2 : 256;
        uint64_t *a = realloc(bd->ids, cap * sizeof *a);
        if (!a) FB_ASSERT(!"out of memory");
        bd->ids = a;
        bd->cap_ids = cap;
    }
    bd->ids[bd->nids++] = id;
}

static int key_cmp(const void *a, const void *b)
{
    const struct ix_key *x = a, *y = b;
    if (x->series != y->series) return x->series < y->series ? -1 : 1;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    if (x->sev != y->sev) return x->sev < y->sev ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static uint8_t sev_of(uint32_t q) { return fb_q_good(q) ? 0 : fb_q_bad(q) ? 2 : 1; }
static const char *const sev_name[] = {"good", "uncertain", "bad"};

/* The quality actually written: a value that cannot be written as the
 * column's type is not data (like NaN in the JSON sink). */
static uint32_t eff_quality(const struct ix_col *col, const struct fb_sample *s)
{
    uint32_t q = s->quality;
    if (fb_q_bad(q)) return q;
    if (s->v.type == FB_T_NONE) return FB_Q_BAD_WAITING;
    if (!col->typed) return q;
    int rc = fb_lp_check((enum fb_lp_type)col->type, &s->v);
    return rc == 0 ? q : rc == FB_ERANGE ? FB_Q_BAD_OUT_OF_RANGE : FB_Q_BAD_TYPE_MISMATCH;
}

static void put_fkey(struct fb_buf *o, const struct ix_ctx *x, const struct ix_col *col, int *nf, const char *suffix)
{
    fb_buf_putc(o, *nf ? ',' : ' ');
    fb_buf_put(o, pstr(x, col->field), col->field.len);
    if (suffix) fb_buf_puts(o, suffix);
    fb_buf_putc(o, '=');
    (*nf)++;
}

static void put_fields(struct ix_ctx *x, struct fb_buf *o, const struct fb_batch *b, const struct fb_sample *s,
                       const struct ix_col *col, uint32_t q, int *nf)
{
    if (!fb_q_bad(q)) {
        put_fkey(o, x, col, nf, NULL);
        fb_lp_value(o, (enum fb_lp_type)col->type, &s->v); /* checked by eff_quality */
    }
    if (x->c->quality == FB_IXQ_FIELD || (x->c->quality == FB_IXQ_TAG && !fb_q_good(q))) {
        put_fkey(o, x, col, nf, "_quality");
        fb_json_u64(o, q);
        fb_buf_putc(o, 'i');
    }
    if (x->c->stats && (s->flags & FB_SF_STATS) && s->stats < b->nstats && !fb_q_bad(q)) {
        const struct fb_stats *st = &b->stats[s->stats];
        const double v[4] = {st->mean, st->stddev, st->min, st->max};
        static const char *const sfx[4] = {"_mean", "_stddev", "_min", "_max"};
        for (int i = 0; i < 4; i++)
            if (isfinite(v[i])) {
                put_fkey(o, x, col, nf, sfx[i]);
                fb_json_double(o, v[i]);
            }
        put_fkey(o, x, col, nf, "_count");
        fb_json_u64(o, st->count);
        fb_buf_putc(o, 'i');
    }
}

/* Encode a data batch (configured or named) into body bd.  Returns the number
 * of lines written. */
static uint32_t encode_values(struct ix_ctx *x, struct ix_body *bd, const struct fb_batch *b)
{
    if (b->n > x->cap_order) {
        struct ix_key *o = realloc(x->order, b->n * sizeof *o);
        if (!o) FB_ASSERT(!"out of memory");
        x->order = o;
        const struct ix_col **cp = realloc(x->colp, b->n * sizeof *cp);
        if (!cp) FB_ASSERT(!"out of memory");
        x->colp = cp;
        x->cap_order = b->n;
    }
    uint64_t ih = FNV0;
    bool named = b->kind == FB_BATCH_NAMED;
    if (named) {
        for (int i = 0; i < FB_BN__N; i++) {
            const char *nm = fb_batch_str(b, b->names[i]);
            ih = fnv(ih, nm, strlen(nm) + 1);
        }
        /* room for every sample's column to be new: no rehash while encoding */
        while ((!x->named || 2 * (x->nnamed + b->n + 1) > x->nmask) && x->nmask < (1u << 21) - 1) named_grow(x);
    }
    uint32_t m = 0;
    bool same = true;
    for (uint32_t i = 0; i < b->n; i++) {
        const struct fb_sample *s = &b->s[i];
        struct ix_col *col;
        if (named) {
            col = named_col(x, b, ih, fb_batch_str(b, s->tag));
            if (col && !col->skip && !col->typed && s->v.type != FB_T_NONE && !fb_q_bad(s->quality)) {
                col->type = (uint8_t)fb_lp_type_of((enum fb_type)s->v.type, x->c->unsigned_ok);
                col->typed = true;
            }
            if (!col && fb_ratelimit_ok(&x->rl_enc, fb_mono_ns()))
                fb_warn(NULL, NULL, "%s: more than %u series columns learnt; new ones are not written", x->s->name,
                        IX_MAX_NAMED);
        } else {
            col = s->tag < x->ncols ? &x->cols[s->tag] : NULL;
        }
        x->colp[i] = col;
        if (!col || col->skip) continue;
        uint32_t q = eff_quality(col, s);
        struct ix_key *k = &x->order[m++];
        k->series = col->series;
        k->sev = x->c->quality == FB_IXQ_TAG ? sev_of(q) : 0;
        k->ts = s->ts_src;
        k->idx = i;
        if (m > 1 && (k->series != x->order[0].series || k->ts != x->order[0].ts || k->sev != x->order[0].sev))
            same = false;
    }
    if (!same) qsort(x->order, m, sizeof *x->order, key_cmp);
    struct fb_buf *o = &bd->text;
    uint32_t lines = 0;
    for (uint32_t i = 0; i < m;) {
        const struct ix_key *k0 = &x->order[i];
        size_t mark = o->len;
        struct ix_str ss = x->series[k0->series];
        fb_buf_put(o, pstr(x, ss), ss.len);
        if (x->c->quality == FB_IXQ_TAG) {
            fb_buf_puts(o, ",quality=");
            fb_buf_puts(o, sev_name[k0->sev]);
        }
        int nf = 0;
        uint32_t j = i;
        for (; j < m && x->order[j].series == k0->series && x->order[j].ts == k0->ts && x->order[j].sev == k0->sev;
             j++) {
            const struct fb_sample *s = &b->s[x->order[j].idx];
            const struct ix_col *col = x->colp[x->order[j].idx];
            put_fields(x, o, b, s, col, eff_quality(col, s), &nf);
        }
        if (nf) {
            fb_buf_putc(o, ' ');
            fb_lp_time(o, k0->ts, x->c->precision);
            fb_buf_putc(o, '\n');
            lines++;
        } else {
            o->len = mark;
        }
        i = j;
    }
    return lines;
}

/* Health of this gateway (our own status JSON, the same document the MQTT
 * sink publishes) into body bd. */
static uint32_t encode_health(struct ix_ctx *x, struct ix_body *bd, bool online)
{
    fb_buf_clear(&x->hjson);
    fb_status_json(x->gw, &x->hjson, online);
    int n =
        fb_ix_health_lines(&bd->text, x->hjson.p, x->hjson.len, x->gw->site, IX_PREFIX, fb_now_ns(), x->c->precision);
    return n > 0 ? (uint32_t)n : 0;
}

/* ---------------------------------------------------------------- bodies */
static void body_reset(struct ix_body *bd)
{
    fb_buf_clear(&bd->text);
    fb_buf_clear(&bd->gz);
    fb_buf_clear(&bd->resp);
    bd->nids = 0;
    bd->lines = 0;
    bd->born = 0;
    bd->attempts = 0;
    bd->next = NULL;
}

static void report_all(struct ix_ctx *x, struct ix_body *bd, enum fb_delivery d)
{
    for (uint32_t i = 0; i < bd->nids; i++) fb_sink_done(x->s, bd->ids[i], d);
    bd->nids = 0;
}

/* Compress (gzip) a body that is about to go out. */
static void body_compress(struct ix_ctx *x, struct ix_body *bd)
{
    if (!x->z_ok || !bd->text.len) return;
    deflateReset(&x->z);
    uLong bound = deflateBound(&x->z, (uLong)bd->text.len) + 32;
    fb_buf_clear(&bd->gz);
    fb_buf_reserve(&bd->gz, bound);
    x->z.next_in = (Bytef *)bd->text.p;
    x->z.avail_in = (uInt)bd->text.len;
    x->z.next_out = (Bytef *)bd->gz.p;
    x->z.avail_out = (uInt)bound;
    int rc = deflate(&x->z, Z_FINISH);
    FB_ASSERT(rc == Z_STREAM_END); /* the output holds deflateBound bytes */
    bd->gz.len = bound - x->z.avail_out;
}

/* Hand the filling body to the I/O thread and take a fresh one.  false when
 * none is free (every other body is queued or in flight). */
static bool seal(struct ix_ctx *x)
{
    struct ix_body *bd = x->fill;
    if (!bd || (!bd->lines && !bd->nids)) return true;
    pthread_mutex_lock(&x->mu);
    struct ix_body *nb = x->free_list;
    if (nb) x->free_list = nb->next;
    pthread_mutex_unlock(&x->mu);
    if (!nb) return false;
    body_reset(nb);
    x->fill = nb;
    body_compress(x, bd);
    pthread_mutex_lock(&x->mu);
    bd->next = NULL;
    if (x->q_tail)
        x->q_tail->next = bd;
    else
        x->q_head = bd;
    x->q_tail = bd;
    pthread_mutex_unlock(&x->mu);
    fb_curl.multi_wakeup(x->multi);
    return true;
}

static bool fill_full(const struct ix_ctx *x)
{
    const struct ix_body *bd = x->fill;
    return bd->lines >= x->c->batch_lines || bd->text.len >= x->c->batch_bytes;
}

/* ------------------------------------------------------------ I/O thread */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct fb_buf *b = ud;
    size_t len = size * n;
    if (b->len < IX_RESP_MAX) fb_buf_put(b, p, len < IX_RESP_MAX - b->len ? len : IX_RESP_MAX - b->len);
    return len;
}

static void easy_common(struct ix_ctx *x, CURL *e, struct fb_buf *resp, char *err)
{
    const struct fb_influx_cfg *c = x->c;
    fb_curl.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    fb_curl.easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(c->timeout_ns / 1000000));
    fb_curl.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->timeout_ns / 1000000));
    fb_curl.easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    fb_curl.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    fb_curl.easy_setopt(e, CURLOPT_WRITEDATA, resp);
    fb_curl.easy_setopt(e, CURLOPT_ERRORBUFFER, err);
    fb_curl.easy_setopt(e, CURLOPT_USERAGENT, "fieldbridge/" FB_VERSION);
    fb_curl.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    fb_curl.easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    fb_curl.easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    if (c->username) {
        fb_curl.easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        fb_curl.easy_setopt(e, CURLOPT_USERNAME, c->username);
        fb_curl.easy_setopt(e, CURLOPT_PASSWORD, c->password ? c->password : "");
    }
    if (c->ca) fb_curl.easy_setopt(e, CURLOPT_CAINFO, c->ca);
    if (c->ca_path) fb_curl.easy_setopt(e, CURLOPT_CAPATH, c->ca_path);
    if (c->cert) fb_curl.easy_setopt(e, CURLOPT_SSLCERT, c->cert);
    if (c->key) fb_curl.easy_setopt(e, CURLOPT_SSLKEY, c->key);
    fb_curl.easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    fb_curl.easy_setopt(e, CURLOPT_SSL_VERIFYHOST, c->tls_verify_hostname ? 2L : 0L);
}

static void start_body(struct ix_ctx *x, struct ix_body *bd)
{
    fb_buf_clear(&bd->resp);
    bd->err[0] = 0;
    bool gz = x->z_ok && bd->gz.len;
    const struct fb_buf *payload = gz ? &bd->gz : &bd->text;
    CURL *e = bd->easy;
    fb_curl.easy_setopt(e, CURLOPT_URL, x->c->write_url);
    fb_curl.easy_setopt(e, CURLOPT_POST, 1L);
    fb_curl.easy_setopt(e, CURLOPT_POSTFIELDS, payload->p ? payload->p : "");
    fb_curl.easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)payload->len);
    fb_curl.easy_setopt(e, CURLOPT_PRIVATE, bd);
    bd->attempts++;
    atomic_fetch_add(&x->n_requests, 1);
    fb_curl.multi_add_handle(x->multi, e);
    x->active++;
}

static void start_create_db(struct ix_ctx *x)
{
    static const char prefix[] = "q=CREATE+DATABASE+%22";
    struct fb_buf q;
    fb_buf_init(&q);
    fb_buf_puts(&q, prefix);
    char *esc = fb_curl.easy_escape(x->qeasy, x->c->db, 0);
    fb_buf_puts(&q, esc ? esc : "");
    fb_curl.free(esc);
    fb_buf_puts(&q, "%22");
    fb_buf_clear(&x->qresp);
    x->qerr[0] = 0;
    fb_curl.easy_setopt(x->qeasy, CURLOPT_URL, x->c->query_url);
    fb_curl.easy_setopt(x->qeasy, CURLOPT_COPYPOSTFIELDS, fb_buf_cstr(&q));
    fb_curl.easy_setopt(x->qeasy, CURLOPT_PRIVATE, NULL);
    fb_buf_free(&q);
    fb_curl.multi_add_handle(x->multi, x->qeasy);
    x->qactive = true;
}

/* Seconds from a Retry-After header (delta seconds only), or 0. */
static int64_t retry_after_ns(CURL *e)
{
    curl_off_t ra = 0;
    if (fb_curl.easy_getinfo(e, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0 && ra < 3600) return ra * IX_SEC;
    return 0;
}

static void body_release(struct ix_ctx *x, struct ix_body *bd)
{
    pthread_mutex_lock(&x->mu);
    bd->next = x->free_list;
    x->free_list = bd;
    pthread_mutex_unlock(&x->mu);
    fb_sink_wake(x->s); /* room again: ready() may say yes */
}

static void requeue_front(struct ix_ctx *x, struct ix_body *bd)
{
    pthread_mutex_lock(&x->mu);
    bd->next = x->q_head;
    x->q_head = bd;
    if (!x->q_tail) x->q_tail = bd;
    pthread_mutex_unlock(&x->mu);
}

static void schedule_retry(struct ix_ctx *x, CURL *e)
{
    int64_t d = fb_backoff_next(&x->bo), ra = retry_after_ns(e);
    if (ra > d) d = ra;
    int64_t at = fb_mono_ns() + d;
    if (at > x->retry_at) x->retry_at = at;
}

static const char *resp_text(struct fb_buf *r)
{
    while (r->len && (r->p[r->len - 1] == '\n' || r->p[r->len - 1] == '\r')) r->len--;
    return r->len ? fb_buf_cstr(r) : "(no body)";
}

static void finish_create(struct ix_ctx *x, CURLcode rc)
{
    long code = 0;
    fb_curl.easy_getinfo(x->qeasy, CURLINFO_RESPONSE_CODE, &code);
    fb_curl.multi_remove_handle(x->multi, x->qeasy);
    x->qactive = false;
    if (rc == CURLE_OK && code >= 200 && code < 300) {
        if (strstr(fb_buf_cstr(&x->qresp), "\"error\""))
            fb_warn(NULL, NULL, "%s: CREATE DATABASE \"%s\": %s (writing anyway)", x->s->name, x->c->db,
                    resp_text(&x->qresp));
        else
            fb_info(NULL, NULL, "%s: database \"%s\" ready", x->s->name, x->c->db);
        x->db_ready = true;
        fb_backoff_reset(&x->bo);
        return;
    }
    if (rc == CURLE_OK && code >= 400 && code < 500 && code != 401 && code != 403 && code != 429) {
        fb_warn(NULL, NULL, "%s: CREATE DATABASE \"%s\" refused (HTTP %ld): %s; writing anyway", x->s->name, x->c->db,
                code, resp_text(&x->qresp));
        x->db_ready = true;
        return;
    }
    if (fb_ratelimit_ok(&x->rl_http, fb_mono_ns()))
        fb_warn(NULL, NULL, "%s: CREATE DATABASE \"%s\" failed: %s", x->s->name, x->c->db,
                rc != CURLE_OK ? (x->qerr[0] ? x->qerr : fb_curl.easy_strerror(rc)) : resp_text(&x->qresp));
    schedule_retry(x, x->qeasy);
}

static uint32_t partial_dropped(const char *body)
{
    const char *d = strstr(body, "dropped=");
    return d ? (uint32_t)strtoul(d + 8, NULL, 10) : 0;
}

static void finish_body(struct ix_ctx *x, struct ix_body *bd, CURLcode rc)
{
    CURL *e = bd->easy;
    long code = 0;
    fb_curl.easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    fb_curl.multi_remove_handle(x->multi, e);
    x->active--;
    struct fb_sink_inst *s = x->s;
    const char *name = s->name;
    int64_t now = fb_mono_ns();
    if (rc != CURLE_OK) {
        atomic_store(&s->m.connected, 0);
        atomic_fetch_add(&x->n_retries, 1);
        atomic_fetch_add(&s->m.errors, 1);
        if (fb_ratelimit_ok(&x->rl_http, now))
            fb_warn(NULL, NULL, "%s: %s: %s (%u points, attempt %u; retrying)", name, x->c->url,
                    bd->err[0] ? bd->err : fb_curl.easy_strerror(rc), bd->lines, bd->attempts);
        schedule_retry(x, e);
        requeue_front(x, bd);
        return;
    }
    atomic_store(&s->m.connected, 1);
    const char *body = resp_text(&bd->resp);
    if (code >= 200 && code < 300) {
        fb_backoff_reset(&x->bo);
        atomic_fetch_add(&x->n_lines, bd->lines);
        atomic_fetch_add(&x->n_bytes_text, bd->text.len);
        atomic_fetch_add(&x->n_bytes_wire, bd->gz.len ? bd->gz.len : bd->text.len);
        if (bd->attempts > 1) fb_info(NULL, NULL, "%s: delivered after %u attempts", name, bd->attempts);
        report_all(x, bd, FB_SENT);
        body_release(x, bd);
        return;
    }
    bool partial = (code == 400 || code == 422) && strstr(body, "partial write");
    if (partial) {
        uint32_t dropped = partial_dropped(body);
        atomic_fetch_add(&x->n_partial, 1);
        atomic_fetch_add(&x->n_refused, dropped);
        atomic_fetch_add(&s->m.errors, 1);
        atomic_fetch_add(&x->n_lines, bd->lines - (dropped < bd->lines ? dropped : bd->lines));
        if (fb_ratelimit_ok(&x->rl_partial, now))
            fb_warn(NULL, NULL, "%s: InfluxDB wrote the request partly (HTTP %ld): %s", name, code, body);
        fb_backoff_reset(&x->bo);
        report_all(x, bd, FB_SENT);
        body_release(x, bd);
        return;
    }
    if (code == 429 || code >= 500 || code == 401 || code == 403 || code == 404) {
        atomic_fetch_add(&x->n_retries, 1);
        atomic_fetch_add(&s->m.errors, 1);
        if (fb_ratelimit_ok(&x->rl_http, now)) {
            if (code == 401 || code == 403 || code == 404)
                fb_error(NULL, NULL,
                         "%s: HTTP %ld from %s: %s — check influx credentials, db/org/bucket; the "
                         "data is kept and retried",
                         name, code, x->c->write_url, body);
            else
                fb_warn(NULL, NULL, "%s: HTTP %ld: %s (%u points; retrying)", name, code, body, bd->lines);
        }
        schedule_retry(x, e);
        requeue_front(x, bd);
        return;
    }
    /* any other answer: the request is refused as a whole and would be again */
    atomic_fetch_add(&s->m.errors, 1);
    fb_error(NULL, NULL, "%s: HTTP %ld, %u points refused and dropped: %s", name, code, bd->lines, body);
    report_all(x, bd, FB_DROP);
    body_release(x, bd);
}

static bool queue_empty(struct ix_ctx *x)
{
    pthread_mutex_lock(&x->mu);
    bool e = !x->q_head;
    pthread_mutex_unlock(&x->mu);
    return e;
}

static void *io_thread(void *arg)
{
    struct ix_ctx *x = arg;
    for (;;) {
        int64_t now = fb_mono_ns();
        bool quitting = atomic_load(&x->quit);
        int64_t dl = atomic_load(&x->deadline);
        bool past = quitting && dl && now >= dl;
        if (quitting && (past || (x->active == 0 && !x->qactive && queue_empty(x)))) break;
        if (!past && now >= x->retry_at) {
            if (!x->db_ready && !x->qactive) {
                start_create_db(x);
            } else if (x->db_ready) {
                while (x->active < x->c->max_inflight) {
                    pthread_mutex_lock(&x->mu);
                    struct ix_body *bd = x->q_head;
                    if (bd) {
                        x->q_head = bd->next;
                        if (!x->q_head) x->q_tail = NULL;
                    }
                    pthread_mutex_unlock(&x->mu);
                    if (!bd) break;
                    start_body(x, bd);
                }
            }
        }
        int running = 0;
        fb_curl.multi_perform(x->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = fb_curl.multi_info_read(x->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            if (msg->easy_handle == x->qeasy) {
                finish_create(x, msg->data.result);
                continue;
            }
            struct ix_body *bd = NULL;
            fb_curl.easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&bd);
            if (bd) finish_body(x, bd, msg->data.result);
        }
        now = fb_mono_ns();
        int64_t wait = 1000000000LL;
        if (x->retry_at > now && x->retry_at - now < wait) wait = x->retry_at - now;
        if (quitting && dl && dl - now < wait) wait = dl > now ? dl - now : 0;
        fb_curl.multi_poll(x->multi, NULL, 0, (int)(wait / 1000000) + 1, NULL);
    }
    /* abandoned at close: what is in flight is aborted, the store keeps it */
    for (uint32_t i = 0; i < x->nbodies; i++) fb_curl.multi_remove_handle(x->multi, x->bodies[i].easy);
    if (x->qactive) fb_curl.multi_remove_handle(x->multi, x->qeasy);
    x->active = 0;
    return NULL;
}

/* ------------------------------------------------------------- the sink */
static void ctx_free(struct ix_ctx *x)
{
    if (!x) return;
    for (uint32_t i = 0; x->bodies && i < x->nbodies; i++) {
        struct ix_body *bd = &x->bodies[i];
        if (bd->easy) fb_curl.easy_cleanup(bd->easy);
        fb_buf_free(&bd->text);
        fb_buf_free(&bd->gz);
        fb_buf_free(&bd->resp);
        free(bd->ids);
    }
    free(x->bodies);
    if (x->qeasy) fb_curl.easy_cleanup(x->qeasy);
    if (x->multi) fb_curl.multi_cleanup(x->multi);
    fb_curl.slist_free_all(x->headers);
    if (x->z_ok) deflateEnd(&x->z);
    fb_buf_free(&x->pool);
    fb_buf_free(&x->keys);
    fb_buf_free(&x->tmp1);
    fb_buf_free(&x->tmp2);
    fb_buf_free(&x->hjson);
    fb_buf_free(&x->qresp);
    free(x->series);
    free(x->shash);
    free(x->cols);
    free(x->named);
    free(x->order);
    free(x->colp);
    pthread_mutex_destroy(&x->mu);
    free(x);
}

/* Every configured tag's column, once (into cols, sized for gw's tags). */
static void make_cols(struct ix_ctx *x, struct ix_col *cols)
{
    const struct fb_gateway *gw = x->gw;
    for (uint32_t i = 0; i < gw->ntags; i++) {
        const struct fb_tag *t = &gw->tags[i];
        const struct fb_device *d = &gw->devs[t->device];
        struct fb_ix_names n = {{gw->id, gw->site, d->area, d->line, d->name, t->name}};
        col_make(x, &n, &cols[i]);
        cols[i].type = (uint8_t)fb_lp_type_of(fb_tag_out_type(t), x->c->unsigned_ok);
        cols[i].typed = true;
    }
}

/* A reload keeps the sink (same section) while devices or tags change: its
 * connection, the bodies filled, queued and in flight (line protocol, no
 * ids) and their delivery reports stay; the columns, which are per tag id,
 * are made again for the new model.  Only the sink thread looks at the model
 * and the columns (the I/O thread sends text), and it is parked from
 * model_begin to model_end: nothing to hold off. */
static void ix_model_begin(struct fb_sink_inst *s) { (void)s; }

static void ix_model_end(struct fb_sink_inst *s, const struct fb_model_map *map)
{
    (void)map; /* a column follows from the names alone */
    struct ix_ctx *x = s->ctx;
    if (!x) return;
    struct ix_col *cols = calloc(x->gw->ntags ? x->gw->ntags : 1, sizeof *cols);
    uint32_t *shash = x->nnamed ? NULL : calloc(64, sizeof *shash);
    if (!cols || (!x->nnamed && !shash)) {
        free(cols);
        free(shash);
        /* the old columns are the old ids': without memory no value is written until the next reload */
        fb_error(NULL, NULL, "%s: out of memory after the reload: values are not written", s->name);
        x->ncols = 0;
        return;
    }
    if (!x->nnamed) { /* the strings again from nothing: what the old model's columns interned goes */
        fb_buf_clear(&x->pool);
        x->nseries = 0;
        free(x->shash);
        x->shash = shash;
        x->smask = 63;
    } /* else named columns point into the pool: the new strings are added to it (only ingest has them) */
    make_cols(x, cols);
    free(x->cols);
    x->cols = cols;
    x->ncols = x->gw->ntags;
    fb_info(NULL, NULL, "%s: kept across the reload (%u tags, %u series)", s->name, x->gw->ntags, x->nseries);
}

static int ix_open(struct fb_sink_inst *s, struct fb_err *err)
{
    const struct fb_influx_cfg *c = s->cfg;
    struct fb_gateway *gw = s->gw;
    if (!c || !gw || !c->write_url) return fb_err_set(err, FB_EINVAL, "influx: not configured");
    int lrc = fb_curl_load(err);
    if (lrc < 0) return lrc;
    struct ix_ctx *x = calloc(1, sizeof *x);
    if (!x) return fb_err_set(err, FB_ENOMEM, "out of memory");
    x->s = s;
    x->gw = gw;
    x->c = c;
    pthread_mutex_init(&x->mu, NULL);
    fb_buf_init(&x->pool);
    fb_buf_init(&x->keys);
    fb_buf_init(&x->tmp1);
    fb_buf_init(&x->tmp2);
    fb_buf_init(&x->hjson);
    fb_buf_init(&x->qresp);
    x->rl_enc.interval_ns = 60 * IX_SEC;
    x->rl_http.interval_ns = 10 * IX_SEC;
    x->rl_partial.interval_ns = 10 * IX_SEC;
    x->smask = 63;
    x->shash = calloc(64, sizeof *x->shash);
    x->cols = calloc(gw->ntags ? gw->ntags : 1, sizeof *x->cols);
    x->ncols = gw->ntags;
    if (!x->shash || !x->cols) {
        ctx_free(x);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    make_cols(x, x->cols);
    if (c->gzip_level > 0) {
        x->z_ok = deflateInit2(&x->z, c->gzip_level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK;
        if (!x->z_ok) fb_warn(NULL, NULL, "%s: zlib unavailable, sending uncompressed", s->name);
    }
    x->headers = fb_curl.slist_append(x->headers, "Content-Type: text/plain; charset=utf-8");
    x->headers = fb_curl.slist_append(x->headers, "Expect:"); /* no 100-continue round trip */
    if (x->z_ok) x->headers = fb_curl.slist_append(x->headers, "Content-Encoding: gzip");
    if (c->token) {
        size_t l = strlen(c->token) + 32;
        char *h = malloc(l);
        if (h) {
            snprintf(h, l, "Authorization: Token %s", c->token);
            x->headers = fb_curl.slist_append(x->headers, h);
            explicit_bzero(h, l);
            free(h);
        }
    }
    x->multi = fb_curl.multi_init();
    x->nbodies = c->max_inflight + 1;
    x->bodies = calloc(x->nbodies, sizeof *x->bodies);
    x->qeasy = fb_curl.easy_init();
    if (!x->headers || !x->multi || !x->bodies || !x->qeasy) {
        ctx_free(x);
        return fb_err_set(err, FB_ENOMEM, "influx: cannot set up libcurl");
    }
    for (uint32_t i = 0; i < x->nbodies; i++) {
        struct ix_body *bd = &x->bodies[i];
        fb_buf_init(&bd->text);
        fb_buf_init(&bd->gz);
        fb_buf_init(&bd->resp);
        bd->easy = fb_curl.easy_init();
        if (!bd->easy) {
            ctx_free(x);
            return fb_err_set(err, FB_ENOMEM, "influx: cannot set up libcurl");
        }
        easy_common(x, bd->easy, &bd->resp, bd->err);
        if (i) {
            bd->next = x->free_list;
            x->free_list = bd;
        }
    }
    x->fill = &x->bodies[0];
    easy_common(x, x->qeasy, &x->qresp, x->qerr);
    fb_curl.easy_setopt(x->qeasy, CURLOPT_HTTPHEADER, NULL);
    x->db_ready = !c->create_database;
    fb_backoff_init(&x->bo, c->retry_min_ns, c->retry_max_ns);
    x->next_health = fb_mono_ns(); /* the first health point at once */
    s->ctx = x;
    if (pthread_create(&x->thr, NULL, io_thread, x) != 0) {
        s->ctx = NULL;
        ctx_free(x);
        return fb_err_set(err, FB_ENOMEM, "influx: cannot start the I/O thread");
    }
    x->thr_started = true;
    fb_info(NULL, NULL, "%s: writing to %s (%s API, %u series, batches of %u points / %.1fs%s)", s->name, c->write_url,
            c->api2 ? "2.x" : "1.x", x->nseries, c->batch_lines, c->batch_interval_ns / 1e9, x->z_ok ? ", gzip" : "");
    return 0;
}

static int ix_send(struct fb_sink_inst *s, const struct fb_batch *b, uint64_t id)
{
    struct ix_ctx *x = s->ctx;
    if (!x) {
        fb_sink_done(s, id, FB_DROP);
        return FB_EINVAL;
    }
    struct ix_body *bd = x->fill;
    if (!bd->born) bd->born = fb_mono_ns();
    uint32_t lines = 0;
    switch (b->kind) {
        case FB_BATCH_DEVSTATE:
            /* a state change, best effort like the MQTT sink's status: not kept in the store */
            if (x->c->health && b->device < x->gw->ndevs) {
                fb_ix_devstate_line(&bd->text, IX_PREFIX, x->gw->id, x->gw->site, x->gw->devs[b->device].name,
                                    b->dev_state, b->reason, b->ts, x->c->precision);
                bd->lines++;
            }
            fb_sink_done(s, id, FB_SENT);
            return 0;
        case FB_BATCH_DATA:
            if (b->device >= x->gw->ndevs) {
                fb_sink_done(s, id, FB_DROP);
                return FB_EINVAL;
            }
            lines = encode_values(x, bd, b);
            break;
        case FB_BATCH_ALARM: /* alarm history: one <prefix>alarm point per event (docs/influxdb.md) */
            lines = (uint32_t)fb_ix_alarm_line(&bd->text, IX_PREFIX, x->gw, b, x->c->precision);
            break;
        case FB_BATCH_NAMED: lines = encode_values(x, bd, b); break;
        case FB_BATCH_NAMED_STATUS:
            if (b->n == 1 && b->s[0].v.type == FB_T_STRING) {
                int n = fb_ix_health_lines(&bd->text, b->s[0].v.s.p, b->s[0].v.s.len,
                                           fb_batch_str(b, b->names[FB_BN_SITE]), IX_PREFIX, b->ts, x->c->precision);
                if (n > 0) lines = (uint32_t)n;
            }
            break;
        default: fb_sink_done(s, id, FB_DROP); return FB_EINVAL;
    }
    if (!lines) { /* nothing to write for it */
        fb_sink_done(s, id, FB_SENT);
        return 0;
    }
    bd->lines += lines;
    body_add_id(bd, id);
    if (fill_full(x)) seal(x);
    return 0;
}

/* Also seals a body that is old enough: while a full store holds the sink
 * thread in its append loop (`full: block`), ready() is what runs, not tick(). */
static bool ix_ready(struct fb_sink_inst *s, bool pace)
{
    (void)pace;
    struct ix_ctx *x = s->ctx;
    if (!x) return false;
    if (x->fill->born && fb_mono_ns() - x->fill->born >= x->c->batch_interval_ns) seal(x);
    return !fill_full(x) || seal(x);
}

static void ix_tick(struct fb_sink_inst *s)
{
    struct ix_ctx *x = s->ctx;
    if (!x) return;
    int64_t now = fb_mono_ns();
    if (x->c->health && now >= x->next_health) {
        int64_t iv = x->gw->status_interval_ns > 0 ? x->gw->status_interval_ns : 30 * IX_SEC;
        x->next_health = now + iv;
        if (!fill_full(x) || seal(x)) {
            if (!x->fill->born) x->fill->born = now;
            x->fill->lines += encode_health(x, x->fill, true);
        }
    }
    if (x->fill->born && now - x->fill->born >= x->c->batch_interval_ns) seal(x);
}

static void ix_close(struct fb_sink_inst *s)
{
    struct ix_ctx *x = s->ctx;
    if (!x) return;
    /* the last health point says offline; then what is filled goes out */
    if (x->c->health && (!fill_full(x) || seal(x))) x->fill->lines += encode_health(x, x->fill, false);
    seal(x);
    atomic_store(&x->deadline, fb_mono_ns() + IX_CLOSE_WAIT_NS);
    atomic_store(&x->quit, true);
    fb_curl.multi_wakeup(x->multi);
    if (x->thr_started) pthread_join(x->thr, NULL);
    /* whatever was not delivered stays in the store */
    uint32_t left = 0;
    for (struct ix_body *bd = x->q_head; bd; bd = bd->next) {
        left += bd->lines;
        report_all(x, bd, FB_RETRY);
    }
    left += x->fill->lines;
    report_all(x, x->fill, FB_RETRY);
    for (uint32_t i = 0; i < x->nbodies; i++) report_all(x, &x->bodies[i], FB_RETRY); /* aborted in flight */
    if (left)
        fb_warn(NULL, NULL, "%s: %u points not delivered at close (kept in the buffer if there is one)", s->name, left);
    fb_info(NULL, NULL,
            "%s: %llu requests, %llu points written, %llu bytes of line protocol, %llu bytes sent, "
            "%llu retried, %llu partial writes (%llu points refused)",
            s->name, (unsigned long long)atomic_load(&x->n_requests), (unsigned long long)atomic_load(&x->n_lines),
            (unsigned long long)atomic_load(&x->n_bytes_text), (unsigned long long)atomic_load(&x->n_bytes_wire),
            (unsigned long long)atomic_load(&x->n_retries), (unsigned long long)atomic_load(&x->n_partial),
            (unsigned long long)atomic_load(&x->n_refused));
    atomic_store(&s->m.connected, 0);
    s->ctx = NULL;
    ctx_free(x);
}

static void ix_describe(const struct fb_sink_inst *s, FILE *f)
{
    const struct fb_influx_cfg *c = s->cfg;
    fprintf(f,
            "  sink influx  %s  (%s, precision %s)  measurement %s  field %s  quality %s  batch %u points / "
            "%.1fs  gzip %d  max in flight %u%s\n",
            c->write_url ? c->write_url : "?", c->api2 ? "InfluxDB 2.x API" : "InfluxDB 1.x API",
            fb_lp_precision_param(c->precision, true), c->measurement, c->field,
            c->quality == FB_IXQ_FIELD ? "field"
            : c->quality == FB_IXQ_TAG ? "tag"
                                       : "none",
            c->batch_lines, c->batch_interval_ns / 1e9, c->gzip_level, c->max_inflight,
            c->nrules ? "  (map rules)" : "");
}

const struct fb_sink fb_sink_influx = {
    .name = "influx",
    .keys = fb_ix_keys,
    .nested = fb_ix_nested,
    .cfg_load = fb_ix_cfg_load,
    .cfg_free = fb_ix_cfg_free,
    .describe = ix_describe,
    .open = ix_open,
    .send = ix_send,
    .ready = ix_ready,
    .tick = ix_tick,
    .close = ix_close,
    .cfg_equal = fb_ix_cfg_equal,
    .model_begin = ix_model_begin,
    .model_end = ix_model_end,
    .named = true,
};
