/* control.h — closed-loop control at the edge (control.c; docs/control.md):
 * PID loops, interlocks, watchdogs and safe states, configured by the
 * top-level `control:` section.  Supervisory process control, not a safety
 * function. */
#ifndef FB_CONTROL_H
#define FB_CONTROL_H
#include "core/model.h"

extern const struct fb_service fb_service_control;
#endif
