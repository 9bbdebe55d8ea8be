/* test_modbus.c — the Modbus driver glue (src/south/modbus/modbus.c) through
 * its struct fb_driver, against a small libmodbus TCP server running in a
 * thread on 127.0.0.1 (kernel-chosen port).  The server can leave holes that
 * answer exception 02, answer another exception at one address, stay mute
 * (timeouts) or drop the connection, so the read path's qualities, the split
 * after exception 02, the reconnect signals and every write function code are
 * checked over a real socket.  Values are put into the server's register map
 * by hand, not with our encoder. */
#include <arpa/inet.h>
#include <errno.h>
#include <modbus.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/fb.h"
#include "south/modbus/modbus.h"
#include "south/modbus/modbus_proto.h"

/* ------------------------------------------------------------ the server */
static struct srv {
    pthread_t thr;
    modbus_t *ctx;
    modbus_mapping_t *map;
    int lsock, port;
    atomic_bool stop;
    atomic_int mute, drop_next;
    int holes[8], nholes; /* holding registers that answer exception 02 */
    int exc_addr, exc_code;
    atomic_int mute_unit; /* this unit id gets no answer (a dead unit behind a gateway) */
    atomic_int gw_unit;   /* this unit id gets exception 0B (the gateway answers for it) */
    atomic_int last_unit, last_fc, requests;
    atomic_int late_next_ms; /* the next answer comes this late (after the client's time-out) */
    atomic_bool split;       /* holding registers are answered in two TCP segments, 30 ms apart */
} S;

static bool touches_hole(int addr, int count)
{
    for (int i = 0; i < S.nholes; i++)
        if (S.holes[i] >= addr && S.holes[i] < addr + count) return true;
    return false;
}

static bool wait_readable(int fd)
{
    while (!atomic_load(&S.stop)) {
        fd_set rf;
        FD_ZERO(&rf);
        FD_SET(fd, &rf);
        struct timeval tv = {0, 20000};
        int rc = select(fd + 1, &rf, NULL, NULL, &tv);
        if (rc > 0) return true;
        if (rc < 0 && errno != EINTR) return false;
    }
    return false;
}

static void *srv_main(void *arg)
{
    (void)arg;
    uint8_t q[MODBUS_TCP_MAX_ADU_LENGTH];
    int hl = modbus_get_header_length(S.ctx);
    while (wait_readable(S.lsock)) {
        int c = modbus_tcp_accept(S.ctx, &S.lsock);
        if (c < 0) continue;
        while (wait_readable(c)) {
            int rc = modbus_receive(S.ctx, q);
            if (rc < 0) break;
            if (rc == 0) continue;
            atomic_fetch_add(&S.requests, 1);
            atomic_store(&S.last_unit, q[hl - 1]);
            int fc = q[hl], addr = q[hl + 1] << 8 | q[hl + 2], count = q[hl + 3] << 8 | q[hl + 4];
            atomic_store(&S.last_fc, fc);
            if (atomic_load(&S.mute)) continue;
            if (atomic_load(&S.mute_unit) && q[hl - 1] == atomic_load(&S.mute_unit)) continue;
            if (atomic_load(&S.gw_unit) && q[hl - 1] == atomic_load(&S.gw_unit)) {
                modbus_reply_exception(S.ctx, q, MODBUS_EXCEPTION_GATEWAY_TARGET);
                continue;
            }
            if (atomic_exchange(&S.drop_next, 0)) break;
            int late = atomic_exchange(&S.late_next_ms, 0);
            if (late) usleep((useconds_t)late * 1000);
            if (atomic_load(&S.split) && fc == MODBUS_FC_READ_HOLDING_REGISTERS && count <= 125 &&
                addr + count <= 200) {
                uint8_t r[9 + 250];
                memcpy(r, q, 4); /* transaction and protocol id */
                r[4] = 0, r[5] = (uint8_t)(3 + 2 * count), r[6] = q[hl - 1], r[7] = 3, r[8] = (uint8_t)(2 * count);
                for (int i = 0; i < count; i++)
                    r[9 + 2 * i] = (uint8_t)(S.map->tab_registers[addr + i] >> 8),
                              r[10 + 2 * i] = (uint8_t)S.map->tab_registers[addr + i];
                send(c, r, 5, MSG_NOSIGNAL); /* not even the header whole */
                usleep(30000);
                send(c, r + 5, 4 + 2 * (size_t)count, MSG_NOSIGNAL);
                continue;
            }
            if (fc == MODBUS_FC_READ_HOLDING_REGISTERS && touches_hole(addr, count))
                modbus_reply_exception(S.ctx, q, MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS);
            else if (S.exc_code && fc == MODBUS_FC_READ_HOLDING_REGISTERS && addr <= S.exc_addr &&
                     S.exc_addr < addr + count)
                modbus_reply_exception(S.ctx, q, S.exc_code);
            else
                modbus_reply(S.ctx, q, rc, S.map);
        }
        close(c);
    }
    return NULL;
}

