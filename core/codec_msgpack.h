/*
 * MessagePack <-> JSON text, for connections that speak MessagePack (Bro
 * IPC's default serializer).  The bus routes JSON; frames are converted at
 * the edge, once per frame, and only for such connections.
 *
 * Both directions stream: no tree of values is built and nothing is
 * allocated but the output buffer, so a length or count in the input that
 * lies (a str32 claiming 4 GiB in a 20-byte frame) costs nothing.
 *
 *   mp_to_json:   decodes with msgpack-c's own unpacker state machine
 *                 (msgpack/unpack_template.h) driving callbacks that write
 *                 JSON text.  Refuses what JSON cannot say: bin, ext
 *                 (timestamps included), non-string map keys, NaN and
 *                 infinities, invalid UTF-8 in str; and truncated input,
 *                 trailing bytes, nesting deeper than ENV_MAX_DEPTH.
 *   mp_from_json: walks JSON text (valid JSON is expected: the bus has
 *                 validated it) and writes it with msgpack-c's packer.
 *                 Total on valid JSON: integers in [-2^63, 2^64-1] become
 *                 MessagePack integers; every other number becomes the
 *                 nearest float64 (what JSON.parse gives; beyond the double
 *                 range, +-Infinity); a lone \uD8xx escape becomes U+FFFD.
 *
 * Output goes to a `struct jw` (core/jsonw.h), appended at out->len; the
 * buffer is grown with realloc (never sized from the input's own claims)
 * and may be one the caller reuses.  Error messages go to `err` (errlen
 * bytes, always NUL-terminated) and name the problem for the sender.
 * Re-entrant; no global state.
 */
#ifndef LB_CODEC_MSGPACK_H
#define LB_CODEC_MSGPACK_H
#include <stdbool.h>
#include <stddef.h>
#include "jsonw.h"
#include "envelope.h"

enum mp_status {
    MP_OK = 0,
    MP_MALFORMED,   /* not one well-formed value: truncated, trailing bytes, too deep, ... */
    MP_NO_JSON,     /* well formed, but holds values JSON has no form for (bin, ext, NaN, ...):
                       out holds the message with null in their place (up to the end, but
                       for a container used as a map key), so a caller can still read its
                       type and id to answer it */
    MP_TOO_LARGE,   /* the output would pass `limit` bytes */
    MP_NOMEM
};

/* One MessagePack value (in, len) -> JSON text appended to out, at most
 * `limit` bytes of it.  On failure out keeps what was written so far. */
enum mp_status mp_to_json(const char *in, size_t len, struct jw *out, size_t limit,
                          char *err, size_t errlen);

/* The same, and the envelope of the JSON written, built while writing it:
 * on MP_OK, *e, *est and *ewhy are exactly what
 * envelope_parse(e, JSON written, &ewhy) would give (members, kinds,
 * escapes, the first of two known members, the missing or unknown type,
 * escaped member names, a root that is not a map), without scanning it
 * again.  Otherwise *e is not to be used.  e->frame points into
 * out->buf: valid until out is next written. */
enum mp_status mp_to_json_indexed(const char *in, size_t len, struct jw *out, size_t limit,
                                  char *err, size_t errlen, struct envelope *e,
                                  enum env_status *est, const char **ewhy);

/* One JSON value (in, len) -> MessagePack appended to out, at most `limit`
 * bytes (MessagePack is at most 2.25x the JSON text plus 5 bytes).
 * MP_MALFORMED only for text that is not valid JSON.  On failure out->len
 * is restored. */
enum mp_status mp_from_json(const char *in, size_t len, struct jw *out, size_t limit,
                            char *err, size_t errlen);

/* First byte of a MessagePack map (fixmap, map16, map32): how a frame is
 * recognised as MessagePack.  A JSON object starts with '{' instead. */
static inline bool mp_is_map_byte(unsigned char b)
{
    return (b & 0xf0) == 0x80 || b == 0xde || b == 0xdf;
}
#endif
