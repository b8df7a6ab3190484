/* One event and one ack per file (docs/protocol.md §5, "One event and one ack per file"):
 * reading a revoking-file event's runs of region ids, and the ack of a file. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* "major:minor:inode": three decimal numbers, short enough for an event's `file`. */
static int file_id_valid(const char *file) {
    if (strlen(file) >= sizeof ((struct mrlease_event *)0)->file) return 0;
    for (int numbers = 1;; numbers++, file++) {
        size_t digits = strspn(file, "0123456789");
        if (!digits) return 0;
        file += digits;
        if (!*file) return numbers == 3;
        if (*file != ':' || numbers == 3) return 0;
    }
}

void mrl_read_revoking_file(struct mrl_reader *r, json_object *message, struct mrlease_event *out) {
    char *file = mrl_string(r, message, "file", 1);
    if (file && !file_id_valid(file)) mrl_bad(r, "\"file\" is \"%.64s\", not major:minor:inode", file);
    else if (file) memcpy(out->file, file, strlen(file) + 1);
    free(file);
    json_object *runs = mrl_array(r, message, "regions", 1);
    size_t n = runs ? json_object_array_length(runs) : 0;
    out->runs = runs ? mrl_calloc(r, n, sizeof *out->runs) : NULL;
    /* Each run [first, last] with first ≤ last, after the run before it: ascending and not
     * overlapping, so the ids they hold together are the sum of their lengths. */
    uint64_t held = 0;
    for (size_t i = 0; out->runs && i < n && !r->status; i++) {
        json_object *run = json_object_array_get_idx(runs, i);
        uint64_t first = 0, last = 0;
        if (!json_object_is_type(run, json_type_array) || json_object_array_length(run) != 2
            || !mrl_as_u64(json_object_array_get_idx(run, 0), &first) || !mrl_as_u64(json_object_array_get_idx(run, 1), &last))
            mrl_bad(r, "\"regions\"[%zu] is not a run [first, last] of two region ids", i);
        else if (first > last)
            mrl_bad(r, "\"regions\"[%zu] is [%llu, %llu]: its first id is past its last", i, (unsigned long long)first,
                    (unsigned long long)last);
        else if (i > 0 && first <= out->runs[i - 1].last)
            mrl_bad(r, "\"regions\"[%zu] starts at %llu, not after the run before it (which ends at %llu): the runs are not ascending", i,
                    (unsigned long long)first, (unsigned long long)out->runs[i - 1].last);
        else if (last - first >= UINT64_MAX - held)
            mrl_bad(r, "\"regions\" holds more than 2^64-1 region ids");
        else {
            out->runs[i] = (struct mrlease_region_run){ first, last };
            out->run_count = i + 1;
            held += last - first + 1;
        }
    }
    out->count = mrl_u64(r, message, "count");
    if (!r->status && out->count != held)
        mrl_bad(r, "\"count\" is %llu, but its runs hold %llu regions", (unsigned long long)out->count, (unsigned long long)held);
    out->more = mrl_bool_optional(r, message, "more");
}

MRLEASE_API mrlease_status mrlease_ack_file(mrlease_conn *conn, const char *file) {
    if (!conn) return MRLEASE_ERR_INVALID_ARGUMENT;
    mrl_clear(conn);
    if (!file || !file_id_valid(file))
        return mrl_fail(conn, MRLEASE_ERR_INVALID_ARGUMENT, "ack: file \"%.64s\" is not major:minor:inode (pass the `file` of the "
                        "revoking-file event)", file ? file : "(NULL)");
    json_object *request = mrl_request("ack");
    if (request) json_object_object_add(request, "file", json_object_new_string(file));
    json_object *ignored = NULL;
    mrlease_status status = mrl_call(conn, "ack", request, NULL, 0, &ignored, NULL);
    json_object_put(ignored);
    return status;
}
