#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/listener.h>
#include "conn.h"
#include "frame.h"
#include "router.h"
#include "encoding.h"
#include "policy.h"
#include "plugin_host.h"
#include "log.h"
#include "util.h"

/* ---- creation ------------------------------------------------------ */

static char *dup_or_null(const char *s) { return s ? xstrdup(s) : NULL; }

static void copy_peer(struct lb_peer *dst, const struct lb_peer *src)
{
    *dst = *src;
    dst->transport = dup_or_null(src->transport);
    dst->address = dup_or_null(src->address);
    dst->tls_subject = dup_or_null(src->tls_subject);
    if (src->n_identity_names) {
        char **names = xcalloc(src->n_identity_names, sizeof *names);
        for (size_t i = 0; i < src->n_identity_names; i++) names[i] = xstrdup(src->identity_names[i]);
        dst->identity_names = (const char *const *)names;
    }
}

static void free_peer(struct lb_peer *p)
{
    free((char *)p->transport);
    free((char *)p->address);
    free((char *)p->tls_subject);
    for (size_t i = 0; i < p->n_identity_names; i++) free((char *)p->identity_names[i]);
    free((void *)p->identity_names);
}

struct lb_conn *lb_conn_new(struct lb_plugin_ctx *ctx, const struct lb_conn_ops *ops,
                            void *tdata, const struct lb_peer *peer)
{
    if (g_bus.draining) {
        g_bus.stats.conns_refused++;
        return NULL;
    }
    if (g_bus.set.max_connections && (long long)g_bus.n_conns >= g_bus.set.max_connections) {
        log_warn("conn", "refusing %s connection from %s: max_connections (%lld) reached",
                 peer->transport ? peer->transport : "?", peer->address ? peer->address : "?",
                 g_bus.set.max_connections);
        g_bus.stats.conns_refused++;
        return NULL;
    }
    struct lb_conn *c = xcalloc(1, sizeof *c);
    c->id = ++g_bus.next_conn_id;
    c->refs = 1;
    c->ops = ops;
    c->tdata = tdata;
    c->transport = ctx;
    copy_peer(&c->peer, peer);
    c->auth = "none";
    c->connected_ms = c->last_seen_ms = now_ms();
    c->last_seen_mono_ms = mono_us() / 1000;
    list_init(&c->calls_out);
    list_init(&c->calls_in);
    if (g_bus.n_plugins) c->plugin_data = xcalloc(g_bus.n_plugins, sizeof *c->plugin_data);
    list_add_tail(&g_bus.conns, &c->link);
    g_bus.n_conns++;

    struct lb_verdict v;
    if (policy_accept(c, &v) == LB_DENY) {
        log_info("conn", "refused %s connection from %s: %s %s", c->peer.transport,
                 c->peer.address ? c->peer.address : "?", v.code, v.message);
        g_bus.stats.conns_refused++;
        /* The transport closes the socket itself when we return NULL. */
        c->ops = NULL;
        conn_close(c, false, "refused");
        return NULL;
    }
    g_bus.stats.conns_accepted++;
    log_debug("conn", "#%llu accepted (%s %s)", (unsigned long long)c->id, c->peer.transport,
              c->peer.address ? c->peer.address : "");
    return c;
}

/* ---- references ---------------------------------------------------- */

static void conn_free(struct lb_conn *c)
{
    free_peer(&c->peer);
    free(c->waiters);
    free(c->plugin_data);
    free(c);
}

void conn_ref(struct lb_conn *c) { c->refs++; }

void conn_unref(struct lb_conn *c)
{
    if (--c->refs == 0) conn_free(c);
}

/* ---- input --------------------------------------------------------- */

/* Transports must not be closed while their read callback is still
 * walking their input buffer, so a close requested during input is
 * carried out when the input call returns. */
static void input_begin(struct lb_conn *c) { c->in_input = true; conn_ref(c); }

/* Closed, or to be closed after this iteration: read nothing more. */
static bool closing(const struct lb_conn *c) { return c->dead || c->close_why; }

static int input_end(struct lb_conn *c)
{
    int rc = c->dead ? -1 : 0;
    c->in_input = false;
    if (c->dead && c->ops) {
        const struct lb_conn_ops *ops = c->ops;
        c->ops = NULL;
        ops->close(c->tdata, true);
    }
    conn_unref(c);
    return rc;
}

