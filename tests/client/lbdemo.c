/* A service written only from client.h, driven by tests/client/test_client.py.
 *   lbdemo nested      caller -> svc-front.front -> svc-back.back; prints what back saw
 *   lbdemo events      subscribe a:*, emit with ack; prints the ack and the event
 *   lbdemo raw         the same with JSON text (lexbus_emit_json, lexbus_on_raw); also
 *                      prints whether invalid JSON text was refused
 *   lbdemo reconnect   registers "phoenix" (method ping, events r:>), prints each state change
 *   lbdemo lost        calls sink.hold and prints how the call ended (bus stopped)
 *   lbdemo disconnect  calls sink.hold, disconnects, prints how the call ended
 *   lbdemo values      registers "decoder" (method take, events v:*, an error handler), calls
 *                      tester.give; prints what each handler got (values it cannot represent)
 *   lbdemo victim      registers "victim", prints its pid, calls sink.hold after a line on stdin
 *   lbdemo crud        lexbus_crud: create, read, update and delete of "posts", then a read of
 *                      "ghosts"; prints each answer (needs [plugin lua] and a posts service)
 * Output: one JSON line per fact, flushed. */
#include <signal.h>
#include <stdarg.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include <lexbus/client.h>

static struct event_base *base;

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static struct lexbus_client *client(const char *name, unsigned backoff_ms)
{
    struct lexbus_options o = { .service = name, .reconnect_base_ms = backoff_ms, .reconnect_max_ms = 500 };
    struct lexbus_client *c = lexbus_new(base, &o);
    if (!c) { out("{\"fatal\":\"lexbus_new\"}"); exit(1); }
    return c;
}

/* -- nested -- */
static void back(struct lexbus_client *c, const char *m, json_t *params, struct lexbus_reply *r, void *ud)
{
    (void)c; (void)m; (void)params; (void)ud;
    lexbus_reply_ok(r, json_incref(lexbus_reply_context(r)));
}

struct fwd { struct lexbus_reply *r; };
static void front_done(struct lexbus_client *c, const struct lexbus_error *err, json_t *result, void *ud)
{
    (void)c;
    struct lexbus_reply *r = ud;
    if (err) lexbus_reply_error(r, err->code, err->message);
    else lexbus_reply_ok(r, json_incref(result));
}

static void front(struct lexbus_client *c, const char *m, json_t *params, struct lexbus_reply *r, void *ud)
{
    (void)m; (void)ud;
    if (lexbus_call(c, "svc-back", "back", params, 5000, r, front_done, r) != 0)
        lexbus_reply_error(r, "NOT_CONNECTED", "front: not ready");
}

static void print_result(struct lexbus_client *c, const struct lexbus_error *err, json_t *result, void *ud)
{
    (void)c; (void)ud;
    if (err) out("{\"error\":\"%s\",\"message\":\"%s\"}", err->code, err->message);
    else {
        char *s = json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY);
        out("{\"result\":%s}", s);
        free(s);
    }
    event_base_loopbreak(base);
}

static int ready_count;
static void when_ready(struct lexbus_client *c, bool ready, const struct lexbus_error *why, void *ud)
{
    (void)why;
    void (*next)(struct lexbus_client *) = ud;
    if (ready && ++ready_count == 3 && next) next(c);
}

static void start_nested(struct lexbus_client *caller)
{
    json_t *p = json_pack("{s:i}", "n", 1);
    lexbus_call(caller, "svc-front", "front", p, 5000, NULL, print_result, NULL);
    json_decref(p);
}

/* -- events -- */
static void print_error(struct lexbus_client *c, const struct lexbus_error *err, void *ud)
{
    (void)c; (void)ud;
    out("{\"error\":\"%s\"}", err->code);
}

static void on_raw(struct lexbus_client *c, const char *ev, const char *from, const char *json, size_t len,
                   void *ud)
{
    (void)ud;
    json_t *text = json_stringn(json, len);   /* the payload's JSON text, as a JSON string */
    char *s = json_dumps(text, JSON_ENCODE_ANY);
    out("{\"event\":\"%s\",\"from\":\"%s\",\"text\":%s}", ev, from, s);
    free(s);
    json_decref(text);
    lexbus_stop(c);
}

