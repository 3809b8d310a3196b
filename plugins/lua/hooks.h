/*
 * The lua plugin on live traffic (hooks.c): the rewrite hook runs
 * routes.lua's event and call rules and turns CRUD requests into CALLs
 * (crud.lua), the response hook runs response rules; the plugin's
 * in-process connection carries everything scripts send (bus.emit).
 *
 * A message no rule selects never enters Lua: the hooks read its name and
 * target, ask rules_select (C), and return.
 *
 * Offered to lua.c, which starts and stops the hooks and hands
 * lua_hooks_bus_api to host.c (struct host's bus_api).  Built on host.h
 * (the loaded generation), rules.h, crud.h and lstate.h.
 */
#ifndef LBL_HOOKS_H
#define LBL_HOOKS_H
struct host;
struct lua_State;

/* Opens the in-process connection and registers the hooks (load()).
 * Returns 0, or -1 after lb_plugin_fail. */
int lua_hooks_start(struct host *h);
/* Registers the response hook when response rules are loaded, removes it
 * when none are (reload_done()). */
void lua_hooks_sync(struct host *h);
/* Closes the connection and frees the hooks' buffers (unload()). */
void lua_hooks_stop(struct host *h);
/* Adds bus.emit and bus.services to the bus table at the top of the
 * stack (struct host's bus_api: h is theirs for the state's life). */
void lua_hooks_bus_api(struct lua_State *L, struct host *h);
#endif
