/*
 * [plugin redis]: settings, life cycle, counters and stats, and the
 * wiring of the parts (rd.h has the shape, README "Many nodes" the
 * user's view, man/bus.conf.5 every key).  The top layer: it alone knows
 * every part, so it is what hands them to each other (the session's
 * handlers to rconn.c, exprsn.c's lookup to the route hook).
 */
#include "config.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include "bridge.h"
#include "cluster.h"
#include "exprsn.h"
#include "rconn.h"
#include "rstate.h"

static struct rd *g_rd;          /* one per process: the loop is single-threaded */

/* ---- settings ----------------------------------------------------------- */

static int fail_key(struct lb_plugin_ctx *ctx, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_key(struct lb_plugin_ctx *ctx, const char *key, const char *fmt, ...)
{
    char where[256], msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lb_plugin_fail(ctx, "%s: %s: %s", lb_conf_where(ctx, key, where, sizeof where), key, msg);
    return -1;
}

static bool prefix_ok(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > 48) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-' || s[i] == '.'))
            return false;
    return true;
}

/* A comma- or space-separated list of service names. */
static int name_list(struct lb_plugin_ctx *ctx, const char *key, const char *s, char ***out, size_t *n)
{
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (!lb_service_name_valid(tok, strlen(tok)) || *n == 16)
            return fail_key(ctx, key, "'%s' is not a service name (or more than 16 names)", tok);
        char **v = realloc(*out, (*n + 1) * sizeof *v);
        if (!v || !(v[*n] = strdup(tok))) return fail_key(ctx, key, "out of memory");
        *out = v;
        (*n)++;
    }
    return 0;
}

static int read_timing(struct lb_plugin_ctx *ctx, struct rcfg *c)
{
    if (lb_conf_ms(ctx, "connect_timeout", 2000, &c->connect_timeout_ms) < 0 ||
        lb_conf_ms(ctx, "command_timeout", 5000, &c->command_timeout_ms) < 0 ||
        lb_conf_ms(ctx, "backoff_min", 100, &c->backoff_min_ms) < 0 ||
        lb_conf_ms(ctx, "backoff_max", 2000, &c->backoff_max_ms) < 0 ||
        lb_conf_ms(ctx, "node_ttl", 5000, &c->node_ttl_ms) < 0)
        return -1;
    if (c->connect_timeout_ms < 10 || c->connect_timeout_ms > 600000) return fail_key(ctx, "connect_timeout", "must be 10ms to 10m");
    if (c->command_timeout_ms < 100 || c->command_timeout_ms > 600000) return fail_key(ctx, "command_timeout", "must be 100ms to 10m");
    if (c->backoff_min_ms < 10 || c->backoff_min_ms > c->backoff_max_ms)
        return fail_key(ctx, "backoff_min", "must be at least 10ms and at most backoff_max");
    if (c->backoff_max_ms > 600000) return fail_key(ctx, "backoff_max", "must be at most 10m");
    if (c->node_ttl_ms < 300 || c->node_ttl_ms > 3600000) return fail_key(ctx, "node_ttl", "must be 300ms to 1h");
    return 0;
}

static int read_exprsn(struct lb_plugin_ctx *ctx, struct rcfg *c)
{
    const char *ns, *bridge, *key_file;
    long long ttl;
    if (lb_conf_bool(ctx, "exprsn", false, &c->exprsn) < 0 || lb_conf_str(ctx, "namespace", "ipc", &ns) < 0 ||
        lb_conf_str(ctx, "exprsn_bridge", "bridge", &bridge) < 0 || lb_conf_str(ctx, "key_file", NULL, &key_file) < 0 ||
        lb_conf_ms(ctx, "exprsn_scan", 2000, &c->exprsn_scan_ms) < 0 ||
        lb_conf_int(ctx, "token_ttl", 300, 1, 86400, &ttl) < 0 ||
        lb_conf_bool(ctx, "revocation_check", true, &c->revocation_check) < 0)
        return -1;
    c->token_ttl_s = (uint64_t)ttl;
    if (!prefix_ok(ns)) return fail_key(ctx, "namespace", "1-48 characters of A-Z a-z 0-9 _ - .");
    snprintf(c->ns, sizeof c->ns, "%s", ns);
    if (c->exprsn_scan_ms < 100 || c->exprsn_scan_ms > 5000) return fail_key(ctx, "exprsn_scan", "must be 100ms to 5s (workers show within 5 s)");
    if (name_list(ctx, "exprsn_bridge", bridge, &c->bridge_names, &c->n_bridge_names)) return -1;
    if (!c->exprsn) return 0;
    if (!key_file)
        return fail_key(ctx, "exprsn", "exprsn = yes needs key_file = PATH: the key workers verify tokens with "
                        "(Exprsn's IPC_BROKER_KEY; the same file as [plugin tokens] key_file)");
    if (lb_plugin_position(ctx, "tokens") < 0)
        return fail_key(ctx, "exprsn", "exprsn = yes needs [plugin tokens]: every message a worker sends is "
                        "verified by it (its key_file holding the workers' key)");
    return keys_load(ctx, lb_conf_path(ctx, key_file), &c->keys);
}

