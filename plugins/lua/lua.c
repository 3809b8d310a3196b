/*
 * lua: operator scripts for the bus (routing and transform rules, CRUD
 * mappings, JSONLex), reloaded while the bus runs.
 *
 * [plugin lua]
 * dir = PATH                 the scripts folder (default: the installed
 *                            defaults, $(pkgdatadir)/lua; from the build
 *                            tree, the source tree's lua/)
 * max_memory = 64M           what the Lua state may hold
 * max_instructions = 1000000 per entry into Lua (one rule on one message)
 * jsonlex_extensions = yes   SPEC §12 operators ($gte, $lte, $length, ...)
 * jsonlex_cache = 1024       compiled expressions kept (least recently used go)
 * jsonlex_max_steps = 1000000  evaluation budget per expression
 * jsonlex_max_text = 1M      longest text $concat/$substring may build
 *
 * service = lua              the plugin's in-process connection, which sends
 *                            the events scripts emit (restart to change)
 *
 * dir defaults to [bus] lua_dir (the installed defaults, or the source
 * tree's lua/ for a lexbusd run from the build tree).
 *
 * System methods: jsonlex (JSON text both ways), rules, rules.test,
 * crud.test (see README, Lua scripting).  routes.lua and crud.lua act on
 * traffic through the rewrite and response hooks (hooks.c).
 */
#include "config.h"
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>
#include "host.h"
#include "rules.h"
#include "crud.h"
#include "hooks.h"
#include "luajson.h"

static struct host g_host;

/* ---- configuration ------------------------------------------------------- */

static int read_conf(struct lb_plugin_ctx *ctx, struct lbl_conf *c)
{
    const char *dir;
    long long v;
    bool b;
    uint64_t sz;
    memset(c, 0, sizeof *c);
    if (lb_conf_str(ctx, "dir", NULL, &dir) < 0) return -1;
    if (lb_conf_str(ctx, "service", "lua", &c->service) < 0) return -1;
    if (!lb_service_name_valid(c->service, strlen(c->service))) {
        char where[300];
        lb_plugin_fail(ctx, "%s: service = %s is not a service name", lb_conf_where(ctx, "service", where, sizeof where), c->service);
        return -1;
    }
    /* [bus] lua_dir, when [plugin lua] has no dir: the old key, kept as an
     * alias (build-tree aware, like plugin_dir). */
    c->dir = strdup(dir ? lb_conf_path(ctx, dir) : lb_bus_lua_dir(ctx));
    if (!c->dir) abort();
    if (lb_conf_size(ctx, "max_memory", 64ull << 20, &sz) < 0) return -1;
    if (sz < (1u << 20) || sz > (16ull << 30)) {
        char where[300];
        lb_plugin_fail(ctx, "%s: max_memory must be 1M to 16G", lb_conf_where(ctx, "max_memory", where, sizeof where));
        return -1;
    }
    c->max_memory = sz;
    if (lb_conf_int(ctx, "max_instructions", 1000000, 10000, 1000000000000LL, &v) < 0) return -1;
    c->max_instructions = v;
    if (lb_conf_bool(ctx, "jsonlex_extensions", true, &b) < 0) return -1;
    c->extensions = b;
    if (lb_conf_int(ctx, "jsonlex_cache", 1024, 1, 1000000, &v) < 0) return -1;
    c->cache_entries = v;
    if (lb_conf_int(ctx, "jsonlex_max_steps", 1000000, 100, 1000000000000LL, &v) < 0) return -1;
    c->max_steps = v;
    if (lb_conf_size(ctx, "jsonlex_max_text", 1u << 20, &sz) < 0) return -1;
    c->max_text = sz;
    return 0;
}

static void log_loaded(struct host *h, const struct lgen *g, const char *what)
{
    char names[200] = "";
    size_t o = 0;
    for (int i = 0; i < 3; i++)
        if (g->scripts[i].present) o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", o ? ", " : "", g->scripts[i].name);
    lb_log(h->ctx, LB_LOG_INFO, "%s %s from %s: %zu rules, %zu named expressions, %zu KiB of Lua memory", what,
           o ? names : "no scripts", g->s.conf.dir, g->rules.n_rules, g->n_named, g->s.mem / 1024);
}

/* ---- system methods --------------------------------------------------- */

static const struct jl_expr *named_expr(const struct lgen *g, const char *name)
{
    for (size_t i = 0; i < g->n_named; i++) if (!strcmp(g->named[i].name, name)) return g->named[i].x;
    return NULL;
}

