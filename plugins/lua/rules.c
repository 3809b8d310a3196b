/*
 * routes.lua rules (rules.h).  The table routes.lua returns is a list of
 * rules; each is a table:
 *
 *   selector (exactly one):
 *     event    = "post:*"               EMIT by event pattern (* one segment, > the rest)
 *     call     = "user-service.get*"    CALL by SERVICE.METHOD (split at the first '.';
 *                                       '*' in either part matches any characters)
 *              | { service = "a.b", method = "x" }   for service names with a '.'
 *     response = same forms as call     a RESPONSE to such a call, on its way back
 *   from     = "svc" | {"a", "b"}        only messages from these senders (optional)
 *   name     = "..."                     (optional; default routes.lua#N)
 *   last     = true                      no later rule runs on a message this one matched
 *   action, either a function:
 *     fn       = function(m) ... end    returns nil (pass), false (refuse FORBIDDEN),
 *                                       bus.refuse(code, msg), or a table of changes
 *   or fixed actions (never enter Lua):
 *     to       = "service"               new target (EMIT: a service or "broadcast")
 *     rename   = "name"                  new event (EMIT) or method (CALL)
 *     transform = <JSONLex>              new payload / params / data: the expression's
 *                                       value, evaluated in C over the message view
 *     also     = {"svc", ...}            EMIT: deliver to these services too
 *     refuse   = { code = "FORBIDDEN", message = "..." }
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "rules.h"
#include "luajson.h"


struct rule {
    char *name;
    enum rule_hook hook;
    char *pattern;              /* as written (RH_EVENT: matched by the state's lb_patset) */
    char *svc, *mth;            /* RH_CALL / RH_RESPONSE: globs */
    char **from;
    size_t n_from;
    int fn_ref;
    int line;
    char *set_to, *set_name;
    struct jl_expr *transform;
    char **also;
    size_t n_also;
    char *refuse_code, *refuse_msg;
    bool last;
    uint64_t matches, changes, refusals, errors, ns;
    uint64_t log_sec, log_suppressed;
};

/* Candidates for one key: rules indexed under it merged with the
 * wildcard rules, in file order. */
struct bucket { char *key; size_t klen; uint32_t *rules; size_t n; };

struct rindex {
    struct bucket *b;
    size_t nb;                  /* power of two, or 0 */
    uint32_t *wild;
    size_t n_wild;
};

static void *xcalloc0(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p) { fputs("lexbusd: out of memory\n", stderr); abort(); }
    return p;
}

static char *xstrndup0(const char *s, size_t n)
{
    char *p = xcalloc0(n + 1, 1);
    memcpy(p, s, n);
    return p;
}

static uint64_t hash_key(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)p[i]; h *= 1099511628211ull; }
    return h;
}

void rresult_init(struct rresult *r) { memset(r, 0, sizeof *r); }

void rresult_reset(struct rresult *r)
{
    r->kind = RR_PASS;
    r->code[0] = r->message[0] = 0;
    r->set_to = r->set_name = r->set_body = r->set_error = false;
    r->to.len = r->name.len = r->body[0].len = r->body[1].len = r->error.len = 0;
    r->body_cur = 0;
    r->n_also = 0;
    r->n_matched = 0;
}

void rresult_free(struct rresult *r)
{
    sbuf_free(&r->to);
    sbuf_free(&r->name);
    sbuf_free(&r->body[0]);
    sbuf_free(&r->body[1]);
    sbuf_free(&r->error);
}

/* ---- matching ------------------------------------------------------------ */

/* '*' matches any run of characters (globs of call selectors). */
static bool glob(const char *g, const char *s, size_t n)
{
    const char *star = NULL, *resume = NULL, *end = s + n;
    while (s < end) {
        if (*g == '*') { star = ++g; resume = s; continue; }
        if (*g && *g == *s) { g++; s++; continue; }
        if (!star) return false;
        g = star;
        s = ++resume;
    }
    while (*g == '*') g++;
    return *g == 0;
}

static bool from_ok(const struct rule *r, struct lb_str from)
{
    if (!r->n_from) return true;
    for (size_t i = 0; i < r->n_from; i++)
        if (strlen(r->from[i]) == from.n && memcmp(r->from[i], from.p, from.n) == 0) return true;
    return false;
}

/* Call and response selectors (event rules are matched by the patset). */
static bool rule_selects(const struct rule *r, const struct rmsg *m)
{
    if (!from_ok(r, m->from)) return false;
    if (r->hook == RH_EVENT) return true;
    struct lb_str svc = r->hook == RH_RESPONSE ? m->service : m->to;
    return glob(r->svc, svc.p ? svc.p : "", svc.n) && glob(r->mth, m->name.p ? m->name.p : "", m->name.n);
}

static struct bucket *bucket_find(const struct rindex *ix, const char *k, size_t n)
{
    if (!ix || !ix->nb) return NULL;
    for (size_t i = hash_key(k, n) & (ix->nb - 1);; i = (i + 1) & (ix->nb - 1)) {
        struct bucket *b = &ix->b[i];
        if (!b->key) return NULL;
        if (b->klen == n && memcmp(b->key, k, n) == 0) return b;
    }
}

/* The index key of a message: its event's first segment, or the service
 * of a call or response. */
static struct lb_str index_key(const struct rmsg *m)
{
    if (m->hook != RH_EVENT) return m->hook == RH_RESPONSE ? m->service : m->to;
    struct lb_str k = m->name;
    const char *colon = k.p ? memchr(k.p, ':', k.n) : NULL;
    if (colon) k.n = (size_t)(colon - k.p);
    return k;
}

/* ---- building ------------------------------------------------------------- */

static struct rindex **index_of(struct rules *rs, enum rule_hook h)
{
    return h == RH_EVENT ? &rs->ix_event : h == RH_CALL ? &rs->ix_call : &rs->ix_response;
}

