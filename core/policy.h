/* Calls the policy hooks of plugins in bus.conf order. */
#ifndef LB_POLICY_H
#define LB_POLICY_H
#include "bus.h"
#include "envelope.h"

struct lb_msg {
    struct envelope env;
    const char *claims;          /* verified token claims (JSON), or NULL */
    size_t claims_len;
};

struct policy_counts { size_t accept, authenticate, message, deliver, audit, closed, authenticators, ipc_bypass; };
extern struct policy_counts g_policy;

enum lb_verdict_kind policy_accept(struct lb_conn *c, struct lb_verdict *v);
/* ALLOW if some plugin vouched and none refused; PASS if nobody had an
 * opinion; DENY on the first refusal. */
enum lb_verdict_kind policy_authenticate(struct lb_conn *c, struct lb_msg *m, struct lb_verdict *v);
enum lb_verdict_kind policy_message(struct lb_conn *c, struct lb_msg *m, struct lb_verdict *v);
enum lb_verdict_kind policy_deliver(struct lb_conn *from, struct lb_conn *to, struct lb_msg *m,
                                    struct lb_verdict *v);
void policy_audit(const struct lb_outcome *o);
void policy_closed(struct lb_conn *c);
void policy_free(void);
void verdict_init(struct lb_verdict *v);
#endif
