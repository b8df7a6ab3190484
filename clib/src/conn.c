/* The connection: socket, packets, the request core and the accessors of the last failure. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

MRLEASE_API mrlease_conn *mrlease_create(void) {
    mrlease_conn *conn = calloc(1, sizeof *conn);
    if (!conn) return NULL;
    conn->buffer = malloc(MRLEASE_MAX_MESSAGE_BYTES + 1);
    if (!conn->buffer) {
        free(conn);
        return NULL;
    }
    conn->sock = conn->event_fd = conn->queue_signal = -1;
    conn->next_id = 1;
    conn->reply_timeout_millis = 60000;
    conn->error_index = -1;
    return conn;
}

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);  /* close(2) always frees the fd, also when it reports an error */
    *fd = -1;
}

MRLEASE_API mrlease_status mrlease_connect(mrlease_conn *conn, const char *path) {
    if (!conn) return MRLEASE_ERR_INVALID_ARGUMENT;
    mrl_clear(conn);
    if (conn->sock >= 0) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "mrlease_connect: already connected");
    if (!path) {
        const char *env = getenv("MRLEASED_SOCKET");
        path = env && *env ? env : MRLEASE_DEFAULT_SOCKET;
    }
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof address.sun_path)
        return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "connect %s: the path is longer than %zu bytes", path,
                        sizeof address.sun_path - 1);
    memcpy(address.sun_path, path, strlen(path) + 1);
    conn->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (conn->sock < 0) return mrl_fail_errno(conn, errno, "socket(AF_UNIX, SOCK_SEQPACKET)");
    int rc;
    do rc = connect(conn->sock, (struct sockaddr *)&address, sizeof address);
    while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        int error = errno;
        close_fd(&conn->sock);
        const char *hint = error == ENOENT || error == ECONNREFUSED ? " — is mrleased running? (systemctl start mrleased.socket)"
                         : error == EACCES || error == EPERM ? " — the socket's permissions (mrleased socket-mode) do not let this user connect"
                         : "";
        return mrl_fail_errno(conn, error, "connect %s%s", path, hint);
    }
    conn->queue_signal = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (conn->queue_signal < 0) return mrl_fail_errno(conn, errno, "eventfd (the event fd's queue signal)");
    conn->event_fd = epoll_create1(EPOLL_CLOEXEC);
    if (conn->event_fd < 0) return mrl_fail_errno(conn, errno, "epoll_create1 (the event fd)");
    struct epoll_event in = { .events = EPOLLIN, .data.fd = conn->sock };
    if (epoll_ctl(conn->event_fd, EPOLL_CTL_ADD, conn->sock, &in) < 0)
        return mrl_fail_errno(conn, errno, "epoll_ctl ADD the socket to the event fd");
    in.data.fd = conn->queue_signal;
    if (epoll_ctl(conn->event_fd, EPOLL_CTL_ADD, conn->queue_signal, &in) < 0)
        return mrl_fail_errno(conn, errno, "epoll_ctl ADD the queue signal to the event fd");
    return MRLEASE_OK;
}

MRLEASE_API void mrlease_destroy(mrlease_conn *conn) {
    if (!conn) return;
    close_fd(&conn->sock);
    close_fd(&conn->event_fd);
    close_fd(&conn->queue_signal);
    mrl_close_held(conn);
    free(conn->held);
    for (json_object *event; (event = mrl_dequeue(conn));) json_object_put(event);
    free(conn->queue);
    free(conn->buffer);
    free(conn);
}

MRLEASE_API void mrlease_set_reply_timeout(mrlease_conn *conn, int millis) {
    if (conn) conn->reply_timeout_millis = millis < 0 ? -1 : millis;
}

MRLEASE_API int mrlease_event_fd(const mrlease_conn *conn) { return conn ? conn->event_fd : -1; }
MRLEASE_API const char *mrlease_message(const mrlease_conn *conn) { return conn ? conn->message : "no connection (NULL)"; }
MRLEASE_API int mrlease_errno(const mrlease_conn *conn) { return conn ? conn->error_errno : EINVAL; }
MRLEASE_API const char *mrlease_errno_name(const mrlease_conn *conn) { return conn ? conn->errno_name : ""; }
MRLEASE_API long mrlease_error_index(const mrlease_conn *conn) { return conn ? conn->error_index : -1; }
MRLEASE_API const char *mrlease_error_code(const mrlease_conn *conn) { return conn ? conn->error_code : ""; }