static void index_free(struct rindex *ix)
{
    if (!ix) return;
    for (size_t i = 0; i < ix->nb; i++) { free(ix->b[i].key); free(ix->b[i].rules); }
    free(ix->b);
    free(ix->wild);
    free(ix);
}

/* The literal key a rule is indexed under (an event pattern's first
 * segment, a call's service), or NULL for a wildcard. */
static const char *rule_key(const struct rule *r, size_t *n)
{
    if (r->hook == RH_EVENT) {
        size_t k = strcspn(r->pattern, ":");
        if (k == 1 && (r->pattern[0] == '*' || r->pattern[0] == '>')) return NULL;
        *n = k;
        return r->pattern;
    }
    if (strchr(r->svc, '*')) return NULL;
    *n = strlen(r->svc);
    return r->svc;
}

static void push_idx(uint32_t **v, size_t *n, uint32_t x)
{
    *v = realloc(*v, (*n + 1) * sizeof **v);
    if (!*v) abort();
    (*v)[(*n)++] = x;
}

/* Builds the indexes once every rule is read: event patterns into a
 * patset (the router's own trie) and, as a prefilter that lets most
 * messages go after one hash lookup, by their first segment; calls and
 * responses by service. */
static void index_build(struct rules *rs)
{
    rs->events = lb_patset_new();
    for (size_t i = 0; i < rs->n_rules; i++) {
        const struct rule *r = &rs->rules[i];
        if (r->hook != RH_EVENT) continue;
        lb_patset_add(rs->events, r->pattern, strlen(r->pattern), (void *)(uintptr_t)(i + 1));
        rs->n_event_rules++;
    }
    rs->sel = xcalloc0(rs->n_rules, sizeof *rs->sel);
    for (int h = 0; h < RH__COUNT; h++) {
        struct rindex *ix = xcalloc0(1, sizeof *ix);
        size_t lit = 0;
        for (size_t i = 0; i < rs->n_rules; i++) {
            const struct rule *r = &rs->rules[i];
            size_t kn;
            if ((int)r->hook != h) continue;
            if (rule_key(r, &kn)) lit++;
            else push_idx(&ix->wild, &ix->n_wild, (uint32_t)i);
        }
        if (lit) {
            ix->nb = 8;
            while (ix->nb < lit * 2) ix->nb *= 2;
            ix->b = xcalloc0(ix->nb, sizeof *ix->b);
        }
        for (size_t i = 0; i < rs->n_rules; i++) {
            const struct rule *r = &rs->rules[i];
            size_t kn;
            const char *k;
            if ((int)r->hook != h || !(k = rule_key(r, &kn))) continue;
            struct bucket *b = bucket_find(ix, k, kn);
            if (!b) {
                size_t j = hash_key(k, kn) & (ix->nb - 1);
                while (ix->b[j].key) j = (j + 1) & (ix->nb - 1);
                b = &ix->b[j];
                b->key = xstrndup0(k, kn);
                b->klen = kn;
            }
            push_idx(&b->rules, &b->n, (uint32_t)i);
        }
        /* Merge the wildcard rules into every bucket, in file order. */
        for (size_t j = 0; j < ix->nb; j++) {
            struct bucket *b = &ix->b[j];
            if (!b->key || !ix->n_wild) continue;
            uint32_t *m = xcalloc0(b->n + ix->n_wild, sizeof *m);
            size_t x = 0, y = 0, o = 0;
            while (x < b->n || y < ix->n_wild)
                m[o++] = (y >= ix->n_wild || (x < b->n && b->rules[x] < ix->wild[y])) ? b->rules[x++] : ix->wild[y++];
            free(b->rules);
            b->rules = m;
            b->n = o;
        }
        *index_of(rs, (enum rule_hook)h) = ix;
    }
}

static void rule_free(struct rule *r)
{
    free(r->name);
    free(r->pattern);
    free(r->svc);
    free(r->mth);
    for (size_t i = 0; i < r->n_from; i++) free(r->from[i]);
    free(r->from);
    free(r->set_to);
    free(r->set_name);
    jl_free(r->transform);
    for (size_t i = 0; i < r->n_also; i++) free(r->also[i]);
    free(r->also);
    free(r->refuse_code);
    free(r->refuse_msg);
}

void rules_free(struct rules *rs)
{
    for (size_t i = 0; i < rs->n_rules; i++) rule_free(&rs->rules[i]);
    free(rs->rules);
    rs->rules = NULL;
    rs->n_rules = 0;
    lb_patset_free(rs->events);
    rs->events = NULL;
    rs->n_event_rules = 0;
    free(rs->sel);
    rs->sel = NULL;
    index_free(rs->ix_event);
    index_free(rs->ix_call);
    index_free(rs->ix_response);
    rs->ix_event = rs->ix_call = rs->ix_response = NULL;
}

#define RULE_ERR(L, r, fmt, ...) luaL_error(L, "routes.lua: rule '%s': " fmt, (r)->name, __VA_ARGS__)

static char *opt_string(lua_State *L, struct rule *r, int t, const char *field)
{
    int ty = lua_getfield(L, t, field);
    char *v = NULL;
    if (ty == LUA_TSTRING) { size_t n; const char *p = lua_tolstring(L, -1, &n); v = xstrndup0(p, n); }
    else if (ty != LUA_TNIL) RULE_ERR(L, r, "'%s' must be a string", field);
    lua_pop(L, 1);
    return v;
}

