/*
 * JSONLex in C (see jsonlex.h; the language is ../shared/jsonlex/SPEC.md,
 * whose section numbers the comments below cite).
 *
 * Why C and not Lua: the evaluator walks JSON values that arrive as jansson
 * trees (system method params) or as frame text; evaluating them in C needs
 * no conversion into Lua tables and back, keeps member order (Lua tables
 * have none, §3/H6) and keeps 1 vs 1.0, null vs missing without sentinels.
 * Scripts reach it through bus.jsonlex (lua.c converts once).
 */
#include "config.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "jsonlex.h"
#include "sbuf.h"

enum op {
    OP_CONST, OP_MISSING, OP_FAIL, OP_ARRAY, OP_OBJECT, OP_VAR,
    OP_EQ, OP_NE, OP_GT, OP_LT, OP_GTE, OP_LTE,
    OP_AND, OP_OR, OP_NOT, OP_IF, OP_CONCAT,
    OP_MAP, OP_FILTER, OP_REDUCE,
    OP_LENGTH, OP_SUBSTRING, OP_GET, OP_HAS,
};

/* The operators by name (§4, §12); `ext` marks the extensions. */
static const struct { const char *name; enum op op; bool ext; } g_ops[] = {
    { "$var", OP_VAR, false }, { "$eq", OP_EQ, false }, { "$ne", OP_NE, false },
    { "$gt", OP_GT, false }, { "$lt", OP_LT, false }, { "$and", OP_AND, false },
    { "$or", OP_OR, false }, { "$not", OP_NOT, false }, { "$if", OP_IF, false },
    { "$concat", OP_CONCAT, false }, { "$map", OP_MAP, false }, { "$filter", OP_FILTER, false },
    { "$gte", OP_GTE, true }, { "$lte", OP_LTE, true }, { "$length", OP_LENGTH, true },
    { "$substring", OP_SUBSTRING, true }, { "$reduce", OP_REDUCE, true },
    { "$get", OP_GET, true }, { "$has", OP_HAS, true },
};

#define seg jl_seg   /* the public name of a path segment (jsonlex.h) */

struct node {
    enum op op;
    size_t n;                  /* kids (OP_VAR: segments) */
    struct node **kid;         /* NULL entries: absent members ($map's expr, ...) */
    json_t *lit;               /* OP_CONST */
    struct seg *key;           /* OP_OBJECT: member names */
    struct seg *seg;           /* OP_VAR: the path */
    struct seg name, acc;      /* loops: item and accumulator names */
    char *msg;                 /* OP_FAIL: the error; others: where, for runtime errors */
};

struct jl_expr { struct node *root; };

static void *xmalloc0(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) { fputs("lexbusd: out of memory\n", stderr); abort(); }
    return p;
}

static char *xmemdup(const char *p, size_t n)
{
    char *s = xmalloc0(n + 1);
    memcpy(s, p, n);
    return s;
}

static void node_free(struct node *nd)
{
    if (!nd) return;
    if (nd->op != OP_VAR)
        for (size_t i = 0; i < nd->n; i++) node_free(nd->kid[i]);
    free(nd->kid);
    if (nd->key) for (size_t i = 0; i < nd->n; i++) free(nd->key[i].p);
    free(nd->key);
    if (nd->seg) for (size_t i = 0; i < nd->n; i++) free(nd->seg[i].p);
    free(nd->seg);
    free(nd->name.p);
    free(nd->acc.p);
    free(nd->msg);
    json_decref(nd->lit);
    free(nd);
}

void jl_free(struct jl_expr *e)
{
    if (!e) return;
    node_free(e->root);
    free(e);
}

/* ---- values ---------------------------------------------------------- */

/* A missing array element (§1): evaluated arrays keep missing elements as
 * missing (a $map over them binds `item` to missing, which $concat prints
 * as `undefined`); only the output shows them as null.  One shared marker,
 * compared by identity; jl_eval replaces it with null in its result. */
static json_t *g_missing;

static json_t *missing_marker(void)
{
    if (!g_missing) g_missing = json_string_nocheck("(missing)");
    return g_missing;
}
#define IS_MISSING(v) ((v) == g_missing && g_missing)

/* §6 */
static bool truthy(const json_t *v)
{
    if (!v || IS_MISSING(v)) return false;
    switch (json_typeof(v)) {
    case JSON_NULL: case JSON_FALSE: return false;
    case JSON_TRUE: case JSON_ARRAY: case JSON_OBJECT: return true;
    case JSON_INTEGER: return json_integer_value(v) != 0;
    case JSON_REAL: return json_real_value(v) != 0.0;
    case JSON_STRING: return json_string_length(v) > 0;
    }
    return false;
}

static double num_of(const json_t *v)
{
    return json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
}

/* §1: 1 and 1.0 are one number; integral values within 2^53 become
 * integers so that output never says 1.0. */
static json_t *number_value(double d)
{
    if (d == 0) return json_integer(0);
    if (d == trunc(d) && fabs(d) <= 9007199254740992.0) return json_integer((json_int_t)d);
    return json_real(d);
}

/* Structural equality (§4 $eq, H3): numbers by value, no coercion. */
static bool value_eq(const json_t *a, const json_t *b)
{
    if (IS_MISSING(a)) a = json_null();   /* inside a container, missing counts as null */
    if (IS_MISSING(b)) b = json_null();
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b)) return json_integer_value(a) == json_integer_value(b);
        return num_of(a) == num_of(b);
    }
    if (json_typeof(a) != json_typeof(b)) return false;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY: {
        size_t n = json_array_size(a);
        if (n != json_array_size(b)) return false;
        for (size_t i = 0; i < n; i++)
            if (!value_eq(json_array_get(a, i), json_array_get(b, i))) return false;
        return true;
    }
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b)) return false;
        for (void *it = json_object_iter((json_t *)a); it; it = json_object_iter_next((json_t *)a, it)) {
            const json_t *bv = json_object_getn(b, json_object_iter_key(it), json_object_iter_key_len(it));
            if (!bv || !value_eq(json_object_iter_value(it), bv)) return false;
        }
        return true;
    }
    default:
        return true;   /* null, true, false */
    }
}

