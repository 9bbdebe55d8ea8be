/* modbus_proto.h — the I/O-free half of the Modbus driver: device options,
 * address parsing, register/bit codec (every type × every byte order) and the
 * read planner (coalescing tags into as few requests as the limits allow).
 *
 * Nothing here touches a socket or libmodbus, so all of it is unit-tested and
 * fuzzed directly.  modbus.c is the thin glue that runs a plan through
 * libmodbus and turns the answers into samples.
 */
#ifndef FB_MODBUS_PROTO_H
#define FB_MODBUS_PROTO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/log.h"
#include "core/model.h"

/* Protocol limits (Modbus Application Protocol v1.1b3 §6). */
#define MB_MAX_READ_REGS 125
#define MB_MAX_READ_BITS 2000
#define MB_MAX_WRITE_REGS 123
#define MB_MAX_WRITE_BITS 1968
#define MB_MAX_STR_LEN (2 * MB_MAX_WRITE_REGS) /* 246 bytes: fits one FC16 */

enum mb_table { MB_HR = 0, MB_IR = 1, MB_CO = 2, MB_DI = 3 };
const char *mb_table_name(int table); /* "hr", "ir", "co", "di" */

/* ------------------------------------------------------------- options */
enum mb_transport { MB_TCP = 0, MB_RTU = 1 };

struct mb_opts {
    int transport;          /* enum mb_transport */
    char host[256];         /* TCP */
    int port;               /* TCP, default 502 */
    char device[256];       /* RTU: /dev/ttyUSB0 */
    int baud;               /* RTU, default 9600 */
    char parity;            /* 'N', 'E', 'O' */
    int data_bits;          /* 5..8, default 8 */
    int stop_bits;          /* 1..2, default 1 */
    int unit;               /* slave / unit id, default 1 */
    int64_t timeout_ns;     /* per request */
    int64_t delay_ns;       /* pause between requests on the connection */
    int max_gap;            /* registers/bits a merge may read needlessly (default 10) */
    int max_regs;           /* per FC3/FC4 request, 1..125 */
    int max_bits;           /* per FC1/FC2 request, 1..2000 */
    int base;               /* 0 or 1: offset of the hr:N / ir:N / co:N / di:N forms */
    bool write_single_fc16; /* write one register with FC16 instead of FC6 */
    bool write_coil_fc15;   /* write a coil with FC15 instead of FC5 */
    bool bit_write_rmw;     /* bit in register: read-modify-write instead of FC22 */
};

/* Fill o from a parsed device URL (scheme modbus-tcp / modbus-rtu); the
 * timeout and delay defaults come from the device config, the query
 * overrides them.  Unknown query keys are errors. */
int mb_opts_parse(const struct fb_url *u, int64_t def_timeout_ns, int64_t def_delay_ns, struct mb_opts *o,
                  struct fb_err *err);
/* "tcp:host:port" or "rtu:/dev/ttyUSB0" (malloc'd), equal keys share a line. */
char *mb_opts_conn_key(const struct mb_opts *o);

/* ------------------------------------------------------------- address */
struct mb_addr { /* 12 bytes, one per tag (issue 15) */
    uint8_t table;       /* enum mb_table */
    uint8_t type;        /* enum fb_type of the value */
    bool bcd : 1;        /* bcd16 / bcd32: packed decimal, decoded to uint */
    bool has_bit : 1;    /* hr:N.B — one bit inside a register */
    bool swap_words : 1; /* CDAB / DCBA: register order reversed */
    bool swap_bytes : 1; /* BADC / DCBA: bytes swapped inside each register */
    bool str_odd : 1;    /* a string of an odd length: 2 * count - 1 bytes (mb_str_len) */
    uint8_t bit;         /* 0..15, 0 = least significant */
    uint16_t count;      /* registers (hr/ir) or bits (co/di) the value spans */
    uint16_t addr;       /* PDU address of the first register / bit */
    uint32_t tag;        /* the tag's id (set by the driver glue, not by mb_addr_parse) */
};

/* A string's length in bytes (its registers hold two each), else 0. */
static inline uint32_t mb_str_len(const struct mb_addr *a)
{
    return a->type == FB_T_STRING ? 2u * a->count - a->str_odd : 0;
}

/* What the config says about a tag, besides its address text. */
struct mb_addr_in {
    const char *text;  /* "hr:0:float32", "40001", "co:3", "hr:4.2" */
    uint8_t type;      /* enum fb_type from `type:`, FB_T_NONE if absent */
    uint32_t str_len;  /* with type string, when known */
    const char *order; /* "ABCD" ... or NULL */
    uint32_t index;    /* array element (count:) */
    int base;          /* device base (0 or 1) */
};

int mb_addr_parse(const struct mb_addr_in *in, struct mb_addr *out, struct fb_err *err);
/* "hr:0:float32/CDAB"-like canonical text for logs; returns buf. */
const char *mb_addr_fmt(const struct mb_addr *a, char *buf, size_t len);

/* ------------------------------------------------------------- codec */
/* Decode a register value from regs[0 .. a->count-1] (or, for coils and
 * discrete inputs, bits[0]).  Strings are written into sbuf (capacity scap)
 * and v->s points there.  Returns the quality: FB_Q_GOOD, or
 * FB_Q_BAD_DECODING for an invalid BCD digit (v is then zero). */
uint32_t mb_decode(const struct mb_addr *a, const uint16_t *regs, const uint8_t *bits, struct fb_value *v, char *sbuf,
                   size_t scap);
/* Encode v (of type a->type; other numeric types are converted with a range
 * check) into regs[0 .. a->count-1].  Coils: regs[0] = 0/1.  For a bit in a
 * register regs[0] is 0/1 too (the glue does the masking).  Returns the
 * number of registers, or a negative fb_status with a message. */
