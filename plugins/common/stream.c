#include "config.h"
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/uio.h>
#include <event2/buffer.h>
#include <lexbus/plugin.h>
#include "stream.h"

#define MARK_EVERY (64u * 1024)
#define MARKS 1024           /* 64 MiB of queue between the oldest and newest mark */

static void mark(struct stream_marks *sm)
{
    if (!sm->mark && !(sm->mark = malloc(MARKS * sizeof *sm->mark))) return;
    if (sm->n == MARKS) {        /* full: forget the oldest */
        sm->head = (sm->head + 1) % MARKS;
        sm->n--;
    }
    sm->mark[(sm->head + sm->n++) % MARKS] = sm->added;
    sm->last = sm->added;
}

void stream_frame_starts(struct stream_marks *sm, size_t queued)
{
    /* Remember a frame boundary when the queue has grown enough since the
     * last mark for a discard to be worth it. */
    if (queued >= MARK_EVERY && sm->added - sm->last >= MARK_EVERY) mark(sm);
}

size_t stream_keep(struct stream_marks *sm, size_t queued)
{
    uint64_t written = sm->added - queued;
    size_t keep = queued;
    for (unsigned i = 0; i < sm->n; i++) {
        uint64_t m = sm->mark[(sm->head + i) % MARKS];
        if (m >= written) { keep = (size_t)(m - written); break; }
    }
    sm->added = written + keep;
    sm->n = sm->head = 0;
    sm->last = sm->added;
    return keep;
}

int stream_send(struct stream_marks *sm, struct evbuffer *out, const struct iovec *iov, int iovcnt)
{
    size_t before = evbuffer_get_length(out);
    stream_frame_starts(sm, before);
    if (lb_frame_write(out, iov, iovcnt)) return -1;
    sm->added += evbuffer_get_length(out) - before;
    return 0;
}

ssize_t stream_readv(int fd, struct evbuffer *in, size_t max)
{
    struct evbuffer_iovec vec[2];
    int n = evbuffer_reserve_space(in, (ev_ssize_t)max, vec, 2);
    if (n <= 0) return -1;
    struct iovec iov[2];
    for (int i = 0; i < n; i++) { iov[i].iov_base = vec[i].iov_base; iov[i].iov_len = vec[i].iov_len; }
    ssize_t r = readv(fd, iov, n);
    if (r < 0) {
        evbuffer_commit_space(in, vec, 0);
        return (errno == EAGAIN || errno == EINTR) ? -2 : -1;
    }
    size_t left = (size_t)r;
    for (int i = 0; i < n; i++) {
        size_t take = left < vec[i].iov_len ? left : vec[i].iov_len;
        vec[i].iov_len = take;
        left -= take;
    }
    evbuffer_commit_space(in, vec, n);
    return r;
}

void stream_discard(struct stream_marks *sm, struct evbuffer *out)
{
    size_t len = evbuffer_get_length(out);
    size_t keep = stream_keep(sm, len);
    if (keep < len) {
        struct evbuffer *head = evbuffer_new();
        if (!head) return;
        evbuffer_remove_buffer(out, head, keep);
        evbuffer_drain(out, evbuffer_get_length(out));
        evbuffer_add_buffer(out, head);
        evbuffer_free(head);
    }
}

void stream_marks_free(struct stream_marks *sm)
{
    free(sm->mark);
    sm->mark = NULL;
    sm->n = sm->head = 0;
}

/* ---- a connection's output as one buffer ----------------------------- */

#define OBUF_MIN 1024u       /* a first buffer: a lone reply fits */
#define OBUF_HINT_MAX (256u * 1024)   /* what a connection's last burst may ask for next time */

/* Room for n more bytes at the end. */
static int reserve(struct obuf *b, size_t n)
{
    if (b->cap - b->end >= n) return 0;
    if (!b->p) {
        /* As large as this connection needed last time: a subscriber that
         * gets bursts does not grow its buffer again for each. */
        size_t cap = b->hint > OBUF_MIN ? b->hint : OBUF_MIN;
        while (cap < n) cap *= 2;
        if (!(b->p = malloc(cap))) return -1;
        b->cap = cap;
        b->start = b->end = 0;
        return 0;
    }
    size_t used = b->end - b->start;
    if (b->start && b->cap - used >= n && b->start >= used) {
        /* Compacting is cheap next to growing: what is left is small. */
        memmove(b->p, b->p + b->start, used);
        b->start = 0;
        b->end = used;
        return 0;
    }
    size_t cap = b->cap * 2;
    while (cap - used < n) cap *= 2;
    char *p = malloc(cap);
    if (!p) return -1;
    memcpy(p, b->p + b->start, used);
    free(b->p);
    b->p = p;
    b->cap = cap;
    b->start = 0;
    b->end = used;
    return 0;
}

int obuf_frame(struct obuf *b, const struct iovec *iov, int iovcnt)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
    if (total == 0 || total > UINT32_MAX || reserve(b, LB_FRAME_HEADER + total)) return -1;
    stream_frame_starts(&b->marks, b->end - b->start);
    uint32_t be = htonl((uint32_t)total);
    char *o = b->p + b->end;
    memcpy(o, &be, sizeof be);
    o += sizeof be;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(o, iov[i].iov_base, iov[i].iov_len);
        o += iov[i].iov_len;
    }
    b->end += LB_FRAME_HEADER + total;
    b->marks.added += LB_FRAME_HEADER + total;
    return 0;
}

/* Nothing queued: the buffer goes, so an idle connection holds none; its
 * size is remembered for the next burst. */
static void release_if_empty(struct obuf *b)
{
    if (b->p && b->start == b->end) {
        b->hint = (uint32_t)(b->cap < OBUF_HINT_MAX ? b->cap : OBUF_HINT_MAX);
        free(b->p);
        b->p = NULL;
        b->cap = b->start = b->end = 0;
    }
}

int obuf_write(struct obuf *b, int fd)
{
    while (b->end > b->start) {
        ssize_t w = write(fd, b->p + b->start, b->end - b->start);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            return -1;
        }
        if (w == 0) break;
        b->start += (size_t)w;
    }
    release_if_empty(b);
    return 0;
}

void obuf_discard(struct obuf *b)
{
    size_t queued = b->end - b->start;
    size_t keep = stream_keep(&b->marks, queued);
    b->end = b->start + keep;
    release_if_empty(b);
}

void obuf_free(struct obuf *b)
{
    free(b->p);
    b->p = NULL;
    b->cap = b->start = b->end = 0;
    stream_marks_free(&b->marks);
}
