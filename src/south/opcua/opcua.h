/* opcua.h — the OPC UA client driver (opcua.c): the driver table entry and
 * `fieldbridge browse opc.tcp://…`. */
#ifndef FB_OPCUA_H
#define FB_OPCUA_H
#include <stdio.h>

#include "core/model.h"
#include "south/opcua/ua_secure.h"

extern const struct fb_driver fb_driver_opcua;
/* Connects to url (opc.tcp://host:port[?depth=N&user=…]) and lists the
 * address space below Objects: every variable into list (name: the browse
 * names from the start node down, joined by '.'; address: the node id) and,
 * when out is not NULL, an indented tree there: browse name, node id, node
 * class, and for variables the data type, access (rw) and the fieldbridge
 * type a tag would get.  0, or a negative fb_status with err set. */
int fb_opcua_browse(const char *url, struct fb_browse *list, FILE *out, struct fb_err *err);
#endif
