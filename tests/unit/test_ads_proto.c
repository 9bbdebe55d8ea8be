/* test_ads_proto.c — the ADS codec without sockets (plus one UDP exchange for
 * the add-route command): golden frames from PROTOCOLS.md §2, every
 * truncation of every valid reply refused cleanly, sum-command packing, the
 * notification stream, the symbol / data-type upload resolver, the value
 * codec round trips and range checks, URL options, and the UDP 48899 route
 * packets. */
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "cli/ads_route.h"
#include "core/config.h"
#include "core/env.h"
#include "core/url.h"
#include "south/ads/ads.h"
#include "south/ads/ads_proto.h"

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (h[0] && h[1] && n < cap) {
        if (h[0] == ' ') {
            h++;
            continue;
        }
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
        h += 2;
    }
    return n;
}

static struct ads_hdr tmpl(void)
{
    struct ads_hdr h = {0};
    ads_netid_parse("5.80.192.200.1.1", &h.target);
    h.target_port = 851;
    ads_netid_parse("192.168.0.5.1.1", &h.source);
    h.source_port = 32905;
    h.invoke = 0x11223344;
    return h;
}

static void test_netid_and_opts(void **st)
{
    (void)st;
    struct ads_netid n;
    char b[24];
    assert_int_equal(ads_netid_parse("5.80.192.200.1.1", &n), 0);
    assert_string_equal(ads_netid_fmt(&n, b, sizeof b), "5.80.192.200.1.1");
    assert_int_not_equal(ads_netid_parse("5.80.192.200.1", &n), 0);
    assert_int_not_equal(ads_netid_parse("5.80.192.200.1.256", &n), 0);
    assert_int_not_equal(ads_netid_parse("5.80.192.200.1.1.", &n), 0);
    assert_int_not_equal(ads_netid_parse("a.b.c.d.e.f", &n), 0);

    struct fb_url u;
    struct fb_err e = {0};
    struct ads_opts o;
    assert_int_equal(fb_url_parse("ads://10.0.0.5?net_id=5.80.192.200.1.1&port=851&mode=notify&cycle=50ms", &u, &e), 0);
    assert_int_equal(ads_opts_parse(&u, 0, &o, &e), 0);
    assert_int_equal(o.port, 48898);
    assert_int_equal(o.ams_port, 851);
    assert_int_equal(o.mode, ADS_MODE_NOTIFY);
    assert_int_equal(o.cycle_ns, 50000000);
    assert_false(o.have_source);
    char *k = ads_opts_conn_key(&o);
    assert_string_equal(k, "ads:10.0.0.5:48898:5.80.192.200.1.1:851");
    free(k);
    fb_url_free(&u);
    const char *bad[] = {"ads://10.0.0.5?port=851",                       /* no net_id */
                         "ads://10.0.0.5?net_id=1.2.3&port=851",          /* bad net_id */
                         "ads://10.0.0.5?net_id=1.2.3.4.5.6&mode=push",   /* bad mode */
                         "ads://10.0.0.5?net_id=1.2.3.4.5.6&max_sum=501", /* too many */
                         "ads://10.0.0.5?net_id=1.2.3.4.5.6&colour=blue", /* unknown */
                         "ads://?net_id=1.2.3.4.5.6"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        if (fb_url_parse(bad[i], &u, &e) == 0) {
            assert_int_equal(ads_opts_parse(&u, 0, &o, &e), FB_EINVAL);
            assert_true(e.msg[0] != 0);
            fb_url_free(&u);
        }
    }
}

static void test_types_and_addresses(void **st)
{
    (void)st;
    struct ads_tinfo ti;
    assert_int_equal(ads_type_parse("REAL", 4, &ti), 0);
    assert_int_equal(ti.fbtype, FB_T_FLOAT32);
    assert_int_equal(ti.size, 4);
    assert_int_equal(ads_type_parse("string(20)", 10, &ti), 0);
    assert_int_equal(ti.size, 21);
    assert_int_equal(ti.str_len, 20);
    assert_int_equal(ads_type_parse("STRING", 6, &ti), 0);
    assert_int_equal(ti.size, 81);
    assert_int_equal(ads_type_parse("DATE_AND_TIME", 13, &ti), 0);
    assert_int_equal(ti.type, ADS_T_DT);
    assert_int_equal(ads_type_parse("float64", 7, &ti), 0);
    assert_int_equal(ti.type, ADS_T_LREAL);
    assert_int_not_equal(ads_type_parse("STRING(0)", 9, &ti), 0);
    assert_int_not_equal(ads_type_parse("STRING(256)", 11, &ti), 0);
    assert_int_not_equal(ads_type_parse("ST_Recipe", 9, &ti), 0);

    struct ads_addr a;
    struct fb_err e = {0};
    assert_int_equal(ads_addr_parse("MAIN.fTemperature", &a, &e), 0);
    assert_string_equal(a.name, "MAIN.fTemperature");
    assert_false(a.typed);
    assert_int_equal(ads_addr_parse("MAIN.nCount:DINT", &a, &e), 0);
    assert_string_equal(a.name, "MAIN.nCount");
    assert_true(a.typed);
    assert_int_equal(a.ti.type, ADS_T_DINT);
    assert_int_equal(ads_addr_parse("MAIN.a[3]:STRING(10)", &a, &e), 0);
    assert_string_equal(a.name, "MAIN.a[3]");
    assert_int_equal(a.ti.size, 11);
    assert_int_equal(ads_addr_parse("MAIN.x:FLOAT", &a, &e), FB_EINVAL);
    assert_int_equal(ads_addr_parse(":INT", &a, &e), FB_EINVAL);
    assert_int_equal(ads_addr_parse("MAIN x", &a, &e), FB_EINVAL);
    assert_int_equal(ads_addr_parse("", &a, &e), FB_EINVAL);
}

