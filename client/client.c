/*
 * liblexbus: connection, registration, calls, events, reconnect.
 * See include/lexbus/client.h for the contract.
 */
#include "config.h"
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <lexbus/client.h>
#include <lexbus/protocol.h>

#define DEFAULT_URL "unix:" LB_DEFAULT_SOCKET
#define DEFAULT_TIMEOUT_MS 30000u
#define REGISTER_TIMEOUT_MS 5000u

struct method { char *name; lexbus_method_fn fn; void *ud; struct method *next; };
struct sub { char *pattern; lexbus_event_fn fn; void *ud; struct sub *next; };

/* A call or an acknowledged emit waiting for the bus. */
struct pending {
    char id[32];
    struct lexbus_client *c;
    lexbus_result_fn result_cb;
    lexbus_ack_fn ack_cb;
    void *ud;
    struct event *timer;
    struct pending *next;
};

struct lexbus_reply {
    struct lexbus_client *c;
    char *id;
    char *caller;
    json_t *context;
    unsigned long long generation;   /* connection the call came in on */
};

struct lexbus_client {
    struct event_base *base;
    bool own_base;
    char *path;                  /* unix socket, or NULL for tls */
    char *host, *port;           /* tls:// */
    SSL_CTX *ssl_ctx;
    char *service;
    char *token;
    bool reconnect;
    unsigned backoff_base, backoff_max, attempt;
    size_t max_frame;
    struct bufferevent *bev;
    bool ready, stopped;
    unsigned long long generation;
    unsigned long long seq;
    unsigned heartbeat_ms;
    struct event *retry_timer, *heartbeat_timer;
    struct method *methods;
    struct sub *subs;
    struct pending *pending;
    lexbus_state_fn state_cb;
    void *state_ud;
};

static void set_err(struct lexbus_error *e, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(struct lexbus_error *e, const char *code, const char *fmt, ...)
{
    va_list ap;
    snprintf(e->code, sizeof e->code, "%s", code);
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

unsigned lexbus_backoff_ms(unsigned base, unsigned max, unsigned attempt, unsigned random)
{
    unsigned long long d = base ? base : 1;
    for (unsigned i = 0; i < attempt && d < max; i++) d *= 2;
    if (d > max) d = max;
    /* Jitter in [0.5, 1.0]: clients that lost the bus together do not all
     * come back in the same millisecond. */
    return (unsigned)(d / 2 + (d / 2) * (random % 1001) / 1000);
}

/* ---- sending -------------------------------------------------------- */

static int send_json(struct lexbus_client *c, json_t *msg)
{
    if (!c->bev) return -1;
    char *body = json_dumps(msg, JSON_COMPACT);
    if (!body) return -1;
    size_t n = strlen(body);
    uint32_t be = htonl((uint32_t)n);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int rc = evbuffer_add(out, &be, 4) || evbuffer_add(out, body, n) ? -1 : 0;
    free(body);
    return rc;
}

static void next_id(struct lexbus_client *c, char *buf, size_t n)
{
    snprintf(buf, n, "c%ld-%llu", (long)getpid(), ++c->seq);
}

/* ---- pending calls -------------------------------------------------- */

static struct pending *pending_take(struct lexbus_client *c, const char *id)
{
    for (struct pending **pp = &c->pending; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, id) == 0) {
            struct pending *p = *pp;
            *pp = p->next;
            return p;
        }
    }
    return NULL;
}

static void pending_settle(struct pending *p, const struct lexbus_error *err, json_t *result, long delivered)
{
    if (p->timer) event_free(p->timer);
    if (p->result_cb) p->result_cb(p->c, err, result, p->ud);
    else if (p->ack_cb) p->ack_cb(p->c, err, delivered, p->ud);
    free(p);
}

static void fail_all(struct lexbus_client *c, const char *code, const char *msg)
{
    struct lexbus_error e;
    set_err(&e, code, "%s", msg);
    while (c->pending) {
        struct pending *p = c->pending;
        c->pending = p->next;
        pending_settle(p, &e, NULL, -1);
    }
}

