/*
 * In-process connections: a plugin as a client of its own bus.
 *
 * Each one is an ordinary struct lb_conn whose "transport" is this file:
 * what the plugin sends is queued and routed from a later loop turn, what
 * the bus sends is queued and handed to the plugin from a later loop turn
 * (a zero-delay timer, so the poll runs in between and sockets are not
 * starved).  So the router is never re-entered, and a plugin is never
 * called back from inside one of its own calls.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <event2/buffer.h>
#include "local.h"
#include "conn.h"
#include "msg.h"
#include "plugin_ctx.h"
#include "names.h"
#include "registry.h"
#include "plugin_host.h"
#include "stats.h"
#include "jsonw.h"
#include "log.h"
#include "util.h"

/* Frames handled per connection and turn, each way: a plugin that floods
 * its own connection cannot starve the loop. */
#define TURN_BUDGET 256

struct wait { struct wait *next; uint64_t seq; lb_reply_fn cb; void *ud; };

struct local {
    struct lb_plugin_ctx *ctx;
    struct lb_local_ops ops;
    void *ud;
    struct lb_conn *conn;        /* NULL once the bus closed it */
    /* The plugin's handle stays valid memory (a closed connection, on
     * which every call fails) until on_close has told it so: between the
     * close and the pump's on_close a plugin's timer may still use it. */
    struct lb_conn *held;
    struct evbuffer *in, *out;   /* 4-byte length + JSON frames */
    bool reading;
    bool host_closed;            /* on_close still to be called */
    bool plugin_closed;          /* lb_local_close: no more callbacks */
    struct wait *waits;          /* lb_call callbacks */
    uint64_t seq;
    struct local *next;
};

static struct local *g_locals;
static struct event *g_pump;
static struct jw g_w;
static struct jw g_fail;         /* RESPONSEs for calls cut off by a close (not g_w: callbacks reuse it) */
static struct lb_msg *g_msg;

static void pump(evutil_socket_t fd, short what, void *arg);

static void schedule(void)
{
    if (!g_pump) g_pump = evtimer_new(g_bus.base, pump, NULL);
    if (!evtimer_pending(g_pump, NULL)) {
        struct timeval zero = { 0, 0 };
        evtimer_add(g_pump, &zero);
    }
}

/* ---- the transport side (called by the host) ------------------------ */

static int op_send(void *tdata, const struct iovec *iov, int iovcnt)
{
    struct local *l = tdata;
    if (lb_frame_write(l->out, iov, iovcnt)) return -1;
    schedule();
    return 0;
}

static size_t op_pending(void *tdata) { return evbuffer_get_length(((struct local *)tdata)->out); }

static void op_set_read(void *tdata, bool enabled)
{
    struct local *l = tdata;
    l->reading = enabled;
    if (enabled) schedule();
}

static void op_close(void *tdata, bool flush)
{
    (void)flush;
    struct local *l = tdata;
    l->conn = NULL;
    l->host_closed = true;   /* on_close runs from the pump, not from inside the close */
    schedule();
}

static void op_discard(void *tdata)
{
    struct local *l = tdata;
    evbuffer_drain(l->out, evbuffer_get_length(l->out));
}

static const struct lb_conn_ops local_ops = {
    .size = sizeof local_ops, .send = op_send, .pending = op_pending, .set_read = op_set_read,
    .close = op_close, .discard = op_discard,
};

/* ---- opening and closing -------------------------------------------- */

struct lb_conn *lb_local_open(struct lb_plugin_ctx *ctx, const struct lb_local_opts *opts,
                              const struct lb_local_ops *ops, void *ud)
{
    if (!ops || !ops->size || !ops->on_message || g_bus.draining) return NULL;
    struct local *l = xcalloc(1, sizeof *l);
    memcpy(&l->ops, ops, ops->size < sizeof l->ops ? ops->size : sizeof l->ops);
    l->ctx = ctx;
    l->ud = ud;
    l->in = evbuffer_new();
    l->out = evbuffer_new();
    l->reading = true;
    struct lb_local_opts o = { 0 };
    if (opts) memcpy(&o, opts, opts->size && opts->size < sizeof o ? opts->size : sizeof o);
    char label[96];
    snprintf(label, sizeof label, "local:%s", o.label ? o.label : ctx->name);
    struct lb_peer peer = { .size = sizeof peer, .transport = label };
    struct lb_conn *c = conn_create(ctx, &local_ops, l, &peer);
    c->local = l;
    conn_ref(c);
    l->held = c;
    c->link = o.link;
    c->trusted = o.trusted || o.link;
    c->fallback = o.link && o.fallback;
    if (c->trusted) {
        /* The host vouches for its plugins: a trusted connection speaks
         * (naming `from`) without registering a service of its own. */
        c->auth = "plugin";
        c->state = CS_REGISTERED;
    }
    l->conn = c;
    g_stats.conns_local++;
    l->next = g_locals;
    g_locals = l;
    return c;
}

