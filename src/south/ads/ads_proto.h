/* ads_proto.h — the I/O-free half of the Beckhoff ADS driver: URL options,
 * AMS/TCP + AMS headers, ADS command builders and reply decoders, sum
 * commands (0xF080/0xF081/0xF082), the device-notification stream, the
 * symbol and data-type uploads (0xF00B/0xF00E) with a name → type resolver,
 * the value codec for the IEC 61131-3 types, raw %M/%I/%Q addresses, ADS
 * error codes mapped to quality and text, and the UDP 48899 add-route
 * packets.
 *
 * Nothing here touches a socket: ads.c moves these bytes.  Wire facts:
 * shared PROTOCOLS.md §2.  Every multi-byte field on the wire is little
 * endian.  Frame layout (one TCP stream, frames back to back):
 *
 *   AMS/TCP  u16 reserved (0) | u32 length of what follows
 *   AMS      target NetId[6] | target port u16 | source NetId[6] |
 *            source port u16 | command u16 | state flags u16 |
 *            data length u32 | error u32 | invoke id u32
 *   ADS      command body (requests) / u32 result + body (responses)
 */
#ifndef FB_ADS_PROTO_H
#define FB_ADS_PROTO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

#define ADS_TCP_PORT 48898
#define ADS_UDP_PORT 48899
#define ADS_TCP_HDR 6
#define ADS_AMS_HDR 32
#define ADS_HDR (ADS_TCP_HDR + ADS_AMS_HDR)
#define ADS_FRAME_MAX (64u << 20) /* largest reply we accept (a symbol upload) */
#define ADS_MAX_NAME 255          /* symbol names we handle */
#define ADS_MAX_STRING 255        /* STRING(n): n ≤ 255 */
#define ADS_MAX_WSTRING 127       /* WSTRING(n): n ≤ 127, so 2(n+1) bytes fit a STRING(255)'s buffers */
#define ADS_SUM_MAX 500           /* sub-commands per sum command (Beckhoff's advice) */

enum ads_cmd {
    ADS_CMD_DEVINFO = 1,
    ADS_CMD_READ = 2,
    ADS_CMD_WRITE = 3,
    ADS_CMD_STATE = 4,
    ADS_CMD_CONTROL = 5,
    ADS_CMD_ADDNOTE = 6,
    ADS_CMD_DELNOTE = 7,
    ADS_CMD_NOTE = 8,
    ADS_CMD_RW = 9,
};
#define ADS_SF_REQUEST 0x0004
#define ADS_SF_RESPONSE 0x0005

/* index groups */
#define ADS_IG_HANDLE_BY_NAME 0xF003u
#define ADS_IG_VALUE_BY_NAME 0xF004u
#define ADS_IG_VALUE_BY_HANDLE 0xF005u
#define ADS_IG_RELEASE_HANDLE 0xF006u
#define ADS_IG_SYM_VERSION 0xF008u
#define ADS_IG_SYM_INFO_EX 0xF009u /* one symbol entry (the upload's layout) for a name */
#define ADS_IG_SYM_UPLOAD 0xF00Bu
#define ADS_IG_SYM_UPLOAD_INFO 0xF00Cu
#define ADS_IG_DT_UPLOAD 0xF00Eu
#define ADS_IG_UPLOAD_INFO2 0xF00Fu
#define ADS_IG_SUM_READ 0xF080u
#define ADS_IG_SUM_WRITE 0xF081u
#define ADS_IG_SUM_RW 0xF082u
/* raw areas: byte offsets (TwinCAT addresses bytes: %MW10 = bytes 10..11);
 * the X groups take the bit address byte * 8 + bit and 1 byte of data */
