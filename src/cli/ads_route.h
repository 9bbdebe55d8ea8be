/* ads_route.h — `fieldbridge ads add-route` (ads_route.c). */
#ifndef FB_ADS_ROUTE_H
#define FB_ADS_ROUTE_H
int fb_cli_ads_add_route(int argc, char **argv);
#endif