static int srv_start(void **state)
{
    (void)state;
    memset(&S, 0, sizeof S);
    S.ctx = modbus_new_tcp("127.0.0.1", 0);
    S.map = modbus_mapping_new(200, 200, 200, 200);
    if (!S.ctx || !S.map) return -1;
    S.lsock = modbus_tcp_listen(S.ctx, 4);
    if (S.lsock < 0) return -1;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    getsockname(S.lsock, (struct sockaddr *)&sa, &sl);
    S.port = ntohs(sa.sin_port);
    return pthread_create(&S.thr, NULL, srv_main, NULL);
}

static int srv_stop(void **state)
{
    (void)state;
    atomic_store(&S.stop, true);
    pthread_join(S.thr, NULL);
    close(S.lsock);
    modbus_mapping_free(S.map);
    modbus_free(S.ctx);
    return 0;
}

/* ------------------------------------------------------------ a tiny gateway */
#define MAXT 16
static struct {
    struct fb_gateway gw;
    struct fb_device dev;
    struct fb_conn conn;
    struct fb_device *devs[1];
    struct fb_tag tags[MAXT];
    char *atext[MAXT];             /* the tags' address texts (gw.atext) */
    struct fb_tag_proc proc[MAXT]; /* a tag's order */
    uint32_t ids[MAXT];
    struct fb_group g;
    struct fb_url_kv q[4];
    char *key;
    struct fb_batch *b;
} G;

static const struct fb_driver *D = &fb_driver_modbus;

/* Sets up a device on the test server with the given query and tags
 * ("hr:0:float32" or "hr:0:float32/CDAB"). */
static void gw_setup(const char *k1, const char *v1, const char *k2, const char *v2, const char *const *addrs, int n)
{
    memset(&G, 0, sizeof G);
    int nq = 0;
    char port[16];
    snprintf(port, sizeof port, "%d", S.port);
    if (k1) G.q[nq++] = (struct fb_url_kv){(char *)k1, (char *)v1};
    if (k2) G.q[nq++] = (struct fb_url_kv){(char *)k2, (char *)v2};
    G.dev.url =
        (struct fb_url){.scheme = "modbus-tcp", .host = "127.0.0.1", .path = "", .port = S.port, .q = G.q, .nq = nq};
    G.dev.name = "dev";
    G.dev.gw = &G.gw;
    G.dev.timeout_ns = 300000000;
    G.dev.conn = &G.conn;
    struct fb_err err = {0};
    assert_int_equal(D->device_init(&G.dev, &G.key, &err), 0);
    G.gw.tags = G.tags;
    G.gw.ntags = (uint32_t)n;
    G.gw.atext = (const char **)G.atext;
    for (int i = 0; i < n; i++) {
        struct fb_tag *t = &G.tags[i];
        t->id = (uint32_t)i;
        G.atext[i] = strdup(addrs[i]);
        G.proc[i] = fb_tag_proc_none;
        t->proc = &G.proc[i];
        char *sl = strchr(G.atext[i], '/');
        if (sl) {
            *sl = 0;
            G.proc[i].order = sl + 1;
        }
        t->name = G.atext[i];
        int rc = D->parse_address(&G.dev, t, &err);
        if (rc) fprintf(stderr, "%s: %s\n", addrs[i], err.msg);
        assert_int_equal(rc, 0);
        G.ids[i] = (uint32_t)i;
    }
    G.g.ids = G.ids;
    G.g.ntags = (uint32_t)n;
    assert_int_equal(D->plan(&G.dev, &G.g, &err), 0);
    G.devs[0] = &G.dev;
    G.conn.devs = G.devs;
    G.conn.ndevs = 1;
    G.conn.key = G.key;
    int rc = D->open(&G.conn, &err);
    if (rc) fprintf(stderr, "open: %s\n", err.msg);
    assert_int_equal(rc, 0);
    G.b = fb_batch_new(MAXT, 0, 4096);
}