static void pending_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct pending *p = arg;
    struct lexbus_client *c = p->c;
    pending_take(c, p->id);
    struct lexbus_error e;
    set_err(&e, LB_E_TIMEOUT, "no answer from the bus within the timeout");
    pending_settle(p, &e, NULL, -1);
}

static struct pending *pending_new(struct lexbus_client *c, unsigned timeout_ms)
{
    struct pending *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->c = c;
    next_id(c, p->id, sizeof p->id);
    p->timer = evtimer_new(c->base, pending_timeout_cb, p);
    struct timeval tv = { (time_t)(timeout_ms / 1000), (suseconds_t)((timeout_ms % 1000) * 1000) };
    evtimer_add(p->timer, &tv);
    p->next = c->pending;
    c->pending = p;
    return p;
}

/* ---- connection ----------------------------------------------------- */

static void schedule_reconnect(struct lexbus_client *c);
static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

static void notify_state(struct lexbus_client *c, bool ready, const struct lexbus_error *why)
{
    if (c->state_cb) c->state_cb(c, ready, why, c->state_ud);
}

static void drop_connection(struct lexbus_client *c, const char *why)
{
    bool was_ready = c->ready;
    if (c->bev) { bufferevent_free(c->bev); c->bev = NULL; }
    c->ready = false;
    c->generation++;
    if (c->heartbeat_timer) evtimer_del(c->heartbeat_timer);
    fail_all(c, LB_E_CONNECTION_LOST, why);
    if (was_ready || !c->reconnect) {
        struct lexbus_error e;
        set_err(&e, LB_E_CONNECTION_LOST, "%s", why);
        notify_state(c, false, &e);
    }
    if (c->reconnect && !c->stopped) schedule_reconnect(c);
}

static int send_register(struct lexbus_client *c)
{
    json_t *m = json_pack("{s:s,s:s,s:s}", "type", "REGISTER", "serviceName", c->service, "version", PACKAGE_VERSION);
    json_t *methods = json_array(), *subs = json_array();
    for (struct method *x = c->methods; x; x = x->next) json_array_append_new(methods, json_string(x->name));
    for (struct sub *s = c->subs; s; s = s->next) json_array_append_new(subs, json_string(s->pattern));
    char host[128] = "";
    gethostname(host, sizeof host - 1);
    json_object_set_new(m, "methods", methods);
    if (json_array_size(subs)) json_object_set_new(m, "subscribe", subs);
    else json_decref(subs);
    json_object_set_new(m, "metadata", json_pack("{s:I,s:s}", "pid", (json_int_t)getpid(), "hostname", host));
    if (c->token) json_object_set_new(m, "token", json_string(c->token));
    int rc = send_json(c, m);
    json_decref(m);
    return rc;
}

static int open_tls(struct lexbus_client *c)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
    /* Resolution blocks briefly; numeric hosts and localhost do not. */
    if (getaddrinfo(c->host, c->port, &hints, &ai) != 0 || !ai) return -1;
    SSL *ssl = SSL_new(c->ssl_ctx);
    if (!ssl) { freeaddrinfo(ai); return -1; }
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    unsigned char tmp[16];
    bool is_ip = inet_pton(AF_INET, c->host, tmp) == 1 || inet_pton(AF_INET6, c->host, tmp) == 1;
    if (is_ip) X509_VERIFY_PARAM_set1_ip_asc(vp, c->host);
    else { SSL_set_tlsext_host_name(ssl, c->host); X509_VERIFY_PARAM_set1_host(vp, c->host, 0); }
    c->bev = bufferevent_openssl_socket_new(c->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) { SSL_free(ssl); freeaddrinfo(ai); return -1; }
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    int rc = bufferevent_socket_connect(c->bev, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc != 0) { bufferevent_free(c->bev); c->bev = NULL; return -1; }
    return 0;
}

