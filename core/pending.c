#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pending.h"
#include "util.h"

#define POOL_KEEP 4096

static struct htable g_by_callee, g_by_caller;
static struct event_base *g_base;
static pending_timeout_fn g_on_timeout;
static struct pending_call *g_free;  /* free list, linked through by_callee.next */
static size_t g_free_n;
static uint64_t g_wire_seq;

struct pkey { const struct lb_conn *conn; const char *id; size_t n; };

static uint64_t pkey_hash(const struct lb_conn *c, const char *id, size_t n)
{
    return hash_bytes(id, n) ^ (c->id * 0x9E3779B97F4A7C15ull);
}

static bool callee_eq(const struct ht_node *node, const void *key)
{
    const struct pending_call *pc = container_of(node, struct pending_call, by_callee);
    const struct pkey *k = key;
    size_t n;
    const char *w = pending_wire(pc, &n);
    return pc->callee == k->conn && n == k->n && memcmp(w, k->id, n) == 0;
}

static bool caller_eq(const struct ht_node *node, const void *key)
{
    const struct pending_call *pc = container_of(node, struct pending_call, by_caller);
    const struct pkey *k = key;
    return pc->caller == k->conn && pc->id_len == k->n && memcmp(pc->id, k->id, k->n) == 0;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    g_on_timeout(arg);
}

void pending_init(struct event_base *base, pending_timeout_fn on_timeout)
{
    g_base = base;
    g_on_timeout = on_timeout;
    ht_init(&g_by_callee, 1024);
    ht_init(&g_by_caller, 1024);
}

void pending_shutdown(void)
{
    while (g_free) {
        struct pending_call *n = (struct pending_call *)g_free->by_callee.next;
        free(g_free);
        g_free = n;
    }
    g_free_n = 0;
    ht_free(&g_by_callee);
    ht_free(&g_by_caller);
}

size_t pending_count(void) { return g_by_callee.count; }

struct pending_call *pending_find(struct lb_conn *callee, const char *wire, size_t wire_len)
{
    if (wire_len > LB_MAX_ID) return NULL;
    struct pkey k = { callee, wire, wire_len };
    struct ht_node *n = ht_find(&g_by_callee, pkey_hash(callee, wire, wire_len), callee_eq, &k);
    return n ? container_of(n, struct pending_call, by_callee) : NULL;
}

static bool caller_busy(struct lb_conn *caller, const char *id, size_t n)
{
    struct pkey k = { caller, id, n };
    return ht_find(&g_by_caller, pkey_hash(caller, id, n), caller_eq, &k) != NULL;
}

/* An id of the bus's that is free at the callee. */
static void make_wire_id(struct pending_call *pc, struct lb_conn *callee)
{
    do {
        int n = snprintf(pc->wire, sizeof pc->wire, "~%llx", (unsigned long long)++g_wire_seq);
        pc->wire_len = (uint8_t)n;
    } while (pending_find(callee, pc->wire, pc->wire_len));
}

struct pending_call *pending_add(struct lb_conn *caller, struct lb_conn *callee, const struct pending_args *a)
{
    if (a->id_len > LB_MAX_ID || a->method_len > LB_MAX_NAME || a->target_len > LB_MAX_NAME ||
        a->from_len > LB_MAX_NAME)
        return NULL;
    if (caller_busy(caller, a->id, a->id_len)) return NULL;
    struct pending_call *pc = g_free;
    if (pc) { g_free = (struct pending_call *)pc->by_callee.next; g_free_n--; }
    else pc = xmalloc(sizeof *pc);
    pc->caller = caller;
    pc->callee = callee;
    pc->start_us = mono_us();
    pc->bytes = 0;
    pc->id_len = (uint8_t)a->id_len;
    memcpy(pc->id, a->id, a->id_len);
    pc->method_len = (uint8_t)a->method_len;
    memcpy(pc->method, a->method, a->method_len);
    pc->method[a->method_len] = 0;
    pc->target_len = (uint8_t)a->target_len;
    memcpy(pc->target, a->target, a->target_len);
    pc->target[a->target_len] = 0;
    pc->from_len = (uint8_t)a->from_len;
    memcpy(pc->from, a->from, a->from_len);
    pc->wire_is_id = !a->bus_id && !pending_find(callee, a->id, a->id_len);
    if (!pc->wire_is_id) make_wire_id(pc, callee);
    size_t wn;
    const char *w = pending_wire(pc, &wn);
    list_add_tail(&caller->calls_out, &pc->caller_link);
    list_add_tail(&callee->calls_in, &pc->callee_link);
    ht_insert(&g_by_callee, &pc->by_callee, pkey_hash(callee, w, wn));
    ht_insert(&g_by_caller, &pc->by_caller, pkey_hash(caller, pc->id, pc->id_len));
    evtimer_assign(&pc->timer, g_base, timer_cb, pc);
    struct timeval tv = { (time_t)(a->timeout_ms / 1000), (suseconds_t)((a->timeout_ms % 1000) * 1000) };
    evtimer_add(&pc->timer, &tv);
    return pc;
}

void pending_remove(struct pending_call *pc)
{
    evtimer_del(&pc->timer);
    ht_remove(&g_by_callee, &pc->by_callee);
    ht_remove(&g_by_caller, &pc->by_caller);
    list_del(&pc->caller_link);
    list_del(&pc->callee_link);
    if (g_free_n < POOL_KEEP) {
        pc->by_callee.next = (struct ht_node *)g_free;
        g_free = pc;
        g_free_n++;
    } else {
        free(pc);
    }
}
