/* modbus.h — the Modbus TCP/RTU south driver (libmodbus), schemes
 * "modbus-tcp" and "modbus-rtu" (docs/modbus.md). */
#ifndef FB_MODBUS_H
#define FB_MODBUS_H
#include "core/model.h"

extern const struct fb_driver fb_driver_modbus;
#endif