static void on_event(struct lexbus_client *c, const char *ev, const char *from, json_t *payload, void *ud)
{
    (void)c; (void)ud;
    char *s = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    out("{\"event\":\"%s\",\"from\":\"%s\",\"payload\":%s}", ev, from, s);
    free(s);
    lexbus_stop(c);
}

static void on_ack(struct lexbus_client *c, const struct lexbus_error *err, long delivered, void *ud)
{
    (void)c; (void)ud;
    out("{\"ack\":%ld,\"error\":%s}", delivered, err ? "true" : "false");
}

static void start_events(struct lexbus_client *c)
{
    (void)c;
}

/* -- reconnect -- */
static void ping(struct lexbus_client *c, const char *m, json_t *params, struct lexbus_reply *r, void *ud)
{
    (void)c; (void)m; (void)params; (void)ud;
    lexbus_reply_ok(r, json_string("pong"));
}

static void print_state(struct lexbus_client *c, bool ready, const struct lexbus_error *why, void *ud)
{
    (void)c; (void)ud;
    out("{\"ready\":%s,\"why\":\"%s\"}", ready ? "true" : "false", why ? why->code : "");
}

static void on_r(struct lexbus_client *c, const char *ev, const char *from, json_t *payload, void *ud)
{
    (void)c; (void)from; (void)payload; (void)ud;
    out("{\"event\":\"%s\"}", ev);
}

static void stop(evutil_socket_t s, short w, void *a) { (void)s; (void)w; (void)a; event_base_loopbreak(base); }

/* -- lost / disconnect -- */
static struct lexbus_client *g_hold;
static void hold_ready(struct lexbus_client *c, bool ready, const struct lexbus_error *why, void *ud)
{
    (void)why;
    const char *mode = ud;
    if (!ready) return;
    lexbus_call(c, "sink", "hold", NULL, 20000, NULL, print_result, NULL);
    out("{\"called\":true}");
    if (!strcmp(mode, "disconnect")) lexbus_disconnect(c);
}

/* -- values -- */
/* One JSON line: obj (stolen), plus "slen" when obj's "got" holds a string
 * "s" (its length, NULs included). */
static void out_json(json_t *obj)
{
    json_t *s = json_object_get(json_object_get(obj, "got"), "s");
    if (json_is_string(s)) json_object_set_new(obj, "slen", json_integer((json_int_t)json_string_length(s)));
    char *text = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
    out("%s", text);
    free(text);
    json_decref(obj);
}

static void take(struct lexbus_client *c, const char *m, json_t *params, struct lexbus_reply *r, void *ud)
{
    (void)c; (void)m; (void)ud;
    out_json(json_pack("{s:s,s:O}", "call", "take", "got", params));
    lexbus_reply_ok(r, json_incref(params));
}

static void on_value(struct lexbus_client *c, const char *ev, const char *from, json_t *payload, void *ud)
{
    (void)c; (void)from; (void)ud;
    out_json(json_pack("{s:s,s:O}", "event", ev, "got", payload));
}

static void print_error_msg(struct lexbus_client *c, const struct lexbus_error *err, void *ud)
{
    (void)c; (void)ud;
    out_json(json_pack("{s:s,s:s}", "error", err->code, "message", err->message));
}

static void print_outcome(struct lexbus_client *c, const struct lexbus_error *err, json_t *result, void *ud)
{
    (void)ud;
    if (err) print_error_msg(c, err, NULL);
    else out_json(json_pack("{s:O}", "result", result));
}

static void values_ready(struct lexbus_client *c, bool ready, const struct lexbus_error *why, void *ud)
{
    (void)why; (void)ud;
    if (!ready) return;
    out("{\"ready\":true}");
    lexbus_call(c, "tester", "give", NULL, 5000, NULL, print_outcome, NULL);
}

