/*
 * Many nodes as one bus (cluster.c): this node's record and everyone
 * else's, a link connection per remote node, the main link.  Above the
 * parts it hands work to (exprsn.h, bridge.h, rstate.h) and below the
 * plugin's entry (redis.c), which gives rconn.c the session's handlers
 * below.
 */
#ifndef LB_REDIS_CLUSTER_H
#define LB_REDIS_CLUSTER_H
#include "rd.h"

int cl_init(struct rd *rd);
void cl_free(struct rd *rd);
/* rc_ops.up: both connections work: claim the node name and join. */
void cl_connected(struct rd *rd);
/* rc_ops.down: forget every node (closing their links) and every worker. */
void cl_disconnected(struct rd *rd);
/* rc_ops.message: what arrives on a channel, sorted for the parts. */
void cl_on_message(struct rd *rd, const char *chan, size_t chlen, const char *p, size_t n);
/* rc_ops.calls_lost: the calls are answered SERVICE_UNAVAILABLE. */
void cl_calls_lost(struct rd *rd, const struct call_ids *c, const char *why);
void cl_tick(struct rd *rd);
void cl_leave(struct rd *rd);              /* clean shutdown: say so */
json_t *cl_stats(struct rd *rd);
#endif
