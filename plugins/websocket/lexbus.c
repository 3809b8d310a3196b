/*
 * GET /lexbus (lexbus.h): RFC 6455, one text message = one lexbus JSON
 * message, the WebSocket itself the transport of one lb_conn.  Server
 * pings every ping period; their pongs count as the connection's
 * heartbeats.
 */
#include "config.h"
#include <event2/buffer.h>
#include "lexbus.h"
#include "sock.h"

/* ---- the bus's side: the transport's ops --------------------------- */

static void arm_ws_ping(struct hc *hc) { wsp_arm(&hc->tmo, wsp_ping_period(hc->wp)); }

static int lx_send(void *tdata, const struct iovec *iov, int iovcnt)
{
    struct hc *hc = tdata;
    if (hc->dead || hc->ws_closing) return -1;
    return hc_ws_frame(hc, WS_OP_TEXT, iov, iovcnt);
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
    /* The host closes with a flush at shutdown (draining) or right after
     * an ERROR that says why (eviction, a revoked token, ...). */
    if (flush && lb_bus_draining(hc->wp->ctx)) hc_ws_close_frame(hc, 1001, "lexbusd is going away");
    else if (flush) hc_ws_close_frame(hc, 1008, "closed by the bus (see its ERROR)");
    hc_close(hc, flush);
}

static int lx_flush(void *tdata)
{
    struct hc *hc = tdata;
    if (hc->dead) return -1;
    return hc_write(hc);
}

/* A slow consumer's SLOW_CONSUMER goes out next: drop the whole frames
 * queued after what is being written. */
static void lx_discard(void *tdata)
{
    struct hc *hc = tdata;
    stream_discard(&hc->marks, hc->out);
}

static const struct lb_conn_ops lexbus_ops = {
    .size = sizeof lexbus_ops, .send = lx_send, .pending = lx_pending, .set_read = lx_set_read,
    .close = lx_close, .flush = lx_flush, .discard = lx_discard,
};

/* ---- the socket's side: what sock.c tells us ---------------------- */

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

static void lx_ping(struct hc *hc)
{
    if (hc->ws_closing) return;
    hc_ws_frame(hc, WS_OP_PING, NULL, 0);
    hc->ping_out = true;
    hc_write_out(hc);
    if (!hc->dead) arm_ws_ping(hc);
}

/* The socket ends: so does its connection on the bus. */
static void lx_gone(struct hc *hc, const char *why)
{
    if (!hc->conn) return;
    struct lb_conn *c = hc->conn;
    hc->conn = NULL;
    hc->ws_closing = true;   /* op_close sees it: nothing left to do there */
    lb_conn_gone(c, why);
}

static void lx_writable(struct hc *hc)
{
    if (hc->conn) lb_conn_writable(hc->conn);
}

static void lx_freed(struct hc *hc)
{
    hc->wp->n_lexbus--;
}

static const struct hc_ops lexbus_sock_ops = {
    .message = lexbus_message, .gone = lx_gone, .writable = lx_writable, .timer = lx_ping, .freed = lx_freed,
};

/* ---- the upgrade ----------------------------------------------------- */

void lexbus_upgrade(struct hc *hc, struct http_req *r)
{
    struct wsp *wp = hc->wp;
    int status;
    const char *why, *extra;
    hc->keep_alive = false;
    if (hc_ws_check(hc, &status, &why, &extra)) {
        wsp_log_refusal(wp, "%s: WebSocket upgrade refused (%d): %s", hc->addr, status, why);
        hc_respond_text(hc, status, extra, why);
        return;
    }
    if (ws_reader_init(&hc->wr, wsp_max_message(wp)) != 0) { hc_respond_text(hc, 503, NULL, "out of memory"); return; }
    struct lb_peer peer;
    wsp_peer(&peer, "websocket", hc->addr, hc->cert_subject, hc->ids, hc->n_ids);
    hc->ops = &lexbus_sock_ops;
    wp->n_lexbus++;
    hc->conn = lb_conn_new(wp->ctx, &lexbus_ops, hc, &peer);
    if (!hc->conn) {
        hc_respond_text(hc, 503, NULL, "the bus refused the connection (max_connections, draining, or a policy)");
        return;
    }
    /* Text messages are JSON: a first byte that looks like a MessagePack
     * map (a UTF-8 lead byte 0xde or 0xdf can) must not switch the
     * connection to binary answers in text frames. */
    lb_conn_set_encoding(hc->conn, LB_ENCODING_JSON);
    wp->n.ws_lexbus++;
    const char *sub = http_req_header_has_token(r, "sec-websocket-protocol", "lexbus") ? "lexbus" : NULL;
    hc_ws_accept(hc, sub);
    arm_ws_ping(hc);
}
