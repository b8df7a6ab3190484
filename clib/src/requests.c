/* The requests of docs/protocol.md §4 and their results. */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define BEGIN(conn)                                             \
    do {                                                        \
        if (!(conn)) return MRLEASE_ERR_INVALID_ARGUMENT;       \
        mrl_clear(conn);                                        \
    } while (0)
#define BEGIN_OUT(conn, out, op)                                                          \
    do {                                                                                  \
        BEGIN(conn);                                                                      \
        if (!(out)) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, op ": out is NULL"); \
        memset((out), 0, sizeof *(out));                                                  \
    } while (0)

/* ---- hello ---- */

static const char *const odp_words[] = { "SEND", "RECV", "WRITE", "READ", "ATOMIC", "SRQ_RECV" };

static void read_device(struct mrl_reader *r, json_object *d, struct mrlease_device *out) {
    out->name = mrl_string(r, d, "name", 1);
    json_object *odp = mrl_object(r, d, "odp", 1);
    if (odp) {
        out->odp_supported = mrl_bool(r, odp, "supported");
        json_object *rc = mrl_array(r, odp, "rc", 1);
        for (size_t i = 0; rc && i < json_object_array_length(rc); i++) {
            const char *word = json_object_get_string(json_object_array_get_idx(rc, i));
            for (unsigned k = 0; word && k < 6; k++)
                if (!strcmp(word, odp_words[k])) out->odp_rc |= 1u << k;  /* others: a newer verb, not ours to name */
        }
    }
    out->odp_integrity = mrl_string(r, d, "odpIntegrity", 0);
    int present;
    uint64_t alignment = mrl_u64_optional(r, d, "transferAlignment", &present);
    out->transfer_alignment = alignment > UINT32_MAX ? 0 : (uint32_t)alignment;
    out->odp_integrity_detail = mrl_string(r, d, "odpIntegrityDetail", 0);
}

mrlease_status mrl_hello(mrlease_conn *conn, const char *client_name, int revoking_per_file, struct mrlease_hello *out) {
    BEGIN_OUT(conn, out, "hello");
    json_object *request = mrl_request("hello"), *versions = json_object_new_array();
    if (request && versions) json_object_array_add(versions, json_object_new_uint64(MRLEASE_PROTOCOL_VERSION));
    if (request) json_object_object_add(request, "versions", versions);
    else json_object_put(versions);
    if (request && client_name) json_object_object_add(request, "clientName", json_object_new_string(client_name));
    if (request && revoking_per_file) json_object_object_add(request, "revokingPerFile", json_object_new_boolean(1));
    json_object *result;
    mrlease_status status = mrl_call(conn, "hello", request, NULL, 0, &result, NULL);
    if (status) return status;
    struct mrl_reader r = { conn, "hello", MRLEASE_OK };
    out->version = mrl_u64(&r, result, "version");
    out->daemon = mrl_string(&r, result, "daemon", 1);
    json_object *devices = mrl_array(&r, result, "devices", 1);
    size_t n = devices ? json_object_array_length(devices) : 0;
    out->devices = mrl_calloc(&r, n, sizeof *out->devices);
    for (size_t i = 0; out->devices && i < n; i++, out->device_count = i)
        read_device(&r, json_object_array_get_idx(devices, i), &out->devices[i]);
    json_object *strategies = mrl_array(&r, result, "strategies", 1);
    for (size_t i = 0; strategies && i < json_object_array_length(strategies); i++) {
        const char *word = json_object_get_string(json_object_array_get_idx(strategies, i));
        if (word && !strcmp(word, "odp")) out->strategies |= 1u << MRLEASE_STRATEGY_ODP;
        if (word && !strcmp(word, "pinned")) out->strategies |= 1u << MRLEASE_STRATEGY_PINNED;
    }
    json_object *limits = mrl_object(&r, result, "limits", 1);
    int present;
    out->max_message_bytes = mrl_u64_optional(&r, limits, "maxMessageBytes", &present);
    out->max_regions_per_uid = mrl_u64_optional(&r, limits, "maxRegionsPerUid", &present);
    out->max_bytes_per_uid = mrl_u64_optional(&r, limits, "maxBytesPerUid", &present);
    out->quiesce_millis = mrl_u64_optional(&r, limits, "quiesceMillis", &present);
    out->max_batch_ranges = mrl_u64_optional(&r, limits, "maxBatchRanges", &present);
    out->max_connections = mrl_u64_optional(&r, limits, "maxConnections", &present);
    out->max_connections_per_uid = mrl_u64_optional(&r, limits, "maxConnectionsPerUid", &present);
    out->max_queued_bytes = mrl_u64_optional(&r, limits, "maxQueuedBytes", &present);
    json_object *endpoints = mrl_array(&r, result, "endpoints", 0);
    n = endpoints ? json_object_array_length(endpoints) : 0;
    out->endpoints = mrl_calloc(&r, n, sizeof *out->endpoints);
    for (size_t i = 0; out->endpoints && i < n && !r.status; i++) {
        json_object *e = json_object_array_get_idx(endpoints, i);
        if (!json_object_is_type(e, json_type_string)) mrl_bad(&r, "\"endpoints\" holds a non-string");
        else if (!(out->endpoints[i] = strdup(json_object_get_string(e)))) r.status = mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "hello reply: out of memory");
        else out->endpoint_count = i + 1;
    }
    out->layout_protection = mrl_string(&r, result, "layoutProtection", 0);
    out->layout_policy = mrl_string(&r, result, "layoutPolicy", 0);
    out->revoking_per_file = mrl_bool_optional(&r, result, "revokingPerFile");
    if (!out->layout_protection && !r.status && !(out->layout_protection = strdup("none")))
        r.status = mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "hello reply: out of memory");
    json_object_put(result);
    if (r.status) mrl_hello_release(out);
    return r.status;
}

