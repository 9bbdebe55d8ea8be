/* redact.h — secrets out of configuration text and URLs before the HTTP
 * API shows them (redact.c). */
#ifndef FB_HTTP_REDACT_H
#define FB_HTTP_REDACT_H
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/* A URL with the password of its user part and the values of secret query
 * options (password=, secret=, token=, passphrase=, psk=) replaced by ***.
 * Returns the number of replacements. */
int fb_redact_url(struct fb_buf *out, const char *url, size_t len);
/* The YAML text with the value of every secret key (password, secret,
 * token, passphrase, psk, api_key — not their *_file forms, which name
 * files) and the secrets inside URLs replaced by "***", comments and layout
 * kept.  `where` (may be NULL) gets a JSON array of {"line","col","key"}
 * for each replacement.  Returns the number of replacements, or -1 when the
 * text is not YAML (nothing is shown then). */
int fb_redact_yaml(const char *text, size_t len, struct fb_buf *out, struct fb_buf *where);
/* Is this key's value a secret? */
bool fb_redact_key(const char *key);
#endif
