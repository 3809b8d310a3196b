/*
 * The pending-call table: every CALL forwarded to an instance is recorded
 * here until its RESPONSE, its deadline, or the disappearance of either
 * side.  Keyed by (callee connection, call id), because ids are chosen by
 * callers and only need to be unique per in-flight call at one callee.
 * Entries come from a free list and embed their timer: no allocation per
 * call in the steady state.
 */
#ifndef LB_PENDING_H
#define LB_PENDING_H
#include <event2/event.h>
#include <event2/event_struct.h>
#include "bus.h"

struct pending_call {
    struct ht_node node;
    struct lb_conn *caller, *callee;
    struct list_head caller_link, callee_link;
    struct event timer;
    uint64_t start_us;
    uint64_t bytes;
    uint8_t id_len, method_len, target_len;
    char id[LB_MAX_ID];          /* raw JSON string contents */
    char method[LB_MAX_NAME];
    char target[LB_MAX_NAME];
};

typedef void (*pending_timeout_fn)(struct pending_call *pc);

void pending_init(struct event_base *base, pending_timeout_fn on_timeout);
void pending_shutdown(void);
/* Returns NULL when (callee, id) is already in flight. */
struct pending_call *pending_add(struct lb_conn *caller, struct lb_conn *callee,
                                 const char *id, size_t id_len,
                                 const char *method, size_t mlen,
                                 const char *target, size_t tlen, uint64_t timeout_ms);
struct pending_call *pending_find(struct lb_conn *callee, const char *id, size_t id_len);
/* A RESPONSE that `c` is not waited for: the call may be in flight at
 * another instance of the same service opened by the same local process
 * (unix peer credentials).  Bro IPC's connection pool (poolSize > 1) sends
 * each message on the next socket of its pool, answers included.  Only
 * the process holding the callee socket may answer for it. */
struct pending_call *pending_find_pooled(struct lb_conn *c, const char *id, size_t id_len);
/* Unlinks, cancels the timer and recycles the entry. */
void pending_remove(struct pending_call *pc);
size_t pending_count(void);
#endif
