/*
 * example: a small plugin written against <lexbus/plugin.h> alone, as a
 * model for plugin authors (doc/plugins.md walks through it).
 *
 * A service on an in-process connection (lb_local_open):
 *   echo.echo    answers with its params
 *   echo.upper   {"text": "abc"} -> {"text": "ABC"}
 *   echo.ask     {"to": S, "method": M, "params": P}: calls S.M (lb_call)
 *                and answers with what S answered, error or not
 *   echo.tick    emits the event example:tick (lb_emit); answers {"n": N}
 * A method of the bus's own service (a /health-style stats reader):
 *   lexbus.example.health -> {status, uptime, connections, services}
 * A rewrite hook:
 *   alias.NAME = SERVICE   CALLs and EMITs addressed to NAME go to SERVICE
 *   tag_events = PATTERN   EMITs whose event matches (the key may repeat)
 *                          get a member "tag": TAG in their object payload
 * Counters in `lexbus stats` (plugins.example), and reloads in two steps.
 *
 * [plugin example]
 * service = echo          the service's name (restart to change)
 * tick_interval = 0       also emit example:tick this often (0: on demand only)
 * alias.old-echo = echo
 * tag_events = orders:>
 * tag = eu-1              (default: the node name)
 *
 * SIGHUP or `lexbus reload` applies alias.*, tag_events, tag and
 * tick_interval, all or nothing.
 */
#include "config.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include <jansson.h>
#include <lexbus/plugin.h>

#define MAX_ALIASES 64

struct alias { const char *name, *service; };   /* host-owned config strings */

/* Everything a reload may change, parsed and checked as one unit. */
struct settings {
    const char *service;
    uint64_t tick_ms;
    const char *tag;
    struct lb_patset *tag_events;   /* NULL: tag nothing */
    struct alias alias[MAX_ALIASES];
    size_t n_alias;
};

struct ask;

struct example {
    struct lb_plugin_ctx *ctx;
    struct settings set, staged;
    bool has_staged;
    struct lb_conn *conn;           /* our in-process connection; NULL once the bus closed it */
    struct event *tick;             /* tick_interval timer, or NULL */
    struct ask *asks;               /* echo.ask calls waiting for their answer */
    struct lb_msg *msg;             /* for re-reading a stored CALL (lb_msg_parse) */
    /* Counters (lb_counter_register): the host reads them where they are. */
    uint64_t calls, asks_sent, ask_errors, ticks, tagged, aliased, asks_waiting;
};

/* An echo.ask in flight.  The CALL it answers is gone when on_message
 * returns, so the little lb_respond needs (type, id, to) is kept as a
 * frame of its own and parsed again when the answer comes. */
struct ask {
    struct example *ex;
    struct ask *next, **prev;
    size_t len;
    char call[];
};

static const char *const methods[] = { "echo", "upper", "ask", "tick" };

