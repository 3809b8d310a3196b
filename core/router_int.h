/* Shared by the router's parts (router.c, route_*.c, route_common.c,
 * subs.c); not for other files. */
#ifndef LB_ROUTER_INT_H
#define LB_ROUTER_INT_H
#include <stdarg.h>
#include "router.h"
#include "msg.h"
#include "hooks.h"
#include "out.h"

#define MAX_METHODS_PER_CONN 1024
#define MAX_SUBS_PER_CONN 1024
#define MAX_RESOURCES 256
#define MAX_METADATA 8192
#define MAX_VERSION 64

/* Who sent a message: the name it speaks as (its `from`, or its primary
 * registered name). */
struct sender {
    struct lb_conn *c;
    const char *name;
    size_t len;
};

/* An error about a message: an error RESPONSE for a CALL or CRUD with a
 * usable id (so the caller's pending call settles), else an ERROR frame;
 * audited with the refusing plugin's name (NULL: the core). */
void refuse(const struct sender *s, const struct lb_msg *m, const char *code, long long retry_after_ms,
            const char *plugin, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void refuse_hook(const struct sender *s, const struct lb_msg *m, const struct hook_refusal *r);
/* Audits a routed message. */
void audit_msg(const struct sender *s, const struct lb_msg *m, struct lb_str to, struct lb_str name,
               int delivered, const char *code, const char *plugin, uint64_t dur_us);
struct lb_str val_str(const struct env_val *v);
static inline struct lb_str mk_str(const char *p, size_t n) { struct lb_str s = { p, n }; return s; }
bool is_system_target(const struct env_val *to);
bool id_usable(const struct env_val *id);
/* Validates a string array member; returns its length or -1 with why. */
long check_name_array(const struct env_val *arr, bool (*valid)(const char *, size_t), size_t max,
                      const char *what, char *why, size_t whylen);

void handle_register(const struct sender *s, struct lb_msg *m);
void handle_call(const struct sender *s, struct lb_msg *m);
void handle_response(const struct sender *s, struct lb_msg *m);
void handle_emit(const struct sender *s, struct lb_msg *m);
void handle_subscribe(const struct sender *s, struct lb_msg *m, bool add);
/* Subscriptions (subs.c). */
void subs_init(void);
void subs_free(void);
size_t subs_count(void);
/* How many patterns of `arr` the connection would gain. */
size_t subs_new_count(struct lb_conn *c, const struct env_val *arr);
void subs_add_all(struct lb_conn *c, const struct env_val *arr);
void subs_remove_all(struct lb_conn *c, const struct env_val *arr);
void subs_forget(struct lb_conn *c);
/* Calls fn for every subscriber of a pattern matching the event. */
size_t subs_match(const char *event, size_t n, void (*fn)(void *sub, void *ud), void *ud);
/* Events (route_emit.c). */
void emit_init(void);
void emit_free(void);
/* Calls (route_call.c). */
void calls_init(void);
void calls_forget(struct lb_conn *c);
void calls_fail_all(const char *code, const char *message);
void calls_free(void);
#endif