void mrl_clear(mrlease_conn *conn) {
    conn->message[0] = conn->errno_name[0] = conn->error_code[0] = 0;
    conn->error_errno = 0;
    conn->error_index = -1;
}

static mrlease_status vfail(mrlease_conn *conn, mrlease_status status, const char *suffix, const char *format, va_list args) {
    int n = vsnprintf(conn->message, sizeof conn->message, format, args);
    if (suffix && n >= 0 && (size_t)n < sizeof conn->message)
        snprintf(conn->message + n, sizeof conn->message - (size_t)n, "%s", suffix);
    return status;
}

mrlease_status mrl_fail(mrlease_conn *conn, mrlease_status status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vfail(conn, status, NULL, format, args);
    va_end(args);
    return status;
}

mrlease_status mrl_fail_errno(mrlease_conn *conn, int error, const char *format, ...) {
    char suffix[160];
    snprintf(suffix, sizeof suffix, ": %s (%s)", strerrorname_np(error) ? strerrorname_np(error) : "?", strerror(error));
    va_list args;
    va_start(args, format);
    vfail(conn, MRLEASE_ERR_SYSTEM, suffix, format, args);
    va_end(args);
    conn->error_errno = error;
    return MRLEASE_ERR_SYSTEM;
}

/* ---- Packets ---- */

static int64_t now_millis(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Whether the socket is readable before `deadline` (negative: no deadline). */
static mrlease_status wait_readable(mrlease_conn *conn, int64_t deadline, const char *op, int *ready) {
    for (;;) {
        int timeout = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_millis();
            timeout = left <= 0 ? 0 : left > 0x7fffffff ? 0x7fffffff : (int)left;
        }
        struct pollfd pfd = { .fd = conn->sock, .events = POLLIN };
        int n = poll(&pfd, 1, timeout);
        if (n >= 0) {
            *ready = n > 0;
            return MRLEASE_OK;
        }
        if (errno != EINTR) return mrl_fail_errno(conn, errno, "poll (%s)", op);
    }
}

/* One message from the daemon, or *message NULL when none came before `deadline`. */
static mrlease_status receive(mrlease_conn *conn, int64_t deadline, const char *op, json_object **message) {
    *message = NULL;
    int resets = 0;
    for (;;) {
        int ready = 0;
        mrlease_status status = wait_readable(conn, deadline, op, &ready);
        if (status || !ready) return status;
        union { struct cmsghdr align; char bytes[CMSG_SPACE(sizeof(int) * 4)]; } control;
        struct iovec iov = { .iov_base = conn->buffer, .iov_len = MRLEASE_MAX_MESSAGE_BYTES + 1 };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes, .msg_controllen = sizeof control.bytes };
        ssize_t n = recvmsg(conn->sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            /* A peer that closed with our packets unread (the daemon refusing a connection past
             * its limit, §3) leaves ECONNRESET, reported before the packets it sent first; the
             * report clears it, so read on: its packets, then end of stream. */
            if (errno == ECONNRESET && !resets++) continue;
            if (errno == ECONNRESET) return mrl_connection_ended(conn, op);
            return mrl_fail_errno(conn, errno, "recvmsg (%s)", op);
        }
        if (n == 0) return mrl_connection_ended(conn, op);
        /* The daemon never sends fds; close any so none leaks. */
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                    int fd;
                    memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                    close(fd);
                }
        if ((msg.msg_flags & MSG_TRUNC) || n > MRLEASE_MAX_MESSAGE_BYTES)
            return mrl_fail(conn, MRLEASE_ERR_BAD_REPLY, "%s: the daemon sent a packet over %d bytes", op, MRLEASE_MAX_MESSAGE_BYTES);
        json_tokener *tokener = json_tokener_new_ex(33);  /* the protocol's 32 levels, plus one */
        if (!tokener) return mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "%s: json_tokener_new: out of memory", op);
        json_object *parsed = json_tokener_parse_ex(tokener, (const char *)conn->buffer, (int)n);
        enum json_tokener_error error = json_tokener_get_error(tokener);
        size_t used = json_tokener_get_parse_end(tokener);
        json_tokener_free(tokener);
        if (!parsed || error != json_tokener_success || used != (size_t)n) {
            json_object_put(parsed);
            return mrl_fail(conn, MRLEASE_ERR_BAD_REPLY, "%s: the daemon sent %zd bytes that are not one JSON value (%s)", op, n,
                            error == json_tokener_success ? "bytes after the value" : json_tokener_error_desc(error));
        }
        json_object *type = mrl_field(parsed, "type");
        if (!json_object_is_type(parsed, json_type_object) || !json_object_is_type(type, json_type_string)) {
            json_object_put(parsed);
            return mrl_fail(conn, MRLEASE_ERR_BAD_REPLY, "%s: the daemon sent a message that is not an object with a \"type\" string", op);
        }
        if (!strcmp(json_object_get_string(type), "event")) {
            /* Noted at once, for the story of a connection end: the daemon said it is stopping. */
            json_object *name = mrl_field(parsed, "event"), *reason = mrl_field(parsed, "reason");
            if (json_object_is_type(name, json_type_string)
                && (!strcmp(json_object_get_string(name), "revoking") || !strcmp(json_object_get_string(name), "revoking-file"))
                && json_object_is_type(reason, json_type_string) && !strcmp(json_object_get_string(reason), "shutdown"))
                conn->shutdown_announced = 1;
        }
        *message = parsed;
        return MRLEASE_OK;
    }
}

