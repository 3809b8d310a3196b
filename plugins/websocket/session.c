/*
 * Engine.IO v4 sessions: the open handshake, server pings (pingInterval /
 * pingTimeout), HTTP long-polling (one held GET, POSTed batches, 0x1E
 * separators), the upgrade to WebSocket (2probe / 3probe / 5, noops to the
 * held poll), and the session's end.  Socket.IO packets go to the layer
 * the session carries (wp->sio: bridge.c), as do its pongs, its end and
 * its deferred work.
 *
 * A session outlives the HTTP requests of a polling client: it holds the
 * packets for the next GET (pq), the held GET itself, a POST held back by
 * back-pressure, and its namespaces.  Closing is deferred (`later`) when
 * it is asked for from inside a host callback: the host may be walking its
 * connection list.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/buffer.h>
#include <openssl/crypto.h>
#include "session.h"
#include "sock.h"
#include "eio.h"

struct eio {
    struct wsp *wp;
    uint64_t slot;               /* in wp->sessions; its index ends the sid */
    char sid[WSP_SID_LEN + 1];
    bool websocket;              /* carried by a WebSocket (from the start or upgraded) */
    struct hc *ws;               /* that WebSocket */
    struct hc *probe;            /* polling: a WebSocket being upgraded to */
    bool probed;                 /* the probe was answered: polls get noops */
    struct hc *get;              /* polling: the held GET */
    struct hc *post;             /* polling: a POST held back by back-pressure */
    struct evbuffer *pq;         /* polling: packets waiting for a GET */
    struct event ping_ev;        /* the next ping, or the pong deadline */
    struct event connect_ev;     /* some namespace must be joined in time */
    struct event upgrade_ev;     /* the probe must finish in time */
    struct event later;          /* deferred: answer a poll, close, held POST */
    bool awaiting_pong;
    bool closed;
    const char *close_later;     /* a close asked for inside a host callback */
    unsigned close_later_code;
    int busy;
    unsigned paused;             /* namespaces paused by back-pressure */
    unsigned skip_binary;        /* attachments of a refused binary packet to drop */
    struct sns **ns;
    size_t n_ns, cap_ns;
    char addr[64];
    /* The client certificate of the socket that opened the session:
     * every later request of the session must come with the same one. */
    char cert_subject[256];
    const char **ids;            /* its names (owned), for the namespaces */
    size_t n_ids;
};

static void take(struct hc *hc, struct eio *s);

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The slot a sid names: its last characters, base64url, 6 bits each. */
static int sid_slot(const char *sid, uint32_t *slot)
{
    uint32_t v = 0;
    for (size_t k = WSP_SID_RANDOM; k < WSP_SID_LEN; k++) {
        const char *c = sid[k] ? memchr(B64, sid[k], 64) : NULL;
        if (!c) return -1;
        v = v << 6 | (uint32_t)(c - B64);
    }
    *slot = v;
    return 0;
}

static struct eio *find_session(struct wsp *wp, const char *sid, size_t n)
{
    uint32_t i;
    if (n != WSP_SID_LEN || sid_slot(sid, &i) != 0 || i >= wp->sessions.cap) return NULL;
    struct eio *s = slots_at(&wp->sessions, i);
    /* Constant time: the random part is the session's only secret. */
    return s && CRYPTO_memcmp(s->sid, sid, WSP_SID_LEN) == 0 ? s : NULL;
}

bool eio_closed(const struct eio *s) { return s->closed; }
const char *eio_addr(const struct eio *s) { return s->addr; }
struct lb_plugin_ctx *eio_ctx(const struct eio *s) { return s->wp->ctx; }
struct wsp *eio_wsp(const struct eio *s) { return s->wp; }

void eio_peer(const struct eio *s, struct lb_peer *peer)
{
    wsp_peer(peer, "socket.io", s->addr, s->cert_subject, s->ids, s->n_ids);
}
size_t eio_ns_count(const struct eio *s) { return s->n_ns; }
struct sns *eio_ns_at(const struct eio *s, size_t i) { return s->ns[i]; }

