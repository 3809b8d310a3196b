#include "config.h"
#include <stdarg.h>
#include <stdio.h>
#include "plugin_ctx.h"
#include "bus.h"
#include "log.h"
#include "util.h"

/* ---- failure and logging ------------------------------------------- */

void lb_plugin_fail(struct lb_plugin_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (!ctx->failed) vsnprintf(ctx->fail, sizeof ctx->fail, fmt, ap);
    va_end(ap);
    ctx->failed = true;
}

void lb_log(struct lb_plugin_ctx *ctx, enum lb_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(lvl, ctx ? ctx->name : "plugin", fmt, ap);
    va_end(ap);
}

void lb_log_throttled(struct lb_plugin_ctx *ctx, enum lb_log_level lvl, const char *key, unsigned per_min,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vthrottled(lvl, ctx ? ctx->name : "plugin", key, per_min, fmt, ap);
    va_end(ap);
}

/* ---- bus facts ----------------------------------------------------- */

const char *lb_bus_node(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.set.node; }
bool lb_bus_production(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.set.production; }
bool lb_check_only(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.check_only; }
const char *lb_bus_system_service(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.set.system_service; }
const char *lb_bus_lua_dir(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.set.lua_dir; }
uint64_t lb_bus_max_frame(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.set.max_frame; }
uint64_t lb_bus_heartbeat_ms(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.set.heartbeat_ms; }
bool lb_bus_draining(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.draining; }
uint64_t lb_bus_uptime_ms(struct lb_plugin_ctx *ctx) { (void)ctx; return now_ms() - g_bus.started_ms; }
struct event_base *lb_event_base(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.base; }
void *lb_plugin_data(struct lb_plugin_ctx *ctx) { return ctx->data; }
void lb_plugin_set_data(struct lb_plugin_ctx *ctx, void *data) { ctx->data = data; }
const char *lb_plugin_name(struct lb_plugin_ctx *ctx) { return ctx->name; }
uint64_t lb_now_ms(void) { return now_ms(); }

