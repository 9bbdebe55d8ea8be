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
};
/* Checks that the file exists and is readable, and for secrets and keys that
 * group and others have no access.  Returns 0, FB_ENOENT (missing), FB_EIO
 * (cannot be read by this user), FB_EACCES (group or others have access: a
 * permission error, always fatal) or FB_EINVAL (a directory where a file
 * belongs, or the reverse); err->msg names the file and the fix. */
int fb_check_file(const char *path, enum fb_opt_kind kind, struct fb_err *err);
/* Read a secret file: refuses files readable by group/others; strips one trailing newline. */
int fb_read_secret_file(const char *path, char **out, struct fb_err *err);
#endif
