/* http_token.h — `fieldbridge http-token NAME ROLE` (http_token.c): a bearer
 * token for the HTTP API, printed once, its hash for the tokens file. */
#ifndef FB_HTTP_TOKEN_H
#define FB_HTTP_TOKEN_H
int fb_cli_http_token(int argc, char **argv);
#endif
