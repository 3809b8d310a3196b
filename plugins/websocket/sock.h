/*
 * Sockets of the listener (sock.c): reading and writing (through tls.c
 * on TLS listeners), HTTP responses, origins, the WebSocket a request
 * may become, and closing.  A socket knows no part above it: a complete
 * request goes to wp->route, and a socket a part took over tells that
 * part what happens to it through the hc_ops the part set in hc->ops.
 */
#ifndef WS_SOCK_H
#define WS_SOCK_H
#include "wsp.h"

/* What a socket tells the part that took it over (the /lexbus transport,
 * an Engine.IO session).  Each is called from the socket's own event
 * callbacks, never from inside an hc_* call the part made, except gone
 * (hc_ws_fail, hc_close from the part: it is told as anyone is). */
struct hc_ops {
    /* A WebSocket message (not a ping or a close, which are answered
     * here): 0 read on, 1 stop reading now (paused or closed), -1 the
     * socket is gone (stop, never touch the reader again). */
    int (*message)(struct hc *hc, enum ws_op op, const uint8_t *p, size_t n);
    /* The socket is ending (EOF, an error, a close): let go of it.  May
     * come again later for the same socket. */
    void (*gone)(struct hc *hc, const char *why);
    /* Everything queued went out (optional). */
    void (*writable)(struct hc *hc);
    /* hc->tmo fired on the WebSocket (optional). */
    void (*timer)(struct hc *hc);
    /* The socket's memory goes now (optional): once, after gone. */
    void (*freed)(struct hc *hc);
};

struct evconnlistener;
struct sockaddr;
/* The listeners' accept callback (arg: the struct wsp). */
void wsp_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg);
/* SIGTERM: idle sockets end now, a request being read gets its answer. */
void wsp_drain(struct wsp *wp);
/* Unload: frees every socket. */
void wsp_free_sockets(struct wsp *wp);

/* Writes what is queued: 0 (some may be left), or -1 on a hard error. */
int hc_write(struct hc *hc);
/* The same; a hard error ends the socket. */
void hc_write_out(struct hc *hc);
void hc_close(struct hc *hc, bool flush);
void hc_set_pause(struct hc *hc, unsigned flag, bool on);

/* An HTTP response; the socket stays for the next request when keep_alive. */
void hc_respond(struct hc *hc, int status, const char *ctype, const char *extra,
                const char *body, size_t len);
/* A text/plain response: the text and a newline. */
void hc_respond_text(struct hc *hc, int status, const char *extra, const char *text);
/* A JSON error body {"code":N,"message":...} (Engine.IO's form). */
void hc_respond_eio_error(struct hc *hc, int status, int code, const char *message);
bool wsp_origin_ok(struct wsp *wp, const struct http_req *r);
/* CORS headers for an allowed Origin (empty when there is none). */
void wsp_cors_headers(const struct http_req *r, char *out, size_t len);

/* Validates a WebSocket upgrade request without answering (0, or -1 with
 * the status and reason to answer). */
int hc_ws_check(struct hc *hc, int *status, const char **why, const char **extra);
/* Answers 101 (checked by hc_ws_check first): returns 0, or -1. */
int hc_ws_accept(struct hc *hc, const char *subprotocol);
/* Queues one WebSocket frame.  Every frame goes through here, so that a
 * discard knows where whole frames end. */
int hc_ws_frame(struct hc *hc, enum ws_op op, const struct iovec *iov, int iovcnt);
/* Queues one text frame (an Engine.IO packet). */
int hc_ws_text(struct hc *hc, const char *p, size_t n);
/* Queues a close frame with its status code and reason. */
void hc_ws_close_frame(struct hc *hc, unsigned code, const char *why);
/* Ends a WebSocket with a close frame: flushes, then closes the socket. */
void hc_ws_fail(struct hc *hc, unsigned code, const char *why);
#endif
