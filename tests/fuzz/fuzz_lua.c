/* libFuzzer target: the lua plugin's JSON <-> Lua conversion and the
 * JSONLex evaluator (plugins/lua/luajson.c, jsonlex.c).
 *
 * Any bytes: decoded to Lua (strict JSON or refused), encoded back; the
 * text must decode again to the same text (a fixed point), and must mean
 * what jansson reads in the input when jansson reads it.  The input as
 * jansson JSON is also evaluated as a JSONLex expression (an object with
 * "expr" and "context" members is split into both) under a step budget;
 * the result must survive jansson -> Lua -> jansson unchanged, and its
 * text must parse.  Lua runs under a memory cap, inside pcall, as in the
 * plugin.  And lj_object_scan (the members a transform reads, found by
 * skipping the values) must list, for any valid object without escaped
 * member names, exactly the members lj_parse builds, in order, and never
 * point outside any input. */
#include "config.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <lua.h>
#include <lauxlib.h>
#include "jsonlex.h"
#include "luajson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok) abort();
}

static size_t g_mem;
static void *capped(void *ud, void *p, size_t osize, size_t nsize)
{
    (void)ud;
    size_t old = p ? osize : 0;
    if (nsize == 0) { free(p); g_mem -= old; return NULL; }
    if (nsize > old && g_mem + nsize - old > (64u << 20)) return NULL;
    void *q = realloc(p, nsize);
    if (q) g_mem = g_mem - old + nsize;
    return q;
}

struct job { const char *p; size_t n; struct sbuf a, b; };

static int roundtrip(lua_State *L)
{
    struct job *j = lua_touserdata(L, 1);
    char err[300];
    if (lj_decode(L, j->p, j->n, 62, err, sizeof err)) return 0;
    j->a.len = 0;
    check(lj_encode(L, -1, &j->a, 62, "v", err, sizeof err) == 0);
    lua_pop(L, 1);
    check(lj_decode(L, j->a.p, j->a.len, 62, err, sizeof err) == 0);
    j->b.len = 0;
    check(lj_encode(L, -1, &j->b, 62, "v", err, sizeof err) == 0);
    check(j->a.len == j->b.len && memcmp(j->a.p, j->b.p, j->a.len) == 0);
    /* Same meaning as jansson's reading, where jansson reads it (it
     * refuses integers beyond 64 bits, 1e400 and lone surrogates, and
     * keeps the last of duplicated keys, which lj_decode refuses). */
    json_t *x = json_loadb(j->p, j->n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    json_t *y = json_loadb(j->a.p, j->a.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (x) check(y && json_equal(x, y));
    json_decref(x);
    json_decref(y);
    return 0;
}

static int depth(const json_t *v)
{
    int d = 0;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) { int e = depth(json_array_get(v, i)); if (e > d) d = e; }
    } else if (json_is_object(v)) {
        for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
            int e = depth(json_object_iter_value(it));
            if (e > d) d = e;
        }
    } else {
        return 0;
    }
    return d + 1;
}

static int through_lua(lua_State *L)
{
    json_t **v = lua_touserdata(L, 1);
    char err[300];
    lj_push_json(L, *v);
    json_t *back = lj_to_json(L, -1, 200, "v", err, sizeof err);
    check(back != NULL && json_equal(back, *v));
    json_decref(back);
    return 0;
}

static void jsonlex(lua_State *L, const uint8_t *data, size_t size)
{
    json_t *in = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!in) return;
    json_t *expr = in, *ctx = NULL;
    if (json_is_object(in) && json_object_get(in, "expr") && json_object_get(in, "context")) {
        expr = json_object_get(in, "expr");
        ctx = json_object_get(in, "context");
    }
    char err[300];
    for (int ext = 0; ext < 2; ext++) {
        struct jl_expr *x = jl_compile(expr, ext, err, sizeof err);
        if (!x) continue;
        struct jl_limits lim = { 20000, 1 << 16 };
        json_t *out = NULL;
        if (jl_eval(x, ctx, &lim, &out, NULL, err, sizeof err) == 0) {
            struct sbuf b = { 0 };
            lj_json_text(&b, out);
            json_t *again = json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
            check(again != NULL);
            json_decref(again);
            sbuf_free(&b);
            if (depth(out) <= 128) {
                lua_pushcfunction(L, through_lua);
                lua_pushlightuserdata(L, &out);
                if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);   /* memory cap: fine */
            }
            json_decref(out);
        }
        jl_free(x);
    }
    json_decref(in);
}

static void members(const uint8_t *data, size_t size)
{
    char err[300];
    struct lj_span keys[64], vals[64];
    int n = lj_object_scan((const char *)data, size, keys, vals, 64);
    for (int i = 0; i < n; i++)   /* inside the input, whatever it is */
        check(keys[i].p >= (const char *)data && keys[i].p + keys[i].n <= (const char *)data + size &&
              vals[i].p >= (const char *)data && vals[i].p + vals[i].n <= (const char *)data + size);
    json_t *v = lj_parse((const char *)data, size, 62, err, sizeof err);
    if (json_is_object(v) && !memchr(data, '\\', size) && json_object_size(v) <= 64) {
        check(n == (int)json_object_size(v));
        int i = 0;
        for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it), i++) {
            check(keys[i].n == json_object_iter_key_len(it) && memcmp(keys[i].p, json_object_iter_key(it), keys[i].n) == 0);
            json_t *m = lj_parse(vals[i].p, vals[i].n, 62, err, sizeof err);
            check(m && json_equal(m, json_object_iter_value(it)));
            json_decref(m);
        }
    } else if (v && !json_is_object(v)) {
        check(n == -1);
    }
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    if (!L) {
        L = lua_newstate(capped, NULL);
        lj_init(L);
    }
    struct job j = { (const char *)data, size, { 0 }, { 0 } };
    lua_pushcfunction(L, roundtrip);
    lua_pushlightuserdata(L, &j);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
    sbuf_free(&j.a);
    sbuf_free(&j.b);
    jsonlex(L, data, size);
    members(data, size);
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
