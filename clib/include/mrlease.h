/* SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * mrlease.h: the C client library of mrleased (libmrlease), protocol version 1.
 *
 * One mrlease_conn is one connection to the daemon's SOCK_SEQPACKET socket. Requests are
 * synchronous: each call sends one request and reads until its reply; events that arrive
 * meanwhile are queued, and mrlease_next_event() returns them in order. mrlease_event_fd()
 * is readable whenever an event is queued or a packet waits on the socket, so it can sit in
 * the application's own poll/epoll loop.
 *
 * Every call returns an mrlease_status: MRLEASE_OK (0), one of the daemon's error codes
 * (docs/protocol.md §6), or a local one. The connection keeps a message for the last failure
 * (mrlease_message). No call aborts, prints or keeps global state. A connection may be used by
 * one thread at a time; different connections are independent.
 *
 * Link with `pkg-config --cflags --libs mrlease`. The manual is libmrlease(3).
 *
 * Compatibility (docs/c-client.md, "Compatibility promise"): the soname stays libmrlease.so.1
 * and every symbol is versioned (MRLEASE_1.0; calls added later at the node of the release that
 * adds them, MRLEASE_1.3 …). The structs that grow (mrlease_hello, mrlease_stats, mrlease_event,
 * 1.3.0's mrlease_register_options and mrlease_registration_info, 1.5.0's mrlease_hello_options)
 * only grow at their end, and the calls that take them are inline wrappers here that pass sizeof
 * the caller's struct to the library (mrlease_stats → mrlease_stats_sized): a program built
 * against an older header gets the fields it knows, one built against a newer header gets zeros
 * in the fields this library does not know yet. Every other struct is frozen as it is.
 */
#ifndef MRLEASE_H
#define MRLEASE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(MRLEASE_NO_VISIBILITY)
#define MRLEASE_API __attribute__((visibility("default")))
#else
#define MRLEASE_API
#endif

#define MRLEASE_PROTOCOL_VERSION 1
#define MRLEASE_DEFAULT_SOCKET "/run/mrleased/mrleased.sock"
#define MRLEASE_MAX_MESSAGE_BYTES 65536
#define MRLEASE_MAX_ACK_REGIONS 2048   /* regions one mrlease_ack_regions() message may name */

/* The library itself is built with MRLEASE_BUILDING_LIBRARY: it defines the unsized calls as
 * functions, for programs built against the header of libmrlease 1.0.0 (before the sized calls). */
#ifdef MRLEASE_BUILDING_LIBRARY
#define MRLEASE_SIZED_WRAPPER(declaration, body) MRLEASE_API declaration;
#else
#define MRLEASE_SIZED_WRAPPER(declaration, body) static inline declaration body
#endif

/* What a call did. The daemon's codes first (their wire names: mrlease_status_name), then
 * failures on this side. */
