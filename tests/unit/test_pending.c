/* The pending-call table: its two keys (caller's id, wire id at the
 * callee), collisions between callers, timeouts, removal, recycling. */
#include "config.h"
#include <string.h>
#include <event2/event.h>
#include "tap.h"
#include "pending.h"
#include "util.h"

struct bus g_bus;   /* pending.c needs only the type */
static int timeouts;
static struct pending_call *timed_out;

static void on_timeout(struct pending_call *pc)
{
    timeouts++;
    timed_out = pc;
    pending_remove(pc);
}

static void init_conn(struct lb_conn *c, uint64_t id)
{
    memset(c, 0, sizeof *c);
    c->id = id;
    list_init(&c->calls_in);
    list_init(&c->calls_out);
}

static struct pending_call *add(struct lb_conn *caller, struct lb_conn *callee, const char *id, size_t n,
                                bool bus_id, uint64_t timeout)
{
    struct pending_args a = { .id = id, .id_len = n, .method = "echo", .method_len = 4, .target = "svc",
                              .target_len = 3, .from = "me", .from_len = 2, .bus_id = bus_id, .timeout_ms = timeout };
    return pending_add(caller, callee, &a);
}

static bool wire_is(const struct pending_call *pc, const char *w)
{
    size_t n;
    const char *p = pending_wire(pc, &n);
    return n == strlen(w) && memcmp(p, w, n) == 0;
}

int main(void)
{
    struct event_base *base = event_base_new();
    pending_init(base, on_timeout);
    struct lb_conn caller, caller2, callee, other;
    init_conn(&caller, 1);
    init_conn(&caller2, 4);
    init_conn(&callee, 2);
    init_conn(&other, 3);

    struct pending_call *a = add(&caller, &callee, "c1", 2, false, 60000);
    CHECK(a != NULL && pending_count() == 1 && wire_is(a, "c1"), "add: the callee sees the caller's id");
    CHECK(add(&caller, &callee, "c1", 2, false, 60000) == NULL, "same caller, same id: refused");
    CHECK(add(&caller, &other, "c1", 2, false, 60000) == NULL, "same caller, same id, another callee: refused too");
    struct pending_call *b = add(&caller2, &callee, "c1", 2, false, 60000);
    CHECK(b != NULL && pending_count() == 2, "another caller may use the same id at the same callee");
    CHECK(!wire_is(b, "c1") && b->id_len == 2 && memcmp(b->id, "c1", 2) == 0,
          "...and gets a wire id of the bus's, its own id kept for the way back");
    size_t wn;
    const char *w = pending_wire(b, &wn);
    CHECK(pending_find(&callee, "c1", 2) == a && pending_find(&callee, w, wn) == b, "find by (callee, wire id)");
    CHECK(pending_find(&callee, "c2", 2) == NULL && pending_find(&caller, "c1", 2) == NULL, "no false matches");
    CHECK(!list_empty(&caller.calls_out) && !list_empty(&callee.calls_in), "linked to both connections");
    struct pending_call *l = add(&caller, &other, "c9", 2, true, 60000);
    CHECK(l != NULL && !wire_is(l, "c9"), "links always get the bus's ids");
    pending_remove(l);
    pending_remove(a);
    CHECK(pending_find(&callee, "c1", 2) == NULL && pending_count() == 1, "remove");
    CHECK(add(&caller, &callee, "c1", 2, false, 60000) != NULL, "the id is free again once answered");
    pending_remove(pending_find(&callee, "c1", 2));
    pending_remove(b);
    CHECK(list_empty(&callee.calls_in) && pending_count() == 0, "all removed");

    struct pending_call *t = add(&caller, &callee, "t1", 2, false, 30);
    CHECK(t != NULL, "add with a 30 ms timeout");
    uint64_t t0 = mono_us();
    while (!timeouts && mono_us() - t0 < 2000000) event_base_loop(base, EVLOOP_ONCE);
    CHECK(timeouts == 1 && timed_out == t, "timer fired for the right call");
    CHECK(mono_us() - t0 >= 25000, "not before its time");
    CHECK(pending_find(&callee, "t1", 2) == NULL, "timed-out call removed");

    char id[LB_MAX_ID + 1];
    memset(id, 'x', sizeof id);
    CHECK(add(&caller, &callee, id, LB_MAX_ID + 1, false, 1000) == NULL, "over-long id refused");
    CHECK(add(&caller, &callee, id, LB_MAX_ID, false, 1000) != NULL, "id of exactly LB_MAX_ID");

    /* Recycling: many add/remove cycles reuse entries (no growth under ASan). */
    for (int i = 0; i < 10000; i++) {
        char cid[16];
        int n = snprintf(cid, sizeof cid, "r%d", i);
        struct pending_call *p = add(&caller, &callee, cid, (size_t)n, i & 1, 60000);
        if (p) pending_remove(p);
    }
    CHECK(pending_count() == 1, "count after churn");
    while (!list_empty(&caller.calls_out))
        pending_remove(list_entry(caller.calls_out.next, struct pending_call, caller_link));
    CHECK(pending_count() == 0, "empty");
    pending_shutdown();
    event_base_free(base);
    return tap_done();
}
