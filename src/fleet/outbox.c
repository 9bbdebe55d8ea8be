/* outbox.c — the bounded queue of outbox.h: messages the device shadow
 * publishes on the gateway's topics, drained by the MQTT sink's thread. */
#include "fleet/outbox.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct msg {
    struct msg *next;
    size_t len;
    char *suffix;
    char json[]; /* len bytes and a NUL */
};

struct fb_outbox {
    pthread_mutex_t mu;
    struct msg *head, *tail;
    size_t n, max;
    uint64_t dropped;
};

struct fb_outbox *fb_outbox_new(size_t max_msgs)
{
    struct fb_outbox *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    pthread_mutex_init(&o->mu, NULL);
    o->max = max_msgs ? max_msgs : 1;
    return o;
}

void fb_outbox_free(struct fb_outbox *o)
{
    if (!o) return;
    for (struct msg *m = o->head, *nx; m; m = nx) {
        nx = m->next;
        free(m->suffix);
        free(m);
    }
    pthread_mutex_destroy(&o->mu);
    free(o);
}

void fb_outbox_put(struct fb_outbox *o, const char *suffix, const char *json, size_t len)
{
    if (!o) return;
    struct msg *m = malloc(sizeof *m + len + 1);
    if (!m) return;
    if (!(m->suffix = strdup(suffix))) {
        free(m);
        return;
    }
    m->next = NULL;
    m->len = len;
    memcpy(m->json, json, len);
    m->json[len] = 0;
    pthread_mutex_lock(&o->mu);
    if (o->n == o->max) {
        struct msg *old = o->head;
        o->head = old->next;
        if (!o->head) o->tail = NULL;
        o->n--;
        o->dropped++;
        free(old->suffix);
        free(old);
    }
    if (o->tail)
        o->tail->next = m;
    else
        o->head = m;
    o->tail = m;
    o->n++;
    pthread_mutex_unlock(&o->mu);
}

size_t fb_outbox_drain(struct fb_outbox *o, fb_outbox_fn fn, void *arg)
{
    size_t taken = 0;
    if (!o) return 0;
    for (;;) {
        pthread_mutex_lock(&o->mu);
        struct msg *m = o->head;
        if (m) {
            o->head = m->next;
            if (!o->head) o->tail = NULL;
            o->n--;
        }
        pthread_mutex_unlock(&o->mu);
        if (!m) break;
        if (fn(arg, m->suffix, m->json, m->len) != 0) { /* put it back in front */
            pthread_mutex_lock(&o->mu);
            m->next = o->head;
            o->head = m;
            if (!o->tail) o->tail = m;
            o->n++;
            pthread_mutex_unlock(&o->mu);
            break;
        }
        free(m->suffix);
        free(m);
        taken++;
    }
    return taken;
}

uint64_t fb_outbox_dropped(struct fb_outbox *o)
{
    if (!o) return 0;
    pthread_mutex_lock(&o->mu);
    uint64_t d = o->dropped;
    pthread_mutex_unlock(&o->mu);
    return d;
}
