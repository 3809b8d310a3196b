/*
 * The websocket plugin's state, shared by its parts (struct wsp, one
 * socket's struct hc), and the helpers of wsp.c.
 *
 * The parts are layers: each file calls only the files below it.
 *
 *   websocket.c  the plugin: descriptor, load, the two-step reload, the
 *                drain, listeners, counters and stats; routes each HTTP
 *                request to the part that serves its path
 *   httpapi.c    /health, /api/ipc/stats, /metrics, the demo page
 *   lexbus.c     /lexbus (RFC 6455): one text message = one lexbus message
 *   bridge.c     Socket.IO namespaces as lexbus connections (the Exprsn
 *                Bridge vocabulary: ipc:emit, ipc:call, ...)
 *   session.c    Engine.IO v4 sessions over WebSocket and long-polling
 *   wsconf.c     [plugin websocket] keys, read the same at load and reload
 *   sock.c       sockets (struct hc): reading, writing, HTTP responses,
 *                origins, the WebSocket a request may become, closing
 *   tls.c        TLS on the listener's sockets (OpenSSL on the socket itself)
 *   wsp.c        allocation, random ids, throttled refusals, timers
 *   http.c, wsframe.c, eio.c, slots.c, prom.c: grammars and tables, no state
 *
 * Nothing calls upwards.  A socket tells the part that took it over (the
 * /lexbus transport or an Engine.IO session) what happens to it through
 * hc->ops (sock.h); a complete request goes to wp->route; a session tells
 * the Socket.IO layer through wp->sio (session.h).  websocket.c sets
 * wp->route and wp->sio, the parts set hc->ops.
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
struct hc_ops;                   /* sock.h */
struct eio;
struct eio_ops;                  /* session.h */
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
    /* A complete HTTP request, for the part that serves its path. */
    void (*route)(struct hc *hc, struct http_req *r);
    const struct eio_ops *sio;       /* what sessions carry: Socket.IO (bridge.c) */
};

/* JSON pieces through the host's writer (lb_jw). */
#define JW_LIT(w, s) lb_jw_raw((w), (s), sizeof(s) - 1)
#define JW_CSTR(w, s) lb_jw_str((w), (s), strlen(s))

/* A frame that tells the bus a connection is alive (pongs count). */
#define HEARTBEAT_FRAME "{\"type\":\"HEARTBEAT\"}"

/* ---- wsp.c ------------------------------------------------------------ */

/* Allocation failure ends lexbusd, as it does in the core: a plugin half
 * way through building a session has no better way out. */
void *wsp_alloc(size_t n);               /* zeroed */
void *wsp_realloc(void *p, size_t n);
char *wsp_strndup(const char *s, size_t n);
/* A copy of n names in one allocation (free() it), or NULL when n is 0. */
const char **wsp_names_dup(const char *const *names, size_t n);
/* n random [A-Za-z0-9_-] characters and a NUL. */
void wsp_random_chars(char *out, size_t n);
/* Refusals a client can provoke at will: logged, at most so many a
 * second (the stats count them all). */
void wsp_log_refusal(struct wsp *wp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* What the bus is told about a peer (lb_conn_new): its address, the
 * client certificate's subject ("" for none) and the names it binds;
 * every string borrowed. */
void wsp_peer(struct lb_peer *peer, const char *transport, const char *address, const char *cert_subject,
              const char *const *ids, size_t n_ids);
/* Arms a one-shot timer. */
void wsp_arm(struct event *ev, uint64_t ms);
/* The interval of server pings: ping_interval, or [bus] heartbeat when
 * that is shorter (pongs count as the connection's heartbeats). */
uint64_t wsp_ping_period(const struct wsp *wp);
/* The largest /lexbus message: max_message, at most [bus] max_frame. */
uint64_t wsp_max_message(const struct wsp *wp);

/* ---- one socket ------------------------------------------------------- */

enum hc_state { HC_HTTP, HC_HELD, HC_WS, HC_CLOSING };

#define P_HOST 1u       /* back-pressure from the bus */
#define P_HELD 2u       /* an HTTP request is held (long-poll) */

struct hc {
    struct wsp *wp;
    evutil_socket_t fd;
    struct event rev, wev, tmo;
    struct evbuffer *in, *out;
    enum hc_state st;
    const struct hc_ops *ops;        /* the part that took the socket over, or NULL */
    struct http_req *req;
    struct ws_reader wr;             /* HC_WS */
    struct stream_marks marks;       /* HC_WS: frame boundaries in `out`, for discard */
    struct lb_conn *conn;            /* /lexbus: its connection on the bus (lexbus.c) */
    struct eio *sess;                /* an Engine.IO session's socket, or a request it holds */
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

#endif
