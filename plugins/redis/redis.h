/*
 * The redis plugin: many lexbusd nodes as one bus through Redis, Exprsn's
 * Redis-native IPC workers on the same channels, raw channel bridging,
 * and the host's key-value state on Redis.  README "Many nodes" is the
 * user's view; wire.h is the format on Redis.
 *
 * Shape (all on the loop thread; nothing here blocks):
 * - rconn.c: two hiredis async connections (commands; subscriptions) on
 *   the bus's libevent base, the session (connect, join, reconnect with
 *   jittered backoff), the queue of replies awaited, bounds on what is
 *   queued for and read from Redis.
 * - cluster.c: this node's record (services, subscribed patterns) and
 *   everyone else's; one link connection per remote node holding its
 *   services (so the core routes, spreads, answers METHOD_NOT_FOUND and
 *   SERVICE_UNAVAILABLE itself), the `main` link that carries everything
 *   that arrives from Redis into the bus and takes broadcasts out.
 * - exprsn.c: IPCWorker interop (ipc:<name> channels, broker tokens,
 *   discovery keys, acks, CRUD and JSONLex requests).
 * - bridge.c: raw channels (IntelliRouter) <-> events.
 * - rstate.c: the state backend (`state = redis`).
 *
 * Ownership: one struct rd per process (the plugin's data); every
 * pointer below is owned by it unless marked borrowed.  Link connections
 * are owned by the host; the plugin forgets each one when it closes it
 * (lb_local_close) or when the host says it closed (on_close).
 */
#ifndef LB_REDIS_H
#define LB_REDIS_H
#include <stdbool.h>
#include <stdint.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <lexbus/plugin.h>
#include "wire.h"
#include "keys.h"

struct rd;

/* ---- settings -------------------------------------------------------- */

struct rcfg {
    struct rw_url url;
    char url_text[400];            /* printable: the password left out */
    char prefix[64];
    uint64_t connect_timeout_ms, command_timeout_ms, backoff_min_ms, backoff_max_ms, node_ttl_ms;
    bool prefer_local;
    uint64_t max_message, max_queue;
    bool state_redis;
    bool exprsn;
    char ns[64];                   /* Exprsn namespace: channels ns:<service>, ns:broadcast */
    char **bridge_names;           /* exprsn_bridge: names CRUD/JSONLex requests go to */
    size_t n_bridge_names;
    uint64_t exprsn_scan_ms, token_ttl_s;
    bool revocation_check;
    struct keys keys;              /* key_file: signs tokens for workers */
    char **bridges;                /* bridge = PATTERN (lexbus pattern syntax) */
    size_t n_bridges;
    char bridge_from[LB_MAX_NAME + 1];
};

/* ---- replies awaited on the command connection --------------------- */

enum pk {
    PK_IGNORE,        /* any reply will do */
    PK_SETUP,         /* AUTH, SELECT: an error ends the session */
    PK_READY,         /* the PING after set-up: the connection works */
    PK_LATENCY,       /* the heartbeat's round trip */
    PK_PUBLISH,       /* a message: counts published */
    PK_PUBLISH_CALL,  /* a CALL to a node: nobody listening = SERVICE_UNAVAILABLE */
    PK_PUBLISH_BUNDLE,/* a bundle (p: the CALLs in it, or NULL) */
    PK_CLAIM,         /* claiming our node name */
    PK_NODES_SCAN, PK_NODES_GET,
    PK_STATE_SCAN, PK_STATE_GET,
    PK_WORKERS_SCAN, PK_WORKERS_GET, PK_WORKER_LOOKUP, PK_REVOKED,
    PK_INFO,          /* INFO stats after a subscriber disconnect */
};

struct pent {
    uint8_t kind;                  /* enum pk */
    uint8_t idlen;
    char id[30];                   /* PK_PUBLISH_CALL: the CALL's wire id */
    uint32_t gen;                  /* session (or node) generation it belongs to */
    uint64_t t_us;                 /* when it was sent (monotonic) */
    void *p;
    uint64_t a;
};

/* ---- one Redis connection -------------------------------------------- */