/* A list of service names: a string or an array of strings. */
static void name_list(lua_State *L, struct rule *r, int t, const char *field, char ***out, size_t *n)
{
    int ty = lua_getfield(L, t, field);
    int v = lua_gettop(L);
    if (ty == LUA_TNIL) { lua_pop(L, 1); return; }
    size_t count = ty == LUA_TSTRING ? 1 : ty == LUA_TTABLE ? lua_rawlen(L, v) : 0;
    if (!count || count > RR_MAX_ALSO) RULE_ERR(L, r, "'%s' must be a service name or a list of 1-%d names", field, RR_MAX_ALSO);
    *out = xcalloc0(count, sizeof **out);
    for (size_t i = 0; i < count; i++) {
        if (ty == LUA_TTABLE) lua_rawgeti(L, v, (lua_Integer)i + 1);
        else lua_pushvalue(L, v);
        size_t len;
        const char *p = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (!p || !lb_service_name_valid(p, len)) RULE_ERR(L, r, "'%s'[%d] is not a valid service name", field, (int)i + 1);
        (*out)[(*n)++] = xstrndup0(p, len);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void read_selector(lua_State *L, struct rule *r, int t)
{
    static const char *const sel[] = { "event", "call", "response" };
    int found = -1;
    for (int i = 0; i < 3; i++) {
        if (lua_getfield(L, t, sel[i]) != LUA_TNIL) {
            if (found >= 0) RULE_ERR(L, r, "give one of event, call, response (both '%s' and '%s')", sel[found], sel[i]);
            found = i;
        }
        lua_pop(L, 1);
    }
    if (found < 0) {
        RULE_ERR(L, r, "%s", "needs a selector: event = PATTERN, call = SERVICE.METHOD or response = SERVICE.METHOD");
        return;   /* not reached: luaL_error does not return */
    }
    r->hook = (enum rule_hook)found;
    lua_getfield(L, t, sel[found]);
    size_t n;
    if (found == RH_EVENT) {
        const char *p = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
        if (!p || !lb_pattern_valid(p, n)) RULE_ERR(L, r, "event = '%s' is not an event pattern", p ? p : "?");
        r->pattern = xstrndup0(p, n);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        const char *p = lua_tolstring(L, -1, &n), *dot = memchr(p, '.', n);
        if (!dot || dot == p || dot == p + n - 1) RULE_ERR(L, r, "%s = '%s' must be SERVICE.METHOD", sel[found], p);
        r->pattern = xstrndup0(p, n);
        r->svc = xstrndup0(p, (size_t)(dot - p));
        r->mth = xstrndup0(dot + 1, n - (size_t)(dot - p) - 1);
    } else if (lua_type(L, -1) == LUA_TTABLE) {
        int st = lua_gettop(L);
        r->svc = opt_string(L, r, st, "service");
        r->mth = opt_string(L, r, st, "method");
        if (!r->svc) r->svc = xstrndup0("*", 1);
        if (!r->mth) r->mth = xstrndup0("*", 1);
        size_t len = strlen(r->svc) + strlen(r->mth) + 2;
        r->pattern = xcalloc0(len, 1);
        snprintf(r->pattern, len, "%s.%s", r->svc, r->mth);
    } else {
        RULE_ERR(L, r, "%s must be 'SERVICE.METHOD' or {service = ..., method = ...}", sel[found]);
    }
    lua_pop(L, 1);
}

static void read_actions(struct lstate *s, lua_State *L, struct rule *r, int t)
{
    if (lua_getfield(L, t, "fn") != LUA_TNIL) {
        if (!lua_isfunction(L, -1)) RULE_ERR(L, r, "%s", "'fn' must be a function");
        lua_Debug ar;
        lua_pushvalue(L, -1);
        if (lua_getinfo(L, ">S", &ar)) r->line = ar.linedefined;
        r->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        lua_pop(L, 1);
    }
    r->set_to = opt_string(L, r, t, "to");
    r->set_name = opt_string(L, r, t, "rename");
    if (r->set_to && !(r->hook == RH_EVENT && !strcmp(r->set_to, "broadcast")) && !lb_service_name_valid(r->set_to, strlen(r->set_to)))
        RULE_ERR(L, r, "to = '%s' is not a valid service name", r->set_to);
    if (r->set_to && r->hook == RH_RESPONSE) RULE_ERR(L, r, "%s", "a response goes back to its caller: 'to' cannot change it");
    if (r->set_name && r->hook == RH_RESPONSE) RULE_ERR(L, r, "%s", "'rename' applies to events and calls");
    if (r->set_name && !(r->hook == RH_EVENT ? lb_event_name_valid(r->set_name, strlen(r->set_name))
                                             : lb_method_name_valid(r->set_name, strlen(r->set_name))))
        RULE_ERR(L, r, "rename = '%s' is not a valid %s name", r->set_name, r->hook == RH_EVENT ? "event" : "method");
    name_list(L, r, t, "also", &r->also, &r->n_also);
    if (r->n_also && r->hook != RH_EVENT) RULE_ERR(L, r, "%s", "'also' (fan-out) applies to events");
    if (lua_getfield(L, t, "transform") != LUA_TNIL) {
        char why[300];
        json_t *v = lj_to_json(L, -1, JL_MAX_DEPTH, "transform", why, sizeof why);
        if (!v) RULE_ERR(L, r, "%s", why);
        r->transform = jl_compile(v, s->conf.extensions, why, sizeof why);
        json_decref(v);
        if (!r->transform) RULE_ERR(L, r, "transform: %s", why);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, t, "refuse") != LUA_TNIL) {
        int rt = lua_gettop(L);
        if (!lua_istable(L, rt)) RULE_ERR(L, r, "%s", "refuse = { code = ..., message = ... }");
        r->refuse_code = opt_string(L, r, rt, "code");
        r->refuse_msg = opt_string(L, r, rt, "message");
        if (!r->refuse_code) r->refuse_code = xstrndup0(LB_E_FORBIDDEN, strlen(LB_E_FORBIDDEN));
    }
    lua_pop(L, 1);
    bool fixed = r->set_to || r->set_name || r->n_also || r->transform || r->refuse_code;
    if (r->fn_ref != LUA_NOREF && fixed) RULE_ERR(L, r, "%s", "give either fn or fixed actions (to, rename, transform, also, refuse), not both");
    if (r->fn_ref == LUA_NOREF && !fixed) RULE_ERR(L, r, "%s", "has no action (fn, to, rename, transform, also or refuse)");
}

static const char *const g_rule_fields[] = { "name", "event", "call", "response", "from", "last", "fn", "to",
                                             "rename", "transform", "also", "refuse", NULL };

static void check_fields(lua_State *L, struct rule *r, int t)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        bool known = false;
        for (int i = 0; k && g_rule_fields[i]; i++) known |= strcmp(k, g_rule_fields[i]) == 0;
        if (!known) RULE_ERR(L, r, "unknown field '%s'", k ? k : "(not a string)");
    }
}

