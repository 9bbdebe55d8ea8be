/* driver.c — the one table of south drivers, looked up by URL scheme.
 *
 * Each row is a URL scheme: its driver, the URL form, the addresses it takes,
 * its doc page and its query options (with what kind of value each is, so
 * `fieldbridge check` can look at the files they name).  Everything that lists
 * schemes or options reads this table: the driver look-up, the config
 * loader's unknown-scheme hint and secret-file checks, `fieldbridge help`, and
 * tests/unit/test_config.c, which checks it against the drivers themselves
 * (every option here is accepted; every option a driver lists in its own
 * "unknown option" message is here) and against docs/configuration.md.
 * Adding a protocol means one struct fb_driver in its file and rows here. */
#include <string.h>

#include "core/driver.h"

#include "core/cfg.h"
#include "south/ads/ads.h"
#include "south/file/file.h"
#include "south/modbus/modbus.h"
#include "south/opcua/opcua.h"
#include "south/revpi/revpi.h"
#include "south/s7/s7.h"
#include "south/sim/sim.h"

#define MB_COMMON                                                                                                      \
    {"unit", FB_OPT_VALUE, false, "1"}, {"timeout", FB_OPT_VALUE, false, "1s"}, {"delay", FB_OPT_VALUE, false, "0ms"}, \
        {"max_gap", FB_OPT_VALUE, false, "10"}, {"max_regs", FB_OPT_VALUE, false, "125"},                              \
        {"max_bits", FB_OPT_VALUE, false, "2000"}, {"base", FB_OPT_VALUE, false, "0"},                                 \
        {"write_single", FB_OPT_VALUE, false, "fc6"}, {"write_coil", FB_OPT_VALUE, false, "fc5"},                      \
    {                                                                                                                  \
        "bit_write", FB_OPT_VALUE, false, "fc22"                                                                       \
    }

