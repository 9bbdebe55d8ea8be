/* bench_edge.c — what computed tags and Lua scripts cost (issue 18,
 * BENCHMARKS.md "Edge: expressions and scripts").
 *
 *   1. expr: the expression evaluator alone, three expressions of the kinds
 *      the docs show, vars changing every call (so nothing folds away);
 *      evaluations per second of this thread's CPU time.
 *   2. edge: the whole edge path inside a running gateway (fb_runtime_start
 *      on a generated config, no sinks): a sim device polled as fast as it
 *      goes with K input tags and C expression tags over them; each batch
 *      updates the value table, marks, evaluates the C expressions with the
 *      quality rule, runs the pipeline stages on the results and publishes
 *      them.  Evaluations per second of the edge thread's CPU time (read
 *      from /proc/self/task/<tid>/stat of the thread named fb-edge).
 *   3. lua: fb_lua_batch per batch for batch sizes 1, 10, 100 and three
 *      on_batch bodies (empty; read 3 values and set 1 output; a loop over
 *      every value), microseconds per batch of this thread's CPU time.
 *
 *   bench_edge [--seconds S] [--only expr|edge|lua]
 */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/runtime.h"
#include "edge/expr.h"
#include "edge/script.h"

static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------- 1. expr */
static int resolve(void *ctx, const char *name, size_t len, bool quoted, struct fb_err *err)
{
    (void)ctx;
    (void)quoted;
    if (len == 1 && name[0] >= 'a' && name[0] <= 'c') return name[0] - 'a';
    return fb_err_set(err, FB_ENOENT, "no");
}

static void bench_expr(double seconds)
{
    static const char *const srcs[] = {
        "(a - b) * c * 4.186",
        "if(a > b, sqrt(a * a + b * b), min(a, b, c)) / 2",
        "a > 80 and not (b < 5 or c == 0)",
    };
    printf("expr: evaluator alone (one thread)\n");
    for (size_t k = 0; k < sizeof srcs / sizeof srcs[0]; k++) {
        struct fb_expr *e;
        struct fb_err err;
        if (fb_expr_compile(srcs[k], resolve, NULL, &e, &err)) {
            fprintf(stderr, "%s: %s\n", srcs[k], err.msg);
            exit(1);
        }
        double vars[3] = {70.5, 45.25, 2.5}, sink = 0;
        uint64_t n = 0;
        double c0 = cpu(), c1;
        do {
            for (int i = 0; i < 100000; i++) {
                vars[0] = 60 + (double)(i & 63);
                vars[2] = (double)(i & 7);
                sink += fb_expr_eval(e, vars);
            }
            n += 100000;
            c1 = cpu();
        } while (c1 - c0 < seconds);
        printf("  %-52s %3u instructions  %7.1f M evaluations/s  %6.1f ns each  (%g)\n", srcs[k], fb_expr_size(e),
               n / (c1 - c0) / 1e6, (c1 - c0) / n * 1e9, sink > 0 ? 1.0 : 0.0);
        fb_expr_free(e);
    }
}

