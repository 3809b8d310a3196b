#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "pending.h"
#include "registry.h"
#include "util.h"

#define POOL_KEEP 4096

static struct htable g_table;
static struct event_base *g_base;
static pending_timeout_fn g_on_timeout;
static struct pending_call *g_free;  /* free list, linked through node.next */
static size_t g_free_n;

struct pkey { const struct lb_conn *callee; const char *id; size_t n; };

static uint64_t pkey_hash(const struct lb_conn *callee, const char *id, size_t n)
{
    return hash_bytes(id, n) ^ (callee->id * 0x9E3779B97F4A7C15ull);
}

static bool pkey_eq(const struct ht_node *node, const void *key)
{
    const struct pending_call *pc = container_of(node, struct pending_call, node);
    const struct pkey *k = key;
    return pc->callee == k->callee && pc->id_len == k->n && memcmp(pc->id, k->id, k->n) == 0;
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
    ht_init(&g_table, 1024);
}

void pending_shutdown(void)
{
    while (g_free) {
        struct pending_call *n = (struct pending_call *)g_free->node.next;
        free(g_free);
        g_free = n;
    }
    g_free_n = 0;
    ht_free(&g_table);
}

size_t pending_count(void) { return g_table.count; }

struct pending_call *pending_find(struct lb_conn *callee, const char *id, size_t id_len)
{
    if (id_len > LB_MAX_ID) return NULL;
    struct pkey k = { callee, id, id_len };
    struct ht_node *n = ht_find(&g_table, pkey_hash(callee, id, id_len), pkey_eq, &k);
    return n ? container_of(n, struct pending_call, node) : NULL;
}

struct pending_call *pending_find_pooled(struct lb_conn *c, const char *id, size_t id_len)
{
    if (!c->svc || !c->peer.has_cred || c->svc->n < 2) return NULL;
    for (size_t i = 0; i < c->svc->n; i++) {
        struct lb_conn *s = c->svc->inst[i];
        if (s == c || !s->peer.has_cred || s->peer.pid != c->peer.pid) continue;
        struct pending_call *pc = pending_find(s, id, id_len);
        if (pc) return pc;
    }
    return NULL;
}

struct pending_call *pending_add(struct lb_conn *caller, struct lb_conn *callee,
                                 const char *id, size_t id_len,
                                 const char *method, size_t mlen,
                                 const char *target, size_t tlen, uint64_t timeout_ms)
{
    if (id_len > LB_MAX_ID || mlen > LB_MAX_NAME || tlen > LB_MAX_NAME) return NULL;
    if (pending_find(callee, id, id_len)) return NULL;
    struct pending_call *pc = g_free;
    if (pc) { g_free = (struct pending_call *)pc->node.next; g_free_n--; }
    else pc = xmalloc(sizeof *pc);
    pc->caller = caller;
    pc->callee = callee;
    pc->start_us = mono_us();
    pc->bytes = 0;
    pc->id_len = (uint8_t)id_len;
    memcpy(pc->id, id, id_len);
    pc->method_len = (uint8_t)mlen;
    memcpy(pc->method, method, mlen);
    pc->target_len = (uint8_t)tlen;
    memcpy(pc->target, target, tlen);
    list_add_tail(&caller->calls_out, &pc->caller_link);
    list_add_tail(&callee->calls_in, &pc->callee_link);
    ht_insert(&g_table, &pc->node, pkey_hash(callee, id, id_len));
    evtimer_assign(&pc->timer, g_base, timer_cb, pc);
    struct timeval tv = { (time_t)(timeout_ms / 1000), (suseconds_t)((timeout_ms % 1000) * 1000) };
    evtimer_add(&pc->timer, &tv);
    return pc;
}

void pending_remove(struct pending_call *pc)
{
    evtimer_del(&pc->timer);
    ht_remove(&g_table, &pc->node);
    list_del(&pc->caller_link);
    list_del(&pc->callee_link);
    if (g_free_n < POOL_KEEP) {
        pc->node.next = (struct ht_node *)g_free;
        g_free = pc;
        g_free_n++;
    } else {
        free(pc);
    }
}
