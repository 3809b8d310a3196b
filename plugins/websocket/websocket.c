/*
 * websocket: browsers and Socket.IO clients on the bus, plus HTTP
 * endpoints for operators, all on one listener.
 *
 *   GET /lexbus          RFC 6455; one text message = one lexbus JSON message
 *   /socket.io/          Engine.IO v4 (WebSocket, long-polling, upgrade) carrying
 *                        Socket.IO v5; namespace /ipc/<name> = service <name>
 *   GET /health          {"status":"ok",...} (503 while draining)
 *   GET /api/ipc/stats   the Exprsn shape plus lexbus's stats
 *   GET /metrics         Prometheus text format 0.0.4
 *   GET /                the demo page (demo = yes)
 *
 * Libraries: http-parser parses requests (bounded in http.c); WebSocket
 * frames are parsed in place (wsframe.c: wslay was measured and is kept
 * as the fuzzer's reference); Engine.IO and Socket.IO in eio.c.  Sockets are read here directly (64 KiB
 * readv, like the unix transport) rather than through bufferevents, which
 * read 4 KiB per wake-up.  libevent's evhttp is not used: it cannot hand a
 * request's socket over to a WebSocket, nor hold a long-poll request open
 * while it answers others on the same session.
 *
 * Lifecycle of a socket (struct hc): accept -> HC_HTTP (a request head
 * within header_timeout) -> answered and kept (keep-alive), held
 * (HC_HELD: a long-poll GET, or a POST waiting for back-pressure to ease),
 * upgraded (HC_WS: /lexbus with its own lb_conn, or an Engine.IO
 * session's transport) -> HC_CLOSING (flushing) -> freed.
 */
#include "config.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <event2/buffer.h>
#include <event2/listener.h>
#include <jansson.h>
#include "wsp.h"
#include "util.h"

#define READ_CHUNK (64 * 1024)
#define FLUSH_TIMEOUT_S 5
#define LOG_BURST 20
#define HEARTBEAT_FRAME "{\"type\":\"HEARTBEAT\"}"

/* ---- small helpers ------------------------------------------------- */

void wsp_random_id(char out[WSP_SID_LEN + 1])
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char b[WSP_SID_LEN];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r <= 0) { if (errno == EINTR) continue; break; }
        got += (size_t)r;
    }
    for (size_t i = got; i < sizeof b; i++) b[i] = (unsigned char)random();   /* no getrandom: never here on Linux 3.17+ */
    for (size_t i = 0; i < WSP_SID_LEN; i++) out[i] = alpha[b[i] & 63];
    out[WSP_SID_LEN] = 0;
}

/* At most LOG_BURST refusal lines a second; the rest are counted and
 * summed up in one line when the next refusal comes after that second. */
void wsp_log_refusal(struct wsp *wp, const char *fmt, ...)
{
    uint64_t now = lb_now_ms();
    if (now - wp->refusal_log_ms >= 1000) {
        if (wp->refusals_hidden)
            lb_log(wp->ctx, LB_LOG_WARN, "... and %u more refused in the last second (stats count them all)",
                   wp->refusals_hidden);
        wp->refusal_log_ms = now;
        wp->refusals_shown = wp->refusals_hidden = 0;
    }
    if (wp->refusals_shown >= LOG_BURST) { wp->refusals_hidden++; return; }
    wp->refusals_shown++;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lb_log(wp->ctx, LB_LOG_INFO, "%s", msg);
}