static void test_golden_requests(void **st)
{
    (void)st;
    uint8_t b[256], want[256];
    struct ads_hdr h = tmpl();
    /* Read IG 0xF005 IO 0x1000 len 4 */
    size_t n = ads_build_read(b, sizeof b, &h, 0xF005, 0x1000, 4);
    size_t wn = unhex("0000 2c000000"
                      "0550c0c80101 5303 c0a800050101 8980 0200 0400 0c000000 00000000 44332211"
                      "05f00000 00100000 04000000",
                      want, sizeof want);
    assert_int_equal(n, wn);
    assert_memory_equal(b, want, n);
    /* AddDeviceNotification: 40 bytes, 100 ns units */
    n = ads_build_addnote(b, sizeof b, &h, 0xF005, 0x1000, 2, ADS_TRANS_ONCHANGE, 0, 1000000);
    assert_int_equal(n, ADS_HDR + 40);
    assert_int_equal(b[ADS_TCP_HDR + 16], ADS_CMD_ADDNOTE);
    assert_int_equal(b[ADS_HDR + 12], 4);
    assert_int_equal(b[ADS_HDR + 20] | b[ADS_HDR + 21] << 8 | b[ADS_HDR + 22] << 16, 1000000);
    /* ReadWrite of a handle, name with NUL */
    n = ads_build_rw(b, sizeof b, &h, 0xF003, 0, 4, (const uint8_t *)"MAIN.x", 7);
    assert_int_equal(n, ADS_HDR + 16 + 7);
    assert_memory_equal(b + ADS_HDR + 16, "MAIN.x", 7);
    /* too small a buffer: nothing built */
    assert_int_equal(ads_build_rw(b, 40, &h, 0xF003, 0, 4, (const uint8_t *)"MAIN.x", 7), 0);
    /* round trip of the header */
    struct ads_hdr p;
    n = ads_build_simple(b, sizeof b, &h, ADS_CMD_STATE);
    assert_int_equal(ads_parse_hdr(b, n, &p), 0);
    assert_int_equal(p.cmd, ADS_CMD_STATE);
    assert_int_equal(p.flags, ADS_SF_REQUEST);
    assert_int_equal(p.invoke, 0x11223344);
    assert_int_equal(p.target_port, 851);
    assert_int_equal(ads_frame_len(b, 6), (long)n);
    b[0] = 1; /* a router command */
    assert_true(ads_frame_len(b, 6) < 0);
    b[0] = 0;
    assert_int_equal(ads_parse_hdr(b, n - 1, &p), FB_EPROTO);
}

static void test_replies_and_truncations(void **st)
{
    (void)st;
    uint8_t d[128];
    uint32_t res, len, handle, size;
    const uint8_t *data;
    size_t n = unhex("00000000 04000000 0000ac41", d, sizeof d);
    assert_int_equal(ads_parse_read(d, n, &res, &data, &len), 0);
    assert_int_equal(res, 0);
    assert_int_equal(len, 4);
    for (size_t k = 0; k < n; k++) assert_int_equal(ads_parse_read(d, k, &res, &data, &len), FB_EPROTO);
    /* an error reply may stop after its result */
    n = unhex("10070000", d, sizeof d);
    assert_int_equal(ads_parse_read(d, n, &res, &data, &len), 0);
    assert_int_equal(res, 0x710);
    assert_null(data);
    /* state */
    uint16_t as, ds;
    n = unhex("00000000 0500 0000", d, sizeof d);
    assert_int_equal(ads_parse_state(d, n, &res, &as, &ds), 0);
    assert_int_equal(as, 5);
    for (size_t k = 0; k < n; k++) assert_int_equal(ads_parse_state(d, k, &res, &as, &ds), FB_EPROTO);
    /* device info */
    struct ads_devinfo di;
    n = unhex("00000000 03 01 b80f 506c63333020417070000000000000 00", d, sizeof d);
    assert_int_equal(ads_parse_devinfo(d, n, &res, &di), 0);
    assert_string_equal(di.name, "Plc30 App");
    assert_int_equal(di.build, 4024);
    for (size_t k = 0; k < n; k++) assert_int_equal(ads_parse_devinfo(d, k, &res, &di), FB_EPROTO);
    /* handles: classic and extended */
    n = unhex("00100000", d, sizeof d);
    assert_int_equal(ads_parse_handle(d, n, &handle, &size), 0);
    assert_int_equal(handle, 0x1000);
    n = unhex("00100000 02000000 00000000 0300 494e5400", d, sizeof d);
    assert_int_equal(ads_parse_handle(d, n, &handle, &size), 0);
    assert_int_equal(size, 2);
    for (size_t k = 5; k < 14; k++) assert_int_equal(ads_parse_handle(d, k, &handle, &size), FB_EPROTO);
    n = unhex("00100000 02000000 00000000 ff00 494e5400", d, sizeof d);
    assert_int_equal(ads_parse_handle(d, n, &handle, &size), FB_EPROTO);
    /* add notification */
    n = unhex("00000000 07000000", d, sizeof d);
    assert_int_equal(ads_parse_addnote(d, n, &res, &handle), 0);
    assert_int_equal(handle, 7);
    for (size_t k = 0; k < n; k++) assert_int_equal(ads_parse_addnote(d, k, &res, &handle), FB_EPROTO);
}