static int open_socket(struct lexbus_client *c)
{
    if (!c->path) return open_tls(c);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", c->path);
    c->bev = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) return -1;
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&sun, sizeof sun) != 0) {
        bufferevent_free(c->bev);
        c->bev = NULL;
        return -1;
    }
    return 0;
}

/* tls://host:port or tls://[v6]:port; builds the client TLS context. */
static int setup_tls(struct lexbus_client *c, const char *hostport, const struct lexbus_options *o)
{
    const char *colon;
    if (hostport[0] == '[') {
        const char *end = strchr(hostport, ']');
        if (!end || end[1] != ':') return -1;
        c->host = strndup(hostport + 1, (size_t)(end - hostport - 1));
        colon = end + 1;
    } else {
        colon = strrchr(hostport, ':');
        if (!colon || colon == hostport) return -1;
        c->host = strndup(hostport, (size_t)(colon - hostport));
    }
    c->port = strdup(colon + 1);
    if (!c->port[0] || strspn(c->port, "0123456789") != strlen(c->port)) return -1;
    c->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ssl_ctx) return -1;
    SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
    if (o->tls_ca ? SSL_CTX_load_verify_locations(c->ssl_ctx, o->tls_ca, NULL) != 1
                  : SSL_CTX_set_default_verify_paths(c->ssl_ctx) != 1) {
        fprintf(stderr, "liblexbus: cannot load CA %s\n", o->tls_ca ? o->tls_ca : "(system)");
        return -1;
    }
    if (o->tls_cert && (SSL_CTX_use_certificate_chain_file(c->ssl_ctx, o->tls_cert) != 1 ||
                        SSL_CTX_use_PrivateKey_file(c->ssl_ctx, o->tls_key ? o->tls_key : o->tls_cert, SSL_FILETYPE_PEM) != 1)) {
        fprintf(stderr, "liblexbus: cannot load client certificate %s / key %s\n", o->tls_cert,
                o->tls_key ? o->tls_key : o->tls_cert);
        return -1;
    }
    if (o->tls_insecure) {
        fprintf(stderr, "liblexbus: WARNING: --insecure: the server's certificate is NOT verified; "
                        "anyone on the path can impersonate the bus\n");
        SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
    }
    return 0;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct lexbus_client *c = arg;
    if (c->stopped || c->bev) return;
    if (open_socket(c) != 0) schedule_reconnect(c);
}

static void schedule_reconnect(struct lexbus_client *c)
{
    unsigned ms = lexbus_backoff_ms(c->backoff_base, c->backoff_max, c->attempt++, (unsigned)rand());
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    evtimer_add(c->retry_timer, &tv);
}

static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct lexbus_client *c = arg;
    if (!c->ready) return;
    json_t *m = json_pack("{s:s,s:s,s:I}", "type", "HEARTBEAT", "from", c->service, "timestamp",
                          (json_int_t)time(NULL) * 1000);
    send_json(c, m);
    json_decref(m);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct lexbus_client *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        c->attempt = 0;
        send_register(c);
        return;
    }
    char why[200];
    unsigned long tls_err = c->ssl_ctx ? ERR_get_error() : 0;
    if (tls_err) {
        char e[160];
        ERR_error_string_n(tls_err, e, sizeof e);
        snprintf(why, sizeof why, "TLS: %s", e);
        ERR_clear_error();
    } else {
        snprintf(why, sizeof why, "%s", (what & BEV_EVENT_EOF) ? "the bus closed the connection"
                 : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    }
    drop_connection(c, why);
}

/* ---- inbound messages ------------------------------------------------ */

static void error_from(struct lexbus_error *e, json_t *err)
{
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    set_err(e, code ? code : LB_E_EXECUTION_FAILED, "%s", msg ? msg : "error without a message");
}

