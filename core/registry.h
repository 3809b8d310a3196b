/* Services and their instances.  A service exists while at least one
 * instance is registered under its name; an instance belongs to one
 * connection (which may hold several, see struct instance in conn.h). */
#ifndef LB_REGISTRY_H
#define LB_REGISTRY_H
#include "conn.h"

struct service {
    struct ht_node node;
    char *name;                  /* in the same allocation, after the struct */
    struct instance **inst;      /* &one until a second instance comes */
    struct instance *one;
    /* 32-bit counts: one service per idle registered connection, typically. */
    uint32_t name_len;
    uint32_t n, cap;
    uint32_t n_fallback;         /* instances on links that prefer local delivery */
    uint32_t n_remote;           /* instances held by links */
    uint32_t rr;                 /* round-robin cursor */
    uint64_t registered_ms;
    uint64_t calls_in, events_in;
};

/* Bumped on every change of who serves what or who listens to what (an
 * instance added, removed or re-registered, a subscription added or
 * removed): lb_routing_gen() of plugin.h. */
extern uint64_t g_routing_gen;

void registry_init(void);
void registry_free(void);
size_t registry_count(void);
struct service *registry_find(const char *name, size_t n);
/* Adds an instance of `name` on c (creating the service).  The caller
 * fills the instance's methods, version, ... */
struct instance *registry_add(struct lb_conn *c, const char *name, size_t n);
/* Removes the instance (deleting the service when it was the last) and
 * frees it. */
void registry_remove(struct instance *inst);
/* Frees an instance's extras (NULL is fine). */
void inst_extra_free(struct inst_extra *x);
/* Next instance (round-robin) that accepts `method` (NULL: any instance),
 * local ones before fallback ones.  Returns NULL if none; *no_method is
 * set when instances exist but none accepts the method. */
struct instance *registry_pick(struct service *s, const char *method, size_t mlen, bool *no_method);
bool instance_accepts(const struct instance *i, const char *m, size_t n);
/* Visits services in no particular order. */
void registry_each(void (*fn)(struct service *s, void *ud), void *ud);
/* The service that declared CRUD resource `res` first (REGISTER
 * `resources`), or NULL. */
struct service *registry_resource_owner(const char *res, size_t n);
#endif
