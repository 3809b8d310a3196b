/* libFuzzer target: the stream transports' input buffer
 * (plugins/common/stream.c, struct ibuf), through a real socket pair.
 * The input is a byte stream of length-prefixed frames (0xFF n1 n2 in it
 * stands for n*16 filler bytes, so frames far larger than one read
 * occur), written in pieces of PRNG-chosen sizes and read back with
 * ibuf_read; lb_conn_feed is a stand-in that walks frames as the core
 * does (bad lengths refused), and pauses now and then (the harness
 * resumes with ibuf_route, and never reads while paused).
 * Checked: exactly the frames of the stream, whole and in order, up to
 * the first bad length (refused there) or a frame cut off at the end
 * (kept, to the byte); what the buffer allocates stays within twice what
 * was received plus a read, whatever the lengths claim. */
#include "config.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <lexbus/plugin.h>
#include "stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* stream.c's other half needs it; never called here. */
int lb_frame_write(struct evbuffer *out, const struct iovec *iov, int iovcnt)
{
    (void)out; (void)iov; (void)iovcnt;
    abort();
}

static struct {
    uint64_t max_frame;
    uint32_t rng;
    bool paused, refused;
    size_t frames;               /* routed */
    const uint8_t *want;         /* the stream, to compare against */
    size_t want_off;             /* where the next routed frame must start */
} g;

static uint32_t rnd(void)
{
    g.rng = g.rng * 1103515245u + 12345u;
    return g.rng >> 8;
}

/* The core's feed_frames, reduced: route (check) whole frames, stop at a
 * cut one, a pause, or a bad length (refused: the connection closes). */
ssize_t lb_conn_feed(struct lb_conn *conn, const char *p, size_t n)
{
    (void)conn;
    if (g.refused || g.paused) abort();   /* the transport must have stopped */
    size_t off = 0;
    while (n - off >= 4) {
        uint32_t len;
        memcpy(&len, p + off, 4);
        len = ntohl(len);
        if (len == 0 || len > g.max_frame) { g.refused = true; return -1; }
        if (n - off - 4 < len) break;
        if (memcmp(p + off, g.want + g.want_off, 4 + (size_t)len) != 0) abort();   /* not the stream's next frame */
        g.want_off += 4 + (size_t)len;
        g.frames++;
        off += 4 + (size_t)len;
        if (rnd() % 8 == 0) { g.paused = true; break; }
    }
    return (ssize_t)off;
}

static struct lb_conn *const CONN = (struct lb_conn *)&g;

/* Resumes and routes what is kept, as the transport's kick does. */
static void resume(struct ibuf *b)
{
    while (g.paused && !g.refused) {
        g.paused = false;
        if (ibuf_route(b, CONN) < 0) return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const uint64_t maxes[] = { 64, 1000, 16 << 10, 1 << 20, 256 << 20 };
    memset(&g, 0, sizeof g);
    g.max_frame = maxes[data[0] % 5];
    g.rng = data[0];
    /* The stream, filler expanded. */
    size_t cap = size + 1, len = 0;
    uint8_t *s = malloc(cap);
    for (size_t i = 1; i < size; i++) {
        size_t add = data[i] == 0xFF && i + 2 < size ? (size_t)(data[i + 1] << 8 | data[i + 2]) * 16 : 1;
        if (len + add > cap) s = realloc(s, cap = (len + add) * 2);
        if (add == 1) s[len++] = data[i];
        else { memset(s + len, 'x', add); len += add; i += 2; }
    }
    g.want = s;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) abort();
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    struct ibuf b = { 0 };
    static const size_t pieces[] = { 1, 2, 3, 5, 7, 100, 4095, 16384, 20000, 70000 };
    size_t sent = 0, got = 0, peak = 0;
    while (!g.refused && (sent < len || got < sent)) {
        if (sent < len) {
            size_t k = pieces[rnd() % 10];
            if (k > len - sent) k = len - sent;
            ssize_t w = write(sv[0], s + sent, k);
            if (w > 0) sent += (size_t)w;
        }
        for (;;) {
            resume(&b);
            if (g.refused) break;
            ssize_t r = ibuf_read(&b, CONN, sv[1]);
            if (r == -3) break;          /* refused */
            if (r == -2) break;          /* drained: write more */
            if (r <= 0) abort();         /* no EOF, no error on a live pair */
            got += (size_t)r;
            if (got - g.want_off > peak) peak = got - g.want_off;
            /* A length prefix never buys more than twice what came in. */
            if (b.cap > 2 * peak + 2 * IBUF_READ + 256) abort();
        }
    }
    resume(&b);
    if (!g.refused) {
        /* Everything whole was routed; what is left is one cut frame, kept to the byte. */
        if (b.len != len - g.want_off || (b.len && memcmp(b.p, s + g.want_off, b.len))) abort();
        size_t rest = len - g.want_off;
        if (rest >= 4) {
            uint32_t n;
            memcpy(&n, s + g.want_off, 4);
            n = ntohl(n);
            if (n == 0 || n > g.max_frame || rest >= 4 + (size_t)n) abort();   /* should have been refused/routed */
        }
    } else {
        /* Refused at the first bad length after the frames routed. */
        uint32_t n;
        if (len - g.want_off < 4) abort();
        memcpy(&n, s + g.want_off, 4);
        n = ntohl(n);
        if (n != 0 && n <= g.max_frame) abort();
    }
    ibuf_free(&b);
    close(sv[0]);
    close(sv[1]);
    free(s);
    return 0;
}
