/*
 * The two Redis connections and the session (rconn.c): the lowest layer
 * of the redis plugin that does I/O.  It knows no part above it: what
 * happens to the session goes to the rc_ops it was given, each reply to
 * the function its command named (struct pent, rd.h).
 */
#ifndef LB_REDIS_RCONN_H
#define LB_REDIS_RCONN_H
#include "rd.h"

/* The session's events, for the layer above.  Called from rconn.c's own
 * event callbacks, never from inside an rc_* call. */
struct rc_ops {
    /* Both connections work and every channel asked for is heard: join. */
    void (*up)(struct rd *rd);
    /* The session ended (a reconnect follows after a backoff unless the
     * plugin is going away): forget what it held. */
    void (*down)(struct rd *rd);
    /* A message on a channel (SUBSCRIBE), or on a pattern (PSUBSCRIBE). */
    void (*message)(struct rd *rd, const char *chan, size_t chlen, const char *p, size_t n);
    void (*pmessage)(struct rd *rd, const char *chan, size_t chlen, const char *p, size_t n);
    /* CALLs published to a node that will never be answered (why NULL:
     * nobody listens on its channel). */
    void (*calls_lost)(struct rd *rd, const struct call_ids *c, const char *why);
};

/* ops is borrowed for the plugin's life. */
void rc_init(struct rd *rd, const struct rc_ops *ops);
void rc_start(struct rd *rd);
void rc_stop(struct rd *rd);
/* The session failed (why is logged): tear down after this callback,
 * reconnect after a backoff. */
void rc_fail(struct rd *rd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool rc_up(const struct rd *rd);
/* Commands on the command connection; e (may be NULL) says what to do
 * with the reply.  Return 0, or -1 when not connected or past max_queue
 * (counted as dropped). */
int rc_command(struct rd *rd, const struct pent *e, int argc, const char **argv, const size_t *argvlen);
int rc_commandf(struct rd *rd, const struct pent *e, const char *fmt, ...);
/* A command whose arguments are `pre` and then the keys of a SCAN reply. */
int rc_command_keys(struct rd *rd, const struct pent *e, const char *const *pre, int npre, const redisReply *keys);
/* A SCAN reply's cursor and keys: false when r is none. */
bool rc_scan_parse(redisReply *r, const char **cursor, redisReply **keys);
/* The heartbeat's PING: its round trip is redis_latency_us. */
void rc_ping(struct rd *rd);
int rc_publish(struct rd *rd, const struct pent *e, const char *chan, size_t chlen, const char *head, size_t hl,
               const char *body, size_t bl);
/* The same for a message between lexbus nodes (head + body a whole
 * message): everything one loop turn queues for one channel leaves as one
 * PUBLISH (a bundle, wire.h), written before the turn ends. */
int rc_publish_lb(struct rd *rd, const struct pent *e, const char *chan, size_t chlen, const char *head, size_t hl,
                  const char *body, size_t bl);
/* A CALL to node `node` (its serial) as rc_publish_lb: if nobody hears
 * it, or it cannot be sent after all, ops->calls_lost says so. */
int rc_publish_call(struct rd *rd, uint64_t node, struct lb_str id, const char *chan, size_t chlen, const char *body,
                    size_t bl);
/* Hears (add) a channel, or a pattern, on every connection from now on,
 * or no longer.  Asking twice is asking once. */
int rc_subscribe(struct rd *rd, bool pattern, bool add, const char *chan);
/* Write what is queued now (a revocation must leave before the answer). */
void rc_flush(struct rd *rd);
/* The oldest unanswered command is older than command_timeout: fail. */
void rc_check_timeout(struct rd *rd);
/* Stops reading the subscriber connection while the bus lags behind. */
void rc_check_backlog(struct rd *rd);
size_t rc_queued(const struct rd *rd);
#endif
