/*
 * The bus's built-in methods: services, stats, ping, reload.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "system_service.h"
#include "sysmethod.h"
#include "registry.h"
#include "pending.h"
#include "plugin_host.h"
#include "reload.h"
#include "router.h"
#include "stats.h"
#include "log.h"
#include "util.h"

#define SERVICES_PAGE 200      /* default `limit` of lexbus.services */
#define SERVICES_PAGE_MAX 1000

static json_t *instance_json(const struct instance *i)
{
    const struct lb_conn *c = i->conn;
    json_t *o = json_object();
    json_object_set_new(o, "session", json_integer((json_int_t)c->id));
    json_object_set_new(o, "transport", json_string(c->peer.transport ? c->peer.transport : "?"));
    json_object_set_new(o, "auth", json_string(c->auth));
    json_object_set_new(o, "registered", json_integer((json_int_t)i->registered_ms));
    json_object_set_new(o, "lastSeen", json_integer((json_int_t)c->last_seen_ms));
    static const struct inst_extra none;
    const struct inst_extra *x = i->x ? i->x : &none;
    json_object_set_new(o, "node", json_string(x->node ? x->node : g_bus.set.node));
    if (x->version) json_object_set_new(o, "version", json_string(x->version));
    json_t *meta = x->metadata_json ? json_loads(x->metadata_json, 0, NULL) : NULL;
    if (meta) {
        json_t *pid = json_object_get(meta, "pid"), *host = json_object_get(meta, "hostname");
        if (pid) json_object_set(o, "pid", pid);
        if (host) json_object_set(o, "hostname", host);
        json_object_set_new(o, "metadata", meta);
    }
    if (!json_object_get(o, "pid") && c->peer.has_cred) json_object_set_new(o, "pid", json_integer(c->peer.pid));
    if (x->n_resources) {
        json_t *r = json_array();
        for (size_t k = 0; k < x->n_resources; k++) json_array_append_new(r, json_string(x->resources[k]));
        json_object_set_new(o, "resources", r);
    }
    if (c->events_dropped) json_object_set_new(o, "eventsDropped", json_integer((json_int_t)c->events_dropped));
    return o;
}

static void add_methods(json_t *methods, const struct instance *i)
{
    for (size_t k = 0; k < i->n_methods; k++) {
        bool seen = false;
        size_t idx;
        json_t *v;
        json_array_foreach(methods, idx, v) if (!strcmp(json_string_value(v), i->methods[k])) seen = true;
        if (!seen) json_array_append_new(methods, json_string(i->methods[k]));
    }
}

static json_t *service_json(const struct service *s)
{
    json_t *o = json_object(), *insts = json_array(), *methods = json_array();
    uint64_t last = 0, reg = UINT64_MAX;
    bool any_method = false;
    for (size_t k = 0; k < s->n; k++) {
        const struct instance *i = s->inst[k];
        json_array_append_new(insts, instance_json(i));
        if (i->conn->last_seen_ms > last) last = i->conn->last_seen_ms;
        if (i->registered_ms < reg) reg = i->registered_ms;
        if (!i->n_methods) any_method = true;
        add_methods(methods, i);
    }
    json_t *fi = instance_json(s->inst[0]);
    json_object_set_new(o, "name", json_string(s->name));
    json_object_set(o, "node", json_object_get(fi, "node"));
    json_object_set_new(o, "instances", json_integer((json_int_t)s->n));
    if (s->n_remote) json_object_set_new(o, "remoteInstances", json_integer((json_int_t)s->n_remote));
    json_object_set_new(o, "methods", methods);
    json_object_set_new(o, "anyMethod", json_boolean(any_method));
    json_object_set(o, "pid", json_object_get(fi, "pid") ? json_object_get(fi, "pid") : json_null());
    json_object_set(o, "hostname", json_object_get(fi, "hostname") ? json_object_get(fi, "hostname") : json_null());
    json_object_set_new(o, "registered", json_integer((json_int_t)reg));
    json_object_set_new(o, "lastSeen", json_integer((json_int_t)last));
    json_object_set_new(o, "sessions", insts);
    json_decref(fi);
    return o;
}

