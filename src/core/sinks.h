/* sinks.h — the table of the north side (sinks.c): sinks, looked up by the
 * name of their config section, services, and sources. */
#ifndef FB_SINKS_H
#define FB_SINKS_H
#include <stddef.h>

#include "core/model.h"

/* The sink whose config section is `name` ("mqtt"), NULL if none. */
const struct fb_sink *fb_sink_by_name(const char *name);
/* The sinks, in table order. */
const struct fb_sink *const *fb_sinks(size_t *n);
/* The services (model.h), in table order. */
const struct fb_service *const *fb_services(size_t *n);
/* The service whose config section is `name`, NULL if none. */
const struct fb_service *fb_service_by_name(const char *name);
/* The sources (model.h: ingest), in table order, and by section name. */
const struct fb_source *const *fb_sources(size_t *n);
const struct fb_source *fb_source_by_name(const char *name);
#endif