static bool is(struct lb_str s, const char *lit)
{
    return s.p && s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* ---- settings ------------------------------------------------------ */

static void settings_free(struct settings *s)
{
    lb_patset_free(s->tag_events);
    memset(s, 0, sizeof *s);
}

static void match_found(void *pattern, void *arg) { (void)pattern; (void)arg; }

static int read_tag_events(struct lb_plugin_ctx *ctx, struct settings *s)
{
    const char *const *pats;
    size_t n = lb_conf_list(ctx, "tag_events", &pats);
    char where[512];
    for (size_t i = 0; i < n; i++) {
        if (!s->tag_events) s->tag_events = lb_patset_new();
        if (lb_patset_add(s->tag_events, pats[i], strlen(pats[i]), (void *)pats[i]) < 0) {
            lb_plugin_fail(ctx, "%s: tag_events = %s is not an event pattern (':'-separated segments, "
                           "'*' for one segment, a final '>' for the rest)",
                           lb_conf_where_nth(ctx, "tag_events", i, where, sizeof where), pats[i]);
            return -1;
        }
    }
    return 0;
}

/* alias.NAME = SERVICE: a family of keys, found by walking the section. */
static int read_aliases(struct lb_plugin_ctx *ctx, struct settings *s)
{
    const char *const *keys;
    size_t n = lb_conf_keys(ctx, &keys);
    char where[512];
    for (size_t i = 0; i < n; i++) {
        if (strncmp(keys[i], "alias.", 6) != 0) continue;
        const char *name = keys[i] + 6, *service;
        if (lb_conf_str(ctx, keys[i], NULL, &service) < 0) return -1;
        lb_conf_where(ctx, keys[i], where, sizeof where);
        if (!lb_service_name_valid(name, strlen(name)) || !lb_service_name_valid(service, strlen(service))) {
            lb_plugin_fail(ctx, "%s: %s = %s: expected alias.NAME = SERVICE, both service names", where,
                           keys[i], service);
            return -1;
        }
        if (s->n_alias == MAX_ALIASES) {
            lb_plugin_fail(ctx, "%s: more than %d alias.NAME keys", where, MAX_ALIASES);
            return -1;
        }
        s->alias[s->n_alias++] = (struct alias){ name, service };
    }
    return 0;
}

/* Used by load() and reload() alike, so both accept the same sections.
 * Every key read here is marked known; any other key is refused by the
 * host with its file:line. */
static int read_settings(struct lb_plugin_ctx *ctx, struct settings *s)
{
    char where[512];
    memset(s, 0, sizeof *s);
    if (lb_conf_str(ctx, "service", "echo", &s->service) < 0 ||
        lb_conf_ms(ctx, "tick_interval", 0, &s->tick_ms) < 0 ||
        lb_conf_str(ctx, "tag", lb_bus_node(ctx), &s->tag) < 0)
        return -1;
    if (!lb_service_name_valid(s->service, strlen(s->service))) {
        lb_plugin_fail(ctx, "%s: service = %s is not a service name",
                       lb_conf_where(ctx, "service", where, sizeof where), s->service);
        return -1;
    }
    if (s->tick_ms && s->tick_ms < 100) {
        lb_plugin_fail(ctx, "%s: tick_interval must be 0 (off) or at least 100ms",
                       lb_conf_where(ctx, "tick_interval", where, sizeof where));
        return -1;
    }
    return read_tag_events(ctx, s) < 0 || read_aliases(ctx, s) < 0 ? -1 : 0;
}

/* ---- the rewrite hook ---------------------------------------------- */

static const struct alias *alias_of(const struct settings *s, struct lb_str to)
{
    for (size_t i = 0; to.p && i < s->n_alias; i++)
        if (is(to, s->alias[i].name)) return &s->alias[i];
    return NULL;
}

/* Adds "tag": TAG to the payload object.  jansson re-encodes the payload
 * (numbers may be written differently); only matching events pay this. */
static void tag_payload(struct example *ex, struct lb_msg *m)
{
    struct lb_str ev = lb_msg_field(m, "event"), raw = lb_msg_raw(m, "payload");
    if (!ev.p || !raw.p || raw.p[0] != '{') return;   /* only an object has room for a member */
    if (!lb_patset_match(ex->set.tag_events, ev.p, ev.n, match_found, NULL)) return;
    json_t *p = json_loadb(raw.p, raw.n, 0, NULL);
    if (!p) return;
    json_object_set_new(p, "tag", json_string(ex->set.tag));
    char *text = json_dumps(p, JSON_COMPACT);
    if (text && lb_msg_set(m, "payload", text, strlen(text)) == 0) ex->tagged++;
    free(text);
    json_decref(p);
}

/* Runs for every CALL, EMIT and CRUD of every registered sender, after
 * every `message` hook said yes: the common case (no alias, no tagging)
 * must cost next to nothing. */
static enum lb_verdict_kind on_rewrite(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_err *err)
{
    (void)c; (void)err;
    struct example *ex = ud;
    enum lb_msg_type t = lb_msg_type(m);
    if (t != LB_MSG_CALL && t != LB_MSG_EMIT) return LB_PASS;
    const struct alias *a = alias_of(&ex->set, lb_msg_field(m, "to"));
    if (a) {
        char to[LB_MAX_NAME + 3];   /* a service name needs no escaping */
        int n = snprintf(to, sizeof to, "\"%s\"", a->service);
        if (lb_msg_set(m, "to", to, (size_t)n) == 0) ex->aliased++;
    }
    if (t == LB_MSG_EMIT && ex->set.tag_events) tag_payload(ex, m);
    return LB_PASS;
}

/* ---- the service --------------------------------------------------- */

static void respond_json(struct example *ex, const struct lb_msg *call, json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text) lb_respond(ex->conn, call, text, strlen(text));
    else lb_respond_error(ex->conn, call, LB_E_INTERNAL_ERROR, "could not encode the answer");
    free(text);
    json_decref(v);
}