#define ADS_IG_PLC_M 0x4020u  /* %MB/%MW/%MD */
#define ADS_IG_PLC_MX 0x4021u /* %MX */
#define ADS_IG_IO_I 0xF020u   /* %IB/%IW/%ID: process image inputs */
#define ADS_IG_IO_IX 0xF021u  /* %IX */
#define ADS_IG_IO_Q 0xF030u   /* %QB/%QW/%QD: process image outputs */
#define ADS_IG_IO_QX 0xF031u  /* %QX */

/* notification transmission modes */
#define ADS_TRANS_CYCLIC 3
#define ADS_TRANS_ONCHANGE 4

/* ADS error codes the driver reacts to */
#define ADSERR_TARGET_PORT 0x6u
#define ADSERR_NO_ROUTE 0x7u
#define ADSERR_SYM_NOT_FOUND 0x710u
#define ADSERR_SYM_VERSION 0x711u
#define ADSERR_NOTE_HANDLE 0x714u
#define ADSERR_NOT_SUPPORTED 0x701u /* service not supported */
#define ADSERR_BAD_IG 0x702u        /* invalid index group */
/* A whole request refused this way means the device lacks the service (sum
 * commands, symbol upload, symbol info): fall back, do not fail. */
#define ADS_UNSUPPORTED(code) ((code) == ADSERR_NOT_SUPPORTED || (code) == ADSERR_BAD_IG)

/* ---------------------------------------------------------------- options */
struct ads_netid {
    uint8_t b[6];
};
/* "5.80.192.200.1.1" → six bytes; FB_EINVAL on anything else. */
int ads_netid_parse(const char *s, struct ads_netid *n);
/* buf >= 24 */
char *ads_netid_fmt(const struct ads_netid *n, char *buf, size_t len);

enum ads_mode { ADS_MODE_POLL = 0, ADS_MODE_NOTIFY = 1, ADS_MODE_CYCLIC = 2 };

struct ads_opts {
    char host[256];
    int port;                /* TCP, default 48898 */
    struct ads_netid target; /* net_id= (required) */
    uint16_t ams_port;       /* port= (default 851, TwinCAT 3 PLC 1) */
    bool have_source;        /* source_net_id= given; else <local IP>.1.1 */
    struct ads_netid source;
    uint16_t source_port; /* source_port= (default 32905) */
    int mode;             /* enum ads_mode (mode=poll|notify|cyclic) */
    int64_t timeout_ns;   /* timeout= or the device timeout */
    int64_t max_delay_ns; /* notifications: max_delay= (default 0) */
    int64_t cycle_ns;     /* notifications: cycle= (default: the group period) */
    int max_sum;          /* sub-commands per sum command, 1..500 (max_sum=) */
};
/* Fill o from a parsed ads:// URL.  Unknown query keys are errors. */
int ads_opts_parse(const struct fb_url *u, int64_t def_timeout_ns, struct ads_opts *o, struct fb_err *err);
/* "ads:host:port:netid:amsport" (malloc'd): equal keys share a connection. */
char *ads_opts_conn_key(const struct ads_opts *o);

/* ------------------------------------------------------------------ types */
enum ads_type {
    ADS_T_NONE = 0,
    ADS_T_BOOL,
    ADS_T_BYTE,
    ADS_T_USINT,
    ADS_T_SINT,
    ADS_T_WORD,
    ADS_T_UINT,
    ADS_T_INT,
    ADS_T_DWORD,
    ADS_T_UDINT,
    ADS_T_DINT,
    ADS_T_LWORD,
    ADS_T_ULINT,
    ADS_T_LINT,
    ADS_T_REAL,
    ADS_T_LREAL,
    ADS_T_STRING,
    ADS_T_TIME,
    ADS_T_TOD,
    ADS_T_DATE,
    ADS_T_DT,
    ADS_T_LTIME,
    ADS_T_WSTRING, /* WSTRING(n): UTF-16LE, n + 1 code units (NUL-terminated) */
    ADS_T__COUNT
};

