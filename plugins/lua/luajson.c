/* JSON <-> Lua conversion (see luajson.h for the mapping). */
#include "config.h"
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "luajson.h"

/* Registry keys (addresses) and the null value. */
static char k_array, k_object, k_order, k_bignum, k_guard;
static char g_null_tag;


/* ---- metatables ------------------------------------------------------- */

static const char *bignum_text(lua_State *L, int idx, size_t *n)
{
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_bignum);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!same) return NULL;
    const char *p = lua_touserdata(L, idx);
    *n = strlen(p);
    return p;
}

static void push_bignum(lua_State *L, const char *p, size_t n)
{
    char *u = lua_newuserdatauv(L, n + 1, 0);
    memcpy(u, p, n);
    u[n] = 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_bignum);
    lua_setmetatable(L, -2);
}

static int big_tostring(lua_State *L)
{
    size_t n;
    const char *p = bignum_text(L, 1, &n);
    lua_pushlstring(L, p ? p : "?", p ? n : 1);
    return 1;
}

static int big_eq(lua_State *L)
{
    size_t a, b;
    const char *x = bignum_text(L, 1, &a), *y = bignum_text(L, 2, &b);
    lua_pushboolean(L, x && y && a == b && memcmp(x, y, a) == 0);
    return 1;
}

static lua_Number big_num(lua_State *L, int idx)
{
    size_t n;
    const char *p = bignum_text(L, idx, &n);
    if (p) return strtod(p, NULL);
    return luaL_checknumber(L, idx);
}

/* Arithmetic and comparison on a bignum use its nearest float. */
static int big_arith(lua_State *L)
{
    lua_Number a = big_num(L, 1), b = big_num(L, 2);
    const char *op = lua_tostring(L, lua_upvalueindex(1));
    lua_Number r;
    switch (op[0]) {
    case '+': r = a + b; break;
    case '-': r = a - b; break;
    case '*': r = a * b; break;
    case '/': r = a / b; break;
    case '<': lua_pushboolean(L, op[1] ? a <= b : a < b); return 1;
    case 'u': r = -a; break;
    default: r = pow(a, b); break;
    }
    lua_pushnumber(L, r);
    return 1;
}

static int guard_gc(lua_State *L);

void lj_init(lua_State *L)
{
    /* Protected metatables: getmetatable() returns the string, and no
     * script can alter them or give a table another one by mistake. */
    lua_newtable(L);
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_array);
    lua_newtable(L);
    lua_pushliteral(L, "object");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_object);
    /* Member order of decoded objects: object -> {key1, key2, ...}. */
    lua_newtable(L);
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_order);
    lua_newtable(L);
    lua_pushliteral(L, "bignum");
    lua_setfield(L, -2, "__metatable");
    lua_pushliteral(L, "bignum");
    lua_setfield(L, -2, "__name");
    lua_pushcfunction(L, big_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, big_eq);
    lua_setfield(L, -2, "__eq");
    static const char *const ops[][2] = { { "__add", "+" }, { "__sub", "-" }, { "__mul", "*" }, { "__div", "/" },
                                          { "__pow", "^" }, { "__unm", "u" }, { "__lt", "<" }, { "__le", "<=" } };
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        lua_pushstring(L, ops[i][1]);
        lua_pushcclosure(L, big_arith, 1);
        lua_setfield(L, -2, ops[i][0]);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_bignum);
    lua_newtable(L);
    lua_pushcfunction(L, guard_gc);
    lua_setfield(L, -2, "__gc");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_guard);
}

void lj_push_null(lua_State *L) { lua_pushlightuserdata(L, &g_null_tag); }

int lj_is_null(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == &g_null_tag;
}

static void set_mt(lua_State *L, int idx, const void *key)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, key);
    lua_setmetatable(L, idx);
}

void lj_set_array(lua_State *L, int idx) { set_mt(L, idx, &k_array); }
void lj_set_object(lua_State *L, int idx) { set_mt(L, idx, &k_object); }

static int has_mt(lua_State *L, int idx, const void *key)
{
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, key);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

int lj_is_array(lua_State *L, int idx) { return has_mt(L, idx, &k_array); }
int lj_is_object(lua_State *L, int idx) { return has_mt(L, idx, &k_object); }

/* Records the order list at the top for the object at obj; pops it. */
static void set_order(lua_State *L, int obj)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_order);
    lua_pushvalue(L, obj);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 2);
}

/* ---- numbers ------------------------------------------------------------- */

