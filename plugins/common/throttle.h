/*
 * Log throttling for events a peer can provoke at will (refused
 * handshakes, connections over a limit): the first THROTTLE_BURST lines of
 * a second are written, then one summary line when that second ends, so a
 * flood of bad clients cannot flood the log (stats count them all).
 */
#ifndef LB_COMMON_THROTTLE_H
#define LB_COMMON_THROTTLE_H
#include <stdbool.h>
#include <stdint.h>
#include <event2/event_struct.h>

#define LOG_BURST 20

struct lb_plugin_ctx;
struct throttle {
    struct lb_plugin_ctx *ctx;
    struct event tick;            /* end of a second with hidden lines */
    uint64_t start_ms;
    unsigned shown, hidden;
    const char *what;             /* "refused", for the summary */
};

void throttle_init(struct throttle *t, struct lb_plugin_ctx *ctx, const char *what);
/* True if this event may have its own log line; otherwise it is counted
 * for the summary written when the current second ends. */
bool throttle_pass(struct throttle *t);
/* Writes the summary of what is held back now (at unload, say). */
void throttle_flush(struct throttle *t);
#endif
