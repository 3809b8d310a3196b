/*
 * Many nodes as one bus (cluster.h; the format is wire.h's).
 *
 * Each node claims <prefix>:node:<name> (a Lua script: set it unless a
 * live record of another incarnation holds it), keeps it alive with a
 * TTL of node_ttl refreshed every node_ttl/3, and publishes a heartbeat
 * on the control channel each time; a record that changes (services
 * registered or gone, patterns subscribed) is published at once.  Every
 * other node mirrors it on a link connection of its own: the link
 * REGISTERs the remote services (with `node`), so the core picks
 * instances (local first when prefer_local), answers METHOD_NOT_FOUND,
 * and answers SERVICE_UNAVAILABLE for calls in flight when the link is
 * closed — which this file does when the node's heartbeats stop (after
 * its ttl), when it says it leaves, and when Redis goes away.  Nothing
 * that arrives over a link goes back out over one: the core guarantees
 * it, and every message names its origin, so a node ignores its own.
 *
 * What arrives from Redis is sorted here: lexbus nodes' channels are
 * this file's, <prefix>:s goes to rstate.c, <ns>:* to exprsn.c; and what
 * the main link gets goes to bridge.c and exprsn.c as it concerns them.
 */
#include "config.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include "cluster.h"
#include "bridge.h"
#include "exprsn.h"
#include "rconn.h"
#include "rstate.h"

#define MAIN_SUBS_MAX 1000        /* past it the main link takes every broadcast (">") */
#define SUBS_PER_FRAME 256

static const char CLAIM_LUA[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and ARGV[4] ~= '1' then\n"
    "  local ok, r = pcall(cjson.decode, v)\n"
    "  if ok and type(r) == 'table' and r.epoch ~= ARGV[1] then return v end\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
    "return 1\n";

static const char RELEASE_LUA[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v then local ok, r = pcall(cjson.decode, v)\n"
    "  if ok and type(r) == 'table' and r.epoch == ARGV[1] then redis.call('DEL', KEYS[1]) end end\n"
    "return 1\n";

/* What takes the replies to our commands (below). */
static rc_reply_fn claim_reply, nodes_scanned, nodes_got;

static void node_key(struct rd *rd, const char *node, char *buf, size_t len)
{
    snprintf(buf, len, "%s:node:%s", rd->cfg.prefix, node);
}

/* ---- nodes ------------------------------------------------------------ */

static struct rnode *find_node(struct rd *rd, const char *name, size_t n)
{
    for (struct rnode *x = rd->nodes; x; x = x->next)
        if (strlen(x->name) == n && !memcmp(x->name, name, n)) return x;
    return NULL;
}

static struct rnode *node_by_serial(struct rd *rd, uint64_t serial)
{
    for (struct rnode *x = rd->nodes; x; x = x->next) if (x->serial == serial) return x;
    return NULL;
}

static size_t remote_services(const struct rd *rd)
{
    size_t n = 0;
    for (const struct rnode *x = rd->nodes; x; x = x->next) n += x->rec.n_services;
    return n;
}

static void count_nodes(struct rd *rd)
{
    rd->c_nodes = rd->n_nodes;
    rd->c_remote_services = remote_services(rd);
}

static void pats_add(struct rd *rd, char **pats, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct sent *e = sset_add(&rd->remote_pats, pats[i], strlen(pats[i]));
        if (e && e->n == 1) lb_patset_add(rd->remote_set, pats[i], strlen(pats[i]), rd);
    }
}

static void pats_remove(struct rd *rd, char **pats, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct sent *e = sset_find(&rd->remote_pats, pats[i], strlen(pats[i]));
        if (!e) continue;
        if (--e->n == 0) {
            lb_patset_remove(rd->remote_set, pats[i], strlen(pats[i]), rd);
            sset_del(&rd->remote_pats, pats[i], strlen(pats[i]));
        }
    }
}

static void main_resubscribe(struct rd *rd);

static void node_free(struct rd *rd, struct rnode *x, const char *why)
{
    for (struct rnode **pp = &rd->nodes; *pp; pp = &(*pp)->next)
        if (*pp == x) { *pp = x->next; break; }
    rd->n_nodes--;
    pats_remove(rd, x->rec.patterns, x->rec.n_patterns);
    if (why) lb_log(rd->ctx, LB_LOG_INFO, "node '%s' left the cluster (%s): %zu of its services are gone", x->name, why,
                    x->rec.n_services);
    /* Calls in flight to its services are answered SERVICE_UNAVAILABLE by the core. */
    if (x->link) lb_local_close(x->link);
    rw_record_free(&x->rec);
    free(x);
    count_nodes(rd);
    main_resubscribe(rd);         /* its subscribers' patterns may be nobody's now */
}

static void link_closed(void *ud, struct lb_conn *conn, const char *why)
{
    (void)conn;
    struct rnode *x = ud;
    x->link = NULL;
    (void)why;
}

static void node_link_msg(void *ud, struct lb_conn *conn, const struct lb_msg *m);

static const struct lb_local_ops node_link_ops = { .size = sizeof node_link_ops, .on_message = node_link_msg,
                                                   .on_close = link_closed };

static struct rnode *node_new(struct rd *rd, const char *name, const char *epoch)
{
    struct rnode *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    snprintf(x->name, sizeof x->name, "%s", name);
    snprintf(x->epoch, sizeof x->epoch, "%s", epoch);
    x->chlen = (size_t)snprintf(x->chan, sizeof x->chan, "%s:n:%s", rd->cfg.prefix, name);
    x->rd = rd;
    x->serial = ++rd->node_serial;
    x->ttl_ms = rd->cfg.node_ttl_ms;
    x->heard_ms = rd_mono_ms();
    char label[LB_MAX_NAME + 16];
    snprintf(label, sizeof label, "redis:%s", name);
    struct lb_local_opts o = { .size = sizeof o, .label = label, .link = true, .fallback = rd->cfg.prefer_local };
    x->link = lb_local_open(rd->ctx, &o, &node_link_ops, x);
    if (!x->link) { free(x); return NULL; }
    x->next = rd->nodes;
    rd->nodes = x;
    rd->n_nodes++;
    lb_log(rd->ctx, LB_LOG_INFO, "node '%s' joined the cluster", name);
    return x;
}

