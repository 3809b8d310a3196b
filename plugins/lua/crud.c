/* crud.lua: CRUD requests into calls (crud.h). */
#include "config.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <lexbus/protocol.h>
#include "crud.h"
#include "luajson.h"

enum { OP_CREATE, OP_READ, OP_UPDATE, OP_DELETE, OP__COUNT };
static const char *const g_ops[OP__COUNT] = { "create", "read", "update", "delete" };

enum ftype { T_ANY, T_STRING, T_NUMBER, T_INTEGER, T_BOOLEAN, T_OBJECT, T_ARRAY, T_NULL };
static const char *const g_types[] = { "any", "string", "number", "integer", "boolean", "object", "array", "null", NULL };

struct field { char *name; enum ftype type; bool required; };

struct op_rules { struct field *f; size_t n; bool declared; };

struct crud_res {
    char *name;
    char *service;             /* when no service declares the resource */
    struct op_rules op[OP__COUNT];
    int transform_ref;
    uint64_t requests, refusals, errors;
};

void crud_out_free(struct crud_out *o)
{
    sbuf_free(&o->to);
    sbuf_free(&o->method);
    sbuf_free(&o->params);
}

static char *xdup(const char *s)
{
    char *p = strdup(s);
    if (!p) abort();
    return p;
}

/* ---- building ----------------------------------------------------------- */

static struct field *field_get(struct op_rules *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++) if (!strcmp(r->f[i].name, name)) return &r->f[i];
    r->f = realloc(r->f, (r->n + 1) * sizeof *r->f);
    if (!r->f) abort();
    r->f[r->n] = (struct field){ xdup(name), T_ANY, false };
    return &r->f[r->n++];
}

static void read_op(lua_State *L, struct crud_res *res, int t, int op)
{
    const char *opn = g_ops[op];
    if (lua_getfield(L, t, opn) == LUA_TNIL) { lua_pop(L, 1); return; }
    int o = lua_gettop(L);
    if (!lua_istable(L, o)) luaL_error(L, "crud.lua: resource '%s': '%s' must be a table { required = {...}, types = {...} }", res->name, opn);
    struct op_rules *r = &res->op[op];
    r->declared = true;
    lua_pushnil(L);
    while (lua_next(L, o)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(k, "required") && strcmp(k, "types"))
            luaL_error(L, "crud.lua: resource '%s': %s: unknown field '%s' (required, types)", res->name, opn, k);
        lua_pop(L, 1);
    }
    if (lua_getfield(L, o, "required") != LUA_TNIL) {
        if (!lua_istable(L, -1)) luaL_error(L, "crud.lua: resource '%s': %s.required must be a list of field names", res->name, opn);
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "crud.lua: resource '%s': %s.required[%d] is not a name", res->name, opn, (int)i);
            field_get(r, lua_tostring(L, -1))->required = true;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, o, "types") != LUA_TNIL) {
        int ty = lua_gettop(L);
        if (!lua_istable(L, ty)) luaL_error(L, "crud.lua: resource '%s': %s.types must map field names to types", res->name, opn);
        lua_pushnil(L);
        while (lua_next(L, ty)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            int i = 0;
            while (v && g_types[i] && strcmp(g_types[i], v)) i++;
            if (!k || !v || !g_types[i])
                luaL_error(L, "crud.lua: resource '%s': %s.types: '%s' must be one of string, number, integer, boolean, object, array, null, any",
                           res->name, opn, k ? k : "?");
            field_get(r, k)->type = (enum ftype)i;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 2);
}

static bool resource_name_ok(const char *p, size_t n)
{
    /* resource.op must be a method name */
    return n > 0 && n <= LB_MAX_NAME - 7 && lb_method_name_valid(p, n);
}

void crud_init(struct crud_set *cs, struct lstate *s)
{
    memset(cs, 0, sizeof *cs);
    cs->s = s;
}

