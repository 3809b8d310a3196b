/*
 * The listener's sockets (sock.h).
 *
 * Sockets are read here directly (16 KiB readv, like the unix transport)
 * rather than through bufferevents, which read 4 KiB per wake-up.
 * libevent's evhttp is not used: it cannot hand a request's socket over to
 * a WebSocket, nor hold a long-poll request open while it answers others
 * on the same session.
 *
 * Lifecycle of a socket (struct hc): accept -> (TLS listeners: the
 * handshake, within header_timeout) -> HC_HTTP (a request head
 * within header_timeout) -> answered and kept (keep-alive), held
 * (HC_HELD: a long-poll GET, or a POST waiting for back-pressure to ease),
 * upgraded (HC_WS: /lexbus with its own lb_conn, or an Engine.IO
 * session's transport) -> HC_CLOSING (flushing) -> freed.  Whoever takes
 * a socket over (lexbus.c at the upgrade, session.c for a session's
 * WebSocket or a request it holds) sets hc->ops, and from then on hears
 * through it what happens to the socket.
 */
#include "config.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <event2/buffer.h>
#include <event2/listener.h>
#include "sock.h"
#include "tls.h"

/* What one read takes: 16 KiB, as the unix transport (what a read routes
 * is flushed when the loop turn ends, so a larger read holds the first
 * messages back until the last is routed, and flow-controlled clients
 * stall on it).  One TLS record is 16 KiB too. */
#define READ_CHUNK (16 * 1024)
#define FLUSH_TIMEOUT_S 5
#define DRAIN_GRACE_MS 1000          /* a request being read at SIGTERM gets this long */
#define LINGER_MS 2000               /* after the last byte out, reading what the peer still sends */
#define LINGER_DRAINING_MS 300

/* ---- socket I/O ---------------------------------------------------- */

/* Reading wanted: not paused, not closing.  A TLS write that waits for
 * the peer's bytes needs the read event even then. */
static bool wants_read(const struct hc *hc)
{
    return !hc->dead && hc->st != HC_CLOSING && !(hc->pause & P_HOST) && !(hc->st == HC_WS && hc->ws_closing);
}

static void hc_update_events(struct hc *hc)
{
    bool want = !hc->dead && (wants_read(hc) || hc->write_wants_read || hc->handshaking || hc->lingering);
    if (want && !hc->rev_on) { event_add(&hc->rev, NULL); hc->rev_on = true; }
    else if (!want && hc->rev_on) { event_del(&hc->rev); hc->rev_on = false; }
}

/* The write event: output queued (and not waiting for the peer's bytes),
 * or a TLS read or handshake that waits for room to write. */
static void update_wev(struct hc *hc)
{
    bool want = !hc->dead && ((evbuffer_get_length(hc->out) > 0 && !hc->write_wants_read) || hc->read_wants_write);
    if (want && !hc->wev_on) { event_add(&hc->wev, NULL); hc->wev_on = true; }
    else if (!want && hc->wev_on) { event_del(&hc->wev); hc->wev_on = false; }
}

void hc_set_pause(struct hc *hc, unsigned flag, bool on)
{
    unsigned old = hc->pause;
    if (on) hc->pause |= flag;
    else hc->pause &= ~flag;
    hc_update_events(hc);
    /* Input that arrived while paused is waiting in hc->in:
     * process it from the loop, not from inside the caller. */
    if (old && !hc->pause && !hc->dead) event_active(&hc->rev, EV_READ, 0);
}

/* Returns bytes read, 0 at EOF, -1 on error, -2 when nothing is ready. */
static ssize_t read_some(struct hc *hc)
{
    return hc->ssl ? tls_read(hc, READ_CHUNK) : stream_readv(hc->fd, hc->in, READ_CHUNK);
}

static void hc_free_now(struct hc *hc);

/* Arms the write event if the socket is full; a hard error is the
 * caller's to act on. */
int hc_write(struct hc *hc)
{
    if (hc->ssl) {
        if (tls_write(hc) != 0) return -1;
    } else {
        while (evbuffer_get_length(hc->out) > 0) {
            int w = evbuffer_write(hc->out, hc->fd);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR) break;
                return -1;
            }
            if (w == 0) break;
        }
    }
    update_wev(hc);
    hc_update_events(hc);
    return 0;
}

