/* bench_util.h — what the stand-alone benchmark programs share: clocks, CPU
 * time, condition-variable deadlines, and the PUBACK counting of the
 * libmosquitto publishers (e2e_minimal, mosq_ingest, tele_pub), so that every
 * reference loop is timed and acknowledged the same way as the others.
 * Header-only: each benchmark is one translation unit.
 */
#ifndef FB_BENCH_UTIL_H
#define FB_BENCH_UTIL_H

#include <pthread.h>
#include <stdint.h>
#include <sys/resource.h>
#include <time.h>

static inline double bench_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int64_t bench_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* user + system CPU seconds of this process */
static inline double bench_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

/* an absolute CLOCK_REALTIME deadline for pthread_cond_timedwait */
static inline void bench_deadline(struct timespec *ts, double from_now)
{
    clock_gettime(CLOCK_REALTIME, ts);
    long long ns = ts->tv_nsec + (long long)(from_now * 1e9);
    ts->tv_sec += (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
}

static inline int bench_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

#ifdef LIBMOSQUITTO_MAJOR
/* The acknowledgements of a QoS 1 publisher: passed as the client's userdata
 * (mosquitto_new(id, true, &acks)); the publishing loop waits on cv. */
struct bench_acks {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned long long n_acked;
    int connected; /* -1 pending, 0 refused, 1 ok */
};
#define BENCH_ACKS_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, -1}

static inline void bench_on_connect(struct mosquitto *m, void *ud, int rc)
{
    (void)m;
    struct bench_acks *a = ud;
    pthread_mutex_lock(&a->mu);
    a->connected = rc == 0 ? 1 : 0;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static inline void bench_on_publish(struct mosquitto *m, void *ud, int mid)
{
    (void)m;
    (void)mid;
    struct bench_acks *a = ud;
    pthread_mutex_lock(&a->mu);
    a->n_acked++;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}
#endif

#endif
