/*
 * The websocket plugin's internals, shared by its source files:
 *   websocket.c  plugin descriptor, [plugin websocket] keys, listeners,
 *                sockets (struct hc), HTTP dispatch, /lexbus (RFC 6455)
 *   session.c    Engine.IO v4 sessions over WebSocket and long-polling
 *   bridge.c     Socket.IO namespaces as lexbus connections (the Exprsn
 *                Bridge vocabulary: ipc:emit, ipc:call, ...)
 *   httpapi.c    /health, /api/ipc/stats, /metrics, the demo page
 *   tls.c        TLS on the listener's sockets (OpenSSL on the socket itself)
 *   slots.c      handle-addressed tables (session ids, request and ack ids)
 *
 * Everything runs on the loop thread.  Lifetimes: a struct hc (one socket)
 * is freed by hc_free, deferred while it is `busy` (inside its own read
 * processing); a struct eio (one Engine.IO session) likewise while busy;
 * a struct sns (one Socket.IO namespace = one lb_conn) is freed when the
 * host closes its lb_conn (op_close) and never touched after.
 */
#ifndef WS_WSP_H
#define WS_WSP_H
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/ssl.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>
#include "http.h"
#include "wsframe.h"
#include "slots.h"
#include "../common/net.h"
#include "../common/stream.h"
#include "../common/throttle.h"
#include "../common/tls.h"

#define WSP_MAX_LISTENERS 16
#define WSP_MAX_ORIGINS 32
#define WSP_MAX_SUBSCRIBE 32
#define WSP_SID_LEN 20           /* 15 random characters and 5 for the session's slot */
#define WSP_SID_RANDOM 15

struct hc;
struct eio;
struct sns;

struct name_map { char *from, *to; };

/* [plugin websocket] as read at load or reload. */
struct wsp_conf {
    bool lexbus, socketio, health, stats, metrics, demo;
    const char *path;                /* /lexbus */
    const char *sio_path;            /* /socket.io/ (trailing slash optional) */
    size_t sio_path_len;             /* without the trailing slash */
    uint64_t max_head, max_payload, max_message;   /* max_message 0: [bus] max_frame */
    uint64_t header_timeout_ms, handshake_timeout_ms;
    uint64_t ping_interval_ms, ping_timeout_ms, upgrade_timeout_ms;
    long long max_connections, max_pending, max_namespaces, max_handshaking, max_per_addr;
    unsigned max_pings_per_s;
    char *origins[WSP_MAX_ORIGINS];  /* owned */
    size_t n_origins;
    bool origins_any, same_origin;
    const char *prefix;              /* /ipc/<name> registers as <prefix><name> */
    struct name_map *names;          /* names.<name> = <service> (owned) */
    size_t n_names;
    char *subscribe_json;            /* default subscriptions, a JSON array (owned) */
    char *demo_page;                 /* the page served at GET / (owned) */
    size_t demo_len;
    bool tls;                        /* cert and key given */
    struct tls_keys keys;            /* when tls */
};

/* Counters this plugin keeps itself (lexbus stats, and /metrics as
 * lexbus_plugin_websocket_<name> through lb_counter_register). */
struct wsp_counters {
    uint64_t accepted, over_limit, http_requests, http_errors, header_timeouts,
        ws_lexbus, ws_errors, eio_sessions, eio_polling, eio_upgrades, eio_timeouts,
        sio_joins, sio_refused, sio_bad_packets, binary_refused, ping_floods,
        tls_handshakes, tls_refused, over_handshaking, reloads;
};

struct wsp {
    struct lb_plugin_ctx *ctx;
    struct wsp_conf c;
    struct wsp_conf *staged;         /* reload step 1, until reload_done */
    SSL_CTX *ssl, *staged_ssl;       /* TLS listeners: for new sockets */
    bool authenticator;              /* require_client_cert at start-up (fixed) */
    char cert_subject[256], cert_not_after[32];
    struct evconnlistener *listeners[WSP_MAX_LISTENERS];
    char *listen[WSP_MAX_LISTENERS];
    size_t n_listeners;
    struct hc *conns;                /* every socket */
    uint64_t n_conns, n_handshaking; /* counters' gauges: uint64_t */
    struct net_addr_table handshaking_by_addr;
    struct slots sessions;           /* struct eio, by the slot its sid names */
    uint64_t n_sessions, n_namespaces, n_lexbus;
    bool draining;                   /* lb_drain_register told us */
    struct lb_jw *scratch;           /* packets to clients */
    struct lb_jw *reqbuf;            /* frames handed to the bus (kept apart: the bus
                                      * answers while it reads them) */
    struct lb_jw *catbuf;            /* a frame the bus gave in pieces */
    struct lb_jw *errbuf;            /* an error object made here */
    struct lb_msg *msg;              /* frames from the bus, parsed */
    struct wsp_counters n;
    struct throttle refusals;        /* refused requests and sockets: log lines a second */
};

