/* config.h — load and validate the YAML configuration into a gateway model.
 * Every error is printed as `file:line:col: message` to the diag stream; the
 * whole file is checked before anything starts. */
#ifndef FB_CONFIG_H
#define FB_CONFIG_H
#include <stdbool.h>
#include <stdio.h>
#include "fb.h"

struct fb_config_opts {
    bool strict;  /* missing referenced files are errors, not warnings */
    FILE *diag;   /* where errors and warnings go (stderr) */
};
/* Returns 0 and *out, or FB_EINVAL after printing every error found. */
int fb_config_load(const char *path, const struct fb_config_opts *o, struct fb_gateway **out);
void fb_gateway_free(struct fb_gateway *gw);
void fb_buffer_cfg_free(struct fb_buffer_cfg *b);
/* What would run: devices, connections, tags, poll groups, sinks. */
void fb_config_summary(const struct fb_gateway *gw, FILE *f);

/* The keys the loader accepts, per mapping ("top", "mqtt", "tls", "tag", …). */
struct fb_config_keys {
    const char *section;
    const char *const *keys; /* NULL-terminated */
};
const struct fb_config_keys *fb_config_key_tables(size_t *n);

/* Building blocks, also used by the CLI for ad-hoc devices. */
int fb_url_parse(const char *text, struct fb_url *u, struct fb_err *err);
void fb_url_free(struct fb_url *u);
const char *fb_url_get(const struct fb_url *u, const char *k); /* NULL if absent */
/* Substitute ${VAR} and ${VAR:-default}; error for an unset variable without default. */
int fb_env_expand(const char *in, char **out, struct fb_err *err);
/* For an unknown URL scheme: " (did you mean 'x'?)" when one is close, else
 * " (known: modbus-tcp:// modbus-rtu:// …)" from the driver table. */
void fb_scheme_hint(char *buf, size_t len, const char *scheme);
/* Read a secret file: refuses files readable by group/others; strips one trailing newline. */
int fb_read_secret_file(const char *path, char **out, struct fb_err *err);
#endif
