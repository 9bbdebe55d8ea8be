/* revpi_proto.h — Revolution Pi process image and PiCtory configuration,
 * without any I/O: the config.rsc parser (JSON text in, variables out), the
 * address parser (`I_1`, `bit:70.3`, `word:10:int16` …), the little-endian
 * value codec and the safe-state list parser.  src/south/revpi/revpi.c is
 * the glue that owns the file descriptor.  Format facts: PROTOCOLS.md §7. */
#ifndef FB_REVPI_PROTO_H
#define FB_REVPI_PROTO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

#define FB_REVPI_IMAGE_SIZE 4096u
#define FB_REVPI_NAME_MAX 64

enum fb_revpi_io { FB_REVPI_INP = 0, FB_REVPI_OUT = 1, FB_REVPI_MEM = 2 };

/* Where a value sits in the process image. */
struct fb_revpi_loc {
    uint32_t offset; /* absolute byte */
    uint8_t bit;     /* 0..7 when bits == 1, else 0 */
    uint16_t bits;   /* length in bits: 1, 8, 16, 32, 64 (variables may carry others) */
};

struct fb_revpi_var {
    char *name;
    char *def; /* default value as written (may be "") */
    char *comment;
    struct fb_revpi_loc loc;
    uint8_t io;   /* enum fb_revpi_io */
    uint8_t type; /* enum fb_type it reads as without a :TYPE: fb_revpi_module_type() */
    bool exported;
    uint32_t dev; /* index into cfg->devs */
};

struct fb_revpi_dev {
    char *name, *id, *type, *bmk;
    int position, product_type;
    uint32_t offset;           /* base byte in the process image */
    uint32_t first_var, nvars; /* cfg->vars[first_var ..] in file order inp, out, mem */
};

struct fb_revpi_cfg {
    struct fb_revpi_dev *devs;
    uint32_t ndevs;
    struct fb_revpi_var *vars;
    uint32_t nvars;
    uint32_t image_size;
};

/* Parse config.rsc text (not NUL-terminated; len bytes) into cfg.  Unknown
 * keys are ignored; overlapping variables, variables outside the image,
 * duplicate names and malformed entries are errors naming the device and
 * variable.  On error cfg is left empty.  image_size 0 means 4096. */
int fb_revpi_cfg_parse(const char *text, size_t len, uint32_t image_size, struct fb_revpi_cfg *cfg, struct fb_err *err);
void fb_revpi_cfg_free(struct fb_revpi_cfg *cfg);
/* Exact (case-sensitive) name look-up; NULL if absent.  Linear: start-up only. */
const struct fb_revpi_var *fb_revpi_cfg_find(const struct fb_revpi_cfg *cfg, const char *name);
const char *fb_revpi_io_name(int io); /* "inp" "out" "mem" */

/* A tag address.  Raw forms carry their location; names are resolved
 * against a parsed config with fb_revpi_addr_resolve. */
struct fb_revpi_addr {
    char name[FB_REVPI_NAME_MAX]; /* variable name; "" for raw addresses */
    struct fb_revpi_loc loc;      /* valid when resolved (always for raw) */
    uint8_t type;                 /* enum fb_type: a :TYPE suffix, the raw kind, or (once resolved) the
                                   * variable's module type; NONE if none */
    uint8_t io;                   /* of the variable once resolved; FB_REVPI_OUT for raw */
    bool resolved;
};
/* `I_1`, `RevPiLED:int16`, `bit:70.3`, `byte:70`, `word:10`, `dword:12`,
 * `int16:10`, `uint32:12`, `float32:20`, `word:10:int16`. */
int fb_revpi_addr_parse(const char *text, struct fb_revpi_addr *a, struct fb_err *err);
/* Look a named address up in cfg: location, io, and (without a :TYPE) the
 * variable's type from the module table. */
int fb_revpi_addr_resolve(struct fb_revpi_addr *a, const struct fb_revpi_cfg *cfg, struct fb_err *err);

/* The type a location reads as by default: 1 bit → bool, 8 → uint8,
 * 16 → uint16, 32 → uint32, 64 → uint64; FB_T_NONE for other lengths. */
enum fb_type fb_revpi_default_type(uint16_t bits);
/* The type a variable of a module reads as: the module's own type where
 * KUNBUS defines one (the AIO's 16-bit values are INT16, see the table in
 * revpi_proto.c and docs/revpi.md), else fb_revpi_default_type(bits).
 * *module (may be NULL) gets the module's name when a rule applied. */
enum fb_type fb_revpi_module_type(int product_type, int io, uint16_t bits, const char *name, const char **module);
/* May type t live at a location of `bits` bits?  bool fits every length
 * (nonzero = true); a 1-bit location also reads as any integer (0/1);
 * otherwise the type's width must equal the length. */
int fb_revpi_type_check(enum fb_type t, uint16_t bits, struct fb_err *err);
/* "bit:70.3", "byte:70", "word:10", "dword:12", "qword:8"; "bits48:10" otherwise. */
int fb_revpi_loc_format(char *buf, size_t n, const struct fb_revpi_loc *l);
/* Bytes a location touches: 1 for bits, else bits/8 rounded up. */
static inline uint32_t fb_revpi_loc_bytes(const struct fb_revpi_loc *l)
{
    return l->bits <= 8 ? 1u : (uint32_t)(l->bits + 7u) / 8u;
}

/* Decode the value at l from img, a window of the image starting at image
 * byte `base`, len bytes long.  FB_ERANGE when l is not inside the window. */
int fb_revpi_decode(const uint8_t *img, uint32_t base, uint32_t len, const struct fb_revpi_loc *l, enum fb_type t,
                    struct fb_value *v);
/* Encode v (of type t) for location l: *nbytes little-endian bytes in out,
 * or for a 1-bit location *bitval and *nbytes = 0.  Out-of-range values
 * (e.g. 300 into a byte) are FB_ERANGE. */
int fb_revpi_encode(const struct fb_revpi_loc *l, enum fb_type t, const struct fb_value *v, uint8_t out[8],
                    uint32_t *nbytes, bool *bitval, struct fb_err *err);
static inline uint8_t fb_revpi_bit_apply(uint8_t byte, uint8_t bit, bool v)
{
    return v ? (uint8_t)(byte | (1u << bit)) : (uint8_t)(byte & ~(1u << bit));
}

/* Safe-state list "O_1=0,O_2=1,AnalogOut=0,bit:70.3=true": addresses as
 * above, values numbers or true/false/on/off.  *items is malloc'd. */
struct fb_revpi_safe {
    char addr[96];
    double value;
};
int fb_revpi_safe_parse(const char *spec, struct fb_revpi_safe **items, uint32_t *n, struct fb_err *err);
#endif
