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
 * System methods: jsonlex, rules, rules.test (see README, Lua scripting).
 * Plugin ABI v1 has no rewrite hook yet: rules are loaded, listed and
 * dry-run (rules.test, crud.test); they act on traffic through the v2
 * hooks (v2.c), compiled when plugin.h says LB_PLUGIN_ABI >= 2.
 */
#include "config.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>
#include "host.h"
#include "rules.h"
#include "crud.h"
#include "v2.h"
#include "luajson.h"

static struct host g_host;

/* ---- configuration ------------------------------------------------------- */

static const char *default_dir(void)
{
    /* Like lexbusd's plugin_dir: a daemon run from the build tree uses the
     * scripts of the source tree, an installed one the installed copy. */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        if (strcmp(exe, LB_BUILD_EXE) == 0) return LB_BUILD_LUADIR;
    }
    return LB_LUADIR;
}

static int read_conf(struct lb_plugin_ctx *ctx, struct lbl_conf *c)
{
    const char *dir;
    long long v;
    bool b;
    uint64_t sz;
    memset(c, 0, sizeof *c);
    if (lb_conf_str(ctx, "dir", NULL, &dir) < 0) return -1;
    c->dir = strdup(dir ? lb_conf_path(ctx, dir) : default_dir());
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

static void log_loaded(struct host *h, const struct lstate *s, const char *what)
{
    char names[200] = "";
    size_t o = 0;
    for (int i = 0; i < 3; i++)
        if (s->scripts[i].present) o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", o ? ", " : "", s->scripts[i].name);
    lb_log(h->ctx, LB_LOG_INFO, "%s %s from %s: %zu rules, %zu named expressions, %zu KiB of Lua memory", what,
           o ? names : "no scripts", s->conf.dir, s->n_rules, s->n_named, s->mem / 1024);
}

/* ---- system methods --------------------------------------------------- */

/* Why a method failed, in a form independent of the plugin ABI (v1 has
 * code + 256-byte message out-parameters, v2 a struct lb_err): the
 * adapters below translate. */
struct mfail { const char *code; char msg[400]; };

static int fail_with(struct mfail *f, const char *c, const char *text)
{
    f->code = c;
    snprintf(f->msg, sizeof f->msg, "%s", text);
    return -1;
}

static const struct jl_expr *named_expr(const struct lstate *s, const char *name)
{
    for (size_t i = 0; i < s->n_named; i++) if (!strcmp(s->named[i].name, name)) return s->named[i].x;
    return NULL;
}

/* lexbus.jsonlex {expr, context} or {name, context} -> the value. */
static int m_jsonlex(void *ud, struct lb_conn *caller, json_t *params, json_t **result,
                     struct mfail *f)
{
    struct host *h = ud;
    struct lstate *s = h->cur;
    char err[400];
    json_t *expr = json_object_get(params, "expr"), *name = json_object_get(params, "name");
    json_t *ctx = json_object_get(params, "context");
    if (!json_is_object(params) || (!expr && !json_is_string(name)))
        return fail_with(f, LB_E_INVALID_MESSAGE, "params: {\"expr\": EXPRESSION, \"context\": {...}} or {\"name\": NAME, \"context\": {...}}");
    int rc;
    if (!expr) {
        const struct jl_expr *x = named_expr(s, json_string_value(name));
        if (!x) {
            snprintf(err, sizeof err, "no expression named '%s' in jsonlex.lua", json_string_value(name));
            return fail_with(f, LB_E_INVALID_MESSAGE, err);
        }
        rc = host_jsonlex_compiled(s, x, ctx, result, err, sizeof err);
    } else {
        rc = host_jsonlex(s, expr, ctx, result, err, sizeof err);
    }
    if (rc) {
        char m[400];
        snprintf(m, sizeof m, "jsonlex: %.380s", err);
        return fail_with(f, LB_E_SCRIPT_ERROR, m);
    }
    return 0;
}

static json_t *scripts_json(const struct lstate *s)
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
    json_t *o = json_pack("{s:I,s:I}", "reloads", (json_int_t)h->reloads, "failures", (json_int_t)h->reload_failures);
    if (h->last_reload_ms) json_object_set_new(o, "lastAt", json_integer((json_int_t)h->last_reload_ms));
    if (h->last_reload_error[0]) json_object_set_new(o, "lastError", json_string(h->last_reload_error));
    return o;
}

