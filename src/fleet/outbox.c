/* outbox.c — the bounded queue of outbox.h: messages the fleet extensions
 * publish on the gateway's topics, drained by the MQTT sink's thread; those
 * put with an acknowledgement callback wait in `sent` for the broker's
 * PUBACK (fb_outbox_settle). */
#include "fleet/outbox.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"

struct msg {
    struct msg *next;
    size_t len;
    char *suffix;
    uint64_t token; /* 0: no acknowledgement wanted */
    fb_outbox_ack_fn ack;
    void *ack_arg;
    char json[]; /* len bytes and a NUL */
};

struct fb_outbox {
    pthread_mutex_t mu;
    struct msg *head, *tail;
    size_t n, max;
    uint64_t dropped;
    uint64_t next_token;
    struct msg *sent;     /* handed to the session, waiting for its acknowledgement (under mu) */
    pthread_mutex_t cb_mu; /* held while an ack callback runs (fb_outbox_forget waits for it); before mu */
};

static void msg_free(struct msg *m)
{
    free(m->suffix);
    free(m);
}

struct fb_outbox *fb_outbox_new(size_t max_msgs)
{
    struct fb_outbox *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    pthread_mutex_init(&o->mu, NULL);
    pthread_mutex_init(&o->cb_mu, NULL);
    o->max = max_msgs ? max_msgs : 1;
    return o;
}

void fb_outbox_free(struct fb_outbox *o)
{
    if (!o) return;
    for (struct msg *m = o->head, *nx; m; m = nx) {
        nx = m->next;
        msg_free(m);
    }
    for (struct msg *m = o->sent, *nx; m; m = nx) {
        nx = m->next;
        msg_free(m);
    }
    pthread_mutex_destroy(&o->mu);
    pthread_mutex_destroy(&o->cb_mu);
    free(o);
}

static uint64_t put(struct fb_outbox *o, const char *suffix, const char *json, size_t len, fb_outbox_ack_fn ack,
                    void *arg)
{
    if (!o) return 0;
    struct msg *m = calloc(1, sizeof *m + len + 1);
    if (!m) return 0;
    if (!(m->suffix = strdup(suffix))) {
        free(m);
        return 0;
    }
    m->len = len;
    m->ack = ack;
    m->ack_arg = arg;
    memcpy(m->json, json, len);
    m->json[len] = 0;
    pthread_mutex_lock(&o->mu);
    if (ack) m->token = ++o->next_token;
    uint64_t token = ack ? m->token : 1;
    if (o->n == o->max) {
        struct msg *old = o->head;
        o->head = old->next;
        if (!o->head) o->tail = NULL;
        o->n--;
        o->dropped++;
        msg_free(old);
    }
    if (o->tail)
        o->tail->next = m;
    else
        o->head = m;
    o->tail = m;
    o->n++;
    pthread_mutex_unlock(&o->mu);
    return token;
}

void fb_outbox_put(struct fb_outbox *o, const char *suffix, const char *json, size_t len)
{
    put(o, suffix, json, len, NULL, NULL);
}

uint64_t fb_outbox_put_acked(struct fb_outbox *o, const char *suffix, const char *json, size_t len,
                             fb_outbox_ack_fn ack, void *arg)
{
    return ack ? put(o, suffix, json, len, ack, arg) : 0;
}

void fb_outbox_forget(struct fb_outbox *o, void *arg)
{
    if (!o) return;
    pthread_mutex_lock(&o->cb_mu);
    pthread_mutex_lock(&o->mu);
    for (struct msg *m = o->head; m; m = m->next)
        if (m->ack_arg == arg) m->ack = NULL;
    for (struct msg *m = o->sent; m; m = m->next)
        if (m->ack_arg == arg) m->ack = NULL;
    pthread_mutex_unlock(&o->mu);
    pthread_mutex_unlock(&o->cb_mu);
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
            if (m->token) { /* in `sent` before fn publishes it: its acknowledgement may come at once */
                m->next = o->sent;
                o->sent = m;
            }
        }
        pthread_mutex_unlock(&o->mu);
        if (!m) break;
        uint64_t token = m->token; /* once published, m may be settled (and freed) on another thread */
        if (fn(arg, m->suffix, m->json, m->len, token) != 0) { /* put it back in front */
            pthread_mutex_lock(&o->mu);
            if (token)
                for (struct msg **pp = &o->sent; *pp; pp = &(*pp)->next)
                    if (*pp == m) {
                        *pp = m->next;
                        break;
                    }
            m->next = o->head;
            o->head = m;
            if (!o->tail) o->tail = m;
            o->n++;
            pthread_mutex_unlock(&o->mu);
            break;
        }
        if (!token) msg_free(m);
        taken++;
    }
    return taken;
}

void fb_outbox_settle(struct fb_outbox *o, uint64_t token, int outcome)
{
    if (!o || !token) return;
    pthread_mutex_lock(&o->cb_mu);
    pthread_mutex_lock(&o->mu);
    struct msg *m = NULL;
    for (struct msg **pp = &o->sent; *pp; pp = &(*pp)->next)
        if ((*pp)->token == token) {
            m = *pp;
            *pp = m->next;
            break;
        }
    if (m && outcome == FB_RETRY) { /* the session that had it is gone: the next one sends it */
        m->next = o->head;
        o->head = m;
        if (!o->tail) o->tail = m;
        o->n++;
        m = NULL;
    }
    pthread_mutex_unlock(&o->mu);
    if (m && outcome == FB_SENT && m->ack) m->ack(m->ack_arg, token);
    pthread_mutex_unlock(&o->cb_mu);
    if (m) msg_free(m);
}

uint64_t fb_outbox_dropped(struct fb_outbox *o)
{
    if (!o) return 0;
    pthread_mutex_lock(&o->mu);
    uint64_t d = o->dropped;
    pthread_mutex_unlock(&o->mu);
    return d;
}