void rules_init(struct rules *rs, struct lstate *s)
{
    memset(rs, 0, sizeof *rs);
    rs->s = s;
}

void rules_build(struct rules *rs, lua_State *L, int t)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    if (n > 10000) luaL_error(L, "routes.lua: more than 10000 rules");
    for (lua_Integer i = 1; i <= n; i++) {
        /* The rule is in rs->rules before it is filled in, so a Lua error
         * half-way leaves nothing rules_free would not free. */
        rs->rules = realloc(rs->rules, (rs->n_rules + 1) * sizeof *rs->rules);
        if (!rs->rules) abort();
        struct rule *r = &rs->rules[rs->n_rules++];
        memset(r, 0, sizeof *r);
        r->fn_ref = LUA_NOREF;
        char defname[32];
        snprintf(defname, sizeof defname, "routes.lua#%lld", (long long)i);
        r->name = xstrndup0(defname, strlen(defname));
        lua_rawgeti(L, t, i);
        int rt = lua_gettop(L);
        if (!lua_istable(L, rt)) RULE_ERR(L, r, "%s", "a rule must be a table");
        char *name = opt_string(L, r, rt, "name");
        if (name) { free(r->name); r->name = name; }
        check_fields(L, r, rt);
        read_selector(L, r, rt);
        name_list(L, r, rt, "from", &r->from, &r->n_from);
        lua_getfield(L, rt, "last");
        r->last = lua_toboolean(L, -1);
        lua_pop(L, 1);
        read_actions(rs->s, L, r, rt);
        if (r->refuse_code && !lbl_valid_code(r->refuse_code)) RULE_ERR(L, r, "refuse code '%s' must be like FORBIDDEN", r->refuse_code);
        lua_pop(L, 1);
    }
    /* Anything but the list part is a mistake (rules = {...} by name?). */
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > n)
            luaL_error(L, "routes.lua must return a list of rules { {...}, {...} } (found key '%s')",
                       lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1));
    }
    index_build(rs);
}

bool rules_any(const struct rules *rs, enum rule_hook k)
{
    if (k == RH_EVENT) return rs->n_event_rules > 0;
    const struct rindex *ix = k == RH_CALL ? rs->ix_call : rs->ix_response;
    return ix && (ix->nb || ix->n_wild);
}

/* ---- running ------------------------------------------------------------- */

static const char *body_name(enum rule_hook h) { return h == RH_EVENT ? "payload" : h == RH_CALL ? "params" : "data"; }
static const char *name_field(enum rule_hook h) { return h == RH_EVENT ? "event" : "method"; }
static const char *type_name(enum rule_hook h) { return h == RH_EVENT ? "EMIT" : h == RH_CALL ? "CALL" : "RESPONSE"; }

struct run {
    struct lstate *s;
    struct rule *rule;
    struct rmsg *m;             /* the view: updated as rules change it */
    struct rresult *r;
    char err[512];
};

static void set_str(struct sbuf *b, struct lb_str *view, const char *p, size_t n)
{
    b->len = 0;
    sbuf_add(b, p, n);
    sbuf_cstr(b);
    view->p = b->p;
    view->n = n;
}

/* The members of the view are made when a rule reads them (__index), and
 * kept in the view for later reads: a rule that looks at nothing costs
 * one empty table.  JSON members are decoded then, only those the rule
 * reads.  A view kept past its rule's run is stale (an error to read). */
static int view_index(lua_State *L)
{
    struct lstate *s = lstate_of(L);
    if (!s->cur_view || lua_topointer(L, 1) != s->cur_view)
        return luaL_error(L, "a message view is valid only while its rule runs");
    const struct run *run = s->call_ud;
    const struct rmsg *m = run->m;
    size_t kn;
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &kn) : NULL;
    if (!k) return 0;
    struct lb_str v = { NULL, 0 };
    bool json = false;
#define IS(lit) (kn == sizeof(lit) - 1 && memcmp(k, lit, kn) == 0)
    if (IS("type")) v = (struct lb_str){ type_name(m->hook), strlen(type_name(m->hook)) };
    else if (IS("id")) v = m->id;
    else if (IS("from")) v = m->from;
    else if (IS("to")) v = m->to;
    else if (IS("service")) v = m->service;
    else if (IS("status")) v = m->status;
    else if (kn == strlen(name_field(m->hook)) && !memcmp(k, name_field(m->hook), kn)) v = m->name;
    else if (kn == strlen(body_name(m->hook)) && !memcmp(k, body_name(m->hook), kn)) { v = m->body; json = true; }
    else if (IS("context")) { v = m->context; json = true; }
    else if (IS("claims")) { v = m->claims; json = true; }
    else if (IS("error") && m->hook == RH_RESPONSE) { v = m->error; json = true; }
