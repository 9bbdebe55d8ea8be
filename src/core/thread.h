/* thread.h — the few threading helpers every thread of the gateway uses
 * (thread.c): condition variables on the monotonic clock, so timed waits
 * are immune to wall-clock steps (NTP, an operator setting the date). */
#ifndef FB_THREAD_H
#define FB_THREAD_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* A condition variable whose timed waits use CLOCK_MONOTONIC deadlines. */
void fb_cond_init_mono(pthread_cond_t *cv);
/* Wait on cv (mu held) until signalled or the monotonic deadline (ns) has
 * passed; false on time-out. */
bool fb_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_mono_ns);
/* Name the calling thread "kind:name" (cut to the 15 bytes Linux keeps), as
 * top -H, ps -L and /proc/<pid>/task/<tid>/comm show it. */
void fb_thread_name(const char *kind, const char *name);
#endif
