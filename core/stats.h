/* Bus-wide counters, reported by `lexbus stats`. */
#ifndef LB_STATS_H
#define LB_STATS_H
#include <stdint.h>
#include <lexbus/plugin.h>

enum err_code {
    E_BAD_FRAME, E_INVALID_MESSAGE, E_PAYLOAD_TOO_LARGE, E_UNAUTHENTICATED,
    E_FORBIDDEN, E_NOT_REGISTERED, E_SERVICE_NOT_FOUND, E_METHOD_NOT_FOUND,
    E_SERVICE_UNAVAILABLE, E_TIMEOUT, E_DEADLINE_EXCEEDED, E_MAX_DEPTH_EXCEEDED,
    E_RATE_LIMITED, E_SCRIPT_ERROR, E_SLOW_CONSUMER, E_SHUTTING_DOWN,
    E_EXECUTION_FAILED, E_INTERNAL_ERROR,
    E__COUNT
};

struct stats {
    uint64_t msgs_in[LB_MSG__COUNT];      /* received, by type */
    uint64_t msgs_out[LB_MSG__COUNT];     /* sent, by type */
    uint64_t errors[E__COUNT];            /* sent to clients, by code */
    uint64_t bytes_in, bytes_out;
    uint64_t conns_accepted, conns_refused, conns_evicted;
    uint64_t calls_started, calls_completed, calls_late, calls_timeouts;
    uint64_t events_delivered, events_unrouted;
    uint64_t slow_consumers, sender_pauses;
};

const char *err_code_name(enum err_code c);
/* Maps an error code string to its index, or -1. */
int err_code_index(const char *code);
void stats_count_error(struct stats *s, const char *code);
#endif
