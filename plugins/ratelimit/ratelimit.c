/*
 * ratelimit: at most `max` messages per `window` from each service, in ANY
 * window of that length (a sliding log: the send times of the last `max`
 * messages).  Token buckets and fixed windows let up to twice the limit
 * through around a window edge; this does not.
 *
 * Every message a registered service sends counts, except HEARTBEAT (it
 * keeps the connection alive) and RESPONSE (the CALL it answers was
 * counted already; refusing it would only turn into a TIMEOUT for the
 * caller).  A refused message gets RATE_LIMITED with retryAfterMs: when
 * the oldest message in the window leaves it.
 *
 * Times come from CLOCK_MONOTONIC: a wall clock stepped back (NTP, an
 * operator) would make old sends look like future ones and let traffic
 * through; stepped forward, it would age the whole window out at once.
 *
 * Memory: a service's log starts small and doubles up to `max` (and
 * `ceiling`) entries of 8 bytes as it sends; a service that has sent
 * nothing for a full window is forgotten (its log holds nothing that
 * could still refuse a message).  The sweep runs from the message hook,
 * at most once per window (1-60 s), not from a timer: a pending timer
 * would hold up lexbusd's drain, which waits for the loop to empty.  SIGHUP keeps the
 * logs and applies the new limits to them.
 *
 * [plugin ratelimit]
 * window = 60s
 * max = 1000
 * limit.NAME = MAX/WINDOW     per-service override, e.g. limit.billing = 100/10s
 * honour_exempt = no          yes: a message whose verified broker token says
 *                             rateLimitExempt is not held to `max`
 *                             ([plugin tokens] must come before this section)
 * ceiling = 10000             with honour_exempt = yes: no service sends more
 *                             than this per window, exempt or not
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>

#define MAX_LIMIT 100000
#define MAX_OVERRIDES 256
#define BUCKETS 256
#define RING_FIRST 8               /* slots a new log starts with */

struct override { char name[LB_MAX_NAME + 1]; long long max; uint64_t window_ms; };

/* Send times (monotonic ms) of the newest messages, oldest at `head`.
 * `cap` slots are allocated; it grows on demand up to the limit. */
struct ring {
    uint64_t *ts;
    size_t cap, count, head;
};

struct svc_log {
    char name[LB_MAX_NAME + 1];
    long long max;
    uint64_t window_ms;
    struct ring own;               /* non-exempt messages, held to `max` */
    struct ring all;               /* every message, held to `ceiling` (honour_exempt only) */
    uint64_t last_ms;              /* last admitted message: idle since */
    unsigned long long allowed, limited;
    struct svc_log *next;
};

struct ratelimit {
    struct lb_plugin_ctx *ctx;
    long long max, ceiling;
    uint64_t window_ms;
    bool honour_exempt;
    struct override ov[MAX_OVERRIDES];
    size_t n_ov;
    struct svc_log *buckets[BUCKETS];
    size_t tracked;                /* logs in `buckets` */
    uint64_t swept_ms;             /* last sweep (monotonic) */
    struct ratelimit *staged;      /* a reload's settings, until reload_done */
    unsigned long long allowed, limited, forgotten;
};

static uint64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static unsigned hash_name(const char *s, size_t n)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 16777619u; }
    return h % BUCKETS;
}

/* ---- the ring ------------------------------------------------------ */

/* Moves the newest min(count, cap) entries into a fresh array of `cap`
 * slots, oldest first.  Used to grow, to shrink when a reload lowers the
 * limit (the newest sends are the ones still in the window), and to copy. */
static int ring_relayout(struct ring *r, const struct ring *from, size_t cap)
{
    uint64_t *ts = malloc(cap * sizeof *ts);
    if (!ts) return -1;
    size_t keep = from->count < cap ? from->count : cap;
    for (size_t i = 0; i < keep; i++)
        ts[i] = from->ts[(from->head + from->count - keep + i) % from->cap];
    if (r == from) free(r->ts);
    *r = (struct ring){ ts, cap, keep, 0 };
    return 0;
}

static void ring_free(struct ring *r)
{
    free(r->ts);
    *r = (struct ring){ 0 };
}

/* 0 if one more message fits in `window` under `limit`, else the ms until
 * the oldest one leaves the window. */
static long long ring_wait(const struct ring *r, long long limit, uint64_t window, uint64_t now)
{
    if ((long long)r->count < limit) return 0;
    uint64_t age = now - r->ts[r->head];
    return age >= window ? 0 : (long long)(window - age);
}

/* Records a send at `now`; the oldest entry drops out once `limit` are
 * kept.  -1 only when growing the ring fails. */
