/* Loading plugins and the host side of the plugin ABI (plugin.h). */
#ifndef LB_PLUGIN_HOST_H
#define LB_PLUGIN_HOST_H
#include <jansson.h>
#include "bus.h"
#include "conf.h"

struct lb_plugin_ctx {
    size_t index;                /* position in bus.conf order */
    char *name;
    struct conf_section *sec;    /* in g_bus.conf (replaced on reload) */
    const struct lb_plugin *desc;
    void *dl;
    void *data;
    bool failed;
    char fail[512];
    bool loaded;
    char **owned;                /* strings handed out (resolved paths, lists) */
    size_t n_owned;
    void (*reopen)(void *ud);    /* lb_reopen_register */
    void *reopen_ud;
};

struct plugin { struct lb_plugin_ctx *ctx; };

extern bool g_check_only;

/* Loads every [plugin NAME] section in order.  Returns 0, or -1 after
 * printing "file:line: [plugin NAME] cause". */
int plugins_load_all(void);
void plugins_unload_all(void);
/* SIGHUP: points plugins at the new conf and calls their reload(). */
void plugins_reload_all(struct conf *newconf);
/* SIGHUP: lets plugins reopen their files (even when the reload fails). */
void plugins_reopen_all(void);
/* Any plugin named `name` loaded? */
bool plugin_loaded(const char *name);

/* System methods registered by plugins and by the core. */
struct sys_method { char *name; lb_method_fn fn; void *ud; };
const struct sys_method *sysmethod_find(const char *name, size_t n);
void sysmethod_add_builtin(const char *name, lb_method_fn fn);
json_t *sysmethod_names(void);
/* Appends each plugin's stats under its name. */
void plugin_stats_into(json_t *obj);
void sysmethods_free(void);
#endif
