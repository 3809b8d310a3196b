/* Bus-wide counters, reported by `lexbus stats` and /metrics (through
 * lb_stats_snapshot), and the error-code table. */
#ifndef LB_STATS_H
#define LB_STATS_H
#include <stdint.h>
#include <stddef.h>
#include <lexbus/plugin.h>

struct stats {
    uint64_t msgs_in[LB_MSG__COUNT];      /* received, by type ([0]: invalid) */
    uint64_t msgs_out[LB_MSG__COUNT];     /* sent, by type */
    uint64_t errors[LB_E__COUNT];         /* sent to clients, by code */
    uint64_t bytes_in, bytes_out;
    uint64_t conns_accepted, conns_refused, conns_evicted, conns_register_timeouts, conns_local;
    uint64_t calls_started, calls_completed, calls_late, calls_timeouts;
    uint64_t events_delivered, events_unrouted, events_dropped;
    uint64_t slow_consumers, sender_pauses;
    uint64_t call_buckets[LB_CALL_BUCKETS + 1];   /* not cumulative; the last is +Inf */
    double call_seconds_sum;
};
extern struct stats g_stats;

const char *err_code_name(int index);
/* Maps an error code string to its index, or -1. */
int err_code_index(const char *code);
void stats_count_error(const char *code);
/* A CALL ended (answered or failed) after dur_us. */
void stats_call_done(uint64_t dur_us);
/* Open connections per transport name. */
void stats_transport_open(const char *transport, int delta);
void stats_transports_each(void (*fn)(void *ud, const char *transport, uint64_t open), void *ud);
static inline size_t stats_local_conns(void) { return (size_t)g_stats.conns_local; }

/* Plugin counters (lb_counter_register). */
struct plugin_counter {
    struct lb_plugin_ctx *ctx;
    char *name, *help;
    const uint64_t *value;
    bool gauge;
};
void stats_counter_add(struct lb_plugin_ctx *ctx, const char *name, const char *help, const uint64_t *v, bool gauge);
void stats_counters_remove(struct lb_plugin_ctx *ctx);
size_t stats_counters(const struct plugin_counter **out);
void stats_free(void);
#endif
