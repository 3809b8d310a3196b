/*
 * JSONLex: the expression language of ../shared/jsonlex/SPEC.md, in C over
 * jansson values.
 *
 * An expression is compiled once into an immutable tree (operators resolved,
 * `$var` paths split, literal sub-trees folded into constants) and can then
 * be evaluated any number of times against different contexts.  Errors the
 * SPEC raises only when a part is evaluated (a `$var` of a number, an
 * unknown `$op`, ...) compile into nodes that fail when reached, so laziness
 * is kept; only nesting deeper than JL_MAX_DEPTH fails at compile time.
 *
 * Ownership: jl_compile copies what it needs from `expr` (the caller keeps
 * it).  jl_eval returns a new reference; it may share structure with the
 * context and with the compiled expression's constants, so callers must
 * treat results as read-only (dump them, convert them, drop them).
 * Everything here is for one thread (the event loop).
 */
#ifndef LBL_JSONLEX_H
#define LBL_JSONLEX_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* SPEC §8: at least 32 levels, more than 128 refused. */
#define JL_MAX_DEPTH 128

struct jl_limits {
    uint64_t max_steps;   /* node evaluations + loop iterations per jl_eval (0: no limit) */
    size_t max_text;      /* longest text $concat / $substring may build (0: no limit) */
};

struct jl_expr;

/* Compiles an envelope ({"__jsonlex": ..., "expr": ...}) or a bare
 * expression.  `extensions`: the operators of SPEC §12 ($gte, $lte,
 * $length, $substring, $reduce, $get, $has); off, they are unknown
 * operators (an error, H4).  Returns NULL with a message in err when the
 * expression nests deeper than JL_MAX_DEPTH. */
struct jl_expr *jl_compile(json_t *expr, bool extensions, char *err, size_t errlen);
void jl_free(struct jl_expr *e);

/* A segment of a $var path as compiled (the path split at '.'). */
struct jl_seg { char *p; size_t n; };

/* Evaluates against `ctx` (NULL or JSON null: {}).  Returns 0 with *out
 * set (a missing result is JSON null), or -1 with a message in err (the
 * SPEC's evaluation errors, the step budget, the text cap).  *steps, if
 * given, receives the work done. */
int jl_eval(const struct jl_expr *e, json_t *ctx, const struct jl_limits *lim, json_t **out,
            uint64_t *steps, char *err, size_t errlen);

/* The same where the context is not one JSON value: fn(ud, segs, n) is
 * asked for each $var path whose first segment is not a loop variable
 * (segments as compiled), and returns what the path reaches in the
 * context (a new reference; NULL: missing), as jl_walk would find it.
 * For taking just the parts an expression reads out of a frame's text. */
typedef json_t *(*jl_resolve_fn)(void *ud, const struct jl_seg *segs, size_t n);
int jl_eval_resolved(const struct jl_expr *e, jl_resolve_fn fn, void *ud, const struct jl_limits *lim, json_t **out,
                     uint64_t *steps, char *err, size_t errlen);
/* What a $var path segs[from..n) reaches from v (object members, array
 * indexes and `length`, SPEC §4): a new reference, or NULL (missing). */
json_t *jl_walk(json_t *v, const struct jl_seg *segs, size_t from, size_t n);

/* A bounded cache of compiled expressions keyed by the expression's value
 * (member order included: the first key decides, SPEC §3).  Looking one
 * up hashes the json_t tree; nothing is printed or allocated on a hit. */
struct jl_cache;
struct jl_cache *jl_cache_new(size_t max_entries, bool extensions);
void jl_cache_free(struct jl_cache *c);
/* The compiled form of `expr` (compiled and inserted on a miss, evicting
 * the least recently used entry when full).  Borrowed: valid until the
 * next jl_cache_get/jl_cache_free.  NULL with err on a compile error. */
const struct jl_expr *jl_cache_get(struct jl_cache *c, json_t *expr, char *err, size_t errlen);
struct jl_cache_stats { uint64_t hits, misses, evictions; size_t entries, max_entries; };
void jl_cache_stats(const struct jl_cache *c, struct jl_cache_stats *s);

/* SPEC §7.1: a number's text (JavaScript's Number#toString).  Writes at
 * most 32 bytes plus a NUL; returns the length. */
size_t jl_number_text(double d, char buf[static 33]);
/* SPEC §7.2: text to number (NaN when not a number). */
double jl_text_number(const char *s, size_t n);
#endif