static void format_addr(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
        snprintf(out, len, "%s:%d", host, ntohs(((const struct sockaddr_in *)sa)->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
        snprintf(out, len, "[%s]:%d", host, ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
    } else {
        snprintf(out, len, "?");
    }
}

void wsp_peer_addr(struct hc *hc, struct lb_peer *peer, const char *transport)
{
    memset(peer, 0, sizeof *peer);
    peer->transport = transport;
    peer->address = hc->addr;
}

/* ---- socket I/O ---------------------------------------------------- */

static void hc_update_events(struct hc *hc)
{
    bool want = !hc->dead && hc->st != HC_CLOSING && !(hc->pause & P_HOST) &&
                !(hc->st == HC_WS && hc->ws_closing);
    if (want && !hc->rev_on) { event_add(&hc->rev, NULL); hc->rev_on = true; }
    else if (!want && hc->rev_on) { event_del(&hc->rev); hc->rev_on = false; }
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
    struct evbuffer_iovec vec[2];
    int n = evbuffer_reserve_space(hc->in, READ_CHUNK, vec, 2);
    if (n <= 0) return -1;
    struct iovec iov[2];
    for (int i = 0; i < n; i++) { iov[i].iov_base = vec[i].iov_base; iov[i].iov_len = vec[i].iov_len; }
    ssize_t r = readv(hc->fd, iov, n);
    if (r < 0) {
        evbuffer_commit_space(hc->in, vec, 0);
        return (errno == EAGAIN || errno == EINTR) ? -2 : -1;
    }
    size_t left = (size_t)r;
    for (int i = 0; i < n; i++) {
        size_t take = left < vec[i].iov_len ? left : vec[i].iov_len;
        vec[i].iov_len = take;
        left -= take;
    }
    evbuffer_commit_space(hc->in, vec, n);
    return r;
}

static void hc_free_now(struct hc *hc);

/* Writes what is queued; arms the write event if the socket is full.
 * Returns 0, or -1 on a hard error (the caller decides what that ends). */
static int write_some(struct hc *hc)
{
    while (evbuffer_get_length(hc->out) > 0) {
        int w = evbuffer_write(hc->out, hc->fd);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            return -1;
        }
        if (w == 0) break;
    }
    bool more = evbuffer_get_length(hc->out) > 0;
    if (more && !hc->wev_on) { event_add(&hc->wev, NULL); hc->wev_on = true; }
    else if (!more && hc->wev_on) { event_del(&hc->wev); hc->wev_on = false; }
    return 0;
}

static void hc_gone(struct hc *hc, const char *why);

void hc_write_out(struct hc *hc)
{
    if (hc->dead) return;
    if (write_some(hc) != 0) hc_gone(hc, strerror(errno));
}

static void hc_free(struct hc *hc)
{
    if (hc->busy) { hc->dead = true; hc_update_events(hc); return; }
    hc_free_now(hc);
}

static void hc_free_now(struct hc *hc)
{
    struct wsp *wp = hc->wp;
    if (hc->conn) {
        struct lb_conn *c = hc->conn;
        hc->conn = NULL;
        hc->ws_closing = true;
        lb_conn_gone(c, "socket closed");
    }
    if (hc->sess) eio_socket_gone(hc, "socket closed");
    if (hc->kind == HK_LEXBUS) wp->n_lexbus--;
    *hc->pprev = hc->next;
    if (hc->next) hc->next->pprev = hc->pprev;
    wp->n_conns--;
    event_del(&hc->rev);
    event_del(&hc->wev);
    event_del(&hc->tmo);
    evbuffer_free(hc->in);
    evbuffer_free(hc->out);
    http_req_free(hc->req);
    if (hc->wr.ready) ws_reader_free(&hc->wr);
    evutil_closesocket(hc->fd);
    free(hc);
}

static void tmo_cb(evutil_socket_t fd, short what, void *arg);

void hc_close(struct hc *hc, bool flush)
{
    if (hc->dead) return;
    if (hc->st == HC_CLOSING && flush) return;
    hc->st = HC_CLOSING;
    hc_update_events(hc);
    evtimer_del(&hc->tmo);
    if (!flush || write_some(hc) != 0 || evbuffer_get_length(hc->out) == 0) {
        hc_free(hc);
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
    if (hc->conn) {
        struct lb_conn *c = hc->conn;
        hc->conn = NULL;
        hc->ws_closing = true;   /* op_close: nothing left to do */
        lb_conn_gone(c, why);
    }
    if (hc->sess) eio_socket_gone(hc, why);
    hc_free(hc);
}

/* ---- HTTP responses ------------------------------------------------ */

static void restart_header_timer(struct hc *hc)
{
    uint64_t ms = hc->wp->c.header_timeout_ms;
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000) };
    evtimer_add(&hc->tmo, &tv);
}

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

static void respond_text(struct hc *hc, int status, const char *extra, const char *text)
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
    evtimer_del(&hc->tmo);
    hc_update_events(hc);
    hc_write_out(hc);
    return 0;
}

int hc_ws_text(struct hc *hc, const char *p, size_t n)
{
    if (hc->dead || hc->ws_closing) return -1;
    struct iovec iov = { (void *)p, n };
    return ws_frame_write(hc->out, WS_OP_TEXT, &iov, 1);
}

