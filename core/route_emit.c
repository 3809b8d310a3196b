/*
 * EMIT, SUBSCRIBE, UNSUBSCRIBE.  Subscriptions live in one trie (pattern
 * -> connections) for matching, and in each connection's hash set of the
 * patterns it holds, so that every subscription change is linear in the
 * size of the request whatever the connection already holds.
 *
 * Back-pressure: an EMIT to a service pauses its sender while the
 * recipient is backed up, like a CALL; a broadcast never does — one
 * subscriber that stops reading must not hold every publisher.  A
 * subscriber past outbuf_max is handled by [bus] slow_consumer instead.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "router_int.h"
#include "registry.h"
#include "pattern.h"
#include "stats.h"
#include "log.h"
#include "util.h"

struct sub_entry {
    struct ht_node node;
    uint32_t len;
    char pat[];
};

struct pat_key { const char *p; size_t n; };

static struct ptrie *g_subs;
static struct jw g_fan;              /* the EVENT sent to every recipient */
static struct lb_conn **g_recips;    /* recipients of the current EMIT */
static size_t g_n_recips, g_cap_recips;
static uint64_t g_gen;               /* de-duplicates recipients */
/* Scratch for counting the new patterns of one request. */
static struct pat_node { struct ht_node node; struct pat_key k; } *g_tmp;
static size_t g_cap_tmp;

void subs_init(void)
{
    g_subs = ptrie_new();
    jw_init(&g_fan, 4096);
}

void subs_free(void)
{
    ptrie_free(g_subs);
    g_subs = NULL;
    jw_free(&g_fan);
    free(g_recips);
    g_recips = NULL;
    g_cap_recips = 0;
    free(g_tmp);
    g_tmp = NULL;
    g_cap_tmp = 0;
}

size_t subs_count(void) { return g_subs ? ptrie_count(g_subs) : 0; }

/* ---- per-connection pattern sets ----------------------------------- */

static bool entry_eq(const struct ht_node *node, const void *key)
{
    const struct sub_entry *e = container_of(node, struct sub_entry, node);
    const struct pat_key *k = key;
    return e->len == k->n && memcmp(e->pat, k->p, k->n) == 0;
}

static struct sub_entry *holds(struct lb_conn *c, const char *p, size_t n)
{
    if (!c->subs.buckets) return NULL;
    struct pat_key k = { p, n };
    struct ht_node *node = ht_find(&c->subs, hash_bytes(p, n), entry_eq, &k);
    return node ? container_of(node, struct sub_entry, node) : NULL;
}

static void subscribe_one(struct lb_conn *c, const char *p, size_t n)
{
    if (holds(c, p, n)) return;
    if (!c->subs.buckets) ht_init(&c->subs, 8);
    struct sub_entry *e = xmalloc(sizeof *e + n + 1);
    e->len = (uint32_t)n;
    memcpy(e->pat, p, n);
    e->pat[n] = 0;
    ht_insert(&c->subs, &e->node, hash_bytes(p, n));
    ptrie_add(g_subs, p, n, c);
    g_routing_gen++;
}

static void unsubscribe_one(struct lb_conn *c, const char *p, size_t n)
{
    struct sub_entry *e = holds(c, p, n);
    if (!e) return;
    ptrie_remove(g_subs, p, n, c);
    ht_remove(&c->subs, &e->node);
    free(e);
    g_routing_gen++;
}

static bool tmp_eq(const struct ht_node *node, const void *key)
{
    const struct pat_node *t = container_of(node, struct pat_node, node);
    const struct pat_key *k = key;
    return t->k.n == k->n && memcmp(t->k.p, k->p, k->n) == 0;
}

size_t subs_new_count(struct lb_conn *c, const struct env_val *arr)
{
    /* A throwaway hash set of the request's own patterns finds repeats
     * within it; the connection's set finds what it holds already. */
    struct htable seen;
    ht_init(&seen, 64);
    const char *cur = NULL;
    struct env_val v;
    size_t n = 0, used = 0;
    while (env_array_next(arr, &cur, &v)) {
        if (holds(c, v.p, v.n)) continue;
        struct pat_key k = { v.p, v.n };
        uint64_t h = hash_bytes(v.p, v.n);
        if (ht_find(&seen, h, tmp_eq, &k)) continue;
        if (used == g_cap_tmp) {
            /* Grown, not moved under `seen`: a rebuild keeps it consistent. */
            size_t cap = g_cap_tmp ? g_cap_tmp * 2 : 256;
            struct pat_node *nt = xcalloc(cap, sizeof *nt);
            ht_free(&seen);
            ht_init(&seen, cap);
            for (size_t i = 0; i < used; i++) {
                nt[i].k = g_tmp[i].k;
                ht_insert(&seen, &nt[i].node, hash_bytes(nt[i].k.p, nt[i].k.n));
            }
            free(g_tmp);
            g_tmp = nt;
            g_cap_tmp = cap;
        }
        g_tmp[used].k = k;
        ht_insert(&seen, &g_tmp[used].node, h);
        used++;
        n++;
    }
    ht_free(&seen);
    return n;
}

