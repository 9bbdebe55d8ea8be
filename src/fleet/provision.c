/* provision.c — first boot with a claim certificate (provision.h;
 * docs/fleet.md#provisioning).
 *
 * Why: a fleet of thousands cannot have certificates made by hand, and a
 * private key should never travel.  Every box ships with the fleet's claim
 * certificate (it may only ask for an identity); at first start the gateway
 * is in the `provisioning` state (it polls nothing), connects with the claim
 * certificate, makes an EC P-256 key pair here (OpenSSL; the private key is
 * written 0600 to fleet.provisioning.key and never sent), and publishes a
 * certificate signing request with CN = gateway.id on
 * <gateway>/provision/csr, again every 30 s until the provisioning service
 * answers on <gateway>/provision/cert.  A certificate that matches the key
 * and names the gateway is stored (written whole) and the gateway restarts
 * itself (exec): the MQTT sink then connects with the device's own
 * certificate (mqtt.c picks it while it exists) and the state is online.
 */
#include "fleet/provision.h"

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fleet_cfg.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/thread.h"
#include "fleet/hooks.h"
#include "fleet/outbox.h"

#define RESEND_NS 30000000000LL

struct fb_prov {
    struct fb_gateway *gw;
    struct fb_prov_cfg cfg; /* copies: a reload may replace the gateway's */
    char *csr;              /* PEM */
    pthread_t thr;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_bool stop, done;
};

bool fb_prov_needed(const struct fb_gateway *gw)
{
    return gw->fleet && gw->fleet->prov && !fb_prov_have_identity(gw->fleet->prov);
}

static void result(struct fb_gateway *gw, bool ok, const char *error)
{
    json_t *m = json_pack("{s:s,s:b}", "gateway", gw->id ? gw->id : "", "ok", ok);
    if (!m) return;
    if (error) json_object_set_new(m, "error", json_string(error));
    char *p = json_dumps(m, JSON_COMPACT);
    if (p) fb_outbox_put(fb_fleet_outbox(gw), "provision/result", p, strlen(p));
    free(p);
    json_decref(m);
}

static EVP_PKEY *load_key(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    return k;
}

/* The kept key, or a new one written 0600.  NULL on failure (logged). */
static EVP_PKEY *device_key(const struct fb_prov_cfg *c)
{
    EVP_PKEY *k = load_key(c->key);
    if (k) return k;
    if (access(c->key, F_OK) == 0) {
        fb_error(NULL, NULL, "provisioning: %s exists but is not a private key in PEM; remove it", c->key);
        return NULL;
    }
    k = EVP_EC_gen("P-256");
    BIO *b = BIO_new(BIO_s_mem());
    char *p = NULL;
    long n = 0;
    struct fb_err e = {0};
    if (!k || !b || !PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) || (n = BIO_get_mem_data(b, &p)) <= 0 ||
        fb_fleet_write_atomic(c->key, p, (size_t)n, &e) < 0) {
        fb_error(NULL, NULL, "provisioning: cannot make the device key %s: %s", c->key, e.msg[0] ? e.msg : "OpenSSL");
        EVP_PKEY_free(k);
        k = NULL;
    } else {
        fb_info(NULL, NULL, "provisioning: new key pair, private key in %s", c->key);
    }
    BIO_free(b);
    return k;
}

static char *make_csr(EVP_PKEY *k, const char *cn)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL, *p = NULL;
    if (req && name && b &&
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) &&
        X509_REQ_set_subject_name(req, name) && X509_REQ_set_pubkey(req, k) &&
        X509_REQ_sign(req, k, EVP_sha256()) > 0 && PEM_write_bio_X509_REQ(b, req)) {
        long n = BIO_get_mem_data(b, &p);
        if (n > 0) out = strndup(p, (size_t)n);
    }
    BIO_free(b);
    X509_NAME_free(name);
    X509_REQ_free(req);
    return out;
}

static void send_csr(struct fb_prov *p)
{
    json_t *m = json_pack("{s:s,s:s}", "gateway", p->gw->id, "csr", p->csr);
    char *s = m ? json_dumps(m, JSON_COMPACT) : NULL;
    if (s) fb_outbox_put(fb_fleet_outbox(p->gw), "provision/csr", s, strlen(s));
    free(s);
    json_decref(m);
}

