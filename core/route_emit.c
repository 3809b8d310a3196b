/*
 * EMIT, SUBSCRIBE, UNSUBSCRIBE (the subscriptions themselves: subs.c).
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

static struct jw g_fan;              /* the EVENT sent to every recipient */
static struct lb_conn **g_recips;    /* recipients of the current EMIT */
static size_t g_n_recips, g_cap_recips;
static uint64_t g_gen;               /* de-duplicates recipients */

void emit_init(void) { jw_init(&g_fan, 4096); }

void emit_free(void)
{
    jw_free(&g_fan);
    free(g_recips);
    g_recips = NULL;
    g_cap_recips = 0;
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
    else subs_remove_all(s->c, evs);
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
        subs_match(f[F_EVENT].p, f[F_EVENT].n, collect_subscriber, &k);
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
