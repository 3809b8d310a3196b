#include "config.h"
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "codec_msgpack.h"
#include "envelope.h"
#include "jsontext.h"

/* msgpack-c's unpacker keeps one stack entry per open container: room for
 * our own limit plus the root, so that our callback refuses first. */
#define MSGPACK_EMBED_STACK_SIZE (ENV_MAX_DEPTH + 1)
#include <msgpack/unpack.h>
#include <msgpack/unpack_define.h>
#include <limits.h>
#include <msgpack/timestamp.h>

/* ---- output buffer ------------------------------------------------- */

/* Room for `need` more bytes at out->len, of which `base` marks where this
 * conversion began and `limit` bounds what it may append.  Grows by
 * doubling: the size follows what was written, never what the input
 * claims. */
static enum mp_status out_reserve(struct jw *o, size_t base, size_t limit, size_t need)
{
    if (o->len - base > limit || need > limit - (o->len - base)) return MP_TOO_LARGE;
    if (o->len + need <= o->cap) return MP_OK;
    size_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + need) cap *= 2;
    char *p = realloc(o->buf, cap);
    if (!p) return MP_NOMEM;
    o->buf = p;
    o->cap = cap;
    return MP_OK;
}

static void say(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *err, size_t errlen, const char *fmt, ...)
{
    if (!errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Numbers must not follow the application's locale (liblexbus runs inside
 * programs that may call setlocale): "1,5" is not JSON. */
static locale_t g_c_locale;
static pthread_once_t g_c_locale_once = PTHREAD_ONCE_INIT;
static void c_locale_init(void) { g_c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }
static locale_t c_locale(void)
{
    pthread_once(&g_c_locale_once, c_locale_init);
    return g_c_locale;
}

/* Shortest text that reads back as the same double, always marked as a
 * float ("2.0", not "2"), so a round trip keeps the kind. */
static size_t format_double(double d, char *buf, size_t len)
{
    locale_t old = uselocale(c_locale());
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, len, "%.*g", prec, d);
        if (prec == 17 || strtod_l(buf, NULL, c_locale()) == d) break;
    }
    uselocale(old);
    if (!strpbrk(buf, ".eE")) { memcpy(buf + n, ".0", 3); n += 2; }
    return (size_t)n;
}

static size_t format_u64(uint64_t v, char *buf)
{
    char tmp[20];
    size_t n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
    return n;
}

/* memcpy for the short runs that dominate (keys, names): one 16-byte
 * move when both buffers have 16 bytes of room from there (the extra
 * bytes land in room that later writes cover), else memcpy. */
static inline void copy_run(char *dst, const char *dst_end, const void *src, const void *src_end, size_t n)
{
#if defined(__SSE2__)
    if (n <= 16 && dst_end - dst >= 16 && (const char *)src_end - (const char *)src >= 16) {
        _mm_storeu_si128((__m128i *)dst, _mm_loadu_si128((const __m128i *)src));
        return;
    }
#else
    (void)dst_end; (void)src_end;
#endif
    memcpy(dst, src, n);
}

/* Where output goes: a write pointer and the end of the room for it (the
 * buffer's capacity or the limit, whichever comes first), kept out of the
 * `struct jw` so the hot paths check one pointer. */
struct cursor {
    char *o, *oend;
    struct jw *w;               /* NULL: a fixed scratch buffer (headers packed aside) */
    size_t base, limit;         /* w->len at the start; what may be appended */
};

static char *room_end(const struct jw *w, size_t base, size_t limit)
{
    size_t used = w->len - base, room = w->cap - w->len;
    return w->buf + w->len + (limit - used < room ? limit - used : room);
}

static void cur_init(struct cursor *c, struct jw *w, size_t limit)
{
    c->w = w;
    c->base = w->len;
    c->limit = limit;
    c->o = c->oend = w->buf ? w->buf + w->len : NULL;
    if (w->buf) c->oend = room_end(w, c->base, limit);
}

/* Slow path of every write: n bytes do not fit in the room left. */
static enum mp_status cur_grow(struct cursor *c, size_t n)
{
    struct jw *w = c->w;
    if (!w) return MP_TOO_LARGE;
    if (w->buf) w->len = (size_t)(c->o - w->buf);
    enum mp_status st = out_reserve(w, c->base, c->limit, n);
    if (st != MP_OK) return st;
    c->o = w->buf + w->len;
    c->oend = room_end(w, c->base, c->limit);
    return MP_OK;
}

static inline enum mp_status cur_put(struct cursor *c, const void *s, size_t n)
{
    if ((size_t)(c->oend - c->o) < n) {
        enum mp_status st = cur_grow(c, n);
        if (st != MP_OK) return st;
    }
    memcpy(c->o, s, n);
    c->o += n;
    return MP_OK;
}

