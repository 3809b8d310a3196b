/*
 * Plugin API functions that read across modules (stats snapshot, services,
 * counters) and the bus's own helpers offered to plugins (JSON writer,
 * names, patterns).  Nothing in the core calls into this file.
 */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "bus.h"
#include "conn.h"
#include "jsonw.h"
#include "names.h"
#include "pattern.h"
#include "pending.h"
#include "plugin_ctx.h"
#include "registry.h"
#include "router.h"
#include "stats.h"
#include "util.h"

/* ---- stats --------------------------------------------------------- */

void lb_stats_snapshot(struct lb_plugin_ctx *ctx, struct lb_stats_snapshot *out)
{
    (void)ctx;
    struct lb_stats_snapshot s;
    memset(&s, 0, sizeof s);
    const struct stats *g = &g_stats;
    s.size = sizeof s;
    s.uptime_ms = now_ms() - g_bus.started_ms;
    memcpy(s.msgs_in, g->msgs_in, sizeof s.msgs_in);
    memcpy(s.msgs_out, g->msgs_out, sizeof s.msgs_out);
    memcpy(s.errors, g->errors, sizeof s.errors);
    s.bytes_in = g->bytes_in;
    s.bytes_out = g->bytes_out;
    s.conns_open = conn_count();
    s.conns_accepted = g->conns_accepted;
    s.conns_refused = g->conns_refused;
    s.conns_evicted = g->conns_evicted;
    s.conns_register_timeouts = g->conns_register_timeouts;
    s.services = registry_count();
    s.subscriptions = router_subscription_count();
    s.calls_in_flight = pending_count();
    s.calls_started = g->calls_started;
    s.calls_completed = g->calls_completed;
    s.calls_late = g->calls_late;
    s.calls_timeouts = g->calls_timeouts;
    s.events_delivered = g->events_delivered;
    s.events_unrouted = g->events_unrouted;
    s.events_dropped = g->events_dropped;
    s.slow_consumers = g->slow_consumers;
    s.sender_pauses = g->sender_pauses;
    s.outbuf_total = conn_outbuf_total();
    uint64_t cum = 0;
    for (size_t b = 0; b <= LB_CALL_BUCKETS; b++) {
        cum += g->call_buckets[b];
        s.call_buckets[b] = cum;
    }
    s.call_seconds_sum = g->call_seconds_sum;
    /* A plugin built against a shorter struct gets what fits. */
    size_t n = out->size && out->size < sizeof s ? out->size : sizeof s;
    memcpy(out, &s, n);
    out->size = (uint32_t)n;
}

void lb_transports_each(struct lb_plugin_ctx *ctx, void (*fn)(void *ud, const char *transport, uint64_t open), void *ud)
{
    (void)ctx;
    stats_transports_each(fn, ud);
}

void lb_counters_each(struct lb_plugin_ctx *ctx,
                      void (*fn)(void *ud, const char *plugin, const char *name, const char *help,
                                 uint64_t value, bool gauge), void *ud)
{
    (void)ctx;
    const struct plugin_counter *pc;
    size_t n = stats_counters(&pc);
    for (size_t i = 0; i < n; i++) fn(ud, pc[i].ctx->name, pc[i].name, pc[i].help, *pc[i].value, pc[i].gauge);
}

struct each_svc { void (*fn)(void *, const struct lb_service_info *); void *ud; uint32_t size; };

static void service_cb(struct service *s, void *ud)
{
    struct each_svc *e = ud;
    struct lb_service_info i = {
        .size = sizeof i, .name = s->name, .instances = s->n, .remote_instances = s->n_remote,
        .registered_ms = s->registered_ms, .calls_in = s->calls_in, .events_in = s->events_in,
    };
    for (size_t k = 0; k < s->n; k++)
        if (s->inst[k]->conn->last_seen_ms > i.last_seen_ms) i.last_seen_ms = s->inst[k]->conn->last_seen_ms;
    e->fn(e->ud, &i);
}

void lb_services_each(struct lb_plugin_ctx *ctx, void (*fn)(void *ud, const struct lb_service_info *s), void *ud)
{
    (void)ctx;
    struct each_svc e = { fn, ud, 0 };
    registry_each(service_cb, &e);
}

const char *lb_resource_owner(struct lb_plugin_ctx *ctx, const char *resource, size_t n)
{
    (void)ctx;
    struct service *s = registry_resource_owner(resource, n);
    return s ? s->name : NULL;
}

bool lb_service_exists(struct lb_plugin_ctx *ctx, const char *name, size_t n)
{
    (void)ctx;
    return registry_find(name, n) != NULL;
}

/* ---- names and patterns -------------------------------------------- */

bool lb_event_name_valid(const char *p, size_t n) { return valid_event_name(p, n); }
bool lb_pattern_valid(const char *p, size_t n) { return valid_event_pattern(p, n); }
bool lb_service_name_valid(const char *p, size_t n) { return valid_service_name(p, n); }
bool lb_method_name_valid(const char *p, size_t n) { return valid_method_name(p, n); }
bool lb_pattern_match(const char *pat, size_t pn, const char *event, size_t en)
{
    return valid_event_pattern(pat, pn) && valid_event_name(event, en) && pattern_match(pat, pn, event, en);
}

struct lb_patset { struct ptrie *t; };

struct lb_patset *lb_patset_new(void)
{
    struct lb_patset *s = xcalloc(1, sizeof *s);
    s->t = ptrie_new();
    return s;
}

void lb_patset_free(struct lb_patset *s)
{
    if (!s) return;
    ptrie_free(s->t);
    free(s);
}

int lb_patset_add(struct lb_patset *s, const char *pat, size_t n, void *ud)
{
    if (!valid_event_pattern(pat, n)) return -1;
    return ptrie_add(s->t, pat, n, ud);
}

int lb_patset_remove(struct lb_patset *s, const char *pat, size_t n, void *ud)
{
    if (!valid_event_pattern(pat, n)) return -1;
    return ptrie_remove(s->t, pat, n, ud);
}

size_t lb_patset_match(struct lb_patset *s, const char *event, size_t n, void (*fn)(void *ud, void *arg), void *arg)
{
    if (!valid_event_name(event, n)) return 0;
    return ptrie_match(s->t, event, n, fn, arg);
}
