/* list (every page) and stats. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void read_grant(struct mrl_reader *r, json_object *o, struct mrlease_grant_info *out) {
    out->grant = mrl_u64(r, o, "grant");
    out->access = mrl_access(r, o, "access");
    out->max_peers = mrl_u64(r, o, "maxPeers");
    out->expires_in_millis = mrl_u64_optional(r, o, "expiresInMillis", &out->has_expiry);
    json_object *peers = mrl_array(r, o, "peers", 1);
    size_t n = peers ? json_object_array_length(peers) : 0;
    out->peers = mrl_calloc(r, n, sizeof *out->peers);
    for (size_t i = 0; out->peers && i < n && !r->status; i++, out->peer_count = i) {
        json_object *p = json_object_array_get_idx(peers, i);
        out->peers[i].peer = mrl_u64(r, p, "peer");
        out->peers[i].address = mrl_string(r, p, "address", 1);
        out->peers[i].generation = mrl_u64(r, p, "generation");
    }
}

static void read_region(struct mrl_reader *r, json_object *o, struct mrlease_region *out) {
    out->region = mrl_u64(r, o, "region");
    out->file = mrl_string(r, o, "file", 1);
    out->offset = mrl_u64(r, o, "offset");
    out->length = mrl_u64(r, o, "length");
    out->access = mrl_access(r, o, "access");
    out->strategy = mrl_strategy(r, o, "strategy");
    out->state = mrl_string(r, o, "state", 1);
    out->has_keys = mrl_field(o, "rkey") != NULL;
    if (out->has_keys) {
        out->lkey = mrl_u32(r, o, "lkey");
        out->rkey = mrl_u32(r, o, "rkey");
        out->address = mrl_u64(r, o, "address");
    }
    out->tag = mrl_string(r, o, "tag", 0);
    int present;
    uint64_t pid = mrl_u64_optional(r, o, "pid", &present);
    out->pid = present && pid <= INT64_MAX ? (int64_t)pid : -1;
    out->generation = mrl_u64_optional(r, o, "generation", &present);
    json_object *grants = mrl_array(r, o, "grants", 0);
    size_t n = grants ? json_object_array_length(grants) : 0;
    out->grants = mrl_calloc(r, n, sizeof *out->grants);
    for (size_t i = 0; out->grants && i < n && !r->status; i++, out->grant_count = i)
        read_grant(r, json_object_array_get_idx(grants, i), &out->grants[i]);
}

static void release_region(struct mrlease_region *region) {
    free(region->file);
    free(region->state);
    free(region->tag);
    for (size_t g = 0; region->grants && g < region->grant_count; g++) {
        for (size_t p = 0; p < region->grants[g].peer_count; p++) free(region->grants[g].peers[p].address);
        free(region->grants[g].peers);
    }
    free(region->grants);
}

MRLEASE_API void mrlease_region_list_release(struct mrlease_region_list *list) {
    if (!list) return;
    for (size_t i = 0; list->regions && i < list->count; i++) release_region(&list->regions[i]);
    free(list->regions);
    memset(list, 0, sizeof *list);
}

MRLEASE_API mrlease_status mrlease_list(mrlease_conn *conn, int all, struct mrlease_region_list *out) {
    if (!conn) return MRLEASE_ERR_INVALID_ARGUMENT;
    mrl_clear(conn);
    if (!out) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "list: out is NULL");
    memset(out, 0, sizeof *out);
    struct mrl_reader r = { conn, "list", MRLEASE_OK };
    int more = 0;
    uint64_t after = 0;
    size_t capacity = 0;
    do {
        json_object *request = mrl_request("list"), *result;
        if (request && all) json_object_object_add(request, "all", json_object_new_boolean(1));
        if (request && more) mrl_add_u64(request, "after", after);
        if ((r.status = mrl_call(conn, "list", request, NULL, 0, &result, NULL))) break;
        json_object *regions = mrl_array(&r, result, "regions", 1);
        size_t n = regions ? json_object_array_length(regions) : 0;
        if (out->count + n > capacity) {
            size_t grown = (out->count + n) * 2;
            struct mrlease_region *bigger = realloc(out->regions, grown * sizeof *bigger);
            if (!bigger) r.status = mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "list reply: out of memory");
            else {
                memset(bigger + out->count, 0, (grown - out->count) * sizeof *bigger);
                out->regions = bigger;
                capacity = grown;
            }
        }
        for (size_t i = 0; i < n && !r.status; i++)
            read_region(&r, json_object_array_get_idx(regions, i), &out->regions[out->count++]);
        uint64_t next = mrl_u64_optional(&r, result, "next", &more);
        if (more && next <= after && after) mrl_bad(&r, "\"next\" %llu does not advance past %llu", (unsigned long long)next,
                                                    (unsigned long long)after);
        after = next;
        json_object_put(result);
    } while (more && !r.status);
    if (r.status) mrlease_region_list_release(out);
    return r.status;
}

static struct mrlease_latency read_latency(struct mrl_reader *r, json_object *o) {
    struct mrlease_latency l = { 0, 0, 0, 0 };
    if (!o) return l;
    l.p50 = mrl_u64(r, o, "p50");
    l.p99 = mrl_u64(r, o, "p99");
    l.max = mrl_u64(r, o, "max");
    l.count = mrl_u64(r, o, "count");
    return l;
}

mrlease_status mrl_stats(mrlease_conn *conn, struct mrlease_stats *out) {
    if (!conn) return MRLEASE_ERR_INVALID_ARGUMENT;
    mrl_clear(conn);
    if (!out) return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "stats: out is NULL");
    memset(out, 0, sizeof *out);
    json_object *result;
    mrlease_status status = mrl_call(conn, "stats", mrl_request("stats"), NULL, 0, &result, NULL);
    if (status) return status;
    struct mrl_reader r = { conn, "stats", MRLEASE_OK };
    int present;
    out->files = mrl_u64(&r, result, "files");
    out->regions = mrl_u64(&r, result, "regions");
    json_object *bytes = mrl_object(&r, result, "bytesByStrategy", 1);
    out->bytes_odp = mrl_u64_optional(&r, bytes, "odp", &present);
    out->bytes_pinned = mrl_u64_optional(&r, bytes, "pinned", &present);
    out->leases_held = mrl_u64(&r, result, "leasesHeld");
    out->breaks_handled = mrl_u64(&r, result, "breaksHandled");
    out->break_to_unlock_micros = read_latency(&r, mrl_object(&r, result, "breakToUnlockMicros", 1));
    out->clients = mrl_u64(&r, result, "clients");
    out->layout_changes_handled = mrl_u64_optional(&r, result, "layoutChangesHandled", &present);
    out->layout_checks = mrl_u64_optional(&r, result, "layoutChecks", &present);
    out->registrations = mrl_u64_optional(&r, result, "registrations", &present);
    out->restorations = mrl_u64_optional(&r, result, "restorations", &present);
    out->regions_lost = mrl_u64_optional(&r, result, "regionsLost", &present);
    out->grants = mrl_u64_optional(&r, result, "grants", &present);
    out->peers = mrl_u64_optional(&r, result, "peers", &present);
    out->layout_changes_followed = mrl_u64_optional(&r, result, "layoutChangesFollowed", &present);
    json_object *requests = mrl_object(&r, result, "requestMicros", 0);
    size_t n = requests ? (size_t)json_object_object_length(requests) : 0;
    out->requests = mrl_calloc(&r, n, sizeof *out->requests);
    if (requests && out->requests) {
        json_object_object_foreach(requests, type, latency) {
            if (r.status) break;
            struct mrlease_request_latency *entry = &out->requests[out->request_count++];
            if (!(entry->type = strdup(type))) r.status = mrl_fail(conn, MRLEASE_ERR_NO_MEMORY, "stats reply: out of memory");
            else if (!json_object_is_type(latency, json_type_object)) mrl_bad(&r, "requestMicros.%s is not an object", type);
            else entry->micros = read_latency(&r, latency);
        }
    }
    json_object_put(result);
    if (r.status) mrl_stats_release(out);
    return r.status;
}

void mrl_stats_release(struct mrlease_stats *stats) {
    if (!stats) return;
    for (size_t i = 0; stats->requests && i < stats->request_count; i++) free(stats->requests[i].type);
    free(stats->requests);
    memset(stats, 0, sizeof *stats);
}