/* The output so far, for the caller (out->len). */
static void cur_done(struct cursor *c)
{
    if (c->w && c->w->buf) c->w->len = (size_t)(c->o - c->w->buf);
}

/* ---- MessagePack -> JSON -------------------------------------------- */

struct mp_level {
    uint32_t left;      /* elements (array) or pairs (map) still to come */
    bool map;
    bool key;           /* map: the next value is a key */
    bool first;
};

/* The envelope of the JSON being written, built as envelope_parse would
 * build it from that text (mp_to_json_indexed): the members of a root
 * map are noted as they are written, their values' places as offsets
 * into the output (it may move), pointers once it is done. */
struct mp_idx {
    struct envelope *e;         /* NULL: no index wanted */
    uint32_t off[F__COUNT];     /* of each known member's value text, from the frame's start */
    size_t vstart;              /* of the root member being written */
    int field;                  /* its field, or -1 */
    uint8_t vkind, vesc;        /* its value's kind; a str value needed escapes */
    bool root_map;
    bool escaped_name;          /* some root member name needed escapes */
    bool dup;                   /* a known member came twice: nothing more is noted */
};

struct mp_dec {
    struct cursor c;
    const unsigned char *in_end;
    size_t len;                 /* input size: bounds the elements it can hold */
    uint64_t claimed;           /* elements announced by every container so far */
    int depth;
    enum mp_status status;      /* the first problem */
    bool stopped;               /* a callback ended decoding */
    char *err;
    size_t errlen;
    struct mp_level st[ENV_MAX_DEPTH];
    struct mp_idx ix;
};

static int stop(struct mp_dec *d, enum mp_status st)
{
    d->stopped = true;
    if (d->status == MP_OK || d->status == MP_NO_JSON) d->status = st;
    if (st == MP_TOO_LARGE) say(d->err, d->errlen, "msgpack: the message is more than %zu bytes as JSON", d->c.limit);
    if (st == MP_NOMEM) say(d->err, d->errlen, "msgpack: out of memory");
    return -1;
}

/* A value JSON cannot carry: remembered (the first one is reported), and
 * decoding goes on with null in its place so the message can be answered. */
static void no_json(struct mp_dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void no_json(struct mp_dec *d, const char *fmt, ...)
{
    if (d->status != MP_OK) return;
    d->status = MP_NO_JSON;
    if (!d->errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, d->errlen, fmt, ap);
    va_end(ap);
}

static int grow(struct mp_dec *d, size_t n)
{
    enum mp_status st = cur_grow(&d->c, n);
    return st == MP_OK ? 0 : stop(d, st);
}

static inline int put(struct mp_dec *d, const char *s, size_t n)
{
    if ((size_t)(d->c.oend - d->c.o) < n && grow(d, n)) return -1;
    memcpy(d->c.o, s, n);
    d->c.o += n;
    return 0;
}

static inline int put1(struct mp_dec *d, char c)
{
    if (d->c.o == d->c.oend && grow(d, 1)) return -1;
    *d->c.o++ = c;
    return 0;
}

enum { V_VALUE, V_KEY, V_KEY_REPLACED };

/* Before each value: the separator its container needs, and the rule that
 * map keys are strings.  `kind` names a non-string value (NULL for str);
 * a key of another scalar kind is replaced by "" so decoding can go on. */
static inline int begin_value(struct mp_dec *d, const char *kind, bool container, uint8_t jkind)
{
    if (d->depth == 0) return V_VALUE;
    struct mp_level *l = &d->st[d->depth - 1];
    bool key = l->map && l->key;
    if (!l->first && (key || !l->map) && put1(d, ',')) return -1;
    l->first = false;
    if (!key) {
        if (d->depth == 1 && d->ix.e && l->map) {
            d->ix.vstart = (size_t)(d->c.o - d->c.w->buf);
            d->ix.vkind = jkind;
            d->ix.vesc = 0;
        }
        return V_VALUE;
    }
    if (!kind) return V_KEY;
    d->ix.field = -1;   /* a key replaced by "" (or decoding stops) */
    no_json(d, "msgpack: a map key is %s; JSON object keys are strings", kind);
    if (container) return stop(d, MP_NO_JSON);
    l->key = false;
    return put(d, "\"\":", 3) ? -1 : V_KEY_REPLACED;
}

/* A root member's value ends at the output's end: noted, as
 * envelope_parse notes it (the first of two known members stops it). */
static void idx_member(struct mp_dec *d)
{
    struct mp_idx *x = &d->ix;
    if (x->dup) return;
    struct env_val *f = &x->e->f[x->field];
    if (f->kind != J_NONE) { x->dup = true; return; }
    size_t n = (size_t)(d->c.o - d->c.w->buf) - x->vstart;
    f->kind = x->vkind;
    f->escaped = x->vesc;
    f->n = (uint32_t)(x->vkind == J_STRING ? n - 2 : n);
    x->off[x->field] = (uint32_t)(x->vstart - d->c.base);
    x->e->present |= 1u << x->field;
}

/* After a value: count it, and close every container it completes. */
static inline int end_value(struct mp_dec *d)
{
    while (d->depth) {
        struct mp_level *l = &d->st[d->depth - 1];
        if (d->depth == 1 && d->ix.field >= 0 && l->map) idx_member(d);   /* field: only when indexing */
        l->key = l->map;
        if (--l->left) return 0;
        if (put1(d, l->map ? '}' : ']')) return -1;
        d->depth--;
    }
    return 0;
}

static inline int scalar(struct mp_dec *d, const char *kind, uint8_t jkind, const char *text, size_t n)
{
    int r = begin_value(d, kind, false, jkind);
    if (r < 0) return -1;
    if (r == V_KEY_REPLACED) return 0;
    return put(d, text, n) ? -1 : end_value(d);
}

static int integer(struct mp_dec *d, bool neg, uint64_t mag)
{
    char buf[24];
    size_t n = 0;
    if (neg) buf[n++] = '-';
    n += format_u64(mag, buf + n);
    return scalar(d, "an integer", J_NUMBER, buf, n);
}

static int number(struct mp_dec *d, double v)
{
    if (isnan(v) || isinf(v)) {
        no_json(d, "msgpack: %s has no JSON equivalent", isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return scalar(d, "a float", J_NULL, "null", 4);
    }
    char buf[40];
    return scalar(d, "a float", J_NUMBER, buf, format_double(v, buf, sizeof buf));
}

/* Bytes of p[0..n) a JSON string can carry as they are (printable ASCII
 * but '"' and '\\'), up to the first that needs a look.  16 at a time,
 * reading up to 15 bytes past n when the input goes on that far. */
static inline size_t plain_run(const unsigned char *p, size_t n, const unsigned char *in_end)
{
    size_t k = 0;
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    while (in_end - (p + k) >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + k));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)), _mm_cmplt_epi8(v, space)));
        if (mask) { k += (unsigned)__builtin_ctz(mask); return k < n ? k : n; }
        if ((k += 16) >= n) return n;
    }
