/*
 * The Lua host: generations, the sandbox, script loading and the `bus`
 * API (see host.h; README "Lua scripting" lists what scripts may call).
 *
 * The sandbox: scripts get a fresh environment each (copies of the safe
 * libraries, so one script cannot change `string` for another); no io, os
 * (except time/clock/date/difftime), debug, package, coroutine, dofile,
 * loadfile, string.dump; `load` compiles text only, into the caller's
 * environment; `require` loads NAME.lua from the scripts folder, while
 * scripts load; `setmetatable` refuses __gc (a finalizer would run outside
 * any budget); `collectgarbage` only counts; pcall/xpcall cannot swallow a
 * budget or memory stop.  Every entry has an instruction budget (a count
 * hook) and the state a memory cap (its allocator).
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lualib.h>
#include "host.h"
#include "luajson.h"

static char k_env_template, k_loaded;

/* The generation a state belongs to (every state host.c makes is one's). */
static struct lgen *lgen_of(lua_State *L)
{
    return (struct lgen *)(void *)((char *)lstate_of(L) - offsetof(struct lgen, s));
}

/* ---- the sandbox's replacements -------------------------------------------- */

/* pcall/xpcall: a budget or memory stop must end the whole entry. */
static int stop_passes(lua_State *L, int st)
{
    struct lstate *s = lstate_of(L);
    return st != LUA_OK && (s->over_budget || st == LUA_ERRMEM);
}

static int sb_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    int st = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    if (stop_passes(L, st)) return lua_error(L);
    lua_pushboolean(L, st == LUA_OK);
    lua_insert(L, 1);
    return lua_gettop(L);
}

static int sb_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 1);
    lua_copy(L, 2, 1);
    lua_replace(L, 2);          /* handler at 1, function at 2 */
    int st = lua_pcall(L, n - 2, LUA_MULTRET, 1);
    if (stop_passes(L, st)) return lua_error(L);
    lua_pushboolean(L, st == LUA_OK);
    lua_replace(L, 1);
    return lua_gettop(L);
}

static int sb_setmetatable(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_type(L, 2) == LUA_TTABLE && lua_getfield(L, 2, "__gc") != LUA_TNIL)
        return luaL_error(L, "setmetatable: __gc is not available to scripts");
    lua_settop(L, 2);
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL) return luaL_error(L, "cannot change a protected metatable");
    lua_setmetatable(L, 1);
    return 1;
}

static int sb_collectgarbage(lua_State *L)
{
    const char *opt = luaL_optstring(L, 1, "count");
    if (strcmp(opt, "count") != 0) return luaL_error(L, "collectgarbage: only \"count\" is available to scripts");
    lua_pushnumber(L, (lua_Number)lua_gc(L, LUA_GCCOUNT, 0) + (lua_Number)lua_gc(L, LUA_GCCOUNTB, 0) / 1024);
    return 1;
}

/* load(text [, name [, mode [, env]]]): text only; env defaults to the
 * caller's environment (upvalue 1), never the real globals. */