static int ring_push(struct ring *r, long long limit, uint64_t now)
{
    if ((long long)r->count >= limit) { r->head = (r->head + 1) % r->cap; r->count--; }
    if (r->count == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : RING_FIRST;
        if ((long long)cap > limit) cap = (size_t)limit;
        if (ring_relayout(r, r, cap) < 0) return -1;
    }
    r->ts[(r->head + r->count++) % r->cap] = now;
    return 0;
}

/* A reload changed the limit: keep the newest entries (they are the ones
 * still in the window) and give back slots above it.  If the smaller
 * array cannot be had, the ring simply keeps its larger one. */
static void ring_set_limit(struct ring *r, long long limit)
{
    if ((long long)r->count > limit) {
        r->head = (r->head + r->count - (size_t)limit) % r->cap;
        r->count = (size_t)limit;
    }
    if ((long long)r->cap > limit) (void)ring_relayout(r, r, (size_t)limit);
}

/* ---- per-service logs ---------------------------------------------- */

static void limit_for(struct ratelimit *rl, const char *name, long long *max, uint64_t *window)
{
    *max = rl->max;
    *window = rl->window_ms;
    for (size_t i = 0; i < rl->n_ov; i++)
        if (!strcmp(rl->ov[i].name, name)) { *max = rl->ov[i].max; *window = rl->ov[i].window_ms; }
}

static struct svc_log *log_for(struct ratelimit *rl, const char *name, uint64_t now)
{
    size_t n = strlen(name);
    unsigned b = hash_name(name, n);
    for (struct svc_log *l = rl->buckets[b]; l; l = l->next)
        if (!strcmp(l->name, name)) return l;
    struct svc_log *l = calloc(1, sizeof *l);   /* rings stay empty until the first send */
    if (!l) return NULL;
    snprintf(l->name, sizeof l->name, "%s", name);
    limit_for(rl, name, &l->max, &l->window_ms);
    l->last_ms = now;
    l->next = rl->buckets[b];
    rl->buckets[b] = l;
    rl->tracked++;
    return l;
}

static void log_free(struct svc_log *l)
{
    ring_free(&l->own);
    ring_free(&l->all);
    free(l);
}

/* Idle for a whole window: every entry has left it, so forgetting the
 * service changes no future decision. */
static bool log_idle(const struct svc_log *l, uint64_t now)
{
    return now - l->last_ms >= l->window_ms;
}

static void sweep(struct ratelimit *rl, uint64_t now)
{
    for (int b = 0; b < BUCKETS; b++) {
        for (struct svc_log **pp = &rl->buckets[b]; *pp;) {
            struct svc_log *l = *pp;
            if (!log_idle(l, now)) { pp = &l->next; continue; }
            *pp = l->next;
            log_free(l);
            rl->tracked--;
            rl->forgotten++;
        }
    }
    rl->swept_ms = now;
}

/* Once per default window, between 1 s and 60 s: idle services hold
 * memory for about two windows at most, and the O(services) pass is rare. */
static void maybe_sweep(struct ratelimit *rl, uint64_t now)
{
    uint64_t every = rl->window_ms < 1000 ? 1000 : rl->window_ms > 60000 ? 60000 : rl->window_ms;
    if (now - rl->swept_ms >= every) sweep(rl, now);
}

/* ---- the hook ------------------------------------------------------ */

static bool exempt(const struct ratelimit *rl, const struct lb_msg *m)
{
    if (!rl->honour_exempt) return false;
    struct lb_str c = lb_msg_claims(m);
    if (!c.p) return false;
    json_t *j = json_loadb(c.p, c.n, 0, NULL);
    bool yes = json_is_true(json_object_get(j, "rateLimitExempt"));
    json_decref(j);
    return yes;
}

static enum lb_verdict_kind refuse(struct ratelimit *rl, struct svc_log *l, struct lb_err *err,
                                   bool by_ceiling, long long wait)
{
    l->limited++;
    rl->limited++;
    lb_err_retry_after(err, wait);
    return lb_refuse(err, LB_E_RATE_LIMITED, "service '%s' is over its %s of %lld messages per %llu ms", l->name,
                     by_ceiling ? "ceiling (exempt or not)" : "limit", by_ceiling ? rl->ceiling : l->max,
                     (unsigned long long)l->window_ms);
}

/* Non-exempt messages must fit under `max`; with honour_exempt every
 * message must also fit under `ceiling`.  Both are checked before either
 * ring records the send, so a refusal counts nowhere. */
