/* browse.c — browse results as data and as tag config.
 *
 * The drivers list what a device offers in the vocabulary of tags (name,
 * address, type, access); this file makes the names valid and unique and
 * writes the YAML a user pastes under `devices:` — the same shape
 * docs/configuration.md documents, quoted so YAML cannot misread an
 * address ("ns=2;s=Line1.Speed") — and the JSON of GET /api/v1/browse.
 */
#include "core/browse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"

static bool name_used(const struct fb_browse *b, const char *n)
{
    for (size_t i = 0; i < b->n; i++)
        if (!strcmp(b->it[i].name, n)) return true;
    return false;
}

int fb_browse_add(struct fb_browse *b, const char *name, const char *addr, int type, int access, const char *note)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 32;
        struct fb_browse_item *ni = realloc(b->it, cap * sizeof *ni);
        if (!ni) return FB_ENOMEM;
        b->it = ni;
        b->cap = cap;
    }
    char base[128];
    size_t n = 0;
    for (const char *p = name ? name : ""; *p && n < sizeof base - 12; p++) {
        unsigned char c = (unsigned char)*p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                  c == '-';
        if (c >= 0x80) { /* a UTF-8 character: one _ for the whole sequence */
            while ((((unsigned char)p[1]) & 0xC0) == 0x80) p++;
        }
        if (!ok && n && base[n - 1] == '_') continue;
        base[n++] = ok ? (char)c : '_';
    }
    while (n > 1 && base[n - 1] == '_') n--;
    if (n == 0) base[n++] = 'v';
    base[n] = 0;
    char nm[140];
    snprintf(nm, sizeof nm, "%s", base);
    for (int k = 2; name_used(b, nm); k++) snprintf(nm, sizeof nm, "%s_%d", base, k);
    struct fb_browse_item *it = &b->it[b->n];
    it->name = strdup(nm);
    it->addr = strdup(addr ? addr : "");
    it->note = note ? strdup(note) : NULL;
    it->type = (uint8_t)type;
    it->access = (uint8_t)(access ? access : FB_ACC_READ);
    if (!it->name || !it->addr || (note && !it->note)) {
        free(it->name);
        free(it->addr);
        free(it->note);
        return FB_ENOMEM;
    }
    b->n++;
    return 0;
}

void fb_browse_free(struct fb_browse *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->it[i].name);
        free(b->it[i].addr);
        free(b->it[i].note);
    }
    free(b->it);
    b->it = NULL;
    b->n = b->cap = 0;
}

static const char *acc_text(int a) { return a == FB_ACC_RW ? "rw" : a == FB_ACC_WRITE ? "w" : "r"; }

void fb_browse_yaml(struct fb_buf *out, const struct fb_browse *b, const char *url, const char *device)
{
    size_t scalars = 0;
    for (size_t i = 0; i < b->n; i++) scalars += b->it[i].type != FB_T_NONE;
    fb_buf_printf(out, "# fieldbridge browse: %zu variables, %zu of them single values; paste under devices:\n", b->n,
                  scalars);
    fb_buf_puts(out, "- name: ");
    fb_json_cstr(out, device && *device ? device : "device-01");
    fb_buf_puts(out, "\n  url: ");
    fb_json_cstr(out, url ? url : "");
    fb_buf_puts(out, "\n  poll: 1s\n  tags:\n");
    if (!scalars) fb_buf_puts(out, "    []\n");
    for (size_t i = 0; i < b->n; i++) {
        const struct fb_browse_item *it = &b->it[i];
        if (it->type == FB_T_NONE) continue;
        fb_buf_puts(out, "    - {name: ");
        fb_json_cstr(out, it->name);
        fb_buf_puts(out, ", addr: ");
        fb_json_cstr(out, it->addr);
        fb_buf_printf(out, ", type: %s", fb_type_name((enum fb_type)it->type));
        if (it->access != FB_ACC_READ) fb_buf_printf(out, ", access: %s", acc_text(it->access));
        fb_buf_puts(out, "}");
        if (it->note && *it->note) {
            fb_buf_puts(out, "  # ");
            for (const char *p = it->note; *p; p++) fb_buf_putc(out, *p == '\n' ? ' ' : *p);
        }
        fb_buf_putc(out, '\n');
    }
    for (size_t i = 0; i < b->n; i++) {
        const struct fb_browse_item *it = &b->it[i];
        if (it->type != FB_T_NONE) continue;
        fb_buf_puts(out, "    # not a single value: ");
        for (const char *p = it->addr; *p; p++) fb_buf_putc(out, *p == '\n' ? ' ' : *p);
        if (it->note && *it->note) {
            fb_buf_puts(out, " (");
            for (const char *p = it->note; *p; p++) fb_buf_putc(out, *p == '\n' ? ' ' : *p);
            fb_buf_putc(out, ')');
        }
        fb_buf_putc(out, '\n');
    }
}

void fb_browse_json_items(struct fb_buf *out, const struct fb_browse *b)
{
    fb_buf_printf(out, "\"count\":%zu,\"items\":[", b->n);
    for (size_t i = 0; i < b->n; i++) {
        const struct fb_browse_item *it = &b->it[i];
        if (i) fb_buf_putc(out, ',');
        fb_buf_puts(out, "{\"name\":");
        fb_json_cstr(out, it->name);
        fb_buf_puts(out, ",\"addr\":");
        fb_json_cstr(out, it->addr);
        fb_buf_puts(out, ",\"type\":");
        if (it->type == FB_T_NONE)
            fb_buf_puts(out, "null");
        else
            fb_json_cstr(out, fb_type_name((enum fb_type)it->type));
        fb_buf_puts(out, ",\"access\":\"");
        fb_buf_puts(out, acc_text(it->access));
        fb_buf_puts(out, "\",\"note\":");
        if (it->note)
            fb_json_cstr(out, it->note);
        else
            fb_buf_puts(out, "null");
        fb_buf_putc(out, '}');
    }
    fb_buf_putc(out, ']');
}
