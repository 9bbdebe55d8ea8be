/* store_io.c — the table of system calls the store uses (store_io.h): the
 * libc functions by default; tests install their own to inject faults. */
#include "store/store_io.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int sys_openat(int dirfd, const char *path, int flags, mode_t mode) { return openat(dirfd, path, flags, mode); }

const struct fb_store_io fb_store_io_libc = {
    .openat = sys_openat,
    .mkdir = mkdir,
    .pwrite = pwrite,
    .write = write,
    .pread = pread,
    .read = read,
    .fdatasync = fdatasync,
    .fsync = fsync,
    .renameat = renameat,
    .ftruncate = ftruncate,
    .unlinkat = unlinkat,
};

const struct fb_store_io *fb_store_sys = &fb_store_io_libc;

void fb_store_io_set(const struct fb_store_io *io) { fb_store_sys = io ? io : &fb_store_io_libc; }
