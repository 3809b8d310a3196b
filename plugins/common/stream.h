/*
 * Shared by the stream transports (unix, tls-tcp): what their send op
 * needs to honour the host's `discard` op without breaking the framing.
 *
 * A slow consumer's SLOW_CONSUMER error must not wait behind megabytes it
 * will never read, but a frame already partly written must be finished or
 * the peer misreads everything after it.  So the output queue keeps a
 * mark every 64 KiB at a frame boundary; discard keeps the bytes up to the
 * first mark at or after what was written already (at most ~64 KiB of
 * whole frames) and drops the rest.  Idle connections pay nothing: the
 * marks are allocated when a queue first grows past 64 KiB.  The websocket
 * transport keeps its WebSocket frames whole the same way.
 */
#ifndef LB_COMMON_STREAM_H
#define LB_COMMON_STREAM_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct evbuffer;

struct stream_marks {
    uint64_t added;          /* bytes ever queued */
    uint64_t last;           /* the newest mark */
    uint64_t *mark;          /* ring of frame-boundary offsets, or NULL */
    unsigned head, n;
};

/* For queues of other kinds (obuf below, the websocket transport's
 * WebSocket frames): a frame starts when `queued` bytes are queued
 * already (the caller adds the frame's bytes to sm->added once queued);
 * and on discard, how many of the `queued` bytes to keep (the rest are
 * whole frames that may go). */
void stream_frame_starts(struct stream_marks *sm, size_t queued);
size_t stream_keep(struct stream_marks *sm, size_t queued);

/* Queues one frame (4-byte length + iov) on `out` and records it. */
int stream_send(struct stream_marks *sm, struct evbuffer *out, const struct iovec *iov, int iovcnt);
/* One readv() of up to `max` bytes from a non-blocking socket straight
 * into `in` (reserved space: no copy; libevent's evbuffer_read caps reads
 * at 4 KiB and adds an ioctl per call).  Returns the bytes read, 0 at
 * EOF, -1 on an error (errno set), -2 when nothing is ready. */
ssize_t stream_readv(int fd, struct evbuffer *in, size_t max);
/* Drops queued whole frames past the first boundary not yet written. */
void stream_discard(struct stream_marks *sm, struct evbuffer *out);
void stream_marks_free(struct stream_marks *sm);

/* A stream transport's output without evbuffer's per-write bookkeeping and
 * chain allocations: one contiguous buffer per connection, written with
 * write(2), allocated when the first frame is queued (as large as the
 * connection's last burst needed) and freed when everything is written,
 * so an idle connection holds none.  Loop thread only. */
struct obuf {
    char *p;                      /* NULL while nothing is queued */
    size_t start, end;            /* queued: p[start, end) */
    size_t cap;                   /* p's size; while p is NULL, the size the next buffer starts at */
    struct stream_marks *marks;   /* made when the queue first passes 64 KiB, freed when it empties */
};
static inline size_t obuf_len(const struct obuf *b) { return b->end - b->start; }
/* Queues one frame (4-byte length + iov).  Returns 0, or -1 (no memory). */
int obuf_frame(struct obuf *b, const struct iovec *iov, int iovcnt);
/* Writes what the socket takes.  Returns 0 (some may be left), or -1 on a
 * hard error (errno). */
int obuf_write(struct obuf *b, int fd);
/* Drops queued whole frames past the first boundary not yet written. */
void obuf_discard(struct obuf *b);
void obuf_free(struct obuf *b);

/* A stream transport's input without a buffer per connection: a read goes
 * into one scratch buffer of IBUF_READ bytes shared by every connection,
 * its whole frames are routed from there in place (lb_conn_feed), and only
 * what is left over -- the start of a frame not yet complete, or frames
 * held back because the connection was paused -- is kept in a buffer of
 * the connection's own, freed as soon as it is routed.  An idle connection
 * holds none.  A frame larger than the scratch is read into its own
 * buffer, grown at most twofold per read (a length prefix that lies costs
 * no more than twice what the peer really sent).  Loop thread only.
 *
 * 32 KiB per read: what the evbuffer reads before it took in effect
 * (evbuffer_reserve_space(16 KiB) handed out two chunks, ~34 KiB a
 * readv).  Half that doubles the loop turns, and so the writes, per message
 * (1->1 128 B: 1.9M msgs/s against 2.6M).  Not much more: what a read
 * routes is flushed only when the loop turn ends, so a larger read holds
 * the first messages back until the last is routed -- a publisher that
 * waits for its subscribers (flow control) stalls on it (64 KiB: 0.99x
 * Redis flow-controlled). */
#define IBUF_READ (32 * 1024)
struct ibuf {
    char *p;                      /* NULL while nothing is kept */
    uint32_t len, cap;            /* kept: p[0, len) */
};
struct lb_conn;
/* Routes what b keeps (call when the connection is resumed).  Returns 0,
 * or -1 when the connection is closed or closing (lb_conn_feed: the
 * transport's tdata, b with it, may be gone). */
int ibuf_route(struct ibuf *b, struct lb_conn *c);
/* One read() from fd behind what b keeps, and every whole frame routed.
 * Not while the connection is paused.  Returns the bytes read, 0 at EOF,
 * -1 on an error (errno; ENOMEM included), -2 when nothing is ready, -3
 * when the connection is closed or closing (as ibuf_route's -1). */
ssize_t ibuf_read(struct ibuf *b, struct lb_conn *c, int fd);
void ibuf_free(struct ibuf *b);
#endif
