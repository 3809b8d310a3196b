/*
 * websocket: browsers and Socket.IO clients on the bus, plus HTTP
 * endpoints for operators, all on one listener.
 *
 *   GET /lexbus          RFC 6455; one text message = one lexbus JSON message
 *   /socket.io/          Engine.IO v4 (WebSocket, long-polling, upgrade) carrying
 *                        Socket.IO v5; namespace /ipc/<name> = service <name>
 *   GET /health          {"status":"ok",...} (503 while draining)
 *   GET /api/ipc/stats   the Exprsn shape plus lexbus's stats
 *   GET /metrics         Prometheus text format 0.0.4
 *   GET /                the demo page (demo = yes)
 *
 * Libraries: http-parser parses requests (bounded in http.c); WebSocket
 * frames are parsed in place (wsframe.c: wslay was measured and is kept
 * as the fuzzer's reference); Engine.IO and Socket.IO in eio.c; TLS is
 * OpenSSL on the socket (tls.c, with plugins/common/tls.c's context).
 *
 * This file is the plugin's top layer (wsp.h has the others): its life
 * (load, unload, the two-step reload, the drain), the listeners, what it
 * reports (counters and stats), and which part serves each path.
 *
 * Reload: step 1 (ws_reload) reads the section and, for TLS, builds the
 * new context into wp->staged / wp->staged_ssl without touching what
 * runs; step 2 (ws_reload_done) swaps them in or drops them.  Sockets and
 * sessions already open keep the TLS context and the limits they were
 * given; `listen` and switching TLS on or off need a restart.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <event2/listener.h>
#include <jansson.h>
#include "bridge.h"
#include "httpapi.h"
#include "lexbus.h"
#include "session.h"
#include "sock.h"
#include "wsconf.h"

#define SESSION_ID_CTX "lexbus websocket"

/* ---- listeners ------------------------------------------------------ */

static int open_listeners(struct wsp *wp, const char *const *listen, size_t n)
{
    struct lb_plugin_ctx *ctx = wp->ctx;
    const struct wsp_conf *c = &wp->c;
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        socklen_t sl;
        net_parse_listen(listen[i], &ss, &sl);   /* checked before */
        unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
        if (ss.ss_family == AF_INET6) flags |= LEV_OPT_BIND_IPV6ONLY;
        struct evconnlistener *l = evconnlistener_new_bind(lb_event_base(ctx), wsp_accept_cb, wp, flags, 4096,
                                                           (struct sockaddr *)&ss, (int)sl);
        if (!l) {
            lb_plugin_fail(ctx, "cannot listen on %s: %s", listen[i], strerror(errno));
            return -1;
        }
        lb_listener_add(ctx, l);
        wp->listen[wp->n_listeners] = wsp_strndup(listen[i], strlen(listen[i]));
        wp->listeners[wp->n_listeners++] = l;
        char where[64];
        net_format_bound(evconnlistener_get_fd(l), listen[i], where, sizeof where);
        lb_log(ctx, LB_LOG_INFO, "listening on %s://%s (%s%s%s%s%s%s)%s", c->tls ? "https" : "http", where,
               c->lexbus ? c->path : "", c->socketio ? " " : "", c->socketio ? c->sio_path : "",
               c->health ? " /health" : "", c->metrics ? " /metrics" : "", c->demo ? " demo at /" : "",
               !c->tls ? "" : c->keys.require_cert ? ", client certificates required"
                            : c->keys.ca ? ", client certificates optional" : "");
    }
    return 0;
}

/* ---- counters and stats --------------------------------------------- */