typedef enum mrlease_status {
    MRLEASE_OK = 0,
    /* The daemon refused the request (docs/protocol.md §6). */
    MRLEASE_FILE_BUSY = 1,                /* file-busy */
    MRLEASE_ACCESS_DENIED,                /* access-denied */
    MRLEASE_NOT_REGULAR_FILE,             /* not-regular-file */
    MRLEASE_RANGE_OUT_OF_FILE,            /* range-out-of-file */
    MRLEASE_BAD_ALIGNMENT,                /* bad-alignment */
    MRLEASE_UNSUPPORTED_FILESYSTEM,       /* unsupported-filesystem */
    MRLEASE_STRATEGY_UNAVAILABLE,         /* strategy-unavailable */
    MRLEASE_QUOTA_EXCEEDED,               /* quota-exceeded */
    MRLEASE_BAD_REQUEST,                  /* bad-request */
    MRLEASE_UNKNOWN_REGION,               /* unknown-region */
    MRLEASE_MESSAGE_TOO_LARGE,            /* message-too-large */
    MRLEASE_TOO_MANY_FDS,                 /* too-many-fds */
    MRLEASE_FD_NOT_RECEIVED,              /* fd-not-received (after the library's retries) */
    MRLEASE_MISSING_FD,                   /* missing-fd */
    MRLEASE_UNSUPPORTED_VERSION,          /* unsupported-version */
    MRLEASE_TOO_MANY_REQUESTS,            /* too-many-requests */
    MRLEASE_SHUTTING_DOWN,                /* shutting-down */
    MRLEASE_UNKNOWN_GRANT,                /* unknown-grant */
    MRLEASE_REMOTE_ACCESS_UNAVAILABLE,    /* remote-access-unavailable */
    MRLEASE_INTERNAL,                     /* internal, and any code this library does not know */
    /* Codes added after 1.0.0 come here, each with its own value: a program may meet a value
     * it was built without, and treats it as MRLEASE_INTERNAL (docs/protocol.md §6). */
    MRLEASE_OUT_OF_FDS = 21,              /* out-of-fds (libmrlease 1.1) */
    /* Failures on this side. */
    MRLEASE_ERR_SYSTEM = 100,             /* a system call failed: mrlease_errno() */
    MRLEASE_ERR_DISCONNECTED,             /* the daemon's connection ended (or was never made) */
    MRLEASE_ERR_BAD_REPLY,                /* the daemon sent a packet this library cannot read */
    MRLEASE_ERR_TIMEOUT,                  /* no reply within the reply timeout */
    MRLEASE_ERR_INVALID_ARGUMENT,         /* the call's arguments are wrong; nothing was sent */
    MRLEASE_ERR_NO_MEMORY,                /* malloc failed */
    MRLEASE_ERR_NO_EVENT                  /* mrlease_next_event: none within the timeout */
} mrlease_status;

/* Remote access rights of a region or grant: a bit set. */
enum {
    MRLEASE_ACCESS_READ = 1,
    MRLEASE_ACCESS_WRITE = 2,
    MRLEASE_ACCESS_ATOMIC = 4
};

typedef enum mrlease_strategy {
    MRLEASE_STRATEGY_ANY = 0,             /* requests only: the daemon chooses */
    MRLEASE_STRATEGY_ODP = 1,
    MRLEASE_STRATEGY_PINNED = 2
} mrlease_strategy;

typedef enum mrlease_layout {
    MRLEASE_LAYOUT_UNCHANGED = 0,
    MRLEASE_LAYOUT_CHANGED = 1,
    MRLEASE_LAYOUT_UNKNOWN = 2            /* the daemon could not read the extent map */
} mrlease_layout;

typedef struct mrlease_conn mrlease_conn;

/* ---- Connection ---------------------------------------------------------------------- */

/* A new, unconnected connection object; NULL only when out of memory. */
MRLEASE_API mrlease_conn *mrlease_create(void);
/* Connects to `path`; NULL: $MRLEASED_SOCKET when set and not empty, else
 * MRLEASE_DEFAULT_SOCKET. MRLEASE_ERR_SYSTEM when socket(2) or connect(2) fails. */
MRLEASE_API mrlease_status mrlease_connect(mrlease_conn *conn, const char *path);
/* Closes the connection (the daemon deregisters every region it made) and the fds the
 * library kept, and frees `conn`. NULL is allowed. */
MRLEASE_API void mrlease_destroy(mrlease_conn *conn);

/* How long a request waits for its reply, in ms; negative: forever. Default 60000. */
MRLEASE_API void mrlease_set_reply_timeout(mrlease_conn *conn, int millis);

/* The last failure on this connection, for people: which call, what happened, what to do.
 * Empty after a call that succeeded. Valid until the next call on `conn`. */
MRLEASE_API const char *mrlease_message(const mrlease_conn *conn);
/* The errno of the last failure: of the local system call (MRLEASE_ERR_SYSTEM), or the
 * daemon's `errnoValue` when it sent one; 0 otherwise. */
