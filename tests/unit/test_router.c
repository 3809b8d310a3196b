/*
 * The router against a fake in-process transport (fakebus.c): every core
 * module but main.c, no daemon, no sockets.  Registration and its
 * refusals, calls and their RESPONSE, every error code the router sends,
 * one call id from two callers at one callee, RESPONSE forwarding,
 * fan-out with patterns, back-pressure, stream input through
 * lb_conn_feed, and in-process connections (lb_local_*, lb_call).
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tap.h"
#include "fakebus.h"
#include "conn.h"
#include "envelope.h"
#include "plugin_host.h"
#include "state.h"
#include "stats.h"
#include "util.h"

static bool is_type(json_t *m, const char *type) { return m && !strcmp(jstr(m, "type"), type); }

/* An error RESPONSE (for a call) with this id and code. */
static bool call_error(json_t *m, const char *id, const char *code)
{
    return is_type(m, "RESPONSE") && !strcmp(jstr(m, "id"), id) && !strcmp(jstr(m, "status"), "error") &&
           !strcmp(jerr(m), code);
}

static bool error_frame(json_t *m, const char *code)
{
    return is_type(m, "ERROR") && !strcmp(jerr(m), code);
}

static struct fake *registered(const char *name, const char *methods)
{
    struct fake *f = fake_connect();
    if (!f->conn || !fake_register(f, name, methods)) {
        printf("# could not register %s\n", name);
        abort();
    }
    return f;
}

static bool has_frame(void *ud) { struct fake *f = ud; return f->next < f->n; }

/* ---- registration -------------------------------------------------- */

static void test_register(void)
{
    struct fake *a = fake_connect();
    CHECK(a->conn != NULL, "lb_conn_new on the fake transport");
    fake_input(a, "{\"type\":\"REGISTER\",\"serviceName\":\"svc-a\",\"methods\":[\"m1\",\"m2\"]}");
    json_t *ack = fake_next(a);
    CHECK(is_type(ack, "REGISTER_ACK") && !strcmp(jstr(ack, "serviceName"), "svc-a") &&
          json_integer_value(json_object_get(ack, "heartbeatInterval")) == (json_int_t)g_bus.set.heartbeat_ms,
          "REGISTER -> REGISTER_ACK with the name and heartbeatInterval");
    CHECK(lb_service_exists(NULL, "svc-a", 5), "the service exists");
    fake_input(a, "{\"type\":\"REGISTER\",\"serviceName\":\"svc-a\",\"methods\":[\"m1\",\"m2\",\"m3\"]}");
    CHECK(is_type(fake_next(a), "REGISTER_ACK"), "a second REGISTER under the same name updates it");
    fake_input(a, "{\"type\":\"REGISTER\",\"serviceName\":\"svc-b\"}");
    CHECK(error_frame(fake_next(a), LB_E_FORBIDDEN), "...under another name: FORBIDDEN");

    struct fake *b = fake_connect();
    static const struct { const char *frame, *code, *what; } bad[] = {
        { "{\"type\":\"REGISTER\",\"serviceName\":\"bad name\"}", LB_E_INVALID_MESSAGE, "an invalid name" },
        { "{\"type\":\"REGISTER\"}", LB_E_INVALID_MESSAGE, "no serviceName" },
        { "{\"type\":\"REGISTER\",\"serviceName\":\"lexbus\"}", LB_E_FORBIDDEN, "the bus's own name" },
        { "{\"type\":\"REGISTER\",\"serviceName\":\"broadcast\"}", LB_E_FORBIDDEN, "\"broadcast\"" },
        { "{\"type\":\"REGISTER\",\"serviceName\":\"x\",\"methods\":\"m\"}", LB_E_INVALID_MESSAGE, "methods not an array" },
        { "{\"type\":\"REGISTER\",\"serviceName\":\"x\",\"methods\":[\"a b\"]}", LB_E_INVALID_MESSAGE, "a bad method name" },
        { "{\"type\":\"REGISTER\",\"serviceName\":\"x\",\"subscribe\":[\"a::b\"]}", LB_E_INVALID_MESSAGE, "a bad pattern" },
        { "{\"type\":\"REGISTER\",\"serviceName\":\"x\",\"metadata\":[]}", LB_E_INVALID_MESSAGE, "metadata not an object" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fake_input(b, bad[i].frame);
        CHECK(error_frame(fake_next(b), bad[i].code), "REGISTER with %s: %s", bad[i].what, bad[i].code);
    }
    CHECK(b->conn && !lb_conn_service(b->conn), "refused REGISTERs leave the connection unregistered and open");
    fake_input(b, "{\"type\":\"CALL\",\"id\":\"n1\",\"to\":\"svc-a\",\"method\":\"m1\"}");
    CHECK(call_error(fake_next(b), "n1", LB_E_NOT_REGISTERED), "a CALL before REGISTER: NOT_REGISTERED as its RESPONSE");
    fake_input(b, "{\"type\":\"EMIT\",\"event\":\"e\"}");
    CHECK(error_frame(fake_next(b), LB_E_NOT_REGISTERED), "an EMIT before REGISTER: ERROR NOT_REGISTERED");
    fake_input(b, "{\"type\":\"HEARTBEAT\",\"id\":\"h1\"}");
    json_t *hb = fake_next(b);
    CHECK(is_type(hb, "HEARTBEAT") && !strcmp(jstr(hb, "id"), "h1"), "a HEARTBEAT probe is answered before REGISTER");
    CHECK(fake_next(a) == NULL && fake_next(b) == NULL, "nothing else was sent");
    fake_free(a);
    CHECK(!lb_service_exists(NULL, "svc-a", 5), "the service goes with its connection");
    fake_free(b);
}

/* ---- calls --------------------------------------------------------- */

static void test_call(void)
{
    struct fake *a = registered("svc-a", "[\"m1\"]"), *c = registered("caller", NULL);
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"c1\",\"to\":\"svc-a\",\"method\":\"m1\",\"params\":{\"x\":1}}");
    json_t *call = fake_next(a), *ctx = json_object_get(call, "context");
    CHECK(is_type(call, "CALL") && !strcmp(jstr(call, "id"), "c1") && !strcmp(jstr(call, "from"), "caller") &&
          json_integer_value(json_object_get(json_object_get(call, "params"), "x")) == 1,
          "the callee gets the CALL with the caller's id and name");
    CHECK(json_integer_value(json_object_get(ctx, "depth")) == 1 && json_is_array(json_object_get(ctx, "chain")) &&
          json_integer_value(json_object_get(ctx, "deadline")) > (json_int_t)now_ms(),
          "...and a context the bus started (depth 1, chain, deadline)");
    fake_input(a, "{\"type\":\"RESPONSE\",\"id\":\"c1\",\"status\":\"success\",\"data\":5}");
    json_t *r = fake_next(c);
    CHECK(is_type(r, "RESPONSE") && !strcmp(jstr(r, "id"), "c1") && !strcmp(jstr(r, "from"), "svc-a") &&
          !strcmp(jstr(r, "status"), "success") && json_integer_value(json_object_get(r, "data")) == 5,
          "the caller gets its RESPONSE");
    fake_input(a, "{\"type\":\"RESPONSE\",\"id\":\"c1\",\"status\":\"success\",\"data\":6}");
    CHECK(fake_next(c) == NULL && g_stats.calls_late == 1, "a second RESPONSE is dropped (counted late)");
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"p1\",\"to\":\"lexbus\",\"method\":\"ping\"}");
    r = fake_next(c);
    CHECK(is_type(r, "RESPONSE") && json_is_true(json_object_get(json_object_get(r, "data"), "pong")),
          "the bus's own service answers (lexbus.ping)");
    fake_free(a);
    fake_free(c);
}

