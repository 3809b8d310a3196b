/*
 * dev-bypass: development convenience, never for production.
 *
 * In `mode = development`, a REGISTER that carries no credentials is
 * accepted under the name it claims (auth "bypass"), even when an
 * authenticating plugin such as `tokens` is loaded: services can be run
 * locally without minting tokens.  A REGISTER that does carry a token is
 * left to the plugins that check tokens.
 *
 * Loaded with `mode = production`, it refuses to load, so lexbusd refuses
 * to start.  It logs one loud line at start-up saying what is bypassed,
 * and counts bypassed sessions in `lexbus stats` (`plugins.dev-bypass`);
 * `lexbus services` shows `auth: "bypass"` on each such session.
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
    return json_pack("{s:I,s:I}", "bypassedSessions", (json_int_t)b->sessions, "activeBypassed", (json_int_t)b->active);
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
    struct lb_hooks h = { .authenticate = on_authenticate, .closed = on_closed };
    lb_hooks_register(ctx, &h, b);
    lb_stats_register(ctx, stats, b);
    lb_log(ctx, LB_LOG_WARN, "DEVELOPMENT BYPASS ACTIVE: REGISTER without credentials is accepted under any claimed name "
                             "(not allowed in production)");
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
