/*
 * CALL and RESPONSE.  Every CALL the bus accepts ends in exactly one
 * RESPONSE to its caller: the callee's, or one of the bus's (TIMEOUT,
 * SERVICE_UNAVAILABLE, SHUTTING_DOWN, a refusal).
 */
#include "config.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "router_int.h"
#include "registry.h"
#include "pending.h"
#include "sysmethod.h"
#include "stats.h"
#include "log.h"
#include "util.h"

/* Deadlines are absolute epoch milliseconds up to the end of year 9999. */
#define MAX_DEADLINE 253402300799999LL
#define MAX_CONTEXT_DEPTH 1000000LL

static struct jw g_fwd;         /* a forwarded CALL or RESPONSE */

static void on_call_timeout(struct pending_call *pc);

void calls_init(void)
{
    jw_init(&g_fwd, 4096);
    pending_init(g_bus.base, on_call_timeout);
}

static void audit_call_end(struct pending_call *pc, const struct lb_msg *m, const char *code)
{
    uint64_t dur = mono_us() - pc->start_us;
    stats_call_done(dur);
    if (!g_hooks_n.audit) return;
    struct lb_outcome o = {
        .size = sizeof o, .type = LB_MSG_CALL, .from = pc->from_len ? pc->from : NULL,
        .to = mk_str(pc->target, pc->target_len), .name = mk_str(pc->method, pc->method_len),
        .id = mk_str(pc->id, pc->id_len), .delivered = code ? -1 : 1, .error_code = code,
        .bytes = pc->bytes + (m ? m->env.len : 0), .duration_us = dur, .msg = m, .conn = pc->caller,
    };
    char from[LB_MAX_NAME + 1];
    memcpy(from, pc->from, pc->from_len);
    from[pc->from_len] = 0;
    o.from = from;
    hooks_audit(&o);
}

/* Ends a call with an error RESPONSE of the bus's. */
static void fail_call(struct pending_call *pc, const char *code, const char *msg)
{
    out_call_error(pc->caller, pc->id, pc->id_len, pc->from, pc->from_len, code, -1, msg);
    audit_call_end(pc, NULL, code);
    pending_remove(pc);
}

/* ---- context ------------------------------------------------------- */

/* A number of milliseconds: integers, and for clients whose encoders
 * write floats (1733100000000.0, 1.7331e12), their whole part. */
static bool number_in(const struct env_val *v, long long min, long long max, int64_t *out)
{
    if (v->kind != J_NUMBER || v->n >= 40) return false;
    char tmp[40];
    memcpy(tmp, v->p, v->n);
    tmp[v->n] = 0;
    char *end;
    double d = strtod(tmp, &end);
    if (*end || !(d == d) || d < (double)min || d > (double)max) return false;
    *out = (int64_t)d;   /* d >= 0: truncation is the whole part */
    return true;
}

struct call_ctx { int64_t depth; int64_t deadline; bool has_deadline; };

static bool check_context(const struct env_val *ctx, struct call_ctx *cc, char *why, size_t whylen)
{
    struct env_val v;
    cc->depth = 0;
    cc->deadline = 0;
    cc->has_deadline = false;
    if (ctx->kind == J_NONE) return true;
    if (ctx->kind != J_OBJECT) { snprintf(why, whylen, "\"context\" must be an object"); return false; }
    static const char *const checked[] = { "depth", "deadline", "chain", "root" };
    if (env_object_unambiguous(ctx, checked, sizeof checked / sizeof *checked) != 0) {
        snprintf(why, whylen, "\"context\" has a member given twice or a member name written with escapes");
        return false;
    }
    if (env_object_get(ctx, "depth", &v) == 0 && !number_in(&v, 0, MAX_CONTEXT_DEPTH, &cc->depth)) {
        snprintf(why, whylen, "\"context.depth\" must be a number from 0 to %lld", MAX_CONTEXT_DEPTH);
        return false;
    }
    if (env_object_get(ctx, "deadline", &v) == 0 && v.kind != J_NULL) {
        if (!number_in(&v, 0, MAX_DEADLINE, &cc->deadline)) {
            snprintf(why, whylen, "\"context.deadline\" must be null or epoch milliseconds from 0 to %lld", MAX_DEADLINE);
            return false;
        }
        cc->has_deadline = true;
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

/* ---- CALL ---------------------------------------------------------- */

static bool call_fields_ok(const struct sender *s, struct lb_msg *m, struct call_ctx *cc)
{
    const struct env_val *f = m->env.f;
    char why[160];
    if (!id_usable(&f[F_ID])) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "CALL needs an \"id\": a string of 1-%d bytes", LB_MAX_ID);
        return false;
    }
    if (f[F_TO].kind != J_STRING || f[F_TO].escaped || !valid_service_name(f[F_TO].p, f[F_TO].n)) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "CALL needs \"to\": a valid service name");
        return false;
    }
    if (f[F_METHOD].kind != J_STRING || f[F_METHOD].escaped || !valid_method_name(f[F_METHOD].p, f[F_METHOD].n)) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL,
               "CALL needs \"method\": 1-%d characters of A-Z a-z 0-9 _ . - / @ :", LB_MAX_NAME);
        return false;
    }
    if (!check_context(&f[F_CONTEXT], cc, why, sizeof why)) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "%s", why);
        return false;
    }
    if (cc->depth > g_bus.set.max_depth) {
        refuse(s, m, LB_E_MAX_DEPTH_EXCEEDED, -1, NULL, "call chain depth %lld exceeds max_depth %lld",
               (long long)cc->depth, g_bus.set.max_depth);
        return false;
    }
    uint64_t now = now_ms();
    if (cc->has_deadline && (uint64_t)cc->deadline <= now) {
        refuse(s, m, LB_E_DEADLINE_EXCEEDED, -1, NULL, "the call's deadline passed %llu ms ago",
               (unsigned long long)(now - (uint64_t)cc->deadline));
        return false;
    }
    return true;
}

