#include "config.h"
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
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

#define OBUF_MIN 256u        /* a first buffer: a lone reply (REGISTER_ACK) fits */
#define OBUF_HINT_MAX (256u * 1024)   /* what a connection's last burst may ask for next time */

/* Room for n more bytes at the end. */
static int reserve(struct obuf *b, size_t n)
{
    if (!b->p) {
        /* As large as this connection needed last time: a subscriber that
         * gets bursts does not grow its buffer again for each. */
        size_t cap = b->cap > OBUF_MIN ? b->cap : OBUF_MIN;
        while (cap < n) cap *= 2;
        if (!(b->p = malloc(cap))) return -1;
        b->cap = cap;
        b->start = b->end = 0;
        return 0;
    }
    if (b->cap - b->end >= n) return 0;
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

/* Frame boundaries are worth recording only in a queue past MARK_EVERY:
 * the marks are made then (counting from what is queued now) and go when
 * the queue empties.  Without them a discard keeps everything, as
 * stream_keep does without a mark. */
static void obuf_mark(struct obuf *b, size_t queued)
{
    if (queued < MARK_EVERY && !b->marks) return;
    if (!b->marks) {
        if (!(b->marks = calloc(1, sizeof *b->marks))) return;
        b->marks->added = queued;
    }
    stream_frame_starts(b->marks, queued);
}

static void obuf_marks_free(struct obuf *b)
{
    if (!b->marks) return;
    stream_marks_free(b->marks);
    free(b->marks);
    b->marks = NULL;
}

int obuf_frame(struct obuf *b, const struct iovec *iov, int iovcnt)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
    if (total == 0 || total > UINT32_MAX || reserve(b, LB_FRAME_HEADER + total)) return -1;
    obuf_mark(b, b->end - b->start);
    uint32_t be = htonl((uint32_t)total);
    char *o = b->p + b->end;
    memcpy(o, &be, sizeof be);
    o += sizeof be;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(o, iov[i].iov_base, iov[i].iov_len);
        o += iov[i].iov_len;
    }
    b->end += LB_FRAME_HEADER + total;
    if (b->marks) b->marks->added += LB_FRAME_HEADER + total;
    return 0;
}

/* Nothing queued: the buffer goes, so an idle connection holds none; its
 * size is remembered (in cap) for the next burst. */
static void release_if_empty(struct obuf *b)
{
    if (b->p && b->start == b->end) {
        free(b->p);
        b->p = NULL;
        b->cap = b->cap < OBUF_HINT_MAX ? b->cap : OBUF_HINT_MAX;
        b->start = b->end = 0;
        obuf_marks_free(b);
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
    if (!b->marks) return;
    b->end = b->start + stream_keep(b->marks, b->end - b->start);
    release_if_empty(b);
}

void obuf_free(struct obuf *b)
{
    free(b->p);
    b->p = NULL;
    b->cap = b->start = b->end = 0;
    obuf_marks_free(b);
}

/* ---- a connection's input through one scratch buffer ------------------ */

#define KEEP_COPY_MAX 4096u  /* a leftover up to this goes back through the scratch */
#define KEEP_MIN 256u        /* the smallest buffer a leftover is kept in */

static char g_scratch[IBUF_READ];
static bool g_scratch_busy;  /* routing from it (a read from inside routing uses its own buffer) */

/* The size of the frame b starts with, or 0 while its header is not in. */
static uint64_t front_frame(const struct ibuf *b)
{
    if (b->len < LB_FRAME_HEADER) return 0;
    uint32_t n;
    memcpy(&n, b->p, sizeof n);
    return LB_FRAME_HEADER + (uint64_t)ntohl(n);
}

static int ibuf_resize(struct ibuf *b, uint64_t cap)
{
    if (cap > UINT32_MAX) cap = UINT32_MAX;
    char *p = realloc(b->p, (size_t)cap);
    if (!p) return -1;
    b->p = p;
    b->cap = (uint32_t)cap;
    return 0;
}

/* Room to read into b itself.  b grows only when less than a read is
 * left and the front frame needs more than is left: towards the whole
 * front frame, but never past twice what is there (a length prefix that
 * lies buys no more than that), and by a read at least.  So a big frame
 * doubles its buffer a few times instead of growing it at every read. */
static int ibuf_grow(struct ibuf *b)
{
    uint64_t len = b->len, room = b->cap - len, frame = front_frame(b);
    uint64_t need = frame > len ? frame - len : 0;
    if (room >= IBUF_READ || (room > 0 && room >= need)) return 0;
    uint64_t want = frame < 2 * len ? frame : 2 * len;
    if (want < len + IBUF_READ) want = len + IBUF_READ;
    return ibuf_resize(b, want);
}

/* `used` bytes of b were routed: the rest moves to the front. */
static void ibuf_consume(struct ibuf *b, size_t used)
{
    size_t rem = b->len - used;
    if (rem == 0) {
        ibuf_free(b);
        return;
    }
    memmove(b->p, b->p + used, rem);
    b->len = (uint32_t)rem;
    /* A big frame's buffer need not outlive it. */
    if (b->cap > 4 * IBUF_READ && rem <= IBUF_READ) ibuf_resize(b, IBUF_READ);
}

/* What routing left of the scratch's n bytes (p + used) goes to b. */
static int ibuf_keep_copy(struct ibuf *b, const char *p, size_t n, size_t used)
{
    size_t rem = n - used;
    if (rem == 0) {
        ibuf_free(b);
        return 0;
    }
    if (rem > b->cap) {
        uint64_t cap = KEEP_MIN;
        while (cap < rem) cap *= 2;
        ibuf_free(b);
        if (ibuf_resize(b, cap)) return -1;
    }
    memcpy(b->p, p + used, rem);
    b->len = (uint32_t)rem;
    return 0;
}

int ibuf_route(struct ibuf *b, struct lb_conn *c)
{
    if (!b->len) return 0;
    ssize_t used = lb_conn_feed(c, b->p, b->len);
    if (used < 0) return -1;
    ibuf_consume(b, (size_t)used);
    return 0;
}

ssize_t ibuf_read(struct ibuf *b, struct lb_conn *c, int fd)
{
    /* Usually nothing or a few bytes are kept: they go in front of the
     * read, in the scratch.  Otherwise b itself is read into. */
    bool scratch = !g_scratch_busy && b->len <= KEEP_COPY_MAX && front_frame(b) <= IBUF_READ;
    char *base;
    size_t room;
    if (scratch) {
        if (b->len) memcpy(g_scratch, b->p, b->len);
        base = g_scratch;
        room = IBUF_READ - b->len;
    } else {
        if (ibuf_grow(b)) { errno = ENOMEM; return -1; }
        base = b->p;
        room = b->cap - b->len;
    }
    ssize_t r = read(fd, base + b->len, room);
    if (r < 0) return (errno == EAGAIN || errno == EINTR) ? -2 : -1;
    if (r == 0) return 0;
    size_t n = b->len + (size_t)r;
    if (!scratch) b->len = (uint32_t)n;
    g_scratch_busy |= scratch;
    ssize_t used = lb_conn_feed(c, base, n);
    if (scratch) g_scratch_busy = false;
    if (used < 0) return -3;
    if (!scratch) ibuf_consume(b, (size_t)used);
    else if (ibuf_keep_copy(b, base, n, (size_t)used)) { errno = ENOMEM; return -1; }
    return r;
}

void ibuf_free(struct ibuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
