/* mhd.c — libmicrohttpd's entry points, resolved with dlopen()/dlsym() the
 * first time an HTTP daemon starts (mhd.h says why it is not linked). */
#include "north/http/mhd.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/env.h"

struct fb_mhd_api fb_mhd;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* Symbol names and where each goes, in one table. */
static const struct {
    const char *name;
    size_t off;
} syms[] = {
#define S(field, sym)                                                                                                  \
    {                                                                                                                  \
        sym, offsetof(struct fb_mhd_api, field)                                                                        \
    }
    S(start_daemon, "MHD_start_daemon"),
    S(stop_daemon, "MHD_stop_daemon"),
    S(create_response_from_buffer, "MHD_create_response_from_buffer"),
    S(create_response_from_callback, "MHD_create_response_from_callback"),
    S(add_response_header, "MHD_add_response_header"),
    S(queue_response, "MHD_queue_response"),
    S(destroy_response, "MHD_destroy_response"),
    S(get_daemon_info, "MHD_get_daemon_info"),
    S(get_connection_info, "MHD_get_connection_info"),
    S(get_connection_values, "MHD_get_connection_values"),
    S(lookup_connection_value, "MHD_lookup_connection_value"),
    S(suspend_connection, "MHD_suspend_connection"),
    S(resume_connection, "MHD_resume_connection"),
    S(is_feature_supported, "MHD_is_feature_supported"),
#undef S
};

static int load_locked(const char *who, struct fb_err *err)
{
    if (fb_mhd.lib) return 0;
    static const char *const names[] = {"libmicrohttpd.so.12", "libmicrohttpd.so"};
    void *lib = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return fb_err_set(err, FB_ENOENT, "%s: cannot load libmicrohttpd (apt install libmicrohttpd12): %s", who,
                          dlerror());
    struct fb_mhd_api api = {.lib = lib};
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *p = dlsym(lib, syms[i].name);
        if (!p) {
            dlclose(lib);
            return fb_err_set(err, FB_ENOENT, "%s: libmicrohttpd lacks %s", who, syms[i].name);
        }
        *(void **)(void *)((char *)&api + syms[i].off) = p;
    }
    fb_mhd = api;
    return 0;
}

int fb_mhd_load(const char *who, struct fb_err *err)
{
    pthread_mutex_lock(&mu);
    int rc = load_locked(who, err);
    pthread_mutex_unlock(&mu);
    return rc;
}

int fb_mhd_tls_load(struct fb_mhd_tls *t, const char *cert, const char *key, const char *what, struct fb_err *err)
{
    memset(t, 0, sizeof *t);
    if (fb_mhd.is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return fb_err_set(err, FB_ENOTSUP, "%s: this libmicrohttpd has no TLS support", what);
    FILE *f = fopen(cert, "rb");
    if (!f) return fb_err_set(err, FB_ENOENT, "%s: cannot open %s: %s", what, cert, strerror(errno));
    struct fb_buf b;
    fb_buf_init(&b);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0 && b.len < (1u << 20)) fb_buf_put(&b, tmp, n);
    fclose(f);
    fb_buf_cstr(&b);
    if (!b.p) return fb_err_set(err, FB_ENOMEM, "out of memory");
    t->cert_pem = b.p;
    int rc = fb_read_secret_file(key, &t->key_pem, err);
    if (rc < 0) fb_mhd_tls_free(t);
    return rc;
}

void fb_mhd_tls_free(struct fb_mhd_tls *t)
{
    if (t->key_pem) {
        explicit_bzero(t->key_pem, strlen(t->key_pem));
        free(t->key_pem);
    }
    free(t->cert_pem);
    memset(t, 0, sizeof *t);
}