static void handle_call(struct lexbus_client *c, json_t *m)
{
    const char *id = json_string_value(json_object_get(m, "id"));
    const char *method = json_string_value(json_object_get(m, "method"));
    const char *from = json_string_value(json_object_get(m, "from"));
    if (!id || !method) return;
    struct lexbus_reply *r = calloc(1, sizeof *r);
    if (!r) return;
    r->c = c;
    r->id = strdup(id);
    r->caller = from ? strdup(from) : NULL;
    r->context = json_incref(json_object_get(m, "context"));
    r->generation = c->generation;
    for (struct method *x = c->methods; x; x = x->next) {
        if (strcmp(x->name, method) == 0) {
            x->fn(c, method, json_object_get(m, "params"), r, x->ud);
            return;
        }
    }
    char msg[200];
    snprintf(msg, sizeof msg, "service '%s' has no method '%s'", c->service, method);
    lexbus_reply_error(r, LB_E_METHOD_NOT_FOUND, msg);
}

static void handle_event(struct lexbus_client *c, json_t *m)
{
    const char *event = json_string_value(json_object_get(m, "event"));
    const char *from = json_string_value(json_object_get(m, "from"));
    if (!event) return;
    for (struct sub *s = c->subs; s; s = s->next) {
        /* The bus already matched; a client with several patterns hands the
         * event to the first handler whose pattern matches it. */
        const char *p = s->pattern, *e = event;
        bool ok = true;
        while (*p && ok) {
            if (p[0] == '>' && !p[1]) { ok = *e != 0; p++; e += strlen(e); break; }
            size_t pl = strcspn(p, ":"), el = strcspn(e, ":");
            if (!(pl == 1 && p[0] == '*') && (pl != el || strncmp(p, e, pl) != 0)) ok = false;
            p += pl + (p[pl] == ':');
            e += el + (e[el] == ':');
            if (!*p && *e) ok = false;
        }
        if (ok && !*e) {
            s->fn(c, event, from ? from : "", json_object_get(m, "payload"), s->ud);
            return;
        }
    }
}

