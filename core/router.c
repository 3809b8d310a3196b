/*
 * The router's front: parse, identity, hooks, dispatch (see router.h).
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "router_int.h"
#include "registry.h"
#include "encoding.h"
#include "stats.h"
#include "log.h"
#include "util.h"

static struct jw g_scratch;      /* rewrite hooks' values (struct lb_msg scratch) */
static struct jw g_rewritten;    /* the frame a rewrite produced */

void router_init(void)
{
    jw_init(&g_scratch, 1024);
    jw_init(&g_rewritten, 4096);
    registry_init();
    subs_init();
    emit_init();
    calls_init();
}

void router_free(void)
{
    emit_free();
    subs_free();
    registry_free();
    jw_free(&g_scratch);
    jw_free(&g_rewritten);
}

size_t router_subscription_count(void) { return subs_count(); }

/* ---- identity ------------------------------------------------------ */

/* Works out who speaks: `from` must be one of the connection's names; a
 * trusted connection (a federation link) may speak for any valid name,
 * and must name one when it registered none of its own. */
static bool identify(struct sender *s, struct lb_conn *c, const struct lb_msg *m)
{
    const struct env_val *from = &m->env.f[F_FROM];
    s->c = c;
    s->name = conn_name(c);
    s->len = c->inst ? c->inst->name_len : 0;
    if (from->kind == J_NONE || (!c->inst && !c->trusted)) {
        enum lb_msg_type t = m->env.type;
        if (s->name || !c->trusted || (t != LB_MSG_CALL && t != LB_MSG_EMIT && t != LB_MSG_CRUD)) return true;
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "a connection that registered no service must say \"from\"");
        return false;
    }
    if (from->kind == J_STRING && !from->escaped) {
        struct instance *i = conn_instance(c, from->p, from->n);
        if (i) { s->name = i->name; s->len = i->name_len; return true; }
        if (c->trusted && valid_service_name(from->p, from->n)) { s->name = from->p; s->len = from->n; return true; }
    }
    refuse(s, m, LB_E_FORBIDDEN, -1, NULL, "\"from\" must be the sender's registered name '%s'", conn_label(c));
    return false;
}

/* ---- parsing ------------------------------------------------------- */

/* A frame converted from MessagePack comes with its envelope, built as
 * the scanner would build it (encoding.h): not scanned a second time. */
static bool parse(struct lb_conn *c, struct lb_msg *m, const struct enc_in *in)
{
    const char *err = NULL;
    enum env_status st;
    if (in->indexed) { st = in->env_status; err = in->env_err; }
    else st = envelope_parse(&m->env, in->json, in->len, &err);
    g_stats.msgs_in[m->env.type]++;
    if (st == ENV_OK) return true;
    struct sender s = { c, conn_name(c), c->inst ? c->inst->name_len : 0 };
    if (st == ENV_DUPLICATE || st == ENV_ESCAPED_NAME || st == ENV_BAD_TYPE) {
        /* The frame is valid JSON: a CALL with an id can still be answered
         * as a call, so the caller is not left waiting. */
        refuse(&s, m, LB_E_INVALID_MESSAGE, -1, NULL, "%s", err);
    } else {
        const struct env_val *id = &m->env.f[F_ID];
        conn_send_error(c, id_usable(id) ? id->p : NULL, id_usable(id) ? id->n : 0, LB_E_INVALID_MESSAGE, -1, err);
    }
    return false;
}

/* Generic checks every message passes before its handler. */
static bool admissible(struct sender *s, struct lb_conn *c, struct lb_msg *m)
{
    if (c->state != CS_REGISTERED && m->env.type != LB_MSG_REGISTER && m->env.type != LB_MSG_HEARTBEAT) {
        struct sender anon = { c, NULL, 0 };
        refuse(&anon, m, LB_E_NOT_REGISTERED, -1, NULL, "send REGISTER first (got %s)", lb_msg_type_name(m->env.type));
        return false;
    }
    if (!identify(s, c, m)) return false;
    const struct env_val *tok = &m->env.f[F_TOKEN];
    if (tok->kind == J_OBJECT && c->trusted) {
        /* A federation link carries claims another node verified. */
        m->claims = tok->p;
        m->claims_len = tok->n;
    } else if (tok->kind != J_NONE && (tok->kind != J_STRING || tok->n > LB_MAX_TOKEN)) {
        /* Anything else would reach recipients looking like claims the
         * bus had verified. */
        refuse(s, m, LB_E_UNAUTHENTICATED, -1, NULL, "\"token\" must be a string of at most %d bytes", LB_MAX_TOKEN);
        return false;
    }
    return true;
}

/* ---- rewriting ----------------------------------------------------- */

/* Applies what rewrite hooks asked for: the frame is written once with the
 * changes, and indexed as it is written (msg_write), not scanned again.
 * The result passes every check a frame from a client passes: its bytes
 * are the client's, which were scanned, or values lb_msg_set validated as
 * members (msg.c says what that covers), and the handler the message goes
 * to checks its members as for any frame.  Returns the message to route
 * (m itself, or *out). */
