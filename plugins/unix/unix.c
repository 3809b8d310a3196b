/*
 * unix: the Unix-domain-socket transport.  Length-prefixed JSON frames
 * (doc/protocol.md); peer credentials (SO_PEERCRED) are passed to the
 * policy plugins.  Framing and routing live in the core: this file only
 * moves bytes between sockets and lb_conn_feed / ops->send.
 *
 * [plugin unix]
 * path = /tmp/lexbus.sock    socket path
 * mode = 0660                 file mode of the socket
 * backlog = 4096              listen() backlog
 * allow_uids = self, 1000     only these peer uids may connect (self = lexbusd's uid)
 * allow_gids = 100            ... or these peer gids (no lists: anyone who can open the socket)
 *
 * SIGHUP applies mode (the socket is chmod-ed), backlog, allow_uids and
 * allow_gids: new connections are checked against the new lists, and open
 * connections whose peer they no longer allow are closed (ERROR FORBIDDEN)
 * — a uid taken off the list is cut off, not left connected.  A new path
 * needs a restart: such a reload is refused and nothing of it applies.
 */

#include "config.h"
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>
#include "../common/stream.h"

#define FLUSH_TIMEOUT_S 5

struct unix_conn;

struct unix_settings {
    const char *path;
    long mode;
    long long backlog;
    uid_t uids[16];
    gid_t gids[16];
    size_t n_uids, n_gids;
    enum lb_encoding encoding;
};

struct unix_plugin {
    struct lb_plugin_ctx *ctx;
    struct evconnlistener *listener;
    char *path;
    long long backlog;
    long mode;
    struct unix_conn *live;       /* connections the host holds */
    struct unix_conn *flushing;   /* closed by the host, still writing */
    struct event *recheck;        /* closes live connections the allow lists no longer allow */
    uid_t uids[16];
    gid_t gids[16];
    size_t n_uids, n_gids;
    struct unix_settings staged;  /* a reload's settings, until reload_done */
    bool has_staged;
    enum lb_encoding encoding;    /* `encoding` key: new connections get it */
};

/* The one [plugin unix] (a section appears once): connections find it
 * here rather than each keeping a pointer. */
static struct unix_plugin *g_up;

/* What an idle connection costs is mostly this record and the core's:
 * one event for the socket (not one for reading and one for writing),
 * and input and output buffers only while bytes wait in them. */
struct unix_conn {
    /* The socket's event: EV_READ unless the host paused us, EV_WRITE
     * while output waits for room.  Its fd is the socket's. */
    struct event ev;
    struct lb_conn *conn;         /* NULL once the host has closed us */
    struct unix_conn *next;       /* in g_up->live or g_up->flushing */
    struct unix_conn **pprev;
    struct ibuf in;               /* read and not yet routed: usually nothing */
    struct obuf out;              /* what is queued for the peer */
    bool reading;                 /* the host's last set_read */
    bool kicked;                  /* made active to route what `in` holds */
};

static void io_cb(evutil_socket_t fd, short what, void *arg);

static int uc_fd(const struct unix_conn *uc) { return event_get_fd(&uc->ev); }

/* Points the event at what is wanted now.  A change is event_del +
 * event_assign + event_add (an epoll_ctl each), so it is made only when
 * the mask differs: a write that leaves nothing queued, the usual case,
 * costs none. */
static void watch(struct unix_conn *uc, short want)
{
    short have = event_get_events(&uc->ev) & (EV_READ | EV_WRITE);
    if (want == have) return;
    if (have) event_del(&uc->ev);
    event_assign(&uc->ev, event_get_base(&uc->ev), uc_fd(uc), want | EV_PERSIST, io_cb, uc);
    if (want) event_add(&uc->ev, NULL);
    /* event_del dropped a pending activation: renew it. */
    if (uc->kicked && (want & EV_READ)) event_active(&uc->ev, EV_READ, 0);
}

/* Writes what is queued; watches for room if the socket is full.
 * Returns 0, or -1 on a hard error. */
static int write_out(struct unix_conn *uc)
{
    if (obuf_write(&uc->out, uc_fd(uc)) != 0) return -1;
    watch(uc, (uc->reading ? EV_READ : 0) | (obuf_len(&uc->out) ? EV_WRITE : 0));
    return 0;
}

