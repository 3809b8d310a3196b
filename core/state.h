/* The key-value state API of plugin.h: in memory, namespaced per plugin,
 * with optional expiry. */
#ifndef LB_STATE_H
#define LB_STATE_H
void state_free_all(void);
#endif
