/*
 * [plugin websocket]: its keys (read the same way at load and reload),
 * the plugin's life (load, unload, the two-step reload, the drain), the
 * listeners, and what it reports (counters and stats).
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
#include "wsp.h"

#define NAMES_PREFIX "names."
#define MAX_DEMO (1024 * 1024)
#define SESSION_ID_CTX "lexbus websocket"

static void conf_free(struct wsp_conf *c)
{
    for (size_t i = 0; i < c->n_origins; i++) free(c->origins[i]);
    for (size_t i = 0; i < c->n_names; i++) { free(c->names[i].from); free(c->names[i].to); }
    free(c->names);
    free(c->subscribe_json);
    free(c->demo_page);
    memset(c, 0, sizeof *c);
}

/* Splits a comma/space separated value into words (in a copy). */
static size_t split_words(const char *v, char *buf, size_t buflen, char **words, size_t max)
{
    snprintf(buf, buflen, "%s", v);
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        if (n == max) return max + 1;
        words[n++] = t;
    }
    return n;
}

static int fail_at(struct lb_plugin_ctx *ctx, const char *key, const char *fmt, const char *arg)
{
    char where[512], msg[512];
    snprintf(msg, sizeof msg, fmt, arg);
    lb_plugin_fail(ctx, "%s: %s: %s", lb_conf_where(ctx, key, where, sizeof where), key, msg);
    return -1;
}

static bool has_key(struct lb_plugin_ctx *ctx, const char *key)
{
    const char *const *keys;
    size_t n = lb_conf_keys(ctx, &keys);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(keys[i], key)) return true;
    return false;
}

static int read_origins(struct lb_plugin_ctx *ctx, struct wsp_conf *c)
{
    const char *v;
    if (lb_conf_str(ctx, "allowed_origins", NULL, &v) < 0) return -1;
    if (!v) {
        /* Browsers on other sites may not drive the bus in production. */
        if (lb_bus_production(ctx)) c->same_origin = true;
        else c->origins_any = true;
        return 0;
    }
    const char *p = v;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t') p++;
        if (!*p) break;
        const char *s = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t') p++;
        size_t n = (size_t)(p - s);
        if (n == 1 && *s == '*') { c->origins_any = true; continue; }
        if (n == 11 && !strncmp(s, "same-origin", 11)) { c->same_origin = true; continue; }
        const char *sep = memmem(s, n, "://", 3);
        if (!sep || sep == s || memchr(sep + 3, '/', (size_t)(s + n - sep - 3)) || s + n == sep + 3)
            return fail_at(ctx, "allowed_origins", "'%s' is not *, same-origin or an origin such as https://app.example.com", v);
        if (c->n_origins == WSP_MAX_ORIGINS) return fail_at(ctx, "allowed_origins", "more than 32 origins in '%s'", v);
        c->origins[c->n_origins++] = wsp_strndup(s, n);
    }
    return 0;
}

static int read_names(struct lb_plugin_ctx *ctx, struct wsp_conf *c)
{
    const char *const *keys;
    size_t n = lb_conf_keys(ctx, &keys);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(keys[i], NAMES_PREFIX, strlen(NAMES_PREFIX))) continue;
        const char *from = keys[i] + strlen(NAMES_PREFIX), *to;
        if (lb_conf_str(ctx, keys[i], NULL, &to) < 0) return -1;
        if (!lb_service_name_valid(from, strlen(from)))
            return fail_at(ctx, keys[i], "'%s' after names. must be a namespace name (/ipc/<name>): A-Z a-z 0-9 _ . - / @", from);
        if (!lb_service_name_valid(to, strlen(to)))
            return fail_at(ctx, keys[i], "'%s' is not a service name (1-128 characters of A-Z a-z 0-9 _ . - / @)", to);
        c->names = wsp_realloc(c->names, (c->n_names + 1) * sizeof *c->names);
        c->names[c->n_names++] = (struct name_map){ wsp_strndup(from, strlen(from)), wsp_strndup(to, strlen(to)) };
    }
    return 0;
}

static int read_subscribe(struct lb_plugin_ctx *ctx, struct wsp_conf *c)
{
    const char *v;
    char buf[4096], *w[WSP_MAX_SUBSCRIBE + 1];
    if (lb_conf_str(ctx, "subscribe", ">", &v) < 0) return -1;
    size_t n = split_words(v, buf, sizeof buf, w, WSP_MAX_SUBSCRIBE);
    if (n > WSP_MAX_SUBSCRIBE) return fail_at(ctx, "subscribe", "more than 32 patterns in '%s'", v);
    struct lb_jw *j = lb_jw_new();
    lb_jw_raw(j, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (!lb_pattern_valid(w[i], strlen(w[i]))) {
            lb_jw_free(j);
            return fail_at(ctx, "subscribe", "'%s' is not an event pattern (segments separated by ':', * and a final >)", w[i]);
        }
        if (i) lb_jw_raw(j, ",", 1);
        lb_jw_str(j, w[i], strlen(w[i]));
    }
    lb_jw_raw(j, "]", 1);
    size_t len;
    const char *text = lb_jw_data(j, &len);
    c->subscribe_json = wsp_strndup(text, len);
    lb_jw_free(j);
    return 0;
}