static int register_counters(struct wsp *wp)
{
    struct { const char *name, *help; const uint64_t *v; bool gauge; } c[] = {
        { "accepted", "TCP connections accepted by the websocket listener", &wp->n.accepted, false },
        { "over_limit", "Sockets or Engine.IO sessions refused: max_connections", &wp->n.over_limit, false },
        { "over_handshaking", "TLS sockets refused: max_handshaking or max_handshaking_per_address",
          &wp->n.over_handshaking, false },
        { "tls_handshakes", "TLS handshakes completed", &wp->n.tls_handshakes, false },
        { "tls_refused", "TLS handshakes refused or not done within header_timeout", &wp->n.tls_refused, false },
        { "http_requests", "HTTP requests served", &wp->n.http_requests, false },
        { "http_errors", "HTTP requests answered with a 4xx or 5xx status", &wp->n.http_errors, false },
        { "header_timeouts", "Request heads not complete within header_timeout", &wp->n.header_timeouts, false },
        { "websockets", "WebSocket connections to the lexbus path", &wp->n.ws_lexbus, false },
        { "websocket_errors", "WebSockets closed for a protocol violation", &wp->n.ws_errors, false },
        { "ping_floods", "WebSockets closed for flooding pings", &wp->n.ping_floods, false },
        { "eio_sessions", "Engine.IO sessions opened", &wp->n.eio_sessions, false },
        { "eio_polling", "Engine.IO sessions opened by long-polling", &wp->n.eio_polling, false },
        { "eio_upgrades", "Engine.IO sessions upgraded from polling to WebSocket", &wp->n.eio_upgrades, false },
        { "eio_timeouts", "Engine.IO sessions ended by ping or connect timeouts", &wp->n.eio_timeouts, false },
        { "sio_joins", "Socket.IO namespaces joined", &wp->n.sio_joins, false },
        { "sio_refused", "Socket.IO namespace joins refused (CONNECT_ERROR)", &wp->n.sio_refused, false },
        { "sio_bad_packets", "Sessions closed for a packet that breaks the grammar", &wp->n.sio_bad_packets, false },
        { "binary_refused", "Binary packets and messages refused", &wp->n.binary_refused, false },
        { "reloads", "Reloads applied", &wp->n.reloads, false },
        { "sockets", "Sockets held by the websocket listener", &wp->n_conns, true },
        { "handshaking", "TLS handshakes in progress", &wp->n_handshaking, true },
        { "lexbus_connections", "WebSocket connections on the lexbus path", &wp->n_lexbus, true },
        { "sessions", "Engine.IO sessions open", &wp->n_sessions, true },
        { "namespaces", "Socket.IO namespaces joined (each a bus connection)", &wp->n_namespaces, true },
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++)
        if (lb_counter_register(wp->ctx, c[i].name, c[i].help, c[i].v, c[i].gauge) < 0) return -1;
    return 0;
}

/* What counters cannot say: the listener's addresses and certificate. */
static json_t *stats_fn(void *ud)
{
    struct wsp *wp = ud;
    json_t *listen = json_array();
    for (size_t i = 0; i < wp->n_listeners; i++) json_array_append_new(listen, json_string(wp->listen[i]));
    json_t *o = json_pack("{s:o, s:b}", "listen", listen, "tls", wp->c.tls);
    if (wp->ssl) {
        json_object_set_new(o, "certSubject", json_string(wp->cert_subject));
        json_object_set_new(o, "certNotAfter", json_string(wp->cert_not_after));
        json_object_set_new(o, "clientCertificates", json_string(wp->c.keys.require_cert ? "required"
                                                                  : wp->c.keys.ca ? "optional" : "no"));
    }
    return o;
}

/* ---- which part serves a path --------------------------------------- */

static bool is_sio_path(const struct wsp *wp, const char *path, size_t n)
{
    size_t k = wp->c.sio_path_len;
    return (n == k || (n == k + 1 && path[k] == '/')) && memcmp(path, wp->c.sio_path, k) == 0;
}