/* Every code the router sends about a message. */
static void test_errors(void)
{
    struct fake *a = registered("svc-a", "[\"m1\"]"), *c = registered("caller", NULL);
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"e1\",\"to\":\"nobody\",\"method\":\"m\"}");
    CHECK(call_error(fake_next(c), "e1", LB_E_SERVICE_NOT_FOUND), "SERVICE_NOT_FOUND");
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"e2\",\"to\":\"svc-a\",\"method\":\"m9\"}");
    CHECK(call_error(fake_next(c), "e2", LB_E_METHOD_NOT_FOUND), "METHOD_NOT_FOUND");
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"e3\",\"to\":\"svc-a\",\"method\":\"m1\",\"context\":{\"deadline\":1000}}");
    CHECK(call_error(fake_next(c), "e3", LB_E_DEADLINE_EXCEEDED) && fake_next(a) == NULL,
          "DEADLINE_EXCEEDED for a deadline in the past (never forwarded)");
    char buf[256];
    snprintf(buf, sizeof buf, "{\"type\":\"CALL\",\"id\":\"e4\",\"to\":\"svc-a\",\"method\":\"m1\",\"context\":{\"depth\":%lld}}",
             g_bus.set.max_depth + 1);
    fake_input(c, buf);
    CHECK(call_error(fake_next(c), "e4", LB_E_MAX_DEPTH_EXCEEDED), "MAX_DEPTH_EXCEEDED past max_depth");
    snprintf(buf, sizeof buf, "{\"type\":\"CALL\",\"id\":\"e5\",\"to\":\"svc-a\",\"method\":\"m1\",\"context\":{\"depth\":%lld}}",
             g_bus.set.max_depth);
    fake_input(c, buf);
    CHECK(is_type(fake_next(a), "CALL") && fake_next(c) == NULL, "depth = max_depth is still forwarded");
    fake_input(a, "{\"type\":\"RESPONSE\",\"id\":\"e5\",\"data\":null}");
    fake_skip(c);
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"e6\",\"from\":\"svc-a\",\"to\":\"svc-a\",\"method\":\"m1\"}");
    CHECK(call_error(fake_next(c), "e6", LB_E_FORBIDDEN) && fake_next(a) == NULL, "FORBIDDEN for a `from` not its own");
    fake_input(c, "{\"type\":\"EMIT\",\"event\":\"x\",\"from\":\"svc-a\"}");
    CHECK(error_frame(fake_next(c), LB_E_FORBIDDEN), "...for an EMIT too");
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"e7\",\"to\":\"svc-a\",\"method\":\"m1\",\"token\":{\"admin\":true}}");
    CHECK(call_error(fake_next(c), "e7", LB_E_UNAUTHENTICATED), "UNAUTHENTICATED for a token that is no string");

    static const struct { const char *frame, *id, *what; } invalid[] = {
        { "{\"type\":\"CALL\",\"id\":\"i1\",\"method\":\"m1\"}", "i1", "a CALL without `to`" },
        { "{\"type\":\"CALL\",\"id\":\"i2\",\"to\":\"svc-a\"}", "i2", "a CALL without `method`" },
        { "{\"type\":\"CALL\",\"id\":\"i3\",\"to\":\"svc-a\",\"method\":\"m1\",\"context\":[]}", "i3", "context not an object" },
        { "{\"type\":\"CALL\",\"id\":\"i4\",\"to\":\"svc-a\",\"to\":\"x\",\"method\":\"m1\"}", "i4", "a member given twice" },
        { "{\"type\":\"CALL\",\"id\":\"i5\",\"to\":\"svc-a\",\"method\":\"m1\",\"context\":{\"depth\":\"1\"}}", "i5", "a depth that is no number" },
    };
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) {
        fake_input(c, invalid[i].frame);
        CHECK(call_error(fake_next(c), invalid[i].id, LB_E_INVALID_MESSAGE), "INVALID_MESSAGE as a RESPONSE: %s",
              invalid[i].what);
    }
    static const struct { const char *frame, *what; } invalid_err[] = {
        { "{\"type\":\"CALL\",\"to\":\"svc-a\",\"method\":\"m1\"}", "a CALL without an id" },
        { "{\"type\":", "a frame that is not JSON" },
        { "[1,2]", "JSON that is not an object" },
        { "{\"type\":\"NOPE\"}", "an unknown type" },
        { "{\"type\":\"EVENT\",\"event\":\"x\"}", "a type the bus sends, not receives" },
        { "{\"type\":\"RESPONSE\",\"status\":\"success\"}", "a RESPONSE without an id" },
        { "{\"type\":\"EMIT\",\"event\":\"a::b\"}", "an EMIT with a bad event name" },
        { "{\"type\":\"SUBSCRIBE\",\"events\":\"x\"}", "SUBSCRIBE without an array" },
    };
    for (size_t i = 0; i < sizeof invalid_err / sizeof *invalid_err; i++) {
        fake_input(c, invalid_err[i].frame);
        CHECK(error_frame(fake_next(c), LB_E_INVALID_MESSAGE), "INVALID_MESSAGE as an ERROR: %s", invalid_err[i].what);
    }
    CHECK(c->conn != NULL && fake_next(a) == NULL, "refused messages reach nobody and close nothing");
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"d1\",\"to\":\"svc-a\",\"method\":\"m1\"}");
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"d1\",\"to\":\"svc-a\",\"method\":\"m1\"}");
    CHECK(call_error(fake_next(c), "d1", LB_E_INVALID_MESSAGE), "a second call with an id still in flight: INVALID_MESSAGE");
    fake_skip(a);

    /* SERVICE_UNAVAILABLE: the callee goes away with the call unanswered. */
    fake_free(a);
    CHECK(call_error(fake_next(c), "d1", LB_E_SERVICE_UNAVAILABLE), "SERVICE_UNAVAILABLE when the callee closes");

    /* TIMEOUT: call_timeout, or a nearer deadline. */
    a = registered("svc-a", "[\"m1\"]");
    uint64_t saved = g_bus.set.call_timeout_ms;
    g_bus.set.call_timeout_ms = 40;
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"t1\",\"to\":\"svc-a\",\"method\":\"m1\"}");
    uint64_t t0 = mono_us();
    fakebus_run(3000, has_frame, c);
    CHECK(call_error(fake_next(c), "t1", LB_E_TIMEOUT) && mono_us() - t0 >= 35000, "TIMEOUT after call_timeout");
    g_bus.set.call_timeout_ms = saved;
    snprintf(buf, sizeof buf, "{\"type\":\"CALL\",\"id\":\"t2\",\"to\":\"svc-a\",\"method\":\"m1\",\"context\":{\"deadline\":%llu}}",
             (unsigned long long)(now_ms() + 40));
    fake_input(c, buf);
    fakebus_run(3000, has_frame, c);
    CHECK(call_error(fake_next(c), "t2", LB_E_TIMEOUT), "TIMEOUT at a deadline nearer than call_timeout");
    fake_skip(a);
    fake_input(a, "{\"type\":\"RESPONSE\",\"id\":\"t1\",\"data\":1}");
    CHECK(fake_next(c) == NULL, "the callee's late answer is dropped");

    /* Frame-level refusals close the stream. */
    struct fake *x = registered("x", NULL);
    CHECK(fake_input(x, "") == -1 && x->closed && error_frame(fake_next(x), LB_E_BAD_FRAME), "an empty frame: BAD_FRAME and a close");
    fake_free(x);
    x = registered("x", NULL);
    size_t big = g_bus.set.max_frame + 1;
    char *huge = xmalloc(big + 1);
    memset(huge, ' ', big);
    huge[big] = 0;
    CHECK(fake_input(x, huge) == -1 && x->closed && error_frame(fake_next(x), LB_E_PAYLOAD_TOO_LARGE),
          "a frame past max_frame: PAYLOAD_TOO_LARGE and a close");
    free(huge);
    fake_free(x);
    fake_free(a);
    fake_free(c);
}

