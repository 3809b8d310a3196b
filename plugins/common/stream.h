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
 * marks are allocated when a queue first grows past 64 KiB.
 */
#ifndef LB_COMMON_STREAM_H
#define LB_COMMON_STREAM_H
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct evbuffer;

struct stream_marks {
    uint64_t added;          /* bytes ever queued */
    uint64_t last;           /* the newest mark */
    uint64_t *mark;          /* ring of frame-boundary offsets, or NULL */
    unsigned head, n;
};

/* Queues one frame (4-byte length + iov) on `out` and records it. */
int stream_send(struct stream_marks *sm, struct evbuffer *out, const struct iovec *iov, int iovcnt);
/* Drops queued whole frames past the first boundary not yet written. */
void stream_discard(struct stream_marks *sm, struct evbuffer *out);
void stream_marks_free(struct stream_marks *sm);
#endif
