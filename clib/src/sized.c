/* The ABI edge of the structs that grow (mrlease_hello, mrlease_stats, mrlease_event, and the
 * options of 1.5.0's mrlease_hello_with): the caller passes sizeof its struct, which may be an
 * older header's (shorter) or a newer one's (longer). The library fills a whole struct of its
 * own, hands over the fields the caller's struct has, zeroes the rest of the caller's bytes, and
 * frees what the caller cannot see. The unsized names are exported too, for programs built
 * against libmrlease 1.0.0's header (whose structs are the 1.0.0 layouts below).
 * docs/c-client.md, "Compatibility promise". */
#include <stddef.h>
#include <string.h>

#include "internal.h"

/* Each struct's sizes as released, oldest first: 1.0.0's (unversioned symbols, before the sized
 * calls), then each later one, as offsets and sizes rather than numbers, so that they hold on
 * every ABI the library is built for. A new field goes at the end; the size its struct had
 * before becomes offsetof(the new field) and joins its list, and the ENDS_WITH assertions below
 * fail the build until the newest size names the new last field. */
#define END_OF(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))
#define ENDS_WITH(type, field) (sizeof(type) == (END_OF(type, field) + _Alignof(type) - 1) / _Alignof(type) * _Alignof(type))
static const size_t stats_sizes[] = {
    offsetof(struct mrlease_stats, registrations),    /* 1.0.0 */
    offsetof(struct mrlease_stats, layout_changes_followed), /* 1.1.0: + registrations … peers */
    sizeof(struct mrlease_stats),                     /* 1.4.0: + layout_changes_followed */
};
static const size_t hello_sizes[] = {
    offsetof(struct mrlease_hello, layout_policy),    /* 1.0.0 */
    offsetof(struct mrlease_hello, revoking_per_file), /* 1.2.0: + layout_policy */
    sizeof(struct mrlease_hello),                     /* 1.5.0: + revoking_per_file */
};
static const size_t event_sizes[] = {
    offsetof(struct mrlease_event, size),             /* 1.0.0 */
    offsetof(struct mrlease_event, file),             /* 1.2.0: + size (and MRLEASE_EVENT_LAYOUT) */
    sizeof(struct mrlease_event),                     /* 1.5.0: + file … more (and MRLEASE_EVENT_REVOKING_FILE) */
};
static const size_t hello_options_sizes[] = {
    sizeof(struct mrlease_hello_options),             /* 1.5.0 */
};
#define STATS_SIZE_1_0_0 offsetof(struct mrlease_stats, registrations)
#define HELLO_SIZE_1_0_0 offsetof(struct mrlease_hello, layout_policy)
#define EVENT_SIZE_1_0_0 offsetof(struct mrlease_event, size)
_Static_assert(ENDS_WITH(struct mrlease_stats, layout_changes_followed), "mrlease_stats grew: list its size in stats_sizes");
_Static_assert(ENDS_WITH(struct mrlease_hello, revoking_per_file), "mrlease_hello grew: list its size in hello_sizes");
_Static_assert(ENDS_WITH(struct mrlease_event, more), "mrlease_event grew: list its size in event_sizes");
_Static_assert(ENDS_WITH(struct mrlease_hello_options, revoking_per_file),
               "mrlease_hello_options grew: list its size in hello_options_sizes and read the new field");

struct layout {
    const char *op;
    const size_t *sizes;
    size_t count;
    void (*release)(void *whole);     /* frees the pointers of a whole struct of ours */
};

static void release_hello(void *whole) { mrl_hello_release(whole); }
static void release_stats(void *whole) { mrl_stats_release(whole); }
static void release_event(void *whole) { mrl_event_release(whole); }
static const struct layout hello_layout = { "hello", hello_sizes, sizeof hello_sizes / sizeof *hello_sizes, release_hello };
static const struct layout stats_layout = { "stats", stats_sizes, sizeof stats_sizes / sizeof *stats_sizes, release_stats };
static const struct layout event_layout = { "mrlease_next_event", event_sizes, sizeof event_sizes / sizeof *event_sizes,
                                            release_event };

/* The largest released layout within `size` bytes, 0 when none fits: a caller's size that lies
 * between two layouts (no header ever made one) keeps only the smaller one's fields. */
static size_t layout_within(const struct layout *l, size_t size) {
    size_t kept = 0;
    for (size_t i = 0; i < l->count; i++)
        if (l->sizes[i] <= size && l->sizes[i] > kept) kept = l->sizes[i];
    return kept;
}

/* Checks the caller's struct before a call: its layout's size in `*kept`. */
static mrlease_status begin(mrlease_conn *conn, const struct layout *l, const void *out, size_t size, size_t *kept) {
    if (!conn) return MRLEASE_ERR_INVALID_ARGUMENT;
    mrl_clear(conn);
    if (!out) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "%s: out is NULL", l->op);
    if (!(*kept = layout_within(l, size)))
        return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "%s: out_size %zu is smaller than any layout of the struct (%zu)",
                        l->op, size, l->sizes[0]);
    return MRLEASE_OK;
}

/* Hands the first `kept` bytes of `whole` to the caller's `size` bytes (the rest zero), and
 * frees what lies beyond them: fields the caller's header does not have. */