/* Issue 8 item 7: one call id from two callers at one callee. */
static void test_same_id_two_callers(void)
{
    struct fake *a = registered("svc-a", NULL), *c = registered("c", NULL), *d = registered("d", NULL);
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"same\",\"to\":\"svc-a\",\"method\":\"m\"}");
    fake_input(d, "{\"type\":\"CALL\",\"id\":\"same\",\"to\":\"svc-a\",\"method\":\"m\"}");
    json_t *k1 = fake_next(a), *k2 = fake_next(a);
    const char *w1 = jstr(k1, "id"), *w2 = jstr(k2, "id");
    CHECK(!strcmp(w1, "same") && strcmp(w2, "same") != 0 && *w2 && !strcmp(jstr(k2, "from"), "d"),
          "the callee sees two different ids (the second is the bus's)");
    char buf[256];
    snprintf(buf, sizeof buf, "{\"type\":\"RESPONSE\",\"id\":\"%s\",\"data\":\"for-d\"}", w2);
    fake_input(a, buf);
    snprintf(buf, sizeof buf, "{\"type\":\"RESPONSE\",\"id\":\"%s\",\"data\":\"for-c\"}", w1);
    fake_input(a, buf);
    json_t *rc = fake_next(c), *rd = fake_next(d);
    CHECK(!strcmp(jstr(rc, "id"), "same") && !strcmp(jstr(rc, "data"), "for-c") && !strcmp(jstr(rc, "to"), "c"),
          "the first caller gets its own answer under its own id");
    CHECK(!strcmp(jstr(rd, "id"), "same") && !strcmp(jstr(rd, "data"), "for-d") && !strcmp(jstr(rd, "to"), "d"),
          "the second caller gets its own answer under its own id");
    CHECK(fake_next(c) == NULL && fake_next(d) == NULL, "one RESPONSE each");
    fake_free(a);
    fake_free(c);
    fake_free(d);
}

/* Issue 8 item 8: what a callee's RESPONSE may not carry to the caller. */
static void test_response_forwarding(void)
{
    struct fake *a = registered("svc-a", NULL), *c = registered("c", NULL), *other = registered("other", NULL);
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"f1\",\"to\":\"svc-a\",\"method\":\"m\"}");
    fake_skip(a);
    fake_input(other, "{\"type\":\"RESPONSE\",\"id\":\"f1\",\"data\":\"not yours\"}");
    CHECK(fake_next(c) == NULL, "a RESPONSE from a connection the call did not go to is dropped");
    fake_input(a, "{\"type\":\"RESPONSE\",\"id\":\"f1\",\"to\":\"other\",\"token\":\"forged\","
                  "\"auth\":{\"admin\":true},\"status\":\"success\",\"data\":1,\"extra\":\"kept\"}");
    json_t *r = fake_next(c);
    CHECK(is_type(r, "RESPONSE") && !strcmp(jstr(r, "to"), "c") && !strcmp(jstr(r, "from"), "svc-a"),
          "a wrong `to` is rewritten to the caller, `from` is the callee");
    CHECK(!json_object_get(r, "token") && !json_object_get(r, "auth"), "a forged token and auth are stripped");
    CHECK(json_integer_value(json_object_get(r, "data")) == 1 && !strcmp(jstr(r, "extra"), "kept"),
          "data and other members are passed on");
    CHECK(fake_next(other) == NULL, "the `to` it named got nothing");
    fake_free(a);
    fake_free(c);
    fake_free(other);
}

/* ---- events -------------------------------------------------------- */

static int events_named(struct fake *f, const char *event)
{
    int n = 0;
    json_t *m;
    while ((m = fake_next(f)))
        if (is_type(m, "EVENT") && !strcmp(jstr(m, "event"), event)) n++;
    return n;
}

static json_int_t emit_delivered(struct fake *p, const char *event)
{
    char buf[256];
    snprintf(buf, sizeof buf, "{\"type\":\"EMIT\",\"id\":\"e\",\"event\":\"%s\",\"payload\":{\"k\":1},\"ack\":true}", event);
    fake_input(p, buf);
    json_t *ack = fake_next(p);
    return is_type(ack, "ACK") ? json_integer_value(json_object_get(ack, "delivered")) : -1;
}