struct seen {
    int n;
    uint32_t h[4];
    int64_t ts[4];
    uint32_t v[4];
};
static void seen_cb(void *ctx, int64_t ts, uint32_t h, const uint8_t *data, uint32_t size)
{
    struct seen *s = ctx;
    if (s->n < 4) {
        s->h[s->n] = h;
        s->ts[s->n] = ts;
        s->v[s->n] = size >= 2 ? (uint32_t)(data[0] | data[1] << 8) : 0;
    }
    s->n++;
}

static void test_notifications(void **st)
{
    (void)st;
    uint8_t d[128];
    /* len, 1 stamp: FILETIME of 2024-01-01T00:00:00Z, 2 samples */
    size_t n = unhex("28000000 01000000 00c08976453cda01 02000000"
                     "01000000 02000000 2a00"
                     "02000000 04000000 07000000",
                     d, sizeof d);
    /* fix the stream length: everything after the first u32 */
    d[0] = (uint8_t)(n - 4);
    struct seen s = {0};
    assert_int_equal(ads_parse_notes(d, n, seen_cb, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.h[0], 1);
    assert_int_equal(s.v[0], 42);
    assert_int_equal(s.h[1], 2);
    assert_true(s.ts[0] == 1704067200000000000LL);
    for (size_t k = 0; k < n; k++) {
        struct seen s2 = {0};
        assert_int_equal(ads_parse_notes(d, k, seen_cb, &s2), FB_EPROTO);
        assert_int_equal(s2.n, 0); /* validated before any callback */
    }
    d[n - 5] = 0x40; /* a sample size beyond the stream */
    struct seen s3 = {0};
    assert_int_equal(ads_parse_notes(d, n, seen_cb, &s3), FB_EPROTO);
    assert_int_equal(s3.n, 0);
    assert_true(ads_filetime_to_ns(116444736000000000ULL) == 0);
}

static void test_sum_commands(void **st)
{
    (void)st;
    uint8_t w[256], d[256];
    struct ads_sub s[3] = {{0xF008, 0, 1}, {0xF005, 0x10, 4}, {0xF005, 0x11, 2}};
    uint32_t rlen;
    size_t n = ads_sum_read_req(w, sizeof w, s, 3, &rlen);
    assert_int_equal(n, 36);
    assert_int_equal(rlen, 12 + 7);
    assert_int_equal(ads_sum_read_req(w, 20, s, 3, &rlen), 0);
    /* reply: results, then every slot (a failed one still has its bytes) */
    size_t dn = unhex("00000000 10070000 00000000  07 00000000 2a00", d, sizeof d);
    uint32_t res[3];
    const uint8_t *dp[3];
    assert_int_equal(ads_sum_read_parse(d, dn, s, 3, res, dp), 0);
    assert_int_equal(res[1], 0x710);
    assert_null(dp[1]);
    assert_int_equal(dp[0][0], 7);
    assert_int_equal(dp[2][0], 0x2a);
    for (size_t k = 0; k < dn; k++) assert_int_equal(ads_sum_read_parse(d, k, s, 3, res, dp), FB_EPROTO);
    /* write */
    const uint8_t v1[4] = {1, 2, 3, 4}, v2[2] = {5, 6};
    const uint8_t *vals[2] = {v1, v2};
    n = ads_sum_write_req(w, sizeof w, s + 1, 2, vals);
    assert_int_equal(n, 24 + 6);
    assert_memory_equal(w + 24, "\x01\x02\x03\x04\x05\x06", 6);
    dn = unhex("00000000 04070000", d, sizeof d);
    assert_int_equal(ads_sum_write_parse(d, dn, 2, res), 0);
    assert_int_equal(res[1], 0x704);
    assert_int_equal(ads_sum_write_parse(d, dn - 1, 2, res), FB_EPROTO);
    /* read-write (handles) */
    struct ads_rwsub rw[2] = {{0xF003, 0, 4, 7, (const uint8_t *)"MAIN.a"},
                              {0xF003, 0, 4, 7, (const uint8_t *)"MAIN.b"}};
    n = ads_sum_rw_req(w, sizeof w, rw, 2, &rlen);
    assert_int_equal(n, 32 + 14);
    assert_int_equal(rlen, 16 + 8);
    dn = unhex("00000000 04000000 10070000 00000000 00100000", d, sizeof d);
    uint32_t lens[2];
    assert_int_equal(ads_sum_rw_parse(d, dn, 2, res, dp, lens), 0);
    assert_int_equal(res[0], 0);
    assert_int_equal(lens[0], 4);
    assert_int_equal(res[1], 0x710);
    for (size_t k = 0; k < dn; k++) assert_int_equal(ads_sum_rw_parse(d, k, 2, res, dp, lens), FB_EPROTO);
}

/* a symbol and data-type upload as TwinCAT lays them out */
static size_t put_sym(uint8_t *b, const char *name, const char *type, uint32_t size, uint32_t io)
{
    uint16_t nl = (uint16_t)strlen(name), tl = (uint16_t)strlen(type);
    size_t len = 30 + nl + 1 + tl + 1 + 1;
    len = (len + 3) & ~(size_t)3;
    memset(b, 0, len);
    uint32_t hdr[5] = {(uint32_t)len, 0x4040, io, size, 0};
    memcpy(b, hdr, 20);
    uint16_t h2[5] = {8, 0, nl, tl, 0};
    memcpy(b + 20, h2, 10);
    memcpy(b + 30, name, nl);
    memcpy(b + 31 + nl, type, tl);
    return len;
}

static size_t put_dt(uint8_t *b, const char *name, const char *type, uint32_t size, uint32_t offs, uint16_t nsub,
                     const uint8_t *subs, size_t subs_len)
{
    uint16_t nl = (uint16_t)strlen(name), tl = (uint16_t)strlen(type);
    size_t len = 42 + nl + 1 + tl + 1 + 1 + subs_len;
    memset(b, 0, len);
    uint32_t hdr[8] = {(uint32_t)len, 1, 0, 0, size, offs, 65, 0};
    memcpy(b, hdr, 32);
    uint16_t h2[5] = {nl, tl, 0, 0, nsub};
    memcpy(b + 32, h2, 10);
    memcpy(b + 42, name, nl);
    memcpy(b + 43 + nl, type, tl);
    if (subs_len) memcpy(b + 45 + nl + tl, subs, subs_len);
    return len;
}

static void test_resolver(void **st)
{
    (void)st;
    static uint8_t sym[1024], dt[1024], sub[512];
    size_t sl = 0, dl = 0, ul = 0;
    sl += put_sym(sym + sl, "MAIN.fTemp", "REAL", 4, 0);
    sl += put_sym(sym + sl, "MAIN.aV", "ARRAY [1..5] OF INT", 10, 4);
    sl += put_sym(sym + sl, "MAIN.st", "ST_R", 33, 14);
    sl += put_sym(sym + sl, "MAIN.al", "T_Alias", 2, 50);
    sl += put_sym(sym + sl, "MAIN.s", "STRING(20)", 21, 60);
    ul += put_dt(sub + ul, "fSpeed", "LREAL", 8, 0, 0, NULL, 0);
    ul += put_dt(sub + ul, "sName", "STRING(20)", 21, 12, 0, NULL, 0);
    dl += put_dt(dt + dl, "ST_R", "", 33, 0, 2, sub, ul);
    dl += put_dt(dt + dl, "T_Alias", "INT", 2, 0, 0, NULL, 0);
    struct ads_tinfo ti;
    struct fb_err e = {0};
    char s[32];
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "main.ftemp", -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.type, ADS_T_REAL);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.aV[5]", -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.type, ADS_T_INT);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.aV[6]", -1, NULL, 0, &ti, &e), FB_ENOENT);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.aV", -1, NULL, 0, &ti, &e), FB_ENOTSUP);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.aV", 2, s, sizeof s, &ti, &e), 0);
    assert_string_equal(s, "[3]");
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.aV", 5, s, sizeof s, &ti, &e), FB_ENOENT);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.fTemp", 1, s, sizeof s, &ti, &e), FB_EINVAL);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.st.sName", -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.type, ADS_T_STRING);
    assert_int_equal(ti.str_len, 20);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.st.fSpeed", -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.type, ADS_T_LREAL);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.st.nope", -1, NULL, 0, &ti, &e), FB_ENOENT);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.st", -1, NULL, 0, &ti, &e), FB_ENOTSUP);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.al", -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.type, ADS_T_INT);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.s", -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.size, 21);
    assert_int_equal(ads_resolve(sym, sl, dt, dl, "MAIN.fTempX", -1, NULL, 0, &ti, &e), FB_ENOENT);
    assert_int_equal(ads_resolve(sym, sl, NULL, 0, "MAIN.st.fSpeed", -1, NULL, 0, &ti, &e), FB_ENOENT);
    /* every truncation of the uploads is refused or simply ends — never read past */
    for (size_t k = 0; k < sl; k++) {
        size_t off = 0;
        struct ads_sym sy;
        int rc;
        while ((rc = ads_sym_next(sym, k, &off, &sy)) == 1) assert_true(off <= k);
    }
    for (size_t k = 0; k < dl; k++) ads_resolve(sym, sl, dt, k, "MAIN.st.sName", -1, NULL, 0, &ti, &e);
    struct ads_upload_info ui;
    uint8_t info[24] = {27, 0, 0, 0, 0x10, 0x27};
    assert_int_equal(ads_parse_upload_info(info, 24, &ui), 0);
    assert_int_equal(ui.nsym, 27);
    assert_int_equal(ui.sym_len, 10000);
    assert_int_equal(ads_parse_upload_info(info, 7, &ui), FB_EPROTO);
}