static int sb_load(lua_State *L)
{
    size_t n;
    const char *text = luaL_checklstring(L, 1, &n);
    const char *name = luaL_optstring(L, 2, "=(load)");
    const char *mode = luaL_optstring(L, 3, "t");
    if (strchr(mode, 'b')) return luaL_error(L, "load: binary chunks are not available to scripts");
    if (luaL_loadbufferx(L, text, n, name, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (lua_gettop(L) >= 5 && !lua_isnil(L, 4)) lua_pushvalue(L, 4);
    else lua_pushvalue(L, lua_upvalueindex(1));
    lua_setupvalue(L, -2, 1);
    return 1;
}

/* Script log lines: at most LOG_PER_SEC a second per state, then one
 * line saying how many were dropped, so a rule that logs on every message
 * cannot flood the log. */
#define LOG_PER_SEC 100

static bool log_allowed(struct lstate *s)
{
    uint64_t sec = lb_now_ms() / 1000;
    if (sec != s->log_sec) {
        if (s->log_dropped)
            lb_log(s->ctx, LB_LOG_WARN, "scripts logged %llu more lines in the last second (dropped; at most %d a second)",
                   (unsigned long long)s->log_dropped, LOG_PER_SEC);
        s->log_sec = sec;
        s->log_count = 0;
        s->log_dropped = 0;
    }
    if (s->log_count >= LOG_PER_SEC) { s->log_dropped++; return false; }
    s->log_count++;
    return true;
}

static int sb_print(lua_State *L)
{
    struct lstate *s = lstate_of(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1, n = lua_gettop(L); i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    if (log_allowed(s)) lb_log(s->ctx, LB_LOG_INFO, "%s: %s", lua_tostring(L, lua_upvalueindex(1)), lua_tostring(L, -1));
    return 0;
}

/* ---- require ------------------------------------------------------------- */

static bool module_name_ok(const char *m, size_t n)
{
    if (n == 0 || n > 64 || m[0] == '.' || m[n - 1] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char c = m[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                  (c == '.' && m[i + 1] != '.');
        if (!ok) return false;
    }
    return true;
}

/* Reads a whole file (at most LBL_MAX_SCRIPT bytes) into a malloc'd
 * buffer.  Returns NULL with errno (EFBIG when too large). */
static char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { int e = errno ? errno : EINVAL; close(fd); errno = e; return NULL; }
    if (st.st_size > LBL_MAX_SCRIPT) { close(fd); errno = EFBIG; return NULL; }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) { close(fd); errno = ENOMEM; return NULL; }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return buf;
}

static void new_env(lua_State *L, const char *script);

/* Loads dir/<chunk>.lua as a text chunk with its own environment and
 * pushes the chunk function.  Raises a Lua error on failure. */
static void load_chunk(lua_State *L, struct lstate *s, const char *file)
{
    char path[4200], chunkname[80];
    snprintf(path, sizeof path, "%s/%s", s->conf.dir, file);
    snprintf(chunkname, sizeof chunkname, "@%s", file);
    size_t n = 0;
    char *buf = read_file(path, &n);
    if (!buf) luaL_error(L, "%s: %s", file, errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
    int st = luaL_loadbufferx(L, buf, n, chunkname, "t");   /* protected inside: never raises */
    free(buf);
    if (st != LUA_OK) lua_error(L);
    new_env(L, file);
    lua_setupvalue(L, -2, 1);
}

static int sb_require(lua_State *L)
{
    struct lstate *s = lstate_of(L);
    size_t n;
    const char *m = luaL_checklstring(L, 1, &n);
    if (!module_name_ok(m, n)) return luaL_error(L, "require: '%s' is not a module name (letters, digits, _ - and dots)", m);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_loaded);
    if (lua_getfield(L, -1, m) != LUA_TNIL) return 1;
    if (!s->loading) return luaL_error(L, "require: '%s' was not loaded while the scripts loaded (require works at load time only)", m);
    lua_pop(L, 1);
    char file[80];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) file[k++] = m[i] == '.' ? '/' : m[i];
    memcpy(file + k, ".lua", 5);
    /* Placeholder first: a module requiring itself gets an error, not a loop. */
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, m);
    load_chunk(L, s, file);
    lua_call(L, 0, 1);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_pushboolean(L, 1); }
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, m);
    return 1;
}

/* ---- the bus API ----------------------------------------------------------- */

static int b_log(lua_State *L)
{
    int first = 1;
    enum lb_log_level lvl = LB_LOG_INFO;
    static const char *const names[] = { "debug", "info", "warn", "error" };
    if (lua_gettop(L) >= 2) {
        const char *l = luaL_checkstring(L, 1);
        int i = 0;
        while (i < 4 && strcmp(l, names[i])) i++;
        if (i == 4) return luaL_error(L, "bus.log: level must be debug, info, warn or error");
        lvl = (enum lb_log_level)i;
        first = 2;
    }
    size_t n;
    const char *msg = luaL_tolstring(L, first, &n);
    if (log_allowed(lstate_of(L)))
        lb_log(lstate_of(L)->ctx, lvl, "%s: %.*s", lua_tostring(L, lua_upvalueindex(1)), (int)(n > 2000 ? 2000 : n), msg);
    return 0;
}