size_t lj_int_text(long long v, char buf[static 24])
{
    char t[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do { t[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    size_t o = 0;
    if (v < 0) buf[o++] = '-';
    while (n) buf[o++] = t[--n];
    buf[o] = 0;
    return o;
}

size_t lj_float_text(double d, char buf[static 40])
{
    int n = 0;
    /* %.15g is the shortest whenever a shortest form has <= 15 digits;
     * otherwise 16 or 17 digits are needed. */
    for (int p = 15; p <= 17; p++) {
        n = snprintf(buf, 40, "%.*g", p, d);
        if (strtod(buf, NULL) == d) break;
    }
    if (!strpbrk(buf, ".eEn")) { buf[n++] = '.'; buf[n++] = '0'; buf[n] = 0; }
    return (size_t)n;
}

/* ---- parsing (one strict parser, two builders: Lua values and jansson) --- */

enum jkind { JK_NULL, JK_TRUE, JK_FALSE, JK_INT, JK_REAL, JK_BIG, JK_STRING };

struct builder {
    /* A scalar (p/n: a string's decoded bytes, a bignum's text). */
    int (*scalar)(struct builder *b, enum jkind k, const char *p, size_t n, long long i, double d);
    int (*open)(struct builder *b, bool array);
    /* An object member's name; -1 (with err) on a duplicate. */
    int (*key)(struct builder *b, const char *p, size_t n);
    /* The element or member value just built belongs to its container. */
    int (*add)(struct builder *b);
    void (*close)(struct builder *b, bool array);
    const char *err;
};

struct dec {
    const unsigned char *p, *end;
    int max;
    const char *err;
    struct sbuf tmp;           /* unescaped strings */
    struct builder *b;
};

static void skip_ws(struct dec *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r')) d->p++;
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], x;
        if (c >= '0' && c <= '9') x = c - '0';
        else if (c >= 'a' && c <= 'f') x = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') x = c - 'A' + 10;
        else return -1;
        v = v * 16 + x;
    }
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, at most U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (!n || c > 0xF4 || (size_t)(end - p) < n) return 0;
    for (size_t i = 1; i < n; i++) if ((p[i] & 0xC0) != 0x80) return 0;
    if (n == 3 && ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F))) return 0;
    if (n == 4 && ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F))) return 0;
    return n;
}

