/* The router: one inbound frame in, zero or more frames out.  Validates
 * the envelope, enforces identity, runs the plugins' hooks, and hands the
 * message to the handler of its type (route_register.c, route_call.c,
 * route_emit.c); every failure is answered. */
#ifndef LB_ROUTER_H
#define LB_ROUTER_H
#include "conn.h"

void router_init(void);
void router_free(void);
/* conn.c's input handler. */
void router_input(struct lb_conn *c, const char *frame, size_t len);
/* conn.c's forget handler: the connection is closing: fail its calls,
 * drop its subscriptions and registrations. */
void router_forget(struct lb_conn *c);
/* Draining: answer every pending call with `code`. */
void router_fail_all_calls(const char *code, const char *message);
size_t router_subscription_count(void);
#endif