static void gw_teardown(void)
{
    D->close(&G.conn);
    D->plan_free(&G.g);
    for (uint32_t i = 0; i < G.gw.ntags; i++) {
        D->free_address(&G.tags[i]);
        free(G.atext[i]);
    }
    D->device_free(&G.dev);
    fb_batch_free(G.b);
    free(G.key);
}

static int gw_read(void)
{
    fb_batch_reset(G.b);
    return D->read(&G.dev, &G.g, G.b);
}

static const struct fb_sample *sample(uint32_t tag)
{
    for (uint32_t i = 0; i < G.b->n; i++)
        if (G.b->s[i].tag == tag) return &G.b->s[i];
    fail_msg("no sample for tag %u", tag);
    return NULL;
}

/* ------------------------------------------------------------ tests */
static void test_read_types(void **state)
{
    (void)state;
    uint16_t *r = S.map->tab_registers;
    r[0] = 0x0000;
    r[1] = 0x3FC0; /* float32 1.5 CDAB */
    r[2] = 0xFFFB; /* int16 -5 */
    r[4] = 0x1234;
    r[5] = 0x5678; /* uint32 ABCD */
    r[10] = 0x4845;
    r[11] = 0x4C4C;
    r[12] = 0x4F00; /* "HELLO" */
    r[20] = 0x1234; /* bcd16 */
    r[21] = 0x0008; /* bit 3 */
    r[22] = 0xFFDF;
    r[23] = 0xFFFF;
    r[24] = 0xFFFF;
    r[25] = 0xFFFF; /* int64 -(2^53+1) */
    S.map->tab_input_registers[7] = 777;
    S.map->tab_bits[0] = 1;
    S.map->tab_input_bits[1] = 1;
    const char *a[] = {"hr:0:float32/CDAB",
                       "hr:2",
                       "hr:4:uint32",
                       "hr:10:string[5]",
                       "hr:20:bcd16",
                       "hr:21.3",
                       "hr:22:int64",
                       "ir:7:uint16",
                       "co:0",
                       "di:1",
                       "40003"};
    gw_setup("unit", "7", NULL, NULL, a, 11);
    assert_int_equal(gw_read(), 0);
    assert_int_equal(G.b->n, 11);
    assert_true(sample(0)->v.f == 1.5);
    assert_int_equal(sample(1)->v.i, -5);
    assert_int_equal(sample(2)->v.u, 0x12345678);
    assert_int_equal(sample(3)->v.s.len, 5);
    assert_memory_equal(sample(3)->v.s.p, "HELLO", 5);
    assert_int_equal(sample(4)->v.u, 1234);
    assert_true(sample(5)->v.b);
    assert_true(sample(6)->v.i == -9007199254740993ll);
    assert_int_equal(sample(7)->v.u, 777);
    assert_true(sample(8)->v.b);
    assert_true(sample(9)->v.b);
    assert_int_equal(sample(10)->v.i, -5);
    for (uint32_t i = 0; i < G.b->n; i++) assert_int_equal(G.b->s[i].quality, FB_Q_GOOD);
    assert_true(G.b->s[0].ts_src > 0);
    /* hr 0..25 in one request, ir, co, di: four requests */
    assert_int_equal(atomic_load(&G.dev.m.requests), 4);
    assert_int_equal(atomic_load(&S.last_unit), 7);
    assert_true(atomic_load(&G.dev.m.last_success_ns) > 0);
    assert_int_equal(atomic_load(&G.dev.m.rtt_count), 4);

    /* bad BCD digit → BadDecodingError, the others stay good */
    r[20] = 0x12A4;
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(4)->quality, FB_Q_BAD_DECODING);
    assert_int_equal(sample(1)->quality, FB_Q_GOOD);
    assert_int_equal(atomic_load(&G.dev.m.errors), 1); /* the item counts as failed */
    gw_teardown();
}

