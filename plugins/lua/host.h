/*
 * The lua plugin's scripts (host.c): a generation (struct lgen) is one Lua
 * state with everything jsonlex.lua, routes.lua and crud.lua made in it; a
 * reload builds a new one and swaps it in only when every script loaded.
 * host.c builds the sandbox each script runs in and the `bus` table it
 * calls, whose bus-facing part (bus.emit, bus.services) is handed down in
 * struct host (bus_api: hooks.c's, set by lua.c).
 *
 * Offered to hooks.c (struct host, struct lgen on live traffic) and lua.c
 * (lgen_load, lgen_free).  Built on rules.h, crud.h and lstate.h.
 *
 * Everything here runs on the event loop thread.
 */
#ifndef LBL_HOST_H
#define LBL_HOST_H
#include <stdbool.h>
#include <stdint.h>
#include <lua.h>
#include <lexbus/plugin.h>
#include "lstate.h"
#include "rules.h"
#include "crud.h"
#include "sbuf.h"

struct script_info { char name[64]; bool present; uint64_t loaded_ms; };

struct lgen {
    struct rules rules;        /* routes.lua (first: the hooks' one look per message) */
    struct lstate s;           /* the Lua state (its address is the allocator's ud: never moved) */
    struct host *h;
    struct crud_set crud;      /* crud.lua */
    /* jsonlex.lua: named expressions */
    struct named { char *name; struct jl_expr *x; } *named;
    size_t n_named;
    struct script_info scripts[3];
    uint64_t loaded_ms;
};

struct host {
    struct lb_plugin_ctx *ctx;
    const char *service;       /* the in-process connection's name (host-owned) */
    struct lb_conn *conn;      /* that connection; NULL once the bus closed it */
    int response_hooks;        /* the response hook's id while registered, else 0 */
    struct lbl_conf conf;
    struct lgen *cur;
    struct lgen *staged;       /* a reload's new generation, until it is committed */
    struct lbl_conf staged_conf;
    struct sbuf out;           /* reused for encoded values (every state's s.out) */
    /* Adds the bus-facing functions to the `bus` table at the top of L's
     * stack, for every script's environment (set before the first load). */
    void (*bus_api)(lua_State *L, struct host *h);
    struct lbl_counters n;
    char last_reload_error[512];
    uint64_t last_reload_ms;
};

/* Builds a generation and loads every script of conf->dir into it.
 * Returns it, or NULL with Lua's own message (`routes.lua:12: unexpected
 * symbol near 'x'`) in err. */
struct lgen *lgen_load(struct host *h, const struct lbl_conf *conf, char *err, size_t errlen);
void lgen_free(struct lgen *g);
#endif