static bool missing_eq(const json_t *a, const json_t *b)
{
    if (!a || !b) return a == b;
    return value_eq(a, b);
}

/* ---- §7.1 text --------------------------------------------------------- */

size_t jl_number_text(double d, char buf[static 33])
{
    if (d != d) return (size_t)snprintf(buf, 33, "NaN");
    if (isinf(d)) return (size_t)snprintf(buf, 33, d < 0 ? "-Infinity" : "Infinity");
    if (d == 0) return (size_t)snprintf(buf, 33, "0");
    if (d == trunc(d) && fabs(d) < 9007199254740992.0)
        return (size_t)snprintf(buf, 33, "%lld", (long long)d);
    /* The shortest digits that read back as d, then JavaScript's layout. */
    char e[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, d);
        if (strtod(e, NULL) == d) break;
    }
    char digits[20];
    size_t k = 0;
    const char *s = e;
    bool neg = *s == '-';
    if (neg) s++;
    for (; *s && *s != 'e'; s++) if (*s >= '0' && *s <= '9' && k < sizeof digits - 1) digits[k++] = *s;
    int exp10 = atoi(s + 1);
    while (k > 1 && digits[k - 1] == '0') k--;
    int n = exp10 + 1;
    size_t o = 0;
    if (neg) buf[o++] = '-';
    if ((int)k <= n && n <= 21) {
        memcpy(buf + o, digits, k); o += k;
        for (int i = (int)k; i < n; i++) buf[o++] = '0';
    } else if (0 < n && n <= 21) {
        memcpy(buf + o, digits, (size_t)n); o += (size_t)n;
        buf[o++] = '.';
        memcpy(buf + o, digits + n, k - (size_t)n); o += k - (size_t)n;
    } else if (-6 < n && n <= 0) {
        buf[o++] = '0'; buf[o++] = '.';
        for (int i = 0; i < -n; i++) buf[o++] = '0';
        memcpy(buf + o, digits, k); o += k;
    } else {
        buf[o++] = digits[0];
        if (k > 1) { buf[o++] = '.'; memcpy(buf + o, digits + 1, k - 1); o += k - 1; }
        o += (size_t)snprintf(buf + o, 33 - o, "e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
    }
    buf[o] = 0;
    return o;
}

static void number_text(struct sbuf *b, const json_t *v)
{
    char t[33];
    size_t n;
    if (json_is_integer(v) && llabs(json_integer_value(v)) < 9007199254740992LL)
        n = (size_t)snprintf(t, sizeof t, "%lld", (long long)json_integer_value(v));
    else
        n = jl_number_text(num_of(v), t);
    sbuf_add(b, t, n);
}

/* An array's text: elements' texts joined with ',', null as empty. */
static void to_text(struct sbuf *b, const json_t *v);

static void array_text(struct sbuf *b, const json_t *a)
{
    size_t n = json_array_size(a);
    for (size_t i = 0; i < n; i++) {
        if (i) sbuf_addc(b, ',');
        const json_t *e = json_array_get(a, i);
        if (!json_is_null(e) && !IS_MISSING(e)) to_text(b, e);
    }
}

