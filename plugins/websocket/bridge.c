/*
 * The Exprsn Bridge vocabulary: a Socket.IO socket in namespace
 * /ipc/<name> is a lexbus connection registered as service <name> (or
 * names.<name>, or <prefix><name>).  One lb_conn per namespace: the
 * namespaces of one Engine.IO session share its transport (pending bytes,
 * back-pressure) but are separate instances on the bus, as if each were
 * its own socket.
 *
 * Client -> bus (EVENT packets, each translated into one lexbus frame):
 *   ipc:emit {event, payload, target, options}      EMIT (ack: true)
 *   ipc:call {service, method, params, options}     CALL
 *   ipc:subscribe / ipc:unsubscribe {events}        SUBSCRIBE / UNSUBSCRIBE
 *   ipc:create|read|update|delete {resource, ...}   CRUD
 *   ipc:jsonlex {expression, context}               CALL <system service>.jsonlex
 * The bus's answer (ACK, RESPONSE, ERROR) is matched by the id this file
 * gave the frame ("<socket sid>.<n>") and goes back as the client's ack
 * callback and/or the events ipc:ack / ipc:error.
 *
 * Bus -> client: an EVENT becomes the socket event of that name with
 * (payload, {source, target, id, token?}); a CALL becomes ipc:call with
 * ({id, from, method, params, context}, callback), whose callback value
 * is the RESPONSE.  Binary attachments are refused (CONNECT_ERROR for the
 * namespace): lexbus carries JSON.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "wsp.h"
#include "eio.h"
#include "util.h"

#define HEARTBEAT_FRAME "{\"type\":\"HEARTBEAT\"}"
#define SACK_DEFAULT_TTL_MS (10 * 60 * 1000)

enum pend_kind { PK_EMIT, PK_CALL, PK_SUB, PK_UNSUB, PK_CRUD, PK_JSONLEX, PK_SACK };

/* A request waiting for the bus's answer (key: its sequence number), or a
 * bus CALL waiting for the client's ack (PK_SACK, key: the ack id). */
struct pend {
    struct ht_node hn;
    uint64_t key;
    uint64_t expires_ms;           /* PK_SACK: past the call's deadline */
    int64_t ack;                   /* the client's ack id, or -1 */
    uint8_t kind;
    uint16_t a_len, b_len;         /* PK_EMIT: event, target; PK_SACK: call id */
    char buf[LB_MAX_EVENT + LB_MAX_NAME + 2];
    struct pend *next;             /* free list, or refused calls */
};

enum ns_state { NS_JOINING, NS_JOINED, NS_REFUSED };

struct sns {
    struct eio *s;
    struct lb_conn *conn;
    char nsp[SIO_MAX_NSP + 1];
    size_t nsp_len;
    char svc[LB_MAX_NAME + 1];
    char sid[WSP_SID_LEN + 1];
    enum ns_state st;
    bool detaching;                /* we end it: op_close has nothing to do */
    bool paused;
    uint64_t error_ms;             /* when the bus last sent an ERROR */
    char refuse[400];              /* the CONNECT_ERROR payload once refused */
    uint64_t seq;
    int64_t next_sack;
    struct htable reqs, sacks;
    size_t n_reqs, n_sacks;
    struct pend *free_list;
    struct pend *refused_calls;    /* CALLs over max_pending, answered from `later` */
};

const char *sns_name(const struct sns *ns, size_t *n) { *n = ns->nsp_len; return ns->nsp; }
struct lb_conn *sns_conn(const struct sns *ns) { return ns->detaching ? NULL : ns->conn; }

static struct wsp *WP(const struct sns *ns) { return eio_wsp(ns->s); }

/* ---- pending table ------------------------------------------------- */

static bool key_eq(const struct ht_node *n, const void *key)
{
    return container_of(n, struct pend, hn)->key == *(const uint64_t *)key;
}

static struct pend *pend_new(struct sns *ns, struct htable *t, size_t *count, uint64_t key)
{
    if ((long long)*count >= WP(ns)->c.max_pending) return NULL;
    struct pend *p = ns->free_list;
    if (p) ns->free_list = p->next;
    else p = xmalloc(sizeof *p);
    memset(p, 0, offsetof(struct pend, buf));
    p->key = key;
    p->ack = -1;
    ht_insert(t, &p->hn, key);
    (*count)++;
    return p;
}

static struct pend *pend_find(struct htable *t, uint64_t key)
{
    struct ht_node *h = ht_find(t, key, key_eq, &key);
    return h ? container_of(h, struct pend, hn) : NULL;
}

static void pend_done(struct sns *ns, struct htable *t, size_t *count, struct pend *p)
{
    ht_remove(t, &p->hn);
    (*count)--;
    p->next = ns->free_list;
    ns->free_list = p;
}

static void free_node(struct ht_node *n, void *ud) { (void)ud; free(container_of(n, struct pend, hn)); }

static void ns_free(struct sns *ns)
{
    if (ns->paused) eio_pause(ns->s, false);
    eio_remove_ns(ns->s, ns);
    ht_each(&ns->reqs, free_node, NULL);
    ht_each(&ns->sacks, free_node, NULL);
    ht_free(&ns->reqs);
    ht_free(&ns->sacks);
    for (struct pend *p = ns->free_list, *n; p; p = n) { n = p->next; free(p); }
    for (struct pend *p = ns->refused_calls, *n; p; p = n) { n = p->next; free(p); }
    free(ns);
}