#undef IS
    if (!v.p) return 0;
    if (!json) {
        lua_pushlstring(L, v.p, v.n);
    } else {
        char err[200];
        if (lj_decode(L, v.p, v.n, LBL_MAX_DEPTH, err, sizeof err)) return luaL_error(L, "%s: %s", k, err);
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

static void push_view(lua_State *L, struct lstate *s)
{
    lua_createtable(L, 0, 4);
    if (s->view_mt == LUA_NOREF) {
        lua_createtable(L, 0, 2);
        lua_pushcfunction(L, view_index);
        lua_setfield(L, -2, "__index");
        lua_pushliteral(L, "view");
        lua_setfield(L, -2, "__metatable");
        s->view_mt = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->view_mt);
    lua_setmetatable(L, -2);
    s->cur_view = lua_topointer(L, -1);
}

static bool lbstr_eq(struct lb_str a, const char *p, size_t n) { return a.p && a.n == n && memcmp(a.p, p, n) == 0; }

/* Raw lookups only: the action may be the view itself, whose __index
 * would decode members the rule never touched. */
static int rawfield(lua_State *L, int t, const char *k)
{
    lua_pushstring(L, k);
    return lua_rawget(L, t);
}

/* A string member of the action: NULL when absent; raises when it is
 * not a string. */
static const char *act_string(lua_State *L, int t, const char *k, size_t *n)
{
    int ty = rawfield(L, t, k);
    if (ty != LUA_TNIL && ty != LUA_TSTRING) luaL_error(L, "'%s' must be a string", k);
    const char *p = ty == LUA_TSTRING ? lua_tolstring(L, -1, n) : NULL;
    lua_pop(L, 1);   /* the string stays anchored in the table */
    return p;
}

static void act_fixed_member(lua_State *L, struct run *run, int t, const char *k, struct lb_str orig)
{
    size_t n;
    const char *p = act_string(L, t, k, &n);
    if (p && !lbstr_eq(orig, p, n)) luaL_error(L, "a rule cannot change '%s'", k);
}

static void act_refuse(lua_State *L, struct run *run, int t)
{
    size_t n;
    const char *code = act_string(L, t, "refuse", &n), *msg = act_string(L, t, "message", &n);
    if (!lbl_valid_code(code)) luaL_error(L, "refuse code '%s' must be like FORBIDDEN", code);
    run->r->kind = RR_REFUSE;
    snprintf(run->r->code, sizeof run->r->code, "%s", code);
    snprintf(run->r->message, sizeof run->r->message, "%s", msg ? msg : "refused by a rule");
}

static void act_also(lua_State *L, struct run *run, int t)
{
    if (rawfield(L, t, "also") == LUA_TNIL) { lua_pop(L, 1); return; }
    if (run->m->hook != RH_EVENT) luaL_error(L, "'also' (fan-out) applies to events");
    int a = lua_gettop(L);
    if (!lua_istable(L, a)) luaL_error(L, "'also' must be a list of service names");
    lua_Integer n = (lua_Integer)lua_rawlen(L, a);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, a, i);
        size_t len;
        const char *p = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (!p || !lb_service_name_valid(p, len)) luaL_error(L, "'also'[%d] is not a valid service name", (int)i);
        struct rresult *r = run->r;
        bool dup = false;
        for (size_t k = 0; k < r->n_also; k++) dup |= strcmp(r->also[k], p) == 0;
        if (!dup) {
            if (r->n_also == RR_MAX_ALSO) luaL_error(L, "'also' names more than %d services", RR_MAX_ALSO);
            snprintf(r->also[r->n_also++], LB_MAX_NAME + 1, "%s", p);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void set_body_text(struct run *run, const char *p, size_t n, bool encoded_in_next)
{
    struct rresult *r = run->r;
    if (!encoded_in_next) {
        int next = r->body_cur ^ 1;
        r->body[next].len = 0;
        sbuf_add(&r->body[next], p, n);
    }
    r->body_cur ^= 1;
    r->set_body = true;
    run->m->body.p = r->body[r->body_cur].p;
    run->m->body.n = r->body[r->body_cur].len;
}

static void act_body(lua_State *L, struct run *run, int t)
{
    struct rmsg *m = run->m;
    const char *k = body_name(m->hook);
    if (rawfield(L, t, k) == LUA_TNIL) { lua_pop(L, 1); return; }
    char err[300];
    struct rresult *r = run->r;
    struct sbuf *next = &r->body[r->body_cur ^ 1];
    next->len = 0;
    if (lj_encode(L, -1, next, LBL_MAX_DEPTH - 1, k, err, sizeof err)) luaL_error(L, "%s", err);
    lua_pop(L, 1);
    set_body_text(run, NULL, 0, true);
}

/* The members a rule's answer may have (the view's own, and the action
 * members), as bits: by length first, as this runs for every answer. */
enum { A_ID, A_TO, A_TYPE, A_FROM, A_DATA, A_ALSO, A_EVENT, A_ERROR, A_METHOD, A_STATUS, A_PARAMS, A_CLAIMS,
       A_REFUSE, A_SERVICE, A_PAYLOAD, A_CONTEXT, A_MESSAGE };
#define A(x) (1u << (x))

static int action_key(const char *k, size_t n)
{
    static const struct { const char *name; int id; } by_len[][6] = {
        [2] = { { "id", A_ID }, { "to", A_TO } },
        [4] = { { "type", A_TYPE }, { "from", A_FROM }, { "data", A_DATA }, { "also", A_ALSO } },
        [5] = { { "event", A_EVENT }, { "error", A_ERROR } },
        [6] = { { "method", A_METHOD }, { "status", A_STATUS }, { "params", A_PARAMS }, { "claims", A_CLAIMS },
                { "refuse", A_REFUSE } },
        [7] = { { "service", A_SERVICE }, { "payload", A_PAYLOAD }, { "context", A_CONTEXT }, { "message", A_MESSAGE } },
    };
    if (n >= sizeof by_len / sizeof *by_len) return -1;
    for (int i = 0; i < 6 && by_len[n][i].name; i++) if (memcmp(by_len[n][i].name, k, n) == 0) return by_len[n][i].id;
    return -1;
}

static int body_bit(enum rule_hook h) { return h == RH_EVENT ? A_PAYLOAD : h == RH_CALL ? A_PARAMS : A_DATA; }

/* The rule's return value (at the top) into run->r and the view.  One
 * pass finds which members it has; only those are looked at. */
static void take_action(lua_State *L, struct run *run)
{
    int t = lua_gettop(L);
    struct rmsg *m = run->m;
    struct rresult *r = run->r;
    if (lua_isnil(L, t) || (lua_isboolean(L, t) && lua_toboolean(L, t))) return;
    if (lua_isboolean(L, t)) {
        r->kind = RR_REFUSE;
        snprintf(r->code, sizeof r->code, "%s", LB_E_FORBIDDEN);
        snprintf(r->message, sizeof r->message, "refused by rule '%s'", run->rule->name);
        return;
    }
    if (!lua_istable(L, t)) luaL_error(L, "returned a %s (expected nil, false, bus.refuse(...) or a table of changes)", luaL_typename(L, t));
    unsigned has = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        size_t kn = 0;
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &kn) : NULL;
        int id = k ? action_key(k, kn) : -1;
        if (id < 0) luaL_error(L, "returned an unknown field '%s'", k ? k : luaL_typename(L, -1));
        has |= A(id);
    }
    size_t n;
    if (has & A(A_REFUSE)) { act_refuse(L, run, t); return; }
    if (has & A(A_TYPE)) act_fixed_member(L, run, t, "type", (struct lb_str){ type_name(m->hook), strlen(type_name(m->hook)) });
    if (has & A(A_ID)) act_fixed_member(L, run, t, "id", m->id);
    if (has & A(A_FROM)) act_fixed_member(L, run, t, "from", m->from);
    if (has & A(A_SERVICE)) act_fixed_member(L, run, t, "service", m->service);
    if (has & A(A_STATUS)) act_fixed_member(L, run, t, "status", m->status);
    const char *to = has & A(A_TO) ? act_string(L, t, "to", &n) : NULL;
    if (to && !lbstr_eq(m->to, to, n)) {
        if (m->hook == RH_RESPONSE) luaL_error(L, "a response goes back to its caller: 'to' cannot change");
        if (!(m->hook == RH_EVENT && n == 9 && !memcmp(to, "broadcast", 9)) && !lb_service_name_valid(to, n))
            luaL_error(L, "to = '%s' is not a valid service name", to);
        set_str(&r->to, &m->to, to, n);
        r->set_to = true;
    }
    const char *other = m->hook == RH_EVENT ? "method" : "event";
    if ((has & A(m->hook == RH_EVENT ? A_METHOD : A_EVENT)) && act_string(L, t, other, &n))
        luaL_error(L, "'%s' does not apply to a %s", other, type_name(m->hook));
    const char *nm = has & A(m->hook == RH_EVENT ? A_EVENT : A_METHOD) ? act_string(L, t, name_field(m->hook), &n) : NULL;
    if (nm && !lbstr_eq(m->name, nm, n)) {
        if (m->hook == RH_RESPONSE) luaL_error(L, "a response's method cannot change");
        if (!(m->hook == RH_EVENT ? lb_event_name_valid(nm, n) : lb_method_name_valid(nm, n)))
            luaL_error(L, "%s = '%s' is not a valid name", name_field(m->hook), nm);
        set_str(&r->name, &m->name, nm, n);
        r->set_name = true;
    }
    if (has & A(body_bit(m->hook))) act_body(L, run, t);
    if (has & A(A_ALSO)) act_also(L, run, t);
    if (m->hook == RH_RESPONSE && (has & A(A_ERROR)) && rawfield(L, t, "error") != LUA_TNIL) {
        char err[300];
        r->error.len = 0;
        if (lj_encode(L, -1, &r->error, 8, "error", err, sizeof err)) luaL_error(L, "%s", err);
        r->set_error = true;
        m->error.p = r->error.p;
        m->error.n = r->error.len;
    }
}

