/* http_token.c — `fieldbridge http-token NAME ROLE [--append FILE]`: make a
 * bearer token for the HTTP API (north/http/auth.c).  The token is printed
 * once; only its SHA-256 goes into the tokens file, so the file never holds
 * anything that lets a reader in. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/http_token.h"
#include "north/http/auth.h"

static const char *const help = "usage: fieldbridge http-token NAME ROLE [--append FILE]\n"
                                "Makes a bearer token for the HTTP API (http: section, docs/http-api.md).\n"
                                "  NAME   who uses it (1..63 of A-Z a-z 0-9 . _ - @); writes are logged as http:NAME\n"
                                "  ROLE   viewer (read) or operator (read and write)\n"
                                "  --append FILE  add the line to the tokens file (created with mode 600)\n"
                                "The token is printed once and not stored: the file keeps only its SHA-256.\n"
                                "A client sends it as the header  Authorization: Bearer TOKEN\n"
                                "exit codes: 0 made; 1 the file could not be written; 2 usage error\n";

int fb_cli_http_token(int argc, char **argv)
{
    const char *name = NULL, *role = NULL, *file = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--append") && i + 1 < argc)
            file = argv[++i];
        else if (argv[i][0] == '-') {
            fprintf(stderr, "fieldbridge http-token: unknown option '%s'\n%s", argv[i], help);
            return 2;
        } else if (!name)
            name = argv[i];
        else if (!role)
            role = argv[i];
        else {
            fprintf(stderr, "fieldbridge http-token: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!name || !role) {
        fputs(help, stderr);
        return 2;
    }
    char tok[80], line[256];
    struct fb_err err = {0};
    if (fb_http_token_new(name, role, tok, sizeof tok, line, sizeof line, &err) < 0) {
        fprintf(stderr, "fieldbridge http-token: %s\n", err.msg);
        return 2;
    }
    if (file) {
        /* the name must be new: a second line with it would make the file unusable */
        FILE *rf = fopen(file, "r");
        if (rf) {
            char buf[512];
            size_t nl = strlen(name);
            while (fgets(buf, sizeof buf, rf))
                if (!strncmp(buf, name, nl) && buf[nl] == ':') {
                    fclose(rf);
                    fprintf(stderr, "fieldbridge http-token: %s already has a token named '%s'\n", file, name);
                    return 2;
                }
            fclose(rf);
        }
        int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            fprintf(stderr, "fieldbridge http-token: cannot open %s: %s\n", file, strerror(errno));
            return 1;
        }
        size_t n = strlen(line);
        line[n] = '\n';
        ssize_t w = write(fd, line, n + 1);
        line[n] = 0;
        if (w != (ssize_t)(n + 1) || close(fd) < 0) {
            fprintf(stderr, "fieldbridge http-token: cannot write %s: %s\n", file, strerror(errno));
            return 1;
        }
        printf("token for %s (%s), shown once; the running gateway picks the new line up within 2 s:\n%s\n", name, role,
               tok);
        printf("added to %s:\n%s\n", file, line);
    } else {
        printf("token for %s (%s), shown once:\n%s\n", name, role, tok);
        printf("line for the tokens file (http.tokens):\n%s\n", line);
    }
    return 0;
}
