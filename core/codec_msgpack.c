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

/* msgpack-c's unpacker keeps one stack entry per open container: room for
 * our own limit plus the root, so that our callback refuses first. */
#define MSGPACK_EMBED_STACK_SIZE (ENV_MAX_DEPTH + 1)
#include <msgpack/pack.h>
#include <msgpack/unpack.h>
#include <msgpack/unpack_define.h>

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

/* ---- MessagePack -> JSON -------------------------------------------- */

struct mp_level {
    uint32_t left;      /* elements (array) or pairs (map) still to come */
    bool map;
    bool key;           /* map: the next value is a key */
    bool first;
};

struct mp_dec {
    struct jw *out;
    size_t base, limit;
    size_t len;                 /* input size: bounds the elements it can hold */
    uint64_t claimed;           /* elements announced by every container so far */
    int depth;
    struct mp_level st[ENV_MAX_DEPTH];
    enum mp_status status;      /* the first problem */
    bool stopped;               /* a callback ended decoding */
    char *err;
    size_t errlen;
};

static int stop(struct mp_dec *d, enum mp_status st)
{
    d->stopped = true;
    if (d->status == MP_OK || d->status == MP_NO_JSON) d->status = st;
    if (st == MP_TOO_LARGE) say(d->err, d->errlen, "msgpack: the message is more than %zu bytes as JSON", d->limit);
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

static int put(struct mp_dec *d, const char *s, size_t n)
{
    enum mp_status st = out_reserve(d->out, d->base, d->limit, n);
    if (st != MP_OK) return stop(d, st);
    memcpy(d->out->buf + d->out->len, s, n);
    d->out->len += n;
    return 0;
}

enum { V_VALUE, V_KEY, V_KEY_REPLACED };

/* Before each value: the separator its container needs, and the rule that
 * map keys are strings.  `kind` names a non-string value (NULL for str);
 * a key of another scalar kind is replaced by "" so decoding can go on. */
static int begin_value(struct mp_dec *d, const char *kind, bool container)
{
    if (d->depth == 0) return V_VALUE;
    struct mp_level *l = &d->st[d->depth - 1];
    bool key = l->map && l->key;
    if (!l->first && (key || !l->map) && put(d, ",", 1)) return -1;
    l->first = false;
    if (!key) return V_VALUE;
    if (!kind) return V_KEY;
    no_json(d, "msgpack: a map key is %s; JSON object keys are strings", kind);
    if (container) return stop(d, MP_NO_JSON);
    l->key = false;
    return put(d, "\"\":", 3) ? -1 : V_KEY_REPLACED;
}

/* After a value: count it, and close every container it completes. */
static int end_value(struct mp_dec *d)
{
    while (d->depth) {
        struct mp_level *l = &d->st[d->depth - 1];
        l->key = l->map;
        if (--l->left) return 0;
        if (put(d, l->map ? "}" : "]", 1)) return -1;
        d->depth--;
    }
    return 0;
}

static int scalar(struct mp_dec *d, const char *kind, const char *text, size_t n)
{
    int r = begin_value(d, kind, false);
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
    return scalar(d, "an integer", buf, n);
}

static int number(struct mp_dec *d, double v)
{
    if (isnan(v) || isinf(v)) {
        no_json(d, "msgpack: %s has no JSON equivalent", isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return scalar(d, "a float", "null", 4);
    }
    char buf[40];
    return scalar(d, "a float", buf, format_double(v, buf, sizeof buf));
}

/* A str as a JSON string: escaped, and checked to be UTF-8. */
static int put_string(struct mp_dec *d, const char *s, size_t n)
{
    if (n == 0) return put(d, "\"\"", 2);   /* s may be NULL then (msgpack-c) */
    struct jw *o = d->out;
    size_t start = o->len;
    if (put(d, "\"", 1)) return -1;
    const char *p = s, *end = s + n;
    while (p < end) {
        size_t run = env_plain_prefix(p, (size_t)(end - p));
        while (run < (size_t)(end - p) && (unsigned char)p[run] >= 0x80) {
            size_t k = env_utf8_seq(p + run, end);
            if (!k) {
                no_json(d, "msgpack: a str is not valid UTF-8 (JSON text is UTF-8)");
                o->len = start;
                return put(d, "\"\"", 2);
            }
            run += k;
            run += env_plain_prefix(p + run, (size_t)(end - p) - run);
        }
        if (put(d, p, run)) return -1;
        p += run;
        if (p == end) break;
        static const char hex[] = "0123456789abcdef";
        unsigned char c = (unsigned char)*p++;
        char esc[6] = { '\\', (char)c, 0, 0, 0, 0 };
        size_t en = 2;
        if (c == '\n') esc[1] = 'n';
        else if (c == '\r') esc[1] = 'r';
        else if (c == '\t') esc[1] = 't';
        else if (c < 0x20) { memcpy(esc + 1, "u00", 3); esc[4] = hex[c >> 4]; esc[5] = hex[c & 15]; en = 6; }
        if (put(d, esc, en)) return -1;
    }
    return put(d, "\"", 1);
}

/* The callbacks msgpack-c's unpacker template calls, in document order:
 * one per scalar, one at the start of each container.  Returning -1 stops
 * it. */
typedef int lbmp_obj;
#define msgpack_unpack_struct(name) struct lbmp ## name
#define msgpack_unpack_func(ret, name) static inline ret lbmp ## name
#define msgpack_unpack_callback(name) lbmp_cb ## name
#define msgpack_unpack_object lbmp_obj
#define msgpack_unpack_user struct mp_dec *

static inline lbmp_obj lbmp_cb_root(struct mp_dec **u) { (void)u; return 0; }
static inline int lbmp_cb_uint8(struct mp_dec **u, uint8_t v, lbmp_obj *o) { (void)o; return integer(*u, false, v); }
static inline int lbmp_cb_uint16(struct mp_dec **u, uint16_t v, lbmp_obj *o) { (void)o; return integer(*u, false, v); }
static inline int lbmp_cb_uint32(struct mp_dec **u, uint32_t v, lbmp_obj *o) { (void)o; return integer(*u, false, v); }
static inline int lbmp_cb_uint64(struct mp_dec **u, uint64_t v, lbmp_obj *o) { (void)o; return integer(*u, false, v); }
static inline int lbmp_signed(struct mp_dec *d, int64_t v)
{
    return v < 0 ? integer(d, true, (uint64_t)0 - (uint64_t)v) : integer(d, false, (uint64_t)v);
}
static inline int lbmp_cb_int8(struct mp_dec **u, int8_t v, lbmp_obj *o) { (void)o; return lbmp_signed(*u, v); }
static inline int lbmp_cb_int16(struct mp_dec **u, int16_t v, lbmp_obj *o) { (void)o; return lbmp_signed(*u, v); }
static inline int lbmp_cb_int32(struct mp_dec **u, int32_t v, lbmp_obj *o) { (void)o; return lbmp_signed(*u, v); }
static inline int lbmp_cb_int64(struct mp_dec **u, int64_t v, lbmp_obj *o) { (void)o; return lbmp_signed(*u, v); }
static inline int lbmp_cb_float(struct mp_dec **u, float v, lbmp_obj *o) { (void)o; return number(*u, v); }
static inline int lbmp_cb_double(struct mp_dec **u, double v, lbmp_obj *o) { (void)o; return number(*u, v); }
static inline int lbmp_cb_nil(struct mp_dec **u, lbmp_obj *o) { (void)o; return scalar(*u, "nil", "null", 4); }
static inline int lbmp_cb_true(struct mp_dec **u, lbmp_obj *o) { (void)o; return scalar(*u, "a boolean", "true", 4); }
static inline int lbmp_cb_false(struct mp_dec **u, lbmp_obj *o) { (void)o; return scalar(*u, "a boolean", "false", 5); }

static int container(struct mp_dec *d, unsigned n, bool map)
{
    if (begin_value(d, map ? "a map" : "an array", true) < 0) return -1;
    if (d->depth == ENV_MAX_DEPTH) {
        say(d->err, d->errlen, "msgpack: nesting deeper than %d levels", ENV_MAX_DEPTH);
        return stop(d, MP_MALFORMED);
    }
    /* Every element takes at least one byte: a count the input cannot hold
     * is a lie, refused now rather than at the end of the input. */
    d->claimed += map ? 2ull * n : n;
    if (d->claimed > d->len) {
        say(d->err, d->errlen, "msgpack: %s claims %u %s, more than a %zu-byte frame can hold",
            map ? "a map" : "an array", n, map ? "pairs" : "elements", d->len);
        return stop(d, MP_MALFORMED);
    }
    if (n == 0) return put(d, map ? "{}" : "[]", 2) ? -1 : end_value(d);
    if (put(d, map ? "{" : "[", 1)) return -1;
    d->st[d->depth++] = (struct mp_level){ .left = n, .map = map, .key = map, .first = true };
    return 0;
}

static inline int lbmp_cb_array(struct mp_dec **u, unsigned n, lbmp_obj *o) { (void)o; return container(*u, n, false); }
static inline int lbmp_cb_map(struct mp_dec **u, unsigned n, lbmp_obj *o) { (void)o; return container(*u, n, true); }
/* Items are counted by begin_value/end_value; the template's own
 * bookkeeping needs nothing from us. */
static inline int lbmp_cb_array_item(struct mp_dec **u, lbmp_obj *c, lbmp_obj o) { (void)u; (void)c; (void)o; return 0; }
static inline int lbmp_cb_map_item(struct mp_dec **u, lbmp_obj *c, lbmp_obj k, lbmp_obj v)
{
    (void)u; (void)c; (void)k; (void)v;
    return 0;
}

static inline int lbmp_cb_str(struct mp_dec **u, const char *b, const char *p, unsigned n, lbmp_obj *o)
{
    (void)b; (void)o;
    struct mp_dec *d = *u;
    int r = begin_value(d, NULL, false);
    if (r < 0 || put_string(d, p, n)) return -1;
    if (r == V_KEY) {
        d->st[d->depth - 1].key = false;
        return put(d, ":", 1);
    }
    return end_value(d);
}

static inline int lbmp_cb_bin(struct mp_dec **u, const char *b, const char *p, unsigned n, lbmp_obj *o)
{
    (void)b; (void)p; (void)o;
    no_json(*u, "msgpack: bin (%u bytes) has no JSON equivalent (send bytes as a base64 str)", n);
    return scalar(*u, "bin", "null", 4);
}

/* `n` counts the type byte too.  It is 0 only when an ext32 claimed
 * 0xffffffff bytes: msgpack-c's length + 1 wraps, and would go on reading
 * the data as the next value. */
static inline int lbmp_cb_ext(struct mp_dec **u, const char *b, const char *p, unsigned n, lbmp_obj *o)
{
    (void)b; (void)o;
    struct mp_dec *d = *u;
    if (n == 0) {
        say(d->err, d->errlen, "msgpack: an ext32 claims 4 GiB, more than a %zu-byte frame can hold", d->len);
        return stop(d, MP_MALFORMED);
    }
    if ((int8_t)p[0] == -1)
        no_json(d, "msgpack: a timestamp (ext type -1) has no JSON equivalent (send epoch milliseconds or an ISO 8601 str)");
    else
        no_json(d, "msgpack: ext type %d (%u bytes) has no JSON equivalent", (int8_t)p[0], n - 1);
    return scalar(d, "ext", "null", 4);
}

#include <msgpack/unpack_template.h>

enum mp_status mp_to_json(const char *in, size_t len, struct jw *out, size_t limit,
                          char *err, size_t errlen)
{
    struct mp_dec d = { .out = out, .base = out->len, .limit = limit, .len = len, .err = err, .errlen = errlen };
    if (errlen) err[0] = 0;
    struct lbmp_context ctx;
    lbmp_init(&ctx);
    ctx.user = &d;
    size_t off = 0;
    int r = lbmp_execute(&ctx, in, len, &off);
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
    return d.status;
}

/* ---- JSON -> MessagePack -------------------------------------------- */

struct mp_enc {
    const char *start, *p, *end;
    struct jw *out;
    size_t base, limit;
    msgpack_packer pk;
    enum mp_status st;
    char *err;
    size_t errlen;
};

/* msgpack-c's packer writes through this. */
static int enc_write(void *data, const char *buf, size_t len)
{
    struct mp_enc *e = data;
    enum mp_status st = out_reserve(e->out, e->base, e->limit, len);
    if (st != MP_OK) { if (e->st == MP_OK) e->st = st; return -1; }
    memcpy(e->out->buf + e->out->len, buf, len);
    e->out->len += len;
    return 0;
}

/* A container header or str header, packed aside to be placed in front of
 * content already written. */
struct hdr { char b[8]; size_t n; };
static int hdr_write(void *data, const char *buf, size_t len)
{
    struct hdr *h = data;
    if (h->n + len > sizeof h->b) return -1;
    memcpy(h->b + h->n, buf, len);
    h->n += len;
    return 0;
}

/* Replaces the `room` bytes reserved at `at` with header h, moving what
 * follows them. */
static int place_header(struct mp_enc *e, size_t at, size_t room, const struct hdr *h)
{
    struct jw *o = e->out;
    if (h->n > room) {
        enum mp_status st = out_reserve(o, e->base, e->limit, h->n - room);
        if (st != MP_OK) { if (e->st == MP_OK) e->st = st; return -1; }
    }
    memmove(o->buf + at + h->n, o->buf + at + room, o->len - at - room);
    memcpy(o->buf + at, h->b, h->n);
    o->len = o->len - room + h->n;
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

static void skip_ws(struct mp_enc *e)
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

/* e->p is at the opening quote. */
static int enc_string(struct mp_enc *e)
{
    const char *s = ++e->p;
    const char *q = memchr(s, '"', (size_t)(e->end - s));
    if (!q) return bad_json(e);
    if (!memchr(s, '\\', (size_t)(q - s))) {
        /* The common case: the text is the string. */
        e->p = q + 1;
        return msgpack_pack_str(&e->pk, (size_t)(q - s)) || msgpack_pack_str_body(&e->pk, s, (size_t)(q - s)) ? -1 : 0;
    }
    /* Escapes: decode behind a str32-sized hole, then put the real header. */
    struct jw *o = e->out;
    size_t at = o->len;
    if (enc_write(e, "\0\0\0\0\0", 5)) return -1;
    while (e->p < e->end && *e->p != '"') {
        const char *run = e->p;
        while (e->p < e->end && *e->p != '"' && *e->p != '\\') e->p++;
        if (enc_write(e, run, (size_t)(e->p - run))) return -1;
        if (e->p < e->end && *e->p == '\\') {
            char u[4];
            e->p++;
            size_t n = unescape(e, u);
            if (!n) return bad_json(e);
            if (enc_write(e, u, n)) return -1;
        }
    }
    if (e->p >= e->end) return bad_json(e);
    e->p++;
    struct hdr h = { .n = 0 };
    msgpack_packer hp;
    msgpack_packer_init(&hp, &h, hdr_write);
    msgpack_pack_str(&hp, o->len - at - 5);
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
    if (integral && !overflow && !neg) return msgpack_pack_uint64(&e->pk, mag) ? -1 : 0;
    if (integral && !overflow && mag && mag <= (uint64_t)INT64_MAX + 1)
        return msgpack_pack_int64(&e->pk, mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) ? -1 : 0;
    /* Fractions, exponents, -0 and integers beyond 64 bits: the nearest
     * double (RFC 8259 section 6; what JSON.parse gives). */
    size_t n = (size_t)(e->p - s);
    char small[128], *buf = n < sizeof small ? small : malloc(n + 1);
    if (!buf) { if (e->st == MP_OK) e->st = MP_NOMEM; return -1; }
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    double d = strtod_l(buf, &end, c_locale());
    bool ok = end == buf + n;
    if (buf != small) free(buf);
    if (!ok) return bad_json(e);
    return msgpack_pack_double(&e->pk, d) ? -1 : 0;
}

static int enc_literal(struct mp_enc *e, const char *lit, size_t n)
{
    if ((size_t)(e->end - e->p) < n || memcmp(e->p, lit, n) != 0) return bad_json(e);
    e->p += n;
    return 0;
}

static int enc_value(struct mp_enc *e, int depth);

/* e->p is at '{' or '['.  The header needs the count, known only at the
 * end: one byte is kept for a fixmap/fixarray (up to 15 members, nearly
 * every container) and widened in place for the rare larger one. */
static int enc_container(struct mp_enc *e, int depth, bool map)
{
    if (depth >= ENV_MAX_DEPTH) {
        if (e->st == MP_OK) { e->st = MP_MALFORMED; say(e->err, e->errlen, "json: nesting deeper than %d levels", ENV_MAX_DEPTH); }
        return -1;
    }
    char close = map ? '}' : ']';
    e->p++;
    size_t at = e->out->len, count = 0;
    if (enc_write(e, "", 1)) return -1;
    skip_ws(e);
    if (e->p < e->end && *e->p == close) {
        e->p++;
    } else {
        for (;;) {
            skip_ws(e);
            if (map) {
                if (e->p >= e->end || *e->p != '"' || enc_string(e)) return bad_json(e);
                skip_ws(e);
                if (e->p >= e->end || *e->p != ':') return bad_json(e);
                e->p++;
            }
            if (enc_value(e, depth + 1)) return -1;
            count++;
            skip_ws(e);
            if (e->p < e->end && *e->p == ',') { e->p++; continue; }
            if (e->p < e->end && *e->p == close) { e->p++; break; }
            return bad_json(e);
        }
    }
    if (count <= 15) {
        e->out->buf[at] = (char)((map ? 0x80 : 0x90) | count);
        return 0;
    }
    if (count > UINT32_MAX) return bad_json(e);
    struct hdr h = { .n = 0 };
    msgpack_packer hp;
    msgpack_packer_init(&hp, &h, hdr_write);
    if (map) msgpack_pack_map(&hp, count);
    else msgpack_pack_array(&hp, count);
    return place_header(e, at, 1, &h);
}

static int enc_value(struct mp_enc *e, int depth)
{
    skip_ws(e);
    if (e->p >= e->end) return bad_json(e);
    switch (*e->p) {
    case '{': return enc_container(e, depth, true);
    case '[': return enc_container(e, depth, false);
    case '"': return enc_string(e);
    case 't': return enc_literal(e, "true", 4) || msgpack_pack_true(&e->pk) ? -1 : 0;
    case 'f': return enc_literal(e, "false", 5) || msgpack_pack_false(&e->pk) ? -1 : 0;
    case 'n': return enc_literal(e, "null", 4) || msgpack_pack_nil(&e->pk) ? -1 : 0;
    default:
        if (*e->p != '-' && (*e->p < '0' || *e->p > '9')) return bad_json(e);
        return enc_number(e);
    }
}

enum mp_status mp_from_json(const char *in, size_t len, struct jw *out, size_t limit,
                            char *err, size_t errlen)
{
    struct mp_enc e = { .start = in, .p = in, .end = in + len, .out = out, .base = out->len, .limit = limit,
                        .err = err, .errlen = errlen };
    if (errlen) err[0] = 0;
    msgpack_packer_init(&e.pk, &e, enc_write);
    if (enc_value(&e, 0) == 0) {
        skip_ws(&e);
        if (e.p == e.end) return MP_OK;
        bad_json(&e);
    }
    if (e.st == MP_TOO_LARGE) say(err, errlen, "msgpack: the message is more than %zu bytes as MessagePack", limit);
    if (e.st == MP_NOMEM) say(err, errlen, "msgpack: out of memory");
    out->len = e.base;
    return e.st == MP_OK ? MP_MALFORMED : e.st;
}
