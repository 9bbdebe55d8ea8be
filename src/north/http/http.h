/* http.h — extras of the metrics endpoint beyond runtime.h (fb_http_start/stop). */
#ifndef FB_HTTP_H
#define FB_HTTP_H
#include <stdint.h>
#include "core/fb.h"

/* Split "host:port", "[v6addr]:port", ":port" (all interfaces) or "port"
 * (127.0.0.1) into host (cap bytes) and port.  Returns 0 or FB_EINVAL. */
int fb_http_parse_listen(const char *listen, char *host, size_t cap, uint16_t *port,
                         struct fb_err *err);
/* The port the running endpoint is bound to (useful with port 0), 0 if none. */
uint16_t fb_http_port(void);
#endif
