#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include "router.h"
#include "conn.h"
#include "registry.h"
#include "pattern.h"
#include "pending.h"
#include "system_service.h"
#include "log.h"
#include "util.h"

#define MAX_METHODS_PER_CONN 1024
#define MAX_SUBS_PER_CONN 1024
#define MAX_METADATA 8192
#define MAX_VERSION 64

static struct ptrie *g_subs;
static struct jw g_fan;             /* frame sent to several recipients */
static struct lb_conn **g_recips;   /* recipients of the current fan-out */
static size_t g_n_recips, g_cap_recips;
static uint64_t g_seq;              /* generated ids */
static char g_idbuf[24] = "0";      /* last generated event id number, in decimal */
static size_t g_idlen = 1;

/* Event ids are "<node>-<n>": counting in decimal text avoids a division
 * loop per message on the hot path. */
static void next_event_id(void)
{
    size_t i = g_idlen;
    while (i > 0 && g_idbuf[i - 1] == '9') g_idbuf[--i] = '0';
    if (i == 0) {
        memmove(g_idbuf + 1, g_idbuf, g_idlen);
        g_idbuf[0] = '1';
        g_idlen++;
    } else {
        g_idbuf[i - 1]++;
    }
}

static void on_call_timeout(struct pending_call *pc);

void router_init(void)
{
    g_subs = ptrie_new();
    jw_init(&g_fan, 4096);
    registry_init();
    pending_init(g_bus.base, on_call_timeout);
}

void router_free(void)
{
    ptrie_free(g_subs);
    g_subs = NULL;
    jw_free(&g_fan);
    free(g_recips);
    g_recips = NULL;
    g_cap_recips = 0;
    registry_free();
    pending_shutdown();
}

const char *router_service_name(const struct lb_conn *c) { return c->svc ? c->svc->name : NULL; }
size_t router_subscription_count(void) { return g_subs ? ptrie_count(g_subs) : 0; }

static bool is_system_target(const struct env_val *to)
{
    const char *sys = g_bus.set.system_service;
    return env_str_eq(to, sys, strlen(sys)) ||
           env_str_eq(to, LB_DEFAULT_SYSTEM_SERVICE, sizeof LB_DEFAULT_SYSTEM_SERVICE - 1);
}

static void audit(enum lb_msg_type t, struct lb_conn *from, const struct lb_msg *m,
                  struct lb_str to, struct lb_str name, struct lb_str id,
                  int delivered, const char *code, uint64_t dur_us)
{
    if (!g_policy.audit) return;
    /* Calls to the bus's own service may carry tokens (token.verify, ...):
     * the audit never sees their content, refused or not. */
    bool secret = m && t == LB_MSG_CALL && is_system_target(&m->env.f[F_TO]);
    struct lb_outcome o = {
        .type = t, .from = from ? lb_conn_service(from) : NULL, .to = to, .name = name, .id = id,
        .delivered = delivered, .error_code = code, .bytes = m ? m->env.len : 0,
        .duration_us = dur_us, .msg = secret ? NULL : m,
    };
    policy_audit(&o);
}

static struct lb_str val_str(const struct env_val *v)
{
    struct lb_str s = { v->kind == J_STRING ? v->p : NULL, v->kind == J_STRING ? v->n : 0 };
    return s;
}

static struct lb_str mk_str(const char *p, size_t n) { struct lb_str s = { p, n }; return s; }

/* ---- replies ------------------------------------------------------- */

void router_call_error(struct lb_conn *caller, const char *id, size_t id_len, const char *code,
                       long long retry_after_ms, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct jw *w = &g_bus.out;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"RESPONSE\",\"id\":\"");
    jw_raw(w, id, id_len);
    jw_lit(w, "\",\"from\":");
    jw_cstr(w, g_bus.set.system_service);
    if (caller->svc) { jw_lit(w, ",\"to\":"); jw_cstr(w, caller->svc->name); }
    jw_lit(w, ",\"status\":\"error\",\"error\":{\"code\":");
    jw_cstr(w, code);
    jw_lit(w, ",\"message\":");
    jw_cstr(w, msg);
    if (retry_after_ms >= 0) { jw_lit(w, ",\"retryAfterMs\":"); jw_i64(w, retry_after_ms); }
    jw_lit(w, "}}");
    stats_count_error(&g_bus.stats, code);
    log_debug("router", "#%llu call %.*s failed: %s %s", (unsigned long long)caller->id,
              (int)id_len, id, code, msg);
    conn_send(caller, w->buf, w->len, LB_MSG_RESPONSE);
}

void router_reply(struct lb_conn *caller, const struct lb_msg *m, bool ok, const char *json, size_t len)
{
    const struct env_val *id = &m->env.f[F_ID], *ctx = &m->env.f[F_CONTEXT];
    struct jw *w = &g_bus.out;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"RESPONSE\",\"id\":\"");
    jw_raw(w, id->p, id->n);
    jw_lit(w, "\",\"from\":");
    jw_cstr(w, g_bus.set.system_service);
    if (caller->svc) { jw_lit(w, ",\"to\":"); jw_cstr(w, caller->svc->name); }
    if (ok) { jw_lit(w, ",\"status\":\"success\",\"data\":"); }
    else { jw_lit(w, ",\"status\":\"error\",\"error\":"); }
    jw_raw(w, json, len);
    if (ctx->kind == J_OBJECT) { jw_lit(w, ",\"context\":"); jw_raw(w, ctx->p, ctx->n); }
    jw_lit(w, "}");
    conn_send(caller, w->buf, w->len, LB_MSG_RESPONSE);
}

