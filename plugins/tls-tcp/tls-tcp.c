/*
 * tls-tcp: the length-prefixed JSON protocol of `unix`, over TCP with TLS
 * (OpenSSL 3 through libevent's bufferevent_openssl), so that services on
 * other machines can join.  With client certificates (mutual TLS) the
 * certificate names the service: the connection may only REGISTER under
 * the certificate's CN or one of its DNS SANs.
 *
 * [plugin tls-tcp]
 * listen = 127.0.0.1:7443        host:port, may repeat; IPv6 as [::1]:7443
 * cert = certs/localhost-cert.pem
 * key = certs/localhost-key.pem
 * ca = certs/ca-cert.pem          CA for client certificates
 * require_client_cert = yes       mutual TLS (an authenticating transport)
 * min_protocol = TLS1.2           TLS1.2 or TLS1.3
 * ciphers = ...                   OpenSSL cipher list for TLS 1.2 (optional)
 * handshake_timeout = 10s
 *
 * SIGHUP re-reads the certificates: new connections use them, established
 * ones keep theirs; a certificate that does not load keeps the old one.
 */
#include "config.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>

#define MAX_LISTENERS 16
#define MAX_NAMES 16
#define FLUSH_TIMEOUT_S 5

struct tls_conn;

struct tls_plugin {
    struct lb_plugin_ctx *ctx;
    SSL_CTX *ssl;
    struct evconnlistener *listeners[MAX_LISTENERS];
    size_t n_listeners;
    uint64_t handshake_ms;
    bool require_cert;
    struct tls_conn *conns;       /* every connection, handshaking or not */
    unsigned long long refused;
};

struct tls_conn {
    struct tls_plugin *tp;
    struct bufferevent *bev;
    struct lb_conn *conn;         /* NULL until the handshake completes */
    bool closing;
    char addr[64];
    struct tls_conn *next, **pprev;
};

