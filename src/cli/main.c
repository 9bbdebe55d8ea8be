/* main.c — the fieldbridge command line.
 *
 *   fieldbridge run -c FILE              run the gateway until SIGINT/SIGTERM
 *   fieldbridge ingest -c FILE           run an MQTT → InfluxDB ingest instance (an `ingest:` config)
 *   fieldbridge check -c FILE [--strict] validate a config, print what would run
 *   fieldbridge read URL ADDR... [--type T] [--order O] [--count N] [--json] [--timeout D]
 *   fieldbridge write URL ADDR VALUE [--type T] [--order O] [--timeout D]
 *   fieldbridge browse URL
 *   fieldbridge ads add-route …, spb-dump …, http-token NAME ROLE
 *   fieldbridge version | help [COMMAND] | COMMAND --help
 *
 * The device URL forms in the help come from the driver table (driver.c), so
 * the help lists every protocol the binary has.
 *
 * Exit codes: 0 success (all values good); 1 device or communication error, or
 * a value not good; 2 usage or config error.
 *
 * read/write/browse use the same drivers as the gateway through the generic
 * driver table, so every protocol gets the mbpoll-style tool for free.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/ads_route.h"
#include "cli/http_token.h"
#include "cli/oneshot.h"
#include "cli/spb_dump.h"
#include "core/config.h"
#include "core/driver.h"
#include "core/env.h"
#include "core/fleet.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/privs.h"
#include "core/runtime.h"
#include "core/sdnotify.h"
#include "fleet/ota.h"
#include "north/sparkplug/sparkplug.h"
#include "south/ads/ads.h"

static const char *const usage_head =
    "usage: fieldbridge COMMAND [OPTIONS]\n"
    "\n"
    "commands (fieldbridge help COMMAND for each one's options):\n"
    "  run -c FILE [--log-format text|json] [--log-level LEVEL]\n"
    "                                   run the gateway (foreground) until SIGINT/SIGTERM;\n"
    "                                   SIGHUP reloads the config\n"
    "  ingest -c FILE [--log-format text|json] [--log-level LEVEL]\n"
    "                                   write other gateways' MQTT telemetry to InfluxDB (docs/influxdb.md)\n"
    "  check -c FILE [--strict]         validate a config offline and print what would run\n"
    "  read URL ADDR... [--type T] [--order O] [--count N] [--json] [--timeout D]\n"
    "                                   one-shot read of one or more addresses\n"
    "  write URL ADDR VALUE [--type T] [--order O] [--timeout D]\n"
    "                                   one-shot write (negative numbers work: hr:10:int16 -5)\n"
    "  browse URL [--yaml]              list what a device offers (OPC UA, ADS, RevPi);\n"
    "                                   --yaml: as tag config to paste\n"
    "  http-token NAME ROLE [--append FILE]\n"
    "                                   make a bearer token for the HTTP API (viewer|operator)\n"
    "  ads add-route HOST --net-id ID --user U [--password-file F] [--address A]\n"
    "                [--route-name N] [--port P] [--timeout D]\n"
    "                                   register a route on a TwinCAT PLC (UDP 48899)\n"
    "  spb-dump URL [--topic F] [--count N] [--timeout D] [--username U] [--rebirth]\n"
    "                                   print Sparkplug B traffic on a broker readably\n"
    "  version                          print the version\n"
    "  help [COMMAND]                   this text, or a command's own\n"
    "\n"
    "device URLs (quote them in a shell) and their options (also `options:` in a config):\n";

static const char *const usage_tail =
    "types (a :TYPE suffix or --type): bool int8 uint8 int16 uint16 int32 uint32 int64 uint64\n"
    "  float32 float64 string[N] (Modbus also bcd16 bcd32)\n"
    "orders (--order, or Modbus :TYPE:ORDER): ABCD CDAB BADC DCBA, 64-bit ABCDEFGH GHEFCDAB BADCFEHG HGFEDCBA\n"
    "exit codes: 0 ok; 1 device/communication error or a value not good; 2 usage/config error\n"
    "docs: docs/configuration.md and the protocol pages named above\n";

static void usage(FILE *f)
{
    fputs(usage_head, f);
    fb_schemes_usage(f);
    fputs(usage_tail, f);
}

static int cmd_check(int argc, char **argv)
{
    const char *file = NULL;
    struct fb_config_opts o = {.strict = false, .diag = stderr};
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            file = argv[++i];
        else if (!strcmp(argv[i], "--strict"))
            o.strict = true;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            puts("usage: fieldbridge check -c FILE [--strict]\n"
                 "Validates syntax, schema, types, addresses and environment variables offline and\n"
                 "prints what would run.  Every file the config names is checked: mqtt/sparkplug\n"
                 "password_file and tls files, and files in device URLs (OPC UA password_file=,\n"
                 "user_cert=, user_key=, pki=).  A missing or unreadable file is a warning (an error\n"
                 "with --strict, and always for `run`); a secret or key that group or others can\n"
                 "access is an error.\n"
                 "  -c, --config FILE  the config file (or give FILE alone)\n"
                 "  --strict           warnings about referenced files become errors\n"
                 "Errors are printed as file:line:col: message; exit code 2.");
            return 0;
        } else if (!file && argv[i][0] != '-')
            file = argv[i];
        else {
            fprintf(stderr, "fieldbridge check: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!file) {
        fprintf(stderr, "fieldbridge check: missing -c FILE\n");
        return 2;
    }
    struct fb_gateway *gw = NULL;
    if (fb_config_load(file, &o, &gw) < 0) return 2;
    /* the summary quotes URLs, user names and paths: never a noted secret */
    char *sum = NULL;
    size_t sumlen = 0;
    FILE *mf = open_memstream(&sum, &sumlen);
    if (mf) {
        fb_config_summary(gw, mf);
        fclose(mf);
        char *red = fb_secret_redact_dup(sum, sumlen, &sumlen);
        fwrite(red ? red : sum, 1, sumlen, stdout);
        free(red);
        free(sum);
    }
    printf("%s: OK\n", file);
    fb_gateway_free(gw);
    return 0;
}