void mrl_hello_release(struct mrlease_hello *hello) {
    if (!hello) return;
    for (size_t i = 0; hello->devices && i < hello->device_count; i++) {
        free(hello->devices[i].name);
        free(hello->devices[i].odp_integrity);
        free(hello->devices[i].odp_integrity_detail);
    }
    for (size_t i = 0; hello->endpoints && i < hello->endpoint_count; i++) free(hello->endpoints[i]);
    free(hello->devices);
    free(hello->endpoints);
    free(hello->daemon);
    free(hello->layout_protection);
    free(hello->layout_policy);
    memset(hello, 0, sizeof *hello);
}

/* ---- register, register-batch, deregister ---- */

static const char *const layout_policies[] = { "", "follow", "revoke" };

static json_object *range_object(const struct mrlease_range *range, mrlease_layout_policy policy) {
    static const char *const strategies[] = { "any", "odp", "pinned" };
    json_object *object = json_object_new_object();
    if (!object) return NULL;
    mrl_add_u64(object, "offset", range->offset);
    mrl_add_u64(object, "length", range->length);
    json_object_object_add(object, "access", mrl_access_array(range->access));
    json_object_object_add(object, "strategy", json_object_new_string(strategies[range->strategy]));
    if (range->tag) json_object_object_add(object, "tag", json_object_new_string(range->tag));
    if (policy != MRLEASE_LAYOUT_POLICY_DEFAULT)
        json_object_object_add(object, "layoutPolicy", json_object_new_string(layout_policies[policy]));
    return object;
}

/* A `register` request for ranges[0] (batch 0) or a `register-batch` of all `count`, each
 * asking `policy`; NULL when out of memory (register_with reports it). */
static json_object *register_request(const struct mrlease_range *ranges, size_t count, int batch, mrlease_layout_policy policy) {
    if (!batch) {
        json_object *request = range_object(&ranges[0], policy);
        if (request) {
            mrl_add_u64(request, "v", MRLEASE_PROTOCOL_VERSION);
            json_object_object_add(request, "type", json_object_new_string("register"));
        }
        return request;
    }
    json_object *request = mrl_request("register-batch"), *array = json_object_new_array();
    for (size_t i = 0; array && i < count; i++) json_object_array_add(array, range_object(&ranges[i], policy));
    if (request) json_object_object_add(request, "ranges", array);
    else json_object_put(array);
    return request;
}

/* The registration's layoutPolicy (DEFAULT when absent or a word this library does not know). */
static mrlease_layout_policy read_layout_policy(struct mrl_reader *r, json_object *o) {
    char *word = mrl_string(r, o, "layoutPolicy", 0);
    mrlease_layout_policy policy = MRLEASE_LAYOUT_POLICY_DEFAULT;
    for (int k = 1; word && k < 3; k++)
        if (!strcmp(word, layout_policies[k])) policy = (mrlease_layout_policy)k;
    free(word);
    return policy;
}

