/*
 * tls-tcp: the length-prefixed JSON protocol of `unix`, over TCP with TLS
 * (OpenSSL 3 through libevent's bufferevent_openssl), so that services on
 * other machines can join.  With client certificates (mutual TLS) the
 * certificate names the service: the connection may only REGISTER under
 * the certificate's CN or one of its DNS SANs, or a name that a
 * `names.<certname>` line grants to a certificate carrying <certname>.
 *
 * [plugin tls-tcp]
 * listen = 127.0.0.1:7443        host:port, may repeat; IPv6 as [::1]:7443
 * cert = certs/localhost-cert.pem
 * key = certs/localhost-key.pem
 * ca = certs/ca-cert.pem          CA for client certificates
 * require_client_cert = yes       mutual TLS (an authenticating transport)
 * min_protocol = TLS1.2           TLS1.2 or TLS1.3
 * ciphers = ...                   OpenSSL cipher list for TLS 1.2 (optional)
 * handshake_timeout = 10s         a handshake not done by then is dropped
 * max_connections = 0             sockets held at once, handshaking or not (0 = no limit)
 * max_handshaking = 256           sockets still handshaking at once (0 = no limit)
 * max_handshaking_per_address = 16  ... of them from one address: an IPv4 address or an
 *                                 IPv6 /64 (0 = no limit)
 * names.svc-a = svc-a, billing    names a verified certificate naming svc-a may use
 *
 * SIGHUP re-reads the certificates and names.* lines: new connections use
 * them, established ones keep theirs; a certificate that does not load
 * keeps the old one.  Whether the transport authenticates
 * (require_client_cert) is fixed at start-up: lb_declare_authenticator
 * cannot be taken back, so a reload that changes it is refused.
 *
 * Lifecycle of a socket: accept -> handshaking (a struct tls_conn with a
 * deadline timer, no lb_conn yet) -> established (lb_conn_new after the
 * handshake, identity from the verified certificate) -> closed by the host
 * (op_close), possibly flushing first, then a close_notify when nothing
 * was left unsent.  Every tls_conn sits on tp->conns until tc_free, so
 * unload frees whatever is left.
 */
#include "config.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <lexbus/plugin.h>
#include "../common/stream.h"
#include "../common/net.h"
#include "../common/throttle.h"
#include "../common/tls.h"
#include <lexbus/protocol.h>

#define MAX_LISTENERS 16
#define MAX_NAMES TLS_MAX_NAMES                  /* names read from one certificate */
#define MAX_MAPPED 16                           /* names one names.<certname> line may list */
#define MAX_IDS (MAX_NAMES * (1 + MAX_MAPPED))  /* every cert name mapped: never truncated */
#define NAMES_PREFIX "names."
#define FLUSH_TIMEOUT_S 5
#define SESSION_ID_CTX "lexbus tls-tcp"

struct tls_conn;

/* names.<certname> = a, b: names that a verified certificate carrying
 * <certname> may REGISTER under besides its own (policy, not the CA). */
struct name_map {
    char cert[LB_MAX_NAME + 1];
    char *buf;                    /* the value, split in place */
    const char *names[MAX_MAPPED];
    size_t n;
    struct name_map *next;
};

struct tls_plugin {
    struct lb_plugin_ctx *ctx;
    SSL_CTX *ssl;                 /* for new connections; each SSL holds its own reference */
    struct evconnlistener *listeners[MAX_LISTENERS];
    char *listen[MAX_LISTENERS];  /* as configured, to notice changes on reload */
    size_t n_listeners;
    uint64_t handshake_ms;
    long long max_conns;          /* 0 = no limit */
    long long max_handshaking;    /* 0 = no limit */
    long long max_per_addr;       /* max_handshaking_per_address, 0 = no limit */
    struct net_addr_table handshaking_by_addr;
    enum lb_encoding encoding;    /* `encoding` key: new connections get it */
    bool authenticator;           /* require_client_cert at start-up: declared, fixed */
    struct name_map *maps;        /* names.* lines in force */
    size_t n_maps;
    struct tls_conn *conns;       /* every socket we hold, handshaking or not */
    long long n_conns, n_handshaking;
    struct throttle refusal_log;  /* handshakes refused or timed out */
    struct throttle limit_log;    /* sockets closed at accept: max_connections, max_handshaking */
    char cert_subject[256], cert_not_after[32];
    struct {
        unsigned long long accepted, established, refused, timeouts, over_limit, over_handshaking,
                           over_per_addr, reloads, reload_failures;
    } n;
    SSL_CTX *staged_ssl;          /* a reload's context and settings, until reload_done */
    struct tls_settings *staged;
};