static void free_waits(struct local *l)
{
    while (l->waits) {
        struct wait *w = l->waits;
        l->waits = w->next;
        free(w);
    }
}

static void unlink_local(struct local *l)
{
    for (struct local **pp = &g_locals; *pp; pp = &(*pp)->next)
        if (*pp == l) { *pp = l->next; break; }
    g_stats.conns_local--;
    free_waits(l);
    evbuffer_free(l->in);
    evbuffer_free(l->out);
    conn_unref(l->held);
    free(l);
}

static struct local *local_of(struct lb_conn *c)
{
    return c && c->local && !c->dead ? c->local : NULL;
}

void lb_local_close(struct lb_conn *c)
{
    struct local *l = local_of(c);
    if (!l) return;
    l->plugin_closed = true;
    free_waits(l);
    /* Calls it serves fail SERVICE_UNAVAILABLE for their callers (the
     * router's forget); the record goes from the pump. */
    conn_close(c, false, "closed by its plugin");
}

void local_close_plugin(struct lb_plugin_ctx *ctx)
{
    for (struct local *l = g_locals; l; l = l->next) {
        if (l->ctx != ctx) continue;
        l->plugin_closed = true;
        if (l->conn && !l->conn->dead) conn_close(l->conn, false, "plugin unloaded");
    }
}

void local_free(void)
{
    while (g_locals) unlink_local(g_locals);
    if (g_pump) { event_free(g_pump); g_pump = NULL; }
    jw_free(&g_w);
    jw_free(&g_fail);
    lb_msg_free(g_msg);
    g_msg = NULL;
}

/* ---- the pump ------------------------------------------------------- */

/* The plugin's queue also carries requests that must keep their place
 * among its frames (lb_local_unregister): their length has this bit. */
#define CONTROL_BIT 0x80000000u

static bool next_frame(struct evbuffer *b, struct evbuffer *into, bool *control)
{
    uint32_t be;
    if (evbuffer_copyout(b, &be, sizeof be) != (ssize_t)sizeof be) return false;
    uint32_t n = ntohl(be);
    *control = (n & CONTROL_BIT) != 0;
    evbuffer_drain(b, sizeof be);
    evbuffer_remove_buffer(b, into, n & ~CONTROL_BIT);
    return true;
}

static void unregister_now(struct lb_conn *c, const char *name, size_t n)
{
    struct instance *i = conn_instance(c, name, n);
    if (!i) return;
    log_info("local", "#%llu '%s' unregistered by its plugin", (unsigned long long)c->id, i->name);
    registry_remove(i);
}

/* What the plugin sent: routed as if a client had sent it. */
static void route_input(struct local *l)
{
    struct evbuffer *one = evbuffer_new();
    bool control;
    for (int k = 0; k < TURN_BUDGET && l->conn && l->reading && next_frame(l->in, one, &control); k++) {
        size_t n = evbuffer_get_length(one);
        const char *p = (const char *)evbuffer_pullup(one, (ssize_t)n);
        if (control) unregister_now(l->conn, p, n);
        else conn_input(l->conn, p, n);
        evbuffer_drain(one, n);
    }
    evbuffer_free(one);
    if (evbuffer_get_length(l->in) && l->conn && l->reading) schedule();
}

static struct wait *take_wait(struct local *l, const struct lb_msg *m)
{
    const struct env_val *id = &m->env.f[F_ID];
    if (m->env.type != LB_MSG_RESPONSE || id->kind != J_STRING || id->n < 2 || id->p[0] != 'L') return NULL;
    char tmp[24];
    if (id->n - 1 >= sizeof tmp) return NULL;
    memcpy(tmp, id->p + 1, id->n - 1);
    tmp[id->n - 1] = 0;
    uint64_t seq = strtoull(tmp, NULL, 10);
    for (struct wait **pp = &l->waits; *pp; pp = &(*pp)->next) {
        if ((*pp)->seq == seq) {
            struct wait *w = *pp;
            *pp = w->next;
            return w;
        }
    }
    return NULL;
}

