/* ua_subscribe.h — OPC UA subscriptions (ua_subscribe.c): one subscription
 * per poll group in subscription mode, its monitored items, Publish requests
 * kept outstanding, Republish of missed notifications, and the latest value
 * per tag handed to read(). */
#ifndef FB_UA_SUBSCRIBE_H
#define FB_UA_SUBSCRIBE_H
#include "core/model.h"
#include "south/opcua/ua_client.h"

/* Latest value per tag of a subscribed group. */
struct ua_slot {
    bool fresh;
    uint32_t q;
    int64_t ts;
    struct fb_value v;
    char *s;
    uint32_t cap;
};

/* A poll group's plan: its tags and, in subscription mode, its subscription. */
struct ua_plan {
    uint32_t n;
    uint32_t *tags;        /* tag ids, group order */
    struct ua_slot *slots; /* subscription mode */
    uint32_t sub_id;       /* 0 = none */
    uint32_t next_seq;     /* the sequence number we expect next */
    double interval_ms;
    uint32_t keepalive;
    int64_t last_pub;    /* monotonic time of the last Publish response */
    uint32_t missing[8]; /* sequence numbers to Republish */
    uint32_t nmissing;
};

/* CreateSubscription + CreateMonitoredItems (batched) for group plan p. */
int ua_sub_create(struct ua_conn *c, struct fb_device *dev, struct ua_plan *p, struct fb_err *err);
/* Keep UA_PUBLISH_MAX Publish requests outstanding. */
int ua_sub_send_publish(struct ua_conn *c, struct fb_err *err);
int ua_sub_republish(struct ua_conn *c, struct fb_device *dev, struct ua_plan *p, struct fb_err *err);
/* A Publish response (the connection's on_publish hook). */
void ua_sub_on_publish(struct ua_conn *c, const uint8_t *buf, size_t n);
/* read() in subscription mode: the values that arrived since the last call. */
int ua_sub_read(struct fb_device *dev, struct ua_conn *c, struct ua_plan *p, struct fb_batch *out);
#endif