/* The symbol entry of MAIN.aValues (ARRAY [0..9] OF INT) exactly as
 * tests/peers/ads_server.py sends it for 0xF009 — test_ads.py checks that the
 * server still sends these bytes and that ads-client reads them as flags
 * 0x0008, arrayDimension 1, bounds [0, 10 elements], a type GUID:
 *   entryLength 0x58 | ig 0x4040 | io 0x1b2 | size 20 | adsType 2 (INT16) |
 *   flags u16 0x0008 (type GUID follows) | arrayDim u16 1 | nameLen 12 |
 *   typeLen 19 | commentLen 0 | name\0 type\0 comment\0 | lBound 0, 10 |
 *   GUID[16] */
static const char golden_sym_avalues[] = "58000000"
                                         "40400000"
                                         "b2010000"
                                         "14000000"
                                         "02000000"
                                         "0800"
                                         "0100"
                                         "0c00"
                                         "1300"
                                         "0000"
                                         "4d41494e2e6156616c75657300"
                                         "4152524159205b302e2e395d204f4620494e5400"
                                         "00"
                                         "00000000"
                                         "0a000000"
                                         "4c7727d330e7b7bb02c41d28c6d0a609";

/* PROTOCOLS.md §2 once described byte 20 of an entry as `flags u32`; it is
 * flags u16 + arrayDim u16.  Decoded the TwinCAT way, with the tail (bounds,
 * GUID, attributes) skipped by entryLength, and resolved without the upload. */
