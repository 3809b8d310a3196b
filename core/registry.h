/* Services and their instances.  A service exists while at least one
 * connection is registered under its name. */
#ifndef LB_REGISTRY_H
#define LB_REGISTRY_H
#include "bus.h"

struct service {
    struct ht_node node;
    char *name;
    size_t name_len;
    struct lb_conn **inst;       /* registered connections */
    size_t n, cap;
    size_t rr;                   /* round-robin cursor */
    uint64_t registered_ms;
};

void registry_init(void);
void registry_free(void);
struct service *registry_find(const char *name, size_t n);
/* Adds conn as an instance of `name` (creating the service). */
struct service *registry_add(struct lb_conn *c, const char *name, size_t n);
/* Removes conn from its service (deleting the service when empty). */
void registry_remove(struct lb_conn *c);
/* Next instance (round-robin) that accepts `method` (NULL: any instance).
 * Returns NULL if none; *no_method is set when instances exist but none
 * accepts the method. */
struct lb_conn *registry_pick(struct service *s, const char *method, size_t mlen, bool *no_method);
bool conn_accepts_method(const struct lb_conn *c, const char *m, size_t n);
/* Visits services in no particular order. */
void registry_each(void (*fn)(struct service *s, void *ud), void *ud);
#endif
