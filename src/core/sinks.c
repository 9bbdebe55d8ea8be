/* sinks.c — the static tables of the north side.  Adding a sink means one
 * line here and one struct fb_sink (with its config reader) in its folder:
 * the config loader offers every sink's name as a top-level section, hands
 * the section to the sink, and the runtime runs it like any other.  Services
 * (struct fb_service) run beside the sinks for the runtime's lifetime;
 * sources (struct fb_source: ingest) feed named batches to the sinks. */
#include "core/sinks.h"

#include <string.h>

#include "control/control.h"
#include "fleet/shadow.h"
#include "north/http/api.h"
#include "north/http/http.h"
#include "north/influx/influx.h"
#include "north/ingest/ingest.h"
#include "north/mqtt/mqtt.h"
#include "north/sparkplug/sparkplug.h"

static const struct fb_sink *const sinks[] = {&fb_sink_mqtt, &fb_sink_sparkplug, &fb_sink_http, &fb_sink_influx,
                                              &fb_sink_shadow};
#define NSINKS (sizeof sinks / sizeof sinks[0])

const struct fb_sink *const *fb_sinks(size_t *n)
{
    *n = NSINKS;
    return sinks;
}

static const struct fb_service *const services[] = {&fb_service_http, &fb_service_control};

const struct fb_service *const *fb_services(size_t *n)
{
    *n = sizeof services / sizeof services[0];
    return services;
}

const struct fb_service *fb_service_by_name(const char *name)
{
    for (size_t i = 0; name && i < sizeof services / sizeof services[0]; i++)
        if (!strcmp(services[i]->name, name)) return services[i];
    return NULL;
}

const struct fb_sink *fb_sink_by_name(const char *name)
{
    for (size_t i = 0; name && i < NSINKS; i++)
        if (!strcmp(sinks[i]->name, name)) return sinks[i];
    return NULL;
}

static const struct fb_source *const sources[] = {&fb_source_ingest};
#define NSOURCES (sizeof sources / sizeof sources[0])

const struct fb_source *const *fb_sources(size_t *n)
{
    *n = NSOURCES;
    return sources;
}

const struct fb_source *fb_source_by_name(const char *name)
{
    for (size_t i = 0; name && i < NSOURCES; i++)
        if (!strcmp(sources[i]->name, name)) return sources[i];
    return NULL;
}
