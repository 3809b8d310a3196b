/*
 * The lua plugin's glue to plugin ABI v2 (the rewrite and response hooks),
 * written against the names of V2-SKETCH.md.  Compiled only when
 * include/lexbus/plugin.h says LB_PLUGIN_ABI >= 2: with ABI v1 the rules
 * are loaded, listed and dry-run (rules.test, crud.test) but do not act on
 * traffic.  Everything here only translates between the host's message
 * and struct rmsg / struct crud_req; the work is in rules.c and crud.c.
 *
 * Written against the v2 branch's include/lexbus/plugin.h.  What it still
 * needs from the host: the method of the call a RESPONSE answers (read
 * here as lb_msg_field(m, "method") in the response hook; until the host
 * fills it, response rules see an empty method and only "SERVICE.*"
 * selectors match).
 */
#include "config.h"
#include <string.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>
#include "host.h"
#include "rules.h"
#include "crud.h"
#include "v2.h"
#include "luajson.h"
#include <stdio.h>
#include <stdlib.h>
#include <lauxlib.h>

#if LB_PLUGIN_ABI >= 2

static struct rresult g_r;
static struct crud_out g_crud;
static struct sbuf g_quoted;

/* A validated name as a JSON string (names never need escapes). */
static const char *quoted(const char *p, size_t n, size_t *len)
{
    g_quoted.len = 0;
    sbuf_addc(&g_quoted, '"');
    sbuf_add(&g_quoted, p, n);
    sbuf_addc(&g_quoted, '"');
    *len = g_quoted.len;
    return g_quoted.p;
}

static int set_name(struct lb_msg *m, const char *member, const char *p, size_t n)
{
    size_t len;
    const char *q = quoted(p, n, &len);
    return lb_msg_set(m, member, q, len);
}

/* Applies what the rules decided; refusals and errors are the caller's. */
static int apply(struct lb_msg *m, enum rule_hook hook, const struct rresult *r)
{
    if (r->set_to && set_name(m, "to", r->to.p, r->to.len)) return -1;
    if (r->set_name && set_name(m, hook == RH_EVENT ? "event" : "method", r->name.p, r->name.len)) return -1;
    if (r->set_body) {
        const struct sbuf *b = &r->body[r->body_cur];
        if (lb_msg_set(m, hook == RH_EVENT ? "payload" : hook == RH_CALL ? "params" : "data", b->p, b->len)) return -1;
    }
    if (r->set_error) {
        if (lb_msg_set(m, "status", "\"error\"", 7) || lb_msg_set(m, "error", r->error.p, r->error.len)) return -1;
    }
    for (size_t i = 0; i < r->n_also; i++)
        if (lb_msg_add_recipient(m, r->also[i])) return -1;
    return 0;
}

static struct lb_str str_or(struct lb_str v, const char *def)
{
    if (!v.p && def) { v.p = def; v.n = strlen(def); }
    return v;
}

static enum lb_verdict_kind run_rules(struct host *h, struct lb_conn *c, struct lb_msg *m, enum rule_hook hook,
                                     struct lb_err *err)
{
    struct lstate *s = h->cur;
    if (!rules_any(s, hook)) return LB_PASS;   /* nothing could match: never enter the engine */
    struct rmsg v;
    memset(&v, 0, sizeof v);
    v.hook = hook;
    v.id = lb_msg_field(m, "id");
    v.from = str_or(lb_msg_field(m, "from"), lb_conn_service(c));
    v.to = str_or(lb_msg_field(m, "to"), hook == RH_EVENT ? "broadcast" : NULL);
    if (hook == RH_RESPONSE) {
        /* c is the callee: its service is the one the call went to. */
        v.service = str_or(lb_msg_field(m, "from"), lb_conn_service(c));
        v.name = str_or(lb_msg_field(m, "method"), "");
        v.status = lb_msg_field(m, "status");
        v.body = lb_msg_raw(m, "data");
        v.error = lb_msg_raw(m, "error");
    } else {
        v.name = lb_msg_field(m, hook == RH_EVENT ? "event" : "method");
        v.body = lb_msg_raw(m, hook == RH_EVENT ? "payload" : "params");
        v.claims = lb_msg_claims(m);
    }
    v.context = lb_msg_raw(m, "context");
    rules_run(s, &v, &g_r);
    switch (g_r.kind) {
    case RR_PASS: return LB_PASS;
    case RR_REFUSE: return lb_refuse(err, g_r.code, "%s", g_r.message);
    case RR_ERROR: return lb_refuse(err, LB_E_SCRIPT_ERROR, "%s", g_r.message);
    case RR_CHANGED:
        if (apply(m, hook, &g_r)) return lb_refuse(err, LB_E_SCRIPT_ERROR, "a rule's change was refused by the bus");
        return LB_PASS;
    }
    return LB_PASS;
}