#else
    (void)in_end;
#endif
    while (k < n && p[k] >= 0x20 && p[k] < 0x80 && p[k] != '"' && p[k] != '\\') k++;
    return k;
}

/* A str as a JSON string: escaped, and checked to be UTF-8.  The room for
 * n + 2 bytes is made once; only escapes (up to 6 bytes for 1) need more.
 * Returns 1 when escapes were written, 0 when none were, -1 on failure. */
static inline int put_string(struct mp_dec *d, const char *s, size_t n)
{
    if (n == 0) return put(d, "\"\"", 2);   /* s may be NULL then (msgpack-c) */
    if ((size_t)(d->c.oend - d->c.o) < n + 2 && grow(d, n + 2)) return -1;
    size_t start = (size_t)(d->c.o - d->c.w->buf);
    *d->c.o++ = '"';
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    int escaped = 0;
    while (p < end) {
        /* Invariant: the room holds what is left of the input, plus 1. */
        size_t k = plain_run(p, (size_t)(end - p), d->in_end);
        copy_run(d->c.o, d->c.oend, p, d->in_end, k);
        d->c.o += k;
        p += k;
        if (p == end) break;
        if (*p >= 0x80) {
            size_t u = utf8_seq(p, end);
            if (!u) {
                no_json(d, "msgpack: a str is not valid UTF-8 (JSON text is UTF-8)");
                d->c.o = d->c.w->buf + start;
                return put(d, "\"\"", 2);
            }
            memcpy(d->c.o, p, u);
            d->c.o += u;
            p += u;
            continue;
        }
        if ((size_t)(d->c.oend - d->c.o) < (size_t)(end - p) + 6 && grow(d, (size_t)(end - p) + 6)) return -1;
        escaped = 1;
        static const char hex[] = "0123456789abcdef";
        unsigned char c = *p++;
        char *o = d->c.o;
        o[0] = '\\';
        if (c == '"' || c == '\\') { o[1] = (char)c; d->c.o += 2; }
        else if (c == '\n') { o[1] = 'n'; d->c.o += 2; }
        else if (c == '\r') { o[1] = 'r'; d->c.o += 2; }
        else if (c == '\t') { o[1] = 't'; d->c.o += 2; }
        else { memcpy(o + 1, "u00", 3); o[4] = hex[c >> 4]; o[5] = hex[c & 15]; d->c.o += 6; }
    }
    *d->c.o++ = '"';
    return escaped;
}

/* The callbacks msgpack-c's unpacker template calls, in document order:
 * one per scalar, one at the start of each container.  Returning -1 stops
 * it.  The template's object (*o) carries nothing for us: set to 0. */