/* A complete request (sock.c hands it over as wp->route). */
static void route(struct hc *hc, struct http_req *r)
{
    struct wsp *wp = hc->wp;
    const char *path = r->path;
    if (wp->c.socketio && is_sio_path(wp, path, r->path_len)) { eio_http(hc, r); return; }
    if (wp->c.lexbus && !strcmp(path, wp->c.path)) { lexbus_upgrade(hc, r); return; }
    bool known = (wp->c.health && !strcmp(path, "/health")) || (wp->c.stats && !strcmp(path, "/api/ipc/stats")) ||
                 (wp->c.metrics && !strcmp(path, "/metrics")) || (wp->c.demo && !strcmp(path, "/"));
    if (!known) { hc_respond_text(hc, 404, NULL, "not found"); return; }
    if (r->p.method != HTTP_GET && r->p.method != HTTP_HEAD) {
        hc_respond_text(hc, 405, "Allow: GET, HEAD\r\n", "only GET and HEAD are served here");
        return;
    }
    if (!strcmp(path, "/health")) api_health(hc, r);
    else if (!strcmp(path, "/api/ipc/stats")) api_stats(hc, r);
    else if (!strcmp(path, "/metrics")) api_metrics(hc, r);
    else api_demo(hc, r);
}

/* ---- the plugin's life ---------------------------------------------- */

static void on_drain(void *ud)
{
    struct wsp *wp = ud;
    wp->draining = true;   /* no new session; what closes from now on lingers briefly */
    eio_close_all(wp, "lexbusd is going away");
    wsp_drain(wp);         /* after the sessions: the polls they answered leave idle sockets */
    throttle_flush(&wp->refusals);   /* its timer would hold the exit up */
    event_del(&wp->refusals.tick);
}

static struct wsp *wsp_new(struct lb_plugin_ctx *ctx, struct wsp_conf *c, SSL_CTX *ssl)
{
    struct wsp *wp = wsp_alloc(sizeof *wp);
    wp->ctx = ctx;
    wp->c = *c;
    wp->ssl = ssl;
    wp->authenticator = c->tls && c->keys.require_cert;
    net_addr_table_init(&wp->handshaking_by_addr);
    throttle_init(&wp->refusals, ctx, "refused");
    slots_init(&wp->sessions);
    wp->scratch = lb_jw_new();
    wp->reqbuf = lb_jw_new();
    wp->catbuf = lb_jw_new();
    wp->errbuf = lb_jw_new();
    wp->msg = lb_msg_new();
    wp->route = route;
    wp->sio = &bridge_eio_ops;
    if (ssl) tls_note_server_cert(ctx, ssl, wp->cert_subject, sizeof wp->cert_subject, wp->cert_not_after,
                                  sizeof wp->cert_not_after);
    return wp;
}

static int ws_load(struct lb_plugin_ctx *ctx)
{
    struct wsp_conf c;
    const char *const *listen;
    size_t n = lb_conf_list(ctx, "listen", &listen);
    if (wsp_conf_read(ctx, &c, NULL) < 0 || wsp_listen_check(ctx, listen, n) < 0) { wsp_conf_free(&c); return -1; }
    SSL_CTX *ssl = NULL;
    if (c.tls && !(ssl = tls_server_ctx(ctx, &c.keys, SESSION_ID_CTX))) { wsp_conf_free(&c); return -1; }
    bool authenticates = c.tls && c.keys.require_cert;
    if (lb_check_only(ctx)) {
        if (authenticates) lb_declare_authenticator(ctx);   /* -t checks production mode too */
        SSL_CTX_free(ssl);
        wsp_conf_free(&c);
        return 0;
    }
    struct wsp *wp = wsp_new(ctx, &c, ssl);
    lb_plugin_set_data(ctx, wp);
    if (open_listeners(wp, listen, n) < 0 || register_counters(wp) < 0) return -1;   /* the host calls unload */
    /* Mutual TLS binds each connection to its certificate's names. */
    if (authenticates) lb_declare_authenticator(ctx);
    lb_stats_register(ctx, stats_fn, wp);
    lb_drain_register(ctx, on_drain, wp);
    return 0;
}

static void drop_staged(struct wsp *wp)
{
    if (wp->staged) { wsp_conf_free(wp->staged); free(wp->staged); }
    SSL_CTX_free(wp->staged_ssl);
    wp->staged = NULL;
    wp->staged_ssl = NULL;
}