void eio_each_ns(struct wsp *wp, void (*fn)(void *ud, struct sns *ns), void *ud)
{
    for (uint32_t i = 0; i < wp->sessions.cap; i++) {
        struct eio *s = slots_at(&wp->sessions, i);
        for (size_t k = 0; s && k < s->n_ns; k++) fn(ud, s->ns[k]);
    }
}

int eio_add_ns(struct eio *s, struct sns *ns)
{
    if (s->n_ns == s->cap_ns) {
        s->cap_ns = s->cap_ns ? s->cap_ns * 2 : 4;
        s->ns = wsp_realloc(s->ns, s->cap_ns * sizeof *s->ns);
    }
    s->ns[s->n_ns++] = ns;
    s->wp->n_namespaces++;
    if (s->n_ns == 1) evtimer_del(&s->connect_ev);
    return 0;
}

void eio_remove_ns(struct eio *s, struct sns *ns)
{
    for (size_t i = 0; i < s->n_ns; i++) {
        if (s->ns[i] != ns) continue;
        memmove(s->ns + i, s->ns + i + 1, (s->n_ns - i - 1) * sizeof *s->ns);
        s->n_ns--;
        s->wp->n_namespaces--;
        return;
    }
}

/* ---- lifetime ------------------------------------------------------ */

static void session_free(struct eio *s)
{
    event_del(&s->ping_ev);
    event_del(&s->connect_ev);
    event_del(&s->upgrade_ev);
    event_del(&s->later);
    if (s->pq) evbuffer_free(s->pq);
    free(s->ns);
    free(s->ids);
    free(s);
}

static void unref(struct eio *s)
{
    if (--s->busy == 0 && s->closed) session_free(s);
}

static void later_soon(struct eio *s)
{
    if (!s->closed) event_active(&s->later, EV_TIMEOUT, 0);
}

static void answer_poll(struct eio *s, const char *body, size_t n)
{
    struct hc *hc = s->get;
    char cors[512];
    s->get = NULL;
    wsp_cors_headers(hc->req, cors, sizeof cors);
    hc_respond(hc, 200, "text/plain; charset=UTF-8", cors, body, n);
}

/* Ends the session.  `client`: the client asked (a polling GET is then
 * ended with a noop, as the reference server does, else with a close). */
static void close_now(struct eio *s, const char *why, unsigned code, bool client)
{
    if (s->closed) return;
    s->closed = true;
    s->busy++;
    struct wsp *wp = s->wp;
    slots_del(&wp->sessions, s->slot);
    wp->n_sessions--;
    lb_log(wp->ctx, LB_LOG_DEBUG, "%s: Engine.IO session %s closed: %s", s->addr, s->sid, why);
    event_del(&s->ping_ev);
    event_del(&s->connect_ev);
    event_del(&s->upgrade_ev);
    wp->sio->closing(s, why);
    if (s->get) {
        s->get->sess = NULL;
        answer_poll(s, client ? "6" : "1", 1);
    }
    if (s->post) {
        struct hc *hc = s->post;
        s->post = NULL;
        hc->sess = NULL;
        hc->keep_alive = false;
        hc_respond_eio_error(hc, 400, 1, "Session ID unknown");
    }
    struct hc *socks[2] = { s->probe, s->ws };
    s->probe = s->ws = NULL;
    for (int i = 0; i < 2; i++) {
        if (!socks[i]) continue;
        socks[i]->sess = NULL;
        hc_ws_fail(socks[i], code, why);
    }
    unref(s);
}

/* From inside a host callback: the host may be walking its connections. */
static void close_deferred(struct eio *s, unsigned code, const char *why)
{
    if (s->closed || s->close_later) return;
    s->close_later = why;
    s->close_later_code = code;
    later_soon(s);
}

