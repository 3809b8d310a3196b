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
 * apply.  This plugin marks such messages with the attribute
 * `auth.bypass` in its inspect hook, which runs before every other
 * plugin's hooks, so the order of the sections does not matter.
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
#include <string.h>
#include <jansson.h>
#include <lexbus/plugin.h>

struct bypass {
    unsigned long long sessions;   /* accepted through the bypass, ever */
    unsigned long long active;     /* currently connected */
    unsigned long long ipc;        /* messages let through as IPC requests */
    struct lb_plugin_ctx *ctx;
};

static char marker;   /* per-connection flag: address of this byte */

static enum lb_verdict_kind on_authenticate(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_err *err)
{
    (void)err;
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

/* Marks CALLs and EMITs carrying the IPC request mark for the plugins
 * that check tokens (they look for the attribute `auth.bypass`). */
static void on_inspect(void *ud, struct lb_conn *c, struct lb_msg *m)
{
    struct bypass *b = ud;
    enum lb_msg_type t = lb_msg_type(m);
    struct lb_str mark = lb_msg_raw(m, "ipcRequest");
    if ((t != LB_MSG_CALL && t != LB_MSG_EMIT) || mark.n != 4 || memcmp(mark.p, "true", 4) != 0) return;
    lb_msg_attr_set(m, "auth.bypass", "ipcRequest");
    b->ipc++;
    struct lb_str name = lb_msg_field(m, t == LB_MSG_CALL ? "method" : "event");
    lb_log(b->ctx, LB_LOG_DEBUG, "#%llu %s %.*s marked ipcRequest: token checks skipped (dev-bypass)",
           (unsigned long long)lb_conn_id(c), lb_msg_type_name(t), (int)name.n, name.p ? name.p : "");
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
    struct lb_hooks h = { .size = sizeof h, .inspect = on_inspect, .authenticate = on_authenticate, .closed = on_closed };
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
    .size = sizeof(struct lb_plugin),
    .name = "dev-bypass",
    .version = PACKAGE_VERSION,
    .load = bypass_load,
    .unload = bypass_unload,
};
