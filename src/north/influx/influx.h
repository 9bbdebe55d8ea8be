/* influx.h — the InfluxDB sink (influx.c; docs/influxdb.md): line protocol
 * over HTTP to InfluxDB 1.x (/write) or 2.x (/api/v2/write).  Its config and
 * schema mapping are schema.h, the line protocol lp.h. */
#ifndef FB_INFLUX_H
#define FB_INFLUX_H
#include "core/model.h"
#include "north/influx/schema.h"

extern const struct fb_sink fb_sink_influx;
#endif
