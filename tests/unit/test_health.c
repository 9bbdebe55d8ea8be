/* test_health.c — the box's health, read from captured kernel files: the
 * /proc/stat CPU line and cores, /proc/meminfo (with and without
 * MemAvailable), /proc/net/dev (header lines, names with and without a
 * space after the colon), a thermal class directory laid out like a
 * board's sysfs (zones in numeric order, a sensor that cannot be read), a
 * full sample of this machine, the status JSON of a sample, the lifecycle
 * state names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/health.h"

static void test_stat(void **st)
{
    (void)st;
    const char *text = "cpu  100 5 50 800 20 3 2 10 0 0\n"
                       "cpu0 50 2 25 400 10 1 1 5 0 0\n"
                       "cpu1 50 3 25 400 10 2 1 5 0 0\n"
                       "intr 12345\n"
                       "ctxt 999\n";
    uint64_t busy, total;
    uint32_t n;
    assert_int_equal(fb_health_parse_stat(text, &busy, &total, &n), 0);
    assert_int_equal(busy, 100 + 5 + 50 + 3 + 2 + 10); /* iowait and idle are not busy */
    assert_int_equal(total, busy + 800 + 20);
    assert_int_equal(n, 2);
    assert_int_not_equal(fb_health_parse_stat("intr 1\n", &busy, &total, &n), 0);
    assert_int_not_equal(fb_health_parse_stat("cpu  1 2\n", &busy, &total, &n), 0);
}

static void test_meminfo(void **st)
{
    (void)st;
    uint64_t t, a;
    assert_int_equal(fb_health_parse_meminfo("MemTotal:       16384 kB\nMemFree:     1000 kB\n"
                                             "MemAvailable:    8192 kB\nBuffers: 10 kB\n",
                                             &t, &a),
                     0);
    assert_int_equal(t, 16384ULL * 1024);
    assert_int_equal(a, 8192ULL * 1024);
    /* an old kernel without MemAvailable: free + buffers + cache */
    assert_int_equal(
        fb_health_parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n", &t, &a), 0);
    assert_int_equal(a, 420ULL * 1024);
    assert_int_not_equal(fb_health_parse_meminfo("Nothing: 1 kB\n", &t, &a), 0);
}

static void test_netdev(void **st)
{
    (void)st;
    const char *text =
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
        "carrier compressed\n"
        "    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n"
        "  eth0:123456789012 100 1 2 0 0 0 5 987654321 90 3 4 0 0 0 0\n";
    struct fb_health h;
    memset(&h, 0, sizeof h);
    assert_int_equal(fb_health_parse_netdev(text, &h), 0);
    assert_int_equal(h.nnet, 2);
    assert_string_equal(h.net[0].name, "lo");
    assert_string_equal(h.net[1].name, "eth0");
    assert_true(h.net[1].rx_bytes == 123456789012ULL);
    assert_int_equal(h.net[1].rx_packets, 100);
    assert_int_equal(h.net[1].rx_errors, 1);
    assert_int_equal(h.net[1].rx_dropped, 2);
    assert_int_equal(h.net[1].tx_bytes, 987654321);
    assert_int_equal(h.net[1].tx_packets, 90);
    assert_int_equal(h.net[1].tx_errors, 3);
    assert_int_equal(h.net[1].tx_dropped, 4);
    assert_int_not_equal(fb_health_parse_netdev("only one line\n", &h), 0);
}

static void put(const char *dir, const char *name, const char *text)
{
    char p[1300];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_thermal(void **st)
{
    (void)st;
    char root[] = "/tmp/fb_thermal_XXXXXX";
    assert_non_null(mkdtemp(root));
    const char *zones[] = {"thermal_zone10", "thermal_zone2", "thermal_zone1", "cooling_device0"};
    for (size_t i = 0; i < 4; i++) {
        char d[600];
        snprintf(d, sizeof d, "%.500s/%s", root, zones[i]);
        assert_int_equal(mkdir(d, 0755), 0);
        put(d, "type", i == 3 ? "Processor\n" : "soc-thermal\n");
        if (i == 0) put(d, "temp", "-5500\n");
        if (i == 1) put(d, "temp", "47123\n");
        /* thermal_zone1: no temp file (a sensor that is off) */
    }
    struct fb_health h;
    memset(&h, 0, sizeof h);
    fb_health_read_thermal(root, &h);
    assert_int_equal(h.ntemp, 2);
    assert_string_equal(h.temp[0].zone, "thermal_zone2"); /* numeric order */
    assert_string_equal(h.temp[0].type, "soc-thermal");
    assert_true(h.temp[0].celsius == 47.123);
    assert_string_equal(h.temp[1].zone, "thermal_zone10");
    assert_true(h.temp[1].celsius == -5.5);
    /* a board without thermal zones */
    memset(&h, 0, sizeof h);
    fb_health_read_thermal("/nonexistent/thermal", &h);
    assert_int_equal(h.ntemp, 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
}

/* This machine: two samples give a CPU rate; everything lands in the JSON. */
static void test_sample_and_json(void **st)
{
    (void)st;
    struct fb_health a, b;
    fb_health_sample(&a, NULL, "/tmp", NULL, NULL);
    assert_true(a.ts > 0 && a.cpu_usage < 0); /* one sample: no rate yet */
    assert_true(a.mem_total > 0 && a.mem_available > 0 && a.mem_available <= a.mem_total);
    assert_true(a.disk_ok && a.disk_total > 0);
    assert_true(a.ncpu >= 1);
    usleep(50000);
    fb_health_sample(&b, &a, "/tmp", NULL, NULL);
    assert_true(b.cpu_usage >= 0 && b.cpu_usage <= 1);
    struct fb_buf out;
    fb_buf_init(&out);
    fb_buf_putc(&out, '{');
    fb_health_json(&out, &b);
    fb_buf_putc(&out, '}');
    json_error_t je;
    json_t *j = json_loads(fb_buf_cstr(&out), 0, &je);
    assert_non_null(j);
    assert_true(json_is_number(json_object_get(json_object_get(j, "cpu"), "usage")));
    assert_true(json_integer_value(json_object_get(json_object_get(j, "memory"), "total_bytes")) ==
                (json_int_t)b.mem_total);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "disk"), "path")), "/tmp");
    assert_true(json_is_object(json_object_get(j, "network")));
    assert_true(json_is_object(json_object_get(j, "temperature")));
    assert_true(json_is_boolean(json_object_get(json_object_get(j, "clock"), "synced")));
    json_decref(j);
    fb_buf_free(&out);
}

static void test_states(void **st)
{
    (void)st;
    const char *names[] = {"provisioning", "online", "offline", "maintenance", "error", "decommissioned"};
    for (int i = 0; i < FB_GW__N; i++) {
        assert_string_equal(fb_gw_state_name(i), names[i]);
        assert_int_equal(fb_gw_state_parse(names[i]), i);
    }
    assert_int_equal(fb_gw_state_parse("running"), -1);
    assert_string_equal(fb_gw_state_name(99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stat),    cmocka_unit_test(test_meminfo),         cmocka_unit_test(test_netdev),
        cmocka_unit_test(test_thermal), cmocka_unit_test(test_sample_and_json), cmocka_unit_test(test_states),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
