/* mhd.h — libmicrohttpd, loaded on demand (mhd.c), shared by the metrics
 * endpoint (http.c) and the HTTP API (api.c).
 *
 * The library is dlopen()ed when a daemon is first started, not linked:
 * Debian builds it against GnuTLS, whose libraries cost about 2.3 MB of
 * resident memory at start-up, for gateways that never enable HTTP.  The
 * headers still come from libmicrohttpd-dev.  After fb_mhd_load() returned 0
 * the entry points in fb_mhd never change again (set once, under a lock). */
#ifndef FB_MHD_H
#define FB_MHD_H
#include <microhttpd.h>

#include "core/fb.h"

struct fb_mhd_api {
    void *lib;
    __typeof__(MHD_start_daemon) *start_daemon;
    __typeof__(MHD_stop_daemon) *stop_daemon;
    __typeof__(MHD_create_response_from_buffer) *create_response_from_buffer;
    __typeof__(MHD_create_response_from_callback) *create_response_from_callback;
    __typeof__(MHD_add_response_header) *add_response_header;
    __typeof__(MHD_queue_response) *queue_response;
    __typeof__(MHD_destroy_response) *destroy_response;
    __typeof__(MHD_get_daemon_info) *get_daemon_info;
    __typeof__(MHD_get_connection_info) *get_connection_info;
    __typeof__(MHD_get_connection_values) *get_connection_values;
    __typeof__(MHD_lookup_connection_value) *lookup_connection_value;
    __typeof__(MHD_suspend_connection) *suspend_connection;
    __typeof__(MHD_resume_connection) *resume_connection;
    __typeof__(MHD_is_feature_supported) *is_feature_supported;
};
extern struct fb_mhd_api fb_mhd;

/* Load the library once; `who` names the caller in the error ("metrics"). */
int fb_mhd_load(const char *who, struct fb_err *err);

/* TLS for a daemon (MHD_USE_TLS with MHD_OPTION_HTTPS_MEM_CERT/_KEY and
 * FB_MHD_TLS_PRIORITIES): the PEM texts of the certificate (chain) and of
 * its private key, read with the secret-file rules (core/env.h: owner-only,
 * noted as a secret).  After fb_mhd_load; `what` names the config section
 * in errors ("http.tls").  Fails too when this libmicrohttpd has no TLS. */
struct fb_mhd_tls {
    char *cert_pem, *key_pem;
};
#define FB_MHD_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
int fb_mhd_tls_load(struct fb_mhd_tls *t, const char *cert, const char *key, const char *what, struct fb_err *err);
void fb_mhd_tls_free(struct fb_mhd_tls *t); /* wipes the key; zeroed after */
#endif
