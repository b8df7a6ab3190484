/* A program built against libmrlease 1.0.0's header (abi/mrlease-1.0.0.h: shorter structs, no
 * sized calls) linked to this libmrlease.so.1: its calls bind to the unsized names, which fill
 * 1.0.0's layouts. Each result goes into a heap block of exactly the old struct's size, so ASan
 * reports any byte the library writes past it.
 *
 * usage: compat-1.0.0 host|guest SOCKET SCRATCH_DIR (as client-test; only SOCKET is used)
 * Prints one "ok - NAME" or "not ok - NAME: why" per check, then "checks: N passed, M failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../abi/mrlease-1.0.0.h"

static int passed, failed;

static void check(int ok, const char *name, mrlease_conn *c) {
    if (ok) passed++, printf("ok - %s\n", name);
    else failed++, printf("not ok - %s: %s\n", name, c ? mrlease_message(c) : "");
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: compat-1.0.0 host|guest SOCKET SCRATCH_DIR\n");
        return 2;
    }
    mrlease_conn *c = mrlease_create();
    check(c && mrlease_connect(c, argv[2]) == MRLEASE_OK, "connect", c);

    struct mrlease_hello *h = malloc(sizeof *h);
    check(mrlease_hello(c, "compat-1.0.0", h) == MRLEASE_OK && h->version == 1 && h->daemon && strlen(h->daemon) > 0,
          "hello into a 1.0.0 struct mrlease_hello", c);
    mrlease_hello_release(h);
    free(h);

    struct mrlease_stats *st = malloc(sizeof *st);
    check(mrlease_stats(c, st) == MRLEASE_OK && st->clients >= 1 && st->request_count >= 1,
          "stats into a 1.0.0 struct mrlease_stats (without the five counters)", c);
    mrlease_stats_release(st);
    free(st);

    struct mrlease_event *ev = malloc(sizeof *ev);
    check(mrlease_next_event(c, ev, 0) == MRLEASE_ERR_NO_EVENT, "next_event into a 1.0.0 struct mrlease_event: none yet", c);
    mrlease_event_release(ev);
    free(ev);

    mrlease_destroy(c);
    printf("checks: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
