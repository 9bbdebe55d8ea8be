/* cli.h — sub-commands of the fieldbridge binary that live outside main.c. */
#ifndef FB_CLI_H
#define FB_CLI_H
int fb_cli_read(int argc, char **argv);
int fb_cli_write(int argc, char **argv);
int fb_cli_browse(int argc, char **argv);
#endif