/* Queues our close frame, takes the connection off the bus, flushes. */
static void ws_end(struct hc *hc, unsigned code, const char *why)
{
    if (hc->dead || hc->ws_closing || hc->st != HC_WS) return;
    hc->ws_closing = true;
    ws_close_write(hc->out, code, why);
    lb_log(hc->wp->ctx, LB_LOG_DEBUG, "%s: WebSocket closed with %u: %s", hc->addr, code, why);
    if (hc->conn) {
        struct lb_conn *c = hc->conn;
        hc->conn = NULL;
        lb_conn_gone(c, why);   /* op_close sees ws_closing: ours to close */
    }
    if (hc->sess) eio_socket_gone(hc, why);
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

/* ---- /lexbus: one text message = one lexbus message ---------------- */

static uint64_t ping_period(const struct hc *hc)
{
    uint64_t p = hc->wp->c.ping_interval_ms;
    /* Pongs count as heartbeats: ping well within the bus's eviction
     * window (three heartbeat intervals). */
    if (hc->heartbeat_ms && hc->heartbeat_ms < p) p = hc->heartbeat_ms;
    return p ? p : 1000;
}

static void arm_ws_ping(struct hc *hc)
{
    uint64_t ms = ping_period(hc);
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000) };
    evtimer_add(&hc->tmo, &tv);
}

/* The bus's heartbeat interval, from the REGISTER_ACK it sends. */
static void note_register_ack(struct hc *hc, const struct iovec *iov, int iovcnt)
{
    static const char pre[] = "{\"type\":\"REGISTER_ACK\"";
    static const char key[] = "\"heartbeatInterval\":";
    if (iovcnt < 1 || iov[0].iov_len < sizeof pre || memcmp(iov[0].iov_base, pre, sizeof pre - 1)) return;
    const char *p = memmem(iov[0].iov_base, iov[0].iov_len, key, sizeof key - 1);
    if (!p) return;
    unsigned long long ms = strtoull(p + sizeof key - 1, NULL, 10);
    if (ms > 0 && ms < 3600 * 1000) {
        hc->heartbeat_ms = ms;
        evtimer_del(&hc->tmo);
        arm_ws_ping(hc);
    }
}

static int lx_send(void *tdata, const struct iovec *iov, int iovcnt)
{
    struct hc *hc = tdata;
    if (hc->dead || hc->ws_closing) return -1;
    if (!hc->heartbeat_ms) note_register_ack(hc, iov, iovcnt);
    static const char err[] = "{\"type\":\"ERROR\"";
    if (iovcnt && iov[0].iov_len > sizeof err && !memcmp(iov[0].iov_base, err, sizeof err - 1)) hc->error_ms = lb_now_ms();
    return ws_frame_write(hc->out, WS_OP_TEXT, iov, iovcnt);
}

static size_t lx_pending(void *tdata)
{
    struct hc *hc = tdata;
    return evbuffer_get_length(hc->out);
}

static void lx_set_read(void *tdata, bool enabled)
{
    hc_set_pause(tdata, P_HOST, !enabled);
}

static void lx_close(void *tdata, bool flush)
{
    struct hc *hc = tdata;
    hc->conn = NULL;
    if (hc->ws_closing) return;   /* we are ending it ourselves */
    hc->ws_closing = true;
    /* An ERROR just before the close (eviction, revoked token, ...) says
     * why; without one the bus is shutting down. */
    if (flush && hc->error_ms && hc->error_ms == lb_now_ms()) ws_close_write(hc->out, 1008, "closed by the bus (see its ERROR)");
    else if (flush) ws_close_write(hc->out, 1001, "lexbusd is going away");
    hc_close(hc, flush);
}

static int lx_flush(void *tdata)
{
    struct hc *hc = tdata;
    if (hc->dead) return -1;
    return write_some(hc);
}

static const struct lb_conn_ops lexbus_ops = {
    .send = lx_send, .pending = lx_pending, .set_read = lx_set_read, .close = lx_close, .flush = lx_flush,
};

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
    ws_frame_write(hc->out, WS_OP_PONG, &iov, 1);
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

static int lexbus_message(struct hc *hc, enum ws_op op, const uint8_t *p, size_t n)
{
    switch (op) {
    case WS_OP_TEXT:
        if (lb_conn_input(hc->conn, (const char *)p, n) < 0) return -1;
        return hc->pause || hc->dead ? 1 : 0;
    case WS_OP_BINARY:
        hc_ws_fail(hc, 1003, "binary messages are not lexbus JSON: send text");
        return -1;
    case WS_OP_PONG:
        if (!hc->ping_out) return 0;
        hc->ping_out = false;
        /* The pong answers our ping: the connection is alive. */
        return lb_conn_input(hc->conn, HEARTBEAT_FRAME, sizeof HEARTBEAT_FRAME - 1) < 0 ? -1 : 0;
    default:
        return 0;
    }
}