/* After the orderly shutdown a remote reboot (Sparkplug Node Control/Reboot)
 * asked for: run the same command line again (/proc/self/cmdline, exe). */
static void reexec(void)
{
    static char buf[65536];
    static char *args[256];
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return;
    buf[n] = 0;
    int argc = 0;
    for (ssize_t i = 0; i < n && argc < 255; i += (ssize_t)strlen(buf + i) + 1) args[argc++] = buf + i;
    args[argc] = NULL;
    fb_info(NULL, NULL, "reboot: restarting %s", args[0]);
    const char *exe = fb_ota_exec_path(); /* after a software update: install_dir/current/fieldbridge */
    execv(exe ? exe : "/proc/self/exe", args);
    fb_error(NULL, NULL, "reboot failed: cannot re-execute: %s", strerror(errno));
}

/* run and ingest: the same runtime; ingest insists on an `ingest:` config
 * (sources, no devices), run on a gateway config, so a unit file or a shell
 * history says what the process is. */
static int run_config(int argc, char **argv, bool ingest)
{
    const char *cmd = ingest ? "ingest" : "run";
    const char *file = NULL, *fmt = NULL, *level = NULL;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            file = argv[++i];
        else if (!strcmp(argv[i], "--log-format") && i + 1 < argc)
            fmt = argv[++i];
        else if (!strcmp(argv[i], "--log-level") && i + 1 < argc)
            level = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (ingest)
                puts("usage: fieldbridge ingest -c FILE [--log-format text|json] [--log-level error|warn|info|debug]\n"
                     "Subscribes to the telemetry of many gateways (JSON and Sparkplug B) as the file's\n"
                     "ingest: section says and writes it to the influx: sink until SIGINT or SIGTERM.\n"
                     "Several instances with the same ingest.share group split the traffic.  See\n"
                     "docs/influxdb.md.  SIGHUP does not reload an ingest config: restart it.");
            else
                puts("usage: fieldbridge run -c FILE [--log-format text|json] [--log-level error|warn|info|debug]\n"
                     "Runs the gateway in the foreground until SIGINT or SIGTERM, then publishes the\n"
                     "offline status, flushes what it can and exits 0.  SIGHUP (systemctl reload)\n"
                     "re-reads the config and applies only what changed; an invalid one is refused\n"
                     "and the running one stays (docs/fleet.md).");
            return 0;
        } else {
            fprintf(stderr, "fieldbridge %s: unexpected argument '%s'\n", cmd, argv[i]);
            return 2;
        }
    }
    if (!file) {
        fprintf(stderr, "fieldbridge %s: missing -c FILE\n", cmd);
        return 2;
    }
    int lvl = -1, lfmt = -1;
    if (level && (lvl = fb_log_level_parse(level)) < 0) {
        fprintf(stderr, "fieldbridge %s: unknown log level '%s'\n", cmd, level);
        return 2;
    }
    if (fmt) {
        if (!strcmp(fmt, "json"))
            lfmt = FB_LOG_JSON;
        else if (!strcmp(fmt, "text"))
            lfmt = FB_LOG_TEXT;
        else {
            fprintf(stderr, "fieldbridge %s: unknown log format '%s' (text or json)\n", cmd, fmt);
            return 2;
        }
    }
    /* Signals are taken synchronously by this thread; every other thread
     * inherits the blocked mask, so no handler ever runs inside library code.
     * Blocked before anything starts, so a SIGHUP (systemctl reload) early in
     * the start-up cannot end the process either: left at its default action
     * it would, without the offline status. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* the local config, or the remote configuration kept beside it (docs/fleet.md) */
    struct fb_fleet_opts fo = {.log_level = lvl, .log_format = lfmt};
    struct fb_gateway *gw = NULL;
    struct fb_fleet *fleet = NULL;
    if (fb_fleet_load(file, &fo, stderr, &gw, &fleet) < 0) return 2;
    if (ingest != (gw->nsources > 0)) {
        fprintf(stderr,
                ingest ? "fieldbridge ingest: %s has no ingest: section (a gateway config runs with fieldbridge run)\n"
                       : "fieldbridge run: %s is an ingest config: run it with fieldbridge ingest -c FILE\n",
                file);
        fb_gateway_free(gw);
        fb_fleet_free(fleet);
        return 2;
    }
    fb_log_init(lvl >= 0 ? lvl : gw->log_level, lfmt >= 0 ? lfmt : gw->log_format);

    struct fb_err err = {0};
    struct fb_runtime_ext ext;
    fb_fleet_runtime_ext(fleet, &ext);
    if (fb_runtime_start_ext(gw, &ext, &err) < 0 || fb_fleet_start(fleet, &err) < 0) {
        fb_error(NULL, NULL, "cannot start: %s", err.msg[0] ? err.msg : fb_strerror(err.code));
        fb_runtime_request_stop(gw);
        return 1;
    }
    fb_privs_check();        /* every listening port is bound now */
    fb_sd_notify("READY=1"); /* Type=notify units: everything runs (no-op without systemd) */
    int sig = 0;
    for (;;) {
        sigwait(&set, &sig);
        if (sig != SIGHUP) break;
        /* systemctl reload: applied on the command router's thread, like the reload command */
        fb_info(NULL, NULL, "received SIGHUP: reloading the configuration");
        fb_fleet_request_reload(fleet, "signal:SIGHUP");
    }
    fb_info(NULL, NULL, "received %s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    fb_sd_notify("STOPPING=1");
    bool reboot = fb_runtime_reboot_requested(gw);
    fb_runtime_request_stop(gw);
    fb_fleet_stop(fleet);
    fb_runtime_wait(gw);
    fb_gateway_free(gw);
    fb_fleet_free(fleet);
    if (reboot) reexec();
    return 0;
}