typedef int lbmp_obj;
#define msgpack_unpack_struct(name) struct lbmp ## name
#define msgpack_unpack_func(ret, name) static inline ret lbmp ## name
#define msgpack_unpack_callback(name) lbmp_cb ## name
#define msgpack_unpack_object lbmp_obj
#define msgpack_unpack_user struct mp_dec *

static inline lbmp_obj lbmp_cb_root(struct mp_dec **u) { (void)u; return 0; }
static inline int lbmp_cb_uint8(struct mp_dec **u, uint8_t v, lbmp_obj *o) { *o = 0; return integer(*u, false, v); }
static inline int lbmp_cb_uint16(struct mp_dec **u, uint16_t v, lbmp_obj *o) { *o = 0; return integer(*u, false, v); }
static inline int lbmp_cb_uint32(struct mp_dec **u, uint32_t v, lbmp_obj *o) { *o = 0; return integer(*u, false, v); }
static inline int lbmp_cb_uint64(struct mp_dec **u, uint64_t v, lbmp_obj *o) { *o = 0; return integer(*u, false, v); }
static inline int lbmp_signed(struct mp_dec *d, int64_t v)
{
    return v < 0 ? integer(d, true, (uint64_t)0 - (uint64_t)v) : integer(d, false, (uint64_t)v);
}
static inline int lbmp_cb_int8(struct mp_dec **u, int8_t v, lbmp_obj *o) { *o = 0; return lbmp_signed(*u, v); }
static inline int lbmp_cb_int16(struct mp_dec **u, int16_t v, lbmp_obj *o) { *o = 0; return lbmp_signed(*u, v); }
static inline int lbmp_cb_int32(struct mp_dec **u, int32_t v, lbmp_obj *o) { *o = 0; return lbmp_signed(*u, v); }
static inline int lbmp_cb_int64(struct mp_dec **u, int64_t v, lbmp_obj *o) { *o = 0; return lbmp_signed(*u, v); }
static inline int lbmp_cb_float(struct mp_dec **u, float v, lbmp_obj *o) { *o = 0; return number(*u, v); }
static inline int lbmp_cb_double(struct mp_dec **u, double v, lbmp_obj *o) { *o = 0; return number(*u, v); }
static inline int lbmp_cb_nil(struct mp_dec **u, lbmp_obj *o) { *o = 0; return scalar(*u, "nil", J_NULL, "null", 4); }
static inline int lbmp_cb_true(struct mp_dec **u, lbmp_obj *o) { *o = 0; return scalar(*u, "a boolean", J_TRUE, "true", 4); }
static inline int lbmp_cb_false(struct mp_dec **u, lbmp_obj *o) { *o = 0; return scalar(*u, "a boolean", J_FALSE, "false", 5); }

static inline int container(struct mp_dec *d, unsigned n, bool map)
{
    if (begin_value(d, map ? "a map" : "an array", true, map ? J_OBJECT : J_ARRAY) < 0) return -1;
    if (d->depth == ENV_MAX_DEPTH) {
        say(d->err, d->errlen, "msgpack: nesting deeper than %d levels", ENV_MAX_DEPTH);
        return stop(d, MP_MALFORMED);
    }
    if (d->depth == 0) d->ix.root_map = map;
    /* Every element takes at least one byte: a count the input cannot hold
     * is a lie, refused now rather than at the end of the input. */
    d->claimed += map ? 2ull * n : n;
    if (d->claimed > d->len) {
        say(d->err, d->errlen, "msgpack: %s claims %u %s, more than a %zu-byte frame can hold",
            map ? "a map" : "an array", n, map ? "pairs" : "elements", d->len);
        return stop(d, MP_MALFORMED);
    }
    if (n == 0) return put(d, map ? "{}" : "[]", 2) ? -1 : end_value(d);
    if (put1(d, map ? '{' : '[')) return -1;
    d->st[d->depth++] = (struct mp_level){ .left = n, .map = map, .key = map, .first = true };
    return 0;
}

static inline int lbmp_cb_array(struct mp_dec **u, unsigned n, lbmp_obj *o) { *o = 0; return container(*u, n, false); }
static inline int lbmp_cb_map(struct mp_dec **u, unsigned n, lbmp_obj *o) { *o = 0; return container(*u, n, true); }
/* Items are counted by begin_value/end_value; the template's own
 * bookkeeping needs nothing from us. */
static inline int lbmp_cb_array_item(struct mp_dec **u, lbmp_obj *c, lbmp_obj o) { (void)u; (void)c; (void)o; return 0; }
static inline int lbmp_cb_map_item(struct mp_dec **u, lbmp_obj *c, lbmp_obj k, lbmp_obj v)
{
    (void)u; (void)c; (void)k; (void)v;
    return 0;
}

/* A str of the root map, key or value, just written (esc: with escapes)
 * when indexing: noted. */