static void test_symbol_entry_layout(void **st)
{
    (void)st;
    uint8_t b[256];
    size_t n = unhex(golden_sym_avalues, b, sizeof b);
    assert_int_equal(n, 0x58);
    size_t off = 0;
    struct ads_sym s;
    assert_int_equal(ads_sym_next(b, n, &off, &s), 1);
    assert_int_equal(off, n);
    assert_int_equal(s.ig, 0x4040);
    assert_int_equal(s.io, 0x1b2);
    assert_int_equal(s.size, 20);
    assert_int_equal(s.adstype, 2);
    assert_int_equal(s.flags, 0x0008); /* not 0x00010008: arrayDim is its own field */
    assert_int_equal(s.arrdim, 1);
    assert_string_equal(s.name, "MAIN.aValues");
    assert_string_equal(s.type, "ARRAY [0..9] OF INT");
    assert_string_equal(s.comment, "");
    assert_int_equal(ads_sym_next(b, n, &off, &s), 0);
    for (size_t k = 1; k < n; k++) { /* every truncation refused, never read past */
        off = 0;
        assert_int_equal(ads_sym_next(b, k, &off, &s), FB_EPROTO);
    }
    /* attributes (flag 0x1000) after the GUID: entryLength still skips them */
    static const char attr[] = "50000000"
                               "40400000"
                               "00010000"
                               "04000000"
                               "04000000"
                               "0810"
                               "0000"
                               "0a00"
                               "0400"
                               "0000"
                               "4d41494e2e665465737400"
                               "5245414c00"
                               "00"
                               "00112233445566778899aabbccddeeff"
                               "0100"
                               "0404"
                               "756e697400"
                               "6465674300"
                               "000000";
    n = unhex(attr, b, sizeof b);
    assert_int_equal(n, 0x50);
    off = 0;
    assert_int_equal(ads_sym_next(b, n, &off, &s), 1);
    assert_int_equal(off, n);
    assert_int_equal(s.flags, 0x1008);
    assert_int_equal(s.arrdim, 0);
    assert_string_equal(s.name, "MAIN.fTest");
    assert_string_equal(s.type, "REAL");

    /* the type of the entry alone (what 0xF009 gives without the upload) */
    struct ads_tinfo ti;
    struct fb_err e = {0};
    char sub[32];
    n = unhex(golden_sym_avalues, b, sizeof b);
    off = 0;
    assert_int_equal(ads_sym_next(b, n, &off, &s), 1);
    assert_int_equal(ads_type_resolve(s.type, s.type_len, s.size, s.adstype, NULL, 0, 3, sub, sizeof sub, &ti, &e), 0);
    assert_string_equal(sub, "[3]");
    assert_int_equal(ti.type, ADS_T_INT);
    /* an array is no INT for all its INT16 type code */
    assert_int_equal(ads_type_resolve(s.type, s.type_len, s.size, s.adstype, NULL, 0, -1, NULL, 0, &ti, &e),
                     FB_ENOTSUP);
}

