/* certs.h — the expiry watch for every certificate and CRL the gateway uses
 * (certs.c; docs/security.md "Certificates"). */
#ifndef FB_CERTS_H
#define FB_CERTS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/buf.h"
#include "core/model.h"

enum fb_cert_state { FB_CERT_OK = 0, FB_CERT_EXPIRING, FB_CERT_EXPIRED };

/* One certificate or CRL found in a watched file or store. */
struct fb_cert_info {
    char use[160];     /* what uses it: "mqtt.tls.cert", "device plc pki= trusted" */
    char file[512];    /* the file it was read from */
    char subject[200]; /* "CN=…" of a certificate, "CRL of CN=…" of a CRL */
    bool crl;
    int64_t not_before_s; /* Unix seconds: the notBefore, or a CRL's lastUpdate */
    int64_t not_after_s;  /* Unix seconds: the notAfter, or a CRL's nextUpdate; 0 = none */
};

/* Read every watched file and store of gw now: *out (malloc'd, *n entries),
 * also when a file is missing (it is then left out).  0 or FB_ENOMEM. */
int fb_certs_scan(const struct fb_gateway *gw, struct fb_cert_info **out, size_t *n);
/* OK, EXPIRING (within gw->cert_warn_ns of the notAfter; a CRL also only in
 * the last quarter of its lastUpdate..nextUpdate period) or EXPIRED (a CRL:
 * past its nextUpdate). */
enum fb_cert_state fb_cert_state(const struct fb_gateway *gw, const struct fb_cert_info *c, int64_t now_s);
const char *fb_cert_state_name(enum fb_cert_state s); /* "ok", "expiring", "expired" */

/* While running (gw->rt): the first scan at once (its warnings logged), then
 * one every gw->cert_check_ns on a thread of its own; each certificate that is
 * expiring or expired is logged when first seen so and again once a day. */
int fb_certs_start(struct fb_gateway *gw);
void fb_certs_stop(struct fb_gateway *gw);
/* The last scan as Prometheus families (fieldbridge_certificate_*) and as the
 * status JSON's `,"certificates":[…]` (nothing when nothing is watched). */
void fb_certs_metrics(struct fb_gateway *gw, struct fb_buf *out);
void fb_certs_status(struct fb_gateway *gw, struct fb_buf *out);
/* `fieldbridge check`: a line per certificate with its expiry. */
void fb_certs_describe(const struct fb_gateway *gw, FILE *f);
#endif