static void hc_gone(struct hc *hc, const char *why);

void hc_write_out(struct hc *hc)
{
    if (hc->dead) return;
    if (hc_write(hc) != 0) hc_gone(hc, strerror(errno));
}

/* The part that took the socket over lets go of it. */
static void tell_gone(struct hc *hc, const char *why)
{
    if (hc->ops) hc->ops->gone(hc, why);
}

static void hc_free(struct hc *hc)
{
    if (hc->busy) { hc->dead = true; hc_update_events(hc); return; }
    hc_free_now(hc);
}

static void hc_free_now(struct hc *hc)
{
    struct wsp *wp = hc->wp;
    tell_gone(hc, "socket closed");
    if (hc->ops && hc->ops->freed) hc->ops->freed(hc);
    *hc->pprev = hc->next;
    if (hc->next) hc->next->pprev = hc->pprev;
    wp->n_conns--;
    event_del(&hc->rev);
    event_del(&hc->wev);
    event_del(&hc->tmo);
    if (hc->ssl) {
        tls_end(hc);
        tls_free(hc);
    }
    evbuffer_free(hc->in);
    evbuffer_free(hc->out);
    stream_marks_free(&hc->marks);
    http_req_free(hc->req);
    if (hc->wr.ready) ws_reader_free(&hc->wr);
    evutil_closesocket(hc->fd);
    free(hc->ids);
    free(hc);
}


/* Everything queued is out: half-close, and read (and drop) what the
 * peer still sends until it closes too or the linger ends.  Closing with
 * unread input makes the kernel answer with a reset, which can destroy
 * what was just sent (the close frame after a ping flood, a 413) before
 * the peer reads it. */
static void hc_linger(struct hc *hc)
{
    if (hc->dead || hc->peer_gone || hc->handshaking) { hc_free(hc); return; }
    if (hc->ssl) tls_end(hc);
    hc->peer_gone = true;   /* nothing more goes out, close_notify included */
    if (shutdown(hc->fd, SHUT_WR) != 0) { hc_free(hc); return; }
    hc->lingering = true;
    evbuffer_drain(hc->in, evbuffer_get_length(hc->in));
    wsp_arm(&hc->tmo, hc->wp->draining ? LINGER_DRAINING_MS : LINGER_MS);
    hc_update_events(hc);
}

/* Lingering: drop what arrives; the peer's EOF (or an error) ends it. */
static void linger_read(struct hc *hc)
{
    char buf[16384];
    for (;;) {
        ssize_t r = recv(hc->fd, buf, sizeof buf, 0);
        if (r > 0) continue;
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        hc_free(hc);
        return;
    }
}

void hc_close(struct hc *hc, bool flush)
{
    if (hc->dead) return;
    if (hc->st == HC_CLOSING && flush) return;
    hc->st = HC_CLOSING;
    hc_update_events(hc);
    evtimer_del(&hc->tmo);
    if (!flush || hc_write(hc) != 0) {
        hc_free(hc);
        return;
    }
    if (evbuffer_get_length(hc->out) == 0) {
        hc_linger(hc);
        return;
    }
    /* Keep the socket until what is queued (a close frame, an error
     * response) is written, or FLUSH_TIMEOUT_S passes. */
    struct timeval tv = { FLUSH_TIMEOUT_S, 0 };
    evtimer_add(&hc->tmo, &tv);
}

/* The peer went away (EOF or an I/O error). */
static void hc_gone(struct hc *hc, const char *why)
{
    if (hc->dead) return;
    hc->peer_gone = true;
    tell_gone(hc, why);
    hc_free(hc);
}

/* ---- HTTP responses ------------------------------------------------ */

static void restart_header_timer(struct hc *hc) { wsp_arm(&hc->tmo, hc->wp->c.header_timeout_ms); }

