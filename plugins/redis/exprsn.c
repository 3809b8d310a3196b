/*
 * Exprsn IPC workers on the same Redis (exprsn = yes): README "Many
 * nodes", Exprsn workers.  The wire, as IPCWorker (ioredis) speaks it:
 *
 * - A worker listens on <ns>:<its name> and <ns>:broadcast and publishes
 *   {event, data, source, target, operation, token, requireAck,
 *   timestamp, metadata} to <ns>:<target>; the token is an HS256 broker
 *   token it verifies on everything it receives.
 * - It announces itself with <ns>:data:services:<name> (SETEX 60,
 *   refreshed every 30 s).  Workers are found by scanning those keys
 *   every exprsn_scan, and on a miss (the route hook: a name nobody here
 *   serves is looked up at once); they are registered on the `workers`
 *   link, so they show in `lexbus services` and the core routes EMITs
 *   to them.  Every lexbus service gets the same keys (and
 *   services:<name>, which IPCWorker.getActiveServices lists first),
 *   with "lexbus": node, so scans tell them apart.
 * - What a worker sends reaches the bus as an EMIT (or a CRUD request,
 *   or a CALL to lexbus.jsonlex) from its `source`, carrying its token:
 *   the tokens plugin verifies it like any token (exprsn = yes needs it),
 *   after its id was checked against <ns>:data:token:<id> (a record with
 *   revoked: true refuses it).  Broadcasts are dropped before any of
 *   that unless someone here subscribes to the event: an IPCWorker
 *   republishes its own notifications (ready, sent, received) to
 *   broadcast, thousands a second.
 * - What the bus sends a worker is published with a token signed with
 *   key_file (the workers' IPC_BROKER_KEY), which the worker accepts;
 *   acks (requireAck) too, which Exprsn's own acks are not.
 * - A message for a lexbus service reaches every node that hosts it; one
 *   of them (a hash of the message over those nodes' names) delivers it.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include "jwtpart.h"
#include "exprsn.h"
#include "rconn.h"

#define RING 4096                  /* worker messages in the bus at once (older ones forgotten) */
#define NEG_MS 1000                /* a name looked up in vain stays unknown this long */
#define KEY_TTL_S 60
#define KEY_REFRESH_MS 30000
#define HELD_MAX 1024

enum px_kind { PX_NONE, PX_EMIT, PX_ACK, PX_CRUD, PX_JSONLEX };

struct pending_x {
    uint64_t seq;
    uint8_t kind;
    char worker[LB_MAX_NAME + 1];  /* who to answer */
    char target[LB_MAX_NAME + 1];  /* the service it went to (the ack's source) */
    char event[LB_MAX_EVENT + 1];
    char op[8];
    char resource[LB_MAX_NAME + 1];
    char *token;                   /* PX_ACK: the original token (the ack's originalId) */
};

struct held {
    char name[LB_MAX_NAME + 1];
    char *frame;
    size_t len;
};

/* A worker message waiting for its revocation check. */
struct waiting {
    char *copy;
    size_t n;
    char name[LB_MAX_NAME + 1];    /* the channel's name part */
};

/* What takes the replies to our commands (below). */
static rc_reply_fn revoked_reply, workers_scanned;

