/* The lua plugin's hooks on plugin ABI v2 (v2.c); no-ops on ABI v1. */
#ifndef LBL_V2_H
#define LBL_V2_H
struct host;
/* Registers the rewrite and response hooks.  Returns 0, or -1 after
 * lb_plugin_fail. */
int lua_v2_register(struct host *h);
void lua_v2_free(void);
/* Adds bus.emit and bus.services to the bus table at the top of the
 * stack (plugin ABI v2: they need an in-process connection and the
 * service list); nothing on v1. */
struct lua_State;
void lua_v2_bus_api(struct lua_State *L);
#endif
