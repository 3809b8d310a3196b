#include "config.h"
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <lexbus/plugin.h>
#include "tls.h"

static void pin_require(struct lb_plugin_ctx *ctx, struct tls_keys *k, const bool *pinned)
{
    if (!pinned || k->require_cert == *pinned) return;
    lb_log(ctx, LB_LOG_WARN, "require_client_cert changed to %s: refused, it decides whether %s authenticates "
           "services (mode = production depends on it), which is fixed at start-up; restart lexbusd to apply it "
           "(keeping require_client_cert = %s)", k->require_cert ? "yes" : "no", lb_plugin_name(ctx),
           *pinned ? "yes" : "no");
    k->require_cert = *pinned;
}

int tls_keys_read(struct lb_plugin_ctx *ctx, struct tls_keys *k, const bool *pinned)
{
    memset(k, 0, sizeof *k);
    if (lb_conf_str(ctx, "cert", NULL, &k->cert) < 0 || lb_conf_str(ctx, "key", NULL, &k->key) < 0 ||
        lb_conf_str(ctx, "ca", NULL, &k->ca) < 0 || lb_conf_str(ctx, "ciphers", NULL, &k->ciphers) < 0 ||
        lb_conf_str(ctx, "min_protocol", "TLS1.2", &k->min_protocol) < 0 ||
        lb_conf_bool(ctx, "require_client_cert", false, &k->require_cert) < 0)
        return -1;
    if (!k->cert || !k->key) {
        lb_plugin_fail(ctx, "cert and key are required (scripts/gen-certs.sh makes development ones)");
        return -1;
    }
    pin_require(ctx, k, pinned);
    if (k->require_cert && !k->ca) {
        lb_plugin_fail(ctx, "require_client_cert = yes needs ca = <CA file> to verify client certificates");
        return -1;
    }
    if (strcmp(k->min_protocol, "TLS1.2") && strcmp(k->min_protocol, "TLS1.3")) {
        lb_plugin_fail(ctx, "min_protocol '%s' is not TLS1.2 or TLS1.3 (older versions are refused)", k->min_protocol);
        return -1;
    }
    k->cert = lb_conf_path(ctx, k->cert);
    k->key = lb_conf_path(ctx, k->key);
    if (k->ca) k->ca = lb_conf_path(ctx, k->ca);
    return 0;
}

/* "2027-01-31T12:00:00Z" from an ASN1_TIME. */
static void asn1_time_iso(const ASN1_TIME *t, char *out, size_t len)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1 || !strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, len, "?");
}

SSL_CTX *tls_server_ctx(struct lb_plugin_ctx *ctx, const struct tls_keys *s, const char *session_id_ctx)
{
    char err[512] = "";
    SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
    if (!ssl) goto fail;
    if (SSL_CTX_set_min_proto_version(ssl, strcmp(s->min_protocol, "TLS1.3") ? TLS1_2_VERSION : TLS1_3_VERSION) != 1)
        goto fail;
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    /* Without a session id context OpenSSL aborts every resumed handshake
     * when client certificates are verified ("internal error" alert). */
    SSL_CTX_set_session_id_context(ssl, (const unsigned char *)session_id_ctx, (unsigned)strlen(session_id_ctx));
    if (SSL_CTX_use_certificate_chain_file(ssl, s->cert) != 1) { snprintf(err, sizeof err, "cannot load cert %s", s->cert); goto fail; }
    if (SSL_CTX_use_PrivateKey_file(ssl, s->key, SSL_FILETYPE_PEM) != 1) { snprintf(err, sizeof err, "cannot load key %s", s->key); goto fail; }
    if (SSL_CTX_check_private_key(ssl) != 1) { snprintf(err, sizeof err, "key %s does not match cert %s", s->key, s->cert); goto fail; }
    if (s->ciphers && SSL_CTX_set_cipher_list(ssl, s->ciphers) != 1) { snprintf(err, sizeof err, "no usable cipher in '%s'", s->ciphers); goto fail; }
    if (s->ca) {
        if (SSL_CTX_load_verify_locations(ssl, s->ca, NULL) != 1) { snprintf(err, sizeof err, "cannot load ca %s", s->ca); goto fail; }
        /* The CAs' names go into the CertificateRequest so that clients
         * holding several certificates pick one this server trusts. */
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(s->ca);
        if (names) SSL_CTX_set_client_CA_list(ssl, names);
        SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | (s->require_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    }
    ERR_clear_error();
    return ssl;
fail: {
        unsigned long e = ERR_peek_last_error();
        const char *r = e ? ERR_reason_error_string(e) : NULL;
        ERR_clear_error();
        lb_plugin_fail(ctx, "%s%s%s", err[0] ? err : "cannot create the TLS context", r ? ": " : "", r ? r : "");
        SSL_CTX_free(ssl);
        return NULL;
    }
}

void tls_note_server_cert(struct lb_plugin_ctx *ctx, SSL_CTX *ssl, char *subject, size_t slen,
                          char *not_after, size_t nlen)
{
    X509 *c = SSL_CTX_get0_certificate(ssl);
    subject[0] = 0;
    snprintf(not_after, nlen, "?");
    if (!c) return;
    X509_NAME_oneline(X509_get_subject_name(c), subject, (int)slen);
    asn1_time_iso(X509_get0_notAfter(c), not_after, nlen);
    if (X509_cmp_current_time(X509_get0_notAfter(c)) < 0)
        lb_log(ctx, LB_LOG_WARN, "server certificate %s EXPIRED on %s: clients will refuse it", subject, not_after);
    else if (X509_cmp_time(X509_get0_notAfter(c), &(time_t){ time(NULL) + 7 * 86400 }) < 0)
        lb_log(ctx, LB_LOG_WARN, "server certificate %s expires on %s", subject, not_after);
}

static size_t add_name(char names[TLS_MAX_NAMES][LB_MAX_NAME + 1], size_t n, const unsigned char *p, int len)
{
    if (n >= TLS_MAX_NAMES || len <= 0 || len > LB_MAX_NAME || memchr(p, 0, (size_t)len)) return n;
    for (size_t i = 0; i < n; i++)
        if (strlen(names[i]) == (size_t)len && !memcmp(names[i], p, (size_t)len)) return n;
    memcpy(names[n], p, (size_t)len);
    names[n][len] = 0;
    return n + 1;
}

/* CN and DNS SANs of the verified client certificate. */
size_t tls_cert_names(X509 *cert, char names[TLS_MAX_NAMES][LB_MAX_NAME + 1])
{
    size_t n = 0;
    X509_NAME *subj = X509_get_subject_name(cert);
    int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (i >= 0) {
        ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
        n = add_name(names, n, ASN1_STRING_get0_data(s), ASN1_STRING_length(s));
    }
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int k = 0; sans && k < sk_GENERAL_NAME_num(sans); k++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, k);
        if (g->type == GEN_DNS)
            n = add_name(names, n, ASN1_STRING_get0_data(g->d.dNSName), ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(sans);
    return n;
}