static int root_str(struct mp_dec *d, int r, bool esc, const char *p, unsigned n)
{
    if (r == V_KEY) {
        d->ix.field = esc ? -1 : env_field_of(p, n);
        d->ix.escaped_name |= esc;
        d->st[0].key = false;
        return put1(d, ':');
    }
    d->ix.vesc = esc;
    return end_value(d);
}

static inline int lbmp_cb_str(struct mp_dec **u, const char *b, const char *p, unsigned n, lbmp_obj *o)
{
    (void)b;
    *o = 0;
    struct mp_dec *d = *u;
    int r = begin_value(d, NULL, false, J_STRING);
    if (r < 0) return -1;
    int esc = put_string(d, p, n);
    if (esc < 0) return -1;
    if (d->depth == 1 && d->ix.e) return root_str(d, r, esc, p, n);
    if (r == V_KEY) {
        d->st[d->depth - 1].key = false;
        return put1(d, ':');
    }
    return end_value(d);
}

static inline int lbmp_cb_bin(struct mp_dec **u, const char *b, const char *p, unsigned n, lbmp_obj *o)
{
    (void)b; (void)p;
    *o = 0;
    no_json(*u, "msgpack: bin (%u bytes) has no JSON equivalent (send bytes as a base64 str)", n);
    return scalar(*u, "bin", J_NULL, "null", 4);
}

/* `n` counts the type byte too.  It is 0 only when an ext32 claimed
 * 0xffffffff bytes: msgpack-c's length + 1 wraps, and would go on reading
 * the data as the next value. */
static inline int lbmp_cb_ext(struct mp_dec **u, const char *b, const char *p, unsigned n, lbmp_obj *o)
{
    (void)b;
    *o = 0;
    struct mp_dec *d = *u;
    if (n == 0) {
        say(d->err, d->errlen, "msgpack: an ext32 claims 4 GiB, more than a %zu-byte frame can hold", d->len);
        return stop(d, MP_MALFORMED);
    }
    if ((int8_t)p[0] == -1)
        no_json(d, "msgpack: a timestamp (ext type -1) has no JSON equivalent (send epoch milliseconds or an ISO 8601 str)");
    else
        no_json(d, "msgpack: ext type %d (%u bytes) has no JSON equivalent", (int8_t)p[0], n - 1);
    return scalar(d, "ext", J_NULL, "null", 4);
}

#include <msgpack/unpack_template.h>

/* The index's last step: pointers into the output, and envelope_parse's
 * verdict on it. */
static enum env_status idx_finish(struct mp_idx *x, const struct jw *out, size_t base, const char **why)
{
    struct envelope *e = x->e;
    e->frame = out->buf + base;
    e->len = out->len - base;
    if (!x->root_map) return env_not_object(why);
    for (uint32_t b = e->present; b; b &= b - 1) {
        int f = __builtin_ctz(b);
        e->f[f].p = e->frame + x->off[f] + (e->f[f].kind == J_STRING ? 1 : 0);
    }
    return x->dup ? env_duplicate(e, why) : env_complete(e, x->escaped_name, why);
}

static enum mp_status decode(const char *in, size_t len, struct jw *out, size_t limit,
                             char *err, size_t errlen, struct envelope *e,
                             enum env_status *est, const char **ewhy)
{
    struct mp_dec d;
    d.ix.e = e;
    d.ix.field = -1;
    d.ix.vkind = d.ix.vesc = 0;
    d.ix.root_map = d.ix.escaped_name = d.ix.dup = false;
    if (e) {
        memset(e->f, 0, sizeof e->f);
        e->present = 0;
        e->type = LB_MSG_UNKNOWN;
    }
    cur_init(&d.c, out, limit);
    d.len = len;
    d.in_end = (const unsigned char *)in + len;
    d.claimed = 0;
    d.depth = 0;
    d.status = MP_OK;
    d.stopped = false;
    d.err = err;
    d.errlen = errlen;
    if (errlen) err[0] = 0;
    /* Room for the usual JSON size at once (a little more than the input). */
    size_t guess = len + len / 4 + 16;
    if ((size_t)(d.c.oend - d.c.o) < guess && grow(&d, guess < limit ? guess : limit ? limit : 1)) return d.status;
    struct lbmp_context ctx;
    lbmp_init(&ctx);
    ctx.user = &d;
    size_t off = 0;
    int r = lbmp_execute(&ctx, in, len, &off);
    cur_done(&d.c);
    if (r < 0 && d.stopped) return d.status;
    if (r < 0) {
        /* Only 0xc1, the one byte MessagePack leaves unused, gets here. */
        say(err, errlen, "msgpack: byte 0x%02x at offset %zu is not a MessagePack type", (unsigned char)in[off], off);
        return MP_MALFORMED;
    }
    if (r == 0) {
        say(err, errlen, "msgpack: truncated: the frame ends inside a value (%zu bytes; a length or count runs past the end)", len);
        return MP_MALFORMED;
    }
    if (off != len) {
        say(err, errlen, "msgpack: %zu bytes after the end of the message", len - off);
        return MP_MALFORMED;
    }
    if (e && d.status == MP_OK) *est = idx_finish(&d.ix, out, d.c.base, ewhy);
    return d.status;
}