static const char JWT_HEADER[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";   /* {"alg":"HS256","typ":"JWT"} */

static bool is_bridge(struct rd *rd, const char *p, size_t n)
{
    for (size_t i = 0; i < rd->cfg.n_bridge_names; i++)
        if (strlen(rd->cfg.bridge_names[i]) == n && !memcmp(rd->cfg.bridge_names[i], p, n)) return true;
    return lb_is_system_service(rd->ctx, p, n);
}

static void ipc_channel(struct rd *rd, const char *name, size_t n, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s:%.*s", rd->cfg.ns, (int)n, name);
}

/* Hears <ns>:<name> from now on (on), or no longer. */
static void hear(struct rd *rd, const char *name, bool on)
{
    char chan[LB_MAX_NAME + 80];
    ipc_channel(rd, name, strlen(name), chan, sizeof chan);
    rc_subscribe(rd, false, on, chan);
}

/* ---- tokens and messages for workers ------------------------------- */

/* A broker token as Exprsn's BrokerTokenManager writes them, signed with
 * our first key: appended to w. */
static void mint(struct rd *rd, struct lb_jw *w, const char *source, const char *target, const char *op,
                 const char *event, struct lb_str data)
{
    char id[33];
    rd_random_hex(id, 16);
    long long now = (long long)(lb_now_ms() / 1000);
    struct lb_jw *c = rd->w2;
    lb_jw_reset(c);
    JW_LIT(c, "{\"id\":\"");
    lb_jw_raw(c, id, 32);
    JW_LIT(c, "\",\"type\":\"broker\",\"version\":\"1.0\",\"source\":");
    lb_jw_str(c, source, strlen(source));
    JW_LIT(c, ",\"target\":");
    lb_jw_str(c, target, strlen(target));
    JW_LIT(c, ",\"operation\":");
    lb_jw_str(c, op, strlen(op));
    JW_LIT(c, ",\"iat\":");
    lb_jw_int(c, now);
    JW_LIT(c, ",\"exp\":");
    lb_jw_int(c, now + (long long)rd->cfg.token_ttl_s);
    JW_LIT(c, ",\"stateful\":false,\"stateKey\":null,\"rateLimitExempt\":false,\"authBypass\":false,\"data\":");
    lb_jw_raw(c, data.p ? data.p : "null", data.p ? data.n : 4);
    JW_LIT(c, ",\"metadata\":{\"event\":");
    lb_jw_str(c, event, strlen(event));
    JW_LIT(c, "}}");
    size_t cl;
    const char *claims = lb_jw_data(c, &cl);
    size_t start;
    lb_jw_data(w, &start);
    lb_jw_raw(w, JWT_HEADER, sizeof JWT_HEADER - 1);
    JW_LIT(w, ".");
    char *b64 = malloc(cl / 3 * 4 + 8);
    if (!b64) abort();
    size_t bl = b64url_encode((const unsigned char *)claims, cl, b64);
    lb_jw_raw(w, b64, bl);
    free(b64);
    size_t end;
    const char *all = lb_jw_data(w, &end);
    char sig[44];
    if (hs256_b64(&rd->cfg.keys.k[0], all + start, end - start, sig) == 0) {
        JW_LIT(w, ".");
        lb_jw_raw(w, sig, 43);
    }
}

/* Publishes {event, data, source, target, operation, token, ...} on
 * <ns>:<to>. */
static int to_worker(struct rd *rd, const char *to, const char *event, struct lb_str data, const char *source,
                     const char *op, const char *event_id)
{
    if (!rc_up(rd) || rd->state != RS_UP) return -1;
    struct lb_jw *w = rd->w;
    lb_jw_reset(w);
    JW_LIT(w, "{\"event\":");
    lb_jw_str(w, event, strlen(event));
    JW_LIT(w, ",\"data\":");
    lb_jw_raw(w, data.p ? data.p : "null", data.p ? data.n : 4);
    JW_LIT(w, ",\"source\":");
    lb_jw_str(w, source, strlen(source));
    JW_LIT(w, ",\"target\":");
    lb_jw_str(w, to, strlen(to));
    JW_LIT(w, ",\"operation\":");
    lb_jw_str(w, op, strlen(op));
    JW_LIT(w, ",\"token\":\"");
    mint(rd, w, source, to, op, event, data);
    JW_LIT(w, "\",\"requireAck\":false,\"timestamp\":");
    lb_jw_int(w, (long long)lb_now_ms());
    JW_LIT(w, ",\"metadata\":{\"lexbusNode\":");
    lb_jw_str(w, rd->node, strlen(rd->node));
    if (event_id) {
        JW_LIT(w, ",\"id\":");
        lb_jw_str(w, event_id, strlen(event_id));
    }
    JW_LIT(w, "}}");
    size_t len;
    const char *p = lb_jw_data(w, &len);
    if (len > rd->cfg.max_message) {
        rd_drop(rd, &rd->c_dropped_oversized, "ipc-oversized", "a message for worker '%s' is %zu bytes with its "
                "token (max_message): dropped", to, len);
        return -1;
    }
    char chan[LB_MAX_NAME + 80];
    ipc_channel(rd, to, strlen(to), chan, sizeof chan);
    if (rc_publish(rd, NULL, chan, strlen(chan), NULL, 0, p, len)) return -1;
    rd->c_published++;
    rd->c_ipc_out++;
    return 0;
}

static void event_to_worker(struct rd *rd, const struct lb_msg *m, const char *to)
{
    char event[LB_MAX_EVENT + 1], from[LB_MAX_NAME + 1], id[LB_MAX_ID + 1] = "";
    struct lb_str ev = lb_msg_field(m, "event"), fr = lb_msg_field(m, "from"), i = lb_msg_field(m, "id");
    if (!ev.p || !fr.p) return;
    snprintf(event, sizeof event, "%.*s", (int)ev.n, ev.p);
    snprintf(from, sizeof from, "%.*s", (int)fr.n, fr.p);
    if (i.p && !memchr(i.p, '\\', i.n)) snprintf(id, sizeof id, "%.*s", (int)i.n, i.p);
    struct lb_str payload = lb_msg_raw(m, "payload");
    if (to_worker(rd, to, event, payload, from, "event", id[0] ? id : NULL) != 0)
        rd_drop(rd, &rd->c_dropped_queue, "ipc-out", "an event for worker '%s' could not be published", to);
}

void ex_broadcast(struct rd *rd, const struct lb_msg *m)
{
    event_to_worker(rd, m, "broadcast");
}

/* ---- the ring of worker messages in the bus ---------------------------- */

static void copy(char *dst, size_t cap, struct lb_str s)
{
    snprintf(dst, cap, "%.*s", (int)(s.n < cap ? s.n : cap - 1), s.p ? s.p : "");
}

/* A worker's request going into the bus; `worker` is who to answer. */
static struct pending_x *px_new(struct rd *rd, enum px_kind kind, struct lb_str worker)
{
    uint64_t seq = ++rd->x_seq;
    struct pending_x *x = &rd->px[seq % RING];
    free(x->token);
    memset(x, 0, sizeof *x);
    x->seq = seq;
    x->kind = (uint8_t)kind;
    copy(x->worker, sizeof x->worker, worker);
    return x;
}

static struct pending_x *px_find(struct rd *rd, struct lb_str id)
{
    if (!rd->px || id.n < 2 || id.n > 21 || id.p[0] != 'x') return NULL;
    uint64_t seq = 0;
    for (size_t i = 1; i < id.n; i++) {
        if (id.p[i] < '0' || id.p[i] > '9') return NULL;
        seq = seq * 10 + (uint64_t)(id.p[i] - '0');
    }
    struct pending_x *x = &rd->px[seq % RING];
    return x->seq == seq && x->kind != PX_NONE ? x : NULL;
}

static void px_done(struct pending_x *x)
{
    free(x->token);
    x->token = NULL;
    x->kind = PX_NONE;
}

/* ---- into the bus --------------------------------------------------------- */

/* The id a worker request goes into the bus with: the bus's answer
 * names it, px_find reads it back. */
static struct lb_str px_id(const struct pending_x *x, char buf[24])
{
    int n = snprintf(buf, 24, "x%llu", (unsigned long long)x->seq);
    return (struct lb_str){ buf, (size_t)n };
}

/* {"type":"<type>","id":"x<seq>" in rd->w (CRUD and CALL; rd_jw_emit
 * writes EMITs). */
static struct lb_jw *inject_begin(struct rd *rd, const struct pending_x *x, const char *type)
{
    struct lb_jw *w = rd->w;
    char id[24];
    lb_jw_reset(w);
    JW_LIT(w, "{\"type\":\"");
    lb_jw_raw(w, type, strlen(type));
    JW_LIT(w, "\"");
    rd_jw_plain(w, ",\"id\":", px_id(x, id));
    return w;
}

static void finish_inject(struct rd *rd, struct pending_x *x, struct lb_jw *w)
{
    size_t len;
    const char *f = lb_jw_data(w, &len);
    if (rd_inject(rd, f, len) == 0) rd->c_ipc_in++;
    else px_done(x);
}

static void inject_emit(struct rd *rd, const struct rw_ipc *m, struct lb_str to)
{
    bool ack = m->require_ack && !(to.n == 9 && !memcmp(to.p, "broadcast", 9));
    struct pending_x *x = px_new(rd, ack ? PX_ACK : PX_EMIT, m->source);
    copy(x->target, sizeof x->target, to);
    copy(x->event, sizeof x->event, m->event);
    if (ack && !(x->token = strndup(m->token.p, m->token.n))) abort();
    char id[24];
    /* The token with its quotes, as the message has it (every worker
     * message that gets here carries one). */
    struct rd_emit e = { .id = px_id(x, id), .event = m->event, .from = m->source, .to = to, .payload = m->data,
                         .token = { m->token.p - 1, m->token.n + 2 }, .ack = ack };
    rd_jw_emit(rd->w, &e);
    finish_inject(rd, x, rd->w);
}

/* crud:<op> {resource, data, query, id} -> CRUD {op, resource, key, data, query} */
static void inject_crud(struct rd *rd, const struct rw_ipc *m, struct lb_str op)
{
    struct lb_str res_raw, res, v;
    const char *d = m->data.p;
    size_t dn = m->data.n;
    if (!d || d[0] != '{' || lb_json_object_get(d, dn, "resource", &res_raw) || !rw_plain_string(res_raw, &res) ||
        !lb_method_name_valid(res.p, res.n)) {
        rd_drop(rd, &rd->c_ipc_refused, "ipc-crud", "dropped a %.*s from worker '%.*s': data needs \"resource\" (a "
                "name)", (int)m->event.n, m->event.p, (int)m->source.n, m->source.p);
        return;
    }
    struct pending_x *x = px_new(rd, PX_CRUD, m->source);
    copy(x->op, sizeof x->op, op);
    copy(x->resource, sizeof x->resource, res);
    struct lb_jw *w = inject_begin(rd, x, "CRUD");
    rd_jw_plain(w, ",\"from\":", m->source);
    rd_jw_plain(w, ",\"op\":", op);
    rd_jw_plain(w, ",\"resource\":", res);
    if (!lb_json_object_get(d, dn, "id", &v) && v.n) {
        if (v.p[0] == '"') { JW_LIT(w, ",\"key\":"); lb_jw_raw(w, v.p, v.n); }
        else if (v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9')) { JW_LIT(w, ",\"key\":\""); lb_jw_raw(w, v.p, v.n); JW_LIT(w, "\""); }
    }
    if (!lb_json_object_get(d, dn, "data", &v)) { JW_LIT(w, ",\"data\":"); lb_jw_raw(w, v.p, v.n); }
    if (!lb_json_object_get(d, dn, "query", &v)) { JW_LIT(w, ",\"query\":"); lb_jw_raw(w, v.p, v.n); }
    rd_jw_plain(w, ",\"token\":", m->token);
    JW_LIT(w, "}");
    finish_inject(rd, x, w);
}

/* jsonlex:execute {expression, context} -> CALL <bridge>.jsonlex {expr, context} */
static void inject_jsonlex(struct rd *rd, const struct rw_ipc *m, struct lb_str to)
{
    struct lb_str expr, ctx;
    const char *d = m->data.p;
    size_t dn = m->data.n;
    if (!d || d[0] != '{' || lb_json_object_get(d, dn, "expression", &expr)) {
        rd_drop(rd, &rd->c_ipc_refused, "ipc-jsonlex", "dropped a jsonlex:execute from worker '%.*s': data needs "
                "\"expression\"", (int)m->source.n, m->source.p);
        return;
    }
    struct pending_x *x = px_new(rd, PX_JSONLEX, m->source);
    struct lb_jw *w = inject_begin(rd, x, "CALL");
    rd_jw_plain(w, ",\"from\":", m->source);
    rd_jw_plain(w, ",\"to\":", to);
    JW_LIT(w, ",\"method\":\"jsonlex\",\"params\":{\"expr\":");
    lb_jw_raw(w, expr.p, expr.n);
    JW_LIT(w, ",\"context\":");
    if (!lb_json_object_get(d, dn, "context", &ctx)) lb_jw_raw(w, ctx.p, ctx.n);
    else JW_LIT(w, "{}");
    JW_LIT(w, "}");
    rd_jw_plain(w, ",\"token\":", m->token);
    JW_LIT(w, "}");
    finish_inject(rd, x, w);
}

static bool crud_op(struct lb_str ev, struct lb_str *op)
{
    static const char *const ops[] = { "create", "read", "update", "delete" };
    if (ev.n < 6 || memcmp(ev.p, "crud:", 5)) return false;
    for (size_t i = 0; i < 4; i++)
        if (ev.n - 5 == strlen(ops[i]) && !memcmp(ev.p + 5, ops[i], ev.n - 5)) {
            op->p = ev.p + 5;
            op->n = ev.n - 5;
            return true;
        }
    return false;
}

/* A checked message for `name` (the channel's name part) goes in. */
static void deliver(struct rd *rd, const struct rw_ipc *m, struct lb_str name)
{
    struct lb_str op;
    bool bcast = name.n == 9 && !memcmp(name.p, "broadcast", 9);
    if (!bcast && is_bridge(rd, name.p, name.n)) {
        if (crud_op(m->event, &op)) inject_crud(rd, m, op);
        else if (m->event.n == 15 && !memcmp(m->event.p, "jsonlex:execute", 15)) inject_jsonlex(rd, m, name);
        else rd_drop(rd, &rd->c_ipc_refused, "ipc-bridge", "dropped '%.*s' from worker '%.*s' to the bridge: it "
                     "takes crud:create|read|update|delete and jsonlex:execute", (int)m->event.n, m->event.p,
                     (int)m->source.n, m->source.p);
        return;
    }
    inject_emit(rd, m, name);
}

/* The token's id (`id`, or `jti`), read without verification: only to
 * look up its revocation record. */
static bool token_id(struct lb_str token, char *out, size_t cap)
{
    char *t = strndup(token.p, token.n);
    json_t *claims = t ? jwt_part_json(t, 1) : NULL;
    free(t);
    const char *id = json_string_value(json_object_get(claims, "id"));
    if (!id) id = json_string_value(json_object_get(claims, "jti"));
    bool ok = id && strlen(id) < cap && strlen(id) <= 128;
    if (ok) snprintf(out, cap, "%s", id);
    json_decref(claims);
    return ok;
}

static void check_and_deliver(struct rd *rd, const char *p, size_t n, const char *name, size_t nlen)
{
    struct rw_ipc m;
    const char *why;
    if (rw_ipc_parse(p, n, &m, &why)) return;     /* checked by the caller already */
    char tid[160];
    if (!rd->cfg.revocation_check || !token_id(m.token, tid, sizeof tid)) {
        deliver(rd, &m, (struct lb_str){ name, nlen });
        return;
    }
    struct waiting *wt = calloc(1, sizeof *wt);
    if (!wt || !(wt->copy = malloc(n))) { free(wt); return; }
    memcpy(wt->copy, p, n);
    wt->n = n;
    snprintf(wt->name, sizeof wt->name, "%.*s", (int)nlen, name);
    struct pent e = { .done = revoked_reply, .p = wt };
    char key[256];
    snprintf(key, sizeof key, "%s:data:token:%s", rd->cfg.ns, tid);
    if (rc_commandf(rd, &e, "GET %s", key) != 0) { free(wt->copy); free(wt); }
}

static void revoked_reply(struct rd *rd, const struct pent *e, redisReply *r)
{
    struct waiting *wt = e->p;
    if (r && rd->state == RS_UP) {
        bool revoked = false;
        if (r->type == REDIS_REPLY_STRING) {
            json_t *rec = json_loadb(r->str, r->len, 0, NULL);
            revoked = json_is_true(json_object_get(rec, "revoked"));
            json_decref(rec);
        }
        struct rw_ipc m;
        const char *why;
        if (revoked) {
            rw_ipc_parse(wt->copy, wt->n, &m, &why);
            rd_drop(rd, &rd->c_ipc_refused, "ipc-revoked", "dropped '%.*s' from worker '%.*s': its token is revoked "
                    "(%s:data:token:... says so)", (int)m.event.n, m.event.p, (int)m.source.n, m.source.p, rd->cfg.ns);
        } else if (rw_ipc_parse(wt->copy, wt->n, &m, &why) == 0) {
            deliver(rd, &m, (struct lb_str){ wt->name, strlen(wt->name) });
        }
    }
    free(wt->copy);
    free(wt);
}

void ex_on_message(struct rd *rd, const char *name, size_t nlen, const char *p, size_t n)
{
    if (rd->state != RS_UP) return;
    if (n > rd->cfg.max_message) {
        rd->c_dropped_oversized++;
        rd_drop(rd, &rd->c_dropped, "ipc-oversized", "dropped a %zu-byte message on %s:%.*s (max_message)", n,
                rd->cfg.ns, (int)(nlen < 128 ? nlen : 128), name);
        return;
    }
    bool bcast = nlen == 9 && !memcmp(name, "broadcast", 9);
    struct lb_str ev;
    if (bcast) {
        /* The cheap test first: a worker's own chatter nobody here wants. */
        if (rw_ipc_event(p, n, &ev)) {
            rd_drop(rd, &rd->c_dropped_bad, "ipc-bad", "dropped a message on %s:broadcast: not an IPC message", rd->cfg.ns);
            return;
        }
        if (!rd_matches(rd->local_set, ev)) { rd->c_ipc_ignored++; return; }
    }
    struct rw_ipc m;
    const char *why;
    if (rw_ipc_parse(p, n, &m, &why)) {
        rd_drop(rd, &rd->c_dropped_bad, "ipc-bad", "dropped a message on %s:%.*s: %s", rd->cfg.ns,
                (int)(nlen < 128 ? nlen : 128), name, why);
        return;
    }
    if (m.from_lexbus) return;                 /* a lexbus node's copy for workers */
    struct lb_str want = bcast ? (struct lb_str){ "broadcast", 9 } : (struct lb_str){ name, nlen };
    if (m.target.p ? (m.target.n != want.n || memcmp(m.target.p, want.p, want.n)) : !bcast) {
        rd_drop(rd, &rd->c_ipc_refused, "ipc-target", "dropped '%.*s' from worker '%.*s': its target is not the "
                "channel's (%.*s)", (int)m.event.n, m.event.p, (int)m.source.n, m.source.p, (int)want.n, want.p);
        return;
    }
    if (!bcast) {
        bool bridge = is_bridge(rd, name, nlen);
        if (!bridge && !sset_find(&rd->local_services, name, nlen)) return;   /* not served here (any more) */
        if (!rd_mine(rd, bridge ? NULL : name, nlen, rw_hash(p, n))) return;   /* another node takes it */
    }
    if (!m.token.p) {
        rd_drop(rd, &rd->c_ipc_refused, "ipc-no-token", "dropped '%.*s' from '%.*s': no token (every worker message "
                "must carry a broker token)", (int)m.event.n, m.event.p, (int)m.source.n, m.source.p);
        return;
    }
    check_and_deliver(rd, p, n, name, nlen);
}

/* ---- what the bus answers about worker messages ------------------------ */

static void publish_result(struct rd *rd, struct pending_x *x, const struct lb_msg *m, const char *event)
{
    struct lb_str status = lb_msg_field(m, "status"), data = lb_msg_raw(m, "data"), err = lb_msg_raw(m, "error");
    bool ok = status.p && status.n == 7 && !memcmp(status.p, "success", 7);
    struct lb_jw *w = lb_jw_new();
    JW_LIT(w, "{");
    if (x->kind == PX_CRUD) {
        JW_LIT(w, "\"operation\":");
        lb_jw_str(w, x->op, strlen(x->op));
        JW_LIT(w, ",\"resource\":");
        lb_jw_str(w, x->resource, strlen(x->resource));
        JW_LIT(w, ",");
    }
    if (ok) { JW_LIT(w, "\"result\":"); lb_jw_raw(w, data.p ? data.p : "null", data.p ? data.n : 4); }
    else { JW_LIT(w, "\"error\":"); lb_jw_raw(w, err.p ? err.p : "null", err.p ? err.n : 4); }
    JW_LIT(w, "}");
    size_t len;
    const char *p = lb_jw_data(w, &len);
    const char *bridge = rd->cfg.n_bridge_names ? rd->cfg.bridge_names[0] : lb_bus_system_service(rd->ctx);
    if (to_worker(rd, x->worker, event, (struct lb_str){ p, len }, bridge, "event", NULL) != 0)
        rd_drop(rd, &rd->c_dropped_queue, "ipc-result", "the result for worker '%s' could not be published", x->worker);
    lb_jw_free(w);
}

static void publish_ack(struct rd *rd, struct pending_x *x)
{
    struct lb_jw *w = lb_jw_new();
    JW_LIT(w, "{\"originalEvent\":");
    lb_jw_str(w, x->event, strlen(x->event));
    JW_LIT(w, ",\"originalId\":");
    lb_jw_str(w, x->token, strlen(x->token));
    JW_LIT(w, "}");
    size_t len;
    const char *p = lb_jw_data(w, &len);
    if (to_worker(rd, x->worker, "ack", (struct lb_str){ p, len }, x->target, "ack", NULL) == 0) rd->c_ipc_acks++;
    lb_jw_free(w);
}

bool ex_main_message(struct rd *rd, const struct lb_msg *m)
{
    struct pending_x *x = px_find(rd, lb_msg_field(m, "id"));
    if (!x) return false;
    enum lb_msg_type t = lb_msg_type(m);
    if (t == LB_MSG_ERROR) {
        struct lb_str code = lb_msg_error_code(m), err = lb_msg_raw(m, "error");
        rd_drop(rd, &rd->c_ipc_refused, "ipc-refused", "a message from worker '%s' was refused: %.*s %.*s", x->worker,
                (int)code.n, code.p, (int)(err.n < 300 ? err.n : 300), err.p);
    } else if (t == LB_MSG_ACK && x->kind == PX_ACK) {
        struct lb_str f = lb_msg_frame(m), raw = { NULL, 0 }, rem = { NULL, 0 };
        lb_json_object_get(f.p, f.n, "delivered", &raw);
        lb_json_object_get(f.p, f.n, "remoteNodes", &rem);
        bool any = (raw.p && !(raw.n == 1 && raw.p[0] == '0')) || (rem.p && !(rem.n == 1 && rem.p[0] == '0'));
        if (any) publish_ack(rd, x);
    } else if (t == LB_MSG_RESPONSE && (x->kind == PX_CRUD || x->kind == PX_JSONLEX)) {
        publish_result(rd, x, m, x->kind == PX_CRUD ? "crud:result" : "jsonlex:result");
    } else {
        return true;
    }
    px_done(x);
    return true;
}

/* ---- discovery ------------------------------------------------------------ */

static void workers_closed(void *ud, struct lb_conn *conn, const char *why)
{
    (void)conn; (void)why;
    struct rd *rd = ud;
    rd->workers = NULL;
    sset_clear(&rd->workers_known);
}

static void workers_link_msg(void *ud, struct lb_conn *conn, const struct lb_msg *m);

static const struct lb_local_ops workers_ops = { .size = sizeof workers_ops, .on_message = workers_link_msg,
                                                 .on_close = workers_closed };

static void register_worker(struct rd *rd, const char *name, json_t *info)
{
    if (!rd->workers || sset_find(&rd->workers_known, name, strlen(name))) return;
    struct lb_jw *w = rd->w2;
    rd_jw_register_begin(w, name, rd->cfg.ns, true, NULL, 0);
    json_t *pid = json_object_get(info, "pid"), *host = json_object_get(info, "hostname");
    if (json_is_integer(pid)) {
        JW_LIT(w, "\"pid\":");
        lb_jw_int(w, (long long)json_integer_value(pid));
        JW_LIT(w, ",");
    }
    const char *h = json_string_value(host);
    if (h && strlen(h) < 256) {
        JW_LIT(w, "\"hostname\":");
        lb_jw_str(w, h, strlen(h));
        JW_LIT(w, ",");
    }
    JW_LIT(w, "\"exprsnWorker\":true}}");
    size_t len;
    const char *p = lb_jw_data(w, &len);
    if (lb_local_send(rd->workers, p, len) == 0) {
        sset_add(&rd->workers_known, name, strlen(name));
        lb_log(rd->ctx, LB_LOG_INFO, "Exprsn worker '%s' found", name);
    }
    rd->c_workers = rd->workers_known.n;
}

static void unregister_worker(struct rd *rd, const char *name)
{
    if (rd->workers) lb_local_unregister(rd->workers, name);
    lb_log(rd->ctx, LB_LOG_INFO, "Exprsn worker '%s' is gone (its %s:data:services key expired)", name, rd->cfg.ns);
    sset_del(&rd->workers_known, name, strlen(name));
    rd->c_workers = rd->workers_known.n;
}

/* A discovery key's value: a worker's (not a lexbus service's). */
static json_t *worker_info(const char *name, size_t nlen, const char *v, size_t vlen)
{
    json_t *o = json_loadb(v, vlen, 0, NULL);
    if (!json_is_object(o) || json_object_get(o, "lexbus") || !lb_service_name_valid(name, nlen)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static size_t key_prefix_len(struct rd *rd)
{
    return strlen(rd->cfg.ns) + strlen(":data:services:");
}

static void scan_done(struct rd *rd)
{
    rd->scanning = false;
    char **gone = calloc(rd->workers_known.n + 1, sizeof *gone);
    size_t n = 0;
    if (!gone) abort();
    for (size_t i = 0; i < rd->workers_known.cap; i++)
        if (rd->workers_known.v[i].s && !sset_find(&rd->workers_seen, rd->workers_known.v[i].s, strlen(rd->workers_known.v[i].s)))
            gone[n++] = strdup(rd->workers_known.v[i].s);
    for (size_t i = 0; i < n; i++) { if (gone[i]) unregister_worker(rd, gone[i]); free(gone[i]); }
    free(gone);
    sset_clear(&rd->workers_seen);
}

/* The names of a batch of keys, kept for the MGET's answer (hiredis
 * frees the SCAN's reply when its callback returns). */
struct keylist { size_t n; char **name; };

static void keylist_free(struct keylist *kl)
{
    if (!kl) return;
    for (size_t i = 0; i < kl->n; i++) free(kl->name[i]);
    free(kl->name);
    free(kl);
}

static struct keylist *keylist_of(redisReply *keys, size_t skip)
{
    struct keylist *kl = calloc(1, sizeof *kl);
    if (!kl || !(kl->name = calloc(keys->elements + 1, sizeof *kl->name))) abort();
    for (size_t i = 0; i < keys->elements; i++) {
        redisReply *k = keys->element[i];
        kl->name[i] = k->type == REDIS_REPLY_STRING && k->len > skip ? strndup(k->str + skip, k->len - skip) : NULL;
    }
    kl->n = keys->elements;
    return kl;
}

static void workers_got(struct rd *rd, const struct pent *e, redisReply *r)
{
    struct keylist *kl = e->p;
    if (r && r->type == REDIS_REPLY_ARRAY && kl && kl->n == r->elements) {
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *v = r->element[i];
            const char *name = kl->name[i];
            if (!name || v->type != REDIS_REPLY_STRING) continue;
            json_t *info = worker_info(name, strlen(name), v->str, v->len);
            if (!info) continue;
            sset_add(&rd->workers_seen, name, strlen(name));
            register_worker(rd, name, info);
            json_decref(info);
        }
    }
    keylist_free(kl);
    if (e->a) scan_done(rd);           /* the last batch */
}

/* The next batch of discovery keys (cursor "0": the first). */
static int scan_workers(struct rd *rd, const char *cursor)
{
    struct pent e = { .done = workers_scanned };
    return rc_commandf(rd, &e, "SCAN %s MATCH %s:data:services:* COUNT 500", cursor, rd->cfg.ns);
}

static void workers_scanned(struct rd *rd, const struct pent *e, redisReply *r)
{
    (void)e;
    const char *cursor;
    redisReply *keys;
    if (!rc_scan_parse(r, &cursor, &keys)) {
        rd->scanning = false;
        return;
    }
    bool last = !strcmp(cursor, "0");
    if (keys->elements) {
        static const char *const mget[] = { "MGET" };
        struct pent got = { .done = workers_got, .p = keylist_of(keys, key_prefix_len(rd)), .a = last };
        if (rc_command_keys(rd, &got, mget, 1, keys)) { keylist_free(got.p); rd->scanning = false; }
    } else if (last) {
        scan_done(rd);
    }
    if (!last && scan_workers(rd, cursor)) rd->scanning = false;
}

/* ---- a name looked up on a miss ------------------------------------------ */

static void answer_held(struct rd *rd, struct held *h, bool exists)
{
    const char *err;
    if (!rd->workers || lb_msg_parse(rd->msg, h->frame, h->len, &err)) return;
    enum lb_msg_type t = lb_msg_type(rd->msg);
    char msg[LB_MAX_NAME * 2 + 320];
    if (t == LB_MSG_CALL) {
        if (exists) {
            snprintf(msg, sizeof msg, "'%s' is an Exprsn IPC worker: it takes events (EMIT), not calls", h->name);
            lb_respond_error(rd->workers, rd->msg, LB_E_METHOD_NOT_FOUND, msg);
        } else {
            snprintf(msg, sizeof msg, "no service named '%s' is registered on any node, and no Exprsn worker has "
                     "that name (no %s:data:services:%s)", h->name, rd->cfg.ns, h->name);
            lb_respond_error(rd->workers, rd->msg, LB_E_SERVICE_NOT_FOUND, msg);
        }
    } else if (t == LB_MSG_EVENT) {
        if (exists) event_to_worker(rd, rd->msg, h->name);
        else rd_drop(rd, &rd->c_dropped_bad, "ipc-no-such", "an event for '%s' is dropped: no such service or worker",
                     h->name);
    }
}

static void lookup_reply(struct rd *rd, const struct pent *e, redisReply *r)
{
    struct held *h = e->p;
    bool exists = false;
    json_t *info = NULL;
    if (r && r->type == REDIS_REPLY_STRING) info = worker_info(h->name, strlen(h->name), r->str, r->len);
    exists = info != NULL;
    if (info) { register_worker(rd, h->name, info); json_decref(info); }
    else if (r) sset_add(&rd->neg, h->name, strlen(h->name))->n = rd_mono_ms();
    const char *err;
    if (r) answer_held(rd, h, exists);
    else if (rd->workers && !lb_msg_parse(rd->msg, h->frame, h->len, &err) && lb_msg_type(rd->msg) == LB_MSG_CALL)
        lb_respond_error(rd->workers, rd->msg, LB_E_SERVICE_UNAVAILABLE, "Redis went away during the lookup");
    free(h->frame);
    free(h);
}

struct lb_conn *ex_route(struct rd *rd, const struct lb_msg *m, struct lb_str service)
{
    (void)m;
    if (!rd->workers || rd->state != RS_UP || !rc_up(rd)) return NULL;
    struct sent *neg = sset_find(&rd->neg, service.p, service.n);
    if (neg && rd_mono_ms() - neg->n < NEG_MS) return NULL;       /* looked up in vain just now */
    return rd->workers;
}

static void hold(struct rd *rd, const struct lb_msg *m, struct lb_str to)
{
    struct held *h = calloc(1, sizeof *h);
    struct lb_str f = lb_msg_frame(m);
    if (!h || !(h->frame = malloc(f.n))) { free(h); return; }
    memcpy(h->frame, f.p, f.n);
    h->len = f.n;
    snprintf(h->name, sizeof h->name, "%.*s", (int)to.n, to.p);
    char key[LB_MAX_NAME + 80];
    snprintf(key, sizeof key, "%s:data:services:%s", rd->cfg.ns, h->name);
    struct pent e = { .done = lookup_reply, .p = h };
    if (rc_commandf(rd, &e, "GET %s", key) != 0) {
        if (lb_msg_type(m) == LB_MSG_CALL)
            lb_respond_error(rd->workers, m, LB_E_SERVICE_UNAVAILABLE, "Redis is unreachable: cannot look the name up");
        free(h->frame);
        free(h);
    }
}

static void workers_link_msg(void *ud, struct lb_conn *conn, const struct lb_msg *m)
{
    (void)conn;
    struct rd *rd = ud;
    enum lb_msg_type t = lb_msg_type(m);
    struct lb_str to = lb_msg_field(m, "to");
    if ((t != LB_MSG_CALL && t != LB_MSG_EVENT) || !to.p) return;
    if (!sset_find(&rd->workers_known, to.p, to.n)) {
        hold(rd, m, to);             /* the route hook sent it: look it up */
        return;
    }
    if (t == LB_MSG_CALL) {
        char msg[LB_MAX_NAME + 96];
        snprintf(msg, sizeof msg, "'%.*s' is an Exprsn IPC worker: it takes events (EMIT), not calls", (int)to.n, to.p);
        lb_respond_error(rd->workers, m, LB_E_METHOD_NOT_FOUND, msg);
        return;
    }
    char name[LB_MAX_NAME + 1];
    snprintf(name, sizeof name, "%.*s", (int)to.n, to.p);
    event_to_worker(rd, m, name);
}

/* ---- keys for our services ----------------------------------------------- */

static void write_keys(struct rd *rd, const char *name)
{
    char a[LB_MAX_NAME + 80], b[LB_MAX_NAME + 16], ex[16];
    snprintf(a, sizeof a, "%s:data:services:%s", rd->cfg.ns, name);
    snprintf(b, sizeof b, "services:%s", name);
    snprintf(ex, sizeof ex, "%d", KEY_TTL_S);
    uint64_t now = lb_now_ms();
    json_t *v = json_pack("{s:s,s:s,s:i,s:s,s:I,s:I,s:s}", "name", name, "namespace", rd->cfg.ns, "pid", (int)getpid(),
                          "hostname", rd->hostname, "registered", (json_int_t)rd->started_ms, "lastSeen",
                          (json_int_t)now, "lexbus", rd->node);
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (!text) return;
    const char *argv1[] = { "SET", a, text, "EX", ex }, *argv2[] = { "SET", b, text, "EX", ex };
    size_t l1[] = { 3, strlen(a), strlen(text), 2, strlen(ex) }, l2[] = { 3, strlen(b), strlen(text), 2, strlen(ex) };
    rc_command(rd, NULL, 5, argv1, l1);
    rc_command(rd, NULL, 5, argv2, l2);
    free(text);
}

static void delete_keys(struct rd *rd, const char *name)
{
    char a[LB_MAX_NAME + 80], b[LB_MAX_NAME + 16];
    snprintf(a, sizeof a, "%s:data:services:%s", rd->cfg.ns, name);
    snprintf(b, sizeof b, "services:%s", name);
    rc_commandf(rd, NULL, "DEL %s %s", a, b);
}

void ex_local_changed(struct rd *rd, const struct sset *added, const struct sset *removed)
{
    if (!rd->cfg.exprsn) return;
    for (size_t i = 0; i < added->cap; i++) {
        const char *s = added->v[i].s;
        if (!s) continue;
        hear(rd, s, true);
        if (rd->state == RS_UP) write_keys(rd, s);
    }
    for (size_t i = 0; i < removed->cap; i++) {
        const char *s = removed->v[i].s;
        if (!s || is_bridge(rd, s, strlen(s))) continue;
        hear(rd, s, false);
        if (rd->state == RS_UP && !rd_hosted_elsewhere(rd, s)) delete_keys(rd, s);
    }
}

void ex_joined(struct rd *rd)
{
    if (!rd->cfg.exprsn) return;
    rd->last_scan_ms = 0;
    rd->last_keys_ms = rd_mono_ms();
    for (size_t i = 0; i < rd->local_services.cap; i++)
        if (rd->local_services.v[i].s) write_keys(rd, rd->local_services.v[i].s);
}

void ex_disconnected(struct rd *rd)
{
    if (!rd->cfg.exprsn) return;
    char **names = calloc(rd->workers_known.n + 1, sizeof *names);
    size_t n = 0;
    if (!names) abort();
    for (size_t i = 0; i < rd->workers_known.cap; i++)
        if (rd->workers_known.v[i].s) names[n++] = strdup(rd->workers_known.v[i].s);
    for (size_t i = 0; i < n; i++) { if (names[i] && rd->workers) lb_local_unregister(rd->workers, names[i]); free(names[i]); }
    free(names);
    sset_clear(&rd->workers_known);
    sset_clear(&rd->workers_seen);
    rd->c_workers = 0;
    rd->scanning = false;
    for (size_t i = 0; rd->px && i < RING; i++) px_done(&rd->px[i]);
}

void ex_tick(struct rd *rd)
{
    if (!rd->cfg.exprsn || rd->state != RS_UP || !rc_up(rd)) return;
    uint64_t now = rd_mono_ms();
    /* Names looked up in vain are remembered NEG_MS: a caller trying
     * endless new names must not grow the set. */
    if (rd->neg.n > 4096 || (rd->neg.n && now - rd->last_neg_sweep_ms > NEG_MS)) {
        sset_clear(&rd->neg);
        rd->last_neg_sweep_ms = now;
    }
    if (!rd->scanning && now - rd->last_scan_ms >= rd->cfg.exprsn_scan_ms) {
        rd->last_scan_ms = now;
        if (scan_workers(rd, "0") == 0) rd->scanning = true;
    }
    if (now - rd->last_keys_ms >= KEY_REFRESH_MS) {
        rd->last_keys_ms = now;
        for (size_t i = 0; i < rd->local_services.cap; i++)
            if (rd->local_services.v[i].s) write_keys(rd, rd->local_services.v[i].s);
    }
}

int ex_init(struct rd *rd)
{
    if (!rd->cfg.exprsn) return 0;
    rd->px = calloc(RING, sizeof *rd->px);
    if (!rd->px) { lb_plugin_fail(rd->ctx, "out of memory"); return -1; }
    struct lb_local_opts o = { .size = sizeof o, .label = "redis:workers", .link = true, .fallback = true };
    rd->workers = lb_local_open(rd->ctx, &o, &workers_ops, rd);
    if (!rd->workers) { lb_plugin_fail(rd->ctx, "cannot open the workers link"); return -1; }
    hear(rd, "broadcast", true);
    for (size_t i = 0; i < rd->cfg.n_bridge_names; i++) hear(rd, rd->cfg.bridge_names[i], true);
    hear(rd, lb_bus_system_service(rd->ctx), true);
    return 0;
}

void ex_free(struct rd *rd)
{
    if (rd->workers) { lb_local_close(rd->workers); rd->workers = NULL; }
    for (size_t i = 0; rd->px && i < RING; i++) free(rd->px[i].token);
    free(rd->px);
    rd->px = NULL;
    sset_free(&rd->workers_known);
    sset_free(&rd->workers_seen);
    sset_free(&rd->neg);
}