static void read_registration(struct mrl_reader *r, json_object *o, struct mrlease_registration *out) {
    static const char *const backings[] = { "", "fs-dax", "page-cache", "shmem" };
    out->region = mrl_u64(r, o, "region");
    out->lkey = mrl_u32(r, o, "lkey");
    out->rkey = mrl_u32(r, o, "rkey");
    out->address = mrl_u64(r, o, "address");
    out->length = mrl_u64(r, o, "length");
    out->strategy = mrl_strategy(r, o, "strategy");
    out->strategy_reason = mrl_string(r, o, "strategyReason", 1);
    out->device = mrl_string(r, o, "device", 1);
    char *backing = mrl_string(r, o, "backing", 1);
    for (int k = 1; backing && k < 4; k++)
        if (!strcmp(backing, backings[k])) out->backing = (mrlease_backing)k;
    free(backing);
}

MRLEASE_API void mrlease_registration_release(struct mrlease_registration *registration) {
    if (!registration) return;
    free(registration->strategy_reason);
    free(registration->device);
    memset(registration, 0, sizeof *registration);
}

static mrlease_status check_ranges(mrlease_conn *conn, const char *op, int fd, const struct mrlease_range *ranges, size_t count) {
    if (fd < 0) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "%s: fd %d is not a file descriptor", op, fd);
    if (!ranges || !count) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "%s: no range", op);
    for (size_t i = 0; i < count; i++)
        if ((unsigned)ranges[i].strategy > MRLEASE_STRATEGY_PINNED || ranges[i].access & ~7u)
            return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "%s: range %zu: unknown strategy or access bits", op, i);
    return MRLEASE_OK;
}

/* Sends `request` with a duplicate of `fd` (kept for the regions made, §3), and reads `count`
 * registrations from the result's `key` (NULL: the result is the one registration), and their
 * layout policies into `policies` when it is not NULL. */
static mrlease_status register_with(mrlease_conn *conn, const char *op, json_object *request, int fd, size_t count,
                                    const char *key, struct mrlease_registration *out, mrlease_layout_policy *policies) {
    int held = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (held < 0) {
        json_object_put(request);
        return mrl_fail_errno(conn, errno, "%s: fcntl(F_DUPFD_CLOEXEC) of fd %d, kept to release the lease if mrleased dies", op, fd);
    }
    json_object *result;
    mrlease_status status = mrl_call_with_fd(conn, op, request, held, &result);
    if (status == MRLEASE_ERR_DISCONNECTED) {
        /* The daemon may have taken its lease on this file before it died mid-request. */
        char what[512];
        mrl_release_orphaned_lease(held, what, sizeof what);
        size_t used = strlen(conn->message);
        if (strncmp(what, "no lease", 8) && used < sizeof conn->message)
            snprintf(conn->message + used, sizeof conn->message - used, "; %s", what);
    }
    if (status) {
        close(held);
        return status;
    }
    struct mrl_reader r = { conn, op, MRLEASE_OK };
    json_object *array = key ? mrl_array(&r, result, key, 1) : NULL;
    if (array && json_object_array_length(array) != count)
        mrl_bad(&r, "\"%s\" holds %zu registrations for %zu ranges", key, json_object_array_length(array), count);
    for (size_t i = 0; i < count && !r.status; i++) {
        json_object *one = key ? json_object_array_get_idx(array, i) : result;
        read_registration(&r, one, &out[i]);
        if (policies && !r.status) policies[i] = read_layout_policy(&r, one);
    }
    json_object_put(result);
    for (size_t i = 0; i < count && !r.status; i++) r.status = mrl_hold(conn, out[i].region, held);
    if (r.status) {
        /* The daemon made regions this call cannot describe: they stay until deregistered
         * or the connection closes; the fd is kept for those the library did hold. */
        for (size_t i = 0; i < count; i++) mrlease_registration_release(&out[i]);
        int kept = 0;
        for (size_t i = 0; i < conn->held_count; i++) kept |= conn->held[i].fd == held;
        if (!kept) close(held);
    }
    return r.status;
}