static int b_now(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)lb_now_ms());
    return 1;
}

static int b_null(lua_State *L) { lj_push_null(L); return 1; }

static int b_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) lua_newtable(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lj_set_array(L, 1);
    return 1;
}

static int b_object(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) lua_newtable(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lj_set_object(L, 1);
    return 1;
}

static int b_isarray(lua_State *L) { lua_pushboolean(L, lj_is_array(L, 1)); return 1; }
static int b_isobject(lua_State *L) { lua_pushboolean(L, lj_is_object(L, 1)); return 1; }

static int b_json_encode(lua_State *L)
{
    struct sbuf *out = lstate_of(L)->out;
    char err[300];
    luaL_checkany(L, 1);
    out->len = 0;
    if (lj_encode(L, 1, out, LBL_MAX_DEPTH, "value", err, sizeof err)) return luaL_error(L, "bus.json.encode: %s", err);
    lua_pushlstring(L, out->p, out->len);
    return 1;
}

static int b_json_decode(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    char err[200];
    if (lj_decode(L, p, n, LBL_MAX_DEPTH, err, sizeof err)) { lua_pushnil(L); lua_pushstring(L, err); return 2; }
    return 1;
}

/* A compiled JSONLex expression (bus.jsonlex_compile). */
static struct jl_expr **check_compiled(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, "lexbus.jsonlex");
}

static int compiled_gc(lua_State *L)
{
    struct jl_expr **x = lua_touserdata(L, 1);
    jl_free(*x);
    *x = NULL;
    return 0;
}

/* Holds a json_t for the rest of the entry, so a Lua error (out of
 * memory) between creating and freeing it cannot leak it. */
static json_t **hold_json(lua_State *L)
{
    json_t **g = lua_newuserdatauv(L, sizeof *g, 0);
    *g = NULL;
    luaL_setmetatable(L, "lexbus.json");
    return g;
}

static int held_gc(lua_State *L)
{
    json_t **g = lua_touserdata(L, 1);
    json_decref(*g);
    *g = NULL;
    return 0;
}

static json_t *arg_json(lua_State *L, int idx, const char *what)
{
    char err[300];
    if (lua_isnoneornil(L, idx)) return NULL;
    json_t **g = hold_json(L);
    *g = lj_to_json(L, idx, JL_MAX_DEPTH, what, err, sizeof err);
    if (!*g) luaL_error(L, "bus.jsonlex: %s", err);
    return *g;
}

/* bus.jsonlex(expr, context) -> result; raises on an evaluation error. */
static int b_jsonlex(lua_State *L)
{
    struct lstate *h = lstate_of(L);
    char err[300];
    luaL_checkany(L, 1);
    struct jl_expr **cx = check_compiled(L, 1);
    json_t *ctx = arg_json(L, 2, "context");
    json_t **res = hold_json(L);
    int rc;
    if (cx) rc = lstate_jsonlex_compiled(h, *cx, ctx, res, err, sizeof err);
    else rc = lstate_jsonlex(h, arg_json(L, 1, "expr"), ctx, res, err, sizeof err);
    if (rc) return luaL_error(L, "bus.jsonlex: %s", err);
    lj_push_json(L, *res);
    return 1;
}

static int b_jsonlex_compile(lua_State *L)
{
    char err[300];
    luaL_checkany(L, 1);
    json_t *e = arg_json(L, 1, "expr");
    struct jl_expr **x = lua_newuserdatauv(L, sizeof *x, 0);
    *x = NULL;
    luaL_setmetatable(L, "lexbus.jsonlex");
    *x = jl_compile(e ? e : json_null(), lstate_of(L)->conf.extensions, err, sizeof err);
    if (!*x) return luaL_error(L, "bus.jsonlex_compile: %s", err);
    return 1;
}