enum mp_status mp_to_json(const char *in, size_t len, struct jw *out, size_t limit,
                          char *err, size_t errlen)
{
    return decode(in, len, out, limit, err, errlen, NULL, NULL, NULL);
}

enum mp_status mp_to_json_indexed(const char *in, size_t len, struct jw *out, size_t limit,
                                  char *err, size_t errlen, struct envelope *e,
                                  enum env_status *est, const char **ewhy)
{
    return decode(in, len, out, limit, err, errlen, e, est, ewhy);
}

/* ---- JSON -> MessagePack -------------------------------------------- */

struct mp_enc {
    const char *start, *p, *end;
    struct cursor c;
    enum mp_status st;
    char *err;
    size_t errlen;
};

static int enc_fail(struct mp_enc *e, enum mp_status st)
{
    if (e->st == MP_OK) e->st = st;
    return -1;
}

static int enc_grow(struct mp_enc *e, size_t n)
{
    enum mp_status st = cur_grow(&e->c, n);
    return st == MP_OK ? 0 : enc_fail(e, st);
}

static inline int enc_put(struct mp_enc *e, const void *buf, size_t n)
{
    enum mp_status st = cur_put(&e->c, buf, n);
    return st == MP_OK ? 0 : enc_fail(e, st);
}

/* msgpack-c's packer, instantiated from its template with our buffer as
 * the sink (its own msgpack_packer writes through a function pointer per
 * piece: a call for every header). */
#define msgpack_pack_inline_func(name) static inline int lbpk ## name
#define msgpack_pack_inline_func_cint(name) static inline int lbpk ## name
#define msgpack_pack_inline_func_fixint(name) static inline int lbpk_fix ## name
#define msgpack_pack_user struct mp_enc *
#define msgpack_pack_append_buffer(user, buf, len) return enc_put(user, buf, len)
#define msgpack_pack_ext lbpk_ext
#include <msgpack/pack_template.h>
#undef msgpack_pack_ext

/* The header a container or str of `n` gets, packed aside. */
struct hdr { char b[8]; size_t n; };
static void pack_header(struct hdr *h, int kind, size_t n)
{
    struct mp_enc hp = { .c = { .o = h->b, .oend = h->b + sizeof h->b } };
    if (kind == 'm') lbpk_map(&hp, n);
    else if (kind == 'a') lbpk_array(&hp, n);
    else lbpk_str(&hp, n);
    h->n = (size_t)(hp.c.o - h->b);
}

/* Replaces the `room` bytes reserved at offset `at` with h, moving what
 * follows them. */
static int place_header(struct mp_enc *e, size_t at, size_t room, const struct hdr *h)
{
    if (h->n > room && (size_t)(e->c.oend - e->c.o) < h->n - room && enc_grow(e, h->n - room)) return -1;
    char *base = e->c.w->buf;
    memmove(base + at + h->n, base + at + room, (size_t)(e->c.o - base) - at - room);
    memcpy(base + at, h->b, h->n);
    e->c.o = e->c.o - room + h->n;
    return 0;
}

static int bad_json(struct mp_enc *e)
{
    if (e->st == MP_OK) {
        e->st = MP_MALFORMED;
        say(e->err, e->errlen, "json: not valid JSON at offset %zu", (size_t)(e->p - e->start));
    }
    return -1;
}

static inline void skip_ws(struct mp_enc *e)
{
    while (e->p < e->end && (*e->p == ' ' || *e->p == '\n' || *e->p == '\r' || *e->p == '\t')) e->p++;
}

static int hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (x < 0) return -1;
        *v = *v << 4 | (unsigned)x;
    }
    return 0;
}

static size_t utf8_put(unsigned cp, char *o)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* One escape at e->p (just past the backslash) into o; returns its UTF-8
 * length, or 0 for a bad escape.  A surrogate that is not half of a pair
 * has no UTF-8 form: it becomes U+FFFD. */
