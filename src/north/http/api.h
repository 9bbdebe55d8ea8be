/* api.h — the HTTP API and the built-in web page (api.c; docs/http-api.md):
 * the `http:` sink. */
#ifndef FB_HTTP_API_H
#define FB_HTTP_API_H
#include <stdint.h>

#include "core/model.h"

extern const struct fb_sink fb_sink_http;
/* The port the running API listens on (useful with port 0), 0 if none. */
uint16_t fb_http_api_port(const struct fb_sink_inst *s);
#endif