/* An error about a message: an error RESPONSE for a CALL with a usable id
 * (so the caller's pending call settles), else an ERROR frame. */
static void refuse(struct lb_conn *c, const struct lb_msg *m, const char *code,
                   long long retry_after_ms, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void refuse(struct lb_conn *c, const struct lb_msg *m, const char *code,
                   long long retry_after_ms, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const struct env_val *id = &m->env.f[F_ID];
    bool id_ok = id->kind == J_STRING && id->n >= 1 && id->n <= LB_MAX_ID;
    if (m->env.type == LB_MSG_CALL && id_ok) {
        router_call_error(c, id->p, id->n, code, retry_after_ms, "%s", msg);
    } else if (retry_after_ms >= 0) {
        conn_send_error_retry(c, id_ok ? id : NULL, code, retry_after_ms, msg);
    } else {
        conn_send_error(c, id_ok ? id : NULL, code, "%s", msg);
    }
    struct lb_str name = val_str(&m->env.f[m->env.type == LB_MSG_EMIT ? F_EVENT : F_METHOD]);
    audit(m->env.type, c, m, val_str(&m->env.f[F_TO]), name, val_str(id), -1, code, 0);
}

/* ---- REGISTER ------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void free_methods(struct lb_conn *c)
{
    for (size_t i = 0; i < c->n_methods; i++) free(c->methods[i]);
    free(c->methods);
    c->methods = NULL;
    c->n_methods = 0;
}

/* Validates a string array member; returns its length or -1 with why. */
static long check_name_array(const struct env_val *arr, bool (*valid)(const char *, size_t),
                             size_t max, const char *what, char *why, size_t whylen)
{
    if (arr->kind != J_ARRAY) { snprintf(why, whylen, "\"%s\" must be an array of strings", what); return -1; }
    const char *cur = NULL;
    struct env_val v;
    long n = 0;
    while (env_array_next(arr, &cur, &v)) {
        if (v.kind != J_STRING || v.escaped || !valid(v.p, v.n)) {
            snprintf(why, whylen, "\"%s\"[%ld] is not a valid name (see doc/protocol.md, Names)", what, n);
            return -1;
        }
        if ((size_t)++n > max) { snprintf(why, whylen, "\"%s\" has more than %zu entries", what, max); return -1; }
    }
    return n;
}

static bool subs_has(struct lb_conn *c, const char *p, size_t n)
{
    for (size_t i = 0; i < c->n_subs; i++)
        if (strlen(c->subs[i]) == n && memcmp(c->subs[i], p, n) == 0) return true;
    return false;
}

/* How many patterns of `arr` the connection would gain: neither held yet
 * nor repeated earlier in the array (re-sending what one holds is free). */
static size_t new_sub_count(struct lb_conn *c, const struct env_val *arr)
{
    const char *cur = NULL, *prev;
    struct env_val v, w;
    size_t n = 0;
    while (env_array_next(arr, &cur, &v)) {
        if (subs_has(c, v.p, v.n)) continue;
        bool repeated = false;
        for (prev = NULL; !repeated && env_array_next(arr, &prev, &w) && w.p < v.p;)
            repeated = w.n == v.n && memcmp(w.p, v.p, v.n) == 0;
        n += !repeated;
    }
    return n;
}

static void subscribe_one(struct lb_conn *c, const char *p, size_t n)
{
    if (subs_has(c, p, n)) return;
    if (c->n_subs == c->cap_subs) {
        c->cap_subs = c->cap_subs ? c->cap_subs * 2 : 4;
        c->subs = xrealloc(c->subs, c->cap_subs * sizeof *c->subs);
    }
    c->subs[c->n_subs++] = xstrndup(p, n);
    ptrie_add(g_subs, p, n, c);
}

static void unsubscribe_one(struct lb_conn *c, const char *p, size_t n)
{
    for (size_t i = 0; i < c->n_subs; i++) {
        if (strlen(c->subs[i]) == n && memcmp(c->subs[i], p, n) == 0) {
            ptrie_remove(g_subs, p, n, c);
            free(c->subs[i]);
            c->subs[i] = c->subs[--c->n_subs];
            return;
        }
    }
}

static void subscribe_all(struct lb_conn *c, const struct env_val *arr, bool add)
{
    const char *cur = NULL;
    struct env_val v;
    while (env_array_next(arr, &cur, &v)) {
        if (add) subscribe_one(c, v.p, v.n);
        else unsubscribe_one(c, v.p, v.n);
    }
}

static bool identity_allows(const struct lb_conn *c, const char *name, size_t n)
{
    for (size_t i = 0; i < c->peer.n_identity_names; i++) {
        const char *id = c->peer.identity_names[i];
        if (strlen(id) == n && memcmp(id, name, n) == 0) return true;
    }
    return false;
}

static void send_register_ack(struct lb_conn *c)
{
    struct jw *w = &g_bus.out;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"REGISTER_ACK\",\"node\":");
    jw_cstr(w, g_bus.set.node);
    jw_lit(w, ",\"session\":");
    jw_u64(w, c->id);
    jw_lit(w, ",\"serviceName\":");
    jw_cstr(w, c->svc->name);
    jw_lit(w, ",\"heartbeatInterval\":");
    jw_u64(w, g_bus.set.heartbeat_ms);
    jw_lit(w, ",\"auth\":");
    jw_cstr(w, c->auth);
    jw_lit(w, "}");
    conn_send(c, w->buf, w->len, LB_MSG_REGISTER_ACK);
}