static mrlease_status deliver(const struct layout *l, mrlease_status status, void *out, size_t size, void *whole,
                              size_t kept) {
    memset(out, 0, size);
    if (status == MRLEASE_OK) {
        memcpy(out, whole, kept);
        memset(whole, 0, kept);
        l->release(whole);
    }
    return status;
}

/* Frees what the library put into the caller's struct of `size` bytes, and zeroes it. */
static void release(const struct layout *l, void *caller, size_t size, void *whole) {
    size_t kept;
    if (!caller || !(kept = layout_within(l, size))) return;
    memcpy(whole, caller, kept);
    l->release(whole);
    memset(caller, 0, size);
}

MRLEASE_API mrlease_status mrlease_hello_sized(mrlease_conn *conn, const char *client_name, struct mrlease_hello *out,
                                               size_t out_size) {
    size_t kept;
    mrlease_status status = begin(conn, &hello_layout, out, out_size, &kept);
    if (status) return status;
    struct mrlease_hello whole;
    return deliver(&hello_layout, mrl_hello(conn, client_name, 0, &whole), out, out_size, &whole, kept);
}

MRLEASE_API mrlease_status mrlease_hello_with_sized(mrlease_conn *conn, const char *client_name,
                                                    const struct mrlease_hello_options *options, size_t options_size,
                                                    struct mrlease_hello *out, size_t out_size) {
    size_t kept;
    mrlease_status status = begin(conn, &hello_layout, out, out_size, &kept);
    if (status) return status;
    /* A caller's options shorter than 1.5.0's has no field this library reads: none asked. */
    int per_file = options && options_size >= hello_options_sizes[0] && options->revoking_per_file;
    struct mrlease_hello whole;
    return deliver(&hello_layout, mrl_hello(conn, client_name, per_file, &whole), out, out_size, &whole, kept);
}

MRLEASE_API void mrlease_hello_release_sized(struct mrlease_hello *hello, size_t hello_size) {
    struct mrlease_hello whole = { 0 };
    release(&hello_layout, hello, hello_size, &whole);
}

MRLEASE_API mrlease_status mrlease_stats_sized(mrlease_conn *conn, struct mrlease_stats *out, size_t out_size) {
    size_t kept;
    mrlease_status status = begin(conn, &stats_layout, out, out_size, &kept);
    if (status) return status;
    struct mrlease_stats whole;
    return deliver(&stats_layout, mrl_stats(conn, &whole), out, out_size, &whole, kept);
}

MRLEASE_API void mrlease_stats_release_sized(struct mrlease_stats *stats, size_t stats_size) {
    struct mrlease_stats whole = { 0 };
    release(&stats_layout, stats, stats_size, &whole);
}

MRLEASE_API mrlease_status mrlease_next_event_sized(mrlease_conn *conn, struct mrlease_event *out, size_t out_size,
                                                    int timeout_millis) {
    size_t kept;
    mrlease_status status = begin(conn, &event_layout, out, out_size, &kept);
    if (status) return status;
    struct mrlease_event whole;
    status = mrl_next_event(conn, &whole, timeout_millis);
    /* A type the caller's header does not name (its struct ends before the fields of the
     * release that added the type: 1.2.0's LAYOUT, 1.5.0's REVOKING_FILE) is OTHER for it, as
     * for any name the library does not know: `name` still says which. */
    if (status == MRLEASE_OK && ((kept < END_OF(struct mrlease_event, size) && whole.type > MRLEASE_EVENT_PEER_DISCONNECTED)
                                 || (kept < END_OF(struct mrlease_event, more) && whole.type > MRLEASE_EVENT_LAYOUT)))
        whole.type = MRLEASE_EVENT_OTHER;
    return deliver(&event_layout, status, out, out_size, &whole, kept);
}

MRLEASE_API void mrlease_event_release_sized(struct mrlease_event *event, size_t event_size) {
    struct mrlease_event whole = { 0 };
    release(&event_layout, event, event_size, &whole);
}

/* The unsized calls of libmrlease 1.0.0, for programs built against its header: their structs
 * are the 1.0.0 layouts. Programs built since call the sized ones (the header's wrappers). */
MRLEASE_API mrlease_status mrlease_hello(mrlease_conn *conn, const char *client_name, struct mrlease_hello *out) {
    return mrlease_hello_sized(conn, client_name, out, HELLO_SIZE_1_0_0);
}
MRLEASE_API void mrlease_hello_release(struct mrlease_hello *hello) { mrlease_hello_release_sized(hello, HELLO_SIZE_1_0_0); }
MRLEASE_API mrlease_status mrlease_stats(mrlease_conn *conn, struct mrlease_stats *out) {
    return mrlease_stats_sized(conn, out, STATS_SIZE_1_0_0);
}
MRLEASE_API void mrlease_stats_release(struct mrlease_stats *stats) { mrlease_stats_release_sized(stats, STATS_SIZE_1_0_0); }
MRLEASE_API mrlease_status mrlease_next_event(mrlease_conn *conn, struct mrlease_event *out, int timeout_millis) {
    return mrlease_next_event_sized(conn, out, EVENT_SIZE_1_0_0, timeout_millis);
}
MRLEASE_API void mrlease_event_release(struct mrlease_event *event) { mrlease_event_release_sized(event, EVENT_SIZE_1_0_0); }