static int read_bridges(struct lb_plugin_ctx *ctx, struct rcfg *c)
{
    const char *const *list;
    const char *from;
    size_t n = lb_conf_list(ctx, "bridge", &list);
    if (lb_conf_str(ctx, "bridge_from", "redis", &from) < 0) return -1;
    if (!lb_service_name_valid(from, strlen(from))) return fail_key(ctx, "bridge_from", "must be a service name");
    snprintf(c->bridge_from, sizeof c->bridge_from, "%s", from);
    for (size_t i = 0; i < n; i++) {
        if (!lb_pattern_valid(list[i], strlen(list[i])))
            return fail_key(ctx, "bridge", "'%s' is not an event pattern (':'-separated segments, * for one, a "
                            "final > for the rest: intellirouter:*:*:*)", list[i]);
        char **v = realloc(c->bridges, (c->n_bridges + 1) * sizeof *v);
        if (!v || !(v[c->n_bridges] = strdup(list[i]))) return fail_key(ctx, "bridge", "out of memory");
        c->bridges = v;
        c->n_bridges++;
    }
    return 0;
}

static int read_settings(struct lb_plugin_ctx *ctx, struct rcfg *c)
{
    const char *url, *prefix, *state;
    char why[200];
    uint64_t mm, mq;
    if (lb_conf_str(ctx, "url", "redis://127.0.0.1:6379", &url) < 0 || lb_conf_str(ctx, "prefix", "lexbus", &prefix) < 0 ||
        lb_conf_bool(ctx, "prefer_local", true, &c->prefer_local) < 0 ||
        lb_conf_size(ctx, "max_message", 4u << 20, &mm) < 0 || lb_conf_size(ctx, "max_queue", 16u << 20, &mq) < 0 ||
        lb_conf_str(ctx, "state", "local", &state) < 0)
        return -1;
    if (rw_url_parse(url, &c->url, why, sizeof why)) return fail_key(ctx, "url", "%s", why);
    rw_url_print(&c->url, c->url_text, sizeof c->url_text);
    if (!prefix_ok(prefix)) return fail_key(ctx, "prefix", "1-48 characters of A-Z a-z 0-9 _ - .");
    snprintf(c->prefix, sizeof c->prefix, "%s", prefix);
    if (mm < 65536 || mm > (512u << 20)) return fail_key(ctx, "max_message", "must be 64K to 512M");
    if (mq < 65536 || mq > (4ull << 30)) return fail_key(ctx, "max_queue", "must be 64K to 4G");
    c->max_message = mm;
    c->max_queue = mq;
    if (strcmp(state, "local") && strcmp(state, "redis"))
        return fail_key(ctx, "state", "must be local (the host's own, [bus] state_file) or redis");
    c->state_redis = !strcmp(state, "redis");
    if (read_timing(ctx, c) || read_exprsn(ctx, c) || read_bridges(ctx, c)) return -1;
    const char *node = lb_bus_node(ctx);
    if (!lb_service_name_valid(node, strlen(node)))
        return fail_key(ctx, "url", "[bus] node '%s' cannot name a node on Redis: use A-Z a-z 0-9 _ . - / @", node);
    return 0;
}

static void cfg_free(struct rcfg *c)
{
    for (size_t i = 0; i < c->n_bridge_names; i++) free(c->bridge_names[i]);
    free(c->bridge_names);
    for (size_t i = 0; i < c->n_bridges; i++) free(c->bridges[i]);
    free(c->bridges);
    keys_free(&c->keys);
    memset(c, 0, sizeof *c);
}