static void ws_unload(struct lb_plugin_ctx *ctx)
{
    struct wsp *wp = lb_plugin_data(ctx);
    if (!wp) return;
    throttle_flush(&wp->refusals);   /* the count of a last flood is not lost */
    event_del(&wp->refusals.tick);
    for (size_t i = 0; i < wp->n_listeners; i++) {
        lb_listener_remove(ctx, wp->listeners[i]);
        evconnlistener_free(wp->listeners[i]);
        free(wp->listen[i]);
    }
    eio_close_all(wp, "lexbusd is stopping");
    wsp_free_sockets(wp);
    drop_staged(wp);
    wsp_conf_free(&wp->c);
    SSL_CTX_free(wp->ssl);
    slots_free(&wp->sessions);
    net_addr_table_free(&wp->handshaking_by_addr);
    lb_jw_free(wp->scratch);
    lb_jw_free(wp->reqbuf);
    lb_jw_free(wp->catbuf);
    lb_jw_free(wp->errbuf);
    lb_msg_free(wp->msg);
    free(wp);
    lb_plugin_set_data(ctx, NULL);
}

/* Step 1: read and check everything, build the TLS context; apply nothing. */
static int ws_reload(struct lb_plugin_ctx *ctx)
{
    struct wsp *wp = lb_plugin_data(ctx);
    struct wsp_conf *c = wsp_alloc(sizeof *c);
    const char *const *listen;
    size_t n = lb_conf_list(ctx, "listen", &listen);
    if (wsp_conf_read(ctx, c, wp && wp->c.tls ? &wp->authenticator : NULL) < 0 || wsp_listen_check(ctx, listen, n) < 0)
        goto fail;
    if (!wp) { wsp_conf_free(c); free(c); return 0; }
    if (c->tls != wp->c.tls) {
        lb_plugin_fail(ctx, "cert and key were %s: switching TLS %s needs a restart (the listeners keep speaking %s)",
                       c->tls ? "added" : "removed", c->tls ? "on" : "off", wp->c.tls ? "TLS" : "plain HTTP");
        goto fail;
    }
    SSL_CTX *ssl = NULL;
    if (c->tls && !(ssl = tls_server_ctx(ctx, &c->keys, SESSION_ID_CTX))) goto fail;   /* the old one keeps serving */
    bool same = n == wp->n_listeners;
    for (size_t i = 0; same && i < n; i++) same = !strcmp(listen[i], wp->listen[i]);
    if (!same) lb_log(ctx, LB_LOG_WARN, "listen changed: takes effect on restart (still serving the old addresses)");
    drop_staged(wp);
    wp->staged = c;
    wp->staged_ssl = ssl;
    return 0;
fail:
    wsp_conf_free(c);
    free(c);
    return -1;
}

/* Step 2: swap the staged settings in, or drop them.  Open sockets keep
 * their TLS session (each SSL holds a reference to its context). */
static void ws_reload_done(struct lb_plugin_ctx *ctx, bool commit)
{
    struct wsp *wp = lb_plugin_data(ctx);
    if (!wp || !wp->staged) return;
    if (!commit) { drop_staged(wp); return; }
    wsp_conf_free(&wp->c);
    wp->c = *wp->staged;
    free(wp->staged);
    wp->staged = NULL;
    if (wp->staged_ssl) {
        SSL_CTX_free(wp->ssl);
        wp->ssl = wp->staged_ssl;
        wp->staged_ssl = NULL;
        tls_note_server_cert(ctx, wp->ssl, wp->cert_subject, sizeof wp->cert_subject, wp->cert_not_after,
                             sizeof wp->cert_not_after);
        lb_log(ctx, LB_LOG_INFO, "certificates reloaded (%s, valid until %s); open connections keep theirs",
               wp->c.keys.cert, wp->cert_not_after);
    }
    wp->n.reloads++;
    lb_log(ctx, LB_LOG_INFO, "settings reloaded; established connections keep theirs where they were agreed");
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .size = sizeof(struct lb_plugin),
    .name = "websocket",
    .version = PACKAGE_VERSION,
    .load = ws_load,
    .unload = ws_unload,
    .reload = ws_reload,
    .reload_done = ws_reload_done,
};
