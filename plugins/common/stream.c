#include "config.h"
#include <stdlib.h>
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

int stream_send(struct stream_marks *sm, struct evbuffer *out, const struct iovec *iov, int iovcnt)
{
    size_t before = evbuffer_get_length(out);
    /* A frame starts here: remember it when the queue has grown enough
     * since the last mark for a discard to be worth it. */
    if (before >= MARK_EVERY && sm->added - sm->last >= MARK_EVERY) mark(sm);
    if (lb_frame_write(out, iov, iovcnt)) return -1;
    sm->added += evbuffer_get_length(out) - before;
    return 0;
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
