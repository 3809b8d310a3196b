/* Handle-addressed pointers: see slots.h. */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "slots.h"

#define GEN_MASK 0xFFFFFu            /* 20 bits: handles < 2^52 */
#define NO_FREE UINT32_MAX

void slots_init(struct slots *t)
{
    memset(t, 0, sizeof *t);
    t->free_head = NO_FREE;
}

void slots_free(struct slots *t)
{
    free(t->s);
    slots_init(t);
}

static int grow(struct slots *t)
{
    uint32_t cap = t->cap ? t->cap * 2 : 8;
    if (cap <= t->cap) return -1;
    struct slot *s = realloc(t->s, (size_t)cap * sizeof *s);
    if (!s) return -1;
    /* New slots join the free list in index order. */
    for (uint32_t i = t->cap; i < cap; i++) s[i] = (struct slot){ NULL, 0, i + 1 < cap ? i + 1 : t->free_head };
    t->free_head = t->cap;
    t->s = s;
    t->cap = cap;
    return 0;
}

uint64_t slots_add(struct slots *t, void *p)
{
    if (t->free_head == NO_FREE && grow(t) < 0) return SLOT_NONE;
    uint32_t i = t->free_head;
    struct slot *s = &t->s[i];
    t->free_head = s->next_free;
    s->p = p;
    t->count++;
    return (uint64_t)s->gen << 32 | i;
}

void *slots_get(const struct slots *t, uint64_t h)
{
    uint32_t i = (uint32_t)h;
    if (h >> 52 || i >= t->cap || t->s[i].gen != (uint32_t)(h >> 32)) return NULL;
    return t->s[i].p;
}

void slots_del(struct slots *t, uint64_t h)
{
    if (!slots_get(t, h)) return;
    struct slot *s = &t->s[(uint32_t)h];
    s->p = NULL;
    s->gen = (s->gen + 1) & GEN_MASK;
    s->next_free = t->free_head;
    t->free_head = (uint32_t)h;
    t->count--;
}
