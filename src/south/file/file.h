/* file.h — the file driver, scheme "file": recorded waveforms (WAV, CSV)
 * replayed as blocks of waveform tags (docs/vibration.md); the parsing is in
 * file_proto.h. */
#ifndef FB_FILE_H
#define FB_FILE_H
#include "core/model.h"

extern const struct fb_driver fb_driver_file;
#endif
