/*
 * unix: the Unix-domain-socket transport.  Length-prefixed JSON frames
 * (doc/protocol.md); peer credentials (SO_PEERCRED) are passed to the
 * policy plugins.  Framing and routing live in the core: this file only
 * moves bytes between sockets and lb_conn_read_frames / ops->send.
 *
 * [plugin unix]
 * path = /tmp/lexbus.sock    socket path
 * mode = 0660                 file mode of the socket
 * backlog = 4096              listen() backlog
 */

#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>

#define READ_CHUNK (64 * 1024)
#define FLUSH_TIMEOUT_S 5

struct unix_conn;

struct unix_plugin {
    struct lb_plugin_ctx *ctx;
    struct evconnlistener *listener;
    char *path;
    struct unix_conn *flushing;   /* closed by the host, still writing */
};

struct unix_conn {
    struct unix_plugin *up;
    struct bufferevent *bev;
    struct lb_conn *conn;         /* NULL once the host has closed us */
    struct unix_conn *next;       /* in up->flushing */
    struct unix_conn **pprev;
};

static struct unix_plugin *g_up;  /* one instance: the section is unique */

/* ---- connection ops (called by the host) ---------------------------- */

static int op_send(void *tdata, const struct iovec *iov, int iovcnt)
{
    struct unix_conn *uc = tdata;
    return lb_frame_write(bufferevent_get_output(uc->bev), iov, iovcnt);
}

static size_t op_pending(void *tdata)
{
    struct unix_conn *uc = tdata;
    return evbuffer_get_length(bufferevent_get_output(uc->bev));
}

static void op_set_read(void *tdata, bool enabled)
{
    struct unix_conn *uc = tdata;
    if (enabled) bufferevent_enable(uc->bev, EV_READ);
    else bufferevent_disable(uc->bev, EV_READ);
}

static void uc_free(struct unix_conn *uc)
{
    if (uc->pprev) {
        *uc->pprev = uc->next;
        if (uc->next) uc->next->pprev = uc->pprev;
    }
    bufferevent_free(uc->bev);
    free(uc);
}

static void flush_done_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    uc_free(arg);
}

static void flush_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev; (void)what;
    uc_free(arg);   /* peer gone or flush timed out: nothing more to do */
}

static void op_close(void *tdata, bool flush)
{
    struct unix_conn *uc = tdata;
    uc->conn = NULL;
    if (!flush || evbuffer_get_length(bufferevent_get_output(uc->bev)) == 0) {
        uc_free(uc);
        return;
    }
    /* Keep the socket until what is queued (an ERROR, say) is written. */
    struct unix_plugin *up = uc->up;
    uc->next = up->flushing;
    if (up->flushing) up->flushing->pprev = &uc->next;
    up->flushing = uc;
    uc->pprev = &up->flushing;
    bufferevent_disable(uc->bev, EV_READ);
    struct timeval tv = { FLUSH_TIMEOUT_S, 0 };
    bufferevent_set_timeouts(uc->bev, NULL, &tv);
    bufferevent_setcb(uc->bev, NULL, flush_done_cb, flush_event_cb, uc);
    bufferevent_setwatermark(uc->bev, EV_WRITE, 0, 0);
}

static const struct lb_conn_ops unix_ops = {
    .send = op_send, .pending = op_pending, .set_read = op_set_read, .close = op_close,
};

/* ---- socket callbacks ---------------------------------------------- */

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct unix_conn *uc = arg;
    lb_conn_read_frames(uc->conn, bufferevent_get_input(bev));
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct unix_conn *uc = arg;
    /* The output queue drained: senders paused on us may resume. */
    lb_conn_writable(uc->conn);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct unix_conn *uc = arg;
    const char *why = (what & BEV_EVENT_EOF) ? "peer closed the connection"
                    : (what & BEV_EVENT_ERROR) ? strerror(EVUTIL_SOCKET_ERROR()) : "socket event";
    lb_conn_gone(uc->conn, why);   /* the host calls op_close(false) */
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l; (void)sa; (void)salen;
    struct unix_plugin *up = arg;
    struct lb_peer peer = { .transport = "unix" };
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

    struct unix_conn *uc = calloc(1, sizeof *uc);
    struct bufferevent *bev = uc ? bufferevent_socket_new(lb_event_base(up->ctx), fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        lb_log(up->ctx, LB_LOG_ERROR, "out of memory accepting a connection");
        free(uc);
        evutil_closesocket(fd);
        return;
    }
    uc->up = up;
    uc->bev = bev;
    uc->conn = lb_conn_new(up->ctx, &unix_ops, uc, &peer);
    if (!uc->conn) {
        bufferevent_free(bev);
        free(uc);
        return;
    }
    bufferevent_set_max_single_read(bev, READ_CHUNK);
    bufferevent_setcb(bev, read_cb, write_cb, event_cb, uc);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    struct unix_plugin *up = arg;
    int err = EVUTIL_SOCKET_ERROR();
    /* EMFILE/ENFILE: the listener retries on the next wake-up; say so once
     * per burst rather than stopping. */
    lb_log(up->ctx, LB_LOG_WARN, "accept failed: %s", evutil_socket_error_to_string(err));
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

static int unix_load(struct lb_plugin_ctx *ctx)
{
    const char *path, *mode_s;
    long long backlog;
    if (lb_conf_str(ctx, "path", LB_DEFAULT_SOCKET, &path) < 0 ||
        lb_conf_str(ctx, "mode", "0660", &mode_s) < 0 ||
        lb_conf_int(ctx, "backlog", 4096, 1, 65535, &backlog) < 0)
        return -1;
    char *end;
    long mode = strtol(mode_s, &end, 8);
    if (end == mode_s || *end || mode < 0 || mode > 0777) {
        lb_plugin_fail(ctx, "mode '%s' is not an octal file mode such as 0660", mode_s);
        return -1;
    }
    path = lb_conf_path(ctx, path);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sun.sun_path) {
        lb_plugin_fail(ctx, "path '%s' is longer than %zu bytes (the Unix socket limit)", path, sizeof sun.sun_path - 1);
        return -1;
    }
    if (lb_check_only(ctx)) return 0;

    struct unix_plugin *up = calloc(1, sizeof *up);
    if (!up) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    up->ctx = ctx;
    lb_plugin_set_data(ctx, up);
    g_up = up;
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
    evconnlistener_set_error_cb(up->listener, accept_error_cb);
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
    }
    while (up->flushing) uc_free(up->flushing);
    if (up->path) { unlink(up->path); free(up->path); }
    free(up);
    lb_plugin_set_data(ctx, NULL);
    g_up = NULL;
}

static int unix_reload(struct lb_plugin_ctx *ctx)
{
    /* The socket cannot move without dropping clients: read the keys so
     * they are validated, and keep serving where we are. */
    const char *path, *mode_s;
    long long backlog;
    if (lb_conf_str(ctx, "path", LB_DEFAULT_SOCKET, &path) < 0 ||
        lb_conf_str(ctx, "mode", "0660", &mode_s) < 0 ||
        lb_conf_int(ctx, "backlog", 4096, 1, 65535, &backlog) < 0)
        return -1;
    struct unix_plugin *up = lb_plugin_data(ctx);
    if (up && up->path && strcmp(lb_conf_path(ctx, path), up->path) != 0)
        lb_log(ctx, LB_LOG_WARN, "path changed to %s: takes effect on restart (still serving %s)", path, up->path);
    return 0;
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .name = "unix",
    .version = PACKAGE_VERSION,
    .load = unix_load,
    .unload = unix_unload,
    .reload = unix_reload,
};
