/* Connection lifecycle: creation by transports, frame input, sending,
 * back-pressure, closing, and the heartbeat / slow-consumer sweep. */
#ifndef LB_CONN_H
#define LB_CONN_H
#include "bus.h"
#include "envelope.h"

/* Sends one JSON frame.  Returns 0, or -1 if the connection is closed or
 * was just closed as a slow consumer. */
int conn_send(struct lb_conn *c, const char *p, size_t n, enum lb_msg_type t);
/* ERROR frame; `id` may be NULL or an absent value. */
void conn_send_error(struct lb_conn *c, const struct env_val *id, const char *code,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* ERROR with `retryAfterMs` in its error object (RATE_LIMITED). */
void conn_send_error_retry(struct lb_conn *c, const struct env_val *id, const char *code,
                           long long retry_after_ms, const char *message);
/* After queueing a frame from `sender` to `to`: pause the sender if `to`
 * is backed up. */
void conn_backpressure(struct lb_conn *sender, struct lb_conn *to);
void conn_close(struct lb_conn *c, bool flush, const char *why);
/* Writes out what this loop iteration queued (transports with a flush op). */
void conn_flush_dirty(void);
void conn_ref(struct lb_conn *c);
void conn_unref(struct lb_conn *c);
void conn_sweep_start(void);
void conn_sweep_stop(void);
/* Draining: close every connection, flushing what is queued. */
void conn_close_all(const char *why);
#endif
