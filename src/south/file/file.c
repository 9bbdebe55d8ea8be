/* file.c — the file driver ("file:///data/motor.wav?loop=true"): recorded
 * waveforms replayed as blocks, so a vibration channel can be set up,
 * tuned and tested on a recording of the real machine before the sensor
 * is wired, and so a recording of a known fault can be fed through the
 * analysis (docs/vibration.md).
 *
 * Every tag is a waveform tag (`vibration:`) naming a channel of the file:
 * `0`, `ch:1`, or a CSV column's header name.  Each read takes the next
 * block of frames (all tags of a device use the same block length, so one
 * read is one stretch of the recording for every channel); at the end the
 * recording starts again (`loop=true`, the default) or the device goes
 * offline ("end of the recording").  WAV files are read block by block
 * (pread into one buffer allocated at open); CSV files are parsed whole at
 * open (a CSV holds no sample rate: vibration.fs says it; a WAV's own rate
 * must match vibration.fs).  The parsing is in file_proto.c.
 *
 * Threading: one connection per device ("file:<device>"), so the state
 * below is only touched by its connection thread. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/block.h"
#include "core/log.h"
#include "core/model.h"
#include "core/plugin.h"
#include "south/file/file.h"
#include "south/file/file_proto.h"

#define FILE_CSV_MAX (256u << 20) /* bytes: a CSV is parsed whole */

enum { FMT_AUTO = 0, FMT_WAV, FMT_CSV };

struct file_dev {
    char path[4096];
    bool loop;
    int fmt;
    /* open (connection thread) */
    int fd;
    bool is_wav, open, ended;
    struct fb_wav wav;
    struct fb_csv csv;
    uint64_t frames, pos;
    uint8_t *buf; /* one block of WAV frames */
    size_t bufcap;
};

struct file_tag {
    int ch;    /* channel / column, -1: by name (resolved at open) */
    char *col; /* CSV column name */
};

static const char *const file_schemes[] = {"file", NULL};

static bool is_csv(const struct file_dev *fd)
{
    if (fd->fmt) return fd->fmt == FMT_CSV;
    size_t n = strlen(fd->path);
    return n > 4 && !strcasecmp(fd->path + n - 4, ".csv");
}

static int file_device_init(struct fb_device *dev, char **conn_key, struct fb_err *err)
{
    struct file_dev *fd = calloc(1, sizeof *fd);
    if (!fd) return fb_err_set(err, FB_ENOMEM, "out of memory");
    fd->loop = true;
    fd->fd = -1;
    for (int i = 0; i < dev->url.nq; i++) {
        const char *k = dev->url.q[i].k, *v = dev->url.q[i].v ? dev->url.q[i].v : "";
        if (!strcmp(k, "loop")) {
            if (!strcmp(v, "true") || !strcmp(v, "1"))
                fd->loop = true;
            else if (!strcmp(v, "false") || !strcmp(v, "0"))
                fd->loop = false;
            else
                goto bad_value;
        } else if (!strcmp(k, "format")) {
            if (!strcmp(v, "wav"))
                fd->fmt = FMT_WAV;
            else if (!strcmp(v, "csv"))
                fd->fmt = FMT_CSV;
            else
                goto bad_value;
        } else {
            free(fd);
            return fb_err_set(err, FB_EINVAL, "device %s: unknown file option '%s' (valid: loop, format)", dev->name,
                              k);
        }
        continue;
    bad_value:
        free(fd);
        return fb_err_set(err, FB_EINVAL, "device %s: %s=%s: expected %s", dev->name, k, v,
                          !strcmp(k, "loop") ? "true or false" : "wav or csv");
    }
    /* file:///abs/path, or file://rel/path (relative to the config file) */
    char rel[2048];
    snprintf(rel, sizeof rel, "%s%s", dev->url.host ? dev->url.host : "", dev->url.path ? dev->url.path : "");
    if (!rel[0]) {
        free(fd);
        return fb_err_set(err, FB_EINVAL, "device %s: the URL names no file (file:///path/to/recording.wav)",
                          dev->name);
    }
    if (rel[0] != '/' && dev->gw && dev->gw->cfg_path) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", dev->gw->cfg_path);
        snprintf(fd->path, sizeof fd->path, "%s/%s", dirname(dir), rel);
    } else {
        snprintf(fd->path, sizeof fd->path, "%s", rel);
    }
    size_t n = strlen(dev->name ? dev->name : "") + 6;
    char *key = malloc(n);
    if (!key) {
        free(fd);
        return fb_err_set(err, FB_ENOMEM, "out of memory");
    }
    snprintf(key, n, "file:%s", dev->name ? dev->name : "");
    dev->drv_dev = fd;
    *conn_key = key;
    return 0;
}

