/* Loading plugins, their configuration getters, and reloading them (the
 * host side of plugin.h). */
#ifndef LB_PLUGIN_HOST_H
#define LB_PLUGIN_HOST_H
#include <jansson.h>
#include "bus.h"
#include "conf.h"
#include "plugin_ctx.h"



/* Loads every [plugin NAME] section in order.  Returns 0, or -1 after
 * logging "file:line: [plugin NAME] cause". */
int plugins_load_all(void);
void plugins_unload_all(void);
/* Reload, step 1: points plugins at `newconf` and lets each validate its
 * section.  Returns 0, or -1 with the first failure in err (every plugin
 * is pointed back at the old configuration, staged settings dropped).
 * `kept` collects sections that changed but need a restart. */
int plugins_reload_prepare(struct conf *newconf, char *err, size_t errlen, char *kept, size_t keptlen);
/* Step 2: apply (commit) or drop what step 1 staged. */
void plugins_reload_finish(bool commit);
/* SIGHUP: lets plugins reopen their files (even when the reload fails). */
void plugins_reopen_all(void);
/* SIGTERM: tells plugins the bus is draining (lb_drain_register). */
void plugins_drain_all(void);
/* Appends each plugin's stats (and counters) under its name. */
void plugin_stats_into(json_t *obj);
void plugin_host_free(void);
#endif