static void handle_register(struct lb_conn *c, struct lb_msg *m)
{
    const struct env_val *f = m->env.f;
    const struct env_val *name = &f[F_SERVICE_NAME];
    char why[160];
    if (name->kind != J_STRING || name->escaped || !valid_service_name(name->p, name->n)) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1,
               "\"serviceName\" must be 1-%d characters of A-Z a-z 0-9 _ . - / @", LB_MAX_NAME);
        return;
    }
    if (is_system_target(name)) {
        refuse(c, m, LB_E_FORBIDDEN, -1, "\"%.*s\" is the bus's own service name", (int)name->n, name->p);
        return;
    }
    if (env_str_eq(name, "broadcast", 9)) {
        /* EMIT's `to: "broadcast"` means every subscriber: a service of
         * that name could never be addressed. */
        refuse(c, m, LB_E_FORBIDDEN, -1, "\"broadcast\" is reserved (EMIT to: \"broadcast\" means every subscriber)");
        return;
    }
    long n_methods = 0;
    if (f[F_METHODS].kind != J_NONE &&
        (n_methods = check_name_array(&f[F_METHODS], valid_method_name, MAX_METHODS_PER_CONN, "methods", why, sizeof why)) < 0) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "%s", why);
        return;
    }
    if (f[F_SUBSCRIBE].kind != J_NONE &&
        check_name_array(&f[F_SUBSCRIBE], valid_event_pattern, MAX_SUBS_PER_CONN, "subscribe", why, sizeof why) < 0) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "%s", why);
        return;
    }
    /* A re-REGISTER adds to what the connection holds. */
    if (f[F_SUBSCRIBE].kind == J_ARRAY && c->n_subs + new_sub_count(c, &f[F_SUBSCRIBE]) > MAX_SUBS_PER_CONN) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "a connection may hold at most %d subscriptions", MAX_SUBS_PER_CONN);
        return;
    }
    if (f[F_VERSION].kind != J_NONE && (f[F_VERSION].kind != J_STRING || f[F_VERSION].n > MAX_VERSION)) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "\"version\" must be a string of at most %d bytes", MAX_VERSION);
        return;
    }
    if (f[F_METADATA].kind != J_NONE && (f[F_METADATA].kind != J_OBJECT || f[F_METADATA].n > MAX_METADATA)) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "\"metadata\" must be an object of at most %d bytes", MAX_METADATA);
        return;
    }
    if (c->svc && !env_str_eq(name, c->svc->name, c->svc->name_len)) {
        refuse(c, m, LB_E_FORBIDDEN, -1, "this connection is registered as '%s'; it cannot register as '%.*s'",
               c->svc->name, (int)name->n, name->p);
        return;
    }
    if (c->peer.n_identity_names && !identity_allows(c, name->p, name->n)) {
        refuse(c, m, LB_E_FORBIDDEN, -1, "the client certificate names '%s'; it may not register as '%.*s'",
               c->peer.identity_names[0], (int)name->n, name->p);
        return;
    }
    if (!c->svc) {
        struct lb_verdict v;
        enum lb_verdict_kind k = policy_authenticate(c, m, &v);
        if (k == LB_DENY) {
            refuse(c, m, v.code, v.retry_after_ms, "%s", v.message);
            return;
        }
        if (c->peer.n_identity_names) {
            if (k != LB_ALLOW) c->auth = "mtls";
        } else if (k != LB_ALLOW && (g_policy.authenticate || g_bus.set.production)) {
            refuse(c, m, LB_E_UNAUTHENTICATED, -1,
                   "no credentials: REGISTER needs a broker token (\"token\") or a client certificate");
            return;
        }
    }

    /* Accepted: (re)record the registration. */
    free_methods(c);
    if (n_methods) {
        c->methods = xcalloc((size_t)n_methods, sizeof *c->methods);
        const char *cur = NULL;
        struct env_val v;
        while (env_array_next(&f[F_METHODS], &cur, &v)) c->methods[c->n_methods++] = xstrndup(v.p, v.n);
        qsort(c->methods, c->n_methods, sizeof *c->methods, cmp_str);
    }
    free(c->version);
    c->version = f[F_VERSION].kind == J_STRING ? xstrndup(f[F_VERSION].p, f[F_VERSION].n) : NULL;
    free(c->metadata_json);
    c->metadata_json = f[F_METADATA].kind == J_OBJECT ? xstrndup(f[F_METADATA].p, f[F_METADATA].n) : NULL;
    if (f[F_SUBSCRIBE].kind == J_ARRAY) subscribe_all(c, &f[F_SUBSCRIBE], true);
    if (!c->svc) {
        registry_add(c, name->p, name->n);
        c->state = CS_REGISTERED;
        c->registered_ms = now_ms();
        log_info("router", "#%llu registered as '%s' (%s, auth %s, %zu methods)",
                 (unsigned long long)c->id, c->svc->name, c->peer.transport, c->auth, c->n_methods);
    }
    send_register_ack(c);
    audit(LB_MSG_REGISTER, c, m, mk_str(NULL, 0), val_str(name), val_str(&f[F_ID]), 1, NULL, 0);
}