static void put_utf8(struct sbuf *b, unsigned cp)
{
    char t[4];
    size_t n;
    if (cp < 0x80) { t[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { t[0] = (char)(0xC0 | cp >> 6); t[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | cp >> 12); t[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); t[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        t[0] = (char)(0xF0 | cp >> 18); t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); t[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    sbuf_add(b, t, n);
}

/* An escaped string, from start (just past the quote): into d->tmp. */
static int unescape(struct dec *d, const unsigned char *start)
{
    struct sbuf *b = &d->tmp;
    const unsigned char *p = start;
    b->len = 0;
    for (;;) {
        const unsigned char *run = p;
        while (p < d->end && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x80) p++;
        sbuf_add(b, (const char *)run, (size_t)(p - run));
        if (p >= d->end) { d->err = "unterminated string"; return -1; }
        if (*p == '"') break;
        if (*p < 0x20) { d->err = "control character in string"; return -1; }
        if (*p >= 0x80) {
            size_t n = utf8_len(p, d->end);
            if (!n) { d->err = "invalid UTF-8 in string"; return -1; }
            sbuf_add(b, (const char *)p, n);
            p += n;
            continue;
        }
        if (++p >= d->end) { d->err = "unterminated string"; return -1; }
        char c = (char)*p++;
        switch (c) {
        case '"': case '\\': case '/': sbuf_addc(b, c); break;
        case 'b': sbuf_addc(b, '\b'); break;
        case 'f': sbuf_addc(b, '\f'); break;
        case 'n': sbuf_addc(b, '\n'); break;
        case 'r': sbuf_addc(b, '\r'); break;
        case 't': sbuf_addc(b, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (d->end - p < 4 || hex4(p, &cp)) { d->err = "bad \\u escape"; return -1; }
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && d->end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
                hex4(p + 2, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            put_utf8(b, cp);   /* a lone surrogate: its WTF-8 bytes (written back as \uXXXX) */
            break;
        }
        default: d->err = "bad escape in string"; return -1;
        }
    }
    d->p = p + 1;
    return 0;
}

/* A string (member name or value): its bytes in *out / *n, borrowed from
 * the input when it has no escapes, else from d->tmp. */
static int d_string(struct dec *d, const char **out, size_t *n)
{
    const unsigned char *start = ++d->p, *p = start;
    while (p < d->end) {
        unsigned c = *p;
        if (c == '"') {
            *out = (const char *)start;
            *n = (size_t)(p - start);
            d->p = p + 1;
            return 0;
        }
        if (c == '\\') {
            if (unescape(d, start)) return -1;
            *out = d->tmp.p ? d->tmp.p : "";
            *n = d->tmp.len;
            return 0;
        }
        if (c < 0x20) { d->err = "control character in string"; return -1; }
        if (c < 0x80) { p++; continue; }
        size_t k = utf8_len(p, d->end);
        if (!k) { d->err = "invalid UTF-8 in string"; return -1; }
        p += k;
    }
    d->err = "unterminated string";
    return -1;
}

static int d_number(struct dec *d)
{
    const unsigned char *s = d->p, *p = s;
    bool is_float = false;
    if (p < d->end && *p == '-') p++;
    if (p >= d->end) goto bad;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') { while (p < d->end && *p >= '0' && *p <= '9') p++; }
    else goto bad;
    if (p < d->end && *p == '.') {
        is_float = true;
        if (++p >= d->end || *p < '0' || *p > '9') goto bad;
        while (p < d->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < d->end && (*p == 'e' || *p == 'E')) {
        is_float = true;
        p++;
        if (p < d->end && (*p == '+' || *p == '-')) p++;
        if (p >= d->end || *p < '0' || *p > '9') goto bad;
        while (p < d->end && *p >= '0' && *p <= '9') p++;
    }
    d->p = p;
    size_t n = (size_t)(p - s);
    char tmp[64];
    if (n >= sizeof tmp) return d->b->scalar(d->b, JK_BIG, (const char *)s, n, 0, 0);
    memcpy(tmp, s, n);
    tmp[n] = 0;
    if (!is_float) {
        errno = 0;
        long long v = strtoll(tmp, NULL, 10);
        if (errno == ERANGE) return d->b->scalar(d->b, JK_BIG, (const char *)s, n, 0, 0);
        return d->b->scalar(d->b, JK_INT, NULL, 0, v, 0);
    }
    double v = strtod(tmp, NULL);
    if (isinf(v)) return d->b->scalar(d->b, JK_BIG, (const char *)s, n, 0, 0);   /* 1e400: the text, not infinity */
    return d->b->scalar(d->b, JK_REAL, NULL, 0, 0, v);
bad:
    d->err = "bad number";
    return -1;
}

static int d_value(struct dec *d, int depth);

static int fail_b(struct dec *d) { if (!d->err) d->err = d->b->err ? d->b->err : "cannot build the value"; return -1; }

static int d_array(struct dec *d, int depth)
{
    d->p++;
    if (d->b->open(d->b, true)) return fail_b(d);
    skip_ws(d);
    if (d->p < d->end && *d->p == ']') { d->p++; d->b->close(d->b, true); return 0; }
    for (;;) {
        if (d_value(d, depth) || d->b->add(d->b)) return fail_b(d);
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') { d->p++; continue; }
        if (d->p < d->end && *d->p == ']') { d->p++; d->b->close(d->b, true); return 0; }
        d->err = "expected ',' or ']'";
        return -1;
    }
}

static int d_object(struct dec *d, int depth)
{
    d->p++;
    if (d->b->open(d->b, false)) return fail_b(d);
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') { d->p++; d->b->close(d->b, false); return 0; }
    for (;;) {
        skip_ws(d);
        const char *k;
        size_t kn;
        if (d->p >= d->end || *d->p != '"') { d->err = "expected a member name"; return -1; }
        if (d_string(d, &k, &kn)) return -1;
        if (d->b->key(d->b, k, kn)) return fail_b(d);
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':') { d->err = "expected ':'"; return -1; }
        d->p++;
        if (d_value(d, depth) || d->b->add(d->b)) return fail_b(d);
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') { d->p++; continue; }
        if (d->p < d->end && *d->p == '}') { d->p++; d->b->close(d->b, false); return 0; }
        d->err = "expected ',' or '}'";
        return -1;
    }
}

static int d_literal(struct dec *d, const char *lit, size_t n, enum jkind k)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, lit, n) != 0) { d->err = "unexpected character"; return -1; }
    d->p += n;
    return d->b->scalar(d->b, k, NULL, 0, 0, 0) ? fail_b(d) : 0;
}

static int d_value(struct dec *d, int depth)
{
    skip_ws(d);
    if (d->p >= d->end) { d->err = "unexpected end"; return -1; }
    switch (*d->p) {
    case '{': case '[':
        if (depth >= d->max) { d->err = "nesting too deep"; return -1; }
        return *d->p == '{' ? d_object(d, depth + 1) : d_array(d, depth + 1);
    case '"': {
        const char *p;
        size_t n;
        if (d_string(d, &p, &n)) return -1;
        return d->b->scalar(d->b, JK_STRING, p, n, 0, 0) ? fail_b(d) : 0;
    }
    case 't': return d_literal(d, "true", 4, JK_TRUE);
    case 'f': return d_literal(d, "false", 5, JK_FALSE);
    case 'n': return d_literal(d, "null", 4, JK_NULL);
    default: return d_number(d);
    }
}

static int parse(struct builder *b, const char *p, size_t n, int max_depth, char *err, size_t errlen)
{
    struct dec d = { (const unsigned char *)p, (const unsigned char *)p + n, max_depth, NULL, { 0 }, b };
    int rc = d_value(&d, 0);
    if (rc == 0) {
        skip_ws(&d);
        if (d.p != d.end) { d.err = "text after the value"; rc = -1; }
    }
    sbuf_free(&d.tmp);
    if (rc) snprintf(err, errlen, "bad JSON at byte %zu: %s", (size_t)(d.p - (const unsigned char *)p), d.err);
    return rc;
}

/* -- the Lua builder: values on the Lua stack -- */

struct lua_level { int t; lua_Integer n; bool array; };   /* container's stack index; elements so far */

struct lua_builder {
    struct builder b;
    lua_State *L;
    int mt_array, mt_object, order;   /* stack slots: looked up once per decode */
    struct lua_level lv[130];
    int depth;
};

static int lb_scalar(struct builder *bb, enum jkind k, const char *p, size_t n, long long i, double d)
{
    lua_State *L = ((struct lua_builder *)bb)->L;
    switch (k) {
    case JK_NULL: lj_push_null(L); break;
    case JK_TRUE: lua_pushboolean(L, 1); break;
    case JK_FALSE: lua_pushboolean(L, 0); break;
    case JK_INT: lua_pushinteger(L, (lua_Integer)i); break;
    case JK_REAL: lua_pushnumber(L, d); break;
    case JK_BIG: push_bignum(L, p, n); break;
    case JK_STRING: lua_pushlstring(L, p, n); break;
    }
    return 0;
}

/* An object's stack: t, then t+1 the first key or the order list (nil
 * until the first member), then the pending member name. */
static int lb_open(struct builder *bb, bool array)
{
    struct lua_builder *b = (struct lua_builder *)bb;
    lua_State *L = b->L;
    if (!lua_checkstack(L, 8)) { bb->err = "nesting too deep"; return -1; }
    lua_createtable(L, array ? 4 : 0, array ? 0 : 8);
    lua_pushvalue(L, array ? b->mt_array : b->mt_object);
    lua_setmetatable(L, -2);
    if (!array) lua_pushnil(L);
    b->lv[b->depth].t = lua_gettop(L) - (array ? 0 : 1);
    b->lv[b->depth].n = 0;
    b->lv[b->depth].array = array;
    b->depth++;
    return 0;
}

static int lb_key(struct builder *bb, const char *p, size_t n)
{
    struct lua_builder *b = (struct lua_builder *)bb;
    lua_State *L = b->L;
    struct lua_level *lv = &b->lv[b->depth - 1];
    lua_pushlstring(L, p, n);
    if (lv->n > 0) {
        lua_pushvalue(L, -1);
        if (lua_rawget(L, lv->t) != LUA_TNIL) { bb->err = "duplicate member name"; return -1; }
        lua_pop(L, 1);
    }
    if (lv->n == 0) {
        lua_pushvalue(L, -1);
        lua_replace(L, lv->t + 1);
    } else {
        if (lv->n == 1) {
            lua_createtable(L, 4, 0);
            lua_pushvalue(L, lv->t + 1);
            lua_rawseti(L, -2, 1);
            lua_replace(L, lv->t + 1);
        }
        lua_pushvalue(L, -1);
        lua_rawseti(L, lv->t + 1, lv->n + 1);
    }
    return 0;
}

static int lb_add(struct builder *bb)
{
    struct lua_builder *b = (struct lua_builder *)bb;
    if (b->depth == 0) return 0;   /* the root */
    struct lua_level *lv = &b->lv[b->depth - 1];
    if (lv->array) lua_rawseti(b->L, lv->t, ++lv->n);
    else { lua_rawset(b->L, lv->t); lv->n++; }
    return 0;
}

static void lb_close(struct builder *bb, bool array)
{
    struct lua_builder *b = (struct lua_builder *)bb;
    struct lua_level *lv = &b->lv[--b->depth];
    if (!array) {
        if (lv->n >= 2) {
            lua_pushvalue(b->L, lv->t);
            lua_pushvalue(b->L, lv->t + 1);
            lua_rawset(b->L, b->order);
        }
        lua_settop(b->L, lv->t);
    }
}

int lj_decode(lua_State *L, const char *p, size_t n, int max_depth, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    /* Not zeroed whole: lv[] (3 KiB) is written as levels open, and this
     * runs for every payload a rule reads. */
    struct lua_builder b;
    b.b = (struct builder){ lb_scalar, lb_open, lb_key, lb_add, lb_close, NULL };
    b.L = L;
    b.mt_array = top + 1;
    b.mt_object = top + 2;
    b.order = top + 3;
    b.depth = 0;
    if (max_depth > 128) max_depth = 128;
    lua_checkstack(L, 8);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_array);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_object);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_order);
    if (parse(&b.b, p, n, max_depth, err, errlen) == 0) {
        lua_replace(L, top + 1);   /* the value where the helpers were */
        lua_settop(L, top + 1);
        return 0;
    }
    lua_settop(L, top);
    return -1;
}

