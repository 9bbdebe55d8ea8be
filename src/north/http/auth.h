/* auth.h — bearer tokens of the HTTP API (auth.c; docs/http-api.md §Tokens).
 *
 * The tokens file has one line per token, `NAME:ROLE:sha256:HEX`, with the
 * role `viewer` (GET) or `operator` (GET and writes) and the SHA-256 of the
 * token in hex; blank lines and `#` comments are ignored.  The tokens
 * themselves are never stored: `fieldbridge http-token NAME ROLE` prints a
 * new one once, with the line to add. */
#ifndef FB_HTTP_AUTH_H
#define FB_HTTP_AUTH_H
#include <stddef.h>
#include <stdint.h>

#include "core/fb.h"

enum fb_http_role { FB_ROLE_NONE = 0, FB_ROLE_VIEWER = 1, FB_ROLE_OPERATOR = 2 };
const char *fb_http_role_name(int role); /* "viewer", "operator", "none" */
int fb_http_role_parse(const char *s);   /* FB_ROLE_NONE for anything else */

#define FB_TOKEN_NAME_MAX 64
struct fb_http_token {
    char name[FB_TOKEN_NAME_MAX];
    int role;
    uint8_t hash[32]; /* SHA-256 of the token */
};
struct fb_http_tokens {
    struct fb_http_token *t;
    size_t n;
};

/* Parse a tokens file's text.  A bad line is an error "FILE:LINE: what";
 * a name may appear once.  Returns 0 or FB_EINVAL. */
int fb_http_tokens_parse(const char *file, const char *text, size_t len, struct fb_http_tokens *out,
                         struct fb_err *err);
/* Read and parse the file (it must not be accessible by group or others,
 * like every secret file). */
int fb_http_tokens_load(const char *path, struct fb_http_tokens *out, struct fb_err *err);
void fb_http_tokens_free(struct fb_http_tokens *t);
/* The entry whose hash matches the presented token, or NULL.  Every entry is
 * compared in constant time, so the answer's timing says nothing about
 * which bytes matched. */
const struct fb_http_token *fb_http_tokens_find(const struct fb_http_tokens *t, const char *token, size_t len);

/* The token of an Authorization header value "Bearer TOKEN" (scheme
 * case-insensitive, one or more spaces).  0 with *tok and *len pointing into
 * the header; FB_ENOENT without a header, FB_EINVAL for another scheme or
 * a malformed value. */
int fb_http_bearer(const char *header, const char **tok, size_t *len);

/* A new random token for NAME with ROLE: the token (fbt_ + 43 base64url
 * characters, 256 random bits) into tok (>= 64 bytes) and the tokens-file
 * line into line (>= 200 bytes). */
int fb_http_token_new(const char *name, const char *role, char *tok, size_t tok_cap, char *line, size_t line_cap,
                      struct fb_err *err);
/* Names: 1..63 characters of [A-Za-z0-9._@-]. */
int fb_http_token_name_ok(const char *s, size_t n);
#endif
