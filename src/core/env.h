/* env.h — ${ENV} expansion and secret files (env.c). */
#ifndef FB_ENV_H
#define FB_ENV_H
#include "core/fb.h"

/* Substitute ${VAR} and ${VAR:-default}; error for an unset variable without default. */
int fb_env_expand(const char *in, char **out, struct fb_err *err);
/* What a file named in the config or a device URL is, so that `check` can
 * look at it as the gateway will use it. */
enum fb_opt_kind {
    FB_OPT_VALUE = 0, /* a plain value */
    FB_OPT_SECRET,    /* a file holding a secret: exists, readable, no group/other access */
    FB_OPT_CERT,      /* a certificate file: exists, readable */
    FB_OPT_KEY,       /* a private key file: like a secret */
    FB_OPT_PKI,       /* a certificate store directory; its own/key.pem is a private key */
    FB_OPT_FILE,      /* some other file the driver reads and checks itself (not a secret) */
    FB_OPT_DIR,       /* a directory of certificates (mqtt tls.ca_path) */
    FB_OPT_CRL,       /* certificate revocation lists (PEM or DER; mqtt tls.crl): exists, readable */
};
/* Checks that the file exists and is readable, and for secrets and keys that
 * group and others have no access.  Returns 0, FB_ENOENT (missing), FB_EIO
 * (cannot be read by this user), FB_EACCES (group or others have access: a
 * permission error, always fatal) or FB_EINVAL (a directory where a file
 * belongs, or the reverse); err->msg names the file and the fix. */
int fb_check_file(const char *path, enum fb_opt_kind kind, struct fb_err *err);
/* Read a secret file: refuses files readable by group/others; strips one
 * trailing newline.  The value is noted as a secret (fb_secret_note). */
int fb_read_secret_file(const char *path, char **out, struct fb_err *err);

/* ------------------------------------------------------------ redaction
 * The secrets the process holds (passwords from secret files or the
 * environment) are noted here, so that no output path can print them: every
 * log line, the status JSON, `fieldbridge check` and the config diagnostics
 * pass through fb_secret_redact.  This is how a value is marked secret:
 * fb_cfg_secret and fb_read_secret_file note what they return, and any new
 * source of secrets (HTTP API users, tokens) calls fb_secret_note itself.
 * Values shorter than FB_SECRET_MIN bytes are not noted (masking "1" would
 * garble every line); the registry keeps at most FB_SECRET_MAX values (the
 * oldest goes).  Thread-safe. */
#define FB_SECRET_MASK "[secret]"
#define FB_SECRET_MIN 4
#define FB_SECRET_MAX 64
void fb_secret_note(const char *s);
/* Whether any secret is noted (cheap: output paths skip the scan when not). */
bool fb_secret_any(void);
/* Copy in[0..len) to out (cap > 0 bytes, always NUL-terminated, truncated
 * when needed) with every noted secret — also in its JSON-escaped form —
 * replaced by FB_SECRET_MASK; in and out must not overlap.  Returns the
 * length written. */
size_t fb_secret_redact(const char *in, size_t len, char *out, size_t cap);
/* The same into a new malloc'd string (NULL when out of memory). */
char *fb_secret_redact_dup(const char *in, size_t len, size_t *out_len);
/* Forget (and wipe) every noted secret: for tests. */
void fb_secret_forget_all(void);
#endif
