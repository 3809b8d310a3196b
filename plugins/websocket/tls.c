/*
 * TLS on the websocket listener's sockets.  The context (certificates,
 * client-certificate checks, protocol floor, ciphers) is plugins/common's
 * tls_server_ctx, shared with tls-tcp; here OpenSSL runs on the socket
 * itself (SSL_set_fd), so the plugin keeps its one I/O path: reads go into
 * hc->in and writes come from hc->out, in TLS records instead of bytes.
 *
 * Non-blocking rules: an SSL call that returns WANT_READ or WANT_WRITE
 * waits for that socket event, whichever direction the call was for
 * (hc->read_wants_write, hc->write_wants_read; sock.c arms the events
 * and retries).  Renegotiation is off (tls_server_ctx), so after the
 * handshake a write only waits for room to write.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include "tls.h"

/* One TLS record: the most SSL_write sends at once. */
#define RECORD (16 * 1024)

static void why_failed(struct hc *hc, int ssl_err, char *out, size_t len)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r) snprintf(out, len, "%s", r);
    else if (ssl_err == SSL_ERROR_SYSCALL && errno) snprintf(out, len, "%s", strerror(errno));
    else snprintf(out, len, "the client closed the connection");
    ERR_clear_error();
    long vr = SSL_get_verify_result(hc->ssl);
    if (vr != X509_V_OK) {
        size_t n = strlen(out);
        snprintf(out + n, len - n, "; client certificate: %s", X509_verify_cert_error_string(vr));
    }
}

int tls_begin(struct hc *hc, SSL_CTX *ctx)
{
    if (!(hc->ssl = SSL_new(ctx)) || SSL_set_fd(hc->ssl, hc->fd) != 1) return -1;
    /* Partial writes: hc->out is drained by what each SSL_write took. */
    SSL_set_mode(hc->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Browsers often drop TCP without close_notify: an EOF, not an error. */
    SSL_set_options(hc->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_set_accept_state(hc->ssl);
    hc->handshaking = true;
    hc->wp->n_handshaking++;
    return 0;
}

static void handshake_over(struct hc *hc)
{
    if (!hc->handshaking) return;
    hc->handshaking = false;
    hc->wp->n_handshaking--;
    if (hc->ac) net_addr_release(&hc->wp->handshaking_by_addr, hc->ac);
    hc->ac = NULL;
}

/* The verified client certificate: its subject, and its CN and DNS SANs
 * as the names the connection may REGISTER under (as on tls-tcp).
 * Returns -1 when mutual TLS is required and the certificate names
 * nothing usable. */
static int peer_identity(struct hc *hc)
{
    char names[TLS_MAX_NAMES][LB_MAX_NAME + 1];
    size_t n = 0;
    X509 *cert = SSL_get1_peer_certificate(hc->ssl);
    if (cert && SSL_get_verify_result(hc->ssl) == X509_V_OK) {
        X509_NAME_oneline(X509_get_subject_name(cert), hc->cert_subject, sizeof hc->cert_subject);
        n = tls_cert_names(cert, names);
    }
    X509_free(cert);
    if (hc->cert_subject[0] && n == 0 && (SSL_get_verify_mode(hc->ssl) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT)) {
        wsp_log_refusal(hc->wp, "refused %s: client certificate %s has no CN or DNS SAN of 1-%d bytes", hc->addr,
                        hc->cert_subject, LB_MAX_NAME);
        return -1;
    }
    const char *ptrs[TLS_MAX_NAMES];
    for (size_t i = 0; i < n; i++) ptrs[i] = names[i];
    hc->ids = wsp_names_dup(ptrs, n);
    hc->n_ids = n;
    return 0;
}

int tls_handshake(struct hc *hc)
{
    hc->read_wants_write = hc->write_wants_read = false;
    ERR_clear_error();
    int r = SSL_do_handshake(hc->ssl);
    if (r == 1) {
        handshake_over(hc);
        hc->wp->n.tls_handshakes++;
        if (peer_identity(hc) < 0) { hc->wp->n.tls_refused++; return -1; }
        lb_log(hc->wp->ctx, LB_LOG_DEBUG, "%s: %s %s handshake done%s%s", hc->addr, SSL_get_version(hc->ssl),
               SSL_session_reused(hc->ssl) ? "resumed" : "full", hc->cert_subject[0] ? ", client " : "",
               hc->cert_subject);
        return 1;
    }
    int e = SSL_get_error(hc->ssl, r);
    if (e == SSL_ERROR_WANT_READ) return 0;
    if (e == SSL_ERROR_WANT_WRITE) { hc->read_wants_write = true; return 0; }
    char why[384];
    why_failed(hc, e, why, sizeof why);
    hc->wp->n.tls_refused++;
    hc->peer_gone = true;
    bool clear = strstr(why, "wrong version number") || strstr(why, "http request");
    wsp_log_refusal(hc->wp, "TLS handshake refused from %s: %s%s", hc->addr, why,
                    clear ? " (the client does not speak TLS: plain http:// or ws:// to an https listener?)" : "");
    return -1;
}

ssize_t tls_read(struct hc *hc, size_t max)
{
    size_t total = 0;
    hc->read_wants_write = false;
    while (total < max) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(hc->in, (ev_ssize_t)(max - total), &v, 1) != 1) return -1;
        size_t room = v.iov_len < max - total ? v.iov_len : max - total;
        ERR_clear_error();
        int r = SSL_read(hc->ssl, v.iov_base, room > INT32_MAX ? INT32_MAX : (int)room);
        if (r > 0) {
            v.iov_len = (size_t)r;
            evbuffer_commit_space(hc->in, &v, 1);
            total += (size_t)r;
            continue;
        }
        evbuffer_commit_space(hc->in, &v, 0);
        int e = SSL_get_error(hc->ssl, r);
        if (e == SSL_ERROR_WANT_READ) break;
        if (e == SSL_ERROR_WANT_WRITE) { hc->read_wants_write = true; break; }
        if (total) break;   /* the EOF or error shows on the next read */
        if (e == SSL_ERROR_ZERO_RETURN) return 0;
        hc->peer_gone = true;
        if (e == SSL_ERROR_SYSCALL && !ERR_peek_error()) { ERR_clear_error(); return 0; }   /* EOF without close_notify */
        char why[384];
        why_failed(hc, e, why, sizeof why);
        lb_log(hc->wp->ctx, LB_LOG_DEBUG, "%s: TLS read failed: %s", hc->addr, why);
        return -1;
    }
    /* Decrypted bytes OpenSSL holds make no socket event: come back. */
    if (total == max && SSL_pending(hc->ssl) > 0) event_active(&hc->rev, EV_READ, 0);
    return total ? (ssize_t)total : -2;
}