static int is_event(json_object *message) { return !strcmp(json_object_get_string(mrl_field(message, "type")), "event"); }

/* ---- The request core ---- */

static mrlease_status refusal(mrlease_conn *conn, const char *op, json_object *error);

static mrlease_status send_request(mrlease_conn *conn, const char *op, const char *bytes, size_t length, const int *fds, size_t fd_count) {
    union { struct cmsghdr align; char bytes[CMSG_SPACE(sizeof(int) * 8)]; } control;
    if (fd_count > 8) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "send %s: at most 8 fds per request here", op);
    struct iovec iov = { .iov_base = (void *)bytes, .iov_len = length };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (fd_count) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.bytes;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fd_count);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fd_count);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * fd_count);
    }
    ssize_t n;
    do n = sendmsg(conn->sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0) return MRLEASE_OK;
    char what[80];
    snprintf(what, sizeof what, "send %s", op);
    if (errno != EPIPE && errno != ECONNRESET) return mrl_fail_errno(conn, errno, "sendmsg (%s, %zu bytes)", op, length);
    /* The daemon may have refused the connection itself before closing it (a connection
     * limit, §3): that reply, without an id, is waiting; it is the answer. */
    for (json_object *message; receive(conn, 0, what, &message) == MRLEASE_OK && message;) {
        json_object *error = mrl_field(message, "error");
        if (!mrl_field(message, "id") && json_object_is_type(error, json_type_object)) {
            mrlease_status status = refusal(conn, op, error);
            json_object_put(message);
            return status;
        }
        if (is_event(message)) {
            mrlease_status status = mrl_enqueue(conn, message);
            if (status) return status;
        } else {
            json_object_put(message);
        }
    }
    return mrl_connection_ended(conn, what);
}

static const struct { const char *word; mrlease_status status; } codes[] = {
    { "file-busy", MRLEASE_FILE_BUSY }, { "access-denied", MRLEASE_ACCESS_DENIED },
    { "not-regular-file", MRLEASE_NOT_REGULAR_FILE }, { "range-out-of-file", MRLEASE_RANGE_OUT_OF_FILE },
    { "bad-alignment", MRLEASE_BAD_ALIGNMENT }, { "unsupported-filesystem", MRLEASE_UNSUPPORTED_FILESYSTEM },
    { "strategy-unavailable", MRLEASE_STRATEGY_UNAVAILABLE }, { "quota-exceeded", MRLEASE_QUOTA_EXCEEDED },
    { "bad-request", MRLEASE_BAD_REQUEST }, { "unknown-region", MRLEASE_UNKNOWN_REGION },
    { "message-too-large", MRLEASE_MESSAGE_TOO_LARGE }, { "too-many-fds", MRLEASE_TOO_MANY_FDS },
    { "fd-not-received", MRLEASE_FD_NOT_RECEIVED }, { "missing-fd", MRLEASE_MISSING_FD },
    { "unsupported-version", MRLEASE_UNSUPPORTED_VERSION }, { "too-many-requests", MRLEASE_TOO_MANY_REQUESTS },
    { "shutting-down", MRLEASE_SHUTTING_DOWN }, { "unknown-grant", MRLEASE_UNKNOWN_GRANT },
    { "remote-access-unavailable", MRLEASE_REMOTE_ACCESS_UNAVAILABLE }, { "internal", MRLEASE_INTERNAL },
    { "out-of-fds", MRLEASE_OUT_OF_FDS },
    { "system-error", MRLEASE_ERR_SYSTEM }, { "disconnected", MRLEASE_ERR_DISCONNECTED },
    { "bad-reply", MRLEASE_ERR_BAD_REPLY }, { "timeout", MRLEASE_ERR_TIMEOUT },
    { "invalid-argument", MRLEASE_ERR_INVALID_ARGUMENT }, { "no-memory", MRLEASE_ERR_NO_MEMORY },
    { "no-event", MRLEASE_ERR_NO_EVENT },
};

