/* The key-value state API of plugin.h: in memory, namespaced per plugin,
 * with optional expiry, persisted to [bus] state_file when set. */
#ifndef LB_STATE_H
#define LB_STATE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Loads path (NULL: in memory only; a missing file is an empty state).
 * Returns 0, or -1 with err ("file:line: cause") for a file that cannot
 * be read or is corrupt: start-up stops rather than forget revocations. */
int state_open(const char *path, uint64_t max_bytes, bool production, char *err, size_t errlen);
/* SIGHUP: a new state_max. */
void state_set_max(uint64_t max_bytes);
/* The plugin is being unloaded: if it is the state backend, changes that
 * other plugins make from now on (in their own unload, say) no longer
 * reach it. */
struct lb_plugin_ctx;
void state_forget_plugin(struct lb_plugin_ctx *ctx);
/* Writes what is pending (blocking), stops the writer, frees everything. */
void state_close(void);
#endif