static void uc_link(struct unix_conn **head, struct unix_conn *uc)
{
    uc->next = *head;
    if (*head) (*head)->pprev = &uc->next;
    *head = uc;
    uc->pprev = head;
}

static void uc_unlink(struct unix_conn *uc)
{
    if (!uc->pprev) return;
    *uc->pprev = uc->next;
    if (uc->next) uc->next->pprev = uc->pprev;
    uc->next = NULL;
    uc->pprev = NULL;
}

static void uc_free(struct unix_conn *uc)
{
    uc_unlink(uc);
    event_del(&uc->ev);
    ibuf_free(&uc->in);
    obuf_free(&uc->out);
    evutil_closesocket(uc_fd(uc));
    free(uc);
}

/* ---- connection ops (called by the host) ---------------------------- */

static int op_send(void *tdata, const struct iovec *iov, int iovcnt)
{
    struct unix_conn *uc = tdata;
    return obuf_frame(&uc->out, iov, iovcnt);
}

static void op_discard(void *tdata)
{
    struct unix_conn *uc = tdata;
    obuf_discard(&uc->out);
}

static size_t op_pending(void *tdata)
{
    struct unix_conn *uc = tdata;
    return obuf_len(&uc->out);
}

static void op_set_read(void *tdata, bool enabled)
{
    struct unix_conn *uc = tdata;
    uc->reading = enabled;
    watch(uc, (enabled ? EV_READ : 0) | (event_get_events(&uc->ev) & EV_WRITE));
    /* Frames already read may wait in `in` (the host stopped routing
     * them when it paused us): have io_cb see to them soon, not from
     * inside whatever is resuming us. */
    if (enabled && uc->in.len && !uc->kicked) {
        uc->kicked = true;
        event_active(&uc->ev, EV_READ, 0);
    }
}

static int op_flush(void *tdata)
{
    return write_out(tdata);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct unix_conn *uc = arg;
    if ((what & EV_TIMEOUT) || obuf_write(&uc->out, fd) != 0 || obuf_len(&uc->out) == 0) {
        uc_free(uc);   /* flushed, failed, or timed out: done */
        return;
    }
    struct timeval tv = { FLUSH_TIMEOUT_S, 0 };
    event_add(&uc->ev, &tv);
}

static void op_close(void *tdata, bool flush)
{
    struct unix_conn *uc = tdata;
    uc->conn = NULL;
    uc_unlink(uc);
    ibuf_free(&uc->in);
    if (!flush || obuf_write(&uc->out, uc_fd(uc)) != 0 || obuf_len(&uc->out) == 0) {
        uc_free(uc);
        return;
    }
    /* Keep the socket until what is queued (an ERROR, say) is written. */
    uc_link(&g_up->flushing, uc);
    event_del(&uc->ev);
    event_assign(&uc->ev, event_get_base(&uc->ev), uc_fd(uc), EV_WRITE, flush_cb, uc);
    struct timeval tv = { FLUSH_TIMEOUT_S, 0 };
    event_add(&uc->ev, &tv);
}

static const struct lb_conn_ops unix_ops = {
    .size = sizeof unix_ops, .send = op_send, .pending = op_pending, .set_read = op_set_read,
    .close = op_close, .flush = op_flush, .discard = op_discard,
};

/* ---- socket callbacks ---------------------------------------------- */

static void on_readable(struct unix_conn *uc)
{
    /* What was read before a pause goes first. */
    if (uc->in.len && ibuf_route(&uc->in, uc->conn) < 0) return;
    if (!uc->reading) return;   /* paused (again): the socket keeps the rest */
    ssize_t r = ibuf_read(&uc->in, uc->conn, uc_fd(uc));
    if (r == -2 || r == -3) return;   /* -3: the host closed us */
    if (r > 0) {
        /* What the read got back for itself (REGISTER_ACK, ACK, PONG)
         * goes now, not when the loop turn ends: its buffer is gone before
         * the next connection's read, so thousands of connections answered
         * in one turn do not each hold one until then (it stayed in the
         * RSS), and the peer has it sooner.  Output to others still waits
         * for the turn's end, batched. */
        if (obuf_len(&uc->out) && write_out(uc) != 0) lb_conn_gone(uc->conn, strerror(errno));
        return;
    }
    lb_conn_gone(uc->conn, r == 0 ? "peer closed the connection" : strerror(errno));
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct unix_conn *uc = arg;
    uc->kicked = false;
    if (what & EV_WRITE) {
        if (write_out(uc) != 0) {
            lb_conn_gone(uc->conn, strerror(errno));
            return;   /* the host called op_close: uc is gone */
        }
        /* The output queue drained: senders paused on us may resume. */
        if (obuf_len(&uc->out) == 0) lb_conn_writable(uc->conn);
    }
    if (what & EV_READ) on_readable(uc);
}