/* ---- packets to the client ----------------------------------------- */

/* "4<type><nsp>,<ack>" into the scratch buffer. */
static struct jw *pkt(struct sns *ns, char type, int64_t ack)
{
    struct jw *w = &WP(ns)->scratch;
    jw_reset(w);
    char head[2] = { '4', type };
    jw_raw(w, head, 2);
    if (!(ns->nsp_len == 1 && ns->nsp[0] == '/')) { jw_raw(w, ns->nsp, ns->nsp_len); jw_lit(w, ","); }
    if (ack >= 0) jw_i64(w, ack);
    return w;
}

static void pkt_send(struct sns *ns) { eio_send(ns->s, WP(ns)->scratch.buf, WP(ns)->scratch.len); }

/* A value from a parsed frame, as JSON text (null when absent). */
static void put(struct jw *w, const struct env_val *v)
{
    if (v->kind == J_NONE) jw_lit(w, "null");
    else if (v->kind == J_STRING) jw_raw(w, v->p - 1, v->n + 2);
    else jw_raw(w, v->p, v->n);
}

static struct env_val member(const struct env_val *obj, const char *key)
{
    struct env_val v = { 0 };
    if (obj->kind != J_OBJECT || env_object_get(obj, key, &v) != 0) memset(&v, 0, sizeof v);
    return v;
}

/* The error object of an ERROR or error RESPONSE: its code and message. */
static void error_parts(const struct env_val *err, struct env_val *code, struct env_val *msg)
{
    *code = member(err, "code");
    *msg = member(err, "message");
}

static void put_code(struct jw *w, const struct env_val *code)
{
    if (code->kind == J_STRING) put(w, code);
    else jw_lit(w, "\"" LB_E_INTERNAL_ERROR "\"");
}

/* {"success":false,"error":<message>,"code":<code>} */
static void put_fail_flat(struct jw *w, const struct env_val *err)
{
    struct env_val code, msg;
    error_parts(err, &code, &msg);
    jw_lit(w, "{\"success\":false,\"error\":");
    if (msg.kind == J_STRING) put(w, &msg);
    else jw_lit(w, "\"request failed\"");
    jw_lit(w, ",\"code\":");
    put_code(w, &code);
    jw_lit(w, "}");
}

/* ipc:error {"error":<code>,"message":<message>[,"event":...]} */
static void send_ipc_error(struct sns *ns, const struct env_val *err, const char *ev, size_t ev_len)
{
    struct env_val code, msg;
    error_parts(err, &code, &msg);
    struct jw *w = pkt(ns, '2', -1);
    jw_lit(w, "[\"ipc:error\",{\"error\":");
    put_code(w, &code);
    jw_lit(w, ",\"message\":");
    if (msg.kind == J_STRING) put(w, &msg);
    else jw_lit(w, "\"request failed\"");
    if (ev) { jw_lit(w, ",\"event\":"); jw_str(w, ev, ev_len); }
    struct env_val retry = member(err, "retryAfterMs");
    if (retry.kind == J_NUMBER) { jw_lit(w, ",\"retryAfterMs\":"); put(w, &retry); }
    jw_lit(w, "}]");
    pkt_send(ns);
}

/* A refusal made here, before anything reached the bus: the same shapes
 * as the bus's own errors. */
static void local_error(struct sns *ns, int64_t ack, const char *code, const char *msg, bool call_shape)
{
    struct jw t;   /* rare: allocated */
    jw_init(&t, 256);
    jw_lit(&t, "{\"code\":");
    jw_cstr(&t, code);
    jw_lit(&t, ",\"message\":");
    jw_cstr(&t, msg);
    jw_lit(&t, "}");
    struct env_val err = { t.buf, (uint32_t)t.len, J_OBJECT, 0 };
    if (ack < 0) {
        send_ipc_error(ns, &err, NULL, 0);
    } else {
        struct jw *w = pkt(ns, '3', ack);
        jw_lit(w, "[");
        if (call_shape) { jw_lit(w, "{\"success\":false,\"error\":"); jw_raw(w, t.buf, t.len); jw_lit(w, "}"); }
        else put_fail_flat(w, &err);
        jw_lit(w, "]");
        pkt_send(ns);
    }
    jw_free(&t);
}

/* ---- requests to the bus ------------------------------------------- */

static struct jw *req_begin(struct sns *ns, const char *type, struct pend *p)
{
    struct jw *w = &WP(ns)->reqbuf;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"");
    jw_raw(w, type, strlen(type));
    jw_lit(w, "\",\"id\":\"");
    jw_raw(w, ns->sid, WSP_SID_LEN);
    jw_lit(w, ".");
    jw_u64(w, p->key);
    jw_lit(w, "\"");
    return w;
}

/* Hands the frame to the bus.  Returns -1 when the connection (and ns)
 * is gone: the caller must not touch ns again. */
static int req_send(struct sns *ns)
{
    struct jw *w = &WP(ns)->reqbuf;
    return lb_conn_input(ns->conn, w->buf, w->len);
}

static struct pend *req_new(struct sns *ns, enum pend_kind kind, int64_t ack)
{
    struct pend *p = pend_new(ns, &ns->reqs, &ns->n_reqs, ++ns->seq);
    if (!p) {
        local_error(ns, ack, LB_E_RATE_LIMITED, "too many requests in flight on this namespace (max_pending)",
                    kind == PK_CALL);
        return NULL;
    }
    p->kind = (uint8_t)kind;
    p->ack = ack;
    return p;
}