static int ws_msg_cb(void *ud, enum ws_op op, const uint8_t *p, size_t n, unsigned code)
{
    struct hc *hc = ud;
    if (hc->dead || hc->ws_closing) return -1;
    if (op == WS_OP_PING) return ws_ping(hc, p, n);
    if (op == WS_OP_CLOSE) return ws_close_received(hc, p, n, code);
    if (hc->kind == HK_LEXBUS) return lexbus_message(hc, op, p, n);
    return eio_ws_message(hc, op, p, n);
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

static void lexbus_upgrade(struct hc *hc, struct http_req *r)
{
    struct wsp *wp = hc->wp;
    int status;
    const char *why, *extra;
    hc->keep_alive = false;
    if (hc_ws_check(hc, &status, &why, &extra)) {
        wsp_log_refusal(wp, "%s: WebSocket upgrade refused (%d): %s", hc->addr, status, why);
        respond_text(hc, status, extra, why);
        return;
    }
    if (ws_reader_init(&hc->wr, wp->c.max_message) != 0) { respond_text(hc, 503, NULL, "out of memory"); return; }
    struct lb_peer peer;
    wsp_peer_addr(hc, &peer, "websocket");
    hc->kind = HK_LEXBUS;
    wp->n_lexbus++;
    hc->conn = lb_conn_new(wp->ctx, &lexbus_ops, hc, &peer);
    if (!hc->conn) {
        respond_text(hc, 503, NULL, "the bus refused the connection (max_connections, draining, or a policy)");
        return;
    }
    wp->n.ws_lexbus++;
    const char *sub = http_req_header_has_token(r, "sec-websocket-protocol", "lexbus") ? "lexbus" : NULL;
    hc_ws_accept(hc, sub);
    arm_ws_ping(hc);
}

/* ---- HTTP requests ------------------------------------------------- */

static bool is_sio_path(const struct wsp *wp, const char *path, size_t n)
{
    size_t k = wp->c.sio_path_len;
    return (n == k || (n == k + 1 && path[k] == '/')) && memcmp(path, wp->c.sio_path, k) == 0;
}

static void dispatch(struct hc *hc)
{
    struct wsp *wp = hc->wp;
    struct http_req *r = hc->req;
    wp->n.http_requests++;
    evtimer_del(&hc->tmo);
    hc->keep_alive = r->keep_alive && !r->upgrade;
    const char *path = r->path;
    if (wp->c.socketio && is_sio_path(wp, path, r->path_len)) { eio_http(hc, r); return; }
    if (wp->c.lexbus && !strcmp(path, wp->c.path)) { lexbus_upgrade(hc, r); return; }
    bool known = (wp->c.health && !strcmp(path, "/health")) || (wp->c.stats && !strcmp(path, "/api/ipc/stats")) ||
                 (wp->c.metrics && !strcmp(path, "/metrics")) || (wp->c.demo && !strcmp(path, "/"));
    if (!known) { respond_text(hc, 404, NULL, "not found"); return; }
    if (r->p.method != HTTP_GET && r->p.method != HTTP_HEAD) {
        respond_text(hc, 405, "Allow: GET, HEAD\r\n", "only GET and HEAD are served here");
        return;
    }
    if (!strcmp(path, "/health")) api_health(hc, r);
    else if (!strcmp(path, "/api/ipc/stats")) api_stats(hc, r);
    else if (!strcmp(path, "/metrics")) api_metrics(hc, r);
    else api_demo(hc, r);
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
            respond_text(hc, hc->req->status, NULL, hc->req->why);
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

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct hc *hc = arg;
    if (hc->dead) return;
    hc->busy++;
    ssize_t r = hc->rev_on ? read_some(hc) : -2;
    if (r == 0 || r == -1) {
        hc->busy--;
        if (hc->st == HC_HTTP && !hc->conn && !hc->sess && evbuffer_get_length(hc->out)) {
            hc_close(hc, true);   /* a response to a half-closed client still goes out */
            return;
        }
        hc_gone(hc, r == 0 ? "peer closed the connection" : strerror(errno));
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
    if (write_some(hc) != 0) { hc_gone(hc, strerror(errno)); return; }
    if (evbuffer_get_length(hc->out) > 0) return;
    if (hc->st == HC_CLOSING) { hc_free(hc); return; }
    if (hc->conn) lb_conn_writable(hc->conn);
    else if (hc->sess) eio_flush(hc->sess);
}

static void tmo_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct hc *hc = arg;
    if (hc->dead) return;
    switch (hc->st) {
    case HC_CLOSING:
        hc_free(hc);   /* the flush took too long */
        break;
    case HC_HTTP:
        if (hc->req && hc->req->head_seen) {
            hc->wp->n.header_timeouts++;
            wsp_log_refusal(hc->wp, "%s: request head not complete within header_timeout (%llu ms)", hc->addr,
                            (unsigned long long)hc->wp->c.header_timeout_ms);
            hc->keep_alive = false;
            respond_text(hc, 408, NULL, "request head not complete within header_timeout");
        } else {
            hc_close(hc, false);   /* idle keep-alive socket */
        }
        break;
    case HC_WS:
        if (hc->kind == HK_LEXBUS && !hc->ws_closing) {
            ws_frame_write(hc->out, WS_OP_PING, NULL, 0);
            hc->ping_out = true;
            hc_write_out(hc);
            if (!hc->dead) arm_ws_ping(hc);
        }
        break;
    case HC_HELD:
        break;
    }
}

static bool over_limit(struct wsp *wp, const char *addr)
{
    if (!wp->c.max_connections || wp->n_conns < wp->c.max_connections) return false;
    wp->n.over_limit++;
    wsp_log_refusal(wp, "refused %s: max_connections (%lld) reached", addr, wp->c.max_connections);
    return true;
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l; (void)salen;
    struct wsp *wp = arg;
    char addr[64];
    format_addr(sa, addr, sizeof addr);
    if (over_limit(wp, addr)) { evutil_closesocket(fd); return; }
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
    restart_header_timer(hc);
    hc_update_events(hc);
}

/* ---- [plugin websocket] -------------------------------------------- */

#define NAMES_PREFIX "names."
#define MAX_DEMO (1024 * 1024)

static void conf_free(struct wsp_conf *c)
{
    for (size_t i = 0; i < c->n_origins; i++) free(c->origins[i]);
    for (size_t i = 0; i < c->n_names; i++) { free(c->names[i].from); free(c->names[i].to); }
    free(c->names);
    free(c->subscribe_json);
    free(c->demo_page);
    memset(c, 0, sizeof *c);
}

/* Splits a comma/space separated value into words (in a copy). */
static size_t split_words(const char *v, char *buf, size_t buflen, char **words, size_t max)
{
    snprintf(buf, buflen, "%s", v);
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        if (n == max) return max + 1;
        words[n++] = t;
    }
    return n;
}

