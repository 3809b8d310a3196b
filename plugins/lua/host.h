/*
 * The lua plugin's Lua host: one `struct lstate` per loaded generation of
 * the scripts (a reload builds a new one and swaps it in only when every
 * script loaded), the sandbox, and the `bus` API scripts call.
 *
 * Every entry into Lua goes through lstate_call(): it arms the instruction
 * budget, runs the work in a protected call (so an out-of-memory error
 * under the cap or a runaway loop ends that entry with an error message,
 * never the daemon) and clears the per-entry state afterwards.
 *
 * Everything here runs on the event loop thread.
 */
#ifndef LBL_HOST_H
#define LBL_HOST_H
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

struct rule;
struct rindex;
struct crud_res;

struct script_info { char name[64]; bool present; uint64_t loaded_ms; };

struct lstate {
    lua_State *L;
    struct host *h;
    struct lbl_conf conf;      /* as loaded (dir is this state's copy) */
    struct jl_cache *cache;    /* compiled JSONLex, flushed by a reload */
    size_t mem, cap, peak;
    long long budget;          /* instructions left in this entry */
    bool over_budget;
    bool loading;              /* require() works only while scripts load */
    bool dry_run;              /* rules.test: bus.emit sends nothing */
    unsigned emits;            /* bus.emit calls in this entry */
    unsigned dry_emits;        /* those a dry run held back */
    char budget_msg[256];
    /* routes.lua */
    struct rule *rules;
    size_t n_rules;
    struct lb_patset *events;  /* event rules' patterns (ud: index + 1) */
    size_t n_event_rules;
    struct rindex *ix_event, *ix_call, *ix_response;
    uint32_t *sel;             /* rules_select's answer (room for n_rules) */
    size_t n_sel;
    /* crud.lua */
    struct crud_res *crud;
    size_t n_crud;
    /* jsonlex.lua: named expressions */
    struct named { char *name; struct jl_expr *x; } *named;
    size_t n_named;
    struct script_info scripts[3];
    uint64_t loaded_ms;
    uint64_t log_sec, log_count, log_dropped;   /* script log throttle */
    void *call_ud;             /* the ud of the running lstate_call */
    /* The message view handed to the running rule (rules.c): its
     * metatable (a registry reference) and the view itself, by address,
     * while the rule runs (NULL otherwise: a view kept by a script is
     * stale). */
    int view_mt;
    const void *cur_view;
};

struct host {
    struct lb_plugin_ctx *ctx;
    const char *service;       /* the in-process connection's name (host-owned) */
    struct lb_conn *conn;      /* that connection; NULL once the bus closed it */
    int response_hooks;        /* the response hook's id while registered, else 0 */
    struct lbl_conf conf;
    struct lstate *cur;
    struct lstate *staged;     /* a reload's new state, until it is committed */
    struct lbl_conf staged_conf;
    struct sbuf out;           /* reused for encoded values */
    /* counters */
    uint64_t jl_evals, jl_errors, jl_ns, jl_timed, jl_steps;   /* jl_ns over jl_timed evaluations */
    uint64_t lua_entries, lua_errors, lua_budget_stops, lua_memory_stops;
    uint64_t reloads, reload_failures;
    uint64_t emits, emit_errors, crud_requests, crud_refusals;
    uint64_t rule_matches, rule_changes, rule_refusals, rule_errors;
    char last_reload_error[512];
    uint64_t last_reload_ms;
};

/* Builds a state and loads every script of conf->dir into it.  Returns it,
 * or NULL with Lua's own message (`routes.lua:12: unexpected symbol near
 * 'x'`) in err. */
struct lstate *lstate_load(struct host *h, const struct lbl_conf *conf, char *err, size_t errlen);
void lstate_free(struct lstate *s);

/* Runs fn(L, ud) as one entry into Lua: budgeted, protected.  Returns 0,
 * or -1 with the error (naming script and line where Lua knows them) in
 * err; *kind tells a budget or memory stop from a script error. */
enum lbl_fail { LBL_OK, LBL_SCRIPT, LBL_BUDGET, LBL_MEMORY };
int lstate_call(struct lstate *s, int (*fn)(lua_State *L), void *ud, enum lbl_fail *kind, char *err, size_t errlen);
/* The ud of the running lstate_call. */
void *lstate_ud(lua_State *L);
struct lstate *lstate_of(lua_State *L);

/* JSONLex through the host: the shared cache and limits.  *out is a new
 * reference.  Returns 0, or -1 with err. */
int host_jsonlex(struct lstate *s, json_t *expr, json_t *ctx, json_t **out, char *err, size_t errlen);
int host_jsonlex_compiled(struct lstate *s, const struct jl_expr *x, json_t *ctx, json_t **out, char *err, size_t errlen);
/* The same over a context resolved path by path (jl_eval_resolved),
 * untimed (rules time themselves). */
int host_jsonlex_resolved(struct lstate *s, const struct jl_expr *x, jl_resolve_fn fn, void *ud, json_t **out,
                          char *err, size_t errlen);

/* An error code: 1-47 of A-Z 0-9 _, starting with a letter. */
bool lbl_valid_code(const char *c);

uint64_t lbl_mono_ns(void);
#endif