/* -- victim -- */
static int victim(void)
{
    struct lexbus_error err;
    struct lexbus_options o = { .service = "victim" };
    struct lexbus_client *c = lexbus_connect_blocking(&o, 5000, &err);
    if (!c) { out("{\"fatal\":\"%s\"}", err.code); return 1; }
    out("{\"ready\":true,\"pid\":%ld}", (long)getpid());
    char go[8];
    json_t *result = NULL;
    if (!fgets(go, sizeof go, stdin)) { lexbus_free(c); return 1; }
    if (lexbus_call_blocking(c, "sink", "hold", NULL, 5000, &result, &err) == 0) print_outcome(c, NULL, result, NULL);
    else print_error_msg(c, &err, NULL);
    json_decref(result);
    lexbus_free(c);
    return 0;
}

/* A "listener" and an "emitter", each on its own private loop. */
static int connect_pair(struct lexbus_client *cs[2], struct lexbus_error *err)
{
    struct lexbus_options o = { .service = "listener" }, o2 = { .service = "emitter" };
    cs[0] = lexbus_connect_blocking(&o, 5000, err);
    cs[1] = cs[0] ? lexbus_connect_blocking(&o2, 5000, err) : NULL;
    return cs[0] && cs[1] ? 0 : -1;
}

/* -- crud -- */
static void crud_one(struct lexbus_client *c, const char *op, const char *resource, const char *key,
                     const char *data, const char *query)
{
    struct lexbus_crud req = { .op = op, .resource = resource, .key = key };
    req.data = data ? json_loads(data, 0, NULL) : NULL;
    req.query = query ? json_loads(query, 0, NULL) : NULL;
    json_t *result = NULL;
    struct lexbus_error err;
    if (lexbus_crud_blocking(c, &req, 5000, &result, &err) == 0) {
        char *t = json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY);
        out("{\"op\":\"%s\",\"result\":%s}", op, t);
        free(t);
        json_decref(result);
    } else {
        json_t *e = json_pack("{s:s,s:s,s:s}", "op", op, "error", err.code, "message", err.message);
        char *t = json_dumps(e, JSON_COMPACT);
        out("%s", t);
        free(t);
        json_decref(e);
    }
    json_decref(req.data);
    json_decref(req.query);
}

