/*
 * routes.lua rules: their table format, the C-side matching (a message no
 * rule matches never enters Lua) and running the ones that match.
 *
 * A rule is selected on the message as it arrived (event name; target
 * service and method; for a RESPONSE, the service and method of its call)
 * and sees the message as the rules before it left it.  Rules run in file
 * order; a refusal or an error ends the run, and so does a matching rule
 * with `last = true`.
 */
#ifndef LBL_RULES_H
#define LBL_RULES_H
#include <stdbool.h>
#include <lua.h>
#include <jansson.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>
#include "host.h"

enum rule_hook { RH_EVENT, RH_CALL, RH_RESPONSE, RH__COUNT };

/* What rules see of one message: borrowed text, valid during rules_run.
 * `body` is the raw JSON of payload (EMIT), params (CALL) or data
 * (RESPONSE); error/context/claims raw JSON too; {NULL,0} when absent. */
struct rmsg {
    enum rule_hook hook;
    struct lb_str id, from, to, name, service, status;
    struct lb_str body, error, context, claims;
};

enum rr_kind { RR_PASS, RR_CHANGED, RR_REFUSE, RR_ERROR };

#define RR_MAX_ALSO 16
#define RR_MAX_MATCHED 32

/* The outcome, owned by the caller (rresult_init / rresult_free); its
 * buffers are reused across messages. */
struct rresult {
    enum rr_kind kind;
    char code[64];
    char message[512];
    bool set_to, set_name, set_body, set_error;
    struct sbuf to, name, body[2], error;
    int body_cur;                          /* which body[] holds the current text */
    char also[RR_MAX_ALSO][LB_MAX_NAME + 1];
    size_t n_also;
    const char *matched[RR_MAX_MATCHED];   /* names of the rules that ran (borrowed) */
    size_t n_matched;
};

void rresult_init(struct rresult *r);
void rresult_reset(struct rresult *r);
void rresult_free(struct rresult *r);

/* Reads the rule list routes.lua returned (at stack index t) into s.
 * Raises a Lua error naming the rule on a mistake.  Runs at load. */
void rules_build(struct lstate *s, lua_State *L, int t);
void rules_free(struct lstate *s);
/* Whether any rule could match messages of this kind (a cheap test). */
bool rules_any(const struct lstate *s, enum rule_hook k);
/* A prefilter for rules_select, one hash lookup: false when no rule can
 * select m.  Reads only m's hook, name and to (calls) or service
 * (responses). */
bool rules_maybe(const struct lstate *s, const struct rmsg *m);
/* Finds the rules that select m, in file order (into s->sel), in C:
 * reads only m's hook, name, to (calls), service (responses) and from, so
 * the hook fills in the rest only for a message some rule selects.  Only
 * for a message rules_maybe said yes to (it is not asked again).
 * Returns how many. */
size_t rules_select(struct lstate *s, const struct rmsg *m);
/* Runs the rules the last rules_select found on m (every member filled
 * in); the outcome in r (reset first). */
void rules_run_selected(struct lstate *s, const struct rmsg *m, struct rresult *r);
/* Both. */
void rules_run(struct lstate *s, const struct rmsg *m, struct rresult *r);
/* The loaded rules and their counters, for `lexbus rules` and stats. */
json_t *rules_json(const struct lstate *s);
#endif