static void dispatch(struct lexbus_client *c, json_t *m)
{
    const char *type = json_string_value(json_object_get(m, "type"));
    const char *id = json_string_value(json_object_get(m, "id"));
    if (!type) return;
    if (!strcmp(type, "REGISTER_ACK")) {
        c->ready = true;
        json_int_t hb = json_integer_value(json_object_get(m, "heartbeatInterval"));
        c->heartbeat_ms = hb > 0 ? (unsigned)hb : 30000;
        struct timeval tv = { (time_t)(c->heartbeat_ms / 1000), (suseconds_t)((c->heartbeat_ms % 1000) * 1000) };
        evtimer_add(c->heartbeat_timer, &tv);
        notify_state(c, true, NULL);
    } else if (!strcmp(type, "CALL")) {
        handle_call(c, m);
    } else if (!strcmp(type, "EVENT")) {
        handle_event(c, m);
    } else if (!strcmp(type, "RESPONSE") || !strcmp(type, "ACK") || !strcmp(type, "HEARTBEAT") ||
               !strcmp(type, "ERROR")) {
        struct pending *p = id ? pending_take(c, id) : NULL;
        if (!p) {
            if (!strcmp(type, "ERROR") && !c->ready) {
                /* Refused at registration: no point in retrying as is. */
                struct lexbus_error e;
                error_from(&e, json_object_get(m, "error"));
                c->reconnect = false;
                notify_state(c, false, &e);
            }
            return;
        }
        struct lexbus_error e;
        if (!strcmp(type, "ERROR") || (!strcmp(type, "RESPONSE") &&
                                       json_string_value(json_object_get(m, "status")) &&
                                       !strcmp(json_string_value(json_object_get(m, "status")), "error"))) {
            error_from(&e, json_object_get(m, "error"));
            pending_settle(p, &e, NULL, -1);
        } else if (!strcmp(type, "ACK")) {
            pending_settle(p, NULL, NULL, (long)json_integer_value(json_object_get(m, "delivered")));
        } else {
            pending_settle(p, NULL, json_object_get(m, "data"), 0);
        }
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct lexbus_client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    unsigned long long gen = c->generation;
    while (evbuffer_get_length(in) >= 4 && c->generation == gen) {
        uint32_t n;
        evbuffer_copyout(in, &n, 4);
        n = ntohl(n);
        if (n == 0 || n > c->max_frame) {
            drop_connection(c, "the bus sent a frame with a bad length");
            return;
        }
        if (evbuffer_get_length(in) < 4 + (size_t)n) break;
        const char *p = (const char *)evbuffer_pullup(in, 4 + (ssize_t)n);
        json_error_t je;
        json_t *m = json_loadb(p + 4, n, 0, &je);
        evbuffer_drain(in, 4 + (size_t)n);
        if (!m) continue;   /* not ours to fix; the bus validates what it forwards */
        dispatch(c, m);
        json_decref(m);
    }
}

/* ---- public API ------------------------------------------------------ */

struct lexbus_client *lexbus_new(struct event_base *base, const struct lexbus_options *opt)
{
    static unsigned long long n;
    struct lexbus_options o = { 0 };
    if (opt) o = *opt;
    const char *url = o.url ? o.url : getenv("LEXBUS_URL");
    if (!url || !*url) url = DEFAULT_URL;
    bool tls = strncmp(url, "tls://", 6) == 0;
    if (!tls && (strncmp(url, "unix:", 5) != 0 || !url[5] ||
                 strlen(url + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path))) {
        fprintf(stderr, "liblexbus: unsupported URL '%s' (use unix:/path or tls://host:port)\n", url);
        return NULL;
    }
    struct lexbus_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->base = base;
    if (tls) {
        if (setup_tls(c, url + 6, &o) != 0) {
            fprintf(stderr, "liblexbus: bad tls:// URL or TLS settings: '%s'\n", url);
            free(c->host);
            free(c->port);
            SSL_CTX_free(c->ssl_ctx);
            free(c);
            return NULL;
        }
    } else {
        c->path = strdup(url + 5);
    }
    char gen[64];
    snprintf(gen, sizeof gen, "client-%ld-%llu", (long)getpid(), ++n);
    c->service = strdup(o.service ? o.service : gen);
    c->token = o.token ? strdup(o.token) : NULL;
    c->reconnect = !o.no_reconnect;
    c->backoff_base = o.reconnect_base_ms ? o.reconnect_base_ms : 100;
    c->backoff_max = o.reconnect_max_ms ? o.reconnect_max_ms : 30000;
    c->max_frame = o.max_frame ? o.max_frame : 16u * 1024 * 1024;
    c->retry_timer = evtimer_new(base, retry_cb, c);
    c->heartbeat_timer = event_new(base, -1, EV_PERSIST, heartbeat_cb, c);
    srand((unsigned)(time(NULL) ^ getpid()));
    return c;
}

int lexbus_connect(struct lexbus_client *c)
{
    c->stopped = false;
    if (c->bev) return 0;
    if (open_socket(c) != 0) {
        if (!c->reconnect) return -1;
        schedule_reconnect(c);
    }
    return 0;
}

void lexbus_disconnect(struct lexbus_client *c)
{
    c->stopped = true;
    evtimer_del(c->retry_timer);
    evtimer_del(c->heartbeat_timer);
    if (c->bev) { bufferevent_free(c->bev); c->bev = NULL; }
    c->ready = false;
    c->generation++;
    fail_all(c, LB_E_NOT_CONNECTED, "the client disconnected");
}

void lexbus_free(struct lexbus_client *c)
{
    if (!c) return;
    lexbus_disconnect(c);
    event_free(c->retry_timer);
    event_free(c->heartbeat_timer);
    while (c->methods) { struct method *m = c->methods; c->methods = m->next; free(m->name); free(m); }
    while (c->subs) { struct sub *s = c->subs; c->subs = s->next; free(s->pattern); free(s); }
    if (c->own_base) event_base_free(c->base);
    SSL_CTX_free(c->ssl_ctx);
    free(c->host);
    free(c->port);
    free(c->path);
    free(c->service);
    free(c->token);
    free(c);
}

bool lexbus_is_ready(const struct lexbus_client *c) { return c->ready; }
const char *lexbus_service(const struct lexbus_client *c) { return c->service; }
struct event_base *lexbus_base(const struct lexbus_client *c) { return c->base; }
void lexbus_on_state(struct lexbus_client *c, lexbus_state_fn fn, void *ud) { c->state_cb = fn; c->state_ud = ud; }

int lexbus_add_method(struct lexbus_client *c, const char *method, lexbus_method_fn fn, void *ud)
{
    struct method *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(method))) { free(m); return -1; }
    m->fn = fn;
    m->ud = ud;
    m->next = c->methods;
    c->methods = m;
    return c->ready ? send_register(c) : 0;   /* the bus learns the new list */
}