/* ---- stats ---------------------------------------------------------------- */

static const char *state_name(const struct rd *rd)
{
    switch (rd->state) {
    case RS_DOWN: return "down";
    case RS_CONNECTING: return "connecting";
    case RS_JOINING: return "joining";
    case RS_UP: return "up";
    case RS_CLASH: return "name-clash";
    }
    return "?";
}

static json_t *stats(void *ud)
{
    struct rd *rd = ud;
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I}", "state", state_name(rd), "url", rd->cfg.url_text, "node",
                          rd->node, "epoch", rd->epoch, "queueBytes", (json_int_t)rc_queued(rd),
                          "awaitingReplies", (json_int_t)rd->q_n, "recordGen", (json_int_t)rd->rec_gen);
    json_object_set_new(o, "peers", cl_stats(rd));
    if (rd->last_error[0]) json_object_set_new(o, "lastError", json_string(rd->last_error));
    if (rd->cfg.exprsn) json_object_set_new(o, "workers", json_integer((json_int_t)rd->workers_known.n));
    if (rd->state_lost) json_object_set_new(o, "stateChangesLost", json_true());
    return o;
}

struct counter { const char *name, *help; size_t off; bool gauge; };
#define C(f, n, h) { n, h, offsetof(struct rd, f), false }
#define G(f, n, h) { n, h, offsetof(struct rd, f), true }
static const struct counter g_counters[] = {
    C(c_published, "published", "messages published to Redis"),
    C(c_received, "received", "messages received from Redis"),
    C(c_dropped, "dropped", "messages dropped (all reasons below, and Redis unreachable)"),
    C(c_dropped_bad, "dropped_bad", "malformed or refused messages from Redis"),
    C(c_dropped_origin, "dropped_origin", "messages from no live node (forged or late)"),
    C(c_dropped_oversized, "dropped_oversized", "messages larger than max_message"),
    C(c_dropped_queue, "dropped_queue", "messages not queued: Redis unreachable or past max_queue"),
    C(c_reconnects, "reconnects", "sessions with Redis lost and restarted"),
    G(c_latency_us, "redis_latency_us", "round trip of the last heartbeat PING, microseconds"),
    G(c_latency_max_us, "redis_latency_max_us", "slowest heartbeat PING, microseconds"),
    G(c_nodes, "nodes", "other live nodes"),
    G(c_remote_services, "remote_services", "services announced by other nodes"),
    G(c_queue_bytes, "queue_bytes", "bytes queued for Redis"),
    C(c_calls_out, "calls_out", "calls sent to other nodes"),
    C(c_calls_in, "calls_in", "calls received from other nodes"),
    C(c_unavailable, "calls_unavailable", "calls answered SERVICE_UNAVAILABLE: nobody listening on the node"),
    C(c_timeouts, "command_timeouts", "sessions ended by command_timeout"),
    C(c_sub_paused, "subscriber_paused", "times reading from Redis paused: the bus lagged behind"),
    C(c_ipc_in, "ipc_in", "Exprsn worker messages delivered to the bus"),
    C(c_ipc_out, "ipc_out", "messages published to Exprsn workers"),
    C(c_ipc_ignored, "ipc_ignored", "worker broadcasts nobody here subscribes to"),
    C(c_ipc_refused, "ipc_refused", "worker messages refused (no or bad token, revoked, wrong target)"),
    C(c_ipc_acks, "ipc_acks", "acks published to workers"),
    G(c_workers, "workers", "Exprsn workers known"),
    C(c_bridged_in, "bridged_in", "raw channel messages turned into events"),
    C(c_bridged_out, "bridged_out", "events published on raw channels"),
    C(c_state_out, "state_out", "state changes written to Redis"),
    C(c_state_in, "state_in", "state changes applied from other nodes"),
};

static void register_counters(struct rd *rd)
{
    for (size_t i = 0; i < sizeof g_counters / sizeof *g_counters; i++)
        lb_counter_register(rd->ctx, g_counters[i].name, g_counters[i].help,
                            (const uint64_t *)((const char *)rd + g_counters[i].off), g_counters[i].gauge);
}

/* ---- life cycle ------------------------------------------------------------ */

/* SIGTERM: the bus waits until no event of anyone's is left.  Say
 * goodbye to the cluster and let go of Redis and our timer. */