void crud_build(struct crud_set *cs, lua_State *L, int t)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(k, "resources")) luaL_error(L, "crud.lua: unknown field '%s' (crud.lua returns { resources = {...} })", k);
        lua_pop(L, 1);
    }
    if (lua_getfield(L, t, "resources") == LUA_TNIL) { lua_pop(L, 1); return; }
    int r = lua_gettop(L);
    if (!lua_istable(L, r)) luaL_error(L, "crud.lua: 'resources' must be a table of name = {...}");
    lua_pushnil(L);
    while (lua_next(L, r)) {
        size_t n;
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &n) : NULL;
        if (!name || !resource_name_ok(name, n)) luaL_error(L, "crud.lua: resource '%s' is not a valid name", name ? name : "?");
        int v = lua_gettop(L);
        if (!lua_istable(L, v)) luaL_error(L, "crud.lua: resource '%s' must be a table", name);
        /* In cs before it is filled in: a Lua error leaves nothing unfreed. */
        cs->res = realloc(cs->res, (cs->n + 1) * sizeof *cs->res);
        if (!cs->res) abort();
        struct crud_res *res = &cs->res[cs->n++];
        memset(res, 0, sizeof *res);
        res->transform_ref = LUA_NOREF;
        res->name = xdup(name);
        lua_pushnil(L);
        while (lua_next(L, v)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            bool known = !strcmp(k, "service") || !strcmp(k, "transform");
            for (int i = 0; i < OP__COUNT; i++) known |= !strcmp(k, g_ops[i]);
            if (!known) luaL_error(L, "crud.lua: resource '%s': unknown field '%s'", name, k);
            lua_pop(L, 1);
        }
        if (lua_getfield(L, v, "service") != LUA_TNIL) {
            size_t sn;
            const char *sv = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &sn) : NULL;
            if (!sv || !lb_service_name_valid(sv, sn)) luaL_error(L, "crud.lua: resource '%s': service must be a service name", name);
            res->service = xdup(sv);
        }
        lua_pop(L, 1);
        for (int i = 0; i < OP__COUNT; i++) read_op(L, res, v, i);
        if (lua_getfield(L, v, "transform") != LUA_TNIL) {
            if (!lua_isfunction(L, -1)) luaL_error(L, "crud.lua: resource '%s': transform must be a function", name);
            res->transform_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        } else {
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

void crud_free(struct crud_set *cs)
{
    for (size_t i = 0; i < cs->n; i++) {
        struct crud_res *r = &cs->res[i];
        free(r->name);
        free(r->service);
        for (int k = 0; k < OP__COUNT; k++) {
            for (size_t j = 0; j < r->op[k].n; j++) free(r->op[k].f[j].name);
            free(r->op[k].f);
        }
    }
    free(cs->res);
    cs->res = NULL;
    cs->n = 0;
}

/* ---- mapping -------------------------------------------------------------- */

static void refuse(struct crud_out *o, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(struct crud_out *o, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->message, sizeof o->message, fmt, ap);
    va_end(ap);
    snprintf(o->code, sizeof o->code, "%s", code);
    o->ok = false;
}

static struct crud_res *find_res(struct crud_set *cs, struct lb_str r)
{
    for (size_t i = 0; i < cs->n; i++)
        if (strlen(cs->res[i].name) == r.n && memcmp(cs->res[i].name, r.p, r.n) == 0) return &cs->res[i];
    return NULL;
}

static bool type_ok(const json_t *v, enum ftype t)
{
    switch (t) {
    case T_ANY: return true;
    case T_STRING: return json_is_string(v);
    case T_NUMBER: return json_is_number(v);
    case T_INTEGER: return json_is_integer(v) || (json_is_real(v) && json_real_value(v) == (double)(long long)json_real_value(v));
    case T_BOOLEAN: return json_is_boolean(v);
    case T_OBJECT: return json_is_object(v);
    case T_ARRAY: return json_is_array(v);
    case T_NULL: return json_is_null(v);
    }
    return false;
}

/* What crud.lua declares for this op, checked on data (query for read). */
static bool validate(const struct crud_res *res, int op, const struct crud_req *q, struct crud_out *o)
{
    const struct op_rules *r = &res->op[op];
    if (!r->declared || !r->n) return true;
    const char *what = op == OP_READ ? "query" : "data";
    struct lb_str raw = op == OP_READ ? q->query : q->data;
    char err[200];
    json_t *v = raw.p ? lj_parse(raw.p, raw.n, LBL_MAX_DEPTH, err, sizeof err) : json_object();
    if (!v || !json_is_object(v)) {
        json_decref(v);
        refuse(o, LB_E_INVALID_MESSAGE, "%s.%s: %s must be an object", res->name, g_ops[op], what);
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < r->n && ok; i++) {
        const struct field *f = &r->f[i];
        json_t *m = json_object_get(v, f->name);
        if (!m || json_is_null(m)) {
            /* null for an optional field is allowed */
            if (f->required) { refuse(o, LB_E_INVALID_MESSAGE, "%s.%s: %s.%s is required", res->name, g_ops[op], what, f->name); ok = false; }
        } else if (!type_ok(m, f->type)) {
            refuse(o, LB_E_INVALID_MESSAGE, "%s.%s: %s.%s must be %s %s", res->name, g_ops[op], what, f->name,
                   f->type == T_OBJECT || f->type == T_ARRAY || f->type == T_INTEGER ? "an" : "a", g_types[f->type]);
            ok = false;
        }
    }
    json_decref(v);
    return ok;
}

static void add_member(struct sbuf *b, bool *first, const char *k, const char *raw, size_t n, bool quote);

/* params {resource, op, key, data, query}, absent members left out. */
static void build_params(struct crud_out *o, struct lb_str resource, int op, const struct crud_req *q)
{
    bool first = true;
    o->params.len = 0;
    sbuf_addc(&o->params, '{');
    add_member(&o->params, &first, "resource", resource.p, resource.n, true);
    add_member(&o->params, &first, "op", g_ops[op], strlen(g_ops[op]), true);
    add_member(&o->params, &first, "key", q->key.p, q->key.n, false);
    add_member(&o->params, &first, "data", q->data.p, q->data.n, false);
    add_member(&o->params, &first, "query", q->query.p, q->query.n, false);
    sbuf_addc(&o->params, '}');
}

static void add_member(struct sbuf *b, bool *first, const char *k, const char *raw, size_t n, bool quote)
{
    if (!raw) return;
    if (!*first) sbuf_addc(b, ',');
    *first = false;
    sbuf_addc(b, '"');
    sbuf_add(b, k, strlen(k));
    sbuf_lit(b, "\":");
    if (quote) sbuf_addc(b, '"');
    sbuf_add(b, raw, n);
    if (quote) sbuf_addc(b, '"');
}

/* The transform: fn({op, resource, key, data, query}) in Lua. */
struct tjob {
    struct crud_res *res;
    struct crud_req *q;        /* updated: key/data/query point into the bufs below */
    struct crud_out *o;
    struct sbuf key, data, query;
    bool refused;
};

static void push_raw(lua_State *L, const char *k, struct lb_str raw)
{
    char err[200];
    if (!raw.p) return;
    if (lj_decode(L, raw.p, raw.n, LBL_MAX_DEPTH, err, sizeof err)) luaL_error(L, "%s: %s", k, err);
    lua_setfield(L, -2, k);
}

static void take_raw(lua_State *L, int t, const char *k, struct sbuf *b, struct lb_str *out)
{
    char err[300];
    lua_getfield(L, t, k);
    b->len = 0;
    if (lua_isnil(L, -1)) { out->p = NULL; out->n = 0; }
    else {
        if (lj_encode(L, -1, b, LBL_MAX_DEPTH - 2, k, err, sizeof err)) luaL_error(L, "transform returned %s", err);
        out->p = b->p;
        out->n = b->len;
    }
    lua_pop(L, 1);
}

static int transform_fn(lua_State *L)
{
    struct tjob *j = lstate_ud(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, j->res->transform_ref);
    lua_createtable(L, 0, 6);
    lua_pushlstring(L, j->q->op.p, j->q->op.n);
    lua_setfield(L, -2, "op");
    lua_pushlstring(L, j->q->resource.p, j->q->resource.n);
    lua_setfield(L, -2, "resource");
    if (j->q->from.p) { lua_pushlstring(L, j->q->from.p, j->q->from.n); lua_setfield(L, -2, "from"); }
    push_raw(L, "key", j->q->key);
    push_raw(L, "data", j->q->data);
    push_raw(L, "query", j->q->query);
    lua_call(L, 1, 1);
    int t = lua_gettop(L);
    if (lua_isnil(L, t)) return 0;
    if (!lua_istable(L, t)) return luaL_error(L, "transform returned a %s (expected nil, a request table or bus.refuse(...))", luaL_typename(L, t));
    if (lua_getfield(L, t, "refuse") == LUA_TSTRING) {
        if (!lbl_valid_code(lua_tostring(L, -1))) return luaL_error(L, "refuse code '%s' must be like FORBIDDEN", lua_tostring(L, -1));
        lua_getfield(L, t, "message");
        refuse(j->o, lua_tostring(L, -2), "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "refused by crud.lua");
        j->refused = true;
        return 0;
    }
    lua_pop(L, 1);
    take_raw(L, t, "key", &j->key, &j->q->key);
    take_raw(L, t, "data", &j->data, &j->q->data);
    take_raw(L, t, "query", &j->query, &j->q->query);
    return 0;
}

void crud_map(struct crud_set *cs, const struct crud_req *in, struct crud_out *o)
{
    struct crud_req q = *in;
    o->ok = true;
    o->code[0] = o->message[0] = 0;
    o->to.len = o->method.len = o->params.len = 0;
    int op = 0;
    while (op < OP__COUNT && !(q.op.p && strlen(g_ops[op]) == q.op.n && memcmp(g_ops[op], q.op.p, q.op.n) == 0)) op++;
    if (op == OP__COUNT) { refuse(o, LB_E_INVALID_MESSAGE, "CRUD needs \"op\": create, read, update or delete"); return; }
    if (!q.resource.p || !resource_name_ok(q.resource.p, q.resource.n)) {
        refuse(o, LB_E_INVALID_MESSAGE, "CRUD needs \"resource\": a name (like a method name, at most %d bytes)", LB_MAX_NAME - 7);
        return;
    }
    const char *rn = q.resource.p;
    int rl = (int)q.resource.n;
    if (q.to.p && !lb_service_name_valid(q.to.p, q.to.n)) { refuse(o, LB_E_INVALID_MESSAGE, "\"to\" must be a service name"); return; }
    if ((op == OP_CREATE || op == OP_UPDATE) && (!q.data.p || q.data.p[0] != '{')) {
        refuse(o, LB_E_INVALID_MESSAGE, "%.*s.%s needs \"data\": an object", rl, rn, g_ops[op]);
        return;
    }
    if ((op == OP_UPDATE || op == OP_DELETE) && !q.key.p) { refuse(o, LB_E_INVALID_MESSAGE, "%.*s.%s needs a \"key\"", rl, rn, g_ops[op]); return; }
    if (op == OP_READ && q.query.p && q.query.p[0] != '{') { refuse(o, LB_E_INVALID_MESSAGE, "\"query\" must be an object"); return; }
    struct crud_res *res = find_res(cs, q.resource);
    const char *target = NULL;
    size_t tn = 0;
    if (q.to.p) { target = q.to.p; tn = q.to.n; }
    else if (q.declared_by) { target = q.declared_by; tn = strlen(target); }
    else if (res && res->service) { target = res->service; tn = strlen(target); }
    if (!target) {
        refuse(o, LB_E_SERVICE_NOT_FOUND, "no service serves resource '%.*s' (none declared it at REGISTER, crud.lua names none, and the request has no \"to\")", rl, rn);
        return;
    }
    bool live = !cs->s->dry_run;   /* crud.test is not counted */
    if (res) {
        if (live) res->requests++;
        if (!validate(res, op, &q, o)) { res->refusals += live; return; }
        if (res->transform_ref != LUA_NOREF) {
            struct tjob j = { .res = res, .q = &q, .o = o };
            enum lbl_fail kind;
            char err[400];
            int rc = lstate_call(cs->s, transform_fn, &j, &kind, err, sizeof err);
            if (rc) {
                res->errors += live;
                refuse(o, LB_E_SCRIPT_ERROR, "crud.lua resource '%s': %.300s", res->name, err);
            } else if (j.refused) {
                res->refusals += live;
            }
            /* The transformed members, before their buffers go. */
            if (!rc && !j.refused) build_params(o, q.resource, op, &q);
            sbuf_free(&j.key);
            sbuf_free(&j.data);
            sbuf_free(&j.query);
            if (rc || j.refused) return;
        }
    }
    if (!o->params.len) build_params(o, q.resource, op, &q);
    sbuf_add(&o->to, target, tn);
    sbuf_cstr(&o->to);
    sbuf_add(&o->method, rn, (size_t)rl);
    sbuf_addc(&o->method, '.');
    sbuf_add(&o->method, g_ops[op], strlen(g_ops[op]));
    sbuf_cstr(&o->method);
}

json_t *crud_json(const struct crud_set *cs)
{
    json_t *a = json_array();
    for (size_t i = 0; i < cs->n; i++) {
        const struct crud_res *r = &cs->res[i];
        json_t *ops = json_array();
        for (int k = 0; k < OP__COUNT; k++) if (r->op[k].declared) json_array_append_new(ops, json_string(g_ops[k]));
        json_t *o = json_pack("{s:s,s:o,s:b,s:I,s:I,s:I}", "resource", r->name, "validated", ops,
                              "transform", r->transform_ref != LUA_NOREF, "requests", (json_int_t)r->requests,
                              "refusals", (json_int_t)r->refusals, "errors", (json_int_t)r->errors);
        if (r->service) json_object_set_new(o, "service", json_string(r->service));
        json_array_append_new(a, o);
    }
    return a;
}