MRLEASE_API const char *mrlease_status_name(mrlease_status status) {
    if (status == MRLEASE_OK) return "ok";
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        if (codes[i].status == status) return codes[i].word;
    return "unknown-status";
}

/* The daemon's refusal: its code (unknown codes are internal, §6), message, errno, index. */
static mrlease_status refusal(mrlease_conn *conn, const char *op, json_object *error) {
    struct mrl_reader r = { conn, op, MRLEASE_OK };
    char *code = mrl_string(&r, error, "code", 1), *message = mrl_string(&r, error, "message", 1);
    char *name = mrl_string(&r, error, "errno", 0);
    int has_value = 0, has_index = 0;
    uint64_t value = mrl_u64_optional(&r, error, "errnoValue", &has_value), index = mrl_u64_optional(&r, error, "index", &has_index);
    mrlease_status status = MRLEASE_INTERNAL;
    if (r.status == MRLEASE_OK) {
        for (size_t i = 0; i < 20; i++)  /* the daemon's 20 codes lead the table */
            if (!strcmp(codes[i].word, code)) status = codes[i].status;
        mrl_fail(conn, status, "mrleased refused %s: %s: %s", op, code, message);
        snprintf(conn->error_code, sizeof conn->error_code, "%s", code);
        if (name) snprintf(conn->errno_name, sizeof conn->errno_name, "%s", name);
        conn->error_errno = has_value && value < 4096 ? (int)value : 0;
        conn->error_index = has_index && index < 1u << 30 ? (long)index : -1;
    } else {
        status = r.status;
    }
    free(code), free(message), free(name);
    return status;
}

mrlease_status mrl_call(mrlease_conn *conn, const char *op, json_object *request, const int *fds, size_t fd_count,
                        json_object **result, json_object **reply) {
    if (result) *result = NULL;
    if (reply) *reply = NULL;
    if (!request) return mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "%s: building the request: out of memory", op);
    if (conn->ended) {
        json_object_put(request);
        return mrl_fail(conn, MRLEASE_ERR_DISCONNECTED, "%s: %s", op, conn->end_message);
    }
    if (conn->sock < 0) {
        json_object_put(request);
        return mrl_fail(conn, MRLEASE_ERR_DISCONNECTED, "%s: not connected (mrlease_connect first)", op);
    }
    uint64_t id = conn->next_id++;
    mrl_add_u64(request, "id", id);
    size_t length;
    const char *bytes = json_object_to_json_string_length(request, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &length);
    mrlease_status status = bytes ? send_request(conn, op, bytes, length, fds, fd_count)
                                  : mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "%s: encoding the request: out of memory", op);
    json_object_put(request);
    if (status) return status;
    char what[80];
    snprintf(what, sizeof what, "%s reply", op);
    int64_t deadline = conn->reply_timeout_millis < 0 ? -1 : now_millis() + conn->reply_timeout_millis;
    for (;;) {
        json_object *message;
        if ((status = receive(conn, deadline, what, &message))) return status;
        if (!message)
            return mrl_fail(conn, MRLEASE_ERR_TIMEOUT, "%s: no reply from mrleased within %d ms", what, conn->reply_timeout_millis);
        if (is_event(message)) {
            if ((status = mrl_enqueue(conn, message))) return status;
            continue;
        }
        /* A reply without id answers a request the daemon could not read (too large, a bad
         * envelope): with one request in flight, that is this one. Others are stale (a reply
         * that came after its request timed out): dropped. */
        json_object *reply_id = mrl_field(message, "id");
        if (reply_id && !(json_object_is_type(reply_id, json_type_int) && json_object_get_uint64(reply_id) == id
                          && json_object_get_int64(reply_id) >= 0)) {
            json_object_put(message);
            continue;
        }
        json_object *error = mrl_field(message, "error"), *ok = mrl_field(message, "result");
        const char *type = json_object_get_string(mrl_field(message, "type"));
        if (strcmp(type, op) && strcmp(type, "error"))
            status = mrl_fail(conn, MRLEASE_ERR_BAD_REPLY, "%s: the reply is of type \"%.64s\", not \"%s\"", what, type, op);
        else if (json_object_is_type(error, json_type_object)) status = refusal(conn, op, error);
        else if (json_object_is_type(ok, json_type_object) && result) *result = json_object_get(ok);
        else if (!json_object_is_type(ok, json_type_object))
            status = mrl_fail(conn, MRLEASE_ERR_BAD_REPLY, "%s: neither a \"result\" nor an \"error\" object", what);
        if (reply) *reply = message;
        else json_object_put(message);
        return status;
    }
}