static void test_split_on_hole(void **state)
{
    (void)state;
    uint16_t *r = S.map->tab_registers;
    r[100] = 1;
    r[102] = 2;
    r[104] = 3;
    S.holes[0] = 101;
    S.holes[1] = 104;
    S.nholes = 2;
    const char *a[] = {"hr:100", "hr:102", "hr:104", "hr:101.2"};
    gw_setup(NULL, NULL, NULL, NULL, a, 4);
    struct mb_plan *p = G.g.plan;
    assert_int_equal(p->nblocks, 1);
    assert_int_equal(gw_read(), 0);
    assert_int_equal(p->splits, 1);
    assert_int_equal(p->nblocks, 4);
    assert_int_equal(sample(0)->quality, FB_Q_GOOD);
    assert_int_equal(sample(0)->v.i, 1);
    assert_int_equal(sample(1)->quality, FB_Q_GOOD);
    assert_int_equal(sample(1)->v.i, 2);
    assert_int_equal(sample(2)->quality, FB_Q_BAD_NODE_UNKNOWN);
    assert_int_equal(sample(3)->quality, FB_Q_BAD_NODE_UNKNOWN);
    assert_int_equal(G.b->n, 4);
    /* merged attempt + 4 single requests */
    assert_int_equal(atomic_load(&G.dev.m.requests), 5);
    /* next cycle: no merged attempt any more */
    assert_int_equal(gw_read(), 0);
    assert_int_equal(atomic_load(&G.dev.m.requests), 9);
    assert_int_equal(p->splits, 1);
    S.nholes = 0;
    gw_teardown();
}

static void test_exception_quality(void **state)
{
    (void)state;
    S.exc_addr = 150;
    S.exc_code = MODBUS_EXCEPTION_SLAVE_OR_SERVER_FAILURE;
    const char *a[] = {"hr:150", "co:3"};
    gw_setup(NULL, NULL, NULL, NULL, a, 2);
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_BAD_DEVICE_FAILURE);
    assert_int_equal(sample(1)->quality, FB_Q_GOOD);
    assert_int_equal(atomic_load(&G.dev.m.errors), 1);
    S.exc_code = MODBUS_EXCEPTION_GATEWAY_TARGET;
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_BAD_NO_COMM);
    S.exc_code = MODBUS_EXCEPTION_ILLEGAL_FUNCTION;
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_BAD_CONFIG);
    S.exc_code = 0;
    gw_teardown();
}

static void test_timeouts(void **state)
{
    (void)state;
    const char *a[] = {"hr:0", "ir:0", "co:0", "di:0"};
    gw_setup("timeout", "100ms", NULL, NULL, a, 4);
    atomic_store(&S.mute, 1);
    /* three blocks time out → the connection is reported half-open */
    assert_int_equal(gw_read(), FB_ETIMEDOUT);
    assert_int_equal(G.b->n, 4);
    for (uint32_t i = 0; i < 4; i++) assert_int_equal(sample(i)->quality, FB_Q_BAD_TIMEOUT);
    assert_int_equal(atomic_load(&G.dev.m.timeouts), 3);
    assert_int_equal(atomic_load(&G.dev.m.requests), 3);
    atomic_store(&S.mute, 0);
    gw_teardown();

    /* one timeout alone only marks the tags */
    const char *b[] = {"hr:0"};
    gw_setup("timeout", "100ms", NULL, NULL, b, 1);
    atomic_store(&S.mute, 1);
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_BAD_TIMEOUT);
    atomic_store(&S.mute, 0);
    usleep(50000);
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_GOOD);
    gw_teardown();
}

/* Reads over TCP are framed by the driver (tcp_read): an answer that comes
 * after its request timed out is not taken for the next request's, and an
 * answer split into pieces is put together. */
static void test_late_and_split_answers(void **state)
{
    (void)state;
    const char *a[] = {"hr:3"};
    gw_setup("timeout", "100ms", NULL, NULL, a, 1);
    S.map->tab_registers[3] = 1234;
    atomic_store(&S.late_next_ms, 160);
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_BAD_TIMEOUT);
    /* the late answer arrives while the next request waits: skipped */
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_GOOD);
    assert_int_equal(sample(0)->v.i, 1234);
    assert_int_equal(atomic_load(&G.dev.m.errors), 1);

    atomic_store(&S.split, true);
    S.map->tab_registers[3] = 4321;
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_GOOD);
    assert_int_equal(sample(0)->v.i, 4321);
    atomic_store(&S.split, false);
    gw_teardown();
}

