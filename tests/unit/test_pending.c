/* The pending-call table: add, find, duplicate ids, timeouts, removal. */
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

int main(void)
{
    struct event_base *base = event_base_new();
    pending_init(base, on_timeout);
    struct lb_conn caller, callee, other;
    init_conn(&caller, 1);
    init_conn(&callee, 2);
    init_conn(&other, 3);

    struct pending_call *a = pending_add(&caller, &callee, "c1", 2, "echo", 4, "svc", 3, 60000);
    CHECK(a != NULL && pending_count() == 1, "add");
    CHECK(pending_add(&caller, &callee, "c1", 2, "echo", 4, "svc", 3, 60000) == NULL, "same id at the same callee refused");
    struct pending_call *b = pending_add(&caller, &other, "c1", 2, "echo", 4, "svc", 3, 60000);
    CHECK(b != NULL && pending_count() == 2, "same id at another callee is fine");
    CHECK(pending_find(&callee, "c1", 2) == a && pending_find(&other, "c1", 2) == b, "find by (callee, id)");
    CHECK(pending_find(&callee, "c2", 2) == NULL && pending_find(&caller, "c1", 2) == NULL, "no false matches");
    CHECK(!list_empty(&caller.calls_out) && !list_empty(&callee.calls_in), "linked to both connections");
    pending_remove(a);
    CHECK(pending_find(&callee, "c1", 2) == NULL && list_empty(&callee.calls_in) && pending_count() == 1, "remove");

    struct pending_call *t = pending_add(&caller, &callee, "t1", 2, "slow", 4, "svc", 3, 30);
    CHECK(t != NULL, "add with a 30 ms timeout");
    uint64_t t0 = mono_us();
    while (!timeouts && mono_us() - t0 < 2000000) event_base_loop(base, EVLOOP_ONCE);
    CHECK(timeouts == 1 && timed_out == t, "timer fired for the right call");
    CHECK(mono_us() - t0 >= 25000, "not before its time");
    CHECK(pending_find(&callee, "t1", 2) == NULL, "timed-out call removed");

    char id[LB_MAX_ID + 1];
    memset(id, 'x', sizeof id);
    CHECK(pending_add(&caller, &callee, id, LB_MAX_ID + 1, "m", 1, "s", 1, 1000) == NULL, "over-long id refused");
    CHECK(pending_add(&caller, &callee, id, LB_MAX_ID, "m", 1, "s", 1, 1000) != NULL, "id of exactly LB_MAX_ID");

    /* Recycling: many add/remove cycles reuse entries (no growth under ASan). */
    for (int i = 0; i < 10000; i++) {
        char cid[16];
        int n = snprintf(cid, sizeof cid, "r%d", i);
        struct pending_call *p = pending_add(&caller, &callee, cid, (size_t)n, "m", 1, "s", 1, 60000);
        if (p) pending_remove(p);
    }
    CHECK(pending_count() == 2, "count after churn");
    while (!list_empty(&caller.calls_out))
        pending_remove(list_entry(caller.calls_out.next, struct pending_call, caller_link));
    CHECK(pending_count() == 0, "empty");
    pending_shutdown();
    event_base_free(base);
    return tap_done();
}