static void put_member(struct jw *w, const char *name, const struct env_val *v)
{
    if (v->kind == J_NONE) return;
    jw_lit(w, ",\"");
    jw_raw(w, name, strlen(name));
    jw_lit(w, "\":");
    put(w, v);
}

static void put_token(struct jw *w, const struct env_val *options)
{
    struct env_val tok = member(options, "token");
    if (tok.kind == J_STRING) put_member(w, "token", &tok);
}

static int req_emit(struct sns *ns, const struct env_val *arg, int64_t ack)
{
    struct env_val ev = member(arg, "event"), to = member(arg, "target"), payload = member(arg, "payload"),
                   opt = member(arg, "options");
    if (arg->kind != J_OBJECT || ev.kind != J_STRING || ev.n > LB_MAX_EVENT ||
        (to.kind != J_NONE && (to.kind != J_STRING || to.n > LB_MAX_NAME))) {
        local_error(ns, ack, LB_E_INVALID_MESSAGE,
                    "ipc:emit takes {event: string, payload, target: service or \"broadcast\", options}", false);
        return 0;
    }
    struct pend *p = req_new(ns, PK_EMIT, ack);
    if (!p) return 0;
    memcpy(p->buf, ev.p, ev.n);
    p->a_len = (uint16_t)ev.n;
    if (to.kind == J_STRING) { memcpy(p->buf + ev.n, to.p, to.n); p->b_len = (uint16_t)to.n; }
    else { memcpy(p->buf + ev.n, "broadcast", 9); p->b_len = 9; }
    struct jw *w = req_begin(ns, "EMIT", p);
    put_member(w, "event", &ev);
    if (to.kind == J_STRING) put_member(w, "to", &to);
    jw_lit(w, ",\"payload\":");
    put(w, &payload);
    jw_lit(w, ",\"ack\":true");
    put_token(w, &opt);
    jw_lit(w, "}");
    return req_send(ns);
}

static int req_call(struct sns *ns, const struct env_val *arg, int64_t ack)
{
    struct env_val svc = member(arg, "service"), method = member(arg, "method"), params = member(arg, "params"),
                   opt = member(arg, "options"), timeout = member(&opt, "timeout");
    int64_t ms = 0;
    if (arg->kind != J_OBJECT || svc.kind != J_STRING || method.kind != J_STRING ||
        (timeout.kind != J_NONE && (env_number_i64(&timeout, &ms) || ms <= 0))) {
        local_error(ns, ack, LB_E_INVALID_MESSAGE,
                    "ipc:call takes {service: string, method: string, params, options: {timeout: ms, token}}", true);
        return 0;
    }
    if (ack < 0) {
        local_error(ns, -1, LB_E_INVALID_MESSAGE, "ipc:call needs an acknowledgement callback for its result", true);
        return 0;
    }
    struct pend *p = req_new(ns, PK_CALL, ack);
    if (!p) return 0;
    struct jw *w = req_begin(ns, "CALL", p);
    put_member(w, "to", &svc);
    put_member(w, "method", &method);
    put_member(w, "params", &params);
    put_token(w, &opt);
    if (ms > 0) {
        jw_lit(w, ",\"context\":{\"root\":\"");
        jw_raw(w, ns->sid, WSP_SID_LEN);
        jw_lit(w, ".");
        jw_u64(w, p->key);
        jw_lit(w, "\",\"chain\":[");
        jw_cstr(w, ns->svc);
        jw_lit(w, "],\"depth\":1,\"deadline\":");
        jw_u64(w, lb_now_ms() + (uint64_t)ms);
        jw_lit(w, "}");
    }
    jw_lit(w, "}");
    return req_send(ns);
}

static int req_subscribe(struct sns *ns, const struct env_val *arg, int64_t ack, bool add)
{
    struct env_val evs = arg->kind == J_OBJECT ? member(arg, "events") : *arg;
    if (evs.kind != J_ARRAY && evs.kind != J_STRING) {
        local_error(ns, ack, LB_E_INVALID_MESSAGE, "ipc:subscribe takes {events: [patterns]}", false);
        return 0;
    }
    struct pend *p = req_new(ns, add ? PK_SUB : PK_UNSUB, ack);
    if (!p) return 0;
    struct jw *w = req_begin(ns, add ? "SUBSCRIBE" : "UNSUBSCRIBE", p);
    jw_lit(w, ",\"events\":");
    if (evs.kind == J_STRING) { jw_lit(w, "["); put(w, &evs); jw_lit(w, "]"); }
    else put(w, &evs);
    jw_lit(w, "}");
    return req_send(ns);
}

static int req_crud(struct sns *ns, const char *op, const struct env_val *arg, int64_t ack)
{
    struct env_val res = member(arg, "resource"), opt = member(arg, "options"), to = member(&opt, "service");
    if (arg->kind != J_OBJECT || res.kind != J_STRING || (to.kind != J_NONE && to.kind != J_STRING)) {
        local_error(ns, ack, LB_E_INVALID_MESSAGE, "ipc:create/read/update/delete take {resource: string, data | query | id, options}", false);
        return 0;
    }
    if (ack < 0) {
        local_error(ns, -1, LB_E_INVALID_MESSAGE, "CRUD requests need an acknowledgement callback for their result", false);
        return 0;
    }
    struct pend *p = req_new(ns, PK_CRUD, ack);
    if (!p) return 0;
    struct jw *w = req_begin(ns, "CRUD", p);
    jw_lit(w, ",\"op\":\"");
    jw_raw(w, op, strlen(op));
    jw_lit(w, "\"");
    put_member(w, "resource", &res);
    struct env_val key = member(arg, "id"), data = member(arg, "data"), query = member(arg, "query");
    put_member(w, "key", &key);
    put_member(w, "data", &data);
    put_member(w, "query", &query);
    put_member(w, "to", &to);
    put_token(w, &opt);
    jw_lit(w, "}");
    return req_send(ns);
}

