/*
 * TLS for the TCP transports (tls-tcp, websocket), one copy: the keys
 * every TLS listener reads (cert, key, ca, require_client_cert,
 * min_protocol, ciphers), the server context built from them, and what a
 * verified client certificate says.  OpenSSL 3.
 */
#ifndef LB_COMMON_TLS_H
#define LB_COMMON_TLS_H
#include <stdbool.h>
#include <stddef.h>
#include <openssl/ssl.h>
#include <lexbus/protocol.h>

struct lb_plugin_ctx;

struct tls_keys {
    const char *cert, *key, *ca, *ciphers, *min_protocol;   /* paths resolved against bus.conf */
    bool require_cert;
};

/* Reads and checks the keys (cert and key required; require_client_cert
 * needs ca; TLS1.2 or TLS1.3).  `pinned`: on reload, the
 * require_client_cert in force — whether a transport authenticates is
 * fixed at start-up (lb_declare_authenticator cannot be taken back), so a
 * change is refused with a warning and the old value kept.  Returns 0, or
 * -1 after lb_plugin_fail. */
int tls_keys_read(struct lb_plugin_ctx *ctx, struct tls_keys *k, const bool *pinned);
/* A server context for k (session resumption on, renegotiation and
 * compression off, client certificates verified against ca).  NULL after
 * lb_plugin_fail with OpenSSL's reason. */
SSL_CTX *tls_server_ctx(struct lb_plugin_ctx *ctx, const struct tls_keys *k, const char *session_id_ctx);
/* The server certificate's subject and expiry ("2027-01-31T12:00:00Z"),
 * warning in the log when it has expired or will within a week. */
void tls_note_server_cert(struct lb_plugin_ctx *ctx, SSL_CTX *ssl, char *subject, size_t slen,
                          char *not_after, size_t nlen);

#define TLS_MAX_NAMES 16
/* The CN and DNS SANs of a (verified) certificate, each at most
 * LB_MAX_NAME bytes without NULs, duplicates dropped.  Returns the count. */
size_t tls_cert_names(X509 *cert, char names[TLS_MAX_NAMES][LB_MAX_NAME + 1]);
#endif