static json_t *self_json(void)
{
    json_t *self = json_object();
    json_object_set_new(self, "name", json_string(g_bus.set.system_service));
    json_object_set_new(self, "node", json_string(g_bus.set.node));
    json_object_set_new(self, "instances", json_integer(1));
    json_object_set_new(self, "methods", sysmethod_names());
    json_object_set_new(self, "builtin", json_true());
    return self;
}

/* ---- services: sorted, filtered, paged ------------------------------ */

struct svc_list { struct service **v; size_t n, cap; };

static void collect(struct service *s, void *ud)
{
    struct svc_list *l = ud;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = s;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(struct service *const *)a)->name, (*(struct service *const *)b)->name);
}

static int page_params(json_t *params, const char **name, const char **after, json_int_t *limit, struct lb_err *err)
{
    json_t *n = json_object_get(params, "name"), *a = json_object_get(params, "after"), *l = json_object_get(params, "limit");
    *name = *after = NULL;
    *limit = SERVICES_PAGE;
    if (n && !json_is_string(n)) return lb_refuse(err, LB_E_INVALID_MESSAGE, "\"name\" must be a service name"), -1;
    if (a && !json_is_null(a) && !json_is_string(a)) return lb_refuse(err, LB_E_INVALID_MESSAGE, "\"after\" must be a service name"), -1;
    if (l && (!json_is_integer(l) || json_integer_value(l) < 1 || json_integer_value(l) > SERVICES_PAGE_MAX))
        return lb_refuse(err, LB_E_INVALID_MESSAGE, "\"limit\" must be an integer from 1 to %d", SERVICES_PAGE_MAX), -1;
    *name = n ? json_string_value(n) : NULL;
    *after = a && json_is_string(a) ? json_string_value(a) : NULL;
    if (l) *limit = json_integer_value(l);
    return 0;
}

/* Services in name order, `limit` at a time after `after` (the bus's own
 * entry first, on the first page): a bus with thousands of services
 * answers a 75-byte call with a bounded reply. */
static int m_services(void *ud, struct lb_conn *caller, json_t *params, json_t **result, struct lb_err *err)
{
    (void)ud; (void)caller;
    const char *name, *after;
    json_int_t limit;
    if (page_params(params, &name, &after, &limit, err)) return -1;
    json_t *arr = json_array();
    if (name) {
        struct service *s = registry_find(name, strlen(name));
        if (s) json_array_append_new(arr, service_json(s));
        else if (!strcmp(name, g_bus.set.system_service)) json_array_append_new(arr, self_json());
        *result = arr;
        return 0;
    }
    struct svc_list l = { 0 };
    registry_each(collect, &l);
    qsort(l.v, l.n, sizeof *l.v, by_name);
    if (!after) { json_array_append_new(arr, self_json()); limit--; }
    for (size_t i = 0; i < l.n && limit > 0; i++) {
        if (after && strcmp(l.v[i]->name, after) <= 0) continue;
        json_array_append_new(arr, service_json(l.v[i]));
        limit--;
    }
    free(l.v);
    *result = arr;
    return 0;
}

/* ---- stats --------------------------------------------------------- */

static json_t *by_type(const uint64_t *v)
{
    json_t *o = json_object();
    for (int t = 1; t < LB_MSG__COUNT; t++)
        json_object_set_new(o, lb_msg_type_name((enum lb_msg_type)t), json_integer((json_int_t)v[t]));
    return o;
}

static void transport_into(void *ud, const char *t, uint64_t open)
{
    json_object_set_new(ud, t, json_integer((json_int_t)open));
}