MRLEASE_API int mrlease_errno(const mrlease_conn *conn);
/* The daemon's symbolic errno of the last refusal ("EAGAIN"), or "" when it sent none. */
MRLEASE_API const char *mrlease_errno_name(const mrlease_conn *conn);
/* The failing range's position in the last mrlease_register_batch refusal, or -1. */
MRLEASE_API long mrlease_error_index(const mrlease_conn *conn);
/* The daemon's error code word of the last refusal as it came ("file-busy"), or "". */
MRLEASE_API const char *mrlease_error_code(const mrlease_conn *conn);

/* The wire name of a daemon code ("file-busy"), or a short name for a local status. */
MRLEASE_API const char *mrlease_status_name(mrlease_status status);

/* ---- hello ----------------------------------------------------------------------------- */

struct mrlease_device {
    char *name;                           /* "rxe0" */
    int odp_supported;
    unsigned odp_rc;                      /* MRLEASE_ODP_* bits */
    char *odp_integrity;                  /* "intact", "corrupts-unaligned", "not-applicable", "failed"; NULL when absent */
    uint32_t transfer_alignment;          /* 0 when absent */
    char *odp_integrity_detail;           /* NULL when absent */
};
enum {
    MRLEASE_ODP_SEND = 1, MRLEASE_ODP_RECV = 2, MRLEASE_ODP_WRITE = 4,
    MRLEASE_ODP_READ = 8, MRLEASE_ODP_ATOMIC = 16, MRLEASE_ODP_SRQ_RECV = 32
};

struct mrlease_hello {
    uint64_t version;                     /* the negotiated protocol version */
    char *daemon;                         /* "mrleased 0.1.0" */
    struct mrlease_device *devices;
    size_t device_count;
    unsigned strategies;                  /* bits (1 << MRLEASE_STRATEGY_ODP), (1 << MRLEASE_STRATEGY_PINNED) */
    /* limits; 0 when the daemon did not send one */
    uint64_t max_message_bytes, max_regions_per_uid, max_bytes_per_uid, quiesce_millis,
             max_batch_ranges, max_connections, max_connections_per_uid, max_queued_bytes;
    char **endpoints;                     /* "192.0.2.1:7471"; none when the daemon does not listen */
    size_t endpoint_count;
    char *layout_protection;              /* "inotify-detect" or "none" ("none" when absent) */
    /* 1.2.0 */
    char *layout_policy;                  /* what an ODP region gets: "follow" or "revoke"; NULL when absent */
    /* 1.5.0 */
    int revoking_per_file;                /* this connection now gets MRLEASE_EVENT_REVOKING_FILE (it asked, with
                                             mrlease_hello_with, and the daemon has them); 0: REVOKING per region */
    /* New fields go here, at the end (mrlease_hello_sized). */
};

/* Negotiates version 1 and learns what the daemon offers. `client_name` may be NULL.
 * Release the result with mrlease_hello_release. The _sized calls take sizeof the caller's
 * struct (the wrappers pass it); call them directly only from a binding that allocates its own. */
MRLEASE_API mrlease_status mrlease_hello_sized(mrlease_conn *conn, const char *client_name, struct mrlease_hello *out,
                                               size_t out_size);
MRLEASE_API void mrlease_hello_release_sized(struct mrlease_hello *hello, size_t hello_size);
MRLEASE_SIZED_WRAPPER(mrlease_status mrlease_hello(mrlease_conn *conn, const char *client_name, struct mrlease_hello *out),
                      { return mrlease_hello_sized(conn, client_name, out, sizeof *out); })
MRLEASE_SIZED_WRAPPER(void mrlease_hello_release(struct mrlease_hello *hello),
                      { mrlease_hello_release_sized(hello, sizeof *hello); })

/* 1.5.0: what mrlease_hello_with asks besides the version. Grows at its end: pass sizeof. */
struct mrlease_hello_options {
    int revoking_per_file;                /* one MRLEASE_EVENT_REVOKING_FILE per file and revocation instead of one
                                             REVOKING per region, answered by mrlease_ack_file (docs/protocol.md §5) */
};

