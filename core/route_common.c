/*
 * What the router's parts share (router_int.h): refusals, audit records,
 * small checks.  Below router.c and route_*.c, which call it.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "router_int.h"
#include "stats.h"
#include "log.h"
#include "util.h"

struct lb_str val_str(const struct env_val *v)
{
    struct lb_str s = { v->kind == J_STRING ? v->p : NULL, v->kind == J_STRING ? v->n : 0 };
    return s;
}

bool id_usable(const struct env_val *id)
{
    return id->kind == J_STRING && id->n >= 1 && id->n <= LB_MAX_ID;
}

bool is_system_target(const struct env_val *to)
{
    const char *sys = g_bus.set.system_service;
    return env_str_eq(to, sys, strlen(sys)) ||
           env_str_eq(to, LB_DEFAULT_SYSTEM_SERVICE, sizeof LB_DEFAULT_SYSTEM_SERVICE - 1);
}

long check_name_array(const struct env_val *arr, bool (*valid)(const char *, size_t), size_t max,
                      const char *what, char *why, size_t whylen)
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

/* Audit records name what was asked for, bounded: a refusal for an
 * oversized member is recorded too (the audit escapes what it writes). */
static struct lb_str bounded(struct lb_str s, size_t max)
{
    if (s.n <= max) return s;
    s.n = max;
    /* Not in the middle of a UTF-8 sequence. */
    while (s.n && ((unsigned char)s.p[s.n] & 0xC0) == 0x80) s.n--;
    return s;
}

void audit_msg(const struct sender *s, const struct lb_msg *m, struct lb_str to, struct lb_str name,
               int delivered, const char *code, const char *plugin, uint64_t dur_us)
{
    if (!g_hooks_n.audit) return;
    /* Calls to the bus's own service may carry tokens (token.verify, ...):
     * the audit never sees their content, refused or not. */
    bool secret = m->env.type == LB_MSG_CALL && is_system_target(&m->env.f[F_TO]);
    struct lb_outcome o = {
        .size = sizeof o, .type = m->env.type, .from = s->name, .to = bounded(to, LB_MAX_NAME),
        .name = bounded(name, LB_MAX_EVENT), .id = bounded(val_str(&m->env.f[F_ID]), LB_MAX_ID),
        .delivered = delivered, .error_code = code, .bytes = m->env.len, .duration_us = dur_us,
        .msg = secret ? NULL : m, .refused_by = plugin, .conn = s->c,
    };
    hooks_audit(&o);
}

static struct lb_str name_of(const struct lb_msg *m)
{
    switch (m->env.type) {
    case LB_MSG_EMIT: return val_str(&m->env.f[F_EVENT]);
    case LB_MSG_REGISTER: return val_str(&m->env.f[F_SERVICE_NAME]);
    case LB_MSG_CRUD: return val_str(&m->env.f[F_RESOURCE]);
    default: return val_str(&m->env.f[F_METHOD]);
    }
}

static void refuse_text(const struct sender *s, const struct lb_msg *m, const char *code, long long retry,
                        const char *plugin, const char *msg)
{
    const struct env_val *id = &m->env.f[F_ID];
    bool answerable = (m->env.type == LB_MSG_CALL || m->env.type == LB_MSG_CRUD) && id_usable(id);
    if (answerable)
        out_call_error(s->c, id->p, id->n, s->name, s->name ? s->len : 0, code, retry, msg);
    else
        conn_send_error(s->c, id_usable(id) ? id->p : NULL, id_usable(id) ? id->n : 0, code, retry, msg);
    if (plugin) log_debug("router", "#%llu %s refused by [plugin %s]: %s %s", (unsigned long long)s->c->id,
                          lb_msg_type_name(m->env.type), plugin, code, msg);
    audit_msg(s, m, val_str(&m->env.f[F_TO]), name_of(m), -1, code, plugin, 0);
}

void refuse(const struct sender *s, const struct lb_msg *m, const char *code, long long retry_after_ms,
            const char *plugin, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    refuse_text(s, m, code, retry_after_ms, plugin, msg);
}

void refuse_hook(const struct sender *s, const struct lb_msg *m, const struct hook_refusal *r)
{
    refuse_text(s, m, r->code, r->retry_after_ms, r->plugin, r->message);
}