static void test_connection_lost(void **state)
{
    (void)state;
    const char *a[] = {"hr:0", "ir:0"};
    gw_setup(NULL, NULL, NULL, NULL, a, 2);
    atomic_store(&S.drop_next, 1);
    assert_int_equal(gw_read(), FB_EIO);
    assert_int_equal(G.b->n, 2);
    assert_true(fb_q_bad(sample(0)->quality));
    assert_true(fb_q_bad(sample(1)->quality));
    /* reopen works */
    struct fb_err err = {0};
    assert_int_equal(D->open(&G.conn, &err), 0);
    assert_int_equal(gw_read(), 0);
    gw_teardown();
}

static void test_open_refused(void **state)
{
    (void)state;
    /* a port that was just free */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(s, (struct sockaddr *)&sa, sizeof sa);
    socklen_t sl = sizeof sa;
    getsockname(s, (struct sockaddr *)&sa, &sl);
    int port = ntohs(sa.sin_port);
    close(s);
    struct fb_device dev = {0};
    struct fb_conn conn = {0};
    struct fb_device *devs[1] = {&dev};
    dev.url = (struct fb_url){.scheme = "modbus-tcp", .host = "127.0.0.1", .path = "", .port = port};
    dev.name = "x";
    char *key;
    struct fb_err err = {0};
    assert_int_equal(D->device_init(&dev, &key, &err), 0);
    conn.devs = devs;
    conn.ndevs = 1;
    conn.key = key;
    assert_int_equal(D->open(&conn, &err), FB_EIO);
    char want[64];
    snprintf(want, sizeof want, "connect to 127.0.0.1:%d failed: Connection refused", port);
    assert_string_equal(err.msg, want);
    /* read on a closed connection: every tag Bad, FB_EIO */
    struct fb_tag t = {.id = 0, .name = "t"};
    const char *at[1] = {"hr:0"};
    struct fb_gateway gw = {.tags = &t, .ntags = 1, .atext = at};
    dev.gw = &gw;
    dev.conn = &conn;
    assert_int_equal(D->parse_address(&dev, &t, &err), 0);
    uint32_t id = 0;
    struct fb_group g = {.ids = &id, .ntags = 1};
    assert_int_equal(D->plan(&dev, &g, &err), 0);
    struct fb_batch *b = fb_batch_new(4, 0, 64);
    assert_int_equal(D->read(&dev, &g, b), FB_EIO);
    assert_int_equal(b->n, 1);
    assert_int_equal(b->s[0].quality, FB_Q_BAD_NOT_CONNECTED);
    fb_batch_free(b);
    D->plan_free(&g);
    D->free_address(&t);
    D->device_free(&dev);
    free(key);
}

static int do_write(int tag, struct fb_value v, struct fb_err *err) { return D->write(&G.dev, &G.tags[tag], &v, err); }

