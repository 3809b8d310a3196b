/*
 * Connections: the record every transport (and every in-process client)
 * gets, frame input, sending, back-pressure, the output budget, deferred
 * closes and the sweep (heartbeats, REGISTER deadline, stuck consumers).
 *
 * Layering: this module knows nothing of routing.  It is handed the
 * function that routes a frame (conn_set_handlers) and calls it for every
 * frame received; closing a connection calls the router's `forget` and
 * then the plugins' `closed` hooks.
 */
#ifndef LB_CONN_H
#define LB_CONN_H
#include <stdint.h>
#include <stdbool.h>
#include "bus.h"
#include "list.h"
#include "htable.h"

struct service;
struct local;

/* One registered service on a connection (a connection usually holds
 * one; a trusted in-process connection may hold several). */
/* What few instances have, apart: every registered connection has an
 * instance, and most send none of these. */
struct inst_extra {
    char **resources;            /* CRUD resources it serves (REGISTER `resources`) */
    size_t n_resources;
    char *version;
    char *metadata_json;         /* as sent, for `services` */
    char *node;                  /* a link's instance: the node it lives on */
};

struct instance {
    struct service *svc;
    const char *name;            /* svc->name */
    size_t name_len;
    struct lb_conn *conn;
    uint32_t svc_index;          /* position in svc->inst */
    uint32_t n_methods;          /* (two halves of 8 bytes: every registered connection has an instance) */
    /* Each names array is one allocation, strings included (one free). */
    char **methods;              /* sorted; NULL/0 = accepts every method */
    struct inst_extra *x;        /* NULL when it has none of those */
    uint64_t registered_ms;
    struct instance *next;       /* the connection's list */
};

enum conn_state { CS_NEW, CS_REGISTERED };

struct lb_conn {
    uint64_t id;
    int refs;                    /* held by paused senders, the dirty list, input */
    int waiting_on;              /* recipients this connection waits for (back-pressure) */
    bool dead;                   /* closed: no more input or output */
    bool in_input;               /* inside input: defer the transport close */
    bool dirty;                  /* in the dirty list: flush after this iteration */
    bool trusted, link, fallback;/* in-process options (lb_local_opts) */
    bool admin;                  /* lb_conn_set_admin */
    bool dropping;               /* slow_consumer = drop: events dropped until it drains */
    bool timed_out;              /* REGISTER deadline passed */
    uint8_t encoding;            /* enum lb_encoding: AUTO until the first frame (encoding.h) */
    bool encoding_pinned;        /* set by the transport's `encoding` key, not by the first frame */
    /* Here, in what the flags leave of 16 bytes: an idle connection is
     * mostly this struct. */
    uint8_t state;               /* enum conn_state */
    uint32_t n_inst;
    const char *close_why;       /* a send failed: closed after this iteration */
    const char *close_code;      /* ...with this ERROR first (SLOW_CONSUMER), or NULL */
    const struct lb_conn_ops *ops;
    void *tdata;
    struct lb_plugin_ctx *transport;
    struct lb_peer peer;         /* strings owned (copied at accept); address after the struct, in its block */
    struct local *local;         /* in-process connection state, or NULL */

    struct instance *inst;       /* registered services (n_inst); the first is the primary */
    const char *auth;            /* "none", "token", "mtls", "bypass", "plugin", ... */
    uint64_t last_seen_ms;       /* wall clock, for people (when it registered: its instances') */
    uint64_t connected_mono_ms, last_seen_mono_ms;         /* monotonic, for deadlines */

    struct htable subs;          /* struct sub_entry: the patterns it holds */

    /* Calls in flight where this connection is the caller / the callee. */
    struct list_head calls_out, calls_in;
    struct list_head link_node;  /* the list of all connections */

    /* Back-pressure: connections paused until this one drains (conn.c);
     * NULL while none is, as for almost every connection. */
    struct waiters *waiters;

    size_t queued;               /* output bytes last seen queued (the budget's share) */
    uint64_t deliver_gen;        /* de-duplicates fan-out */
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out, events_dropped, dropped_unreported;
    void **plugin_data;          /* one slot per plugin */
};

/* How frames reach the router, and how it forgets a closing connection. */
typedef void (*conn_input_fn)(struct lb_conn *c, const char *frame, size_t len);
typedef void (*conn_forget_fn)(struct lb_conn *c);
void conn_set_handlers(conn_input_fn input, conn_forget_fn forget);

/* Creates a connection record (no accept hooks: lb_conn_new runs them). */
struct lb_conn *conn_create(struct lb_plugin_ctx *transport, const struct lb_conn_ops *ops,
                            void *tdata, const struct lb_peer *peer);
/* Routes one frame received on c (through the input handler), with the
 * deferred-close protection transports rely on.  Returns 0 or -1 when c
 * was closed. */
int conn_input(struct lb_conn *c, const char *frame, size_t len);

/* Sends one JSON frame.  Returns 0, or -1 if the connection is closed or
 * was just marked to close (slow consumer, send failure). */
int conn_send(struct lb_conn *c, const char *p, size_t n, enum lb_msg_type t);
/* A broadcast EVENT: like conn_send, but a subscriber past outbuf_max is
 * handled by [bus] slow_consumer (closed, or the event dropped and
 * counted) and never pauses the publisher.  Returns 0 when queued. */
int conn_send_broadcast(struct lb_conn *c, const char *p, size_t n);
/* The one writer of ERROR frames: id (raw JSON string contents) may be
 * NULL; retry_after_ms < 0 leaves retryAfterMs out. */
void conn_send_error(struct lb_conn *c, const char *id, size_t id_len, const char *code,
                     long long retry_after_ms, const char *msg);
/* After queueing a frame from `sender` to `to` (point-to-point): pause the
 * sender while `to` is backed up.  sender == to pauses a connection that
 * floods itself. */
void conn_backpressure(struct lb_conn *sender, struct lb_conn *to);
void conn_close(struct lb_conn *c, bool flush, const char *why);
/* Marks c to be closed after this iteration with an ERROR `code` sent
 * first (its queued output dropped when the transport can). */
void conn_close_later(struct lb_conn *c, const char *code, const char *why);
/* Writes out what this loop iteration queued, closes what was marked. */
void conn_flush_dirty(void);
void conn_ref(struct lb_conn *c);
void conn_unref(struct lb_conn *c);
bool conn_closing(const struct lb_conn *c);
void conn_sweep_start(void);
void conn_sweep_stop(void);
/* Draining: close every connection, flushing what is queued. */
void conn_close_all(const char *why);
/* Visits every open connection (fn may not close any). */
void conn_each(void (*fn)(struct lb_conn *c, void *ud), void *ud);
size_t conn_count(void);
uint64_t conn_outbuf_total(void);
/* The name the connection registered under first, or NULL. */
static inline const char *conn_name(const struct lb_conn *c) { return c->inst ? c->inst->name : NULL; }
/* The connection's instance of `name`, or NULL. */
struct instance *conn_instance(const struct lb_conn *c, const char *name, size_t n);
/* The name to log a connection by. */
const char *conn_label(const struct lb_conn *c);
/* Marks activity for the heartbeat sweep. */
void conn_touch(struct lb_conn *c);
/* The listeners of every transport, disabled while draining. */
void listeners_disable_all(void);
#endif