static const struct fb_drv_opt mb_tcp_opts[] = {MB_COMMON, {NULL, 0, false, NULL}};
static const struct fb_drv_opt mb_rtu_opts[] = {
    MB_COMMON,
    {"baud", FB_OPT_VALUE, false, "9600"},
    {"parity", FB_OPT_VALUE, false, "N"},
    {"data", FB_OPT_VALUE, false, "8"},
    {"stop", FB_OPT_VALUE, false, "1"},
    {NULL, 0, false, NULL},
};
static const struct fb_drv_opt opcua_opts[] = {
    {"timeout", FB_OPT_VALUE, false, "1s"},
    {"mode", FB_OPT_VALUE, false, "poll"},
    {"user", FB_OPT_VALUE, false, "operator"},
    {"password_file", FB_OPT_SECRET, false, "/etc/fieldbridge/opcua.pass"},
    {"user_cert", FB_OPT_CERT, false, "/etc/fieldbridge/user.der"},
    {"user_key", FB_OPT_KEY, false, "/etc/fieldbridge/user.key"},
    {"lifetime", FB_OPT_VALUE, false, "1h"},
    {"session_timeout", FB_OPT_VALUE, false, "60s"},
    {"chunk", FB_OPT_VALUE, false, "64KiB"},
    {"max_message", FB_OPT_VALUE, false, "4MiB"},
    {"queue", FB_OPT_VALUE, false, "10"},
    {"max_batch", FB_OPT_VALUE, false, "1000"},
    {"depth", FB_OPT_VALUE, false, "4"},
    {"node", FB_OPT_VALUE, false, "i=85"},
    {"security_policy", FB_OPT_VALUE, false, "None"},
    {"security_mode", FB_OPT_VALUE, false, "None"},
    {"pki", FB_OPT_PKI, false, "/var/lib/fieldbridge/pki"},
    {"trust_server", FB_OPT_VALUE, false, "list"},
    {"revocation", FB_OPT_VALUE, false, "require"},
    {"check_names", FB_OPT_VALUE, false, "warn"},
    {"auth_retry", FB_OPT_VALUE, false, "5m"},
    {NULL, 0, false, NULL},
};
static const struct fb_drv_opt s7_opts[] = {
    {"rack", FB_OPT_VALUE, false, "0"},
    {"slot", FB_OPT_VALUE, false, "1"},
    {"type", FB_OPT_VALUE, false, "pg"},
    {"local_tsap", FB_OPT_VALUE, false, "0x0100"},
    {"remote_tsap", FB_OPT_VALUE, false, "0x0102"},
    {"pdu", FB_OPT_VALUE, false, "960"},
    {"max_gap", FB_OPT_VALUE, false, "32"},
    {"max_items", FB_OPT_VALUE, false, "20"},
    {"timeout", FB_OPT_VALUE, false, "1s"},
    {NULL, 0, false, NULL},
};
static const struct fb_drv_opt ads_opts[] = {
    {"net_id", FB_OPT_VALUE, false, "5.80.192.200.1.1"},
    {"netid", FB_OPT_VALUE, true, "5.80.192.200.1.1"}, /* alias of net_id */
    {"port", FB_OPT_VALUE, false, "851"},
    {"ams_port", FB_OPT_VALUE, true, "851"}, /* alias of port */
    {"source_net_id", FB_OPT_VALUE, false, "192.168.0.5.1.1"},
    {"source_port", FB_OPT_VALUE, false, "32905"},
    {"timeout", FB_OPT_VALUE, false, "1s"},
    {"mode", FB_OPT_VALUE, false, "poll"},
    {"cycle", FB_OPT_VALUE, false, "100ms"},
    {"max_delay", FB_OPT_VALUE, false, "0ms"},
    {"max_sum", FB_OPT_VALUE, false, "500"},
    {NULL, 0, false, NULL},
};
static const struct fb_drv_opt revpi_opts[] = {
    {"config", FB_OPT_FILE, false, "none"},
    {"cycle", FB_OPT_VALUE, false, "20ms"},
    {"watchdog", FB_OPT_VALUE, false, "5s"},
    {"north_loss", FB_OPT_VALUE, false, "5s"},
    {"safe", FB_OPT_VALUE, false, "bit:70.3=false"},
    {"timeout", FB_OPT_VALUE, false, "1s"},
    {"delay", FB_OPT_VALUE, true, "0ms"}, /* accepted for the core (device delay), not listed */
    {NULL, 0, false, NULL},
};
static const struct fb_drv_opt sim_opts[] = {
    {"seed", FB_OPT_VALUE, false, "42"},
    {NULL, 0, false, NULL},
};
static const struct fb_drv_opt file_opts[] = {
    {"loop", FB_OPT_VALUE, false, "true"},
    {"format", FB_OPT_VALUE, false, "wav"},
    {NULL, 0, false, NULL},
};

static const struct fb_scheme_info schemes[] = {
    {"modbus-tcp", &fb_driver_modbus, "modbus-tcp://HOST[:502]?unit=1", "docs/modbus.md", mb_tcp_opts},
    {"modbus-rtu", &fb_driver_modbus, "modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&data=8&stop=1&unit=1",
     "docs/modbus.md", mb_rtu_opts},
    {"opc.tcp", &fb_driver_opcua, "opc.tcp://HOST[:4840][/PATH][?mode=subscribe&user=U&password_file=F]",
     "docs/opcua.md", opcua_opts},
    {"s7", &fb_driver_s7, "s7://HOST[:102]?rack=0&slot=1", "docs/s7.md", s7_opts},
    {"ads", &fb_driver_ads, "ads://HOST[:48898]?net_id=5.80.192.200.1.1&port=851", "docs/ads.md", ads_opts},
    {"revpi", &fb_driver_revpi, "revpi:///dev/piControl0[?config=/etc/revpi/config.rsc]", "docs/revpi.md", revpi_opts},
    {"sim", &fb_driver_sim, "sim://NAME[?seed=42]", "docs/simulator.md", sim_opts},
    {"file", &fb_driver_file, "file:///PATH/recording.wav[?loop=true&format=wav|csv]", "docs/vibration.md", file_opts},
};