/* ---- CALL / RESPONSE ----------------------------------------------- */

static bool check_context(const struct env_val *ctx, int64_t *depth, int64_t *deadline, char *why, size_t whylen)
{
    struct env_val v;
    *depth = 0;
    *deadline = 0;
    if (ctx->kind == J_NONE) return true;
    if (ctx->kind != J_OBJECT) { snprintf(why, whylen, "\"context\" must be an object"); return false; }
    static const char *const checked[] = { "depth", "deadline", "chain", "root" };
    if (env_object_unambiguous(ctx, checked, sizeof checked / sizeof *checked) != 0) {
        snprintf(why, whylen, "\"context\" has a member given twice or a member name written with escapes");
        return false;
    }
    if (env_object_get(ctx, "depth", &v) == 0 && (v.kind != J_NUMBER || env_number_i64(&v, depth) || *depth < 0)) {
        snprintf(why, whylen, "\"context.depth\" must be a non-negative number");
        return false;
    }
    if (env_object_get(ctx, "deadline", &v) == 0 && v.kind != J_NULL &&
        (v.kind != J_NUMBER || env_number_i64(&v, deadline) || *deadline < 0)) {
        snprintf(why, whylen, "\"context.deadline\" must be a number (absolute epoch milliseconds)");
        return false;
    }
    if (env_object_get(ctx, "chain", &v) == 0 && v.kind != J_ARRAY) {
        snprintf(why, whylen, "\"context.chain\" must be an array");
        return false;
    }
    if (env_object_get(ctx, "root", &v) == 0 && v.kind != J_STRING) {
        snprintf(why, whylen, "\"context.root\" must be a string");
        return false;
    }
    return true;
}

/* Writes the CALL as the callee will see it into g_bus.out, or returns
 * false when the sender's frame can go out byte for byte. */
static bool rewrite_call(struct lb_conn *c, struct lb_msg *m, uint64_t deadline)
{
    const struct env_val *f = m->env.f;
    bool need_from = f[F_FROM].kind == J_NONE, need_ctx = f[F_CONTEXT].kind == J_NONE;
    if (!need_from && !need_ctx && !m->claims) return false;
    struct jw *w = &g_bus.out;
    jw_reset(w);
    if (m->claims) {
        /* The token is replaced by its verified claims: rebuild. */
        jw_lit(w, "{\"type\":\"CALL\",\"id\":\"");
        jw_raw(w, f[F_ID].p, f[F_ID].n);
        jw_lit(w, "\",\"to\":\"");
        jw_raw(w, f[F_TO].p, f[F_TO].n);
        jw_lit(w, "\",\"method\":\"");
        jw_raw(w, f[F_METHOD].p, f[F_METHOD].n);
        jw_lit(w, "\",\"params\":");
        if (f[F_PARAMS].kind) jw_raw(w, f[F_PARAMS].kind == J_STRING ? f[F_PARAMS].p - 1 : f[F_PARAMS].p,
                                     f[F_PARAMS].kind == J_STRING ? f[F_PARAMS].n + 2 : f[F_PARAMS].n);
        else jw_lit(w, "{}");
        jw_lit(w, ",\"token\":");
        jw_raw(w, m->claims, m->claims_len);
        if (!need_ctx) { jw_lit(w, ",\"context\":"); jw_raw(w, f[F_CONTEXT].p, f[F_CONTEXT].n); need_ctx = false; }
        jw_lit(w, ",");
        need_from = true;
    } else {
        jw_lit(w, "{");
    }
    if (need_from) { jw_lit(w, "\"from\":"); jw_cstr(w, c->svc->name); jw_lit(w, ","); }
    if (need_ctx) {
        jw_lit(w, "\"context\":{\"root\":\"root-");
        jw_u64(w, now_ms());
        jw_lit(w, "-");
        jw_u64(w, ++g_seq);
        jw_lit(w, "\",\"chain\":[");
        jw_cstr(w, c->svc->name);
        jw_lit(w, "],\"depth\":1,\"deadline\":");
        jw_u64(w, deadline);
        jw_lit(w, "},");
    }
    if (m->claims) {
        w->len--;   /* drop the trailing comma */
        jw_lit(w, "}");
    } else {
        /* Splice: the sender's members follow ours unchanged. */
        const char *body = m->env.frame, *end = m->env.frame + m->env.len;
        while (body < end && *body != '{') body++;
        jw_raw(w, body + 1, (size_t)(end - body - 1));
    }
    return true;
}