static void test_fanout(void)
{
    struct fake *s1 = registered("s1", NULL), *s2 = registered("s2", NULL), *s3 = registered("s3", NULL);
    struct fake *p = registered("pub", NULL);
    fake_input(s1, "{\"type\":\"SUBSCRIBE\",\"id\":\"s\",\"events\":[\"orders:*\"]}");
    json_t *ack = fake_next(s1);
    CHECK(is_type(ack, "ACK") && json_integer_value(json_object_get(ack, "subscriptions")) == 1, "SUBSCRIBE -> ACK with the count");
    fake_input(s2, "{\"type\":\"SUBSCRIBE\",\"events\":[\"orders:>\",\"orders:*\"]}");
    fake_input(s3, "{\"type\":\"SUBSCRIBE\",\"events\":[\"other\",\"orders:new\"]}");
    CHECK(fake_next(s2) == NULL, "SUBSCRIBE without an id: no ACK");
    CHECK(emit_delivered(p, "orders:new") == 3, "orders:new reaches orders:*, orders:> and the exact name");
    json_t *ev = fake_next(s1);
    CHECK(is_type(ev, "EVENT") && !strcmp(jstr(ev, "from"), "pub") && !json_object_get(ev, "to") &&
          json_integer_value(json_object_get(json_object_get(ev, "payload"), "k")) == 1,
          "the EVENT names its sender and carries the payload (no `to`: a broadcast)");
    CHECK(events_named(s2, "orders:new") == 1 && events_named(s3, "orders:new") == 1,
          "once per subscriber, however many of its patterns match");
    CHECK(emit_delivered(p, "orders:new:eu") == 1 && events_named(s2, "orders:new:eu") == 1 && !fake_next(s1) && !fake_next(s3),
          "orders:new:eu: only orders:> (a final > is one or more segments)");
    CHECK(emit_delivered(p, "orders") == 0 && !fake_next(s1) && !fake_next(s2), "orders alone: no subscriber");
    fake_input(s2, "{\"type\":\"UNSUBSCRIBE\",\"events\":[\"orders:>\"]}");
    CHECK(emit_delivered(p, "orders:new:eu") == 0 && emit_delivered(p, "orders:x") == 2, "UNSUBSCRIBE drops one pattern only");
    fake_skip(s1);
    fake_skip(s2);
    fake_input(p, "{\"type\":\"EMIT\",\"event\":\"direct\",\"to\":\"s3\",\"payload\":2}");
    ev = fake_next(s3);
    CHECK(is_type(ev, "EVENT") && !strcmp(jstr(ev, "to"), "s3") && !fake_next(s1) && !fake_next(s2),
          "an EMIT to a service reaches that service only");
    fake_input(p, "{\"type\":\"EMIT\",\"event\":\"direct\",\"to\":\"nobody\"}");
    CHECK(error_frame(fake_next(p), LB_E_SERVICE_NOT_FOUND), "an EMIT to a missing service: SERVICE_NOT_FOUND");
    fake_free(s1);
    CHECK(emit_delivered(p, "orders:x") == 1, "a closed subscriber's patterns go with it");
    fake_free(s2);
    fake_free(s3);
    fake_free(p);
}

/* ---- back-pressure ------------------------------------------------- */

static void test_backpressure(void)
{
    struct fake *b = registered("slow", NULL), *c = registered("c", NULL), *s = registered("sub", NULL);
    struct fake *p = registered("pub", NULL);
    uint64_t pauses = g_stats.sender_pauses;
    b->pending = g_bus.set.outbuf_high + 1;
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"b1\",\"to\":\"slow\",\"method\":\"m\"}");
    CHECK(is_type(fake_next(b), "CALL") && c->pauses == 1 && !c->reading && g_stats.sender_pauses == pauses + 1,
          "a CALL to a backed-up callee pauses the caller (set_read false)");
    fakebus_turn();
    CHECK(!c->reading && c->resumes == 0, "...and it stays paused while the callee is backed up");
    b->pending = 0;
    lb_conn_writable(b->conn);
    CHECK(c->reading && c->resumes == 1, "lb_conn_writable on the callee resumes it");
    b->pending = g_bus.set.outbuf_high + 1;
    fake_input(c, "{\"type\":\"EMIT\",\"event\":\"e\",\"to\":\"slow\"}");
    CHECK(c->pauses == 2 && !c->reading, "an EMIT to a backed-up service pauses its sender too");
    b->pending = 0;
    lb_conn_writable(b->conn);
    CHECK(c->reading, "resumed");

    fake_input(s, "{\"type\":\"SUBSCRIBE\",\"events\":[\"news\"]}");
    s->pending = g_bus.set.outbuf_high + 1;
    pauses = g_stats.sender_pauses;
    for (int i = 0; i < 3; i++) fake_input(p, "{\"type\":\"EMIT\",\"event\":\"news\"}");
    CHECK(events_named(s, "news") == 3 && p->pauses == 0 && p->reading && g_stats.sender_pauses == pauses,
          "a broadcast to a backed-up subscriber never pauses the publisher");
    /* The bus learns a queue's size when it sends and when the transport
     * reports progress (lb_conn_writable, from its write callback). */
    s->pending = g_bus.set.outbuf_max + 1;
    lb_conn_writable(s->conn);
    fake_input(p, "{\"type\":\"EMIT\",\"event\":\"news\"}");
    CHECK(events_named(s, "news") == 0, "past outbuf_max the subscriber gets no more events");
    fakebus_turn();
    json_t *m = fake_next(s);
    CHECK(s->closed && s->close_flushed && error_frame(m, LB_E_SLOW_CONSUMER) && p->pauses == 0,
          "...it is closed as a slow consumer after this turn, with its error; the publisher runs on");
    CHECK(fake_next(s) == NULL && s->pending == 0, "its queue was discarded first (the error does not wait behind it)");
    fake_free(s);

    /* slow_consumer = drop: events dropped and counted, the error when it drains. */
    g_bus.set.slow_consumer = SLOW_DROP;
    s = registered("sub2", NULL);
    fake_input(s, "{\"type\":\"SUBSCRIBE\",\"events\":[\"news\"]}");
    s->pending = g_bus.set.outbuf_max + 1;
    lb_conn_writable(s->conn);
    uint64_t dropped = g_stats.events_dropped;
    fake_input(p, "{\"type\":\"EMIT\",\"event\":\"news\"}");
    fake_input(p, "{\"type\":\"EMIT\",\"event\":\"news\"}");
    CHECK(!s->closed && events_named(s, "news") == 0 && g_stats.events_dropped == dropped + 2 && p->pauses == 0,
          "slow_consumer = drop: the events are dropped and counted, nobody paused");
    s->pending = 0;
    lb_conn_writable(s->conn);
    m = fake_next(s);
    CHECK(error_frame(m, LB_E_SLOW_CONSUMER) && strstr(json_string_value(json_object_get(json_object_get(m, "error"), "message")), "2 events"),
          "once it drains it is told how many it missed");
    fake_input(p, "{\"type\":\"EMIT\",\"event\":\"news\"}");
    CHECK(events_named(s, "news") == 1, "and gets events again");
    g_bus.set.slow_consumer = SLOW_CLOSE;
    fake_free(s);
    fake_free(b);
    fake_free(c);
    fake_free(p);
}

/* ---- plugins' hooks ------------------------------------------------ */

struct seen {
    int route_asked;
    struct lb_conn *link;        /* what the route hook hands out for "remote" */
    bool eperm_ok;               /* what lb_msg_set refused in the rewrite hook */
    bool response_to_refused;    /* `to` of a RESPONSE is the bus's */
    bool depth_ok;               /* lb_msg_set counts nesting from the frame's object */
    bool rw_ok;                  /* the changes of method "rw" were all taken */
    char call_attrs[300];        /* "call.to call.method" as the last response hook read them */
    bool attr_override_ok;       /* a plugin's own call.to comes first */
    char refused_by[64], audit_code[64];
};
static struct seen g_seen;

