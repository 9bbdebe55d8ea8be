/* sdwatch.c — READY, STATUS, WATCHDOG and STOPPING for systemd.
 *
 * systemd restarts a Type=notify service with WatchdogSec= when WATCHDOG=1
 * stops arriving.  A thread that pets on a timer proves only that the timer
 * thread runs; so this thread pets only after core/live.c has found every
 * connection and sink thread alive (each came around its loop within its
 * stall limit, `stall_timeout:`).  A wedged gateway — a deadlock, a driver
 * call that never returns — thus stops the pings and systemd restarts it
 * WatchdogSec later; a gateway whose devices or broker are away keeps
 * pinging (that is store-and-forward's business, not a restart's).
 *
 * The thread wakes every WATCHDOG_USEC/2 (systemd's advice), or every 2 s
 * for STATUS= alone when the unit has no watchdog, and sends STATUS= when
 * the text changed.  libsystemd is used through sdnotify.c.
 */
#include "core/sdwatch.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/live.h"
#include "core/log.h"
#include "core/runtime_state.h"
#include "core/sdnotify.h"
#include "core/thread.h"
#include "store/store.h"

struct fb_sdwatch {
    struct fb_gateway *gw;
    pthread_t thr;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool watchdog;     /* the unit has WatchdogSec= */
    int64_t period_ns; /* WATCHDOG_USEC/2, or the status period */
    char last[256];    /* the last STATUS= sent */
};

void fb_sdwatch_status(struct fb_gateway *gw, char *out, size_t len)
{
    uint32_t online = 0;
    for (uint32_t i = 0; i < gw->ndevs; i++)
        if (atomic_load(&gw->devs[i].state) == FB_DEV_ONLINE) online++;
    uint64_t records = 0;
    for (uint32_t i = 0; i < gw->nsinks; i++)
        if (gw->sinks[i].rt && gw->sinks[i].rt->store) records += fb_store_live(gw->sinks[i].rt->store);
    snprintf(out, len, "%u/%u devices connected, buffer %" PRIu64 " records", online, gw->ndevs, records);
}

static void send_status(struct fb_sdwatch *w, const char *text)
{
    if (!strcmp(text, w->last)) return;
    snprintf(w->last, sizeof w->last, "%s", text);
    char msg[300];
    snprintf(msg, sizeof msg, "STATUS=%s", text);
    fb_sd_notify(msg);
}

static void *sdwatch_thread(void *arg)
{
    struct fb_sdwatch *w = arg;
    bool stalled_before = false;
    int64_t next = fb_mono_ns();
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        int64_t now = fb_mono_ns();
        if (now < next) {
            fb_cond_wait_until(&w->cv, &w->mu, next);
            continue;
        }
        next = now + w->period_ns;
        pthread_mutex_unlock(&w->mu);
        char who[96] = "", status[256];
        int64_t silent = 0;
        int stalled = fb_live_check(now, who, sizeof who, &silent);
        fb_sdwatch_status(w->gw, status, sizeof status);
        if (stalled) {
            size_t n = strlen(status);
            snprintf(status + n, sizeof status - n, "; STALLED: %s (%d thread%s, silent %.0f s)", who, stalled,
                     stalled == 1 ? "" : "s", silent / 1e9);
            if (!stalled_before)
                fb_error(NULL, NULL, "watchdog: %s has not come back for %.0f s (%d stalled thread%s)%s", who,
                         silent / 1e9, stalled, stalled == 1 ? "" : "s",
                         w->watchdog ? "; WATCHDOG=1 withheld, systemd will restart the gateway" : "");
        } else {
            if (stalled_before) fb_warn(NULL, NULL, "watchdog: every thread is running again");
            if (w->watchdog) fb_sd_notify("WATCHDOG=1");
        }
        stalled_before = stalled > 0;
        send_status(w, status);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

struct fb_sdwatch *fb_sdwatch_start(struct fb_gateway *gw)
{
    if (!getenv("NOTIFY_SOCKET")) return NULL;
    if (fb_sd_notify("READY=1") < 0) {
        fb_error(NULL, NULL, "systemd: cannot send READY=1 (a Type=notify unit will time out)");
        return NULL;
    }
    struct fb_sdwatch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->gw = gw;
    uint64_t usec = 0;
    w->watchdog = fb_sd_watchdog(&usec);
    w->period_ns = w->watchdog ? (int64_t)usec * 1000 / 2 : 2000000000LL;
    if (w->period_ns < 1000000) w->period_ns = 1000000;
    pthread_mutex_init(&w->mu, NULL);
    fb_cond_init_mono(&w->cv);
    if (pthread_create(&w->thr, NULL, sdwatch_thread, w) != 0) {
        fb_error(NULL, NULL, "systemd: cannot start the watchdog thread");
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
        return NULL;
    }
    if (w->watchdog)
        fb_info(NULL, NULL, "systemd watchdog: WATCHDOG=1 every %.3g s while every thread is alive",
                w->period_ns / 1e9);
    return w;
}

void fb_sdwatch_stop(struct fb_sdwatch *w)
{
    fb_sd_notify("STOPPING=1");
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thr, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
