/* ctl_dev.c — each control loop is published as a device of its own, with
 * the driver here: its tags are the loop's state (pv, sp, sp_target, out,
 * mode, state, saturation, kp, ti, td), so the loop travels every path a
 * device does — MQTT JSON telemetry and Sparkplug metrics, store-and-forward,
 * status — and commands to it (`{"write":{"sp":55,"mode":"auto"}}` on the
 * loop's command topic) pass the router's checks (exists, writable, type,
 * range: the set point's limits are the sp tag's range) before the loop's
 * own (fb_loop_command: interlocks, manual-only output).
 *
 * "Reading" takes the loop's snapshot; all loop devices share one
 * connection ("control"), hence one thread, which polls each at its
 * `publish` period.  Nothing here touches the control thread's state.
 */
#include "control/ctl_dev.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/loop.h"

static const char *const no_schemes[] = {NULL};

static int ctl_device_init(struct fb_device *dev, char **conn_key, struct fb_err *err)
{
    if (!dev->drv_dev) return fb_err_set(err, FB_EINVAL, "%s: a control loop device needs its loop", dev->name);
    *conn_key = strdup("control");
    return *conn_key ? 0 : fb_err_set(err, FB_ENOMEM, "out of memory");
}

static void ctl_device_free(struct fb_device *dev) { dev->drv_dev = NULL; /* the loop belongs to control: */ }

static int ctl_parse_address(struct fb_device *dev, struct fb_tag *t, struct fb_err *err)
{
    char ab[FB_ATEXT_MAX];
    const char *text = fb_tag_addr_text(dev->gw, t, ab);
    if (!text) text = "";
    for (int f = 0; f < FB_LF__COUNT; f++)
        if (!strcmp(text, fb_loop_field_names[f])) {
            t->addr = (void *)(uintptr_t)(f + 1);
            return 0;
        }
    return fb_err_set(err, FB_EINVAL, "%s: no loop field '%s'", dev->name, text);
}

static void ctl_free_address(struct fb_tag *t) { t->addr = NULL; }

static int ctl_open(struct fb_conn *c, struct fb_err *err)
{
    for (uint32_t i = 0; i < c->ndevs; i++) {
        const struct fb_loop_cfg *lc = c->devs[i]->drv_dev;
        if (!atomic_load(&((struct fb_loop_cfg *)lc)->rt))
            return fb_err_set(err, FB_ECLOSED, "the control loops are not running");
    }
    return 0;
}

static void ctl_close(struct fb_conn *c) { (void)c; }

static struct fb_loop *running(const struct fb_device *dev)
{
    struct fb_loop_cfg *lc = dev->drv_dev;
    return atomic_load(&lc->rt);
}

static int ctl_read(struct fb_device *dev, struct fb_group *g, struct fb_batch *out)
{
    struct fb_loop *L = running(dev);
    if (!L) return FB_ECLOSED;
    struct fb_loop_snap s;
    fb_loop_snapshot(L, &s);
    int64_t now = fb_now_ns();
    for (uint32_t i = 0; i < g->ntags; i++) {
        const struct fb_tag *t = &dev->gw->tags[fb_group_tag(g, i)];
        int f = (int)(uintptr_t)t->addr - 1;
        struct fb_value v = {.type = FB_T_FLOAT64};
        uint32_t q = FB_Q_GOOD;
        const char *str = NULL;
        switch (f) {
            case FB_LF_PV:
                v.f = s.pv;
                q = s.have_pv ? s.pv_q : FB_Q_BAD_WAITING;
                break;
            case FB_LF_SP: v.f = s.sp; break;
            case FB_LF_SP_TARGET: v.f = s.sp_target; break;
            case FB_LF_OUT: v.f = s.out; break;
            case FB_LF_KP: v.f = s.kp; break;
            case FB_LF_TI: v.f = s.ti; break;
            case FB_LF_TD: v.f = s.td; break;
            case FB_LF_MODE: str = s.mode == FB_MODE_AUTO ? "auto" : "manual"; break;
            case FB_LF_STATE: str = fb_loop_state_names[s.state]; break;
            case FB_LF_SAT: str = fb_loop_sat_name(s.sat); break;
            default: q = FB_Q_BAD_CONFIG; break;
        }
        if (str) {
            v.type = FB_T_STRING;
            v.s.p = str;
            v.s.len = (uint32_t)strlen(str);
        }
        fb_batch_add(out, t->id, q, now, &v);
    }
    atomic_fetch_add(&dev->m.requests, 1);
    atomic_store(&dev->m.last_success_ns, now);
    return 0;
}

static int ctl_write(struct fb_device *dev, const struct fb_tag *t, const struct fb_value *v, struct fb_err *err)
{
    struct fb_loop *L = running(dev);
    if (!L) return fb_err_set(err, FB_ECLOSED, "loop %s is not running", dev->name);
    return fb_loop_command(L, (int)(uintptr_t)t->addr - 1, v, err);
}

const struct fb_driver fb_driver_control = {
    .name = "control",
    .schemes = no_schemes,
    .device_init = ctl_device_init,
    .device_free = ctl_device_free,
    .parse_address = ctl_parse_address,
    .free_address = ctl_free_address,
    .open = ctl_open,
    .read = ctl_read,
    .write = ctl_write,
    .close = ctl_close,
};
