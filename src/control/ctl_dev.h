/* ctl_dev.h — a control loop's state as a device (ctl_dev.c). */
#ifndef FB_CTL_DEV_H
#define FB_CTL_DEV_H
#include "core/model.h"

/* The driver of every loop device.  Not in the URL-scheme table: the loop
 * devices are made by the control: section (struct fb_dev_spec), never by a
 * devices: entry. */
extern const struct fb_driver fb_driver_control;
#endif