/* ---- applying a remote record -------------------------------------- */

static bool same_methods(const struct rw_service *a, const struct rw_service *b)
{
    if (a->any != b->any || a->n_methods != b->n_methods || a->instances != b->instances) return false;
    for (size_t i = 0; i < a->n_methods; i++) if (strcmp(a->methods[i], b->methods[i])) return false;
    return true;
}

/* REGISTER of a remote service on the node's link (it keeps the link's
 * place in the frame order, like everything the link sends). */
static void link_register(struct rd *rd, struct rnode *x, const struct rw_record *r, const struct rw_service *s)
{
    struct lb_jw *w = rd->w2;
    rd_jw_register_begin(w, s->name, x->name, s->any, (const char *const *)s->methods, s->n_methods);
    JW_LIT(w, "\"pid\":");
    lb_jw_int(w, r->pid);
    if (r->hostname) {
        JW_LIT(w, ",\"hostname\":");
        lb_jw_str(w, r->hostname, strlen(r->hostname));
    }
    JW_LIT(w, ",\"instances\":");
    lb_jw_int(w, s->instances);
    JW_LIT(w, "}}");
    size_t len;
    const char *p = lb_jw_data(w, &len);
    lb_local_send(x->link, p, len);
}

static void apply_record(struct rd *rd, struct rnode *x, struct rw_record *r)
{
    if (!x->link) { rw_record_free(r); return; }
    for (size_t i = 0; i < r->n_services; i++) {
        const struct rw_service *old = rw_record_service(&x->rec, r->services[i].name);
        if (!old || !same_methods(old, &r->services[i])) link_register(rd, x, r, &r->services[i]);
    }
    for (size_t i = 0; i < x->rec.n_services; i++)
        if (!rw_record_service(r, x->rec.services[i].name)) lb_local_unregister(x->link, x->rec.services[i].name);
    pats_add(rd, r->patterns, r->n_patterns);
    pats_remove(rd, x->rec.patterns, x->rec.n_patterns);
    rw_record_free(&x->rec);
    x->rec = *r;                   /* taken */
    memset(r, 0, sizeof *r);
    x->gen = x->rec.gen;
    x->ttl_ms = x->rec.ttl_ms;
    x->pid = x->rec.pid;
    count_nodes(rd);
    main_resubscribe(rd);
}

/* A record read from Redis or published by its node (origin: the
 * header's, which the record must match). */
static void take_record(struct rd *rd, const char *text, size_t len, bool live, const struct rw_head *origin)
{
    struct rw_record r;
    char why[200];
    if (rw_record_parse(text, len, &r, why, sizeof why)) {
        rd_drop(rd, &rd->c_dropped_bad, "bad-record", "dropped a node record: %s", why);
        return;
    }
    if (origin && (strlen(r.node) != origin->origin.n || memcmp(r.node, origin->origin.p, origin->origin.n) ||
                   memcmp(r.epoch, origin->epoch.p, RW_EPOCH_LEN))) {
        rd_drop(rd, &rd->c_dropped_origin, "record-origin", "dropped a record of '%s' published as '%.*s'", r.node,
                (int)origin->origin.n, origin->origin.p);
        rw_record_free(&r);
        return;
    }
    if (!strcmp(r.node, rd->node)) { rw_record_free(&r); return; }
    struct rnode *x = find_node(rd, r.node, strlen(r.node));
    if (x && strcmp(x->epoch, r.epoch)) {
        /* The node restarted: its old incarnation's calls will never be answered. */
        node_free(rd, x, "restarted");
        x = NULL;
    }
    if (x && r.gen <= x->gen && x->rec.node) { x->heard_ms = rd_mono_ms(); rw_record_free(&r); return; }
    if (!x && !(x = node_new(rd, r.node, r.epoch))) { rw_record_free(&r); return; }
    if (live) x->heard_ms = rd_mono_ms();
    x->fetching = false;
    apply_record(rd, x, &r);
}

static void fetch_record(struct rd *rd, const char *node)
{
    char key[LB_MAX_NAME + 80];
    node_key(rd, node, key, sizeof key);
    struct pent e = { .done = nodes_got };
    rc_commandf(rd, &e, "MGET %s", key);
}

/* ---- our own record ------------------------------------------------- */

/* lb_services_each's strings live for the call only: each service is
 * written into a text of its own, sorted by name after. */
struct svc_text { char *name; char *json; };

struct gather { struct svc_text *v; size_t n, cap; };

static void gather_service(void *ud, const struct lb_service_info *s)
{
    struct gather *g = ud;
    if (s->instances <= s->remote_instances) return;    /* only links hold it: not ours to announce */
    struct lb_jw *w = lb_jw_new();
    JW_LIT(w, "{\"name\":");
    lb_jw_str(w, s->name, strlen(s->name));
    rd_jw_methods(w, s->any_method, s->methods, s->n_methods);
    JW_LIT(w, ",\"instances\":");
    lb_jw_int(w, (long long)(s->instances - s->remote_instances));
    JW_LIT(w, "}");
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 32;
        g->v = realloc(g->v, g->cap * sizeof *g->v);
        if (!g->v) abort();
    }
    size_t len;
    const char *p = lb_jw_data(w, &len);
    g->v[g->n].name = strdup(s->name);
    g->v[g->n].json = strndup(p, len);
    if (!g->v[g->n].name || !g->v[g->n].json) abort();
    g->n++;
    lb_jw_free(w);
}

static int cmp_text(const void *a, const void *b)
{
    return strcmp(((const struct svc_text *)a)->name, ((const struct svc_text *)b)->name);
}

struct pats { char **v; size_t n, cap; };