/* The type of one value on the wire. */
struct ads_tinfo {
    uint8_t type;     /* enum ads_type */
    uint8_t fbtype;   /* enum fb_type it is published as */
    uint32_t size;    /* bytes on the wire */
    uint32_t str_len; /* STRING(n) / WSTRING(n): n (characters / UTF-16 code units) */
};
const char *ads_type_name(int t); /* "REAL" */
/* "REAL", "STRING(20)", "string[20]", "WSTRING(20)", "DATE_AND_TIME", "float32", ... (case
 * insensitive; fb type names are accepted as their IEC twin).  FB_EINVAL for
 * anything else (structs, arrays, function blocks). */
int ads_type_parse(const char *s, size_t n, struct ads_tinfo *ti);

/* A parsed address: NAME[:TYPE], or a raw address %<area><size><offset>[.bit]
 * [:TYPE] with area M (flags), I (inputs) or Q (outputs), size X (bit), B,
 * W, D (byte, word, double word — the default type when none is given);
 * the offset counts bytes, as TwinCAT does (%MW10 = bytes 10..11). */
struct ads_addr {
    char name[ADS_MAX_NAME + 1];
    bool typed;   /* a type was given (always for raw addresses) */
    bool raw;     /* %M/%I/%Q: ig/io below, no symbol */
    bool deftype; /* raw: the type is the size letter's default (no :TYPE) */
    uint32_t ig, io;
    struct ads_tinfo ti;
};
int ads_addr_parse(const char *text, struct ads_addr *a, struct fb_err *err);
/* Raw address of element `index` of a `count:` run: the next value of the
 * type (bits: the next bit).  FB_ERANGE past the 32-bit offset space. */
int ads_addr_raw_elem(const struct ads_addr *a, uint32_t index, uint32_t *io);

/* Value codec.  decode returns a quality (strings point into sbuf); encode
 * returns the byte count or a negative status with a message. */
uint32_t ads_decode(const struct ads_tinfo *ti, const uint8_t *p, uint32_t n, struct fb_value *v, char *sbuf,
                    size_t cap);
int ads_encode(const struct ads_tinfo *ti, const struct fb_value *v, uint8_t *out, size_t cap, struct fb_err *err);

/* ----------------------------------------------------------------- frames */
struct ads_hdr {
    struct ads_netid target;
    uint16_t target_port;
    struct ads_netid source;
    uint16_t source_port;
    uint16_t cmd;
    uint16_t flags;
    uint32_t len;   /* ADS data length */
    uint32_t error; /* AMS error */
    uint32_t invoke;
};

/* Whole frame length from the first 6 bytes (0 if fewer are given); negative
 * when the AMS/TCP header is not ADS traffic or the length is impossible. */
long ads_frame_len(const uint8_t *b, size_t n);
/* Decode the 38 header bytes of a complete frame of length n; the ADS data
 * starts at b + ADS_HDR and is h->len bytes.  FB_EPROTO when inconsistent. */
int ads_parse_hdr(const uint8_t *b, size_t n, struct ads_hdr *h);
/* Encode a header (h->len = body length) into b[0..ADS_HDR). */
void ads_put_hdr(uint8_t *b, const struct ads_hdr *h);

/* Requests: each writes a complete frame (headers from tmpl with cmd,
 * flags, len set here) and returns its length, or 0 when cap is too small. */
size_t ads_build_simple(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint16_t cmd);
size_t ads_build_read(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint32_t ig, uint32_t io, uint32_t len);
size_t ads_build_write(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint32_t ig, uint32_t io,
                       const uint8_t *data, uint32_t len);
size_t ads_build_rw(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint32_t ig, uint32_t io, uint32_t rlen,
                    const uint8_t *data, uint32_t wlen);
size_t ads_build_addnote(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint32_t ig, uint32_t io, uint32_t len,
                         uint32_t mode, uint32_t max_delay_100ns, uint32_t cycle_100ns);
size_t ads_build_delnote(uint8_t *b, size_t cap, const struct ads_hdr *tmpl, uint32_t handle);