static void fail(struct eio *s, const char *why)
{
    s->wp->n.sio_bad_packets++;
    wsp_log_refusal(s->wp, "%s: Engine.IO session %s closed: %s", s->addr, s->sid, why);
    close_now(s, why, 1008, false);
}

void eio_close_all(struct wsp *wp, const char *why)
{
    /* Unload or the drain: the host has closed every lb_conn already. */
    for (uint32_t i = 0; i < wp->sessions.cap; i++) {
        struct eio *s = slots_at(&wp->sessions, i);
        if (s) close_now(s, why, 1001, false);
    }
}

/* ---- output -------------------------------------------------------- */

int eio_send(struct eio *s, const char *p, size_t n)
{
    if (s->closed || s->close_later) return -1;
    if (s->websocket) {
        if (!s->ws || hc_ws_text(s->ws, p, n) != 0) return -1;
    } else {
        if (!s->pq && !(s->pq = evbuffer_new())) return -1;
        if (evbuffer_get_length(s->pq)) evbuffer_add(s->pq, "\x1e", 1);
        if (evbuffer_add(s->pq, p, n) != 0) return -1;
    }
    later_soon(s);   /* written once per loop iteration */
    return 0;
}

size_t eio_pending(const struct eio *s)
{
    if (s->websocket) return s->ws ? evbuffer_get_length(s->ws->out) : 0;
    return s->pq ? evbuffer_get_length(s->pq) : 0;
}

int eio_flush(struct eio *s)
{
    if (s->closed) return -1;
    if (s->websocket) {
        if (!s->ws) return -1;
        hc_write_out(s->ws);
        return 0;
    }
    if (s->get && !s->probed && s->pq && evbuffer_get_length(s->pq)) {
        size_t n = evbuffer_get_length(s->pq);
        const char *body = (const char *)evbuffer_pullup(s->pq, (ssize_t)n);
        answer_poll(s, body, n);
        evbuffer_drain(s->pq, n);
    }
    return 0;
}

/* ---- heartbeat ----------------------------------------------------- */

static void ping_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct eio *s = arg;
    if (s->closed) return;
    if (s->awaiting_pong) {
        s->wp->n.eio_timeouts++;
        wsp_log_refusal(s->wp, "%s: Engine.IO session %s: no pong within ping_timeout", s->addr, s->sid);
        close_now(s, "ping timeout", 1000, false);
        return;
    }
    s->awaiting_pong = true;
    eio_send(s, "2", 1);
    wsp_arm(&s->ping_ev, s->wp->c.ping_timeout_ms);
}

static void pong(struct eio *s)
{
    if (!s->awaiting_pong) return;   /* a late or extra pong */
    s->awaiting_pong = false;
    wsp_arm(&s->ping_ev, wsp_ping_period(s->wp));
    s->wp->sio->pong(s);
}

static void connect_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct eio *s = arg;
    if (!s->closed && s->n_ns == 0) {
        s->wp->n.eio_timeouts++;
        wsp_log_refusal(s->wp, "%s: Engine.IO session %s joined no namespace within handshake_timeout", s->addr, s->sid);
        close_now(s, "no namespace joined within handshake_timeout", 1008, false);
    }
}

static void upgrade_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct eio *s = arg;
    struct hc *hc = s->probe;
    if (!hc) return;
    s->probe = NULL;
    s->probed = false;
    hc->sess = NULL;
    hc_ws_fail(hc, 1008, "upgrade not completed within upgrade_timeout");
    eio_flush(s);   /* polling carries on */
}

static void post_process(struct eio *s, struct hc *hc);

static void later_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct eio *s = arg;
    if (s->closed) return;
    s->busy++;
    if (s->close_later) {
        close_now(s, s->close_later, s->close_later_code, false);
    } else {
        s->wp->sio->later(s);
        if (!s->closed && s->post && !s->paused) {
            struct hc *hc = s->post;
            s->post = NULL;
            post_process(s, hc);
        }
        if (!s->closed) eio_flush(s);
    }
    unref(s);
}

