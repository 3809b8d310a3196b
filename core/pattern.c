#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "pattern.h"
#include "htable.h"
#include "util.h"

/* The subscribers of one pattern: most patterns have one (a service's own
 * events), kept in `one` (v == &one) until a second comes. */
struct subs { void **v; uint32_t n, cap; void *one; };

/* What a node has only when patterns go on past it. */
struct pbranch {
    struct htable kids;          /* literal segments (lazily created) */
    struct pnode *star;          /* '*' child */
    struct subs tail;            /* patterns "<this node>:>" */
};

/* One per distinct pattern segment.  A service subscribed to "idle:<its
 * own id>" has a leaf to itself, so a leaf is kept small: the segment
 * inline, and what only inner nodes need in `br`. */
struct pnode {
    struct ht_node hn;           /* in parent->br->kids */
    size_t seg_len;
    struct pnode *parent;
    struct subs here;            /* patterns ending at this node */
    struct pbranch *br;          /* NULL while nothing goes on past it */
    char seg[];                  /* seg_len bytes and a NUL */
};

struct ptrie { struct pnode *root; size_t count; };

struct seg_key { const char *p; size_t n; };

static bool seg_eq(const struct ht_node *n, const void *key)
{
    const struct pnode *p = container_of(n, struct pnode, hn);
    const struct seg_key *k = key;
    return p->seg_len == k->n && memcmp(p->seg, k->p, k->n) == 0;
}

static struct pnode *node_new(struct pnode *parent, const char *seg, size_t len)
{
    struct pnode *n = xcalloc(1, sizeof *n + len + 1);
    memcpy(n->seg, seg, len);
    n->seg_len = len;
    n->parent = parent;
    return n;
}

struct ptrie *ptrie_new(void)
{
    struct ptrie *t = xcalloc(1, sizeof *t);
    t->root = node_new(NULL, "", 0);
    return t;
}

static void node_free(struct pnode *n);
static void sublist_free(struct subs *s) { if (s->v != &s->one) free(s->v); }
static void kid_free(struct ht_node *h, void *ud) { (void)ud; struct pnode *k = container_of(h, struct pnode, hn); node_free(k); free(k); }

static void branch_free(struct pnode *n)
{
    struct pbranch *b = n->br;
    if (!b) return;
    if (b->kids.buckets) { ht_each(&b->kids, kid_free, NULL); ht_free(&b->kids); }
    if (b->star) { node_free(b->star); free(b->star); }
    sublist_free(&b->tail);
    free(b);
    n->br = NULL;
}

static void node_free(struct pnode *n)
{
    branch_free(n);
    sublist_free(&n->here);
}

static struct pbranch *branch(struct pnode *n)
{
    if (!n->br) n->br = xcalloc(1, sizeof *n->br);
    return n->br;
}

void ptrie_free(struct ptrie *t)
{
    if (!t) return;
    node_free(t->root);
    free(t->root);
    free(t);
}

size_t ptrie_count(const struct ptrie *t) { return t->count; }

static int subs_add(struct subs *s, void *sub)
{
    for (size_t i = 0; i < s->n; i++) if (s->v[i] == sub) return 1;
    if (s->cap == 0) {
        s->v = &s->one;
        s->cap = 1;
    } else if (s->n == s->cap) {
        s->cap *= 2;
        if (s->v == &s->one) {
            s->v = xmalloc(s->cap * sizeof *s->v);
            s->v[0] = s->one;
        } else {
            s->v = xrealloc(s->v, s->cap * sizeof *s->v);
        }
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
    struct pbranch *b = n->br;
    if (len == 1 && s[0] == '*') {
        if (b && b->star) return b->star;
        if (!create) return NULL;
        struct pnode *star = node_new(n, "*", 1);
        branch(n)->star = star;
        return star;
    }
    struct seg_key k = { s, len };
    uint64_t h = hash_bytes(s, len);
    if (b && b->kids.buckets) {
        struct ht_node *f = ht_find(&b->kids, h, seg_eq, &k);
        if (f) return container_of(f, struct pnode, hn);
    }
    if (!create) return NULL;
    b = branch(n);
    if (!b->kids.buckets) ht_init(&b->kids, 4);
    struct pnode *c = node_new(n, s, len);
    ht_insert(&b->kids, &c->hn, h);
    return c;
}

/* Walks to the node owning `pat`; *tail is set for a final '>'. */
static struct pnode *walk(struct ptrie *t, const char *pat, size_t n, bool create, bool *tail)
{
    struct pnode *node = t->root;
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
    int r = subs_add(tail ? &branch(node)->tail : &node->here, sub);
    if (r == 0) t->count++;
    return r;
}

/* Frees n's branch once nothing goes on past n. */
static void branch_trim(struct pnode *n)
{
    const struct pbranch *b = n->br;
    if (b && b->tail.n == 0 && !b->star && (!b->kids.buckets || b->kids.count == 0)) branch_free(n);
}

/* Frees nodes that no longer hold anything, bottom-up, so that pattern
 * churn does not leak memory. */
static void prune(struct pnode *n)
{
    while (n) {
        branch_trim(n);
        if (!n->parent || n->here.n || n->br) return;
        struct pnode *p = n->parent;
        if (p->br->star == n) p->br->star = NULL;
        else ht_remove(&p->br->kids, &n->hn);
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
    if (tail && !node->br) return -1;
    if (subs_del(tail ? &node->br->tail : &node->here, sub)) return -1;
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
    const struct pbranch *b = node->br;
    if (!b) return;
    /* At least one segment remains: '>' patterns at this node match. */
    emit_all(m, &b->tail);
    size_t e = seg_end(m->ev, i, m->n);
    if (b->kids.buckets) {
        struct seg_key k = { m->ev + i, e - i };
        struct ht_node *f = ht_find(&b->kids, hash_bytes(k.p, k.n), seg_eq, &k);
        if (f) match_from(m, container_of(f, struct pnode, hn), e + 1);
    }
    if (b->star) match_from(m, b->star, e + 1);
}

size_t ptrie_match(struct ptrie *t, const char *event, size_t n,
                   void (*fn)(void *sub, void *ud), void *ud)
{
    struct match_ctx m = { event, n, fn, ud, 0 };
    if (n == 0) return 0;
    match_from(&m, t->root, 0);
    return m.calls;
}