/* -- the jansson builder: every value goes into its container as soon as
 * it exists, so freeing the root frees everything after an error. -- */

struct json_builder {
    struct builder b;
    json_t *stack[130];
    int depth;
    struct sbuf key;           /* pending member name (d->tmp is reused) */
    json_t *root;
};

static int jb_put(struct json_builder *b, json_t *v)
{
    if (b->depth == 0) { b->root = v; return 0; }
    json_t *parent = b->stack[b->depth - 1];
    if (json_is_array(parent)) return json_array_append_new(parent, v);
    if (json_object_setn_new(parent, b->key.p ? b->key.p : "", b->key.len, v)) {
        b->b.err = "a member name with a lone surrogate escape";
        return -1;
    }
    return 0;
}

static int jb_scalar(struct builder *bb, enum jkind k, const char *p, size_t n, long long i, double d)
{
    struct json_builder *b = (struct json_builder *)bb;
    json_t *v = NULL;
    switch (k) {
    case JK_NULL: v = json_null(); break;
    case JK_TRUE: v = json_true(); break;
    case JK_FALSE: v = json_false(); break;
    case JK_INT: v = json_integer((json_int_t)i); break;
    case JK_REAL: v = json_real(d); break;
    case JK_BIG: {
        /* JSONLex numbers are doubles: beyond 64 bits, the nearest one. */
        char t[400];
        snprintf(t, sizeof t, "%.*s", (int)(n < 399 ? n : 399), p);
        double x = strtod(t, NULL);
        if (!isfinite(x)) { bb->err = "number out of range"; return -1; }
        v = json_real(x);
        break;
    }
    case JK_STRING:
        if (!(v = json_stringn(p, n))) { bb->err = "a lone surrogate escape"; return -1; }
        break;
    }
    return jb_put(b, v);
}

static int jb_open(struct builder *bb, bool array)
{
    struct json_builder *b = (struct json_builder *)bb;
    json_t *v = array ? json_array() : json_object();
    if (jb_put(b, v)) return -1;
    b->stack[b->depth++] = v;   /* borrowed: owned by its parent or as root */
    return 0;
}

static int jb_key(struct builder *bb, const char *p, size_t n)
{
    struct json_builder *b = (struct json_builder *)bb;
    if (json_object_getn(b->stack[b->depth - 1], p, n)) { bb->err = "duplicate member name"; return -1; }
    b->key.len = 0;
    sbuf_add(&b->key, p, n);
    return 0;
}