static int run_fn(lua_State *L)
{
    struct run *run = lstate_ud(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, run->rule->fn_ref);
    push_view(L, run->s);
    lua_call(L, 1, 1);
    take_action(L, run);
    return 0;
}

/* ---- the JSONLex context of a transform ------------------------------- */

/* The members of the message view, by index (VIEW_* bits in rule->roots). */
enum { V_TYPE, V_ID, V_FROM, V_TO, V_NAME, V_SERVICE, V_STATUS, V_BODY, V_ERROR, V_CONTEXT, V_CLAIMS, V__COUNT };

static const char *view_name(enum rule_hook h, int v)
{
    static const char *const names[V__COUNT] = { "type", "id", "from", "to", NULL, "service", "status", NULL,
                                                 "error", "context", "claims" };
    return v == V_NAME ? name_field(h) : v == V_BODY ? body_name(h) : names[v];
}

static int view_member(enum rule_hook h, const char *p, size_t n)
{
    for (int v = 0; v < V__COUNT; v++) {
        const char *k = view_name(h, v);
        if (strlen(k) == n && memcmp(k, p, n) == 0) return v;
    }
    return -1;
}

static struct lb_str view_value(const struct rmsg *m, int v)
{
    switch (v) {
    case V_TYPE: return (struct lb_str){ type_name(m->hook), strlen(type_name(m->hook)) };
    case V_ID: return m->id;
    case V_FROM: return m->from;
    case V_TO: return m->to;
    case V_NAME: return m->name;
    case V_SERVICE: return m->service;
    case V_STATUS: return m->status;
    case V_BODY: return m->body;
    case V_ERROR: return m->error;
    case V_CONTEXT: return m->context;
    default: return m->claims;
    }
}

/* A transform's $var paths, resolved straight from the frame's text: a
 * path into payload/params/data, context, claims or error walks down the
 * text through objects (lj_members: the rest is skipped, not converted),
 * and only the value it ends at (or the array or scalar it meets first)
 * is parsed.  So a transform converts what it reads and nothing else, and
 * reads exactly what it would in the whole view as JSON (SPEC §4 walks).
 * A member named twice reads as missing where the path meets it, as a
 * full parse would make that object missing. */
#define SCAN_MAX 32   /* members of one object read from the text; more: parsed */
#define SCANS 4       /* objects one transform may scan (more: parsed) */

struct scan { const char *p; size_t n; int nm; struct lj_span key[SCAN_MAX], val[SCAN_MAX]; };
struct resolve { const struct rmsg *m; struct scan scan[SCANS]; size_t n; };

