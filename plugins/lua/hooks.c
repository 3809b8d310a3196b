/*
 * The lua plugin on live traffic (hooks.h).  Everything here translates
 * between the host's message and struct rmsg / struct crud_req; the work is
 * in rules.c and crud.c.
 *
 * Hot path: for an EMIT or CALL the rewrite hook reads the name, target
 * and sender, asks rules_select (C, no Lua), and returns at once when no
 * rule selects the message.  Only a selected message has its body,
 * context and claims read and its rules run.  The response hook does the
 * same with the call's service and method (attributes "call.to" and
 * "call.method").
 *
 * The in-process connection: scripts' events go out through it as the
 * service named by `service` (default "lua"), deferred by the host to a
 * later loop turn, through the same validated path as a client's frames.
 * It is trusted (authenticated by the host, so it works in production
 * without a token); scripts never choose its `from`.  Events it sends are
 * not run through the rules again, so a rule cannot feed itself.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>
#include "hooks.h"
#include "host.h"
#include "luajson.h"

static struct rresult g_r;
static struct crud_out g_crud;
static struct sbuf g_quoted;

static struct lb_str cstr(const char *s)
{
    struct lb_str v = { s, s ? strlen(s) : 0 };
    return v;
}

static struct lb_str str_or(struct lb_str v, const char *def) { return v.p ? v : cstr(def); }

/* A validated name as a JSON string (names never need escapes). */
static int set_name(struct lb_msg *m, const char *member, const char *p, size_t n)
{
    g_quoted.len = 0;
    sbuf_addc(&g_quoted, '"');
    sbuf_add(&g_quoted, p, n);
    sbuf_addc(&g_quoted, '"');
    return lb_msg_set(m, member, g_quoted.p, g_quoted.len);
}

/* ---- routes.lua on live messages ---------------------------------------- */

/* Applies what the rules decided (refusals and errors are the caller's).
 * A RESPONSE given `data` becomes a success, one given `error` an error. */
static int apply(struct lb_msg *m, enum rule_hook hook, const struct rresult *r)
{
    if (r->set_to && set_name(m, "to", r->to.p, r->to.len)) return -1;
    if (r->set_name && set_name(m, hook == RH_EVENT ? "event" : "method", r->name.p, r->name.len)) return -1;
    if (hook == RH_RESPONSE && r->set_error) {
        if (lb_msg_set(m, "status", "\"error\"", 7) || lb_msg_set(m, "error", r->error.p, r->error.len) ||
            lb_msg_set(m, "data", NULL, 0))
            return -1;
    } else if (r->set_body) {
        const struct sbuf *b = &r->body[r->body_cur];
        if (lb_msg_set(m, hook == RH_EVENT ? "payload" : hook == RH_CALL ? "params" : "data", b->p, b->len)) return -1;
        if (hook == RH_RESPONSE && (lb_msg_set(m, "status", "\"success\"", 9) || lb_msg_set(m, "error", NULL, 0)))
            return -1;
    }
    for (size_t i = 0; i < r->n_also; i++)
        if (lb_msg_add_recipient(m, r->also[i])) return -1;
    return 0;
}

static enum lb_verdict_kind verdict(struct lb_msg *m, enum rule_hook hook, struct lb_err *err)
{
    switch (g_r.kind) {
    case RR_PASS: return LB_PASS;
    case RR_REFUSE: return lb_refuse(err, g_r.code, "%s", g_r.message);
    case RR_ERROR: return lb_refuse(err, LB_E_SCRIPT_ERROR, "%s", g_r.message);
    case RR_CHANGED:
        if (apply(m, hook, &g_r))
            return lb_refuse(err, LB_E_SCRIPT_ERROR, "rule '%s': the bus refused its change of the message",
                             g_r.n_matched ? g_r.matched[g_r.n_matched - 1] : "?");
        return LB_PASS;
    }
    return LB_PASS;
}

/* An EMIT or a CALL on its way in. */
static enum lb_verdict_kind inbound(struct host *h, struct lb_conn *c, struct lb_msg *m, enum rule_hook hook,
                                    struct lb_err *err)
{
    struct rules *rs = &h->cur->rules;
    if (!rules_any(rs, hook)) return LB_PASS;
    struct rmsg v;
    v.hook = hook;
    v.name = lb_msg_field(m, hook == RH_EVENT ? "event" : "method");
    v.to = hook == RH_CALL ? lb_msg_field(m, "to") : (struct lb_str){ NULL, 0 };
    v.service = (struct lb_str){ NULL, 0 };
    if (!rules_maybe(rs, &v)) return LB_PASS;   /* the common case: one hash lookup, Lua never sees it */
    v.status = v.error = (struct lb_str){ NULL, 0 };
    if (hook == RH_EVENT) v.to = str_or(lb_msg_field(m, "to"), "broadcast");
    v.from = str_or(lb_msg_field(m, "from"), lb_conn_service(c));
    if (!rules_select(rs, &v)) return LB_PASS;
    v.id = lb_msg_field(m, "id");
    v.body = lb_msg_raw(m, hook == RH_EVENT ? "payload" : "params");
    v.context = lb_msg_raw(m, "context");
    v.claims = lb_msg_claims(m);
    rules_run_selected(rs, &v, &g_r);
    return verdict(m, hook, err);
}

