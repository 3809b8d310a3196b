/*
 * Connections (see conn.h).  Every connection is reference-counted: the
 * list of connections holds one reference, and so do paused senders, the
 * dirty list and an input call in progress, so a connection closed while
 * someone still points at it is freed only when the last one lets go.
 */
#include "config.h"
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <arpa/inet.h>
#include <event2/buffer.h>
#include "conn.h"
#include "frame.h"
#include "hooks.h"
#include "stats.h"
#include "plugin_ctx.h"
#include "jsonw.h"
#include "encoding.h"
#include "log.h"
#include "util.h"

static struct list_head g_conns = { &g_conns, &g_conns };
static size_t g_n_conns;
static uint64_t g_next_id;
static uint64_t g_outbuf_total;      /* sum of every connection's `queued` */
static struct lb_conn **g_dirty;     /* connections with output to flush or a close to carry out */
static size_t g_n_dirty, g_cap_dirty;
static struct event *g_sweep;
static conn_input_fn g_input;
static conn_forget_fn g_forget;
static struct jw g_err;              /* scratch for ERROR frames */

void conn_set_handlers(conn_input_fn input, conn_forget_fn forget)
{
    g_input = input;
    g_forget = forget;
}

size_t conn_count(void) { return g_n_conns; }
uint64_t conn_outbuf_total(void) { return g_outbuf_total; }
bool conn_closing(const struct lb_conn *c) { return c->dead || c->close_why; }

const char *conn_label(const struct lb_conn *c)
{
    return conn_name(c) ? conn_name(c) : "(unregistered)";
}

struct instance *conn_instance(const struct lb_conn *c, const char *name, size_t n)
{
    for (struct instance *i = c->inst; i; i = i->next)
        if (i->name_len == n && memcmp(i->name, name, n) == 0) return i;
    return NULL;
}

void conn_each(void (*fn)(struct lb_conn *c, void *ud), void *ud)
{
    struct list_head *pos, *tmp;
    list_for_each_safe(pos, tmp, &g_conns) fn(list_entry(pos, struct lb_conn, link_node), ud);
}

/* ---- creation ------------------------------------------------------ */

static char *dup_or_null(const char *s) { return s ? xstrdup(s) : NULL; }

/* Transport names are few ("unix", "tls-tcp", "local:lua"...): one copy
 * each for every connection's lb_peer, kept until exit. */
static const char *transport_name(const char *t)
{
    static char **names;
    static size_t n;
    if (!t) return NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], t) == 0) return names[i];
    names = xrealloc(names, (n + 1) * sizeof *names);
    return names[n++] = xstrdup(t);
}

/* All but the address, which conn_create copies (it stays src's here). */
static void copy_peer(struct lb_peer *dst, const struct lb_peer *src)
{
    memset(dst, 0, sizeof *dst);
    /* A plugin built with a shorter struct gets its fields copied, the
     * rest stays zero. */
    size_t n = src->size && src->size < sizeof *dst ? src->size : sizeof *dst;
    memcpy(dst, src, n);
    dst->size = sizeof *dst;
    dst->transport = transport_name(src->transport);
    dst->tls_subject = dup_or_null(dst->tls_subject);
    if (dst->n_identity_names) {
        char **names = xcalloc(dst->n_identity_names, sizeof *names);
        for (size_t i = 0; i < dst->n_identity_names; i++) names[i] = xstrdup(src->identity_names[i]);
        dst->identity_names = (const char *const *)names;
    }
}

static void free_peer(struct lb_peer *p)
{
    free((char *)p->tls_subject);
    for (size_t i = 0; i < p->n_identity_names; i++) free((char *)p->identity_names[i]);
    free((void *)p->identity_names);
}

struct lb_conn *conn_create(struct lb_plugin_ctx *transport, const struct lb_conn_ops *ops,
                            void *tdata, const struct lb_peer *peer)
{
    /* The address goes in the connection's block: one allocation less per
     * connection (the address is still the caller's in p). */
    struct lb_peer p;
    copy_peer(&p, peer);
    size_t alen = p.address ? strlen(p.address) + 1 : 0;
    struct lb_conn *c = xcalloc(1, sizeof *c + alen);
    c->peer = p;
    if (alen) c->peer.address = memcpy((char *)(c + 1), p.address, alen);
    c->id = ++g_next_id;
    c->refs = 1;
    c->ops = ops;
    c->tdata = tdata;
    c->transport = transport;
    c->auth = "none";
    c->last_seen_ms = now_ms();
    c->connected_mono_ms = c->last_seen_mono_ms = mono_us() / 1000;
    list_init(&c->calls_out);
    list_init(&c->calls_in);
    list_add_tail(&g_conns, &c->link_node);
    g_n_conns++;
    stats_transport_open(c->peer.transport, 1);
    return c;
}

