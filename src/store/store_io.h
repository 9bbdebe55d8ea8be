/* store_io.h — every system call by which the store (store.c) changes or
 * reads its files goes through this one table, so that tests can fail any
 * of them (ENOSPC, EIO, at the Nth call), kill the process at any of them,
 * or record them to rebuild the disk "as if power was lost" (the crash and
 * fault injection of tests/unit/test_store_crash.c, SQLite-style).
 *
 * In production the table holds the libc functions: one indirect call per
 * system call, nothing else.  fb_store_io_set() must be called before any
 * store is opened and not while one is in use (it is not synchronised).
 */
#ifndef FB_STORE_IO_H
#define FB_STORE_IO_H

#include <sys/types.h>

struct fb_store_io {
    int (*openat)(int dirfd, const char *path, int flags, mode_t mode); /* also opens the directory */
    int (*mkdir)(const char *path, mode_t mode);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    ssize_t (*write)(int fd, const void *buf, size_t n);
    ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
    ssize_t (*read)(int fd, void *buf, size_t n);
    int (*fdatasync)(int fd);
    int (*fsync)(int fd);
    int (*renameat)(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);
    int (*ftruncate)(int fd, off_t len);
    int (*unlinkat)(int dirfd, const char *path, int flags);
};

/* The libc table (tests wrap it and call through to it). */
extern const struct fb_store_io fb_store_io_libc;
/* The table in use (store.c calls through it). */
extern const struct fb_store_io *fb_store_sys;
/* Installs a table for every store (NULL: back to libc). */
void fb_store_io_set(const struct fb_store_io *io);

#endif