void subs_add_all(struct lb_conn *c, const struct env_val *arr)
{
    const char *cur = NULL;
    struct env_val v;
    while (env_array_next(arr, &cur, &v)) subscribe_one(c, v.p, v.n);
}

static void remove_all(struct lb_conn *c, const struct env_val *arr)
{
    const char *cur = NULL;
    struct env_val v;
    while (env_array_next(arr, &cur, &v)) unsubscribe_one(c, v.p, v.n);
}

static void forget_entry(struct ht_node *node, void *ud)
{
    struct lb_conn *c = ud;
    struct sub_entry *e = container_of(node, struct sub_entry, node);
    ptrie_remove(g_subs, e->pat, e->len, c);
    ht_remove(&c->subs, node);
    free(e);
    g_routing_gen++;
}

void subs_forget(struct lb_conn *c)
{
    if (!c->subs.buckets) return;
    ht_each(&c->subs, forget_entry, c);
    ht_free(&c->subs);
}

/* ---- the patterns this node's own connections hold (plugin.h) ------ */

struct each_pat {
    struct htable seen;          /* struct pat_node over the patterns given so far */
    struct pat_node *nodes;
    size_t used, cap;
    void (*fn)(void *ud, const char *pat, size_t n);
    void *ud;
};

static void each_pattern(struct ht_node *node, void *ud)
{
    struct each_pat *w = ud;
    struct sub_entry *e = container_of(node, struct sub_entry, node);
    struct pat_key k = { e->pat, e->len };
    uint64_t h = hash_bytes(e->pat, e->len);
    if (ht_find(&w->seen, h, tmp_eq, &k)) return;
    if (w->used == w->cap) {
        /* Grown by rebuilding the set over the new array (see subs_new_count). */
        size_t cap = w->cap ? w->cap * 2 : 64;
        struct pat_node *nn = xcalloc(cap, sizeof *nn);
        ht_free(&w->seen);
        ht_init(&w->seen, cap);
        for (size_t i = 0; i < w->used; i++) {
            nn[i].k = w->nodes[i].k;
            ht_insert(&w->seen, &nn[i].node, hash_bytes(nn[i].k.p, nn[i].k.n));
        }
        free(w->nodes);
        w->nodes = nn;
        w->cap = cap;
    }
    w->nodes[w->used].k = k;
    ht_insert(&w->seen, &w->nodes[w->used].node, h);
    w->used++;
    w->fn(w->ud, e->pat, e->len);
}

static void each_conn_patterns(struct lb_conn *c, void *ud)
{
    if (c->link || c->dead || !c->subs.buckets) return;
    ht_each(&c->subs, each_pattern, ud);
}

size_t lb_subscriptions_each(struct lb_plugin_ctx *ctx, void (*fn)(void *ud, const char *pat, size_t n), void *ud)
{
    (void)ctx;
    struct each_pat w = { .fn = fn, .ud = ud };
    ht_init(&w.seen, 64);
    conn_each(each_conn_patterns, &w);
    ht_free(&w.seen);
    free(w.nodes);
    return w.used;
}

uint64_t lb_routing_gen(struct lb_plugin_ctx *ctx)
{
    (void)ctx;
    return g_routing_gen;
}

void handle_subscribe(const struct sender *s, struct lb_msg *m, bool add)
{
    const struct env_val *evs = &m->env.f[F_EVENTS];
    char why[160];
    long n = check_name_array(evs, valid_event_pattern, MAX_SUBS_PER_CONN, "events", why, sizeof why);
    if (n < 0) { refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "%s", why); return; }
    if (add && s->c->subs.count + subs_new_count(s->c, evs) > MAX_SUBS_PER_CONN) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "a connection may hold at most %d subscriptions", MAX_SUBS_PER_CONN);
        return;
    }
    if (add) subs_add_all(s->c, evs);
    else remove_all(s->c, evs);
    if (m->env.f[F_ID].kind == J_STRING) out_ack(s->c, m, "subscriptions", s->c->subs.count, -1);
}

/* ---- EMIT ---------------------------------------------------------- */

static void recips_push(struct lb_conn *c)
{
    if (c->deliver_gen == g_gen || conn_closing(c)) return;
    c->deliver_gen = g_gen;
    if (g_n_recips == g_cap_recips) {
        g_cap_recips = g_cap_recips ? g_cap_recips * 2 : 64;
        g_recips = xrealloc(g_recips, g_cap_recips * sizeof *g_recips);
    }
    g_recips[g_n_recips++] = c;
    conn_ref(c);
}

struct collect { struct lb_conn *from; };