static void log_ssl_errors(struct tls_plugin *tp, const char *what, const char *addr, SSL *ssl)
{
    unsigned long e;
    char buf[256] = "";
    while ((e = ERR_get_error()) != 0) ERR_error_string_n(e, buf, sizeof buf);
    /* The certificate check says why (expired, unknown CA, ...). */
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    lb_log(tp->ctx, LB_LOG_INFO, "%s %s: %s%s%s", what, addr, buf[0] ? buf : "connection closed",
           vr != X509_V_OK ? "; client certificate: " : "", vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
}

/* ---- SSL_CTX -------------------------------------------------------- */

struct tls_settings {
    const char *cert, *key, *ca, *ciphers, *min_protocol;
    bool require_cert;
    uint64_t handshake_ms;
};

static int read_settings(struct lb_plugin_ctx *ctx, struct tls_settings *s)
{
    if (lb_conf_str(ctx, "cert", NULL, &s->cert) < 0 || lb_conf_str(ctx, "key", NULL, &s->key) < 0 ||
        lb_conf_str(ctx, "ca", NULL, &s->ca) < 0 || lb_conf_str(ctx, "ciphers", NULL, &s->ciphers) < 0 ||
        lb_conf_str(ctx, "min_protocol", "TLS1.2", &s->min_protocol) < 0 ||
        lb_conf_bool(ctx, "require_client_cert", false, &s->require_cert) < 0 ||
        lb_conf_ms(ctx, "handshake_timeout", 10000, &s->handshake_ms) < 0)
        return -1;
    if (!s->cert || !s->key) {
        lb_plugin_fail(ctx, "cert and key are required (scripts/gen-certs.sh makes development ones)");
        return -1;
    }
    if (s->require_cert && !s->ca) {
        lb_plugin_fail(ctx, "require_client_cert = yes needs ca = <CA file> to verify client certificates");
        return -1;
    }
    if (strcmp(s->min_protocol, "TLS1.2") && strcmp(s->min_protocol, "TLS1.3")) {
        lb_plugin_fail(ctx, "min_protocol '%s' is not TLS1.2 or TLS1.3 (older versions are refused)", s->min_protocol);
        return -1;
    }
    if (!s->handshake_ms) {
        lb_plugin_fail(ctx, "handshake_timeout must be more than 0");
        return -1;
    }
    s->cert = lb_conf_path(ctx, s->cert);
    s->key = lb_conf_path(ctx, s->key);
    if (s->ca) s->ca = lb_conf_path(ctx, s->ca);
    return 0;
}

static SSL_CTX *make_ssl_ctx(struct lb_plugin_ctx *ctx, const struct tls_settings *s)
{
    char err[256] = "";
    SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
    if (!ssl) goto fail;
    SSL_CTX_set_min_proto_version(ssl, strcmp(s->min_protocol, "TLS1.3") ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ssl, s->cert) != 1) { snprintf(err, sizeof err, "cannot load cert %s", s->cert); goto fail; }
    if (SSL_CTX_use_PrivateKey_file(ssl, s->key, SSL_FILETYPE_PEM) != 1) { snprintf(err, sizeof err, "cannot load key %s", s->key); goto fail; }
    if (SSL_CTX_check_private_key(ssl) != 1) { snprintf(err, sizeof err, "key %s does not match cert %s", s->key, s->cert); goto fail; }
    if (s->ciphers && SSL_CTX_set_cipher_list(ssl, s->ciphers) != 1) { snprintf(err, sizeof err, "no usable cipher in '%s'", s->ciphers); goto fail; }
    if (s->ca) {
        if (SSL_CTX_load_verify_locations(ssl, s->ca, NULL) != 1) { snprintf(err, sizeof err, "cannot load ca %s", s->ca); goto fail; }
        SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | (s->require_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    }
    return ssl;
fail: {
        unsigned long e = ERR_get_error();
        char ossl[200] = "";
        if (e) ERR_error_string_n(e, ossl, sizeof ossl);
        ERR_clear_error();
        lb_plugin_fail(ctx, "%s%s%s", err[0] ? err : "cannot create the TLS context", ossl[0] ? ": " : "", ossl);
        SSL_CTX_free(ssl);
        return NULL;
    }
}

/* ---- connections ---------------------------------------------------- */

static void tc_free(struct tls_conn *tc)
{
    *tc->pprev = tc->next;
    if (tc->next) tc->next->pprev = tc->pprev;
    SSL *ssl = bufferevent_openssl_get_ssl(tc->bev);
    if (ssl) SSL_set_shutdown(ssl, SSL_RECEIVED_SHUTDOWN);   /* no blocking close_notify exchange */
    bufferevent_free(tc->bev);
    free(tc);
}

static int op_send(void *tdata, const struct iovec *iov, int iovcnt)
{
    struct tls_conn *tc = tdata;
    return lb_frame_write(bufferevent_get_output(tc->bev), iov, iovcnt);
}

static size_t op_pending(void *tdata)
{
    struct tls_conn *tc = tdata;
    return evbuffer_get_length(bufferevent_get_output(tc->bev));
}

static void op_set_read(void *tdata, bool enabled)
{
    struct tls_conn *tc = tdata;
    if (enabled) bufferevent_enable(tc->bev, EV_READ);
    else bufferevent_disable(tc->bev, EV_READ);
}

static void flush_done(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) tc_free(arg);
}

static void flush_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev; (void)what;
    tc_free(arg);
}

static void op_close(void *tdata, bool flush)
{
    struct tls_conn *tc = tdata;
    tc->conn = NULL;
    if (!flush || evbuffer_get_length(bufferevent_get_output(tc->bev)) == 0) { tc_free(tc); return; }
    tc->closing = true;
    bufferevent_disable(tc->bev, EV_READ);
    struct timeval tv = { FLUSH_TIMEOUT_S, 0 };
    bufferevent_set_timeouts(tc->bev, NULL, &tv);
    bufferevent_setcb(tc->bev, NULL, flush_done, flush_event, tc);
}

static const struct lb_conn_ops tls_ops = {
    .send = op_send, .pending = op_pending, .set_read = op_set_read, .close = op_close,
};

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct tls_conn *tc = arg;
    if (tc->conn) lb_conn_read_frames(tc->conn, bufferevent_get_input(bev));
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct tls_conn *tc = arg;
    if (tc->conn && evbuffer_get_length(bufferevent_get_output(bev)) == 0) lb_conn_writable(tc->conn);
}

