/*
 * A message as plugins see it (struct lb_msg of plugin.h): the envelope
 * scan of one frame, the verified claims, attributes plugins attach, and
 * the changes rewrite hooks ask for.  Also the one function that writes a
 * frame member by member with changes applied (msg_write), used for every
 * frame the bus forwards with members of its own.
 */
#ifndef LB_MSG_H
#define LB_MSG_H
#include <stdbool.h>
#include <stdint.h>
#include <lexbus/plugin.h>
#include "envelope.h"
#include "jsonw.h"

#define MSG_MAX_OVERRIDES 16
#define MSG_MAX_RECIPIENTS 16
#define MSG_ATTR_BYTES 512

/* A member replaced or removed; names and values are kept in the
 * message's scratch buffer (offsets: it may grow).  The value is stored
 * without the white space around it, with what the envelope scanner
 * found of it (kind, escapes), so a frame written with it can be indexed
 * without being scanned again. */
struct msg_override {
    uint32_t name_off, name_len;
    int field;                   /* enum env_field, or -1 */
    int64_t json_off;            /* -1: remove the member */
    uint32_t len;
    uint8_t kind, escaped;       /* enum env_kind, as envelope_parse would record it */
};

struct lb_msg {
    struct envelope env;
    const char *claims;          /* verified token claims (JSON), or NULL */
    size_t claims_len;
    /* The call a RESPONSE answers (NUL-terminated, borrowed from its
     * pending call), read as the attributes "call.to" and "call.method"
     * only when a hook asks for them: NULL otherwise. */
    const char *call_to, *call_method;
    /* Attributes: "name\0value\0" pairs. */
    uint16_t attr_len;
    uint8_t n_attrs;
    bool rewritable;             /* inside a rewrite or response hook */
    uint8_t n_over, n_recips;
    struct msg_override over[MSG_MAX_OVERRIDES];
    uint32_t recip_off[MSG_MAX_RECIPIENTS], recip_len[MSG_MAX_RECIPIENTS];
    struct jw *scratch;          /* owns the bytes of overrides and recipients */
    char attrs[MSG_ATTR_BYTES];
};

/* Starts a message for a frame (no attributes, claims or changes). */
static inline void msg_init(struct lb_msg *m, struct jw *scratch)
{
    m->claims = NULL;
    m->claims_len = 0;
    m->call_to = m->call_method = NULL;
    m->attr_len = 0;
    m->n_attrs = 0;
    m->rewritable = false;
    m->n_over = m->n_recips = 0;
    m->scratch = scratch;
}
/* Copies claims and attributes from `from` (a rewritten frame keeps them). */
void msg_carry(struct lb_msg *to, const struct lb_msg *from);

/* Writes m's frame into w: `prefix` (members of the bus's own, no
 * trailing comma, may be empty) first, then every member of the frame in
 * the order written except those whose field bit is in `drop` and those a
 * rewrite hook changed (written with their new value in place, or left
 * out), then changed members the frame lacked.  The runs of members
 * nothing changes are copied as they are, not member by member.
 *
 * idx (only with an empty prefix), when not NULL: filled as
 * envelope_parse would fill it for the frame written (frame, len, type,
 * every known member), without scanning it.  That is exact, not a guess:
 * every byte written is either the frame's own (scanned when it came in)
 * or a value lb_msg_set validated as a member, under a name it checked,
 * once (see lb_msg_set for what is checked there and why that suffices).
 * idx->frame points into w->buf: valid until w is next written. */
void msg_write(struct jw *w, const struct lb_msg *m, const char *prefix, size_t plen, uint64_t drop,
               struct envelope *idx);
/* Extra recipient i of an EMIT (lb_msg_add_recipient). */
struct lb_str msg_recipient(const struct lb_msg *m, size_t i);
#define FBIT(f) (1ull << (f))
#endif
