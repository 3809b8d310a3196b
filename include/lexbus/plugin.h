/*
 * lexbus plugin ABI.
 *
 * A plugin is a shared object that exports one symbol, `lexbus_plugin`, a
 * `struct lb_plugin` whose `abi` field equals LB_PLUGIN_ABI.  lexbusd
 * dlopen()s it with RTLD_NOW, checks the ABI number and calls load() once
 * with a context for its `[plugin NAME]` section of bus.conf.
 *
 * Everything a plugin may call is declared below and exported by lexbusd.
 * The event loop is single-threaded: every callback runs on the loop thread
 * and must never block.
 *
 * Ownership: unless a comment says otherwise, pointers passed to a plugin
 * callback are borrowed for the duration of that callback only; strings
 * returned by the host are owned by the host and stay valid until the
 * plugin is unloaded (config values, even across reloads) or until the
 * callback returns (message data).
 */
#ifndef LEXBUS_PLUGIN_H
#define LEXBUS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on every incompatible change of this header. */
#define LB_PLUGIN_ABI 1

struct event_base;
struct evbuffer;
struct lb_plugin_ctx;   /* one per loaded plugin, owned by the host */
struct lb_conn;         /* one per client connection, owned by the host */
struct lb_msg;          /* one inbound message, valid during a hook call */

struct lb_plugin {
    int abi;                /* LB_PLUGIN_ABI */
    const char *name;       /* must equal the section name: [plugin NAME] */
    const char *version;
    /* Read config, open listeners, register hooks.  Return 0, or -1 after
     * lb_plugin_fail() has recorded why (start-up stops with that cause). */
    int (*load)(struct lb_plugin_ctx *ctx);
    /* Close everything load() opened.  Optional. */
    void (*unload)(struct lb_plugin_ctx *ctx);
    /* SIGHUP: the section was re-read (lb_conf_* return the new values).
     * Return 0, or -1 after lb_plugin_fail() to keep the old settings. */
    int (*reload)(struct lb_plugin_ctx *ctx);
};

/* ------------------------------------------------------------------ */
/* Logging and failure                                                 */

enum lb_log_level { LB_LOG_DEBUG, LB_LOG_INFO, LB_LOG_WARN, LB_LOG_ERROR };