/* ------------------------------------------------------------- 2. edge */
/* CPU seconds of this process's thread named `name` (0 when not found). */
static double thread_cpu(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    if (!d) return 0;
    struct dirent *de;
    double out = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[300], buf[512];
        snprintf(p, sizeof p, "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(p, "r");
        if (!f) continue;
        bool hit = fgets(buf, sizeof buf, f) && !strncmp(buf, name, strlen(name));
        fclose(f);
        if (!hit) continue;
        snprintf(p, sizeof p, "/proc/self/task/%s/stat", de->d_name);
        f = fopen(p, "r");
        if (!f) continue;
        if (fgets(buf, sizeof buf, f)) {
            char *q = strrchr(buf, ')');
            unsigned long long ut = 0, st = 0;
            if (q && sscanf(q + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
                out = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        }
        fclose(f);
    }
    closedir(d);
    return out;
}

static void bench_edge_path(double seconds, int k_in, int c_out)
{
    char path[] = "/tmp/fb_bench_edge_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "gateway: {id: bench}\nlog: {level: warn}\ndevices:\n"
               "  - name: src\n    url: \"sim://s\"\n    poll: 1us\n    tags:\n");
    for (int i = 0; i < k_in; i++) fprintf(f, "      - {name: in%d, addr: \"counter:start=%d\"}\n", i, i);
    fprintf(f, "  - name: calc\n    tags:\n");
    for (int i = 0; i < c_out; i++)
        fprintf(f, "      - {name: out%d, expr: \"('src/in%d' - 'src/in%d') * 4.186 + %d\"}\n", i, i % k_in,
                (i + 1) % k_in, i);
    fclose(f);
    struct fb_gateway *gw = NULL;
    FILE *devnull = fopen("/dev/null", "w");
    struct fb_config_opts o = {.strict = false, .diag = devnull};
    if (fb_config_load(path, &o, &gw) < 0) {
        fprintf(stderr, "config failed\n");
        exit(1);
    }
    fclose(devnull);
    unlink(path);
    fb_log_init(FB_LOG_WARN, FB_LOG_TEXT);
    struct fb_err err = {0};
    if (fb_runtime_start(gw, &err) < 0) {
        fprintf(stderr, "start: %s\n", err.msg);
        exit(1);
    }
    usleep(300000);
    uint64_t b0 = atomic_load(&gw->devs[0].m.requests);
    double e0 = thread_cpu("fb-edge");
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    uint64_t b1 = atomic_load(&gw->devs[0].m.requests);
    double e1 = thread_cpu("fb-edge");
    fb_runtime_request_stop(gw);
    fb_runtime_wait(gw);
    double batches = (double)(b1 - b0), evals = batches * c_out, ecpu = e1 - e0;
    printf("  %3d inputs, %3d expression tags: %8.0f batches/s in, edge thread %4.0f %% busy, "
           "%6.2f M evaluations per edge CPU-second (%5.0f ns each, everything included)\n",
           k_in, c_out, batches / seconds, 100 * ecpu / seconds, ecpu > 0 ? evals / ecpu / 1e6 : 0,
           evals > 0 ? ecpu / evals * 1e9 : 0);
    fb_gateway_free(gw);
}

/* -------------------------------------------------------------- 3. lua */
static struct fb_tag ltags[101];
static struct fb_device ldev;
static struct fb_gateway lgw;
static uint32_t lout[1] = {100};

static bool lget(void *edge, uint32_t tag, struct fb_value *v, uint32_t *q, int64_t *ts)
{
    (void)edge;
    v->type = FB_T_FLOAT64;
    v->f = tag;
    *q = FB_Q_GOOD;
    *ts = 0;
    return true;
}

static double lsink;
static void lset(void *edge, uint32_t tag, const struct fb_value *v, uint32_t q)
{
    (void)edge;
    (void)tag;
    (void)q;
    lsink += v->f;
}

static void bench_lua(double seconds)
{
    static char names[101][16];
    for (int i = 0; i < 101; i++) {
        snprintf(names[i], sizeof names[i], i == 100 ? "out" : "t%d", i);
        ltags[i] = (struct fb_tag){.id = (uint32_t)i, .type = FB_T_FLOAT64, .name = names[i]};
    }
    ldev = (struct fb_device){.name = "m", .ntags = 101, .gw = &lgw};
    lgw = (struct fb_gateway){.devs = &ldev, .ndevs = 1, .tags = ltags, .ntags = 101};
    static const char *const bodies[][2] = {
        {"empty", "function on_batch(d) end"},
        {"3 reads, 1 set", "function on_batch(d) local v = d.values fb.set('out', (v.t0 or 0) + (v.t1 or 0) - "
                           "(v.t2 or 0)) end"},
        {"loop over all", "function on_batch(d) local s = 0 for k, x in pairs(d.values) do s = s + x end "
                          "fb.set('out', s) end"},
    };
    static const int sizes[] = {1, 10, 100};
    printf("lua: fb_lua_batch per batch (one thread; the device table is kept and updated in place)\n");
    for (size_t b = 0; b < sizeof bodies / sizeof bodies[0]; b++) {
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            struct fb_script s = {.name = "bench",
                                  .device = 0,
                                  .outputs = lout,
                                  .nout = 1,
                                  .max_instructions = 100000000,
                                  .max_time_ns = 1000000000LL,
                                  .max_memory = 64u << 20};
            s.source = (char *)bodies[b][1];
            s.source_len = strlen(s.source);
            struct fb_script_env env = {.gw = &lgw, .get = lget, .set = lset};
            struct fb_err err;
            struct fb_lua *x = fb_lua_new(&s, &env, &err);
            if (!x) {
                fprintf(stderr, "lua: %s\n", err.msg);
                exit(1);
            }
            struct fb_batch *bt = fb_batch_new(100, 0, 0);
            bt->device = 0;
            uint64_t n = 0;
            double c0 = cpu(), c1;
            do {
                for (int r = 0; r < 1000; r++) {
                    fb_batch_reset(bt);
                    bt->device = 0;
                    bt->ts = 1700000000000000000LL + (int64_t)n * 1000000;
                    for (int i = 0; i < sizes[z]; i++) {
                        struct fb_value v = {.type = FB_T_FLOAT64, .f = (double)(n + (uint64_t)i)};
                        fb_batch_add(bt, (uint32_t)i, FB_Q_GOOD, bt->ts, &v);
                    }
                    const char *why;
                    if (fb_lua_batch(x, bt, &why)) {
                        fprintf(stderr, "lua failed: %s\n", why);
                        exit(1);
                    }
                    n++;
                }
                c1 = cpu();
            } while (c1 - c0 < seconds / 3);
            printf("  %-15s %3d values/batch: %7.2f us per batch  (%7.0f batches/s, Lua heap %zu KiB)\n", bodies[b][0],
                   sizes[z], (c1 - c0) / n * 1e6, n / (c1 - c0), fb_lua_memory(x) / 1024);
            fb_batch_free(bt);
            fb_lua_free(x);
        }
    }
}

int main(int argc, char **argv)
{
    double seconds = 2;
    const char *only = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seconds"))
            seconds = strtod(argv[i + 1], NULL);
        else if (!strcmp(argv[i], "--only"))
            only = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_edge [--seconds S] [--only expr|edge|lua]\n");
            return 2;
        }
    }
    if (!only || !strcmp(only, "expr")) bench_expr(seconds);
    if (!only || !strcmp(only, "edge")) {
        printf("edge: the edge thread in a running gateway (sim device polled as fast as it goes, no sinks)\n");
        bench_edge_path(seconds, 10, 10);
        bench_edge_path(seconds, 100, 100);
        bench_edge_path(seconds, 100, 1000);
    }
    if (!only || !strcmp(only, "lua")) bench_lua(seconds);
    return 0;
}
