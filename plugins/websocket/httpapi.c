/*
 * The operators' endpoints on the websocket listener: /health,
 * /api/ipc/stats (the Exprsn Bridge's shape), /metrics (Prometheus) and
 * the demo page.
 *
 * Their figures come from one snapshot (struct snap).  Plugin ABI v1 has
 * no way for a plugin to read the bus's counters, so snapshot() fills in
 * what this plugin sees itself (its connections and the services they
 * registered) and marks it `bus_wide = false`; ABI v2's stats snapshot
 * will fill the rest in the same function.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/buffer.h>
#include <jansson.h>
#include "wsp.h"
#include "prom.h"

#define MAX_SNAP_SERVICES 4096

struct snap {
    bool bus_wide;               /* false: this plugin's connections only (ABI v1) */
    bool draining;
    const char *node;
    uint64_t uptime_s;
    uint64_t conns_lexbus, conns_sio, sessions, sockets;
    const char **services;       /* distinct names, borrowed */
    size_t n_services;
};

static void add_service(struct snap *s, const char *name)
{
    if (!name || s->n_services == MAX_SNAP_SERVICES) return;
    for (size_t i = 0; i < s->n_services; i++) if (!strcmp(s->services[i], name)) return;
    s->services[s->n_services++] = name;
}

static void ns_service(void *ud, struct sns *ns)
{
    struct lb_conn *c = sns_conn(ns);
    if (c) add_service(ud, lb_conn_service(c));
}

static void snapshot(struct wsp *wp, struct snap *s)
{
    memset(s, 0, sizeof *s);
    s->node = lb_bus_node(wp->ctx);
    s->uptime_s = (lb_now_ms() - wp->started_ms) / 1000;
    s->conns_lexbus = (uint64_t)wp->n_lexbus;
    s->conns_sio = (uint64_t)wp->n_namespaces;
    s->sessions = (uint64_t)wp->n_sessions;
    s->sockets = (uint64_t)wp->n_conns;
    s->services = calloc(MAX_SNAP_SERVICES, sizeof *s->services);
    if (!s->services) return;
    for (struct hc *hc = wp->conns; hc; hc = hc->next)
        if (hc->conn) add_service(s, lb_conn_service(hc->conn));
    eio_each_ns(wp, ns_service, s);
}

static void snap_free(struct snap *s) { free(s->services); }

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

void api_health(struct hc *hc, struct http_req *r)
{
    struct snap s;
    snapshot(hc->wp, &s);
    json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:I, s:b}", "status", s.draining ? "draining" : "ok",
                          "node", s.node, "uptime", (json_int_t)s.uptime_s,
                          "connections", (json_int_t)(s.conns_lexbus + s.conns_sio),
                          "services", (json_int_t)s.n_services, "busWide", s.bus_wide);
    snap_free(&s);
    respond_json(hc, r, s.draining ? 503 : 200, j);
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

void api_stats(struct hc *hc, struct http_req *r)
{
    struct wsp *wp = hc->wp;
    struct snap s;
    snapshot(wp, &s);
    json_t *names = json_array();
    for (size_t i = 0; i < s.n_services; i++) json_array_append_new(names, json_string(s.services[i]));
    json_t *conns = json_array();
    for (struct hc *c = wp->conns; c; c = c->next) {
        if (!c->conn) continue;
        const char *svc = lb_conn_service(c->conn);
        json_array_append_new(conns, json_pack("{s:I, s:s?, s:s, s:s}", "id", (json_int_t)lb_conn_id(c->conn),
                                                "service", svc, "transport", "websocket", "address", c->addr));
    }
    eio_each_ns(wp, ns_conn, conns);
    json_t *j = json_pack("{s:I, s:o, s:I, s:o, s:{}, s:{s:s, s:I, s:b, s:I, s:I, s:I, s:I}}",
                          "activeServices", (json_int_t)s.n_services, "services", names,
                          "activeConnections", (json_int_t)(s.conns_lexbus + s.conns_sio), "connections", conns,
                          "rateLimits",
                          "lexbus", "node", s.node, "uptime", (json_int_t)s.uptime_s, "busWide", s.bus_wide,
                          "sockets", (json_int_t)s.sockets, "sessions", (json_int_t)s.sessions,
                          "webSocketConnections", (json_int_t)s.conns_lexbus,
                          "socketIoNamespaces", (json_int_t)s.conns_sio);
    snap_free(&s);
    respond_json(hc, r, 200, j);
}