MRLEASE_API mrlease_status mrlease_register(mrlease_conn *conn, int fd, const struct mrlease_range *range,
                                            struct mrlease_registration *out) {
    BEGIN_OUT(conn, out, "register");
    mrlease_status status = check_ranges(conn, "register", fd, range, 1);
    if (status) return status;
    return register_with(conn, "register", register_request(range, 1, 0, MRLEASE_LAYOUT_POLICY_DEFAULT), fd, 1, NULL, out, NULL);
}

MRLEASE_API mrlease_status mrlease_register_batch(mrlease_conn *conn, int fd, const struct mrlease_range *ranges,
                                                  size_t count, struct mrlease_registration *out) {
    BEGIN(conn);
    mrlease_status status = check_ranges(conn, "register-batch", fd, ranges, count);
    if (status) return status;
    if (!out) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "register-batch: out is NULL");
    memset(out, 0, count * sizeof *out);
    return register_with(conn, "register-batch", register_request(ranges, count, 1, MRLEASE_LAYOUT_POLICY_DEFAULT), fd, count,
                         "regions", out, NULL);
}

/* The sizes of 1.3.0's structs that grow, oldest first (as sized.c's): a new field goes at the
 * end, and the size before it joins its list. */
#define END_OF(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))
static const size_t options_sizes[] = { sizeof(struct mrlease_register_options) };   /* 1.3.0 */
static const size_t info_sizes[] = { sizeof(struct mrlease_registration_info) };     /* 1.3.0 */
_Static_assert(sizeof(struct mrlease_register_options) == END_OF(struct mrlease_register_options, layout_policy),
               "mrlease_register_options grew: list its size in options_sizes and read the new field");
_Static_assert(sizeof(struct mrlease_registration_info) == END_OF(struct mrlease_registration_info, layout_policy),
               "mrlease_registration_info grew: list its size in info_sizes and fill the new field");

MRLEASE_API mrlease_status mrlease_register_with_sized(mrlease_conn *conn, int fd, const struct mrlease_range *ranges,
                                                       size_t count, const struct mrlease_register_options *options,
                                                       size_t options_size, struct mrlease_registration *out,
                                                       struct mrlease_registration_info *info, size_t info_size) {
    BEGIN(conn);
    const char *op = count == 1 ? "register" : "register-batch";
    mrlease_status status = check_ranges(conn, op, fd, ranges, count);
    if (status) return status;
    if (!out) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "%s: out is NULL", op);
    /* A caller's options shorter than 1.3.0's has no field this library reads: none asked. */
    mrlease_layout_policy policy = MRLEASE_LAYOUT_POLICY_DEFAULT;
    if (options && options_size >= options_sizes[0]) policy = options->layout_policy;
    if ((unsigned)policy > MRLEASE_LAYOUT_POLICY_REVOKE)
        return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "%s: layout_policy %u is not a mrlease_layout_policy", op, (unsigned)policy);
    if (info && info_size < info_sizes[0])
        return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "%s: info_size %zu is smaller than any layout of mrlease_registration_info (%zu)",
                        op, info_size, info_sizes[0]);
    if (count > SIZE_MAX / sizeof *out || (info && count > SIZE_MAX / info_size))
        return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "%s: count %zu is too large", op, count);
    memset(out, 0, count * sizeof *out);
    if (info) memset(info, 0, count * info_size);
    mrlease_layout_policy *got = calloc(count, sizeof *got);
    if (!got) return mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "%s: out of memory", op);
    status = register_with(conn, op, register_request(ranges, count, count > 1, policy), fd, count, count == 1 ? NULL : "regions",
                           out, got);
    for (size_t i = 0; info && status == MRLEASE_OK && i < count; i++) {
        struct mrlease_registration_info one = { .layout_policy = got[i] };
        memcpy((char *)info + i * info_size, &one, sizeof one);
    }
    free(got);
    return status;
}

static mrlease_status region_request(mrlease_conn *conn, const char *type, const char *key, uint64_t value, json_object **result) {
    json_object *request = mrl_request(type);
    if (request) mrl_add_u64(request, key, value);
    json_object *ignored = NULL;
    mrlease_status status = mrl_call(conn, type, request, NULL, 0, result ? result : &ignored, NULL);
    json_object_put(ignored);
    return status;
}

