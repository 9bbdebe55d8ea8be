/* curl_dl.h — libcurl, loaded with dlopen() the first time something needs
 * it (a remote configuration or OTA download, the InfluxDB sink), not linked.
 *
 * Why: Debian's libcurl4 brings Kerberos, LDAP, SSH, RTMP (with GnuTLS), PSL
 * and HTTP/2 libraries with it — about 3.5 MB of resident pages and 25 shared
 * objects that a Modbus-to-MQTT gateway would otherwise map and relocate at
 * every start (BENCHMARKS.md, issue 15).  The metrics endpoint does the same
 * with libmicrohttpd.  The headers come from libcurl4-openssl-dev; the
 * package depends on libcurl4 by name (dpkg-shlibdeps cannot see a dlopen).
 */
#ifndef FB_CURL_DL_H
#define FB_CURL_DL_H

#include <curl/curl.h>

#include "core/fb.h"

/* The functions fieldbridge uses, valid once fb_curl_load() returned 0 (in
 * this thread, or before the thread that uses them was created). */
struct fb_curl {
    void *lib;
    CURLcode (*global_init)(long);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_perform)(CURL *);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    void (*easy_cleanup)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    char *(*easy_escape)(CURL *, const char *, int);
    void (*free)(void *);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_add_handle)(CURLM *, CURL *);
    CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
    CURLMcode (*multi_perform)(CURLM *, int *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    CURLMcode (*multi_poll)(CURLM *, struct curl_waitfd *, unsigned int, int, int *);
    CURLMcode (*multi_wakeup)(CURLM *);
    CURLMcode (*multi_cleanup)(CURLM *);
};
extern struct fb_curl fb_curl;

/* Load libcurl.so.4 and run curl_global_init once (thread-safe; later calls
 * return at once).  0, or FB_ENOENT with what to install in err. */
int fb_curl_load(struct fb_err *err);
#endif