/* Replies (body = the ADS data after the headers). */
int ads_parse_result(const uint8_t *d, size_t n, uint32_t *result);
/* Read / ReadWrite: result, length, data (data valid when result is 0). */
int ads_parse_read(const uint8_t *d, size_t n, uint32_t *result, const uint8_t **data, uint32_t *len);
int ads_parse_state(const uint8_t *d, size_t n, uint32_t *result, uint16_t *ads_state, uint16_t *dev_state);
struct ads_devinfo {
    uint8_t major, minor;
    uint16_t build;
    char name[17];
};
int ads_parse_devinfo(const uint8_t *d, size_t n, uint32_t *result, struct ads_devinfo *di);
int ads_parse_addnote(const uint8_t *d, size_t n, uint32_t *result, uint32_t *handle);
/* Handle reply of 0xF003: the classic 4-byte form, or TwinCAT 3's extended
 * one (handle, size, decoration, type-name length u16, type name). */
int ads_parse_handle(const uint8_t *d, size_t n, uint32_t *handle, uint32_t *size);
/* The same, with the type name of the extended form (*tname NULL and *tlen 0
 * for the classic 4-byte form; not NUL-terminated). */
int ads_parse_handle_ex(const uint8_t *d, size_t n, uint32_t *handle, uint32_t *size, const char **tname,
                        uint16_t *tlen);

/* Notification stream (command 8).  Validates the whole stream, then calls
 * cb once per sample.  FB_EPROTO (and no callback) when malformed. */
typedef void (*ads_note_cb)(void *ctx, int64_t ts_ns, uint32_t handle, const uint8_t *data, uint32_t size);
int ads_parse_notes(const uint8_t *d, size_t n, ads_note_cb cb, void *ctx);
/* FILETIME (100 ns since 1601) → ns since the Unix epoch */
int64_t ads_filetime_to_ns(uint64_t ft);

/* ------------------------------------------------------------ sum commands */
struct ads_sub {
    uint32_t ig, io, len;
};
/* 0xF080: write data = n × (ig, io, len); the reply length to ask is
 * 4n + Σlen (returned in *rlen).  Returns the write length or 0. */
size_t ads_sum_read_req(uint8_t *w, size_t cap, const struct ads_sub *s, uint32_t n, uint32_t *rlen);
/* Reply: n results, then every sub's data slot (len bytes each, present even
 * when its result is an error).  res[i] and data[i] (NULL on error). */
int ads_sum_read_parse(const uint8_t *d, size_t n, const struct ads_sub *s, uint32_t cnt, uint32_t *res,
                       const uint8_t **data);
/* 0xF081: n × (ig, io, len) then the values; reply = n results (rlen 4n). */
size_t ads_sum_write_req(uint8_t *w, size_t cap, const struct ads_sub *s, uint32_t n, const uint8_t *const *vals);
int ads_sum_write_parse(const uint8_t *d, size_t n, uint32_t cnt, uint32_t *res);
/* 0xF082 read-write: n × (ig, io, rlen, wlen) then the write data; reply =
 * n × (result, len) then the data.  rlen: 8n + Σrlen. */
struct ads_rwsub {
    uint32_t ig, io, rlen, wlen;
    const uint8_t *wdata;
};
size_t ads_sum_rw_req(uint8_t *w, size_t cap, const struct ads_rwsub *s, uint32_t n, uint32_t *rlen);
int ads_sum_rw_parse(const uint8_t *d, size_t n, uint32_t cnt, uint32_t *res, const uint8_t **data, uint32_t *lens);

/* ----------------------------------------------------------------- upload */
struct ads_upload_info {
    uint32_t nsym, sym_len, ndt, dt_len;
};
int ads_parse_upload_info(const uint8_t *d, size_t n, struct ads_upload_info *ui);

