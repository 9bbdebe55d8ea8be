/* privs.h — the start-up check that the gateway runs with no more privilege
 * than it needs (privs.c; docs/security.md). */
#ifndef FB_PRIVS_H
#define FB_PRIVS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Log a warning when running as root, or with capabilities beyond
 * CAP_NET_BIND_SERVICE for a listening port below 1024.  Call once every
 * listening socket is bound. */
void fb_privs_check(void);
/* The pieces, for tests: the effective capability mask; the lowest TCP port
 * this process listens on (0 = none); and the advice for a given uid, mask
 * and port — 1 with the warning text in out, 0 (out empty) when all is as it
 * should be. */
uint64_t fb_privs_cap_eff(void);
int fb_privs_lowest_listen_port(void);
int fb_privs_advice(unsigned euid, uint64_t caps, int lowest_port, char *out, size_t cap);
#endif
