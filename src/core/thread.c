/* thread.c — condition variables on the monotonic clock (thread.h). */
#include "core/thread.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

void fb_cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

void fb_thread_name(const char *kind, const char *name)
{
    char n[16];
    snprintf(n, sizeof n, "%s:%s", kind, name ? name : "");
    pthread_setname_np(pthread_self(), n);
}

bool fb_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_mono_ns)
{
    struct timespec ts = {.tv_sec = deadline_mono_ns / 1000000000LL, .tv_nsec = deadline_mono_ns % 1000000000LL};
    return pthread_cond_timedwait(cv, mu, &ts) != ETIMEDOUT;
}
