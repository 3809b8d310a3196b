#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "pattern.h"
#include "htable.h"
#include "util.h"

struct subs { void **v; size_t n, cap; };

struct pnode {
    struct ht_node hn;           /* in parent->kids */
    char *seg;
    size_t seg_len;
    struct pnode *parent;
    struct htable kids;          /* literal segments (lazily created) */
    struct pnode *star;          /* '*' child */
    struct subs here;            /* patterns ending at this node */
    struct subs tail;            /* patterns "<this node>:>" */
};

struct ptrie { struct pnode root; size_t count; };

struct seg_key { const char *p; size_t n; };

static bool seg_eq(const struct ht_node *n, const void *key)
{
    const struct pnode *p = container_of(n, struct pnode, hn);
    const struct seg_key *k = key;
    return p->seg_len == k->n && memcmp(p->seg, k->p, k->n) == 0;
}

struct ptrie *ptrie_new(void) { return xcalloc(1, sizeof(struct ptrie)); }

static void node_free(struct pnode *n);
static void kid_free(struct ht_node *h, void *ud) { (void)ud; struct pnode *k = container_of(h, struct pnode, hn); node_free(k); free(k); }

static void node_free(struct pnode *n)
{
    if (n->kids.buckets) { ht_each(&n->kids, kid_free, NULL); ht_free(&n->kids); }
    if (n->star) { node_free(n->star); free(n->star); }
    free(n->here.v);
    free(n->tail.v);
    free(n->seg);
}

void ptrie_free(struct ptrie *t)
{
    if (!t) return;
    node_free(&t->root);
    free(t);
}

size_t ptrie_count(const struct ptrie *t) { return t->count; }

static int subs_add(struct subs *s, void *sub)
{
    for (size_t i = 0; i < s->n; i++) if (s->v[i] == sub) return 1;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = sub;
    return 0;
}

static int subs_del(struct subs *s, void *sub)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i] == sub) { s->v[i] = s->v[--s->n]; return 0; }
    }
    return -1;
}

static size_t seg_end(const char *p, size_t i, size_t n)
{
    while (i < n && p[i] != ':') i++;
    return i;
}

static struct pnode *child(struct pnode *n, const char *s, size_t len, bool create)
{
    if (len == 1 && s[0] == '*') {
        if (!n->star && create) {
            n->star = xcalloc(1, sizeof *n->star);
            n->star->seg = xstrndup("*", 1);
            n->star->seg_len = 1;
            n->star->parent = n;
        }
        return n->star;
    }
    struct seg_key k = { s, len };
    uint64_t h = hash_bytes(s, len);
    if (n->kids.buckets) {
        struct ht_node *f = ht_find(&n->kids, h, seg_eq, &k);
        if (f) return container_of(f, struct pnode, hn);
    }
    if (!create) return NULL;
    if (!n->kids.buckets) ht_init(&n->kids, 4);
    struct pnode *c = xcalloc(1, sizeof *c);
    c->seg = xstrndup(s, len);
    c->seg_len = len;
    c->parent = n;
    ht_insert(&n->kids, &c->hn, h);
    return c;
}

/* Walks to the node owning `pat`; *tail is set for a final '>'. */
static struct pnode *walk(struct ptrie *t, const char *pat, size_t n, bool create, bool *tail)
{
    struct pnode *node = &t->root;
    *tail = false;
    for (size_t i = 0; i < n;) {
        size_t e = seg_end(pat, i, n);
        if (e == n && e - i == 1 && pat[i] == '>') { *tail = true; return node; }
        node = child(node, pat + i, e - i, create);
        if (!node) return NULL;
        i = e + 1;
    }
    return node;
}

int ptrie_add(struct ptrie *t, const char *pat, size_t n, void *sub)
{
    bool tail;
    struct pnode *node = walk(t, pat, n, true, &tail);
    int r = subs_add(tail ? &node->tail : &node->here, sub);
    if (r == 0) t->count++;
    return r;
}

static bool node_empty(const struct pnode *n)
{
    return n->here.n == 0 && n->tail.n == 0 && !n->star && (!n->kids.buckets || n->kids.count == 0);
}

/* Frees nodes that no longer hold anything, bottom-up, so that pattern
 * churn does not leak memory. */
static void prune(struct pnode *n)
{
    while (n && n->parent && node_empty(n)) {
        struct pnode *p = n->parent;
        if (p->star == n) p->star = NULL;
        else ht_remove(&p->kids, &n->hn);
        node_free(n);
        free(n);
        n = p;
    }
}

int ptrie_remove(struct ptrie *t, const char *pat, size_t n, void *sub)
{
    bool tail;
    struct pnode *node = walk(t, pat, n, false, &tail);
    if (!node) return -1;
    if (subs_del(tail ? &node->tail : &node->here, sub)) return -1;
    t->count--;
    prune(node);
    return 0;
}

struct match_ctx { const char *ev; size_t n; void (*fn)(void *, void *); void *ud; size_t calls; };

static void emit_all(struct match_ctx *m, const struct subs *s)
{
    for (size_t i = 0; i < s->n; i++) { m->fn(s->v[i], m->ud); m->calls++; }
}

static void match_from(struct match_ctx *m, const struct pnode *node, size_t i)
{
    if (i > m->n) { emit_all(m, &node->here); return; }
    /* At least one segment remains: '>' patterns at this node match. */
    emit_all(m, &node->tail);
    size_t e = seg_end(m->ev, i, m->n);
    if (node->kids.buckets) {
        struct seg_key k = { m->ev + i, e - i };
        struct ht_node *f = ht_find(&node->kids, hash_bytes(k.p, k.n), seg_eq, &k);
        if (f) match_from(m, container_of(f, struct pnode, hn), e + 1);
    }
    if (node->star) match_from(m, node->star, e + 1);
}

size_t ptrie_match(struct ptrie *t, const char *event, size_t n,
                   void (*fn)(void *sub, void *ud), void *ud)
{
    struct match_ctx m = { event, n, fn, ud, 0 };
    if (n == 0) return 0;
    match_from(&m, &t->root, 0);
    return m.calls;
}
