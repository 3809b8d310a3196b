#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "system_service.h"
#include "router.h"
#include "registry.h"
#include "pending.h"
#include "plugin_host.h"
#include "log.h"
#include "util.h"

#define MAX_PARAMS (64 * 1024)

static json_t *instance_json(const struct lb_conn *c)
{
    json_t *o = json_object();
    json_object_set_new(o, "session", json_integer((json_int_t)c->id));
    json_object_set_new(o, "transport", json_string(c->peer.transport ? c->peer.transport : "?"));
    json_object_set_new(o, "auth", json_string(c->auth));
    json_object_set_new(o, "registered", json_integer((json_int_t)c->registered_ms));
    json_object_set_new(o, "lastSeen", json_integer((json_int_t)c->last_seen_ms));
    if (c->version) json_object_set_new(o, "version", json_string(c->version));
    json_t *meta = c->metadata_json ? json_loads(c->metadata_json, 0, NULL) : NULL;
    if (meta) {
        json_t *pid = json_object_get(meta, "pid"), *host = json_object_get(meta, "hostname");
        if (pid) json_object_set(o, "pid", pid);
        if (host) json_object_set(o, "hostname", host);
        json_object_set_new(o, "metadata", meta);
    }
    if (!json_object_get(o, "pid") && c->peer.has_cred) json_object_set_new(o, "pid", json_integer(c->peer.pid));
    return o;
}

static void service_into(struct service *s, void *ud)
{
    json_t *arr = ud, *o = json_object(), *insts = json_array(), *methods = json_array();
    uint64_t last = 0, reg = UINT64_MAX;
    bool any_method = false;
    for (size_t i = 0; i < s->n; i++) {
        const struct lb_conn *c = s->inst[i];
        json_array_append_new(insts, instance_json(c));
        if (c->last_seen_ms > last) last = c->last_seen_ms;
        if (c->registered_ms < reg) reg = c->registered_ms;
        if (!c->n_methods) any_method = true;
        for (size_t k = 0; k < c->n_methods; k++) {
            bool seen = false;
            size_t idx;
            json_t *v;
            json_array_foreach(methods, idx, v) if (!strcmp(json_string_value(v), c->methods[k])) seen = true;
            if (!seen) json_array_append_new(methods, json_string(c->methods[k]));
        }
    }
    const struct lb_conn *first = s->inst[0];
    json_t *fi = instance_json(first);
    json_object_set_new(o, "name", json_string(s->name));
    json_object_set_new(o, "node", json_string(g_bus.set.node));
    json_object_set_new(o, "instances", json_integer((json_int_t)s->n));
    json_object_set_new(o, "methods", methods);
    json_object_set_new(o, "anyMethod", json_boolean(any_method));
    json_object_set(o, "pid", json_object_get(fi, "pid") ? json_object_get(fi, "pid") : json_null());
    json_object_set(o, "hostname", json_object_get(fi, "hostname") ? json_object_get(fi, "hostname") : json_null());
    json_object_set_new(o, "registered", json_integer((json_int_t)reg));
    json_object_set_new(o, "lastSeen", json_integer((json_int_t)last));
    json_object_set_new(o, "sessions", insts);
    json_decref(fi);
    json_array_append_new(arr, o);
}

static int m_services(void *ud, struct lb_conn *caller, json_t *params, json_t **result,
                      const char **code, char *msg)
{
    (void)ud; (void)caller; (void)params; (void)code; (void)msg;
    json_t *arr = json_array();
    registry_each(service_into, arr);
    json_t *self = json_object();
    json_object_set_new(self, "name", json_string(g_bus.set.system_service));
    json_object_set_new(self, "node", json_string(g_bus.set.node));
    json_object_set_new(self, "instances", json_integer(1));
    json_object_set_new(self, "methods", sysmethod_names());
    json_object_set_new(self, "builtin", json_true());
    json_array_append_new(arr, self);
    *result = arr;
    return 0;
}

