// Does fanotify's pre-content permission event (FAN_PRE_ACCESS, Linux 6.14+) fire before a
// layout change made through the very fd a write lease is held on? Issue 9, defect 3 (c).
//
// usage: fanotify-pre-content FILE...   (as root: FAN_CLASS_PRE_CONTENT needs CAP_SYS_ADMIN)
// For each FILE: fanotify_init + fanotify_mark (errno printed on failure), then a child opens
// FILE O_RDWR, takes F_SETLEASE F_WRLCK and, through that fd, runs ftruncate (grow),
// fallocate PUNCH_HOLE, fallocate ZERO_RANGE, write(2) and ftruncate (shrink). The listener
// holds each permission event HOLD_MS before FAN_ALLOW: an operation that took >= HOLD_MS was
// stopped by the event before it changed anything. One line per operation and per event.
// The listener's event fd is an open of the file: it breaks the child's write lease, and the
// child (like mrleased) answers the break by unlocking.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef FAN_PRE_ACCESS
#define FAN_PRE_ACCESS 0x00100000
#endif
#ifndef FAN_EVENT_INFO_TYPE_RANGE
#define FAN_EVENT_INFO_TYPE_RANGE 6
#endif
#define HOLD_MS 200

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int leased_fd = -1;

// What mrleased does on a break: give the lease up (here without MRs to revoke first).
static void on_break(int sig) {
    (void)sig;
    fcntl(leased_fd, F_SETLEASE, F_UNLCK);
    static const char line[] = "  child: lease break (SIGIO) -> F_UNLCK\n";
    write(1, line, sizeof line - 1);
}

static void child(const char *path) {
    signal(SIGIO, on_break);
    int fd = open(path, O_RDWR);
    leased_fd = fd;
    if (fd < 0) { printf("  child: open: %s\n", strerror(errno)); fflush(stdout); _exit(1); }
    if (fcntl(fd, F_SETLEASE, F_WRLCK) != 0) printf("  child: F_SETLEASE F_WRLCK: %s\n", strerror(errno));
    fflush(stdout);
    char page[4096];
    memset(page, 0x5a, sizeof page);
    struct { const char *name; int kind; } ops[] = {
        {"ftruncate(grow to 128 KiB)", 0}, {"fallocate(PUNCH_HOLE|KEEP_SIZE, 0, 4096)", 1},
        {"fallocate(ZERO_RANGE, 4096, 4096)", 2}, {"pwrite(8192, 4096)", 3}, {"ftruncate(shrink to 16 KiB)", 4},
    };
    for (unsigned i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        double t0 = now_ms();
        int rc = 0;
        switch (ops[i].kind) {
        case 0: rc = ftruncate(fd, 131072); break;
        case 1: rc = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096); break;
        case 2: rc = fallocate(fd, FALLOC_FL_ZERO_RANGE, 4096, 4096); break;
        case 3: rc = pwrite(fd, page, sizeof page, 8192) == sizeof page ? 0 : -1; break;
        case 4: rc = ftruncate(fd, 16384); break;
        }
        double took = now_ms() - t0;
        printf("  op %-42s rc=%d%s%s took %.1f ms -> %s\n", ops[i].name, rc, rc ? " " : "", rc ? strerror(errno) : "",
               took, took >= HOLD_MS ? "HELD by the event" : "not held");
        fflush(stdout);
    }
    printf("  lease still held: %s\n", fcntl(fd, F_GETLEASE) == F_WRLCK ? "yes" : "no");
    fflush(stdout);
    _exit(0);
}

static void probe(const char *path) {
    printf("file %s\n", path);
    int fan = fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDWR | O_LARGEFILE);
    if (fan < 0) { printf("  fanotify_init(FAN_CLASS_PRE_CONTENT): %s (errno %d)\n", strerror(errno), errno); return; }
    if (fanotify_mark(fan, FAN_MARK_ADD, FAN_PRE_ACCESS, AT_FDCWD, path) != 0) {
        printf("  fanotify_mark(FAN_PRE_ACCESS): %s (errno %d)\n", strerror(errno), errno);
        close(fan);
        return;
    }
    printf("  fanotify_init + fanotify_mark(FAN_PRE_ACCESS): ok\n");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) child(path);
    int status = 0;
    for (;;) {
        struct pollfd p = {.fd = fan, .events = POLLIN};
        poll(&p, 1, 100);
        char buffer[8192];
        ssize_t n = read(fan, buffer, sizeof buffer);
        for (struct fanotify_event_metadata *m = (void *)buffer; n > 0 && FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
            unsigned long long offset = 0, count = 0;
            for (char *info = (char *)m + m->metadata_len; info < (char *)m + m->event_len;) {
                struct fanotify_event_info_header *h = (void *)info;
                if (h->info_type == FAN_EVENT_INFO_TYPE_RANGE) {
                    uint64_t *range = (uint64_t *)(info + sizeof *h + 4);  // header, pad, offset, count
                    offset = range[0];
                    count = range[1];
                }
                if (h->len == 0) break;
                info += h->len;
            }
            printf("  event mask=0x%llx pid=%d range=[%llu, +%llu)\n", (unsigned long long)m->mask, m->pid, offset, count);
            fflush(stdout);
            usleep(HOLD_MS * 1000);
            struct fanotify_response r = {.fd = m->fd, .response = FAN_ALLOW};
            if (write(fan, &r, sizeof r) != sizeof r) printf("  response: %s\n", strerror(errno));
            if (m->fd >= 0) close(m->fd);
        }
        if (waitpid(pid, &status, WNOHANG) == pid) break;
    }
    close(fan);
}

#ifndef FAN_REPORT_FID
#define FAN_REPORT_FID 0x00000200
#endif

// Without an event fd (FAN_REPORT_FID) the listener would open nothing, so it could not break
// its own lease: does the kernel take pre-content events in that mode?
static void probe_fid_mode(void) {
    int fan = fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_REPORT_FID | FAN_CLOEXEC, O_RDONLY);
    if (fan < 0) printf("fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_REPORT_FID): %s (errno %d)\n", strerror(errno), errno);
    else { printf("fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_REPORT_FID): ok\n"); close(fan); }
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s FILE...\n", argv[0]); return 2; }
    probe_fid_mode();
    for (int i = 1; i < argc; i++) probe(argv[i]);
    return 0;
}