/* 1.5.0: mrlease_hello with `options` (NULL: none, as mrlease_hello). The reply's
 * revoking_per_file says whether the daemon agreed: a daemon before revoking-file does not,
 * and its revocations still come as REVOKING per region. Release the result with
 * mrlease_hello_release. The _sized call takes the caller's sizeof of each struct (the wrapper
 * passes them). */
MRLEASE_API mrlease_status mrlease_hello_with_sized(mrlease_conn *conn, const char *client_name,
                                                    const struct mrlease_hello_options *options, size_t options_size,
                                                    struct mrlease_hello *out, size_t out_size);
static inline mrlease_status mrlease_hello_with(mrlease_conn *conn, const char *client_name,
                                                const struct mrlease_hello_options *options, struct mrlease_hello *out) {
    return mrlease_hello_with_sized(conn, client_name, options, sizeof *options, out, sizeof *out);
}

/* ---- register, register-batch, deregister ---------------------------------------------- */

struct mrlease_range {
    uint64_t offset;                      /* a multiple of the page size */
    uint64_t length;                      /* > 0 */
    unsigned access;                      /* MRLEASE_ACCESS_* bits, at least one */
    mrlease_strategy strategy;
    const char *tag;                      /* NULL: none; at most 256 bytes */
};

typedef enum mrlease_backing {
    MRLEASE_BACKING_UNKNOWN = 0,          /* a word this library does not know */
    MRLEASE_BACKING_FS_DAX,
    MRLEASE_BACKING_PAGE_CACHE,
    MRLEASE_BACKING_SHMEM
} mrlease_backing;

struct mrlease_registration {
    uint64_t region;
    uint32_t lkey, rkey;
    uint64_t address, length;
    mrlease_strategy strategy;            /* ODP or PINNED */
    char *strategy_reason;
    char *device;
    mrlease_backing backing;
};

/* Registers one range of the file behind `fd` (sent with SCM_RIGHTS; its open mode bounds the
 * access: O_RDONLY read only, O_RDWR all). The library keeps a close-on-exec duplicate of
 * `fd` until the region is deregistered or the connection destroyed, to release a lease a
 * dead daemon left (docs/protocol.md §3). fd-not-received is retried after 10, 50 and
 * 250 ms. Release the result with mrlease_registration_release. */
MRLEASE_API mrlease_status mrlease_register(mrlease_conn *conn, int fd, const struct mrlease_range *range,
                                            struct mrlease_registration *out);
/* Up to the daemon's max_batch_ranges ranges of one file in one request: all or none (on a
 * refusal, mrlease_error_index names the failing range). `out` has room for `count`. */
MRLEASE_API mrlease_status mrlease_register_batch(mrlease_conn *conn, int fd, const struct mrlease_range *ranges,
                                                  size_t count, struct mrlease_registration *out);
MRLEASE_API void mrlease_registration_release(struct mrlease_registration *registration);

/* 1.3.0: what an ODP region does when its file's layout changes (docs/protocol.md §5). */
typedef enum mrlease_layout_policy {
    MRLEASE_LAYOUT_POLICY_DEFAULT = 0,    /* asked: the daemon's (mrlease_hello's layout_policy); got: the
                                             reply did not say (a daemon before layout policies: revoke) */
    MRLEASE_LAYOUT_POLICY_FOLLOW,         /* the MR follows the file: keys, generation and peers stay; the
                                             owner hears MRLEASE_EVENT_LAYOUT, or LOST past the file's end */
    MRLEASE_LAYOUT_POLICY_REVOKE          /* the lease protocol: REVOKING, REVOKED, RESTORED with new keys */
} mrlease_layout_policy;

/* 1.3.0: what mrlease_register_with asks besides each range. Grows at its end: pass sizeof. */
struct mrlease_register_options {
    mrlease_layout_policy layout_policy;  /* every range's; a pinned registration always gets REVOKE */
};