static void *thread(void *arg)
{
    struct fb_prov *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!atomic_load(&p->stop) && !atomic_load(&p->done)) {
        pthread_mutex_unlock(&p->mu);
        send_csr(p);
        fb_info(NULL, NULL, "provisioning: certificate signing request sent (CN=%s)", p->gw->id);
        pthread_mutex_lock(&p->mu);
        int64_t until = fb_mono_ns() + RESEND_NS;
        while (!atomic_load(&p->stop) && !atomic_load(&p->done) && fb_mono_ns() < until)
            fb_cond_wait_until(&p->cv, &p->mu, until);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct fb_prov *fb_prov_start(struct fb_gateway *gw)
{
    if (!fb_prov_needed(gw)) return NULL;
    const struct fb_prov_cfg *c = gw->fleet->prov;
    struct fb_prov *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->gw = gw;
    p->cfg.claim_cert = strdup(c->claim_cert ? c->claim_cert : "");
    p->cfg.claim_key = strdup(c->claim_key ? c->claim_key : "");
    p->cfg.cert = strdup(c->cert);
    p->cfg.key = strdup(c->key);
    pthread_mutex_init(&p->mu, NULL);
    fb_cond_init_mono(&p->cv);
    EVP_PKEY *k = p->cfg.key ? device_key(&p->cfg) : NULL;
    if (k) p->csr = make_csr(k, gw->id);
    EVP_PKEY_free(k);
    if (!p->csr) {
        fb_error(NULL, NULL, "provisioning: no certificate signing request; the gateway stays unprovisioned");
        return p;
    }
    if (pthread_create(&p->thr, NULL, thread, p) == 0) p->started = true;
    return p;
}

void fb_prov_stop(struct fb_prov *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->started) pthread_join(p->thr, NULL);
    p->started = false;
}

void fb_prov_free(struct fb_prov *p)
{
    if (!p) return;
    fb_prov_stop(p);
    free(p->cfg.claim_cert);
    free(p->cfg.claim_key);
    free(p->cfg.cert);
    free(p->cfg.key);
    free(p->csr);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

/* The certificate: PEM, for our key, CN = the gateway id.  0 or why. */
static int check_cert(struct fb_prov *p, const char *pem, char *why, size_t n)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    EVP_PKEY *k = load_key(p->cfg.key);
    int rc = -1;
    char cn[256] = "";
    if (!x)
        snprintf(why, n, "cert: not a certificate in PEM");
    else if (!k)
        snprintf(why, n, "the device key %s cannot be read", p->cfg.key);
    else if (X509_check_private_key(x, k) != 1)
        snprintf(why, n, "the certificate is not for this gateway's key");
    else if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) < 0 ||
             strcmp(cn, p->gw->id))
        snprintf(why, n, "the certificate names CN=%s, not this gateway (%s)", cn, p->gw->id);
    else if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0)
        snprintf(why, n, "the certificate has expired");
    else
        rc = 0;
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}

void fb_prov_command(struct fb_prov *p, struct fb_gateway *gw, const struct fb_cmd *cmd, char **resp, size_t *len)
{
    *resp = NULL;
    *len = 0;
    json_t *root = json_loadb(cmd->payload, cmd->len, 0, NULL);
    const char *pem = json_string_value(json_object_get(root, "cert"));
    char why[300] = "";
    if (!p || atomic_load(&p->done))
        snprintf(why, sizeof why, "this gateway is not being provisioned");
    else if (!pem)
        snprintf(why, sizeof why, "expected {\"cert\":\"-----BEGIN CERTIFICATE-----…\"}");
    else if (check_cert(p, pem, why, sizeof why) == 0) {
        struct fb_err e = {0};
        if (fb_fleet_write_atomic(p->cfg.cert, pem, strlen(pem), &e) < 0) snprintf(why, sizeof why, "%s", e.msg);
    }
    if (why[0]) {
        fb_warn(NULL, NULL, "provisioning: certificate from %s refused: %s", cmd->source, why);
        result(gw, false, why);
    } else {
        atomic_store(&p->done, true);
        fb_info(NULL, NULL, "provisioning: certificate stored in %s; restarting with it", p->cfg.cert);
        result(gw, true, NULL);
        fb_runtime_request_reboot(gw);
    }
    json_decref(root);
}