static void handle_call(struct lb_conn *c, struct lb_msg *m)
{
    const struct env_val *f = m->env.f;
    const struct env_val *id = &f[F_ID], *to = &f[F_TO], *method = &f[F_METHOD];
    char why[160];
    if (id->kind != J_STRING || id->n < 1 || id->n > LB_MAX_ID) {
        conn_send_error(c, NULL, LB_E_INVALID_MESSAGE, "CALL needs an \"id\": a string of 1-%d bytes", LB_MAX_ID);
        return;
    }
    if (to->kind != J_STRING || to->escaped || !valid_service_name(to->p, to->n)) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "CALL needs \"to\": a valid service name");
        return;
    }
    if (method->kind != J_STRING || method->escaped || !valid_method_name(method->p, method->n)) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "CALL needs \"method\": 1-%d characters of A-Z a-z 0-9 _ . - / @ :", LB_MAX_NAME);
        return;
    }
    int64_t depth, deadline;
    if (!check_context(&f[F_CONTEXT], &depth, &deadline, why, sizeof why)) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "%s", why);
        return;
    }
    if (depth > g_bus.set.max_depth) {
        refuse(c, m, LB_E_MAX_DEPTH_EXCEEDED, -1, "call chain depth %lld exceeds max_depth %lld",
               (long long)depth, g_bus.set.max_depth);
        return;
    }
    uint64_t now = now_ms();
    if (deadline && (uint64_t)deadline < now) {
        refuse(c, m, LB_E_DEADLINE_EXCEEDED, -1, "the call's deadline passed %llu ms ago",
               (unsigned long long)(now - (uint64_t)deadline));
        return;
    }
    if (is_system_target(to)) {
        system_service_call(c, m);
        return;
    }
    struct service *svc = registry_find(to->p, to->n);
    if (!svc) {
        refuse(c, m, LB_E_SERVICE_NOT_FOUND, -1, "no service named '%.*s' is registered", (int)to->n, to->p);
        return;
    }
    bool no_method;
    struct lb_conn *callee = registry_pick(svc, method->p, method->n, &no_method);
    if (!callee) {
        refuse(c, m, LB_E_METHOD_NOT_FOUND, -1, "service '%s' has no method '%.*s'", svc->name,
               (int)method->n, method->p);
        return;
    }
    if (g_policy.deliver) {
        struct lb_verdict v;
        if (policy_deliver(c, callee, m, &v) == LB_DENY) {
            refuse(c, m, v.code, v.retry_after_ms, "%s", v.message);
            return;
        }
    }
    uint64_t timeout = g_bus.set.call_timeout_ms;
    if (deadline && (uint64_t)deadline - now < timeout) timeout = (uint64_t)deadline - now;
    struct pending_call *pc = pending_add(c, callee, id->p, id->n, method->p, method->n, to->p, to->n, timeout);
    if (!pc) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "a call with id '%.*s' is already in flight to this instance",
               (int)id->n, id->p);
        return;
    }
    pc->bytes = m->env.len;
    g_bus.stats.calls_started++;
    uint64_t dl = deadline ? (uint64_t)deadline : now + g_bus.set.call_timeout_ms;
    if (rewrite_call(c, m, dl)) conn_send(callee, g_bus.out.buf, g_bus.out.len, LB_MSG_CALL);
    else conn_send(callee, m->env.frame, m->env.len, LB_MSG_CALL);
    conn_backpressure(c, callee);
}

static void audit_call_end(struct pending_call *pc, const struct lb_msg *m, const char *code)
{
    if (!g_policy.audit) return;
    struct lb_outcome o = {
        .type = LB_MSG_CALL, .from = lb_conn_service(pc->caller),
        .to = mk_str(pc->target, pc->target_len), .name = mk_str(pc->method, pc->method_len),
        .id = mk_str(pc->id, pc->id_len), .delivered = code ? -1 : 1, .error_code = code,
        .bytes = pc->bytes + (m ? m->env.len : 0), .duration_us = mono_us() - pc->start_us, .msg = m,
    };
    policy_audit(&o);
}