int mb_encode(const struct mb_addr *a, const struct fb_value *v, uint16_t *regs, size_t cap, struct fb_err *err);

/* ------------------------------------------------------------- planner */
/* One tag to read: its index among its device's tags (`tags` below is the
 * device's first tag in the gateway's array), 4 bytes (issue 15).  A config
 * reload that keeps the plan keeps the index: the device's tags keep their
 * order.  Its parsed address is that tag's (mb_item_addr), which names the
 * tag by its gateway-wide id (a->tag). */
struct mb_item {
    uint32_t ix;
};
static inline const struct mb_addr *mb_item_addr(const struct fb_tag *tags, const struct mb_item *it)
{
    return (const struct mb_addr *)tags[it->ix].addr;
}

/* One request: a contiguous range of one table, serving items
 * plan->items[first .. first+n-1] (sorted by address). */
struct mb_block {
    uint8_t table;
    bool split; /* made by a split: never split again */
    uint16_t start;
    uint16_t count; /* registers or bits */
    uint32_t first, n;
    uint32_t last_q; /* quality of the previous read, for log de-duplication */
    struct fb_ratelimit rl;
};

struct mb_limits {
    int max_gap, max_regs, max_bits;
};

struct mb_plan {
    struct mb_item *items;
    uint32_t nitems;
    struct mb_block *blocks;
    uint32_t nblocks, cap_blocks; /* as built; the first split grows it to nitems */
    uint32_t splits;              /* how many blocks were split after exception 02 */
    /* scratch for one response, so read() allocates nothing */
    uint16_t regs[MB_MAX_READ_REGS];
    uint8_t bits[MB_MAX_READ_BITS];
    char sbuf[MB_MAX_READ_REGS * 2 + 1];
};

/* Build a plan for n items of the device whose tags start at tags (copied;
 * their addresses' table, addr and count used).  Returns 0 and *out, or
 * FB_ENOMEM / FB_EINVAL. */
int mb_plan_build(const struct fb_tag *tags, const struct mb_item *items, uint32_t n, const struct mb_limits *lim,
                  struct mb_plan **out, struct fb_err *err);
void mb_plan_free(struct mb_plan *p);
/* True when block i serves more than one distinct value range (so an
 * exception 02 may come from a hole between values). */
bool mb_plan_can_split(const struct mb_plan *p, const struct fb_tag *tags, uint32_t i);
/* Replace block i by one block per distinct value range, marked split (for
 * this and every later cycle).  Returns how many blocks now stand in its
 * place (>= 1), or FB_EINVAL if it cannot be split. */
int mb_plan_split(struct mb_plan *p, const struct fb_tag *tags, uint32_t i);

/* ------------------------------------------------------------- errors */
/* Modbus exception code (1..11) → quality, and a short text. */
uint32_t mb_exception_quality(int code);
const char *mb_exception_text(int code);
/* ------------------------------------------------------------- TCP reads */
/* Read requests over Modbus TCP are framed and their answers checked here;
 * modbus.c sends and receives them on the socket itself (two system calls
 * per request where libmodbus makes seven: BENCHMARKS.md, T6).  Writes and
 * RTU go through libmodbus. */
#define MB_TCP_REQ_LEN 12
#define MB_TCP_ADU_MAX 260 /* MBAP header 7 + PDU 253 */
enum mb_rsp {
    MB_RSP_OK = 0,
    MB_RSP_EXC,       /* a Modbus exception: *exc is its code */
    MB_RSP_BAD_TID,   /* not the answer to this request (a late one, or garbage) */
    MB_RSP_BAD_PROTO, /* protocol id not 0 */
    MB_RSP_BAD_FC,    /* another function */
    MB_RSP_BAD_LEN,   /* byte count or length not what the request asks for */
    MB_RSP_GARBAGE,   /* bytes that are no Modbus TCP answer at all */
    MB_RSP_MORE,      /* mb_tcp_take: the answer is not complete yet */
};
/* The read request for count registers/bits of table from start, to unit. */
void mb_tcp_read_request(uint8_t req[MB_TCP_REQ_LEN], uint16_t tid, uint8_t unit, int table, uint16_t start,
                         uint16_t count);
/* An ADU's whole length from its first 6 bytes (6 + the MBAP length), or 0
 * when no answer to a read can be that long or short. */
size_t mb_tcp_adu_len(const uint8_t hdr[6]);
/* Check one whole ADU (n bytes, as mb_tcp_adu_len said) against the request
 * req and unpack its values (the request's count) into regs (HR/IR) or bits
 * (CO/DI, one byte 0/1 per bit).  The unit id is not compared: some devices
 * answer with 0 or 255 whatever they were asked as (libmodbus does not
 * compare it over TCP either); the transaction id pairs answer and request. */
enum mb_rsp mb_tcp_read_answer(const uint8_t req[MB_TCP_REQ_LEN], const uint8_t *adu, size_t n, uint16_t *regs,
                               uint8_t *bits, int *exc);
/* The answer to req among the *have bytes received so far in buf (at least
 * 2 * MB_TCP_ADU_MAX long): complete answers to earlier requests (another
 * transaction id, late after a time-out) are dropped from buf; the answer is
 * judged by mb_tcp_read_answer.  MB_RSP_MORE while it is incomplete. */
enum mb_rsp mb_tcp_take(const uint8_t req[MB_TCP_REQ_LEN], uint8_t *buf, size_t *have, uint16_t *regs,
                        uint8_t *bits, int *exc);
const char *mb_rsp_text(enum mb_rsp r);
#endif