static void gather_pattern(void *ud, const char *pat, size_t n)
{
    struct pats *p = ud;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 32;
        p->v = realloc(p->v, p->cap * sizeof *p->v);
        if (!p->v) abort();
    }
    if (!(p->v[p->n++] = strndup(pat, n))) abort();
}

/* Our services and patterns as the record's body (without gen), and the
 * sets they make. */
static char *describe(struct rd *rd, struct sset *names, struct pats *pats, size_t *len)
{
    struct gather g = { 0 };
    lb_services_each(rd->ctx, gather_service, &g);
    if (g.n) qsort(g.v, g.n, sizeof *g.v, cmp_text);
    lb_subscriptions_each(rd->ctx, gather_pattern, pats);
    if (pats->n) qsort(pats->v, pats->n, sizeof *pats->v, rd_strcmp_p);
    if (g.n > RW_MAX_SERVICES || pats->n > RW_MAX_PATTERNS)
        lb_log_throttled(rd->ctx, LB_LOG_WARN, "record-too-big", 2, "this node has %zu services and %zu patterns: "
                         "only %d of each are announced to other nodes", g.n, pats->n, RW_MAX_SERVICES);
    struct lb_jw *w = rd->w2;
    lb_jw_reset(w);
    JW_LIT(w, "\"services\":[");
    for (size_t i = 0; i < g.n; i++) {
        if (i < RW_MAX_SERVICES) {
            if (i) JW_LIT(w, ",");
            lb_jw_raw(w, g.v[i].json, strlen(g.v[i].json));
            sset_add(names, g.v[i].name, strlen(g.v[i].name));
        }
        free(g.v[i].name);
        free(g.v[i].json);
    }
    free(g.v);
    JW_LIT(w, "],\"patterns\":[");
    for (size_t i = 0; i < pats->n && i < RW_MAX_PATTERNS; i++) {
        if (i) JW_LIT(w, ",");
        lb_jw_str(w, pats->v[i], strlen(pats->v[i]));
    }
    JW_LIT(w, "]");
    const char *p = lb_jw_data(w, len);
    return strndup(p, *len);
}

static void write_record(struct rd *rd, const char *body, size_t blen)
{
    struct lb_jw *w = rd->w2;
    lb_jw_reset(w);
    JW_LIT(w, "{\"node\":");
    lb_jw_str(w, rd->node, strlen(rd->node));
    JW_LIT(w, ",\"epoch\":\"");
    lb_jw_raw(w, rd->epoch, RW_EPOCH_LEN);
    JW_LIT(w, "\",\"gen\":");
    lb_jw_int(w, (long long)rd->rec_gen);
    JW_LIT(w, ",\"pid\":");
    lb_jw_int(w, (long long)getpid());
    JW_LIT(w, ",\"hostname\":");
    lb_jw_str(w, rd->hostname, strlen(rd->hostname));
    JW_LIT(w, ",\"started\":");
    lb_jw_int(w, (long long)rd->started_ms);
    JW_LIT(w, ",\"ttl\":");
    lb_jw_int(w, (long long)rd->cfg.node_ttl_ms);
    JW_LIT(w, ",");
    lb_jw_raw(w, body, blen);
    JW_LIT(w, "}");
    size_t len;
    const char *p = lb_jw_data(w, &len);
    free(rd->record);
    rd->record = strndup(p, len);
    rd->record_len = len;
}

/* Claims (or refreshes) our key with the record; force takes over a
 * record of ours a dead process left. */
static void claim(struct rd *rd, bool force)
{
    char key[LB_MAX_NAME + 80], ttl[24];
    node_key(rd, rd->node, key, sizeof key);
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)rd->cfg.node_ttl_ms);
    const char *argv[] = { "EVAL", CLAIM_LUA, "1", key, rd->epoch, rd->record, ttl, force ? "1" : "0" };
    size_t lens[] = { 4, sizeof CLAIM_LUA - 1, 1, strlen(key), RW_EPOCH_LEN, rd->record_len, strlen(ttl), 1 };
    struct pent e = { .done = claim_reply };
    rc_command(rd, &e, 8, argv, lens);
}

static void publish_control(struct rd *rd, char kind, const char *body, size_t blen)
{
    char head[RW_HEAD_MAX];
    uint64_t args[2] = { rd->rec_gen, rd->cfg.node_ttl_ms };
    int nargs = kind == 'H' ? 2 : kind == 'U' ? 1 : 0;
    size_t hl = rw_head_write(head, kind, rd->node, rd->epoch, args, nargs);
    rc_publish(rd, NULL, rd->ch_c, strlen(rd->ch_c), head, hl, body, blen);
}

/* Rebuilds what we announce from the bus's registry and subscriptions;
 * announces it when it changed. */
static void rebuild(struct rd *rd)
{
    struct sset names = { 0 };
    struct pats pats = { 0 };
    size_t blen;
    char *body = describe(rd, &names, &pats, &blen);
    bool changed = !rd->record_body || rd->record_body_len != blen || memcmp(rd->record_body, body, blen);
    if (changed) {
        rd->rec_gen++;
        write_record(rd, body, blen);
        free(rd->record_body);
        rd->record_body = body;
        rd->record_body_len = blen;
        body = NULL;
        if (rd->state == RS_UP) {
            claim(rd, false);
            publish_control(rd, 'U', rd->record, rd->record_len);
        }
    }
    /* What is served here changed: Exprsn keys and channels follow. */
    struct sset added = { 0 }, removed = { 0 };
    for (size_t i = 0; i < names.cap; i++)
        if (names.v[i].s && !sset_find(&rd->local_services, names.v[i].s, strlen(names.v[i].s)))
            sset_add(&added, names.v[i].s, strlen(names.v[i].s));
    for (size_t i = 0; i < rd->local_services.cap; i++)
        if (rd->local_services.v[i].s && !sset_find(&names, rd->local_services.v[i].s, strlen(rd->local_services.v[i].s)))
            sset_add(&removed, rd->local_services.v[i].s, strlen(rd->local_services.v[i].s));
    sset_free(&rd->local_services);
    rd->local_services = names;
    if (added.n || removed.n) ex_local_changed(rd, &added, &removed);
    sset_free(&added);
    sset_free(&removed);
    lb_patset_free(rd->local_set);
    rd->local_set = lb_patset_new();
    for (size_t i = 0; i < pats.n; i++) {
        lb_patset_add(rd->local_set, pats.v[i], strlen(pats.v[i]), rd);
        free(pats.v[i]);
    }
    free(pats.v);
    free(body);
}

