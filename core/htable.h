/* Intrusive chained hash table: the caller embeds a struct ht_node in its
 * own record, so inserting never allocates (the bucket array grows by
 * doubling, amortised).  Keys are compared by a caller-supplied function. */
#ifndef LB_HTABLE_H
#define LB_HTABLE_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

struct ht_node { struct ht_node *next; uint64_t hash; };
/* A table of one bucket keeps it in `one` (buckets == &one): a
 * connection's table of the few patterns it holds costs no allocation.
 * So a table is not moved (copied) once initialised. */
struct htable { struct ht_node **buckets; uint32_t mask, count; struct ht_node *one; };

typedef bool (*ht_eq_fn)(const struct ht_node *node, const void *key);

void ht_init(struct htable *t, size_t initial_pow2);
void ht_free(struct htable *t);   /* frees the bucket array, not the nodes */
void ht_insert(struct htable *t, struct ht_node *n, uint64_t hash);
struct ht_node *ht_find(const struct htable *t, uint64_t hash, ht_eq_fn eq, const void *key);
void ht_remove(struct htable *t, struct ht_node *n);

/* Visits every node; the callback may remove the node it is given. */
void ht_each(struct htable *t, void (*fn)(struct ht_node *n, void *ud), void *ud);
#endif