/* The demo page, read once (and again on reload). */
static int read_demo(struct lb_plugin_ctx *ctx, struct wsp_conf *c)
{
    const char *file;
    if (lb_conf_str(ctx, "demo_file", NULL, &file) < 0) return -1;
    if (!c->demo) return 0;
    const char *tries[3] = { file ? lb_conf_path(ctx, file) : NULL, LB_WEBDIR "/index.html", LB_SRC_WEBDIR "/index.html" };
    for (int i = file ? 0 : 1; i < 3; i++) {
        FILE *f = tries[i] ? fopen(tries[i], "rb") : NULL;
        if (!f) { if (file) break; continue; }
        char *buf = malloc(MAX_DEMO + 1);
        size_t n = buf ? fread(buf, 1, MAX_DEMO + 1, f) : 0;
        fclose(f);
        if (!buf || n > MAX_DEMO) {
            free(buf);
            return fail_at(ctx, "demo_file", "%s is larger than 1 MiB", tries[i]);
        }
        c->demo_page = buf;
        c->demo_len = n;
        return 0;
    }
    return fail_at(ctx, file ? "demo_file" : "demo", "demo = yes but the page %s cannot be read",
                   file ? tries[0] : LB_WEBDIR "/index.html");
}

static int check_path(struct lb_plugin_ctx *ctx, const char *key, const char *v)
{
    if (v[0] != '/' || strlen(v) > 256 || strpbrk(v, "?# \t"))
        return fail_at(ctx, key, "'%s' must be a path starting with / (no ? or #)", v);
    return 0;
}

/* TLS when cert and key are given (plugins/common/tls.c reads them and
 * the other TLS keys); the TLS keys alone are a mistake worth naming.
 * `pinned`: on reload, the require_client_cert in force. */
static int read_tls(struct lb_plugin_ctx *ctx, struct wsp_conf *c, const bool *pinned)
{
    static const char *const only_tls[] = { "ca", "require_client_cert", "min_protocol", "ciphers" };
    if (has_key(ctx, "cert") || has_key(ctx, "key")) {
        c->tls = true;
        return tls_keys_read(ctx, &c->keys, pinned);
    }
    for (size_t i = 0; i < sizeof only_tls / sizeof *only_tls; i++)
        if (has_key(ctx, only_tls[i]))
            return fail_at(ctx, only_tls[i], "%s", "is a TLS setting: give cert and key too (the listener speaks TLS "
                           "when both are set)");
    return 0;
}

static int read_limits(struct lb_plugin_ctx *ctx, struct wsp_conf *c)
{
    long long pings;
    if (lb_conf_int(ctx, "max_connections", 0, 0, 10000000, &c->max_connections) < 0 ||
        lb_conf_int(ctx, "max_handshaking", 256, 0, 10000000, &c->max_handshaking) < 0 ||
        lb_conf_int(ctx, "max_handshaking_per_address", 16, 0, 10000000, &c->max_per_addr) < 0 ||
        lb_conf_size(ctx, "max_header", 8192, &c->max_head) < 0 ||
        lb_conf_size(ctx, "max_payload", 1000000, &c->max_payload) < 0 ||
        lb_conf_size(ctx, "max_message", 0, &c->max_message) < 0 ||
        lb_conf_int(ctx, "max_pending", 1024, 1, 1000000, &c->max_pending) < 0 ||
        lb_conf_int(ctx, "max_namespaces", 32, 1, 1024, &c->max_namespaces) < 0 ||
        lb_conf_int(ctx, "max_ping_rate", 10, 1, 100000, &pings) < 0)
        return -1;
    c->max_pings_per_s = (unsigned)pings;
    if (c->max_head < 1024 || c->max_head > 1024 * 1024) return fail_at(ctx, "max_header", "%s", "must be 1K to 1M");
    if (c->max_payload < 1024 || c->max_payload > 64 * 1024 * 1024)
        return fail_at(ctx, "max_payload", "%s", "must be 1K to 64M");
    if (c->max_message && (c->max_message < 1024 || c->max_message > 1024 * 1024 * 1024))
        return fail_at(ctx, "max_message", "%s", "must be 1K to 1G (or 0: [bus] max_frame)");
    return 0;
}

static int read_timeouts(struct lb_plugin_ctx *ctx, struct wsp_conf *c)
{
    if (lb_conf_ms(ctx, "header_timeout", 10000, &c->header_timeout_ms) < 0 ||
        lb_conf_ms(ctx, "handshake_timeout", 10000, &c->handshake_timeout_ms) < 0 ||
        lb_conf_ms(ctx, "ping_interval", 25000, &c->ping_interval_ms) < 0 ||
        lb_conf_ms(ctx, "ping_timeout", 20000, &c->ping_timeout_ms) < 0 ||
        lb_conf_ms(ctx, "upgrade_timeout", 10000, &c->upgrade_timeout_ms) < 0)
        return -1;
    struct { const char *key; uint64_t v; } ms[] = {
        { "header_timeout", c->header_timeout_ms }, { "handshake_timeout", c->handshake_timeout_ms },
        { "ping_interval", c->ping_interval_ms }, { "ping_timeout", c->ping_timeout_ms },
        { "upgrade_timeout", c->upgrade_timeout_ms },
    };
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
        if (ms[i].v < 50 || ms[i].v > 3600 * 1000) return fail_at(ctx, ms[i].key, "%s", "must be 50ms to 1h");
    return 0;
}

