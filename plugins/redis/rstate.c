/*
 * `state = redis`: the host's key-value state (token revocations, token
 * state) kept in Redis as <prefix>:state:<plugin>:<key> (with the
 * entry's absolute expiry, PXAT), and every change published on
 * <prefix>:s so the other nodes apply it to their memory at once.  A
 * node that joins (or rejoins after Redis was away) first writes the
 * changes it made meanwhile, then reads every key back: pub/sub is at
 * most once, the keys are the truth.  The change is written out before
 * the call that made it returns (a revocation leaves for Redis ahead of
 * token.revoke's answer).
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rstate.h"
#include "rconn.h"

#define MAX_PENDING 65536            /* changes kept while Redis is away */
#define LOAD_BATCH 200

struct state_change {
    struct state_change *next;
    char *ns, *key, *val;            /* val NULL: deleted */
    size_t len;
    uint64_t exp;
};

static const char LOAD_LUA[] =
    "local out = {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local v = redis.call('GET', k)\n"
    "  if v then out[#out + 1] = k; out[#out + 1] = v; out[#out + 1] = redis.call('PTTL', k) end\n"
    "end\n"
    "return out\n";

static void scan_states(struct rd *rd, const char *cursor);

static void state_key(struct rd *rd, const char *ns, const char *key, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s:state:%s:%s", rd->cfg.prefix, ns, key);
}

static void write_change(struct rd *rd, const char *ns, const char *key, const char *val, size_t len, uint64_t exp)
{
    char k[RW_MAX_STATE_KEY + 200], pxat[24];
    state_key(rd, ns, key, k, sizeof k);
    if (val) {
        snprintf(pxat, sizeof pxat, "%llu", (unsigned long long)exp);
        const char *argv[] = { "SET", k, val, "PXAT", pxat };
        size_t lens[] = { 3, strlen(k), len, 4, strlen(pxat) };
        rc_command(rd, NULL, exp ? 5 : 3, argv, lens);
    } else {
        const char *argv[] = { "DEL", k };
        size_t lens[] = { 3, strlen(k) };
        rc_command(rd, NULL, 2, argv, lens);
    }
    size_t nl = strlen(ns), kl = strlen(key);
    uint64_t args[3] = { exp, nl, kl };
    char head[RW_HEAD_MAX];
    size_t hl = val ? rw_head_write(head, 'S', rd->node, rd->epoch, args, 3)
                    : rw_head_write(head, 'D', rd->node, rd->epoch, args + 1, 2);
    struct lb_jw *w = rd->w2;
    lb_jw_reset(w);
    lb_jw_raw(w, ns, nl);
    lb_jw_raw(w, key, kl);
    if (val) lb_jw_raw(w, val, len);
    size_t bl;
    const char *body = lb_jw_data(w, &bl);
    if (rc_publish(rd, NULL, rd->ch_s, strlen(rd->ch_s), head, hl, body, bl) == 0) rd->c_state_out++;
    rc_flush(rd);
}

static void queue_change(struct rd *rd, const char *ns, const char *key, const char *val, size_t len, uint64_t exp)
{
    if (rd->n_pending_state >= MAX_PENDING) {
        if (!rd->state_lost)
            lb_log(rd->ctx, LB_LOG_ERROR, "more than %d state changes while Redis is away: later ones reach other "
                   "nodes only when changed again (this node keeps them)", MAX_PENDING);
        rd->state_lost = true;
        return;
    }
    struct state_change *c = calloc(1, sizeof *c);
    if (!c || !(c->ns = strdup(ns)) || !(c->key = strdup(key)) || (val && !(c->val = malloc(len + 1)))) {
        if (c) { free(c->ns); free(c->key); free(c); }
        rd->state_lost = true;
        return;
    }
    if (val) memcpy(c->val, val, len);
    c->len = len;
    c->exp = exp;
    *rd->pending_tail = c;
    rd->pending_tail = &c->next;
    rd->n_pending_state++;
}