/* lexbus.jsonlex {expr, context} or {name, context} -> the value.  JSON
 * text both ways (lb_system_method_register_raw): the params are read by
 * the plugin's own parser, and the result is written with the shortest
 * number forms (0.1, not 0.10000000000000001) and integers exact. */
static int m_jsonlex(void *ud, struct lb_conn *caller, struct lb_str text, struct lb_jw *result, struct lb_err *err)
{
    struct host *h = ud;
    struct lgen *g = h->cur;
    char why[400];
    (void)caller;
    json_t *params = lj_parse(text.p, text.n, JL_MAX_DEPTH, why, sizeof why);
    if (!params) {
        lb_refuse(err, LB_E_INVALID_MESSAGE, "params: %s", why);
        return -1;
    }
    json_t *expr = json_object_get(params, "expr"), *name = json_object_get(params, "name");
    json_t *ctx = json_object_get(params, "context"), *out = NULL;
    int rc = -1;
    if (!json_is_object(params) || (!expr && !json_is_string(name))) {
        lb_refuse(err, LB_E_INVALID_MESSAGE,
                  "params: {\"expr\": EXPRESSION, \"context\": {...}} or {\"name\": NAME, \"context\": {...}}");
    } else if (!expr && !named_expr(g, json_string_value(name))) {
        lb_refuse(err, LB_E_INVALID_MESSAGE, "no expression named '%s' in jsonlex.lua", json_string_value(name));
    } else if ((expr ? lstate_jsonlex(&g->s, expr, ctx, &out, why, sizeof why)
                     : lstate_jsonlex_compiled(&g->s, named_expr(g, json_string_value(name)), ctx, &out, why, sizeof why))) {
        lb_refuse(err, LB_E_SCRIPT_ERROR, "jsonlex: %s", why);
    } else {
        h->out.len = 0;
        lj_json_text(&h->out, out);
        lb_jw_raw(result, h->out.p, h->out.len);
        rc = 0;
    }
    json_decref(out);
    json_decref(params);
    return rc;
}