mrlease_status mrl_call_with_fd(mrlease_conn *conn, const char *op, json_object *request, int fd, json_object **result) {
    static const long delays_millis[] = { 10, 50, 250 };
    for (size_t attempt = 0;; attempt++) {
        json_object *copy = NULL;
        if (attempt < 3 && json_object_deep_copy(request, &copy, NULL) != 0) {
            json_object_put(request);
            return mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "%s: copying the request: out of memory", op);
        }
        mrlease_status status = mrl_call(conn, op, attempt < 3 ? copy : request, &fd, 1, result, NULL);
        if (status != MRLEASE_FD_NOT_RECEIVED || attempt == 3) {
            if (attempt < 3) json_object_put(request);
            return status;
        }
        struct timespec pause = { 0, delays_millis[attempt] * 1000000L }, left;
        while (nanosleep(&pause, &left) < 0 && errno == EINTR) pause = left;
    }
}

MRLEASE_API mrlease_status mrlease_request_json(mrlease_conn *conn, const char *request_json, const int *fds,
                                                size_t fd_count, char **reply_json) {
    if (!conn) return MRLEASE_ERR_INVALID_ARGUMENT;
    mrl_clear(conn);
    if (reply_json) *reply_json = NULL;
    if (!request_json || (fd_count && !fds))
        return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "mrlease_request_json: no request, or fd_count without fds");
    json_object *request = json_tokener_parse(request_json);
    if (!json_object_is_type(request, json_type_object)) {
        json_object_put(request);
        return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "mrlease_request_json: the request is not a JSON object");
    }
    if (!mrl_field(request, "v")) mrl_add_u64(request, "v", MRLEASE_PROTOCOL_VERSION);
    json_object *type = mrl_field(request, "type");
    char op[64];
    snprintf(op, sizeof op, "%s", json_object_is_type(type, json_type_string) ? json_object_get_string(type) : "request");
    json_object *reply = NULL;
    mrlease_status status = mrl_call(conn, op, request, fds, fd_count, NULL, &reply);
    if (reply && reply_json) {
        const char *text = json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!text || !(*reply_json = strdup(text))) status = mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "%s reply: out of memory", op);
    }
    json_object_put(reply);
    return status;
}

mrlease_status mrl_next_event(mrlease_conn *conn, struct mrlease_event *out, int timeout_millis) {
    if (!conn) return MRLEASE_ERR_INVALID_ARGUMENT;
    mrl_clear(conn);
    if (!out) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "mrlease_next_event: out is NULL");
    memset(out, 0, sizeof *out);
    json_object *message = mrl_dequeue(conn);
    if (!message) {
        if (conn->ended) return mrl_fail(conn, MRLEASE_ERR_DISCONNECTED, "wait for events: %s", conn->end_message);
        if (conn->sock < 0) return mrl_fail(conn, MRLEASE_ERR_DISCONNECTED, "wait for events: not connected (mrlease_connect first)");
        int64_t deadline = timeout_millis < 0 ? -1 : now_millis() + timeout_millis;
        for (;;) {
            mrlease_status status = receive(conn, deadline, "wait for events", &message);
            if (status) return status;
            if (!message) return mrl_fail(conn, MRLEASE_ERR_NO_EVENT, "no event within %d ms", timeout_millis);
            if (is_event(message)) break;
            json_object_put(message);  /* a reply to no pending request (its request timed out): stale */
        }
    }
    mrlease_status status = mrl_parse_event(conn, message, out);
    json_object_put(message);
    return status;
}
