/* Stream framing: a 4-byte big-endian length, then that many bytes. */
#ifndef LB_FRAME_H
#define LB_FRAME_H
#include <stdint.h>
#include <event2/buffer.h>

enum frame_status { FRAME_NEED_MORE, FRAME_READY, FRAME_ZERO, FRAME_TOO_LARGE };

/* Looks at the head of `in` without consuming: FRAME_READY when a whole
 * frame of *len body bytes is there.  *len is set for TOO_LARGE too. */
enum frame_status frame_peek(struct evbuffer *in, uint64_t max_frame, uint32_t *len);
#endif
