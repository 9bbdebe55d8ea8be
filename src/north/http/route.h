/* route.h — the HTTP API's endpoints as a table (route.c): method, path
 * pattern, the role it needs, whether it takes a body.  Pure functions, no
 * I/O: unit-tested and fuzzed (tests/fuzz/fuzz_http_request.c). */
#ifndef FB_HTTP_ROUTE_H
#define FB_HTTP_ROUTE_H
#include <stdbool.h>
#include <stddef.h>

enum fb_ep {
    FB_EP_NONE = 0,
    FB_EP_UI,      /* the embedded page and its files */
    FB_EP_OPENAPI, /* GET /api/v1/openapi.yaml */
    FB_EP_WHOAMI,  /* GET /api/v1/whoami */
    FB_EP_STATUS,  /* GET /api/v1/status */
    FB_EP_DEVICES, /* GET /api/v1/devices */
    FB_EP_DEVICE,  /* GET /api/v1/devices/{name} */
    FB_EP_TAGS,    /* GET /api/v1/devices/{name}/tags */
    FB_EP_WRITE,   /* POST /api/v1/devices/{name}/write */
    FB_EP_VALUES,  /* GET /api/v1/values */
    FB_EP_EVENTS,  /* GET /api/v1/events (Server-Sent Events) */
    FB_EP_CONFIG,  /* GET /api/v1/config */
    FB_EP_CHECK,   /* POST /api/v1/config/check */
    FB_EP_BROWSE,  /* GET /api/v1/browse */
    FB_EP_ALARMS,  /* GET /api/v1/alarms */
};

struct fb_route {
    enum fb_ep ep;
    int role;          /* enum fb_http_role the endpoint needs (0: none) */
    bool body;         /* it takes a request body */
    bool tls;          /* operator endpoint: TLS unless plaintext writes are allowed */
    const char *name;  /* the {name} segment (points into the path), or NULL */
    size_t name_len;   /* its length */
    const char *allow; /* the methods this path allows (for 405 and OPTIONS) */
};

/* Match method and path (without the query).  Returns 200 and *r, 404 when
 * no path matches, 405 when the path exists for other methods (r->allow
 * says which).  HEAD is served like GET.  OPTIONS matches every API path
 * (CORS preflight) with r->ep of the path. */
int fb_http_route(const char *method, const char *path, struct fb_route *r);
#endif
