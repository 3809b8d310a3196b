/*
 * One Lua state: its allocator (the memory cap), the instruction budget
 * (a count hook), the protected entry, JSONLex under its limits
 * (lstate.h).  Nothing here knows what the scripts are for.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>
#include "lstate.h"

uint64_t lbl_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- error codes ------------------------------------------------------ */

bool lbl_valid_code(const char *c)
{
    size_t n = c ? strlen(c) : 0;
    if (n == 0 || n > 47 || c[0] < 'A' || c[0] > 'Z') return false;
    for (size_t i = 0; i < n; i++)
        if (!((c[i] >= 'A' && c[i] <= 'Z') || (c[i] >= '0' && c[i] <= '9') || c[i] == '_')) return false;
    return true;
}

/* ---- JSONLex under the state's limits ----------------------------------------- */

int lstate_jsonlex_resolved(struct lstate *s, const struct jl_expr *x, jl_resolve_fn fn, void *ud, json_t **out,
                            char *err, size_t errlen)
{
    struct lbl_counters *c = s->n;
    struct jl_limits lim = { (uint64_t)s->conf.max_steps, (size_t)s->conf.max_text };
    uint64_t steps = 0;
    int rc = jl_eval_resolved(x, fn, ud, &lim, out, &steps, err, errlen);
    c->jl_steps += steps;
    c->jl_evals++;
    if (rc) c->jl_errors++;
    return rc;
}

int lstate_jsonlex_compiled(struct lstate *s, const struct jl_expr *x, json_t *ctx, json_t **out, char *err, size_t errlen)
{
    struct lbl_counters *c = s->n;
    struct jl_limits lim = { (uint64_t)s->conf.max_steps, (size_t)s->conf.max_text };
    uint64_t t0 = lbl_mono_ns(), steps = 0;
    int rc = jl_eval(x, ctx, &lim, out, &steps, err, errlen);
    c->jl_ns += lbl_mono_ns() - t0;
    c->jl_timed++;
    c->jl_steps += steps;
    c->jl_evals++;
    if (rc) c->jl_errors++;
    return rc;
}

int lstate_jsonlex(struct lstate *s, json_t *expr, json_t *ctx, json_t **out, char *err, size_t errlen)
{
    const struct jl_expr *x = jl_cache_get(s->cache, expr, err, errlen);
    if (!x) { s->n->jl_errors++; return -1; }
    return lstate_jsonlex_compiled(s, x, ctx, out, err, errlen);
}

/* ---- allocator and budget -------------------------------------------------- */

struct lstate *lstate_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

/* The state's memory cap: an allocation beyond it fails, which Lua turns
 * into a memory error (after one emergency collection). */
static void *cap_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lstate *s = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        s->mem -= old;
        return NULL;
    }
    if (nsize > old && s->mem + (nsize - old) > s->cap) return NULL;
    void *p = realloc(ptr, nsize);
    if (!p) return NULL;
    s->mem = s->mem - old + nsize;
    if (s->mem > s->peak) s->peak = s->mem;
    return p;
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    struct lstate *s = lstate_of(L);
    s->budget -= LBL_HOOK_EVERY;
    if (s->budget >= 0) return;
    if (!s->over_budget) {
        s->over_budget = true;
        lua_getinfo(L, "Sl", ar);
        if (ar->currentline > 0)
            snprintf(s->budget_msg, sizeof s->budget_msg, "%s:%d: instruction budget exceeded (%lld)", ar->short_src,
                     ar->currentline, s->conf.max_instructions);
        else
            snprintf(s->budget_msg, sizeof s->budget_msg, "instruction budget exceeded (%lld)", s->conf.max_instructions);
    }
    lua_pushstring(L, s->budget_msg);
    lua_error(L);
}

void *lstate_ud(lua_State *L) { return lstate_of(L)->call_ud; }

/* Everything unreachable back, including the stack a deep recursion grew
 * (the generational collector's full cycle keeps it; the incremental one
 * shrinks it). */
void lstate_gc(struct lstate *s)
{
    lua_State *L = s->L;
    lua_gc(L, LUA_GCINC, 0, 0, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    lua_gc(L, LUA_GCGEN, 0, 0);
}

int lstate_call(struct lstate *s, int (*fn)(lua_State *L), void *ud, enum lbl_fail *kind, char *err, size_t errlen)
{
    lua_State *L = s->L;
    int top = lua_gettop(L);
    *kind = LBL_OK;
    if (!lua_checkstack(L, 4)) { *kind = LBL_MEMORY; snprintf(err, errlen, "Lua stack exhausted"); return -1; }
    void *outer = s->call_ud;
    s->call_ud = ud;
    s->budget = s->loading ? s->conf.max_instructions * 10 : s->conf.max_instructions;
    s->over_budget = false;
    s->emits = 0;
    s->n->lua_entries++;
    lua_pushcfunction(L, fn);
    int st = lua_pcall(L, 0, 0, 0);
    int rc = 0;
    if (st != LUA_OK) {
        rc = -1;
        if (s->over_budget) {
            *kind = LBL_BUDGET;
            snprintf(err, errlen, "%s", s->budget_msg);
            s->n->lua_budget_stops++;
        } else if (st == LUA_ERRMEM) {
            *kind = LBL_MEMORY;
            snprintf(err, errlen, "memory cap of %zu bytes reached", s->cap);
            s->n->lua_memory_stops++;
        } else {
            *kind = LBL_SCRIPT;
            const char *m = lua_tostring(L, -1);
            if (m) snprintf(err, errlen, "%s", m);
            else snprintf(err, errlen, "(error object is a %s value)", luaL_typename(L, -1));
            s->n->lua_errors++;
        }
    }
    lua_settop(L, top);
    s->call_ud = outer;
    s->over_budget = false;
    /* What a stopped entry left behind is garbage now: give it back. */
    if (*kind == LBL_MEMORY || *kind == LBL_BUDGET) lstate_gc(s);
    return rc;
}

/* ---- making and closing ------------------------------------------------------ */

int lstate_init(struct lstate *s, const struct lbl_conf *conf, struct lb_plugin_ctx *ctx, struct lbl_counters *n,
                struct sbuf *out, char *err, size_t errlen)
{
    s->ctx = ctx;
    s->n = n;
    s->out = out;
    s->conf = *conf;
    s->conf.dir = strdup(conf->dir);
    s->cap = conf->max_memory;
    s->cache = jl_cache_new((size_t)conf->cache_entries, conf->extensions);
    s->view_mt = LUA_NOREF;
    s->L = lua_newstate(cap_alloc, s);
    if (!s->L) {
        lstate_close(s);
        snprintf(err, errlen, "cannot create a Lua state (memory cap too small?)");
        return -1;
    }
    lua_sethook(s->L, budget_hook, LUA_MASKCOUNT, LBL_HOOK_EVERY);
    /* Rules make many short-lived tables per message: the generational
     * collector frees them young, at a fraction of the incremental one's
     * cost. */
    lua_gc(s->L, LUA_GCGEN, 0, 0);
    return 0;
}

void lstate_close(struct lstate *s)
{
    if (s->L) lua_close(s->L);
    s->L = NULL;
    jl_cache_free(s->cache);
    s->cache = NULL;
    free(s->conf.dir);
    s->conf.dir = NULL;
}
