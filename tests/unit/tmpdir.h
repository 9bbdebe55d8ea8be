/* tmpdir.h — one scratch directory per unit-test program, made before its
 * tests run and removed with everything in it afterwards (cmocka group
 * setup/teardown), for the tests that write config files or stores. */
#ifndef FB_TEST_TMPDIR_H
#define FB_TEST_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>

static char tmpdir[256];

static int tmpdir_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fb_unit.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int tmpdir_teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