static void close_dev(struct file_dev *fd)
{
    if (fd->fd >= 0) close(fd->fd);
    fd->fd = -1;
    fb_csv_free(&fd->csv);
    free(fd->buf);
    fd->buf = NULL;
    fd->bufcap = 0;
    fd->open = fd->ended = false;
}

static void file_device_free(struct fb_device *dev)
{
    struct file_dev *fd = dev->drv_dev;
    if (fd) close_dev(fd);
    free(fd);
    dev->drv_dev = NULL;
}

static int file_parse_address(struct fb_device *dev, struct fb_tag *tag, struct fb_err *err)
{
    char ab[FB_ATEXT_MAX];
    const char *a = fb_tag_addr_text(dev->gw, tag, ab);
    if (!a) a = "";
    if (!fb_tag_is_wave(tag))
        return fb_err_set(err, FB_EINVAL,
                          "file: tag %s is not a waveform: every tag of a file device needs a vibration: section "
                          "(docs/vibration.md)",
                          tag->name);
    if (tag->type != FB_T_NONE && tag->type != FB_T_FLOAT64 && tag->type != FB_T_FLOAT32)
        return fb_err_set(err, FB_EINVAL, "file: tag %s: the samples are numbers (float64), not %s", tag->name,
                          fb_type_name((enum fb_type)tag->type));
    struct file_tag *ft = calloc(1, sizeof *ft);
    if (!ft) return fb_err_set(err, FB_ENOMEM, "out of memory");
    const char *num = !strncmp(a, "ch:", 3) ? a + 3 : a;
    char *end;
    long ch = strtol(num, &end, 10);
    if (*num && !*end && ch >= 0 && ch < FB_CSV_MAX_COLS) {
        ft->ch = (int)ch;
    } else if (!strncmp(a, "ch:", 3) || !*a) {
        free(ft);
        return fb_err_set(err, FB_EINVAL, "file address '%s': expected a channel 0..%d (0, ch:1) or a CSV column name",
                          a, FB_CSV_MAX_COLS - 1);
    } else {
        ft->ch = -1;
        ft->col = strdup(!strncmp(a, "col:", 4) ? a + 4 : a);
        if (!ft->col) {
            free(ft);
            return fb_err_set(err, FB_ENOMEM, "out of memory");
        }
    }
    tag->type = FB_T_FLOAT64;
    tag->addr = ft;
    return 0;
}

static void file_free_address(struct fb_tag *tag)
{
    struct file_tag *ft = tag->addr;
    if (ft) free(ft->col);
    free(ft);
    tag->addr = NULL;
}

static int file_plan(struct fb_device *dev, struct fb_group *g, struct fb_err *err)
{
    /* one read is one stretch of the recording: every tag the same length */
    uint32_t n = 0;
    for (uint32_t i = 0; i < dev->ntags; i++) {
        const struct fb_tag *t = &dev->gw->tags[dev->first_tag + i];
        const struct fb_wave *w = fb_tag_wave(dev->gw, t);
        if (!w) continue;
        if (n && w->n != n)
            return fb_err_set(err, FB_EINVAL, "file device %s: all its tags need the same vibration.block (%u, %u)",
                              dev->name, n, w->n);
        n = w->n;
    }
    if (dev->ngroups > 1)
        return fb_err_set(err, FB_EINVAL,
                          "file device %s: all its tags need the same poll period (one read = one "
                          "stretch of the recording)",
                          dev->name);
    g->plan = NULL;
    return 0;
}

static void file_plan_free(struct fb_group *g) { g->plan = NULL; }