static int run_crud(void)
{
    struct lexbus_options o = { .service = "crud-client" };
    struct lexbus_error err;
    struct lexbus_client *c = lexbus_connect_blocking(&o, 5000, &err);
    if (!c) { out("{\"fatal\":\"%s\"}", err.code); return 1; }
    crud_one(c, "create", "posts", NULL, "{\"content\":\"hi\"}", NULL);
    crud_one(c, "read", "posts", NULL, NULL, "{\"userId\":\"1\"}");
    crud_one(c, "update", "posts", "k1", "{\"content\":\"x\"}", NULL);
    crud_one(c, "delete", "posts", "k1", NULL, NULL);
    crud_one(c, "read", "ghosts", NULL, NULL, NULL);
    lexbus_free(c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    base = event_base_new();
    struct event *st = evsignal_new(base, SIGTERM, stop, NULL);
    evsignal_add(st, NULL);
    const char *mode = argv[1];
    struct lexbus_client *cs[3] = { 0 };
    if (!strcmp(mode, "crud")) {
        int rc = run_crud();
        event_free(st);
        event_base_free(base);
        return rc;
    }
    if (!strcmp(mode, "nested")) {
        cs[0] = client("svc-back", 50);
        cs[1] = client("svc-front", 50);
        cs[2] = client("caller", 50);
        lexbus_add_method(cs[0], "back", back, NULL);
        lexbus_add_method(cs[1], "front", front, NULL);
        lexbus_on_state(cs[0], when_ready, NULL);
        lexbus_on_state(cs[1], when_ready, NULL);
        lexbus_on_state(cs[2], when_ready, (void *)start_nested);
    } else if (!strcmp(mode, "events")) {
        (void)start_events;
        struct lexbus_error err;
        if (connect_pair(cs, &err) != 0) { out("{\"fatal\":\"%s\"}", err.code); return 1; }
        lexbus_on(cs[0], "a:*", on_event, NULL);
        long delivered = -1;
        /* The subscription travels on another connection: wait until the
         * bus has it (a blocking emit on the listener's own connection). */
        lexbus_emit_blocking(cs[0], "sync:x", NULL, NULL, NULL, 5000, &err);
        json_t *p = json_pack("{s:s}", "hello", "world");
        if (lexbus_emit_blocking(cs[1], "a:b", p, NULL, &delivered, 5000, &err) == 0) out("{\"ack\":%ld}", delivered);
        else out("{\"ackerror\":\"%s\"}", err.code);
        json_decref(p);
        lexbus_run(cs[0]);   /* until the event arrives */
        (void)on_ack;
        lexbus_free(cs[0]);
        lexbus_free(cs[1]);
        event_free(st);
        event_base_free(base);
        return 0;
    } else if (!strcmp(mode, "raw")) {
        struct lexbus_error err;
        if (connect_pair(cs, &err) != 0) { out("{\"fatal\":\"%s\"}", err.code); return 1; }
        lexbus_on_raw(cs[0], "a:*", on_raw, NULL);
        lexbus_emit_blocking(cs[0], "sync:x", NULL, NULL, NULL, 5000, &err);
        static const char *const bad[] = { "", "{", "[1,]", "\"\\x\"", "1 2", "{\"a\":1}}", "nul" };
        int refused = 0;
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
            refused += lexbus_emit_json(cs[1], "a:b", bad[i], strlen(bad[i]), NULL, NULL, NULL) == -1;
        out("{\"refused\":%d,\"of\":%zu}", refused, sizeof bad / sizeof *bad);
        /* A fire-and-forget EMIT the bus refuses reaches the error handler. */
        lexbus_on_error(cs[1], print_error, NULL);
        lexbus_emit_json(cs[1], "a:b", "1", 1, "nobody", NULL, NULL);
        const char *good = " {\"k\": [1, 2.5e3, \"\\u00e9\"]} ";
        lexbus_emit_json(cs[1], "a:b", good, strlen(good), NULL, NULL, NULL);
        /* The emitter's loop must run to send it: a blocking emit behind it
         * returns once the bus has routed both (frames are handled in order). */
        lexbus_emit_blocking(cs[1], "sync:y", NULL, NULL, NULL, 5000, &err);
        lexbus_run(cs[0]);   /* until the event arrives */
        lexbus_free(cs[0]);
        lexbus_free(cs[1]);
        event_free(st);
        event_base_free(base);
        return 0;
    } else if (!strcmp(mode, "reconnect")) {
        cs[0] = client("phoenix", 50);
        lexbus_add_method(cs[0], "ping", ping, NULL);
        lexbus_on(cs[0], "r:>", on_r, NULL);
        lexbus_on_state(cs[0], print_state, NULL);
    } else if (!strcmp(mode, "values")) {
        cs[0] = client("decoder", 50);
        lexbus_add_method(cs[0], "take", take, NULL);
        lexbus_on(cs[0], "v:*", on_value, NULL);
        lexbus_on_error(cs[0], print_error_msg, NULL);
        lexbus_on_state(cs[0], values_ready, NULL);
    } else if (!strcmp(mode, "victim")) {
        int rc = victim();
        event_free(st);
        event_base_free(base);
        return rc;
    } else if (!strcmp(mode, "lost") || !strcmp(mode, "disconnect")) {
        struct lexbus_options o = { .service = "holder", .no_reconnect = true };
        cs[0] = g_hold = lexbus_new(base, &o);
        lexbus_on_state(cs[0], hold_ready, (void *)mode);
    } else {
        return 2;
    }
    for (int i = 0; i < 3; i++) if (cs[i]) lexbus_connect(cs[i]);
    event_base_dispatch(base);
    for (int i = 0; i < 3; i++) lexbus_free(cs[i]);
    event_free(st);
    event_base_free(base);
    return 0;
}