static int cmd_run(int argc, char **argv) { return run_config(argc, argv, false); }
static int cmd_ingest(int argc, char **argv) { return run_config(argc, argv, true); }

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    fb_log_init(FB_LOG_WARN, FB_LOG_TEXT);
    if (!strcmp(cmd, "run")) return cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "ingest")) return cmd_ingest(argc - 2, argv + 2);
    if (!strcmp(cmd, "check")) return cmd_check(argc - 2, argv + 2);
    if (!strcmp(cmd, "read")) return fb_cli_read(argc - 2, argv + 2);
    if (!strcmp(cmd, "write")) return fb_cli_write(argc - 2, argv + 2);
    if (!strcmp(cmd, "browse")) return fb_cli_browse(argc - 2, argv + 2);
    if (!strcmp(cmd, "spb-dump")) return fb_cli_spb_dump(argc - 2, argv + 2);
    if (!strcmp(cmd, "http-token")) return fb_cli_http_token(argc - 2, argv + 2);
    if (!strcmp(cmd, "ads")) {
        if (argc >= 3 && !strcmp(argv[2], "add-route")) return fb_cli_ads_add_route(argc - 3, argv + 3);
        fprintf(stderr, "fieldbridge ads: expected 'add-route' (fieldbridge ads add-route --help)\n");
        return 2;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("fieldbridge %s\n", FB_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        if (argc > 2) {
            char *h[] = {(char *)"--help", NULL};
            const char *c = argv[2];
            if (!strcmp(c, "run")) return cmd_run(1, h);
            if (!strcmp(c, "ingest")) return cmd_ingest(1, h);
            if (!strcmp(c, "check")) return cmd_check(1, h);
            if (!strcmp(c, "read")) return fb_cli_read(1, h);
            if (!strcmp(c, "write")) return fb_cli_write(1, h);
            if (!strcmp(c, "browse")) return fb_cli_browse(1, h);
            if (!strcmp(c, "spb-dump")) return fb_cli_spb_dump(1, h);
            if (!strcmp(c, "http-token")) return fb_cli_http_token(1, h);
            if (!strcmp(c, "ads") || !strcmp(c, "add-route")) return fb_cli_ads_add_route(1, h);
            if (!strcmp(c, "version")) {
                puts("usage: fieldbridge version\nPrints the version of this binary.");
                return 0;
            }
            if (strcmp(c, "help")) {
                fprintf(stderr, "fieldbridge help: unknown command '%s'\n\n", c);
                usage(stderr);
                return 2;
            }
        }
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "fieldbridge: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
