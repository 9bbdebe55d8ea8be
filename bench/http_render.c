/* http_render.c — the gateway's own cost of GET /api/v1/values for N tags
 * (default 10,000), measured in the thread that renders it: the request
 * handler (handler.c) on a gateway loaded from a generated config, every
 * tag with a live value, rendered R times.  Thread CPU time
 * (CLOCK_THREAD_CPUTIME_ID) is what the HTTP thread spends and does not
 * depend on how busy the machine is; wall time is printed beside it.
 *
 *   http_render [TAGS] [REPEAT]   → one JSON line
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/batch.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "north/http/handler.h"

static double ms(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int ntags = argc > 1 ? atoi(argv[1]) : 10000, rep = argc > 2 ? atoi(argv[2]) : 200;
    int ndev = 10, per = ntags / ndev;
    if (ntags < ndev || rep < 1) return 2;
    fb_log_init(FB_LOG_ERROR, FB_LOG_TEXT);
    struct fb_buf y;
    fb_buf_init(&y);
    fb_buf_puts(&y, "gateway: {id: bench}\ndevices:\n");
    for (int d = 0; d < ndev; d++) {
        fb_buf_printf(&y, "  - name: d%d\n    url: \"sim://d%d\"\n    tags:\n", d, d);
        for (int k = 0; k < per; k++)
            fb_buf_printf(&y, "      - {name: t%d, addr: \"sine:amp=100,period=%ds\", unit: bar}\n", k, 10 + k % 50);
    }
    struct fb_gateway *gw = NULL;
    struct fb_config_opts o = {false, stderr};
    if (fb_config_load_mem("bench.yaml", y.p, y.len, &o, &gw) != 0) return 1;
    fb_buf_free(&y);
    struct fb_http_cfg cfg = {.max_body = 1 << 20, .anonymous = FB_ROLE_VIEWER};
    struct fb_http_api api = {.gw = gw, .cfg = &cfg};
    pthread_mutex_init(&api.tokens_mu, NULL);
    api.live = fb_live_new(gw, 1 << 20);
    for (uint32_t d = 0; d < gw->ndevs; d++) { /* every tag a value, as after one poll */
        struct fb_device *dv = &gw->devs[d];
        struct fb_batch *b = fb_batch_new(dv->ntags, 0, 0);
        b->device = d;
        b->ts = 1764324000123000000LL;
        for (uint32_t i = 0; i < dv->ntags; i++) {
            struct fb_value v = {.type = FB_T_FLOAT64, .f = 12.345678901 * (i + 1)};
            fb_batch_add(b, dv->first_tag + i, FB_Q_GOOD, b->ts + i * 1000, &v);
        }
        fb_live_update(api.live, b);
        fb_batch_free(b);
    }
    struct fb_buf body;
    fb_buf_init(&body);
    struct fb_http_req rq = {.method = "GET", .path = "/api/v1/values"};
    double *cpu = malloc(sizeof(double) * (size_t)rep), *wall = malloc(sizeof(double) * (size_t)rep);
    size_t bytes = 0;
    for (int i = 0; i < rep; i++) {
        struct fb_http_resp rs = {.body = &body};
        double c0 = ms(CLOCK_THREAD_CPUTIME_ID), w0 = ms(CLOCK_MONOTONIC);
        fb_http_handle(&api, &rq, &rs);
        cpu[i] = ms(CLOCK_THREAD_CPUTIME_ID) - c0;
        wall[i] = ms(CLOCK_MONOTONIC) - w0;
        if (rs.status != 200) return 1;
        bytes = body.len;
    }
    qsort(cpu, (size_t)rep, sizeof *cpu, cmp);
    qsort(wall, (size_t)rep, sizeof *wall, cmp);
    printf("{\"tags\":%u,\"repeat\":%d,\"bytes\":%zu,\"cpu_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
           "\"wall_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
           gw->ntags, rep, bytes, cpu[rep / 2], cpu[rep * 99 / 100], cpu[rep - 1], wall[rep / 2], wall[rep * 99 / 100],
           wall[rep - 1]);
    free(cpu);
    free(wall);
    fb_buf_free(&body);
    fb_live_free(api.live);
    pthread_mutex_destroy(&api.tokens_mu);
    fb_gateway_free(gw);
    return 0;
}
