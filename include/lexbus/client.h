/*
 * liblexbus: the C client library for lexbus.
 *
 * A client is one connection to lexbusd registered under one service name.
 * It runs on the caller's libevent event_base (every callback runs on that
 * loop), or on a private one through the blocking helpers at the end of
 * this file.  It re-connects by itself with exponential backoff and jitter,
 * and re-registers its methods and subscriptions each time.
 *
 * Ownership, throughout:
 *   - json_t arguments passed *to* the library are borrowed (the library
 *     takes its own reference or copy) unless the comment says "stolen";
 *   - json_t values passed *to your callbacks* are borrowed for the call:
 *     json_incref() them to keep them;
 *   - strings passed to callbacks are valid during the callback only;
 *   - every struct the library returns is freed with the function named
 *     next to it.
 * Errors: functions return 0 or -1; asynchronous outcomes carry a
 * struct lexbus_error with the protocol's code string (doc/protocol.md:
 * SERVICE_NOT_FOUND, TIMEOUT, ..., and client-side CONNECTION_LOST,
 * NOT_CONNECTED) and a message meant for people.
 *
 * Values jansson cannot represent: the bus forwards any valid JSON number,
 * and json_t holds only doubles and int64 (1e400 and
 * 123456789012345678901234567890 do not fit).  Such a value never reaches
 * a callback as null: a CALL whose params (or context) hold one is
 * answered INVALID_MESSAGE by the library, its method handler not called;
 * an EVENT's payload goes to the lexbus_on_error handler as INVALID_MESSAGE
 * instead of the lexbus_on handler (without an error handler, a line on
 * stderr); a RESULT settles the call with INVALID_MESSAGE.  lexbus_on_raw
 * handlers get the text as written, whatever it holds.  "\u0000" is kept:
 * the json_t string holds the NUL (json_string_length counts it).
 *
 * Message ids are a random prefix per client (96 bits) and a counter, so
 * no other client can predict them.
 */
#ifndef LEXBUS_CLIENT_H
#define LEXBUS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;
struct lexbus_client;
struct lexbus_reply;

struct lexbus_error {
    char code[32];
    char message[256];
};

/* How frames are written on the wire (the bus reads both).  MessagePack is
 * what Bro IPC clients use by default; callbacks see JSON either way.  The
 * bus sends a MessagePack connection nothing JSON cannot say, except
 * +-Infinity for a JSON number beyond the double range (1e400), which
 * reaches callbacks as null. */
enum lexbus_encoding { LEXBUS_ENCODING_JSON = 0, LEXBUS_ENCODING_MSGPACK };

struct lexbus_options {
    const char *url;            /* "unix:/path" or "tls://host:port"; NULL: $LEXBUS_URL, else unix:/tmp/lexbus.sock */
    const char *service;        /* name to register; NULL: "client-<pid>-<n>" */
    /* A broker token, or NULL.  A session token (claim operation
     * "register", `lexbus token issue --operation register`) is sent with
     * REGISTER only; any other token with every CALL and EMIT (the bus
     * checks it against their target and operation). */
    const char *token;
    bool no_reconnect;          /* default: reconnect forever */
    unsigned reconnect_base_ms; /* first delay (default 100) */
    unsigned reconnect_max_ms;  /* cap (default 30000) */
    size_t max_frame;           /* largest frame accepted from the bus (default 16 MiB) */
    /* tls:// only.  The server's name (or IP) is verified against its
     * certificate unless tls_insecure, which prints a warning. */
    const char *tls_ca;         /* CA file; NULL: the system's trust store */
    const char *tls_cert;       /* client certificate (mutual TLS), with tls_key */
    const char *tls_key;
    bool tls_insecure;          /* no verification: for debugging only */
    enum lexbus_encoding encoding;  /* default JSON */
};

/* ---- callbacks ------------------------------------------------------ */

/* A call to one of your methods.  Answer exactly once, now or later, with
 * lexbus_reply_ok / lexbus_reply_error (which free `reply`).  Not
 * answering leaves the caller to its timeout. */
typedef void (*lexbus_method_fn)(struct lexbus_client *c, const char *method, json_t *params,
                                 struct lexbus_reply *reply, void *ud);
