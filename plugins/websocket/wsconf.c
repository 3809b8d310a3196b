/*
 * [plugin websocket]: its keys (wsconf.h), read the same way at load and
 * at reload, each wrong value named with its file and line.  Reads the
 * section only: applying it is websocket.c's.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "wsconf.h"

#define NAMES_PREFIX "names."
#define MAX_DEMO (1024 * 1024)

void wsp_conf_free(struct wsp_conf *c)
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

int wsp_conf_read(struct lb_plugin_ctx *ctx, struct wsp_conf *c, const bool *pinned)
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

/* ---- listen ---------------------------------------------------------- */

int wsp_listen_check(struct lb_plugin_ctx *ctx, const char *const *listen, size_t n)
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
