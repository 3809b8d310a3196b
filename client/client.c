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
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <lexbus/client.h>
#include <lexbus/protocol.h>
#include "codec_msgpack.h"
#include "envelope.h"
#include "names.h"
#include "jwtpart.h"
#include "wire.h"

#define DEFAULT_URL "unix:" LB_DEFAULT_SOCKET
#define DEFAULT_TIMEOUT_MS 30000u
#define REGISTER_TIMEOUT_MS 5000u
#define ID_PREFIX_LEN 16                 /* base64url characters: 96 random bits */

struct method { char *name; lexbus_method_fn fn; void *ud; struct method *next; };
struct sub { char *pattern; lexbus_event_fn fn; lexbus_raw_event_fn raw; void *ud; struct sub *next; };

/* A call or an acknowledged emit waiting for the bus. */
struct pending {
    char id[48];                 /* "c" + ID_PREFIX_LEN random characters + "-" + counter */
    struct lexbus_client *c;
    lexbus_result_fn result_cb;
    lexbus_ack_fn ack_cb;
    void *ud;
    struct event *timer;
    struct pending *next;
};

struct lexbus_reply {
    struct lexbus_client *c;
    char id[LB_MAX_ID + 1];
    char caller[LB_MAX_NAME + 1];    /* "" if the CALL named no sender */
    json_t *context;                 /* NULL if the CALL had none */
    unsigned long long generation;   /* connection the call came in on */
};