static bool is(struct lb_str s, const char *lit) { return s.p && s.n == strlen(lit) && !memcmp(s.p, lit, s.n); }

static enum lb_verdict_kind h_message(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_err *err)
{
    (void)ud; (void)c;
    if (lb_msg_type(m) != LB_MSG_CALL || !is(lb_msg_field(m, "method"), "limited")) return LB_PASS;
    lb_err_retry_after(err, 500);
    return lb_refuse(err, LB_E_RATE_LIMITED, "slow down");
}

static bool owned_members_refused(struct lb_msg *m)
{
    bool ok = true;
    static const char *const owned[] = { "from", "id", "token", "auth" };
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++) {
        errno = 0;
        ok &= lb_msg_set(m, owned[i], "\"x\"", 3) == -1 && errno == EPERM;
    }
    errno = 0;
    ok &= lb_msg_set(m, "type", "\"EMIT\"", 6) == -1 && errno == EPERM;
    errno = 0;
    ok &= lb_msg_set(m, "params", "{bad", 4) == -1 && errno == EINVAL;
    errno = 0;
    ok &= lb_msg_add_recipient(m, "svc-a") == -1 && errno == EPERM;   /* EMIT only */
    return ok;
}

/* A value nested `levels` deep is a member of a frame one level deeper:
 * the scanner allows 64 levels in all, so 63 is the most a member may
 * have.  (It used to be refused only after the frame was written, which
 * cost a second scan of every changed frame.) */
static bool depth_counted_from_the_frame(struct lb_msg *m)
{
    char v[2 * ENV_MAX_DEPTH];
    memset(v, '[', ENV_MAX_DEPTH);
    memset(v + ENV_MAX_DEPTH, ']', ENV_MAX_DEPTH);
    errno = 0;
    bool refused = lb_msg_set(m, "params", v, sizeof v) == -1 && errno == EINVAL;
    bool taken = lb_msg_set(m, "params", v + 1, sizeof v - 2) == 0;
    return refused && taken;
}

/* Changes of every kind in one frame: a known member replaced (with white
 * space around its value), one added, an unknown one added and one
 * removed, a known one removed. */
static bool many_changes(struct lb_msg *m)
{
    return lb_msg_set(m, "params", " {\"k\" : [1, \"\\u00e9\"]}\n", 22) == 0 && lb_msg_set(m, "extra", "[1]", 3) == 0 &&
           lb_msg_set(m, "gone", NULL, 0) == 0 && lb_msg_set(m, "metadata", NULL, 0) == 0 &&
           lb_msg_set(m, "method", "\"rw2\"", 5) == 0;
}

static enum lb_verdict_kind h_rewrite(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_err *err)
{
    (void)ud; (void)c; (void)err;
    enum lb_msg_type t = lb_msg_type(m);
    if (t == LB_MSG_CRUD) {
        /* CRUD -> the CALL it maps to (the one change of type). */
        lb_msg_set(m, "type", "\"CALL\"", 6);
        lb_msg_set(m, "to", "\"svc-a\"", 7);
        lb_msg_set(m, "method", "\"crud\"", 6);
    }
    if (is(lb_msg_field(m, "to"), "alias")) lb_msg_set(m, "to", "\"svc-a\"", 7);
    if (t == LB_MSG_CALL && is(lb_msg_field(m, "method"), "owned")) g_seen.eperm_ok = owned_members_refused(m);
    if (t == LB_MSG_CALL && is(lb_msg_field(m, "method"), "deep")) g_seen.depth_ok = depth_counted_from_the_frame(m);
    if (t == LB_MSG_CALL && is(lb_msg_field(m, "method"), "rw")) g_seen.rw_ok = many_changes(m);
    if (t == LB_MSG_EMIT && is(lb_msg_field(m, "event"), "copy")) lb_msg_add_recipient(m, "svc-a");
    return LB_PASS;
}

static enum lb_verdict_kind h_response(void *ud, struct lb_conn *callee, struct lb_conn *to, struct lb_msg *m,
                                       struct lb_err *err)
{
    (void)ud; (void)callee; (void)to;
    struct lb_str data = lb_msg_raw(m, "data");
    const char *to_attr = lb_msg_attr_get(m, "call.to"), *method_attr = lb_msg_attr_get(m, "call.method");
    snprintf(g_seen.call_attrs, sizeof g_seen.call_attrs, "%s %s", to_attr ? to_attr : "(none)",
             method_attr ? method_attr : "(none)");
    if (is(data, "\"attrs\"")) {
        g_seen.attr_override_ok = lb_msg_attr_set(m, "call.to", "other") == 0 &&
                                  !strcmp(lb_msg_attr_get(m, "call.to"), "other") &&
                                  !strcmp(lb_msg_attr_get(m, "call.method"), "m") && !lb_msg_attr_get(m, "call.x");
    }
    if (is(data, "\"secret\"")) return lb_refuse(err, LB_E_FORBIDDEN, "no secrets");
    if (is(data, "\"rewrite\"")) {
        lb_msg_set(m, "data", "\"rewritten\"", 11);
        errno = 0;
        g_seen.response_to_refused = lb_msg_set(m, "to", "\"someone\"", 9) == -1 && errno == EPERM;
        lb_msg_set(m, "note", "1", 1);
    }
    return LB_PASS;
}

static enum lb_verdict_kind h_deliver(void *ud, struct lb_conn *from, struct lb_conn *to, struct lb_msg *m,
                                      struct lb_err *err)
{
    (void)ud; (void)from; (void)m;
    if (lb_conn_service(to) && !strcmp(lb_conn_service(to), "blocked")) return lb_refuse(err, LB_E_FORBIDDEN, "not to blocked");
    return LB_PASS;
}

static struct lb_conn *h_route(void *ud, struct lb_conn *from, const struct lb_msg *m, struct lb_str service)
{
    (void)ud; (void)from; (void)m;
    g_seen.route_asked++;
    return is(service, "remote") ? g_seen.link : NULL;
}

static void h_audit(void *ud, const struct lb_outcome *o)
{
    (void)ud;
    snprintf(g_seen.refused_by, sizeof g_seen.refused_by, "%s", o->refused_by ? o->refused_by : "");
    snprintf(g_seen.audit_code, sizeof g_seen.audit_code, "%s", o->error_code ? o->error_code : "");
}

/* Answers the next CALL `callee` got with data (JSON text); returns it. */
static json_t *answer(struct fake *callee, const char *data)
{
    json_t *call = fake_next(callee);
    char buf[512];
    snprintf(buf, sizeof buf, "{\"type\":\"RESPONSE\",\"id\":\"%s\",\"status\":\"success\",\"data\":%s}", jstr(call, "id"), data);
    fake_input(callee, buf);
    return call;
}

/* A hook that tries to register another set: the host is walking them. */
static int g_register_inside = 0;
static void h_inspect_registers(void *ud, struct lb_conn *c, struct lb_msg *m)
{
    (void)c; (void)m;
    struct lb_hooks h = { .size = sizeof h, .audit = h_audit };
    if (!g_register_inside) g_register_inside = lb_hooks_register(ud, &h, NULL);
}

