/*
 * dev-bypass: development convenience, never for production.
 *
 * In `mode = development`, a REGISTER that carries no credentials is
 * accepted under the name it claims (auth "bypass"), even when an
 * authenticating plugin such as `tokens` is loaded: services can be run
 * locally without minting tokens.  A REGISTER that does carry a token is
 * left to the plugins that check tokens.
 *
 * Messages marked as IPC requests are let through the same way.  Exprsn
 * marks them with the HTTP header `x-ipc-request: true`; frames have no
 * headers, so the mark is the top-level member `"ipcRequest": true` (the
 * JSON literal) on a CALL or EMIT.  Such a message skips the token checks
 * of the `tokens` plugin (a token it carries, even Exprsn's placeholder
 * "true", is not verified; recipients get {"type":"bypass",...} as
 * `token`).  Other policies (ratelimit, admins for token.issue) still
 * apply.  The decision is the host's (lb_msg_ipc_bypass), so the order of
 * the sections does not matter.
 *
 * Loaded with `mode = production`, it refuses to load, so lexbusd refuses
 * to start (and the host ignores the mark in production regardless).  It
 * logs one loud line at start-up saying what is bypassed, and counts
 * bypassed sessions and IPC requests in `lexbus stats`
 * (`plugins.dev-bypass`); `lexbus services` shows `auth: "bypass"` on each
 * such session.
 *
 * [plugin dev-bypass]        (no keys)
 */
#include "config.h"
#include <stdlib.h>
#include <jansson.h>
#include <lexbus/plugin.h>

struct bypass {
    unsigned long long sessions;   /* accepted through the bypass, ever */
    unsigned long long active;     /* currently connected */
    unsigned long long ipc;        /* messages let through as IPC requests */
    struct lb_plugin_ctx *ctx;
};

static char marker;   /* per-connection flag: address of this byte */

static enum lb_verdict_kind on_authenticate(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_verdict *v)
{
    (void)v;
    struct bypass *b = ud;
    if (lb_msg_field(m, "token").p) return LB_PASS;   /* credentials: not ours to judge */
    lb_conn_set_auth(c, "bypass");
    lb_conn_set_data(c, b->ctx, &marker);
    b->sessions++;
    b->active++;
    lb_log(b->ctx, LB_LOG_WARN, "session #%llu registered WITHOUT credentials (dev-bypass)",
           (unsigned long long)lb_conn_id(c));
    return LB_ALLOW;
}

static enum lb_verdict_kind on_message(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_verdict *v)
{
    (void)v;
    struct bypass *b = ud;
    if (!lb_msg_ipc_bypass(m)) return LB_PASS;
    b->ipc++;
    struct lb_str name = lb_msg_field(m, lb_msg_type(m) == LB_MSG_CALL ? "method" : "event");
    lb_log(b->ctx, LB_LOG_DEBUG, "#%llu %s %.*s marked ipcRequest: token checks skipped (dev-bypass)",
           (unsigned long long)lb_conn_id(c), lb_msg_type_name(lb_msg_type(m)), (int)name.n, name.p ? name.p : "");
    return LB_PASS;
}

static void on_closed(void *ud, struct lb_conn *c)
{
    struct bypass *b = ud;
    if (lb_conn_get_data(c, b->ctx) == &marker) {
        b->active--;
        lb_conn_set_data(c, b->ctx, NULL);
    }
}

static json_t *stats(void *ud)
{
    struct bypass *b = ud;
    return json_pack("{s:I,s:I,s:I}", "bypassedSessions", (json_int_t)b->sessions, "activeBypassed", (json_int_t)b->active,
                     "ipcRequests", (json_int_t)b->ipc);
}

static int bypass_load(struct lb_plugin_ctx *ctx)
{
    if (lb_bus_production(ctx)) {
        lb_plugin_fail(ctx, "dev-bypass must not be loaded in mode = production: remove [plugin dev-bypass] "
                            "or set mode = development");
        return -1;
    }
    if (lb_check_only(ctx)) return 0;
    struct bypass *b = calloc(1, sizeof *b);
    if (!b) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    b->ctx = ctx;
    lb_plugin_set_data(ctx, b);
    if (lb_ipc_bypass_enable(ctx) < 0) return -1;
    struct lb_hooks h = { .authenticate = on_authenticate, .message = on_message, .closed = on_closed };
    lb_hooks_register(ctx, &h, b);
    lb_stats_register(ctx, stats, b);
    lb_log(ctx, LB_LOG_WARN, "DEVELOPMENT BYPASS ACTIVE: REGISTER without credentials is accepted under any claimed name, "
                             "and CALL/EMIT marked \"ipcRequest\": true skip token checks (not allowed in production)");
    return 0;
}

static void bypass_unload(struct lb_plugin_ctx *ctx)
{
    free(lb_plugin_data(ctx));
    lb_plugin_set_data(ctx, NULL);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .name = "dev-bypass",
    .version = PACKAGE_VERSION,
    .load = bypass_load,
    .unload = bypass_unload,
};