static void handle_response(struct lb_conn *c, struct lb_msg *m)
{
    const struct env_val *f = m->env.f;
    const struct env_val *id = &f[F_ID];
    if (id->kind != J_STRING || id->n < 1 || id->n > LB_MAX_ID) {
        conn_send_error(c, NULL, LB_E_INVALID_MESSAGE, "RESPONSE needs the CALL's \"id\"");
        return;
    }
    const struct env_val *st = &f[F_STATUS];
    if (st->kind != J_NONE && !env_str_eq(st, "success", 7) && !env_str_eq(st, "error", 5)) {
        conn_send_error(c, id, LB_E_INVALID_MESSAGE, "\"status\" must be \"success\" or \"error\"");
        return;
    }
    struct pending_call *pc = pending_find(c, id->p, id->n);
    if (!pc) pc = pending_find_pooled(c, id->p, id->n);
    if (!pc) {
        /* Already answered (timeout, shutdown) or never asked of this
         * instance: dropping is the only safe choice; count it. */
        g_bus.stats.calls_late++;
        log_debug("router", "#%llu late or unknown RESPONSE %.*s dropped", (unsigned long long)c->id,
                  (int)id->n, id->p);
        return;
    }
    struct lb_conn *caller = pc->caller;
    if (f[F_FROM].kind == J_NONE) {
        struct jw *w = &g_bus.out;
        jw_reset(w);
        jw_lit(w, "{\"from\":");
        jw_cstr(w, c->svc->name);
        jw_lit(w, ",");
        const char *body = m->env.frame, *end = body + m->env.len;
        while (body < end && *body != '{') body++;
        jw_raw(w, body + 1, (size_t)(end - body - 1));
        conn_send(caller, w->buf, w->len, LB_MSG_RESPONSE);
    } else {
        conn_send(caller, m->env.frame, m->env.len, LB_MSG_RESPONSE);
    }
    conn_backpressure(c, caller);
    g_bus.stats.calls_completed++;
    audit_call_end(pc, m, env_str_eq(st, "error", 5) ? LB_E_EXECUTION_FAILED : NULL);
    pending_remove(pc);
}

static void on_call_timeout(struct pending_call *pc)
{
    g_bus.stats.calls_timeouts++;
    router_call_error(pc->caller, pc->id, pc->id_len, LB_E_TIMEOUT, -1,
                      "no response from %.*s.%.*s within %llu ms", (int)pc->target_len, pc->target,
                      (int)pc->method_len, pc->method,
                      (unsigned long long)((mono_us() - pc->start_us) / 1000));
    audit_call_end(pc, NULL, LB_E_TIMEOUT);
    pending_remove(pc);
}

void router_fail_all_calls(const char *code, const char *message)
{
    struct list_head *pos, *tmp;
    list_for_each_safe(pos, tmp, &g_bus.conns) {
        struct lb_conn *c = list_entry(pos, struct lb_conn, link);
        while (!list_empty(&c->calls_out)) {
            struct pending_call *pc = list_entry(c->calls_out.next, struct pending_call, caller_link);
            router_call_error(pc->caller, pc->id, pc->id_len, code, -1, "%s", message);
            audit_call_end(pc, NULL, code);
            pending_remove(pc);
        }
    }
}

/* ---- EMIT ---------------------------------------------------------- */

static void recips_push(struct lb_conn *c)
{
    if (g_n_recips == g_cap_recips) {
        g_cap_recips = g_cap_recips ? g_cap_recips * 2 : 64;
        g_recips = xrealloc(g_recips, g_cap_recips * sizeof *g_recips);
    }
    g_recips[g_n_recips++] = c;
    conn_ref(c);
}

static void collect_recipient(void *sub, void *ud)
{
    struct lb_conn *c = sub;
    uint64_t gen = *(uint64_t *)ud;
    if (c->deliver_gen == gen || c->dead) return;
    c->deliver_gen = gen;
    recips_push(c);
}

static void write_event_id(struct jw *w)
{
    jw_raw(w, g_bus.set.node, strlen(g_bus.set.node));
    jw_lit(w, "-");
    jw_raw(w, g_idbuf, g_idlen);
}

static void build_event(struct lb_conn *c, const struct lb_msg *m, bool broadcast)
{
    const struct env_val *f = m->env.f;
    struct jw *w = &g_fan;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"EVENT\",\"id\":\"");
    if (f[F_ID].kind == J_STRING) jw_raw(w, f[F_ID].p, f[F_ID].n);
    else { next_event_id(); write_event_id(w); }
    jw_lit(w, "\",\"event\":\"");
    jw_raw(w, f[F_EVENT].p, f[F_EVENT].n);
    jw_lit(w, "\",\"from\":\"");
    jw_raw(w, c->svc->name, c->svc->name_len);
    if (broadcast) jw_lit(w, "\",\"to\":\"broadcast\",\"payload\":");
    else { jw_lit(w, "\",\"to\":\""); jw_raw(w, f[F_TO].p, f[F_TO].n); jw_lit(w, "\",\"payload\":"); }
    const struct env_val *p = &f[F_PAYLOAD];
    if (p->kind == J_NONE) jw_lit(w, "null");
    else if (p->kind == J_STRING) jw_raw(w, p->p - 1, p->n + 2);
    else jw_raw(w, p->p, p->n);
    if (m->claims) { jw_lit(w, ",\"token\":"); jw_raw(w, m->claims, m->claims_len); }
    jw_lit(w, "}");
}

static void send_ack(struct lb_conn *c, const struct lb_msg *m, const char *key, size_t count)
{
    struct jw *w = &g_bus.out;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"ACK\",\"id\":\"");
    const struct env_val *id = &m->env.f[F_ID];
    if (id->kind == J_STRING) jw_raw(w, id->p, id->n);
    else write_event_id(w);
    jw_lit(w, "\",\"");
    jw_raw(w, key, strlen(key));
    jw_lit(w, "\":");
    jw_u64(w, count);
    jw_lit(w, "}");
    conn_send(c, w->buf, w->len, LB_MSG_ACK);
}

