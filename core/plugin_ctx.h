/* The context the host keeps for each loaded plugin, and the plugin API
 * calls that need nothing but it (failure, logging, bus facts): the layer
 * every module that serves plugins can use without the loader above it. */
#ifndef LB_PLUGIN_CTX_H
#define LB_PLUGIN_CTX_H
#include <stdbool.h>
#include <stddef.h>
#include <lexbus/plugin.h>

struct conf_section;

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
    bool staged;                 /* reload() succeeded, reload_done pending */
    void (*reopen)(void *ud);    /* lb_reopen_register */
    void *reopen_ud;
    void (*drain)(void *ud);     /* lb_drain_register */
    void *drain_ud;
    lb_stats_fn stats;           /* lb_stats_register */
    void *stats_ud;
};

struct plugin { struct lb_plugin_ctx *ctx; };
#endif
