/* s7_proto.h — the I/O-free half of the Siemens S7 (S7comm over ISO-on-TCP)
 * driver: URL options, Siemens absolute addresses, the value codec for every
 * S7 type, TPKT/COTP/S7 frame builders and decoders, and the read planner
 * that packs tags into as few PDU-sized Read Var requests as possible.
 *
 * Nothing here touches a socket, so all of it is unit-tested with golden
 * frames and fuzzed.  s7.c is the thin glue that moves these frames over a
 * blocking TCP socket with timeouts.  Wire facts: shared PROTOCOLS.md §1.
 */
#ifndef FB_S7_PROTO_H
#define FB_S7_PROTO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

#define S7_DEFAULT_PORT 102
#define S7_PDU_MIN 240  /* smallest PDU a CPU negotiates */
#define S7_PDU_MAX 8192 /* largest we ask for (the field is u16; CPUs give ≤ 960) */
#define S7_PDU_DEFAULT 960
#define S7_MAX_ITEMS 20                /* snap7 and real CPUs cap multi-item requests at 20 */
#define S7_FRAME_MAX (S7_PDU_MAX + 64) /* one TPKT frame: header + COTP + PDU */
#define S7_TPKT_HDR 4
#define S7_COTP_DT_HDR 3
#define S7_HDR_JOB 10        /* S7 header of a Job */
#define S7_HDR_ACK 12        /* S7 header of an Ack / Ack_Data (with error class/code) */
#define S7_MAX_STRING 254    /* STRING[n]: n ≤ 254 */
#define S7_MAX_WSTRING 16382 /* WSTRING[n]: n ≤ 16382 */

/* ---------------------------------------------------------------- options */
enum s7_conn_type { S7_CT_PG = 1, S7_CT_OP = 2, S7_CT_BASIC = 3 };

struct s7_opts {
    char host[256];
    int port;             /* default 102 */
    int rack, slot;       /* default 0 / 1 */
    int conn_type;        /* enum s7_conn_type (or 3..0x10 for basic) */
    uint16_t local_tsap;  /* default 0x0100 */
    uint16_t remote_tsap; /* conn_type<<8 | rack<<5 | slot unless given */
    int pdu;              /* requested PDU size, 240..8192, default 960 */
    int max_gap;          /* bytes a merge may read needlessly, default 32 */
    int max_items;        /* items per request, 1..20, default 20 */
    int64_t timeout_ns;   /* per request */
};

/* Fill o from a parsed s7:// URL.  Unknown query keys are errors. */
int s7_opts_parse(const struct fb_url *u, int64_t def_timeout_ns, struct s7_opts *o, struct fb_err *err);
/* "s7:host:port:LLLL:RRRR" (malloc'd): equal keys share one connection. */
char *s7_opts_conn_key(const struct s7_opts *o);

/* ---------------------------------------------------------------- address */
enum s7_area {
    S7_AREA_P = 0x80,
    S7_AREA_I = 0x81,
    S7_AREA_Q = 0x82,
    S7_AREA_M = 0x83,
    S7_AREA_DB = 0x84,
    S7_AREA_C = 0x1C,
    S7_AREA_T = 0x1D,
};

enum s7_type {
    S7_BOOL = 0,
    S7_BYTE,
    S7_USINT,
    S7_SINT,
    S7_CHAR,
    S7_WORD,
    S7_UINT,
    S7_INT,
    S7_DWORD,
    S7_UDINT,
    S7_DINT,
    S7_REAL,
    S7_LWORD,
    S7_ULINT,
    S7_LINT,
    S7_LREAL,
    S7_TIME,
    S7_TOD,
    S7_DATE,
    S7_DT,
    S7_STRING,
    S7_WSTRING,
    S7_COUNTER,
    S7_TIMER,
    S7_T__COUNT
};
const char *s7_type_name(int t); /* "REAL" */

struct s7_addr {
    uint8_t area;   /* enum s7_area */
    uint8_t type;   /* enum s7_type */
    uint8_t bit;    /* BOOL: bit 0..7 */
    uint8_t fbtype; /* enum fb_type of the value */
    uint16_t db;    /* DB number (area DB), else 0 */
    uint16_t n;     /* STRING/WSTRING: declared characters */
    uint32_t start; /* byte offset; C/T: element number */
    uint32_t size;  /* bytes on the wire (BOOL: 1, the byte holding the bit) */
};