struct rconn {
    struct rd *rd;
    const char *what;              /* "commands", "subscriber" */
    redisAsyncContext *ac;         /* NULL: not connected */
    struct event *rev, *wev, *kick;/* our libevent glue (see rconn.c) */
    bool want_read, paused, connected, in_write;
};

enum rstate { RS_DOWN, RS_CONNECTING, RS_JOINING, RS_UP, RS_CLASH };

/* Messages for one channel queued during this loop turn (rc_publish_lb). */
struct outq {
    char chan[LB_MAX_NAME + 80];
    size_t chlen;
    struct lb_jw *buf;             /* "<len>\n<message>" each */
    size_t n;
    struct pent first;             /* what to do with the reply when it holds one message */
    struct bundle_calls *calls;    /* the CALLs in it */
};

/* The CALLs of a bundle, for the reply to its PUBLISH. */
struct bundle_calls {
    uint64_t serial;               /* the node they went to */
    size_t n, cap;
    struct { uint8_t len; char id[30]; } *v;
};

#define OUTQ_MAX 16

/* ---- a remote node --------------------------------------------------- */

struct rnode {
    struct rnode *next;
    struct rd *rd;
    uint64_t serial;               /* names it in replies awaited (it may be gone by then) */
    char name[LB_MAX_NAME + 1];
    char chan[LB_MAX_NAME + 80];   /* its channel: <prefix>:n:<name> */
    size_t chlen;
    char epoch[RW_EPOCH_LEN + 1];
    uint64_t gen;                  /* the record applied */
    uint64_t ttl_ms;
    uint64_t heard_ms;             /* last message from it (monotonic) */
    struct lb_conn *link;          /* holds its services here */
    struct rw_record rec;          /* what the link registered */
    bool fetching;                 /* its record is being read */
    long pid;
};

/* A set of strings with counts (patterns held by nodes, names, ...). */
struct sset {
    struct sent { char *s; uint64_t n; uint64_t h; } *v;
    size_t n, cap;
};

/* ---- the plugin ------------------------------------------------------ */

struct pending_x; /* exprsn.c: a worker request waiting for the bus's answer */

struct rd {
    struct lb_plugin_ctx *ctx;
    struct event_base *base;
    struct rcfg cfg;
    char node[LB_MAX_NAME + 1];
    char epoch[RW_EPOCH_LEN + 1];
    char hostname[256];
    uint64_t started_ms;
    bool unloading;

    /* session */
    enum rstate state;
    uint32_t session;              /* bumped at every (re)connect */
    struct rconn pub, sub;
    unsigned attempt;              /* failures since the last join */
    bool failing;                  /* a teardown is scheduled */
    bool ready_pub, ready_sub;
    char last_error[256];
    struct event *retry_ev, *connect_ev, *teardown_ev, *tick_ev, *resume_ev;
    struct evdns_base *dns;
    struct evdns_getaddrinfo_request *dns_req;
    struct pent *q;                /* ring of replies awaited on pub */
    size_t q_head, q_n, q_cap;
    char *cmd;                     /* scratch for formatted commands */
    size_t cmd_cap;
    char chan[LB_MAX_NAME + 80];   /* scratch for other nodes' channel names */
    struct outq outq[OUTQ_MAX];
    size_t n_outq;
    size_t outq_bytes;             /* what they hold, counted in rc_queued */
    struct event *flush_ev;        /* writes out, later in this loop turn, what it queued */
    char ch_self[LB_MAX_NAME + 80], ch_b[80], ch_c[80], ch_s[80];   /* ours, broadcast, control, state */
    uint64_t sub_lost_at_info;     /* client_output_buffer_limit_disconnections before */

    /* links */
    struct lb_conn *main;          /* ingress from Redis, broadcasts out */
    struct lb_conn *workers;       /* Exprsn workers' services */
    struct lb_msg *msg;            /* parses what arrives from Redis */

