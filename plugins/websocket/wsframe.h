/*
 * wsframe: RFC 6455 on top of wslay's frame layer (wslay_frame_*: header
 * parsing, 16/64-bit lengths, minimal-length and control-frame checks,
 * unmasking).  On top of it this module enforces the message rules a
 * server must (client frames masked, no reserved bits or opcodes, no
 * continuation out of place, control frames answered in place, messages
 * bounded, text checked as UTF-8) and reassembles fragmented messages.
 * wslay's event layer is not used: it allocates and copies every message
 * twice; here a message that arrives in one piece is handed over where it
 * lies in wslay's input buffer.
 *
 * Not thread-safe; one reader per connection.  No socket code (fuzzed as is).
 */
#ifndef WS_WSFRAME_H
#define WS_WSFRAME_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <wslay/wslay.h>

struct evbuffer;

enum ws_op { WS_OP_CONT = 0, WS_OP_TEXT = 1, WS_OP_BINARY = 2, WS_OP_CLOSE = 8, WS_OP_PING = 9, WS_OP_PONG = 10 };

/* What the reader hands over: a complete text or binary message, or a
 * control frame (ping, pong, close: `code` is the close status or 1005).
 * Returns 0 to go on, 1 to stop reading now (the caller paused or closed),
 * -1 when the connection is gone (stop and never touch the reader again). */
typedef int (*ws_msg_fn)(void *ud, enum ws_op op, const uint8_t *p, size_t n, unsigned code);

struct ws_reader {
    wslay_frame_context_ptr fr;
    const uint8_t *in;          /* input being consumed by ws_read */
    size_t in_len;
    uint64_t max_msg;           /* largest message (sum of fragments) */
    uint8_t *msg;               /* reassembly of a message in pieces */
    size_t msg_len, msg_cap;
    enum ws_op msg_op;          /* WS_OP_CONT: no message in progress */
    bool frame_open;            /* inside a frame whose payload is arriving */
    uint64_t frame_len, frame_got;
    uint8_t ctl[125];           /* a control frame's payload in pieces */
    size_t ctl_len;
};

/* Returns 0, or -1 out of memory. */
int ws_reader_init(struct ws_reader *r, uint64_t max_msg);
void ws_reader_free(struct ws_reader *r);

/* Consumes up to len bytes, calling fn per message.  Returns the bytes
 * consumed (all of them unless fn stopped), or -1 after fn returned -1,
 * or -2 on a protocol violation: *code is the close status to send (1002
 * protocol, 1007 bad UTF-8, 1009 too big) and *why a static reason. */
long ws_read(struct ws_reader *r, const uint8_t *p, size_t len, ws_msg_fn fn, void *ud,
             unsigned *code, const char **why);

/* Server frames (never masked): one whole frame of `op` with the given
 * pieces appended to out.  Returns 0 or -1. */
int ws_frame_write(struct evbuffer *out, enum ws_op op, const struct iovec *iov, int iovcnt);
/* A close frame with a status and a reason (cut to fit 123 bytes). */
int ws_close_write(struct evbuffer *out, unsigned code, const char *reason);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: 0, or -1 when the key is
 * not the base64 of 16 bytes.  out gets 28 characters and a NUL. */
int ws_accept_key(const char *key, size_t n, char out[29]);
#endif
