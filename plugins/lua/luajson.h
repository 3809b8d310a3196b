/*
 * JSON <-> Lua values, without loss:
 *
 *   JSON null        bus.null (a light userdata, the same value everywhere)
 *   true / false     booleans
 *   1, -7            integers (math.type "integer"), within 64 bits
 *   1.0, 2.5, 1e3    floats (math.type "float"); 1.0 goes back out as 1.0
 *   123456789012345678901234567890, 1e400
 *                    a bus.bignum: the number's text, kept exactly (tostring
 *                    gives it; arithmetic on it gives floats)
 *   "text"           strings (UTF-8; a lone surrogate escape such as \ud800
 *                    is kept as its WTF-8 bytes and written back as \ud800)
 *   [ ... ]          a table with the array metatable (bus.isarray), 1-based
 *   { ... }          a table with the object metatable (bus.isobject); member
 *                    order is remembered and written back in that order
 *
 * Tables built by scripts: the array/object metatable decides when set
 * (bus.array(t), bus.object(t)); otherwise keys 1..n make an array and
 * string keys an object; an empty plain table is an object ({}).  Keys of
 * an object not in a remembered order are written sorted (byte order).
 * Not representable (an error naming where): functions, coroutines, other
 * userdata, NaN and infinities, invalid UTF-8, mixed or non-string keys,
 * nesting deeper than the limit (which also catches cycles).
 *
 * Every function here that pushes or allocates Lua values may raise a Lua
 * error (out of memory under the state's cap): call them inside a
 * protected call.  C heap memory they hold (struct sbuf) is the caller's.
 */
#ifndef LBL_LUAJSON_H
#define LBL_LUAJSON_H
#include <stddef.h>
#include <jansson.h>
#include <lua.h>
#include "sbuf.h"

/* Registers the metatables and the null value in the state (once). */
void lj_init(lua_State *L);
/* Pushes bus.null, the array / object metatables. */
void lj_push_null(lua_State *L);
int lj_is_null(lua_State *L, int idx);
void lj_set_array(lua_State *L, int idx);
void lj_set_object(lua_State *L, int idx);
int lj_is_array(lua_State *L, int idx);
int lj_is_object(lua_State *L, int idx);

/* Parses JSON text (strict RFC 8259, UTF-8 checked, at most max_depth
 * levels) and pushes its value.  Returns 0, or -1 with nothing pushed and
 * a message in err. */
int lj_decode(lua_State *L, const char *p, size_t n, int max_depth, char *err, size_t errlen);

/* Parses JSON text into a jansson value with the same parser (faster
 * than jansson's own for frame-sized texts).  Numbers beyond 64 bits
 * become reals; duplicated member names and lone surrogate escapes (which
 * jansson cannot hold) are refused.  NULL with a message in err. */
json_t *lj_parse(const char *p, size_t n, int max_depth, char *err, size_t errlen);

/* A piece of text. */
struct lj_span { const char *p; size_t n; };

/* The members of the JSON object text p[0..n), in order: each one's name
 * (the characters between its quotes) in keys[i] and its value's text in
 * vals[i], found by skipping over the values (for taking a few parts of a
 * payload without converting all of it).  The text must be valid JSON
 * (every frame the bus hands a plugin is, and so is what lj_encode
 * writes): for other text the answer is unspecified, though nothing
 * outside p[0..n) is read, and the values found are still to be parsed.
 * Returns how many (a name may come twice: the caller decides), or -1
 * when the text is not an object, has more than max members, or a member
 * name with an escape (parse the whole object then). */
int lj_object_scan(const char *p, size_t n, struct lj_span *keys, struct lj_span *vals, size_t max);

/* Appends the JSON text of the value at idx to b.  Returns 0, or -1 with
 * a message in err naming the place (`payload.items[2]: a function is
 * not JSON`); `what` names the root in messages.  b may hold partial
 * output after a failure. */
int lj_encode(lua_State *L, int idx, struct sbuf *b, int max_depth, const char *what, char *err, size_t errlen);

/* jansson values, for the JSONLex evaluator.  lj_push_json pushes v;
 * lj_to_json returns a new reference, or NULL with err (same rules as
 * lj_encode; a bignum becomes a real). */
void lj_push_json(lua_State *L, const json_t *v);
json_t *lj_to_json(lua_State *L, int idx, int max_depth, const char *what, char *err, size_t errlen);

/* Writes a jansson value as JSON text, numbers in their shortest form
 * (0.1, where jansson writes 0.10000000000000001). */
void lj_json_text(struct sbuf *b, const json_t *v);

/* A 64-bit integer's decimal text (without printf); returns its length. */
size_t lj_int_text(long long v, char buf[static 24]);

/* The shortest text that reads back as d, always with a '.' or an
 * exponent ("1.0", "0.1", "1e+300"): floats stay floats on the wire.
 * Returns the length written to buf (at most 32 bytes plus a NUL). */
size_t lj_float_text(double d, char buf[static 40]);
#endif