struct tls_conn {
    struct tls_plugin *tp;
    struct bufferevent *bev;
    struct lb_conn *conn;         /* NULL while handshaking and after op_close */
    struct event deadline;        /* handshake_timeout, whole handshake */
    struct net_addr_count *ac;    /* while handshaking: its address's count */
    bool handshaking;
    bool peer_gone;               /* EOF or error: no close_notify to a dead peer */
    char addr[64];
    struct stream_marks marks;    /* frame boundaries, for discard */
    struct tls_conn *next, **pprev;
};

/* ---- settings and SSL_CTX ------------------------------------------ */

struct tls_settings {
    struct tls_keys tls;
    uint64_t handshake_ms;
    long long max_conns, max_handshaking, max_per_addr;
    enum lb_encoding encoding;
    struct name_map *maps;        /* owned until handed to the plugin */
    size_t n_maps;
};

static void free_maps(struct name_map *m)
{
    while (m) {
        struct name_map *next = m->next;
        free(m->buf);
        free(m);
        m = next;
    }
}

/* The bus's service-name rule (REGISTER refuses anything else, so a
 * mapping to another name could never be used). */
static bool valid_name(const char *p)
{
    return lb_service_name_valid(p, strlen(p));
}

static char *trim(char *p)
{
    while (*p == ' ' || *p == '\t') p++;
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) p[--n] = 0;
    return p;
}

/* Splits "a, b" into m->names; errors name the line of `key`. */
static int split_names(struct lb_plugin_ctx *ctx, const char *key, struct name_map *m)
{
    char where[512];
    for (char *p = m->buf, *comma;; p = comma + 1) {
        comma = strchr(p, ',');
        if (comma) *comma = 0;
        char *name = trim(p);
        if (!valid_name(name)) {
            lb_plugin_fail(ctx, "%s: %s: '%s' is not a service name (1-%d characters of A-Z a-z 0-9 _ . - / @)",
                           lb_conf_where(ctx, key, where, sizeof where), key, name, LB_MAX_NAME);
            return -1;
        }
        if (m->n == MAX_MAPPED) {
            lb_plugin_fail(ctx, "%s: %s: more than %d names", lb_conf_where(ctx, key, where, sizeof where), key,
                           MAX_MAPPED);
            return -1;
        }
        m->names[m->n++] = name;
        if (!comma) return 0;
    }
}

/* One names.<certname> = a, b line, prepended to s->maps. */
static int read_map(struct lb_plugin_ctx *ctx, const char *key, struct tls_settings *s)
{
    char where[512];
    const char *val, *cert = key + strlen(NAMES_PREFIX);
    if (lb_conf_str(ctx, key, NULL, &val) < 0) return -1;   /* a repeated key, reported with its line */
    if (!valid_name(cert)) {
        lb_plugin_fail(ctx, "%s: %s: the certificate name after '" NAMES_PREFIX "' must be 1-%d characters of "
                       "A-Z a-z 0-9 _ . - / @", lb_conf_where(ctx, key, where, sizeof where), key, LB_MAX_NAME);
        return -1;
    }
    struct name_map *m = calloc(1, sizeof *m);
    if (!m || !(m->buf = strdup(val))) {
        free(m);
        lb_plugin_fail(ctx, "out of memory");
        return -1;
    }
    snprintf(m->cert, sizeof m->cert, "%s", cert);
    m->next = s->maps;
    s->maps = m;
    s->n_maps++;
    return split_names(ctx, key, m);
}

static int read_maps(struct lb_plugin_ctx *ctx, struct tls_settings *s)
{
    const char *const *keys;
    size_t n = lb_conf_keys(ctx, &keys);
    for (size_t i = 0; i < n; i++)
        if (!strncmp(keys[i], NAMES_PREFIX, strlen(NAMES_PREFIX)) && read_map(ctx, keys[i], s) < 0) return -1;
    if (s->maps && !s->tls.ca) {
        lb_plugin_fail(ctx, NAMES_PREFIX "<certname> lines apply to verified client certificates: they need ca = <CA file>");
        return -1;
    }
    return 0;
}

