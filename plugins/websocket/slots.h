/*
 * slots: pointers addressed by handles that the plugin hands out itself
 * (Engine.IO session ids, the ids of requests it sends to the bus, the ack
 * ids of calls it sends to Socket.IO clients), so that looking one up is
 * an array index instead of a hash: a handle is (generation << 32 | index),
 * and a slot's generation changes each time it is freed, so a stale or
 * forged handle finds nothing.  Handles stay below 2^52: JavaScript
 * numbers hold them exactly (Socket.IO ack ids are numbers).
 *
 * Freed slots are reused first; the array doubles when full and never
 * shrinks.  Not thread-safe.  The table does not own what it points to.
 */
#ifndef WS_SLOTS_H
#define WS_SLOTS_H
#include <stddef.h>
#include <stdint.h>

#define SLOT_NONE UINT64_MAX

struct slot { void *p; uint32_t gen; uint32_t next_free; };
struct slots { struct slot *s; uint32_t cap, count, free_head; };

void slots_init(struct slots *t);
void slots_free(struct slots *t);   /* the array only */
/* Stores p (not NULL); returns its handle, or SLOT_NONE out of memory. */
uint64_t slots_add(struct slots *t, void *p);
/* The pointer under a live handle, or NULL. */
void *slots_get(const struct slots *t, uint64_t h);
/* Frees the handle's slot (a no-op for a stale one). */
void slots_del(struct slots *t, uint64_t h);
/* For walking: slot i's pointer (NULL when free), i < t->cap.  Deleting
 * the slot being visited is safe. */
static inline void *slots_at(const struct slots *t, uint32_t i) { return t->s[i].p; }
#endif
