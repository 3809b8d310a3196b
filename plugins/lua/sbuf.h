/* A growable byte buffer for the lua plugin (JSON text, JSONLex text
 * values).  Reused across messages: reset, never freed on the hot path.
 * Out of memory aborts, as everywhere in lexbusd (xmalloc). */
#ifndef LBL_SBUF_H
#define LBL_SBUF_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sbuf { char *p; size_t len, cap; };

static inline void sbuf_reserve(struct sbuf *b, size_t more)
{
    if (b->len + more <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) { fputs("lexbusd: out of memory\n", stderr); abort(); }
    b->p = p;
    b->cap = cap;
}
static inline void sbuf_add(struct sbuf *b, const char *p, size_t n)
{
    if (!n) return;
    sbuf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}
static inline void sbuf_addc(struct sbuf *b, char c) { sbuf_reserve(b, 1); b->p[b->len++] = c; }
#define sbuf_lit(b, s) sbuf_add((b), (s), sizeof(s) - 1)
static inline void sbuf_free(struct sbuf *b) { free(b->p); b->p = NULL; b->len = b->cap = 0; }
/* NUL-terminates without counting the NUL. */
static inline const char *sbuf_cstr(struct sbuf *b) { sbuf_reserve(b, 1); b->p[b->len] = 0; return b->p; }
#endif