/* Reload: lb_declare_authenticator cannot be undone (nor made after
 * start-up), so require_client_cert keeps its start-up value. */
/* `pinned`: on reload, the require_client_cert in force (NULL at load).
 * On success the caller owns s->maps. */
static int read_settings(struct lb_plugin_ctx *ctx, struct tls_settings *s, const bool *pinned)
{
    memset(s, 0, sizeof *s);
    if (tls_keys_read(ctx, &s->tls, pinned) < 0 ||
        lb_conf_ms(ctx, "handshake_timeout", 10000, &s->handshake_ms) < 0 ||
        lb_conf_int(ctx, "max_connections", 0, 0, 10000000, &s->max_conns) < 0 ||
        lb_conf_int(ctx, "max_handshaking", 256, 0, 10000000, &s->max_handshaking) < 0 ||
        lb_conf_int(ctx, "max_handshaking_per_address", 16, 0, 10000000, &s->max_per_addr) < 0 ||
        lb_conf_encoding(ctx, &s->encoding) < 0)
        return -1;
    if (s->handshake_ms == 0 || s->handshake_ms > 3600 * 1000) {
        lb_plugin_fail(ctx, "handshake_timeout must be more than 0 and at most 1h");
        return -1;
    }
    if (read_maps(ctx, s) < 0) {
        free_maps(s->maps);
        s->maps = NULL;
        return -1;
    }
    return 0;
}

/* ---- connections ---------------------------------------------------- */

/* The handshake is over, done or not: its slots are free. */
static void handshake_over(struct tls_conn *tc)
{
    if (!tc->handshaking) return;
    tc->handshaking = false;
    tc->tp->n_handshaking--;
    if (tc->ac) net_addr_release(&tc->tp->handshaking_by_addr, tc->ac);
    tc->ac = NULL;
}

/* The only place a tls_conn is freed. */
static void tc_free(struct tls_conn *tc)
{
    struct tls_plugin *tp = tc->tp;
    *tc->pprev = tc->next;
    if (tc->next) tc->next->pprev = tc->pprev;
    tp->n_conns--;
    handshake_over(tc);
    event_del(&tc->deadline);
    bufferevent_free(tc->bev);
    stream_marks_free(&tc->marks);
    free(tc);
}

/* One close_notify, written straight to the non-blocking socket: clients
 * see a clean end instead of a truncation, and OpenSSL keeps the session
 * in the cache (SSL_free drops sessions never shut down).  Marking the
 * peer's close_notify as received first stops SSL_shutdown from trying to
 * read it: we never wait.  Only when everything queued went out, so the
 * alert never vouches for data that was dropped. */
static void send_close_notify(struct tls_conn *tc)
{
    SSL *ssl = bufferevent_openssl_get_ssl(tc->bev);
    if (!ssl || tc->handshaking || tc->peer_gone || !SSL_is_init_finished(ssl) ||
        evbuffer_get_length(bufferevent_get_output(tc->bev)))
        return;
    SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_RECEIVED_SHUTDOWN);
    (void)SSL_shutdown(ssl);   /* -1 when the socket is full: the client then sees an EOF, no worse */
    ERR_clear_error();
}

/* A normal end: close_notify if clean, then free. */
static void tc_close(struct tls_conn *tc)
{
    send_close_notify(tc);
    tc_free(tc);
}

/* Why a handshake failed, from libevent's copy of the OpenSSL error queue
 * (bufferevent_openssl drains ERR_get_error into its own list). */
static void ssl_reason(struct tls_conn *tc, short what, char *out, size_t len)
{
    unsigned long e, first = 0;
    while ((e = bufferevent_get_openssl_error(tc->bev)) != 0) if (!first) first = e;
    while ((e = ERR_get_error()) != 0) if (!first) first = e;
    const char *r = first ? ERR_reason_error_string(first) : NULL;
    int err = EVUTIL_SOCKET_ERROR();
    if (r) snprintf(out, len, "%s", r);
    else if (first) snprintf(out, len, "OpenSSL error %lx", first);
    else if (what & BEV_EVENT_EOF) snprintf(out, len, "the client closed the connection");
    else snprintf(out, len, "%s", err ? evutil_socket_error_to_string(err) : "connection failed");
    SSL *ssl = bufferevent_openssl_get_ssl(tc->bev);
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        size_t n = strlen(out);
        snprintf(out + n, len - n, "; client certificate: %s", X509_verify_cert_error_string(vr));
    }
}