/* The connection that will answer: an instance here, or a federation
 * link when no instance is here (never for what came over a link). */
static struct lb_conn *pick_callee(const struct sender *s, struct lb_msg *m, struct service **svc_out)
{
    const struct env_val *to = &m->env.f[F_TO], *method = &m->env.f[F_METHOD];
    struct service *svc = registry_find(to->p, to->n);
    *svc_out = svc;
    if (!svc) {
        struct lb_conn *link = g_hooks_n.route && !s->c->link ? hooks_route(s->c, m, val_str(to)) : NULL;
        if (!link) refuse(s, m, LB_E_SERVICE_NOT_FOUND, -1, NULL, "no service named '%.*s' is registered", (int)to->n, to->p);
        return link;
    }
    bool no_method;
    struct instance *i = registry_pick(svc, method->p, method->n, &no_method);
    if (!i) {
        refuse(s, m, LB_E_METHOD_NOT_FOUND, -1, NULL, "service '%s' has no method '%.*s'", svc->name,
               (int)method->n, method->p);
        return NULL;
    }
    if (s->c->link && i->conn->link) {
        /* Loop prevention: what came over a link is served here or not at all. */
        refuse(s, m, LB_E_SERVICE_NOT_FOUND, -1, NULL, "no instance of '%s' on node '%s'", svc->name, g_bus.set.node);
        return NULL;
    }
    return i->conn;
}

void handle_call(const struct sender *s, struct lb_msg *m)
{
    struct call_ctx cc;
    if (!call_fields_ok(s, m, &cc)) return;
    const struct env_val *f = m->env.f;
    if (is_system_target(&f[F_TO])) {
        sysmethod_call(s->c, s->name, s->len, m);
        return;
    }
    struct service *svc;
    struct lb_conn *callee = pick_callee(s, m, &svc);
    if (!callee) return;
    struct hook_refusal r;
    if (g_hooks_n.deliver && hooks_deliver(s->c, callee, m, &r) == LB_DENY) {
        refuse_hook(s, m, &r);
        return;
    }
    uint64_t now = now_ms(), timeout = g_bus.set.call_timeout_ms;
    if (cc.has_deadline && (uint64_t)cc.deadline - now < timeout) timeout = (uint64_t)cc.deadline - now;
    struct pending_args a = {
        .id = f[F_ID].p, .id_len = f[F_ID].n, .method = f[F_METHOD].p, .method_len = f[F_METHOD].n,
        .target = f[F_TO].p, .target_len = f[F_TO].n, .from = s->name, .from_len = s->len,
        .bus_id = callee->link || callee->trusted, .timeout_ms = timeout,
    };
    struct pending_call *pc = pending_add(s->c, callee, &a);
    if (!pc) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "a call with id '%.*s' from you is already in flight",
               (int)f[F_ID].n, f[F_ID].p);
        return;
    }
    pc->bytes = m->env.len;
    g_stats.calls_started++;
    if (svc) svc->calls_in++;
    uint64_t dl = cc.has_deadline ? (uint64_t)cc.deadline : now + g_bus.set.call_timeout_ms;
    if (out_call(&g_fwd, m, s->name, s->len, pc, dl)) conn_send(callee, g_fwd.buf, g_fwd.len, LB_MSG_CALL);
    else conn_send(callee, m->env.frame, m->env.len, LB_MSG_CALL);
    conn_backpressure(s->c, callee);
}

