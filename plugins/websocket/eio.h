/*
 * eio: the Engine.IO v4 and Socket.IO v5 packet grammar (see
 * ../shared/research/peer-protocols.md §3).  Parsing only checks and
 * points into the caller's bytes (nothing is copied or allocated); the
 * payload JSON is validated with the envelope scanner.  The rules are the
 * reference parser's: a packet that breaks them closes the session.
 */
#ifndef WS_EIO_H
#define WS_EIO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "envelope.h"

enum eio_type {
    EIO_OPEN = '0', EIO_CLOSE = '1', EIO_PING = '2', EIO_PONG = '3',
    EIO_MESSAGE = '4', EIO_UPGRADE = '5', EIO_NOOP = '6'
};

enum sio_type {
    SIO_CONNECT = 0, SIO_DISCONNECT, SIO_EVENT, SIO_ACK, SIO_CONNECT_ERROR,
    SIO_BINARY_EVENT, SIO_BINARY_ACK
};

#define SIO_MAX_NSP 160          /* "/ipc/" + a service name, with room */
#define SIO_MAX_ATTACHMENTS 1000
#define SIO_MAX_ACK 9007199254740991LL   /* 2^53 - 1: what JS numbers hold exactly */

struct sio_packet {
    enum sio_type type;
    unsigned attachments;        /* BINARY_*: placeholders announced */
    const char *nsp;             /* "/" when the packet names none */
    size_t nsp_len;
    int64_t ack;                 /* -1: no ack id */
    struct env_val data;         /* the JSON payload; kind J_NONE when absent */
    struct env_val name;         /* EVENT: the event name (a string) */
    const char *args;            /* EVENT: cursor past the name, for env_array_next */
};

/* The Engine.IO packet type of a text packet, or 0 when the first byte is
 * not one of '0'..'6' (or the packet is empty). */
int eio_type(const char *p, size_t n);

/* Parses a Socket.IO packet (the text after Engine.IO's '4').  Returns 0,
 * or -1 with *why (static) when it breaks the grammar or the payload rules. */
int sio_parse(const char *p, size_t n, struct sio_packet *out, const char **why);

/* The next packet of a polling payload (packets separated by 0x1E).
 * The offset starts at 0.  Returns 1 with the packet and its length set, 0 at the end. */
int eio_payload_next(const char *body, size_t len, size_t *off, const char **pkt, size_t *n);

/* A valid JSON value's text (white space around it allowed) as an
 * env_val: its kind from the first character; a string's p/n are the
 * characters between the quotes.  J_NONE for p NULL. */
struct env_val eio_value(const char *p, size_t n);

/* An event name socket.io reserves (connect, disconnect, ...). */
bool sio_reserved_event(const char *p, size_t n);
#endif
