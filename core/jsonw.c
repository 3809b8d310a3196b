#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <lexbus/plugin.h>
#include "jsonw.h"
#include "util.h"
#include "names.h"

void jw_init(struct jw *w, size_t cap)
{
    w->buf = xmalloc(cap);
    w->cap = cap;
    w->len = 0;
}

void jw_free(struct jw *w) { free(w->buf); w->buf = NULL; w->cap = w->len = 0; }

void jw_reserve(struct jw *w, size_t more)
{
    size_t need = w->len + more;
    if (need <= w->cap) return;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < need) cap *= 2;
    w->buf = xrealloc(w->buf, cap);
    w->cap = cap;
}

void jw_str(struct jw *w, const char *p, size_t n)
{
    jw_reserve(w, n * 6 + 2);
    w->len += json_escape(w->buf + w->len, p, n);
}

void jw_cstr(struct jw *w, const char *s) { jw_str(w, s, strlen(s)); }

void jw_u64(struct jw *w, uint64_t v)
{
    char tmp[24];
    int i = 24;
    do { tmp[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    jw_raw(w, tmp + i, (size_t)(24 - i));
}

void jw_error_object(struct jw *w, const char *code, const char *msg, long long retry_after_ms)
{
    jw_lit(w, "{\"code\":");
    jw_cstr(w, code);
    jw_lit(w, ",\"message\":");
    jw_str(w, msg, strnlen(msg, 1024));   /* messages are for people: bounded */
    if (retry_after_ms >= 0) { jw_lit(w, ",\"retryAfterMs\":"); jw_i64(w, retry_after_ms); }
    jw_lit(w, "}");
}

void jw_i64(struct jw *w, int64_t v)
{
    if (v < 0) { jw_lit(w, "-"); jw_u64(w, (uint64_t)0 - (uint64_t)v); }
    else jw_u64(w, (uint64_t)v);
}

/* ---- the same for plugins (struct lb_jw of plugin.h) ---------------- */

struct lb_jw { struct jw w; };

struct lb_jw *lb_jw_new(void)
{
    struct lb_jw *w = xcalloc(1, sizeof *w);
    jw_init(&w->w, 256);
    return w;
}

void lb_jw_free(struct lb_jw *w)
{
    if (!w) return;
    jw_free(&w->w);
    free(w);
}

void lb_jw_reset(struct lb_jw *w) { jw_reset(&w->w); }
void lb_jw_raw(struct lb_jw *w, const char *p, size_t n) { jw_raw(&w->w, p, n); }
void lb_jw_str(struct lb_jw *w, const char *p, size_t n) { jw_str(&w->w, p, n); }
void lb_jw_int(struct lb_jw *w, long long v) { jw_i64(&w->w, v); }
const char *lb_jw_data(const struct lb_jw *w, size_t *len)
{
    if (len) *len = w->w.len;
    return w->w.buf;
}

