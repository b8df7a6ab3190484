/* The fds kept for regions, and what the library does with them when the daemon's connection
 * ends: releases the leases a dead daemon left (docs/protocol.md §3). A lease belongs to the
 * open file description the daemon took it on, the client's; after `kill -9` of the daemon it
 * stays, and the next truncate or conflicting open waits out lease-break-time (45 s). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

mrlease_status mrl_hold(mrlease_conn *conn, uint64_t region, int fd) {
    if (conn->held_count == conn->held_capacity) {
        size_t grown = conn->held_capacity ? conn->held_capacity * 2 : 16;
        struct mrl_held *bigger = realloc(conn->held, grown * sizeof *bigger);
        if (!bigger) return mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "keeping the fd of region %llu: out of memory", (unsigned long long)region);
        conn->held = bigger;
        conn->held_capacity = grown;
    }
    conn->held[conn->held_count++] = (struct mrl_held){ region, fd };
    return MRLEASE_OK;
}

static int fd_shared(const mrlease_conn *conn, int fd) {
    for (size_t i = 0; i < conn->held_count; i++)
        if (conn->held[i].fd == fd) return 1;
    return 0;
}

void mrl_release_held(mrlease_conn *conn, uint64_t region) {
    for (size_t i = 0; i < conn->held_count; i++) {
        if (conn->held[i].region != region) continue;
        int fd = conn->held[i].fd;
        conn->held[i] = conn->held[--conn->held_count];
        if (!fd_shared(conn, fd)) close(fd);  /* ours alone; close(2) frees it whatever it reports */
        return;
    }
}

void mrl_close_held(mrlease_conn *conn) {
    while (conn->held_count) mrl_release_held(conn, conn->held[0].region);
}

/* 1 when `pid` has exited (zombie, dead, exiting, or gone), 0 when it runs, -1 unknown. */
static int has_exited(long pid) {
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *file = fopen(path, "re");
    if (!file) {
        /* Gone, or hidden (/proc mounted hidepid=2): only ESRCH says gone. */
        if (kill((pid_t)pid, 0) == 0 || errno == EPERM) return 0;
        return errno == ESRCH ? 1 : -1;
    }
    size_t n = fread(text, 1, sizeof text - 1, file);
    fclose(file);
    text[n] = 0;
    char *close_paren = strrchr(text, ')'), state;
    unsigned long flags = 0;
    /* After "(comm) ": state, ppid, pgrp, session, tty_nr, tpgid, flags. */
    if (!close_paren || sscanf(close_paren + 1, " %c %*d %*d %*d %*d %*d %lu", &state, &flags) != 2) return -1;
    /* A killed process closes its sockets before it becomes a zombie: PF_EXITING (0x4). */
    return state == 'Z' || state == 'X' || (flags & 0x4) ? 1 : 0;
}

void mrl_release_orphaned_lease(int fd, char *text, size_t size) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *file = fopen(path, "re");
    if (!file) {
        snprintf(text, size, "could not read %s (%s): a truncate of its file may wait lease-break-time", path, strerror(errno));
        return;
    }
    long pid = -1;
    while (fgets(line, sizeof line, file)) {
        /* "lock:\t1: LEASE  ACTIVE    WRITE 1234 …" (or BREAKING, READ). */
        char kind[16];
        long holder;
        if (sscanf(line, "lock: %*d: %15s %*s %*s %ld", kind, &holder) == 2 && !strcmp(kind, "LEASE")) pid = holder;
    }
    fclose(file);
    if (pid < 0) {
        snprintf(text, size, "no lease left on fd %d", fd);
        return;
    }
    if (pid == 0) {
        snprintf(text, size, "left the lease on fd %d: its holder is outside this pid namespace, so whether it runs is unknown; "
                 "a truncate of the file may wait lease-break-time", fd);
        return;
    }
    int exited = has_exited(pid);
    if (exited == 0) {
        snprintf(text, size, "left the lease on fd %d to pid %ld, which still runs", fd, pid);
    } else if (exited < 0) {
        snprintf(text, size, "could not tell whether pid %ld (the lease holder of fd %d) runs; left its lease", pid, fd);
    } else if (fcntl(fd, F_SETLEASE, F_UNLCK) == 0 || errno == EAGAIN) {
        /* EAGAIN: no lease any more on this description (released meanwhile). */
        snprintf(text, size, "released the lease mrleased (pid %ld, exited) left on fd %d", pid, fd);
    } else {
        snprintf(text, size, "could not release the lease on fd %d: fcntl(F_SETLEASE, F_UNLCK): %s%s; a truncate of the file may wait "
                 "lease-break-time", fd, strerror(errno),
                 errno == EACCES ? " — only the file's owner or a CAP_LEASE holder may release it" : "");
    }
}

mrlease_status mrl_connection_ended(mrlease_conn *conn, const char *op) {
    if (!conn->ended) {
        conn->ended = 1;
        size_t used = (size_t)snprintf(conn->end_message, sizeof conn->end_message, "%s",
                                       conn->shutdown_announced
                                           ? "mrleased closed the connection: it is shutting down; its regions are gone"
                                           : "mrleased closed the connection without a shutdown notice (it died, or dropped this "
                                             "client); its regions are gone");
        for (size_t i = 0; i < conn->held_count && used < sizeof conn->end_message; i++) {
            int seen = 0;
            for (size_t k = 0; k < i; k++) seen |= conn->held[k].fd == conn->held[i].fd;
            if (seen) continue;
            char what[512];
            mrl_release_orphaned_lease(conn->held[i].fd, what, sizeof what);
            if (strncmp(what, "no lease", 8))
                used += (size_t)snprintf(conn->end_message + used, sizeof conn->end_message - used, "; %s", what);
        }
    }
    return mrl_fail(conn, MRLEASE_ERR_DISCONNECTED, "%s: %s", op, conn->end_message);
}