static void to_text(struct sbuf *b, const json_t *v)
{
    if (!v) { sbuf_lit(b, "undefined"); return; }
    switch (json_typeof(v)) {
    case JSON_NULL: sbuf_lit(b, "null"); break;
    case JSON_TRUE: sbuf_lit(b, "true"); break;
    case JSON_FALSE: sbuf_lit(b, "false"); break;
    case JSON_STRING: sbuf_add(b, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: case JSON_REAL: number_text(b, v); break;
    case JSON_ARRAY: array_text(b, v); break;
    case JSON_OBJECT: sbuf_lit(b, "[object Object]"); break;   /* H9 */
    }
}

/* ---- §7.2 text to number ------------------------------------------------ */

/* Length of the white-space character at s (of n bytes), or 0. */
static size_t space_at(const unsigned char *s, size_t n)
{
    if (s[0] == 9 || s[0] == 10 || s[0] == 11 || s[0] == 12 || s[0] == 13 || s[0] == 32) return 1;
    if (n >= 2 && s[0] == 0xC2 && s[1] == 0xA0) return 2;
    if (n < 3) return 0;
    unsigned c = ((unsigned)(s[0] & 0x0F) << 12) | ((unsigned)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    if ((s[0] & 0xF0) != 0xE0 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
    if (c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
        c == 0x205F || c == 0x3000 || c == 0xFEFF)
        return 3;
    return 0;
}

static int digit_val(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return 99;
}

double jl_text_number(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t a = 0, z = n, w;
    while (a < z && (w = space_at(s + a, z - a))) a += w;
    while (z > a) {
        /* Trailing white space: find the last character's start. */
        size_t st = z - 1;
        while (st > a && (s[st] & 0xC0) == 0x80 && z - st < 3) st--;
        if ((w = space_at(s + st, z - st)) && st + w == z) z = st;
        else if (z - 1 >= a && space_at(s + z - 1, 1) == 1) z--;
        else break;
    }
    const char *p = str + a;
    size_t len = z - a;
    if (len == 0) return 0;
    if (len > 2 && p[0] == '0') {
        int base = (p[1] == 'x' || p[1] == 'X') ? 16 : (p[1] == 'o' || p[1] == 'O') ? 8 :
                   (p[1] == 'b' || p[1] == 'B') ? 2 : 0;
        if (base) {
            double v = 0;
            for (size_t i = 2; i < len; i++) {
                int d = digit_val(p[i]);
                if (d >= base) return NAN;
                v = v * base + d;
            }
            return v;
        }
    }
    size_t i = 0;
    bool neg = false;
    if (p[0] == '+' || p[0] == '-') { neg = p[0] == '-'; i++; }
    if (len - i == 8 && memcmp(p + i, "Infinity", 8) == 0) return neg ? -INFINITY : INFINITY;
    size_t int_d = 0, frac_d = 0;
    while (i < len && p[i] >= '0' && p[i] <= '9') { i++; int_d++; }
    if (i < len && p[i] == '.') {
        i++;
        while (i < len && p[i] >= '0' && p[i] <= '9') { i++; frac_d++; }
    }
    if (int_d + frac_d == 0) return NAN;
    if (i < len && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < len && (p[i] == '+' || p[i] == '-')) i++;
        size_t ed = 0;
        while (i < len && p[i] >= '0' && p[i] <= '9') { i++; ed++; }
        if (!ed) return NAN;
    }
    if (i != len) return NAN;
    /* The syntax is checked: strtod reads exactly these bytes (it would
     * also take hex floats, "inf" and "nan", which §7.2 does not). */
    char tmp[128];
    char *heap = len >= sizeof tmp ? xmalloc0(len + 1) : NULL;
    char *t = heap ? heap : tmp;
    memcpy(t, p, len);
    t[len] = 0;
    double v = strtod(t, NULL);
    free(heap);
    return v;
}

/* ---- compiling ------------------------------------------------------ */

struct cc {
    bool ext;
    bool too_deep;
    struct sbuf loc;       /* where we are, for error messages */
};

static struct node *new_node(enum op op)
{
    struct node *nd = xmalloc0(sizeof *nd);
    nd->op = op;
    return nd;
}

static struct node *fail_node(struct cc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static struct node *fail_node(struct cc *c, const char *fmt, ...)
{
    char m[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    struct node *nd = new_node(OP_FAIL);
    size_t n = strlen(m) + c->loc.len + 8;
    nd->msg = xmalloc0(n);
    snprintf(nd->msg, n, "%s (at %.*s)", m, (int)c->loc.len, c->loc.p);
    return nd;
}

static void set_where(struct cc *c, struct node *nd)
{
    nd->msg = xmemdup(c->loc.p, c->loc.len);
}

static size_t loc_push_key(struct cc *c, const char *k, size_t n)
{
    size_t mark = c->loc.len;
    sbuf_addc(&c->loc, '.');
    sbuf_add(&c->loc, k, n > 40 ? 40 : n);
    return mark;
}

static size_t loc_push_index(struct cc *c, size_t i)
{
    size_t mark = c->loc.len;
    char t[24];
    sbuf_add(&c->loc, t, (size_t)snprintf(t, sizeof t, "[%zu]", i));
    return mark;
}

static struct node *compile(struct cc *c, json_t *v, int depth);

/* Scalars are copied (and numbers normalised, §1). */
static struct node *const_node(json_t *v)
{
    struct node *nd = new_node(OP_CONST);
    switch (json_typeof(v)) {
    case JSON_REAL: nd->lit = number_value(json_real_value(v)); break;
    case JSON_STRING: nd->lit = json_stringn_nocheck(json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: nd->lit = json_integer(json_integer_value(v)); break;
    default: nd->lit = json_incref(v); break;   /* null, true, false: singletons */
    }
    return nd;
}

static bool all_const(const struct node *nd)
{
    for (size_t i = 0; i < nd->n; i++) if (nd->kid[i]->op != OP_CONST) return false;
    return true;
}

/* A container whose parts are all constants is one constant. */
static struct node *fold(struct node *nd)
{
    if (!all_const(nd)) return nd;
    json_t *v = nd->op == OP_ARRAY ? json_array() : json_object();
    for (size_t i = 0; i < nd->n; i++) {
        if (nd->op == OP_ARRAY) json_array_append(v, nd->kid[i]->lit);
        else json_object_setn(v, nd->key[i].p, nd->key[i].n, nd->kid[i]->lit);
    }
    node_free(nd);
    struct node *k = new_node(OP_CONST);
    k->lit = v;
    return k;
}

static struct node *compile_array(struct cc *c, json_t *v, int depth)
{
    struct node *nd = new_node(OP_ARRAY);
    nd->n = json_array_size(v);
    nd->kid = xmalloc0(nd->n * sizeof *nd->kid);
    for (size_t i = 0; i < nd->n && !c->too_deep; i++) {
        size_t mark = loc_push_index(c, i);
        nd->kid[i] = compile(c, json_array_get(v, i), depth);
        c->loc.len = mark;
    }
    if (c->too_deep) { for (size_t i = 0; i < nd->n; i++) if (!nd->kid[i]) nd->kid[i] = new_node(OP_MISSING); return nd; }
    return fold(nd);
}

static struct node *compile_plain(struct cc *c, json_t *v, int depth)
{
    struct node *nd = new_node(OP_OBJECT);
    nd->n = json_object_size(v);
    nd->kid = xmalloc0(nd->n * sizeof *nd->kid);
    nd->key = xmalloc0(nd->n * sizeof *nd->key);
    size_t i = 0;
    for (void *it = json_object_iter(v); it && i < nd->n; it = json_object_iter_next(v, it), i++) {
        const char *k = json_object_iter_key(it);
        size_t kn = json_object_iter_key_len(it);
        nd->key[i].p = xmemdup(k, kn);
        nd->key[i].n = kn;
        size_t mark = loc_push_key(c, k, kn);
        nd->kid[i] = c->too_deep ? new_node(OP_MISSING) : compile(c, json_object_iter_value(it), depth);
        c->loc.len = mark;
    }
    if (c->too_deep) return nd;
    return fold(nd);
}

/* The name bound by `as` / `accumulator` (§4 $map): not evaluated; absent
 * or falsy gives the default, a string is used as written, anything else
 * its text. */
static void loop_name(struct seg *out, json_t *as, const char *def)
{
    struct sbuf b = { 0 };
    if (!truthy(as)) sbuf_add(&b, def, strlen(def));
    else to_text(&b, as);
    out->n = b.len;
    out->p = xmemdup(b.p ? b.p : "", b.len);
    sbuf_free(&b);
}

static struct node *member(struct cc *c, json_t *obj, const char *name, int depth)
{
    json_t *m = json_object_get(obj, name);
    if (!m) return NULL;
    size_t mark = loc_push_key(c, name, strlen(name));
    struct node *nd = compile(c, m, depth);
    c->loc.len = mark;
    return nd;
}

static struct node *compile_loop(struct cc *c, enum op op, const char *opname, json_t *arg, int depth)
{
    if (!json_is_object(arg)) return fail_node(c, "%s needs an object {array, as, %s}", opname,
                                               op == OP_FILTER ? "condition" : "expr");
    if (depth + 1 > JL_MAX_DEPTH) { c->too_deep = true; return new_node(OP_MISSING); }
    struct node *nd = new_node(op);
    nd->n = op == OP_REDUCE ? 3 : 2;
    nd->kid = xmalloc0(nd->n * sizeof *nd->kid);
    nd->kid[0] = member(c, arg, "array", depth + 1);
    if (!nd->kid[0]) nd->kid[0] = new_node(OP_MISSING);
    nd->kid[1] = member(c, arg, op == OP_FILTER ? "condition" : "expr", depth + 1);
    loop_name(&nd->name, json_object_get(arg, "as"), "item");
    if (op == OP_REDUCE) {
        nd->kid[2] = member(c, arg, "initial", depth + 1);
        loop_name(&nd->acc, json_object_get(arg, "accumulator"), "acc");
    }
    set_where(c, nd);
    return nd;
}

/* Operators whose argument is an array written in the expression (§3):
 * its first `max` elements become the kids. */
static struct node *compile_args(struct cc *c, enum op op, const char *opname, json_t *arg, int depth, size_t max)
{
    if (!json_is_array(arg)) return fail_node(c, "%s needs an array of arguments", opname);
    if (depth + 1 > JL_MAX_DEPTH) { c->too_deep = true; return new_node(OP_MISSING); }
    struct node *nd = new_node(op);
    size_t n = json_array_size(arg);
    nd->n = n < max ? n : max;
    nd->kid = xmalloc0(nd->n * sizeof *nd->kid);
    for (size_t i = 0; i < nd->n; i++) {
        size_t mark = loc_push_index(c, i);
        nd->kid[i] = c->too_deep ? new_node(OP_MISSING) : compile(c, json_array_get(arg, i), depth + 1);
        c->loc.len = mark;
    }
    set_where(c, nd);
    return nd;
}

static struct node *compile_var(struct cc *c, json_t *arg)
{
    if (!json_is_string(arg)) return fail_node(c, "$var needs a string path");
    const char *p = json_string_value(arg);
    size_t len = json_string_length(arg), nseg = 1;
    for (size_t i = 0; i < len; i++) nseg += p[i] == '.';
    struct node *nd = new_node(OP_VAR);
    nd->n = nseg;
    nd->seg = xmalloc0(nseg * sizeof *nd->seg);
    size_t start = 0, k = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || p[i] == '.') {
            nd->seg[k].p = xmemdup(p + start, i - start);
            nd->seg[k].n = i - start;
            k++;
            start = i + 1;
        }
    }
    return nd;
}

static struct node *compile_op(struct cc *c, enum op op, const char *name, json_t *arg, int depth)
{
    switch (op) {
    case OP_VAR: return compile_var(c, arg);
    case OP_NOT: case OP_LENGTH: {
        struct node *nd = new_node(op);
        nd->n = 1;
        nd->kid = xmalloc0(sizeof *nd->kid);
        nd->kid[0] = compile(c, arg, depth);
        set_where(c, nd);
        return nd;
    }
    case OP_IF: case OP_SUBSTRING: return compile_args(c, op, name, arg, depth, 3);
    case OP_GET: case OP_HAS: return compile_args(c, op, name, arg, depth, 2);
    case OP_MAP: case OP_FILTER: case OP_REDUCE: return compile_loop(c, op, name, arg, depth);
    default: return compile_args(c, op, name, arg, depth, SIZE_MAX);
    }
}

/* `depth`: containers enclosing v (§8 counts one level per array or
 * object of the expression).  An operator's own object is one level; its
 * argument array another. */
static struct node *compile(struct cc *c, json_t *v, int depth)
{
    if (!json_is_array(v) && !json_is_object(v)) return const_node(v);
    if (depth + 1 > JL_MAX_DEPTH) { c->too_deep = true; return new_node(OP_MISSING); }
    if (json_is_array(v)) return compile_array(c, v, depth + 1);
    void *it = json_object_iter(v);
    if (!it) { struct node *e = new_node(OP_CONST); e->lit = json_object(); return e; }
    const char *k = json_object_iter_key(it);
    size_t kn = json_object_iter_key_len(it);
    if (kn == 0 || k[0] != '$') return compile_plain(c, v, depth + 1);
    size_t mark = loc_push_key(c, k, kn);
    struct node *nd = NULL;
    for (size_t i = 0; i < sizeof g_ops / sizeof *g_ops; i++) {
        if (strlen(g_ops[i].name) == kn && memcmp(g_ops[i].name, k, kn) == 0 && (!g_ops[i].ext || c->ext)) {
            nd = compile_op(c, g_ops[i].op, g_ops[i].name, json_object_iter_value(it), depth + 1);
            break;
        }
    }
    if (!nd) nd = fail_node(c, "unknown operator '%.*s' (data whose first key starts with '$' needs another key first)",
                            (int)(kn > 40 ? 40 : kn), k);
    c->loc.len = mark;
    return nd;
}

struct jl_expr *jl_compile(json_t *expr, bool extensions, char *err, size_t errlen)
{
    struct cc c = { .ext = extensions };
    sbuf_lit(&c.loc, "expr");
    struct node *root;
    json_t *flag = json_is_object(expr) ? json_object_get(expr, "__jsonlex") : NULL;
    if (flag && !truthy(flag)) {
        /* §2: a falsy envelope is returned unchanged, never evaluated. */
        root = new_node(OP_CONST);
        root->lit = json_deep_copy(expr);
    } else if (flag) {
        json_t *inner = json_object_get(expr, "expr");
        root = inner ? compile(&c, inner, 0) : new_node(OP_MISSING);
    } else {
        root = compile(&c, expr, 0);
    }
    sbuf_free(&c.loc);
    if (c.too_deep) {
        node_free(root);
        snprintf(err, errlen, "the expression nests deeper than %d levels", JL_MAX_DEPTH);
        return NULL;
    }
    struct jl_expr *e = xmalloc0(sizeof *e);
    e->root = root;
    return e;
}

/* ---- evaluating ------------------------------------------------------ */

struct scope { const struct seg *name; json_t *val; const struct scope *up; };

struct ev {
    const struct jl_limits *lim;
    uint64_t steps;
    json_t *ctx;
    jl_resolve_fn resolve;      /* instead of ctx, when set */
    void *rud;
    char *err;
    size_t errlen;
    bool marked;          /* a missing marker went into some array */
};

static int eval(struct ev *e, const struct node *nd, const struct scope *sc, json_t **out);

static int ev_fail(struct ev *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ev_fail(struct ev *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* A canonical array index (§4 $var): digits, no sign, no leading zero. */
static bool canonical_index(const char *p, size_t n, size_t limit, size_t *out)
{
    if (n == 0 || n > 19 || (n > 1 && p[0] == '0')) return false;
    size_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return false;
        v = v * 10 + (size_t)(p[i] - '0');
    }
    if (v >= limit) return false;
    *out = v;
    return true;
}

/* One lookup step (H1: only members present in the data, array indexes
 * and `length`).  Returns a borrowed value, or NULL (missing); *len_out is
 * set instead for an array's `length`. */
static json_t *step(json_t *cur, const char *p, size_t n, bool *is_len, size_t *len_out)
{
    *is_len = false;
    if (json_is_object(cur)) return json_object_getn(cur, p, n);
    if (!json_is_array(cur)) return NULL;
    size_t idx, size = json_array_size(cur);
    if (n == 6 && memcmp(p, "length", 6) == 0) { *is_len = true; *len_out = size; return NULL; }
    return canonical_index(p, n, size, &idx) ? json_array_get(cur, idx) : NULL;
}

/* Walks segs[from..n) from cur; returns a new reference or NULL. */
static json_t *walk(json_t *cur, const struct seg *segs, size_t from, size_t n)
{
    for (size_t i = from; i < n && cur; i++) {
        bool is_len;
        size_t len;
        cur = step(cur, segs[i].p, segs[i].n, &is_len, &len);
        if (is_len) return i + 1 == n ? json_integer((json_int_t)len) : NULL;
    }
    return cur && !IS_MISSING(cur) ? json_incref(cur) : NULL;
}

static json_t *lookup(struct ev *e, const struct node *nd, const struct scope *sc)
{
    const struct seg *first = &nd->seg[0];
    for (; sc; sc = sc->up)
        if (sc->name->n == first->n && memcmp(sc->name->p, first->p, first->n) == 0)
            return walk(sc->val, nd->seg, 1, nd->n);
    if (e->resolve) return e->resolve(e->rud, nd->seg, nd->n);
    return walk(e->ctx, nd->seg, 0, nd->n);
}

static int eval_kid(struct ev *e, const struct node *nd, size_t i, const struct scope *sc, json_t **out)
{
    *out = NULL;
    if (i >= nd->n || !nd->kid[i]) return 0;   /* an absent position is missing */
    return eval(e, nd->kid[i], sc, out);
}

/* Evaluates every argument left to right, keeping the first two. */
static int eval_pair(struct ev *e, const struct node *nd, const struct scope *sc, json_t **a, json_t **b)
{
    *a = *b = NULL;
    for (size_t i = 0; i < nd->n; i++) {
        json_t *v;
        if (eval(e, nd->kid[i], sc, &v)) { json_decref(*a); json_decref(*b); *a = *b = NULL; return -1; }
        if (i == 0) *a = v;
        else if (i == 1) *b = v;
        else json_decref(v);
    }
    return 0;
}

/* §4 $gt/$lt (and §12 $gte/$lte): JavaScript's relational comparison.
 * Returns -1, 0 or 1, or 2 when either side is NaN. */
static int js_compare(const json_t *a, const json_t *b)
{
    bool as = a && (json_is_string(a) || json_is_array(a) || json_is_object(a));
    bool bs = b && (json_is_string(b) || json_is_array(b) || json_is_object(b));
    struct sbuf ta = { 0 }, tb = { 0 };
    double x = 0, y = 0;
    int r;
    if (as) to_text(&ta, a);
    if (bs) to_text(&tb, b);
    if (as && bs) {
        size_t n = ta.len < tb.len ? ta.len : tb.len;
        int c = n ? memcmp(ta.p, tb.p, n) : 0;   /* H8: UTF-8 byte order = code point order */
        r = c < 0 ? -1 : c > 0 ? 1 : ta.len < tb.len ? -1 : ta.len > tb.len ? 1 : 0;
    } else {
        x = !a ? NAN : as ? jl_text_number(ta.p ? ta.p : "", ta.len) : json_is_number(a) ? num_of(a) :
            json_is_true(a) ? 1 : 0;
        y = !b ? NAN : bs ? jl_text_number(tb.p ? tb.p : "", tb.len) : json_is_number(b) ? num_of(b) :
            json_is_true(b) ? 1 : 0;
        r = (x != x || y != y) ? 2 : x < y ? -1 : x > y ? 1 : 0;
    }
    sbuf_free(&ta);
    sbuf_free(&tb);
    return r;
}

static int eval_compare(struct ev *e, const struct node *nd, const struct scope *sc, json_t **out)
{
    json_t *a, *b;
    if (eval_pair(e, nd, sc, &a, &b)) return -1;
    bool r;
    if (nd->op == OP_EQ || nd->op == OP_NE) {
        r = missing_eq(a, b) == (nd->op == OP_EQ);
    } else {
        int c = js_compare(a, b);
        r = c != 2 && (nd->op == OP_GT ? c > 0 : nd->op == OP_LT ? c < 0 : nd->op == OP_GTE ? c >= 0 : c <= 0);
    }
    json_decref(a);
    json_decref(b);
    *out = json_boolean(r);
    return 0;
}

static int eval_logic(struct ev *e, const struct node *nd, const struct scope *sc, json_t **out)
{
    bool want = nd->op == OP_OR;   /* the value that decides */
    for (size_t i = 0; i < nd->n; i++) {
        json_t *v;
        if (eval(e, nd->kid[i], sc, &v)) return -1;
        bool t = truthy(v);
        json_decref(v);
        if (t == want) { *out = json_boolean(want); return 0; }
    }
    *out = json_boolean(!want);
    return 0;
}

static int text_cap(struct ev *e, const struct sbuf *b)
{
    if (e->lim && e->lim->max_text && b->len > e->lim->max_text)
        return ev_fail(e, "text longer than %zu bytes", e->lim->max_text);
    return 0;
}

static int eval_concat(struct ev *e, const struct node *nd, const struct scope *sc, json_t **out)
{
    struct sbuf b = { 0 };
    for (size_t i = 0; i < nd->n; i++) {
        json_t *v;
        if (eval(e, nd->kid[i], sc, &v)) { sbuf_free(&b); return -1; }
        to_text(&b, v);
        json_decref(v);
        if (text_cap(e, &b)) { sbuf_free(&b); return -1; }
    }
    *out = json_stringn_nocheck(b.p ? b.p : "", b.len);
    sbuf_free(&b);
    return 0;
}

static int eval_if(struct ev *e, const struct node *nd, const struct scope *sc, json_t **out)
{
    json_t *cond;
    if (eval_kid(e, nd, 0, sc, &cond)) return -1;
    bool t = truthy(cond);
    json_decref(cond);
    return eval_kid(e, nd, t ? 1 : 2, sc, out);
}

static int budget(struct ev *e)
{
    if (e->lim && e->lim->max_steps && ++e->steps > e->lim->max_steps)
        return ev_fail(e, "evaluation budget of %llu steps exceeded", (unsigned long long)e->lim->max_steps);
    return 0;
}

static const char *op_name(enum op op)
{
    for (size_t i = 0; i < sizeof g_ops / sizeof *g_ops; i++) if (g_ops[i].op == op) return g_ops[i].name;
    return "?";
}

/* $map, $filter, $reduce: the item (and accumulator) bound in a scope
 * chain instead of copying the context per element (§8). */
static int eval_loop(struct ev *e, const struct node *nd, const struct scope *sc, json_t **out)
{
    json_t *arr;
    if (eval(e, nd->kid[0], sc, &arr)) return -1;
    if (!json_is_array(arr)) {
        json_decref(arr);
        return ev_fail(e, "%s: 'array' must give an array (at %s)", op_name(nd->op), nd->msg);
    }
    json_t *acc = NULL, *res = nd->op == OP_REDUCE ? NULL : json_array();
    if (nd->op == OP_REDUCE) {
        if (eval_kid(e, nd, 2, sc, &acc)) { json_decref(arr); return -1; }
        if (!acc) acc = json_null();
    }
    size_t n = json_array_size(arr);
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(arr, i), *v;
        struct scope s_acc = { &nd->acc, acc, sc };
        struct scope s_item = { &nd->name, item, nd->op == OP_REDUCE ? &s_acc : sc };
        if (budget(e) || eval_kid(e, nd, 1, &s_item, &v)) { json_decref(arr); json_decref(res); json_decref(acc); return -1; }
        if (nd->op == OP_MAP) { json_array_append_new(res, v ? v : json_incref(missing_marker())); e->marked = true; }
        else if (nd->op == OP_FILTER) { if (truthy(v)) json_array_append(res, item); json_decref(v); }
        else { json_decref(acc); acc = v ? v : json_null(); }
    }
    json_decref(arr);
    *out = nd->op == OP_REDUCE ? acc : res;
    return 0;
}

/* An integral number argument, for $substring. */
static bool integral(const json_t *v, long long *out)
{
    if (json_is_integer(v)) { *out = json_integer_value(v); return true; }
    if (!json_is_real(v)) return false;
    double d = json_real_value(v);
    if (d != trunc(d) || fabs(d) > 9007199254740992.0) return false;
    *out = (long long)d;
    return true;
}

static size_t utf8_count(const char *p, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)p[i] & 0xC0) != 0x80;
    return c;
}

/* Byte offset of code point `cp` (clamped to the end). */
static size_t utf8_offset(const char *p, size_t n, size_t cp)
{
    size_t i = 0;
    while (i < n && cp) {
        i++;
        while (i < n && ((unsigned char)p[i] & 0xC0) == 0x80) i++;
        cp--;
    }
    return i;
}

static int eval_length(struct ev *e, const struct node *nd, const struct scope *sc, json_t **out)
{
    json_t *v;
    if (eval_kid(e, nd, 0, sc, &v)) return -1;
    size_t n;
    if (json_is_array(v)) n = json_array_size(v);
    else if (json_is_object(v)) n = json_object_size(v);
    else if (json_is_string(v)) n = utf8_count(json_string_value(v), json_string_length(v));
    else { json_decref(v); return ev_fail(e, "$length needs an array, a string or an object (at %s)", nd->msg); }
    json_decref(v);
    *out = json_integer((json_int_t)n);
    return 0;
}

static int eval_substring(struct ev *e, const struct node *nd, const struct scope *sc, json_t **out)
{
    json_t *s, *st, *cnt;
    if (eval_kid(e, nd, 0, sc, &s)) return -1;
    struct sbuf b = { 0 };
    to_text(&b, s);
    json_decref(s);
    long long start, count = -1;
    int rc = eval_kid(e, nd, 1, sc, &st);
    bool ok = rc == 0 && integral(st, &start);
    json_decref(st);
    if (ok && nd->n > 2) {
        rc = eval_kid(e, nd, 2, sc, &cnt);
        ok = rc == 0 && integral(cnt, &count) && count >= 0;
        json_decref(cnt);
    }
    if (!ok) {
        sbuf_free(&b);
        return rc ? -1 : ev_fail(e, "$substring needs [text, start, count?] with integer start and count >= 0 (at %s)", nd->msg);
    }
    long long len = (long long)utf8_count(b.p ? b.p : "", b.len);
    if (start < 0) start = start + len < 0 ? 0 : start + len;
    if (start > len) start = len;
    long long end = count < 0 || count > len - start ? len : start + count;
    size_t from = utf8_offset(b.p, b.len, (size_t)start), to = utf8_offset(b.p, b.len, (size_t)end);
    *out = json_stringn_nocheck(b.p ? b.p + from : "", to - from);
    sbuf_free(&b);
    return 0;
}

/* $get / $has: [value, string]. */
static int eval_get_has(struct ev *e, const struct node *nd, const struct scope *sc, json_t **out)
{
    json_t *v, *k;
    if (eval_pair(e, nd, sc, &v, &k)) return -1;
    if (!json_is_string(k)) {
        json_decref(v);
        json_decref(k);
        return ev_fail(e, "%s needs [value, %s] with a string (at %s)", op_name(nd->op),
                       nd->op == OP_GET ? "path" : "key", nd->msg);
    }
    const char *p = json_string_value(k);
    size_t n = json_string_length(k);
    if (nd->op == OP_HAS) {
        size_t idx;
        bool has = json_is_object(v) ? json_object_getn(v, p, n) != NULL :
                   json_is_array(v) && canonical_index(p, n, json_array_size(v), &idx);
        *out = json_boolean(has);
    } else {
        /* The path split at every dot, looked up from v (§4 $var rules). */
        json_t *cur = v;
        json_t *owned = NULL;
        size_t start = 0;
        for (size_t i = 0; i <= n && cur; i++) {
            if (i < n && p[i] != '.') continue;
            bool is_len;
            size_t len;
            cur = step(cur, p + start, i - start, &is_len, &len);
            if (IS_MISSING(cur)) cur = NULL;
            if (is_len) { cur = NULL; if (i == n) owned = json_integer((json_int_t)len); }
            start = i + 1;
        }
        *out = owned ? owned : cur ? json_incref(cur) : NULL;
    }
    json_decref(v);
    json_decref(k);
    return 0;
}

static int eval_container(struct ev *e, const struct node *nd, const struct scope *sc, json_t **out)
{
    json_t *r = nd->op == OP_ARRAY ? json_array() : json_object();
    for (size_t i = 0; i < nd->n; i++) {
        json_t *v;
        if (eval(e, nd->kid[i], sc, &v)) { json_decref(r); return -1; }
        if (nd->op == OP_ARRAY) {
            if (!v) { v = json_incref(missing_marker()); e->marked = true; }
            json_array_append_new(r, v);
        }
        else if (v) json_object_setn_new_nocheck(r, nd->key[i].p, nd->key[i].n, v);   /* missing: left out */
    }
    *out = r;
    return 0;
}

static int eval(struct ev *e, const struct node *nd, const struct scope *sc, json_t **out)
{
    *out = NULL;
    if (budget(e)) return -1;
    switch (nd->op) {
    case OP_CONST: *out = json_incref(nd->lit); return 0;
    case OP_MISSING: return 0;
    case OP_FAIL: return ev_fail(e, "%s", nd->msg);
    case OP_ARRAY: case OP_OBJECT: return eval_container(e, nd, sc, out);
    case OP_VAR: *out = lookup(e, nd, sc); return 0;
    case OP_EQ: case OP_NE: case OP_GT: case OP_LT: case OP_GTE: case OP_LTE: return eval_compare(e, nd, sc, out);
    case OP_AND: case OP_OR: return eval_logic(e, nd, sc, out);
    case OP_NOT: {
        json_t *v;
        if (eval_kid(e, nd, 0, sc, &v)) return -1;
        *out = json_boolean(!truthy(v));
        json_decref(v);
        return 0;
    }
    case OP_IF: return eval_if(e, nd, sc, out);
    case OP_CONCAT: return eval_concat(e, nd, sc, out);
    case OP_MAP: case OP_FILTER: case OP_REDUCE: return eval_loop(e, nd, sc, out);
    case OP_LENGTH: return eval_length(e, nd, sc, out);
    case OP_SUBSTRING: return eval_substring(e, nd, sc, out);
    case OP_GET: case OP_HAS: return eval_get_has(e, nd, sc, out);
    }
    return ev_fail(e, "internal error: bad node");
}

/* Replaces missing markers by null in arrays built during this
 * evaluation.  Only those can hold a marker, so changing them in place
 * never touches the context or a compiled constant. */
static void unmark(json_t *v)
{
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *el = json_array_get(v, i);
            if (IS_MISSING(el)) json_array_set_new(v, i, json_null());
            else unmark(el);
        }
    } else if (json_is_object(v)) {
        for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) unmark(json_object_iter_value(it));
    }
}