static int req_jsonlex(struct sns *ns, const struct env_val *arg, int64_t ack)
{
    struct env_val expr = member(arg, "expression"), ctx = member(arg, "context");
    if (arg->kind != J_OBJECT || expr.kind == J_NONE) {
        local_error(ns, ack, LB_E_INVALID_MESSAGE, "ipc:jsonlex takes {expression, context}", false);
        return 0;
    }
    if (ack < 0) {
        local_error(ns, -1, LB_E_INVALID_MESSAGE, "ipc:jsonlex needs an acknowledgement callback for its result", false);
        return 0;
    }
    struct pend *p = req_new(ns, PK_JSONLEX, ack);
    if (!p) return 0;
    struct jw *w = req_begin(ns, "CALL", p);
    jw_lit(w, ",\"to\":");
    jw_cstr(w, lb_bus_system_service(eio_ctx(ns->s)));
    jw_lit(w, ",\"method\":\"jsonlex\",\"params\":{\"expr\":");
    put(w, &expr);
    jw_lit(w, ",\"context\":");
    if (ctx.kind == J_NONE) jw_lit(w, "{}");
    else put(w, &ctx);
    jw_lit(w, "}}");
    return req_send(ns);
}

static bool name_is(const struct env_val *n, const char *s)
{
    return n->n == strlen(s) && memcmp(n->p, s, n->n) == 0;
}

/* An EVENT from the client.  Returns -1 when ns is gone. */
static int client_event(struct sns *ns, const struct sio_packet *pk)
{
    struct env_val arg = { 0 };
    const char *cur = pk->args;
    if (!env_array_next(&pk->data, &cur, &arg)) memset(&arg, 0, sizeof arg);
    const struct env_val *n = &pk->name;
    if (name_is(n, "ipc:emit")) return req_emit(ns, &arg, pk->ack);
    if (name_is(n, "ipc:call")) return req_call(ns, &arg, pk->ack);
    if (name_is(n, "ipc:subscribe")) return req_subscribe(ns, &arg, pk->ack, true);
    if (name_is(n, "ipc:unsubscribe")) return req_subscribe(ns, &arg, pk->ack, false);
    if (name_is(n, "ipc:create")) return req_crud(ns, "create", &arg, pk->ack);
    if (name_is(n, "ipc:read")) return req_crud(ns, "read", &arg, pk->ack);
    if (name_is(n, "ipc:update")) return req_crud(ns, "update", &arg, pk->ack);
    if (name_is(n, "ipc:delete")) return req_crud(ns, "delete", &arg, pk->ack);
    if (name_is(n, "ipc:jsonlex")) return req_jsonlex(ns, &arg, pk->ack);
    char msg[400];
    snprintf(msg, sizeof msg, "unknown event '%.*s': this bridge speaks ipc:emit, ipc:call, ipc:subscribe, "
             "ipc:unsubscribe, ipc:create, ipc:read, ipc:update, ipc:delete and ipc:jsonlex", (int)(n->n > 128 ? 128 : n->n), n->p);
    local_error(ns, pk->ack, LB_E_INVALID_MESSAGE, msg, false);
    return 0;
}

/* The client's ack of a bus CALL (ipc:call with a callback): the RESPONSE. */
static int client_ack(struct sns *ns, const struct sio_packet *pk)
{
    struct pend *p = pend_find(&ns->sacks, (uint64_t)pk->ack);
    if (!p) {
        lb_log(eio_ctx(ns->s), LB_LOG_DEBUG, "%s %s: ack %lld matches no call (late or unknown): dropped",
               eio_addr(ns->s), ns->nsp, (long long)pk->ack);
        return 0;
    }
    struct env_val arg = { 0 };
    const char *cur = NULL;
    if (!env_array_next(&pk->data, &cur, &arg)) memset(&arg, 0, sizeof arg);
    struct jw *w = &WP(ns)->reqbuf;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"RESPONSE\",\"id\":\"");
    jw_raw(w, p->buf, p->a_len);
    jw_lit(w, "\"");
    pend_done(ns, &ns->sacks, &ns->n_sacks, p);
    struct env_val ok = member(&arg, "success");
    if (ok.kind == J_FALSE) {
        /* {success: false, error: {code, message}} (or a string). */
        struct env_val err = member(&arg, "error");
        jw_lit(w, ",\"status\":\"error\",\"error\":");
        if (err.kind == J_OBJECT) put(w, &err);
        else {
            jw_lit(w, "{\"code\":\"" LB_E_EXECUTION_FAILED "\",\"message\":");
            if (err.kind == J_STRING) put(w, &err);
            else jw_lit(w, "\"the Socket.IO handler reported a failure\"");
            jw_lit(w, "}");
        }
    } else {
        struct env_val data = ok.kind == J_TRUE ? member(&arg, "data") : arg;
        jw_lit(w, ",\"status\":\"success\",\"data\":");
        put(w, &data);
    }
    jw_lit(w, "}");
    return lb_conn_input(ns->conn, w->buf, w->len);
}