static int compiled_call(lua_State *L)
{
    /* expr(context): the same as bus.jsonlex(expr, context). */
    lua_pushcfunction(L, b_jsonlex);
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int b_refuse(lua_State *L)
{
    const char *code = luaL_checkstring(L, 1);
    const char *msg = luaL_optstring(L, 2, NULL);
    lua_createtable(L, 0, 2);
    lua_pushstring(L, code);
    lua_setfield(L, -2, "refuse");
    if (msg) { lua_pushstring(L, msg); lua_setfield(L, -2, "message"); }
    return 1;
}

/* bus.store: a small persistent key-value store per script (the host's
 * state API, keys prefixed with the script name). */
#define STORE_MAX_KEY 200
#define STORE_MAX_VALUE (64 * 1024)

static void store_key(lua_State *L, char *out, size_t outlen)
{
    size_t n;
    const char *k = luaL_checklstring(L, 1, &n);
    if (n == 0 || n > STORE_MAX_KEY) luaL_error(L, "bus.store: a key is 1-%d bytes", STORE_MAX_KEY);
    snprintf(out, outlen, "%s:%.*s", lua_tostring(L, lua_upvalueindex(1)), (int)n, k);
}

static int b_store_get(lua_State *L)
{
    char key[300], err[200];
    store_key(L, key, sizeof key);
    size_t len;
    const char *v = lb_state_get(lstate_of(L)->ctx, key, &len);
    if (!v) { lua_pushnil(L); return 1; }
    if (lj_decode(L, v, len, LBL_MAX_DEPTH, err, sizeof err)) lua_pushnil(L);
    return 1;
}

static int b_store_set(lua_State *L)
{
    struct lstate *s = lstate_of(L);
    char key[300], err[300];
    store_key(L, key, sizeof key);
    luaL_checkany(L, 2);
    lua_Integer ttl = luaL_optinteger(L, 3, 0);
    if (ttl < 0) return luaL_error(L, "bus.store.set: ttl is milliseconds, >= 0");
    s->out->len = 0;
    if (lj_encode(L, 2, s->out, LBL_MAX_DEPTH, "value", err, sizeof err)) return luaL_error(L, "bus.store.set: %s", err);
    if (s->out->len > STORE_MAX_VALUE) return luaL_error(L, "bus.store.set: value larger than %d bytes", STORE_MAX_VALUE);
    if (lb_state_set(s->ctx, key, s->out->p, s->out->len, (uint64_t)ttl) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, errno == ENOSPC ? "the state is full" : strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int b_store_delete(lua_State *L)
{
    char key[300];
    store_key(L, key, sizeof key);
    lua_pushboolean(L, lb_state_del(lstate_of(L)->ctx, key) == 0);
    return 1;
}

/* ---- environments ---------------------------------------------------------- */

static void copy_table(lua_State *L, int src)
{
    src = lua_absindex(L, src);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, src)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
}

/* The template every script's environment is copied from. */
static void build_template(lua_State *L)
{
    luaL_openlibs(L);   /* into the real globals, which no script sees */
    lua_newtable(L);
    int t = lua_gettop(L);
    static const char *const base[] = { "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen",
                                        "rawset", "select", "tonumber", "tostring", "type", "getmetatable", "_VERSION" };
    for (size_t i = 0; i < sizeof base / sizeof *base; i++) {
        lua_getglobal(L, base[i]);
        lua_setfield(L, t, base[i]);
    }
    static const char *const libs[] = { "string", "table", "math", "utf8" };
    for (size_t i = 0; i < sizeof libs / sizeof *libs; i++) {
        lua_getglobal(L, libs[i]);
        lua_setfield(L, t, libs[i]);
    }
    lua_newtable(L);
    static const char *const osf[] = { "time", "clock", "date", "difftime" };
    lua_getglobal(L, "os");
    for (size_t i = 0; i < sizeof osf / sizeof *osf; i++) {
        lua_getfield(L, -1, osf[i]);
        lua_setfield(L, -3, osf[i]);
    }
    lua_pop(L, 1);
    lua_setfield(L, t, "os");
    lua_pushcfunction(L, sb_pcall); lua_setfield(L, t, "pcall");
    lua_pushcfunction(L, sb_xpcall); lua_setfield(L, t, "xpcall");
    lua_pushcfunction(L, sb_setmetatable); lua_setfield(L, t, "setmetatable");
    lua_pushcfunction(L, sb_collectgarbage); lua_setfield(L, t, "collectgarbage");
    lua_pushcfunction(L, sb_require); lua_setfield(L, t, "require");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_env_template);
    /* The string metatable is shared by every string: hide it. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    /* string.dump makes binary chunks. */
    lua_getglobal(L, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    luaL_newmetatable(L, "lexbus.jsonlex");
    lua_pushcfunction(L, compiled_gc); lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, compiled_call); lua_setfield(L, -2, "__call");
    lua_pushliteral(L, "jsonlex"); lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    luaL_newmetatable(L, "lexbus.json");
    lua_pushcfunction(L, held_gc); lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_loaded);
}

