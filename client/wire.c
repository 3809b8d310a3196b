/*
 * liblexbus's frame writer (see wire.h).
 */
#include "config.h"
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "wire.h"
#include "names.h"

#define HEADER 4

static bool reserve(struct wbuf *b, size_t more)
{
    if (b->failed) return false;
    if (b->len + more <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + more) {
        if (cap > SIZE_MAX / 2) { b->failed = true; return false; }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) { b->failed = true; return false; }
    b->p = p;
    b->cap = cap;
    return true;
}

void wb_begin(struct wbuf *b)
{
    b->len = 0;
    b->failed = false;
    if (reserve(b, HEADER + 1)) {
        b->len = HEADER;
        b->p[b->len++] = '{';
    }
}

void wb_raw(struct wbuf *b, const char *s, size_t n)
{
    if (!reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* JSON string of n bytes (may hold NUL, which becomes \u0000), written by
 * the escaper the daemon uses (core/names.c). */
static void wb_strn(struct wbuf *b, const char *s, size_t n)
{
    if (n > (SIZE_MAX - 2) / 6 || !reserve(b, 2 + 6 * n)) { b->failed = true; return; }   /* worst case: \u00XX */
    b->len += json_escape(b->p + b->len, s, n);
}

void wb_str(struct wbuf *b, const char *s)
{
    wb_strn(b, s, strlen(s));
}

void wb_key(struct wbuf *b, const char *key)
{
    /* Keys are the library's own names: nothing to escape. */
    size_t n = strlen(key);
    if (!reserve(b, n + 4)) return;
    char *o = b->p + b->len;
    if (o[-1] != '{') *o++ = ',';   /* a member follows another unless it opens its object */
    *o++ = '"';
    memcpy(o, key, n);
    o += n;
    *o++ = '"';
    *o++ = ':';
    b->len = (size_t)(o - b->p);
}

void wb_key_str(struct wbuf *b, const char *key, const char *value)
{
    wb_key(b, key);
    wb_str(b, value);
}

void wb_json(struct wbuf *b, const json_t *v)
{
    if (!v) { wb_lit(b, "null"); return; }
    if (b->failed) return;
    if (json_is_string(v)) {   /* the common payload: skip jansson's encoder */
        wb_strn(b, json_string_value(v), json_string_length(v));
        return;
    }
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    size_t room = b->cap - b->len;
    size_t need = json_dumpb(v, b->p + b->len, room, flags);
    if (need == 0) { b->failed = true; return; }   /* not encodable (NaN, ...) */
    if (need > room) {
        /* json_dumpb reports the size it needs: grow once and encode again. */
        if (!reserve(b, need)) return;
        need = json_dumpb(v, b->p + b->len, need, flags);
        if (need == 0) { b->failed = true; return; }
    }
    b->len += need;
}

long wb_finish(struct wbuf *b)
{
    wb_lit(b, "}");
    if (b->failed || b->len - HEADER > UINT32_MAX) return -1;
    uint32_t be = htonl((uint32_t)(b->len - HEADER));
    memcpy(b->p, &be, HEADER);
    return (long)b->len;
}

void wb_free(struct wbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