int lb_conn_input(struct lb_conn *c, const char *frame, size_t len)
{
    if (closing(c)) return -1;
    input_begin(c);
    if (len == 0) {
        conn_send_error(c, NULL, LB_E_BAD_FRAME, "empty frame");
        conn_close(c, true, "empty frame");
    } else if (len > g_bus.set.max_frame) {
        conn_send_error(c, NULL, LB_E_PAYLOAD_TOO_LARGE, "frame of %zu bytes exceeds max_frame (%llu)",
                        len, (unsigned long long)g_bus.set.max_frame);
        conn_close(c, true, "frame too large");
    } else {
        encoding_input(c, frame, len);
    }
    return input_end(c);
}

int lb_conn_read_frames(struct lb_conn *c, struct evbuffer *in)
{
    if (closing(c)) return -1;
    input_begin(c);
    /* Walk the frames of the first contiguous chunk in place and drain
     * once; only a frame split across chunks is pulled up (copied). */
    while (!closing(c)) {
        size_t contig = evbuffer_get_contiguous_space(in);
        const char *base = (const char *)evbuffer_pullup(in, (ssize_t)contig);
        size_t off = 0;
        uint32_t n = 0;
        enum frame_status st = FRAME_NEED_MORE;
        while (!closing(c) && contig - off >= LB_FRAME_HEADER) {
            memcpy(&n, base + off, sizeof n);
            n = ntohl(n);
            if (n == 0 || n > g_bus.set.max_frame || contig - off - LB_FRAME_HEADER < n) break;
            encoding_input(c, base + off + LB_FRAME_HEADER, n);
            off += LB_FRAME_HEADER + (size_t)n;
        }
        if (off) evbuffer_drain(in, off);
        if (closing(c)) break;
        st = frame_peek(in, g_bus.set.max_frame, &n);
        if (st == FRAME_NEED_MORE) break;
        if (st == FRAME_ZERO) {
            conn_send_error(c, NULL, LB_E_BAD_FRAME, "frame length is zero");
            conn_close(c, true, "zero-length frame");
            break;
        }
        if (st == FRAME_TOO_LARGE) {
            /* The stream cannot be resynchronised after a bad length. */
            conn_send_error(c, NULL, LB_E_PAYLOAD_TOO_LARGE, "frame length %u exceeds max_frame (%llu)",
                            n, (unsigned long long)g_bus.set.max_frame);
            conn_close(c, true, "frame too large");
            break;
        }
        /* A whole frame that spans chunks: make it contiguous. */
        const char *p = (const char *)evbuffer_pullup(in, LB_FRAME_HEADER + (ssize_t)n);
        encoding_input(c, p + LB_FRAME_HEADER, n);
        evbuffer_drain(in, LB_FRAME_HEADER + (size_t)n);
    }
    return input_end(c);
}

/* ---- output -------------------------------------------------------- */

/* Queues c for conn_flush_dirty, which runs after every loop iteration. */
static void after_iteration(struct lb_conn *c)
{
    if (c->dirty) return;
    if (g_bus.n_dirty == g_bus.cap_dirty) {
        g_bus.cap_dirty = g_bus.cap_dirty ? g_bus.cap_dirty * 2 : 256;
        g_bus.dirty = xrealloc(g_bus.dirty, g_bus.cap_dirty * sizeof *g_bus.dirty);
    }
    g_bus.dirty[g_bus.n_dirty++] = c;
    c->dirty = true;
    conn_ref(c);
}

/* A connection that fails a send is closed after this loop iteration, not
 * now: closing unlinks its pending calls and subscriptions, which whoever
 * is sending may be walking at this moment (a RESPONSE being forwarded, a
 * fan-out, the heartbeat sweep, a shutdown).  Until then it takes no more
 * output. */
static void close_later(struct lb_conn *c, const char *why)
{
    if (c->close_why) return;
    c->close_why = why;
    after_iteration(c);
}