/* The members of the object text val, scanned once per evaluation (a
 * transform usually reads several members of one payload). */
static const struct scan *scan_of(struct resolve *rs, struct lb_str val)
{
    for (size_t i = 0; i < rs->n; i++)
        if (rs->scan[i].p == val.p && rs->scan[i].n == val.n) return &rs->scan[i];
    if (rs->n == SCANS) return NULL;
    struct scan *sc = &rs->scan[rs->n++];
    sc->p = val.p;
    sc->n = val.n;
    sc->nm = lj_object_scan(val.p, val.n, sc->key, sc->val, SCAN_MAX);
    return sc;
}

/* The common leaves a path ends at, without the parser: a string without
 * escapes (the frame's text is valid UTF-8), a small integer, a literal.
 * NULL: parse it. */
static json_t *leaf(struct lb_str v)
{
    if (v.n >= 2 && v.p[0] == '"' && v.p[v.n - 1] == '"' && !memchr(v.p + 1, '\\', v.n - 2))
        return json_stringn_nocheck(v.p + 1, v.n - 2);
    if (v.n > 0 && v.n <= 18) {
        size_t k = v.p[0] == '-';
        long long x = 0;
        if (k == v.n || (v.p[k] == '0' && v.n > k + 1)) goto literal;
        for (size_t i = k; i < v.n; i++) {
            if (v.p[i] < '0' || v.p[i] > '9') goto literal;
            x = x * 10 + (v.p[i] - '0');
        }
        return json_integer(k ? -x : x);
    }
literal:
    if (v.n == 4 && !memcmp(v.p, "true", 4)) return json_true();
    if (v.n == 5 && !memcmp(v.p, "false", 5)) return json_false();
    if (v.n == 4 && !memcmp(v.p, "null", 4)) return json_null();
    return NULL;
}

static json_t *view_resolve(void *ud, const struct jl_seg *segs, size_t n)
{
    struct resolve *rs = ud;
    const struct rmsg *m = rs->m;
    int v = view_member(m->hook, segs[0].p, segs[0].n);
    if (v < 0) return NULL;
    struct lb_str val = view_value(m, v);
    if (!val.p) return NULL;
    if (v < V_BODY) return n == 1 ? json_stringn(val.p, val.n) : NULL;   /* a string has no members */
    size_t i = 1;
    while (i < n) {
        size_t k = 0;
        while (k < val.n && (val.p[k] == ' ' || val.p[k] == '\t' || val.p[k] == '\n' || val.p[k] == '\r')) k++;
        if (k == val.n || val.p[k] != '{') break;
        const struct scan *sc = scan_of(rs, val);
        if (!sc || sc->nm < 0) break;   /* escaped names, too many: parse it */
        int hit = -1, hits = 0;
        for (int j = 0; j < sc->nm; j++)
            if (sc->key[j].n == segs[i].n && memcmp(sc->key[j].p, segs[i].p, segs[i].n) == 0) { hit = j; hits++; }
        if (!hits) return NULL;
        if (hits > 1) break;   /* named twice: the parse below refuses the object */
        val = (struct lb_str){ sc->val[hit].p, sc->val[hit].n };
        i++;
    }
    json_t *j = i == n ? leaf(val) : NULL;
    if (j) return j;
    char err[160];
    j = lj_parse(val.p, val.n, LBL_MAX_DEPTH, err, sizeof err);
    if (!j || i == n) return j;
    json_t *r = jl_walk(j, segs, i, n);
    json_decref(j);
    return r;
}

static int run_fixed(struct run *run)
{
    struct rule *rule = run->rule;
    struct rresult *r = run->r;
    struct rmsg *m = run->m;
    if (rule->refuse_code) {
        r->kind = RR_REFUSE;
        snprintf(r->code, sizeof r->code, "%s", rule->refuse_code);
        snprintf(r->message, sizeof r->message, "%s", rule->refuse_msg ? rule->refuse_msg : "refused by a rule");
        return 0;
    }
    if (rule->transform) {
        json_t *out = NULL;
        char err[300];
        struct resolve rs;
        rs.m = m;
        rs.n = 0;
        int rc = lstate_jsonlex_resolved(run->s, rule->transform, view_resolve, &rs, &out, err, sizeof err);
        if (rc) { snprintf(run->err, sizeof run->err, "transform: %s", err); return -1; }
        struct sbuf *next = &r->body[r->body_cur ^ 1];
        next->len = 0;
        lj_json_text(next, out);
        json_decref(out);
        set_body_text(run, NULL, 0, true);
    }
    if (rule->set_to) { set_str(&r->to, &m->to, rule->set_to, strlen(rule->set_to)); r->set_to = true; }
    if (rule->set_name) { set_str(&r->name, &m->name, rule->set_name, strlen(rule->set_name)); r->set_name = true; }
    for (size_t i = 0; i < rule->n_also && r->n_also < RR_MAX_ALSO; i++) {
        bool dup = false;
        for (size_t k = 0; k < r->n_also; k++) dup |= strcmp(r->also[k], rule->also[i]) == 0;
        if (!dup) snprintf(r->also[r->n_also++], LB_MAX_NAME + 1, "%s", rule->also[i]);
    }
    return 0;
}

/* At most one log line per rule per second: a rule failing on every
 * message must not flood the log. */
static void log_error_throttled(struct lstate *s, struct rule *rule, const char *msg)
{
    uint64_t sec = lb_now_ms() / 1000;
    if (sec == rule->log_sec) { rule->log_suppressed++; return; }
    if (rule->log_suppressed)
        lb_log(s->ctx, LB_LOG_WARN, "rule '%s': %llu more errors in the last second", rule->name,
               (unsigned long long)rule->log_suppressed);
    rule->log_sec = sec;
    rule->log_suppressed = 0;
    lb_log(s->ctx, LB_LOG_WARN, "%s", msg);
}

