/* shadow_doc.c — the device shadow's document rules (shadow_doc.h): merge
 * with null-deletes, metadata timestamps, the delta and the version check.
 * Kept free of the gateway so that the rules are unit-tested alone. */
#include "fleet/shadow_doc.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void fb_shadow_doc_init(struct fb_shadow_doc *d)
{
    memset(d, 0, sizeof *d);
    d->desired = json_object();
    d->reported = json_object();
    d->meta_desired = json_object();
    d->meta_reported = json_object();
}

void fb_shadow_doc_clear(struct fb_shadow_doc *d)
{
    json_decref(d->desired);
    json_decref(d->reported);
    json_decref(d->meta_desired);
    json_decref(d->meta_reported);
    memset(d, 0, sizeof *d);
}

bool fb_shadow_value_equal(const json_t *a, const json_t *b)
{
    if (!a || !b) return a == b;
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b)) return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    return json_equal((json_t *)a, (json_t *)b);
}

json_t *fb_shadow_delta(const json_t *desired, const json_t *reported)
{
    json_t *out = json_object();
    if (!out || !json_is_object(desired)) return out;
    const char *k;
    json_t *dv;
    json_object_foreach((json_t *)desired, k, dv)
    {
        json_t *rv = json_is_object(reported) ? json_object_get(reported, k) : NULL;
        if (json_is_object(dv)) {
            json_t *sub = fb_shadow_delta(dv, json_is_object(rv) ? rv : NULL);
            if (sub && json_object_size(sub) > 0)
                json_object_set_new(out, k, sub);
            else
                json_decref(sub);
        } else if (!rv || !fb_shadow_value_equal(dv, rv)) {
            json_object_set(out, k, dv);
        }
    }
    return out;
}

static int check(const json_t *j, int depth, char *why, size_t n)
{
    if (json_is_object(j)) {
        if (depth > FB_SHADOW_MAX_DEPTH) {
            snprintf(why, n, "nested deeper than %d levels", FB_SHADOW_MAX_DEPTH);
            return -1;
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            if (!k[0]) {
                snprintf(why, n, "an empty key");
                return -1;
            }
            if (check(v, depth + 1, why, n) < 0) return -1;
        }
    } else if (json_is_real(j) && !isfinite(json_real_value(j))) {
        snprintf(why, n, "a number that is not finite");
        return -1;
    }
    return 0;
}

int fb_shadow_check_patch(const json_t *patch, char *why, size_t n)
{
    if (!json_is_object(patch)) {
        snprintf(why, n, "expected an object");
        return -1;
    }
    return check(patch, 1, why, n);
}

bool fb_shadow_merge(json_t *dst, json_t *meta, const json_t *patch, int64_t ts)
{
    bool changed = false;
    const char *k;
    json_t *pv;
    json_object_foreach((json_t *)patch, k, pv)
    {
        json_t *cur = json_object_get(dst, k);
        if (json_is_null(pv)) {
            if (cur) {
                json_object_del(dst, k);
                json_object_del(meta, k);
                changed = true;
            }
        } else if (json_is_object(pv)) {
            if (!json_is_object(cur)) {
                json_object_set_new(dst, k, json_object());
                json_object_del(meta, k);
                changed = changed || cur != NULL;
                cur = json_object_get(dst, k);
            }
            json_t *m = json_object_get(meta, k);
            if (!json_is_object(m) || json_object_get(m, "timestamp")) { /* a leaf's metadata before */
                json_object_set_new(meta, k, json_object());
                m = json_object_get(meta, k);
            }
            if (fb_shadow_merge(cur, m, pv, ts)) changed = true;
            if (json_object_size(cur) == 0) { /* {} left nothing: like AWS, the key goes */
                json_object_del(dst, k);
                json_object_del(meta, k);
            }
        } else {
            if (!cur || !json_equal(cur, pv)) changed = true;
            json_object_set(dst, k, pv);
            json_t *m = json_pack("{s:I}", "timestamp", (json_int_t)ts);
            json_object_set_new(meta, k, m);
        }
    }
    return changed;
}

int fb_shadow_check_version(const struct fb_shadow_doc *d, const json_t *update)
{
    json_t *v = json_object_get(update, "version");
    if (!v) return 0;
    return json_is_integer(v) && json_integer_value(v) == d->version ? 0 : -1;
}

json_t *fb_shadow_doc_json(const struct fb_shadow_doc *d)
{
    json_t *delta = fb_shadow_delta(d->desired, d->reported);
    json_t *state = json_pack("{s:O,s:O}", "desired", d->desired, "reported", d->reported);
    if (state && delta && json_object_size(delta) > 0) json_object_set(state, "delta", delta);
    json_decref(delta);
    return json_pack("{s:o,s:{s:O,s:O},s:I,s:I}", "state", state, "metadata", "desired", d->meta_desired, "reported",
                     d->meta_reported, "version", (json_int_t)d->version, "timestamp", (json_int_t)d->timestamp);
}

int fb_shadow_doc_from_json(struct fb_shadow_doc *d, const json_t *j, char *why, size_t n)
{
    json_t *des = NULL, *rep = NULL, *md = NULL, *mr = NULL;
    json_int_t ver = 0, ts = 0;
    json_error_t e;
    if (json_unpack_ex((json_t *)j, &e, 0, "{s:{s?o,s?o},s?{s?o,s?o},s:I,s?I}", "state", "desired", &des, "reported",
                       &rep, "metadata", "desired", &md, "reported", &mr, "version", &ver, "timestamp", &ts) < 0) {
        snprintf(why, n, "%s", e.text);
        return -1;
    }
    if ((des && !json_is_object(des)) || (rep && !json_is_object(rep)) || (md && !json_is_object(md)) ||
        (mr && !json_is_object(mr)) || ver < 0) {
        snprintf(why, n, "state, metadata: objects expected; version >= 0");
        return -1;
    }
    fb_shadow_doc_clear(d);
    d->desired = des ? json_deep_copy(des) : json_object();
    d->reported = rep ? json_deep_copy(rep) : json_object();
    d->meta_desired = md ? json_deep_copy(md) : json_object();
    d->meta_reported = mr ? json_deep_copy(mr) : json_object();
    d->version = ver;
    d->timestamp = ts;
    return 0;
}
