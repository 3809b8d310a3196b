/*
 * The daemon's global state: the [bus] settings, the event base, the
 * configuration and the plugins.  One instance (bus.c), used only from the
 * loop thread.  Connections, services, subscriptions and counters are kept
 * by their own modules (conn.c, registry.c, route_emit.c, stats.c).
 */
#ifndef LB_BUS_H
#define LB_BUS_H
#include <stdint.h>
#include <stdbool.h>
#include <event2/event.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>

struct conf;
struct plugin;

enum slow_policy { SLOW_CLOSE, SLOW_DROP };

struct bus_settings {
    bool production;
    char *node;
    char *plugin_dir;
    char *lua_dir;
    char *pid_file;
    char *state_file;                /* NULL: plugins' state in memory only */
    uint64_t state_max;              /* cap on its size (bytes) */
    char *system_service;
    char *log_file;
    long long log_level;             /* enum lb_log_level */
    uint64_t max_frame;
    uint64_t call_timeout_ms;
    long long max_depth;
    uint64_t heartbeat_ms;
    uint64_t register_timeout_ms;    /* close connections that never REGISTER */
    uint64_t outbuf_high;            /* pause point-to-point senders above this */
    uint64_t outbuf_max;             /* SLOW_CONSUMER (or drop, for broadcasts) above this */
    uint64_t outbuf_total_max;       /* every connection's queued output together */
    uint64_t slow_consumer_timeout_ms;
    long long slow_consumer;         /* enum slow_policy: broadcast subscribers past outbuf_max */
    long long max_connections;
};

struct bus {
    struct event_base *base;
    struct bus_settings set;
    struct conf *conf;
    char *conf_path;
    uint64_t started_ms;
    bool draining;
    bool check_only;             /* lexbusd -t */

    struct plugin *plugins;      /* array, in bus.conf order */
    size_t n_plugins;
};

extern struct bus g_bus;

#endif