void eio_pause(struct eio *s, bool on)
{
    if (on) s->paused++;
    else if (s->paused) s->paused--;
    if (s->ws) hc_set_pause(s->ws, P_HOST, s->paused > 0);
    if (!s->paused && s->post) later_soon(s);
}

/* ---- creating sessions --------------------------------------------- */

static struct eio *session_new(struct hc *hc, bool websocket)
{
    struct wsp *wp = hc->wp;
    if (wp->draining) return NULL;
    if (wp->c.max_connections && wp->n_sessions >= (uint64_t)wp->c.max_connections) {
        wp->n.over_limit++;
        wsp_log_refusal(wp, "refused an Engine.IO session from %s: max_connections (%lld) sessions", hc->addr,
                        wp->c.max_connections);
        return NULL;
    }
    struct eio *s = wsp_alloc(sizeof *s);
    s->wp = wp;
    if ((s->slot = slots_add(&wp->sessions, s)) == SLOT_NONE || (uint32_t)s->slot >> 30) {
        slots_del(&wp->sessions, s->slot);
        free(s);
        return NULL;
    }
    wsp_random_chars(s->sid, WSP_SID_RANDOM);
    for (size_t k = WSP_SID_LEN, v = (uint32_t)s->slot; k-- > WSP_SID_RANDOM; v >>= 6) s->sid[k] = B64[v & 63];
    s->sid[WSP_SID_LEN] = 0;
    wp->n_sessions++;
    wp->n.eio_sessions++;
    if (!websocket) wp->n.eio_polling++;
    s->websocket = websocket;
    snprintf(s->addr, sizeof s->addr, "%s", hc->addr);
    memcpy(s->cert_subject, hc->cert_subject, sizeof s->cert_subject);
    s->ids = wsp_names_dup(hc->ids, hc->n_ids);
    s->n_ids = hc->n_ids;
    struct event_base *base = lb_event_base(wp->ctx);
    evtimer_assign(&s->ping_ev, base, ping_cb, s);
    evtimer_assign(&s->connect_ev, base, connect_cb, s);
    evtimer_assign(&s->upgrade_ev, base, upgrade_cb, s);
    event_assign(&s->later, base, -1, 0, later_cb, s);
    wsp_arm(&s->ping_ev, wsp_ping_period(wp));
    wsp_arm(&s->connect_ev, wp->c.handshake_timeout_ms);
    return s;
}

static int open_packet(struct eio *s, char *out, size_t len)
{
    const struct wsp_conf *c = &s->wp->c;
    return snprintf(out, len, "0{\"sid\":\"%s\",\"upgrades\":%s,\"pingInterval\":%llu,\"pingTimeout\":%llu,"
                    "\"maxPayload\":%llu}", s->sid, s->websocket ? "[]" : "[\"websocket\"]",
                    (unsigned long long)c->ping_interval_ms, (unsigned long long)c->ping_timeout_ms,
                    (unsigned long long)c->max_payload);
}

static void ws_refuse(struct hc *hc, int status, const char *extra, const char *why)
{
    hc->keep_alive = false;
    wsp_log_refusal(hc->wp, "%s: Engine.IO WebSocket refused (%d): %s", hc->addr, status, why);
    hc_respond_text(hc, status, extra, why);
}

/* The client's WebSocket, new session or upgrade probe. */
static void ws_open(struct hc *hc, struct eio *s)
{
    struct wsp *wp = hc->wp;
    int status;
    const char *why, *extra;
    hc->keep_alive = false;
    if (hc_ws_check(hc, &status, &why, &extra)) { ws_refuse(hc, status, extra, why); return; }
    if (s && (s->websocket || s->probe)) { ws_refuse(hc, 400, NULL, "the session already has a WebSocket"); return; }
    if (ws_reader_init(&hc->wr, wp->c.max_payload) != 0) { ws_refuse(hc, 503, NULL, "out of memory"); return; }
    if (!s && !(s = session_new(hc, true))) { ws_refuse(hc, 503, NULL, "too many sessions (max_connections)"); return; }
    take(hc, s);
    if (s->websocket) {
        s->ws = hc;
        hc_ws_accept(hc, NULL);
        char open[256];
        int n = open_packet(s, open, sizeof open);
        eio_send(s, open, (size_t)n);
    } else {
        s->probe = hc;
        wsp_arm(&s->upgrade_ev, wp->c.upgrade_timeout_ms);
        hc_ws_accept(hc, NULL);
    }
}