/* ---- joining a namespace ------------------------------------------- */

static void send_connect_error(struct eio *s, const char *nsp, size_t n, const char *payload)
{
    struct jw *w = &eio_wsp(s)->scratch;
    jw_reset(w);
    jw_lit(w, "44");
    if (!(n == 1 && nsp[0] == '/')) { jw_raw(w, nsp, n); jw_lit(w, ","); }
    jw_raw(w, payload, strlen(payload));
    eio_send(s, w->buf, w->len);
}

static void refuse_join(struct eio *s, const struct sio_packet *pk, const char *code, const char *msg)
{
    char payload[512];
    struct jw t;
    jw_init(&t, 128);
    jw_lit(&t, "{\"message\":");
    jw_cstr(&t, msg);
    jw_lit(&t, ",\"data\":{\"code\":");
    jw_cstr(&t, code);
    jw_lit(&t, "}}");
    snprintf(payload, sizeof payload, "%.*s", (int)t.len, t.buf);
    jw_free(&t);
    eio_wsp(s)->n.sio_refused++;
    send_connect_error(s, pk->nsp, pk->nsp_len, payload);
}

/* The service a namespace stands for: /ipc/<name> -> names.<name>, or
 * <prefix><name>.  Returns 0, or -1 for any other namespace. */
static int service_for(const struct wsp *wp, const char *nsp, size_t n, char out[LB_MAX_NAME + 1])
{
    if (n <= 5 || memcmp(nsp, "/ipc/", 5) != 0) return -1;
    const char *name = nsp + 5;
    size_t k = n - 5;
    for (size_t i = 0; i < wp->c.n_names; i++)
        if (strlen(wp->c.names[i].from) == k && !memcmp(wp->c.names[i].from, name, k)) {
            snprintf(out, LB_MAX_NAME + 1, "%s", wp->c.names[i].to);
            return 0;
        }
    size_t pl = strlen(wp->c.prefix);
    if (!valid_service_name(name, k) || pl + k > LB_MAX_NAME) return -1;
    memcpy(out, wp->c.prefix, pl);
    memcpy(out + pl, name, k);
    out[pl + k] = 0;
    return 0;
}

static const struct lb_conn_ops sio_ops;

/* Ends a namespace from our side: packet (41 or 44, or none), then it
 * leaves the bus.  Never from inside a host callback for this conn. */
static void ns_drop(struct sns *ns, const char *packet_type, const char *why)
{
    if (packet_type) {
        if (*packet_type == '4' && ns->refuse[0]) send_connect_error(ns->s, ns->nsp, ns->nsp_len, ns->refuse);
        else { pkt(ns, *packet_type, -1); pkt_send(ns); }
    }
    sns_detach(ns, why);
}

void sns_detach(struct sns *ns, const char *why)
{
    ns->detaching = true;
    struct lb_conn *c = ns->conn;
    ns->conn = NULL;
    if (c) lb_conn_gone(c, why);   /* op_close: nothing to do */
    ns_free(ns);
}

static int join(struct eio *s, const struct sio_packet *pk)
{
    struct wsp *wp = eio_wsp(s);
    char svc[LB_MAX_NAME + 1];
    if (eio_ns_count(s) >= (size_t)wp->c.max_namespaces) {
        refuse_join(s, pk, LB_E_FORBIDDEN, "too many namespaces on one connection (max_namespaces)");
        return 0;
    }
    if (service_for(wp, pk->nsp, pk->nsp_len, svc) != 0) {
        refuse_join(s, pk, LB_E_SERVICE_NOT_FOUND, "Invalid namespace (this bridge serves /ipc/<service>)");
        return 0;
    }
    struct env_val tok = member(&pk->data, "token");
    if (tok.kind != J_NONE && (tok.kind != J_STRING || tok.n > LB_MAX_TOKEN)) {
        refuse_join(s, pk, LB_E_UNAUTHENTICATED, "auth.token must be a string (a broker token)");
        return 0;
    }
    struct sns *ns = xcalloc(1, sizeof *ns);
    ns->s = s;
    memcpy(ns->nsp, pk->nsp, pk->nsp_len);
    ns->nsp_len = pk->nsp_len;
    memcpy(ns->svc, svc, sizeof svc);
    wsp_random_id(ns->sid);
    ht_init(&ns->reqs, 3);
    ht_init(&ns->sacks, 3);
    struct lb_peer peer = { .transport = "socket.io", .address = eio_addr(s) };
    ns->conn = lb_conn_new(wp->ctx, &sio_ops, ns, &peer);
    if (!ns->conn) {
        ht_free(&ns->reqs);
        ht_free(&ns->sacks);
        free(ns);
        refuse_join(s, pk, LB_E_SHUTTING_DOWN, "the bus refused the connection (max_connections, draining, or a policy)");
        return 0;
    }
    eio_add_ns(s, ns);
    struct jw *w = &wp->reqbuf;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"REGISTER\",\"serviceName\":");
    jw_cstr(w, svc);
    jw_lit(w, ",\"version\":\"socket.io\",\"metadata\":{\"transport\":\"socket.io\",\"namespace\":");
    jw_str(w, ns->nsp, ns->nsp_len);
    jw_lit(w, ",\"sid\":\"");
    jw_raw(w, ns->sid, WSP_SID_LEN);
    jw_lit(w, "\",\"address\":");
    jw_cstr(w, eio_addr(s));
    jw_lit(w, "},\"subscribe\":");
    jw_raw(w, wp->c.subscribe_json, strlen(wp->c.subscribe_json));
    if (tok.kind == J_STRING) put_member(w, "token", &tok);
    jw_lit(w, "}");
    if (lb_conn_input(ns->conn, w->buf, w->len) < 0) return 0;   /* closed: op_close told the client */
    if (ns->st == NS_REFUSED) ns_drop(ns, "4", "REGISTER refused");
    return 0;
}