/* JSON pieces through the host's writer (lb_jw). */
#define JW_LIT(w, s) lb_jw_raw((w), (s), sizeof(s) - 1)
#define JW_CSTR(w, s) lb_jw_str((w), (s), strlen(s))

/* Allocation failure ends lexbusd, as it does in the core: a plugin half
 * way through building a session has no better way out. */
void *wsp_alloc(size_t n);               /* zeroed */
void *wsp_realloc(void *p, size_t n);
char *wsp_strndup(const char *s, size_t n);

/* ---- settings (wsconf.c) -------------------------------------------- */

/* The largest /lexbus message: max_message, at most [bus] max_frame. */
uint64_t wsp_max_message(const struct wsp *wp);

/* ---- sockets (websocket.c) ---------------------------------------- */

struct evconnlistener;
struct sockaddr;
void wsp_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg);
/* SIGTERM: idle sockets and sessions end now (lb_drain_register). */
void wsp_drain(struct wsp *wp);
/* Unload: frees every socket. */
void wsp_free_sockets(struct wsp *wp);

enum hc_state { HC_HTTP, HC_HELD, HC_WS, HC_CLOSING };
enum hc_kind { HK_NONE, HK_LEXBUS, HK_EIO };

#define P_HOST 1u       /* back-pressure from the bus */
#define P_HELD 2u       /* an HTTP request is held (long-poll) */

struct hc {
    struct wsp *wp;
    evutil_socket_t fd;
    struct event rev, wev, tmo;
    struct evbuffer *in, *out;
    enum hc_state st;
    enum hc_kind kind;
    struct http_req *req;
    struct ws_reader wr;             /* HC_WS */
    struct stream_marks marks;       /* HC_WS: frame boundaries in `out`, for discard */
    struct lb_conn *conn;            /* HK_LEXBUS */
    struct eio *sess;                /* HK_EIO, or the session of a held request */
    SSL *ssl;                        /* TLS listeners (tls.c) */
    struct net_addr_count *ac;       /* while the TLS handshake runs: its address's count */
    bool handshaking;                /* TLS handshake not done yet */
    bool read_wants_write, write_wants_read;   /* TLS: an SSL call waits for the other direction */
    bool peer_gone;                  /* EOF or error: no close_notify */
    bool lingering;                  /* HC_CLOSING, all sent: reading until the peer closes */
    unsigned pause;
    bool rev_on, wev_on;
    bool keep_alive;                 /* the response being written lets the socket stay */
    bool ws_closing;                 /* our close frame is queued: input ignored */
    bool ping_out;                   /* /lexbus: a server ping awaits its pong */
    int busy;
    bool dead;
    unsigned pings;                  /* client pings in the current second */
    uint64_t ping_window_ms;
    char cert_subject[256];          /* verified client certificate, or "" */
    const char **ids;                /* its names (identity_names), owned; NULL when none */
    size_t n_ids;
    char addr[64];
    struct hc *next, **pprev;
};

void hc_write_out(struct hc *hc);
void hc_close(struct hc *hc, bool flush);
void hc_set_pause(struct hc *hc, unsigned flag, bool on);
/* An HTTP response; the socket stays for the next request when keep_alive. */
void hc_respond(struct hc *hc, int status, const char *ctype, const char *extra,
                const char *body, size_t len);
/* A JSON error body {"code":N,"message":...} (Engine.IO's form). */
void hc_respond_eio_error(struct hc *hc, int status, int code, const char *message);
/* Checks the upgrade headers and answers 101: returns 0, or -1 after
 * answering the refusal.  `lb_conn` creation happens before the call. */
int hc_ws_accept(struct hc *hc, const char *subprotocol);
/* Validates a WebSocket upgrade request without answering (0, or -1 with
 * the status and reason to answer). */
int hc_ws_check(struct hc *hc, int *status, const char **why, const char **extra);
/* Ends a WebSocket with a close frame: flushes, then closes the socket. */
void hc_ws_fail(struct hc *hc, unsigned code, const char *why);
/* Sends one text frame (Engine.IO packet) now. */
int hc_ws_text(struct hc *hc, const char *p, size_t n);
bool wsp_origin_ok(struct wsp *wp, const struct http_req *r);
/* CORS headers for an allowed Origin (empty when there is none). */
void wsp_cors_headers(const struct http_req *r, char *out, size_t len);
/* What the bus is told about the socket's peer (address, client
 * certificate); borrowed from hc. */