int conn_send(struct lb_conn *c, const char *p, size_t n, enum lb_msg_type t)
{
    if (c->dead || c->close_why || !c->ops) return -1;
    if (c->encoding == LB_ENCODING_MSGPACK && encoding_output(c, &p, &n) != 0) {
        close_later(c, "cannot encode as MessagePack");
        return -1;
    }
    struct iovec iov = { (void *)p, n };
    if (c->ops->send(c->tdata, &iov, 1) != 0) {
        close_later(c, "send failed");
        return -1;
    }
    if (c->ops->flush) after_iteration(c);
    c->msgs_out++;
    c->bytes_out += n + LB_FRAME_HEADER;
    g_bus.stats.msgs_out[t]++;
    g_bus.stats.bytes_out += n + LB_FRAME_HEADER;
    if (c->ops->pending(c->tdata) > g_bus.set.outbuf_max) {
        g_bus.stats.slow_consumers++;
        log_warn("conn", "#%llu %s: output queue above outbuf_max (%llu bytes): closing as slow consumer",
                 (unsigned long long)c->id, c->svc ? lb_conn_service(c) : "(unregistered)",
                 (unsigned long long)g_bus.set.outbuf_max);
        close_later(c, "slow consumer");
        return -1;
    }
    return 0;
}

void conn_send_error_retry(struct lb_conn *c, const struct env_val *id, const char *code,
                           long long retry_after_ms, const char *msg)
{
    struct jw *w = &g_bus.out;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"ERROR\"");
    if (id && id->kind == J_STRING) {
        jw_lit(w, ",\"id\":\"");
        jw_raw(w, id->p, id->n);
        jw_lit(w, "\"");
    }
    jw_lit(w, ",\"error\":{\"code\":");
    jw_cstr(w, code);
    jw_lit(w, ",\"message\":");
    jw_cstr(w, msg);
    if (retry_after_ms >= 0) { jw_lit(w, ",\"retryAfterMs\":"); jw_i64(w, retry_after_ms); }
    jw_lit(w, "},\"timestamp\":");
    jw_u64(w, now_ms());
    jw_lit(w, "}");
    stats_count_error(&g_bus.stats, code);
    log_debug("conn", "#%llu ERROR %s: %s", (unsigned long long)c->id, code, msg);
    conn_send(c, w->buf, w->len, LB_MSG_ERROR);
}

void conn_send_error(struct lb_conn *c, const struct env_val *id, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    conn_send_error_retry(c, id, code, -1, msg);
}

/* Flushes what this iteration queued and closes the connections that
 * failed a send (close_later). */
void conn_flush_dirty(void)
{
    /* Index loop: a failing flush may close a connection, which may send
     * (and so append to this list). */
    for (size_t i = 0; i < g_bus.n_dirty; i++) {
        struct lb_conn *c = g_bus.dirty[i];
        c->dirty = false;
        if (c->close_why && !c->dead) {
            conn_close(c, false, c->close_why);
        } else if (!c->dead && c->ops && c->ops->flush) {
            if (c->ops->flush(c->tdata) != 0) lb_conn_gone(c, "write failed");
            else lb_conn_writable(c);
        }
        conn_unref(c);
    }
    g_bus.n_dirty = 0;
}

/* ---- back-pressure ------------------------------------------------- */

void conn_backpressure(struct lb_conn *sender, struct lb_conn *to)
{
    if (sender == to || to->dead || sender->dead || !to->ops) return;
    if (to->ops->pending(to->tdata) <= g_bus.set.outbuf_high) return;
    for (size_t i = 0; i < to->n_waiters; i++)
        if (to->waiters[i] == sender) return;
    if (to->n_waiters == to->cap_waiters) {
        to->cap_waiters = to->cap_waiters ? to->cap_waiters * 2 : 4;
        to->waiters = xrealloc(to->waiters, to->cap_waiters * sizeof *to->waiters);
    }
    to->waiters[to->n_waiters++] = sender;
    conn_ref(sender);
    if (to->n_waiters == 1) to->blocked_since_ms = mono_us() / 1000;
    if (sender->waiting_on++ == 0 && sender->ops) {
        sender->ops->set_read(sender->tdata, false);
        g_bus.stats.sender_pauses++;
    }
}