static int op_send(void *tdata, const struct iovec *iov, int iovcnt)
{
    struct tls_conn *tc = tdata;
    return stream_send(&tc->marks, bufferevent_get_output(tc->bev), iov, iovcnt);
}

static void op_discard(void *tdata)
{
    struct tls_conn *tc = tdata;
    stream_discard(&tc->marks, bufferevent_get_output(tc->bev));
}

static size_t op_pending(void *tdata)
{
    struct tls_conn *tc = tdata;
    return evbuffer_get_length(bufferevent_get_output(tc->bev));
}

static void op_set_read(void *tdata, bool enabled)
{
    struct tls_conn *tc = tdata;
    if (!enabled) { bufferevent_disable(tc->bev, EV_READ); return; }
    bufferevent_enable(tc->bev, EV_READ);
    /* Frames read before the pause still wait in the input buffer: a
     * deferred read callback routes them (not from inside the resume). */
    if (evbuffer_get_length(bufferevent_get_input(tc->bev)))
        bufferevent_trigger(tc->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS | BEV_TRIG_IGNORE_WATERMARKS);
}

static void flush_done(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) tc_close(arg);
}

static void flush_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev; (void)what;
    struct tls_conn *tc = arg;
    ERR_clear_error();
    tc->peer_gone = true;   /* error, EOF or the flush timeout: nothing more to say */
    tc_free(tc);
}

static void op_close(void *tdata, bool flush)
{
    struct tls_conn *tc = tdata;
    tc->conn = NULL;
    if (!flush || evbuffer_get_length(bufferevent_get_output(tc->bev)) == 0) { tc_close(tc); return; }
    /* Keep the socket until what is queued (an ERROR, say) is written. */
    bufferevent_disable(tc->bev, EV_READ);
    struct timeval tv = { FLUSH_TIMEOUT_S, 0 };
    bufferevent_set_timeouts(tc->bev, NULL, &tv);
    bufferevent_setcb(tc->bev, NULL, flush_done, flush_event, tc);
}

static const struct lb_conn_ops tls_ops = {
    .size = sizeof tls_ops, .send = op_send, .pending = op_pending, .set_read = op_set_read,
    .close = op_close, .discard = op_discard,
};

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct tls_conn *tc = arg;
    if (tc->conn) lb_conn_read_frames(tc->conn, bufferevent_get_input(bev));
}

/* The output drained (libevent calls this at the low-water mark, 0):
 * senders paused because this connection was slow may resume. */
static void write_cb(struct bufferevent *bev, void *arg)
{
    struct tls_conn *tc = arg;
    if (tc->conn && evbuffer_get_length(bufferevent_get_output(bev)) == 0) lb_conn_writable(tc->conn);
}

/* Appends the names not in ids yet. */
static size_t add_ids(const char *ids[MAX_IDS], size_t n, const char *const *names, size_t k)
{
    for (size_t j = 0; j < k && n < MAX_IDS; j++) {
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++) dup = !strcmp(ids[i], names[j]);
        if (!dup) ids[n++] = names[j];
    }
    return n;
}

/* The names the connection may REGISTER under: the certificate's own,
 * then those names.<certname> lines grant to any of them (compared
 * exactly, like REGISTER compares names).  Returns the count. */
static size_t identity(const struct tls_plugin *tp, char names[MAX_NAMES][LB_MAX_NAME + 1], size_t n_cert,
                       const char *ids[MAX_IDS])
{
    size_t n = 0;
    for (size_t i = 0; i < n_cert; i++) ids[n++] = names[i];
    for (const struct name_map *m = tp->maps; m; m = m->next)
        for (size_t i = 0; i < n_cert; i++)
            if (!strcmp(m->cert, names[i])) {
                n = add_ids(ids, n, m->names, m->n);
                break;
            }
    return n;
}