static void collect_subscriber(void *sub, void *ud)
{
    struct lb_conn *c = sub;
    const struct collect *k = ud;
    /* Loop prevention: a broadcast that came over a link is not sent back
     * out over another. */
    if (k->from->link && c->link) return;
    recips_push(c);
}

/* The instance of a service an EMIT to it goes to (a link's when the
 * service is elsewhere), or NULL. */
static struct lb_conn *service_recipient(const struct sender *s, const struct lb_msg *m, struct lb_str name)
{
    struct service *svc = registry_find(name.p, name.n);
    if (svc) {
        bool unused;
        struct instance *i = registry_pick(svc, NULL, 0, &unused);
        if (i && !(s->c->link && i->conn->link)) { svc->events_in++; return i->conn; }
        return NULL;
    }
    return g_hooks_n.route && !s->c->link ? hooks_route(s->c, m, name) : NULL;
}

static bool emit_fields_ok(const struct sender *s, struct lb_msg *m, bool *broadcast)
{
    const struct env_val *f = m->env.f;
    const struct env_val *ev = &f[F_EVENT], *to = &f[F_TO], *id = &f[F_ID], *ack = &f[F_ACK];
    if (id->kind != J_NONE && !id_usable(id)) {
        struct lb_msg copy = *m;
        copy.env.f[F_ID].kind = J_NONE;   /* not echoed: it is what is wrong */
        refuse(s, &copy, LB_E_INVALID_MESSAGE, -1, NULL, "\"id\" must be a string of 1-%d bytes", LB_MAX_ID);
        return false;
    }
    if (ev->kind != J_STRING || ev->escaped || !valid_event_name(ev->p, ev->n)) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL,
               "EMIT needs \"event\": 1-%d characters, ':'-separated segments of A-Z a-z 0-9 _ . - / @", LB_MAX_EVENT);
        return false;
    }
    *broadcast = to->kind == J_NONE || env_str_eq(to, "broadcast", 9);
    if (!*broadcast && (to->kind != J_STRING || to->escaped || !valid_service_name(to->p, to->n))) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "\"to\" must be a service name or \"broadcast\"");
        return false;
    }
    if (ack->kind != J_NONE && ack->kind != J_TRUE && ack->kind != J_FALSE) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "\"ack\" must be true or false");
        return false;
    }
    return true;
}

/* Sends the EVENT to every collected recipient; returns local deliveries
 * and counts links in *remote. */
static size_t deliver_all(const struct sender *s, struct lb_msg *m, bool broadcast, long *remote)
{
    size_t delivered = 0;
    out_event(&g_fan, m, s->name, s->len, broadcast);
    for (size_t i = 0; i < g_n_recips; i++) {
        struct lb_conn *r = g_recips[i];
        struct hook_refusal why;
        if (g_hooks_n.deliver && hooks_deliver(s->c, r, m, &why) == LB_DENY) continue;
        int rc = broadcast ? conn_send_broadcast(r, g_fan.buf, g_fan.len)
                           : conn_send(r, g_fan.buf, g_fan.len, LB_MSG_EVENT);
        if (rc != 0) continue;
        if (!broadcast) conn_backpressure(s->c, r);
        if (r->link) (*remote)++;
        else delivered++;
    }
    return delivered;
}

void handle_emit(const struct sender *s, struct lb_msg *m)
{
    bool broadcast;
    if (!emit_fields_ok(s, m, &broadcast)) return;
    const struct env_val *f = m->env.f;
    g_n_recips = 0;
    g_gen++;
    if (broadcast) {
        struct collect k = { s->c };
        ptrie_match(g_subs, f[F_EVENT].p, f[F_EVENT].n, collect_subscriber, &k);
    } else {
        struct lb_conn *r = service_recipient(s, m, val_str(&f[F_TO]));
        if (!r) {
            refuse(s, m, LB_E_SERVICE_NOT_FOUND, -1, NULL, "no service named '%.*s' is registered",
                   (int)f[F_TO].n, f[F_TO].p);
            return;
        }
        recips_push(r);
    }
    for (size_t i = 0; i < m->n_recips; i++) {
        struct lb_conn *r = service_recipient(s, m, msg_recipient(m, i));
        if (r) recips_push(r);
    }
    long remote = 0;
    size_t delivered = g_n_recips ? deliver_all(s, m, broadcast, &remote) : 0;
    for (size_t i = 0; i < g_n_recips; i++) conn_unref(g_recips[i]);
    g_n_recips = 0;
    g_stats.events_delivered += delivered;
    if (!delivered && !remote) g_stats.events_unrouted++;
    if (f[F_ACK].kind == J_TRUE) out_ack(s->c, m, "delivered", delivered, remote ? remote : -1);
    audit_msg(s, m, broadcast ? mk_str("broadcast", 9) : val_str(&f[F_TO]), val_str(&f[F_EVENT]),
              (int)delivered, NULL, NULL, 0);
}