static enum lb_verdict_kind on_message(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_err *err)
{
    struct ratelimit *rl = ud;
    enum lb_msg_type t = lb_msg_type(m);
    if (t == LB_MSG_HEARTBEAT || t == LB_MSG_RESPONSE) return LB_PASS;
    const char *svc = lb_conn_service(c);
    if (!svc) return LB_PASS;
    uint64_t now = mono_ms();
    maybe_sweep(rl, now);
    struct svc_log *l = log_for(rl, svc, now);
    if (!l) return LB_PASS;   /* out of memory: fail open rather than stop the bus */
    bool ex = exempt(rl, m);
    long long w_own = ex ? 0 : ring_wait(&l->own, l->max, l->window_ms, now);
    long long w_all = rl->honour_exempt ? ring_wait(&l->all, rl->ceiling, l->window_ms, now) : 0;
    if (w_own || w_all) return refuse(rl, l, err, w_all > w_own, w_all > w_own ? w_all : w_own);
    if ((!ex && ring_push(&l->own, l->max, now) < 0) ||
        (rl->honour_exempt && ring_push(&l->all, rl->ceiling, now) < 0))
        return LB_PASS;       /* out of memory, as above */
    l->last_ms = now;
    l->allowed++;
    rl->allowed++;
    return LB_PASS;
}

static json_t *stats(void *ud)
{
    struct ratelimit *rl = ud;
    json_t *svcs = json_object();
    for (int b = 0; b < BUCKETS; b++)
        for (struct svc_log *l = rl->buckets[b]; l; l = l->next)
            json_object_set_new(svcs, l->name, json_pack("{s:I,s:I,s:I,s:I}", "allowed", (json_int_t)l->allowed,
                                                         "limited", (json_int_t)l->limited, "max", (json_int_t)l->max,
                                                         "windowMs", (json_int_t)l->window_ms));
    json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:o}", "allowed", (json_int_t)rl->allowed,
                          "limited", (json_int_t)rl->limited, "windowMs", (json_int_t)rl->window_ms,
                          "trackedServices", (json_int_t)rl->tracked, "forgottenServices",
                          (json_int_t)rl->forgotten, "services", svcs);
    if (rl->honour_exempt) json_object_set_new(o, "ceiling", json_integer(rl->ceiling));
    return o;
}

/* "100/10s" -> max and window. */
static int parse_override(const char *s, long long *max, uint64_t *window)
{
    char *slash;
    long long m = strtoll(s, &slash, 10);
    if (slash == s || *slash != '/' || m < 1 || m > MAX_LIMIT) return -1;
    uint64_t w;
    if (lb_parse_duration_ms(slash + 1, &w) != 0 || !w) return -1;
    *max = m;
    *window = w;
    return 0;
}

static int read_settings(struct lb_plugin_ctx *ctx, struct ratelimit *rl)
{
    if (lb_conf_ms(ctx, "window", 60000, &rl->window_ms) < 0 ||
        lb_conf_int(ctx, "max", 1000, 1, MAX_LIMIT, &rl->max) < 0 ||
        lb_conf_bool(ctx, "honour_exempt", false, &rl->honour_exempt) < 0 ||
        lb_conf_int(ctx, "ceiling", 10000, 1, MAX_LIMIT, &rl->ceiling) < 0)
        return -1;
    if (!rl->window_ms) { lb_plugin_fail(ctx, "window must be more than 0"); return -1; }
    return 0;
}

/* limit.NAME keys are found by trying the names the section holds. */
static int read_overrides(struct lb_plugin_ctx *ctx, struct ratelimit *rl, const char *const *keys, size_t n)
{
    rl->n_ov = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(keys[i], "limit.", 6) != 0) continue;
        const char *val;
        if (lb_conf_str(ctx, keys[i], NULL, &val) < 0) return -1;
        if (rl->n_ov == MAX_OVERRIDES) { lb_plugin_fail(ctx, "more than %d limit.NAME lines", MAX_OVERRIDES); return -1; }
        struct override *o = &rl->ov[rl->n_ov];
        if (strlen(keys[i] + 6) == 0 || strlen(keys[i] + 6) > LB_MAX_NAME || parse_override(val, &o->max, &o->window_ms)) {
            lb_plugin_fail(ctx, "%s = %s: expected limit.SERVICE = MAX/WINDOW, e.g. limit.billing = 100/10s (MAX 1-%d)",
                           keys[i], val, MAX_LIMIT);
            return -1;
        }
        snprintf(o->name, sizeof o->name, "%s", keys[i] + 6);
        rl->n_ov++;
    }
    return 0;
}

/* Claims reach this plugin only if the plugin that verifies them ran
 * first; with the sections the other way round every exemption is
 * silently ignored.  A warning, not a refusal: the limits still hold,
 * only more strictly than the operator meant. */