static void handshake_done(struct tls_conn *tc)
{
    struct tls_plugin *tp = tc->tp;
    SSL *ssl = bufferevent_openssl_get_ssl(tc->bev);
    char names[MAX_NAMES][LB_MAX_NAME + 1];
    const char *ids[MAX_IDS];
    char subject[256] = "";
    size_t n = 0;
    event_del(&tc->deadline);
    handshake_over(tc);
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (cert && SSL_get_verify_result(ssl) == X509_V_OK) {
        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
        n = tls_cert_names(cert, names);
    }
    X509_free(cert);
    if (subject[0] && n == 0 && SSL_get_verify_mode(ssl) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) {
        /* A verified certificate that names nothing usable would leave the
         * connection unbound: with mutual TLS required, refuse it. */
        tp->n.refused++;
        if (throttle_pass(&tp->refusal_log))
            lb_log(tp->ctx, LB_LOG_WARN, "refused %s: client certificate %s has no CN or DNS SAN of 1-%d bytes",
                   tc->addr, subject, LB_MAX_NAME);
        tc_free(tc);
        return;
    }
    size_t n_ids = identity(tp, names, n, ids);
    if (n_ids > n)
        lb_log(tp->ctx, LB_LOG_DEBUG, "%s: %zu name(s) added by " NAMES_PREFIX "* lines for %s", tc->addr, n_ids - n,
               subject);
    struct lb_peer peer = {
        .size = sizeof peer, .transport = "tls-tcp", .address = tc->addr, .tls_subject = subject[0] ? subject : NULL,
        .identity_names = n_ids ? ids : NULL, .n_identity_names = n_ids,
    };
    tc->conn = lb_conn_new(tp->ctx, &tls_ops, tc, &peer);
    if (!tc->conn) { tc_free(tc); return; }
    lb_conn_set_encoding(tc->conn, tp->encoding);
    tp->n.established++;
    lb_log(tp->ctx, LB_LOG_DEBUG, "%s: %s %s handshake done%s%s%s", tc->addr, SSL_get_version(ssl),
           SSL_session_reused(ssl) ? "resumed" : "full", subject[0] ? ", client " : "", subject,
           subject[0] || !(SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) ? "" : ", no client certificate");
    /* Frames may have arrived with the end of the handshake. */
    if (evbuffer_get_length(bufferevent_get_input(tc->bev))) read_cb(tc->bev, tc);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct tls_conn *tc = arg;
    if (what & BEV_EVENT_CONNECTED) { handshake_done(tc); return; }
    if (tc->handshaking) {
        /* Refused before it was a connection: bad handshake, wrong or no
         * certificate, old protocol, plain TCP, garbage. */
        char why[384];
        ssl_reason(tc, what, why, sizeof why);   /* drains the error queues even when not logged */
        tc->tp->n.refused++;
        bool clear = strstr(why, "wrong version number") || strstr(why, "http request");
        if (throttle_pass(&tc->tp->refusal_log))
            lb_log(tc->tp->ctx, LB_LOG_INFO, "TLS handshake refused from %s: %s%s", tc->addr, why,
                   clear ? " (the client does not speak TLS: plain TCP or HTTP?)" : "");
        tc_free(tc);
        return;
    }
    char why[384] = "peer closed the connection";
    if (!(what & BEV_EVENT_EOF)) ssl_reason(tc, what, why, sizeof why);
    ERR_clear_error();
    tc->peer_gone = true;
    lb_conn_gone(tc->conn, why);   /* the host calls op_close: tc is gone */
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct tls_conn *tc = arg;
    tc->tp->n.refused++;
    tc->tp->n.timeouts++;
    if (throttle_pass(&tc->tp->refusal_log))
        lb_log(tc->tp->ctx, LB_LOG_INFO, "%s: TLS handshake not done within %llu ms; closed, slot freed", tc->addr,
               (unsigned long long)tc->tp->handshake_ms);
    tc_free(tc);
}

/* max_connections, max_handshaking, then max_handshaking_per_address: a
 * socket beyond any is closed before any TLS, so stalled handshakes cannot
 * use up the descriptors (they wait for handshake_timeout; established
 * connections do not count against the handshake limits), and one address
 * cannot take every handshake slot. */
