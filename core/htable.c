#include "config.h"
#include <stdlib.h>
#include "htable.h"
#include "util.h"

void ht_init(struct htable *t, size_t initial_pow2)
{
    size_t n = 1;   /* small tables stay small (a connection's own subscriptions) */
    while (n < initial_pow2) n <<= 1;
    t->one = NULL;
    t->buckets = n == 1 ? &t->one : xcalloc(n, sizeof *t->buckets);
    t->mask = (uint32_t)(n - 1);
    t->count = 0;
}

static void free_buckets(struct htable *t)
{
    if (t->buckets != &t->one) free(t->buckets);
}

void ht_free(struct htable *t)
{
    free_buckets(t);
    t->buckets = NULL;
    t->mask = 0;
    t->count = 0;
}

static void ht_grow(struct htable *t)
{
    size_t n = (t->mask + 1) * 2;
    struct ht_node **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i <= t->mask; i++) {
        struct ht_node *e = t->buckets[i];
        while (e) {
            struct ht_node *next = e->next;
            size_t k = e->hash & (n - 1);
            e->next = b[k];
            b[k] = e;
            e = next;
        }
    }
    free_buckets(t);
    t->buckets = b;
    t->mask = (uint32_t)(n - 1);
}

void ht_insert(struct htable *t, struct ht_node *n, uint64_t hash)
{
    if (t->count >= t->mask + 1)
        ht_grow(t);
    n->hash = hash;
    size_t k = hash & t->mask;
    n->next = t->buckets[k];
    t->buckets[k] = n;
    t->count++;
}

struct ht_node *ht_find(const struct htable *t, uint64_t hash, ht_eq_fn eq, const void *key)
{
    for (struct ht_node *e = t->buckets[hash & t->mask]; e; e = e->next)
        if (e->hash == hash && eq(e, key))
            return e;
    return NULL;
}

void ht_remove(struct htable *t, struct ht_node *n)
{
    struct ht_node **pp = &t->buckets[n->hash & t->mask];
    for (; *pp; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            n->next = NULL;
            t->count--;
            return;
        }
    }
}

void ht_each(struct htable *t, void (*fn)(struct ht_node *n, void *ud), void *ud)
{
    for (size_t i = 0; t->buckets && i <= t->mask; i++) {
        struct ht_node *e = t->buckets[i];
        while (e) {
            struct ht_node *next = e->next;
            fn(e, ud);
            e = next;
        }
    }
}
