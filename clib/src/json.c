/* Reading replies and writing requests with json-c. A reader keeps the first problem and
 * turns it into MRLEASE_ERR_BAD_REPLY (or NO_MEMORY): no reply, however odd, aborts. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

json_object *mrl_field(json_object *object, const char *key) {
    json_object *value = NULL;
    if (!json_object_is_type(object, json_type_object) || !json_object_object_get_ex(object, key, &value)) return NULL;
    return json_object_is_type(value, json_type_null) ? NULL : value;
}

void mrl_bad(struct mrl_reader *r, const char *format, ...) {
    if (r->status) return;
    char detail[512];
    va_list args;
    va_start(args, format);
    vsnprintf(detail, sizeof detail, format, args);
    va_end(args);
    r->status = mrl_fail(r->conn, MRLEASE_ERR_BAD_REPLY, "%s reply: unreadable message from mrleased: %s", r->op, detail);
}

int mrl_as_u64(json_object *value, uint64_t *out) {
    /* json-c keeps integers above INT64_MAX as unsigned; get_int64 is negative only for a
     * negative number. */
    if (!json_object_is_type(value, json_type_int) || json_object_get_int64(value) < 0) return 0;
    *out = json_object_get_uint64(value);
    return 1;
}

uint64_t mrl_u64_optional(struct mrl_reader *r, json_object *object, const char *key, int *present) {
    json_object *value = mrl_field(object, key);
    uint64_t out = 0;
    *present = 0;
    if (!value || r->status) return 0;
    if (!mrl_as_u64(value, &out)) {
        mrl_bad(r, "\"%s\" is not an integer from 0 to 2^64-1", key);
        return 0;
    }
    *present = 1;
    return out;
}

uint64_t mrl_u64(struct mrl_reader *r, json_object *object, const char *key) {
    int present;
    uint64_t out = mrl_u64_optional(r, object, key, &present);
    if (!present) mrl_bad(r, "\"%s\" is missing", key);
    return out;
}

uint32_t mrl_u32(struct mrl_reader *r, json_object *object, const char *key) {
    uint64_t value = mrl_u64(r, object, key);
    if (value > UINT32_MAX) mrl_bad(r, "\"%s\" (%llu) is over 32 bits", key, (unsigned long long)value);
    return (uint32_t)value;
}

int mrl_bool(struct mrl_reader *r, json_object *object, const char *key) {
    json_object *value = mrl_field(object, key);
    if (!json_object_is_type(value, json_type_boolean)) {
        mrl_bad(r, "\"%s\" is missing or not a boolean", key);
        return 0;
    }
    return json_object_get_boolean(value);
}

int mrl_bool_optional(struct mrl_reader *r, json_object *object, const char *key) {
    return mrl_field(object, key) ? mrl_bool(r, object, key) : 0;
}

void *mrl_calloc(struct mrl_reader *r, size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p && !r->status) r->status = mrl_fail(r->conn, MRLEASE_ERR_NO_MEMORY, "%s reply: out of memory", r->op);
    return p;
}

static json_object *typed(struct mrl_reader *r, json_object *object, const char *key, int required, json_type type, const char *what) {
    json_object *value = mrl_field(object, key);
    if (r->status) return NULL;
    if (!value) {
        if (required) mrl_bad(r, "\"%s\" is missing", key);
        return NULL;
    }
    if (!json_object_is_type(value, type)) {
        mrl_bad(r, "\"%s\" is not %s", key, what);
        return NULL;
    }
    return value;
}

char *mrl_string(struct mrl_reader *r, json_object *object, const char *key, int required) {
    json_object *value = typed(r, object, key, required, json_type_string, "a string");
    if (!value) return NULL;
    char *copy = strndup(json_object_get_string(value), (size_t)json_object_get_string_len(value));
    if (!copy) r->status = mrl_fail(r->conn, MRLEASE_ERR_NO_MEMORY, "%s reply: out of memory", r->op);
    return copy;
}

json_object *mrl_array(struct mrl_reader *r, json_object *object, const char *key, int required) {
    return typed(r, object, key, required, json_type_array, "an array");
}

json_object *mrl_object(struct mrl_reader *r, json_object *object, const char *key, int required) {
    return typed(r, object, key, required, json_type_object, "an object");
}

static const char *const access_words[] = { "read", "write", "atomic" };

unsigned mrl_access(struct mrl_reader *r, json_object *object, const char *key) {
    json_object *array = mrl_array(r, object, key, 1);
    unsigned access = 0;
    for (size_t i = 0; array && i < json_object_array_length(array); i++) {
        const char *word = json_object_get_string(json_object_array_get_idx(array, i));
        unsigned bit = 0;
        for (unsigned k = 0; word && k < 3; k++)
            if (!strcmp(word, access_words[k])) bit = 1u << k;
        if (!bit) mrl_bad(r, "\"%s\" holds %s, not read, write or atomic", key, word ? word : "a non-string");
        access |= bit;
    }
    return access;
}

mrlease_strategy mrl_strategy(struct mrl_reader *r, json_object *object, const char *key) {
    char *word = mrl_string(r, object, key, 1);
    mrlease_strategy strategy = MRLEASE_STRATEGY_ANY;
    if (word && !strcmp(word, "odp")) strategy = MRLEASE_STRATEGY_ODP;
    else if (word && !strcmp(word, "pinned")) strategy = MRLEASE_STRATEGY_PINNED;
    else if (word) mrl_bad(r, "\"%s\" is %s, not odp or pinned", key, word);
    free(word);
    return strategy;
}

/* `layout` when present, else the older `layoutChanged` boolean. */
mrlease_layout mrl_layout(struct mrl_reader *r, json_object *object) {
    char *word = mrl_string(r, object, "layout", 0);
    mrlease_layout layout = MRLEASE_LAYOUT_UNKNOWN;
    if (!word) layout = mrl_bool(r, object, "layoutChanged") ? MRLEASE_LAYOUT_CHANGED : MRLEASE_LAYOUT_UNCHANGED;
    else if (!strcmp(word, "unchanged")) layout = MRLEASE_LAYOUT_UNCHANGED;
    else if (!strcmp(word, "changed")) layout = MRLEASE_LAYOUT_CHANGED;
    /* "unknown", and a word from a newer daemon: not known to be unchanged. */
    free(word);
    return layout;
}

json_object *mrl_request(const char *type) {
    json_object *request = json_object_new_object();
    if (!request) return NULL;
    mrl_add_u64(request, "v", MRLEASE_PROTOCOL_VERSION);
    json_object_object_add(request, "type", json_object_new_string(type));
    return request;
}

void mrl_add_u64(json_object *object, const char *key, uint64_t value) {
    json_object_object_add(object, key, json_object_new_uint64(value));
}

json_object *mrl_access_array(unsigned access) {
    json_object *array = json_object_new_array();
    for (unsigned k = 0; array && k < 3; k++)
        if (access & (1u << k)) json_object_array_add(array, json_object_new_string(access_words[k]));
    return array;
}