/* Parse a Siemens absolute address with an optional :TYPE suffix:
 *   DB10.DBD0:real  DB1.DBX2.3  DB1.DBW4:int  DB5.DBB0:string[20]
 *   MW10  MB0  MD4  M0.1  I0.1  IB0  IW2  Q1.7  QB0  (E/A for I/Q too)  C5  T3
 * hint/hint_len: a type given outside the address (config `type:`, fb types
 * such as float32 or string[N]); index: element of a `count:` expansion
 * (consecutive values of the type).  Returns 0 or FB_EINVAL with err set. */
int s7_addr_parse(const char *text, enum fb_type hint, uint32_t hint_len, uint32_t index, struct s7_addr *a,
                  struct fb_err *err);
/* Bytes the fb value of a string-typed address can take in UTF-8. */
uint32_t s7_addr_str_cap(const struct s7_addr *a);
/* "DB1.DBB4" style text for messages (buf >= 48). */
const char *s7_addr_text(const struct s7_addr *a, char *buf, size_t len);

/* ------------------------------------------------------------ value codec */
/* Decode the a->size bytes at p.  Strings go to sbuf (UTF-8).  Returns the
 * quality: FB_Q_GOOD or FB_Q_BAD_DECODING (invalid BCD date, …). */
uint32_t s7_decode(const struct s7_addr *a, const uint8_t *p, struct fb_value *v, char *sbuf, size_t sbuf_len);
/* Encode v (of a->fbtype) into out (a->size bytes).  Returns a->size or a
 * negative fb_status with err set (value out of the S7 type's range, bad
 * date text, string too long). */
int s7_encode(const struct s7_addr *a, const struct fb_value *v, uint8_t *out, size_t cap, struct fb_err *err);

/* ----------------------------------------------------------------- frames */
/* All builders return the frame length, or 0 when cap is too small. */
size_t s7_build_cr(uint8_t *buf, size_t cap, uint16_t local_tsap, uint16_t remote_tsap);
/* A full TPKT+COTP DT frame around an S7 Setup Communication job. */
size_t s7_build_setup(uint8_t *buf, size_t cap, uint16_t pdu_ref, uint16_t pdu);

/* One item of a Read Var / Write Var request.  Byte ranges are requested
 * with transport size BYTE (C/T: COUNTER/TIMER with len = 2·elements);
 * is_bit asks for one bit (writes of BOOL). */
struct s7_item {
    uint8_t area;
    bool is_bit;
    uint8_t bit;
    uint16_t db;
    uint32_t start; /* byte, or element for C/T */
    uint16_t len;   /* bytes (bit: 1) */
};
size_t s7_build_read(uint8_t *buf, size_t cap, uint16_t pdu_ref, const struct s7_item *it, unsigned n);
/* data[i] holds it[i].len bytes. */
size_t s7_build_write(uint8_t *buf, size_t cap, uint16_t pdu_ref, const struct s7_item *it, const uint8_t *const *data,
                      unsigned n);

/* Sizes that bind a request to the negotiated PDU. */
size_t s7_read_req_size(unsigned nitems);                /* 12 + 12n */
size_t s7_read_reply_item_size(uint16_t len, bool last); /* 4 + len (+1 pad) */
uint32_t s7_max_read_len(int pdu);                       /* pdu − 18 */
uint32_t s7_max_write_len(int pdu);                      /* pdu − 28 */

/* TPKT: total frame length from the 4-byte header, or FB_EPROTO. */
int s7_tpkt_len(const uint8_t *hdr, size_t n);

/* COTP, as seen in one TPKT frame. */
enum s7_cotp_kind { S7_COTP_CC = 0xD0, S7_COTP_DR = 0x80, S7_COTP_DT = 0xF0, S7_COTP_CR = 0xE0 };
struct s7_cotp {
    uint8_t kind;           /* enum s7_cotp_kind (other codes passed through) */
    bool eot;               /* DT: last fragment */
    const uint8_t *payload; /* DT: the S7 bytes of this fragment */
    size_t payload_len;
    uint8_t reason; /* DR: reason code */
};
/* Decode one complete TPKT frame (header included).  Returns 0 or FB_EPROTO. */
int s7_cotp_parse(const uint8_t *frame, size_t n, struct s7_cotp *c);

