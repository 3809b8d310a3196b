/*
 * Subscriptions: one trie (pattern -> connections) for matching, and each
 * connection's hash set of the patterns it holds, so that every change is
 * linear in the size of the request whatever the connection holds.
 */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "router_int.h"
#include "registry.h"
#include "pattern.h"
#include "util.h"

struct sub_entry {
    struct ht_node node;
    uint32_t len;
    char pat[];
};

struct pat_key { const char *p; size_t n; };

static struct ptrie *g_subs;
/* Scratch for counting the new patterns of one request. */
static struct pat_node { struct ht_node node; struct pat_key k; } *g_tmp;
static size_t g_cap_tmp;

void subs_init(void) { g_subs = ptrie_new(); }

void subs_free(void)
{
    ptrie_free(g_subs);
    g_subs = NULL;
    free(g_tmp);
    g_tmp = NULL;
    g_cap_tmp = 0;
}

size_t subs_count(void) { return g_subs ? ptrie_count(g_subs) : 0; }

/* ---- per-connection pattern sets ----------------------------------- */

static bool entry_eq(const struct ht_node *node, const void *key)
{
    const struct sub_entry *e = container_of(node, struct sub_entry, node);
    const struct pat_key *k = key;
    return e->len == k->n && memcmp(e->pat, k->p, k->n) == 0;
}

static struct sub_entry *holds(struct lb_conn *c, const char *p, size_t n)
{
    if (!c->subs.buckets) return NULL;
    struct pat_key k = { p, n };
    struct ht_node *node = ht_find(&c->subs, hash_bytes(p, n), entry_eq, &k);
    return node ? container_of(node, struct sub_entry, node) : NULL;
}

static void subscribe_one(struct lb_conn *c, const char *p, size_t n)
{
    if (holds(c, p, n)) return;
    /* Most connections hold one pattern or two: it grows as they come. */
    if (!c->subs.buckets) ht_init(&c->subs, 1);
    struct sub_entry *e = xmalloc(sizeof *e + n + 1);
    e->len = (uint32_t)n;
    memcpy(e->pat, p, n);
    e->pat[n] = 0;
    ht_insert(&c->subs, &e->node, hash_bytes(p, n));
    ptrie_add(g_subs, p, n, c);
    g_routing_gen++;
}

static void unsubscribe_one(struct lb_conn *c, const char *p, size_t n)
{
    struct sub_entry *e = holds(c, p, n);
    if (!e) return;
    ptrie_remove(g_subs, p, n, c);
    ht_remove(&c->subs, &e->node);
    free(e);
    g_routing_gen++;
}

static bool tmp_eq(const struct ht_node *node, const void *key)
{
    const struct pat_node *t = container_of(node, struct pat_node, node);
    const struct pat_key *k = key;
    return t->k.n == k->n && memcmp(t->k.p, k->p, k->n) == 0;
}

size_t subs_new_count(struct lb_conn *c, const struct env_val *arr)
{
    /* A throwaway hash set of the request's own patterns finds repeats
     * within it; the connection's set finds what it holds already. */
    struct htable seen;
    ht_init(&seen, 64);
    const char *cur = NULL;
    struct env_val v;
    size_t n = 0, used = 0;
    while (env_array_next(arr, &cur, &v)) {
        if (holds(c, v.p, v.n)) continue;
        struct pat_key k = { v.p, v.n };
        uint64_t h = hash_bytes(v.p, v.n);
        if (ht_find(&seen, h, tmp_eq, &k)) continue;
        if (used == g_cap_tmp) {
            /* Grown, not moved under `seen`: a rebuild keeps it consistent. */
            size_t cap = g_cap_tmp ? g_cap_tmp * 2 : 256;
            struct pat_node *nt = xcalloc(cap, sizeof *nt);
            ht_free(&seen);
            ht_init(&seen, cap);
            for (size_t i = 0; i < used; i++) {
                nt[i].k = g_tmp[i].k;
                ht_insert(&seen, &nt[i].node, hash_bytes(nt[i].k.p, nt[i].k.n));
            }
            free(g_tmp);
            g_tmp = nt;
            g_cap_tmp = cap;
        }
        g_tmp[used].k = k;
        ht_insert(&seen, &g_tmp[used].node, h);
        used++;
        n++;
    }
    ht_free(&seen);
    return n;
}

void subs_add_all(struct lb_conn *c, const struct env_val *arr)
{
    const char *cur = NULL;
    struct env_val v;
    while (env_array_next(arr, &cur, &v)) subscribe_one(c, v.p, v.n);
}

void subs_remove_all(struct lb_conn *c, const struct env_val *arr)
{
    const char *cur = NULL;
    struct env_val v;
    while (env_array_next(arr, &cur, &v)) unsubscribe_one(c, v.p, v.n);
}

static void forget_entry(struct ht_node *node, void *ud)
{
    struct lb_conn *c = ud;
    struct sub_entry *e = container_of(node, struct sub_entry, node);
    ptrie_remove(g_subs, e->pat, e->len, c);
    ht_remove(&c->subs, node);
    free(e);
    g_routing_gen++;
}

void subs_forget(struct lb_conn *c)
{
    if (!c->subs.buckets) return;
    ht_each(&c->subs, forget_entry, c);
    ht_free(&c->subs);
}

size_t subs_match(const char *event, size_t n, void (*fn)(void *sub, void *ud), void *ud)
{
    return ptrie_match(g_subs, event, n, fn, ud);
}

/* ---- the patterns this node's own connections hold (plugin.h) ------ */

struct each_pat {
    struct htable seen;          /* struct pat_node over the patterns given so far */
    struct pat_node *nodes;
    size_t used, cap;
    void (*fn)(void *ud, const char *pat, size_t n);
    void *ud;
};

static void each_pattern(struct ht_node *node, void *ud)
{
    struct each_pat *w = ud;
    struct sub_entry *e = container_of(node, struct sub_entry, node);
    struct pat_key k = { e->pat, e->len };
    uint64_t h = hash_bytes(e->pat, e->len);
    if (ht_find(&w->seen, h, tmp_eq, &k)) return;
    if (w->used == w->cap) {
        /* Grown by rebuilding the set over the new array (see subs_new_count). */
        size_t cap = w->cap ? w->cap * 2 : 64;
        struct pat_node *nn = xcalloc(cap, sizeof *nn);
        ht_free(&w->seen);
        ht_init(&w->seen, cap);
        for (size_t i = 0; i < w->used; i++) {
            nn[i].k = w->nodes[i].k;
            ht_insert(&w->seen, &nn[i].node, hash_bytes(nn[i].k.p, nn[i].k.n));
        }
        free(w->nodes);
        w->nodes = nn;
        w->cap = cap;
    }
    w->nodes[w->used].k = k;
    ht_insert(&w->seen, &w->nodes[w->used].node, h);
    w->used++;
    w->fn(w->ud, e->pat, e->len);
}

static void each_conn_patterns(struct lb_conn *c, void *ud)
{
    if (c->link || c->dead || !c->subs.buckets) return;
    ht_each(&c->subs, each_pattern, ud);
}

size_t lb_subscriptions_each(struct lb_plugin_ctx *ctx, void (*fn)(void *ud, const char *pat, size_t n), void *ud)
{
    (void)ctx;
    struct each_pat w = { .fn = fn, .ud = ud };
    ht_init(&w.seen, 64);
    conn_each(each_conn_patterns, &w);
    ht_free(&w.seen);
    free(w.nodes);
    return w.used;
}

uint64_t lb_routing_gen(struct lb_plugin_ctx *ctx)
{
    (void)ctx;
    return g_routing_gen;
}