void api_metrics(struct hc *hc, struct http_req *r)
{
    (void)r;
    struct wsp *wp = hc->wp;
    struct snap s;
    snapshot(wp, &s);
    struct evbuffer *b = evbuffer_new();
    if (!b) { snap_free(&s); hc_respond(hc, 503, "text/plain", NULL, "out of memory\n", 14); return; }
    prom_family(b, "lexbus_up", "gauge", "1 while lexbusd serves (0 is never seen: a stopped bus answers nothing)");
    prom_sample(b, "lexbus_up", NULL, NULL, s.draining ? 0 : 1);
    prom_family(b, "lexbus_uptime_seconds", "gauge", "Seconds since the websocket plugin started");
    prom_sample(b, "lexbus_uptime_seconds", NULL, NULL, s.uptime_s);
    prom_family(b, "lexbus_connections", "gauge", "Connections on the bus, by transport");
    prom_sample(b, "lexbus_connections", "transport", "websocket", s.conns_lexbus);
    prom_sample(b, "lexbus_connections", "transport", "socket.io", s.conns_sio);
    prom_family(b, "lexbus_services", "gauge", "Distinct services registered");
    prom_sample(b, "lexbus_services", NULL, NULL, s.n_services);
    const struct wsp_counters *n = &wp->n;
    struct { const char *name, *help; unsigned long long v; } c[] = {
        { "lexbus_websocket_accepted_total", "TCP connections accepted by the websocket listener", n->accepted },
        { "lexbus_websocket_refused_total", "Connections closed at accept: max_connections", n->over_limit },
        { "lexbus_websocket_http_requests_total", "HTTP requests served", n->http_requests },
        { "lexbus_websocket_http_errors_total", "HTTP requests answered with a 4xx or 5xx status", n->http_errors },
        { "lexbus_websocket_header_timeouts_total", "Request heads not complete within header_timeout", n->header_timeouts },
        { "lexbus_websocket_upgrades_total", "WebSocket connections to the lexbus path", n->ws_lexbus },
        { "lexbus_websocket_protocol_errors_total", "WebSockets closed for a protocol violation", n->ws_errors },
        { "lexbus_websocket_ping_floods_total", "WebSockets closed for flooding pings", n->ping_floods },
        { "lexbus_engineio_sessions_total", "Engine.IO sessions opened", n->eio_sessions },
        { "lexbus_engineio_upgrades_total", "Engine.IO sessions upgraded from polling to WebSocket", n->eio_upgrades },
        { "lexbus_engineio_timeouts_total", "Engine.IO sessions ended by ping or connect timeouts", n->eio_timeouts },
        { "lexbus_socketio_joins_total", "Socket.IO namespaces joined", n->sio_joins },
        { "lexbus_socketio_refused_total", "Socket.IO namespace joins refused (CONNECT_ERROR)", n->sio_refused },
        { "lexbus_socketio_bad_packets_total", "Sessions closed for a packet that breaks the grammar", n->sio_bad_packets },
        { "lexbus_socketio_binary_refused_total", "Binary packets refused", n->binary_refused },
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        prom_family(b, c[i].name, "counter", c[i].help);
        prom_sample(b, c[i].name, NULL, NULL, c[i].v);
    }
    prom_family(b, "lexbus_websocket_sessions", "gauge", "Engine.IO sessions open");
    prom_sample(b, "lexbus_websocket_sessions", NULL, NULL, s.sessions);
    prom_family(b, "lexbus_websocket_sockets", "gauge", "Sockets held by the websocket listener");
    prom_sample(b, "lexbus_websocket_sockets", NULL, NULL, s.sockets);
    snap_free(&s);
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
