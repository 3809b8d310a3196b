/*
 * Raw channels <-> events (bridge.c).  br_on_message is redis.c's
 * rc_ops.pmessage; cluster.c hands it the broadcasts a bridge matches.
 */
#ifndef LB_REDIS_BRIDGE_H
#define LB_REDIS_BRIDGE_H
#include "rd.h"

int br_init(struct rd *rd);
bool br_matches(struct rd *rd, struct lb_str event);
void br_publish(struct rd *rd, const struct lb_msg *m);
void br_on_message(struct rd *rd, const char *chan, size_t chlen, const char *p, size_t n);
#endif