static bool over_limit(struct tls_plugin *tp, const char *addr, const unsigned char key[NET_ADDR_KEY])
{
    const char *which;
    long long max;
    unsigned long long *count;
    if (tp->max_conns && tp->n_conns >= tp->max_conns) {
        which = "max_connections", max = tp->max_conns, count = &tp->n.over_limit;
    } else if (tp->max_handshaking && tp->n_handshaking >= tp->max_handshaking) {
        which = "max_handshaking", max = tp->max_handshaking, count = &tp->n.over_handshaking;
    } else if (tp->max_per_addr && net_addr_count(&tp->handshaking_by_addr, key) >= tp->max_per_addr) {
        which = "max_handshaking_per_address", max = tp->max_per_addr, count = &tp->n.over_per_addr;
    } else {
        return false;
    }
    (*count)++;
    if (throttle_pass(&tp->limit_log))
        lb_log(tp->ctx, LB_LOG_WARN, "refused %s: %s (%lld) reached (%llu refused so far)", addr, which, max, *count);
    return true;
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l; (void)salen;
    struct tls_plugin *tp = arg;
    char addr[64];
    unsigned char key[NET_ADDR_KEY];
    net_format_addr(sa, addr, sizeof addr);
    net_addr_key(sa, key);
    if (over_limit(tp, addr, key)) {
        evutil_closesocket(fd);
        return;
    }
    struct tls_conn *tc = calloc(1, sizeof *tc);
    SSL *ssl = tc ? SSL_new(tp->ssl) : NULL;
    struct net_addr_count *ac = ssl ? net_addr_acquire(&tp->handshaking_by_addr, key) : NULL;
    if (!ac) {
        lb_log(tp->ctx, LB_LOG_ERROR, "out of memory accepting %s", addr);
        SSL_free(ssl);
        free(tc);
        evutil_closesocket(fd);
        return;
    }
    snprintf(tc->addr, sizeof tc->addr, "%s", addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    tc->tp = tp;
    tc->bev = bufferevent_openssl_socket_new(lb_event_base(tp->ctx), fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    if (!tc->bev) {
        lb_log(tp->ctx, LB_LOG_ERROR, "cannot set up TLS for %s", addr);
        SSL_free(ssl);
        net_addr_release(&tp->handshaking_by_addr, ac);
        free(tc);
        evutil_closesocket(fd);
        return;
    }
    /* A peer that drops TCP without close_notify is an EOF, not an error. */
    bufferevent_openssl_set_allow_dirty_shutdown(tc->bev, 1);
    tc->next = tp->conns;
    if (tp->conns) tp->conns->pprev = &tc->next;
    tp->conns = tc;
    tc->pprev = &tp->conns;
    tp->n_conns++;
    tp->n_handshaking++;
    tp->n.accepted++;
    tc->handshaking = true;
    tc->ac = ac;
    /* The whole handshake has one deadline (not an idle timeout a client
     * could keep resetting by trickling bytes). */
    evtimer_assign(&tc->deadline, lb_event_base(tp->ctx), deadline_cb, tc);
    struct timeval tv = { (time_t)(tp->handshake_ms / 1000), (suseconds_t)((tp->handshake_ms % 1000) * 1000) };
    evtimer_add(&tc->deadline, &tv);
    bufferevent_setcb(tc->bev, read_cb, write_cb, event_cb, tc);
    bufferevent_enable(tc->bev, EV_READ | EV_WRITE);
}

/* ---- listeners ------------------------------------------------------ */

static json_t *stats(void *ud)
{
    struct tls_plugin *tp = ud;
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s}",
                     "connections", (json_int_t)tp->n_conns, "handshaking", (json_int_t)tp->n_handshaking,
                     "maxConnections", (json_int_t)tp->max_conns, "maxHandshaking", (json_int_t)tp->max_handshaking,
                     "maxHandshakingPerAddress", (json_int_t)tp->max_per_addr,
                     "overHandshakingPerAddress", (json_int_t)tp->n.over_per_addr,
                     "accepted", (json_int_t)tp->n.accepted, "established", (json_int_t)tp->n.established,
                     "refused", (json_int_t)tp->n.refused, "handshakeTimeouts", (json_int_t)tp->n.timeouts,
                     "overLimit", (json_int_t)tp->n.over_limit, "overHandshaking", (json_int_t)tp->n.over_handshaking,
                     "reloads", (json_int_t)tp->n.reloads, "reloadFailures", (json_int_t)tp->n.reload_failures,
                     "nameMappings", (json_int_t)tp->n_maps,
                     "certSubject", tp->cert_subject, "certNotAfter", tp->cert_not_after);
}

