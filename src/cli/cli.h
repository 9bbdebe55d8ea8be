/* cli.h — sub-commands of the fieldbridge binary that live outside main.c. */
#ifndef FB_CLI_H
#define FB_CLI_H
int fb_cli_read(int argc, char **argv);
int fb_cli_write(int argc, char **argv);
int fb_cli_browse(int argc, char **argv);
int fb_cli_ads_add_route(int argc, char **argv); /* ads_route.c */
int fb_cli_spb_dump(int argc, char **argv);      /* spb_dump.c */
#endif
