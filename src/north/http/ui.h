/* ui.h — the files of the built-in web page (src/north/http/ui/) and the
 * OpenAPI description, embedded in the binary at build time: CMake turns
 * each file into a byte array (cmake/embed.cmake → build/gen/ui_files.c),
 * so the page needs no files at run time and nothing from the internet. */
#ifndef FB_HTTP_UI_H
#define FB_HTTP_UI_H
#include <stddef.h>

struct fb_ui_file {
    const char *path;  /* the URL path it is served at: "/", "/ui/app.js" */
    const char *ctype; /* Content-Type */
    const unsigned char *data;
    size_t len;
};
extern const struct fb_ui_file fb_ui_files[];
extern const size_t fb_ui_nfiles;
#endif
