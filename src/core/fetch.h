/* fetch.h — download a file by URL (http:// or https://) into memory, and
 * SHA-256 in hex (fetch.c).  For remote configurations (fleet.c). */
#ifndef FB_FETCH_H
#define FB_FETCH_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/fb.h"

/* GET url (http or https; redirects followed within those, at most 5) into
 * *out (malloc'd, NUL-terminated, *len bytes), refusing more than max_bytes
 * or a status >= 400; timeout_ns bounds the whole transfer; ca_file (may be
 * NULL) replaces the system's CA certificates for https.  0 or an error with
 * a message a user can act on. */
int fb_fetch(const char *url, const char *ca_file, int64_t timeout_ns, uint64_t max_bytes, char **out, size_t *len,
             struct fb_err *err);
/* The same, given up within about a second once *cancel becomes true (the
 * gateway stopping): FB_ECLOSED then. */
int fb_fetch_cancellable(const char *url, const char *ca_file, int64_t timeout_ns, uint64_t max_bytes,
                         const atomic_bool *cancel, char **out, size_t *len, struct fb_err *err);
/* GET url into the file at path, appending: what the file already holds is
 * asked for no more (an HTTP range request), so an interrupted download
 * resumes.  *len is the file's size after.  progress (may be NULL) is called
 * with the bytes so far and the total when known.  FB_EAGAIN: the server
 * cannot resume (delete the file and start over); FB_ECLOSED: *cancel. */
int fb_fetch_file(const char *url, const char *ca_file, int64_t timeout_ns, uint64_t max_bytes, const char *path,
                  const atomic_bool *cancel, void (*progress)(void *arg, uint64_t have, uint64_t total),
                  void *progress_arg, uint64_t *len, struct fb_err *err);
/* SHA-256 of p as 64 lower-case hex digits and a NUL (hex >= 65 bytes). */
void fb_sha256_hex(const void *p, size_t len, char *hex);
#endif