json_t *jl_walk(json_t *v, const struct jl_seg *segs, size_t from, size_t n) { return walk(v, segs, from, n); }

static int eval_root(struct ev *e, const struct jl_expr *x, json_t **out, uint64_t *steps);

int jl_eval(const struct jl_expr *x, json_t *ctx, const struct jl_limits *lim, json_t **out,
            uint64_t *steps, char *err, size_t errlen)
{
    struct ev e = { .lim = lim, .ctx = json_is_null(ctx) ? NULL : ctx, .err = err, .errlen = errlen };
    return eval_root(&e, x, out, steps);
}

int jl_eval_resolved(const struct jl_expr *x, jl_resolve_fn fn, void *ud, const struct jl_limits *lim, json_t **out,
                     uint64_t *steps, char *err, size_t errlen)
{
    struct ev e = { .lim = lim, .resolve = fn, .rud = ud, .err = err, .errlen = errlen };
    return eval_root(&e, x, out, steps);
}

static int eval_root(struct ev *ep, const struct jl_expr *x, json_t **out, uint64_t *steps)
{
    struct ev e = *ep;
    json_t *v;
    int rc = eval(&e, x->root, NULL, &v);
    if (steps) *steps = e.steps;
    if (rc) return -1;
    if (e.marked && v) unmark(v);
    *out = v ? v : json_null();   /* a missing result is null (§1) */
    return 0;
}