static void test_hooks(void)
{
    struct lb_plugin_ctx ctx = { .index = 0, .name = "hooktest" };
    struct lb_hooks h = { .size = sizeof h, .message = h_message, .rewrite = h_rewrite, .response = h_response,
                          .deliver = h_deliver, .route = h_route, .audit = h_audit };
    int id = lb_hooks_register(&ctx, &h, NULL);
    struct lb_hooks too_big = { .size = sizeof h + 8 };
    CHECK(id > 0 && lb_hooks_register(&ctx, &too_big, NULL) == -1, "lb_hooks_register: an id; a struct larger than the host's is refused");
    struct lb_hooks inner = { .size = sizeof inner, .inspect = h_inspect_registers };
    int inner_id = lb_hooks_register(&ctx, &inner, &ctx);
    struct fake *a = registered("svc-a", NULL), *c = registered("c", NULL), *blocked = registered("blocked", NULL);
    CHECK(inner_id > 0 && g_register_inside == -1, "lb_hooks_register from inside a hook is refused (-1)");
    lb_hooks_unregister(&ctx, inner_id);
    struct fake *s = registered("sub", NULL);

    fake_input(c, "{\"type\":\"CALL\",\"id\":\"h1\",\"to\":\"svc-a\",\"method\":\"limited\"}");
    json_t *r = fake_next(c);
    CHECK(call_error(r, "h1", LB_E_RATE_LIMITED) &&
          json_integer_value(json_object_get(json_object_get(r, "error"), "retryAfterMs")) == 500 && !fake_next(a),
          "a message hook's refusal: its code and retryAfterMs, as the call's RESPONSE");
    CHECK(!strcmp(g_seen.refused_by, "hooktest") && !strcmp(g_seen.audit_code, LB_E_RATE_LIMITED), "the audit names the refusing plugin");

    fake_input(c, "{\"type\":\"CALL\",\"id\":\"h2\",\"to\":\"alias\",\"method\":\"m1\"}");
    json_t *call = answer(a, "1");
    r = fake_next(c);
    CHECK(!strcmp(jstr(call, "to"), "svc-a") && !strcmp(jstr(r, "id"), "h2") && !strcmp(jstr(r, "from"), "svc-a"),
          "a rewrite of `to` reroutes the CALL; the answer comes from the real service");
    fake_input(c, "{\"type\":\"CRUD\",\"id\":\"h3\",\"op\":\"read\",\"resource\":\"items\",\"key\":\"7\"}");
    call = answer(a, "{\"k\":7}");
    r = fake_next(c);
    CHECK(is_type(call, "CALL") && !strcmp(jstr(call, "method"), "crud") && !strcmp(jstr(call, "resource"), "items") &&
          !strcmp(jstr(r, "id"), "h3") && json_integer_value(json_object_get(json_object_get(r, "data"), "k")) == 7,
          "CRUD rewritten to a CALL (its members kept) and answered");
    fake_skip(a);
    fake_skip(c);
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"h4\",\"to\":\"svc-a\",\"method\":\"owned\"}");
    answer(a, "null");
    fake_skip(c);
    CHECK(g_seen.eperm_ok, "from, id, token, auth and type are the bus's (EPERM); bad JSON is EINVAL; recipients are for EMITs");
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"h4d\",\"to\":\"svc-a\",\"method\":\"deep\"}");
    call = answer(a, "null");
    json_t *deep = json_object_get(call, "params");
    int levels = 0;
    while (json_is_array(deep)) { levels++; deep = json_array_size(deep) ? json_array_get(deep, 0) : NULL; }
    CHECK(g_seen.depth_ok && levels == ENV_MAX_DEPTH - 1 && !a->bad_frame,
          "lb_msg_set: a value nested 64 deep is EINVAL (the frame would nest 65), 63 deep reaches the callee");
    fake_skip(c);
    fake_input(c, "{\"type\":\"CALL\", \"gone\" : 1, \"id\":\"h4r\",\"to\":\"svc-a\",\"method\":\"rw\",\"params\":{\"old\":1},"
                  "\"metadata\":{},\"x\":\"kept\"}");
    call = answer(a, "null");
    json_t *params = json_object_get(call, "params");
    CHECK(g_seen.rw_ok && !a->bad_frame && !strcmp(jstr(call, "method"), "rw2") && json_object_size(params) == 1 &&
          json_array_size(json_object_get(params, "k")) == 2 && !strcmp(jstr(call, "x"), "kept") &&
          json_array_size(json_object_get(call, "extra")) == 1 && !json_object_get(call, "gone") &&
          !json_object_get(call, "metadata") && !strcmp(jstr(call, "id"), "h4r"),
          "changes of known and unknown members, added and removed, reach the callee in one well-formed frame");
    fake_skip(c);

    fake_input(s, "{\"type\":\"SUBSCRIBE\",\"events\":[\"copy\",\"news\"]}");
    fake_input(blocked, "{\"type\":\"SUBSCRIBE\",\"events\":[\"news\"]}");
    fake_input(c, "{\"type\":\"EMIT\",\"event\":\"copy\",\"ack\":true,\"id\":\"e1\"}");
    json_t *ack = fake_next(c);
    CHECK(json_integer_value(json_object_get(ack, "delivered")) == 2 && events_named(s, "copy") == 1 && events_named(a, "copy") == 1,
          "lb_msg_add_recipient: the event goes to an instance of svc-a as well");
    fake_input(c, "{\"type\":\"EMIT\",\"event\":\"news\",\"ack\":true,\"id\":\"e2\"}");
    ack = fake_next(c);
    CHECK(json_integer_value(json_object_get(ack, "delivered")) == 1 && events_named(blocked, "news") == 0 && events_named(s, "news") == 1,
          "a deliver hook's refusal skips that subscriber only");
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"h5\",\"to\":\"blocked\",\"method\":\"m\"}");
    CHECK(call_error(fake_next(c), "h5", LB_E_FORBIDDEN) && !fake_next(blocked), "...and refuses a CALL to it");

    fake_input(c, "{\"type\":\"CALL\",\"id\":\"h6\",\"to\":\"svc-a\",\"method\":\"m\"}");
    answer(a, "\"secret\"");
    CHECK(call_error(fake_next(c), "h6", LB_E_FORBIDDEN), "a response hook's refusal: the caller gets its error instead");
    CHECK(!strcmp(g_seen.call_attrs, "svc-a m"), "a response hook reads the call's service and method as attributes call.to and call.method");
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"h6a\",\"to\":\"svc-a\",\"method\":\"m\"}");
    answer(a, "\"attrs\"");
    fake_skip(c);
    CHECK(g_seen.attr_override_ok, "...and one a plugin sets itself comes first");
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"h7\",\"to\":\"svc-a\",\"method\":\"m\"}");
    answer(a, "\"rewrite\"");
    r = fake_next(c);
    CHECK(!c->bad_frame && !strcmp(jstr(r, "data"), "rewritten") && !strcmp(jstr(r, "to"), "c") &&
          json_integer_value(json_object_get(r, "note")) == 1 && g_seen.response_to_refused,
          "a response hook's changes reach the caller; its `to` is the bus's (EPERM), written once");

    /* A federation link: what the route hook hands calls to when no
     * instance is here. */
    struct fake *link = registered("node-b", NULL);
    link->conn->link = link->conn->trusted = true;
    g_seen.link = link->conn;
    int asked = g_seen.route_asked;
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"same\",\"to\":\"remote\",\"method\":\"m\"}");
    call = fake_next(link);
    CHECK(g_seen.route_asked == asked + 1 && is_type(call, "CALL") && jstr(call, "id")[0] == '~' &&
          !strcmp(jstr(call, "from"), "c"), "no local instance: the route hook's link gets the CALL under the bus's id");
    char buf[256];
    snprintf(buf, sizeof buf, "{\"type\":\"RESPONSE\",\"id\":\"%s\",\"data\":3}", jstr(call, "id"));
    fake_input(link, buf);
    r = fake_next(c);
    CHECK(!strcmp(jstr(r, "id"), "same") && json_integer_value(json_object_get(r, "data")) == 3, "...and its answer comes back under the caller's id");
    fake_input(link, "{\"type\":\"CALL\",\"id\":\"l1\",\"from\":\"far-svc\",\"to\":\"nowhere\",\"method\":\"m\"}");
    CHECK(call_error(fake_next(link), "l1", LB_E_SERVICE_NOT_FOUND) && g_seen.route_asked == asked + 1,
          "a CALL that came over a link is never routed by a route hook (loop prevention)");
    fake_input(link, "{\"type\":\"CALL\",\"id\":\"l2\",\"from\":\"far-svc\",\"to\":\"svc-a\",\"method\":\"m\"}");
    call = fake_next(a);
    CHECK(!strcmp(jstr(call, "from"), "far-svc"), "a trusted link speaks for other nodes' services (`from`)");
    fake_skip(a);
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"h8\",\"to\":\"elsewhere\",\"method\":\"m\"}");
    CHECK(call_error(fake_next(c), "h8", LB_E_SERVICE_NOT_FOUND), "the route hook declines: SERVICE_NOT_FOUND");

    lb_hooks_unregister(&ctx, id);
    fake_input(c, "{\"type\":\"CALL\",\"id\":\"h9\",\"to\":\"svc-a\",\"method\":\"limited\"}");
    CHECK(is_type(fake_next(a), "CALL"), "lb_hooks_unregister: the hooks are gone");
    fake_free(link);
    fake_free(a);
    fake_free(c);
    fake_free(blocked);
    fake_free(s);
}