/* 1.3.0: what the daemon said of one registration besides struct mrlease_registration. Grows at
 * its end: pass sizeof. Holds no pointer (nothing to release). */
struct mrlease_registration_info {
    mrlease_layout_policy layout_policy;  /* what the region got */
};

/* 1.3.0: mrlease_register (count 1) or mrlease_register_batch (count > 1) with `options` (NULL:
 * none) and, when `info` is not NULL, an info for each registration in `info[count]`. The _sized
 * call takes the caller's sizeof of each struct (the wrapper passes them). */
MRLEASE_API mrlease_status mrlease_register_with_sized(mrlease_conn *conn, int fd, const struct mrlease_range *ranges,
                                                       size_t count, const struct mrlease_register_options *options,
                                                       size_t options_size, struct mrlease_registration *out,
                                                       struct mrlease_registration_info *info, size_t info_size);
static inline mrlease_status mrlease_register_with(mrlease_conn *conn, int fd, const struct mrlease_range *ranges, size_t count,
                                                   const struct mrlease_register_options *options,
                                                   struct mrlease_registration *out, struct mrlease_registration_info *info) {
    return mrlease_register_with_sized(conn, fd, ranges, count, options, sizeof *options, out, info, sizeof *info);
}
/* Deregisters one of this connection's regions, in any state. */
MRLEASE_API mrlease_status mrlease_deregister(mrlease_conn *conn, uint64_t region);

/* ---- list -------------------------------------------------------------------------------- */

struct mrlease_peer {
    uint64_t peer;
    char *address;
    uint64_t generation;
};
struct mrlease_grant_info {
    uint64_t grant;
    unsigned access;
    uint64_t max_peers;
    int has_expiry;
    uint64_t expires_in_millis;
    struct mrlease_peer *peers;
    size_t peer_count;
};
struct mrlease_region {
    uint64_t region;
    char *file;                           /* "major:minor:inode" */
    uint64_t offset, length;
    unsigned access;
    mrlease_strategy strategy;
    char *state;                          /* "registered", "revoking", "revoked", "lost" */
    int has_keys;                         /* the MR exists: lkey, rkey, address are set */
    uint32_t lkey, rkey;
    uint64_t address;
    char *tag;                            /* NULL when none */
    int64_t pid;                          /* the owner's pid with `all`, else -1 */
    uint64_t generation;                  /* 0 when absent */
    struct mrlease_grant_info *grants;
    size_t grant_count;
};
struct mrlease_region_list {
    struct mrlease_region *regions;
    size_t count;
};
/* This connection's regions, every page; `all`: those of every connection of this uid (of
 * every uid for root). Release with mrlease_region_list_release. */
MRLEASE_API mrlease_status mrlease_list(mrlease_conn *conn, int all, struct mrlease_region_list *out);
MRLEASE_API void mrlease_region_list_release(struct mrlease_region_list *list);

/* ---- stats ------------------------------------------------------------------------------- */

struct mrlease_latency {
    uint64_t p50, p99, max, count;
};
struct mrlease_request_latency {
    char *type;                           /* "register" */
    struct mrlease_latency micros;
};
struct mrlease_stats {
    uint64_t files, regions, bytes_odp, bytes_pinned, leases_held, breaks_handled, clients;
    uint64_t layout_changes_handled, layout_checks;  /* 0 when absent */
    struct mrlease_latency break_to_unlock_micros;
    struct mrlease_request_latency *requests;        /* requestMicros, in the daemon's order */
    size_t request_count;
    /* Since 1.0's sized calls; 0 when absent (a daemon from before these fields). Since the
     * daemon started: regions registered, restored after a revocation, lost; now: grants in
     * force and peers connected through them. */
    uint64_t registrations, restorations, regions_lost, grants, peers;
    /* Since 1.4.0; 0 when absent (a daemon from before it, or an older library): the `layout`
     * events sent to the owners of follow regions (a range changed; nothing was revoked). */
    uint64_t layout_changes_followed;
    /* New fields go here, at the end, and never into an array element struct above. */
};
MRLEASE_API mrlease_status mrlease_stats_sized(mrlease_conn *conn, struct mrlease_stats *out, size_t out_size);
MRLEASE_API void mrlease_stats_release_sized(struct mrlease_stats *stats, size_t stats_size);
MRLEASE_SIZED_WRAPPER(mrlease_status mrlease_stats(mrlease_conn *conn, struct mrlease_stats *out),
                      { return mrlease_stats_sized(conn, out, sizeof *out); })