/* Sets fn (with the script's name as upvalue) as field `name` of the
 * table at the top. */
static void set_named_fn(lua_State *L, const char *script, const char *name, lua_CFunction fn)
{
    lua_pushstring(L, script);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, -2, name);
}

static void push_bus(lua_State *L, const char *script)
{
    lua_newtable(L);
    set_named_fn(L, script, "log", b_log);
    lua_pushcfunction(L, b_now); lua_setfield(L, -2, "now");
    lj_push_null(L); lua_setfield(L, -2, "null");
    lua_pushcfunction(L, b_null); lua_setfield(L, -2, "isnull_value");
    lua_pushcfunction(L, b_array); lua_setfield(L, -2, "array");
    lua_pushcfunction(L, b_object); lua_setfield(L, -2, "object");
    lua_pushcfunction(L, b_isarray); lua_setfield(L, -2, "isarray");
    lua_pushcfunction(L, b_isobject); lua_setfield(L, -2, "isobject");
    lua_pushcfunction(L, b_jsonlex); lua_setfield(L, -2, "jsonlex");
    lua_pushcfunction(L, b_jsonlex_compile); lua_setfield(L, -2, "jsonlex_compile");
    lua_pushcfunction(L, b_refuse); lua_setfield(L, -2, "refuse");
    lua_newtable(L);
    lua_pushcfunction(L, b_json_encode); lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, b_json_decode); lua_setfield(L, -2, "decode");
    lua_setfield(L, -2, "json");
    lua_newtable(L);
    set_named_fn(L, script, "get", b_store_get);
    set_named_fn(L, script, "set", b_store_set);
    set_named_fn(L, script, "delete", b_store_delete);
    lua_setfield(L, -2, "store");
    struct host *h = lgen_of(L)->h;
    if (h->bus_api) h->bus_api(L, h);
}

/* Pushes a fresh environment for `script`. */
static void new_env(lua_State *L, const char *script)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_env_template);
    copy_table(L, -1);
    lua_remove(L, -2);
    int env = lua_gettop(L);
    static const char *const libs[] = { "string", "table", "math", "utf8", "os" };
    for (size_t i = 0; i < sizeof libs / sizeof *libs; i++) {
        lua_getfield(L, env, libs[i]);
        copy_table(L, -1);
        lua_setfield(L, env, libs[i]);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, env);
    lua_pushcclosure(L, sb_load, 1);
    lua_setfield(L, env, "load");
    lua_pushstring(L, script);
    lua_pushcclosure(L, sb_print, 1);
    lua_setfield(L, env, "print");
    push_bus(L, script);
    lua_setfield(L, env, "bus");
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
}

/* ---- loading the scripts -------------------------------------------------- */

static const char *const g_scripts[] = { "jsonlex.lua", "routes.lua", "crud.lua" };