static int fail_at(struct lb_plugin_ctx *ctx, const char *key, const char *fmt, const char *arg)
{
    char where[512], msg[512];
    snprintf(msg, sizeof msg, fmt, arg);
    lb_plugin_fail(ctx, "%s: %s: %s", lb_conf_where(ctx, key, where, sizeof where), key, msg);
    return -1;
}

static int read_origins(struct lb_plugin_ctx *ctx, struct wsp_conf *c)
{
    const char *v;
    if (lb_conf_str(ctx, "allowed_origins", NULL, &v) < 0) return -1;
    if (!v) {
        /* Browsers on other sites may not drive the bus in production. */
        if (lb_bus_production(ctx)) c->same_origin = true;
        else c->origins_any = true;
        return 0;
    }
    const char *p = v;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t') p++;
        if (!*p) break;
        const char *s = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t') p++;
        size_t n = (size_t)(p - s);
        if (n == 1 && *s == '*') { c->origins_any = true; continue; }
        if (n == 11 && !strncmp(s, "same-origin", 11)) { c->same_origin = true; continue; }
        const char *sep = memmem(s, n, "://", 3);
        if (!sep || sep == s || memchr(sep + 3, '/', (size_t)(s + n - sep - 3)) || s + n == sep + 3)
            return fail_at(ctx, "allowed_origins", "'%s' is not *, same-origin or an origin such as https://app.example.com", v);
        if (c->n_origins == WSP_MAX_ORIGINS) return fail_at(ctx, "allowed_origins", "more than 32 origins in '%s'", v);
        c->origins[c->n_origins++] = xstrndup(s, n);
    }
    return 0;
}

static int read_names(struct lb_plugin_ctx *ctx, struct wsp_conf *c)
{
    const char *const *keys;
    size_t n = lb_conf_keys(ctx, &keys);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(keys[i], NAMES_PREFIX, strlen(NAMES_PREFIX))) continue;
        const char *from = keys[i] + strlen(NAMES_PREFIX), *to;
        if (lb_conf_str(ctx, keys[i], NULL, &to) < 0) return -1;
        if (!valid_service_name(from, strlen(from)))
            return fail_at(ctx, keys[i], "'%s' after names. must be a namespace name (/ipc/<name>): A-Z a-z 0-9 _ . - / @", from);
        if (!valid_service_name(to, strlen(to)))
            return fail_at(ctx, keys[i], "'%s' is not a service name (1-128 characters of A-Z a-z 0-9 _ . - / @)", to);
        c->names = xrealloc(c->names, (c->n_names + 1) * sizeof *c->names);
        c->names[c->n_names++] = (struct name_map){ xstrdup(from), xstrdup(to) };
    }
    return 0;
}

