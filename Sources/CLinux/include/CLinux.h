#ifndef MRLEASED_CLINUX_H
#define MRLEASED_CLINUX_H

/*
 * Linux facilities Swift cannot import directly: ioctl request macros built
 * over structs (FS_IOC_FIEMAP), variadic fcntl commands behind _GNU_SOURCE
 * (F_SETLEASE, F_SETSIG), SIGRTMIN (a libc call), statx and its DAX bit.
 * Each wrapper returns what the C call returns; errno is left for Swift.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/prctl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <unistd.h>

#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000
#endif
#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

static const int MRL_F_SETLEASE = F_SETLEASE;
static const int MRL_F_GETLEASE = F_GETLEASE;
static const int MRL_F_SETSIG = F_SETSIG;
static const int MRL_F_RDLCK = F_RDLCK;
static const int MRL_F_WRLCK = F_WRLCK;
static const int MRL_F_UNLCK = F_UNLCK;
static const int MRL_MAP_SHARED_VALIDATE = MAP_SHARED_VALIDATE;
static const int MRL_MAP_SYNC = MAP_SYNC;
static const unsigned long long MRL_STATX_ATTR_DAX = STATX_ATTR_DAX;

static inline int mrl_sigrtmin(void) { return SIGRTMIN; }

static inline int mrl_fcntl_int(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }
static inline int mrl_fcntl_noarg(int fd, int cmd) { return fcntl(fd, cmd); }

/* FS_IOC_FIEMAP is _IOWR('f', 11, struct fiemap): a macro over a struct. */
static inline int mrl_ioctl_fiemap(int fd, struct fiemap *map) {
    return ioctl(fd, FS_IOC_FIEMAP, map);
}

static inline int mrl_statx(int dirfd, const char *path, int flags,
                            unsigned int mask, struct statx *out) {
    return statx(dirfd, path, flags, mask, out);
}

/* The fiemap header is followed by fm_extent_count extents (a flexible array). */
static inline struct fiemap_extent *mrl_fiemap_extents(struct fiemap *map) {
    return map->fm_extents;
}

#endif
