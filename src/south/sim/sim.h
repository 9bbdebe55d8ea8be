/* sim.h — the simulator south driver, scheme "sim" (docs/simulator.md);
 * its signal generators are in sim_gen.h. */
#ifndef FB_SIM_H
#define FB_SIM_H
#include "core/model.h"

extern const struct fb_driver fb_driver_sim;
#endif