/* S7 header of a reply PDU (the reassembled COTP DT payload). */
struct s7_hdr {
    uint8_t rosctr;
    uint16_t pdu_ref;
    uint16_t par_len, data_len;
    uint8_t err_class, err_code;
    const uint8_t *par, *data;
};
/* Checks the protocol id, ROSCTR (Ack / Ack_Data) and that the parameter and
 * data lengths fit n.  Returns 0 or FB_EPROTO. */
int s7_hdr_parse(const uint8_t *pdu, size_t n, struct s7_hdr *h);
static inline uint16_t s7_hdr_error(const struct s7_hdr *h) { return (uint16_t)(h->err_class << 8 | h->err_code); }

/* Setup Communication reply: the negotiated PDU size.  Returns 0, FB_EPROTO,
 * or FB_EEXCEPTION when the header carries an error (code in *herr). */
int s7_parse_setup_reply(const uint8_t *pdu, size_t n, uint16_t pdu_ref, int *neg_pdu, uint16_t *herr);

/* Read Var reply: per item return code and data.  it/nit are the request's
 * items (the expected lengths).  Returns 0 (item results in rc/data, a bad
 * item has rc != 0xFF), FB_EEXCEPTION (header error in *herr), FB_EPROTO. */
struct s7_read_result {
    uint8_t rc;
    const uint8_t *data; /* it[i].len bytes when rc == 0xFF */
};
int s7_parse_read_reply(const uint8_t *pdu, size_t n, uint16_t pdu_ref, const struct s7_item *it, unsigned nit,
                        struct s7_read_result *res, uint16_t *herr);
/* Write Var reply: one return code per item. */
int s7_parse_write_reply(const uint8_t *pdu, size_t n, uint16_t pdu_ref, unsigned nit, uint8_t *rc, uint16_t *herr);

/* ---------------------------------------------------------------- errors */
#define S7_RC_OK 0xFF
/* Item return code → quality (write: BadNotWritable for access errors). */
uint32_t s7_item_quality(uint8_t rc, bool write);
/* A sentence a user can act on, for logs and write errors. */
const char *s7_item_text(uint8_t rc);
uint32_t s7_header_quality(uint16_t herr, bool write);
const char *s7_header_text(uint16_t herr);
const char *s7_cotp_dr_text(uint8_t reason);

/* ---------------------------------------------------------------- planner */
struct s7_ptag {
    uint32_t tag;            /* tag id */
    const struct s7_addr *a; /* borrowed from the tag */
    uint32_t range;          /* index into ranges */
    uint32_t off;            /* byte offset of the value inside its range */
    bool solo;               /* never merged (after an address error in a merge) */
};
struct s7_range {
    uint8_t area;
    uint16_t db;
    uint32_t start, len; /* bytes (C/T: 2·elements, start in bytes = 2·element) */
    uint32_t buf_off;    /* into plan->data */
    uint32_t first, n;   /* tags (indices into ptags, sorted) */
    uint32_t q;          /* quality of this read */
    uint32_t last_q;     /* quality of the previous read (log on change) */
    bool seen;           /* read at least once since the layout */
    uint8_t rc;          /* item return code / header error class that failed it */
    uint16_t herr;
};
struct s7_chunk {
    uint32_t range;
    uint32_t off, len; /* part of the range this item reads */
};
struct s7_req {
    uint32_t first, n; /* chunks */
};
struct s7_plan {
    struct s7_ptag *tags; /* sorted by (area, db, start, bit) */
    uint32_t ntags;
    uint32_t *order; /* order[i]: index in tags of the i-th tag as given */
    int max_gap, max_items;
    int pdu; /* layout made for this PDU (0 = none yet) */
    struct s7_range *ranges;
    uint32_t nranges;
    struct s7_chunk *chunks;
    uint32_t nchunks;
    struct s7_req *reqs;
    uint32_t nreqs;
    uint8_t *data; /* every range's bytes */
    uint32_t data_len;
};
/* Items are borrowed (their addresses must outlive the plan). */
int s7_plan_build(const uint32_t *tag_ids, const struct s7_addr *const *addrs, uint32_t n, int max_gap, int max_items,
                  struct s7_plan **out, struct fb_err *err);
/* (Re)compute ranges, chunks and requests for a negotiated PDU size. */
int s7_plan_layout(struct s7_plan *p, int pdu, struct fb_err *err);
/* Never merge the tags of range r again (call s7_plan_layout after). */
void s7_plan_split(struct s7_plan *p, uint32_t r);
void s7_plan_free(struct s7_plan *p);
#endif
