#include "config.h"
#include <string.h>
#include "out.h"
#include "stats.h"
#include "log.h"
#include "util.h"

static struct jw g_out;              /* scratch for frames sent at once */
static char g_idbuf[24] = "0";       /* last generated id number, in decimal */
static size_t g_idlen = 1;
static uint64_t g_root_seq;

void out_free(void) { jw_free(&g_out); }

static struct jw *begin(void)
{
    if (!g_out.buf) jw_init(&g_out, 4096);
    jw_reset(&g_out);
    return &g_out;
}

/* Generated ids are "<node>-<n>": counting in decimal text avoids a
 * division loop per message on the hot path. */
static void next_id(void)
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

static void write_generated_id(struct jw *w)
{
    next_id();
    jw_raw(w, g_bus.set.node, strlen(g_bus.set.node));
    jw_lit(w, "-");
    jw_raw(w, g_idbuf, g_idlen);
}

static void raw_value(struct jw *w, const struct env_val *v)
{
    if (v->kind == J_STRING) jw_raw(w, v->p - 1, v->n + 2);
    else jw_raw(w, v->p, v->n);
}

void out_call_error(struct lb_conn *caller, const char *id, size_t id_len, const char *to, size_t to_len,
                    const char *code, long long retry_after_ms, const char *msg)
{
    struct jw *w = begin();
    jw_lit(w, "{\"type\":\"RESPONSE\",\"id\":\"");
    jw_raw(w, id, id_len);
    jw_lit(w, "\",\"from\":");
    jw_cstr(w, g_bus.set.system_service);
    if (to) { jw_lit(w, ",\"to\":"); jw_str(w, to, to_len); }
    jw_lit(w, ",\"status\":\"error\",\"error\":");
    jw_error_object(w, code, msg, retry_after_ms);
    jw_lit(w, "}");
    stats_count_error(code);
    log_debug("out", "#%llu call %.*s failed: %s %s", (unsigned long long)caller->id, (int)id_len, id, code, msg);
    conn_send(caller, w->buf, w->len, LB_MSG_RESPONSE);
}

void out_reply(struct lb_conn *caller, const struct lb_msg *call, bool ok, const char *json, size_t len)
{
    const struct env_val *id = &call->env.f[F_ID], *ctx = &call->env.f[F_CONTEXT], *from = &call->env.f[F_FROM];
    struct jw *w = begin();
    jw_lit(w, "{\"type\":\"RESPONSE\",\"id\":\"");
    jw_raw(w, id->p, id->n);
    jw_lit(w, "\",\"from\":");
    jw_cstr(w, g_bus.set.system_service);
    if (from->kind == J_STRING) { jw_lit(w, ",\"to\":\""); jw_raw(w, from->p, from->n); jw_lit(w, "\""); }
    else if (conn_name(caller)) { jw_lit(w, ",\"to\":"); jw_cstr(w, conn_name(caller)); }
    if (ok) jw_lit(w, ",\"status\":\"success\",\"data\":");
    else jw_lit(w, ",\"status\":\"error\",\"error\":");
    jw_raw(w, json, len);
    if (ctx->kind == J_OBJECT) { jw_lit(w, ",\"context\":"); jw_raw(w, ctx->p, ctx->n); }
    jw_lit(w, "}");
    conn_send(caller, w->buf, w->len, LB_MSG_RESPONSE);
}

void out_register_ack(struct lb_conn *c, const struct instance *inst)
{
    struct jw *w = begin();
    jw_lit(w, "{\"type\":\"REGISTER_ACK\",\"node\":");
    jw_cstr(w, g_bus.set.node);
    jw_lit(w, ",\"session\":");
    jw_u64(w, c->id);
    jw_lit(w, ",\"serviceName\":");
    jw_str(w, inst->name, inst->name_len);
    jw_lit(w, ",\"heartbeatInterval\":");
    jw_u64(w, g_bus.set.heartbeat_ms);
    jw_lit(w, ",\"auth\":");
    jw_cstr(w, c->auth);
    jw_lit(w, "}");
    conn_send(c, w->buf, w->len, LB_MSG_REGISTER_ACK);
}

void out_ack(struct lb_conn *c, const struct lb_msg *m, const char *key, size_t count, long remote)
{
    struct jw *w = begin();
    jw_lit(w, "{\"type\":\"ACK\",\"id\":\"");
    const struct env_val *id = &m->env.f[F_ID];
    if (id->kind == J_STRING) jw_raw(w, id->p, id->n);
    else write_generated_id(w);
    jw_lit(w, "\",\"");
    jw_raw(w, key, strlen(key));
    jw_lit(w, "\":");
    jw_u64(w, count);
    if (remote >= 0) { jw_lit(w, ",\"remoteNodes\":"); jw_u64(w, (uint64_t)remote); }
    jw_lit(w, "}");
    conn_send(c, w->buf, w->len, LB_MSG_ACK);
}