/* ---- polling ------------------------------------------------------- */

static void poll_get(struct hc *hc, struct eio *s)
{
    if (s->get) {
        /* Two polls at once: the reference server ends the session. */
        hc->keep_alive = false;
        hc_respond_eio_error(hc, 400, 3, "Bad request");
        fail(s, "two concurrent polling requests");
        return;
    }
    s->get = hc;
    hc->st = HC_HELD;
    take(hc, s);
    hc->pause |= P_HELD;
    if (s->probed) { s->get->sess = NULL; answer_poll(s, "6", 1); return; }
    eio_flush(s);
}

/* Packets of a POST body; answers it. */
static int eio_packet(struct eio *s, struct hc *probe, const char *p, size_t n, const char **why);

static void post_process(struct eio *s, struct hc *hc)
{
    struct http_req *r = hc->req;
    hc->sess = NULL;
    if (hc->st == HC_HELD) { hc->st = HC_HTTP; hc->pause &= ~P_HELD; }
    const char *why = NULL;
    if (!ws_utf8_valid((const uint8_t *)(r->body ? r->body : ""), r->body_len)) why = "POST body is not UTF-8 text";
    size_t off = 0, n;
    const char *pkt;
    int rc = 0;
    s->busy++;
    while (!why && !s->closed && eio_payload_next(r->body ? r->body : "", r->body_len, &off, &pkt, &n)) {
        if ((rc = eio_packet(s, NULL, pkt, n, &why)) != 0) break;
    }
    if (why) {
        hc->keep_alive = false;
        hc_respond_eio_error(hc, 400, 3, "Bad request");
        fail(s, why);
    } else {
        char cors[512];
        wsp_cors_headers(r, cors, sizeof cors);
        hc_respond(hc, 200, "text/html", cors, "ok", 2);
    }
    unref(s);
}

static void poll_post(struct hc *hc, struct eio *s)
{
    size_t tn;
    const char *type = http_req_header(hc->req, "content-type", &tn);
    if (s->post) {
        hc->keep_alive = false;
        hc_respond_eio_error(hc, 400, 3, "Bad request");
        fail(s, "two concurrent POST requests");
        return;
    }
    if (type && tn >= 24 && !strncasecmp(type, "application/octet-stream", 24)) {
        hc->keep_alive = false;
        hc_respond_eio_error(hc, 400, 3, "Bad request");
        s->wp->n.binary_refused++;
        fail(s, "binary POST bodies are not supported (lexbus carries JSON text)");
        return;
    }
    if (s->paused) {
        /* Back-pressure: the POST waits (and so does the client). */
        s->post = hc;
        hc->st = HC_HELD;
        take(hc, s);
        hc->pause |= P_HELD;
        return;
    }
    post_process(s, hc);
}

static void preflight(struct hc *hc)
{
    if (!wsp_origin_ok(hc->wp, hc->req)) { hc_respond_eio_error(hc, 403, 4, "Forbidden"); return; }
    char h[768];
    wsp_cors_headers(hc->req, h, sizeof h - 200);
    size_t k = strlen(h);
    snprintf(h + k, sizeof h - k, "Access-Control-Allow-Methods: GET, POST\r\n"
             "Access-Control-Allow-Headers: content-type\r\nAccess-Control-Max-Age: 86400\r\n");
    hc_respond(hc, 204, NULL, h, NULL, 0);
}