/* What the bus sent: to lb_call callbacks or on_message. */
static void deliver_output(struct local *l)
{
    struct evbuffer *one = evbuffer_new();
    if (!g_msg) g_msg = lb_msg_new();
    bool control;
    for (int k = 0; k < TURN_BUDGET && !l->plugin_closed && next_frame(l->out, one, &control); k++) {
        size_t n = evbuffer_get_length(one);
        const char *p = (const char *)evbuffer_pullup(one, (ssize_t)n), *err;
        if (lb_msg_parse(g_msg, p, n, &err) == 0) {
            struct wait *w = take_wait(l, g_msg);
            if (w) { w->cb(w->ud, g_msg); free(w); }
            else if (l->conn) l->ops.on_message(l->ud, l->conn, g_msg);
        }
        evbuffer_drain(one, n);
    }
    evbuffer_free(one);
    if (evbuffer_get_length(l->out) && !l->plugin_closed) schedule();
    if (l->conn && !l->conn->dead) lb_conn_writable(l->conn);
}

/* The bus closed the connection with lb_call callbacks still waiting
 * (their calls were dropped with it): each still gets its one RESPONSE,
 * so a plugin that frees per-call state in the callback leaks nothing. */
static void fail_waits(struct local *l)
{
    if (!g_msg) g_msg = lb_msg_new();
    while (l->waits && !l->plugin_closed) {
        struct wait *w = l->waits;
        l->waits = w->next;
        jw_reset(&g_fail);
        jw_lit(&g_fail, "{\"type\":\"RESPONSE\",\"id\":\"L");
        jw_u64(&g_fail, w->seq);
        jw_lit(&g_fail, "\",\"from\":");
        jw_cstr(&g_fail, g_bus.set.system_service);
        jw_lit(&g_fail, ",\"status\":\"error\",\"error\":{\"code\":\"" LB_E_SERVICE_UNAVAILABLE "\","
               "\"message\":\"the bus closed the in-process connection that made this call\"}}");
        const char *err;
        if (lb_msg_parse(g_msg, g_fail.buf, g_fail.len, &err) == 0) w->cb(w->ud, g_msg);
        free(w);
    }
}

static void pump(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    struct local *l = g_locals, *next;
    for (; l; l = next) {
        next = l->next;
        if (l->conn) route_input(l);
        deliver_output(l);
        if (l->host_closed) {
            fail_waits(l);
            if (!l->plugin_closed && l->ops.on_close) l->ops.on_close(l->ud, l->held, "closed by the bus");
            unlink_local(l);
        }
    }
}

/* ---- sending ------------------------------------------------------- */

int lb_local_send(struct lb_conn *c, const char *json, size_t len)
{
    struct local *l = local_of(c);
    if (!l || l->plugin_closed || len == 0) { errno = EINVAL; return -1; }
    /* The bus would answer a frame past max_frame by closing the
     * connection: refuse it here, where the plugin can handle it. */
    if (len > g_bus.set.max_frame) { errno = EMSGSIZE; return -1; }
    struct iovec iov = { (void *)json, len };
    if (lb_frame_write(l->in, &iov, 1)) { errno = ENOMEM; return -1; }
    schedule();
    return 0;
}

int lb_local_unregister(struct lb_conn *c, const char *service)
{
    struct local *l = local_of(c);
    size_t n = service ? strlen(service) : 0;
    if (!l || l->plugin_closed || !c->trusted || !valid_service_name(service, n)) { errno = EINVAL; return -1; }
    uint32_t be = htonl((uint32_t)n | CONTROL_BIT);
    if (evbuffer_add(l->in, &be, sizeof be) || evbuffer_add(l->in, service, n)) { errno = ENOMEM; return -1; }
    schedule();
    return 0;
}

size_t lb_local_backlog(const struct lb_conn *c)
{
    const struct local *l = c && c->local && !c->dead ? c->local : NULL;
    return l ? evbuffer_get_length(l->in) : 0;
}

static struct jw *w_begin(void)
{
    if (!g_w.buf) jw_init(&g_w, 512);
    jw_reset(&g_w);
    return &g_w;
}

/* A JSON value a plugin hands in (params, payload, data), checked now:
 * spliced into a frame unchecked, a bad one would make the bus refuse the
 * whole frame later, with an ERROR no lb_call callback would receive. */
static bool json_arg_ok(const char *json, size_t len)
{
    const char *err;
    return !json || lb_json_validate(json, len, &err) == 0;
}

static void json_member(struct jw *w, const char *key, const char *json, size_t len, const char *def)
{
    jw_raw(w, key, strlen(key));
    if (json) jw_raw(w, json, len);
    else jw_raw(w, def, strlen(def));
}

