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
 *
 * The layer above the Engine.IO session (session.h): what the session
 * hears comes here through bridge_eio_ops, which websocket.c gives it.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bridge.h"
#include "session.h"
#include "eio.h"

#define SACK_DEFAULT_TTL_MS (10 * 60 * 1000)

enum pend_kind { PK_EMIT, PK_CALL, PK_SUB, PK_UNSUB, PK_CRUD, PK_JSONLEX, PK_SACK };

/* A request waiting for the bus's answer (key: its handle in ns->reqs,
 * which is in the request's id), or a bus CALL waiting for the client's
 * ack (PK_SACK, key: its handle in ns->sacks, which is the ack id). */
struct pend {
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
    bool slow;                     /* the bus sent SLOW_CONSUMER: it is about to close us */
    char refuse[400];              /* the CONNECT_ERROR payload once refused */
    struct slots reqs, sacks;
    struct pend *free_list;
    struct pend *refused_calls;    /* CALLs over max_pending, answered from `later` */
};

const char *sns_name(const struct sns *ns, size_t *n) { *n = ns->nsp_len; return ns->nsp; }
struct lb_conn *sns_conn(const struct sns *ns) { return ns->detaching ? NULL : ns->conn; }

static struct wsp *WP(const struct sns *ns) { return eio_wsp(ns->s); }

/* ---- pending table ------------------------------------------------- */

static struct pend *pend_new(struct sns *ns, struct slots *t)
{
    if ((long long)t->count >= WP(ns)->c.max_pending) return NULL;
    struct pend *p = ns->free_list;
    if (p) ns->free_list = p->next;
    else p = wsp_alloc(sizeof *p);
    memset(p, 0, offsetof(struct pend, buf));
    if ((p->key = slots_add(t, p)) == SLOT_NONE) { p->next = ns->free_list; ns->free_list = p; return NULL; }
    p->ack = -1;
    return p;
}

static void pend_done(struct sns *ns, struct slots *t, struct pend *p)
{
    slots_del(t, p->key);
    p->next = ns->free_list;
    ns->free_list = p;
}

static void free_all(struct slots *t)
{
    for (uint32_t i = 0; i < t->cap; i++) free(slots_at(t, i));
    slots_free(t);
}

static void ns_free(struct sns *ns)
{
    if (ns->paused) eio_pause(ns->s, false);
    eio_remove_ns(ns->s, ns);
    free_all(&ns->reqs);
    free_all(&ns->sacks);
    for (struct pend *p = ns->free_list, *n; p; p = n) { n = p->next; free(p); }
    for (struct pend *p = ns->refused_calls, *n; p; p = n) { n = p->next; free(p); }
    free(ns);
}

/* ---- packets to the client ----------------------------------------- */

/* "4<type><nsp>,<ack>" into the scratch buffer: the head of every packet
 * to the client, for namespace nsp of session s. */
static struct lb_jw *pkt_to(struct eio *s, const char *nsp, size_t n, char type, int64_t ack)
{
    struct lb_jw *w = eio_wsp(s)->scratch;
    lb_jw_reset(w);
    char head[2] = { '4', type };
    lb_jw_raw(w, head, 2);
    if (!(n == 1 && nsp[0] == '/')) { lb_jw_raw(w, nsp, n); JW_LIT(w, ","); }
    if (ack >= 0) lb_jw_int(w, ack);
    return w;
}

static struct lb_jw *pkt(struct sns *ns, char type, int64_t ack)
{
    return pkt_to(ns->s, ns->nsp, ns->nsp_len, type, ack);
}

static void pkt_send_to(struct eio *s)
{
    size_t n;
    const char *p = lb_jw_data(eio_wsp(s)->scratch, &n);
    eio_send(s, p, n);
}

static void pkt_send(struct sns *ns) { pkt_send_to(ns->s); }