void eio_http(struct hc *hc, struct http_req *r)
{
    struct wsp *wp = hc->wp;
    size_t en = 0, tn = 0, sn = 0;
    const char *eio = http_query_get(r->query, r->query_len, "EIO", &en);
    const char *tr = http_query_get(r->query, r->query_len, "transport", &tn);
    const char *sid = http_query_get(r->query, r->query_len, "sid", &sn);
    bool ws = tr && tn == 9 && !memcmp(tr, "websocket", 9);
    bool polling = tr && tn == 7 && !memcmp(tr, "polling", 7);
    if (r->upgrade && !ws) hc->keep_alive = false;
    if (r->p.method == HTTP_OPTIONS) { preflight(hc); return; }
    if (!eio || en != 1 || eio[0] != '4') { hc_respond_eio_error(hc, 400, 5, "Unsupported protocol version"); return; }
    if (!ws && !polling) { hc_respond_eio_error(hc, 400, 0, "Transport unknown"); return; }
    if (!wsp_origin_ok(wp, r)) {
        wsp_log_refusal(wp, "%s: Engine.IO request refused: Origin not allowed (allowed_origins)", hc->addr);
        hc_respond_eio_error(hc, 403, 4, "Forbidden");
        return;
    }
    struct eio *s = NULL;
    if (sid && !(s = find_session(wp, sid, sn))) { hc_respond_eio_error(hc, 400, 1, "Session ID unknown"); return; }
    if (s && strcmp(s->cert_subject, hc->cert_subject) != 0) {
        /* The session belongs to the client certificate that opened it. */
        wsp_log_refusal(wp, "%s: Engine.IO request refused: not the client certificate of session %s", hc->addr, s->sid);
        hc_respond_eio_error(hc, 403, 4, "Forbidden");
        return;
    }
    if (ws) { ws_open(hc, s); return; }
    if (!s) {
        if (r->p.method != HTTP_GET) { hc_respond_eio_error(hc, 400, 2, "Bad handshake method"); return; }
        if (!(s = session_new(hc, false))) { hc_respond_eio_error(hc, 503, 3, "too many sessions (max_connections)"); return; }
        char open[256], cors[512];
        int n = open_packet(s, open, sizeof open);
        wsp_cors_headers(r, cors, sizeof cors);
        hc_respond(hc, 200, "text/plain; charset=UTF-8", cors, open, (size_t)n);
        return;
    }
    if (s->websocket) { hc_respond_eio_error(hc, 400, 3, "Bad request"); return; }
    if (r->p.method == HTTP_GET) poll_get(hc, s);
    else if (r->p.method == HTTP_POST) poll_post(hc, s);
    else hc_respond_eio_error(hc, 400, 2, "Bad handshake method");
}

/* ---- packets ------------------------------------------------------- */

static void upgrade_done(struct eio *s)
{
    struct hc *hc = s->probe;
    s->probe = NULL;
    s->probed = false;
    s->websocket = true;
    s->ws = hc;
    evtimer_del(&s->upgrade_ev);
    s->wp->n.eio_upgrades++;
    if (s->get) { s->get->sess = NULL; answer_poll(s, "6", 1); }
    /* What waited for a poll now goes over the WebSocket, in order. */
    if (s->pq && evbuffer_get_length(s->pq)) {
        size_t len = evbuffer_get_length(s->pq), off = 0, n;
        const char *body = (const char *)evbuffer_pullup(s->pq, (ssize_t)len), *pkt;
        while (eio_payload_next(body, len, &off, &pkt, &n)) hc_ws_text(hc, pkt, n);
        evbuffer_drain(s->pq, len);
    }
    if (s->paused) hc_set_pause(hc, P_HOST, true);
    later_soon(s);
}

/* One Engine.IO packet.  Returns 0, 1 to stop reading (the session ended
 * or paused), -1 with *why when the session must close. */
