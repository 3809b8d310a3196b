/*
 * Plugin hooks (struct lb_hooks of plugin.h): registered per plugin, kept
 * in bus.conf order, removable; each call reports which plugin refused.
 */
#ifndef LB_HOOKS_H
#define LB_HOOKS_H
#include <lexbus/plugin.h>
#include "msg.h"

/* Why a hook refused: code, message and the refusing plugin's name
 * (borrowed until the next hook call). */
struct hook_refusal {
    const char *code;
    const char *message;
    const char *plugin;
    long long retry_after_ms;    /* -1 unless RATE_LIMITED with a hint */
};

/* How many registered hook sets have each kind (0: skip the call). */
struct hook_counts {
    size_t accept, inspect, authenticate, message, rewrite, response, deliver, route, audit, closed;
    size_t authenticators;       /* lb_declare_authenticator */
};
extern struct hook_counts g_hooks_n;

enum lb_verdict_kind hooks_accept(struct lb_conn *c, struct hook_refusal *r);
void hooks_inspect(struct lb_conn *c, struct lb_msg *m);
/* ALLOW if some plugin vouched and none refused; PASS if nobody had an
 * opinion; DENY on the first refusal. */
enum lb_verdict_kind hooks_authenticate(struct lb_conn *c, struct lb_msg *m, struct hook_refusal *r);
enum lb_verdict_kind hooks_message(struct lb_conn *c, struct lb_msg *m, struct hook_refusal *r);
enum lb_verdict_kind hooks_rewrite(struct lb_conn *c, struct lb_msg *m, struct hook_refusal *r);
enum lb_verdict_kind hooks_response(struct lb_conn *callee, struct lb_conn *caller, struct lb_msg *m,
                                    struct hook_refusal *r);
enum lb_verdict_kind hooks_deliver(struct lb_conn *from, struct lb_conn *to, struct lb_msg *m,
                                   struct hook_refusal *r);
/* The first link connection a route hook offers for `service`, or NULL. */
struct lb_conn *hooks_route(struct lb_conn *from, const struct lb_msg *m, struct lb_str service);
void hooks_audit(const struct lb_outcome *o);
void hooks_closed(struct lb_conn *c);
/* Drops every hook set of the plugin (it is being unloaded). */
void hooks_remove_plugin(struct lb_plugin_ctx *ctx);
void hooks_free(void);

/* An empty lb_err for a plugin to fill (system methods), and what it
 * said (`fallback` when it set no code). */
struct lb_err *err_fresh(void);
void err_refusal(struct hook_refusal *r, const char *fallback);

/* A refusal from the core itself, in the same shape (plugin NULL). */
void refusal_set(struct hook_refusal *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#endif
