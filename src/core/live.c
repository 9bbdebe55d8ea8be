/* live.c — the registry of watched threads and the stall test (live.h).
 * The registry is a list of records owned by the threads themselves (in
 * their runtime state), under one mutex: threads enter and leave it at start
 * and exit, the checker (systemd watchdog thread, /metrics) walks it. */
#include "core/live.h"

#include <pthread.h>
#include <stdio.h>

#include "core/fb.h"

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct fb_live *reg_head;
static _Thread_local struct fb_live *self;

#define FB_LIVE_DEFAULT_LIMIT 60000000000LL

void fb_live_enter(struct fb_live *l, const char *name, int64_t limit_ns)
{
    snprintf(l->name, sizeof l->name, "%s", name ? name : "thread");
    l->limit_ns = limit_ns > 0 ? limit_ns : FB_LIVE_DEFAULT_LIMIT;
    atomic_store(&l->at, fb_mono_ns());
    atomic_store(&l->until, 0);
    pthread_mutex_lock(&reg_mu);
    if (!l->registered) {
        l->next = reg_head;
        reg_head = l;
        l->registered = 1;
    }
    pthread_mutex_unlock(&reg_mu);
    self = l;
}

void fb_live_leave(void)
{
    struct fb_live *l = self;
    if (!l) return;
    pthread_mutex_lock(&reg_mu);
    for (struct fb_live **p = &reg_head; *p; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            break;
        }
    l->registered = 0;
    pthread_mutex_unlock(&reg_mu);
    self = NULL;
}

void fb_live_beat(int64_t now)
{
    struct fb_live *l = self;
    if (!l) return;
    /* `at` before `until`: a checker that sees until == 0 sees this beat's time */
    atomic_store(&l->at, now ? now : fb_mono_ns());
    atomic_store(&l->until, 0);
}

void fb_live_idle(int64_t until)
{
    struct fb_live *l = self;
    if (l) atomic_store(&l->until, until ? until : 1);
}

int64_t fb_live_overdue(const struct fb_live *l, int64_t now)
{
    int64_t until = atomic_load(&l->until);
    if (until == FB_LIVE_WAITING) return 0;
    int64_t from = atomic_load(&l->at);
    if (until > from) from = until; /* asleep: it is due back at `until` */
    int64_t late = now - from - l->limit_ns;
    return late > 0 ? late : 0;
}

int fb_live_check(int64_t now, char *who, size_t wholen, int64_t *silent_ns)
{
    int n = 0;
    int64_t worst = 0;
    pthread_mutex_lock(&reg_mu);
    for (struct fb_live *l = reg_head; l; l = l->next) {
        int64_t late = fb_live_overdue(l, now);
        if (!late) continue;
        n++;
        if (late > worst) {
            worst = late;
            if (who && wholen) snprintf(who, wholen, "%s", l->name);
            if (silent_ns) *silent_ns = late + l->limit_ns;
        }
    }
    pthread_mutex_unlock(&reg_mu);
    return n;
}
