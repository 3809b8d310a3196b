/*
 * Engine.IO v4 sessions (session.c), above the sockets (sock.h) and
 * below what they carry: Socket.IO (bridge.c), which a session tells
 * what happens through the eio_ops in wp->sio.
 */
#ifndef WS_SESSION_H
#define WS_SESSION_H
#include "wsp.h"

/* What a session tells the layer it carries.  Called from the session's
 * own event and socket callbacks. */
struct eio_ops {
    /* A Socket.IO packet (after Engine.IO's '4'): 0, or -1 when the
     * session must close (*why says why). */
    int (*packet)(struct eio *s, const char *p, size_t n, const char **why);
    /* A pong: a sign of life for everything the session carries. */
    void (*pong)(struct eio *s);
    /* The session ends: everything it carries leaves the bus (no packet
     * can be sent any more). */
    void (*closing)(struct eio *s, const char *why);
    /* The session's deferred work runs (eio_later asked for it). */
    void (*later)(struct eio *s);
};

/* The Socket.IO path: an Engine.IO handshake, poll, post or upgrade. */
void eio_http(struct hc *hc, struct http_req *r);
/* Unload or the drain: every session ends. */
void eio_close_all(struct wsp *wp, const char *why);

/* For the layer above: */
/* Back-pressure: pause (on) or resume the session's input. */
void eio_pause(struct eio *s, bool on);
/* Queues one Engine.IO text packet (type digit included). */
int eio_send(struct eio *s, const char *p, size_t n);
size_t eio_pending(const struct eio *s);
int eio_flush(struct eio *s);
/* From a host callback (op_close, op_send): the host may be walking its
 * connections, so the close waits for the session's `later` event. */
void eio_close_from_host(struct eio *s, unsigned code, const char *why);
/* Runs the session's deferred work (flush, held POST, ops->later) soon. */
void eio_later(struct eio *s);
/* A refused binary packet: drop its attachments as they come. */
void eio_skip_binary(struct eio *s, unsigned n);
bool eio_closed(const struct eio *s);
const char *eio_addr(const struct eio *s);
/* The peer as the session's first socket showed it (address, client
 * certificate), for its namespaces' lb_conn_new. */
void eio_peer(const struct eio *s, struct lb_peer *peer);
struct lb_plugin_ctx *eio_ctx(const struct eio *s);
struct wsp *eio_wsp(const struct eio *s);
/* The session holds the namespaces of the layer above for it (it never
 * looks inside); the handshake timer stops at the first. */
int eio_add_ns(struct eio *s, struct sns *ns);
void eio_remove_ns(struct eio *s, struct sns *ns);
size_t eio_ns_count(const struct eio *s);
struct sns *eio_ns_at(const struct eio *s, size_t i);
/* Every namespace of every session (for the endpoints' figures). */
void eio_each_ns(struct wsp *wp, void (*fn)(void *ud, struct sns *ns), void *ud);
#endif