/* An EVENT matching a pattern you subscribed to. */
typedef void (*lexbus_event_fn)(struct lexbus_client *c, const char *event, const char *from,
                                json_t *payload, void *ud);
/* The same, with the payload as the JSON text the sender wrote (`len`
 * bytes, not NUL-terminated; "null" when there was none), valid during the
 * callback only.  No json_t is built: for high-rate consumers. */
typedef void (*lexbus_raw_event_fn)(struct lexbus_client *c, const char *event, const char *from,
                                    const char *payload_json, size_t len, void *ud);
/* Outcome of a call: err == NULL and `result` on success. Called once. */
typedef void (*lexbus_result_fn)(struct lexbus_client *c, const struct lexbus_error *err,
                                 json_t *result, void *ud);
/* Outcome of an EMIT with ack: recipients reached, or err. Called once. */
typedef void (*lexbus_ack_fn)(struct lexbus_client *c, const struct lexbus_error *err,
                              long delivered, void *ud);
/* An ERROR from the bus that answers nothing you are waiting for: an EMIT
 * sent without an ack callback that was refused (RATE_LIMITED,
 * INVALID_MESSAGE, FORBIDDEN, ...).  Without this handler such errors are
 * dropped; with an ack callback the emit's own callback gets them. */
typedef void (*lexbus_error_fn)(struct lexbus_client *c, const struct lexbus_error *err, void *ud);
/* Connection state: ready = registered (true) or lost (false). */
typedef void (*lexbus_state_fn)(struct lexbus_client *c, bool ready, const struct lexbus_error *why, void *ud);

/* ---- life cycle ----------------------------------------------------- */

/* Creates a client on `base` (borrowed; must outlive the client).  Does not
 * connect yet.  Returns NULL on a bad URL or out of memory.  Free with
 * lexbus_free. */
struct lexbus_client *lexbus_new(struct event_base *base, const struct lexbus_options *opt);
/* Starts connecting (and keeps re-connecting unless no_reconnect). */
int lexbus_connect(struct lexbus_client *c);
/* Closes the connection; every pending call and ack fails with
 * NOT_CONNECTED.  No automatic reconnect after this. */
void lexbus_disconnect(struct lexbus_client *c);
/* Disconnects (if needed) and frees everything. */
void lexbus_free(struct lexbus_client *c);
bool lexbus_is_ready(const struct lexbus_client *c);
const char *lexbus_service(const struct lexbus_client *c);   /* owned by the client */
struct event_base *lexbus_base(const struct lexbus_client *c);
void lexbus_on_state(struct lexbus_client *c, lexbus_state_fn fn, void *ud);
void lexbus_on_error(struct lexbus_client *c, lexbus_error_fn fn, void *ud);

/* ---- serving -------------------------------------------------------- */

/* Offers `method` (copied).  May be called before or after connecting. */
int lexbus_add_method(struct lexbus_client *c, const char *method, lexbus_method_fn fn, void *ud);
/* Subscribes to an event pattern (`*` one segment, `>` the rest). */
int lexbus_on(struct lexbus_client *c, const char *pattern, lexbus_event_fn fn, void *ud);
/* Like lexbus_on, but the handler gets the payload's JSON text. */
int lexbus_on_raw(struct lexbus_client *c, const char *pattern, lexbus_raw_event_fn fn, void *ud);
/* Answers a call; `result` is stolen (may be NULL for JSON null). Frees reply. */
void lexbus_reply_ok(struct lexbus_reply *r, json_t *result);
/* Answers a call with an error. Frees reply. */
void lexbus_reply_error(struct lexbus_reply *r, const char *code, const char *message);
/* The context of the call being answered (borrowed; valid until the
 * reply is sent). */
json_t *lexbus_reply_context(const struct lexbus_reply *r);

/* ---- calling and emitting ------------------------------------------- */

