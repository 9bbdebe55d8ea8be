/* driver.h — the one table of south drivers (driver.c): every URL scheme with
 * its driver, the URL form, its query options and the files they name.
 *
 * Why one table: the config loader (unknown-scheme hints, secret-file checks),
 * the CLI (driver look-up, `fieldbridge help`) and the docs test all read it,
 * so a list of schemes or options cannot drift from another.  The drivers
 * still parse their own options; tests/unit/test_config.c checks this table
 * against what each driver accepts and what its own error message lists. */
#ifndef FB_DRIVER_H
#define FB_DRIVER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "fb.h"

/* What an option's value is, so `check` can look at the files it names. */
enum fb_opt_kind {
    FB_OPT_VALUE = 0, /* a plain value */
    FB_OPT_SECRET,    /* a file holding a secret: exists, readable, no group/other access */
    FB_OPT_CERT,      /* a certificate file: exists, readable */
    FB_OPT_KEY,       /* a private key file: like a secret */
    FB_OPT_PKI,       /* a certificate store directory; its own/key.pem is a private key */
    FB_OPT_FILE,      /* some other file the driver reads and checks itself (not a secret) */
    FB_OPT_DIR,       /* a directory of certificates (mqtt tls.ca_path) */
};

struct fb_drv_opt {
    const char *key;
    enum fb_opt_kind kind;
    bool unlisted; /* accepted (an alias, or a key the core takes) but not in the driver's own list */
    const char *example; /* a value the driver accepts, for tests and help */
};

struct fb_scheme_info {
    const char *scheme;          /* "modbus-tcp" */
    const struct fb_driver *drv;
    const char *form;            /* "modbus-tcp://HOST[:502]?unit=1&timeout=1s" */
    const char *doc;             /* "docs/modbus.md" */
    const struct fb_drv_opt *opts; /* terminated by a NULL key */
};

/* The table, in the order help and hints list it. */
const struct fb_scheme_info *fb_schemes(size_t *n);
const struct fb_scheme_info *fb_scheme_info(const char *scheme); /* NULL if unknown */
/* The option `key` of `scheme`, NULL when the table does not know it. */
const struct fb_drv_opt *fb_scheme_opt(const char *scheme, const char *key);
/* The URL forms and options of every driver, for `fieldbridge help`. */
void fb_schemes_usage(FILE *f);

/* A file an option or a config key names (url.c): checks that it exists and
 * is readable, and for secrets and keys that group and others have no access.
 * Returns 0, FB_ENOENT (missing), FB_EIO (cannot be read by this user),
 * FB_EACCES (group or others have access: a permission error, always fatal)
 * or FB_EINVAL (a directory where a file belongs, or the reverse); err->msg
 * names the file and the fix. */
int fb_check_file(const char *path, enum fb_opt_kind kind, struct fb_err *err);
#endif
