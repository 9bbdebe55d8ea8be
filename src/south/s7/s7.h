/* s7.h — the Siemens S7 (S7comm over ISO-on-TCP) south driver, scheme "s7".
 * Registered in src/core/driver.c; its declaration can move to core/fb.h. */
#ifndef FB_S7_H
#define FB_S7_H
#include "core/model.h"

extern const struct fb_driver fb_driver_s7;
#endif