int lexbus_on(struct lexbus_client *c, const char *pattern, lexbus_event_fn fn, void *ud)
{
    struct sub *s = calloc(1, sizeof *s);
    if (!s || !(s->pattern = strdup(pattern))) { free(s); return -1; }
    s->fn = fn;
    s->ud = ud;
    struct sub **tail = &c->subs;   /* keep subscription order: first match wins */
    while (*tail) tail = &(*tail)->next;
    *tail = s;
    if (!c->ready) return 0;
    json_t *m = json_pack("{s:s,s:[s]}", "type", "SUBSCRIBE", "events", pattern);
    int rc = send_json(c, m);
    json_decref(m);
    return rc;
}

static void reply_send(struct lexbus_reply *r, json_t *body)
{
    /* A reply for a connection that has since dropped would answer a call
     * the bus has already failed: drop it. */
    if (r->c->ready && r->generation == r->c->generation) {
        json_object_set_new(body, "type", json_string("RESPONSE"));
        json_object_set_new(body, "id", json_string(r->id));
        json_object_set_new(body, "from", json_string(r->c->service));
        if (r->caller) json_object_set_new(body, "to", json_string(r->caller));
        if (r->context) json_object_set(body, "context", r->context);
        send_json(r->c, body);
    }
    json_decref(body);
    json_decref(r->context);
    free(r->id);
    free(r->caller);
    free(r);
}

void lexbus_reply_ok(struct lexbus_reply *r, json_t *result)
{
    json_t *b = json_object();
    json_object_set_new(b, "status", json_string("success"));
    json_object_set_new(b, "data", result ? result : json_null());
    reply_send(r, b);
}

void lexbus_reply_error(struct lexbus_reply *r, const char *code, const char *message)
{
    json_t *b = json_object();
    json_object_set_new(b, "status", json_string("error"));
    json_object_set_new(b, "error", json_pack("{s:s,s:s}", "code", code, "message", message ? message : ""));
    reply_send(r, b);
}

json_t *lexbus_reply_context(const struct lexbus_reply *r) { return r->context; }

