/* log.h — structured logging: human text or JSON lines, with device/tag context.
 * Thread-safe (one write(2) per line).  Rate limiting is the caller's job via
 * fb_ratelimit. */
#ifndef FB_LOG_H
#define FB_LOG_H
#include <stdbool.h>
#include <stdint.h>
#include "core/fb.h"

enum fb_log_format { FB_LOG_TEXT = 0, FB_LOG_JSON = 1 };
enum { FB_LOG_ERROR = 0, FB_LOG_WARN = 1, FB_LOG_INFO = 2, FB_LOG_DEBUG = 3 };

void fb_log_init(int level, int format /* enum fb_log_format */);
int fb_log_level_parse(const char *s); /* "error".."debug"; -1 if unknown */
extern int fb_log_current_level;
/* device and tag may be NULL.  Lines go to stderr. */
void fb_log(int level, const char *device, const char *tag, const char *fmt, ...) FB_PRINTF(4, 5);

#define fb_error(dev, tag, ...) fb_log(FB_LOG_ERROR, dev, tag, __VA_ARGS__)
#define fb_warn(dev, tag, ...) fb_log(FB_LOG_WARN, dev, tag, __VA_ARGS__)
#define fb_info(dev, tag, ...) fb_log(FB_LOG_INFO, dev, tag, __VA_ARGS__)
#define fb_debug(dev, tag, ...)                                                                                        \
    do {                                                                                                               \
        if (fb_log_current_level >= FB_LOG_DEBUG) fb_log(FB_LOG_DEBUG, dev, tag, __VA_ARGS__);                         \
    } while (0)

/* Returns true at most once per interval; counts suppressed calls in *suppressed. */
struct fb_ratelimit {
    int64_t interval_ns, last_ns;
    uint64_t suppressed;
};
bool fb_ratelimit_ok(struct fb_ratelimit *r, int64_t now_mono_ns);
#endif