/* ---- packets from the client --------------------------------------- */

int sio_packet_in(struct eio *s, const char *p, size_t n, const char **why)
{
    struct sio_packet pk;
    if (sio_parse(p, n, &pk, why) != 0) return -1;
    struct sns *ns = eio_find_ns(s, pk.nsp, pk.nsp_len);
    if (pk.type == SIO_BINARY_EVENT || pk.type == SIO_BINARY_ACK) {
        /* Refused, clearly: the namespace gets a CONNECT_ERROR saying why
         * and leaves the bus; its attachments are dropped as they come. */
        eio_wsp(s)->n.binary_refused++;
        eio_skip_binary(s, pk.attachments);
        static const char msg[] = "binary attachments are not supported: lexbus carries JSON (send base64 in a string)";
        if (ns) {
            snprintf(ns->refuse, sizeof ns->refuse, "{\"message\":\"%s\",\"data\":{\"code\":\"" LB_E_INVALID_MESSAGE "\"}}", msg);
            ns_drop(ns, "4", "binary attachments refused");
        } else {
            refuse_join(s, &pk, LB_E_INVALID_MESSAGE, msg);
        }
        return 0;
    }
    switch (pk.type) {
    case SIO_CONNECT:
        if (ns) { *why = "a second CONNECT for a namespace already joined"; return -1; }
        return join(s, &pk);
    case SIO_DISCONNECT:
        if (ns) ns_drop(ns, NULL, "the client left the namespace");
        return 0;
    case SIO_EVENT: case SIO_ACK:
        if (!ns || ns->st != NS_JOINED) { *why = "a packet for a namespace not joined"; return -1; }
        if (pk.type == SIO_EVENT) client_event(ns, &pk);
        else client_ack(ns, &pk);
        return 0;
    default:
        *why = "CONNECT_ERROR is sent by the server, not to it";
        return -1;
    }
}

void sns_heartbeat(struct sns *ns)
{
    if (ns->conn && ns->st == NS_JOINED) lb_conn_input(ns->conn, HEARTBEAT_FRAME, sizeof HEARTBEAT_FRAME - 1);
}

/* ---- frames from the bus ------------------------------------------- */

/* The request an ACK, RESPONSE or ERROR answers, from its id. */
static struct pend *answered(struct sns *ns, const struct env_val *id)
{
    if (id->kind != J_STRING || id->n <= WSP_SID_LEN + 1 || memcmp(id->p, ns->sid, WSP_SID_LEN) != 0 ||
        id->p[WSP_SID_LEN] != '.')
        return NULL;
    uint64_t k = 0;
    for (size_t i = WSP_SID_LEN + 1; i < id->n; i++) {
        if (id->p[i] < '0' || id->p[i] > '9' || k > UINT64_MAX / 10 - 10) return NULL;
        k = k * 10 + (uint64_t)(id->p[i] - '0');
    }
    return pend_find(&ns->reqs, k);
}

static void on_register_ack(struct sns *ns, const struct env_val *frame)
{
    if (ns->st != NS_JOINING) return;
    ns->st = NS_JOINED;
    eio_wsp(ns->s)->n.sio_joins++;
    struct env_val hb = member(frame, "heartbeatInterval");
    int64_t ms;
    if (hb.kind == J_NUMBER && env_number_i64(&hb, &ms) == 0 && ms > 0) eio_note_heartbeat(ns->s, (uint64_t)ms);
    struct jw *w = pkt(ns, '0', -1);
    jw_lit(w, "{\"sid\":\"");
    jw_raw(w, ns->sid, WSP_SID_LEN);
    jw_lit(w, "\"}");
    pkt_send(ns);
}

static void refused(struct sns *ns, const struct env_val *err)
{
    struct env_val code, msg;
    error_parts(err, &code, &msg);
    struct jw t;
    jw_init(&t, 128);
    jw_lit(&t, "{\"message\":");
    if (msg.kind == J_STRING) put(&t, &msg);
    else jw_lit(&t, "\"refused\"");
    jw_lit(&t, ",\"data\":{\"code\":");
    put_code(&t, &code);
    jw_lit(&t, "}}");
    snprintf(ns->refuse, sizeof ns->refuse, "%.*s", (int)t.len, t.buf);
    if (t.len >= sizeof ns->refuse)
        snprintf(ns->refuse, sizeof ns->refuse, "{\"message\":\"refused\",\"data\":{\"code\":\"%s\"}}", LB_E_UNAUTHENTICATED);
    jw_free(&t);
    ns->st = NS_REFUSED;
    eio_wsp(ns->s)->n.sio_refused++;
    eio_later(ns->s);   /* ended there unless join() ends it first */
}

