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

#include "core/env.h"
#include "core/model.h"

struct fb_drv_opt {
    const char *key;
    enum fb_opt_kind kind;
    bool unlisted;       /* accepted (an alias, or a key the core takes) but not in the driver's own list */
    const char *example; /* a value the driver accepts, for tests and help */
};

struct fb_scheme_info {
    const char *scheme; /* "modbus-tcp" */
    const struct fb_driver *drv;
    const char *form;              /* "modbus-tcp://HOST[:502]?unit=1&timeout=1s" */
    const char *doc;               /* "docs/modbus.md" */
    const struct fb_drv_opt *opts; /* terminated by a NULL key */
};

/* The table, in the order help and hints list it. */
const struct fb_scheme_info *fb_schemes(size_t *n);
const struct fb_scheme_info *fb_scheme_info(const char *scheme); /* NULL if unknown */
/* The option `key` of `scheme`, NULL when the table does not know it. */
const struct fb_drv_opt *fb_scheme_opt(const char *scheme, const char *key);
/* The URL forms and options of every driver, for `fieldbridge help`. */
void fb_schemes_usage(FILE *f);

/* For an unknown URL scheme: " (did you mean 'x'?)" when one is close, else
 * " (known: modbus-tcp:// modbus-rtu:// …)" from the table. */
void fb_scheme_hint(char *buf, size_t len, const char *scheme);
/* The driver serving a URL scheme, NULL if none does. */
const struct fb_driver *fb_driver_for_scheme(const char *scheme);
#endif
