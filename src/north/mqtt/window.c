/* window.c — the in-flight window of an MQTT session (window.h says why). */
#include "north/mqtt/window.h"

void fb_win_cap(struct fb_win *w, uint32_t max)
{
    w->max = max < 1 ? 1 : max;
    w->floor = w->max < FB_WIN_FLOOR ? w->max : FB_WIN_FLOOR;
    if (w->win > w->max) w->win = w->max;
    if (w->win < w->floor) w->win = w->floor;
}

void fb_win_init(struct fb_win *w, uint32_t max, int64_t now_ns)
{
    w->win = 0; /* fb_win_cap raises it to the floor */
    fb_win_cap(w, max);
    w->rtt_min = INT64_MAX;
    w->rtt_epoch = INT64_MAX;
    w->epoch_end = now_ns + FB_WIN_EPOCH_NS;
    w->interval_start = now_ns;
    w->acks = 0;
}

void fb_win_ack(struct fb_win *w, int64_t rtt_ns, int64_t now_ns)
{
    if (rtt_ns < 1) rtt_ns = 1;
    if (rtt_ns < w->rtt_epoch) w->rtt_epoch = rtt_ns;
    if (rtt_ns < w->rtt_min) w->rtt_min = rtt_ns;
    if (now_ns >= w->epoch_end) {
        /* the least of the epoch that ended stands for the next one */
        w->rtt_min = w->rtt_epoch;
        w->rtt_epoch = INT64_MAX;
        w->epoch_end = now_ns + FB_WIN_EPOCH_NS;
    }
    w->acks++;
    int64_t span = now_ns - w->interval_start;
    int64_t need = w->rtt_min > (INT64_MAX / FB_WIN_INTERVAL_RTTS) ? INT64_MAX : w->rtt_min * FB_WIN_INTERVAL_RTTS;
    if (need < FB_WIN_INTERVAL_MIN_NS) need = FB_WIN_INTERVAL_MIN_NS;
    if (span < need) return;
    /* 2 × rate × least RTT: the messages the link holds, twice over */
    double target = 2.0 * (double)w->acks * (double)w->rtt_min / (double)span + w->floor;
    w->win = target >= w->max ? w->max : (uint32_t)target;
    if (w->win < w->floor) w->win = w->floor;
    w->acks = 0;
    w->interval_start = now_ns;
}
