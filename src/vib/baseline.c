/* baseline.c — the baseline file (baseline.h): written with the project's
 * JSON writer (core/buf.h: doubles as the shortest text that reads back to
 * the same double, so a restored baseline is bit for bit the saved one),
 * read with jansson. */
#include "vib/baseline.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void num(struct fb_buf *b, double v)
{
    if (isfinite(v))
        fb_json_double(b, v);
    else
        fb_buf_puts(b, "0");
}

int fb_baseline_write(const char *file, const struct fb_baseline_rec *recs, uint32_t n, struct fb_err *err)
{
    struct fb_buf b;
    fb_buf_init(&b);
    char ts[40];
    fb_fmt_time(ts, fb_now_ns());
    fb_buf_puts(&b, "{\"format\":\"fieldbridge vibration baseline\",\"version\":1,\"saved\":");
    fb_json_cstr(&b, ts);
    fb_buf_puts(&b, ",\"channels\":[");
    for (uint32_t i = 0; i < n; i++) {
        const struct fb_baseline_rec *r = &recs[i];
        fb_buf_puts(&b, i ? ",\n{\"tag\":" : "\n{\"tag\":");
        fb_json_cstr(&b, r->tag);
        fb_buf_printf(&b, ",\"fingerprint\":\"%016" PRIx64 "\",\"learned\":%" PRIu32 ",\"features\":[", r->fingerprint,
                      r->learned);
        for (uint32_t k = 0; k < r->nf; k++) {
            fb_buf_puts(&b, k ? ",{\"name\":" : "{\"name\":");
            fb_json_cstr(&b, r->names[k]);
            fb_buf_puts(&b, ",\"n\":");
            num(&b, r->base[k].n);
            fb_buf_puts(&b, ",\"mean\":");
            num(&b, r->base[k].mean);
            fb_buf_puts(&b, ",\"m2\":");
            num(&b, r->base[k].m2);
            fb_buf_putc(&b, '}');
        }
        fb_buf_puts(&b, "]}");
    }
    fb_buf_puts(&b, "]}\n");

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", file);
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        rc = fb_err_set(err, FB_EIO, "cannot write %s: %s", tmp, strerror(errno));
    } else {
        if (write_all(fd, b.p, b.len) < 0 || fsync(fd) < 0)
            rc = fb_err_set(err, FB_EIO, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        if (!rc && rename(tmp, file) < 0) rc = fb_err_set(err, FB_EIO, "cannot rename %s: %s", tmp, strerror(errno));
        if (rc) {
            unlink(tmp);
        } else {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s", file);
            int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                (void)fsync(dfd); /* the rename itself must survive a power cut */
                close(dfd);
            }
        }
    }
    fb_buf_free(&b);
    return rc;
}

int fb_baseline_read(const char *file, void (*found)(void *ctx, const struct fb_baseline_rec *r), void *ctx,
                     struct fb_err *err)
{
    if (access(file, F_OK) != 0) return FB_ENOENT;
    json_error_t je;
    json_t *root = json_load_file(file, 0, &je);
    if (!root) return fb_err_set(err, FB_EPROTO, "%s:%d: %s", file, je.line, je.text);
    int rc = 0;
    const char *fmt = json_string_value(json_object_get(root, "format"));
    json_t *chans = json_object_get(root, "channels");
    if (!fmt || strcmp(fmt, "fieldbridge vibration baseline") ||
        json_integer_value(json_object_get(root, "version")) != 1 || !json_is_array(chans)) {
        json_decref(root);
        return fb_err_set(err, FB_EPROTO, "%s: not a fieldbridge vibration baseline (version 1)", file);
    }
    size_t i;
    json_t *c;
    json_array_foreach(chans, i, c)
    {
        const char *tag = json_string_value(json_object_get(c, "tag"));
        const char *fp = json_string_value(json_object_get(c, "fingerprint"));
        json_t *feats = json_object_get(c, "features");
        json_int_t learned = json_integer_value(json_object_get(c, "learned"));
        if (!tag || !fp || !json_is_array(feats) || learned < 0 || learned > UINT32_MAX ||
            json_array_size(feats) > 256) {
            rc = fb_err_set(err, FB_EPROTO, "%s: channel %zu is malformed", file, i);
            break;
        }
        char *end;
        uint64_t fpv = strtoull(fp, &end, 16);
        if (*end) {
            rc = fb_err_set(err, FB_EPROTO, "%s: channel %s: bad fingerprint", file, tag);
            break;
        }
        uint32_t nf = (uint32_t)json_array_size(feats);
        struct fb_anom_base base[256];
        const char *names[256];
        bool ok = true;
        for (uint32_t k = 0; k < nf; k++) {
            json_t *f = json_array_get(feats, k);
            names[k] = json_string_value(json_object_get(f, "name"));
            json_t *jn = json_object_get(f, "n"), *jm = json_object_get(f, "mean"), *j2 = json_object_get(f, "m2");
            if (!names[k] || !json_is_number(jn) || !json_is_number(jm) || !json_is_number(j2)) {
                ok = false;
                break;
            }
            base[k].n = json_number_value(jn);
            base[k].mean = json_number_value(jm);
            base[k].m2 = json_number_value(j2);
            if (!(base[k].n >= 0) || !isfinite(base[k].mean) || !(base[k].m2 >= 0) || !isfinite(base[k].m2)) ok = false;
        }
        if (!ok) {
            rc = fb_err_set(err, FB_EPROTO, "%s: channel %s: malformed feature", file, tag);
            break;
        }
        struct fb_baseline_rec r = {tag, fpv, (uint32_t)learned, nf, names, base};
        found(ctx, &r);
    }
    json_decref(root);
    return rc;
}
