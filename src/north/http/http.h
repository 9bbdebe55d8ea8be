/* http.h — the metrics endpoint (http.c): GET /metrics and /status. */
#ifndef FB_HTTP_H
#define FB_HTTP_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/model.h"

struct fb_http;
/* Split "host:port", "[v6addr]:port", ":port" (all interfaces) or "port"
 * (127.0.0.1) into host (cap bytes) and port.  Returns 0 or FB_EINVAL. */
int fb_http_parse_listen(const char *listen, char *host, size_t cap, uint16_t *port, struct fb_err *err);
/* Parse listen and resolve it to a socket address (ss; *v6 when IPv6),
 * with the host text in host (cap bytes) and the port. */
int fb_http_listen_addr(const char *listen, struct sockaddr_storage *ss, bool *v6, char *host, size_t cap,
                        uint16_t *port, struct fb_err *err);
/* Serve GET /metrics and /status of gw on `listen` (HOST:PORT), over TLS
 * when tls_cert and tls_key (PEM files) are given; *out is the running
 * endpoint. */
int fb_http_start(struct fb_gateway *gw, const char *listen, const char *tls_cert, const char *tls_key,
                  struct fb_http **out, struct fb_err *err);
void fb_http_stop(struct fb_http *h); /* NULL: nothing */
/* The port the endpoint is bound to (useful with port 0), 0 for NULL. */
uint16_t fb_http_port(const struct fb_http *h);

extern const struct fb_service fb_service_http;
#endif