static void test_writes(void **state)
{
    (void)state;
    uint16_t *r = S.map->tab_registers;
    const char *a[] = {"hr:60", "hr:61:float32/CDAB", "co:10", "hr:63.4", "ir:5", "hr:64:string[4]", "hr:66:int64"};
    gw_setup(NULL, NULL, NULL, NULL, a, 7);
    struct fb_err err = {0};
    assert_int_equal(do_write(0, (struct fb_value){.type = FB_T_INT16, .i = -5}, &err), 0);
    assert_int_equal(r[60], 0xFFFB);
    assert_int_equal(atomic_load(&S.last_fc), MODBUS_FC_WRITE_SINGLE_REGISTER);
    assert_int_equal(do_write(1, (struct fb_value){.type = FB_T_FLOAT32, .f = 1.5}, &err), 0);
    assert_int_equal(r[61], 0x0000);
    assert_int_equal(r[62], 0x3FC0);
    assert_int_equal(atomic_load(&S.last_fc), MODBUS_FC_WRITE_MULTIPLE_REGISTERS);
    assert_int_equal(do_write(2, (struct fb_value){.type = FB_T_BOOL, .b = true}, &err), 0);
    assert_int_equal(S.map->tab_bits[10], 1);
    assert_int_equal(atomic_load(&S.last_fc), MODBUS_FC_WRITE_SINGLE_COIL);
    r[63] = 0x0101;
    assert_int_equal(do_write(3, (struct fb_value){.type = FB_T_BOOL, .b = true}, &err), 0);
    assert_int_equal(r[63], 0x0111);
    assert_int_equal(atomic_load(&S.last_fc), MODBUS_FC_MASK_WRITE_REGISTER);
    assert_int_equal(do_write(3, (struct fb_value){.type = FB_T_BOOL, .b = false}, &err), 0);
    assert_int_equal(r[63], 0x0101);
    assert_int_equal(do_write(4, (struct fb_value){.type = FB_T_INT16, .i = 1}, &err), FB_EACCES);
    assert_non_null(strstr(err.msg, "read-only"));
    struct fb_value s = {.type = FB_T_STRING};
    s.s.p = "AbC";
    s.s.len = 3;
    assert_int_equal(do_write(5, s, &err), 0);
    assert_int_equal(r[64], 0x4162);
    assert_int_equal(r[65], 0x4300);
    assert_int_equal(do_write(6, (struct fb_value){.type = FB_T_INT64, .i = -9007199254740993ll}, &err), 0);
    assert_int_equal(r[66], 0xFFDF);
    assert_int_equal(r[69], 0xFFFF);
    assert_int_equal(do_write(0, (struct fb_value){.type = FB_T_INT32, .i = 70000}, &err), FB_ERANGE);
    /* writes and write errors are counted by the runtime, once: not here as well */
    assert_int_equal(atomic_load(&G.dev.m.write_errors), 0);
    assert_int_equal(atomic_load(&G.dev.m.writes), 0);
    gw_teardown();

    /* alternative function codes */
    const char *b[] = {"hr:70", "co:11", "hr:71.0"};
    gw_setup("write_single", "fc16", "write_coil", "fc15", b, 3);
    assert_int_equal(do_write(0, (struct fb_value){.type = FB_T_INT16, .i = 9}, &err), 0);
    assert_int_equal(r[70], 9);
    assert_int_equal(atomic_load(&S.last_fc), MODBUS_FC_WRITE_MULTIPLE_REGISTERS);
    assert_int_equal(do_write(1, (struct fb_value){.type = FB_T_BOOL, .b = true}, &err), 0);
    assert_int_equal(S.map->tab_bits[11], 1);
    assert_int_equal(atomic_load(&S.last_fc), MODBUS_FC_WRITE_MULTIPLE_COILS);
    gw_teardown();
    const char *c[] = {"hr:72.15"};
    gw_setup("bit_write", "rmw", NULL, NULL, c, 1);
    r[72] = 0x00FF;
    assert_int_equal(do_write(0, (struct fb_value){.type = FB_T_BOOL, .b = true}, &err), 0);
    assert_int_equal(r[72], 0x80FF);
    assert_int_equal(atomic_load(&S.last_fc), MODBUS_FC_WRITE_SINGLE_REGISTER);
    gw_teardown();
}

static void test_write_exception(void **state)
{
    (void)state;
    S.exc_code = 0;
    const char *a[] = {"hr:250"}; /* beyond the 200-register map: exception 02 */
    gw_setup(NULL, NULL, NULL, NULL, a, 1);
    struct fb_err err = {0};
    int rc = do_write(0, (struct fb_value){.type = FB_T_INT16, .i = 1}, &err);
    if (rc != FB_EEXCEPTION) fprintf(stderr, "write: %d %s\n", rc, err.msg);
    assert_int_equal(rc, FB_EEXCEPTION);
    assert_non_null(strstr(err.msg, "exception 02 (illegal data address)"));
    assert_int_equal(atomic_load(&G.dev.m.write_errors), 0); /* the runtime counts it */
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_BAD_NODE_UNKNOWN);
    gw_teardown();
}

/* Two unit ids on one connection: the unit is set per request; the delay
 * of a device separates its requests. */