static int read_subscribe(struct lb_plugin_ctx *ctx, struct wsp_conf *c)
{
    const char *v;
    char buf[4096], *w[WSP_MAX_SUBSCRIBE + 1];
    if (lb_conf_str(ctx, "subscribe", ">", &v) < 0) return -1;
    size_t n = split_words(v, buf, sizeof buf, w, WSP_MAX_SUBSCRIBE);
    if (n > WSP_MAX_SUBSCRIBE) return fail_at(ctx, "subscribe", "more than 32 patterns in '%s'", v);
    struct jw j;
    jw_init(&j, 64);
    jw_lit(&j, "[");
    for (size_t i = 0; i < n; i++) {
        if (!valid_event_pattern(w[i], strlen(w[i]))) {
            jw_free(&j);
            return fail_at(ctx, "subscribe", "'%s' is not an event pattern (segments separated by ':', * and a final >)", w[i]);
        }
        if (i) jw_lit(&j, ",");
        jw_cstr(&j, w[i]);
    }
    jw_lit(&j, "]");
    jw_raw(&j, "", 1);
    c->subscribe_json = j.buf;
    return 0;
}

/* The demo page, read once (and again on reload). */
static int read_demo(struct lb_plugin_ctx *ctx, struct wsp_conf *c)
{
    const char *file;
    if (lb_conf_str(ctx, "demo_file", NULL, &file) < 0) return -1;
    if (!c->demo) return 0;
    const char *tries[3] = { file ? lb_conf_path(ctx, file) : NULL, LB_WEBDIR "/index.html", LB_SRC_WEBDIR "/index.html" };
    for (int i = file ? 0 : 1; i < 3; i++) {
        FILE *f = tries[i] ? fopen(tries[i], "rb") : NULL;
        if (!f) { if (file) break; continue; }
        char *buf = malloc(MAX_DEMO + 1);
        size_t n = buf ? fread(buf, 1, MAX_DEMO + 1, f) : 0;
        fclose(f);
        if (!buf || n > MAX_DEMO) {
            free(buf);
            return fail_at(ctx, "demo_file", "%s is larger than 1 MiB", tries[i]);
        }
        c->demo_page = buf;
        c->demo_len = n;
        return 0;
    }
    return fail_at(ctx, file ? "demo_file" : "demo", "demo = yes but the page %s cannot be read",
                   file ? tries[0] : LB_WEBDIR "/index.html");
}

static int check_path(struct lb_plugin_ctx *ctx, const char *key, const char *v)
{
    if (v[0] != '/' || strlen(v) > 256 || strpbrk(v, "?# \t"))
        return fail_at(ctx, key, "'%s' must be a path starting with / (no ? or #)", v);
    return 0;
}

