/*
 * Subscriptions: one trie (pattern -> connections) for matching, and each
 * connection's hash set of the patterns it holds, so that every change is
 * linear in the size of the request whatever the connection holds.
 */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "router_int.h"
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
    if (!c->subs.buckets) ht_init(&c->subs, 4);
    struct sub_entry *e = xmalloc(sizeof *e + n + 1);
    e->len = (uint32_t)n;
    memcpy(e->pat, p, n);
    e->pat[n] = 0;
    ht_insert(&c->subs, &e->node, hash_bytes(p, n));
    ptrie_add(g_subs, p, n, c);
}

static void unsubscribe_one(struct lb_conn *c, const char *p, size_t n)
{
    struct sub_entry *e = holds(c, p, n);
    if (!e) return;
    ptrie_remove(g_subs, p, n, c);
    ht_remove(&c->subs, &e->node);
    free(e);
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