static void release_waiters(struct lb_conn *c)
{
    size_t n = c->n_waiters;
    c->n_waiters = 0;
    c->blocked_since_ms = 0;
    for (size_t i = 0; i < n; i++) {
        struct lb_conn *s = c->waiters[i];
        if (--s->waiting_on == 0 && !s->dead && s->ops)
            s->ops->set_read(s->tdata, true);
        conn_unref(s);
    }
}

void lb_conn_writable(struct lb_conn *c)
{
    if (c->n_waiters && !c->dead && c->ops && c->ops->pending(c->tdata) <= g_bus.set.outbuf_high / 2)
        release_waiters(c);
}

/* ---- closing ------------------------------------------------------- */

void conn_close(struct lb_conn *c, bool flush, const char *why)
{
    if (c->dead) return;
    c->dead = true;
    log_debug("conn", "#%llu closed: %s", (unsigned long long)c->id, why);
    list_del(&c->link);
    g_bus.n_conns--;
    router_forget(c);
    release_waiters(c);
    policy_closed(c);
    if (!c->in_input && c->ops) {
        const struct lb_conn_ops *ops = c->ops;
        c->ops = NULL;
        ops->close(c->tdata, flush);
    }
    conn_unref(c);
}

void lb_conn_gone(struct lb_conn *c, const char *why)
{
    if (c->dead) return;
    log_debug("conn", "#%llu peer gone: %s", (unsigned long long)c->id, why ? why : "");
    /* The transport is tearing down: it must not be asked to flush. */
    const struct lb_conn_ops *ops = c->ops;
    void *tdata = c->tdata;
    if (c->in_input) { conn_close(c, false, why ? why : "gone"); return; }
    c->ops = NULL;
    conn_close(c, false, why ? why : "gone");   /* may free c */
    if (ops) ops->close(tdata, false);
}

void lb_conn_close_error(struct lb_conn *c, const char *code, const char *message)
{
    if (c->dead) return;
    conn_send_error(c, NULL, code, "%s", message);
    conn_close(c, true, message);
}

void conn_close_all(const char *why)
{
    while (!list_empty(&g_bus.conns)) {
        struct lb_conn *c = list_entry(g_bus.conns.next, struct lb_conn, link);
        conn_close(c, true, why);
    }
}

/* ---- accessors ----------------------------------------------------- */

uint64_t lb_conn_id(const struct lb_conn *c) { return c->id; }
const char *lb_conn_service(const struct lb_conn *c) { return c->svc ? router_service_name(c) : NULL; }
const struct lb_peer *lb_conn_peer(const struct lb_conn *c) { return &c->peer; }
void *lb_conn_get_data(const struct lb_conn *c, struct lb_plugin_ctx *ctx)
{
    return c->plugin_data && ctx->index < g_bus.n_plugins ? c->plugin_data[ctx->index] : NULL;
}
void lb_conn_set_data(struct lb_conn *c, struct lb_plugin_ctx *ctx, void *data)
{
    if (c->plugin_data && ctx->index < g_bus.n_plugins) c->plugin_data[ctx->index] = data;
}
void lb_conn_set_auth(struct lb_conn *c, const char *how) { c->auth = how; }

/* ---- sweep: heartbeats and stuck consumers -------------------------- */

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    uint64_t now = mono_us() / 1000;   /* wall-clock steps must not evict anyone */
    uint64_t silent_limit = 3 * g_bus.set.heartbeat_ms;
    struct list_head *pos, *tmp;
    list_for_each_safe(pos, tmp, &g_bus.conns) {
        struct lb_conn *c = list_entry(pos, struct lb_conn, link);
        if (c->n_waiters && now - c->blocked_since_ms > g_bus.set.slow_consumer_timeout_ms) {
            g_bus.stats.slow_consumers++;
            log_warn("conn", "#%llu %s: blocked senders for more than %llu ms: closing as slow consumer",
                     (unsigned long long)c->id, lb_conn_service(c) ? lb_conn_service(c) : "(unregistered)",
                     (unsigned long long)g_bus.set.slow_consumer_timeout_ms);
            conn_send_error(c, NULL, LB_E_SLOW_CONSUMER, "not reading: output blocked for more than %llu ms",
                            (unsigned long long)g_bus.set.slow_consumer_timeout_ms);
            conn_close(c, false, "slow consumer");
            continue;
        }
        if (now - c->last_seen_mono_ms > silent_limit) {
            g_bus.stats.conns_evicted++;
            log_info("conn", "#%llu %s: silent for %llu ms (3 heartbeat intervals): evicted",
                     (unsigned long long)c->id, lb_conn_service(c) ? lb_conn_service(c) : "(unregistered)",
                     (unsigned long long)(now - c->last_seen_mono_ms));
            conn_send_error(c, NULL, LB_E_TIMEOUT, "no message or heartbeat for %llu ms",
                            (unsigned long long)(now - c->last_seen_mono_ms));
            conn_close(c, true, "heartbeat timeout");
        }
    }
}

