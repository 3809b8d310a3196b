/*
 * The lua plugin's bottom layer (lstate.c): one Lua state with its memory
 * cap and instruction budget, the one way into it (lstate_call), JSONLex
 * under the state's limits, and the plugin's counters.  It offers these to
 * every other file of the plugin (rules.c, crud.c, hooks.c, host.c, lua.c)
 * and knows none of them: what a state runs is the caller's business.
 *
 * Every entry into Lua goes through lstate_call(): it arms the instruction
 * budget, runs the work in a protected call (so an out-of-memory error
 * under the cap or a runaway loop ends that entry with an error message,
 * never the daemon) and clears the per-entry state afterwards.
 *
 * Everything here runs on the event loop thread.
 */
#ifndef LBL_LSTATE_H
#define LBL_LSTATE_H
#include <stdbool.h>
#include <stdint.h>
#include <lua.h>
#include <jansson.h>
#include <lexbus/plugin.h>
#include "jsonlex.h"
#include "sbuf.h"

/* Nesting allowed in values crossing JSON <-> Lua: the envelope's own
 * limit (core/envelope.h ENV_MAX_DEPTH), so anything a rule produces fits
 * in a frame the bus accepts. */
#define LBL_MAX_DEPTH 62
#define LBL_MAX_SCRIPT (1024 * 1024)    /* bytes of one script file */
#define LBL_HOOK_EVERY 1000             /* instructions between budget checks */
#define LBL_MAX_EMITS 64                /* bus.emit calls per entry into Lua */

struct lbl_conf {
    char *dir;                 /* the scripts folder */
    const char *service;       /* the in-process connection's name (host-owned) */
    uint64_t max_memory;       /* bytes one Lua state may hold */
    long long max_instructions;/* per entry into Lua */
    bool extensions;           /* JSONLex §12 operators */
    long long cache_entries;   /* compiled JSONLex expressions kept */
    long long max_steps;       /* JSONLex evaluation budget */
    uint64_t max_text;         /* JSONLex text cap */
};

/* The plugin's counters (`lexbus stats`, /metrics): one set for the
 * plugin's life, across reloads; each layer counts what it does. */
struct lbl_counters {
    uint64_t jl_evals, jl_errors, jl_ns, jl_timed, jl_steps;   /* jl_ns over jl_timed evaluations */
    uint64_t lua_entries, lua_errors, lua_budget_stops, lua_memory_stops;
    uint64_t reloads, reload_failures;
    uint64_t emits, emit_errors, crud_requests, crud_refusals;
    uint64_t rule_matches, rule_changes, rule_refusals, rule_errors;
};

struct lstate {
    lua_State *L;
    /* Borrowed from the plugin, which outlives every state. */
    struct lb_plugin_ctx *ctx;
    struct lbl_counters *n;
    struct sbuf *out;          /* scratch for encoded values, shared by the states */
    struct lbl_conf conf;      /* as loaded (dir is this state's copy) */
    struct jl_cache *cache;    /* compiled JSONLex, flushed by a reload */
    size_t mem, cap, peak;
    long long budget;          /* instructions left in this entry */
    bool over_budget;
    bool loading;              /* require() works only while scripts load; budget x10 */
    bool dry_run;              /* rules.test, crud.test: nothing sent, nothing counted */
    unsigned emits;            /* bus.emit calls in this entry */
    unsigned dry_emits;        /* those a dry run held back */
    char budget_msg[256];
    uint64_t log_sec, log_count, log_dropped;   /* script log throttle (host.c) */
    void *call_ud;             /* the ud of the running lstate_call */
    /* The message view handed to the running rule (rules.c): its
     * metatable (a registry reference) and the view itself, by address,
     * while the rule runs (NULL otherwise: a view kept by a script is
     * stale). */
    int view_mt;
    const void *cur_view;
};

/* Makes s (zeroed by the caller, and not moved after) a fresh Lua state
 * under conf's limits, with no libraries yet.  Returns 0, or -1 with err
 * (and s holding nothing to free). */
int lstate_init(struct lstate *s, const struct lbl_conf *conf, struct lb_plugin_ctx *ctx, struct lbl_counters *n,
                struct sbuf *out, char *err, size_t errlen);
/* Closes the Lua state and frees what lstate_init made (s itself is the
 * caller's).  Safe on a state lstate_init refused. */
void lstate_close(struct lstate *s);

/* Runs fn(L, ud) as one entry into Lua: budgeted, protected.  Returns 0,
 * or -1 with the error (naming script and line where Lua knows them) in
 * err; *kind tells a budget or memory stop from a script error.  May be
 * called from inside an entry (the outer ud is restored). */
enum lbl_fail { LBL_OK, LBL_SCRIPT, LBL_BUDGET, LBL_MEMORY };
int lstate_call(struct lstate *s, int (*fn)(lua_State *L), void *ud, enum lbl_fail *kind, char *err, size_t errlen);
/* The ud of the running lstate_call. */
void *lstate_ud(lua_State *L);
struct lstate *lstate_of(lua_State *L);
/* Everything unreachable back (after loading, after a stopped entry). */
void lstate_gc(struct lstate *s);

/* JSONLex under the state's cache and limits, counted.  *out is a new
 * reference.  Returns 0, or -1 with err. */
int lstate_jsonlex(struct lstate *s, json_t *expr, json_t *ctx, json_t **out, char *err, size_t errlen);
int lstate_jsonlex_compiled(struct lstate *s, const struct jl_expr *x, json_t *ctx, json_t **out, char *err, size_t errlen);
/* The same over a context resolved path by path (jl_eval_resolved),
 * untimed (rules time themselves). */
int lstate_jsonlex_resolved(struct lstate *s, const struct jl_expr *x, jl_resolve_fn fn, void *ud, json_t **out,
                            char *err, size_t errlen);

/* An error code: 1-47 of A-Z 0-9 _, starting with a letter. */
bool lbl_valid_code(const char *c);

uint64_t lbl_mono_ns(void);
#endif