/* ---- the cache ------------------------------------------------------- */

struct centry {
    json_t *src;               /* the expression (a private copy) */
    uint64_t hash;
    struct jl_expr *x;
    struct centry *hnext;      /* bucket chain */
    struct centry *prev, *next;/* LRU list, most recent first */
};

struct jl_cache {
    struct centry **bucket;
    size_t nbuckets, n, max;
    bool ext;
    struct centry *head, *tail;
    uint64_t hits, misses, evictions;
};

static uint64_t mix(uint64_t h, uint64_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); return h; }

static uint64_t bytes_hash(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
    return mix(h, n);
}

/* Hash of a value with member order (the first key decides, §3). */
static uint64_t value_hash(const json_t *v, uint64_t h)
{
    h = mix(h, (uint64_t)json_typeof(v));
    switch (json_typeof(v)) {
    case JSON_STRING: return bytes_hash(h, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: return mix(h, (uint64_t)json_integer_value(v));
    case JSON_REAL: { double d = json_real_value(v); uint64_t u; memcpy(&u, &d, sizeof u); return mix(h, u); }
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(v); i++) h = value_hash(json_array_get(v, i), h);
        return mix(h, json_array_size(v));
    case JSON_OBJECT:
        for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
            h = bytes_hash(h, json_object_iter_key(it), json_object_iter_key_len(it));
            h = value_hash(json_object_iter_value(it), h);
        }
        return mix(h, json_object_size(v));
    default: return h;
    }
}

