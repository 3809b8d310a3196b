/*
 * The wire encoding of each connection, at the edge of the daemon: frames
 * of a connection that speaks MessagePack are converted to JSON before
 * routing (router.c calls encoding_input) and back to MessagePack on the
 * way out (conn_send calls encoding_output), so the router, the policy
 * plugins and every JSON connection see JSON only (codec_msgpack.h).
 *
 * Per connection the encoding is AUTO until the first frame that shows one
 * (lb_conn_set_encoding pins it instead), then fixed: a frame in the other
 * encoding is refused (ERROR INVALID_MESSAGE in the connection's encoding;
 * the connection stays open, the framing is intact).  doc/protocol.md has
 * the rules.  Pure conversion: this file sends nothing.  Loop thread only.
 */
#ifndef LB_ENCODING_H
#define LB_ENCODING_H
#include "conn.h"
#include "codec_msgpack.h"

/* What to do with one received frame (len >= 1). */
struct enc_in {
    const char *json;            /* ENC_ROUTE: the JSON to route (the frame itself, or its conversion) */
    size_t len;
    /* Set by the caller: where a conversion puts the JSON's envelope.
     * ENC_ROUTE with `indexed`: *env, env_status and env_err are what
     * envelope_parse would give on (json, len), built while converting
     * (mp_to_json_indexed); without: the router scans the JSON itself. */
    struct envelope *env;
    bool indexed;
    enum env_status env_status;
    const char *env_err;
    const char *code;            /* ENC_REFUSE: the error code and why */
    char why[256];
    bool call;                   /* ENC_REFUSE: a CALL whose id could be read (answer with a RESPONSE) */
    char id[LB_MAX_ID];
    size_t id_len;               /* 0: no usable id */
};
enum enc_verdict { ENC_ROUTE, ENC_REFUSE };

enum enc_verdict encoding_input_slow(struct lb_conn *c, const char *frame, size_t len, struct enc_in *in);

/* JSON frames of a JSON connection go straight to the router. */
static inline enum enc_verdict encoding_input(struct lb_conn *c, const char *frame, size_t len, struct enc_in *in)
{
    if (c->encoding == LB_ENCODING_JSON && !mp_is_map_byte((unsigned char)frame[0])) {
        in->json = frame;
        in->len = len;
        in->indexed = false;
        return ENC_ROUTE;
    }
    return encoding_input_slow(c, frame, len, in);
}

/* Routing of a converted frame is over (its MessagePack bytes may no
 * longer be forwarded as they are). */
void encoding_routed(void);

/* For conn_send to a connection whose encoding is LB_ENCODING_MSGPACK:
 * replaces (*p, *n), a JSON frame, by its MessagePack form, valid until
 * the next call.  A frame the router forwards unchanged goes out as the
 * MessagePack sender wrote it; the same frame sent to many (an EVENT's
 * fan-out) is converted once.  Returns 0, or -1 (logged) if it could not
 * be converted (out of memory: the JSON the bus sends is always valid). */
int encoding_output(struct lb_conn *c, const char **p, size_t *n);

/* Frees the conversion buffers (at exit). */
void encoding_free(void);
#endif
