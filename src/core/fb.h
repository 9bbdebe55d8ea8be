/* fb.h — the vocabulary every part of fieldbridge shares: errors, time,
 * quality codes and values (implemented in fb.c).  The configured model is
 * in model.h, batches of samples in batch.h.
 *
 * Errors: functions return 0 or a negative enum fb_status; anything a user
 * will read carries a message in struct fb_err.  Bad input from files or the
 * network returns an error and never asserts; a broken internal invariant
 * (a bug of ours) is checked with FB_ASSERT, which aborts with the place
 * and the condition, in every build.
 */
#ifndef FB_H
#define FB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* An internal invariant: never false unless fieldbridge has a bug.  Kept in
 * release builds: continuing past a broken invariant risks writing a wrong
 * value to a machine, which is worse than a restart by systemd. */
#define FB_ASSERT(cond) ((cond) ? (void)0 : fb_assert_fail(#cond, __FILE__, __LINE__, __func__))
_Noreturn void fb_assert_fail(const char *cond, const char *file, int line, const char *func);

/* ------------------------------------------------------------------ errors */
enum fb_status {
    FB_OK = 0,
    FB_EINVAL = -1, /* bad argument / bad input */
    FB_ENOMEM = -2,
    FB_EIO = -3, /* connection or I/O failure: reconnect */
    FB_ETIMEDOUT = -4,
    FB_EPROTO = -5,     /* malformed frame from the peer */
    FB_EEXCEPTION = -6, /* protocol-level refusal (e.g. Modbus exception) */
    FB_ENOTSUP = -7,
    FB_ERANGE = -8,
    FB_EACCES = -9,
    FB_ENOENT = -10,
    FB_ECLOSED = -11,
    FB_EAGAIN = -12,
};

struct fb_err {
    int code;
    char msg[256];
};

/* Sets e (if not NULL) and returns code, so `return fb_err_set(...)` works. */
int fb_err_set(struct fb_err *e, int code, const char *fmt, ...) FB_PRINTF(3, 4);
const char *fb_strerror(int code);

/* -------------------------------------------------------------------- time */
int64_t fb_now_ns(void);  /* CLOCK_REALTIME, ns since the Unix epoch (UTC) */
int64_t fb_mono_ns(void); /* CLOCK_MONOTONIC */
/* Whether the kernel reports the system clock synchronised (NTP/PTP); health
 * and status say so when it is not, since every time stamp depends on it. */
bool fb_clock_synced(void);
/* "2026-11-28T10:00:00.123Z" (millisecond precision); buf >= 32. Returns length. */
size_t fb_fmt_time(char *buf, int64_t ns);
/* The inverse for what fb_fmt_time writes (and RFC 3339 in UTC with 0..9
 * fraction digits: "2026-11-28T10:00:00Z", "...00.123456789Z"); n bytes of s.
 * false when it is not that shape. */
bool fb_parse_time(const char *s, size_t n, int64_t *ns);
/* "100ms", "1.5s", "2m", "7d", "250us", "10ns"; a bare number is seconds. */
int fb_parse_duration(const char *s, int64_t *ns);
/* "512MiB", "10MB", "4096", "1GiB", "64k" (k/KB = 1000, KiB = 1024). */
int fb_parse_size(const char *s, uint64_t *bytes);

/* Reconnect back-off: doubles from min to max with equal jitter (half
 * fixed, half random), so gateways restarted together spread out. */
struct fb_backoff {
    int64_t min_ns, max_ns, cur_ns;
    uint64_t rng;
};
void fb_backoff_init(struct fb_backoff *b, int64_t min_ns, int64_t max_ns);
int64_t fb_backoff_next(struct fb_backoff *b); /* the delay before the next attempt */
static inline void fb_backoff_reset(struct fb_backoff *b) { b->cur_ns = b->min_ns; }