static int m_stats(void *ud, struct lb_conn *caller, json_t *params, json_t **result,
                   const char **code, char *msg)
{
    (void)ud; (void)caller; (void)params; (void)code; (void)msg;
    const struct stats *s = &g_bus.stats;
    json_t *o = json_object(), *in = json_object(), *out = json_object(), *errs = json_object();
    for (int t = 1; t < LB_MSG__COUNT; t++) {
        json_object_set_new(in, lb_msg_type_name((enum lb_msg_type)t), json_integer((json_int_t)s->msgs_in[t]));
        json_object_set_new(out, lb_msg_type_name((enum lb_msg_type)t), json_integer((json_int_t)s->msgs_out[t]));
    }
    json_object_set_new(in, "INVALID", json_integer((json_int_t)s->msgs_in[0]));
    for (int e = 0; e < E__COUNT; e++)
        json_object_set_new(errs, err_code_name((enum err_code)e), json_integer((json_int_t)s->errors[e]));
    json_t *calls = json_pack("{s:I,s:I,s:I,s:I,s:I}", "pending", (json_int_t)pending_count(),
                              "started", (json_int_t)s->calls_started, "completed", (json_int_t)s->calls_completed,
                              "late", (json_int_t)s->calls_late, "timeouts", (json_int_t)s->calls_timeouts);
    json_t *conns = json_pack("{s:I,s:I,s:I,s:I}", "open", (json_int_t)g_bus.n_conns,
                              "accepted", (json_int_t)s->conns_accepted, "refused", (json_int_t)s->conns_refused,
                              "evicted", (json_int_t)s->conns_evicted);
    json_object_set_new(o, "node", json_string(g_bus.set.node));
    json_object_set_new(o, "mode", json_string(g_bus.set.production ? "production" : "development"));
    json_object_set_new(o, "uptime", json_integer((json_int_t)((now_ms() - g_bus.started_ms) / 1000)));
    json_object_set_new(o, "connections", conns);
    json_object_set_new(o, "services", json_integer((json_int_t)g_bus.n_services));
    json_object_set_new(o, "subscriptions", json_integer((json_int_t)router_subscription_count()));
    json_object_set_new(o, "messagesIn", in);
    json_object_set_new(o, "messagesOut", out);
    json_object_set_new(o, "errors", errs);
    json_object_set_new(o, "calls", calls);
    json_object_set_new(o, "events", json_pack("{s:I,s:I}", "delivered", (json_int_t)s->events_delivered,
                                               "unrouted", (json_int_t)s->events_unrouted));
    json_object_set_new(o, "slowConsumers", json_integer((json_int_t)s->slow_consumers));
    json_object_set_new(o, "senderPauses", json_integer((json_int_t)s->sender_pauses));
    json_object_set_new(o, "bytesIn", json_integer((json_int_t)s->bytes_in));
    json_object_set_new(o, "bytesOut", json_integer((json_int_t)s->bytes_out));
    json_t *plugins = json_object();
    plugin_stats_into(plugins);
    json_object_set_new(o, "plugins", plugins);
    *result = o;
    return 0;
}

static int m_ping(void *ud, struct lb_conn *caller, json_t *params, json_t **result,
                  const char **code, char *msg)
{
    (void)ud; (void)caller; (void)params; (void)code; (void)msg;
    *result = json_pack("{s:b,s:s,s:I}", "pong", 1, "node", g_bus.set.node, "time", (json_int_t)now_ms());
    return 0;
}

static int m_reload(void *ud, struct lb_conn *caller, json_t *params, json_t **result,
                    const char **code, char *msg)
{
    (void)ud; (void)params;
    char err[512];
    log_info("bus", "reload requested by '%s'", lb_conn_service(caller));
    if (bus_reload(err, sizeof err) != 0) {
        *code = LB_E_EXECUTION_FAILED;   /* the request was fine; bus.conf is not */
        snprintf(msg, 256, "reload failed, old configuration kept: %.200s", err);
        return -1;
    }
    *result = json_pack("{s:b}", "reloaded", 1);
    return 0;
}