void hc_respond(struct hc *hc, int status, const char *ctype, const char *extra, const char *body, size_t len)
{
    if (hc->dead || hc->st == HC_CLOSING) return;
    bool keep = hc->keep_alive;
    bool head_only = hc->req && hc->req->p.method == HTTP_HEAD;
    if (status >= 400) hc->wp->n.http_errors++;
    evbuffer_add_printf(hc->out, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
    if (ctype) evbuffer_add_printf(hc->out, "Content-Type: %s\r\n", ctype);
    evbuffer_add_printf(hc->out, "Content-Length: %zu\r\nCache-Control: no-store\r\n"
                        "X-Content-Type-Options: nosniff\r\nConnection: %s\r\n%s\r\n",
                        len, keep ? "keep-alive" : "close", extra ? extra : "");
    if (len && !head_only) evbuffer_add(hc->out, body, len);
    if (hc->st == HC_HELD) {
        hc->st = HC_HTTP;
        hc->sess = NULL;
        hc->pause &= ~P_HELD;
    }
    if (!keep) { hc_close(hc, true); return; }
    http_req_reset(hc->req);
    restart_header_timer(hc);
    hc_set_pause(hc, 0, false);
    hc_write_out(hc);
    /* A pipelined request may already be waiting. */
    if (!hc->dead && evbuffer_get_length(hc->in)) event_active(&hc->rev, EV_READ, 0);
}

void hc_respond_eio_error(struct hc *hc, int status, int code, const char *message)
{
    char body[256];
    int n = snprintf(body, sizeof body, "{\"code\":%d,\"message\":\"%s\"}", code, message);
    char cors[512];
    wsp_cors_headers(hc->req, cors, sizeof cors);
    hc_respond(hc, status, "application/json", cors, body, (size_t)n);
}

void hc_respond_text(struct hc *hc, int status, const char *extra, const char *text)
{
    char body[512];
    int n = snprintf(body, sizeof body, "%s\n", text);
    hc_respond(hc, status, "text/plain; charset=utf-8", extra, body, (size_t)n);
}

/* ---- origins ------------------------------------------------------- */

/* Same origin: the Origin's host[:port] is the Host header. */
static bool same_origin(const char *origin, size_t on, const struct http_req *r)
{
    size_t hn;
    const char *host = http_req_header(r, "host", &hn);
    const char *p = memchr(origin, ':', on);
    if (!host || !p || (size_t)(origin + on - p) < 3 || p[1] != '/' || p[2] != '/') return false;
    p += 3;
    size_t rest = (size_t)(origin + on - p);
    return rest == hn && strncasecmp(p, host, hn) == 0;
}

bool wsp_origin_ok(struct wsp *wp, const struct http_req *r)
{
    size_t on;
    const char *origin = http_req_header(r, "origin", &on);
    if (!origin) return true;               /* not a browser: nothing to protect */
    if (http_req_header_count(r, "origin") > 1) return false;
    if (wp->c.origins_any) return true;
    if (wp->c.same_origin && same_origin(origin, on, r)) return true;
    for (size_t i = 0; i < wp->c.n_origins; i++)
        if (strlen(wp->c.origins[i]) == on && strncasecmp(wp->c.origins[i], origin, on) == 0) return true;
    return false;
}

void wsp_cors_headers(const struct http_req *r, char *out, size_t len)
{
    size_t on;
    const char *origin = r ? http_req_header(r, "origin", &on) : NULL;
    out[0] = 0;
    /* Only origins wsp_origin_ok let through reach a response with CORS;
     * the value is echoed as sent (it is one header line: no CR/LF). */
    if (origin && on < 256 && !memchr(origin, '\r', on) && !memchr(origin, '\n', on))
        snprintf(out, len, "Access-Control-Allow-Origin: %.*s\r\nAccess-Control-Allow-Credentials: true\r\n"
                 "Vary: Origin\r\n", (int)on, origin);
}

/* ---- WebSocket upgrade --------------------------------------------- */

int hc_ws_check(struct hc *hc, int *status, const char **why, const char **extra)
{
    struct http_req *r = hc->req;
    size_t kn, vn;
    const char *key = http_req_header(r, "sec-websocket-key", &kn);
    const char *ver = http_req_header(r, "sec-websocket-version", &vn);
    char accept[29];
    *extra = NULL;
    *status = 400;
    if (r->p.method != HTTP_GET) { *why = "a WebSocket upgrade must be a GET"; return -1; }
    if (!r->upgrade || !http_req_header_has_token(r, "upgrade", "websocket")) {
        *status = 426;
        *extra = "Upgrade: websocket\r\n";
        *why = "this path speaks WebSocket: send Upgrade: websocket and Connection: Upgrade";
        return -1;
    }
    if (r->p.http_minor < 1) { *why = "a WebSocket upgrade needs HTTP/1.1"; return -1; }
    if (!http_req_header(r, "host", NULL)) { *why = "missing Host header"; return -1; }
    if (!ver || vn != 2 || memcmp(ver, "13", 2) != 0 || http_req_header_count(r, "sec-websocket-version") != 1) {
        *status = 426;
        *extra = "Sec-WebSocket-Version: 13\r\n";
        *why = "unsupported Sec-WebSocket-Version (13 is spoken)";
        return -1;
    }
    if (!key || http_req_header_count(r, "sec-websocket-key") != 1 || ws_accept_key(key, kn, accept) != 0) {
        *why = "bad Sec-WebSocket-Key (the base64 of 16 bytes)";
        return -1;
    }
    if (!wsp_origin_ok(hc->wp, r)) { *status = 403; *why = "Origin not allowed (allowed_origins)"; return -1; }
    return 0;
}

int hc_ws_accept(struct hc *hc, const char *subprotocol)
{
    size_t kn;
    const char *key = http_req_header(hc->req, "sec-websocket-key", &kn);
    char accept[29];
    if (ws_accept_key(key, kn, accept) != 0) return -1;   /* checked by hc_ws_check */
    evbuffer_add_printf(hc->out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: %s\r\n%s%s%s\r\n", accept,
                        subprotocol ? "Sec-WebSocket-Protocol: " : "", subprotocol ? subprotocol : "",
                        subprotocol ? "\r\n" : "");
    http_req_free(hc->req);
    hc->req = NULL;
    hc->st = HC_WS;
    hc->pause &= ~P_HELD;
    hc->marks.added = evbuffer_get_length(hc->out);   /* the 101 is not a frame: never dropped */
    evtimer_del(&hc->tmo);
    hc_update_events(hc);
    hc_write_out(hc);
    return 0;
}

/* The frame boundaries are plugins/common/stream.h's marks; the 101
 * response before the first frame is counted in at the upgrade. */
int hc_ws_frame(struct hc *hc, enum ws_op op, const struct iovec *iov, int iovcnt)
{
    size_t before = evbuffer_get_length(hc->out);
    stream_frame_starts(&hc->marks, before);
    if (ws_frame_write(hc->out, op, iov, iovcnt) != 0) return -1;
    hc->marks.added += evbuffer_get_length(hc->out) - before;
    return 0;
}

void hc_ws_close_frame(struct hc *hc, unsigned code, const char *why)
{
    uint8_t b[125];
    struct iovec iov = { b, ws_close_payload(b, code, why) };
    hc_ws_frame(hc, WS_OP_CLOSE, &iov, 1);
}

int hc_ws_text(struct hc *hc, const char *p, size_t n)
{
    if (hc->dead || hc->ws_closing) return -1;
    struct iovec iov = { (void *)p, n };
    return hc_ws_frame(hc, WS_OP_TEXT, &iov, 1);
}

/* Queues our close frame, takes the connection off the bus, flushes. */
static void ws_end(struct hc *hc, unsigned code, const char *why)
{
    if (hc->dead || hc->ws_closing || hc->st != HC_WS) return;
    hc->ws_closing = true;
    hc_ws_close_frame(hc, code, why);
    lb_log(hc->wp->ctx, LB_LOG_DEBUG, "%s: WebSocket closed with %u: %s", hc->addr, code, why);
    tell_gone(hc, why);
    hc_close(hc, true);
}

void hc_ws_fail(struct hc *hc, unsigned code, const char *why)
{
    if (hc->dead || hc->ws_closing || hc->st != HC_WS) return;
    if (code != 1000 && code != 1001) {
        hc->wp->n.ws_errors++;
        wsp_log_refusal(hc->wp, "%s: WebSocket closed with %u: %s", hc->addr, code, why);
    }
    ws_end(hc, code, why);
}

/* ---- WebSocket input ---------------------------------------------- */

/* Client pings are answered at once, up to max_ping_rate a second: a
 * client that floods pings (and maybe never reads the pongs) is closed. */
static int ws_ping(struct hc *hc, const uint8_t *p, size_t n)
{
    uint64_t now = lb_now_ms();
    if (now - hc->ping_window_ms >= 1000) { hc->ping_window_ms = now; hc->pings = 0; }
    if (++hc->pings > hc->wp->c.max_pings_per_s) {
        hc->wp->n.ping_floods++;
        hc_ws_fail(hc, 1008, "ping flood (more than max_ping_rate pings a second)");
        return -1;
    }
    struct iovec iov = { (void *)p, n };
    hc_ws_frame(hc, WS_OP_PONG, &iov, 1);
    hc_write_out(hc);
    return hc->dead ? -1 : 0;
}

static int ws_close_received(struct hc *hc, const uint8_t *p, size_t n, unsigned code)
{
    (void)p; (void)n;
    /* Echo the status (RFC 6455 5.5.1), then close. */
    char why[64];
    snprintf(why, sizeof why, "client closed (%u)", code);
    ws_end(hc, code == 1005 ? 1000 : code, why);
    return -1;
}

static int ws_msg_cb(void *ud, enum ws_op op, const uint8_t *p, size_t n, unsigned code)
{
    struct hc *hc = ud;
    if (hc->dead || hc->ws_closing) return -1;
    if (op == WS_OP_PING) return ws_ping(hc, p, n);
    if (op == WS_OP_CLOSE) return ws_close_received(hc, p, n, code);
    return hc->ops ? hc->ops->message(hc, op, p, n) : -1;   /* every WebSocket was taken over */
}

/* Feeds buffered input to the frame reader until it is used up, the
 * connection pauses, or it ends.  Frames are read where they lie; only a
 * frame split across the buffer's chunks is pulled up (copied) whole. */
static void ws_input(struct hc *hc)
{
    for (;;) {
        if (hc->dead || hc->st != HC_WS || hc->ws_closing || hc->pause) return;
        size_t total = evbuffer_get_length(hc->in);
        if (!total) return;
        size_t n = evbuffer_get_contiguous_space(hc->in);
        uint8_t *p = evbuffer_pullup(hc->in, (ssize_t)n);
        unsigned code = 1002;
        const char *why = "protocol error";
        long used = ws_read(&hc->wr, p, n, ws_msg_cb, hc, &code, &why);
        if (used == -1) return;
        if (used == -2) { hc_ws_fail(hc, code, why); return; }
        if (used) evbuffer_drain(hc->in, (size_t)used);
        if ((size_t)used == n || !hc->wr.need) continue;   /* next chunk, or the callback stopped */
        size_t left = total - (size_t)used, contig = n - (size_t)used;
        if (left <= contig) return;                         /* wait for the rest of the frame */
        evbuffer_pullup(hc->in, (ssize_t)(hc->wr.need < left ? hc->wr.need : left));
    }
}

/* ---- HTTP requests ------------------------------------------------- */

/* A complete request goes to the part that serves its path. */
static void dispatch(struct hc *hc)
{
    struct wsp *wp = hc->wp;
    struct http_req *r = hc->req;
    wp->n.http_requests++;
    evtimer_del(&hc->tmo);
    hc->keep_alive = r->keep_alive && !r->upgrade && !wp->draining;
    wp->route(hc, r);
}

static void http_input(struct hc *hc)
{
    while (!hc->dead && hc->st == HC_HTTP && evbuffer_get_length(hc->in)) {
        if (!hc->req && !(hc->req = http_req_new(hc->wp->c.max_head, hc->wp->c.max_payload))) {
            hc_close(hc, false);
            return;
        }
        size_t n = evbuffer_get_contiguous_space(hc->in);
        const char *p = (const char *)evbuffer_pullup(hc->in, (ssize_t)n);
        size_t used = http_req_feed(hc->req, p, n);
        evbuffer_drain(hc->in, used);
        if (hc->req->state == HTTP_FAILED) {
            wsp_log_refusal(hc->wp, "%s: bad HTTP request (%d): %s", hc->addr, hc->req->status, hc->req->why);
            hc->keep_alive = false;
            hc_respond_text(hc, hc->req->status, NULL, hc->req->why);
            return;
        }
        if (hc->req->state == HTTP_COMPLETE) dispatch(hc);
        else if (used == 0) return;   /* cannot happen: a partial request takes what it is given */
    }
}

static void process_input(struct hc *hc)
{
    if (hc->st == HC_HTTP) http_input(hc);
    if (!hc->dead && hc->st == HC_WS) ws_input(hc);
    /* HC_HELD: bytes wait until the held request is answered; bounded. */
    if (!hc->dead && hc->st == HC_HELD && evbuffer_get_length(hc->in) > hc->wp->c.max_head + hc->wp->c.max_payload) {
        hc->keep_alive = false;
        hc_close(hc, false);
    }
}

/* TLS: the handshake goes on; once done the socket speaks HTTP. */
static void handshake_step(struct hc *hc)
{
    int r = tls_handshake(hc);
    if (r < 0) { hc_free(hc); return; }
    hc_update_events(hc);
    update_wev(hc);
    /* Request bytes may have come with the end of the handshake. */
    if (r > 0) event_active(&hc->rev, EV_READ, 0);
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct hc *hc = arg;
    if (hc->dead) return;
    if (hc->lingering) { linger_read(hc); return; }
    if (hc->handshaking) { handshake_step(hc); return; }
    if (hc->write_wants_read) {
        /* A TLS write was waiting for the peer's bytes. */
        hc->write_wants_read = false;
        if (hc_write(hc) != 0) { hc_gone(hc, "write failed"); return; }
    }
    hc->busy++;
    ssize_t r = wants_read(hc) ? read_some(hc) : -2;
    if (r == 0 || r == -1) {
        hc->busy--;
        if (hc->st == HC_HTTP && !hc->conn && !hc->sess && evbuffer_get_length(hc->out)) {
            hc->peer_gone = r != 0;
            hc_close(hc, true);   /* a response to a half-closed client still goes out */
            return;
        }
        hc_gone(hc, r == 0 ? "peer closed the connection" : hc->ssl ? "TLS error" : strerror(errno));
        return;
    }
    process_input(hc);
    if (--hc->busy == 0 && hc->dead) hc_free_now(hc);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct hc *hc = arg;
    if (hc->dead) return;
    if (hc->handshaking) { handshake_step(hc); return; }
    if (hc->read_wants_write) {
        /* A TLS read was waiting for room to write. */
        hc->read_wants_write = false;
        event_active(&hc->rev, EV_READ, 0);
    }
    if (hc_write(hc) != 0) { hc_gone(hc, hc->ssl ? "TLS error" : strerror(errno)); return; }
    if (evbuffer_get_length(hc->out) > 0) return;
    if (hc->st == HC_CLOSING) { hc_linger(hc); return; }
    if (hc->ops && hc->ops->writable) hc->ops->writable(hc);
}

static void tmo_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct hc *hc = arg;
    if (hc->dead) return;
    switch (hc->st) {
    case HC_CLOSING:
        hc_free(hc);   /* the flush took too long, or the linger is over */
        break;
    case HC_HTTP:
        if (hc->handshaking) {
            hc->wp->n.tls_refused++;
            wsp_log_refusal(hc->wp, "%s: TLS handshake not done within header_timeout (%llu ms)", hc->addr,
                            (unsigned long long)hc->wp->c.header_timeout_ms);
            hc_free(hc);
        } else if (hc->req && hc->req->head_seen && !hc->wp->draining) {
            hc->wp->n.header_timeouts++;
            wsp_log_refusal(hc->wp, "%s: request head not complete within header_timeout (%llu ms)", hc->addr,
                            (unsigned long long)hc->wp->c.header_timeout_ms);
            hc->keep_alive = false;
            hc_respond_text(hc, 408, NULL, "request head not complete within header_timeout");
        } else {
            hc_close(hc, false);   /* idle keep-alive socket, or the drain's grace is over */
        }
        break;
    case HC_WS:
        if (hc->ops && hc->ops->timer) hc->ops->timer(hc);
        break;
    case HC_HELD:
        break;
    }
}