static json_t *make_context(struct lexbus_client *c, const struct lexbus_reply *parent, unsigned timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_int_t now = (json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    json_t *pc = parent ? parent->context : NULL;
    if (pc && json_is_object(pc)) {
        /* Nested: same root and deadline, one more hop in the chain. */
        json_t *ctx = json_deep_copy(pc);
        json_t *chain = json_object_get(ctx, "chain");
        if (!json_is_array(chain)) { chain = json_array(); json_object_set_new(ctx, "chain", chain); }
        json_array_append_new(chain, json_string(c->service));
        json_object_set_new(ctx, "depth", json_integer(json_integer_value(json_object_get(pc, "depth")) + 1));
        return ctx;
    }
    char root[64];
    snprintf(root, sizeof root, "root-%lld-%ld-%llu", (long long)now, (long)getpid(), ++c->seq);
    return json_pack("{s:s,s:[s],s:i,s:I}", "root", root, "chain", c->service, "depth", 1, "deadline",
                     now + (json_int_t)timeout_ms);
}

int lexbus_call(struct lexbus_client *c, const char *service, const char *method, json_t *params,
                unsigned timeout_ms, const struct lexbus_reply *parent, lexbus_result_fn cb, void *ud)
{
    if (!c->ready) return -1;
    if (!timeout_ms) timeout_ms = DEFAULT_TIMEOUT_MS;
    struct pending *p = pending_new(c, timeout_ms + 1000);   /* the bus answers TIMEOUT first */
    if (!p) return -1;
    p->result_cb = cb;
    p->ud = ud;
    json_t *m = json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "CALL", "id", p->id, "from", c->service, "to", service,
                          "method", method);
    json_object_set(m, "params", params ? params : json_object());
    if (!params) json_decref(json_object_get(m, "params"));
    json_object_set_new(m, "context", make_context(c, parent, timeout_ms));
    if (c->token) json_object_set_new(m, "token", json_string(c->token));
    int rc = send_json(c, m);
    json_decref(m);
    if (rc) {
        pending_take(c, p->id);
        event_free(p->timer);
        free(p);
    }
    return rc;
}

int lexbus_emit(struct lexbus_client *c, const char *event, json_t *payload, const char *to,
                lexbus_ack_fn cb, void *ud)
{
    if (!c->ready) return -1;
    json_t *m = json_pack("{s:s,s:s,s:s}", "type", "EMIT", "event", event, "to", to ? to : "broadcast");
    json_object_set(m, "payload", payload ? payload : json_null());
    if (c->token) json_object_set_new(m, "token", json_string(c->token));
    struct pending *p = NULL;
    if (cb) {
        p = pending_new(c, DEFAULT_TIMEOUT_MS);
        if (!p) { json_decref(m); return -1; }
        p->ack_cb = cb;
        p->ud = ud;
        json_object_set_new(m, "id", json_string(p->id));
        json_object_set_new(m, "ack", json_true());
    }
    int rc = send_json(c, m);
    json_decref(m);
    if (rc && p) { pending_take(c, p->id); event_free(p->timer); free(p); }
    return rc;
}

/* ---- blocking helpers ------------------------------------------------- */

struct wait { bool done; int rc; json_t *result; long delivered; struct lexbus_error err; };

static void wait_state(struct lexbus_client *c, bool ready, const struct lexbus_error *why, void *ud)
{
    struct wait *w = ud;
    w->done = true;
    w->rc = ready ? 0 : -1;
    if (why) w->err = *why;
    event_base_loopbreak(c->base);
}

static void run_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    *(bool *)arg = true;
}

/* Runs the loop until w->done or timeout_ms (0: no limit).  The timer is
 * ours and freed here: nothing is left behind to stop a later loop. */
static int run_until(struct lexbus_client *c, struct wait *w, unsigned timeout_ms)
{
    bool timed_out = false;
    struct event *t = NULL;
    if (timeout_ms) {
        t = evtimer_new(c->base, run_timeout_cb, &timed_out);
        struct timeval tv = { (time_t)(timeout_ms / 1000), (suseconds_t)((timeout_ms % 1000) * 1000) };
        evtimer_add(t, &tv);
    }
    while (!w->done && !timed_out)
        if (event_base_loop(c->base, EVLOOP_ONCE) < 0) break;
    if (t) event_free(t);
    return w->done ? 0 : -1;
}

