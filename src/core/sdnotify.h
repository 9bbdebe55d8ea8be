/* sdnotify.h — the systemd service notifications (sdnotify.c): READY=1,
 * STOPPING=1 and the watchdog's WATCHDOG=1, through libsystemd's sd_notify.
 *
 * libsystemd is loaded with dlopen() the first time a notification is due
 * and only when systemd asked for them ($NOTIFY_SOCKET is set), like
 * libmicrohttpd (north/http/http.c): it links liblzma, libzstd, liblz4 and
 * libgcrypt, resident memory that a gateway started without systemd's
 * notification socket never needs.  The headers come from libsystemd-dev.
 * Safe from any thread.
 */
#ifndef FB_SDNOTIFY_H
#define FB_SDNOTIFY_H
#include <stdbool.h>
#include <stdint.h>

/* Send `state` ("READY=1", "WATCHDOG=1", …) when systemd listens: 1 sent,
 * 0 nobody listens (no $NOTIFY_SOCKET), <0 an error (libsystemd missing or
 * the send failed; logged once). */
int fb_sd_notify(const char *state);
/* Whether systemd expects WATCHDOG=1 from this process, and how often at
 * least (*usec, the unit's WatchdogSec=). */
bool fb_sd_watchdog(uint64_t *usec);
#endif
