/*
 * The envelope scanner: validates one JSON frame completely (strict RFC 8259,
 * UTF-8 checked, nesting bounded) without allocating, and records where each
 * known top-level member's value lies in the frame.  Values are never copied
 * or decoded: the router forwards payloads as the sender wrote them.
 *
 * Why not jansson here: it builds a tree of heap nodes per message, which is
 * the dominant cost on the hot path and useless when the payload is only
 * passed through.  jansson is used everywhere else (REGISTER, system calls).
 */
#ifndef LB_ENVELOPE_H
#define LB_ENVELOPE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <lexbus/plugin.h>

enum env_kind { J_NONE = 0, J_STRING, J_NUMBER, J_OBJECT, J_ARRAY, J_TRUE, J_FALSE, J_NULL };

enum env_field {
    F_TYPE, F_ID, F_FROM, F_TO, F_METHOD, F_EVENT, F_SERVICE_NAME, F_METHODS,
    F_PARAMS, F_PAYLOAD, F_DATA, F_ERROR, F_STATUS, F_CONTEXT, F_TOKEN, F_ACK,
    F_EVENTS, F_SUBSCRIBE, F_VERSION, F_METADATA, F_OP, F_RESOURCE, F_KEY,
    F_QUERY, F_TIMESTAMP, F_IPC_REQUEST, F_AUTH, F_NODE, F_RESOURCES,
    F__COUNT
};

/* A value inside the frame.  Strings: p/n are the characters between the
 * quotes (still escaped if `escaped`); other kinds: the raw text. */
struct env_val {
    const char *p;
    uint32_t n;
    uint8_t kind;       /* enum env_kind; J_NONE = member absent */
    uint8_t escaped;    /* string contains backslash escapes */
};

/* One top-level member: its name (the characters between the quotes) and
 * its value. */
struct env_member {
    const char *key;
    uint32_t key_len;
    int field;          /* enum env_field, or -1 for a member the bus does not know */
    struct env_val v;
};

struct envelope {
    const char *frame;
    size_t len;
    enum lb_msg_type type;
    uint32_t present;   /* bit f: f[f] is there (kind != J_NONE) */
    struct env_val f[F__COUNT];
};

#define ENV_MAX_DEPTH 64

/* ENV_DUPLICATE and ENV_ESCAPED_NAME are valid JSON refused because members
 * could be read differently by the bus and by a recipient: a member given
 * twice, or a top-level member name written with escapes ("fr\u006fm"),
 * which the bus would not see as `from` but a recipient's parser would. */
enum env_status { ENV_OK = 0, ENV_BAD_JSON, ENV_NOT_OBJECT, ENV_DUPLICATE, ENV_ESCAPED_NAME, ENV_BAD_TYPE };

/* Parses `len` bytes.  On failure *err points at a static description and
 * whatever members were seen before the error stay recorded (so an `id`
 * can still be echoed in the error). */
enum env_status envelope_parse(struct envelope *e, const char *buf, size_t len, const char **err);

/* For writers that index the frame they write as envelope_parse would
 * (mp_to_json): its verdicts, with its messages, on e's members so far.
 * env_duplicate: a known member met a second time (e->type from the
 * `type` seen before it, if any).  env_complete: the whole object was
 * read (sets e->type; `escaped_name`: some member name had escapes).
 * env_not_object: valid JSON, but not an object. */
enum env_status env_duplicate(struct envelope *e, const char **err);
enum env_status env_complete(struct envelope *e, bool escaped_name, const char **err);
enum env_status env_not_object(const char **err);

/* Validates one complete JSON value (any kind; white space around it is
 * allowed) with the same rules.  Returns 0, or -1 with *err set. */
int env_validate_value(const char *buf, size_t len, const char **err);

/* The same for a value that is to be a top-level member of a frame (what
 * lb_msg_set is given): nesting is counted from the frame's object, as
 * envelope_parse counts it, so a value accepted here never makes a frame
 * the scanner would refuse.  On success *out describes the value as
 * envelope_parse would (p into buf, white space around it excluded). */
int env_validate_member(const char *buf, size_t len, struct env_val *out, const char **err);

/* The message type a `type` value names (LB_MSG_UNKNOWN: none). */
enum lb_msg_type env_type_of(const struct env_val *v);

/* Where known member f of a frame envelope_parse accepted lies: from the
 * opening quote of its name to the end of its value.  Returns 0, or -1
 * when f is absent. */
int env_member_span(const struct envelope *e, int f, const char **start, const char **end);

/* Iterates the top-level members of a frame envelope_parse accepted, in
 * the order written: *cursor starts NULL.  Returns 1 with *out set, 0 at
 * the end.  For rebuilding a frame member by member. */
int env_members_next(const struct envelope *e, const char **cursor, struct env_member *out);

/* Looks up `key` among the members of an object value (one level).  */
int env_object_get(const struct env_val *obj, const char *key, struct env_val *out);

/* 0 when no member name of the object is written with escapes and none of
 * `keys` (at most 32) appears twice; -1 otherwise.  For objects whose
 * members the bus acts on (context), which a recipient must read the same
 * way: its parser would take the last of two duplicates, the bus the first. */
int env_object_unambiguous(const struct env_val *obj, const char *const *keys, size_t nkeys);

/* Iterates the elements of an array value: *cursor starts NULL. Returns 1
 * with *out set, 0 at the end. */
int env_array_next(const struct env_val *arr, const char **cursor, struct env_val *out);

/* Field name <-> enum (for lb_msg_field). */
int env_field_by_name(const char *name);
int env_field_of(const char *name, size_t n);   /* the same, for n bytes (no NUL) */
const char *env_field_name(enum env_field f);

/* Numbers: parses an integer-valued J_NUMBER (fractions truncated).
 * Returns 0, or -1 when not a number or out of range. */
int env_number_i64(const struct env_val *v, int64_t *out);
/* Strict: an integer written without fraction or exponent, within
 * [min, max].  Returns 0, or -1. */
int env_integer(const struct env_val *v, int64_t min, int64_t max, int64_t *out);

/* Equality of a string value with plain bytes (escapes compare unequal,
 * since validated names never contain them). */
static inline int env_str_eq(const struct env_val *v, const char *s, size_t n)
{
    return v->kind == J_STRING && !v->escaped && v->n == n && (n == 0 || __builtin_memcmp(v->p, s, n) == 0);
}
#endif
