/*
 * The pending-call table: every CALL forwarded to an instance is recorded
 * here until its RESPONSE, its deadline, or the disappearance of either
 * side.
 *
 * Two keys.  (caller, caller's id): a caller may not have two calls with
 * one id in flight, but two callers may use the same id.  (callee, wire
 * id): what the callee answers to.  The wire id is the caller's own id
 * when that is free at the callee (the common case: the CALL is forwarded
 * unchanged), and an id of the bus's otherwise — always for links, which
 * carry many callers' calls — so calls from many callers over one
 * connection never collide; the caller's id is restored on the way back.
 *
 * Entries come from a free list and embed their timer: no allocation per
 * call in the steady state.
 */
#ifndef LB_PENDING_H
#define LB_PENDING_H
#include <event2/event.h>
#include <event2/event_struct.h>
#include "conn.h"

#define WIRE_ID_MAX 24

struct pending_call {
    struct ht_node by_callee, by_caller;
    struct lb_conn *caller, *callee;
    struct list_head caller_link, callee_link;
    struct event timer;
    uint64_t start_us;
    uint64_t bytes;
    bool wire_is_id;             /* the callee sees the caller's own id */
    uint8_t id_len, wire_len, method_len, target_len, from_len;
    char id[LB_MAX_ID];          /* the caller's id (raw JSON string contents) */
    char wire[WIRE_ID_MAX];      /* the bus's id, when !wire_is_id */
    char method[LB_MAX_NAME + 1];   /* NUL-terminated: the response hooks' call.method */
    char target[LB_MAX_NAME + 1];   /* the service called (NUL-terminated: call.to) */
    char from[LB_MAX_NAME];      /* the name the caller called as */
};

typedef void (*pending_timeout_fn)(struct pending_call *pc);

void pending_init(struct event_base *base, pending_timeout_fn on_timeout);
void pending_shutdown(void);
struct pending_args {
    const char *id, *method, *target, *from;
    size_t id_len, method_len, target_len, from_len;
    bool bus_id;                 /* always use an id of the bus's on the wire */
    uint64_t timeout_ms;
};
/* Returns NULL when (caller, id) is already in flight. */
struct pending_call *pending_add(struct lb_conn *caller, struct lb_conn *callee, const struct pending_args *a);
/* The call a RESPONSE with `wire` id from `callee` answers, or NULL. */
struct pending_call *pending_find(struct lb_conn *callee, const char *wire, size_t wire_len);
static inline const char *pending_wire(const struct pending_call *pc, size_t *len)
{
    *len = pc->wire_is_id ? pc->id_len : pc->wire_len;
    return pc->wire_is_id ? pc->id : pc->wire;
}
/* Unlinks, cancels the timer and recycles the entry. */
void pending_remove(struct pending_call *pc);
size_t pending_count(void);
#endif