static int read_conf(struct lb_plugin_ctx *ctx, struct wsp_conf *c)
{
    memset(c, 0, sizeof *c);
    long long pings;
    if (lb_conf_bool(ctx, "lexbus", true, &c->lexbus) < 0 || lb_conf_str(ctx, "path", "/lexbus", &c->path) < 0 ||
        lb_conf_bool(ctx, "socketio", true, &c->socketio) < 0 ||
        lb_conf_str(ctx, "socketio_path", "/socket.io/", &c->sio_path) < 0 ||
        lb_conf_bool(ctx, "health", true, &c->health) < 0 || lb_conf_bool(ctx, "stats", true, &c->stats) < 0 ||
        lb_conf_bool(ctx, "metrics", true, &c->metrics) < 0 || lb_conf_bool(ctx, "demo", false, &c->demo) < 0 ||
        lb_conf_int(ctx, "max_connections", 0, 0, 10000000, &c->max_connections) < 0 ||
        lb_conf_size(ctx, "max_header", 8192, &c->max_head) < 0 ||
        lb_conf_size(ctx, "max_payload", 1000000, &c->max_payload) < 0 ||
        lb_conf_size(ctx, "max_message", 1024 * 1024, &c->max_message) < 0 ||
        lb_conf_ms(ctx, "header_timeout", 10000, &c->header_timeout_ms) < 0 ||
        lb_conf_ms(ctx, "handshake_timeout", 10000, &c->handshake_timeout_ms) < 0 ||
        lb_conf_ms(ctx, "ping_interval", 25000, &c->ping_interval_ms) < 0 ||
        lb_conf_ms(ctx, "ping_timeout", 20000, &c->ping_timeout_ms) < 0 ||
        lb_conf_ms(ctx, "upgrade_timeout", 10000, &c->upgrade_timeout_ms) < 0 ||
        lb_conf_int(ctx, "max_pending", 1024, 1, 1000000, &c->max_pending) < 0 ||
        lb_conf_int(ctx, "max_namespaces", 32, 1, 1024, &c->max_namespaces) < 0 ||
        lb_conf_int(ctx, "max_ping_rate", 10, 1, 100000, &pings) < 0 ||
        lb_conf_str(ctx, "prefix", "", &c->prefix) < 0)
        return -1;
    c->max_pings_per_s = (unsigned)pings;
    if (check_path(ctx, "path", c->path) || check_path(ctx, "socketio_path", c->sio_path)) return -1;
    c->sio_path_len = strlen(c->sio_path);
    if (c->sio_path_len > 1 && c->sio_path[c->sio_path_len - 1] == '/') c->sio_path_len--;
    if (c->max_head < 1024 || c->max_head > 1024 * 1024) return fail_at(ctx, "max_header", "%s", "must be 1K to 1M");
    if (c->max_payload < 1024 || c->max_payload > 64 * 1024 * 1024)
        return fail_at(ctx, "max_payload", "%s", "must be 1K to 64M");
    if (c->max_message < 1024 || c->max_message > 1024 * 1024 * 1024)
        return fail_at(ctx, "max_message", "%s", "must be 1K to 1G");
    struct { const char *key; uint64_t v; } ms[] = {
        { "header_timeout", c->header_timeout_ms }, { "handshake_timeout", c->handshake_timeout_ms },
        { "ping_interval", c->ping_interval_ms }, { "ping_timeout", c->ping_timeout_ms },
        { "upgrade_timeout", c->upgrade_timeout_ms },
    };
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
        if (ms[i].v < 50 || ms[i].v > 3600 * 1000) return fail_at(ctx, ms[i].key, "%s", "must be 50ms to 1h");
    if (*c->prefix && !valid_service_name(c->prefix, strlen(c->prefix)))
        return fail_at(ctx, "prefix", "'%s' may only hold A-Z a-z 0-9 _ . - / @", c->prefix);
    if (read_origins(ctx, c) || read_names(ctx, c) || read_subscribe(ctx, c) || read_demo(ctx, c)) return -1;
    return 0;
}

/* host:port, numeric (IPv6 as [::1]:port) or localhost; the port is required. */
static int parse_listen(const char *s, struct sockaddr_storage *ss, int *len)
{
    char tmp[160];
    const char *colon = strrchr(s, ':');
    if (!colon || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1) || strlen(colon + 1) > 5) return -1;
    if (!strncmp(s, "localhost:", 10)) {
        snprintf(tmp, sizeof tmp, "127.0.0.1%s", colon);
        s = tmp;
    }
    *len = (int)sizeof *ss;
    memset(ss, 0, sizeof *ss);
    if (evutil_parse_sockaddr_port(s, (struct sockaddr *)ss, len) != 0) return -1;
    return atoi(colon + 1) > 65535 ? -1 : 0;
}

static json_t *stats_fn(void *ud);

static int open_listeners(struct wsp *wp, const char *const *listen, size_t n)
{
    struct lb_plugin_ctx *ctx = wp->ctx;
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        int sl;
        parse_listen(listen[i], &ss, &sl);   /* checked before */
        unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
        if (ss.ss_family == AF_INET6) flags |= LEV_OPT_BIND_IPV6ONLY;
        struct evconnlistener *l = evconnlistener_new_bind(lb_event_base(ctx), accept_cb, wp, flags, 4096,
                                                           (struct sockaddr *)&ss, sl);
        if (!l) {
            lb_plugin_fail(ctx, "cannot listen on %s: %s", listen[i], strerror(errno));
            return -1;
        }
        lb_listener_add(ctx, l);
        wp->listen[wp->n_listeners] = xstrdup(listen[i]);
        wp->listeners[wp->n_listeners++] = l;
        struct sockaddr_storage bound;
        socklen_t bl = sizeof bound;
        char where[64];
        if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &bl) == 0)
            format_addr((struct sockaddr *)&bound, where, sizeof where);
        else
            snprintf(where, sizeof where, "%s", listen[i]);
        lb_log(ctx, LB_LOG_INFO, "listening on http://%s (%s%s%s%s%s%s)", where,
               wp->c.lexbus ? wp->c.path : "", wp->c.socketio ? " " : "", wp->c.socketio ? wp->c.sio_path : "",
               wp->c.health ? " /health" : "", wp->c.metrics ? " /metrics" : "", wp->c.demo ? " demo at /" : "");
    }
    return 0;
}

