/*
 * Exprsn IPC workers on the same Redis (exprsn.c).  Called by cluster.c
 * (what arrives, what the main link gets, the session's turns) and by
 * redis.c (life cycle, the tick, the route hook).
 */
#ifndef LB_REDIS_EXPRSN_H
#define LB_REDIS_EXPRSN_H
#include "rd.h"

int ex_init(struct rd *rd);
void ex_free(struct rd *rd);
void ex_joined(struct rd *rd);
void ex_disconnected(struct rd *rd);
void ex_tick(struct rd *rd);
/* Services came and went here: their discovery keys and channels follow. */
void ex_local_changed(struct rd *rd, const struct sset *added, const struct sset *removed);
/* A message on <ns>:<name>. */
void ex_on_message(struct rd *rd, const char *name, size_t nlen, const char *p, size_t n);
/* A broadcast the main link got, for the workers. */
void ex_broadcast(struct rd *rd, const struct lb_msg *m);
/* RESPONSE/ACK/ERROR of worker requests: true when it was one. */
bool ex_main_message(struct rd *rd, const struct lb_msg *m);
/* The route hook: a name nobody here serves may be a worker's. */
struct lb_conn *ex_route(struct rd *rd, const struct lb_msg *m, struct lb_str service);
#endif