struct lb_conn *lb_conn_new(struct lb_plugin_ctx *ctx, const struct lb_conn_ops *ops,
                            void *tdata, const struct lb_peer *peer)
{
    if (g_bus.draining) {
        g_stats.conns_refused++;
        return NULL;
    }
    if (g_bus.set.max_connections && (long long)(g_n_conns - stats_local_conns()) >= g_bus.set.max_connections) {
        log_throttled(LB_LOG_WARN, "conn", "max_connections", 20, "refusing %s connection from %s: max_connections (%lld) reached",
                      peer->transport ? peer->transport : "?", peer->address ? peer->address : "?",
                      g_bus.set.max_connections);
        g_stats.conns_refused++;
        return NULL;
    }
    if (!ops || ops->size < offsetof(struct lb_conn_ops, discard) || !ops->send || !ops->pending ||
        !ops->set_read || !ops->close) {
        log_error("conn", "[plugin %s] lb_conn_new: struct lb_conn_ops of %u bytes lacks what ABI %d needs",
                  ctx ? ctx->name : "?", ops ? ops->size : 0, LB_PLUGIN_ABI);
        return NULL;
    }
    struct lb_conn *c = conn_create(ctx, ops, tdata, peer);
    struct hook_refusal r;
    if (hooks_accept(c, &r) == LB_DENY) {
        log_throttled(LB_LOG_INFO, "conn", "refused", 20, "refused %s connection from %s: %s %s (by %s)",
                      c->peer.transport, c->peer.address ? c->peer.address : "?", r.code, r.message, r.plugin);
        g_stats.conns_refused++;
        /* The transport closes the socket itself when we return NULL. */
        c->ops = NULL;
        conn_close(c, false, "refused");
        return NULL;
    }
    g_stats.conns_accepted++;
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

void conn_touch(struct lb_conn *c)
{
    uint64_t wall = now_ms();
    if (wall != c->last_seen_ms) {
        /* One monotonic read per connection per millisecond at most (the
         * wall clock is cached per wake-up; this one is not). */
        c->last_seen_ms = wall;
        c->last_seen_mono_ms = mono_us() / 1000;
    }
}

static void input_frame(struct lb_conn *c, const char *frame, size_t len)
{
    c->msgs_in++;
    c->bytes_in += len + LB_FRAME_HEADER;
    g_stats.bytes_in += len + LB_FRAME_HEADER;
    conn_touch(c);
    g_input(c, frame, len);
    /* What it asked for (replies, events to itself) counts against its own
     * back-pressure before its next request is read: a 75-byte request
     * must not queue megabytes many times over. */
    if (c->queued > g_bus.set.outbuf_high) conn_backpressure(c, c);
}

/* Paused (waiting for a recipient to drain): frames it already sent wait
 * in the transport's buffer until it is resumed. */
static bool paused(const struct lb_conn *c) { return c->waiting_on > 0; }

static void refuse_frame(struct lb_conn *c, const char *code, const char *why, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refuse_frame(struct lb_conn *c, const char *code, const char *why, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    conn_send_error(c, NULL, 0, code, -1, msg);
    conn_close(c, true, why);
}

int conn_input(struct lb_conn *c, const char *frame, size_t len)
{
    if (conn_closing(c)) return -1;
    input_begin(c);
    if (len == 0) refuse_frame(c, LB_E_BAD_FRAME, "empty frame", "empty frame");
    else if (len > g_bus.set.max_frame)
        refuse_frame(c, LB_E_PAYLOAD_TOO_LARGE, "frame too large", "frame of %zu bytes exceeds max_frame (%llu)",
                     len, (unsigned long long)g_bus.set.max_frame);
    else input_frame(c, frame, len);
    return input_end(c);
}

int lb_conn_input(struct lb_conn *c, const char *frame, size_t len) { return conn_input(c, frame, len); }

/* Routes the whole frames at the front of p[0, n) in place, stopping at a
 * frame not yet complete, a pause or a close.  A bad length is refused
 * (ERROR, then a close: the stream cannot be resynchronised after it) as
 * soon as its header is in, before any of its body.  Returns the bytes of
 * the frames routed.  Inside input_begin/input_end. */
static size_t feed_frames(struct lb_conn *c, const char *p, size_t n)
{
    size_t off = 0;
    while (!conn_closing(c) && !paused(c) && n - off >= LB_FRAME_HEADER) {
        uint32_t len;
        memcpy(&len, p + off, sizeof len);
        len = ntohl(len);
        if (len == 0) {
            refuse_frame(c, LB_E_BAD_FRAME, "zero-length frame", "frame length is zero");
            break;
        }
        if (len > g_bus.set.max_frame) {
            refuse_frame(c, LB_E_PAYLOAD_TOO_LARGE, "frame too large", "frame length %u exceeds max_frame (%llu)",
                         len, (unsigned long long)g_bus.set.max_frame);
            break;
        }
        if (n - off - LB_FRAME_HEADER < len) break;
        input_frame(c, p + off + LB_FRAME_HEADER, len);
        off += LB_FRAME_HEADER + (size_t)len;
    }
    return off;
}

ssize_t lb_conn_feed(struct lb_conn *c, const char *p, size_t n)
{
    if (conn_closing(c)) return -1;
    input_begin(c);
    size_t used = feed_frames(c, p, n);
    return input_end(c) < 0 ? -1 : (ssize_t)used;
}

int lb_conn_read_frames(struct lb_conn *c, struct evbuffer *in)
{
    if (conn_closing(c)) return -1;
    input_begin(c);
    /* Walk the frames of the first contiguous chunk in place and drain
     * once; only a frame split across chunks is pulled up (copied). */
    while (!conn_closing(c) && !paused(c)) {
        size_t contig = evbuffer_get_contiguous_space(in);
        size_t off = feed_frames(c, (const char *)evbuffer_pullup(in, (ssize_t)contig), contig);
        if (off) evbuffer_drain(in, off);
        if (conn_closing(c) || paused(c)) break;
        uint32_t n = 0;
        enum frame_status st = frame_peek(in, g_bus.set.max_frame, &n);
        if (st == FRAME_NEED_MORE) break;
        if (st == FRAME_ZERO) {
            refuse_frame(c, LB_E_BAD_FRAME, "zero-length frame", "frame length is zero");
            break;
        }
        if (st == FRAME_TOO_LARGE) {
            refuse_frame(c, LB_E_PAYLOAD_TOO_LARGE, "frame too large", "frame length %u exceeds max_frame (%llu)",
                         n, (unsigned long long)g_bus.set.max_frame);
            break;
        }
        /* A whole frame that spans chunks: make it contiguous. */
        const char *p = (const char *)evbuffer_pullup(in, LB_FRAME_HEADER + (ssize_t)n);
        input_frame(c, p + LB_FRAME_HEADER, n);
        evbuffer_drain(in, LB_FRAME_HEADER + (size_t)n);
    }
    return input_end(c);
}

/* ---- output -------------------------------------------------------- */

/* Queues c for conn_flush_dirty, which runs after every loop iteration. */
static void after_iteration(struct lb_conn *c)
{
    if (c->dirty) return;
    if (g_n_dirty == g_cap_dirty) {
        g_cap_dirty = g_cap_dirty ? g_cap_dirty * 2 : 256;
        g_dirty = xrealloc(g_dirty, g_cap_dirty * sizeof *g_dirty);
    }
    g_dirty[g_n_dirty++] = c;
    c->dirty = true;
    conn_ref(c);
}

/* What the transport holds now, kept in the bus-wide total. */
static void account(struct lb_conn *c)
{
    size_t q = c->ops && !c->dead ? c->ops->pending(c->tdata) : 0;
    g_outbuf_total = g_outbuf_total - c->queued + q;
    c->queued = q;
}

/* A connection that fails a send is closed after this loop iteration, not
 * now: closing unlinks its pending calls and subscriptions, which whoever
 * is sending may be walking at this moment (a RESPONSE being forwarded, a
 * fan-out, the sweep, a shutdown).  Until then it takes no more output. */
void conn_close_later(struct lb_conn *c, const char *code, const char *why)
{
    if (c->dead || c->close_why) return;
    c->close_why = why;
    c->close_code = code;
    after_iteration(c);
}

static void slow_consumer(struct lb_conn *c, const char *what)
{
    g_stats.slow_consumers++;
    log_throttled(LB_LOG_WARN, "conn", "slow consumer", 20, "#%llu %s: %s: closing as slow consumer",
                  (unsigned long long)c->id, conn_label(c), what);
    conn_close_later(c, LB_E_SLOW_CONSUMER, what);
}

static int queue_frame(struct lb_conn *c, const char *p, size_t n, enum lb_msg_type t)
{
    if (c->encoding == LB_ENCODING_MSGPACK && encoding_output(c, &p, &n) != 0) {
        conn_close_later(c, NULL, "cannot encode as MessagePack");
        return -1;
    }
    struct iovec iov = { (void *)p, n };
    if (c->ops->send(c->tdata, &iov, 1) != 0) {
        conn_close_later(c, NULL, "send failed");
        return -1;
    }
    if (c->ops->flush) after_iteration(c);
    c->msgs_out++;
    c->bytes_out += n + LB_FRAME_HEADER;
    g_stats.msgs_out[t]++;
    g_stats.bytes_out += n + LB_FRAME_HEADER;
    account(c);
    return 0;
}

/* Past the bus-wide budget, a connection holding more than its share
 * (outbuf_high) is the one to go. */
static bool over_budget(const struct lb_conn *c)
{
    return g_bus.set.outbuf_total_max && g_outbuf_total > g_bus.set.outbuf_total_max &&
           c->queued > g_bus.set.outbuf_high;
}

int conn_send(struct lb_conn *c, const char *p, size_t n, enum lb_msg_type t)
{
    if (conn_closing(c) || !c->ops) return -1;
    if (queue_frame(c, p, n, t)) return -1;
    if (c->queued > g_bus.set.outbuf_max) {
        slow_consumer(c, "output queue above outbuf_max");
        return -1;
    }
    if (over_budget(c)) {
        slow_consumer(c, "the bus's output budget (outbuf_total_max) is used up");
        return -1;
    }
    return 0;
}

int conn_send_broadcast(struct lb_conn *c, const char *p, size_t n)
{
    if (conn_closing(c) || !c->ops) return -1;
    if (c->dropping || c->queued > g_bus.set.outbuf_max || over_budget(c)) {
        if (g_bus.set.slow_consumer == SLOW_DROP) {
            if (!c->dropping)
                log_throttled(LB_LOG_WARN, "conn", "dropping", 20, "#%llu %s: output queue full: dropping its events until it reads",
                              (unsigned long long)c->id, conn_label(c));
            c->dropping = true;
            c->events_dropped++;
            c->dropped_unreported++;
            g_stats.events_dropped++;
            return -1;
        }
        slow_consumer(c, c->queued > g_bus.set.outbuf_max ? "output queue above outbuf_max"
                                                          : "the bus's output budget (outbuf_total_max) is used up");
        return -1;
    }
    return queue_frame(c, p, n, LB_MSG_EVENT);
}

/* The one writer of ERROR frames. */
void conn_send_error(struct lb_conn *c, const char *id, size_t id_len, const char *code,
                     long long retry_after_ms, const char *msg)
{
    struct jw *w = &g_err;
    jw_reset(w);
    jw_lit(w, "{\"type\":\"ERROR\"");
    if (id) {
        jw_lit(w, ",\"id\":\"");
        jw_raw(w, id, id_len);
        jw_lit(w, "\"");
    }
    jw_lit(w, ",\"error\":");
    jw_error_object(w, code, msg, retry_after_ms);
    jw_lit(w, ",\"timestamp\":");
    jw_u64(w, now_ms());
    jw_lit(w, "}");
    stats_count_error(code);
    log_debug("conn", "#%llu ERROR %s: %s", (unsigned long long)c->id, code, msg);
    if (!conn_closing(c) && c->ops) queue_frame(c, w->buf, w->len, LB_MSG_ERROR);
}

/* A slow consumer's ERROR must not wait behind megabytes it will never
 * read: drop what is queued (whole frames) and send the error alone. */
static void close_with_error(struct lb_conn *c)
{
    const char *code = c->close_code, *why = c->close_why;
    if (code && c->ops) {
        if (c->ops->discard) { c->ops->discard(c->tdata); account(c); }
        c->close_why = NULL;   /* let the ERROR through */
        char msg[200];
        snprintf(msg, sizeof msg, "%s", why);
        conn_send_error(c, NULL, 0, code, -1, msg);
    }
    conn_close(c, code != NULL, why);
}

static void report_drops(struct lb_conn *c)
{
    c->dropping = false;
    if (!c->dropped_unreported) return;
    char msg[160];
    snprintf(msg, sizeof msg, "%llu events were dropped while this connection was not reading (slow_consumer = drop)",
             (unsigned long long)c->dropped_unreported);
    c->dropped_unreported = 0;
    conn_send_error(c, NULL, 0, LB_E_SLOW_CONSUMER, -1, msg);
}

void conn_flush_dirty(void)
{
    /* Index loop: a failing flush may close a connection, which may send
     * (and so append to this list). */
    for (size_t i = 0; i < g_n_dirty; i++) {
        struct lb_conn *c = g_dirty[i];
        c->dirty = false;
        if (c->close_why && !c->dead) {
            close_with_error(c);
        } else if (!c->dead && c->ops && c->ops->flush) {
            if (c->ops->flush(c->tdata) != 0) lb_conn_gone(c, "write failed");
            else lb_conn_writable(c);
        }
        conn_unref(c);
    }
    g_n_dirty = 0;
}

/* ---- back-pressure ------------------------------------------------- */

/* Made with the first sender paused on a connection, freed when they are
 * released: a connection nobody waits on holds none. */
struct waiters {
    uint64_t since_ms;           /* the first was added (monotonic) */
    uint32_t n, cap;
    struct lb_conn *v[];         /* each holds a reference */
};

void conn_backpressure(struct lb_conn *sender, struct lb_conn *to)
{
    if (to->dead || sender->dead || !to->ops || !sender->ops) return;
    if (to->queued <= g_bus.set.outbuf_high) return;
    struct waiters *w = to->waiters;
    for (uint32_t i = 0; w && i < w->n; i++)
        if (w->v[i] == sender) return;
    if (!w) {
        w = xmalloc(sizeof *w + 4 * sizeof w->v[0]);
        w->since_ms = mono_us() / 1000;
        w->n = 0;
        w->cap = 4;
    } else if (w->n == w->cap) {
        w->cap *= 2;
        w = xrealloc(w, sizeof *w + w->cap * sizeof w->v[0]);
    }
    to->waiters = w;
    w->v[w->n++] = sender;
    conn_ref(sender);
    if (sender->waiting_on++ == 0) {
        sender->ops->set_read(sender->tdata, false);
        g_stats.sender_pauses++;
    }
}

static void release_waiters(struct lb_conn *c)
{
    /* Detached first: a sender paused again while resuming goes into a
     * new set. */
    struct waiters *w = c->waiters;
    if (!w) return;
    c->waiters = NULL;
    for (uint32_t i = 0; i < w->n; i++) {
        struct lb_conn *s = w->v[i];
        if (--s->waiting_on == 0 && !s->dead && s->ops)
            s->ops->set_read(s->tdata, true);
        conn_unref(s);
    }
    free(w);
}

void lb_conn_writable(struct lb_conn *c)
{
    if (c->dead || !c->ops) return;
    account(c);
    if (c->queued > g_bus.set.outbuf_high / 2) return;
    release_waiters(c);
    if (c->dropping) report_drops(c);
}

/* ---- closing ------------------------------------------------------- */

void conn_close(struct lb_conn *c, bool flush, const char *why)
{
    if (c->dead) return;
    c->dead = true;
    log_debug("conn", "#%llu closed: %s", (unsigned long long)c->id, why);
    list_del(&c->link_node);
    g_n_conns--;
    stats_transport_open(c->peer.transport, -1);
    g_outbuf_total -= c->queued;
    c->queued = 0;
    release_waiters(c);
    /* Plugins hear of it while the connection still has its names. */
    hooks_closed(c);
    if (g_forget) g_forget(c);
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
    conn_send_error(c, NULL, 0, code, -1, message);
    conn_close(c, true, message);
}

void conn_close_all(const char *why)
{
    while (!list_empty(&g_conns)) {
        struct lb_conn *c = list_entry(g_conns.next, struct lb_conn, link_node);
        conn_close(c, true, why);
    }
    jw_free(&g_err);
}

/* ---- accessors ----------------------------------------------------- */

uint64_t lb_conn_id(const struct lb_conn *c) { return c->id; }
const char *lb_conn_service(const struct lb_conn *c) { return conn_name(c); }
const struct lb_peer *lb_conn_peer(const struct lb_conn *c) { return &c->peer; }
void *lb_conn_get_data(const struct lb_conn *c, struct lb_plugin_ctx *ctx)
{
    return c->plugin_data && ctx->index < g_bus.n_plugins ? c->plugin_data[ctx->index] : NULL;
}
void lb_conn_set_data(struct lb_conn *c, struct lb_plugin_ctx *ctx, void *data)
{
    if (ctx->index >= g_bus.n_plugins) return;
    /* Made on first use: most connections never get any plugin's data. */
    if (!c->plugin_data) {
        if (!data) return;
        c->plugin_data = xcalloc(g_bus.n_plugins, sizeof *c->plugin_data);
    }
    c->plugin_data[ctx->index] = data;
}
void lb_conn_set_auth(struct lb_conn *c, const char *how) { c->auth = how; }
void lb_conn_set_admin(struct lb_conn *c, bool admin) { c->admin = admin; }
bool lb_conn_is_admin(const struct lb_conn *c) { return c->admin || !g_bus.set.production; }

/* ---- sweep: heartbeats, REGISTER deadline, stuck consumers ---------- */

static void evict(struct lb_conn *c, uint64_t now)
{
    g_stats.conns_evicted++;
    log_info("conn", "#%llu %s: silent for %llu ms (3 heartbeat intervals): evicted",
             (unsigned long long)c->id, conn_label(c), (unsigned long long)(now - c->last_seen_mono_ms));
    char msg[96];
    snprintf(msg, sizeof msg, "no message or heartbeat for %llu ms", (unsigned long long)(now - c->last_seen_mono_ms));
    conn_send_error(c, NULL, 0, LB_E_TIMEOUT, -1, msg);
    conn_close(c, true, "heartbeat timeout");
}

static void register_deadline(struct lb_conn *c)
{
    g_stats.conns_register_timeouts++;
    log_throttled(LB_LOG_INFO, "conn", "register_timeout", 20, "#%llu (%s %s): no REGISTER within %llu ms: closed",
                  (unsigned long long)c->id, c->peer.transport, c->peer.address ? c->peer.address : "",
                  (unsigned long long)g_bus.set.register_timeout_ms);
    char msg[96];
    snprintf(msg, sizeof msg, "no REGISTER within register_timeout (%llu ms)",
             (unsigned long long)g_bus.set.register_timeout_ms);
    conn_send_error(c, NULL, 0, LB_E_NOT_REGISTERED, -1, msg);
    conn_close(c, true, "register timeout");
}

static void sweep_one(struct lb_conn *c, uint64_t now)
{
    if (c->local || c->dead) return;   /* in-process connections have no peer to lose */
    if (c->waiters && now - c->waiters->since_ms > g_bus.set.slow_consumer_timeout_ms) {
        char what[96];
        snprintf(what, sizeof what, "not reading: senders blocked for more than %llu ms",
                 (unsigned long long)g_bus.set.slow_consumer_timeout_ms);
        g_stats.slow_consumers++;
        log_warn("conn", "#%llu %s: %s: closing as slow consumer", (unsigned long long)c->id, conn_label(c), what);
        conn_close_later(c, LB_E_SLOW_CONSUMER, "not reading: senders blocked past slow_consumer_timeout");
        return;
    }
    if (c->state != CS_REGISTERED && g_bus.set.register_timeout_ms &&
        now - c->connected_mono_ms > g_bus.set.register_timeout_ms) {
        register_deadline(c);
        return;
    }
    if (now - c->last_seen_mono_ms > 3 * g_bus.set.heartbeat_ms) evict(c, now);
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    uint64_t now = mono_us() / 1000;   /* wall-clock steps must not evict anyone */
    struct list_head *pos, *tmp;
    /* Closing one connection never closes another synchronously (a send
     * that fails only marks the recipient, conn_close_later), so `tmp`
     * stays valid. */
    list_for_each_safe(pos, tmp, &g_conns) sweep_one(list_entry(pos, struct lb_conn, link_node), now);
}

void conn_sweep_start(void)
{
    uint64_t every = g_bus.set.heartbeat_ms / 2;
    if (g_bus.set.register_timeout_ms && g_bus.set.register_timeout_ms / 2 < every)
        every = g_bus.set.register_timeout_ms / 2;
    if (every > 1000) every = 1000;
    if (every < 50) every = 50;
    struct timeval tv = { (time_t)(every / 1000), (suseconds_t)((every % 1000) * 1000) };
    if (!g_sweep) g_sweep = event_new(g_bus.base, -1, EV_PERSIST, sweep_cb, NULL);
    evtimer_add(g_sweep, &tv);
}

void conn_sweep_stop(void)
{
    if (g_sweep) { event_free(g_sweep); g_sweep = NULL; }
}
