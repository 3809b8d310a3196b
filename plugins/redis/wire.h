/*
 * What the redis plugin reads from and writes to Redis, as pure functions
 * (no I/O, no plugin state), so each parser has a fuzz target
 * (tests/fuzz/fuzz_redis.c).  Everything read from Redis is untrusted:
 * every field is bounded and validated here before anything acts on it.
 *
 * Messages between lexbus nodes are a header line and a body:
 *
 *     LB1 <kind> <origin node> <origin epoch>[ <number>...]\n<body>
 *
 * kind  channel            body
 * C     <prefix>:n:<node>  a CALL frame, its id "<origin>~<wire id>"
 * R     <prefix>:n:<node>  a RESPONSE frame to one of the node's calls
 * E     <prefix>:n:<node>  an EMIT frame to one of the node's services
 * B     <prefix>:b         an EMIT frame to broadcast
 * U     <prefix>:c         the origin's record (JSON, below); number: its generation
 * H     <prefix>:c         heartbeat; numbers: record generation, ttl ms
 * L     <prefix>:c         the origin is leaving (clean shutdown)
 * S     <prefix>:s         state set; numbers: expiry (ms, 0 never), ns length,
 *                          key length; body: ns, key, value back to back
 * D     <prefix>:s         state deleted; numbers: ns length, key length
 * M     <prefix>:n:<node>, <prefix>:b: a bundle; number: how many messages;
 *                          body: each message (C, R, E or B, same origin) as
 *                          "<decimal length>\n<message>", back to back.  What one
 *                          loop turn queues for one channel leaves as one PUBLISH.
 *
 * A node's record (the value of <prefix>:node:<node> and the body of U):
 *   {"node","epoch","gen","pid","hostname","started","ttl",
 *    "services":[{"name","methods":[...]|absent: any method,"instances"}],
 *    "patterns":[event patterns its subscribers hold]}
 */
#ifndef LB_REDIS_WIRE_H
#define LB_REDIS_WIRE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <lexbus/plugin.h>

#define RW_EPOCH_LEN 16          /* hex digits */
#define RW_MAX_ARGS 4
#define RW_HEAD_MAX (8 + LB_MAX_NAME + RW_EPOCH_LEN + RW_MAX_ARGS * 21)
#define RW_MAX_SERVICES 4096     /* in one node's record */
#define RW_MAX_PATTERNS 4096
#define RW_MAX_METHODS 1024      /* per service (the core's per-connection limit) */
#define RW_MAX_NS 64             /* a plugin name in a state message */
#define RW_MAX_STATE_KEY 1024

/* ---- redis:// and unix:// URLs -------------------------------------- */

struct rw_url {
    bool unix_socket;
    char path[108];              /* unix:///path */
    char host[256];              /* a name, an IPv4 address, or an IPv6 one (brackets removed) */
    int port;
    char user[128], pass[512];   /* AUTH [user] pass when pass[0] */
    int db;                      /* SELECT db when > 0 */
};
/* redis://[[user]:password@]host[:port][/db] or unix:///path/to/redis.sock
 * (user and password may use %XX escapes).  Returns 0, or -1 with why. */
int rw_url_parse(const char *s, struct rw_url *u, char *why, size_t whylen);
/* The URL without its password, for logs and stats. */
void rw_url_print(const struct rw_url *u, char *buf, size_t len);

/* ---- message headers ------------------------------------------------ */

struct rw_head {
    char kind;
    struct lb_str origin, epoch;
    uint64_t arg[RW_MAX_ARGS];
    int nargs;
    const char *body;
    size_t body_len;
};
/* Returns 0 with h filled (pointers into p), or -1 when p is not a
 * well-formed message (unknown version or kind, bad names, numbers out
 * of range, no newline within RW_HEAD_MAX bytes). */
int rw_head_parse(const char *p, size_t n, struct rw_head *h);
/* Writes a header line (newline included) into buf (RW_HEAD_MAX bytes);
 * returns its length. */
size_t rw_head_write(char *buf, char kind, const char *origin, const char *epoch, const uint64_t *args, int nargs);
/* Whether s is an epoch: RW_EPOCH_LEN lowercase hex digits. */
bool rw_epoch_valid(const char *s, size_t n);

/* A bundle's messages one by one: rw_bundle_next returns 1 with m set
 * (each a whole message of the bundle's origin, of a kind in `kinds`),
 * 0 after the last of its count, -1 when the rest is malformed. */
struct rw_bundle { const struct rw_head *h; const char *p, *end; uint64_t left; const char *kinds; };
void rw_bundle_start(struct rw_bundle *b, const struct rw_head *h, const char *kinds);
int rw_bundle_next(struct rw_bundle *b, struct rw_head *m);

/* A state message (S or D): the plugin's name and the key (NUL-terminated
 * into ns and key), the value (S).  Returns 0, or -1 when malformed. */
int rw_state_parse(const struct rw_head *h, char ns[RW_MAX_NS + 1], char key[RW_MAX_STATE_KEY + 1],
                   const char **val, size_t *vlen, uint64_t *expires_ms);
/* A state key as Redis holds it, "<prefix>:state:<ns>:<key>". */
int rw_state_key_parse(const char *k, size_t n, const char *prefix, char ns[RW_MAX_NS + 1],
                       char key[RW_MAX_STATE_KEY + 1]);

/* ---- node records --------------------------------------------------- */

struct rw_service {
    char *name;
    char **methods;              /* sorted; NULL with any = true: every method */
    size_t n_methods;
    bool any;
    long instances;
};

struct rw_record {
    char *node, *epoch, *hostname;
    uint64_t gen, ttl_ms, started_ms;
    long pid;
    struct rw_service *services;
    size_t n_services;
    char **patterns;
    size_t n_patterns;
};
/* Parses and checks a record.  Returns 0 (free it with rw_record_free),
 * or -1 with why (nothing to free). */
int rw_record_parse(const char *text, size_t len, struct rw_record *r, char *why, size_t whylen);
void rw_record_free(struct rw_record *r);
/* The record's service of that name, or NULL. */
const struct rw_service *rw_record_service(const struct rw_record *r, const char *name);

/* ---- Exprsn IPC messages -------------------------------------------- */

/* {event, data, source, target, operation, token, requireAck, timestamp,
 * metadata}; strings are their contents without quotes, `data` and
 * `metadata` raw JSON ({NULL,0} when absent). */
struct rw_ipc {
    struct lb_str event, source, target, operation, token, data, metadata;
    bool require_ack;
    bool from_lexbus;            /* metadata.lexbusNode: a lexbus node published it */
};
/* Returns 0, or -1 with *why (static text): not JSON, not an object, a
 * field of the wrong type, an event or source that is not a valid name,
 * a token that is not a compact JWS of at most LB_MAX_TOKEN bytes. */
int rw_ipc_parse(const char *p, size_t n, struct rw_ipc *m, const char **why);
/* The event of an IPC message, read cheaply (for dropping messages
 * nobody here listens to before anything else): 0 with ev set, or -1. */
int rw_ipc_event(const char *p, size_t n, struct lb_str *ev);

/* ---- small helpers -------------------------------------------------- */

/* A JSON string member's contents (no quotes) if it has no escapes. */
bool rw_plain_string(struct lb_str raw, struct lb_str *out);
/* Writes v in decimal at p (20 bytes at most, no NUL); returns the length.
 * printf is the hot path's most expensive call otherwise. */
size_t rw_u64(char *p, uint64_t v);
/* FNV-1a, 64 bits. */
uint64_t rw_hash(const void *p, size_t n);
#endif
