#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "registry.h"
#include "util.h"

struct name_key { const char *p; size_t n; };

static struct htable g_services;     /* struct service by name */
uint64_t g_routing_gen;

static bool svc_eq(const struct ht_node *node, const void *key)
{
    const struct service *s = container_of(node, struct service, node);
    const struct name_key *k = key;
    return s->name_len == k->n && memcmp(s->name, k->p, k->n) == 0;
}

void registry_init(void) { ht_init(&g_services, 64); }
size_t registry_count(void) { return g_services.count; }

static void free_service(struct ht_node *n, void *ud)
{
    (void)ud;
    struct service *s = container_of(n, struct service, node);
    if (s->inst != &s->one) free(s->inst);
    free(s);   /* the name with it */
}

void registry_free(void)
{
    if (!g_services.buckets) return;
    ht_each(&g_services, free_service, NULL);
    ht_free(&g_services);
}

struct service *registry_find(const char *name, size_t n)
{
    struct name_key k = { name, n };
    struct ht_node *node = ht_find(&g_services, hash_bytes(name, n), svc_eq, &k);
    return node ? container_of(node, struct service, node) : NULL;
}

struct instance *registry_add(struct lb_conn *c, const char *name, size_t n)
{
    struct service *s = registry_find(name, n);
    if (!s) {
        /* The name in the same block: one allocation per service. */
        s = xcalloc(1, sizeof *s + n + 1);
        s->name = memcpy((char *)(s + 1), name, n);
        s->name_len = n;
        s->registered_ms = now_ms();
        /* Most services have one instance: it needs no array. */
        s->inst = &s->one;
        s->cap = 1;
        ht_insert(&g_services, &s->node, hash_bytes(name, n));
    }
    if (s->n == s->cap) {
        s->cap *= 2;
        if (s->inst == &s->one) {
            s->inst = xmalloc(s->cap * sizeof *s->inst);
            s->inst[0] = s->one;
        } else {
            s->inst = xrealloc(s->inst, s->cap * sizeof *s->inst);
        }
    }
    struct instance *i = xcalloc(1, sizeof *i);
    i->svc = s;
    i->name = s->name;
    i->name_len = s->name_len;
    i->conn = c;
    i->registered_ms = now_ms();
    i->svc_index = s->n;
    s->inst[s->n++] = i;
    s->n_fallback += c->fallback;
    s->n_remote += c->link;
    g_routing_gen++;
    /* The connection's list keeps registration order: the first is its
     * primary name. */
    struct instance **tail = &c->inst;
    while (*tail) tail = &(*tail)->next;
    *tail = i;
    c->n_inst++;
    return i;
}

void inst_extra_free(struct inst_extra *x)
{
    if (!x) return;
    free(x->resources);
    free(x->version);
    free(x->metadata_json);
    free(x->node);
    free(x);
}

void registry_remove(struct instance *i)
{
    struct service *s = i->svc;
    struct lb_conn *c = i->conn;
    for (struct instance **pp = &c->inst; *pp; pp = &(*pp)->next)
        if (*pp == i) { *pp = i->next; c->n_inst--; break; }
    /* Swap-remove keeps removal O(1); the moved instance learns its index. */
    size_t k = i->svc_index;
    s->inst[k] = s->inst[--s->n];
    s->inst[k]->svc_index = k;
    s->n_fallback -= c->fallback;
    s->n_remote -= c->link;
    g_routing_gen++;
    if (s->n == 0) {
        ht_remove(&g_services, &s->node);
        free_service(&s->node, NULL);
    }
    free(i->methods);
    inst_extra_free(i->x);
    free(i);
}

static int cmp_method(const void *key, const void *elem)
{
    const struct name_key *k = key;
    const char *m = *(const char *const *)elem;
    int r = strncmp(k->p, m, k->n);
    if (r) return r;
    return m[k->n] ? -1 : 0;
}

bool instance_accepts(const struct instance *i, const char *m, size_t n)
{
    if (i->n_methods == 0) return true;
    struct name_key k = { m, n };
    return bsearch(&k, i->methods, i->n_methods, sizeof *i->methods, cmp_method) != NULL;
}

static struct instance *pick_pass(struct service *s, const char *method, size_t mlen, bool want_fallback)
{
    for (size_t tries = 0; tries < s->n; tries++) {
        struct instance *i = s->inst[s->rr++ % s->n];
        if (i->conn->fallback != want_fallback) continue;
        if (!method || instance_accepts(i, method, mlen)) return i;
    }
    return NULL;
}

struct instance *registry_pick(struct service *s, const char *method, size_t mlen, bool *no_method)
{
    *no_method = false;
    struct instance *i = s->n_fallback < s->n ? pick_pass(s, method, mlen, false) : NULL;
    if (!i && s->n_fallback) i = pick_pass(s, method, mlen, true);
    if (!i) *no_method = s->n > 0;
    return i;
}

struct each_ctx { void (*fn)(struct service *, void *); void *ud; };
static void each_cb(struct ht_node *n, void *ud)
{
    struct each_ctx *e = ud;
    e->fn(container_of(n, struct service, node), e->ud);
}

void registry_each(void (*fn)(struct service *s, void *ud), void *ud)
{
    struct each_ctx e = { fn, ud };
    ht_each(&g_services, each_cb, &e);
}

struct owner_ctx { const char *p; size_t n; struct service *found; uint64_t at; };

static void owner_cb(struct service *s, void *ud)
{
    struct owner_ctx *o = ud;
    for (size_t k = 0; k < s->n; k++) {
        const struct instance *i = s->inst[k];
        const struct inst_extra *x = i->x;
        for (size_t r = 0; x && r < x->n_resources; r++) {
            if (strlen(x->resources[r]) == o->n && memcmp(x->resources[r], o->p, o->n) == 0 &&
                (!o->found || i->registered_ms < o->at)) {
                o->found = s;
                o->at = i->registered_ms;
            }
        }
    }
}

struct service *registry_resource_owner(const char *res, size_t n)
{
    /* CRUD requests are rare next to calls and events: a walk is cheaper
     * to keep right than an index kept in step with every REGISTER. */
    struct owner_ctx o = { res, n, NULL, 0 };
    registry_each(owner_cb, &o);
    return o.found;
}
