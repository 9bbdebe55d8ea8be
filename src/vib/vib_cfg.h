/* vib_cfg.h — the configuration of vibration condition monitoring
 * (vib_cfg.c): a tag's `vibration:` key makes it a waveform tag, and the
 * top-level `vibration:` section holds what is shared (docs/vibration.md,
 * docs/configuration.md).
 *
 * While the devices are read, each waveform tag's `vibration:` map is read
 * into a channel (fb_vib_cfg_tag), which names the feature tags the loader
 * then adds right after the waveform tag in its device (one tag per
 * feature: `<tag>.rms`, `<tag>.velocity_rms`, `<tag>.band.<name>`, …).
 * fb_vib_cfg_finish resolves speed tags, which may come later in the file,
 * and declares the channels' alarms (external alarms of the alarm table). */
#ifndef FB_VIB_CFG_H
#define FB_VIB_CFG_H
#include "core/cfg.h"
#include "core/model.h"
#include "vib/anomaly.h"
#include "vib/bearing.h"

/* The tag key this module reads (config_dev.c adds it to its table). */
#define FB_VIB_TAG_KEYS "vibration"

#define FB_VIB_MAX_BANDS 16
#define FB_VIB_MAX_ORDERS 8
#define FB_VIB_MAX_OUT (12 + FB_VIB_MAX_BANDS + FB_VIB_MAX_ORDERS + FB_BEARING__COUNT)
#define FB_VIB_MAX_BLOCK (1u << 22)

/* What a feature tag holds. */
enum fb_vout {
    FB_VO_RMS = 0,
    FB_VO_PEAK,
    FB_VO_P2P,
    FB_VO_CREST,
    FB_VO_KURT,
    FB_VO_SKEW,
    FB_VO_VEL,   /* velocity RMS, mm/s */
    FB_VO_BAND,  /* idx: band */
    FB_VO_ORDER, /* idx: order */
    FB_VO_ENV,   /* idx: FB_BPFO.. */
    FB_VO_ISO,   /* "A" .. "D" */
    FB_VO_ANOM,  /* largest z-score */
    FB_VO_TREND, /* largest rise per trend window, % */
    FB_VO__COUNT
};

struct fb_vib_out {
    uint8_t kind; /* enum fb_vout */
    uint8_t idx;
};

/* One waveform tag and what to compute from it. */
struct fb_vib_chan {
    uint32_t tag; /* the waveform tag */
    uint32_t n;
    double fs;
    double to_ms2; /* signal unit → m/s² (1, 9.80665, 0.001) */
    char *unit;    /* the signal's unit as written ("m/s2", "g", "mm/s2") */
    double vel_lo, vel_hi;
    uint32_t nbands;
    char *band_name[FB_VIB_MAX_BANDS];
    double band[FB_VIB_MAX_BANDS][2];
    uint32_t norders;
    double order[FB_VIB_MAX_ORDERS];
    double tol; /* line search, fraction of the frequency */
    /* running speed: fixed (speed_hz > 0) or from a tag (speed_tag) */
    double speed_hz;
    uint32_t speed_tag; /* UINT32_MAX: none */
    double speed_k;     /* speed tag value → Hz */
    /* bearing and envelope */
    bool has_bearing;
    struct fb_bearing bearing;
    double env_lo, env_hi;
    uint32_t env_harm;
    uint32_t env_m; /* envelope FFT size (vib/dsp.h), 0: no envelope */
    /* ISO 10816-3 */
    bool iso;
    int iso_group;     /* 1 or 2 */
    bool iso_flexible; /* mounting */
    double iso_limits[3];
    double iso_deadband;       /* fraction of the limit */
    bool iso_alarms;           /* declare zone C and D alarms */
    uint32_t alarm_c, alarm_d; /* their ids (UINT32_MAX: none) */
    /* anomaly detection */
    bool anomaly;
    struct fb_anom_cfg acfg;
    uint32_t nmon;
    uint8_t mon[FB_VIB_MAX_OUT]; /* indices into out[] of the monitored features */
    bool anom_alarms;
    uint32_t alarm_z, alarm_trend; /* UINT32_MAX: none */
    /* the feature tags, in order: gw->tags[wave->first_feature + i] holds out[i] */
    uint32_t nout;
    struct fb_vib_out out[FB_VIB_MAX_OUT];
    uint64_t fingerprint; /* of everything the baseline depends on */
    /* while loading */
    char *speed_name;
    struct fb_cfg_mark speed_m, m;
};

struct fb_vib {
    struct fb_vib_chan *ch;
    uint32_t nch, cap;
    uint32_t threads; /* analysis threads (default 1) */
    int64_t save_ns;  /* baseline saved at least this often while it changes (default 60 s) */
};

/* The `vibration:` section (NULL: defaults), before the devices. */
void fb_vib_cfg_section(struct fb_cfg *r, struct fb_cfg_node *n, struct fb_gateway *gw);
/* The `vibration:` key of a tag entry m, for tag `tag` (already in the model,
 * polled every poll_ns): sets tag->wave_ix (gw->waves) and fills the feature tags' names
 * ("rms", "band.low", …), units and types into names/units/types (room for
 * FB_VIB_MAX_OUT); returns how many (0 after an error). */
uint32_t fb_vib_cfg_tag(struct fb_cfg *r, const struct fb_tvars *vars, const struct fb_cfg_map *m,
                        struct fb_gateway *gw, uint32_t tag, int64_t poll_ns, char names[][48], const char **units,
                        uint8_t *types);
/* After every device: speed tags, alarms, fingerprints. */
void fb_vib_cfg_finish(struct fb_cfg *r, struct fb_gateway *gw);
/* The key tables ("vibration", "vibration_tag", …), for the docs check. */
size_t fb_vib_key_tables(struct fb_config_keys *out, size_t max);
/* A few lines for `fieldbridge check`. */
void fb_vib_describe(const struct fb_gateway *gw, FILE *f);
/* "A".."D" */
extern const char *const fb_vib_zone_names[4];
#endif
