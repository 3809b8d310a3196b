/*
 * The operators' endpoints on the websocket listener: /health,
 * /api/ipc/stats (the Exprsn Bridge's shape), /metrics (Prometheus) and
 * the demo page.
 *
 * The figures are the bus's, not this listener's: the host's stats
 * snapshot (messages in and out by type, errors by code, bytes, calls and
 * their durations), connections per transport (lb_transports_each),
 * services (lb_services_each) and every plugin's counters
 * (lb_counters_each).  Only the `connections` list of /api/ipc/stats is
 * this listener's own sockets (the ABI lists no other transport's).
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/buffer.h>
#include <jansson.h>
#include "httpapi.h"
#include "bridge.h"
#include "prom.h"
#include "session.h"
#include "sock.h"

static void respond_json(struct hc *hc, struct http_req *r, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    char cors[512];
    wsp_cors_headers(wsp_origin_ok(hc->wp, r) ? r : NULL, cors, sizeof cors);
    if (!text) { hc_respond(hc, 503, "text/plain", NULL, "out of memory\n", 14); return; }
    hc_respond(hc, status, "application/json", cors, text, strlen(text));
    free(text);
}

static void snapshot(struct wsp *wp, struct lb_stats_snapshot *s)
{
    memset(s, 0, sizeof *s);
    s->size = sizeof *s;
    lb_stats_snapshot(wp->ctx, s);
}

/* 503 while draining: load balancers stop sending work here. */
void api_health(struct hc *hc, struct http_req *r)
{
    struct lb_stats_snapshot s;
    snapshot(hc->wp, &s);
    bool draining = lb_bus_draining(hc->wp->ctx);
    json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:I}", "status", draining ? "draining" : "ok",
                          "node", lb_bus_node(hc->wp->ctx), "uptime", (json_int_t)(s.uptime_ms / 1000),
                          "connections", (json_int_t)s.conns_open, "services", (json_int_t)s.services);
    respond_json(hc, r, draining ? 503 : 200, j);
}

/* ---- /api/ipc/stats ------------------------------------------------- */

static void service_into(void *ud, const struct lb_service_info *si)
{
    json_t **o = ud;   /* [0] names, [1] details */
    json_array_append_new(o[0], json_string(si->name));
    json_object_set_new(o[1], si->name, json_pack("{s:I, s:I, s:I, s:I}", "instances", (json_int_t)si->instances,
                                                  "remoteInstances", (json_int_t)si->remote_instances,
                                                  "calls", (json_int_t)si->calls_in,
                                                  "events", (json_int_t)si->events_in));
}

static void transport_into(void *ud, const char *transport, uint64_t open)
{
    if (open) json_object_set_new(ud, transport, json_integer((json_int_t)open));
}

/* rateLimits: RATE_LIMITED refusals, and the ratelimit plugin's counters. */
static void ratelimit_into(void *ud, const char *plugin, const char *name, const char *help, uint64_t value, bool gauge)
{
    (void)help; (void)gauge;
    if (!strcmp(plugin, "ratelimit")) json_object_set_new(ud, name, json_integer((json_int_t)value));
}

static void ns_conn(void *ud, struct sns *ns)
{
    struct lb_conn *c = sns_conn(ns);
    if (!c) return;
    size_t n;
    const char *nsp = sns_name(ns, &n);
    json_array_append_new(ud, json_pack("{s:I, s:s?, s:s, s:s, s:s%}", "id", (json_int_t)lb_conn_id(c),
                                        "service", lb_conn_service(c), "transport", "socket.io",
                                        "address", lb_conn_peer(c)->address ? lb_conn_peer(c)->address : "",
                                        "namespace", nsp, n));
}

static json_t *own_connections(struct wsp *wp)
{
    json_t *conns = json_array();
    for (struct hc *c = wp->conns; c; c = c->next) {
        if (!c->conn) continue;
        json_array_append_new(conns, json_pack("{s:I, s:s?, s:s, s:s}", "id", (json_int_t)lb_conn_id(c->conn),
                                               "service", lb_conn_service(c->conn), "transport", "websocket",
                                               "address", c->addr));
    }
    eio_each_ns(wp, ns_conn, conns);
    return conns;
}

static json_t *by_type(const uint64_t *counts)
{
    json_t *o = json_object();
    for (int t = 1; t < LB_MSG__COUNT; t++)
        if (counts[t]) json_object_set_new(o, lb_msg_type_name((enum lb_msg_type)t), json_integer((json_int_t)counts[t]));
    if (counts[0]) json_object_set_new(o, "invalid", json_integer((json_int_t)counts[0]));
    return o;
}

static json_t *errors_by_code(const struct lb_stats_snapshot *s)
{
    json_t *o = json_object();
    for (int i = 0; i < LB_E__COUNT; i++)
        if (s->errors[i]) json_object_set_new(o, lb_error_code_name(i), json_integer((json_int_t)s->errors[i]));
    return o;
}

