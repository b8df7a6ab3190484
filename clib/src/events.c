/* The event queue (events read while waiting for a reply) and reading events. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* The queue signal (an eventfd in the event fd's epoll set) is readable exactly while the
 * queue holds an event, so a queued event wakes the application's poll like a packet does. */
static void signal_queue(mrlease_conn *conn, int nonempty) {
    uint64_t value = 1;
    /* EAGAIN on write: the counter is already set; on read: it was already clear. Either is
     * the state wanted. */
    if (nonempty) (void)!write(conn->queue_signal, &value, sizeof value);
    else (void)!read(conn->queue_signal, &value, sizeof value);
}

mrlease_status mrl_enqueue(mrlease_conn *conn, json_object *event) {
    if (conn->queue_count == conn->queue_capacity) {
        size_t grown = conn->queue_capacity ? conn->queue_capacity * 2 : 16;
        json_object **bigger = malloc(grown * sizeof *bigger);
        if (!bigger) {
            json_object_put(event);
            return mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "queueing an event: out of memory (the event is lost)");
        }
        for (size_t i = 0; i < conn->queue_count; i++) bigger[i] = conn->queue[(conn->queue_head + i) % conn->queue_capacity];
        free(conn->queue);
        conn->queue = bigger;
        conn->queue_capacity = grown;
        conn->queue_head = 0;
    }
    conn->queue[(conn->queue_head + conn->queue_count++) % conn->queue_capacity] = event;
    if (conn->queue_count == 1) signal_queue(conn, 1);
    return MRLEASE_OK;
}

json_object *mrl_dequeue(mrlease_conn *conn) {
    if (!conn->queue_count) return NULL;
    json_object *event = conn->queue[conn->queue_head];
    conn->queue_head = (conn->queue_head + 1) % conn->queue_capacity;
    if (--conn->queue_count == 0) signal_queue(conn, 0);
    return event;
}

static const char *const names[] = { "", "revoking", "revoked", "restored", "lost", "unlinked", "peer-connected", "peer-disconnected",
                                      "layout", "revoking-file" };

mrlease_status mrl_parse_event(mrlease_conn *conn, json_object *message, struct mrlease_event *out) {
    struct mrl_reader r = { conn, "event", MRLEASE_OK };
    char *name = mrl_string(&r, message, "event", 1);
    if (name) {
        snprintf(out->name, sizeof out->name, "%s", name);
        for (int k = 1; k < (int)(sizeof names / sizeof *names); k++)
            if (!strcmp(name, names[k])) out->type = (mrlease_event_type)k;
    }
    free(name);
    if (out->type != MRLEASE_EVENT_REVOKING_FILE) out->region = mrl_u64(&r, message, "region");  /* it names a file */
    char *reason = NULL;
    int present;
    switch (out->type) {
    case MRLEASE_EVENT_REVOKING: case MRLEASE_EVENT_REVOKING_FILE:
        reason = mrl_string(&r, message, "reason", 1);
        out->deadline_millis = mrl_u64(&r, message, "deadlineMillis");
        out->deadline_unix_millis = mrl_u64_optional(&r, message, "deadlineUnixMillis", &present);
        if (out->type == MRLEASE_EVENT_REVOKING_FILE) mrl_read_revoking_file(&r, message, out);
        break;
    case MRLEASE_EVENT_RESTORED:
        out->lkey = mrl_u32(&r, message, "lkey");
        out->rkey = mrl_u32(&r, message, "rkey");
        out->address = mrl_u64(&r, message, "address");
        out->layout = mrl_layout(&r, message);
        break;
    case MRLEASE_EVENT_LOST:
        reason = mrl_string(&r, message, "reason", 1);
        out->message = mrl_string(&r, message, "message", 0);
        break;
    case MRLEASE_EVENT_PEER_CONNECTED:
        out->grant = mrl_u64(&r, message, "grant");
        out->peer = mrl_u64(&r, message, "peer");
        out->peer_address = mrl_string(&r, message, "address", 1);
        out->generation = mrl_u64(&r, message, "generation");
        break;
    case MRLEASE_EVENT_PEER_DISCONNECTED:
        out->grant = mrl_u64(&r, message, "grant");
        out->peer = mrl_u64(&r, message, "peer");
        reason = mrl_string(&r, message, "reason", 1);
        break;
    case MRLEASE_EVENT_LAYOUT:
        out->layout = mrl_layout(&r, message);
        out->size = mrl_u64(&r, message, "size");
        break;
    case MRLEASE_EVENT_REVOKED: case MRLEASE_EVENT_UNLINKED: case MRLEASE_EVENT_OTHER:
        break;
    }
    if (reason) snprintf(out->reason, sizeof out->reason, "%s", reason);
    free(reason);
    if (r.status) mrl_event_release(out);
    return r.status;
}

void mrl_event_release(struct mrlease_event *event) {
    if (!event) return;
    free(event->message);
    free(event->peer_address);
    free(event->runs);
    memset(event, 0, sizeof *event);
}
