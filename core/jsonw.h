/* A reusable output buffer for building JSON frames without allocating per
 * message: the router keeps one and resets it for each frame it builds. */
#ifndef LB_JSONW_H
#define LB_JSONW_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct jw { char *buf; size_t len, cap; };

void jw_init(struct jw *w, size_t cap);
void jw_free(struct jw *w);
void jw_reserve(struct jw *w, size_t more);
static inline void jw_reset(struct jw *w) { w->len = 0; }
static inline void jw_raw(struct jw *w, const char *p, size_t n)
{
    if (w->len + n > w->cap) jw_reserve(w, n);
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}
#define jw_lit(w, s) jw_raw((w), (s), sizeof(s) - 1)
/* Writes a quoted JSON string, escaping as needed. */
void jw_str(struct jw *w, const char *p, size_t n);
void jw_cstr(struct jw *w, const char *s);
void jw_i64(struct jw *w, int64_t v);
/* The error object of an ERROR or an error RESPONSE:
 * {"code":...,"message":...[,"retryAfterMs":n]} (retry < 0: left out). */
void jw_error_object(struct jw *w, const char *code, const char *msg, long long retry_after_ms);
void jw_u64(struct jw *w, uint64_t v);
#endif