/* Identical values, in the same member order, numbers of the same kind. */
static bool same_value(const json_t *a, const json_t *b)
{
    if (json_typeof(a) != json_typeof(b)) return false;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_INTEGER: return json_integer_value(a) == json_integer_value(b);
    case JSON_REAL: return memcmp(&(double){ json_real_value(a) }, &(double){ json_real_value(b) }, sizeof(double)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same_value(json_array_get(a, i), json_array_get(b, i))) return false;
        return true;
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b)) return false;
        void *ia = json_object_iter((json_t *)a), *ib = json_object_iter((json_t *)b);
        for (; ia && ib; ia = json_object_iter_next((json_t *)a, ia), ib = json_object_iter_next((json_t *)b, ib)) {
            size_t n = json_object_iter_key_len(ia);
            if (n != json_object_iter_key_len(ib) || memcmp(json_object_iter_key(ia), json_object_iter_key(ib), n) ||
                !same_value(json_object_iter_value(ia), json_object_iter_value(ib)))
                return false;
        }
        return !ia && !ib;
    }
    default: return true;
    }
}

struct jl_cache *jl_cache_new(size_t max_entries, bool extensions)
{
    struct jl_cache *c = xmalloc0(sizeof *c);
    c->max = max_entries ? max_entries : 1;
    c->nbuckets = 16;
    while (c->nbuckets < c->max * 2) c->nbuckets *= 2;
    c->bucket = xmalloc0(c->nbuckets * sizeof *c->bucket);
    c->ext = extensions;
    return c;
}