/* ---- the main link ---------------------------------------------------- */

static void main_link_msg(void *ud, struct lb_conn *conn, const struct lb_msg *m);

static void main_closed(void *ud, struct lb_conn *conn, const char *why)
{
    (void)conn;
    struct rd *rd = ud;
    rd->main = NULL;
    sset_clear(&rd->main_subs);
    if (!rd->unloading && !lb_bus_draining(rd->ctx))
        lb_log(rd->ctx, LB_LOG_WARN, "the bus closed the redis plugin's main link (%s): cross-node traffic stops",
               why ? why : "?");
}

static const struct lb_local_ops main_ops = { .size = sizeof main_ops, .on_message = main_link_msg,
                                              .on_close = main_closed };

/* Sends SUBSCRIBE or UNSUBSCRIBE frames for `list` on the main link. */
static void main_sub_frames(struct rd *rd, const char *type, char **list, size_t n)
{
    for (size_t i = 0; i < n; i += SUBS_PER_FRAME) {
        struct lb_jw *w = rd->w2;
        lb_jw_reset(w);
        JW_LIT(w, "{\"type\":\"");
        lb_jw_raw(w, type, strlen(type));
        JW_LIT(w, "\",\"events\":[");
        for (size_t k = i; k < n && k < i + SUBS_PER_FRAME; k++) {
            if (k > i) JW_LIT(w, ",");
            lb_jw_str(w, list[k], strlen(list[k]));
        }
        JW_LIT(w, "]}");
        size_t len;
        const char *p = lb_jw_data(w, &len);
        lb_local_send(rd->main, p, len);
    }
}

/* The main link's subscriptions follow remote nodes' patterns, bridges
 * and workers (none while Redis is away). */
static void main_resubscribe(struct rd *rd)
{
    if (!rd->main) return;
    struct sset want = { 0 };
    if (rd->state == RS_UP && !rd->failing) {
        for (size_t i = 0; i < rd->remote_pats.cap; i++)
            if (rd->remote_pats.v[i].s) sset_add(&want, rd->remote_pats.v[i].s, strlen(rd->remote_pats.v[i].s));
        for (size_t i = 0; i < rd->cfg.n_bridges; i++) sset_add(&want, rd->cfg.bridges[i], strlen(rd->cfg.bridges[i]));
        if (rd->cfg.exprsn || want.n > MAIN_SUBS_MAX) {
            /* Workers hear every broadcast; too many patterns to hold: take all, filter here. */
            sset_clear(&want);
            sset_add(&want, ">", 1);
        }
    }
    char **add = calloc(want.n + 1, sizeof *add), **del = calloc(rd->main_subs.n + 1, sizeof *del);
    size_t na = 0, nd = 0;
    if (!add || !del) abort();
    for (size_t i = 0; i < want.cap; i++)
        if (want.v[i].s && !sset_find(&rd->main_subs, want.v[i].s, strlen(want.v[i].s))) add[na++] = want.v[i].s;
    for (size_t i = 0; i < rd->main_subs.cap; i++)
        if (rd->main_subs.v[i].s && !sset_find(&want, rd->main_subs.v[i].s, strlen(rd->main_subs.v[i].s)))
            del[nd++] = rd->main_subs.v[i].s;
    if (nd) main_sub_frames(rd, "UNSUBSCRIBE", del, nd);
    if (na) main_sub_frames(rd, "SUBSCRIBE", add, na);
    free(add);
    free(del);
    sset_free(&rd->main_subs);
    rd->main_subs = want;
}

#define EVENT_PREFIX "{\"type\":\"EVENT\","
#define EMIT_PREFIX "{\"type\":\"EMIT\","
#define CALL_PREFIX "{\"type\":\"CALL\",\"id\":\""

/* An EMIT frame for other nodes from an EVENT the bus gave a link: the
 * same id, event, sender, payload and verified claims.  The bus writes
 * EVENTs as {"type":"EVENT",id,event,from,to,payload[,token]}, every one
 * of them an EMIT's member too: the type is all that changes. */
static const char *emit_frame(struct rd *rd, const struct lb_msg *m, struct lb_str to, size_t *len)
{
    struct lb_jw *w = rd->w;
    struct lb_str f = lb_msg_frame(m);
    if (f.n > sizeof EVENT_PREFIX && !memcmp(f.p, EVENT_PREFIX, sizeof EVENT_PREFIX - 1)) {
        lb_jw_reset(w);
        JW_LIT(w, EMIT_PREFIX);
        lb_jw_raw(w, f.p + sizeof EVENT_PREFIX - 1, f.n - (sizeof EVENT_PREFIX - 1));
        return lb_jw_data(w, len);
    }
    struct lb_str token = lb_msg_raw(m, "token");
    struct rd_emit e = { .id = lb_msg_field(m, "id"), .event = lb_msg_field(m, "event"),
                         .from = lb_msg_field(m, "from"), .to = to, .payload = lb_msg_raw(m, "payload") };
    if (token.p && token.p[0] == '{') e.token = token;    /* verified claims travel; a raw token does not */
    rd_jw_emit(w, &e);
    return lb_jw_data(w, len);
}