/* A value from a parsed frame, as JSON text (null when absent). */
static void put(struct lb_jw *w, const struct env_val *v)
{
    if (v->kind == J_NONE) JW_LIT(w, "null");
    else if (v->kind == J_STRING) lb_jw_raw(w, v->p - 1, v->n + 2);
    else lb_jw_raw(w, v->p, v->n);
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

static void put_code(struct lb_jw *w, const struct env_val *code)
{
    if (code->kind == J_STRING) put(w, code);
    else JW_LIT(w, "\"" LB_E_INTERNAL_ERROR "\"");
}

/* {"success":false,"error":<message>,"code":<code>} */
static void put_fail_flat(struct lb_jw *w, const struct env_val *err)
{
    struct env_val code, msg;
    error_parts(err, &code, &msg);
    JW_LIT(w, "{\"success\":false,\"error\":");
    if (msg.kind == J_STRING) put(w, &msg);
    else JW_LIT(w, "\"request failed\"");
    JW_LIT(w, ",\"code\":");
    put_code(w, &code);
    JW_LIT(w, "}");
}

/* ipc:error {"error":<code>,"message":<message>[,"event":...]} */
static void send_ipc_error(struct sns *ns, const struct env_val *err, const char *ev, size_t ev_len)
{
    struct env_val code, msg;
    error_parts(err, &code, &msg);
    struct lb_jw *w = pkt(ns, '2', -1);
    JW_LIT(w, "[\"ipc:error\",{\"error\":");
    put_code(w, &code);
    JW_LIT(w, ",\"message\":");
    if (msg.kind == J_STRING) put(w, &msg);
    else JW_LIT(w, "\"request failed\"");
    if (ev) { JW_LIT(w, ",\"event\":"); lb_jw_str(w, ev, ev_len); }
    struct env_val retry = member(err, "retryAfterMs");
    if (retry.kind == J_NUMBER) { JW_LIT(w, ",\"retryAfterMs\":"); put(w, &retry); }
    JW_LIT(w, "}]");
    pkt_send(ns);
}

/* A refusal made here, before anything reached the bus: the same shapes
 * as the bus's own errors. */
static void local_error(struct sns *ns, int64_t ack, const char *code, const char *msg, bool call_shape)
{
    struct lb_jw *t = WP(ns)->errbuf;
    lb_jw_reset(t);
    JW_LIT(t, "{\"code\":");
    JW_CSTR(t, code);
    JW_LIT(t, ",\"message\":");
    JW_CSTR(t, msg);
    JW_LIT(t, "}");
    size_t tn;
    const char *tp = lb_jw_data(t, &tn);
    struct env_val err = { tp, (uint32_t)tn, J_OBJECT, 0 };
    if (ack < 0) {
        send_ipc_error(ns, &err, NULL, 0);
    } else {
        struct lb_jw *w = pkt(ns, '3', ack);
        JW_LIT(w, "[");
        if (call_shape) { JW_LIT(w, "{\"success\":false,\"error\":"); lb_jw_raw(w, tp, tn); JW_LIT(w, "}"); }
        else put_fail_flat(w, &err);
        JW_LIT(w, "]");
        pkt_send(ns);
    }
}

/* ---- requests to the bus ------------------------------------------- */

/* {"type":"RESPONSE","id":"<id>" into reqbuf: the answer to a CALL of the bus. */
static struct lb_jw *resp_begin(struct sns *ns, const char *id, size_t n)
{
    struct lb_jw *w = WP(ns)->reqbuf;
    lb_jw_reset(w);
    JW_LIT(w, "{\"type\":\"RESPONSE\",\"id\":\"");
    lb_jw_raw(w, id, n);
    JW_LIT(w, "\"");
    return w;
}

static struct lb_jw *req_begin(struct sns *ns, const char *type, struct pend *p)
{
    struct lb_jw *w = WP(ns)->reqbuf;
    lb_jw_reset(w);
    JW_LIT(w, "{\"type\":\"");
    lb_jw_raw(w, type, strlen(type));
    JW_LIT(w, "\",\"id\":\"");
    lb_jw_raw(w, ns->sid, WSP_SID_LEN);
    JW_LIT(w, ".");
    lb_jw_int(w, (long long)(p->key));
    JW_LIT(w, "\"");
    return w;
}

/* Hands the frame to the bus.  Returns -1 when the connection (and ns)
 * is gone: the caller must not touch ns again. */
static int req_send(struct sns *ns)
{
    size_t n;
    const char *p = lb_jw_data(WP(ns)->reqbuf, &n);
    return lb_conn_input(ns->conn, p, n);
}

static struct pend *req_new(struct sns *ns, enum pend_kind kind, int64_t ack)
{
    struct pend *p = pend_new(ns, &ns->reqs);
    if (!p) {
        local_error(ns, ack, LB_E_RATE_LIMITED, "too many requests in flight on this namespace (max_pending)",
                    kind == PK_CALL);
        return NULL;
    }
    p->kind = (uint8_t)kind;
    p->ack = ack;
    return p;
}

static void put_member(struct lb_jw *w, const char *name, const struct env_val *v)
{
    if (v->kind == J_NONE) return;
    JW_LIT(w, ",\"");
    lb_jw_raw(w, name, strlen(name));
    JW_LIT(w, "\":");
    put(w, v);
}

static void put_token(struct lb_jw *w, const struct env_val *options)
{
    struct env_val tok = member(options, "token");
    if (tok.kind == J_STRING) put_member(w, "token", &tok);
}

/* A request whose answer is its result needs the client's ack callback
 * to take it: refused without one. */
static bool ack_missing(struct sns *ns, int64_t ack, const char *msg, bool call_shape)
{
    if (ack >= 0) return false;
    local_error(ns, -1, LB_E_INVALID_MESSAGE, msg, call_shape);
    return true;
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
    struct lb_jw *w = req_begin(ns, "EMIT", p);
    put_member(w, "event", &ev);
    if (to.kind == J_STRING) put_member(w, "to", &to);
    JW_LIT(w, ",\"payload\":");
    put(w, &payload);
    JW_LIT(w, ",\"ack\":true");
    put_token(w, &opt);
    JW_LIT(w, "}");
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
    if (ack_missing(ns, ack, "ipc:call needs an acknowledgement callback for its result", true)) return 0;
    struct pend *p = req_new(ns, PK_CALL, ack);
    if (!p) return 0;
    struct lb_jw *w = req_begin(ns, "CALL", p);
    put_member(w, "to", &svc);
    put_member(w, "method", &method);
    put_member(w, "params", &params);
    put_token(w, &opt);
    if (ms > 0) {
        JW_LIT(w, ",\"context\":{\"root\":\"");
        lb_jw_raw(w, ns->sid, WSP_SID_LEN);
        JW_LIT(w, ".");
        lb_jw_int(w, (long long)(p->key));
        JW_LIT(w, "\",\"chain\":[");
        JW_CSTR(w, ns->svc);
        JW_LIT(w, "],\"depth\":1,\"deadline\":");
        lb_jw_int(w, (long long)(lb_now_ms() + (uint64_t)ms));
        JW_LIT(w, "}");
    }
    JW_LIT(w, "}");
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
    struct lb_jw *w = req_begin(ns, add ? "SUBSCRIBE" : "UNSUBSCRIBE", p);
    JW_LIT(w, ",\"events\":");
    if (evs.kind == J_STRING) { JW_LIT(w, "["); put(w, &evs); JW_LIT(w, "]"); }
    else put(w, &evs);
    JW_LIT(w, "}");
    return req_send(ns);
}

static int req_crud(struct sns *ns, const char *op, const struct env_val *arg, int64_t ack)
{
    struct env_val res = member(arg, "resource"), opt = member(arg, "options"), to = member(&opt, "service");
    if (arg->kind != J_OBJECT || res.kind != J_STRING || (to.kind != J_NONE && to.kind != J_STRING)) {
        local_error(ns, ack, LB_E_INVALID_MESSAGE, "ipc:create/read/update/delete take {resource: string, data | query | id, options}", false);
        return 0;
    }
    if (ack_missing(ns, ack, "CRUD requests need an acknowledgement callback for their result", false)) return 0;
    struct pend *p = req_new(ns, PK_CRUD, ack);
    if (!p) return 0;
    struct lb_jw *w = req_begin(ns, "CRUD", p);
    JW_LIT(w, ",\"op\":\"");
    lb_jw_raw(w, op, strlen(op));
    JW_LIT(w, "\"");
    put_member(w, "resource", &res);
    struct env_val key = member(arg, "id"), data = member(arg, "data"), query = member(arg, "query");
    put_member(w, "key", &key);
    put_member(w, "data", &data);
    put_member(w, "query", &query);
    put_member(w, "to", &to);
    put_token(w, &opt);
    JW_LIT(w, "}");
    return req_send(ns);
}

static int req_jsonlex(struct sns *ns, const struct env_val *arg, int64_t ack)
{
    struct env_val expr = member(arg, "expression"), ctx = member(arg, "context");
    if (arg->kind != J_OBJECT || expr.kind == J_NONE) {
        local_error(ns, ack, LB_E_INVALID_MESSAGE, "ipc:jsonlex takes {expression, context}", false);
        return 0;
    }
    if (ack_missing(ns, ack, "ipc:jsonlex needs an acknowledgement callback for its result", false)) return 0;
    struct pend *p = req_new(ns, PK_JSONLEX, ack);
    if (!p) return 0;
    struct lb_jw *w = req_begin(ns, "CALL", p);
    JW_LIT(w, ",\"to\":");
    JW_CSTR(w, lb_bus_system_service(eio_ctx(ns->s)));
    JW_LIT(w, ",\"method\":\"jsonlex\",\"params\":{\"expr\":");
    put(w, &expr);
    JW_LIT(w, ",\"context\":");
    if (ctx.kind == J_NONE) JW_LIT(w, "{}");
    else put(w, &ctx);
    JW_LIT(w, "}}");
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
    struct pend *p = slots_get(&ns->sacks, (uint64_t)pk->ack);
    if (!p) {
        lb_log(eio_ctx(ns->s), LB_LOG_DEBUG, "%s %s: ack %lld matches no call (late or unknown): dropped",
               eio_addr(ns->s), ns->nsp, (long long)pk->ack);
        return 0;
    }
    struct env_val arg = { 0 };
    const char *cur = NULL;
    if (!env_array_next(&pk->data, &cur, &arg)) memset(&arg, 0, sizeof arg);
    struct lb_jw *w = resp_begin(ns, p->buf, p->a_len);
    pend_done(ns, &ns->sacks, p);
    struct env_val ok = member(&arg, "success");
    if (ok.kind == J_FALSE) {
        /* {success: false, error: {code, message}} (or a string). */
        struct env_val err = member(&arg, "error");
        JW_LIT(w, ",\"status\":\"error\",\"error\":");
        if (err.kind == J_OBJECT) put(w, &err);
        else {
            JW_LIT(w, "{\"code\":\"" LB_E_EXECUTION_FAILED "\",\"message\":");
            if (err.kind == J_STRING) put(w, &err);
            else JW_LIT(w, "\"the Socket.IO handler reported a failure\"");
            JW_LIT(w, "}");
        }
    } else {
        struct env_val data = ok.kind == J_TRUE ? member(&arg, "data") : arg;
        JW_LIT(w, ",\"status\":\"success\",\"data\":");
        put(w, &data);
    }
    JW_LIT(w, "}");
    return req_send(ns);
}

/* ---- joining a namespace ------------------------------------------- */

static void send_connect_error(struct eio *s, const char *nsp, size_t n, const char *payload)
{
    struct lb_jw *w = pkt_to(s, nsp, n, '4', -1);
    lb_jw_raw(w, payload, strlen(payload));
    pkt_send_to(s);
}

/* A CONNECT_ERROR payload for a refusal made here, {"message","data":
 * {"code"}}, into out (cut to fit). */
static void local_refusal(struct wsp *wp, const char *code, const char *msg, char *out, size_t cap)
{
    struct lb_jw *t = wp->errbuf;
    lb_jw_reset(t);
    JW_LIT(t, "{\"message\":");
    JW_CSTR(t, msg);
    JW_LIT(t, ",\"data\":{\"code\":");
    JW_CSTR(t, code);
    JW_LIT(t, "}}");
    size_t tn;
    const char *tp = lb_jw_data(t, &tn);
    snprintf(out, cap, "%.*s", (int)tn, tp);
}

static void refuse_join(struct eio *s, const struct sio_packet *pk, const char *code, const char *msg)
{
    char payload[512];
    local_refusal(eio_wsp(s), code, msg, payload, sizeof payload);
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
    if (!lb_service_name_valid(name, k) || pl + k > LB_MAX_NAME) return -1;
    memcpy(out, wp->c.prefix, pl);
    memcpy(out + pl, name, k);
    out[pl + k] = 0;
    return 0;
}

static const struct lb_conn_ops sio_ops;

/* The session ends: the namespace leaves the bus (no packet is sent). */
static void sns_detach(struct sns *ns, const char *why)
{
    ns->detaching = true;
    struct lb_conn *c = ns->conn;
    ns->conn = NULL;
    if (c) lb_conn_gone(c, why);   /* op_close: nothing to do */
    ns_free(ns);
}

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
    struct sns *ns = wsp_alloc(sizeof *ns);
    ns->s = s;
    memcpy(ns->nsp, pk->nsp, pk->nsp_len);
    ns->nsp_len = pk->nsp_len;
    memcpy(ns->svc, svc, sizeof svc);
    wsp_random_chars(ns->sid, WSP_SID_LEN);
    slots_init(&ns->reqs);
    slots_init(&ns->sacks);
    struct lb_peer peer;
    eio_peer(s, &peer);
    ns->conn = lb_conn_new(wp->ctx, &sio_ops, ns, &peer);
    if (!ns->conn) {
        free(ns);
        refuse_join(s, pk, LB_E_SHUTTING_DOWN, "the bus refused the connection (max_connections, draining, or a policy)");
        return 0;
    }
    lb_conn_set_encoding(ns->conn, LB_ENCODING_JSON);   /* the bridge writes JSON, and reads it back */
    eio_add_ns(s, ns);
    struct lb_jw *w = wp->reqbuf;
    lb_jw_reset(w);
    JW_LIT(w, "{\"type\":\"REGISTER\",\"serviceName\":");
    JW_CSTR(w, svc);
    JW_LIT(w, ",\"version\":\"socket.io\",\"metadata\":{\"transport\":\"socket.io\",\"namespace\":");
    lb_jw_str(w, ns->nsp, ns->nsp_len);
    JW_LIT(w, ",\"sid\":\"");
    lb_jw_raw(w, ns->sid, WSP_SID_LEN);
    JW_LIT(w, "\",\"address\":");
    JW_CSTR(w, eio_addr(s));
    JW_LIT(w, "},\"subscribe\":");
    lb_jw_raw(w, wp->c.subscribe_json, strlen(wp->c.subscribe_json));
    if (tok.kind == J_STRING) put_member(w, "token", &tok);
    JW_LIT(w, "}");
    if (req_send(ns) < 0) return 0;   /* closed: op_close told the client */
    if (ns->st == NS_REFUSED) ns_drop(ns, "4", "REGISTER refused");
    return 0;
}