static int read_conf(struct lb_plugin_ctx *ctx, struct wsp_conf *c, const bool *pinned)
{
    memset(c, 0, sizeof *c);
    if (lb_conf_bool(ctx, "lexbus", true, &c->lexbus) < 0 || lb_conf_str(ctx, "path", "/lexbus", &c->path) < 0 ||
        lb_conf_bool(ctx, "socketio", true, &c->socketio) < 0 ||
        lb_conf_str(ctx, "socketio_path", "/socket.io/", &c->sio_path) < 0 ||
        lb_conf_bool(ctx, "health", true, &c->health) < 0 || lb_conf_bool(ctx, "stats", true, &c->stats) < 0 ||
        lb_conf_bool(ctx, "metrics", true, &c->metrics) < 0 || lb_conf_bool(ctx, "demo", false, &c->demo) < 0 ||
        lb_conf_str(ctx, "prefix", "", &c->prefix) < 0 || read_limits(ctx, c) < 0 || read_timeouts(ctx, c) < 0)
        return -1;
    if (check_path(ctx, "path", c->path) || check_path(ctx, "socketio_path", c->sio_path)) return -1;
    c->sio_path_len = strlen(c->sio_path);
    if (c->sio_path_len > 1 && c->sio_path[c->sio_path_len - 1] == '/') c->sio_path_len--;
    if (*c->prefix && !lb_service_name_valid(c->prefix, strlen(c->prefix)))
        return fail_at(ctx, "prefix", "'%s' may only hold A-Z a-z 0-9 _ . - / @", c->prefix);
    if (read_origins(ctx, c) || read_names(ctx, c) || read_subscribe(ctx, c) || read_demo(ctx, c) ||
        read_tls(ctx, c, pinned))
        return -1;
    return 0;
}

uint64_t wsp_max_message(const struct wsp *wp)
{
    uint64_t m = lb_bus_max_frame(wp->ctx);
    return wp->c.max_message && wp->c.max_message < m ? wp->c.max_message : m;
}

/* ---- listeners ------------------------------------------------------ */

static int check_listen(struct lb_plugin_ctx *ctx, const char *const *listen, size_t n)
{
    if (n == 0 || n > WSP_MAX_LISTENERS) {
        lb_plugin_fail(ctx, "give 1 to %d 'listen = host:port' lines", WSP_MAX_LISTENERS);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        socklen_t sl;
        char where[512];
        if (net_parse_listen(listen[i], &ss, &sl)) {
            lb_plugin_fail(ctx, "%s: listen '%s' is not host:port with a numeric host (127.0.0.1:3010, [::1]:3010)",
                           lb_conf_where_nth(ctx, "listen", i, where, sizeof where), listen[i]);
            return -1;
        }
    }
    return 0;
}

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
        struct sockaddr_storage bound;
        socklen_t bl = sizeof bound;
        char where[64];
        if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &bl) == 0)
            net_format_addr((struct sockaddr *)&bound, where, sizeof where);
        else
            snprintf(where, sizeof where, "%s", listen[i]);
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

/* ---- the plugin's life ---------------------------------------------- */

static void on_drain(void *ud)
{
    struct wsp *wp = ud;
    wsp_drain(wp);
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
    if (ssl) tls_note_server_cert(ctx, ssl, wp->cert_subject, sizeof wp->cert_subject, wp->cert_not_after,
                                  sizeof wp->cert_not_after);
    return wp;
}

static int ws_load(struct lb_plugin_ctx *ctx)
{
    struct wsp_conf c;
    const char *const *listen;
    size_t n = lb_conf_list(ctx, "listen", &listen);
    if (read_conf(ctx, &c, NULL) < 0 || check_listen(ctx, listen, n) < 0) { conf_free(&c); return -1; }
    SSL_CTX *ssl = NULL;
    if (c.tls && !(ssl = tls_server_ctx(ctx, &c.keys, SESSION_ID_CTX))) { conf_free(&c); return -1; }
    bool authenticates = c.tls && c.keys.require_cert;
    if (lb_check_only(ctx)) {
        if (authenticates) lb_declare_authenticator(ctx);   /* -t checks production mode too */
        SSL_CTX_free(ssl);
        conf_free(&c);
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
    if (wp->staged) { conf_free(wp->staged); free(wp->staged); }
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
    conf_free(&wp->c);
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
    if (read_conf(ctx, c, wp && wp->c.tls ? &wp->authenticator : NULL) < 0 || check_listen(ctx, listen, n) < 0)
        goto fail;
    if (!wp) { conf_free(c); free(c); return 0; }
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
    conf_free(c);
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
    conf_free(&wp->c);
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