static json_t *scripts_json(const struct lgen *s)
{
    json_t *a = json_array();
    for (int i = 0; i < 3; i++) {
        json_t *o = json_pack("{s:s,s:b}", "name", s->scripts[i].name, "loaded", s->scripts[i].present);
        if (s->scripts[i].present) json_object_set_new(o, "loadedAt", json_integer((json_int_t)s->scripts[i].loaded_ms));
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *reload_json(const struct host *h)
{
    json_t *o = json_pack("{s:I,s:I}", "reloads", (json_int_t)h->n.reloads, "failures", (json_int_t)h->n.reload_failures);
    if (h->last_reload_ms) json_object_set_new(o, "lastAt", json_integer((json_int_t)h->last_reload_ms));
    if (h->last_reload_error[0]) json_object_set_new(o, "lastError", json_string(h->last_reload_error));
    return o;
}

/* lexbus.rules: what is loaded, with per-rule counters. */
static int m_rules(void *ud, struct lb_conn *caller, json_t *params, json_t **result, struct lb_err *err)
{
    struct host *h = ud;
    struct lgen *g = h->cur;
    json_t *named = json_array();
    for (size_t i = 0; i < g->n_named; i++) json_array_append_new(named, json_string(g->named[i].name));
    *result = json_pack("{s:s,s:I,s:o,s:o,s:o,s:o,s:o}", "dir", g->s.conf.dir, "loadedAt", (json_int_t)g->loaded_ms,
                        "scripts", scripts_json(g), "rules", rules_json(&g->rules), "resources", crud_json(&g->crud),
                        "expressions", named, "reload", reload_json(h));
    return 0;
}

/* The raw JSON text of a member, for a dry-run message (held in bufs). */
static struct lb_str member_text(json_t *o, const char *k, struct sbuf *b)
{
    json_t *v = json_object_get(o, k);
    struct lb_str s = { NULL, 0 };
    if (!v) return s;
    b->len = 0;
    lj_json_text(b, v);
    s.p = b->p;
    s.n = b->len;
    return s;
}

static struct lb_str member_str(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    struct lb_str s = { json_string_value(v), json_string_length(v) };
    return s;
}

static void put_text(json_t *o, const char *k, const char *p, size_t n)
{
    json_t *v = json_loadb(p, n, JSON_DECODE_ANY, NULL);
    if (!v) v = json_loadb(p, n, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
    if (v) json_object_set_new(o, k, v);
}

/* lexbus.rules.test {type, event|method, from, to, service, payload|params|data, ...}:
 * what the loaded rules would do with that message (nothing is sent). */
static int m_rules_test(void *ud, struct lb_conn *caller, json_t *params, json_t **result, struct lb_err *err)
{
    struct host *h = ud;
    struct lgen *g = h->cur;
    struct lstate *s = &g->s;
    const char *type = json_string_value(json_object_get(params, "type"));
    struct rmsg m;
    memset(&m, 0, sizeof m);
    if (type && !strcmp(type, "EMIT")) m.hook = RH_EVENT;
    else if (type && !strcmp(type, "CALL")) m.hook = RH_CALL;
    else if (type && !strcmp(type, "RESPONSE")) m.hook = RH_RESPONSE;
    else {
        lb_refuse(err, LB_E_INVALID_MESSAGE, "params: a message {\"type\": \"EMIT\"|\"CALL\"|\"RESPONSE\", ...}");
        return -1;
    }
    const char *body = m.hook == RH_EVENT ? "payload" : m.hook == RH_CALL ? "params" : "data";
    m.id = member_str(params, "id");
    m.from = member_str(params, "from");
    if (!m.from.p && lb_conn_service(caller)) m.from = (struct lb_str){ lb_conn_service(caller), strlen(lb_conn_service(caller)) };
    m.to = member_str(params, "to");
    if (m.hook == RH_EVENT && !m.to.p) m.to = (struct lb_str){ "broadcast", 9 };
    m.name = member_str(params, m.hook == RH_EVENT ? "event" : "method");
    m.service = member_str(params, "service");
    if (m.hook == RH_RESPONSE && !m.service.p) m.service = m.from;
    m.status = member_str(params, "status");
    struct sbuf bufs[4] = { { 0 } };
    m.body = member_text(params, body, &bufs[0]);
    m.error = member_text(params, "error", &bufs[1]);
    m.context = member_text(params, "context", &bufs[2]);
    m.claims = member_text(params, "claims", &bufs[3]);
    if (!m.name.p || (m.hook == RH_EVENT ? !lb_event_name_valid(m.name.p, m.name.n) : !lb_method_name_valid(m.name.p, m.name.n))) {
        for (int i = 0; i < 4; i++) sbuf_free(&bufs[i]);
        lb_refuse(err, LB_E_INVALID_MESSAGE, "the message needs a valid \"%s\"", m.hook == RH_EVENT ? "event" : "method");
        return -1;
    }
    struct rresult r;
    rresult_init(&r);
    s->dry_run = true;
    s->dry_emits = 0;
    rules_run(&g->rules, &m, &r);
    s->dry_run = false;
    static const char *const kinds[] = { "pass", "changed", "refused", "error" };
    json_t *o = json_pack("{s:s}", "result", kinds[r.kind]);
    if (s->dry_emits) json_object_set_new(o, "emits", json_integer(s->dry_emits));
    json_t *matched = json_array();
    for (size_t i = 0; i < r.n_matched; i++) json_array_append_new(matched, json_string(r.matched[i]));
    json_object_set_new(o, "matched", matched);
    if (r.kind == RR_REFUSE || r.kind == RR_ERROR) {
        json_object_set_new(o, "code", json_string(r.code));
        json_object_set_new(o, "message", json_string(r.message));
    }
    if (r.set_to) json_object_set_new(o, "to", json_stringn(r.to.p, r.to.len));
    if (r.set_name) json_object_set_new(o, m.hook == RH_EVENT ? "event" : "method", json_stringn(r.name.p, r.name.len));
    if (r.set_body) {
        /* The value, and the exact text that would go on the wire. */
        char k[32];
        put_text(o, body, r.body[r.body_cur].p, r.body[r.body_cur].len);
        snprintf(k, sizeof k, "%sText", body);
        json_object_set_new(o, k, json_stringn(r.body[r.body_cur].p, r.body[r.body_cur].len));
    }
    if (r.set_error) put_text(o, "error", r.error.p, r.error.len);
    if (r.n_also) {
        json_t *a = json_array();
        for (size_t i = 0; i < r.n_also; i++) json_array_append_new(a, json_string(r.also[i]));
        json_object_set_new(o, "also", a);
    }
    rresult_free(&r);
    for (int i = 0; i < 4; i++) sbuf_free(&bufs[i]);
    *result = o;
    return 0;
}

/* lexbus.crud.test {op, resource, key?, data?, query?, to?, declaredBy?}: the
 * call crud.lua would make of that CRUD request (nothing is sent).
 * declaredBy stands for the service that declared the resource at
 * REGISTER. */
static int m_crud_test(void *ud, struct lb_conn *caller, json_t *params, json_t **result, struct lb_err *err)
{
    struct host *h = ud;
    struct crud_req q;
    memset(&q, 0, sizeof q);
    q.op = member_str(params, "op");
    q.resource = member_str(params, "resource");
    q.to = member_str(params, "to");
    if (lb_conn_service(caller)) q.from = (struct lb_str){ lb_conn_service(caller), strlen(lb_conn_service(caller)) };
    q.declared_by = json_string_value(json_object_get(params, "declaredBy"));
    struct sbuf bufs[3] = { { 0 } };
    q.key = member_text(params, "key", &bufs[0]);
    q.data = member_text(params, "data", &bufs[1]);
    q.query = member_text(params, "query", &bufs[2]);
    struct crud_out o;
    memset(&o, 0, sizeof o);
    h->cur->s.dry_run = true;
    crud_map(&h->cur->crud, &q, &o);
    h->cur->s.dry_run = false;
    json_t *r;
    if (o.ok) {
        r = json_pack("{s:s,s:s%,s:s%}", "result", "call", "to", o.to.p, o.to.len, "method", o.method.p, o.method.len);
        put_text(r, "params", o.params.p, o.params.len);
        json_object_set_new(r, "paramsText", json_stringn(o.params.p, o.params.len));
    } else {
        r = json_pack("{s:s,s:s,s:s}", "result", "refused", "code", o.code, "message", o.message);
    }
    crud_out_free(&o);
    for (int i = 0; i < 3; i++) sbuf_free(&bufs[i]);
    *result = r;
    return 0;
}

/* ---- stats ---------------------------------------------------------------- */

static json_t *stats(void *ud)
{
    struct host *h = ud;
    struct lgen *g = h->cur;
    const struct lstate *s = &g->s;
    const struct lbl_counters *n = &h->n;
    struct jl_cache_stats cs;
    jl_cache_stats(s->cache, &cs);
    json_t *jl = json_pack("{s:I,s:I,s:I,s:f,s:{s:I,s:I,s:I,s:I,s:I}}", "evals", (json_int_t)n->jl_evals,
                           "errors", (json_int_t)n->jl_errors, "steps", (json_int_t)n->jl_steps,
                           "avgUs", n->jl_timed ? (double)n->jl_ns / 1000.0 / (double)n->jl_timed : 0.0, "cache",
                           "entries", (json_int_t)cs.entries, "max", (json_int_t)cs.max_entries,
                           "hits", (json_int_t)cs.hits, "misses", (json_int_t)cs.misses,
                           "evictions", (json_int_t)cs.evictions);
    json_t *lua = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "entries", (json_int_t)n->lua_entries,
                            "errors", (json_int_t)n->lua_errors, "budgetStops", (json_int_t)n->lua_budget_stops,
                            "memoryStops", (json_int_t)n->lua_memory_stops, "memory", (json_int_t)s->mem,
                            "memoryPeak", (json_int_t)s->peak, "memoryCap", (json_int_t)s->cap);
    return json_pack("{s:o,s:o,s:o,s:o,s:o}", "jsonlex", jl, "lua", lua, "rules", rules_json(&g->rules),
                     "resources", crud_json(&g->crud), "reload", reload_json(h));
}

/* Counters for `lexbus stats` and /metrics (lexbus_plugin_lua_NAME): they
 * live in the host struct, so they count across reloads. */
static void register_counters(struct host *h)
{
    static const struct { const char *name, *help; size_t off; } c[] = {
#define C(name, f, help) { name, help, offsetof(struct host, n.f) }
        C("rule_matches", rule_matches, "times a routes.lua rule ran on a message"),
        C("rule_changes", rule_changes, "messages a rule changed"),
        C("rule_refusals", rule_refusals, "messages a rule refused"),
        C("rule_errors", rule_errors, "rule runs that failed (SCRIPT_ERROR)"),
        C("crud_requests", crud_requests, "CRUD requests mapped by crud.lua"),
        C("crud_refusals", crud_refusals, "CRUD requests refused"),
        C("emits", emits, "events scripts emitted"),
        C("emit_errors", emit_errors, "events scripts emitted that the bus did not take"),
        C("jsonlex_evals", jl_evals, "JSONLex evaluations"),
        C("jsonlex_errors", jl_errors, "JSONLex evaluations that failed"),
        C("lua_entries", lua_entries, "entries into Lua"),
        C("lua_errors", lua_errors, "entries into Lua that raised an error"),
        C("lua_budget_stops", lua_budget_stops, "entries stopped by max_instructions"),
        C("lua_memory_stops", lua_memory_stops, "entries stopped by max_memory"),
        C("reloads", reloads, "script reloads attempted"),
        C("reload_failures", reload_failures, "script reloads that failed (the old scripts kept serving)"),
#undef C
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++)
        lb_counter_register(h->ctx, c[i].name, c[i].help, (const uint64_t *)((const char *)h + c[i].off), false);
}

/* ---- load / reload ----------------------------------------------------------- */

static void conf_free(struct lbl_conf *c) { free(c->dir); c->dir = NULL; }

static int plugin_load(struct lb_plugin_ctx *ctx)
{
    struct host *h = &g_host;
    memset(h, 0, sizeof *h);
    h->ctx = ctx;
    lb_plugin_set_data(ctx, h);
    if (read_conf(ctx, &h->conf)) return -1;
    h->service = h->conf.service;
    h->bus_api = lua_hooks_bus_api;
    char err[600];
    h->cur = lgen_load(h, &h->conf, err, sizeof err);
    if (!h->cur) { lb_plugin_fail(ctx, "%s", err); return -1; }
    if (lb_check_only(ctx)) return 0;   /* lexbusd -t: the scripts load; open nothing */
    log_loaded(h, h->cur, "loaded");
    if (lb_system_method_register_raw(ctx, "jsonlex", 0, m_jsonlex, h) < 0 ||
        lb_system_method_register(ctx, "rules", 0, m_rules, h) < 0 ||
        lb_system_method_register(ctx, "rules.test", 0, m_rules_test, h) < 0 ||
        lb_system_method_register(ctx, "crud.test", 0, m_crud_test, h) < 0) {
        lb_plugin_fail(ctx, "cannot register the plugin's methods of the bus's own service");
        return -1;
    }
    lb_stats_register(ctx, stats, h);
    register_counters(h);
    return lua_hooks_start(h);
}

/* Reload, step 1: compile every script into a fresh state, staged; the
 * running one keeps serving until step 2.  A script that does not load
 * fails the reload with Lua's own message (routes.lua:12: ...), which the
 * bus puts in the log and in lexbus.reload's answer. */
static int plugin_reload(struct lb_plugin_ctx *ctx)
{
    struct host *h = lb_plugin_data(ctx);
    struct lbl_conf nc;
    h->n.reloads++;
    h->last_reload_ms = lb_now_ms();
    if (read_conf(ctx, &nc)) { conf_free(&nc); h->n.reload_failures++; return -1; }
    if (strcmp(nc.service, h->service))
        lb_log(ctx, LB_LOG_WARN, "service = %s needs a restart (the connection stays '%s')", nc.service, h->service);
    char err[600];
    struct lgen *g = lgen_load(h, &nc, err, sizeof err);
    if (!g) {
        h->n.reload_failures++;
        snprintf(h->last_reload_error, sizeof h->last_reload_error, "%.500s", err);
        lb_plugin_fail(ctx, "%s (the previous scripts keep serving)", err);
        conf_free(&nc);
        return -1;
    }
    lgen_free(h->staged);
    conf_free(&h->staged_conf);
    h->staged = g;
    h->staged_conf = nc;
    return 0;
}

/* Step 2: swap the staged state in, or drop it (something else in
 * bus.conf failed: reloads are all or nothing).  Nothing holds the old
 * state across loop turns (events scripts emit are queued as text), so it
 * can go at once. */
static void plugin_reload_done(struct lb_plugin_ctx *ctx, bool commit)
{
    struct host *h = lb_plugin_data(ctx);
    if (!h->staged) return;
    if (!commit) {
        lgen_free(h->staged);
        conf_free(&h->staged_conf);
        h->staged = NULL;
        return;
    }
    h->last_reload_error[0] = 0;
    lgen_free(h->cur);
    h->cur = h->staged;
    h->staged = NULL;
    conf_free(&h->conf);
    h->conf = h->staged_conf;
    h->staged_conf.dir = NULL;
    lua_hooks_sync(h);
    log_loaded(h, h->cur, "reloaded");
}

static void plugin_unload(struct lb_plugin_ctx *ctx)
{
    struct host *h = lb_plugin_data(ctx);
    if (!h) return;
    lua_hooks_stop(h);
    lgen_free(h->cur);
    lgen_free(h->staged);
    h->cur = h->staged = NULL;
    conf_free(&h->conf);
    conf_free(&h->staged_conf);
    sbuf_free(&h->out);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .size = sizeof(struct lb_plugin),
    .name = "lua",
    .version = PACKAGE_VERSION,
    .load = plugin_load,
    .unload = plugin_unload,
    .reload = plugin_reload,
    .reload_done = plugin_reload_done,
};