static void emit_answered(struct sns *ns, struct pend *p, const struct envelope *e, const struct env_val *frame)
{
    if (e->type == LB_MSG_ACK) {
        struct jw *w = pkt(ns, '2', -1);
        jw_lit(w, "[\"ipc:ack\",{\"event\":");
        jw_str(w, p->buf, p->a_len);
        jw_lit(w, ",\"target\":");
        jw_str(w, p->buf + p->a_len, p->b_len);
        jw_lit(w, "}]");
        pkt_send(ns);
        if (p->ack >= 0) {
            struct env_val d = member(frame, "delivered");
            w = pkt(ns, '3', p->ack);
            jw_lit(w, "[{\"success\":true,\"delivered\":");
            put(w, &d);
            jw_lit(w, "}]");
            pkt_send(ns);
        }
        return;
    }
    send_ipc_error(ns, &e->f[F_ERROR], p->buf, p->a_len);
    if (p->ack >= 0) {
        struct jw *w = pkt(ns, '3', p->ack);
        jw_lit(w, "[");
        put_fail_flat(w, &e->f[F_ERROR]);
        jw_lit(w, "]");
        pkt_send(ns);
    }
}

/* The answer to a request other than an emit. */
static void request_answered(struct sns *ns, struct pend *p, const struct envelope *e, const struct env_val *frame)
{
    bool ok = e->type == LB_MSG_ACK || (e->type == LB_MSG_RESPONSE && env_str_eq(&e->f[F_STATUS], "success", 7));
    const struct env_val *err = &e->f[F_ERROR];
    if (!ok && p->ack < 0) { send_ipc_error(ns, err, NULL, 0); return; }
    if (p->ack < 0) return;
    struct jw *w = pkt(ns, '3', p->ack);
    jw_lit(w, "[");
    if (!ok && p->kind == PK_CALL) {
        jw_lit(w, "{\"success\":false,\"error\":");
        if (err->kind == J_OBJECT) put(w, err);
        else jw_lit(w, "{\"code\":\"" LB_E_EXECUTION_FAILED "\",\"message\":\"the call failed\"}");
        jw_lit(w, "}");
    } else if (!ok) {
        put_fail_flat(w, err);
    } else if (e->type == LB_MSG_ACK) {
        struct env_val n = member(frame, "subscriptions");
        jw_lit(w, "{\"success\":true,\"subscriptions\":");
        put(w, &n);
        jw_lit(w, "}");
    } else {
        if (p->kind == PK_JSONLEX) jw_lit(w, "{\"success\":true,\"result\":");
        else jw_lit(w, "{\"success\":true,\"data\":");
        put(w, &e->f[F_DATA]);
        jw_lit(w, "}");
    }
    jw_lit(w, "]");
    pkt_send(ns);
}

static void on_event(struct sns *ns, const struct envelope *e)
{
    const struct env_val *f = e->f;
    struct jw *w = pkt(ns, '2', -1);
    jw_lit(w, "[");
    put(w, &f[F_EVENT]);
    jw_lit(w, ",");
    put(w, &f[F_PAYLOAD]);
    jw_lit(w, ",{\"source\":");
    put(w, &f[F_FROM]);
    jw_lit(w, ",\"target\":");
    put(w, &f[F_TO]);
    jw_lit(w, ",\"id\":");
    put(w, &f[F_ID]);
    if (f[F_TOKEN].kind != J_NONE) { jw_lit(w, ",\"token\":"); put(w, &f[F_TOKEN]); }
    jw_lit(w, "}]");
    pkt_send(ns);
}

static void sweep_sacks(struct ht_node *n, void *ud)
{
    struct sns *ns = ud;
    struct pend *p = container_of(n, struct pend, hn);
    if (p->expires_ms < lb_now_ms()) pend_done(ns, &ns->sacks, &ns->n_sacks, p);
}

/* A CALL to this namespace's service: ipc:call with a server ack id. */
static void on_call(struct sns *ns, const struct envelope *e)
{
    const struct env_val *f = e->f;
    if ((long long)ns->n_sacks >= WP(ns)->c.max_pending) ht_each(&ns->sacks, sweep_sacks, ns);
    int64_t ack = ns->next_sack++;
    struct pend *p = pend_new(ns, &ns->sacks, &ns->n_sacks, (uint64_t)ack);
    if (!p) {
        /* Answered from `later`: this is the host's own call path. */
        p = xmalloc(sizeof *p);
        memcpy(p->buf, f[F_ID].p, f[F_ID].n);
        p->a_len = (uint16_t)f[F_ID].n;
        p->next = ns->refused_calls;
        ns->refused_calls = p;
        eio_later(ns->s);
        return;
    }
    p->kind = PK_SACK;
    memcpy(p->buf, f[F_ID].p, f[F_ID].n);   /* validated by the bus: <= 128 bytes */
    p->a_len = (uint16_t)f[F_ID].n;
    int64_t dl = 0;
    struct env_val d = member(&f[F_CONTEXT], "deadline");
    p->expires_ms = d.kind == J_NUMBER && env_number_i64(&d, &dl) == 0 && dl > 0 ? (uint64_t)dl + 1000
                                                                              : lb_now_ms() + SACK_DEFAULT_TTL_MS;
    struct jw *w = pkt(ns, '2', ack);
    jw_lit(w, "[\"ipc:call\",{\"id\":");
    put(w, &f[F_ID]);
    jw_lit(w, ",\"from\":");
    put(w, &f[F_FROM]);
    jw_lit(w, ",\"method\":");
    put(w, &f[F_METHOD]);
    jw_lit(w, ",\"params\":");
    put(w, &f[F_PARAMS]);
    jw_lit(w, ",\"context\":");
    put(w, &f[F_CONTEXT]);
    jw_lit(w, "}]");
    pkt_send(ns);
}