static void do_upper(struct example *ex, const struct lb_msg *m)
{
    struct lb_str raw = lb_msg_raw(m, "params");
    json_t *p = raw.p ? json_loadb(raw.p, raw.n, 0, NULL) : NULL;
    const char *text = json_string_value(json_object_get(p, "text"));
    if (!text) {
        lb_respond_error(ex->conn, m, LB_E_INVALID_MESSAGE, "upper needs params {\"text\": a string}");
        json_decref(p);
        return;
    }
    char *up = strdup(text);
    for (char *q = up; q && *q; q++) *q = (char)toupper((unsigned char)*q);   /* ASCII only */
    respond_json(ex, m, json_pack("{s:s}", "text", up ? up : ""));
    free(up);
    json_decref(p);
}

static void ask_free(struct ask *a)
{
    *a->prev = a->next;
    if (a->next) a->next->prev = a->prev;
    a->ex->asks_waiting--;
    free(a);
}

/* The answer to an echo.ask's own call: passed on as it came. */
static void ask_answered(void *ud, const struct lb_msg *r)
{
    struct ask *a = ud;
    struct example *ex = a->ex;
    const char *err;
    if (ex->conn && lb_msg_parse(ex->msg, a->call, a->len, &err) == 0) {
        if (is(lb_msg_field(r, "status"), "error")) {
            struct lb_str code = lb_msg_error_code(r), e = lb_msg_raw(r, "error");
            json_t *eo = json_loadb(e.p, e.n, 0, NULL);
            char c[64];
            snprintf(c, sizeof c, "%.*s", code.p ? (int)code.n : 0, code.p ? code.p : "");
            ex->ask_errors++;
            lb_respond_error(ex->conn, ex->msg, c[0] ? c : LB_E_EXECUTION_FAILED,
                             json_string_value(json_object_get(eo, "message")));
            json_decref(eo);
        } else {
            struct lb_str data = lb_msg_raw(r, "data");
            lb_respond(ex->conn, ex->msg, data.p, data.n);
        }
    }
    ask_free(a);
}