/* ---- the state backend --------------------------------------------- */

struct told { int n; char last[128]; };

static void backend_changed(void *ud, const char *ns, const char *key, const char *value, size_t len,
                            uint64_t expires_ms)
{
    struct told *t = ud;
    t->n++;
    snprintf(t->last, sizeof t->last, "%s/%s=%.*s@%llu", ns, key, value ? (int)len : 4, value ? value : "NULL",
             (unsigned long long)expires_ms);
}

static void test_state_backend(void)
{
    struct lb_plugin_ctx be = { .name = "backend" }, user = { .name = "user" };
    struct told t = { 0 };
    struct lb_state_backend b = { .size = sizeof b, .changed = backend_changed };
    CHECK(lb_state_backend_register(&be, &b, &t) == 0, "a state backend registers");
    CHECK(lb_state_backend_register(&user, &b, &t) == -1 && user.failed, "...one at most");
    user.failed = false;
    CHECK(lb_state_set(&user, "k", "v1", 2, 0) == 0 && t.n == 1 && !strcmp(t.last, "user/k=v1@0"),
          "it sees every change, with the plugin's namespace");
    CHECK(lb_state_del(&user, "k") == 0 && t.n == 2 && !strcmp(t.last, "user/k=NULL@0"), "...deletes as NULL");
    size_t len = 0;
    const char *v;
    CHECK(lb_state_apply(&be, "user", "k2", "w", 1, 0) == 0 && t.n == 2 && (v = lb_state_get(&user, "k2", &len)) &&
          len == 1 && v[0] == 'w', "lb_state_apply changes another node's value here without telling the backend");
    CHECK(lb_state_apply(&be, "user", "k2", NULL, 0, 0) == 0 && !lb_state_get(&user, "k2", NULL), "...and deletes");
    state_forget_plugin(&be);   /* what unloading the backend's plugin does */
    CHECK(lb_state_set(&user, "k3", "x", 1, 0) == 0 && t.n == 2,
          "once its plugin is unloaded the backend is told nothing more (other plugins' unload may still write)");
    CHECK(lb_state_backend_register(&user, &b, &t) == 0, "and another may register");
    state_forget_plugin(&user);
    lb_state_del(&user, "k3");
}

/* ---- in-process connections ---------------------------------------- */

struct plug {
    int messages, replies, closes;
    bool closed_before_reply;
    char last_reply[256];
    char last_code[64];
    struct lb_conn *closed_conn;
};

static void on_message(void *ud, struct lb_conn *conn, const struct lb_msg *m)
{
    (void)conn;
    struct plug *p = ud;
    p->messages++;
    (void)m;
}

static void on_close(void *ud, struct lb_conn *conn, const char *why)
{
    (void)why;
    struct plug *p = ud;
    p->closes++;
    p->closed_conn = conn;
}

static void on_reply(void *ud, const struct lb_msg *r)
{
    struct plug *p = ud;
    struct lb_str f = lb_msg_frame(r), code = lb_msg_error_code(r);
    p->replies++;
    p->closed_before_reply = p->closes > 0;
    snprintf(p->last_reply, sizeof p->last_reply, "%.*s", (int)f.n, f.p);
    snprintf(p->last_code, sizeof p->last_code, "%.*s", code.p ? (int)code.n : 0, code.p ? code.p : "");
}

static bool got_messages(void *ud) { return ((struct plug *)ud)->messages > 0; }
static bool got_reply(void *ud) { return ((struct plug *)ud)->replies > 0; }
static bool got_close(void *ud) { return ((struct plug *)ud)->closes > 0; }