/* ---- crud.lua: a CRUD request becomes the CALL it maps to ------------------ */

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
    h->n.crud_requests++;
    crud_map(&h->cur->crud, &q, &g_crud);
    if (!g_crud.ok) {
        h->n.crud_refusals++;
        return lb_refuse(err, g_crud.code, "%s", g_crud.message);
    }
    /* The CALL keeps id, from, token and context; the CRUD members move
     * into params. */
    static const char *const gone[] = { "op", "resource", "key", "data", "query" };
    int rc = lb_msg_set(m, "type", "\"CALL\"", 6) || set_name(m, "to", g_crud.to.p, g_crud.to.len) ||
             set_name(m, "method", g_crud.method.p, g_crud.method.len) ||
             lb_msg_set(m, "params", g_crud.params.p, g_crud.params.len);
    for (size_t i = 0; !rc && i < sizeof gone / sizeof *gone; i++)
        if (lb_msg_raw(m, gone[i]).p) rc = lb_msg_set(m, gone[i], NULL, 0);
    if (rc) {
        h->n.crud_refusals++;
        return lb_refuse(err, LB_E_INTERNAL_ERROR, "the bus refused the CALL crud.lua made of this request");
    }
    return LB_PASS;
}

static enum lb_verdict_kind on_rewrite(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_err *err)
{
    struct host *h = ud;
    switch (lb_msg_type(m)) {
    case LB_MSG_EMIT: return c == h->conn ? LB_PASS : inbound(h, c, m, RH_EVENT, err);
    case LB_MSG_CALL: return c == h->conn ? LB_PASS : inbound(h, c, m, RH_CALL, err);
    case LB_MSG_CRUD: return crud_rewrite(h, c, m, err);
    default: return LB_PASS;
    }
}

/* A RESPONSE on its way back to `caller` (c is the callee). */
static enum lb_verdict_kind on_response(void *ud, struct lb_conn *c, struct lb_conn *caller, struct lb_msg *m,
                                        struct lb_err *err)
{
    struct host *h = ud;
    struct rules *rs = &h->cur->rules;
    if (!rules_any(rs, RH_RESPONSE)) return LB_PASS;
    struct rmsg v;
    memset(&v, 0, sizeof v);
    v.hook = RH_RESPONSE;
    v.service = cstr(lb_msg_attr_get(m, "call.to"));
    v.name = cstr(lb_msg_attr_get(m, "call.method"));
    if (!rules_maybe(rs, &v)) return LB_PASS;
    v.from = str_or(lb_msg_field(m, "from"), lb_conn_service(c));
    if (!rules_select(rs, &v)) return LB_PASS;
    v.id = lb_msg_field(m, "id");
    v.to = str_or(lb_msg_field(m, "to"), lb_conn_service(caller));
    v.status = lb_msg_field(m, "status");
    v.body = lb_msg_raw(m, "data");
    v.error = lb_msg_raw(m, "error");
    v.context = lb_msg_raw(m, "context");
    rules_run_selected(rs, &v, &g_r);
    return verdict(m, RH_RESPONSE, err);
}

/* ---- the in-process connection ------------------------------------------------ */

static void local_message(void *ud, struct lb_conn *conn, const struct lb_msg *m)
{
    struct host *h = ud;
    /* The service has no methods of its own (the plugin's are the bus's:
     * lexbus.jsonlex, ...); every CALL must be answered. */
    if (lb_msg_type(m) == LB_MSG_CALL) {
        lb_respond_error(conn, m, LB_E_METHOD_NOT_FOUND,
                         "the lua plugin's service has no methods (see lexbus.jsonlex, lexbus.rules)");
        return;
    }
    /* Scripts' events are fire-and-forget; what comes back is the bus
     * refusing one (another plugin's policy, say). */
    if (lb_msg_type(m) == LB_MSG_ERROR) {
        struct lb_str code = lb_msg_error_code(m), frame = lb_msg_frame(m);
        h->n.emit_errors++;
        lb_log_throttled(h->ctx, LB_LOG_WARN, "lua-emit", 10, "an event a script emitted was refused: %.*s (%.*s)",
                         (int)code.n, code.p ? code.p : "", (int)(frame.n > 300 ? 300 : frame.n), frame.p);
    }
}