static void do_ask(struct example *ex, const struct lb_msg *m)
{
    struct lb_str raw = lb_msg_raw(m, "params"), id = lb_msg_raw(m, "id"), to = lb_msg_raw(m, "to");
    json_t *p = raw.p ? json_loadb(raw.p, raw.n, 0, NULL) : NULL;
    const char *svc = json_string_value(json_object_get(p, "to"));
    const char *method = json_string_value(json_object_get(p, "method"));
    json_t *params = json_object_get(p, "params");
    if (!svc || !method) {
        lb_respond_error(ex->conn, m, LB_E_INVALID_MESSAGE, "ask needs params {\"to\": service, \"method\": name}");
        json_decref(p);
        return;
    }
    char *ptext = params ? json_dumps(params, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    size_t cap = 48 + id.n + to.n;
    struct ask *a = malloc(sizeof *a + cap);
    if (a) a->len = (size_t)snprintf(a->call, cap, "{\"type\":\"CALL\",\"id\":%.*s,\"to\":%.*s}", (int)id.n,
                                     id.p, (int)to.n, to.p);
    /* from NULL: the call comes from our first service; the answer comes
     * to ask_answered from a later loop turn, never from inside lb_call. */
    if (!a || lb_call(ex->conn, NULL, svc, method, ptext, ptext ? strlen(ptext) : 0, 0, ask_answered, a) != 0) {
        free(a);
        lb_respond_error(ex->conn, m, LB_E_INVALID_MESSAGE, "ask: cannot call that (bad service or method name?)");
    } else {
        a->ex = ex;
        a->next = ex->asks;
        a->prev = &ex->asks;
        if (ex->asks) ex->asks->prev = &a->next;
        ex->asks = a;
        ex->asks_sent++;
        ex->asks_waiting++;
    }
    free(ptext);
    json_decref(p);
}

static uint64_t emit_tick(struct example *ex)
{
    char payload[96];
    int n = snprintf(payload, sizeof payload, "{\"n\":%llu}", (unsigned long long)(ex->ticks + 1));
    if (!ex->conn || lb_emit(ex->conn, NULL, "example:tick", NULL, payload, (size_t)n) != 0) return 0;
    return ++ex->ticks;
}

static void serve(struct example *ex, const struct lb_msg *m)
{
    struct lb_str method = lb_msg_field(m, "method");
    ex->calls++;
    if (is(method, "echo")) {
        struct lb_str params = lb_msg_raw(m, "params");
        lb_respond(ex->conn, m, params.p, params.n);
    } else if (is(method, "upper")) {
        do_upper(ex, m);
    } else if (is(method, "ask")) {
        do_ask(ex, m);
    } else if (is(method, "tick")) {
        uint64_t n = emit_tick(ex);
        respond_json(ex, m, json_pack("{s:I}", "n", (json_int_t)n));
    } else {
        /* Not reached: the bus answers METHOD_NOT_FOUND for methods we did
         * not register.  Every CALL must be answered all the same. */
        lb_respond_error(ex->conn, m, LB_E_METHOD_NOT_FOUND, "no such method");
    }
}

/* Every frame the bus sends our connection, from a later loop turn. */
static void on_message(void *ud, struct lb_conn *conn, const struct lb_msg *m)
{
    struct example *ex = ud;
    (void)conn;
    switch (lb_msg_type(m)) {
    case LB_MSG_CALL:
        serve(ex, m);
        break;
    case LB_MSG_REGISTER_ACK:
        lb_log(ex->ctx, LB_LOG_INFO, "service '%s' registered", ex->set.service);
        break;
    case LB_MSG_ERROR: {
        struct lb_str f = lb_msg_frame(m);
        lb_log(ex->ctx, LB_LOG_WARN, "the bus refused something: %.*s", (int)f.n, f.p);
        break;
    }
    default:
        break;
    }
}

/* The bus closed our connection (it is draining, say).  The handle is
 * gone when this returns; the tick timer goes too, since a pending timer
 * would hold up the drain. */
static void on_close(void *ud, struct lb_conn *conn, const char *why)
{
    (void)conn;
    struct example *ex = ud;
    lb_log(ex->ctx, LB_LOG_INFO, "in-process connection closed: %s", why);
    ex->conn = NULL;
    if (ex->tick) evtimer_del(ex->tick);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    emit_tick(arg);
}

static void tick_apply(struct example *ex)
{
    if (!ex->tick) ex->tick = event_new(lb_event_base(ex->ctx), -1, EV_PERSIST, on_tick, ex);
    if (!ex->tick) return;
    evtimer_del(ex->tick);
    if (!ex->set.tick_ms || !ex->conn) return;
    struct timeval tv = { (time_t)(ex->set.tick_ms / 1000), (suseconds_t)(ex->set.tick_ms % 1000 * 1000) };
    evtimer_add(ex->tick, &tv);
}

/* ---- example.health: a stats reader -------------------------------- */

static void service_into(void *ud, const struct lb_service_info *s)
{
    json_object_set_new(ud, s->name, json_pack("{s:I,s:I}", "instances", (json_int_t)s->instances,
                                               "calls", (json_int_t)s->calls_in));
}

/* lexbus.example.echo: JSON text in, JSON text out (a raw method): the
 * params come back exactly as written, digits and member order too. */
static int m_echo(void *ud, struct lb_conn *caller, struct lb_str params, struct lb_jw *result, struct lb_err *err)
{
    (void)ud; (void)caller; (void)err;
    lb_jw_raw(result, params.p, params.n);
    return 0;
}

static int m_health(void *ud, struct lb_conn *caller, json_t *params, json_t **result, struct lb_err *err)
{
    (void)caller; (void)params; (void)err;
    struct example *ex = ud;
    struct lb_stats_snapshot snap = { .size = sizeof snap };   /* the host fills what fits */
    lb_stats_snapshot(ex->ctx, &snap);
    json_t *services = json_object();
    lb_services_each(ex->ctx, service_into, services);
    *result = json_pack("{s:s,s:I,s:I,s:o}", "status", lb_bus_draining(ex->ctx) ? "draining" : "ok",
                        "uptime", (json_int_t)(snap.uptime_ms / 1000), "connections", (json_int_t)snap.conns_open,
                        "services", services);
    return 0;
}

/* ---- load, reload, unload ------------------------------------------ */

static int register_counters(struct example *ex)
{
    struct lb_plugin_ctx *ctx = ex->ctx;
    return lb_counter_register(ctx, "calls", "CALLs the service answered", &ex->calls, false) ||
           lb_counter_register(ctx, "asks", "calls made for echo.ask", &ex->asks_sent, false) ||
           lb_counter_register(ctx, "ask_errors", "echo.ask calls answered with an error", &ex->ask_errors, false) ||
           lb_counter_register(ctx, "ticks", "example:tick events emitted", &ex->ticks, false) ||
           lb_counter_register(ctx, "events_tagged", "EMIT payloads given a tag", &ex->tagged, false) ||
           lb_counter_register(ctx, "aliased", "messages re-addressed by alias.NAME", &ex->aliased, false) ||
           lb_counter_register(ctx, "asks_waiting", "echo.ask calls waiting for an answer", &ex->asks_waiting, true)
               ? -1 : 0;
}

static int open_service(struct example *ex)
{
    struct lb_local_opts opts = { .size = sizeof opts, .label = "example",
                                  /* The host vouches for it: no token needed in production. */
                                  .trusted = true };
    struct lb_local_ops ops = { .size = sizeof ops, .on_message = on_message, .on_close = on_close };
    ex->conn = lb_local_open(ex->ctx, &opts, &ops, ex);
    if (!ex->conn) return -1;
    /* The REGISTER is routed on the next loop turn; its REGISTER_ACK
     * comes to on_message. */
    return lb_local_register(ex->conn, ex->set.service, methods, sizeof methods / sizeof *methods);
}

static void ex_unload(struct lb_plugin_ctx *ctx)
{
    struct example *ex = lb_plugin_data(ctx);
    if (!ex) return;
    if (ex->tick) event_free(ex->tick);
    /* lb_local_close drops the callbacks of calls in flight: their asks
     * are freed here.  (A closed connection makes it a no-op.) */
    if (ex->conn) lb_local_close(ex->conn);
    while (ex->asks) ask_free(ex->asks);
    settings_free(&ex->set);
    if (ex->has_staged) settings_free(&ex->staged);
    lb_msg_free(ex->msg);
    free(ex);
    lb_plugin_set_data(ctx, NULL);
}

static int ex_load(struct lb_plugin_ctx *ctx)
{
    struct example *ex = calloc(1, sizeof *ex);
    if (!ex) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    ex->ctx = ctx;
    lb_plugin_set_data(ctx, ex);   /* unload() runs after a failed load() too */
    if (read_settings(ctx, &ex->set) < 0) return -1;
    if (lb_check_only(ctx)) return 0;   /* lexbusd -t: the settings are valid; open nothing */
    ex->msg = lb_msg_new();
    struct lb_hooks h = { .size = sizeof h, .rewrite = on_rewrite };
    if (lb_hooks_register(ctx, &h, ex) < 0 || register_counters(ex) < 0 ||
        lb_system_method_register(ctx, "example.health", 0, m_health, ex) < 0 ||
        lb_system_method_register_raw(ctx, "example.echo", 0, m_echo, ex) < 0)
        return -1;
    if (open_service(ex) < 0) {
        lb_plugin_fail(ctx, "cannot open the in-process connection for '%s'", ex->set.service);
        return -1;
    }
    tick_apply(ex);
    return 0;
}

/* Step 1: parse and check the new section; apply nothing yet. */
static int ex_reload(struct lb_plugin_ctx *ctx)
{
    struct example *ex = lb_plugin_data(ctx);
    struct settings next;
    if (read_settings(ctx, &next) < 0) {
        settings_free(&next);
        return -1;
    }
    if (strcmp(next.service, ex->set.service) != 0)
        lb_log(ctx, LB_LOG_WARN, "service = %s: the service keeps its name '%s' until restart", next.service,
               ex->set.service);
    next.service = ex->set.service;
    if (ex->has_staged) settings_free(&ex->staged);
    ex->staged = next;
    ex->has_staged = true;
    return 0;
}

/* Step 2: every plugin's step 1 (and [bus]) passed, or something failed. */
static void ex_reload_done(struct lb_plugin_ctx *ctx, bool commit)
{
    struct example *ex = lb_plugin_data(ctx);
    if (!ex->has_staged) return;
    if (commit) {
        struct settings old = ex->set;
        ex->set = ex->staged;
        ex->staged = old;   /* freed just below */
        if (ex->tick || ex->set.tick_ms) tick_apply(ex);
    }
    settings_free(&ex->staged);
    ex->has_staged = false;
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .size = sizeof(struct lb_plugin),
    .name = "example",
    .version = PACKAGE_VERSION,
    .load = ex_load,
    .unload = ex_unload,
    .reload = ex_reload,
    .reload_done = ex_reload_done,
};