static int jb_add(struct builder *bb) { (void)bb; return 0; }
static void jb_close(struct builder *bb, bool array) { (void)array; ((struct json_builder *)bb)->depth--; }

json_t *lj_parse(const char *p, size_t n, int max_depth, char *err, size_t errlen)
{
    struct json_builder b;   /* stack[] is written as levels open: not zeroed */
    b.b = (struct builder){ jb_scalar, jb_open, jb_key, jb_add, jb_close, NULL };
    b.depth = 0;
    b.key = (struct sbuf){ 0 };
    b.root = NULL;
    if (max_depth > 128) max_depth = 128;
    int rc = parse(&b.b, p, n, max_depth, err, errlen);
    sbuf_free(&b.key);
    if (rc) { json_decref(b.root); return NULL; }
    return b.root;
}

/* -- members of an object text, found without building anything -- */

/* Past the string whose opening quote is at p, or NULL. */
static const char *skip_str(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '"') return p + 1;
        if (*p == '\\' && ++p >= end) return NULL;
    }
    return NULL;
}

static const char *skip_sp(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* Past the value at p (valid JSON assumed: brackets are only counted,
 * strings skipped), or NULL when the text ends first. */
static const char *skip_value(const char *p, const char *end)
{
    if (p >= end) return NULL;
    if (*p == '"') return skip_str(p, end);
    if (*p != '{' && *p != '[') {
        while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') p++;
        return p;
    }
    size_t depth = 0;
    for (; p < end; p++) {
        if (*p == '"') {
            if (!(p = skip_str(p, end))) return NULL;
            p--;
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if ((*p == '}' || *p == ']') && --depth == 0) {
            return p + 1;
        }
    }
    return NULL;
}

int lj_object_scan(const char *p, size_t n, struct lj_span *keys, struct lj_span *vals, size_t max)
{
    const char *end = p + n;
    size_t nm = 0;
    p = skip_sp(p, end);
    if (p >= end || *p != '{') return -1;
    p = skip_sp(p + 1, end);
    if (p < end && *p == '}') return 0;
    for (;;) {
        if (p >= end || *p != '"' || nm == max) return -1;
        const char *k = p + 1, *ke = skip_str(p, end);
        if (!ke) return -1;
        size_t kn = (size_t)(ke - 1 - k);
        if (memchr(k, '\\', kn)) return -1;   /* an escaped name: the caller parses it all */
        p = skip_sp(ke, end);
        if (p >= end || *p != ':') return -1;
        p = skip_sp(p + 1, end);
        const char *v = p;
        if (!(p = skip_value(p, end)) || p == v) return -1;
        keys[nm] = (struct lj_span){ k, kn };
        vals[nm++] = (struct lj_span){ v, (size_t)(p - v) };
        p = skip_sp(p, end);
        if (p < end && *p == ',') { p = skip_sp(p + 1, end); continue; }
        if (p < end && *p == '}') return (int)nm;
        return -1;
    }
}

/* ---- walking Lua values (encode to text or to jansson) ------------------- */

/* Where the walker is, for error messages. */
struct where { const char *key; size_t keylen; lua_Integer index; };

struct sink;
struct sink_ops {
    int (*scalar)(struct sink *s, lua_State *L, int idx);   /* nil = null */
    int (*open)(struct sink *s, bool array);
    int (*key)(struct sink *s, const char *k, size_t n);
    void (*close)(struct sink *s, bool array);
};

struct sink {
    const struct sink_ops *ops;
    int mt_array, mt_object, order;   /* stack slots (push_helpers) */
    int max;
    const char *what;
    char *err;
    size_t errlen;
    struct where path[130];
    int depth;
    /* text */
    struct sbuf *b;
    bool first[130];
    /* jansson */
    json_t *stack[130];
    json_t *root;
    json_t **guard;
    const char *pending_key;
    size_t pending_len;
};

static int w_fail(struct sink *s, const char *what)
{
    char loc[200];
    size_t o = (size_t)snprintf(loc, sizeof loc, "%s", s->what);
    for (int i = 0; i < s->depth && o < sizeof loc - 1; i++) {
        if (s->path[i].key)
            o += (size_t)snprintf(loc + o, sizeof loc - o, ".%.*s", (int)(s->path[i].keylen > 32 ? 32 : s->path[i].keylen), s->path[i].key);
        else
            o += (size_t)snprintf(loc + o, sizeof loc - o, "[%lld]", (long long)s->path[i].index);
    }
    snprintf(s->err, s->errlen, "%s: %s", loc, what);
    return -1;
}

/* UTF-8 (WTF-8 for lone surrogates) check of a string to be written. */
static int check_text(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        if (p[i] < 0x80) { i++; continue; }
        size_t k = utf8_len(p + i, p + n);
        if (!k && n - i >= 3 && p[i] == 0xED && p[i + 1] >= 0xA0 && p[i + 1] <= 0xBF && (p[i + 2] & 0xC0) == 0x80) k = 3;
        if (!k) return -1;
        i += k;
    }
    return 0;
}

static int keycmp(const void *a, const void *b)
{
    const struct where *x = a, *y = b;
    size_t n = x->keylen < y->keylen ? x->keylen : y->keylen;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->keylen > y->keylen) - (x->keylen < y->keylen);
}

static int walk(struct sink *s, lua_State *L, int idx);