const struct fb_scheme_info *fb_schemes(size_t *n)
{
    *n = sizeof schemes / sizeof schemes[0];
    return schemes;
}

const struct fb_scheme_info *fb_scheme_info(const char *scheme)
{
    if (!scheme) return NULL;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (!strcmp(schemes[i].scheme, scheme)) return &schemes[i];
    return NULL;
}

const struct fb_driver *fb_driver_for_scheme(const char *scheme)
{
    const struct fb_scheme_info *si = fb_scheme_info(scheme);
    return si ? si->drv : NULL;
}

const struct fb_drv_opt *fb_scheme_opt(const char *scheme, const char *key)
{
    const struct fb_scheme_info *si = fb_scheme_info(scheme);
    if (!si || !key) return NULL;
    for (const struct fb_drv_opt *o = si->opts; o->key; o++)
        if (!strcmp(o->key, key)) return o;
    return NULL;
}

/* Addresses per driver, for help: the doc page has the full grammar. */
static const char *addr_help(const struct fb_driver *d)
{
    if (d == &fb_driver_modbus)
        return "hr:N ir:N co:N di:N, hr:N.B (a bit), 40001-style; [:TYPE[:ORDER]] e.g. hr:102:float32:CDAB";
    if (d == &fb_driver_opcua) return "ns=2;s=Name, i=2258, /Objects/2:Demo/2:Temperature; [:TYPE]";
    if (d == &fb_driver_s7) return "DB10.DBD0:real, DB1.DBX2.3, MW10, I0.1, Q0.0, C1, T1";
    if (d == &fb_driver_ads) return "MAIN.fTemperature, GVL.aValues[3], MAIN.nCount:DINT";
    if (d == &fb_driver_revpi) return "PiCtory names (I_1, InputValue_1:int16) or bit:70.3, byte:N, word:N, dword:N";
    if (d == &fb_driver_sim)
        return "sine:amp=10,period=60s, ramp, square, walk, noise, const:42, counter, memory, motor (waveforms)";
    if (d == &fb_driver_file) return "a channel (0, ch:1) or a CSV column name; waveform tags (vibration:) only";
    return "see its doc page";
}

void fb_schemes_usage(FILE *f)
{
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        const struct fb_scheme_info *si = &schemes[i];
        fprintf(f, "  '%s'\n      options:", si->form);
        int col = 14;
        for (const struct fb_drv_opt *o = si->opts; o->key; o++) {
            if (o->unlisted) continue;
            int w = (int)strlen(o->key) + 1;
            if (col + w > 96) {
                fputs("\n              ", f);
                col = 14;
            }
            fprintf(f, " %s", o->key);
            col += w;
        }
        /* modbus-tcp and modbus-rtu share addresses and a page: say it once */
        if (i + 1 < sizeof schemes / sizeof schemes[0] && schemes[i + 1].drv == si->drv) {
            fputc('\n', f);
            continue;
        }
        fprintf(f, "\n      addresses: %s\n      (%s)\n", addr_help(si->drv), si->doc);
    }
}

void fb_scheme_hint(char *buf, size_t len, const char *scheme)
{
    size_t ns;
    const struct fb_scheme_info *si = fb_schemes(&ns);
    const char *names[32];
    size_t n = 0, off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < ns && n < 31; i++) names[n++] = si[i].scheme;
    names[n] = NULL;
    const char *sg = scheme ? fb_cfg_suggest(scheme, names) : NULL;
    if (sg) {
        snprintf(buf, len, " (did you mean '%s'?)", sg);
        return;
    }
    off += (size_t)snprintf(buf + off, len - off, " (known:");
    for (size_t i = 0; i < n && off < len; i++) off += (size_t)snprintf(buf + off, len - off, " %s://", names[i]);
    if (off < len) snprintf(buf + off, len - off, ")");
}