/* ---- packets from the client --------------------------------------- */

static struct sns *find_ns(struct eio *s, const char *nsp, size_t n)
{
    for (size_t i = 0; i < eio_ns_count(s); i++) {
        struct sns *ns = eio_ns_at(s, i);
        if (ns->nsp_len == n && memcmp(ns->nsp, nsp, n) == 0) return ns;
    }
    return NULL;
}

/* A Socket.IO packet of the session (eio_ops.packet). */
static int sio_packet_in(struct eio *s, const char *p, size_t n, const char **why)
{
    struct sio_packet pk;
    if (sio_parse(p, n, &pk, why) != 0) return -1;
    struct sns *ns = find_ns(s, pk.nsp, pk.nsp_len);
    if (pk.type == SIO_BINARY_EVENT || pk.type == SIO_BINARY_ACK) {
        /* Refused, clearly: the namespace gets a CONNECT_ERROR saying why
         * and leaves the bus; its attachments are dropped as they come. */
        eio_wsp(s)->n.binary_refused++;
        eio_skip_binary(s, pk.attachments);
        static const char msg[] = "binary attachments are not supported: lexbus carries JSON (send base64 in a string)";
        if (ns) {
            local_refusal(eio_wsp(s), LB_E_INVALID_MESSAGE, msg, ns->refuse, sizeof ns->refuse);
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

/* An Engine.IO pong: a sign of life for every namespace's connection. */
static void sio_pong(struct eio *s)
{
    for (size_t i = 0; i < eio_ns_count(s) && !eio_closed(s); i++) {
        struct sns *ns = eio_ns_at(s, i);
        if (ns->conn && ns->st == NS_JOINED) lb_conn_input(ns->conn, HEARTBEAT_FRAME, sizeof HEARTBEAT_FRAME - 1);
    }
}

static void sio_closing(struct eio *s, const char *why)
{
    while (eio_ns_count(s)) sns_detach(eio_ns_at(s, eio_ns_count(s) - 1), why);
}

/* ---- frames from the bus ------------------------------------------- */

/* A member of a frame from the bus (lb_msg_raw) as a value to copy. */
static struct env_val raw(const struct lb_msg *m, const char *name)
{
    struct lb_str r = lb_msg_raw(m, name);
    return eio_value(r.p, r.n);
}

/* The request an ACK, RESPONSE or ERROR answers, from its id. */
static struct pend *answered(struct sns *ns, const struct lb_msg *m)
{
    struct lb_str id = lb_msg_field(m, "id");
    if (id.n <= WSP_SID_LEN + 1 || memcmp(id.p, ns->sid, WSP_SID_LEN) != 0 || id.p[WSP_SID_LEN] != '.') return NULL;
    uint64_t k = 0;
    for (size_t i = WSP_SID_LEN + 1; i < id.n; i++) {
        if (id.p[i] < '0' || id.p[i] > '9' || k > UINT64_MAX / 10 - 10) return NULL;
        k = k * 10 + (uint64_t)(id.p[i] - '0');
    }
    return slots_get(&ns->reqs, k);
}

static void on_register_ack(struct sns *ns)
{
    if (ns->st != NS_JOINING) return;
    ns->st = NS_JOINED;
    eio_wsp(ns->s)->n.sio_joins++;
    struct lb_jw *w = pkt(ns, '0', -1);
    JW_LIT(w, "{\"sid\":\"");
    lb_jw_raw(w, ns->sid, WSP_SID_LEN);
    JW_LIT(w, "\"}");
    pkt_send(ns);
}

static void refused(struct sns *ns, const struct env_val *err)
{
    struct env_val code, msg;
    error_parts(err, &code, &msg);
    struct lb_jw *t = WP(ns)->errbuf;
    lb_jw_reset(t);
    JW_LIT(t, "{\"message\":");
    if (msg.kind == J_STRING) put(t, &msg);
    else JW_LIT(t, "\"refused\"");
    JW_LIT(t, ",\"data\":{\"code\":");
    put_code(t, &code);
    JW_LIT(t, "}}");
    size_t tn;
    const char *tp = lb_jw_data(t, &tn);
    snprintf(ns->refuse, sizeof ns->refuse, "%.*s", (int)tn, tp);
    if (tn >= sizeof ns->refuse) local_refusal(WP(ns), LB_E_UNAUTHENTICATED, "refused", ns->refuse, sizeof ns->refuse);
    ns->st = NS_REFUSED;
    eio_wsp(ns->s)->n.sio_refused++;
    eio_later(ns->s);   /* ended there unless join() ends it first */
}

/* A member of the frame the bus did not name for lb_msg_raw (ACK's
 * delivered, subscriptions). */
static struct env_val frame_member(const struct lb_msg *m, const char *key)
{
    struct lb_str f = lb_msg_frame(m);
    struct env_val frame = { f.p, (uint32_t)f.n, J_OBJECT, 0 };
    return member(&frame, key);
}

static void emit_answered(struct sns *ns, struct pend *p, const struct lb_msg *m)
{
    if (lb_msg_type(m) == LB_MSG_ACK) {
        struct lb_jw *w = pkt(ns, '2', -1);
        JW_LIT(w, "[\"ipc:ack\",{\"event\":");
        lb_jw_str(w, p->buf, p->a_len);
        JW_LIT(w, ",\"target\":");
        lb_jw_str(w, p->buf + p->a_len, p->b_len);
        JW_LIT(w, "}]");
        pkt_send(ns);
        if (p->ack >= 0) {
            struct env_val d = frame_member(m, "delivered");
            w = pkt(ns, '3', p->ack);
            JW_LIT(w, "[{\"success\":true,\"delivered\":");
            put(w, &d);
            JW_LIT(w, "}]");
            pkt_send(ns);
        }
        return;
    }
    struct env_val err = raw(m, "error");
    send_ipc_error(ns, &err, p->buf, p->a_len);
    if (p->ack >= 0) {
        struct lb_jw *w = pkt(ns, '3', p->ack);
        JW_LIT(w, "[");
        put_fail_flat(w, &err);
        JW_LIT(w, "]");
        pkt_send(ns);
    }
}

/* The answer to a request other than an emit. */
static void request_answered(struct sns *ns, struct pend *p, const struct lb_msg *m)
{
    enum lb_msg_type t = lb_msg_type(m);
    struct lb_str status = lb_msg_field(m, "status");
    bool ok = t == LB_MSG_ACK || (t == LB_MSG_RESPONSE && status.n == 7 && !memcmp(status.p, "success", 7));
    struct env_val err = raw(m, "error");
    if (!ok && p->ack < 0) { send_ipc_error(ns, &err, NULL, 0); return; }
    if (p->ack < 0) return;
    struct lb_jw *w = pkt(ns, '3', p->ack);
    JW_LIT(w, "[");
    if (!ok && p->kind == PK_CALL) {
        JW_LIT(w, "{\"success\":false,\"error\":");
        if (err.kind == J_OBJECT) put(w, &err);
        else JW_LIT(w, "{\"code\":\"" LB_E_EXECUTION_FAILED "\",\"message\":\"the call failed\"}");
        JW_LIT(w, "}");
    } else if (!ok) {
        put_fail_flat(w, &err);
    } else if (t == LB_MSG_ACK) {
        struct env_val n = frame_member(m, "subscriptions");
        JW_LIT(w, "{\"success\":true,\"subscriptions\":");
        put(w, &n);
        JW_LIT(w, "}");
    } else {
        struct env_val data = raw(m, "data");
        if (p->kind == PK_JSONLEX) JW_LIT(w, "{\"success\":true,\"result\":");
        else JW_LIT(w, "{\"success\":true,\"data\":");
        put(w, &data);
        JW_LIT(w, "}");
    }
    JW_LIT(w, "]");
    pkt_send(ns);
}

static void put_raw(struct lb_jw *w, const struct lb_msg *m, const char *name)
{
    struct lb_str r = lb_msg_raw(m, name);
    if (r.p) lb_jw_raw(w, r.p, r.n);
    else JW_LIT(w, "null");
}

static void on_event(struct sns *ns, const struct lb_msg *m)
{
    struct lb_jw *w = pkt(ns, '2', -1);
    JW_LIT(w, "[");
    put_raw(w, m, "event");
    JW_LIT(w, ",");
    put_raw(w, m, "payload");
    JW_LIT(w, ",{\"source\":");
    put_raw(w, m, "from");
    /* Broadcasts carry no `to`, and the bus gives events no id of its own. */
    struct lb_str to = lb_msg_raw(m, "to"), id = lb_msg_raw(m, "id");
    JW_LIT(w, ",\"target\":");
    if (to.p) lb_jw_raw(w, to.p, to.n);
    else JW_LIT(w, "\"broadcast\"");
    if (id.p) { JW_LIT(w, ",\"id\":"); lb_jw_raw(w, id.p, id.n); }
    struct lb_str tok = lb_msg_raw(m, "token");
    if (tok.p) { JW_LIT(w, ",\"token\":"); lb_jw_raw(w, tok.p, tok.n); }
    JW_LIT(w, "}]");
    pkt_send(ns);
}

/* Calls the client never answered, past their deadline: forgotten. */
static void sweep_sacks(struct sns *ns)
{
    uint64_t now = lb_now_ms();
    for (uint32_t i = 0; i < ns->sacks.cap; i++) {
        struct pend *p = slots_at(&ns->sacks, i);
        if (p && p->expires_ms < now) pend_done(ns, &ns->sacks, p);
    }
}

/* A CALL to this namespace's service: ipc:call with a server ack id. */
static void on_call(struct sns *ns, const struct lb_msg *m)
{
    struct lb_str id = lb_msg_field(m, "id");   /* validated by the bus: 1-128 bytes, no escapes */
    if ((long long)ns->sacks.count >= WP(ns)->c.max_pending) sweep_sacks(ns);
    struct pend *p = pend_new(ns, &ns->sacks);
    if (!p) {
        /* Answered from `later`: this is the host's own call path. */
        p = wsp_alloc(sizeof *p);
        memcpy(p->buf, id.p, id.n);
        p->a_len = (uint16_t)id.n;
        p->next = ns->refused_calls;
        ns->refused_calls = p;
        eio_later(ns->s);
        return;
    }
    p->kind = PK_SACK;
    memcpy(p->buf, id.p, id.n);
    p->a_len = (uint16_t)id.n;
    int64_t dl = 0;
    struct env_val ctx = raw(m, "context"), d = member(&ctx, "deadline");
    p->expires_ms = d.kind == J_NUMBER && env_number_i64(&d, &dl) == 0 && dl > 0 ? (uint64_t)dl + 1000
                                                                              : lb_now_ms() + SACK_DEFAULT_TTL_MS;
    struct lb_jw *w = pkt(ns, '2', (int64_t)p->key);
    JW_LIT(w, "[\"ipc:call\",{\"id\":");
    put_raw(w, m, "id");
    JW_LIT(w, ",\"from\":");
    put_raw(w, m, "from");
    JW_LIT(w, ",\"method\":");
    put_raw(w, m, "method");
    JW_LIT(w, ",\"params\":");
    put_raw(w, m, "params");
    JW_LIT(w, ",\"context\":");
    put_raw(w, m, "context");
    JW_LIT(w, "}]");
    pkt_send(ns);
}

/* The answer (ACK, RESPONSE, ERROR) to a request of ours, or an ERROR. */
static void on_answer(struct sns *ns, const struct lb_msg *m)
{
    struct pend *req = answered(ns, m);
    if (req && req->kind != PK_SACK) {
        if (req->kind == PK_EMIT) emit_answered(ns, req, m);
        else request_answered(ns, req, m);
        pend_done(ns, &ns->reqs, req);
        return;
    }
    if (lb_msg_type(m) != LB_MSG_ERROR) return;
    struct lb_str code = lb_msg_error_code(m);
    if (code.n == strlen(LB_E_SLOW_CONSUMER) && !memcmp(code.p, LB_E_SLOW_CONSUMER, code.n)) ns->slow = true;
    struct env_val err = raw(m, "error");
    if (ns->st == NS_JOINING) refused(ns, &err);
    else send_ipc_error(ns, &err, NULL, 0);
}

static int sio_send(void *tdata, const struct iovec *iov, int iovcnt)
{
    struct sns *ns = tdata;
    if (ns->detaching) return -1;
    const char *p = iov[0].iov_base;
    size_t n = iov[0].iov_len;
    if (iovcnt > 1) {
        struct lb_jw *cat = WP(ns)->catbuf;
        lb_jw_reset(cat);
        for (int i = 0; i < iovcnt; i++) lb_jw_raw(cat, iov[i].iov_base, iov[i].iov_len);
        p = lb_jw_data(cat, &n);
    }
    struct lb_msg *m = WP(ns)->msg;
    const char *err;
    if (lb_msg_parse(m, p, n, &err) != 0) return 0;   /* the bus's own frames are valid */
    switch (lb_msg_type(m)) {
    case LB_MSG_EVENT: on_event(ns, m); break;
    case LB_MSG_CALL: on_call(ns, m); break;
    case LB_MSG_REGISTER_ACK: on_register_ack(ns); break;
    case LB_MSG_ACK: case LB_MSG_RESPONSE: case LB_MSG_ERROR: on_answer(ns, m); break;
    default: break;   /* HEARTBEAT */
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
    if (!flush || ns->slow) {
        /* A slow consumer or a failed send: the session's output is what
         * is stuck, so the whole session goes (after this callback); the
         * client reconnects with an empty queue. */
        eio_close_from_host(ns->s, 1011, "the bus dropped the connection (slow consumer or failed send)");
    } else if (lb_bus_draining(eio_ctx(ns->s))) {
        /* The bus is shutting down.  Ending the session's transport (not
         * a disconnect) makes the client reconnect. */
        eio_close_from_host(ns->s, 1001, "lexbusd is going away");
    } else {
        /* The bus ended it after an ERROR (eviction, a revoked token; it
         * went out as ipc:error): a server-side disconnect, which the
         * client does not retry by itself. */
        if (ns->st == NS_JOINED) { pkt(ns, '1', -1); pkt_send(ns); }
        else send_connect_error(ns->s, ns->nsp, ns->nsp_len,
                                ns->refuse[0] ? ns->refuse : "{\"message\":\"closed by the bus\"}");
    }
    ns_free(ns);
}

static int sio_flush(void *tdata) { return eio_flush(((struct sns *)tdata)->s); }

/* No discard: the namespaces of a session share its output, so a slow
 * consumer's whole session goes (sio_close without flush). */
static const struct lb_conn_ops sio_ops = {
    .size = sizeof sio_ops, .send = sio_send, .pending = sio_pending, .set_read = sio_set_read, .close = sio_close, .flush = sio_flush,
};

/* ---- deferred work ------------------------------------------------- */

static void answer_refused_calls(struct sns *ns)
{
    while (ns->refused_calls && ns->conn) {
        struct pend *p = ns->refused_calls;
        ns->refused_calls = p->next;
        struct lb_jw *w = resp_begin(ns, p->buf, p->a_len);
        JW_LIT(w, ",\"status\":\"error\",\"error\":{\"code\":\"" LB_E_SERVICE_UNAVAILABLE "\",\"message\":"
                  "\"too many calls in flight to this Socket.IO client (max_pending)\"}}");
        free(p);
        if (req_send(ns) < 0) return;
    }
}

/* Deferred work of the session's namespaces (refusals, calls refused
 * for max_pending): run from the session's `later` event. */
static void sio_later(struct eio *s)
{
    /* From the end: dropping a namespace removes it from the array. */
    for (size_t i = eio_ns_count(s); i-- > 0;) {
        if (i >= eio_ns_count(s)) continue;
        struct sns *ns = eio_ns_at(s, i);
        if (ns->st == NS_REFUSED) { ns_drop(ns, "4", "REGISTER refused"); continue; }
        if (ns->refused_calls) answer_refused_calls(ns);
    }
}

const struct eio_ops bridge_eio_ops = {
    .packet = sio_packet_in, .pong = sio_pong, .closing = sio_closing, .later = sio_later,
};