/* max_connections, then for TLS max_handshaking and
 * max_handshaking_per_address (an IPv4 address or an IPv6 /64): a socket
 * beyond any is closed before any TLS, so that stalled handshakes cannot
 * take every descriptor and one host cannot take every handshake slot. */
static bool over_limit(struct wsp *wp, const char *addr, const unsigned char key[NET_ADDR_KEY])
{
    const struct wsp_conf *c = &wp->c;
    const char *which;
    long long max;
    uint64_t *count;
    if (c->max_connections && wp->n_conns >= (uint64_t)c->max_connections) {
        which = "max_connections", max = c->max_connections, count = &wp->n.over_limit;
    } else if (wp->ssl && c->max_handshaking && wp->n_handshaking >= (uint64_t)c->max_handshaking) {
        which = "max_handshaking", max = c->max_handshaking, count = &wp->n.over_handshaking;
    } else if (wp->ssl && c->max_per_addr && net_addr_count(&wp->handshaking_by_addr, key) >= c->max_per_addr) {
        which = "max_handshaking_per_address", max = c->max_per_addr, count = &wp->n.over_handshaking;
    } else {
        return false;
    }
    (*count)++;
    wsp_log_refusal(wp, "refused %s: %s (%lld) reached", addr, which, max);
    return true;
}

