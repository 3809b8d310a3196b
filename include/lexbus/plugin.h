/*
 * lexbus plugin ABI, version 2.
 *
 * A plugin is a shared object that exports one symbol, `lexbus_plugin`, a
 * `struct lb_plugin` whose `abi` field equals LB_PLUGIN_ABI.  lexbusd
 * dlopen()s it with RTLD_NOW, checks the ABI number and the descriptor's
 * size, and calls load() once with a context for its `[plugin NAME]`
 * section of bus.conf.  A plugin built for ABI 1 is refused with a message
 * that says to rebuild it.  doc/plugins.md explains this header with a
 * worked example (plugins/example/).
 *
 * Everything a plugin may call is declared below and exported by lexbusd.
 *
 * Threads: the event loop is single-threaded.  Every callback runs on the
 * loop thread and must never block; every function below is for the loop
 * thread only unless its comment says otherwise.
 *
 * Ownership: unless a comment says otherwise, pointers passed to a plugin
 * callback are borrowed for the duration of that callback only; strings
 * returned by the host are owned by the host and stay valid until the
 * plugin is unloaded (config values, even across reloads) or until the
 * callback returns (message data).  Structs a plugin passes in are copied.
 *
 * Re-entry: the host never calls a plugin from inside a call the plugin
 * made to the host, except where a function's comment says so
 * (lb_conn_close_error runs `closed` hooks; lb_conn_input routes, which
 * runs hooks of every plugin, the caller's included).  Frames for
 * in-process connections and lb_call callbacks are always delivered from
 * a later turn of the loop.
 *
 * Growing structs: every struct a plugin fills starts with `size`
 * (sizeof as the plugin was compiled).  The host reads only the fields
 * that fit, so adding fields at the end is compatible.  Structs the host
 * fills for a plugin (lb_stats_snapshot, lb_service_info) are filled up to
 * the size the plugin says it has.
 */
#ifndef LEXBUS_PLUGIN_H
#define LEXBUS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <lexbus/protocol.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on every incompatible change of this header. */
#define LB_PLUGIN_ABI 2

struct event_base;
struct evbuffer;
struct evconnlistener;
struct lb_plugin_ctx;   /* one per loaded plugin, owned by the host */
struct lb_conn;         /* one per connection (socket or in-process), owned by the host */
struct lb_msg;          /* one message, valid during a hook or callback */
struct lb_err;          /* where a hook or method writes why it refused; host-owned */
typedef struct json_t json_t;

struct lb_plugin {
    int abi;                /* LB_PLUGIN_ABI */
    uint32_t size;          /* sizeof(struct lb_plugin) */
    const char *name;       /* must equal the section name: [plugin NAME] */
    const char *version;
    /* Read config, open listeners, register hooks.  Return 0, or -1 after
     * lb_plugin_fail() has recorded why (start-up stops with that cause). */
    int (*load)(struct lb_plugin_ctx *ctx);
    /* Close everything load() opened.  Optional.  Hooks, methods, counters
     * and in-process connections of the plugin are removed by the host
     * right after it returns. */
    void (*unload)(struct lb_plugin_ctx *ctx);
    /* SIGHUP / `lexbus reload`, step 1 of 2: the section was re-read
     * (lb_conf_* return the new values).  Parse and validate them into
     * staged settings WITHOUT applying them.  Return 0, or -1 after
     * lb_plugin_fail().  Optional: without it the section keeps its
     * start-up settings (and a changed section is reported as needing a
     * restart). */
    int (*reload)(struct lb_plugin_ctx *ctx);
    /* Step 2: every plugin's reload() and the [bus] settings were valid:
     * apply the staged settings (commit = true), or drop them because
     * something else failed (commit = false).  Must not fail.  Required
     * when reload is given: reloads are all or nothing.  No hook runs
     * while it is called (the host calls it from its SIGHUP handler, or
     * from the `reload` method once that CALL's hooks have returned), so
     * it may register and unregister hooks. */
    void (*reload_done)(struct lb_plugin_ctx *ctx, bool commit);
    void *reserved[8];
};

/* ------------------------------------------------------------------ */
/* Logging and failure                                                 */

enum lb_log_level { LB_LOG_DEBUG, LB_LOG_INFO, LB_LOG_WARN, LB_LOG_ERROR };

