/* net.c — see net.h.  One copy of the socket plumbing every TCP driver needs. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/net.h"

int fb_net_wait(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - fb_mono_ns();
        if (left <= 0) return FB_ETIMEDOUT;
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, (int)((left + 999999) / 1000000));
        if (r > 0) return 0;
        if (r == 0) continue;
        if (errno != EINTR) return FB_EIO;
    }
}

int fb_net_send_all(int fd, const void *buf, size_t n, int64_t deadline)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = fb_net_wait(fd, POLLOUT, deadline);
            if (rc) return rc;
            continue;
        }
        return FB_EIO;
    }
    return 0;
}

int fb_net_recv_all(int fd, void *buf, size_t n, int64_t deadline)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = recv(fd, p, n, 0);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0) return FB_EIO; /* closed by the peer */
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = fb_net_wait(fd, POLLIN, deadline);
            if (rc) return rc;
            continue;
        }
        return FB_EIO;
    }
    return 0;
}

int fb_tcp_connect(const char *host, int port, int64_t timeout_ns, const char *where, int *out, struct fb_err *err)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g) return fb_err_set(err, FB_EIO, "cannot resolve %s: %s", host, gai_strerror(g));
    int last = 0;
    int64_t deadline = fb_mono_ns() + timeout_ns;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc < 0 && errno == EINPROGRESS) {
            if (fb_net_wait(fd, POLLOUT, deadline) == 0) {
                int e = 0;
                socklen_t el = sizeof e;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
                rc = e ? -1 : 0;
                errno = e;
            } else {
                errno = ETIMEDOUT;
            }
        }
        if (rc == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
            freeaddrinfo(res);
            *out = fd;
            return 0;
        }
        last = errno;
        close(fd);
    }
    freeaddrinfo(res);
    return fb_err_set(err, last == ETIMEDOUT ? FB_ETIMEDOUT : FB_EIO, "connect to %s failed: %s", where,
                      strerror(last));
}