void wsp_peer(const struct hc *hc, struct lb_peer *peer, const char *transport);
void wsp_log_refusal(struct wsp *wp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* n random [A-Za-z0-9_-] characters and a NUL. */
void wsp_random_chars(char *out, size_t n);
/* The interval of server pings: ping_interval, or [bus] heartbeat when
 * that is shorter (pongs count as the connection's heartbeats). */
uint64_t wsp_ping_period(const struct wsp *wp);
/* Arms a one-shot timer. */
void wsp_arm(struct event *ev, uint64_t ms);

/* ---- TLS on sockets (tls.c) ----------------------------------------- */

/* Starts the server handshake on an accepted socket: 0, or -1. */
int tls_begin(struct hc *hc, SSL_CTX *ctx);
/* Drives the handshake: 1 done, 0 waiting (events armed), -1 failed
 * (logged; the caller frees hc). */
int tls_handshake(struct hc *hc);
/* Reads into hc->in: bytes read, 0 at EOF, -1 error, -2 nothing ready. */
ssize_t tls_read(struct hc *hc, size_t max);
/* Writes from hc->out: 0 (what could not be written stays queued;
 * hc->wev or hc->rev is needed), -1 error. */
int tls_write(struct hc *hc);
/* A close_notify when everything queued went out (never waits). */
void tls_end(struct hc *hc);
void tls_free(struct hc *hc);
/* A copy of n names in one allocation (free() it), or NULL when n is 0. */
const char **wsp_names_dup(const char *const *names, size_t n);

/* ---- Engine.IO sessions (session.c) -------------------------------- */

/* The Socket.IO path: an Engine.IO handshake, poll, post or upgrade. */
void eio_http(struct hc *hc, struct http_req *r);
/* A WebSocket message on a socket that carries (or probes) a session. */
int eio_ws_message(struct hc *hc, enum ws_op op, const uint8_t *p, size_t n);
/* The socket of a session went away (EOF, error, closed). */
void eio_socket_gone(struct hc *hc, const char *why);
/* Resumes a session paused by back-pressure (a held POST, the WebSocket). */
void eio_pause(struct eio *s, bool on);
/* Queues one Engine.IO text packet (type digit included). */
int eio_send(struct eio *s, const char *p, size_t n);
size_t eio_pending(const struct eio *s);
int eio_flush(struct eio *s);
/* Ends the session: every namespace leaves the bus. */
void eio_close(struct eio *s, const char *why);
void eio_close_all(struct wsp *wp, const char *why);
/* From a host callback (op_close, op_send): the host may be walking its
 * connections, so the close waits for the session's `later` event. */
void eio_close_from_host(struct eio *s, unsigned code, const char *why);
/* Runs the session's deferred work (flush, held POST, bridge_later) soon. */
void eio_later(struct eio *s);
/* A refused binary packet: drop its attachments as they come. */
void eio_skip_binary(struct eio *s, unsigned n);
const char *eio_sid(const struct eio *s);
const char *eio_addr(const struct eio *s);
/* The peer as the session's first socket showed it (address, client
 * certificate), for its namespaces' lb_conn_new. */
void eio_peer(const struct eio *s, struct lb_peer *peer);
struct lb_plugin_ctx *eio_ctx(const struct eio *s);
struct wsp *eio_wsp(const struct eio *s);
/* Namespaces of the session, for the bridge. */
struct sns *eio_find_ns(struct eio *s, const char *nsp, size_t n);
int eio_add_ns(struct eio *s, struct sns *ns);
void eio_remove_ns(struct eio *s, struct sns *ns);
size_t eio_ns_count(const struct eio *s);
/* Every namespace of every session (for the endpoints' figures). */
void eio_each_ns(struct wsp *wp, void (*fn)(void *ud, struct sns *ns), void *ud);
struct sns *eio_ns_at(const struct eio *s, size_t i);

/* ---- Socket.IO namespaces as lexbus connections (bridge.c) --------- */

struct sio_packet;
/* A Socket.IO packet of the session (after Engine.IO's '4').  Returns 0,
 * or -1 when the session must close (*why says why). */
int sio_packet_in(struct eio *s, const char *p, size_t n, const char **why);
/* An Engine.IO pong: a sign of life for every namespace's connection. */
void sns_heartbeat(struct sns *ns);
/* The session ends: the namespace leaves the bus (no packet is sent). */
void sns_detach(struct sns *ns, const char *why);
/* Deferred work of the session's namespaces (refusals, calls refused for
 * max_pending): run from the session's `later` event. */
void bridge_later(struct eio *s);
const char *sns_name(const struct sns *ns, size_t *n);
/* The namespace's lb_conn (NULL while it is being torn down). */
struct lb_conn *sns_conn(const struct sns *ns);

/* ---- HTTP endpoints (httpapi.c) ------------------------------------ */

void api_health(struct hc *hc, struct http_req *r);
void api_stats(struct hc *hc, struct http_req *r);
void api_metrics(struct hc *hc, struct http_req *r);
void api_demo(struct hc *hc, struct http_req *r);
#endif