static enum lb_verdict_kind crud_rewrite(struct host *h, struct lb_conn *c, struct lb_msg *m, struct lb_err *err)
{
    struct crud_req q;
    memset(&q, 0, sizeof q);
    q.id = lb_msg_field(m, "id");
    q.from = str_or(lb_msg_field(m, "from"), lb_conn_service(c));
    q.op = lb_msg_field(m, "op");
    q.resource = lb_msg_field(m, "resource");
    q.to = lb_msg_field(m, "to");
    q.key = lb_msg_raw(m, "key");
    q.data = lb_msg_raw(m, "data");
    q.query = lb_msg_raw(m, "query");
    if (q.resource.p) q.declared_by = lb_resource_owner(h->ctx, q.resource.p, q.resource.n);
    crud_map(h->cur, &q, &g_crud);
    if (!g_crud.ok) return lb_refuse(err, g_crud.code, "%s", g_crud.message);
    if (lb_msg_set(m, "type", "\"CALL\"", 6) || set_name(m, "to", g_crud.to.p, g_crud.to.len) ||
        set_name(m, "method", g_crud.method.p, g_crud.method.len) ||
        lb_msg_set(m, "params", g_crud.params.p, g_crud.params.len))
        return lb_refuse(err, LB_E_INTERNAL_ERROR, "the bus refused the CALL crud.lua made");
    return LB_PASS;
}

static enum lb_verdict_kind on_rewrite(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_err *err)
{
    struct host *h = ud;
    switch (lb_msg_type(m)) {
    case LB_MSG_EMIT: return run_rules(h, c, m, RH_EVENT, err);
    case LB_MSG_CALL: return run_rules(h, c, m, RH_CALL, err);
    case LB_MSG_CRUD: return crud_rewrite(h, c, m, err);
    default: return LB_PASS;
    }
}

static enum lb_verdict_kind on_response(void *ud, struct lb_conn *c, struct lb_conn *to, struct lb_msg *m,
                                        struct lb_err *err)
{
    (void)to;
    return run_rules(ud, c, m, RH_RESPONSE, err);
}

/* ---- bus.emit and bus.services (plugin ABI v2) ------------------------- */

/* The plugin's own in-process connection: scripts emit through it as the
 * service "lua", through the normal validated path (routed on the next
 * loop turn, never from inside a hook). */
static struct lb_conn *g_conn;

static void local_message(void *ud, struct lb_conn *conn, const struct lb_msg *m)
{
    (void)ud; (void)conn; (void)m;   /* ACKs and ERRORs of fire-and-forget emits */
}

static int open_local(struct host *h)
{
    static const struct lb_local_ops ops = { .size = sizeof ops, .on_message = local_message };
    struct lb_local_opts opts = { .size = sizeof opts, .label = "lua", .trusted = true };
    g_conn = lb_local_open(h->ctx, &opts, &ops, h);
    if (!g_conn || lb_local_register(g_conn, "lua", NULL, 0)) {
        lb_plugin_fail(h->ctx, "cannot open the plugin's in-process connection");
        return -1;
    }
    return 0;
}