static int walk_array(struct sink *s, lua_State *L, int t)
{
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
            lua_pop(L, 1);
            return w_fail(s, "an array has a key that is not an index 1..n");
        }
        lua_Integer k = lua_tointeger(L, -1);
        if (k > n) n = k;
    }
    if (n > 100000000) return w_fail(s, "array too long");
    if (s->ops->open(s, true)) return -1;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, t, i);
        s->path[s->depth - 1] = (struct where){ NULL, 0, i - 1 };
        int rc = walk(s, L, lua_gettop(L));
        lua_pop(L, 1);
        if (rc) return -1;
    }
    s->ops->close(s, true);
    return 0;
}

/* One member: its value is at stack index v. */
static int walk_member(struct sink *s, lua_State *L, int v, const char *k, size_t kn)
{
    if (check_text((const unsigned char *)k, kn)) return w_fail(s, "a member name is not UTF-8");
    s->path[s->depth - 1] = (struct where){ k, kn, 0 };
    if (s->ops->key(s, k, kn)) return -1;
    return walk(s, L, v);
}

/* Whether key k is one of the n written already.  Compared in C, not
 * through the Lua API: a short string is one object wherever it is used
 * (the same pointer), a long one is compared by its bytes. */
static bool written(const struct where *w, size_t n, const char *k, size_t kn)
{
    for (size_t i = 0; i < n; i++)
        if (w[i].keylen == kn && (w[i].key == k || memcmp(w[i].key, k, kn) == 0)) return true;
    return false;
}

/* Members in the remembered order, then the others sorted. */
static int walk_object(struct sink *s, lua_State *L, int t)
{
    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) { lua_pop(L, 1); return w_fail(s, "an object has a key that is not a string"); }
        count++;
    }
    if (s->ops->open(s, false)) return -1;
    lua_pushvalue(L, t);
    lua_rawget(L, s->order);
    int order = lua_gettop(L);
    bool has_order = lua_type(L, order) == LUA_TTABLE;
    size_t done = 0;
    /* The keys written in order (anchored by t), for telling the others. */
    struct where few[32], *listed = few;
    if (has_order) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, order);
        if ((size_t)n > sizeof few / sizeof *few) listed = lua_newuserdatauv(L, (size_t)n * sizeof *listed, 0);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, order, i);
            lua_pushvalue(L, -1);
            if (lua_rawget(L, t) == LUA_TNIL) { lua_pop(L, 2); continue; }   /* removed by the script */
            size_t kn;
            const char *k = lua_tolstring(L, -2, &kn);
            if (walk_member(s, L, lua_gettop(L), k, kn)) { lua_settop(L, order - 1); return -1; }
            lua_pop(L, 2);
            listed[done].key = k;
            listed[done++].keylen = kn;
        }
    }
    if (done < count) {
        /* Keys the order does not list: sorted, in a Lua-owned array. */
        struct where *keys = lua_newuserdatauv(L, (count - done) * sizeof *keys, 0);
        size_t m = 0;
        lua_pushnil(L);
        while (lua_next(L, t)) {
            lua_pop(L, 1);
            size_t kn;
            const char *k = lua_tolstring(L, -1, &kn);
            if (!written(listed, done, k, kn) && m < count - done) {
                keys[m].key = lua_tolstring(L, -1, &keys[m].keylen);   /* anchored by t */
                m++;
            }
        }
        qsort(keys, m, sizeof *keys, keycmp);
        for (size_t i = 0; i < m; i++) {
            lua_pushlstring(L, keys[i].key, keys[i].keylen);
            lua_rawget(L, t);
            if (walk_member(s, L, lua_gettop(L), keys[i].key, keys[i].keylen)) { lua_settop(L, order - 1); return -1; }
            lua_pop(L, 1);
        }
    }
    lua_settop(L, order - 1);
    s->ops->close(s, false);
    return 0;
}

/* A table without the array/object metatable: keys 1..n make an array. */
static bool looks_like_array(lua_State *L, int t)
{
    lua_pushnil(L);
    if (!lua_next(L, t)) return false;
    lua_pop(L, 1);
    bool is_int = lua_isinteger(L, -1);
    lua_pop(L, 1);
    return is_int;
}

static int walk(struct sink *s, lua_State *L, int idx)
{
    int type = lua_type(L, idx);
    if (type != LUA_TTABLE) {
        if (type == LUA_TNIL || type == LUA_TBOOLEAN || type == LUA_TNUMBER || type == LUA_TSTRING || lj_is_null(L, idx))
            return s->ops->scalar(s, L, idx);
        size_t n;
        if (bignum_text(L, idx, &n)) return s->ops->scalar(s, L, idx);
        char m[64];
        snprintf(m, sizeof m, "a %s is not JSON", lua_typename(L, type));
        return w_fail(s, m);
    }
    if (s->depth >= s->max) return w_fail(s, "nesting too deep (or a table that contains itself)");
    if (!lua_checkstack(L, 8)) return w_fail(s, "nesting too deep");
    s->path[s->depth] = (struct where){ NULL, 0, 0 };   /* until its first member or element */
    s->depth++;
    bool array, object = false;
    if (lua_getmetatable(L, idx)) {
        array = lua_rawequal(L, -1, s->mt_array);
        object = lua_rawequal(L, -1, s->mt_object);
        lua_pop(L, 1);
    } else {
        array = false;
    }
    if (!array && !object) array = looks_like_array(L, idx);
    int rc = array ? walk_array(s, L, idx) : walk_object(s, L, idx);
    if (rc == 0) s->depth--;
    return rc;
}

/* -- the text sink -- */

