/* oneshot.h — `fieldbridge read`, `write` and `browse` (oneshot.c): one
 * device built from a URL, one request, the answer printed. */
#ifndef FB_ONESHOT_H
#define FB_ONESHOT_H
int fb_cli_read(int argc, char **argv);
int fb_cli_write(int argc, char **argv);
int fb_cli_browse(int argc, char **argv);
#endif