void conn_sweep_start(void)
{
    uint64_t every = g_bus.set.heartbeat_ms / 2;
    if (every > 1000) every = 1000;
    if (every < 50) every = 50;
    struct timeval tv = { (time_t)(every / 1000), (suseconds_t)((every % 1000) * 1000) };
    if (!g_bus.sweep_timer) g_bus.sweep_timer = event_new(g_bus.base, -1, EV_PERSIST, sweep_cb, NULL);
    evtimer_add(g_bus.sweep_timer, &tv);
}

void conn_sweep_stop(void)
{
    if (g_bus.sweep_timer) { event_free(g_bus.sweep_timer); g_bus.sweep_timer = NULL; }
}

/* ---- listeners ----------------------------------------------------- */

/* Every transport's listeners, so that draining stops them all and so that
 * running out of descriptors is handled once, for every transport. */
struct listener {
    struct evconnlistener *l;
    struct lb_plugin_ctx *ctx;
};

#define ACCEPT_PAUSE_MS 100

static struct listener *g_listeners;
static size_t g_n_listeners;
static struct event *g_accept_pause;    /* re-enables accepting after EMFILE */
static bool g_listeners_off;            /* draining: never re-enabled */
static unsigned long long g_accept_pauses;

static void listeners_enable(bool on)
{
    for (size_t i = 0; i < g_n_listeners; i++) {
        if (on) evconnlistener_enable(g_listeners[i].l);
        else evconnlistener_disable(g_listeners[i].l);
    }
}

static void resume_accepting(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    if (!g_listeners_off) listeners_enable(true);
}

static void accept_error(struct evconnlistener *l, void *arg)
{
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    const char *who = "transport";
    for (size_t i = 0; i < g_n_listeners; i++)
        if (g_listeners[i].l == l) who = g_listeners[i].ctx->name;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* Out of descriptors (for the whole process): the listening sockets
         * stay readable, so retrying at once would spin.  Pause them all. */
        listeners_enable(false);
        struct timeval tv = { 0, ACCEPT_PAUSE_MS * 1000 };
        event_add(g_accept_pause, &tv);
        if (g_accept_pauses++ % 100 == 0)
            log_warn(who, "accept failed: %s; pausing accepts for %d ms (raise the open-files limit)",
                     evutil_socket_error_to_string(err), ACCEPT_PAUSE_MS);
        return;
    }
    log_warn(who, "accept failed: %s", evutil_socket_error_to_string(err));
}

void lb_listener_add(struct lb_plugin_ctx *ctx, struct evconnlistener *l)
{
    if (!g_accept_pause) g_accept_pause = evtimer_new(g_bus.base, resume_accepting, NULL);
    g_listeners = xrealloc(g_listeners, (g_n_listeners + 1) * sizeof *g_listeners);
    g_listeners[g_n_listeners++] = (struct listener){ l, ctx };
    evconnlistener_set_error_cb(l, accept_error);
}

void lb_listener_remove(struct lb_plugin_ctx *ctx, struct evconnlistener *l)
{
    (void)ctx;
    for (size_t i = 0; i < g_n_listeners; i++) {
        if (g_listeners[i].l == l) { g_listeners[i] = g_listeners[--g_n_listeners]; break; }
    }
    if (!g_n_listeners) {
        free(g_listeners);
        g_listeners = NULL;
        if (g_accept_pause) { event_free(g_accept_pause); g_accept_pause = NULL; }
    }
}

void listeners_disable_all(void);
void listeners_disable_all(void)
{
    g_listeners_off = true;
    listeners_enable(false);
}
