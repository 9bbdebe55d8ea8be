/* route.c — the table of the HTTP API's endpoints and the matcher.
 *
 * A pattern is a path whose segments are literal or `{name}` (one segment:
 * a device name).  Paths are matched exactly: no trailing slash, no empty
 * segments, no dot segments — a path that is not in the table is a 404
 * whatever it looks like, so nothing outside the table can ever be reached.
 * The page's own files are a separate small table (ui.h) looked up by the
 * handler; here they are one entry per path.
 */
#include "north/http/route.h"

#include <string.h>

#include "north/http/auth.h"

struct row {
    const char *method;
    const char *pattern;
    enum fb_ep ep;
    int role;
    bool body, tls;
};

static const struct row rows[] = {
    {"GET", "/", FB_EP_UI, FB_ROLE_NONE, false, false},
    {"GET", "/ui/{name}", FB_EP_UI, FB_ROLE_NONE, false, false},
    {"GET", "/api/v1/openapi.yaml", FB_EP_OPENAPI, FB_ROLE_NONE, false, false},
    {"GET", "/api/v1/whoami", FB_EP_WHOAMI, FB_ROLE_VIEWER, false, false},
    {"GET", "/api/v1/status", FB_EP_STATUS, FB_ROLE_VIEWER, false, false},
    {"GET", "/api/v1/devices", FB_EP_DEVICES, FB_ROLE_VIEWER, false, false},
    {"GET", "/api/v1/devices/{name}", FB_EP_DEVICE, FB_ROLE_VIEWER, false, false},
    {"GET", "/api/v1/devices/{name}/tags", FB_EP_TAGS, FB_ROLE_VIEWER, false, false},
    {"POST", "/api/v1/devices/{name}/write", FB_EP_WRITE, FB_ROLE_OPERATOR, true, true},
    {"GET", "/api/v1/values", FB_EP_VALUES, FB_ROLE_VIEWER, false, false},
    {"GET", "/api/v1/events", FB_EP_EVENTS, FB_ROLE_VIEWER, false, false},
    {"GET", "/api/v1/config", FB_EP_CONFIG, FB_ROLE_VIEWER, false, false},
    {"GET", "/api/v1/alarms", FB_EP_ALARMS, FB_ROLE_VIEWER, false, false},
    /* operator: it makes the gateway look at files and, for browse, connect
     * to any address — commissioning, not watching */
    {"POST", "/api/v1/config/check", FB_EP_CHECK, FB_ROLE_OPERATOR, true, true},
    {"GET", "/api/v1/browse", FB_EP_BROWSE, FB_ROLE_OPERATOR, false, true},
};

/* Does path match pattern?  Sets name and nl for a {name} segment. */
static bool match(const char *pat, const char *path, const char **name, size_t *nl)
{
    *name = NULL;
    *nl = 0;
    while (*pat && *path) {
        if (pat[0] == '{') {
            const char *pe = strchr(pat, '}');
            if (!pe) return false;
            size_t n = strcspn(path, "/");
            if (n == 0) return false;
            *name = path;
            *nl = n;
            path += n;
            pat = pe + 1;
            continue;
        }
        if (*pat != *path) return false;
        pat++;
        path++;
    }
    return !*pat && !*path;
}

int fb_http_route(const char *method, const char *path, struct fb_route *r)
{
    memset(r, 0, sizeof *r);
    if (!method || !path || path[0] != '/') return 404;
    bool head = !strcmp(method, "HEAD");
    bool options = !strcmp(method, "OPTIONS");
    const char *m = head ? "GET" : method;
    const struct row *found = NULL, *other = NULL;
    const char *name = NULL;
    size_t nl = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *nm;
        size_t n;
        if (!match(rows[i].pattern, path, &nm, &n)) continue;
        if (!strcmp(rows[i].method, m) && !found) {
            found = &rows[i];
            name = nm;
            nl = n;
        } else if (!other) {
            other = &rows[i];
            if (!found) {
                name = nm;
                nl = n;
            }
        }
    }
    const struct row *any = found ? found : other;
    if (!any) return 404;
    /* every pattern exists for one method; say which */
    r->allow = !strcmp(any->method, "POST") ? "POST, OPTIONS" : "GET, HEAD, OPTIONS";
    r->name = name;
    r->name_len = nl;
    r->ep = any->ep;
    r->role = any->role;
    r->body = any->body;
    r->tls = any->tls;
    if (options) return 200;
    return found ? 200 : 405;
}
