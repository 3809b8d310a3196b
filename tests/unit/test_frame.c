/* The length-prefix frame codec over libevent buffers. */
#include "config.h"
#include <arpa/inet.h>
#include <string.h>
#include <event2/buffer.h>
#include "tap.h"
#include "frame.h"
#include <lexbus/plugin.h>

static void put_len(struct evbuffer *b, uint32_t n) { n = htonl(n); evbuffer_add(b, &n, 4); }

int main(void)
{
    struct evbuffer *b = evbuffer_new();
    uint32_t len = 0;
    CHECK(frame_peek(b, 1024, &len) == FRAME_NEED_MORE, "empty buffer needs more");
    evbuffer_add(b, "\0\0", 2);
    CHECK(frame_peek(b, 1024, &len) == FRAME_NEED_MORE, "half a header needs more");
    evbuffer_drain(b, 2);
    put_len(b, 5);
    evbuffer_add(b, "{\"a\"", 4);
    CHECK(frame_peek(b, 1024, &len) == FRAME_NEED_MORE && len == 5, "partial body needs more");
    evbuffer_add(b, "}", 1);
    CHECK(frame_peek(b, 1024, &len) == FRAME_READY && len == 5, "whole frame ready");
    evbuffer_drain(b, 9);
    put_len(b, 0);
    CHECK(frame_peek(b, 1024, &len) == FRAME_ZERO, "zero length");
    evbuffer_drain(b, 4);
    put_len(b, 1025);
    CHECK(frame_peek(b, 1024, &len) == FRAME_TOO_LARGE && len == 1025, "over max_frame, before the body arrives");
    evbuffer_drain(b, 4);
    put_len(b, 1024);
    CHECK(frame_peek(b, 1024, &len) == FRAME_NEED_MORE, "exactly max_frame is allowed");
    evbuffer_drain(b, 4);
    put_len(b, 0xFFFFFFFFu);
    CHECK(frame_peek(b, 1024, &len) == FRAME_TOO_LARGE, "4 GiB length");
    evbuffer_drain(b, 4);

    struct iovec iov[2] = { { (void *)"{\"x\":", 5 }, { (void *)"1}", 2 } };
    CHECK(lb_frame_write(b, iov, 2) == 0, "write two pieces");
    unsigned char out[16];
    CHECK(evbuffer_get_length(b) == 11, "header + 7 bytes");
    evbuffer_copyout(b, out, 11);
    CHECK(out[0] == 0 && out[1] == 0 && out[2] == 0 && out[3] == 7 && memcmp(out + 4, "{\"x\":1}", 7) == 0,
          "big-endian length then body");
    CHECK(frame_peek(b, 1024, &len) == FRAME_READY && len == 7, "written frame reads back");
    struct iovec empty = { (void *)"", 0 };
    CHECK(lb_frame_write(b, &empty, 1) == -1, "an empty frame is never written");
    evbuffer_free(b);
    return tap_done();
}