static void state_changed(void *ud, const char *ns, const char *key, const char *value, size_t len, uint64_t expires_ms)
{
    struct rd *rd = ud;
    if (rd->state == RS_UP && rc_up(rd)) write_change(rd, ns, key, value, len, expires_ms);
    else queue_change(rd, ns, key, value, len, expires_ms);
}

static void free_pending(struct rd *rd)
{
    while (rd->pending_state) {
        struct state_change *c = rd->pending_state;
        rd->pending_state = c->next;
        free(c->ns);
        free(c->key);
        free(c->val);
        free(c);
    }
    rd->pending_tail = &rd->pending_state;
    rd->n_pending_state = 0;
}

int st_init(struct rd *rd)
{
    rd->pending_tail = &rd->pending_state;
    if (!rd->cfg.state_redis) return 0;
    struct lb_state_backend b = { .size = sizeof b, .changed = state_changed };
    return lb_state_backend_register(rd->ctx, &b, rd);
}

void st_free(struct rd *rd)
{
    free_pending(rd);
}

void st_joined(struct rd *rd)
{
    if (!rd->cfg.state_redis) return;
    for (struct state_change *c = rd->pending_state; c; c = c->next) write_change(rd, c->ns, c->key, c->val, c->len, c->exp);
    free_pending(rd);
    scan_states(rd, "0");
}

static void apply(struct rd *rd, const char *ns, const char *key, const char *val, size_t len, uint64_t exp)
{
    if (lb_state_apply(rd->ctx, ns, key, val, len, exp) == 0) rd->c_state_in++;
    else rd_drop(rd, &rd->c_dropped_bad, "state-apply", "a state change for %s/%.100s could not be applied here",
                 ns, key);
}

void st_on_message(struct rd *rd, const struct rw_head *h)
{
    char ns[RW_MAX_NS + 1], key[RW_MAX_STATE_KEY + 1];
    const char *val;
    size_t vlen;
    uint64_t exp;
    if (rw_state_parse(h, ns, key, &val, &vlen, &exp)) {
        rd_drop(rd, &rd->c_dropped_bad, "bad-state", "dropped a malformed state message from '%.*s'", (int)h->origin.n,
                h->origin.p);
        return;
    }
    apply(rd, ns, key, val, vlen, exp);
}

/* EVAL LOAD_LUA's answer: key, value, PTTL for each key still there. */
static void states_loaded(struct rd *rd, const struct pent *e, redisReply *r)
{
    (void)e;
    if (!r || r->type != REDIS_REPLY_ARRAY) return;
    uint64_t now = lb_now_ms();
    for (size_t i = 0; i + 2 < r->elements; i += 3) {
        redisReply *k = r->element[i], *v = r->element[i + 1], *t = r->element[i + 2];
        char ns[RW_MAX_NS + 1], key[RW_MAX_STATE_KEY + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || t->type != REDIS_REPLY_INTEGER) continue;
        if (rw_state_key_parse(k->str, k->len, rd->cfg.prefix, ns, key) || t->integer == -2) continue;
        apply(rd, ns, key, v->str, v->len, t->integer > 0 ? now + (uint64_t)t->integer : 0);
    }
}

static void states_scanned(struct rd *rd, const struct pent *e, redisReply *r)
{
    (void)e;
    const char *cursor;
    redisReply *keys;
    if (!rc_scan_parse(r, &cursor, &keys)) return;
    if (keys->elements) {
        char num[24];
        snprintf(num, sizeof num, "%zu", keys->elements);
        const char *const eval[] = { "EVAL", LOAD_LUA, num };
        struct pent got = { .done = states_loaded };
        rc_command_keys(rd, &got, eval, 3, keys);
    }
    if (strcmp(cursor, "0")) scan_states(rd, cursor);
}

static void scan_states(struct rd *rd, const char *cursor)
{
    struct pent e = { .done = states_scanned };
    rc_commandf(rd, &e, "SCAN %s MATCH %s:state:* COUNT %d", cursor, rd->cfg.prefix, LOAD_BATCH);
}