static int sio_send(void *tdata, const struct iovec *iov, int iovcnt)
{
    struct sns *ns = tdata;
    if (ns->detaching) return -1;
    const char *p = iov[0].iov_base;
    size_t n = iov[0].iov_len;
    struct jw *cat = NULL;
    if (iovcnt > 1) {
        cat = &WP(ns)->catbuf;
        jw_reset(cat);
        for (int i = 0; i < iovcnt; i++) jw_raw(cat, iov[i].iov_base, iov[i].iov_len);
        p = cat->buf;
        n = cat->len;
    }
    struct envelope e;
    const char *err;
    if (envelope_parse(&e, p, n, &err) != ENV_OK) return 0;   /* the bus's own frames are valid */
    struct env_val frame = { p, (uint32_t)n, J_OBJECT, 0 };
    struct pend *req;
    if (e.type == LB_MSG_ERROR) ns->error_ms = lb_now_ms();
    switch (e.type) {
    case LB_MSG_EVENT:
        on_event(ns, &e);
        break;
    case LB_MSG_CALL:
        on_call(ns, &e);
        break;
    case LB_MSG_REGISTER_ACK:
        on_register_ack(ns, &frame);
        break;
    case LB_MSG_ACK: case LB_MSG_RESPONSE: case LB_MSG_ERROR:
        if ((req = answered(ns, &e.f[F_ID]))) {
            if (req->kind == PK_EMIT) emit_answered(ns, req, &e, &frame);
            else request_answered(ns, req, &e, &frame);
            pend_done(ns, &ns->reqs, &ns->n_reqs, req);
        } else if (e.type == LB_MSG_ERROR && ns->st == NS_JOINING) {
            refused(ns, &e.f[F_ERROR]);
        } else if (e.type == LB_MSG_ERROR) {
            send_ipc_error(ns, &e.f[F_ERROR], NULL, 0);
        }
        break;
    default:
        break;   /* HEARTBEAT */
    }
    return 0;
}

static size_t sio_pending(void *tdata) { return eio_pending(((struct sns *)tdata)->s); }

static void sio_set_read(void *tdata, bool enabled)
{
    struct sns *ns = tdata;
    if (ns->paused == !enabled) return;
    ns->paused = !enabled;
    eio_pause(ns->s, !enabled);
}

static void sio_close(void *tdata, bool flush)
{
    struct sns *ns = tdata;
    ns->conn = NULL;
    if (ns->detaching) return;
    if (flush && ns->error_ms && ns->error_ms == lb_now_ms()) {
        /* The bus ended it after an ERROR (eviction, a revoked token; it
         * went out as ipc:error): a server-side disconnect, which the
         * client does not retry by itself. */
        if (ns->st == NS_JOINED) { pkt(ns, '1', -1); pkt_send(ns); }
        else send_connect_error(ns->s, ns->nsp, ns->nsp_len,
                                ns->refuse[0] ? ns->refuse : "{\"message\":\"closed by the bus\"}");
    } else if (flush) {
        /* No ERROR: the bus is shutting down.  Ending the session's
         * transport (not a disconnect) makes the client reconnect. */
        eio_close_from_host(ns->s, 1001, "lexbusd is going away");
    } else {
        /* A slow consumer or a failed send: the session's output is what
         * is stuck, so the whole session goes (after this callback). */
        eio_close_from_host(ns->s, 1011, "the bus dropped the connection (slow consumer or failed send)");
    }
    ns_free(ns);
}

static int sio_flush(void *tdata) { return eio_flush(((struct sns *)tdata)->s); }

static const struct lb_conn_ops sio_ops = {
    .send = sio_send, .pending = sio_pending, .set_read = sio_set_read, .close = sio_close, .flush = sio_flush,
};

/* ---- deferred work ------------------------------------------------- */

static void answer_refused_calls(struct sns *ns)
{
    while (ns->refused_calls && ns->conn) {
        struct pend *p = ns->refused_calls;
        ns->refused_calls = p->next;
        struct jw *w = &WP(ns)->reqbuf;
        jw_reset(w);
        jw_lit(w, "{\"type\":\"RESPONSE\",\"id\":\"");
        jw_raw(w, p->buf, p->a_len);
        jw_lit(w, "\",\"status\":\"error\",\"error\":{\"code\":\"" LB_E_SERVICE_UNAVAILABLE "\",\"message\":"
                  "\"too many calls in flight to this Socket.IO client (max_pending)\"}}");
        free(p);
        if (lb_conn_input(ns->conn, w->buf, w->len) < 0) return;
    }
}

void bridge_later(struct eio *s)
{
    /* From the end: dropping a namespace removes it from the array. */
    for (size_t i = eio_ns_count(s); i-- > 0;) {
        if (i >= eio_ns_count(s)) continue;
        struct sns *ns = eio_ns_at(s, i);
        if (ns->st == NS_REFUSED) { ns_drop(ns, "4", "REGISTER refused"); continue; }
        if (ns->refused_calls) answer_refused_calls(ns);
    }
}
