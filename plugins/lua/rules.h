/*
 * routes.lua rules (rules.c): their table format, the C-side matching (a
 * message no rule matches never enters Lua) and running the ones that
 * match.  Offered to hooks.c (live messages), host.c (building them while
 * routes.lua loads) and lua.c (rules.test, `lexbus rules`); runs in a
 * struct lstate (lstate.h), the layer below.
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
#include "lstate.h"

enum rule_hook { RH_EVENT, RH_CALL, RH_RESPONSE, RH__COUNT };

struct rule;
struct rindex;

/* One generation's rules: what routes.lua returned, indexed.  The
 * generation holds it (host.h): rules_init, then rules_build while
 * routes.lua loads (never, without one: no rule then), rules_free. */
struct rules {
    struct lstate *s;          /* the state the rules' functions live in */
    struct rule *rules;
    size_t n_rules;
    struct lb_patset *events;  /* event rules' patterns (ud: index + 1) */
    size_t n_event_rules;
    struct rindex *ix_event, *ix_call, *ix_response;
    uint32_t *sel;             /* rules_select's answer (room for n_rules) */
    size_t n_sel;
};

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

/* No rules yet, in state s. */
void rules_init(struct rules *rs, struct lstate *s);
/* Reads the rule list routes.lua returned (at stack index t) into rs.
 * Raises a Lua error naming the rule on a mistake; rs then holds what was
 * read, for rules_free.  Runs at load, inside an entry into rs->s. */
void rules_build(struct rules *rs, lua_State *L, int t);
void rules_free(struct rules *rs);
/* Whether any rule could match messages of this kind (a cheap test). */
bool rules_any(const struct rules *rs, enum rule_hook k);
/* A prefilter for rules_select, one hash lookup: false when no rule can
 * select m.  Reads only m's hook, name and to (calls) or service
 * (responses). */
bool rules_maybe(const struct rules *rs, const struct rmsg *m);
/* Finds the rules that select m, in file order (into rs->sel), in C:
 * reads only m's hook, name, to (calls), service (responses) and from, so
 * the hook fills in the rest only for a message some rule selects.  Only
 * for a message rules_maybe said yes to (it is not asked again).
 * Returns how many. */
size_t rules_select(struct rules *rs, const struct rmsg *m);
/* Runs the rules the last rules_select found on m (every member filled
 * in); the outcome in r (reset first). */
void rules_run_selected(struct rules *rs, const struct rmsg *m, struct rresult *r);
/* Both. */
void rules_run(struct rules *rs, const struct rmsg *m, struct rresult *r);
/* The loaded rules and their counters, for `lexbus rules` and stats. */
json_t *rules_json(const struct rules *rs);
#endif
