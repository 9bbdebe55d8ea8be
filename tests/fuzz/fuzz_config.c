/* fuzz_config.c — libFuzzer harness for the whole configuration loader:
 * fb_config_load_mem (src/core/config.c) from the YAML reader (core/cfg.c:
 * merge keys, aliases, ${ENV}, `for:` placeholder expressions in
 * config_tmpl.c) to the model — gateway, devices and their drivers' address
 * parsers and planners (config_dev.c), computed tags, alarms, scripts,
 * vibration, every sink's, service's and source's cfg_load — then the
 * `check` summary and fb_gateway_free.  A config is text an operator (or a
 * fleet server) hands the gateway: any input is either a model or a list of
 * `file:line:col` errors, never a crash, a hang or a leak.
 *
 * The input is the document itself.  It is loaded as
 * /nonexistent/fuzz.yaml, so relative file references (certificates,
 * password files, scripts) resolve to files that do not exist and are
 * reported (not strict: warnings); nothing is opened, started or connected.
 * Messages go to /dev/null.
 *
 * Run with the expansion limit lowered (struct fb_config_opts.max_expand =
 * FUZZ_MAX_EXPAND, 500): a `for:` of more entries, or a document of more
 * devices or tags, is refused early with the loader's usual limit messages,
 * as production's defaults refuse past 100,000 entries or devices and
 * 2,000,000 tags.  A fuzzer's corpus otherwise fills with inputs that expand
 * to thousands of devices (up to 3 s each under ASan, RSS near 1 GB) and add
 * time, not coverage: the rate fell from ~1,900 to ~735 inputs/s within
 * minutes.  Replaying a grown corpus (4,541 inputs) gave cov: 4,331 at 500
 * and 4,335 at 2,000 in 60 % of the time; an older one (1,762 inputs) 4,050
 * at 2,000 and at the defaults, in a third of the time.  The limit checks
 * and the expansion code are the same code at either size; what only the
 * big sizes exercise is in tests/unit/test_config.c (test_max_expand,
 * test_many_devices).  Production never sets max_expand.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_config /tmp/c tests/fuzz/corpus/config
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/config.h"
#include "core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* the loader's `for:` entries, devices and tags, each (docs/reliability.md) */
#ifndef FUZZ_MAX_EXPAND
#define FUZZ_MAX_EXPAND 500
#endif

static FILE *devnull;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!devnull) {
        fb_log_init(-1, FB_LOG_TEXT); /* silence */
        devnull = fopen("/dev/null", "w");
        if (!devnull) abort();
    }
    if (size > 64 * 1024) return 0;
    struct fb_config_opts o = {.strict = false, .diag = devnull, .max_expand = FUZZ_MAX_EXPAND};
    struct fb_gateway *gw = NULL;
    int rc = fb_config_load_mem("/nonexistent/fuzz.yaml", (const char *)data, size, &o, &gw);
    if (rc == 0) {
        if (!gw) abort();
        fb_config_summary(gw, devnull);
    }
    fb_gateway_free(gw);
    return 0;
}