static void handle_emit(struct lb_conn *c, struct lb_msg *m)
{
    const struct env_val *f = m->env.f;
    const struct env_val *ev = &f[F_EVENT], *to = &f[F_TO], *id = &f[F_ID], *ack = &f[F_ACK];
    if (id->kind != J_NONE && (id->kind != J_STRING || id->n < 1 || id->n > LB_MAX_ID)) {
        conn_send_error(c, NULL, LB_E_INVALID_MESSAGE, "\"id\" must be a string of 1-%d bytes", LB_MAX_ID);
        return;
    }
    if (ev->kind != J_STRING || ev->escaped || !valid_event_name(ev->p, ev->n)) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1,
               "EMIT needs \"event\": 1-%d characters, ':'-separated segments of A-Z a-z 0-9 _ . - / @", LB_MAX_EVENT);
        return;
    }
    bool broadcast = to->kind == J_NONE || env_str_eq(to, "broadcast", 9);
    if (!broadcast && (to->kind != J_STRING || to->escaped || !valid_service_name(to->p, to->n))) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "\"to\" must be a service name or \"broadcast\"");
        return;
    }
    if (ack->kind != J_NONE && ack->kind != J_TRUE && ack->kind != J_FALSE) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "\"ack\" must be true or false");
        return;
    }
    g_n_recips = 0;
    if (broadcast) {
        uint64_t gen = ++g_bus.deliver_gen;
        ptrie_match(g_subs, ev->p, ev->n, collect_recipient, &gen);
    } else {
        struct service *svc = registry_find(to->p, to->n);
        if (!svc) {
            refuse(c, m, LB_E_SERVICE_NOT_FOUND, -1, "no service named '%.*s' is registered", (int)to->n, to->p);
            return;
        }
        bool unused;
        recips_push(registry_pick(svc, NULL, 0, &unused));
    }
    size_t delivered = 0;
    if (g_n_recips) {
        build_event(c, m, broadcast);
        /* Recipients are collected first: sending may close a slow
         * consumer, which edits the subscription trie. */
        for (size_t i = 0; i < g_n_recips; i++) {
            struct lb_conn *r = g_recips[i];
            struct lb_verdict v;
            if (g_policy.deliver && policy_deliver(c, r, m, &v) == LB_DENY) continue;
            if (conn_send(r, g_fan.buf, g_fan.len, LB_MSG_EVENT) == 0) {
                delivered++;
                conn_backpressure(c, r);
            }
        }
        for (size_t i = 0; i < g_n_recips; i++) conn_unref(g_recips[i]);
        g_n_recips = 0;
    }
    g_bus.stats.events_delivered += delivered;
    if (!delivered) g_bus.stats.events_unrouted++;
    if (ack->kind == J_TRUE) send_ack(c, m, "delivered", delivered);
    audit(LB_MSG_EMIT, c, m, broadcast ? mk_str("broadcast", 9) : val_str(to), val_str(ev), val_str(id),
          (int)delivered, NULL, 0);
}

/* ---- SUBSCRIBE / HEARTBEAT ----------------------------------------- */

static void handle_subscribe(struct lb_conn *c, struct lb_msg *m, bool add)
{
    const struct env_val *evs = &m->env.f[F_EVENTS];
    char why[160];
    long n = check_name_array(evs, valid_event_pattern, MAX_SUBS_PER_CONN, "events", why, sizeof why);
    if (n < 0) { refuse(c, m, LB_E_INVALID_MESSAGE, -1, "%s", why); return; }
    if (add && c->n_subs + new_sub_count(c, evs) > MAX_SUBS_PER_CONN) {
        refuse(c, m, LB_E_INVALID_MESSAGE, -1, "a connection may hold at most %d subscriptions", MAX_SUBS_PER_CONN);
        return;
    }
    subscribe_all(c, evs, add);
    if (m->env.f[F_ID].kind == J_STRING) send_ack(c, m, "subscriptions", c->n_subs);
}

static void handle_heartbeat(struct lb_conn *c, struct lb_msg *m)
{
    /* Bro clients send HEARTBEAT and expect nothing back; a client that
     * wants to probe the bus gives an id and gets a HEARTBEAT with it. */
    const struct env_val *id = &m->env.f[F_ID];
    if (id->kind != J_STRING || id->n > LB_MAX_ID) return;
    struct jw *w = &g_bus.out;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"HEARTBEAT\",\"id\":\"");
    jw_raw(w, id->p, id->n);
    jw_lit(w, "\",\"from\":");
    jw_cstr(w, g_bus.set.system_service);
    jw_lit(w, ",\"timestamp\":");
    jw_u64(w, now_ms());
    jw_lit(w, "}");
    conn_send(c, w->buf, w->len, LB_MSG_HEARTBEAT);
}

/* ---- dispatch ------------------------------------------------------ */

static bool from_ok(struct lb_conn *c, struct lb_msg *m)
{
    const struct env_val *from = &m->env.f[F_FROM];
    if (from->kind == J_NONE || !c->svc) return true;
    if (env_str_eq(from, c->svc->name, c->svc->name_len)) return true;
    refuse(c, m, LB_E_FORBIDDEN, -1, "\"from\" must be the sender's registered name '%s'", c->svc->name);
    return false;
}