void system_service_init(void)
{
    sysmethod_add_builtin("services", m_services);
    sysmethod_add_builtin("stats", m_stats);
    sysmethod_add_builtin("ping", m_ping);
    sysmethod_add_builtin("reload", m_reload);
}

static void reply_error(struct lb_conn *c, struct lb_msg *m, const char *code, const char *msg)
{
    const struct env_val *id = &m->env.f[F_ID];
    router_call_error(c, id->p, id->n, code, -1, "%s", msg);
}

/* Runs the method and answers; returns NULL on success, else the error
 * code sent back. */
static const char *run_method(struct lb_conn *c, struct lb_msg *m)
{
    const struct env_val *method = &m->env.f[F_METHOD], *p = &m->env.f[F_PARAMS];
    const struct sys_method *sm = sysmethod_find(method->p, method->n);
    if (!sm) {
        char msg[256];
        snprintf(msg, sizeof msg, "service '%s' has no method '%.*s'", g_bus.set.system_service,
                 (int)method->n, method->p);
        reply_error(c, m, LB_E_METHOD_NOT_FOUND, msg);
        return LB_E_METHOD_NOT_FOUND;
    }
    json_t *params = NULL;
    if (p->kind != J_NONE) {
        if (p->n > MAX_PARAMS) {
            reply_error(c, m, LB_E_PAYLOAD_TOO_LARGE, "params too large for a system method");
            return LB_E_PAYLOAD_TOO_LARGE;
        }
        const char *raw = p->kind == J_STRING ? p->p - 1 : p->p;
        size_t rawn = p->kind == J_STRING ? p->n + 2 : p->n;
        params = json_loadb(raw, rawn, JSON_DECODE_ANY, NULL);
    }
    if (!params) params = json_object();
    json_t *result = NULL;
    const char *code = LB_E_INTERNAL_ERROR;
    char msg[256] = "";
    int rc = sm->fn(sm->ud, c, params, &result, &code, msg);
    json_decref(params);
    if (rc != 0) {
        json_decref(result);
        code = code ? code : LB_E_INTERNAL_ERROR;
        reply_error(c, m, code, msg[0] ? msg : "system method failed");
        return code;
    }
    char *text = json_dumps(result ? result : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(result);
    if (!text) { reply_error(c, m, LB_E_INTERNAL_ERROR, "could not encode the result"); return LB_E_INTERNAL_ERROR; }
    router_reply(c, m, true, text, strlen(text));
    free(text);
    return NULL;
}

/* The bus's own methods (reload, token.issue, ...) are the most sensitive
 * calls there are: audited like any CALL, but without the message (.msg
 * NULL), so neither params nor result — which may hold tokens — can end
 * up in an audit file. */
static void audit_system_call(struct lb_conn *c, const struct lb_msg *m, const char *code, uint64_t start_us)
{
    if (!g_policy.audit) return;
    const struct env_val *method = &m->env.f[F_METHOD], *id = &m->env.f[F_ID];
    const char *sys = g_bus.set.system_service;
    struct lb_outcome o = {
        .type = LB_MSG_CALL, .from = lb_conn_service(c), .to = { sys, strlen(sys) },
        .name = { method->p, method->n }, .id = { id->p, id->n }, .delivered = code ? -1 : 1,
        .error_code = code, .bytes = m->env.len, .duration_us = mono_us() - start_us, .msg = NULL,
    };
    policy_audit(&o);
}

void system_service_call(struct lb_conn *c, struct lb_msg *m)
{
    uint64_t start = mono_us();
    const char *code = run_method(c, m);
    audit_system_call(c, m, code, start);
}