static int eio_packet(struct eio *s, struct hc *probe, const char *p, size_t n, const char **why)
{
    int t = eio_type(p, n);
    if (probe) {
        /* The probe carries nothing but the upgrade. */
        if (t == EIO_PING && n == 6 && !memcmp(p, "2probe", 6)) {
            hc_ws_text(probe, "3probe", 6);
            hc_write_out(probe);
            s->probed = true;
            if (s->get) { s->get->sess = NULL; answer_poll(s, "6", 1); }
            return 0;
        }
        if (t == EIO_UPGRADE && n == 1 && s->probed) { upgrade_done(s); return 0; }
        *why = "unexpected packet during the upgrade";
        return -1;
    }
    switch (t) {
    case EIO_PONG:
        pong(s);
        return 0;
    case EIO_MESSAGE:
        if (s->skip_binary) s->skip_binary = 0;   /* fewer attachments came than announced */
        return s->wp->sio->packet(s, p + 1, n - 1, why) ? -1 : (s->closed || s->paused ? 1 : 0);
    case EIO_CLOSE:
        close_now(s, "the client closed the session", 1000, true);
        return 1;
    case EIO_NOOP:
        return 0;
    case EIO_PING:
        *why = "ping from the client (in Engine.IO v4 the server pings)";
        return -1;
    default:
        *why = "unknown Engine.IO packet type";
        return -1;
    }
}

static int eio_ws_message(struct hc *hc, enum ws_op op, const uint8_t *p, size_t n)
{
    struct eio *s = hc->sess;
    if (!s || s->closed) return -1;
    bool probe = hc == s->probe;
    if (op == WS_OP_PONG) return 0;
    if (op == WS_OP_BINARY) {
        if (s->skip_binary && !probe) { s->skip_binary--; return 0; }
        s->wp->n.binary_refused++;
        if (probe) { s->probe = NULL; s->probed = false; hc->sess = NULL; hc_ws_fail(hc, 1003, "binary frame during the upgrade"); return -1; }
        wsp_log_refusal(s->wp, "%s: Engine.IO session %s closed: binary packet", s->addr, s->sid);
        close_now(s, "binary packets are not supported (lexbus carries JSON text)", 1003, false);
        return -1;
    }
    const char *why = NULL;
    s->busy++;
    int rc = eio_packet(s, probe ? hc : NULL, (const char *)p, n, &why);
    if (rc < 0) {
        if (probe && !s->closed) {
            s->probe = NULL;
            s->probed = false;
            hc->sess = NULL;
            hc_ws_fail(hc, 1008, why);
        } else {
            fail(s, why);
        }
    }
    bool gone = s->closed || hc->dead || hc->ws_closing;
    unref(s);
    return rc < 0 || gone ? -1 : rc;
}

static void eio_socket_gone(struct hc *hc, const char *why)
{
    struct eio *s = hc->sess;
    hc->sess = NULL;
    if (!s || s->closed) return;
    if (hc == s->probe) {
        s->probe = NULL;
        s->probed = false;
        evtimer_del(&s->upgrade_ev);
        later_soon(s);
    } else if (hc == s->ws) {
        s->ws = NULL;
        close_now(s, why, 1000, false);
    } else if (hc == s->get || hc == s->post) {
        /* The reference server ends the session when a held request's
         * connection closes: nothing queued for it may be lost silently. */
        if (hc == s->get) s->get = NULL;
        else s->post = NULL;
        close_now(s, "polling request closed before it was answered", 1000, false);
    }
}

void eio_close_from_host(struct eio *s, unsigned code, const char *why) { close_deferred(s, code, why); }
void eio_skip_binary(struct eio *s, unsigned n) { s->skip_binary = n; }
void eio_later(struct eio *s) { later_soon(s); }

static void eio_writable(struct hc *hc)
{
    if (hc->sess) eio_flush(hc->sess);
}

/* What a socket of a session (its WebSocket, a probe, a held request)
 * tells it. */
static const struct hc_ops eio_sock_ops = {
    .message = eio_ws_message, .gone = eio_socket_gone, .writable = eio_writable,
};

static void take(struct hc *hc, struct eio *s)
{
    hc->sess = s;
    hc->ops = &eio_sock_ops;
}
