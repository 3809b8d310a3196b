/*
 * ratelimit: at most `max` messages per `window` from each service, in ANY
 * window of that length (a sliding log: the timestamps of the last `max`
 * messages).  Token buckets and fixed windows let up to twice the limit
 * through around a window edge; this does not.  Memory: 8 bytes x max per
 * active service (max is capped at 100000).
 *
 * Every message a registered service sends counts, except HEARTBEAT (it
 * keeps the connection alive) and RESPONSE (the CALL it answers was
 * counted already; refusing it would only turn into a TIMEOUT for the
 * caller).  A refused message gets RATE_LIMITED with retryAfterMs: when
 * the oldest message in the window leaves it.
 *
 * [plugin ratelimit]
 * window = 60s
 * max = 1000
 * limit.NAME = MAX/WINDOW     per-service override, e.g. limit.billing = 100/10s
 * honour_exempt = no          yes: a message whose verified broker token says
 *                             rateLimitExempt skips the per-service limit
 *                             ([plugin tokens] must come before this section)
 * ceiling = 10000             ...but exempt messages still count against this
 *                             per-service ceiling per window
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>

#define MAX_LIMIT 100000
#define MAX_OVERRIDES 256
#define BUCKETS 256

struct override { char name[LB_MAX_NAME + 1]; long long max; uint64_t window_ms; };

struct svc_log {
    char name[LB_MAX_NAME + 1];
    long long max;
    uint64_t window_ms;
    uint64_t *ts;                  /* ring of the last `max` send times (ms) */
    long long count, head;         /* entries in the ring, index of the oldest */
    uint64_t *cts;                 /* the same for exempt messages, `ceiling` long */
    long long ccount, chead;
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
    unsigned long long allowed, limited;
};

static unsigned hash_name(const char *s, size_t n)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 16777619u; }
    return h % BUCKETS;
}

static void limit_for(struct ratelimit *rl, const char *name, long long *max, uint64_t *window)
{
    *max = rl->max;
    *window = rl->window_ms;
    for (size_t i = 0; i < rl->n_ov; i++)
        if (!strcmp(rl->ov[i].name, name)) { *max = rl->ov[i].max; *window = rl->ov[i].window_ms; }
}

static struct svc_log *log_for(struct ratelimit *rl, const char *name)
{
    size_t n = strlen(name);
    unsigned b = hash_name(name, n);
    for (struct svc_log *l = rl->buckets[b]; l; l = l->next)
        if (!strcmp(l->name, name)) return l;
    struct svc_log *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    snprintf(l->name, sizeof l->name, "%s", name);
    limit_for(rl, name, &l->max, &l->window_ms);
    l->ts = calloc((size_t)l->max, sizeof *l->ts);
    l->cts = calloc((size_t)rl->ceiling, sizeof *l->cts);
    if (!l->ts || !l->cts) { free(l->ts); free(l->cts); free(l); return NULL; }
    l->next = rl->buckets[b];
    rl->buckets[b] = l;
    return l;
}

/* Sliding log: admits a message at `now` into a ring of `max` send times,
 * or returns the ms until one would be admitted. */
static long long admit_ring(uint64_t *ts, long long max, long long *count, long long *head,
                            uint64_t window_ms, uint64_t now)
{
    if (*count < max) {
        ts[(*head + (*count)++) % max] = now;
        return 0;
    }
    uint64_t oldest = ts[*head];
    if (now - oldest >= window_ms) {
        ts[*head] = now;                   /* the oldest leaves, the newest enters */
        *head = (*head + 1) % max;
        return 0;
    }
    return (long long)(window_ms - (now - oldest));
}

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

static enum lb_verdict_kind on_message(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_verdict *v)
{
    struct ratelimit *rl = ud;
    enum lb_msg_type t = lb_msg_type(m);
    if (t == LB_MSG_HEARTBEAT || t == LB_MSG_RESPONSE) return LB_PASS;
    const char *svc = lb_conn_service(c);
    if (!svc) return LB_PASS;
    struct svc_log *l = log_for(rl, svc);
    if (!l) return LB_PASS;   /* out of memory: fail open rather than stop the bus */
    bool ex = exempt(rl, m);
    long long wait = ex ? admit_ring(l->cts, rl->ceiling, &l->ccount, &l->chead, l->window_ms, lb_now_ms())
                        : admit_ring(l->ts, l->max, &l->count, &l->head, l->window_ms, lb_now_ms());
    if (wait == 0) {
        l->allowed++;
        rl->allowed++;
        return LB_PASS;
    }
    l->limited++;
    rl->limited++;
    lb_deny(v, LB_E_RATE_LIMITED, "service '%s' is over its %s of %lld messages per %llu ms", svc,
            ex ? "ceiling for rate-limit-exempt tokens" : "limit", ex ? rl->ceiling : l->max,
            (unsigned long long)l->window_ms);
    v->retry_after_ms = wait;
    return LB_DENY;
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
    return json_pack("{s:I,s:I,s:I,s:o}", "allowed", (json_int_t)rl->allowed, "limited", (json_int_t)rl->limited,
                     "windowMs", (json_int_t)rl->window_ms, "services", svcs);
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

static int rl_load(struct lb_plugin_ctx *ctx)
{
    struct ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    rl->ctx = ctx;
    lb_plugin_set_data(ctx, rl);
    const char *const *keys;
    size_t n = lb_conf_keys(ctx, &keys);
    if (read_settings(ctx, rl) < 0 || read_overrides(ctx, rl, keys, n) < 0) return -1;
    if (lb_check_only(ctx)) return 0;
    struct lb_hooks h = { .message = on_message };
    lb_hooks_register(ctx, &h, rl);
    lb_stats_register(ctx, stats, rl);
    lb_log(ctx, LB_LOG_INFO, "%lld messages per %llu ms per service, %zu overrides", rl->max,
           (unsigned long long)rl->window_ms, rl->n_ov);
    return 0;
}

static void free_logs(struct ratelimit *rl)
{
    for (int b = 0; b < BUCKETS; b++) {
        while (rl->buckets[b]) {
            struct svc_log *l = rl->buckets[b];
            rl->buckets[b] = l->next;
            free(l->ts);
            free(l->cts);
            free(l);
        }
    }
}

static int rl_reload(struct lb_plugin_ctx *ctx)
{
    struct ratelimit *rl = lb_plugin_data(ctx), tmp = { 0 };
    const char *const *keys;
    size_t n = lb_conf_keys(ctx, &keys);
    if (read_settings(ctx, &tmp) < 0 || read_overrides(ctx, &tmp, keys, n) < 0) return -1;
    rl->max = tmp.max;
    rl->ceiling = tmp.ceiling;
    rl->honour_exempt = tmp.honour_exempt;
    rl->window_ms = tmp.window_ms;
    memcpy(rl->ov, tmp.ov, sizeof rl->ov);
    rl->n_ov = tmp.n_ov;
    free_logs(rl);   /* new limits start with empty logs */
    return 0;
}

static void rl_unload(struct lb_plugin_ctx *ctx)
{
    struct ratelimit *rl = lb_plugin_data(ctx);
    if (!rl) return;
    free_logs(rl);
    free(rl);
    lb_plugin_set_data(ctx, NULL);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .name = "ratelimit",
    .version = PACKAGE_VERSION,
    .load = rl_load,
    .unload = rl_unload,
    .reload = rl_reload,
};