int lb_local_register(struct lb_conn *c, const char *service, const char *const *methods, size_t n_methods)
{
    if (!service) { errno = EINVAL; return -1; }
    struct jw *w = w_begin();
    jw_lit(w, "{\"type\":\"REGISTER\",\"serviceName\":");
    jw_cstr(w, service);
    if (methods) {
        jw_lit(w, ",\"methods\":[");
        for (size_t i = 0; i < n_methods; i++) {
            if (i) jw_lit(w, ",");
            jw_cstr(w, methods[i]);
        }
        jw_lit(w, "]");
    }
    jw_lit(w, "}");
    return lb_local_send(c, w->buf, w->len);
}

int lb_call(struct lb_conn *c, const char *from, const char *to, const char *method, const char *params,
            size_t params_len, uint64_t timeout_ms, lb_reply_fn cb, void *ud)
{
    struct local *l = local_of(c);
    if (!l || !to || !method || !cb || !json_arg_ok(params, params_len)) { errno = EINVAL; return -1; }
    uint64_t seq = ++l->seq;
    uint64_t t = timeout_ms ? timeout_ms : g_bus.set.call_timeout_ms;
    struct jw *w = w_begin();
    jw_lit(w, "{\"type\":\"CALL\",\"id\":\"L");
    jw_u64(w, seq);
    jw_lit(w, "\"");
    if (from) { jw_lit(w, ",\"from\":"); jw_cstr(w, from); }
    jw_lit(w, ",\"to\":");
    jw_cstr(w, to);
    jw_lit(w, ",\"method\":");
    jw_cstr(w, method);
    json_member(w, ",\"params\":", params, params_len, "{}");
    jw_lit(w, ",\"context\":{\"depth\":1,\"deadline\":");
    jw_u64(w, now_ms() + t);
    jw_lit(w, "}}");
    if (lb_local_send(c, w->buf, w->len)) return -1;
    struct wait *wt = xcalloc(1, sizeof *wt);
    *wt = (struct wait){ l->waits, seq, cb, ud };
    l->waits = wt;
    return 0;
}

int lb_emit(struct lb_conn *c, const char *from, const char *event, const char *to, const char *payload,
            size_t payload_len)
{
    if (!local_of(c) || !event || !json_arg_ok(payload, payload_len)) { errno = EINVAL; return -1; }
    struct jw *w = w_begin();
    jw_lit(w, "{\"type\":\"EMIT\",\"event\":");
    jw_cstr(w, event);
    if (from) { jw_lit(w, ",\"from\":"); jw_cstr(w, from); }
    jw_lit(w, ",\"to\":");
    jw_cstr(w, to ? to : "broadcast");
    json_member(w, ",\"payload\":", payload, payload_len, "null");
    jw_lit(w, "}");
    return lb_local_send(c, w->buf, w->len);
}

static int respond(struct lb_conn *c, const struct lb_msg *call, const char *json, size_t len,
                   const char *code, const char *message)
{
    const struct env_val *id = &call->env.f[F_ID], *to = &call->env.f[F_TO];
    if (!local_of(c) || call->env.type != LB_MSG_CALL || id->kind != J_STRING || !json_arg_ok(json, len)) {
        errno = EINVAL;
        return -1;
    }
    struct jw *w = w_begin();
    jw_lit(w, "{\"type\":\"RESPONSE\",\"id\":\"");
    jw_raw(w, id->p, id->n);
    jw_lit(w, "\"");
    if (to->kind == J_STRING) { jw_lit(w, ",\"from\":\""); jw_raw(w, to->p, to->n); jw_lit(w, "\""); }
    if (code) {
        jw_lit(w, ",\"status\":\"error\",\"error\":{\"code\":");
        jw_cstr(w, code);
        jw_lit(w, ",\"message\":");
        jw_cstr(w, message ? message : "");
        jw_lit(w, "}}");
    } else {
        json_member(w, ",\"status\":\"success\",\"data\":", json, len, "null");
        jw_lit(w, "}");
    }
    return lb_local_send(c, w->buf, w->len);
}

int lb_respond(struct lb_conn *c, const struct lb_msg *call, const char *json, size_t len)
{
    return respond(c, call, json, len, NULL, NULL);
}

int lb_respond_error(struct lb_conn *c, const struct lb_msg *call, const char *code, const char *message)
{
    return respond(c, call, NULL, 0, code ? code : LB_E_EXECUTION_FAILED, message);
}