/* bus.emit(event, payload [, to]): true, or nil and why. */
static int b_emit(lua_State *L)
{
    struct host *h = lstate_of(L)->h;
    size_t n, tn = 0;
    const char *ev = luaL_checklstring(L, 1, &n);
    const char *to = luaL_optlstring(L, 3, NULL, &tn);
    if (!lbl_valid_event(ev, n)) return luaL_error(L, "bus.emit: '%s' is not an event name", ev);
    if (to && !(tn == 9 && !memcmp(to, "broadcast", 9)) && !lbl_valid_service(to, tn))
        return luaL_error(L, "bus.emit: '%s' is not a service name", to);
    char err[300];
    h->out.len = 0;
    if (!lua_isnoneornil(L, 2) && lj_encode(L, 2, &h->out, LBL_MAX_DEPTH - 1, "payload", err, sizeof err))
        return luaL_error(L, "bus.emit: %s", err);
    if (!g_conn || lb_emit(g_conn, NULL, ev, to, h->out.len ? h->out.p : NULL, h->out.len)) {
        lua_pushnil(L);
        lua_pushliteral(L, "the bus did not take the event");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* bus.services(): { {name=, instances=, registered=, lastSeen=}, ... }.
 * Collected in C first: a Lua error must not unwind through the host's
 * iteration. */
struct svc { char name[LB_MAX_NAME + 1]; uint64_t instances, registered, last_seen; };
static struct svc *g_svcs;
static size_t g_n_svcs, g_cap_svcs;

static void collect_svc(void *ud, const struct lb_service_info *si)
{
    (void)ud;
    if (g_n_svcs == g_cap_svcs) {
        size_t cap = g_cap_svcs ? g_cap_svcs * 2 : 32;
        struct svc *v = realloc(g_svcs, cap * sizeof *v);
        if (!v) return;
        g_svcs = v;
        g_cap_svcs = cap;
    }
    struct svc *o = &g_svcs[g_n_svcs++];
    snprintf(o->name, sizeof o->name, "%s", si->name);
    o->instances = si->instances;
    o->registered = si->registered_ms;
    o->last_seen = si->last_seen_ms;
}

static int b_services(lua_State *L)
{
    struct host *h = lstate_of(L)->h;
    g_n_svcs = 0;
    lb_services_each(h->ctx, collect_svc, NULL);
    lua_createtable(L, (int)g_n_svcs, 0);
    lj_set_array(L, -1);
    for (size_t i = 0; i < g_n_svcs; i++) {
        lua_createtable(L, 0, 4);
        lua_pushstring(L, g_svcs[i].name);
        lua_setfield(L, -2, "name");
        lua_pushinteger(L, (lua_Integer)g_svcs[i].instances);
        lua_setfield(L, -2, "instances");
        lua_pushinteger(L, (lua_Integer)g_svcs[i].registered);
        lua_setfield(L, -2, "registered");
        lua_pushinteger(L, (lua_Integer)g_svcs[i].last_seen);
        lua_setfield(L, -2, "lastSeen");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

void lua_v2_bus_api(lua_State *L)
{
    lua_pushcfunction(L, b_emit);
    lua_setfield(L, -2, "emit");
    lua_pushcfunction(L, b_services);
    lua_setfield(L, -2, "services");
}

int lua_v2_register(struct host *h)
{
    if (open_local(h)) return -1;
    struct lb_hooks hooks = { .size = sizeof hooks, .rewrite = on_rewrite, .response = on_response };
    if (lb_hooks_register(h->ctx, &hooks, h) < 0) {
        lb_plugin_fail(h->ctx, "cannot register the rewrite and response hooks");
        return -1;
    }
    return 0;
}

void lua_v2_free(void)
{
    if (g_conn) lb_local_close(g_conn);
    g_conn = NULL;
    free(g_svcs);
    g_svcs = NULL;
    g_n_svcs = g_cap_svcs = 0;
    rresult_free(&g_r);
    crud_out_free(&g_crud);
    sbuf_free(&g_quoted);
}

#else

int lua_v2_register(struct host *h) { (void)h; return 0; }
void lua_v2_free(void) {}
void lua_v2_bus_api(lua_State *L) { (void)L; }

#endif