static void put_string(struct sbuf *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)str;
    sbuf_reserve(b, n + 2);
    sbuf_addc(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0xED) continue;
        sbuf_add(b, str + run, i - run);
        if (c == 0xED && i + 2 < n && p[i + 1] >= 0xA0) {
            /* A lone surrogate's WTF-8 bytes: back to its escape. */
            unsigned cp = 0xD000 | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
            char e[7] = { '\\', 'u', hex[cp >> 12], hex[(cp >> 8) & 15], hex[(cp >> 4) & 15], hex[cp & 15], 0 };
            sbuf_add(b, e, 6);
            i += 2;
        } else if (c == 0xED) {
            sbuf_addc(b, (char)c);
        } else if (c == '"' || c == '\\') {
            char e[2] = { '\\', (char)c };
            sbuf_add(b, e, 2);
        } else if (c == '\n') sbuf_lit(b, "\\n");
        else if (c == '\r') sbuf_lit(b, "\\r");
        else if (c == '\t') sbuf_lit(b, "\\t");
        else {
            char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
            sbuf_add(b, e, 6);
        }
        run = i + 1;
    }
    sbuf_add(b, str + run, n - run);
    sbuf_addc(b, '"');
}

/* A comma before a value at container depth d, unless it follows its
 * member name or is the first element. */
static void t_sep(struct sink *s, int d)
{
    if (d > 0 && !s->first[d] && s->pending_key == NULL) sbuf_addc(s->b, ',');
    if (d > 0) s->first[d] = false;
    s->pending_key = NULL;
}

static int t_scalar(struct sink *s, lua_State *L, int idx)
{
    struct sbuf *b = s->b;
    t_sep(s, s->depth);
    size_t n;
    const char *p;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: sbuf_lit(b, "null"); return 0;
    case LUA_TBOOLEAN: if (lua_toboolean(L, idx)) sbuf_lit(b, "true"); else sbuf_lit(b, "false"); return 0;
    case LUA_TNUMBER: {
        char t[40];
        if (lua_isinteger(L, idx)) { sbuf_add(b, t, lj_int_text((long long)lua_tointeger(L, idx), t)); return 0; }
        double d = lua_tonumber(L, idx);
        if (!isfinite(d)) return w_fail(s, "NaN and infinities are not JSON");
        sbuf_add(b, t, lj_float_text(d, t));
        return 0;
    }
    case LUA_TSTRING:
        p = lua_tolstring(L, idx, &n);
        if (check_text((const unsigned char *)p, n)) return w_fail(s, "a string is not UTF-8");
        put_string(b, p, n);
        return 0;
    default:
        if (lj_is_null(L, idx)) { sbuf_lit(b, "null"); return 0; }
        p = bignum_text(L, idx, &n);
        sbuf_add(b, p, n);
        return 0;
    }
}

/* walk() has counted the new container in s->depth already. */
static int t_open(struct sink *s, bool array)
{
    t_sep(s, s->depth - 1);
    sbuf_addc(s->b, array ? '[' : '{');
    s->first[s->depth] = true;
    return 0;
}

static int t_key(struct sink *s, const char *k, size_t n)
{
    if (!s->first[s->depth]) sbuf_addc(s->b, ',');
    s->first[s->depth] = false;
    put_string(s->b, k, n);
    sbuf_addc(s->b, ':');
    s->pending_key = k;
    return 0;
}

static void t_close(struct sink *s, bool array) { sbuf_addc(s->b, array ? ']' : '}'); }

static const struct sink_ops text_ops = { t_scalar, t_open, t_key, t_close };

/* The metatables and the order table, once per walk. */
/* The scalar fields of a sink; its per-level arrays (path, first, stack:
 * 5 KiB) are written as levels open, so they are not zeroed for every
 * value encoded. */
static void sink_init(struct sink *s, const struct sink_ops *ops, int max_depth, const char *what, char *err, size_t errlen)
{
    s->ops = ops;
    s->max = max_depth > 128 ? 128 : max_depth;
    s->what = what;
    s->err = err;
    s->errlen = errlen;
    s->depth = 0;
    s->b = NULL;
    s->first[0] = true;
    s->root = NULL;
    s->guard = NULL;
    s->pending_key = NULL;
    s->pending_len = 0;
}

static void push_helpers(lua_State *L, struct sink *s)
{
    lua_checkstack(L, 8);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_array);
    s->mt_array = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_object);
    s->mt_object = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_order);
    s->order = lua_gettop(L);
}

int lj_encode(lua_State *L, int idx, struct sbuf *b, int max_depth, const char *what, char *err, size_t errlen)
{
    struct sink s;
    sink_init(&s, &text_ops, max_depth, what, err, errlen);
    s.b = b;
    idx = lua_absindex(L, idx);
    push_helpers(L, &s);
    int rc = walk(&s, L, idx);
    lua_settop(L, s.mt_array - 1);
    return rc;
}

/* -- the jansson sink -- */

/* Adds v (stolen) to the container at depth d, or makes it the root. */
static int j_attach(struct sink *s, int d, json_t *v)
{
    if (d == 0) { s->root = v; if (s->guard) *s->guard = v; return 0; }
    json_t *parent = s->stack[d - 1];
    if (json_is_array(parent)) return json_array_append_new(parent, v) ? w_fail(s, "out of memory") : 0;
    /* Checked: a WTF-8 member name is fine on the wire, not in jansson. */
    if (json_object_setn_new(parent, s->pending_key, s->pending_len, v)) return w_fail(s, "a member name is not UTF-8");
    return 0;
}