struct lexbus_client {
    struct event_base *base;
    bool own_base;
    char *path;                  /* unix socket, or NULL for tls */
    char *host, *port;           /* tls:// */
    SSL_CTX *ssl_ctx;
    struct addrinfo *addrs;      /* tls://: resolved at each connect attempt */
    const struct addrinfo *next_addr;   /* tried next if this one refuses */
    char *service;
    char *register_token;        /* sent with REGISTER: a session token */
    char *message_token;         /* sent with CALL and EMIT: any other token */
    bool reconnect;
    unsigned backoff_base, backoff_max, attempt;
    size_t max_frame;
    struct bufferevent *bev;
    bool ready, stopped;
    unsigned long long generation;
    char id_prefix[ID_PREFIX_LEN + 1];   /* random, per client: see next_id */
    unsigned long long seq;
    unsigned long long undecodable;      /* events dropped without an error handler to tell */
    unsigned heartbeat_ms;
    unsigned rand_state;         /* jitter; rand_r keeps the application's rand() untouched */
    struct event *retry_timer, *heartbeat_timer;
    struct method *methods;
    struct sub *subs;
    struct pending *pending;     /* oldest first: answers mostly come in order */
    struct pending **pending_tail;
    struct wbuf out;             /* scratch for outgoing frames, reused */
    bool msgpack;                /* frames go both ways as MessagePack */
    struct jw mp_out, mp_in;     /* their conversions, reused */
    int dispatching;             /* a callback that runs the loop reads frames of its own */
    lexbus_state_fn state_cb;
    void *state_ud;
    lexbus_error_fn error_cb;
    void *error_ud;
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

/* Queues one frame whose body is JSON text: as it is, or as MessagePack. */
static int queue_body(struct lexbus_client *c, const char *body, size_t n)
{
    if (c->msgpack) {
        char why[160];
        c->mp_out.len = 0;
        if (mp_from_json(body, n, &c->mp_out, UINT32_MAX, why, sizeof why) != MP_OK) return -1;
        body = c->mp_out.buf;
        n = c->mp_out.len;
    }
    uint32_t be = htonl((uint32_t)n);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    return evbuffer_add(out, &be, 4) || evbuffer_add(out, body, n) ? -1 : 0;
}

static int send_json(struct lexbus_client *c, json_t *msg)
{
    if (!c->bev) return -1;
    char *body = json_dumps(msg, JSON_COMPACT);
    if (!body) return -1;
    int rc = queue_body(c, body, strlen(body));
    free(body);
    return rc;
}

/* Queues the frame built in c->out (wb_begin ... wb_finish). */
static int send_frame(struct lexbus_client *c)
{
    long n = wb_finish(&c->out);
    if (!c->bev || n < 0) return -1;
    if (c->msgpack) return queue_body(c, c->out.p + 4, (size_t)n - 4);
    return evbuffer_add(bufferevent_get_output(c->bev), c->out.p, (size_t)n);
}

/* Message ids are a random prefix drawn once per client and a counter.
 * The bus refuses a CALL whose id is already in flight at the callee, so
 * predictable ids ("c<pid>-<n>", and pids are public in `lexbus
 * services`) let anyone send a victim's next ids first and have its calls
 * refused.  Returns 0, or -1 if the system has no randomness to give. */
static int draw_id_prefix(struct lexbus_client *c)
{
    static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char r[ID_PREFIX_LEN * 6 / 8];
    if (RAND_bytes(r, (int)sizeof r) != 1) return -1;
    for (size_t i = 0; i < ID_PREFIX_LEN; i++) {
        size_t bit = i * 6;   /* 6 bits per character, across byte boundaries */
        unsigned v = ((unsigned)r[bit / 8] << 8 | (bit / 8 + 1 < sizeof r ? r[bit / 8 + 1] : 0)) >> (10 - bit % 8);
        c->id_prefix[i] = b64url[v & 63];
    }
    c->id_prefix[ID_PREFIX_LEN] = 0;
    return 0;
}

static void next_id(struct lexbus_client *c, char *buf, size_t n)
{
    snprintf(buf, n, "c%s-%llu", c->id_prefix, ++c->seq);
}

/* ---- pending calls -------------------------------------------------- */

static struct pending *pending_take(struct lexbus_client *c, const char *id)
{
    for (struct pending **pp = &c->pending; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, id) == 0) {
            struct pending *p = *pp;
            *pp = p->next;
            if (!p->next) c->pending_tail = pp;
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
        if (!c->pending) c->pending_tail = &c->pending;
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
    *c->pending_tail = p;        /* appended: the oldest is found first */
    c->pending_tail = &p->next;
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
    if (c->register_token) json_object_set_new(m, "token", json_string(c->register_token));
    int rc = send_json(c, m);
    json_decref(m);
    return rc;
}

/* Connects to the next resolved address of tls://host:port. */
static int tls_connect_next(struct lexbus_client *c)
{
    while (c->next_addr) {
        const struct addrinfo *ai = c->next_addr;
        c->next_addr = ai->ai_next;
        SSL *ssl = SSL_new(c->ssl_ctx);
        if (!ssl) return -1;
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        unsigned char tmp[16];
        bool is_ip = inet_pton(AF_INET, c->host, tmp) == 1 || inet_pton(AF_INET6, c->host, tmp) == 1;
        if (is_ip) X509_VERIFY_PARAM_set1_ip_asc(vp, c->host);
        else { SSL_set_tlsext_host_name(ssl, c->host); X509_VERIFY_PARAM_set1_host(vp, c->host, 0); }
        c->bev = bufferevent_openssl_socket_new(c->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev) { SSL_free(ssl); return -1; }
        bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
        if (bufferevent_socket_connect(c->bev, ai->ai_addr, (int)ai->ai_addrlen) == 0) return 0;
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    return -1;
}

static int open_tls(struct lexbus_client *c)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
    /* Resolution blocks briefly; numeric hosts and localhost do not.
     * Every address is tried in turn: "localhost" is often ::1 first
     * while the bus listens on 127.0.0.1 only. */
    if (getaddrinfo(c->host, c->port, &hints, &ai) != 0 || !ai) return -1;
    if (c->addrs) freeaddrinfo(c->addrs);
    c->addrs = ai;
    c->next_addr = ai;
    return tls_connect_next(c);
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
    unsigned ms = lexbus_backoff_ms(c->backoff_base, c->backoff_max, c->attempt++, (unsigned)rand_r(&c->rand_state));
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

/* Why a TLS connection failed, from libevent's copy of OpenSSL's error
 * queue and the certificate check; false when it was not TLS's doing. */
static bool tls_failure(struct lexbus_client *c, char *why, size_t len)
{
    unsigned long e = c->bev ? bufferevent_get_openssl_error(c->bev) : 0;
    if (!e) e = ERR_get_error();
    SSL *ssl = c->bev ? bufferevent_openssl_get_ssl(c->bev) : NULL;
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    ERR_clear_error();
    /* A refused or reset socket shows up as a system-library error, or as
     * libevent's copy of SSL_get_error's code (SSL_ERROR_SYSCALL, no library). */
    if (e && (ERR_GET_LIB(e) == ERR_LIB_SYS || ERR_GET_LIB(e) == 0)) e = 0;
    if (!e && vr == X509_V_OK) return false;
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    snprintf(why, len, "TLS: %s%s%s", reason ? reason : "handshake failed",
             vr != X509_V_OK ? "; server certificate: " : "", vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
    return true;
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct lexbus_client *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        c->attempt = 0;
        c->next_addr = NULL;   /* connected: later failures are not this address's */
        send_register(c);
        return;
    }
    char why[sizeof ((struct lexbus_error *)0)->message];
    if (c->ssl_ctx && tls_failure(c, why, sizeof why)) {
        drop_connection(c, why);
        return;
    }
    int err = EVUTIL_SOCKET_ERROR();
    if (c->ssl_ctx && !c->ready && c->next_addr && !(what & BEV_EVENT_EOF)) {
        /* This address refused the connection: try the host's next one. */
        bufferevent_free(c->bev);
        c->bev = NULL;
        if (tls_connect_next(c) == 0) return;
    }
    snprintf(why, sizeof why, "%s", (what & BEV_EVENT_EOF) ? "the bus closed the connection"
             : evutil_socket_error_to_string(err));
    drop_connection(c, why);
}

/* ---- inbound messages ------------------------------------------------ */

/* Frames are scanned with the daemon's envelope scanner (core/envelope.c):
 * it validates the whole frame without allocating and says where each
 * member lies, so only the values handed to the application (payload,
 * params, data, context) are turned into json_t. */

/* The raw text of a value (strings with their quotes). */
static void env_raw(const struct env_val *v, const char **p, size_t *n)
{
    bool str = v->kind == J_STRING;
    *p = v->p - str;
    *n = v->n + 2u * str;
}

/* A value as json_t: 0 with *out a new reference (NULL when absent), or
 * -1 with why[] set when jansson cannot represent it.  The scanner has
 * validated the frame (strict JSON, UTF-8, surrogates paired), so the
 * only such values are numbers beyond its range (1e400, integers past
 * int64): the bus passes them, as other clients can read them, and the
 * callers below report them rather than hand a handler null.  "\u0000"
 * is kept: a json_t string holds NULs (json_string_length counts them).
 * Plain strings and literals are built directly; jansson parses the rest. */
static int env_decode(const struct env_val *v, json_t **out, char *why, size_t whylen)
{
    *out = NULL;
    switch (v->kind) {
    case J_NONE: return 0;
    case J_STRING: if (!v->escaped) { *out = json_stringn_nocheck(v->p, v->n); return 0; } break;
    case J_TRUE: *out = json_true(); return 0;
    case J_FALSE: *out = json_false(); return 0;
    case J_NULL: *out = json_null(); return 0;
    default: break;
    }
    const char *p;
    size_t n;
    env_raw(v, &p, &n);
    json_error_t je;
    *out = json_loadb(p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (*out) return 0;
    if (why) snprintf(why, whylen, "%.100s at byte %d of %zu", je.text, je.position, n);
    return -1;
}

/* The same where a failure needs no explanation (NULL). */
static json_t *env_json(const struct env_val *v)
{
    json_t *j;
    env_decode(v, &j, NULL, 0);
    return j;
}

/* A string member copied into out (unescaped); false if absent, not a
 * string, too long or holding a NUL. */
static bool env_cstr(const struct env_val *v, char *out, size_t cap)
{
    if (v->kind != J_STRING) return false;
    if (!v->escaped) {
        if (v->n >= cap || memchr(v->p, 0, v->n)) return false;
        memcpy(out, v->p, v->n);
        out[v->n] = 0;
        return true;
    }
    json_t *j = env_json(v);   /* rare: names the bus routes on are never escaped */
    const char *str = json_string_value(j);
    bool ok = str && json_string_length(j) < cap && strlen(str) == json_string_length(j);
    if (ok) memcpy(out, str, json_string_length(j) + 1);
    json_decref(j);
    return ok;
}

/* A member of the frame that the scanner does not index (one level). */
static bool frame_member(const struct envelope *e, const char *key, struct env_val *out)
{
    const char *p = e->frame, *end = e->frame + e->len;
    while (p < end && *p != '{') p++;
    struct env_val whole = { p, (uint32_t)(end - p), J_OBJECT, 0 };
    return env_object_get(&whole, key, out) == 0;
}

static long frame_integer(const struct envelope *e, const char *key, long dflt)
{
    struct env_val v;
    int64_t i;
    return frame_member(e, key, &v) && env_number_i64(&v, &i) == 0 ? (long)i : dflt;
}

static void error_from(struct lexbus_error *e, const struct env_val *err)
{
    char code[sizeof e->code] = "", msg[sizeof e->message] = "";
    struct env_val v;
    if (err->kind == J_OBJECT) {
        if (env_object_get(err, "code", &v) == 0) env_cstr(&v, code, sizeof code);
        if (env_object_get(err, "message", &v) == 0 && !env_cstr(&v, msg, sizeof msg)) {
            /* Longer than the buffer: keep its start. */
            json_t *j = env_json(&v);
            if (json_string_value(j)) snprintf(msg, sizeof msg, "%s", json_string_value(j));
            json_decref(j);
        }
    }
    set_err(e, code[0] ? code : LB_E_EXECUTION_FAILED, "%s", msg[0] ? msg : "error without a message");
}

/* Answers the caller itself when the params or context of its CALL
 * cannot be represented here: the handler never sees a null in their
 * place. */
static void refuse_undecodable(struct lexbus_reply *r, const char *what, const char *why)
{
    char msg[300];
    snprintf(msg, sizeof msg, "'%s' cannot represent the %s (liblexbus: %s)", r->c->service, what, why);
    lexbus_reply_error(r, LB_E_INVALID_MESSAGE, msg);
}

static void handle_call(struct lexbus_client *c, const struct envelope *e)
{
    char method[LB_MAX_NAME + 1], why[160];
    struct lexbus_reply *r = calloc(1, sizeof *r);
    if (!r) return;
    if (!env_cstr(&e->f[F_ID], r->id, sizeof r->id) || !env_cstr(&e->f[F_METHOD], method, sizeof method)) {
        free(r);   /* the bus never forwards such a CALL */
        return;
    }
    r->c = c;
    env_cstr(&e->f[F_FROM], r->caller, sizeof r->caller);
    r->generation = c->generation;
    if (env_decode(&e->f[F_CONTEXT], &r->context, why, sizeof why) != 0) {
        refuse_undecodable(r, "context", why);
        return;
    }
    for (struct method *x = c->methods; x; x = x->next) {
        if (strcmp(x->name, method) == 0) {
            json_t *params;
            if (env_decode(&e->f[F_PARAMS], &params, why, sizeof why) != 0) {
                refuse_undecodable(r, "params", why);
                return;
            }
            x->fn(c, method, params ? params : json_null(), r, x->ud);
            json_decref(params);
            return;
        }
    }
    char msg[300];
    snprintf(msg, sizeof msg, "service '%s' has no method '%s'", c->service, method);
    lexbus_reply_error(r, LB_E_METHOD_NOT_FOUND, msg);
}

/* An event whose payload cannot be represented as json_t is not handed
 * to its handler as null: the error handler hears of it, or (without
 * one) stderr, at the 1st, 2nd, 4th, 8th... such event. */
static void undecodable_event(struct lexbus_client *c, const char *event, const char *from, const char *why)
{
    struct lexbus_error err;
    set_err(&err, LB_E_INVALID_MESSAGE, "event '%s' from '%s' not delivered: liblexbus cannot represent its "
            "payload (%s); lexbus_on_raw hands over the text", event, from, why);
    unsigned long long n = ++c->undecodable;
    if (c->error_cb) c->error_cb(c, &err, c->error_ud);
    else if ((n & (n - 1)) == 0) fprintf(stderr, "liblexbus: %s (%llu so far)\n", err.message, n);
}

static void handle_event(struct lexbus_client *c, const struct envelope *e)
{
    char event[LB_MAX_EVENT + 1], from[LB_MAX_NAME + 1] = "";
    if (!env_cstr(&e->f[F_EVENT], event, sizeof event)) return;
    env_cstr(&e->f[F_FROM], from, sizeof from);
    /* The bus already matched; a client with several patterns hands the
     * event to the first handler whose pattern matches it. */
    for (struct sub *s = c->subs; s; s = s->next) {
        if (pattern_match(s->pattern, strlen(s->pattern), event, strlen(event))) {
            if (s->raw) {
                const char *p = "null";
                size_t n = 4;
                if (e->f[F_PAYLOAD].kind != J_NONE) env_raw(&e->f[F_PAYLOAD], &p, &n);
                s->raw(c, event, from, p, n, s->ud);
                return;
            }
            json_t *payload;
            char why[160];
            if (env_decode(&e->f[F_PAYLOAD], &payload, why, sizeof why) != 0) {
                undecodable_event(c, event, from, why);
                return;
            }
            s->fn(c, event, from, payload ? payload : json_null(), s->ud);
            json_decref(payload);
            return;
        }
    }
}

/* RESPONSE, ACK, ERROR or an echoed HEARTBEAT: settles what waits for it. */
static void handle_answer(struct lexbus_client *c, const struct envelope *e)
{
    char id[LB_MAX_ID + 1];
    struct pending *p = env_cstr(&e->f[F_ID], id, sizeof id) ? pending_take(c, id) : NULL;
    struct lexbus_error err;
    if (!p) {
        if (e->type == LB_MSG_ERROR && !c->ready) {
            /* Refused at registration: no point in retrying as is. */
            error_from(&err, &e->f[F_ERROR]);
            c->reconnect = false;
            notify_state(c, false, &err);
        } else if (e->type == LB_MSG_ERROR && c->error_cb) {
            error_from(&err, &e->f[F_ERROR]);   /* e.g. a fire-and-forget EMIT refused */
            c->error_cb(c, &err, c->error_ud);
        }
        return;
    }
    if (e->type == LB_MSG_ERROR || (e->type == LB_MSG_RESPONSE && env_str_eq(&e->f[F_STATUS], "error", 5))) {
        error_from(&err, &e->f[F_ERROR]);
        pending_settle(p, &err, NULL, -1);
    } else if (e->type == LB_MSG_RESPONSE) {
        json_t *data;
        char why[160];
        if (env_decode(&e->f[F_DATA], &data, why, sizeof why) != 0) {
            set_err(&err, LB_E_INVALID_MESSAGE, "liblexbus cannot represent the result (%s)", why);
            pending_settle(p, &err, NULL, -1);
            return;
        }
        pending_settle(p, NULL, data ? data : json_null(), 0);
        json_decref(data);
    } else {
        pending_settle(p, NULL, NULL, e->type == LB_MSG_ACK ? frame_integer(e, "delivered", 0) : 0);
    }
}

static void handle_register_ack(struct lexbus_client *c, const struct envelope *e)
{
    c->ready = true;
    long hb = frame_integer(e, "heartbeatInterval", 0);
    c->heartbeat_ms = hb > 0 && hb < 86400000L ? (unsigned)hb : 30000;
    struct timeval tv = { (time_t)(c->heartbeat_ms / 1000), (suseconds_t)((c->heartbeat_ms % 1000) * 1000) };
    evtimer_add(c->heartbeat_timer, &tv);
    notify_state(c, true, NULL);
}

static void dispatch_json(struct lexbus_client *c, const char *frame, size_t n)
{
    struct envelope e;
    const char *why;
    if (envelope_parse(&e, frame, n, &why) != ENV_OK) return;   /* the bus validates what it forwards */
    switch (e.type) {
    case LB_MSG_REGISTER_ACK: handle_register_ack(c, &e); break;
    case LB_MSG_CALL: handle_call(c, &e); break;
    case LB_MSG_EVENT: handle_event(c, &e); break;
    case LB_MSG_RESPONSE: case LB_MSG_ACK: case LB_MSG_ERROR: case LB_MSG_HEARTBEAT: handle_answer(c, &e); break;
    default: break;
    }
}

static void dispatch(struct lexbus_client *c, const char *frame, size_t n)
{
    if (!c->msgpack) { dispatch_json(c, frame, n); return; }
    /* Converted to JSON for the same scanner.  A callback may run the loop
     * and so read frames itself: those use a buffer of their own. */
    struct jw local = { 0 }, *w = c->dispatching ? &local : &c->mp_in;
    char why[160];
    w->len = 0;
    enum mp_status st = mp_to_json(frame, n, w, 8 * c->max_frame, why, sizeof why);
    if (st == MP_OK || st == MP_NO_JSON) {   /* NO_JSON: only +-Infinity can come from the bus */
        c->dispatching++;
        dispatch_json(c, w->buf, w->len);
        c->dispatching--;
    }
    free(local.buf);
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
        if (!p) { drop_connection(c, "out of memory reading a frame"); return; }
        dispatch(c, p + 4, n);
        /* A callback may have dropped the connection (and its buffer). */
        if (c->generation != gen) return;
        evbuffer_drain(in, 4 + (size_t)n);
    }
}

/* ---- public API ------------------------------------------------------ */

/* A session token (claim operation "register") authenticates the
 * REGISTER and goes nowhere else: the bus refuses it on a CALL or EMIT.
 * Any other token is a permission for messages, which a REGISTER would
 * refuse.  One the claims of which cannot be read goes with both, and the
 * bus says what is wrong with it.  The claims are only read here; the
 * bus verifies them. */
static void set_token(struct lexbus_client *c, const char *tok)
{
    if (!tok) return;
    json_t *claims = jwt_part_json(tok, 1);
    const char *op = json_string_value(json_object_get(claims, "operation"));
    bool session = op && !strcmp(op, "register");
    if (session || !claims) c->register_token = strdup(tok);
    if (!session) c->message_token = strdup(tok);
    json_decref(claims);
}

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
    set_token(c, o.token);
    c->reconnect = !o.no_reconnect;
    c->backoff_base = o.reconnect_base_ms ? o.reconnect_base_ms : 100;
    c->backoff_max = o.reconnect_max_ms ? o.reconnect_max_ms : 30000;
    c->max_frame = o.max_frame ? o.max_frame : 16u * 1024 * 1024;
    c->msgpack = o.encoding == LEXBUS_ENCODING_MSGPACK;
    c->pending_tail = &c->pending;
    c->retry_timer = evtimer_new(base, retry_cb, c);
    c->heartbeat_timer = event_new(base, -1, EV_PERSIST, heartbeat_cb, c);
    c->rand_state = (unsigned)(time(NULL) ^ getpid()) ^ (unsigned)(uintptr_t)c;   /* not the app's rand() */
    if (draw_id_prefix(c) != 0) {
        fprintf(stderr, "liblexbus: no random bytes for message ids (OpenSSL RAND_bytes failed)\n");
        lexbus_free(c);
        return NULL;
    }
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
    if (c->addrs) freeaddrinfo(c->addrs);
    free(c->host);
    free(c->port);
    free(c->path);
    free(c->service);
    free(c->register_token);
    free(c->message_token);
    wb_free(&c->out);
    free(c->mp_out.buf);
    free(c->mp_in.buf);
    free(c);
}

bool lexbus_is_ready(const struct lexbus_client *c) { return c->ready; }
const char *lexbus_service(const struct lexbus_client *c) { return c->service; }
struct event_base *lexbus_base(const struct lexbus_client *c) { return c->base; }
void lexbus_on_state(struct lexbus_client *c, lexbus_state_fn fn, void *ud) { c->state_cb = fn; c->state_ud = ud; }
void lexbus_on_error(struct lexbus_client *c, lexbus_error_fn fn, void *ud) { c->error_cb = fn; c->error_ud = ud; }

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

static int add_sub(struct lexbus_client *c, const char *pattern, lexbus_event_fn fn, lexbus_raw_event_fn raw,
                   void *ud)
{
    struct sub *s = calloc(1, sizeof *s);
    if (!s || !(s->pattern = strdup(pattern))) { free(s); return -1; }
    s->fn = fn;
    s->raw = raw;
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

int lexbus_on(struct lexbus_client *c, const char *pattern, lexbus_event_fn fn, void *ud)
{
    return add_sub(c, pattern, fn, NULL, ud);
}

int lexbus_on_raw(struct lexbus_client *c, const char *pattern, lexbus_raw_event_fn fn, void *ud)
{
    return add_sub(c, pattern, NULL, fn, ud);
}

/* Starts a RESPONSE to r in c->out, or returns false (and frees r) when
 * the call came in on a connection that has since dropped: the bus has
 * already failed that call. */
static bool reply_begin(struct lexbus_reply *r, const char *status)
{
    struct lexbus_client *c = r->c;
    if (!c->ready || r->generation != c->generation) return false;
    wb_begin(&c->out);
    wb_key_str(&c->out, "type", "RESPONSE");
    wb_key_str(&c->out, "id", r->id);
    wb_key_str(&c->out, "from", c->service);
    if (r->caller[0]) wb_key_str(&c->out, "to", r->caller);
    wb_key_str(&c->out, "status", status);
    if (r->context) { wb_key(&c->out, "context"); wb_json(&c->out, r->context); }
    return true;
}

static void reply_free(struct lexbus_reply *r)
{
    json_decref(r->context);
    free(r);
}

void lexbus_reply_ok(struct lexbus_reply *r, json_t *result)
{
    if (reply_begin(r, "success")) {
        wb_key(&r->c->out, "data");
        wb_json(&r->c->out, result);
        send_frame(r->c);
    }
    json_decref(result);
    reply_free(r);
}

void lexbus_reply_error(struct lexbus_reply *r, const char *code, const char *message)
{
    if (reply_begin(r, "error")) {
        wb_key(&r->c->out, "error");
        wb_lit(&r->c->out, "{");
        wb_str(&r->c->out, "code");
        wb_lit(&r->c->out, ":");
        wb_str(&r->c->out, code);
        wb_lit(&r->c->out, ",\"message\":");
        wb_str(&r->c->out, message ? message : "");
        wb_lit(&r->c->out, "}");
        send_frame(r->c);
    }
    reply_free(r);
}

json_t *lexbus_reply_context(const struct lexbus_reply *r) { return r->context; }

/* The context of a nested call: the parent's root and deadline, one more
 * hop in the chain.  NULL when there is no parent context. */
static json_t *nested_context(struct lexbus_client *c, const struct lexbus_reply *parent)
{
    json_t *pc = parent ? parent->context : NULL;
    if (!json_is_object(pc)) return NULL;
    json_t *ctx = json_deep_copy(pc);
    json_t *chain = json_object_get(ctx, "chain");
    if (!json_is_array(chain)) { chain = json_array(); json_object_set_new(ctx, "chain", chain); }
    json_array_append_new(chain, json_string(c->service));
    json_object_set_new(ctx, "depth", json_integer(json_integer_value(json_object_get(pc, "depth")) + 1));
    return ctx;
}

/* Writes the call's context member: nested, or a new root. */
static void write_context(struct lexbus_client *c, const struct lexbus_reply *parent, unsigned timeout_ms)
{
    wb_key(&c->out, "context");
    json_t *nested = nested_context(c, parent);
    if (nested) {
        wb_json(&c->out, nested);
        json_decref(nested);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    char root[80], tail[64];
    snprintf(root, sizeof root, "root-%lld-%s-%llu", now, c->id_prefix, ++c->seq);
    wb_lit(&c->out, "{");
    wb_key_str(&c->out, "root", root);
    wb_lit(&c->out, ",\"chain\":[");
    wb_str(&c->out, c->service);
    int n = snprintf(tail, sizeof tail, "],\"depth\":1,\"deadline\":%lld}", now + (long long)timeout_ms);
    wb_raw(&c->out, tail, (size_t)n);
}

/* A frame answered by a RESPONSE (CALL, CRUD): a pending entry, then
 * type, id and from.  NULL when the entry cannot be made. */
static struct pending *begin_answered(struct lexbus_client *c, const char *type, unsigned timeout_ms,
                                      lexbus_result_fn cb, void *ud)
{
    struct pending *p = pending_new(c, timeout_ms + 1000);   /* the bus answers TIMEOUT first */
    if (!p) return NULL;
    p->result_cb = cb;
    p->ud = ud;
    wb_begin(&c->out);
    wb_key_str(&c->out, "type", type);
    wb_key_str(&c->out, "id", p->id);
    wb_key_str(&c->out, "from", c->service);
    return p;
}

/* Adds the token, sends; a frame that could not be sent has no answer to wait for. */
static int send_answered(struct lexbus_client *c, struct pending *p)
{
    if (c->message_token) wb_key_str(&c->out, "token", c->message_token);
    int rc = send_frame(c);
    if (rc) {
        pending_take(c, p->id);
        event_free(p->timer);
        free(p);
    }
    return rc;
}

int lexbus_call(struct lexbus_client *c, const char *service, const char *method, json_t *params,
                unsigned timeout_ms, const struct lexbus_reply *parent, lexbus_result_fn cb, void *ud)
{
    if (!c->ready) return -1;
    if (!timeout_ms) timeout_ms = DEFAULT_TIMEOUT_MS;
    struct pending *p = begin_answered(c, "CALL", timeout_ms, cb, ud);
    if (!p) return -1;
    wb_key_str(&c->out, "to", service);
    wb_key_str(&c->out, "method", method);
    wb_key(&c->out, "params");
    if (params) wb_json(&c->out, params);
    else wb_lit(&c->out, "{}");
    write_context(c, parent, timeout_ms);
    return send_answered(c, p);
}

/* CRUD: one frame, answered like a call (the bus turns it into one). */
int lexbus_crud(struct lexbus_client *c, const struct lexbus_crud *req, unsigned timeout_ms,
                lexbus_result_fn cb, void *ud)
{
    if (!c->ready || !req || !req->op || !req->resource) return -1;
    struct pending *p = begin_answered(c, "CRUD", timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS, cb, ud);
    if (!p) return -1;
    wb_key_str(&c->out, "op", req->op);
    wb_key_str(&c->out, "resource", req->resource);
    if (req->key) wb_key_str(&c->out, "key", req->key);
    if (req->data) { wb_key(&c->out, "data"); wb_json(&c->out, req->data); }
    if (req->query) { wb_key(&c->out, "query"); wb_json(&c->out, req->query); }
    if (req->to) wb_key_str(&c->out, "to", req->to);
    return send_answered(c, p);
}

/* The payload of an EMIT: a json_t, or JSON text already checked. */
struct payload { const json_t *json; const char *text; size_t len; };

static int emit(struct lexbus_client *c, const char *event, struct payload pl, const char *to,
                lexbus_ack_fn cb, void *ud, unsigned timeout_ms);

int lexbus_emit(struct lexbus_client *c, const char *event, json_t *payload, const char *to,
                lexbus_ack_fn cb, void *ud)
{
    return emit(c, event, (struct payload){ .json = payload }, to, cb, ud, DEFAULT_TIMEOUT_MS);
}

int lexbus_emit_json(struct lexbus_client *c, const char *event, const char *payload_json, size_t len,
                     const char *to, lexbus_ack_fn cb, void *ud)
{
    const char *why;
    if (!payload_json || env_validate_value(payload_json, len, &why) != 0) return -1;
    return emit(c, event, (struct payload){ .text = payload_json, .len = len }, to, cb, ud, DEFAULT_TIMEOUT_MS);
}

static int emit(struct lexbus_client *c, const char *event, struct payload pl, const char *to,
                lexbus_ack_fn cb, void *ud, unsigned timeout_ms)
{
    if (!c->ready) return -1;
    struct pending *p = NULL;
    if (cb) {
        p = pending_new(c, timeout_ms);
        if (!p) return -1;
        p->ack_cb = cb;
        p->ud = ud;
    }
    wb_begin(&c->out);
    wb_key_str(&c->out, "type", "EMIT");
    wb_key_str(&c->out, "event", event);
    wb_key_str(&c->out, "to", to ? to : "broadcast");
    wb_key(&c->out, "payload");
    if (pl.text) wb_raw(&c->out, pl.text, pl.len);
    else wb_json(&c->out, pl.json);
    if (c->message_token) wb_key_str(&c->out, "token", c->message_token);
    if (p) {
        wb_key_str(&c->out, "id", p->id);
        wb_lit(&c->out, ",\"ack\":true");
    }
    int rc = send_frame(c);
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

int lexbus_crud_blocking(struct lexbus_client *c, const struct lexbus_crud *req, unsigned timeout_ms,
                         json_t **result, struct lexbus_error *err)
{
    struct wait w = { 0 };
    if (lexbus_crud(c, req, timeout_ms, wait_result, &w) != 0) {
        set_err(err, LB_E_NOT_CONNECTED, "not connected to the bus (or no op/resource)");
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
        if (emit(c, event, (struct payload){ .json = payload }, to, wait_ack, &w,
                 timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS) != 0)
            goto not_connected;
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
