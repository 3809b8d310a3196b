/*
 * REGISTER: who a connection is.  A socket connection registers one name
 * (a later REGISTER with the same name updates it); a trusted in-process
 * connection may register several, each an instance of its own.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "router_int.h"
#include "registry.h"
#include "log.h"
#include "util.h"

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool identity_allows(const struct lb_conn *c, const char *name, size_t n)
{
    for (size_t i = 0; i < c->peer.n_identity_names; i++) {
        const char *id = c->peer.identity_names[i];
        if (strlen(id) == n && memcmp(id, name, n) == 0) return true;
    }
    return false;
}

/* The n strings of arr as one allocation (the pointers, then the strings
 * they point at: one free() releases them), so an instance with a method
 * or two costs one block, not one per name. */
static char **copy_names(const struct env_val *arr, size_t n, bool sort)
{
    if (!n) return NULL;
    const char *cur = NULL;
    struct env_val e;
    size_t k = 0, bytes = n * sizeof(char *);
    while (k < n && env_array_next(arr, &cur, &e)) { bytes += e.n + 1; k++; }
    char **v = xcalloc(1, bytes);
    char *s = (char *)(v + n);
    cur = NULL;
    for (size_t j = 0; j < k && env_array_next(arr, &cur, &e); j++) {
        memcpy(s, e.p, e.n);
        s[e.n] = 0;
        v[j] = s;
        s += e.n + 1;
    }
    if (sort) qsort(v, k, sizeof *v, cmp_str);
    return v;
}

/* The members of a REGISTER, checked; counts of the arrays. */
struct reg_fields { long n_methods, n_resources; };

static bool check_fields(const struct sender *s, struct lb_msg *m, struct reg_fields *rf)
{
    const struct env_val *f = m->env.f;
    const struct env_val *name = &f[F_SERVICE_NAME];
    char why[160];
    if (name->kind != J_STRING || name->escaped || !valid_service_name(name->p, name->n)) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL,
               "\"serviceName\" must be 1-%d characters of A-Z a-z 0-9 _ . - / @", LB_MAX_NAME);
        return false;
    }
    if (is_system_target(name)) {
        refuse(s, m, LB_E_FORBIDDEN, -1, NULL, "\"%.*s\" is the bus's own service name", (int)name->n, name->p);
        return false;
    }
    if (env_str_eq(name, "broadcast", 9)) {
        /* EMIT's `to: "broadcast"` means every subscriber: a service of
         * that name could never be addressed. */
        refuse(s, m, LB_E_FORBIDDEN, -1, NULL, "\"broadcast\" is reserved (EMIT to: \"broadcast\" means every subscriber)");
        return false;
    }
    rf->n_methods = rf->n_resources = 0;
    if (f[F_METHODS].kind != J_NONE &&
        (rf->n_methods = check_name_array(&f[F_METHODS], valid_method_name, MAX_METHODS_PER_CONN, "methods", why, sizeof why)) < 0) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "%s", why);
        return false;
    }
    if (f[F_RESOURCES].kind != J_NONE &&
        (rf->n_resources = check_name_array(&f[F_RESOURCES], valid_method_name, MAX_RESOURCES, "resources", why, sizeof why)) < 0) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "%s", why);
        return false;
    }
    if (f[F_SUBSCRIBE].kind != J_NONE &&
        check_name_array(&f[F_SUBSCRIBE], valid_event_pattern, MAX_SUBS_PER_CONN, "subscribe", why, sizeof why) < 0) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "%s", why);
        return false;
    }
    /* A re-REGISTER adds to what the connection holds. */
    if (f[F_SUBSCRIBE].kind == J_ARRAY && s->c->subs.count + subs_new_count(s->c, &f[F_SUBSCRIBE]) > MAX_SUBS_PER_CONN) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "a connection may hold at most %d subscriptions", MAX_SUBS_PER_CONN);
        return false;
    }
    if (f[F_VERSION].kind != J_NONE && (f[F_VERSION].kind != J_STRING || f[F_VERSION].n > MAX_VERSION)) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "\"version\" must be a string of at most %d bytes", MAX_VERSION);
        return false;
    }
    if (f[F_METADATA].kind != J_NONE && (f[F_METADATA].kind != J_OBJECT || f[F_METADATA].n > MAX_METADATA)) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "\"metadata\" must be an object of at most %d bytes", MAX_METADATA);
        return false;
    }
    if (f[F_NODE].kind != J_NONE && (f[F_NODE].kind != J_STRING || !valid_service_name(f[F_NODE].p, f[F_NODE].n))) {
        refuse(s, m, LB_E_INVALID_MESSAGE, -1, NULL, "\"node\" must be a node name");
        return false;
    }
    return true;
}