static void run_one(struct lstate *s, struct rule *rule, struct rmsg *view, struct rresult *r)
{
    struct run run = { .s = s, .rule = rule, .m = view, .r = r };
    uint64_t t0 = lbl_mono_ns();
    int rc;
    if (rule->fn_ref != LUA_NOREF) {
        enum lbl_fail kind;
        char err[400];
        rc = lstate_call(s, run_fn, &run, &kind, err, sizeof err);
        s->cur_view = NULL;
        if (rc) snprintf(run.err, sizeof run.err, "%s", err);
    } else {
        rc = run_fixed(&run);
    }
    /* A dry run (rules.test) answers its caller: it is neither counted
     * nor logged. */
    bool live = !s->dry_run;
    if (live) rule->ns += lbl_mono_ns() - t0;
    if (rc) {
        r->kind = RR_ERROR;
        snprintf(r->code, sizeof r->code, "%s", LB_E_SCRIPT_ERROR);
        snprintf(r->message, sizeof r->message, "rule '%.100s': %.380s", rule->name, run.err);
        if (live) {
            rule->errors++;
            s->n->rule_errors++;
            log_error_throttled(s, rule, r->message);
        }
    } else if (r->kind == RR_REFUSE && live) {
        rule->refusals++;
        s->n->rule_refusals++;
    }
}

static void collect_event(void *ud, void *arg)
{
    struct rules *rs = arg;
    if (rs->n_sel < rs->n_rules) rs->sel[rs->n_sel++] = (uint32_t)((uintptr_t)ud - 1);
}

bool rules_maybe(const struct rules *rs, const struct rmsg *m)
{
    const struct rindex *ix = m->hook == RH_EVENT ? rs->ix_event : m->hook == RH_CALL ? rs->ix_call : rs->ix_response;
    if (!ix || !m->name.p) return false;
    if (ix->n_wild) return true;
    struct lb_str key = index_key(m);
    return key.p && bucket_find(ix, key.p, key.n) != NULL;
}

size_t rules_select(struct rules *rs, const struct rmsg *m)
{
    rs->n_sel = 0;
    if (m->hook == RH_EVENT) {
        lb_patset_match(rs->events, m->name.p, m->name.n, collect_event, rs);
        /* File order (the trie reports matches in its own), then `from`. */
        for (size_t i = 1; i < rs->n_sel; i++)
            for (size_t j = i; j > 0 && rs->sel[j - 1] > rs->sel[j]; j--) {
                uint32_t t = rs->sel[j];
                rs->sel[j] = rs->sel[j - 1];
                rs->sel[j - 1] = t;
            }
        size_t k = 0;
        for (size_t i = 0; i < rs->n_sel; i++)
            if (from_ok(&rs->rules[rs->sel[i]], m->from)) rs->sel[k++] = rs->sel[i];
        return rs->n_sel = k;
    }
    const struct rindex *ix = m->hook == RH_CALL ? rs->ix_call : rs->ix_response;
    if (!ix || (!ix->nb && !ix->n_wild)) return 0;
    struct lb_str key = index_key(m);
    const struct bucket *b = key.p ? bucket_find(ix, key.p, key.n) : NULL;
    const uint32_t *cand = b ? b->rules : ix->wild;
    size_t n = b ? b->n : ix->n_wild;
    for (size_t i = 0; i < n; i++)
        if (rule_selects(&rs->rules[cand[i]], m)) rs->sel[rs->n_sel++] = cand[i];
    return rs->n_sel;
}

void rules_run_selected(struct rules *rs, const struct rmsg *m, struct rresult *r)
{
    struct lstate *s = rs->s;
    rresult_reset(r);
    struct rmsg view = *m;
    bool live = !s->dry_run;
    for (size_t i = 0; i < rs->n_sel; i++) {
        struct rule *rule = &rs->rules[rs->sel[i]];
        if (live) { rule->matches++; s->n->rule_matches++; }
        if (r->n_matched < RR_MAX_MATCHED) r->matched[r->n_matched++] = rule->name;
        size_t also_before = r->n_also;
        struct lb_str to0 = view.to, name0 = view.name, body0 = view.body;
        run_one(s, rule, &view, r);
        if (r->kind == RR_REFUSE || r->kind == RR_ERROR) return;
        if (live && (view.to.p != to0.p || view.name.p != name0.p || view.body.p != body0.p || r->n_also != also_before)) {
            rule->changes++;
            s->n->rule_changes++;
        }
        if (rule->last) break;
    }
    if (r->set_to || r->set_name || r->set_body || r->set_error || r->n_also) r->kind = RR_CHANGED;
}

void rules_run(struct rules *rs, const struct rmsg *m, struct rresult *r)
{
    rs->n_sel = 0;
    if (rules_maybe(rs, m)) rules_select(rs, m);
    rules_run_selected(rs, m, r);
}

json_t *rules_json(const struct rules *rs)
{
    static const char *const hooks[] = { "event", "call", "response" };
    json_t *a = json_array();
    for (size_t i = 0; i < rs->n_rules; i++) {
        const struct rule *r = &rs->rules[i];
        json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:f}", "name", r->name, "hook", hooks[r->hook],
                              "pattern", r->pattern ? r->pattern : "", "lua", r->fn_ref != LUA_NOREF,
                              "matches", (json_int_t)r->matches, "changes", (json_int_t)r->changes,
                              "refusals", (json_int_t)r->refusals, "errors", (json_int_t)r->errors,
                              "timeUs", (json_int_t)(r->ns / 1000),
                              "avgUs", r->matches ? (double)r->ns / 1000.0 / (double)r->matches : 0.0);
        if (r->line) json_object_set_new(o, "line", json_integer(r->line));
        if (r->n_from) {
            json_t *f = json_array();
            for (size_t k = 0; k < r->n_from; k++) json_array_append_new(f, json_string(r->from[k]));
            json_object_set_new(o, "from", f);
        }
        json_array_append_new(a, o);
    }
    return a;
}
