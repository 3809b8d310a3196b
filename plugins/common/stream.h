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
    char *p;
    size_t start, end, cap;       /* queued: p[start, end) */
    uint32_t hint;                /* the size the last buffer grew to */
    struct stream_marks marks;
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
#endif