/* Logs "<time> <level> [<plugin name>] message" to the daemon's log. */
void lb_log(struct lb_plugin_ctx *ctx, enum lb_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same, at most `per_min` lines a minute for this `key` (any string
 * naming the kind of event); the lines held back are counted in the next
 * one that is written.  For things a peer can provoke at will (refused
 * connections, bad frames). */
void lb_log_throttled(struct lb_plugin_ctx *ctx, enum lb_log_level lvl, const char *key,
                      unsigned per_min, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Records why load()/reload() failed; the host prints it with the plugin
 * name and the bus.conf file and line of the section. */
void lb_plugin_fail(struct lb_plugin_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------------ */
/* Configuration of this plugin's own [plugin NAME] section.           */
/* Every key a plugin reads is marked as known; after load() (and after */
/* reload()) the host rejects any key in the section that was never    */
/* read (file:line).  Getters return 0 on success, 1 when the key is    */
/* absent (the default has been stored), -1 on a bad value (already     */
/* reported with file:line through lb_plugin_fail).                     */

int lb_conf_str(struct lb_plugin_ctx *ctx, const char *key, const char *def, const char **out);
int lb_conf_bool(struct lb_plugin_ctx *ctx, const char *key, bool def, bool *out);
int lb_conf_int(struct lb_plugin_ctx *ctx, const char *key, long long def,
                long long min, long long max, long long *out);
int lb_conf_size(struct lb_plugin_ctx *ctx, const char *key, uint64_t def, uint64_t *out); /* 4K, 1M, 2G */
int lb_conf_ms(struct lb_plugin_ctx *ctx, const char *key, uint64_t def_ms, uint64_t *out_ms); /* 500ms, 30s, 5m, 1h */
/* A key that may repeat (e.g. several `listen` lines): the values in file
 * order.  Returns the count; *out is a host-owned array. */
size_t lb_conf_list(struct lb_plugin_ctx *ctx, const char *key, const char *const **out);
/* Every key of this plugin's section, in file order (host-owned array;
 * a key that repeats appears each time).  For families of keys such as
 * `limit.NAME`; reading them with the getters marks them known. */
size_t lb_conf_keys(struct lb_plugin_ctx *ctx, const char *const **out);
/* "bus.conf:12": where `key` (its first occurrence) is written, or the
 * section's header line when it is absent; for errors a plugin finds in a
 * value it parses itself.  Writes into buf and returns it; does not mark
 * the key as read. */
const char *lb_conf_where(struct lb_plugin_ctx *ctx, const char *key, char *buf, size_t len);
/* The same for the nth (from 0) occurrence of a key that may repeat, in
 * lb_conf_list order: the line of the one value that is wrong.  Past the
 * last occurrence, the section's header line. */
const char *lb_conf_where_nth(struct lb_plugin_ctx *ctx, const char *key, size_t nth, char *buf, size_t len);
/* Parses a duration as bus.conf writes them ("500ms", "30s", "5m", "1h",
 * a bare number = seconds).  Returns 0, or -1 if malformed. */
int lb_parse_duration_ms(const char *s, uint64_t *out_ms);
/* Resolves a path from the config relative to the directory of bus.conf.
 * Returns a host-owned string. */
const char *lb_conf_path(struct lb_plugin_ctx *ctx, const char *path);

/* Global settings from [bus]. */
const char *lb_bus_node(struct lb_plugin_ctx *ctx);
bool lb_bus_production(struct lb_plugin_ctx *ctx);
/* True under `lexbusd -t`: validate the configuration, open nothing. */
bool lb_check_only(struct lb_plugin_ctx *ctx);
const char *lb_bus_system_service(struct lb_plugin_ctx *ctx);
/* [bus] lua_dir: the folder of Lua scripts (the build tree's lua/ when
 * lexbusd runs from the build tree, else the installed defaults). */
const char *lb_bus_lua_dir(struct lb_plugin_ctx *ctx);
/* [bus] max_frame (bytes: the largest frame lb_conn_input accepts) and
 * heartbeat (a connection silent for three is evicted), for transports
 * that frame or ping themselves.  Both may change on reload: read them
 * when needed rather than once at load(). */
uint64_t lb_bus_max_frame(struct lb_plugin_ctx *ctx);
uint64_t lb_bus_heartbeat_ms(struct lb_plugin_ctx *ctx);
/* True while draining (SIGTERM): /health answers 503, say. */
bool lb_bus_draining(struct lb_plugin_ctx *ctx);
/* Milliseconds the bus has been up. */
uint64_t lb_bus_uptime_ms(struct lb_plugin_ctx *ctx);
struct event_base *lb_event_base(struct lb_plugin_ctx *ctx);
void *lb_plugin_data(struct lb_plugin_ctx *ctx);
void lb_plugin_set_data(struct lb_plugin_ctx *ctx, void *data);
const char *lb_plugin_name(struct lb_plugin_ctx *ctx);
/* Where [plugin NAME] runs in the hook order (bus.conf order, from 0), or
 * -1 if no such plugin runs.  For plugins that depend on another one
 * coming first (claims are set by [plugin tokens]): compare with your own
 * name's position.  During start-up the sections after the caller count
 * (they are loaded next, or start-up fails); after it, only loaded plugins
 * do. */
int lb_plugin_position(struct lb_plugin_ctx *ctx, const char *name);

/* ------------------------------------------------------------------ */
/* Errors: one convention for hooks and system methods                 */

/* Records a refusal in `err` (code: one of the LB_E_* strings of
 * protocol.h; message: human-readable and actionable, any length — the
 * host bounds what it sends) and returns LB_DENY, so a hook can write
 * `return lb_refuse(err, LB_E_FORBIDDEN, "...")`.  A system method
 * returns -1 after calling it. */
enum lb_verdict_kind {
    LB_PASS = 0,    /* no opinion: ask the next plugin */
    LB_ALLOW = 1,   /* authenticate: this plugin vouches for the identity */
    LB_DENY = 2     /* refuse; the reason is in the lb_err */
};
enum lb_verdict_kind lb_refuse(struct lb_err *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* RATE_LIMITED: when the sender may try again (sent as retryAfterMs). */
void lb_err_retry_after(struct lb_err *err, long long ms);

/* ------------------------------------------------------------------ */
/* Transports                                                          */

/* What a transport knows about the peer at accept time.  Strings are
 * copied by the host. */
struct lb_peer {
    uint32_t size;               /* sizeof(struct lb_peer) */
    const char *transport;       /* "unix", "tls-tcp", ... */
    const char *address;         /* printable peer address, or NULL */
    bool has_cred;               /* unix peer credentials (SO_PEERCRED) */
    pid_t pid;
    uid_t uid;
    gid_t gid;
    const char *tls_subject;     /* verified client certificate subject, or NULL */
    /* A name the transport has authenticated (mTLS CN/SAN): the connection
     * may only REGISTER under one of these names.  NULL = no binding. */
    const char *const *identity_names;
    size_t n_identity_names;
};

/* Operations the host calls on a transport connection.  None of them may
 * call back into lb_conn_* for the same connection. */
struct lb_conn_ops {
    uint32_t size;               /* sizeof(struct lb_conn_ops) */
    /* Queue one frame made of iovcnt pieces (a JSON text, without any
     * length prefix: stream transports add their own).  Must not block.
     * Return 0, or -1 if the connection is already failing. */
    int (*send)(void *tdata, const struct iovec *iov, int iovcnt);
    /* Bytes queued and not yet written (for slow-consumer detection). */
    size_t (*pending)(void *tdata);
    /* Stop (false) or resume (true) reading from the peer: back-pressure. */
    void (*set_read)(void *tdata, bool enabled);
    /* Close: flush what is queued if `flush`, then release tdata.  After
     * this call the host never touches tdata again; the transport must not
     * call lb_conn_* for this connection either. */
    void (*close)(void *tdata, bool flush);
    /* Optional.  Write out what is queued, now.  The host calls it once
     * per loop iteration for each connection that was sent something, so
     * a burst of frames leaves in one write and a lone reply leaves
     * without waiting for another poll.  Return 0, or -1 if the
     * connection failed (the host then treats it as gone). */
    int (*flush)(void *tdata);
    /* Optional.  Drop everything queued and not yet written (a slow
     * consumer is about to get its SLOW_CONSUMER error and be closed: the
     * error must not wait behind megabytes it will never read).  Stream
     * transports must only drop whole frames. */
    void (*discard)(void *tdata);
};

/* Creates a connection after the accept hook of every policy plugin said
 * yes.  Returns NULL if refused (the reason is logged and the transport
 * must close the socket itself).  The connection is owned by the host.
 * `ops` is kept by pointer (a static struct): it must stay valid as long
 * as the connection, and cover at least the fields up to `flush`. */
struct lb_conn *lb_conn_new(struct lb_plugin_ctx *ctx, const struct lb_conn_ops *ops,
                            void *tdata, const struct lb_peer *peer);

/* One complete frame (a JSON text) received on the connection.  The bytes
 * are borrowed for the call only.  Routes it at once (hooks of every
 * plugin run inside).  Returns 0, or -1 when the host has closed the
 * connection (the transport must stop reading; `close` has already been
 * called or will be called from the host). */
int lb_conn_input(struct lb_conn *conn, const char *frame, size_t len);

/* Stream transports: peel every complete 4-byte-length-prefixed frame off
 * `in` and feed it to lb_conn_input.  Enforces max_frame (zero or
 * oversized lengths get ERROR BAD_FRAME/PAYLOAD_TOO_LARGE and a close).
 * Returns 0, or -1 when the connection was closed. */
int lb_conn_read_frames(struct lb_conn *conn, struct evbuffer *in);

/* The same for a transport that reads into a buffer of its own (the unix
 * transport reads into one scratch buffer shared by all its connections):
 * routes the whole frames at the front of p[0, n) in place.  Returns the
 * bytes it used -- whole frames; what is left is a frame not yet complete,
 * or frames held back because the connection was paused (set_read false)
 * or is closing: hand them in again, in front of what is read next -- or
 * -1 when the host closed the connection (`close` has been called). */
ssize_t lb_conn_feed(struct lb_conn *conn, const char *p, size_t n);

/* Writes the 4-byte big-endian prefix plus the iov pieces to `out`:
 * helper for stream transports' send op. */
int lb_frame_write(struct evbuffer *out, const struct iovec *iov, int iovcnt);

/* The transport's output fell below its low-water mark: resume senders
 * that were paused because this connection was slow. */
void lb_conn_writable(struct lb_conn *conn);

/* The peer went away (EOF, error, handshake failure after lb_conn_new).
 * The host fails in-flight calls, unregisters, and calls ops->close(tdata,
 * false).  `why` is logged. */
void lb_conn_gone(struct lb_conn *conn, const char *why);

/* Closes the connection with an ERROR frame sent first (code is one of
 * the protocol's error code strings), flushing what is queued.  Used by
 * transports, and by policy plugins to end a session from their own event
 * callbacks (a revoked or expired credential, say).  Every plugin's
 * `closed` hook for the connection runs before this returns, and closing
 * one connection may close others (in-flight calls fail), so a plugin
 * walking its own list of connections must not keep a pointer across the
 * call.  A no-op on a connection already closed. */
void lb_conn_close_error(struct lb_conn *conn, const char *code, const char *message);

/* Wire encoding of a connection's frames.  The bus routes JSON; a
 * connection that speaks MessagePack (Bro IPC's default serializer) has
 * each frame converted at the edge, both ways.  AUTO: recognised from the
 * first frame (a JSON object starts with '{' after optional white space, a
 * MessagePack map with 0x80-0x8f, 0xde or 0xdf) and fixed from then on;
 * every frame the bus sends the connection is in that encoding (the send
 * op always gets what goes on the wire). */
enum lb_encoding { LB_ENCODING_AUTO = 0, LB_ENCODING_JSON, LB_ENCODING_MSGPACK };
/* Pins the encoding of a new connection (call right after lb_conn_new,
 * before any frame; the default is AUTO). */
void lb_conn_set_encoding(struct lb_conn *conn, enum lb_encoding enc);
/* Reads the transport's `encoding = auto | json | msgpack` key (default
 * auto).  Returns 0, 1 when absent, -1 on a bad value (reported with
 * file:line through lb_plugin_fail). */
int lb_conf_encoding(struct lb_plugin_ctx *ctx, enum lb_encoding *out);

uint64_t lb_conn_id(const struct lb_conn *conn);
/* The connection's registered service name (its first, if it holds
 * several), or NULL before REGISTER. */
const char *lb_conn_service(const struct lb_conn *conn);
const struct lb_peer *lb_conn_peer(const struct lb_conn *conn);
/* Per-connection slot for one plugin's data (freed by the plugin in its
 * `closed` hook). */
void *lb_conn_get_data(const struct lb_conn *conn, struct lb_plugin_ctx *ctx);
void lb_conn_set_data(struct lb_conn *conn, struct lb_plugin_ctx *ctx, void *data);
/* Marks how the session was authenticated ("token", "mtls", "bypass", ...):
 * shown by `lexbus services` and `stats`.  `how` must be a string literal
 * or otherwise outlive the connection. */
void lb_conn_set_auth(struct lb_conn *conn, const char *how);
/* An authenticating plugin vouches that this session may use the bus's
 * administrative methods (those registered with LB_METHOD_ADMIN, such as
 * `reload`).  In mode = production nobody else may; in development
 * everyone may. */
void lb_conn_set_admin(struct lb_conn *conn, bool admin);
bool lb_conn_is_admin(const struct lb_conn *conn);

/* Transport listeners: the host disables them when draining (SIGTERM), and
 * sets their error callback: when the process runs out of descriptors it
 * pauses every listener for 100 ms (instead of spinning on a readable
 * listening socket) and logs it.  Transports need no error callback. */
void lb_listener_add(struct lb_plugin_ctx *ctx, struct evconnlistener *l);
void lb_listener_remove(struct lb_plugin_ctx *ctx, struct evconnlistener *l);

/* ------------------------------------------------------------------ */
/* In-process connections                                              */
/*                                                                     */
/* A plugin can be a client of its own bus, as Redis scripts run        */
/* commands through a socketless client: an in-process connection has   */
/* no socket, is exempt from the heartbeat sweep and max_connections,   */
/* and everything it sends goes through the same validated routing path */
/* as a socket client's frames (identity, policies, audit).              */
/*                                                                     */
/* Deferral: frames a plugin sends are routed on the next turn of the   */
/* loop, and frames the bus sends to it are handed to on_message on a   */
/* later turn, so the router is never re-entered and a plugin is never  */
/* called from inside its own call.                                     */

struct lb_local_opts {
    uint32_t size;               /* sizeof(struct lb_local_opts) */
    const char *label;           /* shown as the transport ("local:NAME"), may be NULL */
    /* A trusted connection is authenticated by the host (auth "plugin"),
     * may hold several services (REGISTER under more names), and may send
     * frames whose `from` is any valid name: it speaks for others (a
     * federation link, say).  It counts as registered from the start: it
     * may SUBSCRIBE, CALL and EMIT without registering a service of its
     * own (then CALL, EMIT and CRUD must name `from`).  Its `token` may
     * be a JSON object: claims it vouches for (verified on another
     * node), which recipients receive as verified claims (and
     * lb_msg_claims returns).  An untrusted one is a client like any
     * other: its REGISTER goes through the authenticate hooks. */
    bool trusted;
    /* A federation link: the services it registers are other nodes'.
     * Nothing that arrives over a link is handed to another link or to a
     * route hook (loop prevention), `delivered` in ACKs does not count
     * it (`remoteNodes` does), and calls forwarded to it always carry
     * the bus's own call ids.  Implies trusted. */
    bool link;
    /* With `link`: its instances are used only when no local instance of
     * the service accepts the method (prefer local delivery). */
    bool fallback;
};

struct lb_local_ops {
    uint32_t size;               /* sizeof(struct lb_local_ops) */
    /* Every frame the bus sends to this connection (CALLs to its
     * services, EVENTs, ERRORs, ACKs, REGISTER_ACKs, and RESPONSEs that
     * no lb_call callback claimed), parsed; valid during the call. */
    void (*on_message)(void *ud, struct lb_conn *conn, const struct lb_msg *m);
    /* Optional: the host closed the connection (shutdown, an error).  The
     * connection is gone when this returns. */
    void (*on_close)(void *ud, struct lb_conn *conn, const char *why);
};

/* The connection pointer stays valid until on_close has returned (or,
 * after lb_local_close, until the plugin's next return to the loop):
 * calls on a connection the host has closed meanwhile fail (EINVAL)
 * instead of touching freed memory. */
struct lb_conn *lb_local_open(struct lb_plugin_ctx *ctx, const struct lb_local_opts *opts,
                              const struct lb_local_ops *ops, void *ud);
/* Closes it: pending lb_call callbacks are dropped without being called
 * (the plugin is the one going away), calls it was serving fail
 * SERVICE_UNAVAILABLE for their callers.  Safe from inside on_message. */
void lb_local_close(struct lb_conn *conn);
/* Queues one frame (a JSON object text, copied) as if the connection had
 * sent it.  Returns 0, or -1 (EINVAL: not an in-process connection, or
 * closed). */
int lb_local_send(struct lb_conn *conn, const char *json, size_t len);
/* Registers a service on the connection (a REGISTER frame: methods NULL
 * = every method; the answer arrives as REGISTER_ACK or ERROR through
 * on_message). */
int lb_local_register(struct lb_conn *conn, const char *service, const char *const *methods,
                      size_t n_methods);
/* Trusted connections: drops the connection's instance of `service`
 * (taking its place after the frames already sent, like a frame).  Calls
 * already forwarded to the connection stay in flight: it answers them.
 * Returns 0, or -1 (EINVAL: not a trusted in-process connection, or a
 * bad name). */
int lb_local_unregister(struct lb_conn *conn, const char *service);
/* Bytes the plugin queued (lb_local_send, lb_call, ...) that the bus has
 * not routed yet (0 for a closed connection): a plugin feeding the bus
 * from elsewhere (a Redis subscription) stops reading there while this
 * is large, so its input stays bounded when the bus cannot keep up. */
size_t lb_local_backlog(const struct lb_conn *conn);

/* A CALL from this connection.  `from` NULL: its first registered
 * service (trusted connections may name another).  params: JSON text or
 * NULL ({}).  timeout_ms 0: [bus] call_timeout.  cb gets exactly one
 * RESPONSE (success or error: SERVICE_NOT_FOUND, TIMEOUT, ...), from a
 * later loop turn, unless lb_local_close comes first.  Returns 0, or -1
 * (bad arguments). */
typedef void (*lb_reply_fn)(void *ud, const struct lb_msg *response);
int lb_call(struct lb_conn *conn, const char *from, const char *to, const char *method,
            const char *params, size_t params_len, uint64_t timeout_ms, lb_reply_fn cb, void *ud);
/* An EMIT from this connection (to NULL: broadcast).  payload: JSON text
 * or NULL (null). */
int lb_emit(struct lb_conn *conn, const char *from, const char *event, const char *to,
            const char *payload, size_t payload_len);
/* Answers a CALL this connection received in on_message: ok with `json`
 * as data, or an error (json NULL; code + message). */
int lb_respond(struct lb_conn *conn, const struct lb_msg *call, const char *json, size_t len);
int lb_respond_error(struct lb_conn *conn, const struct lb_msg *call, const char *code,
                     const char *message);

/* ------------------------------------------------------------------ */
/* Messages                                                            */

enum lb_msg_type {
    LB_MSG_UNKNOWN = 0,
    LB_MSG_REGISTER, LB_MSG_REGISTER_ACK, LB_MSG_CALL, LB_MSG_RESPONSE,
    LB_MSG_EMIT, LB_MSG_EVENT, LB_MSG_ACK, LB_MSG_SUBSCRIBE, LB_MSG_UNSUBSCRIBE,
    LB_MSG_CRUD, LB_MSG_HEARTBEAT, LB_MSG_ERROR,
    LB_MSG__COUNT
};

/* A piece of a frame.  For string fields `p` points at the characters
 * between the quotes (validated names never contain escapes), `n` is the
 * length; p == NULL when absent. */
struct lb_str { const char *p; size_t n; };

enum lb_msg_type lb_msg_type(const struct lb_msg *m);
const char *lb_msg_type_name(enum lb_msg_type t);
/* String fields by name: "id", "from", "to", "method", "event",
 * "serviceName", "op", "resource", "key", "status", "token" (the raw JSON
 * string contents; {NULL,0} when absent or not a string). */
struct lb_str lb_msg_field(const struct lb_msg *m, const char *name);
/* The raw JSON text of any top-level member the envelope knows (objects,
 * arrays, numbers, strings with their quotes, ...), or {NULL,0} when
 * absent: "params", "payload", "data", "error", "context", "query",
 * "methods", "events", "metadata", "resources", ... */
struct lb_str lb_msg_raw(const struct lb_msg *m, const char *name);
/* The whole frame as JSON text. */
struct lb_str lb_msg_frame(const struct lb_msg *m);
/* The error code of an error RESPONSE or an ERROR ({NULL,0} otherwise). */
struct lb_str lb_msg_error_code(const struct lb_msg *m);

/* Replaces the raw `token` the sender gave with verified claims (a JSON
 * object text, copied) that recipients receive as `token`. */
void lb_msg_set_claims(struct lb_msg *m, const char *json, size_t len);
/* The verified claims an earlier plugin set with lb_msg_set_claims (a
 * JSON object text), or {NULL,0}.  Plugins that act on claims must come
 * after the plugin that verifies them in bus.conf. */
struct lb_str lb_msg_claims(const struct lb_msg *m);

/* Attributes: small named flags or values plugins attach to a message for
 * later plugins (e.g. "auth.bypass" set by dev-bypass in its inspect hook
 * and honoured by tokens).  At most 8 per message; name and value are
 * copied (up to 64 / 256 bytes).  Returns 0, or -1 when full or too long. */
int lb_msg_attr_set(struct lb_msg *m, const char *name, const char *value);
/* The value, or NULL when not set. */
const char *lb_msg_attr_get(const struct lb_msg *m, const char *name);

/* Rewriting (rewrite and response hooks only; -1 with errno EPERM
 * elsewhere).  Sets a top-level member to `json` (a JSON value text, copied,
 * white space around it allowed), or removes it (json NULL).  The value is
 * validated here, by the bus's envelope scanner, as a member of the frame:
 * strict JSON, UTF-8, escapes, nesting counted from the frame's object (at
 * most 63 levels in the value): -1 with errno EINVAL otherwise, and for a
 * member name that is not 1-128 bytes of printable ASCII without '"' or
 * '\'.  Members the bus owns cannot be set (EPERM): `from`, `token`,
 * `auth`, `id`, `type` except CRUD -> "CALL", and the `to` of a RESPONSE
 * (always the caller).  At most 16 members changed (ENOSPC).  After every
 * hook has run the host writes the frame once with the changes (members
 * nothing changed are copied as they are); what the message then says
 * is checked as for a frame from a client (a CALL's `to`, `method`,
 * `context`, ...), without scanning its text again: every byte of it was
 * scanned, as the client's or here. */
int lb_msg_set(struct lb_msg *m, const char *member, const char *json, size_t len);
/* EMIT only: deliver the event to one instance of `service` as well (at
 * most 16 extra recipients).  Returns 0 or -1. */
int lb_msg_add_recipient(struct lb_msg *m, const char *service);

/* Parsing frames outside hooks (a transport translating what its send op
 * gets, a plugin reading a RESPONSE it stored): one reusable message
 * object per user.  lb_msg_parse validates `frame` with the bus's own
 * envelope scanner (strict JSON, UTF-8, bounded nesting) and keeps
 * pointers into it: the frame must outlive the use of the message.
 * Returns 0, or -1 with *err set to a static description. */
struct lb_msg *lb_msg_new(void);
void lb_msg_free(struct lb_msg *m);
int lb_msg_parse(struct lb_msg *m, const char *frame, size_t len, const char **err);
/* Validates one JSON value (any kind) with the same rules.  0 or -1. */
int lb_json_validate(const char *text, size_t len, const char **err);
/* The raw text of member `key` of a JSON object (one level; strings with
 * their quotes, as lb_msg_raw), the first if it is given twice.  `obj`
 * must be valid JSON (checked with lb_json_validate, or a value taken
 * from a parsed message).  Returns 0, or -1 when obj is not an object or
 * has no such member.  For reading messages of other systems without
 * building a tree. */
int lb_json_object_get(const char *obj, size_t len, const char *key, struct lb_str *out);

/* ------------------------------------------------------------------ */
/* JSON writing and event patterns (the bus's own helpers)             */

/* A growable buffer for building JSON texts without allocating per
 * message once it has grown. */
struct lb_jw;
struct lb_jw *lb_jw_new(void);
void lb_jw_free(struct lb_jw *w);
void lb_jw_reset(struct lb_jw *w);
void lb_jw_raw(struct lb_jw *w, const char *p, size_t n);
/* A quoted, escaped JSON string of n bytes of UTF-8. */
void lb_jw_str(struct lb_jw *w, const char *p, size_t n);
void lb_jw_int(struct lb_jw *w, long long v);
const char *lb_jw_data(const struct lb_jw *w, size_t *len);

/* Event names and patterns (doc/protocol.md, "Names"): ':'-separated
 * segments; in patterns `*` matches one segment and a final `>` one or
 * more. */
bool lb_event_name_valid(const char *p, size_t n);
bool lb_pattern_valid(const char *p, size_t n);
bool lb_service_name_valid(const char *p, size_t n);
bool lb_method_name_valid(const char *p, size_t n);
bool lb_pattern_match(const char *pat, size_t pn, const char *event, size_t en);
/* A set of patterns, each with a pointer of the caller's: matching walks
 * a trie (cost independent of the number of patterns). */
struct lb_patset;
struct lb_patset *lb_patset_new(void);
void lb_patset_free(struct lb_patset *s);
/* Returns 0, 1 when (pattern, ud) was already there, -1 on a bad pattern. */
int lb_patset_add(struct lb_patset *s, const char *pat, size_t n, void *ud);
int lb_patset_remove(struct lb_patset *s, const char *pat, size_t n, void *ud);
/* Calls fn once per (matching pattern, ud); returns the number of calls. */
size_t lb_patset_match(struct lb_patset *s, const char *event, size_t n,
                       void (*fn)(void *ud, void *arg), void *arg);

/* ------------------------------------------------------------------ */
/* Hooks, called in bus.conf order                                     */

/* The outcome of one routed message, for audit. */
struct lb_outcome {
    uint32_t size;             /* sizeof(struct lb_outcome) as the host built it */
    enum lb_msg_type type;
    const char *from;          /* sender's service name (or NULL) */
    struct lb_str to, name, id;/* target, event or method (REGISTER: the name asked for), message id */
    int delivered;             /* recipients, or -1 on error */
    const char *error_code;    /* NULL on success */
    size_t bytes;
    uint64_t duration_us;      /* CALL: from CALL to RESPONSE */
    const struct lb_msg *msg;  /* the inbound message, NULL for bus-generated outcomes */
    const char *refused_by;    /* the plugin whose hook refused, or NULL (the core) */
    const struct lb_conn *conn;/* the sender's connection, or NULL */
};

struct lb_hooks {
    uint32_t size;             /* sizeof(struct lb_hooks) */
    /* New connection, before any byte is read. */
    enum lb_verdict_kind (*accept)(void *ud, struct lb_conn *c, struct lb_err *err);
    /* Every inbound message, before any other hook: may only look and set
     * attributes (lb_msg_attr_set), so later hooks of every plugin see
     * them whatever the order of sections. */
    void (*inspect)(void *ud, struct lb_conn *c, struct lb_msg *m);
    /* REGISTER: may vouch (ALLOW), refuse (DENY) or PASS. */
    enum lb_verdict_kind (*authenticate)(void *ud, struct lb_conn *c, struct lb_msg *m,
                                         struct lb_err *err);
    /* Every inbound message after REGISTER, before rewriting and routing. */
    enum lb_verdict_kind (*message)(void *ud, struct lb_conn *c, struct lb_msg *m,
                                    struct lb_err *err);
    /* After every `message` hook said yes: may change the message with
     * lb_msg_set / lb_msg_add_recipient, or refuse.  Keep the common case
     * cheap: decide in C whether a message concerns you. */
    enum lb_verdict_kind (*rewrite)(void *ud, struct lb_conn *c, struct lb_msg *m,
                                    struct lb_err *err);
    /* A RESPONSE about to be delivered to the caller `to` (c is the
     * callee): may lb_msg_set "data", "error" or "status", or refuse (the
     * caller then gets an error RESPONSE with the hook's code).  The call
     * it answers is in the attributes "call.to" (the service called) and
     * "call.method" (lb_msg_attr_get; they cost nothing until read, and
     * do not count against the 8 attributes). */
    enum lb_verdict_kind (*response)(void *ud, struct lb_conn *c, struct lb_conn *to,
                                     struct lb_msg *m, struct lb_err *err);
    /* Each recipient of a routed message. */
    enum lb_verdict_kind (*deliver)(void *ud, struct lb_conn *from, struct lb_conn *to,
                                    struct lb_msg *m, struct lb_err *err);
    /* No local instance of `service` (a CALL, or an EMIT to a service):
     * return a link connection of this plugin to hand it to, or NULL.
     * Never asked about messages that arrived over a link. */
    struct lb_conn *(*route)(void *ud, struct lb_conn *from, const struct lb_msg *m,
                             struct lb_str service);
    /* After the outcome is known.  Must not block. */
    void (*audit)(void *ud, const struct lb_outcome *o);
    /* The connection is going away (free per-connection data here). */
    void (*closed)(void *ud, struct lb_conn *c);
};

/* Declares that this plugin establishes identities without an authenticate
 * hook (a transport that binds names from client certificates, say).  In
 * `mode = production` lexbusd refuses to start unless some plugin
 * authenticates, by hook or by this declaration. */
void lb_declare_authenticator(struct lb_plugin_ctx *ctx);

/* Registers this plugin's hooks (copied); `ud` is passed back to each.
 * Returns an id > 0 for lb_hooks_unregister, or -1 (bad size, or called
 * from inside a hook).  A plugin may register several sets; they run at
 * the plugin's place in the order.  Call it from load() or reload_done(),
 * when no hook runs: never from a hook or from what a hook calls (the
 * host walks the sets then, and a new one could move them; refused).
 * lb_hooks_unregister is safe anywhere: a set removed while hooks run is
 * skipped from then on and dropped once none runs.  The host removes a
 * plugin's hooks when it is unloaded. */
int lb_hooks_register(struct lb_plugin_ctx *ctx, const struct lb_hooks *hooks, void *ud);
void lb_hooks_unregister(struct lb_plugin_ctx *ctx, int id);

/* ------------------------------------------------------------------ */
/* Methods of the bus's own service (`lexbus`, or its configured alias).*/

/* Answer for a system method: return 0 and set *result (a new jansson
 * reference that the host takes; NULL = null), or return -1 after
 * lb_refuse(err, code, ...).  `caller` is the calling connection.
 * Runs on the loop: must not block. */
typedef int (*lb_method_fn)(void *ud, struct lb_conn *caller, json_t *params, json_t **result,
                            struct lb_err *err);
enum lb_method_flags {
    LB_METHOD_ADMIN = 1,       /* mode = production: only lb_conn_is_admin callers */
    LB_METHOD_SECRET = 2,      /* params and result never reach the audit (every system method
                                * is audited without them today: this says it must stay so) */
};
int lb_system_method_register(struct lb_plugin_ctx *ctx, const char *method, unsigned flags,
                              lb_method_fn fn, void *ud);
/* The same with JSON text both ways, for a method whose values jansson
 * would change (integers beyond 64 bits, the shortest form of a double,
 * member order): `params` is the CALL's params as written (validated; "{}"
 * when absent), and the method writes its result into `result` (checked
 * to be one JSON value before it is sent; nothing written: null). */
struct lb_jw;
typedef int (*lb_method_raw_fn)(void *ud, struct lb_conn *caller, struct lb_str params, struct lb_jw *result,
                                struct lb_err *err);
int lb_system_method_register_raw(struct lb_plugin_ctx *ctx, const char *method, unsigned flags,
                                  lb_method_raw_fn fn, void *ud);
/* Gives the bus's own service another name: CALLs to it are the bus's,
 * and no client may REGISTER it (an Exprsn bridge's `bridge`, say).  Call
 * it from load(), before any client can have registered the name (under
 * lexbusd -t as well: a bad name then fails the check).  The name goes
 * when the plugin is unloaded.  Returns 0 (also for a name the service
 * has already), or -1 after lb_plugin_fail (a bad name, "broadcast",
 * more than 16 aliases in all). */
int lb_system_alias_add(struct lb_plugin_ctx *ctx, const char *name);
/* Whether `name` names the bus's own service ([bus] system_service,
 * "lexbus", or an alias): a token plugin matches targets with it. */
bool lb_is_system_service(struct lb_plugin_ctx *ctx, const char *name, size_t n);

/* ------------------------------------------------------------------ */
/* Stats                                                               */

/* Extra fields a plugin adds to `lexbus stats` under its own name: called
 * when stats are asked; returns a new json_t reference (host takes it). */
typedef json_t *(*lb_stats_fn)(void *ud);
int lb_stats_register(struct lb_plugin_ctx *ctx, lb_stats_fn fn, void *ud);
/* A monotonically increasing counter (or a gauge) the plugin keeps at
 * *value: listed under the plugin in `lexbus stats` and exported by
 * /metrics as lexbus_plugin_<plugin>_<name> (name: [a-z0-9_], help: one
 * line).  *value must stay valid until the plugin is unloaded. */
int lb_counter_register(struct lb_plugin_ctx *ctx, const char *name, const char *help,
                        const uint64_t *value, bool gauge);

#define LB_CALL_BUCKETS 14     /* call-duration histogram upper bounds, seconds: */
/* 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 (+Inf) */
extern const double lb_call_bucket_bounds[LB_CALL_BUCKETS];

struct lb_stats_snapshot {
    uint32_t size;                          /* sizeof, set by the caller */
    uint64_t uptime_ms;
    uint64_t msgs_in[LB_MSG__COUNT];        /* received, by type ([0]: invalid) */
    uint64_t msgs_out[LB_MSG__COUNT];       /* sent, by type */
    uint64_t errors[LB_E__COUNT];           /* sent to clients, by code (lb_error_code_name) */
    uint64_t bytes_in, bytes_out;
    uint64_t conns_open, conns_accepted, conns_refused, conns_evicted, conns_register_timeouts;
    uint64_t services, subscriptions;
    uint64_t calls_in_flight, calls_started, calls_completed, calls_late, calls_timeouts;
    uint64_t events_delivered, events_unrouted, events_dropped;
    uint64_t slow_consumers, sender_pauses;
    uint64_t outbuf_total;                  /* bytes queued for all connections */
    /* Call durations (every CALL that got a RESPONSE or failed). */
    uint64_t call_buckets[LB_CALL_BUCKETS + 1];  /* cumulative counts; last = +Inf = count */
    double call_seconds_sum;
};
/* Fills up to snap->size bytes (set it first). */
void lb_stats_snapshot(struct lb_plugin_ctx *ctx, struct lb_stats_snapshot *snap);
/* Error code strings by index (0 .. LB_E__COUNT-1), and back (-1). */
const char *lb_error_code_name(int index);
int lb_error_code_index(const char *code);
/* Open connections per transport: calls fn(ud, transport, count). */
void lb_transports_each(struct lb_plugin_ctx *ctx, void (*fn)(void *ud, const char *transport,
                        uint64_t open), void *ud);
/* Plugin counters: calls fn for each registered counter. */
void lb_counters_each(struct lb_plugin_ctx *ctx,
                      void (*fn)(void *ud, const char *plugin, const char *name, const char *help,
                                 uint64_t value, bool gauge), void *ud);

struct lb_service_info {
    uint32_t size;                 /* sizeof, set by the caller */
    const char *name;
    size_t instances;              /* local instances, links' included */
    size_t remote_instances;       /* of those, held by federation links */
    uint64_t registered_ms, last_seen_ms;
    uint64_t calls_in, events_in;  /* delivered to its instances */
    /* The methods its instances on this node (not links') registered,
     * merged and sorted (host-owned, valid during the call); any_method:
     * one of them registered none, so it takes every method. */
    const char *const *methods;
    size_t n_methods;
    bool any_method;
};
/* Calls fn for each registered service (in no particular order). */
void lb_services_each(struct lb_plugin_ctx *ctx,
                      void (*fn)(void *ud, const struct lb_service_info *s), void *ud);
/* Whether a service of that name is registered here (links' included). */
bool lb_service_exists(struct lb_plugin_ctx *ctx, const char *name, size_t n);
/* The event patterns this node's own connections (not links) subscribe
 * to, each once, in no particular order; returns how many.  `pat` (n
 * bytes) is host-owned and valid during the call only.  A federation
 * plugin shares them so that other nodes send it only what someone here
 * listens to. */
size_t lb_subscriptions_each(struct lb_plugin_ctx *ctx, void (*fn)(void *ud, const char *pat, size_t n),
                             void *ud);
/* A counter the host bumps on every change of the registry (an instance
 * registered, re-registered or gone) and of the subscriptions: poll it
 * (it costs nothing) to know when lb_services_each or
 * lb_subscriptions_each would answer differently. */
uint64_t lb_routing_gen(struct lb_plugin_ctx *ctx);
/* The service that declared CRUD resource `resource` at REGISTER
 * (`resources: [...]`; the first to declare it), or NULL.  Host-owned,
 * valid until the next return to the loop. */
const char *lb_resource_owner(struct lb_plugin_ctx *ctx, const char *resource, size_t n);

/* Called on every SIGHUP and `lexbus reload`, whether or not bus.conf
 * could be re-read: reopen files here (logrotate renames them, then sends
 * SIGHUP).  One per plugin; must not block. */
int lb_reopen_register(struct lb_plugin_ctx *ctx, void (*fn)(void *ud), void *ud);

/* Called once when the bus starts draining (SIGTERM, SIGINT), after the
 * listeners were disabled, calls in flight answered SHUTTING_DOWN and
 * every connection closed (each transport's ops->close has run, with
 * lb_bus_draining already true).  lexbusd exits when nothing but its own
 * drain timer is left in the loop (at most about 2 s): end here what the
 * plugin holds besides connections (idle sockets, timers) so that the
 * exit is not held up.  One per plugin; must not block. */
int lb_drain_register(struct lb_plugin_ctx *ctx, void (*fn)(void *ud), void *ud);

/* ------------------------------------------------------------------ */
/* Key-value state, namespaced per plugin (a plugin sees only its own   */
/* keys).  Kept in memory and, when [bus] state_file is set, in that    */
/* file: loaded at start-up, written by a coalesced snapshot (at most   */
/* one per 100 ms, off the event loop), so a change is on disk within   */
/* about 100 ms, or before lb_state_sync returns.  A state backend      */
/* (lb_state_backend_register) may replicate it.  Every call is for the */
/* loop thread.                                                          */

/* Stores a copy of value (any bytes).  ttl_ms 0 = no expiry; otherwise
 * the entry expires at an absolute time, kept across restarts: expired
 * entries are never returned and are dropped on load.  key: 1 to 1024
 * bytes of UTF-8.  Returns 0, or -1 with errno: ENOSPC when the state
 * would exceed [bus] state_max (tell the caller the state is full),
 * EINVAL for a bad key, EBUSY inside lb_state_each. */
int lb_state_set(struct lb_plugin_ctx *ctx, const char *key, const char *value,
                 size_t len, uint64_t ttl_ms);
/* Returns a host-owned pointer (NUL-terminated after len bytes) valid
 * until the next state call, or NULL. */
const char *lb_state_get(struct lb_plugin_ctx *ctx, const char *key, size_t *len);
/* Returns 0, or -1 if there was no such key (or EBUSY inside lb_state_each). */
int lb_state_del(struct lb_plugin_ctx *ctx, const char *key);
/* Blocks until everything set or deleted so far is durable (written and
 * fsynced), for changes that must survive a crash before they are
 * acknowledged.  It blocks the loop for one write: use it for rare
 * actions only.  Returns 0; 1 when the state is in memory only (no
 * [bus] state_file, or lexbusd -t): nothing to wait for; -1 with errno
 * when the write failed (the change still holds in memory). */
int lb_state_sync(struct lb_plugin_ctx *ctx);
/* True when the state survives a restart ([bus] state_file is set). */
bool lb_state_durable(struct lb_plugin_ctx *ctx);
/* Calls fn for each of this plugin's unexpired keys that start with
 * prefix ("" or NULL: all), in no particular order, until fn returns
 * non-zero.  key and value are host-owned, valid during the call only.
 * fn must not call lb_state_set or lb_state_del (they fail with EBUSY):
 * collect the keys, then change them.  Returns how many fn was given. */
typedef int (*lb_state_each_fn)(void *ud, const char *key, const char *value, size_t len);
size_t lb_state_each(struct lb_plugin_ctx *ctx, const char *prefix, lb_state_each_fn fn, void *ud);

/* A state backend (one at most: the redis plugin's `state = redis`)
 * sees every change any plugin makes, after it is made in memory:
 * `ns` is the plugin's name, value NULL means deleted, expires_ms is an
 * absolute wall-clock time (0: never).  It must not block; it may be
 * called from inside any plugin's call to lb_state_set/del. */
struct lb_state_backend {
    uint32_t size;                 /* sizeof(struct lb_state_backend) */
    void (*changed)(void *ud, const char *ns, const char *key, const char *value, size_t len,
                    uint64_t expires_ms);
};
int lb_state_backend_register(struct lb_plugin_ctx *ctx, const struct lb_state_backend *b, void *ud);
/* Applies a change that came from elsewhere (another node) to the
 * in-memory state of plugin `ns`, without calling the backend back.
 * value NULL deletes.  Returns 0 or -1 (errno as lb_state_set). */
int lb_state_apply(struct lb_plugin_ctx *ctx, const char *ns, const char *key, const char *value,
                   size_t len, uint64_t expires_ms);

/* Milliseconds since the epoch (cached per loop iteration). */
uint64_t lb_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif /* LEXBUS_PLUGIN_H */
