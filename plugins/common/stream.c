#include "config.h"
#include <errno.h>
#include <stdlib.h>
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

int stream_send_as(struct stream_marks *sm, struct evbuffer *out, stream_write_fn write, void *ud,
                   const struct iovec *iov, int iovcnt)
{
    size_t before = evbuffer_get_length(out);
    /* A frame starts here: remember it when the queue has grown enough
     * since the last mark for a discard to be worth it. */
    if (before >= MARK_EVERY && sm->added - sm->last >= MARK_EVERY) mark(sm);
    if (write(ud, out, iov, iovcnt)) return -1;
    sm->added += evbuffer_get_length(out) - before;
    return 0;
}

static int length_prefixed(void *ud, struct evbuffer *out, const struct iovec *iov, int iovcnt)
{
    (void)ud;
    return lb_frame_write(out, iov, iovcnt);
}

int stream_send(struct stream_marks *sm, struct evbuffer *out, const struct iovec *iov, int iovcnt)
{
    return stream_send_as(sm, out, length_prefixed, NULL, iov, iovcnt);
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
    uint64_t written = sm->added - len;
    size_t keep = len;
    for (unsigned i = 0; i < sm->n; i++) {
        uint64_t m = sm->mark[(sm->head + i) % MARKS];
        if (m >= written) { keep = (size_t)(m - written); break; }
    }
    if (keep < len) {
        struct evbuffer *head = evbuffer_new();
        if (!head) return;
        evbuffer_remove_buffer(out, head, keep);
        evbuffer_drain(out, evbuffer_get_length(out));
        evbuffer_add_buffer(out, head);
        evbuffer_free(head);
        sm->added = written + keep;
    }
    sm->n = sm->head = 0;
    sm->last = sm->added;
}

void stream_marks_free(struct stream_marks *sm)
{
    free(sm->mark);
    sm->mark = NULL;
    sm->n = sm->head = 0;
}