static int named_add(struct lgen *g, lua_State *L, const char *name, char *err, size_t errlen)
{
    char why[300];
    json_t *v = lj_to_json(L, -1, JL_MAX_DEPTH, name, why, sizeof why);
    if (!v) { snprintf(err, errlen, "jsonlex.lua: expression '%s': %s", name, why); return -1; }
    struct jl_expr *x = jl_compile(v, g->s.conf.extensions, why, sizeof why);
    json_decref(v);
    if (!x) { snprintf(err, errlen, "jsonlex.lua: expression '%s': %s", name, why); return -1; }
    g->named = realloc(g->named, (g->n_named + 1) * sizeof *g->named);
    if (!g->named) abort();
    g->named[g->n_named].name = strdup(name);
    g->named[g->n_named].x = x;
    g->n_named++;
    return 0;
}

/* jsonlex.lua returns { expressions = { name = expr, ... } }. */
static void take_jsonlex(lua_State *L, struct lgen *g, int t)
{
    char err[400];
    lua_getfield(L, t, "expressions");
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
    if (!lua_istable(L, -1)) luaL_error(L, "jsonlex.lua: 'expressions' must be a table of name = expression");
    int e = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, e)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "jsonlex.lua: expression names must be strings");
        if (named_add(g, L, lua_tostring(L, -2), err, sizeof err)) luaL_error(L, "%s", err);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

struct load_job { struct lgen *g; int which; };

static int load_script_fn(lua_State *L)
{
    struct load_job *j = lstate_ud(L);
    struct lgen *g = j->g;
    const char *file = g_scripts[j->which];
    load_chunk(L, &g->s, file);
    lua_call(L, 0, 1);
    int t = lua_gettop(L);
    if (lua_isnil(L, t)) return 0;
    if (!lua_istable(L, t)) return luaL_error(L, "%s must return a table (it returned a %s)", file, luaL_typename(L, t));
    if (j->which == 0) take_jsonlex(L, g, t);
    else if (j->which == 1) rules_build(&g->rules, L, t);
    else crud_build(&g->crud, L, t);
    return 0;
}

static int setup_fn(lua_State *L)
{
    build_template(L);
    lj_init(L);
    return 0;
}

struct lgen *lgen_load(struct host *h, const struct lbl_conf *conf, char *err, size_t errlen)
{
    struct stat st;
    if (stat(conf->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "scripts folder %s: %s", conf->dir, errno ? strerror(errno) : "not a directory");
        return NULL;
    }
    struct lgen *g = calloc(1, sizeof *g);
    if (!g) abort();
    g->h = h;
    struct lstate *s = &g->s;
    if (lstate_init(s, conf, h->ctx, &h->n, &h->out, err, errlen)) { free(g); return NULL; }
    rules_init(&g->rules, s);
    crud_init(&g->crud, s);
    s->loading = true;
    enum lbl_fail kind;
    /* Library set-up can fail only for memory: protected as well. */
    int rc = lstate_call(s, setup_fn, s, &kind, err, errlen);
    for (int i = 0; rc == 0 && i < 3; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", conf->dir, g_scripts[i]);
        snprintf(g->scripts[i].name, sizeof g->scripts[i].name, "%s", g_scripts[i]);
        if (access(path, F_OK) != 0) continue;   /* absent: nothing to load */
        struct load_job j = { g, i };
        rc = lstate_call(s, load_script_fn, &j, &kind, err, errlen);
        g->scripts[i].present = true;
        g->scripts[i].loaded_ms = lb_now_ms();
    }
    s->loading = false;
    if (rc) { lgen_free(g); return NULL; }
    g->loaded_ms = lb_now_ms();
    lstate_gc(s);
    return g;
}

void lgen_free(struct lgen *g)
{
    if (!g) return;
    lstate_close(&g->s);
    rules_free(&g->rules);
    crud_free(&g->crud);
    for (size_t i = 0; i < g->n_named; i++) { free(g->named[i].name); jl_free(g->named[i].x); }
    free(g->named);
    free(g);
}
