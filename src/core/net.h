/* net.h — blocking-with-deadline socket helpers for request/response drivers
 * (S7, ADS, OPC UA): non-blocking sockets driven by poll() with absolute
 * monotonic deadlines, so a silent or half-open peer costs at most the
 * device timeout and never blocks shutdown.  Errors: FB_ETIMEDOUT when the
 * deadline passed, FB_EIO when the peer closed or the socket failed. */
#ifndef FB_NET_H
#define FB_NET_H
#include <stddef.h>
#include <stdint.h>
#include "core/fb.h"

/* Wait until fd is ready for `events` (POLLIN/POLLOUT) or the deadline. */
int fb_net_wait(int fd, short events, int64_t deadline_mono_ns);
int fb_net_send_all(int fd, const void *p, size_t n, int64_t deadline_mono_ns);
int fb_net_recv_all(int fd, void *p, size_t n, int64_t deadline_mono_ns);
/* Resolve host, try each address within timeout_ns; *fd is non-blocking with
 * TCP_NODELAY and SO_KEEPALIVE.  `where` names the peer in the message. */
int fb_tcp_connect(const char *host, int port, int64_t timeout_ns, const char *where, int *fd, struct fb_err *err);
#endif
