/*
 * liblexbus's frame writer: builds one outgoing frame (4-byte length + JSON)
 * in a scratch buffer the client reuses, so sending an EMIT, CALL or
 * RESPONSE allocates nothing once the buffer has grown to the largest
 * frame sent.  Only the caller's json_t values (payload, params, data,
 * context) go through jansson's encoder; the envelope is written directly.
 *
 * Errors are sticky: after an allocation failure every call is a no-op and
 * wb_finish returns -1, so callers check once.
 */
#ifndef LEXBUS_WIRE_H
#define LEXBUS_WIRE_H
#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

struct wbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

/* Starts a frame: room for the length, then "{". */
void wb_begin(struct wbuf *b);
/* Appends bytes as they are. */
void wb_raw(struct wbuf *b, const char *s, size_t n);
#define wb_lit(b, s) wb_raw((b), (s), sizeof(s) - 1)
/* Appends s as a JSON string (quoted, escaped). */
void wb_str(struct wbuf *b, const char *s);
/* Appends ,"key": (or "key": right after an opening brace).  key is a
 * member name of the protocol: written as is, not escaped. */
void wb_key(struct wbuf *b, const char *key);
/* Appends ,"key":"value". */
void wb_key_str(struct wbuf *b, const char *key, const char *value);
/* Appends any JSON value, compact; NULL is null. */
void wb_json(struct wbuf *b, const json_t *v);
/* Closes the object and writes the length.  Returns the frame's size
 * (header included), or -1 after any failure. */
long wb_finish(struct wbuf *b);
void wb_free(struct wbuf *b);

#endif