MRLEASE_SIZED_WRAPPER(void mrlease_stats_release(struct mrlease_stats *stats),
                      { mrlease_stats_release_sized(stats, sizeof *stats); })

/* ---- ack, verify ------------------------------------------------------------------------- */

/* The client has stopped RDMA to a revoking region; succeeds for a region not revoking. */
MRLEASE_API mrlease_status mrlease_ack(mrlease_conn *conn, uint64_t region);
/* ack for count regions (1 to MRLEASE_MAX_ACK_REGIONS) in one message, all or none: one region
 * that is not this connection's fails the call (UNKNOWN_REGION) and acknowledges none. */
MRLEASE_API mrlease_status mrlease_ack_regions(mrlease_conn *conn, const uint64_t *regions, size_t count);
/* 1.5.0: the answer to MRLEASE_EVENT_REVOKING_FILE, once every region it named is quiet (after
 * its last part, `more` 0): acknowledges every region of this connection on `file` (the event's
 * "major:minor:inode"; another string is INVALID_ARGUMENT, nothing sent) that is revoking,
 * whatever their number (none: it still succeeds). A connection whose hello did not get
 * revoking_per_file is refused (BAD_REQUEST). */
MRLEASE_API mrlease_status mrlease_ack_file(mrlease_conn *conn, const char *file);

struct mrlease_verification {
    mrlease_layout layout;
    int layout_changed;                   /* true unless UNCHANGED */
    uint64_t extents_before, extents_after;
};
MRLEASE_API mrlease_status mrlease_verify(mrlease_conn *conn, uint64_t region, struct mrlease_verification *out);

/* ---- grant, revoke-grant ----------------------------------------------------------------- */

struct mrlease_grant_request {
    unsigned access;                      /* 0: the region's access */
    uint64_t expires_in_millis;           /* 0: no expiry */
    uint64_t max_peers;                   /* 0: the daemon's default (1) */
};
struct mrlease_grant {
    uint64_t grant, region;
    char *descriptor;                     /* the credential: give it only to the peer */
    char *endpoint;
    unsigned access;
    uint64_t max_peers;
    int has_expiry;
    uint64_t expires_in_millis;
    uint64_t alignment;
};
/* `request` may be NULL (all defaults). Release with mrlease_grant_release. */
MRLEASE_API mrlease_status mrlease_grant(mrlease_conn *conn, uint64_t region, const struct mrlease_grant_request *request,
                                         struct mrlease_grant *out);
MRLEASE_API void mrlease_grant_release(struct mrlease_grant *grant);
MRLEASE_API mrlease_status mrlease_revoke_grant(mrlease_conn *conn, uint64_t grant);

/* ---- Events ------------------------------------------------------------------------------ */

typedef enum mrlease_event_type {
    MRLEASE_EVENT_OTHER = 0,              /* a name this library does not know: see `name` */
    MRLEASE_EVENT_REVOKING,
    MRLEASE_EVENT_REVOKED,
    MRLEASE_EVENT_RESTORED,
    MRLEASE_EVENT_LOST,
    MRLEASE_EVENT_UNLINKED,
    MRLEASE_EVENT_PEER_CONNECTED,
    MRLEASE_EVENT_PEER_DISCONNECTED,
    MRLEASE_EVENT_LAYOUT,                 /* 1.2.0; a caller built against an older header gets OTHER */
    MRLEASE_EVENT_REVOKING_FILE           /* 1.5.0, to a connection that asked (mrlease_hello_with); older headers: OTHER */
} mrlease_event_type;

