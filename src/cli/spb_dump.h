/* spb_dump.h — `fieldbridge spb-dump` (spb_dump.c). */
#ifndef FB_SPB_DUMP_H
#define FB_SPB_DUMP_H
int fb_cli_spb_dump(int argc, char **argv);
#endif
