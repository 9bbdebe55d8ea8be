/* test_reload.c — what a configuration reload considers the same: a device
 * polled identically (URL and options, timing, groups, every tag's address
 * and type) is kept whatever its processing, unit, area or line; any change
 * to how it is polled makes it a changed device.  And the `fleet:` section:
 * defaults, values, and its errors at their line and column. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fleet_cfg.h"
#include "core/reload.h"

static int load(const char *yaml, struct fb_gateway **gw, char **diag)
{
    char path[] = "/tmp/fb_reload_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    size_t len;
    FILE *f = open_memstream(diag, &len);
    struct fb_config_opts o = {.strict = false, .diag = f};
    int rc = fb_config_load(path, &o, gw);
    fclose(f);
    unlink(path);
    return rc;
}

static struct fb_gateway *ok(const char *yaml)
{
    struct fb_gateway *gw = NULL;
    char *diag = NULL;
    int rc = load(yaml, &gw, &diag);
    if (rc != 0) fprintf(stderr, "%s", diag);
    free(diag);
    assert_int_equal(rc, 0);
    return gw;
}

#define BASE                                                                                                           \
    "gateway: {id: g}\n"                                                                                               \
    "devices:\n"                                                                                                       \
    "  - name: a\n"                                                                                                    \
    "    url: \"modbus-tcp://127.0.0.1:1502?unit=1\"\n"                                                                \
    "    poll: 100ms\n"

static bool same(const char *x, const char *y)
{
    struct fb_gateway *a = ok(x), *b = ok(y);
    bool r = fb_reload_dev_same(a, &a->devs[0], b, &b->devs[0]);
    fb_gateway_free(a);
    fb_gateway_free(b);
    return r;
}

static void test_device_sameness(void **st)
{
    (void)st;
    const char *base = BASE "    tags:\n      - {name: t, addr: \"hr:0\"}\n      - {name: u, addr: \"hr:1:float32\"}\n";
    assert_true(same(base, base));
    /* processing, unit, area, line: the device keeps polling as it was */
    assert_true(same(base, BASE "    area: hall\n    line: \"2\"\n    tags:\n"
                                "      - {name: t, addr: \"hr:0\", deadband: 5, unit: bar, range: [0, 10]}\n"
                                "      - {name: u, addr: \"hr:1:float32\", scale: {factor: 2}}\n"));
    /* how it is polled */
    assert_false(
        same(base, BASE "    tags:\n      - {name: t, addr: \"hr:0\"}\n      - {name: u, addr: \"hr:2:float32\"}\n"));
    assert_false(
        same(base, BASE "    tags:\n      - {name: t, addr: \"hr:0\"}\n      - {name: u, addr: \"hr:1:int32\"}\n"));
    assert_false(same(base, BASE "    tags:\n      - {name: t, addr: \"hr:0\"}\n"));
    assert_false(same(base, BASE "    tags:\n      - {name: t, addr: \"hr:0\"}\n"
                                 "      - {name: u, addr: \"hr:1:float32\", poll: 1s}\n"));
    assert_false(same(base, BASE "    timeout: 2s\n    tags:\n      - {name: t, addr: \"hr:0\"}\n"
                                 "      - {name: u, addr: \"hr:1:float32\"}\n"));
    assert_false(same(base, BASE "    options: {max_gap: 3}\n    tags:\n      - {name: t, addr: \"hr:0\"}\n"
                                 "      - {name: u, addr: \"hr:1:float32\"}\n"));
    assert_false(same(base, "gateway: {id: g}\ndevices:\n  - name: a\n    url: \"modbus-tcp://127.0.0.1:1503?unit=1\"\n"
                            "    poll: 100ms\n    tags:\n      - {name: t, addr: \"hr:0\"}\n"
                            "      - {name: u, addr: \"hr:1:float32\"}\n"));
    assert_false(same(base, BASE "    tags:\n      - {name: t, addr: \"hr:0\", access: rw}\n"
                                 "      - {name: u, addr: \"hr:1:float32\"}\n"));
}

static void test_fleet_section(void **st)
{
    (void)st;
    struct fb_gateway *gw = ok("gateway: {id: g, model: RevPi, location: \"hall B\", labels: {line: A, n: 7}}\n"
                               "version: v1\n"
                               "fleet:\n"
                               "  state_dir: /var/lib/fb\n"
                               "  remote_config: {health_check: 10s, max_size: 64KiB, fetch_timeout: 5s}\n"
                               "  health: {disk_min_free: 10, memory_min_free: 2.5, temperature_max: 85, "
                               "error_after: 1m}\n");
    assert_string_equal(gw->hw_model, "RevPi");
    assert_string_equal(gw->location, "hall B");
    assert_string_equal(gw->cfg_version, "v1");
    assert_int_equal(gw->nlabels, 2);
    assert_string_equal(gw->labels[1].key, "n");
    assert_string_equal(gw->labels[1].value, "7");
    const struct fb_fleet_cfg *f = gw->fleet;
    assert_string_equal(f->state_dir, "/var/lib/fb");
    assert_true(f->remote_config);
    assert_true(f->health_check_ns == 10000000000LL && f->max_config_bytes == 65536 &&
                f->fetch_timeout_ns == 5000000000LL);
    assert_true(f->disk_min_free_pct == 10 && f->memory_min_free_pct == 2.5 && f->temperature_max_c == 85 &&
                f->error_after_ns == 60000000000LL);
    struct fb_fleet_cfg d;
    fb_fleet_cfg_defaults(&d);
    assert_false(fb_fleet_cfg_equal(f, &d));
    fb_gateway_free(gw);
    /* absent: the defaults, remote configuration off */
    gw = ok("gateway: {id: g}\n");
    assert_non_null(gw->fleet);
    assert_false(gw->fleet->remote_config);
    assert_true(fb_fleet_cfg_equal(gw->fleet, &d));
    fb_gateway_free(gw);
    /* errors, at their place */
    char *diag = NULL;
    gw = NULL;
    assert_int_not_equal(load("gateway: {id: g}\n"
                              "fleet:\n"
                              "  remote_config: {health_check: 10s}\n"
                              "  health: {disk_min_free: 150, colour: red}\n",
                              &gw, &diag),
                         0);
    assert_non_null(strstr(diag, ":3:18: fleet.remote_config needs fleet.state_dir"));
    assert_non_null(strstr(diag, ":4:27: fleet.health.disk_min_free: a percentage from 0 to 100, got 150"));
    assert_non_null(strstr(diag, ":4:32: unknown key 'colour' in fleet.health"));
    free(diag);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_sameness),
        cmocka_unit_test(test_fleet_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
