/*
 * The wire encoding of each connection, at the edge of the daemon: frames
 * of a connection that speaks MessagePack are converted to JSON before
 * routing and back to MessagePack on the way out, so the router, the
 * policy plugins and every JSON connection see JSON only (codec_msgpack.h).
 *
 * Per connection the encoding is AUTO until the first frame that shows one
 * (lb_conn_set_encoding pins it instead), then fixed: a frame in the other
 * encoding is refused (ERROR INVALID_MESSAGE in the connection's encoding;
 * the connection stays open, the framing is intact).  doc/protocol.md has
 * the rules.  Loop thread only.
 */
#ifndef LB_ENCODING_H
#define LB_ENCODING_H
#include "bus.h"
#include "router.h"
#include "codec_msgpack.h"

void encoding_input_slow(struct lb_conn *c, const char *frame, size_t len);

/* One received frame (len >= 1), in place of router_input: JSON frames of
 * a JSON connection go straight to the router. */
static inline void encoding_input(struct lb_conn *c, const char *frame, size_t len)
{
    if (c->encoding == LB_ENCODING_JSON && !mp_is_map_byte((unsigned char)frame[0])) router_input(c, frame, len);
    else encoding_input_slow(c, frame, len);
}

/* For conn_send to a connection whose encoding is LB_ENCODING_MSGPACK:
 * replaces (*p, *n), a JSON frame, by its MessagePack form, valid until
 * the next call.  A frame the router forwards unchanged goes out as the
 * MessagePack sender wrote it; the same frame sent to many (an EVENT's
 * fan-out) is converted once.  Returns 0, or -1 (logged) if it could not
 * be converted (out of memory: the JSON the bus sends is always valid). */
int encoding_output(struct lb_conn *c, const char **p, size_t *n);

/* Frees the conversion buffers (optional at exit: they stay reachable). */
void encoding_free(void);
#endif