static bool peer_allowed(const struct unix_plugin *up, const struct lb_peer *p)
{
    if (!p->has_cred) return false;
    for (size_t i = 0; i < up->n_uids; i++) if (up->uids[i] == p->uid) return true;
    for (size_t i = 0; i < up->n_gids; i++) if (up->gids[i] == p->gid) return true;
    return false;
}

/* No lists: anyone who can open the socket. */
static bool lists_allow(const struct unix_plugin *up, const struct lb_peer *p)
{
    return (!up->n_uids && !up->n_gids) || peer_allowed(up, p);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l; (void)sa; (void)salen;
    struct unix_plugin *up = arg;
    struct lb_peer peer = { .size = sizeof peer, .transport = "unix" };
    struct ucred cred;
    socklen_t len = sizeof cred;
    char addr[64] = "unix";
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        peer.has_cred = true;
        peer.pid = cred.pid;
        peer.uid = cred.uid;
        peer.gid = cred.gid;
        snprintf(addr, sizeof addr, "unix:pid=%ld,uid=%ld", (long)cred.pid, (long)cred.uid);
    }
    peer.address = addr;
    if (!lists_allow(up, &peer)) {
        lb_log_throttled(up->ctx, LB_LOG_WARN, "refused", 20, "refused %s: not in allow_uids/allow_gids", addr);
        evutil_closesocket(fd);
        return;
    }

    struct unix_conn *uc = calloc(1, sizeof *uc);
    if (!uc) {
        lb_log(up->ctx, LB_LOG_ERROR, "out of memory accepting a connection");
        evutil_closesocket(fd);
        return;
    }
    event_assign(&uc->ev, lb_event_base(up->ctx), fd, EV_READ | EV_PERSIST, io_cb, uc);
    uc->reading = true;
    uc->conn = lb_conn_new(up->ctx, &unix_ops, uc, &peer);
    if (!uc->conn) {
        uc_free(uc);
        return;
    }
    uc_link(&up->live, uc);
    lb_conn_set_encoding(uc->conn, up->encoding);
    event_add(&uc->ev, NULL);
}

/* After a reload: closes the open connections whose peer the allow lists
 * no longer allow.  Run from an event, not from the reload (which may be
 * answering a `lexbus.reload` call from one of them).  They are picked
 * first and closed after: closing one connection may close others, so no
 * pointer into up->live is kept across a close. */
static void recheck_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct unix_plugin *up = arg;
    struct unix_conn *out = NULL;
    size_t n = 0;
    for (struct unix_conn *uc = up->live, *next; uc; uc = next) {
        next = uc->next;
        if (lists_allow(up, lb_conn_peer(uc->conn))) continue;
        uc_unlink(uc);
        uc_link(&out, uc);
        n++;
    }
    while (out) {
        struct unix_conn *uc = out;
        uc_unlink(uc);
        uc_link(&up->live, uc);   /* op_close takes it off again */
        const struct lb_peer *p = lb_conn_peer(uc->conn);
        char msg[160];
        snprintf(msg, sizeof msg, "uid %ld / gid %ld is no longer in allow_uids/allow_gids: connection closed",
                 p->has_cred ? (long)p->uid : -1L, p->has_cred ? (long)p->gid : -1L);
        lb_log(up->ctx, LB_LOG_WARN, "#%llu (%s): %s", (unsigned long long)lb_conn_id(uc->conn),
               p->address ? p->address : "unix", msg);
        lb_conn_close_error(uc->conn, LB_E_FORBIDDEN, msg);
    }
    if (n) lb_log(up->ctx, LB_LOG_WARN, "allow_uids/allow_gids changed: closed %zu connection(s) of peers no longer allowed", n);
}

