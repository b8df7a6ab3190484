/* truncate-demo: register a range of a file with mrleased, watch a truncate revoke and restore
 * it (or, for an ODP region under the layout policy follow, leave it alone: no lease, no event,
 * keys unchanged), then deregister. Written from mrlease.h and libmrlease(3) alone.
 *
 * usage: truncate-demo FILE [SOCKET]
 *   FILE must be at least 2 MiB, on ext4, xfs or tmpfs, and owned by you.
 * build: cc -Wall -Wextra truncate-demo.c $(pkg-config --cflags --libs mrlease) -o truncate-demo
 * exit: 0 the region came back after the truncate, or followed the file through it; 1 an mrleased
 *       call failed; 2 usage */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mrlease.h>

static int fail(mrlease_conn *conn, const char *what, mrlease_status status) {
    fprintf(stderr, "truncate-demo: %s: %s (%s)\n", what, mrlease_message(conn), mrlease_status_name(status));
    mrlease_destroy(conn);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: truncate-demo FILE [SOCKET]\n");
        return 2;
    }
    const char *path = argv[1];
    /* Keep this fd for the file's I/O: opening the path again would break the daemon's lease. */
    int fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size < (2 << 20)) {
        fprintf(stderr, "truncate-demo: %s: cannot open it, or it is smaller than 2 MiB\n", path);
        return 2;
    }

    mrlease_conn *conn = mrlease_create();
    if (!conn) return 1;
    mrlease_status s = mrlease_connect(conn, argc == 3 ? argv[2] : NULL);  /* NULL: $MRLEASED_SOCKET or the default */
    if (s != MRLEASE_OK) return fail(conn, "connect", s);
    struct mrlease_hello hello;
    if ((s = mrlease_hello(conn, "truncate-demo", &hello)) != MRLEASE_OK) return fail(conn, "hello", s);
    /* What an ODP region gets (this library's register does not ask); a pinned one always revokes. */
    int daemon_follows = hello.layout_policy && strcmp(hello.layout_policy, "follow") == 0;
    mrlease_hello_release(&hello);

    struct mrlease_range range = { .offset = 0, .length = 1 << 20,
                                   .access = MRLEASE_ACCESS_READ | MRLEASE_ACCESS_WRITE,
                                   .strategy = MRLEASE_STRATEGY_ANY, .tag = "demo" };
    struct mrlease_registration reg;
    if ((s = mrlease_register(conn, fd, &range, &reg)) != MRLEASE_OK) return fail(conn, "register", s);
    printf("registered region %llu: rkey 0x%x, address 0x%llx, %s on %s\n", (unsigned long long)reg.region, reg.rkey,
           (unsigned long long)reg.address, reg.strategy == MRLEASE_STRATEGY_ODP ? "odp" : "pinned", reg.device);
    int follows = daemon_follows && reg.strategy == MRLEASE_STRATEGY_ODP;
    printf("layout policy %s\n", follows ? "follow" : "revoke");
    fflush(stdout);

    /* Another process grows the file by a page: the lease breaks (revoke); the range stays inside. */
    pid_t child = fork();
    if (child == 0) _exit(truncate(path, st.st_size + 4096) == 0 ? 0 : 1);

    struct pollfd pfd = { .fd = mrlease_event_fd(conn), .events = POLLIN };
    int restored = 0;
    while (!restored) {
        /* follow: no lease to break, the range did not move: no event should come within 1 s. */
        if (poll(&pfd, 1, follows ? 1000 : 10000) != 1) {
            if (follows) {
                printf("no event: the region followed the file, rkey 0x%x unchanged\n", reg.rkey);
                restored = 1;
            } else {
                fprintf(stderr, "truncate-demo: no event within 10 s\n");
            }
            break;
        }
        struct mrlease_event ev;
        while (!restored && (s = mrlease_next_event(conn, &ev, 0)) == MRLEASE_OK) {
            printf("event %s region %llu", ev.name, (unsigned long long)ev.region);
            if (ev.type == MRLEASE_EVENT_REVOKING) {
                printf(" reason %s, deadline %llu ms\n", ev.reason, (unsigned long long)ev.deadline_millis);
                /* ... stop RDMA to the region and let outstanding work complete, then: */
                if ((s = mrlease_ack(conn, ev.region)) != MRLEASE_OK) return fail(conn, "ack", s);
            } else if (ev.type == MRLEASE_EVENT_RESTORED) {
                printf(": new rkey 0x%x, address 0x%llx, layout %s\n", ev.rkey, (unsigned long long)ev.address,
                       ev.layout == MRLEASE_LAYOUT_UNCHANGED ? "unchanged" : "changed or unknown");
                restored = 1;
            } else if (ev.type == MRLEASE_EVENT_LAYOUT) {
                printf(": the range moved in the file (now %llu bytes); keys unchanged\n", (unsigned long long)ev.size);
            } else if (ev.type == MRLEASE_EVENT_LOST) {
                printf(": lost (%s)\n", ev.reason);
                mrlease_event_release(&ev);
                return fail(conn, "the region was lost", MRLEASE_OK);
            } else {
                putchar('\n');
            }
            fflush(stdout);
            mrlease_event_release(&ev);
        }
        if (s != MRLEASE_OK && s != MRLEASE_ERR_NO_EVENT) return fail(conn, "next event", s);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (!restored) return fail(conn, "waiting for restored", MRLEASE_ERR_NO_EVENT);

    if ((s = mrlease_deregister(conn, reg.region)) != MRLEASE_OK) return fail(conn, "deregister", s);
    printf("deregistered region %llu; the truncate %s\n", (unsigned long long)reg.region,
           WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "went through" : "failed");
    mrlease_registration_release(&reg);
    mrlease_destroy(conn);
    close(fd);
    return 0;
}