/* Settings that take effect for new connections; takes s->maps. */
static void apply_settings(struct tls_plugin *tp, struct tls_settings *s)
{
    tp->handshake_ms = s->handshake_ms;
    tp->max_conns = s->max_conns;
    tp->max_handshaking = s->max_handshaking;
    tp->max_per_addr = s->max_per_addr;
    tp->encoding = s->encoding;
    free_maps(tp->maps);
    tp->maps = s->maps;
    tp->n_maps = s->n_maps;
    s->maps = NULL;
}

static int tls_load(struct lb_plugin_ctx *ctx)
{
    struct tls_settings s;
    const char *const *listen;
    if (read_settings(ctx, &s, NULL) < 0) return -1;
    size_t n = lb_conf_list(ctx, "listen", &listen);
    if (n == 0 || n > MAX_LISTENERS) {
        free_maps(s.maps);
        lb_plugin_fail(ctx, "give 1 to %d 'listen = host:port' lines", MAX_LISTENERS);
        return -1;
    }
    struct sockaddr_storage ss[MAX_LISTENERS];
    socklen_t sl[MAX_LISTENERS];
    for (size_t i = 0; i < n; i++) {
        if (net_parse_listen(listen[i], &ss[i], &sl[i])) {
            free_maps(s.maps);
            lb_plugin_fail(ctx, "listen '%s' is not host:port with a numeric host (127.0.0.1:7443, [::1]:7443)", listen[i]);
            return -1;
        }
    }
    SSL_CTX *ssl = tls_server_ctx(ctx, &s.tls, SESSION_ID_CTX);
    if (!ssl || lb_check_only(ctx)) {
        SSL_CTX_free(ssl);
        free_maps(s.maps);
        if (ssl && s.tls.require_cert) lb_declare_authenticator(ctx);   /* -t checks production mode too */
        return ssl ? 0 : -1;
    }
    struct tls_plugin *tp = calloc(1, sizeof *tp);
    if (!tp) { SSL_CTX_free(ssl); free_maps(s.maps); lb_plugin_fail(ctx, "out of memory"); return -1; }
    tp->ctx = ctx;
    tp->ssl = ssl;
    net_addr_table_init(&tp->handshaking_by_addr);
    apply_settings(tp, &s);
    tp->authenticator = s.tls.require_cert;
    lb_plugin_set_data(ctx, tp);
    throttle_init(&tp->refusal_log, ctx, "refused");
    throttle_init(&tp->limit_log, ctx, "closed at accept (connection limits)");
    tls_note_server_cert(tp->ctx, ssl, tp->cert_subject, sizeof tp->cert_subject, tp->cert_not_after, sizeof tp->cert_not_after);
    for (size_t i = 0; i < n; i++) {
        unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
        if (ss[i].ss_family == AF_INET6) flags |= LEV_OPT_BIND_IPV6ONLY;   /* [::] and 0.0.0.0 side by side */
        struct evconnlistener *l = evconnlistener_new_bind(lb_event_base(ctx), accept_cb, tp, flags, 1024,
                                                           (struct sockaddr *)&ss[i], (int)sl[i]);
        if (!l) {
            lb_plugin_fail(ctx, "cannot listen on %s: %s", listen[i], strerror(errno));
            return -1;   /* the host calls unload */
        }
        lb_listener_add(ctx, l);
        tp->listen[tp->n_listeners] = strdup(listen[i]);
        tp->listeners[tp->n_listeners++] = l;
        char where[64];
        net_format_bound(evconnlistener_get_fd(l), listen[i], where, sizeof where);
        lb_log(ctx, LB_LOG_INFO, "listening on %s (min %s%s%s%s)", where, s.tls.min_protocol,
               s.tls.require_cert ? ", client certificates required" : s.tls.ca ? ", client certificates optional" : "",
               s.max_conns ? ", max_connections set" : "", tp->n_maps ? ", " NAMES_PREFIX "* names mapped" : "");
    }
    if (s.tls.require_cert) lb_declare_authenticator(ctx);
    lb_stats_register(ctx, stats, tp);
    return 0;
}