/* Calls service.method with `params` (borrowed; NULL = {}).  `parent`, when
 * non-NULL, is a call you are answering: the new call keeps its root and
 * deadline and extends its chain (depth + 1).  timeout_ms 0 = 30000.
 * The callback runs exactly once (result, bus error, TIMEOUT,
 * CONNECTION_LOST or NOT_CONNECTED).  Returns 0, or -1 if not ready (the
 * callback is then not called). */
int lexbus_call(struct lexbus_client *c, const char *service, const char *method, json_t *params,
                unsigned timeout_ms, const struct lexbus_reply *parent, lexbus_result_fn cb, void *ud);
/* Emits `event` with `payload` (borrowed; NULL = null) to `to` (a service
 * name, or NULL/"broadcast").  With cb, the bus acknowledges with the
 * number of recipients, or cb gets the bus's refusal; without cb a refusal
 * goes to the lexbus_on_error handler.  The bus refuses payloads nested
 * deeper than 62 levels.  Returns 0, or -1 if not ready. */
int lexbus_emit(struct lexbus_client *c, const char *event, json_t *payload, const char *to,
                lexbus_ack_fn cb, void *ud);

/* Like lexbus_emit, with the payload given as JSON text (`len` bytes,
 * copied): it is checked here (one complete, valid JSON value) and sent
 * as written, with no json_t in between.  Returns 0, or -1 if not ready or
 * the text is not valid JSON (the callback is then not called). */
int lexbus_emit_json(struct lexbus_client *c, const char *event, const char *payload_json, size_t len,
                     const char *to, lexbus_ack_fn cb, void *ud);

/* A CRUD request: the bus ([plugin lua], crud.lua) turns it into a call
 * of `<resource>.<op>` on `to`, or on the service that declared the
 * resource in its REGISTER, with params {resource, op, key, data, query}.
 * Strings and values are borrowed; NULL members are left out. */
struct lexbus_crud {
    const char *op;            /* "create", "read", "update", "delete" */
    const char *resource;
    const char *key;
    json_t *data;
    json_t *query;
    const char *to;
};
/* Sends it; cb runs exactly once, as for lexbus_call (the result, or the
 * bus's error: SERVICE_NOT_FOUND for an unknown resource,
 * INVALID_MESSAGE for a request crud.lua refuses, ...).  Returns 0, or -1
 * if not ready (the callback is then not called). */
int lexbus_crud(struct lexbus_client *c, const struct lexbus_crud *req, unsigned timeout_ms,
                lexbus_result_fn cb, void *ud);

/* ---- blocking helpers (a private event loop) ------------------------ */

/* Connects and registers, waiting up to timeout_ms.  Returns a client that
 * owns its event base (freed by lexbus_free), or NULL with *err set. */
struct lexbus_client *lexbus_connect_blocking(const struct lexbus_options *opt, unsigned timeout_ms,
                                              struct lexbus_error *err);
/* Returns 0 with *result (a new reference: json_decref it), or -1 with *err. */
int lexbus_call_blocking(struct lexbus_client *c, const char *service, const char *method, json_t *params,
                         unsigned timeout_ms, json_t **result, struct lexbus_error *err);
/* lexbus_crud, waiting: 0 with *result (a new reference), or -1 with *err. */
int lexbus_crud_blocking(struct lexbus_client *c, const struct lexbus_crud *req, unsigned timeout_ms,
                         json_t **result, struct lexbus_error *err);
/* Emits and waits until the bus has routed it; with delivered != NULL, asks
 * for an ack and stores the recipient count.  Returns 0 or -1 with *err. */
int lexbus_emit_blocking(struct lexbus_client *c, const char *event, json_t *payload, const char *to,
                         long *delivered, unsigned timeout_ms, struct lexbus_error *err);
/* Runs the client's loop until lexbus_stop (for blocking-style servers). */
int lexbus_run(struct lexbus_client *c);
void lexbus_stop(struct lexbus_client *c);

/* Delay before re-connect attempt `attempt` (0-based): min(base * 2^attempt,
 * max) scaled by a random factor in [0.5, 1.0] (jitter), in ms. */
unsigned lexbus_backoff_ms(unsigned base, unsigned max, unsigned attempt, unsigned random);

#ifdef __cplusplus
}
#endif
#endif /* LEXBUS_CLIENT_H */