static void test_local(void)
{
    struct lb_plugin_ctx ctx = { .name = "test" };
    struct plug p = { 0 };
    struct lb_local_opts opts = { .size = sizeof opts, .label = "test", .trusted = true };
    struct lb_local_ops ops = { .size = sizeof ops, .on_message = on_message, .on_close = on_close };
    struct lb_conn *l = lb_local_open(&ctx, &opts, &ops, &p);
    CHECK(l != NULL && lb_local_register(l, "plug", NULL, 0) == 0 && !lb_service_exists(NULL, "plug", 4),
          "lb_local_register is routed later, not from inside the call");
    CHECK(fakebus_run(2000, got_messages, &p) && lb_service_exists(NULL, "plug", 4), "...its REGISTER_ACK comes to on_message");
    errno = 0;
    CHECK(lb_call(l, NULL, "svc-a", "m", "{bad", 4, 0, on_reply, &p) == -1 && errno == EINVAL, "lb_call with params that are not JSON: -1 EINVAL");
    CHECK(lb_emit(l, NULL, "e", NULL, "[1,", 3) == -1, "lb_emit with a bad payload: -1");
    size_t big = g_bus.set.max_frame + 1;
    char *huge = xmalloc(big);
    memset(huge, ' ', big);
    huge[0] = '{';
    errno = 0;
    CHECK(lb_local_send(l, huge, big) == -1 && errno == EMSGSIZE, "lb_local_send past max_frame: -1 EMSGSIZE (not a close)");
    free(huge);

    struct fake *a = registered("svc-a", NULL);
    CHECK(lb_call(l, NULL, "svc-a", "m", "{\"q\":1}", 7, 0, on_reply, &p) == 0 && p.replies == 0,
          "lb_call queues the CALL; no callback from inside it");
    fakebus_run(2000, has_frame, a);
    json_t *call = fake_next(a);
    CHECK(is_type(call, "CALL") && !strcmp(jstr(call, "from"), "plug"), "the CALL reaches the socket service from `plug`");
    char buf[256];
    snprintf(buf, sizeof buf, "{\"type\":\"RESPONSE\",\"id\":\"%s\",\"status\":\"success\",\"data\":{\"a\":2}}", jstr(call, "id"));
    fake_input(a, buf);
    CHECK(p.replies == 0 && fakebus_run(2000, got_reply, &p) && strstr(p.last_reply, "\"a\":2") && !p.last_code[0],
          "the callback gets the RESPONSE from a later turn");

    /* The bus closes the connection with a call in flight. */
    p.replies = 0;
    CHECK(lb_call(l, NULL, "svc-a", "m", NULL, 0, 0, on_reply, &p) == 0, "another call");
    fakebus_run(2000, has_frame, a);
    fake_skip(a);
    lb_conn_close_error(l, LB_E_SLOW_CONSUMER, "test");
    CHECK(lb_emit(l, NULL, "e", NULL, NULL, 0) == -1 && lb_call(l, NULL, "svc-a", "m", NULL, 0, 0, on_reply, &p) == -1,
          "the handle stays valid until on_close: calls on it fail");
    fakebus_run(2000, got_close, &p);
    CHECK(p.replies == 1 && !strcmp(p.last_code, LB_E_SERVICE_UNAVAILABLE) && !p.closed_before_reply,
          "the pending callback gets its one RESPONSE (SERVICE_UNAVAILABLE), before on_close");
    CHECK(p.closes == 1 && p.closed_conn == l, "on_close names the connection");
    CHECK(!lb_service_exists(NULL, "plug", 4), "its service is gone");
    fake_free(a);

    /* lb_local_close: callbacks dropped, no on_close (the plugin asked). */
    struct plug q = { 0 };
    l = lb_local_open(&ctx, &opts, &ops, &q);
    lb_local_register(l, "plug2", NULL, 0);
    lb_call(l, NULL, "lexbus", "ping", NULL, 0, 0, on_reply, &q);
    lb_local_close(l);
    fakebus_run(50, NULL, NULL);
    CHECK(q.replies == 0 && q.closes == 0 && !lb_service_exists(NULL, "plug2", 5), "lb_local_close: nothing called back");
}

/* Appends one length-prefixed frame to buf at *n. */
static void put_frame(char *buf, size_t *n, const char *json)
{
    uint32_t len = (uint32_t)strlen(json);
    buf[(*n)++] = (char)(len >> 24);
    buf[(*n)++] = (char)(len >> 16);
    buf[(*n)++] = (char)(len >> 8);
    buf[(*n)++] = (char)len;
    memcpy(buf + *n, json, len);
    *n += len;
}

/* The event of the next frame f got, "" if it is not an EVENT. */
static const char *next_event(struct fake *f)
{
    json_t *m = fake_next(f);
    return is_type(m, "EVENT") ? jstr(m, "event") : "";
}

static void test_feed(void)
{
    struct fake *b = registered("feed-slow", NULL), *c = registered("feed-c", NULL);
    char buf[1024];
    size_t n = 0;
    put_frame(buf, &n, "{\"type\":\"EMIT\",\"event\":\"e1\",\"to\":\"feed-slow\"}");
    size_t first = n;
    put_frame(buf, &n, "{\"type\":\"EMIT\",\"event\":\"e2\",\"to\":\"feed-slow\"}");
    size_t two = n;
    put_frame(buf, &n, "{\"type\":\"EMIT\",\"event\":\"e3\",\"to\":\"feed-slow\"}");
    CHECK(lb_conn_feed(c->conn, buf, 3) == 0 && lb_conn_feed(c->conn, buf, first - 1) == 0 && !fake_next(b),
          "lb_conn_feed: a frame not yet whole (header or body cut) is left, nothing routed");
    CHECK(lb_conn_feed(c->conn, buf, two + 5) == (ssize_t)two && !strcmp(next_event(b), "e1") &&
          !strcmp(next_event(b), "e2") && !fake_next(b),
          "whole frames are routed and their bytes reported used; the cut one is left");
    b->pending = g_bus.set.outbuf_high + 1;
    ssize_t used = lb_conn_feed(c->conn, buf, n);
    CHECK(used == (ssize_t)first && !c->reading && !strcmp(next_event(b), "e1") && !fake_next(b),
          "a pause stops it after the frame that paused: the rest is left for the transport to keep");
    b->pending = 0;
    lb_conn_writable(b->conn);
    CHECK(c->reading && lb_conn_feed(c->conn, buf + used, n - (size_t)used) == (ssize_t)(n - (size_t)used) &&
          !strcmp(next_event(b), "e2") && !strcmp(next_event(b), "e3") && !fake_next(b),
          "resumed, the rest is routed in order");

    static const char zero[] = { 0, 0, 0, 0, '{' };
    CHECK(lb_conn_feed(c->conn, zero, sizeof zero) == -1 && c->closed && error_frame(fake_next(c), LB_E_BAD_FRAME),
          "a zero length: ERROR BAD_FRAME and the connection closed (-1)");
    struct fake *d = registered("feed-d", NULL);
    static const char big[] = { 0x7f, 0, 0, 0 };
    CHECK(lb_conn_feed(d->conn, big, sizeof big) == -1 && d->closed && error_frame(fake_next(d), LB_E_PAYLOAD_TOO_LARGE),
          "a length past max_frame is refused from its header alone, before any body");
    fake_free(b);
    fake_free(c);
    fake_free(d);
}

int main(void)
{
    fakebus_init(NULL);
    test_register();
    test_call();
    test_errors();
    test_same_id_two_callers();
    test_response_forwarding();
    test_fanout();
    test_backpressure();
    test_feed();
    test_hooks();
    test_state_backend();
    test_local();
    CHECK(conn_count() == 0, "every connection closed");
    fakebus_free();
    return tap_done();
}