static void local_close(void *ud, struct lb_conn *conn, const char *why)
{
    struct host *h = ud;
    (void)conn;
    h->conn = NULL;
    lb_log(h->ctx, LB_LOG_WARN, "the bus closed the plugin's connection (%s): bus.emit fails from now on", why ? why : "?");
}

static int open_local(struct host *h)
{
    static const struct lb_local_ops ops = { .size = sizeof ops, .on_message = local_message, .on_close = local_close };
    struct lb_local_opts opts = { .size = sizeof opts, .label = "lua", .trusted = true };
    h->conn = lb_local_open(h->ctx, &opts, &ops, h);
    if (!h->conn || lb_local_register(h->conn, h->service, NULL, 0)) {
        lb_plugin_fail(h->ctx, "cannot open the plugin's in-process connection");
        return -1;
    }
    return 0;
}

/* The plugin, upvalue 1 of bus.emit and bus.services. */
static struct host *host_up(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

/* bus.emit(event, payload [, to]): true, or nil and why.  Sent from a
 * later loop turn; at most LBL_MAX_EMITS per entry into Lua. */
static int b_emit(lua_State *L)
{
    struct lstate *s = lstate_of(L);
    struct host *h = host_up(L);
    size_t n, tn = 0;
    const char *ev = luaL_checklstring(L, 1, &n);
    const char *to = luaL_optlstring(L, 3, NULL, &tn);
    if (!lb_event_name_valid(ev, n)) return luaL_error(L, "bus.emit: '%s' is not an event name", ev);
    if (to && !(tn == 9 && !memcmp(to, "broadcast", 9)) && !lb_service_name_valid(to, tn))
        return luaL_error(L, "bus.emit: '%s' is not a service name", to);
    if (s->loading) return luaL_error(L, "bus.emit: not while the scripts load");
    if (++s->emits > LBL_MAX_EMITS) return luaL_error(L, "bus.emit: more than %d events from one run", LBL_MAX_EMITS);
    char err[300];
    h->out.len = 0;
    if (!lua_isnoneornil(L, 2) && lj_encode(L, 2, &h->out, LBL_MAX_DEPTH - 1, "payload", err, sizeof err))
        return luaL_error(L, "bus.emit: %s", err);
    if (s->dry_run) {
        s->dry_emits++;
        lua_pushboolean(L, 1);
        return 1;
    }
    if (!h->conn || lb_emit(h->conn, NULL, ev, to, h->out.len ? h->out.p : NULL, h->out.len)) {
        h->n.emit_errors++;
        lua_pushnil(L);
        lua_pushliteral(L, "the bus did not take the event");
        return 2;
    }
    h->n.emits++;
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
    struct host *h = host_up(L);
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

void lua_hooks_bus_api(lua_State *L, struct host *h)
{
    lua_pushlightuserdata(L, h);
    lua_pushcclosure(L, b_emit, 1);
    lua_setfield(L, -2, "emit");
    lua_pushlightuserdata(L, h);
    lua_pushcclosure(L, b_services, 1);
    lua_setfield(L, -2, "services");
}

/* ---- start and stop ---------------------------------------------------------- */

int lua_hooks_start(struct host *h)
{
    if (open_local(h)) return -1;
    struct lb_hooks hooks = { .size = sizeof hooks, .rewrite = on_rewrite };
    if (lb_hooks_register(h->ctx, &hooks, h) < 0) {
        lb_plugin_fail(h->ctx, "cannot register the rewrite hook");
        return -1;
    }
    lua_hooks_sync(h);
    return 0;
}

/* The response hook is there only while some response rule is loaded:
 * RESPONSEs no rule can select then cost not even the hook call.  Called
 * from load() and reload_done(), never from inside a hook. */
void lua_hooks_sync(struct host *h)
{
    bool want = rules_any(&h->cur->rules, RH_RESPONSE);
    if (want && !h->response_hooks) {
        struct lb_hooks hooks = { .size = sizeof hooks, .response = on_response };
        int id = lb_hooks_register(h->ctx, &hooks, h);
        if (id > 0) h->response_hooks = id;
        else lb_log(h->ctx, LB_LOG_ERROR, "cannot register the response hook: response rules do not run");
    } else if (!want && h->response_hooks) {
        lb_hooks_unregister(h->ctx, h->response_hooks);
        h->response_hooks = 0;
    }
}

void lua_hooks_stop(struct host *h)
{
    if (h->conn) lb_local_close(h->conn);
    h->conn = NULL;
    free(g_svcs);
    g_svcs = NULL;
    g_n_svcs = g_cap_svcs = 0;
    rresult_free(&g_r);
    crud_out_free(&g_crud);
    sbuf_free(&g_quoted);
}