static void drain(struct rd *rd)
{
    cl_leave(rd);
    rc_stop(rd);
    event_free(rd->tick_ev);
    rd->tick_ev = NULL;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct rd *rd = arg;
    if (lb_bus_draining(rd->ctx)) { drain(rd); return; }
    rd->c_queue_bytes = rc_queued(rd);
    rc_check_timeout(rd);
    cl_tick(rd);
    ex_tick(rd);
}

/* The session's events go to the cluster, which passes on to the parts
 * below it what concerns them; raw channels go to the bridge. */
static const struct rc_ops session_ops = {
    .up = cl_connected,
    .down = cl_disconnected,
    .message = cl_on_message,
    .pmessage = br_on_message,
    .calls_lost = cl_calls_lost,
};

static struct lb_conn *route_hook(void *ud, struct lb_conn *from, const struct lb_msg *m, struct lb_str service)
{
    (void)from;
    return ex_route(ud, m, service);
}

static void rd_free(struct rd *rd)
{
    if (!rd) return;
    if (rd->tick_ev) event_free(rd->tick_ev);
    ex_free(rd);
    st_free(rd);
    cl_free(rd);
    rc_stop(rd);
    if (rd->msg) lb_msg_free(rd->msg);
    lb_jw_free(rd->w);
    lb_jw_free(rd->w2);
    lb_patset_free(rd->bridge_set);
    cfg_free(&rd->cfg);
    free(rd);
}

static int redis_load(struct lb_plugin_ctx *ctx)
{
    if (g_rd) { lb_plugin_fail(ctx, "[plugin redis] may appear once"); return -1; }
    struct rd *rd = calloc(1, sizeof *rd);
    if (!rd) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    rd->ctx = ctx;
    lb_plugin_set_data(ctx, rd);
    if (read_settings(ctx, &rd->cfg) < 0) return -1;      /* unload frees it */
    if (rd->cfg.exprsn)
        for (size_t i = 0; i < rd->cfg.n_bridge_names; i++)
            if (lb_system_alias_add(ctx, rd->cfg.bridge_names[i])) return -1;
    if (lb_check_only(ctx)) return 0;
    g_rd = rd;
    rd->base = lb_event_base(ctx);
    snprintf(rd->node, sizeof rd->node, "%s", lb_bus_node(ctx));
    rd_random_hex(rd->epoch, RW_EPOCH_LEN / 2);
    if (gethostname(rd->hostname, sizeof rd->hostname - 1)) snprintf(rd->hostname, sizeof rd->hostname, "?");
    rd->started_ms = lb_now_ms();
    rd->w = lb_jw_new();
    rd->w2 = lb_jw_new();
    rd->msg = lb_msg_new();
    rc_init(rd, &session_ops);
    if (cl_init(rd) || br_init(rd) || ex_init(rd) || st_init(rd)) return -1;
    rd->tick_ev = event_new(rd->base, -1, EV_PERSIST, tick_cb, rd);
    struct timeval tv = { 0, 100000 };
    if (!rd->tick_ev || event_add(rd->tick_ev, &tv)) { lb_plugin_fail(ctx, "cannot start a timer"); return -1; }
    register_counters(rd);
    lb_stats_register(ctx, stats, rd);
    if (rd->cfg.exprsn) {
        struct lb_hooks h = { .size = sizeof h, .route = route_hook };
        lb_hooks_register(ctx, &h, rd);
    }
    lb_log(ctx, LB_LOG_INFO, "node '%s' joins through Redis at %s (prefix %s, node_ttl %llu ms%s%s%s)", rd->node,
           rd->cfg.url_text, rd->cfg.prefix, (unsigned long long)rd->cfg.node_ttl_ms,
           rd->cfg.exprsn ? ", Exprsn workers" : "", rd->cfg.n_bridges ? ", bridged channels" : "",
           rd->cfg.state_redis ? ", state on Redis" : "");
    rc_start(rd);
    return 0;
}

static void redis_unload(struct lb_plugin_ctx *ctx)
{
    struct rd *rd = lb_plugin_data(ctx);
    if (!rd) return;
    cl_leave(rd);
    rd->unloading = true;
    rd_free(rd);
    if (g_rd == rd) g_rd = NULL;
    lb_plugin_set_data(ctx, NULL);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .size = sizeof(struct lb_plugin),
    .name = "redis",
    .version = PACKAGE_VERSION,
    .load = redis_load,
    .unload = redis_unload,
};