    /* cluster */
    struct rnode *nodes;
    size_t n_nodes;
    uint64_t seen_gen;             /* lb_routing_gen at the last look */
    uint64_t rec_gen;              /* our record's generation */
    char *record;                  /* our record (JSON), as last built */
    size_t record_len;
    char *record_body;             /* its services and patterns, to tell a change */
    size_t record_body_len;
    uint64_t last_hb_ms, last_rebuild_ms;
    uint64_t self_heard_ms;        /* our own heartbeat came back from Redis (monotonic) */
    uint64_t read_ms;              /* when the subscriber's current read began (monotonic) */
    bool rebuild;                  /* local services or patterns changed */
    struct sset local_services;    /* names with an instance here */
    struct sset remote_pats;       /* patterns remote nodes' subscribers hold, with counts */
    struct sset main_subs;         /* what the main link is subscribed to */
    bool main_catch_all;           /* too many patterns: subscribed to ">" */
    struct lb_patset *remote_set;  /* remote_pats as a trie */
    struct lb_patset *local_set;   /* patterns held here (ipc broadcasts nobody wants are dropped) */
    struct lb_patset *bridge_set;
    struct lb_jw *w, *w2;          /* scratch JSON */
    char *scan_cursor;             /* node scan in progress */

    /* exprsn */
    struct sset workers_known;     /* worker names registered on the workers link */
    struct sset workers_seen;      /* the scan in progress */
    struct sset ipc_subs;          /* ipc:<name> channels subscribed */
    struct sset neg;               /* names looked up and not found (n: when, ms) */
    struct pending_x *px;          /* worker requests in flight */
    uint64_t x_seq, node_serial;
    uint64_t last_scan_ms, last_keys_ms, last_neg_sweep_ms;
    bool scanning;
    uint64_t echo[64];             /* bridge: hashes of what we published, for our own echo */
    unsigned echo_head, echo_n;

    /* state */
    struct state_change *pending_state, **pending_tail;
    size_t n_pending_state;
    bool state_lost;               /* changes were dropped while Redis was away */

    /* counters (lb_counter_register) */
    uint64_t c_published, c_received, c_dropped, c_dropped_bad, c_dropped_origin, c_dropped_oversized,
        c_dropped_queue, c_reconnects, c_latency_us, c_latency_max_us, c_nodes, c_remote_services,
        c_queue_bytes, c_calls_out, c_calls_in, c_unavailable, c_ipc_in, c_ipc_out, c_ipc_ignored,
        c_ipc_refused, c_ipc_acks, c_bridged_in, c_bridged_out, c_state_out, c_state_in, c_timeouts,
        c_workers, c_sub_paused;
};

/* ---- rconn.c --------------------------------------------------------- */
void rc_init(struct rd *rd);
void rc_start(struct rd *rd);
void rc_stop(struct rd *rd);
/* The session failed (why is logged): tear down after this callback,
 * reconnect after a backoff. */