static void lru_unlink(struct jl_cache *c, struct centry *e)
{
    if (e->prev) e->prev->next = e->next; else c->head = e->next;
    if (e->next) e->next->prev = e->prev; else c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct jl_cache *c, struct centry *e)
{
    e->next = c->head;
    e->prev = NULL;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

static void entry_free(struct centry *e)
{
    json_decref(e->src);
    jl_free(e->x);
    free(e);
}

static void evict_one(struct jl_cache *c)
{
    struct centry *e = c->tail;
    lru_unlink(c, e);
    for (struct centry **pp = &c->bucket[e->hash & (c->nbuckets - 1)]; *pp; pp = &(*pp)->hnext)
        if (*pp == e) { *pp = e->hnext; break; }
    entry_free(e);
    c->n--;
    c->evictions++;
}

const struct jl_expr *jl_cache_get(struct jl_cache *c, json_t *expr, char *err, size_t errlen)
{
    uint64_t h = value_hash(expr, 0);
    struct centry **b = &c->bucket[h & (c->nbuckets - 1)];
    for (struct centry *e = *b; e; e = e->hnext) {
        if (e->hash == h && same_value(e->src, expr)) {
            c->hits++;
            if (c->head != e) { lru_unlink(c, e); lru_push(c, e); }
            return e->x;
        }
    }
    c->misses++;
    struct jl_expr *x = jl_compile(expr, c->ext, err, errlen);
    if (!x) return NULL;
    if (c->n >= c->max) { evict_one(c); b = &c->bucket[h & (c->nbuckets - 1)]; }
    struct centry *e = xmalloc0(sizeof *e);
    e->src = json_deep_copy(expr);
    e->hash = h;
    e->x = x;
    e->hnext = *b;
    *b = e;
    lru_push(c, e);
    c->n++;
    return x;
}

void jl_cache_free(struct jl_cache *c)
{
    if (!c) return;
    while (c->head) {
        struct centry *e = c->head;
        c->head = e->next;
        entry_free(e);
    }
    free(c->bucket);
    free(c);
}

void jl_cache_stats(const struct jl_cache *c, struct jl_cache_stats *s)
{
    s->hits = c->hits;
    s->misses = c->misses;
    s->evictions = c->evictions;
    s->entries = c->n;
    s->max_entries = c->max;
}
