#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sysmethod.h"
#include "hooks.h"
#include "out.h"
#include "log.h"
#include "util.h"

#define MAX_PARAMS (64 * 1024)

static struct sys_method *g_methods;
static size_t g_n_methods;

static const struct sys_method *find(const char *name, size_t n)
{
    for (size_t i = 0; i < g_n_methods; i++)
        if (strlen(g_methods[i].name) == n && memcmp(g_methods[i].name, name, n) == 0) return &g_methods[i];
    return NULL;
}

static int add(struct lb_plugin_ctx *ctx, const char *name, unsigned flags, lb_method_fn fn, lb_method_raw_fn raw,
               void *ud)
{
    if (find(name, strlen(name))) return -1;
    g_methods = xrealloc(g_methods, (g_n_methods + 1) * sizeof *g_methods);
    g_methods[g_n_methods++] = (struct sys_method){ xstrdup(name), flags, fn, raw, ud, ctx };
    return 0;
}

int sysmethod_add(struct lb_plugin_ctx *ctx, const char *name, unsigned flags, lb_method_fn fn, void *ud)
{
    return add(ctx, name, flags, fn, NULL, ud);
}

int lb_system_method_register(struct lb_plugin_ctx *ctx, const char *method, unsigned flags, lb_method_fn fn, void *ud)
{
    if (!valid_method_name(method, strlen(method)) || add(ctx, method, flags, fn, NULL, ud)) {
        lb_plugin_fail(ctx, "cannot register system method '%s' (invalid or taken)", method);
        return -1;
    }
    return 0;
}

int lb_system_method_register_raw(struct lb_plugin_ctx *ctx, const char *method, unsigned flags,
                                  lb_method_raw_fn fn, void *ud)
{
    if (!valid_method_name(method, strlen(method)) || add(ctx, method, flags, NULL, fn, ud)) {
        lb_plugin_fail(ctx, "cannot register system method '%s' (invalid or taken)", method);
        return -1;
    }
    return 0;
}

void sysmethods_remove_plugin(struct lb_plugin_ctx *ctx)
{
    size_t k = 0;
    for (size_t i = 0; i < g_n_methods; i++) {
        if (g_methods[i].ctx == ctx) free(g_methods[i].name);
        else g_methods[k++] = g_methods[i];
    }
    g_n_methods = k;
}

json_t *sysmethod_names(void)
{
    json_t *a = json_array();
    for (size_t i = 0; i < g_n_methods; i++) json_array_append_new(a, json_string(g_methods[i].name));
    return a;
}

void sysmethods_free(void)
{
    for (size_t i = 0; i < g_n_methods; i++) free(g_methods[i].name);
    free(g_methods);
    g_methods = NULL;
    g_n_methods = 0;
}

/* ---- calls --------------------------------------------------------- */

struct call { struct lb_conn *c; const char *from; size_t from_len; struct lb_msg *m; };

static void reply_error(const struct call *k, const char *code, const char *msg)
{
    const struct env_val *id = &k->m->env.f[F_ID];
    out_call_error(k->c, id->p, id->n, k->from, k->from ? k->from_len : 0, code, -1, msg);
}

static struct lb_str raw_params(const struct env_val *p)
{
    struct lb_str s = { "{}", 2 };
    if (p->kind == J_NONE) return s;
    s.p = p->kind == J_STRING ? p->p - 1 : p->p;
    s.n = p->kind == J_STRING ? p->n + 2 : p->n;
    return s;
}

/* NULL when jansson cannot hold them (an integer beyond 64 bits, 1e400,
 * a lone surrogate): said to the caller, never replaced by {}. */
static json_t *load_params(const struct env_val *p, char *why, size_t whylen)
{
    struct lb_str s = raw_params(p);
    json_error_t e;
    json_t *params = json_loadb(s.p, s.n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!params) snprintf(why, whylen, "params cannot be read by the bus's methods: %s", e.text);
    return params;
}

