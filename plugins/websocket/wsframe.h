/*
 * wsframe: RFC 6455 framing for a server.  Client frames are parsed where
 * they lie in the input and unmasked in place, 8 bytes at a time; a
 * message in one frame is handed over without a copy, a fragmented one is
 * reassembled.  The rules a server must enforce are all here: client
 * frames masked, no reserved bits (no extension is agreed) or opcodes, no
 * continuation out of place, control frames final and <= 125 bytes,
 * minimal length encodings, messages within max_message (checked from the
 * header, before any payload is read), text that is UTF-8.
 *
 * wslay (libwslay-dev) was the first choice and is kept as the fuzz
 * target's reference parser: its frame layer copies every byte into its
 * own 4 KiB buffer and unmasks one byte at a time, which was 30% of the
 * daemon's CPU at 128-byte messages (0.5x the unix transport); its event
 * layer allocates and copies each message twice.
 *
 * No socket code (fuzzed as is).  Not thread-safe; one reader per connection.
 */
#ifndef WS_WSFRAME_H
#define WS_WSFRAME_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct evbuffer;

enum ws_op { WS_OP_CONT = 0, WS_OP_TEXT = 1, WS_OP_BINARY = 2, WS_OP_CLOSE = 8, WS_OP_PING = 9, WS_OP_PONG = 10 };

/* One frame header as sent. */
struct ws_frame {
    bool fin, masked;
    uint8_t rsv, op;
    uint8_t key[4];
    size_t head;                /* header bytes, mask key included */
    uint64_t len;               /* payload bytes */
};

/* Parses the frame header at p.  Returns 1 with *f set, 0 when more bytes
 * are needed (the header is incomplete), -1 when the header breaks the
 * framing itself (a fragmented or oversized control frame, a length not in
 * its shortest form, a 64-bit length with the top bit set). */
int ws_frame_parse(const uint8_t *p, size_t n, struct ws_frame *f, const char **why);
/* XORs n payload bytes with the mask key (`off`: the position in the
 * payload), 16 bytes at a time.  Returns true when every unmasked byte is
 * ASCII, which spares text the UTF-8 check. */
bool ws_unmask(uint8_t *p, size_t n, const uint8_t key[4], uint64_t off);

/* What the reader hands over: a complete text or binary message, or a
 * control frame (ping, pong, close: `code` is the close status or 1005).
 * Returns 0 to go on, 1 to stop reading now (the caller paused or closed),
 * -1 when the connection is gone (stop and never touch the reader again). */
typedef int (*ws_msg_fn)(void *ud, enum ws_op op, const uint8_t *p, size_t n, unsigned code);

struct ws_reader {
    uint64_t max_msg;           /* largest message (sum of fragments) */
    uint8_t *msg;               /* reassembly of a fragmented message */
    size_t msg_len, msg_cap;
    enum ws_op msg_op;          /* WS_OP_CONT: no message in progress */
    bool msg_ascii;             /* the fragments so far are plain ASCII */
    bool ready;
    size_t need;                /* after ws_read stopped short: bytes the next frame needs */
};

/* Returns 0, or -1 out of memory. */
int ws_reader_init(struct ws_reader *r, uint64_t max_msg);
void ws_reader_free(struct ws_reader *r);

/* Consumes the complete frames at the head of p (unmasking them in
 * place), calling fn per message.  Returns the bytes consumed; when it
 * stops before len for want of data, r->need is how many contiguous bytes
 * the next frame takes (header and payload).  Returns -1 after fn returned
 * -1, or -2 on a protocol violation: *code is the close status to send
 * (1002 protocol, 1007 bad UTF-8, 1009 too big) and *why a static reason. */
long ws_read(struct ws_reader *r, uint8_t *p, size_t len, ws_msg_fn fn, void *ud, unsigned *code, const char **why);

/* Server frames (never masked): one whole frame of `op` with the given
 * pieces appended to out.  Returns 0 or -1. */
int ws_frame_write(struct evbuffer *out, enum ws_op op, const struct iovec *iov, int iovcnt);
/* The payload of a close frame: a status and a reason (cut to fit 123
 * bytes, never inside a UTF-8 sequence).  Returns its length. */
size_t ws_close_payload(uint8_t out[125], unsigned code, const char *reason);
/* True when p holds well-formed UTF-8 (core/utf8.h's rules: no overlongs,
 * surrogates or code points above U+10FFFF). */
bool ws_utf8_valid(const uint8_t *p, size_t len);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: 0, or -1 when the key is
 * not the base64 of 16 bytes.  out gets 28 characters and a NUL. */
int ws_accept_key(const char *key, size_t n, char out[29]);
#endif