static int j_scalar(struct sink *s, lua_State *L, int idx)
{
    json_t *v;
    size_t n;
    const char *p;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: v = json_null(); break;
    case LUA_TBOOLEAN: v = json_boolean(lua_toboolean(L, idx)); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) v = json_integer((json_int_t)lua_tointeger(L, idx));
        else if (!isfinite(lua_tonumber(L, idx))) return w_fail(s, "NaN and infinities are not JSON");
        else v = json_real(lua_tonumber(L, idx));
        break;
    case LUA_TSTRING:
        p = lua_tolstring(L, idx, &n);
        if (!(v = json_stringn(p, n))) return w_fail(s, "a string is not UTF-8");
        break;
    default:
        if (lj_is_null(L, idx)) { v = json_null(); break; }
        p = bignum_text(L, idx, &n);
        double d = strtod(p, NULL);
        if (!isfinite(d)) return w_fail(s, "number out of range");
        v = json_real(d);
        break;
    }
    return j_attach(s, s->depth, v);
}

static int j_open(struct sink *s, bool array)
{
    json_t *v = array ? json_array() : json_object();
    s->stack[s->depth - 1] = v;   /* borrowed: its parent (or the guard) owns it */
    return j_attach(s, s->depth - 1, v);
}

static int j_key(struct sink *s, const char *k, size_t n) { s->pending_key = k; s->pending_len = n; return 0; }
static void j_close(struct sink *s, bool array) { (void)s; (void)array; }

static const struct sink_ops json_ops = { j_scalar, j_open, j_key, j_close };

/* The tree being built is held by a userdata whose __gc frees it: a Lua
 * error (out of memory) in the middle of the walk cannot leak it. */
static int guard_gc(lua_State *L)
{
    json_t **g = lua_touserdata(L, 1);
    json_decref(*g);
    *g = NULL;
    return 0;
}

json_t *lj_to_json(lua_State *L, int idx, int max_depth, const char *what, char *err, size_t errlen)
{
    idx = lua_absindex(L, idx);
    json_t **guard = lua_newuserdatauv(L, sizeof *guard, 0);
    *guard = NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_guard);
    lua_setmetatable(L, -2);
    struct sink s;
    sink_init(&s, &json_ops, max_depth, what, err, errlen);
    s.guard = guard;
    int base = lua_gettop(L);
    push_helpers(L, &s);
    int rc = walk(&s, L, idx);
    lua_settop(L, base);
    json_t *root = *guard;
    *guard = NULL;
    lua_pop(L, 1);
    if (rc) { json_decref(root); return NULL; }
    return root;
}

/* ---- jansson to text ----------------------------------------------------- */

void lj_json_text(struct sbuf *b, const json_t *v)
{
    char t[40];
    switch (json_typeof(v)) {
    case JSON_NULL: sbuf_lit(b, "null"); break;
    case JSON_TRUE: sbuf_lit(b, "true"); break;
    case JSON_FALSE: sbuf_lit(b, "false"); break;
    case JSON_INTEGER: sbuf_add(b, t, lj_int_text((long long)json_integer_value(v), t)); break;
    case JSON_REAL: sbuf_add(b, t, lj_float_text(json_real_value(v), t)); break;
    case JSON_STRING: put_string(b, json_string_value(v), json_string_length(v)); break;
    case JSON_ARRAY:
        sbuf_addc(b, '[');
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) sbuf_addc(b, ',');
            lj_json_text(b, json_array_get(v, i));
        }
        sbuf_addc(b, ']');
        break;
    case JSON_OBJECT: {
        sbuf_addc(b, '{');
        bool first = true;
        for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
            if (!first) sbuf_addc(b, ',');
            first = false;
            put_string(b, json_object_iter_key(it), json_object_iter_key_len(it));
            sbuf_addc(b, ':');
            lj_json_text(b, json_object_iter_value(it));
        }
        sbuf_addc(b, '}');
        break;
    }
    }
}

/* ---- jansson to Lua --------------------------------------------------- */

void lj_push_json(lua_State *L, const json_t *v)
{
    luaL_checkstack(L, 8, "JSON nesting");
    switch (json_typeof(v)) {
    case JSON_NULL: lj_push_null(L); return;
    case JSON_TRUE: lua_pushboolean(L, 1); return;
    case JSON_FALSE: lua_pushboolean(L, 0); return;
    case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(v)); return;
    case JSON_REAL: lua_pushnumber(L, json_real_value(v)); return;
    case JSON_STRING: lua_pushlstring(L, json_string_value(v), json_string_length(v)); return;
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        lua_createtable(L, (int)(n < 1u << 20 ? n : 1u << 20), 0);
        lj_set_array(L, -1);
        for (size_t i = 0; i < n; i++) { lj_push_json(L, json_array_get(v, i)); lua_rawseti(L, -2, (lua_Integer)i + 1); }
        return;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v), i = 0;
        lua_createtable(L, 0, (int)(n < 1u << 20 ? n : 1u << 20));
        lj_set_object(L, -1);
        int t = lua_gettop(L);
        if (n >= 2) lua_createtable(L, (int)(n < 1u << 20 ? n : 1u << 20), 0);
        for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
            lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
            if (n >= 2) { lua_pushvalue(L, -1); lua_rawseti(L, t + 1, (lua_Integer)++i); }
            lj_push_json(L, json_object_iter_value(it));
            lua_rawset(L, t);
        }
        if (n >= 2) set_order(L, t);
        return;
    }
    }
}
