/*
 * Every frame the bus writes itself, one writer per message type (ERROR is
 * conn_send_error in conn.c, the layer below).  Writers build into scratch
 * buffers owned here and send at once, except out_event, which builds the
 * one EVENT a fan-out sends to many.
 */
#ifndef LB_OUT_H
#define LB_OUT_H
#include "conn.h"
#include "msg.h"
#include "pending.h"

/* An error RESPONSE to a call (id: the caller's, raw string contents; to:
 * the caller's name, or NULL). */
void out_call_error(struct lb_conn *caller, const char *id, size_t id_len, const char *to, size_t to_len,
                    const char *code, long long retry_after_ms, const char *msg);
/* A RESPONSE the bus answers itself (system methods): data (ok) or error
 * object JSON; ctx: the CALL's context (raw object) or NULL. */
void out_reply(struct lb_conn *caller, const struct lb_msg *call, bool ok, const char *json, size_t len);
void out_register_ack(struct lb_conn *c, const struct instance *inst);
/* ACK for an EMIT (key "delivered", remote: links it went to, -1 = leave
 * out) or a SUBSCRIBE (key "subscriptions"). */
void out_ack(struct lb_conn *c, const struct lb_msg *m, const char *key, size_t count, long remote);
void out_heartbeat(struct lb_conn *c, const char *id, size_t id_len);

/* The EVENT an EMIT becomes, into w: from = the sender's name. */
void out_event(struct jw *w, const struct lb_msg *m, const char *from, size_t from_len, bool broadcast);
/* The CALL as the callee sees it.  Returns false when the sender's frame
 * can go out byte for byte (nothing of the bus's to add or change). */
bool out_call(struct jw *w, const struct lb_msg *m, const char *from, size_t from_len,
              const struct pending_call *pc, uint64_t deadline);
/* The RESPONSE as the caller sees it (same rule). */
bool out_response(struct jw *w, const struct lb_msg *m, const struct pending_call *pc);
void out_free(void);
#endif