/* Open one device's file and check it against its tags. */
static int open_dev(struct fb_device *dev, struct file_dev *fd, struct fb_err *err)
{
    close_dev(fd);
    uint32_t n = 0;
    double fs = 0;
    for (uint32_t i = 0; i < dev->ntags; i++) {
        const struct fb_tag *t = &dev->gw->tags[dev->first_tag + i];
        const struct fb_wave *w = fb_tag_wave(dev->gw, t);
        if (w) {
            n = w->n;
            fs = w->fs;
        }
    }
    int f = open(fd->path, O_RDONLY | O_CLOEXEC);
    if (f < 0) return fb_err_set(err, FB_EIO, "cannot open %s: %s", fd->path, strerror(errno));
    struct stat st;
    if (fstat(f, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(f);
        return fb_err_set(err, FB_EIO, "%s is not a regular file", fd->path);
    }
    fd->is_wav = !is_csv(fd);
    int rc = 0;
    if (fd->is_wav) {
        uint8_t *h = malloc(FB_WAV_HEADER_MAX);
        ssize_t got = h ? pread(f, h, FB_WAV_HEADER_MAX, 0) : -1;
        if (got < 0) {
            rc = fb_err_set(err, FB_EIO, "cannot read %s: %s", fd->path, strerror(errno));
        } else {
            struct fb_err pe = {0};
            if (fb_wav_parse(h, (size_t)got, (uint64_t)st.st_size, &fd->wav, &pe) < 0)
                rc = fb_err_set(err, FB_EINVAL, "%s: %s", fd->path, pe.msg);
            else if (fd->wav.rate != fs)
                rc = fb_err_set(err, FB_EINVAL, "%s is sampled at %u Hz, vibration.fs says %g Hz", fd->path,
                                fd->wav.rate, fs);
        }
        free(h);
        fd->frames = fd->wav.frames;
        fd->bufcap = (size_t)n * fd->wav.align;
        if (!rc && !(fd->buf = malloc(fd->bufcap ? fd->bufcap : 1))) rc = fb_err_set(err, FB_ENOMEM, "out of memory");
        if (!rc) fd->fd = f;
    } else {
        if ((uint64_t)st.st_size > FILE_CSV_MAX) {
            rc = fb_err_set(err, FB_EINVAL, "%s: %lld bytes: a CSV recording may have at most %u MiB (use WAV)",
                            fd->path, (long long)st.st_size, FILE_CSV_MAX >> 20);
        } else {
            char *text = malloc((size_t)st.st_size + 1);
            ssize_t got = text ? pread(f, text, (size_t)st.st_size, 0) : -1;
            struct fb_err pe = {0};
            if (got < 0)
                rc = fb_err_set(err, FB_EIO, "cannot read %s: %s", fd->path, strerror(errno));
            else if (fb_csv_parse(text, (size_t)got, &fd->csv, &pe) < 0)
                rc = fb_err_set(err, FB_EINVAL, "%s: %s", fd->path, pe.msg);
            free(text);
            fd->frames = fd->csv.rows;
        }
        close(f);
    }
    if (rc) {
        if (fd->is_wav) close(f);
        fd->fd = -1;
        close_dev(fd);
        return rc;
    }
    uint32_t chans = fd->is_wav ? fd->wav.channels : fd->csv.cols;
    for (uint32_t i = 0; i < dev->ntags; i++) {
        struct fb_tag *t = &dev->gw->tags[dev->first_tag + i];
        struct file_tag *ft = t->addr;
        if (!ft) continue;
        int ch = ft->ch;
        if (ft->col) ch = fd->is_wav ? -1 : fb_csv_column(&fd->csv, ft->col);
        if (ch < 0 || (uint32_t)ch >= chans) {
            close_dev(fd);
            if (ft->col)
                return fb_err_set(err, FB_EINVAL, "%s: tag %s: %s", fd->path, t->name,
                                  fd->is_wav ? "a WAV file has no column names: give the channel (0, 1, …)"
                                             : "no column of that name in the header");
            return fb_err_set(err, FB_EINVAL, "%s: tag %s: channel %d, the file has %u", fd->path, t->name, ch, chans);
        }
    }
    if (!fd->frames) {
        close_dev(fd);
        return fb_err_set(err, FB_EINVAL, "%s holds no samples", fd->path);
    }
    fd->pos = 0;
    fd->open = true;
    return 0;
}

static int file_open(struct fb_conn *c, struct fb_err *err)
{
    for (uint32_t i = 0; i < c->ndevs; i++) {
        struct fb_device *dev = c->devs[i];
        int rc = open_dev(dev, dev->drv_dev, err);
        if (rc < 0) {
            for (uint32_t k = 0; k < i; k++) close_dev(c->devs[k]->drv_dev);
            return rc;
        }
    }
    c->ctx = c;
    return 0;
}

static void file_close(struct fb_conn *c)
{
    for (uint32_t i = 0; i < c->ndevs; i++)
        if (c->devs[i]->drv_dev) close_dev(c->devs[i]->drv_dev);
    c->ctx = NULL;
}

/* Frames [pos, pos+n) of the WAV (wrapping with loop) into fd->buf. */
static int wav_frames(struct file_dev *fd, uint64_t pos, uint32_t n)
{
    size_t done = 0;
    while (done < n) {
        uint64_t at = (pos + done) % fd->frames;
        uint64_t take = fd->frames - at;
        if (take > n - done) take = n - done;
        size_t bytes = (size_t)take * fd->wav.align;
        ssize_t got =
            pread(fd->fd, fd->buf + done * fd->wav.align, bytes, (off_t)(fd->wav.data_off + at * fd->wav.align));
        if (got != (ssize_t)bytes) return FB_EIO;
        done += (size_t)take;
    }
    return 0;
}

static int file_read(struct fb_device *dev, struct fb_group *g, struct fb_batch *out)
{
    struct file_dev *fd = dev->drv_dev;
    if (!fd || !fd->open) return FB_EIO;
    if (fd->ended) return 0; /* the recording ended (loop=false): nothing more */
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->ntags && !n; i++) {
        const struct fb_wave *w = fb_tag_wave(dev->gw, &dev->gw->tags[fb_group_tag(g, i)]);
        if (w) n = w->n;
    }
    if (!n) return 0;
    if (!fd->loop && fd->pos + n > fd->frames) {
        fd->ended = true;
        fb_info(dev->name, NULL, "end of the recording %s (%llu frames)", fd->path, (unsigned long long)fd->frames);
        fb_device_set_state(dev, FB_DEV_OFFLINE, "end of the recording (loop=false)");
        return 0;
    }
    int64_t t0 = fb_mono_ns(), now = fb_now_ns();
    atomic_fetch_add(&dev->m.requests, 1);
    if (fd->is_wav && wav_frames(fd, fd->pos, n) < 0) {
        atomic_fetch_add(&dev->m.errors, 1);
        fb_warn(dev->name, NULL, "cannot read %s: %s", fd->path, strerror(errno));
        return FB_EIO;
    }
    for (uint32_t i = 0; i < g->ntags; i++) {
        struct fb_tag *t = &dev->gw->tags[fb_group_tag(g, i)];
        struct file_tag *ft = t->addr;
        if (!fb_tag_is_wave(t) || !ft) continue;
        struct fb_block *blk = fb_block_get(dev->gw, t);
        if (!blk) continue; /* the analysis is behind: dropped and counted */
        uint32_t ch = (uint32_t)(ft->col ? fb_csv_column(&fd->csv, ft->col) : ft->ch);
        uint32_t m = n <= blk->cap ? n : blk->cap;
        if (fd->is_wav) {
            fb_wav_decode(&fd->wav, fd->buf, m, ch, blk->x);
        } else {
            for (uint32_t k = 0; k < m; k++) blk->x[k] = fd->csv.data[((fd->pos + k) % fd->frames) * fd->csv.cols + ch];
        }
        blk->n = m;
        blk->ts = now;
        struct fb_value v = {.type = FB_T_BLOCK, .blk = blk};
        fb_batch_add(out, t->id, FB_Q_GOOD, now, &v);
        fb_block_unref(blk);
    }
    fd->pos = (fd->pos + n) % (fd->loop ? fd->frames : UINT64_MAX);
    int64_t rtt = fb_mono_ns() - t0;
    atomic_fetch_add(&dev->m.rtt_ns_sum, (uint64_t)rtt);
    atomic_fetch_add(&dev->m.rtt_count, 1);
    atomic_store(&dev->m.rtt_ns_last, (uint64_t)rtt);
    atomic_store(&dev->m.last_success_ns, now);
    return 0;
}

static int file_write(struct fb_device *dev, const struct fb_tag *t, const struct fb_value *v, struct fb_err *err)
{
    (void)v;
    return fb_err_set(err, FB_EACCES, "%s: a recording cannot be written", fb_tag_path(dev->gw, t));
}

const struct fb_driver fb_driver_file = {
    .name = "file",
    .schemes = file_schemes,
    .device_init = file_device_init,
    .device_free = file_device_free,
    .parse_address = file_parse_address,
    .free_address = file_free_address,
    .plan = file_plan,
    .plan_free = file_plan_free,
    .open = file_open,
    .read = file_read,
    .write = file_write,
    .close = file_close,
};
