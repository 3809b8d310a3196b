/*
 * Plugin hooks (see hooks.h).  Hook sets are kept in one array in bus.conf
 * order; removing one while hooks run only marks it, and the array is
 * compacted when no call is in progress.
 */
#include "config.h"
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "hooks.h"
#include "plugin_ctx.h"
#include "log.h"
#include "util.h"

struct hook_set {
    struct lb_hooks h;
    void *ud;
    struct lb_plugin_ctx *ctx;
    int id;
    bool removed;
};

/* The refusal a hook writes into (lb_refuse); one at a time. */
struct lb_err {
    const char *code;
    char *msg;
    size_t cap;
    long long retry_after_ms;
};

/* Registered from load() or reload_done(), when no hook runs: a set added
 * while the host walks the array could move it (refused, below). */
static struct hook_set *g_sets;
static size_t g_n_sets;
static int g_next_id;
static int g_depth;           /* hook calls in progress */
static bool g_need_compact;
static struct lb_err g_err;
struct hook_counts g_hooks_n;

/* ---- registration -------------------------------------------------- */

#define KINDS(X) X(accept) X(inspect) X(authenticate) X(message) X(rewrite) X(response) \
                 X(deliver) X(route) X(audit) X(closed)

static void count(const struct lb_hooks *h, int delta)
{
#define C(k) g_hooks_n.k += (size_t)(h->k != NULL ? delta : 0);
    KINDS(C)
#undef C
}

int lb_hooks_register(struct lb_plugin_ctx *ctx, const struct lb_hooks *hooks, void *ud)
{
    if (!hooks->size || hooks->size > sizeof(struct lb_hooks)) {
        lb_plugin_fail(ctx, "lb_hooks_register: struct lb_hooks of %u bytes (this lexbusd knows %zu)",
                       hooks->size, sizeof(struct lb_hooks));
        return -1;
    }
    if (g_depth) {
        log_error(ctx->name, "lb_hooks_register from inside a hook is refused: register from load() or "
                  "reload_done(), when no hook runs");
        return -1;
    }
    struct hook_set s = { .ud = ud, .ctx = ctx, .id = ++g_next_id };
    memcpy(&s.h, hooks, hooks->size);   /* fields the plugin lacks stay NULL */
    /* Keep bus.conf order: after every set of a plugin that comes no later. */
    size_t at = g_n_sets;
    while (at > 0 && g_sets[at - 1].ctx->index > ctx->index) at--;
    g_sets = xrealloc(g_sets, (g_n_sets + 1) * sizeof *g_sets);
    memmove(&g_sets[at + 1], &g_sets[at], (g_n_sets - at) * sizeof *g_sets);
    g_sets[at] = s;
    g_n_sets++;
    count(hooks, 1);
    return s.id;
}

static void compact(void)
{
    size_t k = 0;
    for (size_t i = 0; i < g_n_sets; i++)
        if (!g_sets[i].removed) g_sets[k++] = g_sets[i];
    g_n_sets = k;
    g_need_compact = false;
}

static void remove_set(struct hook_set *s)
{
    if (s->removed) return;
    s->removed = true;
    count(&s->h, -1);
    g_need_compact = true;
}

void lb_hooks_unregister(struct lb_plugin_ctx *ctx, int id)
{
    for (size_t i = 0; i < g_n_sets; i++)
        if (g_sets[i].id == id && g_sets[i].ctx == ctx) remove_set(&g_sets[i]);
    if (!g_depth) compact();
}

void hooks_remove_plugin(struct lb_plugin_ctx *ctx)
{
    for (size_t i = 0; i < g_n_sets; i++)
        if (g_sets[i].ctx == ctx) remove_set(&g_sets[i]);
    if (!g_depth) compact();
}

void hooks_free(void)
{
    free(g_sets);
    g_sets = NULL;
    g_n_sets = 0;
    free(g_err.msg);
    memset(&g_err, 0, sizeof g_err);
    memset(&g_hooks_n, 0, sizeof g_hooks_n);
}

void lb_declare_authenticator(struct lb_plugin_ctx *ctx)
{
    (void)ctx;
    g_hooks_n.authenticators++;
}

/* ---- errors -------------------------------------------------------- */

static void err_vset(struct lb_err *e, const char *code, const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(e->msg, e->cap, fmt, copy);
    va_end(copy);
    if (n >= 0 && (size_t)n >= e->cap) {
        /* Messages are for people: 4 KiB is plenty, and the ERROR writer
         * bounds what goes on the wire further. */
        size_t want = (size_t)n + 1 > 4096 ? 4096 : (size_t)n + 1;
        e->msg = xrealloc(e->msg, want);
        e->cap = want;
        vsnprintf(e->msg, e->cap, fmt, ap);
    }
    e->code = code;
}

enum lb_verdict_kind lb_refuse(struct lb_err *err, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, code ? code : LB_E_FORBIDDEN, fmt, ap);
    va_end(ap);
    return LB_DENY;
}

void lb_err_retry_after(struct lb_err *err, long long ms) { err->retry_after_ms = ms; }

static struct lb_err *err_begin(void)
{
    if (!g_err.msg) { g_err.cap = 256; g_err.msg = xmalloc(g_err.cap); }
    g_err.msg[0] = 0;
    g_err.code = NULL;
    g_err.retry_after_ms = -1;
    return &g_err;
}

struct lb_err *err_fresh(void) { return err_begin(); }

void err_refusal(struct hook_refusal *r, const char *fallback)
{
    r->code = g_err.code ? g_err.code : fallback;
    r->message = g_err.msg ? g_err.msg : "";
    r->plugin = NULL;
    r->retry_after_ms = g_err.retry_after_ms;
}