static int m_stats(void *ud, struct lb_conn *caller, json_t *params, json_t **result, struct lb_err *err)
{
    (void)ud; (void)caller; (void)params; (void)err;
    const struct stats *s = &g_stats;
    json_t *o = json_object(), *in = by_type(s->msgs_in), *errs = json_object(), *per_t = json_object();
    json_object_set_new(in, "INVALID", json_integer((json_int_t)s->msgs_in[0]));
    for (int e = 0; e < LB_E__COUNT; e++)
        json_object_set_new(errs, err_code_name(e), json_integer((json_int_t)s->errors[e]));
    stats_transports_each(transport_into, per_t);
    json_t *calls = json_pack("{s:I,s:I,s:I,s:I,s:I}", "pending", (json_int_t)pending_count(),
                              "started", (json_int_t)s->calls_started, "completed", (json_int_t)s->calls_completed,
                              "late", (json_int_t)s->calls_late, "timeouts", (json_int_t)s->calls_timeouts);
    json_t *conns = json_pack("{s:I,s:I,s:I,s:I,s:I,s:o}", "open", (json_int_t)conn_count(),
                              "accepted", (json_int_t)s->conns_accepted, "refused", (json_int_t)s->conns_refused,
                              "evicted", (json_int_t)s->conns_evicted,
                              "registerTimeouts", (json_int_t)s->conns_register_timeouts, "byTransport", per_t);
    json_object_set_new(o, "node", json_string(g_bus.set.node));
    json_object_set_new(o, "mode", json_string(g_bus.set.production ? "production" : "development"));
    json_object_set_new(o, "uptime", json_integer((json_int_t)((now_ms() - g_bus.started_ms) / 1000)));
    json_object_set_new(o, "connections", conns);
    json_object_set_new(o, "services", json_integer((json_int_t)registry_count()));
    json_object_set_new(o, "subscriptions", json_integer((json_int_t)router_subscription_count()));
    json_object_set_new(o, "messagesIn", in);
    json_object_set_new(o, "messagesOut", by_type(s->msgs_out));
    json_object_set_new(o, "errors", errs);
    json_object_set_new(o, "calls", calls);
    json_object_set_new(o, "events", json_pack("{s:I,s:I,s:I}", "delivered", (json_int_t)s->events_delivered,
                                               "unrouted", (json_int_t)s->events_unrouted,
                                               "dropped", (json_int_t)s->events_dropped));
    json_object_set_new(o, "slowConsumers", json_integer((json_int_t)s->slow_consumers));
    json_object_set_new(o, "senderPauses", json_integer((json_int_t)s->sender_pauses));
    json_object_set_new(o, "bytesIn", json_integer((json_int_t)s->bytes_in));
    json_object_set_new(o, "bytesOut", json_integer((json_int_t)s->bytes_out));
    json_object_set_new(o, "outbufTotal", json_integer((json_int_t)conn_outbuf_total()));
    json_t *plugins = json_object();
    plugin_stats_into(plugins);
    json_object_set_new(o, "plugins", plugins);
    *result = o;
    return 0;
}

static int m_ping(void *ud, struct lb_conn *caller, json_t *params, json_t **result, struct lb_err *err)
{
    (void)ud; (void)caller; (void)params; (void)err;
    *result = json_pack("{s:b,s:s,s:I}", "pong", 1, "node", g_bus.set.node, "time", (json_int_t)now_ms());
    return 0;
}

static int m_reload(void *ud, struct lb_conn *caller, json_t *params, json_t **result, struct lb_err *err)
{
    (void)ud; (void)params;
    struct reload_result r;
    log_info("bus", "reload requested by '%s'", lb_conn_service(caller) ? lb_conn_service(caller) : "?");
    if (bus_reload(&r) != 0) {
        /* The request was fine; the configuration is not. */
        lb_refuse(err, LB_E_EXECUTION_FAILED, "reload failed, old configuration kept: %s", r.err);
        return -1;
    }
    *result = json_pack("{s:b}", "reloaded", 1);
    if (r.kept[0]) json_object_set_new(*result, "restartNeeded", json_string(r.kept));
    return 0;
}

void system_service_init(void)
{
    sysmethod_add(NULL, "services", 0, m_services, NULL);
    sysmethod_add(NULL, "stats", 0, m_stats, NULL);
    sysmethod_add(NULL, "ping", 0, m_ping, NULL);
    sysmethod_add(NULL, "reload", LB_METHOD_ADMIN, m_reload, NULL);
}