/* SIGHUP, step 1: read the settings and build the new context (a
 * certificate that does not load fails the reload here); apply nothing. */
static int tls_reload(struct lb_plugin_ctx *ctx)
{
    struct tls_settings s;
    const char *const *listen;
    struct tls_plugin *tp = lb_plugin_data(ctx);
    if (read_settings(ctx, &s, tp ? &tp->authenticator : NULL) < 0) {
        if (tp) tp->n.reload_failures++;
        return -1;
    }
    size_t n = lb_conf_list(ctx, "listen", &listen);   /* listeners change only on restart */
    if (!tp) { free_maps(s.maps); return 0; }
    bool same = n == tp->n_listeners;
    for (size_t i = 0; same && i < n; i++) same = tp->listen[i] && !strcmp(listen[i], tp->listen[i]);
    if (!same) lb_log(ctx, LB_LOG_WARN, "listen changed: takes effect on restart (still serving the old addresses)");
    SSL_CTX *ssl = tls_server_ctx(ctx, &s.tls, SESSION_ID_CTX);
    if (!ssl) {
        free_maps(s.maps);
        tp->n.reload_failures++;
        return -1;   /* the old context keeps serving */
    }
    struct tls_settings *st = malloc(sizeof *st);
    if (!st) { SSL_CTX_free(ssl); free_maps(s.maps); lb_plugin_fail(ctx, "out of memory"); return -1; }
    *st = s;
    tp->staged_ssl = ssl;
    tp->staged = st;
    return 0;
}

/* Step 2: swap in the new context (commit) or drop it. */
static void tls_reload_done(struct lb_plugin_ctx *ctx, bool commit)
{
    struct tls_plugin *tp = lb_plugin_data(ctx);
    if (!tp || !tp->staged) return;
    SSL_CTX *ssl = tp->staged_ssl;
    struct tls_settings *s = tp->staged;
    tp->staged_ssl = NULL;
    tp->staged = NULL;
    if (!commit) {
        SSL_CTX_free(ssl);
        free_maps(s->maps);
        free(s);
        return;
    }
    /* Established connections hold their own reference to the old context
     * and keep the names they were given. */
    SSL_CTX_free(tp->ssl);
    tp->ssl = ssl;
    apply_settings(tp, s);
    tp->n.reloads++;
    tls_note_server_cert(tp->ctx, ssl, tp->cert_subject, sizeof tp->cert_subject, tp->cert_not_after, sizeof tp->cert_not_after);
    lb_log(ctx, LB_LOG_INFO, "certificates reloaded (%s, valid until %s, %zu " NAMES_PREFIX "* line(s)); "
           "%lld established connection(s) keep theirs", s->tls.cert, tp->cert_not_after, tp->n_maps,
           tp->n_conns - tp->n_handshaking);
    free(s);
}

static void tls_unload(struct lb_plugin_ctx *ctx)
{
    struct tls_plugin *tp = lb_plugin_data(ctx);
    if (!tp) return;
    throttle_flush(&tp->refusal_log);   /* the count of a last flood is not lost */
    throttle_flush(&tp->limit_log);
    event_del(&tp->refusal_log.tick);
    event_del(&tp->limit_log.tick);
    for (size_t i = 0; i < tp->n_listeners; i++) {
        lb_listener_remove(ctx, tp->listeners[i]);
        evconnlistener_free(tp->listeners[i]);
        free(tp->listen[i]);
    }
    /* Connections the host closed are flushing or handshaking: free them. */
    while (tp->conns) tc_free(tp->conns);
    net_addr_table_free(&tp->handshaking_by_addr);
    SSL_CTX_free(tp->ssl);
    free_maps(tp->maps);
    tls_reload_done(ctx, false);
    free(tp);
    lb_plugin_set_data(ctx, NULL);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .size = sizeof(struct lb_plugin),
    .name = "tls-tcp",
    .version = PACKAGE_VERSION,
    .load = tls_load,
    .unload = tls_unload,
    .reload = tls_reload,
    .reload_done = tls_reload_done,
};
