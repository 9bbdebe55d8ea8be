/* sdnotify.c — systemd notifications through a libsystemd loaded on demand
 * (see sdnotify.h for why dlopen).  The resolved entry points are set once
 * under a lock and never change. */
#include "core/sdnotify.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "core/log.h"

static struct {
    pthread_mutex_t mu;
    bool tried;
    void *lib;
    __typeof__(sd_notify) *notify;
    __typeof__(sd_watchdog_enabled) *watchdog_enabled;
} sd = {.mu = PTHREAD_MUTEX_INITIALIZER};

static bool sd_load(void)
{
    pthread_mutex_lock(&sd.mu);
    if (!sd.tried) {
        sd.tried = true;
        sd.lib = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
        if (sd.lib) {
            *(void **)&sd.notify = dlsym(sd.lib, "sd_notify");
            *(void **)&sd.watchdog_enabled = dlsym(sd.lib, "sd_watchdog_enabled");
        }
        if (!sd.notify || !sd.watchdog_enabled)
            fb_error(NULL, NULL, "systemd asked for notifications but libsystemd.so.0 cannot be loaded (%s)",
                     sd.lib ? "symbols missing" : dlerror());
    }
    bool ok = sd.notify && sd.watchdog_enabled;
    pthread_mutex_unlock(&sd.mu);
    return ok;
}

int fb_sd_notify(const char *state)
{
    if (!getenv("NOTIFY_SOCKET")) return 0;
    if (!sd_load()) return -1;
    int rc = sd.notify(0, state);
    return rc > 0 ? 1 : rc;
}

bool fb_sd_watchdog(uint64_t *usec)
{
    if (!getenv("WATCHDOG_USEC") || !getenv("NOTIFY_SOCKET")) return false;
    if (!sd_load()) return false;
    uint64_t u = 0;
    if (sd.watchdog_enabled(0, &u) <= 0 || u == 0) return false;
    *usec = u;
    return true;
}