struct lexbus_client *lexbus_connect_blocking(const struct lexbus_options *opt, unsigned timeout_ms,
                                              struct lexbus_error *err)
{
    struct event_base *base = event_base_new();
    struct lexbus_options o = { 0 };
    if (opt) o = *opt;
    o.no_reconnect = true;   /* fail fast: the caller decides whether to retry */
    struct lexbus_client *c = base ? lexbus_new(base, &o) : NULL;
    if (!c) {
        if (base) event_base_free(base);
        set_err(err, LB_E_NOT_CONNECTED, "bad URL or out of memory");
        return NULL;
    }
    c->own_base = true;
    struct wait w = { 0 };
    lexbus_on_state(c, wait_state, &w);
    if (lexbus_connect(c) != 0) {
        set_err(err, LB_E_CONNECTION_LOST, "cannot connect to %s%s", c->path ? "unix:" : "tls://", c->path ? c->path : c->host);
        lexbus_free(c);
        return NULL;
    }
    /* A refused connect shows up as an event: catch it as a state change. */
    if (run_until(c, &w, timeout_ms ? timeout_ms : REGISTER_TIMEOUT_MS) != 0 || w.rc != 0) {
        if (w.done && w.err.code[0]) *err = w.err;
        else if (!c->bev) set_err(err, LB_E_CONNECTION_LOST, "cannot connect to %s: is lexbusd running?", c->path ? c->path : c->host);
        else set_err(err, LB_E_TIMEOUT, "no REGISTER_ACK from the bus at %s", c->path ? c->path : c->host);
        lexbus_free(c);
        return NULL;
    }
    lexbus_on_state(c, NULL, NULL);
    c->reconnect = opt ? !opt->no_reconnect : true;
    return c;
}

static void wait_result(struct lexbus_client *c, const struct lexbus_error *err, json_t *result, void *ud)
{
    struct wait *w = ud;
    w->done = true;
    if (err) { w->rc = -1; w->err = *err; }
    else { w->rc = 0; w->result = json_incref(result ? result : json_null()); }
    event_base_loopbreak(c->base);
}

int lexbus_call_blocking(struct lexbus_client *c, const char *service, const char *method, json_t *params,
                         unsigned timeout_ms, json_t **result, struct lexbus_error *err)
{
    struct wait w = { 0 };
    if (lexbus_call(c, service, method, params, timeout_ms, NULL, wait_result, &w) != 0) {
        set_err(err, LB_E_NOT_CONNECTED, "not connected to the bus");
        return -1;
    }
    run_until(c, &w, 0);
    if (w.rc) { *err = w.err; return -1; }
    *result = w.result;
    return 0;
}

static void wait_ack(struct lexbus_client *c, const struct lexbus_error *err, long delivered, void *ud)
{
    struct wait *w = ud;
    w->done = true;
    if (err) { w->rc = -1; w->err = *err; }
    else w->delivered = delivered;
    event_base_loopbreak(c->base);
}

int lexbus_emit_blocking(struct lexbus_client *c, const char *event, json_t *payload, const char *to,
                         long *delivered, unsigned timeout_ms, struct lexbus_error *err)
{
    struct wait w = { 0 };
    /* Without an ack asked for, a HEARTBEAT probe right behind the EMIT
     * tells us the bus has routed it (frames are handled in order). */
    if (delivered) {
        if (lexbus_emit(c, event, payload, to, wait_ack, &w) != 0) goto not_connected;
    } else {
        if (lexbus_emit(c, event, payload, to, NULL, NULL) != 0) goto not_connected;
        struct pending *p = pending_new(c, timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS);
        if (!p) goto not_connected;
        p->ack_cb = wait_ack;
        p->ud = &w;
        json_t *hb = json_pack("{s:s,s:s,s:s}", "type", "HEARTBEAT", "id", p->id, "from", c->service);
        send_json(c, hb);
        json_decref(hb);
    }
    run_until(c, &w, 0);
    if (w.rc) { *err = w.err; return -1; }
    if (delivered) *delivered = w.delivered;
    return 0;
not_connected:
    set_err(err, LB_E_NOT_CONNECTED, "not connected to the bus");
    return -1;
}

int lexbus_run(struct lexbus_client *c) { return event_base_dispatch(c->base); }
void lexbus_stop(struct lexbus_client *c) { event_base_loopbreak(c->base); }