/* ----------------------------------------------------------------- quality */
/* OPC UA StatusCode compatible.  The top two bits give the severity. */
#define FB_Q_GOOD 0x00000000u
#define FB_Q_UNCERTAIN 0x40000000u
#define FB_Q_BAD 0x80000000u
#define FB_Q_BAD_INTERNAL 0x80020000u
#define FB_Q_BAD_COMM 0x80050000u         /* BadCommunicationError */
#define FB_Q_BAD_DECODING 0x80070000u     /* BadDecodingError */
#define FB_Q_BAD_TIMEOUT 0x800A0000u      /* BadTimeout */
#define FB_Q_BAD_NO_COMM 0x80310000u      /* BadNoCommunication */
#define FB_Q_BAD_WAITING 0x80320000u      /* BadWaitingForInitialData */
#define FB_Q_BAD_NODE_UNKNOWN 0x80340000u /* BadNodeIdUnknown */
#define FB_Q_BAD_NOT_READABLE 0x803A0000u
#define FB_Q_BAD_NOT_WRITABLE 0x803B0000u
#define FB_Q_BAD_OUT_OF_RANGE 0x803C0000u /* BadOutOfRange */
#define FB_Q_BAD_TYPE_MISMATCH 0x80740000u
#define FB_Q_BAD_CONFIG 0x80890000u /* BadConfigurationError */
#define FB_Q_BAD_NOT_CONNECTED 0x808A0000u
#define FB_Q_BAD_DEVICE_FAILURE 0x808B0000u /* BadDeviceFailure */
#define FB_Q_BAD_SENSOR_FAILURE 0x808C0000u /* BadSensorFailure */
#define FB_Q_UNC_LAST_USABLE 0x40900000u    /* UncertainLastUsableValue */
#define FB_Q_UNC_NOT_ACCURATE 0x40930000u   /* UncertainSensorNotAccurate */
#define FB_Q_UNC_EU_EXCEEDED 0x40940000u    /* UncertainEngineeringUnitsExceeded */

static inline bool fb_q_good(uint32_t q) { return (q & 0xC0000000u) == 0; }
static inline bool fb_q_bad(uint32_t q) { return (q & 0x80000000u) != 0; }
/* "good" / "uncertain" / "bad" */
const char *fb_q_severity(uint32_t q);
/* "BadCommunicationError", ...; "0x80AB0000" style for unknown codes (buf >= 12 used then). */
const char *fb_q_name(uint32_t q, char buf[16]);
/* The inverse: a name fb_q_name writes (n bytes of s) → its code; false if unknown. */
bool fb_q_parse(const char *s, size_t n, uint32_t *q);

/* ------------------------------------------------------------------ values */
enum fb_type {
    FB_T_NONE = 0,
    FB_T_BOOL,
    FB_T_INT8,
    FB_T_UINT8,
    FB_T_INT16,
    FB_T_UINT16,
    FB_T_INT32,
    FB_T_UINT32,
    FB_T_INT64,
    FB_T_UINT64,
    FB_T_FLOAT32,
    FB_T_FLOAT64,
    FB_T_STRING,
    FB_T_BLOCK, /* a waveform block (core/block.h): never a tag's type, only a sample's value */
    FB_T__COUNT
};
const char *fb_type_name(enum fb_type t);  /* "float32" */
enum fb_type fb_type_parse(const char *s); /* FB_T_NONE if unknown */
static inline bool fb_type_is_int(enum fb_type t) { return t >= FB_T_INT8 && t <= FB_T_UINT64; }
static inline bool fb_type_is_signed(enum fb_type t)
{
    return t == FB_T_INT8 || t == FB_T_INT16 || t == FB_T_INT32 || t == FB_T_INT64;
}
static inline bool fb_type_is_float(enum fb_type t) { return t == FB_T_FLOAT32 || t == FB_T_FLOAT64; }

/* A value.  Integers live in i (signed types) or u (unsigned types), floats in
 * f (float32 widened), strings point into memory owned by whoever made the
 * value (a batch's arena, a command's buffer) and are not NUL-terminated.
 * A block (FB_T_BLOCK, a waveform tag's samples) is reference counted: a
 * batch that holds one holds a reference (batch.c). */
struct fb_block;
struct fb_value {
    uint8_t type; /* enum fb_type */
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double f;
        struct {
            const char *p;
            uint32_t len;
        } s;
        struct fb_block *blk;
    };
};
/* Numeric view (bool → 0/1); false for strings. */
bool fb_value_to_double(const struct fb_value *v, double *out);
/* Convert a double into type t with range check (FB_ERANGE) and, for integer
 * types, rounding to nearest.  Used when writing scaled values back. */
int fb_value_from_double(enum fb_type t, double d, struct fb_value *out);
bool fb_value_equal(const struct fb_value *a, const struct fb_value *b);

#endif