static struct lb_msg *rewrite(struct sender *s, struct lb_msg *m, struct lb_msg *out)
{
    struct hook_refusal r;
    if (hooks_rewrite(s->c, m, &r) == LB_DENY) {
        refuse_hook(s, m, &r);
        return NULL;
    }
    if (!m->n_over) return m;
    jw_reset(&g_rewritten);
    msg_init(out, m->scratch);
    msg_write(&g_rewritten, m, "", 0, 0, &out->env);
    if (out->env.type == LB_MSG_UNKNOWN) {
        /* lb_msg_set allows no change of type but CRUD -> CALL: never. */
        refuse(s, m, LB_E_SCRIPT_ERROR, -1, NULL, "a rewrite produced an invalid message: unknown \"type\"");
        return NULL;
    }
    msg_carry(out, m);
    out->n_recips = m->n_recips;
    memcpy(out->recip_off, m->recip_off, sizeof m->recip_off);
    memcpy(out->recip_len, m->recip_len, sizeof m->recip_len);
    return out;
}

/* ---- dispatch ------------------------------------------------------ */

static void handle_heartbeat(const struct sender *s, struct lb_msg *m)
{
    /* Bro clients send HEARTBEAT and expect nothing back; a client that
     * wants to probe the bus gives an id and gets a HEARTBEAT with it. */
    const struct env_val *id = &m->env.f[F_ID];
    if (id->kind == J_STRING && id->n <= LB_MAX_ID) out_heartbeat(s->c, id->p, id->n);
}

static void dispatch(struct sender *s, struct lb_msg *m)
{
    switch (m->env.type) {
    case LB_MSG_REGISTER:    handle_register(s, m); break;
    case LB_MSG_CALL:        handle_call(s, m); break;
    case LB_MSG_RESPONSE:    handle_response(s, m); break;
    case LB_MSG_EMIT:        handle_emit(s, m); break;
    case LB_MSG_SUBSCRIBE:   handle_subscribe(s, m, true); break;
    case LB_MSG_UNSUBSCRIBE: handle_subscribe(s, m, false); break;
    case LB_MSG_HEARTBEAT:   handle_heartbeat(s, m); break;
    case LB_MSG_CRUD:
        refuse(s, m, LB_E_SERVICE_NOT_FOUND, -1, NULL,
               "CRUD routing is not configured on this bus (no plugin maps resource '%.*s'; enable [plugin lua])",
               (int)(m->env.f[F_RESOURCE].kind == J_STRING ? m->env.f[F_RESOURCE].n : 0), m->env.f[F_RESOURCE].p);
        break;
    default:
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "%s is sent by the bus, not to it", lb_msg_type_name(m->env.type));
        break;
    }
}

static bool rewritable_type(enum lb_msg_type t)
{
    return t == LB_MSG_CALL || t == LB_MSG_EMIT || t == LB_MSG_CRUD;
}

/* A frame the encoding edge refused (MessagePack that JSON cannot carry,
 * a switch of encoding): answered in the connection's encoding. */
static void refuse_encoded(struct lb_conn *c, const struct enc_in *in)
{
    g_stats.msgs_in[LB_MSG_UNKNOWN]++;
    if (in->call) out_call_error(c, in->id, in->id_len, conn_name(c), conn_name(c) ? strlen(conn_name(c)) : 0,
                                 in->code, -1, in->why);
    else conn_send_error(c, in->id_len ? in->id : NULL, in->id_len, in->code, -1, in->why);
}

static void route(struct lb_conn *c, struct lb_msg *m, const struct enc_in *in);

void router_input(struct lb_conn *c, const char *frame, size_t len)
{
    struct lb_msg m;
    struct enc_in in;
    in.env = &m.env;
    if (encoding_input(c, frame, len, &in) == ENC_REFUSE) {
        refuse_encoded(c, &in);
        return;
    }
    route(c, &m, &in);
    if (in.json != frame) encoding_routed();
}

/* m->env: filled by encoding_input when in->indexed. */
static void route(struct lb_conn *c, struct lb_msg *m, const struct enc_in *in)
{
    struct lb_msg rewritten;
    msg_init(m, &g_scratch);
    jw_reset(&g_scratch);
    if (!parse(c, m, in)) return;
    struct sender s;
    if (!admissible(&s, c, m)) return;
    if (g_hooks_n.inspect) hooks_inspect(c, m);
    struct hook_refusal r;
    if (g_hooks_n.message && c->state == CS_REGISTERED && hooks_message(c, m, &r) == LB_DENY) {
        refuse_hook(&s, m, &r);
        return;
    }
    struct lb_msg *route = m;
    if (g_hooks_n.rewrite && c->state == CS_REGISTERED && rewritable_type(m->env.type)) {
        route = rewrite(&s, m, &rewritten);
        if (!route) return;
    }
    dispatch(&s, route);
}

/* ---- connection teardown ------------------------------------------- */

void router_forget(struct lb_conn *c)
{
    calls_forget(c);
    subs_forget(c);
    while (c->inst) {
        log_info("router", "#%llu '%s' unregistered", (unsigned long long)c->id, c->inst->name);
        registry_remove(c->inst);
    }
}

void router_fail_all_calls(const char *code, const char *message) { calls_fail_all(code, message); }
