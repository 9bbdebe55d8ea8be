/* curl_dl.c — libcurl loaded on first use (why: curl_dl.h). */
#include "core/curl_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

struct fb_curl fb_curl;
static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool loaded;

int fb_curl_load(struct fb_err *err)
{
    if (atomic_load_explicit(&loaded, memory_order_acquire)) return 0;
    pthread_mutex_lock(&load_mu);
    if (atomic_load_explicit(&loaded, memory_order_relaxed)) {
        pthread_mutex_unlock(&load_mu);
        return 0;
    }
    struct fb_curl c;
    memset(&c, 0, sizeof c);
    c.lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!c.lib) {
        pthread_mutex_unlock(&load_mu);
        return fb_err_set(err, FB_ENOENT, "cannot load libcurl (apt install libcurl4): %s", dlerror());
    }
    static const struct {
        const char *sym;
        size_t off;
    } fns[] = {
#define F(field) {"curl_" #field, offsetof(struct fb_curl, field)}
        F(global_init),      F(easy_init),       F(easy_setopt),         F(easy_perform),   F(easy_getinfo),
        F(easy_cleanup),     F(easy_strerror),   F(easy_escape),         F(free),           F(slist_append),
        F(slist_free_all),   F(multi_init),      F(multi_add_handle),    F(multi_remove_handle),
        F(multi_perform),    F(multi_info_read), F(multi_poll),          F(multi_wakeup),   F(multi_cleanup),
#undef F
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        void *f = dlsym(c.lib, fns[i].sym);
        if (!f) {
            dlclose(c.lib);
            pthread_mutex_unlock(&load_mu);
            return fb_err_set(err, FB_ENOENT, "libcurl lacks %s (libcurl 7.85 or later is needed)", fns[i].sym);
        }
        memcpy((char *)&c + fns[i].off, &f, sizeof f);
    }
    c.global_init(CURL_GLOBAL_DEFAULT);
    fb_curl = c;
    atomic_store_explicit(&loaded, true, memory_order_release);
    pthread_mutex_unlock(&load_mu);
    return 0;
}