static void test_type_resolve_without_upload(void **st)
{
    (void)st;
    struct ads_tinfo ti;
    struct fb_err e = {0};
    /* an alias, no data types: the ADST code decides when its size fits */
    assert_int_equal(ads_type_resolve("T_Alias", 7, 2, 2, NULL, 0, -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.type, ADS_T_INT);
    assert_int_equal(ads_type_resolve("T_Alias", 7, 4, 2, NULL, 0, -1, NULL, 0, &ti, &e), FB_ENOTSUP);
    assert_int_equal(ads_type_resolve("T_Alias", 7, 2, 65, NULL, 0, -1, NULL, 0, &ti, &e), FB_ENOTSUP);
    assert_int_equal(ads_type_resolve("T_Text", 6, 21, 30, NULL, 0, -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.type, ADS_T_STRING);
    assert_int_equal(ti.str_len, 20);
    assert_int_equal(ads_type_resolve("T_W", 3, 22, 31, NULL, 0, -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.type, ADS_T_WSTRING);
    assert_int_equal(ti.str_len, 10);
    assert_int_equal(ads_type_resolve("T_Flag", 6, 1, 33, NULL, 0, -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.type, ADS_T_BOOL);
    assert_int_equal(ads_type_resolve("POINTER TO INT", 14, 8, 21, NULL, 0, -1, NULL, 0, &ti, &e), FB_ENOTSUP);
    assert_int_equal(ads_type_resolve("ST_Recipe", 9, 33, 65, NULL, 0, -1, NULL, 0, &ti, &e), FB_ENOTSUP);
    /* a type name that is not NUL-terminated (an extended handle reply) */
    assert_int_equal(ads_type_resolve("STRING(20)xyz", 10, 21, 0, NULL, 0, -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.str_len, 20);
    assert_int_equal(ads_type_resolve("", 0, 2, 2, NULL, 0, -1, NULL, 0, &ti, &e), 0);
    assert_int_equal(ti.type, ADS_T_INT);
    /* extended handle replies carry the type name */
    uint8_t d[64];
    uint32_t h, size;
    const char *tn;
    uint16_t tl;
    size_t n = unhex("00100000 02000000 00000000 0300 494e5400", d, sizeof d);
    assert_int_equal(ads_parse_handle_ex(d, n, &h, &size, &tn, &tl), 0);
    assert_int_equal(tl, 3);
    assert_memory_equal(tn, "INT", 3);
    assert_int_equal(size, 2);
    n = unhex("00100000", d, sizeof d);
    assert_int_equal(ads_parse_handle_ex(d, n, &h, &size, &tn, &tl), 0);
    assert_null(tn);
    assert_int_equal(tl, 0);
    for (size_t k = 5; k < 14; k++) assert_int_equal(ads_parse_handle_ex(d, k, &h, &size, &tn, &tl), FB_EPROTO);
}

static void test_raw_addresses(void **st)
{
    (void)st;
    struct ads_addr a;
    struct fb_err e = {0};
    uint32_t io;
    assert_int_equal(ads_addr_parse("%MW10", &a, &e), 0);
    assert_true(a.raw && a.typed);
    assert_int_equal(a.ig, ADS_IG_PLC_M);
    assert_int_equal(a.io, 10);
    assert_int_equal(a.ti.type, ADS_T_WORD);
    assert_string_equal(a.name, "%MW10");
    assert_int_equal(ads_addr_raw_elem(&a, 2, &io), 0);
    assert_int_equal(io, 14);
    assert_int_equal(ads_addr_parse("%MX12.3", &a, &e), 0);
    assert_int_equal(a.ig, ADS_IG_PLC_MX);
    assert_int_equal(a.io, 12 * 8 + 3);
    assert_int_equal(a.ti.type, ADS_T_BOOL);
    assert_int_equal(ads_addr_raw_elem(&a, 6, &io), 0);
    assert_int_equal(io, 12 * 8 + 9); /* the next bits: %MX13.1 */
    assert_int_equal(ads_addr_parse("%ib0", &a, &e), 0);
    assert_int_equal(a.ig, ADS_IG_IO_I);
    assert_int_equal(a.ti.type, ADS_T_BYTE);
    assert_int_equal(ads_addr_parse("%IX0.7", &a, &e), 0);
    assert_int_equal(a.ig, ADS_IG_IO_IX);
    assert_int_equal(a.io, 7);
    assert_int_equal(ads_addr_parse("%QX0.1:BOOL", &a, &e), 0);
    assert_int_equal(a.ig, ADS_IG_IO_QX);
    assert_int_equal(a.io, 1);
    assert_int_equal(ads_addr_parse("%QD4:REAL", &a, &e), 0);
    assert_int_equal(a.ig, ADS_IG_IO_Q);
    assert_int_equal(a.io, 4);
    assert_int_equal(a.ti.type, ADS_T_REAL);
    assert_int_equal(ads_addr_parse("%MD100", &a, &e), 0);
    assert_int_equal(a.ti.type, ADS_T_DWORD);
    assert_int_equal(ads_addr_parse("%MB20:STRING(8)", &a, &e), 0);
    assert_int_equal(a.ti.size, 9);
    assert_int_equal(ads_addr_parse("%MD4294967295", &a, &e), 0);
    assert_int_equal(ads_addr_raw_elem(&a, 1, &io), FB_ERANGE);
    const char *bad[] = {"%MX12", "%MX12.8", "%MX12.",     "%MW10.1",       "%ZW1",           "%M",         "%MW",
                         "%MWx",  "%MW1x",   "%MX1.1:INT", "%MW4294967296", "%MX536870912.0", "%MW1:FLOAT", "%"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_int_equal(ads_addr_parse(bad[i], &a, &e), FB_EINVAL);
    /* symbol names stay symbol names */
    assert_int_equal(ads_addr_parse("MAIN.x%MW", &a, &e), 0);
    assert_false(a.raw);
}

static void roundtrip(const char *type, const struct fb_value *in, const char *hex)
{
    struct ads_tinfo ti;
    assert_int_equal(ads_type_parse(type, strlen(type), &ti), 0);
    uint8_t b[300], want[300];
    struct fb_err e = {0};
    int n = ads_encode(&ti, in, b, sizeof b, &e);
    if (n < 0) fail_msg("%s: %s", type, e.msg);
    size_t wn = unhex(hex, want, sizeof want);
    assert_int_equal((size_t)n, wn);
    assert_memory_equal(b, want, wn);
    struct fb_value out;
    char sbuf[600];
    assert_int_equal(ads_decode(&ti, b, (uint32_t)n, &out, sbuf, sizeof sbuf), FB_Q_GOOD);
    if (in->type == FB_T_STRING) {
        assert_int_equal(out.s.len, in->s.len);
        assert_memory_equal(out.s.p, in->s.p, in->s.len);
    } else {
        double a, c;
        fb_value_to_double(in, &a);
        fb_value_to_double(&out, &c);
        assert_true(a == c);
    }
    /* short data never decodes */
    assert_int_not_equal(ads_decode(&ti, b, (uint32_t)n - 1, &out, sbuf, sizeof sbuf), FB_Q_GOOD);
}

static void test_codec(void **st)
{
    (void)st;
    struct fb_value v = {.type = FB_T_INT64, .i = -300};
    roundtrip("INT", &v, "d4fe");
    v.i = -2;
    roundtrip("SINT", &v, "fe");
    v = (struct fb_value){.type = FB_T_UINT64, .u = 18446744073709551615ULL};
    roundtrip("ULINT", &v, "ffffffffffffffff");
    v = (struct fb_value){.type = FB_T_INT64, .i = INT64_MIN};
    roundtrip("LINT", &v, "0000000000000080");
    v = (struct fb_value){.type = FB_T_FLOAT64, .f = 21.5};
    roundtrip("REAL", &v, "0000ac41");
    roundtrip("LREAL", &v, "0000000000803540");
    v = (struct fb_value){.type = FB_T_BOOL, .b = true};
    roundtrip("BOOL", &v, "01");
    v = (struct fb_value){.type = FB_T_UINT32, .u = 5000};
    roundtrip("TIME", &v, "88130000");
    v = (struct fb_value){.type = FB_T_STRING, .s = {"gr\xc3\xbc\xc3\x9f", 6}};
    roundtrip("STRING(5)", &v, "6772fcdf0000");
    v = (struct fb_value){.type = FB_T_STRING, .s = {"2024-02-29T13:14:15", 19}};
    roundtrip("DT", &v, "2783e065");
    v = (struct fb_value){.type = FB_T_STRING, .s = {"2024-03-01", 10}};
    roundtrip("DATE", &v, "801ae165");

    struct ads_tinfo ti;
    uint8_t b[64];
    struct fb_err e = {0};
    ads_type_parse("SINT", 4, &ti);
    v = (struct fb_value){.type = FB_T_INT64, .i = 128};
    assert_int_equal(ads_encode(&ti, &v, b, sizeof b, &e), FB_ERANGE);
    ads_type_parse("UINT", 4, &ti);
    v = (struct fb_value){.type = FB_T_INT64, .i = -1};
    assert_int_equal(ads_encode(&ti, &v, b, sizeof b, &e), FB_ERANGE);
    v = (struct fb_value){.type = FB_T_FLOAT64, .f = 1.5};
    assert_int_equal(ads_encode(&ti, &v, b, sizeof b, &e), FB_EINVAL);
    ads_type_parse("STRING(3)", 9, &ti);
    v = (struct fb_value){.type = FB_T_STRING, .s = {"abcd", 4}};
    assert_int_equal(ads_encode(&ti, &v, b, sizeof b, &e), FB_ERANGE);
    v = (struct fb_value){.type = FB_T_STRING, .s = {"\xe2\x82\xac", 3}}; /* € is not Latin-1 */
    assert_int_equal(ads_encode(&ti, &v, b, sizeof b, &e), FB_EINVAL);
    ads_type_parse("DT", 2, &ti);
    v = (struct fb_value){.type = FB_T_STRING, .s = {"2024-13-01T00:00:00", 19}};
    assert_int_equal(ads_encode(&ti, &v, b, sizeof b, &e), FB_EINVAL);
    ads_type_parse("REAL", 4, &ti);
    uint8_t nan[4] = {0, 0, 0xc0, 0x7f};
    struct fb_value out;
    char sb[16];
    assert_int_equal(ads_decode(&ti, nan, 4, &out, sb, sizeof sb), FB_Q_BAD_OUT_OF_RANGE);
}

static void test_errors(void **st)
{
    (void)st;
    assert_int_equal(ads_err_quality(0, false), FB_Q_GOOD);
    assert_int_equal(ads_err_quality(0x7, false), FB_Q_BAD_NO_COMM);
    assert_int_equal(ads_err_quality(0x6, false), FB_Q_BAD_NO_COMM);
    assert_int_equal(ads_err_quality(0x710, false), FB_Q_BAD_NODE_UNKNOWN);
    assert_int_equal(ads_err_quality(0x704, true), FB_Q_BAD_NOT_WRITABLE);
    assert_int_equal(ads_err_quality(0x705, false), FB_Q_BAD_TYPE_MISMATCH);
    assert_non_null(strstr(ads_err_text(0x7), "route"));
    assert_non_null(strstr(ads_err_text(0x6), "port"));
    assert_non_null(strstr(ads_err_text(0x710), "symbol not found"));
    assert_string_equal(ads_err_text(0xDEAD), "unknown ADS error");
}

/* ----------------------------------------------------------- UDP routes */
static void test_udp_packets(void **st)
{
    (void)st;
    uint8_t b[512];
    struct ads_netid me;
    ads_netid_parse("192.168.0.5.1.1", &me);
    size_t n = ads_udp_add_route(b, sizeof b, 9, &me, "edge", &me, "Administrator", "1", "192.168.0.5");
    uint8_t want[64];
    size_t wn = unhex("03661471 09000000 06000000 c0a800050101 1027 05000000 0c00 0500 6564676500", want, sizeof want);
    assert_memory_equal(b, want, wn);
    assert_int_equal(n, 24 + 9 + 10 + 18 + 6 + 16);
    assert_int_equal(ads_udp_add_route(b, 40, 9, &me, "edge", &me, "u", "p", "h"), 0);
    /* a reply: accepted / refused */
    uint8_t r[64];
    size_t rn = unhex("03661471 09000000 06000080 0550c0c80101 1027 01000000 0100 0400 04070000", r, sizeof r);
    struct ads_udp_reply rep;
    assert_int_equal(ads_udp_parse(r, rn, &rep), 0);
    assert_int_equal(rep.service, 0x80000006u);
    assert_true(rep.have_status);
    assert_int_equal(rep.status, 0x704);
    for (size_t k = 0; k < rn; k++) assert_int_equal(ads_udp_parse(r, k, &rep), FB_EPROTO);
    r[0] = 0;
    assert_int_equal(ads_udp_parse(r, rn, &rep), FB_EPROTO);
}

/* fieldbridge ads add-route (fb_cli_ads_add_route) against an in-process responder that checks the password */
static int udp_fd;
static void *responder(void *arg)
{
    (void)arg;
    uint8_t b[1024];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(udp_fd, b, sizeof b, 0, (struct sockaddr *)&from, &fl);
    if (n < 24) return NULL;
    bool ok = memmem(b, (size_t)n, "secret\0", 7) != NULL && memmem(b, (size_t)n, "Administrator\0", 14) != NULL;
    uint8_t r[36];
    unhex("03661471 00000000 06000080 0550c0c80101 1027 01000000 0100 0400 00000000", r, sizeof r);
    memcpy(r + 4, b + 4, 4);
    if (!ok) r[28] = 0x04, r[29] = 0x07;
    sendto(udp_fd, r, sizeof r, 0, (struct sockaddr *)&from, fl);
    return NULL;
}

static int run_add_route(const char *pw)
{
    udp_fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(udp_fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    getsockname(udp_fd, (struct sockaddr *)&sa, &sl);
    char port[8];
    snprintf(port, sizeof port, "%d", ntohs(sa.sin_port));
    pthread_t t;
    pthread_create(&t, NULL, responder, NULL);
    setenv("FB_ADS_PASSWORD", pw, 1);
    char *argv[] = {"127.0.0.1", "--port",        port,        "--net-id", "127.0.0.1.1.1",
                    "--user",    "Administrator", "--timeout", "2s",       NULL};
    int rc = fb_cli_ads_add_route(9, argv);
    pthread_join(t, NULL);
    close(udp_fd);
    return rc;
}

static void test_add_route_cli(void **st)
{
    (void)st;
    assert_int_equal(run_add_route("secret"), 0);
    assert_int_equal(run_add_route("wrong"), 1);
    char *bad[] = {"127.0.0.1", "--net-id", "1.2.3", "--user", "x", NULL};
    assert_int_equal(fb_cli_ads_add_route(5, bad), 2);
    char *none[] = {"127.0.0.1", NULL};
    assert_int_equal(fb_cli_ads_add_route(1, none), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_netid_and_opts),
        cmocka_unit_test(test_types_and_addresses),
        cmocka_unit_test(test_golden_requests),
        cmocka_unit_test(test_replies_and_truncations),
        cmocka_unit_test(test_notifications),
        cmocka_unit_test(test_sum_commands),
        cmocka_unit_test(test_resolver),
        cmocka_unit_test(test_codec),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_udp_packets),
        cmocka_unit_test(test_add_route_cli),
        cmocka_unit_test(test_symbol_entry_layout),
        cmocka_unit_test(test_type_resolve_without_upload),
        cmocka_unit_test(test_raw_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