static json_t *lexbus_part(struct wsp *wp, const struct lb_stats_snapshot *s, json_t *details)
{
    json_t *transports = json_object();
    lb_transports_each(wp->ctx, transport_into, transports);
    return json_pack("{s:s, s:I, s:o, s:o, s:{s:o, s:o}, s:o, s:{s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I}, "
                     "s:{s:I, s:I, s:I}, s:I, s:I, s:I, s:I}",
                     "node", lb_bus_node(wp->ctx), "uptime", (json_int_t)(s->uptime_ms / 1000),
                     "services", details, "connectionsByTransport", transports,
                     "messages", "received", by_type(s->msgs_in), "sent", by_type(s->msgs_out),
                     "errors", errors_by_code(s),
                     "bytes", "received", (json_int_t)s->bytes_in, "sent", (json_int_t)s->bytes_out,
                     "calls", "inFlight", (json_int_t)s->calls_in_flight, "started", (json_int_t)s->calls_started,
                     "completed", (json_int_t)s->calls_completed, "late", (json_int_t)s->calls_late,
                     "timeouts", (json_int_t)s->calls_timeouts,
                     "events", "delivered", (json_int_t)s->events_delivered, "unrouted", (json_int_t)s->events_unrouted,
                     "dropped", (json_int_t)s->events_dropped,
                     "subscriptions", (json_int_t)s->subscriptions, "slowConsumers", (json_int_t)s->slow_consumers,
                     "socketIoNamespaces", (json_int_t)wp->n_namespaces, "engineIoSessions", (json_int_t)wp->n_sessions);
}

void api_stats(struct hc *hc, struct http_req *r)
{
    struct wsp *wp = hc->wp;
    struct lb_stats_snapshot s;
    snapshot(wp, &s);
    json_t *svc[2] = { json_array(), json_object() };
    lb_services_each(wp->ctx, service_into, svc);
    json_t *limits = json_pack("{s:I}", "limited", (json_int_t)s.errors[lb_error_code_index(LB_E_RATE_LIMITED)]);
    lb_counters_each(wp->ctx, ratelimit_into, limits);
    json_t *j = json_pack("{s:I, s:o, s:I, s:o, s:o, s:o}", "activeServices", (json_int_t)s.services,
                          "services", svc[0], "activeConnections", (json_int_t)s.conns_open,
                          "connections", own_connections(wp), "rateLimits", limits,
                          "lexbus", lexbus_part(wp, &s, svc[1]));
    respond_json(hc, r, 200, j);
}

/* ---- /metrics -------------------------------------------------------- */

static void transport_sample(void *ud, const char *transport, uint64_t open)
{
    prom_sample(ud, "lexbus_connections", "transport", transport, open);
}

struct prom_services { struct evbuffer *b; const char *name; int which; };

static void service_sample(void *ud, const struct lb_service_info *si)
{
    struct prom_services *p = ud;
    uint64_t v = p->which == 0 ? si->instances : p->which == 1 ? si->calls_in : si->events_in;
    prom_sample(p->b, p->name, "service", si->name, v);
}

static void services_family(struct wsp *wp, struct evbuffer *b, const char *name, const char *type,
                            const char *help, int which)
{
    struct prom_services p = { b, name, which };
    prom_family(b, name, type, help);
    lb_services_each(wp->ctx, service_sample, &p);
}

/* lexbus_plugin_<plugin>_<name>[_total]: '-' in plugin names becomes '_'. */
static void counter_sample(void *ud, const char *plugin, const char *name, const char *help, uint64_t value, bool gauge)
{
    char metric[256];
    int n = snprintf(metric, sizeof metric, "lexbus_plugin_%s_%s", plugin, name);
    if (n < 0 || (size_t)n >= sizeof metric - 6) return;
    for (char *c = metric; *c; c++)
        if (*c == '-' || *c == '.') *c = '_';
    size_t len = (size_t)n;
    if (!gauge && (len < 6 || strcmp(metric + len - 6, "_total"))) memcpy(metric + len, "_total", 7);
    prom_family(ud, metric, gauge ? "gauge" : "counter", help && *help ? help : name);
    prom_sample(ud, metric, NULL, NULL, value);
}

static void by_type_family(struct evbuffer *b, const char *name, const char *help, const uint64_t *counts)
{
    prom_family(b, name, "counter", help);
    for (int t = 1; t < LB_MSG__COUNT; t++) prom_sample(b, name, "type", lb_msg_type_name((enum lb_msg_type)t), counts[t]);
    prom_sample(b, name, "type", "invalid", counts[0]);
}

static void one(struct evbuffer *b, const char *name, const char *type, const char *help, uint64_t v)
{
    prom_family(b, name, type, help);
    prom_sample(b, name, NULL, NULL, v);
}