static void broadcast_out(struct rd *rd, const struct lb_msg *m)
{
    struct lb_str ev = lb_msg_field(m, "event"), from = lb_msg_field(m, "from");
    if (!ev.p || !from.p) return;
    if (rd->cfg.n_bridges && br_matches(rd, ev)) {
        br_publish(rd, m);          /* other nodes hear it on the bridged channel */
    } else if (rd->n_nodes && rd_matches(rd->remote_set, ev)) {
        size_t len;
        struct lb_str to = { "broadcast", 9 };
        const char *f = emit_frame(rd, m, to, &len);
        char head[RW_HEAD_MAX];
        size_t hl = rw_head_write(head, 'B', rd->node, rd->epoch, NULL, 0);
        if (rc_publish_lb(rd, NULL, rd->ch_b, strlen(rd->ch_b), head, hl, f, len) == 0) rd->c_published++;
    }
    if (rd->cfg.exprsn) ex_broadcast(rd, m);
}

/* A message for another node in rd->w: our header of `kind`, then the
 * frame with the first `drop` bytes of its id (a member of m) replaced by
 * `insert`: a CALL's id takes the caller's node name, its RESPONSE's
 * gives it back. */
static const char *node_frame(struct rd *rd, char kind, const struct lb_msg *m, struct lb_str id, size_t drop,
                              const char *insert, size_t *len)
{
    struct lb_str frame = lb_msg_frame(m);
    size_t cut = (size_t)(id.p - frame.p);
    char head[RW_HEAD_MAX];
    size_t hl = rw_head_write(head, kind, rd->node, rd->epoch, NULL, 0);
    struct lb_jw *w = rd->w;
    lb_jw_reset(w);
    lb_jw_raw(w, head, hl);
    lb_jw_raw(w, frame.p, cut);
    lb_jw_raw(w, insert, strlen(insert));
    lb_jw_raw(w, frame.p + cut + drop, frame.n - cut - drop);
    return lb_jw_data(w, len);
}

/* A RESPONSE from this bus to a caller on another node: the CALL's id
 * was "<origin>~<wire id>". */
static bool response_out(struct rd *rd, const struct lb_msg *m)
{
    struct lb_str id = lb_msg_field(m, "id");
    const char *tilde = id.p ? memchr(id.p, '~', id.n) : NULL;
    if (!tilde) return false;
    struct rnode *x = find_node(rd, id.p, (size_t)(tilde - id.p));
    if (!x) {
        rd_drop(rd, &rd->c_dropped_origin, "response-lost", "the answer to a call from node '%.*s' is dropped: the "
                "node is gone", (int)(tilde - id.p), id.p);
        return true;
    }
    /* The origin's name leaves the id: the caller's node knows its wire id only. */
    size_t len;
    const char *p = node_frame(rd, 'R', m, id, (size_t)(tilde - id.p), "", &len);
    if (rc_publish_lb(rd, NULL, x->chan, x->chlen, NULL, 0, p, len) == 0) rd->c_published++;
    return true;
}

static void main_link_msg(void *ud, struct lb_conn *conn, const struct lb_msg *m)
{
    (void)conn;
    struct rd *rd = ud;
    enum lb_msg_type t = lb_msg_type(m);
    if (t == LB_MSG_EVENT) {
        if (rc_up(rd)) broadcast_out(rd, m);
        return;
    }
    if (t == LB_MSG_RESPONSE && response_out(rd, m)) return;
    if (ex_main_message(rd, m)) return;
    if (t == LB_MSG_ERROR) {
        struct lb_str code = lb_msg_error_code(m), id = lb_msg_field(m, "id");
        struct lb_str err = lb_msg_raw(m, "error");
        rd_drop(rd, &rd->c_dropped_bad, "refused-here", "a message from Redis (id %.*s) was refused here: %.*s %.*s",
                (int)(id.p ? id.n : 1), id.p ? id.p : "-", (int)code.n, code.p, (int)(err.n < 300 ? err.n : 300), err.p);
    }
}

/* ---- a node's link ---------------------------------------------------- */

static void fail_call_now(struct lb_conn *link, const struct lb_msg *m, const char *why)
{
    lb_respond_error(link, m, LB_E_SERVICE_UNAVAILABLE, why);
}

static void call_out(struct rd *rd, struct rnode *x, const struct lb_msg *m)
{
    struct lb_str id = lb_msg_field(m, "id");
    if (!rc_up(rd) || rd->state != RS_UP) {
        fail_call_now(x->link, m, "Redis is unreachable: calls to other nodes cannot be sent now");
        return;
    }
    if (!id.p || id.n >= sizeof ((struct pent *)0)->id) {
        fail_call_now(x->link, m, "internal: the call's id is not the bus's");
        return;
    }
    size_t len;
    const char *p = node_frame(rd, 'C', m, id, 0, rd->node, &len);   /* "<origin>~<wire id>" */
    if (rc_publish_call(rd, x->serial, id, x->chan, x->chlen, p, len) != 0) {
        fail_call_now(x->link, m, "Redis is not keeping up: the call could not be queued (max_queue)");
        return;
    }
    rd->c_published++;
    rd->c_calls_out++;
}

static void event_out(struct rd *rd, struct rnode *x, const struct lb_msg *m)
{
    if (!rc_up(rd) || rd->state != RS_UP) {
        rd_drop(rd, &rd->c_dropped_queue, "event-down", "an event to node '%s' is dropped: Redis is unreachable",
                x->name);
        return;
    }
    size_t len;
    const char *f = emit_frame(rd, m, lb_msg_field(m, "to"), &len);
    char head[RW_HEAD_MAX];
    size_t hl = rw_head_write(head, 'E', rd->node, rd->epoch, NULL, 0);
    if (rc_publish_lb(rd, NULL, x->chan, x->chlen, head, hl, f, len) == 0) rd->c_published++;
}

static void node_link_msg(void *ud, struct lb_conn *conn, const struct lb_msg *m)
{
    (void)conn;
    struct rnode *x = ud;
    struct rd *rd = x->rd;
    switch (lb_msg_type(m)) {
    case LB_MSG_CALL: call_out(rd, x, m); break;
    case LB_MSG_EVENT: event_out(rd, x, m); break;
    case LB_MSG_ERROR: {
        struct lb_str err = lb_msg_raw(m, "error");
        lb_log_throttled(rd->ctx, LB_LOG_WARN, "link-error", 10, "the link of node '%s' was refused: %.*s", x->name,
                         (int)(err.n < 300 ? err.n : 300), err.p);
        break;
    }
    default: break;
    }
}