/* ---- socket path ---------------------------------------------------- */

/* Refuses to steal a socket a live daemon is serving; removes a stale one. */
static int prepare_path(struct unix_plugin *up, const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : (lb_plugin_fail(up->ctx, "%s: %s", path, strerror(errno)), -1);
    if (!S_ISSOCK(st.st_mode)) {
        lb_plugin_fail(up->ctx, "%s exists and is not a socket; refusing to replace it", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    strncpy(sun.sun_path, path, sizeof sun.sun_path - 1);
    int live = fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
    if (fd >= 0) close(fd);
    if (live) {
        lb_plugin_fail(up->ctx, "%s is in use by another running lexbusd", path);
        return -1;
    }
    unlink(path);
    return 0;
}

/* "self, 1000, 1001" -> ids.  Returns the count or -1. */
static long parse_ids(const char *s, unsigned *out, size_t max)
{
    char buf[512];
    size_t n = 0;
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (n == max) return -1;
        if (!strcmp(tok, "self")) { out[n++] = (unsigned)geteuid(); continue; }
        char *end;
        long v = strtol(tok, &end, 10);
        if (*end || v < 0) return -1;
        out[n++] = (unsigned)v;
    }
    return (long)n;
}

/* Reads and validates [plugin unix]; `path` is resolved against bus.conf. */
static int read_settings(struct lb_plugin_ctx *ctx, struct unix_settings *st)
{
    const char *path, *mode_s, *uids, *gids;
    if (lb_conf_str(ctx, "path", LB_DEFAULT_SOCKET, &path) < 0 ||
        lb_conf_str(ctx, "mode", "0660", &mode_s) < 0 ||
        lb_conf_int(ctx, "backlog", 4096, 1, 65535, &st->backlog) < 0 ||
        lb_conf_str(ctx, "allow_uids", "", &uids) < 0 || lb_conf_str(ctx, "allow_gids", "", &gids) < 0 ||
        lb_conf_encoding(ctx, &st->encoding) < 0)
        return -1;
    long nu = parse_ids(uids, (unsigned *)st->uids, 16), ng = parse_ids(gids, (unsigned *)st->gids, 16);
    if (nu < 0 || ng < 0) {
        lb_plugin_fail(ctx, "allow_uids / allow_gids take up to 16 numeric ids or 'self', comma-separated");
        return -1;
    }
    st->n_uids = (size_t)nu;
    st->n_gids = (size_t)ng;
    char *end;
    st->mode = strtol(mode_s, &end, 8);
    if (end == mode_s || *end || st->mode < 0 || st->mode > 0777) {
        lb_plugin_fail(ctx, "mode '%s' is not an octal file mode such as 0660", mode_s);
        return -1;
    }
    st->path = lb_conf_path(ctx, path);
    if (strlen(st->path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        lb_plugin_fail(ctx, "path '%s' is longer than %zu bytes (the Unix socket limit)", st->path,
                       sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        return -1;
    }
    return 0;
}

static void apply_lists(struct unix_plugin *up, const struct unix_settings *st)
{
    memcpy(up->uids, st->uids, sizeof up->uids);
    memcpy(up->gids, st->gids, sizeof up->gids);
    up->n_uids = st->n_uids;
    up->n_gids = st->n_gids;
}

static int unix_load(struct lb_plugin_ctx *ctx)
{
    struct unix_settings st;
    if (read_settings(ctx, &st) < 0) return -1;
    const char *path = st.path;
    long mode = st.mode;
    long long backlog = st.backlog;
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (lb_check_only(ctx)) return 0;

    struct unix_plugin *up = calloc(1, sizeof *up);
    if (!up) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    up->ctx = ctx;
    up->backlog = backlog;
    up->mode = mode;
    apply_lists(up, &st);
    up->encoding = st.encoding;
    lb_plugin_set_data(ctx, up);
    g_up = up;
    up->recheck = event_new(lb_event_base(ctx), -1, 0, recheck_cb, up);
    if (!up->recheck) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    if (prepare_path(up, path)) return -1;
    strcpy(sun.sun_path, path);
    /* Create the socket with the configured mode from the start: no window
     * in which a wider umask would expose it. */
    mode_t old = umask(0777 & ~(mode_t)mode);
    up->listener = evconnlistener_new_bind(lb_event_base(ctx), accept_cb, up,
                                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                           (int)backlog, (struct sockaddr *)&sun, sizeof sun);
    int saved = errno;
    umask(old);
    if (!up->listener) {
        lb_plugin_fail(ctx, "cannot listen on %s: %s", path, strerror(saved));
        return -1;
    }
    chmod(path, (mode_t)mode);
    up->path = strdup(path);
    lb_listener_add(ctx, up->listener);
    lb_log(ctx, LB_LOG_INFO, "listening on %s (mode %04lo)", path, mode);
    return 0;
}

static void unix_unload(struct lb_plugin_ctx *ctx)
{
    struct unix_plugin *up = lb_plugin_data(ctx);
    if (!up) return;
    if (up->listener) {
        lb_listener_remove(ctx, up->listener);
        evconnlistener_free(up->listener);
        up->listener = NULL;
    }
    while (up->flushing) uc_free(up->flushing);
    if (up->recheck) event_free(up->recheck);
    if (up->path) { unlink(up->path); free(up->path); }
    free(up);
    g_up = NULL;
    lb_plugin_set_data(ctx, NULL);
}

/* SIGHUP, step 1: mode, backlog and the allow lists can change, a new path
 * cannot (it refuses the whole reload).  What can fail here (listen(),
 * chmod) is done here, and undone in step 2 if another section was bad. */
static int unix_reload(struct lb_plugin_ctx *ctx)
{
    struct unix_settings st;
    if (read_settings(ctx, &st) < 0) return -1;
    struct unix_plugin *up = lb_plugin_data(ctx);
    if (!up || !up->listener) return 0;
    if (strcmp(st.path, up->path) != 0) {
        lb_plugin_fail(ctx, "path changed to %s: the socket moves only on restart (still serving %s); nothing of "
                       "this reload was applied", st.path, up->path);
        return -1;
    }
    evutil_socket_t fd = evconnlistener_get_fd(up->listener);
    if (st.backlog != up->backlog && listen(fd, (int)st.backlog) != 0) {
        lb_plugin_fail(ctx, "cannot set backlog %lld on %s: %s; nothing of this reload was applied", st.backlog,
                       up->path, strerror(errno));
        return -1;
    }
    if (chmod(up->path, (mode_t)st.mode) != 0) {
        int e = errno;
        if (st.backlog != up->backlog) listen(fd, (int)up->backlog);
        lb_plugin_fail(ctx, "cannot chmod %s to %04lo: %s; nothing of this reload was applied", up->path, st.mode,
                       strerror(e));
        return -1;
    }
    up->staged = st;
    up->has_staged = true;
    return 0;
}

/* Step 2: keep what step 1 did and apply the lists (commit), or put the
 * socket back as it was. */
static void unix_reload_done(struct lb_plugin_ctx *ctx, bool commit)
{
    struct unix_plugin *up = lb_plugin_data(ctx);
    if (!up || !up->has_staged) return;
    up->has_staged = false;
    const struct unix_settings *st = &up->staged;
    if (!commit) {
        if (st->backlog != up->backlog) listen(evconnlistener_get_fd(up->listener), (int)up->backlog);
        chmod(up->path, (mode_t)up->mode);
        return;
    }
    up->backlog = st->backlog;
    up->mode = st->mode;
    up->encoding = st->encoding;   /* for new connections */
    apply_lists(up, st);
    event_active(up->recheck, EV_TIMEOUT, 0);
    lb_log(ctx, LB_LOG_INFO, "reloaded: %s mode %04lo, backlog %lld, %zu allowed uid(s), %zu allowed gid(s)%s",
           up->path, st->mode, st->backlog, st->n_uids, st->n_gids,
           st->n_uids || st->n_gids ? "; open connections of peers no longer allowed are being closed" : "");
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .size = sizeof(struct lb_plugin),
    .name = "unix",
    .version = PACKAGE_VERSION,
    .load = unix_load,
    .unload = unix_unload,
    .reload = unix_reload,
    .reload_done = unix_reload_done,
};