void router_input(struct lb_conn *c, const char *frame, size_t len)
{
    struct lb_msg m;
    const char *err = NULL;
    m.claims = NULL;
    m.claims_len = 0;
    uint64_t wall = now_ms();
    if (wall != c->last_seen_ms) {
        /* One monotonic read per connection per millisecond at most (the
         * wall clock is cached per wake-up; this one is not). */
        c->last_seen_ms = wall;
        c->last_seen_mono_ms = mono_us() / 1000;
    }
    c->msgs_in++;
    c->bytes_in += len + LB_FRAME_HEADER;
    g_bus.stats.bytes_in += len + LB_FRAME_HEADER;

    enum env_status st = envelope_parse(&m.env, frame, len, &err);
    g_bus.stats.msgs_in[m.env.type]++;
    if (st != ENV_OK) {
        const struct env_val *id = &m.env.f[F_ID];
        bool id_ok = id->kind == J_STRING && id->n >= 1 && id->n <= LB_MAX_ID;
        if (st == ENV_DUPLICATE || st == ENV_ESCAPED_NAME || st == ENV_BAD_TYPE) {
            /* The frame is valid JSON: a CALL with an id can still be
             * answered as a call, so the caller is not left waiting. */
            refuse(c, &m, LB_E_INVALID_MESSAGE, -1, "%s", err);
        } else {
            conn_send_error(c, id_ok ? id : NULL, LB_E_INVALID_MESSAGE, "%s", err);
        }
        return;
    }
    if (c->state != CS_REGISTERED && m.env.type != LB_MSG_REGISTER && m.env.type != LB_MSG_HEARTBEAT) {
        refuse(c, &m, LB_E_NOT_REGISTERED, -1, "send REGISTER first (got %s)", lb_msg_type_name(m.env.type));
        return;
    }
    if (!from_ok(c, &m)) return;
    const struct env_val *tok = &m.env.f[F_TOKEN];
    if (tok->kind != J_NONE && (tok->kind != J_STRING || tok->n > LB_MAX_TOKEN)) {
        /* Anything else would reach recipients looking like claims the
         * bus had verified. */
        refuse(c, &m, LB_E_UNAUTHENTICATED, -1, "\"token\" must be a string of at most %d bytes", LB_MAX_TOKEN);
        return;
    }
    if (g_policy.message && c->state == CS_REGISTERED) {
        struct lb_verdict v;
        if (policy_message(c, &m, &v) == LB_DENY) {
            refuse(c, &m, v.code, v.retry_after_ms, "%s", v.message);
            return;
        }
    }
    switch (m.env.type) {
    case LB_MSG_REGISTER:    handle_register(c, &m); break;
    case LB_MSG_CALL:        handle_call(c, &m); break;
    case LB_MSG_RESPONSE:    handle_response(c, &m); break;
    case LB_MSG_EMIT:        handle_emit(c, &m); break;
    case LB_MSG_SUBSCRIBE:   handle_subscribe(c, &m, true); break;
    case LB_MSG_UNSUBSCRIBE: handle_subscribe(c, &m, false); break;
    case LB_MSG_HEARTBEAT:   handle_heartbeat(c, &m); break;
    case LB_MSG_CRUD:
        refuse(c, &m, LB_E_SERVICE_NOT_FOUND, -1, "CRUD routing is not configured on this bus (no crud router loaded)");
        break;
    default:
        refuse(c, &m, LB_E_INVALID_MESSAGE, -1, "%s is sent by the bus, not to it",
               lb_msg_type_name(m.env.type));
        break;
    }
}

/* ---- connection teardown ------------------------------------------- */

void router_forget(struct lb_conn *c)
{
    while (!list_empty(&c->calls_in)) {
        struct pending_call *pc = list_entry(c->calls_in.next, struct pending_call, callee_link);
        router_call_error(pc->caller, pc->id, pc->id_len, LB_E_SERVICE_UNAVAILABLE, -1,
                          "the instance of '%.*s' handling %.*s disconnected before answering",
                          (int)pc->target_len, pc->target, (int)pc->method_len, pc->method);
        audit_call_end(pc, NULL, LB_E_SERVICE_UNAVAILABLE);
        pending_remove(pc);
    }
    while (!list_empty(&c->calls_out)) {
        struct pending_call *pc = list_entry(c->calls_out.next, struct pending_call, caller_link);
        pending_remove(pc);
    }
    for (size_t i = 0; i < c->n_subs; i++) {
        ptrie_remove(g_subs, c->subs[i], strlen(c->subs[i]), c);
        free(c->subs[i]);
    }
    free(c->subs);
    c->subs = NULL;
    c->n_subs = c->cap_subs = 0;
    if (c->svc) {
        log_info("router", "#%llu '%s' unregistered", (unsigned long long)c->id, c->svc->name);
        registry_remove(c);
    }
    free_methods(c);
    free(c->version);
    c->version = NULL;
    free(c->metadata_json);
    c->metadata_json = NULL;
}