/* ---- what arrives from Redis ------------------------------------------ */

/* A frame from another node, checked before the bus sees it: the type
 * its kind allows, the CALL id in the origin's space, a broadcast to
 * broadcast.  The bus validates the rest as from any client. */
static bool frame_ok(struct rd *rd, const struct rw_head *h, enum lb_msg_type want)
{
    const char *b = h->body, *err;
    size_t n = h->body_len;
    /* The type is what matters here (no REGISTER or SUBSCRIBE may reach a
     * link), and a member given twice is refused by the bus's scanner: a
     * frame that starts with our type is of that type.  EMITs and CALLs
     * are written that way by every node (emit_frame, call_out); answers
     * are the callees' own frames and are read whole. */
    if (want == LB_MSG_EMIT) return n > sizeof EMIT_PREFIX && !memcmp(b, EMIT_PREFIX, sizeof EMIT_PREFIX - 1);
    if (want == LB_MSG_CALL) {
        size_t pl = sizeof CALL_PREFIX - 1;
        return n > pl + h->origin.n + 1 && !memcmp(b, CALL_PREFIX, pl) && !memcmp(b + pl, h->origin.p, h->origin.n) &&
               b[pl + h->origin.n] == '~';
    }
    return lb_msg_parse(rd->msg, b, n, &err) == 0 && lb_msg_type(rd->msg) == LB_MSG_RESPONSE;
}

static void data_message(struct rd *rd, const struct rw_head *h)
{
    struct rnode *x = find_node(rd, h->origin.p, h->origin.n);
    if (!x || h->epoch.n != RW_EPOCH_LEN || memcmp(x->epoch, h->epoch.p, RW_EPOCH_LEN)) {
        rd_drop(rd, &rd->c_dropped_origin, "unknown-origin", "dropped a message from '%.*s': no such node is live "
                "(a forged origin, or a node that just left)", (int)h->origin.n, h->origin.p);
        return;
    }
    x->heard_ms = rd->read_ms;
    enum lb_msg_type want = h->kind == 'C' ? LB_MSG_CALL : h->kind == 'R' ? LB_MSG_RESPONSE : LB_MSG_EMIT;
    if (!frame_ok(rd, h, want)) {
        rd_drop(rd, &rd->c_dropped_bad, "bad-frame", "dropped a malformed %c message from node '%s'", h->kind, x->name);
        return;
    }
    if (h->kind == 'R') {
        if (x->link) lb_local_send(x->link, h->body, h->body_len);
        return;
    }
    if (h->kind == 'C') rd->c_calls_in++;
    rd_inject(rd, h->body, h->body_len);
}

static void control_message(struct rd *rd, const struct rw_head *h)
{
    struct rnode *x = find_node(rd, h->origin.p, h->origin.n);
    bool same = x && !memcmp(x->epoch, h->epoch.p, RW_EPOCH_LEN);
    char name[LB_MAX_NAME + 1];
    snprintf(name, sizeof name, "%.*s", (int)h->origin.n, h->origin.p);
    switch (h->kind) {
    case 'U':
        take_record(rd, h->body, h->body_len, true, h);
        break;
    case 'H':
        if (same) x->heard_ms = rd_mono_ms();
        if ((!same || (h->nargs >= 1 && h->arg[0] > x->gen)) && !(x && same && x->fetching)) {
            /* A node we have not heard of (we missed its record: pub/sub
             * is at most once), or a newer record we missed. */
            if (x && same) x->fetching = true;
            fetch_record(rd, name);
        }
        break;
    case 'L':
        if (same) node_free(rd, x, "it said so");
        break;
    default:
        rd_drop(rd, &rd->c_dropped_bad, "bad-kind", "dropped a '%c' message on the control channel", h->kind);
    }
}

/* The messages of a bundle (wire.h): each a whole message of the bundle's
 * origin, of a kind its channel carries. */
static void bundle_in(struct rd *rd, const struct rw_head *bh, bool self, const char *chan, size_t chlen)
{
    struct rw_bundle it;
    struct rw_head h;
    int rc;
    rw_bundle_start(&it, bh, self ? "CRE" : "B");
    while ((rc = rw_bundle_next(&it, &h)) == 1) data_message(rd, &h);
    if (rc < 0)
        rd_drop(rd, &rd->c_dropped_bad, "bad-bundle", "dropped the rest of a malformed bundle on %.*s", (int)chlen, chan);
}

