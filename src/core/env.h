/* env.h — ${ENV} expansion and secret files (env.c). */
#ifndef FB_ENV_H
#define FB_ENV_H
#include "core/fb.h"

/* Substitute ${VAR} and ${VAR:-default}; error for an unset variable without default. */
int fb_env_expand(const char *in, char **out, struct fb_err *err);
/* Read a secret file: refuses files readable by group/others; strips one trailing newline. */
int fb_read_secret_file(const char *path, char **out, struct fb_err *err);
#endif