static void bus_metrics(struct wsp *wp, struct evbuffer *b, const struct lb_stats_snapshot *s)
{
    one(b, "lexbus_up", "gauge", "1 while lexbusd serves, 0 while it drains", lb_bus_draining(wp->ctx) ? 0 : 1);
    one(b, "lexbus_uptime_seconds", "gauge", "Seconds since lexbusd started", s->uptime_ms / 1000);
    by_type_family(b, "lexbus_messages_received_total", "Messages received from clients, by type (invalid: not parsed)",
                   s->msgs_in);
    by_type_family(b, "lexbus_messages_sent_total", "Messages sent to clients, by type", s->msgs_out);
    prom_family(b, "lexbus_errors_total", "counter", "Errors sent to clients, by code");
    for (int i = 0; i < LB_E__COUNT; i++) prom_sample(b, "lexbus_errors_total", "code", lb_error_code_name(i), s->errors[i]);
    prom_family(b, "lexbus_connections", "gauge", "Open connections, by transport (in-process ones as local:NAME)");
    lb_transports_each(wp->ctx, transport_sample, b);
    one(b, "lexbus_calls_in_flight", "gauge", "CALLs waiting for their RESPONSE", s->calls_in_flight);
    prom_family(b, "lexbus_call_duration_seconds", "histogram", "Time from CALL to RESPONSE (or its failure)");
    prom_histogram(b, "lexbus_call_duration_seconds", lb_call_bucket_bounds, s->call_buckets, LB_CALL_BUCKETS,
                   s->call_seconds_sum);
    one(b, "lexbus_bytes_received_total", "counter", "Bytes of frames received", s->bytes_in);
    one(b, "lexbus_bytes_sent_total", "counter", "Bytes of frames sent", s->bytes_out);
    one(b, "lexbus_services", "gauge", "Services registered", s->services);
    one(b, "lexbus_subscriptions", "gauge", "Subscriptions", s->subscriptions);
    one(b, "lexbus_connections_accepted_total", "counter", "Connections accepted", s->conns_accepted);
    one(b, "lexbus_connections_refused_total", "counter", "Connections refused (limits, policies, draining)",
        s->conns_refused);
    one(b, "lexbus_connections_evicted_total", "counter", "Connections evicted for silence (heartbeat)", s->conns_evicted);
    one(b, "lexbus_register_timeouts_total", "counter", "Connections closed for no REGISTER in time",
        s->conns_register_timeouts);
    one(b, "lexbus_calls_started_total", "counter", "CALLs routed to a callee", s->calls_started);
    one(b, "lexbus_calls_completed_total", "counter", "CALLs answered", s->calls_completed);
    one(b, "lexbus_calls_late_total", "counter", "RESPONSEs that came after their call had ended", s->calls_late);
    one(b, "lexbus_call_timeouts_total", "counter", "CALLs that timed out", s->calls_timeouts);
    one(b, "lexbus_events_delivered_total", "counter", "EVENTs delivered", s->events_delivered);
    one(b, "lexbus_events_unrouted_total", "counter", "EMITs nobody received", s->events_unrouted);
    one(b, "lexbus_events_dropped_total", "counter", "EVENTs dropped for slow consumers", s->events_dropped);
    one(b, "lexbus_slow_consumers_total", "counter", "Connections closed as slow consumers", s->slow_consumers);
    one(b, "lexbus_sender_pauses_total", "counter", "Senders paused by back-pressure", s->sender_pauses);
    one(b, "lexbus_output_queued_bytes", "gauge", "Bytes queued for all connections", s->outbuf_total);
}

void api_metrics(struct hc *hc, struct http_req *r)
{
    (void)r;
    struct wsp *wp = hc->wp;
    struct lb_stats_snapshot s;
    snapshot(wp, &s);
    struct evbuffer *b = evbuffer_new();
    if (!b) { hc_respond(hc, 503, "text/plain", NULL, "out of memory\n", 14); return; }
    bus_metrics(wp, b, &s);
    services_family(wp, b, "lexbus_service_instances", "gauge", "Instances of each service", 0);
    services_family(wp, b, "lexbus_service_calls_total", "counter", "CALLs delivered to each service", 1);
    services_family(wp, b, "lexbus_service_events_total", "counter", "EVENTs delivered to each service", 2);
    lb_counters_each(wp->ctx, counter_sample, b);
    size_t len = evbuffer_get_length(b);
    const char *text = (const char *)evbuffer_pullup(b, (ssize_t)len);
    hc_respond(hc, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
    evbuffer_free(b);
}

void api_demo(struct hc *hc, struct http_req *r)
{
    (void)r;
    const struct wsp_conf *c = &hc->wp->c;
    hc_respond(hc, 200, "text/html; charset=utf-8",
               "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; "
               "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'\r\n",
               c->demo_page, c->demo_len);
}