static void test_shared_conn_and_delay(void **state)
{
    (void)state;
    S.map->tab_registers[0] = 11;
    const char *a[] = {"hr:0", "ir:0"};
    gw_setup("unit", "4", "delay", "60ms", a, 2);
    assert_true(G.dev.delay_ns == 60000000);
    int64_t t0 = fb_mono_ns();
    assert_int_equal(gw_read(), 0);
    int64_t t1 = fb_mono_ns();
    assert_true(t1 - t0 >= 60000000); /* two requests, one delay between them */
    assert_int_equal(atomic_load(&S.last_unit), 4);

    /* a second device behind the same connection */
    struct fb_device d2 = {0};
    struct fb_url_kv q2[] = {{"unit", "9"}};
    d2.url = (struct fb_url){.scheme = "modbus-tcp", .host = "127.0.0.1", .path = "", .port = S.port, .q = q2, .nq = 1};
    d2.name = "dev2";
    d2.gw = &G.gw;
    d2.conn = &G.conn;
    char *key2;
    struct fb_err err = {0};
    assert_int_equal(D->device_init(&d2, &key2, &err), 0);
    assert_string_equal(key2, G.key); /* same connection key */
    uint32_t id = 0;
    struct fb_group g2 = {.ids = &id, .ntags = 1};
    assert_int_equal(D->plan(&d2, &g2, &err), 0);
    struct fb_batch *b = fb_batch_new(4, 0, 64);
    assert_int_equal(D->read(&d2, &g2, b), 0);
    assert_int_equal(atomic_load(&S.last_unit), 9);
    assert_int_equal(b->s[0].v.i, 11);
    assert_int_equal(gw_read(), 0);
    assert_int_equal(atomic_load(&S.last_unit), 4);
    assert_int_equal(D->read(&d2, &g2, b), 0);
    assert_int_equal(atomic_load(&S.last_unit), 9);
    fb_batch_free(b);
    D->plan_free(&g2);
    D->device_free(&d2);
    free(key2);
    gw_teardown();
}

/* A second device (unit) on G's connection. */
struct unit2 {
    struct fb_device d;
    struct fb_url_kv q[2];
    char *key;
    struct fb_group g;
    struct fb_batch *b;
};

static void unit2_setup(struct unit2 *u, const char *unit)
{
    memset(u, 0, sizeof *u);
    u->q[0] = (struct fb_url_kv){"unit", (char *)unit};
    u->q[1] = (struct fb_url_kv){"timeout", "100ms"};
    u->d.url =
        (struct fb_url){.scheme = "modbus-tcp", .host = "127.0.0.1", .path = "", .port = S.port, .q = u->q, .nq = 2};
    u->d.name = "dev2";
    u->d.gw = &G.gw;
    u->d.conn = &G.conn;
    struct fb_err err = {0};
    assert_int_equal(D->device_init(&u->d, &u->key, &err), 0);
    u->g.ids = G.ids; /* the same three tags as G: hr:0, ir:0, co:0 — three requests */
    u->g.ntags = 3;
    u->d.ntags = 3;
    assert_int_equal(D->plan(&u->d, &u->g, &err), 0);
    u->b = fb_batch_new(MAXT, 0, 64);
}

static void unit2_free(struct unit2 *u)
{
    fb_batch_free(u->b);
    D->plan_free(&u->g);
    D->device_free(&u->d);
    free(u->key);
}

static int unit2_read(struct unit2 *u)
{
    fb_batch_reset(u->b);
    return D->read(&u->d, &u->g, u->b);
}

/* Units 4 and 9 behind one TCP connection (a TCP→RTU gateway): unit 9 dies.
 * It is reported offline after three unanswered requests, its tags turn Bad
 * without holding up the line, unit 4 keeps reading and the link is not
 * reconnected; unit 9 is probed again later and comes back online.  Only
 * when unit 4 stops answering too is the link reconnected. */
