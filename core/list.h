/* Intrusive circular doubly linked list (the Linux kernel's shape). */
#ifndef LB_LIST_H
#define LB_LIST_H
#include <stddef.h>
#include <stdbool.h>

struct list_head { struct list_head *next, *prev; };

static inline void list_init(struct list_head *h) { h->next = h->prev = h; }
static inline bool list_empty(const struct list_head *h) { return h->next == h; }
static inline void list_add_tail(struct list_head *h, struct list_head *n)
{
    n->prev = h->prev; n->next = h;
    h->prev->next = n; h->prev = n;
}
static inline void list_del(struct list_head *n)
{
    n->prev->next = n->next; n->next->prev = n->prev;
    n->next = n->prev = n;
}
#define list_entry(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define list_for_each_safe(pos, tmp, head) \
    for (pos = (head)->next, tmp = pos->next; pos != (head); pos = tmp, tmp = pos->next)
#endif
