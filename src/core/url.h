/* url.h — device and broker URLs (url.c): scheme://host:port/path?k=v. */
#ifndef FB_URL_H
#define FB_URL_H
#include "core/fb.h"

/* A URL parsed once: scheme://host:port/path?k=v&k=v */
struct fb_url_kv {
    char *k, *v;
};
struct fb_url {
    char *scheme, *host, *path;
    int port; /* 0 when absent */
    struct fb_url_kv *q;
    int nq;
};

int fb_url_parse(const char *text, struct fb_url *u, struct fb_err *err);
void fb_url_free(struct fb_url *u);
const char *fb_url_get(const struct fb_url *u, const char *k); /* NULL if absent */
#endif