/* Who may register under `name` on this connection. */
static bool name_allowed(const struct sender *s, struct lb_msg *m)
{
    struct lb_conn *c = s->c;
    const struct env_val *name = &m->env.f[F_SERVICE_NAME];
    if (c->inst && !c->trusted && !env_str_eq(name, c->inst->name, c->inst->name_len)) {
        refuse(s, m, LB_E_FORBIDDEN, -1, NULL, "this connection is registered as '%s'; it cannot register as '%.*s'",
               c->inst->name, (int)name->n, name->p);
        return false;
    }
    if (c->peer.n_identity_names && !identity_allows(c, name->p, name->n)) {
        refuse(s, m, LB_E_FORBIDDEN, -1, NULL, "the client certificate names '%s'; it may not register as '%.*s'",
               c->peer.identity_names[0], (int)name->n, name->p);
        return false;
    }
    return true;
}

/* The first REGISTER of a socket connection: the plugins decide. */
static bool authenticated(const struct sender *s, struct lb_msg *m)
{
    struct lb_conn *c = s->c;
    if (c->trusted) return true;   /* the host vouches for its plugins' connections */
    struct hook_refusal r;
    enum lb_verdict_kind k = hooks_authenticate(c, m, &r);
    if (k == LB_DENY) {
        refuse_hook(s, m, &r);
        return false;
    }
    if (c->peer.n_identity_names) {
        if (k != LB_ALLOW) c->auth = "mtls";
        return true;
    }
    if (k != LB_ALLOW && (g_hooks_n.authenticate || g_bus.set.production)) {
        refuse(s, m, LB_E_UNAUTHENTICATED, -1, NULL,
               "no credentials: REGISTER needs a broker token (\"token\") or a client certificate");
        return false;
    }
    return true;
}

static void record(struct instance *i, struct lb_msg *m, const struct reg_fields *rf)
{
    const struct env_val *f = m->env.f;
    free(i->methods);
    i->methods = copy_names(&f[F_METHODS], (size_t)rf->n_methods, true);
    i->n_methods = (size_t)rf->n_methods;
    struct inst_extra *x = i->x ? i->x : xcalloc(1, sizeof *x);
    free(x->resources);
    x->resources = copy_names(&f[F_RESOURCES], (size_t)rf->n_resources, false);
    x->n_resources = (size_t)rf->n_resources;
    free(x->version);
    x->version = f[F_VERSION].kind == J_STRING ? xstrndup(f[F_VERSION].p, f[F_VERSION].n) : NULL;
    free(x->metadata_json);
    x->metadata_json = f[F_METADATA].kind == J_OBJECT ? xstrndup(f[F_METADATA].p, f[F_METADATA].n) : NULL;
    if (i->conn->link && f[F_NODE].kind == J_STRING) {
        free(x->node);
        x->node = xstrndup(f[F_NODE].p, f[F_NODE].n);
    }
    if (!x->resources && !x->version && !x->metadata_json && !x->node) {
        inst_extra_free(x);
        x = NULL;
    }
    i->x = x;
}

void handle_register(const struct sender *s, struct lb_msg *m)
{
    struct reg_fields rf;
    struct lb_conn *c = s->c;
    if (!check_fields(s, m, &rf) || !name_allowed(s, m)) return;
    const struct env_val *name = &m->env.f[F_SERVICE_NAME];
    struct instance *i = conn_instance(c, name->p, name->n);
    if (!i && !c->inst && !authenticated(s, m)) return;
    bool fresh = !i;
    if (fresh) i = registry_add(c, name->p, name->n);
    record(i, m, &rf);
    g_routing_gen++;   /* methods may have changed */
    if (m->env.f[F_SUBSCRIBE].kind == J_ARRAY) subs_add_all(c, &m->env.f[F_SUBSCRIBE]);
    if (fresh) {
        c->state = CS_REGISTERED;
        log_info("router", "#%llu registered as '%s' (%s, auth %s, %zu methods)", (unsigned long long)c->id,
                 i->name, c->peer.transport, c->auth, (size_t)i->n_methods);
    }
    out_register_ack(c, i);
    struct sender as = { c, i->name, i->name_len };
    audit_msg(&as, m, mk_str(NULL, 0), val_str(name), 1, NULL, NULL, 0);
}