MRLEASE_API mrlease_status mrlease_deregister(mrlease_conn *conn, uint64_t region) {
    BEGIN(conn);
    mrl_release_held(conn, region);
    return region_request(conn, "deregister", "region", region, NULL);
}

MRLEASE_API mrlease_status mrlease_ack(mrlease_conn *conn, uint64_t region) {
    BEGIN(conn);
    return region_request(conn, "ack", "region", region, NULL);
}

MRLEASE_API mrlease_status mrlease_ack_regions(mrlease_conn *conn, const uint64_t *regions, size_t count) {
    BEGIN(conn);
    if (!regions || count == 0 || count > MRLEASE_MAX_ACK_REGIONS)
        return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "ack: regions must point to 1 to %d region ids, not %zu",
                        MRLEASE_MAX_ACK_REGIONS, regions ? count : 0);
    json_object *request = mrl_request("ack"), *array = json_object_new_array();
    for (size_t i = 0; array && i < count; i++) json_object_array_add(array, json_object_new_uint64(regions[i]));
    if (request) json_object_object_add(request, "regions", array);
    else json_object_put(array);
    json_object *ignored = NULL;
    mrlease_status status = mrl_call(conn, "ack", request, NULL, 0, &ignored, NULL);
    json_object_put(ignored);
    return status;
}

MRLEASE_API mrlease_status mrlease_revoke_grant(mrlease_conn *conn, uint64_t grant) {
    BEGIN(conn);
    return region_request(conn, "revoke-grant", "grant", grant, NULL);
}

/* ---- verify ---- */

MRLEASE_API mrlease_status mrlease_verify(mrlease_conn *conn, uint64_t region, struct mrlease_verification *out) {
    BEGIN_OUT(conn, out, "verify");
    json_object *result;
    mrlease_status status = region_request(conn, "verify", "region", region, &result);
    if (status) return status;
    struct mrl_reader r = { conn, "verify", MRLEASE_OK };
    out->layout = mrl_layout(&r, result);
    out->layout_changed = out->layout != MRLEASE_LAYOUT_UNCHANGED;
    out->extents_before = mrl_u64(&r, result, "extentsBefore");
    out->extents_after = mrl_u64(&r, result, "extentsAfter");
    json_object_put(result);
    return r.status;
}

/* ---- grant ---- */

MRLEASE_API mrlease_status mrlease_grant(mrlease_conn *conn, uint64_t region, const struct mrlease_grant_request *request,
                                         struct mrlease_grant *out) {
    BEGIN_OUT(conn, out, "grant");
    if (request && request->access & ~7u) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "grant: unknown access bits");
    json_object *message = mrl_request("grant");
    if (message) {
        mrl_add_u64(message, "region", region);
        if (request && request->access) json_object_object_add(message, "access", mrl_access_array(request->access));
        if (request && request->expires_in_millis) mrl_add_u64(message, "expiresInMillis", request->expires_in_millis);
        if (request && request->max_peers) mrl_add_u64(message, "maxPeers", request->max_peers);
    }
    json_object *result;
    mrlease_status status = mrl_call(conn, "grant", message, NULL, 0, &result, NULL);
    if (status) return status;
    struct mrl_reader r = { conn, "grant", MRLEASE_OK };
    out->grant = mrl_u64(&r, result, "grant");
    out->region = mrl_u64(&r, result, "region");
    out->descriptor = mrl_string(&r, result, "descriptor", 1);
    out->endpoint = mrl_string(&r, result, "endpoint", 1);
    out->access = mrl_access(&r, result, "access");
    out->max_peers = mrl_u64(&r, result, "maxPeers");
    out->expires_in_millis = mrl_u64_optional(&r, result, "expiresInMillis", &out->has_expiry);
    out->alignment = mrl_u64(&r, result, "alignment");
    json_object_put(result);
    if (r.status) mrlease_grant_release(out);
    return r.status;
}

MRLEASE_API void mrlease_grant_release(struct mrlease_grant *grant) {
    if (!grant) return;
    if (grant->descriptor) explicit_bzero(grant->descriptor, strlen(grant->descriptor));  /* a credential */
    free(grant->descriptor);
    free(grant->endpoint);
    memset(grant, 0, sizeof *grant);
}