static void test_silent_unit(void **state)
{
    (void)state;
    S.map->tab_registers[0] = 42;
    const char *a[] = {"hr:0", "ir:0", "co:0"};
    gw_setup("unit", "4", "timeout", "100ms", a, 3);
    G.dev.ntags = 3;
    struct unit2 u;
    unit2_setup(&u, "9");
    struct fb_device *both[2] = {&G.dev, &u.d};
    G.conn.devs = both;
    G.conn.ndevs = 2;
    atomic_store(&G.dev.state, FB_DEV_ONLINE);
    atomic_store(&u.d.state, FB_DEV_ONLINE);

    atomic_store(&S.mute_unit, 9);
    int req0 = atomic_load(&S.requests);
    assert_int_equal(unit2_read(&u), 0); /* not FB_ETIMEDOUT: unit 4 is fine */
    assert_int_equal(atomic_load(&S.requests) - req0, 3);
    for (uint32_t i = 0; i < 3; i++) assert_int_equal(u.b->s[i].quality, FB_Q_BAD_TIMEOUT);
    assert_int_equal(atomic_load(&u.d.state), FB_DEV_OFFLINE);
    assert_int_equal(atomic_load(&u.d.m.errors), 3);
    assert_int_equal(atomic_load(&u.d.m.timeouts), 3);
    assert_int_equal(atomic_load(&G.dev.state), FB_DEV_ONLINE);

    /* unit 4 is unaffected */
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_GOOD);
    assert_int_equal(sample(0)->v.i, 42);

    /* the silent unit is not asked until its probe is due: no request, no wait */
    req0 = atomic_load(&S.requests);
    int64_t t0 = fb_mono_ns();
    assert_int_equal(unit2_read(&u), 0);
    assert_true(fb_mono_ns() - t0 < 50000000);
    assert_int_equal(atomic_load(&S.requests), req0);
    assert_int_equal(u.b->n, 3);
    for (uint32_t i = 0; i < 3; i++) assert_int_equal(u.b->s[i].quality, FB_Q_BAD_COMM);
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_GOOD);

    /* the probe (one request, not three) when it is due, still silent */
    usleep(1100000);
    req0 = atomic_load(&S.requests);
    assert_int_equal(unit2_read(&u), 0);
    assert_int_equal(atomic_load(&S.requests) - req0, 1);
    assert_int_equal(u.b->s[0].quality, FB_Q_BAD_TIMEOUT);
    assert_int_equal(u.b->s[1].quality, FB_Q_BAD_COMM);
    assert_int_equal(atomic_load(&u.d.state), FB_DEV_OFFLINE);

    /* unit 4 stops answering too: now the link itself is suspect */
    atomic_store(&S.mute, 1);
    assert_int_equal(gw_read(), FB_ETIMEDOUT); /* hr, ir, co time out: every unit on the link is silent */
    for (uint32_t i = 0; i < 3; i++) assert_int_equal(sample(i)->quality, FB_Q_BAD_TIMEOUT);
    atomic_store(&S.mute, 0);
    atomic_store(&S.mute_unit, 0);

    /* reconnect: both get a fresh start; unit 9 answers again */
    struct fb_err err = {0};
    assert_int_equal(D->open(&G.conn, &err), 0);
    assert_int_equal(unit2_read(&u), 0);
    for (uint32_t i = 0; i < 3; i++) assert_int_equal(u.b->s[i].quality, FB_Q_GOOD);

    /* the link dies: unit 4 times out three times, but unit 9 has not been asked
     * since it last answered and may well answer — unit 4 alone goes offline; once
     * unit 9 times out too, nobody answers on the link: reconnect */
    atomic_store(&S.mute, 1);
    assert_int_equal(gw_read(), 0);
    assert_int_equal(atomic_load(&G.dev.state), FB_DEV_OFFLINE);
    assert_int_equal(unit2_read(&u), FB_ETIMEDOUT);
    atomic_store(&S.mute, 0);
    assert_int_equal(D->open(&G.conn, &err), 0);
    atomic_store(&G.dev.state, FB_DEV_ONLINE); /* what the core does after a connect */
    atomic_store(&u.d.state, FB_DEV_ONLINE);
    assert_int_equal(gw_read(), 0);
    assert_int_equal(sample(0)->quality, FB_Q_GOOD);

    /* a gateway answering 0B for unit 9: offline after three, the link is never blamed */
    atomic_store(&S.gw_unit, 9);
    assert_int_equal(unit2_read(&u), 0);
    assert_int_equal(u.b->s[0].quality, FB_Q_BAD_NO_COMM);
    assert_int_equal(atomic_load(&u.d.state), FB_DEV_OFFLINE);
    atomic_store(&S.gw_unit, 0);
    /* …and its first answer brings it back online */
    usleep(1100000);
    assert_int_equal(unit2_read(&u), 0);
    assert_int_equal(u.b->s[0].quality, FB_Q_GOOD);
    assert_int_equal(u.b->s[2].quality, FB_Q_GOOD);
    assert_int_equal(atomic_load(&u.d.state), FB_DEV_ONLINE);

    G.conn.devs = G.devs;
    G.conn.ndevs = 1;
    unit2_free(&u);
    gw_teardown();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_types),
        cmocka_unit_test(test_split_on_hole),
        cmocka_unit_test(test_exception_quality),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_late_and_split_answers),
        cmocka_unit_test(test_connection_lost),
        cmocka_unit_test(test_open_refused),
        cmocka_unit_test(test_writes),
        cmocka_unit_test(test_write_exception),
        cmocka_unit_test(test_shared_conn_and_delay),
        cmocka_unit_test(test_silent_unit),
    };
    return cmocka_run_group_tests(tests, srv_start, srv_stop);
}
