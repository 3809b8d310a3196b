/*
 * Subscription trie.  Event names are ':'-separated segments; a pattern
 * segment '*' matches exactly one segment and a final '>' matches one or
 * more.  Matching walks at most (segments x wildcard branches) nodes and
 * never allocates, whatever the number of subscriptions.
 * Subscribers are opaque pointers owned by the caller.
 */
#ifndef LB_PATTERN_H
#define LB_PATTERN_H
#include <stddef.h>

struct ptrie;

struct ptrie *ptrie_new(void);
void ptrie_free(struct ptrie *t);
/* Returns 0 when added, 1 when `sub` already held this pattern. The
 * pattern must be valid (valid_event_pattern). */
int ptrie_add(struct ptrie *t, const char *pat, size_t n, void *sub);
/* Returns 0 when removed, -1 when `sub` did not hold this pattern. */
int ptrie_remove(struct ptrie *t, const char *pat, size_t n, void *sub);
/* Calls fn for every subscriber of a pattern matching `event`; a
 * subscriber holding several matching patterns is called once per
 * pattern (the caller de-duplicates).  Returns the number of calls. */
size_t ptrie_match(struct ptrie *t, const char *event, size_t n,
                   void (*fn)(void *sub, void *ud), void *ud);
size_t ptrie_count(const struct ptrie *t);   /* subscriptions held */
#endif