void cl_on_message(struct rd *rd, const char *chan, size_t chlen, const char *p, size_t n)
{
    if (rd->state != RS_UP && rd->state != RS_JOINING) return;
    bool self = chlen == strlen(rd->ch_self) && !memcmp(chan, rd->ch_self, chlen);
    bool b = !self && chlen == strlen(rd->ch_b) && !memcmp(chan, rd->ch_b, chlen);
    bool c = !self && !b && chlen == strlen(rd->ch_c) && !memcmp(chan, rd->ch_c, chlen);
    bool s = !self && !b && !c && rd->cfg.state_redis && chlen == strlen(rd->ch_s) && !memcmp(chan, rd->ch_s, chlen);
    if (!self && !b && !c && !s) {
        size_t nl = strlen(rd->cfg.ns);
        if (rd->cfg.exprsn && chlen > nl + 1 && !memcmp(chan, rd->cfg.ns, nl) && chan[nl] == ':')
            ex_on_message(rd, chan + nl + 1, chlen - nl - 1, p, n);
        return;
    }
    if (n > rd->cfg.max_message) {
        rd->c_dropped_oversized++;
        rd_drop(rd, &rd->c_dropped, "oversized", "dropped a %zu-byte message on %.*s (max_message %llu)", n,
                (int)chlen, chan, (unsigned long long)rd->cfg.max_message);
        return;
    }
    struct rw_head h;
    if (rw_head_parse(p, n, &h)) {
        rd_drop(rd, &rd->c_dropped_bad, "bad-header", "dropped a message on %.*s that is not lexbus's (%s)",
                (int)chlen, chan, n ? "binary or garbage" : "empty");
        return;
    }
    if (h.kind == 'M' && (self || b)) {
        bundle_in(rd, &h, self, chan, chlen);
        rc_check_backlog(rd);
        return;
    }
    if (h.origin.n == strlen(rd->node) && !memcmp(h.origin.p, rd->node, h.origin.n)) {
        bool ours = !memcmp(h.epoch.p, rd->epoch, RW_EPOCH_LEN);
        if (!ours && c)
            lb_log_throttled(rd->ctx, LB_LOG_ERROR, "name-clash", 2, "another lexbusd says it is node '%s' on this Redis: "
                             "every node needs its own [bus] node", rd->node);
        if (ours && c && h.kind == 'H') rd->self_heard_ms = rd_mono_ms();
        return;                      /* our own, back from Redis */
    }
    bool kind_ok = self ? strchr("CRE", h.kind) != NULL : b ? h.kind == 'B' : c ? strchr("UHL", h.kind) != NULL
                                                                            : strchr("SD", h.kind) != NULL;
    if (!kind_ok) {
        rd_drop(rd, &rd->c_dropped_bad, "bad-kind", "dropped a '%c' message on %.*s", h.kind, (int)chlen, chan);
        return;
    }
    if (c) control_message(rd, &h);
    else if (s) st_on_message(rd, &h);
    else data_message(rd, &h);
    rc_check_backlog(rd);
}

/* ---- replies ---------------------------------------------------------- */

