/*
 * The daemon's shared state: settings from [bus], the connection record,
 * and the global `struct bus`.  One instance, used only from the loop
 * thread.
 */
#ifndef LB_BUS_H
#define LB_BUS_H
#include <stdint.h>
#include <stdbool.h>
#include <event2/event.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>
#include "list.h"
#include "htable.h"
#include "jsonw.h"
#include "stats.h"

struct conf;
struct service;
struct plugin;

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
    enum lb_log_level log_level;
    uint64_t max_frame;
    uint64_t call_timeout_ms;
    long long max_depth;
    uint64_t heartbeat_ms;
    uint64_t outbuf_high;            /* pause senders above this */
    uint64_t outbuf_max;             /* SLOW_CONSUMER above this */
    uint64_t slow_consumer_timeout_ms;
    long long max_connections;
};

enum conn_state { CS_NEW, CS_REGISTERED };

struct lb_conn {
    uint64_t id;
    int refs;                    /* held by paused senders; freed at 0 when dead */
    bool dead;                   /* closed: no more input or output */
    bool in_input;               /* inside lb_conn_input: defer the free */
    bool dirty;                  /* in g_bus.dirty: flush after this iteration */
    uint8_t encoding;            /* enum lb_encoding: AUTO until the first frame (core/encoding.h) */
    const char *close_why;       /* a send failed: closed after this iteration */
    enum conn_state state;
    bool encoding_pinned;        /* set by the transport's `encoding` key, not by the first frame */
    const struct lb_conn_ops *ops;
    void *tdata;
    struct lb_plugin_ctx *transport;
    struct lb_peer peer;         /* strings owned (copied at accept) */

    /* Registration (cold data). */
    struct service *svc;
    size_t svc_index;            /* position in svc->inst */
    char **methods;              /* sorted; NULL/0 = accepts every method */
    size_t n_methods;
    char *version;
    char *metadata_json;         /* as sent, for `services` */
    const char *auth;            /* "none", "token", "mtls", "bypass", ... */
    uint64_t connected_ms, registered_ms, last_seen_ms;   /* wall clock, for people */
    uint64_t last_seen_mono_ms;  /* monotonic, for eviction: a clock step evicts no one */

    /* Subscriptions: the patterns this connection holds (owned strings). */
    char **subs;
    size_t n_subs, cap_subs;

    /* Calls in flight where this connection is the caller / the callee. */
    struct list_head calls_out, calls_in;
    struct list_head link;       /* bus.conns */

    /* Back-pressure: senders paused until this connection drains. */
    struct lb_conn **waiters;
    size_t n_waiters, cap_waiters;
    uint64_t blocked_since_ms;   /* first waiter added (monotonic) */
    int waiting_on;              /* recipients this connection waits for */

    uint64_t deliver_gen;        /* de-duplicates fan-out */
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
    void **plugin_data;          /* one slot per plugin */
};

struct bus {
    struct event_base *base;
    struct bus_settings set;
    struct conf *conf;
    char *conf_path;
    uint64_t started_ms;
    uint64_t next_conn_id;
    uint64_t deliver_gen;
    bool draining;

    struct list_head conns;
    size_t n_conns;
    struct htable services;      /* struct service by name */
    size_t n_services;

    struct plugin *plugins;      /* array, in bus.conf order */
    size_t n_plugins;

    struct jw out;               /* scratch for building frames */
    struct lb_conn **dirty;      /* connections with output to flush */
    size_t n_dirty, cap_dirty;
    struct stats stats;

    struct event *sweep_timer;   /* heartbeats + slow consumers */
    struct event *sig_term, *sig_int, *sig_hup;
};

extern struct bus g_bus;

#endif
