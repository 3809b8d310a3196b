/*
 * TLS on the listener's sockets (tls.c), below the socket layer: sock.c
 * reads and writes through these when the listener speaks TLS.  The
 * context comes from plugins/common/tls.c.
 */
#ifndef WS_TLS_H
#define WS_TLS_H
#include "wsp.h"

/* Starts the server handshake on an accepted socket: 0, or -1. */
int tls_begin(struct hc *hc, SSL_CTX *ctx);
/* Drives the handshake: 1 done, 0 waiting (events armed), -1 failed
 * (logged; the caller frees hc). */
int tls_handshake(struct hc *hc);
/* Reads into hc->in: bytes read, 0 at EOF, -1 error, -2 nothing ready. */
ssize_t tls_read(struct hc *hc, size_t max);
/* Writes from hc->out: 0 (what could not be written stays queued;
 * hc->wev or hc->rev is needed), -1 error. */
int tls_write(struct hc *hc);
/* A close_notify when everything queued went out (never waits). */
void tls_end(struct hc *hc);
void tls_free(struct hc *hc);
#endif
