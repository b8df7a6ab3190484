#ifndef MRLEASED_CLINUX_H
#define MRLEASED_CLINUX_H

/*
 * Linux facilities Swift cannot import directly: ioctl request macros built
 * over structs (FS_IOC_FIEMAP), fcntl commands behind _GNU_SOURCE (F_SETLEASE,
 * F_SETSIG, F_SETOWN_EX), SIGRTMIN (a libc call), statx and its DAX bit.
 * Each wrapper returns what the C call returns; errno is left for Swift.
 *
 * This header does NOT define _GNU_SOURCE: Swift's Glibc module is built without
 * it, and glibc headers seen with and without it give clang two different
 * definitions of the same types (fd_set, struct utsname, enum __rusage_who), which
 * it refuses when a Swift file imports both modules. Everything that needs GNU
 * declarations is defined in CLinux.c, which does define it; here are only plain
 * prototypes, the uapi structs (the linux/ headers), and constants exported as values.
 */
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <linux/fiemap.h>
#include <linux/stat.h>

/* fcntl commands and lease types (fcntl.h under _GNU_SOURCE). */
extern const int MRL_F_SETLEASE;
extern const int MRL_F_GETLEASE;
extern const int MRL_F_SETSIG;
extern const int MRL_F_RDLCK;
extern const int MRL_F_WRLCK;
extern const int MRL_F_UNLCK;
extern const int MRL_F_OWNER_TID;
/* mmap flags newer than some libc headers. */
extern const int MRL_MAP_SHARED_VALIDATE;
extern const int MRL_MAP_SYNC;
/* statx: the DAX attribute bit and the mount-id mask bit (5.8+). */
extern const unsigned long long MRL_STATX_ATTR_DAX;
extern const unsigned int MRL_STATX_MNT_ID;
/* fallocate modes. */
extern const int MRL_FALLOC_FL_PUNCH_HOLE;
extern const int MRL_FALLOC_FL_KEEP_SIZE;
extern const int MRL_FALLOC_FL_ZERO_RANGE;
extern const int MRL_FALLOC_FL_COLLAPSE_RANGE;

int mrl_sigrtmin(void);
pid_t mrl_gettid(void);
int mrl_tgkill(pid_t tgid, pid_t tid, int sig);

int mrl_fcntl_int(int fd, int cmd, int arg);
int mrl_fcntl_noarg(int fd, int cmd);
/* F_SETOWN_EX takes a struct f_owner_ex: direct SIGIO and lease-break signals at one thread. */
int mrl_set_owner_tid(int fd, pid_t tid);
/* F_GETOWN_EX: returns the owner id and stores its F_OWNER_* type, or -1. */
int mrl_get_owner(int fd, int *type);

/* FS_IOC_FIEMAP is _IOWR('f', 11, struct fiemap): a macro over a struct. */
int mrl_ioctl_fiemap(int fd, struct fiemap *map);
/* SIOCOUTQ: on a Unix socket, the bytes sent and not yet read by the peer. */
int mrl_ioctl_outq(int fd, int *bytes);
/* The fiemap header is followed by fm_extent_count extents (a flexible array). */
struct fiemap_extent *mrl_fiemap_extents(struct fiemap *map);

int mrl_statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *out);
/* AT_EMPTY_PATH (fcntl.h under _GNU_SOURCE): statx of the fd itself. */
extern const int MRL_AT_EMPTY_PATH;
/* fstatfs's f_type (the filesystem magic), widened. */
int mrl_fstatfs_type(int fd, uint64_t *type);

int mrl_fallocate(int fd, int mode, off_t offset, off_t len);

/* RLIMIT_MEMLOCK; 1 from mrl_rlim_is_infinity when the value is RLIM_INFINITY. */
int mrl_getrlimit_memlock(struct rlimit *out);
int mrl_getrlimit_nofile(struct rlimit *out);
int mrl_setrlimit_nofile(const struct rlimit *limit);
int mrl_rlim_is_infinity(rlim_t value);

/* MAP_FAILED is a cast macro Swift does not import. */
void *mrl_map_failed(void);

/* Blocks `signals` in the calling thread and fills `mask` with them (for signalfd). */
int mrl_block_signals(const int *signals, int count, sigset_t *mask);
/* 1 when sig is blocked in the calling thread, 0 when not. */
int mrl_signal_is_blocked(int sig);

/*
 * Unix sockets (UnixSocket.swift). SCM_RIGHTS ancillary data is built and parsed with the
 * CMSG_* macros, and struct ucred and MSG_CMSG_CLOEXEC are GNU declarations, so both ends of
 * the fd passing live in CLinux.c.
 */
/* sendmsg with MSG_NOSIGNAL: the bytes and `nfds` descriptors (one SCM_RIGHTS message) in one packet. */
ssize_t mrl_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);
/* recvmsg with MSG_CMSG_CLOEXEC. Up to `max_fds` received descriptors go to `fds` (*nfds counts
 * them); *msg_flags gets the kernel's msg_flags (MRL_MSG_TRUNC, MRL_MSG_CTRUNC). Descriptors
 * beyond max_fds (CMSG_SPACE rounding can admit one more) are closed and reported as MSG_CTRUNC. */
ssize_t mrl_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds, int *msg_flags);
/* SO_PEERCRED (struct ucred is a GNU declaration). */
int mrl_peer_credentials(int sock, pid_t *pid, uid_t *uid, gid_t *gid);
/* accept4 with SOCK_CLOEXEC, plus SOCK_NONBLOCK when nonblocking != 0. */
int mrl_accept(int sock, int nonblocking);
extern const int MRL_MSG_TRUNC;
extern const int MRL_MSG_CTRUNC;

/* O_PATH (fcntl.h under _GNU_SOURCE): an fd that names a file but cannot read, write or map it. */
extern const int MRL_O_PATH;
/* strerrorname_np (a GNU declaration): "ENOENT" for ENOENT; NULL for an unknown number. */
const char *mrl_strerrorname(int errnum);
/* getrandom(2) (<sys/random.h>, which Swift's Glibc module does not include): the kernel's
 * CSPRNG; returns the number of bytes written or -1 with errno set. */
ssize_t mrl_getrandom(void *buffer, size_t length, unsigned int flags);
/* malloc_trim(3) (<malloc.h>, which Swift's Glibc module does not include): returns freed heap
 * memory to the kernel; 1 when some was released. */
int mrl_malloc_trim(size_t pad);

#endif