void wsp_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l; (void)salen;
    struct wsp *wp = arg;
    char addr[64];
    unsigned char key[NET_ADDR_KEY];
    net_format_addr(sa, addr, sizeof addr);
    net_addr_key(sa, key);
    if (over_limit(wp, addr, key)) { evutil_closesocket(fd); return; }
    struct hc *hc = calloc(1, sizeof *hc);
    if (!hc || !(hc->in = evbuffer_new()) || !(hc->out = evbuffer_new())) {
        lb_log(wp->ctx, LB_LOG_ERROR, "out of memory accepting %s", addr);
        if (hc && hc->in) evbuffer_free(hc->in);
        free(hc);
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    hc->wp = wp;
    hc->fd = fd;
    snprintf(hc->addr, sizeof hc->addr, "%s", addr);
    struct event_base *base = lb_event_base(wp->ctx);
    event_assign(&hc->rev, base, fd, EV_READ | EV_PERSIST, read_cb, hc);
    event_assign(&hc->wev, base, fd, EV_WRITE | EV_PERSIST, write_cb, hc);
    evtimer_assign(&hc->tmo, base, tmo_cb, hc);
    hc->next = wp->conns;
    if (wp->conns) wp->conns->pprev = &hc->next;
    wp->conns = hc;
    hc->pprev = &wp->conns;
    wp->n_conns++;
    wp->n.accepted++;
    hc->st = HC_HTTP;
    /* TLS: the handshake counts against header_timeout, like the head. */
    restart_header_timer(hc);
    if (wp->ssl && (!(hc->ac = net_addr_acquire(&wp->handshaking_by_addr, key)) || tls_begin(hc, wp->ssl) != 0)) {
        lb_log(wp->ctx, LB_LOG_ERROR, "cannot set up TLS for %s", addr);
        hc_free_now(hc);
        return;
    }
    hc_update_events(hc);
}

/* SIGTERM, once every lb_conn and every session is closed (websocket.c
 * set wp->draining first: what closes now lingers briefly): what is left
 * ends now.  A request that is being read still gets its answer (with
 * Connection: close: /health says 503), within a short grace. */
void wsp_drain(struct wsp *wp)
{
    for (struct hc *hc = wp->conns, *next; hc; hc = next) {
        next = hc->next;
        if (hc->dead || hc->st != HC_HTTP || hc->conn || hc->sess) continue;
        bool busy = !hc->handshaking && ((hc->req && hc->req->head_seen) || evbuffer_get_length(hc->in));
        if (!busy) { hc_close(hc, true); continue; }
        hc->keep_alive = false;
        wsp_arm(&hc->tmo, DRAIN_GRACE_MS);
    }
}

/* Unload: every socket, whatever state it is in. */
void wsp_free_sockets(struct wsp *wp)
{
    while (wp->conns) hc_free_now(wp->conns);
}