int tls_write(struct hc *hc)
{
    hc->write_wants_read = false;
    while (evbuffer_get_length(hc->out) > 0) {
        size_t len = evbuffer_get_length(hc->out);
        size_t n = len < RECORD ? len : RECORD;
        /* Small frames in separate chunks go out in one record. */
        const void *p = evbuffer_pullup(hc->out, (ev_ssize_t)n);
        if (!p) return -1;
        ERR_clear_error();
        int r = SSL_write(hc->ssl, p, (int)n);
        if (r > 0) { evbuffer_drain(hc->out, (size_t)r); continue; }
        int e = SSL_get_error(hc->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE) return 0;
        if (e == SSL_ERROR_WANT_READ) { hc->write_wants_read = true; return 0; }
        hc->peer_gone = true;
        ERR_clear_error();
        errno = EPIPE;
        return -1;
    }
    return 0;
}

/* One close_notify, straight to the non-blocking socket (never waiting
 * for the peer's), when nothing queued was left unsent: the alert never
 * vouches for data that was dropped, and OpenSSL keeps the session for
 * resumption (SSL_free drops sessions never shut down). */
void tls_end(struct hc *hc)
{
    if (!hc->ssl || hc->handshaking || hc->peer_gone || !SSL_is_init_finished(hc->ssl) ||
        evbuffer_get_length(hc->out))
        return;
    SSL_set_shutdown(hc->ssl, SSL_get_shutdown(hc->ssl) | SSL_RECEIVED_SHUTDOWN);
    (void)SSL_shutdown(hc->ssl);
    ERR_clear_error();
}

void tls_free(struct hc *hc)
{
    handshake_over(hc);
    SSL_free(hc->ssl);
    hc->ssl = NULL;
}