/* ---- RESPONSE ------------------------------------------------------ */

/* Bro IPC's connection pool (poolSize > 1) sends each message on the next
 * socket of its pool, answers included: a RESPONSE may come on a sibling
 * of the connection the CALL went to.  Only another instance of the same
 * service opened by the same local process (unix peer credentials) may
 * answer for it. */
static struct pending_call *find_pooled(struct lb_conn *c, const char *id, size_t n)
{
    if (!c->peer.has_cred) return NULL;
    for (const struct instance *i = c->inst; i; i = i->next) {
        const struct service *s = i->svc;
        for (size_t k = 0; k < s->n; k++) {
            struct lb_conn *o = s->inst[k]->conn;
            if (o == c || !o->peer.has_cred || o->peer.pid != c->peer.pid) continue;
            struct pending_call *pc = pending_find(o, id, n);
            if (pc) return pc;
        }
    }
    return NULL;
}

void handle_response(const struct sender *s, struct lb_msg *m)
{
    const struct env_val *f = m->env.f;
    const struct env_val *id = &f[F_ID], *st = &f[F_STATUS];
    if (!id_usable(id)) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "RESPONSE needs the CALL's \"id\"");
        return;
    }
    if (st->kind != J_NONE && !env_str_eq(st, "success", 7) && !env_str_eq(st, "error", 5)) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "\"status\" must be \"success\" or \"error\"");
        return;
    }
    struct pending_call *pc = pending_find(s->c, id->p, id->n);
    if (!pc) pc = find_pooled(s->c, id->p, id->n);
    if (!pc) {
        /* Already answered (timeout, shutdown) or never asked of this
         * connection: dropping is the only safe choice; count it. */
        g_stats.calls_late++;
        log_debug("router", "#%llu late or unknown RESPONSE %.*s dropped", (unsigned long long)s->c->id,
                  (int)id->n, id->p);
        return;
    }
    struct lb_conn *caller = pc->caller;
    struct hook_refusal r;
    /* The call's service and method, for hooks that ask (the attributes
     * call.to and call.method): pc outlives every use of m. */
    m->call_to = pc->target;
    m->call_method = pc->method;
    if (g_hooks_n.response && hooks_response(s->c, caller, m, &r) == LB_DENY) {
        out_call_error(caller, pc->id, pc->id_len, pc->from, pc->from_len, r.code, r.retry_after_ms, r.message);
        audit_call_end(pc, m, r.code);
        pending_remove(pc);
        return;
    }
    if (out_response(&g_fwd, m, pc)) conn_send(caller, g_fwd.buf, g_fwd.len, LB_MSG_RESPONSE);
    else conn_send(caller, m->env.frame, m->env.len, LB_MSG_RESPONSE);
    conn_backpressure(s->c, caller);
    g_stats.calls_completed++;
    audit_call_end(pc, m, env_str_eq(st, "error", 5) ? LB_E_EXECUTION_FAILED : NULL);
    pending_remove(pc);
}

static void on_call_timeout(struct pending_call *pc)
{
    char msg[LB_MAX_NAME * 2 + 64];
    g_stats.calls_timeouts++;
    snprintf(msg, sizeof msg, "no response from %.*s.%.*s within %llu ms", (int)pc->target_len, pc->target,
             (int)pc->method_len, pc->method, (unsigned long long)((mono_us() - pc->start_us) / 1000));
    fail_call(pc, LB_E_TIMEOUT, msg);
}

void calls_forget(struct lb_conn *c)
{
    while (!list_empty(&c->calls_in)) {
        struct pending_call *pc = list_entry(c->calls_in.next, struct pending_call, callee_link);
        char msg[LB_MAX_NAME * 2 + 96];
        snprintf(msg, sizeof msg, "the instance of '%.*s' handling %.*s disconnected before answering",
                 (int)pc->target_len, pc->target, (int)pc->method_len, pc->method);
        fail_call(pc, LB_E_SERVICE_UNAVAILABLE, msg);
    }
    while (!list_empty(&c->calls_out)) {
        /* The caller went away: nobody is left to answer. */
        pending_remove(list_entry(c->calls_out.next, struct pending_call, caller_link));
    }
}

static void fail_out(struct lb_conn *c, void *ud)
{
    const char *const *cm = ud;
    while (!list_empty(&c->calls_out)) {
        struct pending_call *pc = list_entry(c->calls_out.next, struct pending_call, caller_link);
        fail_call(pc, cm[0], cm[1]);
    }
}

void calls_fail_all(const char *code, const char *message)
{
    const char *cm[2] = { code, message };
    conn_each(fail_out, cm);
}

void calls_free(void)
{
    pending_shutdown();
    jw_free(&g_fwd);
}
