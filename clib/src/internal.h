/* libmrlease internals: the connection object and the helpers the request files share. */
#ifndef MRLEASE_INTERNAL_H
#define MRLEASE_INTERNAL_H

#include <json-c/json.h>
#include <stdarg.h>

#define MRLEASE_BUILDING_LIBRARY
#include "mrlease.h"

/* The fd the library keeps for a region: a close-on-exec duplicate of the fd the region was
 * registered with (a batch's regions share one), to release a lease a dead daemon left. */
struct mrl_held {
    uint64_t region;
    int fd;
};

struct mrlease_conn {
    int sock;                   /* the SEQPACKET connection, -1 before connect */
    int event_fd;               /* epoll set: sock and queue_signal, for the application's loop */
    int queue_signal;           /* eventfd, readable while `queue` is not empty */
    uint64_t next_id;
    int reply_timeout_millis;
    unsigned char *buffer;      /* one packet: MRLEASE_MAX_MESSAGE_BYTES + 1 */
    json_object **queue;        /* events read while waiting for replies, oldest at queue_head */
    size_t queue_head, queue_count, queue_capacity;
    struct mrl_held *held;
    size_t held_count, held_capacity;
    int shutdown_announced;     /* a revoking with reason shutdown came */
    int ended;                  /* the connection ended; `end_message` says how */
    char end_message[2048];
    /* The last failure. */
    char message[2048];
    int error_errno;
    char errno_name[32];
    char error_code[48];
    long error_index;
};

/* Clears the last failure: every public call starts with it. */
void mrl_clear(mrlease_conn *conn);
/* Records a failure and returns `status`. */
mrlease_status mrl_fail(mrlease_conn *conn, mrlease_status status, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
mrlease_status mrl_fail_errno(mrlease_conn *conn, int error, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Sends `request` (taken: always released) with `fds`, and reads until its reply; events that
 * come meanwhile are queued. On success `*result` holds the reply's result (json_object_put
 * it); with `reply` the whole reply, also on a refusal. `op` names the request in messages. */
mrlease_status mrl_call(mrlease_conn *conn, const char *op, json_object *request, const int *fds, size_t fd_count,
                        json_object **result, json_object **reply);
/* mrl_call for a request that sends an fd, retrying fd-not-received after 10, 50, 250 ms. */
mrlease_status mrl_call_with_fd(mrlease_conn *conn, const char *op, json_object *request, int fd, json_object **result);

/* The connection ended: releases the leases a dead daemon left on the held fds (once), and
 * returns MRLEASE_ERR_DISCONNECTED with the story in the message. */
mrlease_status mrl_connection_ended(mrlease_conn *conn, const char *op);

/* Held fds. */
mrlease_status mrl_hold(mrlease_conn *conn, uint64_t region, int fd);
void mrl_release_held(mrlease_conn *conn, uint64_t region);
void mrl_close_held(mrlease_conn *conn);
/* What the library did about the lease on `fd` after the connection ended, appended to `text`. */
void mrl_release_orphaned_lease(int fd, char *text, size_t size);

/* The results that grow (sized.c turns them into the public sized calls): each fills or
 * releases a whole struct of this library's own size. */
mrlease_status mrl_hello(mrlease_conn *conn, const char *client_name, int revoking_per_file, struct mrlease_hello *out);
void mrl_hello_release(struct mrlease_hello *hello);
mrlease_status mrl_stats(mrlease_conn *conn, struct mrlease_stats *out);
void mrl_stats_release(struct mrlease_stats *stats);
mrlease_status mrl_next_event(mrlease_conn *conn, struct mrlease_event *out, int timeout_millis);
void mrl_event_release(struct mrlease_event *event);

/* Events. */
mrlease_status mrl_enqueue(mrlease_conn *conn, json_object *event);
json_object *mrl_dequeue(mrlease_conn *conn);
mrlease_status mrl_parse_event(mrlease_conn *conn, json_object *message, struct mrlease_event *out);

/* Reading replies: the first failure is kept; later getters return zero values. */
struct mrl_reader {
    mrlease_conn *conn;
    const char *op;
    mrlease_status status;
};
json_object *mrl_field(json_object *object, const char *key); /* NULL when absent or null */
int mrl_as_u64(json_object *value, uint64_t *out);             /* 0 when `value` is not an integer 0 to 2^64-1 */
uint64_t mrl_u64(struct mrl_reader *r, json_object *object, const char *key);
uint64_t mrl_u64_optional(struct mrl_reader *r, json_object *object, const char *key, int *present);
uint32_t mrl_u32(struct mrl_reader *r, json_object *object, const char *key);
int mrl_bool(struct mrl_reader *r, json_object *object, const char *key);
int mrl_bool_optional(struct mrl_reader *r, json_object *object, const char *key);  /* 0 when absent */
char *mrl_string(struct mrl_reader *r, json_object *object, const char *key, int required);
json_object *mrl_array(struct mrl_reader *r, json_object *object, const char *key, int required);
json_object *mrl_object(struct mrl_reader *r, json_object *object, const char *key, int required);
unsigned mrl_access(struct mrl_reader *r, json_object *object, const char *key);
mrlease_strategy mrl_strategy(struct mrl_reader *r, json_object *object, const char *key);
mrlease_layout mrl_layout(struct mrl_reader *r, json_object *object);
void *mrl_calloc(struct mrl_reader *r, size_t count, size_t size);
void mrl_bad(struct mrl_reader *r, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* revoking-file's own fields (file_events.c): file, the runs of `regions`, count, more. */
void mrl_read_revoking_file(struct mrl_reader *r, json_object *message, struct mrlease_event *out);

/* Writing requests. */
json_object *mrl_request(const char *type);
void mrl_add_u64(json_object *object, const char *key, uint64_t value);
json_object *mrl_access_array(unsigned access);

#endif