static size_t unescape(struct mp_enc *e, char *o)
{
    if (e->p >= e->end) return 0;
    char c = *e->p++;
    switch (c) {
    case '"': case '\\': case '/': *o = c; return 1;
    case 'b': *o = '\b'; return 1;
    case 'f': *o = '\f'; return 1;
    case 'n': *o = '\n'; return 1;
    case 'r': *o = '\r'; return 1;
    case 't': *o = '\t'; return 1;
    case 'u': break;
    default: return 0;
    }
    unsigned cp, lo;
    if (e->end - e->p < 4 || hex4(e->p, &cp)) return 0;
    e->p += 4;
    if (cp >= 0xD800 && cp <= 0xDBFF && e->end - e->p >= 6 && e->p[0] == '\\' && e->p[1] == 'u' &&
        hex4(e->p + 2, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
        e->p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    } else if (cp >= 0xD800 && cp <= 0xDFFF) {
        cp = 0xFFFD;
    }
    return utf8_put(cp, o);
}

/* The first '"' or '\\' from s on (16 bytes at a time), or end: in valid
 * JSON text nothing else in a string needs attention. */
static inline const char *quote_or_escape(const char *s, const char *end)
{
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    while (end - s >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)s);
        int mask = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)));
        if (mask) return s + __builtin_ctz((unsigned)mask);
        s += 16;
    }
#endif
    while (s < end && *s != '"' && *s != '\\') s++;
    return s;
}

/* Escapes: decoded behind a str32-sized hole, then the real header. */
static int enc_escaped_string(struct mp_enc *e)
{
    size_t at = (size_t)(e->c.o - e->c.w->buf);
    if (enc_put(e, "\0\0\0\0\0", 5)) return -1;
    while (e->p < e->end && *e->p != '"') {
        const char *run = e->p;
        e->p = quote_or_escape(e->p, e->end);
        if (enc_put(e, run, (size_t)(e->p - run))) return -1;
        if (e->p < e->end && *e->p == '\\') {
            char u[4];
            e->p++;
            size_t n = unescape(e, u);
            if (!n) return bad_json(e);
            if (enc_put(e, u, n)) return -1;
        }
    }
    if (e->p >= e->end) return bad_json(e);
    e->p++;
    struct hdr h;
    pack_header(&h, 's', (size_t)(e->c.o - e->c.w->buf) - at - 5);
    return place_header(e, at, 5, &h);
}

static int enc_number(struct mp_enc *e)
{
    const char *s = e->p;
    bool neg = *e->p == '-', integral = true;
    if (neg) e->p++;
    uint64_t mag = 0;
    bool overflow = false;
    const char *digits = e->p;
    while (e->p < e->end && *e->p >= '0' && *e->p <= '9') {
        unsigned dg = (unsigned)(*e->p++ - '0');
        if (mag > (UINT64_MAX - dg) / 10) overflow = true;
        else mag = mag * 10 + dg;
    }
    if (e->p == digits) return bad_json(e);
    while (e->p < e->end && (*e->p == '.' || *e->p == 'e' || *e->p == 'E' || *e->p == '+' || *e->p == '-' ||
                             (*e->p >= '0' && *e->p <= '9'))) {
        integral = false;
        e->p++;
    }
    if (integral && !overflow && !neg) return lbpk_uint64(e, mag);
    if (integral && !overflow && mag && mag <= (uint64_t)INT64_MAX + 1)
        return lbpk_int64(e, mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag);
    /* Fractions, exponents, -0 and integers beyond 64 bits: the nearest
     * double (RFC 8259 section 6; what JSON.parse gives). */
    size_t n = (size_t)(e->p - s);
    char small[128], *buf = n < sizeof small ? small : malloc(n + 1);
    if (!buf) return enc_fail(e, MP_NOMEM);
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    double d = strtod_l(buf, &end, c_locale());
    bool ok = end == buf + n;
    if (buf != small) free(buf);
    if (!ok) return bad_json(e);
    return lbpk_double(e, d);
}

static int enc_literal(struct mp_enc *e, const char *lit, size_t n)
{
    if ((size_t)(e->end - e->p) < n || memcmp(e->p, lit, n) != 0) return bad_json(e);
    e->p += n;
    return 0;
}

/* A scalar at e->p: string with escapes, number or literal (the plain
 * string and the containers are the walk's own). */
static int enc_scalar(struct mp_enc *e)
{
    switch (*e->p) {
    case '"': e->p++; return enc_escaped_string(e);
    case 't': return enc_literal(e, "true", 4) || lbpk_true(e) ? -1 : 0;
    case 'f': return enc_literal(e, "false", 5) || lbpk_false(e) ? -1 : 0;
    case 'n': return enc_literal(e, "null", 4) || lbpk_nil(e) ? -1 : 0;
    default:
        if (*e->p != '-' && (*e->p < '0' || *e->p > '9')) return bad_json(e);
        return enc_number(e);
    }
}

/* Closes the container opened at offset `at` with `count` members: a
 * fixmap/fixarray byte was kept, widened in place for the rare larger one. */
static int enc_close(struct mp_enc *e, size_t at, size_t count, bool map)
{
    if (count <= 15) {
        e->c.w->buf[at] = (char)((map ? 0x80 : 0x90) | count);
        return 0;
    }
    if (count > UINT32_MAX) return bad_json(e);
    struct hdr h;
    pack_header(&h, map ? 'm' : 'a', count);
    return place_header(e, at, 1, &h);
}

