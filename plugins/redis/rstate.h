/*
 * The state backend, `state = redis` (rstate.c).  cluster.c hands it
 * what arrives on <prefix>:s and tells it when the node joined.
 */
#ifndef LB_REDIS_RSTATE_H
#define LB_REDIS_RSTATE_H
#include "rd.h"

int st_init(struct rd *rd);
void st_free(struct rd *rd);
void st_joined(struct rd *rd);
void st_on_message(struct rd *rd, const struct rw_head *h);
#endif