void out_heartbeat(struct lb_conn *c, const char *id, size_t id_len)
{
    struct jw *w = begin();
    jw_lit(w, "{\"type\":\"HEARTBEAT\",\"id\":\"");
    jw_raw(w, id, id_len);
    jw_lit(w, "\",\"from\":");
    jw_cstr(w, g_bus.set.system_service);
    jw_lit(w, ",\"timestamp\":");
    jw_u64(w, now_ms());
    jw_lit(w, "}");
    conn_send(c, w->buf, w->len, LB_MSG_HEARTBEAT);
}

/* As lean as a client can use: `id` only when the emitter gave one, `to`
 * only when the event was addressed to a service (absent: a broadcast). */
void out_event(struct jw *w, const struct lb_msg *m, const char *from, size_t from_len, bool broadcast)
{
    const struct env_val *f = m->env.f;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"EVENT\",");
    if (f[F_ID].kind == J_STRING) { jw_lit(w, "\"id\":\""); jw_raw(w, f[F_ID].p, f[F_ID].n); jw_lit(w, "\","); }
    jw_lit(w, "\"event\":\"");
    jw_raw(w, f[F_EVENT].p, f[F_EVENT].n);
    jw_lit(w, "\",\"from\":\"");
    jw_raw(w, from, from_len);
    if (!broadcast) { jw_lit(w, "\",\"to\":\""); jw_raw(w, f[F_TO].p, f[F_TO].n); }
    jw_lit(w, "\",\"payload\":");
    if (f[F_PAYLOAD].kind == J_NONE) jw_lit(w, "null");
    else raw_value(w, &f[F_PAYLOAD]);
    if (m->claims) { jw_lit(w, ",\"token\":"); jw_raw(w, m->claims, m->claims_len); }
    jw_lit(w, "}");
}

/* A context for a call that came without one: the chain starts here. */
static void write_new_context(struct jw *w, const char *from, size_t from_len, uint64_t deadline)
{
    jw_lit(w, ",\"context\":{\"root\":\"root-");
    jw_u64(w, now_ms());
    jw_lit(w, "-");
    jw_u64(w, ++g_root_seq);
    jw_lit(w, "\",\"chain\":[");
    jw_str(w, from, from_len);
    jw_lit(w, "],\"depth\":1,\"deadline\":");
    jw_u64(w, deadline);
    jw_lit(w, "}");
}

/* Members of the bus's own, written before the sender's others. */
static struct jw *prefix_begin(void)
{
    static struct jw pre;
    if (!pre.buf) jw_init(&pre, 512);
    jw_reset(&pre);
    return &pre;
}

bool out_call(struct jw *w, const struct lb_msg *m, const char *from, size_t from_len,
              const struct pending_call *pc, uint64_t deadline)
{
    const struct env_val *f = m->env.f;
    bool need_ctx = f[F_CONTEXT].kind == J_NONE;
    if (!need_ctx && f[F_FROM].kind != J_NONE && pc->wire_is_id && !m->claims && f[F_AUTH].kind == J_NONE &&
        !m->n_over)
        return false;
    size_t wn;
    const char *wire = pending_wire(pc, &wn);
    struct jw *p = prefix_begin();
    jw_lit(p, "\"type\":\"CALL\",\"id\":\"");
    jw_raw(p, wire, wn);
    jw_lit(p, "\",\"from\":");
    jw_str(p, from, from_len);
    if (m->claims) { jw_lit(p, ",\"token\":"); jw_raw(p, m->claims, m->claims_len); }
    if (need_ctx) write_new_context(p, from, from_len, deadline);
    jw_reset(w);
    msg_write(w, m, p->buf, p->len, FBIT(F_TYPE) | FBIT(F_ID) | FBIT(F_FROM) | FBIT(F_TOKEN) | FBIT(F_AUTH), NULL);
    return true;
}

bool out_response(struct jw *w, const struct lb_msg *m, const struct pending_call *pc)
{
    const struct env_val *f = m->env.f;
    const struct env_val *to = &f[F_TO];
    bool to_ok = to->kind == J_NONE || env_str_eq(to, pc->from, pc->from_len);
    if (pc->wire_is_id && f[F_FROM].kind != J_NONE && to_ok && f[F_TOKEN].kind == J_NONE &&
        f[F_AUTH].kind == J_NONE && !m->n_over)
        return false;
    struct jw *p = prefix_begin();
    jw_lit(p, "\"type\":\"RESPONSE\",\"id\":\"");
    jw_raw(p, pc->id, pc->id_len);
    jw_lit(p, "\",\"from\":");
    jw_str(p, pc->target, pc->target_len);
    jw_lit(p, ",\"to\":");
    jw_str(p, pc->from, pc->from_len);
    jw_reset(w);
    msg_write(w, m, p->buf, p->len, FBIT(F_TYPE) | FBIT(F_ID) | FBIT(F_FROM) | FBIT(F_TO) | FBIT(F_TOKEN) | FBIT(F_AUTH), NULL);
    return true;
}