void rc_fail(struct rd *rd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool rc_up(const struct rd *rd);
/* Commands on the command connection; e (may be NULL) says what to do
 * with the reply.  Return 0, or -1 when not connected or past max_queue
 * (counted as dropped). */
int rc_command(struct rd *rd, const struct pent *e, int argc, const char **argv, const size_t *argvlen);
int rc_commandf(struct rd *rd, const struct pent *e, const char *fmt, ...);
int rc_publish(struct rd *rd, const struct pent *e, const char *chan, size_t chlen, const char *head, size_t hl,
               const char *body, size_t bl);
/* The same for a message between lexbus nodes (head + body a whole
 * message): everything one loop turn queues for one channel leaves as one
 * PUBLISH (a bundle, wire.h), written before the turn ends. */
int rc_publish_lb(struct rd *rd, const struct pent *e, const char *chan, size_t chlen, const char *head, size_t hl,
                  const char *body, size_t bl);
/* Subscribe (add) or unsubscribe a channel, or a pattern. */
int rc_subscribe(struct rd *rd, bool pattern, bool add, const char *chan);
/* Write what is queued now (a revocation must leave before the answer). */
void rc_flush(struct rd *rd);
/* The oldest unanswered command is older than command_timeout: fail. */
void rc_check_timeout(struct rd *rd);
/* Stops reading the subscriber connection while the bus lags behind. */
void rc_check_backlog(struct rd *rd);
size_t rc_queued(const struct rd *rd);
uint64_t mono_ms(void);

/* ---- cluster.c ------------------------------------------------------- */
int cl_init(struct rd *rd);
void cl_free(struct rd *rd);
void cl_connected(struct rd *rd);          /* both connections work: claim and join */
void cl_disconnected(struct rd *rd);       /* forget every node, close their links */
void cl_tick(struct rd *rd);
void cl_leave(struct rd *rd);              /* clean shutdown: say so */
void cl_on_reply(struct rd *rd, const struct pent *e, redisReply *r);
void cl_on_message(struct rd *rd, const char *chan, size_t chlen, const char *p, size_t n);
const char *cl_node_channel(struct rd *rd, const char *node);
/* The live node (this one included) an Exprsn message for `service` is for:
 * every node that hosts it hears it, one takes it. */
bool cl_mine(struct rd *rd, const char *service, size_t n, uint64_t h);
/* (Re)subscribes the subscriber connection to every channel we listen on. */
void cl_subscribe_all(struct rd *rd);
/* The main link's subscriptions follow remote nodes' patterns, bridges
 * and workers (none while Redis is away). */
void cl_main_resubscribe(struct rd *rd);
size_t cl_remote_services(const struct rd *rd);
bool cl_hosted_elsewhere(struct rd *rd, const char *service);
/* The calls of a bundle that will never be sent, answered SERVICE_UNAVAILABLE. */
void cl_calls_lost(struct rd *rd, const struct bundle_calls *c, const char *why);
json_t *cl_stats(struct rd *rd);

/* ---- exprsn.c -------------------------------------------------------- */
int ex_init(struct rd *rd);
void ex_free(struct rd *rd);
void ex_joined(struct rd *rd);
void ex_disconnected(struct rd *rd);
void ex_tick(struct rd *rd);
void ex_local_changed(struct rd *rd, const struct sset *added, const struct sset *removed);
void ex_on_message(struct rd *rd, const char *name, size_t nlen, const char *p, size_t n);
void ex_on_reply(struct rd *rd, const struct pent *e, redisReply *r);
void ex_broadcast(struct rd *rd, const struct lb_msg *m);
bool ex_main_message(struct rd *rd, const struct lb_msg *m);   /* RESPONSE/ACK/ERROR of worker requests */
struct lb_conn *ex_route(struct rd *rd, const struct lb_msg *m, struct lb_str service);

/* ---- bridge.c -------------------------------------------------------- */
int br_init(struct rd *rd);
void br_subscribe(struct rd *rd);
bool br_matches(struct rd *rd, struct lb_str event);
void br_publish(struct rd *rd, const struct lb_msg *m);
void br_on_message(struct rd *rd, const char *chan, size_t chlen, const char *p, size_t n);

/* ---- rstate.c -------------------------------------------------------- */
int st_init(struct rd *rd);
void st_free(struct rd *rd);
void st_joined(struct rd *rd);
void st_on_message(struct rd *rd, const struct rw_head *h);
void st_on_reply(struct rd *rd, const struct pent *e, redisReply *r);

/* ---- redis.c: helpers shared by the parts --------------------------- */
/* Appends a string literal to a JSON writer. */
#define JW_LIT(w, lit) lb_jw_raw((w), (lit), sizeof(lit) - 1)
/* Throttled warning about something a peer can provoke, counted. */
void rd_drop(struct rd *rd, uint64_t *counter, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Feeds a frame to the bus through the main link. */
int rd_inject(struct rd *rd, const char *frame, size_t len);
/* Random hex into out (2*n characters and a NUL). */
void rd_random_hex(char *out, size_t n);
void sset_free(struct sset *s);
struct sent *sset_find(const struct sset *s, const char *p, size_t n);
struct sent *sset_add(struct sset *s, const char *p, size_t n);    /* n counted up */
bool sset_del(struct sset *s, const char *p, size_t n);            /* removed entirely */
void sset_clear(struct sset *s);
#endif