static int ws_load(struct lb_plugin_ctx *ctx)
{
    struct wsp_conf c;
    if (read_conf(ctx, &c) < 0) { conf_free(&c); return -1; }
    const char *const *listen;
    size_t n = lb_conf_list(ctx, "listen", &listen);
    if (n == 0 || n > WSP_MAX_LISTENERS) {
        conf_free(&c);
        lb_plugin_fail(ctx, "give 1 to %d 'listen = host:port' lines", WSP_MAX_LISTENERS);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        int sl;
        if (parse_listen(listen[i], &ss, &sl)) {
            conf_free(&c);
            lb_plugin_fail(ctx, "listen '%s' is not host:port with a numeric host (127.0.0.1:3010, [::1]:3010)", listen[i]);
            return -1;
        }
    }
    if (lb_check_only(ctx)) { conf_free(&c); return 0; }
    struct wsp *wp = xcalloc(1, sizeof *wp);
    wp->ctx = ctx;
    wp->c = c;
    wp->started_ms = lb_now_ms();
    ht_init(&wp->sessions, 6);
    jw_init(&wp->scratch, 4096);
    jw_init(&wp->reqbuf, 4096);
    jw_init(&wp->catbuf, 256);
    lb_plugin_set_data(ctx, wp);
    if (open_listeners(wp, listen, n) < 0) return -1;   /* the host calls unload */
    lb_stats_register(ctx, stats_fn, wp);
    return 0;
}

static void ws_unload(struct lb_plugin_ctx *ctx)
{
    struct wsp *wp = lb_plugin_data(ctx);
    if (!wp) return;
    for (size_t i = 0; i < wp->n_listeners; i++) {
        lb_listener_remove(ctx, wp->listeners[i]);
        evconnlistener_free(wp->listeners[i]);
        free(wp->listen[i]);
    }
    eio_close_all(wp);
    while (wp->conns) hc_free_now(wp->conns);
    conf_free(&wp->c);
    ht_free(&wp->sessions);
    jw_free(&wp->scratch);
    jw_free(&wp->reqbuf);
    jw_free(&wp->catbuf);
    free(wp);
    lb_plugin_set_data(ctx, NULL);
}

static int ws_reload(struct lb_plugin_ctx *ctx)
{
    struct wsp_conf c;
    if (read_conf(ctx, &c) < 0) { conf_free(&c); return -1; }
    const char *const *listen;
    size_t n = lb_conf_list(ctx, "listen", &listen);
    struct wsp *wp = lb_plugin_data(ctx);
    if (!wp) { conf_free(&c); return 0; }
    bool same = n == wp->n_listeners;
    for (size_t i = 0; same && i < n; i++) same = !strcmp(listen[i], wp->listen[i]);
    if (!same) lb_log(ctx, LB_LOG_WARN, "listen changed: takes effect on restart (still serving the old addresses)");
    conf_free(&wp->c);
    wp->c = c;
    lb_log(ctx, LB_LOG_INFO, "settings reloaded; established connections keep theirs where they were agreed");
    return 0;
}

static json_t *stats_fn(void *ud)
{
    struct wsp *wp = ud;
    const struct wsp_counters *n = &wp->n;
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                     "sockets", (json_int_t)wp->n_conns, "lexbusConnections", (json_int_t)wp->n_lexbus,
                     "sessions", (json_int_t)wp->n_sessions, "namespaces", (json_int_t)wp->n_namespaces,
                     "accepted", (json_int_t)n->accepted, "overLimit", (json_int_t)n->over_limit,
                     "httpRequests", (json_int_t)n->http_requests, "httpErrors", (json_int_t)n->http_errors,
                     "headerTimeouts", (json_int_t)n->header_timeouts, "webSockets", (json_int_t)n->ws_lexbus,
                     "webSocketErrors", (json_int_t)n->ws_errors, "eioSessions", (json_int_t)n->eio_sessions,
                     "eioPolling", (json_int_t)n->eio_polling, "eioUpgrades", (json_int_t)n->eio_upgrades,
                     "eioTimeouts", (json_int_t)n->eio_timeouts, "sioJoins", (json_int_t)n->sio_joins,
                     "sioRefused", (json_int_t)n->sio_refused, "sioBadPackets", (json_int_t)n->sio_bad_packets,
                     "binaryRefused", (json_int_t)n->binary_refused, "pingFloods", (json_int_t)n->ping_floods);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .name = "websocket",
    .version = PACKAGE_VERSION,
    .load = ws_load,
    .unload = ws_unload,
    .reload = ws_reload,
};