/* Logs "<time> <level> [<plugin name>] message" to the daemon's log. */
void lb_log(struct lb_plugin_ctx *ctx, enum lb_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records why load()/reload() failed; the host prints it with the plugin
 * name and the bus.conf file and line of the section. */
void lb_plugin_fail(struct lb_plugin_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------------ */
/* Configuration of this plugin's own [plugin NAME] section.           */
/* Every key a plugin reads is marked as known; after load() the host  */
/* rejects any key in the section that was never read (file:line).     */
/* Getters return 0 on success, 1 when the key is absent (the default  */
/* has been stored), -1 on a bad value (already reported with          */
/* file:line through lb_plugin_fail).                                   */

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
struct event_base *lb_event_base(struct lb_plugin_ctx *ctx);
void *lb_plugin_data(struct lb_plugin_ctx *ctx);
void lb_plugin_set_data(struct lb_plugin_ctx *ctx, void *data);
/* Where [plugin NAME] runs in the hook order (bus.conf order, from 0), or
 * -1 if no such plugin runs.  For plugins that depend on another one
 * coming first (claims are set by [plugin tokens]): compare with your own
 * name's position.  During start-up the sections after the caller count
 * (they are loaded next, or start-up fails); after it, only loaded plugins
 * do (a section added by a reload is not loaded until restart).
 * Added without an ABI bump: adding a function is compatible (plugins
 * built against the older header never call it); a plugin that calls it
 * needs a lexbusd that has it (dlopen reports the missing symbol). */
int lb_plugin_position(struct lb_plugin_ctx *ctx, const char *name);

/* ------------------------------------------------------------------ */
/* Transports                                                          */

/* What a transport knows about the peer at accept time.  Strings are
 * copied by the host. */
struct lb_peer {
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

/* Operations the host calls on a transport connection. */
struct lb_conn_ops {
    /* Queue one frame made of iovcnt pieces (the JSON body, without any
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
     * without waiting for another poll.  Transports without it schedule
     * their own writes.  Return 0, or -1 if the connection failed (the
     * host then treats it as gone). */
    int (*flush)(void *tdata);
};

/* Creates a connection after the accept hook of every policy plugin said
 * yes.  Returns NULL if refused (the reason is logged and the transport
 * must close the socket itself).  The connection is owned by the host. */
struct lb_conn *lb_conn_new(struct lb_plugin_ctx *ctx, const struct lb_conn_ops *ops,
                            void *tdata, const struct lb_peer *peer);

/* One complete frame (a JSON body) received on the connection.  The bytes
 * are borrowed for the call only.  Returns 0, or -1 when the host has
 * closed the connection (the transport must stop reading; `close` has
 * already been called or will be called from the host). */
int lb_conn_input(struct lb_conn *conn, const char *frame, size_t len);

/* Stream transports: peel every complete 4-byte-length-prefixed frame off
 * `in` and feed it to lb_conn_input.  Enforces max_frame (zero or
 * oversized lengths get ERROR BAD_FRAME/PAYLOAD_TOO_LARGE and a close).
 * Returns 0, or -1 when the connection was closed. */
int lb_conn_read_frames(struct lb_conn *conn, struct evbuffer *in);

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

uint64_t lb_conn_id(const struct lb_conn *conn);
/* Registered service name, or NULL before REGISTER. */
const char *lb_conn_service(const struct lb_conn *conn);
const struct lb_peer *lb_conn_peer(const struct lb_conn *conn);
/* Per-connection slot for one policy plugin's data (freed by the plugin
 * in its `closed` hook).  */
void *lb_conn_get_data(const struct lb_conn *conn, struct lb_plugin_ctx *ctx);
void lb_conn_set_data(struct lb_conn *conn, struct lb_plugin_ctx *ctx, void *data);
/* Marks how the session was authenticated ("token", "mtls", "bypass", ...):
 * shown by `lexbus services` and `stats`. */
void lb_conn_set_auth(struct lb_conn *conn, const char *how);

/* Wire encoding of a connection's frames.  The bus routes JSON; a
 * connection that speaks MessagePack (Bro IPC's default serializer) has
 * each frame converted at the edge, both ways.  AUTO: recognised from the
 * first frame (a JSON object starts with '{' after optional white space, a
 * MessagePack map with 0x80-0x8f, 0xde or 0xdf) and fixed from then on;
 * every frame the bus sends the connection is in that encoding.  Added
 * without an ABI bump (see lb_plugin_position). */
enum lb_encoding { LB_ENCODING_AUTO = 0, LB_ENCODING_JSON, LB_ENCODING_MSGPACK };
/* Pins the encoding of a new connection (call right after lb_conn_new,
 * before any frame; the default is AUTO). */
void lb_conn_set_encoding(struct lb_conn *conn, enum lb_encoding enc);
/* Reads the transport's `encoding = auto | json | msgpack` key (default
 * auto).  Returns 0, 1 when absent, -1 on a bad value (reported with
 * file:line through lb_plugin_fail). */
int lb_conf_encoding(struct lb_plugin_ctx *ctx, enum lb_encoding *out);

/* Transport listeners: the host disables them when draining (SIGTERM), and
 * sets their error callback: when the process runs out of descriptors it
 * pauses every listener for 100 ms (instead of spinning on a readable
 * listening socket) and logs it.  Transports need no error callback. */
struct evconnlistener;
void lb_listener_add(struct lb_plugin_ctx *ctx, struct evconnlistener *l);
void lb_listener_remove(struct lb_plugin_ctx *ctx, struct evconnlistener *l);

/* ------------------------------------------------------------------ */
/* Messages, as seen by policy hooks                                   */

enum lb_msg_type {
    LB_MSG_UNKNOWN = 0,
    LB_MSG_REGISTER, LB_MSG_REGISTER_ACK, LB_MSG_CALL, LB_MSG_RESPONSE,
    LB_MSG_EMIT, LB_MSG_EVENT, LB_MSG_ACK, LB_MSG_SUBSCRIBE, LB_MSG_UNSUBSCRIBE,
    LB_MSG_CRUD, LB_MSG_HEARTBEAT, LB_MSG_ERROR,
    LB_MSG__COUNT
};

/* A piece of the inbound frame.  For string fields `p` points at the
 * decoded characters when the string has no escapes (always the case for
 * names, which are validated), `n` is the length; p == NULL when absent. */
struct lb_str { const char *p; size_t n; };

enum lb_msg_type lb_msg_type(const struct lb_msg *m);
const char *lb_msg_type_name(enum lb_msg_type t);
/* String fields by name: "id", "from", "to", "method", "event",
 * "serviceName", "op", "resource", "token" (raw JSON string contents). */
struct lb_str lb_msg_field(const struct lb_msg *m, const char *name);
/* The raw JSON text of any top-level member (objects, arrays, numbers, ...),
 * or {NULL,0} when absent. */
struct lb_str lb_msg_raw(const struct lb_msg *m, const char *name);
/* The whole frame. */
struct lb_str lb_msg_frame(const struct lb_msg *m);

/* Replaces the raw `token` the sender gave with verified claims (a JSON
 * object text, copied) that recipients receive as `token`. */
void lb_msg_set_claims(struct lb_msg *m, const char *json, size_t len);
/* The verified claims an earlier plugin set with lb_msg_set_claims (a
 * JSON object text), or {NULL,0}.  Plugins that act on claims must come
 * after the plugin that verifies them in bus.conf. */
struct lb_str lb_msg_claims(const struct lb_msg *m);

/* True when `m` is a CALL or EMIT marked as an IPC request
 * (`"ipcRequest": true`, lexbus's form of Exprsn's `x-ipc-request: true`
 * header) and a plugin enabled the development bypass with
 * lb_ipc_bypass_enable.  Never true in mode = production.  Plugins that
 * check tokens skip their checks for such messages. */
bool lb_msg_ipc_bypass(const struct lb_msg *m);
/* Development only (dev-bypass): honour the IPC request marker from now on.
 * Returns -1 in mode = production. */
int lb_ipc_bypass_enable(struct lb_plugin_ctx *ctx);

/* ------------------------------------------------------------------ */
/* Policy hooks, called in bus.conf order.                              */

enum lb_verdict_kind {
    LB_PASS = 0,    /* no opinion: ask the next plugin */
    LB_ALLOW = 1,   /* authenticate: this plugin vouches for the identity */
    LB_DENY = 2     /* refuse with code + message */
};

struct lb_verdict {
    enum lb_verdict_kind kind;
    const char *code;          /* error code string, e.g. "UNAUTHENTICATED" */
    char message[256];         /* human-readable, actionable */
    long long retry_after_ms;  /* RATE_LIMITED only, else -1 */
};

/* Fills a DENY verdict. */
void lb_deny(struct lb_verdict *v, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The outcome of one routed message, for audit. */
struct lb_outcome {
    enum lb_msg_type type;
    const char *from;          /* sender's service name (or NULL) */
    struct lb_str to, name, id;/* target, event or method, message id */
    int delivered;             /* recipients, or -1 on error */
    const char *error_code;    /* NULL on success */
    size_t bytes;
    uint64_t duration_us;      /* CALL: from CALL to RESPONSE */
    const struct lb_msg *msg;  /* the inbound message, NULL for bus-generated outcomes */
};

struct lb_hooks {
    /* New connection, before any byte is read. */
    enum lb_verdict_kind (*accept)(void *ud, struct lb_conn *c, struct lb_verdict *v);
    /* REGISTER: may vouch (ALLOW), refuse (DENY) or PASS. */
    enum lb_verdict_kind (*authenticate)(void *ud, struct lb_conn *c, struct lb_msg *m,
                                         struct lb_verdict *v);
    /* Every inbound message after REGISTER, before routing. */
    enum lb_verdict_kind (*message)(void *ud, struct lb_conn *c, struct lb_msg *m,
                                    struct lb_verdict *v);
    /* Each recipient of a routed message. */
    enum lb_verdict_kind (*deliver)(void *ud, struct lb_conn *from, struct lb_conn *to,
                                    struct lb_msg *m, struct lb_verdict *v);
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

/* Registers this plugin's hooks (copied); `ud` is passed back to each. */
int lb_hooks_register(struct lb_plugin_ctx *ctx, const struct lb_hooks *hooks, void *ud);

/* ------------------------------------------------------------------ */
/* Methods of the bus's own service (`lexbus`, or its configured alias).*/

/* Answer for a system method: return 0 and set *result (a new jansson
 * json_t reference that the host takes), or return -1 and fill err_code
 * / err_msg (err_msg has room for 256 bytes). */
typedef struct json_t json_t;
typedef int (*lb_method_fn)(void *ud, struct lb_conn *caller, json_t *params,
                            json_t **result, const char **err_code, char *err_msg);
int lb_system_method_register(struct lb_plugin_ctx *ctx, const char *method,
                              lb_method_fn fn, void *ud);

/* Extra fields a plugin adds to `lexbus stats` under its own name: called
 * when stats are asked; returns a new json_t reference (host takes it). */
typedef json_t *(*lb_stats_fn)(void *ud);
int lb_stats_register(struct lb_plugin_ctx *ctx, lb_stats_fn fn, void *ud);

/* Called on every SIGHUP and `lexbus reload`, whether or not bus.conf
 * could be re-read: reopen files here (logrotate renames them, then sends
 * SIGHUP).  One per plugin; must not block. */
int lb_reopen_register(struct lb_plugin_ctx *ctx, void (*fn)(void *ud), void *ud);

/* ------------------------------------------------------------------ */
/* Key-value state, namespaced per plugin (a plugin sees only its own   */
/* keys).  Kept in memory and, when [bus] state_file is set, in that    */
/* file: loaded at start-up, written by a coalesced snapshot (at most   */
/* one per 100 ms, off the event loop), so a change is on disk within   */
/* about 100 ms, or before lb_state_sync returns.  The redis plugin may */
/* later back the same API.  Every call is for the loop thread.         */

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

/* The functions below were added without an ABI bump: adding functions
 * is compatible (see lb_plugin_position); a plugin that calls them needs
 * a lexbusd that has them. */

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

/* Milliseconds since the epoch (cached per loop iteration). */
uint64_t lb_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif /* LEXBUS_PLUGIN_H */