/* A plugin that returns DENY without saying why still refuses, as FORBIDDEN. */
static enum lb_verdict_kind denied(const struct hook_set *s, struct hook_refusal *r)
{
    r->code = g_err.code ? g_err.code : LB_E_FORBIDDEN;
    r->message = g_err.msg && g_err.msg[0] ? g_err.msg : "refused by policy";
    r->plugin = s->ctx->name;
    r->retry_after_ms = g_err.retry_after_ms;
    return LB_DENY;
}

void refusal_set(struct hook_refusal *r, const char *code, const char *fmt, ...)
{
    err_begin();
    va_list ap;
    va_start(ap, fmt);
    err_vset(&g_err, code, fmt, ap);
    va_end(ap);
    r->code = code;
    r->message = g_err.msg;
    r->plugin = NULL;
    r->retry_after_ms = -1;
}

/* ---- calling hooks ------------------------------------------------- */

static void enter(void) { g_depth++; }
static void leave(void) { if (--g_depth == 0 && g_need_compact) compact(); }

/* Runs `kind` of every live set until one refuses. */
#define RUN_UNTIL_DENY(kind, r, ...) do {                                        \
    enter();                                                                    \
    for (size_t i_ = 0; i_ < g_n_sets; i_++) {                                  \
        struct hook_set *s_ = &g_sets[i_];                                      \
        if (s_->removed || !s_->h.kind) continue;                               \
        if (s_->h.kind(s_->ud, __VA_ARGS__, err_begin()) == LB_DENY) {          \
            denied(s_, r);                                                      \
            leave();                                                            \
            return LB_DENY;                                                     \
        }                                                                       \
    }                                                                           \
    leave();                                                                    \
    return LB_PASS;                                                             \
} while (0)

enum lb_verdict_kind hooks_accept(struct lb_conn *c, struct hook_refusal *r)
{
    if (!g_hooks_n.accept) return LB_PASS;
    RUN_UNTIL_DENY(accept, r, c);
}

void hooks_inspect(struct lb_conn *c, struct lb_msg *m)
{
    enter();
    for (size_t i = 0; i < g_n_sets; i++)
        if (!g_sets[i].removed && g_sets[i].h.inspect) g_sets[i].h.inspect(g_sets[i].ud, c, m);
    leave();
}

enum lb_verdict_kind hooks_authenticate(struct lb_conn *c, struct lb_msg *m, struct hook_refusal *r)
{
    enum lb_verdict_kind result = LB_PASS;
    enter();
    for (size_t i = 0; i < g_n_sets; i++) {
        struct hook_set *s = &g_sets[i];
        if (s->removed || !s->h.authenticate) continue;
        enum lb_verdict_kind k = s->h.authenticate(s->ud, c, m, err_begin());
        if (k == LB_DENY) { denied(s, r); leave(); return LB_DENY; }
        if (k == LB_ALLOW) result = LB_ALLOW;
    }
    leave();
    return result;
}

enum lb_verdict_kind hooks_message(struct lb_conn *c, struct lb_msg *m, struct hook_refusal *r)
{
    RUN_UNTIL_DENY(message, r, c, m);
}

/* Rewrite and response hooks may change the message (lb_msg_set): it is
 * writable only while they run. */
static enum lb_verdict_kind run_changing(bool response, struct lb_conn *c, struct lb_conn *to, struct lb_msg *m,
                                         struct hook_refusal *r)
{
    enum lb_verdict_kind v = LB_PASS;
    m->rewritable = true;
    enter();
    for (size_t i = 0; i < g_n_sets && v == LB_PASS; i++) {
        struct hook_set *s = &g_sets[i];
        if (s->removed || !(response ? s->h.response != NULL : s->h.rewrite != NULL)) continue;
        enum lb_verdict_kind k = response ? s->h.response(s->ud, c, to, m, err_begin())
                                          : s->h.rewrite(s->ud, c, m, err_begin());
        if (k == LB_DENY) v = denied(s, r);
    }
    leave();
    m->rewritable = false;
    return v;
}

enum lb_verdict_kind hooks_rewrite(struct lb_conn *c, struct lb_msg *m, struct hook_refusal *r)
{
    return run_changing(false, c, NULL, m, r);
}

enum lb_verdict_kind hooks_response(struct lb_conn *callee, struct lb_conn *caller, struct lb_msg *m,
                                    struct hook_refusal *r)
{
    return run_changing(true, callee, caller, m, r);
}

enum lb_verdict_kind hooks_deliver(struct lb_conn *from, struct lb_conn *to, struct lb_msg *m,
                                   struct hook_refusal *r)
{
    RUN_UNTIL_DENY(deliver, r, from, to, m);
}

struct lb_conn *hooks_route(struct lb_conn *from, const struct lb_msg *m, struct lb_str service)
{
    struct lb_conn *link = NULL;
    enter();
    for (size_t i = 0; !link && i < g_n_sets; i++) {
        struct hook_set *s = &g_sets[i];
        if (!s->removed && s->h.route) link = s->h.route(s->ud, from, m, service);
    }
    leave();
    return link;
}

void hooks_audit(const struct lb_outcome *o)
{
    enter();
    for (size_t i = 0; i < g_n_sets; i++)
        if (!g_sets[i].removed && g_sets[i].h.audit) g_sets[i].h.audit(g_sets[i].ud, o);
    leave();
}

void hooks_closed(struct lb_conn *c)
{
    if (!g_hooks_n.closed) return;
    enter();
    for (size_t i = 0; i < g_n_sets; i++)
        if (!g_sets[i].removed && g_sets[i].h.closed) g_sets[i].h.closed(g_sets[i].ud, c);
    leave();
}