/* CN and DNS SANs of the verified client certificate. */
static size_t cert_names(X509 *cert, char names[MAX_NAMES][LB_MAX_NAME + 1])
{
    size_t n = 0;
    X509_NAME *subj = X509_get_subject_name(cert);
    int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (i >= 0) {
        ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
        int len = ASN1_STRING_length(s);
        if (len > 0 && len <= LB_MAX_NAME && !memchr(ASN1_STRING_get0_data(s), 0, (size_t)len)) {
            memcpy(names[n], ASN1_STRING_get0_data(s), (size_t)len);
            names[n++][len] = 0;
        }
    }
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int k = 0; sans && k < sk_GENERAL_NAME_num(sans) && n < MAX_NAMES; k++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, k);
        if (g->type != GEN_DNS) continue;
        int len = ASN1_STRING_length(g->d.dNSName);
        const unsigned char *p = ASN1_STRING_get0_data(g->d.dNSName);
        if (len <= 0 || len > LB_MAX_NAME || memchr(p, 0, (size_t)len)) continue;
        memcpy(names[n], p, (size_t)len);
        names[n++][len] = 0;
    }
    GENERAL_NAMES_free(sans);
    return n;
}

static void handshake_done(struct tls_conn *tc)
{
    struct tls_plugin *tp = tc->tp;
    SSL *ssl = bufferevent_openssl_get_ssl(tc->bev);
    char names[MAX_NAMES][LB_MAX_NAME + 1];
    const char *ptrs[MAX_NAMES];
    char subject[256] = "";
    size_t n = 0;
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (cert && SSL_get_verify_result(ssl) == X509_V_OK) {
        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
        n = cert_names(cert, names);
        for (size_t i = 0; i < n; i++) ptrs[i] = names[i];
    }
    X509_free(cert);
    struct lb_peer peer = {
        .transport = "tls-tcp", .address = tc->addr, .tls_subject = subject[0] ? subject : NULL,
        .identity_names = n ? ptrs : NULL, .n_identity_names = n,
    };
    tc->conn = lb_conn_new(tp->ctx, &tls_ops, tc, &peer);
    if (!tc->conn) { tc_free(tc); return; }
    bufferevent_set_timeouts(tc->bev, NULL, NULL);
    lb_log(tp->ctx, LB_LOG_DEBUG, "%s: %s handshake done%s%s", tc->addr, SSL_get_version(ssl),
           subject[0] ? ", client " : "", subject);
    /* Frames may have arrived with the end of the handshake. */
    if (evbuffer_get_length(bufferevent_get_input(tc->bev))) read_cb(tc->bev, tc);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct tls_conn *tc = arg;
    if (what & BEV_EVENT_CONNECTED) { handshake_done(tc); return; }
    if (!tc->conn) {
        /* Refused before it was a connection: bad handshake, wrong or no
         * certificate, old protocol, plain TCP, or a stalled handshake. */
        tc->tp->refused++;
        if (what & BEV_EVENT_TIMEOUT)
            lb_log(tc->tp->ctx, LB_LOG_INFO, "%s: TLS handshake timed out; slot freed", tc->addr);
        else
            log_ssl_errors(tc->tp, "TLS handshake refused from", tc->addr, bufferevent_openssl_get_ssl(tc->bev));
        tc_free(tc);
        return;
    }
    ERR_clear_error();
    lb_conn_gone(tc->conn, (what & BEV_EVENT_EOF) ? "peer closed the connection" : "TLS or socket error");
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l; (void)salen;
    struct tls_plugin *tp = arg;
    struct tls_conn *tc = calloc(1, sizeof *tc);
    SSL *ssl = tc ? SSL_new(tp->ssl) : NULL;
    if (!ssl) { free(tc); evutil_closesocket(fd); return; }
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
        port = ntohs(((struct sockaddr_in *)sa)->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
        port = ntohs(((struct sockaddr_in6 *)sa)->sin6_port);
    }
    snprintf(tc->addr, sizeof tc->addr, "%s:%d", host, port);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    tc->tp = tp;
    tc->bev = bufferevent_openssl_socket_new(lb_event_base(tp->ctx), fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    if (!tc->bev) { SSL_free(ssl); free(tc); evutil_closesocket(fd); return; }
    tc->next = tp->conns;
    if (tp->conns) tp->conns->pprev = &tc->next;
    tp->conns = tc;
    tc->pprev = &tp->conns;
    /* A client that never finishes the handshake must not hold the slot. */
    struct timeval tv = { (time_t)(tp->handshake_ms / 1000), (suseconds_t)((tp->handshake_ms % 1000) * 1000) };
    bufferevent_set_timeouts(tc->bev, &tv, &tv);
    bufferevent_setcb(tc->bev, read_cb, write_cb, event_cb, tc);
    bufferevent_enable(tc->bev, EV_READ | EV_WRITE);
}

/* ---- listeners ------------------------------------------------------ */

static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof host) return -1;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = 0;
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = 0;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) return -1;
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
    } else if (!strcmp(host, "localhost")) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *len = sizeof *in4;
    } else {
        return -1;   /* numeric addresses only: no DNS lookups at start-up */
    }
    return 0;
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    struct tls_plugin *tp = arg;
    lb_log(tp->ctx, LB_LOG_WARN, "accept failed: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void tls_unload(struct lb_plugin_ctx *ctx);

static int tls_load(struct lb_plugin_ctx *ctx)
{
    struct tls_settings s;
    const char *const *listen;
    if (read_settings(ctx, &s) < 0) return -1;
    size_t n = lb_conf_list(ctx, "listen", &listen);
    if (n == 0 || n > MAX_LISTENERS) {
        lb_plugin_fail(ctx, "give 1 to %d 'listen = host:port' lines", MAX_LISTENERS);
        return -1;
    }
    struct sockaddr_storage ss[MAX_LISTENERS];
    socklen_t sl[MAX_LISTENERS];
    for (size_t i = 0; i < n; i++) {
        if (parse_listen(listen[i], &ss[i], &sl[i])) {
            lb_plugin_fail(ctx, "listen '%s' is not host:port with a numeric host (127.0.0.1:7443, [::1]:7443)", listen[i]);
            return -1;
        }
    }
    SSL_CTX *ssl = make_ssl_ctx(ctx, &s);
    if (!ssl) return -1;
    if (lb_check_only(ctx)) { SSL_CTX_free(ssl); return 0; }
    struct tls_plugin *tp = calloc(1, sizeof *tp);
    if (!tp) { SSL_CTX_free(ssl); lb_plugin_fail(ctx, "out of memory"); return -1; }
    tp->ctx = ctx;
    tp->ssl = ssl;
    tp->handshake_ms = s.handshake_ms;
    tp->require_cert = s.require_cert;
    lb_plugin_set_data(ctx, tp);
    for (size_t i = 0; i < n; i++) {
        struct evconnlistener *l = evconnlistener_new_bind(lb_event_base(ctx), accept_cb, tp,
                                                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                                           1024, (struct sockaddr *)&ss[i], (int)sl[i]);
        if (!l) {
            lb_plugin_fail(ctx, "cannot listen on %s: %s", listen[i], strerror(errno));
            return -1;   /* the host calls unload */
        }
        evconnlistener_set_error_cb(l, accept_error_cb);
        lb_listener_add(ctx, l);
        tp->listeners[tp->n_listeners++] = l;
        lb_log(ctx, LB_LOG_INFO, "listening on %s (min %s%s)", listen[i], s.min_protocol,
               s.require_cert ? ", client certificates required" : "");
    }
    if (s.require_cert) lb_declare_authenticator(ctx);
    return 0;
}

static int tls_reload(struct lb_plugin_ctx *ctx)
{
    struct tls_settings s;
    const char *const *listen;
    if (read_settings(ctx, &s) < 0) return -1;
    (void)lb_conf_list(ctx, "listen", &listen);   /* listeners change only on restart */
    struct tls_plugin *tp = lb_plugin_data(ctx);
    SSL_CTX *ssl = make_ssl_ctx(ctx, &s);
    if (!ssl || !tp) { SSL_CTX_free(ssl); return -1; }
    /* Established connections hold their own reference to the old context. */
    SSL_CTX_free(tp->ssl);
    tp->ssl = ssl;
    tp->handshake_ms = s.handshake_ms;
    lb_log(ctx, LB_LOG_INFO, "certificates reloaded (%s)", s.cert);
    return 0;
}

static void tls_unload(struct lb_plugin_ctx *ctx)
{
    struct tls_plugin *tp = lb_plugin_data(ctx);
    if (!tp) return;
    for (size_t i = 0; i < tp->n_listeners; i++) {
        lb_listener_remove(ctx, tp->listeners[i]);
        evconnlistener_free(tp->listeners[i]);
    }
    /* Connections the host closed are flushing or handshaking: free them. */
    while (tp->conns) tc_free(tp->conns);
    SSL_CTX_free(tp->ssl);
    free(tp);
    lb_plugin_set_data(ctx, NULL);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .name = "tls-tcp",
    .version = PACKAGE_VERSION,
    .load = tls_load,
    .unload = tls_unload,
    .reload = tls_reload,
};
