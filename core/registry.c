#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "registry.h"
#include "util.h"

struct name_key { const char *p; size_t n; };

static bool svc_eq(const struct ht_node *node, const void *key)
{
    const struct service *s = container_of(node, struct service, node);
    const struct name_key *k = key;
    return s->name_len == k->n && memcmp(s->name, k->p, k->n) == 0;
}

void registry_init(void) { ht_init(&g_bus.services, 64); }

static void free_service(struct ht_node *n, void *ud)
{
    (void)ud;
    struct service *s = container_of(n, struct service, node);
    free(s->inst);
    free(s->name);
    free(s);
}

void registry_free(void)
{
    ht_each(&g_bus.services, free_service, NULL);
    ht_free(&g_bus.services);
}

struct service *registry_find(const char *name, size_t n)
{
    struct name_key k = { name, n };
    struct ht_node *node = ht_find(&g_bus.services, hash_bytes(name, n), svc_eq, &k);
    return node ? container_of(node, struct service, node) : NULL;
}

struct service *registry_add(struct lb_conn *c, const char *name, size_t n)
{
    struct service *s = registry_find(name, n);
    if (!s) {
        s = xcalloc(1, sizeof *s);
        s->name = xstrndup(name, n);
        s->name_len = n;
        s->registered_ms = now_ms();
        ht_insert(&g_bus.services, &s->node, hash_bytes(name, n));
        g_bus.n_services++;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4;
        s->inst = xrealloc(s->inst, s->cap * sizeof *s->inst);
    }
    c->svc = s;
    c->svc_index = s->n;
    s->inst[s->n++] = c;
    return s;
}

void registry_remove(struct lb_conn *c)
{
    struct service *s = c->svc;
    if (!s) return;
    size_t i = c->svc_index;
    /* Swap-remove keeps removal O(1); the moved instance learns its index. */
    s->inst[i] = s->inst[--s->n];
    s->inst[i]->svc_index = i;
    c->svc = NULL;
    if (s->n == 0) {
        ht_remove(&g_bus.services, &s->node);
        g_bus.n_services--;
        free_service(&s->node, NULL);
    }
}

static int cmp_method(const void *key, const void *elem)
{
    const struct name_key *k = key;
    const char *m = *(const char *const *)elem;
    int r = strncmp(k->p, m, k->n);
    if (r) return r;
    return m[k->n] ? -1 : 0;
}

bool conn_accepts_method(const struct lb_conn *c, const char *m, size_t n)
{
    if (c->n_methods == 0) return true;
    struct name_key k = { m, n };
    return bsearch(&k, c->methods, c->n_methods, sizeof *c->methods, cmp_method) != NULL;
}

struct lb_conn *registry_pick(struct service *s, const char *method, size_t mlen, bool *no_method)
{
    *no_method = false;
    for (size_t tries = 0; tries < s->n; tries++) {
        struct lb_conn *c = s->inst[s->rr++ % s->n];
        if (!method || conn_accepts_method(c, method, mlen))
            return c;
    }
    *no_method = s->n > 0;
    return NULL;
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
    ht_each(&g_bus.services, each_cb, &e);
}
