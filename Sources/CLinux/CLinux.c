/* The GNU side of the shim: see CLinux.h for why _GNU_SOURCE stays in this file. */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include "CLinux.h"

#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000
#endif
#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif
#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

const int MRL_F_SETLEASE = F_SETLEASE;
const int MRL_F_GETLEASE = F_GETLEASE;
const int MRL_F_SETSIG = F_SETSIG;
const int MRL_F_RDLCK = F_RDLCK;
const int MRL_F_WRLCK = F_WRLCK;
const int MRL_F_UNLCK = F_UNLCK;
const int MRL_F_OWNER_TID = F_OWNER_TID;
const int MRL_MAP_SHARED_VALIDATE = MAP_SHARED_VALIDATE;
const int MRL_MAP_SYNC = MAP_SYNC;
const unsigned long long MRL_STATX_ATTR_DAX = STATX_ATTR_DAX;
const unsigned int MRL_STATX_MNT_ID = STATX_MNT_ID;
const int MRL_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const int MRL_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int MRL_FALLOC_FL_ZERO_RANGE = FALLOC_FL_ZERO_RANGE;
const int MRL_FALLOC_FL_COLLAPSE_RANGE = FALLOC_FL_COLLAPSE_RANGE;

int mrl_sigrtmin(void) { return SIGRTMIN; }
pid_t mrl_gettid(void) { return (pid_t)syscall(SYS_gettid); }
int mrl_tgkill(pid_t tgid, pid_t tid, int sig) { return (int)syscall(SYS_tgkill, tgid, tid, sig); }

int mrl_fcntl_int(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }
int mrl_fcntl_noarg(int fd, int cmd) { return fcntl(fd, cmd); }

int mrl_set_owner_tid(int fd, pid_t tid) {
    struct f_owner_ex owner = { .type = F_OWNER_TID, .pid = tid };
    return fcntl(fd, F_SETOWN_EX, &owner);
}

int mrl_get_owner(int fd, int *type) {
    struct f_owner_ex owner;
    if (fcntl(fd, F_GETOWN_EX, &owner) < 0) return -1;
    *type = owner.type;
    return owner.pid;
}

int mrl_ioctl_fiemap(int fd, struct fiemap *map) { return ioctl(fd, FS_IOC_FIEMAP, map); }
int mrl_ioctl_outq(int fd, int *bytes) { return ioctl(fd, SIOCOUTQ, bytes); }
struct fiemap_extent *mrl_fiemap_extents(struct fiemap *map) { return map->fm_extents; }

int mrl_statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *out) {
    return statx(dirfd, path, flags, mask, out);
}

const int MRL_AT_EMPTY_PATH = AT_EMPTY_PATH;

int mrl_fstatfs_type(int fd, uint64_t *type) {
    struct statfs buf;
    int rc = fstatfs(fd, &buf);
    if (rc == 0) *type = (uint64_t)(unsigned long)buf.f_type;
    return rc;
}

int mrl_fallocate(int fd, int mode, off_t offset, off_t len) {
    return fallocate(fd, mode, offset, len);
}

int mrl_getrlimit_memlock(struct rlimit *out) { return getrlimit(RLIMIT_MEMLOCK, out); }
int mrl_getrlimit_nofile(struct rlimit *out) { return getrlimit(RLIMIT_NOFILE, out); }
int mrl_setrlimit_nofile(const struct rlimit *limit) { return setrlimit(RLIMIT_NOFILE, limit); }
int mrl_rlim_is_infinity(rlim_t value) { return value == RLIM_INFINITY; }

void *mrl_map_failed(void) { return MAP_FAILED; }

int mrl_block_signals(const int *signals, int count, sigset_t *mask) {
    sigemptyset(mask);
    for (int i = 0; i < count; i++) {
        if (sigaddset(mask, signals[i]) != 0) return -1;
    }
    int rc = pthread_sigmask(SIG_BLOCK, mask, NULL);
    if (rc != 0) { errno = rc; return -1; }
    return 0;
}

int mrl_signal_is_blocked(int sig) {
    sigset_t current;
    pthread_sigmask(SIG_BLOCK, NULL, &current);
    return sigismember(&current, sig);
}

const int MRL_MSG_TRUNC = MSG_TRUNC;
const int MRL_MSG_CTRUNC = MSG_CTRUNC;

ssize_t mrl_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    void *control = NULL;
    if (nfds > 0) {
        size_t payload = (size_t)nfds * sizeof(int);
        control = calloc(1, CMSG_SPACE(payload));
        if (control == NULL) { errno = ENOMEM; return -1; }
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(payload);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(payload);
        memcpy(CMSG_DATA(cmsg), fds, payload);
    }
    ssize_t sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    int saved = errno;
    free(control);
    errno = saved;
    return sent;
}

ssize_t mrl_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds, int *msg_flags) {
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    size_t space = max_fds > 0 ? CMSG_SPACE((size_t)max_fds * sizeof(int)) : 0;
    void *control = NULL;
    if (space > 0) {
        control = calloc(1, space);
        if (control == NULL) { errno = ENOMEM; return -1; }
        msg.msg_control = control;
        msg.msg_controllen = space;
    }
    *nfds = 0;
    ssize_t got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    int saved = errno;
    if (got >= 0) {
        *msg_flags = msg.msg_flags;
        for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
            if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
            size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            const unsigned char *data = CMSG_DATA(cmsg);
            for (size_t i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, data + i * sizeof(int), sizeof(int));
                if (*nfds < max_fds) {
                    fds[(*nfds)++] = fd;
                } else {
                    close(fd);
                    *msg_flags |= MSG_CTRUNC;
                }
            }
        }
    }
    free(control);
    errno = saved;
    return got;
}

int mrl_peer_credentials(int sock, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred cred;
    socklen_t size = sizeof(cred);
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &size) != 0) return -1;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

int mrl_accept(int sock, int nonblocking) {
    return accept4(sock, NULL, NULL, SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0));
}

const char *mrl_strerrorname(int errnum) { return strerrorname_np(errnum); }
const int MRL_O_PATH = O_PATH;
ssize_t mrl_getrandom(void *buffer, size_t length, unsigned int flags) { return getrandom(buffer, length, flags); }

#include <malloc.h>

int mrl_malloc_trim(size_t pad) {
    return malloc_trim(pad);
}
