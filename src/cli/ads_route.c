/* ads_route.c — `fieldbridge ads add-route`: the command line around the
 * ADS driver's route registration (south/ads: fb_ads_add_route). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/ads_route.h"
#include "core/env.h"
#include "south/ads/ads.h"

static const char *const add_route_help =
    "usage: fieldbridge ads add-route PLC_HOST --net-id OUR_NET_ID --user USER\n"
    "                                 (--password-file FILE | env FB_ADS_PASSWORD)\n"
    "                                 [--address OUR_IP_OR_HOST] [--route-name NAME]\n"
    "                                 [--port 48899] [--timeout 3s]\n"
    "Registers a static route on a TwinCAT PLC (UDP 48899) so that it accepts ADS\n"
    "connections from this gateway: OUR_NET_ID (conventionally <our IP>.1.1) at\n"
    "OUR_IP.  USER/password are the PLC's operating-system login.  Use the same\n"
    "NetId as source_net_id= in the ads:// URL.\n"
    "exit codes: 0 route added; 1 refused or no answer; 2 usage error\n";

int fb_cli_ads_add_route(int argc, char **argv)
{
    struct fb_ads_route r = {0};
    const char *pwfile = NULL, *timeout_s = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool v = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(add_route_help, stdout);
            return 0;
        } else if (!strcmp(a, "--net-id") && v)
            r.net_id = argv[++i];
        else if (!strcmp(a, "--user") && v)
            r.user = argv[++i];
        else if (!strcmp(a, "--password-file") && v)
            pwfile = argv[++i];
        else if (!strcmp(a, "--password")) {
            /* a password on the command line is visible to every user (ps, /proc/PID/cmdline) */
            fprintf(stderr, "fieldbridge ads add-route: --password is not accepted (the command line is visible to "
                            "every user of the machine); use --password-file FILE (mode 0600) or FB_ADS_PASSWORD\n");
            return 2;
        } else if (!strcmp(a, "--address") && v)
            r.address = argv[++i];
        else if (!strcmp(a, "--route-name") && v)
            r.name = argv[++i];
        else if (!strcmp(a, "--timeout") && v)
            timeout_s = argv[++i];
        else if (!strcmp(a, "--port") && v)
            r.port = atoi(argv[++i]);
        else if (a[0] == '-') {
            fprintf(stderr, "fieldbridge ads add-route: unknown option '%s'\n%s", a, add_route_help);
            return 2;
        } else if (!r.host)
            r.host = a;
        else {
            fprintf(stderr, "fieldbridge ads add-route: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!r.host || !r.net_id || !r.user) {
        fprintf(stderr, "fieldbridge ads add-route: PLC_HOST, --net-id and --user are required\n%s", add_route_help);
        return 2;
    }
    if (timeout_s && (fb_parse_duration(timeout_s, &r.timeout_ns) < 0 || r.timeout_ns <= 0)) {
        fprintf(stderr, "fieldbridge ads add-route: bad --timeout '%s'\n", timeout_s);
        return 2;
    }
    char pw[256] = "";
    if (pwfile) {
        /* the same rules as every secret file: owner-only, one line */
        char *secret = NULL;
        struct fb_err e = {0};
        if (fb_read_secret_file(pwfile, &secret, &e) < 0) {
            fprintf(stderr, "fieldbridge ads add-route: %s\n", e.msg);
            return 2;
        }
        snprintf(pw, sizeof pw, "%s", secret);
        explicit_bzero(secret, strlen(secret));
        free(secret);
    } else if (getenv("FB_ADS_PASSWORD")) {
        snprintf(pw, sizeof pw, "%s", getenv("FB_ADS_PASSWORD"));
        fb_secret_note(pw);
    } else {
        fprintf(stderr, "fieldbridge ads add-route: give the PLC password with --password-file FILE or "
                        "FB_ADS_PASSWORD\n");
        return 2;
    }
    r.password = pw;
    char plc[32] = "";
    struct fb_err err = {0};
    int rc = fb_ads_add_route(&r, plc, sizeof plc, &err);
    explicit_bzero(pw, sizeof pw);
    if (rc == 0) {
        printf("route '%s' for %s at %s added on %s (PLC AmsNetId %s)\n", r.name ? r.name : r.address_used, r.net_id,
               r.address_used, r.host, plc);
        return 0;
    }
    fprintf(stderr, "fieldbridge ads add-route: %s\n", err.msg);
    return rc == FB_EINVAL ? 2 : 1;
}
