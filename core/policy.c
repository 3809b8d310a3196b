#include "config.h"
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "policy.h"
#include "plugin_host.h"
#include "util.h"

struct hook_entry { struct lb_hooks h; void *ud; };
static struct hook_entry *g_hooks;
static size_t g_n_hooks;
struct policy_counts g_policy;

int lb_hooks_register(struct lb_plugin_ctx *ctx, const struct lb_hooks *hooks, void *ud)
{
    (void)ctx;
    g_hooks = xrealloc(g_hooks, (g_n_hooks + 1) * sizeof *g_hooks);
    g_hooks[g_n_hooks++] = (struct hook_entry){ *hooks, ud };
    g_policy.accept += hooks->accept != NULL;
    g_policy.authenticate += hooks->authenticate != NULL;
    g_policy.message += hooks->message != NULL;
    g_policy.deliver += hooks->deliver != NULL;
    g_policy.audit += hooks->audit != NULL;
    g_policy.closed += hooks->closed != NULL;
    return 0;
}

void lb_declare_authenticator(struct lb_plugin_ctx *ctx)
{
    (void)ctx;
    g_policy.authenticators++;
}

int lb_ipc_bypass_enable(struct lb_plugin_ctx *ctx)
{
    if (lb_bus_production(ctx)) {
        lb_plugin_fail(ctx, "the IPC request bypass is for mode = development only");
        return -1;
    }
    g_policy.ipc_bypass++;
    return 0;
}

/* Decided here rather than by the plugin that enabled it, so that the
 * order of [plugin] sections does not matter: every plugin asks the same
 * question of the same message. */
bool lb_msg_ipc_bypass(const struct lb_msg *m)
{
    enum lb_msg_type t = m->env.type;
    return g_policy.ipc_bypass && !g_bus.set.production && (t == LB_MSG_CALL || t == LB_MSG_EMIT) &&
           m->env.f[F_IPC_REQUEST].kind == J_TRUE;
}

void policy_free(void)
{
    free(g_hooks);
    g_hooks = NULL;
    g_n_hooks = 0;
    memset(&g_policy, 0, sizeof g_policy);
}

void verdict_init(struct lb_verdict *v)
{
    v->kind = LB_PASS;
    v->code = NULL;
    v->message[0] = 0;
    v->retry_after_ms = -1;
}

void lb_deny(struct lb_verdict *v, const char *code, const char *fmt, ...)
{
    va_list ap;
    v->kind = LB_DENY;
    v->code = code;
    va_start(ap, fmt);
    vsnprintf(v->message, sizeof v->message, fmt, ap);
    va_end(ap);
}

/* A plugin that returns DENY without a code still refuses, as FORBIDDEN. */
static enum lb_verdict_kind denied(struct lb_verdict *v)
{
    v->kind = LB_DENY;
    if (!v->code) v->code = LB_E_FORBIDDEN;
    if (!v->message[0]) snprintf(v->message, sizeof v->message, "refused by policy");
    return LB_DENY;
}

enum lb_verdict_kind policy_accept(struct lb_conn *c, struct lb_verdict *v)
{
    verdict_init(v);
    for (size_t i = 0; g_policy.accept && i < g_n_hooks; i++)
        if (g_hooks[i].h.accept && g_hooks[i].h.accept(g_hooks[i].ud, c, v) == LB_DENY) return denied(v);
    return LB_PASS;
}

enum lb_verdict_kind policy_authenticate(struct lb_conn *c, struct lb_msg *m, struct lb_verdict *v)
{
    enum lb_verdict_kind result = LB_PASS;
    verdict_init(v);
    for (size_t i = 0; g_policy.authenticate && i < g_n_hooks; i++) {
        if (!g_hooks[i].h.authenticate) continue;
        enum lb_verdict_kind k = g_hooks[i].h.authenticate(g_hooks[i].ud, c, m, v);
        if (k == LB_DENY) return denied(v);
        if (k == LB_ALLOW) result = LB_ALLOW;
    }
    v->kind = result;
    return result;
}

enum lb_verdict_kind policy_message(struct lb_conn *c, struct lb_msg *m, struct lb_verdict *v)
{
    verdict_init(v);
    for (size_t i = 0; i < g_n_hooks; i++)
        if (g_hooks[i].h.message && g_hooks[i].h.message(g_hooks[i].ud, c, m, v) == LB_DENY) return denied(v);
    return LB_PASS;
}

enum lb_verdict_kind policy_deliver(struct lb_conn *from, struct lb_conn *to, struct lb_msg *m,
                                    struct lb_verdict *v)
{
    verdict_init(v);
    for (size_t i = 0; i < g_n_hooks; i++)
        if (g_hooks[i].h.deliver && g_hooks[i].h.deliver(g_hooks[i].ud, from, to, m, v) == LB_DENY)
            return denied(v);
    return LB_PASS;
}

void policy_audit(const struct lb_outcome *o)
{
    for (size_t i = 0; i < g_n_hooks; i++)
        if (g_hooks[i].h.audit) g_hooks[i].h.audit(g_hooks[i].ud, o);
}

void policy_closed(struct lb_conn *c)
{
    for (size_t i = 0; g_policy.closed && i < g_n_hooks; i++)
        if (g_hooks[i].h.closed) g_hooks[i].h.closed(g_hooks[i].ud, c);
}

/* ---- lb_msg accessors ---------------------------------------------- */

enum lb_msg_type lb_msg_type(const struct lb_msg *m) { return m->env.type; }

struct lb_str lb_msg_field(const struct lb_msg *m, const char *name)
{
    int f = env_field_by_name(name);
    struct lb_str s = { NULL, 0 };
    if (f < 0 || m->env.f[f].kind != J_STRING) return s;
    s.p = m->env.f[f].p;
    s.n = m->env.f[f].n;
    return s;
}

struct lb_str lb_msg_raw(const struct lb_msg *m, const char *name)
{
    int f = env_field_by_name(name);
    struct lb_str s = { NULL, 0 };
    if (f < 0 || m->env.f[f].kind == J_NONE) return s;
    const struct env_val *v = &m->env.f[f];
    if (v->kind == J_STRING) { s.p = v->p - 1; s.n = v->n + 2; }  /* with quotes */
    else { s.p = v->p; s.n = v->n; }
    return s;
}

struct lb_str lb_msg_frame(const struct lb_msg *m)
{
    struct lb_str s = { m->env.frame, m->env.len };
    return s;
}

struct lb_str lb_msg_claims(const struct lb_msg *m)
{
    struct lb_str s = { m->claims, m->claims_len };
    return s;
}

void lb_msg_set_claims(struct lb_msg *m, const char *json, size_t len)
{
    /* The claims live in a buffer owned by the bus until the next message:
     * routing finishes before then. */
    static char *buf;
    static size_t cap;
    if (len > cap) { buf = xrealloc(buf, len); cap = len; }
    memcpy(buf, json, len);
    m->claims = buf;
    m->claims_len = len;
}