static void check_order(struct lb_plugin_ctx *ctx, const struct ratelimit *rl)
{
    if (!rl->honour_exempt) return;
    char where[512];
    lb_conf_where(ctx, "honour_exempt", where, sizeof where);
    int tokens = lb_plugin_position(ctx, "tokens"), self = lb_plugin_position(ctx, "ratelimit");
    if (tokens < 0)
        lb_log(ctx, LB_LOG_WARN, "%s: honour_exempt = yes, but there is no [plugin tokens]: no message carries "
               "verified claims, so none is exempt", where);
    else if (tokens > self)
        lb_log(ctx, LB_LOG_WARN, "%s: honour_exempt = yes has no effect: [plugin tokens] comes after "
               "[plugin ratelimit] in bus.conf, so tokens are verified only after the limit is applied "
               "and no message is exempt; put [plugin ratelimit] below [plugin tokens]", where);
}

static int rl_load(struct lb_plugin_ctx *ctx)
{
    struct ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    rl->ctx = ctx;
    lb_plugin_set_data(ctx, rl);
    const char *const *keys;
    size_t n = lb_conf_keys(ctx, &keys);
    if (read_settings(ctx, rl) < 0 || read_overrides(ctx, rl, keys, n) < 0) return -1;
    check_order(ctx, rl);
    if (lb_check_only(ctx)) return 0;
    rl->swept_ms = mono_ms();
    struct lb_hooks h = { .size = sizeof h, .message = on_message };
    lb_hooks_register(ctx, &h, rl);
    lb_stats_register(ctx, stats, rl);
    lb_log(ctx, LB_LOG_INFO, "%lld messages per %llu ms per service, %zu overrides%s", rl->max,
           (unsigned long long)rl->window_ms, rl->n_ov, rl->honour_exempt ? ", exemptions honoured under the ceiling" : "");
    return 0;
}

static void free_logs(struct ratelimit *rl)
{
    for (int b = 0; b < BUCKETS; b++) {
        while (rl->buckets[b]) {
            struct svc_log *l = rl->buckets[b];
            rl->buckets[b] = l->next;
            log_free(l);
        }
    }
    rl->tracked = 0;
}

/* New limits apply to the history already kept: dropping it would let
 * every service send a fresh window's worth right after each SIGHUP, and
 * logrotate sends one daily. */
static void apply_limits(struct ratelimit *rl, bool was_honouring)
{
    for (int b = 0; b < BUCKETS; b++) {
        for (struct svc_log *l = rl->buckets[b]; l; l = l->next) {
            limit_for(rl, l->name, &l->max, &l->window_ms);
            ring_set_limit(&l->own, l->max);
            if (!rl->honour_exempt) { ring_free(&l->all); continue; }
            /* Until now every message went through `own`: it is the history
             * the ceiling starts from. */
            if (!was_honouring && l->own.count) (void)ring_relayout(&l->all, &l->own, l->own.count);
            ring_set_limit(&l->all, rl->ceiling);
        }
    }
}

/* Step 1 of a reload: validate into staged settings, apply nothing. */
static int rl_reload(struct lb_plugin_ctx *ctx)
{
    struct ratelimit *rl = lb_plugin_data(ctx), *tmp = calloc(1, sizeof *tmp);
    if (!tmp) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    const char *const *keys;
    size_t n = lb_conf_keys(ctx, &keys);
    if (read_settings(ctx, tmp) < 0 || read_overrides(ctx, tmp, keys, n) < 0) { free(tmp); return -1; }
    free(rl->staged);
    rl->staged = tmp;
    return 0;
}

/* Step 2: every section was good (commit) or one was not. */
static void rl_reload_done(struct lb_plugin_ctx *ctx, bool commit)
{
    struct ratelimit *rl = lb_plugin_data(ctx), *tmp = rl->staged;
    rl->staged = NULL;
    if (commit && tmp) {
        bool was_honouring = rl->honour_exempt;
        rl->max = tmp->max;
        rl->ceiling = tmp->ceiling;
        rl->honour_exempt = tmp->honour_exempt;
        rl->window_ms = tmp->window_ms;
        memcpy(rl->ov, tmp->ov, sizeof rl->ov);
        rl->n_ov = tmp->n_ov;
        apply_limits(rl, was_honouring);
        check_order(ctx, rl);
    }
    free(tmp);
}

static void rl_unload(struct lb_plugin_ctx *ctx)
{
    struct ratelimit *rl = lb_plugin_data(ctx);
    if (!rl) return;
    free_logs(rl);
    free(rl->staged);
    free(rl);
    lb_plugin_set_data(ctx, NULL);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .size = sizeof(struct lb_plugin),
    .name = "ratelimit",
    .version = PACKAGE_VERSION,
    .load = rl_load,
    .unload = rl_unload,
    .reload = rl_reload,
    .reload_done = rl_reload_done,
};
