/*
 * The redis plugin: many lexbusd nodes as one bus through Redis, Exprsn's
 * Redis-native IPC workers on the same channels, raw channel bridging,
 * and the host's key-value state on Redis.  README "Many nodes" is the
 * user's view; wire.h is the format on Redis.  This header is the state
 * every part shares (struct rd) and the helpers of rd.c.
 *
 * The parts are layers: each file calls only the files below it.
 *
 *   redis.c    the plugin: settings, life cycle, counters, stats; hands
 *              the parts to each other (rc_ops, the route hook)
 *   cluster.c  this node's record and everyone else's; one link
 *              connection per remote node holding its services (so the
 *              core routes, spreads, answers METHOD_NOT_FOUND and
 *              SERVICE_UNAVAILABLE itself), the `main` link that carries
 *              into the bus what arrives from Redis and takes broadcasts
 *              out; it sorts what arrives by channel for the parts below
 *   exprsn.c   IPCWorker interop (ipc:<name> channels, broker tokens,
 *              discovery keys, acks, CRUD and JSONLex requests)
 *   bridge.c   raw channels (IntelliRouter) <-> events
 *   rstate.c   the state backend (`state = redis`)
 *   rconn.c    two hiredis async connections (commands; subscriptions)
 *              on the bus's libevent base, the session (connect, join,
 *              reconnect with jittered backoff), the ring of replies
 *              awaited, bounds on what is queued for and read from Redis
 *   rd.c       sets of strings, counted drops, the table of live nodes
 *   wire.c     what is read from and written to Redis (pure functions)
 *
 * Nothing calls upwards: rconn.c tells the session's events to the
 * struct rc_ops that redis.c hands it (rconn.h), and each command carries
 * the function that takes its reply (struct pent), so the connection
 * knows none of the parts that use it.
 *
 * Everything runs on the loop thread; nothing here blocks.  Ownership:
 * one struct rd per process (the plugin's data); every pointer below is
 * owned by it unless marked borrowed.  Link connections are owned by the
 * host; the plugin forgets each one when it closes it (lb_local_close)
 * or when the host says it closed (on_close).
 */
#ifndef LB_REDIS_RD_H
#define LB_REDIS_RD_H
#include <stdbool.h>
#include <stdint.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <lexbus/plugin.h>
#include "wire.h"
#include "keys.h"

struct rd;
struct rc_ops;                     /* rconn.h */

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

struct pent;
/* Takes the reply to a command.  r NULL: none will come (the connection
 * went away), or it belongs to an earlier session: either way the
 * command's effect is unknown. */
typedef void rc_reply_fn(struct rd *rd, const struct pent *e, redisReply *r);

/* What to do with a reply, and what that needs; copied into the ring. */
struct pent {
    rc_reply_fn *done;             /* NULL: any reply will do */
    uint8_t idlen;
    char id[30];                   /* a CALL's wire id (rc_publish_call) */
    uint32_t gen;                  /* the session it belongs to */
    uint64_t t_us;                 /* when it was sent (monotonic) */
    void *p;                       /* the caller's (freed by done) */
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

/* CALLs published to one node (its serial), for the answer that says
 * nobody heard them. */
struct call_id { uint8_t len; char id[30]; };
struct call_ids {
    uint64_t node;
    size_t n, cap;
    struct call_id *v;
};

/* Messages for one channel queued during this loop turn (rc_publish_lb). */
struct outq {
    char chan[LB_MAX_NAME + 80];
    size_t chlen;
    struct lb_jw *buf;             /* "<len>\n<message>" each */
    size_t n;
    struct pent first;             /* what to do with the reply when it holds one message */
    struct call_ids *calls;        /* the CALLs in it */
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

    /* session (rconn.c) */
    const struct rc_ops *rc_ops;   /* borrowed: redis.c's */
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
    struct sset subs, psubs;       /* channels and patterns to hear, on every connection */
    struct outq outq[OUTQ_MAX];
    size_t n_outq;
    size_t outq_bytes;             /* what they hold, counted in rc_queued */
    struct event *flush_ev;        /* writes out, later in this loop turn, what it queued */
    char ch_self[LB_MAX_NAME + 80], ch_b[80], ch_c[80], ch_s[80];   /* ours, broadcast, control, state */

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
    struct sset local_services;    /* names with an instance here */
    struct sset remote_pats;       /* patterns remote nodes' subscribers hold, with counts */
    struct sset main_subs;         /* what the main link is subscribed to */
    struct lb_patset *remote_set;  /* remote_pats as a trie */
    struct lb_patset *local_set;   /* patterns held here (ipc broadcasts nobody wants are dropped) */
    struct lb_patset *bridge_set;
    struct lb_jw *w, *w2;          /* scratch JSON */

    /* exprsn */
    struct sset workers_known;     /* worker names registered on the workers link */
    struct sset workers_seen;      /* the scan in progress */
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

/* ---- rd.c: what every part uses ------------------------------------- */

/* Appends a string literal to a JSON writer. */
#define JW_LIT(w, lit) lb_jw_raw((w), (lit), sizeof(lit) - 1)
/* ,"methods":[...] unless any (every method): a service as REGISTER
 * and a node's record write it. */
void rd_jw_methods(struct lb_jw *w, bool any, const char *const *methods, size_t n);
/* key (",\"name\":", say), then s in quotes: s is the contents of a JSON
 * string that needs no escapes, as read from valid JSON. */
void rd_jw_plain(struct lb_jw *w, const char *key, struct lb_str s);
/* The frames the parts hand the bus, each type written in one place.
 * An EMIT: id, event, from and to are the contents of JSON strings that
 * need no escapes (names, ids); payload and token raw JSON values; an
 * absent id or token ({NULL,0}) is left out, an absent payload is null. */
struct rd_emit { struct lb_str id, event, from, to, payload, token; bool ack; };
void rd_jw_emit(struct lb_jw *w, const struct rd_emit *e);
/* A REGISTER of `name` for another node or a worker (`node`), up to
 * ,"metadata":{ : the caller writes the metadata's members and "}}". */
void rd_jw_register_begin(struct lb_jw *w, const char *name, const char *node, bool any, const char *const *methods,
                          size_t n);
/* Throttled warning about something a peer can provoke, counted. */
void rd_drop(struct rd *rd, uint64_t *counter, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Feeds a frame to the bus through the main link. */
int rd_inject(struct rd *rd, const char *frame, size_t len);
/* Random hex into out (2*n characters and a NUL). */
void rd_random_hex(char *out, size_t n);
/* Milliseconds of the monotonic clock. */
uint64_t rd_mono_ms(void);
/* Whether some pattern of the set matches the event. */
bool rd_matches(struct lb_patset *set, struct lb_str event);
/* qsort's comparison of two char *. */
int rd_strcmp_p(const void *a, const void *b);

void sset_free(struct sset *s);
struct sent *sset_find(const struct sset *s, const char *p, size_t n);
struct sent *sset_add(struct sset *s, const char *p, size_t n);    /* n counted up */
bool sset_del(struct sset *s, const char *p, size_t n);            /* removed entirely */
void sset_clear(struct sset *s);

/* The live nodes (rd->nodes, kept by cluster.c), asked by the parts that
 * share work with them.  Whether another node announces `service`: */
bool rd_hosted_elsewhere(const struct rd *rd, const char *service);
/* Whether this node is the one (among those that host `service`, this
 * one included; every live node when service is NULL) that takes an
 * Exprsn message of hash h: every node that hosts it hears it, and
 * every node computes the same pick. */
bool rd_mine(const struct rd *rd, const char *service, size_t n, uint64_t h);
#endif