/* The walk: one loop over the text with an explicit stack, the cursor and
 * the output pointer in locals (through `e` only around slow paths). */
static int enc_walk(struct mp_enc *e)
{
    struct { size_t at, count; bool map; } st[ENV_MAX_DEPTH];
    int depth = 0;
    bool in_key = false;      /* the string being written is a member name */
    const char *p = e->p, *end = e->end;
    char *o = e->c.o, *oend = e->c.oend;
#define SYNC() (e->p = p, e->c.o = o)
#define LOAD() (p = e->p, o = e->c.o, oend = e->c.oend)
#define WS() while (p < end && (unsigned char)*p <= ' ' && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++
#define ROOM(n) do { if ((size_t)(oend - o) < (size_t)(n)) { SYNC(); if (enc_grow(e, (n))) return -1; LOAD(); } } while (0)
#define FAIL() do { SYNC(); return bad_json(e); } while (0)
    for (;;) {
        /* A value. */
        WS();
        if (p >= end) FAIL();
        if (*p == '{' || *p == '[') {
            bool map = *p++ == '{';
            if (depth == ENV_MAX_DEPTH) {
                if (e->st == MP_OK) { e->st = MP_MALFORMED; say(e->err, e->errlen, "json: nesting deeper than %d levels", ENV_MAX_DEPTH); }
                return -1;
            }
            ROOM(1);
            st[depth].at = (size_t)(o - e->c.w->buf);
            st[depth].count = 0;
            st[depth].map = map;
            depth++;
            *o++ = 0;
            WS();
            if (p < end && *p == (map ? '}' : ']')) {
                p++;
                depth--;
                SYNC();
                if (enc_close(e, st[depth].at, 0, map)) return -1;
                LOAD();
                goto after_value;
            }
            if (!map) continue;
            goto key;
        }
        if (*p == '"') goto string;
        SYNC();
        if (enc_scalar(e)) return -1;
        LOAD();
    after_value:
        if (depth == 0) break;
        st[depth - 1].count++;
        WS();
        if (p < end && *p == ',') {
            p++;
            if (!st[depth - 1].map) continue;
            goto key;
        }
        if (p < end && *p == (st[depth - 1].map ? '}' : ']')) {
            p++;
            depth--;
            SYNC();
            if (enc_close(e, st[depth].at, st[depth].count, st[depth].map)) return -1;
            LOAD();
            goto after_value;
        }
        FAIL();
    key:
        /* A member name, then ':'. */
        WS();
        if (p >= end || *p != '"') FAIL();
        in_key = true;
    string: {
            const char *str = p + 1, *q = quote_or_escape(str, end);
            if (q >= end) FAIL();
            if (*q == '\\') {
                SYNC();
                if (enc_scalar(e)) return -1;
                LOAD();
            } else {
                size_t n = (size_t)(q - str);
                p = q + 1;
                if (n < 32) {
                    /* fixstr: the header is one byte. */
                    ROOM(n + 1);
                    *o++ = (char)(0xa0 | n);
                    copy_run(o, oend, str, end, n);
                    o += n;
                } else {
                    SYNC();
                    if (lbpk_str(e, n) || enc_put(e, str, n)) return -1;
                    LOAD();
                }
            }
        }
        if (!in_key) goto after_value;
        in_key = false;
        WS();
        if (p >= end || *p != ':') FAIL();
        p++;
    }
    SYNC();
    return 0;
#undef SYNC
#undef LOAD
#undef WS
#undef ROOM
#undef FAIL
}

enum mp_status mp_from_json(const char *in, size_t len, struct jw *out, size_t limit,
                            char *err, size_t errlen)
{
    struct mp_enc e = { .start = in, .p = in, .end = in + len, .err = err, .errlen = errlen };
    if (errlen) err[0] = 0;
    cur_init(&e.c, out, limit);
    /* MessagePack is mostly smaller than its JSON: room for that at once. */
    size_t guess = len + 16 < limit ? len + 16 : limit ? limit : 1;
    if (((size_t)(e.c.oend - e.c.o) >= guess || enc_grow(&e, guess) == 0) && enc_walk(&e) == 0) {
        skip_ws(&e);
        if (e.p == e.end) {
            cur_done(&e.c);
            return MP_OK;
        }
        bad_json(&e);
    }
    if (e.st == MP_TOO_LARGE) say(err, errlen, "msgpack: the message is more than %zu bytes as MessagePack", limit);
    if (e.st == MP_NOMEM) say(err, errlen, "msgpack: out of memory");
    out->len = e.c.base;
    return e.st == MP_OK ? MP_MALFORMED : e.st;
}