static bool pid_gone(long pid)
{
    return pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

static void scan_nodes(struct rd *rd, const char *cursor)
{
    struct pent e = { .done = nodes_scanned };
    rc_commandf(rd, &e, "SCAN %s MATCH %s:node:* COUNT 200", cursor, rd->cfg.prefix);
}

static void joined(struct rd *rd)
{
    bool again = rd->c_reconnects > 0;
    rd->state = RS_UP;
    rd->attempt = 0;
    lb_log(rd->ctx, LB_LOG_INFO, "%s the cluster on Redis at %s as node '%s'", again ? "rejoined" : "joined",
           rd->cfg.url_text, rd->node);
    publish_control(rd, 'U', rd->record, rd->record_len);
    scan_nodes(rd, "0");             /* everyone else: pub/sub told us nothing of the past */
    main_resubscribe(rd);
    ex_joined(rd);
    st_joined(rd);
}

/* Another record holds our name: its process may be gone (then we take
 * the name over), or alive (a clash: we stay out). */
static void claim_refused(struct rd *rd, redisReply *r)
{
    struct rw_record holder;
    char why[200];
    bool parsed = rw_record_parse(r->str, r->len, &holder, why, sizeof why) == 0;
    if (parsed && holder.hostname && !strcmp(holder.hostname, rd->hostname) && holder.pid != getpid() &&
        pid_gone(holder.pid)) {
        lb_log(rd->ctx, LB_LOG_WARN, "node name '%s' was held by pid %ld on this host, which is no longer running: "
               "taking it over", rd->node, holder.pid);
        rw_record_free(&holder);
        claim(rd, true);
        return;
    }
    bool was_up = rd->state == RS_UP;
    lb_log_throttled(rd->ctx, LB_LOG_ERROR, "name-clash", 2,
                     "node name '%s' is in use by another running lexbusd (pid %ld on %s) on Redis at %s: every node "
                     "needs its own [bus] node; this node stays out of the cluster (local routing continues) and "
                     "tries again every %llu ms", rd->node, parsed ? holder.pid : -1L,
                     parsed && holder.hostname ? holder.hostname : "?", rd->cfg.url_text,
                     (unsigned long long)rd->cfg.node_ttl_ms);
    if (parsed) rw_record_free(&holder);
    rd->state = RS_CLASH;
    snprintf(rd->last_error, sizeof rd->last_error, "node name '%s' is in use by another lexbusd", rd->node);
    if (was_up) cl_disconnected(rd);
}

static void claim_reply(struct rd *rd, const struct pent *e, redisReply *r)
{
    (void)e;
    if (!r) return;
    if (r->type == REDIS_REPLY_INTEGER) {
        if (rd->state == RS_JOINING || rd->state == RS_CLASH) joined(rd);
    } else if (r->type == REDIS_REPLY_ERROR) {
        rc_fail(rd, "Redis refused the node claim script: %.200s", r->str);
    } else if (r->type == REDIS_REPLY_STRING) {
        claim_refused(rd, r);
    }
}

static void nodes_scanned(struct rd *rd, const struct pent *e, redisReply *r)
{
    (void)e;
    const char *cursor;
    redisReply *keys;
    if (!rc_scan_parse(r, &cursor, &keys)) return;
    if (keys->elements) {
        static const char *const mget[] = { "MGET" };
        struct pent got = { .done = nodes_got };
        rc_command_keys(rd, &got, mget, 1, keys);
    }
    if (strcmp(cursor, "0")) scan_nodes(rd, cursor);
}

/* Records read from Redis (MGET): a node that is gone reads as nil. */
static void nodes_got(struct rd *rd, const struct pent *e, redisReply *r)
{
    (void)e;
    if (!r || r->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING) take_record(rd, r->element[i]->str, r->element[i]->len, false, NULL);
}

/* A call that will never be answered over Redis, answered on the node's
 * link: the caller hears now rather than at its deadline. */
static void call_lost(struct rd *rd, struct rnode *x, const struct call_id *c, const char *why)
{
    rd->c_unavailable++;
    struct lb_jw *w = rd->w;
    lb_jw_reset(w);
    JW_LIT(w, "{\"type\":\"RESPONSE\",\"id\":\"");
    lb_jw_raw(w, c->id, c->len);
    JW_LIT(w, "\",\"status\":\"error\",\"error\":{\"code\":\"SERVICE_UNAVAILABLE\",\"message\":");
    char msg[LB_MAX_NAME + 160];
    if (why) snprintf(msg, sizeof msg, "%s", why);
    else snprintf(msg, sizeof msg, "node '%s' is not listening on Redis (gone or reconnecting): the call was lost", x->name);
    lb_jw_str(w, msg, strlen(msg));
    JW_LIT(w, "}}");
    size_t len;
    const char *p = lb_jw_data(w, &len);
    lb_local_send(x->link, p, len);
}

void cl_calls_lost(struct rd *rd, const struct call_ids *c, const char *why)
{
    struct rnode *x = node_by_serial(rd, c->node);   /* it may be gone by now */
    if (!x || !x->link) return;
    for (size_t i = 0; i < c->n; i++) call_lost(rd, x, &c->v[i], why);
}

/* ---- session ---------------------------------------------------------- */

void cl_connected(struct rd *rd)
{
    evtimer_del(rd->connect_ev);
    rd->state = RS_JOINING;
    if (!rd->record) rebuild(rd);
    claim(rd, false);
}

void cl_disconnected(struct rd *rd)
{
    while (rd->nodes) node_free(rd, rd->nodes, NULL);
    main_resubscribe(rd);         /* not up: the main link stops taking broadcasts */
    count_nodes(rd);
    ex_disconnected(rd);          /* workers are known through Redis only */
}

static void heartbeat(struct rd *rd)
{
    claim(rd, false);                /* refreshes our key's TTL, or finds a clash */
    publish_control(rd, 'H', NULL, 0);
    rc_ping(rd);
}

/* A node is gone when its heartbeats stopped while ours kept coming back:
 * Redis delivers in order, so silence measured against our own echo says
 * something about the node, not about a Redis that is blocked or slow to
 * us (DEBUG SLEEP, CLIENT PAUSE, a subscriber we paused). */
static void expire_nodes(struct rd *rd)
{
    for (struct rnode *x = rd->nodes, *next; x; x = next) {
        next = x->next;
        if (rd->self_heard_ms <= x->heard_ms || rd->self_heard_ms - x->heard_ms <= x->ttl_ms) continue;
        char why[96];
        snprintf(why, sizeof why, "no heartbeat for %llu ms", (unsigned long long)(rd_mono_ms() - x->heard_ms));
        node_free(rd, x, why);
    }
}

void cl_tick(struct rd *rd)
{
    uint64_t now = rd_mono_ms();
    uint64_t gen = lb_routing_gen(rd->ctx);
    if (gen != rd->seen_gen && now - rd->last_rebuild_ms >= 100) {
        rd->seen_gen = gen;
        rd->last_rebuild_ms = now;
        rebuild(rd);
    }
    if (rd->state == RS_CLASH && now - rd->last_hb_ms >= rd->cfg.node_ttl_ms) {
        rd->last_hb_ms = now;
        claim(rd, false);
    }
    if (rd->state != RS_UP) return;
    if (now - rd->last_hb_ms >= rd->cfg.node_ttl_ms / 3) {
        rd->last_hb_ms = now;
        heartbeat(rd);
    }
    expire_nodes(rd);
}

void cl_leave(struct rd *rd)
{
    if (rd->state != RS_UP || !rc_up(rd)) return;
    publish_control(rd, 'L', NULL, 0);
    char key[LB_MAX_NAME + 80];
    node_key(rd, rd->node, key, sizeof key);
    const char *argv[] = { "EVAL", RELEASE_LUA, "1", key, rd->epoch };
    size_t lens[] = { 4, sizeof RELEASE_LUA - 1, 1, strlen(key), RW_EPOCH_LEN };
    rc_command(rd, NULL, 5, argv, lens);
    rc_flush(rd);
}

json_t *cl_stats(struct rd *rd)
{
    json_t *nodes = json_array();
    uint64_t now = rd_mono_ms();
    for (struct rnode *x = rd->nodes; x; x = x->next)
        json_array_append_new(nodes, json_pack("{s:s,s:I,s:I,s:I}", "node", x->name, "services",
                                               (json_int_t)x->rec.n_services, "patterns", (json_int_t)x->rec.n_patterns,
                                               "lastHeardMs", (json_int_t)(now - x->heard_ms)));
    return nodes;
}

int cl_init(struct rd *rd)
{
    snprintf(rd->ch_self, sizeof rd->ch_self, "%s:n:%s", rd->cfg.prefix, rd->node);
    snprintf(rd->ch_b, sizeof rd->ch_b, "%s:b", rd->cfg.prefix);
    snprintf(rd->ch_c, sizeof rd->ch_c, "%s:c", rd->cfg.prefix);
    snprintf(rd->ch_s, sizeof rd->ch_s, "%s:s", rd->cfg.prefix);
    rc_subscribe(rd, false, true, rd->ch_self);
    rc_subscribe(rd, false, true, rd->ch_b);
    rc_subscribe(rd, false, true, rd->ch_c);
    if (rd->cfg.state_redis) rc_subscribe(rd, false, true, rd->ch_s);
    rd->remote_set = lb_patset_new();
    rd->local_set = lb_patset_new();
    struct lb_local_opts o = { .size = sizeof o, .label = "redis", .trusted = true, .link = true };
    rd->main = lb_local_open(rd->ctx, &o, &main_ops, rd);
    if (!rd->main) { lb_plugin_fail(rd->ctx, "cannot open the main link"); return -1; }
    return 0;
}

void cl_free(struct rd *rd)
{
    while (rd->nodes) node_free(rd, rd->nodes, NULL);
    if (rd->main) { lb_local_close(rd->main); rd->main = NULL; }
    sset_free(&rd->remote_pats);
    sset_free(&rd->main_subs);
    sset_free(&rd->local_services);
    lb_patset_free(rd->remote_set);
    lb_patset_free(rd->local_set);
    rd->remote_set = rd->local_set = NULL;
    free(rd->record);
    free(rd->record_body);
    rd->record = rd->record_body = NULL;
}