/* A method that writes its result as JSON text (lb_system_method_register_raw). */
static const char *run_raw(const struct call *k, const struct sys_method *sm, struct lb_str params)
{
    static struct lb_jw *out;
    if (!out) out = lb_jw_new();
    lb_jw_reset(out);
    if (sm->raw(sm->ud, k->c, params, out, err_fresh()) != 0) {
        struct hook_refusal r;
        err_refusal(&r, LB_E_INTERNAL_ERROR);
        reply_error(k, r.code, r.message[0] ? r.message : "system method failed");
        return r.code;
    }
    size_t n;
    const char *text = lb_jw_data(out, &n), *err;
    if (!n) { text = "null"; n = 4; }
    if (env_validate_value(text, n, &err) != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "'%s' produced a result that is not JSON (%s)", sm->name, err);
        reply_error(k, LB_E_INTERNAL_ERROR, msg);
        return LB_E_INTERNAL_ERROR;
    }
    out_reply(k->c, k->m, true, text, n);
    return NULL;
}

/* Runs the method and answers; returns NULL on success, else the error
 * code sent back. */
static const char *run(const struct call *k)
{
    const struct env_val *method = &k->m->env.f[F_METHOD], *p = &k->m->env.f[F_PARAMS];
    const struct sys_method *sm = find(method->p, method->n);
    char msg[300];
    if (!sm) {
        snprintf(msg, sizeof msg, "service '%s' has no method '%.*s'", g_bus.set.system_service,
                 (int)method->n, method->p);
        reply_error(k, LB_E_METHOD_NOT_FOUND, msg);
        return LB_E_METHOD_NOT_FOUND;
    }
    if ((sm->flags & LB_METHOD_ADMIN) && !lb_conn_is_admin(k->c)) {
        snprintf(msg, sizeof msg, "'%s.%s' changes the bus: in mode = production only an admin session may call it",
                 g_bus.set.system_service, sm->name);
        reply_error(k, LB_E_FORBIDDEN, msg);
        return LB_E_FORBIDDEN;
    }
    if (p->kind != J_NONE && p->n > MAX_PARAMS) {
        reply_error(k, LB_E_PAYLOAD_TOO_LARGE, "params too large for a system method (64 KiB at most)");
        return LB_E_PAYLOAD_TOO_LARGE;
    }
    if (sm->raw) return run_raw(k, sm, raw_params(p));
    json_t *params = load_params(p, msg, sizeof msg), *result = NULL;
    if (!params) {
        reply_error(k, LB_E_INVALID_MESSAGE, msg);
        return LB_E_INVALID_MESSAGE;
    }
    int rc = sm->fn(sm->ud, k->c, params, &result, err_fresh());
    json_decref(params);
    if (rc != 0) {
        struct hook_refusal r;
        json_decref(result);
        err_refusal(&r, LB_E_INTERNAL_ERROR);
        reply_error(k, r.code, r.message[0] ? r.message : "system method failed");
        return r.code;
    }
    char *text = json_dumps(result ? result : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(result);
    if (!text) { reply_error(k, LB_E_INTERNAL_ERROR, "could not encode the result"); return LB_E_INTERNAL_ERROR; }
    out_reply(k->c, k->m, true, text, strlen(text));
    free(text);
    return NULL;
}

/* The bus's own methods (reload, token.issue, ...) are the most sensitive
 * calls there are: audited like any CALL, but without the message (.msg
 * NULL), so neither params nor result — which may hold tokens — can end
 * up in an audit file. */
static void audit(const struct call *k, const char *code, uint64_t start_us)
{
    if (!g_hooks_n.audit) return;
    const struct env_val *method = &k->m->env.f[F_METHOD], *id = &k->m->env.f[F_ID];
    const char *sys = g_bus.set.system_service;
    char from[LB_MAX_NAME + 1] = "";
    if (k->from) snprintf(from, sizeof from, "%.*s", (int)k->from_len, k->from);
    struct lb_outcome o = {
        .size = sizeof o, .type = LB_MSG_CALL, .from = k->from ? from : NULL, .to = { sys, strlen(sys) },
        .name = { method->p, method->n }, .id = { id->p, id->n }, .delivered = code ? -1 : 1,
        .error_code = code, .bytes = k->m->env.len, .duration_us = mono_us() - start_us, .msg = NULL,
        .conn = k->c,
    };
    hooks_audit(&o);
}

void sysmethod_call(struct lb_conn *c, const char *from, size_t from_len, struct lb_msg *m)
{
    struct call k = { c, from, from_len, m };
    uint64_t start = mono_us();
    const char *code = run(&k);
    audit(&k, code, start);
}