/* One entry of the symbol upload (or the reply of 0xF009).  Byte 20 holds
 * flags u16 and byte 22 arrayDim u16 (not one u32 of flags): TwinCAT sets
 * flags such as 0x0008 (a type GUID follows) and 0x1000 (attributes follow)
 * and counts the array dimensions whose bounds follow the comment. */
struct ads_sym {
    uint32_t ig, io, size, adstype;
    uint16_t flags, arrdim;
    const char *name, *type, *comment; /* NUL-terminated inside the buffer */
    uint16_t name_len, type_len;
};
/* Iterate the symbol upload: 1 = one more symbol in *s (advances *off), 0 =
 * end, FB_EPROTO = malformed. */
int ads_sym_next(const uint8_t *d, size_t n, size_t *off, struct ads_sym *s);

/* Resolve a symbol name (with struct members "MAIN.st.x" and array
 * subscripts "MAIN.a[3]", case insensitive) against the symbol and data-type
 * uploads.  Fills *ti with the element's type when it is a plain type;
 * FB_ENOENT unknown name, FB_ENOTSUP known but not a plain type (struct,
 * array without subscript, ...) with the type name in err.  With elem >= 0
 * and sub given, a name that ends on a one-dimensional array gets element
 * lo+elem: its subscript ("[lo+elem]") is written to sub (`count:` over an
 * ARRAY symbol); elem > 0 on a non-array is an error. */
int ads_resolve(const uint8_t *sym, size_t sym_len, const uint8_t *dt, size_t dt_len, const char *name, int64_t elem,
                char *sub, size_t subcap, struct ads_tinfo *ti, struct fb_err *err);

/* The type of one value described by its type name (as a symbol entry or an
 * extended handle reply gives it), its size and its ADST_* code: like the
 * end of ads_resolve (STRING(n) sized by `size`, aliases through dt, `elem`
 * and `sub` for `count:` over an array).  When the name is no plain type and
 * dt cannot explain it (an alias with no data-type upload) the ADST code
 * decides, if it names a plain type of that size.  FB_ENOTSUP otherwise. */
int ads_type_resolve(const char *type, size_t tlen, uint32_t size, uint32_t adstype, const uint8_t *dt, size_t dt_len,
                     int64_t elem, char *sub, size_t subcap, struct ads_tinfo *ti, struct fb_err *err);

/* ------------------------------------------------------------------ errors */
const char *ads_err_text(uint32_t code);
uint32_t ads_err_quality(uint32_t code, bool write);

/* ------------------------------------------------------- UDP 48899 routes */
#define ADS_UDP_DISCOVER 1u
#define ADS_UDP_ADD_ROUTE 6u
#define ADS_UDP_RESPONSE 0x80000000u
#define ADS_UDP_TAG_PASSWORD 2
#define ADS_UDP_TAG_HOST 5
#define ADS_UDP_TAG_NETID 7
#define ADS_UDP_TAG_ROUTENAME 12
#define ADS_UDP_TAG_USER 13
#define ADS_UDP_TAG_STATUS 1 /* our test server; see docs/ads.md */

/* Add-route request: route `name` for our NetId `netid` at address `host`,
 * authorised by the PLC OS user/password.  Returns the packet length or 0. */
size_t ads_udp_add_route(uint8_t *b, size_t cap, uint32_t invoke, const struct ads_netid *sender, const char *name,
                         const struct ads_netid *netid, const char *user, const char *password, const char *host);
size_t ads_udp_discover(uint8_t *b, size_t cap, uint32_t invoke, const struct ads_netid *sender);
struct ads_udp_reply {
    uint32_t invoke, service;
    struct ads_netid netid; /* the PLC's */
    uint16_t port;
    bool have_status;
    uint32_t status; /* add route: 0 accepted, else an ADS error (0x704 bad credentials) */
    char name[64];   /* discover: the PLC's host name when present */
};
int ads_udp_parse(const uint8_t *b, size_t n, struct ads_udp_reply *r);

#endif
