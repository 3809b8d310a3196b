/* The router: one inbound frame in, zero or more frames out.  Validates
 * the envelope, enforces identity, keeps services, subscriptions and the
 * pending-call table, and answers every failure. */
#ifndef LB_ROUTER_H
#define LB_ROUTER_H
#include "bus.h"
#include "policy.h"

void router_init(void);
void router_free(void);
void router_input(struct lb_conn *c, const char *frame, size_t len);
/* The connection is closing: fail its calls, drop its subscriptions and
 * its registration. */
void router_forget(struct lb_conn *c);
const char *router_service_name(const struct lb_conn *c);
/* Draining: answer every pending call with `code`. */
void router_fail_all_calls(const char *code, const char *message);
/* Sends a RESPONSE for a call the bus answers itself. `data_or_error` is
 * raw JSON; `ctx` (may be NULL) is echoed. */
void router_reply(struct lb_conn *caller, const struct lb_msg *m, bool ok,
                  const char *json, size_t len);
/* Error RESPONSE to a CALL (id is the raw JSON string contents). */
void router_call_error(struct lb_conn *caller, const char *id, size_t id_len, const char *code,
                       long long retry_after_ms, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
size_t router_subscription_count(void);
#endif