/* lexbus.rules: what is loaded, with per-rule counters. */
static int m_rules(void *ud, struct lb_conn *caller, json_t *params, json_t **result,
                   struct mfail *f)
{
    struct host *h = ud;
    struct lstate *s = h->cur;
    json_t *named = json_array();
    for (size_t i = 0; i < s->n_named; i++) json_array_append_new(named, json_string(s->named[i].name));
    *result = json_pack("{s:s,s:I,s:o,s:o,s:o,s:o,s:o}", "dir", s->conf.dir, "loadedAt", (json_int_t)s->loaded_ms,
                        "scripts", scripts_json(s), "rules", rules_json(s), "resources", crud_json(s),
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
static int m_rules_test(void *ud, struct lb_conn *caller, json_t *params, json_t **result,
                        struct mfail *f)
{
    struct host *h = ud;
    struct lstate *s = h->cur;
    const char *type = json_string_value(json_object_get(params, "type"));
    struct rmsg m;
    memset(&m, 0, sizeof m);
    if (type && !strcmp(type, "EMIT")) m.hook = RH_EVENT;
    else if (type && !strcmp(type, "CALL")) m.hook = RH_CALL;
    else if (type && !strcmp(type, "RESPONSE")) m.hook = RH_RESPONSE;
    else return fail_with(f, LB_E_INVALID_MESSAGE, "params: a message {\"type\": \"EMIT\"|\"CALL\"|\"RESPONSE\", ...}");
    const char *body = m.hook == RH_EVENT ? "payload" : m.hook == RH_CALL ? "params" : "data";
    m.id = member_str(params, "id");
    m.from = member_str(params, "from");
    if (!m.from.p) m.from = (struct lb_str){ lb_conn_service(caller), strlen(lb_conn_service(caller)) };
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
    if (!m.name.p || (m.hook == RH_EVENT ? !lbl_valid_event(m.name.p, m.name.n) : !lbl_valid_method(m.name.p, m.name.n))) {
        for (int i = 0; i < 4; i++) sbuf_free(&bufs[i]);
        return fail_with(f, LB_E_INVALID_MESSAGE, m.hook == RH_EVENT ? "the message needs a valid \"event\"" : "the message needs a valid \"method\"");
    }
    struct rresult r;
    rresult_init(&r);
    rules_run(s, &m, &r);
    static const char *const kinds[] = { "pass", "changed", "refused", "error" };
    json_t *o = json_pack("{s:s}", "result", kinds[r.kind]);
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
static int m_crud_test(void *ud, struct lb_conn *caller, json_t *params, json_t **result,
                       struct mfail *f)
{
    struct host *h = ud;
    struct crud_req q;
    memset(&q, 0, sizeof q);
    q.op = member_str(params, "op");
    q.resource = member_str(params, "resource");
    q.to = member_str(params, "to");
    q.from = (struct lb_str){ lb_conn_service(caller), strlen(lb_conn_service(caller)) };
    q.declared_by = json_string_value(json_object_get(params, "declaredBy"));
    struct sbuf bufs[3] = { { 0 } };
    q.key = member_text(params, "key", &bufs[0]);
    q.data = member_text(params, "data", &bufs[1]);
    q.query = member_text(params, "query", &bufs[2]);
    struct crud_out o;
    memset(&o, 0, sizeof o);
    crud_map(h->cur, &q, &o);
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

/* ---- the methods on either ABI ------------------------------------------- */

#define METHOD_ADAPTER(name)                                                                          \
    static int name##_abi(void *ud, struct lb_conn *caller, json_t *params, json_t **result, ABI_ERR_PARAMS) \
    {                                                                                                  \
        struct mfail f = { NULL, "" };                                                                 \
        int rc = name(ud, caller, params, result, &f);                                                 \
        if (rc) ABI_FAIL(f);                                                                           \
        return rc;                                                                                     \
    }
#if LB_PLUGIN_ABI >= 2
#define ABI_ERR_PARAMS struct lb_err *err
#define ABI_FAIL(f) lb_refuse(err, (f).code ? (f).code : LB_E_INTERNAL_ERROR, "%s", (f).msg)
#define METHOD_REGISTER(ctx, name, fn, ud) lb_system_method_register(ctx, name, 0, fn, ud)
#else
#define ABI_ERR_PARAMS const char **code, char *msg
#define ABI_FAIL(f) (*code = (f).code, snprintf(msg, 256, "%.255s", (f).msg))
#define METHOD_REGISTER(ctx, name, fn, ud) lb_system_method_register(ctx, name, fn, ud)
#endif
METHOD_ADAPTER(m_jsonlex)
METHOD_ADAPTER(m_rules)
METHOD_ADAPTER(m_rules_test)
METHOD_ADAPTER(m_crud_test)

/* ---- stats ---------------------------------------------------------------- */

static json_t *stats(void *ud)
{
    struct host *h = ud;
    const struct lstate *s = h->cur;
    struct jl_cache_stats cs;
    jl_cache_stats(s->cache, &cs);
    json_t *jl = json_pack("{s:I,s:I,s:I,s:f,s:{s:I,s:I,s:I,s:I,s:I}}", "evals", (json_int_t)h->jl_evals,
                           "errors", (json_int_t)h->jl_errors, "steps", (json_int_t)h->jl_steps,
                           "avgUs", h->jl_evals ? (double)h->jl_ns / 1000.0 / (double)h->jl_evals : 0.0, "cache",
                           "entries", (json_int_t)cs.entries, "max", (json_int_t)cs.max_entries,
                           "hits", (json_int_t)cs.hits, "misses", (json_int_t)cs.misses,
                           "evictions", (json_int_t)cs.evictions);
    json_t *lua = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "entries", (json_int_t)h->lua_entries,
                            "errors", (json_int_t)h->lua_errors, "budgetStops", (json_int_t)h->lua_budget_stops,
                            "memoryStops", (json_int_t)h->lua_memory_stops, "memory", (json_int_t)s->mem,
                            "memoryPeak", (json_int_t)s->peak, "memoryCap", (json_int_t)s->cap);
    return json_pack("{s:o,s:o,s:o,s:o,s:o}", "jsonlex", jl, "lua", lua, "rules", rules_json(s), "resources", crud_json(s),
                     "reload", reload_json(h));
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
    char err[600];
    h->cur = lstate_load(h, &h->conf, err, sizeof err);
    if (!h->cur) { lb_plugin_fail(ctx, "%s", err); return -1; }
    log_loaded(h, h->cur, "loaded");
    if (METHOD_REGISTER(ctx, "jsonlex", m_jsonlex_abi, h) || METHOD_REGISTER(ctx, "rules", m_rules_abi, h) ||
        METHOD_REGISTER(ctx, "rules.test", m_rules_test_abi, h) || METHOD_REGISTER(ctx, "crud.test", m_crud_test_abi, h))
        return -1;
    lb_stats_register(ctx, stats, h);
    return lua_v2_register(h);
}

/* Reload, step 1: compile every script into a fresh state (staged); the
 * running one keeps serving until step 2.  On plugin ABI v1 there is no
 * step 2: a state that loaded is swapped in at once. */
static void plugin_reload_done(struct lb_plugin_ctx *ctx, bool commit);

static int plugin_reload(struct lb_plugin_ctx *ctx)
{
    struct host *h = lb_plugin_data(ctx);
    struct lbl_conf nc;
    h->reloads++;
    h->last_reload_ms = lb_now_ms();
    if (read_conf(ctx, &nc)) { conf_free(&nc); h->reload_failures++; return -1; }
    char err[600];
    struct lstate *s = lstate_load(h, &nc, err, sizeof err);
    if (!s) {
        /* Lua's own form (routes.lua:12: ...); the old scripts keep serving. */
        h->reload_failures++;
        snprintf(h->last_reload_error, sizeof h->last_reload_error, "%.500s", err);
        lb_plugin_fail(ctx, "%s (the previous scripts keep serving)", err);
        conf_free(&nc);
        return -1;
    }
    lstate_free(h->staged);
    conf_free(&h->staged_conf);
    h->staged = s;
    h->staged_conf = nc;
#if LB_PLUGIN_ABI < 2
    plugin_reload_done(ctx, true);
#endif
    return 0;
}

/* Step 2: swap the staged state in, or drop it (another plugin's reload
 * failed: reloads are all or nothing). */
static void plugin_reload_done(struct lb_plugin_ctx *ctx, bool commit)
{
    struct host *h = lb_plugin_data(ctx);
    if (!h->staged) return;
    if (!commit) {
        lstate_free(h->staged);
        conf_free(&h->staged_conf);
        h->staged = NULL;
        return;
    }
    h->last_reload_error[0] = 0;
    lstate_free(h->cur);
    h->cur = h->staged;
    h->staged = NULL;
    conf_free(&h->conf);
    h->conf = h->staged_conf;
    h->staged_conf.dir = NULL;
    log_loaded(h, h->cur, "reloaded");
}

static void plugin_unload(struct lb_plugin_ctx *ctx)
{
    struct host *h = lb_plugin_data(ctx);
    if (!h) return;
    lstate_free(h->cur);
    lstate_free(h->staged);
    h->cur = h->staged = NULL;
    conf_free(&h->conf);
    conf_free(&h->staged_conf);
    sbuf_free(&h->out);
    lua_v2_free();
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
#if LB_PLUGIN_ABI >= 2
    .size = sizeof(struct lb_plugin),
    .reload_done = plugin_reload_done,
#endif
    .name = "lua",
    .version = "1.0",
    .load = plugin_load,
    .unload = plugin_unload,
    .reload = plugin_reload,
};
