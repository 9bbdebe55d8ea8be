/* test_privs.c — the start-up privilege check (core/privs.c): the advice for
 * each case, the capability mask, and the lowest port this process listens on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/privs.h"

#define NET_BIND (1ULL << 10)

static void test_advice(void **st)
{
    (void)st;
    char m[700];
    /* an unprivileged user without capabilities: nothing to say */
    assert_int_equal(fb_privs_advice(1000, 0, 0, m, sizeof m), 0);
    assert_string_equal(m, "");
    assert_int_equal(fb_privs_advice(1000, NET_BIND, 502, m, sizeof m), 0);
    assert_int_equal(fb_privs_advice(1000, 0, 9100, m, sizeof m), 0);
    /* root: always a warning, with the one capability a low port needs */
    assert_int_equal(fb_privs_advice(0, 0x1ffffffffffULL, 0, m, sizeof m), 1);
    assert_non_null(strstr(m, "running as root, which fieldbridge does not need"));
    assert_null(strstr(m, "CAP_NET_BIND_SERVICE alone"));
    assert_int_equal(fb_privs_advice(0, 0x1ffffffffffULL, 502, m, sizeof m), 1);
    assert_non_null(strstr(m, "listens on port 502 (below 1024), for which CAP_NET_BIND_SERVICE alone is enough"));
    /* capabilities beyond what the ports need */
    assert_int_equal(fb_privs_advice(1000, NET_BIND, 9100, m, sizeof m), 1);
    assert_non_null(strstr(m, "CapEff 0x400"));
    assert_non_null(strstr(m, "none: it listens on no port below 1024"));
    assert_int_equal(fb_privs_advice(1000, NET_BIND | (1ULL << 21), 502, m, sizeof m), 1);
    assert_non_null(strstr(m, "CapEff 0x200000"));
    assert_null(strstr(m, "CAP_SYS_NICE"));
    /* CAP_SYS_NICE for control.priority: still extra, with the way without it */
    assert_int_equal(fb_privs_advice(1000, 1ULL << 23, 0, m, sizeof m), 1);
    assert_non_null(strstr(m, "CapEff 0x800000"));
    assert_non_null(strstr(m, "CAP_SYS_NICE is not needed for control.priority either: LimitRTPRIO="));
}

static void test_lowest_listen_port(void **st)
{
    (void)st;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &l), 0);
    int port = ntohs(a.sin_port);
    assert_int_equal(fb_privs_lowest_listen_port(), 0); /* bound, not listening */
    assert_int_equal(listen(s, 1), 0);
    assert_int_equal(fb_privs_lowest_listen_port(), port);
    close(s);
    assert_int_equal(fb_privs_lowest_listen_port(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_advice),
        cmocka_unit_test(test_lowest_listen_port),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