/* 1.5.0: region ids first to last, both included (a revoking-file event's `runs`). Frozen. */
struct mrlease_region_run {
    uint64_t first, last;
};

struct mrlease_event {
    mrlease_event_type type;
    char name[32];                        /* the wire name: "revoking" */
    uint64_t region;
    /* revoking, revoking-file: "lease-break", "layout-changed", "explicit", "shutdown"; lost:
     * "range-truncated", "unlinked", "restore-failed", "revoked"; peer-disconnected: "peer",
     * "revoking", "grant-ended", "region-gone", "shutdown". Empty for other events. */
    char reason[32];
    uint64_t deadline_millis;             /* revoking, revoking-file */
    uint64_t deadline_unix_millis;        /* revoking, revoking-file; 0 when absent */
    uint32_t lkey, rkey;                  /* restored: the new keys */
    uint64_t address;                     /* restored: the new address */
    mrlease_layout layout;                /* restored */
    char *message;                        /* lost: why, or NULL */
    uint64_t grant, peer, generation;     /* peer-connected, peer-disconnected */
    char *peer_address;                   /* peer-connected, or NULL */
    /* 1.2.0 */
    uint64_t size;                        /* layout: the file's size (`layout` holds CHANGED or UNKNOWN) */
    /* 1.5.0: revoking-file, which has no `region`; `reason`, `deadline_millis` and
     * `deadline_unix_millis` are as for revoking, the same for every region named. */
    char file[64];                        /* "major:minor:inode": pass it to mrlease_ack_file */
    struct mrlease_region_run *runs;      /* this connection's regions of the file, as runs of ids, ascending and
                                             not overlapping; owned by the event (mrlease_event_release) */
    size_t run_count;
    uint64_t count;                       /* the regions the runs hold together */
    int more;                             /* another revoking-file continues the list: read it before the ack */
    /* New fields go here, at the end (mrlease_next_event_sized). */
};

/* A descriptor that is readable while an event is queued or a packet waits on the socket:
 * put it in poll/epoll (POLLIN) and call mrlease_next_event(conn, ev, 0) until it returns
 * MRLEASE_ERR_NO_EVENT. Owned by `conn`; -1 before mrlease_connect. */
MRLEASE_API int mrlease_event_fd(const mrlease_conn *conn);
/* The next event: a queued one, else one read within `timeout_millis` (negative: wait; 0:
 * only what has arrived). MRLEASE_ERR_NO_EVENT when none came; MRLEASE_ERR_DISCONNECTED when
 * the connection ended (queued events are returned first). Release with
 * mrlease_event_release. */
MRLEASE_API mrlease_status mrlease_next_event_sized(mrlease_conn *conn, struct mrlease_event *out, size_t out_size,
                                                    int timeout_millis);
MRLEASE_API void mrlease_event_release_sized(struct mrlease_event *event, size_t event_size);
MRLEASE_SIZED_WRAPPER(mrlease_status mrlease_next_event(mrlease_conn *conn, struct mrlease_event *out, int timeout_millis),
                      { return mrlease_next_event_sized(conn, out, sizeof *out, timeout_millis); })
MRLEASE_SIZED_WRAPPER(void mrlease_event_release(struct mrlease_event *event),
                      { mrlease_event_release_sized(event, sizeof *event); })

/* ---- Any request as JSON ------------------------------------------------------------------ */

/* Sends `request_json` (one JSON object; "v" defaults to 1, "id" is set by the library) with
 * `fd_count` fds, and returns the reply's status. `reply_json`, when not NULL, receives the
 * whole reply (free() it), also for a refusal. For requests this header does not wrap yet,
 * and for tests. */
MRLEASE_API mrlease_status mrlease_request_json(mrlease_conn *conn, const char *request_json, const int *fds,
                                                size_t fd_count, char **reply_json);

#ifdef __cplusplus
}
#endif
#endif
